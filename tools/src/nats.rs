//! `--nats`: the NATS bridges of `relay` and `mqtt` listeners (issue 14; the bridge
//! itself is `ringport_protocols::nats::bridge`): flags and config keys,
//! their checks, and its `/metrics` series.

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use ringport_engine::spec::ListenerSpec;
use ringport_plugin::ListenerId;
use ringport_protocols::nats::{
    Auth, BridgeSettings, BridgeStats, ListenerBridgeStats, NatsConfig, ServerAddr,
};

use crate::config::FileConfig;

/// Flags of the NATS bridge (each also a config key, `-` as `_`).
#[derive(Debug, Default, Args)]
pub struct NatsArgs {
    /// Bridge the `relay` and `mqtt` listeners to NATS through these servers
    /// (comma-separated, tried in turn; `nats://[user:pass@]HOST:PORT`):
    /// every topic both ways unless --nats-export/--nats-import narrow it.
    /// Default: no bridge.
    #[arg(long, value_name = "nats://HOST:PORT[,...]")]
    pub nats: Option<String>,

    /// A topic filter (MQTT syntax: `+` one level, `#` the rest) whose
    /// local publishes go to NATS (repeatable). Default: every topic (`#`).
    #[arg(long, value_name = "FILTER")]
    pub nats_export: Vec<String>,

    /// A topic filter subscribed to in NATS; its messages reach local
    /// subscribers (repeatable; filters must not overlap). Default: `#`.
    #[arg(long, value_name = "FILTER")]
    pub nats_import: Vec<String>,

    /// NATS login: user name (with --nats-password-file).
    #[arg(long, value_name = "USER", requires = "nats_password_file")]
    pub nats_user: Option<String>,

    /// NATS login: a file holding the password of --nats-user.
    #[arg(long, value_name = "FILE", requires = "nats_user")]
    pub nats_password_file: Option<PathBuf>,

    /// NATS login: a file holding a token.
    #[arg(long, value_name = "FILE")]
    pub nats_token_file: Option<PathBuf>,

    /// NATS login: a file holding an NKey user seed (`SU...`).
    #[arg(long, value_name = "FILE")]
    pub nats_nkey_seed_file: Option<PathBuf>,

    /// Exports held while NATS is unreachable (1 to 10000000); more are
    /// dropped and counted. [default: 65536]
    #[arg(long, value_name = "N")]
    pub nats_buffer_messages: Option<u64>,

    /// Bytes of exports held while NATS is unreachable (1024 to
    /// 1073741824). [default: 8388608]
    #[arg(long, value_name = "BYTES")]
    pub nats_buffer_bytes: Option<u64>,

    /// Subjects start with this (dot-separated tokens of A-Z a-z 0-9 - _),
    /// so that several deployments can share one NATS. Default: none.
    #[arg(long, value_name = "PREFIX")]
    pub nats_subject_prefix: Option<String>,

    /// This instance's id in the `Ringport-Origin` header of its exports
    /// (loop prevention; unique per instance). Default: random per process.
    #[arg(long, value_name = "ID")]
    pub nats_instance_id: Option<String>,

    /// First wait before reconnecting to NATS (0.001 to 3600); it doubles
    /// up to --nats-reconnect-max. [default: 0.1]
    #[arg(long, value_name = "SECS")]
    pub nats_reconnect_min: Option<f64>,

    /// Longest wait between reconnects (0.001 to 3600). [default: 5]
    #[arg(long, value_name = "SECS")]
    pub nats_reconnect_max: Option<f64>,
}

/// Keys of the whole bridge of a plugin: refused in a `[[listener]]` table
/// (one NATS connection per plugin carries every listener's messages).
pub const PER_PLUGIN_KEYS: [&str; 10] = [
    "nats_user",
    "nats_password_file",
    "nats_token_file",
    "nats_nkey_seed_file",
    "nats_buffer_messages",
    "nats_buffer_bytes",
    "nats_subject_prefix",
    "nats_instance_id",
    "nats_reconnect_min",
    "nats_reconnect_max",
];

/// A `[[listener]]` table's NATS keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerNats {
    /// `nats`: false leaves the listener out of the bridge.
    pub nats: Option<bool>,
    /// `nats_export`: replaces the plugin-wide export filters.
    pub export: Option<Vec<String>>,
    /// `nats_import`: replaces the plugin-wide import filters.
    pub import: Option<Vec<String>>,
}

