//! One shard: a pinned thread, its io_uring, its sockets, plugins and counters.
//!
//! One turn of the loop: reap every completion into a batch, dispatch it
//! (accepts, stream bytes, datagrams, send completions) to the plugins, fire
//! due timers, flush queued stream bytes as sends, publish counters, then one
//! `submit_and_wait` that both submits the turn's SQEs and parks until the
//! next completion (or timer). The steady state allocates nothing: the batch,
//! dirty list and per-stream buffers keep their capacity.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use ringport_plugin::{
    CloseReason, ConnId, Context, DatagramInfo, DropReason, ListenerId, MeshError, MeshMessage,
    Plugin, ShardId, SocketId, StreamInfo, Verdict, WriteError,
};

use crate::config::{EngineConfig, UdpDropCounter};
use crate::conn::Conns;
use crate::guard::{Guard, GuardInit};
use crate::latency::{LocalLatencies, SharedLatencies};
use crate::listener_stats::ListenerDrop;
use crate::mesh::{Envelope, Inbox, Outbox};
use crate::ops::{self, *};
use crate::stats::{Counters, EngineDrop, SharedStats};
use crate::sys::bufring::BufRing;
use crate::sys::{addr, socket};
use crate::udp::{self, SendPool, UdpSock};

/// Buffer group of the TCP receive ring.
const BGID_TCP: u16 = 0;
/// Buffer group of the UDP receive ring.
const BGID_UDP: u16 = 1;
/// How often a shard that receives datagrams reads its sockets' kernel drop counters.
const DROPS_POLL_EVERY: Duration = Duration::from_millis(100);
/// Most messages taken from one inbound mesh ring per turn, so one busy
/// sender cannot starve the shard's sockets.
const MESH_DRAIN_LIMIT: usize = 1024;
/// The engine's own latency histogram: from the sending shard's turn to
/// the receiving shard taking the message.
pub const MESH_LATENCY: &str = "mesh_handoff";
/// How long a stopping shard waits for the kernel to hand back in-flight operations.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// What the engine shares with a running shard.
#[derive(Debug)]
pub struct ShardShared {
    /// Published counters.
    pub stats: SharedStats,
    /// Set to ask the shard to stop; followed by a write to `wake_fd`.
    pub stop: AtomicBool,
    /// eventfd the shard keeps a read armed on.
    pub wake_fd: i32,
    /// The shard's ring fd, for IORING_OP_MSG_RING wake-ups (-1 until set up).
    pub ring_fd: AtomicI32,
    /// Published latency histograms.
    pub latency: SharedLatencies,
}

impl ShardShared {
    /// Wakes the shard from `submit_and_wait`.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: wake_fd is an eventfd owned by the engine for the shard's life;
        // the buffer is a live u64.
        unsafe {
            libc::write(self.wake_fd, (&one as *const u64).cast(), 8);
        }
    }
}

/// A TCP listener socket owned by a shard.
#[derive(Debug)]
pub struct TcpListenerSock {
    /// The socket.
    pub fd: i32,
    /// Listener index in the plan.
    pub listener: ListenerId,
    /// Plugin instance index.
    pub plugin: u16,
    /// Bound address.
    pub local: SocketAddr,
}

/// Everything a shard thread starts with.
pub struct ShardInit {
    /// Shard index.
    pub shard: ShardId,
    /// Number of shards.
    pub shard_count: usize,
    /// Tunables.
    pub config: EngineConfig,
    /// TCP listeners to accept on.
    pub tcp: Vec<TcpListenerSock>,
    /// UDP sockets to receive on: (fd, listener, plugin, local).
    pub udp: Vec<(i32, ListenerId, u16, SocketAddr)>,
    /// Plugin instances, indexed by the `plugin` fields above.
    pub plugins: Vec<Box<dyn Plugin>>,
    /// Shared state.
    pub shared: Arc<ShardShared>,
    /// Every shard's shared state, indexed by shard (for mesh wake-ups).
    pub peers: Arc<[Arc<ShardShared>]>,
    /// This shard's sending ends of the mesh.
    pub outbox: Outbox,
    /// This shard's receiving ends of the mesh.
    pub inbox: Inbox,
    /// Wake parked shards with MSG_RING (else eventfd writes).
    pub msg_ring: bool,
    /// Allowlists, limits, timeouts, handshake log.
    pub guard: GuardInit,
}

/// The shard's state other than plugins and receive buffers, which the
/// plugins see as their [`Context`].
struct Core {
    ring: IoUring,
    shard: ShardId,
    shard_count: usize,
    now: Instant,
    config: EngineConfig,
    conns: Conns,
    dirty: Vec<u32>,
    listeners: Vec<TcpListenerSock>,
    udp: Vec<UdpSock>,
    sends: SendPool,
    timers: BinaryHeap<Reverse<(Instant, u64, u16, u64)>>,
    timer_seq: u64,
    current_plugin: u16,
    counters: Counters,
    inflight: usize,
    stopping: bool,
    wake_buf: Box<u64>,
    wake_fd: i32,
    cq_overflow_seen: u32,
    /// The earliest deadline an IORING_OP_TIMEOUT is armed for, and that
    /// arming's sequence number (in its user_data).
    timer_armed: Option<(Instant, u32)>,
    timer_arms: u32,
    /// The armed timeout's duration; the kernel reads it when the SQE is submitted.
    timer_ts: Box<Timespec>,
    /// When the kernel drop counters are next due to be read (None: not owed).
    drops_poll_at: Option<Instant>,
    /// `datagrams_in` at the last read of the drop counters.
    drops_polled_at_count: u64,
    outbox: Outbox,
    peers: Arc<[Arc<ShardShared>]>,
    latency: LocalLatencies,
    /// Shards we queued messages for this turn (each listed once) ...
    targets: Vec<ShardId>,
    /// ... flagged here by shard index.
    sent_to: Vec<bool>,
    /// Parked shards among them, to wake at the end of this turn.
    wake_list: Vec<ShardId>,
    msg_ring: bool,
}

