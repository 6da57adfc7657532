//! One client connection: bytes in, packets out, and the CONNECT.
//!
//! A connection goes `AwaitConnect` → (CONNECT) → `Connecting` (its session
//! is being fetched from wherever it lives, see [`super::handover`]) →
//! `Connected` (CONNACK sent) → `Closed`. Bytes that arrive while it is
//! `Connecting` are kept in its stash and handled once it is connected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ringport_plugin::{shard_for_key, ConnId, Context, WriteError};

use super::config::{reason_name, ConnectEvent};
use super::handover::Pending;
use super::message::Writer;
use super::message::{user_pairs, Message, MsgProps};
use super::plugin::Mqtt;
use super::route::{Sent, TAG_CLAIM};
use super::stats::MqttDrop;
use crate::mqtt::auth::{AuthOutcome, AuthRequest};
use crate::mqtt::codec::{
    self, ConnAck, ConnAckProps, Connect, DecodeError, Decoded, Disconnect, Packet, PubResp,
    ReasonCode, Version,
};
use crate::mqtt::topic;

/// Bytes of control packets (acknowledgements) kept for a client that is
/// not reading; past it its packets are left to the engine (backpressure).
pub(crate) const OWED_CAP: usize = 16 * 1024;

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    AwaitConnect,
    Connecting,
    Connected,
    Closed,
}

/// A will message, kept until the connection ends.
#[derive(Debug, Clone)]
pub(crate) struct WillMsg {
    pub msg: Message,
    /// Message Expiry Interval, applied when the will is published.
    pub expiry: Option<u32>,
    /// Will Delay Interval, seconds.
    pub delay: u32,
}

/// One client connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub peer: SocketAddr,
    /// When the stream opened (the CONNECT deadline counts from it).
    pub opened: Instant,
    pub phase: Phase,
    pub version: Version,
    /// Key of the attached session (0: none).
    pub session: u64,
    pub client_id: Option<Arc<str>>,
    /// Effective keep-alive, seconds (0: none).
    pub keep_alive: u16,
    pub last_rx: Instant,
    /// Received bytes not handled yet (while connecting, or left over).
    pub stash: Vec<u8>,
    /// Control packets not yet taken by the engine (the client is not reading).
    pub owed: Vec<u8>,
    pub pending: Option<Box<Pending>>,
    /// Inbound topic aliases (index: alias - 1).
    pub aliases: Vec<Option<Box<str>>>,
    /// QoS 1 messages whose PUBACK waits for the mesh.
    pub unacked: u32,
    pub will: Option<Box<WillMsg>>,
    /// Identity or username the ACL checks.
    pub user: Option<Arc<str>>,
    /// DISCONNECT with reason 0x00 received: no will.
    pub clean_disconnect: bool,
}

impl Conn {
    pub fn new(peer: SocketAddr, now: Instant) -> Self {
        Conn {
            peer,
            opened: now,
            phase: Phase::AwaitConnect,
            version: Version::V311,
            session: 0,
            client_id: None,
            keep_alive: 0,
            last_rx: now,
            stash: Vec::new(),
            owed: Vec::new(),
            pending: None,
            aliases: Vec::new(),
            unacked: 0,
            will: None,
            user: None,
            clean_disconnect: false,
        }
    }
}

impl Mqtt {
    /// Most bytes stashed per connection.
    fn stash_cap(&self) -> usize {
        self.cfg.max_packet_size as usize + OWED_CAP
    }

    /// Bytes from a client; returns how many were consumed.
    pub(crate) fn on_data(&mut self, ctx: &mut dyn Context, conn: ConnId, data: &[u8]) -> usize {
        let cap = self.stash_cap();
        let Some(c) = self.conns.get_mut(&conn) else {
            return data.len();
        };
        if c.phase == Phase::Closed {
            return data.len();
        }
        c.last_rx = ctx.now();
        if c.phase == Phase::Connecting || !c.stash.is_empty() {
            let take = data.len().min(cap.saturating_sub(c.stash.len()));
            c.stash.extend_from_slice(&data[..take]);
            if c.phase == Phase::Connected {
                self.replay(ctx, conn);
                // What is left lies within these new bytes: give it back to
                // the engine, which presents it again (and the stream leaves
                // this copying path).
                if let Some(c) = self.conns.get_mut(&conn) {
                    if c.phase == Phase::Connected && c.stash.len() <= take {
                        let left = c.stash.len();
                        c.stash.clear();
                        return take - left;
                    }
                }
            }
            return take;
        }
        let n = self.run(ctx, conn, data);
        match self.conns.get_mut(&conn) {
            Some(c) if c.phase == Phase::Connecting => {
                let rest = &data[n..];
                let take = rest.len().min(cap);
                c.stash.extend_from_slice(&rest[..take]);
                n + take
            }
            _ => n,
        }
    }

