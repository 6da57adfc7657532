//! Helpers shared by the integration tests: an in-process engine on free
//! loopback ports, bounded clients, and waiting for published stats.
//!
//! Every test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod netns;
pub mod pki;
pub mod process;
pub mod seccomp;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use rand::Rng;
use ringport::engine::cpus;
use ringport::engine::operations::Operations;
use ringport::engine::plan::{Mode, Plan, PlanRequest};
use ringport::engine::spec::ListenerSpec;
use ringport::engine::{Counters, EngineConfig, EngineHandle, ShardStats, StartError};
use ringport::plugin::{Registry, Transport};
use ringport::protocols::{builtins, BuiltinSettings};

/// The loopback address every server in the tests binds.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// How long a client waits for one reply before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a test waits for stats to show what it expects.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a start is retried when a chosen port is taken.
const BIND_ATTEMPTS: usize = 64;

/// One listener to serve: `ports` consecutive ports are picked at start.
#[derive(Debug, Clone, Copy)]
pub struct Listen {
    /// Registered plugin name.
    pub protocol: &'static str,
    /// TCP or UDP.
    pub transport: Transport,
    /// TCP with TLS (its certificates go in the operations).
    pub tls: bool,
    /// How many ports.
    pub ports: u16,
}

/// `ports` ports of `protocol` over TCP.
pub fn tcp(protocol: &'static str, ports: u16) -> Listen {
    Listen {
        protocol,
        transport: Transport::Tcp,
        tls: false,
        ports,
    }
}

/// `ports` ports of `protocol` over TLS.
pub fn tls(protocol: &'static str, ports: u16) -> Listen {
    Listen {
        protocol,
        transport: Transport::Tcp,
        tls: true,
        ports,
    }
}

/// `ports` ports of `protocol` over UDP.
pub fn udp(protocol: &'static str, ports: u16) -> Listen {
    Listen {
        protocol,
        transport: Transport::Udp,
        tls: false,
        ports,
    }
}

/// What to start: call [`ServerBuilder::start`] after the setters.
#[derive(Debug)]
pub struct ServerBuilder {
    listeners: Vec<Listen>,
    shards: usize,
    cpus: Option<Vec<usize>>,
    mode: Mode,
    config: EngineConfig,
    registry: Option<Registry>,
    operations: Operations,
}

/// The backend the tests' in-process engines use: `RINGPORT_BACKEND`
/// (`auto`, `io-uring`, `epoll`; what `.ci/run` sets for its second pass),
/// else the engine's default. The `ringport` binary reads the same variable.
pub fn test_backend() -> ringport::engine::BackendChoice {
    ringport::engine::BackendChoice::from_env()
        .expect("a valid RINGPORT_BACKEND")
        .unwrap_or_default()
}

/// The default engine configuration on [`test_backend`].
pub fn test_config() -> EngineConfig {
    EngineConfig {
        backend: test_backend(),
        ..EngineConfig::default()
    }
}

/// Starts describing a server with one shard, range mode, default config and
/// the built-in plugins.
pub fn server() -> ServerBuilder {
    ServerBuilder {
        listeners: Vec::new(),
        shards: 1,
        cpus: None,
        mode: Mode::Range,
        config: test_config(),
        registry: None,
        operations: Operations::default(),
    }
}

impl ServerBuilder {
    /// Adds a listener.
    pub fn listen(mut self, l: Listen) -> Self {
        self.listeners.push(l);
        self
    }

