//! Arbitrary handshake bytes, in chunks, into a TLS server session.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::tls_handshake::tls_handshake(data);
});
