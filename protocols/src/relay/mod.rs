//! Topic publish/subscribe fanned out across shards.
//!
//! Services connect over TCP, subscribe to topics and publish; devices publish
//! over UDP, one datagram per message. A message published on any shard
//! reaches every subscriber of its topic on every shard exactly once, in
//! publish order per publisher.
//!
//! Three layers:
//!
//! * [`wire`]: the frames, a zero-copy [`Packet`] view and a borrowed
//!   [`Repr`]; one 6-byte header (type, topic length, payload length) for
//!   every frame in both directions.
//! * [`Subscriptions`]: which connection of this shard holds which topic,
//!   plus each subscriber's lag count.
//! * [`Relay`], the plugin: a `PUBLISH` is delivered to this shard's
//!   subscribers and the encoded frame (one shared [`Bytes`]) is sent to the
//!   relay instance of every other shard, which delivers it to its own. A
//!   subscriber whose outbound queue is full misses messages and is told how
//!   many with a `LAGGED` frame once it has room again.
//!
//! The full specification is `docs/protocols/relay.md`.
//!
//! [`Bytes`]: ringport_plugin::Bytes

mod plugin;
mod table;
pub mod wire;

pub use plugin::{
    Relay, RelayConfig, RelayFactory, BRIDGE_SHARD, MESH_TAG_IMPORTED, MESH_TAG_MISSED,
    MESH_TAG_MISSED_ANY, MESH_TAG_PUBLISH, MISSED_TOPICS, RETRY_TIMER,
};
pub use table::{SubscribeError, Subscriber, Subscriptions};
pub use wire::{FrameType, Packet, Repr, DEFAULT_MAX_PAYLOAD, HEADER_LEN, MAX_TOPIC};
