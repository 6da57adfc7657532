//! A client's PUBLISH, its acknowledgements, SUBSCRIBE and UNSUBSCRIBE.

use std::sync::Arc;
use std::time::Duration;

use ringport_plugin::{Bytes, ConnId, Context};

use super::message::{Message, MsgProps, Writer};
use super::plugin::{Mqtt, PendingAck};
use super::route::{TAG_SHARE_JOIN, TAG_SHARE_LEAVE};
use super::session::Flight;
use super::stats::MqttDrop;
use crate::mqtt::acl::Access;
use crate::mqtt::codec::{
    Packet, PubResp, Publish, QoS, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe, Version,
};
use crate::mqtt::topic::{self, Filter};
use crate::mqtt::trie::SubEntry;

/// The largest payload whose buffer [`Mqtt::spare`] keeps for the next
/// publication.
const SPARE_PAYLOAD_MAX: usize = 4096;

/// `payload` as the payload of a new message: copied into the buffer of
/// `spare`'s payload when nothing else holds either, else into a new one.
fn reuse_payload(spare: Option<&mut Arc<Message>>, payload: &[u8]) -> Bytes {
    if let Some(m) = spare.and_then(Arc::get_mut) {
        if let Ok(mut buf) = std::mem::take(&mut m.payload).try_into_mut() {
            buf.clear();
            buf.extend_from_slice(payload);
            return buf.freeze();
        }
    }
    Bytes::copy_from_slice(payload)
}

