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
use ringport_protocols::nats::bridge::DEFAULT_NAME;
use ringport_protocols::nats::{
    Auth, BridgeSet, BridgeSettings, BridgeStats, ListenerBridgeStats, NatsConfig, ServerAddr,
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
/// (every bridge of a plugin shares them; login and buffer may differ).
pub const PER_PLUGIN_KEYS: [&str; 4] = [
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
    /// `nats_user`: a login of its own (with `password_file`).
    pub user: Option<String>,
    /// `nats_password_file`.
    pub password_file: Option<PathBuf>,
    /// `nats_token_file`: a token login of its own.
    pub token_file: Option<PathBuf>,
    /// `nats_nkey_seed_file`: an NKey login of its own.
    pub nkey_seed_file: Option<PathBuf>,
    /// `nats_buffer_messages`: a buffer of its own.
    pub buffer_messages: Option<u64>,
    /// `nats_buffer_bytes`: a buffer of its own.
    pub buffer_bytes: Option<u64>,
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
            self.first_connection_key()
        }
    }

    /// The first key set that gives the listener a connection of its own.
    fn first_connection_key(&self) -> Option<&'static str> {
        let keys = [
            (self.user.is_some(), "nats_user"),
            (self.password_file.is_some(), "nats_password_file"),
            (self.token_file.is_some(), "nats_token_file"),
            (self.nkey_seed_file.is_some(), "nats_nkey_seed_file"),
            (self.buffer_messages.is_some(), "nats_buffer_messages"),
            (self.buffer_bytes.is_some(), "nats_buffer_bytes"),
        ];
        keys.iter().find(|(on, _)| *on).map(|(_, k)| *k)
    }

    /// The listener's connection settings: `base`'s, with its own login
    /// and buffer over them. Errors name the key and the fix (the caller
    /// names the listener).
    fn connection(&self, base: &Connection) -> Result<Connection> {
        let login = (
            self.user.clone(),
            self.password_file.clone(),
            self.token_file.clone(),
            self.nkey_seed_file.clone(),
        );
        let auth = match login {
            (None, None, None, None) => base.auth.clone(),
            login => auth_of(login, " in the same [[listener]] table")?,
        };
        let buffer_messages = match self.buffer_messages {
            Some(n) => in_range("nats_buffer_messages", n as f64)? as usize,
            None => base.buffer_messages,
        };
        let buffer_bytes = match self.buffer_bytes {
            Some(n) => in_range("nats_buffer_bytes", n as f64)? as usize,
            None => base.buffer_bytes,
        };
        Ok(Connection {
            auth,
            buffer_messages,
            buffer_bytes,
        })
    }
}

/// What may differ between the bridges of one plugin: the login and the
/// buffer (servers, prefix, instance id and reconnect delays are
/// top-level only). Listeners with equal ones share a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Connection {
    auth: Auth,
    buffer_messages: usize,
    buffer_bytes: usize,
}

/// The login of user, password file, token file and NKey seed file;
/// `where_` ends the message of a half-given login (where the fix goes).
fn auth_of(
    login: (
        Option<String>,
        Option<PathBuf>,
        Option<PathBuf>,
        Option<PathBuf>,
    ),
    where_: &str,
) -> Result<Auth> {
    Ok(match login {
        (None, None, None, None) => Auth::None,
        (Some(user), Some(p), None, None) => Auth::UserPassword {
            user,
            password: secret("nats_password_file", &p)?,
        },
        (None, None, Some(t), None) => Auth::Token(secret("nats_token_file", &t)?),
        (None, None, None, Some(k)) => Auth::NKeySeed(secret("nats_nkey_seed_file", &k)?),
        (Some(_), None, ..) => {
            bail!("nats_user needs nats_password_file{where_}: add nats_password_file = \"FILE\"")
        }
        (None, Some(_), ..) => {
            bail!("nats_password_file needs nats_user{where_}: add nats_user = \"USER\"")
        }
        _ => bail!(
            "nats_user, nats_token_file and nats_nkey_seed_file are alternatives: keep one login"
        ),
    })
}

