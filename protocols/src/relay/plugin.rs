//! The relay plugin: frames in, fan-out to this shard's subscribers and to
//! the other shards.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringport_plugin::{
    Bytes, CloseReason, ConnId, ConnectFailure, Context, DatagramInfo, DropReason, ListenerId,
    MeshError, MeshMessage, Plugin, PluginFactory, ShardId, StreamInfo, Transport, Verdict,
    WriteError,
};

use super::table::Subscriptions;
use super::wire::{self, FrameType, Framing, Packet, Repr, DEFAULT_MAX_PAYLOAD};
use crate::nats::bridge::{Bridge, BridgeSettings};
use crate::nats::{BridgeSet, Bridges, ImportScope};
use crate::output_error;

/// [`MeshMessage::tag`] of a message carrying an encoded `PUBLISH` frame;
/// bits 32 to 47 of the tag carry the publishing listener's id
/// (`publish_tag`), which the NATS bridge's per-listener export filters
/// need.
pub const MESH_TAG_PUBLISH: u64 = 1;

/// The tag of a `PUBLISH` a client of `listener` made: [`MESH_TAG_PUBLISH`]
/// with the listener id in bits 32 to 47. The id rides in the tag, a word
/// every mesh message already has, so carrying it costs no byte and no
/// work on the shards that only deliver.
pub const fn publish_tag(listener: ListenerId) -> u64 {
    MESH_TAG_PUBLISH | ((listener.0 as u64) << 32)
}

/// A tag's kind (its low 32 bits) and the listener id it carries.
const fn split_tag(tag: u64) -> (u64, ListenerId) {
    (tag & 0xFFFF_FFFF, ListenerId((tag >> 32) as u16))
}

/// [`MeshMessage::tag`] of a notice that messages for a topic were lost on
/// the way to this shard (`mesh_full` on the publishing shard): an encoded
/// `PUBLISH` frame of that topic whose payload is the count, a big-endian
/// `u64`. Subscribers of the topic on the receiving shard get it as `LAGGED`.
pub const MESH_TAG_MISSED: u64 = 2;

/// [`MeshMessage::tag`] of a notice that messages of topics the publishing
/// shard stopped tracking one by one (more than [`MISSED_TOPICS`] of them
/// lost before its retry queue drained) were lost: an encoded `PUBLISH` of
/// the topic `*` whose payload is the count. Every subscriber on the
/// receiving shard gets it as `LAGGED`, an upper bound of what it missed.
pub const MESH_TAG_MISSED_ANY: u64 = 3;

/// [`MeshMessage::tag`] of a message the NATS bridge imported (an encoded
/// `PUBLISH` frame), sent by the bridge shard to the others: delivered like
/// [`MESH_TAG_PUBLISH`], and never exported again. Bits 32 to 47 carry the
/// index of the bridge that imported it (`imported_tag`), whose listeners
/// alone may receive it.
pub const MESH_TAG_IMPORTED: u64 = 4;

/// The tag of a message bridge `index` imported.
const fn imported_tag(index: usize) -> u64 {
    MESH_TAG_IMPORTED | ((index as u64 & 0xFFFF) << 32)
}

/// The shard that runs the NATS bridge (see [`Relay`]).
pub const BRIDGE_SHARD: ShardId = 0;

/// Topics whose lost messages a retry queue counts one by one; topic names
/// come from publishers, so the list is bounded (and looked up by hash).
pub const MISSED_TOPICS: usize = 1024;

/// The timer token the plugin uses for its retry timer.
pub const RETRY_TIMER: u64 = 1;

/// Settings of the relay; see `docs/protocols/relay.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Largest payload of a `PUBLISH` or `PING`.
    pub max_payload: usize,
    /// Topics one connection may hold; one more closes it (`refused`).
    pub max_subscriptions: usize,
    /// Close a subscriber whose outbound queue is full instead of dropping
    /// messages to it and sending `LAGGED`.
    pub disconnect_slow: bool,
    /// Cap, in bytes of encoded frames, of the queue of messages waiting for
    /// a full mesh ring to one other shard. Past it, messages for that shard
    /// are dropped (`mesh_full`).
    pub mesh_retry_bytes: usize,
    /// How often retry queues and owed `LAGGED` frames are retried while
    /// there are any.
    pub retry_interval: Duration,
}

impl Default for RelayConfig {
    /// 64 KiB payloads, 256 topics per connection, `LAGGED` rather than
    /// disconnect, 1 MiB retry queue per shard, retried every millisecond.
    fn default() -> Self {
        RelayConfig {
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_subscriptions: 256,
            disconnect_slow: false,
            mesh_retry_bytes: 1 << 20,
            retry_interval: Duration::from_millis(1),
        }
    }
}

/// Makes [`Relay`] instances; serves TCP (all frames) and UDP (`PUBLISH`).
#[derive(Debug, Clone, Default)]
pub struct RelayFactory {
    config: RelayConfig,
    bridge: Option<Arc<BridgeSet>>,
}

impl RelayFactory {
    /// The name used in listener specs.
    pub const NAME: &'static str = "relay";

    /// A factory whose instances use `config`.
    pub fn new(config: RelayConfig) -> Self {
        RelayFactory {
            config,
            bridge: None,
        }
    }

    /// The same factory with a NATS bridge: the instance on
    /// [`BRIDGE_SHARD`] connects to NATS with `bridge`.
    pub fn with_bridge(self, bridge: Arc<BridgeSettings>) -> Self {
        self.with_bridges(Arc::new(BridgeSet::single(bridge)))
    }

    /// The same factory with NATS bridges, one per distinct connection
    /// settings of its listeners: the instance on [`BRIDGE_SHARD`] runs
    /// them.
    pub fn with_bridges(mut self, bridges: Arc<BridgeSet>) -> Self {
        self.bridge = Some(bridges);
        self
    }

    /// The bridges' settings, if it has any.
    pub fn bridges(&self) -> Option<&Arc<BridgeSet>> {
        self.bridge.as_ref()
    }

    /// The settings instances get.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }
}

impl PluginFactory for RelayFactory {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn supports(&self, transport: Transport) -> bool {
        matches!(transport, Transport::Tcp | Transport::Udp)
    }

    fn create(&self, shard: ShardId, shard_count: usize) -> Box<dyn Plugin> {
        let mut relay = Relay::new(self.config, shard, shard_count);
        if let Some(set) = &self.bridge {
            relay.set_bridges(set.clone());
        }
        Box::new(relay)
    }
}

/// Encoded `PUBLISH` frames waiting for a full ring to one shard, and per
/// topic the frames that did not fit in the queue either (sent as
/// [`MESH_TAG_MISSED`] notices once the queue has drained).
#[derive(Debug, Default)]
struct RetryQueue {
    /// Mesh tag and frame.
    frames: VecDeque<(u64, Bytes)>,
    bytes: usize,
    missed: HashMap<Bytes, u64>,
    /// Lost frames of topics beyond the first [`MISSED_TOPICS`].
    missed_any: u64,
}

impl RetryQueue {
    /// Counts one lost frame of `topic`; true if a new notice is owed (the
    /// topic is new to the list, or the first beyond its bound).
    fn miss(&mut self, topic: &[u8]) -> bool {
        if let Some(n) = self.missed.get_mut(topic) {
            *n += 1;
            return false;
        }
        if self.missed.len() < MISSED_TOPICS {
            self.missed.insert(Bytes::copy_from_slice(topic), 1);
            return true;
        }
        self.missed_any += 1;
        self.missed_any == 1
    }
}

/// A notice of `n` lost frames of `topic` (the count is the payload).
fn notice(topic: &[u8], n: u64) -> Bytes {
    let mut notice = Vec::with_capacity(wire::HEADER_LEN + topic.len() + 8);
    notice.extend_from_slice(&wire::header(FrameType::Publish, topic.len(), 8));
    notice.extend_from_slice(topic);
    notice.extend_from_slice(&n.to_be_bytes());
    Bytes::from(notice)
}

/// One shard's relay.
///
/// # NATS bridge
///
/// With a bridge ([`RelayFactory::with_bridge`], or several:
/// [`RelayFactory::with_bridges`]), the instance on [`BRIDGE_SHARD`] alone
/// holds the NATS connections. Every `PUBLISH`
/// already reaches every shard (handled here, or as a mesh message), so
/// that shard sees every local publish: it exports each one once, in the
/// order it got them, which keeps each publisher's order (a publisher's
/// messages come through one stream or socket on one shard, and the ring
/// from that shard is FIFO) and costs no extra mesh traffic. (Publishing
/// from the shard that owns a topic would need a NATS connection per
/// shard and a hop to the owner for every publish.) What it imports it
/// delivers to its own subscribers and sends to the other shards as
/// [`MESH_TAG_IMPORTED`]; imports are never exported.
///
/// Inputs: `PUBLISH`es from streams and datagrams, published frames from the
/// other shards ([`Plugin::handle_message`]), its retry timer. Before
/// handling any of them it first retries what is owed: messages for shards
/// whose ring was full, and `LAGGED` frames to subscribers that had no room.
///
/// Counted through the context: one message per `PUBLISH` handled on this
/// shard and one per `MESSAGE` queued to a subscriber; `queue_full` per
/// message a subscriber missed; `mesh_full` per message a shard missed
/// because its retry queue was full too (that shard's subscribers of the
/// topic are told with a [`MESH_TAG_MISSED`] notice, then `LAGGED`).
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    shard: ShardId,
    shard_count: usize,
    table: Subscriptions,
    retry: Vec<RetryQueue>,
    /// Frames in all retry queues.
    retry_pending: usize,
    /// Subscribers owed a `LAGGED` frame (and maybe some that no longer are).
    lagging: Vec<ConnId>,
    /// Slow subscribers to close at the end of a delivery (`disconnect_slow`).
    slow: Vec<ConnId>,
    timer_armed: bool,
    /// The NATS bridges, on [`BRIDGE_SHARD`] only.
    bridge: Option<Bridges>,
    /// Settings of the bridges made at `handle_start` (they need the time).
    bridge_settings: Option<Arc<BridgeSet>>,
    /// On every shard, when a bridge has per-listener routes (or there are
    /// several bridges): the settings that decide which subscribers an
    /// import reaches.
    routes: Option<Arc<BridgeSet>>,
    /// With `routes`: the listener each stream of this shard came through.
    conn_listener: HashMap<ConnId, ListenerId>,
}

