//! The plugin: one [`Mqtt`] instance per shard, made by [`MqttFactory`].

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringport_plugin::{
    CloseReason, ConnId, Context, DropReason, MeshMessage, Plugin, PluginFactory, ShardId,
    StreamInfo, Transport, Verdict,
};

use super::config::MqttConfig;
use super::conn::{Conn, Phase};
use super::handover::DelayedWill;
use super::ids::ClientIds;
use super::message::Message;
use super::route::MeshOut;
use super::session::Session;
use super::snapshot::{Restore, Store};
use super::stats::{ClientStatus, ListenerStats, MqttDrop, MqttStats, ShardStats, NO_LISTENER};
use crate::mqtt::persist::Snapshot;
use crate::mqtt::trie::{RetainedStore, SubEntry, SubscriptionTable};

/// Timer token of the once-a-second sweep (keep-alive, expiries, wills, status).
pub const TICK_TIMER: u64 = 1;
/// Timer token of the retry timer (full mesh rings).
pub const RETRY_TIMER: u64 = 2;
/// How often the sweep runs while anything is connected or kept.
pub const TICK: Duration = Duration::from_secs(1);

/// Makes one [`Mqtt`] instance per shard; serves TCP streams (and TLS ones,
/// which the engine hands over as plaintext).
#[derive(Debug, Clone)]
pub struct MqttFactory {
    config: Arc<MqttConfig>,
    stats: Arc<MqttStats>,
    store: Arc<Store>,
    bridge: Option<Arc<crate::nats::BridgeSet>>,
}

impl MqttFactory {
    /// The name used in listener specs (`mqtt@tcp:127.0.0.1:1883`).
    pub const NAME: &'static str = "mqtt";

    /// A factory whose instances use `config`.
    pub fn new(config: MqttConfig) -> Self {
        MqttFactory {
            config: Arc::new(config),
            stats: Arc::new(MqttStats::default()),
            store: Arc::new(Store::default()),
            bridge: None,
        }
    }

    /// The same factory with a NATS bridge: the instance on
    /// [`BRIDGE_SHARD`](super::BRIDGE_SHARD) connects to NATS with `bridge`.
    pub fn with_bridge(self, bridge: Arc<crate::nats::BridgeSettings>) -> Self {
        self.with_bridges(Arc::new(crate::nats::BridgeSet::single(bridge)))
    }

    /// The same factory with NATS bridges, one per distinct connection
    /// settings of its listeners (run by the instance on `BRIDGE_SHARD`).
    pub fn with_bridges(mut self, bridges: Arc<crate::nats::BridgeSet>) -> Self {
        self.bridge = Some(bridges);
        self
    }

    /// Restores retained messages and persistent sessions from `snapshot`
    /// (read from disk with [`decode_snapshot`]). Call it before the engine
    /// creates the instances: each instance takes its part when created
    /// and applies it when its shard starts (`handle_start`), or on its
    /// first input if nothing started it. `wall_now`: seconds since the
    /// UNIX epoch now; sessions whose expiry passed while on disk, and
    /// messages whose Message Expiry Interval did, are not restored.
    ///
    /// [`decode_snapshot`]: crate::mqtt::persist::decode_snapshot
    pub fn restore(&self, snapshot: Snapshot, wall_now: u64) {
        self.store.set_restore(snapshot, wall_now);
    }

    /// The retained messages and persistent sessions (session expiry above
    /// 0) as the shards last published them: every
    /// [`MqttConfig::snapshot_interval`] and when the engine shut them down
    /// (after a graceful stop the snapshot is complete). `now` and
    /// `wall_now` (seconds since the UNIX epoch) are the current time on the
    /// engine's clock and on the wall clock. Write it with
    /// [`encode_snapshot`].
    ///
    /// [`encode_snapshot`]: crate::mqtt::persist::encode_snapshot
    pub fn snapshot(&self, now: Instant, wall_now: u64) -> Snapshot {
        self.store.snapshot(now, wall_now)
    }

