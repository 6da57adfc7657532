//! The shard's connection table: a slab of reusable slots with generations.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use ringport_plugin::{CloseReason, ConnId};

use crate::ops;
use crate::tls::session::Session;

/// Buffers larger than this are freed rather than kept for reuse, so one
/// burst does not pin memory forever.
pub const KEEP_CAPACITY: usize = 64 * 1024;

const UNSPECIFIED: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// What only a stream a plugin opened needs: boxed, since most streams are
/// accepted ones and would otherwise carry it inline.
#[derive(Debug)]
pub struct Outbound {
    /// The plugin's tag of its connect request.
    pub connect_tag: u64,
    /// The local address, once the socket connected.
    pub local: SocketAddr,
    /// An outbound TLS stream's client configuration and server name, until
    /// its socket connects and the handshake starts.
    pub tls_client: Option<(
        std::sync::Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// Plaintext an outbound TLS stream's plugin wrote before the
    /// handshake ended; sealed and queued once it has.
    pub early_plain: Vec<u8>,
}

/// One stream and its in-flight state.
///
/// Kept small: the table holds one per stream, live or idle, so every byte
/// here is a byte per idle connection (`tests::a_slot_stays_small`). What
/// few streams need is boxed (`out`, `tls`), the local address of an
/// accepted stream is its listener socket's (`sock`), and times and totals
/// live in the guard.
#[derive(Debug)]
pub struct Conn {
    /// The socket: owned by the slot until `take`n for the backend's
    /// asynchronous close (freeing the slot with it still here closes it).
    pub fd: Option<OwnedFd>,
    /// The slot's generation (moves on when the slot is freed).
    generation: u32,
    /// Which plugin instance serves it.
    pub plugin: u16,
    /// Which listener accepted it (`ListenerId::OUTBOUND`'s number for a
    /// stream a plugin opened).
    pub listener: u16,
    /// The listener socket that accepted it (its index in the shard's
    /// listener sockets), whose address is the stream's local address.
    pub sock: u32,
    /// The remote address.
    pub peer: SocketAddr,
    /// A stream a plugin opened with `Context::connect`: its connect's
    /// state (`None` for an accepted stream).
    pub out: Option<Box<Outbound>>,
    /// A `tls` listener's stream: its handshake, then its records.
    pub tls: Option<Box<Session>>,
    /// Close once everything queued is sent, with this reason.
    pub close_after_flush: Option<CloseReason>,
    /// Bytes the plugin has not consumed yet, in arrival order.
    pub rx_pending: Vec<u8>,
    /// Bytes queued by the plugin, not yet handed to the kernel.
    pub tx_pending: Vec<u8>,
    /// Bytes handed to the kernel; must not move until the send completes.
    pub tx_inflight: Vec<u8>,
    /// How much of `tx_inflight` the kernel has taken (a queue is at most
    /// `max_outbound`, itself at most 1 GiB, plus TLS framing).
    pub tx_off: u32,
    /// Its queued bytes as counted in the shard's outbound budget.
    pub accounted: u32,
    /// The slot holds a stream.
    live: bool,
    /// The plugin accepted it, or heard it connect (so `handle_close` is owed).
    pub accepted: bool,
    /// Its connect is with the backend (its `Event::Connected` not yet
    /// come): no receive or send before it, no freeing the slot.
    pub connecting: bool,
    /// An outbound stream the plugin has not heard `handle_connected` for
    /// yet (connecting, or in its TLS handshake): a close fails the
    /// connect instead of calling `handle_close`.
    pub opening: bool,
    /// The guard opened it (so its close line is owed).
    pub guarded: bool,
    /// A plaintext stream's first bytes were checked for a TLS ClientHello.
    pub first_checked: bool,
    /// A multishot receive is armed.
    pub recv_armed: bool,
    /// A send is in flight (`tx_inflight[tx_off..]` belongs to the kernel).
    pub send_inflight: bool,
    /// The peer sent FIN.
    pub read_closed: bool,
    /// Reading paused for backpressure.
    pub paused: bool,
    /// Teardown started: no more plugin calls, waiting for in-flight ops.
    pub closing: bool,
    /// Listed in the shard's dirty list.
    pub dirty: bool,
    /// Evicted for the outbound budget: its queue is dropped, it closes.
    pub evicted: bool,
    /// A write was refused for the stream's cap: the plugin hears
    /// `handle_writable` once the queue is down to half of it.
    pub want_writable: bool,
}

impl Conn {
    fn empty() -> Conn {
        Conn {
            fd: None,
            generation: 0,
            plugin: 0,
            listener: 0,
            sock: 0,
            peer: UNSPECIFIED,
            out: None,
            tls: None,
            close_after_flush: None,
            rx_pending: Vec::new(),
            tx_pending: Vec::new(),
            tx_inflight: Vec::new(),
            tx_off: 0,
            accounted: 0,
            live: false,
            accepted: false,
            connecting: false,
            opening: false,
            guarded: false,
            first_checked: false,
            recv_armed: false,
            send_inflight: false,
            read_closed: false,
            paused: false,
            closing: false,
            dirty: false,
            evicted: false,
            want_writable: false,
        }
    }

