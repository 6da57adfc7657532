//! The sans-IO NATS client against a real `nats-server`, driven by a
//! blocking std `TcpStream` loop on loopback.
//!
//! Each test starts its own `nats-server` on a free loopback port, with a
//! config file of its own in a temporary folder; a guard kills the server and
//! removes the folder on every path out of the test. Without `nats-server`,
//! a test prints `skipped: install nats-server (apt-get install nats-server)`
//! and passes, except under `CI=true`, where it fails.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use ringport_plugin::testing::outside_program;
use ringport_protocols::nats::nkey::{encode_public_key, encode_seed, PREFIX_USER};
use ringport_protocols::nats::{
    Auth, DisconnectReason, Event, Headers, Message, NKey, NatsClient, NatsConfig, PublishError,
    ServerErrorKind, State, ORIGIN_HEADER,
};

/// Where `nats-server` is, or `None` (and the skip line) when it is missing;
/// a failure under CI.
fn nats_server_program() -> Option<PathBuf> {
    outside_program("nats-server", "nats-server")
}

/// A free loopback port: bound, read, released.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A `nats-server` on loopback; killed, and its folder removed, on drop.
struct NatsServer {
    program: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts `nats-server` with `config` (the body of its config file) on a
    /// free port and waits until it accepts connections.
    fn start(program: PathBuf, config: &str) -> NatsServer {
        let dir = std::env::temp_dir().join(format!(
            "ringport-nats-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the server's folder");
        std::fs::write(dir.join("nats.conf"), config).expect("write nats.conf");
        let mut server = NatsServer {
            program,
            dir,
            port: free_port(),
            child: None,
        };
        server.spawn();
        server
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port) and waits for it.
    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("nats.log")).expect("create nats.log");
        let child = Command::new(&self.program)
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(self.dir.join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        let addr = self.addr();
        let child = self.child.insert(child);
        ringport_plugin::testing::wait_listening(
            child,
            addr,
            &self.dir.join("nats.log"),
            "nats-server",
            Duration::from_secs(10),
        );
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One client and its TCP connection, driven the way the engine would:
/// bytes in, whole operations consumed, the rest kept.
struct Driver {
    client: NatsClient,
    stream: Option<TcpStream>,
    pending: Vec<u8>,
    /// Whether to connect (again) when disconnected.
    reconnect: bool,
    next_attempt: Instant,
    /// Every message received, in order.
    messages: Vec<Message>,
    /// Every other event, in order.
    events: Vec<Event>,
}

impl Driver {
    fn new(config: NatsConfig) -> Driver {
        Driver {
            client: NatsClient::new(config, Instant::now()).expect("valid config"),
            stream: None,
            pending: Vec::new(),
            reconnect: true,
            next_attempt: Instant::now(),
            messages: Vec::new(),
            events: Vec::new(),
        }
    }

    fn try_connect(&mut self) {
        let now = Instant::now();
        if self.stream.is_some() || !self.reconnect || now < self.next_attempt {
            return;
        }
        let addr = self.client.next_server().socket_addr().expect("IP literal");
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_millis(10)))
                    .expect("read timeout");
                stream.set_nodelay(true).expect("nodelay");
                self.stream = Some(stream);
                self.pending.clear();
                self.client.handle_connected(Instant::now());
            }
            // The test's own backoff: the engine's helper does it for the bridge.
            Err(_) => self.next_attempt = now + Duration::from_millis(50),
        }
    }

    fn close(&mut self) {
        self.stream = None;
        self.client.handle_disconnected(Instant::now());
        self.next_attempt = Instant::now() + Duration::from_millis(50);
    }

    /// One turn: connect if needed, send, receive, time, collect events.
    fn turn(&mut self) {
        self.try_connect();
        self.flush();
        if let Some(stream) = self.stream.as_mut() {
            let mut buf = [0u8; 16 * 1024];
            match stream.read(&mut buf) {
                Ok(0) => self.close(),
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    let used = self.client.handle_input(Instant::now(), &self.pending);
                    self.pending.drain(..used);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => self.close(),
            }
        }
        self.client.handle_timeout(Instant::now());
        self.flush();
        while let Some(event) = self.client.poll_event() {
            match event {
                Event::Message(m) => self.messages.push(m),
                Event::NeedReconnect(reason) => {
                    // The client is done with this connection: close it.
                    self.stream = None;
                    self.next_attempt = Instant::now() + Duration::from_millis(50);
                    self.events.push(Event::NeedReconnect(reason));
                }
                other => self.events.push(other),
            }
        }
    }

    fn flush(&mut self) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let out = self.client.pending_transmit();
        if out.is_empty() {
            return;
        }
        match stream.write_all(out) {
            Ok(()) => {
                let n = out.len();
                self.client.advance_transmit(n);
            }
            Err(_) => self.close(),
        }
    }
}

