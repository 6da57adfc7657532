//! The operations surface in the shard loop, over loopback: allowlists
//! (127.0.0.2 is the untrusted source), per-source limits, first-bytes and
//! idle deadlines, backpressure against a peer that never reads, and the
//! handshake log.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{connect, read_until_closed, round_trip, server, tcp, udp, IO_TIMEOUT};
use ringport::engine::alerts::DenialAlertConfig;
use ringport::engine::listener_stats::{ListenerCounters, TimeoutKind};
use ringport::engine::log::{LogFormat, LogWriter};
use ringport::engine::operations::{Limits, ListenerOps, Operations};
use ringport::engine::policy::{Allowlist, DenyReason, RateLimit};
use ringport::engine::EngineConfig;
use socket2::{Domain, Socket, Type};

const TRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const UNTRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A TCP client bound to `from` before connecting to `to`.
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(from, 0).into()).unwrap();
    sock.connect(&to.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// A UDP socket on `from` with a read timeout of `timeout`.
fn udp_from(from: IpAddr, timeout: Duration) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddr::new(from, 0)).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s
}

/// Every listener gets `ops` (allowlist and limits).
fn operations(listeners: usize, ops: ListenerOps, dry_run: bool) -> Operations {
    Operations {
        listeners: vec![ops; listeners],
        dry_run,
        ..Operations::default()
    }
}

fn only_trusted() -> ListenerOps {
    ListenerOps {
        allow: Some(vec![Allowlist::parse_cidr("127.0.0.1/32").unwrap()]),
        limits: Limits::default(),
        tls: None,
    }
}

/// Collects what the log writer writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn json_lines(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

fn log_writer(shards: usize, listeners: Vec<String>) -> (LogWriter, Captured) {
    let out = Captured::default();
    let w = LogWriter::spawn(
        shards,
        1 << 16,
        listeners,
        LogFormat::Json,
        Box::new(out.clone()),
    )
    .unwrap();
    (w, out)
}

/// Per-reason denial counts: one `not_allowed`, nothing else.
fn not_allowed_once() -> [u64; DenyReason::COUNT] {
    let mut d = [0; DenyReason::COUNT];
    d[DenyReason::NotAllowed as usize] = 1;
    d
}

fn listener(srv: &common::Server, i: usize) -> ListenerCounters {
    srv.handle().listener_stats()[i]
}

#[test]
fn untrusted_source_is_refused_over_tcp_and_udp_and_counted() {
    let srv = server()
        .listen(tcp("echo", 1))
        .listen(udp("echo", 1))
        .operations(operations(2, only_trusted(), false))
        .start();
    let (tcp_addr, udp_addr) = (srv.addr(0), srv.addr(1));

    // Untrusted: the stream is closed before the plugin sees a byte.
    let mut s = connect_from(UNTRUSTED, tcp_addr);
    let _ = s.write_all(b"hello");
    assert_eq!(read_until_closed(&mut s), b"");
    let u = udp_from(UNTRUSTED, Duration::from_millis(200));
    u.send_to(b"ping", udp_addr).unwrap();
    srv.wait_stats("the UDP denial", |_| {
        srv.handle().listener_stats()[1].denied[DenyReason::NotAllowed as usize] == 1
    });
    let mut buf = [0u8; 16];
    assert!(
        u.recv_from(&mut buf).is_err(),
        "no reply to a denied datagram"
    );

    // Trusted: served.
    let mut s = connect_from(TRUSTED, tcp_addr);
    round_trip(&mut s, b"hello", b"hello");
    let u = udp_from(TRUSTED, IO_TIMEOUT);
    u.send_to(b"ping", udp_addr).unwrap();
    assert_eq!(u.recv_from(&mut buf).unwrap().0, 4);

    let t = listener(&srv, 0);
    assert_eq!(t.denied, not_allowed_once());
    assert_eq!(
        (t.conns_accepted, t.would_deny),
        (1, [0; DenyReason::COUNT])
    );
    let u = listener(&srv, 1);
    assert_eq!(
        (u.denied, u.datagrams_in, u.bytes_in),
        (not_allowed_once(), 1, 4)
    );
    let totals = srv.totals();
    assert_eq!(
        totals.conns_accepted, 1,
        "the plugin never saw the denied stream"
    );
    assert_eq!(totals.datagrams_in, 1, "nor the denied datagram");
    assert_eq!(totals.msgs, 2);
}

