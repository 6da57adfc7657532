//! The servers a run measures.
//!
//! Each target is started fresh for every run with the same CPUs and shard
//! count and stopped after it, so runs do not inherit each other's state:
//!
//! * `ringport`: the engine in this process ([`ringport_engine::EngineHandle`]);
//! * `tokio` / `tokio-mt`: what a competent tokio user writes (a
//!   current-thread runtime pinned to the server CPU, or a multi-thread one);
//! * `epoll`: a tight epoll loop with `recvmmsg`/`sendmmsg`, one pinned thread per shard;
//! * `sockperf`: the real `sockperf server` binary, pinned with sched_setaffinity;
//! * `ADDR:PORT`: an external server, started by someone else.
//!
//! The TLS scenarios run against `ringport` (the engine with a `tls`
//! listener), `tokio-rustls` (what a competent tokio user writes with
//! tokio-rustls), `haproxy` (the Debian binary terminating TLS in front of
//! the epoll echo server) and `rustls-probe` (the least a server does per
//! TLS connection with the same rustls configuration: the floor); every one
//! serves the run's certificate ([`crate::tls::TlsFiles`]).
//!
//! The MQTT scenarios run against `ringport` (the engine with an `mqtt`
//! listener), `mosquitto` (the Debian broker), `mqtt-probe` (the same engine
//! with a bare forwarder in place of the broker: the floor) or an external
//! broker.
//!
//! `ringport-nats` serves relay-fanout, mqtt-fanout and mqtt-fanin across
//! two ringport instances joined by a `nats-server` (publishers on one,
//! subscribers on the other), to compare with `ringport`, the same load
//! within one instance.

mod epoll;
mod external;
mod haproxy;
mod mosquitto;
mod mqtt_probe;
mod nats;
mod process;
mod ringport;
mod ringport_nats;
mod rustls_probe;
mod tokio_rustls;
mod tokio_srv;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Result;

use crate::config::Scenario;
use crate::cpu::CpuSource;
use crate::tls::TlsFiles;
use crate::wire::Protocol;
use ringport_engine::BackendChoice;

/// Which server to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The ringport engine, in process (`--backend auto`: io_uring here).
    Ringport,
    /// The ringport engine on its epoll backend.
    RingportEpoll,
    /// tokio, current-thread runtime pinned to the first server CPU.
    Tokio,
    /// tokio, multi-thread runtime with one worker per server shard.
    TokioMt,
    /// Hand-written epoll + recvmmsg/sendmmsg, one thread per shard.
    Epoll,
    /// The real `sockperf server` binary.
    Sockperf,
    /// tokio + tokio-rustls, current-thread runtime pinned to the first server CPU (TLS only).
    TokioRustls,
    /// The `haproxy` binary terminating TLS in front of the epoll echo server (TLS only).
    Haproxy,
    /// The bare rustls server: one pinned epoll thread, a rustls
    /// `ServerConnection` per connection, the echo, close (TLS only).
    RustlsProbe,
    /// The Debian `mosquitto` broker (MQTT only).
    Mosquitto,
    /// The ringport engine with a bare MQTT forwarder in place of the
    /// broker, one shard: the floor (MQTT only).
    MqttProbe,
    /// Two in-process ringport engines joined by a `nats-server`:
    /// publishers on one, subscribers on the other (relay-fanout,
    /// mqtt-fanout and mqtt-fanin only).
    RingportNats,
    /// A server at this address, not started by the harness.
    External(SocketAddr),
}

