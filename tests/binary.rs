//! The `ringport` binary itself: its help, its errors, and a clean stop on
//! SIGTERM after serving the real `sockperf` client (skipped with one line
//! when sockperf is not installed, outside CI).

mod common;

use common::process::{start_ringport, Ringport, Stderr};
use common::ringport_bin;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use ringport::engine::cpus::allowed_cpus;

const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);

/// Waits for `child` at most [`PROCESS_TIMEOUT`]; kills it and fails after.
fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait for ringport") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringport {what} did not exit within {PROCESS_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `ringport args...` to completion, bounded in time.
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(ringport_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringport");
    // Outputs here are a few KiB at most, far below a pipe's capacity.
    wait_bounded(&mut child, &format!("{args:?}"));
    child.wait_with_output().expect("collect ringport's output")
}

/// Every `--flag` in `text`.
fn flags_in(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        let name: String = rest[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        // A flag starts with a letter (not a Markdown table rule `|-----|`).
        if name.starts_with(|c: char| c.is_ascii_lowercase()) {
            flags.insert(format!("--{name}"));
        }
        rest = &rest[at + 2 + name.len()..];
    }
    flags
}

#[test]
fn help_and_readme_list_the_same_serve_flags() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let heading = "## `ringport serve` flags";
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README.md has no `{heading}` section"));
    let section = &readme[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let documented = flags_in(section);

    let out = run(&["serve", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut offered = flags_in(&help);
    offered.remove("--help");

    let undocumented: Vec<_> = offered.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&offered).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "flags in `ringport serve --help` missing from README.md: {undocumented:?}; \
         flags in README.md that `--help` does not offer: {unknown:?}"
    );
    assert!(documented.contains("--listen") && documented.contains("--batch-delay-us"));
}

/// `--flag` → the `[default: X]` of its `--help` entry, if any.
fn help_defaults(help: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut flag: Option<String> = None;
    for line in help.lines() {
        let t = line.trim_start();
        if t.starts_with("--") {
            flag = t.split_whitespace().next().map(str::to_owned);
        }
        if let (Some(f), Some(at)) = (&flag, line.find("[default: ")) {
            let rest = &line[at + 10..];
            out.insert(f.clone(), rest[..rest.find(']').unwrap()].to_owned());
        }
    }
    out
}

#[test]
fn readme_defaults_match_help() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let out = run(&["serve", "--help"]);
    let help = help_defaults(&String::from_utf8(out.stdout).unwrap());
    let mut checked = 0;
    for line in readme.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let flag = cells[1].trim_matches('`').split(' ').next().unwrap();
        let Some(default) = help.get(flag) else {
            continue;
        };
        assert_eq!(cells[2], format!("`{default}`"), "README default of {flag}");
        checked += 1;
    }
    assert_eq!(
        checked,
        help.len(),
        "every [default] in --help is in README.md"
    );
}

#[test]
fn bad_listener_exits_non_zero_naming_the_wrong_part() {
    let cases = [
        ("echo@sctp:127.0.0.1:9000", "unknown transport `sctp`"),
        (
            "echo@tcp:localhost:9000",
            "`localhost` is not an IP address",
        ),
        ("echo@tcp:127.0.0.1:9000-80", "range `9000-80` is reversed"),
        ("echo@tcp:::1:9000", "write `[::1]:9000`"),
        ("echotcp:127.0.0.1:9000", "missing `@`"),
        ("echo@tcp:127.0.0.1:99999", "`99999` is not a port number"),
    ];
    for (spec, names) in cases {
        let out = run(&["serve", "--listen", spec]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "`--listen {spec}` was accepted");
        assert!(stderr.contains(names), "`--listen {spec}`: {stderr}");
        // And shows a spec that parses.
        assert!(stderr.contains("e.g. `echo@tcp:"), "{stderr}");
        assert!(out.stdout.is_empty(), "`--listen {spec}` printed a plan");
    }
}

/// A `ringport serve` process with its stdout lines arriving on a channel.
struct Serving {
    proc: Ringport,
    seen: Vec<String>,
    port: u16,
}

impl Serving {
    /// The next stdout line, or `None` at end of output or after `timeout`.
    fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.proc.stdout.recv_timeout(timeout).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Reads lines until one satisfies `pred`; fails after [`PROCESS_TIMEOUT`].
    fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next_line(left) {
                Some(l) if pred(&l) => return l,
                Some(_) => {}
                None => break,
            }
        }
        panic!(
            "ringport never printed {what}; its output:\n{}",
            self.seen.join("\n")
        );
    }
}