impl ListenerNats {
    /// The first key set, if any.
    fn first_key(&self) -> Option<&'static str> {
        if self.nats.is_some() {
            Some("nats")
        } else if self.export.is_some() {
            Some("nats_export")
        } else if self.import.is_some() {
            Some("nats_import")
        } else {
            None
        }
    }
}

/// The resolved bridge settings (None: no `--nats`).
#[derive(Debug, Clone, Default)]
pub struct NatsSetup {
    /// The relay's bridge.
    pub relay: Option<Arc<BridgeSettings>>,
    /// The MQTT broker's bridge (same servers, filters and instance id;
    /// its own connection and counters).
    pub mqtt: Option<Arc<BridgeSettings>>,
}

/// Checks a numeric key against its range (`config::RANGES`).
fn in_range(key: &str, v: f64) -> Result<f64> {
    crate::config::in_range(key, v)?;
    Ok(v)
}

fn secret(key: &str, path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{key}: cannot read {}", path.display()))?;
    let s = text.trim().to_owned();
    if s.is_empty() {
        bail!(
            "{key}: {} is empty; write the secret on its first line",
            path.display()
        );
    }
    Ok(s)
}

/// A URL with its host resolved to an IP address (shards do not resolve
/// names), credentials kept.
fn resolve_url(url: &str) -> Result<String> {
    let a = ServerAddr::parse(url)
        .map_err(|e| anyhow::anyhow!("nats: {e}; write nats://HOST:PORT[,nats://HOST:PORT...]"))?;
    let ip = match a.socket_addr() {
        Some(sa) => sa,
        None => (a.host.as_str(), a.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut it| it.next())
            .with_context(|| {
                format!(
                    "nats: cannot resolve `{}`; use an IP address or a name this host resolves",
                    a.host
                )
            })?,
    };
    let creds = match (&a.user, &a.pass, &a.token) {
        (Some(u), Some(p), _) => format!("{u}:{p}@"),
        (_, _, Some(t)) => format!("{t}@"),
        _ => String::new(),
    };
    Ok(format!("nats://{creds}{ip}"))
}

/// A random id for this process: 16 hex digits.
fn random_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    format!("{:016x}", h.finish())
}

