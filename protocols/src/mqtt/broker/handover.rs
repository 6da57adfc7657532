//! Sessions across shards: the home directory, take-over and hand-over,
//! session end and expiry, and wills.
//!
//! Every client id has a home shard, `shard_for_key(client_id)`, which keeps
//! a directory entry naming the shard that holds its session. A CONNECT on
//! any shard sends a claim home; home records the new holder and either
//! answers "no session" or asks the previous holder to hand the session
//! over: that shard closes a live connection of the client id (v5:
//! DISCONNECT 0x8E), and sends the session (subscriptions, messages in
//! flight and queued) to the shard of the new connection, which answers the
//! CONNECT. On one shard all of it runs through the loopback queue before
//! the CONNECT returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringport_plugin::{shard_for_key, ConnId, Context, ListenerId, MeshMessage, ShardId};

use super::bridge::{read_scope, write_scope};
use super::conn::{Phase, WillMsg};
use super::ids::{DirEntry, Epoch};
use super::message::{Reader, Writer};
use super::plugin::Mqtt;
use super::route::{
    Sent, TAG_CLAIM, TAG_GONE, TAG_IMPORTED, TAG_PUBLISH, TAG_RETAIN, TAG_SHARE_BOUNCE,
    TAG_SHARE_DELIVER, TAG_SHARE_JOIN, TAG_SHARE_LEAVE, TAG_STATE, TAG_TAKEOVER,
};
use super::session::{decode_entry, encode_entry, Flight, Session};
use super::stats::MqttDrop;
use crate::mqtt::codec::{ConnAck, ConnAckProps, Packet, QoS, ReasonCode, Version};
use crate::mqtt::topic::{parse_filter, Filter};

/// What a CONNECT asked for, kept until its session arrives.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub clean_start: bool,
    pub expiry: u32,
    pub expiry_capped: bool,
    pub assigned: bool,
    pub receive_maximum: u16,
    pub max_packet: u32,
    /// The client's Topic Alias Maximum (aliases the broker may use).
    pub topic_alias_maximum: u16,
    pub server_keep_alive: Option<u16>,
    pub username: Option<Box<str>>,
    pub identity: Option<Box<str>>,
    /// The client id asked for (or assigned).
    pub client_id: Arc<str>,
    /// Identity or username the ACL checks.
    pub user: Option<Arc<str>>,
}

/// A hand-over to pass on: a CONNECT on another shard took over a client id
/// whose own session had not arrived here yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forward {
    pub to: ShardId,
    pub conn: u64,
    pub clean: bool,
    pub epoch: Epoch,
}

/// A will waiting for its delay.
#[derive(Debug)]
pub(crate) struct DelayedWill {
    pub at: Instant,
    pub client_id: Arc<str>,
    pub user: Option<Arc<str>>,
    /// The listener its client came through (for the NATS bridge).
    pub listener: u16,
    pub will: Box<WillMsg>,
}

