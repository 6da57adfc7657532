//! Deviation alerts and per-source gates, sans-IO.
//!
//! [`ListenerAlerts`] keeps an exponentially weighted moving average (EWMA)
//! of five rates of one listener (new connections, datagrams, denials,
//! bytes, failed TLS handshakes). It is fed the listener's cumulative counters at a regular
//! interval ([`ListenerAlerts::handle_sample`]); when a rate stays above its
//! baseline × `factor` for `sustain`, the metric fires, and it clears when
//! the rate comes back under. While a metric is above its threshold its
//! baseline is frozen, so a flood does not become the new normal.
//!
//! [`SourceWindows`] counts events per source address in fixed windows. It
//! backs [`LogGate`] (at most N log lines per source per window, so a flood
//! cannot flood the log).
//!
//! [`DenialAlarm`] watches the denials of one listener per source: a source
//! denied more than `limit` times in a window fires an alert, which clears
//! once a whole window passes with the source at or under the limit.
//!
//! Time is always an argument; nothing here reads a clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A rate watched per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// New connections per second.
    ConnRate = 0,
    /// Datagrams per second.
    DatagramRate = 1,
    /// Denials (connections and datagrams) per second.
    DenialRate = 2,
    /// Bytes in and out per second.
    BytesRate = 3,
    /// Failed TLS handshakes per second.
    HandshakeFailureRate = 4,
}

impl Metric {
    /// Number of metrics.
    pub const COUNT: usize = 5;
    /// Every metric, in discriminant order.
    pub const ALL: [Metric; Metric::COUNT] = [
        Metric::ConnRate,
        Metric::DatagramRate,
        Metric::DenialRate,
        Metric::BytesRate,
        Metric::HandshakeFailureRate,
    ];

    /// The snake-case name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::ConnRate => "conn_rate",
            Metric::DatagramRate => "datagram_rate",
            Metric::DenialRate => "denial_rate",
            Metric::BytesRate => "bytes_rate",
            Metric::HandshakeFailureRate => "tls_handshake_failure_rate",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a rate counts as deviating.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertConfig {
    /// A rate above baseline × `factor` deviates.
    pub factor: f64,
    /// ... once it has done so for this long.
    pub sustain: Duration,
    /// The baseline forgets half of its past in this time.
    pub half_life: Duration,
    /// Rates at or below this (per second) never deviate, so that a quiet
    /// listener does not alert on its first few connections.
    pub min_rate: f64,
    /// Samples taken before any alert may fire (the baseline settles).
    pub warmup: u32,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            factor: 5.0,
            sustain: Duration::from_secs(30),
            half_life: Duration::from_secs(600),
            min_rate: 10.0,
            warmup: 10,
        }
    }
}

/// A listener's counters since start, as fed to [`ListenerAlerts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateTotals {
    /// Connections accepted or denied.
    pub conns: u64,
    /// Datagrams received.
    pub datagrams: u64,
    /// Connections and datagrams denied.
    pub denials: u64,
    /// Bytes received and sent.
    pub bytes: u64,
    /// TLS handshakes that failed.
    pub handshake_failures: u64,
}

impl RateTotals {
    fn values(&self) -> [u64; Metric::COUNT] {
        [
            self.conns,
            self.datagrams,
            self.denials,
            self.bytes,
            self.handshake_failures,
        ]
    }
}

/// A change of an alert's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertEvent {
    /// Which rate.
    pub metric: Metric,
    /// `true`: fired; `false`: cleared.
    pub firing: bool,
    /// The rate that caused the change, per second.
    pub rate: f64,
    /// The baseline it was compared with, per second.
    pub baseline: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Watch {
    baseline: Option<f64>,
    above_since: Option<Instant>,
    firing: bool,
}

/// Baselines and alert states of one listener's rates.
///
/// Calling order: [`ListenerAlerts::handle_sample`] at a regular interval
/// with the listener's totals; the first call only records a starting point.
#[derive(Debug, Clone)]
pub struct ListenerAlerts {
    config: AlertConfig,
    last: Option<(Instant, RateTotals)>,
    samples: u32,
    watches: [Watch; Metric::COUNT],
}

