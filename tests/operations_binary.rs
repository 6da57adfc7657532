//! The operations surface of the `ringport` binary: `/metrics` passes
//! `promtool check metrics` and counts exactly the traffic sent; SIGTERM
//! drains (new connections refused, open ones finish, exit 0) and a second
//! SIGINT stops at once.
//!
//! The promtool check needs `promtool` (Debian package `prometheus`, which
//! `.ci/run` installs); without it, outside CI, that one check is skipped
//! with a line saying so and the exact counts are still checked.

mod common;

use common::process::{admin_is_up, start_ringport, wait_line, Ringport, Stderr};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringport::engine::cpus::allowed_cpus;

const TIMEOUT: Duration = Duration::from_secs(20);
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A running `ringport serve` with echo over TCP and UDP on `port` and the
/// admin endpoint on `admin`.
struct Served {
    proc: Ringport,
    port: u16,
    admin: SocketAddr,
    log: PathBuf,
}

impl Served {
    fn stderr(&self) -> &mpsc::Receiver<String> {
        self.proc.stderr.as_ref().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn log_path(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("ringport-ops-{}-{port}.log", std::process::id()))
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
                .arg("--listen")
                .arg(format!("echo@udp:127.0.0.1:{port}"))
                .args(["--allow", "127.0.0.1/32", "--admin"])
                .arg(SocketAddr::new(LOOPBACK, port + 1).to_string())
                .arg("--log")
                .arg(log_path(port))
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
        log: log_path(port),
    }
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
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

/// The value of the sample `name{labels}` in `metrics`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn echo(port: u16, payload: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(SocketAddr::new(LOOPBACK, port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(payload).unwrap();
    let mut got = vec![0; payload.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, payload);
    s
}

