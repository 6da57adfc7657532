//! The `relay` protocol end to end: four shards on (up to) two CPUs, TCP
//! subscribers on every shard, publishers over TCP and UDP on different
//! shards, the cross-shard mesh in between.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use common::{connect, reset, retry_eintr, server, tcp, udp, Server, IO_TIMEOUT, LOOPBACK};
use ringport::engine::cpus::allowed_cpus;
use ringport::engine::EngineConfig;
use ringport::plugin::DropReason;
use ringport::protocols::relay::wire::{self, Framing, Packet, Repr};

const SHARDS: usize = 4;

/// Up to two CPUs this process may run on; four shards wrap around them.
fn two_cpus() -> Vec<usize> {
    let mut cpus = allowed_cpus().unwrap();
    cpus.truncate(2);
    cpus
}

/// Four shards, relay over TCP (listener 0) and UDP (listener 1) on four
/// ports each: in range mode port `i` of either belongs to shard `i`.
fn relay_server(config: EngineConfig) -> Server {
    server()
        .shards(SHARDS)
        .cpus(two_cpus())
        .config(config)
        .listen(tcp("relay", SHARDS as u16))
        .listen(udp("relay", SHARDS as u16))
        .start()
}

/// The TCP port of shard `shard`.
fn tcp_addr(srv: &Server, shard: usize) -> SocketAddr {
    srv.addrs(0)[shard]
}

/// The UDP port of shard `shard`.
fn udp_addr(srv: &Server, shard: usize) -> SocketAddr {
    srv.addrs(1)[shard]
}

/// A server → client frame, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Frame {
    Message { topic: Vec<u8>, payload: Vec<u8> },
    Lagged(u64),
    Pong,
}

/// A blocking relay client over one TCP stream.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn new(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects, subscribes to `topics` and waits until they are active.
    fn subscriber(addr: SocketAddr, topics: &[&str]) -> Client {
        Client::new(connect(addr)).subscribe(topics)
    }

    fn subscribe(mut self, topics: &[&str]) -> Client {
        let mut frames: Vec<u8> = topics
            .iter()
            .flat_map(|t| {
                Repr::Subscribe {
                    topic: t.as_bytes(),
                }
                .to_vec()
            })
            .collect();
        frames.extend(Repr::Ping { payload: b"" }.to_vec());
        self.stream.write_all(&frames).expect("subscribe");
        assert_eq!(self.next(), Frame::Pong);
        self
    }

    /// Publishes `frames` (already encoded) and waits for the server to have
    /// handled them.
    fn publish_and_sync(&mut self, frames: &[u8]) {
        self.stream.write_all(frames).expect("publish");
        self.ping();
    }

    /// Sends a `PING` and expects the `PONG` as the very next frame.
    fn ping(&mut self) {
        self.stream
            .write_all(&Repr::Ping { payload: b"" }.to_vec())
            .expect("ping");
        assert_eq!(self.next(), Frame::Pong);
    }

    /// The next frame.
    ///
    /// # Panics
    ///
    /// On a close, a bad frame, or nothing within [`IO_TIMEOUT`].
    fn next(&mut self) -> Frame {
        loop {
            match wire::next_frame(&self.buf, u32::MAX as usize) {
                Framing::Frame(_, len) => {
                    let frame = match Repr::parse(&Packet::new_unchecked(&self.buf[..len]), len) {
                        Ok(Repr::Message { topic, payload }) => Frame::Message {
                            topic: topic.to_vec(),
                            payload: payload.to_vec(),
                        },
                        Ok(Repr::Lagged { count }) => Frame::Lagged(count),
                        Ok(Repr::Pong { .. }) => Frame::Pong,
                        other => panic!("unexpected frame from the server: {other:?}"),
                    };
                    self.buf.drain(..len);
                    return frame;
                }
                Framing::Invalid(e) => panic!("bad frame from the server: {e}"),
                Framing::Incomplete => {}
            }
            let mut chunk = [0u8; 65536];
            match retry_eintr(|| self.stream.read(&mut chunk)) {
                Ok(0) => panic!("the server closed the stream"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("no frame within {IO_TIMEOUT:?}: {e}"),
            }
        }
    }

    /// Reads messages of `topic` (in increasing sequence order) and `LAGGED`
    /// frames until they account for `count` messages; returns (received,
    /// lagged).
    fn until_accounted(&mut self, topic: &[u8], count: u64) -> (u64, u64) {
        let (mut received, mut lagged, mut last) = (0u64, 0u64, None);
        while received + lagged < count {
            match self.next() {
                Frame::Message { topic: t, payload } => {
                    assert_eq!(t, topic);
                    let (_, seq) = stamp_of(&payload);
                    assert!(last < Some(seq), "{seq} after {last:?}");
                    last = Some(seq);
                    received += 1;
                }
                Frame::Lagged(n) => {
                    assert!(n > 0);
                    lagged += n;
                }
                Frame::Pong => panic!("no ping was sent"),
            }
        }
        assert_eq!(received + lagged, count);
        (received, lagged)
    }

    /// The next `count` frames, which must all be messages; returns them as
    /// (topic, publisher, sequence).
    fn messages(&mut self, count: usize) -> Vec<(Vec<u8>, u32, u32)> {
        (0..count)
            .map(|i| match self.next() {
                Frame::Message { topic, payload } => {
                    let (publisher, seq) = stamp_of(&payload);
                    (topic, publisher, seq)
                }
                other => panic!("frame {i} of {count}: expected a message, got {other:?}"),
            })
            .collect()
    }
}