impl ListenerAlerts {
    /// No baselines yet.
    pub fn new(config: AlertConfig) -> ListenerAlerts {
        ListenerAlerts {
            config,
            last: None,
            samples: 0,
            watches: [Watch::default(); Metric::COUNT],
        }
    }

    /// Takes the totals at `now`, updates the baselines and pushes every
    /// alert that fired or cleared into `events`.
    pub fn handle_sample(
        &mut self,
        now: Instant,
        totals: RateTotals,
        events: &mut Vec<AlertEvent>,
    ) {
        let Some((then, before)) = self.last.replace((now, totals)) else {
            return;
        };
        let dt = now.saturating_duration_since(then).as_secs_f64();
        if dt <= 0.0 {
            self.last = Some((then, before));
            return;
        }
        self.samples = self.samples.saturating_add(1);
        let weight =
            1.0 - (-dt * std::f64::consts::LN_2 / self.config.half_life.as_secs_f64()).exp();
        let (old, new) = (before.values(), totals.values());
        for (i, metric) in Metric::ALL.into_iter().enumerate() {
            let rate = new[i].saturating_sub(old[i]) as f64 / dt;
            let w = &mut self.watches[i];
            let baseline = *w.baseline.get_or_insert(rate);
            let above = rate > self.config.min_rate && rate > baseline * self.config.factor;
            if above && self.samples > self.config.warmup {
                let since = *w.above_since.get_or_insert(then);
                if !w.firing && now.saturating_duration_since(since) >= self.config.sustain {
                    w.firing = true;
                    events.push(AlertEvent {
                        metric,
                        firing: true,
                        rate,
                        baseline,
                    });
                }
                continue;
            }
            w.above_since = None;
            if w.firing && !above {
                w.firing = false;
                events.push(AlertEvent {
                    metric,
                    firing: false,
                    rate,
                    baseline,
                });
            }
            w.baseline = Some(baseline + weight * (rate - baseline));
        }
    }

    /// Whether `metric`'s alert is firing.
    pub fn firing(&self, metric: Metric) -> bool {
        self.watches[metric as usize].firing
    }

    /// `metric`'s baseline per second, once there is one.
    pub fn baseline(&self, metric: Metric) -> Option<f64> {
        self.watches[metric as usize].baseline
    }
}

/// Window starts in the order they began, so that the sources whose
/// window has ended are found at the front in O(1), however many sources
/// are tracked. Each tracked source's current window has one entry;
/// entries of windows that moved on are skipped as they come up.
#[derive(Debug, Clone, Default)]
struct WindowStarts {
    queue: VecDeque<(Instant, IpAddr)>,
    /// Entries looked at (for the tests' cost check).
    looked: u64,
}

impl WindowStarts {
    fn push(&mut self, start: Instant, ip: IpAddr) {
        self.queue.push_back((start, ip));
    }

    /// Pops the entries of windows that ended by `now`, oldest first,
    /// calling `forget` with each (it removes the source if that entry
    /// is still its current window). Amortized O(1): an entry is pushed
    /// once and popped once.
    fn expire(&mut self, now: Instant, window: Duration, mut forget: impl FnMut(Instant, IpAddr)) {
        while let Some(&(start, ip)) = self.queue.front() {
            self.looked += 1;
            if now.saturating_duration_since(start) < window {
                break;
            }
            self.queue.pop_front();
            forget(start, ip);
        }
    }
}

/// Counts events per source address in fixed windows.
///
/// At most `max_sources` sources are tracked. Sources whose window has
/// ended are forgotten as time moves on (in O(1) per event, amortized); a
/// new source finding the table full of sources in their windows is not
/// tracked (and [`SourceWindows::hit`] answers `None`).
#[derive(Debug, Clone)]
pub struct SourceWindows {
    window: Duration,
    max_sources: usize,
    counts: HashMap<IpAddr, (Instant, u64)>,
    starts: WindowStarts,
}

impl SourceWindows {
    /// Windows of `window`, at most `max_sources` sources.
    pub fn new(window: Duration, max_sources: usize) -> SourceWindows {
        SourceWindows {
            window,
            max_sources: max_sources.max(1),
            counts: HashMap::new(),
            starts: WindowStarts::default(),
        }
    }