#[test]
fn metrics_pass_promtool_and_count_the_traffic_sent() {
    // Two denials of one source raise its alert at this limit.
    let srv = serve(&["--alert-source-denials", "1"]);
    let (tcp_l, udp_l) = (
        format!("echo@tcp:127.0.0.1:{}", srv.port),
        format!("echo@udp:127.0.0.1:{}", srv.port),
    );
    for _ in 0..3 {
        drop(echo(srv.port, &[1u8; 100]));
    }
    let to = SocketAddr::new(LOOPBACK, srv.port);
    let trusted = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    trusted.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..5 {
        trusted.send_to(&[2u8; 10], to).unwrap();
        assert_eq!(trusted.recv_from(&mut buf).unwrap().0, 10);
    }
    let untrusted = UdpSocket::bind(("127.0.0.2", 0)).unwrap();
    for _ in 0..2 {
        untrusted.send_to(&[3u8; 10], to).unwrap();
    }
    let expect = [
        (
            format!("ringport_listener_connections_open{{listener=\"{tcp_l}\"}}"),
            0.0,
        ),
        (
            format!("ringport_listener_denials_total{{listener=\"{udp_l}\",mode=\"deny\",reason=\"not_allowed\"}}"),
            2.0,
        ),
        (
            format!("ringport_listener_datagrams_sent_total{{listener=\"{udp_l}\"}}"),
            5.0,
        ),
        (
            format!("ringport_listener_connections_total{{listener=\"{tcp_l}\"}}"),
            3.0,
        ),
        (
            format!("ringport_listener_bytes_total{{listener=\"{tcp_l}\",direction=\"in\"}}"),
            300.0,
        ),
        (
            format!("ringport_listener_bytes_total{{listener=\"{tcp_l}\",direction=\"out\"}}"),
            300.0,
        ),
        (
            format!("ringport_listener_datagrams_total{{listener=\"{udp_l}\"}}"),
            5.0,
        ),
        (
            format!("ringport_listener_bytes_total{{listener=\"{udp_l}\",direction=\"in\"}}"),
            50.0,
        ),
        (
            format!("ringport_listener_bytes_total{{listener=\"{udp_l}\",direction=\"out\"}}"),
            50.0,
        ),
        (
            format!("ringport_listener_datagrams_sent_total{{listener=\"{tcp_l}\"}}"),
            0.0,
        ),
        (
            format!(
                "ringport_listener_drops_total{{listener=\"{udp_l}\",reason=\"datagram_too_large\"}}"
            ),
            0.0,
        ),
        ("ringport_mesh_queue_depth{shard=\"0\"}".to_owned(), 0.0),
        ("ringport_mesh_sent_total{shard=\"0\"}".to_owned(), 0.0),
        (
            "ringport_bytes_total{shard=\"0\",direction=\"in\"}".to_owned(),
            350.0,
        ),
        (
            "ringport_bytes_total{shard=\"0\",direction=\"out\"}".to_owned(),
            350.0,
        ),
        (
            "ringport_datagrams_received_total{shard=\"0\"}".to_owned(),
            5.0,
        ),
        (
            "ringport_connections_accepted_total{shard=\"0\"}".to_owned(),
            3.0,
        ),
        (
            "ringport_connections_closed_total{shard=\"0\"}".to_owned(),
            3.0,
        ),
        ("ringport_log_dropped_total".to_owned(), 0.0),
        (
            format!("ringport_alert{{listener=\"{udp_l}\",metric=\"source_denials\"}}"),
            1.0,
        ),
        (
            format!("ringport_alert{{listener=\"{tcp_l}\",metric=\"source_denials\"}}"),
            0.0,
        ),
        (
            format!("ringport_listener_sources_alerting{{listener=\"{udp_l}\"}}"),
            1.0,
        ),
    ];
    // Counters are published per loop turn, the shard's and the
    // listeners' at different points of it (and a reply is counted when its
    // send completes, maybe a turn later): wait until every figure below
    // has settled, then assert each for a clear message.
    let deadline = Instant::now() + TIMEOUT;
    let m = loop {
        let m = http_get(srv.admin, "/metrics");
        if expect
            .iter()
            .all(|(series, value)| sample(&m, series) == Some(*value))
        {
            break m;
        }
        if Instant::now() >= deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for (series, value) in &expect {
        assert_eq!(sample(&m, series), Some(*value), "{series} in\n{m}");
    }
    ringport_tools::testing::promtool_check(&m);
    let status: serde_json::Value = serde_json::from_str(&http_get(srv.admin, "/status")).unwrap();
    assert_eq!(status["mode"], "range");
    assert_eq!(status["shards"].as_array().unwrap().len(), 1);
    assert_eq!(status["listeners"][0]["conns_accepted"], 3);
    assert_eq!(
        status["listeners"][1]["alerts"],
        serde_json::json!(["source_denials"])
    );
    let deadline = Instant::now() + TIMEOUT;
    let alert = loop {
        let log = std::fs::read_to_string(&srv.log).unwrap_or_default();
        if let Some(l) = log.lines().find(|l| l.contains(r#""event":"alert""#)) {
            break serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no alert line in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        (
            &alert["listener"],
            &alert["metric"],
            &alert["firing"],
            &alert["source"],
            &alert["denials"]
        ),
        (
            &serde_json::json!(udp_l),
            &serde_json::json!("source_denials"),
            &serde_json::json!(true),
            &serde_json::json!("127.0.0.2"),
            &serde_json::json!(2)
        )
    );
}

#[test]
fn sigterm_drains_open_connections_refuses_new_ones_and_exits_0() {
    let mut srv = serve(&["--drain-timeout", "15"]);
    let mut open = echo(srv.port, b"before");
    srv.proc.signal(libc::SIGTERM);
    wait_line(srv.stderr(), "the drain notice", |l| {
        l.contains("draining 1 open connection")
    });
    // New connections are refused once the shard has closed its listener.
    let deadline = Instant::now() + TIMEOUT;
    while TcpStream::connect(SocketAddr::new(LOOPBACK, srv.port)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting while draining");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The open connection is still served, and its close ends the drain.
    open.write_all(b"during").unwrap();
    let mut got = [0u8; 6];
    open.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"during");
    drop(open);
    let status = srv.proc.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    // Connections the probe above made before the listener closed were
    // served too: every one accepted was closed.
    let total = wait_line(&srv.proc.stdout, "the totals", |l| l.starts_with("total: "));
    let count = |key: &str| -> u64 {
        let at = total.find(key).unwrap() + key.len();
        total[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(count("accepted "), count("closed "), "{total}");
    let log = std::fs::read_to_string(&srv.log).unwrap();
    let events: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let n = |e: &str| events.iter().filter(|x| *x == e).count() as u64;
    assert_eq!(
        (events[0].as_str(), events.last().unwrap().as_str()),
        ("open", "summary"),
        "{log}"
    );
    assert_eq!(
        (n("drain_start"), n("open"), n("close")),
        (1, count("accepted "), count("accepted ")),
        "{log}"
    );
}

#[test]
fn drain_timeout_closes_what_is_left_and_a_second_sigint_stops_at_once() {
    let mut srv = serve(&["--drain-timeout", "0.5"]);
    let _held = echo(srv.port, b"x");
    srv.proc.signal(libc::SIGTERM);
    let status = srv.proc.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&srv.log).unwrap();
    assert!(log.contains(r#""close_reason":"drain_timeout""#), "{log}");

    let mut srv = serve(&["--drain-timeout", "600"]);
    let _held = echo(srv.port, b"x");
    srv.proc.signal(libc::SIGINT);
    wait_line(srv.stderr(), "the drain notice", |l| l.contains("draining"));
    srv.proc.signal(libc::SIGINT);
    let status = srv.proc.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    wait_line(srv.stderr(), "the second signal", |l| {
        l.contains("received again, stopping now")
    });
}
