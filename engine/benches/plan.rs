//! Cost of [`Plan::owner`], the port-to-shard lookup of range mode.
//!
//! A lookup is two divisions and a few comparisons, whatever the range size
//! or shard count; the cases below check that it stays so, from a small range
//! split evenly to every port split unevenly over many shards.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringport_engine::plan::{Mode, Plan, PlanRequest};
use ringport_plugin::ListenerId;

fn plan(listener: &str, shards: usize) -> Plan {
    Plan::build(PlanRequest {
        listeners: vec![listener.parse().expect("valid listener spec")],
        shards,
        cpus: vec![0],
        mode: Mode::Range,
        allow_idle_shards: false,
    })
    .expect("valid plan")
}

fn owner(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan_owner");
    for (name, listener, shards) in [
        ("64_ports_4_shards", "echo@tcp:127.0.0.1:9000-9063", 4),
        ("10_ports_4_shards", "echo@tcp:127.0.0.1:9000-9009", 4),
        ("65535_ports_61_shards", "echo@udp:127.0.0.1:1-65535", 61),
    ] {
        let plan = plan(listener, shards);
        let ports = plan.listeners[0].ports;
        group.throughput(Throughput::Elements(ports.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &plan, |b, plan| {
            // One lookup per port of the range, so throughput reads per lookup.
            b.iter(|| {
                let mut sum = 0usize;
                for port in ports.iter() {
                    sum += plan
                        .owner(black_box(ListenerId(0)), black_box(port))
                        .unwrap_or(0);
                }
                sum
            })
        });
    }
    group.finish();
}

criterion_group!(benches, owner);
criterion_main!(benches);
