//! The publish/subscribe scenarios' client: publishers and subscribers of
//! one thread on one io_uring.
//!
//! Set-up happens before the run starts, blocking, in batches (see
//! [`wire::connect_all`]): every subscriber has its SUBACK before any
//! publisher publishes, and the threads meet at the start barrier only
//! after that. In the loop, publishers queue the PUBLISHes that are due
//! (open loop, each at its intended time, never early), every connection
//! with something queued gets one send per turn, and the multishot
//! receives feed each connection's [`wire::Rx`]. A subscriber checks every
//! delivery (topic, QoS, every payload byte), counts it per publisher and
//! times it; at QoS 1 it queues the PUBACK at once. A QoS 1 publisher keeps
//! at most `--depth` publishes unacknowledged (a due publish waits for a
//! PUBACK, and its latency still counts from its intended time) and times
//! each PUBACK.
//!
//! When the window ends (or every publisher reached its `--messages`
//! share), the thread adds what it published to the run's shared counts; once every
//! thread has, each subscriber knows exactly what it is owed, and the
//! thread drains until everything is accounted for, nothing arrived for
//! [`DRAIN_QUIET_NS`], or [`DRAIN_MAX_NS`] passed.

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use io_uring::{opcode, types};
use ringport_protocols::mqtt::codec::Packet;

use super::wire::{self, QoS, Rx, Setup, Version};
use super::{topic_name, MqttFigures, MqttSpec, Shared};
use crate::client::driver::{Completion, Driver, KIND_MASK, KIND_RECV, KIND_SEND};
use crate::client::{Clock, Schedule, THREAD_PREFIX};
use crate::config::LoadSpec;
use crate::cpu::{cpu_ticks, CpuSource};
use crate::fanout::payload::{self, Stamp};
use crate::fanout::tracker::{Counts, SeqTrack};
use crate::latency::{sleep_for, Pacer, Recorder};
use crate::progress::Progress;
use crate::run::Figures;
use crate::servers::{self, Server, ServerSpec, Target};

/// After everything is published, the drain ends when nothing arrived for this long.
pub const DRAIN_QUIET_NS: u64 = 1_000_000_000;
/// ... and at the latest this long after the window's end.
pub const DRAIN_MAX_NS: u64 = 10_000_000_000;
/// Connections set up at a time.
const SETUP_BATCH: usize = 64;

/// One connection's transport: what it received and what it sends.
struct Conn {
    stream: TcpStream,
    rx: Rx,
    /// Packets queued for the next send.
    out: Vec<u8>,
    /// Packets handed to the kernel (unmoved until the send completes).
    sending: Vec<u8>,
    off: usize,
    busy: bool,
    /// On the thread's list of connections with something to send.
    queued: bool,
    dead: bool,
    last_send_ns: u64,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            rx: Rx::default(),
            out: Vec::with_capacity(4096),
            sending: Vec::with_capacity(4096),
            off: 0,
            busy: false,
            queued: false,
            dead: false,
            last_send_ns: 0,
        }
    }

    /// Whether nothing waits to be handed to the kernel.
    fn idle(&self) -> bool {
        self.dead || (!self.busy && self.out.is_empty())
    }
}

struct Sub {
    /// The topic's index and name.
    topic_index: usize,
    topic: String,
    /// One per publisher of the run (global index).
    tracks: Vec<SeqTrack>,
    counts: Counts,
    /// Deliveries recorded in the window.
    in_window: u64,
}

struct Pub {
    /// Global index: the payload's publisher id.
    id: usize,
    topic: String,
    pacer: Pacer,
    cap: u64,
    /// Publishes so far (the sequence number of the next one).
    next_seq: u64,
    /// Publishes due in the window.
    offered: u64,
    /// QoS 1: (intended, sent) of each unacknowledged publish, by packet id - 1.
    slots: Vec<Option<(u64, u64)>>,
    /// QoS 1: free packet ids.
    free: Vec<u16>,
    acked: u64,
}

impl Pub {
    fn capped(&self, conn: &Conn) -> bool {
        conn.dead || self.next_seq >= self.cap
    }