/// Starts `ringport serve` with sockperf over UDP and TCP on one free port,
/// one shard on the first CPU this process may use.
fn serve_sockperf() -> Serving {
    let cpu = allowed_cpus().unwrap()[0].to_string();
    let proc = start_ringport(
        1,
        |cmd, port| {
            cmd.args(["serve", "--shards", "1", "--cpus", &cpu, "--listen"])
                .arg(format!("sockperf@udp:127.0.0.1:{port}"))
                .arg("--listen")
                .arg(format!("sockperf@tcp:127.0.0.1:{port}"))
                .args(["--stats-interval", "0.2"]);
        },
        // The plan table's last row means every shard is serving.
        |l| l.contains("sockperf@tcp:127.0.0.1:"),
        Stderr::Unread,
    );
    Serving {
        seen: proc.printed.clone(),
        port: proc.port,
        proc,
    }
}

/// `msgs N` in a stats or totals line.
fn msgs_in(line: &str) -> Option<u64> {
    let at = line.find("msgs ")? + 5;
    line[at..].split(' ').next()?.parse().ok()
}

#[test]
fn serves_sockperf_then_stops_on_sigterm_with_totals() {
    if common::sockperf_path().is_none() {
        return;
    }
    let mut srv = serve_sockperf();
    let port = srv.port.to_string();
    let udp = common::sockperf(
        &[
            "under-load",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-m",
            "64",
            "-t",
            "1",
            "--mps",
            "10000",
        ],
        Duration::from_secs(1),
    )
    .expect("sockperf is installed");
    let tcp = common::sockperf(
        &[
            "ping-pong",
            "--tcp",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-m",
            "64",
            "-t",
            "1",
        ],
        Duration::from_secs(1),
    )
    .expect("sockperf is installed");
    for run in [&udp, &tcp] {
        assert_eq!(run.dropped, 0, "{}", run.output);
        assert!(run.received > 0, "{}", run.output);
    }
    let expected = udp.sent + tcp.sent;
    // The periodic stats line shows every message before the stop.
    srv.wait_line(&format!("a stats line with msgs {expected}"), |l| {
        l.starts_with("stats ") && msgs_in(l) == Some(expected)
    });

    srv.proc.signal(libc::SIGTERM);
    let status = srv.proc.wait_exit(PROCESS_TIMEOUT);
    let total = srv.wait_line("a `total:` line", |l| l.starts_with("total:"));
    let mut stderr = String::new();
    std::io::Read::read_to_string(srv.proc.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert_eq!(msgs_in(&total), Some(expected), "{total}");
    assert!(
        total.contains("conns accepted 1 closed 1 drops 0 []"),
        "{total}"
    );
    assert!(
        srv.seen.iter().any(|l| l.starts_with("final shard 0 cpu ")),
        "{}",
        srv.seen.join("\n")
    );
}

/// A shard that dies outside any plugin call (the `shard-panic` test
/// failpoint) stops the whole process with a non-zero exit and a message
/// naming the shard: never a half-alive server.
#[test]
fn a_dead_shard_stops_the_process_with_a_non_zero_exit() {
    let cpu = allowed_cpus().unwrap()[0].to_string();
    let mut rng = rand::thread_rng();
    for _ in 0..20 {
        let port: u16 = rng.gen_range(20000..32000);
        let listen = format!("echo@tcp:127.0.0.1:{port}");
        let mut child = Command::new(ringport_bin())
            .args([
                "serve", "--shards", "1", "--cpus", &cpu, "--listen", &listen,
            ])
            .env("RINGPORT_FAILPOINT", "shard-panic:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ringport serve");
        let status = wait_bounded(&mut child, "with a dead shard");
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("in use") {
            continue;
        }
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("ringport: shard 0 panicked: failpoint: shard 0 poisoned; every shard stopped, exiting"),
            "{stderr}"
        );
        assert!(
            stderr.contains("ringport: error: shard 0 panicked: failpoint: shard 0 poisoned"),
            "{stderr}"
        );
        return;
    }
    panic!("20 random ports were all in use");
}

/// The README's first command, `cargo run`, at the workspace root runs the
/// `ringport` binary: the default members hold two binaries (`ringport`
/// and `ringport-bench`), and without the root package's `default-run`
/// Cargo refuses to choose.
#[test]
fn cargo_run_at_the_root_runs_ringport() {
    let out = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--", "--version"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("ringport {}\n", env!("CARGO_PKG_VERSION"))
    );
}
