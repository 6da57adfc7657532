//! The `mqtt` plugin in the binary: its `--mqtt-*` flags (config keys
//! `mqtt_*`),
//! the password and ACL files, the handshake-log lines of its events, its
//! `/metrics` series and `/status` entries, and persistence to a file.
//!
//! Every `mqtt` listener of one server is one broker (one topic space, one
//! set of sessions), as Mosquitto's listeners are. Its counters of what
//! clients do are per listener; what it holds for all listeners at once
//! (sessions, retained messages) is broker-wide (see [`render_metrics`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use clap::Args;
use ringport_engine::log::{EventLine, LogWriter, Value};
use ringport_protocols::mqtt::acl::Acl;
use ringport_protocols::mqtt::auth::{Authenticator, CertificateIdentity};
use ringport_protocols::mqtt::broker::{
    ClientDropsEvent, ConnectEvent, DeniedEvent, ListenerTotals, MqttConfig, MqttDrop, MqttEvents,
    MqttFactory, MqttStats, NO_LISTENER,
};
use ringport_protocols::mqtt::codec::Version;
use ringport_protocols::mqtt::persist::{decode_snapshot, encode_snapshot};

use crate::config::FileConfig;
use crate::mqtt_auth::{write_atomically, PasswordFile};

/// The `serve` flags of the `mqtt` plugin.
#[derive(Debug, Clone, Default, Args)]
pub struct MqttArgs {
    /// `mqtt` listeners: a password file in Mosquitto's format (make one
    /// with `ringport mqtt passwd`, or use `mosquitto_passwd`'s); clients
    /// then log in with a username and password. Default: none.
    #[arg(long, value_name = "FILE")]
    pub mqtt_password_file: Option<PathBuf>,

    /// `mqtt` listeners: who may publish and subscribe to what, in
    /// Mosquitto's acl_file format (`user`, `topic`, `pattern` with %c and
    /// %u). Default: everything allowed to every client let in.
    #[arg(long, value_name = "FILE")]
    pub mqtt_acl_file: Option<PathBuf>,

    /// `mqtt` listeners: let clients in without a password or a
    /// certificate identity. Default: off, as in Mosquitto 2.0, so with no
    /// --mqtt-password-file and no --mqtt-cert-identity this is needed to
    /// serve anyone.
    #[arg(long)]
    pub mqtt_allow_anonymous: bool,

    /// `mqtt` listeners on `tls` with a client CA: a client certificate's
    /// identity (its first SAN matching PATTERN, `*` at the end for a
    /// prefix; repeatable) logs the client in, as the ACL's user.
    #[arg(long, value_name = "PATTERN")]
    pub mqtt_cert_identity: Vec<String>,

    /// `mqtt` listeners: keep retained messages and persistent sessions in
    /// FILE, loaded at start, saved every --mqtt-autosave-interval and at a
    /// graceful stop (written to a new file, then renamed). Default: off.
    #[arg(long, value_name = "FILE")]
    pub mqtt_persistence: Option<PathBuf>,

    /// How often the persistence file is saved (1 to 86400).
    /// [default: 1800]
    #[arg(long, value_name = "SECS")]
    pub mqtt_autosave_interval: Option<f64>,

    /// Messages queued per client (offline or slow) before QoS 0 ones are
    /// dropped, then QoS 1/2 ones (1 to 10000000). [default: 1000]
    #[arg(long, value_name = "N")]
    pub mqtt_max_queued_messages: Option<u64>,

    /// QoS 1/2 messages in flight to and from each client (Receive
    /// Maximum, 1 to 65535). [default: 32]
    #[arg(long, value_name = "N")]
    pub mqtt_max_inflight: Option<u64>,

    /// Largest MQTT packet accepted (16 to 268435460). [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub mqtt_max_packet_size: Option<u64>,

    /// Retained messages held (0 to 10000000). [default: 10000]
    #[arg(long, value_name = "N")]
    pub mqtt_max_retained: Option<u64>,

    /// Subscriptions per client (1 to 1000000). [default: 100]
    #[arg(long, value_name = "N")]
    pub mqtt_max_subscriptions: Option<u64>,
}

