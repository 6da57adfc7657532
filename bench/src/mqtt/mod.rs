//! The MQTT scenarios: a broker (ringport's `mqtt` plugin, Mosquitto, or
//! an external one) under publish/subscribe load, and idle clients.
//!
//! * `mqtt-fanin`: [`DEFAULT_FANIN_PUBLISHERS`] QoS 0 publishers to one
//!   subscriber, at [`DEFAULT_FANIN_RATE`] publishes/s in all;
//! * `mqtt-fanout`: one QoS 0 publisher to 100 and to 1,000 subscribers (one
//!   case each), at [`DEFAULT_FANOUT_DELIVERIES`] deliveries/s;
//! * `mqtt-qos1`: [`DEFAULT_QOS1_PUBLISHERS`] QoS 1 publishers, each to a
//!   subscriber of its own (subscribed at QoS 1, which acknowledges every
//!   delivery), at [`DEFAULT_QOS1_RATE`] publishes/s, at most `--depth`
//!   unacknowledged publishes per publisher; time to PUBACK and to delivery;
//! * `mqtt-idle`: [`DEFAULT_IDLE_CLIENTS`] connected clients that do
//!   nothing; the server's resident memory per client.
//!
//! The publish/subscribe scenarios share one shape ([`MqttSpec`]):
//! publishers, subscribers and topics; subscriber `j` subscribes to topic
//! `j % topics` and publisher `i` publishes to topic `i % topics`, open loop
//! at a fixed total rate. Every payload is relay-fanout's
//! ([`crate::fanout::payload`]): publisher, sequence number, intended and
//! actual send time, every byte checkable; so each subscriber counts
//! deliveries, duplicates and reordering per publisher exactly
//! ([`crate::fanout::tracker`]) and times each delivery from its intended
//! publish time (corrected for coordinated omission). After the window the
//! client drains until every subscriber has what it is owed, nothing arrived
//! for a second, or ten seconds passed: what is still missing is lost.
//!
//! Every packet is encoded and decoded with ringport's codec
//! (`ringport_protocols::mqtt::codec`, see [`wire`]). The client threads
//! ([`pubsub`], [`idle`]) are pinned like the other scenarios' and drive
//! every connection of a thread on one io_uring ([`crate::client`]'s driver).

pub mod idle;
pub mod pubsub;
pub mod wire;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::{anyhow, Result};

use crate::config::{LoadSpec, Scenario};
use crate::cpu::CpuTime;
use crate::latency::Percentiles;
use crate::run::Figures;
use crate::servers::{ServerSpec, Target};

// The default rates are what Mosquitto serves with a third to a half of
// its one core on the development machine (about 6 us of server CPU per
// QoS 0 delivery, 20 us per QoS 1 message), so that latency is measured at
// a rate both brokers sustain. Capacity is measured by raising `--rate`.

/// `mqtt-idle`'s connected clients.
pub const DEFAULT_IDLE_CLIENTS: usize = 10_000;
/// `mqtt-qos1`'s unacknowledged publishes per publisher at most (`--depth`).
pub const DEFAULT_INFLIGHT: usize = 16;
/// `mqtt-fanin`'s publishers.
pub const DEFAULT_FANIN_PUBLISHERS: usize = 100;
/// `mqtt-fanin`'s publishes per second over all publishers.
pub const DEFAULT_FANIN_RATE: u64 = 50_000;
/// `mqtt-fanout`'s subscriber counts: one case each.
pub const DEFAULT_FANOUT_SUBSCRIBERS: [usize; 2] = [100, 1000];
/// `mqtt-fanout`'s deliveries per second (the publish rate is this over
/// the subscribers).
pub const DEFAULT_FANOUT_DELIVERIES: u64 = 50_000;
/// `mqtt-qos1`'s publishers (and subscribers: one each).
pub const DEFAULT_QOS1_PUBLISHERS: usize = 16;
/// `mqtt-qos1`'s publishes per second over all publishers.
pub const DEFAULT_QOS1_RATE: u64 = 10_000;

/// The MQTT protocol version the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum MqttVersion {
    /// MQTT 3.1.1 (protocol level 4).
    #[value(name = "3.1.1")]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.0 (protocol level 5).
    #[value(name = "5")]
    #[serde(rename = "5")]
    V5,
}

