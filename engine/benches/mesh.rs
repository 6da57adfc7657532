//! Cost per message of a cross-shard ring handoff between two pinned threads.
//!
//! The producer (first allowed CPU) streams 48-byte envelopes (a tag and a
//! `Bytes` payload, as the mesh carries) to the consumer (last allowed CPU).
//! `single`: each message is published on its own and taken with one call;
//! `batch64`: the producer publishes every 64 messages (as a shard publishes
//! once per turn) and the consumer takes up to 64 per call. `mesh_*` is ringport's SPSC ring;
//! `arrayqueue_*` is `crossbeam_queue::ArrayQueue` moving the same envelopes,
//! the queue the design first named, for comparison. Throughput is messages
//! through the pair per second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use ringport_engine::mesh::{Envelope, Mesh};
use ringport_plugin::{Bytes, MeshMessage};

const N: u64 = 1_000_000;

fn pin(cpu: usize) {
    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
}

/// The CPU pair, read once: after the first pin, this thread's own affinity
/// is a single CPU and would hide the others.
fn cpus() -> (usize, usize) {
    static PAIR: OnceLock<(usize, usize)> = OnceLock::new();
    *PAIR.get_or_init(|| {
        let cpus = ringport_engine::cpus::allowed_cpus().unwrap_or_else(|_| vec![0]);
        (cpus[0], *cpus.last().unwrap_or(&0))
    })
}

fn envelope(tag: u64, payload: &Bytes) -> Envelope {
    Envelope {
        plugin: 0,
        sent: Instant::now(),
        msg: MeshMessage {
            tag,
            payload: payload.clone(),
        },
    }
}

/// Moves N envelopes through a mesh pair and returns the elapsed time.
fn mesh_handoff(batch: usize) -> Duration {
    let (c0, c1) = cpus();
    let (_mesh, mut ports) = Mesh::new(2, 1024);
    let (_, mut inbox) = ports.pop().expect("shard 1");
    let (mut outbox, _) = ports.pop().expect("shard 0");
    let go = Arc::new(AtomicBool::new(false));
    let consumer = {
        let go = go.clone();
        std::thread::spawn(move || {
            pin(c1);
            while !go.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let mut got = 0u64;
            while got < N {
                let k = inbox.drain(batch, |_, env| {
                    std::hint::black_box(&env);
                });
                if k == 0 {
                    std::hint::spin_loop();
                }
                got += k as u64;
            }
        })
    };
    pin(c0);
    let payload = Bytes::from_static(b"0123456789abcdef");
    go.store(true, Ordering::Release);
    let start = Instant::now();
    for tag in 0..N {
        let mut env = envelope(tag, &payload);
        while let Err(back) = outbox.try_send(1, env) {
            outbox.wakes_due(&[1], |_| {});
            env = back;
            std::hint::spin_loop();
        }
        if (tag + 1) % batch as u64 == 0 {
            outbox.wakes_due(&[1], |_| {});
        }
    }
    outbox.wakes_due(&[1], |_| {});
    consumer.join().expect("consumer");
    start.elapsed()
}

/// The same through a crossbeam ArrayQueue.
fn arrayqueue_handoff(batch: usize) -> Duration {
    let (c0, c1) = cpus();
    let q = Arc::new(ArrayQueue::<Envelope>::new(1024));
    let go = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (q, go) = (q.clone(), go.clone());
        std::thread::spawn(move || {
            pin(c1);
            while !go.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let mut got = 0u64;
            while got < N {
                let mut k = 0;
                while k < batch {
                    match q.pop() {
                        Some(env) => {
                            std::hint::black_box(&env);
                            k += 1;
                        }
                        None => break,
                    }
                }
                if k == 0 {
                    std::hint::spin_loop();
                }
                got += k as u64;
            }
        })
    };
    pin(c0);
    let payload = Bytes::from_static(b"0123456789abcdef");
    go.store(true, Ordering::Release);
    let start = Instant::now();
    for tag in 0..N {
        let mut env = envelope(tag, &payload);
        while let Err(back) = q.push(env) {
            env = back;
            std::hint::spin_loop();
        }
    }
    consumer.join().expect("consumer");
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("mesh_handoff");
    group.throughput(Throughput::Elements(N));
    group.sample_size(10);
    for (name, batch) in [("single", 1), ("batch64", 64)] {
        group.bench_function(format!("mesh_{name}"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| mesh_handoff(batch)).sum())
        });
        group.bench_function(format!("arrayqueue_{name}"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| arrayqueue_handoff(batch)).sum())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
