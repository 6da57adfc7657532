//! The packets of MQTT 3.1.1 and 5.0 as borrowed representations.
//!
//! Every string and byte field borrows the buffer a packet was decoded from
//! (or, when encoding, whatever the caller holds). Properties that may repeat
//! ([`UserProps`], [`SubIds`]) are views of their encoded bytes after a
//! decode, so that decoding a PUBLISH allocates nothing, and plain slices
//! when a packet is built to be encoded.

use core::fmt;

use super::reason::ReasonCode;
pub use super::views::{SubIds, UserProps};

/// The protocol version of a connection, from the CONNECT's protocol level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl Version {
    /// The protocol level byte of a CONNECT (4 or 5).
    pub const fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }
}

/// A quality-of-service level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum QoS {
    /// At most once delivery (0).
    AtMostOnce = 0,
    /// At least once delivery (1).
    AtLeastOnce = 1,
    /// Exactly once delivery (2).
    ExactlyOnce = 2,
}

impl QoS {
    /// The level with this value (0, 1 or 2), if any.
    pub const fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    /// The level's value, 0 to 2.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// CONNECT (client to server).
    Connect(Connect<'a>),
    /// CONNACK (server to client).
    ConnAck(ConnAck<'a>),
    /// PUBLISH (both ways).
    Publish(Publish<'a>),
    /// PUBACK: the answer to a QoS 1 PUBLISH.
    PubAck(PubResp<'a>),
    /// PUBREC: the first answer to a QoS 2 PUBLISH.
    PubRec(PubResp<'a>),
    /// PUBREL: the answer to a PUBREC.
    PubRel(PubResp<'a>),
    /// PUBCOMP: the answer to a PUBREL.
    PubComp(PubResp<'a>),
    /// SUBSCRIBE (client to server).
    Subscribe(Subscribe<'a>),
    /// SUBACK (server to client).
    SubAck(SubAck<'a>),
    /// UNSUBSCRIBE (client to server).
    Unsubscribe(Unsubscribe<'a>),
    /// UNSUBACK (server to client).
    UnsubAck(UnsubAck<'a>),
    /// PINGREQ (client to server).
    PingReq,
    /// PINGRESP (server to client).
    PingResp,
    /// DISCONNECT (client to server; both ways in 5.0).
    Disconnect(Disconnect<'a>),
    /// AUTH (5.0 only, both ways).
    Auth(Auth<'a>),
}

impl Packet<'_> {
    /// The packet type's value in the fixed header's high nibble (1 to 15).
    pub const fn packet_type(&self) -> u8 {
        match self {
            Packet::Connect(_) => 1,
            Packet::ConnAck(_) => 2,
            Packet::Publish(_) => 3,
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            Packet::PubComp(_) => 7,
            Packet::Subscribe(_) => 8,
            Packet::SubAck(_) => 9,
            Packet::Unsubscribe(_) => 10,
            Packet::UnsubAck(_) => 11,
            Packet::PingReq => 12,
            Packet::PingResp => 13,
            Packet::Disconnect(_) => 14,
            Packet::Auth(_) => 15,
        }
    }
}

/// A CONNECT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connect<'a> {
    /// The protocol version (level 4 or 5); encoding a CONNECT uses this one.
    pub version: Version,
    /// Clean Start (5.0) or Clean Session (3.1.1).
    pub clean_start: bool,
    /// Keep alive, in seconds (0: none).
    pub keep_alive: u16,
    /// The client identifier (may be empty).
    pub client_id: &'a str,
    /// The will message, if any.
    pub will: Option<Will<'a>>,
    /// The user name, if any.
    pub username: Option<&'a str>,
    /// The password, if any.
    pub password: Option<&'a [u8]>,
    /// Properties (5.0; empty in 3.1.1).
    pub props: ConnectProps<'a>,
}

/// The properties of a CONNECT (5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectProps<'a> {
    /// Session Expiry Interval (0x11), seconds.
    pub session_expiry: Option<u32>,
    /// Receive Maximum (0x21), never 0.
    pub receive_maximum: Option<u16>,
    /// Maximum Packet Size (0x27), never 0.
    pub maximum_packet_size: Option<u32>,
    /// Topic Alias Maximum (0x22).
    pub topic_alias_maximum: Option<u16>,
    /// Request Response Information (0x19).
    pub request_response_info: Option<bool>,
    /// Request Problem Information (0x17).
    pub request_problem_info: Option<bool>,
    /// User Properties (0x26).
    pub user_properties: UserProps<'a>,
    /// Authentication Method (0x15).
    pub auth_method: Option<&'a str>,
    /// Authentication Data (0x16); only with a method.
    pub auth_data: Option<&'a [u8]>,
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Will<'a> {
    /// The will topic.
    pub topic: &'a str,
    /// The will payload.
    pub payload: &'a [u8],
    /// The will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will properties (5.0; empty in 3.1.1).
    pub props: WillProps<'a>,
}

/// The will properties of a CONNECT (5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WillProps<'a> {
    /// Will Delay Interval (0x18), seconds.
    pub delay_interval: Option<u32>,
    /// Payload Format Indicator (0x01): 0 or 1.
    pub payload_format: Option<u8>,
    /// Message Expiry Interval (0x02), seconds.
    pub message_expiry: Option<u32>,
    /// Content Type (0x03).
    pub content_type: Option<&'a str>,
    /// Response Topic (0x08).
    pub response_topic: Option<&'a str>,
    /// Correlation Data (0x09).
    pub correlation_data: Option<&'a [u8]>,
    /// User Properties (0x26).
    pub user_properties: UserProps<'a>,
}

/// A CONNACK packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck<'a> {
    /// Session Present.
    pub session_present: bool,
    /// The reason code; a 3.1.1 return code decodes as its 5.0 equivalent
    /// and encodes through [`ReasonCode::connack_v311`].
    pub code: ReasonCode,
    /// Properties (5.0; empty in 3.1.1).
    pub props: ConnAckProps<'a>,
}

/// The properties of a CONNACK (5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnAckProps<'a> {
    /// Session Expiry Interval (0x11), seconds.
    pub session_expiry: Option<u32>,
    /// Receive Maximum (0x21), never 0.
    pub receive_maximum: Option<u16>,
    /// Maximum QoS (0x24): 0 or 1.
    pub maximum_qos: Option<QoS>,
    /// Retain Available (0x25).
    pub retain_available: Option<bool>,
    /// Maximum Packet Size (0x27), never 0.
    pub maximum_packet_size: Option<u32>,
    /// Assigned Client Identifier (0x12).
    pub assigned_client_id: Option<&'a str>,
    /// Topic Alias Maximum (0x22).
    pub topic_alias_maximum: Option<u16>,
    /// Reason String (0x1F).
    pub reason_string: Option<&'a str>,
    /// User Properties (0x26).
    pub user_properties: UserProps<'a>,
    /// Wildcard Subscription Available (0x28).
    pub wildcard_sub_available: Option<bool>,
    /// Subscription Identifiers Available (0x29).
    pub sub_ids_available: Option<bool>,
    /// Shared Subscription Available (0x2A).
    pub shared_sub_available: Option<bool>,
    /// Server Keep Alive (0x13), seconds.
    pub server_keep_alive: Option<u16>,
    /// Response Information (0x1A).
    pub response_info: Option<&'a str>,
    /// Server Reference (0x1C).
    pub server_reference: Option<&'a str>,
    /// Authentication Method (0x15).
    pub auth_method: Option<&'a str>,
    /// Authentication Data (0x16); only with a method.
    pub auth_data: Option<&'a [u8]>,
}

/// A PUBLISH packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    /// The DUP flag (always false at QoS 0).
    pub dup: bool,
    /// The QoS.
    pub qos: QoS,
    /// The RETAIN flag.
    pub retain: bool,
    /// The topic name (empty only with a topic alias, 5.0).
    pub topic: &'a str,
    /// The packet identifier: non-zero at QoS 1 and 2, 0 at QoS 0 (and not
    /// encoded then).
    pub packet_id: u16,
    /// Properties (5.0; empty in 3.1.1).
    pub props: PublishProps<'a>,
    /// The application message.
    pub payload: &'a [u8],
}

/// The properties of a PUBLISH (5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishProps<'a> {
    /// Payload Format Indicator (0x01): 0 or 1.
    pub payload_format: Option<u8>,
    /// Message Expiry Interval (0x02), seconds.
    pub message_expiry: Option<u32>,
    /// Topic Alias (0x23), never 0.
    pub topic_alias: Option<u16>,
    /// Response Topic (0x08).
    pub response_topic: Option<&'a str>,
    /// Correlation Data (0x09).
    pub correlation_data: Option<&'a [u8]>,
    /// User Properties (0x26).
    pub user_properties: UserProps<'a>,
    /// Subscription Identifiers (0x0B), each 1 to 268,435,455.
    pub subscription_ids: SubIds<'a>,
    /// Content Type (0x03).
    pub content_type: Option<&'a str>,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubResp<'a> {
    /// The packet identifier, never 0.
    pub packet_id: u16,
    /// The reason code (5.0; `SUCCESS` in 3.1.1, and not encoded there).
    pub code: ReasonCode,
    /// Properties (5.0; empty in 3.1.1).
    pub props: AckProps<'a>,
}

/// The properties of the acknowledgements (PUBACK to PUBCOMP, SUBACK,
/// UNSUBACK), 5.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckProps<'a> {
    /// Reason String (0x1F).
    pub reason_string: Option<&'a str>,
    /// User Properties (0x26).
    pub user_properties: UserProps<'a>,
}

/// The subscription options of one SUBSCRIBE filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubOptions {
    /// The maximum QoS.
    pub qos: QoS,
    /// No Local (5.0).
    pub no_local: bool,
    /// Retain As Published (5.0).
    pub retain_as_published: bool,
    /// Retain Handling (5.0): 0 send retained messages, 1 only for a new
    /// subscription, 2 never.
    pub retain_handling: u8,
}

impl SubOptions {
    /// Options with this QoS and every 5.0 option at its default.
    pub const fn qos(qos: QoS) -> SubOptions {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }
}

/// A SUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe<'a> {
    /// The packet identifier, never 0.
    pub packet_id: u16,
    /// Subscription Identifier (0x0B), 1 to 268,435,455 (5.0).
    pub subscription_id: Option<u32>,
    /// User Properties (0x26), 5.0.
    pub user_properties: UserProps<'a>,
    /// The topic filters, at least one, with their options.
    pub filters: Vec<(&'a str, SubOptions)>,
}

/// A SUBACK packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck<'a> {
    /// The packet identifier.
    pub packet_id: u16,
    /// Properties (5.0; empty in 3.1.1).
    pub props: AckProps<'a>,
    /// One code per filter; 3.1.1 encodes them through
    /// [`ReasonCode::suback_v311`].
    pub codes: Vec<ReasonCode>,
}

/// An UNSUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe<'a> {
    /// The packet identifier, never 0.
    pub packet_id: u16,
    /// User Properties (0x26), 5.0.
    pub user_properties: UserProps<'a>,
    /// The topic filters, at least one.
    pub filters: Vec<&'a str>,
}

/// An UNSUBACK packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck<'a> {
    /// The packet identifier.
    pub packet_id: u16,
    /// Properties (5.0; empty in 3.1.1).
    pub props: AckProps<'a>,
    /// One code per filter (5.0); empty in 3.1.1, and not encoded there.
    pub codes: Vec<ReasonCode>,
}

/// A DISCONNECT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnect<'a> {
    /// The reason code (5.0; `NORMAL_DISCONNECTION` in 3.1.1).
    pub code: ReasonCode,
    /// Session Expiry Interval (0x11), seconds.
    pub session_expiry: Option<u32>,
    /// Reason String (0x1F).
    pub reason_string: Option<&'a str>,
    /// User Properties (0x26).
    pub user_properties: UserProps<'a>,
    /// Server Reference (0x1C).
    pub server_reference: Option<&'a str>,
}