    fn unacked(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

enum Role {
    Sub(Sub),
    Pub(Pub),
}

/// What one thread measured.
struct ThreadResult {
    deliveries: Recorder,
    puback: Recorder,
    counts: Counts,
    in_window: u64,
    /// (publisher, publishes) of this thread's publishers.
    published: Vec<(usize, u64)>,
    /// (publisher, publishes due in the window).
    offered: Vec<(usize, u64)>,
    published_in_window: u64,
    acked: u64,
    unacked: u64,
    errors: u64,
    io_errors: u64,
    first_error: Option<String>,
}

/// The per-thread counters the handlers add to.
struct Tally {
    errors: u64,
    io_errors: u64,
    first_error: Option<String>,
    published_in_window: u64,
}

impl Tally {
    fn error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }
}

/// One client thread of the publish/subscribe scenarios.
struct PubSubThread {
    // Declared first: the ring is closed before the connections' buffers.
    driver: Driver,
    conns: Vec<Conn>,
    roles: Vec<Role>,
    /// Connections with something to send.
    dirty: Vec<usize>,
    mqtt: MqttSpec,
    version: Version,
    qos: QoS,
    size: usize,
    slack_ns: u64,
    shared: Arc<Shared>,
    live: Arc<AtomicU64>,
    scratch: Vec<u8>,
    tally: Tally,
    deliveries: Recorder,
    puback: Recorder,
    reported: bool,
    totals: Option<Vec<u64>>,
    quiet_since: u64,
    next_ping_check: u64,
}

/// This thread's share of `0..n`: every `threads`-th index from `thread`.
fn share(thread: usize, threads: usize, n: usize) -> impl Iterator<Item = usize> {
    (thread..n).step_by(threads.max(1))
}

/// The `--messages` share of publisher `i` (`u64::MAX`: no cap).
fn publisher_cap(messages: Option<u64>, publishers: usize, i: usize) -> u64 {
    let p = publishers as u64;
    messages.map_or(u64::MAX, |m| m / p + u64::from((i as u64) < m % p))
}

/// A client id unique to this process and run.
fn client_id(nonce: u64, role: char, i: usize) -> String {
    format!("rb{:x}-{role}{i}", nonce & 0xff_ffff)
}

impl PubSubThread {
    #[allow(clippy::too_many_arguments)]
    fn new(
        spec: &LoadSpec,
        m: &MqttSpec,
        addrs: &[std::net::SocketAddr],
        sub_addrs: &[std::net::SocketAddr],
        thread: usize,
        threads: usize,
        shared: Arc<Shared>,
        live: Arc<AtomicU64>,
        nonce: u64,
        schedule: Schedule,
    ) -> Result<PubSubThread> {
        let version = m.version.codec();
        let qos = wire::qos(m.qos);
        let subs: Vec<usize> = share(thread, threads, m.subscribers).collect();
        let pubs: Vec<usize> = share(thread, threads, m.publishers).collect();
        let mut setups: Vec<Setup> = (subs.iter())
            .map(|&j| Setup {
                addr: sub_addrs[j % sub_addrs.len()],
                client_id: client_id(nonce, 's', j),
                subscribe: Some((topic_name(m.topic_of_subscriber(j)), qos)),
            })
            .collect();
        setups.extend(pubs.iter().map(|&i| Setup {
            addr: addrs[i % addrs.len()],
            client_id: client_id(nonce, 'p', i),
            subscribe: None,
        }));
        let streams = wire::connect_all(&setups, version, SETUP_BATCH)?;
        let mut roles = Vec::with_capacity(streams.len());
        for &j in &subs {
            roles.push(Role::Sub(Sub {
                topic_index: m.topic_of_subscriber(j),
                topic: topic_name(m.topic_of_subscriber(j)),
                tracks: vec![SeqTrack::default(); m.publishers],
                counts: Counts::default(),
                in_window: 0,
            }));
        }
        let window = if m.qos == 0 { 0 } else { spec.depth };
        for &i in &pubs {
            roles.push(Role::Pub(Pub {
                id: i,
                topic: topic_name(m.topic_of_publisher(i)),
                pacer: Pacer::new(0, 0),
                cap: publisher_cap(spec.messages, m.publishers, i),
                next_seq: 0,
                offered: 0,
                slots: vec![None; window],
                free: (1..=window as u16).rev().collect(),
                acked: 0,
            }));
        }
        let bufs = (streams.len() * 4).clamp(256, 4096).next_power_of_two() as u16;
        Ok(PubSubThread {
            driver: Driver::new(1024, bufs, 16 * 1024)?,
            conns: streams.into_iter().map(Conn::new).collect(),
            roles,
            dirty: Vec::new(),
            mqtt: m.clone(),
            version,
            qos,
            size: spec.size,
            slack_ns: spec.pace_slack.as_nanos() as u64,
            shared,
            live,
            scratch: vec![0; spec.size],
            tally: Tally {
                errors: 0,
                io_errors: 0,
                first_error: None,
                published_in_window: 0,
            },
            deliveries: Recorder::new(schedule.measure_ns, schedule.end_ns),
            puback: Recorder::new(schedule.measure_ns, schedule.end_ns),
            reported: false,
            totals: None,
            quiet_since: 0,
            next_ping_check: 0,
        })
    }

