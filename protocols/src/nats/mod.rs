//! A NATS client, sans-IO: the protocol a NATS bridge speaks to join the
//! relay and MQTT topics of many ringport instances through a NATS cluster
//! (docs/protocols/nats.md; why not a client crate: docs/design-notes.md).
//!
//! Layers, bottom up:
//!
//! * [`wire`]: the client protocol's operations, parsed from a zero-copy
//!   view of the received bytes ([`wire::parse_server_op`]) and written into
//!   a buffer (`encode_*`), with [`headers`] for the `NATS/1.0` block of
//!   `HPUB`/`HMSG` and [`info`] for the JSON of `INFO` and `CONNECT`;
//! * [`nkey`]: NKey seeds decoded and nonces signed (ed25519, aws-lc-rs);
//! * [`servers`]: `nats://` URLs and the round robin over them and the
//!   servers a cluster announces;
//! * [`client`]: [`NatsClient`], one connection at a time: the handshake,
//!   keep-alive, subscriptions replayed on reconnect, a bounded buffer of
//!   publishes, counters. It reads no clock and opens no socket: the caller
//!   passes bytes and `Instant`s in and takes bytes and [`Event`]s out
//!   ([`event`]), set up by a [`NatsConfig`] ([`config`]);
//! * [`subject`]: the fixed, reversible mapping between MQTT (and relay)
//!   topics and NATS subjects.
//!
//! Above them, [`bridge`] runs a client for one pub/sub plugin over an
//! engine stream, [`routes`] narrows a bridge per listener (export and
//! import filters and counters of each listener), and [`set`] runs one
//! bridge per distinct login and buffer of a plugin's listeners.
//!
//! Allocation: parsing borrows the received bytes; a received message is
//! handed over owned ([`Message`]: its subject, reply, headers and payload
//! copied once); a publish while connected is written straight into the
//! transmit buffer, one while disconnected is kept as its own encoded frame.

pub mod bridge;
pub mod client;
pub mod config;
pub mod event;
pub mod headers;
pub mod info;
pub mod nkey;
pub mod routes;
pub mod servers;
pub mod set;
pub mod subject;
pub mod wire;

pub use bridge::{Bridge, BridgeError, BridgeSettings, BridgeStats, Import};
pub use client::{NatsClient, State};
pub use config::{Auth, ConfigError, NatsConfig};
pub use event::{
    DisconnectReason, Event, Message, NatsStats, PublishError, ServerError, ServerErrorKind,
};
pub use headers::{HeaderError, Headers, ORIGIN_HEADER};
pub use info::{Connect, ServerInfo};
pub use nkey::{NKey, NKeyError};
pub use routes::{ImportScope, ListenerBridgeStats, ListenerRoute};
pub use servers::{ServerAddr, ServerList, UrlError};
pub use set::{BridgeSet, Bridges};
pub use subject::{FilterSubjects, MapError, SubjectMap};
pub use wire::{Limits, SubjectError, WireError};

#[cfg(test)]
mod tests;
