//! MQTT 5.0 properties (section 2.2.2): reading a property block with the
//! checks every packet shares, and writing properties.

use super::types::{DecodeError, EncodeError, SubIds, UserProps};
use super::wire::{Counter, Reader, Sink};

/// The property identifiers (5.0 section 2.2.2.2).
pub(crate) mod id {
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_ID: u8 = 0x0B;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTH_METHOD: u8 = 0x15;
    pub const AUTH_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
    pub const WILL_DELAY: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
    pub const RESPONSE_INFO: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUB_AVAILABLE: u8 = 0x28;
    pub const SUB_ID_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUB_AVAILABLE: u8 = 0x2A;
}

/// Which properties a packet may hold, one bit per identifier (all are
/// below 64).
pub(crate) mod allowed {
    use super::id::*;

    const fn bits(ids: &[u8]) -> u64 {
        let mut m = 0;
        let mut i = 0;
        while i < ids.len() {
            m |= 1 << ids[i];
            i += 1;
        }
        m
    }

    pub const CONNECT: u64 = bits(&[
        SESSION_EXPIRY,
        AUTH_METHOD,
        AUTH_DATA,
        REQUEST_PROBLEM_INFO,
        REQUEST_RESPONSE_INFO,
        RECEIVE_MAXIMUM,
        TOPIC_ALIAS_MAXIMUM,
        USER_PROPERTY,
        MAXIMUM_PACKET_SIZE,
    ]);
    pub const WILL: u64 = bits(&[
        PAYLOAD_FORMAT,
        MESSAGE_EXPIRY,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        WILL_DELAY,
        USER_PROPERTY,
    ]);
    pub const CONNACK: u64 = bits(&[
        SESSION_EXPIRY,
        ASSIGNED_CLIENT_ID,
        SERVER_KEEP_ALIVE,
        AUTH_METHOD,
        AUTH_DATA,
        RESPONSE_INFO,
        SERVER_REFERENCE,
        REASON_STRING,
        RECEIVE_MAXIMUM,
        TOPIC_ALIAS_MAXIMUM,
        MAXIMUM_QOS,
        RETAIN_AVAILABLE,
        USER_PROPERTY,
        MAXIMUM_PACKET_SIZE,
        WILDCARD_SUB_AVAILABLE,
        SUB_ID_AVAILABLE,
        SHARED_SUB_AVAILABLE,
    ]);
    pub const PUBLISH: u64 = bits(&[
        PAYLOAD_FORMAT,
        MESSAGE_EXPIRY,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        SUBSCRIPTION_ID,
        TOPIC_ALIAS,
        USER_PROPERTY,
    ]);
    /// PUBACK to PUBCOMP, SUBACK, UNSUBACK.
    pub const ACK: u64 = bits(&[REASON_STRING, USER_PROPERTY]);
    pub const SUBSCRIBE: u64 = bits(&[SUBSCRIPTION_ID, USER_PROPERTY]);
    pub const UNSUBSCRIBE: u64 = bits(&[USER_PROPERTY]);
    pub const DISCONNECT: u64 = bits(&[
        SESSION_EXPIRY,
        SERVER_REFERENCE,
        REASON_STRING,
        USER_PROPERTY,
    ]);
    pub const AUTH: u64 = bits(&[AUTH_METHOD, AUTH_DATA, REASON_STRING, USER_PROPERTY]);
}

/// One property and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prop<'a> {
    /// A Byte property.
    Byte(u8, u8),
    /// A Two Byte Integer property.
    Two(u8, u16),
    /// A Four Byte Integer property.
    Four(u8, u32),
    /// A UTF-8 Encoded String property.
    Str(u8, &'a str),
    /// A Binary Data property.
    Bin(u8, &'a [u8]),
    /// A Subscription Identifier (the only Variable Byte Integer one).
    SubId(u32),
    /// A User Property.
    User(&'a str, &'a str),
}

impl Prop<'_> {
    fn id(&self) -> u8 {
        match *self {
            Prop::Byte(i, _) | Prop::Two(i, _) | Prop::Four(i, _) => i,
            Prop::Str(i, _) | Prop::Bin(i, _) => i,
            Prop::SubId(_) => id::SUBSCRIPTION_ID,
            Prop::User(..) => id::USER_PROPERTY,
        }
    }
}

