//! The plugin interface of ringport.
//!
//! ringport's engine owns every socket, buffer and clock; a protocol is a
//! *plugin*, a sans-IO state machine that the engine feeds with inputs and that
//! produces outputs through a [`Context`] the engine hands in. Nothing in this
//! crate performs I/O or reads time, and the crate depends on neither `libc`
//! nor `io-uring`: the Cargo graph keeps protocols honest.
//!
//! # Layers
//!
//! * A [`PluginFactory`] is registered by name in a [`Registry`]. At start the
//!   engine asks it for one [`Plugin`] instance per shard (thread-per-core: an
//!   instance is never shared between threads, so it needs no locks).
//! * The engine calls the instance's `handle_*` methods with inputs: a stream
//!   opening, bytes on a stream, a stream closing, a datagram, a message from
//!   another shard, a timer firing.
//! * The instance answers through the [`Context`]: bytes written to a stream or
//!   sent as a datagram are copied into engine-owned buffers and go out in the
//!   next batched submission; closes, timers and cross-shard messages likewise.
//!
//! # Calling order
//!
//! [`Plugin::handle_start`] comes first, once per instance, before any other
//! call. For one stream: [`Plugin::handle_open`] once, then
//! [`Plugin::handle_data`] any number of times, then [`Plugin::handle_close`]
//! exactly once if the stream was accepted. Bytes a plugin does not consume
//! in `handle_data` are kept by the engine and presented again, followed by
//! newer bytes, on the next call. Datagrams, mesh messages and timers may
//! interleave with all of these.
//!
//! # Outbound streams
//!
//! A plugin can also open a stream itself: [`Context::connect`] asks the
//! shard to connect to an address, without blocking. For every id it
//! returns, exactly one of two calls follows, never from inside `connect`
//! itself:
//!
//! * [`Plugin::handle_connected`]: the stream is open. From then on it is a
//!   stream like an accepted one: [`Plugin::handle_data`] any number of
//!   times, then [`Plugin::handle_close`] exactly once. Writes go through the
//!   same queues, back-pressure, outbound budget and counters.
//! * [`Plugin::handle_connect_failed`]: it never opened (refused, timed out,
//!   unreachable, reset during the handshake, cancelled, TLS refused).
//!   `handle_close` is **not** called for it, and the id is dead.
//!
//! With [`ConnectRequest::with_tls`] the engine runs a TLS client handshake
//! (with a client certificate when the named profile has one: mutual TLS)
//! before `handle_connected`, and the plugin reads and writes plaintext;
//! [`Context::peer_identities`] then names the server's certificate.
//!
//! Reconnecting is the plugin's decision: [`backoff::Backoff`] computes
//! capped, jittered exponential delays, and [`Context::set_timer`] wakes the
//! plugin when one has passed.
#![warn(missing_docs)]

pub mod backoff;
mod registry;
pub mod testing;

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use bytes::Bytes;
pub use registry::{Registry, RegistryError};

/// Index of a shard (one worker thread, one CPU) in `0..shard_count`.
pub type ShardId = usize;

/// Transport a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A TCP stream listener.
    Tcp,
    /// A UDP datagram socket.
    Udp,
}

impl Transport {
    /// The lower-case name used in listener specs (`tcp`, `udp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one stream within a shard.
///
/// The engine reuses connection slots; the generation part makes a stale id
/// (one kept after its stream closed) fail instead of reaching a new stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

impl ConnId {
    /// Builds an id from the engine's raw value. Plugins only compare and store ids.
    pub const fn from_raw(raw: u64) -> Self {
        ConnId(raw)
    }

    /// The raw value, for the engine and for keys in plugin-side tables.
    pub const fn raw(self) -> u64 {
        self.0
    }
}

/// Index of a listener in the engine's plan, in the order the listeners were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(pub u16);

impl ListenerId {
    /// The "listener" of a stream the plugin opened itself with
    /// [`Context::connect`] (what [`StreamInfo::listener`] holds for it).
    /// No plan numbers a listener with it.
    pub const OUTBOUND: ListenerId = ListenerId(u16::MAX);
}

/// A datagram socket of the current shard; replies go out through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId(pub u32);

/// What the engine knows about a newly accepted (or newly connected) stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamInfo {
    /// The stream's id, valid until [`Plugin::handle_close`].
    pub conn: ConnId,
    /// The listener that accepted it; [`ListenerId::OUTBOUND`] for a
    /// stream the plugin opened with [`Context::connect`].
    pub listener: ListenerId,
    /// The remote address.
    pub peer: SocketAddr,
    /// The local address (one of the listener's ports, or the local end
    /// the kernel picked for an outbound stream).
    pub local: SocketAddr,
}

