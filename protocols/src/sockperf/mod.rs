//! The reflection protocol of the `sockperf` latency tool.
//!
//! A sockperf client sends messages that start with a 14-byte header
//! (sequence number, flags, total length; see [`wire`]). A message whose flags
//! carry both [`Flags::CLIENT`] and [`Flags::PONG_REQUEST`], and not
//! [`Flags::WARMUP`], is sent back byte for byte with `CLIENT` cleared; every
//! other message is consumed silently. This matches the `sockperf server`
//! rules, so the real `sockperf ping-pong` / `under-load` clients work against
//! ringport.
//!
//! * Over TCP, frames are delimited by the length field: a chunk may carry
//!   many frames and a frame may be split anywhere. A length below 14 or above
//!   the configured maximum closes the stream ([`DropReason::FrameTooShort`],
//!   [`DropReason::FrameTooLong`]) as soon as the header is in.
//! * Over UDP, one datagram is one message. A datagram shorter than a header,
//!   or whose length field differs from its actual length, is dropped as
//!   [`DropReason::Malformed`]; bad lengths as over TCP.
//!
//! The full specification is `docs/protocols/sockperf.md`.
//!
//! [`DropReason::FrameTooShort`]: ringport_plugin::DropReason::FrameTooShort
//! [`DropReason::FrameTooLong`]: ringport_plugin::DropReason::FrameTooLong
//! [`DropReason::Malformed`]: ringport_plugin::DropReason::Malformed

mod plugin;
pub mod wire;

pub use plugin::{Sockperf, SockperfFactory};
pub use wire::{Flags, Packet, Repr, DEFAULT_MAX_FRAME, HEADER_LEN};
