//! New-connection rate limits: a token bucket per source address.
//!
//! Tokens are kept in fixed point (10⁹ units per token) so that refills over
//! any interval are exact integers: a bucket of `burst` tokens refilled at
//! `per_sec` admits exactly `burst` at once and then exactly one more every
//! `1 / per_sec` seconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Units of one token.
const UNIT: u128 = 1_000_000_000;

/// A rate: `per_sec` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_sec: u32,
    /// Bucket size: how many may come at once after a quiet spell.
    pub burst: u32,
}

/// One token bucket. Time is passed in; the bucket never reads a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens × [`UNIT`].
    level: u128,
    /// When `level` was last brought up to date.
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(limit: RateLimit, now: Instant) -> TokenBucket {
        TokenBucket {
            level: u128::from(limit.burst) * UNIT,
            at: now,
        }
    }

    fn refill(&mut self, limit: RateLimit, now: Instant) {
        let cap = u128::from(limit.burst) * UNIT;
        if let Some(elapsed) = now.checked_duration_since(self.at) {
            let add = elapsed.as_nanos().saturating_mul(u128::from(limit.per_sec));
            self.level = self.level.saturating_add(add).min(cap);
            self.at = now;
        }
    }

    /// Takes one token if there is one at `now`.
    pub fn try_take(&mut self, limit: RateLimit, now: Instant) -> bool {
        self.refill(limit, now);
        if self.level >= UNIT {
            self.level -= UNIT;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full at `now` (its source looks like a new one).
    pub fn is_full(&self, limit: RateLimit, now: Instant) -> bool {
        let mut b = *self;
        b.refill(limit, now);
        b.level == u128::from(limit.burst) * UNIT
    }
}

/// A token bucket per source address.
///
/// The map is bounded: when it reaches `max_sources`, the buckets that have
/// refilled (indistinguishable from a new source) are dropped; if none has,
/// all are dropped, which forgets some history rather than letting many
/// sources grow memory without bound.
#[derive(Debug, Clone)]
pub struct SourceRates {
    limit: RateLimit,
    max_sources: usize,
    buckets: HashMap<IpAddr, TokenBucket>,
}

impl SourceRates {
    /// `limit` per source, tracking at most `max_sources` sources.
    pub fn new(limit: RateLimit, max_sources: usize) -> SourceRates {
        SourceRates {
            limit,
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Whether a new connection from `ip` at `now` is within its rate.
    pub fn try_take(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.max_sources {
            let limit = self.limit;
            self.buckets.retain(|_, b| !b.is_full(limit, now));
            if self.buckets.len() >= self.max_sources {
                self.buckets.clear();
            }
        }
        let limit = self.limit;
        self.buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::full(limit, now))
            .try_take(limit, now)
    }

    /// Sources tracked.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_exactly_the_rate() {
        let limit = RateLimit {
            per_sec: 4,
            burst: 3,
        };
        let t0 = Instant::now();
        let mut b = TokenBucket::full(limit, t0);
        assert_eq!((0..10).filter(|_| b.try_take(limit, t0)).count(), 3);
        // One token every 250 ms: not at 249 ms, yes at 250 ms, then none.
        assert!(!b.try_take(limit, t0 + Duration::from_millis(249)));
        assert!(b.try_take(limit, t0 + Duration::from_millis(250)));
        assert!(!b.try_take(limit, t0 + Duration::from_millis(250)));
        // A long quiet spell saves up no more than the burst.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.is_full(limit, later));
        assert_eq!((0..10).filter(|_| b.try_take(limit, later)).count(), 3);
        // Time going backwards (never from Instant, but still) adds nothing.
        assert!(!b.try_take(limit, t0));
    }

    #[test]
    fn each_source_has_its_own_bucket_and_the_map_is_bounded() {
        let limit = RateLimit {
            per_sec: 1,
            burst: 2,
        };
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut r = SourceRates::new(limit, 4);
        assert_eq!((0..5).filter(|_| r.try_take(a, t0)).count(), 2);
        assert_eq!((0..5).filter(|_| r.try_take(b, t0)).count(), 2);
        for i in 3..=4u8 {
            assert!(r.try_take(IpAddr::from([10, 0, 0, i]), t0));
        }
        assert_eq!(r.sources(), 4);
        // Full: the 5th source finds every bucket in use, so all are forgotten.
        assert!(r.try_take(IpAddr::from([10, 0, 0, 5]), t0));
        assert_eq!(r.sources(), 1);
        // Refilled buckets are dropped first when room is needed.
        let t1 = t0 + Duration::from_secs(10);
        for i in 6..=8u8 {
            assert!(r.try_take(IpAddr::from([10, 0, 0, i]), t1));
        }
        assert_eq!(r.sources(), 4);
        let t2 = t1 + Duration::from_millis(500);
        assert!(r.try_take(a, t2));
        assert_eq!(r.sources(), 4, "10.0.0.5 had refilled and made room for a");
        assert_eq!((0..5).filter(|_| r.try_take(a, t2)).count(), 1);
    }
}