    /// The settings.
    pub fn config(&self) -> &MqttConfig {
        &self.config
    }

    /// The counters of every shard, readable from any thread.
    pub fn stats(&self) -> Arc<MqttStats> {
        Arc::clone(&self.stats)
    }

    /// Every shard's last per-client snapshot (refreshed by each shard every
    /// [`MqttConfig::status_interval`] while it has sessions).
    pub fn status(&self) -> Vec<ClientStatus> {
        self.stats.status()
    }

    /// An instance, typed (what [`PluginFactory::create`] boxes).
    pub fn instance(&self, shard: ShardId, shard_count: usize) -> Mqtt {
        let mut m = Mqtt::new(
            Arc::clone(&self.config),
            self.stats.slot(shard),
            shard,
            shard_count,
        );
        m.store = Arc::clone(&self.store);
        m.restore = self.store.restore_for(shard, shard_count.max(1));
        if let Some(bridge) = &self.bridge {
            m.set_bridges(Arc::clone(bridge));
        }
        m
    }
}

impl PluginFactory for MqttFactory {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn supports(&self, transport: Transport) -> bool {
        transport == Transport::Tcp
    }

    fn create(&self, shard: ShardId, shard_count: usize) -> Box<dyn Plugin> {
        Box::new(self.instance(shard, shard_count))
    }
}

/// A map keyed by ids this broker or the engine made (connection ids,
/// session keys): never chosen by a client, so a fast hash will do.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A multiplicative hash of one integer (SipHash costs more than the
/// lookups it guards on the per-message path).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        let h = (self.0 ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Drop for Mqtt {
    /// The engine stopped this shard: with persistence on, its last image,
    /// so that the save after a graceful stop has every session and
    /// retained message as they were left, even when no connection was open
    /// at the stop (whose close would have published one). A shard that
    /// never had an input still holds its restored part, which the store
    /// keeps on its own.
    fn drop(&mut self) {
        if self.cfg.snapshot_interval.is_some() && self.restore.is_none() {
            if let Some(now) = self.last_now {
                self.save_image(now);
            }
        }
    }
}

/// Whether `after` has passed since `since` (never, for a duration too
/// long to add).
fn passed(now: Instant, since: Instant, after: Duration) -> bool {
    since.checked_add(after).is_some_and(|t| now >= t)
}

/// A subscriber of a shared subscription group, as its home shard knows it.
pub(crate) type Member = (ShardId, u64);