/// The broker's settings, resolved from flags and file.
#[derive(Clone)]
pub struct MqttSetup {
    /// The plugin's configuration (events are added at start).
    pub config: MqttConfig,
    /// The persistence file.
    pub persistence: Option<PathBuf>,
    /// How often it is saved.
    pub autosave: Duration,
    /// What `check-config` and the start-up lines say about logins.
    pub login: String,
}

impl std::fmt::Debug for MqttSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSetup")
            .field("login", &self.login)
            .field("persistence", &self.persistence)
            .field("autosave", &self.autosave)
            .finish()
    }
}

/// `key`'s value from the flag, else the file, else `default`, checked
/// against its range in [`crate::config::RANGES`].
fn count(key: &str, flag: Option<u64>, file: Option<u64>, default: u64) -> Result<u64> {
    let v = flag.or(file).unwrap_or(default);
    crate::config::in_range(key, v as f64)?;
    Ok(v)
}

impl MqttSetup {
    /// Flags over the `[mqtt]` table over the defaults; loads the password
    /// and ACL files, so that a bad one stops the server before it binds.
    ///
    /// # Errors
    ///
    /// A value out of range, or a file that does not load (the error
    /// names the line and the fix).
    pub fn resolve(args: &MqttArgs, f: &FileConfig) -> Result<MqttSetup> {
        let d = MqttConfig::default();
        let mut c = MqttConfig {
            allow_anonymous: args.mqtt_allow_anonymous || f.mqtt_allow_anonymous.unwrap_or(false),
            ..d.clone()
        };
        c.max_queued_messages = count(
            "mqtt_max_queued_messages",
            args.mqtt_max_queued_messages,
            f.mqtt_max_queued_messages,
            d.max_queued_messages as u64,
        )? as usize;
        c.receive_maximum = count(
            "mqtt_max_inflight",
            args.mqtt_max_inflight,
            f.mqtt_max_inflight,
            u64::from(d.receive_maximum),
        )? as u16;
        c.max_packet_size = count(
            "mqtt_max_packet_size",
            args.mqtt_max_packet_size,
            f.mqtt_max_packet_size,
            u64::from(d.max_packet_size),
        )? as u32;
        c.max_retained = count(
            "mqtt_max_retained",
            args.mqtt_max_retained,
            f.mqtt_max_retained,
            d.max_retained as u64,
        )? as usize;
        c.max_subscriptions_per_client = count(
            "mqtt_max_subscriptions",
            args.mqtt_max_subscriptions,
            f.mqtt_max_subscriptions,
            d.max_subscriptions_per_client as u64,
        )? as usize;
        let autosave = args
            .mqtt_autosave_interval
            .or(f.mqtt_autosave_interval)
            .unwrap_or(1800.0);
        crate::config::in_range("mqtt_autosave_interval", autosave)?;
        let password_file = args
            .mqtt_password_file
            .clone()
            .or(f.mqtt_password_file.clone());
        let identities = if args.mqtt_cert_identity.is_empty() {
            f.mqtt_cert_identity.clone().unwrap_or_default()
        } else {
            args.mqtt_cert_identity.clone()
        };
        let mut login = Vec::new();
        let passwords = match &password_file {
            Some(p) => {
                let pf = PasswordFile::load(p)
                    .with_context(|| format!("mqtt password file {}", p.display()))?;
                login.push(format!("{} user(s) of {}", pf.len(), p.display()));
                Some(pf)
            }
            None => None,
        };
        let certs = (!identities.is_empty()).then(|| {
            login.push(format!("certificate identities {}", identities.join(", ")));
            CertificateIdentity::new(identities)
        });
        if c.allow_anonymous {
            login.push("anonymous clients".to_owned());
        }
        c.authenticator = match (passwords, certs) {
            (None, None) => None,
            (Some(p), None) => Some(Arc::new(p.with_anonymous(c.allow_anonymous))),
            (None, Some(id)) => Some(Arc::new(id)),
            (Some(p), Some(id)) => Some(Arc::new(Either {
                passwords: p.with_anonymous(c.allow_anonymous),
                certs: id,
            })),
        };
        if let Some(p) = args.mqtt_acl_file.clone().or(f.mqtt_acl_file.clone()) {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("reading the mqtt ACL file {}", p.display()))?;
            let acl = Acl::parse(&text)
                .map_err(|e| anyhow::anyhow!("mqtt ACL file {}: {e}", p.display()))?;
            c.acl = Some(Arc::new(acl));
        }
        let persistence = args.mqtt_persistence.clone().or(f.mqtt_persistence.clone());
        if persistence.is_some() {
            c.snapshot_interval = Some(Duration::from_secs_f64(autosave));
        }
        Ok(MqttSetup {
            config: c,
            persistence,
            autosave: Duration::from_secs_f64(autosave),
            login: if login.is_empty() {
                "nobody: give --mqtt-password-file, --mqtt-cert-identity or \
                 --mqtt-allow-anonymous"
                    .to_owned()
            } else {
                login.join(", ")
            },
        })
    }

    /// The broker's factory, its events going to `log`; restores the
    /// persistence file when there is one.
    ///
    /// # Errors
    ///
    /// A persistence file that exists but does not load whole.
    pub fn factory(&self, log: Option<Arc<LogWriter>>) -> Result<Arc<MqttFactory>> {
        let mut config = self.config.clone();
        if let Some(log) = log {
            config.events = Some(Arc::new(LogEvents { log }));
        }
        let factory = Arc::new(MqttFactory::new(config));
        if let Some(path) = &self.persistence {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let snap = decode_snapshot(&bytes).map_err(|e| {
                        anyhow::anyhow!(
                            "mqtt persistence file {} is not loaded: {e}; move it away to \
                             start without it",
                            path.display()
                        )
                    })?;
                    factory.restore(snap, unix_now());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("reading the mqtt persistence file {}", path.display())
                    })
                }
            }
        }
        Ok(factory)
    }
}