/// The top-level settings a plugin's bridges are made of.
#[derive(Debug, Clone)]
struct Base {
    /// The client's settings with the top-level login and buffer.
    nats: NatsConfig,
    prefix: String,
    export: Vec<String>,
    import: Vec<String>,
    id: String,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

impl Base {
    fn connection(&self) -> Connection {
        Connection {
            auth: self.nats.auth.clone(),
            buffer_messages: self.nats.buffer_messages,
            buffer_bytes: self.nats.buffer_bytes,
        }
    }

    /// A bridge of `label` (`relay`, `mqtt`) with `conn`, named `name`;
    /// `index` (0 for the first) tells its connection's name apart.
    fn bridge(
        &self,
        label: &'static str,
        conn: &Connection,
        name: &str,
        index: usize,
    ) -> Result<BridgeSettings> {
        let mut conn_name = format!("ringport-{}", self.id);
        if label != "relay" {
            conn_name += &format!("-{label}");
        }
        if index > 0 {
            conn_name += &format!("-{index}");
        }
        let nats = NatsConfig {
            auth: conn.auth.clone(),
            buffer_messages: conn.buffer_messages,
            buffer_bytes: conn.buffer_bytes,
            name: Some(conn_name),
            ..self.nats.clone()
        };
        let mut b = BridgeSettings::new(
            label,
            nats,
            &self.prefix,
            &self.export,
            &self.import,
            &self.id,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        b.reconnect_min = self.reconnect_min;
        b.reconnect_max = self.reconnect_max;
        b.name = name.to_owned();
        Ok(b)
    }
}

/// The resolved bridge settings (None: no `--nats`).
#[derive(Debug, Clone, Default)]
pub struct NatsSetup {
    /// The relay's bridges.
    pub relay: Option<Arc<BridgeSet>>,
    /// The MQTT broker's bridges (same servers, filters and instance id;
    /// their own connections and counters).
    pub mqtt: Option<Arc<BridgeSet>>,
    /// What further bridges are made of ([`NatsSetup::route_listeners`]).
    base: Option<Base>,
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
        let auth = auth_of((user, password, token, nkey), "")?;
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
        let base = Base {
            nats,
            prefix,
            export,
            import,
            id,
            reconnect_min: Duration::from_secs_f64(rmin),
            reconnect_max: Duration::from_secs_f64(rmax),
        };
        let conn = base.connection();
        let single = |label| {
            let b = base.bridge(label, &conn, DEFAULT_NAME, 0)?;
            Ok::<_, anyhow::Error>(Arc::new(BridgeSet::single(Arc::new(b))))
        };
        Ok(NatsSetup {
            relay: Some(single("relay")?),
            mqtt: Some(single("mqtt")?),
            base: Some(base),
        })
    }

