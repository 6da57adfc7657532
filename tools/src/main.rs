//! `ringport`: serve internal ports with the thread-per-core io_uring engine.
//!
//! `ringport` alone (or `cargo run --release`) serves the default listeners on
//! loopback with one shard per CPU; `ringport serve --help` lists the flags.

mod cli;
mod relay;
mod signals;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Parser;
use ringport_engine::cpus::{self, CpuList};
use ringport_engine::plan::{Plan, PlanRequest};
use ringport_engine::stats::ShardStats;
use ringport_engine::{Counters, EngineHandle};

use cli::{Cli, Command, ServeArgs};

fn main() {
    let cli = Cli::parse();
    let result = match cli
        .command
        .unwrap_or(Command::Serve(ServeArgs::default_serve()))
    {
        Command::Serve(args) => serve(args),
        Command::Relay { command } => relay::run(command),
    };
    if let Err(e) = result {
        eprintln!("ringport: error: {e:#}");
        std::process::exit(1);
    }
}

/// Builds the plan from flags: shards default to one per CPU in `--cpus`
/// (itself defaulting to every CPU this process may run on).
fn build_plan(args: &ServeArgs) -> Result<Plan> {
    let allowed = cpus::allowed_cpus().context("reading this process's CPU affinity")?;
    let cpu_list = match &args.cpus {
        Some(list) => {
            cpus::check_available(list, &allowed)?;
            list.clone()
        }
        None => CpuList::new(allowed.clone())?,
    };
    let shards = args.shards.unwrap_or(cpu_list.len());
    let listeners = if args.listen.is_empty() {
        cli::default_listeners()
    } else {
        args.listen.clone()
    };
    let plan = Plan::build(PlanRequest {
        listeners,
        shards,
        cpus: cpu_list.into_vec(),
        mode: args.mode,
        allow_idle_shards: args.allow_idle_shards,
    })?;
    Ok(plan)
}

fn serve(args: ServeArgs) -> Result<()> {
    let plan = build_plan(&args)?;
    let registry = ringport_protocols::builtins(&ringport_protocols::BuiltinSettings {
        max_frame: args.max_frame,
    });
    let config = args.engine_config();
    config.validate().map_err(|e| anyhow::anyhow!("{e}"))?;

    // Block SIGINT/SIGTERM before any shard thread exists, so that they all
    // inherit the mask and only the signal thread ever sees the signals.
    let signals = signals::Signals::block()?;
    let engine = EngineHandle::start(&plan, config, &registry)?;
    for n in engine.notices() {
        eprintln!("ringport: note: {n}");
    }
    println!(
        "ringport {} serving {} shard(s), mode {}, kernel {}",
        env!("CARGO_PKG_VERSION"),
        engine.shard_count(),
        plan.mode,
        engine.probe().kernel
    );
    print!("{}", plan.table());
    let idle = plan.idle_shards();
    if !idle.is_empty() {
        println!("idle shards (no ports): {idle:?}");
    }

    let stopper = engine.stopper();
    let sig = signals.spawn_waiter(move |_| stopper.stop());
    let interval = args.stats_interval.map(Duration::from_secs_f64);
    let started = Instant::now();
    let mut last = engine.stats();
    loop {
        let wait = interval.unwrap_or(Duration::from_secs(3600));
        match sig.recv_timeout(wait) {
            Ok(signal) => {
                eprintln!("ringport: {signal} received, stopping");
                break;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if interval.is_some() {
                    let now = engine.stats();
                    print_interval(&last, &now, wait);
                    last = now;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let finals = engine.join();
    print_totals(&finals, started.elapsed());
    Ok(())
}

fn print_interval(prev: &[ShardStats], now: &[ShardStats], over: Duration) {
    let secs = over.as_secs_f64().max(1e-9);
    for (p, n) in prev.iter().zip(now) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        let (pc, nc) = (&p.counters, &n.counters);
        println!(
            "stats {} msgs/s {:.0} in {:.0} B/s out {:.0} B/s",
            n,
            d(pc.msgs, nc.msgs) as f64 / secs,
            d(pc.bytes_in, nc.bytes_in) as f64 / secs,
            d(pc.bytes_out, nc.bytes_out) as f64 / secs,
        );
    }
}

fn print_totals(finals: &[ShardStats], elapsed: Duration) {
    let mut total = Counters::default();
    for s in finals {
        println!("final {s}");
        total.add(&s.counters);
    }
    let drops: Vec<String> = total
        .drop_list()
        .into_iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    println!(
        "total: msgs {} bytes_in {} bytes_out {} conns accepted {} closed {} drops {} [{}] uptime {:.1}s",
        total.msgs,
        total.bytes_in,
        total.bytes_out,
        total.conns_accepted,
        total.conns_closed,
        total.drops_total(),
        drops.join(" "),
        elapsed.as_secs_f64()
    );
}
