//! Helpers the tests of this crate and the root package's `tests/` share:
//! finding an outside program, and checking `/metrics` text with `promtool`.

use std::io::Write;
use std::process::{Command, Stdio};

pub use ringport_plugin::testing::outside_program;

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