/// Passwords for clients that give a username, certificates for the rest.
struct Either {
    passwords: PasswordFile,
    certs: CertificateIdentity,
}

impl Authenticator for Either {
    fn authenticate(
        &self,
        req: &ringport_protocols::mqtt::auth::AuthRequest<'_>,
    ) -> ringport_protocols::mqtt::auth::AuthOutcome {
        if req.username.is_some() || req.tls_identities.is_empty() {
            self.passwords.authenticate(req)
        } else {
            self.certs.authenticate(req)
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The broker's events as handshake-log lines.
struct LogEvents {
    log: Arc<LogWriter>,
}

fn opt(v: Option<&str>) -> Value {
    Value::Str(v.unwrap_or("").to_owned())
}

impl MqttEvents for LogEvents {
    fn connect(&self, ev: &ConnectEvent<'_>) {
        self.log.event(EventLine {
            event: "mqtt_connect",
            fields: vec![
                ("shard", Value::Uint(ev.shard as u64)),
                ("peer", Value::Str(ev.peer.to_string())),
                ("client_id", Value::Str(ev.client_id.to_owned())),
                ("identity", opt(ev.identity)),
                ("username", opt(ev.username)),
                (
                    "protocol",
                    Value::Str(
                        match ev.version {
                            Version::V311 => "3.1.1",
                            Version::V5 => "5.0",
                        }
                        .to_owned(),
                    ),
                ),
                ("session_present", Value::Bool(ev.session_present)),
                ("result", Value::Str(ev.result.to_owned())),
            ],
        });
    }

    fn denied(&self, ev: &DeniedEvent<'_>) {
        self.log.event(EventLine {
            event: "mqtt_denied",
            fields: vec![
                ("shard", Value::Uint(ev.shard as u64)),
                ("peer", Value::Str(ev.peer.to_string())),
                ("client_id", Value::Str(ev.client_id.to_owned())),
                ("user", opt(ev.user)),
                ("action", Value::Str(ev.action.to_owned())),
                ("topic", Value::Str(ev.topic.to_owned())),
            ],
        });
    }

    fn client_drops(&self, ev: &ClientDropsEvent<'_>) {
        self.log.event(EventLine {
            event: "mqtt_client_drops",
            fields: vec![
                ("shard", Value::Uint(ev.shard as u64)),
                ("client_id", Value::Str(ev.client_id.to_owned())),
                ("queue_full_qos0", Value::Uint(ev.qos0)),
                ("queue_full_qos12", Value::Uint(ev.qos12)),
                ("other", Value::Uint(ev.other)),
            ],
        });
    }
}

/// The label value of what no listener served (see [`NO_LISTENER`]).
pub const NO_LISTENER_LABEL: &str = "none";

/// The `listener` label values of the broker's series: each `mqtt`
/// listener's spec (`plan index`, `name`), then [`NO_LISTENER_LABEL`].
fn slots(listeners: &[(u16, String)]) -> Vec<(u16, &str)> {
    listeners
        .iter()
        .map(|(i, n)| (*i, n.as_str()))
        .chain(std::iter::once((NO_LISTENER, NO_LISTENER_LABEL)))
        .collect()
}

/// Appends one sample, its labels escaped as the rest of `/metrics` does.
fn sample(o: &mut String, name: &str, labels: &[(&str, &str)], v: u64) {
    o.push_str(name);
    o.push('{');
    for (i, (k, val)) in labels.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let _ = write!(o, "{k}=\"{}\"", crate::metrics::label(val));
    }
    let _ = writeln!(o, "}} {v}");
}

/// The broker's `/metrics` series (Prometheus text, appended to `o`).
///
/// What clients do is per listener (label `listener`, the listener's spec
/// as in the rest of `/metrics`; `listener="none"` for what no listener
/// served: drops of messages between shards, a full retained store,
/// sessions restored from disk whose client has not come back). What the
/// broker holds for all its listeners at once has no label: sessions
/// (a session outlives its connection and may come back through another
/// listener), retained messages (one store, a replica on every shard) and
/// messages waiting for the mesh. `listeners`: each `mqtt` listener's
/// index in the engine's plan and its spec.
pub fn render_metrics(stats: &MqttStats, listeners: &[(u16, String)], o: &mut String) {
    let per: Vec<(&str, ListenerTotals)> = slots(listeners)
        .into_iter()
        .map(|(i, n)| (n, stats.listener(i)))
        .collect();
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        o,
        "ringport_mqtt_clients_connected",
        "gauge",
        "MQTT clients connected now, per listener.",
    );
    for (n, t) in &per {
        sample(
            o,
            "ringport_mqtt_clients_connected",
            &[("listener", n)],
            t.connected,
        );
    }
    family(
        o,
        "ringport_mqtt_subscriptions",
        "gauge",
        "Subscriptions held, per listener the session's client last came through.",
    );
    for (n, t) in &per {
        sample(
            o,
            "ringport_mqtt_subscriptions",
            &[("listener", n)],
            t.subscriptions,
        );
    }
    family(
        o,
        "ringport_mqtt_connects_total",
        "counter",
        "CONNECTs answered, per listener and result.",
    );
    for (n, t) in &per {
        sample(
            o,
            "ringport_mqtt_connects_total",
            &[("listener", n), ("result", "accepted")],
            t.connects,
        );
        sample(
            o,
            "ringport_mqtt_connects_total",
            &[("listener", n), ("result", "refused")],
            t.connects_refused,
        );
    }
    family(
        o,
        "ringport_mqtt_messages_total",
        "counter",
        "PUBLISH packets received from and sent to clients, per listener, direction and QoS.",
    );
    const QOS: [&str; 3] = ["0", "1", "2"];
    for (n, t) in &per {
        for (q, qos) in QOS.iter().enumerate() {
            sample(
                o,
                "ringport_mqtt_messages_total",
                &[("listener", n), ("direction", "in"), ("qos", qos)],
                t.messages_in[q],
            );
            sample(
                o,
                "ringport_mqtt_messages_total",
                &[("listener", n), ("direction", "out"), ("qos", qos)],
                t.messages_out[q],
            );
        }
    }
    family(
        o,
        "ringport_mqtt_drops_total",
        "counter",
        "Messages, packets and connections the broker dropped, per listener and reason.",
    );
    for (n, t) in &per {
        for &d in MqttDrop::ALL {
            sample(
                o,
                "ringport_mqtt_drops_total",
                &[("listener", n), ("reason", d.as_str())],
                t.drops(d),
            );
        }
    }
    let mut gauge = |name: &str, help: &str, v: u64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        "ringport_mqtt_sessions",
        "MQTT sessions held (connected or not), all listeners.",
        stats.total(|s| s.sessions()),
    );
    gauge(
        "ringport_mqtt_retained_messages",
        "Retained messages held, all listeners (each shard keeps a replica).",
        stats.retained(),
    );
    gauge(
        "ringport_mqtt_mesh_waiting",
        "QoS 1/2 messages waiting for room in a cross-shard ring.",
        stats.total(|s| s.mesh_waiting()),
    );
}

