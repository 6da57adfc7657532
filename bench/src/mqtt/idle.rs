//! `mqtt-idle`: many connected clients that do nothing, and what they cost
//! the server in resident memory.
//!
//! The server is started and left alone for [`SETTLE`]; its `VmRSS` is
//! read (before). The clients are then connected by a child process of
//! the harness, pinned to the client CPU: `--clients` clients in batches
//! of [`SETUP_BATCH`] (connect, CONNECT with a clean session and a 60 s
//! keep-alive, wait for every CONNACK of the batch), so the broker never
//! has more than a batch of connections waiting to be accepted. With every
//! client connected the run waits `--warmup`, measures the server's CPU
//! over `--duration` (what idle clients cost it: timers, keep-alive
//! bookkeeping), and reads `VmRSS` again at the end (after). Memory per
//! idle client is `(after - before) / clients`. The clients send a PINGREQ
//! every 30 s, so a long `--duration` does not trip the broker's
//! keep-alive; at the end each sends DISCONNECT and the child exits.
//!
//! For the in-process ringport target the reading is the whole harness
//! process's, whose heap holds what earlier runs freed: the heap is
//! trimmed (`malloc_trim`) before the first reading, but pages the
//! allocator keeps can still be reused by the clients' state and go
//! unseen, so a later round in one process can show less than the first
//! (1.4 against 1.9 KB per client here). The faithful figure is a fresh
//! process's first run: `--scenario mqtt-idle --target ringport` alone.
//!
//! Why a child process: the in-process ringport target shares this
//! process's descriptor limit and `VmRSS`. In a child the clients' 10,000
//! descriptors do not count against the engine's (20,000 here, and a
//! process without CAP_SYS_RESOURCE cannot raise it), and nothing of the
//! client is in the server's memory reading. The child is forked from a
//! process with threads, so between `fork` and `_exit` it allocates
//! nothing: every CONNECT is encoded (with ringport's codec) before the
//! fork, the streams go into a vector reserved before it, and a CONNACK is
//! decoded (with the codec, which allocates nothing for one) from a buffer
//! on the stack.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ringport_protocols::mqtt::codec::{self, Decoded, Packet};

use super::wire::{self, ReasonCode, Version};
use super::{MqttFigures, MqttSpec};
use crate::config::LoadSpec;
use crate::cpu::{cpu_ticks, CpuSource};
use crate::run::Figures;
use crate::servers::{self, Server, ServerSpec, Target};

/// How long the server is left alone before the first memory reading.
pub const SETTLE: Duration = Duration::from_millis(300);
/// Clients set up at a time.
pub const SETUP_BATCH: usize = 64;
/// How often the held clients send a PINGREQ (ms).
const PING_EVERY_MS: i32 = 30_000;
/// How long the harness waits for the child to connect every client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `mqtt-idle` against `target`.
pub(super) fn run(
    spec: &LoadSpec,
    m: &MqttSpec,
    target: Target,
    server: &ServerSpec,
    progress: Option<&str>,
) -> Result<Figures> {
    let srv = servers::start(target, server)?;
    let cpus = super::server_cpus(target, server);
    let result = drive(spec, m, srv.as_ref(), &cpus, progress);
    srv.stop();
    result
}

/// What the child gets, all made before the fork.
struct Plan {
    addrs: Vec<SocketAddr>,
    /// Every client's CONNECT, one after the other.
    connects: Vec<u8>,
    /// Where each client's CONNECT ends in `connects`.
    ends: Vec<usize>,
    ping: Vec<u8>,
    bye: Vec<u8>,
    version: Version,
    cpu: usize,
}

/// Why the child stopped before holding every client (its exit status).
const CHILD_ERRORS: [&str; 6] = [
    "",
    "cannot pin to the client CPU",
    "a connect failed or timed out",
    "sending CONNECT failed",
    "no CONNACK (the broker closed the connection, or 10 s passed)",
    "the broker refused a CONNECT or answered it with something else",
];

/// The forked child that holds the clients.
struct Clients {
    pid: libc::pid_t,
    /// The child writes the number of clients connected here (8 bytes).
    ready: std::fs::File,
    /// Closing it tells the child to disconnect and exit.
    stop: Option<std::fs::File>,
}

