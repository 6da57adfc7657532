//! MQTT 3.1.1 and 5.0 as a broker plugin (`mqtt@tcp:...`, `mqtt@tls:...`).
//!
//! Layers, each in its own module:
//!
//! * [`codec`]: the packets of both protocol versions, decoded as borrowed
//!   views of the received bytes and encoded into caller buffers;
//! * [`topic`] and [`trie`]: topic names and filters, the subscription table
//!   (matching cost independent of how many filters are held) and the
//!   retained-message store;
//! * [`acl`] and [`auth`]: who may connect, publish and subscribe;
//! * [`broker`]: sessions, the QoS flows, keep-alive, wills, and routing
//!   between shards through the mesh: the plugin itself.
#![allow(missing_docs)]

pub mod acl;
pub mod auth;
pub mod broker;
pub mod codec;
pub mod persist;
pub mod topic;
pub mod trie;
