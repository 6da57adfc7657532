//! Counters of the broker, one slot per shard.
//!
//! Each counter has exactly one writer, the shard that owns its slot, which
//! updates it with a relaxed load and store (no read-modify-write); any
//! thread reads them with relaxed loads. The per-client snapshot behind
//! [`MqttStats::status`] is refreshed by each shard on a timer.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use ringport_plugin::{DropReason, ShardId};

macro_rules! drop_kinds {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $engine:ident; )*) => {
        /// Why the broker dropped a message, refused a request or closed a
        /// connection. Generated from one list, so a new kind cannot
        /// compile without its name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum MqttDrop {
            $( $(#[$doc])* $variant, )*
        }

        impl MqttDrop {
            /// Every kind, in discriminant order.
            pub const ALL: &'static [MqttDrop] = &[$(MqttDrop::$variant),*];
            /// Number of kinds; counters are arrays of this length.
            pub const COUNT: usize = MqttDrop::ALL.len();

            /// The snake-case name used in metrics.
            pub fn as_str(self) -> &'static str {
                match self { $(MqttDrop::$variant => $name,)* }
            }

            /// The engine-level reason the drop is also counted under.
            pub fn engine_reason(self) -> DropReason {
                match self { $(MqttDrop::$variant => DropReason::$engine,)* }
            }

            /// Index into a counter array.
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

drop_kinds! {
    /// A QoS 0 message did not fit a client's queue.
    QueueFullQos0 = "queue_full_qos0", QueueFull;
    /// A QoS 1/2 message did not fit a client's queue.
    QueueFullQos12 = "queue_full_qos12", QueueFull;
    /// A QoS 0 message for a session that is not connected.
    OfflineQos0 = "offline_qos0", Refused;
    /// A CONNECT, PUBLISH, SUBSCRIBE or delivery the ACL or authenticator refused.
    NotAuthorized = "not_authorized", Refused;
    /// A packet over the broker's limit (connection closed), or a message
    /// over a client's Maximum Packet Size (not sent).
    PacketTooLarge = "packet_too_large", FrameTooLong;
    /// A packet that does not decode: the connection was closed.
    Malformed = "malformed", Malformed;
    /// A packet against the protocol's rules: the connection was closed.
    ProtocolError = "protocol_error", Malformed;
    /// A client silent for 1.5 times its keep-alive: closed.
    KeepAliveTimeout = "keep_alive_timeout", Refused;
    /// A connection closed because its client id connected again.
    SessionTakenOver = "session_taken_over", Refused;
    /// A message not queued for a shard whose mesh ring (and retry queue) was full.
    MeshFull = "mesh_full", MeshFull;
    /// A message whose Message Expiry Interval passed before delivery.
    Expired = "expired", Refused;
    /// A retained message for a new topic past `max_retained`.
    RetainedFull = "retained_full", Refused;
    /// A topic or filter over the length or level limits, or invalid.
    TopicInvalid = "topic_invalid", Refused;
    /// A client that sent more unacknowledged QoS 1/2 messages than allowed.
    ReceiveMaximumExceeded = "receive_maximum_exceeded", Refused;
    /// A subscription past `max_subscriptions_per_client`.
    SubscriptionLimit = "subscription_limit", Refused;
    /// A CONNECT past `max_sessions`.
    SessionLimit = "session_limit", Refused;
    /// A message for a session that moved or ended on the way.
    NoSession = "no_session", Refused;
    /// A connection that sent no CONNECT in time.
    ConnectTimeout = "connect_timeout", Refused;
}

/// The listener index of what no listener of this process served: drops
/// of messages between shards, a retained store that is full, a session
/// restored from disk whose client has not come back. The same value as
/// `ListenerId::OUTBOUND`: the broker opens no outbound streams, and one
/// that reached it would count here.
pub const NO_LISTENER: u16 = ringport_plugin::ListenerId::OUTBOUND.0;

/// Counters of one listener on one shard. Written only by that shard.
#[derive(Debug, Default)]
pub struct ListenerStats {
    connected: AtomicU64,
    connects: AtomicU64,
    connects_refused: AtomicU64,
    msgs_in: [AtomicU64; 3],
    msgs_out: [AtomicU64; 3],
    drops: [AtomicU64; MqttDrop::COUNT],
    subscriptions: AtomicU64,
}

/// Adds `n` to a counter this thread alone writes.
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Takes `n` from a gauge this thread alone writes.
fn lower(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).saturating_sub(n), Relaxed);
}

