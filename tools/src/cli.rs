//! Command-line flags.

use clap::{Args, Parser, Subcommand};
use ringport_engine::cpus::CpuList;
use ringport_engine::plan::Mode;
use ringport_engine::spec::ListenerSpec;
use ringport_engine::{EngineConfig, UdpDropCounter};

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
    Serve(ServeArgs),
    /// A client of the `relay` protocol (publish, subscribe), for scripts and tests.
    Relay {
        /// `pub` or `sub`.
        #[command(subcommand)]
        command: crate::relay::RelayCommand,
    },
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

/// Flags of `ringport serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
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

    /// `range`: each shard owns a contiguous slice of every listener's ports;
    /// `reuseport`: every shard binds every port with SO_REUSEPORT.
    #[arg(long, default_value = "range", value_name = "MODE")]
    pub mode: Mode,

    /// In range mode, allow listeners with fewer ports than shards (some
    /// shards then serve none of its ports) instead of refusing the plan.
    #[arg(long)]
    pub allow_idle_shards: bool,

    /// Print one stats line per shard every SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub stats_interval: Option<f64>,

    /// Once a completion is ready, wait up to N microseconds for more before
    /// running the loop turn (batching; 0 never adds latency). Kernel 6.12+.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub batch_delay_us: u32,

    /// Largest frame (header included) a framed protocol accepts.
    #[arg(long, default_value_t = 65536, value_name = "BYTES")]
    pub max_frame: usize,

    /// Submission queue entries per shard ring.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub ring_entries: u32,

    /// Bytes per TCP receive buffer.
    #[arg(long, default_value_t = 16384, value_name = "BYTES")]
    pub tcp_buf_size: u32,

    /// TCP receive buffers per shard (power of two).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub tcp_bufs: u16,

    /// Largest UDP datagram received whole; larger ones are counted as truncated.
    #[arg(long, default_value_t = 2048, value_name = "BYTES")]
    pub udp_max_datagram: u32,

    /// UDP receive buffers per shard (power of two).
    #[arg(long, default_value_t = 2048, value_name = "N")]
    pub udp_bufs: u16,

    /// Datagram sends in flight per shard.
    #[arg(long, default_value_t = 2048, value_name = "N")]
    pub udp_send_slots: usize,

    /// How kernel UDP receive-queue drops are read: `poll` (SO_MEMINFO every
    /// 100 ms while datagrams arrive) or `cmsg` (SO_RXQ_OVFL on every datagram;
    /// costs more CPU and reports drops only with the next datagram).
    #[arg(long, default_value = "poll", value_name = "poll|cmsg")]
    pub udp_drop_counter: UdpDropCounter,

    /// SO_RCVBUF asked for on UDP sockets (the kernel caps it at net.core.rmem_max).
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    pub udp_rcvbuf: usize,

    /// Cap of queued outbound bytes per stream.
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    pub max_outbound: usize,
}

impl ServeArgs {
    /// `serve` with every default, for `ringport` with no subcommand.
    pub fn default_serve() -> ServeArgs {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        Wrapper::parse_from(["ringport"]).args
    }

    /// The engine tunables from the flags.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            ring_entries: self.ring_entries,
            tcp_buf_size: self.tcp_buf_size,
            tcp_bufs: self.tcp_bufs,
            udp_max_datagram: self.udp_max_datagram,
            udp_bufs: self.udp_bufs,
            udp_send_slots: self.udp_send_slots,
            max_outbound: self.max_outbound,
            pause_outbound: (256 << 10).min(self.max_outbound),
            batch_delay_us: self.batch_delay_us,
            udp_drop_counter: self.udp_drop_counter,
            udp_rcvbuf: self.udp_rcvbuf,
            ..EngineConfig::default()
        }
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
        assert_eq!(d.mode, Mode::Range);
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
        assert_eq!(a.mode, Mode::Reuseport);
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
