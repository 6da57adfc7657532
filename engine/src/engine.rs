//! Starting, observing and stopping the shards.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use ringport_plugin::{ListenerId, PluginFactory, Registry, Transport};

use crate::backend::Backend;
use crate::config::{BackendChoice, BackendKind, EngineConfig, MeshWake, UdpDropCounter};
use crate::guard::{GuardInit, OpsShared};
use crate::listener_stats::ListenerCounters;
use crate::mesh::Mesh;
use crate::operations::Operations;
use crate::plan::{Mode, Plan};
use crate::shard::{Shard, ShardInit, ShardShared, TcpListenerSock};
use crate::stats::{Counters, ShardStats};
use crate::sys::epoll::Epoll;
use crate::sys::ring::{self, ProbeReport, RingError};
use crate::sys::socket;
use crate::sys::uring::Uring;

/// Why the engine did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// io_uring is unusable here; the message says why and what to do.
    #[error(transparent)]
    Ring(RingError),
    /// A listener names a protocol nobody registered.
    #[error("listener `{listener}`: no protocol named `{protocol}` (available: {available})")]
    UnknownProtocol {
        /// The listener spec.
        listener: String,
        /// The protocol asked for.
        protocol: String,
        /// Registered names.
        available: String,
    },
    /// A protocol does not serve the listener's transport.
    #[error("listener `{listener}`: protocol `{protocol}` does not serve {transport}")]
    UnsupportedTransport {
        /// The listener spec.
        listener: String,
        /// The protocol.
        protocol: String,
        /// The transport asked for.
        transport: Transport,
    },
    /// A port could not be bound.
    #[error("listener `{listener}`: cannot bind {addr}: {source}{hint}")]
    Bind {
        /// The listener spec.
        listener: String,
        /// The address and port.
        addr: SocketAddr,
        /// The errno.
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The plan needs more file descriptors than the process may open.
    #[error("{0}")]
    Limits(String),
    /// A configuration value is out of range.
    #[error("invalid engine setting: {0}")]
    Config(String),
    /// A shard could not be pinned to its CPU.
    #[error("shard {shard}: cannot pin to CPU {cpu} (not in this process's allowed CPUs?)")]
    Pin {
        /// Shard index.
        shard: usize,
        /// CPU.
        cpu: usize,
    },
    /// A shard failed while setting up.
    #[error("shard {shard}: {message}")]
    Shard {
        /// Shard index.
        shard: usize,
        /// What failed.
        message: String,
    },
}

struct ShardHandle {
    cpu: usize,
    shared: Arc<ShardShared>,
    join: Option<JoinHandle<Counters>>,
}

/// A running engine. Dropping it stops and joins the shards.
pub struct EngineHandle {
    shards: Vec<ShardHandle>,
    notices: Vec<String>,
    /// What the io_uring probe found (None: io_uring is not used).
    probe: Option<ProbeReport>,
    backend: BackendKind,
    kernel: String,
    ops: Arc<OpsShared>,
    mesh: Arc<Mesh>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("shards", &self.shards.len())
            .field("probe", &self.probe)
            .finish()
    }
}

/// Lets another thread (a signal handler thread) stop the engine.
#[derive(Clone)]
pub struct Stopper {
    shared: Vec<Arc<ShardShared>>,
    ops: Arc<OpsShared>,
}

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopper")
            .field("shards", &self.shared.len())
            .finish()
    }
}

impl Stopper {
    /// Starts a graceful drain: every shard stops accepting, closes its UDP
    /// sockets and lets open streams go on; returns at once. Follow with
    /// [`Stopper::stop`] once the streams are done or the drain timed out.
    pub fn drain(&self) {
        self.ops.draining.store(true, Ordering::Release);
        for s in &self.shared {
            s.wake();
        }
    }

    /// Asks every shard to stop; returns at once.
    pub fn stop(&self) {
        for s in &self.shared {
            s.stop.store(true, Ordering::Release);
            s.wake();
        }
    }
}

type Ready = mpsc::Sender<(usize, Result<Vec<String>, StartError>)>;

/// Runs a set-up shard on its thread and says it started.
fn serve<B: Backend>(
    shard: Shard<B>,
    notes: Vec<String>,
    tx: &Ready,
    ready: &std::cell::Cell<bool>,
) -> Counters {
    let _ = tx.send((shard.id(), Ok(notes)));
    ready.set(true);
    shard.run()
}

