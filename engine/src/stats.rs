//! Per-shard counters.
//!
//! A shard counts straight into its [`SharedStats`]: one [`Counter`] per
//! figure, each an atomic cell the shard alone writes, with a relaxed load and
//! store (one writer per cell, so no locked read-modify-write is needed; on
//! x86-64 that is the same `mov`s as a plain integer). Readers (the stats
//! line, metrics, tests) take a [`Counters`] snapshot at any time and see
//! every count the moment it is made; there is no per-turn copy to publish.
//! (An earlier design counted into plain integers and copied all ~35 of them
//! into the shared cells every loop turn: 1.6% of the server's CPU under
//! `sockperf` at 150k datagrams/s, BENCHMARKS.md.)

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use ringport_plugin::{ConnectFailure, DropReason};

/// One figure of a shard's [`SharedStats`]: written by that shard only,
/// readable by anyone at any time.
///
/// Debug builds (the test suite) check the single writer: the first thread
/// to write a cell owns it, and a write from any other thread panics.
#[derive(Debug, Default)]
pub struct Counter {
    value: AtomicU64,
    #[cfg(debug_assertions)]
    writer: std::sync::atomic::AtomicUsize,
}

impl Counter {
    /// Adds `n`. A relaxed load and store, not a locked add: correct because
    /// only the owning shard writes (the method is crate-private for that,
    /// and debug builds check it).
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.check_writer();
        self.value.store(
            self.value.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Sets a gauge (owning shard only).
    #[inline]
    pub(crate) fn set(&self, v: u64) {
        self.check_writer();
        self.value.store(v, Ordering::Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    #[inline]
    fn check_writer(&self) {
        #[cfg(debug_assertions)]
        {
            thread_local!(static TOKEN: u8 = const { 0 });
            // The address of a thread-local names the thread, and is never 0.
            let me = TOKEN.with(|t| t as *const u8 as usize);
            if let Err(owner) =
                self.writer
                    .compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed)
            {
                assert_eq!(owner, me, "a second thread wrote a shard's counter");
            }
        }
    }
}

/// Drops the engine itself decides on (as opposed to a plugin's [`DropReason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EngineDrop {
    /// A datagram was larger than the receive buffer and was cut (MSG_TRUNC).
    DatagramTruncated = 0,
    /// No free UDP send slot: the reply was not sent.
    UdpSendSlotsFull = 1,
    /// The kernel dropped datagrams from a full socket receive queue (SO_RXQ_OVFL).
    KernelRxQueue = 2,
    /// A UDP send failed in the kernel.
    UdpSendError = 3,
    /// A connection could not be accepted (fd limit, table full, accept error).
    AcceptFailed = 4,
    /// Completions lost to CQ overflow (only without IORING_FEAT_NODROP).
    CqOverflow = 5,
    /// A datagram whose source address could not be read.
    BadSource = 6,
    /// A TLS ClientHello arrived on a plaintext TCP listener: answered with a
    /// handshake_failure alert and closed before the plugin saw it.
    TlsOnPlainPort = 7,
    /// A plugin call panicked: its connection was closed (or its datagram,
    /// message or timer dropped) and the shard went on.
    PluginPanic = 8,
    /// A stream's peer address could not be read at accept (it reset before
    /// the engine saw it): closed before admission, which cannot judge a
    /// source it does not know.
    PeerUnknown = 9,
    /// A stream was evicted, its queued bytes dropped, because a write
    /// would have taken its shard or the process over the outbound budget
    /// and it was the shard's slowest reader.
    OutboundBudget = 10,
}

impl EngineDrop {
    /// Number of engine drop reasons.
    pub const COUNT: usize = 11;
    /// All reasons in discriminant order.
    pub const ALL: [EngineDrop; EngineDrop::COUNT] = [
        EngineDrop::DatagramTruncated,
        EngineDrop::UdpSendSlotsFull,
        EngineDrop::KernelRxQueue,
        EngineDrop::UdpSendError,
        EngineDrop::AcceptFailed,
        EngineDrop::CqOverflow,
        EngineDrop::BadSource,
        EngineDrop::TlsOnPlainPort,
        EngineDrop::PluginPanic,
        EngineDrop::PeerUnknown,
        EngineDrop::OutboundBudget,
    ];

    /// Snake-case name for stats lines and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineDrop::DatagramTruncated => "datagram_truncated",
            EngineDrop::UdpSendSlotsFull => "udp_send_slots_full",
            EngineDrop::KernelRxQueue => "kernel_rx_queue",
            EngineDrop::UdpSendError => "udp_send_error",
            EngineDrop::AcceptFailed => "accept_failed",
            EngineDrop::CqOverflow => "cq_overflow",
            EngineDrop::BadSource => "bad_source",
            EngineDrop::TlsOnPlainPort => "tls_on_plain_port",
            EngineDrop::PluginPanic => "plugin_panic",
            EngineDrop::PeerUnknown => "peer_unknown",
            EngineDrop::OutboundBudget => "outbound_budget",
        }
    }
}