    /// The socket's descriptor number (-1 once handed to its close).
    #[inline]
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// The plugin's tag of an outbound stream's connect request (0 for an
    /// accepted stream).
    #[inline]
    pub fn connect_tag(&self) -> u64 {
        self.out.as_ref().map_or(0, |o| o.connect_tag)
    }

    /// Plaintext held for an outbound TLS stream's handshake.
    #[inline]
    pub fn early_plain_len(&self) -> usize {
        self.out.as_ref().map_or(0, |o| o.early_plain.len())
    }

    /// Outbound bytes queued or in flight.
    #[inline]
    pub fn tx_len(&self) -> usize {
        self.tx_pending.len() + self.tx_inflight.len() - self.tx_off as usize
    }

    /// What the outbound budget should count for it: nothing once it is
    /// closing (whatever is left is abandoned and freed within a turn).
    #[inline]
    pub fn budgeted(&self) -> usize {
        if self.closing || self.evicted {
            0
        } else {
            self.tx_len()
        }
    }

    /// Resets it for the slot's next stream; its buffers go to `spare`.
    fn reset(&mut self, spare: &mut Spare) {
        self.fd = None;
        self.sock = 0;
        self.peer = UNSPECIFIED;
        self.out = None;
        self.tls = None;
        self.close_after_flush = None;
        self.tx_off = 0;
        self.accounted = 0;
        self.accepted = false;
        self.connecting = false;
        self.opening = false;
        self.guarded = false;
        self.first_checked = false;
        self.recv_armed = false;
        self.send_inflight = false;
        self.read_closed = false;
        self.paused = false;
        self.closing = false;
        self.dirty = false;
        self.evicted = false;
        self.want_writable = false;
        for v in [
            &mut self.rx_pending,
            &mut self.tx_pending,
            &mut self.tx_inflight,
        ] {
            spare.put(std::mem::take(v));
        }
    }
}

/// Empty buffers of freed slots, kept for new streams' queues: a freed slot
/// holds no buffer (a shard whose streams came and went does not keep one
/// per slot), and a new stream's first write does not allocate. At most
/// [`Spare::MAX`] buffers of at most [`KEEP_CAPACITY`] bytes each are kept;
/// others are freed.
///
/// A live stream keeps its buffers while it is open: handing them back
/// whenever a queue drains, so that an idle stream held none, cost 5% more
/// instructions per message in a TCP ping-pong (BENCHMARKS.md, "Engine
/// memory per idle stream").
#[derive(Debug, Default)]
pub struct Spare {
    bufs: Vec<Vec<u8>>,
}

impl Spare {
    /// How many empty buffers a shard keeps at most.
    pub const MAX: usize = 64;

    /// Keeps `v`'s allocation (emptied) for a later [`fill`](Self::fill),
    /// or frees it when the pool is full or `v` is larger than
    /// [`KEEP_CAPACITY`].
    #[inline(always)]
    pub fn put(&mut self, mut v: Vec<u8>) {
        let cap = v.capacity();
        if cap == 0 || cap > KEEP_CAPACITY || self.bufs.len() >= Self::MAX {
            return;
        }
        v.clear();
        self.bufs.push(v);
    }

