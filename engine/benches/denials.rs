//! Cost of counting one event from a new source when the per-source table
//! is full (65,536 sources, all within their windows): what a spoofed-source
//! flood makes every datagram pay in the UDP source window, the log gate
//! and the denial alarm.
//!
//! `windowed` is the engine's [`SourceWindows`] (window starts kept in
//! order, expired sources found at the front); `scan_baseline` is the
//! previous design, kept here as the reference: a full-table `retain` on
//! every untracked source.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringport_engine::alerts::SourceWindows;

const TRACKED: u32 = 65_536;
const WINDOW: Duration = Duration::from_secs(60);

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

/// The old table: a scan of every source for each one it cannot track.
struct Scan {
    counts: HashMap<IpAddr, (Instant, u64)>,
}

impl Scan {
    fn hit(&mut self, ip: IpAddr, now: Instant) -> Option<u64> {
        if !self.counts.contains_key(&ip) && self.counts.len() >= TRACKED as usize {
            self.counts
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
            if self.counts.len() >= TRACKED as usize {
                return None;
            }
        }
        let e = self.counts.entry(ip).or_insert((now, 0));
        e.1 += 1;
        Some(e.1)
    }
}

fn new_source_on_a_full_table(c: &mut Criterion) {
    let mut group = c.benchmark_group("denials_full_table");
    group.throughput(Throughput::Elements(1));
    let t0 = Instant::now();
    let now = t0 + Duration::from_secs(1);

    let mut w = SourceWindows::new(WINDOW, TRACKED as usize);
    for i in 0..TRACKED {
        w.hit(ip(i), t0);
    }
    let mut next = TRACKED;
    group.bench_function("windowed", |b| {
        b.iter(|| {
            next = next.wrapping_add(1);
            black_box(w.hit(ip(next), now))
        })
    });

    let mut s = Scan {
        counts: HashMap::new(),
    };
    for i in 0..TRACKED {
        s.hit(ip(i), t0);
    }
    let mut next = TRACKED;
    group.sample_size(10);
    group.bench_function("scan_baseline", |b| {
        b.iter(|| {
            next = next.wrapping_add(1);
            black_box(s.hit(ip(next), now))
        })
    });
    group.finish();
}

criterion_group!(benches, new_source_on_a_full_table);
criterion_main!(benches);