/// Calls `step` (which may act on the drivers) and turns every driver,
/// until `step` returns true; fails after 10 s.
fn run_until(
    drivers: &mut [&mut Driver],
    what: &str,
    mut step: impl FnMut(&mut [&mut Driver]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !step(drivers) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for d in drivers.iter_mut() {
            d.turn();
        }
    }
}

fn connected(drivers: &mut [&mut Driver]) {
    run_until(drivers, "the logins", |d| {
        d.iter().all(|d| d.client.state() == State::Connected)
    });
}

fn count_connected(d: &Driver) -> usize {
    d.events
        .iter()
        .filter(|e| matches!(e, Event::Connected { .. }))
        .count()
}

fn config(urls: &[String]) -> NatsConfig {
    NatsConfig {
        servers: urls.to_vec(),
        name: Some("ringport-test".into()),
        ..NatsConfig::default()
    }
}

fn on(subject: &str, messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.subject == subject)
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

/// A logged-in client subscribes to a subject and publishes to it (echo is
/// on) until one of its messages comes back.
fn self_round_trip(d: &mut Driver) {
    connected(&mut [&mut *d]);
    d.client.subscribe("self.check", None).unwrap();
    run_until(&mut [&mut *d], "a message back", |d| {
        if !on("self.check", &d[0].messages).is_empty() {
            return true;
        }
        d[0].client
            .publish("self.check", None, None, b"ping")
            .unwrap();
        false
    });
}

/// A client whose login is refused: its only event is the server's
/// 'Authorization Violation', and it never counts as connected.
fn refused(mut d: Driver) {
    run_until(&mut [&mut d], "the refusal", |d| !d[0].events.is_empty());
    let [Event::NeedReconnect(DisconnectReason::Server(e))] = &d.events[..] else {
        panic!("expected one refusal, got {:?}", d.events);
    };
    assert_eq!(e.message, "Authorization Violation");
    assert_eq!(e.kind(), ServerErrorKind::AuthorizationViolation);
    let s = d.client.stats();
    assert_eq!((s.connects, s.disconnects_server_error), (0, 1));
}

#[test]
fn publish_and_subscribe_with_headers_and_no_echo() {
    let Some(program) = nats_server_program() else {
        return;
    };
    let server = NatsServer::start(program, "");
    let mut a = Driver::new(NatsConfig {
        echo: false,
        ..config(&[server.url()])
    });
    let mut b = Driver::new(config(&[server.url()]));
    connected(&mut [&mut a, &mut b]);
    assert!(
        a.client.server_info().unwrap().headers,
        "nats-server speaks headers"
    );
    a.client.subscribe("ringport.t.>", None).unwrap();
    b.client.subscribe("ringport.t.>", None).unwrap();
    // Both subscriptions are in place once b's probes reach both.
    run_until(&mut [&mut a, &mut b], "both subscriptions", |d| {
        if d.iter()
            .all(|d| !on("ringport.t.probe", &d.messages).is_empty())
        {
            return true;
        }
        d[1].client
            .publish("ringport.t.probe", None, None, b"probe")
            .unwrap();
        false
    });

    let mut headers = Headers::new();
    headers.append(ORIGIN_HEADER, "instance-a").unwrap();
    headers.append("Content-Type", "text/plain").unwrap();
    a.client
        .publish(
            "ringport.t.x",
            Some("reply.to.a"),
            Some(&headers),
            b"from a",
        )
        .unwrap();
    run_until(&mut [&mut a, &mut b], "a's message at b", |d| {
        !on("ringport.t.x", &d[1].messages).is_empty()
    });
    let got = b
        .messages
        .iter()
        .find(|m| m.subject == "ringport.t.x")
        .unwrap();
    assert_eq!(got.payload, b"from a");
    assert_eq!(got.reply.as_deref(), Some("reply.to.a"));
    assert_eq!(got.origin(), Some("instance-a"));
    assert_eq!(got.headers.as_ref(), Some(&headers));

    // The server routed a's message before b published the marker, so with
    // echo on it would have reached a before the marker does.
    b.client
        .publish("ringport.t.marker", None, None, b"marker")
        .unwrap();
    run_until(&mut [&mut a, &mut b], "the marker at a and b", |d| {
        d.iter()
            .all(|d| on("ringport.t.marker", &d.messages) == ["marker"])
    });
    assert_eq!(on("ringport.t.x", &a.messages), Vec::<String>::new());
    let marker = a.messages.last().unwrap();
    assert_eq!(
        (marker.headers.as_ref(), marker.reply.as_ref()),
        (None, None)
    );
    assert!(a.client.stats().published >= 1);
    assert_eq!(a.client.stats().dropped_buffer_full, 0);
}

