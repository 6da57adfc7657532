//! Helpers the tests of this crate and the root package's `tests/` share:
//! finding an outside program, and checking `/metrics` text with `promtool`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// An outside program a test needs, found on `PATH`.
///
/// When it is missing, a test run by hand prints one line, `skipped: install
/// the Debian package PACKAGE`, and gets `None` (the caller skips that part).
/// Under CI (`CI=true`), where `.ci/run` installs the package, a missing
/// program fails the test instead.
///
/// # Panics
///
/// Under CI, when the program is missing.
pub fn outside_program(program: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "`{program}` is not installed under CI: .ci/run installs the Debian \
                 package {package}; install it (`apt-get install {package}`)"
            );
        }
        // Straight to stderr, past the test harness's capture of `eprintln!`,
        // so that the line shows although the test passes.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: install the Debian package {package} (`{program}` is not on PATH)"
        );
    }
    found
}

/// Runs `promtool check metrics` on `text` when promtool is installed (see
/// [`outside_program`]); returns whether it ran.
///
/// # Panics
///
/// When promtool finds fault with the text, with its output.
pub fn promtool_check(text: &str) -> bool {
    let Some(promtool) = outside_program("promtool", "prometheus") else {
        return false;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("wait for promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}