/// How long a connect may take unless the request says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A plugin's request to open an outbound stream ([`Context::connect`]).
///
/// ```
/// use std::time::Duration;
/// use ringport_plugin::ConnectRequest;
///
/// let req = ConnectRequest::new("127.0.0.1:4222".parse().unwrap(), 7)
///     .with_timeout(Duration::from_secs(2));
/// assert_eq!((req.tag, req.timeout), (7, Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectRequest {
    /// Where to connect (IPv4 or IPv6).
    pub addr: SocketAddr,
    /// The plugin's own token, handed back in [`Plugin::handle_connected`]
    /// or [`Plugin::handle_connect_failed`] (which upstream, which attempt).
    pub tag: u64,
    /// How long the connect may take before it fails with
    /// [`ConnectFailure::TimedOut`] (counted from the turn it was asked in;
    /// checked once a turn, so it fires at the first turn after it passed).
    /// With TLS it covers the handshake too: `handle_connected` comes once
    /// TLS is up.
    pub timeout: Duration,
    /// Speak TLS over the stream, as a client: the plugin reads and writes
    /// plaintext, as on a `tls` listener.
    pub tls: Option<ConnectTls>,
}

/// TLS for an outbound stream ([`ConnectRequest::with_tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectTls {
    /// The name of a client TLS profile the engine was started with (its
    /// trusted CAs, and the client certificate it presents for mutual TLS).
    pub profile: String,
    /// The name the server's certificate must be valid for, sent as SNI:
    /// a DNS name, or an IP address.
    pub server_name: String,
}

impl ConnectRequest {
    /// A connect to `addr` tagged `tag`, with [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn new(addr: SocketAddr, tag: u64) -> ConnectRequest {
        ConnectRequest {
            addr,
            tag,
            timeout: DEFAULT_CONNECT_TIMEOUT,
            tls: None,
        }
    }

    /// The same request over TLS with client profile `profile`, checking
    /// the server's certificate against `server_name`.
    pub fn with_tls(mut self, profile: impl Into<String>, server_name: impl Into<String>) -> Self {
        self.tls = Some(ConnectTls {
            profile: profile.into(),
            server_name: server_name.into(),
        });
        self
    }

    /// The same request with another connect timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> ConnectRequest {
        self.timeout = timeout;
        self
    }
}

/// Why [`Context::connect`] refused at once. No callback follows a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// This context cannot open connections (a test double that was not
    /// set up for it, or an engine without outbound support).
    Unsupported,
    /// The address cannot be connected to: port 0, an unspecified
    /// (`0.0.0.0`, `::`), multicast or broadcast address.
    InvalidAddress,
    /// The shard's connection table is full (`max_conns_per_shard`, which
    /// accepted and outbound streams share).
    TableFull,
    /// The shard is stopping: no new streams.
    Stopping,
    /// Creating the socket failed with this errno (EMFILE: out of descriptors).
    Socket(i32),
    /// The request names a client TLS profile the engine does not have.
    UnknownTlsProfile,
    /// The request's TLS server name is neither a DNS name nor an IP address.
    InvalidServerName,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Unsupported => f.write_str("this context cannot open connections"),
            ConnectError::InvalidAddress => f.write_str(
                "not a connectable address (port 0, unspecified, multicast or broadcast)",
            ),
            ConnectError::TableFull => f.write_str("the shard's connection table is full"),
            ConnectError::Stopping => f.write_str("the shard is stopping"),
            ConnectError::Socket(errno) => write!(f, "socket() failed with errno {errno}"),
            ConnectError::UnknownTlsProfile => {
                f.write_str("no client TLS profile of that name in the engine")
            }
            ConnectError::InvalidServerName => {
                f.write_str("the TLS server name is neither a DNS name nor an IP address")
            }
        }
    }
}

impl std::error::Error for ConnectError {}

