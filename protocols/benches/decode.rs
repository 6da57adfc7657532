//! Cost of sockperf frame handling over a buffer of many frames.
//!
//! The context is a null sink that only adds up lengths, so the numbers are
//! the plugin's: framing, flag checks and building each pong header.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringport_plugin::{
    ConnId, Context, DatagramInfo, DropReason, ListenerId, MeshError, MeshMessage, Plugin, ShardId,
    SocketId, WriteError,
};
use ringport_protocols::sockperf::{Flags, Repr, HEADER_LEN};
use ringport_protocols::Sockperf;

/// A context that accepts everything and keeps only byte and message counts.
struct NullContext {
    now: Instant,
    bytes: usize,
    messages: u64,
}

impl Context for NullContext {
    fn shard(&self) -> ShardId {
        0
    }
    fn shard_count(&self) -> usize {
        1
    }
    fn now(&self) -> Instant {
        self.now
    }
    fn write(&mut self, _conn: ConnId, data: &[u8]) -> Result<(), WriteError> {
        self.bytes += data.len();
        Ok(())
    }
    fn write_parts(&mut self, _conn: ConnId, parts: &[&[u8]]) -> Result<(), WriteError> {
        self.bytes += parts.iter().map(|p| p.len()).sum::<usize>();
        Ok(())
    }
    fn close(&mut self, _conn: ConnId) {}
    fn send_datagram(
        &mut self,
        _via: SocketId,
        _to: SocketAddr,
        parts: &[&[u8]],
    ) -> Result<(), WriteError> {
        self.bytes += parts.iter().map(|p| p.len()).sum::<usize>();
        Ok(())
    }
    fn send_to_shard(&mut self, _shard: ShardId, msg: MeshMessage) -> Result<(), MeshError> {
        Err(MeshError::Unavailable(msg))
    }
    fn broadcast(&mut self, msg: MeshMessage) -> Result<usize, MeshError> {
        Err(MeshError::Unavailable(msg))
    }
    fn set_timer(&mut self, _after: Duration, _token: u64) {}
    fn record_messages(&mut self, n: u64) {
        self.messages += n;
    }
    fn record_drop(&mut self, _reason: DropReason) {}
}

/// `count` frames of `size` bytes each (header included).
fn frames(count: usize, size: usize, flags: Flags) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * size);
    for seq in 0..count as u64 {
        let repr = Repr {
            sequence: seq,
            flags,
            total_len: size as u32,
        };
        out.extend_from_slice(&repr.to_header());
        out.resize(out.len() + size - HEADER_LEN, 0xab);
    }
    out
}

fn stream(c: &mut Criterion) {
    let ping = Flags::CLIENT.with(Flags::PONG_REQUEST);
    let mut group = c.benchmark_group("sockperf_stream");
    for (name, flags, size) in [
        ("pong_14", ping, 14),
        ("pong_64", ping, 64),
        ("pong_1024", ping, 1024),
        ("silent_64", Flags::CLIENT, 64),
    ] {
        let buf = frames(1000, size, flags);
        group.throughput(Throughput::Elements(1000));
        group.bench_with_input(BenchmarkId::from_parameter(name), &buf, |b, buf| {
            let mut plugin = Sockperf::default();
            let mut ctx = NullContext {
                now: Instant::now(),
                bytes: 0,
                messages: 0,
            };
            let conn = ConnId::from_raw(1);
            b.iter(|| {
                let consumed = plugin.handle_data(&mut ctx, conn, black_box(buf));
                black_box(consumed)
            });
            assert!(ctx.messages > 0);
        });
    }
    group.finish();
}

fn datagram(c: &mut Criterion) {
    let ping = Flags::CLIENT.with(Flags::PONG_REQUEST);
    let buf = frames(1, 64, ping);
    let from = DatagramInfo {
        socket: SocketId(0),
        listener: ListenerId(0),
        peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
        local: SocketAddr::from(([127, 0, 0, 1], 11111)),
    };
    let mut plugin = Sockperf::default();
    let mut ctx = NullContext {
        now: Instant::now(),
        bytes: 0,
        messages: 0,
    };
    c.bench_function("sockperf_datagram/pong_64", |b| {
        b.iter(|| black_box(plugin.handle_datagram(&mut ctx, &from, black_box(&buf))))
    });
}

criterion_group!(benches, stream, datagram);
criterion_main!(benches);