/// A payload of `len` bytes (at least 8) starting with the publisher and the
/// sequence number.
fn stamp(publisher: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0xa5; len.max(8)];
    p[..4].copy_from_slice(&publisher.to_be_bytes());
    p[4..8].copy_from_slice(&seq.to_be_bytes());
    p
}

fn stamp_of(payload: &[u8]) -> (u32, u32) {
    assert!(payload.len() >= 8, "payload too short: {payload:?}");
    let word = |r: std::ops::Range<usize>| u32::from_be_bytes(payload[r].try_into().unwrap());
    (word(0..4), word(4..8))
}

fn publish_frame(topic: &str, payload: &[u8]) -> Vec<u8> {
    Repr::Publish {
        topic: topic.as_bytes(),
        payload,
    }
    .to_vec()
}

const TOPICS: [&str; 4] = ["plant/a", "plant/b", "plant/c", "plant/d"];

/// The topic of message `seq` of any publisher in the fan-out test.
fn topic_of(seq: u32) -> &'static str {
    TOPICS[seq as usize % TOPICS.len()]
}

#[test]
fn every_subscriber_gets_exactly_its_topics_in_publisher_order() {
    const SUBSCRIBERS: usize = 50;
    const PER_PUBLISHER: u32 = 240;
    const BATCH: u32 = 20;
    let srv = relay_server(EngineConfig::default());

    // Subscriber i sits on shard i % 4 and holds one or two topics.
    let wanted: Vec<BTreeSet<&str>> = (0..SUBSCRIBERS)
        .map(|i| [TOPICS[i % 4], TOPICS[(i / 4) % 4]].into_iter().collect())
        .collect();
    let mut subs: Vec<Client> = (0..SUBSCRIBERS)
        .map(|i| {
            let topics: Vec<&str> = wanted[i].iter().copied().collect();
            Client::subscriber(tcp_addr(&srv, i % SHARDS), &topics)
        })
        .collect();

    // Publishers 0 and 2 over TCP on shards 0 and 2; 1 and 3 over UDP on
    // shards 1 and 3. Each publishes its messages round robin over the topics.
    std::thread::scope(|scope| {
        for publisher in 0..4u32 {
            let srv = &srv;
            scope.spawn(move || {
                let shard = publisher as usize;
                let frames = (0..PER_PUBLISHER)
                    .map(|seq| publish_frame(topic_of(seq), &stamp(publisher, seq, 16)));
                if publisher % 2 == 0 {
                    let mut client = Client::new(connect(tcp_addr(srv, shard)));
                    let frames: Vec<Vec<u8>> = frames.collect();
                    for batch in frames.chunks(BATCH as usize) {
                        client.publish_and_sync(&batch.concat());
                    }
                } else {
                    let sock = UdpSocket::bind((LOOPBACK, 0)).unwrap();
                    let dest = udp_addr(srv, shard);
                    for (i, frame) in frames.enumerate() {
                        assert_eq!(sock.send_to(&frame, dest).unwrap(), frame.len());
                        // Let the shard catch up now and then, so that the
                        // kernel never drops a datagram on a busy machine.
                        if (i + 1) % BATCH as usize == 0 {
                            let sent = i as u64 + 1;
                            srv.wait_stats("datagrams handled", |s| {
                                s[shard].counters.datagrams_in >= sent
                            });
                        }
                    }
                }
            });
        }
    });

    let mut deliveries = 0u64;
    for (i, sub) in subs.iter_mut().enumerate() {
        let expected: Vec<(Vec<u8>, u32, u32)> = (0..4u32)
            .flat_map(|p| (0..PER_PUBLISHER).map(move |seq| (p, seq)))
            .filter(|&(_, seq)| wanted[i].contains(topic_of(seq)))
            .map(|(p, seq)| (topic_of(seq).as_bytes().to_vec(), p, seq))
            .collect();
        let mut got = sub.messages(expected.len());
        // Publishers interleave; each one's messages keep their order.
        for p in 0..4u32 {
            let mine: Vec<u32> = got.iter().filter(|m| m.1 == p).map(|m| m.2).collect();
            let sorted: Vec<u32> = {
                let mut v = mine.clone();
                v.sort_unstable();
                v
            };
            assert_eq!(mine, sorted, "subscriber {i}: publisher {p} out of order");
        }
        got.sort_by_key(|m| (m.1, m.2));
        assert_eq!(got, expected, "subscriber {i}");
        deliveries += expected.len() as u64;
    }

    // Every publish and every delivery counted once, and then nothing more:
    // no subscriber has an extra message before its next pong.
    let published = 4 * u64::from(PER_PUBLISHER);
    let totals = srv.wait_totals("every publish and delivery", |t| {
        t.msgs == published + deliveries
    });
    for sub in &mut subs {
        sub.ping();
    }
    assert_eq!(srv.totals().msgs, published + deliveries);
    assert_eq!(totals.drops_total(), 0, "{:?}", totals.drop_list());
    // Every shard handed messages to the others.
    for s in srv.stats() {
        assert!(s.counters.mesh_out > 0 && s.counters.mesh_in > 0, "{s}");
    }
    drop(subs);
    srv.wait_totals("every stream closed", |t| t.conns_open() == 0);
}