impl NatsSetup {
    /// Flags over the config file; reads the secret files. Errors name the
    /// key and the fix.
    pub fn resolve(args: &NatsArgs, f: &FileConfig) -> Result<NatsSetup> {
        let Some(urls) = args.nats.clone().or(f.nats.clone()) else {
            let set = [
                (
                    !args.nats_export.is_empty() || f.nats_export.is_some(),
                    "nats_export",
                ),
                (
                    !args.nats_import.is_empty() || f.nats_import.is_some(),
                    "nats_import",
                ),
                (
                    args.nats_user.is_some() || f.nats_user.is_some(),
                    "nats_user",
                ),
            ];
            if let Some((_, key)) = set.iter().find(|(on, _)| *on) {
                bail!("{key} needs nats (the servers to bridge to): add --nats nats://HOST:PORT");
            }
            return Ok(NatsSetup::default());
        };
        let servers = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(resolve_url)
            .collect::<Result<Vec<_>>>()?;
        if servers.is_empty() {
            bail!("nats: no server given; write nats://HOST:PORT[,nats://HOST:PORT...]");
        }
        let user = args.nats_user.clone().or(f.nats_user.clone());
        let password = args
            .nats_password_file
            .clone()
            .or(f.nats_password_file.clone());
        let token = args.nats_token_file.clone().or(f.nats_token_file.clone());
        let nkey = args
            .nats_nkey_seed_file
            .clone()
            .or(f.nats_nkey_seed_file.clone());
        let auth = match (user, password, token, nkey) {
            (None, None, None, None) => Auth::None,
            (Some(user), Some(p), None, None) => Auth::UserPassword {
                user,
                password: secret("nats_password_file", &p)?,
            },
            (None, None, Some(t), None) => Auth::Token(secret("nats_token_file", &t)?),
            (None, None, None, Some(k)) => Auth::NKeySeed(secret("nats_nkey_seed_file", &k)?),
            (Some(_), None, ..) => bail!("nats_user needs nats_password_file"),
            (None, Some(_), ..) => bail!("nats_password_file needs nats_user"),
            _ => bail!(
                "nats_user, nats_token_file and nats_nkey_seed_file are alternatives: keep one login"
            ),
        };
        let d = NatsConfig::default();
        let buffer_messages = in_range(
            "nats_buffer_messages",
            args.nats_buffer_messages
                .or(f.nats_buffer_messages)
                .unwrap_or(d.buffer_messages as u64) as f64,
        )? as usize;
        let buffer_bytes = in_range(
            "nats_buffer_bytes",
            args.nats_buffer_bytes
                .or(f.nats_buffer_bytes)
                .unwrap_or(d.buffer_bytes as u64) as f64,
        )? as usize;
        let rmin = in_range(
            "nats_reconnect_min",
            args.nats_reconnect_min
                .or(f.nats_reconnect_min)
                .unwrap_or(0.1),
        )?;
        let rmax = in_range(
            "nats_reconnect_max",
            args.nats_reconnect_max
                .or(f.nats_reconnect_max)
                .unwrap_or(5.0),
        )?;
        if rmin > rmax {
            bail!("nats_reconnect_min = {rmin} is above nats_reconnect_max = {rmax}: lower the first or raise the second");
        }
        let all = vec!["#".to_owned()];
        let pick = |flag: &Vec<String>, file: &Option<Vec<String>>| {
            if !flag.is_empty() {
                flag.clone()
            } else {
                file.clone().unwrap_or_else(|| all.clone())
            }
        };
        let export = pick(&args.nats_export, &f.nats_export);
        let import = pick(&args.nats_import, &f.nats_import);
        let prefix = args
            .nats_subject_prefix
            .clone()
            .or(f.nats_subject_prefix.clone())
            .unwrap_or_default();
        let id = args
            .nats_instance_id
            .clone()
            .or(f.nats_instance_id.clone())
            .unwrap_or_else(random_id);
        let nats = NatsConfig {
            servers,
            auth,
            name: Some(format!("ringport-{id}")),
            buffer_bytes,
            buffer_messages,
            ..d
        };
        let bridge = |label: &'static str, nats: NatsConfig| {
            let mut b = BridgeSettings::new(label, nats, &prefix, &export, &import, &id)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            b.reconnect_min = Duration::from_secs_f64(rmin);
            b.reconnect_max = Duration::from_secs_f64(rmax);
            Ok::<_, anyhow::Error>(Arc::new(b))
        };
        let mqtt = bridge(
            "mqtt",
            NatsConfig {
                name: Some(format!("ringport-{id}-mqtt")),
                ..nats.clone()
            },
        )?;
        Ok(NatsSetup {
            relay: Some(bridge("relay", nats)?),
            mqtt: Some(mqtt),
        })
    }

    /// Gives every `relay` listener of the plan its route in the relay's
    /// bridge, and every `mqtt` listener its route in the broker's bridge
    /// if one of them has keys: its own keys (`keys[i]` for
    /// `listeners[i]`, missing = none) or the plugin-wide filters. Without
    /// any mqtt listener key the broker's bridge keeps no routes: the
    /// plugin-wide filters, with no import scope to work out per message.
    /// Errors name the listener, the key and the fix.
    pub fn route_listeners(
        &mut self,
        listeners: &[ListenerSpec],
        keys: &[ListenerNats],
    ) -> Result<()> {
        let none = ListenerNats::default();
        let keyed = listeners
            .iter()
            .zip(keys)
            .find_map(|(spec, k)| Some((spec, k.first_key()?)));
        if self.relay.is_none() {
            if let Some((spec, key)) = keyed {
                bail!(
                    "listener `{spec}`: {key} needs nats (the servers to bridge to): add --nats \
                     nats://HOST:PORT or a top-level nats key"
                );
            }
            return Ok(());
        }
        let mqtt_keyed = listeners
            .iter()
            .zip(keys)
            .any(|(l, k)| l.protocol == "mqtt" && k.first_key().is_some());
        for (i, spec) in listeners.iter().enumerate() {
            let k = keys.get(i).unwrap_or(&none);
            let bridge = match spec.protocol.as_str() {
                "relay" => &mut self.relay,
                "mqtt" => &mut self.mqtt,
                _ => {
                    if let Some(key) = k.first_key() {
                        bail!(
                            "listener `{spec}`: {key} narrows the bridge of relay and mqtt \
                             listeners only ({} listeners are not bridged): remove it",
                            spec.protocol
                        );
                    }
                    continue;
                }
            };
            let routed = spec.protocol == "relay" || mqtt_keyed;
            let Some(bridge) = bridge.as_mut().filter(|_| routed) else {
                continue;
            };
            let bridge = Arc::make_mut(bridge);
            let off = Some(Vec::new());
            let (export, import) = match k.nats {
                Some(false) if k.export.is_some() || k.import.is_some() => bail!(
                    "listener `{spec}`: nats = false leaves it out of the bridge, yet \
                     nats_export or nats_import is set: remove one or the other"
                ),
                Some(false) => (off.clone(), off),
                _ => (k.export.clone(), k.import.clone()),
            };
            let id = u16::try_from(i)
                .ok()
                .filter(|&i| i != ListenerId::OUTBOUND.0);
            let Some(id) = id else {
                bail!("listener `{spec}`: a bridge takes at most 65535 listeners; remove some");
            };
            bridge
                .add_listener(
                    ListenerId(id),
                    &spec.to_string(),
                    export.as_deref(),
                    import.as_deref(),
                )
                .map_err(|e| anyhow::anyhow!("listener `{spec}`: {e}"))?;
        }
        Ok(())
    }

    /// A line for the start-up banner; `which` names the bridged plugins.
    pub fn describe(&self, which: &str) -> Option<String> {
        let r = self.relay.as_ref()?;
        Some(
            format!(
                "nats bridge: {which} listeners via {} (instance {}, export {:?}, import {:?})",
                r.nats
                    .servers
                    .iter()
                    .filter_map(|u| ServerAddr::parse(u).ok())
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                r.instance_id,
                r.export,
                r.import
            ) + &r
                .routes()
                .chain(self.mqtt.iter().flat_map(|m| m.routes()))
                .map(|(_, l)| format!("; {} export {:?} import {:?}", l.name, l.export, l.import))
                .collect::<String>(),
        )
    }
}

