//! One run: start the target, drive the load, sample CPU and counters, stop.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::client::{self, ClientReport, HandshakeCounts};
use crate::config::LoadSpec;
use crate::cpu::{cpu_ticks, CpuSource, CpuTime};
use crate::fanout::FanoutFigures;
use crate::latency::Percentiles;
use crate::progress::Progress;
use crate::servers::{self, Server, ServerSpec, Target};
use crate::tls::ClientTls;

/// Everything one run measured.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Figures {
    /// Messages per second completed in the window (replies; for ingest, datagrams
    /// the server received, or the client sent when the server cannot tell).
    pub throughput: f64,
    /// Messages per second the client meant to send in the window (the offered
    /// load); above `throughput` at full-speed ingest when the server cannot keep up.
    pub offered: f64,
    /// Messages completed in the window.
    pub messages: u64,
    /// Round-trip latency from the intended send time (ns).
    pub latency: Option<Percentiles>,
    /// Corrected latency spectrum: `[nines, µs]` points (see [`crate::latency::spectrum`]).
    pub spectrum: Vec<[f64; 2]>,
    /// Round-trip latency from the actual send time (ns).
    pub latency_uncorrected: Option<Percentiles>,
    /// Messages sent, whole run (warm-up and window).
    pub sent: u64,
    /// Distinct replies (ingest: datagrams the server counted), whole run.
    pub received: Option<u64>,
    /// Replies with a wrong byte, length or order.
    pub errors: u64,
    /// Messages never answered (ingest: never counted by the server); `None` when unknowable.
    pub lost: Option<u64>,
    /// Duplicate datagram replies.
    pub duplicates: u64,
    /// Reordered datagram replies.
    pub reordered: u64,
    /// Socket failures seen by the client.
    pub io_errors: u64,
    /// `(errors + lost + io_errors) / sent`.
    pub error_rate: f64,
    /// Server CPU in the window, if readable.
    pub server_cpu: Option<CpuTime>,
    /// Server user CPU seconds per million messages (= µs per message).
    pub server_user_per_m: Option<f64>,
    /// Server system CPU seconds per million messages.
    pub server_sys_per_m: Option<f64>,
    /// Server user + system CPU seconds per million messages.
    pub server_cpu_per_m: Option<f64>,
    /// A server made of a proxy and a backend (haproxy): the proxy's part
    /// of `server_cpu_per_m`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_cpu_per_m: Option<f64>,
    /// The backend's part of `server_cpu_per_m`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_cpu_per_m: Option<f64>,
    /// Server CPU time over the window's length, in % of one CPU.
    pub server_busy_pct: Option<f64>,
    /// How idle the server's CPUs were in the window (% of their time, from
    /// `/proc/stat`): what the server threads, interrupts and softirqs, and
    /// every other process on those CPUs left over. Near 0 with the server
    /// threads below 100% busy means something else took the CPU.
    pub server_cpus_idle_pct: Option<f64>,
    /// What else ran on the server's CPUs in the window, in % of their time:
    /// `100 - idle - server busy` (other processes, or kernel threads such as
    /// ksoftirqd). A figure taken with much of this is not the server's alone.
    pub server_cpus_other_pct: Option<f64>,
    /// Client CPU in the window.
    pub client_cpu: Option<CpuTime>,
    /// Client CPU time over the window's length, in % of one CPU.
    pub client_busy_pct: Option<f64>,
    /// What else ran on the client's CPUs in the window, in % of their time.
    pub client_cpus_other_pct: Option<f64>,
    /// Client user + system CPU seconds per million messages.
    pub client_cpu_per_m: Option<f64>,
    /// Whether the client's threads were busy at least [`CLIENT_BOUND_PCT`]
    /// of the window: the server may have had more to give than the run shows.
    pub client_bound: bool,
    /// Datagrams dropped by the kernel for the server (its socket's receive
    /// queue if the server reports it, else the machine's UDP RcvbufErrors).
    pub kernel_drops: Option<u64>,
    /// relay-fanout: publishes, deliveries expected and received, `LAGGED`.
    /// There `throughput` and `offered` are deliveries per second, `sent` is
    /// publishes, `received` distinct deliveries, `lost` expected minus
    /// received, the error rate is over expected deliveries, and CPU is per
    /// million deliveries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<FanoutFigures>,
    /// tls-handshake: handshakes of each kind over the whole run. There
    /// `throughput` is handshakes per second, `messages` handshakes in the
    /// window, latency the handshake's (connect to the client's handshake
    /// done), CPU per million handshakes, `sent` connections started and
    /// `received` connections whose echo came back right.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshakes: Option<HandshakeCounts>,
    /// The MQTT scenarios' own figures (see [`crate::mqtt::MqttFigures`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<crate::mqtt::MqttFigures>,
}