/// A shard's thread is ending on a panic outside any plugin call (its
/// sockets have closed as its state unwound): records why, and stops every
/// shard, since a server with a dead shard would accept on ports nobody
/// serves or lose the messages routed to it. `tx` is set while start-up
/// still waits to hear from this shard.
fn died(peers: &[Arc<ShardShared>], shard: usize, what: &str, tx: Option<&Ready>) -> Counters {
    if let Some(tx) = tx {
        let _ = tx.send((
            shard,
            Err(StartError::Shard {
                shard,
                message: format!("its thread panicked: {what}"),
            }),
        ));
    }
    let _ = peers[shard]
        .failure
        .set(format!("shard {shard} panicked: {what}"));
    for p in peers {
        p.stop.store(true, Ordering::Release);
        p.wake();
    }
    Counters::default()
}

/// A shard that could not set its backend up: its sockets close as `init`
/// drops.
fn fail(init: ShardInit, e: StartError, tx: &Ready, ready: &std::cell::Cell<bool>) -> Counters {
    let _ = tx.send((init.shard, Err(e)));
    ready.set(true);
    Counters::default()
}

/// Picks the backend: `auto` probes io_uring (on a thread of its own:
/// tearing a ring down queues task work on the thread that made it, which
/// would make the caller's next blocking call fail with EINTR) and falls
/// back to epoll, with one notice naming the cause and the fix, when this
/// machine does not allow io_uring.
fn choose_backend(
    choice: BackendChoice,
    notices: &mut Vec<String>,
) -> Result<(BackendKind, Option<ProbeReport>), StartError> {
    if choice == BackendChoice::Epoll {
        return Ok((BackendKind::Epoll, None));
    }
    let probe = std::thread::scope(|s| s.spawn(ring::probe).join())
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    match (probe, choice) {
        (Ok(p), _) => Ok((BackendKind::IoUring, Some(p))),
        (Err(e), BackendChoice::IoUring) => Err(StartError::Ring(e)),
        (Err(e), _) if e.falls_back() => {
            notices.push(format!(
                "serving on the epoll backend: {e} (--backend io-uring makes this an error)"
            ));
            Ok((BackendKind::Epoll, None))
        }
        (Err(e), _) => Err(StartError::Ring(e)),
    }
}

fn bind_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => {
            " (the port is in use: stop the other process, pick another range, or use --mode reuseport if the other listener is also ringport's)"
        }
        Some(libc::EADDRNOTAVAIL) => " (the address is not assigned to any local interface)",
        Some(libc::EACCES) => " (ports below 1024 need CAP_NET_BIND_SERVICE)",
        Some(libc::EMFILE) | Some(libc::ENFILE) => " (out of file descriptors: raise `ulimit -n`)",
        _ => "",
    }
}

/// Everything bound for one shard before its thread starts.
struct Bound {
    tcp: Vec<TcpListenerSock>,
    udp: Vec<(OwnedFd, ListenerId, u16, SocketAddr)>,
}

/// File descriptors each shard holds besides its sockets: ring, eventfd,
/// plus a few for the process (stdio, epoll of the runtime, logs).
pub const FDS_PER_SHARD: usize = 2;

impl EngineHandle {
    /// Probes io_uring, binds every port of the plan, starts one pinned thread
    /// per shard and returns once all of them are serving.
    pub fn start(
        plan: &Plan,
        config: EngineConfig,
        registry: &Registry,
    ) -> Result<EngineHandle, StartError> {
        EngineHandle::start_with(plan, config, registry, Operations::default())
    }

