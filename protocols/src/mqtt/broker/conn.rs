//! One client connection: bytes in, packets out, and the CONNECT.
//!
//! A connection goes `AwaitConnect` → (CONNECT) → `Connecting` (its session
//! is being fetched from wherever it lives, see [`super::handover`]) →
//! `Connected` (CONNACK sent) → `Closed`. Bytes that arrive while it is
//! `Connecting` are kept in its stash and handled once it is connected.

use std::net::SocketAddr;
use std::time::Instant;

use ringport_plugin::{ConnId, Context, WriteError};

use super::handover::Pending;
use super::message::Message;
use super::plugin::Mqtt;
use super::stats::MqttDrop;
use crate::mqtt::codec::{
    self, DecodeError, Decoded, Disconnect, Packet, PubResp, ReasonCode, Version,
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

/// What few connections need: bytes held back and inbound topic aliases.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// Received bytes not handled yet (while connecting, or left over).
    pub stash: Vec<u8>,
    /// Control packets not yet taken by the engine (the client is not reading).
    pub owed: Vec<u8>,
    /// Inbound topic aliases (index: alias - 1).
    pub aliases: Vec<Option<Box<str>>>,
}

/// One client connection. Kept small (an idle client's cost is mostly
/// this and its session): what only some connections need is boxed and
/// made when first needed.
#[derive(Debug)]
pub(crate) struct Conn {
    pub peer: SocketAddr,
    /// Before the CONNACK: when the stream opened (the CONNECT deadline
    /// counts from it). After: when the client last sent something (the
    /// keep-alive counts from it).
    pub since: Instant,
    /// Key of the attached session (0: none).
    pub session: u64,
    /// The CONNECT being answered (phase `Connecting`).
    pub pending: Option<Box<Pending>>,
    pub will: Option<Box<WillMsg>>,
    /// Stashed and owed bytes, inbound topic aliases; `None` while all
    /// are empty.
    pub held: Option<Box<Held>>,
    /// QoS 1 messages whose PUBACK waits for the mesh.
    pub unacked: u32,
    /// The listener it came through (its index in the engine's plan).
    pub listener: u16,
    /// Effective keep-alive, seconds (0: none).
    pub keep_alive: u16,
    pub phase: Phase,
    pub version: Version,
    /// DISCONNECT with reason 0x00 received: no will.
    pub clean_disconnect: bool,
}

impl Conn {
    pub fn new(peer: SocketAddr, listener: u16, now: Instant) -> Self {
        Conn {
            peer,
            since: now,
            session: 0,
            pending: None,
            will: None,
            held: None,
            unacked: 0,
            listener,
            keep_alive: 0,
            phase: Phase::AwaitConnect,
            version: Version::V311,
            clean_disconnect: false,
        }
    }

    /// Received bytes not handled yet.
    pub fn stash(&self) -> &[u8] {
        self.held.as_ref().map_or(&[], |h| &h.stash)
    }

    /// Control packets not yet taken by the engine.
    pub fn owed(&self) -> &[u8] {
        self.held.as_ref().map_or(&[], |h| &h.owed)
    }

    /// The held buffers, made on first use.
    pub fn held(&mut self) -> &mut Held {
        self.held.get_or_insert_with(Default::default)
    }

    /// Frees the held buffers once nothing is in them.
    pub fn release(&mut self) {
        if self
            .held
            .as_ref()
            .is_some_and(|h| h.stash.is_empty() && h.owed.is_empty() && h.aliases.is_empty())
        {
            self.held = None;
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
        if c.phase == Phase::Connected {
            c.since = ctx.now();
        }
        if c.phase == Phase::Connecting || !c.stash().is_empty() {
            let take = data.len().min(cap.saturating_sub(c.stash().len()));
            if take > 0 {
                c.held().stash.extend_from_slice(&data[..take]);
            }
            if c.phase == Phase::Connected {
                self.replay(ctx, conn);
                // What is left lies within these new bytes: give it back to
                // the engine, which presents it again (and the stream leaves
                // this copying path).
                if let Some(c) = self.conns.get_mut(&conn) {
                    if c.phase == Phase::Connected && c.stash().len() <= take {
                        let left = c.stash().len();
                        if let Some(h) = &mut c.held {
                            h.stash = Vec::new();
                        }
                        c.release();
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
                if take > 0 {
                    c.held().stash.extend_from_slice(&rest[..take]);
                }
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
        if c.phase != Phase::Connected || c.stash().is_empty() {
            return;
        }
        let buf = std::mem::take(&mut c.held().stash);
        let n = self.run(ctx, conn, &buf);
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.phase != Phase::Closed && n < buf.len() {
                c.held().stash = buf[n..].to_vec();
            }
            c.release();
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
                _ if c.owed().len() > OWED_CAP => return off,
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
                self.count_conn(ctx, conn, MqttDrop::ProtocolError);
                let _ = ctx.write(conn, &[0x20, 2, 0, 1]);
                self.connect_event(ctx, conn, "", None, None, Version::V311, false, 0x84);
                self.at(self.listener_of(conn)).connect(false);
                self.close_conn(ctx, conn, None, false);
                return;
            }
        };
        self.count_conn(ctx, conn, kind);
        if before_connect {
            // A CONNECT that does not decode is still a line in the log.
            self.at(self.listener_of(conn)).connect(false);
            self.connect_event(ctx, conn, "", None, None, Version::V311, false, code);
        }
        self.close_conn(ctx, conn, Some(code), false);
    }

    /// Counts `kind` and closes the connection (v5: DISCONNECT `code` first).
    pub(crate) fn fail(&mut self, ctx: &mut dyn Context, conn: ConnId, kind: MqttDrop, code: u8) {
        self.count_conn(ctx, conn, kind);
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
        let listener = c.listener;
        c.phase = Phase::Closed;
        c.held = None;
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
            self.at(listener).detached();
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
        if !c.owed().is_empty() {
            c.held().owed.extend_from_slice(bytes);
            return;
        }
        match ctx.write(conn, bytes) {
            Ok(()) => {}
            Err(WriteError::QueueFull) => {
                // Owed was empty: not listed for this yet.
                c.held().owed.extend_from_slice(bytes);
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
