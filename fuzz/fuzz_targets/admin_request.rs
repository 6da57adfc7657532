//! Arbitrary bytes as an admin endpoint request head, against the model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::admin_request::admin_request(data);
});
