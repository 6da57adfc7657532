//! A [`Context`] for unit tests: no engine, no sockets, no sleeps.
//!
//! [`RecordingContext`] records every output a plugin produces so a test can
//! assert on exact bytes:
//!
//! ```
//! use ringport_plugin::testing::RecordingContext;
//! use ringport_plugin::{ConnId, Context};
//!
//! let mut ctx = RecordingContext::new();
//! let conn = ConnId::from_raw(7);
//! ctx.write(conn, b"hello ").unwrap();
//! ctx.write(conn, b"world").unwrap();
//! ctx.record_messages(2);
//! assert_eq!(ctx.written(conn), b"hello world");
//! assert_eq!(ctx.messages(), 2);
//! ```
//!
//! Failures the engine can report (a full outbound queue, a full mesh ring, an
//! oversized datagram, a refused connect) can be switched on to test a
//! plugin's error paths.
//!
//! Outbound connects are recorded, not made: [`Context::connect`] hands out
//! a fresh id and lists the request in [`RecordingContext::connects`]; the
//! test then plays the engine's part by calling the plugin's
//! `handle_connected` or `handle_connect_failed` itself:
//!
//! ```
//! use ringport_plugin::testing::RecordingContext;
//! use ringport_plugin::{ConnectError, ConnectRequest, Context};
//!
//! let mut ctx = RecordingContext::new();
//! let addr = "127.0.0.1:4222".parse().unwrap();
//! let id = ctx.connect(ConnectRequest::new(addr, 1)).unwrap();
//! assert_eq!(ctx.connects()[0].conn, id);
//! assert_eq!(ctx.connects()[0].request.addr, addr);
//! ctx.fail_connects(Some(ConnectError::TableFull));
//! assert_eq!(ctx.connect(ConnectRequest::new(addr, 2)), Err(ConnectError::TableFull));
//! assert_eq!(ctx.connects().len(), 1);
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::{
    ConnId, ConnectError, ConnectRequest, Context, DropReason, MeshError, MeshMessage, ShardId,
    SocketId, WriteError,
};

/// Ids [`RecordingContext`] hands out for connects start here, far from the
/// small ids tests pick for accepted streams.
pub const FIRST_CONNECT_ID: u64 = 1 << 48;

/// One connect a plugin asked for through [`Context::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRecord {
    /// The id `connect` returned.
    pub conn: ConnId,
    /// What was asked.
    pub request: ConnectRequest,
    /// [`Context::now`] when it was asked (its timeout counts from here).
    pub at: Instant,
}

/// One datagram a plugin sent through [`Context::send_datagram`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentDatagram {
    /// The socket it was sent from.
    pub via: SocketId,
    /// The destination.
    pub to: SocketAddr,
    /// The parts, concatenated.
    pub data: Vec<u8>,
}

/// One timer a plugin asked for through [`Context::set_timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerRequest {
    /// Delay from the context's `now` at the time of the request.
    pub after: Duration,
    /// The token to hand back in [`crate::Plugin::handle_timer`].
    pub token: u64,
    /// When it is due: `now + after` as the context saw it.
    pub due: Instant,
}

/// One message a plugin queued for another shard.
///
/// A [`Context::broadcast`] is recorded as one entry per receiving shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSend {
    /// The receiving shard.
    pub to: ShardId,
    /// The message.
    pub msg: MeshMessage,
}

