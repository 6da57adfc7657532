//! Arbitrary bytes as relay frames: a datagram, a stream of frames, packets.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::relay_wire::relay_wire(data);
});
