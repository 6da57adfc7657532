//! Command-line flags and the top-level flow: scenarios x rounds x targets.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser};
use ringport_engine::cpus::CpuList;

use crate::config::{IngestSend, LoadSpec, Scenario};
use crate::fanout::RelaySpec;
use crate::mqtt::MqttSpec;
use crate::servers::Target;
use crate::tls::HandshakeKind;
use crate::wire::Protocol;

pub use crate::runner::{
    client_bound_warning, contention_warning, run, within_error_budget, CONTENTION_PCT,
};

/// Protocol names on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolArg {
    /// sockperf reflection (every target; needed by udp-ingest).
    Sockperf,
    /// Plain echo (not the `sockperf` target).
    Echo,
}

/// ringport-bench: load generator and side-by-side benchmark harness.
///
/// Without arguments, runs the standard suite (tcp-echo, tcp-rr, udp-echo,
/// udp-ingest; ringport vs tokio vs epoll; client on CPU 0, server on CPU 1).
/// Output options (--json, --svg, --quiet) never change what runs.
#[derive(Debug, Clone, Parser)]
#[command(name = "ringport-bench", version)]
pub struct Args {
    /// Scenarios to run, e.g. `tls-echo,tls-handshake` (default: the suite's
    /// four; relay-fanout, tls-echo, tls-handshake and the MQTT scenarios
    /// mqtt-fanin, mqtt-fanout, mqtt-qos1 and mqtt-idle run only when named).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenario: Vec<Scenario>,
    /// Run the standard suite (what no arguments does); other flags still apply.
    #[arg(long)]
    pub suite: bool,
    /// What the servers speak [default: echo for the TLS scenarios, else sockperf].
    #[arg(long, value_enum)]
    pub protocol: Option<ProtocolArg>,
    /// Connections (TCP) or sockets (UDP) [default: per scenario: 64, 64, 16,
    /// 64; the MQTT scenarios take --publishers, --subscribers, --clients].
    #[arg(long)]
    pub conns: Option<usize>,
    /// Requests in flight per connection [default: per scenario: 4, 1, 4, 16;
    /// MQTT at QoS 1: unacknowledged publishes per publisher, 16].
    #[arg(long)]
    pub depth: Option<usize>,
    /// Message sizes in bytes, sockperf header included, e.g. `64,16384`;
    /// each size is reported as a scenario of its own (relay-fanout: the
    /// PUBLISH payload, at least 32) [default: tls-echo: 64,16384; others 64].
    #[arg(long, value_delimiter = ',')]
    pub size: Vec<usize>,
    /// tls-handshake: which handshakes, each reported as a scenario of its
    /// own: `full` (no session kept), `resumed` (TLS 1.3 session tickets)
    /// [default: full,resumed].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub handshakes: Vec<HandshakeKind>,
    /// Messages per second over all connections; 0 = closed loop / full speed
    /// [default: tcp-rr: half of ringport's closed-loop rate with the same conns
    /// and depth when ringport is a target, else 20000; relay-fanout: 10000
    /// publishes/s over all publishers; mqtt-fanin: 50000 publishes/s;
    /// mqtt-fanout: 50000 deliveries/s (publishes/s = that / subscribers);
    /// mqtt-qos1: 10000 publishes/s; others 0].
    #[arg(long)]
    pub rate: Option<u64>,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Warm-up seconds before each measurement.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Client CPUs, one load-generator thread each (e.g. `0` or `0,2-3`).
    #[arg(long, default_value = "0")]
    pub cpus: CpuList,
    /// Server worker threads (shards) for the targets the harness starts.
    #[arg(long, default_value_t = 1)]
    pub server_shards: usize,
    /// CPUs for the server's threads.
    #[arg(long, default_value = "1")]
    pub server_cpus: CpuList,
    /// The engine's `--batch-delay-us` for the ringport targets (ringport,
    /// ringport-epoll, mqtt-probe, ringport-nats): once a completion is
    /// ready, wait up to this many µs for more before the loop turn. 0 (the
    /// engine's default) never adds latency; other targets ignore it.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub batch_delay_us: u32,
    /// Target: ringport, ringport-epoll (its epoll backend), tokio, tokio-mt,
    /// epoll, sockperf, or ADDR:PORT of an
    /// external server; for the TLS scenarios ringport, ringport-epoll,
    /// tokio-rustls, haproxy or rustls-probe (the bare rustls server: the floor);
    /// for the MQTT scenarios ringport, ringport-epoll, mosquitto (the Debian
    /// broker at /usr/sbin/mosquitto), mqtt-probe (the engine with a bare
    /// forwarder in place of the broker, one shard: the floor) or ADDR:PORT of
    /// a broker; for relay-fanout, mqtt-fanout and mqtt-fanin also
    /// ringport-nats (two engines joined by a nats-server the harness starts:
    /// publishers on one, subscribers on the other).
    #[arg(long, default_value = "ringport")]
    pub target: Target,
    /// Compare several targets, e.g. `ringport,tokio,epoll`,
    /// `ringport,tokio-rustls,haproxy` or `ringport,mosquitto` (overrides --target).
    #[arg(long, value_delimiter = ',')]
    pub compare: Vec<Target>,
    /// The haproxy target's plain echo backend runs on this CPU [default: a
    /// CPU neither the client nor the server uses, if there is one, else the
    /// server's first CPU].
    #[arg(long)]
    pub backend_cpu: Option<usize>,
    /// Rounds per target; rounds alternate between targets (A B A B ...).
    #[arg(long)]
    pub repeat: Option<usize>,
    /// Write every figure, the configuration and the machine here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the report as SVG here: latency spectrum per target, throughput
    /// and CPU per message as bars, one row per scenario.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Exit non-zero when (errors + loss) / sent exceeds this in any run.
    /// Loss at full-speed udp-ingest measures capacity and is not counted.
    #[arg(long, default_value_t = 0.0)]
    pub max_error_rate: f64,
    /// Stop after this many messages per run (exact, repeatable counts;
    /// relay-fanout: publishes over all publishers).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Milliseconds after which an unanswered datagram is given up.
    #[arg(long, default_value_t = 200)]
    pub reply_timeout_ms: u64,
    /// Open loop: microseconds a due request may wait for a wake-up the client
    /// has anyway (a reply) before a timer of its own wakes it. Latency is still
    /// measured from the intended send time, so this slack counts against the
    /// measured latency; it buys fewer client wake-ups (less client CPU).
    #[arg(long, default_value_t = crate::config::DEFAULT_PACE_SLACK_US)]
    pub pace_slack_us: u64,
    /// How full-speed udp-ingest sends: `gso` (io_uring sends of --batch
    /// datagrams cut by the kernel), `sendmmsg`, or `uring` (one send per datagram).
    #[arg(long, value_enum, default_value = "gso")]
    pub ingest_send: IngestSend,
    /// Datagrams per send at full-speed udp-ingest (1..=64).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// No per-run progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// relay-fanout and MQTT: subscriber connections (TCP), spread over the
    /// server's ports; several, e.g. `100,1000`, are a case each [default:
    /// relay-fanout 100; mqtt-fanout 100,1000; mqtt-fanin 1; mqtt-qos1 one
    /// per publisher].
    #[arg(long, value_delimiter = ',')]
    pub subscribers: Vec<usize>,
    /// relay-fanout and MQTT: publishers, spread over the server's ports
    /// [default: relay-fanout one per port (--server-shards, or --ports of an
    /// external target), at most 4; mqtt-fanin 100; mqtt-fanout 1; mqtt-qos1 16].
    #[arg(long)]
    pub publishers: Option<usize>,
    /// relay-fanout: topics; subscriber j subscribes to topic j % K, a
    /// publisher's message n goes to topic n % K. MQTT: subscriber j
    /// subscribes to topic j % K, publisher i publishes to topic i % K
    /// [default: mqtt-qos1 one per publisher; others 1].
    #[arg(long)]
    pub topics: Option<usize>,
    /// MQTT: QoS of the publishes and subscriptions, 0 or 1 [default:
    /// mqtt-qos1 1, others 0]. At QoS 1 `--depth` is the most unacknowledged
    /// publishes per publisher [default 16].
    #[arg(long)]
    pub qos: Option<u8>,
    /// mqtt-idle: connected idle clients [default: 10000].
    #[arg(long)]
    pub clients: Option<usize>,
    /// MQTT: the protocol version the clients speak (3.1.1 or 5).
    #[arg(long, value_enum, default_value = "3.1.1")]
    pub mqtt_version: crate::mqtt::MqttVersion,
    /// relay-fanout: publish over UDP (one datagram per PUBLISH) instead of TCP.
    #[arg(long)]
    pub publish_udp: bool,
    /// relay-fanout against ADDR:PORT: the server serves this many consecutive
    /// ports from PORT (TCP, and UDP for --publish-udp), e.g. one per shard.
    #[arg(long, default_value_t = 1)]
    pub ports: usize,
}