/// A [`Context`] that records every output, for unit tests.
///
/// Defaults: shard 0 of 1, `now` read once at construction, every write and
/// send accepted, no size limit on datagrams, a mesh that accepts everything.
/// Writes to a stream are recorded even after it was closed, so a test can see
/// a plugin that writes after closing.
#[derive(Debug, Clone)]
pub struct RecordingContext {
    shard: ShardId,
    shard_count: usize,
    now: Instant,
    writes: HashMap<ConnId, Vec<u8>>,
    write_calls: usize,
    datagrams: Vec<SentDatagram>,
    closes: Vec<ConnId>,
    timers: Vec<TimerRequest>,
    mesh_sends: Vec<MeshSend>,
    messages: u64,
    drops: [u64; DropReason::COUNT],
    write_error: Option<WriteError>,
    /// Streams whose writes fail, with the error they get.
    failing: Vec<(ConnId, WriteError)>,
    max_datagram: usize,
    mesh_full: bool,
    latencies: Vec<(&'static str, Duration)>,
    identities: HashMap<ConnId, Vec<String>>,
    peers: HashMap<ConnId, SocketAddr>,
    connects: Vec<ConnectRecord>,
    connect_error: Option<ConnectError>,
    next_connect: u64,
}

impl Default for RecordingContext {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordingContext {
    /// Latency samples recorded with `record_latency`, in order.
    pub fn latencies(&self) -> &[(&'static str, Duration)] {
        &self.latencies
    }

    /// A context for shard 0 of 1, with `now` set to the current time.
    pub fn new() -> Self {
        RecordingContext {
            shard: 0,
            shard_count: 1,
            now: Instant::now(),
            writes: HashMap::new(),
            write_calls: 0,
            datagrams: Vec::new(),
            closes: Vec::new(),
            timers: Vec::new(),
            mesh_sends: Vec::new(),
            messages: 0,
            drops: [0; DropReason::COUNT],
            write_error: None,
            failing: Vec::new(),
            max_datagram: usize::MAX,
            mesh_full: false,
            latencies: Vec::new(),
            identities: HashMap::new(),
            peers: HashMap::new(),
            connects: Vec::new(),
            connect_error: None,
            next_connect: FIRST_CONNECT_ID,
        }
    }

    /// Connects asked for, in order (refused ones are not listed).
    pub fn connects(&self) -> &[ConnectRecord] {
        &self.connects
    }

    /// Takes the connects asked for so far.
    pub fn take_connects(&mut self) -> Vec<ConnectRecord> {
        std::mem::take(&mut self.connects)
    }

    /// Makes every later [`Context::connect`] fail with `error` (nothing
    /// recorded), or succeed again with `None`.
    pub fn fail_connects(&mut self, error: Option<ConnectError>) {
        self.connect_error = error;
    }

    /// Makes `conn` a stream whose peer proved these identities (what
    /// [`Context::peer_identities`] then returns for it).
    pub fn set_peer_identities(&mut self, conn: ConnId, identities: Vec<String>) {
        self.identities.insert(conn, identities);
    }

    /// Makes `peer` the address of `conn` (what [`Context::peer`] then
    /// returns for it), as the engine knows it from the stream's open.
    pub fn set_peer(&mut self, conn: ConnId, peer: SocketAddr) {
        self.peers.insert(conn, peer);
    }

    /// Pretends to be `shard` of `shard_count`.
    ///
    /// # Panics
    ///
    /// If `shard >= shard_count`.
    pub fn with_shard(mut self, shard: ShardId, shard_count: usize) -> Self {
        assert!(
            shard < shard_count,
            "shard {shard} out of range 0..{shard_count}"
        );
        self.shard = shard;
        self.shard_count = shard_count;
        self
    }

    /// Sets the time [`Context::now`] reports.
    pub fn with_now(mut self, now: Instant) -> Self {
        self.now = now;
        self
    }

    /// Sets the time [`Context::now`] reports.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// Moves [`Context::now`] forward by `by`.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Makes every later [`Context::write`] and [`Context::send_datagram`]
    /// fail with `error` (nothing is recorded), or succeed again with `None`.
    pub fn fail_writes(&mut self, error: Option<WriteError>) {
        self.write_error = error;
    }

    /// Makes writes to `conn` alone fail with `error` (a slow reader:
    /// `QueueFull`), or succeed again with `None`.
    pub fn fail_writes_to(&mut self, conn: ConnId, error: Option<WriteError>) {
        self.failing.retain(|(c, _)| *c != conn);
        if let Some(e) = error {
            self.failing.push((conn, e));
        }
    }

    /// Refuses datagrams longer than `max` bytes with [`WriteError::TooLarge`].
    pub fn set_max_datagram(&mut self, max: usize) {
        self.max_datagram = max;
    }

    /// Makes every ring to another shard full (`true`) or empty again (`false`).
    pub fn set_mesh_full(&mut self, full: bool) {
        self.mesh_full = full;
    }

    /// Everything written to `conn` so far, concatenated (empty if nothing).
    pub fn written(&self, conn: ConnId) -> &[u8] {
        self.writes.get(&conn).map_or(&[], Vec::as_slice)
    }

    /// Takes what was written to `conn`, leaving nothing recorded for it.
    pub fn take_written(&mut self, conn: ConnId) -> Vec<u8> {
        self.writes.remove(&conn).unwrap_or_default()
    }

    /// How many successful [`Context::write`] calls were made, on all streams.
    pub fn write_calls(&self) -> usize {
        self.write_calls
    }

    /// Datagrams sent, in order.
    pub fn datagrams(&self) -> &[SentDatagram] {
        &self.datagrams
    }

    /// Takes the datagrams sent so far.
    pub fn take_datagrams(&mut self) -> Vec<SentDatagram> {
        std::mem::take(&mut self.datagrams)
    }

    /// Streams closed through [`Context::close`], in call order (repeats kept).
    pub fn closed(&self) -> &[ConnId] {
        &self.closes
    }

    /// Whether [`Context::close`] was called for `conn`.
    pub fn is_closed(&self, conn: ConnId) -> bool {
        self.closes.contains(&conn)
    }

    /// Timers requested, in order.
    pub fn timers(&self) -> &[TimerRequest] {
        &self.timers
    }

    /// Messages queued for other shards, in order.
    pub fn mesh_sends(&self) -> &[MeshSend] {
        &self.mesh_sends
    }

    /// Sum of every [`Context::record_messages`] count.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// How many drops were recorded under `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// How many drops were recorded, all reasons together.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Forgets every recorded output and count; keeps shard, time and
    /// failure settings.
    pub fn clear(&mut self) {
        self.writes.clear();
        self.write_calls = 0;
        self.datagrams.clear();
        self.closes.clear();
        self.timers.clear();
        self.mesh_sends.clear();
        self.messages = 0;
        self.drops = [0; DropReason::COUNT];
        self.connects.clear();
    }
}

impl Context for RecordingContext {
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
        self.write_parts(conn, &[data])
    }

