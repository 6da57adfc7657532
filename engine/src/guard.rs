//! A shard's operations state: admission checks, per-connection deadlines,
//! the handshake log and per-listener counters.
//!
//! The shard calls in at a handful of points (accept, open, bytes in and
//! out, peer FIN, close, datagram, once per turn) and acts on the answers;
//! this module does no I/O itself. Per message it costs an indexed store or
//! two: connection deadlines are kept lazily in one heap entry per
//! connection, re-checked only when that entry comes due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringport_plugin::CloseReason;

use crate::alerts::{DenialAlarm, Gate, LogGate, SourceAlert, SourceWindows};
use crate::clock::TurnClock;
use crate::listener_stats::{ListenerDrop, SharedListenerStats, TimeoutKind};
use crate::log::{CloseCause, Event, LogRecord, LogSink};
use crate::operations::Limits;
use crate::policy::{Admission, AdmissionConfig, Decision, DenyReason};

/// Denial lines per source and minute before the rest are only counted.
const DENY_LOG_PER_MINUTE: u64 = 10;
/// Sources the per-shard log gate and UDP source window track.
const MAX_TRACKED_SOURCES: usize = 65536;
/// A time as nanoseconds since the process's clock epoch
/// ([`crate::clock::nanos_since`]): 8 bytes where an `Instant` takes 16,
/// exact, and good for 584 years.
type Nanos = u64;
/// No such time (not half-closed; a handshake without a timeout).
const NEVER: Nanos = u64::MAX;

/// `t + d`, or `None` when that is past the clock's range (no deadline).
#[inline]
fn after(t: Nanos, d: Duration) -> Option<Nanos> {
    let at = t as u128 + d.as_nanos();
    (at < NEVER as u128).then_some(at as Nanos)
}

/// What the engine shares with every shard about operations.
#[derive(Debug)]
pub struct OpsShared {
    /// Per shard, per listener: live counters (the shard counts into them).
    pub listeners: Vec<Vec<Arc<SharedListenerStats>>>,
    /// Set when the server drains: stop accepting, close UDP sockets.
    pub draining: AtomicBool,
}

/// Everything a shard needs for its guard.
#[derive(Debug)]
pub struct GuardInit {
    /// Per listener: admission and limits.
    pub listeners: Vec<(AdmissionConfig, Limits)>,
    /// Per listener: open connections over all shards.
    pub listener_open: Vec<Arc<AtomicU32>>,
    /// This shard's log queue.
    pub log: Option<LogSink>,
    /// UDP sources are logged again after this long.
    pub udp_source_window: Duration,
    /// How IPv6 sources are grouped for per-source counts.
    pub ipv6_prefix: crate::policy::Ipv6SourcePrefix,
    /// Shared state.
    pub shared: Arc<OpsShared>,
}

/// A stream's operations state: one per stream, live or idle, so kept
/// small (`tests::a_meta_stays_small`): times but one as [`Nanos`], no copy of
/// the peer's address (the shard's `Conn` has it and hands it to
/// [`Guard::closed`]).
#[derive(Debug, Clone, Copy)]
struct Meta {
    generation: u32,
    listener: u16,
    local_port: u16,
    opened: Nanos,
    /// While `handshaking`: when the TLS handshake must end ([`NEVER`]:
    /// no limit). Otherwise when the first-bytes deadline starts: the
    /// open, or for TLS the end of the handshake.
    phase_at: Nanos,
    /// Stamped per message (with an idle timeout), so kept as the shard
    /// clock's `Instant`: no conversion on the hot path.
    last_active: Instant,
    /// When the peer sent FIN ([`NEVER`]: it has not).
    half_closed_at: Nanos,
    bytes_in: u64,
    bytes_out: u64,
    cause: Option<CloseCause>,
    verdict: Decision,
    live: bool,
    first_byte: bool,
    handshaking: bool,
}

/// One listener on this shard.
#[derive(Debug)]
struct Listener {
    admission: Admission,
    limits: Limits,
    counters: Arc<SharedListenerStats>,
    /// Denials per source, for the source-denial alert.
    alarm: Option<DenialAlarm>,
}

