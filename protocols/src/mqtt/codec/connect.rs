//! Decoding the packets that open a connection: CONNECT and CONNACK.

use super::decode::{malformed, non_zero, payload_format, protocol};
use super::props::{allowed, flag, id, read_block, Prop};
use super::reason::ReasonCode;
use super::types::Version::{self, V311, V5};
use super::types::{
    ConnAck, ConnAckProps, Connect, ConnectProps, DecodeError, QoS, Will, WillProps,
};
use super::wire::Reader;

/// A CONNECT; `header_minimal` says whether its remaining length was in
/// its shortest form, which 5.0 requires.
pub(crate) fn connect<'a>(
    r: &mut Reader<'a>,
    header_minimal: bool,
) -> Result<Connect<'a>, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let version = match (name, level) {
        (b"MQTT", 4) => V311,
        (b"MQTT", 5) => V5,
        // MQTT 3.1 ("MQIsdp", level 3) and unknown levels: answered with
        // return code 1 / reason 0x84 (3.1.1 [MQTT-3.1.2-2], 5.0 3.1.2.2).
        (b"MQTT" | b"MQIsdp", level) => return Err(DecodeError::UnsupportedVersion(level)),
        // 3.1.1 [MQTT-3.1.2-1], 5.0 [MQTT-3.1.2-1].
        _ => return Err(protocol("protocol name is not MQTT")),
    };
    if version == V5 && !header_minimal {
        // 5.0 [MQTT-1.5.5-1], now that the CONNECT's version is known.
        return Err(malformed("remaining length not in its shortest form"));
    }
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        // 3.1.1 [MQTT-3.1.2-3], 5.0 [MQTT-3.1.2-3].
        return Err(malformed("CONNECT reserved flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = QoS::from_u8((flags >> 3) & 0x03).ok_or(malformed("will QoS 3"))?;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        // 3.1.1 [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15];
        // 5.0 [MQTT-3.1.2-11], [MQTT-3.1.2-13].
        return Err(malformed("will QoS or will retain without a will"));
    }
    if version == V311 && has_password && !has_username {
        // 3.1.1 [MQTT-3.1.2-22] (5.0 allows a password alone).
        return Err(protocol("password without a user name"));
    }
    let keep_alive = r.u16()?;
    let mut props = ConnectProps::default();
    if version == V5 {
        let rep = read_block(r, allowed::CONNECT, false, |p| {
            match p {
                Prop::Four(id::SESSION_EXPIRY, v) => props.session_expiry = Some(v),
                Prop::Two(id::RECEIVE_MAXIMUM, v) => props.receive_maximum = Some(non_zero(v)?),
                Prop::Four(id::MAXIMUM_PACKET_SIZE, v) => {
                    props.maximum_packet_size = Some(non_zero(v)?)
                }
                Prop::Two(id::TOPIC_ALIAS_MAXIMUM, v) => props.topic_alias_maximum = Some(v),
                Prop::Byte(id::REQUEST_RESPONSE_INFO, v) => {
                    props.request_response_info = Some(flag(v)?)
                }
                Prop::Byte(id::REQUEST_PROBLEM_INFO, v) => {
                    props.request_problem_info = Some(flag(v)?)
                }
                Prop::Str(id::AUTH_METHOD, v) => props.auth_method = Some(v),
                Prop::Bin(id::AUTH_DATA, v) => props.auth_data = Some(v),
                _ => {}
            }
            Ok(())
        })?;
        props.user_properties = rep.user;
        if props.auth_data.is_some() && props.auth_method.is_none() {
            // 5.0 section 3.1.2.11.10.
            return Err(protocol("authentication data without a method"));
        }
    }
    let client_id = r.string()?;
    let will = if will_flag {
        let mut wp = WillProps::default();
        if version == V5 {
            let rep = read_block(r, allowed::WILL, false, |p| {
                match p {
                    Prop::Four(id::WILL_DELAY, v) => wp.delay_interval = Some(v),
                    Prop::Byte(id::PAYLOAD_FORMAT, v) => {
                        wp.payload_format = Some(payload_format(v)?)
                    }
                    Prop::Four(id::MESSAGE_EXPIRY, v) => wp.message_expiry = Some(v),
                    Prop::Str(id::CONTENT_TYPE, v) => wp.content_type = Some(v),
                    Prop::Str(id::RESPONSE_TOPIC, v) => wp.response_topic = Some(v),
                    Prop::Bin(id::CORRELATION_DATA, v) => wp.correlation_data = Some(v),
                    _ => {}
                }
                Ok(())
            })?;
            wp.user_properties = rep.user;
        }
        Some(Will {
            topic: r.string()?,
            payload: r.binary()?,
            qos: will_qos,
            retain: will_retain,
            props: wp,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        version,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        props,
    })
}

/// A CONNACK of a connection of version `v`.
pub(crate) fn connack<'a>(r: &mut Reader<'a>, v: Version) -> Result<ConnAck<'a>, DecodeError> {
    let ack_flags = r.u8()?;
    if ack_flags & 0xfe != 0 {
        // 3.1.1 section 3.2.2.1, 5.0 section 3.2.2.1.
        return Err(malformed("CONNACK reserved flags set"));
    }
    let session_present = ack_flags & 0x01 != 0;
    let raw = r.u8()?;
    let code = match v {
        V311 => {
            ReasonCode::from_connack_v311(raw).ok_or(protocol("reserved CONNACK return code"))?
        }
        V5 if ReasonCode(raw).allowed_in(2) => ReasonCode(raw),
        V5 => return Err(protocol("reason code not allowed in a CONNACK")),
    };
    if session_present && code.is_error() {
        // 3.1.1 [MQTT-3.2.2-4], 5.0 [MQTT-3.2.2-6].
        return Err(protocol("session present with a refused connection"));
    }
    let mut props = ConnAckProps::default();
    if v == V5 {
        let rep = read_block(r, allowed::CONNACK, false, |p| {
            match p {
                Prop::Four(id::SESSION_EXPIRY, v) => props.session_expiry = Some(v),
                Prop::Two(id::RECEIVE_MAXIMUM, v) => props.receive_maximum = Some(non_zero(v)?),
                Prop::Byte(id::MAXIMUM_QOS, v) => {
                    // 5.0 section 3.2.2.3.4: 0 or 1.
                    props.maximum_qos = Some(match v {
                        0 => QoS::AtMostOnce,
                        1 => QoS::AtLeastOnce,
                        _ => return Err(protocol("maximum QoS other than 0 or 1")),
                    })
                }
                Prop::Byte(id::RETAIN_AVAILABLE, v) => props.retain_available = Some(flag(v)?),
                Prop::Four(id::MAXIMUM_PACKET_SIZE, v) => {
                    props.maximum_packet_size = Some(non_zero(v)?)
                }
                Prop::Str(id::ASSIGNED_CLIENT_ID, v) => props.assigned_client_id = Some(v),
                Prop::Two(id::TOPIC_ALIAS_MAXIMUM, v) => props.topic_alias_maximum = Some(v),
                Prop::Str(id::REASON_STRING, v) => props.reason_string = Some(v),
                Prop::Byte(id::WILDCARD_SUB_AVAILABLE, v) => {
                    props.wildcard_sub_available = Some(flag(v)?)
                }
                Prop::Byte(id::SUB_ID_AVAILABLE, v) => props.sub_ids_available = Some(flag(v)?),
                Prop::Byte(id::SHARED_SUB_AVAILABLE, v) => {
                    props.shared_sub_available = Some(flag(v)?)
                }
                Prop::Two(id::SERVER_KEEP_ALIVE, v) => props.server_keep_alive = Some(v),
                Prop::Str(id::RESPONSE_INFO, v) => props.response_info = Some(v),
                Prop::Str(id::SERVER_REFERENCE, v) => props.server_reference = Some(v),
                Prop::Str(id::AUTH_METHOD, v) => props.auth_method = Some(v),
                Prop::Bin(id::AUTH_DATA, v) => props.auth_data = Some(v),
                _ => {}
            }
            Ok(())
        })?;
        props.user_properties = rep.user;
        if props.auth_data.is_some() && props.auth_method.is_none() {
            return Err(protocol("authentication data without a method"));
        }
    }
    Ok(ConnAck {
        session_present,
        code,
        props,
    })
}