/// The kernel's largest TCP send buffer (`tcp_wmem` max).
fn tcp_wmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

#[test]
fn a_subscriber_that_stops_reading_gets_lagged_and_the_others_do_not() {
    const PAYLOAD: usize = 4096;
    // Messages in flight to a fast subscriber: 8 x 4 KiB stays below the cap.
    const WINDOW: u64 = 8;
    const MAX_OUTBOUND: usize = 64 << 10;
    // More than the engine queue plus the kernel's largest send buffer, twice.
    let count = ((2 * tcp_wmem_max() + MAX_OUTBOUND) / PAYLOAD + 256) as u32;
    let srv = relay_server(EngineConfig {
        max_outbound: MAX_OUTBOUND,
        pause_outbound: MAX_OUTBOUND / 2,
        ..EngineConfig::default()
    });

    // The slow one on shard 1 with a small receive window, never reading
    // until the end; fast ones on every shard, one of them next to it.
    let slow_sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    slow_sock.set_recv_buffer_size(4096).unwrap();
    slow_sock
        .connect(&tcp_addr(&srv, 1).into())
        .expect("connect the slow subscriber");
    let slow_stream: TcpStream = slow_sock.into();
    slow_stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut slow = Client::new(slow_stream).subscribe(&["feed"]);
    let fast: Vec<Client> = (0..SHARDS)
        .map(|shard| Client::subscriber(tcp_addr(&srv, shard), &["feed"]))
        .collect();
    let progress: Vec<AtomicU64> = (0..SHARDS).map(|_| AtomicU64::new(0)).collect();

    std::thread::scope(|scope| {
        for (i, mut sub) in fast.into_iter().enumerate() {
            let progress = &progress[i];
            scope.spawn(move || {
                for seq in 0..count {
                    let got = sub.messages(1).remove(0);
                    assert_eq!(got, (b"feed".to_vec(), 0, seq), "fast subscriber {i}");
                    progress.store(u64::from(seq) + 1, Ordering::Release);
                }
                sub.ping();
            });
        }
        // The publisher on shard 0 keeps at most WINDOW messages ahead of
        // the slowest fast subscriber, whatever the machine's load.
        let mut publisher = Client::new(connect(tcp_addr(&srv, 0)));
        let deadline = Instant::now() + IO_TIMEOUT;
        for seq in 0..count {
            while progress
                .iter()
                .any(|p| p.load(Ordering::Acquire) + WINDOW < u64::from(seq))
            {
                assert!(
                    Instant::now() < deadline,
                    "fast subscribers stalled at {seq}"
                );
                std::thread::yield_now();
            }
            publisher
                .stream
                .write_all(&publish_frame("feed", &stamp(0, seq, PAYLOAD)))
                .unwrap();
        }
        publisher.ping();
    });

    // Now the slow subscriber reads: some messages in order, and `LAGGED`
    // frames for the rest, until every message is accounted for.
    let (received, lagged) = slow.until_accounted(b"feed", u64::from(count));
    assert!(lagged > 0, "the slow subscriber never lagged");
    slow.ping();

    let totals = srv.totals();
    assert_eq!(totals.drops[DropReason::QueueFull.index()], lagged);
    assert_eq!(totals.drops_total(), lagged, "{:?}", totals.drop_list());
    assert_eq!(
        totals.msgs,
        u64::from(count) * (1 + SHARDS as u64) + received
    );
}