#[test]
fn user_and_password_login_and_its_refusal() {
    let Some(program) = nats_server_program() else {
        return;
    };
    let server = NatsServer::start(
        program,
        "authorization {\n  users = [ { user: alice, password: \"s3cret\" } ]\n}\n",
    );
    let auth = |password: &str| Auth::UserPassword {
        user: "alice".into(),
        password: password.into(),
    };
    let mut good = Driver::new(NatsConfig {
        auth: auth("s3cret"),
        ..config(&[server.url()])
    });
    self_round_trip(&mut good);
    assert!(good.client.server_info().unwrap().auth_required);

    // The URL's own credentials.
    let mut by_url = Driver::new(config(&[format!(
        "nats://alice:s3cret@127.0.0.1:{}",
        server.port
    )]));
    self_round_trip(&mut by_url);

    let bad = Driver::new(NatsConfig {
        auth: auth("wrong"),
        ..config(&[server.url()])
    });
    refused(stop_after_one(bad));
}

/// A driver that connects once and not again after being refused.
fn stop_after_one(mut d: Driver) -> Driver {
    d.try_connect();
    d.reconnect = false;
    d
}

#[test]
fn token_login_and_its_refusal() {
    let Some(program) = nats_server_program() else {
        return;
    };
    let server = NatsServer::start(program, "authorization {\n  token: \"t0k-123\"\n}\n");
    let mut good = Driver::new(NatsConfig {
        auth: Auth::Token("t0k-123".into()),
        ..config(&[server.url()])
    });
    self_round_trip(&mut good);
    refused(stop_after_one(Driver::new(NatsConfig {
        auth: Auth::Token("t0k-124".into()),
        ..config(&[server.url()])
    })));
}

#[test]
fn nkey_login_and_its_refusal() {
    let Some(program) = nats_server_program() else {
        return;
    };
    // A fresh ed25519 key: its public half encoded here from aws-lc-rs's
    // own derivation, its seed handed to the client as an NKey seed.
    let raw_seed = rand::random::<[u8; 32]>();
    let pair = Ed25519KeyPair::from_seed_unchecked(&raw_seed).unwrap();
    let public = encode_public_key(PREFIX_USER, pair.public_key().as_ref().try_into().unwrap());
    let seed = encode_seed(PREFIX_USER, &raw_seed);
    assert!(public.starts_with('U') && seed.starts_with("SU"));
    assert_eq!(NKey::from_seed(&seed).unwrap().public_key(), public);
    let server = NatsServer::start(
        program,
        &format!("authorization {{\n  users = [ {{ nkey: {public} }} ]\n}}\n"),
    );
    let mut good = Driver::new(NatsConfig {
        auth: Auth::NKeySeed(seed),
        ..config(&[server.url()])
    });
    self_round_trip(&mut good);
    assert!(good.client.server_info().unwrap().nonce.is_some());
    let other = encode_seed(PREFIX_USER, &rand::random::<[u8; 32]>());
    refused(stop_after_one(Driver::new(NatsConfig {
        auth: Auth::NKeySeed(other),
        ..config(&[server.url()])
    })));
}

