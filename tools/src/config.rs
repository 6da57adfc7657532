//! The config file (`--config FILE`, `ringport check-config FILE`) and how
//! it merges with the flags into the [`Settings`] a server runs with.
//!
//! Every `serve` flag has a top-level key of the same name with `_` for `-`;
//! `[[listener]]` tables add listeners with settings of their own. A flag
//! given on the command line wins over the file, the file over the default.
//! Unknown keys are errors that name the key and its line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use ipnet::IpNet;
use ringport_engine::alerts::{AlertConfig, DenialAlertConfig};
use ringport_engine::cpus::CpuList;
use ringport_engine::log::LogFormat;
use ringport_engine::operations::{self, Limits, ListenerOps, Operations};
use ringport_engine::plan::Mode;
use ringport_engine::policy::{Allowlist, Ipv6SourcePrefix, RateLimit};
use ringport_engine::spec::ListenerSpec;
use ringport_engine::{BackendChoice, EngineConfig, MeshWake, UdpDropCounter};
use serde::{Deserialize, Deserializer};

use crate::cli::{default_listeners, ServeArgs};
use crate::tls_config::TlsInputs;
use ringport_engine::tls::TlsVersion;

/// A value parsed from a TOML string with its type's `FromStr`, so that a
/// bad value is reported at its line.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<T>(pub T);

impl<'de, T> Deserialize<'de> for Parsed<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(Parsed).map_err(serde::de::Error::custom)
    }
}

/// A CIDR as the allowlists take it (a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Allowlist::parse_cidr(s)
            .map(Cidr)
            .map_err(|e| e.to_string())
    }
}

/// Settings a `[[listener]]` table may override.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTable {
    /// PROTOCOL@TRANSPORT:ADDR:PORTS.
    pub spec: Parsed<ListenerSpec>,
    /// Trusted sources of this listener (replaces the top-level `allow`).
    pub allow: Option<Vec<Parsed<Cidr>>>,
    /// See `--max-conns`.
    pub max_conns: Option<u32>,
    /// See `--max-conns-per-source`.
    pub max_conns_per_source: Option<u32>,
    /// See `--conn-rate`.
    pub conn_rate: Option<u32>,
    /// See `--conn-burst`.
    pub conn_burst: Option<u32>,
    /// See `--first-bytes-timeout`.
    pub first_bytes_timeout: Option<f64>,
    /// See `--idle-timeout`.
    pub idle_timeout: Option<f64>,
    /// See `--half-closed-timeout`.
    pub half_closed_timeout: Option<f64>,
    /// See `--alert-source-denials`.
    pub alert_source_denials: Option<u64>,
    /// See `--alert-source-window`.
    pub alert_source_window: Option<f64>,
    /// See `--max-datagram`.
    pub max_datagram: Option<u32>,
    /// See `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// See `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// See `--tls-client-ca`.
    pub tls_client_ca: Option<PathBuf>,
    /// See `--tls-allow-identity` (replaces the top-level list).
    pub tls_allow_identity: Option<Vec<String>>,
    /// See `--tls-min-version`.
    pub tls_min_version: Option<Parsed<TlsVersion>>,
    /// See `--tls-alpn` (replaces the top-level list).
    pub tls_alpn: Option<Vec<String>>,
    /// See `--tls-handshake-timeout`.
    pub tls_handshake_timeout: Option<f64>,
    /// See `--tls-max-handshakes-per-source`.
    pub tls_max_handshakes_per_source: Option<u32>,
    /// See `--tls-no-resumption`.
    pub tls_no_resumption: Option<bool>,
    /// `false`: this relay or mqtt listener is left out of the NATS bridge.
    pub nats: Option<bool>,
    /// See `--nats-export` (replaces the top-level list for this listener).
    pub nats_export: Option<Vec<String>>,
    /// See `--nats-import` (replaces the top-level list for this listener).
    pub nats_import: Option<Vec<String>>,
    /// See `--nats-user`: this listener's own NATS login (its own bridge).
    pub nats_user: Option<String>,
    /// See `--nats-password-file` (with `nats_user` in the same table).
    pub nats_password_file: Option<PathBuf>,
    /// See `--nats-token-file`: this listener's own NATS login.
    pub nats_token_file: Option<PathBuf>,
    /// See `--nats-nkey-seed-file`: this listener's own NATS login.
    pub nats_nkey_seed_file: Option<PathBuf>,
    /// See `--nats-buffer-messages`: this listener's own buffer (bridge).
    pub nats_buffer_messages: Option<u64>,
    /// See `--nats-buffer-bytes`: this listener's own buffer (bridge).
    pub nats_buffer_bytes: Option<u64>,
}

impl ListenerTable {
    fn nats(&self) -> crate::nats::ListenerNats {
        crate::nats::ListenerNats {
            nats: self.nats,
            export: self.nats_export.clone(),
            import: self.nats_import.clone(),
            user: self.nats_user.clone(),
            password_file: self.nats_password_file.clone(),
            token_file: self.nats_token_file.clone(),
            nkey_seed_file: self.nats_nkey_seed_file.clone(),
            buffer_messages: self.nats_buffer_messages,
            buffer_bytes: self.nats_buffer_bytes,
        }
    }

    fn tls(&self) -> TlsInputs {
        TlsInputs {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            client_ca: self.tls_client_ca.clone(),
            allow_identity: self.tls_allow_identity.clone(),
            min_version: self.tls_min_version.as_ref().map(|p| p.0),
            alpn: self.tls_alpn.clone(),
            handshake_timeout: self.tls_handshake_timeout,
            max_handshakes_per_source: self.tls_max_handshakes_per_source,
            no_resumption: self.tls_no_resumption,
        }
    }
}

