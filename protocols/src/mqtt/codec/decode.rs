//! Decoding: the fixed header (refused before the body when too large),
//! then each packet type's variable header, properties and payload.
//!
//! Section numbers are those of MQTT 3.1.1 and 5.0; `[MQTT-x.y.z-n]` are
//! the specifications' numbered conformance statements. Which error a
//! violation is follows 5.0 (section 1.2, "Malformed Packet" and "Protocol
//! Error") and is applied to 3.1.1 the same way.

use super::connect;
use super::props::{allowed, id, read_block, Prop};
use super::reason::ReasonCode;
use super::types::Version::{self, V311, V5};
use super::types::{
    AckProps, Auth, DecodeError, Decoded, Disconnect, Packet, PubResp, Publish, PublishProps, QoS,
    SubAck, SubOptions, Subscribe, UnsubAck, Unsubscribe, UserProps,
};
use super::wire::{read_varint, Reader, Varint};

pub(crate) const fn malformed(what: &'static str) -> DecodeError {
    DecodeError::Malformed(what)
}

pub(crate) const fn protocol(what: &'static str) -> DecodeError {
    DecodeError::Protocol(what)
}

/// See [`super::decode`].
pub(crate) fn decode(
    buf: &[u8],
    version: Option<Version>,
    max_packet: usize,
) -> Result<Decoded<'_>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(Decoded::Incomplete);
    };
    let ty = first >> 4;
    check_flags(ty, first & 0x0f)?;
    match (version, ty) {
        (None, 1) | (Some(V5), _) => {}
        (None, _) => return Err(protocol("first packet is not a CONNECT")),
        // 5.0 section 3.15: AUTH is new in 5.0.
        (Some(V311), 15) => return Err(protocol("AUTH in MQTT 3.1.1")),
        (Some(V311), _) => {}
    }
    let (remaining, n, minimal) = match read_varint(&buf[1..]) {
        Varint::Incomplete => return Ok(Decoded::Incomplete),
        // 3.1.1 section 2.2.3 and 5.0 section 1.5.5: four bytes at most.
        Varint::TooLong => return Err(malformed("remaining length longer than 4 bytes")),
        Varint::Value(v, n, minimal) => (v as usize, n, minimal),
    };
    // 5.0 section 1.5.5 [MQTT-1.5.5-1]: the shortest form. 3.1.1 (section
    // 2.2.3) asks nothing of the kind, so its connections accept any form;
    // a CONNECT's version is known once its level is read.
    if version == Some(V5) && !minimal {
        return Err(malformed("remaining length not in its shortest form"));
    }
    let total = 1 + n + remaining;
    if total > max_packet {
        return Err(DecodeError::TooLarge { len: total });
    }
    if buf.len() < total {
        return Ok(Decoded::Incomplete);
    }
    let mut r = Reader::new(&buf[1 + n..total]);
    let v = version.unwrap_or(V5);
    let packet = match ty {
        1 => Packet::Connect(connect::connect(&mut r, minimal)?),
        2 => Packet::ConnAck(connect::connack(&mut r, v)?),
        3 => Packet::Publish(publish(&mut r, first, v)?),
        4 => Packet::PubAck(pub_resp(&mut r, ty, v)?),
        5 => Packet::PubRec(pub_resp(&mut r, ty, v)?),
        6 => Packet::PubRel(pub_resp(&mut r, ty, v)?),
        7 => Packet::PubComp(pub_resp(&mut r, ty, v)?),
        8 => Packet::Subscribe(subscribe(&mut r, v)?),
        9 => Packet::SubAck(suback(&mut r, v)?),
        10 => Packet::Unsubscribe(unsubscribe(&mut r, v)?),
        11 => Packet::UnsubAck(unsuback(&mut r, v)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(disconnect(&mut r, v)?),
        _ => Packet::Auth(auth(&mut r)?),
    };
    if !r.is_empty() {
        return Err(malformed("bytes past the end of the packet"));
    }
    Ok(Decoded::Packet(packet, total))
}