/// Tells the notifier the bridges' state changes and loss bursts, then
/// the settings with it.
pub fn with_notifier(setup: &NatsSetup, notify: Arc<dyn Fn(String) + Send + Sync>) -> NatsSetup {
    let told = |b: &Option<Arc<BridgeSettings>>| {
        b.as_ref().map(|r| {
            let mut s = (**r).clone();
            s.notify = Some(notify.clone());
            Arc::new(s)
        })
    };
    NatsSetup {
        relay: told(&setup.relay),
        mqtt: told(&setup.mqtt),
    }
}

/// The bridges' `/metrics` series (Prometheus text, appended to `o`):
/// per plugin, then per listener for the bridges with routes.
pub fn render_metrics(bridges: &[(&str, &BridgeSettings)], o: &mut String) {
    let stats: Vec<(&str, &BridgeStats)> = bridges.iter().map(|(p, b)| (*p, &*b.stats)).collect();
    render_plugin_metrics(&stats, o);
    render_listener_metrics(bridges, o);
}

/// The per-listener series: a listener's exports and imports, and its
/// exports dropped by reason, labelled `plugin` and `listener` (its spec).
/// They are families of their own: a listener's `exported` counts what the
/// bridge took (sent or buffered) and its `imported` what its filters let
/// through, so they do not add up to the plugin's series, which count what
/// reached the server and what came from it.
fn render_listener_metrics(bridges: &[(&str, &BridgeSettings)], o: &mut String) {
    if !bridges.iter().any(|(_, b)| b.has_routes()) {
        return;
    }
    let get = BridgeStats::get;
    type Field = fn(&ListenerBridgeStats) -> &AtomicU64;
    let counters: [(&str, &str, Field); 2] = [
        (
            "ringport_nats_bridge_listener_exported_total",
            "Publishes from the listener taken for NATS (sent or buffered).",
            |s| &s.exported,
        ),
        (
            "ringport_nats_bridge_listener_imported_total",
            "Messages from NATS the listener's import filters let through.",
            |s| &s.imported,
        ),
    ];
    for (name, help, f) in counters {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for (plugin, b) in bridges {
            for (_, r) in b.routes() {
                let _ = writeln!(
                    o,
                    "{name}{{plugin=\"{plugin}\",listener=\"{}\"}} {}",
                    r.name,
                    get(f(&r.stats))
                );
            }
        }
    }
    let name = "ringport_nats_bridge_listener_dropped_total";
    let _ = writeln!(
        o,
        "# HELP {name} Exports from the listener the bridge dropped, by reason.\n# TYPE {name} counter"
    );
    let reasons: [(&str, Field); 3] = [
        ("buffer_full", |s| &s.dropped_buffer_full),
        ("too_large", |s| &s.dropped_too_large),
        ("unmappable", |s| &s.dropped_unmappable),
    ];
    for (plugin, b) in bridges {
        for (_, r) in b.routes() {
            for (reason, f) in reasons {
                let _ = writeln!(
                    o,
                    "{name}{{plugin=\"{plugin}\",listener=\"{}\",reason=\"{reason}\"}} {}",
                    r.name,
                    get(f(&r.stats))
                );
            }
        }
    }
}