/// The config file: every `serve` flag, plus `[[listener]]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct FileConfig {
    pub listen: Option<Vec<Parsed<ListenerSpec>>>,
    pub listener: Option<Vec<ListenerTable>>,
    pub shards: Option<usize>,
    pub cpus: Option<Parsed<CpuList>>,
    pub backend: Option<Parsed<BackendChoice>>,
    pub mode: Option<Parsed<Mode>>,
    pub allow_idle_shards: Option<bool>,
    pub stats_interval: Option<f64>,
    pub batch_delay_us: Option<u32>,
    pub max_frame: Option<usize>,
    pub ring_entries: Option<u32>,
    pub tcp_buf_size: Option<u32>,
    pub tcp_bufs: Option<u16>,
    pub udp_max_datagram: Option<u32>,
    pub max_datagram: Option<u32>,
    pub udp_bufs: Option<u16>,
    pub udp_send_slots: Option<usize>,
    pub udp_drop_counter: Option<Parsed<UdpDropCounter>>,
    pub udp_rcvbuf: Option<usize>,
    pub max_outbound: Option<usize>,
    pub max_outbound_per_shard: Option<usize>,
    pub max_outbound_total: Option<usize>,
    pub mesh_capacity: Option<usize>,
    pub mesh_wake: Option<Parsed<MeshWake>>,
    pub allow: Option<Vec<Parsed<Cidr>>>,
    pub allow_dry_run: Option<bool>,
    pub max_conns: Option<u32>,
    pub max_conns_per_source: Option<u32>,
    pub ipv6_source_prefix: Option<u8>,
    pub conn_rate: Option<u32>,
    pub conn_burst: Option<u32>,
    pub first_bytes_timeout: Option<f64>,
    pub idle_timeout: Option<f64>,
    pub half_closed_timeout: Option<f64>,
    pub log: Option<String>,
    pub log_format: Option<Parsed<LogFormat>>,
    pub admin: Option<Parsed<SocketAddr>>,
    pub admin_allow: Option<Vec<Parsed<Cidr>>>,
    pub admin_tls_cert: Option<std::path::PathBuf>,
    pub admin_tls_key: Option<std::path::PathBuf>,
    pub admin_timeout: Option<f64>,
    pub admin_max_conns: Option<usize>,
    pub drain_timeout: Option<f64>,
    pub alert_factor: Option<f64>,
    pub alert_sustain: Option<f64>,
    pub alert_source_denials: Option<u64>,
    pub alert_source_window: Option<f64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub tls_allow_identity: Option<Vec<String>>,
    pub tls_min_version: Option<Parsed<TlsVersion>>,
    pub tls_alpn: Option<Vec<String>>,
    pub tls_handshake_timeout: Option<f64>,
    pub tls_max_handshakes_per_source: Option<u32>,
    pub tls_max_handshakes: Option<usize>,
    pub tls_no_resumption: Option<bool>,
    pub mqtt_password_file: Option<PathBuf>,
    pub mqtt_acl_file: Option<PathBuf>,
    pub mqtt_allow_anonymous: Option<bool>,
    pub mqtt_cert_identity: Option<Vec<String>>,
    pub mqtt_persistence: Option<PathBuf>,
    pub mqtt_autosave_interval: Option<f64>,
    pub mqtt_max_queued_messages: Option<u64>,
    pub mqtt_max_inflight: Option<u64>,
    pub mqtt_max_packet_size: Option<u64>,
    pub mqtt_max_retained: Option<u64>,
    pub mqtt_max_subscriptions: Option<u64>,
    pub nats: Option<String>,
    pub nats_export: Option<Vec<String>>,
    pub nats_import: Option<Vec<String>>,
    pub nats_user: Option<String>,
    pub nats_password_file: Option<PathBuf>,
    pub nats_token_file: Option<PathBuf>,
    pub nats_nkey_seed_file: Option<PathBuf>,
    pub nats_buffer_messages: Option<u64>,
    pub nats_buffer_bytes: Option<u64>,
    pub nats_subject_prefix: Option<String>,
    pub nats_instance_id: Option<String>,
    pub nats_reconnect_min: Option<f64>,
    pub nats_reconnect_max: Option<f64>,
}

impl FileConfig {
    /// Parses TOML text; errors name the key or value and its line.
    pub fn parse(text: &str) -> Result<FileConfig> {
        toml::from_str(text).map_err(|e| {
            let msg = e.to_string();
            // Valid at the top level, so refused in a `[[listener]]` table.
            let per_plugin = crate::nats::PER_PLUGIN_KEYS
                .iter()
                .find(|k| msg.contains(&format!("unknown field `{k}`")));
            match per_plugin {
                Some(key) => anyhow::anyhow!(
                    "{msg}{key} applies to every NATS bridge of a plugin: set it at the top \
                     level, outside [[listener]]; a listener table takes only nats, \
                     nats_export, nats_import, a login (nats_user and nats_password_file, \
                     nats_token_file or nats_nkey_seed_file) and nats_buffer_messages and \
                     nats_buffer_bytes"
                ),
                None => anyhow::anyhow!("{msg}"),
            }
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        FileConfig::parse(&text).with_context(|| format!("config file {}", path.display()))
    }
}

/// Where the handshake log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error.
    Stderr,
    /// A file, appended to.
    File(String),
}

/// Everything a server runs with, flags and file merged.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listeners, in plan order.
    pub listeners: Vec<ListenerSpec>,
    /// Shards (None: one per CPU).
    pub shards: Option<usize>,
    /// CPUs (None: every allowed CPU).
    pub cpus: Option<CpuList>,
    /// Range or reuseport.
    pub mode: Mode,
    /// Let listeners have fewer ports than shards.
    pub allow_idle_shards: bool,
    /// Stats line interval.
    pub stats_interval: Option<Duration>,
    /// Largest frame for framed protocols.
    pub max_frame: usize,
    /// Engine tunables.
    pub engine: EngineConfig,
    /// Per-listener policy (no log queues yet).
    pub operations: Operations,
    /// The handshake log.
    pub log: Option<LogTarget>,
    /// Its format.
    pub log_format: LogFormat,
    /// The admin endpoint.
    pub admin: Option<SocketAddr>,
    /// Who may use it.
    pub admin_allow: Allowlist,
    /// Its TLS certificate and key, loaded (None: plain HTTP).
    pub admin_tls: Option<std::sync::Arc<crate::admin::AdminTls>>,
    /// Its deadline and connection cap.
    pub admin_options: crate::admin::AdminOptions,
    /// How long a drain may take.
    pub drain_timeout: Duration,
    /// Deviation alerts (None: off).
    pub alerts: Option<AlertConfig>,
    /// The `mqtt` plugin's settings.
    pub mqtt: crate::mqtt::MqttSetup,
    /// The NATS bridge (`--nats`).
    pub nats: crate::nats::NatsSetup,
}