    /// Number of shards.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n;
        self
    }

    /// CPUs to pin to (default: every CPU this process may run on).
    pub fn cpus(mut self, cpus: Vec<usize>) -> Self {
        self.cpus = Some(cpus);
        self
    }

    /// Range or reuseport.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Engine tunables (the backend stays [`test_backend`]'s).
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = EngineConfig {
            backend: test_backend(),
            ..config
        };
        self
    }

    /// Allowlists, limits, timeouts, handshake log (default: the defaults).
    pub fn operations(mut self, operations: Operations) -> Self {
        self.operations = operations;
        self
    }

    /// Plugins to serve (default: the built-ins with default settings).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Picks a random free base port, builds the plan and starts the engine,
    /// retrying with another base when a port is in use.
    ///
    /// # Panics
    ///
    /// On any start error other than a port in use, or when every attempt
    /// found a port in use.
    pub fn start(self) -> Server {
        let registry = self
            .registry
            .unwrap_or_else(|| builtins(&BuiltinSettings::default()));
        let cpus = self.cpus.unwrap_or_else(|| {
            let mut all = cpus::allowed_cpus().expect("reading the CPU affinity");
            all.truncate(self.shards.max(1));
            all
        });
        let span: u32 = self.listeners.iter().map(|l| u32::from(l.ports)).sum();
        let (low, high) = free_port_window();
        assert!(high > low + span, "no room for {span} ports below {high}");
        let mut rng = rand::thread_rng();
        for _ in 0..BIND_ATTEMPTS {
            let base = rng.gen_range(low..high - span) as u16;
            let mut next = base;
            let mut specs = Vec::new();
            let mut ranges = Vec::new();
            for l in &self.listeners {
                let (first, last) = (next, next + l.ports - 1);
                next += l.ports;
                let transport = if l.tls { "tls" } else { l.transport.as_str() };
                let text = format!("{}@{transport}:{}:{first}-{last}", l.protocol, LOOPBACK);
                specs.push(text.parse::<ListenerSpec>().expect("a valid listener spec"));
                ranges.push(first..=last);
            }
            let plan = Plan::build(PlanRequest {
                listeners: specs,
                shards: self.shards,
                cpus: cpus.clone(),
                mode: self.mode,
                allow_idle_shards: false,
            })
            .expect("a valid plan");
            match EngineHandle::start_with(
                &plan,
                self.config.clone(),
                &registry,
                self.operations.clone(),
            ) {
                Ok(handle) => {
                    use ringport::engine::{BackendChoice, BackendKind};
                    let expected = match self.config.backend {
                        BackendChoice::Auto => handle.backend(),
                        BackendChoice::IoUring => BackendKind::IoUring,
                        BackendChoice::Epoll => BackendKind::Epoll,
                    };
                    assert_eq!(handle.backend(), expected, "the backend asked for");
                    return Server {
                        handle: Some(handle),
                        plan,
                        ranges,
                    };
                }
                Err(StartError::Bind { source, .. })
                    if source.raw_os_error() == Some(libc::EADDRINUSE) =>
                {
                    continue
                }
                Err(e) => panic!("engine did not start: {e}"),
            }
        }
        panic!("{BIND_ATTEMPTS} random port bases were all in use");
    }
}

/// Ports for test servers: 20000 up to the start of the kernel's ephemeral
/// range, so that client sockets never take a port a server wants next.
fn free_port_window() -> (u32, u32) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 25000 {
        (20000, ephemeral_low)
    } else {
        (20000, 60000)
    }
}

/// A running in-process engine and the ports it serves.
#[derive(Debug)]
pub struct Server {
    handle: Option<EngineHandle>,
    /// The plan it runs.
    pub plan: Plan,
    ranges: Vec<RangeInclusive<u16>>,
}

impl Server {
    /// The engine.
    pub fn handle(&self) -> &EngineHandle {
        self.handle.as_ref().expect("engine running")
    }

    /// The ports of listener `i` (in the order they were added).
    pub fn ports(&self, i: usize) -> RangeInclusive<u16> {
        self.ranges[i].clone()
    }

