//! What the tests of `tls_binary.rs` run: `ringport serve` as a child
//! process with its log and admin endpoint, `openssl s_client` sessions,
//! the Python `ssl` client, and openssl's view of certificate files.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringport::engine::cpus::allowed_cpus;
use ringport::engine::tls::HandshakeResult;
use ringport_tools::testing::outside_program;
use serde_json::Value;

use crate::common::pki::Leaf;
use crate::common::process::{admin_is_up, start_ringport, Ringport, Stderr};
pub use crate::common::process::{lines_of, wait_line};

/// How long anything the tests wait for may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);
/// Where the servers listen and the clients connect.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// `openssl`, or `None` (with the skip line) outside CI; see
/// [`outside_program`].
pub fn openssl() -> Option<PathBuf> {
    outside_program("openssl", "openssl")
}

/// `python3`, or `None` (with the skip line) outside CI.
pub fn python3() -> Option<PathBuf> {
    outside_program("python3", "python3")
}

/// What a finished program printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with `input` on its stdin to the end, within [`TIMEOUT`].
///
/// # Panics
///
/// When it cannot start or does not finish in time (it is killed).
pub fn run(mut cmd: Command, input: &[u8]) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // A program may exit before it read everything: a broken pipe is fine.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let collect = |r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(r).read_to_string(&mut s);
            s
        })
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {TIMEOUT:?}:\n{}{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The SHA-256 fingerprint of the first certificate of a PEM text, as
/// ringport prints it (lower-case hex pairs joined by `:`), computed by
/// openssl.
pub fn fingerprint(openssl: &Path, pem: &str) -> String {
    let mut cmd = Command::new(openssl);
    cmd.args(["x509", "-noout", "-fingerprint", "-sha256"]);
    let out = run(cmd, pem.as_bytes());
    assert!(out.status.success(), "{}", out.stderr);
    // `sha256 Fingerprint=AB:CD:...`
    let (_, hex) = out.stdout.trim().split_once('=').expect("a fingerprint");
    hex.to_ascii_lowercase()
}

pub fn file_fingerprint(openssl: &Path, pem: &Path) -> String {
    fingerprint(openssl, &std::fs::read_to_string(pem).unwrap())
}

/// The end of validity of a PEM certificate as ringport prints it
/// (`2026-12-12T02:38:00.000Z`), from openssl's `notAfter=Dec 12 02:38:00 2026 GMT`.
pub fn not_after(openssl: &Path, pem: &Path) -> String {
    let mut cmd = Command::new(openssl);
    cmd.args(["x509", "-noout", "-enddate", "-in"]).arg(pem);
    let out = run(cmd, b"");
    assert!(out.status.success(), "{}", out.stderr);
    let text = out
        .stdout
        .trim()
        .strip_prefix("notAfter=")
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [month, day, time, year, "GMT"] = parts[..] else {
        panic!("unexpected notAfter: {text}");
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| *x == month).unwrap() + 1;
    let d: u32 = day.parse().unwrap();
    format!("{year}-{m:02}-{d:02}T{time}.000Z")
}

/// A running `ringport serve`: one shard, `echo@tls:127.0.0.1:PORT`, the
/// admin endpoint on PORT+1 and the JSON handshake log in a file.
pub struct Served {
    proc: Ringport,
    pub port: u16,
    admin: SocketAddr,
    pub log: PathBuf,
    /// The listener's name in logs and metrics.
    pub listener: String,
}

/// Starts `ringport serve` with `extra` flags, its log in `dir`, on random
/// free ports (retrying when one is taken).
pub fn serve(dir: &Path, extra: &[&str]) -> Served {
    let cpu = allowed_cpus().unwrap()[0].to_string();
    let log = |port: u16| dir.join(format!("ringport-{port}.log"));
    let proc = start_ringport(
        2,
        |cmd, port| {
            cmd.args(["serve", "--shards", "1", "--cpus", &cpu, "--listen"])
                .arg(format!("echo@tls:127.0.0.1:{port}"))
                .arg("--admin")
                .arg(SocketAddr::new(LOOPBACK, port + 1).to_string())
                .arg("--log")
                .arg(log(port))
                .args(extra);
        },
        admin_is_up,
        Stderr::Lines,
    );
    let port = proc.port;
    Served {
        proc,
        port,
        admin: SocketAddr::new(LOOPBACK, port + 1),
        log: log(port),
        listener: format!("echo@tls:127.0.0.1:{port}"),
    }
}

impl Served {
    /// The log's lines of `event`, parsed.
    pub fn log_lines(&self, event: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .filter(|v| v["event"] == event)
            .collect()
    }

    /// Waits for `n` lines of `event` in the log; returns them all.
    pub fn wait_log(&self, event: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let lines = self.log_lines(event);
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{} `{event}` lines in the log, expected {n}:\n{}",
                lines.len(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The `i`-th `tls_handshake` line (from 0), for clients run one after
    /// the other.
    pub fn nth_handshake(&self, i: usize) -> Value {
        self.wait_log("tls_handshake", i + 1)[i].clone()
    }

    /// The `tls_handshake` line of the connection from local port `port`.
    pub fn handshake_of(&self, port: u16) -> Value {
        let peer = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(l) = self
                .log_lines("tls_handshake")
                .into_iter()
                .find(|l| l["peer"] == peer.as_str())
            {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no tls_handshake line for {peer}:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The body of `GET path` from the admin endpoint.
    pub fn get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(self.admin).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        body.to_owned()
    }

    /// `/metrics`.
    pub fn metrics(&self) -> String {
        self.get("/metrics")
    }

    /// This listener's `/status` entry.
    pub fn status(&self) -> Value {
        let status: Value = serde_json::from_str(&self.get("/status")).unwrap();
        status["listeners"][0].clone()
    }

    /// This listener's samples of the metric `name`, by their other labels
    /// (`result="full"`, `mode="deny",reason="no_certificate"`).
    fn samples(metrics: &str, name: &str, listener: &str) -> HashMap<String, f64> {
        let prefix = format!("{name}{{listener=\"{listener}\",");
        metrics
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let (labels, value) = rest.split_once("} ")?;
                Some((labels.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    /// Waits until `/metrics` counts exactly `handshakes` (result, count)
    /// and `denials` (mode, reason, count) for this listener, every other
    /// result and denial 0.
    pub fn expect_counts(&self, handshakes: &[(&str, u64)], denials: &[(&str, &str, u64)]) {
        // Every result the engine counts.
        let want_hs: HashMap<String, f64> = HandshakeResult::ALL
            .iter()
            .map(|r| {
                let r = r.as_str();
                let n = handshakes.iter().find(|h| h.0 == r).map_or(0, |h| h.1);
                (format!("result=\"{r}\""), n as f64)
            })
            .collect();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let m = self.metrics();
            let hs = Self::samples(&m, "ringport_tls_handshakes_total", &self.listener);
            let mut den = Self::samples(&m, "ringport_listener_denials_total", &self.listener);
            let mut want_den = HashMap::new();
            for (mode, reason, n) in denials {
                want_den.insert(format!("mode=\"{mode}\",reason=\"{reason}\""), *n as f64);
            }
            // Every reason ringport lists and not named here is 0.
            den.retain(|k, v| want_den.contains_key(k) || *v != 0.0);
            if hs == want_hs && den == want_den {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/metrics never counted\n  handshakes {want_hs:?}\n  denials {want_den:?}\nbut:\n  \
                 handshakes {hs:?}\n  denials (non-zero or expected) {den:?}\n{m}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the server.
    pub fn signal(&self, sig: libc::c_int) {
        self.proc.signal(sig);
    }

    /// Waits for a stderr line that `pred` accepts.
    pub fn wait_stderr(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(self.proc.stderr.as_ref().unwrap(), what, pred)
    }
}

/// Asserts the fields of a log line: `Some(value)` present with that value,
/// `None` absent.
pub fn assert_fields(line: &Value, expect: &[(&str, Option<&str>)]) {
    for (key, want) in expect {
        let got = line.get(*key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        assert_eq!(got.as_deref(), *want, "`{key}` in {line}");
    }
}

/// An `openssl s_client` session: lines written to it go to the server,
/// what comes back is on its stdout.
pub struct SClient {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// `-quiet`: stdout holds nothing but what the server sent.
    quiet: bool,
}

impl Drop for SClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SClient {
    /// Connects to 127.0.0.1:`port` with `args` (`-CAfile`, `-cert`, ...)
    /// and `-quiet` from `dir`.
    pub fn start(openssl: &Path, dir: &Path, port: u16, args: &[&str]) -> SClient {
        Self::spawn(openssl, dir, port, args, true)
    }

    /// Like [`SClient::start`] but without `-quiet`: stdout also has what
    /// s_client reports, and lines starting with `K`, `k`, `R` or `Q` are
    /// its commands (key update, renegotiation, close).
    pub fn interactive(openssl: &Path, dir: &Path, port: u16, args: &[&str]) -> SClient {
        Self::spawn(openssl, dir, port, args, false)
    }

    fn spawn(openssl: &Path, dir: &Path, port: u16, args: &[&str], quiet: bool) -> SClient {
        let mut child = Command::new(openssl)
            .current_dir(dir)
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(args)
            .args(quiet.then_some("-quiet"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start openssl s_client");
        SClient {
            stdin: child.stdin.take(),
            stdout: lines_of(child.stdout.take().unwrap()),
            stderr: lines_of(child.stderr.take().unwrap()),
            child,
            quiet,
        }
    }

    /// Writes `line` to s_client.
    pub fn send(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            // It may have exited already: a broken pipe says no more.
            // One write: s_client sends what one read of its stdin gives as
            // one record, so a line written in two pieces (as `writeln!`
            // may) can come back with -msg output between its text and its
            // newline, and the echo is never seen as a line.
            let _ = stdin
                .write_all(format!("{line}\n").as_bytes())
                .and_then(|_| stdin.flush());
        }
    }

    /// Waits for a stdout line that `pred` accepts.
    pub fn wait_stdout(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.stdout, what, pred)
    }

    /// Waits for a stderr line that `pred` accepts.
    pub fn wait_stderr(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.stderr, what, pred)
    }

    /// Sends `line` and waits for it to come back: `false` when the client
    /// ended first (a refused handshake).
    pub fn echo(&mut self, line: &str) -> bool {
        self.send(line);
        if !self.quiet {
            self.wait_stdout(&format!("the echo of `{line}`"), |l| l == line);
            return true;
        }
        match self.stdout.recv_timeout(TIMEOUT) {
            Ok(l) => {
                assert_eq!(l, line, "s_client printed something else than the echo");
                true
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => false,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("no echo of `{line}` within {TIMEOUT:?}")
            }
        }
    }

    /// Waits for it to exit on its own; returns its stderr.
    pub fn exited(mut self) -> (ExitStatus, String) {
        drop(self.stdin.take());
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "s_client did not exit");
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut err = String::new();
        while let Ok(l) = self.stderr.recv_timeout(TIMEOUT) {
            err.push_str(&l);
            err.push('\n');
        }
        (status, err)
    }
}

/// The Python client: connects to 127.0.0.1 with
/// `ssl.create_default_context(cafile=CA)`, presents `CERT KEY` when given,
/// sends a line and checks the echo. Prints `local_port N` at once, then
/// `version V`, `server_sha256 HEX` and `echo ok` (exit 0), or `error ...`
/// (exit 1).
pub const PY_CLIENT: &str = r#"
import hashlib, socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
if len(sys.argv) > 4:
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
raw = socket.create_connection(("127.0.0.1", port), timeout=20)
print("local_port", raw.getsockname()[1], flush=True)
try:
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        print("version", s.version(), flush=True)
        der = s.getpeercert(binary_form=True)
        print("server_sha256", hashlib.sha256(der).hexdigest(), flush=True)
        msg = b"hello from python ssl\n"
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = s.recv(len(msg) - len(got))
            if not chunk:
                raise EOFError("the server closed after %d bytes of echo" % len(got))
            got += chunk
        if got != msg:
            print("error echo differs:", got, flush=True)
            sys.exit(1)
        print("echo ok", flush=True)
except Exception as e:
    print("error", type(e).__name__, e, flush=True)
    sys.exit(1)
"#;

/// What one run of [`PY_CLIENT`] printed.
#[derive(Debug)]
pub struct PyRun {
    pub ok: bool,
    pub local_port: u16,
    /// `key value` lines.
    pub said: HashMap<String, String>,
    pub out: String,
}

pub fn python_client(python: &Path, port: u16, ca: &Path, client: Option<&Leaf>) -> Command {
    let mut cmd = Command::new(python);
    cmd.args(["-c", PY_CLIENT, &port.to_string()]).arg(ca);
    if let Some(l) = client {
        cmd.arg(&l.cert).arg(&l.key);
    }
    cmd
}

/// Runs the Python clients at once; their results in order.
pub fn run_python(cmds: Vec<Command>) -> Vec<PyRun> {
    let runs: Vec<_> = cmds
        .into_iter()
        .map(|c| std::thread::spawn(move || run(c, b"")))
        .collect();
    runs.into_iter()
        .map(|h| {
            let o = h.join().unwrap();
            let said: HashMap<String, String> = o
                .stdout
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let out = format!("{}{}", o.stdout, o.stderr);
            let local_port = said
                .get("local_port")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("the client did not connect:\n{out}"));
            PyRun {
                ok: o.status.success() && said.contains_key("echo"),
                local_port,
                said,
                out,
            }
        })
        .collect()
}
