//! Outbound streams end to end: a test plugin connects from its shard to
//! std listeners on loopback and reports every callback; the engine's
//! counters are checked to the unit. Runs on the backend `RINGPORT_BACKEND`
//! names (the suite runs once on each).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{server, tcp, IO_TIMEOUT};
use ringport::engine::operations::Operations;
use ringport::engine::tls::client::{ClientTls, ClientTlsSettings};
use ringport::engine::{Counters, EngineConfig};
use ringport::plugin::backoff::Backoff;
use ringport::plugin::{
    CloseReason, ConnId, ConnectError, ConnectFailure, ConnectRequest, Context, DropReason,
    ListenerId, Plugin, PluginFactory, Registry, ShardId, StreamInfo, Transport, WriteError,
};

/// A loopback address of its own for the peers here, so that no other
/// test's client can happen to take a port these tests free and reuse.
const PEERS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 73));

/// What the plugin heard, in order.
#[derive(Debug, Clone, PartialEq)]
enum Heard {
    /// `connect` refused at once.
    Denied(u64, ConnectError),
    /// `handle_connected`.
    Connected {
        tag: u64,
        peer: SocketAddr,
        local: SocketAddr,
    },
    /// `handle_connect_failed`.
    Failed(u64, ConnectFailure),
    /// `handle_close`.
    Closed(u64, CloseReason),
}

/// One connect the plugin makes at start.
#[derive(Debug, Clone)]
struct Target {
    addr: SocketAddr,
    tag: u64,
    timeout: Duration,
    /// Written right after `connect`, before it completes.
    early: &'static [u8],
    /// Written in `handle_connected`.
    greeting: &'static [u8],
    /// Closed right after `connect` (cancels it).
    cancel: bool,
    /// In `handle_connected`, writes [`FLOOD_CHUNK`]s until a write fails.
    flood: bool,
    /// Over TLS: (client profile, server name).
    tls: Option<(&'static str, &'static str)>,
}

/// What a flooding target writes at a time.
const FLOOD_CHUNK: usize = 16 << 10;

fn target(addr: SocketAddr, tag: u64) -> Target {
    Target {
        addr,
        tag,
        timeout: Duration::from_secs(5),
        early: b"",
        greeting: b"",
        cancel: false,
        flood: false,
        tls: None,
    }
}

#[derive(Debug, Default)]
struct Record {
    heard: Vec<(Instant, Heard)>,
    /// Bytes received, by tag.
    received: HashMap<u64, Vec<u8>>,
    /// Reconnect delays asked of the backoff, in order.
    delays: Vec<Duration>,
    /// When each tag was dialled (`Context::now` at the `connect` call).
    dialled: HashMap<u64, Instant>,
    /// A flooding target's bytes queued, and the error that stopped it.
    flooded: Option<(usize, WriteError)>,
    /// `Context::peer_identities` at `handle_connected`, by tag.
    identities: HashMap<u64, Vec<String>>,
}

/// The plugin's script and its record, shared with the test.
#[derive(Debug, Clone)]
struct Script {
    targets: Vec<Target>,
    /// Reconnect after a failure, after the backoff's delay, with the next tag.
    reconnect: Option<Backoff>,
    record: Arc<Mutex<Record>>,
}

struct Dialer {
    script: Script,
    tags: HashMap<ConnId, u64>,
    /// The address of the target being retried.
    retry: Option<(SocketAddr, u64)>,
}

impl Dialer {
    fn hear(&self, ctx: &dyn Context, h: Heard) {
        self.script
            .record
            .lock()
            .unwrap()
            .heard
            .push((ctx.now(), h));
    }

    fn dial(&mut self, ctx: &mut dyn Context, t: &Target) {
        let mut req = ConnectRequest::new(t.addr, t.tag).with_timeout(t.timeout);
        if let Some((profile, name)) = t.tls {
            req = req.with_tls(profile, name);
        }
        self.script
            .record
            .lock()
            .unwrap()
            .dialled
            .insert(t.tag, ctx.now());
        match ctx.connect(req) {
            Ok(id) => {
                self.tags.insert(id, t.tag);
                if !t.early.is_empty() {
                    ctx.write(id, t.early).expect("queued while connecting");
                }
                if t.cancel {
                    ctx.close(id);
                }
            }
            Err(e) => self.hear(ctx, Heard::Denied(t.tag, e)),
        }
    }
}

