//! The time of one loop turn, read from the OS only if something asks for it.
//!
//! A shard used to read the clock at the start of every turn. On a VM a
//! `clock_gettime` costs ~80 ns, about 2% of a UDP message's whole server
//! cost at 150k datagrams/s, while most turns (datagrams allowed by the
//! source check, handed to a plugin that sets no timer) never look at it.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Instant;

/// What [`nanos_since`] times count from in this process: the first time
/// anything asks. The guard's per-stream state keeps times as nanoseconds
/// since it (8 bytes, where an `Instant` takes 16).
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `t` as nanoseconds since `epoch`: 0 for a time before it, and at most
/// `u64::MAX - 1` (584 years on), so `u64::MAX` is free to mean "never".
#[inline]
pub fn nanos_since(epoch: Instant, t: Instant) -> u64 {
    let d = t.saturating_duration_since(epoch);
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(d.subsec_nanos() as u64)
        .min(u64::MAX - 1)
}

/// The current turn's time: read on first use, then the same for the turn.
#[derive(Debug)]
pub struct TurnClock {
    now: Cell<Instant>,
    fresh: Cell<bool>,
}

impl TurnClock {
    /// A clock whose first [`now`](Self::now) reads the OS clock.
    pub fn new() -> TurnClock {
        TurnClock {
            now: Cell::new(Instant::now()),
            fresh: Cell::new(false),
        }
    }

    /// A clock that reads `now` until [`next_turn`](Self::next_turn), for
    /// callers (and tests) that already hold the time.
    pub fn at(now: Instant) -> TurnClock {
        TurnClock {
            now: Cell::new(now),
            fresh: Cell::new(true),
        }
    }

    /// Starts a new turn: the next [`now`](Self::now) reads the clock again.
    #[inline]
    pub fn next_turn(&self) {
        self.fresh.set(false);
    }

    /// This turn's time.
    #[inline]
    pub fn now(&self) -> Instant {
        if !self.fresh.get() {
            self.now.set(Instant::now());
            self.fresh.set(true);
        }
        self.now.get()
    }
}

impl Default for TurnClock {
    fn default() -> Self {
        TurnClock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_reading_per_turn() {
        let c = TurnClock::new();
        let a = c.now();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(c.now(), a, "the same turn sees the same time");
        c.next_turn();
        let b = c.now();
        assert!(
            b >= a + Duration::from_millis(2),
            "a new turn reads the clock"
        );
        let fixed = TurnClock::at(a);
        assert_eq!(fixed.now(), a);
        let e = epoch();
        assert_eq!(e, epoch(), "one epoch per process");
        let t = Instant::now();
        assert_eq!(
            nanos_since(e, t + Duration::new(3, 7)) - nanos_since(e, t),
            3_000_000_007
        );
        assert_eq!(nanos_since(t + Duration::from_secs(1), t), 0, "before: 0");
        assert_eq!(
            nanos_since(e, e + Duration::from_secs(600 * 365 * 86400)),
            u64::MAX - 1,
            "past the range: the last value short of never"
        );
    }
}
