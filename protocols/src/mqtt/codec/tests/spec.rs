//! The examples the specifications give, byte for byte.

use super::super::wire::{read_varint, Sink, Varint};
use super::*;

/// 3.1.1 Table 2.4 / 5.0 Table 1-1: the sizes of the Remaining Length, at
/// both ends of each.
#[test]
fn remaining_length_table() {
    let table: [(u32, &[u8]); 8] = [
        (0, &[0x00]),
        (127, &[0x7f]),
        (128, &[0x80, 0x01]),
        (16_383, &[0xff, 0x7f]),
        (16_384, &[0x80, 0x80, 0x01]),
        (2_097_151, &[0xff, 0xff, 0x7f]),
        (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
        (268_435_455, &[0xff, 0xff, 0xff, 0x7f]),
    ];
    for (value, bytes) in table {
        let mut out = Vec::new();
        out.varint(value).unwrap();
        assert_eq!(out, bytes, "{value}");
        assert_eq!(
            read_varint(bytes),
            Varint::Value(value, bytes.len(), true),
            "{value}"
        );
        assert_eq!(super::super::wire::varint_len(value), bytes.len());
    }
    assert_eq!(Vec::new().varint(268_435_456), Err(EncodeError::TooLarge));
    assert_eq!(read_varint(&[0xff, 0xff, 0xff, 0xff]), Varint::TooLong);
    assert_eq!(read_varint(&[0xff, 0xff, 0xff]), Varint::Incomplete);
    // 5.0 [MQTT-1.5.5-1]: 0x80 0x00 is 0 in two bytes, not the shortest.
    assert_eq!(read_varint(&[0x80, 0x00]), Varint::Value(0, 2, false));
}

/// 3.1.1 section 1.5.3 / 5.0 section 1.5.4, "UTF-8 Encoded String
/// non-normative example": "A𪛔" is 0x00 0x05 0x41 0xF0 0xAA 0x9B 0x94.
#[test]
fn utf8_string_example() {
    let bytes = [0x00, 0x05, 0x41, 0xf0, 0xaa, 0x9b, 0x94];
    let mut out = Vec::new();
    out.string("A\u{2A6D4}").unwrap();
    assert_eq!(out, bytes);
    // As a PUBLISH topic.
    let pkt = cat(&[&[0x30, 7], &bytes]);
    let Packet::Publish(p) = decode_ok(&pkt, Some(Version::V311)) else {
        panic!()
    };
    assert_eq!(p.topic, "A\u{2A6D4}");
}

/// 3.1.1 Figure 3.6 / 5.0 Figure 3-6: the CONNECT variable header example
/// (protocol "MQTT", user name, password, will QoS 1, will flag, clean
/// start, keep alive 10; 5.0 adds Session Expiry Interval 10).
#[test]
fn connect_variable_header_examples() {
    let payload = cat(&[&s(b"id"), &s(b"w"), &s(b"m"), &s(b"u"), &s(b"p")]);
    let v311 = cat(&[
        &[0x10, 10 + payload.len() as u8],
        &[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xce, 0x00, 0x0a],
        &payload,
    ]);
    let Packet::Connect(c) = decode_ok(&v311, None) else {
        panic!()
    };
    let will = c.will.unwrap();
    assert_eq!(
        (c.version, c.clean_start, c.keep_alive, c.client_id),
        (Version::V311, true, 10, "id")
    );
    assert_eq!(
        (will.qos, will.retain, will.topic, will.payload),
        (QoS::AtLeastOnce, false, "w", &b"m"[..])
    );
    assert_eq!((c.username, c.password), (Some("u"), Some(&b"p"[..])));

    let v5 = cat(&[
        &[0x10, 16 + payload.len() as u8 + 1],
        &[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0xce, 0x00, 0x0a],
        &[0x05, 0x11, 0x00, 0x00, 0x00, 0x0a],
        &s(b"id"),
        &[0x00],
        &payload[4..],
    ]);
    let Packet::Connect(c) = decode_ok(&v5, None) else {
        panic!()
    };
    assert_eq!((c.version, c.props.session_expiry), (Version::V5, Some(10)));
    assert_eq!(c.will.unwrap().props, WillProps::default());
}

/// 3.1.1 Figure 3.11 / 5.0 Figure 3-9: the PUBLISH variable header example
/// (topic "a/b", packet identifier 10; 5.0 adds a property length of 0).
#[test]
fn publish_variable_header_examples() {
    let v311 = [0x32, 7, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0a];
    let Packet::Publish(p) = decode_ok(&v311, Some(Version::V311)) else {
        panic!()
    };
    assert_eq!((p.topic, p.packet_id, p.payload), ("a/b", 10, &[][..]));
    let v5 = [0x32, 8, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0a, 0x00];
    let Packet::Publish(p) = decode_ok(&v5, Some(Version::V5)) else {
        panic!()
    };
    assert_eq!(
        (p.topic, p.packet_id, p.props),
        ("a/b", 10, Default::default())
    );
}

/// 3.1.1 Figure 3.22 / 5.0 Figure 3-21: the SUBSCRIBE payload example
/// ("a/b" at QoS 1, "c/d" at QoS 2), and 3.1.1 Figure 3.26: the SUBACK
/// payload example (0x00, 0x01, 0x02, 0x80).
#[test]
fn subscribe_and_suback_examples() {
    let sub = cat(&[
        &[0x82, 14, 0x00, 0x0a],
        &[0x00, 0x03, b'a', b'/', b'b', 0x01],
        &[0x00, 0x03, b'c', b'/', b'd', 0x02],
    ]);
    let Packet::Subscribe(s) = decode_ok(&sub, Some(Version::V311)) else {
        panic!()
    };
    assert_eq!(
        s.filters,
        [
            ("a/b", SubOptions::qos(QoS::AtLeastOnce)),
            ("c/d", SubOptions::qos(QoS::ExactlyOnce))
        ]
    );
    let ack = [0x90, 6, 0x00, 0x0a, 0x00, 0x01, 0x02, 0x80];
    let Packet::SubAck(a) = decode_ok(&ack, Some(Version::V311)) else {
        panic!()
    };
    assert_eq!(
        a.codes,
        [
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::GRANTED_QOS_2,
            ReasonCode::UNSPECIFIED_ERROR
        ]
    );
}

/// 3.1.1 Figure 3.30 / 5.0 Figure 3-29: the UNSUBSCRIBE payload example.
#[test]
fn unsubscribe_example() {
    let un = cat(&[
        &[0xa2, 12, 0x00, 0x0a],
        &[0x00, 0x03, b'a', b'/', b'b'],
        &[0x00, 0x03, b'c', b'/', b'd'],
    ]);
    let Packet::Unsubscribe(u) = decode_ok(&un, Some(Version::V311)) else {
        panic!()
    };
    assert_eq!((u.packet_id, u.filters), (10, vec!["a/b", "c/d"]));
}

/// The reason codes' 3.1.1 mappings and the errors' reason codes.
#[test]
fn reason_code_mappings() {
    let connack = [
        (ReasonCode::SUCCESS, 0),
        (ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, 1),
        (ReasonCode::CLIENT_ID_NOT_VALID, 2),
        (ReasonCode::SERVER_UNAVAILABLE, 3),
        (ReasonCode::SERVER_BUSY, 3),
        (ReasonCode::BAD_USERNAME_OR_PASSWORD, 4),
        (ReasonCode::NOT_AUTHORIZED, 5),
        (ReasonCode::BANNED, 5),
    ];
    for (code, rc) in connack {
        assert_eq!(code.connack_v311(), rc, "{code:?}");
    }
    for rc in 0..=5 {
        assert_eq!(
            ReasonCode::from_connack_v311(rc).unwrap().connack_v311(),
            rc
        );
    }
    assert_eq!(ReasonCode::from_connack_v311(6), None);
    assert_eq!(ReasonCode::GRANTED_QOS_2.suback_v311(), 2);
    assert_eq!(ReasonCode::TOPIC_FILTER_INVALID.suback_v311(), 0x80);
    assert_eq!(DecodeError::TooLarge { len: 9 }.reason(), ReasonCode(0x95));
    assert_eq!(DecodeError::Malformed("x").reason(), ReasonCode(0x81));
    assert_eq!(DecodeError::Protocol("x").reason(), ReasonCode(0x82));
    assert_eq!(
        DecodeError::UnsupportedVersion(3).reason(),
        ReasonCode(0x84)
    );
    assert!(ReasonCode::UNSPECIFIED_ERROR.is_error());
    assert!(!ReasonCode::NO_MATCHING_SUBSCRIBERS.is_error());
}