impl Relay {
    /// The instance for `shard` of `shard_count`.
    pub fn new(config: RelayConfig, shard: ShardId, shard_count: usize) -> Self {
        Relay {
            config,
            shard,
            shard_count,
            table: Subscriptions::new(),
            retry: (0..shard_count).map(|_| RetryQueue::default()).collect(),
            retry_pending: 0,
            lagging: Vec::new(),
            slow: Vec::new(),
            timer_armed: false,
            bridge: None,
            bridge_settings: None,
            routes: None,
            conn_listener: HashMap::new(),
        }
    }

    /// Bridges this relay to NATS if it runs on [`BRIDGE_SHARD`] (the
    /// bridge starts at `handle_start`); other shards keep only the
    /// per-listener routes, if any (imports reach them through the mesh).
    pub fn set_bridge(&mut self, settings: Arc<BridgeSettings>) {
        self.set_bridges(Arc::new(BridgeSet::single(settings)));
    }

    /// [`Relay::set_bridge`] for a plugin with one bridge per distinct
    /// connection settings of its listeners.
    pub fn set_bridges(&mut self, set: Arc<BridgeSet>) {
        if set.scoped() {
            self.routes = Some(set.clone());
        }
        if self.shard == BRIDGE_SHARD {
            self.bridge_settings = Some(set);
        }
    }

    /// The first bridge (the only one of most plugins), on the shard that
    /// runs it once started.
    pub fn bridge(&self) -> Option<&Bridge> {
        self.bridge.as_ref()?.all().first()
    }

    /// Every bridge, on the shard that runs them once started.
    pub fn bridges(&self) -> Option<&Bridges> {
        self.bridge.as_ref()
    }

    /// Exports a publish this shard saw (its own or another shard's) that
    /// a client of `listener` made.
    fn export(
        &mut self,
        ctx: &mut dyn Context,
        listener: ListenerId,
        topic: &[u8],
        payload: &[u8],
    ) {
        let Some(bridge) = self.bridge.as_mut().and_then(|b| b.for_listener(listener)) else {
            return;
        };
        match bridge.settings().map.relay_topic_to_subject(topic) {
            Ok(subject) => {
                bridge.export_from(ctx, listener, &subject, payload);
            }
            Err(_) => bridge.count_unmappable_from(listener),
        }
        self.poll_imports(ctx);
    }

    /// The listener `conn` came through (unknown without routes).
    fn listener_of(&self, conn: ConnId) -> ListenerId {
        self.conn_listener
            .get(&conn)
            .copied()
            .unwrap_or(ListenerId::OUTBOUND)
    }

    /// Which subscribers an import of bridge `index` on relay `topic`
    /// reaches (None: all).
    fn import_scope(&self, index: usize, topic: &[u8]) -> Option<ImportScope> {
        let routes = self.routes.as_ref()?.bridges().get(index)?;
        match routes.map.relay_topic_to_subject(topic) {
            Ok(subject) => routes.import_scope(&subject),
            // The bridge shard mapped it from a subject; cannot happen.
            Err(_) => None,
        }
    }

    /// Delivers what the bridge imported here and on every other shard.
    fn poll_imports(&mut self, ctx: &mut dyn Context) {
        while let Some(bridges) = self.bridge.as_mut() {
            let Some((index, import)) = bridges.poll_import() else {
                break;
            };
            let Some(bridge) = bridges.get_mut(index) else {
                break;
            };
            let topic = match bridge
                .settings()
                .map
                .subject_to_relay_topic(&import.subject)
            {
                Ok(t) if import.payload.len() <= self.config.max_payload => t,
                _ => {
                    bridge.count_unmappable();
                    continue;
                }
            };
            let scope = bridge.accept_import(&import.subject);
            let frame = Repr::Publish {
                topic: &topic,
                payload: &import.payload,
            }
            .to_vec();
            self.deliver(ctx, &topic, &import.payload, scope.as_ref());
            if self.shard_count > 1 {
                let shared = Bytes::from(frame);
                let here = self.shard;
                for target in (0..self.shard_count).filter(|&s| s != here) {
                    self.send_mesh(ctx, target, imported_tag(index), shared.clone());
                }
            }
        }
        self.arm_timer(ctx);
    }

    /// The settings.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// This shard's subscriptions.
    pub fn subscriptions(&self) -> &Subscriptions {
        &self.table
    }

    /// Messages waiting for the full ring to `shard`.
    pub fn retry_queued(&self, shard: ShardId) -> usize {
        self.retry.get(shard).map_or(0, |q| q.frames.len())
    }

    /// Retries what is owed, if anything.
    fn poll_owed(&mut self, ctx: &mut dyn Context) {
        if self.retry_pending > 0 {
            self.poll_retries(ctx);
        }
        if !self.lagging.is_empty() {
            self.poll_lagging(ctx);
        }
    }

    /// Sends queued frames to each shard, in order, until its ring is full;
    /// then the notices of frames that were lost.
    fn poll_retries(&mut self, ctx: &mut dyn Context) {
        for (target, q) in self.retry.iter_mut().enumerate() {
            while let Some((tag, payload)) = q.frames.pop_front() {
                let len = payload.len();
                let msg = MeshMessage { tag, payload };
                match ctx.send_to_shard(target, msg) {
                    Ok(()) => {}
                    Err(MeshError::Full(msg)) => {
                        q.frames.push_front((msg.tag, msg.payload));
                        break;
                    }
                    Err(_) => ctx.record_drop(DropReason::Unsupported),
                }
                q.bytes -= len;
                self.retry_pending -= 1;
            }
            if !q.frames.is_empty() {
                continue;
            }
            let mut full = false;
            let before = q.missed.len();
            q.missed.retain(|topic, &mut n| {
                if full {
                    return true;
                }
                let msg = MeshMessage {
                    tag: MESH_TAG_MISSED,
                    payload: notice(topic, n),
                };
                match ctx.send_to_shard(target, msg) {
                    Ok(()) => false,
                    Err(MeshError::Full(_)) => {
                        full = true;
                        true
                    }
                    Err(_) => {
                        ctx.record_drop(DropReason::Unsupported);
                        false
                    }
                }
            });
            self.retry_pending -= before - q.missed.len();
            if q.missed.is_empty() && q.missed_any > 0 {
                let msg = MeshMessage {
                    tag: MESH_TAG_MISSED_ANY,
                    payload: notice(b"*", q.missed_any),
                };
                match ctx.send_to_shard(target, msg) {
                    Ok(()) => {}
                    Err(MeshError::Full(_)) => continue,
                    Err(_) => ctx.record_drop(DropReason::Unsupported),
                }
                q.missed_any = 0;
                self.retry_pending -= 1;
            }
        }
    }

    /// A shard lost `count` messages of `topic` on their way here: each
    /// subscriber of it on this shard is owed that many in a `LAGGED` frame.
    fn missed(&mut self, ctx: &mut dyn Context, topic: &[u8], count: u64) {
        let lagging = &mut self.lagging;
        self.table.for_each_subscriber(topic, |conn, sub| {
            sub.lagged = sub.lagged.saturating_add(count);
            sub.dropped = sub.dropped.saturating_add(count);
            if !sub.listed {
                sub.listed = true;
                lagging.push(conn);
            }
        });
        self.poll_lagging(ctx);
    }

    /// A shard lost `count` messages of topics it did not track one by one:
    /// every subscriber on this shard is owed that many (an upper bound).
    fn missed_any(&mut self, ctx: &mut dyn Context, count: u64) {
        let lagging = &mut self.lagging;
        self.table.for_each_subscribed(|conn, sub| {
            sub.lagged = sub.lagged.saturating_add(count);
            sub.dropped = sub.dropped.saturating_add(count);
            if !sub.listed {
                sub.listed = true;
                lagging.push(conn);
            }
        });
        self.poll_lagging(ctx);
    }

    /// Sends owed `LAGGED` frames; keeps the subscribers still without room.
    fn poll_lagging(&mut self, ctx: &mut dyn Context) {
        let table = &mut self.table;
        self.lagging.retain(|&conn| {
            let Some(sub) = table.subscriber_mut(conn) else {
                return false;
            };
            if sub.lagged > 0 && !try_lagged(ctx, conn, &mut sub.lagged) {
                return true;
            }
            sub.listed = false;
            false
        });
    }

    /// Keeps one retry timer armed while something is owed.
    fn arm_timer(&mut self, ctx: &mut dyn Context) {
        if !self.timer_armed && (self.retry_pending > 0 || !self.lagging.is_empty()) {
            ctx.set_timer(self.config.retry_interval, RETRY_TIMER);
            self.timer_armed = true;
        }
    }

