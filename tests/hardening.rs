//! What a hostile peer or a faulty plugin cannot do to a shard: a panicking
//! plugin costs one connection or one datagram, never the shard; a peer
//! whose address cannot be read is never admitted.

mod common;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{
    connect, read_until_closed, reset, retry_eintr, round_trip, server, tcp, udp, IO_TIMEOUT,
};
use ringport::engine::EngineDrop;
use ringport::plugin::{
    ConnId, Context, DatagramInfo, DropReason, Plugin, PluginFactory, Registry, ShardId, Transport,
};

/// A panic payload whose own `Drop` panics.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("the payload's drop panics too");
    }
}

/// Set while a [`Fragile`] plugin holds its shard on `stall`.
static STALLING: AtomicBool = AtomicBool::new(false);
/// Set by the test to let a stalled [`Fragile`] plugin go on.
static RELEASE: AtomicBool = AtomicBool::new(false);

/// Echoes, but panics on input that starts with `panic` (with a payload
/// whose drop panics again on `bomb`) and, on input that starts with
/// `stall`, holds its shard until the test sets [`RELEASE`] (10 s at most).
struct Fragile;

impl Plugin for Fragile {
    fn handle_data(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        data: &[u8],
    ) -> Result<usize, DropReason> {
        assert!(!data.starts_with(b"panic"), "told to panic");
        if data.starts_with(b"bomb") {
            std::panic::panic_any(Bomb);
        }
        if data.starts_with(b"stall") {
            STALLING.store(true, Ordering::SeqCst);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !RELEASE.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            STALLING.store(false, Ordering::SeqCst);
        }
        ctx.write(conn, data).map_err(|_| DropReason::QueueFull)?;
        ctx.record_messages(1);
        Ok(data.len())
    }

    fn handle_datagram(
        &mut self,
        ctx: &mut dyn Context,
        from: &DatagramInfo,
        data: &[u8],
    ) -> Result<(), DropReason> {
        assert!(!data.starts_with(b"panic"), "told to panic");
        ctx.send_datagram(from.socket, from.peer, &[data])
            .map_err(|_| DropReason::QueueFull)?;
        ctx.record_messages(1);
        Ok(())
    }
}

/// Makes [`Fragile`] plugins; with `dud`, panics instead.
struct FragileFactory {
    dud: bool,
}

impl PluginFactory for FragileFactory {
    fn name(&self) -> &str {
        "fragile"
    }
    fn supports(&self, _: Transport) -> bool {
        true
    }
    fn create(&self, _: ShardId, _: usize) -> Box<dyn Plugin> {
        assert!(!self.dud, "this factory cannot make plugins");
        Box::new(Fragile)
    }
}

fn fragile_server() -> common::Server {
    let mut registry = Registry::new();
    registry
        .register(std::sync::Arc::new(FragileFactory { dud: false }))
        .unwrap();
    server()
        .registry(registry)
        .listen(tcp("fragile", 1))
        .listen(udp("fragile", 1))
        .start()
}

#[test]
fn a_panicking_plugin_costs_one_connection_or_datagram_and_the_shard_lives_on() {
    let srv = fragile_server();
    // A healthy stream, open across the other's panic.
    let mut healthy = connect(srv.addr(0));
    round_trip(&mut healthy, b"before", b"before");
    let mut doomed = connect(srv.addr(0));
    doomed.write_all(b"panic now").unwrap();
    assert_eq!(
        read_until_closed(&mut doomed),
        b"",
        "closed without a reply"
    );
    round_trip(&mut healthy, b"after", b"after");

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock.connect(srv.addr(1)).unwrap();
    sock.send(b"panic please").unwrap();
    sock.send(b"still here").unwrap();
    let mut buf = [0u8; 64];
    let n = retry_eintr(|| sock.recv(&mut buf)).unwrap();
    assert_eq!(
        &buf[..n],
        b"still here",
        "the datagram after the panic is served"
    );

    let t = srv.wait_totals("both panics counted", |c| {
        c.engine_drops[EngineDrop::PluginPanic as usize] == 2
    });
    assert_eq!(t.msgs, 3, "before, after and the datagram");
    assert_eq!(t.datagrams_in, 2);
    assert_eq!((t.conns_accepted, t.conns_closed), (2, 1));
    drop(healthy);
    let mut late = connect(srv.addr(0));
    late.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    late.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"x", "a new stream after the panics is served");
}