impl ListenerStats {
    pub(crate) fn connect(&self, accepted: bool) {
        bump(
            if accepted {
                &self.connects
            } else {
                &self.connects_refused
            },
            1,
        );
    }
    pub(crate) fn attached(&self) {
        bump(&self.connected, 1);
    }
    pub(crate) fn detached(&self) {
        lower(&self.connected, 1);
    }
    pub(crate) fn msg_in(&self, qos: u8) {
        bump(&self.msgs_in[usize::from(qos.min(2))], 1);
    }
    pub(crate) fn msg_out(&self, qos: u8) {
        bump(&self.msgs_out[usize::from(qos.min(2))], 1);
    }
    pub(crate) fn dropped(&self, kind: MqttDrop) {
        bump(&self.drops[kind.index()], 1);
    }
    pub(crate) fn subscribed(&self, n: usize) {
        bump(&self.subscriptions, n as u64);
    }
    pub(crate) fn unsubscribed(&self, n: usize) {
        lower(&self.subscriptions, n as u64);
    }

    /// Adds this slot's counters to `t`.
    fn add_to(&self, t: &mut ListenerTotals) {
        t.connected += self.connected.load(Relaxed);
        t.connects += self.connects.load(Relaxed);
        t.connects_refused += self.connects_refused.load(Relaxed);
        for q in 0..3 {
            t.messages_in[q] += self.msgs_in[q].load(Relaxed);
            t.messages_out[q] += self.msgs_out[q].load(Relaxed);
        }
        for (d, c) in t.drops.iter_mut().zip(&self.drops) {
            *d += c.load(Relaxed);
        }
        t.subscriptions += self.subscriptions.load(Relaxed);
    }
}

/// The counters of one listener (or of [`NO_LISTENER`]), summed over
/// shards or over one shard's listeners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerTotals {
    /// Clients connected now.
    pub connected: u64,
    /// CONNECTs accepted.
    pub connects: u64,
    /// CONNECTs refused (answered with a failure CONNACK).
    pub connects_refused: u64,
    /// PUBLISH packets received from clients, by QoS (0, 1, 2).
    pub messages_in: [u64; 3],
    /// PUBLISH packets sent to clients, by QoS, redeliveries included.
    pub messages_out: [u64; 3],
    /// Drops, indexed by [`MqttDrop::index`].
    pub drops: [u64; MqttDrop::COUNT],
    /// Subscriptions of the sessions whose client last came through the
    /// listener (`$share/...` ones included).
    pub subscriptions: u64,
}

impl ListenerTotals {
    /// Drops counted under `kind`.
    pub fn drops(&self, kind: MqttDrop) -> u64 {
        self.drops[kind.index()]
    }
}

/// Counters of one shard. Written only by that shard.
///
/// What clients do is counted per listener ([`ListenerStats`], one slot
/// per listener id the shard has seen a connection of, plus one for
/// [`NO_LISTENER`]); what the broker holds for all listeners at once
/// (sessions, retained messages, the mesh) per shard.
#[derive(Debug, Default)]
pub struct ShardStats {
    sessions: AtomicU64,
    retained: AtomicU64,
    subscriptions: AtomicU64,
    mesh_waiting: AtomicU64,
    /// By listener id; grown by the shard when a listener's first
    /// connection arrives.
    listeners: RwLock<Vec<Arc<ListenerStats>>>,
    unattributed: Arc<ListenerStats>,
    status: Mutex<Vec<ClientStatus>>,
}

impl ShardStats {
    /// The slot of `listener` ([`NO_LISTENER`]: the unattributed one),
    /// made on first use. Called once per listener by the shard, never per
    /// message: the shard keeps the slots in an array.
    pub(crate) fn listener_slot(&self, listener: u16) -> Arc<ListenerStats> {
        if listener == NO_LISTENER {
            return Arc::clone(&self.unattributed);
        }
        let mut list = match self.listeners.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        while list.len() <= usize::from(listener) {
            list.push(Arc::new(ListenerStats::default()));
        }
        Arc::clone(&list[usize::from(listener)])
    }