    /// The first port of listener `i` on loopback.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(LOOPBACK, *self.ranges[i].start())
    }

    /// Every port of listener `i` on loopback.
    pub fn addrs(&self, i: usize) -> Vec<SocketAddr> {
        self.ports(i)
            .map(|p| SocketAddr::new(LOOPBACK, p))
            .collect()
    }

    /// Per-shard counters as last published.
    pub fn stats(&self) -> Vec<ShardStats> {
        self.handle().stats()
    }

    /// Counters summed over shards.
    pub fn totals(&self) -> Counters {
        total(&self.stats())
    }

    /// Polls the stats until `pred` holds; returns them.
    ///
    /// # Panics
    ///
    /// After [`STATS_TIMEOUT`], showing the last stats and `what`.
    pub fn wait_stats(&self, what: &str, pred: impl Fn(&[ShardStats]) -> bool) -> Vec<ShardStats> {
        let deadline = Instant::now() + STATS_TIMEOUT;
        loop {
            let s = self.stats();
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                let lines: Vec<String> = s.iter().map(ToString::to_string).collect();
                panic!("stats never showed {what}:\n{}", lines.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Like [`Server::wait_stats`] on the totals.
    pub fn wait_totals(&self, what: &str, pred: impl Fn(&Counters) -> bool) -> Counters {
        total(&self.wait_stats(what, |s| pred(&total(s))))
    }

    /// Stops the engine and returns every shard's final counters.
    pub fn shutdown(mut self) -> Vec<ShardStats> {
        self.handle.take().expect("engine running").shutdown()
    }
}

/// Counters summed over shards.
pub fn total(stats: &[ShardStats]) -> Counters {
    let mut t = Counters::default();
    for s in stats {
        t.add(&s.counters);
    }
    t
}

/// A blocking TCP client with [`IO_TIMEOUT`] on reads and writes.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends `request` and reads exactly `expected.len()` bytes back; they must
/// equal `expected`.
pub fn round_trip(s: &mut TcpStream, request: &[u8], expected: &[u8]) {
    s.write_all(request).expect("write");
    let mut got = vec![0; expected.len()];
    s.read_exact(&mut got).expect("read the reply");
    assert_eq!(got, expected);
}

/// Reads until the server closes the stream; returns what arrived. A reset
/// counts as a close.
///
/// # Panics
///
/// If the server keeps it open longer than [`IO_TIMEOUT`].
pub fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            Instant::now() < deadline,
            "the server kept the stream open for {IO_TIMEOUT:?} ({} bytes read)",
            out.len()
        );
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("the server did not close the stream: {e}"),
        }
    }
}

/// Runs `f` again while it fails with `EINTR`.
///
/// A thread that started an engine can see one `EINTR` from a blocking call
/// with a timeout shortly after (see `tests/engine_start.rs`); std's
/// `read_exact` and `write_all` retry on their own, single calls do not.
pub fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Closes `s` with a reset (SO_LINGER 0) instead of a FIN.
pub fn reset(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the pointer and length describe a live `linger` for the call,
    // and the fd is open (owned by `s`).
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
    drop(s);
}

