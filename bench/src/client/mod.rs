//! The load generator: one pinned io_uring thread per client CPU.
//!
//! Connections (sockets, for UDP) are dealt round-robin to the threads. Each
//! thread owns one ring, set up like an engine shard's
//! ([`ringport_engine::sys::ring::setup`]), and a provided-buffer ring
//! ([`ringport_engine::sys::bufring::BufRing`]) from which the kernel fills
//! multishot receives. One turn of a thread's loop queues every send that is
//! due on every connection, submits them all with one `io_uring_enter` that
//! also waits for completions, and handles the completions in a batch.
//!
//! tls-echo (`tls_echo`) and tls-handshake (`tls_handshake`) drive rustls
//! client connections over the same ring: see those modules.
//!
//! relay-fanout has its own thread (`relay`): subscribers and publishers of
//! one thread share its ring, see that module.
//!
//! Full-speed udp-ingest has its own loop (`ingest`): each send carries a
//! batch of datagrams (UDP GSO or `sendmmsg`), as one datagram per send
//! cannot load a server core from one client core.
//!
//! Open-loop sends are due at exact intended times and never go out early;
//! a wake-up sends every request already due, and the ring's wait timeout
//! is the pacing timer, allowed `--pace-slack-us` of lateness so that due
//! requests mostly ride on the wake-ups replies cause anyway.
//!
//! Time is one monotonic [`Clock`] shared by all threads, so the warm-up and
//! measurement windows and the open-loop schedules line up across threads.

pub(crate) mod driver;
mod exchange;
mod ingest;
mod relay;
mod relay_pub;
mod tcp;
mod tls_echo;
mod tls_handshake;
mod udp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};

use crate::config::{LoadSpec, Scenario};
use crate::fanout::FanoutCounts;
use crate::latency::Recorder;
use crate::tls::ClientTls;

/// Thread-name prefix of the load generator's threads (for CPU accounting).
pub const THREAD_PREFIX: &str = "bn-client";

/// A monotonic clock in nanoseconds since its creation.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        Clock {
            base: Instant::now(),
        }
    }

    /// Nanoseconds since the clock was made.
    #[inline]
    pub fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// The instant `ns` after the clock's start.
    pub fn instant(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// When a run's phases begin and end, on the shared [`Clock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Load starts.
    pub start_ns: u64,
    /// Measurement starts (after the warm-up).
    pub measure_ns: u64,
    /// Measurement ends; no new message is sent after it.
    pub end_ns: u64,
}

/// What one client thread (or all of them, merged) saw.
#[derive(Debug, Clone)]
pub struct ClientReport {
    /// Latencies of the replies inside the measurement window.
    pub recorder: Recorder,
    /// Messages completed inside the window (replies, or sends for one-way traffic).
    pub completed: u64,
    /// Messages meant to be sent inside the window (the offered load).
    pub offered: u64,
    /// Messages sent, whole run.
    pub sent: u64,
    /// Distinct replies received, whole run.
    pub received: u64,
    /// Replies with a wrong byte, wrong length, or out of order on a stream.
    pub errors: u64,
    /// Datagram replies that repeated an earlier one.
    pub duplicates: u64,
    /// Datagram replies that arrived after a later one.
    pub reordered: u64,
    /// Requests given up after `--reply-timeout` (some answered late).
    pub timed_out: u64,
    /// Requests never answered (UDP: sent minus distinct replies; TCP: left in
    /// flight when the run ended or the connection broke).
    pub unanswered: u64,
    /// Socket-level failures: refused or reset connections, failed sends.
    pub io_errors: u64,
    /// relay-fanout's own counts (publishes per topic, deliveries, `LAGGED`).
    pub fanout: Option<FanoutCounts>,
    /// tls-handshake's handshakes by kind.
    pub tls: Option<HandshakeCounts>,
}

/// Handshakes completed, by what rustls says they were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HandshakeCounts {
    /// Full handshakes.
    pub full: u64,
    /// Resumed handshakes (a session ticket accepted).
    pub resumed: u64,
}

impl ClientReport {
    fn new(schedule: &Schedule) -> ClientReport {
        ClientReport {
            recorder: Recorder::new(schedule.measure_ns, schedule.end_ns),
            completed: 0,
            offered: 0,
            sent: 0,
            received: 0,
            errors: 0,
            duplicates: 0,
            reordered: 0,
            timed_out: 0,
            unanswered: 0,
            io_errors: 0,
            fanout: None,
            tls: None,
        }
    }