/// Why a connect that [`Context::connect`] started did not open, as told to
/// [`Plugin::handle_connect_failed`]. The engine counts every one per shard
/// under [`as_str`](Self::as_str) (`ringport_connect_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// Nothing listens there: the peer answered with a reset (ECONNREFUSED).
    Refused,
    /// No answer within the request's timeout (or the kernel gave up: ETIMEDOUT).
    TimedOut,
    /// No route to the network or host (ENETUNREACH, EHOSTUNREACH, ENETDOWN, EHOSTDOWN).
    Unreachable,
    /// The connection was reset or aborted during the handshake
    /// (ECONNRESET, ECONNABORTED).
    Reset,
    /// The plugin closed the id before it connected, or the engine stopped.
    Cancelled,
    /// The TLS handshake failed (the server's certificate was not trusted
    /// or not valid for the name, the server refused ours, an alert).
    Tls,
    /// Any other errno.
    Error(i32),
}

impl ConnectFailure {
    /// Number of kinds; counters are arrays of this length.
    pub const KINDS: usize = 7;
    /// The kinds' names, by [`index`](Self::index).
    pub const NAMES: [&'static str; ConnectFailure::KINDS] = [
        "refused",
        "timed_out",
        "unreachable",
        "reset",
        "cancelled",
        "tls",
        "other",
    ];

    /// Index into a counter array (every `Error(_)` is `other`).
    pub fn index(self) -> usize {
        match self {
            ConnectFailure::Refused => 0,
            ConnectFailure::TimedOut => 1,
            ConnectFailure::Unreachable => 2,
            ConnectFailure::Reset => 3,
            ConnectFailure::Cancelled => 4,
            ConnectFailure::Tls => 5,
            ConnectFailure::Error(_) => 6,
        }
    }

    /// The snake-case name used in metrics.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::Error(errno) => write!(f, "connect failed with errno {errno}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Where a datagram came from.
#[derive(Debug, Clone, Copy)]
pub struct DatagramInfo {
    /// The socket it arrived on; pass it to [`Context::send_datagram`] to reply.
    pub socket: SocketId,
    /// The listener that socket belongs to.
    pub listener: ListenerId,
    /// The sender.
    pub peer: SocketAddr,
    /// The local address it was sent to.
    pub local: SocketAddr,
}

/// A plugin's answer to a new stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve the stream.
    Accept,
    /// Close it at once; [`Plugin::handle_close`] is not called.
    Reject,
}

/// Why a message, datagram or connection was dropped.
///
/// Every drop in ringport is counted per shard under one of these reasons; the
/// set is closed so that counting costs an array increment, not a map lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// A frame announced a length below the protocol's minimum.
    FrameTooShort = 0,
    /// A frame announced a length above the configured maximum.
    FrameTooLong = 1,
    /// Bytes that do not parse as the protocol.
    Malformed = 2,
    /// The plugin does not serve this transport or input kind.
    Unsupported = 3,
    /// An outbound queue was at its cap.
    QueueFull = 4,
    /// A cross-shard ring was full.
    MeshFull = 5,
    /// A protocol-specific policy refused the input.
    Refused = 6,
}

impl DropReason {
    /// Number of reasons; counters are arrays of this length.
    pub const COUNT: usize = 7;
    /// Every reason, in discriminant order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::FrameTooShort,
        DropReason::FrameTooLong,
        DropReason::Malformed,
        DropReason::Unsupported,
        DropReason::QueueFull,
        DropReason::MeshFull,
        DropReason::Refused,
    ];

    /// The snake-case name used in stats lines and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::FrameTooShort => "frame_too_short",
            DropReason::FrameTooLong => "frame_too_long",
            DropReason::Malformed => "malformed",
            DropReason::Unsupported => "unsupported",
            DropReason::QueueFull => "queue_full",
            DropReason::MeshFull => "mesh_full",
            DropReason::Refused => "refused",
        }
    }

    /// Index into a counter array.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a stream closed, as told to [`Plugin::handle_close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer shut down its sending side and everything queued was sent.
    PeerClosed,
    /// The peer reset the connection (or a send failed with a reset).
    PeerReset,
    /// The plugin rejected the peer's bytes for this reason.
    Protocol(DropReason),
    /// The plugin asked for the close through [`Context::close`].
    Local,
    /// The engine is shutting down.
    Shutdown,
    /// Any other socket error (the errno).
    Error(i32),
}

