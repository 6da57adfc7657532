//! The driver boundary: everything that talks to the kernel lives below here.
//!
//! `ring` sets up an io_uring (with the flags the kernel accepts) and explains
//! why when it cannot; `bufring` owns a provided-buffer ring; `socket` makes
//! listening sockets; `addr` converts socket addresses.

pub mod addr;
pub mod bufring;
pub mod ring;
pub mod socket;
