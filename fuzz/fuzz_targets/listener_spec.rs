//! Listener specs: parsed and printed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::spec::listener_spec(data);
});
