//! The backend boundary: how a shard does its I/O.
//!
//! A shard's loop, its plugins, guard, mesh, timers and stats speak in
//! neutral terms: they *ask* a [`Backend`] to arm an accept or a receive,
//! connect a stream, pause a receive, send a stream's bytes or a datagram,
//! close a socket, arm a timer, wake a peer shard and wait; and they *hear*
//! back [`Event`]s (accepted, connected, bytes received, bytes sent,
//! datagram received, datagram sent).
//! Received bytes stay in the backend's [`Buffers`] until the shard hands the
//! buffer back.
//!
//! Two backends implement it:
//!
//! - `sys::uring`: one io_uring per shard, multishot accept and receives into
//!   provided buffer rings, MSG_RING wake-ups, a registered ring fd;
//! - `sys::epoll`: readiness with epoll, `accept4`/`recv` per ready socket,
//!   `recvmmsg`/`sendmmsg` for datagrams, eventfd wake-ups, for where
//!   io_uring is not allowed (a container's seccomp profile,
//!   `kernel.io_uring_disabled`).
//!
//! Dispatch is static: the shard is generic over its backend, so a call to
//! the backend is a direct (inlinable) call, never a virtual one per event.
//!
//! # The contract, in the shard's words
//!
//! - An armed accept or receive keeps producing events (`more: true`) until
//!   an event with `more: false` says it ended (cancelled, end of stream, an
//!   error, or the backend needing a re-arm); the shard re-arms if it still
//!   wants it.
//! - A send's bytes belong to the backend from [`Backend::send`] until its
//!   [`Event::Sent`]: the shard does not move or free them.
//! - A received buffer belongs to the shard from its event until it gives it
//!   back with [`Buffers::recycle_tcp`] / [`Buffers::recycle_udp`].
//! - A connect ends with exactly one [`Event::Connected`], also when the
//!   shard cancels it (its connect timeout, a close, the shutdown); a
//!   failure known at once is reported as an event too, never by return.
//!   The shard asks for no receive or send on the stream before it.

use std::time::Instant;

use crate::shard::ShardShared;
use crate::stats::SharedStats;

/// Why a receive produced no bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvResult {
    /// `len` bytes in buffer `buf`.
    Data {
        /// The buffer (give it back when done).
        buf: u16,
        /// How many bytes it holds.
        len: u32,
    },
    /// The peer closed its sending side.
    Eof,
    /// No receive buffer was free (the shard's buffers ran dry).
    NoBuffers,
    /// The shard cancelled the receive (pause or teardown).
    Cancelled,
    /// Any other error (the errno).
    Error(i32),
}

/// Something a backend reports to its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A connection on listener slot `listener` (`Ok(fd)`), or an accept error.
    Accept {
        /// The listener's slot in the shard.
        listener: u32,
        /// The accepted socket, or the errno (ECANCELED once the shard stopped it).
        result: Result<i32, i32>,
        /// The accept stays armed.
        more: bool,
    },
    /// A stream's receive.
    Recv {
        /// Connection slot.
        conn: u32,
        /// Its generation.
        generation: u32,
        /// What came.
        result: RecvResult,
        /// The receive stays armed.
        more: bool,
    },
    /// A stream's connect ended: `Ok` once connected, else the errno
    /// (ECANCELED when the shard cancelled it first).
    Connected {
        /// Connection slot.
        conn: u32,
        /// Its generation.
        generation: u32,
        /// Connected, or why not.
        result: Result<(), i32>,
    },
    /// A stream's send completed: bytes taken, or the negative errno.
    Sent {
        /// Connection slot.
        conn: u32,
        /// Its generation.
        generation: u32,
        /// Bytes the kernel took, or `-errno`.
        res: i32,
    },
    /// A datagram socket's receive.
    Datagram {
        /// The socket's slot in the shard.
        socket: u32,
        /// What came (bytes in a UDP buffer: see [`Buffers::datagram`]).
        result: RecvResult,
        /// The receive stays armed.
        more: bool,
    },
    /// A datagram send completed.
    DatagramSent {
        /// The send slot (see `udp::SendPool`).
        slot: u32,
        /// The listener of the socket it went out on.
        listener: u16,
        /// Bytes sent, or `-errno`.
        res: i32,
    },
    /// A wake-up of another shard failed; wake it another way.
    WakeFailed {
        /// That shard.
        shard: u32,
    },
}

/// One received datagram, as the shard reads it out of a UDP buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Received<'a> {
    /// The source address, as the kernel wrote it (`sockaddr_in` or `_in6`).
    pub name: &'a [u8],
    /// Control messages (SO_RXQ_OVFL, when asked for).
    pub control: &'a [u8],
    /// The datagram's bytes, as many as the buffer held.
    pub payload: &'a [u8],
    /// The datagram was longer than the buffer: `payload` is cut.
    pub truncated: bool,
}

