//! The NATS bridge: one plugin instance's link to a NATS cluster, driving a
//! [`NatsClient`] over an engine outbound stream.
//!
//! A pub/sub plugin (the `relay`, the MQTT broker) owns one [`Bridge`] per
//! distinct connection settings of its listeners (usually one; see
//! [`set`](super::set)) on its designated shard (shard 0) and calls them
//! from its own `Plugin` methods: a bridge claims its stream's callbacks,
//! its timers (tokens [`TIMER_RECONNECT`], [`TIMER_CLIENT`], [`TIMER_FLUSH`],
//! with the bridge's index: [`token`]) and its connect tag
//! ([`CONNECT_TAG`]), and hands the plugin what came in from NATS
//! ([`Bridge::poll_import`]). It is sans-IO like the client: bytes, times
//! and timers go through the [`Context`].
//!
//! # Connection
//!
//! [`Bridge::handle_start`] connects to the first server of the client's
//! list ([`NatsClient::next_server`]: the configured URLs, then the servers
//! the cluster announced, round robin). A connect that fails, a stream that
//! closes, or a client that asks to reconnect (a dead server, a refused
//! login) waits for the next [`Backoff`] delay, then tries the next server.
//! A login that succeeds resets the backoff.
//!
//! # Loop prevention: `echo: false` and the origin header
//!
//! Both are used, because each covers what the other cannot:
//!
//! * `CONNECT` with `echo: false` makes the server itself skip delivering a
//!   connection's publishes to that same connection's subscriptions: the
//!   common case (every topic exported and imported) costs nothing, not even
//!   the bytes back. But it only knows connections: a message this instance
//!   exported that comes back through another path (a second bridge of the
//!   same process, such as the MQTT broker's next to the relay's; a stream
//!   or mirror that republishes; a server that does not honour `echo`) would
//!   be imported again.
//! * Every export is sent with `HPUB` and a [`ORIGIN_HEADER`] carrying this
//!   instance's id; an import whose origin is ours is dropped and counted
//!   ([`BridgeStats::dropped_loop`]), whatever path it took.
//!
//! A plugin never exports what it imported (it marks imports on its way to
//! other shards), so a message crosses NATS once per instance at most.
//!
//! # Buffer and loss
//!
//! While NATS is unreachable the client's bounded buffer
//! ([`NatsConfig::buffer_bytes`], [`NatsConfig::buffer_messages`]) holds
//! exports; one that does not fit is dropped and counted. A run of such
//! drops is a *burst*: the bridge tells its notifier once when a burst
//! begins and once when it ends (with the count), never per message.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringport_plugin::backoff::Backoff;
use ringport_plugin::{
    ConnId, ConnectFailure, ConnectRequest, Context, ListenerId, StreamInfo, WriteError,
};

use super::client::{NatsClient, State};
use super::config::{ConfigError, NatsConfig};
use super::event::{Event, Message, PublishError};
use super::headers::{Headers, ORIGIN_HEADER};
use super::routes::{check_overlap, ImportScope, ListenerRoute};
use super::subject::{MapError, SubjectMap};

/// Timer tokens and the connect tag share a range no plugin here uses
/// ("NATS" in ASCII in the high bytes); bits 8 to 23 carry the bridge's
/// index in its plugin's [`BridgeSet`](super::set::BridgeSet), the low byte
/// the kind.
const TOKEN_BASE: u64 = 0x4E41_5453_0000_0000;
/// The bits of a token that are neither the base nor the index.
const KIND_MASK: u64 = 0xFF;
/// The timer that ends a reconnect backoff (of bridge 0; [`token`]).
pub const TIMER_RECONNECT: u64 = TOKEN_BASE | 1;
/// The timer of the client's keep-alive and handshake deadline (bridge 0).
pub const TIMER_CLIENT: u64 = TOKEN_BASE | 2;
/// The timer that retries a write the engine refused (queue full; bridge 0).
pub const TIMER_FLUSH: u64 = TOKEN_BASE | 3;
/// The tag of the connect requests of bridge 0.
pub const CONNECT_TAG: u64 = TOKEN_BASE | 4;