/// The MQTT broker of one shard.
///
/// Inputs: client streams, messages from the other shards' instances (a
/// publication, a session on the move, a shared subscription delivery),
/// two timers. Each input first retries the messages waiting for full mesh
/// rings, then is handled, then the messages it sent to this very shard are
/// handled, then the acknowledgements those rings held back go out.
/// Clients whose outbound queue was full are retried when the engine says
/// their queue has room again (`handle_writable`) and whenever they send
/// something, never on a timer nor on every input: a thousand stuck
/// subscribers cost nothing per message and nothing while they stay stuck.
///
/// State: connections, the sessions held here (connected or not), this
/// shard's subscription table (plain filters of its sessions), the shared
/// subscription groups whose home is this shard, a replica of every retained
/// message, and the directory of client ids whose home is this shard.
#[derive(Debug)]
pub struct Mqtt {
    pub(crate) cfg: Arc<MqttConfig>,
    pub(crate) stats: Arc<ShardStats>,
    /// This shard's counters of each listener, by listener id (grown when
    /// a listener's first connection opens), so that counting is an index,
    /// not a lookup.
    pub(crate) lstats: Vec<Arc<ListenerStats>>,
    /// The counters of what no listener served ([`NO_LISTENER`]).
    pub(crate) unattributed: Arc<ListenerStats>,
    pub(crate) shard: ShardId,
    pub(crate) shard_count: usize,
    /// Connections and sessions are boxed: a table of boxes grows by
    /// 16-byte entries (a table of the structs themselves would hold up to
    /// twice their size in empty slots), and moving a session in or out is
    /// a pointer copy.
    pub(crate) conns: IdMap<ConnId, Box<Conn>>,
    pub(crate) sessions: IdMap<u64, Box<Session>>,
    /// The directory of the client ids whose home is this shard, and the
    /// sessions held here by client id: one map.
    pub(crate) ids: ClientIds,
    pub(crate) next_epoch: super::ids::Epoch,
    pub(crate) next_key: u64,
    pub(crate) subs: SubscriptionTable<u64>,
    pub(crate) shared: SubscriptionTable<Member>,
    pub(crate) retained: RetainedStore<Arc<Message>>,
    pub(crate) mesh: MeshOut,
    pub(crate) pending_acks: VecDeque<PendingAck>,
    /// Connections with bytes owed or messages waiting for room.
    pub(crate) blocked: Vec<ConnId>,
    pub(crate) wills: Vec<DelayedWill>,
    /// Session hand-overs to pass on when they arrive (a race of CONNECTs).
    /// Where to pass the session of an awaited connection on to, by its raw id.
    pub(crate) forward: HashMap<u64, super::handover::Forward>,
    /// Connections (raw ids) of this shard whose session has not arrived.
    pub(crate) awaiting: std::collections::HashSet<u64>,
    pub(crate) scratch: Vec<u8>,
    pub(crate) matched: Vec<(u64, SubEntry)>,
    pub(crate) matched_shared: Vec<(Member, SubEntry, Arc<str>)>,
    /// The last publication nobody kept (delivered at once, not queued,
    /// not retained): its allocations serve the next one.
    pub(crate) spare: Option<Arc<Message>>,
    pub(crate) tick_armed: bool,
    pub(crate) retry_armed: bool,
    pub(crate) last_status: Option<Instant>,
    pub(crate) assigned_ids: u64,
    /// Connections past their CONNACK.
    pub(crate) connected: usize,
    pub(crate) store: Arc<Store>,
    /// Restored state to apply at start (or on the first input).
    pub(crate) restore: Option<Restore>,
    pub(crate) last_image: Option<Instant>,
    /// The engine's time at the last input (for the image saved when the
    /// instance is dropped).
    pub(crate) last_now: Option<Instant>,
    /// The engine is shutting down: publish an image after this input.
    pub(crate) save_image_now: bool,
    pub(crate) shutting_down: bool,
    /// The NATS bridge, on [`BRIDGE_SHARD`](super::BRIDGE_SHARD) only.
    pub(crate) bridge: Option<crate::nats::Bridges>,
    /// Settings of the bridges made at `handle_start`.
    pub(crate) bridge_settings: Option<Arc<crate::nats::BridgeSet>>,
}

/// An acknowledgement held until every shard's ring took the message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingAck {
    pub seq: u64,
    pub conn: ConnId,
    pub pid: u16,
    /// PUBACK (true) or PUBREC (false).
    pub puback: bool,
}

impl Mqtt {
    /// The instance for `shard` of `shard_count`, counting into `stats`.
    pub(crate) fn new(
        cfg: Arc<MqttConfig>,
        stats: Arc<ShardStats>,
        shard: ShardId,
        shard_count: usize,
    ) -> Self {
        let max_retained = cfg.max_retained;
        let unattributed = stats.listener_slot(NO_LISTENER);
        Mqtt {
            cfg,
            stats,
            lstats: Vec::new(),
            unattributed,
            shard,
            shard_count: shard_count.max(1),
            conns: IdMap::default(),
            sessions: IdMap::default(),
            ids: ClientIds::default(),
            next_epoch: 1,
            next_key: 1,
            subs: SubscriptionTable::new(),
            shared: SubscriptionTable::new(),
            retained: RetainedStore::new(max_retained),
            mesh: MeshOut::new(shard, shard_count.max(1)),
            pending_acks: VecDeque::new(),
            blocked: Vec::new(),
            wills: Vec::new(),
            forward: HashMap::new(),
            awaiting: Default::default(),
            scratch: Vec::new(),
            matched: Vec::new(),
            matched_shared: Vec::new(),
            spare: None,
            tick_armed: false,
            retry_armed: false,
            last_status: None,
            assigned_ids: 0,
            connected: 0,
            store: Arc::new(Store::default()),
            restore: None,
            last_image: None,
            last_now: None,
            save_image_now: false,
            shutting_down: false,
            bridge: None,
            bridge_settings: None,
        }
    }

