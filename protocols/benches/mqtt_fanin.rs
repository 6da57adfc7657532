//! The MQTT broker's own work per QoS 0 publication in the `mqtt-fanin`
//! shape: 100 publishers and one subscriber on one shard, every PUBLISH on
//! `bench/0` with a 64-byte payload, the subscriber subscribed to
//! `bench/0` at QoS 0 (ringport-bench's defaults for `mqtt-fanin`).
//!
//! A plain program, not criterion: the number that matters is the
//! instruction count of [`publish_loop`] under callgrind, which a shared
//! noisy machine does not move (BENCHMARKS.md, "The broker's own
//! instructions per publication"):
//!
//! ```text
//! cargo bench -p ringport-protocols --bench mqtt_fanin --no-run
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*publish_loop*' \
//!     target/release/deps/mqtt_fanin-HASH --publications 20000
//! ```
//!
//! The instructions callgrind reports, over `--publications`, are the
//! broker's per publication: `Plugin::handle_data` with one PUBLISH, the
//! delivery written through a context that only counts bytes (the engine's
//! side is not measured). The program also prints heap allocations per
//! publication (a counting allocator) and the wall time, which is only
//! indicative. Every delivery is checked: the subscriber must get exactly
//! one PUBLISH per publication, byte for byte what a 3.1.1 client expects.
//!
//! `--version 5` runs the same with MQTT 5 clients.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringport_plugin::{
    ConnId, Context, DropReason, ListenerId, MeshError, MeshMessage, Plugin, ShardId, SocketId,
    StreamInfo, WriteError,
};
use ringport_protocols::mqtt::broker::{Mqtt, MqttConfig, MqttFactory};
use ringport_protocols::mqtt::codec::{
    self, Connect, ConnectProps, Packet, Publish, PublishProps, QoS, SubOptions, Subscribe, Version,
};

const PUBLISHERS: u64 = 100;
const TOPIC: &str = "bench/0";
const PAYLOAD: usize = 64;
/// The subscriber's stream id; publishers are 1..=PUBLISHERS.
const SUBSCRIBER: u64 = 1000;

/// Counts heap allocations (the measured loop should make none).
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the
// counter is a relaxed atomic, which allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`, and `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A context that takes every write and counts what reached the
/// subscriber; the clock stands still (as within one engine turn).
struct CountingContext {
    now: Instant,
    /// Bytes written to the subscriber, and in how many writes.
    to_subscriber: (u64, u64),
    /// The last write to the subscriber (checked once at the end).
    last: Vec<u8>,
    keep_last: bool,
    /// Bytes written to anyone else (CONNACKs, SUBACKs).
    to_others: u64,
}

impl Context for CountingContext {
    fn shard(&self) -> ShardId {
        0
    }
    fn shard_count(&self) -> usize {
        1
    }
    fn now(&self) -> Instant {
        self.now
    }
    fn write_parts(&mut self, conn: ConnId, parts: &[&[u8]]) -> Result<(), WriteError> {
        let n: usize = parts.iter().map(|p| p.len()).sum();
        if conn == ConnId::from_raw(SUBSCRIBER) {
            self.to_subscriber.0 += n as u64;
            self.to_subscriber.1 += 1;
            if self.keep_last {
                self.last.clear();
                for p in parts {
                    self.last.extend_from_slice(p);
                }
            }
        } else {
            self.to_others += n as u64;
        }
        Ok(())
    }
    fn close(&mut self, conn: ConnId) {
        panic!("the broker closed {conn:?}");
    }
    fn send_datagram(
        &mut self,
        _via: SocketId,
        _to: SocketAddr,
        _parts: &[&[u8]],
    ) -> Result<(), WriteError> {
        Err(WriteError::UnknownTarget)
    }
    fn send_to_shard(&mut self, _shard: ShardId, msg: MeshMessage) -> Result<(), MeshError> {
        Err(MeshError::Full(msg))
    }
    fn broadcast(&mut self, msg: MeshMessage) -> Result<usize, MeshError> {
        Err(MeshError::Full(msg))
    }
    fn set_timer(&mut self, _after: Duration, _token: u64) {}
    fn record_messages(&mut self, _n: u64) {}
    fn record_drop(&mut self, reason: DropReason) {
        panic!("the broker dropped a message: {reason:?}");
    }
}

fn encode(p: &Packet<'_>, v: Version) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode(p, v, &mut out).expect("encodes");
    out
}