/// Flags that say where and how results are shown, not what runs.
const OUTPUT_FLAGS: [&str; 3] = ["json", "svg", "quiet"];

/// One scenario as run: its name in the report and its load.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// The scenario with its variant, e.g. `tls-echo 16384 B`.
    pub name: String,
    /// The load.
    pub load: LoadSpec,
}

/// Everything a command line runs, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The scenarios with their loads.
    pub cases: Vec<Case>,
    /// The targets each runs against.
    pub targets: Vec<Target>,
    /// Rounds per target.
    pub rounds: usize,
}

impl Args {
    /// The arguments of the standard suite.
    pub fn suite() -> Args {
        parse_from(["ringport-bench"]).expect("no arguments parse")
    }

    /// Suite defaults for everything the user did not say (`given` lists the
    /// ids of the flags present on the command line).
    fn apply_suite_defaults(&mut self, given: &[String]) {
        let has = |f: &str| given.iter().any(|g| g == f);
        if !has("compare") && !has("target") {
            self.compare = vec![Target::Ringport, Target::Tokio, Target::Epoll];
        }
        if !has("duration") {
            self.duration = 2.0;
        }
        if !has("warmup") {
            self.warmup = 0.5;
        }
        if self.repeat.is_none() {
            self.repeat = Some(2);
        }
    }

