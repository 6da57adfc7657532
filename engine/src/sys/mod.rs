//! Everything that talks to the kernel lives below here.
//!
//! - `uring`: the io_uring backend (ring setup with the flags the kernel
//!   accepts and the diagnostics when it cannot, provided buffer rings,
//!   multishot operations, MSG_RING, the multishot recvmsg layout);
//! - `epoll`: the epoll backend, for where io_uring is not allowed;
//! - `socket`: listening sockets; `addr`: socket addresses.
//!
//! Both backends implement the engine's `Backend` interface; the shard above
//! them sees only neutral events and actions.

pub mod addr;
pub mod epoll;
pub mod socket;
pub mod uring;

pub use uring::{bufring, ring};
