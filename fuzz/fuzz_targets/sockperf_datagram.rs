//! Arbitrary datagrams through the sockperf UDP plugin.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::sockperf_datagram(data);
});