    /// What these arguments run: the scenarios (one case per message size
    /// and handshake kind), the targets and the rounds.
    pub fn plan(&self) -> Result<Plan> {
        let targets = if self.compare.is_empty() {
            vec![self.target]
        } else {
            self.compare.clone()
        };
        let scenarios = if self.scenario.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            self.scenario.clone()
        };
        let mut cases = Vec::new();
        for scenario in scenarios {
            let sizes = if self.size.is_empty() {
                scenario.default_sizes().to_vec()
            } else {
                self.size.clone()
            };
            let kinds: Vec<Option<HandshakeKind>> = match scenario {
                Scenario::TlsHandshake if self.handshakes.is_empty() => {
                    vec![Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)]
                }
                Scenario::TlsHandshake => self.handshakes.iter().copied().map(Some).collect(),
                _ => vec![None],
            };
            let subs = self.subscriber_counts(scenario);
            for &size in &sizes {
                for &kind in &kinds {
                    for &n in &subs {
                        let mut name = scenario.as_str().to_owned();
                        if sizes.len() > 1 || scenario == Scenario::TlsEcho {
                            name.push_str(&format!(" {size} B"));
                        }
                        if let Some(k) = kind {
                            name.push_str(&format!(" {}", k.as_str()));
                        }
                        if subs.len() > 1 || scenario == Scenario::MqttFanout {
                            name.push_str(&format!(" {n} subs"));
                        }
                        let mut load = self.load(scenario, n)?;
                        load.size = size;
                        load.handshake = kind;
                        cases.push(Case { name, load });
                    }
                }
            }
        }
        Ok(Plan {
            cases,
            targets,
            rounds: self.repeat.unwrap_or(1).max(1),
        })
    }

    /// The subscriber counts of `scenario`, a case each.
    fn subscriber_counts(&self, scenario: Scenario) -> Vec<usize> {
        if !self.subscribers.is_empty() {
            return self.subscribers.clone();
        }
        match scenario {
            Scenario::MqttFanout => crate::mqtt::DEFAULT_FANOUT_SUBSCRIBERS.to_vec(),
            Scenario::MqttFanin => vec![1],
            Scenario::MqttQos1 => vec![self
                .publishers
                .unwrap_or(crate::mqtt::DEFAULT_QOS1_PUBLISHERS)],
            _ => vec![100],
        }
    }

    /// The MQTT settings (`None` for the other scenarios).
    fn mqtt(&self, scenario: Scenario, subscribers: usize) -> Result<Option<MqttSpec>> {
        let Some(mut m) = MqttSpec::defaults(scenario) else {
            return Ok(None);
        };
        if self.conns.is_some() {
            return Err(anyhow!(
                "{scenario} takes --publishers, --subscribers or --clients, not --conns"
            ));
        }
        if scenario == Scenario::MqttIdle {
            m.clients = self.clients.unwrap_or(m.clients);
        } else {
            m.publishers = self.publishers.unwrap_or(m.publishers);
            m.subscribers = subscribers;
            m.topics = match (self.topics, scenario) {
                (Some(t), _) => t,
                (None, Scenario::MqttQos1) => m.publishers,
                (None, _) => 1,
            };
        }
        m.qos = self.qos.unwrap_or(m.qos);
        m.version = self.mqtt_version;
        Ok(Some(m))
    }

    /// The relay-fanout settings (`None` for the other scenarios).
    fn relay(&self, scenario: Scenario, subscribers: usize) -> Result<Option<RelaySpec>> {
        if scenario != Scenario::RelayFanout {
            return Ok(None);
        }
        if self.conns.is_some() || self.depth.is_some() {
            return Err(anyhow!(
                "relay-fanout takes --subscribers and --publishers, not --conns or --depth"
            ));
        }
        let ports = self.server_shards.max(self.ports).max(1);
        Ok(Some(RelaySpec {
            subscribers,
            publishers: self.publishers.unwrap_or(ports.min(4)),
            topics: self.topics.unwrap_or(1),
            publish_udp: self.publish_udp,
        }))
    }

    fn load(&self, scenario: Scenario, subscribers: usize) -> Result<LoadSpec> {
        let relay = self.relay(scenario, subscribers)?;
        let mqtt = self.mqtt(scenario, subscribers)?;
        let conns = match (&relay, &mqtt) {
            (Some(r), _) => r.subscribers + r.publishers,
            (_, Some(m)) => m.connections(),
            _ => self.conns.unwrap_or(scenario.default_conns()),
        };
        let rate = match (self.rate, &mqtt) {
            (Some(r), _) => r,
            (None, Some(m)) if scenario == Scenario::MqttFanout => {
                (crate::mqtt::DEFAULT_FANOUT_DELIVERIES / m.subscribers.max(1) as u64).max(1)
            }
            _ => scenario.default_rate(),
        };
        Ok(LoadSpec {
            scenario,
            protocol: match self.protocol {
                Some(ProtocolArg::Sockperf) => Protocol::Sockperf,
                Some(ProtocolArg::Echo) => Protocol::Echo,
                None => scenario.default_protocol(),
            },
            conns,
            depth: self.depth.unwrap_or(scenario.default_depth()),
            size: scenario.default_sizes()[0],
            rate,
            duration: Duration::from_secs_f64(self.duration),
            warmup: Duration::from_secs_f64(self.warmup),
            cpus: self.cpus.as_slice().to_vec(),
            messages: self.messages,
            reply_timeout: Duration::from_millis(self.reply_timeout_ms),
            pace_slack: Duration::from_micros(self.pace_slack_us),
            ingest_send: self.ingest_send,
            batch: self.batch,
            relay,
            handshake: None,
            mqtt,
        })
    }
}