#[test]
fn subscribers_disconnecting_mid_stream_leak_nothing() {
    const COUNT: u32 = 3000;
    const BATCH: usize = 100;
    let srv = relay_server(EngineConfig::default());

    // Two subscribers per shard: one stays, one leaves after a while, with
    // a reset or a FIN.
    let stay: Vec<Client> = (0..SHARDS)
        .map(|shard| Client::subscriber(tcp_addr(&srv, shard), &["x", "y"]))
        .collect();
    let leave: Vec<Client> = (0..SHARDS)
        .map(|shard| Client::subscriber(tcp_addr(&srv, shard), &["x"]))
        .collect();

    std::thread::scope(|scope| {
        for (i, mut sub) in stay.into_iter().enumerate() {
            scope.spawn(move || {
                let got = sub.messages(COUNT as usize);
                let expected: Vec<_> = (0..COUNT).map(|seq| (b"x".to_vec(), 3, seq)).collect();
                assert!(got == expected, "subscriber {i} that stayed");
                sub.ping();
            });
        }
        for (i, mut sub) in leave.into_iter().enumerate() {
            scope.spawn(move || {
                let n = 200 * (i + 1);
                let got = sub.messages(n);
                assert_eq!(got.last().map(|m| m.2), Some(n as u32 - 1));
                if i % 2 == 0 {
                    reset(sub.stream);
                } else {
                    sub.stream.shutdown(Shutdown::Both).unwrap();
                }
            });
        }
        let mut publisher = Client::new(connect(tcp_addr(&srv, 3)));
        let frames: Vec<Vec<u8>> = (0..COUNT)
            .map(|seq| publish_frame("x", &stamp(3, seq, 100)))
            .collect();
        for batch in frames.chunks(BATCH) {
            publisher.publish_and_sync(&batch.concat());
        }
    });
    let settled = srv.wait_totals("every stream closed", |t| t.conns_open() == 0);
    assert_eq!(settled.drops_total(), 0, "{:?}", settled.drop_list());

    // No subscription outlived its stream: one publish now reaches exactly
    // the one new subscriber, and nothing is written to a closed stream.
    let mut fresh = Client::subscriber(tcp_addr(&srv, 2), &["x"]);
    let before = srv.totals().msgs;
    let mut publisher = Client::new(connect(tcp_addr(&srv, 0)));
    publisher.publish_and_sync(&publish_frame("x", &stamp(9, 0, 8)));
    assert_eq!(fresh.messages(1), [(b"x".to_vec(), 9, 0)]);
    let after = srv.wait_totals("the publish and its one delivery", |t| t.msgs >= before + 2);
    fresh.ping();
    assert_eq!(srv.totals().msgs, before + 2);
    assert_eq!(after.drops_total(), 0, "{:?}", after.drop_list());
    drop((fresh, publisher));
    srv.wait_totals("every stream closed", |t| t.conns_open() == 0);
}

