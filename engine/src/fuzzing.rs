//! The fuzzing entry point: what the targets in `fuzz/` need that is not
//! part of the engine's public API (the TLS record layer and session, the
//! UDP receive layouts and control-message walkers), re-exported as they
//! are. Hidden from the docs and not stable: nothing outside `fuzz/` should
//! use it.

pub use crate::backend::Received;
pub use crate::sys::epoll::fuzz_gro_size as gro_size;
pub use crate::sys::uring::recvmsg::{parse as parse_recvmsg, RECV_HEADROOM};
pub use crate::tls::record::{
    ContentType, Framing, RecordError, RecordLayer, HANDSHAKE_RECORD, HEADER, MAX_PLAINTEXT, TAG,
};
pub use crate::tls::session::{HandshakeFailure, Progress, Session};
pub use crate::udp::{rxq_ovfl, CONTROL_LEN, NAME_LEN};
