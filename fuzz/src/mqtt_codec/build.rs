//! Valid packets built from fuzzer bytes, for the other direction of the
//! round trip: every packet the specs allow encodes, and decodes back to
//! itself. The reason-code tables here are the specs' (5.0 sections
//! 3.2.2.2, 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1, 3.9.3, 3.11.3, 3.14.2.1,
//! 3.15.2.1), written apart from the codec's.

use ringport_protocols::mqtt::codec::{
    AckProps, Auth, ConnAck, ConnAckProps, Connect, ConnectProps, Disconnect, Packet, PubResp,
    Publish, PublishProps, QoS, ReasonCode, SubAck, SubIds, SubOptions, Subscribe, UnsubAck,
    Unsubscribe, UserProps, Version, Will, WillProps,
};

use crate::Input;

/// Topic names: no wildcard, not empty.
const TOPICS: &[&str] = &[
    "a",
    "a/b",
    "/",
    "sport/tennis/player1",
    "é/\u{2A6D4}",
    "$SYS/x",
    " ",
];
/// Topic filters (the codec leaves their syntax to the topic module).
const FILTERS: &[&str] = &["a/b", "a/+", "#", "+/+/#", "$share/g/a", "é", "a//b"];
/// Other strings, empty ones included.
const WORDS: &[&str] = &["", "k", "v", "client-1", "text/plain", "\u{7f}", "ü€"];
/// User properties, names repeating.
const PAIRS: &[(&str, &str)] = &[("k", "v"), ("k", "w"), ("", ""), ("région", "€")];

const CONNACK: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8c, 0x90, 0x95, 0x97,
    0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9f,
];
const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL: &[u8] = &[0x00, 0x92];
const SUBACK: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2,
];
const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8f, 0x91];
const DISCONNECT: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8b, 0x8d, 0x8e, 0x8f, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f, 0xa0, 0xa1, 0xa2,
];
const AUTH: &[u8] = &[0x00, 0x18, 0x19];
/// 3.1.1 CONNACK return codes 0 to 5 as the 5.0 codes they decode to.
const CONNACK_V311: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
const SUBACK_V311: &[u8] = &[0x00, 0x01, 0x02, 0x80];

fn pick<T: Copy>(input: &mut Input<'_>, from: &[T]) -> T {
    from[usize::from(input.u8()) % from.len()]
}

fn code(input: &mut Input<'_>, from: &[u8]) -> ReasonCode {
    ReasonCode(pick(input, from))
}

/// `Some` when the next byte is odd.
fn maybe<'a, T>(input: &mut Input<'a>, f: impl FnOnce(&mut Input<'a>) -> T) -> Option<T> {
    if input.u8() & 1 == 1 {
        Some(f(input))
    } else {
        None
    }
}

fn non_zero_u16(input: &mut Input<'_>) -> u16 {
    input.u16().max(1)
}

fn non_zero_u32(input: &mut Input<'_>) -> u32 {
    input.u32().max(1)
}

fn word(input: &mut Input<'_>) -> &'static str {
    pick(input, WORDS)
}

fn qos(input: &mut Input<'_>) -> QoS {
    pick(
        input,
        &[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce],
    )
}

fn user<'a>(input: &mut Input<'_>) -> UserProps<'a> {
    let n = usize::from(input.u8() % 4);
    let start = usize::from(input.u8()) % PAIRS.len();
    UserProps::Pairs(&PAIRS[start..(start + n).min(PAIRS.len())])
}

fn ack_props<'a>(input: &mut Input<'_>, v: Version) -> AckProps<'a> {
    if v == Version::V311 {
        return AckProps::default();
    }
    AckProps {
        reason_string: maybe(input, word),
        user_properties: user(input),
    }
}