impl Mqtt {
    pub(crate) fn on_publish(&mut self, ctx: &mut dyn Context, conn: ConnId, p: &Publish<'_>) {
        let alias_max = self.cfg.topic_alias_maximum;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let version = c.version;
        let v5 = version == Version::V5;
        let key = c.session;
        let listener = c.listener;
        self.lstats
            .get(usize::from(c.listener))
            .unwrap_or(&self.unattributed)
            .msg_in(p.qos.as_u8());
        ctx.record_messages(1);
        // Topic aliases (v5).
        let mut aliased: Option<Box<str>> = None;
        if let Some(a) = p.props.topic_alias.filter(|_| v5) {
            if a == 0 || a > alias_max {
                return self.fail(ctx, conn, MqttDrop::ProtocolError, 0x94);
            }
            let slot = usize::from(a - 1);
            let aliases = &mut c.held().aliases;
            if aliases.len() <= slot {
                aliases.resize(slot + 1, None);
            }
            if p.topic.is_empty() {
                match &aliases[slot] {
                    Some(t) => aliased = Some(t.clone()),
                    None => return self.fail(ctx, conn, MqttDrop::ProtocolError, 0x82),
                }
            } else {
                aliases[slot] = Some(p.topic.into());
            }
        }
        let topic: &str = aliased.as_deref().unwrap_or(p.topic);
        let unacked = c.unacked as usize;
        let qos = p.qos;
        let pid = p.packet_id;
        // The ack a refused QoS 1/2 message gets (v5 with the reason).
        let refuse = |this: &mut Mqtt, ctx: &mut dyn Context, code: u8| {
            if qos != QoS::AtMostOnce {
                let ty = if qos == QoS::AtLeastOnce { 4 } else { 5 };
                this.write_resp(ctx, conn, ty, pid, if v5 { code } else { 0 });
            }
        };
        if self.check_topic(topic).is_err() {
            self.count_conn(ctx, conn, MqttDrop::TopicInvalid);
            if !v5 {
                return self.close_conn(ctx, conn, None, false);
            }
            return refuse(self, ctx, 0x90);
        }
        if p.retain && !self.cfg.retain_available {
            return self.fail(ctx, conn, MqttDrop::ProtocolError, 0x9A);
        }
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        if qos == QoS::ExactlyOnce && s.flow.inbound_qos2.contains(&pid) {
            // A resent QoS 2 message already taken: acknowledge again only.
            return self.write_resp(ctx, conn, 5, pid, 0);
        }
        // 3.1.1 has no Receive Maximum: its QoS 2 ids are bounded by the
        // id space, its waiting QoS 1 acks by `mesh_reliable_bytes`.
        if v5
            && qos != QoS::AtMostOnce
            && unacked + s.flow.inbound_qos2.len() >= usize::from(self.cfg.receive_maximum.max(1))
        {
            return self.fail(ctx, conn, MqttDrop::ReceiveMaximumExceeded, 0x93);
        }
        if let Some(acl) = &self.cfg.acl {
            // (Cloned only here: two reference counts per message otherwise.)
            let cid = Arc::clone(&s.client_id);
            let user = s.user.clone();
            if !acl.check(user.as_deref(), &cid, topic, Access::Write) {
                self.count_conn(ctx, conn, MqttDrop::NotAuthorized);
                self.denied_event(ctx, Some(conn), &cid, user.as_deref(), "publish", topic);
                return refuse(self, ctx, 0x87);
            }
        }
        let props = if v5 { Message::props_of(p) } else { None };
        let expiry = p.props.message_expiry.filter(|_| v5);
        // With other shards, the payload is copied once: into the mesh
        // encoding, which the local message then shares.
        let mut spare = self.spare.take();
        let (payload, blob) = if self.shard_count > 1 {
            let mut w = Writer::default();
            w.u16(listener).message_parts(
                qos,
                p.retain,
                key,
                expiry,
                topic,
                props.as_deref(),
                p.payload,
            );
            let blob = w.finish();
            (blob.slice(blob.len() - p.payload.len()..), Some(blob))
        } else {
            (reuse_payload(spare.as_mut(), p.payload), None)
        };
        let expires = expiry.map(|e| ctx.now() + Duration::from_secs(u64::from(e)));
        let fresh = |payload: Bytes, props: Option<Box<MsgProps>>| {
            Arc::new(Message {
                topic: topic.into(),
                payload,
                qos,
                retain: p.retain,
                props,
                expires,
                origin: key,
            })
        };
        let msg = match spare {
            Some(mut a) => match Arc::get_mut(&mut a) {
                Some(m) => {
                    if *m.topic != *topic {
                        m.topic = topic.into();
                    }
                    m.payload = payload;
                    m.qos = qos;
                    m.retain = p.retain;
                    m.props = props;
                    m.expires = expires;
                    m.origin = key;
                    a
                }
                None => fresh(payload, props),
            },
            None => fresh(payload, props),
        };
        let routed = self.route_publish(ctx, Arc::clone(&msg), blob, listener);
        if Arc::strong_count(&msg) == 1 && msg.payload.len() <= SPARE_PAYLOAD_MAX {
            self.spare = Some(msg);
        }
        let Some(seq) = routed else {
            if !v5 {
                return self.close_conn(ctx, conn, None, false);
            }
            return refuse(self, ctx, 0x97);
        };
        if qos == QoS::AtMostOnce {
            return;
        }
        if qos == QoS::ExactlyOnce {
            if let Some(s) = self.sessions.get_mut(&key) {
                s.flow.inbound_qos2.push(pid);
            }
        }
        let puback = qos == QoS::AtLeastOnce;
        if self.mesh.taken(seq) && self.pending_acks.is_empty() {
            self.write_ack(ctx, conn, pid, puback);
        } else {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.unacked += u32::from(puback);
            }
            self.pending_acks.push_back(PendingAck {
                seq,
                conn,
                pid,
                puback,
            });
        }
    }

    /// The session attached to `conn`, if any.
    fn session_key(&self, conn: ConnId) -> Option<u64> {
        self.conns.get(&conn).map(|c| c.session).filter(|k| *k != 0)
    }

    pub(crate) fn on_puback(&mut self, ctx: &mut dyn Context, conn: ConnId, r: &PubResp<'_>) {
        self.complete(ctx, conn, r.packet_id, QoS::AtLeastOnce, &[Flight::Sent]);
    }

    pub(crate) fn on_pubcomp(&mut self, ctx: &mut dyn Context, conn: ConnId, r: &PubResp<'_>) {
        self.complete(
            ctx,
            conn,
            r.packet_id,
            QoS::ExactlyOnce,
            &[Flight::Released],
        );
    }

    /// Removes the message in flight `pid` (of `qos`, in one of `states`)
    /// and sends what its room allows.
    fn complete(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        pid: u16,
        qos: QoS,
        states: &[Flight],
    ) {
        let Some(key) = self.session_key(conn) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if let Some(i) = s
            .flow
            .inflight
            .iter()
            .position(|f| f.pid == pid && f.out.qos == qos && states.contains(&f.state))
        {
            s.flow.inflight.remove(i);
            if !s.blocked {
                self.pump(ctx, key);
            }
        }
    }

    pub(crate) fn on_pubrec(&mut self, ctx: &mut dyn Context, conn: ConnId, r: &PubResp<'_>) {
        let Some(key) = self.session_key(conn) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let pid = r.packet_id;
        let found = s.flow.inflight.iter().position(|f| {
            f.pid == pid && f.out.qos == QoS::ExactlyOnce && f.state != Flight::Unsent
        });
        match found {
            Some(i) if r.code.0 >= 0x80 => {
                // The client refused it: the flow ends here.
                s.flow.inflight.remove(i);
                if !s.blocked {
                    self.pump(ctx, key);
                }
            }
            Some(i) => {
                s.flow.inflight[i].state = Flight::Released;
                self.write_resp(ctx, conn, 6, pid, 0);
            }
            None => {
                let code = if s.version == Version::V5 { 0x92 } else { 0 };
                self.write_resp(ctx, conn, 6, pid, code);
            }
        }
    }

    pub(crate) fn on_pubrel(&mut self, ctx: &mut dyn Context, conn: ConnId, r: &PubResp<'_>) {
        let Some(key) = self.session_key(conn) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let pid = r.packet_id;
        let code = match s.flow.inbound_qos2.iter().position(|p| *p == pid) {
            Some(i) => {
                s.flow.inbound_qos2.swap_remove(i);
                0
            }
            None if s.version == Version::V5 => 0x92,
            None => 0,
        };
        self.write_resp(ctx, conn, 7, pid, code);
    }

    pub(crate) fn on_subscribe(&mut self, ctx: &mut dyn Context, conn: ConnId, p: &Subscribe<'_>) {
        let Some(key) = self.session_key(conn) else {
            return;
        };
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        let version = s.version;
        let user = s.user.clone();
        let cid = Arc::clone(&s.client_id);
        let mut codes = Vec::with_capacity(p.filters.len());
        let mut retained: Vec<(Box<str>, SubEntry)> = Vec::new();
        for &(filter, opts) in &p.filters {
            let parsed = match topic::parse_filter(filter) {
                Ok(f)
                    if filter.len() <= self.cfg.max_topic_len
                        && topic::levels(f.filter()) <= self.cfg.max_topic_levels =>
                {
                    f
                }
                _ => {
                    self.count_conn(ctx, conn, MqttDrop::TopicInvalid);
                    codes.push(ReasonCode(0x8F));
                    continue;
                }
            };
            let shared = matches!(parsed, Filter::Shared { .. });
            if shared && opts.no_local {
                return self.fail(ctx, conn, MqttDrop::ProtocolError, 0x82);
            }
            if let Some(acl) = &self.cfg.acl {
                if !acl.check_subscribe(user.as_deref(), &cid, filter) {
                    self.count_conn(ctx, conn, MqttDrop::NotAuthorized);
                    self.denied_event(ctx, Some(conn), &cid, user.as_deref(), "subscribe", filter);
                    codes.push(ReasonCode(0x87));
                    continue;
                }
            }
            let entry = SubEntry {
                qos: opts.qos,
                no_local: opts.no_local,
                retain_as_published: opts.retain_as_published,
                retain_handling: opts.retain_handling,
                sub_id: p.subscription_id,
            };
            let Some(s) = self.sessions.get_mut(&key) else {
                return;
            };
            let exists = s.subs.contains_key(filter);
            let listener = s.listener;
            if !exists && s.subs.len() >= self.cfg.max_subscriptions_per_client {
                s.count_drop(MqttDrop::SubscriptionLimit);
                self.count_conn(ctx, conn, MqttDrop::SubscriptionLimit);
                codes.push(ReasonCode(0x97));
                continue;
            }
            s.subs.insert(filter.into(), entry);
            if !exists {
                self.at(listener).subscribed(1);
            }
            match parsed {
                Filter::Plain(f) => {
                    self.subs.insert(f, key, entry);
                }
                Filter::Shared { .. } => {
                    self.share_msg(ctx, TAG_SHARE_JOIN, filter, key, Some(&entry));
                }
            }
            codes.push(ReasonCode(opts.qos.as_u8()));
            let send = match entry.retain_handling {
                0 => true,
                1 => !exists,
                _ => false,
            };
            if send && !shared {
                retained.push((filter.into(), entry));
            }
        }
        let ack = SubAck {
            packet_id: p.packet_id,
            props: Default::default(),
            codes,
        };
        self.send_packet(ctx, conn, version, &Packet::SubAck(ack));
        for (filter, entry) in retained {
            self.send_retained(ctx, key, &filter, &entry);
        }
    }

    pub(crate) fn on_unsubscribe(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        p: &Unsubscribe<'_>,
    ) {
        let Some(key) = self.session_key(conn) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let version = s.version;
        let mut codes = Vec::with_capacity(p.filters.len());
        let mut leave = Vec::new();
        let listener = s.listener;
        let mut removed = 0;
        for &filter in &p.filters {
            if s.subs.remove(filter).is_none() {
                codes.push(ReasonCode(0x11));
                continue;
            }
            removed += 1;
            codes.push(ReasonCode(0));
            match topic::parse_filter(filter) {
                Ok(Filter::Plain(f)) => {
                    self.subs.remove(f, key);
                }
                Ok(Filter::Shared { .. }) => leave.push(filter),
                Err(_) => {}
            }
        }
        self.at(listener).unsubscribed(removed);
        for filter in leave {
            self.share_msg(ctx, TAG_SHARE_LEAVE, filter, key, None);
        }
        if version != Version::V5 {
            codes.clear();
        }
        let ack = UnsubAck {
            packet_id: p.packet_id,
            props: Default::default(),
            codes,
        };
        self.send_packet(ctx, conn, version, &Packet::UnsubAck(ack));
    }
}
