//! One shard: a pinned thread, its backend (io_uring or epoll), its
//! sockets, plugins and counters.
//!
//! One turn of the loop: reap every ready event into a batch, dispatch it
//! (accepts, stream bytes, datagrams, send completions) to the plugins, fire
//! due timers, flush queued stream bytes as sends, publish latency
//! histograms, then one wait that both submits the turn's operations and
//! parks until the next event (or timer). The steady state allocates
//! nothing: the batch, dirty list and per-stream buffers keep their capacity.
//!
//! The shard is generic over its [`Backend`]: it asks for neutral actions
//! and hears neutral [`Event`]s, and never names io_uring or epoll.
//!
//! This file holds the shard's state and its loop; `stream` the TCP paths
//! (accept, receive, send, teardown, timeouts, drain), `connect` the
//! streams plugins open themselves, `datagram` the UDP paths, `tls` the TLS
//! streams, and `context` the core's helpers and the plugin-facing
//! [`Context`] implementation.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringport_plugin::{
    CloseReason, ConnId, Context, DatagramInfo, DropReason, ListenerId, MeshError, MeshMessage,
    Plugin, ShardId, SocketId, StreamInfo, Verdict, WriteError,
};

use crate::backend::{Backend, Buffers, Event, RecvResult};
use crate::clock::TurnClock;
use crate::config::{EngineConfig, UdpDropCounter};
use crate::conn::Conns;
use crate::guard::{Guard, GuardInit};
use crate::latency::{LocalLatencies, SharedLatencies};
use crate::listener_stats::ListenerDrop;
use crate::mesh::{Envelope, Inbox, Outbox};
use crate::stats::{Counters, EngineDrop, SharedStats};
use crate::sys::{addr, socket};
use crate::udp::{self, SendPool, UdpSock};

mod connect;
mod context;
mod datagram;
mod stream;
mod tls;

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

/// Runs one plugin call and catches a panic in it: `None` then, and the
/// caller drops what the call was about (the connection, the datagram, the
/// message) while the shard goes on. Costs nothing when nothing panics
/// (unwinding tables, no check on the way). The plugin's own state may be
/// half-updated after a panic; the engine's is not, since the engine does
/// nothing of its own inside the call.
#[inline]
fn guarded<R>(call: impl FnOnce() -> R) -> Option<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(r) => Some(r),
        Err(payload) => {
            drop_payload(payload);
            None
        }
    }
}

/// Drops a caught panic's payload, whose own `Drop` may panic in turn (a
/// plugin can panic with any value): that second panic is caught and its
/// payload leaked, so no plugin value can unwind through the shard.
#[cold]
pub(crate) fn drop_payload(payload: Box<dyn std::any::Any + Send>) {
    if let Err(again) =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload)))
    {
        std::mem::forget(again);
    }
}

/// A caught panic's message, when it carries one.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a panic without a message"
    }
}

/// What the engine shares with a running shard.
#[derive(Debug)]
pub struct ShardShared {
    /// The shard's counters, live (the shard counts into them directly).
    pub stats: Arc<SharedStats>,
    /// Set to ask the shard to stop; followed by a write to `wake_fd`.
    pub stop: AtomicBool,
    /// eventfd the shard's backend watches: a write wakes the shard.
    pub wake_fd: OwnedFd,
    /// The shard's ring fd, for IORING_OP_MSG_RING wake-ups (-1 until set
    /// up, and always with the epoll backend).
    pub ring_fd: AtomicI32,
    /// Published latency histograms.
    pub latency: SharedLatencies,
    /// Why the shard's thread ended early (a panic outside any plugin
    /// call, or a plugin factory's), once it has.
    pub failure: std::sync::OnceLock<String>,
    /// A test failpoint: the shard panics, outside any plugin call, the
    /// next time it is asked to stop.
    #[doc(hidden)]
    pub poison: AtomicBool,
}