impl Target {
    /// The name used on the command line and in reports.
    pub fn name(&self) -> String {
        match self {
            Target::Ringport => "ringport".into(),
            Target::RingportEpoll => "ringport-epoll".into(),
            Target::Tokio => "tokio".into(),
            Target::TokioMt => "tokio-mt".into(),
            Target::Epoll => "epoll".into(),
            Target::Sockperf => "sockperf".into(),
            Target::TokioRustls => "tokio-rustls".into(),
            Target::Haproxy => "haproxy".into(),
            Target::RustlsProbe => "rustls-probe".into(),
            Target::Mosquitto => "mosquitto".into(),
            Target::MqttProbe => "mqtt-probe".into(),
            Target::RingportNats => "ringport-nats".into(),
            Target::External(a) => a.to_string(),
        }
    }

    /// Whether the target serves TLS (the TLS scenarios), and only that.
    pub fn speaks_tls(&self) -> bool {
        matches!(
            self,
            Target::Ringport
                | Target::RingportEpoll
                | Target::TokioRustls
                | Target::Haproxy
                | Target::RustlsProbe
        )
    }

    /// Whether the target serves only the TLS scenarios.
    pub fn tls_only(&self) -> bool {
        matches!(
            self,
            Target::TokioRustls | Target::Haproxy | Target::RustlsProbe
        )
    }

    /// Whether the target is an MQTT broker (the MQTT scenarios): the
    /// ringport engine, Mosquitto, and an external server (taken on trust).
    pub fn speaks_mqtt(&self) -> bool {
        matches!(
            self,
            Target::Ringport
                | Target::RingportEpoll
                | Target::Mosquitto
                | Target::MqttProbe
                | Target::RingportNats
                | Target::External(_)
        )
    }

    /// Whether the target speaks the relay protocol (relay-fanout): the
    /// ringport engine, and an external server (whose protocol the harness
    /// takes on trust).
    pub fn speaks_relay(&self) -> bool {
        matches!(
            self,
            Target::Ringport | Target::RingportEpoll | Target::RingportNats | Target::External(_)
        )
    }
}

/// The error for running relay-fanout against targets that do not speak
/// relay, naming them and the ones that do (`None`: every target does).
pub fn relay_support_error(targets: &[Target]) -> Option<String> {
    let refused: Vec<String> = targets
        .iter()
        .filter(|t| !t.speaks_relay())
        .map(Target::name)
        .collect();
    (!refused.is_empty()).then(|| {
        format!(
            "scenario relay-fanout needs a server that speaks the relay protocol; {} {} not \
             (relay-fanout runs against: ringport, ringport-epoll, ringport-nats, or ADDR:PORT of \
             an external relay server)",
            refused.join(", "),
            if refused.len() == 1 { "does" } else { "do" }
        )
    })
}

/// The error for running `scenario` against targets that cannot serve it,
/// naming them and the ones that can (`None`: every target can).
pub fn support_error(scenario: Scenario, targets: &[Target]) -> Option<String> {
    if scenario == Scenario::RelayFanout {
        return relay_support_error(targets);
    }
    if scenario.is_mqtt() {
        let bridged = matches!(scenario, Scenario::MqttFanout | Scenario::MqttFanin);
        let refused: Vec<String> = (targets.iter())
            .filter(|t| !t.speaks_mqtt() || (**t == Target::RingportNats && !bridged))
            .map(Target::name)
            .collect();
        return (!refused.is_empty()).then(|| {
            format!(
                "scenario {scenario}: {} {} not serve it ({scenario} runs against: ringport, \
                 ringport-epoll, mosquitto, mqtt-probe, or ADDR:PORT of an MQTT broker; \
                 ringport-nats serves mqtt-fanout and mqtt-fanin only)",
                refused.join(", "),
                if refused.len() == 1 { "does" } else { "do" }
            )
        });
    }
    let refused: Vec<String> = targets
        .iter()
        .filter(|t| {
            if matches!(
                t,
                Target::Mosquitto | Target::MqttProbe | Target::RingportNats
            ) {
                true
            } else if scenario.is_tls() {
                !t.speaks_tls()
            } else {
                t.tls_only()
            }
        })
        .map(Target::name)
        .collect();
    (!refused.is_empty()).then(|| {
        let runs_against = if scenario.is_tls() {
            "ringport, ringport-epoll, tokio-rustls, haproxy, rustls-probe"
        } else {
            "ringport, ringport-epoll, tokio, tokio-mt, epoll, sockperf, or ADDR:PORT"
        };
        format!(
            "scenario {scenario}: {} {} not serve it ({scenario} runs against: {runs_against})",
            refused.join(", "),
            if refused.len() == 1 { "does" } else { "do" }
        )
    })
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        Ok(match s {
            "ringport" => Target::Ringport,
            "ringport-epoll" => Target::RingportEpoll,
            "tokio" => Target::Tokio,
            "tokio-mt" => Target::TokioMt,
            "epoll" => Target::Epoll,
            "sockperf" => Target::Sockperf,
            "tokio-rustls" => Target::TokioRustls,
            "haproxy" => Target::Haproxy,
            "rustls-probe" => Target::RustlsProbe,
            "mosquitto" => Target::Mosquitto,
            "mqtt-probe" => Target::MqttProbe,
            "ringport-nats" => Target::RingportNats,
            other => Target::External(other.parse().map_err(|_| {
                format!(
                    "`{other}` is not a target: use ringport, ringport-epoll, tokio, tokio-mt, epoll, sockperf, tokio-rustls, haproxy, rustls-probe, mosquitto, mqtt-probe, ringport-nats or ADDR:PORT (e.g. 127.0.0.1:11111)"
                )
            })?),
        })
    }
}

