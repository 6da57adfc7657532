//! What one run measures: the scenario and the load's shape.

use std::time::Duration;

use crate::fanout::RelaySpec;
use crate::mqtt::MqttSpec;
use crate::tls::HandshakeKind;
use crate::wire::Protocol;

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Closed loop over TCP: conns x depth requests in flight; throughput and round trips.
    TcpEcho,
    /// Open loop over TCP at a fixed rate; latency from the intended send time.
    TcpRr,
    /// Request/response datagrams with sequence numbers: loss, duplicates, reordering, latency.
    UdpEcho,
    /// One-way datagrams from many source ports; loss from the server's own count.
    UdpIngest,
    /// Relay publish/subscribe: publishers at a fixed rate, every message
    /// delivered to every subscriber of its topic; delivery latency and loss.
    /// Not part of the suite.
    RelayFanout,
    /// Closed loop over TLS 1.3 (connections made and handshaken before the
    /// run): throughput, round trips and server CPU per message, for each
    /// message size (64 B and 16 KiB by default). Not part of the suite.
    TlsEcho,
    /// New TLS 1.3 connections, closed loop with `--conns` connectors: each
    /// connection connects, handshakes (full, or resumed with a session
    /// ticket), does one echo round trip and closes. Handshakes per second,
    /// handshake latency, server CPU per handshake. Not part of the suite.
    TlsHandshake,
    /// MQTT fan-in: many QoS 0 publishers (100) at a fixed total rate to one
    /// subscriber; deliveries/s, server CPU per delivery, delivery latency,
    /// exact loss, duplicates and reordering. Not part of the suite.
    MqttFanin,
    /// MQTT fan-out: one QoS 0 publisher to 100 and to 1,000 subscribers
    /// (one case each), at a fixed rate. Not part of the suite.
    MqttFanout,
    /// MQTT QoS 1 requests: 16 publishers, each to a subscriber of its own,
    /// at a fixed rate; time to PUBACK and to delivery. Not part of the suite.
    MqttQos1,
    /// MQTT idle clients: 10,000 connected clients doing nothing; the
    /// server's resident memory per client. Not part of the suite.
    MqttIdle,
}

impl Scenario {
    /// The scenarios of the standard suite, in order (not relay-fanout).
    pub const ALL: [Scenario; 4] = [
        Scenario::TcpEcho,
        Scenario::TcpRr,
        Scenario::UdpEcho,
        Scenario::UdpIngest,
    ];

