//! Capped exponential backoff with jitter, for reconnecting.
//!
//! A pure calculator: it reads no clock and sleeps nowhere. A plugin asks
//! it for the next delay when a connect fails and hands that delay to
//! [`Context::set_timer`](crate::Context::set_timer); when the timer fires
//! it connects again, and once a connect succeeds (or the link has proved
//! itself) it calls [`Backoff::reset`].
//!
//! Attempt `n` (counting from 0) waits at most
//! `ceiling(n) = min(cap, base * 2^n)`. Jitter takes a random part off:
//! with `jitter_percent = j` the delay is uniform in
//! `[ceiling(n) * (100 - j) / 100, ceiling(n)]`, so `j = 0` is the plain
//! doubling, `j = 100` is "full jitter" and the default, 50, keeps at least
//! half of each step while spreading many clients that lost the same
//! server over the other half (no reconnect stampede).
//!
//! ```
//! use std::time::Duration;
//! use ringport_plugin::backoff::Backoff;
//!
//! let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
//!     .jitter_percent(0);
//! let ms: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
//! assert_eq!(ms, [100, 200, 400, 800, 1600, 2000]);
//! b.reset();
//! assert_eq!(b.next_delay(), Duration::from_millis(100));
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Jitter unless [`Backoff::jitter_percent`] says otherwise.
pub const DEFAULT_JITTER_PERCENT: u8 = 50;

/// Capped exponential backoff with jitter (see the module docs).
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter_percent: u8,
    /// Delays handed out since the last reset.
    attempt: u32,
    /// xorshift64* state (never 0).
    rng: u64,
}

impl Backoff {
    /// Doubling from `base` up to `cap`, with [`DEFAULT_JITTER_PERCENT`],
    /// seeded from the process's hash randomness (different per instance,
    /// so shards and processes do not retry in step).
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        Backoff {
            base,
            cap: cap.max(base),
            jitter_percent: DEFAULT_JITTER_PERCENT,
            attempt: 0,
            rng: 1,
        }
        .seed(h.finish())
    }

    /// The same with a fixed seed: the same seed gives the same delays
    /// (for tests, and for reproducing a run).
    pub fn seed(mut self, seed: u64) -> Backoff {
        // splitmix64 of the seed, so that nearby seeds start far apart,
        // and never the all-zero state xorshift cannot leave.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        self.rng = if z == 0 { 1 } else { z };
        self
    }

    /// How much of each step may be taken off at random, in percent
    /// (values above 100 count as 100).
    pub fn jitter_percent(mut self, percent: u8) -> Backoff {
        self.jitter_percent = percent.min(100);
        self
    }

    /// The delay before the next attempt; each call moves one attempt on.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        // Durations up to ~584 years fit u64 nanoseconds; beyond is "never".
        let top = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let span = (u128::from(top) * u128::from(self.jitter_percent) / 100) as u64;
        if span == 0 {
            return Duration::from_nanos(top);
        }
        // span >= 1, so the modulus is at least 2 (or u64::MAX).
        let r = self.next_random() % span.saturating_add(1);
        Duration::from_nanos(top - span + r)
    }

    /// Starts over from `base` (after a connect that held).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Delays handed out since the last [`reset`](Self::reset).
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The most attempt `n` waits: `min(cap, base * 2^n)`.
    pub fn ceiling(&self, n: u32) -> Duration {
        if n >= 32 {
            return self.cap;
        }
        self.base
            .checked_mul(1u32 << n)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn without_jitter_the_delays_double_up_to_the_cap() {
        let mut b = Backoff::new(100 * MS, 1000 * MS).jitter_percent(0);
        let got: Vec<Duration> = (0..7).map(|_| b.next_delay()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000, 1000].map(|m| m * MS));
        assert_eq!(b.attempts(), 7);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.next_delay(), 100 * MS);
    }

    #[test]
    fn jittered_delays_stay_within_each_step_and_repeat_under_a_seed() {
        let run = |seed| {
            let mut b = Backoff::new(100 * MS, 1600 * MS)
                .jitter_percent(50)
                .seed(seed);
            (0..40).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7), "a seed fixes the sequence");
        assert_ne!(a, run(8), "another seed gives another sequence");
        for (n, d) in a.iter().enumerate() {
            let ceiling = [100, 200, 400, 800, 1600][n.min(4)] * MS;
            assert!(
                *d >= ceiling / 2 && *d <= ceiling,
                "attempt {n}: {d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        // Jitter really spreads: the capped attempts do not all coincide.
        let capped: std::collections::HashSet<_> = a[4..].iter().collect();
        assert!(capped.len() > 30, "{} distinct of 36", capped.len());
    }

    #[test]
    fn full_jitter_reaches_down_to_zero_and_never_above_the_cap() {
        let mut b = Backoff::new(10 * MS, 10 * MS).jitter_percent(200).seed(1);
        let got: Vec<Duration> = (0..2000).map(|_| b.next_delay()).collect();
        assert!(got.iter().all(|d| *d <= 10 * MS));
        assert!(got.iter().any(|d| *d < MS), "the low end is reached");
        assert!(got.iter().any(|d| *d > 9 * MS), "the high end is reached");
    }

    #[test]
    fn huge_attempts_and_durations_saturate_at_the_cap() {
        let cap = Duration::from_secs(3600);
        let mut b = Backoff::new(Duration::from_secs(1), cap).jitter_percent(0);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), cap);
        assert_eq!(b.ceiling(31), cap);
        assert_eq!(b.ceiling(u32::MAX), cap);
        // A cap below the base is raised to it.
        let mut low = Backoff::new(5 * MS, MS).jitter_percent(0);
        assert_eq!(low.next_delay(), 5 * MS);
        assert_eq!(low.next_delay(), 5 * MS);
        // A cap no u64 of nanoseconds holds does not overflow.
        let mut big = Backoff::new(Duration::MAX, Duration::MAX).seed(3);
        assert!(big.next_delay() <= Duration::from_nanos(u64::MAX));
    }
}
