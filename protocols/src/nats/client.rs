//! [`NatsClient`]: the client side of one NATS connection at a time, as a
//! state machine with no socket, no thread and no clock.
//!
//! # Calling order
//!
//! 1. [`NatsClient::next_server`] says where to connect; the caller opens a
//!    TCP connection there (with its own backoff between attempts).
//! 2. Once it is open: [`NatsClient::handle_connected`].
//! 3. Every received byte: [`NatsClient::handle_input`], which returns how
//!    many bytes it consumed (whole operations); the caller presents the rest
//!    again with the bytes that follow, as the engine does for plugins.
//! 4. After every call: send [`NatsClient::pending_transmit`] and report
//!    what was taken with [`NatsClient::advance_transmit`]; drain
//!    [`NatsClient::poll_event`].
//! 5. At [`NatsClient::poll_timeout`] (or later): [`NatsClient::handle_timeout`].
//! 6. When the connection closes, or after an [`Event::NeedReconnect`] (then
//!    the caller closes it): [`NatsClient::handle_disconnected`], and back to 1.
//!
//! [`NatsClient::publish`], [`NatsClient::subscribe`] and
//! [`NatsClient::unsubscribe`] may be called in any state.
//!
//! # Handshake
//!
//! The server speaks first (`INFO`); the client answers `CONNECT` and `PING`.
//! The server's `PONG` proves it accepted the login: only then is the client
//! connected, the subscriptions are sent again and the publishes buffered
//! meanwhile follow, in order. A `-ERR` before that `PONG` (such as
//! `'Authorization Violation'`) ends the attempt with its text as the reason.
//!
//! # Buffer
//!
//! Publishes wait in one bounded queue, whatever the state: while
//! disconnected they are held for the next connection; while connected they
//! are bytes not yet taken by [`NatsClient::advance_transmit`]. The bound is
//! [`NatsConfig::buffer_bytes`] (encoded `PUB`/`HPUB` bytes) and
//! [`NatsConfig::buffer_messages`]. A publish that does not fit is refused
//! ([`PublishError::BufferFull`], counted in
//! [`NatsStats::dropped_buffer_full`]): the newest message is the one
//! dropped, so that what was accepted keeps its order and is sent, and the
//! caller learns of each loss when it happens. When a connection drops,
//! publishes not yet taken go back to the queue; one the transport had taken
//! only in part is lost and counted in [`NatsStats::lost_in_flight`].
//!
//! # Keep-alive
//!
//! When nothing was received for [`NatsConfig::ping_interval`] (and no
//! `PING` was sent in that time), the client sends `PING`. Anything received
//! answers for the connection; after [`NatsConfig::max_pings_outstanding`]
//! `PING`s without anything back, the connection is declared dead
//! ([`DisconnectReason::StaleConnection`]).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Instant;

use super::config::{Auth, ConfigError, NatsConfig};
use super::event::{DisconnectReason, Event, Message, NatsStats, PublishError, ServerError};
use super::headers::Headers;
use super::info::{Connect, ServerInfo};
use super::nkey::NKey;
use super::servers::{ServerAddr, ServerList};
use super::wire::{self, ServerOp, SubjectError};

/// Where the client is in its connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No transport: connect to [`NatsClient::next_server`].
    Disconnected,
    /// Transport open, waiting for the server's `INFO`.
    AwaitingInfo,
    /// `CONNECT` and `PING` sent, waiting for the `PONG` that confirms them.
    AwaitingPong,
    /// Logged in: messages flow.
    Connected,
}

#[derive(Debug, Clone)]
struct Subscription {
    subject: String,
    queue_group: Option<String>,
    max: Option<u64>,
    delivered: u64,
}

/// A publish waiting for a connection: its encoded frame and body size.
#[derive(Debug)]
struct Pending {
    frame: Vec<u8>,
    body: usize,
}

/// A publish inside `out`, at absolute stream positions.
#[derive(Debug, Clone, Copy)]
struct Mark {
    start: u64,
    end: u64,
    body: usize,
}

/// Bytes kept at the front of `out` once taken, before they are dropped.
const COMPACT_AFTER: usize = 64 * 1024;

