//! The MQTT broker plugin: sessions, the QoS flows, keep-alive, wills,
//! retained messages, shared subscriptions and routing between shards.
//!
//! One [`Mqtt`] instance runs per shard, made by [`MqttFactory`]. Layers,
//! each in its own file:
//!
//! * `conn`: bytes in, packets out; DISCONNECT, PINGREQ, closes.
//! * `connect`: CONNECT (id rules, authentication, will) and the event hook.
//! * `pubsub`: a client's PUBLISH (topic aliases, ACL, exactly-once by
//!   packet id, its acknowledgement once the mesh took the message), the
//!   acknowledgements of messages sent to it, SUBSCRIBE and UNSUBSCRIBE.
//! * `deliver`: routing a publication (this shard, every other shard,
//!   retained replicas), matching, and the delivery to each session through
//!   its window (Receive Maximum) and its bounded queue.
//! * `handover`: a client id's home shard, session take-over and hand-over
//!   between shards, session expiry, wills (with delay).
//! * `ids`: the client ids a shard knows, as their home (the directory)
//!   and as the holder of their sessions, in one map.
//! * `route`: the mesh tags and the ordered per-shard queues for full rings.
//! * `session`, `message`: the state kept per client id, and the encoding
//!   of messages and sessions between shards.
//! * [`config`](MqttConfig) and [`stats`](MqttStats): settings and counters.
//! * `snapshot`: persistence ([`MqttFactory::snapshot`],
//!   [`MqttFactory::restore`]).
//!
//! # Routing
//!
//! A PUBLISH is delivered to this shard's subscribers and sent once to
//! every other shard, which delivers it to its own: every shard's table
//! holds the plain subscriptions of the sessions it holds. A shared
//! subscription group lives on its home shard (`shard_for_key` of the
//! `$share/...` filter), which picks one member per message and forwards it
//! to the member's shard. Messages to one shard keep their order (one FIFO
//! per target behind a full ring), so a subscriber gets each publisher's
//! messages in order. Every shard keeps a replica of the retained messages;
//! a retained publication goes through its topic's home shard, which
//! passes it on to the others, so replicas agree.
//!
//! # Sessions
//!
//! A client id's home shard (`shard_for_key(client_id)`) knows which shard
//! holds its session; a CONNECT anywhere claims the id there, and the
//! session (subscriptions, messages in flight and queued, QoS 2 ids) moves
//! to the connecting shard. A live connection of the id is closed (v5:
//! DISCONNECT 0x8E).
//!
//! # Public surface
//!
//! [`MqttFactory::new`] with an [`MqttConfig`]; [`MqttFactory::stats`] and
//! [`MqttFactory::status`] for `/metrics` and `/status`;
//! [`MqttFactory::snapshot`] and [`MqttFactory::restore`] for persistence;
//! [`MqttEvents`] for the handshake log and denials.

mod bridge;
mod config;
mod conn;
mod connect;
mod deliver;
mod handover;
mod ids;
mod message;
mod plugin;
mod pubsub;
mod route;
mod session;
mod snapshot;
mod stats;

pub use bridge::BRIDGE_SHARD;
pub use config::{
    reason_name, ClientDropsEvent, ConnectEvent, DeniedEvent, MqttConfig, MqttEvents,
};
pub use plugin::{Mqtt, MqttFactory, RETRY_TIMER, TICK, TICK_TIMER};
pub use route::{
    TAG_CLAIM, TAG_GONE, TAG_IMPORTED, TAG_PUBLISH, TAG_RETAIN, TAG_SHARE_DELIVER, TAG_SHARE_JOIN,
    TAG_SHARE_LEAVE, TAG_STATE, TAG_TAKEOVER,
};
pub use stats::{
    ClientStatus, ListenerStats, ListenerTotals, MqttDrop, MqttStats, ShardStats, NO_LISTENER,
};

#[cfg(test)]
mod tests;