    fn run(&mut self, clock: &Clock, schedule: &Schedule, rate: u64) -> ThreadResult {
        // Spread the publishers' schedules over one interval.
        let n = self.mqtt.publishers as u64;
        let interval = Pacer::interval_for(rate, self.mqtt.publishers);
        for (k, role) in self.roles.iter_mut().enumerate() {
            if let Role::Pub(p) = role {
                p.pacer = Pacer::new(schedule.start_ns + interval * p.id as u64 / n, interval);
            }
            self.driver
                .arm_recv(self.conns[k].stream.as_raw_fd(), k as u64);
        }
        while clock.now() < schedule.start_ns {
            std::hint::spin_loop();
        }
        loop {
            let now = clock.now();
            let open = now < schedule.end_ns;
            let next_due = if open {
                self.publish_due(now, schedule)
            } else {
                u64::MAX
            };
            if now >= self.next_ping_check {
                self.ping_quiet(now);
                self.next_ping_check = now + 1_000_000_000;
            }
            self.flush(now);
            if self.finished(now, open, schedule) {
                break;
            }
            let wait = if open {
                sleep_for(now, next_due, self.slack_ns, 10_000_000)
            } else {
                5_000_000
            };
            self.driver.submit_and_wait(wait);
            self.handle_completions(clock.now());
        }
        self.finish()
    }

    /// Publishes what is due; returns when the next publish is due.
    fn publish_due(&mut self, now: u64, schedule: &Schedule) -> u64 {
        let mut next = u64::MAX;
        let mut published = 0;
        for (k, role) in self.roles.iter_mut().enumerate() {
            let Role::Pub(p) = role else { continue };
            let conn = &mut self.conns[k];
            while !p.capped(conn) && p.pacer.is_due(now) {
                let packet_id = if self.qos == QoS::AtMostOnce {
                    0
                } else {
                    match p.free.pop() {
                        Some(id) => id,
                        // A PUBACK wakes the thread.
                        None => break,
                    }
                };
                let intended = p.pacer.take(now);
                let stamp = Stamp {
                    publisher: p.id as u32,
                    seq: p.next_seq,
                    intended_ns: intended,
                    sent_ns: now,
                };
                payload::encode_into(&mut self.scratch, &stamp);
                let (v, q) = (self.version, self.qos);
                wire::publish(&p.topic, q, packet_id, &self.scratch, v, &mut conn.out);
                if packet_id != 0 {
                    p.slots[packet_id as usize - 1] = Some((intended, now));
                }
                p.next_seq += 1;
                if (schedule.measure_ns..schedule.end_ns).contains(&intended) {
                    p.offered += 1;
                }
                if (schedule.measure_ns..schedule.end_ns).contains(&now) {
                    self.tally.published_in_window += 1;
                }
                if !conn.queued {
                    conn.queued = true;
                    self.dirty.push(k);
                }
            }
            if !p.capped(conn) && (self.qos == QoS::AtMostOnce || !p.free.is_empty()) {
                next = next.min(p.pacer.next_due());
            }
            published += p.next_seq;
        }
        self.live.store(published, Ordering::Relaxed);
        next
    }

    /// Queues a PINGREQ on every connection that sent nothing for
    /// [`wire::PING_AFTER_NS`] (subscribers at QoS 0 never send otherwise).
    fn ping_quiet(&mut self, now: u64) {
        for (k, c) in self.conns.iter_mut().enumerate() {
            if c.dead || now.saturating_sub(c.last_send_ns) < wire::PING_AFTER_NS {
                continue;
            }
            if c.last_send_ns == 0 {
                c.last_send_ns = now;
                continue;
            }
            wire::pingreq(self.version, &mut c.out);
            if !c.queued {
                c.queued = true;
                self.dirty.push(k);
            }
        }
    }

    /// Hands every connection's queued packets to the kernel, one send
    /// each, unless a send of it is in flight.
    fn flush(&mut self, now: u64) {
        let mut i = 0;
        while i < self.dirty.len() {
            let k = self.dirty[i];
            let c = &mut self.conns[k];
            if c.busy {
                // Sent again when the send in flight completes.
                i += 1;
                continue;
            }
            self.dirty.swap_remove(i);
            c.queued = false;
            if c.dead || c.out.is_empty() {
                c.out.clear();
                continue;
            }
            std::mem::swap(&mut c.out, &mut c.sending);
            c.off = 0;
            c.busy = true;
            c.last_send_ns = now;
            push_send(c, k, &mut self.driver);
        }
    }

