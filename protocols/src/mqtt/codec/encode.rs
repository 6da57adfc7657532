//! Encoding: each packet's body is written by one function into a
//! [`Sink`], which either counts (for the fixed header's remaining length
//! and [`packet_len`]) or writes, so sizes and bytes cannot disagree. Every
//! error shows up while counting, before anything is written.

use super::props::{id, write_block, PropSink, WriteProps};
use super::reason::ReasonCode;
use super::types::{
    AckProps, Auth, ConnAckProps, ConnectProps, Disconnect, EncodeError, Packet, Publish,
    PublishProps, QoS, UserProps, Version, WillProps,
};
use super::wire::{varint_len, Counter, Sink, VARINT_MAX};

/// See [`super::encode`].
pub(crate) fn encode(
    packet: &Packet<'_>,
    version: Version,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let len = body_len(packet, version)?;
    out.reserve(1 + varint_len(len) + len as usize);
    out.u8(first_byte(packet));
    out.varint(len)?;
    body(packet, version, out, true)
}

/// See [`super::encode_publish_header`].
pub(crate) fn encode_publish_header(
    p: &Publish<'_>,
    version: Version,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let v5 = version == Version::V5;
    if !v5 || p.props.is_empty() {
        // Most deliveries carry no property: the header is written
        // straight, not measured by a first encoding pass.
        let topic = u16::try_from(p.topic.len()).map_err(|_| EncodeError::StringTooLong)?;
        let len = 2
            + usize::from(topic)
            + if p.qos == QoS::AtMostOnce { 0 } else { 2 }
            + usize::from(v5)
            + p.payload.len();
        let len = u32::try_from(len).map_err(|_| EncodeError::TooLarge)?;
        out.u8(0x30 | u8::from(p.dup) << 3 | p.qos.as_u8() << 1 | u8::from(p.retain));
        out.varint(len)?;
        out.u16(topic);
        out.put(p.topic.as_bytes());
        if p.qos != QoS::AtMostOnce {
            out.u16(p.packet_id);
        }
        if v5 {
            // An empty property block.
            out.u8(0);
        }
        return Ok(());
    }
    let packet = Packet::Publish(*p);
    let len = body_len(&packet, version)?;
    out.u8(first_byte(&packet));
    out.varint(len)?;
    body(&packet, version, out, false)
}

/// See [`super::packet_len`].
pub(crate) fn packet_len(packet: &Packet<'_>, version: Version) -> Result<usize, EncodeError> {
    let len = body_len(packet, version)?;
    Ok(1 + varint_len(len) + len as usize)
}

/// The remaining length: the body's size, at most [`VARINT_MAX`].
fn body_len(packet: &Packet<'_>, version: Version) -> Result<u32, EncodeError> {
    let mut count = Counter(0);
    body(packet, version, &mut count, true)?;
    match u32::try_from(count.0) {
        Ok(n) if n <= VARINT_MAX => Ok(n),
        _ => Err(EncodeError::TooLarge),
    }
}

/// The packet type and flags.
fn first_byte(packet: &Packet<'_>) -> u8 {
    let flags = match packet {
        Packet::Publish(p) => u8::from(p.dup) << 3 | p.qos.as_u8() << 1 | u8::from(p.retain),
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    };
    packet.packet_type() << 4 | flags
}

