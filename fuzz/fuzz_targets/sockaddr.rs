//! Socket addresses to and from the C structs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::sockaddr::sockaddr(data);
});
