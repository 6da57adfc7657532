//! Control blocks through the UDP GRO and SO_RXQ_OVFL walkers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::cmsg::udp_cmsg(data);
});
