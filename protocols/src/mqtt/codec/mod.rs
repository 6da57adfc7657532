//! MQTT 3.1.1 and 5.0 packets: [`decode`] from received bytes into borrowed
//! [`Packet`]s, [`encode`] into a caller's buffer.
//!
//! Decoding is incremental: [`decode`] answers [`Decoded::Incomplete`] until
//! a whole packet is in the buffer, refuses a packet larger than the
//! caller's maximum from its fixed header alone (before the body arrives),
//! and checks everything the specifications call a malformed packet or a
//! protocol error at the level of one packet. What depends on the session
//! (a second CONNECT, topic aliases, packet identifiers in flight) and the
//! syntax of topic filters ([`super::topic`]) are left to the caller.
//!
//! Nothing decoded is copied: strings and payloads borrow the buffer, and
//! the properties that may repeat ([`UserProps`], [`SubIds`]) are views of
//! their encoded bytes, so decoding a PUBLISH allocates nothing.
//!
//! Encoding writes the shortest form a version allows; in 3.1.1,
//! properties and 5.0-only fields are left out, and reason codes become
//! their 3.1.1 return codes. It writes what it is given: what decoding
//! refuses (a packet identifier of 0, a wildcard in a topic name) is the
//! caller's to avoid.
//!
//! Left to the caller as well: checking that a payload marked as UTF-8
//! (Payload Format Indicator 1) is UTF-8, which 5.0 section 3.3.2.3.2 makes
//! optional, and the syntax of will topics, which are topic names.

mod connect;
mod decode;
mod encode;
mod props;
mod reason;
mod types;
mod views;
mod wire;

#[cfg(test)]
mod tests;

pub use reason::ReasonCode;
pub use types::{
    AckProps, Auth, ConnAck, ConnAckProps, Connect, ConnectProps, DecodeError, Decoded, Disconnect,
    EncodeError, Packet, PubResp, Publish, PublishProps, QoS, SubAck, SubIds, SubOptions,
    Subscribe, UnsubAck, Unsubscribe, UserProps, Version, Will, WillProps,
};
pub use views::{SubIdsIter, UserPropsIter};
pub use wire::VARINT_MAX;

/// Decodes the packet at the start of `buf`.
///
/// `version` is the connection's protocol version, `None` before its
/// CONNECT (then only a CONNECT decodes; anything else is a protocol
/// error). `max_packet` is the largest whole packet accepted; a larger one
/// is refused as soon as its fixed header is in `buf`.
pub fn decode(
    buf: &[u8],
    version: Option<Version>,
    max_packet: usize,
) -> Result<Decoded<'_>, DecodeError> {
    decode::decode(buf, version, max_packet)
}

/// Appends the encoding of `packet` for a connection of `version` to `out`.
/// A CONNECT is encoded in its own [`Connect::version`].
pub fn encode(packet: &Packet<'_>, version: Version, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode::encode(packet, version, out)
}

/// Appends everything of a PUBLISH but its payload to `out`: the fixed
/// header (whose remaining length counts the payload), the topic, the
/// packet identifier and the properties. Writing the payload after it gives
/// the same bytes as [`encode`].
pub fn encode_publish_header(
    p: &Publish<'_>,
    version: Version,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    encode::encode_publish_header(p, version, out)
}

/// The size of the whole encoding of `packet` ([`encode`] appends exactly
/// this many bytes).
pub fn packet_len(packet: &Packet<'_>, version: Version) -> Result<usize, EncodeError> {
    encode::packet_len(packet, version)
}