impl MqttVersion {
    /// The codec's version.
    pub fn codec(self) -> wire::Version {
        match self {
            MqttVersion::V311 => wire::Version::V311,
            MqttVersion::V5 => wire::Version::V5,
        }
    }

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            MqttVersion::V311 => "3.1.1",
            MqttVersion::V5 => "5",
        }
    }
}

/// The shape of an MQTT load.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MqttSpec {
    /// Publisher connections (publish/subscribe scenarios).
    pub publishers: usize,
    /// Subscriber connections (publish/subscribe scenarios).
    pub subscribers: usize,
    /// Topics: subscriber `j` subscribes to `j % topics`, publisher `i`
    /// publishes to `i % topics`.
    pub topics: usize,
    /// QoS of the publishes and of the subscriptions (0 or 1).
    pub qos: u8,
    /// `mqtt-idle`: connected clients (0 for the other scenarios).
    pub clients: usize,
    /// Protocol version.
    pub version: MqttVersion,
}

impl MqttSpec {
    /// The defaults of `scenario` (`None` when it is not an MQTT scenario).
    pub fn defaults(scenario: Scenario) -> Option<MqttSpec> {
        let base = MqttSpec {
            publishers: 1,
            subscribers: 1,
            topics: 1,
            qos: 0,
            clients: 0,
            version: MqttVersion::V311,
        };
        Some(match scenario {
            Scenario::MqttFanin => MqttSpec {
                publishers: DEFAULT_FANIN_PUBLISHERS,
                ..base
            },
            Scenario::MqttFanout => MqttSpec {
                subscribers: DEFAULT_FANOUT_SUBSCRIBERS[0],
                ..base
            },
            Scenario::MqttQos1 => MqttSpec {
                publishers: DEFAULT_QOS1_PUBLISHERS,
                subscribers: DEFAULT_QOS1_PUBLISHERS,
                topics: DEFAULT_QOS1_PUBLISHERS,
                qos: 1,
                ..base
            },
            Scenario::MqttIdle => MqttSpec {
                publishers: 0,
                subscribers: 0,
                clients: DEFAULT_IDLE_CLIENTS,
                ..base
            },
            _ => return None,
        })
    }

    /// The topic subscriber `j` subscribes to.
    pub fn topic_of_subscriber(&self, j: usize) -> usize {
        j % self.topics
    }

    /// The topic publisher `i` publishes to.
    pub fn topic_of_publisher(&self, i: usize) -> usize {
        i % self.topics
    }

    /// How many subscribers topic `t` has.
    pub fn subscribers_of(&self, t: usize) -> u64 {
        (self.subscribers / self.topics + usize::from(t < self.subscribers % self.topics)) as u64
    }

    /// Deliveries owed for `published[i]` publishes by each publisher `i`.
    pub fn expected(&self, published: &[u64]) -> u64 {
        (published.iter().enumerate())
            .map(|(i, &n)| n * self.subscribers_of(self.topic_of_publisher(i)))
            .sum()
    }

    /// Deliveries owed to a subscriber of topic `t`.
    pub fn owed_to_subscriber_of(&self, t: usize, published: &[u64]) -> u64 {
        (published.iter().enumerate())
            .filter(|(i, _)| self.topic_of_publisher(*i) == t)
            .map(|(_, &n)| n)
            .sum()
    }

    /// Connections the client opens.
    pub fn connections(&self) -> usize {
        self.publishers + self.subscribers + self.clients
    }
}

/// The name of topic `t`.
pub fn topic_name(t: usize) -> String {
    format!("bench/{t}")
}

