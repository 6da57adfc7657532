//! Latency recording, open-loop pacing and datagram sequence tracking.
//!
//! Everything here is pure: times are `u64` nanoseconds handed in by the
//! caller (the load generator reads a monotonic clock; tests use a synthetic
//! one), so coordinated-omission correction and loss accounting are tested
//! without sockets or sleeps.
//!
//! Coordinated omission (as in wrk2): an open-loop client means to send
//! request *k* at `start + k * interval`. When the server stalls, a client
//! that waits for replies before sending sends late; measured from the actual
//! send, those requests look fast and the stall disappears from the
//! percentiles. [`Recorder`] keeps both views: *corrected* latency is measured
//! from the intended send time, *uncorrected* from the actual one.

use hdrhistogram::Histogram;

/// Highest latency recorded (60 s); longer ones are clamped to it.
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("static bounds are valid")
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
    /// Number of samples.
    pub count: u64,
}

impl Percentiles {
    /// The percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            count: h.len(),
        }
    }
}

/// The latency spectrum of `h`: `[nines, latency in µs]` points, where a
/// quantile `q` is plotted at `nines = -log10(1 - q)` (90% at 1, 99.9% at 3),
/// every 0.1 up to what the sample count supports (at most 5 nines), then
/// the maximum.
pub fn spectrum(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    let top = (h.len() as f64).log10().clamp(0.0, 5.0);
    let mut out: Vec<[f64; 2]> = (0..)
        .map(|i| i as f64 / 10.0)
        .take_while(|x| *x <= top)
        .map(|x| {
            let q = 1.0 - 10f64.powf(-x);
            [x, h.value_at_quantile(q) as f64 / 1e3]
        })
        .collect();
    out.push([top.max(0.1), h.max() as f64 / 1e3]);
    out
}

/// Round-trip latencies of the messages completed inside the measurement window.
///
/// Call [`Recorder::record`] once per reply. A message counts when it was
/// meant to be sent at or after the window start and its reply arrived at or
/// before the window end; the others (warm-up, drain) are ignored.
#[derive(Debug, Clone)]
pub struct Recorder {
    corrected: Histogram<u64>,
    uncorrected: Histogram<u64>,
    start_ns: u64,
    end_ns: u64,
}

impl Recorder {
    /// A recorder for the window `[start_ns, end_ns]`.
    pub fn new(start_ns: u64, end_ns: u64) -> Recorder {
        Recorder {
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            start_ns,
            end_ns,
        }
    }

    /// Records one reply received at `done_ns` to a request meant to be sent
    /// at `intended_ns` and actually sent at `sent_ns`. Returns whether it was
    /// inside the window (and so counted).
    #[inline]
    pub fn record(&mut self, intended_ns: u64, sent_ns: u64, done_ns: u64) -> bool {
        if intended_ns < self.start_ns || done_ns > self.end_ns {
            return false;
        }
        let c = done_ns.saturating_sub(intended_ns).clamp(1, MAX_LATENCY_NS);
        let u = done_ns.saturating_sub(sent_ns).clamp(1, MAX_LATENCY_NS);
        self.corrected.record(c).expect("clamped into bounds");
        self.uncorrected.record(u).expect("clamped into bounds");
        true
    }

    /// Whether a message sent at `intended_ns` and completed at `done_ns`
    /// falls in the window (for messages that carry no latency, like ingest).
    pub fn in_window(&self, intended_ns: u64, done_ns: u64) -> bool {
        intended_ns >= self.start_ns && done_ns <= self.end_ns
    }

    /// Adds another recorder's samples (one per client thread) into this one.
    pub fn merge(&mut self, other: &Recorder) {
        self.corrected.add(&other.corrected).expect("same bounds");
        self.uncorrected
            .add(&other.uncorrected)
            .expect("same bounds");
    }

    /// Latency from the intended send time (coordinated-omission corrected).
    pub fn corrected(&self) -> Percentiles {
        Percentiles::of(&self.corrected)
    }