    /// Gives each `relay` and `mqtt` listener of the plan its bridge and
    /// route. Listeners of one plugin with equal connection settings (the
    /// top-level ones with their own `nats_user`, `nats_*_file` and
    /// `nats_buffer_*` over them) share a bridge; each distinct set gets
    /// its own (named `default` for the top-level settings, else after its
    /// first listener). Every `relay` listener gets its route (its own
    /// filters, `keys[i]` for `listeners[i]`, missing = none, or the
    /// top-level ones); an `mqtt` listener only if some mqtt listener has
    /// keys: without them the broker's one bridge keeps no routes and no
    /// import scope is worked out per message. Errors name the listener,
    /// the key and the fix.
    pub fn route_listeners(
        &mut self,
        listeners: &[ListenerSpec],
        keys: &[ListenerNats],
    ) -> Result<()> {
        let keyed = listeners
            .iter()
            .zip(keys)
            .find_map(|(spec, k)| Some((spec, k.first_key()?)));
        let Some(base) = self.base.clone() else {
            if let Some((spec, key)) = keyed {
                bail!(
                    "listener `{spec}`: {key} needs nats (the servers to bridge to): add --nats \
                     nats://HOST:PORT or a top-level nats key"
                );
            }
            return Ok(());
        };
        let none = ListenerNats::default();
        let key = |i: usize| keys.get(i).unwrap_or(&none);
        for (i, spec) in listeners.iter().enumerate() {
            let k = key(i);
            let Some(first) = k.first_key() else { continue };
            if spec.protocol != "relay" && spec.protocol != "mqtt" {
                bail!(
                    "listener `{spec}`: {first} narrows the bridge of relay and mqtt \
                     listeners only ({} listeners are not bridged): remove it",
                    spec.protocol
                );
            }
            if k.nats == Some(false) {
                let other = [
                    (k.export.is_some(), "nats_export"),
                    (k.import.is_some(), "nats_import"),
                ]
                .into_iter()
                .find(|(on, _)| *on)
                .map(|(_, key)| key)
                .or(k.first_connection_key());
                if let Some(other) = other {
                    bail!(
                        "listener `{spec}`: nats = false leaves it out of the bridge, yet \
                         {other} is set: remove one or the other"
                    );
                }
            }
        }
        for label in ["relay", "mqtt"] {
            let mine: Vec<usize> = (0..listeners.len())
                .filter(|&i| listeners[i].protocol == label)
                .collect();
            let routed = label == "relay" || mine.iter().any(|&i| key(i).first_key().is_some());
            let set = plugin_bridges(&base, label, listeners, &mine, &key, routed)?;
            let slot = if label == "relay" {
                &mut self.relay
            } else {
                &mut self.mqtt
            };
            if let Some(set) = set {
                *slot = Some(Arc::new(set));
            }
        }
        Ok(())
    }

    /// Lines for the start-up banner; `which` names the bridged plugins:
    /// the servers and filters with each listener's route, then one line
    /// per bridge (connection) of each bridged plugin.
    pub fn describe(&self, which: &str) -> Option<String> {
        let relay = self.relay.as_ref()?;
        let r = &relay.bridges()[0];
        let plugins = [("relay", &self.relay), ("mqtt", &self.mqtt)];
        let sets = || {
            plugins
                .iter()
                .filter(|(label, _)| which.contains(label))
                .filter_map(|(label, set)| Some((*label, set.as_ref()?)))
        };
        let mut bridges = String::new();
        for (label, set) in sets() {
            for b in set.bridges() {
                let login = match &b.nats.auth {
                    Auth::None => "no login".to_owned(),
                    Auth::UserPassword { user, .. } => format!("user `{user}`"),
                    Auth::Token(_) => "a token".to_owned(),
                    Auth::NKeySeed(_) => "an NKey".to_owned(),
                };
                let users: Vec<&str> = b.routes().map(|(_, l)| l.name.as_str()).collect();
                let _ = write!(
                    bridges,
                    "\nnats bridge {label} `{}`: {login}, buffer {} messages / {} bytes{}",
                    b.name,
                    b.nats.buffer_messages,
                    b.nats.buffer_bytes,
                    if users.is_empty() {
                        String::new()
                    } else {
                        format!(", for {}", users.join(", "))
                    }
                );
            }
        }
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
            ) + &sets()
                .flat_map(|(_, set)| set.bridges().iter().flat_map(|b| b.routes()))
                .map(|(_, l)| format!("; {} export {:?} import {:?}", l.name, l.export, l.import))
                .collect::<String>()
                + &bridges,
        )
    }
}