/// A running shard.
pub struct Shard {
    // Field order is drop order: the ring (in `core`) goes before the buffer
    // rings whose memory it may still reference.
    core: Core,
    tcp_bufs: BufRing,
    udp_bufs: BufRing,
    plugins: Vec<Box<dyn Plugin>>,
    cqes: Vec<(u64, i32, u32)>,
    shared: Arc<ShardShared>,
    inbox: Inbox,
    min_timeout: bool,
    guard: Guard,
    /// Streams whose deadline passed this turn (kept for its capacity).
    expired: Vec<(u32, u32)>,
    /// The drain has closed this shard's listeners.
    drained: bool,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("shard", &self.core.shard)
            .finish()
    }
}

/// Notices a shard produced while starting (flags the kernel refused, ...).
pub type Notices = Vec<String>;

impl Shard {
    /// Sets up the ring and buffer rings. Runs on the shard's own thread.
    pub fn new(init: ShardInit) -> Result<(Shard, Notices), crate::StartError> {
        let cfg = init.config.clone();
        let r = crate::sys::ring::setup(cfg.ring_entries, cfg.ring_entries * 4)
            .map_err(crate::StartError::Ring)?;
        let mut notices = Vec::new();
        for f in &r.dropped {
            notices.push(format!(
                "shard {}: the kernel refused {}; running without it",
                init.shard,
                f.name()
            ));
        }
        if cfg.batch_delay_us > 0 && !r.min_timeout {
            notices.push(format!(
                "shard {}: --batch-delay-us needs IORING_FEAT_MIN_TIMEOUT (kernel 6.12); ignored",
                init.shard
            ));
        }
        // No registered ring fd: the io-uring crate keeps that index per
        // `Submitter` value, and ours are made afresh for every call.
        let ring = r.ring;
        let bufring_err = |what: &str, e: io::Error| crate::StartError::Shard {
            shard: init.shard,
            message: format!(
                "registering the {what} provided buffer ring failed: {e} \
                     (IORING_REGISTER_PBUF_RING needs Linux 5.19; ENOMEM means the memory for \
                     --{what}-bufs buffers could not be had)"
            ),
        };
        let tcp_bufs = BufRing::new(&ring.submitter(), BGID_TCP, cfg.tcp_bufs, cfg.tcp_buf_size)
            .map_err(|e| bufring_err("tcp", e))?;
        let udp_size = (cfg.udp_max_datagram as usize + udp::RECV_HEADROOM) as u32;
        let udp_bufs = BufRing::new(&ring.submitter(), BGID_UDP, cfg.udp_bufs, udp_size)
            .map_err(|e| bufring_err("udp", e))?;
        let udp = init
            .udp
            .into_iter()
            .map(|(fd, l, p, local)| UdpSock::new(fd, l, p, local))
            .collect();
        let core = Core {
            ring,
            shard: init.shard,
            shard_count: init.shard_count,
            now: Instant::now(),
            conns: Conns::new(cfg.max_conns_per_shard),
            dirty: Vec::with_capacity(1024),
            listeners: init.tcp,
            udp,
            sends: SendPool::new(cfg.udp_send_slots, cfg.udp_max_datagram as usize),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            current_plugin: 0,
            counters: Counters::default(),
            inflight: 0,
            stopping: false,
            wake_buf: Box::new(0),
            wake_fd: init.shared.wake_fd,
            cq_overflow_seen: 0,
            timer_armed: None,
            timer_arms: 0,
            timer_ts: Box::new(Timespec::new()),
            drops_poll_at: None,
            drops_polled_at_count: 0,
            outbox: init.outbox,
            latency: LocalLatencies::default(),
            peers: init.peers,
            targets: Vec::with_capacity(init.shard_count),
            sent_to: vec![false; init.shard_count],
            wake_list: Vec::with_capacity(init.shard_count),
            msg_ring: init.msg_ring,
            config: cfg.clone(),
        };
        use std::os::fd::AsRawFd;
        init.shared
            .ring_fd
            .store(core.ring.as_raw_fd(), Ordering::Release);
        let cq_cap = (cfg.ring_entries * 4) as usize;
        Ok((
            Shard {
                core,
                tcp_bufs,
                udp_bufs,
                plugins: init.plugins,
                cqes: Vec::with_capacity(cq_cap),
                shared: init.shared,
                inbox: init.inbox,
                min_timeout: r.min_timeout,
                guard: Guard::new(init.shard, init.guard),
                expired: Vec::new(),
                drained: false,
            },
            notices,
        ))
    }

    /// Runs the loop until asked to stop, then drains and closes everything.
    pub fn run(mut self) -> Counters {
        for i in 0..self.core.listeners.len() {
            self.core.arm_accept(i as u32);
        }
        for i in 0..self.core.udp.len() {
            self.core.arm_udp(i as u32, self.udp_bufs.bgid());
        }
        self.core.arm_wake();
        loop {
            self.reap();
            self.core.now = Instant::now();
            self.dispatch();
            self.drain_mesh();
            self.fire_timers();
            self.expire_streams();
            self.start_drain();
            self.poll_kernel_drops(false);
            self.flush();
            self.core.send_wakes();
            self.core.counters.turns += 1;
            self.shared.stats.publish(&self.core.counters);
            self.core.latency.publish(&self.shared.latency);
            self.guard.publish();
            if self.shared.stop.load(Ordering::Acquire) {
                break;
            }
            self.wait();
        }
        self.shutdown();
        self.shared.stats.publish(&self.core.counters);
        self.guard.publish();
        self.core.counters.clone()
    }