    /// Latency from the actual send time.
    pub fn uncorrected(&self) -> Percentiles {
        Percentiles::of(&self.uncorrected)
    }

    /// The corrected histogram, for percentile spectra.
    pub fn corrected_histogram(&self) -> &Histogram<u64> {
        &self.corrected
    }
}

/// Intended send times of an open-loop sender: one every `interval_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacer {
    interval_ns: u64,
    next_ns: u64,
}

impl Pacer {
    /// A pacer whose first send is due at `start_ns`. An interval of 0 means
    /// "as fast as possible": every send is due at once.
    pub fn new(start_ns: u64, interval_ns: u64) -> Pacer {
        Pacer {
            interval_ns,
            next_ns: start_ns,
        }
    }

    /// The interval for `rate` messages per second spread over `senders`
    /// senders (0 for rate 0).
    pub fn interval_for(rate: u64, senders: usize) -> u64 {
        if rate == 0 {
            0
        } else {
            (1_000_000_000u128 * senders.max(1) as u128 / rate as u128).max(1) as u64
        }
    }

    /// When the next send is due.
    pub fn next_due(&self) -> u64 {
        self.next_ns
    }

    /// Whether a send is due at `now_ns`.
    #[inline]
    pub fn is_due(&self, now_ns: u64) -> bool {
        self.next_ns <= now_ns
    }

    /// Takes the next send: returns its intended time and schedules the one after.
    #[inline]
    pub fn take(&mut self, now_ns: u64) -> u64 {
        if self.interval_ns == 0 {
            return now_ns;
        }
        let t = self.next_ns;
        self.next_ns += self.interval_ns;
        t
    }
}

/// How long an open-loop client may sleep at `now_ns` when its next send is
/// due at `next_due_ns` (`u64::MAX`: nothing is due), with `slack_ns` of
/// tolerated lateness, never longer than `max_ns` nor shorter than 1 µs.
///
/// Any completion wakes the client earlier, and every wake-up sends all that
/// is due; so with a slack, due requests mostly ride on reply wake-ups and
/// the timer fires only when no reply came within the slack.
pub fn sleep_for(now_ns: u64, next_due_ns: u64, slack_ns: u64, max_ns: u64) -> u64 {
    next_due_ns
        .saturating_add(slack_ns)
        .saturating_sub(now_ns)
        .clamp(1_000, max_ns.max(1_000))
}

/// What a reply turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// The first reply to a request still waited for: its intended and actual send times.
    Fresh {
        /// Intended send time.
        intended_ns: u64,
        /// Actual send time.
        sent_ns: u64,
    },
    /// The first reply to a request already given up as timed out: received, no latency.
    Late,
    /// A second reply to a request, or a reply to a sequence never sent.
    Duplicate,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    seq: u64,
    intended_ns: u64,
    sent_ns: u64,
    /// 0 empty (never sent), 1 pending, 2 answered, 3 timed out.
    state: u8,
}

const PENDING: u8 = 1;
const ANSWERED: u8 = 2;
const TIMED_OUT: u8 = 3;

/// Request/reply bookkeeping of one datagram socket: duplicates, reordering,
/// timeouts and the numbers from which loss is exact.
///
/// Sequence numbers are sent in increasing order starting at 0. The window
/// remembers the last `capacity` of them; a request is given up
/// ([`SeqWindow::expire`]) after a timeout so its slot in the sender's
/// pipeline can be reused, but a late reply still counts as received.
#[derive(Debug, Clone)]
pub struct SeqWindow {
    slots: Vec<Slot>,
    mask: u64,
    next_seq: u64,
    highest_reply: Option<u64>,
    pending: usize,
    /// Distinct requests answered.
    pub received: u64,
    /// Replies that repeated an answered request or matched no request.
    pub duplicates: u64,
    /// Replies that arrived after one with a higher sequence number.
    pub reordered: u64,
    /// Requests given up as timed out (some may be answered late).
    pub timed_out: u64,
}

