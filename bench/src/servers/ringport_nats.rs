//! The `ringport-nats` target: two ringport instances joined by NATS
//! (issue 14), against which relay-fanout, mqtt-fanout and mqtt-fanin run
//! with publishers on one instance and subscribers on the other.
//!
//! The harness starts a `nats-server` ([`super::nats`]) and, in this
//! process, two engines with the same listeners, shards and CPUs as the
//! `ringport` target (`--server-shards` each, on `--server-cpus`), whose
//! `relay` (relay-fanout) or `mqtt` plugin (the MQTT scenarios) is bridged
//! ([`RelayFactory::with_bridge`](ringport_protocols::RelayFactory::with_bridge),
//! [`MqttFactory::with_bridge`]):
//!
//! * instance A (id `bench-a`) exports every topic (`#`) and imports none:
//!   the publishers connect to it ([`Server::addrs`]);
//! * instance B (id `bench-b`) imports every topic and exports none: the
//!   subscribers connect to it ([`Server::subscriber_addrs`]).
//!
//! So every publish crosses A's shard 0, NATS and B's shard 0 before B
//! delivers it locally, and nothing flows back. The target is returned once
//! both bridges are connected and `nats-server` holds B's import
//! subscription, so the first publish is not lost to a subscription still
//! on its way.
//!
//! The server CPU is both engines' shard threads (every thread of this
//! process named `ringport-shard…`, which are only these two engines') plus
//! the whole `nats-server` process; `nats-server` is pinned to the server
//! CPUs too, so the three share the CPUs one instance has in the `ringport`
//! target. Messages the servers dropped are both engines' plugin drops plus
//! every drop of both bridges ([`BridgeStats`]).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ringport_engine::BackendChoice;
use ringport_protocols::mqtt::broker::{MqttConfig, MqttFactory};
use ringport_protocols::nats::{BridgeSettings, BridgeStats, NatsConfig};

use super::nats::NatsServer;
use super::{Server, ServerSpec};
use crate::cpu::CpuSource;

/// Instance A's id in NATS (the publishers' instance).
pub const ID_A: &str = "bench-a";
/// Instance B's id in NATS (the subscribers' instance).
pub const ID_B: &str = "bench-b";

struct RingportNats {
    a: Box<dyn Server>,
    b: Box<dyn Server>,
    nats: NatsServer,
    bridges: [Arc<BridgeStats>; 2],
}

/// The bridge of instance `id` to the server at `nats`, exporting and
/// importing every topic or nothing.
fn bridge(
    label: &'static str,
    nats: SocketAddr,
    id: &str,
    export: bool,
    import: bool,
) -> Result<BridgeSettings> {
    let all = vec!["#".to_owned()];
    let pick = |on: bool| if on { all.clone() } else { Vec::new() };
    let config = NatsConfig {
        servers: vec![format!("nats://{nats}")],
        name: Some(format!("ringport-{id}-{label}")),
        ..NatsConfig::default()
    };
    let mut b = BridgeSettings::new(label, config, "", &pick(export), &pick(import), id)
        .map_err(|e| anyhow!("the {label} bridge of {id}: {e}"))?;
    b.reconnect_min = Duration::from_millis(20);
    b.reconnect_max = Duration::from_millis(200);
    Ok(b)
}

/// An engine like the `ringport` target's whose plugin is bridged with `b`.
fn instance(
    spec: &ServerSpec,
    backend: BackendChoice,
    b: BridgeSettings,
) -> Result<Box<dyn Server>> {
    let b = Arc::new(b);
    let mut registry = ringport_plugin::Registry::new();
    if spec.mqtt {
        let config = MqttConfig {
            allow_anonymous: true,
            ..MqttConfig::default()
        };
        registry
            .register(Arc::new(MqttFactory::new(config).with_bridge(b)))
            .map_err(|e| anyhow!("registering the mqtt plugin: {e}"))?;
    } else {
        // The relay exactly as the `ringport` target registers it (the
        // built-ins), bridged.
        ringport_protocols::register_builtins_bridged(
            &mut registry,
            &ringport_protocols::BuiltinSettings::default(),
            Arc::new(MqttFactory::new(MqttConfig::default())),
            Some(Arc::new(ringport_protocols::nats::BridgeSet::single(b))),
        )
        .map_err(|e| anyhow!("registering the built-in plugins: {e}"))?;
    }
    super::ringport::start_with(spec, backend, &registry)
}

