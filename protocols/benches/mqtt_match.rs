//! Cost of matching one MQTT topic against the subscription table
//! (`mqtt::trie::SubscriptionTable`), at 1,000, 10,000 and 100,000 filters,
//! next to a brute-force scan of the same filters with the reference
//! `mqtt::topic::matches`.
//!
//! The filters are a device fleet's: mostly exact topics
//! (`site/17/dev/4711/temp`), some per-device `+` and `#` filters, a few
//! fleet-wide ones (`site/+/dev/+/alarm`, `site/17/#`, `$SYS/#`). The topic
//! matched is the same at every size and matches the same 5 filters, so a
//! cost that grows with the table size would be the lookup's, not the
//! output's.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringport_protocols::mqtt::codec::QoS;
use ringport_protocols::mqtt::topic::matches;
use ringport_protocols::mqtt::trie::{SubEntry, SubscriptionTable};

const TOPIC: &str = "site/17/dev/4711/temp";
const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const METRICS: [&str; 4] = ["temp", "hum", "power", "state"];

/// `n` filters: the 5 that match [`TOPIC`], then random device filters that
/// do not (device 4711 is left out of the random ones).
fn filters(n: usize) -> Vec<String> {
    let mut v: Vec<String> = [
        TOPIC,
        "site/17/dev/4711/+",
        "site/17/#",
        "site/+/dev/+/temp",
        "site/17/+/4711/temp",
        "site/+/dev/+/alarm",
        "$SYS/#",
    ]
    .map(String::from)
    .to_vec();
    let mut rng = StdRng::seed_from_u64(1);
    while v.len() < n {
        let site = rng.gen_range(0..100);
        let mut dev = rng.gen_range(0..n as u32);
        if dev == 4711 {
            dev += 1;
        }
        let metric = METRICS[rng.gen_range(0..METRICS.len())];
        v.push(match rng.gen_range(0..100) {
            0..=89 => format!("site/{site}/dev/{dev}/{metric}"),
            90..=94 => format!("site/{site}/dev/{dev}/+"),
            95..=98 => format!("site/{site}/+/{dev}/{metric}"),
            _ => format!("site/{site}/dev/{dev}/#"),
        });
    }
    v
}

fn table_of(filters: &[String]) -> SubscriptionTable<u32> {
    let mut t = SubscriptionTable::new();
    for (i, f) in filters.iter().enumerate() {
        t.insert(f, i as u32, SubEntry::new(QoS::AtLeastOnce));
    }
    t
}

fn trie(c: &mut Criterion) {
    let mut g = c.benchmark_group("mqtt_match/trie");
    for n in SIZES {
        let f = filters(n);
        let mut t = table_of(&f);
        let mut out = Vec::with_capacity(64);
        t.matches(TOPIC, &mut out);
        assert_eq!(out.len(), 5, "{n} filters");
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                out.clear();
                t.matches(black_box(TOPIC), &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn brute_force(c: &mut Criterion) {
    let mut g = c.benchmark_group("mqtt_match/brute_force");
    // 100,000 reference matches take milliseconds: fewer samples.
    g.sample_size(20);
    for n in SIZES {
        let f = filters(n);
        let mut out: Vec<u32> = Vec::with_capacity(64);
        let scan = |out: &mut Vec<u32>| {
            for (i, filter) in f.iter().enumerate() {
                if matches(filter, black_box(TOPIC)) {
                    out.push(i as u32);
                }
            }
        };
        scan(&mut out);
        assert_eq!(out.len(), 5, "{n} filters");
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                out.clear();
                scan(&mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, trie, brute_force);
criterion_main!(benches);
