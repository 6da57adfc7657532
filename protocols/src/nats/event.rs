//! What the client tells its caller: events, reasons, refusals, counters.

use std::fmt;

use super::headers::{Headers, ORIGIN_HEADER};
use super::wire::{SubjectError, WireError};

/// What kind of `-ERR` a server sent.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerErrorKind {
    /// `'Authorization Violation'`: the credentials were refused.
    AuthorizationViolation,
    /// `'Authorization Timeout'`: the login came too late.
    AuthorizationTimeout,
    /// `'Authentication Expired'` and the like.
    AuthenticationExpired,
    /// `'Permissions Violation for ...'`: the connection stays.
    PermissionsViolation,
    /// `'Invalid Subject'`: the connection stays.
    InvalidSubject,
    /// `'Maximum Payload Violation'`.
    MaximumPayload,
    /// `'Stale Connection'`.
    StaleConnection,
    /// `'Slow Consumer'`.
    SlowConsumer,
    /// `'Maximum Connections Exceeded'`.
    MaximumConnections,
    /// Anything else.
    Other,
}

/// A `-ERR` from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The message, without its quotes.
    pub message: String,
}

impl ServerError {
    /// The kind, from the message's wording.
    pub fn kind(&self) -> ServerErrorKind {
        let m = self.message.to_ascii_lowercase();
        if m.starts_with("authorization violation") {
            ServerErrorKind::AuthorizationViolation
        } else if m.starts_with("authorization timeout") || m.starts_with("authentication timeout")
        {
            ServerErrorKind::AuthorizationTimeout
        } else if m.contains("expired") {
            ServerErrorKind::AuthenticationExpired
        } else if m.starts_with("permissions violation") {
            ServerErrorKind::PermissionsViolation
        } else if m.starts_with("invalid subject") {
            ServerErrorKind::InvalidSubject
        } else if m.starts_with("maximum payload") {
            ServerErrorKind::MaximumPayload
        } else if m.starts_with("stale connection") {
            ServerErrorKind::StaleConnection
        } else if m.starts_with("slow consumer") {
            ServerErrorKind::SlowConsumer
        } else if m.starts_with("maximum connections") {
            ServerErrorKind::MaximumConnections
        } else {
            ServerErrorKind::Other
        }
    }

    /// Whether the server closes the connection after it: all but a
    /// permissions violation and an invalid subject.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self.kind(),
            ServerErrorKind::PermissionsViolation | ServerErrorKind::InvalidSubject
        )
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server error '{}'", self.message)
    }
}

/// Why a connection ended.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The server sent a fatal `-ERR` (a refused login among them).
    Server(ServerError),
    /// This many `PING`s went unanswered.
    StaleConnection {
        /// `PING`s without anything received after them.
        unanswered: u32,
    },
    /// No `PONG` within [`NatsConfig::handshake_timeout`](super::NatsConfig::handshake_timeout) of the transport
    /// opening.
    HandshakeTimeout,
    /// The server sent bytes that are not the protocol.
    Protocol(WireError),
    /// The server's `INFO` is not valid JSON of the expected shape.
    BadInfo,
    /// The transport closed ([`NatsClient::handle_disconnected`](super::NatsClient::handle_disconnected)).
    TransportClosed,
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::Server(e) => e.fmt(f),
            DisconnectReason::StaleConnection { unanswered } => {
                write!(f, "stale connection: {unanswered} PINGs unanswered")
            }
            DisconnectReason::HandshakeTimeout => f.write_str("no PONG to CONNECT in time"),
            DisconnectReason::Protocol(e) => write!(f, "protocol error: {e}"),
            DisconnectReason::BadInfo => f.write_str("malformed INFO"),
            DisconnectReason::TransportClosed => f.write_str("connection closed"),
        }
    }
}

/// A message received for a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The subject it was published to.
    pub subject: String,
    /// The subscription it matched.
    pub sid: u64,
    /// The reply subject.
    pub reply: Option<String>,
    /// Its headers, if it came as `HMSG`.
    pub headers: Option<Headers>,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Message {
    /// The value of the [`ORIGIN_HEADER`], the instance that exported it.
    pub fn origin(&self) -> Option<&str> {
        self.headers.as_ref()?.get(ORIGIN_HEADER)
    }
}

/// What the caller is told.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The login was accepted; subscriptions and buffered publishes are
    /// queued for sending.
    Connected {
        /// The server (`host:port`).
        server: String,
        /// Its id.
        server_id: String,
    },
    /// A message for one of the subscriptions.
    Message(Message),
    /// A `-ERR` after which the connection stays (a permissions violation).
    ServerError(ServerError),
    /// The connection is over: close the transport, call
    /// [`NatsClient::handle_disconnected`](super::NatsClient::handle_disconnected) and connect to
    /// [`NatsClient::next_server`](super::NatsClient::next_server) after a backoff.
    NeedReconnect(DisconnectReason),
}

/// Why a publish was refused. Each is counted in [`NatsStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// The subject or reply subject is not a literal NATS subject.
    Subject(SubjectError),
    /// Headers and payload exceed the server's `max_payload` (or, before
    /// the first `INFO`, [`Limits::max_payload`](super::Limits::max_payload)).
    TooLarge,
    /// The buffer is full ([`NatsStats::dropped_buffer_full`]).
    BufferFull,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Subject(e) => e.fmt(f),
            PublishError::TooLarge => f.write_str("message larger than the server's max_payload"),
            PublishError::BufferFull => f.write_str("publish buffer full"),
        }
    }
}

impl std::error::Error for PublishError {}

/// The client's counters, for `/metrics`. Counts only grow, except
/// `buffered_*`, which are levels.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatsStats {
    /// Publishes taken by the transport.
    pub published: u64,
    /// Messages received for a subscription (and delivered as events).
    pub received: u64,
    /// Encoded publish bytes waiting (buffered or not yet taken).
    pub buffered_bytes: u64,
    /// Publishes waiting.
    pub buffered_messages: u64,
    /// Publishes refused because the buffer was full.
    pub dropped_buffer_full: u64,
    /// Publishes refused (or dropped from the buffer at a reconnect) for
    /// exceeding the server's `max_payload`.
    pub dropped_too_large: u64,
    /// Publishes refused for a bad subject.
    pub dropped_bad_subject: u64,
    /// Publishes the transport had taken in part when the connection ended.
    pub lost_in_flight: u64,
    /// Messages for a subscription no longer held (after an unsubscribe).
    pub dropped_unknown_sid: u64,
    /// Messages whose header block did not parse.
    pub dropped_bad_headers: u64,
    /// Logins accepted.
    pub connects: u64,
    /// Logins accepted after the first.
    pub reconnects: u64,
    /// Bytes of whole operations received.
    pub bytes_in: u64,
    /// Bytes taken by the transport.
    pub bytes_out: u64,
    /// `PING`s sent for keep-alive.
    pub pings_sent: u64,
    /// `-ERR`s that left the connection up.
    pub server_errors: u64,
    /// Connections ended by a fatal `-ERR`.
    pub disconnects_server_error: u64,
    /// Connections declared dead for unanswered `PING`s.
    pub disconnects_stale: u64,
    /// Connections ended for protocol errors or a bad `INFO`.
    pub disconnects_protocol: u64,
    /// Connections ended for a handshake timeout.
    pub disconnects_handshake_timeout: u64,
    /// Connections closed by the transport.
    pub disconnects_transport: u64,
}