/// A valid packet for a connection of version `v`, made from the input;
/// `ids` holds Subscription Identifiers for a PUBLISH to borrow.
pub(crate) fn packet<'a>(input: &mut Input<'a>, v: Version, ids: &'a [u32]) -> Packet<'a> {
    let v5 = v == Version::V5;
    match input.u8() % 15 {
        0 => Packet::Connect(connect(input, v)),
        1 => {
            let code = code(input, if v5 { CONNACK } else { CONNACK_V311 });
            let props = if v5 {
                ConnAckProps {
                    session_expiry: maybe(input, Input::u32),
                    receive_maximum: maybe(input, non_zero_u16),
                    maximum_qos: maybe(input, |i| pick(i, &[QoS::AtMostOnce, QoS::AtLeastOnce])),
                    retain_available: maybe(input, |i| i.u8() & 2 != 0),
                    maximum_packet_size: maybe(input, non_zero_u32),
                    assigned_client_id: maybe(input, word),
                    topic_alias_maximum: maybe(input, Input::u16),
                    reason_string: maybe(input, word),
                    user_properties: user(input),
                    wildcard_sub_available: maybe(input, |i| i.u8() & 2 != 0),
                    sub_ids_available: maybe(input, |i| i.u8() & 2 != 0),
                    shared_sub_available: maybe(input, |i| i.u8() & 2 != 0),
                    server_keep_alive: maybe(input, Input::u16),
                    response_info: maybe(input, word),
                    server_reference: maybe(input, word),
                    auth_method: None,
                    auth_data: None,
                }
            } else {
                ConnAckProps::default()
            };
            let mut props = props;
            if v5 {
                props.auth_method = maybe(input, word);
                if props.auth_method.is_some() {
                    props.auth_data = maybe(input, Input::chunk);
                }
            }
            Packet::ConnAck(ConnAck {
                session_present: !code.is_error() && input.u8() & 1 == 1,
                code,
                props,
            })
        }
        2 => Packet::Publish(publish(input, v, ids)),
        n @ 3..=6 => {
            let table = if n < 5 { PUBACK } else { PUBREL };
            let r = PubResp {
                packet_id: non_zero_u16(input),
                code: if v5 {
                    code(input, table)
                } else {
                    ReasonCode::SUCCESS
                },
                props: ack_props(input, v),
            };
            match n {
                3 => Packet::PubAck(r),
                4 => Packet::PubRec(r),
                5 => Packet::PubRel(r),
                _ => Packet::PubComp(r),
            }
        }
        7 => {
            let mut filters = Vec::new();
            for _ in 0..=input.u8() % 4 {
                let filter = pick(input, FILTERS);
                let o = input.u8();
                let opts = if v5 {
                    SubOptions {
                        qos: qos(input),
                        no_local: o & 1 != 0 && !filter.starts_with("$share/"),
                        retain_as_published: o & 2 != 0,
                        retain_handling: (o >> 2) % 3,
                    }
                } else {
                    SubOptions::qos(qos(input))
                };
                filters.push((filter, opts));
            }
            Packet::Subscribe(Subscribe {
                packet_id: non_zero_u16(input),
                subscription_id: if v5 {
                    maybe(input, |i| i.u32() % 268_435_455 + 1)
                } else {
                    None
                },
                user_properties: if v5 {
                    user(input)
                } else {
                    UserProps::default()
                },
                filters,
            })
        }
        8 => Packet::SubAck(SubAck {
            packet_id: non_zero_u16(input),
            props: ack_props(input, v),
            codes: (0..=input.u8() % 4)
                .map(|_| code(input, if v5 { SUBACK } else { SUBACK_V311 }))
                .collect(),
        }),
        9 => Packet::Unsubscribe(Unsubscribe {
            packet_id: non_zero_u16(input),
            user_properties: if v5 {
                user(input)
            } else {
                UserProps::default()
            },
            filters: (0..=input.u8() % 4).map(|_| pick(input, FILTERS)).collect(),
        }),
        10 => Packet::UnsubAck(UnsubAck {
            packet_id: non_zero_u16(input),
            props: ack_props(input, v),
            codes: if v5 {
                (0..=input.u8() % 4)
                    .map(|_| code(input, UNSUBACK))
                    .collect()
            } else {
                Vec::new()
            },
        }),
        11 => Packet::PingReq,
        12 => Packet::PingResp,
        13 if v5 => Packet::Disconnect(Disconnect {
            code: code(input, DISCONNECT),
            session_expiry: maybe(input, Input::u32),
            reason_string: maybe(input, word),
            user_properties: user(input),
            server_reference: maybe(input, word),
        }),
        13 => Packet::Disconnect(Disconnect::default()),
        _ if v5 => {
            let auth_method = maybe(input, word);
            Packet::Auth(Auth {
                code: code(input, AUTH),
                auth_method,
                auth_data: auth_method.and_then(|_| maybe(input, Input::chunk)),
                reason_string: maybe(input, word),
                user_properties: user(input),
            })
        }
        _ => Packet::PingReq,
    }
}