    /// Sessions held on this shard (connected or not).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Retained messages in this shard's replica.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// A new session key, unique across shards (the shard in the top bits).
    pub(crate) fn new_key(&mut self) -> u64 {
        let k = (self.shard as u64) << 48 | self.next_key;
        self.next_key += 1;
        k
    }

    /// The counters of `listener` on this shard (an index; [`NO_LISTENER`]
    /// or an id not seen yet: the unattributed slot).
    pub(crate) fn at(&self, listener: u16) -> &ListenerStats {
        self.lstats
            .get(usize::from(listener))
            .unwrap_or(&self.unattributed)
    }

    /// The listener `conn` came through ([`NO_LISTENER`] for an unknown id).
    pub(crate) fn listener_of(&self, conn: ConnId) -> u16 {
        self.conns.get(&conn).map_or(NO_LISTENER, |c| c.listener)
    }

    /// Counts a drop no listener served (see [`NO_LISTENER`]) in the
    /// broker's and the engine's counters.
    pub(crate) fn count(&self, ctx: &mut dyn Context, kind: MqttDrop) {
        self.count_at(ctx, NO_LISTENER, kind);
    }

    /// Counts a drop under `listener`, and in the engine's counters.
    pub(crate) fn count_at(&self, ctx: &mut dyn Context, listener: u16, kind: MqttDrop) {
        self.at(listener).dropped(kind);
        ctx.record_drop(kind.engine_reason());
    }

    /// Counts a drop under the listener `conn` came through.
    pub(crate) fn count_conn(&self, ctx: &mut dyn Context, conn: ConnId, kind: MqttDrop) {
        self.count_at(ctx, self.listener_of(conn), kind);
    }

    /// Before an input: retries what waits for mesh rings. (Clients that
    /// were not reading are retried on the timer, and when they send.)
    fn enter(&mut self, ctx: &mut dyn Context) {
        self.last_now = Some(ctx.now());
        if let Some(r) = self.restore.take() {
            self.apply_restore(ctx, r);
        }
        if self.mesh.waiting() > 0 {
            self.mesh.poll(ctx);
        }
    }

    /// After an input: handles messages to this shard, releases
    /// acknowledgements, refreshes gauges, arms timers.
    fn leave(&mut self, ctx: &mut dyn Context) {
        let mut rounds = 0;
        while let Some(m) = self.mesh.loopback.pop_front() {
            self.handle_mesh(ctx, self.shard, m);
            rounds += 1;
            if rounds > 100_000 {
                break;
            }
        }
        self.release_acks(ctx);
        if std::mem::take(&mut self.save_image_now) {
            self.save_image(ctx.now());
        }
        self.stats.set_sessions(self.sessions.len());
        self.stats.set_retained(self.retained.len());
        self.stats
            .set_subscriptions(self.subs.len() + self.shared.len());
        self.stats.set_mesh_waiting(self.mesh.waiting());
        self.arm_timers(ctx);
    }

    /// Writes the acknowledgements whose messages every ring took.
    pub(crate) fn release_acks(&mut self, ctx: &mut dyn Context) {
        while let Some(a) = self.pending_acks.front().copied() {
            if !self.mesh.taken(a.seq) {
                break;
            }
            self.pending_acks.pop_front();
            if let Some(c) = self.conns.get_mut(&a.conn) {
                c.unacked = c.unacked.saturating_sub(1);
            }
            self.write_ack(ctx, a.conn, a.pid, a.puback);
        }
    }

