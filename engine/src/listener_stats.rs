//! Per-listener counters: what the admission checks, timeouts and traffic
//! of one listener amount to on one shard.
//!
//! Like [`Counters`](crate::Counters), a shard counts into plain integers
//! ([`ListenerCounters`]) and publishes them with relaxed stores
//! ([`SharedListenerStats::publish`]), only in turns where they changed.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::policy::DenyReason;

/// Why the engine closed a connection on a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TimeoutKind {
    /// Nothing arrived before the first-bytes deadline.
    FirstBytes = 0,
    /// No bytes either way for the idle timeout.
    Idle = 1,
    /// The peer's FIN came and the connection did not finish in time.
    HalfClosed = 2,
}

impl TimeoutKind {
    /// Number of kinds.
    pub const COUNT: usize = 3;
    /// Every kind, in discriminant order.
    pub const ALL: [TimeoutKind; TimeoutKind::COUNT] = [
        TimeoutKind::FirstBytes,
        TimeoutKind::Idle,
        TimeoutKind::HalfClosed,
    ];

    /// The snake-case name used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutKind::FirstBytes => "first_bytes",
            TimeoutKind::Idle => "idle",
            TimeoutKind::HalfClosed => "half_closed",
        }
    }
}

/// Why a listener dropped a datagram it admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ListenerDrop {
    /// Longer than the listener's `max_datagram`.
    DatagramTooLarge = 0,
    /// Longer than the engine receives whole (`udp_max_datagram`): cut by
    /// the kernel, so dropped before the source is known.
    DatagramTruncated = 1,
}

impl ListenerDrop {
    /// Number of reasons.
    pub const COUNT: usize = 2;
    /// Every reason, in discriminant order.
    pub const ALL: [ListenerDrop; ListenerDrop::COUNT] = [
        ListenerDrop::DatagramTooLarge,
        ListenerDrop::DatagramTruncated,
    ];

    /// The snake-case name used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerDrop::DatagramTooLarge => "datagram_too_large",
            ListenerDrop::DatagramTruncated => "datagram_truncated",
        }
    }
}

/// One listener's counters on one shard (or summed over shards).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerCounters {
    /// Connections admitted.
    pub conns_accepted: u64,
    /// Admitted connections closed.
    pub conns_closed: u64,
    /// Datagrams admitted.
    pub datagrams_in: u64,
    /// Datagrams sent (replies), as the kernel completed them.
    pub datagrams_out: u64,
    /// Bytes received on admitted connections and datagrams.
    pub bytes_in: u64,
    /// Bytes sent on the listener's connections and UDP sockets.
    pub bytes_out: u64,
    /// UDP sources seen for the first time within the window.
    pub udp_new_sources: u64,
    /// Sources whose denial alert is firing now (a gauge; summed over
    /// shards, a source alerting on two shards counts twice).
    pub sources_alerting: u64,
    /// Connections and datagrams refused, by reason.
    pub denied: [u64; DenyReason::COUNT],
    /// Connections and datagrams served in audit mode that would have been refused.
    pub would_deny: [u64; DenyReason::COUNT],
    /// Connections closed on a timer, by [`TimeoutKind`].
    pub timeouts: [u64; TimeoutKind::COUNT],
    /// Datagrams dropped by the engine, by [`ListenerDrop`].
    pub drops: [u64; ListenerDrop::COUNT],
}

impl ListenerCounters {
    /// Admitted connections still open.
    pub fn conns_open(&self) -> u64 {
        self.conns_accepted.saturating_sub(self.conns_closed)
    }

    /// Every denial.
    pub fn denied_total(&self) -> u64 {
        self.denied.iter().sum()
    }

    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &ListenerCounters) {
        self.conns_accepted += o.conns_accepted;
        self.conns_closed += o.conns_closed;
        self.datagrams_in += o.datagrams_in;
        self.datagrams_out += o.datagrams_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.udp_new_sources += o.udp_new_sources;
        self.sources_alerting += o.sources_alerting;
        for (a, b) in self.denied.iter_mut().zip(o.denied) {
            *a += b;
        }
        for (a, b) in self.would_deny.iter_mut().zip(o.would_deny) {
            *a += b;
        }
        for (a, b) in self.timeouts.iter_mut().zip(o.timeouts) {
            *a += b;
        }
        for (a, b) in self.drops.iter_mut().zip(o.drops) {
            *a += b;
        }
    }
}