/// The range of every numeric setting that is not an engine tunable (those
/// are in [`ringport_engine::config::RANGES`]), by config-file key:
/// (key, lowest, highest). Seconds may be fractional.
pub const RANGES: &[(&str, f64, f64)] = &[
    ("shards", 1.0, 1024.0),
    ("stats_interval", 0.0, 86400.0),
    ("max_frame", 16.0, 1073741824.0),
    ("max_datagram", 1.0, 65507.0),
    ("ipv6_source_prefix", 1.0, 128.0),
    ("max_conns", 0.0, 10_000_000.0),
    ("max_conns_per_source", 0.0, 10_000_000.0),
    ("conn_rate", 0.0, 10_000_000.0),
    ("conn_burst", 0.0, 10_000_000.0),
    ("first_bytes_timeout", 0.0, 604800.0),
    ("idle_timeout", 0.0, 604800.0),
    ("half_closed_timeout", 0.0, 604800.0),
    ("tls_handshake_timeout", 0.0, 86400.0),
    ("tls_max_handshakes_per_source", 0.0, 1_000_000.0),
    ("admin_timeout", 0.001, 3600.0),
    ("admin_max_conns", 1.0, 4096.0),
    ("drain_timeout", 0.0, 86400.0),
    ("alert_factor", 0.0, 1_000_000.0),
    ("alert_sustain", 0.0, 86400.0),
    ("alert_source_denials", 0.0, 1_000_000_000.0),
    ("alert_source_window", 0.0, 86400.0),
    ("mqtt_autosave_interval", 1.0, 86400.0),
    ("mqtt_max_queued_messages", 1.0, 10_000_000.0),
    ("mqtt_max_inflight", 1.0, 65535.0),
    ("mqtt_max_packet_size", 16.0, 268_435_460.0),
    ("mqtt_max_retained", 0.0, 10_000_000.0),
    ("mqtt_max_subscriptions", 1.0, 1_000_000.0),
    ("nats_buffer_messages", 1.0, 10_000_000.0),
    ("nats_buffer_bytes", 1024.0, 1_073_741_824.0),
    ("nats_reconnect_min", 0.001, 3600.0),
    ("nats_reconnect_max", 0.001, 3600.0),
];

/// Checks `value` of `key` against [`RANGES`]; the error names the key,
/// the value and the range.
pub fn in_range(key: &str, value: f64) -> Result<()> {
    let Some(&(_, lo, hi)) = RANGES.iter().find(|(k, ..)| *k == key) else {
        return Ok(());
    };
    if !value.is_finite() || value < lo || value > hi {
        bail!("{key} = {value} is out of range: use {lo} to {hi}");
    }
    Ok(())
}

/// The longest duration any setting in seconds takes, even one without
/// its own range: a year. Far beyond any
/// useful timeout or interval, and far from where a deadline computed from
/// it would overflow (`Duration::from_secs_f64` panics past `u64::MAX` s).
const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

fn secs(name: &str, v: f64) -> Result<Option<Duration>> {
    in_range(name, v)?;
    if !v.is_finite() || !(0.0..=MAX_SECS).contains(&v) {
        bail!("{name} = {v} must be a number of seconds from 0 to {MAX_SECS} (a year)");
    }
    Ok((v > 0.0).then(|| Duration::from_secs_f64(v)))
}

fn cidrs(
    flags: &[String],
    file: Option<&Vec<Parsed<Cidr>>>,
    what: &str,
) -> Result<Option<Vec<IpNet>>> {
    if !flags.is_empty() {
        return flags
            .iter()
            .map(|s| Allowlist::parse_cidr(s).with_context(|| format!("--{what}")))
            .collect::<Result<Vec<_>>>()
            .map(Some);
    }
    Ok(file.map(|v| v.iter().map(|c| c.0 .0).collect()))
}

/// Global limits with a listener table's overrides on top.
#[derive(Debug, Clone, Copy, Default)]
struct LimitInputs {
    max_conns: Option<u32>,
    max_conns_per_source: Option<u32>,
    conn_rate: Option<u32>,
    conn_burst: Option<u32>,
    first_bytes_timeout: Option<f64>,
    idle_timeout: Option<f64>,
    half_closed_timeout: Option<f64>,
    alert_source_denials: Option<u64>,
    alert_source_window: Option<f64>,
    max_datagram: Option<u32>,
}

impl LimitInputs {
    fn over(self, base: LimitInputs) -> LimitInputs {
        LimitInputs {
            max_conns: self.max_conns.or(base.max_conns),
            max_conns_per_source: self.max_conns_per_source.or(base.max_conns_per_source),
            conn_rate: self.conn_rate.or(base.conn_rate),
            conn_burst: self.conn_burst.or(base.conn_burst),
            first_bytes_timeout: self.first_bytes_timeout.or(base.first_bytes_timeout),
            idle_timeout: self.idle_timeout.or(base.idle_timeout),
            half_closed_timeout: self.half_closed_timeout.or(base.half_closed_timeout),
            alert_source_denials: self.alert_source_denials.or(base.alert_source_denials),
            alert_source_window: self.alert_source_window.or(base.alert_source_window),
            max_datagram: self.max_datagram.or(base.max_datagram),
        }
    }

    /// The limits; `udp_max_datagram` is the engine's, which a listener's
    /// `max_datagram` may not exceed.
    fn resolve(self, udp_max_datagram: u32) -> Result<Limits> {
        let d = Limits::default();
        for (key, v) in [
            ("max_conns", self.max_conns.map(f64::from)),
            (
                "max_conns_per_source",
                self.max_conns_per_source.map(f64::from),
            ),
            ("conn_rate", self.conn_rate.map(f64::from)),
            ("conn_burst", self.conn_burst.map(f64::from)),
            (
                "alert_source_denials",
                self.alert_source_denials.map(|v| v as f64),
            ),
            ("max_datagram", self.max_datagram.map(f64::from)),
        ] {
            if let Some(v) = v {
                in_range(key, v)?;
            }
        }
        let timeout = |name: &str, v: Option<f64>, default: Option<Duration>| match v {
            Some(v) => secs(name, v),
            None => Ok(default),
        };
        let rate = self.conn_rate.unwrap_or(operations::DEFAULT_CONN_RATE);
        let burst = self.conn_burst.unwrap_or(operations::DEFAULT_CONN_BURST);
        if rate > 0 && burst == 0 {
            bail!("conn_burst = 0 with conn_rate = {rate} would refuse every connection; use at least 1");
        }
        if let Some(max) = self.max_datagram.filter(|&m| m > udp_max_datagram) {
            bail!(
                "max_datagram = {max} is above udp_max_datagram = {udp_max_datagram}: longer \
                 datagrams are cut before the listener sees them; raise udp_max_datagram too"
            );
        }
        let alert_default = DenialAlertConfig::default();
        let denials = self.alert_source_denials.unwrap_or(alert_default.limit);
        let window = match self.alert_source_window {
            Some(v) => secs("alert_source_window", v)?,
            None => Some(alert_default.window),
        };
        let source_denial_alert = match (denials, window) {
            (0, _) => None,
            (limit, Some(window)) => Some(DenialAlertConfig { limit, window }),
            (limit, None) => bail!(
                "alert_source_window = 0 with alert_source_denials = {limit}: give the window \
                 in seconds, or alert_source_denials = 0 for no source alerts"
            ),
        };
        Ok(Limits {
            max_conns: self.max_conns.unwrap_or(d.max_conns),
            max_conns_per_source: self.max_conns_per_source.unwrap_or(d.max_conns_per_source),
            conn_rate: (rate > 0).then_some(RateLimit {
                per_sec: rate,
                burst,
            }),
            first_bytes_timeout: timeout(
                "first_bytes_timeout",
                self.first_bytes_timeout,
                d.first_bytes_timeout,
            )?,
            idle_timeout: timeout("idle_timeout", self.idle_timeout, d.idle_timeout)?,
            half_closed_timeout: timeout(
                "half_closed_timeout",
                self.half_closed_timeout,
                d.half_closed_timeout,
            )?,
            source_denial_alert,
            max_datagram: self.max_datagram,
        })
    }
}