/// Checks what the MQTT scenarios cannot work with.
pub fn validate(l: &LoadSpec) -> Result<(), String> {
    let Some(m) = &l.mqtt else {
        return Err(format!("{} needs its MQTT settings", l.scenario));
    };
    if l.cpus.is_empty() {
        return Err("--cpus must name at least one CPU".into());
    }
    if m.qos > 1 {
        return Err("--qos must be 0 or 1".into());
    }
    if l.scenario == Scenario::MqttIdle {
        if m.clients == 0 {
            return Err("mqtt-idle: --clients must be at least 1".into());
        }
        return Ok(());
    }
    if m.publishers == 0 || m.subscribers == 0 || m.topics == 0 {
        return Err("--publishers, --subscribers and --topics must be at least 1".into());
    }
    if m.publishers > u32::MAX as usize {
        return Err("--publishers must fit in 32 bits".into());
    }
    let min = crate::fanout::payload::MIN_PAYLOAD;
    if l.size < min || l.size > 65_000 {
        return Err(format!(
            "{}: --size {} (the PUBLISH payload) must be between {min} and 65000",
            l.scenario, l.size
        ));
    }
    if l.rate == 0 {
        return Err(format!(
            "{} publishes open loop: --rate must be at least 1",
            l.scenario
        ));
    }
    if m.qos == 1 && !(1..=65_535).contains(&l.depth) {
        return Err(
            "--depth (unacknowledged QoS 1 publishes per publisher) must be 1..=65535".into(),
        );
    }
    Ok(())
}

/// The MQTT figures of one run, next to the common ones. For the
/// publish/subscribe scenarios `throughput` is deliveries per second in the
/// window, CPU is per million deliveries, `sent` is publishes, `received`
/// distinct deliveries and `lost` deliveries owed but never received. For
/// `mqtt-idle` `messages` is 0 (no CPU per message) and the memory figures
/// are set.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct MqttFigures {
    /// Publishers.
    pub publishers: usize,
    /// Subscribers.
    pub subscribers: usize,
    /// Topics.
    pub topics: usize,
    /// QoS of publishes and subscriptions.
    pub qos: u8,
    /// Publishes sent, whole run.
    pub published: u64,
    /// Publishes per second sent in the window.
    pub publish_rate: f64,
    /// Deliveries owed for what was published.
    pub expected: u64,
    /// Distinct deliveries received, whole run (after the drain).
    pub delivered: u64,
    /// QoS 1: PUBACKs received, whole run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked: Option<u64>,
    /// QoS 1: publishes never acknowledged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unacked: Option<u64>,
    /// QoS 1: time from the intended publish time to its PUBACK (ns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub puback: Option<Percentiles>,
    /// Messages the server counted as dropped (any reason) during the run,
    /// if it can tell (ringport: its engine's drop counters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_drops: Option<u64>,
    /// mqtt-idle: clients connected (CONNACK received) and held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_clients: Option<u64>,
    /// mqtt-idle: the server's VmRSS before the clients connected (bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_before: Option<u64>,
    /// mqtt-idle: the server's VmRSS with every client connected, at the
    /// end of the window (bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_after: Option<u64>,
    /// mqtt-idle: `(rss_after - rss_before) / idle_clients` (bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_client: Option<f64>,
}

/// What the client threads of a run share: each publisher's final count.
#[derive(Debug)]
pub(crate) struct Shared {
    published: Vec<AtomicU64>,
    reported: AtomicUsize,
    threads: usize,
}

impl Shared {
    pub(crate) fn new(publishers: usize, threads: usize) -> Shared {
        Shared {
            published: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
            reported: AtomicUsize::new(0),
            threads,
        }
    }

    /// Adds one thread's final counts (`(publisher, published)` pairs).
    fn report(&self, counts: impl Iterator<Item = (usize, u64)>) {
        for (i, n) in counts {
            self.published[i].fetch_add(n, Ordering::Relaxed);
        }
        self.reported.fetch_add(1, Ordering::Release);
    }

    /// Every publisher's count, once every thread has reported.
    fn totals(&self) -> Option<Vec<u64>> {
        (self.reported.load(Ordering::Acquire) == self.threads).then(|| {
            (self.published.iter())
                .map(|a| a.load(Ordering::Relaxed))
                .collect()
        })
    }
}

/// Runs `spec` (an MQTT scenario) against `target` and returns its figures.
pub fn run_one(
    spec: &LoadSpec,
    target: Target,
    server: &ServerSpec,
    progress: Option<&str>,
) -> Result<Figures> {
    let m = spec
        .mqtt
        .as_ref()
        .ok_or_else(|| anyhow!("{} needs its MQTT settings", spec.scenario))?;
    // Both ends of every connection may be in this process (ringport), and
    // Mosquitto inherits the limit; mqtt-idle's clients are in a child
    // process of their own (with the same limit).
    let ends = if spec.scenario == Scenario::MqttIdle {
        1
    } else {
        2
    };
    raise_nofile(ends * m.connections() as u64 + 1024)?;
    if spec.scenario == Scenario::MqttIdle {
        idle::run(spec, m, target, server, progress)
    } else {
        pubsub::run(spec, m, target, server, progress)
    }
}