/// The per-shard operations state (see the module docs).
#[derive(Debug)]
pub struct Guard {
    shard: u16,
    listeners: Vec<Listener>,
    conns: Vec<Meta>,
    /// What [`Nanos`] count from ([`crate::clock::epoch`], as for the
    /// shard's [`TurnClock`]).
    epoch: Instant,
    deadlines: BinaryHeap<Reverse<(Nanos, u32, u32)>>,
    /// The top of `deadlines` as an `Instant`, for the shard's every turn.
    next_at: Option<Instant>,
    log: Option<LogSink>,
    deny_gate: LogGate,
    udp_sources: SourceWindows,
    ipv6_prefix: crate::policy::Ipv6SourcePrefix,
    /// The earliest window end of a firing source-denial alert.
    alarm_next: Option<Instant>,
    alarm_events: Vec<SourceAlert>,
    shared: Arc<OpsShared>,
}

impl Guard {
    /// The guard of shard `shard`.
    pub fn new(shard: usize, init: GuardInit) -> Guard {
        let cells = &init.shared.listeners[shard];
        let listeners = init
            .listeners
            .into_iter()
            .zip(init.listener_open)
            .zip(cells)
            .map(|(((adm, limits), open), cells)| Listener {
                admission: Admission::new(adm, open),
                alarm: limits
                    .source_denial_alert
                    .map(|c| DenialAlarm::new(c, MAX_TRACKED_SOURCES)),
                limits,
                counters: cells.clone(),
            })
            .collect();
        Guard {
            shard: shard as u16,
            listeners,
            conns: Vec::new(),
            epoch: crate::clock::epoch(),
            deadlines: BinaryHeap::new(),
            next_at: None,
            log: init.log,
            deny_gate: LogGate::new(
                DENY_LOG_PER_MINUTE,
                Duration::from_secs(60),
                MAX_TRACKED_SOURCES,
            ),
            udp_sources: SourceWindows::new(init.udp_source_window, MAX_TRACKED_SOURCES),
            ipv6_prefix: init.ipv6_prefix,
            alarm_next: None,
            alarm_events: Vec::new(),
            shared: init.shared,
        }
    }

    /// `t` as [`Nanos`] (a time before the epoch counts as the epoch).
    #[inline]
    fn nanos(&self, t: Instant) -> Nanos {
        crate::clock::nanos_since(self.epoch, t)
    }

    /// Arms a deadline entry for (`idx`, `generation`) at `at`.
    fn push_deadline(&mut self, at: Nanos, idx: u32, generation: u32) {
        self.deadlines.push(Reverse((at, idx, generation)));
        self.note_next();
    }

    /// Brings `next_at` up to date with the heap's top.
    fn note_next(&mut self) {
        self.next_at = self
            .deadlines
            .peek()
            .map(|Reverse((at, ..))| self.epoch + Duration::from_nanos(*at));
    }

    /// The key `ip` counts under in per-source limits (IPv6: its prefix).
    #[inline]
    pub fn source_key(&self, ip: IpAddr) -> IpAddr {
        self.ipv6_prefix.key(ip)
    }

    /// Whether the server is draining.
    #[inline]
    pub fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    fn record(&self, event: Event, at: Instant, listener: u16, peer: SocketAddr) -> LogRecord {
        LogRecord::new(event, at, listener, self.shard, peer)
    }

    fn count_verdict(&mut self, listener: u16, ip: IpAddr, d: Decision, now: Instant) {
        let ip = self.ipv6_prefix.key(ip);
        let l = &mut self.listeners[listener as usize];
        match d {
            Decision::Allow => {}
            Decision::Deny(r) => {
                l.counters.denied[r as usize].add(1);
                if let Some(alarm) = &mut l.alarm {
                    alarm.handle_denial(ip, now, &mut self.alarm_events);
                    if !self.alarm_events.is_empty() {
                        self.on_source_alerts(listener, now);
                    }
                }
            }
            Decision::WouldDeny(r) => l.counters.would_deny[r as usize].add(1),
        }
    }

    /// Logs the source-denial alerts of `listener` in `alarm_events`,
    /// publishes how many fire and re-computes the next window end.
    fn on_source_alerts(&mut self, listener: u16, now: Instant) {
        let l = &mut self.listeners[listener as usize];
        let Some(alarm) = &l.alarm else { return };
        l.counters.sources_alerting.set(alarm.firing() as u64);
        let window = alarm.config().window;
        for e in self.alarm_events.drain(..) {
            if let Some(log) = &self.log {
                let mut r = LogRecord::new(
                    Event::SourceAlert { firing: e.firing },
                    now,
                    listener,
                    self.shard,
                    SocketAddr::new(e.source, 0),
                );
                r.count = e.denials;
                r.duration = window;
                log.try_log(r);
            }
        }
        self.alarm_next = self
            .listeners
            .iter()
            .filter_map(|l| l.alarm.as_ref()?.next_due())
            .min();
    }

