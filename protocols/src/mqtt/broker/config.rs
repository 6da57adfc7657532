//! The broker's settings, and the hook that reports every CONNECT.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringport_plugin::ShardId;

use crate::mqtt::acl::Acl;
use crate::mqtt::auth::Authenticator;
use crate::mqtt::codec::Version;

/// Settings of the MQTT broker, shared by every shard.
///
/// Every limit has a safe default; see [`MqttConfig::default`]. Values are
/// taken as given (the integrator checks ranges when it reads a config file),
/// but none of them can make a shard panic: a zero limit refuses everything
/// it bounds.
#[derive(Clone)]
pub struct MqttConfig {
    /// Largest whole packet accepted from a client, header included (also
    /// announced as Maximum Packet Size in a v5 CONNACK). A larger one closes
    /// the connection (`packet_too_large`; v5: DISCONNECT 0x95 first).
    pub max_packet_size: u32,
    /// QoS 1 and 2 messages in flight in each direction: announced to v5
    /// clients as Receive Maximum (a v5 client that exceeds it is
    /// disconnected with 0x93; 3.1.1 has no such limit to enforce), and the
    /// most unacknowledged messages sent to any client (lowered to a v5
    /// client's own Receive Maximum).
    pub receive_maximum: u16,
    /// Messages waiting per client (offline, slow, or its window full),
    /// not counting those in flight. Past it a QoS 0 message is dropped; a
    /// QoS 1/2 message evicts the oldest queued QoS 0 one, or is dropped.
    pub max_queued_messages: usize,
    /// Payload and topic bytes waiting per client, same policy.
    pub max_queued_bytes: usize,
    /// Subscriptions one session may hold; one more is refused (0x97).
    pub max_subscriptions_per_client: usize,
    /// Longest topic name or filter, in bytes.
    pub max_topic_len: usize,
    /// Most levels (`/`-separated parts) of a topic name or filter.
    pub max_topic_levels: usize,
    /// Retained messages held (each shard holds a replica of all of them).
    /// A retained message for a new topic past it is not retained
    /// (`retained_full`); it is still delivered.
    pub max_retained: usize,
    /// Longest session expiry granted, in seconds; also the expiry of a
    /// 3.1.1 session opened with clean session 0.
    pub max_session_expiry: u32,
    /// Longest keep-alive accepted, in seconds. A v5 client asking for more
    /// (or for none, when this is below 65535) is told this value as Server
    /// Keep Alive; a 3.1.1 client asking for more is refused (identifier
    /// rejected), as Mosquitto does.
    pub max_keep_alive: u16,
    /// Whether retained messages are supported. When false a PUBLISH with
    /// retain set closes the connection (v5: 0x9A).
    pub retain_available: bool,
    /// Whether a client may connect without an authenticator's approval.
    /// With no [`authenticator`](Self::authenticator), false refuses every
    /// client (0x87); with one, false refuses clients that present neither a
    /// username nor a TLS identity.
    pub allow_anonymous: bool,
    /// Checks usernames/passwords and TLS identities; `None`: see
    /// [`allow_anonymous`](Self::allow_anonymous).
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// Who may publish and subscribe to what; `None` allows everything.
    pub acl: Option<Arc<Acl>>,
    /// Told of every CONNECT and its result (the handshake log).
    pub events: Option<Arc<dyn MqttEvents>>,
    /// Topic aliases a v5 client may use toward the broker (Topic Alias
    /// Maximum in the CONNACK; 0 refuses them), and the most the broker
    /// assigns toward a client that accepts aliases (first come, first
    /// served per connection; later topics are sent in full).
    pub topic_alias_maximum: u16,
    /// Longest client identifier accepted, in bytes (0x85 beyond it).
    pub max_client_id_len: usize,
    /// Sessions (connected or not) one shard holds; a CONNECT past it is
    /// refused with 0x97 (3.1.1: server unavailable).
    pub max_sessions: usize,
    /// Time a new connection has to send its CONNECT before it is closed.
    pub connect_timeout: Duration,
    /// Bytes of encoded QoS 0 messages queued for one other shard whose mesh
    /// ring is full; past it QoS 0 messages to that shard are dropped
    /// (`mesh_full`). QoS 1/2 messages and session hand-overs are never
    /// dropped there: they wait (see `mesh_reliable_bytes`).
    pub mesh_retry_bytes: usize,
    /// Bytes of QoS 1/2 messages waiting for full rings, all shards
    /// together; past it a QoS 1/2 PUBLISH is refused (v5: PUBACK/PUBREC
    /// 0x97; 3.1.1: the connection is closed) and counted as `mesh_full`.
    pub mesh_reliable_bytes: usize,
    /// How often messages waiting for a full mesh ring, and clients whose
    /// outbound queue was full, are retried while there are any.
    pub retry_interval: Duration,
    /// How often the per-client status snapshot ([`MqttFactory::status`])
    /// is refreshed.
    ///
    /// [`MqttFactory::status`]: super::MqttFactory::status
    pub status_interval: Duration,
    /// Most clients listed per shard in the status snapshot (those with
    /// the most drops first, then by client id). Each costs 64 bytes while
    /// listed, so the default lists the 1,000 a reader most needs rather
    /// than every idle client.
    pub status_max_clients: usize,
    /// How often each shard publishes the image of its retained messages
    /// and persistent sessions that [`MqttFactory::snapshot`] reads; `None`:
    /// only when the engine shuts the shard down.
    ///
    /// [`MqttFactory::snapshot`]: super::MqttFactory::snapshot
    pub snapshot_interval: Option<Duration>,
}

