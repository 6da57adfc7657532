//! TOML config files: parsed and merged into settings.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::config::config(data);
});
