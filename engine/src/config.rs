//! Engine tunables (everything but the port plan).

/// How kernel receive-queue drops of UDP sockets are read. Both read the same
/// kernel counter (`sk_drops`); they differ in cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UdpDropCounter {
    /// getsockopt(SO_MEMINFO) at most every 100 ms while datagrams arrive and
    /// once after they stop: no per-datagram cost.
    #[default]
    Poll,
    /// SO_RXQ_OVFL: the counter rides along every datagram as a control
    /// message (about 10% more server CPU per small datagram, measured).
    Cmsg,
}

impl std::str::FromStr for UdpDropCounter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "poll" => Ok(UdpDropCounter::Poll),
            "cmsg" => Ok(UdpDropCounter::Cmsg),
            other => Err(format!(
                "`{other}` is not a drop counter: use `poll` or `cmsg`"
            )),
        }
    }
}

/// Which I/O backend the shards run on (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// io_uring when this machine allows it, else epoll (with a note saying
    /// why and how to get io_uring back).
    #[default]
    Auto,
    /// io_uring, or refuse to start with the reason.
    IoUring,
    /// epoll (readiness; for where io_uring is blocked).
    Epoll,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "io-uring" | "io_uring" => Ok(BackendChoice::IoUring),
            "epoll" => Ok(BackendChoice::Epoll),
            other => Err(format!(
                "`{other}` is not a backend: use `auto`, `io-uring` or `epoll`"
            )),
        }
    }
}

impl BackendChoice {
    /// The environment variable a backend choice may come from (the
    /// `ringport` binary's fallback when neither flag nor key sets it, and
    /// the test suites' way to run on either backend).
    pub const ENV: &'static str = "RINGPORT_BACKEND";

    /// The choice in [`BackendChoice::ENV`], if set; an error names the
    /// variable and the values it takes.
    pub fn from_env() -> Result<Option<BackendChoice>, String> {
        match std::env::var(Self::ENV) {
            Ok(v) if !v.is_empty() => v
                .parse()
                .map(Some)
                .map_err(|e: String| format!("{}={v}: {e}", Self::ENV)),
            _ => Ok(None),
        }
    }

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::IoUring => "io-uring",
            BackendChoice::Epoll => "epoll",
        }
    }
}

/// The backend a running engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring.
    IoUring,
    /// epoll.
    Epoll,
}

impl BackendKind {
    /// The name `/metrics` and `/status` show.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::IoUring => "io-uring",
            BackendKind::Epoll => "epoll",
        }
    }
}

/// How a shard wakes another that is parked waiting for completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MeshWake {
    /// IORING_OP_MSG_RING into the target's ring, posted with the sender's
    /// next submit (no extra syscall); eventfd where the kernel lacks it.
    #[default]
    MsgRing,
    /// A write(2) to the target's eventfd.
    Eventfd,
}

impl std::str::FromStr for MeshWake {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "msg-ring" => Ok(MeshWake::MsgRing),
            "eventfd" => Ok(MeshWake::Eventfd),
            other => Err(format!(
                "`{other}` is not a wake method: use `msg-ring` or `eventfd`"
            )),
        }
    }
}

