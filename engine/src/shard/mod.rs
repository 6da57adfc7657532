//! One shard: a pinned thread, its io_uring, its sockets, plugins and counters.
//!
//! One turn of the loop: reap every completion into a batch, dispatch it
//! (accepts, stream bytes, datagrams, send completions) to the plugins, fire
//! due timers, flush queued stream bytes as sends, publish listener counters and latency histograms, then one
//! `submit_and_wait` that both submits the turn's SQEs and parks until the
//! next completion (or timer). The steady state allocates nothing: the batch,
//! dirty list and per-stream buffers keep their capacity.
//!
//! This file holds the shard's state and its loop; `stream` the TCP paths
//! (accept, receive, send, teardown, timeouts, drain), `datagram` the UDP
//! paths, and `context` the core's submission helpers and the plugin-facing
//! [`Context`] implementation.

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

use crate::clock::TurnClock;
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

/// The overall bound of a `--batch-delay-us` wait: long enough never to matter
/// (deadlines have their own timeout operation), there only to make the kernel
/// treat the batch delay as "wait at most this long once something is ready".
static IDLE_WAIT: Timespec = Timespec::new().sec(3600);
use crate::udp::{self, SendPool, UdpSock};

mod context;
mod datagram;
mod stream;
mod tls;

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
    /// The shard's counters, live (the shard counts into them directly).
    pub stats: Arc<SharedStats>,
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
    /// Per listener (by id): its TLS, for `tls` listeners.
    pub tls: Vec<Option<Arc<crate::tls::ListenerTls>>>,
}

/// The shard's state other than plugins and receive buffers, which the
/// plugins see as their [`Context`].
struct Core {
    ring: IoUring,
    enter: crate::sys::ring::Enter,
    shard: ShardId,
    shard_count: usize,
    clock: TurnClock,
    config: EngineConfig,
    conns: Conns,
    dirty: Vec<u32>,
    listeners: Vec<TcpListenerSock>,
    udp: Vec<UdpSock>,
    sends: SendPool,
    timers: BinaryHeap<Reverse<(Instant, u64, u16, u64)>>,
    timer_seq: u64,
    current_plugin: u16,
    /// The same cells as `ShardShared::stats`: counted into in place.
    counters: Arc<SharedStats>,
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
    /// Per listener (by id): its TLS, for `tls` listeners.
    tls: Vec<Option<Arc<crate::tls::ListenerTls>>>,
    /// TLS handshakes in progress.
    handshakes: tls::HandshakeCaps,
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
        let ring = r.ring;
        // The loop's io_uring_enter calls go through the registered ring fd
        // (this is the submitting thread).
        let enter = crate::sys::ring::Enter::new(&ring);
        let bufring_err = |what: &str, e: io::Error| crate::StartError::Shard {
            shard: init.shard,
            message: format!(
                "registering the {what} provided buffer ring failed: {e} \
                     (IORING_REGISTER_PBUF_RING needs Linux 5.19; ENOMEM means the memory for \
                     --{what}-bufs buffers could not be had)"
            ),
        };
        let tcp_bufs =
            BufRing::adaptive(&ring.submitter(), BGID_TCP, cfg.tcp_bufs, cfg.tcp_buf_size)
                .map_err(|e| bufring_err("tcp", e))?;
        let udp_size = (cfg.udp_max_datagram as usize + udp::RECV_HEADROOM) as u32;
        let udp_bufs = BufRing::adaptive(&ring.submitter(), BGID_UDP, cfg.udp_bufs, udp_size)
            .map_err(|e| bufring_err("udp", e))?;
        let udp = init
            .udp
            .into_iter()
            .map(|(fd, l, p, local)| UdpSock::new(fd, l, p, local))
            .collect();
        let core = Core {
            ring,
            enter,
            shard: init.shard,
            shard_count: init.shard_count,
            clock: TurnClock::new(),
            conns: Conns::new(cfg.max_conns_per_shard),
            dirty: Vec::with_capacity(1024),
            listeners: init.tcp,
            udp,
            sends: SendPool::new(cfg.udp_send_slots, cfg.udp_max_datagram as usize),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            current_plugin: 0,
            counters: init.shared.stats.clone(),
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
                tls: init.tls,
                handshakes: Default::default(),
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
            self.core.clock.next_turn();
            self.dispatch();
            self.drain_mesh();
            self.fire_timers();
            self.expire_streams();
            self.start_drain();
            self.poll_kernel_drops(false);
            self.flush();
            self.core.send_wakes();
            self.core.counters.turns.add(1);
            self.core.latency.publish(&self.shared.latency);
            if self.shared.stop.load(Ordering::Acquire) {
                break;
            }
            self.tcp_bufs.refill();
            self.udp_bufs.refill();
            self.wait();
        }
        self.shutdown();
        self.core.counters.snapshot()
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
        self.core.counters.enters.add(1);
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
            self.core
                .enter
                .submit_and_wait(&mut self.core.ring, 1)
                .map(|n| n as usize)
        } else {
            // Wait for a full batch; min_wait makes the kernel return with
            // what it has once the delay has passed. The (far) overall timeout
            // matters: without one the kernel ends every wait when the delay
            // passes, completions or not, so an idle shard would wake every
            // `delay` us. With one, a delay that passes with nothing to show
            // turns into a plain wait for the first completion.
            let args = SubmitArgs::new().timespec(&IDLE_WAIT).min_wait_usec(delay);
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
            self.core.counters.mesh_in.add(n as u64);
            self.inbox.publish_depth();
        }
    }

    fn fire_timers(&mut self) {
        // Timers set while firing wait for the next turn, even when due now,
        // so a plugin re-arming a zero-delay timer cannot spin this loop.
        let last_seq = self.core.timer_seq;
        while let Some(Reverse((at, seq, plugin, token))) = self.core.timers.peek().copied() {
            if seq > last_seq || at > self.core.clock.now() {
                break;
            }
            self.core.timers.pop();
            self.core.current_plugin = plugin;
            let now = self.core.clock.now();
            self.plugins[plugin as usize].handle_timer(&mut self.core, now, token);
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
        // Closing the ring's fd (when the shard is dropped) now ends the ring.
        self.core.enter.unregister();
    }
}