/// The CPUs of the server when the harness started it (none for an external one).
pub(crate) fn server_cpus(target: Target, server: &ServerSpec) -> Vec<usize> {
    match target {
        Target::External(_) => Vec::new(),
        _ => (server.cpus.iter().copied())
            .take(server.shards.max(1))
            .collect(),
    }
}

/// The CPU samples of a measurement window.
pub(crate) struct CpuWindow {
    /// The server's CPU time in the window.
    pub server: Option<CpuTime>,
    /// The client threads' CPU time in the window.
    pub client: Option<CpuTime>,
    /// How idle the server's CPUs were (%).
    pub server_idle: Option<f64>,
    /// How idle the client's CPUs were (%).
    pub client_idle: Option<f64>,
    /// The server's CPUs.
    pub server_cpus: usize,
    /// The client's CPUs.
    pub client_cpus: usize,
    /// The window, seconds.
    pub window: f64,
}

impl CpuWindow {
    /// Fills the CPU figures of `f` for `messages` messages in the window,
    /// with `client_threads` client threads.
    pub(crate) fn fill(&self, f: &mut Figures, messages: u64, client_threads: usize) {
        let per_m = |cpu: f64| (messages > 0).then(|| cpu / messages as f64 * 1e6);
        let busy = |cpu: f64| (self.window > 0.0).then(|| cpu / self.window * 100.0);
        let other = |idle: Option<f64>, busy: Option<f64>, n: usize| {
            let (idle, busy) = (idle?, busy?);
            (n > 0).then(|| (100.0 - idle - busy / n as f64).max(0.0))
        };
        let server_busy = self.server.and_then(|c| busy(c.total()));
        let client_busy = self.client.and_then(|c| busy(c.total()));
        f.server_cpu = self.server;
        f.server_user_per_m = self.server.and_then(|c| per_m(c.user));
        f.server_sys_per_m = self.server.and_then(|c| per_m(c.sys));
        f.server_cpu_per_m = self.server.and_then(|c| per_m(c.total()));
        f.server_busy_pct = server_busy;
        f.server_cpus_idle_pct = self.server_idle;
        f.server_cpus_other_pct = other(self.server_idle, server_busy, self.server_cpus);
        f.client_cpu = self.client;
        f.client_busy_pct = client_busy;
        f.client_cpus_other_pct = other(self.client_idle, client_busy, self.client_cpus);
        f.client_cpu_per_m = self.client.and_then(|c| per_m(c.total()));
        f.client_bound = client_busy
            .is_some_and(|b| b >= crate::run::CLIENT_BOUND_PCT * client_threads.max(1) as f64);
    }
}

/// The table heading's description of an MQTT load.
pub fn shape(l: &LoadSpec, m: &MqttSpec) -> String {
    if l.scenario == Scenario::MqttIdle {
        return format!(
            "{} idle clients, MQTT {} (memory per client from the server's VmRSS; CPU over the window)",
            m.clients,
            m.version.as_str()
        );
    }
    let mut s = format!(
        "{} publishers, {} subscribers, {} topic(s), QoS {}, MQTT {}, {} B payloads, {} publishes/s",
        m.publishers,
        m.subscribers,
        m.topics,
        m.qos,
        m.version.as_str(),
        l.size,
        l.rate
    );
    if m.qos > 0 {
        s.push_str(&format!(
            ", at most {} unacknowledged per publisher",
            l.depth
        ));
    }
    s.push_str(" (throughput and CPU: per delivery)");
    s
}