/// The broker's `/status` entry: per listener (as in `/metrics`), the
/// broker-wide gauges, and the clients (those with drops first).
pub fn status_json(stats: &MqttStats, listeners: &[(u16, String)]) -> serde_json::Value {
    let per: Vec<serde_json::Value> = slots(listeners)
        .into_iter()
        .map(|(i, n)| {
            let t = stats.listener(i);
            let drops: serde_json::Map<String, serde_json::Value> = MqttDrop::ALL
                .iter()
                .filter(|d| t.drops(**d) > 0)
                .map(|d| (d.as_str().to_owned(), t.drops(*d).into()))
                .collect();
            serde_json::json!({
                "listener": n,
                "clients_connected": t.connected,
                "subscriptions": t.subscriptions,
                "connects_accepted": t.connects,
                "connects_refused": t.connects_refused,
                "messages_in": t.messages_in,
                "messages_out": t.messages_out,
                "drops": drops,
            })
        })
        .collect();
    let clients: Vec<serde_json::Value> = stats
        .status()
        .into_iter()
        .map(|c| {
            serde_json::json!({
                "client_id": &*c.client_id,
                "shard": c.shard,
                "connected": c.connected,
                "queued": c.queued,
                "inflight": c.inflight,
                "subscriptions": c.subscriptions,
                "dropped_qos0": c.dropped_qos0,
                "dropped_qos12": c.dropped_qos12,
                "dropped_other": c.dropped_other,
            })
        })
        .collect();
    serde_json::json!({
        "listeners": per,
        "sessions": stats.total(|s| s.sessions()),
        "retained": stats.retained(),
        "clients": clients,
    })
}