/// A sans-IO NATS client; see the [module](self) for the calling order.
pub struct NatsClient {
    config: NatsConfig,
    nkey: Option<NKey>,
    servers: ServerList,
    state: State,
    since: Instant,
    info: Option<ServerInfo>,
    subs: BTreeMap<u64, Subscription>,
    next_sid: u64,
    /// Bytes for the transport; `out[0]` is at stream position `out_base`.
    out: Vec<u8>,
    out_base: u64,
    /// Stream position up to which the transport took bytes.
    out_sent: u64,
    /// Publishes in `out`, in order.
    marks: VecDeque<Mark>,
    /// Publishes waiting for a connection, in order.
    buffer: VecDeque<Pending>,
    pending_bytes: usize,
    pending_messages: usize,
    events: VecDeque<Event>,
    last_rx: Instant,
    last_ping: Instant,
    pings_out: u32,
    stats: NatsStats,
}

impl fmt::Debug for NatsClient {
    /// State and levels only: the transmit buffer may hold `CONNECT` with
    /// the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsClient")
            .field("state", &self.state)
            .field("server", &self.servers.current())
            .field("subscriptions", &self.subs.len())
            .field("pending_transmit", &self.pending_transmit().len())
            .field("buffered_messages", &self.pending_messages)
            .finish_non_exhaustive()
    }
}

impl NatsClient {
    /// A disconnected client; `now` starts its clock.
    pub fn new(config: NatsConfig, now: Instant) -> Result<NatsClient, ConfigError> {
        let servers = ServerList::new(&config.servers).map_err(ConfigError::Url)?;
        let nkey = match &config.auth {
            Auth::NKeySeed(seed) => Some(NKey::from_seed(seed).map_err(ConfigError::NKey)?),
            _ => None,
        };
        for (zero, field) in [
            (config.buffer_bytes == 0, "buffer_bytes"),
            (config.buffer_messages == 0, "buffer_messages"),
            (config.max_pings_outstanding == 0, "max_pings_outstanding"),
            (config.ping_interval.is_zero(), "ping_interval"),
            (config.handshake_timeout.is_zero(), "handshake_timeout"),
            (
                config.limits.max_control_line == 0,
                "limits.max_control_line",
            ),
            (config.limits.max_payload == 0, "limits.max_payload"),
        ] {
            if zero {
                return Err(ConfigError::Zero(field));
            }
        }
        Ok(NatsClient {
            config,
            nkey,
            servers,
            state: State::Disconnected,
            since: now,
            info: None,
            subs: BTreeMap::new(),
            next_sid: 1,
            out: Vec::new(),
            out_base: 0,
            out_sent: 0,
            marks: VecDeque::new(),
            buffer: VecDeque::new(),
            pending_bytes: 0,
            pending_messages: 0,
            events: VecDeque::new(),
            last_rx: now,
            last_ping: now,
            pings_out: 0,
            stats: NatsStats::default(),
        })
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The counters, with the buffer's current level.
    pub fn stats(&self) -> NatsStats {
        NatsStats {
            buffered_bytes: self.pending_bytes as u64,
            buffered_messages: self.pending_messages as u64,
            ..self.stats
        }
    }

    /// The last `INFO` received.
    pub fn server_info(&self) -> Option<&ServerInfo> {
        self.info.as_ref()
    }

    /// The servers known: configured, then learned.
    pub fn servers(&self) -> &ServerList {
        &self.servers
    }

    /// The server to connect to next (round robin over configured and
    /// learned servers). Its credentials, if its URL has some, are used for
    /// the connection that follows.
    pub fn next_server(&mut self) -> &ServerAddr {
        self.servers.next_server()
    }

    /// The transport to the server last returned by
    /// [`NatsClient::next_server`] is open: wait for its `INFO`.
    pub fn handle_connected(&mut self, now: Instant) {
        self.drop_connection_state();
        self.state = State::AwaitingInfo;
        self.since = now;
        self.last_rx = now;
        self.last_ping = now;
    }

    /// The transport closed (or the caller closed it after
    /// [`Event::NeedReconnect`]). Publishes not yet taken go back to the
    /// buffer. Emits [`Event::NeedReconnect`] unless one was emitted for this
    /// connection already.
    pub fn handle_disconnected(&mut self, _now: Instant) {
        if self.state != State::Disconnected {
            self.fail(DisconnectReason::TransportClosed);
        }
    }

    /// Consumes the whole operations at the start of `data` and returns how
    /// many bytes they took; the caller keeps the rest for the next call.
    /// While disconnected, or once the data ended the connection, every byte
    /// is consumed and ignored.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) -> usize {
        let mut at = 0;
        while self.state != State::Disconnected {
            match wire::parse_server_op(&data[at..], &self.config.limits) {
                Ok(None) => return at,
                Ok(Some((op, n))) => {
                    at += n;
                    self.stats.bytes_in += n as u64;
                    self.last_rx = now;
                    self.pings_out = 0;
                    self.handle_op(now, op);
                }
                Err(e) => {
                    self.fail(DisconnectReason::Protocol(e));
                }
            }
        }
        data.len()
    }