/// `kind` (one of the constants above) for the bridge at `index`.
pub const fn token(kind: u64, index: u16) -> u64 {
    kind | (index as u64) << 8
}

/// The bridge index a token or connect tag of [`token`] carries, if it is
/// one of the bridges' at all.
pub fn token_index(token: u64) -> Option<u16> {
    let kind = token & KIND_MASK;
    let ours = token & 0xFFFF_FFFF_FF00_0000 == TOKEN_BASE
        && (TIMER_RECONNECT..=CONNECT_TAG).contains(&(TOKEN_BASE | kind));
    ours.then_some(((token >> 8) & 0xFFFF) as u16)
}

/// Largest single write to the NATS stream: a reconnect may release a whole
/// buffer (8 MiB by default) at once, and the engine caps a stream's queue.
const WRITE_CHUNK: usize = 64 * 1024;
/// How soon a refused write is tried again.
const FLUSH_RETRY: Duration = Duration::from_millis(1);

/// Is told of state changes and loss bursts (one line each, never per
/// message); tools route it to the notice writer.
pub type Notifier = Arc<dyn Fn(String) + Send + Sync>;

/// Why bridge settings are refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeError {
    /// The NATS client's settings (servers, login, buffer).
    Client(ConfigError),
    /// `subject_prefix` is not dot-separated tokens of `A-Z a-z 0-9 - _`.
    Prefix(String),
    /// A filter of `export` or `import` does not map to a subject.
    Filter {
        /// `export` or `import`.
        field: &'static str,
        /// The filter.
        filter: String,
        /// Why.
        error: MapError,
    },
    /// Two import filters overlap: NATS would deliver a message once per
    /// matching subscription, so every local subscriber would get it twice.
    Overlap(String, String),
    /// Import filters of two listeners (spec, filter) overlap without one
    /// covering the other: one subscription cannot serve both, two would
    /// deliver their common messages twice.
    ListenerOverlap {
        /// The first listener and its filter.
        a: (String, String),
        /// The second listener and its filter.
        b: (String, String),
    },
    /// The instance id is empty or not a valid header value.
    InstanceId(String),
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::Client(e) => write!(f, "nats: {e}"),
            BridgeError::Prefix(p) => write!(
                f,
                "nats_subject_prefix `{p}`: use dot-separated tokens of A-Z a-z 0-9 - _ (e.g. `ringport.site1`), or leave it empty"
            ),
            BridgeError::Filter {
                field,
                filter,
                error,
            } => write!(
                f,
                "nats_{field}: `{filter}`: {error}; write an MQTT-style filter: levels separated by `/`, `+` for one level, `#` last for the rest"
            ),
            BridgeError::Overlap(a, b) => write!(
                f,
                "nats_import: `{a}` and `{b}` overlap, so NATS would deliver their common messages twice; keep only the wider one"
            ),
            BridgeError::ListenerOverlap { a, b } => write!(
                f,
                "nats_import: `{}` of listener `{}` and `{}` of listener `{}` overlap without one covering the other, so NATS would deliver their common messages twice; make one filter cover the other, or split them so they do not overlap",
                a.1, a.0, b.1, b.0
            ),
            BridgeError::InstanceId(id) => write!(
                f,
                "nats_instance_id `{id}`: use 1 to 64 printable ASCII characters without spaces, or leave it out for a random one"
            ),
        }
    }
}

impl std::error::Error for BridgeError {}

/// [`BridgeSettings::name`] of the bridge made of the top-level settings.
pub const DEFAULT_NAME: &str = "default";