    fn arm_timers(&mut self, ctx: &mut dyn Context) {
        let mesh = self.mesh.waiting() > 0 || !self.pending_acks.is_empty();
        if !self.retry_armed && mesh {
            ctx.set_timer(self.cfg.retry_interval, RETRY_TIMER);
            self.retry_armed = true;
        }
        if !self.tick_armed
            && (!self.conns.is_empty() || !self.sessions.is_empty() || !self.wills.is_empty())
        {
            ctx.set_timer(TICK, TICK_TIMER);
            self.tick_armed = true;
        }
    }

    /// The once-a-second sweep.
    fn tick(&mut self, ctx: &mut dyn Context, now: Instant) {
        // Keep-alive (1.5 times the interval) and CONNECT deadlines.
        let mut late: Vec<(ConnId, MqttDrop)> = Vec::new();
        for (&id, c) in &self.conns {
            match c.phase {
                Phase::AwaitConnect | Phase::Connecting
                    if passed(now, c.since, self.cfg.connect_timeout) =>
                {
                    late.push((id, MqttDrop::ConnectTimeout));
                }
                Phase::Connected if c.keep_alive > 0 => {
                    let limit = Duration::from_millis(u64::from(c.keep_alive) * 1500);
                    if now >= c.since + limit {
                        late.push((id, MqttDrop::KeepAliveTimeout));
                    }
                }
                _ => {}
            }
        }
        for (id, kind) in late {
            let code = if kind == MqttDrop::KeepAliveTimeout {
                0x8D
            } else {
                0x82
            };
            self.count_conn(ctx, id, kind);
            self.close_conn(ctx, id, Some(code), false);
        }
        self.expire_sessions(ctx, now);
        self.fire_wills(ctx, now);
        if let Some(events) = &self.cfg.events {
            for s in self.sessions.values_mut() {
                let (now, was) = (s.drops(), s.drops_reported());
                if now != was {
                    events.client_drops(&super::config::ClientDropsEvent {
                        shard: self.shard,
                        client_id: &s.client_id,
                        qos0: now.qos0 - was.qos0,
                        qos12: now.qos12 - was.qos12,
                        other: now.other - was.other,
                    });
                    s.drops_were_reported();
                }
            }
        }
        let due = self
            .last_status
            .map_or(true, |t| passed(now, t, self.cfg.status_interval));
        if due {
            self.last_status = Some(now);
            self.refresh_status();
        }
        if let Some(every) = self.cfg.snapshot_interval {
            if self.last_image.map_or(true, |t| passed(now, t, every)) {
                self.last_image = Some(now);
                self.save_image(now);
            }
        }
    }

    /// Publishes this shard's per-client snapshot: the
    /// `status_max_clients` sessions with the most drops (then by client
    /// id). Never holds more than twice that many entries, whatever the
    /// number of sessions.
    pub(crate) fn refresh_status(&self) {
        let max = self.cfg.status_max_clients;
        let order = |a: &ClientStatus, b: &ClientStatus| {
            let da = a.dropped_qos0 + a.dropped_qos12 + a.dropped_other;
            let db = b.dropped_qos0 + b.dropped_qos12 + b.dropped_other;
            db.cmp(&da).then_with(|| a.client_id.cmp(&b.client_id))
        };
        let mut list: Vec<ClientStatus> = Vec::new();
        for s in self.sessions.values() {
            let drops = s.drops();
            list.push(ClientStatus {
                shard: self.shard,
                client_id: Arc::clone(&s.client_id),
                connected: s.conn.is_some(),
                queued: u32::try_from(s.flow.queue.len()).unwrap_or(u32::MAX),
                inflight: u32::try_from(s.flow.inflight.len()).unwrap_or(u32::MAX),
                subscriptions: u32::try_from(s.subs.len()).unwrap_or(u32::MAX),
                dropped_qos0: drops.qos0,
                dropped_qos12: drops.qos12,
                dropped_other: drops.other,
            });
            if list.len() >= max.saturating_mul(2).max(2) {
                list.sort_by(order);
                list.truncate(max);
            }
        }
        list.sort_by(order);
        list.truncate(max);
        list.shrink_to_fit();
        self.stats.set_status(list);
    }
}

