//! Command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ringport_engine::cpus::CpuList;
use ringport_engine::log::LogFormat;
use ringport_engine::plan::Mode;
use ringport_engine::spec::ListenerSpec;
use ringport_engine::tls::TlsVersion;
use ringport_engine::{BackendChoice, MeshWake, UdpDropCounter};

/// ringport: a thread-per-core io_uring engine for machine-to-machine traffic
/// on internal ports. With no subcommand it runs `serve` with its defaults.
#[derive(Debug, Parser)]
#[command(name = "ringport", version, about, long_about = None)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the listeners (the default).
    Serve(Box<ServeArgs>),
    /// A client of the `relay` protocol (publish, subscribe), for scripts and tests.
    Relay {
        /// `pub` or `sub`.
        #[command(subcommand)]
        command: crate::relay::RelayCommand,
    },
    /// Validate a config file and print the plan it gives, without binding anything.
    CheckConfig {
        /// The TOML file (see ringport.example.toml).
        file: PathBuf,
    },
    /// Check this machine for what ringport needs, against the plan `serve`
    /// would run with the same flags; exits 1 when a check fails.
    #[command(long_about = DOCTOR_ABOUT)]
    Doctor(Box<DoctorArgs>),
    /// Tools for the `mqtt` plugin (password files).
    Mqtt {
        /// `passwd`.
        #[command(subcommand)]
        command: MqttCommand,
    },
}

/// `ringport mqtt ...`.
#[derive(Debug, Subcommand)]
pub enum MqttCommand {
    /// Adds USER to the password file FILE, or changes its password (the
    /// file is created when missing, and replaced atomically). The password
    /// is the first line of standard input. The format is Mosquitto 2.0's
    /// (`mosquitto_passwd`): PBKDF2-HMAC-SHA512, so files move both ways.
    Passwd {
        /// The password file (`--mqtt-password-file` of `serve`).
        file: PathBuf,
        /// The user name.
        user: String,
        /// PBKDF2 iterations for the new entry (default 20000, at most
        /// 10000000): each one is slower to guess, and slower to verify at a
        /// client's first CONNECT.
        #[arg(long)]
        iterations: Option<u32>,
    },
}

/// `ringport doctor --help`.
const DOCTOR_ABOUT: &str = "\
Check this machine for what ringport needs, each check ok, warn or fail, with the fix \
when it is not ok:

- the kernel version;
- io_uring, probed for real on throw-away rings: io_uring_setup with the shards' flags \
(SINGLE_ISSUER, DEFER_TASKRUN, COOP_TASKRUN), the operations shards need, provided buffer \
rings, multishot receive, min-wait batching, MSG_RING and registered ring fds;
- the seccomp mode and kernel.io_uring_disabled;
- the locked-memory limit (where io_uring is charged to it) and the open-files soft and hard \
limits, net.core.rmem_max against --udp-rcvbuf, and the CPUs this process may use against \
--cpus, all against the plan `serve` would run with the same flags and --config file \
(without any: the default listeners, one shard per allowed CPU);
- last, the backend the shards would run on: with --backend auto (the default) io_uring, or \
epoll with the cause and how to get io_uring back.

An io_uring check that finds io_uring unusable fails when the shards would run on io_uring \
(--backend io-uring, or auto when the engine would not fall back) and warns when they would \
run on epoll.

Exit status: 1 when a check fails (or the flags or the config file are invalid), 0 \
otherwise, warnings included.";

/// Flags of `ringport doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the checks as a JSON array of objects with the keys `check`,
    /// `status` (`ok`, `warn` or `fail`), `detail` and `fix` (null when ok).
    #[arg(long)]
    pub json: bool,

    /// The plan to check against: every flag of `serve`.
    #[command(flatten)]
    #[command(next_help_heading = "The plan to check (the flags of `serve`)")]
    pub serve: ServeArgs,
}

/// Default listeners when no --listen is given: echo and sockperf, TCP and
/// UDP, on loopback, 64 ports each.
pub const DEFAULT_LISTENERS: [&str; 4] = [
    "echo@tcp:127.0.0.1:7000-7063",
    "echo@udp:127.0.0.1:7000-7063",
    "sockperf@tcp:127.0.0.1:11111-11174",
    "sockperf@udp:127.0.0.1:11111-11174",
];

/// The parsed default listeners.
pub fn default_listeners() -> Vec<ListenerSpec> {
    DEFAULT_LISTENERS
        .iter()
        .map(|s| s.parse().expect("default listener specs are valid"))
        .collect()
}