/// Reads one property: its identifier (one byte for every identifier 5.0
/// defines; anything else is unknown) and its value.
fn read_prop<'a>(r: &mut Reader<'a>) -> Result<Prop<'a>, DecodeError> {
    use id::*;
    let i = r.u8()?;
    Ok(match i {
        PAYLOAD_FORMAT
        | REQUEST_PROBLEM_INFO
        | REQUEST_RESPONSE_INFO
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUB_AVAILABLE
        | SUB_ID_AVAILABLE
        | SHARED_SUB_AVAILABLE => Prop::Byte(i, r.u8()?),
        SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => {
            Prop::Two(i, r.u16()?)
        }
        MESSAGE_EXPIRY | SESSION_EXPIRY | WILL_DELAY | MAXIMUM_PACKET_SIZE => {
            Prop::Four(i, r.u32()?)
        }
        CONTENT_TYPE | RESPONSE_TOPIC | ASSIGNED_CLIENT_ID | AUTH_METHOD | RESPONSE_INFO
        | SERVER_REFERENCE | REASON_STRING => Prop::Str(i, r.string()?),
        CORRELATION_DATA | AUTH_DATA => Prop::Bin(i, r.binary()?),
        SUBSCRIPTION_ID => Prop::SubId(r.varint()?),
        USER_PROPERTY => Prop::User(r.string()?, r.string()?),
        // 5.0 section 2.2.2.2: "A Control Packet which contains an
        // Identifier which is not valid for its packet type, or contains a
        // value not of the specified data type, is a Malformed Packet."
        _ => return Err(DecodeError::Malformed("unknown property identifier")),
    })
}

/// The next property of an already checked block, for the views'
/// iterators; `None` at the end (or at anything unreadable).
pub(crate) fn next_prop<'a>(buf: &mut &'a [u8]) -> Option<Prop<'a>> {
    if buf.is_empty() {
        return None;
    }
    let mut r = Reader::new(buf);
    let p = read_prop(&mut r).ok()?;
    *buf = r.rest();
    Some(p)
}

/// The repeatable properties of a block, as views.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Repeated<'a> {
    pub user: UserProps<'a>,
    pub sub_ids: SubIds<'a>,
}

/// Reads a property block (its Variable Byte Integer length, then the
/// properties) from `r`, checking for each property that `allowed` holds it
/// (malformed otherwise, section 2.2.2.2) and that it is not repeated
/// (a protocol error for every property but User Property, and
/// Subscription Identifier when `many_sub_ids`). Every other property goes
/// to `each`, which checks and keeps its value.
pub(crate) fn read_block<'a>(
    r: &mut Reader<'a>,
    allowed: u64,
    many_sub_ids: bool,
    mut each: impl FnMut(Prop<'a>) -> Result<(), DecodeError>,
) -> Result<Repeated<'a>, DecodeError> {
    let len = r.varint()?;
    let block = r.bytes(len as usize)?;
    let mut seen = 0u64;
    let mut user: Option<(usize, usize)> = None;
    let mut subs: Option<(usize, usize)> = None;
    let mut pr = Reader::new(block);
    while !pr.is_empty() {
        let start = block.len() - pr.len();
        let p = read_prop(&mut pr)?;
        let end = block.len() - pr.len();
        let i = p.id();
        if allowed & (1 << i) == 0 {
            return Err(DecodeError::Malformed(
                "property not allowed in this packet",
            ));
        }
        match p {
            Prop::User(..) => {
                user = Some((user.map_or(start, |u| u.0), end));
            }
            Prop::SubId(v) => {
                if v == 0 {
                    // 5.0 section 3.3.2.3.8 and 3.8.2.1.2.
                    return Err(DecodeError::Protocol("subscription identifier 0"));
                }
                if subs.is_some() && !many_sub_ids {
                    return Err(DecodeError::Protocol("property repeated"));
                }
                subs = Some((subs.map_or(start, |s| s.0), end));
            }
            _ => {
                if seen & (1 << i) != 0 {
                    return Err(DecodeError::Protocol("property repeated"));
                }
                seen |= 1 << i;
                each(p)?;
            }
        }
    }
    Ok(Repeated {
        user: UserProps::Encoded(user.map_or(&[][..], |(a, b)| &block[a..b])),
        sub_ids: SubIds::Encoded(subs.map_or(&[][..], |(a, b)| &block[a..b])),
    })
}