/// How a shard sizes its rings, buffers and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Submission queue entries per shard ring (the CQ gets four times as many).
    pub ring_entries: u32,
    /// Bytes per TCP receive buffer in the provided buffer ring.
    pub tcp_buf_size: u32,
    /// TCP receive buffers per shard (power of two).
    pub tcp_bufs: u16,
    /// Largest datagram payload received whole; larger ones are cut and counted.
    pub udp_max_datagram: u32,
    /// UDP receive buffers per shard (power of two).
    pub udp_bufs: u16,
    /// Datagrams that may be in flight to the kernel per shard.
    pub udp_send_slots: usize,
    /// Hard cap of queued outbound bytes per stream; writes beyond it fail with `QueueFull`.
    pub max_outbound: usize,
    /// Queued outbound bytes over all of a shard's streams; a write that
    /// would exceed it evicts the shard's slowest reader (see
    /// [`crate::outbound`]).
    pub max_outbound_per_shard: usize,
    /// Queued outbound bytes over every shard of the process (same policy).
    pub max_outbound_total: usize,
    /// Above this many queued outbound bytes a stream stops being read until
    /// the peer has taken half of them (backpressure).
    pub pause_outbound: usize,
    /// Once a completion is ready, wait up to this long for more before running
    /// the turn (0: never add latency). Needs kernel 6.12 (IORING_FEAT_MIN_TIMEOUT).
    pub batch_delay_us: u32,
    /// How kernel receive-queue drops are read.
    pub udp_drop_counter: UdpDropCounter,
    /// SO_RCVBUF asked for on UDP sockets (capped by net.core.rmem_max).
    pub udp_rcvbuf: usize,
    /// Messages each cross-shard ring holds (one ring per ordered pair of
    /// shards: memory is shards² x capacity x 48 bytes).
    pub mesh_capacity: usize,
    /// How parked shards are woken for cross-shard messages.
    pub mesh_wake: MeshWake,
    /// listen() backlog.
    pub backlog: i32,
    /// Streams per shard; more are refused at accept and counted.
    pub max_conns_per_shard: usize,
    /// TLS handshakes in progress per shard, over all `tls` listeners; more
    /// connections are refused at accept and counted (0: no limit).
    pub tls_max_handshakes: usize,
    /// The I/O backend.
    pub backend: BackendChoice,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ring_entries: 1024,
            tcp_buf_size: 16 * 1024,
            tcp_bufs: 1024,
            udp_max_datagram: 2048,
            udp_bufs: 2048,
            udp_send_slots: 2048,
            max_outbound: 4 << 20,
            max_outbound_per_shard: 256 << 20,
            max_outbound_total: 1 << 30,
            pause_outbound: 256 << 10,
            batch_delay_us: 0,
            udp_drop_counter: UdpDropCounter::Poll,
            udp_rcvbuf: 4 << 20,
            mesh_capacity: 1024,
            mesh_wake: MeshWake::MsgRing,
            backlog: 4096,
            max_conns_per_shard: 65536,
            tls_max_handshakes: 1024,
            backend: BackendChoice::Auto,
        }
    }
}

impl EngineConfig {
    /// Checks the values a kernel or the engine cannot work with; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !self.tcp_bufs.is_power_of_two() || self.tcp_bufs > 32768 {
            return Err(format!(
                "tcp_bufs = {} must be a power of two between 1 and 32768 (e.g. 1024)",
                self.tcp_bufs
            ));
        }
        if !self.udp_bufs.is_power_of_two() || self.udp_bufs > 32768 {
            return Err(format!(
                "udp_bufs = {} must be a power of two between 1 and 32768 (e.g. 2048)",
                self.udp_bufs
            ));
        }
        if self.tcp_buf_size < 64 {
            return Err(format!(
                "tcp_buf_size = {} must be at least 64",
                self.tcp_buf_size
            ));
        }
        if self.udp_max_datagram == 0 || self.udp_max_datagram > 65507 {
            return Err(format!(
                "udp_max_datagram = {} must be between 1 and 65507",
                self.udp_max_datagram
            ));
        }
        if self.ring_entries < 8 || self.ring_entries > 32768 {
            return Err(format!(
                "ring_entries = {} must be between 8 and 32768",
                self.ring_entries
            ));
        }
        if self.mesh_capacity == 0 {
            return Err("mesh_capacity must be at least 1 (e.g. 1024)".to_owned());
        }
        if self.udp_send_slots == 0 {
            return Err("udp_send_slots must be at least 1".to_owned());
        }
        if self.pause_outbound == 0 || self.pause_outbound > self.max_outbound {
            return Err(format!(
                "pause_outbound = {} must be between 1 and max_outbound = {}",
                self.pause_outbound, self.max_outbound
            ));
        }
        Ok(())
    }
}