    fn merge(&mut self, o: &ClientReport) {
        self.recorder.merge(&o.recorder);
        self.completed += o.completed;
        self.offered += o.offered;
        self.sent += o.sent;
        self.received += o.received;
        self.errors += o.errors;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.timed_out += o.timed_out;
        self.unanswered += o.unanswered;
        self.io_errors += o.io_errors;
        match (&mut self.fanout, &o.fanout) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.fanout = Some(b.clone()),
            _ => {}
        }
        if let Some(b) = o.tls {
            let a = self.tls.get_or_insert_with(Default::default);
            a.full += b.full;
            a.resumed += b.resumed;
        }
    }
}

/// What a thread gets: its share of the load.
#[derive(Debug, Clone)]
struct ThreadLoad {
    spec: LoadSpec,
    target: SocketAddr,
    /// Every address of the server (relay-fanout spreads over them).
    addrs: Vec<SocketAddr>,
    /// Where relay-fanout's subscribers connect (spread the same way).
    sub_addrs: Vec<SocketAddr>,
    /// This thread's index among `threads`.
    thread: usize,
    threads: usize,
    /// What relay-fanout's threads share.
    relay: Option<Arc<relay::Shared>>,
    /// Number of connections of this thread.
    conns: usize,
    /// Message cap per connection of this thread (`u64::MAX`: none).
    caps: Vec<u64>,
    /// Interval of each connection's pacer (0: closed loop / full speed).
    interval_ns: u64,
    /// Where the thread publishes its sent count for the progress line.
    live: Arc<AtomicU64>,
    /// The TLS scenarios' client settings.
    tls: Option<ClientTls>,
}

/// A client run in progress; [`Running::wait`] returns the merged report.
#[derive(Debug)]
pub struct Running {
    threads: Vec<std::thread::JoinHandle<Result<ClientReport>>>,
    /// The run's schedule.
    pub schedule: Schedule,
    /// The clock the schedule is on.
    pub clock: Clock,
    done: Arc<AtomicU64>,
    live: Vec<Arc<AtomicU64>>,
}

impl Running {
    /// Messages sent so far by all threads (updated every loop turn).
    pub fn sent_so_far(&self) -> u64 {
        self.live.iter().map(|l| l.load(Ordering::Relaxed)).sum()
    }

    /// Whether every thread has finished (a message cap reached, or the end).
    pub fn finished(&self) -> bool {
        self.done.load(Ordering::Acquire) as usize == self.threads.len()
    }

    /// Joins the threads and merges their reports.
    pub fn wait(self) -> Result<ClientReport> {
        let mut total: Option<ClientReport> = None;
        for t in self.threads {
            let r = t
                .join()
                .map_err(|_| anyhow!("a client thread panicked"))??;
            match &mut total {
                Some(tot) => tot.merge(&r),
                None => total = Some(r),
            }
        }
        total.ok_or_else(|| anyhow!("no client thread"))
    }
}