    fn reap(&mut self) {
        self.cqes.clear();
        let mut cq = self.core.ring.completion();
        let overflow = cq.overflow();
        for cqe in &mut cq {
            self.cqes.push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
        drop(cq);
        if overflow != self.core.cq_overflow_seen {
            let lost = overflow.wrapping_sub(self.core.cq_overflow_seen);
            self.core
                .counters
                .drop_engine(EngineDrop::CqOverflow, lost as u64);
            self.core.cq_overflow_seen = overflow;
        }
    }

    fn wait(&mut self) {
        self.core.counters.enters += 1;
        if !self.inbox.park() {
            // Messages are waiting: submit, run completions, do not block.
            self.core.enter_nowait();
            return;
        }
        self.block();
        self.inbox.unpark();
    }

    fn block(&mut self) {
        let plugin_timer = self.core.timers.peek().map(|Reverse((at, ..))| *at);
        let timer = match (plugin_timer, self.guard.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let deadline = match (timer, self.core.drops_poll_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = deadline {
            self.core.arm_timer(at);
        }
        let delay = if self.min_timeout {
            self.core.config.batch_delay_us
        } else {
            0
        };
        // Deadlines are served by the timeout operation armed above, not by a
        // timeout on the wait itself: that would program (and cancel) a
        // hardware timer on every wait, which on a VM exits to the hypervisor.
        let res = if delay == 0 {
            self.core.ring.submit_and_wait(1)
        } else {
            // Wait for a full batch; min_wait makes the kernel return with
            // what it has once the delay has passed.
            let args = SubmitArgs::new().min_wait_usec(delay);
            let want = self.cqes.capacity().min(64);
            self.core.ring.submitter().submit_with_args(want, &args)
        };
        if let Err(e) = res {
            match e.raw_os_error() {
                // ETIME: a timer is due. EINTR: a signal. EBUSY/EAGAIN: the CQ
                // is full or the kernel is short of memory; reaping makes room.
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                _ => {
                    // Not expected from a valid ring; avoid a hot spin.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    fn dispatch(&mut self) {
        for i in 0..self.cqes.len() {
            let (ud, res, flags) = self.cqes[i];
            let (kind, generation, idx) = ops::unpack(ud);
            let more = cqueue::more(flags);
            // Skip-success operations post only failures and are not counted
            // in flight; neither is a wake another shard posted into our ring.
            let counted = !matches!(kind, OP_CLOSE | OP_MSG_RING | OP_MESH_WAKE);
            if !more && counted {
                self.core.inflight = self.core.inflight.saturating_sub(1);
            }
            match kind {
                OP_ACCEPT => self.on_accept(idx, res, more),
                OP_RECV => self.on_recv(idx, generation, res, flags, more),
                OP_SEND => self.on_send(idx, generation, res),
                OP_UDP_RECV => self.on_udp_recv(idx, res, flags, more),
                OP_UDP_SEND => self.on_udp_send(idx, generation, res),
                OP_WAKE if !self.shared.stop.load(Ordering::Acquire) => self.core.arm_wake(),
                // The deadline timer fired (or was cancelled): the turn checks
                // every deadline; the next wait arms the next one.
                OP_TIMER if self.core.timer_armed.is_some_and(|(_, seq)| seq == idx) => {
                    self.core.timer_armed = None;
                }
                // MSG_RING to `idx` failed (its CQ full, or the ring gone): fall back.
                OP_MSG_RING => {
                    if let Some(peer) = self.core.peers.get(idx as usize) {
                        peer.wake();
                    }
                }
                _ => {}
            }
        }
    }

    fn on_accept(&mut self, idx: u32, res: i32, more: bool) {
        if res >= 0 {
            self.accept_stream(idx, res);
        } else if res != -libc::ECANCELED {
            self.core.counters.drop_engine(EngineDrop::AcceptFailed, 1);
        }
        if !more && !self.core.stopping && !self.guard.draining() && res != -libc::ECANCELED {
            self.core.arm_accept(idx);
        }
    }

    fn accept_stream(&mut self, lidx: u32, fd: i32) {
        let (listener, plugin, local) = {
            let l = &self.core.listeners[lidx as usize];
            (l.listener, l.plugin, l.local)
        };
        let Some((cidx, generation)) = self.core.conns.insert(fd, plugin, listener.0) else {
            self.core.counters.drop_engine(EngineDrop::AcceptFailed, 1);
            // SAFETY: fd was just accepted and is owned by nobody else.
            unsafe { libc::close(fd) };
            return;
        };
        socket::set_nodelay(fd);
        let peer = addr::peer_of(fd).unwrap_or_else(|| SocketAddr::new(local.ip(), 0));
        // Allowlist and limits before any plugin code.
        let Some(admitted) = self.guard.admit(listener.0, peer, local, self.core.now) else {
            // SAFETY: nothing was submitted for this fd; we still own it.
            unsafe { libc::close(fd) };
            self.core.conns.remove(cidx);
            return;
        };
        let id = Conns::id(cidx, generation);
        let info = StreamInfo {
            conn: id,
            listener,
            peer,
            local,
        };
        self.core.current_plugin = plugin;
        let verdict = self.plugins[plugin as usize].handle_open(&mut self.core, &info);
        match verdict {
            Verdict::Accept => {
                self.core.counters.conns_accepted += 1;
                if let Some(c) = self.core.conns.get_mut(cidx, generation) {
                    c.accepted = true;
                }
                self.core.arm_recv(cidx, generation, self.tcp_bufs.bgid());
                let now = self.core.now;
                self.guard
                    .opened(cidx, generation, listener.0, peer, local, admitted, now);
            }
            Verdict::Reject => {
                self.guard.rejected(listener.0, peer);
                self.core.counters.conns_rejected += 1;
                // SAFETY: nothing was submitted for this fd; we still own it.
                unsafe { libc::close(fd) };
                self.core.conns.remove(cidx);
            }
        }
    }

    fn on_recv(&mut self, idx: u32, generation: u32, res: i32, flags: u32, more: bool) {
        let bid = cqueue::buffer_select(flags);
        let bgid = self.tcp_bufs.bgid();
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            if let Some(b) = bid {
                self.tcp_bufs.recycle(b);
            }
            return;
        };
        if !more {
            conn.recv_armed = false;
        }
        if res > 0 {
            if let Some(b) = bid {
                self.deliver(idx, generation, b, res as usize);
                self.tcp_bufs.recycle(b);
            }
        } else if res == 0 {
            self.guard.half_closed(idx, generation, self.core.now);
            conn.read_closed = true;
            if conn.close_after_flush.is_none() {
                conn.close_after_flush = Some(CloseReason::PeerClosed);
            }
            self.core.mark_dirty(idx);
        } else if res == -libc::ENOBUFS {
            self.core
                .counters
                .drop_engine(EngineDrop::BufferRingEmpty, 1);
        } else if res == -libc::ECANCELED {
            // We cancelled it: backpressure pause or teardown.
        } else {
            let reason = if res == -libc::ECONNRESET || res == -libc::EPIPE {
                CloseReason::PeerReset
            } else {
                CloseReason::Error(-res)
            };
            self.teardown(idx, generation, reason);
        }
        self.after_io(idx, generation, bgid);
    }

    /// Re-arms or finalises a stream after one of its completions.
    fn after_io(&mut self, idx: u32, generation: u32, bgid: u16) {
        let stopping = self.core.stopping;
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        if conn.closing {
            self.core.maybe_finalize(idx, generation);
            return;
        }
        if !conn.recv_armed
            && !conn.paused
            && !conn.read_closed
            && !stopping
            && conn.close_after_flush.is_none()
        {
            self.core.arm_recv(idx, generation, bgid);
        }
    }

    /// Hands bytes to the plugin, keeping what it does not consume.
    fn deliver(&mut self, idx: u32, generation: u32, bid: u16, len: usize) {
        self.core.counters.bytes_in += len as u64;
        self.guard.bytes_in(idx, len, self.core.now);
        let bytes = self.tcp_bufs.filled(bid, len);
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        if conn.closing || conn.close_after_flush.is_some() {
            return;
        }
        let plugin = conn.plugin;
        let id = Conns::id(idx, generation);
        self.core.current_plugin = plugin;
        let result = if conn.rx_pending.is_empty() {
            let r = self.plugins[plugin as usize].handle_data(&mut self.core, id, bytes);
            if let Ok(n) = r {
                if n < bytes.len() {
                    if let Some(conn) = self.core.conns.get_mut(idx, generation) {
                        conn.rx_pending.extend_from_slice(&bytes[n..]);
                    }
                }
            }
            r.map(|_| ())
        } else {
            conn.rx_pending.extend_from_slice(bytes);
            self.run_pending(idx, generation)
        };
        self.after_deliver(idx, generation, result);
    }

    /// Presents the kept bytes of a stream to its plugin again.
    fn run_pending(&mut self, idx: u32, generation: u32) -> Result<(), DropReason> {
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return Ok(());
        };
        let plugin = conn.plugin;
        let mut data = std::mem::take(&mut conn.rx_pending);
        let id = Conns::id(idx, generation);
        self.core.current_plugin = plugin;
        let r = self.plugins[plugin as usize].handle_data(&mut self.core, id, &data);
        if let Ok(n) = r {
            data.drain(..n.min(data.len()));
        }
        if let Some(conn) = self.core.conns.get_mut(idx, generation) {
            conn.rx_pending = data;
        }
        r.map(|_| ())
    }

    fn after_deliver(&mut self, idx: u32, generation: u32, result: Result<(), DropReason>) {
        // A plugin that keeps more unconsumed bytes than a stream may queue
        // outbound is not going to make progress: close rather than grow.
        let result = match (result, self.core.conns.get_mut(idx, generation)) {
            (Ok(()), Some(c)) if c.rx_pending.len() > self.core.config.max_outbound => {
                Err(DropReason::QueueFull)
            }
            (r, _) => r,
        };
        match result {
            Err(reason) => {
                self.core.counters.drop_plugin(reason);
                self.core.counters.conns_protocol_closed += 1;
                self.teardown(idx, generation, CloseReason::Protocol(reason));
            }
            Ok(()) => {
                let pause_at = self.core.config.pause_outbound;
                let Some(conn) = self.core.conns.get_mut(idx, generation) else {
                    return;
                };
                if !conn.paused && conn.tx_len() >= pause_at {
                    conn.paused = true;
                    self.core.counters.backpressure_pauses += 1;
                    if conn.recv_armed {
                        self.core.cancel(ops::pack(OP_RECV, generation, idx));
                    }
                }
            }
        }
    }

    fn on_send(&mut self, idx: u32, generation: u32, res: i32) {
        let bgid = self.tcp_bufs.bgid();
        let resume_below = self.core.config.pause_outbound / 2;
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        conn.send_inflight = false;
        if conn.closing {
            self.core.maybe_finalize(idx, generation);
            return;
        }
        if res < 0 {
            let reason = if res == -libc::EPIPE || res == -libc::ECONNRESET {
                CloseReason::PeerReset
            } else {
                CloseReason::Error(-res)
            };
            self.teardown(idx, generation, reason);
            return;
        }
        self.core.counters.bytes_out += res as u64;
        self.guard.bytes_out(idx, res as usize, self.core.now);
        conn.tx_off += res as usize;
        if conn.tx_off >= conn.tx_inflight.len() {
            conn.tx_inflight.clear();
            conn.tx_off = 0;
        }
        self.core.mark_dirty(idx);
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        if conn.paused && conn.tx_len() <= resume_below {
            conn.paused = false;
            if !conn.rx_pending.is_empty() {
                let r = self.run_pending(idx, generation);
                self.after_deliver(idx, generation, r);
            }
            self.after_io(idx, generation, bgid);
        }
    }

    fn on_udp_recv(&mut self, idx: u32, res: i32, flags: u32, more: bool) {
        let bid = cqueue::buffer_select(flags);
        let Some(sock) = self.core.udp.get_mut(idx as usize) else {
            if let Some(b) = bid {
                self.udp_bufs.recycle(b);
            }
            return;
        };
        if !more {
            sock.armed = false;
        }
        if res >= 0 {
            if let Some(b) = bid {
                self.datagram(idx, b, res as usize);
                self.udp_bufs.recycle(b);
            }
        } else if res == -libc::ENOBUFS {
            self.core
                .counters
                .drop_engine(EngineDrop::BufferRingEmpty, 1);
        }
        let stopping = self.core.stopping;
        if !more && !stopping && res != -libc::ECANCELED {
            self.core.arm_udp(idx, self.udp_bufs.bgid());
        }
    }

    fn datagram(&mut self, idx: u32, bid: u16, len: usize) {
        let buf = self.udp_bufs.filled(bid, len);
        let sock = &mut self.core.udp[idx as usize];
        let Ok(msg) = io_uring::types::RecvMsgOut::parse(buf, &sock.msghdr) else {
            self.core.counters.drop_engine(EngineDrop::BadSource, 1);
            return;
        };
        // With `UdpDropCounter::Cmsg` every datagram carries the counter.
        if let Some(v) = udp::rxq_ovfl(msg.control_data()) {
            let delta = v.wrapping_sub(sock.rxq_ovfl);
            sock.rxq_ovfl = v;
            if delta > 0 {
                self.core
                    .counters
                    .drop_engine(EngineDrop::KernelRxQueue, delta as u64);
            }
        }
        if msg.is_payload_truncated() {
            self.core
                .counters
                .drop_engine(EngineDrop::DatagramTruncated, 1);
            self.guard
                .dropped(sock.listener.0, ListenerDrop::DatagramTruncated);
            return;
        }
        let Some(peer) = addr::from_raw(msg.name_data()) else {
            self.core.counters.drop_engine(EngineDrop::BadSource, 1);
            return;
        };
        let payload = msg.payload_data();
        // The allowlist before any plugin code.
        if !self.guard.datagram(
            sock.listener.0,
            peer,
            sock.local.port(),
            payload.len(),
            self.core.now,
        ) {
            return;
        }
        let info = DatagramInfo {
            socket: SocketId(idx),
            listener: sock.listener,
            peer,
            local: sock.local,
        };
        let plugin = sock.plugin;
        self.core.counters.datagrams_in += 1;
        self.core.counters.bytes_in += payload.len() as u64;
        self.core.current_plugin = plugin;
        let slots_full = EngineDrop::UdpSendSlotsFull as usize;
        let before = self.core.counters.engine_drops[slots_full];
        if let Err(r) =
            self.plugins[plugin as usize].handle_datagram(&mut self.core, &info, payload)
        {
            // A reply refused for want of a send slot is already counted as
            // `udp_send_slots_full`; the plugin passing that refusal on is the
            // same drop, not a second one.
            let engine_counted = self.core.counters.engine_drops[slots_full] > before;
            if !(r == DropReason::QueueFull && engine_counted) {
                self.core.counters.drop_plugin(r);
            }
        }
    }

    /// A datagram send completed; `listener` is the one whose socket sent it.
    fn on_udp_send(&mut self, slot: u32, listener: u32, res: i32) {
        self.core.sends.release(slot);
        if res >= 0 {
            self.core.counters.datagrams_out += 1;
            self.core.counters.bytes_out += res as u64;
            self.guard.datagram_sent(listener as u16, res as usize);
        } else {
            self.core.counters.drop_engine(EngineDrop::UdpSendError, 1);
        }
    }

    /// Starts closing a stream: tells the plugin, cancels its receive, and
    /// frees the slot once no operation of it is in flight.
    fn teardown(&mut self, idx: u32, generation: u32, reason: CloseReason) {
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        if conn.closing {
            return;
        }
        conn.closing = true;
        conn.tx_pending.clear();
        let accepted = conn.accepted;
        let plugin = conn.plugin;
        let recv_armed = conn.recv_armed;
        self.core.counters.conns_closed += 1;
        if recv_armed {
            self.core.cancel(ops::pack(OP_RECV, generation, idx));
        }
        if accepted {
            self.guard.closed(idx, generation, reason, self.core.now);
            self.core.current_plugin = plugin;
            let id = Conns::id(idx, generation);
            self.plugins[plugin as usize].handle_close(&mut self.core, id, reason);
        }
        self.core.maybe_finalize(idx, generation);
    }

    /// Hands every waiting cross-shard message to its plugin.
    fn drain_mesh(&mut self) {
        let plugins = &mut self.plugins;
        let core = &mut self.core;
        let mut received = None;
        let n = self.inbox.drain(MESH_DRAIN_LIMIT, |from, env: Envelope| {
            // One clock read per batch: the time the first message was taken.
            let at = *received.get_or_insert_with(Instant::now);
            core.latency
                .record(MESH_LATENCY, at.saturating_duration_since(env.sent));
            if let Some(p) = plugins.get_mut(env.plugin as usize) {
                core.current_plugin = env.plugin;
                p.handle_message(core, from, env.msg);
            }
        });
        if n > 0 {
            self.core.counters.mesh_in += n as u64;
            self.inbox.publish_depth();
        }
    }

    fn fire_timers(&mut self) {
        // Timers set while firing wait for the next turn, even when due now,
        // so a plugin re-arming a zero-delay timer cannot spin this loop.
        let last_seq = self.core.timer_seq;
        while let Some(Reverse((at, seq, plugin, token))) = self.core.timers.peek().copied() {
            if at > self.core.now || seq > last_seq {
                break;
            }
            self.core.timers.pop();
            self.core.current_plugin = plugin;
            let now = self.core.now;
            self.plugins[plugin as usize].handle_timer(&mut self.core, now, token);
        }
    }

    /// Turns queued stream bytes into sends and carries out deferred closes.
    fn flush(&mut self) {
        let mut i = 0;
        while i < self.core.dirty.len() {
            let idx = self.core.dirty[i];
            i += 1;
            let Some((conn, generation)) = self.core.conns.at_mut(idx) else {
                continue;
            };
            conn.dirty = false;
            if conn.closing {
                continue;
            }
            if !conn.send_inflight && conn.tx_off < conn.tx_inflight.len() {
                // A short send: the rest of the in-flight buffer goes first.
                self.core.submit_send(idx, generation);
            } else if !conn.send_inflight && !conn.tx_pending.is_empty() {
                std::mem::swap(&mut conn.tx_pending, &mut conn.tx_inflight);
                conn.tx_off = 0;
                self.core.submit_send(idx, generation);
            } else if !conn.send_inflight && conn.tx_len() == 0 {
                if let Some(reason) = conn.close_after_flush {
                    self.teardown(idx, generation, reason);
                }
            }
        }
        self.core.dirty.clear();
    }

    /// Reads the kernel's receive-queue drop counter (`sk_drops`) of every UDP
    /// socket with SO_MEMINFO, at most every [`DROPS_POLL_EVERY`] while
    /// datagrams flow, once more after they stop, and never while idle.
    fn poll_kernel_drops(&mut self, force: bool) {
        if self.core.config.udp_drop_counter != UdpDropCounter::Poll || self.core.udp.is_empty() {
            return;
        }
        let seen = self.core.counters.datagrams_in;
        if !force {
            match self.core.drops_poll_at {
                None if seen != self.core.drops_polled_at_count => {
                    self.core.drops_poll_at = Some(self.core.now + DROPS_POLL_EVERY);
                    return;
                }
                Some(at) if self.core.now >= at => {}
                _ => return,
            }
        }
        self.core.drops_poll_at = None;
        self.core.drops_polled_at_count = seen;
        for sock in &mut self.core.udp {
            if let Some(v) = socket::sk_drops(sock.fd) {
                let delta = v.wrapping_sub(sock.rxq_ovfl);
                sock.rxq_ovfl = v;
                if delta > 0 {
                    self.core
                        .counters
                        .drop_engine(EngineDrop::KernelRxQueue, delta as u64);
                }
            }
        }
    }

    fn shutdown(&mut self) {
        self.poll_kernel_drops(true);
        self.core.stopping = true;
        for idx in self.core.conns.live_indices() {
            if let Some((_, generation)) = self.core.conns.at_mut(idx) {
                self.teardown(idx, generation, CloseReason::Shutdown);
            }
        }
        let cancel_all = opcode::AsyncCancel2::new(io_uring::types::CancelBuilder::any())
            .build()
            .user_data(ops::pack(OP_CANCEL, 0, 0));
        self.core.push(cancel_all);
        let deadline = Instant::now() + DRAIN_LIMIT;
        while self.core.inflight > 0 && Instant::now() < deadline {
            let ts = Timespec::new().nsec(10_000_000);
            let args = SubmitArgs::new().timespec(&ts);
            let _ = self.core.ring.submitter().submit_with_args(1, &args);
            self.reap();
            self.dispatch();
            self.flush();
        }
        for l in &self.core.listeners {
            // SAFETY: the listener fds are owned by this shard and no longer in use.
            unsafe { libc::close(l.fd) };
        }
        for u in &self.core.udp {
            // SAFETY: as above, for the UDP sockets.
            unsafe { libc::close(u.fd) };
        }
        for idx in self.core.conns.live_indices() {
            if let Some((c, _)) = self.core.conns.at_mut(idx) {
                // SAFETY: the stream fd is owned by its slot.
                unsafe { libc::close(c.fd) };
            }
            self.core.conns.remove(idx);
        }
        self.core.listeners.clear();
        self.core.udp.clear();
    }
}

impl Core {
    /// Pushes an SQE, submitting first if the queue is full.
    fn push(&mut self, entry: squeue::Entry) {
        self.inflight += 1;
        loop {
            // SAFETY: every buffer an entry points at (send buffers, msghdrs,
            // the wake buffer) lives in this shard and is not moved or freed
            // until the entry's final completion has been reaped.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                return;
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // CQ full: the completions will be reaped next turn; make
                    // room by submitting anyway once the kernel accepts.
                    std::thread::yield_now();
                }
                Err(_) => std::thread::yield_now(),
            }
        }
    }

    /// Submits and runs pending completions without waiting for any.
    fn enter_nowait(&mut self) {
        let to_submit = self.ring.submission().len() as u32;
        // SAFETY: a plain io_uring_enter with GETEVENTS and no argument; the
        // submitted entries were pushed with their buffers kept alive (see `push`).
        let _ = unsafe {
            self.ring.submitter().enter::<libc::sigset_t>(
                to_submit,
                0,
                io_uring::EnterFlags::GETEVENTS.bits(),
                None,
            )
        };
    }

    /// Makes sure a timeout operation will wake the shard by `at`: arms one
    /// unless an earlier (or equal) one is already pending. A later pending
    /// one, left armed, fires harmlessly.
    fn arm_timer(&mut self, at: Instant) {
        if self.timer_armed.is_some_and(|(armed, _)| armed <= at) {
            return;
        }
        self.timer_arms = self.timer_arms.wrapping_add(1);
        let seq = self.timer_arms;
        *self.timer_ts = Timespec::from(at.saturating_duration_since(Instant::now()));
        let e = opcode::Timeout::new(&*self.timer_ts)
            .build()
            .user_data(ops::pack(OP_TIMER, 0, seq));
        self.push(e);
        self.timer_armed = Some((at, seq));
    }

    /// Notes that we queued for `to` this turn.
    fn note_target(&mut self, to: ShardId) {
        if !self.sent_to[to] {
            self.sent_to[to] = true;
            self.targets.push(to);
        }
    }

    /// Wakes the parked shards among those we queued for this turn:
    /// MSG_RING into their ring (posted with our next submit), or an eventfd
    /// write.
    fn send_wakes(&mut self) {
        if self.targets.is_empty() {
            return;
        }
        let wake_list = &mut self.wake_list;
        self.outbox
            .wakes_due(&self.targets, |to| wake_list.push(to));
        for &t in &self.targets {
            self.sent_to[t] = false;
        }
        self.targets.clear();
        while let Some(to) = self.wake_list.pop() {
            self.counters.mesh_wakes += 1;
            let peer = &self.peers[to];
            let fd = peer.ring_fd.load(Ordering::Acquire);
            if self.msg_ring && fd >= 0 {
                let e = opcode::MsgRingData::new(Fd(fd), 0, ops::pack(OP_MESH_WAKE, 0, 0), None)
                    .build()
                    .flags(squeue::Flags::SKIP_SUCCESS)
                    .user_data(ops::pack(OP_MSG_RING, 0, to as u32));
                self.push_uncounted(e);
            } else {
                peer.wake();
            }
        }
    }

    fn send_envelope(&mut self, to: ShardId, msg: MeshMessage) -> Result<(), MeshError> {
        if to >= self.shard_count {
            return Err(MeshError::NoSuchShard(msg));
        }
        let env = Envelope {
            plugin: self.current_plugin,
            sent: self.now,
            msg,
        };
        match self.outbox.try_send(to, env) {
            Ok(()) => {
                self.counters.mesh_out += 1;
                self.note_target(to);
                Ok(())
            }
            Err(env) => {
                self.counters.mesh_full += 1;
                Err(MeshError::Full(env.msg))
            }
        }
    }

    fn push_uncounted(&mut self, entry: squeue::Entry) {
        self.push(entry);
        self.inflight -= 1;
    }

    fn arm_accept(&mut self, idx: u32) {
        let fd = self.listeners[idx as usize].fd;
        let e = opcode::AcceptMulti::new(Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ops::pack(OP_ACCEPT, 0, idx));
        self.push(e);
    }

    fn arm_recv(&mut self, idx: u32, generation: u32, bgid: u16) {
        let Some(conn) = self.conns.get_mut(idx, generation) else {
            return;
        };
        conn.recv_armed = true;
        let e = opcode::RecvMulti::new(Fd(conn.fd), bgid)
            .build()
            .user_data(ops::pack(OP_RECV, generation, idx));
        self.push(e);
    }

    fn arm_udp(&mut self, idx: u32, bgid: u16) {
        let sock = &mut self.udp[idx as usize];
        sock.armed = true;
        let e = opcode::RecvMsgMulti::new(Fd(sock.fd), &*sock.msghdr, bgid)
            .build()
            .user_data(ops::pack(OP_UDP_RECV, 0, idx));
        self.push(e);
    }

    fn arm_wake(&mut self) {
        let e = opcode::Read::new(
            Fd(self.wake_fd),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(ops::pack(OP_WAKE, 0, 0));
        self.push(e);
    }

    fn cancel(&mut self, target: u64) {
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(ops::pack(OP_CANCEL, 0, 0));
        self.push(e);
    }

    fn submit_send(&mut self, idx: u32, generation: u32) {
        let Some(conn) = self.conns.get_mut(idx, generation) else {
            return;
        };
        let rest = &conn.tx_inflight[conn.tx_off..];
        conn.send_inflight = true;
        let e = opcode::Send::new(Fd(conn.fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ops::pack(OP_SEND, generation, idx));
        self.push(e);
    }

    fn mark_dirty(&mut self, idx: u32) {
        if let Some((conn, _)) = self.conns.at_mut(idx) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    /// Frees a closing stream once nothing of it is in flight.
    fn maybe_finalize(&mut self, idx: u32, generation: u32) {
        let Some(conn) = self.conns.get_mut(idx, generation) else {
            return;
        };
        if !conn.closing || conn.recv_armed || conn.send_inflight {
            return;
        }
        let fd = conn.fd;
        let e = opcode::Close::new(Fd(fd))
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(ops::pack(OP_CLOSE, 0, 0));
        // A successful close posts nothing, so it is not counted in flight.
        self.push_uncounted(e);
        self.conns.remove(idx);
    }

    fn conn_for(&mut self, id: ConnId) -> Option<(&mut crate::conn::Conn, u32, u32)> {
        let (idx, generation) = Conns::split(id);
        self.conns
            .get_mut(idx, generation)
            .map(|c| (c, idx, generation))
    }
}

impl Context for Core {
    fn shard(&self) -> ShardId {
        self.shard
    }

    fn shard_count(&self) -> usize {
        self.shard_count
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn write(&mut self, conn: ConnId, data: &[u8]) -> Result<(), WriteError> {
        let max = self.config.max_outbound;
        let Some((c, idx, _)) = self.conn_for(conn) else {
            return Err(WriteError::UnknownTarget);
        };
        if c.closing {
            return Err(WriteError::UnknownTarget);
        }
        if c.tx_len() + data.len() > max {
            return Err(WriteError::QueueFull);
        }
        c.tx_pending.extend_from_slice(data);
        self.mark_dirty(idx);
        Ok(())
    }

    fn write_parts(&mut self, conn: ConnId, parts: &[&[u8]]) -> Result<(), WriteError> {
        let max = self.config.max_outbound;
        let Some((c, idx, _)) = self.conn_for(conn) else {
            return Err(WriteError::UnknownTarget);
        };
        if c.closing {
            return Err(WriteError::UnknownTarget);
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if c.tx_len() + len > max {
            return Err(WriteError::QueueFull);
        }
        for p in parts {
            c.tx_pending.extend_from_slice(p);
        }
        self.mark_dirty(idx);
        Ok(())
    }

    fn close(&mut self, conn: ConnId) {
        let Some((c, idx, _)) = self.conn_for(conn) else {
            return;
        };
        if c.close_after_flush.is_none() {
            c.close_after_flush = Some(CloseReason::Local);
        }
        self.mark_dirty(idx);
    }

    fn send_datagram(
        &mut self,
        via: SocketId,
        to: SocketAddr,
        parts: &[&[u8]],
    ) -> Result<(), WriteError> {
        let Some((fd, listener)) = self.udp.get(via.0 as usize).map(|s| (s.fd, s.listener)) else {
            return Err(WriteError::UnknownTarget);
        };
        let (slot, hdr) = match self.sends.fill(&to, parts) {
            Ok(v) => v,
            Err(e) => {
                if e == WriteError::QueueFull {
                    self.counters.drop_engine(EngineDrop::UdpSendSlotsFull, 1);
                }
                return Err(e);
            }
        };
        let e = opcode::SendMsg::new(Fd(fd), hdr)
            .build()
            .user_data(ops::pack(OP_UDP_SEND, u32::from(listener.0), slot));
        self.push(e);
        Ok(())
    }

    fn send_to_shard(&mut self, shard: ShardId, msg: MeshMessage) -> Result<(), MeshError> {
        self.send_envelope(shard, msg)
    }

    fn broadcast(&mut self, msg: MeshMessage) -> Result<usize, MeshError> {
        let mut accepted = 0;
        let mut refused = None;
        let me = self.shard;
        for to in (0..self.shard_count).filter(|&t| t != me) {
            match self.send_envelope(to, msg.clone()) {
                Ok(()) => accepted += 1,
                Err(e) => {
                    // Counted (mesh_full and a MeshFull drop): never silent.
                    self.counters.drop_plugin(DropReason::MeshFull);
                    refused.get_or_insert(e);
                }
            }
        }
        match refused {
            Some(e) if accepted == 0 => Err(e),
            _ => Ok(accepted),
        }
    }

    fn set_timer(&mut self, after: Duration, token: u64) {
        self.timer_seq += 1;
        self.timers.push(Reverse((
            self.now + after,
            self.timer_seq,
            self.current_plugin,
            token,
        )));
    }

    fn record_messages(&mut self, n: u64) {
        self.counters.msgs += n;
    }

    fn record_drop(&mut self, reason: DropReason) {
        self.counters.drop_plugin(reason);
    }

    fn record_latency(&mut self, name: &'static str, latency: Duration) {
        self.latency.record(name, latency);
    }
}

/// Timeouts and the drain.
impl Shard {
    /// Closes the streams whose first-bytes, idle or half-closed deadline
    /// has passed (the plugin hears `Error(ETIMEDOUT)`).
    fn expire_streams(&mut self) {
        if self
            .guard
            .next_deadline()
            .map_or(true, |at| at > self.core.now)
        {
            return;
        }
        let mut expired = std::mem::take(&mut self.expired);
        self.guard.poll_expired(self.core.now, &mut expired);
        for &(idx, generation) in &expired {
            self.teardown(idx, generation, CloseReason::Error(libc::ETIMEDOUT));
        }
        expired.clear();
        self.expired = expired;
    }

    /// Once a drain starts: stop accepting and close the UDP sockets; open
    /// streams go on until they finish or the engine is stopped.
    fn start_drain(&mut self) {
        if self.drained || !self.guard.draining() {
            return;
        }
        self.drained = true;
        for i in 0..self.core.listeners.len() {
            let fd = self.core.listeners[i].fd;
            self.core.cancel(ops::pack(OP_ACCEPT, 0, i as u32));
            // SAFETY: the listener fd is owned by this shard; the in-flight
            // accept holds its own reference to the socket until cancelled,
            // and -1 keeps `shutdown` from closing the number again.
            unsafe { libc::close(fd) };
            self.core.listeners[i].fd = -1;
        }
        for i in 0..self.core.udp.len() {
            let fd = self.core.udp[i].fd;
            self.core.cancel(ops::pack(OP_UDP_RECV, 0, i as u32));
            // SAFETY: as above, for the UDP sockets; their msghdrs stay in
            // place until the cancelled receives complete.
            unsafe { libc::close(fd) };
            self.core.udp[i].fd = -1;
        }
    }
}