impl Settings {
    /// Merges `args` over `file` (if any) over the defaults.
    pub fn resolve(args: &ServeArgs, file: Option<FileConfig>) -> Result<Settings> {
        let f = file.unwrap_or_default();
        let mqtt = crate::mqtt::MqttSetup::resolve(&args.mqtt, &f)?;
        let mut nats = crate::nats::NatsSetup::resolve(&args.nats, &f)?;
        let mut listener_nats = Vec::new();
        let d = EngineConfig::default();
        macro_rules! pick {
            ($name:ident, $default:expr) => {
                args.$name.or(f.$name).unwrap_or($default)
            };
        }
        let global = LimitInputs {
            max_conns: args.max_conns.or(f.max_conns),
            max_conns_per_source: args.max_conns_per_source.or(f.max_conns_per_source),
            conn_rate: args.conn_rate.or(f.conn_rate),
            conn_burst: args.conn_burst.or(f.conn_burst),
            first_bytes_timeout: args.first_bytes_timeout.or(f.first_bytes_timeout),
            idle_timeout: args.idle_timeout.or(f.idle_timeout),
            half_closed_timeout: args.half_closed_timeout.or(f.half_closed_timeout),
            alert_source_denials: args.alert_source_denials.or(f.alert_source_denials),
            alert_source_window: args.alert_source_window.or(f.alert_source_window),
            max_datagram: args.max_datagram.or(f.max_datagram),
        };
        let udp_max_datagram = pick!(udp_max_datagram, d.udp_max_datagram);
        let global_allow = cidrs(&args.allow, f.allow.as_ref(), "allow")?;
        let dry_run = args.allow_dry_run || f.allow_dry_run.unwrap_or(false);
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let global_tls = TlsInputs {
            cert: args.tls_cert.clone().or(f.tls_cert.clone()),
            key: args.tls_key.clone().or(f.tls_key.clone()),
            client_ca: args.tls_client_ca.clone().or(f.tls_client_ca.clone()),
            allow_identity: list(&args.tls_allow_identity).or(f.tls_allow_identity.clone()),
            min_version: args
                .tls_min_version
                .or(f.tls_min_version.as_ref().map(|p| p.0)),
            alpn: list(&args.tls_alpn).or(f.tls_alpn.clone()),
            handshake_timeout: args.tls_handshake_timeout.or(f.tls_handshake_timeout),
            max_handshakes_per_source: args
                .tls_max_handshakes_per_source
                .or(f.tls_max_handshakes_per_source),
            no_resumption: (args.tls_no_resumption || f.tls_no_resumption.unwrap_or(false))
                .then_some(true),
        };
        let none = TlsInputs::default();
        let (listeners, ops) = if !args.listen.is_empty() {
            let ops = args.listen.iter().map(|spec| {
                Ok(ListenerOps {
                    allow: global_allow.clone(),
                    limits: global.resolve(udp_max_datagram)?,
                    tls: global_tls.load(&none, spec, dry_run)?,
                })
            });
            (args.listen.clone(), ops.collect::<Result<Vec<_>>>()?)
        } else {
            let mut specs = Vec::new();
            let mut ops = Vec::new();
            for s in f.listen.iter().flatten() {
                specs.push(s.0.clone());
                ops.push(ListenerOps {
                    allow: global_allow.clone(),
                    limits: global.resolve(udp_max_datagram)?,
                    tls: global_tls.load(&none, &s.0, dry_run)?,
                });
            }
            for t in f.listener.iter().flatten() {
                let own = LimitInputs {
                    max_conns: t.max_conns,
                    max_conns_per_source: t.max_conns_per_source,
                    conn_rate: t.conn_rate,
                    conn_burst: t.conn_burst,
                    first_bytes_timeout: t.first_bytes_timeout,
                    idle_timeout: t.idle_timeout,
                    half_closed_timeout: t.half_closed_timeout,
                    alert_source_denials: t.alert_source_denials,
                    alert_source_window: t.alert_source_window,
                    max_datagram: t.max_datagram,
                };
                specs.push(t.spec.0.clone());
                listener_nats.resize(specs.len() - 1, crate::nats::ListenerNats::default());
                listener_nats.push(t.nats());
                ops.push(ListenerOps {
                    allow: match &t.allow {
                        Some(v) => Some(v.iter().map(|c| c.0 .0).collect()),
                        None => global_allow.clone(),
                    },
                    limits: own
                        .over(global)
                        .resolve(udp_max_datagram)
                        .with_context(|| format!("listener `{}`", t.spec.0))?,
                    tls: global_tls.load(&t.tls(), &t.spec.0, dry_run)?,
                });
            }
            if specs.is_empty() {
                specs = default_listeners();
                ops = specs
                    .iter()
                    .map(|_| {
                        Ok(ListenerOps {
                            allow: global_allow.clone(),
                            limits: global.resolve(udp_max_datagram)?,
                            tls: None,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
            }
            (specs, ops)
        };
        nats.route_listeners(&listeners, &listener_nats)?;
        if let Some(key) = global_tls.first_given() {
            if !listeners.iter().any(|l| l.tls) {
                bail!(
                    "{key} is set but no listener is a `tls` listener: write the transport of \
                     the listeners to encrypt as `tls` (e.g. `echo@tls:127.0.0.1:9000`)"
                );
            }
        }
        let max_outbound = pick!(max_outbound, d.max_outbound);
        let max_frame = pick!(max_frame, 65536);
        in_range("max_frame", max_frame as f64)?;
        if max_frame > max_outbound {
            bail!(
                "max_frame = {max_frame} is above max_outbound = {max_outbound}: a framed \
                 protocol's largest frame could never be queued for its peer; raise \
                 max_outbound or lower max_frame"
            );
        }
        let shards = args.shards.or(f.shards);
        if let Some(n) = shards {
            in_range("shards", n as f64)?;
        }

        let engine = EngineConfig {
            ring_entries: pick!(ring_entries, d.ring_entries),
            tcp_buf_size: pick!(tcp_buf_size, d.tcp_buf_size),
            tcp_bufs: pick!(tcp_bufs, d.tcp_bufs),
            udp_max_datagram,
            udp_bufs: pick!(udp_bufs, d.udp_bufs),
            udp_send_slots: pick!(udp_send_slots, d.udp_send_slots),
            max_outbound,
            max_outbound_per_shard: pick!(max_outbound_per_shard, d.max_outbound_per_shard),
            max_outbound_total: pick!(max_outbound_total, d.max_outbound_total),
            pause_outbound: d.pause_outbound.min(max_outbound),
            batch_delay_us: pick!(batch_delay_us, d.batch_delay_us),
            udp_drop_counter: args
                .udp_drop_counter
                .or(f.udp_drop_counter.map(|p| p.0))
                .unwrap_or(d.udp_drop_counter),
            udp_rcvbuf: pick!(udp_rcvbuf, d.udp_rcvbuf),
            mesh_capacity: pick!(mesh_capacity, d.mesh_capacity),
            mesh_wake: args
                .mesh_wake
                .or(f.mesh_wake.map(|p| p.0))
                .unwrap_or(d.mesh_wake),
            tls_max_handshakes: pick!(tls_max_handshakes, d.tls_max_handshakes),
            backend: match args.backend.or(f.backend.map(|p| p.0)) {
                Some(b) => b,
                // A container image can pin its backend without a flag.
                None => BackendChoice::from_env()
                    .map_err(|e| anyhow::anyhow!(e))?
                    .unwrap_or(d.backend),
            },
            ..d
        };
        engine.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        let log = match args.log.clone().or(f.log) {
            None => None,
            Some(s) if s == "-" || s.is_empty() => Some(LogTarget::Stderr),
            Some(s) => Some(LogTarget::File(s)),
        };
        let admin_allow = match cidrs(&args.admin_allow, f.admin_allow.as_ref(), "admin-allow")? {
            Some(nets) if !nets.is_empty() => Allowlist::new(nets),
            _ => Allowlist::loopback(),
        };
        let admin = args.admin.or(f.admin.map(|p| p.0));
        if let Some(a) = admin {
            if !a.ip().is_loopback() && admin_allow == Allowlist::loopback() {
                bail!(
                    "--admin {a} is not a loopback address: name who may read it with \
                     --admin-allow CIDR (the admin port answers loopback only by default)"
                );
            }
        }
        let admin_tls_files = match (
            args.admin_tls_cert.clone().or(f.admin_tls_cert),
            args.admin_tls_key.clone().or(f.admin_tls_key),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, key)),
            (Some(_), None) => bail!(
                "--admin-tls-cert (admin_tls_cert) is set without --admin-tls-key (admin_tls_key): \
                 give the certificate's key too, or neither for plain HTTP"
            ),
            (None, Some(_)) => bail!(
                "--admin-tls-key (admin_tls_key) is set without --admin-tls-cert (admin_tls_cert): \
                 give the certificate chain too, or neither for plain HTTP"
            ),
        };
        if admin_tls_files.is_some() && admin.is_none() {
            bail!(
                "--admin-tls-cert and --admin-tls-key are set but --admin is not: give the admin \
                 endpoint's address (--admin ADDR:PORT), or drop the TLS files"
            );
        }
        // Loaded here, like the listeners' certificates: check-config checks
        // them, and serve reads them before it binds anything.
        let admin_tls = match admin_tls_files {
            Some((cert, key)) => Some(std::sync::Arc::new(crate::admin::AdminTls::load(
                &cert, &key,
            )?)),
            None => None,
        };
        let admin_options = {
            use crate::admin::AdminOptions;
            let timeout = pick!(admin_timeout, AdminOptions::DEFAULT_TIMEOUT_SECS);
            let timeout = match secs("admin_timeout", timeout)? {
                Some(t) if t <= AdminOptions::MAX_TIMEOUT => t,
                _ => bail!(
                    "admin_timeout = {timeout} is out of range: give a number of seconds above 0 \
                     and at most {} (default {})",
                    AdminOptions::MAX_TIMEOUT.as_secs(),
                    AdminOptions::DEFAULT_TIMEOUT_SECS
                ),
            };
            let max_conns = pick!(admin_max_conns, AdminOptions::DEFAULT_MAX_CONNS);
            if !(1..=AdminOptions::MAX_MAX_CONNS).contains(&max_conns) {
                bail!(
                    "admin_max_conns = {max_conns} is out of range: give 1 to {} (default {})",
                    AdminOptions::MAX_MAX_CONNS,
                    AdminOptions::DEFAULT_MAX_CONNS
                );
            }
            AdminOptions { timeout, max_conns }
        };
        let factor = pick!(alert_factor, AlertConfig::default().factor);
        if !factor.is_finite() || factor < 0.0 {
            bail!("alert_factor = {factor} must be 0 (off) or more");
        }
        in_range("alert_factor", factor)?;
        let sustain = secs("alert_sustain", pick!(alert_sustain, 30.0))?.unwrap_or_default();
        Ok(Settings {
            listeners,
            shards,
            cpus: args.cpus.clone().or(f.cpus.map(|p| p.0)),
            mode: args.mode.or(f.mode.map(|p| p.0)).unwrap_or(Mode::Range),
            allow_idle_shards: args.allow_idle_shards || f.allow_idle_shards.unwrap_or(false),
            stats_interval: match args.stats_interval.or(f.stats_interval) {
                Some(v) => secs("stats_interval", v)?,
                None => None,
            },
            max_frame,
            engine,
            operations: Operations {
                listeners: ops,
                dry_run,
                log: None,
                udp_source_window: Duration::from_secs(60),
                ipv6_source_prefix: match args.ipv6_source_prefix.or(f.ipv6_source_prefix) {
                    Some(bits) => Ipv6SourcePrefix::new(bits).map_err(|e| anyhow::anyhow!(e))?,
                    None => Ipv6SourcePrefix::default(),
                },
                tls_clients: Vec::new(),
            },
            log,
            log_format: args
                .log_format
                .or(f.log_format.map(|p| p.0))
                .unwrap_or_default(),
            admin,
            admin_allow,
            admin_tls,
            admin_options,
            drain_timeout: secs("drain_timeout", pick!(drain_timeout, 30.0))?.unwrap_or_default(),
            alerts: (factor > 0.0).then_some(AlertConfig {
                factor,
                sustain,
                ..AlertConfig::default()
            }),
            mqtt,
            nats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(flags: &[&str]) -> ServeArgs {
        let mut all = vec!["ringport", "serve"];
        all.extend_from_slice(flags);
        match crate::cli::Cli::try_parse_from(all).unwrap().command {
            Some(crate::cli::Command::Serve(a)) => *a,
            _ => panic!("serve"),
        }
    }

    #[test]
    fn durations_past_a_year_are_refused_not_a_panic() {
        // Found by fuzz/ (config): 1e20 seconds made Duration::from_secs_f64
        // panic in resolve.
        for key in [
            "drain_timeout",
            "idle_timeout",
            "stats_interval",
            "alert_sustain",
        ] {
            let file = FileConfig::parse(&format!("{key} = 1e20\n")).unwrap();
            let e = Settings::resolve(&ServeArgs::default(), Some(file)).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("{key} = 100000000000000000000 is out of range")),
                "{e}"
            );
        }
        let file = FileConfig::parse("idle_timeout = 604800\n").unwrap();
        assert!(Settings::resolve(&ServeArgs::default(), Some(file)).is_ok());
    }

    #[test]
    fn the_example_file_round_trips() {
        let text = include_str!("../../ringport.example.toml");
        let s = Settings::resolve(&args(&[]), Some(FileConfig::parse(text).unwrap())).unwrap();
        let listeners: Vec<String> = s.listeners.iter().map(ToString::to_string).collect();
        assert_eq!(
            listeners,
            [
                "echo@tcp:127.0.0.1:7000-7063",
                "sockperf@udp:127.0.0.1:11111-11114",
                "echo@tcp:127.0.0.1:9000-9001",
            ]
        );
        assert_eq!((s.shards, s.mode), (Some(2), Mode::Range));
        assert_eq!(s.cpus.unwrap().as_slice(), &[0, 1]);
        assert_eq!(s.stats_interval, Some(Duration::from_secs(10)));
        assert_eq!(s.engine, EngineConfig::default());
        assert_eq!(s.max_frame, 65536);
        let ops = &s.operations;
        assert!(!ops.dry_run);
        assert_eq!(
            ops.listeners[0].allow,
            Some(vec!["127.0.0.1/32".parse().unwrap()])
        );
        assert_eq!(
            ops.listeners[0].limits,
            Limits {
                max_datagram: Some(2048),
                ..Limits::default()
            }
        );
        assert_eq!(
            ops.listeners[2].allow,
            Some(vec![
                "127.0.0.0/8".parse().unwrap(),
                "::1/128".parse().unwrap()
            ])
        );
        let third = ops.listeners[2].limits;
        assert_eq!(
            (third.max_conns, third.max_conns_per_source, third.conn_rate),
            (
                100,
                10,
                Some(RateLimit {
                    per_sec: 5,
                    burst: 10
                })
            )
        );
        assert_eq!(third.first_bytes_timeout, Some(Duration::from_secs(2)));
        assert_eq!(third.idle_timeout, None);
        assert_eq!(third.half_closed_timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            third.source_denial_alert,
            Some(DenialAlertConfig {
                limit: 20,
                window: Duration::from_secs(60)
            })
        );
        assert_eq!(s.log, Some(LogTarget::Stderr));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.admin, Some("127.0.0.1:9900".parse().unwrap()));
        assert_eq!(s.admin_allow, Allowlist::loopback());
        assert_eq!(s.drain_timeout, Duration::from_secs(30));
        let alerts = s.alerts.unwrap();
        assert_eq!(
            (alerts.factor, alerts.sustain),
            (5.0, Duration::from_secs(30))
        );
    }

    /// The keys a config table accepts, from serde's unknown-field error.
    fn accepted_keys(table: &str) -> std::collections::BTreeSet<String> {
        let e = FileConfig::parse(&format!("{table}no_such_key = 1\n"))
            .unwrap_err()
            .to_string();
        let list = e
            .split_once("expected one of ")
            .unwrap_or_else(|| panic!("no key list in: {e}"))
            .1;
        let list = list.lines().next().unwrap();
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn flags_config_keys_and_the_example_agree() {
        use clap::CommandFactory;
        use std::collections::BTreeSet;
        let cli = crate::cli::Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let flags: BTreeSet<String> = serve
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| !matches!(*l, "help" | "config"))
            .map(|l| l.replace('-', "_"))
            .collect();
        // Every flag is a top-level key, and there is nothing else but tables.
        let mut top = accepted_keys("");
        assert!(top.remove("listener"));
        assert_eq!(top, flags);
        // A listener table takes its spec and some of the flags.
        let mut per_listener = accepted_keys("[[listener]]\nspec = \"echo@tcp:127.0.0.1:9000\"\n");
        assert!(per_listener.remove("spec"));
        let not_flags: Vec<&String> = per_listener.difference(&flags).collect();
        assert!(not_flags.is_empty(), "{not_flags:?}");
        // The example names every top-level key (set, or for files it cannot
        // ship, such as TLS certificates, in a `# key = ...` comment), and
        // every listener key in its table (set, or in a comment).
        let text = include_str!("../../ringport.example.toml");
        let example: toml::Table = toml::from_str(text).unwrap();
        let mut set: BTreeSet<String> = example.keys().cloned().collect();
        assert!(set.remove("listener"));
        let head = &text[..text.find("\n[[listener]]").unwrap()];
        for line in head.lines() {
            if let Some((key, _)) = line.strip_prefix("# ").and_then(|l| l.split_once(" = ")) {
                if flags.contains(key) {
                    set.insert(key.to_owned());
                }
            }
        }
        assert_eq!(set, flags, "top-level keys of ringport.example.toml");
        let table = &text[text.rfind("\n[[listener]]").unwrap()..];
        let missing: Vec<&String> = per_listener
            .iter()
            .filter(|k| !table.contains(k.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "not in the example's [[listener]]: {missing:?}"
        );
    }

    /// The findings that used to get through: a timeout too long for the
    /// clock (it panicked the shard at the first connection), a send-slot
    /// count that aborted on allocation, and a frame no queue could hold.
    #[test]
    fn huge_values_and_contradictions_are_refused_naming_the_keys() {
        let e = |flags: &[&str], file: &str| {
            format!(
                "{:#}",
                Settings::resolve(&args(flags), Some(FileConfig::parse(file).unwrap()))
                    .unwrap_err()
            )
        };
        assert_eq!(
            e(&[], "idle_timeout = 1e19\n"),
            "idle_timeout = 10000000000000000000 is out of range: use 0 to 604800"
        );
        assert_eq!(
            e(
                &[],
                "[[listener]]\nspec = \"echo@tcp:127.0.0.1:9000\"\nfirst_bytes_timeout = 1e19\n"
            ),
            "listener `echo@tcp:127.0.0.1:9000`: first_bytes_timeout = 10000000000000000000 is \
             out of range: use 0 to 604800"
        );
        assert_eq!(
            e(&["--udp-send-slots", "100000000000"], ""),
            "udp_send_slots = 100000000000 is out of range: use 1 to 65536"
        );
        assert_eq!(
            e(&["--max-frame", "1048576", "--max-outbound", "65536"], ""),
            "max_frame = 1048576 is above max_outbound = 65536: a framed protocol's largest \
             frame could never be queued for its peer; raise max_outbound or lower max_frame"
        );
        assert_eq!(
            e(&["--max-outbound", "1073741824"], ""),
            "max_outbound = 1073741824 is above max_outbound_per_shard = 268435456: one stream \
             could never queue its own cap; raise max_outbound_per_shard or lower max_outbound"
        );
    }

    /// Every numeric setting has its range in the README's flag table,
    /// exactly as the code checks it, and a value just outside the range
    /// is refused naming the key.
    #[test]
    fn every_range_is_documented_and_enforced() {
        let mut ranges: Vec<(&str, f64, f64)> = RANGES.to_vec();
        ranges.extend(
            ringport_engine::config::RANGES
                .iter()
                .map(|&(k, lo, hi)| (k, lo as f64, hi as f64)),
        );
        let readme = include_str!("../../README.md");
        let start = readme.find("## `ringport serve` flags").unwrap();
        let section = &readme[start..];
        let section = &section[..section[3..].find("\n## ").unwrap()];
        let mut documented = std::collections::BTreeSet::new();
        for line in section.lines().filter(|l| l.starts_with("| `--")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let flag = cells[1].trim_matches('`').split(' ').next().unwrap();
            let key = flag.trim_start_matches("--").replace('-', "_");
            let expected = match ranges.iter().find(|(k, ..)| *k == key) {
                Some((_, lo, hi)) => format!("{lo} to {hi}"),
                None => "—".to_owned(),
            };
            assert_eq!(cells[3], expected, "the README's range of {flag}");
            documented.insert(key);
        }
        for &(key, lo, hi) in &ranges {
            assert!(documented.contains(key), "{key} has no README row");
            let flag = format!("--{}", key.replace('_', "-"));
            let mut outside = vec![hi + 1.0];
            if lo >= 1.0 {
                outside.push(lo - 1.0);
            } else if lo > 0.0 {
                outside.push(lo / 2.0);
            }
            // TLS settings apply to a `tls` listener (checked before its
            // files are read).
            let tls = [
                "--listen",
                "echo@tls:127.0.0.1:9000",
                "--tls-cert",
                "/nonexistent/cert.pem",
                "--tls-key",
                "/nonexistent/key.pem",
            ];
            let per_listener_tls = key.starts_with("tls_") && key != "tls_max_handshakes";
            // NATS settings apply with a bridge.
            let nats = ["--nats", "nats://127.0.0.1:4222"];
            let extra: &[&str] = if per_listener_tls {
                &tls
            } else if key.starts_with("nats_") {
                &nats
            } else {
                &[]
            };
            for v in outside {
                let v = v.to_string();
                let mut flags = vec![flag.as_str(), v.as_str()];
                flags.extend_from_slice(extra);
                let err = format!(
                    "{:#}",
                    Settings::resolve(&args(&flags), None)
                        .expect_err(&format!("{flag} {v} is refused"))
                );
                assert!(err.contains(&format!("{key} = {v}")), "{flag} {v}: {err}");
            }
        }
    }

    #[test]
    fn flags_override_the_file() {
        let file = FileConfig::parse(
            "shards = 4\nidle_timeout = 60\nlisten = [\"echo@tcp:127.0.0.1:9000\"]\nallow_dry_run = true\n",
        )
        .unwrap();
        let s = Settings::resolve(
            &args(&[
                "--shards",
                "1",
                "--idle-timeout",
                "0",
                "--listen",
                "echo@udp:127.0.0.1:9001",
            ]),
            Some(file),
        )
        .unwrap();
        assert_eq!(s.shards, Some(1));
        assert_eq!(s.listeners[0].to_string(), "echo@udp:127.0.0.1:9001");
        assert_eq!(s.operations.listeners[0].limits.idle_timeout, None);
        assert!(
            s.operations.dry_run,
            "a flag not given leaves the file's value"
        );
        let file = FileConfig::parse(
            "alert_source_window = 5\n[[listener]]\nspec = \"echo@udp:127.0.0.1:9001\"\nalert_source_denials = 7\n",
        )
        .unwrap();
        let s = Settings::resolve(&args(&[]), Some(file)).unwrap();
        assert_eq!(
            s.operations.listeners[0].limits.source_denial_alert,
            Some(DenialAlertConfig {
                limit: 7,
                window: Duration::from_secs(5)
            })
        );
        let file = FileConfig::parse(
            "max_datagram = 512\nlisten = [\"echo@udp:127.0.0.1:9000\"]\n[[listener]]\nspec = \"echo@udp:127.0.0.1:9001\"\nmax_datagram = 64\n",
        )
        .unwrap();
        let s = Settings::resolve(&args(&[]), Some(file)).unwrap();
        let max: Vec<Option<u32>> = s
            .operations
            .listeners
            .iter()
            .map(|l| l.limits.max_datagram)
            .collect();
        assert_eq!(max, [Some(512), Some(64)]);
        let s = Settings::resolve(&args(&["--max-datagram", "1400"]), None).unwrap();
        assert_eq!(s.operations.listeners[0].limits.max_datagram, Some(1400));
        let e = Settings::resolve(&args(&["--max-datagram", "4000"]), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "max_datagram = 4000 is above udp_max_datagram = 2048: longer datagrams are cut \
             before the listener sees them; raise udp_max_datagram too"
        );
        assert!(Settings::resolve(
            &args(&["--max-datagram", "4000", "--udp-max-datagram", "4000"]),
            None
        )
        .is_ok());
        let off = Settings::resolve(&args(&["--alert-source-denials", "0"]), None).unwrap();
        assert_eq!(off.operations.listeners[0].limits.source_denial_alert, None);
        let e = Settings::resolve(&args(&["--alert-source-window", "0"]), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "alert_source_window = 0 with alert_source_denials = 100: give the window in \
             seconds, or alert_source_denials = 0 for no source alerts"
        );
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = FileConfig::parse("shards = 2\n\nidle_timout = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("unknown field `idle_timout`"), "{e}");
        let e = FileConfig::parse(
            "[[listener]]\nspec = \"echo@tcp:127.0.0.1:9000\"\nallow = [\"10.0.0.0/33\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("`10.0.0.0/33` is not a CIDR"), "{e}");
        let e =
            FileConfig::parse("[[listener]]\nspec = \"echo@tcp:127.0.0.1:9000\"\nmax_con = 3\n")
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("line 3") && e.contains("unknown field `max_con`"),
            "{e}"
        );
        let e = Settings::resolve(&args(&["--allow", "10.0.0.0/33"]), None).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "--allow: `10.0.0.0/33` is not a CIDR or an IP address (e.g. `10.0.0.0/8`, \
             `192.168.1.7`, `fd00::/8`)"
        );
        let e = Settings::resolve(&args(&["--admin", "0.0.0.0:9900"]), None).unwrap_err();
        assert!(e.to_string().contains("--admin-allow"), "{e}");
    }

    #[test]
    fn admin_deadline_and_cap_have_defaults_and_ranges() {
        use crate::admin::AdminOptions;
        let s = Settings::resolve(&args(&[]), None).unwrap();
        assert_eq!(
            s.admin_options,
            AdminOptions {
                timeout: Duration::from_secs(5),
                max_conns: 16
            }
        );
        let file = FileConfig::parse("admin_timeout = 0.25\nadmin_max_conns = 3\n").unwrap();
        let s = Settings::resolve(&args(&["--admin-max-conns", "2"]), Some(file)).unwrap();
        assert_eq!(
            s.admin_options,
            AdminOptions {
                timeout: Duration::from_millis(250),
                max_conns: 2
            }
        );
        let e = |flags: &[&str]| {
            Settings::resolve(&args(flags), None)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e(&["--admin-timeout", "0"]),
            "admin_timeout = 0 is out of range: use 0.001 to 3600"
        );
        assert_eq!(
            e(&["--admin-timeout", "7200"]),
            "admin_timeout = 7200 is out of range: use 0.001 to 3600"
        );
        assert_eq!(
            e(&["--admin-max-conns", "0"]),
            "admin_max_conns = 0 is out of range: give 1 to 4096 (default 16)"
        );
        assert_eq!(
            e(&["--admin-max-conns", "4097"]),
            "admin_max_conns = 4097 is out of range: give 1 to 4096 (default 16)"
        );
    }

    #[test]
    fn admin_tls_takes_both_files_and_an_admin_address() {
        use crate::tls_client::test_pki::{server, Dir};
        let dir = Dir::new("config-admin-tls");
        let (_, cert, key) = server(&dir.0, "a", "from the file");
        let (_, cert2, key2) = server(&dir.0, "b", "from the flags");
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let (cert2, key2) = (cert2.to_str().unwrap(), key2.to_str().unwrap());
        let text = include_str!("../../ringport.example.toml");
        let s = Settings::resolve(&args(&[]), Some(FileConfig::parse(text).unwrap())).unwrap();
        assert!(
            s.admin_tls.is_none(),
            "the example names the keys in comments"
        );
        assert!(Settings::resolve(&args(&[]), None)
            .unwrap()
            .admin_tls
            .is_none());
        let file = format!(
            "admin = \"127.0.0.1:9900\"\nadmin_tls_cert = \"{cert}\"\nadmin_tls_key = \"{key}\"\n"
        );
        let s = Settings::resolve(&args(&[]), Some(FileConfig::parse(&file).unwrap())).unwrap();
        let leaf = s.admin_tls.unwrap().reload().unwrap();
        assert_eq!(leaf.subject, "CN=from the file");
        // Flags win over the file's keys.
        let flags = ["--admin-tls-cert", cert2, "--admin-tls-key", key2];
        let s = Settings::resolve(&args(&flags), Some(FileConfig::parse(&file).unwrap())).unwrap();
        assert_eq!(
            s.admin_tls.unwrap().reload().unwrap().subject,
            "CN=from the flags"
        );
        // A file that is not what it should be is named.
        let e = Settings::resolve(
            &args(&["--admin-tls-key", cert]),
            Some(FileConfig::parse(&file).unwrap()),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("--admin-tls-key {cert}: no private key in it (")),
            "{e}"
        );
        let admin = ["--admin", "127.0.0.1:9900"];
        let e = Settings::resolve(
            &args(&[&admin[..], &["--admin-tls-cert", "c.pem"]].concat()),
            None,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--admin-tls-cert (admin_tls_cert) is set without --admin-tls-key (admin_tls_key): \
             give the certificate's key too, or neither for plain HTTP"
        );
        let e = Settings::resolve(
            &args(&[&admin[..], &["--admin-tls-key", "k.pem"]].concat()),
            None,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--admin-tls-key (admin_tls_key) is set without --admin-tls-cert (admin_tls_cert): \
             give the certificate chain too, or neither for plain HTTP"
        );
        let e = Settings::resolve(
            &args(&["--admin-tls-cert", "c.pem", "--admin-tls-key", "k.pem"]),
            None,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--admin-tls-cert and --admin-tls-key are set but --admin is not: give the admin \
             endpoint's address (--admin ADDR:PORT), or drop the TLS files"
        );
    }
}
