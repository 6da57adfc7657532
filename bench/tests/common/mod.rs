//! What the harness's own tests share: the arguments of a short pinned run,
//! and the one-line skip when a baseline program is missing.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::io::Write as _;

use clap::Parser as _;
use ringport_bench::cli::{self, Args};
use ringport_bench::report::Report;

/// A quiet run, client on CPU 0 and server on CPU 1, no warm-up, then
/// `extra`; 20 s unless `extra` says otherwise (long enough for every
/// capped run to end by its message count).
pub fn args(extra: &[&str]) -> Args {
    let mut v = vec![
        "ringport-bench",
        "--quiet",
        "--cpus",
        "0",
        "--server-cpus",
        "1",
        "--warmup",
        "0",
    ];
    if !extra.contains(&"--duration") {
        v.extend_from_slice(&["--duration", "20"]);
    }
    v.extend_from_slice(extra);
    Args::parse_from(v)
}

/// Runs [`args`]`(extra)` to its report.
pub fn run(extra: &[&str]) -> Report {
    cli::run(&args(extra), vec!["ringport-bench".into()]).unwrap()
}

/// Whether a baseline program is `installed`; outside CI a missing one
/// skips with one line (`skipped: install ...`, past the test harness's
/// capture), in CI it fails.
pub fn installed_or_skip(installed: bool, install: &str) -> bool {
    if installed {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI needs it: {install}"
    );
    let _ = writeln!(std::io::stderr(), "skipped: {install}");
    false
}
