//! The shard's connection table: a slab of reusable slots with generations.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use ringport_plugin::{CloseReason, ConnId};

use crate::ops;
use crate::tls::session::Session;

/// Receive buffers kept per slot across reuse are shrunk to this size, so one
/// burst does not pin memory forever.
const KEEP_CAPACITY: usize = 64 * 1024;

const UNSPECIFIED: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// One stream and its in-flight state.
#[derive(Debug)]
pub struct Conn {
    /// The socket: owned by the slot until `take`n for the backend's
    /// asynchronous close (freeing the slot with it still here closes it).
    pub fd: Option<OwnedFd>,
    /// Which plugin instance serves it.
    pub plugin: u16,
    /// Which listener accepted it (`ListenerId::OUTBOUND`'s number for a
    /// stream a plugin opened).
    pub listener: u16,
    /// The remote address.
    pub peer: SocketAddr,
    /// The local address (one of the listener's ports).
    pub local: SocketAddr,
    /// The plugin accepted it, or heard it connect (so `handle_close` is owed).
    pub accepted: bool,
    /// A plugin opened it with `Context::connect`.
    pub outbound: bool,
    /// Its connect is with the backend (its `Event::Connected` not yet
    /// come): no receive or send before it, no freeing the slot.
    pub connecting: bool,
    /// The plugin's tag of its connect request.
    pub connect_tag: u64,
    /// An outbound stream the plugin has not heard `handle_connected` for
    /// yet (connecting, or in its TLS handshake): a close fails the
    /// connect instead of calling `handle_close`.
    pub opening: bool,
    /// An outbound TLS stream's client configuration and server name, until
    /// its socket connects and the handshake starts.
    pub tls_client: Option<
        Box<(
            std::sync::Arc<rustls::ClientConfig>,
            rustls::pki_types::ServerName<'static>,
        )>,
    >,
    /// Plaintext an outbound TLS stream's plugin wrote before the
    /// handshake ended; sealed and queued once it has.
    pub early_plain: Vec<u8>,
    /// The guard opened it (so its close line is owed).
    pub guarded: bool,
    /// A plaintext stream's first bytes were checked for a TLS ClientHello.
    pub first_checked: bool,
    /// A `tls` listener's stream: its handshake, then its records.
    pub tls: Option<Box<Session>>,
    /// A multishot receive is armed.
    pub recv_armed: bool,
    /// A send is in flight (`tx_inflight[tx_off..]` belongs to the kernel).
    pub send_inflight: bool,
    /// The peer sent FIN.
    pub read_closed: bool,
    /// Reading paused for backpressure.
    pub paused: bool,
    /// Close once everything queued is sent, with this reason.
    pub close_after_flush: Option<CloseReason>,
    /// Teardown started: no more plugin calls, waiting for in-flight ops.
    pub closing: bool,
    /// Listed in the shard's dirty list.
    pub dirty: bool,
    /// Bytes the plugin has not consumed yet, in arrival order.
    pub rx_pending: Vec<u8>,
    /// Bytes queued by the plugin, not yet handed to the kernel.
    pub tx_pending: Vec<u8>,
    /// Bytes handed to the kernel; must not move until the send completes.
    pub tx_inflight: Vec<u8>,
    /// How much of `tx_inflight` the kernel has taken.
    pub tx_off: usize,
    /// Its queued bytes as counted in the shard's outbound budget.
    pub accounted: usize,
    /// Evicted for the outbound budget: its queue is dropped, it closes.
    pub evicted: bool,
}

impl Conn {
    fn empty() -> Conn {
        Conn {
            fd: None,
            plugin: 0,
            listener: 0,
            peer: UNSPECIFIED,
            local: UNSPECIFIED,
            accepted: false,
            outbound: false,
            connecting: false,
            connect_tag: 0,
            opening: false,
            tls_client: None,
            early_plain: Vec::new(),
            guarded: false,
            first_checked: false,
            tls: None,
            recv_armed: false,
            send_inflight: false,
            read_closed: false,
            paused: false,
            close_after_flush: None,
            closing: false,
            dirty: false,
            rx_pending: Vec::new(),
            tx_pending: Vec::new(),
            tx_inflight: Vec::new(),
            tx_off: 0,
            accounted: 0,
            evicted: false,
        }
    }

    /// The socket's descriptor number (-1 once handed to its close).
    #[inline]
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Outbound bytes queued or in flight.
    pub fn tx_len(&self) -> usize {
        self.tx_pending.len() + self.tx_inflight.len() - self.tx_off
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

    fn reset(&mut self) {
        self.fd = None;
        self.accepted = false;
        self.outbound = false;
        self.connecting = false;
        self.connect_tag = 0;
        self.opening = false;
        self.tls_client = None;
        self.guarded = false;
        self.first_checked = false;
        self.tls = None;
        self.recv_armed = false;
        self.send_inflight = false;
        self.read_closed = false;
        self.paused = false;
        self.close_after_flush = None;
        self.closing = false;
        self.dirty = false;
        self.tx_off = 0;
        self.accounted = 0;
        self.evicted = false;
        for v in [
            &mut self.early_plain,
            &mut self.rx_pending,
            &mut self.tx_pending,
            &mut self.tx_inflight,
        ] {
            v.clear();
            if v.capacity() > KEEP_CAPACITY {
                v.shrink_to(KEEP_CAPACITY);
            }
        }
    }
}

struct Slot {
    generation: u32,
    live: bool,
    conn: Conn,
}

/// A slab of connections addressed by (index, generation).
pub struct Conns {
    slots: Vec<Slot>,
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
                self.slots.push(Slot {
                    generation: 0,
                    live: false,
                    conn: Conn::empty(),
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[idx as usize];
        slot.live = true;
        slot.conn.fd = Some(fd);
        slot.conn.plugin = plugin;
        slot.conn.listener = listener;
        self.live += 1;
        Some((idx, slot.generation))
    }

    /// The live connection at `idx` if its generation matches, to read.
    #[inline]
    pub fn get(&self, idx: u32, generation: u32) -> Option<&Conn> {
        match self.slots.get(idx as usize) {
            Some(s) if s.live && s.generation == generation => Some(&s.conn),
            _ => None,
        }
    }

    /// The live connection at `idx` if its generation matches.
    #[inline]
    pub fn get_mut(&mut self, idx: u32, generation: u32) -> Option<&mut Conn> {
        match self.slots.get_mut(idx as usize) {
            Some(s) if s.live && s.generation == generation => Some(&mut s.conn),
            _ => None,
        }
    }

    /// The live connection at `idx`, whatever its generation (for the dirty list).
    #[inline]
    pub fn at_mut(&mut self, idx: u32) -> Option<(&mut Conn, u32)> {
        match self.slots.get_mut(idx as usize) {
            Some(s) if s.live => Some((&mut s.conn, s.generation)),
            _ => None,
        }
    }

    /// Frees a slot: its generation moves on, so stale ids and completions miss.
    pub fn remove(&mut self, idx: u32) {
        if let Some(s) = self.slots.get_mut(idx as usize) {
            if s.live {
                s.live = false;
                s.generation = ops::next_generation(s.generation);
                s.conn.reset();
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
            .filter(|(_, s)| s.live && s.conn.budgeted() > 0)
            .max_by_key(|(_, s)| s.conn.budgeted())
            .map(|(i, _)| i as u32)
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
}