    pub(crate) fn set_sessions(&self, n: usize) {
        self.sessions.store(n as u64, Relaxed);
    }
    pub(crate) fn set_retained(&self, n: usize) {
        self.retained.store(n as u64, Relaxed);
    }
    pub(crate) fn set_subscriptions(&self, n: usize) {
        self.subscriptions.store(n as u64, Relaxed);
    }
    pub(crate) fn set_mesh_waiting(&self, n: usize) {
        self.mesh_waiting.store(n as u64, Relaxed);
    }
    pub(crate) fn set_status(&self, list: Vec<ClientStatus>) {
        // A poisoned lock only means a reader panicked mid-clone.
        match self.status.lock() {
            Ok(mut g) => *g = list,
            Err(p) => *p.into_inner() = list,
        }
    }

    /// The counters of `listener` on this shard ([`NO_LISTENER`]: what no
    /// listener served); zero for a listener the shard has not seen.
    pub fn listener(&self, listener: u16) -> ListenerTotals {
        let mut t = ListenerTotals::default();
        if listener == NO_LISTENER {
            self.unattributed.add_to(&mut t);
        } else {
            let list = match self.listeners.read() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if let Some(l) = list.get(usize::from(listener)) {
                l.add_to(&mut t);
            }
        }
        t
    }

    /// This shard's counters over every listener and the unattributed slot.
    pub fn all_listeners(&self) -> ListenerTotals {
        let mut t = ListenerTotals::default();
        self.unattributed.add_to(&mut t);
        let list = match self.listeners.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for l in list.iter() {
            l.add_to(&mut t);
        }
        t
    }

    /// Clients connected now.
    pub fn connected(&self) -> u64 {
        self.all_listeners().connected
    }
    /// Sessions held now (connected or waiting for their client).
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Relaxed)
    }
    /// CONNECTs accepted.
    pub fn connects(&self) -> u64 {
        self.all_listeners().connects
    }
    /// CONNECTs refused (answered with a failure CONNACK).
    pub fn connects_refused(&self) -> u64 {
        self.all_listeners().connects_refused
    }
    /// PUBLISH packets received from clients at `qos` (0, 1, 2).
    pub fn messages_in(&self, qos: u8) -> u64 {
        self.all_listeners().messages_in[usize::from(qos.min(2))]
    }
    /// PUBLISH packets sent to clients at `qos` (0, 1, 2), redeliveries included.
    pub fn messages_out(&self, qos: u8) -> u64 {
        self.all_listeners().messages_out[usize::from(qos.min(2))]
    }
    /// Drops counted under `kind`.
    pub fn drops(&self, kind: MqttDrop) -> u64 {
        self.all_listeners().drops(kind)
    }
    /// Retained messages held. Every shard holds a replica: this is the
    /// broker's count, not a share of it ([`MqttStats::retained`]).
    pub fn retained(&self) -> u64 {
        self.retained.load(Relaxed)
    }
    /// Subscriptions held by this shard: its sessions' plain ones, and the
    /// members of the shared groups whose home is this shard (summed over
    /// shards, every subscription once).
    pub fn subscriptions(&self) -> u64 {
        self.subscriptions.load(Relaxed)
    }
    /// Messages waiting for a full mesh ring.
    pub fn mesh_waiting(&self) -> u64 {
        self.mesh_waiting.load(Relaxed)
    }
    /// The last status snapshot of this shard's clients.
    pub fn status(&self) -> Vec<ClientStatus> {
        match self.status.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// The state of one client session, as the status page shows it.
///
/// Kept for every session (up to `status_max_clients`) and refreshed every
/// `status_interval`, so it is small: the client id is the session's own
/// (shared, not copied), the counts are 32-bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStatus {
    /// The shard holding the session.
    pub shard: ShardId,
    /// The client identifier.
    pub client_id: Arc<str>,
    /// Whether a connection is attached.
    pub connected: bool,
    /// Messages waiting (not yet in flight).
    pub queued: u32,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub inflight: u32,
    /// Subscriptions held.
    pub subscriptions: u32,
    /// QoS 0 messages dropped because the client's queue was full.
    pub dropped_qos0: u64,
    /// QoS 1/2 messages dropped because the client's queue was full.
    pub dropped_qos12: u64,
    /// Messages not sent for another reason (too large for the client,
    /// expired, not authorized).
    pub dropped_other: u64,
}