impl Plugin for Mqtt {
    /// The shard starts: its part of a restored image is applied now (so
    /// that `/metrics` and `/status` show the restored sessions and
    /// retained messages, and their timers run, before any client comes),
    /// and shard 0 opens the NATS bridge's connection.
    fn handle_start(&mut self, ctx: &mut dyn Context) {
        self.enter(ctx);
        self.bridge_start(ctx);
        self.leave(ctx);
    }

    fn handle_connected(&mut self, ctx: &mut dyn Context, stream: &StreamInfo, tag: u64) {
        self.enter(ctx);
        if !self.bridge_connected(ctx, stream, tag) {
            ctx.close(stream.conn);
        }
        self.leave(ctx);
    }

    fn handle_connect_failed(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        tag: u64,
        failure: ringport_plugin::ConnectFailure,
    ) {
        self.enter(ctx);
        self.bridge_connect_failed(ctx, conn, tag, failure);
        self.leave(ctx);
    }

    fn handle_open(&mut self, ctx: &mut dyn Context, stream: &StreamInfo) -> Verdict {
        self.enter(ctx);
        let listener = stream.listener.0;
        if listener != NO_LISTENER {
            while self.lstats.len() <= usize::from(listener) {
                let next = self.lstats.len() as u16;
                self.lstats.push(self.stats.listener_slot(next));
            }
        }
        self.conns
            .insert(stream.conn, Box::new(Conn::new(listener, ctx.now())));
        self.leave(ctx);
        Verdict::Accept
    }

    fn handle_data(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        data: &[u8],
    ) -> Result<usize, DropReason> {
        self.enter(ctx);
        if self.bridge_owns(conn) {
            let n = self.bridge_data(ctx, conn, data);
            self.leave(ctx);
            return Ok(n);
        }
        if self.is_blocked(conn) {
            // It reads again, perhaps: what waits for it goes first.
            self.unblock(ctx, conn);
        }
        let r = self.on_data(ctx, conn, data);
        self.leave(ctx);
        Ok(r)
    }

    fn handle_close(&mut self, ctx: &mut dyn Context, conn: ConnId, reason: CloseReason) {
        self.enter(ctx);
        if self.bridge_owns(conn) {
            self.bridge_close(ctx, conn);
            self.leave(ctx);
            return;
        }
        if reason == CloseReason::Shutdown && !self.shutting_down {
            // The first close of the shutdown: an image for the last
            // snapshot (connected sessions count as left now), in case the
            // engine stops before the last close.
            self.shutting_down = true;
            self.save_image_now = true;
        }
        self.close_conn(ctx, conn, None, true);
        self.conns.remove(&conn);
        self.blocked.retain(|c| *c != conn);
        if self.shutting_down && self.conns.is_empty() {
            // The last one: the image with every session as it was left.
            self.save_image_now = true;
        }
        self.leave(ctx);
    }

    fn handle_writable(&mut self, ctx: &mut dyn Context, conn: ConnId) {
        let Some(at) = self.blocked.iter().position(|c| *c == conn) else {
            return;
        };
        self.enter(ctx);
        self.blocked.swap_remove(at);
        if self.unblock(ctx, conn) {
            self.blocked.push(conn);
        }
        self.leave(ctx);
    }

    fn handle_message(&mut self, ctx: &mut dyn Context, from: ShardId, msg: MeshMessage) {
        self.enter(ctx);
        self.handle_mesh(ctx, from, msg);
        self.leave(ctx);
    }

    fn handle_timer(&mut self, ctx: &mut dyn Context, now: Instant, token: u64) {
        if self.bridge.is_some() {
            self.enter(ctx);
            let ours = self.bridge_timer(ctx, now, token);
            self.leave(ctx);
            if ours {
                return;
            }
        }
        match token {
            TICK_TIMER => self.tick_armed = false,
            RETRY_TIMER => self.retry_armed = false,
            _ => {}
        }
        self.enter(ctx);
        if token == TICK_TIMER {
            self.tick(ctx, now);
        }
        self.leave(ctx);
    }
}
