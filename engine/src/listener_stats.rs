//! Per-listener counters: what the admission checks, timeouts and traffic
//! of one listener amount to on one shard.
//!
//! Like its [`SharedStats`](crate::stats::SharedStats), a shard counts straight into
//! its [`SharedListenerStats`] (cells only it writes); readers take a
//! [`ListenerCounters`] snapshot.

use crate::stats::Counter;

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

/// One listener's live counters on one shard: the shard counts into them,
/// anyone reads them. Aligned so that no other shard's data shares their
/// cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct SharedListenerStats {
    /// See [`ListenerCounters::conns_accepted`].
    pub conns_accepted: Counter,
    /// See [`ListenerCounters::conns_closed`].
    pub conns_closed: Counter,
    /// See [`ListenerCounters::datagrams_in`].
    pub datagrams_in: Counter,
    /// See [`ListenerCounters::datagrams_out`].
    pub datagrams_out: Counter,
    /// See [`ListenerCounters::bytes_in`].
    pub bytes_in: Counter,
    /// See [`ListenerCounters::bytes_out`].
    pub bytes_out: Counter,
    /// See [`ListenerCounters::udp_new_sources`].
    pub udp_new_sources: Counter,
    /// See [`ListenerCounters::sources_alerting`] (a gauge).
    pub sources_alerting: Counter,
    /// See [`ListenerCounters::denied`].
    pub denied: [Counter; DenyReason::COUNT],
    /// See [`ListenerCounters::would_deny`].
    pub would_deny: [Counter; DenyReason::COUNT],
    /// See [`ListenerCounters::timeouts`].
    pub timeouts: [Counter; TimeoutKind::COUNT],
    /// See [`ListenerCounters::drops`].
    pub drops: [Counter; ListenerDrop::COUNT],
}

impl SharedListenerStats {
    /// The values now.
    pub fn snapshot(&self) -> ListenerCounters {
        ListenerCounters {
            conns_accepted: self.conns_accepted.get(),
            conns_closed: self.conns_closed.get(),
            datagrams_in: self.datagrams_in.get(),
            datagrams_out: self.datagrams_out.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            udp_new_sources: self.udp_new_sources.get(),
            sources_alerting: self.sources_alerting.get(),
            denied: self.denied.each_ref().map(Counter::get),
            would_deny: self.would_deny.each_ref().map(Counter::get),
            timeouts: self.timeouts.each_ref().map(Counter::get),
            drops: self.drops.each_ref().map(Counter::get),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_snapshot_and_sums() {
        let s = SharedListenerStats::default();
        for (cell, v) in [
            (&s.conns_accepted, 1),
            (&s.conns_closed, 2),
            (&s.datagrams_in, 3),
            (&s.bytes_in, 4),
            (&s.bytes_out, 5),
            (&s.udp_new_sources, 6),
            (&s.datagrams_out, 2),
        ] {
            cell.add(v);
        }
        s.sources_alerting.set(3);
        s.sources_alerting.set(1);
        for (i, v) in [7, 8, 9, 10].into_iter().enumerate() {
            s.denied[i].add(v);
            s.would_deny[i].add(v + 4);
        }
        for (i, v) in [15, 16, 17].into_iter().enumerate() {
            s.timeouts[i].add(v);
        }
        s.drops[0].add(18);
        s.drops[1].add(19);
        let c = ListenerCounters {
            conns_accepted: 1,
            conns_closed: 2,
            datagrams_in: 3,
            bytes_in: 4,
            bytes_out: 5,
            udp_new_sources: 6,
            sources_alerting: 1,
            datagrams_out: 2,
            denied: [7, 8, 9, 10],
            would_deny: [11, 12, 13, 14],
            timeouts: [15, 16, 17],
            drops: [18, 19],
        };
        assert_eq!(s.snapshot(), c);
        let mut sum = c;
        sum.add(&c);
        assert_eq!(sum.denied, [14, 16, 18, 20]);
        assert_eq!(sum.timeouts, [30, 32, 34]);
        assert_eq!(sum.drops, [36, 38]);
        assert_eq!((sum.denied_total(), sum.conns_open()), (68, 0));
    }
}
