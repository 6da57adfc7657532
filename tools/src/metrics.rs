//! `GET /metrics`: the counters in Prometheus text format (version 0.0.4).

use std::fmt::Write as _;

use ringport_engine::alerts::Metric;
use ringport_engine::latency::{Histogram, BOUNDS_US};
use ringport_engine::listener_stats::{ListenerCounters, ListenerDrop, TimeoutKind};
use ringport_engine::policy::DenyReason;
use ringport_engine::stats::ShardStats;
use ringport_engine::tls::HandshakeResult;
use ringport_engine::EngineDrop;
use ringport_plugin::{ConnectFailure, DropReason};

/// The `metric` label of the source-denial alert.
pub const SOURCE_DENIALS: &str = "source_denials";

/// One listener as the metrics show it.
#[derive(Debug, Clone)]
pub struct ListenerView {
    /// Its spec, the `listener` label.
    pub name: String,
    /// Its counters summed over shards.
    pub counters: ListenerCounters,
    /// Which alerts fire, by [`Metric`] discriminant.
    pub alerts: [bool; Metric::COUNT],
    /// A `tls` listener: seconds until its certificate expires (negative
    /// once it has). None: not a `tls` listener.
    pub tls_expires_in: Option<i64>,
}

/// What the metrics are rendered from.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Per shard.
    pub shards: Vec<ShardStats>,
    /// Per shard: cross-shard messages waiting for it, as of its last turn.
    pub mesh_depth: Vec<usize>,
    /// Per listener.
    pub listeners: Vec<ListenerView>,
    /// Handshake-log records dropped because a queue was full.
    pub log_dropped: u64,
    /// Handshake-log lines lost to write errors.
    pub log_lines_lost: u64,
    /// Handshake-log writes that failed.
    pub log_write_errors: u64,
    /// How admin connections ended.
    pub admin: crate::admin::AdminCounts,
    /// Seconds since start.
    pub uptime_secs: f64,
    /// The I/O backend the shards run on (`io-uring` or `epoll`).
    pub backend: &'static str,
    /// Whether the server is draining.
    pub draining: bool,
    /// Per shard: latency histograms by name (plugin-reported, and the
    /// engine's `mesh_handoff`).
    pub latencies: Vec<Vec<(&'static str, Histogram)>>,
}

/// Escapes a label value.
pub(crate) fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", label(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {v}");
    }
}