    /// Logs a denial, at most [`DENY_LOG_PER_MINUTE`] per source.
    fn log_denial(
        &mut self,
        listener: u16,
        peer: SocketAddr,
        local_port: u16,
        d: Decision,
        now: Instant,
    ) {
        if self.log.is_none() {
            return;
        }
        if let Gate::Log { suppressed } = self.deny_gate.check(self.ipv6_prefix.key(peer.ip()), now)
        {
            let mut r = self.record(Event::Deny, now, listener, peer);
            r.local_port = local_port;
            r.verdict = d;
            r.suppressed = suppressed;
            if let Some(log) = &self.log {
                log.try_log(r);
            }
        }
    }

    /// The admission checks for a connection just accepted on `listener`.
    /// `None`: refused (counted and logged); close it. `Some`: pass the
    /// decision to [`Guard::opened`] or [`Guard::rejected`].
    pub fn admit(
        &mut self,
        listener: u16,
        peer: SocketAddr,
        local: SocketAddr,
        now: Instant,
    ) -> Option<Decision> {
        let d = self.listeners[listener as usize]
            .admission
            .admit_stream(peer.ip(), now);
        self.count_verdict(listener, peer.ip(), d, now);
        if !d.admits() {
            self.log_denial(listener, peer, local.port(), d, now);
            return None;
        }
        Some(d)
    }

    /// The plugin rejected a connection [`Guard::admit`] let through.
    pub fn rejected(&mut self, listener: u16, peer: SocketAddr) {
        self.listeners[listener as usize]
            .admission
            .release(peer.ip());
    }

    /// The plugin accepted connection (`idx`, `generation`): log it and arm
    /// its first-bytes deadline.
    #[allow(clippy::too_many_arguments)]
    pub fn opened(
        &mut self,
        idx: u32,
        generation: u32,
        listener: u16,
        peer: SocketAddr,
        local: SocketAddr,
        d: Decision,
        now: Instant,
    ) {
        let i = idx as usize;
        let at = self.nanos(now);
        let meta = Meta {
            generation,
            listener,
            local_port: local.port(),
            opened: at,
            phase_at: at,
            last_active: now,
            half_closed_at: NEVER,
            bytes_in: 0,
            bytes_out: 0,
            cause: None,
            verdict: d,
            live: true,
            first_byte: false,
            handshaking: false,
        };
        if self.conns.len() <= i {
            // Slots below `i` stay vacant until their own connections open.
            let vacant = Meta {
                generation: 0,
                live: false,
                ..meta
            };
            self.conns.resize(i + 1, vacant);
        }
        self.conns[i] = meta;
        let l = &mut self.listeners[listener as usize];
        l.counters.conns_accepted.add(1);
        if let Some(at) = self.deadline_of(i) {
            self.push_deadline(at, idx, generation);
        }
        if let Some(log) = &self.log {
            let mut r = LogRecord::new(Event::Open, now, listener, self.shard, peer);
            r.local_port = local.port();
            r.verdict = d;
            log.try_log(r);
        }
    }

    #[inline]
    fn meta(&mut self, idx: u32) -> Option<&mut Meta> {
        self.conns.get_mut(idx as usize).filter(|m| m.live)
    }

    /// `n` bytes arrived on connection `idx`. The clock is read only if the
    /// listener has an idle timeout (nothing else looks at `last_active`).
    #[inline]
    pub fn bytes_in(&mut self, idx: u32, n: usize, clock: &TurnClock) {
        let Some(m) = self.conns.get_mut(idx as usize).filter(|m| m.live) else {
            return;
        };
        m.bytes_in += n as u64;
        m.first_byte = true;
        let l = &self.listeners[m.listener as usize];
        if l.limits.idle_timeout.is_some() {
            m.last_active = clock.now();
        }
        l.counters.bytes_in.add(n as u64);
    }