    /// A `PUBLISH` a client of `listener` made on this shard: `frame` is
    /// its encoding.
    fn publish(
        &mut self,
        ctx: &mut dyn Context,
        listener: ListenerId,
        frame: &[u8],
        topic: &[u8],
        payload: &[u8],
    ) {
        ctx.record_messages(1);
        self.deliver(ctx, topic, payload, None);
        if self.shard_count > 1 {
            // One allocation shared by every target shard.
            let shared = Bytes::copy_from_slice(frame);
            let here = self.shard;
            // The listener matters only to per-listener routes.
            let tag = match self.routes {
                Some(_) => publish_tag(listener),
                None => MESH_TAG_PUBLISH,
            };
            for target in (0..self.shard_count).filter(|&s| s != here) {
                self.send_mesh(ctx, target, tag, shared.clone());
            }
        }
        self.export(ctx, listener, topic, payload);
        self.arm_timer(ctx);
    }

    /// Sends a frame to `target`, or queues it behind earlier ones.
    fn send_mesh(&mut self, ctx: &mut dyn Context, target: ShardId, tag: u64, payload: Bytes) {
        let q = &mut self.retry[target];
        let payload = if q.frames.is_empty() {
            let msg = MeshMessage { tag, payload };
            match ctx.send_to_shard(target, msg) {
                Ok(()) => return,
                Err(MeshError::Full(msg)) => msg.payload,
                Err(MeshError::NoSuchShard(_) | MeshError::Unavailable(_)) => {
                    ctx.record_drop(DropReason::Unsupported);
                    return;
                }
            }
        } else {
            payload
        };
        if q.bytes + payload.len() > self.config.mesh_retry_bytes {
            ctx.record_drop(DropReason::MeshFull);
            // The subscribers over there learn of it through a notice. The
            // frame is a PUBLISH this shard encoded, so it parses.
            if let Ok(Repr::Publish { topic, .. }) =
                wire::parse_datagram(&payload, self.config.max_payload)
            {
                if q.miss(topic) {
                    self.retry_pending += 1;
                }
            }
            return;
        }
        q.bytes += payload.len();
        q.frames.push_back((tag, payload));
        self.retry_pending += 1;
    }

    /// Queues one `MESSAGE` to every subscriber of `topic` on this shard
    /// (with a `scope`: only to those whose listener it admits).
    fn deliver(
        &mut self,
        ctx: &mut dyn Context,
        topic: &[u8],
        payload: &[u8],
        scope: Option<&ImportScope>,
    ) {
        let header = wire::header(FrameType::Message, topic.len(), payload.len());
        let disconnect = self.config.disconnect_slow;
        let lagging = &mut self.lagging;
        let slow = &mut self.slow;
        let conn_listener = &self.conn_listener;
        let mut queued = 0;
        self.table.for_each_subscriber(topic, |conn, sub| {
            if let Some(scope) = scope {
                let listener = conn_listener
                    .get(&conn)
                    .copied()
                    .unwrap_or(ListenerId::OUTBOUND);
                if !scope.admits(listener) {
                    return;
                }
            }
            let fits = (sub.lagged == 0 || try_lagged(ctx, conn, &mut sub.lagged))
                && match ctx.write_parts(conn, &[&header, topic, payload]) {
                    Ok(()) => true,
                    Err(WriteError::QueueFull) => false,
                    Err(e) => {
                        // Not a slow peer: a stream the engine no longer has.
                        ctx.record_drop(output_error(e));
                        return;
                    }
                };
            if fits {
                queued += 1;
                return;
            }
            ctx.record_drop(DropReason::QueueFull);
            sub.dropped += 1;
            if disconnect {
                slow.push(conn);
            } else {
                sub.lagged += 1;
                if !sub.listed {
                    sub.listed = true;
                    lagging.push(conn);
                }
            }
        });
        if queued > 0 {
            ctx.record_messages(queued);
        }
        for conn in self.slow.drain(..) {
            self.table.remove_conn(conn);
            ctx.close(conn);
        }
    }

    /// Applies one client frame of a stream. `Ok(false)`: the frame could
    /// not be handled now (backpressure) and must be presented again.
    fn handle_frame(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        frame: &[u8],
    ) -> Result<bool, DropReason> {
        let repr = Repr::parse(&Packet::new_unchecked(frame), self.config.max_payload)
            .map_err(wire::Error::drop_reason)?;
        match repr {
            Repr::Subscribe { topic } => {
                self.table
                    .subscribe(conn, topic, self.config.max_subscriptions)
                    .map_err(|_| DropReason::Refused)?;
            }
            Repr::Unsubscribe { topic } => {
                self.table.unsubscribe(conn, topic);
            }
            Repr::Publish { topic, payload } => {
                let listener = self.listener_of(conn);
                self.publish(ctx, listener, frame, topic, payload);
            }
            Repr::Ping { payload } => {
                let header = wire::header(FrameType::Pong, 0, payload.len());
                match ctx.write_parts(conn, &[&header, payload]) {
                    Ok(()) => {}
                    Err(WriteError::QueueFull) => return Ok(false),
                    Err(e) => return Err(output_error(e)),
                }
            }
            Repr::Message { .. } | Repr::Lagged { .. } | Repr::Pong { .. } => {
                return Err(DropReason::Malformed)
            }
        }
        Ok(true)
    }
}

/// Queues a `LAGGED` frame for `*lagged` missed messages and resets the
/// count; false when the subscriber still has no room.
fn try_lagged(ctx: &mut dyn Context, conn: ConnId, lagged: &mut u64) -> bool {
    match ctx.write(conn, &wire::lagged_frame(*lagged)) {
        Ok(()) => {
            *lagged = 0;
            true
        }
        Err(WriteError::QueueFull) => false,
        // The stream is gone; nobody is owed anything.
        Err(_) => {
            *lagged = 0;
            true
        }
    }
}

impl Plugin for Relay {
    /// Handles every complete frame of `data`; returns the bytes they cover.
    /// A `PING` whose `PONG` does not fit stops the loop there (the engine
    /// presents the rest again); an invalid frame closes the stream.
    fn handle_data(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        data: &[u8],
    ) -> Result<usize, DropReason> {
        self.poll_owed(ctx);
        if let Some(bridge) = self.bridge.as_mut().filter(|b| b.owns(conn)) {
            let n = bridge.handle_data(ctx, conn, data);
            self.poll_imports(ctx);
            return Ok(n);
        }
        let mut consumed = 0;
        loop {
            let rest = &data[consumed..];
            let len = match wire::next_frame(rest, self.config.max_payload) {
                Framing::Frame(ty, _) if !ty.from_client() => return Err(DropReason::Malformed),
                Framing::Frame(_, len) => len,
                Framing::Incomplete => return Ok(consumed),
                Framing::Invalid(e) => return Err(e.drop_reason()),
            };
            if !self.handle_frame(ctx, conn, &rest[..len])? {
                return Ok(consumed);
            }
            consumed += len;
        }
    }

    fn handle_close(&mut self, ctx: &mut dyn Context, conn: ConnId, _reason: CloseReason) {
        if let Some(bridge) = self.bridge.as_mut().filter(|b| b.owns(conn)) {
            bridge.handle_close(ctx, conn);
            self.poll_imports(ctx);
            return;
        }
        self.table.remove_conn(conn);
        self.conn_listener.remove(&conn);
    }

    /// With per-listener routes: remembers the stream's listener.
    fn handle_open(&mut self, _ctx: &mut dyn Context, stream: &StreamInfo) -> Verdict {
        if self.routes.is_some() {
            self.conn_listener.insert(stream.conn, stream.listener);
        }
        Verdict::Accept
    }

    /// On [`BRIDGE_SHARD`] with a bridge: connects to NATS.
    fn handle_start(&mut self, ctx: &mut dyn Context) {
        let Some(set) = self.bridge_settings.take() else {
            return;
        };
        // The settings were checked when they were made.
        if let Ok(mut bridges) = Bridges::new(set, ctx.now()) {
            bridges.handle_start(ctx);
            self.bridge = Some(bridges);
        }
    }

    fn handle_connected(&mut self, ctx: &mut dyn Context, stream: &StreamInfo, tag: u64) {
        let ours = self
            .bridge
            .as_mut()
            .is_some_and(|b| b.handle_connected(ctx, stream, tag));
        if ours {
            self.poll_imports(ctx);
        } else {
            ctx.close(stream.conn);
        }
    }

    fn handle_connect_failed(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        tag: u64,
        failure: ConnectFailure,
    ) {
        if let Some(bridge) = &mut self.bridge {
            bridge.handle_connect_failed(ctx, conn, tag, failure);
        }
    }

    /// A datagram must be exactly one `PUBLISH` frame.
    fn handle_datagram(
        &mut self,
        ctx: &mut dyn Context,
        from: &DatagramInfo,
        data: &[u8],
    ) -> Result<(), DropReason> {
        self.poll_owed(ctx);
        match wire::parse_datagram(data, self.config.max_payload) {
            Ok(Repr::Publish { topic, payload }) => {
                self.publish(ctx, from.listener, data, topic, payload);
                Ok(())
            }
            Ok(_) => Err(DropReason::Malformed),
            Err(e) => Err(e.drop_reason()),
        }
    }

