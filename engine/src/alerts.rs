//! Deviation alerts and per-source gates, sans-IO.
//!
//! [`ListenerAlerts`] keeps an exponentially weighted moving average (EWMA)
//! of four rates of one listener (new connections, datagrams, denials,
//! bytes). It is fed the listener's cumulative counters at a regular
//! interval ([`ListenerAlerts::handle_sample`]); when a rate stays above its
//! baseline × `factor` for `sustain`, the metric fires, and it clears when
//! the rate comes back under. While a metric is above its threshold its
//! baseline is frozen, so a flood does not become the new normal.
//!
//! [`SourceWindows`] counts events per source address in fixed windows. It
//! backs two things: [`SourceWindows::over`] (a source denied more than N
//! times in a window is worth an alert) and [`LogGate`] (at most N log lines
//! per source per window, so a flood cannot flood the log).
//!
//! Time is always an argument; nothing here reads a clock.

use std::collections::HashMap;
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
}

impl Metric {
    /// Number of metrics.
    pub const COUNT: usize = 4;
    /// Every metric, in discriminant order.
    pub const ALL: [Metric; Metric::COUNT] = [
        Metric::ConnRate,
        Metric::DatagramRate,
        Metric::DenialRate,
        Metric::BytesRate,
    ];

    /// The snake-case name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::ConnRate => "conn_rate",
            Metric::DatagramRate => "datagram_rate",
            Metric::DenialRate => "denial_rate",
            Metric::BytesRate => "bytes_rate",
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
}

impl RateTotals {
    fn values(&self) -> [u64; Metric::COUNT] {
        [self.conns, self.datagrams, self.denials, self.bytes]
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

/// Counts events per source address in fixed windows.
///
/// At most `max_sources` sources are tracked; when full, sources whose window
/// has ended are forgotten, and if none has, the new source is not tracked
/// (and [`SourceWindows::hit`] answers `None`).
#[derive(Debug, Clone)]
pub struct SourceWindows {
    window: Duration,
    max_sources: usize,
    counts: HashMap<IpAddr, (Instant, u64)>,
}

impl SourceWindows {
    /// Windows of `window`, at most `max_sources` sources.
    pub fn new(window: Duration, max_sources: usize) -> SourceWindows {
        SourceWindows {
            window,
            max_sources: max_sources.max(1),
            counts: HashMap::new(),
        }
    }

    /// Counts one event of `ip` at `now`; returns its count in the current
    /// window (1 for the first), or `None` if the source could not be tracked.
    pub fn hit(&mut self, ip: IpAddr, now: Instant) -> Option<u64> {
        if !self.counts.contains_key(&ip) && self.counts.len() >= self.max_sources {
            let window = self.window;
            self.counts
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
            if self.counts.len() >= self.max_sources {
                return None;
            }
        }
        let e = self.counts.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        e.1 += 1;
        Some(e.1)
    }

    /// Counts one event and says whether this one took the source past
    /// `limit` in the current window (true once per window).
    pub fn over(&mut self, ip: IpAddr, now: Instant, limit: u64) -> bool {
        self.hit(ip, now) == Some(limit + 1)
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
}
