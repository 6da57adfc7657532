//! Arbitrary bytes as NATS server operations, split in two, fed to a
//! connected client, and read as topics, subjects and header blocks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::nats_codec::nats_codec(data);
});
