//! Identity allowlist patterns: parsed, printed, matched.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::identity::identity_pattern(data);
});