impl Plugin for Dialer {
    fn handle_start(&mut self, ctx: &mut dyn Context) {
        for t in self.script.targets.clone() {
            self.dial(ctx, &t);
        }
    }

    fn handle_connected(&mut self, ctx: &mut dyn Context, stream: &StreamInfo, tag: u64) {
        assert_eq!(stream.listener, ListenerId::OUTBOUND);
        assert_eq!(self.tags.get(&stream.conn), Some(&tag));
        if let Some(b) = &mut self.script.reconnect {
            b.reset();
        }
        let ids = ctx.peer_identities(stream.conn);
        self.script
            .record
            .lock()
            .unwrap()
            .identities
            .insert(tag, ids);
        if let Some(t) = self.script.targets.iter().find(|t| t.tag == tag) {
            if !t.greeting.is_empty() {
                ctx.write(stream.conn, t.greeting).unwrap();
            }
            if t.flood {
                let mut queued = 0;
                let chunk = vec![b'f'; FLOOD_CHUNK];
                let err = loop {
                    match ctx.write(stream.conn, &chunk) {
                        Ok(()) => queued += chunk.len(),
                        Err(e) => break e,
                    }
                };
                self.script.record.lock().unwrap().flooded = Some((queued, err));
            }
        }
        // Last, so that a test that sees it sees everything above too.
        self.hear(
            ctx,
            Heard::Connected {
                tag,
                peer: stream.peer,
                local: stream.local,
            },
        );
    }

    fn handle_data(
        &mut self,
        _ctx: &mut dyn Context,
        conn: ConnId,
        data: &[u8],
    ) -> Result<usize, DropReason> {
        let tag = self.tags[&conn];
        let mut r = self.script.record.lock().unwrap();
        r.received.entry(tag).or_default().extend_from_slice(data);
        Ok(data.len())
    }

    fn handle_close(&mut self, ctx: &mut dyn Context, conn: ConnId, reason: CloseReason) {
        let tag = self
            .tags
            .remove(&conn)
            .expect("a stream this plugin opened");
        self.hear(ctx, Heard::Closed(tag, reason));
    }

    fn handle_connect_failed(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        tag: u64,
        failure: ConnectFailure,
    ) {
        assert_eq!(self.tags.remove(&conn), Some(tag));
        self.hear(ctx, Heard::Failed(tag, failure));
        if failure == ConnectFailure::Cancelled {
            return;
        }
        if let Some(b) = &mut self.script.reconnect {
            let delay = b.next_delay();
            self.script.record.lock().unwrap().delays.push(delay);
            let addr = self
                .retry
                .map_or_else(|| self.script.targets[0].addr, |(a, _)| a);
            self.retry = Some((addr, tag + 1));
            ctx.set_timer(delay, tag + 1);
        }
    }

    fn handle_timer(&mut self, ctx: &mut dyn Context, _now: Instant, token: u64) {
        if let Some((addr, tag)) = self.retry {
            assert_eq!(tag, token);
            self.dial(ctx, &target(addr, tag));
        }
    }
}

struct DialerFactory(Script);

impl PluginFactory for DialerFactory {
    fn name(&self) -> &str {
        "dialer"
    }
    fn supports(&self, transport: Transport) -> bool {
        transport == Transport::Tcp
    }
    fn create(&self, _: ShardId, _: usize) -> Box<dyn Plugin> {
        Box::new(Dialer {
            script: self.0.clone(),
            tags: HashMap::new(),
            retry: None,
        })
    }
}

/// Starts one shard whose dialer plugin runs `targets` at start.
fn start(targets: Vec<Target>, reconnect: Option<Backoff>) -> (common::Server, Arc<Mutex<Record>>) {
    start_with(common::test_config(), targets, reconnect)
}

/// The same with engine tunables.
fn start_with(
    config: EngineConfig,
    targets: Vec<Target>,
    reconnect: Option<Backoff>,
) -> (common::Server, Arc<Mutex<Record>>) {
    start_full(config, Operations::default(), targets, reconnect)
}

