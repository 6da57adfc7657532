//! Publications: routing (this shard, the other shards, retained
//! messages), matching, and the delivery to each session with its window,
//! queue and drop policy.

use std::sync::Arc;

use ringport_plugin::{shard_for_key, Bytes, ConnId, Context, ListenerId, WriteError};

use super::bridge::write_scope;
use super::message::{Message, Writer};
use super::plugin::Member;
use super::plugin::Mqtt;
use super::route::{Sent, MAX_SHARE_HOPS, TAG_PUBLISH, TAG_RETAIN, TAG_SHARE_DELIVER};
use super::session::{encode_entry, Flight, Inflight, OutAliases, Outgoing};
use super::stats::MqttDrop;
use crate::mqtt::acl::Access;
use crate::mqtt::codec::{
    encode_publish_header, Publish, PublishProps, QoS, SubIds, UserProps, Version,
};
use crate::mqtt::trie::SubEntry;
use crate::nats::ImportScope;

/// Why a PUBLISH was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotSent {
    /// Larger than the client accepts (or than MQTT can encode).
    TooLarge,
    /// The client's outbound queue is full.
    Full,
    /// The stream is gone.
    Gone,
}

impl Mqtt {
    /// Routes a message a client of `listener` published on this shard:
    /// retained store, this shard's subscribers, every other shard (`blob`:
    /// the listener id and the message already encoded for the mesh, if
    /// they were), the NATS bridge. Returns the mesh sequence number a
    /// QoS 1/2 acknowledgement waits for, or `None` when the message was
    /// refused (too many QoS 1/2 bytes waiting for full rings).
    pub(crate) fn route_publish(
        &mut self,
        ctx: &mut dyn Context,
        msg: Arc<Message>,
        blob: Option<Bytes>,
        listener: u16,
    ) -> Option<u64> {
        let reliable = msg.qos != QoS::AtMostOnce;
        if reliable && self.mesh.reliable_bytes > self.cfg.mesh_reliable_bytes {
            self.count(ctx, MqttDrop::MeshFull);
            return None;
        }
        self.retain(ctx, &msg);
        self.deliver_local(ctx, &msg);
        if self.shard_count > 1 {
            let blob = blob.unwrap_or_else(|| {
                let mut w = Writer::default();
                w.u16(listener).message(&msg, ctx.now());
                w.finish()
            });
            let cap = (!reliable).then_some(self.cfg.mesh_retry_bytes);
            for target in (0..self.shard_count).filter(|&s| s != self.shard) {
                if self.mesh.send(ctx, target, TAG_PUBLISH, blob.clone(), cap) == Sent::Dropped {
                    self.count(ctx, MqttDrop::MeshFull);
                }
            }
        }
        self.bridge_export(ctx, &msg, listener);
        Some(self.mesh.seq())
    }

    /// A message a client of `listener` published on another shard
    /// (exported from the bridge shard).
    pub(crate) fn on_remote_publish(
        &mut self,
        ctx: &mut dyn Context,
        msg: Arc<Message>,
        listener: u16,
    ) {
        self.deliver_local(ctx, &msg);
        self.bridge_export(ctx, &msg, listener);
    }

    /// A retained message published here: stored at once (a subscription
    /// that follows on this shard sees it), and ordered by its topic's home
    /// shard, which passes every update on to all other shards in its order:
    /// the last update each replica applies is the home's last, so every
    /// replica ends with the same message.
    fn retain(&mut self, ctx: &mut dyn Context, msg: &Arc<Message>) {
        if !msg.retain || !self.cfg.retain_available {
            return;
        }
        let home = shard_for_key(msg.topic.as_bytes(), self.shard_count);
        if home == self.shard {
            self.on_retain(ctx, Arc::clone(msg));
        } else {
            self.apply_retained(ctx, msg);
            self.send_retain(ctx, home, msg);
        }
    }

    /// A retained message to store: from its topic's home shard (a replica
    /// update), or on the home shard itself (then passed to every other).
    pub(crate) fn on_retain(&mut self, ctx: &mut dyn Context, msg: Arc<Message>) {
        if shard_for_key(msg.topic.as_bytes(), self.shard_count) == self.shard {
            let here = self.shard;
            for target in (0..self.shard_count).filter(|&s| s != here) {
                self.send_retain(ctx, target, &msg);
            }
        }
        self.apply_retained(ctx, &msg);
    }