/// Writes the variable header and payload (the PUBLISH payload only when
/// `payload`).
fn body<S: Sink>(
    packet: &Packet<'_>,
    v: Version,
    s: &mut S,
    payload: bool,
) -> Result<(), EncodeError> {
    let v5 = v == Version::V5;
    match packet {
        Packet::Connect(c) => {
            let v5 = c.version == Version::V5;
            s.string("MQTT")?;
            s.u8(c.version.level());
            let mut flags = u8::from(c.clean_start) << 1;
            if let Some(w) = &c.will {
                flags |= 0x04 | w.qos.as_u8() << 3 | u8::from(w.retain) << 5;
            }
            flags |= u8::from(c.password.is_some()) << 6 | u8::from(c.username.is_some()) << 7;
            s.u8(flags);
            s.u16(c.keep_alive);
            if v5 {
                write_block(s, &c.props)?;
            }
            s.string(c.client_id)?;
            if let Some(w) = &c.will {
                if v5 {
                    write_block(s, &w.props)?;
                }
                s.string(w.topic)?;
                s.binary(w.payload)?;
            }
            if let Some(u) = c.username {
                s.string(u)?;
            }
            if let Some(p) = c.password {
                s.binary(p)?;
            }
        }
        Packet::ConnAck(c) => {
            s.u8(u8::from(c.session_present));
            if v5 {
                s.u8(c.code.0);
                write_block(s, &c.props)?;
            } else {
                s.u8(c.code.connack_v311());
            }
        }
        Packet::Publish(p) => {
            s.string(p.topic)?;
            if p.qos != QoS::AtMostOnce {
                s.u16(p.packet_id);
            }
            if v5 {
                write_block(s, &p.props)?;
            }
            if payload {
                s.put(p.payload);
            }
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            s.u16(r.packet_id);
            // 5.0 section 3.4.2.1: the shortest form that says as much.
            if v5 && (r.code != ReasonCode::SUCCESS || !r.props.is_empty()) {
                s.u8(r.code.0);
                if !r.props.is_empty() {
                    write_block(s, &r.props)?;
                }
            }
        }
        Packet::Subscribe(sub) => {
            s.u16(sub.packet_id);
            if v5 {
                write_block(
                    s,
                    &SubscribeProps {
                        id: sub.subscription_id,
                        user: &sub.user_properties,
                    },
                )?;
            }
            for (filter, o) in &sub.filters {
                s.string(filter)?;
                let mut b = o.qos.as_u8();
                if v5 {
                    b |= u8::from(o.no_local) << 2
                        | u8::from(o.retain_as_published) << 3
                        | (o.retain_handling & 0x03) << 4;
                }
                s.u8(b);
            }
        }
        Packet::SubAck(a) => {
            s.u16(a.packet_id);
            if v5 {
                write_block(s, &a.props)?;
            }
            for c in &a.codes {
                s.u8(if v5 { c.0 } else { c.suback_v311() });
            }
        }
        Packet::Unsubscribe(u) => {
            s.u16(u.packet_id);
            if v5 {
                write_block(s, &u.user_properties)?;
            }
            for f in &u.filters {
                s.string(f)?;
            }
        }
        Packet::UnsubAck(a) => {
            s.u16(a.packet_id);
            if v5 {
                write_block(s, &a.props)?;
                for c in &a.codes {
                    s.u8(c.0);
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            let no_props = d.session_expiry.is_none()
                && d.reason_string.is_none()
                && d.user_properties.is_empty()
                && d.server_reference.is_none();
            // 5.0 section 3.14.2.1: nothing for a normal disconnection
            // without properties.
            if v5 && !(no_props && d.code == ReasonCode::NORMAL_DISCONNECTION) {
                s.u8(d.code.0);
                if !no_props {
                    write_block(s, d)?;
                }
            }
        }
        Packet::Auth(a) => {
            if !v5 {
                return Err(EncodeError::Unsupported);
            }
            let no_props = a.auth_method.is_none()
                && a.auth_data.is_none()
                && a.reason_string.is_none()
                && a.user_properties.is_empty();
            // 5.0 section 3.15.2.1: nothing for a success without
            // properties.
            if !(no_props && a.code == ReasonCode::SUCCESS) {
                s.u8(a.code.0);
                write_block(s, a)?;
            }
        }
    }
    Ok(())
}

impl AckProps<'_> {
    /// Whether there is nothing to encode.
    pub fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }
}

impl WriteProps for ConnectProps<'_> {
    fn write<S: Sink>(&self, p: &mut PropSink<'_, S>) -> Result<(), EncodeError> {
        p.four(id::SESSION_EXPIRY, self.session_expiry);
        p.two(id::RECEIVE_MAXIMUM, self.receive_maximum);
        p.four(id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        p.two(id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        p.flag(id::REQUEST_RESPONSE_INFO, self.request_response_info);
        p.flag(id::REQUEST_PROBLEM_INFO, self.request_problem_info);
        p.user(&self.user_properties)?;
        p.string(id::AUTH_METHOD, self.auth_method)?;
        p.binary(id::AUTH_DATA, self.auth_data)
    }
}

impl WriteProps for WillProps<'_> {
    fn write<S: Sink>(&self, p: &mut PropSink<'_, S>) -> Result<(), EncodeError> {
        p.four(id::WILL_DELAY, self.delay_interval);
        p.byte(id::PAYLOAD_FORMAT, self.payload_format);
        p.four(id::MESSAGE_EXPIRY, self.message_expiry);
        p.string(id::CONTENT_TYPE, self.content_type)?;
        p.string(id::RESPONSE_TOPIC, self.response_topic)?;
        p.binary(id::CORRELATION_DATA, self.correlation_data)?;
        p.user(&self.user_properties)
    }
}