    /// Counts one event of `ip` at `now`; returns its count in the current
    /// window (1 for the first), or `None` if the source could not be tracked.
    pub fn hit(&mut self, ip: IpAddr, now: Instant) -> Option<u64> {
        let counts = &mut self.counts;
        self.starts.expire(now, self.window, |start, ip| {
            if counts.get(&ip).is_some_and(|e| e.0 == start) {
                counts.remove(&ip);
            }
        });
        if !self.counts.contains_key(&ip) && self.counts.len() >= self.max_sources {
            return None;
        }
        let e = self.counts.entry(ip).or_insert((now, 0));
        if e.1 == 0 {
            self.starts.push(now, ip);
        }
        e.1 += 1;
        Some(e.1)
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.counts.len()
    }

    /// Counts one event and says whether this one took the source past
    /// `limit` in the current window (true once per window).
    pub fn over(&mut self, ip: IpAddr, now: Instant, limit: u64) -> bool {
        self.hit(ip, now) == Some(limit + 1)
    }
}

/// When a source's denials on one listener raise an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenialAlertConfig {
    /// A source denied more than this many times in one window fires.
    pub limit: u64,
    /// The window length.
    pub window: Duration,
}

/// Default [`DenialAlertConfig::limit`].
pub const DEFAULT_DENIAL_ALERT_LIMIT: u64 = 100;
/// Default [`DenialAlertConfig::window`].
pub const DEFAULT_DENIAL_ALERT_WINDOW: Duration = Duration::from_secs(60);

impl Default for DenialAlertConfig {
    fn default() -> Self {
        DenialAlertConfig {
            limit: DEFAULT_DENIAL_ALERT_LIMIT,
            window: DEFAULT_DENIAL_ALERT_WINDOW,
        }
    }
}

/// A source's denial alert fired or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceAlert {
    /// The source address.
    pub source: IpAddr,
    /// `true`: fired; `false`: cleared.
    pub firing: bool,
    /// Denials in the current window (fired), or in the window whose end
    /// cleared the alert (cleared).
    pub denials: u64,
}

#[derive(Debug, Clone, Copy)]
struct SourceState {
    start: Instant,
    count: u64,
    firing: bool,
}

/// Per-source denial counts of one listener, with an alert per source.
///
/// Each source has fixed windows of [`DenialAlertConfig::window`], the first
/// starting at its first denial. The alert fires on the denial that takes
/// the source past `limit` in a window, and clears at the end of the first
/// later window in which the source was denied `limit` times or fewer: a
/// single burst clears two windows after it started, a sustained flood keeps
/// it firing.
///
/// Calling order: [`DenialAlarm::handle_denial`] for each denial;
/// [`DenialAlarm::poll_cleared`] once [`DenialAlarm::next_due`] has passed.
/// At most `max_sources` sources are tracked; when full, sources neither
/// firing nor within a window are forgotten, and if none is, a new source is
/// not counted.
#[derive(Debug, Clone)]
pub struct DenialAlarm {
    config: DenialAlertConfig,
    max_sources: usize,
    sources: HashMap<IpAddr, SourceState>,
    /// Window starts of sources not firing, oldest first.
    starts: WindowStarts,
    /// Window ends of firing sources (entries for windows that moved on are skipped).
    due: BinaryHeap<Reverse<(Instant, IpAddr)>>,
    firing: usize,
}

impl DenialAlarm {
    /// Nothing counted yet; at most `max_sources` sources tracked.
    pub fn new(config: DenialAlertConfig, max_sources: usize) -> DenialAlarm {
        DenialAlarm {
            config,
            max_sources: max_sources.max(1),
            sources: HashMap::new(),
            starts: WindowStarts::default(),
            due: BinaryHeap::new(),
            firing: 0,
        }
    }