#[test]
fn malformed_frames_close_their_stream_and_bad_datagrams_are_counted() {
    let srv = relay_server(EngineConfig::default());
    let mut sub = Client::subscriber(tcp_addr(&srv, 1), &["t"]);

    // Datagrams: a SUBSCRIBE (only PUBLISH over UDP), a cut PUBLISH, an
    // empty topic.
    let sock = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    let good = publish_frame("t", &stamp(1, 0, 8));
    let bad: [&[u8]; 3] = [
        &Repr::Subscribe { topic: b"t" }.to_vec(),
        &good[..good.len() - 1],
        &[0x03, 0, 0, 0, 0, 0],
    ];
    for d in bad {
        sock.send_to(d, udp_addr(&srv, 2)).unwrap();
    }
    let t = srv.wait_totals("three bad datagrams", |t| t.drops_total() == 3);
    assert_eq!(t.drops[DropReason::Malformed.index()], 2);
    assert_eq!(t.drops[DropReason::FrameTooShort.index()], 1);

    // A stream sending a server frame is closed; the subscriber is not.
    let mut rogue = connect(tcp_addr(&srv, 3));
    rogue
        .write_all(
            &Repr::Message {
                topic: b"t",
                payload: b"",
            }
            .to_vec(),
        )
        .unwrap();
    assert_eq!(common::read_until_closed(&mut rogue), b"");
    let t = srv.wait_totals("the rogue stream closed", |t| t.conns_open() == 1);
    assert_eq!(t.drops[DropReason::Malformed.index()], 3);

    sock.send_to(&good, udp_addr(&srv, 2)).unwrap();
    assert_eq!(sub.messages(1), [(b"t".to_vec(), 1, 0)]);
}