impl WriteProps for ConnAckProps<'_> {
    fn write<S: Sink>(&self, p: &mut PropSink<'_, S>) -> Result<(), EncodeError> {
        p.four(id::SESSION_EXPIRY, self.session_expiry);
        p.two(id::RECEIVE_MAXIMUM, self.receive_maximum);
        p.byte(id::MAXIMUM_QOS, self.maximum_qos.map(QoS::as_u8));
        p.flag(id::RETAIN_AVAILABLE, self.retain_available);
        p.four(id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        p.string(id::ASSIGNED_CLIENT_ID, self.assigned_client_id)?;
        p.two(id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        p.string(id::REASON_STRING, self.reason_string)?;
        p.user(&self.user_properties)?;
        p.flag(id::WILDCARD_SUB_AVAILABLE, self.wildcard_sub_available);
        p.flag(id::SUB_ID_AVAILABLE, self.sub_ids_available);
        p.flag(id::SHARED_SUB_AVAILABLE, self.shared_sub_available);
        p.two(id::SERVER_KEEP_ALIVE, self.server_keep_alive);
        p.string(id::RESPONSE_INFO, self.response_info)?;
        p.string(id::SERVER_REFERENCE, self.server_reference)?;
        p.string(id::AUTH_METHOD, self.auth_method)?;
        p.binary(id::AUTH_DATA, self.auth_data)
    }
}

impl WriteProps for PublishProps<'_> {
    fn write<S: Sink>(&self, p: &mut PropSink<'_, S>) -> Result<(), EncodeError> {
        p.byte(id::PAYLOAD_FORMAT, self.payload_format);
        p.four(id::MESSAGE_EXPIRY, self.message_expiry);
        p.two(id::TOPIC_ALIAS, self.topic_alias);
        p.string(id::RESPONSE_TOPIC, self.response_topic)?;
        p.binary(id::CORRELATION_DATA, self.correlation_data)?;
        p.user(&self.user_properties)?;
        for sub in self.subscription_ids.iter() {
            p.sub_id(sub)?;
        }
        p.string(id::CONTENT_TYPE, self.content_type)
    }
}

impl PublishProps<'_> {
    /// Whether there is nothing to encode.
    fn is_empty(&self) -> bool {
        self.payload_format.is_none()
            && self.message_expiry.is_none()
            && self.topic_alias.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user_properties.is_empty()
            && self.subscription_ids.is_empty()
            && self.content_type.is_none()
    }
}

impl WriteProps for AckProps<'_> {
    fn write<S: Sink>(&self, p: &mut PropSink<'_, S>) -> Result<(), EncodeError> {
        p.string(id::REASON_STRING, self.reason_string)?;
        p.user(&self.user_properties)
    }
}

impl WriteProps for UserProps<'_> {
    fn write<S: Sink>(&self, p: &mut PropSink<'_, S>) -> Result<(), EncodeError> {
        p.user(self)
    }
}

/// The properties of a SUBSCRIBE.
struct SubscribeProps<'r, 'a> {
    id: Option<u32>,
    user: &'r UserProps<'a>,
}

impl WriteProps for SubscribeProps<'_, '_> {
    fn write<S: Sink>(&self, p: &mut PropSink<'_, S>) -> Result<(), EncodeError> {
        if let Some(v) = self.id {
            p.sub_id(v)?;
        }
        p.user(self.user)
    }
}

impl WriteProps for Disconnect<'_> {
    fn write<S: Sink>(&self, p: &mut PropSink<'_, S>) -> Result<(), EncodeError> {
        p.four(id::SESSION_EXPIRY, self.session_expiry);
        p.string(id::REASON_STRING, self.reason_string)?;
        p.user(&self.user_properties)?;
        p.string(id::SERVER_REFERENCE, self.server_reference)
    }
}

impl WriteProps for Auth<'_> {
    fn write<S: Sink>(&self, p: &mut PropSink<'_, S>) -> Result<(), EncodeError> {
        p.string(id::AUTH_METHOD, self.auth_method)?;
        p.binary(id::AUTH_DATA, self.auth_data)?;
        p.string(id::REASON_STRING, self.reason_string)?;
        p.user(&self.user_properties)
    }
}
