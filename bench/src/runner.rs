//! Runs a command line's plan: scenarios x rounds x targets, with a
//! progress line per run, a table per scenario, and the JSON and SVG reports.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};

use crate::cli::Args;
use crate::config::{LoadSpec, Scenario};
use crate::report::{self, Machine, Report, ScenarioResult, TargetResult};
use crate::run::{self, Figures};
use crate::servers::{support_error, ServerSpec, Target};
use crate::tls::{ClientTls, TlsFiles};

fn progress(args: &Args, line: &str) {
    if !args.quiet {
        eprintln!("{line}");
    }
}

fn fmt_run(f: &Figures) -> String {
    if let Some(line) = crate::mqtt::fmt_run(f) {
        return line;
    }
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
            mqtt: scenario.is_mqtt(),
            batch_delay_us: args.batch_delay_us,
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
