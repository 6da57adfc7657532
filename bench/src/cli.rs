//! Command-line flags and the top-level flow: scenarios x rounds x targets.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use clap::Parser;
use ringport_engine::cpus::CpuList;

use crate::config::{IngestSend, LoadSpec, Scenario};
use crate::fanout::RelaySpec;
use crate::report::{self, Machine, Report, ScenarioResult, TargetResult};
use crate::run::{self, Figures};
use crate::servers::{relay_support_error, ServerSpec, Target};
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
#[derive(Debug, Clone, Parser)]
#[command(name = "ringport-bench", version)]
pub struct Args {
    /// Scenario to run (default: the suite's four; relay-fanout runs only
    /// when named).
    #[arg(long, value_enum)]
    pub scenario: Option<Scenario>,
    /// Run the standard suite (what no arguments does); other flags still apply.
    #[arg(long)]
    pub suite: bool,
    /// What the servers speak.
    #[arg(long, value_enum, default_value = "sockperf")]
    pub protocol: ProtocolArg,
    /// Connections (TCP) or sockets (UDP) [default: per scenario: 64, 64, 16, 64].
    #[arg(long)]
    pub conns: Option<usize>,
    /// Requests in flight per connection [default: per scenario: 4, 1, 4, 16].
    #[arg(long)]
    pub depth: Option<usize>,
    /// Message size in bytes, sockperf header included (relay-fanout: the
    /// PUBLISH payload, at least 32).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
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
    /// Target: ringport, tokio, tokio-mt, epoll, sockperf, or ADDR:PORT of an external server.
    #[arg(long, default_value = "ringport")]
    pub target: Target,
    /// Compare several targets, e.g. `ringport,tokio,epoll` (overrides --target).
    #[arg(long, value_delimiter = ',')]
    pub compare: Vec<Target>,
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

impl Args {
    /// The arguments of the standard suite.
    pub fn suite() -> Args {
        let mut a = Args::parse_from(["ringport-bench", "--suite"]);
        a.apply_suite_defaults(&[]);
        a
    }

    /// Suite defaults for everything the user did not say (`given` lists the
    /// flags present on the command line).
    fn apply_suite_defaults(&mut self, given: &[String]) {
        let has = |f: &str| {
            given
                .iter()
                .any(|g| g == f || g.starts_with(&format!("{f}=")))
        };
        if !has("--compare") && !has("--target") {
            self.compare = vec![Target::Ringport, Target::Tokio, Target::Epoll];
        }
        if !has("--duration") {
            self.duration = 2.0;
        }
        if !has("--warmup") {
            self.warmup = 0.5;
        }
        if self.repeat.is_none() {
            self.repeat = Some(2);
        }
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
                ProtocolArg::Sockperf => Protocol::Sockperf,
                ProtocolArg::Echo => Protocol::Echo,
            },
            conns,
            depth: self.depth.unwrap_or(scenario.default_depth()),
            size: self.size,
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
        })
    }
}

/// Parses the process's arguments; none at all means the suite.
pub fn parse_env() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() == 1 {
        return Args::suite();
    }
    let mut a = Args::parse_from(&argv);
    if a.suite {
        a.apply_suite_defaults(&argv[1..]);
    }
    a
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

fn fmt_plain_run(f: &Figures) -> String {
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

/// Runs what `args` asks for: prints each scenario's table on stdout, writes
/// the JSON report if asked, and returns it (`passed` says how to exit).
pub fn run(args: &Args, command: Vec<String>) -> Result<Report> {
    let targets: Vec<Target> = if args.compare.is_empty() {
        vec![args.target]
    } else {
        args.compare.clone()
    };
    let scenarios: Vec<Scenario> = match args.scenario {
        Some(s) => vec![s],
        None => Scenario::ALL.to_vec(),
    };
    if scenarios.contains(&Scenario::RelayFanout) {
        if let Some(e) = relay_support_error(&targets) {
            return Err(anyhow!(e));
        }
    }
    let rounds = args.repeat.unwrap_or(1).max(1);
    let mut results = Vec::new();
    let mut passed = true;
    for scenario in scenarios {
        let mut load = args.load(scenario)?;
        load.validate().map_err(|e| anyhow!(e))?;
        let server = ServerSpec {
            udp: scenario.is_udp(),
            protocol: load.protocol,
            shards: args.server_shards.max(1),
            cpus: args.server_cpus.as_slice().to_vec(),
            relay: scenario == Scenario::RelayFanout,
            external_ports: args.ports.max(1),
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
            let f = run::run_one(&cal, Target::Ringport, &server, label)
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
            scenario: scenario.as_str().to_owned(),
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
                let label = format!("{scenario} {} {}/{rounds}", t.name(), round + 1);
                let f = run::run_one(&load, *t, &server, (!args.quiet).then_some(&label))
                    .with_context(|| format!("{scenario} against {}", t.name()))?;
                progress(
                    args,
                    &format!(
                        "{scenario} {} round {}/{rounds}: {}",
                        t.name(),
                        round + 1,
                        fmt_run(&f)
                    ),
                );
                if let Some(w) = contention_warning(&f) {
                    eprintln!("{scenario} {} round {}: warning: {w}", t.name(), round + 1);
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