/// Saves the broker to its persistence file every interval, and once more
/// when stopped.
pub struct Persistence {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    factory: Arc<MqttFactory>,
    path: PathBuf,
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence")
            .field("path", &self.path)
            .finish()
    }
}

impl Persistence {
    /// Starts the saver. `told` receives a line for each failed save.
    pub fn start(
        factory: Arc<MqttFactory>,
        path: PathBuf,
        every: Duration,
        told: impl Fn(String) + Send + 'static,
    ) -> Persistence {
        let (tx, rx) = mpsc::channel::<()>();
        let (f, p) = (factory.clone(), path.clone());
        let thread = std::thread::Builder::new()
            .name("mqtt-persist".into())
            .spawn(move || loop {
                match rx.recv_timeout(every) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(e) = save(&f, &p) {
                            told(format!("mqtt persistence: {e:#}"));
                        }
                    }
                    _ => return,
                }
            })
            .ok();
        Persistence {
            stop: Some(tx),
            thread,
            factory,
            path,
        }
    }

    /// Stops the saver and saves once more (after the engine stopped, so
    /// that the shards' last images are in).
    ///
    /// # Errors
    ///
    /// The final save failed.
    pub fn finish(mut self) -> Result<()> {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        save(&self.factory, &self.path)
    }
}

/// Writes the broker's snapshot to `path`, crash-safely.
///
/// # Errors
///
/// The write failed (the old file is left as it was).
pub fn save(factory: &MqttFactory, path: &Path) -> Result<()> {
    let bytes = encode_snapshot(&factory.snapshot(Instant::now(), unix_now()));
    write_atomically(path, &bytes)
        .with_context(|| format!("saving the mqtt persistence file {}", path.display()))
}
