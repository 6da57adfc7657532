//! The `ringport` binary is not held by its clients or its outputs: a slow
//! admin client (slowloris) delays no scrape and is cut off at the admin
//! deadline; admin connections over the cap are refused at once; SIGTERM
//! exits 0 with the totals even with a stalled admin client and a handshake
//! log on a stderr pipe nobody reads; a log file on a full disk
//! (`/dev/full`) costs counted lines, not the server.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::process::{admin_is_up, start_ringport, Ringport, Stderr};
use common::LOOPBACK;
use ringport::engine::cpus::allowed_cpus;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A running `ringport serve` with echo over TCP on `port` and the admin
/// endpoint on `admin`. Its stderr is a pipe this process never reads.
struct Served {
    proc: Ringport,
    port: u16,
    admin: SocketAddr,
}

/// Starts the server on random free ports (retrying when one is taken).
fn serve(extra: &[&str]) -> Served {
    let cpu = allowed_cpus().unwrap()[0].to_string();
    let proc = start_ringport(
        2,
        |cmd, port| {
            cmd.args(["serve", "--shards", "1", "--cpus", &cpu])
                .arg("--listen")
                .arg(format!("echo@tcp:127.0.0.1:{port}"))
                .arg("--admin")
                .arg(SocketAddr::new(LOOPBACK, port + 1).to_string())
                .args(extra);
        },
        admin_is_up,
        Stderr::Unread,
    );
    let port = proc.port;
    Served {
        proc,
        port,
        admin: SocketAddr::new(LOOPBACK, port + 1),
    }
}

/// `GET path`, answered within `within`: the body of a `200 OK`.
fn get_within(addr: SocketAddr, path: &str, within: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("no answer to GET {path} within {within:?}: {e}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    body.to_owned()
}

/// The value of the sample `series` in `metrics`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Reads until the server closes: what it sent (a close with unread bytes
/// is a reset, taken as nothing sent).
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => got,
        Err(e) => panic!("the server never closed: {e}"),
    }
}