#[test]
fn dry_run_serves_both_and_logs_the_would_be_denial() {
    let names = vec!["tcp".to_owned(), "udp".to_owned()];
    let (w, out) = log_writer(1, names);
    let mut ops = operations(2, only_trusted(), true);
    ops.log = Some(vec![w.sink(0)]);
    ops.udp_source_window = Duration::from_secs(60);
    let srv = server()
        .listen(tcp("echo", 1))
        .listen(udp("echo", 1))
        .operations(ops)
        .start();
    let mut buf = [0u8; 16];
    for from in [TRUSTED, UNTRUSTED] {
        let mut s = connect_from(from, srv.addr(0));
        round_trip(&mut s, b"abc", b"abc");
        drop(s);
        let u = udp_from(from, IO_TIMEOUT);
        u.send_to(b"ping", srv.addr(1)).unwrap();
        assert_eq!(u.recv_from(&mut buf).unwrap().0, 4);
    }
    srv.wait_stats("both streams closed", |s| {
        common::total(s).conns_closed == 2
    });
    let t = listener(&srv, 0);
    assert_eq!(
        (t.denied, t.would_deny, t.conns_accepted),
        ([0; DenyReason::COUNT], not_allowed_once(), 2)
    );
    assert_eq!(listener(&srv, 1).would_deny, not_allowed_once());
    srv.shutdown();
    w.finish().unwrap();
    let lines = out.json_lines();
    let of = |event: &str, peer_ip: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["event"] == event && l["peer"].as_str().unwrap().starts_with(peer_ip))
            .collect()
    };
    let open = of("open", "127.0.0.2:");
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0]["verdict"].as_str(), open[0]["reason"].as_str()),
        (Some("would_deny"), Some("not_allowed"))
    );
    let udp_new = of("udp_source", "127.0.0.2:");
    assert_eq!(udp_new.len(), 1);
    assert_eq!(udp_new[0]["verdict"], "would_deny");
    assert_eq!(of("open", "127.0.0.1:")[0]["verdict"], "allow");
    assert_eq!(lines.iter().filter(|l| l["event"] == "deny").count(), 0);
}

