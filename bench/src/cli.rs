//! Command-line flags and the top-level flow: scenarios x rounds x targets.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser};
use ringport_engine::cpus::CpuList;

use crate::config::{IngestSend, LoadSpec, Scenario};
use crate::fanout::RelaySpec;
use crate::report::{self, Machine, Report, ScenarioResult, TargetResult};
use crate::run::{self, Figures};
use crate::servers::{support_error, ServerSpec, Target};
use crate::tls::{ClientTls, HandshakeKind, TlsFiles};
use crate::wire::Protocol;

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
    /// four; relay-fanout, tls-echo and tls-handshake run only when named).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenario: Vec<Scenario>,
    /// Run the standard suite (what no arguments does); other flags still apply.
    #[arg(long)]
    pub suite: bool,
    /// What the servers speak [default: echo for the TLS scenarios, else sockperf].
    #[arg(long, value_enum)]
    pub protocol: Option<ProtocolArg>,
    /// Connections (TCP) or sockets (UDP) [default: per scenario: 64, 64, 16, 64].
    #[arg(long)]
    pub conns: Option<usize>,
    /// Requests in flight per connection [default: per scenario: 4, 1, 4, 16].
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
    /// publishes/s over all publishers; others 0].
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
    /// Target: ringport, tokio, tokio-mt, epoll, sockperf, or ADDR:PORT of an
    /// external server; for the TLS scenarios ringport, tokio-rustls or haproxy.
    #[arg(long, default_value = "ringport")]
    pub target: Target,
    /// Compare several targets, e.g. `ringport,tokio,epoll` or
    /// `ringport,tokio-rustls,haproxy` (overrides --target).
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
    /// relay-fanout: subscriber connections (TCP), spread over the server's ports.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// relay-fanout: publishers, spread over the server's ports [default: one
    /// per port (--server-shards, or --ports of an external target), at most 4].
    #[arg(long)]
    pub publishers: Option<usize>,
    /// relay-fanout: topics; subscriber j subscribes to topic j % K, a
    /// publisher's message n goes to topic n % K.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
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
            for &size in &sizes {
                for &kind in &kinds {
                    let mut name = scenario.as_str().to_owned();
                    if sizes.len() > 1 || scenario == Scenario::TlsEcho {
                        name.push_str(&format!(" {size} B"));
                    }
                    if let Some(k) = kind {
                        name.push_str(&format!(" {}", k.as_str()));
                    }
                    let mut load = self.load(scenario)?;
                    load.size = size;
                    load.handshake = kind;
                    cases.push(Case { name, load });
                }
            }
        }
        Ok(Plan {
            cases,
            targets,
            rounds: self.repeat.unwrap_or(1).max(1),
        })
    }

    /// The relay-fanout settings (`None` for the other scenarios).
    fn relay(&self, scenario: Scenario) -> Result<Option<RelaySpec>> {
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
            subscribers: self.subscribers,
            publishers: self.publishers.unwrap_or(ports.min(4)),
            topics: self.topics,
            publish_udp: self.publish_udp,
        }))
    }

    fn load(&self, scenario: Scenario) -> Result<LoadSpec> {
        let relay = self.relay(scenario)?;
        let conns = match &relay {
            Some(r) => r.subscribers + r.publishers,
            None => self.conns.unwrap_or(scenario.default_conns()),
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
            rate: self.rate.unwrap_or(scenario.default_rate()),
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

fn progress(args: &Args, line: &str) {
    if !args.quiet {
        eprintln!("{line}");
    }
}

fn fmt_run(f: &Figures) -> String {
    let Some(r) = &f.relay else {
        return fmt_plain_run(f);
    };
    let lat = f
        .latency
        .map(|l| format!(", p50 {:.1} us, p99 {:.1} us", us(l.p50), us(l.p99)))
        .unwrap_or_default();
    let cpu = f
        .server_cpu_per_m
        .map(|c| format!(", server {c:.2} s/M deliveries"))
        .unwrap_or_default();
    format!(
        "{:.0} deliveries/s ({:.0} publishes/s){lat}{cpu}, delivered {}/{}, errors {}, lost {} (lagged {})",
        f.throughput, r.publish_rate, r.delivered, r.expected, f.errors, r.lost, r.lagged
    )
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn fmt_handshake_run(f: &Figures, full: u64, resumed: u64) -> String {
    let lat = f
        .latency
        .map(|l| format!(", p50 {:.1} us, p99 {:.1} us", us(l.p50), us(l.p99)))
        .unwrap_or_default();
    let cpu = f
        .server_cpu_per_m
        .map(|c| format!(", server {c:.1} us/handshake"))
        .unwrap_or_default();
    format!(
        "{:.0} handshakes/s (full {full}, resumed {resumed}){lat}{cpu}, client {:.0}% busy, \
         errors {}, failed {}",
        f.throughput,
        f.client_busy_pct.unwrap_or(0.0),
        f.errors,
        f.io_errors
    )
}

fn fmt_plain_run(f: &Figures) -> String {
    if let Some(h) = f.handshakes {
        return fmt_handshake_run(f, h.full, h.resumed);
    }
    let lat = f
        .latency
        .map(|l| {
            format!(
                ", p50 {:.1} us, p99 {:.1} us",
                l.p50 as f64 / 1e3,
                l.p99 as f64 / 1e3
            )
        })
        .unwrap_or_default();
    let cpu = f
        .server_cpu_per_m
        .map(|c| format!(", server {c:.2} s/M"))
        .unwrap_or_default();
    format!(
        "{:.0} msg/s{lat}{cpu}, errors {}, lost {}",
        f.throughput,
        f.errors,
        f.lost.map(|l| l.to_string()).unwrap_or_else(|| "?".into())
    )
}

/// Other work above this share of the client's or server's CPUs (%) makes a
/// run's figures suspect.
pub const CONTENTION_PCT: f64 = 10.0;

/// A warning when other work took a noticeable share of the CPUs of the run.
pub fn contention_warning(f: &Figures) -> Option<String> {
    let s = f.server_cpus_other_pct.unwrap_or(0.0);
    let c = f.client_cpus_other_pct.unwrap_or(0.0);
    (s > CONTENTION_PCT || c > CONTENTION_PCT).then(|| {
        format!(
            "other work (other processes, or kernel threads such as ksoftirqd) took \
             {s:.0}% of the server CPUs and {c:.0}% of the client CPUs; figures of this \
             run are not the harness's and the server's alone"
        )
    })
}

/// Whether a run stays within `max` (see `--max-error-rate`).
pub fn within_error_budget(load: &LoadSpec, f: &Figures, max: f64) -> bool {
    let rate = if load.scenario.is_one_way() && load.rate == 0 {
        if f.sent == 0 {
            0.0
        } else {
            (f.errors + f.io_errors) as f64 / f.sent as f64
        }
    } else {
        f.error_rate
    };
    rate <= max
}

/// A warning when the client's threads were (nearly) always busy: the
/// server may have had more to give than the run shows.
pub fn client_bound_warning(f: &Figures) -> Option<String> {
    f.client_bound.then(|| {
        format!(
            "client-bound: the load generator's threads were {:.0}% busy; throughput is the \
             client's ceiling (CPU per message is still the server's)",
            f.client_busy_pct.unwrap_or(0.0)
        )
    })
}

/// The CPUs of the haproxy target's backend: `--backend-cpu`, else the
/// first CPU this process may use that neither the client nor the server
/// does, else the server's first CPU.
fn backend_cpus(args: &Args) -> Vec<usize> {
    if let Some(c) = args.backend_cpu {
        return vec![c];
    }
    let (client, server) = (args.cpus.as_slice(), args.server_cpus.as_slice());
    let spare = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .find(|c| !client.contains(c) && !server.contains(c));
    vec![spare.unwrap_or(server[0])]
}

/// The run's certificates and the client's settings for them, made on first use.
#[derive(Default)]
struct TlsMaterial(Option<(Arc<TlsFiles>, ClientTls)>);

impl TlsMaterial {
    fn get(&mut self) -> Result<(Arc<TlsFiles>, ClientTls)> {
        if self.0.is_none() {
            let files = Arc::new(TlsFiles::generate().context("making the TLS certificates")?);
            let client = ClientTls::new(&files)?;
            self.0 = Some((files, client));
        }
        Ok(self.0.clone().expect("made above"))
    }
}

/// Runs what `args` asks for: prints each scenario's table on stdout, writes
/// the JSON report if asked, and returns it (`passed` says how to exit).
pub fn run(args: &Args, command: Vec<String>) -> Result<Report> {
    let plan = args.plan()?;
    let targets = &plan.targets;
    for case in &plan.cases {
        if let Some(e) = support_error(case.load.scenario, targets) {
            return Err(anyhow!(e));
        }
        case.load
            .validate()
            .map_err(|e| anyhow!("{}: {e}", case.name))?;
    }
    let rounds = plan.rounds;
    let mut tls = TlsMaterial::default();
    let mut results = Vec::new();
    let mut passed = true;
    for case in &plan.cases {
        let (scenario, name) = (case.load.scenario, case.name.as_str());
        let mut load = case.load.clone();
        let (files, client_tls) = if scenario.is_tls() {
            let (f, c) = tls.get()?;
            (Some(f), Some(c))
        } else {
            (None, None)
        };
        let server = ServerSpec {
            udp: scenario.is_udp(),
            protocol: load.protocol,
            shards: args.server_shards.max(1),
            cpus: args.server_cpus.as_slice().to_vec(),
            relay: scenario == Scenario::RelayFanout,
            external_ports: args.ports.max(1),
            tls: files,
            backend_cpus: backend_cpus(args),
        };
        if scenario == Scenario::TcpRr && args.rate.is_none() && targets.contains(&Target::Ringport)
        {
            // tcp-rr runs at half of ringport's capacity for the same
            // connections and depth, measured by a short closed-loop run.
            let mut cal = load.clone();
            cal.scenario = Scenario::TcpEcho;
            cal.rate = 0;
            cal.duration = Duration::from_secs(1);
            cal.warmup = Duration::from_millis(300);
            let label = (!args.quiet).then_some("tcp-rr: calibrating");
            let f = run::run_one(&cal, Target::Ringport, &server, label, None)
                .context("calibrating tcp-rr's rate against ringport")?;
            load.rate = ((f.throughput / 2.0) as u64).max(1000);
            progress(
                args,
                &format!(
                    "tcp-rr: ringport does {:.0} msg/s closed loop with {} conns x depth {}; running at {}",
                    f.throughput, load.conns, load.depth, load.rate
                ),
            );
        }
        let mut res = ScenarioResult {
            scenario: name.to_owned(),
            load: load.clone(),
            server_shards: server.shards,
            server_cpus: server.cpus.clone(),
            rounds,
            targets: targets
                .iter()
                .map(|t| TargetResult {
                    target: t.name(),
                    runs: Vec::new(),
                    summary: Default::default(),
                })
                .collect(),
        };
        for round in 0..rounds {
            for (ti, t) in targets.iter().enumerate() {
                let label = format!("{name} {} {}/{rounds}", t.name(), round + 1);
                let f = run::run_one(
                    &load,
                    *t,
                    &server,
                    (!args.quiet).then_some(&label),
                    client_tls.as_ref(),
                )
                .with_context(|| format!("{name} against {}", t.name()))?;
                progress(
                    args,
                    &format!(
                        "{name} {} round {}/{rounds}: {}",
                        t.name(),
                        round + 1,
                        fmt_run(&f)
                    ),
                );
                let warnings = [contention_warning(&f), client_bound_warning(&f)];
                for w in warnings.into_iter().flatten() {
                    eprintln!("{name} {} round {}: warning: {w}", t.name(), round + 1);
                }
                if !within_error_budget(&load, &f, args.max_error_rate) {
                    passed = false;
                }
                res.targets[ti].runs.push(f);
            }
        }
        res.summarize();
        println!("{}", report::table(&res));
        results.push(res);
    }
    let report = Report {
        machine: Machine::detect(),
        command,
        max_error_rate: args.max_error_rate,
        passed,
        scenarios: results,
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        crate::plot::write_svg(path, &report)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
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