    /// A `PUBLISH` received by another shard: delivered here, forwarded nowhere.
    fn handle_message(&mut self, ctx: &mut dyn Context, _from: ShardId, msg: MeshMessage) {
        self.poll_owed(ctx);
        let parsed = wire::parse_datagram(&msg.payload, self.config.max_payload);
        let (kind, listener) = split_tag(msg.tag);
        match (kind, parsed) {
            (MESH_TAG_PUBLISH, Ok(Repr::Publish { topic, payload })) => {
                self.deliver(ctx, topic, payload, None);
                self.export(ctx, listener, topic, payload);
            }
            (MESH_TAG_IMPORTED, Ok(Repr::Publish { topic, payload })) => {
                // Bits 32 to 47 carry the importing bridge's index.
                let scope = self.import_scope(usize::from(listener.0), topic);
                self.deliver(ctx, topic, payload, scope.as_ref());
            }
            (MESH_TAG_MISSED, Ok(Repr::Publish { topic, payload })) if payload.len() == 8 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(payload);
                self.missed(ctx, topic, u64::from_be_bytes(n));
            }
            (MESH_TAG_MISSED_ANY, Ok(Repr::Publish { payload, .. })) if payload.len() == 8 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(payload);
                self.missed_any(ctx, u64::from_be_bytes(n));
            }
            _ => ctx.record_drop(DropReason::Malformed),
        }
        self.arm_timer(ctx);
    }

    fn handle_timer(&mut self, ctx: &mut dyn Context, now: Instant, token: u64) {
        if let Some(bridge) = &mut self.bridge {
            if bridge.handle_timer(ctx, now, token) {
                self.poll_imports(ctx);
                return;
            }
        }
        if token == RETRY_TIMER {
            self.timer_armed = false;
        }
        self.poll_owed(ctx);
        self.arm_timer(ctx);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use ringport_plugin::testing::RecordingContext;
    use ringport_plugin::{ListenerId, SocketId};

    use super::*;
    use crate::relay::wire::lagged_frame;
    use crate::testutil::StreamFeeder;

    const PUB: ConnId = ConnId::from_raw(1);
    const SUB_A: ConnId = ConnId::from_raw(2);
    const SUB_B: ConnId = ConnId::from_raw(3);

    fn sub(topic: &[u8]) -> Vec<u8> {
        Repr::Subscribe { topic }.to_vec()
    }

    fn publish(topic: &[u8], payload: &[u8]) -> Vec<u8> {
        Repr::Publish { topic, payload }.to_vec()
    }

    fn message(topic: &[u8], payload: &[u8]) -> Vec<u8> {
        Repr::Message { topic, payload }.to_vec()
    }

    fn from() -> DatagramInfo {
        DatagramInfo {
            socket: SocketId(0),
            listener: ListenerId(1),
            peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
            local: SocketAddr::from(([127, 0, 0, 1], 7400)),
        }
    }

    /// A plugin and its context for `shard` of `count`.
    fn shard(shard: ShardId, count: usize, config: RelayConfig) -> (Relay, RecordingContext) {
        (
            Relay::new(config, shard, count),
            RecordingContext::new().with_shard(shard, count),
        )
    }

    fn feed(relay: &mut Relay, ctx: &mut RecordingContext, conn: ConnId, bytes: &[u8]) {
        assert_eq!(relay.handle_data(ctx, conn, bytes), Ok(bytes.len()));
    }

    /// Delivers every message `from_ctx` queued for `to`, as the mesh would.
    fn carry(
        from_ctx: &mut RecordingContext,
        from: ShardId,
        to: (&mut Relay, &mut RecordingContext),
        shard: ShardId,
    ) {
        let sends: Vec<_> = from_ctx
            .mesh_sends()
            .iter()
            .filter(|s| s.to == shard)
            .cloned()
            .collect();
        for s in sends {
            to.0.handle_message(to.1, from, s.msg);
        }
    }

    #[test]
    fn subscribers_get_messages_of_their_topics_only() {
        let (mut relay, mut ctx) = shard(0, 1, RelayConfig::default());
        feed(&mut relay, &mut ctx, SUB_A, &sub(b"t/1"));
        feed(
            &mut relay,
            &mut ctx,
            SUB_B,
            &[sub(b"t/1"), sub(b"t/2")].concat(),
        );
        let stream = [
            publish(b"t/1", b"21.5"),
            publish(b"t/2", b""),
            publish(b"t/3", b"x"),
        ]
        .concat();
        feed(&mut relay, &mut ctx, PUB, &stream);
        assert_eq!(
            ctx.written(SUB_A),
            [0x81, 3, 0, 0, 0, 4, b't', b'/', b'1', b'2', b'1', b'.', b'5']
        );
        assert_eq!(
            ctx.written(SUB_B),
            [message(b"t/1", b"21.5"), message(b"t/2", b"")].concat()
        );
        assert_eq!(ctx.written(PUB), b"");
        // 3 publishes handled, 3 messages queued.
        assert_eq!(ctx.messages(), 6);
        // One header + topic + payload write per delivery.
        assert_eq!(ctx.write_calls(), 3);
        assert_eq!(ctx.total_drops(), 0);
        assert!(ctx.mesh_sends().is_empty() && ctx.timers().is_empty());
    }

    /// Subscribe, publish to itself, ping; the exact answer bytes.
    fn script() -> (Vec<u8>, Vec<u8>) {
        let stream = [
            sub(b"news"),
            publish(b"news", b"hello"),
            Repr::Ping { payload: b"p1" }.to_vec(),
            Repr::Unsubscribe { topic: b"news" }.to_vec(),
            publish(b"news", b"unheard"),
            Repr::Ping { payload: b"" }.to_vec(),
        ]
        .concat();
        let expected = [
            &[0x81, 4, 0, 0, 0, 5][..],
            b"newshello",
            &[0x83, 0, 0, 0, 0, 2, b'p', b'1'],
            &[0x83, 0, 0, 0, 0, 0],
        ]
        .concat();
        (stream, expected)
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let (stream, expected) = script();
        for split in 0..=stream.len() {
            let mut feeder = StreamFeeder::new(Relay::new(RelayConfig::default(), 0, 1), PUB);
            feeder.feed(&stream[..split]).unwrap();
            feeder.feed(&stream[split..]).unwrap();
            assert_eq!(feeder.ctx.written(PUB), expected, "split at {split}");
            assert_eq!(feeder.ctx.messages(), 3, "split at {split}");
            assert_eq!(feeder.pending(), 0, "split at {split}");
        }
    }

    #[test]
    fn split_at_every_pair_of_boundaries() {
        let (stream, expected) = script();
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let mut feeder = StreamFeeder::new(Relay::new(RelayConfig::default(), 0, 1), PUB);
                for part in [&stream[..a], &stream[a..b], &stream[b..]] {
                    feeder.feed(part).unwrap();
                }
                assert_eq!(feeder.ctx.written(PUB), expected, "splits at {a}, {b}");
                assert_eq!(feeder.pending(), 0);
            }
        }
    }

    #[test]
    fn a_publish_reaches_every_shard_exactly_once() {
        let config = RelayConfig::default();
        let (mut s0, mut c0) = shard(0, 3, config);
        let (mut s1, mut c1) = shard(1, 3, config);
        let (mut s2, mut c2) = shard(2, 3, config);
        feed(&mut s0, &mut c0, SUB_A, &sub(b"t"));
        feed(&mut s1, &mut c1, SUB_A, &sub(b"t"));
        feed(&mut s1, &mut c1, SUB_B, &sub(b"other"));
        // Shard 2 has no subscriber: it still gets the frame and drops it quietly.
        feed(
            &mut s0,
            &mut c0,
            PUB,
            &[publish(b"t", b"1"), publish(b"t", b"2")].concat(),
        );
        let targets: Vec<ShardId> = c0.mesh_sends().iter().map(|s| s.to).collect();
        assert_eq!(targets, [1, 2, 1, 2]);
        for s in c0.mesh_sends() {
            assert_eq!(s.msg.tag, MESH_TAG_PUBLISH);
        }
        // One shared allocation per publish for all target shards.
        let sends = c0.mesh_sends();
        assert_eq!(sends[0].msg.payload.as_ptr(), sends[1].msg.payload.as_ptr());
        assert_eq!(sends[0].msg.payload, publish(b"t", b"1"));
        carry(&mut c0, 0, (&mut s1, &mut c1), 1);
        carry(&mut c0, 0, (&mut s2, &mut c2), 2);
        let both = [message(b"t", b"1"), message(b"t", b"2")].concat();
        assert_eq!(c0.written(SUB_A), both);
        assert_eq!(c1.written(SUB_A), both);
        assert_eq!(c1.written(SUB_B), b"");
        // Receivers forward nothing and count only their deliveries.
        assert!(c1.mesh_sends().is_empty() && c2.mesh_sends().is_empty());
        assert_eq!((c0.messages(), c1.messages(), c2.messages()), (4, 2, 0));
        assert_eq!(c0.total_drops() + c1.total_drops() + c2.total_drops(), 0);
    }

    #[test]
    fn udp_publish_is_delivered_and_forwarded() {
        let (mut s0, mut c0) = shard(0, 2, RelayConfig::default());
        feed(&mut s0, &mut c0, SUB_A, &sub(b"dev/7"));
        let dgram = publish(b"dev/7", b"\x00\x01");
        assert_eq!(s0.handle_datagram(&mut c0, &from(), &dgram), Ok(()));
        assert_eq!(c0.written(SUB_A), message(b"dev/7", b"\x00\x01"));
        assert_eq!(c0.mesh_sends().len(), 1);
        assert_eq!(c0.mesh_sends()[0].msg.payload, dgram);
        assert!(c0.datagrams().is_empty());
        assert_eq!(c0.messages(), 2);
    }

    #[test]
    fn bad_datagrams_are_dropped_with_their_reason() {
        let (mut relay, mut ctx) = shard(
            0,
            2,
            RelayConfig {
                max_payload: 4,
                ..RelayConfig::default()
            },
        );
        let good = publish(b"t", b"abcd");
        let mut longer = good.clone();
        longer.push(0);
        let cases: [(&[u8], DropReason); 7] = [
            (&good[..5], DropReason::Malformed),
            (&good[..good.len() - 1], DropReason::Malformed),
            (&longer, DropReason::Malformed),
            (&publish(b"t", b"abcde"), DropReason::FrameTooLong),
            (&[0x03, 0, 0, 0, 0, 0], DropReason::FrameTooShort),
            (&sub(b"t"), DropReason::Malformed),
            (&[0x99, 0, 0, 0, 0, 0], DropReason::Malformed),
        ];
        for (data, reason) in cases {
            assert_eq!(
                relay.handle_datagram(&mut ctx, &from(), data),
                Err(reason),
                "{data:?}"
            );
        }
        assert!(ctx.mesh_sends().is_empty());
        assert_eq!(ctx.messages(), 0);
        assert_eq!(relay.handle_datagram(&mut ctx, &from(), &good), Ok(()));
    }

    #[test]
    fn bad_frames_close_the_stream_after_the_good_ones() {
        let cases: [(Vec<u8>, DropReason); 5] = [
            (vec![0x07, 0, 0, 0, 0, 0], DropReason::Malformed),
            (message(b"t", b"x"), DropReason::Malformed),
            (lagged_frame(1).to_vec(), DropReason::Malformed),
            (vec![0x01, 0, 0, 0, 0, 0], DropReason::FrameTooShort),
            (vec![0x03, 1, 0, 1, 0, 1], DropReason::FrameTooLong),
        ];
        for (bad, reason) in cases {
            let (mut relay, mut ctx) = shard(0, 1, RelayConfig::default());
            feed(&mut relay, &mut ctx, SUB_A, &sub(b"t"));
            let stream = [publish(b"t", b"before"), bad.clone()].concat();
            assert_eq!(
                relay.handle_data(&mut ctx, PUB, &stream),
                Err(reason),
                "{bad:?}"
            );
            assert_eq!(ctx.written(SUB_A), message(b"t", b"before"));
        }
    }

    #[test]
    fn oversized_payload_is_refused_on_the_header_alone() {
        let (mut relay, mut ctx) = shard(
            0,
            1,
            RelayConfig {
                max_payload: 10,
                ..RelayConfig::default()
            },
        );
        let big = publish(b"t", &[0; 11]);
        assert_eq!(relay.handle_data(&mut ctx, PUB, &big[..5]), Ok(0));
        assert_eq!(
            relay.handle_data(&mut ctx, PUB, &big[..6]),
            Err(DropReason::FrameTooLong)
        );
        let max = publish(b"t", &[0; 10]);
        assert_eq!(relay.handle_data(&mut ctx, PUB, &max), Ok(max.len()));
    }

    #[test]
    fn subscription_limit_closes_the_stream() {
        let (mut relay, mut ctx) = shard(
            0,
            1,
            RelayConfig {
                max_subscriptions: 2,
                ..RelayConfig::default()
            },
        );
        let ok = [sub(b"a"), sub(b"b"), sub(b"a")].concat();
        feed(&mut relay, &mut ctx, SUB_A, &ok);
        assert_eq!(
            relay.handle_data(&mut ctx, SUB_A, &sub(b"c")),
            Err(DropReason::Refused)
        );
    }

    #[test]
    fn closing_a_subscriber_forgets_it() {
        let (mut relay, mut ctx) = shard(0, 1, RelayConfig::default());
        feed(
            &mut relay,
            &mut ctx,
            SUB_A,
            &[sub(b"a"), sub(b"b")].concat(),
        );
        feed(&mut relay, &mut ctx, SUB_B, &sub(b"a"));
        relay.handle_close(&mut ctx, SUB_A, CloseReason::PeerReset);
        assert_eq!(relay.subscriptions().topic_count(), 1);
        assert_eq!(relay.subscriptions().conn_count(), 1);
        ctx.clear();
        feed(
            &mut relay,
            &mut ctx,
            PUB,
            &[publish(b"a", b"1"), publish(b"b", b"2")].concat(),
        );
        assert_eq!(ctx.written(SUB_A), b"");
        assert_eq!(ctx.written(SUB_B), message(b"a", b"1"));
        assert_eq!(ctx.total_drops(), 0);
    }

    #[test]
    fn slow_subscriber_misses_messages_then_gets_lagged() {
        let (mut relay, mut rec) = shard(0, 1, RelayConfig::default());
        feed(&mut relay, &mut rec, SUB_A, &sub(b"t"));
        feed(&mut relay, &mut rec, SUB_B, &sub(b"t"));
        rec.fail_writes_to(SUB_A, Some(WriteError::QueueFull));
        for i in 0..3u8 {
            let frame = publish(b"t", &[i]);
            assert_eq!(relay.handle_data(&mut rec, PUB, &frame), Ok(frame.len()));
        }
        // Other subscribers are unaffected.
        let all: Vec<u8> = (0..3u8).flat_map(|i| message(b"t", &[i])).collect();
        assert_eq!(rec.written(SUB_B), all);
        assert_eq!(rec.written(SUB_A), b"");
        assert_eq!(rec.drops(DropReason::QueueFull), 3);
        assert_eq!(relay.subscriptions().subscriber(SUB_A).unwrap().lagged, 3);
        // One retry timer, not one per drop.
        assert_eq!(rec.timers().len(), 1);
        assert_eq!(rec.timers()[0].token, RETRY_TIMER);
        // Still no room when the timer fires: it is armed again.
        relay.handle_timer(&mut rec, Instant::now(), RETRY_TIMER);
        assert_eq!(rec.timers().len(), 2);
        // Room again: the timer sends what is owed, then deliveries resume.
        rec.fail_writes_to(SUB_A, None);
        relay.handle_timer(&mut rec, Instant::now(), RETRY_TIMER);
        assert_eq!(rec.written(SUB_A), lagged_frame(3));
        assert_eq!(rec.timers().len(), 2);
        feed(&mut relay, &mut rec, PUB, &publish(b"t", b"next"));
        assert_eq!(
            rec.written(SUB_A),
            [&lagged_frame(3)[..], &message(b"t", b"next")].concat()
        );
        let state = relay.subscriptions().subscriber(SUB_A).unwrap();
        assert_eq!((state.lagged, state.dropped), (0, 3));
    }

    #[test]
    fn lagged_goes_before_the_next_message_that_fits() {
        let (mut relay, mut rec) = shard(0, 1, RelayConfig::default());
        feed(&mut relay, &mut rec, SUB_A, &sub(b"t"));
        rec.fail_writes(Some(WriteError::QueueFull));
        feed(
            &mut relay,
            &mut rec,
            PUB,
            &[publish(b"t", b"1"), publish(b"t", b"2")].concat(),
        );
        rec.fail_writes(None);
        feed(&mut relay, &mut rec, PUB, &publish(b"t", b"3"));
        assert_eq!(
            rec.written(SUB_A),
            [&lagged_frame(2)[..], &message(b"t", b"3")].concat()
        );
        // The owed list is cleaned up on the next call; nothing is sent twice.
        relay.handle_timer(&mut rec, Instant::now(), RETRY_TIMER);
        assert_eq!(rec.written(SUB_A).len(), 14 + 8);
        // Every message is accounted for: 1 delivered, 2 reported lagged.
        assert_eq!(rec.drops(DropReason::QueueFull), 2);
    }

    #[test]
    fn slow_subscriber_is_closed_when_configured() {
        let (mut relay, mut rec) = shard(
            0,
            1,
            RelayConfig {
                disconnect_slow: true,
                ..RelayConfig::default()
            },
        );
        feed(&mut relay, &mut rec, SUB_A, &sub(b"t"));
        feed(&mut relay, &mut rec, SUB_B, &sub(b"t"));
        rec.fail_writes_to(SUB_A, Some(WriteError::QueueFull));
        for _ in 0..2 {
            assert_eq!(
                relay.handle_data(&mut rec, PUB, &publish(b"t", b"x")),
                Ok(7 + 1)
            );
        }
        assert_eq!(rec.closed(), [SUB_A]);
        assert_eq!(rec.drops(DropReason::QueueFull), 1);
        assert_eq!(
            rec.written(SUB_B),
            [message(b"t", b"x"), message(b"t", b"x")].concat()
        );
        assert_eq!(relay.subscriptions().subscribers(b"t"), [SUB_B]);
        assert!(rec.timers().is_empty());
    }

    #[test]
    fn full_ring_queues_in_order_and_retries() {
        let (mut relay, mut ctx) = shard(1, 3, RelayConfig::default());
        ctx.set_mesh_full(true);
        feed(&mut relay, &mut ctx, PUB, &publish(b"t", b"1"));
        assert_eq!((relay.retry_queued(0), relay.retry_queued(2)), (1, 1));
        assert_eq!(ctx.total_drops(), 0);
        assert_eq!(ctx.timers().len(), 1);
        // Ring free again: the next publish goes out behind the queued one.
        ctx.set_mesh_full(false);
        feed(&mut relay, &mut ctx, PUB, &publish(b"t", b"2"));
        let sent: Vec<(ShardId, Bytes)> = ctx
            .mesh_sends()
            .iter()
            .map(|s| (s.to, s.msg.payload.clone()))
            .collect();
        let (one, two) = (publish(b"t", b"1"), publish(b"t", b"2"));
        assert_eq!(
            sent,
            [
                (0, Bytes::from(one.clone())),
                (2, Bytes::from(one)),
                (0, Bytes::from(two.clone())),
                (2, Bytes::from(two)),
            ]
        );
        assert_eq!((relay.retry_queued(0), relay.retry_queued(2)), (0, 0));
    }

    #[test]
    fn retry_queue_is_bounded_and_drops_are_counted() {
        let frame = publish(b"t", b"12345");
        let (mut relay, mut ctx) = shard(
            0,
            2,
            RelayConfig {
                mesh_retry_bytes: 2 * frame.len(),
                ..RelayConfig::default()
            },
        );
        ctx.set_mesh_full(true);
        for _ in 0..5 {
            feed(&mut relay, &mut ctx, PUB, &frame);
        }
        assert_eq!(relay.retry_queued(1), 2);
        assert_eq!(ctx.drops(DropReason::MeshFull), 3);
        ctx.set_mesh_full(false);
        relay.handle_timer(&mut ctx, Instant::now(), RETRY_TIMER);
        // The two queued frames, then one notice of the three lost ones.
        let sent = ctx.mesh_sends();
        assert_eq!(sent.len(), 3);
        assert_eq!(
            (sent[2].to, sent[2].msg.tag, &sent[2].msg.payload[..]),
            (1, MESH_TAG_MISSED, &publish(b"t", &3u64.to_be_bytes())[..])
        );
        assert_eq!(relay.retry_queued(1), 0);
        // Nothing owed: the timer is not armed again.
        assert_eq!(ctx.timers().len(), 1);
    }

    #[test]
    fn lost_frames_reach_the_other_shards_subscribers_as_lagged() {
        let frame = publish(b"t", b"x");
        let config = RelayConfig {
            mesh_retry_bytes: frame.len(),
            ..RelayConfig::default()
        };
        let (mut a, mut actx) = shard(0, 2, config);
        let (mut b, mut bctx) = shard(1, 2, config);
        feed(&mut b, &mut bctx, SUB_A, &sub(b"t"));
        feed(&mut b, &mut bctx, SUB_B, &sub(b"u"));
        // Two topics lost on the way: 1 frame queued, 4 lost (3 of t, 1 of u).
        actx.set_mesh_full(true);
        for f in [&frame, &frame, &publish(b"u", b"y"), &frame, &frame] {
            feed(&mut a, &mut actx, PUB, f);
        }
        assert_eq!(actx.drops(DropReason::MeshFull), 4);
        actx.set_mesh_full(false);
        a.handle_timer(&mut actx, Instant::now(), RETRY_TIMER);
        for s in actx.mesh_sends().to_vec() {
            b.handle_message(&mut bctx, 0, s.msg);
        }
        // SUB_A: the one frame that got through, then LAGGED 3; SUB_B: LAGGED 1.
        assert_eq!(
            bctx.written(SUB_A),
            [message(b"t", b"x"), lagged_frame(3).to_vec()].concat()
        );
        assert_eq!(bctx.written(SUB_B), lagged_frame(1));
        let sub_a = b.subscriptions().subscriber(SUB_A).unwrap();
        assert_eq!((sub_a.lagged, sub_a.dropped), (0, 3));
        // A notice with a payload that is not a count is malformed.
        b.handle_message(
            &mut bctx,
            0,
            MeshMessage {
                tag: MESH_TAG_MISSED,
                payload: Bytes::from(publish(b"t", b"1234567")),
            },
        );
        assert_eq!(bctx.drops(DropReason::Malformed), 1);
    }

    /// Topic names come from publishers: the lost-topic list stops at
    /// MISSED_TOPICS entries, and what is lost beyond it reaches every
    /// subscriber of the other shard as one `LAGGED` upper bound.
    #[test]
    fn lost_topics_are_bounded_and_the_rest_is_told_to_everyone() {
        let frame = publish(b"t", b"x");
        let config = RelayConfig {
            mesh_retry_bytes: frame.len(),
            ..RelayConfig::default()
        };
        let (mut a, mut actx) = shard(0, 2, config);
        let (mut b, mut bctx) = shard(1, 2, config);
        feed(&mut b, &mut bctx, SUB_A, &sub(b"t"));
        feed(&mut b, &mut bctx, SUB_B, &sub(b"topic-7"));
        actx.set_mesh_full(true);
        // One frame fills the retry queue; then 1,024 + 10 topics are lost
        // once each, and `t` five times.
        feed(&mut a, &mut actx, PUB, &frame);
        for i in 0..MISSED_TOPICS + 10 {
            let topic = format!("topic-{i}");
            feed(&mut a, &mut actx, PUB, &publish(topic.as_bytes(), b"x"));
        }
        for _ in 0..5 {
            feed(&mut a, &mut actx, PUB, &frame);
        }
        assert_eq!(
            actx.drops(DropReason::MeshFull),
            (MISSED_TOPICS + 15) as u64
        );
        assert_eq!(a.retry[1].missed.len(), MISSED_TOPICS);
        // `t` came after the list was full: it is among the untracked.
        assert_eq!(a.retry[1].missed_any, 15);
        actx.set_mesh_full(false);
        a.handle_timer(&mut actx, Instant::now(), RETRY_TIMER);
        let sent = actx.mesh_sends().to_vec();
        // The queued frame, a notice per tracked topic, one for the rest.
        assert_eq!(sent.len(), 1 + MISSED_TOPICS + 1);
        assert_eq!(
            (
                sent.last().unwrap().msg.tag,
                &sent.last().unwrap().msg.payload[..]
            ),
            (
                MESH_TAG_MISSED_ANY,
                &publish(b"*", &15u64.to_be_bytes())[..]
            )
        );
        assert_eq!(a.retry_queued(1), 0);
        for s in sent {
            b.handle_message(&mut bctx, 0, s.msg);
        }
        // SUB_A (t): the frame, then 15 lagged (an upper bound: all 15
        // untracked losses); SUB_B (topic-7, tracked): 1 + 15.
        assert_eq!(
            bctx.written(SUB_A),
            [message(b"t", b"x"), lagged_frame(15).to_vec()].concat()
        );
        assert_eq!(b.subscriptions().subscriber(SUB_B).unwrap().dropped, 16);
        assert_eq!(bctx.drops(DropReason::Malformed), 0);
    }

    #[test]
    fn foreign_mesh_messages_are_counted_and_ignored() {
        let (mut relay, mut ctx) = shard(1, 2, RelayConfig::default());
        feed(&mut relay, &mut ctx, SUB_A, &sub(b"t"));
        for msg in [
            MeshMessage {
                tag: 99,
                payload: Bytes::from(publish(b"t", b"x")),
            },
            MeshMessage {
                tag: MESH_TAG_PUBLISH,
                payload: Bytes::from_static(b"\x03\x01"),
            },
            MeshMessage {
                tag: MESH_TAG_PUBLISH,
                payload: Bytes::from(sub(b"t")),
            },
        ] {
            relay.handle_message(&mut ctx, 0, msg);
        }
        assert_eq!(ctx.drops(DropReason::Malformed), 3);
        assert_eq!(ctx.written(SUB_A), b"");
    }

    #[test]
    fn ping_waits_when_the_queue_is_full() {
        let (mut relay, mut ctx) = shard(0, 1, RelayConfig::default());
        let ping = Repr::Ping { payload: b"x" }.to_vec();
        let stream = [sub(b"t"), ping.clone()].concat();
        ctx.fail_writes(Some(WriteError::QueueFull));
        assert_eq!(
            relay.handle_data(&mut ctx, SUB_A, &stream),
            Ok(stream.len() - ping.len())
        );
        ctx.fail_writes(None);
        assert_eq!(relay.handle_data(&mut ctx, SUB_A, &ping), Ok(ping.len()));
        assert_eq!(ctx.written(SUB_A), Repr::Pong { payload: b"x" }.to_vec());
    }

    /// A relay on shard 0 of 2 bridged to NATS, logged in; its stream.
    fn bridged() -> (Relay, RecordingContext, ConnId) {
        use crate::nats::bridge::CONNECT_TAG;
        use crate::nats::NatsConfig;
        let nats = NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            ..NatsConfig::default()
        };
        let all = ["#".to_string()];
        let settings = BridgeSettings::new("relay", nats, "", &all, &all, "me").unwrap();
        let (mut relay, mut ctx) = shard(0, 2, RelayConfig::default());
        relay.set_bridge(Arc::new(settings));
        relay.handle_start(&mut ctx);
        let conn = ctx.take_connects()[0].conn;
        let info = StreamInfo {
            conn,
            listener: ringport_plugin::ListenerId::OUTBOUND,
            peer: SocketAddr::from(([127, 0, 0, 1], 4222)),
            local: SocketAddr::from(([127, 0, 0, 1], 40001)),
        };
        relay.handle_connected(&mut ctx, &info, CONNECT_TAG);
        feed(
            &mut relay,
            &mut ctx,
            conn,
            b"INFO {\"server_id\":\"S\",\"headers\":true}\r\n",
        );
        feed(&mut relay, &mut ctx, conn, b"PONG\r\n");
        ctx.take_written(conn);
        (relay, ctx, conn)
    }

    #[test]
    fn the_bridge_shard_exports_every_shards_publishes_once() {
        let (mut zero, mut zctx, nats) = bridged();
        let (mut one, mut octx) = shard(1, 2, RelayConfig::default());
        // Shard 1 gets a bridge too, and ignores it: only shard 0 connects.
        one.set_bridge(zero.bridge().unwrap().settings().clone().into());
        one.handle_start(&mut octx);
        assert!(octx.connects().is_empty() && one.bridge().is_none());
        feed(&mut one, &mut octx, PUB, &publish(b"s/1", b"a"));
        feed(&mut zero, &mut zctx, PUB, &publish(b"s/2", b"b"));
        carry(&mut octx, 1, (&mut zero, &mut zctx), 0);
        octx.clear();
        feed(&mut one, &mut octx, PUB, &publish(b"s/1", b"c"));
        carry(&mut octx, 1, (&mut zero, &mut zctx), 0);
        let h = "NATS/1.0\r\nRingport-Origin: me\r\n\r\n";
        assert_eq!(
            String::from_utf8(zctx.take_written(nats)).unwrap(),
            format!(
                "HPUB s.2 33 34\r\n{h}b\r\nHPUB s.1 33 34\r\n{h}a\r\nHPUB s.1 33 34\r\n{h}c\r\n"
            )
        );
        // Shard 1 exported nothing itself (no stream of its own to NATS).
        assert!(octx.connects().is_empty());
    }

    #[test]
    fn imports_reach_every_shard_marked_and_are_not_exported() {
        let (mut zero, mut zctx, nats) = bridged();
        let (mut one, mut octx) = shard(1, 2, RelayConfig::default());
        feed(&mut zero, &mut zctx, SUB_A, &sub(b"x/y"));
        feed(&mut one, &mut octx, SUB_B, &sub(b"x/y"));
        let msgs = [
            &b"HMSG x.y 1 36 38\r\nNATS/1.0\r\nRingport-Origin: other\r\n\r\nhi\r\n"[..],
            &b"HMSG x.y 1 33 35\r\nNATS/1.0\r\nRingport-Origin: me\r\n\r\nno\r\n"[..],
            &b"MSG x~2 1 1\r\nq\r\n"[..],
        ]
        .concat();
        feed(&mut zero, &mut zctx, nats, &msgs);
        assert_eq!(zctx.written(SUB_A), message(b"x/y", b"hi"));
        let sends = zctx.mesh_sends().to_vec();
        assert_eq!(sends.len(), 1);
        assert_eq!((sends[0].to, sends[0].msg.tag), (1, MESH_TAG_IMPORTED));
        carry(&mut zctx, 0, (&mut one, &mut octx), 1);
        assert_eq!(octx.written(SUB_B), message(b"x/y", b"hi"));
        // Nothing went back to NATS.
        assert_eq!(zctx.written(nats), b"");
        let stats = &zero.bridge().unwrap().settings().stats;
        use crate::nats::BridgeStats;
        assert_eq!(BridgeStats::get(&stats.imported), 2);
        assert_eq!(BridgeStats::get(&stats.dropped_loop), 1);
        // `x~2` is not a spelling the mapping writes.
        assert_eq!(BridgeStats::get(&stats.dropped_unmappable), 1);
        // An imported frame that comes back through the mesh to the bridge
        // shard is delivered, never exported.
        zero.handle_message(
            &mut zctx,
            1,
            MeshMessage {
                tag: MESH_TAG_IMPORTED,
                payload: Bytes::from(publish(b"x/y", b"again")),
            },
        );
        assert_eq!(zctx.written(nats), b"");
    }

    /// Like [`bridged`], with routes: listener 1 exports `a/#` and imports
    /// `x/#`, listener 2 exports nothing and imports `y`. Shard 1 of 2
    /// gets the same settings.
    fn bridged_per_listener() -> (Relay, RecordingContext, ConnId, Relay, RecordingContext) {
        use crate::nats::bridge::CONNECT_TAG;
        use crate::nats::NatsConfig;
        let nats = NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            ..NatsConfig::default()
        };
        let all = ["#".to_string()];
        let mut settings = BridgeSettings::new("relay", nats, "", &all, &all, "me").unwrap();
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        settings
            .add_listener(ListenerId(1), "l1", Some(&v(&["a/#"])), Some(&v(&["x/#"])))
            .unwrap();
        settings
            .add_listener(ListenerId(2), "l2", Some(&[]), Some(&v(&["y"])))
            .unwrap();
        let settings = Arc::new(settings);
        let (mut zero, mut zctx) = shard(0, 2, RelayConfig::default());
        let (mut one, octx) = shard(1, 2, RelayConfig::default());
        zero.set_bridge(settings.clone());
        one.set_bridge(settings);
        zero.handle_start(&mut zctx);
        let conn = zctx.take_connects()[0].conn;
        let info = StreamInfo {
            conn,
            listener: ListenerId::OUTBOUND,
            peer: SocketAddr::from(([127, 0, 0, 1], 4222)),
            local: SocketAddr::from(([127, 0, 0, 1], 40001)),
        };
        zero.handle_connected(&mut zctx, &info, CONNECT_TAG);
        feed(
            &mut zero,
            &mut zctx,
            conn,
            b"INFO {\"server_id\":\"S\",\"headers\":true,\"max_payload\":40}\r\n",
        );
        zctx.take_written(conn);
        feed(&mut zero, &mut zctx, conn, b"PONG\r\n");
        let subs = String::from_utf8(zctx.take_written(conn)).unwrap();
        // One subscription per distinct import subject of the union.
        assert_eq!(subs.matches("SUB ").count(), 3, "{subs}");
        assert!(
            subs.contains("SUB x.> 1\r\n") && subs.contains("SUB y 3\r\n"),
            "{subs}"
        );
        (zero, zctx, conn, one, octx)
    }

    fn open(relay: &mut Relay, ctx: &mut RecordingContext, conn: ConnId, listener: u16) {
        let info = StreamInfo {
            conn,
            listener: ListenerId(listener),
            peer: SocketAddr::from(([127, 0, 0, 1], 40000 + conn.raw() as u16)),
            local: SocketAddr::from(([127, 0, 0, 1], 7400)),
        };
        assert_eq!(relay.handle_open(ctx, &info), Verdict::Accept);
    }

    #[test]
    fn each_listener_exports_what_its_own_filters_take() {
        let (mut zero, mut zctx, nats, mut one, mut octx) = bridged_per_listener();
        const PUB2: ConnId = ConnId::from_raw(4);
        open(&mut one, &mut octx, PUB, 1);
        open(&mut one, &mut octx, PUB2, 2);
        open(&mut zero, &mut zctx, PUB, 1);
        // On shard 1: listener 1 publishes a/1 (exported) and b (not its
        // filter); listener 2 publishes a/2 (it exports nothing).
        feed(&mut one, &mut octx, PUB, &publish(b"a/1", b"p"));
        feed(&mut one, &mut octx, PUB, &publish(b"b", b"q"));
        feed(&mut one, &mut octx, PUB2, &publish(b"a/2", b"r"));
        let tags: Vec<u64> = octx.mesh_sends().iter().map(|s| s.msg.tag).collect();
        assert_eq!(
            tags,
            [
                publish_tag(ListenerId(1)),
                publish_tag(ListenerId(1)),
                publish_tag(ListenerId(2))
            ]
        );
        carry(&mut octx, 1, (&mut zero, &mut zctx), 0);
        // On shard 0 itself, listener 1; and a datagram on listener 2.
        feed(&mut zero, &mut zctx, PUB, &publish(b"a", b"s"));
        let dgram = publish(b"a/3", b"t");
        let mut on2 = from();
        on2.listener = ListenerId(2);
        assert_eq!(zero.handle_datagram(&mut zctx, &on2, &dgram), Ok(()));
        // Too large for the server (max_payload 40 with a 33-byte header).
        feed(&mut zero, &mut zctx, PUB, &publish(b"a/big", b"0123456789"));
        let h = "NATS/1.0\r\nRingport-Origin: me\r\n\r\n";
        assert_eq!(
            String::from_utf8(zctx.take_written(nats)).unwrap(),
            format!("HPUB a.1 33 34\r\n{h}p\r\nHPUB a 33 34\r\n{h}s\r\n")
        );
        let settings = zero.bridge().unwrap().settings();
        let get = crate::nats::BridgeStats::get;
        let l1 = &settings.route(ListenerId(1)).unwrap().stats;
        let l2 = &settings.route(ListenerId(2)).unwrap().stats;
        assert_eq!((get(&l1.exported), get(&l2.exported)), (2, 0));
        assert_eq!(get(&l1.dropped_too_large), 1);
        assert_eq!(get(&l2.dropped_too_large), 0);
        assert_eq!(get(&settings.stats.dropped_too_large), 1);
    }

    #[test]
    fn imports_reach_only_subscribers_of_listeners_that_import_them() {
        let (mut zero, mut zctx, nats, mut one, mut octx) = bridged_per_listener();
        // Listener 1 subscribers on both shards, listener 2 ones too.
        open(&mut zero, &mut zctx, SUB_A, 1);
        open(&mut zero, &mut zctx, SUB_B, 2);
        open(&mut one, &mut octx, SUB_A, 2);
        open(&mut one, &mut octx, SUB_B, 1);
        for (relay, ctx) in [(&mut zero, &mut zctx), (&mut one, &mut octx)] {
            feed(relay, ctx, SUB_A, &[sub(b"x/1"), sub(b"y")].concat());
            feed(relay, ctx, SUB_B, &[sub(b"x/1"), sub(b"y")].concat());
        }
        let msgs = [
            &b"HMSG x.1 1 36 38\r\nNATS/1.0\r\nRingport-Origin: other\r\n\r\nhi\r\n"[..],
            &b"HMSG y 3 36 38\r\nNATS/1.0\r\nRingport-Origin: other\r\n\r\nyo\r\n"[..],
        ]
        .concat();
        feed(&mut zero, &mut zctx, nats, &msgs);
        carry(&mut zctx, 0, (&mut one, &mut octx), 1);
        // x/1 reaches listener 1's subscribers, y listener 2's only.
        assert_eq!(zctx.written(SUB_A), message(b"x/1", b"hi"));
        assert_eq!(zctx.written(SUB_B), message(b"y", b"yo"));
        assert_eq!(octx.written(SUB_A), message(b"y", b"yo"));
        assert_eq!(octx.written(SUB_B), message(b"x/1", b"hi"));
        let settings = zero.bridge().unwrap().settings();
        let get = crate::nats::BridgeStats::get;
        let l1 = &settings.route(ListenerId(1)).unwrap().stats;
        let l2 = &settings.route(ListenerId(2)).unwrap().stats;
        assert_eq!((get(&l1.imported), get(&l2.imported)), (1, 1));
        assert_eq!(get(&settings.stats.imported), 2);
        // A closed stream's listener is forgotten.
        one.handle_close(&mut octx, SUB_A, CloseReason::PeerClosed);
        assert!(!one.conn_listener.contains_key(&SUB_A));
    }

    /// Two bridges on shards 0 and 1 of 2: bridge 0 (the default, no
    /// login) for listener 1, bridge 1 (user `b`, its own buffer of two
    /// messages) for listener 2; both every topic both ways. Returns both
    /// shards and the bridges' streams, logged in.
    #[allow(clippy::type_complexity)]
    fn two_bridges() -> (
        Relay,
        RecordingContext,
        Relay,
        RecordingContext,
        [ConnId; 2],
        Arc<BridgeSet>,
    ) {
        use crate::nats::bridge::{token, CONNECT_TAG};
        let set = crate::nats::set::two_test_bridges("relay", 2);
        let (mut zero, mut zctx) = shard(0, 2, RelayConfig::default());
        let (mut one, mut octx) = shard(1, 2, RelayConfig::default());
        zero.set_bridges(set.clone());
        one.set_bridges(set.clone());
        one.handle_start(&mut octx);
        assert!(octx.connects().is_empty());
        zero.handle_start(&mut zctx);
        let connects = zctx.take_connects();
        assert_eq!(connects.len(), 2);
        let conns = [connects[0].conn, connects[1].conn];
        for (i, conn) in conns.into_iter().enumerate() {
            let info = StreamInfo {
                conn,
                listener: ListenerId::OUTBOUND,
                peer: SocketAddr::from(([127, 0, 0, 1], 4222)),
                local: SocketAddr::from(([127, 0, 0, 1], 40001 + i as u16)),
            };
            zero.handle_connected(&mut zctx, &info, token(CONNECT_TAG, i as u16));
            feed(
                &mut zero,
                &mut zctx,
                conn,
                b"INFO {\"server_id\":\"S\",\"headers\":true}\r\n",
            );
            let login = String::from_utf8(zctx.take_written(conn)).unwrap();
            // Each connection logs in as its own bridge's user.
            assert_eq!(login.contains("\"user\":\"b\""), i == 1, "{login}");
            feed(&mut zero, &mut zctx, conn, b"PONG\r\n");
            zctx.take_written(conn);
        }
        (zero, zctx, one, octx, conns, set)
    }

    #[test]
    fn each_listener_exports_through_its_own_bridge() {
        let (mut zero, mut zctx, mut one, mut octx, [c0, c1], set) = two_bridges();
        const PUB2: ConnId = ConnId::from_raw(4);
        open(&mut one, &mut octx, PUB, 1);
        open(&mut one, &mut octx, PUB2, 2);
        feed(&mut one, &mut octx, PUB, &publish(b"a/1", b"p"));
        feed(&mut one, &mut octx, PUB2, &publish(b"a/2", b"q"));
        carry(&mut octx, 1, (&mut zero, &mut zctx), 0);
        // A datagram on listener 2 at shard 0 itself.
        let mut on2 = from();
        on2.listener = ListenerId(2);
        let dgram = publish(b"a/3", b"r");
        assert_eq!(zero.handle_datagram(&mut zctx, &on2, &dgram), Ok(()));
        let h = "NATS/1.0\r\nRingport-Origin: me\r\n\r\n";
        assert_eq!(
            String::from_utf8(zctx.take_written(c0)).unwrap(),
            format!("HPUB a.1 33 34\r\n{h}p\r\n")
        );
        assert_eq!(
            String::from_utf8(zctx.take_written(c1)).unwrap(),
            format!("HPUB a.2 33 34\r\n{h}q\r\nHPUB a.3 33 34\r\n{h}r\r\n")
        );
        let get = crate::nats::BridgeStats::get;
        let [b0, b1] = set.bridges() else {
            panic!("two bridges")
        };
        assert_eq!((get(&b0.stats.exported), get(&b1.stats.exported)), (1, 2));
        // Bridge 1's stream closes: its buffer (two messages) fills and the
        // third export is dropped on bridge 1 only; bridge 0 goes on.
        zero.handle_close(&mut zctx, c1, CloseReason::PeerClosed);
        for payload in [b"1", b"2", b"3"] {
            assert_eq!(
                zero.handle_datagram(&mut zctx, &on2, &publish(b"a/4", payload)),
                Ok(())
            );
        }
        open(&mut zero, &mut zctx, PUB, 1);
        feed(&mut zero, &mut zctx, PUB, &publish(b"a/5", b"s"));
        assert_eq!(
            String::from_utf8(zctx.take_written(c0)).unwrap(),
            format!("HPUB a.5 33 34\r\n{h}s\r\n")
        );
        assert_eq!(get(&b1.stats.dropped_buffer_full), 1);
        assert_eq!(get(&b1.stats.buffered_messages), 2);
        assert_eq!(get(&b0.stats.dropped_buffer_full), 0);
        assert_eq!(
            get(&b1.route(ListenerId(2)).unwrap().stats.dropped_buffer_full),
            1
        );
        assert_eq!(get(&b0.stats.exported), 2);
    }

    #[test]
    fn each_bridge_imports_for_its_own_listeners_only() {
        let (mut zero, mut zctx, mut one, mut octx, [c0, c1], set) = two_bridges();
        // Listener 1 and 2 subscribers of x/1 on both shards.
        open(&mut zero, &mut zctx, SUB_A, 1);
        open(&mut zero, &mut zctx, SUB_B, 2);
        open(&mut one, &mut octx, SUB_A, 2);
        open(&mut one, &mut octx, SUB_B, 1);
        for (relay, ctx) in [(&mut zero, &mut zctx), (&mut one, &mut octx)] {
            feed(relay, ctx, SUB_A, &sub(b"x/1"));
            feed(relay, ctx, SUB_B, &sub(b"x/1"));
        }
        let hmsg = |origin: &str, payload: &str| {
            let h = format!("NATS/1.0\r\nRingport-Origin: {origin}\r\n\r\n");
            format!(
                "HMSG x.1 1 {} {}\r\n{h}{payload}\r\n",
                h.len(),
                h.len() + payload.len()
            )
            .into_bytes()
        };
        // Through bridge 1, then bridge 0: each reaches its own listeners'
        // subscribers only, on both shards.
        feed(&mut zero, &mut zctx, c1, &hmsg("other", "b1"));
        feed(&mut zero, &mut zctx, c0, &hmsg("other", "b0"));
        let tags: Vec<u64> = zctx.mesh_sends().iter().map(|s| s.msg.tag).collect();
        assert_eq!(tags, [imported_tag(1), imported_tag(0)]);
        assert_eq!(imported_tag(0), MESH_TAG_IMPORTED);
        carry(&mut zctx, 0, (&mut one, &mut octx), 1);
        assert_eq!(zctx.take_written(SUB_A), message(b"x/1", b"b0"));
        assert_eq!(zctx.take_written(SUB_B), message(b"x/1", b"b1"));
        assert_eq!(octx.take_written(SUB_A), message(b"x/1", b"b1"));
        assert_eq!(octx.take_written(SUB_B), message(b"x/1", b"b0"));
        // Our own export, seen by the other bridge: a loop, dropped there.
        feed(&mut zero, &mut zctx, c1, &hmsg("me", "loop"));
        assert_eq!(zctx.take_written(SUB_B), b"");
        let get = crate::nats::BridgeStats::get;
        let [b0, b1] = set.bridges() else {
            panic!("two bridges")
        };
        assert_eq!((get(&b0.stats.imported), get(&b1.stats.imported)), (1, 1));
        assert_eq!(
            (get(&b0.stats.dropped_loop), get(&b1.stats.dropped_loop)),
            (0, 1)
        );
        assert_eq!(get(&b0.route(ListenerId(1)).unwrap().stats.imported), 1);
        assert_eq!(get(&b1.route(ListenerId(2)).unwrap().stats.imported), 1);
    }

    #[test]
    fn the_listener_id_rides_in_the_publish_tag() {
        assert_eq!(publish_tag(ListenerId(0)), MESH_TAG_PUBLISH);
        assert_eq!(publish_tag(ListenerId(7)), (7 << 32) | 1);
        assert_eq!(
            split_tag(publish_tag(ListenerId(u16::MAX))),
            (MESH_TAG_PUBLISH, ListenerId(u16::MAX))
        );
        assert_eq!(
            split_tag(MESH_TAG_IMPORTED),
            (MESH_TAG_IMPORTED, ListenerId(0))
        );
    }

    #[test]
    fn factory_settings() {
        let factory = RelayFactory::default();
        assert_eq!(factory.name(), "relay");
        assert!(factory.supports(Transport::Tcp) && factory.supports(Transport::Udp));
        assert_eq!(factory.config().max_payload, 65536);
        assert_eq!(factory.config().max_subscriptions, 256);
        assert!(!factory.config().disconnect_slow);
        let mut plugin = factory.create(0, 1);
        let mut ctx = RecordingContext::new();
        let frame = sub(b"t");
        assert_eq!(plugin.handle_data(&mut ctx, SUB_A, &frame), Ok(frame.len()));
    }
}