/// Streams that reset before the shard gets to them have no peer address:
/// each is closed and counted (`peer_unknown`), never admitted as if it came
/// from some address, and the shard serves the next one.
#[test]
fn a_stream_reset_before_its_accept_is_refused_and_counted() {
    const RESETS: u64 = 8;
    let srv = fragile_server();
    let mut busy = connect(srv.addr(0));
    busy.write_all(b"stall").unwrap();
    // Only once the shard is held in the plugin do these connect (the
    // kernel completes their handshakes) and reset; had the shard been free,
    // it could accept one before its reset arrived.
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while !STALLING.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the shard never stalled"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for _ in 0..RESETS {
        reset(connect(srv.addr(0)));
    }
    RELEASE.store(true, Ordering::SeqCst);
    let mut echoed = [0u8; 5];
    busy.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"stall");
    let t = srv.wait_totals("every reset stream counted", |c| {
        c.engine_drops[EngineDrop::PeerUnknown as usize] == RESETS
    });
    assert_eq!(t.conns_accepted, 1, "only the stalling stream was admitted");
    assert_eq!(t.drops_total(), RESETS);
    round_trip(&mut busy, b"next", b"next");
}

/// A panic whose payload panics again when dropped is contained as well:
/// the stream closes, the shard goes on.
#[test]
fn a_panic_payload_that_panics_on_drop_is_contained() {
    let srv = fragile_server();
    let mut doomed = connect(srv.addr(0));
    doomed.write_all(b"bomb").unwrap();
    assert_eq!(
        read_until_closed(&mut doomed),
        b"",
        "closed without a reply"
    );
    let t = srv.wait_totals("the panic counted", |c| {
        c.engine_drops[EngineDrop::PluginPanic as usize] == 1
    });
    assert_eq!((t.conns_accepted, t.conns_closed), (1, 1));
    let mut next = connect(srv.addr(0));
    round_trip(&mut next, b"alive", b"alive");
    assert_eq!(srv.handle().failure(), None);
}

/// A shard that dies outside any plugin call takes the engine down with
/// it, saying why: every shard stops and the ports close (a client gets
/// "connection refused", not a handshake nobody serves).
#[test]
fn a_dead_shard_stops_every_shard_and_closes_the_ports() {
    let mut registry = Registry::new();
    registry
        .register(std::sync::Arc::new(FragileFactory { dud: false }))
        .unwrap();
    let srv = server()
        .registry(registry)
        .shards(2)
        .listen(tcp("fragile", 2))
        .start();
    let mut open = connect(srv.addr(0));
    round_trip(&mut open, b"hello", b"hello");
    srv.handle().poison_shard(0);
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    let why = loop {
        if let Some(why) = srv.handle().failure() {
            break why;
        }
        assert!(std::time::Instant::now() < deadline, "no failure recorded");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert_eq!(why, "shard 0 panicked: failpoint: shard 0 poisoned");
    // The other shard stops as well; then no port of either accepts.
    srv.wait_stats("both shards stopped", |_| {
        srv.addrs(0)
            .iter()
            .all(|a| std::net::TcpStream::connect(a).is_err())
    });
    for a in srv.addrs(0) {
        let err = std::net::TcpStream::connect(a).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{a}");
    }
    // The open stream was closed as the shard's state unwound.
    assert_eq!(read_until_closed(&mut open), b"");
}

/// A plugin factory that panics on a shard's thread fails start-up with a
/// message naming the shard; start-up does not wait forever for it.
#[test]
fn a_panicking_plugin_factory_fails_start_up() {
    use ringport::engine::plan::{Plan, PlanRequest};
    use ringport::engine::EngineHandle;
    let mut registry = Registry::new();
    registry
        .register(std::sync::Arc::new(FragileFactory { dud: true }))
        .unwrap();
    let cpus = ringport::engine::cpus::allowed_cpus().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let plan = Plan::build(PlanRequest {
        listeners: vec![format!("fragile@tcp:127.0.0.1:{port}").parse().unwrap()],
        shards: 1,
        cpus: cpus[..1].to_vec(),
        mode: Default::default(),
        allow_idle_shards: false,
    })
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = EngineHandle::start(&plan, common::test_config(), &registry).map(|_| ());
        let _ = tx.send(started.map_err(|e| e.to_string()));
    });
    let result = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("start-up returned");
    let err = result.expect_err("a factory that panics cannot start");
    assert!(
        err.contains("shard 0") && err.contains("panicked: this factory cannot make plugins"),
        "{err}"
    );
}