fn connect<'a>(input: &mut Input<'a>, v: Version) -> Connect<'a> {
    let v5 = v == Version::V5;
    let will = maybe(input, |i| Will {
        topic: pick(i, TOPICS),
        payload: i.chunk(),
        qos: qos(i),
        retain: i.u8() & 1 != 0,
        props: if v5 {
            WillProps {
                delay_interval: maybe(i, Input::u32),
                payload_format: maybe(i, |i| i.u8() & 1),
                message_expiry: maybe(i, Input::u32),
                content_type: maybe(i, word),
                response_topic: maybe(i, |i| pick(i, TOPICS)),
                correlation_data: maybe(i, Input::chunk),
                user_properties: user(i),
            }
        } else {
            WillProps::default()
        },
    });
    let username = maybe(input, word);
    let password = if v5 || username.is_some() {
        maybe(input, Input::chunk)
    } else {
        None
    };
    let mut props = ConnectProps::default();
    if v5 {
        props = ConnectProps {
            session_expiry: maybe(input, Input::u32),
            receive_maximum: maybe(input, non_zero_u16),
            maximum_packet_size: maybe(input, non_zero_u32),
            topic_alias_maximum: maybe(input, Input::u16),
            request_response_info: maybe(input, |i| i.u8() & 2 != 0),
            request_problem_info: maybe(input, |i| i.u8() & 2 != 0),
            user_properties: user(input),
            auth_method: maybe(input, word),
            auth_data: None,
        };
        if props.auth_method.is_some() {
            props.auth_data = maybe(input, Input::chunk);
        }
    }
    Connect {
        version: v,
        clean_start: input.u8() & 1 != 0,
        keep_alive: input.u16(),
        client_id: word(input),
        will,
        username,
        password,
        props,
    }
}

fn publish<'a>(input: &mut Input<'a>, v: Version, ids: &'a [u32]) -> Publish<'a> {
    let v5 = v == Version::V5;
    let qos = qos(input);
    let mut props = PublishProps::default();
    if v5 {
        props = PublishProps {
            payload_format: maybe(input, |i| i.u8() & 1),
            message_expiry: maybe(input, Input::u32),
            topic_alias: maybe(input, non_zero_u16),
            response_topic: maybe(input, |i| pick(i, TOPICS)),
            correlation_data: maybe(input, Input::chunk),
            user_properties: user(input),
            subscription_ids: SubIds::List(&ids[..usize::from(input.u8()) % (ids.len() + 1)]),
            content_type: maybe(input, word),
        };
    }
    let empty_topic = props.topic_alias.is_some() && input.u8() & 1 == 1;
    Publish {
        dup: qos != QoS::AtMostOnce && input.u8() & 1 == 1,
        qos,
        retain: input.u8() & 1 == 1,
        topic: if empty_topic { "" } else { pick(input, TOPICS) },
        packet_id: if qos == QoS::AtMostOnce {
            0
        } else {
            non_zero_u16(input)
        },
        props,
        payload: input.chunk(),
    }
}