/// The same with engine tunables and operations (client TLS profiles).
fn start_full(
    config: EngineConfig,
    operations: Operations,
    targets: Vec<Target>,
    reconnect: Option<Backoff>,
) -> (common::Server, Arc<Mutex<Record>>) {
    let record = Arc::new(Mutex::new(Record::default()));
    let mut registry = Registry::new();
    registry
        .register(Arc::new(DialerFactory(Script {
            targets,
            reconnect,
            record: record.clone(),
        })))
        .unwrap();
    // The plugin needs a listener to be instantiated; nothing connects to it.
    let srv = server()
        .config(config)
        .operations(operations)
        .registry(registry)
        .listen(tcp("dialer", 1))
        .start();
    (srv, record)
}

fn heard(record: &Arc<Mutex<Record>>) -> Vec<Heard> {
    record
        .lock()
        .unwrap()
        .heard
        .iter()
        .map(|(_, h)| h.clone())
        .collect()
}

/// Waits until the plugin has heard `n` things.
fn wait_heard(record: &Arc<Mutex<Record>>, n: usize) -> Vec<Heard> {
    let until = Instant::now() + IO_TIMEOUT;
    loop {
        let h = heard(record);
        if h.len() >= n {
            return h;
        }
        assert!(Instant::now() < until, "heard only {h:?}, waiting for {n}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A port on [`PEERS`] with nothing listening (bound, then let go).
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind((PEERS, 0)).unwrap();
    l.local_addr().unwrap()
}

fn failures(c: &Counters, f: ConnectFailure) -> u64 {
    c.connect_failures[f.index()]
}

/// The next connection on `l`, failing the test after [`IO_TIMEOUT`].
fn accept(l: &TcpListener) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let until = Instant::now() + IO_TIMEOUT;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < until, "the plugin never connected");
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[test]
fn a_plugin_connects_and_talks_over_ipv4_and_ipv6() {
    let v4 = TcpListener::bind((PEERS, 0)).unwrap();
    let v6 = TcpListener::bind("[::1]:0").unwrap();
    let targets = vec![
        Target {
            early: b"early ",
            greeting: b"ping",
            ..target(v4.local_addr().unwrap(), 1)
        },
        Target {
            greeting: b"ping6",
            ..target(v6.local_addr().unwrap(), 2)
        },
    ];
    let (srv, record) = start(targets, None);
    let mut a = accept(&v4);
    let mut b = accept(&v6);
    // The plugin's local ends, as the peers see them.
    let ends = [a.peer_addr().unwrap(), b.peer_addr().unwrap()];
    // Bytes written while connecting went first.
    let mut got = [0u8; 10];
    a.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"early ping");
    let mut got = [0u8; 5];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping6");
    a.write_all(b"pong").unwrap();
    b.write_all(b"pong6").unwrap();
    let until = Instant::now() + IO_TIMEOUT;
    while record
        .lock()
        .unwrap()
        .received
        .values()
        .map(Vec::len)
        .sum::<usize>()
        < 9
    {
        assert!(Instant::now() < until, "the replies did not arrive");
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(a);
    drop(b);
    let h = wait_heard(&record, 4);
    let connected: Vec<&Heard> = h
        .iter()
        .filter(|x| matches!(x, Heard::Connected { .. }))
        .collect();
    assert_eq!(connected.len(), 2, "{h:?}");
    for ((l, tag), end) in [(&v4, 1), (&v6, 2)].into_iter().zip(ends) {
        let want = Heard::Connected {
            tag,
            peer: l.local_addr().unwrap(),
            local: end,
        };
        assert!(h.contains(&want), "{want:?} in {h:?}");
        assert!(
            h.contains(&Heard::Closed(tag, CloseReason::PeerClosed)),
            "{h:?}"
        );
    }
    let r = record.lock().unwrap();
    assert_eq!(r.received[&1], b"pong");
    assert_eq!(r.received[&2], b"pong6");
    drop(r);
    let c = srv.wait_totals("both outbound streams closed", |c| c.conns_closed == 2);
    assert_eq!(
        (
            c.connects_started,
            c.conns_connected,
            c.conns_closed,
            c.conns_accepted
        ),
        (2, 2, 2, 0)
    );
    assert_eq!((c.connect_failures_total(), c.connects_denied), (0, 0));
    assert_eq!((c.bytes_out, c.bytes_in), (10 + 5, 4 + 5));
    assert_eq!(c.conns_open(), 0);
    srv.shutdown();
    assert_eq!(heard(&record).len(), 4, "nothing more after the closes");
}

#[test]
fn a_refused_connect_fails_once_with_no_close_and_a_bad_address_is_denied() {
    let refused = closed_port();
    let bad = SocketAddr::new(PEERS, 0);
    let (srv, record) = start(vec![target(refused, 1), target(bad, 2)], None);
    let h = wait_heard(&record, 2);
    assert_eq!(
        h,
        [
            Heard::Denied(2, ConnectError::InvalidAddress),
            Heard::Failed(1, ConnectFailure::Refused),
        ]
    );
    let stats = srv.shutdown();
    let c = common::total(&stats);
    assert_eq!(heard(&record), h, "no handle_close after a failed connect");
    assert_eq!(failures(&c, ConnectFailure::Refused), 1);
    assert_eq!(c.connect_failures_total(), 1);
    assert_eq!(
        (
            c.connects_started,
            c.connects_denied,
            c.conns_connected,
            c.conns_closed
        ),
        (1, 1, 0, 0)
    );
}

/// A listener that never accepts, with its accept queue full, so that the
/// kernel drops further SYNs and a connect to it hangs until it times out.
fn black_hole() -> (socket2::Socket, Vec<TcpStream>) {
    use socket2::{Domain, Socket, Type};
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.bind(&SocketAddr::new(PEERS, 0).into()).unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let mut queued = Vec::new();
    // A backlog of 0 holds one connection (the queue is full when it holds
    // more than the backlog); the connect after those hangs.
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => queued.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return (l, queued),
            Err(e) => panic!("filling the accept queue: {e}"),
        }
    }
    panic!("the accept queue of a backlog-0 listener took 8 connections");
}