fn pipe() -> Result<(std::fs::File, std::fs::File)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(anyhow!("pipe2: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are new and owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((r.into(), w.into()))
}

impl Clients {
    /// Forks the child that connects and holds the clients of `plan`.
    fn spawn(plan: &Plan) -> Result<Clients> {
        let (ready_r, ready_w) = pipe()?;
        let (stop_r, stop_w) = pipe()?;
        let mut held: Vec<TcpStream> = Vec::with_capacity(plan.ends.len());
        // SAFETY: the child runs only `child`, which allocates nothing and
        // ends in `_exit` (see the module doc).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(anyhow!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // The parent's ends: the child must not keep `stop` open itself.
            drop((ready_r, stop_w));
            let code = child(plan, &mut held, ready_w, stop_r);
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        drop((ready_w, stop_r));
        Ok(Clients {
            pid,
            ready: ready_r,
            stop: Some(stop_w),
        })
    }

    /// Waits until the child holds every client; returns how many.
    fn wait_connected(&mut self) -> Result<u64> {
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&self.ready),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, CONNECT_TIMEOUT.as_millis() as i32) };
        let mut count = [0u8; 8];
        if n == 1 && self.ready.read_exact(&mut count).is_ok() {
            return Ok(u64::from_le_bytes(count));
        }
        // It failed: its exit status says why.
        let status = self.reap();
        let why = (status >= 0)
            .then(|| CHILD_ERRORS.get(status as usize).copied())
            .flatten()
            .unwrap_or("it did not finish in time");
        Err(anyhow!("the idle clients' process stopped: {why}"))
    }

    /// Stops the child (DISCONNECT from every client) and waits for it;
    /// returns its exit status (-1: killed or unknown).
    fn reap(&mut self) -> i32 {
        self.stop.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut status = 0;
            // SAFETY: waits for our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                return if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    -1
                };
            }
            if r < 0 {
                return -1;
            }
            if Instant::now() > deadline {
                // SAFETY: signals our own child.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.reap();
        }
    }
}

/// The child: connect, hold, ping, disconnect. Returns its exit status.
/// Allocates nothing (it runs after a fork in a process with threads).
fn child(
    plan: &Plan,
    held: &mut Vec<TcpStream>,
    mut ready: std::fs::File,
    stop: std::fs::File,
) -> i32 {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set, and
    // CPU_SET writes inside it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(plan.cpu, &mut set);
        set
    };
    // SAFETY: `set` is a valid mask for this process.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return 1;
    }
    let n = plan.ends.len();
    let mut start = 0;
    while start < n {
        let end = (start + SETUP_BATCH).min(n);
        for i in start..end {
            let addr = plan.addrs[i % plan.addrs.len()];
            let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
                return 2;
            };
            let _ = s.set_nodelay(true);
            let from = if i == 0 { 0 } else { plan.ends[i - 1] };
            if (&s).write_all(&plan.connects[from..plan.ends[i]]).is_err() {
                return 3;
            }
            held.push(s);
        }
        for s in &held[start..end] {
            match await_connack(s, plan.version) {
                Ok(true) => {}
                Ok(false) => return 5,
                Err(()) => return 4,
            }
        }
        start = end;
    }
    if ready.write_all(&(n as u64).to_le_bytes()).is_err() {
        return 6;
    }
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&stop),
        events: libc::POLLIN,
        revents: 0,
    };
    // Until the harness closes `stop` (POLLHUP), a PINGREQ from every
    // client every 30 s; the PINGRESPs stay in the sockets unread.
    // SAFETY: one valid pollfd.
    while unsafe { libc::poll(&mut pfd, 1, PING_EVERY_MS) } == 0 {
        for s in held.iter() {
            let _ = (&*s).write_all(&plan.ping);
        }
    }
    for s in held.iter() {
        let _ = (&*s).write_all(&plan.bye);
    }
    0
}