impl Default for MqttConfig {
    /// 1 MiB packets; a window of 32; 1000 messages or 1 MiB queued per
    /// client; 100 subscriptions per client; topics of at most 1024 bytes and
    /// 32 levels; 10,000 retained messages; sessions kept at most one day;
    /// keep-alive up to 65535 s; retain available; anonymous clients refused
    /// (set `allow_anonymous` for a loopback broker without users); no
    /// authenticator, ACL or event hook; 16 topic aliases; client ids up to
    /// 256 bytes; 100,000 sessions per shard; 10 s to send CONNECT; 1 MiB of
    /// QoS 0 and 64 MiB of QoS 1/2 messages waiting for full mesh rings;
    /// retried every millisecond; status refreshed every second, 10,000
    /// clients per shard; shard images for persistence only at shutdown.
    fn default() -> Self {
        MqttConfig {
            max_packet_size: 1 << 20,
            receive_maximum: 32,
            max_queued_messages: 1000,
            max_queued_bytes: 1 << 20,
            max_subscriptions_per_client: 100,
            max_topic_len: 1024,
            max_topic_levels: 32,
            max_retained: 10_000,
            max_session_expiry: 86_400,
            max_keep_alive: u16::MAX,
            retain_available: true,
            allow_anonymous: false,
            authenticator: None,
            acl: None,
            events: None,
            topic_alias_maximum: 16,
            max_client_id_len: 256,
            max_sessions: 100_000,
            connect_timeout: Duration::from_secs(10),
            mesh_retry_bytes: 1 << 20,
            mesh_reliable_bytes: 64 << 20,
            retry_interval: Duration::from_millis(1),
            status_interval: Duration::from_secs(1),
            status_max_clients: 1_000,
            snapshot_interval: None,
        }
    }
}

impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("max_packet_size", &self.max_packet_size)
            .field("receive_maximum", &self.receive_maximum)
            .field("max_queued_messages", &self.max_queued_messages)
            .field("max_queued_bytes", &self.max_queued_bytes)
            .field(
                "max_subscriptions_per_client",
                &self.max_subscriptions_per_client,
            )
            .field("max_topic_len", &self.max_topic_len)
            .field("max_topic_levels", &self.max_topic_levels)
            .field("max_retained", &self.max_retained)
            .field("max_session_expiry", &self.max_session_expiry)
            .field("max_keep_alive", &self.max_keep_alive)
            .field("retain_available", &self.retain_available)
            .field("allow_anonymous", &self.allow_anonymous)
            .field("authenticator", &self.authenticator.is_some())
            .field("acl", &self.acl.is_some())
            .field("events", &self.events.is_some())
            .field("topic_alias_maximum", &self.topic_alias_maximum)
            .field("max_client_id_len", &self.max_client_id_len)
            .field("max_sessions", &self.max_sessions)
            .field("connect_timeout", &self.connect_timeout)
            .field("mesh_retry_bytes", &self.mesh_retry_bytes)
            .field("mesh_reliable_bytes", &self.mesh_reliable_bytes)
            .field("retry_interval", &self.retry_interval)
            .field("status_interval", &self.status_interval)
            .field("status_max_clients", &self.status_max_clients)
            .field("snapshot_interval", &self.snapshot_interval)
            .finish()
    }
}