    /// Handles stashed bytes of a connected client.
    pub(crate) fn replay(&mut self, ctx: &mut dyn Context, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.phase != Phase::Connected || c.stash.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut c.stash);
        let n = self.run(ctx, conn, &buf);
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.phase != Phase::Closed {
                c.stash = buf[n..].to_vec();
            }
        }
    }

    /// Handles the whole packets at the start of `buf`; returns the bytes
    /// they cover. Stops early when the connection closes (all consumed),
    /// starts connecting, or owes too many bytes to a client not reading.
    fn run(&mut self, ctx: &mut dyn Context, conn: ConnId, buf: &[u8]) -> usize {
        let max = self.cfg.max_packet_size as usize;
        let mut off = 0;
        loop {
            let Some(c) = self.conns.get(&conn) else {
                return buf.len();
            };
            let version = match c.phase {
                Phase::Closed => return buf.len(),
                Phase::Connecting => return off,
                _ if c.owed.len() > OWED_CAP => return off,
                Phase::AwaitConnect => None,
                Phase::Connected => Some(c.version),
            };
            match codec::decode(&buf[off..], version, max) {
                Ok(Decoded::Incomplete) => return off,
                Ok(Decoded::Packet(p, n)) => {
                    off += n;
                    self.on_packet(ctx, conn, p);
                }
                Err(e) => {
                    self.decode_failed(ctx, conn, e);
                    return buf.len();
                }
            }
        }
    }

    fn decode_failed(&mut self, ctx: &mut dyn Context, conn: ConnId, e: DecodeError) {
        let before_connect = self
            .conns
            .get(&conn)
            .is_some_and(|c| c.phase == Phase::AwaitConnect);
        let (kind, code) = match e {
            DecodeError::TooLarge { .. } => (MqttDrop::PacketTooLarge, e.reason().0),
            DecodeError::Malformed(_) => (MqttDrop::Malformed, e.reason().0),
            DecodeError::Protocol(_) => (MqttDrop::ProtocolError, e.reason().0),
            DecodeError::UnsupportedVersion(_) => {
                // The 3.1.1 answer: return code 1, unacceptable protocol version.
                self.count(ctx, MqttDrop::ProtocolError);
                let _ = ctx.write(conn, &[0x20, 2, 0, 1]);
                self.connect_event(ctx, conn, "", None, None, Version::V311, false, 0x84);
                self.stats.connect(false);
                self.close_conn(ctx, conn, None, false);
                return;
            }
        };
        self.count(ctx, kind);
        if before_connect {
            // A CONNECT that does not decode is still a line in the log.
            self.stats.connect(false);
            self.connect_event(ctx, conn, "", None, None, Version::V311, false, code);
        }
        self.close_conn(ctx, conn, Some(code), false);
    }

    /// Counts `kind` and closes the connection (v5: DISCONNECT `code` first).
    pub(crate) fn fail(&mut self, ctx: &mut dyn Context, conn: ConnId, kind: MqttDrop, code: u8) {
        self.count(ctx, kind);
        self.close_conn(ctx, conn, Some(code), false);
    }

    fn on_packet(&mut self, ctx: &mut dyn Context, conn: ConnId, p: Packet<'_>) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let connected = c.phase == Phase::Connected;
        match p {
            Packet::Connect(c) if !connected => self.on_connect(ctx, conn, &c),
            _ if !connected => self.fail(ctx, conn, MqttDrop::ProtocolError, 0x82),
            Packet::Publish(p) => self.on_publish(ctx, conn, &p),
            Packet::PubAck(r) => self.on_puback(ctx, conn, &r),
            Packet::PubRec(r) => self.on_pubrec(ctx, conn, &r),
            Packet::PubRel(r) => self.on_pubrel(ctx, conn, &r),
            Packet::PubComp(r) => self.on_pubcomp(ctx, conn, &r),
            Packet::Subscribe(s) => self.on_subscribe(ctx, conn, &s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(ctx, conn, &u),
            Packet::PingReq => self.write_ctl(ctx, conn, &[0xD0, 0]),
            Packet::Disconnect(d) => self.on_disconnect(ctx, conn, &d),
            // A second CONNECT, AUTH without an authentication method, or
            // a packet only a server sends.
            _ => self.fail(ctx, conn, MqttDrop::ProtocolError, 0x82),
        }
    }

    fn on_connect(&mut self, ctx: &mut dyn Context, conn: ConnId, p: &Connect<'_>) {
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
            let peer = self.conns.get(&conn).map_or(0, |c| hash_peer(c.peer));
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
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.version = p.version;
        c.phase = Phase::Connecting;
        c.keep_alive = server_keep_alive.unwrap_or(p.keep_alive);
        c.client_id = Some(Arc::clone(&client_id));
        c.will = will;
        c.user = identity.map(Into::into);
        c.pending = Some(Box::new(pending));
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
        self.count(ctx, kind);
        self.stats.connect(false);
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
        let (Some(events), Some(c)) = (&self.cfg.events, self.conns.get(&conn)) else {
            return;
        };
        events.connect(&ConnectEvent {
            shard: ctx.shard(),
            peer: c.peer,
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
        let peer = conn
            .and_then(|c| self.conns.get(&c))
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.peer);
        events.denied(&super::config::DeniedEvent {
            shard: ctx.shard(),
            peer,
            client_id,
            user,
            action,
            topic,
        });
    }

    /// Whether a topic name may be published: valid, and within the
    /// length and level limits.
    pub(crate) fn check_topic(&self, t: &str) -> Result<(), ()> {
        if t.len() > self.cfg.max_topic_len
            || topic::levels(t) > self.cfg.max_topic_levels
            || topic::valid_topic_name(t).is_err()
        {
            return Err(());
        }
        Ok(())
    }

    fn on_disconnect(&mut self, ctx: &mut dyn Context, conn: ConnId, d: &Disconnect<'_>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.clean_disconnect = d.code.0 == 0x00;
        let key = c.session;
        if let Some(e) = d.session_expiry {
            if let Some(s) = self.sessions.get_mut(&key) {
                if s.expiry == 0 && e != 0 {
                    // Setting an expiry the CONNECT did not ask for.
                    return self.fail(ctx, conn, MqttDrop::ProtocolError, 0x82);
                }
                s.expiry = e.min(self.cfg.max_session_expiry);
            }
        }
        self.close_conn(ctx, conn, None, false);
    }

    /// Ends a connection: (v5, when `code` is given and the CONNACK went
    /// out) a DISCONNECT first, then the close, the will, and the session
    /// detached. `by_engine`: the engine reported the close (no close call).
    pub(crate) fn close_conn(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        code: Option<u8>,
        by_engine: bool,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.phase == Phase::Closed {
            return;
        }
        let was = c.phase;
        c.phase = Phase::Closed;
        c.stash = Vec::new();
        c.owed = Vec::new();
        let version = c.version;
        if let (Some(code), Phase::Connected, Version::V5) = (code, was, version) {
            let d = Disconnect {
                code: ReasonCode(code),
                ..Disconnect::default()
            };
            self.scratch.clear();
            if codec::encode(&Packet::Disconnect(d), version, &mut self.scratch).is_ok() {
                let _ = ctx.write(conn, &self.scratch);
            }
        }
        if !by_engine {
            ctx.close(conn);
        }
        if was == Phase::Connected {
            self.connected -= 1;
            self.detach(ctx, conn);
        }
    }

    /// Encodes `p` and writes it (or keeps it owed).
    pub(crate) fn send_packet(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        version: Version,
        p: &Packet<'_>,
    ) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        if codec::encode(p, version, &mut buf).is_ok() {
            self.write_ctl(ctx, conn, &buf);
        }
        self.scratch = buf;
    }

    /// Writes a control packet, or keeps it for when the client reads again.
    pub(crate) fn write_ctl(&mut self, ctx: &mut dyn Context, conn: ConnId, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.phase == Phase::Closed {
            return;
        }
        if !c.owed.is_empty() {
            c.owed.extend_from_slice(bytes);
            return;
        }
        match ctx.write(conn, bytes) {
            Ok(()) => {}
            Err(WriteError::QueueFull) => {
                // Owed was empty: not listed for this yet.
                c.owed.extend_from_slice(bytes);
                self.blocked.push(conn);
            }
            Err(_) => {}
        }
    }

    /// Writes PUBACK (`puback`) or PUBREC for `pid`.
    pub(crate) fn write_ack(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        pid: u16,
        puback: bool,
    ) {
        self.write_resp(ctx, conn, if puback { 4 } else { 5 }, pid, 0);
    }

    /// Writes a PUBACK/PUBREC/PUBREL/PUBCOMP (packet type `ty`).
    pub(crate) fn write_resp(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        ty: u8,
        pid: u16,
        code: u8,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let r = PubResp {
            packet_id: pid,
            code: ReasonCode(code),
            props: Default::default(),
        };
        let p = match ty {
            4 => Packet::PubAck(r),
            5 => Packet::PubRec(r),
            6 => Packet::PubRel(r),
            _ => Packet::PubComp(r),
        };
        let version = c.version;
        self.send_packet(ctx, conn, version, &p);
    }
}

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