/// The server is killed while clients are connected and restarted on the
/// same port. The publisher buffers while it is down, within 5 messages
/// (5 more are refused and counted), tries a dead server of its list and
/// the live one in turn; the subscriber's subscription is sent again without
/// its asking; after the restart it receives exactly the buffered messages,
/// in order, after those from before.
#[test]
fn restart_reconnects_replays_subscriptions_and_flushes_the_buffer() {
    let Some(program) = nats_server_program() else {
        return;
    };
    let mut server = NatsServer::start(program, "");
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let mut sub = Driver::new(config(&[server.url()]));
    let mut publ = Driver::new(NatsConfig {
        buffer_messages: 5,
        ..config(&[dead, server.url()])
    });
    let mut probe = Driver::new(config(&[server.url()]));
    connected(&mut [&mut sub, &mut publ, &mut probe]);
    sub.client.subscribe("r.>", None).unwrap();
    let probes = |d: &Driver| on("r.probe", &d.messages).len();
    run_until(&mut [&mut sub, &mut probe], "sub's subscription", |d| {
        if probes(d[0]) > 0 {
            return true;
        }
        d[1].client.publish("r.probe", None, None, b"p").unwrap();
        false
    });
    // The bound holds while connected too (bytes not yet taken by the
    // transport): one publish per turn stays within it.
    for i in 0..10 {
        publ.client
            .publish("r.data", None, None, format!("m{i}").as_bytes())
            .unwrap();
        publ.turn();
    }
    run_until(&mut [&mut sub, &mut publ], "10 messages", |d| {
        on("r.data", &d[0].messages).len() == 10
    });

    server.kill();
    for d in [&mut sub, &mut publ, &mut probe] {
        d.reconnect = false;
    }
    run_until(
        &mut [&mut sub, &mut publ, &mut probe],
        "the disconnects",
        |d| d.iter().all(|d| d.client.state() == State::Disconnected),
    );
    for d in [&sub, &publ] {
        assert_eq!(
            d.events.last(),
            Some(&Event::NeedReconnect(DisconnectReason::TransportClosed))
        );
    }
    let results: Vec<_> = (10..20)
        .map(|i| {
            publ.client
                .publish("r.data", None, None, format!("m{i}").as_bytes())
        })
        .collect();
    assert_eq!(results[..5], [Ok(()); 5]);
    assert_eq!(results[5..], [Err(PublishError::BufferFull); 5]);
    let s = publ.client.stats();
    assert_eq!(
        (s.dropped_buffer_full, s.buffered_messages, s.published),
        (5, 5, 10)
    );

    server.spawn();
    sub.reconnect = true;
    probe.reconnect = true;
    run_until(&mut [&mut sub, &mut probe], "the subscriber back", |d| {
        d.iter().all(|d| count_connected(d) == 2)
    });
    // The subscription came back by itself: a new probe reaches it.
    let before = probes(&sub);
    run_until(
        &mut [&mut sub, &mut probe],
        "the replayed subscription",
        |d| {
            if probes(d[0]) > before {
                return true;
            }
            d[1].client.publish("r.probe", None, None, b"p").unwrap();
            false
        },
    );
    publ.reconnect = true;
    run_until(&mut [&mut sub, &mut publ], "the buffered messages", |d| {
        on("r.data", &d[0].messages).len() == 15
    });
    // Nothing more comes: a last probe arrives after anything in flight.
    let before = probes(&sub);
    probe.client.publish("r.probe", None, None, b"p").unwrap();
    run_until(
        &mut [&mut sub, &mut publ, &mut probe],
        "a last probe",
        |d| probes(d[0]) > before,
    );
    let expected: Vec<String> = (0..15).map(|i| format!("m{i}")).collect();
    assert_eq!(on("r.data", &sub.messages), expected);

    let s = publ.client.stats();
    assert_eq!(
        (s.published, s.dropped_buffer_full, s.buffered_messages),
        (15, 5, 0)
    );
    assert_eq!((s.connects, s.reconnects), (2, 1));
    let live = format!("127.0.0.1:{}", server.port);
    for e in &publ.events {
        if let Event::Connected { server, .. } = e {
            assert_eq!(server, &live);
        }
    }
    assert_eq!(sub.client.stats().reconnects, 1);
    assert_eq!(sub.client.subscriptions().count(), 1);
}

