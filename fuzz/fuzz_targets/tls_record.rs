//! Sealed, tampered, replayed and arbitrary TLS records through the record layer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::tls_record::tls_record(data);
});