/// A Byte property that is a boolean: 0 or 1, anything else a protocol
/// error (5.0 sections 3.1.2.11.6, 3.1.2.11.7, 3.2.2.3.5, 3.2.2.3.11 to
/// 3.2.2.3.13).
pub(crate) fn flag(v: u8) -> Result<bool, DecodeError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Protocol("boolean property other than 0 or 1")),
    }
}

/// Writes properties of one block; [`write_block`] calls it twice, once to
/// count and once to write.
pub(crate) struct PropSink<'s, S: Sink> {
    pub sink: &'s mut S,
}

impl<S: Sink> PropSink<'_, S> {
    pub fn byte(&mut self, i: u8, v: Option<u8>) {
        if let Some(v) = v {
            self.sink.u8(i);
            self.sink.u8(v);
        }
    }

    pub fn flag(&mut self, i: u8, v: Option<bool>) {
        self.byte(i, v.map(u8::from));
    }

    pub fn two(&mut self, i: u8, v: Option<u16>) {
        if let Some(v) = v {
            self.sink.u8(i);
            self.sink.u16(v);
        }
    }

    pub fn four(&mut self, i: u8, v: Option<u32>) {
        if let Some(v) = v {
            self.sink.u8(i);
            self.sink.u32(v);
        }
    }

    pub fn string(&mut self, i: u8, v: Option<&str>) -> Result<(), EncodeError> {
        if let Some(v) = v {
            self.sink.u8(i);
            self.sink.string(v)?;
        }
        Ok(())
    }

    pub fn binary(&mut self, i: u8, v: Option<&[u8]>) -> Result<(), EncodeError> {
        if let Some(v) = v {
            self.sink.u8(i);
            self.sink.binary(v)?;
        }
        Ok(())
    }

    pub fn user(&mut self, u: &UserProps<'_>) -> Result<(), EncodeError> {
        for (k, v) in u.iter() {
            self.sink.u8(id::USER_PROPERTY);
            self.sink.string(k)?;
            self.sink.string(v)?;
        }
        Ok(())
    }

    pub fn sub_id(&mut self, v: u32) -> Result<(), EncodeError> {
        self.sink.u8(id::SUBSCRIPTION_ID);
        self.sink.varint(v)
    }
}

/// A set of properties that can write itself.
pub(crate) trait WriteProps {
    /// Writes every property that is present.
    fn write<S: Sink>(&self, p: &mut PropSink<'_, S>) -> Result<(), EncodeError>;
}

/// Writes a property block: its length, then the properties.
pub(crate) fn write_block<S: Sink, P: WriteProps>(
    out: &mut S,
    props: &P,
) -> Result<(), EncodeError> {
    let mut count = Counter(0);
    props.write(&mut PropSink { sink: &mut count })?;
    let len = u32::try_from(count.0).map_err(|_| EncodeError::TooLarge)?;
    out.varint(len)?;
    props.write(&mut PropSink { sink: out })
}
