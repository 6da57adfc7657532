//! Micro-benchmarks of the hot pieces the load generator and the engine share:
//! giving a provided buffer back to the kernel, checking a reply, and the
//! per-reply bookkeeping (sequence window, latency histogram).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use io_uring::IoUring;
use ringport_bench::latency::{Recorder, SeqWindow};
use ringport_bench::wire::{self, Protocol, REQUEST_FLAGS};
use ringport_engine::sys::bufring::BufRing;

fn bufring_recycle(c: &mut Criterion) {
    let ring = IoUring::new(8).expect("io_uring available");
    let mut bufs = BufRing::new(&ring.submitter(), 0, 1024, 2048).expect("buffer ring");
    let mut g = c.benchmark_group("bufring");
    g.throughput(Throughput::Elements(1));
    let mut bid = 0u16;
    g.bench_function("recycle", |b| {
        b.iter(|| {
            // No receive is armed, so the kernel never reads these entries:
            // this measures the entry write and the tail publication alone.
            bufs.recycle(black_box(bid));
            bid = (bid + 1) & 1023;
        })
    });
    // An adaptive ring's turn: 16 buffers come back, then the hot set is
    // topped up and resized.
    let mut hot = BufRing::adaptive(&ring.submitter(), 1, 1024, 2048).expect("buffer ring");
    g.throughput(Throughput::Elements(16));
    g.bench_function("adaptive_turn_of_16", |b| {
        b.iter(|| {
            for i in 0..16u16 {
                hot.recycle(black_box(i));
            }
            hot.refill();
        })
    });
    g.finish();
    drop(ring);
}

fn reply_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("reply");
    g.throughput(Throughput::Elements(1));
    let mut m = Vec::new();
    wire::encode(&mut m, 12345, REQUEST_FLAGS, 64);
    g.bench_function("verify_64B", |b| {
        b.iter(|| wire::verify(Protocol::Echo, black_box(&m), 12345, 64))
    });
    let mut w = SeqWindow::new(1024);
    let mut rec = Recorder::new(0, u64::MAX);
    let mut t = 0u64;
    g.bench_function("send_reply_record", |b| {
        b.iter(|| {
            t += 1000;
            let seq = w.on_send(t, t);
            let r = w.on_reply(black_box(seq));
            rec.record(t, t, t + 25_000);
            r
        })
    });
    g.finish();
}

criterion_group!(benches, bufring_recycle, reply_path);
criterion_main!(benches);