/// Renders `s` as Prometheus text.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::with_capacity(8192));
    let shard_ids: Vec<String> = s.shards.iter().map(|x| x.shard.to_string()).collect();
    type Get = fn(&ringport_engine::Counters) -> u64;
    let per_shard: [(&str, &str, &str, Get); 18] = [
        (
            "ringport_messages_total",
            "counter",
            "Application messages the plugins handled.",
            |c| c.msgs,
        ),
        (
            "ringport_datagrams_received_total",
            "counter",
            "Datagrams received.",
            |c| c.datagrams_in,
        ),
        (
            "ringport_datagrams_sent_total",
            "counter",
            "Datagrams sent.",
            |c| c.datagrams_out,
        ),
        (
            "ringport_connections_accepted_total",
            "counter",
            "Streams accepted by a plugin.",
            |c| c.conns_accepted,
        ),
        (
            "ringport_connections_rejected_total",
            "counter",
            "Streams rejected by a plugin at open.",
            |c| c.conns_rejected,
        ),
        (
            "ringport_connections_closed_total",
            "counter",
            "Streams closed.",
            |c| c.conns_closed,
        ),
        ("ringport_connections_open", "gauge", "Streams open.", |c| {
            c.conns_open()
        }),
        (
            "ringport_connects_started_total",
            "counter",
            "Outbound connects plugins started.",
            |c| c.connects_started,
        ),
        (
            "ringport_connects_denied_total",
            "counter",
            "Outbound connects refused before any packet (table full, no descriptor, bad address, stopping).",
            |c| c.connects_denied,
        ),
        (
            "ringport_connections_connected_total",
            "counter",
            "Outbound streams connected.",
            |c| c.conns_connected,
        ),
        (
            "ringport_backpressure_pauses_total",
            "counter",
            "Receives paused because a peer did not read its replies.",
            |c| c.backpressure_pauses,
        ),
        (
            "ringport_buffer_ring_exhausted_total",
            "counter",
            "Receives that found the provided buffer ring empty (re-armed, no bytes lost).",
            |c| c.buffer_ring_empty,
        ),
        (
            "ringport_loop_turns_total",
            "counter",
            "Shard loop turns.",
            |c| c.turns,
        ),
        (
            "ringport_mesh_sent_total",
            "counter",
            "Cross-shard messages sent.",
            |c| c.mesh_out,
        ),
        (
            "ringport_mesh_full_total",
            "counter",
            "Cross-shard sends refused by a full ring.",
            |c| c.mesh_full,
        ),
        (
            "ringport_mesh_received_total",
            "counter",
            "Cross-shard messages taken from other shards.",
            |c| c.mesh_in,
        ),
        (
            "ringport_mesh_wakes_total",
            "counter",
            "Wake-ups sent to parked shards.",
            |c| c.mesh_wakes,
        ),
        (
            "ringport_outbound_queued_bytes",
            "gauge",
            "Stream bytes queued for peers, not yet taken by the kernel (against --max-outbound-per-shard and --max-outbound-total).",
            |c| c.outbound_queued,
        ),
    ];
    for (name, kind, help, get) in per_shard {
        o.family(name, kind, help);
        for (st, id) in s.shards.iter().zip(&shard_ids) {
            o.sample(name, &[("shard", id)], get(&st.counters));
        }
    }
    o.family(
        "ringport_mesh_queue_depth",
        "gauge",
        "Cross-shard messages waiting for the shard, as of its last turn.",
    );
    for (depth, id) in s.mesh_depth.iter().zip(&shard_ids) {
        o.sample("ringport_mesh_queue_depth", &[("shard", id)], depth);
    }
    o.family(
        "ringport_bytes_total",
        "counter",
        "Bytes received and sent.",
    );
    for (st, id) in s.shards.iter().zip(&shard_ids) {
        o.sample(
            "ringport_bytes_total",
            &[("shard", id), ("direction", "in")],
            st.counters.bytes_in,
        );
        o.sample(
            "ringport_bytes_total",
            &[("shard", id), ("direction", "out")],
            st.counters.bytes_out,
        );
    }
    o.family(
        "ringport_drops_total",
        "counter",
        "Drops by who decided (plugin or engine) and reason.",
    );
    for (st, id) in s.shards.iter().zip(&shard_ids) {
        for r in DropReason::ALL {
            o.sample(
                "ringport_drops_total",
                &[("shard", id), ("by", "plugin"), ("reason", r.as_str())],
                st.counters.drops[r.index()],
            );
        }
        for r in EngineDrop::ALL {
            o.sample(
                "ringport_drops_total",
                &[("shard", id), ("by", "engine"), ("reason", r.as_str())],
                st.counters.engine_drops[r as usize],
            );
        }
    }

    o.family(
        "ringport_connect_failures_total",
        "counter",
        "Outbound connects that did not open, by reason.",
    );
    for (st, id) in s.shards.iter().zip(&shard_ids) {
        for (i, reason) in ConnectFailure::NAMES.iter().enumerate() {
            o.sample(
                "ringport_connect_failures_total",
                &[("shard", id), ("reason", reason)],
                st.counters.connect_failures[i],
            );
        }
    }

    let names: Vec<&str> = s.listeners.iter().map(|l| l.name.as_str()).collect();
    type LGet = fn(&ListenerCounters) -> u64;
    let per_listener: [(&str, &str, &str, LGet); 5] = [
        (
            "ringport_listener_connections_total",
            "counter",
            "Connections admitted per listener.",
            |c| c.conns_accepted,
        ),
        (
            "ringport_listener_connections_open",
            "gauge",
            "Admitted connections open per listener.",
            |c| c.conns_open(),
        ),
        (
            "ringport_listener_datagrams_total",
            "counter",
            "Datagrams admitted per listener.",
            |c| c.datagrams_in,
        ),
        (
            "ringport_listener_datagrams_sent_total",
            "counter",
            "Datagrams sent (replies) per listener.",
            |c| c.datagrams_out,
        ),
        (
            "ringport_listener_udp_new_sources_total",
            "counter",
            "UDP sources first seen within the window per listener.",
            |c| c.udp_new_sources,
        ),
    ];
    for (name, kind, help, get) in per_listener {
        o.family(name, kind, help);
        for (l, n) in s.listeners.iter().zip(&names) {
            o.sample(name, &[("listener", n)], get(&l.counters));
        }
    }
    o.family(
        "ringport_listener_bytes_total",
        "counter",
        "Bytes per listener and direction.",
    );
    for (l, n) in s.listeners.iter().zip(&names) {
        o.sample(
            "ringport_listener_bytes_total",
            &[("listener", n), ("direction", "in")],
            l.counters.bytes_in,
        );
        o.sample(
            "ringport_listener_bytes_total",
            &[("listener", n), ("direction", "out")],
            l.counters.bytes_out,
        );
    }
    o.family("ringport_listener_denials_total", "counter", "Connections and datagrams refused (mode=deny) or, in audit mode, served but outside the policy (mode=would_deny), by reason.");
    for (l, n) in s.listeners.iter().zip(&names) {
        for r in DenyReason::ALL {
            o.sample(
                "ringport_listener_denials_total",
                &[("listener", n), ("mode", "deny"), ("reason", r.as_str())],
                l.counters.denied[r as usize],
            );
            o.sample(
                "ringport_listener_denials_total",
                &[
                    ("listener", n),
                    ("mode", "would_deny"),
                    ("reason", r.as_str()),
                ],
                l.counters.would_deny[r as usize],
            );
        }
    }
    let tls: Vec<(&ListenerView, &&str)> = s
        .listeners
        .iter()
        .zip(&names)
        .filter(|(l, _)| l.tls_expires_in.is_some())
        .collect();
    if !tls.is_empty() {
        o.family(
            "ringport_tls_handshakes_total",
            "counter",
            "TLS handshakes ended per listener, by result (full and resumed succeeded; the rest failed).",
        );
        for (l, n) in &tls {
            for r in HandshakeResult::ALL {
                o.sample(
                    "ringport_tls_handshakes_total",
                    &[("listener", n), ("result", r.as_str())],
                    l.counters.tls_handshakes[r as usize],
                );
            }
        }
        o.family(
            "ringport_tls_certificate_expiry_seconds",
            "gauge",
            "Seconds until the certificate a TLS listener serves expires (negative once it has).",
        );
        for (l, n) in &tls {
            o.sample(
                "ringport_tls_certificate_expiry_seconds",
                &[("listener", n)],
                l.tls_expires_in.unwrap_or_default(),
            );
        }
    }
    o.family(
        "ringport_listener_timeouts_total",
        "counter",
        "Connections closed on a timer, by kind.",
    );
    for (l, n) in s.listeners.iter().zip(&names) {
        for k in TimeoutKind::ALL {
            o.sample(
                "ringport_listener_timeouts_total",
                &[("listener", n), ("kind", k.as_str())],
                l.counters.timeouts[k as usize],
            );
        }
    }
    o.family(
        "ringport_listener_drops_total",
        "counter",
        "Datagrams the engine dropped per listener, by reason.",
    );
    for (l, n) in s.listeners.iter().zip(&names) {
        for r in ListenerDrop::ALL {
            o.sample(
                "ringport_listener_drops_total",
                &[("listener", n), ("reason", r.as_str())],
                l.counters.drops[r as usize],
            );
        }
    }
    o.family(
        "ringport_alert",
        "gauge",
        "1 while a listener's rate deviates from its baseline, or (metric source_denials) while a source is denied more often than its limit.",
    );
    for (l, n) in s.listeners.iter().zip(&names) {
        for m in Metric::ALL {
            o.sample(
                "ringport_alert",
                &[("listener", n), ("metric", m.as_str())],
                u8::from(l.alerts[m as usize]),
            );
        }
        o.sample(
            "ringport_alert",
            &[("listener", n), ("metric", SOURCE_DENIALS)],
            u8::from(l.counters.sources_alerting > 0),
        );
    }
    o.family(
        "ringport_listener_sources_alerting",
        "gauge",
        "Sources whose denials on the listener are over the alert limit (per shard, summed).",
    );
    for (l, n) in s.listeners.iter().zip(&names) {
        o.sample(
            "ringport_listener_sources_alerting",
            &[("listener", n)],
            l.counters.sources_alerting,
        );
    }
    o.family(
        "ringport_log_dropped_total",
        "counter",
        "Handshake-log records dropped because a shard's queue was full.",
    );
    o.sample("ringport_log_dropped_total", &[], s.log_dropped);
    o.family(
        "ringport_log_lines_lost_total",
        "counter",
        "Handshake-log lines lost because writing them failed (disk full, ...).",
    );
    o.sample("ringport_log_lines_lost_total", &[], s.log_lines_lost);
    o.family(
        "ringport_log_write_errors_total",
        "counter",
        "Handshake-log writes that failed; writing is tried again a second later.",
    );
    o.sample("ringport_log_write_errors_total", &[], s.log_write_errors);
    o.family(
        "ringport_admin_connections_total",
        "counter",
        "Admin endpoint connections by how they ended.",
    );
    for r in crate::admin::AdminResult::ALL {
        let n = s.admin.connections[r as usize];
        o.sample(
            "ringport_admin_connections_total",
            &[("result", r.as_str())],
            n,
        );
    }
    o.family(
        "ringport_admin_accept_errors_total",
        "counter",
        "Admin endpoint accepts that failed (EMFILE, ENFILE, ...); each pauses accepting.",
    );
    o.sample(
        "ringport_admin_accept_errors_total",
        &[],
        s.admin.accept_errors,
    );
    o.family(
        "ringport_draining",
        "gauge",
        "1 while the server drains before stopping.",
    );
    o.sample("ringport_draining", &[], u8::from(s.draining));
    o.family(
        "ringport_backend_info",
        "gauge",
        "1, labelled with the I/O backend the shards run on.",
    );
    o.sample("ringport_backend_info", &[("backend", s.backend)], 1);
    o.family(
        "ringport_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    o.sample(
        "ringport_uptime_seconds",
        &[],
        format!("{:.3}", s.uptime_secs),
    );
    render_latencies(&mut o, s);
    o.0
}

