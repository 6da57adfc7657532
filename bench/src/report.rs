//! Aggregating rounds, the human table and the JSON report.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::LoadSpec;
use crate::run::Figures;

/// One figure of the table: its JSON key, its label, and how to read it.
#[derive(Debug, Clone, Copy)]
pub struct FigureDef {
    /// Key in the JSON summary.
    pub key: &'static str,
    /// Row label in the table.
    pub label: &'static str,
    /// Reads the value from a run (`None`: not measured).
    pub get: fn(&Figures) -> Option<f64>,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// The MQTT figures of a publish/subscribe run (not mqtt-idle's).
fn mqtt_pubsub(f: &Figures) -> Option<crate::mqtt::MqttFigures> {
    f.mqtt.filter(|m| m.idle_clients.is_none())
}

/// Every figure of the table, in order.
pub const FIGURES: &[FigureDef] = &[
    FigureDef {
        key: "throughput",
        label: "throughput (msg/s)",
        get: |f| Some(f.throughput),
    },
    FigureDef {
        key: "offered",
        label: "offered (msg/s)",
        get: |f| Some(f.offered),
    },
    FigureDef {
        key: "publish_rate",
        label: "publishes (msg/s)",
        get: |f| (f.relay.map(|r| r.publish_rate)).or(mqtt_pubsub(f).map(|m| m.publish_rate)),
    },
    FigureDef {
        key: "published",
        label: "published",
        get: |f| {
            (f.relay.map(|r| r.published))
                .or(mqtt_pubsub(f).map(|m| m.published))
                .map(|n| n as f64)
        },
    },
    FigureDef {
        key: "deliveries_expected",
        label: "deliveries expected",
        get: |f| {
            (f.relay.map(|r| r.expected))
                .or(mqtt_pubsub(f).map(|m| m.expected))
                .map(|n| n as f64)
        },
    },
    FigureDef {
        key: "deliveries_received",
        label: "deliveries received",
        get: |f| {
            (f.relay.map(|r| r.delivered))
                .or(mqtt_pubsub(f).map(|m| m.delivered))
                .map(|n| n as f64)
        },
    },
    FigureDef {
        key: "acked",
        label: "PUBACKs received",
        get: |f| f.mqtt.and_then(|m| m.acked).map(|n| n as f64),
    },
    FigureDef {
        key: "unacked",
        label: "never acknowledged",
        get: |f| f.mqtt.and_then(|m| m.unacked).map(|n| n as f64),
    },
    FigureDef {
        key: "puback_p50_us",
        label: "PUBACK p50 (us)",
        get: |f| f.mqtt.and_then(|m| m.puback).map(|l| us(l.p50)),
    },
    FigureDef {
        key: "puback_p99_us",
        label: "PUBACK p99 (us)",
        get: |f| f.mqtt.and_then(|m| m.puback).map(|l| us(l.p99)),
    },
    FigureDef {
        key: "puback_p999_us",
        label: "PUBACK p99.9 (us)",
        get: |f| f.mqtt.and_then(|m| m.puback).map(|l| us(l.p999)),
    },
    FigureDef {
        key: "idle_clients",
        label: "idle clients",
        get: |f| f.mqtt.and_then(|m| m.idle_clients).map(|n| n as f64),
    },
    FigureDef {
        key: "rss_before_mib",
        label: "server RSS before (MiB)",
        get: |f| {
            f.mqtt
                .and_then(|m| m.rss_before)
                .map(|b| b as f64 / 1048576.0)
        },
    },
    FigureDef {
        key: "rss_after_mib",
        label: "server RSS after (MiB)",
        get: |f| {
            f.mqtt
                .and_then(|m| m.rss_after)
                .map(|b| b as f64 / 1048576.0)
        },
    },
    FigureDef {
        key: "rss_per_client_bytes",
        label: "server RSS/client (B)",
        get: |f| f.mqtt.and_then(|m| m.rss_per_client),
    },
    FigureDef {
        key: "handshakes_full",
        label: "full handshakes",
        get: |f| f.handshakes.map(|h| h.full as f64),
    },
    FigureDef {
        key: "handshakes_resumed",
        label: "resumed handshakes",
        get: |f| f.handshakes.map(|h| h.resumed as f64),
    },
    FigureDef {
        key: "p50_us",
        label: "latency p50 (us)",
        get: |f| f.latency.map(|l| us(l.p50)),
    },
    FigureDef {
        key: "p90_us",
        label: "latency p90 (us)",
        get: |f| f.latency.map(|l| us(l.p90)),
    },
    FigureDef {
        key: "p99_us",
        label: "latency p99 (us)",
        get: |f| f.latency.map(|l| us(l.p99)),
    },
    FigureDef {
        key: "p999_us",
        label: "latency p99.9 (us)",
        get: |f| f.latency.map(|l| us(l.p999)),
    },
    FigureDef {
        key: "max_us",
        label: "latency max (us)",
        get: |f| f.latency.map(|l| us(l.max)),
    },
    FigureDef {
        key: "p99_uncorrected_us",
        label: "p99 uncorrected (us)",
        get: |f| f.latency_uncorrected.map(|l| us(l.p99)),
    },
    FigureDef {
        key: "p999_uncorrected_us",
        label: "p99.9 uncorrected (us)",
        get: |f| f.latency_uncorrected.map(|l| us(l.p999)),
    },
    FigureDef {
        key: "errors",
        label: "errors (wrong bytes)",
        get: |f| Some(f.errors as f64),
    },
    FigureDef {
        key: "lost",
        label: "lost",
        get: |f| f.lost.map(|v| v as f64),
    },
    FigureDef {
        key: "lagged",
        label: "lagged (LAGGED counts)",
        get: |f| f.relay.map(|r| r.lagged as f64),
    },
    FigureDef {
        key: "server_drops",
        label: "server drops",
        get: |f| {
            (f.relay.and_then(|r| r.server_drops))
                .or(f.mqtt.and_then(|m| m.server_drops))
                .map(|v| v as f64)
        },
    },
    FigureDef {
        key: "duplicates",
        label: "duplicates",
        get: |f| Some(f.duplicates as f64),
    },
    FigureDef {
        key: "reordered",
        label: "reordered",
        get: |f| Some(f.reordered as f64),
    },
    FigureDef {
        key: "error_rate",
        label: "error+loss rate",
        get: |f| Some(f.error_rate),
    },
    FigureDef {
        key: "server_user_s_per_m",
        label: "server user s/M msgs",
        get: |f| f.server_user_per_m,
    },
    FigureDef {
        key: "server_sys_s_per_m",
        label: "server sys s/M msgs",
        get: |f| f.server_sys_per_m,
    },
    FigureDef {
        key: "server_cpu_s_per_m",
        label: "server CPU s/M msgs",
        get: |f| f.server_cpu_per_m,
    },
    FigureDef {
        key: "proxy_cpu_s_per_m",
        label: "  of it proxy s/M",
        get: |f| f.proxy_cpu_per_m,
    },
    FigureDef {
        key: "backend_cpu_s_per_m",
        label: "  of it backend s/M",
        get: |f| f.backend_cpu_per_m,
    },
    FigureDef {
        key: "msgs_per_server_core_s",
        label: "msgs per server core-s",
        get: |f| f.server_cpu_per_m.filter(|c| *c > 0.0).map(|c| 1e6 / c),
    },
    FigureDef {
        key: "server_busy_pct",
        label: "server CPU busy (%)",
        get: |f| f.server_busy_pct,
    },
    FigureDef {
        key: "server_cpus_idle_pct",
        label: "server CPUs idle (%)",
        get: |f| f.server_cpus_idle_pct,
    },
    FigureDef {
        key: "server_cpus_other_pct",
        label: "server CPUs other (%)",
        get: |f| f.server_cpus_other_pct,
    },
    FigureDef {
        key: "client_cpu_s_per_m",
        label: "client CPU s/M msgs",
        get: |f| f.client_cpu_per_m,
    },
    FigureDef {
        key: "client_busy_pct",
        label: "client CPU busy (%)",
        get: |f| f.client_busy_pct,
    },
    FigureDef {
        key: "client_bound",
        label: "client-bound (1 = yes)",
        get: |f| Some(f64::from(u8::from(f.client_bound))),
    },
    FigureDef {
        key: "client_cpus_other_pct",
        label: "client CPUs other (%)",
        get: |f| f.client_cpus_other_pct,
    },
    FigureDef {
        key: "kernel_drops",
        label: "kernel drops",
        get: |f| f.kernel_drops.map(|v| v as f64),
    },
];

/// Median, min and max of one figure over the rounds, and its ratio to ringport's median.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    /// Median over the rounds (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// This target's median over ringport's (`None` without ringport, or when ringport's is 0).
    pub ratio: Option<f64>,
}