/// Why a write or datagram send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// No open stream (or socket) with that id on this shard.
    UnknownTarget,
    /// The outbound queue is at its cap; the bytes were not queued.
    QueueFull,
    /// A datagram larger than the engine's send buffer.
    TooLarge,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteError::UnknownTarget => "no such stream or socket on this shard",
            WriteError::QueueFull => "outbound queue full",
            WriteError::TooLarge => "datagram larger than the send buffer",
        })
    }
}

impl std::error::Error for WriteError {}

/// A message between shards. The payload is reference-counted, so a broadcast
/// to every shard shares one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshMessage {
    /// Plugin-defined meaning (a message type, a topic hash, ...).
    pub tag: u64,
    /// The bytes.
    pub payload: Bytes,
}

/// Why a message to another shard was not queued. The message is handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshError {
    /// The ring to that shard is full: back off, drop (and count), or retry later.
    Full(MeshMessage),
    /// No shard with that id.
    NoSuchShard(MeshMessage),
    /// This engine runs without a cross-shard mesh.
    Unavailable(MeshMessage),
}

impl fmt::Display for MeshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MeshError::Full(_) => "mesh ring full",
            MeshError::NoSuchShard(_) => "no such shard",
            MeshError::Unavailable(_) => "no cross-shard mesh in this engine",
        })
    }
}

impl std::error::Error for MeshError {}

/// Everything a plugin can ask of the engine. Implemented by the engine (and by
/// test doubles); outputs land in engine-owned buffers.
pub trait Context {
    /// The shard this instance runs on.
    fn shard(&self) -> ShardId;
    /// How many shards the engine runs.
    fn shard_count(&self) -> usize;
    /// The time of this loop turn: the same for every call in the turn (the
    /// engine reads the clock once per turn, when first asked).
    fn now(&self) -> Instant;
    /// Queues bytes on a stream. They are copied; the call never blocks.
    ///
    /// [`WriteError::QueueFull`] means the stream's outbound queue is at its
    /// cap because the peer is not reading. A plugin should then stop and
    /// return how much it consumed: the engine keeps the rest, stops reading
    /// the stream, and presents the kept bytes again once the peer has caught up.
    /// A plugin that keeps messages of its own for the stream hears
    /// [`Plugin::handle_writable`] once the queue has room again.
    ///
    /// The same as [`write_parts`](Self::write_parts) with one part, which is
    /// what it does unless an implementation overrides it.
    fn write(&mut self, conn: ConnId, data: &[u8]) -> Result<(), WriteError> {
        self.write_parts(conn, &[data])
    }
    /// Queues `parts` (concatenated) on a stream, all or nothing: on error no
    /// byte of any part was queued, so a reply is never cut in half.
    fn write_parts(&mut self, conn: ConnId, parts: &[&[u8]]) -> Result<(), WriteError>;
    /// Closes a stream once its queued bytes are sent.
    fn close(&mut self, conn: ConnId);
    /// Sends one datagram made of `parts` (concatenated) from `via` to `to`.
    fn send_datagram(
        &mut self,
        via: SocketId,
        to: SocketAddr,
        parts: &[&[u8]],
    ) -> Result<(), WriteError>;
    /// Queues a message for this plugin's instance on `shard` (which may be
    /// this shard). Messages from one shard to another arrive in the order
    /// sent. [`MeshError::Full`] hands the message back: the ring to that
    /// shard is full, and the plugin decides (retry later, or drop and count).
    fn send_to_shard(&mut self, shard: ShardId, msg: MeshMessage) -> Result<(), MeshError>;
    /// Queues a message for this plugin's instance on every *other* shard;
    /// returns how many accepted it. Shards whose ring was full are skipped,
    /// and each skip is counted as a [`DropReason::MeshFull`] drop by the
    /// engine; the error of the first refusal is returned only when no shard
    /// accepted. A plugin that must not lose a message to any shard uses
    /// [`send_to_shard`](Self::send_to_shard) per shard and retries refusals.
    fn broadcast(&mut self, msg: MeshMessage) -> Result<usize, MeshError>;
    /// Calls [`Plugin::handle_timer`] with `token` once `after` has passed.
    fn set_timer(&mut self, after: Duration, token: u64);
    /// Counts `n` application messages handled (for the stats line).
    fn record_messages(&mut self, n: u64);
    /// Counts a drop the plugin decided on without closing anything.
    fn record_drop(&mut self, reason: DropReason);
    /// Counts one latency sample into the shard's histogram called `name`
    /// (shown in `/metrics` as `ringport_latency_seconds{name=...}`). Names
    /// are few and static (a shard keeps at most 8); the plugin measures with
    /// times the engine gave it ([`now`](Self::now), `handle_timer`'s `now`).
    fn record_latency(&mut self, name: &'static str, latency: Duration) {
        let _ = (name, latency);
    }
    /// The identities the peer of a TLS stream proved with its client
    /// certificate, as the handshake log writes them: `dns:NAME`, URI SANs
    /// such as `spiffe://prod.example/sensor/7`, `ip:ADDRESS`. For an
    /// outbound TLS stream ([`ConnectRequest::with_tls`]), the names of the
    /// server's certificate (which the handshake verified). Empty for a
    /// plaintext stream, a TLS stream without a client certificate, or an
    /// unknown id. It allocates: call it once per stream (at a protocol's
    /// login), not per message.
    fn peer_identities(&self, conn: ConnId) -> Vec<String> {
        let _ = conn;
        Vec::new()
    }
    /// The peer address of a stream (what [`StreamInfo::peer`] said at
    /// open), while the stream is open; `None` for an unknown or closed id.
    /// Lets a plugin that keeps state per stream leave the address to the
    /// engine, which holds it anyway, and ask for it when it logs. The
    /// default answers `None`, so contexts written before it keep compiling.
    fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        let _ = conn;
        None
    }
    /// Starts opening a stream to `req.addr` from this shard and returns its
    /// id at once; the connect goes on in the background.
    ///
    /// Exactly one of [`Plugin::handle_connected`] and
    /// [`Plugin::handle_connect_failed`] follows for the id, in a later call
    /// (never from inside this one), on this plugin instance. After
    /// `handle_connected` the stream is like an accepted one:
    /// `handle_data`, then `handle_close` exactly once. After
    /// `handle_connect_failed` nothing more comes: no `handle_close`.
    ///
    /// With [`ConnectRequest::tls`], "connects" means the TLS handshake
    /// is done too (within the same timeout); a failed handshake is
    /// [`ConnectFailure::Tls`].
    ///
    /// Until it connects, bytes [`write`](Self::write)n to the id are
    /// queued (under the same caps as any stream's) and sent once it
    /// connects; [`close`](Self::close) cancels the attempt
    /// ([`ConnectFailure::Cancelled`], the queued bytes dropped).
    ///
    /// Outbound streams count against the shard's connection table and
    /// outbound budget like accepted ones. The listeners' source policy
    /// (allowlists, per-source limits, first-bytes and idle timeouts, the
    /// handshake log) judges peers that come to a listener and does not
    /// apply: the plugin chose this peer, and keeps its own liveness
    /// checks (a protocol ping on a [`set_timer`](Self::set_timer)).
    ///
    /// The default refuses with [`ConnectError::Unsupported`], so contexts
    /// written before outbound streams existed keep compiling.
    fn connect(&mut self, req: ConnectRequest) -> Result<ConnId, ConnectError> {
        let _ = req;
        Err(ConnectError::Unsupported)
    }
}