    /// Counts one denial of `ip` at `now` and pushes the alerts that fired or
    /// cleared into `events`.
    pub fn handle_denial(&mut self, ip: IpAddr, now: Instant, events: &mut Vec<SourceAlert>) {
        let window = self.config.window;
        // A source out of its window is forgotten unless it fires (a firing
        // source leaves through `roll`, when its alert clears).
        let sources = &mut self.sources;
        self.starts.expire(now, window, |start, ip| {
            if sources
                .get(&ip)
                .is_some_and(|s| !s.firing && s.start == start)
            {
                sources.remove(&ip);
            }
        });
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.max_sources {
            return;
        }
        self.roll(ip, now, events);
        let s = self.sources.entry(ip).or_insert(SourceState {
            start: now,
            count: 0,
            firing: false,
        });
        if s.count == 0 {
            self.starts.push(now, ip);
        }
        s.count += 1;
        if !s.firing && s.count > self.config.limit {
            s.firing = true;
            self.firing += 1;
            self.due.push(Reverse((s.start + window, ip)));
            events.push(SourceAlert {
                source: ip,
                firing: true,
                denials: s.count,
            });
        }
        self.prune();
    }

    /// Whether `at` is the end of `ip`'s current window while it fires.
    fn is_current(&self, at: Instant, ip: IpAddr) -> bool {
        self.sources
            .get(&ip)
            .is_some_and(|s| s.firing && s.start + self.config.window == at)
    }

    /// Drops stale entries from the top of `due`, so that
    /// [`DenialAlarm::next_due`] is exact.
    fn prune(&mut self) {
        while let Some(&Reverse((at, ip))) = self.due.peek() {
            if self.is_current(at, ip) {
                break;
            }
            self.due.pop();
        }
    }

    /// Moves a firing source's windows up to `now`: a window over the limit
    /// starts the next one; one at or under it clears the alert.
    fn roll(&mut self, ip: IpAddr, now: Instant, events: &mut Vec<SourceAlert>) {
        let window = self.config.window;
        let Some(s) = self.sources.get_mut(&ip).filter(|s| s.firing) else {
            return;
        };
        let mut moved = false;
        while now.saturating_duration_since(s.start) >= window {
            if s.count > self.config.limit {
                s.start += window;
                s.count = 0;
                moved = true;
                continue;
            }
            events.push(SourceAlert {
                source: ip,
                firing: false,
                denials: s.count,
            });
            self.sources.remove(&ip);
            self.firing -= 1;
            return;
        }
        if moved {
            self.due.push(Reverse((s.start + window, ip)));
        }
    }

    /// When the next firing source's window ends, if any fires.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    /// Rolls every firing source whose window ended by `now`, pushing the
    /// alerts that cleared into `events`.
    pub fn poll_cleared(&mut self, now: Instant, events: &mut Vec<SourceAlert>) {
        while let Some(&Reverse((at, ip))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            if self.is_current(at, ip) {
                self.roll(ip, now, events);
            }
        }
        self.prune();
    }

    /// Sources whose alert is firing.
    pub fn firing(&self) -> usize {
        self.firing
    }

    /// The settings.
    pub fn config(&self) -> DenialAlertConfig {
        self.config
    }
}

/// What [`LogGate::check`] says about one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Write it, noting how many lines were held back before it.
    Log {
        /// Lines suppressed since the last one written (all sources).
        suppressed: u64,
    },
    /// Hold it back (counted).
    Suppress,
}

/// Lets through at most `per_window` log lines per source per window.
#[derive(Debug, Clone)]
pub struct LogGate {
    per_window: u64,
    windows: SourceWindows,
    suppressed: u64,
}

impl LogGate {
    /// `per_window` lines per source per `window`, `max_sources` tracked.
    pub fn new(per_window: u64, window: Duration, max_sources: usize) -> LogGate {
        LogGate {
            per_window,
            windows: SourceWindows::new(window, max_sources),
            suppressed: 0,
        }
    }