    /// Gives `v` a kept allocation if it has none.
    #[inline(always)]
    pub fn fill(&mut self, v: &mut Vec<u8>) {
        if v.capacity() == 0 {
            if let Some(b) = self.bufs.pop() {
                *v = b;
            }
        }
    }

    /// Buffers kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bufs.len()
    }

    /// Whether none is kept.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }
}

type Slot = Conn;

/// `size_of::<Slot>()` on 64-bit targets, pinned by a test.
#[cfg(test)]
const SLOT_SIZE: usize = 168;

/// A slab of connections addressed by (index, generation).
pub struct Conns {
    slots: Vec<Slot>,
    /// Empty buffers for streams' queues (see [`Spare`]).
    pub spare: Spare,
    free: Vec<u32>,
    live: usize,
    limit: usize,
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns")
            .field("live", &self.live)
            .field("limit", &self.limit)
            .finish()
    }
}

impl Conns {
    /// A table that holds at most `limit` live connections.
    pub fn new(limit: usize) -> Conns {
        Conns {
            slots: Vec::new(),
            spare: Spare::default(),
            free: Vec::new(),
            live: 0,
            limit,
        }
    }

    /// Takes a slot for `fd`; `None` when the table is full.
    pub fn insert(&mut self, fd: OwnedFd, plugin: u16, listener: u16) -> Option<(u32, u32)> {
        if self.live >= self.limit {
            return None;
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Conn::empty());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[idx as usize];
        slot.live = true;
        slot.fd = Some(fd);
        slot.plugin = plugin;
        slot.listener = listener;
        self.live += 1;
        Some((idx, slot.generation))
    }

    /// The live connection at `idx` if its generation matches, to read.
    #[inline]
    pub fn get(&self, idx: u32, generation: u32) -> Option<&Conn> {
        match self.slots.get(idx as usize) {
            Some(s) if s.live && s.generation == generation => Some(s),
            _ => None,
        }
    }

    /// The live connection at `idx` if its generation matches.
    #[inline]
    pub fn get_mut(&mut self, idx: u32, generation: u32) -> Option<&mut Conn> {
        match self.slots.get_mut(idx as usize) {
            Some(s) if s.live && s.generation == generation => Some(s),
            _ => None,
        }
    }

    /// The live connection at `idx`, whatever its generation (for the dirty list).
    #[inline]
    pub fn at_mut(&mut self, idx: u32) -> Option<(&mut Conn, u32)> {
        match self.slots.get_mut(idx as usize) {
            Some(s) if s.live => {
                let generation = s.generation;
                Some((s, generation))
            }
            _ => None,
        }
    }

    /// Frees a slot: its generation moves on, so stale ids and completions miss.
    pub fn remove(&mut self, idx: u32) {
        if let Some(s) = self.slots.get_mut(idx as usize) {
            if s.live {
                s.live = false;
                s.generation = ops::next_generation(s.generation);
                s.reset(&mut self.spare);
                self.free.push(idx);
                self.live -= 1;
            }
        }
    }