/// The packet type and the fixed header's flags (section 2.1.2 and 2.1.3 of
/// both versions): type 0 is reserved, PUBLISH's flags are DUP, QoS and
/// RETAIN, PUBREL, SUBSCRIBE and UNSUBSCRIBE must have 0b0010 and all the
/// others 0; anything else is malformed (5.0 section 2.1.3).
fn check_flags(ty: u8, flags: u8) -> Result<(), DecodeError> {
    match ty {
        0 => Err(malformed("reserved packet type 0")),
        3 => {
            if flags & 0b0110 == 0b0110 {
                // 3.1.1 [MQTT-3.3.1-4], 5.0 section 3.3.1.2.
                Err(malformed("PUBLISH with QoS 3"))
            } else if flags & 0b1110 == 0b1000 {
                // 3.1.1 [MQTT-3.3.1-2], 5.0 [MQTT-3.3.1-2].
                Err(protocol("PUBLISH with DUP at QoS 0"))
            } else {
                Ok(())
            }
        }
        6 | 8 | 10 if flags != 0b0010 => Err(malformed("reserved fixed header flags")),
        6 | 8 | 10 => Ok(()),
        _ if flags != 0 => Err(malformed("reserved fixed header flags")),
        _ => Ok(()),
    }
}

/// A non-zero Packet Identifier (3.1.1 [MQTT-2.3.1-1], 5.0 [MQTT-2.2.1-3]).
fn packet_id(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(protocol("packet identifier 0")),
        id => Ok(id),
    }
}

/// The Payload Format Indicator: 0 or 1 (5.0 section 3.3.2.3.2).
pub(crate) fn payload_format(v: u8) -> Result<u8, DecodeError> {
    if v > 1 {
        return Err(protocol("payload format indicator other than 0 or 1"));
    }
    Ok(v)
}

/// Receive Maximum and Maximum Packet Size: 0 is a protocol error (5.0
/// sections 3.1.2.11.3, 3.1.2.11.4, 3.2.2.3.3, 3.2.2.3.6).
pub(crate) fn non_zero<T: PartialEq + Default>(v: T) -> Result<T, DecodeError> {
    if v == T::default() {
        return Err(protocol("receive maximum or maximum packet size of 0"));
    }
    Ok(v)
}

fn publish<'a>(r: &mut Reader<'a>, first: u8, v: Version) -> Result<Publish<'a>, DecodeError> {
    let qos = QoS::from_u8((first >> 1) & 0x03).ok_or(malformed("PUBLISH with QoS 3"))?;
    let topic = r.string()?;
    // Bytes, not chars: both are ASCII, never inside a multi-byte character.
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        // 3.1.1 [MQTT-3.3.2-2], 5.0 [MQTT-3.3.2-2].
        return Err(protocol("wildcard in a PUBLISH topic"));
    }
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        packet_id(r)?
    };
    let mut props = PublishProps::default();
    if v == V5 {
        let rep = read_block(r, allowed::PUBLISH, true, |p| {
            match p {
                Prop::Byte(id::PAYLOAD_FORMAT, v) => {
                    props.payload_format = Some(payload_format(v)?)
                }
                Prop::Four(id::MESSAGE_EXPIRY, v) => props.message_expiry = Some(v),
                Prop::Two(id::TOPIC_ALIAS, 0) => {
                    // 5.0 [MQTT-3.3.2-8].
                    return Err(protocol("topic alias 0"));
                }
                Prop::Two(id::TOPIC_ALIAS, v) => props.topic_alias = Some(v),
                Prop::Str(id::RESPONSE_TOPIC, v) => props.response_topic = Some(v),
                Prop::Bin(id::CORRELATION_DATA, v) => props.correlation_data = Some(v),
                Prop::Str(id::CONTENT_TYPE, v) => props.content_type = Some(v),
                _ => {}
            }
            Ok(())
        })?;
        props.user_properties = rep.user;
        props.subscription_ids = rep.sub_ids;
    }
    if topic.is_empty() && props.topic_alias.is_none() {
        // 3.1.1 [MQTT-4.7.3-1]; 5.0 section 3.3.2.1 (empty only with an
        // alias).
        return Err(protocol("empty topic name"));
    }
    Ok(Publish {
        dup: first & 0x08 != 0,
        qos,
        retain: first & 0x01 != 0,
        topic,
        packet_id,
        props,
        payload: r.take_rest(),
    })
}