fn echo_round_trip(port: u16) {
    let mut s = TcpStream::connect(SocketAddr::new(LOOPBACK, port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
}

/// The stdout lines from now until the process closes it.
fn rest_of(stdout: &mpsc::Receiver<String>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(l) = stdout.recv_timeout(TIMEOUT) {
        out.push(l);
    }
    out
}

#[test]
fn a_slow_admin_client_holds_up_no_scrape_and_connections_over_the_cap_are_refused() {
    let timeout = Duration::from_secs(3);
    let srv = serve(&["--admin-timeout", "3", "--admin-max-conns", "3"]);
    // Slowloris: a request head that never ends, one byte a second.
    let mut slow = TcpStream::connect(srv.admin).unwrap();
    let opened = Instant::now();
    let mut writer = slow.try_clone().unwrap();
    let dribble = std::thread::spawn(move || {
        for b in b"GET /metrics HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    // Scrapes meanwhile are answered at once.
    std::thread::sleep(Duration::from_millis(200));
    let m = get_within(srv.admin, "/metrics", Duration::from_secs(2));
    assert_eq!(
        sample(&m, "ringport_admin_connections_total{result=\"timed_out\"}"),
        Some(0.0),
        "{m}"
    );
    // Two more clients that send nothing fill the three places: a fourth
    // is closed at once, unanswered.
    let _held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(srv.admin).unwrap())
        .collect();
    let mut fourth = TcpStream::connect(srv.admin).unwrap();
    assert_eq!(read_until_closed(&mut fourth), b"");
    assert!(opened.elapsed() < timeout, "{:?}", opened.elapsed());
    // The slow client is cut off at the deadline, unanswered.
    assert_eq!(read_until_closed(&mut slow), b"");
    let lasted = opened.elapsed();
    assert!(
        lasted >= timeout && lasted < timeout * 2,
        "cut off after {lasted:?}"
    );
    dribble.join().unwrap();
    // The two idle clients were cut off at their deadline too.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let m = get_within(srv.admin, "/metrics", Duration::from_secs(2));
        let result = |r: &str| {
            sample(
                &m,
                &format!("ringport_admin_connections_total{{result=\"{r}\"}}"),
            )
        };
        if result("timed_out") == Some(3.0) {
            assert_eq!(result("refused"), Some(1.0), "{m}");
            assert_eq!(result("failed"), Some(0.0), "{m}");
            assert_eq!(result("denied"), Some(0.0), "{m}");
            assert_eq!(
                sample(&m, "ringport_admin_accept_errors_total"),
                Some(0.0),
                "{m}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never 3 timed out:\n{m}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_with_a_stalled_admin_client_and_an_unread_stderr_log_exits_0_with_the_totals() {
    let mut srv = serve(&["--log", "-"]);
    // Enough handshake-log lines to fill the stderr pipe nobody reads
    // (64 KiB): the log writer blocks in its write.
    let conns = 300;
    for _ in 0..conns {
        echo_round_trip(srv.port);
    }
    // An admin client stalled in the middle of its request.
    let mut stalled = TcpStream::connect(srv.admin).unwrap();
    stalled.write_all(b"GET /metrics HTTP/1.1\r\nHost").unwrap();
    let signalled = Instant::now();
    srv.proc.signal(libc::SIGTERM);
    let status = srv.proc.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let stopped = signalled.elapsed();
    let out = rest_of(&srv.proc.stdout);
    let total = out
        .iter()
        .find(|l| l.starts_with("total: "))
        .unwrap_or_else(|| panic!("no totals in {out:?}"));
    assert!(
        total.contains(&format!("conns accepted {conns} closed {conns} ")),
        "{total}"
    );
    // Every line is either written or said not to be: an open and a close
    // per connection, drain_start and summary.
    let log = out
        .iter()
        .find(|l| l.starts_with("log: "))
        .unwrap_or_else(|| panic!("nothing said about the log in {out:?}"));
    let words: Vec<&str> = log.split(' ').collect();
    let (written, not_written): (u64, u64) = (words[1].parse().unwrap(), words[4].parse().unwrap());
    assert_eq!(
        log,
        &format!(
            "log: {written} line(s) written, {not_written} not written: the log output blocked for 2s"
        )
    );
    assert_eq!(written + not_written, 2 * conns + 2, "{log}");
    assert!(not_written > 0, "{log}");
    assert_eq!(read_until_closed(&mut stalled), b"");
    // The drain had nothing to wait for: what it took is the log's 2 s and
    // the stderr writer's 1 s at most.
    assert!(stopped < Duration::from_secs(8), "{stopped:?}");
}

#[test]
fn a_log_on_a_full_disk_costs_counted_lines_and_the_server_goes_on() {
    let mut srv = serve(&["--log", "/dev/full"]);
    for _ in 0..3 {
        echo_round_trip(srv.port);
    }
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let m = get_within(srv.admin, "/metrics", Duration::from_secs(2));
        if sample(&m, "ringport_log_lines_lost_total") == Some(6.0) {
            assert!(
                sample(&m, "ringport_log_write_errors_total").unwrap() >= 1.0,
                "{m}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never 6 lines lost:\n{m}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The server still serves.
    echo_round_trip(srv.port);
    srv.proc.signal(libc::SIGTERM);
    let status = srv.proc.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let out = rest_of(&srv.proc.stdout);
    let log = out
        .iter()
        .find(|l| l.starts_with("log: "))
        .unwrap_or_else(|| panic!("nothing said about the log in {out:?}"));
    let errors: u64 = log.split(' ').nth(7).unwrap().parse().unwrap();
    assert!(errors >= 1, "{log}");
    assert_eq!(
        log,
        &format!("log: 0 line(s) written, 10 lost to {errors} write error(s)")
    );
    let mut err = String::new();
    srv.proc
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let said: Vec<&str> = err.lines().filter(|l| l.contains("log: ")).collect();
    assert_eq!(
        said,
        [
            "ringport: log: writing failed: No space left on device (os error 28); lines are \
          counted as lost (ringport_log_lines_lost_total) and writing is tried again every 1s"
        ],
        "{err}"
    );
}