/// A sockperf message: 14-byte header (u64 sequence, u16 flags, u32 total
/// length, network byte order) and `payload`.
pub fn sockperf_frame(sequence: u64, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&sequence.to_be_bytes());
    f.extend_from_slice(&flags.to_be_bytes());
    f.extend_from_slice(&(14 + payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// sockperf's flag bits.
pub const SOCKPERF_CLIENT: u16 = 1;
/// The client wants a reply.
pub const SOCKPERF_PONG_REQUEST: u16 = 2;

/// Deterministic pseudo-random bytes: byte `offset` of stream `seed`, computed
/// without state so a sender and a checker agree at any offset.
pub fn fill_pattern(seed: u64, offset: usize, out: &mut [u8]) {
    let mut word_index = offset / 8;
    let mut skip = offset % 8;
    let mut i = 0;
    while i < out.len() {
        let word = splitmix64(seed ^ (word_index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        let bytes = word.to_le_bytes();
        let n = (8 - skip).min(out.len() - i);
        out[i..i + n].copy_from_slice(&bytes[skip..skip + n]);
        i += n;
        skip = 0;
        word_index += 1;
    }
}

/// SplitMix64's output function.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small, fast generator for write sizes.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from a non-zero-ized seed.
    pub fn new(seed: u64) -> Self {
        XorShift(splitmix64(seed) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `1..=max`.
    pub fn size(&mut self, max: usize) -> usize {
        1 + (self.next_u64() % max as u64) as usize
    }
}

/// Result of [`echo_streams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoReport {
    /// Streams that got every byte back, in order.
    pub streams: usize,
    /// Bytes sent (and received back) over all streams.
    pub bytes: u64,
    /// Write calls made.
    pub writes: u64,
}

/// Opens `conns` TCP connections spread over `addrs`, keeps all of them open
/// at once, and on each sends `bytes_per_conn` pseudo-random bytes in writes
/// of random sizes (1..=`max_write`) while reading the echo back and checking
/// it byte for byte. `threads` client threads each drive a share of the
/// sockets with `poll`.
///
/// # Panics
///
/// On the first wrong byte (naming stream and offset), a stream the server
/// closes early, or when not everything came back within `timeout`.
pub fn echo_streams(
    addrs: &[SocketAddr],
    conns: usize,
    bytes_per_conn: usize,
    max_write: usize,
    threads: usize,
    timeout: Duration,
) -> EchoReport {
    let seed: u64 = rand::thread_rng().gen();
    let deadline = Instant::now() + timeout;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let ids: Vec<usize> = (t..conns).step_by(threads).collect();
            let addrs = addrs.to_vec();
            std::thread::Builder::new()
                .name(format!("echo-client-{t}"))
                .spawn(move || {
                    drive_echo_streams(&addrs, &ids, seed, bytes_per_conn, max_write, deadline)
                })
                .expect("spawn a client thread")
        })
        .collect();
    let mut report = EchoReport {
        streams: 0,
        bytes: 0,
        writes: 0,
    };
    let mut failure = None;
    for w in workers {
        match w.join() {
            Ok(r) => {
                report.streams += r.streams;
                report.bytes += r.bytes;
                report.writes += r.writes;
            }
            Err(p) => failure = failure.or(Some(p)),
        }
    }
    if let Some(p) = failure {
        std::panic::resume_unwind(p);
    }
    report
}

struct EchoStream {
    id: usize,
    sock: TcpStream,
    seed: u64,
    sent: usize,
    received: usize,
}

fn drive_echo_streams(
    addrs: &[SocketAddr],
    ids: &[usize],
    seed: u64,
    total: usize,
    max_write: usize,
    deadline: Instant,
) -> EchoReport {
    let mut streams: Vec<EchoStream> = ids
        .iter()
        .map(|&id| {
            let sock = connect(addrs[id % addrs.len()]);
            sock.set_nonblocking(true).unwrap();
            EchoStream {
                id,
                sock,
                seed: splitmix64(seed ^ id as u64),
                sent: 0,
                received: 0,
            }
        })
        .collect();
    let mut rng = XorShift::new(seed ^ ids.first().copied().unwrap_or(0) as u64);
    let mut out = vec![0u8; max_write];
    let mut inbuf = vec![0u8; 64 * 1024];
    let mut expect = vec![0u8; 64 * 1024];
    let mut report = EchoReport {
        streams: 0,
        bytes: 0,
        writes: 0,
    };
    let mut pollfds: Vec<libc::pollfd> = Vec::with_capacity(streams.len());
    while !streams.is_empty() {
        if Instant::now() > deadline {
            let sent: usize = streams.iter().map(|s| s.sent).sum();
            let received: usize = streams.iter().map(|s| s.received).sum();
            panic!(
                "timed out with {} streams unfinished ({sent} bytes sent, {received} received of {} each)",
                streams.len(),
                total
            );
        }
        pollfds.clear();
        pollfds.extend(streams.iter().map(|s| libc::pollfd {
            fd: s.sock.as_raw_fd(),
            events: libc::POLLIN | if s.sent < total { libc::POLLOUT } else { 0 },
            revents: 0,
        }));
        // SAFETY: `pollfds` is a live array of `len` pollfd structs.
        let n = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, 100) };
        if n < 0 {
            let e = io::Error::last_os_error();
            assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll: {e}");
            continue;
        }
        let mut done = Vec::new();
        for (i, (s, p)) in streams.iter_mut().zip(pollfds.iter()).enumerate() {
            if p.revents & libc::POLLOUT != 0 && s.sent < total {
                let len = rng.size(max_write).min(total - s.sent);
                fill_pattern(s.seed, s.sent, &mut out[..len]);
                match s.sock.write(&out[..len]) {
                    Ok(n) => {
                        s.sent += n;
                        report.writes += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("stream {}: write after {} bytes: {e}", s.id, s.sent),
                }
            }
            if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                // Bounded: at most a few reads per readiness event.
                for _ in 0..4 {
                    match s.sock.read(&mut inbuf) {
                        Ok(0) => panic!(
                            "stream {}: server closed after {} of {total} bytes echoed",
                            s.id, s.received
                        ),
                        Ok(n) => {
                            assert!(
                                s.received + n <= s.sent,
                                "stream {}: {} bytes echoed but only {} sent",
                                s.id,
                                s.received + n,
                                s.sent
                            );
                            fill_pattern(s.seed, s.received, &mut expect[..n]);
                            if inbuf[..n] != expect[..n] {
                                let at = (0..n).find(|&k| inbuf[k] != expect[k]).unwrap_or(0);
                                panic!(
                                    "stream {}: echo differs at byte {}: got {:#04x}, sent {:#04x}",
                                    s.id,
                                    s.received + at,
                                    inbuf[at],
                                    expect[at]
                                );
                            }
                            s.received += n;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("stream {}: read after {} bytes: {e}", s.id, s.received),
                    }
                }
            }
            if s.received == total {
                done.push(i);
            }
        }
        for &k in done.iter().rev() {
            let s = streams.swap_remove(k);
            report.streams += 1;
            report.bytes += total as u64;
            drop(s);
        }
    }
    report
}

/// The largest UDP payload that fits a 1500-byte Ethernet frame.
pub const MAX_UDP_PAYLOAD: usize = 1472;

/// Size of datagram `seq` in [`udp_echo`]: every size `1..=1472` in turn.
pub fn datagram_size(seq: usize) -> usize {
    seq % MAX_UDP_PAYLOAD + 1
}

/// Sends `count` datagrams from a socket bound to `source` (any port) to
/// `server`, datagram `seq` holding [`datagram_size`]`(seq)` pseudo-random
/// bytes, with at most `window` unanswered at a time, and checks that each
/// reply equals its request. Replies may come back in another order; they
/// are told apart by size (`window` < 1472 keeps sizes in flight distinct).
/// Returns the number of replies.
///
/// # Panics
///
/// On a reply that matches no request in flight, or no reply within
/// [`IO_TIMEOUT`] (a datagram lost).
pub fn udp_echo(server: SocketAddr, source: IpAddr, count: usize, window: usize) -> usize {
    assert!(window > 0 && window < MAX_UDP_PAYLOAD);
    let seed: u64 = rand::thread_rng().gen();
    let sock = UdpSocket::bind(SocketAddr::new(source, 0)).expect("bind a client socket");
    sock.connect(server).expect("connect the client socket");
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut out = vec![0u8; MAX_UDP_PAYLOAD];
    let mut buf = vec![0u8; 65536];
    let mut expect = vec![0u8; MAX_UDP_PAYLOAD];
    let mut in_flight: VecDeque<usize> = VecDeque::with_capacity(window);
    let (mut next, mut replies) = (0, 0);
    while replies < count {
        while in_flight.len() < window && next < count {
            let len = datagram_size(next);
            fill_pattern(seed ^ next as u64, 0, &mut out[..len]);
            let sent = sock.send(&out[..len]).expect("send a datagram");
            assert_eq!(sent, len);
            in_flight.push_back(next);
            next += 1;
        }
        let n = match retry_eintr(|| sock.recv(&mut buf)) {
            Ok(n) => n,
            Err(e) => panic!(
                "{source}: no reply within {IO_TIMEOUT:?} ({replies} of {count} replies, \
                 {} in flight): {e}",
                in_flight.len()
            ),
        };
        let Some(pos) = in_flight.iter().position(|&seq| datagram_size(seq) == n) else {
            panic!("{source}: a {n}-byte reply matches no request in flight");
        };
        let seq = in_flight.remove(pos).expect("position is in range");
        fill_pattern(seed ^ seq as u64, 0, &mut expect[..n]);
        assert!(
            buf[..n] == expect[..n],
            "{source}: reply to datagram {seq} ({n} bytes) differs from the request"
        );
        replies += 1;
    }
    replies
}

/// What the `sockperf` client reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockperfRun {
    /// `[Total Run] SentMessages`: every message sent, warm-up included.
    pub sent: u64,
    /// `[Total Run] ReceivedMessages`: every reply received.
    pub received: u64,
    /// `# dropped messages` of the measured window.
    pub dropped: u64,
    /// `# duplicated messages`.
    pub duplicated: u64,
    /// `# out-of-order messages`.
    pub out_of_order: u64,
    /// Everything it printed, for failure messages.
    pub output: String,
}