#[test]
fn a_connect_to_a_silent_peer_times_out_and_a_closed_one_is_cancelled() {
    let (hole, _queued) = black_hole();
    let addr = hole.local_addr().unwrap().as_socket().unwrap();
    let timeout = Duration::from_millis(300);
    let targets = vec![
        Target {
            timeout,
            ..target(addr, 1)
        },
        Target {
            cancel: true,
            early: b"never sent",
            ..target(addr, 2)
        },
    ];
    let (srv, record) = start(targets, None);
    let h = wait_heard(&record, 2);
    assert_eq!(
        h,
        [
            Heard::Failed(2, ConnectFailure::Cancelled),
            Heard::Failed(1, ConnectFailure::TimedOut),
        ]
    );
    let r = record.lock().unwrap();
    let waited = r.heard[1].0.duration_since(r.dialled[&1]);
    drop(r);
    assert!(waited >= timeout, "timed out after {waited:?}");
    let stats = srv.shutdown();
    let c = common::total(&stats);
    assert_eq!(heard(&record), h);
    assert_eq!(failures(&c, ConnectFailure::TimedOut), 1);
    assert_eq!(failures(&c, ConnectFailure::Cancelled), 1);
    assert_eq!(c.connect_failures_total(), 2);
    assert_eq!(
        (
            c.connects_started,
            c.conns_connected,
            c.conns_closed,
            c.bytes_out
        ),
        (2, 0, 0, 0)
    );
}

#[test]
fn a_peer_reset_mid_stream_closes_with_peer_reset() {
    let l = TcpListener::bind((PEERS, 0)).unwrap();
    let targets = vec![Target {
        greeting: b"hello",
        ..target(l.local_addr().unwrap(), 7)
    }];
    let (srv, record) = start(targets, None);
    let mut s = accept(&l);
    let mut got = [0u8; 5];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
    common::reset(s);
    let h = wait_heard(&record, 2);
    assert!(matches!(h[0], Heard::Connected { tag: 7, .. }), "{h:?}");
    assert_eq!(h[1], Heard::Closed(7, CloseReason::PeerReset));
    let stats = srv.shutdown();
    let c = common::total(&stats);
    assert_eq!(heard(&record).len(), 2);
    assert_eq!(
        (c.connects_started, c.conns_connected, c.conns_closed),
        (1, 1, 1)
    );
    assert_eq!(c.connect_failures_total(), 0);
}

