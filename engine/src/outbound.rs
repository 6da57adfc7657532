//! The budget of queued outbound stream bytes: per shard, and over the
//! whole process.
//!
//! Every byte a stream has queued for its peer (written by a plugin, not
//! yet taken by the kernel) counts against its shard's budget
//! (`max_outbound_per_shard`) and against the process's
//! (`max_outbound_total`). A write that would go over either evicts the
//! stream holding the most queued bytes on the writing shard, the slowest
//! reader there, until it fits: its queue is dropped at once and the
//! stream is closed (engine drop `outbound_budget`, close cause
//! `outbound_budget` in the handshake log). When the stream being written
//! to is itself the largest, the write fails with `QueueFull` instead.
//!
//! The process-wide figure is shared without a lock on the hot path: a
//! shard leases budget from one atomic pool in [`LEASE`]-sized chunks and
//! gives back what it no longer needs, so the pool is touched about once
//! per MiB queued or sent, and what all shards hold never exceeds the
//! total. Bytes the engine writes itself (TLS handshake flights, alerts,
//! record framing) are counted too but never refused: they can take a
//! shard over its budget by their own size.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Budget a shard takes from the process pool at a time.
pub const LEASE: usize = 1 << 20;

/// The process-wide budget, shared by every shard.
#[derive(Debug)]
pub struct OutboundPool {
    leased: AtomicUsize,
    limit: usize,
}

impl OutboundPool {
    /// A pool of `limit` bytes.
    pub fn new(limit: usize) -> OutboundPool {
        OutboundPool {
            leased: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes the shards hold leases on (what they have queued, rounded up
    /// to whole leases).
    pub fn leased(&self) -> usize {
        self.leased.load(Ordering::Relaxed)
    }

    /// The process-wide budget.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn take(&self, n: usize, force: bool) -> bool {
        let before = self.leased.fetch_add(n, Ordering::Relaxed);
        if force || before + n <= self.limit {
            return true;
        }
        self.leased.fetch_sub(n, Ordering::Relaxed);
        false
    }

    fn give(&self, n: usize) {
        self.leased.fetch_sub(n, Ordering::Relaxed);
    }
}

/// One shard's side of the budget.
#[derive(Debug)]
pub struct OutboundBudget {
    /// Bytes this shard's streams have queued (as last accounted).
    used: usize,
    /// Bytes leased from the pool (at least `used`).
    leased: usize,
    shard_limit: usize,
    pool: std::sync::Arc<OutboundPool>,
}

impl OutboundBudget {
    /// A shard's budget of `shard_limit` bytes, within `pool`.
    pub fn new(shard_limit: usize, pool: std::sync::Arc<OutboundPool>) -> OutboundBudget {
        OutboundBudget {
            used: 0,
            leased: 0,
            shard_limit,
            pool,
        }
    }

    /// Bytes this shard's streams have queued.
    #[inline]
    pub fn used(&self) -> usize {
        self.used
    }

    /// Whether `extra` more bytes fit both budgets; leases what they need
    /// from the pool when they do.
    #[inline]
    pub fn fits(&mut self, extra: usize) -> bool {
        let want = self.used + extra;
        want <= self.shard_limit && (want <= self.leased || self.lease(want, false))
    }

    /// Records that a stream's queued bytes went from `was` to `now`.
    /// Growth is never refused here (the refusal is [`fits`](Self::fits),
    /// before a plugin's write); leases follow the figure either way.
    #[inline]
    pub fn change(&mut self, was: usize, now: usize) {
        self.used = self.used - was + now;
        if self.used > self.leased {
            self.lease(self.used, true);
        } else if self.leased > self.used + 2 * LEASE {
            self.release();
        }
    }

    #[cold]
    fn lease(&mut self, want: usize, force: bool) -> bool {
        let n = (want - self.leased).div_ceil(LEASE) * LEASE;
        if self.pool.take(n, force) {
            self.leased += n;
            true
        } else {
            false
        }
    }

    #[cold]
    fn release(&mut self) {
        // Keep one lease of slack so a stream hovering around a lease
        // boundary does not touch the pool on every write.
        let keep = self.used.div_ceil(LEASE) * LEASE + LEASE;
        let n = self.leased - keep;
        self.pool.give(n);
        self.leased = keep;
    }
}

impl Drop for OutboundBudget {
    fn drop(&mut self) {
        self.pool.give(self.leased);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_shard_is_held_to_its_own_budget() {
        let pool = Arc::new(OutboundPool::new(usize::MAX / 2));
        let mut b = OutboundBudget::new(10 * LEASE, pool.clone());
        assert!(b.fits(10 * LEASE));
        assert!(!b.fits(10 * LEASE + 1));
        b.change(0, 4 * LEASE);
        assert!(b.fits(6 * LEASE));
        assert!(!b.fits(6 * LEASE + 1));
        assert_eq!(b.used(), 4 * LEASE);
    }

    #[test]
    fn shards_share_the_process_budget_and_give_it_back() {
        let pool = Arc::new(OutboundPool::new(4 * LEASE));
        let mut a = OutboundBudget::new(100 * LEASE, pool.clone());
        let mut b = OutboundBudget::new(100 * LEASE, pool.clone());
        assert!(a.fits(3 * LEASE));
        a.change(0, 3 * LEASE);
        assert!(b.fits(LEASE));
        b.change(0, LEASE);
        assert_eq!(pool.leased(), 4 * LEASE);
        assert!(!b.fits(LEASE + 1), "the pool is spent");
        assert!(!a.fits(1));
        // a's streams drain: its leases go back, b may grow.
        a.change(3 * LEASE, 0);
        assert_eq!(pool.leased(), 2 * LEASE, "a keeps one lease of slack");
        assert!(b.fits(2 * LEASE));
        assert_eq!(pool.leased(), 4 * LEASE);
        drop(a);
        assert_eq!(pool.leased(), 3 * LEASE);
        drop(b);
        assert_eq!(pool.leased(), 0);
    }

    #[test]
    fn engine_bytes_are_counted_even_over_the_budget() {
        let pool = Arc::new(OutboundPool::new(LEASE));
        let mut b = OutboundBudget::new(LEASE, pool.clone());
        b.change(0, LEASE + 100);
        assert_eq!(b.used(), LEASE + 100);
        assert_eq!(pool.leased(), 2 * LEASE);
        assert!(!b.fits(1));
        b.change(LEASE + 100, 10);
        assert!(b.fits(100));
    }
}
