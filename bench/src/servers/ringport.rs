//! The ringport engine, started in this process.

use std::net::SocketAddr;

use anyhow::{anyhow, Result};
use ringport_engine::plan::{Mode, Plan, PlanRequest};
use ringport_engine::stats::EngineDrop;
use ringport_engine::{EngineConfig, EngineHandle, StartError};

use super::{Server, ServerSpec};
use crate::cpu::CpuSource;

struct Ringport {
    engine: EngineHandle,
    addr: SocketAddr,
    /// Consecutive ports served from `addr`'s (relay: one per shard).
    ports: usize,
}

/// A pseudo-random port in 20000..60000 (no `rand` dependency for this).
fn random_port(attempt: u32) -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let x = t ^ std::process::id().rotate_left(16) ^ attempt.wrapping_mul(0x9e37_79b9);
    20_000 + (x % 40_000) as u16
}

/// The listeners of `spec` on ports from `port`, how many ports, and how
/// shards share them: relay over TCP and UDP on one port per shard (range
/// mode, so a port picks a shard), else `protocol` on one port (reuseport
/// when there are several shards).
fn listeners(spec: &ServerSpec, port: u16) -> (Vec<String>, usize, Mode) {
    if spec.relay {
        let n = spec.shards.max(1);
        let last = port as usize + n - 1;
        let l = (["tcp", "udp"].iter())
            .map(|t| format!("relay@{t}:127.0.0.1:{port}-{last}"))
            .collect();
        return (l, n, Mode::Range);
    }
    let transport = if spec.udp { "udp" } else { "tcp" };
    let listener = format!("{}@{transport}:127.0.0.1:{port}", spec.protocol.as_str());
    let mode = if spec.shards > 1 {
        Mode::Reuseport
    } else {
        Mode::Range
    };
    (vec![listener], 1, mode)
}

pub(super) fn start(spec: &ServerSpec) -> Result<Box<dyn Server>> {
    let registry = ringport_protocols::builtins(&ringport_protocols::BuiltinSettings::default());
    let mut last = None;
    for attempt in 0..20 {
        let port = random_port(attempt);
        let (listeners, ports, mode) = listeners(spec, port);
        let plan = Plan::build(PlanRequest {
            listeners: listeners
                .iter()
                .map(|l| l.parse().map_err(|e| anyhow!("{e}")))
                .collect::<Result<_>>()?,
            shards: spec.shards,
            cpus: spec.cpus.clone(),
            mode,
            allow_idle_shards: false,
        })
        .map_err(|e| anyhow!("{e}"))?;
        match EngineHandle::start(&plan, EngineConfig::default(), &registry) {
            Ok(engine) => {
                return Ok(Box::new(Ringport {
                    engine,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    ports,
                }))
            }
            Err(e @ StartError::Bind { .. }) => last = Some(e),
            Err(e) => return Err(anyhow!("starting the ringport engine: {e}")),
        }
    }
    Err(anyhow!(
        "starting the ringport engine: no free port after 20 tries: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

impl Server for Ringport {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        (0..self.ports as u16)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], self.addr.port() + i)))
            .collect()
    }

    fn plugin_drops(&self) -> Option<u64> {
        Some(
            self.engine
                .stats()
                .iter()
                .map(|s| s.counters.drops.iter().sum::<u64>())
                .sum(),
        )
    }

    fn cpu(&self) -> CpuSource {
        // Thread names are cut at 15 bytes: "ringport-shard-".
        CpuSource::ThreadsNamed(vec!["ringport-shard".into()])
    }

    fn datagrams_received(&self) -> Option<u64> {
        Some(
            self.engine
                .stats()
                .iter()
                .map(|s| s.counters.datagrams_in)
                .sum(),
        )
    }

    fn kernel_drops(&self) -> Option<u64> {
        Some(
            self.engine
                .stats()
                .iter()
                .map(|s| s.counters.engine_drops[EngineDrop::KernelRxQueue as usize])
                .sum(),
        )
    }

    fn stop(self: Box<Self>) {
        self.engine.shutdown();
    }
}
