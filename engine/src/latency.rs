//! Latency histograms that plugins (and the engine) report per shard.
//!
//! A plugin calls [`Context::record_latency`](ringport_plugin::Context::record_latency)
//! with a static name and a duration; the shard counts it into fixed
//! power-of-two buckets (1 µs to about 1 s, plus overflow) in plain integers,
//! and publishes a changed histogram once per loop turn with relaxed stores,
//! like the counters. Fixed buckets keep recording free of allocation and
//! map directly onto a Prometheus histogram. At most [`MAX_NAMES`] names per
//! shard; samples under further names are counted as `dropped_names`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Bucket upper bounds in microseconds: 1, 2, 4, ... 2^20 (about 1.05 s).
pub const BOUNDS_US: [u64; 21] = {
    let mut b = [0u64; 21];
    let mut i = 0;
    while i < 21 {
        b[i] = 1 << i;
        i += 1;
    }
    b
};
/// Buckets: one per bound plus the overflow (`+Inf`).
pub const BUCKETS: usize = BOUNDS_US.len() + 1;
/// Distinct latency names a shard keeps.
pub const MAX_NAMES: usize = 8;

/// One histogram: counts per bucket (not cumulative), sum and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram {
    /// Samples per bucket; bucket i holds samples above bound i-1 and at most bound i.
    pub buckets: [u64; BUCKETS],
    /// Sum of all samples in nanoseconds.
    pub sum_ns: u64,
    /// Number of samples.
    pub count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [0; BUCKETS],
            sum_ns: 0,
            count: 0,
        }
    }
}

/// The bucket of a sample: the first bound at or above it.
#[inline]
pub fn bucket_of(latency: Duration) -> usize {
    let ns = latency.as_nanos().min(u64::MAX as u128) as u64;
    let us = ns.div_ceil(1000);
    if us <= 1 {
        return 0;
    }
    // Smallest i with 2^i >= us.
    let i = (64 - (us - 1).leading_zeros()) as usize;
    i.min(BUCKETS - 1)
}

impl Histogram {
    /// Counts one sample.
    #[inline]
    pub fn record(&mut self, latency: Duration) {
        self.buckets[bucket_of(latency)] += 1;
        self.sum_ns = self
            .sum_ns
            .saturating_add(latency.as_nanos().min(u64::MAX as u128) as u64);
        self.count += 1;
    }

    /// Adds `other` into `self` (totals over shards).
    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.count += other.count;
    }
}

/// A shard's histograms (hot-path side).
#[derive(Debug, Default)]
pub struct LocalLatencies {
    names: Vec<&'static str>,
    hists: [Histogram; MAX_NAMES],
    dirty: [bool; MAX_NAMES],
    /// Some histogram (or `dropped_names`) changed since the last publish.
    any_dirty: bool,
    /// Samples refused because [`MAX_NAMES`] names were already in use.
    pub dropped_names: u64,
}

impl LocalLatencies {
    /// Counts a sample under `name`.
    #[inline]
    pub fn record(&mut self, name: &'static str, latency: Duration) {
        let i = match self.names.iter().position(|n| *n == name) {
            Some(i) => i,
            None if self.names.len() < MAX_NAMES => {
                self.names.push(name);
                self.names.len() - 1
            }
            None => {
                self.dropped_names += 1;
                self.any_dirty = true;
                return;
            }
        };
        self.hists[i].record(latency);
        self.dirty[i] = true;
        self.any_dirty = true;
    }

    /// Publishes the histograms that changed since the last call (most turns
    /// record nothing: one flag test).
    #[inline]
    pub fn publish(&mut self, to: &SharedLatencies) {
        if std::mem::take(&mut self.any_dirty) {
            self.publish_dirty(to);
        }
    }

    fn publish_dirty(&mut self, to: &SharedLatencies) {
        for i in 0..self.names.len() {
            if !self.dirty[i] {
                continue;
            }
            self.dirty[i] = false;
            let _ = to.names[i].set(self.names[i]);
            let h = &self.hists[i];
            let s = &to.hists[i];
            for (a, v) in s.buckets.iter().zip(h.buckets.iter()) {
                a.store(*v, Ordering::Relaxed);
            }
            s.sum_ns.store(h.sum_ns, Ordering::Relaxed);
            s.count.store(h.count, Ordering::Relaxed);
        }
        to.dropped_names
            .store(self.dropped_names, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct SharedHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// The published copy of a shard's histograms.
#[derive(Debug, Default)]
pub struct SharedLatencies {
    names: [OnceLock<&'static str>; MAX_NAMES],
    hists: [SharedHistogram; MAX_NAMES],
    dropped_names: AtomicU64,
}

impl SharedLatencies {
    /// Every named histogram as last published, in first-use order.
    pub fn snapshot(&self) -> Vec<(&'static str, Histogram)> {
        let mut out = Vec::new();
        for (name, s) in self.names.iter().zip(self.hists.iter()) {
            let Some(name) = name.get() else { break };
            let mut h = Histogram::default();
            for (v, a) in h.buckets.iter_mut().zip(s.buckets.iter()) {
                *v = a.load(Ordering::Relaxed);
            }
            h.sum_ns = s.sum_ns.load(Ordering::Relaxed);
            h.count = s.count.load(Ordering::Relaxed);
            out.push((*name, h));
        }
        out
    }

    /// Samples refused for want of a name slot.
    pub fn dropped_names(&self) -> u64 {
        self.dropped_names.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(Duration::from_nanos(1000)), 0);
        assert_eq!(bucket_of(Duration::from_nanos(1001)), 1);
        assert_eq!(bucket_of(Duration::from_micros(2)), 1);
        assert_eq!(bucket_of(Duration::from_micros(3)), 2);
        assert_eq!(bucket_of(Duration::from_micros(1024)), 10);
        assert_eq!(bucket_of(Duration::from_micros(1 << 20)), 20);
        assert_eq!(bucket_of(Duration::from_secs(5)), 21, "overflow");
    }

    #[test]
    fn record_publish_snapshot_exactly() {
        let mut local = LocalLatencies::default();
        let shared = SharedLatencies::default();
        local.record("rtt", Duration::from_micros(3));
        local.record("rtt", Duration::from_micros(4));
        local.record("queue", Duration::from_micros(100));
        for i in 0..MAX_NAMES {
            let name: &'static str = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
            local.record(name, Duration::from_micros(1));
        }
        local.publish(&shared);
        let snap = shared.snapshot();
        assert_eq!(snap.len(), MAX_NAMES);
        assert_eq!(snap[0].0, "rtt");
        assert_eq!(snap[0].1.count, 2);
        assert_eq!(snap[0].1.buckets[2], 2);
        assert_eq!(snap[0].1.sum_ns, 7000);
        assert_eq!(snap[1].0, "queue");
        assert_eq!(snap[1].1.buckets[7], 1, "100 us lands in the 128 us bucket");
        assert_eq!(shared.dropped_names(), 2, "g and h found no slot");
    }
}