/// The kernel's state of the TCP socket `local` → `remote` (from
/// /proc/net/tcp: 1 established, 4 FIN_WAIT1, ...), if it exists.
fn tcp_state(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Option<u8> {
    let hex = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        std::net::SocketAddr::V6(_) => unreachable!("IPv4 only"),
    };
    let (l, r) = (hex(local), hex(remote));
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f[1] == l && f[2] == r).then(|| u8::from_str_radix(f[3], 16).unwrap())
        })
}

/// A peer that stops reading holds the server's send in flight; when the
/// stream times out, the engine shuts the socket down instead of waiting
/// for that send forever (the socket is closed at once; before, it stayed
/// established, with its descriptor, for as long as the peer lived).
#[test]
fn a_timed_out_stream_with_a_stuck_send_is_shut_down() {
    use ringport::engine::operations::{Limits, ListenerOps, Operations};
    let ops = ListenerOps {
        tls: None,
        allow: None,
        limits: Limits {
            idle_timeout: Some(std::time::Duration::from_millis(300)),
            ..Limits::default()
        },
    };
    let srv = server()
        .listen(tcp("echo", 1))
        .operations(Operations {
            listeners: vec![ops],
            ..Operations::default()
        })
        .start();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&srv.addr(0).into()).unwrap();
    let stream: std::net::TcpStream = sock.into();
    stream.set_nonblocking(true).unwrap();
    // Send until neither side has room: the echoes back up into the
    // server's send, which then waits on a peer that never reads.
    let chunk = vec![b'x'; 65536];
    let mut sent = 0usize;
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        match (&stream).write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
                match (&stream).write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(sent > 0);
    let (server_side, client_side) = (srv.addr(0), stream.local_addr().unwrap());
    assert_eq!(tcp_state(server_side, client_side), Some(1), "established");
    let l = srv.wait_stats("the idle close", |_| {
        srv.handle().listener_stats()[0].conns_closed == 1
    });
    drop(l);
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        // Gone: closed by the server, with a reset since it held bytes it
        // had not read. On the way it may be seen shut down (FIN_WAIT1,
        // state 4) while the stuck send completes; it must not stay there.
        let state = tcp_state(server_side, client_side);
        if state.is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server's socket is still there, in TCP state {state:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Rotating through the addresses of one IPv6 /64 is one source for the
