//! The once-a-second progress line on stderr (indicatif), shown only when
//! stderr is a terminal and `--quiet` is not given.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress of one run: elapsed time over the run's length, and the messages
/// the client has sent so far.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    last_sent: u64,
    last_ms: u64,
}

impl Progress {
    /// A progress line for a run of `total` labelled `label`, or `None` when
    /// stderr is not a terminal or `quiet` is set.
    pub fn start(label: &str, total: Duration, quiet: bool) -> Option<Progress> {
        if quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(
            Some(total.as_millis() as u64),
            ProgressDrawTarget::stderr_with_hz(1),
        );
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:20}] {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_owned());
        Some(Progress {
            bar,
            last_sent: 0,
            last_ms: 0,
        })
    }

    /// Updates the line: `elapsed` into the run, `sent` messages so far.
    /// Redrawn at most once a second.
    pub fn update(&mut self, elapsed: Duration, sent: u64) {
        let ms = elapsed.as_millis() as u64;
        if ms < self.last_ms + 1000 {
            return;
        }
        let rate = (sent - self.last_sent.min(sent)) as f64 * 1000.0 / (ms - self.last_ms) as f64;
        self.last_sent = sent;
        self.last_ms = ms;
        self.bar.set_position(ms);
        self.bar.set_message(format!(
            "{:.1} s, {sent} sent, {:.0} msg/s",
            ms as f64 / 1e3,
            rate
        ));
    }

    /// Clears the line.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