    /// Whether the thread is done (see the module doc).
    fn finished(&mut self, now: u64, open: bool, schedule: &Schedule) -> bool {
        if now > schedule.end_ns + DRAIN_MAX_NS {
            return true;
        }
        let conns = &self.conns;
        let pubs = || {
            (self.roles.iter().enumerate()).filter_map(|(k, r)| match r {
                Role::Pub(p) => Some((p, &conns[k])),
                Role::Sub(_) => None,
            })
        };
        if !self.reported {
            let done = !open || pubs().all(|(p, c)| p.capped(c));
            if !done || !pubs().all(|(_, c)| c.idle()) {
                return false;
            }
            self.shared.report(pubs().map(|(p, _)| (p.id, p.next_seq)));
            self.reported = true;
        }
        if self.totals.is_none() {
            self.totals = self.shared.totals();
            self.quiet_since = self.quiet_since.max(now);
        }
        let Some(totals) = &self.totals else {
            return false;
        };
        let m = &self.mqtt;
        let subs_in = (self.roles.iter().zip(conns)).all(|(r, c)| match r {
            Role::Sub(s) => {
                c.dead
                    || c.rx.broken
                    || s.counts.delivered >= m.owed_to_subscriber_of(s.topic_index, totals)
            }
            Role::Pub(p) => c.dead || c.rx.broken || p.unacked() == 0,
        });
        subs_in || now > self.quiet_since + DRAIN_QUIET_NS
    }

    fn handle_completions(&mut self, now: u64) {
        let completions = std::mem::take(&mut self.driver.completions);
        for c in &completions {
            let k = (c.user_data & !KIND_MASK) as usize;
            match c.user_data & KIND_MASK {
                KIND_RECV => self.on_recv(k, c, now),
                KIND_SEND => self.on_sent(k, c.result),
                _ => {}
            }
        }
        self.driver.completions = completions;
    }

    fn on_recv(&mut self, k: usize, c: &Completion, now: u64) {
        let fd = self.conns[k].stream.as_raw_fd();
        if c.result == -libc::ENOBUFS {
            self.driver.arm_recv(fd, k as u64);
            return;
        }
        if c.result <= 0 {
            let conn = &mut self.conns[k];
            if !conn.dead {
                conn.dead = true;
                self.tally.io_errors += 1;
                if self.tally.first_error.is_none() {
                    self.tally.first_error = Some(format!(
                        "connection {k} closed by the broker ({})",
                        if c.result == 0 {
                            "end of stream".to_owned()
                        } else {
                            std::io::Error::from_raw_os_error(-c.result).to_string()
                        }
                    ));
                }
            }
            return;
        }
        if let Some(bid) = Driver::buffer(c.flags) {
            let data = self.driver.bufs.filled(bid, c.result as usize);
            let conn = &mut self.conns[k];
            let ctx = Ctx {
                version: self.version,
                qos: self.qos,
                size: self.size,
                now,
                tally: &mut self.tally,
            };
            let verdict = match &mut self.roles[k] {
                Role::Sub(s) => on_sub_bytes(s, conn, data, ctx, &mut self.deliveries),
                Role::Pub(p) => on_pub_bytes(p, conn, data, ctx, &mut self.puback),
            };
            if let Err(e) = verdict {
                self.tally.error(|| format!("connection {k}: {e}"));
            }
            if conn.queued_now() {
                conn.queued = true;
                self.dirty.push(k);
            }
            self.driver.bufs.recycle(bid);
            self.quiet_since = self.quiet_since.max(now);
        }
        if !Driver::more(c.flags) {
            self.driver.arm_recv(fd, k as u64);
        }
    }

    fn on_sent(&mut self, k: usize, result: i32) {
        let c = &mut self.conns[k];
        if result < 0 {
            c.busy = false;
            c.sending.clear();
            if !c.dead {
                c.dead = true;
                self.tally.io_errors += 1;
            }
            return;
        }
        c.off += result as usize;
        if c.off < c.sending.len() {
            push_send(c, k, &mut self.driver);
            return;
        }
        c.sending.clear();
        c.busy = false;
        if !c.out.is_empty() && !c.queued {
            c.queued = true;
            self.dirty.push(k);
        }
    }