    fn write_parts(&mut self, conn: ConnId, parts: &[&[u8]]) -> Result<(), WriteError> {
        if let Some(e) = self.write_error {
            return Err(e);
        }
        if let Some(&(_, e)) = self.failing.iter().find(|(c, _)| *c == conn) {
            return Err(e);
        }
        let out = self.writes.entry(conn).or_default();
        for p in parts {
            out.extend_from_slice(p);
        }
        self.write_calls += 1;
        Ok(())
    }

    fn close(&mut self, conn: ConnId) {
        self.closes.push(conn);
    }

    fn send_datagram(
        &mut self,
        via: SocketId,
        to: SocketAddr,
        parts: &[&[u8]],
    ) -> Result<(), WriteError> {
        if let Some(e) = self.write_error {
            return Err(e);
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > self.max_datagram {
            return Err(WriteError::TooLarge);
        }
        let mut data = Vec::with_capacity(len);
        for part in parts {
            data.extend_from_slice(part);
        }
        self.datagrams.push(SentDatagram { via, to, data });
        Ok(())
    }

    fn send_to_shard(&mut self, shard: ShardId, msg: MeshMessage) -> Result<(), MeshError> {
        if shard >= self.shard_count {
            return Err(MeshError::NoSuchShard(msg));
        }
        if self.mesh_full {
            return Err(MeshError::Full(msg));
        }
        self.mesh_sends.push(MeshSend { to: shard, msg });
        Ok(())
    }

    fn broadcast(&mut self, msg: MeshMessage) -> Result<usize, MeshError> {
        let others = self.shard_count - 1;
        if others > 0 && self.mesh_full {
            return Err(MeshError::Full(msg));
        }
        for to in (0..self.shard_count).filter(|&s| s != self.shard) {
            self.mesh_sends.push(MeshSend {
                to,
                msg: msg.clone(),
            });
        }
        Ok(others)
    }

    fn set_timer(&mut self, after: Duration, token: u64) {
        self.timers.push(TimerRequest {
            after,
            token,
            due: self.now + after,
        });
    }

    fn record_messages(&mut self, n: u64) {
        self.messages += n;
    }

    fn record_drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    fn record_latency(&mut self, name: &'static str, latency: Duration) {
        self.latencies.push((name, latency));
    }

    fn peer_identities(&self, conn: ConnId) -> Vec<String> {
        self.identities.get(&conn).cloned().unwrap_or_default()
    }

    fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        self.peers.get(&conn).copied()
    }

