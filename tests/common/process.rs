//! The `ringport` binary run by a test: started on random free ports,
//! waited for until it says it serves, and killed when the test is done
//! (or fails).
//!
//! Every test of the binary used to carry its own copy of this loop; they
//! differ only in their flags, in the line that means "ready" and in what
//! they do with stderr, which are the parameters here.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::ringport_bin;

/// How long a server may take to say it serves.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How many random ports are tried before giving up.
const ATTEMPTS: usize = 20;

/// What the test does with the server's stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Its lines arrive on [`Ringport::stderr`].
    Lines,
    /// Its lines arrive on [`Ringport::stdout`], interleaved with stdout's
    /// in arrival order.
    Merged,
    /// A pipe this process never reads (what a supervisor that ignores
    /// stderr does); read only if the server exits before it is ready.
    Unread,
}

/// A running `ringport`, killed on drop.
#[derive(Debug)]
pub struct Ringport {
    pub child: Child,
    /// Its stdout lines (and stderr's with [`Stderr::Merged`]) after the
    /// ready line.
    pub stdout: mpsc::Receiver<String>,
    /// Its stderr lines, with [`Stderr::Lines`].
    pub stderr: Option<mpsc::Receiver<String>>,
    /// Every line read up to and including the ready line.
    pub printed: Vec<String>,
    /// The first of the ports it was started on.
    pub port: u16,
}

impl Drop for Ringport {
    /// A test that fails before stopping its server leaves none behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ringport {
    /// Sends `signal` to the server.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) has no memory arguments; the pid is our child's,
        // not yet reaped (it is reaped only through `self.child`).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({signal})");
    }

    /// Waits for the server to exit; fails the test after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "ringport did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, the exit status (within `within`), and every stdout line
    /// printed after the ready line, up to the end.
    pub fn terminate(&mut self, within: Duration) -> (ExitStatus, Vec<String>) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(within);
        let mut printed = Vec::new();
        drain(&self.stdout, &mut printed);
        (status, printed)
    }
}

/// Sends each line `r` yields to the returned channel, from a thread of
/// its own, until `r` ends or the receiver is gone.
pub fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    forward(r, tx);
    rx
}

fn forward(r: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
}

/// A random port for a server: from 20000 up to the kernel's ephemeral
/// range, so that client sockets never hold a port a server is about to
/// bind, leaving `span` consecutive ports above it.
pub fn random_port(span: u16) -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&low| low > 25000)
        .unwrap_or(60000);
    rand::thread_rng().gen_range(20000..ephemeral_low - span)
}

/// Starts `ringport`, with its command line (arguments, working directory)
/// set by `configure(cmd, port)` for a random `port` (the server may use up
/// to `span` ports from it), and waits until it
/// prints a line for which `ready` is true. A server that exits first
/// because a port was in use is retried on other ports; one that exits for
/// any other reason, or never gets ready, fails the test with what it
/// printed.
pub fn start_ringport(
    span: u16,
    configure: impl Fn(&mut Command, u16),
    ready: impl Fn(&str) -> bool,
    stderr: Stderr,
) -> Ringport {
    for _ in 0..ATTEMPTS {
        let port = random_port(span);
        let mut cmd = Command::new(ringport_bin());
        configure(&mut cmd, port);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ringport");
        let out = child.stdout.take().unwrap();
        let (stdout, err_lines) = match stderr {
            Stderr::Lines => (lines_of(out), Some(lines_of(child.stderr.take().unwrap()))),
            Stderr::Merged => {
                let (tx, rx) = mpsc::channel();
                forward(out, tx.clone());
                forward(child.stderr.take().unwrap(), tx);
                (rx, None)
            }
            Stderr::Unread => (lines_of(out), None),
        };
        let mut printed = Vec::new();
        let deadline = Instant::now() + START_TIMEOUT;
        let exited = loop {
            match stdout.recv_timeout(Duration::from_millis(20)) {
                Ok(l) => {
                    let up = ready(&l);
                    printed.push(l);
                    if up {
                        return Ringport {
                            child,
                            stdout,
                            stderr: err_lines,
                            printed,
                            port,
                        };
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Stdout closed: the server is exiting.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "ringport did not start within {START_TIMEOUT:?}: {printed:#?}"
            );
        };
        // Whatever it said on its way out.
        drain(&stdout, &mut printed);
        match (&err_lines, child.stderr.as_mut()) {
            (Some(rx), _) => drain(rx, &mut printed),
            (None, Some(pipe)) => {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                printed.extend(text.lines().map(str::to_owned));
            }
            (None, None) => {}
        }
        assert!(
            printed.iter().any(|l| l.contains("in use")),
            "ringport exited with {exited}: {printed:#?}"
        );
    }
    panic!("{ATTEMPTS} random ports were all in use");
}

/// Waits up to [`START_TIMEOUT`] for a line from `rx` that `pred` accepts;
/// fails the test with the last lines that came instead.
pub fn wait_line(rx: &mpsc::Receiver<String>, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => return l,
            Ok(l) => {
                if seen.len() == 40 {
                    seen.remove(0);
                }
                seen.push(l);
            }
            Err(e) => panic!("never saw {what} ({e}); the last lines instead: {seen:#?}"),
        }
    }
}

/// Moves the lines of an exited process's pipe into `into`, until the
/// forwarding thread reaches the end (two seconds at most).
fn drain(rx: &mpsc::Receiver<String>, into: &mut Vec<String>) {
    let until = Instant::now() + Duration::from_secs(2);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => into.push(l),
            Err(_) => return,
        }
    }
}

/// Ready when ringport announces its admin endpoint (the last thing it
/// prints before serving, when `--admin` is given).
pub fn admin_is_up(line: &str) -> bool {
    line.starts_with("admin endpoint on")
}