/// The receive buffers of a shard. Kept apart from the backend's
/// submission side so that a plugin can read a buffer while it uses the
/// shard's context (which submits).
pub trait Buffers {
    /// The bytes of a received stream buffer.
    fn tcp(&self, buf: u16, len: usize) -> &[u8];
    /// The same, writable (TLS records are decrypted in place).
    fn tcp_mut(&mut self, buf: u16, len: usize) -> &mut [u8];
    /// Gives a stream buffer back.
    fn recycle_tcp(&mut self, buf: u16);
    /// A receive found no stream buffer free.
    fn tcp_ran_dry(&mut self);
    /// A received datagram, or `None` if the buffer cannot hold one.
    fn datagram(&self, buf: u16, len: usize) -> Option<Received<'_>>;
    /// Gives a datagram buffer back.
    fn recycle_udp(&mut self, buf: u16);
    /// A receive found no datagram buffer free.
    fn udp_ran_dry(&mut self);
    /// End of a loop turn: make given-back buffers available again.
    fn refill(&mut self);
}

/// A shard's I/O (see the module docs). Methods that take a socket take its
/// fd and the shard's slot for it; the backend reports events by slot.
pub trait Backend {
    /// The receive buffers that go with it.
    type Buffers: Buffers;

    /// The backend's name, as `/metrics` and `/status` show it.
    fn name(&self) -> &'static str;

    /// Takes in everything that is ready (without waiting) and returns how
    /// many entries [`Backend::event`] may now be asked for. Completions the
    /// kernel could not post are counted in `stats`.
    fn reap(&mut self, bufs: &mut Self::Buffers, stats: &SharedStats) -> usize;

    /// Entry `i` (below what the last [`Backend::reap`] returned) as an
    /// event for the shard; `None` when the backend handled it itself (its
    /// wake-up, its timer). Decoded one at a time, as the shard dispatches,
    /// so that no batch of events is built and read back.
    fn event(&mut self, i: usize, bufs: &mut Self::Buffers) -> Option<Event>;

    /// Submits what was asked this turn and blocks until an event is ready,
    /// or until `deadline`. `block: false` submits without waiting.
    fn wait(&mut self, block: bool, deadline: Option<Instant>);

    /// Whether a wake-up is already armed for `at` or earlier (so the shard
    /// need not look at the clock for it).
    fn timer_armed_by(&self, at: Instant) -> bool;

    /// Starts accepting on a listener.
    fn arm_accept(&mut self, listener: u32, fd: i32);
    /// Stops accepting on a listener (its accept ends with ECANCELED).
    fn stop_accept(&mut self, listener: u32, fd: i32);
    /// Connects stream `conn`'s socket (a fresh TCP socket of `addr`'s
    /// family, blocking mode as created) to `addr`; one
    /// [`Event::Connected`] ends it.
    fn connect(&mut self, conn: u32, generation: u32, fd: i32, addr: std::net::SocketAddr);
    /// Cancels a connect still in progress; its [`Event::Connected`] still
    /// comes (ECANCELED, or what the kernel had already decided).
    fn cancel_connect(&mut self, conn: u32, generation: u32, fd: i32);
    /// Starts receiving on a stream.
    fn arm_recv(&mut self, conn: u32, generation: u32, fd: i32);
    /// Stops receiving on a stream (its receive ends with `Cancelled`).
    fn pause_recv(&mut self, conn: u32, generation: u32, fd: i32);
    /// Sends `len` bytes at `data` on a stream; one send per stream at a time.
    ///
    /// # Safety
    ///
    /// `data..data + len` must stay valid and unchanged until the
    /// stream's [`Event::Sent`].
    unsafe fn send(&mut self, conn: u32, generation: u32, fd: i32, data: *const u8, len: usize);
    /// Closes stream `conn`'s socket once its operations have all completed.
    fn close_stream(&mut self, conn: u32, fd: i32);
    /// Starts receiving datagrams on a socket.
    fn arm_udp(&mut self, socket: u32, fd: i32);
    /// Stops receiving datagrams on a socket.
    fn stop_udp(&mut self, socket: u32, fd: i32);
    /// Sends the datagram prepared in send slot `slot` on socket slot `socket`.
    ///
    /// # Safety
    ///
    /// `hdr` (and everything it points to) must stay valid and unchanged
    /// until the slot's [`Event::DatagramSent`].
    unsafe fn send_datagram(
        &mut self,
        socket: u32,
        fd: i32,
        slot: u32,
        listener: u16,
        hdr: *const libc::msghdr,
    );
    /// Wakes shard `to`, parked in its own wait.
    fn wake_peer(&mut self, to: usize, peer: &ShardShared);
    /// Cancels everything in flight (shutdown); events follow.
    fn cancel_all(&mut self);
    /// Submits what is queued and waits a little (about 10 ms) for events,
    /// arming nothing of its own (the shutdown's drain).
    fn wait_briefly(&mut self);
    /// Operations whose last event has not come yet.
    fn in_flight(&self) -> usize;
    /// Ends the backend (unregisters what was registered).
    fn finish(&mut self);
}
