//! The time of one loop turn, read from the OS only if something asks for it.
//!
//! A shard used to read the clock at the start of every turn. On a VM a
//! `clock_gettime` costs ~80 ns, about 2% of a UDP message's whole server
//! cost at 150k datagrams/s, while most turns (datagrams allowed by the
//! source check, handed to a plugin that sets no timer) never look at it.

use std::cell::Cell;
use std::time::Instant;

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
    }
}
