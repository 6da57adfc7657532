//! The client's settings: servers, login, keep-alive, buffer bounds.

use std::fmt;
use std::time::Duration;

use super::nkey::NKeyError;
use super::servers::UrlError;
use super::wire::Limits;

/// How the client logs in (a server URL's own `user:pass@` or `token@`
/// takes precedence for that server).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// `user` and `pass`.
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `auth_token`.
    Token(String),
    /// An NKey seed (`SU...`): the public key and the signed nonce are sent.
    NKeySeed(String),
}

impl fmt::Debug for Auth {
    /// Secrets are not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::UserPassword { user, .. } => write!(f, "UserPassword {{ user: {user:?} }}"),
            Auth::Token(_) => f.write_str("Token(<hidden>)"),
            Auth::NKeySeed(_) => f.write_str("NKeySeed(<hidden>)"),
        }
    }
}

/// The client's settings.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Server URLs, `nats://[user:pass@]host:port`; at least one.
    pub servers: Vec<String>,
    /// The login.
    pub auth: Auth,
    /// The connection's name in the server's monitoring.
    pub name: Option<String>,
    /// Whether the server may deliver this connection's own publishes to its
    /// own subscriptions (`CONNECT` `echo`). A bridge sets it to false.
    pub echo: bool,
    /// Idle time before a `PING`.
    pub ping_interval: Duration,
    /// `PING`s without an answer before the connection is declared dead.
    pub max_pings_outstanding: u32,
    /// Time from [`NatsClient::handle_connected`](super::NatsClient::handle_connected) to the server's `PONG`.
    pub handshake_timeout: Duration,
    /// Encoded publish bytes the buffer holds at most.
    pub buffer_bytes: usize,
    /// Publishes the buffer holds at most.
    pub buffer_messages: usize,
    /// Limits on what the server sends (control line, message body).
    pub limits: Limits,
}

impl Default for NatsConfig {
    /// No server, no login, echo on, `PING` after 30 s idle, dead after 2
    /// unanswered, 5 s handshake, an 8 MiB / 65,536-message buffer, default
    /// [`Limits`].
    fn default() -> NatsConfig {
        NatsConfig {
            servers: Vec::new(),
            auth: Auth::None,
            name: None,
            echo: true,
            ping_interval: Duration::from_secs(30),
            max_pings_outstanding: 2,
            handshake_timeout: Duration::from_secs(5),
            buffer_bytes: 8 << 20,
            buffer_messages: 65_536,
            limits: Limits::default(),
        }
    }
}

/// Why a configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `servers` is empty or one URL is bad.
    Url(UrlError),
    /// `auth`'s NKey seed does not decode.
    NKey(NKeyError),
    /// A limit or duration is zero: the field.
    Zero(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Url(e) => write!(f, "servers: {e}"),
            ConfigError::NKey(e) => write!(f, "auth (NKey seed): {e}"),
            ConfigError::Zero(field) => write!(f, "{field} must be more than 0"),
        }
    }
}

impl std::error::Error for ConfigError {}