/// Client threads busier than this (% of their CPUs) make a run client-bound.
pub const CLIENT_BOUND_PCT: f64 = 90.0;

/// UDP receive-buffer drops of the whole machine (`/proc/net/snmp`, Udp: RcvbufErrors).
pub fn udp_rcvbuf_errors() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = s.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RcvbufErrors")?;
    values.get(i)?.parse().ok()
}

fn per_million(cpu: f64, messages: u64) -> Option<f64> {
    (messages > 0).then(|| cpu / messages as f64 * 1e6)
}

fn busy(cpu: f64, window: f64) -> Option<f64> {
    (window > 0.0).then(|| cpu / window * 100.0)
}

/// The share of `ncpus` CPUs (in % of their time) that was neither idle nor
/// spent by the measured threads (`busy`, in % of one CPU).
fn other(idle: Option<f64>, busy: Option<f64>, ncpus: usize) -> Option<f64> {
    let (idle, busy) = (idle?, busy?);
    (ncpus > 0).then(|| (100.0 - idle - busy / ncpus as f64).max(0.0))
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// Runs `spec` against `target` (started with `server`) and returns its figures.
///
/// `progress` labels the once-a-second progress line on stderr (shown only on
/// a terminal); `None` shows none.
///
/// The TLS scenarios need `tls`, the client's settings for the certificate
/// `server.tls` holds.
pub fn run_one(
    spec: &LoadSpec,
    target: Target,
    server: &ServerSpec,
    progress: Option<&str>,
    tls: Option<&ClientTls>,
) -> Result<Figures> {
    if spec.scenario.is_mqtt() {
        return crate::mqtt::run_one(spec, target, server, progress);
    }
    let srv = servers::start(target, server)?;
    // The server's CPUs are known when the harness started it.
    let cpus = match target {
        Target::External(_) => Vec::new(),
        _ => server
            .cpus
            .iter()
            .copied()
            .take(server.shards.max(1))
            .collect(),
    };
    let result = drive(spec, srv.as_ref(), &cpus, progress, tls);
    srv.stop();
    result
}

fn drive(
    spec: &LoadSpec,
    srv: &dyn Server,
    server_cpus: &[usize],
    progress: Option<&str>,
    tls: Option<&ClientTls>,
) -> Result<Figures> {
    let server_cpu = srv.cpu();
    let split = srv.cpu_split();
    let client_cpu = CpuSource::ThreadsNamed(vec![client::THREAD_PREFIX.into()]);
    let rcvbuf0 = udp_rcvbuf_errors();
    let kdrops0 = srv.kernel_drops();
    let dgrams0 = srv.datagrams_received();
    let drops0 = srv.plugin_drops();

    let running = client::start(spec, &srv.addrs(), &srv.subscriber_addrs(), tls)?;
    let (clock, sched) = (running.clock, running.schedule);
    let mut bar = progress.and_then(|label| {
        Progress::start(
            label,
            Duration::from_nanos(sched.end_ns - sched.start_ns),
            false,
        )
    });
    let tick = |bar: &mut Option<Progress>| {
        if let Some(b) = bar {
            b.update(
                Duration::from_nanos(clock.now().saturating_sub(sched.start_ns)),
                running.sent_so_far(),
            );
        }
    };
    while Instant::now() < clock.instant(sched.measure_ns) {
        tick(&mut bar);
        sleep_until(
            clock
                .instant(sched.measure_ns)
                .min(Instant::now() + Duration::from_millis(20)),
        );
    }
    let s0 = server_cpu.sample();
    let split0 = split.as_ref().map(|(p, b)| [p.sample(), b.sample()]);
    let t0 = cpu_ticks(server_cpus);
    let k0 = cpu_ticks(&spec.cpus);
    let c0 = client_cpu.sample();
    let w0 = srv.datagrams_received();
    // Wait for the window's end, or for a message cap to end the run early.
    let end = clock.instant(sched.end_ns);
    while Instant::now() < end && !running.finished() {
        tick(&mut bar);
        std::thread::sleep(
            Duration::from_millis(5).min(end.saturating_duration_since(Instant::now())),
        );
    }
    let window = (clock
        .now()
        .min(sched.end_ns)
        .saturating_sub(sched.measure_ns)) as f64
        / 1e9;
    let s1 = server_cpu.sample();
    let split1 = split.as_ref().map(|(p, b)| [p.sample(), b.sample()]);
    let t1 = cpu_ticks(server_cpus);
    let k1 = cpu_ticks(&spec.cpus);
    let c1 = client_cpu.sample();
    let w1 = srv.datagrams_received();
    if let Some(b) = bar {
        b.finish();
    }
    let report: ClientReport = running.wait()?;
    let fanout = spec.relay.as_ref().map(|r| {
        let counts = report.fanout.clone().unwrap_or_default();
        let mut f = FanoutFigures::new(r, &counts, window);
        f.server_drops = drops0
            .zip(srv.plugin_drops())
            .map(|(a, b)| b.saturating_sub(a));
        (f, r.expected(&counts.offered))
    });

    let one_way = spec.scenario.is_one_way();
    // Let the server count what was still in flight.
    let received_total = if one_way {
        settle_count(srv, dgrams0, report.sent)
    } else {
        Some(report.received)
    };

    let messages = if one_way {
        match (w0, w1) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => report.completed,
        }
    } else {
        report.completed
    };
    let lost = if let Some((f, _)) = &fanout {
        Some(f.lost)
    } else if one_way {
        received_total.map(|r| report.sent.saturating_sub(r))
    } else {
        Some(report.unanswered)
    };
    let server_cpu = s0.zip(s1).map(|(a, b)| b.since(&a));
    // [proxy, backend] CPU of a split server, per million messages.
    let part = |i: usize| {
        let (a, b) = (split0?[i]?, split1?[i]?);
        per_million(b.since(&a).total(), messages)
    };
    let (proxy_cpu_per_m, backend_cpu_per_m) = (part(0), part(1));
    let client_cpu = c0.zip(c1).map(|(a, b)| b.since(&a));
    let kernel_drops = match (kdrops0, srv.kernel_drops()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ if spec.scenario.is_udp() => rcvbuf0
            .zip(udp_rcvbuf_errors())
            .map(|(a, b)| b.saturating_sub(a)),
        _ => None,
    };
    let server_idle = t0.zip(t1).and_then(|(a, b)| b.idle_pct_since(&a));
    let client_idle = k0.zip(k1).and_then(|(a, b)| b.idle_pct_since(&a));
    let server_busy = server_cpu.and_then(|c| busy(c.total(), window));
    let client_busy = client_cpu.and_then(|c| busy(c.total(), window));
    let bad = report.errors + lost.unwrap_or(0) + report.io_errors;
    // relay-fanout: what was owed is deliveries, not publishes.
    let owed = fanout.as_ref().map_or(report.sent, |(f, _)| f.expected);
    let offered = fanout.as_ref().map_or(report.offered, |(_, o)| *o);
    Ok(Figures {
        throughput: if window > 0.0 {
            messages as f64 / window
        } else {
            0.0
        },
        offered: if window > 0.0 {
            offered as f64 / window
        } else {
            0.0
        },
        messages,
        latency: (!one_way).then(|| report.recorder.corrected()),
        latency_uncorrected: (!one_way).then(|| report.recorder.uncorrected()),
        spectrum: if one_way {
            Vec::new()
        } else {
            crate::latency::spectrum(report.recorder.corrected_histogram())
        },
        sent: report.sent,
        received: received_total,
        errors: report.errors,
        lost,
        duplicates: report.duplicates,
        reordered: report.reordered,
        io_errors: report.io_errors,
        error_rate: if owed > 0 {
            bad as f64 / owed as f64
        } else {
            0.0
        },
        server_user_per_m: server_cpu.and_then(|c| per_million(c.user, messages)),
        server_sys_per_m: server_cpu.and_then(|c| per_million(c.sys, messages)),
        server_cpu_per_m: server_cpu.and_then(|c| per_million(c.total(), messages)),
        proxy_cpu_per_m,
        backend_cpu_per_m,
        server_busy_pct: server_busy,
        server_cpu,
        server_cpus_idle_pct: server_idle,
        server_cpus_other_pct: other(server_idle, server_busy, server_cpus.len()),
        client_busy_pct: client_busy,
        client_bound: client_busy
            .is_some_and(|b| b >= CLIENT_BOUND_PCT * spec.cpus.len().min(spec.conns) as f64),
        client_cpus_other_pct: other(client_idle, client_busy, spec.cpus.len()),
        // At full-speed ingest the client's work is per datagram sent, and the
        // server may take far fewer than were sent.
        client_cpu_per_m: client_cpu
            .and_then(|c| per_million(c.total(), if one_way { report.offered } else { messages })),
        client_cpu,
        kernel_drops,
        relay: fanout.map(|(f, _)| f),
        handshakes: report.tls,
        mqtt: None,
    })
}

/// Waits (up to 1 s) until the server has counted `sent` datagrams since
/// `base` or its count stops moving; returns the count since `base`.
fn settle_count(srv: &dyn Server, base: Option<u64>, sent: u64) -> Option<u64> {
    let read = || {
        srv.datagrams_received()
            .zip(base)
            .map(|(n, z)| n.saturating_sub(z))
    };
    let mut last = read();
    let mut stable = 0;
    for _ in 0..50 {
        if last.map_or(true, |n| n >= sent) || stable >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        let now = read();
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
    }
    last
}