    /// Sends keep-alive `PING`s, declares a silent connection dead, ends a
    /// handshake that takes too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Disconnected => {}
            State::AwaitingInfo | State::AwaitingPong => {
                if now >= self.since + self.config.handshake_timeout {
                    self.fail(DisconnectReason::HandshakeTimeout);
                }
            }
            State::Connected => {
                let due = self.last_rx.max(self.last_ping) + self.config.ping_interval;
                if now < due {
                    return;
                }
                if self.pings_out >= self.config.max_pings_outstanding {
                    self.fail(DisconnectReason::StaleConnection {
                        unanswered: self.pings_out,
                    });
                    return;
                }
                wire::encode_ping(&mut self.out);
                self.pings_out += 1;
                self.stats.pings_sent += 1;
                self.last_ping = now;
            }
        }
    }

    /// When [`NatsClient::handle_timeout`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Disconnected => None,
            State::AwaitingInfo | State::AwaitingPong => {
                Some(self.since + self.config.handshake_timeout)
            }
            State::Connected => Some(self.last_rx.max(self.last_ping) + self.config.ping_interval),
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to send on the transport (empty while disconnected).
    pub fn pending_transmit(&self) -> &[u8] {
        let taken = (self.out_sent - self.out_base) as usize;
        &self.out[taken..]
    }

    /// The transport took the first `n` bytes of
    /// [`NatsClient::pending_transmit`] (more than there are counts as all).
    pub fn advance_transmit(&mut self, n: usize) {
        let n = n.min(self.pending_transmit().len());
        self.out_sent += n as u64;
        self.stats.bytes_out += n as u64;
        while let Some(mark) = self.marks.front() {
            if mark.end > self.out_sent {
                break;
            }
            self.pending_bytes -= (mark.end - mark.start) as usize;
            self.pending_messages -= 1;
            self.stats.published += 1;
            self.marks.pop_front();
        }
        let taken = (self.out_sent - self.out_base) as usize;
        if taken == self.out.len() || taken >= COMPACT_AFTER {
            self.out.drain(..taken);
            self.out_base = self.out_sent;
        }
    }

    /// Subscribes to `subject` (wildcards allowed), in `queue_group` if
    /// given; returns the subscription id. Sent now if connected, and again
    /// after every reconnect.
    pub fn subscribe(
        &mut self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<u64, SubjectError> {
        wire::check_subject(subject, true)?;
        if let Some(group) = queue_group {
            wire::check_queue_group(group)?;
        }
        let sid = self.next_sid;
        self.next_sid += 1;
        if self.state == State::Connected {
            wire::encode_sub(&mut self.out, subject, queue_group, sid);
        }
        self.subs.insert(
            sid,
            Subscription {
                subject: subject.to_owned(),
                queue_group: queue_group.map(str::to_owned),
                max: None,
                delivered: 0,
            },
        );
        Ok(sid)
    }

    /// Ends subscription `sid` now (`max` = `None`), or once it has delivered
    /// `max` messages in all. Returns whether `sid` was held.
    pub fn unsubscribe(&mut self, sid: u64, max: Option<u64>) -> bool {
        let Some(sub) = self.subs.get_mut(&sid) else {
            return false;
        };
        if self.state == State::Connected {
            wire::encode_unsub(&mut self.out, sid, max);
        }
        match max {
            Some(max) if sub.delivered < max => sub.max = Some(max),
            _ => {
                self.subs.remove(&sid);
            }
        }
        true
    }

    /// The subscriptions held: id, subject, queue group.
    pub fn subscriptions(&self) -> impl Iterator<Item = (u64, &str, Option<&str>)> {
        self.subs
            .iter()
            .map(|(sid, s)| (*sid, s.subject.as_str(), s.queue_group.as_deref()))
    }

    /// Publishes `payload` to `subject` (with `headers`: `HPUB`). Connected,
    /// it is queued for the transport; otherwise it is buffered for the next
    /// connection. Refused (and counted) when the buffer is full.
    pub fn publish(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        headers: Option<&Headers>,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        let checked = wire::check_subject(subject, false)
            .and_then(|()| reply.map_or(Ok(()), |r| wire::check_subject(r, false)));
        if let Err(e) = checked {
            self.stats.dropped_bad_subject += 1;
            return Err(PublishError::Subject(e));
        }
        let body = headers.map_or(0, Headers::encoded_len) + payload.len();
        if body > self.max_payload() {
            self.stats.dropped_too_large += 1;
            return Err(PublishError::TooLarge);
        }
        if self.pending_messages >= self.config.buffer_messages {
            self.stats.dropped_buffer_full += 1;
            return Err(PublishError::BufferFull);
        }
        let mut frame = Vec::new();
        let target = if self.state == State::Connected {
            &mut self.out
        } else {
            &mut frame
        };
        let start = target.len();
        match headers {
            Some(h) => wire::encode_hpub(target, subject, reply, h, payload),
            None => wire::encode_pub(target, subject, reply, payload),
        }
        let len = target.len() - start;
        if self.pending_bytes + len > self.config.buffer_bytes {
            target.truncate(start);
            self.stats.dropped_buffer_full += 1;
            return Err(PublishError::BufferFull);
        }
        self.pending_bytes += len;
        self.pending_messages += 1;
        if self.state == State::Connected {
            let start = self.out_base + start as u64;
            self.marks.push_back(Mark {
                start,
                end: start + len as u64,
                body,
            });
        } else {
            self.buffer.push_back(Pending { frame, body });
        }
        Ok(())
    }

    /// The largest body a publish may have now.
    fn max_payload(&self) -> usize {
        match &self.info {
            Some(info) if info.max_payload > 0 => info.max_payload,
            _ => self.config.limits.max_payload,
        }
    }

    fn handle_op(&mut self, now: Instant, op: ServerOp<'_>) {
        match op {
            ServerOp::Ping => wire::encode_pong(&mut self.out),
            ServerOp::Pong => {
                if self.state == State::AwaitingPong {
                    self.logged_in(now);
                }
            }
            ServerOp::Ok => {}
            ServerOp::Info(json) => {
                let Ok(info) = ServerInfo::parse(json) else {
                    self.fail(DisconnectReason::BadInfo);
                    return;
                };
                self.servers.learn(&info.connect_urls);
                let first = self.state == State::AwaitingInfo;
                self.info = Some(info);
                if first {
                    self.send_connect();
                    self.state = State::AwaitingPong;
                }
            }
            ServerOp::Err(text) => {
                let error = ServerError {
                    message: text.to_owned(),
                };
                if self.state != State::Connected || error.is_fatal() {
                    self.fail(DisconnectReason::Server(error));
                } else {
                    self.stats.server_errors += 1;
                    self.events.push_back(Event::ServerError(error));
                }
            }
            ServerOp::Msg(m) => {
                let Some(sub) = self.subs.get_mut(&m.sid) else {
                    self.stats.dropped_unknown_sid += 1;
                    return;
                };
                let headers = match m.headers.map(Headers::parse) {
                    None => None,
                    Some(Ok(h)) => Some(h),
                    Some(Err(_)) => {
                        self.stats.dropped_bad_headers += 1;
                        return;
                    }
                };
                sub.delivered += 1;
                if sub.max.is_some_and(|max| sub.delivered >= max) {
                    self.subs.remove(&m.sid);
                }
                self.stats.received += 1;
                self.events.push_back(Event::Message(Message {
                    subject: m.subject.to_owned(),
                    sid: m.sid,
                    reply: m.reply.map(str::to_owned),
                    headers,
                    payload: m.payload.to_vec(),
                }));
            }
        }
    }

    fn send_connect(&mut self) {
        let server = self.servers.current();
        let mut connect = Connect {
            verbose: false,
            pedantic: false,
            tls_required: false,
            name: self.config.name.clone(),
            lang: "rust".to_owned(),
            version: concat!("ringport-", env!("CARGO_PKG_VERSION")).to_owned(),
            protocol: 1,
            echo: self.config.echo,
            headers: true,
            no_responders: true,
            ..Connect::default()
        };
        if let Some(s) = server.filter(|s| s.user.is_some() || s.token.is_some()) {
            connect.user = s.user.clone();
            connect.pass = s.pass.clone();
            connect.auth_token = s.token.clone();
        } else {
            match &self.config.auth {
                Auth::None => {}
                Auth::UserPassword { user, password } => {
                    connect.user = Some(user.clone());
                    connect.pass = Some(password.clone());
                }
                Auth::Token(token) => connect.auth_token = Some(token.clone()),
                Auth::NKeySeed(_) => {
                    if let Some(key) = &self.nkey {
                        // A server that wants an NKey sends a nonce; without
                        // one, the signature of nothing lets it refuse
                        // plainly.
                        let nonce = self.info.as_ref().and_then(|i| i.nonce.as_deref());
                        connect.nkey = Some(key.public_key().to_owned());
                        connect.sig = Some(key.sign(nonce.unwrap_or("").as_bytes()));
                    }
                }
            }
        }
        wire::encode_connect(&mut self.out, &connect);
        wire::encode_ping(&mut self.out);
    }

    /// The `PONG` to `CONNECT`: subscriptions again, then the buffer.
    fn logged_in(&mut self, now: Instant) {
        self.state = State::Connected;
        self.stats.connects += 1;
        if self.stats.connects > 1 {
            self.stats.reconnects += 1;
        }
        self.last_ping = now;
        for (sid, sub) in &self.subs {
            wire::encode_sub(
                &mut self.out,
                &sub.subject,
                sub.queue_group.as_deref(),
                *sid,
            );
            if let Some(max) = sub.max {
                wire::encode_unsub(&mut self.out, *sid, Some(max - sub.delivered));
            }
        }
        let max_payload = self.max_payload();
        while let Some(p) = self.buffer.pop_front() {
            if p.body > max_payload {
                self.pending_bytes -= p.frame.len();
                self.pending_messages -= 1;
                self.stats.dropped_too_large += 1;
                continue;
            }
            let start = self.out_base + self.out.len() as u64;
            self.out.extend_from_slice(&p.frame);
            self.marks.push_back(Mark {
                start,
                end: start + p.frame.len() as u64,
                body: p.body,
            });
        }
        let server = self
            .servers
            .current()
            .map(ToString::to_string)
            .unwrap_or_default();
        let server_id = self
            .info
            .as_ref()
            .map(|i| i.server_id.clone())
            .unwrap_or_default();
        self.events
            .push_back(Event::Connected { server, server_id });
    }

    /// Ends the connection: publishes not yet taken go back to the buffer.
    fn fail(&mut self, reason: DisconnectReason) {
        match &reason {
            DisconnectReason::Server(_) => self.stats.disconnects_server_error += 1,
            DisconnectReason::StaleConnection { .. } => self.stats.disconnects_stale += 1,
            DisconnectReason::HandshakeTimeout => self.stats.disconnects_handshake_timeout += 1,
            DisconnectReason::Protocol(_) | DisconnectReason::BadInfo => {
                self.stats.disconnects_protocol += 1
            }
            DisconnectReason::TransportClosed => self.stats.disconnects_transport += 1,
        }
        self.drop_connection_state();
        self.state = State::Disconnected;
        self.events.push_back(Event::NeedReconnect(reason));
    }

    fn drop_connection_state(&mut self) {
        let mut back = VecDeque::with_capacity(self.marks.len());
        for mark in self.marks.drain(..) {
            let len = (mark.end - mark.start) as usize;
            if mark.start < self.out_sent {
                // The transport took its beginning: the server saw half a
                // message and closed, or will never see the rest.
                self.pending_bytes -= len;
                self.pending_messages -= 1;
                self.stats.lost_in_flight += 1;
                continue;
            }
            let from = (mark.start - self.out_base) as usize;
            back.push_back(Pending {
                frame: self.out[from..from + len].to_vec(),
                body: mark.body,
            });
        }
        // Those were sent before anything buffered since.
        back.append(&mut self.buffer);
        self.buffer = back;
        self.out_base += self.out.len() as u64;
        self.out_sent = self.out_base;
        self.out.clear();
        self.pings_out = 0;
    }
}