/// The bridges of plugin `label` (`relay`, `mqtt`) for its listeners
/// `mine` (plan indexes; `key(i)` their tables); None keeps the single
/// top-level bridge without routes (`routed` false: an mqtt plugin whose
/// listeners have no keys, or a plugin without listeners).
fn plugin_bridges<'k>(
    base: &Base,
    label: &'static str,
    listeners: &[ListenerSpec],
    mine: &[usize],
    key: &dyn Fn(usize) -> &'k ListenerNats,
    routed: bool,
) -> Result<Option<BridgeSet>> {
    if mine.is_empty() || !routed {
        return Ok(None);
    }
    let top = base.connection();
    // Each bridged listener's connection settings.
    let mut own = Vec::new();
    for &i in mine {
        if key(i).nats == Some(false) {
            continue;
        }
        let spec = &listeners[i];
        let conn = key(i)
            .connection(&top)
            .map_err(|e| anyhow::anyhow!("listener `{spec}`: {e}"))?;
        own.push((i, conn));
    }
    // The top-level bridge first if a listener uses it, then one per
    // distinct setting in listener order.
    let mut conns: Vec<(Connection, String)> = Vec::new();
    if own.is_empty() || own.iter().any(|(_, c)| *c == top) {
        conns.push((top, DEFAULT_NAME.to_owned()));
    }
    let mut of: Vec<Option<usize>> = vec![None; listeners.len()];
    for (i, conn) in own {
        let at = match conns.iter().position(|(c, _)| *c == conn) {
            Some(at) => at,
            None => {
                conns.push((conn, listeners[i].to_string()));
                conns.len() - 1
            }
        };
        of[i] = Some(at);
    }
    let several = conns.len() > 1;
    let mut bridges = Vec::new();
    for (n, (conn, name)) in conns.iter().enumerate() {
        let mut b = base.bridge(label, conn, name, n)?;
        b.exclusive = several;
        bridges.push(b);
    }
    for &i in mine {
        let (k, spec) = (key(i), &listeners[i]);
        // A listener left out (`nats = false`) keeps an empty route in the
        // first bridge: its series show it, nothing goes through it.
        let at = *of[i].get_or_insert(0);
        let (export, import) = match k.nats {
            Some(false) => (Some(Vec::new()), Some(Vec::new())),
            _ => (k.export.clone(), k.import.clone()),
        };
        let id = u16::try_from(i)
            .ok()
            .filter(|&i| i != ListenerId::OUTBOUND.0);
        let Some(id) = id else {
            bail!("listener `{spec}`: a bridge takes at most 65535 listeners; remove some");
        };
        bridges[at]
            .add_listener(
                ListenerId(id),
                &spec.to_string(),
                export.as_deref(),
                import.as_deref(),
            )
            .map_err(|e| anyhow::anyhow!("listener `{spec}`: {e}"))?;
    }
    let default = if several {
        conns.iter().position(|(_, name)| name == DEFAULT_NAME)
    } else {
        Some(0)
    };
    let bridges = bridges.into_iter().map(Arc::new).collect();
    Ok(Some(BridgeSet::new(bridges, &of, default)))
}

/// Tells the notifier the bridges' state changes and loss bursts, then
/// the settings with it.
pub fn with_notifier(setup: &NatsSetup, notify: Arc<dyn Fn(String) + Send + Sync>) -> NatsSetup {
    let told = |set: &Option<Arc<BridgeSet>>| {
        set.as_ref().map(|set| {
            let mut set = (**set).clone();
            for b in set.bridges_mut() {
                let mut s = (**b).clone();
                s.notify = Some(notify.clone());
                *b = Arc::new(s);
            }
            Arc::new(set)
        })
    };
    NatsSetup {
        relay: told(&setup.relay),
        mqtt: told(&setup.mqtt),
        base: setup.base.clone(),
    }
}

