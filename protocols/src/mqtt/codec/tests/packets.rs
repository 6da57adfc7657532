//! Every packet type in both versions: exact bytes, both ways.

use super::*;
use Version::{V311, V5};

const KV: &[(&str, &str)] = &[("k", "v")];
/// The User Property ("k", "v") encoded.
const KV_BYTES: &[u8] = &[0x26, 0, 1, b'k', 0, 1, b'v'];

fn connect<'a>(version: Version) -> Connect<'a> {
    Connect {
        version,
        clean_start: true,
        keep_alive: 60,
        client_id: "c",
        will: None,
        username: None,
        password: None,
        props: ConnectProps::default(),
    }
}

fn resp<'a>(packet_id: u16, code: u8) -> PubResp<'a> {
    PubResp {
        packet_id,
        code: ReasonCode(code),
        props: AckProps::default(),
    }
}

#[test]
fn connect_v311() {
    check(
        &Packet::Connect(connect(V311)),
        V311,
        &[
            0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c',
        ],
    );
    let full = Connect {
        will: Some(Will {
            topic: "w",
            payload: b"m",
            qos: QoS::AtLeastOnce,
            retain: true,
            props: WillProps::default(),
        }),
        username: Some("u"),
        password: Some(b"p"),
        ..connect(V311)
    };
    check(
        &Packet::Connect(full),
        V311,
        &cat(&[
            &[0x10, 0x19],
            &s(b"MQTT"),
            &[4, 0xee, 0, 60],
            &s(b"c"),
            &s(b"w"),
            &s(b"m"),
            &s(b"u"),
            &s(b"p"),
        ]),
    );
}

#[test]
fn connect_v5() {
    check(
        &Packet::Connect(connect(V5)),
        V5,
        &[
            0x10, 0x0e, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'c',
        ],
    );
    let full = Connect {
        version: V5,
        clean_start: false,
        keep_alive: 10,
        client_id: "",
        will: Some(Will {
            topic: "w",
            payload: b"m",
            qos: QoS::ExactlyOnce,
            retain: false,
            props: WillProps {
                delay_interval: Some(5),
                payload_format: Some(1),
                message_expiry: Some(60),
                content_type: Some("t"),
                response_topic: Some("r"),
                correlation_data: Some(b"x"),
                user_properties: UserProps::Pairs(&[("a", "b")]),
            },
        }),
        username: Some("u"),
        password: Some(b"p"),
        props: ConnectProps {
            session_expiry: Some(10),
            receive_maximum: Some(20),
            maximum_packet_size: Some(1024),
            topic_alias_maximum: Some(5),
            request_response_info: Some(true),
            request_problem_info: Some(false),
            user_properties: UserProps::Pairs(KV),
            auth_method: Some("m"),
            auth_data: Some(b"d"),
        },
    };
    check(
        &Packet::Connect(full),
        V5,
        &cat(&[
            &[0x10, 0x5c],
            &s(b"MQTT"),
            &[5, 0xd4, 0, 10],
            &[35, 0x11, 0, 0, 0, 10, 0x21, 0, 20, 0x27, 0, 0, 4, 0],
            &[0x22, 0, 5, 0x19, 1, 0x17, 0],
            KV_BYTES,
            &[0x15, 0, 1, b'm', 0x16, 0, 1, b'd'],
            &s(b""),
            &[31, 0x18, 0, 0, 0, 5, 0x01, 1, 0x02, 0, 0, 0, 60],
            &[0x03, 0, 1, b't', 0x08, 0, 1, b'r', 0x09, 0, 1, b'x'],
            &[0x26, 0, 1, b'a', 0, 1, b'b'],
            &s(b"w"),
            &s(b"m"),
            &s(b"u"),
            &s(b"p"),
        ]),
    );
}