impl ShardShared {
    /// Shared state around the eventfd `wake_fd`.
    pub fn new(wake_fd: OwnedFd) -> ShardShared {
        ShardShared {
            stats: Default::default(),
            stop: Default::default(),
            wake_fd,
            ring_fd: AtomicI32::new(-1),
            latency: Default::default(),
            failure: Default::default(),
            poison: Default::default(),
        }
    }

    /// Wakes the shard from its wait.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: wake_fd is an eventfd owned by the engine for the shard's life;
        // the buffer is a live u64.
        unsafe {
            libc::write(self.wake_fd.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }
}

/// A TCP listener socket owned by a shard.
#[derive(Debug)]
pub struct TcpListenerSock {
    /// The socket (None once the drain has closed it).
    pub fd: Option<OwnedFd>,
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
    /// UDP sockets to receive on: (socket, listener, plugin, local).
    pub udp: Vec<(OwnedFd, ListenerId, u16, SocketAddr)>,
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
    /// Allowlists, limits, timeouts, handshake log.
    pub guard: GuardInit,
    /// Per listener (by id): its TLS, for `tls` listeners.
    pub tls: Vec<Option<Arc<crate::tls::ListenerTls>>>,
    /// The process-wide outbound budget.
    pub outbound: Arc<crate::outbound::OutboundPool>,
    /// Client TLS profiles by name, for outbound TLS streams.
    pub tls_clients: Vec<(String, Arc<crate::tls::client::ClientTls>)>,
}

/// The shard's state other than plugins and receive buffers, which the
/// plugins see as their [`Context`].
struct Core<B: Backend> {
    io: B,
    shard: ShardId,
    shard_count: usize,
    clock: TurnClock,
    config: EngineConfig,
    conns: Conns,
    dirty: Vec<u32>,
    listeners: Vec<TcpListenerSock>,
    udp: Vec<UdpSock>,
    sends: SendPool,
    /// Queued outbound bytes against the shard's and the process's budget.
    outbound: crate::outbound::OutboundBudget,
    timers: BinaryHeap<Reverse<(Instant, u64, u16, u64)>>,
    timer_seq: u64,
    /// Deadlines of outbound connects (see `connect`).
    connect_deadlines: BinaryHeap<connect::ConnectDeadline>,
    /// Client TLS profiles by name.
    tls_clients: Vec<(String, Arc<crate::tls::client::ClientTls>)>,
    current_plugin: u16,
    /// The same cells as `ShardShared::stats`: counted into in place.
    counters: Arc<SharedStats>,
    stopping: bool,
    /// When the kernel drop counters are next due to be read (None: not owed).
    drops_poll_at: Option<Instant>,
    /// Datagrams taken from the kernel, whatever became of them (denied,
    /// too large, truncated or handed to a plugin): what makes a read of
    /// the drop counters due. Not `datagrams_in`, which counts only the
    /// admitted, so a flood that is all denied would never have its
    /// drops read.
    udp_arrivals: u64,
    /// `udp_arrivals` at the last read of the drop counters.
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
}

/// A running shard.
pub struct Shard<B: Backend> {
    // Field order is drop order: the backend (in `core`) goes before the
    // receive buffers whose memory it may still reference.
    core: Core<B>,
    bufs: B::Buffers,
    plugins: Vec<Box<dyn Plugin>>,
    /// Entries the last reap took in.
    ready: usize,
    shared: Arc<ShardShared>,
    inbox: Inbox,
    guard: Guard,
    /// Streams whose deadline passed this turn (kept for its capacity).
    expired: Vec<(u32, u32)>,
    /// The drain has closed this shard's listeners.
    drained: bool,
    /// Per listener (by id): its TLS, for `tls` listeners.
    tls: Vec<Option<Arc<crate::tls::ListenerTls>>>,
    /// TLS handshakes in progress.
    handshakes: tls::HandshakeCaps,
    /// Per listener: accepting paused after running out of descriptors.
    accept_pause: Vec<AcceptPause>,
}

/// First pause of a listener whose accept ran out of descriptors or memory.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause (the step doubles while the failures go on).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A listener's accept backoff.
#[derive(Debug, Clone, Copy)]
struct AcceptPause {
    /// Accept again at this time (None: not paused).
    until: Option<Instant>,
    /// The next pause's length.
    step: Duration,
}

impl<B: Backend> std::fmt::Debug for Shard<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("shard", &self.core.shard)
            .field("backend", &self.core.io.name())
            .finish()
    }
}