/// Starts the client threads against `addrs` (the server's addresses; all
/// but relay-fanout use the first; relay-fanout's subscribers connect to
/// `sub_addrs` instead): they connect, then all start at once.
/// Returns when every thread has connected (relay-fanout: and every
/// subscription is active; tls-echo: and handshaken) and the schedule is
/// fixed. The TLS scenarios need `tls`.
pub fn start(
    spec: &LoadSpec,
    addrs: &[SocketAddr],
    sub_addrs: &[SocketAddr],
    tls: Option<&ClientTls>,
) -> Result<Running> {
    if spec.scenario.is_tls() && tls.is_none() {
        return Err(anyhow!("{} needs TLS client settings", spec.scenario));
    }
    spec.validate().map_err(|e| anyhow!(e))?;
    let target = *addrs.first().ok_or_else(|| anyhow!("no server address"))?;
    if sub_addrs.is_empty() {
        return Err(anyhow!("no server address for the subscribers"));
    }
    let all_conns = match &spec.relay {
        Some(r) => r.subscribers + r.publishers,
        None => spec.conns,
    };
    let nthreads = spec.cpus.len().min(all_conns);
    let shared = spec
        .relay
        .as_ref()
        .map(|r| Arc::new(relay::Shared::new(r.topics, nthreads)));
    let clock = Clock::new();
    let ready = Arc::new(Barrier::new(nthreads + 1));
    let go = Arc::new(Barrier::new(nthreads + 1));
    let start_at = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let per_conn_interval = crate::latency::Pacer::interval_for(spec.rate, spec.conns);
    let mut threads = Vec::with_capacity(nthreads);
    let live: Vec<Arc<AtomicU64>> = (0..nthreads).map(|_| Arc::new(AtomicU64::new(0))).collect();
    for (t, live) in live.iter().enumerate() {
        let conns = (t..spec.conns).step_by(nthreads).count();
        let caps = (t..spec.conns)
            .step_by(nthreads)
            .map(|c| match spec.messages {
                Some(m) => m / spec.conns as u64 + u64::from((c as u64) < m % spec.conns as u64),
                None => u64::MAX,
            })
            .collect();
        let load = ThreadLoad {
            spec: spec.clone(),
            target,
            addrs: addrs.to_vec(),
            sub_addrs: sub_addrs.to_vec(),
            thread: t,
            threads: nthreads,
            relay: shared.clone(),
            conns,
            caps,
            interval_ns: per_conn_interval,
            live: live.clone(),
            tls: tls.cloned(),
        };
        let cpu = spec.cpus[t];
        let (ready, go, start_at, done, failed) = (
            ready.clone(),
            go.clone(),
            start_at.clone(),
            done.clone(),
            failed.clone(),
        );
        let h = std::thread::Builder::new()
            .name(format!("{THREAD_PREFIX}-{t}"))
            .spawn(move || {
                let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                let setup = if pinned {
                    if load.relay.is_some() {
                        relay::RelayThread::new(&load).map(Worker::Relay)
                    } else if load.spec.scenario == Scenario::TlsEcho {
                        tls_echo::TlsEchoThread::new(&load).map(Worker::TlsEcho)
                    } else if load.spec.scenario == Scenario::TlsHandshake {
                        tls_handshake::HandshakeThread::new(&load).map(Worker::TlsHandshake)
                    } else if load.spec.scenario.is_one_way() && load.spec.rate == 0 {
                        ingest::IngestThread::new(&load).map(Worker::Ingest)
                    } else if load.spec.scenario.is_udp() {
                        udp::UdpThread::new(&load).map(Worker::Udp)
                    } else {
                        tcp::TcpThread::new(&load).map(Worker::Tcp)
                    }
                } else {
                    Err(anyhow!("cannot pin a client thread to CPU {cpu}"))
                };
                if setup.is_err() {
                    failed.fetch_add(1, Ordering::AcqRel);
                }
                ready.wait();
                go.wait();
                let result = setup.and_then(|w| {
                    if failed.load(Ordering::Acquire) > 0 {
                        return Err(anyhow!("another client thread failed to start"));
                    }
                    let s = start_at.load(Ordering::Acquire);
                    let spec = &load.spec;
                    let schedule = Schedule {
                        start_ns: s,
                        measure_ns: s + spec.warmup.as_nanos() as u64,
                        end_ns: s + (spec.warmup + spec.duration).as_nanos() as u64,
                    };
                    match w {
                        Worker::Tcp(mut w) => w.run(&clock, &schedule),
                        Worker::Udp(mut w) => w.run(&clock, &schedule),
                        Worker::Ingest(mut w) => w.run(&clock, &schedule),
                        Worker::Relay(mut w) => w.run(&clock, &schedule),
                        Worker::TlsEcho(mut w) => w.run(&clock, &schedule),
                        Worker::TlsHandshake(mut w) => w.run(&clock, &schedule),
                    }
                });
                done.fetch_add(1, Ordering::AcqRel);
                result
            })
            .context("spawning a client thread")?;
        threads.push(h);
    }
    ready.wait();
    let s = clock.now() + 1_000_000;
    start_at.store(s, Ordering::Release);
    go.wait();
    let schedule = Schedule {
        start_ns: s,
        measure_ns: s + spec.warmup.as_nanos() as u64,
        end_ns: s + (spec.warmup + spec.duration).as_nanos() as u64,
    };
    Ok(Running {
        threads,
        schedule,
        clock,
        done,
        live,
    })
}

enum Worker {
    Tcp(tcp::TcpThread),
    Udp(udp::UdpThread),
    Ingest(ingest::IngestThread),
    Relay(relay::RelayThread),
    TlsEcho(tls_echo::TlsEchoThread),
    TlsHandshake(tls_handshake::HandshakeThread),
}