/// per-source limits (and two /64s are two); with a /128 prefix every
/// address is its own. Played in a network namespace of the test's own,
/// on its loopback device.
#[test]
fn ipv6_sources_count_per_prefix() {
    use ringport::engine::operations::{Limits, ListenerOps, Operations};
    use ringport::engine::plan::{Plan, PlanRequest};
    use ringport::engine::policy::{Allowlist, Ipv6SourcePrefix};
    use ringport::engine::EngineHandle;
    use std::net::{SocketAddr, TcpStream};

    const ADDRS: &[&str] = &[
        "2001:db8::1/64",
        "2001:db8::10/64",
        "2001:db8::11/64",
        "2001:db8::12/64",
        "2001:db8:0:1::10/64",
    ];
    /// Connects from `from` and says whether the stream was served.
    fn served(server: SocketAddr, from: &str) -> (TcpStream, bool) {
        let sock = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)
            .expect("a socket");
        let from: SocketAddr = format!("[{from}]:0").parse().unwrap();
        sock.bind(&from.into()).expect("bind the source");
        sock.connect(&server.into()).expect("connect");
        let mut s: TcpStream = sock.into();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        let ok = matches!(retry_eintr(|| s.read(&mut one)), Ok(1));
        (s, ok)
    }
    let run = |prefix: u8| {
        move || {
            let port = std::net::TcpListener::bind("[2001:db8::1]:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let server: SocketAddr = format!("[2001:db8::1]:{port}").parse().unwrap();
            let plan = Plan::build(PlanRequest {
                listeners: vec![format!("echo@tcp:[2001:db8::1]:{port}").parse().unwrap()],
                shards: 1,
                cpus: ringport::engine::cpus::allowed_cpus().unwrap()[..1].to_vec(),
                mode: Default::default(),
                allow_idle_shards: false,
            })
            .unwrap();
            let ops = Operations {
                listeners: vec![ListenerOps {
                    allow: Some(vec![Allowlist::parse_cidr("2001:db8::/32").unwrap()]),
                    limits: Limits {
                        max_conns_per_source: 2,
                        ..Limits::default()
                    },
                    tls: None,
                }],
                ipv6_source_prefix: Ipv6SourcePrefix::new(prefix).unwrap(),
                ..Operations::default()
            };
            let registry = ringport::protocols::builtins(&Default::default());
            let engine =
                EngineHandle::start_with(&plan, common::test_config(), &registry, ops).unwrap();
            let mut open = Vec::new();
            let mut verdicts = Vec::new();
            for from in [
                "2001:db8::10",
                "2001:db8::11",
                "2001:db8::12",
                "2001:db8:0:1::10",
            ] {
                let (s, ok) = served(server, from);
                verdicts.push(ok);
                open.push(s);
            }
            let stats = engine.listener_stats();
            drop(open);
            (verdicts, stats[0].conns_accepted)
        }
    };
    let Some((by_64, accepted)) = common::netns::with_netns(ADDRS, run(64)) else {
        return;
    };
    // ::10 and ::11 fill the /64's two; ::12 is the same source; the other
    // /64 is another.
    assert_eq!(by_64, [true, true, false, true]);
    assert_eq!(accepted, 3);
    let (by_128, accepted) = common::netns::with_netns(ADDRS, run(128)).unwrap();
    assert_eq!(by_128, [true, true, true, true]);
    assert_eq!(accepted, 4);
}

/// A drain closes the UDP sockets while datagrams pour in and receives
/// run out of buffers; no receive is re-armed on a closed socket (that
/// failed at once, and re-arming again spun the shard at 100%).
#[test]
fn a_drain_under_a_udp_flood_leaves_the_shard_idle() {
    use ringport::engine::EngineConfig;
    let srv = server()
        .config(EngineConfig {
            udp_bufs: 1,
            ..common::test_config()
        })
        .listen(udp("echo", 1))
        .start();
    let target = srv.addr(0);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let payload = [7u8; 512];
            while !stop.load(Ordering::Relaxed) {
                let _ = sock.send_to(&payload, target);
            }
        })
    };
    srv.wait_totals("the flood arriving", |c| c.datagrams_in > 1000);
    srv.handle().stopper().drain();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = srv.totals().turns;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let turns = srv.totals().turns - before;
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    assert!(
        turns < 50,
        "{turns} loop turns in 500 ms of a drained, idle shard"
    );
}