/// Settings of one bridge (one pub/sub plugin's link to NATS).
#[derive(Clone)]
pub struct BridgeSettings {
    /// The client's settings; [`NatsConfig::echo`] is always false here.
    pub nats: NatsConfig,
    /// Topic ↔ subject mapping, with its prefix.
    pub map: SubjectMap,
    /// Subjects (with `*`/`>`) whose local publishes go to NATS.
    pub export: Vec<String>,
    /// Subjects whose messages from NATS are delivered locally (to every
    /// listener without a route of its own).
    pub import: Vec<String>,
    /// The topic filters `export` came from.
    pub export_filters: Vec<String>,
    /// The topic filters `import` came from.
    pub import_filters: Vec<String>,
    /// Per-listener filters and counters, by listener id
    /// ([`BridgeSettings::add_listener`]); empty: the plugin-wide filters
    /// apply to every listener.
    pub routes: Vec<Option<ListenerRoute>>,
    /// The subjects subscribed to in NATS: `import`, or with routes the
    /// union of the routes' imports.
    pub subscriptions: Vec<String>,
    /// This process's id, sent in [`ORIGIN_HEADER`].
    pub instance_id: String,
    /// First reconnect delay; doubles up to `reconnect_max` (with jitter).
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// How long one connect may take.
    pub connect_timeout: Duration,
    /// Counters, shared with `/metrics`.
    pub stats: Arc<BridgeStats>,
    /// Where state changes and loss bursts are told.
    pub notify: Option<Notifier>,
    /// The plugin's name, in notices (`relay`, `mqtt`).
    pub label: &'static str,
    /// Which of the plugin's bridges this is: `default` for the one made of
    /// the top-level settings, else the spec of the first listener that
    /// uses it (the `bridge` label of its series, in notices).
    pub name: String,
    /// Set when the plugin has more than one bridge: this one serves only
    /// the listeners it has a route for (no plugin-wide fallback), so what
    /// it imports reaches only their subscribers.
    pub exclusive: bool,
}

impl fmt::Debug for BridgeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeSettings")
            .field("nats", &self.nats)
            .field("map", &self.map)
            .field("export", &self.export)
            .field("import", &self.import)
            .field("instance_id", &self.instance_id)
            .field("label", &self.label)
            .field("name", &self.name)
            .field("exclusive", &self.exclusive)
            .finish_non_exhaustive()
    }
}

impl BridgeSettings {
    /// Settings for `label`'s bridge: `export` and `import` are MQTT-style
    /// topic filters (`#` = everything), mapped under `prefix`. Checks the
    /// client's settings too (a bad URL or NKey seed is refused here).
    pub fn new(
        label: &'static str,
        mut nats: NatsConfig,
        prefix: &str,
        export: &[String],
        import: &[String],
        instance_id: &str,
    ) -> Result<BridgeSettings, BridgeError> {
        nats.echo = false;
        NatsClient::new(nats.clone(), Instant::now()).map_err(BridgeError::Client)?;
        let map = SubjectMap::new(prefix).map_err(|_| BridgeError::Prefix(prefix.to_owned()))?;
        let export_mapped = map_filters(&map, "export", export)?;
        let import_mapped = map_filters(&map, "import", import)?;
        check_overlap(&import_mapped)?;
        let id_ok = !instance_id.is_empty()
            && instance_id.len() <= 64
            && instance_id.bytes().all(|b| b.is_ascii_graphic());
        if !id_ok {
            return Err(BridgeError::InstanceId(instance_id.to_owned()));
        }
        let import_subjects: Vec<String> = import_mapped.into_iter().map(|(_, s)| s).collect();
        Ok(BridgeSettings {
            nats,
            map,
            export: export_mapped.into_iter().map(|(_, s)| s).collect(),
            subscriptions: import_subjects.clone(),
            import: import_subjects,
            export_filters: export.to_vec(),
            import_filters: import.to_vec(),
            routes: Vec::new(),
            instance_id: instance_id.to_owned(),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            stats: Arc::new(BridgeStats::default()),
            notify: None,
            label,
            name: DEFAULT_NAME.to_owned(),
            exclusive: false,
        })
    }

    /// Whether a local publish on `subject` is exported (by a listener
    /// without a route of its own).
    pub fn exports(&self, subject: &str) -> bool {
        self.export.iter().any(|p| covers(p, subject))
    }