#[test]
fn a_plugin_reconnects_with_backoff_until_a_listener_appears() {
    let addr = closed_port();
    let base = Duration::from_millis(60);
    let backoff = Backoff::new(base, Duration::from_secs(1))
        .jitter_percent(0)
        .seed(1);
    let (srv, record) = start(vec![target(addr, 1)], Some(backoff));
    // Three refusals; the fourth attempt waits 4 x base, time enough to
    // open the listener.
    let h = wait_heard(&record, 3);
    let l = TcpListener::bind(addr).unwrap();
    assert_eq!(
        h[..3],
        [
            Heard::Failed(1, ConnectFailure::Refused),
            Heard::Failed(2, ConnectFailure::Refused),
            Heard::Failed(3, ConnectFailure::Refused),
        ]
    );
    let s = accept(&l);
    let h = wait_heard(&record, 4);
    assert!(
        matches!(h[3], Heard::Connected { tag: 4, peer, .. } if peer == addr),
        "{h:?}"
    );
    assert_eq!(h.len(), 4, "{h:?}");
    let r = record.lock().unwrap();
    assert_eq!(r.delays, [base, 2 * base, 4 * base]);
    // Each retry came no sooner than its delay after the failure before it.
    for i in 1..3 {
        let gap = r.heard[i].0.duration_since(r.heard[i - 1].0);
        assert!(gap >= r.delays[i - 1], "retry {i} after {gap:?}");
    }
    drop(r);
    drop(s);
    let c = srv.wait_totals("the stream closed", |c| c.conns_closed == 1);
    assert_eq!(failures(&c, ConnectFailure::Refused), 3);
    assert_eq!(c.connect_failures_total(), 3);
    assert_eq!(
        (c.connects_started, c.conns_connected, c.conns_closed),
        (4, 1, 1)
    );
    srv.shutdown();
    assert_eq!(heard(&record)[4], Heard::Closed(4, CloseReason::PeerClosed));
}

#[test]
fn outbound_writes_meet_the_stream_cap_and_the_table_limit() {
    // One slot in the table: the second connect finds it taken. A 64 KiB
    // cap per stream: the flooding plugin is told QueueFull at exactly it.
    let config = EngineConfig {
        max_conns_per_shard: 1,
        max_outbound: 64 << 10,
        pause_outbound: 32 << 10,
        ..common::test_config()
    };
    let l = TcpListener::bind((PEERS, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let targets = vec![
        Target {
            flood: true,
            ..target(addr, 1)
        },
        target(addr, 2),
    ];
    let (srv, record) = start_with(config, targets, None);
    let mut s = accept(&l);
    let h = wait_heard(&record, 2);
    assert_eq!(h[0], Heard::Denied(2, ConnectError::TableFull));
    assert!(matches!(h[1], Heard::Connected { tag: 1, .. }), "{h:?}");
    assert_eq!(
        record.lock().unwrap().flooded,
        Some((64 << 10, WriteError::QueueFull))
    );
    // Everything queued arrives, and nothing more.
    let mut got = vec![0u8; 64 << 10];
    s.read_exact(&mut got).unwrap();
    assert!(got.iter().all(|&b| b == b'f'));
    drop(s);
    let c = srv.wait_totals("the stream closed", |c| c.conns_closed == 1);
    assert_eq!(c.bytes_out, 64 << 10);
    assert_eq!(
        (c.connects_started, c.connects_denied, c.conns_connected),
        (1, 1, 1)
    );
    srv.shutdown();
    assert_eq!(heard(&record)[2], Heard::Closed(1, CloseReason::PeerClosed));
}

/// The TLS server's thread: whether a client certificate came, and the bytes.
type TlsPeer = std::thread::JoinHandle<Result<(bool, Vec<u8>), String>>;

/// A TLS server on [`PEERS`] that wants a client certificate of `pki`'s CA:
/// it reads `expect.len()` bytes, answers `reply`, and closes with
/// close_notify. Returns its address and what it saw (the client
/// certificate's presence and the bytes), or the handshake's error.
fn tls_server(
    pki: &common::pki::Pki,
    expect: usize,
    reply: &'static [u8],
) -> (SocketAddr, TlsPeer) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::server::WebPkiClientVerifier;
    use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for c in common::pki::certs(&pki.ca.path) {
        roots.add(c).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let config = Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                common::pki::certs(&pki.server.cert),
                PrivateKeyDer::from_pem_file(&pki.server.key).unwrap(),
            )
            .unwrap(),
    );
    let l = TcpListener::bind((PEERS, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let tcp = accept(&l);
        let conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
        let mut s = StreamOwned::new(conn, tcp);
        let mut got = vec![0u8; expect];
        s.read_exact(&mut got).map_err(|e| e.to_string())?;
        let had_cert = s.conn.peer_certificates().is_some_and(|c| !c.is_empty());
        s.write_all(reply).map_err(|e| e.to_string())?;
        s.conn.send_close_notify();
        s.flush().map_err(|e| e.to_string())?;
        Ok((had_cert, got))
    });
    (addr, h)
}