impl<B: Backend> Shard<B> {
    /// A shard over `io` and its buffers. Runs on the shard's own thread.
    pub fn new(init: ShardInit, io: B, bufs: B::Buffers) -> Shard<B> {
        let cfg = init.config.clone();
        let udp = init
            .udp
            .into_iter()
            .map(|(fd, l, p, local)| UdpSock::new(fd, l, p, local))
            .collect();
        let listener_count = init.tcp.len();
        let core = Core {
            io,
            shard: init.shard,
            shard_count: init.shard_count,
            clock: TurnClock::new(),
            conns: Conns::new(cfg.max_conns_per_shard),
            dirty: Vec::with_capacity(1024),
            listeners: init.tcp,
            udp,
            sends: SendPool::new(cfg.udp_send_slots, cfg.udp_max_datagram as usize),
            outbound: crate::outbound::OutboundBudget::new(
                cfg.max_outbound_per_shard,
                init.outbound,
            ),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            connect_deadlines: BinaryHeap::new(),
            tls_clients: init.tls_clients,
            current_plugin: 0,
            counters: init.shared.stats.clone(),
            stopping: false,
            drops_poll_at: None,
            udp_arrivals: 0,
            drops_polled_at_count: 0,
            outbox: init.outbox,
            latency: LocalLatencies::default(),
            peers: init.peers,
            targets: Vec::with_capacity(init.shard_count),
            sent_to: vec![false; init.shard_count],
            wake_list: Vec::with_capacity(init.shard_count),
            config: cfg.clone(),
        };
        Shard {
            core,
            bufs,
            plugins: init.plugins,
            ready: 0,
            shared: init.shared,
            inbox: init.inbox,
            guard: Guard::new(init.shard, init.guard),
            expired: Vec::new(),
            accept_pause: vec![
                AcceptPause {
                    until: None,
                    step: ACCEPT_BACKOFF_MIN,
                };
                listener_count
            ],
            drained: false,
            tls: init.tls,
            handshakes: Default::default(),
        }
    }

    /// A plugin call panicked: counted (`plugin_panic`) and logged; the
    /// panic's message went to stderr through the panic hook.
    fn plugin_panicked(&mut self, call: &'static str, listener: u16, peer: SocketAddr) {
        self.core.counters.drop_engine(EngineDrop::PluginPanic, 1);
        let now = self.core.clock.now();
        self.guard.plugin_panic(call, listener, peer, now);
    }

    /// The shard's index.
    pub fn id(&self) -> ShardId {
        self.core.shard
    }

    /// Runs the loop until asked to stop, then drains and closes everything.
    pub fn run(mut self) -> Counters {
        for i in 0..self.core.listeners.len() {
            self.core.arm_accept(i as u32);
        }
        for i in 0..self.core.udp.len() {
            self.core.arm_udp(i as u32);
        }
        self.start_plugins();
        loop {
            self.reap();
            self.core.clock.next_turn();
            self.dispatch();
            self.drain_mesh();
            self.fire_timers();
            self.expire_streams();
            self.expire_connects();
            if !self.accept_pause.iter().all(|p| p.until.is_none()) {
                self.resume_accepts();
            }
            self.start_drain();
            self.poll_kernel_drops(false);
            self.flush();
            self.core.send_wakes();
            self.core.counters.turns.add(1);
            self.core
                .counters
                .outbound_queued
                .set(self.core.outbound.used() as u64);
            self.core.latency.publish(&self.shared.latency);
            if self.shared.stop.load(Ordering::Acquire) {
                if self.shared.poison.load(Ordering::Relaxed) {
                    panic!("failpoint: shard {} poisoned", self.core.shard);
                }
                break;
            }
            self.bufs.refill();
            self.wait();
        }
        self.shutdown();
        self.core.counters.snapshot()
    }