    fn connect(&mut self, req: ConnectRequest) -> Result<ConnId, ConnectError> {
        if let Some(e) = self.connect_error {
            return Err(e);
        }
        let ip = req.addr.ip();
        let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
        if req.addr.port() == 0 || ip.is_unspecified() || ip.is_multicast() || broadcast {
            return Err(ConnectError::InvalidAddress);
        }
        let conn = ConnId::from_raw(self.next_connect);
        self.next_connect += 1;
        self.connects.push(ConnectRecord {
            conn,
            request: req,
            at: self.now,
        });
        Ok(conn)
    }
}

/// An outside program a test needs, found on `PATH` (or in `/usr/sbin` and
/// `/usr/local/sbin`, where daemons such as `nats-server` and `mosquitto` are
/// installed but which a user's `PATH` may lack).
///
/// When it is missing, a test run by hand prints one line, `skipped: install
/// the Debian package PACKAGE`, and gets `None` (the caller skips that part).
/// Under CI (`CI=true`), where `.ci/run` installs the package, a missing
/// program fails the test instead.
///
/// # Panics
///
/// Under CI, when the program is missing.
pub fn outside_program(program: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "`{program}` is not installed under CI: .ci/run installs the Debian \
                 package {package}; install it (`apt-get install {package}`)"
            );
        }
        // Straight to stderr, past the test harness's capture of `eprintln!`,
        // so that the line shows although the test passes.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: install the Debian package {package} (`{program}` is not on PATH)"
        );
    }
    found
}

