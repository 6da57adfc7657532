//! Byte streams split any way, datagrams, mesh messages, timers and backpressure through the relay plugin.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::relay_plugin::relay_plugin(data);
});