/// The server is killed while the publisher publishes one message a turn,
/// and restarted. What the publisher accepted while it knew it was
/// disconnected all arrives, in order; what it refused never arrives and is
/// counted exactly; nothing arrives twice or out of order. (What the
/// transport had taken just before the kill may be lost: NATS core delivery
/// is at most once, and TCP does not say what the dead server read.)
#[test]
fn a_kill_mid_stream_loses_nothing_accepted_while_disconnected() {
    let Some(program) = nats_server_program() else {
        return;
    };
    let mut server = NatsServer::start(program, "");
    let mut sub = Driver::new(config(&[server.url()]));
    let mut publ = Driver::new(NatsConfig {
        buffer_messages: 5,
        ..config(&[server.url()])
    });
    let mut probe = Driver::new(config(&[server.url()]));
    connected(&mut [&mut sub, &mut publ, &mut probe]);
    sub.client.subscribe("m.>", None).unwrap();
    let probes = |d: &Driver| on("m.probe", &d.messages).len();
    run_until(&mut [&mut sub, &mut probe], "sub's subscription", |d| {
        if probes(d[0]) > 0 {
            return true;
        }
        d[1].client.publish("m.probe", None, None, b"p").unwrap();
        false
    });

    let mut accepted_while_down = Vec::new();
    let mut refused = Vec::new();
    let mut i = 0;
    let mut down_attempts = 0;
    while down_attempts < 12 {
        let down = publ.client.state() == State::Disconnected;
        let text = format!("{i}");
        match publ.client.publish("m.data", None, None, text.as_bytes()) {
            Ok(()) if down => accepted_while_down.push(text),
            Ok(()) => {}
            Err(PublishError::BufferFull) => refused.push(text),
            Err(e) => panic!("publish {i}: {e}"),
        }
        if down {
            down_attempts += 1;
        }
        i += 1;
        if i == 20 {
            server.kill();
            sub.reconnect = false;
            publ.reconnect = false;
            probe.reconnect = false;
        }
        for d in [&mut sub, &mut publ, &mut probe] {
            d.turn();
        }
        assert!(i < 10_000, "the publisher never saw the kill");
    }
    // The buffer holds 5: those accepted while down, and any the transport
    // had not taken when the connection's end was seen (sent again too).
    let stats = publ.client.stats();
    assert_eq!(stats.buffered_messages, 5);
    assert_eq!(accepted_while_down.len() + refused.len(), 12);
    assert!(accepted_while_down.len() <= 5);
    assert_eq!(stats.dropped_buffer_full, refused.len() as u64);

    server.spawn();
    sub.reconnect = true;
    probe.reconnect = true;
    run_until(&mut [&mut sub, &mut probe], "the subscriber back", |d| {
        d.iter().all(|d| count_connected(d) == 2)
    });
    let before = probes(&sub);
    run_until(
        &mut [&mut sub, &mut probe],
        "the replayed subscription",
        |d| {
            if probes(d[0]) > before {
                return true;
            }
            d[1].client.publish("m.probe", None, None, b"p").unwrap();
            false
        },
    );
    publ.reconnect = true;
    let last = accepted_while_down.last().unwrap().clone();
    run_until(
        &mut [&mut sub, &mut publ],
        "the last buffered message",
        |d| on("m.data", &d[0].messages).contains(&last),
    );

    let got: Vec<u64> = on("m.data", &sub.messages)
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {got:?}"
    );
    for m in &accepted_while_down {
        assert!(got.contains(&m.parse().unwrap()), "{m} lost: {got:?}");
    }
    for m in &refused {
        assert!(!got.contains(&m.parse().unwrap()), "refused {m} arrived");
    }
    assert_eq!(publ.client.stats().buffered_messages, 0);
    assert_eq!(publ.client.stats().reconnects, 1);
    eprintln!(
        "mid-stream kill: {} published before it, {} received in all, {} accepted while down, {} refused, {} lost in flight",
        20,
        got.len(),
        accepted_while_down.len(),
        refused.len(),
        publ.client.stats().lost_in_flight
    );
}
