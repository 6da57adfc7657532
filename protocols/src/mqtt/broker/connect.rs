//! A client's CONNECT: identifier rules, authentication, the will, the
//! session expiry and keep-alive it gets, then the claim sent to the client
//! id's home shard (see [`super::handover`]); and the handshake log.

use std::net::SocketAddr;
use std::sync::Arc;

use ringport_plugin::{shard_for_key, ConnId, Context};

use super::config::{reason_name, ConnectEvent, DeniedEvent};
use super::conn::{Phase, WillMsg};
use super::handover::Pending;
use super::message::{user_pairs, Message, MsgProps, Writer};
use super::plugin::Mqtt;
use super::route::{Sent, TAG_CLAIM};
use super::stats::MqttDrop;
use crate::mqtt::auth::{AuthOutcome, AuthRequest};
use crate::mqtt::codec::{ConnAck, ConnAckProps, Connect, Packet, ReasonCode, Version};

impl Mqtt {
    pub(crate) fn on_connect(&mut self, ctx: &mut dyn Context, conn: ConnId, p: &Connect<'_>) {
        let v5 = p.version == Version::V5;
        let refuse = |this: &mut Mqtt, ctx: &mut dyn Context, code: u8, kind: MqttDrop| {
            this.refuse_connect(ctx, conn, p, code, kind);
        };
        if v5 && p.props.auth_method.is_some() {
            return refuse(self, ctx, 0x8C, MqttDrop::NotAuthorized);
        }
        if p.client_id.len() > self.cfg.max_client_id_len
            || (p.client_id.is_empty() && !p.clean_start && !v5)
        {
            return refuse(self, ctx, 0x85, MqttDrop::ProtocolError);
        }
        if !v5 && p.keep_alive > self.cfg.max_keep_alive {
            return refuse(self, ctx, 0x85, MqttDrop::ProtocolError);
        }
        // Authentication.
        let identities = ctx.peer_identities(conn);
        let ids: Vec<&str> = identities.iter().map(String::as_str).collect();
        let anonymous = p.username.is_none() && identities.is_empty();
        let outcome = match &self.cfg.authenticator {
            _ if anonymous && !self.cfg.allow_anonymous => AuthOutcome::NotAuthorized,
            Some(a) => a.authenticate(&AuthRequest {
                client_id: p.client_id,
                username: p.username,
                password: p.password,
                tls_identities: &ids,
            }),
            None if self.cfg.allow_anonymous => AuthOutcome::Allowed {
                identity: String::new(),
            },
            None => AuthOutcome::NotAuthorized,
        };
        let identity = match outcome {
            AuthOutcome::Allowed { identity } => (!identity.is_empty()).then_some(identity),
            AuthOutcome::BadCredentials => return refuse(self, ctx, 0x86, MqttDrop::NotAuthorized),
            AuthOutcome::NotAuthorized => return refuse(self, ctx, 0x87, MqttDrop::NotAuthorized),
        };
        // The will.
        let will = match &p.will {
            None => None,
            Some(w) => {
                if self.check_topic(w.topic).is_err() {
                    return refuse(self, ctx, 0x90, MqttDrop::TopicInvalid);
                }
                if w.retain && !self.cfg.retain_available {
                    return refuse(self, ctx, 0x9A, MqttDrop::ProtocolError);
                }
                let wp = &w.props;
                let props = (wp.payload_format.is_some()
                    || wp.response_topic.is_some()
                    || wp.correlation_data.is_some()
                    || wp.content_type.is_some()
                    || !wp.user_properties.is_empty())
                .then(|| {
                    Box::new(MsgProps {
                        payload_format: wp.payload_format,
                        response_topic: wp.response_topic.map(Into::into),
                        correlation_data: wp.correlation_data.map(Into::into),
                        content_type: wp.content_type.map(Into::into),
                        user: user_pairs(wp.user_properties),
                    })
                });
                Some(Box::new(WillMsg {
                    msg: Message {
                        topic: w.topic.into(),
                        payload: ringport_plugin::Bytes::copy_from_slice(w.payload),
                        qos: w.qos,
                        retain: w.retain,
                        props,
                        expires: None,
                        origin: 0,
                    },
                    expiry: wp.message_expiry,
                    delay: wp.delay_interval.unwrap_or(0),
                }))
            }
        };
        if self.sessions.len() >= self.cfg.max_sessions {
            return refuse(self, ctx, 0x97, MqttDrop::SessionLimit);
        }
        // Client id, expiry, keep-alive.
        let assigned = p.client_id.is_empty();
        let client_id: Arc<str> = if assigned {
            self.assigned_ids += 1;
            let peer = ctx.peer(conn).map_or(0, hash_peer);
            format!("ringport-{}-{}-{:x}", self.shard, self.assigned_ids, peer).into()
        } else {
            p.client_id.into()
        };
        let asked = if v5 {
            p.props.session_expiry.unwrap_or(0)
        } else if p.clean_start {
            0
        } else {
            u32::MAX
        };
        let expiry = asked.min(self.cfg.max_session_expiry);
        let max_ka = self.cfg.max_keep_alive;
        let server_keep_alive = (v5
            && (p.keep_alive > max_ka || (p.keep_alive == 0 && max_ka < u16::MAX)))
            .then_some(max_ka);
        let pending = Pending {
            clean_start: p.clean_start,
            expiry,
            expiry_capped: v5 && expiry != asked,
            assigned,
            receive_maximum: p.props.receive_maximum.unwrap_or(u16::MAX).max(1),
            max_packet: p.props.maximum_packet_size.unwrap_or(u32::MAX).max(1),
            topic_alias_maximum: if v5 {
                p.props.topic_alias_maximum.unwrap_or(0)
            } else {
                0
            },
            server_keep_alive,
            username: p.username.map(Into::into),
            identity: identity.clone().map(Into::into),
            client_id: Arc::clone(&client_id),
            user: identity.map(Into::into),
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.version = p.version;
        c.phase = Phase::Connecting;
        c.keep_alive = server_keep_alive.unwrap_or(p.keep_alive);
        c.will = will;
        c.held().pending = Some(Box::new(pending));
        self.awaiting.insert(conn.raw());
        // Ask the client id's home shard for the session.
        let home = shard_for_key(client_id.as_bytes(), self.shard_count);
        let mut w = Writer::default();
        w.str(&client_id)
            .u64(self.shard as u64)
            .u64(conn.raw())
            .u8(u8::from(p.clean_start));
        let claim = w.finish();
        if self.mesh.send(ctx, home, TAG_CLAIM, claim.clone(), None) == Sent::Dropped {
            // No mesh to the home shard (an engine without one): this
            // shard is the client id's home as far as it can tell.
            let here = self.shard;
            self.mesh.send(ctx, here, TAG_CLAIM, claim, None);
        }
        // Everything local (one shard): the CONNACK goes out now.
        while let Some(m) = self.mesh.loopback.pop_front() {
            self.handle_mesh(ctx, self.shard, m);
        }
    }

    /// Answers a CONNECT with a failure CONNACK and closes.
    fn refuse_connect(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        p: &Connect<'_>,
        code: u8,
        kind: MqttDrop,
    ) {
        self.count_conn(ctx, conn, kind);
        self.at(self.listener_of(conn)).connect(false);
        // The codec writes the 3.1.1 return code of a 5.0 reason code.
        let ack = ConnAck {
            session_present: false,
            code: ReasonCode(code),
            props: ConnAckProps::default(),
        };
        self.send_packet(ctx, conn, p.version, &Packet::ConnAck(ack));
        self.connect_event(
            ctx,
            conn,
            p.client_id,
            None,
            p.username,
            p.version,
            false,
            code,
        );
        self.close_conn(ctx, conn, None, false);
    }

    /// Tells the event hook about a CONNECT.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn connect_event(
        &self,
        ctx: &mut dyn Context,
        conn: ConnId,
        client_id: &str,
        identity: Option<&str>,
        username: Option<&str>,
        version: Version,
        session_present: bool,
        code: u8,
    ) {
        let Some(events) = &self.cfg.events else {
            return;
        };
        if !self.conns.contains_key(&conn) {
            return;
        }
        events.connect(&ConnectEvent {
            shard: ctx.shard(),
            peer: ctx.peer(conn).unwrap_or(NO_PEER),
            client_id,
            identity,
            username,
            version,
            session_present,
            code,
            result: reason_name(code),
        });
    }

    /// Tells the event hook about a refusal of the ACL.
    pub(crate) fn denied_event(
        &self,
        ctx: &mut dyn Context,
        conn: Option<ConnId>,
        client_id: &str,
        user: Option<&str>,
        action: &'static str,
        topic: &str,
    ) {
        let Some(events) = &self.cfg.events else {
            return;
        };
        let peer = conn.and_then(|c| ctx.peer(c)).unwrap_or(NO_PEER);
        events.denied(&DeniedEvent {
            shard: ctx.shard(),
            peer,
            client_id,
            user,
            action,
            topic,
        });
    }
}

/// What an event names as the peer when there is none (a will's publisher,
/// or a context that does not know the stream).
const NO_PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

/// A short hash of a peer address, to make assigned client ids unlikely to
/// collide across restarts.
fn hash_peer(peer: SocketAddr) -> u64 {
    let s = peer.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h & 0xffff_ffff
}