/// The progress line of an MQTT run (`None` for the other scenarios).
pub fn fmt_run(f: &Figures) -> Option<String> {
    let m = f.mqtt?;
    let us = |ns: u64| ns as f64 / 1e3;
    if let Some(n) = m.idle_clients {
        let per = m
            .rss_per_client
            .map_or_else(|| "?".into(), |b| format!("{b:.0}"));
        return Some(format!(
            "{n} idle clients, server RSS {} -> {} MiB = {per} B per client, server {:.1}% busy",
            m.rss_before.map_or(0.0, |b| b as f64 / 1048576.0),
            m.rss_after.map_or(0.0, |b| b as f64 / 1048576.0),
            f.server_busy_pct.unwrap_or(0.0)
        ));
    }
    let lat = f
        .latency
        .map(|l| format!(", p50 {:.1} us, p99 {:.1} us", us(l.p50), us(l.p99)))
        .unwrap_or_default();
    let ack = m
        .puback
        .map(|l| format!(", PUBACK p50 {:.1} us, p99 {:.1} us", us(l.p50), us(l.p99)))
        .unwrap_or_default();
    let cpu = f
        .server_cpu_per_m
        .map(|c| format!(", server {c:.2} s/M deliveries"))
        .unwrap_or_default();
    Some(format!(
        "{:.0} deliveries/s ({:.0} publishes/s){lat}{ack}{cpu}, delivered {}/{}, errors {}, \
         lost {}, dup {}, reordered {}",
        f.throughput,
        m.publish_rate,
        m.delivered,
        m.expected,
        f.errors,
        f.lost.unwrap_or(0),
        f.duplicates,
        f.reordered
    ))
}

/// Raises this process's descriptor limit to at least `want` (both soft
/// and hard, which needs CAP_SYS_RESOURCE above the hard limit).
fn raise_nofile(want: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `lim`, which it may.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(anyhow!(
            "cannot read RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        ));
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    let new = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit reads `new`.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        return Err(anyhow!(
            "this run needs {want} file descriptors (RLIMIT_NOFILE is {} / hard {}): {}; \
             raise it (`ulimit -n {want}`) or run fewer connections",
            lim.rlim_cur,
            lim.rlim_max,
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// `VmRSS` of process `pid` (`None`: this process) in bytes.
pub fn vm_rss(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    parse_vm_rss(&std::fs::read_to_string(path).ok()?)
}

/// The `VmRSS:` line of a `/proc/PID/status` text, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_spread_subscribers_and_publishers() {
        let q = MqttSpec::defaults(Scenario::MqttQos1).unwrap();
        assert_eq!(
            (q.publishers, q.subscribers, q.topics, q.qos),
            (16, 16, 16, 1)
        );
        // Publisher i reaches subscriber i only.
        let published: Vec<u64> = (0..16).map(|i| 100 + i).collect();
        assert_eq!(q.expected(&published), published.iter().sum::<u64>());
        assert_eq!(q.owed_to_subscriber_of(3, &published), 103);

        let f = MqttSpec::defaults(Scenario::MqttFanin).unwrap();
        let published = vec![7; 100];
        assert_eq!(f.expected(&published), 700);
        assert_eq!(f.owed_to_subscriber_of(0, &published), 700);

        let o = MqttSpec {
            subscribers: 1000,
            ..MqttSpec::defaults(Scenario::MqttFanout).unwrap()
        };
        assert_eq!(o.expected(&[5]), 5000);

        let odd = MqttSpec {
            publishers: 3,
            subscribers: 5,
            topics: 2,
            ..o
        };
        // Topic 0: subscribers 0, 2, 4 and publishers 0, 2; topic 1: 1, 3 and 1.
        assert_eq!((odd.subscribers_of(0), odd.subscribers_of(1)), (3, 2));
        assert_eq!(odd.expected(&[10, 20, 30]), 10 * 3 + 20 * 2 + 30 * 3);
        assert_eq!(odd.owed_to_subscriber_of(1, &[10, 20, 30]), 20);
        assert_eq!(topic_name(4), "bench/4");
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let s = "Name:\tx\nVmPeak:\t  9999 kB\nVmRSS:\t    1234 kB\nVmData:\t 1 kB\n";
        assert_eq!(parse_vm_rss(s), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(vm_rss(None).unwrap() > 0);
    }

    #[test]
    fn the_shared_totals_appear_when_every_thread_reported() {
        let s = Shared::new(3, 2);
        s.report([(0, 5), (2, 7)].into_iter());
        assert_eq!(s.totals(), None);
        s.report([(1, 1)].into_iter());
        assert_eq!(s.totals(), Some(vec![5, 1, 7]));
    }
}