    fn send_retain(&mut self, ctx: &mut dyn Context, target: usize, msg: &Arc<Message>) {
        let mut w = Writer::default();
        w.message(msg, ctx.now());
        // Waits for a full ring within the QoS 1/2 budget.
        let cap = (self.mesh.reliable_bytes > self.cfg.mesh_reliable_bytes)
            .then_some(self.cfg.mesh_retry_bytes);
        if self.mesh.send(ctx, target, TAG_RETAIN, w.finish(), cap) == Sent::Dropped {
            self.count(ctx, MqttDrop::MeshFull);
        }
    }

    /// Updates this shard's replica of the retained messages.
    fn apply_retained(&mut self, ctx: &mut dyn Context, msg: &Arc<Message>) {
        if msg.payload.is_empty() {
            self.retained.remove(&msg.topic);
        } else if self.retained.set(&msg.topic, Arc::clone(msg)).is_err() {
            self.count(ctx, MqttDrop::RetainedFull);
        }
    }

    /// Delivers to every matching subscription of this shard's sessions,
    /// and picks one member of each matching shared group homed here.
    pub(crate) fn deliver_local(&mut self, ctx: &mut dyn Context, msg: &Arc<Message>) {
        self.deliver_scoped(ctx, msg, None);
    }

    /// [`deliver_local`](Self::deliver_local) of a message from NATS: with
    /// a `scope`, only to sessions whose listener it admits.
    pub(crate) fn deliver_scoped(
        &mut self,
        ctx: &mut dyn Context,
        msg: &Arc<Message>,
        scope: Option<&ImportScope>,
    ) {
        let mut matched = std::mem::take(&mut self.matched);
        matched.clear();
        self.subs.matches(&msg.topic, &mut matched);
        // No Local: not back to the publishing session.
        matched.retain(|(k, e)| !(e.no_local && *k == msg.origin));
        if let Some(scope) = scope {
            let sessions = &self.sessions;
            matched.retain(|(k, _)| admitted(scope, sessions.get(k).map(|s| s.listener)));
        }
        // One filter's members come sorted by key; only overlapping
        // filters need the sort that brings a subscriber's matches together.
        if !matched.windows(2).all(|w| w[0].0 < w[1].0) {
            matched.sort_by_key(|(k, _)| *k);
        }
        let mut i = 0;
        // Subscription identifiers of overlapping subscriptions (one
        // subscription's, the common case, need no list).
        let mut overlap: Vec<u32> = Vec::new();
        while i < matched.len() {
            let key = matched[i].0;
            let mut qos = matched[i].1.qos;
            let mut rap = matched[i].1.retain_as_published;
            let mut j = i + 1;
            // Overlapping subscriptions: one delivery, the highest QoS,
            // every subscription identifier.
            while j < matched.len() && matched[j].0 == key {
                qos = qos.max(matched[j].1.qos);
                rap |= matched[j].1.retain_as_published;
                j += 1;
            }
            let ids = if j == i + 1 {
                matched[i].1.sub_id.as_slice()
            } else {
                overlap.clear();
                overlap.extend(matched[i..j].iter().filter_map(|(_, e)| e.sub_id));
                &overlap
            };
            let retain = rap && msg.retain;
            self.deliver_to(ctx, key, msg, qos, retain, ids);
            i = j;
        }
        self.matched = matched;
        let mut shared = std::mem::take(&mut self.matched_shared);
        shared.clear();
        self.shared.matches_shared(&msg.topic, &mut shared);
        for (member, entry, filter) in shared.drain(..) {
            self.deliver_shared(ctx, member, &entry, &filter, 0, msg, scope);
        }
        self.matched_shared = shared;
    }