/// The reason string and user properties of an acknowledgement.
fn ack_props<'a>(r: &mut Reader<'a>) -> Result<AckProps<'a>, DecodeError> {
    let mut props = AckProps::default();
    let rep = read_block(r, allowed::ACK, false, |p| {
        if let Prop::Str(id::REASON_STRING, v) = p {
            props.reason_string = Some(v);
        }
        Ok(())
    })?;
    props.user_properties = rep.user;
    Ok(props)
}

/// A reason code of a 5.0 packet of type `ty`.
fn reason(r: &mut Reader<'_>, ty: u8) -> Result<ReasonCode, DecodeError> {
    let code = ReasonCode(r.u8()?);
    if !code.allowed_in(ty) {
        return Err(protocol("reason code not allowed in this packet"));
    }
    Ok(code)
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In 5.0 the reason code and the
/// properties may be left out (section 3.4.2.1: remaining length 2 means
/// success without properties, below 4 no properties).
fn pub_resp<'a>(r: &mut Reader<'a>, ty: u8, v: Version) -> Result<PubResp<'a>, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut code = ReasonCode::SUCCESS;
    let mut props = AckProps::default();
    if v == V5 && !r.is_empty() {
        code = reason(r, ty)?;
        if !r.is_empty() {
            props = ack_props(r)?;
        }
    }
    Ok(PubResp {
        packet_id,
        code,
        props,
    })
}

fn subscribe<'a>(r: &mut Reader<'a>, v: Version) -> Result<Subscribe<'a>, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut subscription_id = None;
    let mut user_properties = UserProps::default();
    if v == V5 {
        let rep = read_block(r, allowed::SUBSCRIBE, false, |_| Ok(()))?;
        subscription_id = rep.sub_ids.iter().next();
        user_properties = rep.user;
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let o = r.u8()?;
        let qos = QoS::from_u8(o & 0x03).ok_or(malformed("subscription QoS 3"))?;
        let opts = match v {
            V311 => {
                if o & 0xfc != 0 {
                    // 3.1.1 [MQTT-3.8.3-4].
                    return Err(malformed("subscription options reserved bits set"));
                }
                SubOptions::qos(qos)
            }
            V5 => {
                if o & 0xc0 != 0 {
                    // 5.0 [MQTT-3.8.3-5].
                    return Err(malformed("subscription options reserved bits set"));
                }
                let retain_handling = (o >> 4) & 0x03;
                if retain_handling == 3 {
                    // 5.0 section 3.8.3.1.
                    return Err(protocol("retain handling 3"));
                }
                let no_local = o & 0x04 != 0;
                if no_local && filter.starts_with("$share/") {
                    // 5.0 [MQTT-3.8.3-4].
                    return Err(protocol("no local on a shared subscription"));
                }
                SubOptions {
                    qos,
                    no_local,
                    retain_as_published: o & 0x08 != 0,
                    retain_handling,
                }
            }
        };
        filters.push((filter, opts));
    }
    if filters.is_empty() {
        // 3.1.1 [MQTT-3.8.3-3], 5.0 [MQTT-3.8.3-2].
        return Err(protocol("SUBSCRIBE without a topic filter"));
    }
    Ok(Subscribe {
        packet_id,
        subscription_id,
        user_properties,
        filters,
    })
}

