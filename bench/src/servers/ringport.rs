//! The ringport engine, started in this process.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use ringport_engine::operations::{Limits, ListenerOps, Operations};
use ringport_engine::plan::{Mode, Plan, PlanRequest};
use ringport_engine::stats::EngineDrop;
use ringport_engine::tls::{ListenerTls, TlsSettings};
use ringport_engine::{BackendChoice, EngineConfig, EngineHandle, StartError};

use ringport_protocols::mqtt::broker::{MqttConfig, MqttFactory};

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
    if spec.mqtt {
        let mode = if spec.shards > 1 {
            Mode::Reuseport
        } else {
            Mode::Range
        };
        return (vec![format!("mqtt@tcp:127.0.0.1:{port}")], 1, mode);
    }
    if spec.relay {
        let n = spec.shards.max(1);
        let last = port as usize + n - 1;
        let l = (["tcp", "udp"].iter())
            .map(|t| format!("relay@{t}:127.0.0.1:{port}-{last}"))
            .collect();
        return (l, n, Mode::Range);
    }
    let transport = match (spec.udp, spec.tls.is_some()) {
        (true, _) => "udp",
        (false, true) => "tls",
        (false, false) => "tcp",
    };
    let listener = format!("{}@{transport}:127.0.0.1:{port}", spec.protocol.as_str());
    let mode = if spec.shards > 1 {
        Mode::Reuseport
    } else {
        Mode::Range
    };
    (vec![listener], 1, mode)
}

/// The engine's settings and the listener's for `spec`: the defaults, or
/// for TLS the run's certificate with resumption on, and the guards that
/// would refuse a benchmark's connection rate from one source lifted (the
/// per-source handshake cap and connection rate, the per-shard handshake cap).
/// MQTT: the per-source connection cap and rate lifted too (mqtt-idle's
/// 10,000 clients all come from 127.0.0.1; Mosquitto has no such guard).
fn settings(spec: &ServerSpec, backend: BackendChoice) -> Result<(EngineConfig, Operations)> {
    let Some(files) = &spec.tls else {
        let config = EngineConfig {
            backend,
            batch_delay_us: spec.batch_delay_us,
            ..EngineConfig::default()
        };
        if spec.mqtt {
            let ops = Operations {
                listeners: vec![ListenerOps {
                    limits: Limits {
                        conn_rate: None,
                        max_conns_per_source: 0,
                        ..Limits::default()
                    },
                    ..ListenerOps::default()
                }],
                ..Operations::default()
            };
            return Ok((config, ops));
        }
        return Ok((config, Operations::default()));
    };
    let mut tls = TlsSettings::new(&files.cert_pem, &files.key_pem);
    tls.max_handshakes_per_source = 0;
    tls.resumption = true;
    let tls = ListenerTls::new(tls, false)
        .map_err(|e| anyhow!("ringport's TLS settings for the run's certificate: {e}"))?;
    let ops = Operations {
        listeners: vec![ListenerOps {
            tls: Some(Arc::new(tls)),
            limits: Limits {
                conn_rate: None,
                max_conns_per_source: 0,
                ..Limits::default()
            },
            ..ListenerOps::default()
        }],
        ..Operations::default()
    };
    let config = EngineConfig {
        tls_max_handshakes: 0,
        backend,
        batch_delay_us: spec.batch_delay_us,
        ..EngineConfig::default()
    };
    Ok((config, ops))
}

/// The engine on `backend` (`ringport` is `auto`, `ringport-epoll` epoll).
pub(super) fn start(spec: &ServerSpec, backend: BackendChoice) -> Result<Box<dyn Server>> {
    let mut registry =
        ringport_protocols::builtins(&ringport_protocols::BuiltinSettings::default());
    if spec.mqtt {
        // Only the `mqtt` plugin, with ringport's defaults but for anonymous
        // clients, which the load generator's are (Mosquitto runs with
        // `allow_anonymous true` too).
        let config = MqttConfig {
            allow_anonymous: true,
            ..MqttConfig::default()
        };
        registry = Default::default();
        registry
            .register(Arc::new(MqttFactory::new(config)))
            .map_err(|e| anyhow!("registering the mqtt plugin: {e}"))?;
    }
    start_with(spec, backend, &registry)
}

/// The engine on `backend` with the plugins of `registry` (the MQTT probe
/// brings its own, in place of the broker).
pub(super) fn start_with(
    spec: &ServerSpec,
    backend: BackendChoice,
    registry: &ringport_plugin::Registry,
) -> Result<Box<dyn Server>> {
    let (config, ops) = settings(spec, backend)?;
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
        match EngineHandle::start_with(&plan, config.clone(), registry, ops.clone()) {
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

    fn rss(&self) -> Option<u64> {
        crate::mqtt::vm_rss(None)
    }

    fn stop(self: Box<Self>) {
        self.engine.shutdown();
    }
}