#[test]
fn connack_both_versions() {
    let accepted = ConnAck {
        session_present: true,
        code: ReasonCode::SUCCESS,
        props: ConnAckProps::default(),
    };
    check(&Packet::ConnAck(accepted), V311, &[0x20, 2, 1, 0]);
    check(&Packet::ConnAck(accepted), V5, &[0x20, 3, 1, 0, 0]);
    let refused = ConnAck {
        session_present: false,
        code: ReasonCode::NOT_AUTHORIZED,
        props: ConnAckProps::default(),
    };
    check(&Packet::ConnAck(refused), V311, &[0x20, 2, 0, 5]);
    check(&Packet::ConnAck(refused), V5, &[0x20, 3, 0, 0x87, 0]);
    let full = ConnAck {
        session_present: false,
        code: ReasonCode::SUCCESS,
        props: ConnAckProps {
            session_expiry: Some(10),
            receive_maximum: Some(20),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            maximum_packet_size: Some(1024),
            assigned_client_id: Some("i"),
            topic_alias_maximum: Some(5),
            reason_string: Some("s"),
            user_properties: UserProps::Pairs(KV),
            wildcard_sub_available: Some(true),
            sub_ids_available: Some(false),
            shared_sub_available: Some(true),
            server_keep_alive: Some(30),
            response_info: Some("r"),
            server_reference: Some("o"),
            auth_method: Some("m"),
            auth_data: Some(b"d"),
        },
    };
    check(
        &Packet::ConnAck(full),
        V5,
        &cat(&[
            &[0x20, 63, 0, 0, 60],
            &[0x11, 0, 0, 0, 10, 0x21, 0, 20, 0x24, 1, 0x25, 0],
            &[0x27, 0, 0, 4, 0, 0x12, 0, 1, b'i', 0x22, 0, 5],
            &[0x1f, 0, 1, b's'],
            KV_BYTES,
            &[0x28, 1, 0x29, 0, 0x2a, 1, 0x13, 0, 30],
            &[0x1a, 0, 1, b'r', 0x1c, 0, 1, b'o'],
            &[0x15, 0, 1, b'm', 0x16, 0, 1, b'd'],
        ]),
    );
}

fn publish<'a>(qos: QoS, packet_id: u16) -> Publish<'a> {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: "a/b",
        packet_id,
        props: PublishProps::default(),
        payload: b"hi",
    }
}