/// Counters of every shard of one broker (one [`MqttFactory`]).
///
/// [`MqttFactory`]: super::MqttFactory
#[derive(Debug, Default)]
pub struct MqttStats {
    shards: RwLock<Vec<Arc<ShardStats>>>,
}

impl MqttStats {
    /// The slot of `shard`, made on first use.
    pub(crate) fn slot(&self, shard: ShardId) -> Arc<ShardStats> {
        let mut list = match self.shards.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        while list.len() <= shard {
            list.push(Arc::new(ShardStats::default()));
        }
        Arc::clone(&list[shard])
    }

    /// Each shard's counters, in shard order (empty before the first
    /// instance was created).
    pub fn shards(&self) -> Vec<Arc<ShardStats>> {
        match self.shards.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Sum of `f` over the shards.
    pub fn total(&self, f: impl Fn(&ShardStats) -> u64) -> u64 {
        self.shards().iter().map(|s| f(s)).sum()
    }

    /// The counters of `listener` (its index in the engine's plan, or
    /// [`NO_LISTENER`]) summed over shards.
    pub fn listener(&self, listener: u16) -> ListenerTotals {
        let mut t = ListenerTotals::default();
        for s in self.shards() {
            let l = s.listener(listener);
            t.connected += l.connected;
            t.connects += l.connects;
            t.connects_refused += l.connects_refused;
            for q in 0..3 {
                t.messages_in[q] += l.messages_in[q];
                t.messages_out[q] += l.messages_out[q];
            }
            for (d, n) in t.drops.iter_mut().zip(l.drops) {
                *d += n;
            }
            t.subscriptions += l.subscriptions;
        }
        t
    }

    /// Retained messages (the largest replica: shards converge on the same
    /// set).
    pub fn retained(&self) -> u64 {
        self.shards()
            .iter()
            .map(|s| s.retained())
            .max()
            .unwrap_or(0)
    }

    /// Every shard's status snapshot, concatenated.
    pub fn status(&self) -> Vec<ClientStatus> {
        self.shards().iter().flat_map(|s| s.status()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_kinds_have_names_and_slots() {
        assert_eq!(MqttDrop::COUNT, 18);
        assert_eq!(MqttDrop::ALL[3].as_str(), "not_authorized");
        assert_eq!(MqttDrop::MeshFull.engine_reason(), DropReason::MeshFull);
        for (i, k) in MqttDrop::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }

    #[test]
    fn shards_sum() {
        let stats = MqttStats::default();
        let a = stats.slot(1);
        let b = stats.slot(0);
        let (a3, a0, b3) = (a.listener_slot(3), a.listener_slot(0), b.listener_slot(3));
        a3.msg_in(1);
        a0.msg_in(1);
        b3.msg_in(1);
        b3.msg_out(7);
        a.listener_slot(NO_LISTENER).dropped(MqttDrop::Expired);
        a3.attached();
        b3.attached();
        b3.subscribed(4);
        b3.unsubscribed(1);
        assert_eq!(stats.shards().len(), 2);
        assert_eq!(stats.total(|s| s.messages_in(1)), 3);
        assert_eq!(stats.total(|s| s.messages_out(2)), 1);
        assert_eq!(stats.total(|s| s.drops(MqttDrop::Expired)), 1);
        assert!(Arc::ptr_eq(&stats.slot(1), &a));
        assert!(Arc::ptr_eq(&a.listener_slot(3), &a3));
        // Per listener, summed over shards.
        let l3 = stats.listener(3);
        assert_eq!(l3.messages_in, [0, 2, 0]);
        assert_eq!(l3.messages_out, [0, 0, 1]);
        assert_eq!((l3.connected, l3.subscriptions), (2, 3));
        assert_eq!(l3.drops(MqttDrop::Expired), 0);
        assert_eq!(stats.listener(0).messages_in, [0, 1, 0]);
        assert_eq!(stats.listener(1), ListenerTotals::default());
        assert_eq!(stats.listener(NO_LISTENER).drops(MqttDrop::Expired), 1);
    }
}