impl Mqtt {
    /// A message from a shard (or from this one, through the loopback).
    pub(crate) fn handle_mesh(&mut self, ctx: &mut dyn Context, _from: ShardId, msg: MeshMessage) {
        let now = ctx.now();
        let mut r = Reader::new(msg.payload);
        let ok = match msg.tag {
            TAG_PUBLISH => (|| {
                let listener = r.u16()?;
                let m = r.arc_message(now)?;
                self.on_remote_publish(ctx, m, listener);
                Ok(())
            })(),
            TAG_IMPORTED => (|| {
                let scope = read_scope(&mut r)?;
                let m = r.arc_message(now)?;
                self.deliver_scoped(ctx, &m, scope.as_ref());
                Ok(())
            })(),
            TAG_RETAIN => r.arc_message(now).map(|m| self.on_retain(ctx, m)),
            TAG_CLAIM => self.on_claim(ctx, &mut r),
            TAG_TAKEOVER => self.on_takeover(ctx, &mut r),
            TAG_STATE => self.on_state(ctx, &mut r),
            TAG_GONE => (|| {
                let cid: Arc<str> = r.str()?.into();
                let epoch = r.u32()?;
                if self.ids.home(&cid).map(|e| e.epoch) == Some(epoch) {
                    self.ids.clear_home(&cid);
                }
                Ok(())
            })(),
            TAG_SHARE_JOIN => (|| {
                let filter = r.str()?;
                let member = (r.u64()? as ShardId, r.u64()?);
                let entry = decode_entry(&mut r)?;
                self.shared.insert(&filter, member, entry);
                Ok(())
            })(),
            TAG_SHARE_LEAVE => (|| {
                let filter = r.str()?;
                let member = (r.u64()? as ShardId, r.u64()?);
                self.shared.remove(&filter, member);
                Ok(())
            })(),
            TAG_SHARE_DELIVER => (|| {
                let key = r.u64()?;
                let entry = decode_entry(&mut r)?;
                let filter = r.str()?;
                let hops = r.u8()?;
                let m = r.arc_message(now)?;
                let scope = read_scope(&mut r)?;
                if let Some(s) = self.sessions.get(&key) {
                    // A message from NATS its listener does not import.
                    if scope
                        .as_ref()
                        .is_some_and(|sc| !sc.admits(ListenerId(s.listener)))
                    {
                        return Ok(());
                    }
                    let retain = entry.retain_as_published && m.retain;
                    let ids = entry.sub_id.as_slice();
                    self.deliver_to(ctx, key, &m, entry.qos, retain, ids);
                } else {
                    // Gone since it was chosen: back to the group's home,
                    // which picks another member.
                    let home = shard_for_key(filter.as_bytes(), self.shard_count);
                    let mut w = Writer::default();
                    w.str(&filter).u64(self.shard as u64).u64(key).u8(hops);
                    w.message(&m, now);
                    write_scope(&mut w, scope.as_ref());
                    let cap = (m.qos == QoS::AtMostOnce).then_some(self.cfg.mesh_retry_bytes);
                    if self.mesh.send(ctx, home, TAG_SHARE_BOUNCE, w.finish(), cap) == Sent::Dropped
                    {
                        self.count(ctx, MqttDrop::MeshFull);
                    }
                }
                Ok(())
            })(),
            TAG_SHARE_BOUNCE => (|| {
                let filter = r.str()?;
                let gone = (r.u64()? as ShardId, r.u64()?);
                let hops = r.u8()?;
                let m = r.arc_message(now)?;
                let scope = read_scope(&mut r)?;
                self.reroute_shared(ctx, &filter, gone, hops, &m, scope.as_ref());
                Ok(())
            })(),
            _ => Err(super::message::BadMesh),
        };
        if ok.is_err() {
            self.count(ctx, MqttDrop::Malformed);
        }
    }

    fn send_state(
        &mut self,
        ctx: &mut dyn Context,
        to: ShardId,
        cid: &str,
        conn: u64,
        epoch: Epoch,
        session: Option<&Session>,
    ) {
        let mut w = Writer::default();
        w.str(cid)
            .u64(conn)
            .u32(epoch)
            .u8(u8::from(session.is_some()));
        if let Some(s) = session {
            s.encode(&mut w, ctx.now());
        }
        self.mesh.send(ctx, to, TAG_STATE, w.finish(), None);
    }

    /// Home shard: a client id connects on shard `to`.
    fn on_claim(
        &mut self,
        ctx: &mut dyn Context,
        r: &mut Reader,
    ) -> Result<(), super::message::BadMesh> {
        let cid: Arc<str> = r.str()?.into();
        let to = r.u64()? as ShardId;
        let conn = r.u64()?;
        let clean = r.u8()? != 0;
        let epoch = self.next_epoch;
        self.next_epoch = self.next_epoch.wrapping_add(1);
        if to >= self.shard_count {
            return Err(super::message::BadMesh);
        }
        let prev = self.ids.set_home(
            Arc::clone(&cid),
            DirEntry {
                shard: to,
                conn,
                epoch,
            },
        );
        match prev {
            Some(p) => {
                let mut w = Writer::default();
                w.str(&cid)
                    .u64(to as u64)
                    .u64(conn)
                    .u8(u8::from(clean))
                    .u32(epoch)
                    .u64(p.conn);
                self.mesh.send(ctx, p.shard, TAG_TAKEOVER, w.finish(), None);
            }
            None => self.send_state(ctx, to, &cid, conn, epoch, None),
        }
        Ok(())
    }