/// Reads one CONNACK from `s`: `Ok(true)` accepted, `Ok(false)` refused or
/// another packet, `Err` nothing within 10 s or the stream ended.
fn await_connack(mut s: &TcpStream, version: Version) -> Result<bool, ()> {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = [0u8; 512];
    let mut len = 0;
    loop {
        match codec::decode(&buf[..len], Some(version), buf.len()) {
            Ok(Decoded::Packet(Packet::ConnAck(c), _)) => return Ok(c.code == ReasonCode::SUCCESS),
            Ok(Decoded::Packet(..)) | Err(_) => return Ok(false),
            Ok(Decoded::Incomplete) => {}
        }
        match s.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return Err(()),
            Ok(n) => len += n,
        }
    }
}

fn drive(
    spec: &LoadSpec,
    m: &MqttSpec,
    srv: &dyn Server,
    server_cpus: &[usize],
    progress: Option<&str>,
) -> Result<Figures> {
    let version = m.version.codec();
    let nonce = super::pubsub::clock_nonce();
    let mut plan = Plan {
        addrs: srv.addrs(),
        connects: Vec::with_capacity(m.clients * 32),
        ends: Vec::with_capacity(m.clients),
        ping: Vec::new(),
        bye: Vec::new(),
        version,
        cpu: spec.cpus[0],
    };
    for i in 0..m.clients {
        let id = format!("rb{:x}-i{i}", nonce & 0xff_ffff);
        wire::connect(&id, version, &mut plan.connects);
        plan.ends.push(plan.connects.len());
    }
    wire::pingreq(version, &mut plan.ping);
    wire::disconnect(version, &mut plan.bye);

    std::thread::sleep(SETTLE);
    // An in-process server shares the heap with what earlier runs freed:
    // without this, the clients' state could reuse those resident pages
    // and go unseen in the reading after.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only gives free heap pages back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    let rss_before = srv.rss();
    let started = Instant::now();
    let mut clients = Clients::spawn(&plan)?;
    let connected = clients
        .wait_connected()
        .map_err(|e| e.context(format!("connecting {} idle clients", m.clients)))?;
    if progress.is_some() {
        eprintln!(
            "mqtt-idle: {connected} clients connected in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    std::thread::sleep(spec.warmup);
    let server_cpu = srv.cpu();
    let client_cpu = CpuSource::Process(clients.pid as u32);
    let (s0, t0, k0, c0) = (
        server_cpu.sample(),
        cpu_ticks(server_cpus),
        cpu_ticks(&spec.cpus),
        client_cpu.sample(),
    );
    let w0 = Instant::now();
    std::thread::sleep(spec.duration);
    let window = w0.elapsed().as_secs_f64();
    let (s1, t1, k1, c1) = (
        server_cpu.sample(),
        cpu_ticks(server_cpus),
        cpu_ticks(&spec.cpus),
        client_cpu.sample(),
    );
    let rss_after = srv.rss();
    let status = clients.reap();
    if status != 0 {
        eprintln!("mqtt-idle: the idle clients' process ended with status {status}");
    }

    let per_client = rss_before
        .zip(rss_after)
        .filter(|_| connected > 0)
        .map(|(a, b)| (b as f64 - a as f64) / connected as f64);
    let mqtt = MqttFigures {
        idle_clients: Some(connected),
        rss_before,
        rss_after,
        rss_per_client: per_client,
        ..MqttFigures::default()
    };
    let mut f = Figures {
        sent: m.clients as u64,
        received: Some(connected),
        lost: Some((m.clients as u64).saturating_sub(connected)),
        mqtt: Some(mqtt),
        ..Figures::default()
    };
    let cpu = super::CpuWindow {
        server: s0.zip(s1).map(|(a, b)| b.since(&a)),
        client: c0.zip(c1).map(|(a, b)| b.since(&a)),
        server_idle: t0.zip(t1).and_then(|(a, b)| b.idle_pct_since(&a)),
        client_idle: k0.zip(k1).and_then(|(a, b)| b.idle_pct_since(&a)),
        server_cpus: server_cpus.len(),
        client_cpus: spec.cpus.len(),
        window,
    };
    cpu.fill(&mut f, 0, 1);
    Ok(f)
}
