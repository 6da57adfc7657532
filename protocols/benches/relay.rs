//! Cost of the relay codec: framing and parsing a stream of `PUBLISH`
//! frames, checking a datagram, and building what goes out (a `MESSAGE`
//! header per subscriber, the encoded frame handed to other shards).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringport_protocols::relay::wire::{self, FrameType, Framing, Packet, Repr};
use ringport_protocols::relay::DEFAULT_MAX_PAYLOAD;

const TOPIC: &[u8] = b"plant/7/line/3/temperature";

/// `count` `PUBLISH` frames with `payload` bytes each, back to back.
fn stream_of(count: usize, payload: usize) -> Vec<u8> {
    let body = vec![0x5a; payload];
    let frame = Repr::Publish {
        topic: TOPIC,
        payload: &body,
    }
    .to_vec();
    frame.repeat(count)
}

/// Frames and parses every frame of `buf`; returns the payload bytes seen.
fn parse_stream(buf: &[u8]) -> usize {
    let mut at = 0;
    let mut bytes = 0;
    while let Framing::Frame(_, len) = wire::next_frame(&buf[at..], DEFAULT_MAX_PAYLOAD) {
        let frame = &buf[at..at + len];
        if let Ok(Repr::Publish { payload, .. }) =
            Repr::parse(&Packet::new_unchecked(frame), DEFAULT_MAX_PAYLOAD)
        {
            bytes += payload.len();
        }
        at += len;
    }
    bytes
}

fn stream(c: &mut Criterion) {
    let mut group = c.benchmark_group("relay_stream");
    for payload in [16, 256, 4096] {
        let buf = stream_of(1000, payload);
        assert_eq!(parse_stream(&buf), 1000 * payload);
        group.throughput(Throughput::Elements(1000));
        group.bench_with_input(BenchmarkId::new("publish", payload), &buf, |b, buf| {
            b.iter(|| black_box(parse_stream(black_box(buf))))
        });
    }
    group.finish();
}

fn datagram(c: &mut Criterion) {
    let buf = stream_of(1, 64);
    c.bench_function("relay_datagram/publish_64", |b| {
        b.iter(|| black_box(wire::parse_datagram(black_box(&buf), DEFAULT_MAX_PAYLOAD)))
    });
}

fn emit(c: &mut Criterion) {
    let payload = vec![0x5a; 64];
    c.bench_function("relay_emit/message_header", |b| {
        b.iter(|| {
            black_box(wire::header(
                FrameType::Message,
                black_box(TOPIC).len(),
                black_box(&payload).len(),
            ))
        })
    });
    c.bench_function("relay_emit/lagged", |b| {
        b.iter(|| black_box(wire::lagged_frame(black_box(300))))
    });
    c.bench_function("relay_emit/publish_64_to_vec", |b| {
        b.iter(|| {
            black_box(
                Repr::Publish {
                    topic: black_box(TOPIC),
                    payload: black_box(&payload),
                }
                .to_vec(),
            )
        })
    });
}

criterion_group!(benches, stream, datagram, emit);
criterion_main!(benches);