    /// The command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::TcpEcho => "tcp-echo",
            Scenario::TcpRr => "tcp-rr",
            Scenario::UdpEcho => "udp-echo",
            Scenario::UdpIngest => "udp-ingest",
            Scenario::RelayFanout => "relay-fanout",
            Scenario::TlsEcho => "tls-echo",
            Scenario::TlsHandshake => "tls-handshake",
            Scenario::MqttFanin => "mqtt-fanin",
            Scenario::MqttFanout => "mqtt-fanout",
            Scenario::MqttQos1 => "mqtt-qos1",
            Scenario::MqttIdle => "mqtt-idle",
        }
    }

    /// Whether it runs against an MQTT broker (see [`crate::mqtt`]).
    pub fn is_mqtt(self) -> bool {
        matches!(
            self,
            Scenario::MqttFanin | Scenario::MqttFanout | Scenario::MqttQos1 | Scenario::MqttIdle
        )
    }

    /// Whether it runs over TLS (and so against TLS targets).
    pub fn is_tls(self) -> bool {
        matches!(self, Scenario::TlsEcho | Scenario::TlsHandshake)
    }

    /// Default message sizes; each is a scenario of its own in the report.
    pub fn default_sizes(self) -> &'static [usize] {
        match self {
            Scenario::TlsEcho => &[64, 16 * 1024],
            _ => &[64],
        }
    }

    /// Default protocol: plain echo over TLS, sockperf reflection otherwise.
    pub fn default_protocol(self) -> Protocol {
        if self.is_tls() {
            Protocol::Echo
        } else {
            Protocol::Sockperf
        }
    }

    /// Whether it runs over UDP.
    pub fn is_udp(self) -> bool {
        matches!(self, Scenario::UdpEcho | Scenario::UdpIngest)
    }

    /// Whether messages are one-way (no replies).
    pub fn is_one_way(self) -> bool {
        self == Scenario::UdpIngest
    }

    /// Default connections (sockets, for UDP).
    pub fn default_conns(self) -> usize {
        match self {
            Scenario::TcpEcho | Scenario::TcpRr | Scenario::TlsEcho => 64,
            Scenario::UdpEcho | Scenario::TlsHandshake => 16,
            Scenario::UdpIngest => 64,
            Scenario::RelayFanout => 100,
            Scenario::MqttFanin | Scenario::MqttFanout | Scenario::MqttQos1 => 0,
            Scenario::MqttIdle => crate::mqtt::DEFAULT_IDLE_CLIENTS,
        }
    }

    /// Default pipeline depth: requests in flight per connection.
    pub fn default_depth(self) -> usize {
        match self {
            Scenario::TcpEcho | Scenario::TlsEcho => 4,
            Scenario::TcpRr | Scenario::TlsHandshake => 1,
            Scenario::UdpEcho => 4,
            Scenario::UdpIngest => 16,
            Scenario::RelayFanout => 1,
            Scenario::MqttIdle => 1,
            Scenario::MqttFanin | Scenario::MqttFanout | Scenario::MqttQos1 => {
                crate::mqtt::DEFAULT_INFLIGHT
            }
        }
    }

    /// Default rate in messages per second (0: closed loop / as fast as possible).
    pub fn default_rate(self) -> u64 {
        match self {
            Scenario::TcpRr => 20_000,
            Scenario::RelayFanout => 10_000,
            Scenario::MqttFanin => crate::mqtt::DEFAULT_FANIN_RATE,
            Scenario::MqttFanout => crate::mqtt::DEFAULT_FANOUT_DELIVERIES / 100,
            Scenario::MqttQos1 => crate::mqtt::DEFAULT_QOS1_RATE,
            _ => 0,
        }
    }
}

/// How full-speed `udp-ingest` hands datagrams to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IngestSend {
    /// io_uring sends of `--batch` datagrams each, cut into datagrams by the
    /// kernel (UDP generic segmentation offload, `UDP_SEGMENT` on the socket).
    Gso,
    /// `sendmmsg` of `--batch` datagrams per call, rotating over the sockets.
    Sendmmsg,
    /// One io_uring send per datagram, `--depth` in flight per socket.
    Uring,
}

impl IngestSend {
    /// The command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            IngestSend::Gso => "gso",
            IngestSend::Sendmmsg => "sendmmsg",
            IngestSend::Uring => "uring",
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Default `--pace-slack-us`.
pub const DEFAULT_PACE_SLACK_US: u64 = 50;

/// Most datagrams per send operation (the kernel's limit of GSO segments per send).
pub const MAX_BATCH: usize = 64;

/// The load of one run, as the load generator sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LoadSpec {
    /// The scenario.
    pub scenario: Scenario,
    /// What the server speaks.
    pub protocol: Protocol,
    /// Connections (TCP) or sockets (UDP), spread over the client threads.
    pub conns: usize,
    /// Requests in flight per connection at most (UDP ingest: sends in flight per socket).
    pub depth: usize,
    /// Message size in bytes, header included (relay-fanout: the `PUBLISH` payload).
    pub size: usize,
    /// Messages per second over all connections; 0 for closed loop / full speed.
    pub rate: u64,
    /// Measured time.
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// Time before the measurement starts (load runs, nothing is counted but errors).
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    /// CPUs of the client threads, one thread each.
    pub cpus: Vec<usize>,
    /// Stop after this many messages in total (for exact, repeatable counts).
    pub messages: Option<u64>,
    /// A datagram unanswered after this long is given up (its slot reused).
    #[serde(serialize_with = "secs")]
    pub reply_timeout: Duration,
    /// Open loop: how long after a send's intended time the client may wait
    /// for a reply's wake-up to send it, instead of a timer of its own. Sends
    /// are never early, so latency stays measured from the intended time; the
    /// slack only lets one wake-up send many requests.
    #[serde(serialize_with = "secs")]
    pub pace_slack: Duration,
    /// How full-speed udp-ingest sends.
    pub ingest_send: IngestSend,
    /// Datagrams per send operation at full-speed udp-ingest (GSO segments or
    /// sendmmsg messages).
    pub batch: usize,
    /// The relay-fanout load (`None` for the other scenarios).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelaySpec>,
    /// tls-handshake: which handshakes (`None` for the other scenarios).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake: Option<HandshakeKind>,
    /// The MQTT scenarios' load (`None` for the other scenarios).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttSpec>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl LoadSpec {
    /// The defaults of `scenario` with one client thread on CPU 0.
    pub fn defaults(scenario: Scenario) -> LoadSpec {
        LoadSpec {
            scenario,
            protocol: Protocol::Sockperf,
            conns: scenario.default_conns(),
            depth: scenario.default_depth(),
            size: 64,
            rate: scenario.default_rate(),
            duration: Duration::from_secs(3),
            warmup: Duration::from_secs(1),
            cpus: vec![0],
            messages: None,
            reply_timeout: Duration::from_millis(200),
            pace_slack: Duration::from_micros(DEFAULT_PACE_SLACK_US),
            ingest_send: IngestSend::Gso,
            batch: 32,
            relay: None,
            handshake: (scenario == Scenario::TlsHandshake).then_some(HandshakeKind::Full),
            mqtt: crate::mqtt::MqttSpec::defaults(scenario),
        }
    }