/// One protocol instance on one shard. See the crate docs for the calling order.
pub trait Plugin {
    /// The shard starts serving: called once, before any other call. The
    /// place to open outbound streams ([`Context::connect`]) or set the
    /// first timer.
    fn handle_start(&mut self, ctx: &mut dyn Context) {
        let _ = ctx;
    }

    /// A stream was accepted on one of this plugin's listeners.
    fn handle_open(&mut self, ctx: &mut dyn Context, stream: &StreamInfo) -> Verdict {
        let _ = (ctx, stream);
        Verdict::Accept
    }

    /// Bytes arrived on a stream. `data` starts with the bytes not consumed by
    /// the previous call. Returns how many bytes were consumed (at most
    /// `data.len()`); an error closes the stream and is counted under its reason.
    fn handle_data(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        data: &[u8],
    ) -> Result<usize, DropReason> {
        let _ = (ctx, conn, data);
        Err(DropReason::Unsupported)
    }

    /// An accepted stream closed; called exactly once per accepted stream,
    /// and once per outbound stream after its
    /// [`handle_connected`](Self::handle_connected) (never after
    /// [`handle_connect_failed`](Self::handle_connect_failed)).
    fn handle_close(&mut self, ctx: &mut dyn Context, conn: ConnId, reason: CloseReason) {
        let _ = (ctx, conn, reason);
    }