/// The median, min and max of `values` (`None` if empty).
pub fn stat(values: &[f64]) -> Option<Stat> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[n - 1],
        ratio: None,
    })
}

/// All rounds of one target in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// The target's name.
    pub target: String,
    /// Each round's figures, in the order run.
    pub runs: Vec<Figures>,
    /// Per-figure statistics over the rounds, keyed by [`FigureDef::key`].
    pub summary: BTreeMap<String, Stat>,
}

/// One scenario against every compared target.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// The scenario name.
    pub scenario: String,
    /// The load.
    pub load: LoadSpec,
    /// Server shards.
    pub server_shards: usize,
    /// Server CPUs.
    pub server_cpus: Vec<usize>,
    /// Rounds per target.
    pub rounds: usize,
    /// One entry per target, in `--compare` order.
    pub targets: Vec<TargetResult>,
}

impl ScenarioResult {
    /// Fills every target's summary from its runs, with ratios to `ringport`.
    pub fn summarize(&mut self) {
        for t in &mut self.targets {
            t.summary.clear();
            for def in FIGURES {
                let vals: Vec<f64> = t.runs.iter().filter_map(def.get).collect();
                if let Some(s) = stat(&vals) {
                    t.summary.insert(def.key.to_owned(), s);
                }
            }
        }
        let base: Option<BTreeMap<String, Stat>> = self
            .targets
            .iter()
            .find(|t| t.target == "ringport")
            .map(|t| t.summary.clone());
        if let Some(base) = base {
            for t in &mut self.targets {
                for (k, s) in t.summary.iter_mut() {
                    s.ratio = base
                        .get(k)
                        .filter(|b| b.median != 0.0)
                        .map(|b| s.median / b.median);
                }
            }
        }
    }
}