fn open(broker: &mut Mqtt, ctx: &mut CountingContext, raw: u64, id: &str, v: Version) -> ConnId {
    let conn = ConnId::from_raw(raw);
    let info = StreamInfo {
        conn,
        listener: ListenerId(0),
        peer: SocketAddr::from(([127, 0, 0, 1], 40000 + raw as u16)),
        local: SocketAddr::from(([127, 0, 0, 1], 1883)),
    };
    broker.handle_open(ctx, &info);
    let connect = encode(
        &Packet::Connect(Connect {
            version: v,
            clean_start: true,
            keep_alive: 60,
            client_id: id,
            will: None,
            username: None,
            password: None,
            props: ConnectProps::default(),
        }),
        v,
    );
    let n = broker.handle_data(ctx, conn, &connect).expect("takes");
    assert_eq!(n, connect.len(), "CONNECT consumed");
    conn
}

/// Feeds `n` PUBLISH packets, round robin over the publishers.
#[inline(never)]
fn publish_loop(
    broker: &mut Mqtt,
    ctx: &mut CountingContext,
    publishers: &[ConnId],
    packet: &[u8],
    n: u64,
) {
    for i in 0..n {
        let conn = publishers[(i % PUBLISHERS) as usize];
        let taken = broker.handle_data(ctx, conn, black_box(packet));
        debug_assert_eq!(taken, Ok(packet.len()));
        black_box(taken).ok();
    }
}

fn main() {
    let mut publications: u64 = 100_000;
    let mut version = Version::V311;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--publications" => {
                publications = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--publications N");
            }
            "--version" => {
                version = match args.next().as_deref() {
                    Some("3.1.1") | Some("3") => Version::V311,
                    Some("5") => Version::V5,
                    _ => panic!("--version 3.1.1|5"),
                };
            }
            // `cargo bench` passes `--bench`.
            "--bench" => {}
            other => panic!("unknown argument {other} (--publications N, --version 3.1.1|5)"),
        }
    }
    let factory = MqttFactory::new(MqttConfig {
        allow_anonymous: true,
        ..MqttConfig::default()
    });
    let mut broker = factory.instance(0, 1);
    let mut ctx = CountingContext {
        now: Instant::now(),
        to_subscriber: (0, 0),
        last: Vec::new(),
        keep_last: false,
        to_others: 0,
    };
    let sub = open(&mut broker, &mut ctx, SUBSCRIBER, "sub", version);
    let subscribe = encode(
        &Packet::Subscribe(Subscribe {
            packet_id: 1,
            subscription_id: None,
            user_properties: Default::default(),
            filters: vec![(TOPIC, SubOptions::qos(QoS::AtMostOnce))],
        }),
        version,
    );
    broker
        .handle_data(&mut ctx, sub, &subscribe)
        .expect("takes");
    let publishers: Vec<ConnId> = (1..=PUBLISHERS)
        .map(|i| open(&mut broker, &mut ctx, i, &format!("pub-{i}"), version))
        .collect();
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| i as u8).collect();
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: TOPIC,
        packet_id: 0,
        props: PublishProps::default(),
        payload: &payload,
    });
    let packet = encode(&publish, version);
    // What the subscriber must get: the same PUBLISH (no properties added).
    let expected = packet.clone();
    ctx.to_subscriber = (0, 0);

    // Warm up (first-use allocations: the subscriber's queue, scratch).
    publish_loop(&mut broker, &mut ctx, &publishers, &packet, 1000);
    ctx.to_subscriber = (0, 0);

    let allocs = ALLOCS.load(Ordering::Relaxed);
    let start = Instant::now();
    publish_loop(&mut broker, &mut ctx, &publishers, &packet, publications);
    let took = start.elapsed();
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs;

    assert_eq!(
        ctx.to_subscriber,
        (publications * expected.len() as u64, publications),
        "one PUBLISH per publication reached the subscriber"
    );
    ctx.keep_last = true;
    publish_loop(&mut broker, &mut ctx, &publishers, &packet, 1);
    assert_eq!(ctx.last, expected, "the delivery's bytes");
    println!(
        "mqtt-fanin ({}): {publications} publications, {} B each delivered; \
         {:.2} heap allocations per publication; {:.0} ns per publication (wall, indicative)",
        if version == Version::V5 { "5" } else { "3.1.1" },
        expected.len(),
        allocs as f64 / publications.max(1) as f64,
        took.as_nanos() as f64 / publications.max(1) as f64,
    );
}
