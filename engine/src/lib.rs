//! The ringport engine.
//!
//! # Layers
//!
//! A [`Plan`](plan::Plan) says which shard (thread, CPU) serves which ports of
//! which listener. [`EngineHandle::start`] binds those ports, starts one pinned
//! thread per shard and returns when all serve. Each shard owns one io_uring
//! (SINGLE_ISSUER, DEFER_TASKRUN, COOP_TASKRUN where the kernel has them), two
//! provided-buffer rings (TCP and UDP receives), a connection table, a pool of
//! datagram sends and one instance of every plugin it serves. A shard's loop
//! reaps completions in batches, feeds plugins through the
//! [`Context`](ringport_plugin::Context) it implements, flushes queued bytes as
//! sends and parks in one `submit_and_wait`.
//!
//! Modules below `sys` are the only code that talks to the kernel.
#![warn(missing_docs)]

pub mod alerts;
mod backend;
pub mod clock;
pub mod config;
mod conn;
pub mod cpus;
mod engine;
/// The fuzzing entry point (`fuzz/`); not public API.
#[doc(hidden)]
pub mod fuzzing;
pub mod guard;
pub mod latency;
pub mod limits;
pub mod listener_stats;
pub mod log;
pub mod mesh;
pub mod operations;
mod ops;
pub mod outbound;
pub mod plan;
pub mod policy;
pub mod preflight;
mod shard;
pub mod spec;
pub mod spsc;
pub mod stats;
pub mod sys;
pub mod tls;
mod udp;

pub use config::{BackendChoice, BackendKind, EngineConfig, MeshWake, UdpDropCounter};
pub use engine::{EngineHandle, StartError, Stopper, FDS_PER_SHARD};
pub use stats::{Counters, EngineDrop, ShardStats};