/// How to run a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Serve UDP (else TCP).
    pub udp: bool,
    /// The protocol to serve.
    pub protocol: Protocol,
    /// Worker threads (shards).
    pub shards: usize,
    /// CPUs to pin them to, in order (shard `i` on `cpus[i % len]`).
    pub cpus: Vec<usize>,
    /// Serve the relay protocol over TCP and UDP on one port per shard
    /// (range mode) instead of `protocol`; only ringport can.
    pub relay: bool,
    /// An external target serves this many consecutive ports from its
    /// address's (relay-fanout spreads its connections over them).
    pub external_ports: usize,
    /// Serve TLS with these certificates (the TLS scenarios).
    pub tls: Option<Arc<TlsFiles>>,
    /// CPUs of a target's plain backend (HAProxy's echo server).
    pub backend_cpus: Vec<usize>,
    /// Serve MQTT over TCP (the MQTT scenarios) instead of `protocol`.
    pub mqtt: bool,
    /// The engine's `--batch-delay-us` for the targets that run it
    /// (ringport, ringport-epoll, mqtt-probe, ringport-nats); 0 is its
    /// default.
    pub batch_delay_us: u32,
}

/// A started server.
pub trait Server: Send {
    /// Where to send load.
    fn addr(&self) -> SocketAddr;
    /// Every address serving the load, one per shard when the server cuts
    /// its ports by shard (relay), else just [`Server::addr`]. For relay, the
    /// same ports serve TCP and UDP.
    fn addrs(&self) -> Vec<SocketAddr> {
        vec![self.addr()]
    }
    /// Where subscribers connect (relay-fanout and the MQTT publish/subscribe
    /// scenarios): [`Server::addrs`], but for a target made of two instances
    /// (`ringport-nats`: publishers on one, subscribers on the other).
    fn subscriber_addrs(&self) -> Vec<SocketAddr> {
        self.addrs()
    }
    /// Whose CPU time is the server's.
    fn cpu(&self) -> CpuSource;
    /// For a server made of a front and a backend (a proxy before the
    /// service): whose CPU time is each's. [`Server::cpu`] is their sum.
    fn cpu_split(&self) -> Option<(CpuSource, CpuSource)> {
        None
    }
    /// Datagrams the server has received so far, if it can tell.
    fn datagrams_received(&self) -> Option<u64>;
    /// Datagrams the server's kernel sockets dropped so far, if known.
    fn kernel_drops(&self) -> Option<u64> {
        None
    }
    /// Messages the server's protocol code dropped so far (every reason), if known.
    fn plugin_drops(&self) -> Option<u64> {
        None
    }
    /// The server's resident memory (`VmRSS`) in bytes, if known. For a
    /// server in this process, the whole process's.
    fn rss(&self) -> Option<u64> {
        None
    }
    /// Stops the server and waits for it.
    fn stop(self: Box<Self>);
}