#[test]
fn a_source_denied_over_the_limit_raises_an_alert_that_clears_once_it_stops() {
    let (w, out) = log_writer(1, vec!["tcp".to_owned(), "udp".to_owned()]);
    let window = Duration::from_millis(300);
    let mut listener_ops = only_trusted();
    listener_ops.limits.source_denial_alert = Some(DenialAlertConfig { limit: 2, window });
    let mut ops = operations(2, listener_ops, false);
    ops.log = Some(vec![w.sink(0)]);
    let srv = server()
        .listen(tcp("echo", 1))
        .listen(udp("echo", 1))
        .operations(ops)
        .start();
    // Denials on the UDP listener only: one connection on the TCP listener
    // counts there.
    let mut s = connect_from(UNTRUSTED, srv.addr(0));
    assert_eq!(read_until_closed(&mut s), b"");
    let u = udp_from(UNTRUSTED, IO_TIMEOUT);
    for _ in 0..2 {
        u.send_to(b"x", srv.addr(1)).unwrap();
    }
    srv.wait_stats("two UDP denials", |_| listener(&srv, 1).denied[0] == 2);
    assert_eq!(
        (
            listener(&srv, 0).sources_alerting,
            listener(&srv, 1).sources_alerting
        ),
        (0, 0)
    );
    u.send_to(b"x", srv.addr(1)).unwrap();
    srv.wait_stats("the alert", |_| listener(&srv, 1).sources_alerting == 1);
    // Nothing more is sent: the window that fired ends, the next one passes
    // quietly and the shard, woken by the window's end, clears the alert.
    srv.wait_stats("the alert cleared", |_| {
        listener(&srv, 1).sources_alerting == 0
    });
    assert_eq!(listener(&srv, 0).sources_alerting, 0);
    srv.shutdown();
    w.finish().unwrap();
    let alerts: Vec<(String, bool, u64, String)> = out
        .json_lines()
        .iter()
        .filter(|l| l["event"] == "alert")
        .map(|l| {
            (
                l["listener"].as_str().unwrap().to_owned(),
                l["firing"].as_bool().unwrap(),
                l["denials"].as_u64().unwrap(),
                l["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        alerts,
        [
            ("udp".to_owned(), true, 3, "127.0.0.2".to_owned()),
            ("udp".to_owned(), false, 0, "127.0.0.2".to_owned()),
        ]
    );
}

#[test]
fn a_udp_listener_drops_datagrams_over_its_max_before_the_plugin_and_counts_them() {
    let mut ops = only_trusted();
    ops.limits.max_datagram = Some(100);
    let config = EngineConfig {
        udp_max_datagram: 1000,
        ..EngineConfig::default()
    };
    let srv = server()
        .listen(udp("echo", 1))
        .config(config)
        .operations(operations(1, ops, false))
        .start();
    let u = udp_from(TRUSTED, Duration::from_millis(200));
    let mut buf = [0u8; 2048];
    // 101 bytes: over the listener's max; 1001: over what the engine
    // receives whole. Neither is answered; the datagrams around them are.
    for (len, answered) in [(100, true), (101, false), (1001, false), (7, true)] {
        u.send_to(&vec![b'x'; len], srv.addr(0)).unwrap();
        match u.recv_from(&mut buf) {
            Ok((n, _)) => assert_eq!((n, answered), (len, true)),
            Err(_) => assert!(!answered, "{len} bytes were not echoed"),
        }
    }
    // Counters are published at the end of the shard's turn, and replies
    // counted when their send completes: maybe after the client has them.
    srv.wait_stats("the last reply counted", |s| {
        common::total(s).datagrams_out == 2 && listener(&srv, 0).datagrams_out == 2
    });
    let l = listener(&srv, 0);
    assert_eq!(
        (l.drops, l.datagrams_in, l.bytes_in),
        ([1, 1], 2, 107),
        "by reason: too large, truncated"
    );
    assert_eq!((l.datagrams_out, l.bytes_out), (2, 107), "the replies");
    assert_eq!(srv.totals().datagrams_in, 2, "the plugin saw only those");
}

#[test]
fn per_source_connection_cap_is_exact() {
    let ops = ListenerOps {
        tls: None,
        allow: None,
        limits: Limits {
            max_conns_per_source: 3,
            conn_rate: None,
            ..Limits::default()
        },
    };
    let srv = server()
        .listen(tcp("echo", 1))
        .operations(operations(1, ops, false))
        .start();
    let addr = srv.addr(0);
    let mut open: Vec<TcpStream> = (0..3).map(|_| connect_from(TRUSTED, addr)).collect();
    for s in &mut open {
        round_trip(s, b"x", b"x");
    }
    let mut fourth = connect_from(TRUSTED, addr);
    assert_eq!(read_until_closed(&mut fourth), b"");
    // Another source has its own count.
    let mut other = connect_from(UNTRUSTED, addr);
    round_trip(&mut other, b"y", b"y");
    assert_eq!(listener(&srv, 0).denied[DenyReason::SourceFull as usize], 1);
    // A slot freed is a slot taken.
    drop(open.pop());
    srv.wait_stats("a close", |s| common::total(s).conns_closed == 1);
    let mut again = connect_from(TRUSTED, addr);
    round_trip(&mut again, b"z", b"z");
    let l = listener(&srv, 0);
    assert_eq!((l.conns_accepted, l.denied_total()), (5, 1));
}

#[test]
fn connection_rate_limit_is_exact() {
    let ops = ListenerOps {
        tls: None,
        allow: None,
        limits: Limits {
            conn_rate: Some(RateLimit {
                per_sec: 1,
                burst: 5,
            }),
            ..Limits::default()
        },
    };
    let srv = server()
        .listen(tcp("echo", 1))
        .operations(operations(1, ops, false))
        .start();
    // Six connections at once: the burst of five is served, the sixth is
    // refused (within the same second no token comes back). All six connect
    // before any is used, so the server accepts them back to back however
    // slowly this test process runs; only then is each one tried.
    let mut conns: Vec<_> = (0..6).map(|_| connect_from(TRUSTED, srv.addr(0))).collect();
    srv.wait_stats("six accepts", |s| {
        let t = common::total(s);
        t.conns_accepted + listener(&srv, 0).denied_total() >= 6
    });
    let mut admitted = 0;
    let mut refused = 0;
    for s in &mut conns {
        let _ = s.write_all(b"q");
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(1) => admitted += 1,
            _ => refused += 1,
        }
    }
    assert_eq!((admitted, refused), (5, 1));
    assert_eq!(
        listener(&srv, 0).denied[DenyReason::RateLimited as usize],
        1
    );
}

#[test]
fn slowloris_meets_the_first_bytes_deadline_and_a_quiet_peer_the_idle_timeout() {
    let ops = ListenerOps {
        tls: None,
        allow: None,
        limits: Limits {
            first_bytes_timeout: Some(Duration::from_millis(300)),
            idle_timeout: Some(Duration::from_millis(600)),
            ..Limits::default()
        },
    };
    let srv = server()
        .listen(tcp("echo", 1))
        .operations(operations(1, ops, false))
        .start();
    // Connects and sends nothing: closed by the server.
    let mut silent = connect(srv.addr(0));
    assert_eq!(read_until_closed(&mut silent), b"");
    let l = srv.wait_stats("the first-bytes close", |_| {
        srv.handle().listener_stats()[0].conns_closed == 1
    });
    drop(l);
    assert_eq!(listener(&srv, 0).timeouts, [1, 0, 0, 0]);
    // Talks once, then goes quiet: closed at the idle timeout.
    let mut quiet = connect(srv.addr(0));
    round_trip(&mut quiet, b"hi", b"hi");
    assert_eq!(read_until_closed(&mut quiet), b"");
    srv.wait_stats("the idle close", |_| {
        srv.handle().listener_stats()[0].conns_closed == 2
    });
    let l = listener(&srv, 0);
    assert_eq!(l.timeouts[TimeoutKind::Idle as usize], 1);
    assert_eq!(l.timeouts, [1, 1, 0, 0]);
}

/// Resident set size of this process in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_peer_that_never_reads_keeps_server_memory_bounded_while_1_gib_is_offered() {
    const OFFERED: u64 = 1 << 30;
    let config = EngineConfig {
        max_outbound: 1 << 20,
        pause_outbound: 256 << 10,
        ..EngineConfig::default()
    };
    let srv = server().listen(tcp("echo", 1)).config(config).start();
    let mut s = connect(srv.addr(0));
    s.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let before = rss_kib();
    let chunk = vec![7u8; 1 << 20];
    let mut written: u64 = 0;
    // Offer 1 GiB without ever reading the echo; the writes stall once the
    // server stops reading and the socket buffers are full.
    while written < OFFERED {
        match s.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("write: {e}"),
        }
    }
    let t = srv.wait_totals("the pause", |c| c.backpressure_pauses >= 1);
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(
        written < OFFERED / 16,
        "only the buffers took bytes: {written}"
    );
    assert!(grown_mib < 64, "the process grew by {grown_mib} MiB");
    // What the server holds is what it read and the kernel did not take
    // back: at most the outbound cap queued plus as much kept unconsumed.
    let held = t.bytes_in - t.bytes_out;
    assert!(held <= 2 << 20, "the server holds {held} bytes");
    assert_eq!(t.conns_closed, 0, "paused, not closed");
}