    fn finish(&mut self) -> ThreadResult {
        let mut r = ThreadResult {
            deliveries: self.deliveries.clone(),
            puback: self.puback.clone(),
            counts: Counts::default(),
            in_window: 0,
            published: Vec::new(),
            offered: Vec::new(),
            published_in_window: self.tally.published_in_window,
            acked: 0,
            unacked: 0,
            errors: self.tally.errors,
            io_errors: self.tally.io_errors,
            first_error: self.tally.first_error.take(),
        };
        for (role, conn) in self.roles.iter().zip(&self.conns) {
            match role {
                Role::Sub(s) => {
                    r.counts.merge(&s.counts);
                    r.in_window += s.in_window;
                }
                Role::Pub(p) => {
                    r.published.push((p.id, p.next_seq));
                    r.offered.push((p.id, p.offered));
                    r.acked += p.acked;
                    r.unacked += p.unacked() as u64;
                }
            }
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
        r
    }
}

impl Conn {
    /// Whether a handler queued something on an idle connection.
    fn queued_now(&self) -> bool {
        !self.queued && !self.out.is_empty()
    }
}

/// What the receive handlers need besides the connection.
struct Ctx<'a> {
    version: Version,
    qos: QoS,
    size: usize,
    now: u64,
    tally: &'a mut Tally,
}

/// A subscriber's bytes: deliveries checked, counted, timed and (QoS 1) acknowledged.
fn on_sub_bytes(
    s: &mut Sub,
    conn: &mut Conn,
    data: &[u8],
    ctx: Ctx<'_>,
    rec: &mut Recorder,
) -> Result<(), String> {
    let Ctx {
        version,
        qos,
        size,
        now,
        tally,
    } = ctx;
    let out = &mut conn.out;
    conn.rx.feed(data, version, |p| match p {
        Packet::Publish(p) => {
            if p.qos != QoS::AtMostOnce {
                wire::puback(p.packet_id, version, out);
            }
            if p.topic != s.topic {
                return tally
                    .error(|| format!("a delivery on {} to a subscriber of {}", p.topic, s.topic));
            }
            if p.qos != qos {
                return tally.error(|| format!("a delivery at {:?}, not {qos:?}", p.qos));
            }
            let Some(stamp) = payload::verify(p.payload, size) else {
                return tally.error(|| "a delivery with a wrong byte or length".into());
            };
            let Some(track) = s.tracks.get_mut(stamp.publisher as usize) else {
                return tally
                    .error(|| format!("a delivery from unknown publisher {}", stamp.publisher));
            };
            let arrival = track.on_seq(stamp.seq);
            s.counts.add(arrival);
            if arrival.is_new() && rec.record(stamp.intended_ns, stamp.sent_ns, now) {
                s.in_window += 1;
            }
        }
        Packet::PingResp => {}
        other => tally.error(|| format!("a subscriber got {}", wire::kind(other))),
    })
}

/// A publisher's bytes: PUBACKs (QoS 1) matched to their publishes and timed.
fn on_pub_bytes(
    p: &mut Pub,
    conn: &mut Conn,
    data: &[u8],
    ctx: Ctx<'_>,
    rec: &mut Recorder,
) -> Result<(), String> {
    let Ctx {
        version,
        now,
        tally,
        ..
    } = ctx;
    conn.rx.feed(data, version, |packet| match packet {
        Packet::PubAck(a) => {
            let slot = (a.packet_id as usize)
                .checked_sub(1)
                .and_then(|i| p.slots.get_mut(i));
            let Some(Some((intended, sent))) = slot.map(Option::take) else {
                return tally
                    .error(|| format!("a PUBACK for packet {} not in flight", a.packet_id));
            };
            p.free.push(a.packet_id);
            p.acked += 1;
            rec.record(intended, sent, now);
            if a.code.0 >= 0x80 {
                tally.error(|| format!("a PUBACK with reason code {:#04x}", a.code.0));
            }
        }
        Packet::PingResp => {}
        other => tally.error(|| format!("a publisher got {}", wire::kind(other))),
    })
}

fn push_send(c: &Conn, k: usize, driver: &mut Driver) {
    let rest = &c.sending[c.off..];
    let sqe = opcode::Send::new(
        types::Fd(c.stream.as_raw_fd()),
        rest.as_ptr(),
        rest.len() as u32,
    )
    .build()
    .user_data(KIND_SEND | k as u64);
    // SAFETY: `sending` is neither written nor moved while `busy` is set,
    // which lasts until this send's completion; the ring is dropped first.
    unsafe { driver.push(&sqe) };
}

/// Runs a publish/subscribe scenario against `target`.
pub(super) fn run(
    spec: &LoadSpec,
    m: &MqttSpec,
    target: Target,
    server: &ServerSpec,
    progress: Option<&str>,
) -> Result<Figures> {
    let srv = servers::start(target, server)?;
    let cpus = super::server_cpus(target, server);
    let result = drive(spec, m, srv.as_ref(), &cpus, progress);
    srv.stop();
    result
}

fn drive(
    spec: &LoadSpec,
    m: &MqttSpec,
    srv: &dyn Server,
    server_cpus: &[usize],
    progress: Option<&str>,
) -> Result<Figures> {
    let addrs = srv.addrs();
    let sub_addrs = srv.subscriber_addrs();
    let drops0 = srv.plugin_drops();
    let nthreads = spec.cpus.len().min(m.publishers + m.subscribers).max(1);
    let shared = Arc::new(Shared::new(m.publishers, nthreads));
    let clock = Clock::new();
    let ready = Arc::new(Barrier::new(nthreads + 1));
    let go = Arc::new(Barrier::new(nthreads + 1));
    let start_at = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    // The threads outlive the window's last CPU sample (a thread that has
    // exited has no CPU time to read).
    let sampled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let nonce = clock_nonce();
    let mut live = Vec::new();
    let mut handles = Vec::new();
    for t in 0..nthreads {
        let l = Arc::new(AtomicU64::new(0));
        live.push(l.clone());
        let (spec, m, addrs, shared) = (spec.clone(), m.clone(), addrs.clone(), shared.clone());
        let sub_addrs = sub_addrs.clone();
        let (ready, go, start_at, failed, done, sampled) = (
            ready.clone(),
            go.clone(),
            start_at.clone(),
            failed.clone(),
            done.clone(),
            sampled.clone(),
        );
        let cpu = spec.cpus[t];
        let h = std::thread::Builder::new()
            .name(format!("{THREAD_PREFIX}-{t}"))
            .spawn(move || -> Result<ThreadResult> {
                let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                let schedule = |s: u64| Schedule {
                    start_ns: s,
                    measure_ns: s + spec.warmup.as_nanos() as u64,
                    end_ns: s + (spec.warmup + spec.duration).as_nanos() as u64,
                };
                // The recorders' window is fixed once the start is known.
                let setup = if pinned {
                    PubSubThread::new(
                        &spec,
                        &m,
                        &addrs,
                        &sub_addrs,
                        t,
                        nthreads,
                        shared,
                        l,
                        nonce,
                        schedule(0),
                    )
                } else {
                    Err(anyhow!("cannot pin a client thread to CPU {cpu}"))
                };
                if setup.is_err() {
                    failed.fetch_add(1, Ordering::AcqRel);
                }
                ready.wait();
                go.wait();
                let result = setup.and_then(|mut w| {
                    if failed.load(Ordering::Acquire) > 0 {
                        return Err(anyhow!("another client thread failed to start"));
                    }
                    let sched = schedule(start_at.load(Ordering::Acquire));
                    w.deliveries = Recorder::new(sched.measure_ns, sched.end_ns);
                    w.puback = Recorder::new(sched.measure_ns, sched.end_ns);
                    Ok(w.run(&clock, &sched, spec.rate))
                });
                done.fetch_add(1, Ordering::AcqRel);
                while !sampled.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                result
            })
            .context("spawning a client thread")?;
        handles.push(h);
    }
    ready.wait();
    let s = clock.now() + 1_000_000;
    start_at.store(s, Ordering::Release);
    go.wait();
    let sched = Schedule {
        start_ns: s,
        measure_ns: s + spec.warmup.as_nanos() as u64,
        end_ns: s + (spec.warmup + spec.duration).as_nanos() as u64,
    };

    let server_cpu = srv.cpu();
    let client_cpu = CpuSource::ThreadsNamed(vec![THREAD_PREFIX.into()]);
    let sent_so_far = || live.iter().map(|l| l.load(Ordering::Relaxed)).sum::<u64>();
    let finished = || done.load(Ordering::Acquire) as usize == nthreads;
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
                sent_so_far(),
            );
        }
    };
    while Instant::now() < clock.instant(sched.measure_ns) && !finished() {
        tick(&mut bar);
        sleep_until(
            clock
                .instant(sched.measure_ns)
                .min(Instant::now() + Duration::from_millis(20)),
        );
    }
    let s0 = server_cpu.sample();
    let t0 = cpu_ticks(server_cpus);
    let k0 = cpu_ticks(&spec.cpus);
    let c0 = client_cpu.sample();
    let end = clock.instant(sched.end_ns);
    while Instant::now() < end && !finished() {
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
    let t1 = cpu_ticks(server_cpus);
    let k1 = cpu_ticks(&spec.cpus);
    let c1 = client_cpu.sample();
    sampled.store(true, Ordering::Release);
    if let Some(b) = bar {
        b.finish();
    }
    let mut results = Vec::new();
    for h in handles {
        results.push(
            h.join()
                .map_err(|_| anyhow!("a client thread panicked"))??,
        );
    }

    // Merge.
    let mut deliveries = Recorder::new(sched.measure_ns, sched.end_ns);
    let mut puback = Recorder::new(sched.measure_ns, sched.end_ns);
    let mut counts = Counts::default();
    let (mut published, mut offered) = (vec![0u64; m.publishers], vec![0u64; m.publishers]);
    let (mut in_window, mut pub_in_window, mut acked, mut unacked) = (0, 0, 0, 0);
    let (mut errors, mut io_errors) = (0, 0);
    let mut first_error = None;
    for r in &results {
        deliveries.merge(&r.deliveries);
        puback.merge(&r.puback);
        counts.merge(&r.counts);
        for &(i, n) in &r.published {
            published[i] += n;
        }
        for &(i, n) in &r.offered {
            offered[i] += n;
        }
        in_window += r.in_window;
        pub_in_window += r.published_in_window;
        acked += r.acked;
        unacked += r.unacked;
        errors += r.errors;
        io_errors += r.io_errors;
        if first_error.is_none() {
            first_error = r.first_error.clone();
        }
    }
    if let Some(e) = &first_error {
        eprintln!("{}: first error: {e}", spec.scenario);
    }
    let expected = m.expected(&published);
    let lost = expected.saturating_sub(counts.delivered);
    let per_s = |n: u64| if window > 0.0 { n as f64 / window } else { 0.0 };
    let qos1 = m.qos > 0;
    let mqtt = MqttFigures {
        publishers: m.publishers,
        subscribers: m.subscribers,
        topics: m.topics,
        qos: m.qos,
        published: published.iter().sum(),
        publish_rate: per_s(pub_in_window),
        expected,
        delivered: counts.delivered,
        acked: qos1.then_some(acked),
        unacked: qos1.then_some(unacked),
        puback: qos1.then(|| puback.corrected()),
        server_drops: drops0
            .zip(srv.plugin_drops())
            .map(|(a, b)| b.saturating_sub(a)),
        ..MqttFigures::default()
    };
    let cpu = super::CpuWindow {
        server: s0.zip(s1).map(|(a, b)| b.since(&a)),
        client: c0.zip(c1).map(|(a, b)| b.since(&a)),
        server_idle: t0.zip(t1).and_then(|(a, b)| b.idle_pct_since(&a)),
        client_idle: k0.zip(k1).and_then(|(a, b)| b.idle_pct_since(&a)),
        server_cpus: server_cpus.len(),
        client_cpus: spec.cpus.len(),
        window,
    };
    let bad = errors + lost + io_errors + unacked;
    let mut f = Figures {
        throughput: per_s(in_window),
        offered: per_s(m.expected(&offered)),
        messages: in_window,
        latency: Some(deliveries.corrected()),
        spectrum: crate::latency::spectrum(deliveries.corrected_histogram()),
        latency_uncorrected: Some(deliveries.uncorrected()),
        sent: mqtt.published,
        received: Some(counts.delivered),
        errors,
        lost: Some(lost),
        duplicates: counts.duplicates,
        reordered: counts.reordered,
        io_errors,
        error_rate: if expected > 0 {
            bad as f64 / expected as f64
        } else {
            0.0
        },
        mqtt: Some(mqtt),
        ..Figures::default()
    };
    cpu.fill(
        &mut f,
        in_window,
        (m.publishers + m.subscribers).min(spec.cpus.len()),
    );
    Ok(f)
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// A number that differs between runs (client ids of one run are unique
/// even against an external broker that keeps sessions).
pub(crate) fn clock_nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id()) << 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_share_the_message_cap_and_threads_share_connections() {
        assert_eq!(
            (0..3)
                .map(|i| publisher_cap(Some(10), 3, i))
                .collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(publisher_cap(None, 3, 0), u64::MAX);
        assert_eq!(share(1, 2, 5).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(client_id(0x1234_5678, 's', 7), "rb345678-s7");
    }

    fn conn() -> Conn {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Conn::new(TcpStream::connect(l.local_addr().unwrap()).unwrap())
    }

    fn tally() -> Tally {
        Tally {
            errors: 0,
            io_errors: 0,
            first_error: None,
            published_in_window: 0,
        }
    }

    const SIZE: usize = 48;

    /// A delivery of publisher `p`'s message `seq` on `topic` at `qos`.
    fn delivery(topic: &str, qos: QoS, id: u16, p: u32, seq: u64, out: &mut Vec<u8>) {
        let mut payload = vec![0; SIZE];
        let stamp = Stamp {
            publisher: p,
            seq,
            intended_ns: 1_000 + seq,
            sent_ns: 1_100 + seq,
        };
        payload::encode_into(&mut payload, &stamp);
        wire::publish(topic, qos, id, &payload, Version::V311, out);
    }

    #[test]
    fn a_subscriber_checks_counts_times_and_acknowledges_every_delivery() {
        let mut s = Sub {
            topic_index: 0,
            topic: topic_name(0),
            tracks: vec![SeqTrack::default(); 2],
            counts: Counts::default(),
            in_window: 0,
        };
        let (mut c, mut t, mut rec) = (conn(), tally(), Recorder::new(0, u64::MAX));
        let q = QoS::AtLeastOnce;
        let mut bytes = Vec::new();
        for (id, p, seq) in [(1, 0, 0), (2, 1, 0), (3, 0, 2), (4, 0, 1), (5, 0, 1)] {
            delivery("bench/0", q, id, p, seq, &mut bytes);
        }
        delivery("bench/1", q, 6, 0, 3, &mut bytes); // another topic
        delivery("bench/0", QoS::AtMostOnce, 0, 0, 3, &mut bytes); // another QoS
        delivery("bench/0", q, 7, 5, 0, &mut bytes); // unknown publisher
        let mut bad = Vec::new();
        delivery("bench/0", q, 8, 0, 3, &mut bad);
        *bad.last_mut().unwrap() ^= 1; // a wrong byte
        bytes.extend(bad);
        for chunk in bytes.chunks(13) {
            let ctx = Ctx {
                version: Version::V311,
                qos: q,
                size: SIZE,
                now: 2_000,
                tally: &mut t,
            };
            on_sub_bytes(&mut s, &mut c, chunk, ctx, &mut rec).unwrap();
        }
        // 0/0, 1/0, 0/2 (a gap), 0/1 (late: reordered), 0/1 again (duplicate).
        assert_eq!(
            (s.counts.delivered, s.counts.reordered, s.counts.duplicates),
            (4, 1, 1)
        );
        assert_eq!(t.errors, 4);
        assert_eq!(s.in_window, 4);
        // Due at 1000 + seq, received at 2000 (exact below 2048 ns).
        assert_eq!(rec.corrected().max, 2_000 - 1_000);
        // Every QoS 1 delivery was acknowledged, the bad ones too.
        let mut acks = Vec::new();
        for id in [1, 2, 3, 4, 5, 6, 7, 8] {
            wire::puback(id, Version::V311, &mut acks);
        }
        assert_eq!(c.out, acks);
    }

    #[test]
    fn a_publisher_times_its_pubacks_and_refuses_strange_ones() {
        let mut p = Pub {
            id: 0,
            topic: topic_name(0),
            pacer: Pacer::new(0, 0),
            cap: u64::MAX,
            next_seq: 2,
            offered: 0,
            slots: vec![Some((100, 150)), Some((200, 250)), None],
            free: vec![3],
            acked: 0,
        };
        let (mut c, mut t, mut rec) = (conn(), tally(), Recorder::new(0, u64::MAX));
        let mut bytes = Vec::new();
        for id in [2, 1, 1, 3] {
            wire::puback(id, Version::V311, &mut bytes);
        }
        let ctx = Ctx {
            version: Version::V311,
            qos: QoS::AtLeastOnce,
            size: SIZE,
            now: 1_000,
            tally: &mut t,
        };
        on_pub_bytes(&mut p, &mut c, &bytes, ctx, &mut rec).unwrap();
        // 2 and 1 were in flight; 1 again and 3 were not.
        assert_eq!((p.acked, p.unacked(), t.errors), (2, 0, 2));
        assert_eq!(rec.corrected().count, 2);
        assert_eq!(rec.corrected().max, 1_000 - 100);
        assert_eq!(rec.uncorrected().max, 1_000 - 150);
        assert_eq!(p.free.len(), 3);
    }
}