/// Waits until the outside program `child` (called `name`) accepts TCP
/// connections on `addr`, for at most `timeout`.
///
/// # Panics
///
/// When it exits first (the panic quotes its log file, `log`), or when the
/// time is up.
pub fn wait_listening(
    child: &mut std::process::Child,
    addr: SocketAddr,
    log: &std::path::Path,
    name: &str,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{name} exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not listen on {addr} in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bytes;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn writes_are_concatenated_per_stream() {
        let mut ctx = RecordingContext::new();
        let (a, b) = (ConnId::from_raw(1), ConnId::from_raw(2));
        ctx.write(a, b"ab").unwrap();
        ctx.write(b, b"xy").unwrap();
        ctx.write(a, b"cd").unwrap();
        assert_eq!(ctx.written(a), b"abcd");
        assert_eq!(ctx.written(b), b"xy");
        assert_eq!(ctx.written(ConnId::from_raw(3)), b"");
        assert_eq!(ctx.write_calls(), 3);
        assert_eq!(ctx.take_written(a), b"abcd".to_vec());
        assert_eq!(ctx.written(a), b"");
    }

    #[test]
    fn datagram_parts_are_concatenated_and_limited() {
        let mut ctx = RecordingContext::new();
        ctx.send_datagram(SocketId(3), addr(9), &[b"he", b"", b"llo"])
            .unwrap();
        ctx.set_max_datagram(4);
        assert_eq!(
            ctx.send_datagram(SocketId(3), addr(9), &[b"hello"]),
            Err(WriteError::TooLarge)
        );
        assert_eq!(
            ctx.datagrams(),
            &[SentDatagram {
                via: SocketId(3),
                to: addr(9),
                data: b"hello".to_vec()
            }]
        );
    }

    #[test]
    fn injected_write_failure_records_nothing() {
        let mut ctx = RecordingContext::new();
        let conn = ConnId::from_raw(1);
        ctx.fail_writes(Some(WriteError::QueueFull));
        assert_eq!(ctx.write(conn, b"x"), Err(WriteError::QueueFull));
        assert_eq!(
            ctx.send_datagram(SocketId(0), addr(1), &[b"x"]),
            Err(WriteError::QueueFull)
        );
        ctx.fail_writes(None);
        ctx.write(conn, b"y").unwrap();
        assert_eq!(ctx.written(conn), b"y");
        assert_eq!(ctx.write_calls(), 1);
        assert!(ctx.datagrams().is_empty());
    }

    #[test]
    fn counts_closes_timers_messages_drops() {
        let start = Instant::now();
        let mut ctx = RecordingContext::new().with_now(start);
        ctx.close(ConnId::from_raw(4));
        ctx.advance(Duration::from_secs(1));
        ctx.set_timer(Duration::from_millis(500), 42);
        ctx.record_messages(3);
        ctx.record_messages(2);
        ctx.record_drop(DropReason::Malformed);
        ctx.record_drop(DropReason::Malformed);
        ctx.record_drop(DropReason::FrameTooLong);
        assert!(ctx.is_closed(ConnId::from_raw(4)));
        assert!(!ctx.is_closed(ConnId::from_raw(5)));
        assert_eq!(
            ctx.timers(),
            &[TimerRequest {
                after: Duration::from_millis(500),
                token: 42,
                due: start + Duration::from_millis(1500),
            }]
        );
        assert_eq!(ctx.messages(), 5);
        assert_eq!(ctx.drops(DropReason::Malformed), 2);
        assert_eq!(ctx.drops(DropReason::FrameTooLong), 1);
        assert_eq!(ctx.total_drops(), 3);
        ctx.clear();
        assert_eq!((ctx.messages(), ctx.total_drops()), (0, 0));
        assert!(ctx.closed().is_empty() && ctx.timers().is_empty());
        assert_eq!(ctx.now(), start + Duration::from_secs(1));
    }

    #[test]
    fn mesh_sends_and_broadcast() {
        let mut ctx = RecordingContext::new().with_shard(1, 3);
        let msg = MeshMessage {
            tag: 9,
            payload: Bytes::from_static(b"p"),
        };
        ctx.send_to_shard(2, msg.clone()).unwrap();
        assert_eq!(
            ctx.send_to_shard(3, msg.clone()),
            Err(MeshError::NoSuchShard(msg.clone()))
        );
        assert_eq!(ctx.broadcast(msg.clone()), Ok(2));
        let to: Vec<ShardId> = ctx.mesh_sends().iter().map(|s| s.to).collect();
        assert_eq!(to, [2, 0, 2]);
        ctx.set_mesh_full(true);
        assert_eq!(ctx.broadcast(msg.clone()), Err(MeshError::Full(msg)));
        assert_eq!(ctx.mesh_sends().len(), 3);
    }

    #[test]
    fn connects_get_fresh_ids_and_bad_addresses_are_refused() {
        let start = Instant::now();
        let mut ctx = RecordingContext::new().with_now(start);
        let a = ctx
            .connect(ConnectRequest::new(addr(4222), 1).with_timeout(Duration::from_millis(250)))
            .unwrap();
        ctx.advance(Duration::from_secs(1));
        let b = ctx
            .connect(ConnectRequest::new("[::1]:4223".parse().unwrap(), 2))
            .unwrap();
        assert_eq!(a.raw(), FIRST_CONNECT_ID);
        assert_eq!(b.raw(), FIRST_CONNECT_ID + 1);
        for bad in [
            "127.0.0.1:0",
            "0.0.0.0:1",
            "[::]:1",
            "224.0.0.1:1",
            "255.255.255.255:1",
        ] {
            assert_eq!(
                ctx.connect(ConnectRequest::new(bad.parse().unwrap(), 9)),
                Err(ConnectError::InvalidAddress),
                "{bad}"
            );
        }
        let c = ctx.connects();
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0],
            ConnectRecord {
                conn: a,
                request: ConnectRequest::new(addr(4222), 1)
                    .with_timeout(Duration::from_millis(250)),
                at: start,
            }
        );
        assert_eq!(c[1].request.timeout, crate::DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c[1].at, start + Duration::from_secs(1));
        ctx.fail_connects(Some(ConnectError::Socket(24)));
        assert_eq!(
            ctx.connect(ConnectRequest::new(addr(1), 3)),
            Err(ConnectError::Socket(24))
        );
        assert_eq!(ctx.take_connects().len(), 2);
        assert!(ctx.connects().is_empty());
    }

    /// A sans-IO reconnecting client, driven by hand: what the engine
    /// would call, the test calls; what the plugin asks, the context records.
    #[test]
    fn a_reconnecting_plugin_is_unit_tested_without_sockets() {
        use crate::backoff::Backoff;
        use crate::{ConnectFailure, ListenerId, Plugin, StreamInfo};

        struct Upstream {
            addr: SocketAddr,
            backoff: Backoff,
            link: Option<ConnId>,
        }
        impl Plugin for Upstream {
            fn handle_start(&mut self, ctx: &mut dyn Context) {
                self.link = ctx.connect(ConnectRequest::new(self.addr, 0)).ok();
            }
            fn handle_connected(&mut self, ctx: &mut dyn Context, s: &StreamInfo, _tag: u64) {
                self.backoff.reset();
                ctx.write(s.conn, b"HELLO\r\n").unwrap();
            }
            fn handle_connect_failed(
                &mut self,
                ctx: &mut dyn Context,
                _conn: ConnId,
                tag: u64,
                _failure: ConnectFailure,
            ) {
                self.link = None;
                ctx.set_timer(self.backoff.next_delay(), tag + 1);
            }
            fn handle_timer(&mut self, ctx: &mut dyn Context, _now: Instant, token: u64) {
                self.link = ctx.connect(ConnectRequest::new(self.addr, token)).ok();
            }
        }

        let ms = Duration::from_millis;
        let mut p = Upstream {
            addr: addr(4222),
            backoff: Backoff::new(ms(100), ms(250)).jitter_percent(0),
            link: None,
        };
        let mut ctx = RecordingContext::new();
        p.handle_start(&mut ctx);
        for attempt in 0..3u64 {
            let asked = ctx.take_connects();
            assert_eq!(asked.len(), 1);
            assert_eq!(asked[0].request.tag, attempt);
            assert_eq!(Some(asked[0].conn), p.link);
            p.handle_connect_failed(&mut ctx, asked[0].conn, attempt, ConnectFailure::Refused);
            let timer = *ctx.timers().last().unwrap();
            assert_eq!(timer.token, attempt + 1);
            assert_eq!(timer.after, [ms(100), ms(200), ms(250)][attempt as usize]);
            ctx.advance(timer.after);
            p.handle_timer(&mut ctx, timer.due, timer.token);
        }
        let last = ctx.take_connects().remove(0);
        let info = StreamInfo {
            conn: last.conn,
            listener: ListenerId::OUTBOUND,
            peer: last.request.addr,
            local: addr(50000),
        };
        p.handle_connected(&mut ctx, &info, last.request.tag);
        assert_eq!(ctx.written(last.conn), b"HELLO\r\n");
        assert_eq!(p.backoff.attempts(), 0, "reset once connected");
    }

    #[test]
    fn broadcast_on_a_single_shard_reaches_nobody() {
        let mut ctx = RecordingContext::new();
        let msg = MeshMessage {
            tag: 0,
            payload: Bytes::new(),
        };
        assert_eq!(ctx.broadcast(msg), Ok(0));
        assert!(ctx.mesh_sends().is_empty());
        assert_eq!((ctx.shard(), ctx.shard_count()), (0, 1));
    }
}