/// Declares a pair of counter structs from one list of fields: `$plain`, the
/// figures as plain integers (snapshots and sums over shards, with `add`), and
/// `$shared`, the same figures as [`Counter`] cells a shard counts into (with
/// `snapshot`). Fields are scalars or arrays indexed by a reason.
macro_rules! live_counters {
    (
        $(#[$pmeta:meta])* pub struct $plain:ident;
        $(#[$smeta:meta])* pub struct $shared:ident;
        scalars { $($(#[$doc:meta])* $name:ident,)* }
        arrays { $($(#[$adoc:meta])* $arr:ident: $len:expr,)* }
    ) => {
        $(#[$pmeta])*
        pub struct $plain {
            $($(#[$doc])* pub $name: u64,)*
            $($(#[$adoc])* pub $arr: [u64; $len],)*
        }

        impl $plain {
            /// Adds `other` into `self` (totals over shards).
            pub fn add(&mut self, other: &$plain) {
                $(self.$name += other.$name;)*
                $(
                    for (a, b) in self.$arr.iter_mut().zip(other.$arr.iter()) {
                        *a += b;
                    }
                )*
            }
        }

        $(#[$smeta])*
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct $shared {
            $($(#[$doc])* pub $name: $crate::stats::Counter,)*
            $($(#[$adoc])* pub $arr: [$crate::stats::Counter; $len],)*
        }

        impl $shared {
            /// The values now.
            pub fn snapshot(&self) -> $plain {
                $plain {
                    $($name: self.$name.get(),)*
                    $($arr: self.$arr.each_ref().map($crate::stats::Counter::get),)*
                }
            }
        }
    };
}
pub(crate) use live_counters;

live_counters! {
    /// A shard's counters as plain integers (snapshots, totals).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Counters;
    /// A shard's live counters (see the module docs). Aligned so that no
    /// other shard's data shares their cache lines.
    pub struct SharedStats;
    scalars {
    /// Application messages the plugins reported handling.
    msgs,
    /// Bytes received (streams and datagrams).
    bytes_in,
    /// Bytes sent (streams and datagrams).
    bytes_out,
    /// Datagrams received.
    datagrams_in,
    /// Datagrams sent.
    datagrams_out,
    /// Streams accepted.
    conns_accepted,
    /// Outbound connects started (`Context::connect` calls that returned an id).
    connects_started,
    /// Outbound connects the engine refused at once, before any packet
    /// (table full, socket() failed, a bad address, stopping).
    connects_denied,
    /// Outbound streams connected (the plugin heard `handle_connected`).
    conns_connected,
    /// Streams rejected by a plugin at open.
    conns_rejected,
    /// Streams closed (accepted and outbound ones, once open).
    conns_closed,
    /// Streams closed because the plugin rejected their bytes (also in `drops`).
    conns_protocol_closed,
    /// Loop turns.
    turns,
    /// io_uring_enter calls.
    enters,
    /// Receives paused because a peer was not reading its replies.
    backpressure_pauses,
    /// Multishot receives that ended with ENOBUFS because the provided buffer
    /// ring was empty. Not a drop: the bytes wait in the socket and the
    /// receive is re-armed once the ring is refilled (which also grows the
    /// ring's hot set).
    buffer_ring_empty,
    /// Messages queued to other shards.
    mesh_out,
    /// Messages taken from other shards.
    mesh_in,
    /// Messages refused because a mesh ring was full (handed back to the plugin).
    mesh_full,
    /// Wake-ups sent to parked shards.
    mesh_wakes,
    /// Times a listener stopped accepting for a while because accept ran
    /// out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM).
    accept_pauses,
    /// Outbound stream bytes queued now, not yet taken by the kernel (a
    /// gauge, as of the shard's last turn).
    outbound_queued,
    }
    arrays {
    /// Plugin drops, indexed by [`DropReason::index`].
    drops: DropReason::COUNT,
    /// Engine drops, indexed by `EngineDrop as usize`.
    engine_drops: EngineDrop::COUNT,
    /// Outbound connects that did not open, indexed by [`ConnectFailure::index`].
    connect_failures: ConnectFailure::KINDS,
    }
}

impl Counters {
    /// Streams currently open, accepted and outbound.
    pub fn conns_open(&self) -> u64 {
        (self.conns_accepted + self.conns_connected).saturating_sub(self.conns_closed)
    }

    /// Outbound connects that did not open, all reasons together.
    pub fn connect_failures_total(&self) -> u64 {
        self.connect_failures.iter().sum()
    }

    /// All drops, plugin and engine.
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().sum::<u64>() + self.engine_drops.iter().sum::<u64>()
    }

    /// The non-zero drops as `reason=count` pairs.
    pub fn drop_list(&self) -> Vec<(&'static str, u64)> {
        let mut v = Vec::new();
        for r in DropReason::ALL {
            if self.drops[r.index()] > 0 {
                v.push((r.as_str(), self.drops[r.index()]));
            }
        }
        for r in EngineDrop::ALL {
            if self.engine_drops[r as usize] > 0 {
                v.push((r.as_str(), self.engine_drops[r as usize]));
            }
        }
        v
    }
}

impl SharedStats {
    /// Counts a plugin drop (owning shard only).
    #[inline]
    pub(crate) fn drop_plugin(&self, reason: DropReason) {
        self.drops[reason.index()].add(1);
    }

    /// Counts `n` engine drops (owning shard only).
    #[inline]
    pub(crate) fn drop_engine(&self, reason: EngineDrop, n: u64) {
        self.engine_drops[reason as usize].add(n);
    }
}

/// One shard's snapshot, as returned by the engine handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStats {
    /// Shard index.
    pub shard: usize,
    /// CPU it is pinned to.
    pub cpu: usize,
    /// Its counters.
    pub counters: Counters,
}

impl fmt::Display for ShardStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        write!(
            f,
            "shard {} cpu {}: msgs {} bytes_in {} bytes_out {} dgrams_in {} dgrams_out {} conns_open {} accepted {} closed {} drops",
            self.shard,
            self.cpu,
            c.msgs,
            c.bytes_in,
            c.bytes_out,
            c.datagrams_in,
            c.datagrams_out,
            c.conns_open(),
            c.conns_accepted,
            c.conns_closed
        )?;
        let drops = c.drop_list();
        if drops.is_empty() {
            write!(f, " 0")?;
        } else {
            for (name, n) in drops {
                write!(f, " {name}={n}")?;
            }
        }
        // Outbound connects, only where a plugin made any.
        if c.connects_started + c.connects_denied > 0 {
            write!(
                f,
                " connects {} connected {} connect_failures",
                c.connects_started, c.conns_connected
            )?;
            if c.connect_failures_total() == 0 {
                write!(f, " 0")?;
            }
            for (name, n) in ConnectFailure::NAMES.iter().zip(c.connect_failures) {
                if n > 0 {
                    write!(f, " {name}={n}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(debug_assertions)]
    fn a_second_writer_thread_is_caught() {
        let c = std::sync::Arc::new(Counter::default());
        c.add(1);
        let other = c.clone();
        let r = std::thread::spawn(move || other.add(1)).join();
        assert!(r.is_err(), "the second thread's write panics");
        c.add(1);
        assert_eq!(c.get(), 2);
    }

    #[test]
    fn counts_snapshot_and_display() {
        let shared = SharedStats::default();
        shared.msgs.add(2);
        shared.msgs.add(3);
        shared.conns_accepted.add(3);
        shared.conns_closed.add(1);
        shared.drop_plugin(DropReason::FrameTooLong);
        shared.drop_engine(EngineDrop::KernelRxQueue, 2);
        shared.buffer_ring_empty.add(3);
        let mut c = Counters {
            msgs: 5,
            conns_accepted: 3,
            conns_closed: 1,
            buffer_ring_empty: 3,
            ..Counters::default()
        };
        c.drops[DropReason::FrameTooLong.index()] = 1;
        c.engine_drops[EngineDrop::KernelRxQueue as usize] = 2;
        let snap = shared.snapshot();
        assert_eq!(snap, c);
        let mut twice = c.clone();
        twice.add(&c);
        assert_eq!(
            (twice.msgs, twice.drops_total(), twice.conns_open()),
            (10, 6, 4)
        );
        assert_eq!(snap.conns_open(), 2);
        assert_eq!(snap.drops_total(), 3);
        let s = ShardStats {
            shard: 1,
            cpu: 0,
            counters: snap,
        }
        .to_string();
        assert_eq!(
            s,
            "shard 1 cpu 0: msgs 5 bytes_in 0 bytes_out 0 dgrams_in 0 dgrams_out 0 conns_open 2 accepted 3 closed 1 drops frame_too_long=1 kernel_rx_queue=2"
        );
        let mut out = Counters {
            connects_started: 5,
            conns_connected: 2,
            ..Counters::default()
        };
        out.connect_failures[ConnectFailure::Refused.index()] = 2;
        out.connect_failures[ConnectFailure::Error(99).index()] = 1;
        let s = ShardStats {
            shard: 0,
            cpu: 0,
            counters: out,
        }
        .to_string();
        assert!(
            s.ends_with("conns_open 2 accepted 0 closed 0 drops 0 connects 5 connected 2 connect_failures refused=2 other=1"),
            "{s}"
        );
    }
}
