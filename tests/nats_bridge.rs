//! The relay's NATS bridge end to end: in-process ringport instances (two
//! shards each, on ports of their own) bridged through a real
//! `nats-server` on loopback, started by the test.
//!
//! Without `nats-server` every test prints
//! `skipped: install nats-server (apt-get install nats-server)` and passes,
//! except under `CI=true`, where it fails.
//!
//! The tests wait for the servers' own view (the monitoring endpoint's
//! `/subsz`) before publishing, so that no message is published before
//! the subscription that should get it exists; and a test-owned TCP gate
//! in front of the server decides when an instance may reconnect.

#[path = "mqtt/client.rs"]
#[allow(dead_code)]
mod client;
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{connect, retry_eintr, server, tcp, Server, IO_TIMEOUT};
use ringport::plugin::testing::outside_program;
use ringport::plugin::ListenerId;
use ringport::plugin::Registry;
use ringport::protocols::nats::{BridgeSettings, BridgeStats, NatsConfig};
use ringport::protocols::relay::wire::{self, Framing, Packet, Repr};
use ringport::protocols::{RelayConfig, RelayFactory};

const WAIT: Duration = Duration::from_secs(15);

/// Where `nats-server` is, or `None` (and the skip line) when it is missing;
/// a failure under CI.
fn nats_server_program() -> Option<PathBuf> {
    outside_program("nats-server", "nats-server")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A `nats-server` on loopback (clients, monitoring and cluster ports all
/// on 127.0.0.1); killed and its folder removed on drop.
struct NatsServer {
    program: PathBuf,
    dir: PathBuf,
    port: u16,
    http: u16,
    child: Option<Child>,
    /// The server's own subscriptions (system account), before any client.
    base: u64,
    /// Whether `base` was measured (on the first start).
    measured: bool,
}

impl NatsServer {
    /// A server; with `cluster` = (own route port, peers' route ports), a
    /// member of cluster `rp`.
    fn start(program: &std::path::Path, cluster: Option<(u16, &[u16])>) -> NatsServer {
        NatsServer::start_with(program, cluster, "")
    }

    /// [`NatsServer::start`] with `extra` appended to its config file.
    fn start_with(
        program: &std::path::Path,
        cluster: Option<(u16, &[u16])>,
        extra: &str,
    ) -> NatsServer {
        let dir = std::env::temp_dir().join(format!(
            "ringport-nats-bridge-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the server's folder");
        let (port, http) = (free_port(), free_port());
        let mut conf = format!("listen: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{http}\"\n");
        if let Some((own, peers)) = cluster {
            let routes: Vec<String> = peers
                .iter()
                .map(|p| format!("\"nats://127.0.0.1:{p}\""))
                .collect();
            conf.push_str(&format!(
                "cluster {{\n  name: rp\n  listen: \"127.0.0.1:{own}\"\n  routes: [{}]\n}}\n",
                routes.join(", ")
            ));
        }
        conf.push_str(extra);
        std::fs::write(dir.join("nats.conf"), conf).expect("write nats.conf");
        let mut s = NatsServer {
            program: program.to_path_buf(),
            dir,
            port,
            http,
            child: None,
            base: 0,
            measured: false,
        };
        s.spawn();
        s
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("nats.log")).expect("create nats.log");
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(self.dir.join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        let addr = self.addr();
        let child = self.child.insert(child);
        ringport::plugin::testing::wait_listening(
            child,
            addr,
            &self.dir.join("nats.log"),
            "nats-server",
            Duration::from_secs(10),
        );
        // A restarted server has the same internal subscriptions as
        // before; measuring them again would race the bridges that
        // reconnect as soon as it listens.
        if !self.measured {
            self.set_baseline();
        }
    }

    /// Counts the subscriptions held now as the server's own.
    fn set_baseline(&mut self) {
        let mut base = None;
        wait("the monitoring endpoint", || {
            base = self.monitor("/subsz", "num_subscriptions");
            base.is_some()
        });
        self.base = base.unwrap_or(0);
        self.measured = true;
    }

    /// SIGKILL: no goodbye to its clients.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A monitoring endpoint's answer (headers and JSON).
    fn monitor_text(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    }

    /// A number field of a monitoring endpoint's JSON.
    fn monitor(&self, path: &str, field: &str) -> Option<u64> {
        let body = self.monitor_text(path)?;
        let at = body.find(&format!("\"{field}\":"))? + field.len() + 3;
        let digits: String = body[at..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }

    /// Waits until the server holds `n` subscriptions (local and routed)
    /// beyond its own.
    fn wait_subscriptions(&self, n: u64) {
        wait(&format!("{n} subscriptions on :{}", self.port), || {
            self.monitor("/subsz", "num_subscriptions") == Some(self.base + n)
        });
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A TCP gate in front of a NATS server: while shut, connections are
/// accepted and closed at once; while open, bytes are copied both ways.
/// Closing the gate does not touch connections already through.
struct Gate {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Gate {
    fn new(upstream: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the gate");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, st) = (open.clone(), stop.clone());
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((down, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(2));
                    continue;
                };
                down.set_nonblocking(false).unwrap();
                if !o.load(Ordering::Relaxed) {
                    drop(down);
                    continue;
                }
                let Ok(up) = TcpStream::connect(upstream) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Gate { addr, open, stop }
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::Relaxed);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One ringport instance: two shards, a relay over TCP on one port each
/// (port `i` belongs to shard `i`), bridged with `settings`.
struct Instance {
    server: Server,
    stats: Arc<BridgeStats>,
}

fn instance(servers: &[SocketAddr], id: &str, tune: impl FnOnce(&mut BridgeSettings)) -> Instance {
    instance_with(servers, id, 1, tune)
}

/// Like [`instance`], with `listeners` relay listeners (two ports each;
/// listener `l` is `ListenerId(l)`).
fn instance_with(
    servers: &[SocketAddr],
    id: &str,
    listeners: usize,
    tune: impl FnOnce(&mut BridgeSettings),
) -> Instance {
    let nats = NatsConfig {
        servers: servers.iter().map(|a| format!("nats://{a}")).collect(),
        ..NatsConfig::default()
    };
    let all = ["#".to_owned()];
    let mut settings =
        BridgeSettings::new("relay", nats, "", &all, &all, id).expect("valid bridge settings");
    settings.reconnect_min = Duration::from_millis(20);
    settings.reconnect_max = Duration::from_millis(100);
    tune(&mut settings);
    let stats = settings.stats.clone();
    let mut registry = Registry::new();
    registry
        .register(Arc::new(
            RelayFactory::new(RelayConfig::default()).with_bridge(Arc::new(settings)),
        ))
        .unwrap();
    let mut cpus = ringport::engine::cpus::allowed_cpus().unwrap();
    cpus.truncate(2);
    let mut builder = server().shards(2).cpus(cpus).registry(registry);
    for _ in 0..listeners {
        builder = builder.listen(tcp("relay", 2));
    }
    let server = builder.start();
    Instance { server, stats }
}

impl Instance {
    /// The relay port of shard `shard`.
    fn port(&self, shard: usize) -> SocketAddr {
        self.server.addrs(0)[shard]
    }

    /// The port of shard `shard` of relay listener `listener`.
    fn listener_port(&self, listener: usize, shard: usize) -> SocketAddr {
        self.server.addrs(listener)[shard]
    }

    fn stat(&self, f: impl Fn(&BridgeStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        BridgeStats::get(f(&self.stats))
    }

    fn wait_connected(&self, connected: bool) {
        wait(&format!("bridge connected = {connected}"), || {
            self.stat(|s| &s.connected) == u64::from(connected)
        });
    }
}

/// A blocking relay client.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug, PartialEq)]
enum Frame {
    Message(Vec<u8>, Vec<u8>),
    Lagged(u64),
    Pong,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client {
            stream: connect(addr),
            buf: Vec::new(),
        }
    }

    fn subscriber(addr: SocketAddr, topics: &[&str]) -> Client {
        let mut c = Client::new(addr);
        for t in topics {
            c.send(
                &Repr::Subscribe {
                    topic: t.as_bytes(),
                }
                .to_vec(),
            );
        }
        c.ping();
        c
    }

    fn send(&mut self, frames: &[u8]) {
        self.stream.write_all(frames).expect("send to ringport");
    }

    fn ping(&mut self) {
        self.send(&Repr::Ping { payload: b"" }.to_vec());
        assert_eq!(self.next(), Frame::Pong);
    }

    /// Publishes `seqs` of `publisher` on `topic`, and waits until ringport
    /// has handled them.
    fn publish(&mut self, topic: &str, publisher: u32, seqs: std::ops::Range<u32>) {
        let frames: Vec<u8> = seqs
            .flat_map(|seq| {
                Repr::Publish {
                    topic: topic.as_bytes(),
                    payload: &stamp(publisher, seq),
                }
                .to_vec()
            })
            .collect();
        self.send(&frames);
        self.ping();
    }

    fn next(&mut self) -> Frame {
        loop {
            match wire::next_frame(&self.buf, u32::MAX as usize) {
                Framing::Frame(_, len) => {
                    let f = match Repr::parse(&Packet::new_unchecked(&self.buf[..len]), len) {
                        Ok(Repr::Message { topic, payload }) => {
                            Frame::Message(topic.to_vec(), payload.to_vec())
                        }
                        Ok(Repr::Lagged { count }) => Frame::Lagged(count),
                        Ok(Repr::Pong { .. }) => Frame::Pong,
                        other => panic!("unexpected frame: {other:?}"),
                    };
                    self.buf.drain(..len);
                    return f;
                }
                Framing::Invalid(e) => panic!("bad frame: {e}"),
                Framing::Incomplete => {}
            }
            let mut chunk = [0u8; 65536];
            match retry_eintr(|| self.stream.read(&mut chunk)) {
                Ok(0) => panic!("ringport closed the stream"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("no frame within {IO_TIMEOUT:?}: {e}"),
            }
        }
    }

    /// The next `n` frames, all messages of `topic`: (publisher, seq).
    fn messages(&mut self, topic: &str, n: usize) -> Vec<(u32, u32)> {
        (0..n)
            .map(|i| match self.next() {
                Frame::Message(t, p) => {
                    assert_eq!(t, topic.as_bytes(), "message {i}");
                    let word =
                        |r: std::ops::Range<usize>| u32::from_be_bytes(p[r].try_into().unwrap());
                    (word(0..4), word(4..8))
                }
                other => panic!("frame {i} of {n}: expected a message, got {other:?}"),
            })
            .collect()
    }

    /// Nothing more is queued: the next frame is the `PONG` of a new `PING`.
    fn nothing_more(&mut self) {
        self.ping();
    }
}

fn stamp(publisher: u32, seq: u32) -> Vec<u8> {
    let mut p = publisher.to_be_bytes().to_vec();
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"-payload");
    p
}

/// Each publisher's sequence numbers, in the order received.
fn by_publisher(got: &[(u32, u32)], publisher: u32) -> Vec<u32> {
    got.iter()
        .filter(|(p, _)| *p == publisher)
        .map(|(_, s)| *s)
        .collect()
}

#[test]
fn a_subscriber_on_b_gets_exactly_what_is_published_on_a() {
    let Some(program) = nats_server_program() else {
        return;
    };
    let nats = NatsServer::start(&program, None);
    let a = instance(&[nats.addr()], "inst-a", |_| {});
    let b = instance(&[nats.addr()], "inst-b", |_| {});
    a.wait_connected(true);
    b.wait_connected(true);
    // One `>` subscription per bridge.
    nats.wait_subscriptions(2);
    // Subscribers on both shards of B: the import crosses B's mesh.
    let mut subs: Vec<Client> = (0..2)
        .map(|shard| Client::subscriber(b.port(shard), &["plant/line-1/t"]))
        .collect();
    // One publisher on each shard of A: shard 1's publishes reach NATS
    // through shard 0.
    let mut pubs: Vec<Client> = (0..2).map(|shard| Client::new(a.port(shard))).collect();
    for round in 0..4u32 {
        for (p, c) in pubs.iter_mut().enumerate() {
            c.publish("plant/line-1/t", p as u32, round * 50..(round + 1) * 50);
        }
    }
    for sub in &mut subs {
        let got = sub.messages("plant/line-1/t", 400);
        for p in 0..2 {
            assert_eq!(by_publisher(&got, p), (0..200).collect::<Vec<_>>());
        }
    }
    wait("A's 400 exports taken by NATS", || {
        a.stat(|s| &s.exported) == 400
    });
    wait("B's 400 imports", || b.stat(|s| &s.imported) == 400);
    for sub in &mut subs {
        sub.nothing_more();
    }
    // Nothing went back: B exports nothing it imported, A imports nothing.
    assert_eq!(b.stat(|s| &s.exported), 0);
    assert_eq!(a.stat(|s| &s.imported), 0);
    for i in [&a, &b] {
        assert_eq!(i.stat(|s| &s.dropped_loop), 0);
        assert_eq!(i.stat(|s| &s.dropped_buffer_full), 0);
        assert_eq!(i.stat(|s| &s.dropped_unmappable), 0);
        assert_eq!(i.stat(|s| &s.reconnects), 0);
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Per-listener filters: on A, listener 0 exports `a/#` and listener 1
/// nothing; on B, listener 0 imports `a/x` and listener 1 `a/#`. B's
/// subscribers get exactly what A's listener 0 published and their own
/// listener imports, and the per-listener counters say so.
#[test]
fn export_and_import_filters_narrow_the_bridge_per_listener() {
    let Some(program) = nats_server_program() else {
        return;
    };
    let nats = NatsServer::start(&program, None);
    let mut a_stats = Vec::new();
    let a = instance_with(&[nats.addr()], "inst-a", 2, |s| {
        s.add_listener(ListenerId(0), "a0", Some(&strings(&["a/#"])), None)
            .unwrap();
        s.add_listener(ListenerId(1), "a1", Some(&[]), None)
            .unwrap();
        a_stats = s.routes().map(|(_, r)| r.stats.clone()).collect();
    });
    let mut b_stats = Vec::new();
    let b = instance_with(&[nats.addr()], "inst-b", 2, |s| {
        s.add_listener(ListenerId(0), "b0", None, Some(&strings(&["a/x"])))
            .unwrap();
        s.add_listener(ListenerId(1), "b1", None, Some(&strings(&["a/#"])))
            .unwrap();
        // `a/x` is covered by `a/#` (`a.>` and `a`): two subscriptions.
        assert_eq!(s.subscriptions, ["a.>", "a"]);
        b_stats = s.routes().map(|(_, r)| r.stats.clone()).collect();
    });
    a.wait_connected(true);
    b.wait_connected(true);
    // A's `>` and B's two.
    nats.wait_subscriptions(3);
    let topics = ["a/x", "a/y"];
    let mut sub0 = Client::subscriber(b.listener_port(0, 0), &topics);
    let mut sub1 = Client::subscriber(b.listener_port(1, 1), &topics);
    // Listener 1 of A (shard 0) exports nothing; listener 0's publisher is
    // on shard 1, so its listener id crosses A's mesh.
    let mut quiet = Client::new(a.listener_port(1, 0));
    quiet.publish("a/x", 9, 0..30);
    let mut loud = Client::new(a.listener_port(0, 1));
    loud.publish("a/x", 1, 0..30);
    loud.publish("a/y", 1, 0..30);
    let seqs: Vec<u32> = (0..30).collect();
    let got = sub1.messages("a/x", 30);
    assert_eq!(by_publisher(&got, 1), seqs);
    let got = sub1.messages("a/y", 30);
    assert_eq!(by_publisher(&got, 1), seqs);
    let got = sub0.messages("a/x", 30);
    assert_eq!(by_publisher(&got, 1), seqs);
    wait("B's 60 imports", || b.stat(|s| &s.imported) == 60);
    sub0.nothing_more();
    sub1.nothing_more();
    let get = |s: &std::sync::atomic::AtomicU64| BridgeStats::get(s);
    assert_eq!(a.stat(|s| &s.exported), 60);
    assert_eq!(
        (get(&a_stats[0].exported), get(&a_stats[1].exported)),
        (60, 0)
    );
    assert_eq!(
        (get(&b_stats[0].imported), get(&b_stats[1].imported)),
        (30, 60)
    );
    assert_eq!(b.stat(|s| &s.exported), 0);
    assert_eq!(a.stat(|s| &s.imported), 0);
}

#[test]
fn three_instances_see_each_message_once_and_nothing_loops() {
    let Some(program) = nats_server_program() else {
        return;
    };
    let nats = NatsServer::start(&program, None);
    let ids = ["inst-1", "inst-2", "inst-3"];
    let all: Vec<Instance> = ids
        .iter()
        .map(|id| instance(&[nats.addr()], id, |_| {}))
        .collect();
    for i in &all {
        i.wait_connected(true);
    }
    nats.wait_subscriptions(3);
    let mut subs: Vec<Client> = all
        .iter()
        .map(|i| Client::subscriber(i.port(1), &["m"]))
        .collect();
    for (n, i) in all.iter().enumerate() {
        Client::new(i.port(n % 2)).publish("m", n as u32, 0..100);
    }
    for sub in &mut subs {
        let got = sub.messages("m", 300);
        for p in 0..3 {
            assert_eq!(by_publisher(&got, p), (0..100).collect::<Vec<_>>());
        }
    }
    for i in &all {
        wait("200 imports each", || i.stat(|s| &s.imported) == 200);
        assert_eq!(i.stat(|s| &s.exported), 100);
    }
    // Settled: one more message each way would show a duplicate or loop.
    thread::sleep(Duration::from_millis(200));
    for (i, sub) in all.iter().zip(&mut subs) {
        sub.nothing_more();
        assert_eq!(i.stat(|s| &s.imported), 200);
        assert_eq!(i.stat(|s| &s.exported), 100);
        assert_eq!(i.stat(|s| &s.dropped_loop), 0);
    }
}

/// Loop prevention when `echo: false` is not enough: two bridges with the
/// same instance id (as the relay and MQTT bridges of one process have)
/// hear each other's exports, and drop them by their origin header.
#[test]
fn imports_with_our_own_origin_are_dropped_and_counted() {
    let Some(program) = nats_server_program() else {
        return;
    };
    let nats = NatsServer::start(&program, None);
    let a = instance(&[nats.addr()], "same", |_| {});
    let b = instance(&[nats.addr()], "same", |_| {});
    a.wait_connected(true);
    b.wait_connected(true);
    nats.wait_subscriptions(2);
    let mut sub = Client::subscriber(b.port(0), &["x"]);
    Client::new(a.port(0)).publish("x", 0, 0..10);
    wait("10 loop drops on B", || b.stat(|s| &s.dropped_loop) == 10);
    assert_eq!(b.stat(|s| &s.imported), 0);
    sub.nothing_more();
}

#[test]
fn nats_server_restart_loss_is_within_the_buffer_and_counted_exactly() {
    let Some(program) = nats_server_program() else {
        return;
    };
    const BUFFER: u32 = 50;
    let mut nats = NatsServer::start(&program, None);
    // A goes through a gate, so that it reconnects only once B has.
    let gate = Gate::new(nats.addr());
    let a = instance(&[gate.addr], "inst-a", |s| {
        s.nats.buffer_messages = BUFFER as usize;
    });
    let b = instance(&[nats.addr()], "inst-b", |_| {});
    a.wait_connected(true);
    b.wait_connected(true);
    nats.wait_subscriptions(2);
    let mut sub = Client::subscriber(b.port(1), &["s"]);
    let mut publisher = Client::new(a.port(1));
    publisher.publish("s", 7, 0..100);
    let got = sub.messages("s", 100);
    assert_eq!(by_publisher(&got, 7), (0..100).collect::<Vec<_>>());
    wait("100 exported", || a.stat(|s| &s.exported) == 100);

    gate.set_open(false);
    nats.kill();
    a.wait_connected(false);
    b.wait_connected(false);
    // 120 while NATS is down: the buffer takes 50, 70 are dropped.
    publisher.publish("s", 7, 100..220);
    wait("A's buffer full", || {
        a.stat(|s| &s.dropped_buffer_full) == 70
    });
    assert_eq!(a.stat(|s| &s.buffered_messages), u64::from(BUFFER));
    assert_eq!(a.stat(|s| &s.loss_bursts), 1);

    nats.spawn();
    b.wait_connected(true);
    nats.wait_subscriptions(1);
    gate.set_open(true);
    a.wait_connected(true);
    let got = sub.messages("s", BUFFER as usize);
    assert_eq!(
        by_publisher(&got, 7),
        (100..100 + BUFFER).collect::<Vec<_>>()
    );
    wait("the buffer drained", || {
        a.stat(|s| &s.exported) == 150 && a.stat(|s| &s.buffered_messages) == 0
    });
    sub.nothing_more();
    assert_eq!(a.stat(|s| &s.dropped_buffer_full), 70);
    assert_eq!(a.stat(|s| &s.lost_in_flight), 0);
    assert_eq!(a.stat(|s| &s.reconnects), 1);
    assert_eq!(b.stat(|s| &s.reconnects), 1);
    // After the outage, publishing flows again.
    publisher.publish("s", 7, 220..230);
    assert_eq!(
        by_publisher(&sub.messages("s", 10), 7),
        (220..230).collect::<Vec<_>>()
    );
}

#[test]
fn a_two_server_cluster_losing_one_server_fails_over() {
    let Some(program) = nats_server_program() else {
        return;
    };
    let (r1, r2) = (free_port(), free_port());
    let mut s1 = NatsServer::start(&program, Some((r1, &[r2])));
    let s2 = NatsServer::start(&program, Some((r2, &[r1])));
    wait("the route between the servers", || {
        s1.monitor("/routez", "num_routes") == Some(1)
            && s2.monitor("/routez", "num_routes") == Some(1)
    });
    s1.set_baseline();
    let mut s2 = s2;
    s2.set_baseline();
    // A knows both and starts on s1; B only s2.
    let a = instance(&[s1.addr(), s2.addr()], "inst-a", |_| {});
    let b = instance(&[s2.addr()], "inst-b", |_| {});
    a.wait_connected(true);
    b.wait_connected(true);
    // Each server holds both bridges' subscriptions (one routed).
    s1.wait_subscriptions(2);
    s2.wait_subscriptions(2);
    let mut sub = Client::subscriber(b.port(0), &["f/1"]);
    let mut publisher = Client::new(a.port(0));
    publisher.publish("f/1", 1, 0..100);
    assert_eq!(
        by_publisher(&sub.messages("f/1", 100), 1),
        (0..100).collect::<Vec<_>>()
    );
    wait("100 exported", || a.stat(|s| &s.exported) == 100);
    s1.kill();
    wait("A reconnected (to s2)", || a.stat(|s| &s.reconnects) == 1);
    a.wait_connected(true);
    publisher.publish("f/1", 1, 100..200);
    assert_eq!(
        by_publisher(&sub.messages("f/1", 100), 1),
        (100..200).collect::<Vec<_>>()
    );
    wait("200 exported", || a.stat(|s| &s.exported) == 200);
    sub.nothing_more();
    assert_eq!(b.stat(|s| &s.reconnects), 0);
    assert_eq!(a.stat(|s| &s.dropped_buffer_full), 0);
    assert_eq!(a.stat(|s| &s.lost_in_flight), 0);
}

/// `ringport serve --nats ...`: the flags turn the bridge on, `/metrics`
/// shows its state and counters.
#[test]
fn the_binary_bridges_with_the_nats_flag_and_shows_it_in_metrics() {
    use common::process::{admin_is_up, start_ringport, Stderr};
    let Some(program) = nats_server_program() else {
        return;
    };
    let nats = NatsServer::start(&program, None);
    let url = format!("nats://{}", nats.addr());
    let start = |id: &'static str| {
        start_ringport(
            3,
            |cmd, port| {
                cmd.args(["serve", "--shards", "2", "--drain-timeout", "0"])
                    .arg("--listen")
                    .arg(format!("relay@tcp:127.0.0.1:{port}-{}", port + 1))
                    .arg("--admin")
                    .arg(format!("127.0.0.1:{}", port + 2))
                    .args(["--nats", &url, "--nats-instance-id", id]);
            },
            admin_is_up,
            Stderr::Merged,
        )
    };
    let (a, b) = (start("bin-a"), start("bin-b"));
    let banner = format!(
        "nats bridge: relay listeners via {} (instance bin-a",
        nats.addr()
    );
    assert!(
        a.printed.iter().any(|l| l.starts_with(&banner)),
        "{:#?}",
        a.printed
    );
    let metrics = |port: u16| {
        let mut s = TcpStream::connect(("127.0.0.1", port + 2)).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.split_once("\r\n\r\n").unwrap().1.to_owned()
    };
    let sample = |port: u16, series: &str| -> Option<u64> {
        metrics(port)
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    let connected = "ringport_nats_bridge_connected{plugin=\"relay\",bridge=\"default\"}";
    for p in [a.port, b.port] {
        wait("connected in /metrics", || sample(p, connected) == Some(1));
    }
    nats.wait_subscriptions(2);
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let mut sub = Client::subscriber(addr(b.port + 1), &["bin/t"]);
    Client::new(addr(a.port)).publish("bin/t", 3, 0..20);
    assert_eq!(
        by_publisher(&sub.messages("bin/t", 20), 3),
        (0..20).collect::<Vec<_>>()
    );
    let exported = "ringport_nats_bridge_exported_total{plugin=\"relay\",bridge=\"default\"}";
    let imported = "ringport_nats_bridge_imported_total{plugin=\"relay\",bridge=\"default\"}";
    wait("A's exports in /metrics", || {
        sample(a.port, exported) == Some(20)
    });
    wait("B's imports in /metrics", || {
        sample(b.port, imported) == Some(20)
    });
    assert_eq!(sample(a.port, imported), Some(0));
    assert_eq!(
        sample(
            b.port,
            "ringport_nats_bridge_dropped_total{plugin=\"relay\",bridge=\"default\",reason=\"loop\"}"
        ),
        Some(0)
    );
    ringport_tools::testing::promtool_check(&metrics(a.port));
}

/// An instance serving MQTT on two ports (one per shard), bridged.
fn mqtt_instance(servers: &[SocketAddr], id: &str) -> Instance {
    mqtt_instance_with(servers, id, 1, |_| {})
}

/// Like [`mqtt_instance`], with `listeners` MQTT listeners (two ports
/// each; listener `l` is `ListenerId(l)`).
fn mqtt_instance_with(
    servers: &[SocketAddr],
    id: &str,
    listeners: usize,
    tune: impl FnOnce(&mut BridgeSettings),
) -> Instance {
    use ringport::protocols::mqtt::broker::{MqttConfig, MqttFactory};
    let nats = NatsConfig {
        servers: servers.iter().map(|a| format!("nats://{a}")).collect(),
        ..NatsConfig::default()
    };
    let all = ["#".to_owned()];
    let mut settings =
        BridgeSettings::new("mqtt", nats, "", &all, &all, id).expect("valid bridge settings");
    settings.reconnect_min = Duration::from_millis(20);
    settings.reconnect_max = Duration::from_millis(100);
    tune(&mut settings);
    let stats = settings.stats.clone();
    let factory = MqttFactory::new(MqttConfig {
        allow_anonymous: true,
        ..MqttConfig::default()
    })
    .with_bridge(Arc::new(settings));
    let mut registry = Registry::new();
    registry.register(Arc::new(factory)).unwrap();
    let mut cpus = ringport::engine::cpus::allowed_cpus().unwrap();
    cpus.truncate(2);
    let mut builder = server().shards(2).cpus(cpus).registry(registry);
    for _ in 0..listeners {
        builder = builder.listen(tcp("mqtt", 2));
    }
    let server = builder.start();
    Instance { server, stats }
}

#[test]
fn an_mqtt_subscriber_on_b_gets_what_an_mqtt_client_publishes_on_a() {
    use client::{Client as Mqtt, Got, Opts};
    use ringport::protocols::mqtt::codec::Version;
    let Some(program) = nats_server_program() else {
        return;
    };
    let nats = NatsServer::start(&program, None);
    let a = mqtt_instance(&[nats.addr()], "mqtt-a");
    let b = mqtt_instance(&[nats.addr()], "mqtt-b");
    a.wait_connected(true);
    b.wait_connected(true);
    nats.wait_subscriptions(2);
    // Subscribers on both of B's shards; the publisher on A's shard 1.
    let mut subs: Vec<Mqtt> = (0..2)
        .map(|shard| {
            let id = format!("sub-{shard}");
            let (mut c, _) = Mqtt::connected(b.port(shard), &Opts::new(Version::V5, &id));
            assert_eq!(c.subscribe(&[("sensors/+/temp", 1)]), [1]);
            c
        })
        .collect();
    let (mut publisher, _) = Mqtt::connected(a.port(1), &Opts::new(Version::V311, "pub"));
    for i in 1..=50u16 {
        publisher.publish(
            &format!("sensors/s{}/temp", i % 3),
            &i.to_be_bytes(),
            1,
            false,
            i,
        );
    }
    for i in 1..=50u16 {
        assert!(matches!(publisher.recv(), Some(Got::PubAck(id, 0)) if id == i));
    }
    for sub in &mut subs {
        let got: Vec<(String, u16)> = (0..50)
            .map(|_| match sub.recv() {
                Some(Got::Publish(m)) => {
                    assert_eq!(m.qos, 0, "imports arrive at QoS 0");
                    (m.topic, u16::from_be_bytes([m.payload[0], m.payload[1]]))
                }
                other => panic!("PUBLISH expected, got {other:?}"),
            })
            .collect();
        let want: Vec<(String, u16)> = (1..=50u16)
            .map(|i| (format!("sensors/s{}/temp", i % 3), i))
            .collect();
        assert_eq!(got, want);
    }
    wait("A's 50 exports", || a.stat(|s| &s.exported) == 50);
    wait("B's 50 imports", || b.stat(|s| &s.imported) == 50);
    assert_eq!(b.stat(|s| &s.exported), 0);
    assert_eq!(a.stat(|s| &s.imported), 0);
    assert_eq!(b.stat(|s| &s.dropped_loop), 0);
}

/// Per-listener filters of MQTT listeners: on A, listener 0 exports `a/#`
/// and listener 1 has `nats = false`; on B, listener 0 imports `a/x` and
/// listener 1 has `nats = false`. Each side's subscribers get exactly what
/// their own listener imports of what the other side's listeners export,
/// and the per-listener counters say so.
#[test]
fn mqtt_listeners_narrow_the_bridge_per_listener() {
    use client::{Client as Mqtt, Got, Opts};
    use ringport::protocols::mqtt::codec::{Packet, Version};
    let Some(program) = nats_server_program() else {
        return;
    };
    let nats = NatsServer::start(&program, None);
    let mut a_stats = Vec::new();
    let a = mqtt_instance_with(&[nats.addr()], "mqtt-a", 2, |s| {
        s.add_listener(ListenerId(0), "a0", Some(&strings(&["a/#"])), None)
            .unwrap();
        s.add_listener(ListenerId(1), "a1", Some(&[]), Some(&[]))
            .unwrap();
        assert_eq!(s.subscriptions, [">"]);
        a_stats = s.routes().map(|(_, r)| r.stats.clone()).collect();
    });
    let mut b_stats = Vec::new();
    let b = mqtt_instance_with(&[nats.addr()], "mqtt-b", 2, |s| {
        s.add_listener(ListenerId(0), "b0", None, Some(&strings(&["a/x"])))
            .unwrap();
        s.add_listener(ListenerId(1), "b1", Some(&[]), Some(&[]))
            .unwrap();
        assert_eq!(s.subscriptions, ["a.x"]);
        b_stats = s.routes().map(|(_, r)| r.stats.clone()).collect();
    });
    a.wait_connected(true);
    b.wait_connected(true);
    // A's `>` and B's `a.x`.
    nats.wait_subscriptions(2);
    let connect =
        |addr: SocketAddr, id: &str| Mqtt::connected(addr, &Opts::new(Version::V311, id)).0;
    let subscriber = |addr: SocketAddr, id: &str, filters: &[(&str, u8)]| {
        let mut c = connect(addr, id);
        assert_eq!(c.subscribe(filters), vec![1; filters.len()]);
        c
    };
    let nothing_more = |c: &mut Mqtt| {
        c.send(&Packet::PingReq);
        assert_eq!(c.recv(), Some(Got::PingResp));
    };
    let topics = [("a/x", 1), ("a/y", 1), ("b/z", 1)];
    // B's subscribers on shard 1: imports cross B's mesh with their scope.
    let mut sub_b0 = subscriber(b.listener_port(0, 1), "sub-b0", &topics);
    let mut sub_b1 = subscriber(b.listener_port(1, 1), "sub-b1", &topics);
    // A's on shard 0, the bridge's own shard.
    let mut sub_a0 = subscriber(a.listener_port(0, 0), "sub-a0", &[("back/#", 1)]);
    let mut sub_a1 = subscriber(a.listener_port(1, 0), "sub-a1", &[("back/#", 1)]);
    // A's listener 1 (shard 0) exports nothing; listener 0's publisher is
    // on shard 1, so its listener id crosses A's mesh.
    let publish_acked = |c: &mut Mqtt, topic: &str, n: u16| {
        for i in 1..=n {
            c.publish(topic, &i.to_be_bytes(), 1, false, i);
        }
        for i in 1..=n {
            assert!(matches!(c.recv(), Some(Got::PubAck(id, 0)) if id == i));
        }
    };
    let mut quiet = connect(a.listener_port(1, 0), "quiet");
    publish_acked(&mut quiet, "a/x", 10);
    let mut loud = connect(a.listener_port(0, 1), "loud");
    publish_acked(&mut loud, "a/x", 10);
    publish_acked(&mut loud, "a/y", 10);
    publish_acked(&mut loud, "b/z", 10);
    let seqs = |sub: &mut Mqtt, n: u16| -> Vec<(String, u16)> {
        (0..n)
            .map(|_| match sub.recv() {
                Some(Got::Publish(m)) => {
                    assert_eq!(
                        (m.qos, m.retain),
                        (0, false),
                        "imports are QoS 0, not retained"
                    );
                    (m.topic, u16::from_be_bytes([m.payload[0], m.payload[1]]))
                }
                other => panic!("PUBLISH expected, got {other:?}"),
            })
            .collect()
    };
    let want = |topic: &str, n: u16| -> Vec<(String, u16)> {
        (1..=n).map(|i| (topic.to_owned(), i)).collect()
    };
    // Only loud's a/x: b/z is not exported, a/y not imported by b0.
    assert_eq!(seqs(&mut sub_b0, 10), want("a/x", 10));
    wait("B's 10 imports", || b.stat(|s| &s.imported) == 10);
    // sub_b1 shares sub_b0's shard: what it was to get is written by now.
    nothing_more(&mut sub_b0);
    nothing_more(&mut sub_b1);
    // Back from B: its listener 0 exports `back/b0`, listener 1 nothing.
    let mut b_pub1 = connect(b.listener_port(1, 0), "b-pub1");
    publish_acked(&mut b_pub1, "back/b1", 5);
    let mut b_pub0 = connect(b.listener_port(0, 0), "b-pub0");
    publish_acked(&mut b_pub0, "back/b0", 5);
    assert_eq!(seqs(&mut sub_a0, 5), want("back/b0", 5));
    wait("A's 5 imports", || a.stat(|s| &s.imported) == 5);
    nothing_more(&mut sub_a0);
    nothing_more(&mut sub_a1);
    let get = |s: &std::sync::atomic::AtomicU64| BridgeStats::get(s);
    wait("A's 20 exports", || a.stat(|s| &s.exported) == 20);
    wait("B's 5 exports", || b.stat(|s| &s.exported) == 5);
    for (stats, exported, imported) in [(&a_stats, [20, 0], [5, 0]), (&b_stats, [5, 0], [10, 0])] {
        assert_eq!([get(&stats[0].exported), get(&stats[1].exported)], exported);
        assert_eq!([get(&stats[0].imported), get(&stats[1].imported)], imported);
        for s in stats.iter() {
            assert_eq!(get(&s.dropped_buffer_full), 0);
            assert_eq!(get(&s.dropped_too_large), 0);
            assert_eq!(get(&s.dropped_unmappable), 0);
        }
    }
    for i in [&a, &b] {
        assert_eq!(i.stat(|s| &s.dropped_loop), 0);
        assert_eq!(i.stat(|s| &s.dropped_unmappable), 0);
    }
}

/// `ringport serve` with two `mqtt` listener tables (the first exports
/// only `a/#`, the second has `nats = false`): the banner shows each
/// listener's route, and `/metrics` each one's series under
/// `plugin="mqtt"`, with exactly what it exported.
#[test]
fn the_binary_narrows_mqtt_listeners_from_their_tables_and_shows_it_in_metrics() {
    use client::{Client as Mqtt, Got, Opts};
    use common::process::{admin_is_up, start_ringport, Stderr};
    use ringport::protocols::mqtt::codec::Version;
    let Some(program) = nats_server_program() else {
        return;
    };
    let nats = NatsServer::start(&program, None);
    let dir = std::env::temp_dir().join(format!(
        "ringport-nats-mqtt-tables-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("nats://{}", nats.addr());
    let r = start_ringport(
        5,
        |cmd, port| {
            let conf = format!(
                "nats = \"{url}\"\nnats_instance_id = \"bin-m\"\n\
                 [[listener]]\nspec = \"mqtt@tcp:127.0.0.1:{}-{}\"\nnats_export = [\"a/#\"]\n\
                 [[listener]]\nspec = \"mqtt@tcp:127.0.0.1:{}-{}\"\nnats = false\n",
                port,
                port + 1,
                port + 2,
                port + 3
            );
            let path = dir.join(format!("ringport-{port}.toml"));
            std::fs::write(&path, conf).unwrap();
            cmd.args(["serve", "--shards", "2", "--drain-timeout", "0"])
                .args(["--mqtt-allow-anonymous", "--config"])
                .arg(&path)
                .arg("--admin")
                .arg(format!("127.0.0.1:{}", port + 4));
        },
        admin_is_up,
        Stderr::Merged,
    );
    let p = r.port;
    let (l0, l1) = (
        format!("mqtt@tcp:127.0.0.1:{}-{}", p, p + 1),
        format!("mqtt@tcp:127.0.0.1:{}-{}", p + 2, p + 3),
    );
    let routes = format!("; {l0} export [\"a.>\", \"a\"] import [\">\"]; {l1} export [] import []");
    assert!(
        r.printed
            .iter()
            .any(|l| l.starts_with("nats bridge: mqtt listeners via") && l.ends_with(&routes)),
        "{:#?}",
        r.printed
    );
    let metrics = || {
        let mut s = TcpStream::connect(("127.0.0.1", p + 4)).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.split_once("\r\n\r\n").unwrap().1.to_owned()
    };
    let sample = |series: &str| -> Option<u64> {
        metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    wait("connected in /metrics", || {
        sample("ringport_nats_bridge_connected{plugin=\"mqtt\",bridge=\"default\"}") == Some(1)
    });
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    // Listener 0 on shard 1, listener 1 on shard 0.
    let (mut c0, _) = Mqtt::connected(addr(p + 1), &Opts::new(Version::V311, "c0"));
    let (mut c1, _) = Mqtt::connected(addr(p + 2), &Opts::new(Version::V311, "c1"));
    let publish_acked = |c: &mut Mqtt, topic: &str, n: u16| {
        for i in 1..=n {
            c.publish(topic, b"x", 1, false, i);
        }
        for i in 1..=n {
            assert!(matches!(c.recv(), Some(Got::PubAck(id, 0)) if id == i));
        }
    };
    publish_acked(&mut c0, "a/1", 3);
    publish_acked(&mut c0, "b", 2);
    publish_acked(&mut c1, "a/2", 4);
    let series = |name: &str, l: &str| format!("{name}{{plugin=\"mqtt\",listener=\"{l}\"}}");
    let exported = "ringport_nats_bridge_listener_exported_total";
    wait("listener 0's 3 exports in /metrics", || {
        sample(&series(exported, &l0)) == Some(3)
    });
    assert_eq!(sample(&series(exported, &l1)), Some(0));
    assert_eq!(
        sample("ringport_nats_bridge_exported_total{plugin=\"mqtt\",bridge=\"default\"}"),
        Some(3)
    );
    let imported = "ringport_nats_bridge_listener_imported_total";
    assert_eq!(sample(&series(imported, &l0)), Some(0));
    assert_eq!(sample(&series(imported, &l1)), Some(0));
    let text = metrics();
    assert_eq!(
        text.matches("ringport_nats_bridge_listener_dropped_total{plugin=\"mqtt\"")
            .count(),
        6
    );
    ringport_tools::testing::promtool_check(&text);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two relay listeners on A, each with a NATS login of its own (users `a`
/// and `b`, so two bridges: two connections) and a buffer of its own (10
/// messages); B logs in as `c`. The server's `/connz?auth=1` shows the
/// two users; each listener's publishes reach B through its own
/// connection; during an outage, the listener that publishes more than
/// its buffer holds loses the rest on its own bridge only.
#[test]
fn listeners_with_their_own_login_and_buffer_get_their_own_connection() {
    use ringport::protocols::nats::{Auth, BridgeSet};
    let Some(program) = nats_server_program() else {
        return;
    };
    const BUFFER: u64 = 10;
    let users = "authorization {\n  users = [\n    {user: a, password: pa}\n    \
                 {user: b, password: pb}\n    {user: c, password: pc}\n  ]\n}\n";
    let mut nats = NatsServer::start_with(&program, None, users);
    // A goes through a gate, so that it reconnects only once B has.
    let gate = Gate::new(nats.addr());
    let login = |user: &str, password: &str| Auth::UserPassword {
        user: user.into(),
        password: password.into(),
    };
    let all = ["#".to_owned()];
    let bridge = |user: &str, password: &str, listener: u16, name: &str| {
        let nats = NatsConfig {
            servers: vec![format!("nats://{}", gate.addr)],
            auth: login(user, password),
            buffer_messages: BUFFER as usize,
            ..NatsConfig::default()
        };
        let mut s = BridgeSettings::new("relay", nats, "", &all, &all, "inst-a")
            .expect("valid bridge settings");
        s.reconnect_min = Duration::from_millis(20);
        s.reconnect_max = Duration::from_millis(100);
        s.name = name.to_owned();
        s.exclusive = true;
        s.add_listener(ListenerId(listener), name, None, None)
            .unwrap();
        Arc::new(s)
    };
    let set = Arc::new(BridgeSet::new(
        vec![bridge("a", "pa", 0, "a0"), bridge("b", "pb", 1, "a1")],
        &[Some(0), Some(1)],
        None,
    ));
    let mut registry = Registry::new();
    registry
        .register(Arc::new(
            RelayFactory::new(RelayConfig::default()).with_bridges(set.clone()),
        ))
        .unwrap();
    let mut cpus = ringport::engine::cpus::allowed_cpus().unwrap();
    cpus.truncate(2);
    let a = server()
        .shards(2)
        .cpus(cpus)
        .registry(registry)
        .listen(tcp("relay", 2))
        .listen(tcp("relay", 2))
        .start();
    let b = instance(&[nats.addr()], "inst-b", |s| {
        s.nats.auth = login("c", "pc");
    });
    let [a0, a1] = [&set.bridges()[0].stats, &set.bridges()[1].stats];
    let get = |s: &std::sync::atomic::AtomicU64| BridgeStats::get(s);
    wait("A's two bridges connected", || {
        get(&a0.connected) == 1 && get(&a1.connected) == 1
    });
    b.wait_connected(true);
    // Each of A's bridges subscribes to `>`, and B's one.
    nats.wait_subscriptions(3);
    // The server sees three connections, one per user.
    let connz = nats
        .monitor_text("/connz?auth=1")
        .expect("the monitoring endpoint")
        .replace([' ', '\n'], "");
    for user in ["a", "b", "c"] {
        assert_eq!(
            connz
                .matches(&format!("\"authorized_user\":\"{user}\""))
                .count(),
            1,
            "{connz}"
        );
    }
    assert_eq!(nats.monitor("/connz", "num_connections"), Some(3));

    // One subscriber per topic: the two connections' messages have no
    // order between them.
    let mut sub0 = Client::subscriber(b.port(1), &["t/0"]);
    let mut sub1 = Client::subscriber(b.port(0), &["t/1"]);
    let mut on0 = Client::new(a.addrs(0)[1]);
    let mut on1 = Client::new(a.addrs(1)[0]);
    on0.publish("t/0", 1, 0..20);
    on1.publish("t/1", 2, 0..20);
    let seqs: Vec<u32> = (0..20).collect();
    assert_eq!(by_publisher(&sub0.messages("t/0", 20), 1), seqs);
    assert_eq!(by_publisher(&sub1.messages("t/1", 20), 2), seqs);
    wait("20 exported by each bridge", || {
        get(&a0.exported) == 20 && get(&a1.exported) == 20
    });
    wait("B's 40 imports", || b.stat(|s| &s.imported) == 40);
    assert_eq!(get(&a0.imported) + get(&a1.imported), 0);

    // An outage: listener 0 publishes 5 (its buffer holds 10), listener 1
    // publishes 25: 15 dropped, on bridge a1 only.
    gate.set_open(false);
    nats.kill();
    wait("A's bridges down", || {
        get(&a0.connected) == 0 && get(&a1.connected) == 0
    });
    on0.publish("t/0", 1, 20..25);
    on1.publish("t/1", 2, 20..45);
    wait("a1's buffer full", || get(&a1.dropped_buffer_full) == 15);
    assert_eq!(get(&a1.buffered_messages), BUFFER);
    assert_eq!(get(&a1.loss_bursts), 1);
    wait("a0 buffered 5", || get(&a0.buffered_messages) == 5);
    assert_eq!(get(&a0.dropped_buffer_full), 0);
    assert_eq!(get(&a0.loss_bursts), 0);
    let routes = |i: usize| {
        set.bridges()[i]
            .route(ListenerId(i as u16))
            .unwrap()
            .stats
            .clone()
    };
    assert_eq!(get(&routes(1).dropped_buffer_full), 15);
    assert_eq!(get(&routes(0).dropped_buffer_full), 0);

    nats.spawn();
    b.wait_connected(true);
    nats.wait_subscriptions(1);
    gate.set_open(true);
    wait("A's bridges back", || {
        get(&a0.connected) == 1 && get(&a1.connected) == 1
    });
    assert_eq!(
        by_publisher(&sub0.messages("t/0", 5), 1),
        (20..25).collect::<Vec<_>>()
    );
    assert_eq!(
        by_publisher(&sub1.messages("t/1", BUFFER as usize), 2),
        (20..30).collect::<Vec<_>>()
    );
    wait("the buffers drained", || {
        get(&a0.exported) == 25 && get(&a1.exported) == 30
    });
    sub0.nothing_more();
    sub1.nothing_more();
    assert_eq!(get(&a0.dropped_buffer_full), 0);
    assert_eq!(get(&a1.dropped_buffer_full), 15);
}

/// The binary from a config file: relay listener 0 logs in as the
/// top-level user `a`, listener 1's table sets user `b` and a buffer of
/// its own. Two connections (users `a` and `b` in `/connz?auth=1`), one
/// banner line and one `bridge` label per connection, each listener's
/// publishes counted on its own bridge, and valid exposition.
#[test]
fn the_binary_gives_a_listener_with_its_own_login_its_own_connection() {
    use common::process::{admin_is_up, start_ringport, Stderr};
    let Some(program) = nats_server_program() else {
        return;
    };
    let users = "authorization {\n  users = [\n    {user: a, password: pa}\n    \
                 {user: b, password: pb}\n  ]\n}\n";
    let nats = NatsServer::start_with(&program, None, users);
    let dir = std::env::temp_dir().join(format!(
        "ringport-nats-conns-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (pa, pb) = (dir.join("pa"), dir.join("pb"));
    std::fs::write(&pa, "pa\n").unwrap();
    std::fs::write(&pb, "pb\n").unwrap();
    let url = format!("nats://{}", nats.addr());
    let r = start_ringport(
        5,
        |cmd, port| {
            let conf = format!(
                "nats = \"{url}\"\nnats_instance_id = \"bin-t\"\nnats_user = \"a\"\n\
                 nats_password_file = \"{}\"\n\
                 [[listener]]\nspec = \"relay@tcp:127.0.0.1:{}-{}\"\n\
                 [[listener]]\nspec = \"relay@tcp:127.0.0.1:{}-{}\"\nnats_user = \"b\"\n\
                 nats_password_file = \"{}\"\nnats_buffer_messages = 5\n",
                pa.display(),
                port,
                port + 1,
                port + 2,
                port + 3,
                pb.display()
            );
            let path = dir.join(format!("ringport-{port}.toml"));
            std::fs::write(&path, conf).unwrap();
            cmd.args(["serve", "--shards", "2", "--drain-timeout", "0", "--config"])
                .arg(&path)
                .arg("--admin")
                .arg(format!("127.0.0.1:{}", port + 4));
        },
        admin_is_up,
        Stderr::Merged,
    );
    let p = r.port;
    let (l0, l1) = (
        format!("relay@tcp:127.0.0.1:{}-{}", p, p + 1),
        format!("relay@tcp:127.0.0.1:{}-{}", p + 2, p + 3),
    );
    for line in [
        format!("nats bridge relay `default`: user `a`, buffer 65536 messages / 8388608 bytes, for {l0}"),
        format!("nats bridge relay `{l1}`: user `b`, buffer 5 messages / 8388608 bytes, for {l1}"),
    ] {
        assert!(r.printed.contains(&line), "{line}: {:#?}", r.printed);
    }
    let metrics = || {
        let mut s = TcpStream::connect(("127.0.0.1", p + 4)).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.split_once("\r\n\r\n").unwrap().1.to_owned()
    };
    let sample = |series: &str| -> Option<u64> {
        metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    let series =
        |name: &str, bridge: &str| format!("{name}{{plugin=\"relay\",bridge=\"{bridge}\"}}");
    let connected = "ringport_nats_bridge_connected";
    wait("both bridges connected in /metrics", || {
        sample(&series(connected, "default")) == Some(1)
            && sample(&series(connected, &l1)) == Some(1)
    });
    nats.wait_subscriptions(2);
    let connz = nats
        .monitor_text("/connz?auth=1")
        .expect("the monitoring endpoint")
        .replace([' ', '\n'], "");
    for user in ["a", "b"] {
        assert_eq!(
            connz
                .matches(&format!("\"authorized_user\":\"{user}\""))
                .count(),
            1,
            "{connz}"
        );
    }
    // Listener 0 (shard 1) publishes 3, listener 1 (shard 0) 4.
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    Client::new(addr(p + 1)).publish("t/0", 1, 0..3);
    Client::new(addr(p + 2)).publish("t/1", 2, 0..4);
    let exported = "ringport_nats_bridge_exported_total";
    wait("3 and 4 exported in /metrics", || {
        sample(&series(exported, "default")) == Some(3) && sample(&series(exported, &l1)) == Some(4)
    });
    let text = metrics();
    assert_eq!(
        text.matches("ringport_nats_bridge_dropped_total{plugin=\"relay\"")
            .count(),
        12
    );
    ringport_tools::testing::promtool_check(&text);
    drop(r);
    std::fs::remove_dir_all(&dir).unwrap();
}