    /// A shared group's home shard: gives `msg` to the group's chosen
    /// `member`, here or through the mesh. The group's `filter` goes along,
    /// so that a member found gone (its session moved to another shard or
    /// ended since it was chosen) is replaced by the next one, `hops` counting
    /// how many were gone in a row. With a `scope` (a message from NATS),
    /// a member whose listener it does not admit does not get it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn deliver_shared(
        &mut self,
        ctx: &mut dyn Context,
        (shard, key): Member,
        entry: &SubEntry,
        filter: &str,
        hops: u8,
        msg: &Arc<Message>,
        scope: Option<&ImportScope>,
    ) {
        if shard == self.shard {
            let Some(s) = self.sessions.get(&key) else {
                return self.reroute_shared(ctx, filter, (shard, key), hops, msg, scope);
            };
            if let Some(scope) = scope {
                if !admitted(scope, Some(s.listener)) {
                    return;
                }
            }
            let retain = entry.retain_as_published && msg.retain;
            let ids = entry.sub_id.as_slice();
            return self.deliver_to(ctx, key, msg, entry.qos, retain, ids);
        }
        let mut w = Writer::default();
        w.u64(key);
        encode_entry(&mut w, entry);
        w.str(filter).u8(hops);
        w.message(msg, ctx.now());
        write_scope(&mut w, scope);
        let cap = (msg.qos == QoS::AtMostOnce).then_some(self.cfg.mesh_retry_bytes);
        if self
            .mesh
            .send(ctx, shard, TAG_SHARE_DELIVER, w.finish(), cap)
            == Sent::Dropped
        {
            self.count(ctx, MqttDrop::MeshFull);
        }
    }

    /// A shared group's home shard: member `gone` did not hold the session
    /// a delivery was for; the next member of the group gets it, unless
    /// there is none or [`MAX_SHARE_HOPS`] were gone already (counted
    /// `no_session`).
    pub(crate) fn reroute_shared(
        &mut self,
        ctx: &mut dyn Context,
        filter: &str,
        gone: Member,
        hops: u8,
        msg: &Arc<Message>,
        scope: Option<&ImportScope>,
    ) {
        let next = (hops < MAX_SHARE_HOPS)
            .then(|| self.shared.next_in_group(filter, gone))
            .flatten();
        match next {
            Some((member, entry)) => {
                self.deliver_shared(ctx, member, &entry, filter, hops + 1, msg, scope)
            }
            None => self.count(ctx, MqttDrop::NoSession),
        }
    }

    /// Sends retained messages matching `filter` to a new subscription.
    pub(crate) fn send_retained(
        &mut self,
        ctx: &mut dyn Context,
        key: u64,
        filter: &str,
        e: &SubEntry,
    ) {
        let mut found: Vec<Arc<Message>> = Vec::new();
        self.retained
            .for_each_match(filter, |_, m| found.push(Arc::clone(m)));
        for m in found {
            self.deliver_to(ctx, key, &m, e.qos, true, e.sub_id.as_slice());
        }
    }

    /// Gives one session a message at the lower of its and the
    /// subscription's QoS: queued, then sent as far as its window allows.
    /// A QoS 0 message to a connected client with nothing waiting is
    /// written at once, without going through the queue.
    pub(crate) fn deliver_to(
        &mut self,
        ctx: &mut dyn Context,
        key: u64,
        msg: &Arc<Message>,
        sub_qos: QoS,
        retain: bool,
        sub_ids: &[u32],
    ) {
        let now = ctx.now();
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let mut kind = None;
        if let Some(acl) = &self.cfg.acl {
            if !acl.check(s.user.as_deref(), &s.client_id, &msg.topic, Access::Read) {
                kind = Some(MqttDrop::NotAuthorized);
            }
        }
        if msg.remaining(now) == Some(0) {
            kind = Some(MqttDrop::Expired);
        }
        let qos = msg.qos.min(sub_qos);
        let listener = s.listener;
        if kind.is_none() && s.conn.is_none() && qos == QoS::AtMostOnce {
            // Offline sessions keep QoS 1/2 messages only (not counted per
            // client: that is the rule, not a client falling behind).
            self.count_at(ctx, listener, MqttDrop::OfflineQos0);
            return;
        }
        if let Some(kind) = kind {
            s.count_drop(kind);
            self.count_at(ctx, listener, kind);
            return;
        }
        if let (Some(conn), QoS::AtMostOnce, false, false, true) =
            (s.conn, qos, s.blocked, s.resend, s.flow.queue.is_empty())
        {
            // What `pump` would do with this message as the only one queued.
            let out = OutRef {
                msg,
                qos,
                retain,
                sub_ids,
            };
            match write_publish(
                ctx,
                &mut self.scratch,
                conn,
                s.version,
                s.max_packet,
                out,
                0,
                false,
                now,
                s.alias_max,
                &mut s.out_aliases,
            ) {
                Ok(()) => {
                    self.at(listener).msg_out(qos.as_u8());
                    ctx.record_messages(1);
                    return;
                }
                Err(NotSent::TooLarge) => {
                    s.count_drop(MqttDrop::PacketTooLarge);
                    self.count_at(ctx, listener, MqttDrop::PacketTooLarge);
                    return;
                }
                // Queued below; `pump` tries again and marks it blocked, or
                // finds the stream gone.
                Err(NotSent::Full | NotSent::Gone) => {}
            }
        }
        let out = Outgoing {
            msg: Arc::clone(msg),
            qos,
            retain,
            sub_ids: sub_ids.into(),
        };
        let mut dropped = Vec::new();
        s.push(
            out,
            self.cfg.max_queued_messages,
            self.cfg.max_queued_bytes,
            &mut dropped,
        );
        let blocked = s.blocked;
        for kind in dropped {
            self.count_at(ctx, listener, kind);
        }
        if !blocked {
            self.pump(ctx, key);
        }
    }

    /// Sends what a session can send now: messages in flight not written
    /// yet, then queued messages while its window has room.
    pub(crate) fn pump(&mut self, ctx: &mut dyn Context, key: u64) {
        let now = ctx.now();
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(conn) = s.conn else {
            return;
        };
        let listener = s.listener;
        let stats: &super::stats::ListenerStats = self
            .lstats
            .get(usize::from(listener))
            .unwrap_or(&self.unattributed);
        let scratch = &mut self.scratch;
        let mut drops: Vec<MqttDrop> = Vec::new();
        let was_blocked = s.blocked;
        let mut blocked = false;
        let mut sent = 0u64;
        let mut dead: Vec<u16> = Vec::new();
        // Messages in flight from an earlier connection, sent again first.
        if s.resend {
            // A client that lowered its Receive Maximum gets the first
            // `window` again now, the rest as acknowledgements make room.
            let window = usize::from(s.window);
            let mut waiting = false;
            'resend: for (i, f) in s.flow.inflight.iter_mut().enumerate() {
                let r = match f.state {
                    Flight::Unsent if i >= window => {
                        waiting = true;
                        continue;
                    }
                    Flight::Unsent => write_publish(
                        ctx,
                        scratch,
                        conn,
                        s.version,
                        s.max_packet,
                        OutRef::of(&f.out),
                        f.pid,
                        f.redeliver,
                        now,
                        s.alias_max,
                        &mut s.out_aliases,
                    ),
                    Flight::RelUnsent => {
                        let [hi, lo] = f.pid.to_be_bytes();
                        match ctx.write(conn, &[0x62, 2, hi, lo]) {
                            Ok(()) => Ok(()),
                            Err(WriteError::QueueFull) => Err(NotSent::Full),
                            Err(_) => Err(NotSent::Gone),
                        }
                    }
                    Flight::Sent | Flight::Released => continue,
                };
                match r {
                    Ok(()) => {
                        if f.state == Flight::Unsent {
                            stats.msg_out(f.out.qos.as_u8());
                            sent += 1;
                            f.state = Flight::Sent;
                        } else {
                            f.state = Flight::Released;
                        }
                    }
                    // Sent as far as the client is concerned; acknowledged below.
                    Err(NotSent::TooLarge) => {
                        drops.push(MqttDrop::PacketTooLarge);
                        dead.push(f.pid);
                    }
                    Err(NotSent::Full) => {
                        blocked = true;
                        break 'resend;
                    }
                    Err(NotSent::Gone) => return,
                }
            }
            if !blocked && !waiting {
                s.resend = false;
            }
        }
        if !dead.is_empty() {
            s.flow.inflight.retain(|f| !dead.contains(&f.pid));
        }
        while !blocked {
            let Some(front) = s.flow.queue.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && s.flow.inflight.len() >= usize::from(s.window) {
                break;
            }
            if front.msg.remaining(now) == Some(0) {
                s.pop();
                drops.push(MqttDrop::Expired);
                continue;
            }
            let pid = if front.qos == QoS::AtMostOnce {
                0
            } else {
                s.alloc_pid()
            };
            let front = &s.flow.queue[0];
            match write_publish(
                ctx,
                scratch,
                conn,
                s.version,
                s.max_packet,
                OutRef::of(front),
                pid,
                false,
                now,
                s.alias_max,
                &mut s.out_aliases,
            ) {
                Ok(()) => {
                    stats.msg_out(front.qos.as_u8());
                    sent += 1;
                    let Some(out) = s.pop() else { break };
                    if out.qos != QoS::AtMostOnce {
                        s.flow.inflight.push_back(Inflight {
                            pid,
                            state: Flight::Sent,
                            out,
                            redeliver: false,
                        });
                    }
                }
                Err(NotSent::TooLarge) => {
                    s.pop();
                    drops.push(MqttDrop::PacketTooLarge);
                    if pid != 0 {
                        s.next_pid = pid;
                    }
                }
                Err(NotSent::Full) => {
                    if pid != 0 {
                        s.next_pid = pid;
                    }
                    blocked = true;
                }
                Err(NotSent::Gone) => break,
            }
        }
        for kind in &drops {
            s.count_drop(*kind);
        }
        s.blocked = blocked;
        if sent > 0 {
            ctx.record_messages(sent);
        }
        for kind in drops {
            self.count_at(ctx, listener, kind);
        }
        // Listed once per episode (a duplicate entry is harmless).
        if blocked && !was_blocked {
            self.blocked.push(conn);
        }
    }

    /// Retries one client; true while it still has no room (the caller
    /// keeps it listed; [`pump`](Self::pump) lists it again itself).
    pub(crate) fn unblock(&mut self, ctx: &mut dyn Context, conn: ConnId) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if !c.owed().is_empty() {
            match ctx.write(conn, c.owed()) {
                Ok(()) => {
                    c.held().owed = Vec::new();
                    c.release();
                }
                Err(WriteError::QueueFull) => return true,
                Err(_) => {
                    c.held().owed = Vec::new();
                    c.release();
                    return false;
                }
            }
        }
        let key = c.session;
        if let Some(s) = self.sessions.get_mut(&key) {
            if s.blocked {
                s.blocked = false;
                self.pump(ctx, key);
            }
        }
        self.replay(ctx, conn);
        false
    }

    /// Whether a client has bytes owed or messages waiting for room.
    pub(crate) fn is_blocked(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| {
            !c.owed().is_empty() || self.sessions.get(&c.session).is_some_and(|s| s.blocked)
        })
    }
}