pub use ringport_tools::testing::outside_program;

/// The installed `sockperf` client, or `None` (with the skip line printed)
/// outside CI; see [`outside_program`].
#[allow(dead_code)]
pub fn sockperf_path() -> Option<std::path::PathBuf> {
    outside_program("sockperf", "sockperf")
}

/// Runs the `sockperf` client with `args` (which must point it at loopback)
/// and parses its summary; `None` when sockperf is not installed and this is
/// not CI (see [`outside_program`]).
///
/// # Panics
///
/// If it does not finish within `run_for` plus 30 s (it is killed), exits
/// with a failure, or prints no summary.
pub fn sockperf(args: &[&str], run_for: Duration) -> Option<SockperfRun> {
    let program = sockperf_path()?;
    assert!(
        args.windows(2)
            .any(|w| w[0] == "-i" && w[1].starts_with("127.")),
        "sockperf must only talk to loopback: {args:?}"
    );
    let log_path = std::env::temp_dir().join(format!(
        "ringport-test-sockperf-{}-{}.log",
        std::process::id(),
        rand::thread_rng().gen::<u64>()
    ));
    let log = std::fs::File::create(&log_path).expect("create the sockperf log");
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start sockperf");
    let deadline = Instant::now() + run_for + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for sockperf") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let output = std::fs::read_to_string(&log_path).unwrap_or_default();
            let _ = std::fs::remove_file(&log_path);
            panic!("sockperf {args:?} did not finish in time:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&log_path).expect("read the sockperf log");
    let _ = std::fs::remove_file(&log_path);
    assert!(
        status.success(),
        "sockperf {args:?} failed ({status}):\n{output}"
    );
    let field = |line_marker: &str, name: &str| -> u64 {
        output
            .lines()
            .find(|l| l.contains(line_marker))
            .and_then(|l| {
                let at = l.find(name)? + name.len();
                let digits: String = l[at..]
                    .trim_start_matches([' ', '='])
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().ok()
            })
            .unwrap_or_else(|| panic!("no `{name}` in sockperf's output:\n{output}"))
    };
    Some(SockperfRun {
        sent: field("[Total Run]", "SentMessages"),
        received: field("[Total Run]", "ReceivedMessages"),
        dropped: field("# dropped messages", "# dropped messages"),
        duplicated: field("# dropped messages", "# duplicated messages"),
        out_of_order: field("# dropped messages", "# out-of-order messages"),
        output,
    })
}

/// The `ringport` binary of the root package, which Cargo builds before it
/// builds these tests.
#[allow(dead_code)]
pub fn ringport_bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_ringport"))
}