    /// The kernel took `n` bytes of connection `idx` (the clock as for
    /// [`bytes_in`](Self::bytes_in)).
    #[inline]
    pub fn bytes_out(&mut self, idx: u32, n: usize, clock: &TurnClock) {
        let Some(m) = self.conns.get_mut(idx as usize).filter(|m| m.live) else {
            return;
        };
        m.bytes_out += n as u64;
        let l = &self.listeners[m.listener as usize];
        if l.limits.idle_timeout.is_some() {
            m.last_active = clock.now();
        }
        l.counters.bytes_out.add(n as u64);
    }

    /// The peer of connection `idx` shut its sending side.
    pub fn half_closed(&mut self, idx: u32, generation: u32, now: Instant) {
        let at = self.nanos(now);
        let Some(m) = self.meta(idx) else { return };
        if m.generation != generation || m.half_closed_at != NEVER {
            return;
        }
        m.half_closed_at = at;
        // The half-closed deadline may come before the entry in the heap.
        if let Some(at) = self.deadline_of(idx as usize) {
            self.push_deadline(at, idx, generation);
        }
    }

    /// Connection (`idx`, `generation`) starts a TLS handshake that must
    /// end within `timeout` (None: no limit); until then the first-bytes
    /// deadline waits.
    pub fn tls_handshaking(
        &mut self,
        idx: u32,
        generation: u32,
        timeout: Option<std::time::Duration>,
        now: Instant,
    ) {
        let at = self.nanos(now);
        let Some(m) = self.meta(idx) else { return };
        if m.generation != generation {
            return;
        }
        // A timeout too long to add to the clock is no timeout.
        m.handshaking = true;
        m.phase_at = timeout.and_then(|t| after(at, t)).unwrap_or(NEVER);
        if let Some(at) = self.deadline_of(idx as usize) {
            self.push_deadline(at, idx, generation);
        }
    }

    /// The TLS handshake of (`idx`, `generation`) succeeded at `now`: the
    /// first-bytes deadline starts, unless plaintext came with it.
    pub fn tls_established(&mut self, idx: u32, generation: u32, plaintext: bool, now: Instant) {
        let at = self.nanos(now);
        let Some(m) = self.meta(idx) else { return };
        if m.generation != generation {
            return;
        }
        m.handshaking = false;
        m.phase_at = at;
        m.first_byte = plaintext;
        if let Some(at) = self.deadline_of(idx as usize) {
            self.push_deadline(at, idx, generation);
        }
    }

    /// Sets why (`idx`, `generation`) will close, for its close line
    /// (unless a timeout already set one).
    pub fn set_cause(&mut self, idx: u32, generation: u32, cause: CloseCause) {
        if let Some(m) = self.meta(idx) {
            if m.generation == generation && m.cause.is_none() {
                m.cause = Some(cause);
            }
        }
    }

    /// Refuses a connection already admitted by [`Guard::admit`] for
    /// `reason` (a TLS limit, a client certificate): counted, logged and
    /// alerted on like an address denial. A connection not yet
    /// [`opened`](Self::opened) also gets its admission slot back.
    pub fn deny(
        &mut self,
        listener: u16,
        peer: SocketAddr,
        local_port: u16,
        reason: DenyReason,
        opened: bool,
        now: Instant,
    ) {
        let d = Decision::Deny(reason);
        self.count_verdict(listener, peer.ip(), d, now);
        self.log_denial(listener, peer, local_port, d, now);
        if !opened {
            self.rejected(listener, peer);
        }
    }

    /// Audit mode: counts what [`Guard::deny`] would have refused.
    pub fn would_deny(
        &mut self,
        listener: u16,
        peer: SocketAddr,
        reason: DenyReason,
        now: Instant,
    ) {
        self.count_verdict(listener, peer.ip(), Decision::WouldDeny(reason), now);
    }

    /// A plugin call panicked: logs a `plugin_panic` line (`peer` is the
    /// connection's or datagram's; port 0 when the call had none).
    pub fn plugin_panic(
        &mut self,
        call: &'static str,
        listener: u16,
        peer: SocketAddr,
        now: Instant,
    ) {
        if let Some(log) = &self.log {
            log.try_log(self.record(Event::PluginPanic { call }, now, listener, peer));
        }
    }