/// Cells of the scalar fields, before the per-reason arrays.
const SCALARS: usize = 8;
const CELLS: usize = SCALARS + 2 * DenyReason::COUNT + TimeoutKind::COUNT + ListenerDrop::COUNT;
/// Where the timeouts start in the cells.
const TIMEOUTS: usize = SCALARS + 2 * DenyReason::COUNT;
/// Where the drops start in the cells.
const DROPS: usize = TIMEOUTS + TimeoutKind::COUNT;

/// The published copy of one listener's counters on one shard.
#[derive(Debug)]
pub struct SharedListenerStats {
    cells: [AtomicU64; CELLS],
}

impl Default for SharedListenerStats {
    fn default() -> Self {
        SharedListenerStats {
            cells: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn flatten(c: &ListenerCounters) -> [u64; CELLS] {
    let mut v = [0; CELLS];
    v[..SCALARS].copy_from_slice(&[
        c.conns_accepted,
        c.conns_closed,
        c.datagrams_in,
        c.bytes_in,
        c.bytes_out,
        c.udp_new_sources,
        c.sources_alerting,
        c.datagrams_out,
    ]);
    let d = SCALARS + DenyReason::COUNT;
    v[SCALARS..d].copy_from_slice(&c.denied);
    v[d..d + DenyReason::COUNT].copy_from_slice(&c.would_deny);
    v[TIMEOUTS..DROPS].copy_from_slice(&c.timeouts);
    v[DROPS..].copy_from_slice(&c.drops);
    v
}

impl SharedListenerStats {
    /// Publishes `c`. Only the owning shard calls this.
    pub fn publish(&self, c: &ListenerCounters) {
        for (a, v) in self.cells.iter().zip(flatten(c)) {
            a.store(v, Ordering::Relaxed);
        }
    }

    /// The last published values.
    pub fn snapshot(&self) -> ListenerCounters {
        let v: [u64; CELLS] = std::array::from_fn(|i| self.cells[i].load(Ordering::Relaxed));
        let d = SCALARS + DenyReason::COUNT;
        let mut c = ListenerCounters {
            conns_accepted: v[0],
            conns_closed: v[1],
            datagrams_in: v[2],
            bytes_in: v[3],
            bytes_out: v[4],
            udp_new_sources: v[5],
            sources_alerting: v[6],
            datagrams_out: v[7],
            ..ListenerCounters::default()
        };
        c.denied.copy_from_slice(&v[SCALARS..d]);
        c.would_deny.copy_from_slice(&v[d..d + DenyReason::COUNT]);
        c.timeouts.copy_from_slice(&v[TIMEOUTS..DROPS]);
        c.drops.copy_from_slice(&v[DROPS..]);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_snapshot_round_trip_and_sums() {
        let mut c = ListenerCounters {
            conns_accepted: 1,
            conns_closed: 2,
            datagrams_in: 3,
            bytes_in: 4,
            bytes_out: 5,
            udp_new_sources: 6,
            sources_alerting: 1,
            datagrams_out: 2,
            ..ListenerCounters::default()
        };
        c.denied = [7, 8, 9, 10];
        c.would_deny = [11, 12, 13, 14];
        c.timeouts = [15, 16, 17];
        c.drops = [18, 19];
        let s = SharedListenerStats::default();
        s.publish(&c);
        assert_eq!(s.snapshot(), c);
        let mut sum = c;
        sum.add(&c);
        assert_eq!(sum.denied, [14, 16, 18, 20]);
        assert_eq!(sum.timeouts, [30, 32, 34]);
        assert_eq!(sum.drops, [36, 38]);
        assert_eq!((sum.denied_total(), sum.conns_open()), (68, 0));
    }
}