/// Parses the process's arguments (exits with clap's message on a bad one).
pub fn parse_env() -> Args {
    parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Parses a command line. The standard suite runs when `--suite` is given
/// or when nothing but output options is: `--json F`, `--svg F` and
/// `--quiet` say where results go, never what runs.
pub fn parse_from<I, T>(argv: I) -> Result<Args, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let command = Args::command();
    let flags: Vec<&str> = command
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .collect();
    let matches = command.clone().try_get_matches_from(argv)?;
    let mut a = Args::from_arg_matches(&matches)?;
    // The ids of the flags given (clap also lists the struct's own group).
    let given: Vec<String> = matches
        .ids()
        .filter(|id| flags.contains(&id.as_str()))
        .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.as_str().to_owned())
        .collect();
    if a.suite || given.iter().all(|g| OUTPUT_FLAGS.contains(&g.as_str())) {
        a.suite = true;
        a.apply_suite_defaults(&given);
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(argv: &[&str]) -> Plan {
        let mut v = vec!["ringport-bench"];
        v.extend_from_slice(argv);
        parse_from(v).unwrap().plan().unwrap()
    }

    #[test]
    fn output_options_alone_run_the_suite_and_never_change_what_runs() {
        // Before: any argument at all, --json included, skipped the suite
        // and ran --target's default (ringport) alone.
        let suite = plan(&[]);
        assert_eq!(
            suite.targets,
            [Target::Ringport, Target::Tokio, Target::Epoll]
        );
        assert_eq!(suite.rounds, 2);
        let names: Vec<&str> = suite.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["tcp-echo", "tcp-rr", "udp-echo", "udp-ingest"]);
        assert_eq!(suite.cases[0].load.duration, Duration::from_secs(2));
        for out in [
            &["--json", "r.json"][..],
            &["--json=r.json"],
            &["--svg", "r.svg"],
            &["--quiet", "--json", "r.json", "--svg", "r.svg"],
        ] {
            assert_eq!(plan(out), suite, "{out:?}");
        }
        let one = plan(&["--scenario", "tcp-echo", "--duration", "5"]);
        assert_eq!(one.targets, [Target::Ringport]);
        assert_eq!(
            plan(&[
                "--scenario",
                "tcp-echo",
                "--duration",
                "5",
                "--json",
                "r.json"
            ]),
            one
        );
        assert_eq!(plan(&["--suite", "--json", "r.json"]), suite);
    }

    #[test]
    fn mqtt_scenarios_take_their_defaults_and_fanout_is_a_case_per_subscriber_count() {
        let p = plan(&[
            "--scenario",
            "mqtt-fanin,mqtt-fanout,mqtt-qos1,mqtt-idle",
            "--compare",
            "ringport,mosquitto",
        ]);
        let names: Vec<&str> = p.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "mqtt-fanin",
                "mqtt-fanout 100 subs",
                "mqtt-fanout 1000 subs",
                "mqtt-qos1",
                "mqtt-idle"
            ]
        );
        let m: Vec<(usize, usize, usize, u8, usize)> = (p.cases.iter())
            .map(|c| {
                let m = c.load.mqtt.as_ref().unwrap();
                (m.publishers, m.subscribers, m.topics, m.qos, m.clients)
            })
            .collect();
        assert_eq!(
            m,
            [
                (100, 1, 1, 0, 0),
                (1, 100, 1, 0, 0),
                (1, 1000, 1, 0, 0),
                (16, 16, 16, 1, 0),
                (0, 0, 1, 0, 10_000)
            ]
        );
        let rates: Vec<u64> = p.cases.iter().map(|c| c.load.rate).collect();
        assert_eq!(rates, [50_000, 500, 50, 10_000, 0]);
        assert_eq!(p.cases[3].load.depth, 16);
        for c in &p.cases {
            c.load.validate().unwrap();
        }

        let p = plan(&[
            "--scenario",
            "mqtt-qos1",
            "--publishers",
            "4",
            "--rate",
            "1000",
            "--mqtt-version",
            "5",
        ]);
        let m = p.cases[0].load.mqtt.as_ref().unwrap();
        assert_eq!((m.publishers, m.subscribers, m.topics), (4, 4, 4));
        assert_eq!(m.version, crate::mqtt::MqttVersion::V5);
        assert_eq!(p.cases[0].load.rate, 1000);
        let e = parse_from(["b", "--scenario", "mqtt-fanin", "--conns", "3"])
            .unwrap()
            .plan()
            .unwrap_err();
        assert!(e.to_string().contains("--publishers"), "{e}");
        // relay-fanout keeps its defaults.
        let r = plan(&["--scenario", "relay-fanout"]);
        let relay = r.cases[0].load.relay.as_ref().unwrap();
        assert_eq!((relay.subscribers, relay.topics), (100, 1));
        assert_eq!(r.cases[0].name, "relay-fanout");
    }

    #[test]
    fn tls_scenarios_expand_into_one_case_per_size_and_handshake_kind() {
        let p = plan(&[
            "--scenario",
            "tls-echo,tls-handshake",
            "--compare",
            "ringport,tokio-rustls,haproxy",
        ]);
        let names: Vec<&str> = p.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "tls-echo 64 B",
                "tls-echo 16384 B",
                "tls-handshake full",
                "tls-handshake resumed"
            ]
        );
        let sizes: Vec<usize> = p.cases.iter().map(|c| c.load.size).collect();
        assert_eq!(sizes, [64, 16384, 64, 64]);
        assert!(p.cases.iter().all(|c| c.load.protocol == Protocol::Echo));
        assert_eq!(p.cases[3].load.handshake, Some(HandshakeKind::Resumed));
        assert_eq!(p.cases[0].load.handshake, None);
        let p = plan(&[
            "--scenario",
            "tls-handshake",
            "--handshakes",
            "resumed",
            "--size",
            "100",
        ]);
        assert_eq!(p.cases.len(), 1);
        assert_eq!(p.cases[0].name, "tls-handshake resumed");
        assert_eq!(p.cases[0].load.size, 100);
        let p = plan(&["--scenario", "tls-echo", "--size", "16384"]);
        assert_eq!(p.cases[0].name, "tls-echo 16384 B");
    }
}