/// Flags of `ringport serve`. Every flag has a key of the same name (with
/// `_` for `-`) in the config file; a flag given wins over the file.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// A TOML config file with any of these settings (see
    /// ringport.example.toml); flags given as well override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// A listener, PROTOCOL@TRANSPORT:ADDR:PORTS (repeatable), e.g.
    /// `sockperf@udp:127.0.0.1:11111-11114` or `echo@tcp:[::1]:9000`.
    /// Default: echo on 127.0.0.1:7000-7063 and sockperf on
    /// 127.0.0.1:11111-11174, both over TCP and UDP.
    #[arg(long, value_name = "SPEC")]
    pub listen: Vec<ListenerSpec>,

    /// Number of shards (worker threads). Default: one per CPU in --cpus.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(usize))]
    pub shards: Option<usize>,

    /// CPUs to pin shards to, e.g. `0-3,6`; shard i runs on the i-th CPU
    /// (round robin when there are more shards). Default: every CPU this
    /// process may run on.
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<CpuList>,

    /// I/O backend: `auto` (io_uring when this machine allows it, else epoll
    /// with a note saying why), `io-uring` (or refuse to start with the
    /// reason), or `epoll`. Without the flag or key: $RINGPORT_BACKEND, then
    /// auto. [default: auto]
    #[arg(long, value_name = "auto|io-uring|epoll")]
    pub backend: Option<BackendChoice>,

    /// `range`: each shard owns a contiguous slice of every listener's ports;
    /// `reuseport`: every shard binds every port with SO_REUSEPORT. [default: range]
    #[arg(long, value_name = "MODE")]
    pub mode: Option<Mode>,

    /// In range mode, allow listeners with fewer ports than shards (some
    /// shards then serve none of its ports) instead of refusing the plan.
    #[arg(long)]
    pub allow_idle_shards: bool,

    /// Print one stats line per shard every SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub stats_interval: Option<f64>,

    /// Once a completion is ready, wait up to N microseconds for more before
    /// running the loop turn (batching; 0 never adds latency). Kernel 6.12+. [default: 0]
    #[arg(long, value_name = "N")]
    pub batch_delay_us: Option<u32>,

    /// Largest frame (header included) a framed protocol accepts. [default: 65536]
    #[arg(long, value_name = "BYTES")]
    pub max_frame: Option<usize>,

    /// Submission queue entries per shard ring. [default: 1024]
    #[arg(long, value_name = "N")]
    pub ring_entries: Option<u32>,

    /// Bytes per TCP receive buffer. [default: 16384]
    #[arg(long, value_name = "BYTES")]
    pub tcp_buf_size: Option<u32>,

    /// TCP receive buffers per shard (power of two). [default: 1024]
    #[arg(long, value_name = "N")]
    pub tcp_bufs: Option<u16>,

    /// Largest UDP datagram received whole; larger ones are dropped and
    /// counted as truncated. [default: 2048]
    #[arg(long, value_name = "BYTES")]
    pub udp_max_datagram: Option<u32>,

    /// Largest datagram a UDP listener takes; longer ones are dropped before
    /// any plugin code and counted per listener (at most
    /// --udp-max-datagram). Default: --udp-max-datagram.
    #[arg(long, value_name = "BYTES")]
    pub max_datagram: Option<u32>,

    /// UDP receive buffers per shard (power of two). [default: 2048]
    #[arg(long, value_name = "N")]
    pub udp_bufs: Option<u16>,

    /// Datagram sends in flight per shard. [default: 2048]
    #[arg(long, value_name = "N")]
    pub udp_send_slots: Option<usize>,

    /// How kernel UDP receive-queue drops are read: `poll` (SO_MEMINFO every
    /// 100 ms while datagrams arrive) or `cmsg` (SO_RXQ_OVFL on every datagram;
    /// costs more CPU and reports drops only with the next datagram). [default: poll]
    #[arg(long, value_name = "poll|cmsg")]
    pub udp_drop_counter: Option<UdpDropCounter>,

    /// SO_RCVBUF asked for on UDP sockets (the kernel caps it at
    /// net.core.rmem_max). [default: 4194304]
    #[arg(long, value_name = "BYTES")]
    pub udp_rcvbuf: Option<usize>,

    /// Cap of queued outbound bytes per stream; a peer that does not read
    /// stops being read from. [default: 4194304]
    #[arg(long, value_name = "BYTES")]
    pub max_outbound: Option<usize>,

    /// Cap of queued outbound bytes over all of a shard's streams; a write
    /// that would exceed it closes the shard's slowest reader (the stream
    /// with the most queued), counted as `outbound_budget`. [default: 268435456]
    #[arg(long, value_name = "BYTES")]
    pub max_outbound_per_shard: Option<usize>,

    /// Cap of queued outbound bytes over every shard of the process (same
    /// policy). [default: 1073741824]
    #[arg(long, value_name = "BYTES")]
    pub max_outbound_total: Option<usize>,

    /// Messages each cross-shard ring holds (one ring per ordered pair of
    /// shards); a full ring is reported to the sending plugin. [default: 1024]
    #[arg(long, value_name = "N")]
    pub mesh_capacity: Option<usize>,

    /// How a shard wakes another that is parked: `msg-ring`
    /// (IORING_OP_MSG_RING, posted with the sender's next submit) or `eventfd`.
    /// [default: msg-ring]
    #[arg(long, value_name = "msg-ring|eventfd")]
    pub mesh_wake: Option<MeshWake>,

    /// A trusted source CIDR or address for every listener (repeatable), e.g.
    /// `10.0.0.0/8`. Default: loopback for listeners bound to loopback; a
    /// listener bound to another address needs an explicit list
    /// (`--allow 0.0.0.0/0 --allow ::/0` for everyone).
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<String>,

    /// Audit mode: serve sources outside the allowlists, but count and log
    /// them as `would_deny`.
    #[arg(long)]
    pub allow_dry_run: bool,

    /// Open connections per listener over all shards (0: no limit). [default: 65536]
    #[arg(long, value_name = "N")]
    pub max_conns: Option<u32>,

    /// IPv6 sources count as one source per prefix of this many bits for
    /// every per-source limit, rate, handshake cap, log gate and denial
    /// alert (IPv4 addresses count whole). [default: 64]
    #[arg(long, value_name = "BITS")]
    pub ipv6_source_prefix: Option<u8>,

    /// Open connections per source address and shard (0: no limit). [default: 4096]
    #[arg(long, value_name = "N")]
    pub max_conns_per_source: Option<u32>,

    /// New connections per second per source address and shard (0: no
    /// limit). [default: 1000]
    #[arg(long, value_name = "N")]
    pub conn_rate: Option<u32>,

    /// How many new connections a source may open at once before
    /// --conn-rate applies. [default: 2000]
    #[arg(long, value_name = "N")]
    pub conn_burst: Option<u32>,

    /// Close a connection that sends nothing for SECS after it opens (0: never). [default: 10]
    #[arg(long, value_name = "SECS")]
    pub first_bytes_timeout: Option<f64>,

    /// Close a connection with no bytes either way for SECS (0: never). [default: 300]
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<f64>,

    /// Close a connection SECS after its peer shut its sending side if it
    /// has not finished by then (0: never). [default: 30]
    #[arg(long, value_name = "SECS")]
    pub half_closed_timeout: Option<f64>,

    /// PEM certificate chain (leaf first) of every `tls` listener, e.g.
    /// `echo@tls:127.0.0.1:9000`. Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1). Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): `tls` listeners then require a client
    /// certificate chained to one of them (mutual TLS). Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// A client identity `tls` listeners allow (repeatable; needs
    /// --tls-client-ca): a URI SAN such as `spiffe://prod.example/sensor/*`
    /// (a trailing `*` matches by prefix) or `dns:NAME` (`dns:*.example`
    /// for every name under it). Default: every certificate of the client CA.
    #[arg(long, value_name = "PATTERN")]
    pub tls_allow_identity: Vec<String>,

    /// Lowest TLS version `tls` listeners accept: `1.3`, or `1.2` to allow
    /// TLS 1.2 as well. [default: 1.3]
    #[arg(long, value_name = "1.3|1.2")]
    pub tls_min_version: Option<TlsVersion>,

    /// An ALPN protocol `tls` listeners offer (repeatable, in order of
    /// preference). Default: no ALPN.
    #[arg(long, value_name = "NAME")]
    pub tls_alpn: Vec<String>,

    /// Close a TLS connection whose handshake has not finished SECS after it
    /// opened (0: never). [default: 10]
    #[arg(long, value_name = "SECS")]
    pub tls_handshake_timeout: Option<f64>,

    /// TLS handshakes in progress per source address and shard; more
    /// connections are refused at accept (0: no limit). [default: 64]
    #[arg(long, value_name = "N")]
    pub tls_max_handshakes_per_source: Option<u32>,

    /// TLS handshakes in progress per shard over all `tls` listeners; more
    /// connections are refused at accept (0: no limit). [default: 1024]
    #[arg(long, value_name = "N")]
    pub tls_max_handshakes: Option<usize>,

    /// Turn off TLS session resumption (tickets): every handshake is a full one.
    #[arg(long)]
    pub tls_no_resumption: bool,

    /// Write the handshake log (one line per connection open and close, per
    /// denial, per new UDP source, plus alerts) to FILE, or `-` for stderr.
    /// Default: no handshake log.
    #[arg(long, value_name = "FILE")]
    pub log: Option<String>,

    /// Handshake log format: `json` (one object per line) or `text`. [default: json]
    #[arg(long, value_name = "json|text")]
    pub log_format: Option<LogFormat>,

    /// Serve GET /metrics (Prometheus text) and GET /status (JSON) on this
    /// address, e.g. `127.0.0.1:9900`. Default: off.
    #[arg(long, value_name = "ADDR:PORT")]
    pub admin: Option<SocketAddr>,

    /// Sources the admin endpoint answers (repeatable CIDR). Default: loopback only.
    #[arg(long, value_name = "CIDR")]
    pub admin_allow: Vec<String>,

    /// Serve the admin endpoint over HTTPS with this certificate chain (PEM,
    /// leaf first); needs --admin-tls-key. Default: plain HTTP.
    #[arg(long, value_name = "FILE")]
    pub admin_tls_cert: Option<PathBuf>,

    /// The private key of --admin-tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub admin_tls_key: Option<PathBuf>,

    /// Close an admin connection whose request is not read and answered
    /// (TLS handshake included) within SECS of its accept (at most 3600).
    /// [default: 5]
    #[arg(long, value_name = "SECS")]
    pub admin_timeout: Option<f64>,

    /// Admin connections open at once (1 to 4096); more are closed as soon
    /// as accepted. [default: 16]
    #[arg(long, value_name = "N")]
    pub admin_max_conns: Option<usize>,

    /// On SIGTERM or SIGINT, let open connections finish for up to SECS
    /// before closing them; a second SIGINT stops at once. [default: 30]
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<f64>,

    /// The `mqtt` plugin's settings.
    #[command(flatten)]
    pub mqtt: crate::mqtt::MqttArgs,

    /// The NATS bridge's settings.
    #[command(flatten)]
    pub nats: crate::nats::NatsArgs,

    /// Alert when a listener's rate exceeds its baseline this many times
    /// over (0: no alerts). [default: 5]
    #[arg(long, value_name = "X")]
    pub alert_factor: Option<f64>,

    /// ... for this long. [default: 30]
    #[arg(long, value_name = "SECS")]
    pub alert_sustain: Option<f64>,

    /// Alert when one source is denied more than N times within
    /// --alert-source-window on a listener (0: no such alerts). [default: 100]
    #[arg(long, value_name = "N")]
    pub alert_source_denials: Option<u64>,

    /// The window of --alert-source-denials; the alert clears after a whole
    /// window with the source at or under the limit. [default: 60]
    #[arg(long, value_name = "SECS")]
    pub alert_source_window: Option<f64>,
}