/// Waits (up to 10 s) until every bridge of `stats` is connected.
fn wait_connected(stats: &[Arc<BridgeStats>]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.iter().any(|s| BridgeStats::get(&s.connected) != 1) {
        if Instant::now() > deadline {
            return Err(anyhow!(
                "the instances' NATS bridges did not connect within 10 s (connects: {:?})",
                stats
                    .iter()
                    .map(|s| BridgeStats::get(&s.connects))
                    .collect::<Vec<_>>()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Starts `nats-server` and the two instances (see the module doc).
pub(super) fn start(spec: &ServerSpec, backend: BackendChoice) -> Result<Box<dyn Server>> {
    if !spec.relay && !spec.mqtt {
        return Err(anyhow!(
            "ringport-nats serves only relay-fanout, mqtt-fanout and mqtt-fanin"
        ));
    }
    let label = if spec.mqtt { "mqtt" } else { "relay" };
    let nats = NatsServer::start(&spec.cpus)?;
    let started = (|| {
        let (ba, bb) = (
            bridge(label, nats.addr(), ID_A, true, false)?,
            bridge(label, nats.addr(), ID_B, false, true)?,
        );
        let bridges = [ba.stats.clone(), bb.stats.clone()];
        let a = instance(spec, backend, ba)?;
        let b = match instance(spec, backend, bb) {
            Ok(b) => b,
            Err(e) => {
                a.stop();
                return Err(e);
            }
        };
        let ready = wait_connected(&bridges).and_then(|()| nats.wait_subscriptions(1));
        if let Err(e) = ready {
            a.stop();
            b.stop();
            return Err(e);
        }
        Ok((a, b, bridges))
    })();
    match started {
        Ok((a, b, bridges)) => Ok(Box::new(RingportNats {
            a,
            b,
            nats,
            bridges,
        })),
        Err(e) => {
            nats.stop();
            Err(e)
        }
    }
}

/// Every message a bridge dropped, for any reason.
fn bridge_drops(s: &BridgeStats) -> u64 {
    let counters: [&AtomicU64; 6] = [
        &s.dropped_buffer_full,
        &s.dropped_too_large,
        &s.lost_in_flight,
        &s.dropped_loop,
        &s.dropped_unmappable,
        &s.dropped_bad_message,
    ];
    counters.iter().map(|c| BridgeStats::get(c)).sum()
}

impl Server for RingportNats {
    fn addr(&self) -> SocketAddr {
        self.a.addr()
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.a.addrs()
    }

    fn subscriber_addrs(&self) -> Vec<SocketAddr> {
        self.b.addrs()
    }

    fn cpu(&self) -> CpuSource {
        // A's source names every `ringport-shard` thread: B's too.
        CpuSource::Sum(vec![self.a.cpu(), CpuSource::Process(self.nats.pid())])
    }

    fn datagrams_received(&self) -> Option<u64> {
        self.a.datagrams_received()
    }

    fn kernel_drops(&self) -> Option<u64> {
        Some(self.a.kernel_drops()? + self.b.kernel_drops()?)
    }

    fn plugin_drops(&self) -> Option<u64> {
        let bridges: u64 = self.bridges.iter().map(|s| bridge_drops(s)).sum();
        Some(self.a.plugin_drops()? + self.b.plugin_drops()? + bridges)
    }

    fn rss(&self) -> Option<u64> {
        // This process's (both engines) and the server's.
        Some(self.a.rss()? + crate::mqtt::vm_rss(Some(self.nats.pid()))?)
    }

    fn stop(self: Box<Self>) {
        let this = *self;
        this.a.stop();
        this.b.stop();
        this.nats.stop();
    }
}