    /// Counts a TLS handshake's end on `listener` and logs its line.
    pub fn tls_handshake(&mut self, listener: u16, mut record: LogRecord) {
        let Some(t) = &record.tls else { return };
        self.listeners[listener as usize].counters.tls_handshakes[t.result as usize].add(1);
        record.shard = self.shard;
        if let Some(log) = &self.log {
            log.try_log(record);
        }
    }

    /// Connection (`idx`, `generation`) with `peer` closed for `reason`:
    /// log it with its totals and free its admission slot.
    pub fn closed(
        &mut self,
        idx: u32,
        generation: u32,
        peer: SocketAddr,
        reason: CloseReason,
        now: Instant,
    ) {
        let draining = self.draining();
        let epoch = self.epoch;
        let Some(m) = self.meta(idx) else { return };
        if m.generation != generation {
            return;
        }
        m.live = false;
        let m = *m;
        let cause = m.cause.unwrap_or(match reason {
            CloseReason::Shutdown if draining => CloseCause::DrainTimeout,
            r => CloseCause::Plugin(r),
        });
        let l = &mut self.listeners[m.listener as usize];
        l.counters.conns_closed.add(1);
        l.admission.release(peer.ip());
        if let Some(log) = &self.log {
            let mut r = LogRecord::new(Event::Close, now, m.listener, self.shard, peer);
            r.local_port = m.local_port;
            r.verdict = m.verdict;
            r.duration = now.saturating_duration_since(epoch + Duration::from_nanos(m.opened));
            r.bytes_in = m.bytes_in;
            r.bytes_out = m.bytes_out;
            r.close = Some(cause);
            log.try_log(r);
        }
    }

    /// When connection `i` is due, and for what.
    fn due(&self, i: usize) -> Option<(Nanos, TimeoutKind)> {
        let m = &self.conns[i];
        let lim = &self.listeners[m.listener as usize].limits;
        let mut best: Option<(Nanos, TimeoutKind)> = None;
        let mut consider = |at: Option<Nanos>, kind| {
            if let Some(at) = at.filter(|&at| at != NEVER) {
                if best.map_or(true, |(b, _)| at < b) {
                    best = Some((at, kind));
                }
            }
        };
        if m.handshaking {
            consider(Some(m.phase_at), TimeoutKind::TlsHandshake);
        } else if !m.first_byte {
            consider(
                lim.first_bytes_timeout.and_then(|t| after(m.phase_at, t)),
                TimeoutKind::FirstBytes,
            );
        }
        consider(
            lim.idle_timeout
                .and_then(|t| after(crate::clock::nanos_since(self.epoch, m.last_active), t)),
            TimeoutKind::Idle,
        );
        if m.half_closed_at != NEVER {
            consider(
                lim.half_closed_timeout
                    .and_then(|t| after(m.half_closed_at, t)),
                TimeoutKind::HalfClosed,
            );
        }
        best
    }

    fn deadline_of(&self, i: usize) -> Option<Nanos> {
        self.due(i).map(|(at, _)| at)
    }