fn suback<'a>(r: &mut Reader<'a>, v: Version) -> Result<SubAck<'a>, DecodeError> {
    let packet_id = packet_id(r)?;
    let props = if v == V5 {
        ack_props(r)?
    } else {
        AckProps::default()
    };
    let mut codes = Vec::with_capacity(r.len());
    for &c in r.take_rest() {
        let ok = match v {
            // 3.1.1 section 3.9.3: 0x00, 0x01, 0x02 or 0x80.
            V311 => matches!(c, 0x00..=0x02 | 0x80),
            V5 => ReasonCode(c).allowed_in(9),
        };
        if !ok {
            return Err(protocol("return code not allowed in a SUBACK"));
        }
        codes.push(ReasonCode(c));
    }
    if codes.is_empty() {
        return Err(protocol("SUBACK without a return code"));
    }
    Ok(SubAck {
        packet_id,
        props,
        codes,
    })
}

fn unsubscribe<'a>(r: &mut Reader<'a>, v: Version) -> Result<Unsubscribe<'a>, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut user_properties = UserProps::default();
    if v == V5 {
        user_properties = read_block(r, allowed::UNSUBSCRIBE, false, |_| Ok(()))?.user;
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        // 3.1.1 [MQTT-3.10.3-2], 5.0 [MQTT-3.10.3-2].
        return Err(protocol("UNSUBSCRIBE without a topic filter"));
    }
    Ok(Unsubscribe {
        packet_id,
        user_properties,
        filters,
    })
}

fn unsuback<'a>(r: &mut Reader<'a>, v: Version) -> Result<UnsubAck<'a>, DecodeError> {
    let packet_id = packet_id(r)?;
    if v == V311 {
        return Ok(UnsubAck {
            packet_id,
            props: AckProps::default(),
            codes: Vec::new(),
        });
    }
    let props = ack_props(r)?;
    let mut codes = Vec::with_capacity(r.len());
    while !r.is_empty() {
        codes.push(reason(r, 11)?);
    }
    if codes.is_empty() {
        // 5.0 section 3.11.3: one code per topic filter, and there is one
        // at least.
        return Err(protocol("UNSUBACK without a reason code"));
    }
    Ok(UnsubAck {
        packet_id,
        props,
        codes,
    })
}

/// DISCONNECT. In 5.0, remaining length 0 means a normal disconnection,
/// below 2 no properties (section 3.14.2.1, 3.14.2.2).
fn disconnect<'a>(r: &mut Reader<'a>, v: Version) -> Result<Disconnect<'a>, DecodeError> {
    let mut d = Disconnect::default();
    if v == V311 || r.is_empty() {
        return Ok(d);
    }
    d.code = reason(r, 14)?;
    if r.is_empty() {
        return Ok(d);
    }
    let rep = read_block(r, allowed::DISCONNECT, false, |p| {
        match p {
            Prop::Four(id::SESSION_EXPIRY, v) => d.session_expiry = Some(v),
            Prop::Str(id::REASON_STRING, v) => d.reason_string = Some(v),
            Prop::Str(id::SERVER_REFERENCE, v) => d.server_reference = Some(v),
            _ => {}
        }
        Ok(())
    })?;
    d.user_properties = rep.user;
    Ok(d)
}

/// AUTH (5.0 only). Remaining length 0 means success without properties
/// (section 3.15.2.1); a reason code alone is accepted too.
fn auth<'a>(r: &mut Reader<'a>) -> Result<Auth<'a>, DecodeError> {
    let mut a = Auth {
        code: ReasonCode::SUCCESS,
        auth_method: None,
        auth_data: None,
        reason_string: None,
        user_properties: UserProps::default(),
    };
    if r.is_empty() {
        return Ok(a);
    }
    a.code = reason(r, 15)?;
    if r.is_empty() {
        return Ok(a);
    }
    let rep = read_block(r, allowed::AUTH, false, |p| {
        match p {
            Prop::Str(id::AUTH_METHOD, v) => a.auth_method = Some(v),
            Prop::Bin(id::AUTH_DATA, v) => a.auth_data = Some(v),
            Prop::Str(id::REASON_STRING, v) => a.reason_string = Some(v),
            _ => {}
        }
        Ok(())
    })?;
    a.user_properties = rep.user;
    if a.auth_data.is_some() && a.auth_method.is_none() {
        return Err(protocol("authentication data without a method"));
    }
    Ok(a)
}