#[test]
fn publish_v311() {
    let p = publish(QoS::AtMostOnce, 0);
    check(
        &Packet::Publish(p),
        V311,
        &[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'],
    );
    let p = Publish {
        dup: true,
        retain: true,
        ..publish(QoS::AtLeastOnce, 10)
    };
    check(
        &Packet::Publish(p),
        V311,
        &[0x3b, 9, 0, 3, b'a', b'/', b'b', 0, 10, b'h', b'i'],
    );
    let p = publish(QoS::ExactlyOnce, 0xffff);
    check(
        &Packet::Publish(p),
        V311,
        &[0x34, 9, 0, 3, b'a', b'/', b'b', 0xff, 0xff, b'h', b'i'],
    );
    // A two-byte remaining length: 205 = 0x4d + 1 * 128.
    let big = [7u8; 200];
    let p = Publish {
        payload: &big,
        ..publish(QoS::AtMostOnce, 0)
    };
    check(
        &Packet::Publish(p),
        V311,
        &cat(&[&[0x30, 0xcd, 0x01], &s(b"a/b"), &big]),
    );
}

#[test]
fn publish_v5() {
    check(
        &Packet::Publish(publish(QoS::AtMostOnce, 0)),
        V5,
        &[0x30, 8, 0, 3, b'a', b'/', b'b', 0, b'h', b'i'],
    );
    let p = Publish {
        props: PublishProps {
            payload_format: Some(1),
            message_expiry: Some(60),
            topic_alias: Some(3),
            response_topic: Some("r"),
            correlation_data: Some(b"x"),
            user_properties: UserProps::Pairs(KV),
            subscription_ids: SubIds::List(&[1, 300]),
            content_type: Some("t"),
        },
        ..publish(QoS::AtLeastOnce, 10)
    };
    check(
        &Packet::Publish(p),
        V5,
        &cat(&[
            &[0x32, 44],
            &s(b"a/b"),
            &[0, 10, 34, 0x01, 1, 0x02, 0, 0, 0, 60, 0x23, 0, 3],
            &[0x08, 0, 1, b'r', 0x09, 0, 1, b'x'],
            KV_BYTES,
            &[0x0b, 1, 0x0b, 0xac, 0x02, 0x03, 0, 1, b't'],
            b"hi",
        ]),
    );
    // An empty topic with a topic alias (5.0 section 3.3.2.1).
    let p = Publish {
        topic: "",
        props: PublishProps {
            topic_alias: Some(7),
            ..PublishProps::default()
        },
        ..publish(QoS::AtMostOnce, 0)
    };
    check(
        &Packet::Publish(p),
        V5,
        &[0x30, 8, 0, 0, 3, 0x23, 0, 7, b'h', b'i'],
    );
}

#[test]
fn publish_responses_v311() {
    for (first, make) in [
        (
            0x40,
            Packet::PubAck as fn(PubResp<'static>) -> Packet<'static>,
        ),
        (0x50, Packet::PubRec),
        (0x62, Packet::PubRel),
        (0x70, Packet::PubComp),
    ] {
        check(&make(resp(10, 0)), V311, &[first, 2, 0, 10]);
    }
}

#[test]
fn publish_responses_v5() {
    check(&Packet::PubAck(resp(10, 0)), V5, &[0x40, 2, 0, 10]);
    check(&Packet::PubAck(resp(10, 0x10)), V5, &[0x40, 3, 0, 10, 0x10]);
    check(&Packet::PubRec(resp(10, 0x80)), V5, &[0x50, 3, 0, 10, 0x80]);
    check(&Packet::PubRel(resp(10, 0x92)), V5, &[0x62, 3, 0, 10, 0x92]);
    check(&Packet::PubComp(resp(10, 0)), V5, &[0x70, 2, 0, 10]);
    let with_props = PubResp {
        props: AckProps {
            reason_string: Some("no"),
            user_properties: UserProps::default(),
        },
        ..resp(10, 0x10)
    };
    check(
        &Packet::PubAck(with_props),
        V5,
        &[0x40, 9, 0, 10, 0x10, 5, 0x1f, 0, 2, b'n', b'o'],
    );
    // Success with properties keeps its code byte.
    let success_props = PubResp {
        props: AckProps {
            reason_string: None,
            user_properties: UserProps::Pairs(KV),
        },
        ..resp(10, 0)
    };
    check(
        &Packet::PubComp(success_props),
        V5,
        &cat(&[&[0x70, 11, 0, 10, 0, 7], KV_BYTES]),
    );
}

#[test]
fn subscribe_both_versions() {
    let sub = Subscribe {
        packet_id: 10,
        subscription_id: None,
        user_properties: UserProps::default(),
        filters: vec![
            ("a/b", SubOptions::qos(QoS::AtLeastOnce)),
            ("c/d", SubOptions::qos(QoS::ExactlyOnce)),
        ],
    };
    let filters = cat(&[&s(b"a/b"), &[1], &s(b"c/d"), &[2]]);
    check(
        &Packet::Subscribe(sub.clone()),
        V311,
        &cat(&[&[0x82, 14, 0, 10], &filters]),
    );
    check(
        &Packet::Subscribe(sub),
        V5,
        &cat(&[&[0x82, 15, 0, 10, 0], &filters]),
    );
    let full = Subscribe {
        packet_id: 10,
        subscription_id: Some(5),
        user_properties: UserProps::Pairs(KV),
        filters: vec![
            (
                "a/b",
                SubOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: 2,
                },
            ),
            ("c/d", SubOptions::qos(QoS::ExactlyOnce)),
        ],
    };
    check(
        &Packet::Subscribe(full),
        V5,
        &cat(&[
            &[0x82, 24, 0, 10, 9, 0x0b, 5],
            KV_BYTES,
            &s(b"a/b"),
            &[0x2d],
            &s(b"c/d"),
            &[2],
        ]),
    );
}

#[test]
fn suback_both_versions() {
    let codes = vec![
        ReasonCode::GRANTED_QOS_0,
        ReasonCode::GRANTED_QOS_1,
        ReasonCode::GRANTED_QOS_2,
        ReasonCode::UNSPECIFIED_ERROR,
    ];
    let ack = SubAck {
        packet_id: 10,
        props: AckProps::default(),
        codes,
    };
    check(
        &Packet::SubAck(ack.clone()),
        V311,
        &[0x90, 6, 0, 10, 0, 1, 2, 0x80],
    );
    let mut v5 = ack;
    v5.codes.push(ReasonCode::WILDCARD_SUBS_NOT_SUPPORTED);
    check(
        &Packet::SubAck(v5),
        V5,
        &[0x90, 8, 0, 10, 0, 0, 1, 2, 0x80, 0xa2],
    );
}

#[test]
fn unsubscribe_both_versions() {
    let u = Unsubscribe {
        packet_id: 10,
        user_properties: UserProps::default(),
        filters: vec!["a/b", "c/d"],
    };
    let filters = cat(&[&s(b"a/b"), &s(b"c/d")]);
    check(
        &Packet::Unsubscribe(u.clone()),
        V311,
        &cat(&[&[0xa2, 12, 0, 10], &filters]),
    );
    check(
        &Packet::Unsubscribe(u.clone()),
        V5,
        &cat(&[&[0xa2, 13, 0, 10, 0], &filters]),
    );
    let with_props = Unsubscribe {
        user_properties: UserProps::Pairs(KV),
        ..u
    };
    check(
        &Packet::Unsubscribe(with_props),
        V5,
        &cat(&[&[0xa2, 20, 0, 10, 7], KV_BYTES, &filters]),
    );
}

#[test]
fn unsuback_both_versions() {
    let v311 = UnsubAck {
        packet_id: 10,
        props: AckProps::default(),
        codes: vec![],
    };
    check(&Packet::UnsubAck(v311), V311, &[0xb0, 2, 0, 10]);
    let v5 = UnsubAck {
        packet_id: 10,
        props: AckProps {
            reason_string: Some("x"),
            user_properties: UserProps::default(),
        },
        codes: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
    };
    check(
        &Packet::UnsubAck(v5),
        V5,
        &[0xb0, 9, 0, 10, 4, 0x1f, 0, 1, b'x', 0, 0x11],
    );
}

#[test]
fn ping_both_versions() {
    for v in [V311, V5] {
        check(&Packet::PingReq, v, &[0xc0, 0]);
        check(&Packet::PingResp, v, &[0xd0, 0]);
    }
}

#[test]
fn disconnect_both_versions() {
    let normal = Disconnect::default();
    check(&Packet::Disconnect(normal), V311, &[0xe0, 0]);
    check(&Packet::Disconnect(normal), V5, &[0xe0, 0]);
    let will = Disconnect {
        code: ReasonCode::DISCONNECT_WITH_WILL,
        ..normal
    };
    check(&Packet::Disconnect(will), V5, &[0xe0, 1, 0x04]);
    let full = Disconnect {
        code: ReasonCode::SESSION_TAKEN_OVER,
        session_expiry: Some(0),
        reason_string: Some("x"),
        user_properties: UserProps::Pairs(KV),
        server_reference: Some("o"),
    };
    check(
        &Packet::Disconnect(full),
        V5,
        &cat(&[
            &[0xe0, 22, 0x8e, 20, 0x11, 0, 0, 0, 0, 0x1f, 0, 1, b'x'],
            KV_BYTES,
            &[0x1c, 0, 1, b'o'],
        ]),
    );
}

#[test]
fn auth_v5() {
    let success = Auth {
        code: ReasonCode::SUCCESS,
        auth_method: None,
        auth_data: None,
        reason_string: None,
        user_properties: UserProps::default(),
    };
    check(&Packet::Auth(success), V5, &[0xf0, 0]);
    let reauth = Auth {
        code: ReasonCode::RE_AUTHENTICATE,
        ..success
    };
    check(&Packet::Auth(reauth), V5, &[0xf0, 2, 0x19, 0]);
    let cont = Auth {
        code: ReasonCode::CONTINUE_AUTHENTICATION,
        auth_method: Some("m"),
        auth_data: Some(b"d"),
        reason_string: Some("r"),
        user_properties: UserProps::Pairs(KV),
    };
    check(
        &Packet::Auth(cont),
        V5,
        &cat(&[
            &[0xf0, 21, 0x18, 19, 0x15, 0, 1, b'm', 0x16, 0, 1, b'd'],
            &[0x1f, 0, 1, b'r'],
            KV_BYTES,
        ]),
    );
    assert_eq!(
        encode(&Packet::Auth(success), V311, &mut Vec::new()),
        Err(EncodeError::Unsupported)
    );
}

/// What 3.1.1 cannot say is left out or mapped to its nearest code.
#[test]
fn v311_encodings_drop_what_the_version_lacks() {
    let enc = |p: &Packet<'_>| {
        let mut out = Vec::new();
        encode(p, V311, &mut out).unwrap();
        out
    };
    let banned = ConnAck {
        session_present: false,
        code: ReasonCode::BANNED,
        props: ConnAckProps {
            reason_string: Some("no"),
            ..ConnAckProps::default()
        },
    };
    assert_eq!(enc(&Packet::ConnAck(banned)), [0x20, 2, 0, 5]);
    assert_eq!(enc(&Packet::PubAck(resp(3, 0x80))), [0x40, 2, 0, 3]);
    let ack = SubAck {
        packet_id: 3,
        props: AckProps::default(),
        codes: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::QUOTA_EXCEEDED],
    };
    assert_eq!(enc(&Packet::SubAck(ack)), [0x90, 4, 0, 3, 1, 0x80]);
    let un = UnsubAck {
        packet_id: 3,
        props: AckProps::default(),
        codes: vec![ReasonCode::NO_SUBSCRIPTION_EXISTED],
    };
    assert_eq!(enc(&Packet::UnsubAck(un)), [0xb0, 2, 0, 3]);
    let d = Disconnect {
        code: ReasonCode::SERVER_SHUTTING_DOWN,
        reason_string: Some("bye"),
        ..Disconnect::default()
    };
    assert_eq!(enc(&Packet::Disconnect(d)), [0xe0, 0]);
    let p = Publish {
        props: PublishProps {
            topic_alias: Some(1),
            ..PublishProps::default()
        },
        ..publish(QoS::AtMostOnce, 0)
    };
    assert_eq!(
        enc(&Packet::Publish(p)),
        [0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i']
    );
    // A CONNECT is encoded in its own version, whatever the connection's.
    let mut out = Vec::new();
    encode(&Packet::Connect(connect(V5)), V311, &mut out).unwrap();
    assert_eq!(out[8], 5);
}