fn profile(name: &str, settings: ClientTlsSettings) -> Operations {
    Operations {
        tls_clients: vec![(name.to_owned(), Arc::new(ClientTls::new(settings).unwrap()))],
        ..Operations::default()
    }
}

#[test]
fn a_tls_connect_with_a_client_certificate_talks_plaintext_to_the_plugin() {
    let pki = common::pki::Pki::new();
    let leaf = pki.client(
        "dialer",
        &common::pki::ClientSpec {
            cn: "dialer",
            uris: &["spiffe://test/dialer"],
            ..Default::default()
        },
    );
    let ops = profile(
        "mtls",
        ClientTlsSettings::new(&pki.ca.path).with_client_cert(&leaf.cert, &leaf.key),
    );
    let (addr, server) = tls_server(&pki, 10, b"pong over tls");
    let targets = vec![Target {
        tls: Some(("mtls", "localhost")),
        early: b"early ",
        greeting: b"ping",
        ..target(addr, 1)
    }];
    let (srv, record) = start_full(common::test_config(), ops, targets, None);
    let (had_cert, got) = server.join().unwrap().expect("the TLS server's side");
    assert!(had_cert, "the client certificate was presented");
    assert_eq!(got, b"early ping");
    let h = wait_heard(&record, 2);
    assert!(
        matches!(h[0], Heard::Connected { tag: 1, peer, .. } if peer == addr),
        "{h:?}"
    );
    assert_eq!(h[1], Heard::Closed(1, CloseReason::PeerClosed));
    let r = record.lock().unwrap();
    assert_eq!(r.received[&1], b"pong over tls");
    let ids = &r.identities[&1];
    assert!(ids.contains(&"dns:localhost".to_owned()), "{ids:?}");
    drop(r);
    let stats = srv.shutdown();
    let c = common::total(&stats);
    assert_eq!(
        (c.connects_started, c.conns_connected, c.conns_closed),
        (1, 1, 1)
    );
    assert_eq!(c.connect_failures_total(), 0);
    assert_eq!(heard(&record).len(), 2);
}

#[test]
fn a_tls_connect_to_an_untrusted_server_fails_as_tls_and_bad_requests_are_denied() {
    let pki = common::pki::Pki::new();
    // The profile trusts another CA than the one that signed the server.
    let other = common::pki::Ca::new(&pki.dir, "other");
    let ops = profile("strict", ClientTlsSettings::new(&other.path));
    let (addr, server) = tls_server(&pki, 1, b"");
    let targets = vec![
        Target {
            tls: Some(("strict", "localhost")),
            early: b"never sent",
            ..target(addr, 1)
        },
        Target {
            tls: Some(("missing", "localhost")),
            ..target(addr, 2)
        },
        Target {
            tls: Some(("strict", "not a name")),
            ..target(addr, 3)
        },
    ];
    let (srv, record) = start_full(common::test_config(), ops, targets, None);
    let h = wait_heard(&record, 3);
    assert_eq!(
        h,
        [
            Heard::Denied(2, ConnectError::UnknownTlsProfile),
            Heard::Denied(3, ConnectError::InvalidServerName),
            Heard::Failed(1, ConnectFailure::Tls),
        ]
    );
    assert!(
        server.join().unwrap().is_err(),
        "the server saw no handshake through"
    );
    let stats = srv.shutdown();
    let c = common::total(&stats);
    assert_eq!(
        heard(&record),
        h,
        "no handle_close after a failed handshake"
    );
    assert_eq!(failures(&c, ConnectFailure::Tls), 1);
    assert_eq!(c.connect_failures_total(), 1);
    assert_eq!(
        (
            c.connects_started,
            c.connects_denied,
            c.conns_connected,
            c.conns_closed
        ),
        (1, 2, 0, 0)
    );
}
