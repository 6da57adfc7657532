//! Per-listener counters: what the admission checks, timeouts and traffic
//! of one listener amount to on one shard.
//!
//! Like its [`SharedStats`](crate::stats::SharedStats), a shard counts straight into
//! its [`SharedListenerStats`] (cells only it writes); readers take a
//! [`ListenerCounters`] snapshot.

use crate::policy::DenyReason;
use crate::tls::HandshakeResult;

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
    /// A TLS handshake did not finish within the handshake timeout.
    TlsHandshake = 3,
}

impl TimeoutKind {
    /// Number of kinds.
    pub const COUNT: usize = 4;
    /// Every kind, in discriminant order.
    pub const ALL: [TimeoutKind; TimeoutKind::COUNT] = [
        TimeoutKind::FirstBytes,
        TimeoutKind::Idle,
        TimeoutKind::HalfClosed,
        TimeoutKind::TlsHandshake,
    ];

    /// The snake-case name used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutKind::FirstBytes => "first_bytes",
            TimeoutKind::Idle => "idle",
            TimeoutKind::HalfClosed => "half_closed",
            TimeoutKind::TlsHandshake => "tls_handshake",
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

crate::stats::live_counters! {
    /// One listener's counters on one shard (or summed over shards).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct ListenerCounters;
    /// One listener's live counters on one shard: the shard counts into them,
    /// anyone reads them. Aligned so that no other shard's data shares their
    /// cache lines.
    pub struct SharedListenerStats;
    scalars {
        /// Connections admitted.
        conns_accepted,
        /// Admitted connections closed.
        conns_closed,
        /// Datagrams admitted.
        datagrams_in,
        /// Datagrams sent (replies), as the kernel completed them.
        datagrams_out,
        /// Bytes received on admitted connections and datagrams.
        bytes_in,
        /// Bytes sent on the listener's connections and UDP sockets.
        bytes_out,
        /// UDP sources seen for the first time within the window.
        udp_new_sources,
        /// Sources whose denial alert is firing now (a gauge; summed over
        /// shards, a source alerting on two shards counts twice).
        sources_alerting,
    }
    arrays {
        /// Connections and datagrams refused, by reason.
        denied: DenyReason::COUNT,
        /// Connections and datagrams served in audit mode that would have been refused.
        would_deny: DenyReason::COUNT,
        /// Connections closed on a timer, by [`TimeoutKind`].
        timeouts: TimeoutKind::COUNT,
        /// Datagrams dropped by the engine, by [`ListenerDrop`].
        drops: ListenerDrop::COUNT,
        /// TLS handshakes ended, by [`HandshakeResult`].
        tls_handshakes: HandshakeResult::COUNT,
    }
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

    /// TLS handshakes that failed, whatever the reason.
    pub fn tls_handshakes_failed(&self) -> u64 {
        HandshakeResult::ALL
            .iter()
            .filter(|r| !r.ok())
            .map(|r| self.tls_handshakes[*r as usize])
            .sum()
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
        for i in 0..DenyReason::COUNT {
            s.denied[i].add(7 + i as u64);
            s.would_deny[i].add(11 + i as u64);
        }
        for i in 0..HandshakeResult::COUNT {
            s.tls_handshakes[i].add(20 + i as u64);
        }
        for (i, v) in [15, 16, 17, 18].into_iter().enumerate() {
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
            denied: std::array::from_fn(|i| 7 + i as u64),
            would_deny: std::array::from_fn(|i| 11 + i as u64),
            timeouts: [15, 16, 17, 18],
            drops: [18, 19],
            tls_handshakes: std::array::from_fn(|i| 20 + i as u64),
        };
        assert_eq!(s.snapshot(), c);
        let mut sum = c;
        sum.add(&c);
        assert_eq!(sum.denied, std::array::from_fn(|i| 14 + 2 * i as u64));
        assert_eq!(sum.timeouts, [30, 32, 34, 36]);
        assert_eq!(sum.drops, [36, 38]);
        // (7 + 17) * 11 / 2 = 132, twice.
        assert_eq!((sum.denied_total(), sum.conns_open()), (264, 0));
        // Failed: 22..=32 doubled = 2 * 297.
        assert_eq!(sum.tls_handshakes_failed(), 594);
    }
}