impl Default for Disconnect<'_> {
    fn default() -> Self {
        Disconnect {
            code: ReasonCode::NORMAL_DISCONNECTION,
            session_expiry: None,
            reason_string: None,
            user_properties: UserProps::default(),
            server_reference: None,
        }
    }
}

/// An AUTH packet (5.0 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth<'a> {
    /// The reason code: `SUCCESS`, `CONTINUE_AUTHENTICATION` or
    /// `RE_AUTHENTICATE`.
    pub code: ReasonCode,
    /// Authentication Method (0x15).
    pub auth_method: Option<&'a str>,
    /// Authentication Data (0x16).
    pub auth_data: Option<&'a [u8]>,
    /// Reason String (0x1F).
    pub reason_string: Option<&'a str>,
    /// User Properties (0x26).
    pub user_properties: UserProps<'a>,
}

/// What [`decode`](super::decode) found at the start of a buffer.
// Boxing the packet would allocate per packet; the size is fine on a stack.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// The buffer holds only part of a packet; call again with more bytes.
    Incomplete,
    /// A whole packet, and how many bytes of the buffer it took.
    Packet(Packet<'a>, usize),
}

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// The whole packet would be `len` bytes, more than the maximum allowed;
    /// found from the fixed header alone.
    TooLarge {
        /// The size of the whole packet the fixed header announced.
        len: usize,
    },
    /// The bytes cannot be parsed as the spec says (reason code 0x81).
    Malformed(&'static str),
    /// The packet parses but holds something the protocol forbids (0x82).
    Protocol(&'static str),
    /// A CONNECT with a protocol level other than 4 or 5 (0x84).
    UnsupportedVersion(u8),
}

impl DecodeError {
    /// The 5.0 reason code for a CONNACK or DISCONNECT that answers it:
    /// `PACKET_TOO_LARGE`, `MALFORMED_PACKET`, `PROTOCOL_ERROR` or
    /// `UNSUPPORTED_PROTOCOL_VERSION`.
    pub const fn reason(&self) -> ReasonCode {
        match self {
            DecodeError::TooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            DecodeError::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::UnsupportedVersion(_) => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { len } => write!(f, "packet of {len} bytes is too large"),
            DecodeError::Malformed(what) => write!(f, "malformed packet: {what}"),
            DecodeError::Protocol(what) => write!(f, "protocol error: {what}"),
            DecodeError::UnsupportedVersion(level) => {
                write!(f, "unsupported protocol level {level}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// The remaining length would pass 268,435,455 bytes, or a Variable
    /// Byte Integer property (a Subscription Identifier) its maximum.
    TooLarge,
    /// A string or binary field is longer than 65,535 bytes.
    StringTooLong,
    /// The packet does not exist in this version (AUTH in 3.1.1).
    Unsupported,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::TooLarge => "packet too large to encode",
            EncodeError::StringTooLong => "string or binary field longer than 65535 bytes",
            EncodeError::Unsupported => "packet type not in this protocol version",
        })
    }
}

impl std::error::Error for EncodeError {}