    /// Checks the values the generator cannot work with.
    pub fn validate(&self) -> Result<(), String> {
        if self.scenario == Scenario::RelayFanout {
            return self.validate_relay();
        }
        if self.scenario.is_mqtt() {
            return crate::mqtt::validate(self);
        }
        if self.size < crate::wire::MIN_SIZE || self.size > 65_000 {
            return Err(format!(
                "--size {} must be between {} and 65000",
                self.size,
                crate::wire::MIN_SIZE
            ));
        }
        if self.conns == 0 || self.depth == 0 {
            return Err("--conns and --depth must be at least 1".into());
        }
        if self.batch == 0 || self.batch > MAX_BATCH {
            return Err(format!("--batch must be between 1 and {MAX_BATCH}"));
        }
        if self.scenario.is_one_way()
            && self.ingest_send == IngestSend::Gso
            && self.batch * self.size > 65_000
        {
            return Err(format!(
                "--batch {} x --size {} is over 65000 bytes, the largest GSO send",
                self.batch, self.size
            ));
        }
        if self.cpus.is_empty() {
            return Err("--cpus must name at least one CPU".into());
        }
        if self.scenario == Scenario::TlsEcho && self.rate != 0 {
            return Err("tls-echo is closed loop: it takes no --rate".into());
        }
        if self.scenario == Scenario::TlsHandshake {
            if self.depth != 1 || self.rate != 0 {
                return Err(
                    "tls-handshake is closed loop with one connection per connector at a \
                     time: it takes neither --depth nor --rate"
                        .into(),
                );
            }
            if self.handshake.is_none() {
                return Err("tls-handshake needs its handshake kind (--handshakes)".into());
            }
        }
        if self.scenario.is_one_way() && self.protocol == Protocol::Echo {
            return Err(
                "udp-ingest needs --protocol sockperf (echo would answer every datagram)".into(),
            );
        }
        Ok(())
    }

    fn validate_relay(&self) -> Result<(), String> {
        let Some(relay) = &self.relay else {
            return Err("relay-fanout needs its relay settings".into());
        };
        relay.validate()?;
        let min = crate::fanout::payload::MIN_PAYLOAD;
        if self.size < min || self.size > 65_000 {
            return Err(format!(
                "relay-fanout: --size {} (the PUBLISH payload) must be between {min} and 65000",
                self.size
            ));
        }
        if self.rate == 0 {
            return Err("relay-fanout publishes open loop: --rate must be at least 1".into());
        }
        if self.cpus.is_empty() {
            return Err("--cpus must name at least one CPU".into());
        }
        Ok(())
    }
}
