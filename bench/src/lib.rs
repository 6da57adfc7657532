//! ringport-bench: the load generator and benchmark harness.
//!
//! # Layers
//!
//! * [`wire`] makes the messages (sockperf frames whose payload is a function
//!   of the sequence number) and checks replies byte for byte.
//! * [`latency`] holds the pure bookkeeping: latency histograms with and
//!   without coordinated-omission correction, the open-loop pacer, and the
//!   per-socket sequence window that counts loss, duplicates and reordering.
//! * [`fanout`] holds the pure parts of relay-fanout: the publish payload,
//!   the subscriber's frame checks and per-publisher sequence tracking.
//! * [`client`] is the load generator: pinned io_uring threads driving many
//!   connections each.
//! * [`servers`] starts the targets: the in-process ringport engine, the
//!   tokio and epoll baselines, the real `sockperf server`, or nothing for an
//!   external `ADDR:PORT`.
//! * [`cli`] reads the command line into a plan; [`runner`] runs it.
//! * [`run`] runs one scenario against one target and turns counts into
//!   figures; [`report`] aggregates rounds, prints the table and writes JSON.
//! * [`tls`] makes the TLS scenarios' certificates and client settings.
//! * [`mqtt`] runs the MQTT scenarios (its own client threads and figures).
//! * [`plot`] draws the report as SVG (`--svg`), [`progress`] shows a
//!   once-a-second progress line on a terminal.
//! * [`cpu`] reads per-thread and per-process CPU time from `/proc`.
#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod config;
pub mod cpu;
pub mod fanout;
pub mod latency;
pub mod mqtt;
pub mod plot;
pub mod progress;
pub mod report;
pub mod run;
pub mod runner;
pub mod servers;
pub mod tls;
pub mod wire;
