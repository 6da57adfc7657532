//! What an idle connected MQTT client costs the broker in heap: 10,000
//! clients (MQTT 3.1.1, clean session, 60 s keep-alive, ids like the
//! `mqtt-idle` bench's) connect to one broker instance, which then runs its
//! once-a-second sweep (keep-alive, the `/status` snapshot); the heap the
//! broker holds then, less what it held before, over the clients, must stay
//! under [`BOUND`].
//!
//! The broker runs with no engine, on a context that discards what it
//! writes, so the figure is the broker's own: its connection and session
//! state, its maps and the status snapshot. The engine's per-stream slot
//! comes on top (BENCHMARKS.md, "ringport's broker against Mosquitto 2.0",
//! has both).
//!
//! Heap is counted the way glibc's malloc spends it: a block of `n` bytes
//! takes `max(32, round_up(n + 8, 16))`, its size and header. This file
//! holds a single test so that no other test thread allocates while the
//! heap is counted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[path = "common/holding.rs"]
mod holding;

use ringport_plugin::{
    ConnId, Context, DropReason, ListenerId, MeshError, MeshMessage, Plugin, ShardId, SocketId,
    StreamInfo, WriteError,
};
use ringport_protocols::mqtt::broker::{MqttConfig, MqttFactory, TICK_TIMER};
use ringport_protocols::mqtt::codec::{self, Connect, ConnectProps, Packet, Version};

/// Clients connected.
const CLIENTS: usize = 10_000;
/// Most heap bytes per idle client the broker may hold: 353 measured, as
/// the sum of its parts (blocks as glibc spends them; tables of 16,384
/// buckets for 10,000 entries, a bucket being the entry and a control
/// byte): the connection (`Conn`, 56 B: a 64 B block, and a 16 B entry
/// in the connection table, 28 B), the session (`Session`, 104 B: a 112 B
/// block, and 28 B of its table), the one entry of the client id in the
/// id map that serves as directory and session index (40 B, 67 B), the id
/// itself (an `Arc<str>` of 14 characters, a 48 B block) and the status
/// snapshot (6 B: 1,000 entries of 64 B). The 7 B of slack absorb
/// nothing that would grow a struct to its next block size (+16 B).
const BOUND: i64 = 360;

/// A context for shard 0 of 1 that accepts and forgets every write, and
/// hands messages to this shard back to the test.
struct Discard {
    now: Instant,
    mesh: Vec<MeshMessage>,
}

impl Context for Discard {
    fn shard(&self) -> ShardId {
        0
    }
    fn shard_count(&self) -> usize {
        1
    }
    fn now(&self) -> Instant {
        self.now
    }
    fn write_parts(&mut self, _: ConnId, _: &[&[u8]]) -> Result<(), WriteError> {
        Ok(())
    }
    fn close(&mut self, _: ConnId) {}
    fn send_datagram(&mut self, _: SocketId, _: SocketAddr, _: &[&[u8]]) -> Result<(), WriteError> {
        Err(WriteError::UnknownTarget)
    }
    fn send_to_shard(&mut self, _: ShardId, msg: MeshMessage) -> Result<(), MeshError> {
        self.mesh.push(msg);
        Ok(())
    }
    fn broadcast(&mut self, _: MeshMessage) -> Result<usize, MeshError> {
        Ok(0)
    }
    fn set_timer(&mut self, _: Duration, _: u64) {}
    fn record_messages(&mut self, _: u64) {}
    fn record_drop(&mut self, _: DropReason) {}
}

#[test]
fn an_idle_client_holds_little_broker_heap() {
    let factory = MqttFactory::new(MqttConfig {
        allow_anonymous: true,
        ..MqttConfig::default()
    });
    let mut broker = factory.instance(0, 1);
    let mut ctx = Discard {
        now: Instant::now(),
        mesh: Vec::with_capacity(16),
    };
    let mut connects: Vec<Vec<u8>> = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let id = format!("rb5e1f2a-i{i}");
        let mut bytes = Vec::new();
        codec::encode(
            &Packet::Connect(Connect {
                version: Version::V311,
                clean_start: true,
                keep_alive: 60,
                client_id: &id,
                will: None,
                username: None,
                password: None,
                props: ConnectProps::default(),
            }),
            Version::V311,
            &mut bytes,
        )
        .expect("encode CONNECT");
        connects.push(bytes);
    }
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("address");
    let local: SocketAddr = "127.0.0.1:1883".parse().expect("address");
    // One client first, so that the broker's first-use allocations
    // (timers, scratch buffers) are not counted against the rest.
    let open = |broker: &mut dyn Plugin, ctx: &mut Discard, i: usize| {
        let conn = ConnId::from_raw(i as u64 + 1);
        let info = StreamInfo {
            conn,
            listener: ListenerId(0),
            peer,
            local,
        };
        broker.handle_open(ctx, &info);
        let n = broker
            .handle_data(ctx, conn, &connects[i])
            .expect("CONNECT taken");
        assert_eq!(n, connects[i].len());
        while let Some(m) = ctx.mesh.pop() {
            broker.handle_message(ctx, 0, m);
        }
    };
    open(&mut broker, &mut ctx, 0);
    let now = ctx.now;
    broker.handle_timer(&mut ctx, now, TICK_TIMER);
    let before = holding::held();
    for i in 1..CLIENTS {
        open(&mut broker, &mut ctx, i);
    }
    ctx.now += Duration::from_secs(2);
    let now = ctx.now;
    broker.handle_timer(&mut ctx, now, TICK_TIMER);
    let after = holding::held();

    let stats = factory.stats();
    assert_eq!(stats.total(|s| s.connected()), CLIENTS as u64);
    assert_eq!(stats.total(|s| s.connects()), CLIENTS as u64);
    assert_eq!(
        stats.status().len(),
        MqttConfig::default().status_max_clients
    );
    let per_client = (after - before) / (CLIENTS as i64 - 1);
    println!("broker heap per idle client: {per_client} B");
    assert!(
        per_client <= BOUND,
        "an idle client holds {per_client} B of broker heap (bound {BOUND} B)"
    );
}