    /// [`EngineHandle::start`] with the operator's allowlists, limits,
    /// timeouts and handshake log.
    pub fn start_with(
        plan: &Plan,
        config: EngineConfig,
        registry: &Registry,
        operations: Operations,
    ) -> Result<EngineHandle, StartError> {
        config.validate().map_err(StartError::Config)?;
        config
            .validate_mesh(plan.shards.len())
            .map_err(StartError::Config)?;
        // A CPU number past what an affinity mask holds cannot be pinned to
        // (and core_affinity's mask would be indexed out of bounds).
        if let Some(sp) = plan
            .shards
            .iter()
            .find(|sp| sp.cpu >= libc::CPU_SETSIZE as usize)
        {
            return Err(StartError::Pin {
                shard: sp.shard,
                cpu: sp.cpu,
            });
        }
        let admission = operations
            .admission(plan)
            .map_err(|e| StartError::Config(e.to_string()))?;
        let listener_open: Vec<Arc<AtomicU32>> = plan
            .listeners
            .iter()
            .map(|_| Arc::new(AtomicU32::new(0)))
            .collect();
        let ops_shared = Arc::new(OpsShared {
            listeners: plan
                .shards
                .iter()
                .map(|_| plan.listeners.iter().map(|_| Default::default()).collect())
                .collect(),
            draining: Default::default(),
        });
        let mut notices = Vec::new();
        let (backend, probe) = choose_backend(config.backend, &mut notices)?;

        // One plugin instance per (protocol, shard): map protocols to indices.
        let mut protocols: Vec<String> = Vec::new();
        let mut factories: Vec<Arc<dyn PluginFactory>> = Vec::new();
        let mut listener_plugin = Vec::with_capacity(plan.listeners.len());
        for spec in &plan.listeners {
            let Some(f) = registry.get(&spec.protocol) else {
                return Err(StartError::UnknownProtocol {
                    listener: spec.to_string(),
                    protocol: spec.protocol.clone(),
                    available: registry.names().collect::<Vec<_>>().join(", "),
                });
            };
            if !f.supports(spec.transport) {
                return Err(StartError::UnsupportedTransport {
                    listener: spec.to_string(),
                    protocol: spec.protocol.clone(),
                    transport: spec.transport,
                });
            }
            let idx = match protocols.iter().position(|p| *p == spec.protocol) {
                Some(i) => i,
                None => {
                    protocols.push(spec.protocol.clone());
                    factories.push(f.clone());
                    protocols.len() - 1
                }
            };
            listener_plugin.push(idx as u16);
        }

        // File descriptors: sockets + per-shard fixed, the rest for streams.
        let nofile = crate::limits::raise_nofile_limit()
            .map_err(|e| StartError::Limits(format!("cannot read RLIMIT_NOFILE: {e}")))?;
        let budget = crate::limits::check_fd_budget(
            plan,
            nofile.soft,
            FDS_PER_SHARD,
            crate::limits::MIN_CONNECTION_FDS,
        )
        .map_err(|e| StartError::Limits(e.to_string()))?;
        let mut config = config;
        let per_shard = (budget.for_connections as usize / plan.shards.len().max(1)).max(1);
        if per_shard < config.max_conns_per_shard {
            config.max_conns_per_shard = per_shard;
        }

        let reuse = plan.mode == Mode::Reuseport;
        let mut bound: Vec<Bound> = Vec::with_capacity(plan.shards.len());
        for sp in &plan.shards {
            let mut b = Bound {
                tcp: Vec::new(),
                udp: Vec::new(),
            };
            for binding in &sp.bindings {
                let spec = &plan.listeners[binding.listener.0 as usize];
                let plugin = listener_plugin[binding.listener.0 as usize];
                for port in binding.ports.iter() {
                    let addr = SocketAddr::new(spec.addr, port);
                    let opts = socket::BindOptions {
                        reuseport: reuse,
                        backlog: config.backlog,
                        udp_rcvbuf: config.udp_rcvbuf,
                        rxq_ovfl_cmsg: config.udp_drop_counter == UdpDropCounter::Cmsg,
                    };
                    let fd = match socket::bind(spec.transport, addr, opts) {
                        Ok(fd) => fd,
                        Err(e) => {
                            // Every socket bound so far closes as `bound` drops.
                            let hint = bind_hint(&e);
                            return Err(StartError::Bind {
                                listener: spec.to_string(),
                                addr,
                                source: e,
                                hint,
                            });
                        }
                    };
                    match spec.transport {
                        Transport::Tcp => b.tcp.push(TcpListenerSock {
                            fd: Some(fd),
                            listener: binding.listener,
                            plugin,
                            local: addr,
                        }),
                        Transport::Udp => b.udp.push((fd, binding.listener, plugin, addr)),
                    }
                }
            }
            bound.push(b);
        }

        let shard_count = plan.shards.len();
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<Vec<String>, StartError>)>();
        let mut handles: Vec<ShardHandle> = Vec::with_capacity(shard_count);
        // Every shard's shared state exists before any shard starts, so that
        // a shard can wake any other from its first turn.
        let mut shareds: Vec<Arc<ShardShared>> = Vec::with_capacity(shard_count);
        for sp in &plan.shards {
            // SAFETY: eventfd has no memory preconditions; the result is checked.
            let wake_fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if wake_fd < 0 {
                // Sockets and the eventfds made so far close as they drop.
                let e = std::io::Error::last_os_error();
                return Err(StartError::Shard {
                    shard: sp.shard,
                    message: format!("eventfd failed: {e}"),
                });
            }
            // SAFETY: a fresh eventfd that nothing else owns.
            let wake_fd = unsafe { OwnedFd::from_raw_fd(wake_fd) };
            shareds.push(Arc::new(ShardShared::new(wake_fd)));
        }
        let peers: Arc<[Arc<ShardShared>]> = shareds.into();
        let (mesh, ports) = Mesh::new(shard_count, config.mesh_capacity);
        let outbound = Arc::new(crate::outbound::OutboundPool::new(
            config.max_outbound_total,
        ));
        let msg_ring =
            probe.as_ref().is_some_and(|p| p.msg_ring) && config.mesh_wake == MeshWake::MsgRing;
        for ((sp, b), (outbox, inbox)) in plan.shards.iter().zip(bound).zip(ports) {
            let shared = peers[sp.shard].clone();
            let peers_for_shard = peers.clone();
            let everyone = peers.clone();
            let shard = sp.shard;
            let cpu = sp.cpu;
            let cfg = config.clone();
            let facts = factories.clone();
            let sh = shared.clone();
            let tx = ready_tx.clone();
            let pool = outbound.clone();
            let guard = GuardInit {
                listeners: admission
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (a.clone(), operations.listener(i).limits))
                    .collect(),
                listener_open: listener_open.clone(),
                log: operations.log.as_ref().map(|l| l[sp.shard].clone()),
                udp_source_window: operations.udp_source_window,
                ipv6_prefix: operations.ipv6_source_prefix,
                shared: ops_shared.clone(),
            };
            let tls: Vec<_> = (0..plan.listeners.len())
                .map(|i| operations.listener(i).tls)
                .collect();
            let tls_clients = operations.tls_clients.clone();
            let spawn = std::thread::Builder::new()
                .name(format!("ringport-shard-{shard}"))
                .spawn(move || {
                    // Whether start-up has heard from this shard.
                    let ready = std::cell::Cell::new(false);
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                            // The shard's sockets close as `b` drops.
                            let _ = tx.send((shard, Err(StartError::Pin { shard, cpu })));
                            ready.set(true);
                            return Counters::default();
                        }
                        let plugins = facts.iter().map(|f| f.create(shard, shard_count)).collect();
                        let udp_sockets = b.udp.len();
                        let init = ShardInit {
                            shard,
                            shard_count,
                            config: cfg.clone(),
                            tcp: b.tcp,
                            udp: b.udp,
                            plugins,
                            shared: sh.clone(),
                            peers: peers_for_shard,
                            outbox,
                            inbox,
                            guard,
                            tls,
                            tls_clients,
                            outbound: pool,
                        };
                        match backend {
                            BackendKind::IoUring => {
                                match Uring::setup(shard, &cfg, &sh, udp_sockets, msg_ring) {
                                    Ok(u) => serve(
                                        Shard::new(init, u.backend, u.buffers),
                                        u.notices,
                                        &tx,
                                        &ready,
                                    ),
                                    Err(e) => fail(init, e, &tx, &ready),
                                }
                            }
                            BackendKind::Epoll => match Epoll::setup(shard, &cfg, &sh, udp_sockets)
                            {
                                Ok((e, bufs, notes)) => {
                                    serve(Shard::new(init, e, bufs), notes, &tx, &ready)
                                }
                                Err(e) => fail(init, e, &tx, &ready),
                            },
                        }
                    }));
                    match ran {
                        Ok(counters) => counters,
                        Err(payload) => {
                            let what = crate::shard::panic_message(&*payload).to_owned();
                            crate::shard::drop_payload(payload);
                            died(&everyone, shard, &what, (!ready.get()).then_some(&tx))
                        }
                    }
                });
            let join = match spawn {
                Ok(j) => j,
                Err(e) => {
                    stop_and_join(&mut handles);
                    return Err(StartError::Shard {
                        shard,
                        message: format!("cannot spawn its thread: {e}"),
                    });
                }
            };
            handles.push(ShardHandle {
                cpu,
                shared,
                join: Some(join),
            });
        }
        drop(ready_tx);
        let mut failure = None;
        for _ in 0..shard_count {
            match ready_rx.recv() {
                Ok((_, Ok(notes))) => notices.extend(notes),
                Ok((_, Err(e))) => {
                    if failure.is_none() {
                        failure = Some(e);
                    }
                }
                Err(_) => break,
            }
        }
        let mut handle = EngineHandle {
            shards: handles,
            notices,
            probe,
            backend,
            kernel: ring::kernel_release(),
            ops: ops_shared,
            mesh,
        };
        if let Some(e) = failure {
            handle.stop_and_join();
            return Err(e);
        }
        Ok(handle)
    }

    /// Messages worth logging from start-up (kernel flags dropped, ...).
    pub fn notices(&self) -> &[String] {
        &self.notices
    }

    /// What the io_uring probe found (None on the epoll backend).
    pub fn probe(&self) -> Option<&ProbeReport> {
        self.probe.as_ref()
    }

    /// The backend the shards run on.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// The running kernel's release.
    pub fn kernel(&self) -> &str {
        &self.kernel
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// A snapshot of every shard's counters (live: each shard counts into shared cells).
    pub fn stats(&self) -> Vec<ShardStats> {
        self.shards
            .iter()
            .enumerate()
            .map(|(i, s)| ShardStats {
                shard: i,
                cpu: s.cpu,
                counters: s.shared.stats.snapshot(),
            })
            .collect()
    }

    /// Every shard's latency histograms (plugin-reported, and the engine's
    /// `mesh_handoff`), as published at its last turn; index = shard.
    pub fn latencies(&self) -> Vec<Vec<(&'static str, crate::latency::Histogram)>> {
        self.shards
            .iter()
            .map(|s| s.shared.latency.snapshot())
            .collect()
    }

    /// Cross-shard messages waiting for `shard`, as of its last turn.
    pub fn mesh_depth(&self, shard: usize) -> usize {
        self.mesh.depth(shard)
    }

    /// A handle that can stop the engine from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            ops: self.ops.clone(),
            shared: self.shards.iter().map(|s| s.shared.clone()).collect(),
        }
    }

    /// Every listener's counters summed over shards, in plan order (as
    /// published at the shards' last turns).
    pub fn listener_stats(&self) -> Vec<ListenerCounters> {
        let n = self.ops.listeners.first().map_or(0, Vec::len);
        (0..n)
            .map(|l| {
                let mut c = ListenerCounters::default();
                for shard in &self.ops.listeners {
                    c.add(&shard[l].snapshot());
                }
                c
            })
            .collect()
    }

    /// Whether a drain was started ([`Stopper::drain`]).
    pub fn draining(&self) -> bool {
        self.ops.draining.load(Ordering::Acquire)
    }

    /// Stops every shard, waits for them, and returns their final counters.
    pub fn shutdown(mut self) -> Vec<ShardStats> {
        self.stop_and_join();
        self.stats()
    }

    /// Waits for the shards to stop (after [`Stopper::stop`]) and returns their final counters.
    pub fn join(mut self) -> Vec<ShardStats> {
        for s in &mut self.shards {
            join_one(s);
        }
        self.stats()
    }

    /// Why the engine stopped on its own, when it did: the first shard
    /// whose thread died (every other shard is then stopped too).
    pub fn failure(&self) -> Option<String> {
        self.shards
            .iter()
            .find_map(|s| s.shared.failure.get().cloned())
    }

    /// A test failpoint: shard `shard` panics outside any plugin call.
    #[doc(hidden)]
    pub fn poison_shard(&self, shard: usize) {
        if let Some(s) = self.shards.get(shard) {
            s.shared.poison.store(true, Ordering::Relaxed);
            s.shared.stop.store(true, Ordering::Release);
            s.shared.wake();
        }
    }

    fn stop_and_join(&mut self) {
        stop_and_join(&mut self.shards);
    }
}

fn stop_and_join(shards: &mut [ShardHandle]) {
    for s in shards.iter() {
        s.shared.stop.store(true, Ordering::Release);
        s.shared.wake();
    }
    for s in shards.iter_mut() {
        join_one(s);
    }
}

/// Joins a shard's thread; a panic that got past the thread's own catch
/// (in its panic handling) is recorded as its failure, not discarded.
fn join_one(s: &mut ShardHandle) {
    if let Some(j) = s.join.take() {
        if let Err(payload) = j.join() {
            let why = format!(
                "a shard thread panicked: {}",
                crate::shard::panic_message(&*payload)
            );
            crate::shard::drop_payload(payload);
            let _ = s.shared.failure.set(why);
        }
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        // Each eventfd closes with the last reference to its shard's state.
        self.stop_and_join();
    }
}