/// One CONNECT and what became of it, for the handshake log.
#[derive(Debug, Clone, Copy)]
pub struct ConnectEvent<'a> {
    /// The shard the connection is on.
    pub shard: ShardId,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client identifier (the assigned one for an empty v5 id; empty
    /// when the CONNECT was refused before an id was assigned).
    pub client_id: &'a str,
    /// The identity the authenticator established, if any.
    pub identity: Option<&'a str>,
    /// The username the client sent, if any.
    pub username: Option<&'a str>,
    /// The protocol version of the CONNECT (`V311` when the CONNECT did not
    /// decode far enough to tell).
    pub version: Version,
    /// Whether a stored session was resumed.
    pub session_present: bool,
    /// The CONNACK reason code (v5 numbering for both versions).
    pub code: u8,
    /// The snake-case name of [`code`](Self::code): `success`,
    /// `not_authorized`, `bad_username_or_password`, ...
    pub result: &'static str,
}

/// A PUBLISH or SUBSCRIBE the ACL refused (answered with 0x87 in v5).
#[derive(Debug, Clone, Copy)]
pub struct DeniedEvent<'a> {
    /// The shard the connection is on.
    pub shard: ShardId,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client identifier.
    pub client_id: &'a str,
    /// The identity the ACL judged (`None`: anonymous).
    pub user: Option<&'a str>,
    /// `publish`, `subscribe` or `will`.
    pub action: &'static str,
    /// The topic name or filter.
    pub topic: &'a str,
}

/// A client's messages were dropped since the last report (at most one
/// per client per second, from the shard's sweep).
#[derive(Debug, Clone, Copy)]
pub struct ClientDropsEvent<'a> {
    /// The shard holding the session.
    pub shard: ShardId,
    /// The client identifier.
    pub client_id: &'a str,
    /// QoS 0 messages dropped because its queue was full, since the last
    /// report.
    pub qos0: u64,
    /// QoS 1/2 messages dropped because its queue was full, since the
    /// last report.
    pub qos12: u64,
    /// Messages not sent for another reason (too large for the client,
    /// expired, not authorized), since the last report.
    pub other: u64,
}

/// Receives broker events. Called on the shard's thread: an implementation
/// must not block (the integrator's writes a line to the log ring).
pub trait MqttEvents: Send + Sync {
    /// One call per CONNECT: answered with a CONNACK (accepted or refused),
    /// or refused because it did not decode (`malformed_packet`,
    /// `protocol_error`, `packet_too_large`, `unsupported_protocol_version`;
    /// then the client id is empty). A client that closes before its
    /// session arrived from another shard gets no call.
    fn connect(&self, ev: &ConnectEvent<'_>);

    /// One call per PUBLISH, SUBSCRIBE filter or will the ACL refused.
    /// Refused deliveries are only counted (`not_authorized`).
    fn denied(&self, ev: &DeniedEvent<'_>) {
        let _ = ev;
    }

    /// A client lost messages since the last report.
    fn client_drops(&self, ev: &ClientDropsEvent<'_>) {
        let _ = ev;
    }
}

/// The snake-case name of an MQTT v5 reason code, for logs and metrics.
pub fn reason_name(code: u8) -> &'static str {
    match code {
        0x00 => "success",
        0x01 => "granted_qos_1",
        0x02 => "granted_qos_2",
        0x04 => "disconnect_with_will",
        0x10 => "no_matching_subscribers",
        0x11 => "no_subscription_existed",
        0x80 => "unspecified_error",
        0x81 => "malformed_packet",
        0x82 => "protocol_error",
        0x83 => "implementation_specific_error",
        0x84 => "unsupported_protocol_version",
        0x85 => "client_identifier_not_valid",
        0x86 => "bad_username_or_password",
        0x87 => "not_authorized",
        0x88 => "server_unavailable",
        0x89 => "server_busy",
        0x8A => "banned",
        0x8C => "bad_authentication_method",
        0x8D => "keep_alive_timeout",
        0x8E => "session_taken_over",
        0x8F => "topic_filter_invalid",
        0x90 => "topic_name_invalid",
        0x91 => "packet_identifier_in_use",
        0x92 => "packet_identifier_not_found",
        0x93 => "receive_maximum_exceeded",
        0x94 => "topic_alias_invalid",
        0x95 => "packet_too_large",
        0x96 => "message_rate_too_high",
        0x97 => "quota_exceeded",
        0x98 => "administrative_action",
        0x99 => "payload_format_invalid",
        0x9A => "retain_not_supported",
        0x9B => "qos_not_supported",
        0x9C => "use_another_server",
        0x9D => "server_moved",
        0x9E => "shared_subscriptions_not_supported",
        0x9F => "connection_rate_exceeded",
        0xA0 => "maximum_connect_time",
        0xA1 => "subscription_identifiers_not_supported",
        0xA2 => "wildcard_subscriptions_not_supported",
        _ => "unknown",
    }
}