impl SeqWindow {
    /// A window remembering at least `capacity` sequence numbers.
    pub fn new(capacity: usize) -> SeqWindow {
        let cap = capacity.max(2).next_power_of_two();
        SeqWindow {
            slots: vec![Slot::default(); cap],
            mask: cap as u64 - 1,
            next_seq: 0,
            highest_reply: None,
            pending: 0,
            received: 0,
            duplicates: 0,
            reordered: 0,
            timed_out: 0,
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.next_seq
    }

    /// Requests waiting for a reply (not timed out).
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Registers the next request; returns its sequence number.
    pub fn on_send(&mut self, intended_ns: u64, sent_ns: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = &mut self.slots[(seq & self.mask) as usize];
        if slot.state == PENDING {
            // Outstanding for a whole window: give it up.
            self.pending -= 1;
            self.timed_out += 1;
        }
        *slot = Slot {
            seq,
            intended_ns,
            sent_ns,
            state: PENDING,
        };
        self.pending += 1;
        seq
    }

    /// Classifies a reply carrying sequence number `seq`.
    pub fn on_reply(&mut self, seq: u64) -> ReplyKind {
        if seq >= self.next_seq {
            self.duplicates += 1;
            return ReplyKind::Duplicate;
        }
        match self.highest_reply {
            Some(h) if seq < h => self.reordered += 1,
            _ => self.highest_reply = Some(seq),
        }
        let slot = &mut self.slots[(seq & self.mask) as usize];
        if slot.seq != seq {
            // Evicted long ago: it was either answered or timed out; without
            // memory of which, a very late reply is counted as a duplicate.
            self.duplicates += 1;
            return ReplyKind::Duplicate;
        }
        match slot.state {
            PENDING => {
                slot.state = ANSWERED;
                self.pending -= 1;
                self.received += 1;
                ReplyKind::Fresh {
                    intended_ns: slot.intended_ns,
                    sent_ns: slot.sent_ns,
                }
            }
            TIMED_OUT => {
                slot.state = ANSWERED;
                self.received += 1;
                ReplyKind::Late
            }
            _ => {
                self.duplicates += 1;
                ReplyKind::Duplicate
            }
        }
    }

    /// Gives up the requests sent before `deadline_ns` that are still waiting;
    /// returns how many.
    pub fn expire(&mut self, deadline_ns: u64) -> usize {
        if self.pending == 0 {
            return 0;
        }
        let mut n = 0;
        for s in self.slots.iter_mut() {
            if s.state == PENDING && s.sent_ns < deadline_ns {
                s.state = TIMED_OUT;
                n += 1;
            }
        }
        self.pending -= n;
        self.timed_out += n as u64;
        n
    }

    /// Requests never answered: sent minus distinct replies.
    pub fn lost(&self) -> u64 {
        self.next_seq - self.received
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_loss_duplicates_reordering_and_late_replies() {
        let mut w = SeqWindow::new(8);
        for i in 0..6 {
            assert_eq!(w.on_send(i * 10, i * 10 + 1), i);
        }
        assert_eq!(w.pending(), 6);
        assert_eq!(
            w.on_reply(0),
            ReplyKind::Fresh {
                intended_ns: 0,
                sent_ns: 1
            }
        );
        assert_eq!(w.on_reply(0), ReplyKind::Duplicate);
        assert!(matches!(w.on_reply(2), ReplyKind::Fresh { .. }));
        assert!(matches!(w.on_reply(1), ReplyKind::Fresh { .. }));
        assert_eq!(w.reordered, 1);
        assert_eq!(w.on_reply(99), ReplyKind::Duplicate);
        // 3, 4 and 5 are overdue at t=45: 3 and 4 were sent before it.
        assert_eq!(w.expire(45), 2);
        assert_eq!(w.on_reply(3), ReplyKind::Late);
        assert_eq!(w.pending(), 1);
        assert_eq!((w.sent(), w.received, w.lost()), (6, 4, 2));
        assert_eq!((w.duplicates, w.timed_out), (2, 2));
    }

    #[test]
    fn recorder_counts_only_the_window_and_keeps_both_views() {
        let mut r = Recorder::new(1_000, 10_000);
        assert!(!r.record(500, 500, 2_000), "warm-up");
        assert!(!r.record(9_000, 9_000, 10_001), "drain");
        // Below 2048 ns the histogram is exact.
        assert!(r.record(2_000, 2_500, 3_500));
        assert_eq!(r.corrected().count, 1);
        assert_eq!(r.corrected().max, 1_500);
        assert_eq!(r.uncorrected().max, 1_000);
    }

    #[test]
    fn pacer_spreads_the_rate_over_senders() {
        assert_eq!(Pacer::interval_for(1_000, 4), 4_000_000);
        assert_eq!(Pacer::interval_for(0, 4), 0);
        let mut p = Pacer::new(100, 10);
        assert!(!p.is_due(99));
        assert_eq!(p.take(120), 100);
        assert_eq!(p.take(120), 110);
        assert_eq!(p.take(120), 120);
        assert!(!p.is_due(120));
        let mut fast = Pacer::new(0, 0);
        assert_eq!(fast.take(7), 7);
    }

    #[test]
    fn spectrum_runs_from_the_median_to_the_maximum() {
        let mut h = new_histogram();
        // Below 2048 ns the histogram is exact.
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let s = spectrum(&h);
        // 0, 0.1, ..., 3.0 nines, then the maximum.
        assert_eq!(s.len(), 32);
        assert_eq!(s[0][0], 0.0);
        assert_eq!(s[10], [1.0, 0.9]);
        assert_eq!(s[20], [2.0, 0.99]);
        assert_eq!(s[31], [3.0, 1.0]);
        assert!(spectrum(&new_histogram()).is_empty());
    }

    #[test]
    fn sleep_waits_for_the_slack_past_the_next_due_time() {
        assert_eq!(sleep_for(100_000, 130_000, 50_000, 10_000_000), 80_000);
        // Overdue: the shortest sleep, the loop sends it first anyway.
        assert_eq!(sleep_for(100_000, 20_000, 0, 10_000_000), 1_000);
        assert_eq!(sleep_for(0, u64::MAX, 50_000, 10_000_000), 10_000_000);
    }
}

#[cfg(test)]
mod coordinated_omission {
    use super::*;

    /// One connection, one request in flight, 1,000 requests per second for
    /// 10 s, 50 us service time, and one 100 ms stall of the server at t = 5 s.
    /// The client waits for each reply before sending the next request, so
    /// the requests due during the stall go out late.
    fn simulate() -> Recorder {
        const MS: u64 = 1_000_000;
        let (stall_from, stall_to) = (5_000 * MS, 5_100 * MS);
        let mut pacer = Pacer::new(0, MS);
        let mut rec = Recorder::new(0, u64::MAX);
        let mut now = 0;
        for _ in 0..10_000 {
            now = now.max(pacer.next_due());
            let intended = pacer.take(now);
            let sent = now;
            let start = if (stall_from..stall_to).contains(&sent) {
                stall_to
            } else {
                sent
            };
            let done = start + 50_000;
            assert!(rec.record(intended, sent, done));
            now = done;
        }
        rec
    }

    #[test]
    fn corrected_p999_shows_a_100ms_stall_and_uncorrected_hides_it() {
        let rec = simulate();
        let (c, u) = (rec.corrected(), rec.uncorrected());
        assert_eq!((c.count, u.count), (10_000, 10_000));
        // ~100 requests were due during the stall: the 10th worst waited ~90 ms.
        assert!(c.p999 >= 85_000_000 && c.p999 <= 95_000_000, "{c:?}");
        // Measured from the late sends, only one request saw the stall.
        assert!(u.p999 < 100_000, "{u:?}");
        assert!(u.max >= 100_000_000, "the stalled request itself: {u:?}");
        assert!(u.p50 == c.p50 && u.p50 < 60_000);
    }
}