/// `ringport_latency_seconds`: one Prometheus histogram per shard and name,
/// cumulative buckets at 1 µs x 2^k.
fn render_latencies(o: &mut Out, s: &Snapshot) {
    if s.latencies.iter().all(Vec::is_empty) {
        return;
    }
    o.family(
        "ringport_latency_seconds",
        "histogram",
        "Latencies reported by plugins (and the engine's mesh_handoff), per shard.",
    );
    for (shard, hists) in s.latencies.iter().enumerate() {
        let shard = shard.to_string();
        for (name, h) in hists {
            let mut cumulative = 0;
            for (i, bound) in BOUNDS_US.iter().enumerate() {
                cumulative += h.buckets[i];
                let le = format!("{}", *bound as f64 / 1e6);
                o.sample(
                    "ringport_latency_seconds_bucket",
                    &[("shard", &shard), ("name", name), ("le", &le)],
                    cumulative,
                );
            }
            o.sample(
                "ringport_latency_seconds_bucket",
                &[("shard", &shard), ("name", name), ("le", "+Inf")],
                h.count,
            );
            o.sample(
                "ringport_latency_seconds_sum",
                &[("shard", &shard), ("name", name)],
                format!("{:.9}", h.sum_ns as f64 / 1e9),
            );
            o.sample(
                "ringport_latency_seconds_count",
                &[("shard", &shard), ("name", name)],
                h.count,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringport_engine::Counters;

    #[test]
    fn samples_and_labels() {
        let mut c = Counters {
            msgs: 3,
            bytes_in: 10,
            mesh_in: 4,
            mesh_wakes: 1,
            ..Counters::default()
        };
        c.engine_drops[EngineDrop::KernelRxQueue as usize] = 2;
        c.buffer_ring_empty = 3;
        c.connects_started = 9;
        c.connects_denied = 1;
        c.conns_connected = 5;
        c.connect_failures[ConnectFailure::Refused.index()] = 3;
        c.connect_failures[ConnectFailure::TimedOut.index()] = 1;
        let mut lc = ListenerCounters {
            conns_accepted: 4,
            conns_closed: 1,
            sources_alerting: 2,
            ..ListenerCounters::default()
        };
        lc.denied[DenyReason::NotAllowed as usize] = 5;
        lc.drops[ListenerDrop::DatagramTooLarge as usize] = 6;
        let mut tc = ListenerCounters::default();
        tc.tls_handshakes[HandshakeResult::Resumed as usize] = 7;
        tc.tls_handshakes[HandshakeResult::UnknownCa as usize] = 2;
        let text = render(&Snapshot {
            shards: vec![ShardStats {
                shard: 0,
                cpu: 1,
                counters: c,
            }],
            mesh_depth: vec![9],
            listeners: vec![
                ListenerView {
                    name: "echo@tcp:[::1]:9000".into(),
                    counters: lc,
                    alerts: [false, false, true, false, false],
                    tls_expires_in: None,
                },
                ListenerView {
                    name: "echo@tls:[::1]:9001".into(),
                    counters: tc,
                    alerts: [false; Metric::COUNT],
                    tls_expires_in: Some(86400),
                },
            ],
            log_dropped: 0,
            log_lines_lost: 4,
            log_write_errors: 1,
            admin: crate::admin::AdminCounts {
                connections: [7, 1, 2, 0, 0],
                accept_errors: 3,
            },
            uptime_secs: 1.5,
            backend: "epoll",
            draining: false,
            latencies: vec![vec![("rtt", {
                let mut h = Histogram::default();
                h.record(std::time::Duration::from_micros(3));
                h.record(std::time::Duration::from_micros(4));
                h.record(std::time::Duration::from_secs(2));
                h
            })]],
        });
        for line in [
            "ringport_messages_total{shard=\"0\"} 3",
            "ringport_bytes_total{shard=\"0\",direction=\"in\"} 10",
            "ringport_buffer_ring_exhausted_total{shard=\"0\"} 3",
            "ringport_connects_started_total{shard=\"0\"} 9",
            "ringport_connects_denied_total{shard=\"0\"} 1",
            "ringport_connections_connected_total{shard=\"0\"} 5",
            "ringport_connections_open{shard=\"0\"} 5",
            "ringport_connect_failures_total{shard=\"0\",reason=\"refused\"} 3",
            "ringport_connect_failures_total{shard=\"0\",reason=\"timed_out\"} 1",
            "ringport_connect_failures_total{shard=\"0\",reason=\"other\"} 0",
            "ringport_drops_total{shard=\"0\",by=\"engine\",reason=\"kernel_rx_queue\"} 2",
            "ringport_listener_connections_open{listener=\"echo@tcp:[::1]:9000\"} 3",
            "ringport_listener_denials_total{listener=\"echo@tcp:[::1]:9000\",mode=\"deny\",reason=\"not_allowed\"} 5",
            "ringport_alert{listener=\"echo@tcp:[::1]:9000\",metric=\"denial_rate\"} 1",
            "ringport_alert{listener=\"echo@tcp:[::1]:9000\",metric=\"conn_rate\"} 0",
            "ringport_alert{listener=\"echo@tcp:[::1]:9000\",metric=\"source_denials\"} 1",
            "ringport_listener_sources_alerting{listener=\"echo@tcp:[::1]:9000\"} 2",
            "ringport_listener_drops_total{listener=\"echo@tcp:[::1]:9000\",reason=\"datagram_too_large\"} 6",
            "ringport_tls_handshakes_total{listener=\"echo@tls:[::1]:9001\",result=\"resumed\"} 7",
            "ringport_tls_handshakes_total{listener=\"echo@tls:[::1]:9001\",result=\"unknown_ca\"} 2",
            "ringport_tls_handshakes_total{listener=\"echo@tls:[::1]:9001\",result=\"full\"} 0",
            "ringport_tls_certificate_expiry_seconds{listener=\"echo@tls:[::1]:9001\"} 86400",
            "ringport_backend_info{backend=\"epoll\"} 1",
            "ringport_listener_drops_total{listener=\"echo@tcp:[::1]:9000\",reason=\"datagram_truncated\"} 0",
            "ringport_uptime_seconds 1.500",
            "ringport_admin_connections_total{result=\"served\"} 7",
            "ringport_admin_connections_total{result=\"timed_out\"} 2",
            "ringport_admin_connections_total{result=\"failed\"} 0",
            "ringport_admin_accept_errors_total 3",
            "ringport_log_lines_lost_total 4",
            "ringport_log_write_errors_total 1",
            "ringport_mesh_queue_depth{shard=\"0\"} 9",
            "ringport_mesh_received_total{shard=\"0\"} 4",
            "ringport_mesh_wakes_total{shard=\"0\"} 1",
            "ringport_listener_datagrams_sent_total{listener=\"echo@tcp:[::1]:9000\"} 0",
            "# TYPE ringport_latency_seconds histogram",
            "ringport_latency_seconds_bucket{shard=\"0\",name=\"rtt\",le=\"0.000002\"} 0",
            "ringport_latency_seconds_bucket{shard=\"0\",name=\"rtt\",le=\"0.000004\"} 2",
            "ringport_latency_seconds_bucket{shard=\"0\",name=\"rtt\",le=\"1.048576\"} 2",
            "ringport_latency_seconds_bucket{shard=\"0\",name=\"rtt\",le=\"+Inf\"} 3",
            "ringport_latency_seconds_sum{shard=\"0\",name=\"rtt\"} 2.000007000",
            "ringport_latency_seconds_count{shard=\"0\",name=\"rtt\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert!(
            !text.contains("ringport_tls_handshakes_total{listener=\"echo@tcp"),
            "plaintext listeners have no TLS series"
        );
        crate::testing::promtool_check(&text);
    }
}