    /// `filters` (of config key `nats_{field}`) as (filter, subject) pairs.
    pub(super) fn map_filters(
        &self,
        field: &'static str,
        filters: &[String],
    ) -> Result<Vec<(String, String)>, BridgeError> {
        map_filters(&self.map, field, filters)
    }
}

fn map_filters(
    map: &SubjectMap,
    field: &'static str,
    filters: &[String],
) -> Result<Vec<(String, String)>, BridgeError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for filter in filters {
        let subs = map
            .mqtt_filter_to_subjects(filter)
            .map_err(|error| BridgeError::Filter {
                field,
                filter: filter.clone(),
                error,
            })?;
        out.extend(subs.iter().map(|s| (filter.clone(), s.to_owned())));
    }
    Ok(out)
}

/// Whether subject pattern `pattern` matches every subject `other` (a
/// literal subject, or a pattern) matches: `*` one token, `>` the rest
/// (one token or more).
pub fn covers(pattern: &str, other: &str) -> bool {
    let mut p = pattern.split('.');
    let mut o = other.split('.');
    loop {
        match (p.next(), o.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// A bridge's counters. Written by the one shard that runs the bridge,
/// read by `/metrics`; levels are `connected` and `buffered_*`.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// 1 while logged in to a server, else 0.
    pub connected: AtomicU64,
    /// Exports waiting in the buffer (messages).
    pub buffered_messages: AtomicU64,
    /// Exports waiting in the buffer (encoded bytes).
    pub buffered_bytes: AtomicU64,
    /// Exports handed to the server's connection.
    pub exported: AtomicU64,
    /// Imports handed to the plugin for delivery.
    pub imported: AtomicU64,
    /// Exports dropped: buffer full.
    pub dropped_buffer_full: AtomicU64,
    /// Exports dropped: larger than the server's `max_payload`.
    pub dropped_too_large: AtomicU64,
    /// Exports lost when a connection ended while they were half sent.
    pub lost_in_flight: AtomicU64,
    /// Imports dropped: our own origin came back.
    pub dropped_loop: AtomicU64,
    /// Topics or subjects that do not map (in either direction), or
    /// imports the plugin refused (too large for it).
    pub dropped_unmappable: AtomicU64,
    /// Imports dropped by the client (bad headers, unknown subscription).
    pub dropped_bad_message: AtomicU64,
    /// Logins after the first.
    pub reconnects: AtomicU64,
    /// Logins.
    pub connects: AtomicU64,
    /// Connects that failed, and connections that ended.
    pub disconnects: AtomicU64,
    /// Bursts of buffer-full drops (each told once).
    pub loss_bursts: AtomicU64,
}

/// Adds to a counter only one thread writes.
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl BridgeStats {
    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

/// What the bridge hands its plugin from NATS: a topic for local delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The subject it came on.
    pub subject: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// One plugin's link to NATS; see the [module](self).
pub struct Bridge {
    settings: Arc<BridgeSettings>,
    /// Its index in the plugin's set: in its timer tokens and connect tag.
    index: u16,
    client: NatsClient,
    origin: Headers,
    /// The stream, connecting or open.
    conn: Option<ConnId>,
    /// A stream the bridge closed whose `handle_close` has not come yet:
    /// its last bytes are swallowed.
    closing: Option<ConnId>,
    backoff: Backoff,
    reconnect_armed: bool,
    client_timer: Option<Instant>,
    flush_armed: bool,
    /// Buffer-full drops in the current burst.
    burst: u64,
    imports: std::collections::VecDeque<Import>,
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("label", &self.settings.label)
            .field("client", &self.client)
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// A bridge that has not connected yet; `now` starts the client's clock.
    pub fn new(settings: Arc<BridgeSettings>, now: Instant) -> Result<Bridge, BridgeError> {
        let mut client =
            NatsClient::new(settings.nats.clone(), now).map_err(BridgeError::Client)?;
        for subject in &settings.subscriptions {
            client
                .subscribe(subject, None)
                .map_err(|_| BridgeError::Filter {
                    field: "import",
                    filter: subject.clone(),
                    error: MapError::BadEscape,
                })?;
        }
        let mut origin = Headers::new();
        origin
            .insert(ORIGIN_HEADER, &settings.instance_id)
            .map_err(|_| BridgeError::InstanceId(settings.instance_id.clone()))?;
        let backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
        Ok(Bridge {
            settings,
            index: 0,
            client,
            origin,
            conn: None,
            closing: None,
            backoff,
            reconnect_armed: false,
            client_timer: None,
            flush_armed: false,
            burst: 0,
            imports: std::collections::VecDeque::new(),
        })
    }

    /// The same bridge as number `index` of its plugin's set: its timer
    /// tokens and connect tag carry the index ([`token`]).
    pub fn with_index(mut self, index: u16) -> Bridge {
        self.index = index;
        self
    }

    /// Its index in its plugin's set.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The settings.
    pub fn settings(&self) -> &BridgeSettings {
        &self.settings
    }

    /// The client (its state and counters).
    pub fn client(&self) -> &NatsClient {
        &self.client
    }

    /// Whether `conn` is the bridge's stream.
    pub fn owns(&self, conn: ConnId) -> bool {
        self.conn == Some(conn) || self.closing == Some(conn)
    }

    fn notify(&self, line: String) {
        if let Some(n) = &self.settings.notify {
            let s = &self.settings;
            if s.name == DEFAULT_NAME {
                n(format!("nats bridge ({}): {line}", s.label));
            } else {
                n(format!("nats bridge ({} {}): {line}", s.label, s.name));
            }
        }
    }

    /// The plugin starts: connect.
    pub fn handle_start(&mut self, ctx: &mut dyn Context) {
        self.connect(ctx);
    }

    /// Starts a connect to the client's next server, or schedules one.
    fn connect(&mut self, ctx: &mut dyn Context) {
        let server = self.client.next_server().clone();
        let Some(addr) = server.socket_addr() else {
            // Host names are not resolved inside a shard: tools resolve the
            // configured URLs first; a learned name is skipped.
            bump(&self.settings.stats.disconnects, 1);
            self.schedule_reconnect(ctx);
            return;
        };
        let req = ConnectRequest::new(addr, token(CONNECT_TAG, self.index))
            .with_timeout(self.settings.connect_timeout);
        match ctx.connect(req) {
            Ok(conn) => self.conn = Some(conn),
            Err(e) => {
                bump(&self.settings.stats.disconnects, 1);
                self.notify(format!("cannot connect to {server}: {e}"));
                self.schedule_reconnect(ctx);
            }
        }
    }

    fn schedule_reconnect(&mut self, ctx: &mut dyn Context) {
        if !self.reconnect_armed {
            self.reconnect_armed = true;
            ctx.set_timer(
                self.backoff.next_delay(),
                token(TIMER_RECONNECT, self.index),
            );
        }
    }

    /// A stream opened; true if it is the bridge's (then the plugin is done).
    pub fn handle_connected(
        &mut self,
        ctx: &mut dyn Context,
        stream: &StreamInfo,
        tag: u64,
    ) -> bool {
        if tag != token(CONNECT_TAG, self.index) || self.conn != Some(stream.conn) {
            return false;
        }
        self.client.handle_connected(ctx.now());
        self.after(ctx);
        true
    }

    /// A connect failed; true if it was the bridge's.
    pub fn handle_connect_failed(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        tag: u64,
        failure: ConnectFailure,
    ) -> bool {
        if tag != token(CONNECT_TAG, self.index) || self.conn != Some(conn) {
            return false;
        }
        self.conn = None;
        bump(&self.settings.stats.disconnects, 1);
        if self.backoff.attempts() == 0 {
            let server = self
                .client
                .servers()
                .current()
                .map(ToString::to_string)
                .unwrap_or_default();
            self.notify(format!("connect to {server} failed: {failure}; retrying"));
        }
        self.schedule_reconnect(ctx);
        true
    }

    /// Bytes on the bridge's stream (the plugin checked [`Bridge::owns`]);
    /// returns how many were consumed.
    pub fn handle_data(&mut self, ctx: &mut dyn Context, conn: ConnId, data: &[u8]) -> usize {
        if self.conn != Some(conn) {
            return data.len();
        }
        let n = self.client.handle_input(ctx.now(), data);
        self.after(ctx);
        n
    }

    /// The bridge's stream closed (the plugin checked [`Bridge::owns`]).
    pub fn handle_close(&mut self, ctx: &mut dyn Context, conn: ConnId) {
        if self.closing == Some(conn) {
            self.closing = None;
            return;
        }
        self.conn = None;
        self.client.handle_disconnected(ctx.now());
        self.after(ctx);
    }

    /// A timer fired; true if it was one of the bridge's.
    pub fn handle_timer(&mut self, ctx: &mut dyn Context, now: Instant, timer: u64) -> bool {
        if token_index(timer) != Some(self.index) {
            return false;
        }
        match TOKEN_BASE | (timer & KIND_MASK) {
            TIMER_RECONNECT => {
                self.reconnect_armed = false;
                if self.conn.is_none() {
                    self.connect(ctx);
                }
            }
            TIMER_CLIENT => {
                if self.client_timer.is_some_and(|t| now >= t) {
                    self.client_timer = None;
                }
                self.client.handle_timeout(now);
                self.after(ctx);
            }
            TIMER_FLUSH => {
                self.flush_armed = false;
                self.after(ctx);
            }
            _ => return false,
        }
        true
    }

    /// Exports a local publish on `subject` (already mapped from its topic)
    /// if the plugin-wide export filters take it. Returns whether it was
    /// accepted.
    pub fn export(&mut self, ctx: &mut dyn Context, subject: &str, payload: &[u8]) -> bool {
        self.export_from(ctx, ListenerId::OUTBOUND, subject, payload)
    }

    /// Exports a publish a client of `listener` made on `subject` if that
    /// listener's export filters take it (the plugin-wide ones for a
    /// listener without a route), counting it for the listener too.
    /// Returns whether it was accepted (sent or buffered).
    pub fn export_from(
        &mut self,
        ctx: &mut dyn Context,
        listener: ListenerId,
        subject: &str,
        payload: &[u8],
    ) -> bool {
        if !self.settings.exports_from(listener, subject) {
            return false;
        }
        let result = self
            .client
            .publish(subject, None, Some(&self.origin), payload);
        if let Some(route) = self.settings.route(listener) {
            let s = &route.stats;
            bump(
                match result {
                    Ok(()) => &s.exported,
                    Err(PublishError::BufferFull) => &s.dropped_buffer_full,
                    Err(PublishError::TooLarge) => &s.dropped_too_large,
                    Err(PublishError::Subject(_)) => &s.dropped_unmappable,
                },
                1,
            );
        }
        let accepted = match result {
            Ok(()) => {
                if self.burst > 0 {
                    self.notify(format!(
                        "buffer has room again; {} export(s) dropped while it was full",
                        self.burst
                    ));
                    self.burst = 0;
                }
                true
            }
            Err(PublishError::BufferFull) => {
                if self.burst == 0 {
                    bump(&self.settings.stats.loss_bursts, 1);
                    self.notify(format!(
                        "buffer full ({} messages / {} bytes): dropping exports until it drains",
                        self.settings.nats.buffer_messages, self.settings.nats.buffer_bytes
                    ));
                }
                self.burst += 1;
                false
            }
            Err(_) => false,
        };
        self.after(ctx);
        accepted
    }

    /// Counts an export whose topic does not map to a subject.
    pub fn count_unmappable(&self) {
        bump(&self.settings.stats.dropped_unmappable, 1);
    }

    /// Counts an export from `listener` whose topic does not map to a
    /// subject (for the plugin and for the listener).
    pub fn count_unmappable_from(&self, listener: ListenerId) {
        self.count_unmappable();
        if let Some(route) = self.settings.route(listener) {
            bump(&route.stats.dropped_unmappable, 1);
        }
    }

    /// Takes an import the plugin is about to deliver: which listeners'
    /// subscribers it reaches (None: all), counted per listener.
    pub fn accept_import(&self, subject: &str) -> Option<ImportScope> {
        let scope = self.settings.import_scope(subject)?;
        for (id, route) in self.settings.routes() {
            if scope.admits(id) {
                bump(&route.stats.imported, 1);
            }
        }
        Some(scope)
    }

    /// The next message from NATS for local delivery.
    pub fn poll_import(&mut self) -> Option<Import> {
        self.imports.pop_front()
    }

    /// After every input: send what the client has, act on its events,
    /// arm its timer, publish the counters.
    fn after(&mut self, ctx: &mut dyn Context) {
        self.flush(ctx);
        while let Some(event) = self.client.poll_event() {
            match event {
                Event::Connected { server, .. } => {
                    self.backoff.reset();
                    self.notify(format!("connected to {server}"));
                }
                Event::Message(m) => self.import(m),
                Event::NeedReconnect(reason) => {
                    bump(&self.settings.stats.disconnects, 1);
                    self.notify(format!("disconnected: {reason}; reconnecting"));
                    if let Some(conn) = self.conn.take() {
                        ctx.close(conn);
                        self.closing = Some(conn);
                    }
                    self.client.handle_disconnected(ctx.now());
                    self.schedule_reconnect(ctx);
                }
                Event::ServerError(e) => self.notify(format!("server error: {e}")),
            }
        }
        // Events may have queued bytes (a login's SUBs and buffer).
        self.flush(ctx);
        if let Some(at) = self.client.poll_timeout() {
            if self.client_timer.map_or(true, |t| at < t) {
                self.client_timer = Some(at);
                ctx.set_timer(
                    at.saturating_duration_since(ctx.now()),
                    token(TIMER_CLIENT, self.index),
                );
            }
        }
        self.publish_stats();
    }

    fn import(&mut self, m: Message) {
        if m.origin() == Some(self.settings.instance_id.as_str()) {
            bump(&self.settings.stats.dropped_loop, 1);
            return;
        }
        bump(&self.settings.stats.imported, 1);
        self.imports.push_back(Import {
            subject: m.subject,
            payload: m.payload,
        });
    }

    /// Hands the client's pending bytes to the engine, a chunk at a time.
    fn flush(&mut self, ctx: &mut dyn Context) {
        let Some(conn) = self.conn else { return };
        if self.client.state() == State::Disconnected {
            return;
        }
        loop {
            let pending = self.client.pending_transmit();
            if pending.is_empty() {
                return;
            }
            let n = pending.len().min(WRITE_CHUNK);
            match ctx.write(conn, &pending[..n]) {
                Ok(()) => self.client.advance_transmit(n),
                Err(WriteError::QueueFull) => {
                    if !self.flush_armed {
                        self.flush_armed = true;
                        ctx.set_timer(FLUSH_RETRY, token(TIMER_FLUSH, self.index));
                    }
                    return;
                }
                // The stream is gone; its close is on its way.
                Err(_) => return,
            }
        }
    }

    fn publish_stats(&self) {
        let s = &self.settings.stats;
        let c = self.client.stats();
        s.connected
            .store(u64::from(self.client.state() == State::Connected), Relaxed);
        s.buffered_messages.store(c.buffered_messages, Relaxed);
        s.buffered_bytes.store(c.buffered_bytes, Relaxed);
        s.exported.store(c.published, Relaxed);
        s.dropped_buffer_full.store(c.dropped_buffer_full, Relaxed);
        s.dropped_too_large.store(c.dropped_too_large, Relaxed);
        s.lost_in_flight.store(c.lost_in_flight, Relaxed);
        s.dropped_bad_message
            .store(c.dropped_bad_headers + c.dropped_unknown_sid, Relaxed);
        s.connects.store(c.connects, Relaxed);
        s.reconnects.store(c.reconnects, Relaxed);
    }
}

#[cfg(test)]
#[path = "bridge_tests.rs"]
mod tests;