    /// The live stream with the most bytes queued for its peer (the
    /// slowest reader), not counting closing ones. A scan of the table:
    /// it runs only when the outbound budget is spent, and each call frees
    /// the largest queue there is.
    pub fn largest_queue(&self) -> Option<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live && s.budgeted() > 0)
            .max_by_key(|(_, s)| s.budgeted())
            .map(|(i, _)| i as u32)
    }

    /// The live connection at `idx` if its generation matches, with the
    /// table's spare buffers.
    #[inline]
    pub fn get_mut_and_spare(
        &mut self,
        idx: u32,
        generation: u32,
    ) -> Option<(&mut Conn, &mut Spare)> {
        match self.slots.get_mut(idx as usize) {
            Some(s) if s.live && s.generation == generation => Some((s, &mut self.spare)),
            _ => None,
        }
    }

    /// Indices of every live slot.
    pub fn live_indices(&self) -> Vec<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live)
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// The plugin-facing id of (idx, generation).
    pub fn id(idx: u32, generation: u32) -> ConnId {
        ConnId::from_raw(((generation as u64) << 32) | idx as u64)
    }

    /// Splits a plugin-facing id.
    pub fn split(id: ConnId) -> (u32, u32) {
        ((id.raw() & 0xffff_ffff) as u32, (id.raw() >> 32) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    /// Whether `raw` is an open descriptor of this process.
    fn is_open(raw: i32) -> bool {
        // SAFETY: F_GETFD only reads the descriptor table.
        unsafe { libc::fcntl(raw, libc::F_GETFD) >= 0 }
    }

    #[test]
    fn generations_make_stale_ids_miss_and_freed_slots_close_their_sockets() {
        let mut t = Conns::new(2);
        let (a, ga) = t.insert(fd(), 0, 0).unwrap();
        let a_raw = t.get(a, ga).unwrap().raw_fd();
        let (b, _) = t.insert(fd(), 0, 0).unwrap();
        let refused = fd();
        let refused_raw = refused.as_raw_fd();
        assert!(t.insert(refused, 0, 0).is_none(), "limit of 2");
        assert!(!is_open(refused_raw), "a refused socket is closed");
        assert_eq!(t.live, 2);
        t.remove(a);
        assert!(!is_open(a_raw), "freeing a slot closes its socket");
        assert!(t.get_mut(a, ga).is_none());
        let new = fd();
        let new_raw = new.as_raw_fd();
        let (c, gc) = t.insert(new, 0, 0).unwrap();
        assert_eq!(c, a, "slot reused");
        assert_eq!(gc, ga + 1);
        assert_eq!(t.get_mut(c, gc).unwrap().raw_fd(), new_raw);
        assert!(t.get_mut(c, ga).is_none());
        assert_eq!(t.live_indices(), vec![a, b]);
        let id = Conns::id(c, gc);
        assert_eq!(Conns::split(id), (c, gc));
    }

    #[test]
    fn a_slot_stays_small() {
        // One per stream, idle or not: 240 B before the outbound state was
        // boxed, the local address left to the listener socket, the
        // generation moved into the padding and the offsets made `u32`.
        assert_eq!(std::mem::size_of::<Slot>(), SLOT_SIZE);
    }

    #[test]
    fn drained_buffers_wait_in_the_spares_and_large_ones_are_freed() {
        let mut spare = Spare::default();
        let mut t = Conns::new(4);
        let (a, ga) = t.insert(fd(), 0, 0).unwrap();
        let c = t.get_mut(a, ga).unwrap();
        c.tx_pending.extend_from_slice(&[7; 100]);
        c.rx_pending.extend_from_slice(&[1; 10]);
        t.remove(a);
        assert_eq!(t.spare.len(), 2, "the freed slot's two buffers");
        let (b, gb) = t.insert(fd(), 0, 0).unwrap();
        let (c, spare_of_t) = t.get_mut_and_spare(b, gb).unwrap();
        assert_eq!(c.tx_pending.capacity(), 0, "a new stream holds nothing");
        spare_of_t.fill(&mut c.tx_pending);
        assert!(c.tx_pending.is_empty());
        assert!(c.tx_pending.capacity() >= 10);
        assert_eq!(t.spare.len(), 1);

        spare.put(Vec::new());
        spare.put(Vec::with_capacity(KEEP_CAPACITY + 1));
        assert!(spare.is_empty(), "nothing to keep, and too large to keep");
        spare.put(vec![9u8; 40]);
        assert_eq!(spare.len(), 1, "kept, emptied");
        let mut v = vec![1u8];
        spare.fill(&mut v);
        assert_eq!((spare.len(), v), (1, vec![1]), "it has a buffer");
        for _ in 0..Spare::MAX + 5 {
            spare.put(Vec::with_capacity(16));
        }
        assert_eq!(spare.len(), Spare::MAX);
    }
}