/// Whether a session that came through `listener` (None: no session) gets
/// a message from NATS of `scope`.
fn admitted(scope: &ImportScope, listener: Option<u16>) -> bool {
    listener.is_some_and(|l| scope.admits(ListenerId(l)))
}

/// A message on its way to one client, queued ([`Outgoing`]) or not.
#[derive(Clone, Copy)]
struct OutRef<'a> {
    msg: &'a Message,
    qos: QoS,
    retain: bool,
    sub_ids: &'a [u32],
}

impl<'a> OutRef<'a> {
    fn of(out: &'a Outgoing) -> Self {
        OutRef {
            msg: &out.msg,
            qos: out.qos,
            retain: out.retain,
            sub_ids: &out.sub_ids,
        }
    }
}

/// Encodes a PUBLISH header for `out` and writes it with the payload.
#[allow(clippy::too_many_arguments)]
fn write_publish(
    ctx: &mut dyn Context,
    scratch: &mut Vec<u8>,
    conn: ConnId,
    version: Version,
    max_packet: u32,
    out: OutRef<'_>,
    pid: u16,
    dup: bool,
    now: std::time::Instant,
    alias_max: u16,
    aliases: &mut OutAliases,
) -> Result<(), NotSent> {
    let m = out.msg;
    // Topic aliases toward the client (v5): a topic sent before goes as
    // its alias alone; new topics get the next alias while there are any.
    let (topic, alias, new_alias) = match aliases.get(&m.topic) {
        Some(a) => ("", Some(a), false),
        None if aliases.len() < usize::from(alias_max) => {
            (&*m.topic, Some(aliases.len() as u16 + 1), true)
        }
        None => (&*m.topic, None, false),
    };
    let props = m.props.as_deref();
    let user: Vec<(&str, &str)> = props.map_or_else(Vec::new, |p| {
        p.user.iter().map(|(k, v)| (&**k, &**v)).collect()
    });
    let p = Publish {
        dup: dup && out.qos != QoS::AtMostOnce,
        qos: out.qos,
        retain: out.retain,
        topic,
        packet_id: pid,
        props: PublishProps {
            payload_format: props.and_then(|p| p.payload_format),
            message_expiry: m.remaining(now),
            topic_alias: alias,
            response_topic: props.and_then(|p| p.response_topic.as_deref()),
            correlation_data: props.and_then(|p| p.correlation_data.as_deref()),
            user_properties: UserProps::Pairs(&user),
            subscription_ids: SubIds::List(out.sub_ids),
            content_type: props.and_then(|p| p.content_type.as_deref()),
        },
        payload: &m.payload,
    };
    scratch.clear();
    encode_publish_header(&p, version, scratch).map_err(|_| NotSent::TooLarge)?;
    if scratch.len() + m.payload.len() > max_packet as usize {
        return Err(NotSent::TooLarge);
    }
    match ctx.write_parts(conn, &[scratch, &m.payload]) {
        Ok(()) => {
            if let (true, Some(a)) = (new_alias, alias) {
                aliases.insert(m.topic.clone(), a);
            }
            Ok(())
        }
        Err(WriteError::QueueFull) => Err(NotSent::Full),
        Err(_) => Err(NotSent::Gone),
    }
}