/// A burst that overflows the mesh ring and the retry queue to another shard:
/// the lost messages are counted (`mesh_full`) on the publishing shard, and
/// the subscribers over there are told, as `LAGGED`, exactly how many.
#[test]
fn messages_lost_between_shards_reach_the_subscribers_as_lagged() {
    const COUNT: u32 = 600;
    let frame_len = publish_frame("burst", &stamp(0, 0, 8)).len();
    let mut registry = ringport::plugin::Registry::new();
    registry
        .register(std::sync::Arc::new(ringport::protocols::RelayFactory::new(
            ringport::protocols::RelayConfig {
                // Room for two frames waiting for a full ring.
                mesh_retry_bytes: 2 * frame_len,
                ..Default::default()
            },
        )))
        .unwrap();
    let srv = server()
        .shards(2)
        .cpus(two_cpus())
        .config(EngineConfig {
            mesh_capacity: 4,
            ..EngineConfig::default()
        })
        .registry(registry)
        .listen(tcp("relay", 2))
        .start();
    let mut far = Client::subscriber(tcp_addr(&srv, 1), &["burst"]);
    let mut near = Client::subscriber(tcp_addr(&srv, 0), &["burst"]);
    // All the frames in one write: shard 0 handles hundreds of them in one
    // turn, far more than 4 ring slots and 2 queued frames to shard 1.
    let burst: Vec<u8> = (0..COUNT)
        .flat_map(|seq| publish_frame("burst", &stamp(0, seq, 8)))
        .collect();
    let mut publisher = Client::new(connect(tcp_addr(&srv, 0)));
    publisher.publish_and_sync(&burst);

    // The subscriber on the publishing shard gets everything, in order.
    let got = near.messages(COUNT as usize);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, m)| *m == (b"burst".to_vec(), 0, i as u32)));

    // The one across the mesh: messages in order plus LAGGED counts that add
    // up to exactly what was published.
    let (_, lagged) = far.until_accounted(b"burst", u64::from(COUNT));
    assert!(lagged > 0, "the burst never overflowed the mesh");
    far.ping();
    let totals = srv.totals();
    assert_eq!(totals.drops[DropReason::MeshFull.index()], lagged);
}

/// One publish fanned out to more subscribers than the outbound budget
/// holds: the fan-out is one plugin call, so exactly as many copies fit as
/// the budget allows and each further one closes the slowest reader (the
/// largest queue) with its queue dropped, counted as `outbound_budget`.
/// Checked against the shard's budget, then the process's.
#[test]
fn fan_out_beyond_the_outbound_budget_evicts_the_slowest_readers() {
    use ringport::engine::EngineDrop;
    const BUDGET: usize = 1 << 20;
    const SUBSCRIBERS: usize = 30;
    const PAYLOAD: usize = 60_000;
    let shard_budget = EngineConfig {
        max_outbound: 256 << 10,
        pause_outbound: 128 << 10,
        max_outbound_per_shard: BUDGET,
        ..EngineConfig::default()
    };
    let process_budget = EngineConfig {
        max_outbound_per_shard: 64 << 20,
        max_outbound_total: BUDGET,
        ..shard_budget.clone()
    };
    for config in [shard_budget, process_budget] {
        let srv = server()
            .shards(1)
            .config(config)
            .listen(tcp("relay", 1))
            .start();
        let mut subs: Vec<Client> = (0..SUBSCRIBERS)
            .map(|_| Client::subscriber(srv.addr(0), &["t"]))
            .collect();
        let mut publisher = Client::new(connect(srv.addr(0)));
        let payload = stamp(1, 0, PAYLOAD);
        publisher.publish_and_sync(&publish_frame("t", &payload));
        let frame = wire::HEADER_LEN + 1 + PAYLOAD;
        let fit = BUDGET / frame;
        let evicted = SUBSCRIBERS - fit;
        let t = srv.wait_totals("the evicted closed", |c| c.conns_closed == evicted as u64);
        assert_eq!(
            t.engine_drops[EngineDrop::OutboundBudget as usize],
            evicted as u64
        );
        assert_eq!(t.drops_total(), evicted as u64, "{:?}", t.drop_list());
        // Each subscriber either has the message or is closed with nothing.
        let (mut got, mut closed) = (0, 0);
        for s in &mut subs {
            let mut first = [0u8; 1];
            match retry_eintr(|| s.stream.read(&mut first)) {
                Ok(0) => closed += 1,
                Ok(_) => {
                    s.buf.push(first[0]);
                    assert_eq!(s.messages(1), [(b"t".to_vec(), 1, 0)]);
                    got += 1;
                }
                Err(e) => panic!("a subscriber read failed: {e}"),
            }
        }
        assert_eq!((got, closed), (fit, evicted));
        // The queues drained into the kernel: nothing is left counted.
        srv.wait_totals("the budget freed", |c| c.outbound_queued == 0);
        publisher.ping();
    }
}