    /// The shard that held a session: hand it to the new connection's shard.
    fn on_takeover(
        &mut self,
        ctx: &mut dyn Context,
        r: &mut Reader,
    ) -> Result<(), super::message::BadMesh> {
        let cid: Arc<str> = r.str()?.into();
        let to = r.u64()? as ShardId;
        let conn = r.u64()?;
        let clean = r.u8()? != 0;
        let epoch = r.u32()?;
        let prev = r.u64()?;
        if self.awaiting.contains(&prev) {
            // The session is on its way here for the previous connection
            // (open or not): pass it on when it arrives.
            let old = ConnId::from_raw(prev);
            if self
                .conns
                .get(&old)
                .is_some_and(|c| c.phase != Phase::Closed)
            {
                self.count_conn(ctx, old, MqttDrop::SessionTakenOver);
                self.close_conn(ctx, old, None, false);
            }
            let f = Forward {
                to,
                conn,
                clean,
                epoch,
            };
            self.forward.insert(prev, f);
            return Ok(());
        }
        if let Some(key) = self.ids.session(&cid) {
            if let Some(old) = self.sessions.get(&key).and_then(|s| s.conn) {
                self.count_conn(ctx, old, MqttDrop::SessionTakenOver);
                self.close_conn(ctx, old, Some(0x8E), false);
            }
            // The new connection resumes the session: a delayed will is not
            // sent; with clean start the session ends: it is sent now.
            self.end_wills(ctx, &cid, clean);
            let session = if clean {
                self.end_session(ctx, key, false);
                None
            } else {
                self.take_session(ctx, key)
            };
            self.send_state(ctx, to, &cid, conn, epoch, session.as_ref());
            return Ok(());
        }
        self.end_wills(ctx, &cid, clean);
        self.send_state(ctx, to, &cid, conn, epoch, None);
        Ok(())
    }