/// The machine a report was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Kernel release.
    pub kernel: String,
    /// CPU model name.
    pub cpu_model: String,
    /// CPUs this process may use.
    pub cores: usize,
    /// Seconds since the Unix epoch when the report was made.
    pub unix_time: u64,
}

impl Machine {
    /// Reads the running machine's description.
    pub fn detect() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            kernel: ringport_engine::sys::ring::kernel_release(),
            cpu_model,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

/// The whole JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// The command line, as given.
    pub command: Vec<String>,
    /// `--max-error-rate`.
    pub max_error_rate: f64,
    /// Whether every run stayed within `--max-error-rate`.
    pub passed: bool,
    /// Results per scenario.
    pub scenarios: Vec<ScenarioResult>,
}

fn human(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// What the load of `l` is, for the table's heading.
fn shape(l: &LoadSpec) -> String {
    if let Some(m) = &l.mqtt {
        return crate::mqtt::shape(l, m);
    }
    if let Some(r) = &l.relay {
        return format!(
            "{} subscribers, {} {} publishers, {} topic(s), {} B payloads, {} publishes/s \
             (throughput and CPU: per delivery)",
            r.subscribers,
            r.publishers,
            if r.publish_udp { "UDP" } else { "TCP" },
            r.topics,
            l.size,
            human(l.rate as f64)
        );
    }
    if let Some(kind) = l.handshake {
        return format!(
            "{} connectors, {} handshakes, one {} B echo per connection, closed loop \
             (throughput, latency and CPU: per handshake)",
            l.conns,
            kind.as_str(),
            l.size
        );
    }
    let mode = if l.rate == 0 {
        if l.scenario.is_one_way() {
            "full speed".to_owned()
        } else {
            "closed loop".to_owned()
        }
    } else {
        format!("open loop at {} msg/s", human(l.rate as f64))
    };
    format!(
        "{} conns x depth {}, {} B, {mode}",
        l.conns, l.depth, l.size
    )
}

/// The human table of one scenario.
pub fn table(s: &ScenarioResult) -> String {
    let l = &s.load;
    let mut out = format!(
        "== {}: {}, {:.1} s (+{:.1} s warm-up), {} round(s); client CPUs {:?}, server {} shard(s) on CPUs {:?}\n",
        s.scenario,
        shape(l),
        l.duration.as_secs_f64(),
        l.warmup.as_secs_f64(),
        s.rounds,
        l.cpus,
        s.server_shards,
        s.server_cpus
    );
    const W: usize = 34;
    out.push_str(&format!("{:<24}", "figure"));
    for t in &s.targets {
        out.push_str(&format!("{:<W$}", t.target));
    }
    out.push('\n');
    for def in FIGURES {
        if s.targets.iter().all(|t| !t.summary.contains_key(def.key)) {
            continue;
        }
        out.push_str(&format!("{:<24}", def.label));
        for t in &s.targets {
            let cell = match t.summary.get(def.key) {
                None => "-".to_owned(),
                Some(st) => {
                    let mut c = human(st.median);
                    if s.rounds > 1 && st.min != st.max {
                        c.push_str(&format!(" [{}..{}]", human(st.min), human(st.max)));
                    }
                    if t.target != "ringport" {
                        if let Some(r) = st.ratio {
                            c.push_str(&format!(" {r:.2}x"));
                        }
                    }
                    c
                }
            };
            out.push_str(&format!("{cell:<W$}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_human_numbers() {
        let s = stat(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert_eq!(stat(&[]), None);
        assert_eq!(human(1_234_567.0), "1.23M");
        assert_eq!(human(12_345.0), "12.3k");
        assert_eq!(human(7.0), "7");
        assert_eq!(human(0.5), "0.5000");
    }
}