/// Starts `target` as `spec` says.
pub fn start(target: Target, spec: &ServerSpec) -> Result<Box<dyn Server>> {
    if spec.relay {
        if let Some(e) = relay_support_error(&[target]) {
            return Err(anyhow::anyhow!(e));
        }
    }
    if spec.mqtt && !target.speaks_mqtt() {
        return Err(anyhow::anyhow!(
            "{} does not serve the MQTT scenarios",
            target.name()
        ));
    }
    if target.tls_only() && spec.tls.is_none() {
        return Err(anyhow::anyhow!(
            "{} serves only the TLS scenarios (tls-echo, tls-handshake)",
            target.name()
        ));
    }
    match target {
        Target::Ringport => ringport::start(spec, BackendChoice::Auto),
        Target::RingportEpoll => ringport::start(spec, BackendChoice::Epoll),
        Target::Tokio => tokio_srv::start(spec, false),
        Target::TokioMt => tokio_srv::start(spec, true),
        Target::Epoll => epoll::start(spec),
        Target::Sockperf => external::start_sockperf(spec),
        Target::TokioRustls => tokio_rustls::start(spec),
        Target::Haproxy => haproxy::start(spec),
        Target::RustlsProbe => rustls_probe::start(spec),
        Target::Mosquitto => mosquitto::start(spec),
        Target::MqttProbe => mqtt_probe::start(spec),
        Target::RingportNats => ringport_nats::start(spec, BackendChoice::Auto),
        Target::External(addr) => Ok(Box::new(external::External {
            addr,
            ports: spec.external_ports.max(1),
        })),
    }
}

/// Whether the `haproxy` binary (the haproxy target) can be started here.
pub fn haproxy_installed() -> bool {
    haproxy::installed()
}

/// Whether the `mosquitto` broker (the mosquitto target) is installed
/// (`/usr/sbin/mosquitto`, the Debian package).
pub fn mosquitto_installed() -> bool {
    mosquitto::installed()
}

/// Whether `nats-server` (the ringport-nats target) is installed
/// (`/usr/sbin/nats-server`, the Debian package, or on `PATH`).
pub fn nats_server_installed() -> bool {
    nats::program().is_some()
}

/// A datagram counter shared by a baseline's threads and the harness.
pub(crate) type Count = Arc<AtomicU64>;

/// Clears the CLIENT flag of a sockperf frame in place (a reply).
#[inline]
pub(crate) fn reflect(frame: &mut [u8]) {
    frame[9] &= !(ringport_protocols::sockperf::Flags::CLIENT.bits() as u8);
}

/// Whether a sockperf frame asks for a reply.
#[inline]
pub(crate) fn wants_reply(frame: &[u8]) -> bool {
    let flags = u16::from_be_bytes([frame[8], frame[9]]);
    ringport_protocols::sockperf::Flags::from_bits(flags).wants_reply()
}

/// The total length field of a sockperf frame header.
#[inline]
pub(crate) fn frame_len(header: &[u8]) -> usize {
    u32::from_be_bytes([header[10], header[11], header[12], header[13]]) as usize
}