    #[inline]
    fn reap(&mut self) {
        self.ready = self.core.io.reap(&mut self.bufs, &self.core.counters);
    }

    fn wait(&mut self) {
        self.core.counters.enters.add(1);
        if !self.inbox.park() {
            // Messages are waiting: submit, run completions, do not block.
            self.core.io.wait(false, None);
            return;
        }
        let plugin_timer = self.core.timers.peek().map(|Reverse((at, ..))| *at);
        let timer = match (plugin_timer, self.guard.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let deadline = match (timer, self.core.drops_poll_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let deadline = match (deadline, self.next_accept_resume()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let deadline = match (deadline, self.core.next_connect_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.core.io.wait(true, deadline);
        self.inbox.unpark();
    }

    fn dispatch(&mut self) {
        for i in 0..self.ready {
            let Some(event) = self.core.io.event(i, &mut self.bufs) else {
                continue;
            };
            match event {
                Event::Accept {
                    listener,
                    result,
                    more,
                } => self.on_accept(listener, result, more),
                Event::Recv {
                    conn,
                    generation,
                    result,
                    more,
                } => self.on_recv(conn, generation, result, more),
                Event::Sent {
                    conn,
                    generation,
                    res,
                } => self.on_send(conn, generation, res),
                Event::Connected {
                    conn,
                    generation,
                    result,
                } => self.on_connected(conn, generation, result),
                Event::Datagram {
                    socket,
                    result,
                    more,
                } => self.on_udp_recv(socket, result, more),
                Event::DatagramSent {
                    slot,
                    listener,
                    res,
                } => self.on_udp_send(slot, u32::from(listener), res),
                // A wake-up of another shard failed: the eventfd never does.
                Event::WakeFailed { shard } => {
                    if let Some(peer) = self.core.peers.get(shard as usize) {
                        peer.wake();
                    }
                }
            }
        }
    }

    /// Hands every waiting cross-shard message to its plugin.
    fn drain_mesh(&mut self) {
        let plugins = &mut self.plugins;
        let core = &mut self.core;
        let mut received = None;
        let mut panics = 0;
        let n = self.inbox.drain(MESH_DRAIN_LIMIT, |from, env: Envelope| {
            // One clock read per batch: the time the first message was taken.
            let at = *received.get_or_insert_with(Instant::now);
            core.latency
                .record(MESH_LATENCY, at.saturating_duration_since(env.sent));
            if let Some(p) = plugins.get_mut(env.plugin as usize) {
                core.current_plugin = env.plugin;
                if guarded(|| p.handle_message(core, from, env.msg)).is_none() {
                    panics += 1;
                }
            }
        });
        if n > 0 {
            self.core.counters.mesh_in.add(n as u64);
            self.inbox.publish_depth();
        }
        for _ in 0..panics {
            self.plugin_panicked(
                "handle_message",
                u16::MAX,
                SocketAddr::from(([0, 0, 0, 0], 0)),
            );
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
            let p = &mut self.plugins[plugin as usize];
            let core = &mut self.core;
            if guarded(|| p.handle_timer(core, now, token)).is_none() {
                self.plugin_panicked(
                    "handle_timer",
                    u16::MAX,
                    SocketAddr::from(([0, 0, 0, 0], 0)),
                );
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
        self.core.io.cancel_all();
        let deadline = Instant::now() + DRAIN_LIMIT;
        while self.core.io.in_flight() > 0 && Instant::now() < deadline {
            self.reap();
            self.dispatch();
            self.flush();
            self.core.io.wait_briefly();
        }
        // Every socket is owned: freeing a slot or clearing a list closes it.
        for idx in self.core.conns.live_indices() {
            self.core.conns.remove(idx);
        }
        self.core.listeners.clear();
        self.core.udp.clear();
        self.core.io.finish();
    }
}