    /// The shard of a new connection: its session (or none) arrived.
    fn on_state(
        &mut self,
        ctx: &mut dyn Context,
        r: &mut Reader,
    ) -> Result<(), super::message::BadMesh> {
        let now = ctx.now();
        let cid: Arc<str> = r.str()?.into();
        let conn = ConnId::from_raw(r.u64()?);
        let epoch = r.u32()?;
        let has = r.u8()? != 0;
        let key = self.new_key();
        let mut session = if has {
            Some(Session::decode(r, now)?)
        } else {
            None
        };
        self.awaiting.remove(&conn.raw());
        if let Some(f) = self.forward.remove(&conn.raw()) {
            // A newer CONNECT took the client id over on the way.
            let s = if f.clean { None } else { session.as_ref() };
            self.send_state(ctx, f.to, &cid, f.conn, f.epoch, s);
            return Ok(());
        }
        let waiting = self.conns.get(&conn).is_some_and(|c| {
            c.phase == Phase::Connecting && c.pending().is_some_and(|p| *p.client_id == *cid)
        });
        if !waiting {
            // The client left while its session travelled: keep the session.
            match session {
                Some(mut s) if s.expiry > 0 => {
                    s.epoch = epoch;
                    if s.expiry != u32::MAX {
                        s.set_expire_at(Some(now + Duration::from_secs(u64::from(s.expiry))));
                    }
                    self.install(ctx, key, s);
                }
                _ => self.send_gone(ctx, &cid, epoch),
            }
            return Ok(());
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        let Some(pending) = c.take_pending() else {
            return Ok(());
        };
        if pending.clean_start {
            session = None;
        }
        let present = session.is_some();
        let mut s = session.unwrap_or_else(|| Session::new(Arc::clone(&cid), c.version));
        s.epoch = epoch;
        s.conn = Some(conn);
        s.version = c.version;
        s.user = pending.user.clone();
        s.expiry = pending.expiry;
        s.set_expire_at(None);
        s.window = pending.receive_maximum.min(self.cfg.receive_maximum).max(1);
        s.max_packet = pending.max_packet;
        s.out_aliases = super::session::OutAliases::default();
        s.alias_max = pending
            .topic_alias_maximum
            .min(self.cfg.topic_alias_maximum);
        s.resend = !s.flow.inflight.is_empty();
        if s.resend {
            // (Only then: a session with nothing in flight makes no flow.)
            for f in s.flow.inflight.iter_mut() {
                f.state = match f.state {
                    Flight::Unsent | Flight::Sent => Flight::Unsent,
                    Flight::RelUnsent | Flight::Released => Flight::RelUnsent,
                };
                f.redeliver = true;
            }
        }
        c.session = key;
        c.phase = Phase::Connected;
        c.since = now;
        s.listener = c.listener;
        let listener = c.listener;
        self.connected += 1;
        let version = c.version;
        let v5 = version == Version::V5;
        let cfg = Arc::clone(&self.cfg);
        let ack = ConnAck {
            session_present: present,
            code: ReasonCode::SUCCESS,
            props: if v5 {
                ConnAckProps {
                    session_expiry: pending.expiry_capped.then_some(pending.expiry),
                    receive_maximum: Some(cfg.receive_maximum.max(1)),
                    retain_available: (!cfg.retain_available).then_some(false),
                    maximum_packet_size: Some(cfg.max_packet_size),
                    assigned_client_id: pending.assigned.then_some(&*cid),
                    topic_alias_maximum: Some(cfg.topic_alias_maximum),
                    server_keep_alive: pending.server_keep_alive,
                    ..ConnAckProps::default()
                }
            } else {
                ConnAckProps::default()
            },
        };
        self.send_packet(ctx, conn, version, &Packet::ConnAck(ack));
        let counters = self.at(listener);
        counters.connect(true);
        counters.attached();
        self.connect_event(
            ctx,
            conn,
            &cid,
            pending.identity.as_deref(),
            pending.username.as_deref(),
            version,
            present,
            0,
        );
        self.end_wills(ctx, &cid, pending.clean_start);
        self.install(ctx, key, s);
        self.pump(ctx, key);
        self.replay(ctx, conn);
        Ok(())
    }

    /// Makes `s` a session of this shard: its subscriptions go into the
    /// table (shared ones to their groups' home shards).
    pub(crate) fn install(&mut self, ctx: &mut dyn Context, key: u64, mut s: Session) {
        // When this shard is also the client id's home, the session and
        // the directory share one entry and one copy of the id.
        s.client_id = self.ids.set_session(&s.client_id, key);
        for (filter, entry) in s.subs.iter() {
            match parse_filter(filter) {
                Ok(Filter::Plain(f)) => {
                    self.subs.insert(f, key, *entry);
                }
                Ok(Filter::Shared { .. }) => {
                    self.share_msg(ctx, TAG_SHARE_JOIN, filter, key, Some(entry));
                }
                Err(_) => {}
            }
        }
        self.at(s.listener).subscribed(s.subs.len());
        self.sessions.insert(key, Box::new(s));
    }

    /// Tells a shared subscription group's home shard of a member.
    pub(crate) fn share_msg(
        &mut self,
        ctx: &mut dyn Context,
        tag: u64,
        filter: &str,
        key: u64,
        entry: Option<&crate::mqtt::trie::SubEntry>,
    ) {
        let home = shard_for_key(filter.as_bytes(), self.shard_count);
        let mut w = Writer::default();
        w.str(filter).u64(self.shard as u64).u64(key);
        if let Some(e) = entry {
            encode_entry(&mut w, e);
        }
        self.mesh.send(ctx, home, tag, w.finish(), None);
    }

    /// Removes a session from this shard without ending it (it moves).
    fn take_session(&mut self, ctx: &mut dyn Context, key: u64) -> Option<Session> {
        let s = self.sessions.remove(&key)?;
        self.at(s.listener).unsubscribed(s.subs.len());
        self.ids.clear_session(&s.client_id);
        for filter in s.subs.keys() {
            match parse_filter(filter) {
                Ok(Filter::Plain(f)) => {
                    self.subs.remove(f, key);
                }
                Ok(Filter::Shared { .. }) => {
                    self.share_msg(ctx, TAG_SHARE_LEAVE, filter, key, None);
                }
                Err(_) => {}
            }
        }
        Some(*s)
    }

    /// Ends a session; `notify`: tell its home shard (not when the home
    /// shard already gave the client id to a new connection).
    pub(crate) fn end_session(&mut self, ctx: &mut dyn Context, key: u64, notify: bool) {
        if let Some(s) = self.take_session(ctx, key) {
            if notify {
                self.send_gone(ctx, &s.client_id, s.epoch);
            }
        }
    }

    fn send_gone(&mut self, ctx: &mut dyn Context, cid: &str, epoch: Epoch) {
        let home = shard_for_key(cid.as_bytes(), self.shard_count);
        let mut w = Writer::default();
        w.str(cid).u32(epoch);
        self.mesh.send(ctx, home, TAG_GONE, w.finish(), None);
    }

    /// A connected client's connection ended: its will, and its session
    /// ends or waits for it.
    pub(crate) fn detach(&mut self, ctx: &mut dyn Context, conn: ConnId) {
        let now = ctx.now();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let key = std::mem::take(&mut c.session);
        let will = c.will.take();
        let publish_will = !c.clean_disconnect;
        self.blocked.retain(|b| *b != conn);
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let user = s.user.clone();
        let listener = s.listener;
        s.conn = None;
        s.blocked = false;
        let expiry = s.expiry;
        let cid = Arc::clone(&s.client_id);
        if expiry != 0 && expiry != u32::MAX {
            s.set_expire_at(Some(now + Duration::from_secs(u64::from(expiry))));
        }
        if let (Some(will), true) = (will, publish_will) {
            if will.delay == 0 || expiry == 0 {
                self.publish_will(ctx, &cid, user.as_deref(), listener, &will);
            } else {
                self.wills.push(DelayedWill {
                    at: now + Duration::from_secs(u64::from(will.delay.min(expiry))),
                    client_id: Arc::clone(&cid),
                    user,
                    listener,
                    will,
                });
            }
        }
        if expiry == 0 {
            self.end_session(ctx, key, true);
        }
    }

    /// Sends (`publish`) or forgets the delayed wills of `cid`.
    fn end_wills(&mut self, ctx: &mut dyn Context, cid: &str, publish: bool) {
        if self.wills.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.wills.len() {
            if &*self.wills[i].client_id == cid {
                let w = self.wills.swap_remove(i);
                if publish {
                    self.publish_will(ctx, &w.client_id, w.user.as_deref(), w.listener, &w.will);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Publishes the wills whose delay passed.
    pub(crate) fn fire_wills(&mut self, ctx: &mut dyn Context, now: Instant) {
        let mut i = 0;
        while i < self.wills.len() {
            if self.wills[i].at <= now {
                let w = self.wills.swap_remove(i);
                self.publish_will(ctx, &w.client_id, w.user.as_deref(), w.listener, &w.will);
            } else {
                i += 1;
            }
        }
    }

    fn publish_will(
        &mut self,
        ctx: &mut dyn Context,
        cid: &str,
        user: Option<&str>,
        listener: u16,
        will: &WillMsg,
    ) {
        if let Some(acl) = &self.cfg.acl {
            if !acl.check(user, cid, &will.msg.topic, crate::mqtt::acl::Access::Write) {
                self.count(ctx, MqttDrop::NotAuthorized);
                self.denied_event(ctx, None, cid, user, "will", &will.msg.topic);
                return;
            }
        }
        let mut msg = will.msg.clone();
        msg.expires = will
            .expiry
            .map(|e| ctx.now() + Duration::from_secs(u64::from(e)));
        self.route_publish(ctx, Arc::new(msg), None, listener);
    }

    /// Ends the offline sessions whose expiry passed.
    pub(crate) fn expire_sessions(&mut self, ctx: &mut dyn Context, now: Instant) {
        let due: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.conn.is_none() && s.expire_at().is_some_and(|t| t <= now))
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            self.end_session(ctx, key, true);
        }
    }
}