/// The bridges' `/metrics` series (Prometheus text, appended to `o`):
/// per bridge (labels `plugin` and `bridge`: `default`, or the spec of the
/// first listener that uses it), then per listener for the bridges with
/// routes. `bridges` holds every bridge of each plugin.
pub fn render_metrics(bridges: &[(&str, &BridgeSettings)], o: &mut String) {
    let stats: Vec<(&str, &str, &BridgeStats)> = bridges
        .iter()
        .map(|(p, b)| (*p, b.name.as_str(), &*b.stats))
        .collect();
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

/// The per-bridge series.
fn render_plugin_metrics(bridges: &[(&str, &str, &BridgeStats)], o: &mut String) {
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
        for (plugin, bridge, s) in bridges {
            let _ = writeln!(
                o,
                "{name}{{plugin=\"{plugin}\",bridge=\"{bridge}\"}} {}",
                get(f(s))
            );
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
        for (plugin, bridge, s) in bridges {
            let _ = writeln!(
                o,
                "{name}{{plugin=\"{plugin}\",bridge=\"{bridge}\"}} {}",
                get(f(s))
            );
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
    for (plugin, bridge, s) in bridges {
        for (reason, f) in reasons {
            let _ = writeln!(
                o,
                "{name}{{plugin=\"{plugin}\",bridge=\"{bridge}\",reason=\"{reason}\"}} {}",
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
        let r = s.relay.unwrap().bridges()[0].clone();
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
        let r = parse(&[], file).unwrap().relay.unwrap().bridges()[0].clone();
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
        .unwrap()
        .bridges()[0]
            .clone();
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
        let r = s.nats.relay.unwrap().bridges()[0].clone();
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
        assert!(!s.nats.mqtt.unwrap().bridges()[0].clone().has_routes());
    }

    const TWO_MQTT: &str = "nats = \"nats://127.0.0.1:4222\"\nnats_export = [\"out/#\"]\nlisten = [\"relay@tcp:127.0.0.1:9000\"]\n[[listener]]\nspec = \"mqtt@tcp:127.0.0.1:1883\"\nnats_export = [\"a/#\"]\nnats_import = [\"x/+\"]\n[[listener]]\nspec = \"mqtt@tcp:127.0.0.1:1884\"\nnats = false\n[[listener]]\nspec = \"mqtt@tcp:127.0.0.1:1885\"\n";

    #[test]
    fn listener_tables_narrow_the_mqtt_bridge_per_listener() {
        let s = settings(TWO_MQTT).unwrap();
        let m = s.nats.mqtt.unwrap().bridges()[0].clone();
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
        let r = s.nats.relay.unwrap().bridges()[0].clone();
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
             nats_import is set: remove one or the other"
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
             nats_export is set: remove one or the other"
        );
        assert!(e(&format!(
            "{bridged}spec = \"relay@tcp:127.0.0.1:1\"\nnats_export = [\"a/#/b\"]\n"
        ))
        .starts_with("listener `relay@tcp:127.0.0.1:1`: nats_export: `a/#/b`"));
        assert!(e(&format!(
            "{bridged}spec = \"relay@tcp:127.0.0.1:1\"\nnats_import = [\"a/+/c\"]\n[[listener]]\nspec = \"relay@tcp:127.0.0.1:2\"\nnats_import = [\"a/b/+\"]\n"
        ))
        .starts_with("listener `relay@tcp:127.0.0.1:2`: nats_import: `a/+/c` of listener `relay@tcp:127.0.0.1:1` and `a/b/+` of listener `relay@tcp:127.0.0.1:2` overlap"));
        // Keys of every bridge of a plugin are refused in a table, naming
        // the fix.
        let msg = e(&format!(
            "{bridged}spec = \"relay@tcp:127.0.0.1:1\"\nnats_subject_prefix = \"x\"\n"
        ));
        assert!(msg.contains("unknown field `nats_subject_prefix`"), "{msg}");
        assert!(
            msg.ends_with(
                "nats_subject_prefix applies to every NATS bridge of a plugin: set it at the \
                 top level, outside [[listener]]; a listener table takes only nats, \
                 nats_export, nats_import, a login (nats_user and nats_password_file, \
                 nats_token_file or nats_nkey_seed_file) and nats_buffer_messages and \
                 nats_buffer_bytes"
            ),
            "{msg}"
        );
    }

    /// A file under the temp directory holding `text`, removed on drop.
    struct Secret(std::path::PathBuf);

    impl Secret {
        fn new(name: &str, text: &str) -> Secret {
            let dir =
                std::env::temp_dir().join(format!("ringport-nats-conns-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            Secret(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for Secret {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn listeners_with_equal_logins_share_a_bridge_and_others_use_the_default() {
        let pa = Secret::new("group-pa", "secret-a\n");
        let file = format!(
            "nats = \"nats://127.0.0.1:4222\"\nnats_buffer_messages = 100\nlisten = [\"echo@tcp:127.0.0.1:9000\"]\n\
             [[listener]]\nspec = \"relay@tcp:127.0.0.1:9001\"\nnats_user = \"a\"\nnats_password_file = \"{pa}\"\n\
             [[listener]]\nspec = \"relay@tcp:127.0.0.1:9002\"\n\
             [[listener]]\nspec = \"relay@udp:127.0.0.1:9003\"\nnats_user = \"a\"\nnats_password_file = \"{pa}\"\nnats_import = [\"x/#\"]\n\
             [[listener]]\nspec = \"relay@tcp:127.0.0.1:9004\"\nnats_buffer_messages = 7\n\
             [[listener]]\nspec = \"relay@tcp:127.0.0.1:9005\"\nnats_buffer_messages = 100\n",
            pa = pa.path()
        );
        let s = settings(&file).unwrap();
        let set = s.nats.relay.clone().unwrap();
        let names: Vec<&str> = set.bridges().iter().map(|b| b.name.as_str()).collect();
        // The top-level bridge first (listeners 2 and 5: equal settings,
        // even when set again), then one per distinct setting.
        assert_eq!(
            names,
            [
                "default",
                "relay@tcp:127.0.0.1:9001",
                "relay@tcp:127.0.0.1:9004"
            ]
        );
        let of = |i: u16| set.bridge_of(ListenerId(i));
        assert_eq!(
            [of(0), of(1), of(2), of(3), of(4), of(5)],
            [None, Some(1), Some(0), Some(1), Some(2), Some(0)]
        );
        // Outbound streams and the plugin's own publishes: the default.
        assert_eq!(of(ListenerId::OUTBOUND.0), Some(0));
        let [d, a, seven] = set.bridges() else {
            panic!("three bridges")
        };
        assert_eq!(d.nats.auth, Auth::None);
        assert_eq!(d.nats.buffer_messages, 100);
        assert_eq!(
            a.nats.auth,
            Auth::UserPassword {
                user: "a".into(),
                password: "secret-a".into()
            }
        );
        assert_eq!(a.nats.buffer_messages, 100);
        assert_eq!(seven.nats.auth, Auth::None);
        assert_eq!(seven.nats.buffer_messages, 7);
        assert!(d.exclusive && a.exclusive && seven.exclusive);
        assert_eq!(
            d.nats.name.as_deref(),
            Some(&*format!("ringport-{}", d.instance_id))
        );
        assert_eq!(
            a.nats.name.as_deref(),
            Some(&*format!("ringport-{}-1", d.instance_id))
        );
        assert_eq!(a.instance_id, d.instance_id);
        // Each bridge routes its own listeners and subscribes for them only;
        // listener 3's `x/#` overlaps the default's `#` across bridges.
        let routes = |b: &BridgeSettings| b.routes().map(|(id, _)| id.0).collect::<Vec<_>>();
        assert_eq!(routes(d), [2, 5]);
        assert_eq!(routes(a), [1, 3]);
        assert_eq!(routes(seven), [4]);
        assert_eq!(d.subscriptions, [">"]);
        assert_eq!(a.subscriptions, [">"]);
        // An import of bridge 1 reaches listeners 1 and 3 only.
        let scope = a.import_scope("x.y").unwrap();
        let admitted: Vec<u16> = (0..7).filter(|&i| scope.admits(ListenerId(i))).collect();
        assert_eq!(admitted, [1, 3]);
        assert!(!scope.admits(ListenerId::OUTBOUND));
        let scope = d.import_scope("x.y").unwrap();
        let admitted: Vec<u16> = (0..7).filter(|&i| scope.admits(ListenerId(i))).collect();
        assert_eq!(admitted, [2, 5]);
        let mut o = String::new();
        let all: Vec<(&str, &BridgeSettings)> =
            set.bridges().iter().map(|b| ("relay", &**b)).collect();
        render_metrics(&all, &mut o);
        for b in [
            "default",
            "relay@tcp:127.0.0.1:9001",
            "relay@tcp:127.0.0.1:9004",
        ] {
            assert!(
                o.contains(&format!(
                    "\nringport_nats_bridge_connected{{plugin=\"relay\",bridge=\"{b}\"}} 0\n"
                )),
                "{o}"
            );
        }
        assert_eq!(o.matches("ringport_nats_bridge_dropped_total{").count(), 18);
        let banner = s.nats.describe("relay").unwrap();
        let lines: Vec<&str> = banner.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "nats bridge relay `default`: no login, buffer 100 messages / 8388608 bytes, \
                 for relay@tcp:127.0.0.1:9002, relay@tcp:127.0.0.1:9005",
                "nats bridge relay `relay@tcp:127.0.0.1:9001`: user `a`, buffer 100 messages / \
                 8388608 bytes, for relay@tcp:127.0.0.1:9001, relay@udp:127.0.0.1:9003",
                "nats bridge relay `relay@tcp:127.0.0.1:9004`: no login, buffer 7 messages / \
                 8388608 bytes, for relay@tcp:127.0.0.1:9004",
            ]
        );
    }

    #[test]
    fn a_single_bridge_stays_plugin_wide_and_all_overridden_has_no_default() {
        // No per-listener connection keys: one bridge, not exclusive, the
        // default for every listener.
        let s = settings(TWO_RELAYS).unwrap();
        let set = s.nats.relay.unwrap();
        assert_eq!(set.bridges().len(), 1);
        assert_eq!(set.bridges()[0].name, "default");
        assert!(!set.bridges()[0].exclusive);
        assert_eq!(set.bridge_of(ListenerId::OUTBOUND), Some(0));
        // Every mqtt listener with the same own buffer: one bridge, named
        // after the first; the mqtt plugin's bridge gets routes.
        let file = "nats = \"nats://127.0.0.1:4222\"\n[[listener]]\nspec = \"mqtt@tcp:127.0.0.1:1\"\nnats_buffer_bytes = 4096\n[[listener]]\nspec = \"mqtt@tcp:127.0.0.1:2\"\nnats_buffer_bytes = 4096\n";
        let s = settings(file).unwrap();
        let set = s.nats.mqtt.unwrap();
        assert_eq!(set.bridges().len(), 1);
        let b = &set.bridges()[0];
        assert_eq!(b.name, "mqtt@tcp:127.0.0.1:1");
        assert_eq!(b.nats.buffer_bytes, 4096);
        assert!(!b.exclusive);
        assert_eq!(b.routes().count(), 2);
        // Two mqtt listeners with different buffers and no default user.
        let file = "nats = \"nats://127.0.0.1:4222\"\n[[listener]]\nspec = \"mqtt@tcp:127.0.0.1:1\"\nnats_buffer_bytes = 4096\n[[listener]]\nspec = \"mqtt@tcp:127.0.0.1:2\"\nnats_buffer_bytes = 8192\n";
        let set = settings(file).unwrap().nats.mqtt.unwrap();
        assert_eq!(set.bridges().len(), 2);
        assert_eq!(set.bridge_of(ListenerId(0)), Some(0));
        assert_eq!(set.bridge_of(ListenerId(1)), Some(1));
        assert_eq!(set.bridge_of(ListenerId::OUTBOUND), None);
        assert_eq!(
            set.bridges()[1]
                .nats
                .name
                .as_deref()
                .unwrap()
                .rsplit('-')
                .next(),
            Some("1")
        );
    }

    #[test]
    fn bad_listener_logins_and_buffers_name_the_listener_the_key_and_the_fix() {
        let e = |file: &str| format!("{:#}", settings(file).unwrap_err());
        let bridged = "nats = \"nats://127.0.0.1:4222\"\n[[listener]]\n";
        let pa = Secret::new("bad-pa", "pw\n");
        assert_eq!(
            e(&format!(
                "{bridged}spec = \"relay@tcp:127.0.0.1:1\"\nnats_password_file = \"{}\"\n",
                pa.path()
            )),
            "listener `relay@tcp:127.0.0.1:1`: nats_password_file needs nats_user in the same \
             [[listener]] table: add nats_user = \"USER\""
        );
        assert_eq!(
            e(&format!(
                "{bridged}spec = \"mqtt@tcp:127.0.0.1:1\"\nnats_user = \"a\"\n"
            )),
            "listener `mqtt@tcp:127.0.0.1:1`: nats_user needs nats_password_file in the same \
             [[listener]] table: add nats_password_file = \"FILE\""
        );
        assert_eq!(
            e(&format!(
                "{bridged}spec = \"relay@tcp:127.0.0.1:1\"\nnats_user = \"a\"\nnats_password_file = \"{p}\"\nnats_token_file = \"{p}\"\n",
                p = pa.path()
            )),
            "listener `relay@tcp:127.0.0.1:1`: nats_user, nats_token_file and \
             nats_nkey_seed_file are alternatives: keep one login"
        );
        assert_eq!(
            e(&format!(
                "{bridged}spec = \"relay@tcp:127.0.0.1:1\"\nnats_buffer_messages = 0\n"
            )),
            "listener `relay@tcp:127.0.0.1:1`: nats_buffer_messages = 0 is out of range: use 1 \
             to 10000000"
        );
        assert_eq!(
            e(&format!(
                "{bridged}spec = \"relay@tcp:127.0.0.1:1\"\nnats_buffer_bytes = 10\n"
            )),
            "listener `relay@tcp:127.0.0.1:1`: nats_buffer_bytes = 10 is out of range: use 1024 \
             to 1073741824"
        );
        assert!(e(&format!(
            "{bridged}spec = \"relay@tcp:127.0.0.1:1\"\nnats_token_file = \"/nonexistent/t\"\n"
        ))
        .starts_with(
            "listener `relay@tcp:127.0.0.1:1`: nats_token_file: cannot read /nonexistent/t"
        ));
        assert_eq!(
            e(&format!("{bridged}spec = \"relay@tcp:127.0.0.1:1\"\nnats = false\nnats_buffer_bytes = 4096\n")),
            "listener `relay@tcp:127.0.0.1:1`: nats = false leaves it out of the bridge, yet \
             nats_buffer_bytes is set: remove one or the other"
        );
        assert_eq!(
            e(&format!(
                "{bridged}spec = \"echo@tcp:127.0.0.1:7\"\nnats_user = \"a\"\n"
            )),
            "listener `echo@tcp:127.0.0.1:7`: nats_user narrows the bridge of relay and mqtt \
             listeners only (echo listeners are not bridged): remove it"
        );
        assert_eq!(
            e("[[listener]]\nspec = \"relay@tcp:127.0.0.1:1\"\nnats_buffer_bytes = 4096\n"),
            "listener `relay@tcp:127.0.0.1:1`: nats_buffer_bytes needs nats (the servers to \
             bridge to): add --nats nats://HOST:PORT or a top-level nats key"
        );
    }

    #[test]
    fn per_listener_series_carry_the_plugin_and_the_listener() {
        use std::sync::atomic::Ordering::Relaxed;
        let s = settings(TWO_RELAYS).unwrap();
        let r = s.nats.relay.unwrap().bridges()[0].clone();
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
        assert!(o.contains(
            "\nringport_nats_bridge_exported_total{plugin=\"relay\",bridge=\"default\"} 5\n"
        ));
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
            .unwrap()
            .bridges()[0]
            .clone();
        let s = &r.stats;
        s.connected.store(1, std::sync::atomic::Ordering::Relaxed);
        s.buffered_messages
            .store(3, std::sync::atomic::Ordering::Relaxed);
        s.dropped_loop
            .store(2, std::sync::atomic::Ordering::Relaxed);
        let mut o = String::new();
        render_metrics(&[("relay", &r)], &mut o);
        assert!(
            o.contains("\nringport_nats_bridge_connected{plugin=\"relay\",bridge=\"default\"} 1\n")
        );
        assert!(o.contains(
            "\nringport_nats_bridge_buffered_messages{plugin=\"relay\",bridge=\"default\"} 3\n"
        ));
        assert!(o.contains(
            "\nringport_nats_bridge_dropped_total{plugin=\"relay\",bridge=\"default\",reason=\"loop\"} 2\n"
        ));
        assert!(o.contains(
            "\nringport_nats_bridge_dropped_total{plugin=\"relay\",bridge=\"default\",reason=\"buffer_full\"} 0\n"
        ));
        assert_eq!(o.matches("# TYPE").count(), 8);
    }
}