impl ServeArgs {
    /// `serve` with every default, for `ringport` with no subcommand.
    pub fn default_serve() -> ServeArgs {
        ServeArgs::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_flags_parse() {
        let d = ServeArgs::default_serve();
        assert!(d.listen.is_empty());
        assert_eq!(d.mode, None);
        assert_eq!(default_listeners().len(), 4);
        let cli = Cli::try_parse_from([
            "ringport",
            "serve",
            "--listen",
            "sockperf@udp:127.0.0.1:11111-11114",
            "--listen",
            "echo@tcp:127.0.0.1:9000-9063",
            "--shards",
            "4",
            "--cpus",
            "0-1",
            "--mode",
            "reuseport",
        ])
        .unwrap();
        let Some(Command::Serve(a)) = cli.command else {
            panic!("serve")
        };
        assert_eq!(a.listen.len(), 2);
        assert_eq!(a.shards, Some(4));
        assert_eq!(a.cpus.unwrap().as_slice(), &[0, 1]);
        assert_eq!(a.mode, Some(Mode::Reuseport));
    }

    #[test]
    fn bad_listener_names_the_part() {
        let err = Cli::try_parse_from(["ringport", "serve", "--listen", "echo@sctp:127.0.0.1:9"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sctp"), "{err}");
        let err = Cli::try_parse_from(["ringport", "serve", "--cpus", "3-1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("3-1"), "{err}");
    }
}