/// Processes the whole sockperf frames at the start of `input`, appending
/// replies to `out`. Returns the bytes consumed, or `None` for a broken stream.
pub(crate) fn sockperf_stream(input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    use ringport_protocols::sockperf::{DEFAULT_MAX_FRAME, HEADER_LEN};
    let mut off = 0;
    while input.len() - off >= HEADER_LEN {
        let len = frame_len(&input[off..]);
        if !(HEADER_LEN..=DEFAULT_MAX_FRAME).contains(&len) {
            return None;
        }
        if input.len() - off < len {
            break;
        }
        let frame = &input[off..off + len];
        if wants_reply(frame) {
            let start = out.len();
            out.extend_from_slice(frame);
            reflect(&mut out[start..]);
        }
        off += len;
    }
    Some(off)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode, ONE_WAY_FLAGS, REQUEST_FLAGS};

    #[test]
    fn stream_reflection_answers_requests_and_keeps_partial_frames() {
        let mut input = Vec::new();
        encode(&mut input, 1, REQUEST_FLAGS, 20);
        encode(&mut input, 2, ONE_WAY_FLAGS, 16);
        encode(&mut input, 3, REQUEST_FLAGS, 30);
        let mut out = Vec::new();
        assert_eq!(sockperf_stream(&input[..50], &mut out), Some(36));
        assert_eq!(out.len(), 20);
        assert!(crate::wire::verify(Protocol::Sockperf, &out, 1, 20));
        let mut bad = vec![0u8; 14];
        bad[13] = 3;
        assert_eq!(sockperf_stream(&bad, &mut out), None);
        assert_eq!("tokio-mt".parse::<Target>(), Ok(Target::TokioMt));
        assert!("nope".parse::<Target>().is_err());
    }

    #[test]
    fn relay_fanout_names_the_targets_that_cannot_run_it() {
        let ext: Target = "127.0.0.1:7400".parse().unwrap();
        assert_eq!(relay_support_error(&[Target::Ringport, ext]), None);
        let e = relay_support_error(&[Target::Ringport, Target::Tokio, Target::Epoll]).unwrap();
        assert!(
            e.contains("relay-fanout") && e.contains("tokio, epoll do not"),
            "{e}"
        );
        assert!(e.contains("ringport-nats, or ADDR:PORT"), "{e}");
    }

    #[test]
    fn tls_scenarios_name_the_targets_that_cannot_serve_them_and_the_other_way_round() {
        let tls = [Target::Ringport, Target::TokioRustls, Target::Haproxy];
        assert_eq!(support_error(Scenario::TlsEcho, &tls), None);
        assert_eq!(
            support_error(Scenario::TlsHandshake, &[Target::Ringport, Target::Tokio]).unwrap(),
            "scenario tls-handshake: tokio does not serve it (tls-handshake runs against: \
             ringport, ringport-epoll, tokio-rustls, haproxy, rustls-probe)"
        );
        assert_eq!(
            support_error(Scenario::TcpEcho, &tls).unwrap(),
            "scenario tcp-echo: tokio-rustls, haproxy do not serve it (tcp-echo runs against: \
             ringport, ringport-epoll, tokio, tokio-mt, epoll, sockperf, or ADDR:PORT)"
        );
        assert_eq!(
            support_error(Scenario::TlsEcho, &[Target::RustlsProbe]),
            None
        );
        assert_eq!(
            support_error(Scenario::UdpEcho, &[Target::Epoll, Target::RustlsProbe]).unwrap(),
            "scenario udp-echo: rustls-probe does not serve it (udp-echo runs against: \
             ringport, ringport-epoll, tokio, tokio-mt, epoll, sockperf, or ADDR:PORT)"
        );
        assert_eq!("rustls-probe".parse::<Target>(), Ok(Target::RustlsProbe));
        assert_eq!(Target::RustlsProbe.name(), "rustls-probe");
        assert_eq!("haproxy".parse::<Target>(), Ok(Target::Haproxy));
        assert_eq!(
            "ringport-epoll".parse::<Target>(),
            Ok(Target::RingportEpoll)
        );
        assert_eq!("tokio-rustls".parse::<Target>(), Ok(Target::TokioRustls));
    }
}