    /// A stream asked for with [`Context::connect`] is open (`stream.conn`
    /// is the id `connect` returned; `stream.listener` is
    /// [`ListenerId::OUTBOUND`]; `tag` is the request's). Its bytes arrive
    /// through [`handle_data`](Self::handle_data) and its end through
    /// [`handle_close`](Self::handle_close), as for an accepted stream. The
    /// default closes it: a plugin that connects implements this.
    fn handle_connected(&mut self, ctx: &mut dyn Context, stream: &StreamInfo, tag: u64) {
        let _ = tag;
        ctx.close(stream.conn);
    }

    /// A stream asked for with [`Context::connect`] did not open; `conn` is
    /// dead and no [`handle_close`](Self::handle_close) follows. The place
    /// to schedule a retry ([`backoff::Backoff`], [`Context::set_timer`]).
    fn handle_connect_failed(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        tag: u64,
        failure: ConnectFailure,
    ) {
        let _ = (ctx, conn, tag, failure);
    }

    /// A datagram arrived. An error drops it and is counted under its reason.
    fn handle_datagram(
        &mut self,
        ctx: &mut dyn Context,
        from: &DatagramInfo,
        data: &[u8],
    ) -> Result<(), DropReason> {
        let _ = (ctx, from, data);
        Err(DropReason::Unsupported)
    }

    /// A stream whose outbound queue refused a write
    /// ([`WriteError::QueueFull`]) has room again: what it had queued is
    /// down to half the stream's cap. Called once per refusal spell (the
    /// next refusal arms it again), from the completion of the send that
    /// made room, so a plugin that keeps messages for a slow reader
    /// resumes writing when the reader catches up, with no timer. Not
    /// called for a stream that closes meanwhile, nor for a refusal that
    /// closes the stream (the outbound budget's eviction).
    fn handle_writable(&mut self, ctx: &mut dyn Context, conn: ConnId) {
        let _ = (ctx, conn);
    }

    /// A message from the instance on another shard.
    fn handle_message(&mut self, ctx: &mut dyn Context, from: ShardId, msg: MeshMessage) {
        let _ = (ctx, from, msg);
    }

    /// A timer set with [`Context::set_timer`] fired; `now` is the engine's clock.
    fn handle_timer(&mut self, ctx: &mut dyn Context, now: Instant, token: u64) {
        let _ = (ctx, now, token);
    }
}

/// The shard that owns `key` among `shard_count` shards: a stable hash
/// (64-bit FNV-1a with a 64-bit avalanche finaliser) of the key, reduced to a
/// shard index. The same key maps to
/// the same shard on every shard, in every process and every run, so shards
/// agree on ownership without talking. Returns 0 when `shard_count` is 0.
pub fn shard_for_key(key: &[u8], shard_count: usize) -> ShardId {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    if shard_count == 0 {
        return 0;
    }
    let mut h = OFFSET;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    // FNV-1a leaves the high bits of similar short keys alike; the
    // finaliser (the MurmurHash3 fmix64 steps) spreads every input bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    // Multiply-shift maps the hash onto 0..shard_count without a division.
    ((u128::from(h) * shard_count as u128) >> 64) as ShardId
}

/// Makes one [`Plugin`] instance per shard. Registered by name.
pub trait PluginFactory: Send + Sync {
    /// The name used in listener specs (`echo` in `echo@tcp:127.0.0.1:9000`).
    fn name(&self) -> &str;
    /// Whether the plugin serves this transport; the engine refuses a listener
    /// spec that pairs the plugin with a transport it does not serve.
    fn supports(&self, transport: Transport) -> bool;
    /// A new instance for `shard` of `shard_count`.
    fn create(&self, shard: ShardId, shard_count: usize) -> Box<dyn Plugin>;
}

#[cfg(test)]
mod key_tests {
    use super::shard_for_key;

    #[test]
    fn keys_map_stably_and_spread() {
        // Fixed values: the mapping must never change between releases.
        assert_eq!(shard_for_key(b"", 4), 3);
        assert_eq!(
            shard_for_key(b"sensors/temp", 4),
            shard_for_key(b"sensors/temp", 4)
        );
        assert_eq!(shard_for_key(b"anything", 1), 0);
        assert_eq!(shard_for_key(b"anything", 0), 0);
        let mut counts = [0usize; 4];
        for i in 0..4000u32 {
            counts[shard_for_key(format!("topic-{i}").as_bytes(), 4)] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
    }
}