/// The per-plugin series.
fn render_plugin_metrics(bridges: &[(&str, &BridgeStats)], o: &mut String) {
    let get = BridgeStats::get;
    type Field = fn(&BridgeStats) -> &AtomicU64;
    let gauges: [(&str, &str, Field); 3] = [
        (
            "ringport_nats_bridge_connected",
            "1 while the bridge is logged in to a NATS server.",
            |s| &s.connected,
        ),
        (
            "ringport_nats_bridge_buffered_messages",
            "Exports waiting for NATS (the bridge's lag).",
            |s| &s.buffered_messages,
        ),
        (
            "ringport_nats_bridge_buffered_bytes",
            "Bytes of exports waiting for NATS.",
            |s| &s.buffered_bytes,
        ),
    ];
    for (name, help, f) in gauges {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (plugin, s) in bridges {
            let _ = writeln!(o, "{name}{{plugin=\"{plugin}\"}} {}", get(f(s)));
        }
    }
    let counters: [(&str, &str, Field); 4] = [
        (
            "ringport_nats_bridge_exported_total",
            "Local publishes handed to NATS.",
            |s| &s.exported,
        ),
        (
            "ringport_nats_bridge_imported_total",
            "Messages from NATS delivered locally.",
            |s| &s.imported,
        ),
        (
            "ringport_nats_bridge_reconnects_total",
            "Logins to NATS after the first.",
            |s| &s.reconnects,
        ),
        (
            "ringport_nats_bridge_disconnects_total",
            "Failed connects and ended connections to NATS.",
            |s| &s.disconnects,
        ),
    ];
    for (name, help, f) in counters {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for (plugin, s) in bridges {
            let _ = writeln!(o, "{name}{{plugin=\"{plugin}\"}} {}", get(f(s)));
        }
    }
    let name = "ringport_nats_bridge_dropped_total";
    let _ = writeln!(
        o,
        "# HELP {name} Messages the bridge dropped, by reason.\n# TYPE {name} counter"
    );
    let reasons: [(&str, Field); 6] = [
        ("buffer_full", |s| &s.dropped_buffer_full),
        ("too_large", |s| &s.dropped_too_large),
        ("lost_in_flight", |s| &s.lost_in_flight),
        ("loop", |s| &s.dropped_loop),
        ("unmappable", |s| &s.dropped_unmappable),
        ("bad_message", |s| &s.dropped_bad_message),
    ];
    for (plugin, s) in bridges {
        for (reason, f) in reasons {
            let _ = writeln!(
                o,
                "{name}{{plugin=\"{plugin}\",reason=\"{reason}\"}} {}",
                get(f(s))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str], file: &str) -> Result<NatsSetup> {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            n: NatsArgs,
        }
        let mut argv = vec!["t"];
        argv.extend_from_slice(flags);
        let t = T::try_parse_from(argv)?;
        NatsSetup::resolve(&t.n, &FileConfig::parse(file)?)
    }

    #[test]
    fn defaults_bridge_everything_both_ways() {
        assert!(parse(&[], "").unwrap().relay.is_none());
        let s = parse(
            &["--nats", "nats://127.0.0.1:4222, nats://localhost:4223"],
            "",
        )
        .unwrap();
        let r = s.relay.unwrap();
        assert_eq!(r.export, [">"]);
        assert_eq!(r.import, [">"]);
        assert_eq!(r.nats.servers[0], "nats://127.0.0.1:4222");
        assert!(r.nats.servers[1].ends_with(":4223"));
        assert_eq!(r.instance_id.len(), 16);
        assert_eq!(r.nats.buffer_messages, 65_536);
        assert_eq!(r.reconnect_min, Duration::from_millis(100));
        assert!(!r.nats.echo);
    }

    #[test]
    fn the_file_narrows_and_flags_override() {
        let file = "nats = \"nats://127.0.0.1:4222\"\nnats_export = [\"a/#\"]\nnats_import = [\"b/+\"]\nnats_subject_prefix = \"site1\"\nnats_instance_id = \"east-1\"\nnats_buffer_messages = 10\n";
        let r = parse(&[], file).unwrap().relay.unwrap();
        assert_eq!(r.export, ["site1.a.>", "site1.a"]);
        assert_eq!(r.import, ["site1.b.*"]);
        assert_eq!(r.instance_id, "east-1");
        assert_eq!(r.nats.buffer_messages, 10);
        let r = parse(
            &["--nats-export", "c", "--nats-buffer-messages", "20"],
            file,
        )
        .unwrap()
        .relay
        .unwrap();
        assert_eq!(r.export, ["site1.c"]);
        assert_eq!(r.nats.buffer_messages, 20);
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let e = |flags: &[&str], file: &str| parse(flags, file).unwrap_err().to_string();
        assert_eq!(
            e(&["--nats-export", "a"], ""),
            "nats_export needs nats (the servers to bridge to): add --nats nats://HOST:PORT"
        );
        assert!(e(&["--nats", "http://x"], "").starts_with("nats: "));
        assert_eq!(
            e(
                &[
                    "--nats",
                    "nats://127.0.0.1:1",
                    "--nats-buffer-messages",
                    "0"
                ],
                ""
            ),
            "nats_buffer_messages = 0 is out of range: use 1 to 10000000"
        );
        assert!(e(
            &[
                "--nats",
                "nats://127.0.0.1:1",
                "--nats-import",
                "#",
                "--nats-import",
                "a"
            ],
            ""
        )
        .starts_with("nats_import: `#` and `a` overlap"));
        assert!(e(
            &[
                "--nats",
                "nats://127.0.0.1:1",
                "--nats-token-file",
                "/nonexistent/t"
            ],
            ""
        )
        .starts_with("nats_token_file: cannot read /nonexistent/t"));
        assert!(e(
            &[
                "--nats",
                "nats://127.0.0.1:1",
                "--nats-reconnect-min",
                "2",
                "--nats-reconnect-max",
                "1"
            ],
            ""
        )
        .starts_with("nats_reconnect_min = 2 is above nats_reconnect_max = 1"));
        let dir = std::env::temp_dir().join(format!("ringport-nats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let seed = dir.join("seed");
        std::fs::write(&seed, "SUnotaseed\n").unwrap();
        let msg = e(
            &[
                "--nats",
                "nats://127.0.0.1:1",
                "--nats-nkey-seed-file",
                seed.to_str().unwrap(),
            ],
            "",
        );
        assert!(msg.starts_with("nats: auth (NKey seed)"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `ringport serve` settings from flags and a config file.
    fn settings(file: &str) -> Result<crate::config::Settings> {
        use clap::Parser;
        let args = match crate::cli::Cli::try_parse_from(["ringport", "serve"])?.command {
            Some(crate::cli::Command::Serve(a)) => *a,
            _ => unreachable!("serve"),
        };
        crate::config::Settings::resolve(&args, Some(FileConfig::parse(file)?))
    }

    const TWO_RELAYS: &str = "nats = \"nats://127.0.0.1:4222\"\nnats_import = [\"in/#\"]\nlisten = [\"echo@tcp:127.0.0.1:9000\"]\n[[listener]]\nspec = \"relay@tcp:127.0.0.1:9001\"\nnats_export = [\"a/#\"]\n[[listener]]\nspec = \"relay@udp:127.0.0.1:9002\"\nnats = false\n[[listener]]\nspec = \"relay@tcp:127.0.0.1:9003\"\nnats_import = [\"in/x\", \"other\"]\n";

    #[test]
    fn listener_tables_narrow_the_relay_bridge_per_listener() {
        let s = settings(TWO_RELAYS).unwrap();
        let r = s.nats.relay.unwrap();
        // Plan order: the echo listener is 0 and has no route.
        assert!(r.route(ListenerId(0)).is_none());
        let one = r.route(ListenerId(1)).unwrap();
        assert_eq!(one.name, "relay@tcp:127.0.0.1:9001");
        assert_eq!(one.export, ["a.>", "a"]);
        assert_eq!(one.import, ["in.>", "in"]);
        let two = r.route(ListenerId(2)).unwrap();
        assert!(two.export.is_empty() && two.import.is_empty());
        let three = r.route(ListenerId(3)).unwrap();
        assert_eq!(three.export, [">"]);
        assert_eq!(three.import, ["in.x", "other"]);
        // `in/x` is covered by listener 1's `in/#`.
        assert_eq!(r.subscriptions, ["in.>", "in", "other"]);
        // No mqtt listener has keys: the MQTT bridge keeps no routes.
        assert!(!s.nats.mqtt.unwrap().has_routes());
    }

    const TWO_MQTT: &str = "nats = \"nats://127.0.0.1:4222\"\nnats_export = [\"out/#\"]\nlisten = [\"relay@tcp:127.0.0.1:9000\"]\n[[listener]]\nspec = \"mqtt@tcp:127.0.0.1:1883\"\nnats_export = [\"a/#\"]\nnats_import = [\"x/+\"]\n[[listener]]\nspec = \"mqtt@tcp:127.0.0.1:1884\"\nnats = false\n[[listener]]\nspec = \"mqtt@tcp:127.0.0.1:1885\"\n";

    #[test]
    fn listener_tables_narrow_the_mqtt_bridge_per_listener() {
        let s = settings(TWO_MQTT).unwrap();
        let m = s.nats.mqtt.unwrap();
        // Plan order: the relay listener is 0 and has no route here.
        assert!(m.route(ListenerId(0)).is_none());
        let one = m.route(ListenerId(1)).unwrap();
        assert_eq!(one.name, "mqtt@tcp:127.0.0.1:1883");
        assert_eq!(one.export, ["a.>", "a"]);
        assert_eq!(one.import, ["x.*"]);
        let two = m.route(ListenerId(2)).unwrap();
        assert!(two.export.is_empty() && two.import.is_empty());
        // Listener 3 has no keys: the top-level filters, as a route.
        let three = m.route(ListenerId(3)).unwrap();
        assert_eq!(three.export, ["out.>", "out"]);
        assert_eq!(three.import, [">"]);
        assert_eq!(m.subscriptions, [">"]);
        assert_eq!(m.routes().count(), 3);
        // The relay's bridge has its listener's route, top-level filters.
        let r = s.nats.relay.unwrap();
        assert_eq!(r.route(ListenerId(0)).unwrap().export, ["out.>", "out"]);
        assert_eq!(r.routes().count(), 1);
        let mut o = String::new();
        render_metrics(&[("relay", &r), ("mqtt", &m)], &mut o);
        for l in ["1883", "1884", "1885"] {
            assert!(o.contains(&format!(
                "\nringport_nats_bridge_listener_imported_total{{plugin=\"mqtt\",listener=\"mqtt@tcp:127.0.0.1:{l}\"}} 0\n"
            )));
        }
        assert_eq!(
            o.matches("ringport_nats_bridge_listener_dropped_total{plugin=\"mqtt\"")
                .count(),
            9
        );
    }

    #[test]
    fn bad_listener_nats_keys_name_the_listener_the_key_and_the_fix() {
        let e = |file: &str| format!("{:#}", settings(file).unwrap_err());
        assert_eq!(
            e("[[listener]]\nspec = \"relay@tcp:127.0.0.1:9001\"\nnats_export = [\"a\"]\n"),
            "listener `relay@tcp:127.0.0.1:9001`: nats_export needs nats (the servers to bridge \
             to): add --nats nats://HOST:PORT or a top-level nats key"
        );
        let bridged = "nats = \"nats://127.0.0.1:4222\"\n[[listener]]\n";
        assert_eq!(
            e(&format!(
                "{bridged}spec = \"echo@tcp:127.0.0.1:7\"\nnats_import = [\"a\"]\n"
            )),
            "listener `echo@tcp:127.0.0.1:7`: nats_import narrows the bridge of relay and mqtt \
             listeners only (echo listeners are not bridged): remove it"
        );
        assert_eq!(
            e(&format!(
                "{bridged}spec = \"mqtt@tcp:127.0.0.1:1\"\nnats = false\nnats_import = [\"a\"]\n"
            )),
            "listener `mqtt@tcp:127.0.0.1:1`: nats = false leaves it out of the bridge, yet \
             nats_export or nats_import is set: remove one or the other"
        );
        assert_eq!(
            e(&format!(
                "{bridged}spec = \"mqtt@tcp:127.0.0.1:1\"\nnats_import = [\"a/+/c\"]\n[[listener]]\nspec = \"mqtt@tcp:127.0.0.1:2\"\nnats_import = [\"a/b/+\"]\n"
            )),
            "listener `mqtt@tcp:127.0.0.1:2`: nats_import: `a/+/c` of listener \
             `mqtt@tcp:127.0.0.1:1` and `a/b/+` of listener `mqtt@tcp:127.0.0.1:2` overlap \
             without one covering the other, so NATS would deliver their common messages twice; \
             make one filter cover the other, or split them so they do not overlap"
        );
        assert_eq!(
            e(&format!(
                "{bridged}spec = \"relay@tcp:127.0.0.1:1\"\nnats = false\nnats_export = [\"a\"]\n"
            )),
            "listener `relay@tcp:127.0.0.1:1`: nats = false leaves it out of the bridge, yet \
             nats_export or nats_import is set: remove one or the other"
        );
        assert!(e(&format!(
            "{bridged}spec = \"relay@tcp:127.0.0.1:1\"\nnats_export = [\"a/#/b\"]\n"
        ))
        .starts_with("listener `relay@tcp:127.0.0.1:1`: nats_export: `a/#/b`"));
        assert!(e(&format!(
            "{bridged}spec = \"relay@tcp:127.0.0.1:1\"\nnats_import = [\"a/+/c\"]\n[[listener]]\nspec = \"relay@tcp:127.0.0.1:2\"\nnats_import = [\"a/b/+\"]\n"
        ))
        .starts_with("listener `relay@tcp:127.0.0.1:2`: nats_import: `a/+/c` of listener `relay@tcp:127.0.0.1:1` and `a/b/+` of listener `relay@tcp:127.0.0.1:2` overlap"));
        // Keys of the whole bridge are refused in a table, naming the fix.
        let msg = e(&format!(
            "{bridged}spec = \"relay@tcp:127.0.0.1:1\"\nnats_buffer_messages = 10\n"
        ));
        assert!(
            msg.contains("unknown field `nats_buffer_messages`"),
            "{msg}"
        );
        assert!(
            msg.ends_with(
                "nats_buffer_messages applies to the whole NATS bridge of a plugin (one \
                 connection carries every listener's messages): set it at the top level, \
                 outside [[listener]]; a listener table takes only nats, nats_export and \
                 nats_import"
            ),
            "{msg}"
        );
    }

    #[test]
    fn per_listener_series_carry_the_plugin_and_the_listener() {
        use std::sync::atomic::Ordering::Relaxed;
        let s = settings(TWO_RELAYS).unwrap();
        let r = s.nats.relay.unwrap();
        let one = &r.route(ListenerId(1)).unwrap().stats;
        one.exported.store(5, Relaxed);
        one.dropped_buffer_full.store(2, Relaxed);
        r.route(ListenerId(3))
            .unwrap()
            .stats
            .imported
            .store(4, Relaxed);
        r.stats.exported.store(5, Relaxed);
        let mut o = String::new();
        render_metrics(&[("relay", &r)], &mut o);
        let l1 = "plugin=\"relay\",listener=\"relay@tcp:127.0.0.1:9001\"";
        let l3 = "plugin=\"relay\",listener=\"relay@tcp:127.0.0.1:9003\"";
        assert!(o.contains("\nringport_nats_bridge_exported_total{plugin=\"relay\"} 5\n"));
        assert!(o.contains(&format!(
            "\nringport_nats_bridge_listener_exported_total{{{l1}}} 5\n"
        )));
        assert!(o.contains(&format!(
            "\nringport_nats_bridge_listener_imported_total{{{l3}}} 4\n"
        )));
        assert!(o.contains(&format!(
            "\nringport_nats_bridge_listener_imported_total{{{l1}}} 0\n"
        )));
        assert!(o.contains(&format!(
            "\nringport_nats_bridge_listener_dropped_total{{{l1},reason=\"buffer_full\"}} 2\n"
        )));
        // Three routes (the echo listener has none), three series each.
        assert_eq!(
            o.matches("ringport_nats_bridge_listener_exported_total{")
                .count(),
            3
        );
        assert_eq!(
            o.matches("ringport_nats_bridge_listener_dropped_total{")
                .count(),
            9
        );
        assert_eq!(o.matches("# TYPE").count(), 11);
    }

    #[test]
    fn metrics_show_state_lag_and_drops_by_reason() {
        let r = parse(&["--nats", "nats://127.0.0.1:4222"], "")
            .unwrap()
            .relay
            .unwrap();
        let s = &r.stats;
        s.connected.store(1, std::sync::atomic::Ordering::Relaxed);
        s.buffered_messages
            .store(3, std::sync::atomic::Ordering::Relaxed);
        s.dropped_loop
            .store(2, std::sync::atomic::Ordering::Relaxed);
        let mut o = String::new();
        render_metrics(&[("relay", &r)], &mut o);
        assert!(o.contains("\nringport_nats_bridge_connected{plugin=\"relay\"} 1\n"));
        assert!(o.contains("\nringport_nats_bridge_buffered_messages{plugin=\"relay\"} 3\n"));
        assert!(o.contains(
            "\nringport_nats_bridge_dropped_total{plugin=\"relay\",reason=\"loop\"} 2\n"
        ));
        assert!(o.contains(
            "\nringport_nats_bridge_dropped_total{plugin=\"relay\",reason=\"buffer_full\"} 0\n"
        ));
        assert_eq!(o.matches("# TYPE").count(), 8);
    }
}