    /// The earliest connection deadline or end of a firing source-denial
    /// alert's window, for the shard's wait.
    #[inline]
    pub fn next_deadline(&self) -> Option<Instant> {
        let conn = self.next_at;
        match (conn, self.alarm_next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Pushes every connection whose deadline has passed at `now` into
    /// `out` (and counts it); entries that moved on are re-armed. Also
    /// clears the source-denial alerts whose window ended quietly.
    pub fn poll_expired(&mut self, now: Instant, out: &mut Vec<(u32, u32)>) {
        if self.alarm_next.is_some_and(|at| at <= now) {
            for i in 0..self.listeners.len() {
                if let Some(alarm) = &mut self.listeners[i].alarm {
                    alarm.poll_cleared(now, &mut self.alarm_events);
                    self.on_source_alerts(i as u16, now);
                }
            }
        }
        let now_ns = self.nanos(now);
        while let Some(&Reverse((at, idx, generation))) = self.deadlines.peek() {
            if at > now_ns {
                break;
            }
            self.deadlines.pop();
            let i = idx as usize;
            match self.conns.get(i) {
                Some(m) if m.live && m.generation == generation && m.cause.is_none() => {}
                _ => continue,
            }
            match self.due(i) {
                Some((due, kind)) if due <= now_ns => {
                    let m = &mut self.conns[i];
                    m.cause = Some(match kind {
                        TimeoutKind::FirstBytes => CloseCause::FirstBytesTimeout,
                        TimeoutKind::Idle => CloseCause::IdleTimeout,
                        TimeoutKind::HalfClosed => CloseCause::HalfClosedTimeout,
                        TimeoutKind::TlsHandshake => CloseCause::TlsHandshakeTimeout,
                    });
                    let l = m.listener as usize;
                    self.listeners[l].counters.timeouts[kind as usize].add(1);
                    out.push((idx, generation));
                }
                // Still active: one entry per connection, at its new deadline.
                Some((due, _)) if due != at => self.deadlines.push(Reverse((due, idx, generation))),
                _ => {}
            }
        }
        self.note_next();
    }

    /// The checks for a datagram of `len` bytes from `peer` on `listener`:
    /// the allowlist, then the listener's `max_datagram`. `false`: drop it
    /// (counted; denials also logged).
    #[inline]
    pub fn datagram(
        &mut self,
        listener: u16,
        peer: SocketAddr,
        local_port: u16,
        len: usize,
        clock: &TurnClock,
    ) -> bool {
        let d = self.listeners[listener as usize]
            .admission
            .check_source(peer.ip());
        if d != Decision::Allow {
            let now = clock.now();
            self.count_verdict(listener, peer.ip(), d, now);
            if !d.admits() {
                self.log_denial(listener, peer, local_port, d, now);
                return false;
            }
        }
        let l = &mut self.listeners[listener as usize];
        if l.limits.max_datagram.is_some_and(|max| len > max as usize) {
            l.counters.drops[ListenerDrop::DatagramTooLarge as usize].add(1);
            return false;
        }
        l.counters.datagrams_in.add(1);
        l.counters.bytes_in.add(len as u64);
        if self.log.is_some()
            && self
                .udp_sources
                .hit(self.ipv6_prefix.key(peer.ip()), clock.now())
                == Some(1)
        {
            self.listeners[listener as usize]
                .counters
                .udp_new_sources
                .add(1);
            let mut r = self.record(Event::UdpSource, clock.now(), listener, peer);
            r.local_port = local_port;
            r.verdict = d;
            if let Some(log) = &self.log {
                log.try_log(r);
            }
        }
        true
    }

    /// The kernel sent a datagram of `n` bytes from a socket of `listener`.
    #[inline]
    pub fn datagram_sent(&mut self, listener: u16, n: usize) {
        if let Some(l) = self.listeners.get_mut(listener as usize) {
            l.counters.datagrams_out.add(1);
            l.counters.bytes_out.add(n as u64);
        }
    }

    /// The engine dropped a datagram of `listener` for `reason`.
    #[inline]
    pub fn dropped(&mut self, listener: u16, reason: ListenerDrop) {
        self.listeners[listener as usize].counters.drops[reason as usize].add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::DenialAlertConfig;
    use crate::log::{LogFormat, LogWriter};
    use crate::policy::{Allowlist, DenyReason};

    fn guard(limits: Limits, dry_run: bool, log: Option<LogSink>) -> Guard {
        let adm = AdmissionConfig {
            allow: Allowlist::new(vec![Allowlist::parse_cidr("127.0.0.1").unwrap()]),
            dry_run,
            max_conns: 0,
            max_conns_per_source: 0,
            conn_rate: None,
            ipv6_prefix: Default::default(),
        };
        Guard::new(
            0,
            GuardInit {
                listeners: vec![(adm, limits)],
                listener_open: vec![Arc::new(AtomicU32::new(0))],
                log,
                udp_source_window: Duration::from_secs(60),
                ipv6_prefix: Default::default(),
                shared: Arc::new(OpsShared {
                    listeners: vec![vec![Default::default()]],
                    draining: AtomicBool::new(false),
                }),
            },
        )
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_meta_stays_small() {
        // One per stream, idle or not: 152 B with the peer's address and
        // `Instant`s; a deadline entry was 24 B.
        assert_eq!(std::mem::size_of::<Meta>(), 80);
        assert_eq!(std::mem::size_of::<Reverse<(Nanos, u32, u32)>>(), 16);
    }

    #[test]
    fn timeouts_too_long_for_the_clock_are_no_timeouts() {
        let limits = Limits {
            first_bytes_timeout: Some(Duration::MAX),
            idle_timeout: Some(Duration::from_secs_f64(1e19)),
            half_closed_timeout: Some(Duration::MAX),
            ..Limits::default()
        };
        let mut g = guard(limits, false, None);
        let t0 = Instant::now();
        let (peer, local) = (addr("127.0.0.1:5000"), addr("127.0.0.1:9000"));
        let d = g.admit(0, peer, local, t0).unwrap();
        g.opened(0, 1, 0, peer, local, d, t0);
        g.half_closed(0, 1, t0);
        assert_eq!(g.next_deadline(), None);
        g.tls_handshaking(0, 1, Some(Duration::MAX), t0);
        let mut out = Vec::new();
        g.poll_expired(t0 + Duration::from_secs(86400 * 365), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn deadlines_first_bytes_idle_and_half_closed_on_a_synthetic_clock() {
        let limits = Limits {
            first_bytes_timeout: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(300)),
            half_closed_timeout: Some(Duration::from_secs(30)),
            ..Limits::default()
        };
        let mut g = guard(limits, false, None);
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let local = addr("127.0.0.1:9000");
        for idx in 0..3 {
            let peer = addr("127.0.0.1:5000");
            let d = g.admit(0, peer, local, t0).unwrap();
            g.opened(idx, 7, 0, peer, local, d, t0);
        }
        // 1 talks at 5 s, 2 talks at 5 s and FINs at 100 s.
        g.bytes_in(1, 10, &TurnClock::at(s(5)));
        g.bytes_in(2, 10, &TurnClock::at(s(5)));
        assert_eq!(g.next_deadline(), Some(s(10)));
        let mut out = Vec::new();
        g.poll_expired(s(9), &mut out);
        assert!(out.is_empty());
        g.poll_expired(s(10), &mut out);
        assert_eq!(
            out,
            [(0, 7)],
            "silent connection 0 at the first-bytes deadline"
        );
        // 1 and 2 were re-armed at their idle deadline, 305 s.
        assert_eq!(g.next_deadline(), Some(s(305)));
        g.half_closed(2, 7, s(100));
        assert_eq!(g.next_deadline(), Some(s(130)));
        out.clear();
        g.poll_expired(s(130), &mut out);
        assert_eq!(out, [(2, 7)]);
        out.clear();
        g.bytes_out(1, 10, &TurnClock::at(s(200)));
        g.poll_expired(s(305), &mut out);
        assert!(out.is_empty(), "1 sent at 200 s");
        g.poll_expired(s(500), &mut out);
        assert_eq!(out, [(1, 7)]);
        for (idx, _) in [(0, 7), (2, 7), (1, 7)] {
            g.closed(
                idx,
                7,
                addr("127.0.0.1:5000"),
                CloseReason::Error(110),
                s(500),
            );
        }
        let c = g.listeners[0].counters.snapshot();
        assert_eq!(c.timeouts, [1, 1, 1, 0]);
        assert_eq!(
            (c.conns_accepted, c.conns_closed, c.bytes_in, c.bytes_out),
            (3, 3, 20, 10)
        );
        assert_eq!(g.listeners[0].admission.listener_open(), 0);
        assert_eq!(g.next_deadline(), None, "nothing left to wake up for");
    }

    #[test]
    fn denials_are_counted_and_logged_and_dry_run_lets_through() {
        let w = LogWriter::spawn(
            1,
            64,
            vec!["l".into()],
            LogFormat::Json,
            Box::new(std::io::sink()),
        )
        .unwrap();
        let mut g = guard(Limits::default(), false, Some(w.sink(0)));
        let now = Instant::now();
        let local = addr("127.0.0.1:9000");
        assert_eq!(g.admit(0, addr("127.0.0.2:1"), local, now), None);
        assert!(!g.datagram(0, addr("127.0.0.2:1"), 9000, 5, &TurnClock::at(now)));
        assert!(g.datagram(0, addr("127.0.0.1:1"), 9000, 5, &TurnClock::at(now)));
        assert!(
            g.datagram(0, addr("127.0.0.1:2"), 9000, 5, &TurnClock::at(now)),
            "same source ip"
        );
        let c = g.listeners[0].counters.snapshot();
        assert_eq!(c.denied[DenyReason::NotAllowed as usize], 2);
        assert_eq!((c.datagrams_in, c.bytes_in, c.udp_new_sources), (2, 10, 1));
        let mut audit = guard(Limits::default(), true, None);
        assert_eq!(
            audit.admit(0, addr("127.0.0.2:1"), local, now),
            Some(Decision::WouldDeny(DenyReason::NotAllowed))
        );
        assert!(audit.datagram(0, addr("127.0.0.2:1"), 9000, 5, &TurnClock::at(now)));
        assert_eq!(audit.listeners[0].counters.would_deny[0].get(), 2);
        w.finish().unwrap();
    }

    #[test]
    fn datagrams_over_the_listener_max_are_dropped_and_counted_after_the_allowlist() {
        let limits = Limits {
            max_datagram: Some(100),
            ..Limits::default()
        };
        let mut g = guard(limits, false, None);
        let now = Instant::now();
        let trusted = addr("127.0.0.1:1");
        assert!(
            g.datagram(0, trusted, 9000, 100, &TurnClock::at(now)),
            "exactly the max"
        );
        assert!(!g.datagram(0, trusted, 9000, 101, &TurnClock::at(now)));
        assert!(
            !g.datagram(0, addr("127.0.0.2:1"), 9000, 101, &TurnClock::at(now)),
            "a denial first"
        );
        g.dropped(0, ListenerDrop::DatagramTruncated);
        let c = g.listeners[0].counters.snapshot();
        assert_eq!(c.drops, [1, 1]);
        assert_eq!(c.denied[DenyReason::NotAllowed as usize], 1);
        assert_eq!((c.datagrams_in, c.bytes_in), (1, 100));
    }

    /// Collects what the log writer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_source_denied_too_often_raises_an_alert_that_clears_on_a_synthetic_clock() {
        let out = Captured::default();
        let w = LogWriter::spawn(
            1,
            64,
            vec!["l".into()],
            LogFormat::Json,
            Box::new(out.clone()),
        )
        .unwrap();
        let limits = Limits {
            first_bytes_timeout: None,
            idle_timeout: None,
            half_closed_timeout: None,
            source_denial_alert: Some(DenialAlertConfig {
                limit: 2,
                window: Duration::from_secs(10),
            }),
            ..Limits::default()
        };
        let mut g = guard(limits, false, Some(w.sink(0)));
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let local = addr("127.0.0.1:9000");
        let untrusted = addr("127.0.0.2:1");
        // Two denials (a connection and a datagram) are within the limit.
        assert_eq!(g.admit(0, untrusted, local, s(0)), None);
        assert!(!g.datagram(0, untrusted, 9000, 5, &TurnClock::at(s(1))));
        assert_eq!(g.listeners[0].counters.sources_alerting.get(), 0);
        assert_eq!(g.next_deadline(), None);
        // The third fires; the trusted source is not counted.
        assert!(g.datagram(0, addr("127.0.0.1:1"), 9000, 5, &TurnClock::at(s(2))));
        assert!(!g.datagram(0, untrusted, 9000, 5, &TurnClock::at(s(2))));
        assert_eq!(g.listeners[0].counters.sources_alerting.get(), 1);
        assert_eq!(g.next_deadline(), Some(s(10)), "the window's end");
        // That window was over the limit; the next one is quiet and clears it.
        let mut expired = Vec::new();
        g.poll_expired(s(10), &mut expired);
        assert_eq!(g.listeners[0].counters.sources_alerting.get(), 1);
        assert_eq!(g.next_deadline(), Some(s(20)));
        g.poll_expired(s(20), &mut expired);
        assert!(expired.is_empty());
        assert_eq!(g.listeners[0].counters.sources_alerting.get(), 0);
        assert_eq!(g.next_deadline(), None);
        assert_eq!(
            g.shared.listeners[0][0].snapshot().sources_alerting,
            0,
            "published"
        );
        w.finish().unwrap();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let alerts: Vec<String> = text
            .lines()
            .filter(|l| l.contains(r#""event":"alert""#))
            .map(|l| l[l.find(r#""listener""#).unwrap()..].to_owned())
            .collect();
        assert_eq!(
            alerts,
            [
                r#""listener":"l","shard":0,"metric":"source_denials","firing":true,"source":"127.0.0.2","denials":3,"window_s":10.000000}"#,
                r#""listener":"l","shard":0,"metric":"source_denials","firing":false,"source":"127.0.0.2","denials":0,"window_s":10.000000}"#,
            ]
        );
    }
}