#[test]
fn handshake_log_has_one_open_and_one_close_line_per_connection() {
    const CONNS: usize = 1000;
    let (w, out) = log_writer(2, vec!["echo".to_owned()]);
    let ops = Operations {
        log: Some(vec![w.sink(0), w.sink(1)]),
        ..Operations::default()
    };
    let srv = server()
        .listen(tcp("echo", 2))
        .shards(2)
        .operations(ops)
        .start();
    let addrs = srv.addrs(0);
    for i in 0..CONNS {
        let mut s = connect(addrs[i % 2]);
        round_trip(&mut s, b"0123456789", b"0123456789");
    }
    srv.wait_stats("every close", |s| {
        common::total(s).conns_closed == CONNS as u64
    });
    srv.shutdown();
    assert_eq!(w.dropped(), 0);
    w.finish().unwrap();
    let lines = out.json_lines();
    assert_eq!(lines.len(), 2 * CONNS);
    let mut opens = std::collections::HashMap::new();
    let mut closes = std::collections::HashMap::new();
    for l in &lines {
        let key = (
            l["shard"].as_u64().unwrap(),
            l["peer"].as_str().unwrap().to_owned(),
        );
        assert_eq!(l["listener"], "echo");
        match l["event"].as_str().unwrap() {
            "open" => *opens.entry(key).or_insert(0) += 1,
            "close" => {
                assert_eq!(
                    (l["bytes_in"].as_u64(), l["bytes_out"].as_u64()),
                    (Some(10), Some(10))
                );
                assert_eq!(l["close_reason"], "peer_closed");
                *closes.entry(key).or_insert(0) += 1
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(opens.len(), CONNS);
    assert!(opens.values().all(|&n| n == 1));
    assert_eq!(
        opens.keys().collect::<std::collections::BTreeSet<_>>(),
        closes.keys().collect()
    );
    assert!(closes.values().all(|&n| n == 1));
}