    /// Whether a line about `ip` at `now` is written.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Gate {
        match self.windows.hit(ip, now) {
            Some(n) if n <= self.per_window => Gate::Log {
                suppressed: std::mem::take(&mut self.suppressed),
            },
            _ => {
                self.suppressed += 1;
                Gate::Suppress
            }
        }
    }

    /// Lines held back and not yet reported.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AlertConfig {
        AlertConfig {
            factor: 3.0,
            sustain: Duration::from_secs(5),
            half_life: Duration::from_secs(60),
            min_rate: 10.0,
            warmup: 3,
        }
    }

    /// Feeds one sample a second with `conns_per_sec[i]` new connections and
    /// ten times as many bytes; returns the events with their second.
    fn run(
        alerts: &mut ListenerAlerts,
        t0: Instant,
        conns_per_sec: &[u64],
    ) -> Vec<(u64, AlertEvent)> {
        let mut totals = RateTotals::default();
        let mut out = Vec::new();
        alerts.handle_sample(t0, totals, &mut Vec::new());
        for (i, &r) in conns_per_sec.iter().enumerate() {
            totals.conns += r;
            totals.bytes += 10 * r;
            let mut ev = Vec::new();
            let second = i as u64 + 1;
            alerts.handle_sample(t0 + Duration::from_secs(second), totals, &mut ev);
            out.extend(ev.into_iter().map(|e| (second, e)));
        }
        out
    }

    #[test]
    fn fires_after_sustain_on_a_step_and_clears_when_it_returns() {
        let mut a = ListenerAlerts::new(config());
        let t0 = Instant::now();
        // 20 s at 100/s, 10 s at 1000/s, 5 s back at 100/s.
        let mut rates = vec![100; 20];
        rates.extend([1000; 10]);
        rates.extend([100; 5]);
        let events = run(&mut a, t0, &rates);
        let summary: Vec<(u64, Metric, bool, u64, u64)> = events
            .iter()
            .map(|(s, e)| {
                (
                    *s,
                    e.metric,
                    e.firing,
                    e.rate as u64,
                    e.baseline.round() as u64,
                )
            })
            .collect();
        // The step starts in second 21; above since t=20 s, so it fires at 25 s
        // and clears at 31 s. The baseline stayed 100 while it was above.
        assert_eq!(
            summary,
            vec![
                (25, Metric::ConnRate, true, 1000, 100),
                (25, Metric::BytesRate, true, 10000, 1000),
                (31, Metric::ConnRate, false, 100, 100),
                (31, Metric::BytesRate, false, 1000, 1000),
            ]
        );
        assert!(!a.firing(Metric::ConnRate));
        assert_eq!(a.baseline(Metric::DatagramRate), Some(0.0));
    }

    #[test]
    fn a_surge_of_failed_tls_handshakes_fires_its_own_alert() {
        let mut a = ListenerAlerts::new(config());
        let t0 = Instant::now();
        let mut totals = RateTotals::default();
        a.handle_sample(t0, totals, &mut Vec::new());
        let mut fired = Vec::new();
        // 20 s of 20 failures a second (clients with an old CA, say), then
        // 10 s of 500 a second (a scan, or an expired certificate), with
        // connections steady at 1000 a second throughout.
        for second in 1..=30u64 {
            totals.conns += 1000;
            totals.handshake_failures += if second <= 20 { 20 } else { 500 };
            let mut ev = Vec::new();
            a.handle_sample(t0 + Duration::from_secs(second), totals, &mut ev);
            fired.extend(
                ev.iter()
                    .map(|e| (second, e.metric, e.firing, e.rate as u64)),
            );
        }
        assert_eq!(
            fired,
            vec![(25, Metric::HandshakeFailureRate, true, 500)],
            "only the handshake failure rate deviates"
        );
        assert_eq!(
            Metric::HandshakeFailureRate.as_str(),
            "tls_handshake_failure_rate"
        );
    }

    #[test]
    fn a_short_spike_a_quiet_listener_and_warmup_do_not_fire() {
        let t0 = Instant::now();
        // 4 s above is shorter than the 5 s sustain.
        let mut rates = vec![100; 10];
        rates.extend([1000; 4]);
        rates.extend([100; 10]);
        assert_eq!(run(&mut ListenerAlerts::new(config()), t0, &rates), vec![]);
        // 0 → 1 conn/s and 10 B/s is 'infinitely' above the baseline but
        // not above min_rate.
        let mut rates = vec![0; 10];
        rates.extend([1; 20]);
        assert_eq!(run(&mut ListenerAlerts::new(config()), t0, &rates), vec![]);
        // Right from the start: the 3 warm-up samples are never alerted on
        // (and feed the baseline); the step counts as above from the end of
        // second 3 and fires 5 s later.
        let rates = [1, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000];
        let events = run(&mut ListenerAlerts::new(config()), t0, &rates);
        let fired: Vec<(u64, Metric)> = events
            .iter()
            .filter(|(_, e)| e.firing)
            .map(|(s, e)| (*s, e.metric))
            .collect();
        assert_eq!(fired, vec![(8, Metric::ConnRate), (8, Metric::BytesRate)]);
    }

    #[test]
    fn a_source_denied_over_the_limit_fires_and_clears_after_a_quiet_window() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let cfg = DenialAlertConfig {
            limit: 3,
            window: Duration::from_secs(10),
        };
        let mut alarm = DenialAlarm::new(cfg, 16);
        let mut ev = Vec::new();
        // Three denials in the first window are not over the limit.
        for ms in [0, 1000, 2000] {
            alarm.handle_denial(a, s(ms), &mut ev);
        }
        assert_eq!((ev.len(), alarm.firing(), alarm.next_due()), (0, 0, None));
        // The fourth fires, once; a fifth in the same window does not again.
        alarm.handle_denial(a, s(3000), &mut ev);
        alarm.handle_denial(a, s(4000), &mut ev);
        alarm.handle_denial(b, s(4000), &mut ev);
        assert_eq!(
            ev,
            [SourceAlert {
                source: a,
                firing: true,
                denials: 4
            }]
        );
        assert_eq!((alarm.firing(), alarm.next_due()), (1, Some(s(10_000))));
        ev.clear();
        // The window that fired was over the limit: the next one starts.
        alarm.poll_cleared(s(9_999), &mut ev);
        alarm.poll_cleared(s(10_000), &mut ev);
        assert_eq!((ev.len(), alarm.next_due()), (0, Some(s(20_000))));
        // Two denials in that window: at its end the alert clears.
        alarm.handle_denial(a, s(12_000), &mut ev);
        alarm.handle_denial(a, s(13_000), &mut ev);
        alarm.poll_cleared(s(20_000), &mut ev);
        assert_eq!(
            ev,
            [SourceAlert {
                source: a,
                firing: false,
                denials: 2
            }]
        );
        assert_eq!((alarm.firing(), alarm.next_due()), (0, None));
        // Afterwards the source starts from zero.
        ev.clear();
        for ms in [21_000, 22_000, 23_000] {
            alarm.handle_denial(a, s(ms), &mut ev);
        }
        assert!(ev.is_empty());
    }

    #[test]
    fn a_sustained_flood_keeps_firing_and_a_late_denial_clears_first() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let cfg = DenialAlertConfig {
            limit: 0,
            window: Duration::from_secs(10),
        };
        let mut alarm = DenialAlarm::new(cfg, 16);
        let mut ev = Vec::new();
        // Limit 0: the first denial fires. One denial per 5 s keeps it firing.
        for secs in (0..40).step_by(5) {
            alarm.handle_denial(a, s(secs), &mut ev);
            alarm.poll_cleared(s(secs), &mut ev);
        }
        assert_eq!(ev.len(), 1);
        assert_eq!((alarm.firing(), alarm.next_due()), (1, Some(s(40))));
        // No poll for a while: the next denial, 20 s later, finds the window
        // [40, 50) quiet, clears, and (limit 0) fires again.
        ev.clear();
        alarm.handle_denial(a, s(55), &mut ev);
        let got: Vec<(bool, u64)> = ev.iter().map(|e| (e.firing, e.denials)).collect();
        assert_eq!(got, [(false, 0), (true, 1)]);
        assert_eq!((alarm.firing(), alarm.next_due()), (1, Some(s(65))));
        // A full table forgets quiet sources, never a firing one.
        let mut small = DenialAlarm::new(DenialAlertConfig { limit: 0, ..cfg }, 1);
        small.handle_denial(a, s(0), &mut ev);
        ev.clear();
        small.handle_denial("127.0.0.9".parse().unwrap(), s(100), &mut ev);
        assert!(
            ev.is_empty(),
            "not tracked while the firing source holds the slot"
        );
        assert_eq!(small.firing(), 1);
    }

    #[test]
    fn source_windows_and_the_log_gate() {
        let t0 = Instant::now();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let mut w = SourceWindows::new(Duration::from_secs(10), 2);
        let over: Vec<bool> = (0..5).map(|_| w.over(a, t0, 3)).collect();
        assert_eq!(over, [false, false, false, true, false]);
        assert_eq!(
            w.hit(a, t0 + Duration::from_secs(10)),
            Some(1),
            "new window"
        );
        assert_eq!(w.hit(b, t0), Some(1));
        assert_eq!(w.hit("127.0.0.4".parse().unwrap(), t0), None, "full");

        let mut g = LogGate::new(2, Duration::from_secs(60), 16);
        let got: Vec<Gate> = (0..5).map(|_| g.check(a, t0)).collect();
        assert_eq!(
            got,
            [
                Gate::Log { suppressed: 0 },
                Gate::Log { suppressed: 0 },
                Gate::Suppress,
                Gate::Suppress,
                Gate::Suppress
            ]
        );
        assert_eq!(g.suppressed(), 3);
        assert_eq!(g.check(b, t0), Gate::Log { suppressed: 3 });
        assert_eq!(
            g.check(a, t0 + Duration::from_secs(60)),
            Gate::Log { suppressed: 0 }
        );
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0000 + i))
    }

    /// A table full of sources in their windows turns a new source away in
    /// O(1), not by scanning the table (a spoofed flood of new sources
    /// used to cost a full scan per datagram); once the windows end, the
    /// old sources are forgotten oldest first and new ones are tracked.
    #[test]
    fn a_full_table_costs_constant_time_per_new_source() {
        const MAX: u32 = 4096;
        const FLOOD: u32 = 100_000;
        let window = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut w = SourceWindows::new(window, MAX as usize);
        for i in 0..MAX {
            assert_eq!(w.hit(ip(i), t0), Some(1));
        }
        let before = w.starts.looked;
        for i in 0..FLOOD {
            assert_eq!(w.hit(ip(MAX + i), t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(w.starts.looked - before, u64::from(FLOOD), "one look each");
        assert_eq!(w.hit(ip(0), t0 + Duration::from_secs(1)), Some(2));
        // The windows end: every old source is forgotten once, in one sweep.
        let before = w.starts.looked;
        assert_eq!(w.hit(ip(MAX), t0 + window), Some(1));
        assert_eq!(w.starts.looked - before, u64::from(MAX));
        assert_eq!(w.tracked(), 1);

        let config = DenialAlertConfig { limit: 2, window };
        let mut alarm = DenialAlarm::new(config, MAX as usize);
        let mut events = Vec::new();
        for _ in 0..3 {
            alarm.handle_denial(ip(0), t0, &mut events);
        }
        assert_eq!(alarm.firing(), 1);
        for i in 1..MAX {
            alarm.handle_denial(ip(i), t0, &mut events);
        }
        let before = alarm.starts.looked;
        for i in 0..FLOOD {
            alarm.handle_denial(ip(MAX + i), t0 + Duration::from_secs(1), &mut events);
        }
        assert_eq!(alarm.starts.looked - before, u64::from(FLOOD));
        assert_eq!(alarm.sources.len(), MAX as usize, "new sources not counted");
        // After the window the quiet sources go; the firing one stays
        // until its alert clears (it was denied 3 times, over the limit,
        // so its next window decides).
        alarm.handle_denial(ip(MAX), t0 + window, &mut events);
        assert_eq!(alarm.sources.len(), 2);
        assert_eq!(alarm.firing(), 1);
        alarm.poll_cleared(t0 + 2 * window, &mut events);
        assert_eq!(alarm.firing(), 0);
        assert_eq!(
            events.last(),
            Some(&SourceAlert {
                source: ip(0),
                firing: false,
                denials: 0
            })
        );
    }
}
