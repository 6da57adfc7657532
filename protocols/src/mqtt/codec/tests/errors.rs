//! One test per refusal outside properties: the rule in the name, the
//! exact error in the assertion.

use super::*;
use DecodeError::{Malformed, Protocol};
use Version::{V311, V5};

const V3: Option<Version> = Some(V311);
const V5S: Option<Version> = Some(V5);

/// A CONNECT with these flags and fields after the keep alive.
fn connect(level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    packet(0x10, &cat(&[&s(b"MQTT"), &[level, flags, 0, 60], rest]))
}

#[test]
fn reserved_packet_type_0_is_malformed() {
    for v in [None, V3, V5S] {
        assert_eq!(
            decode_err(&[0x00, 0x00], v),
            Malformed("reserved packet type 0")
        );
    }
}

#[test]
fn reserved_fixed_header_flags_are_malformed() {
    for first in [
        0x11, 0x28, 0x41, 0x60, 0x63, 0x80, 0xa0, 0xc1, 0xd8, 0xe2, 0xf4,
    ] {
        let v = if first >> 4 == 1 { None } else { V5S };
        assert_eq!(
            decode_err(&[first, 0], v),
            Malformed("reserved fixed header flags"),
            "{first:#x}"
        );
    }
}

#[test]
fn fixed_header_is_checked_from_its_first_byte() {
    assert_eq!(
        decode_err(&[0x61], V5S),
        Malformed("reserved fixed header flags")
    );
}

#[test]
fn publish_qos_3_is_malformed() {
    let p = packet(0x36, &cat(&[&s(b"t"), &[0, 1]]));
    assert_eq!(decode_err(&p, V3), Malformed("PUBLISH with QoS 3"));
}

#[test]
fn publish_dup_at_qos_0_is_a_protocol_error() {
    let p = packet(0x38, &s(b"t"));
    assert_eq!(decode_err(&p, V3), Protocol("PUBLISH with DUP at QoS 0"));
}

#[test]
fn first_packet_must_be_a_connect() {
    assert_eq!(
        decode_err(&[0xc0, 0], None),
        Protocol("first packet is not a CONNECT")
    );
    assert_eq!(
        decode_err(&[0x30], None),
        Protocol("first packet is not a CONNECT")
    );
}

#[test]
fn auth_does_not_exist_in_v311() {
    assert_eq!(decode_err(&[0xf0, 0], V3), Protocol("AUTH in MQTT 3.1.1"));
}

#[test]
fn remaining_length_of_more_than_4_bytes_is_malformed() {
    for v in [None, V3, V5S] {
        let first = if v.is_none() { 0x10 } else { 0x30 };
        assert_eq!(
            decode_err(&[first, 0xff, 0xff, 0xff, 0xff, 0x7f], v),
            Malformed("remaining length longer than 4 bytes")
        );
        assert_eq!(
            decode(&[first, 0xff, 0xff, 0xff], v, MAX),
            Ok(Decoded::Incomplete)
        );
    }
}

/// 5.0 [MQTT-1.5.5-1] wants the shortest encoding; 3.1.1 section 2.2.3 does
/// not, so a 3.1.1 connection accepts any encoding of up to 4 bytes.
#[test]
fn non_minimal_remaining_length_refused_in_v5_only() {
    let ping = [0xc0, 0x80, 0x80, 0x00];
    assert_eq!(
        decode(&ping, V3, MAX),
        Ok(Decoded::Packet(Packet::PingReq, 4))
    );
    assert_eq!(
        decode_err(&ping, V5S),
        Malformed("remaining length not in its shortest form")
    );
    let body = cat(&[&s(b"MQTT"), &[5, 2, 0, 60, 0], &s(b"c")]);
    let mut v5 = vec![0x10, 0x80 | body.len() as u8, 0x00];
    v5.extend_from_slice(&body);
    assert_eq!(
        decode_err(&v5, None),
        Malformed("remaining length not in its shortest form")
    );
    let body = cat(&[&s(b"MQTT"), &[4, 2, 0, 60], &s(b"c")]);
    let mut v4 = vec![0x10, 0x80 | body.len() as u8, 0x00];
    v4.extend_from_slice(&body);
    assert!(matches!(
        decode(&v4, None, MAX),
        Ok(Decoded::Packet(Packet::Connect(_), 16))
    ));
}

#[test]
fn oversized_packet_refused_from_the_fixed_header_alone() {
    // A PUBLISH announcing 65,535 more bytes, of which none has arrived.
    let header = [0x30, 0xff, 0xff, 0x03];
    assert_eq!(
        decode(&header, V5S, 1000),
        Err(DecodeError::TooLarge { len: 4 + 65_535 })
    );
    // Until the remaining length is whole, nothing is known.
    assert_eq!(decode(&header[..3], V5S, 1000), Ok(Decoded::Incomplete));
    // Before the CONNECT too.
    assert_eq!(
        decode(&[0x10, 0x80, 0x01], None, 100),
        Err(DecodeError::TooLarge { len: 131 })
    );
    // Exactly the maximum is fine.
    assert_eq!(
        decode(&[0xc0, 0x00], V5S, 2),
        Ok(Decoded::Packet(Packet::PingReq, 2))
    );
    assert_eq!(
        decode(&[0xc0, 0x00], V5S, 1),
        Err(DecodeError::TooLarge { len: 2 })
    );
}

#[test]
fn bytes_past_the_end_of_a_packet_are_malformed() {
    let cases: [(&[u8], Option<Version>); 6] = [
        (&[0xc0, 1, 0], V3),
        (&[0xd0, 1, 0], V5S),
        (&[0xe0, 1, 0], V3),
        (&[0x40, 3, 0, 1, 0], V3),
        (&[0xb0, 3, 0, 1, 0], V3),
        (&[0x20, 3, 0, 0, 0], V3),
    ];
    for (bytes, v) in cases {
        assert_eq!(
            decode_err(bytes, v),
            Malformed("bytes past the end of the packet"),
            "{bytes:02x?}"
        );
    }
}

#[test]
fn field_running_past_the_packet_is_malformed() {
    // The topic announces 5 bytes, the packet holds 2.
    let p = [0x30, 4, 0, 5, b'a', b'b'];
    assert_eq!(
        decode_err(&p, V3),
        Malformed("field runs past the end of the packet")
    );
    assert_eq!(
        decode_err(&[0x40, 1, 0], V5S),
        Malformed("field runs past the end of the packet")
    );
}

#[test]
fn protocol_levels_other_than_4_and_5_are_unsupported() {
    let v31 = packet(0x10, &cat(&[&s(b"MQIsdp"), &[3, 2, 0, 60], &s(b"c")]));
    assert_eq!(decode_err(&v31, None), DecodeError::UnsupportedVersion(3));
    assert_eq!(
        decode_err(&connect(6, 2, &s(b"c")), None),
        DecodeError::UnsupportedVersion(6)
    );
    assert_eq!(
        decode_err(&connect(3, 2, &s(b"c")), None),
        DecodeError::UnsupportedVersion(3)
    );
}

#[test]
fn protocol_name_other_than_mqtt_is_a_protocol_error() {
    let p = packet(0x10, &cat(&[&s(b"MQTX"), &[4, 2, 0, 60], &s(b"c")]));
    assert_eq!(decode_err(&p, None), Protocol("protocol name is not MQTT"));
}

#[test]
fn connect_reserved_flag_is_malformed() {
    assert_eq!(
        decode_err(&connect(4, 0x03, &s(b"c")), None),
        Malformed("CONNECT reserved flag set")
    );
}

#[test]
fn will_qos_3_is_malformed() {
    let will = cat(&[&s(b"c"), &s(b"w"), &s(b"m")]);
    assert_eq!(
        decode_err(&connect(4, 0x1e, &will), None),
        Malformed("will QoS 3")
    );
}

#[test]
fn will_qos_or_retain_without_will_flag_is_malformed() {
    for flags in [0x0a, 0x12, 0x22] {
        assert_eq!(
            decode_err(&connect(4, flags, &s(b"c")), None),
            Malformed("will QoS or will retain without a will"),
            "{flags:#x}"
        );
    }
}

#[test]
fn password_without_user_name_is_a_protocol_error_in_v311_only() {
    let rest = cat(&[&s(b"c"), &s(b"pw")]);
    assert_eq!(
        decode_err(&connect(4, 0x42, &rest), None),
        Protocol("password without a user name")
    );
    let rest5 = cat(&[&[0], &rest]);
    let bytes = connect(5, 0x42, &rest5);
    let Packet::Connect(c) = decode_ok(&bytes, None) else {
        panic!()
    };
    assert_eq!((c.username, c.password), (None, Some(&b"pw"[..])));
}

#[test]
fn strings_must_be_well_formed_utf8_without_nul() {
    let bad: [(&[u8], &str); 4] = [
        (&[0xff], "string is not well-formed UTF-8"),
        (&[0xc0, 0x80], "string is not well-formed UTF-8"),
        // U+D800, a surrogate (3.1.1 [MQTT-1.5.3-1], 5.0 [MQTT-1.5.4-1]).
        (&[0xed, 0xa0, 0x80], "string is not well-formed UTF-8"),
        (&[b'a', 0x00], "string holds U+0000"),
    ];
    for (id, why) in bad {
        assert_eq!(
            decode_err(&connect(4, 2, &s(id)), None),
            Malformed(why),
            "{id:02x?}"
        );
        let topic = packet(0x30, &s(id));
        assert_eq!(decode_err(&topic, V3), Malformed(why));
        let un = packet(0xa2, &cat(&[&[0, 1], &s(id)]));
        assert_eq!(decode_err(&un, V3), Malformed(why));
    }
}

#[test]
fn packet_identifier_0_is_a_protocol_error() {
    let cases: [(Vec<u8>, Option<Version>); 7] = [
        (packet(0x32, &cat(&[&s(b"t"), &[0, 0]])), V3),
        (packet(0x34, &cat(&[&s(b"t"), &[0, 0, 0]])), V5S),
        (vec![0x40, 2, 0, 0], V3),
        (vec![0x62, 2, 0, 0], V5S),
        (packet(0x82, &cat(&[&[0, 0], &s(b"t"), &[0]])), V3),
        (packet(0xa2, &cat(&[&[0, 0, 0], &s(b"t")])), V5S),
        (vec![0x90, 3, 0, 0, 0], V3),
    ];
    for (bytes, v) in cases {
        assert_eq!(
            decode_err(&bytes, v),
            Protocol("packet identifier 0"),
            "{bytes:02x?}"
        );
    }
}

#[test]
fn wildcards_in_a_publish_topic_are_a_protocol_error() {
    for topic in [&b"a/+"[..], b"#", b"a/#", b"+"] {
        let p = packet(0x30, &s(topic));
        assert_eq!(decode_err(&p, V3), Protocol("wildcard in a PUBLISH topic"));
    }
}

#[test]
fn empty_publish_topic_needs_a_topic_alias() {
    let p = packet(0x30, &s(b""));
    assert_eq!(decode_err(&p, V3), Protocol("empty topic name"));
    let p = packet(0x30, &cat(&[&s(b""), &[0]]));
    assert_eq!(decode_err(&p, V5S), Protocol("empty topic name"));
}

#[test]
fn subscribe_and_unsubscribe_need_a_topic_filter() {
    assert_eq!(
        decode_err(&[0x82, 2, 0, 1], V3),
        Protocol("SUBSCRIBE without a topic filter")
    );
    assert_eq!(
        decode_err(&[0x82, 3, 0, 1, 0], V5S),
        Protocol("SUBSCRIBE without a topic filter")
    );
    assert_eq!(
        decode_err(&[0xa2, 2, 0, 1], V3),
        Protocol("UNSUBSCRIBE without a topic filter")
    );
    assert_eq!(
        decode_err(&[0xa2, 3, 0, 1, 0], V5S),
        Protocol("UNSUBSCRIBE without a topic filter")
    );
}

#[test]
fn subscription_options_reserved_bits_are_malformed() {
    let sub = |v5: bool, opts: u8| {
        let props: &[u8] = if v5 { &[0] } else { &[] };
        packet(0x82, &cat(&[&[0, 1], props, &s(b"t"), &[opts]]))
    };
    for opts in [0x04, 0x08, 0x30, 0x40, 0x80] {
        assert_eq!(
            decode_err(&sub(false, opts), V3),
            Malformed("subscription options reserved bits set"),
            "{opts:#x}"
        );
    }
    for opts in [0x40, 0x80] {
        assert_eq!(
            decode_err(&sub(true, opts), V5S),
            Malformed("subscription options reserved bits set")
        );
    }
    assert_eq!(
        decode_err(&sub(false, 3), V3),
        Malformed("subscription QoS 3")
    );
    assert_eq!(
        decode_err(&sub(true, 3), V5S),
        Malformed("subscription QoS 3")
    );
    assert_eq!(
        decode_err(&sub(true, 0x30), V5S),
        Protocol("retain handling 3")
    );
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let sub = |filter: &[u8]| packet(0x82, &cat(&[&[0, 1, 0], &s(filter), &[0x04]]));
    assert_eq!(
        decode_err(&sub(b"$share/g/t"), V5S),
        Protocol("no local on a shared subscription")
    );
    assert!(matches!(
        decode_ok(&sub(b"$sharex/t"), V5S),
        Packet::Subscribe(_)
    ));
}

#[test]
fn connack_reserved_flags_are_malformed() {
    assert_eq!(
        decode_err(&[0x20, 2, 0x02, 0], V3),
        Malformed("CONNACK reserved flags set")
    );
    assert_eq!(
        decode_err(&[0x20, 3, 0x80, 0, 0], V5S),
        Malformed("CONNACK reserved flags set")
    );
}

#[test]
fn session_present_with_a_refusal_is_a_protocol_error() {
    assert_eq!(
        decode_err(&[0x20, 2, 1, 5], V3),
        Protocol("session present with a refused connection")
    );
    assert_eq!(
        decode_err(&[0x20, 3, 1, 0x87, 0], V5S),
        Protocol("session present with a refused connection")
    );
}

#[test]
fn v311_reserved_return_codes_are_a_protocol_error() {
    assert_eq!(
        decode_err(&[0x20, 2, 0, 6], V3),
        Protocol("reserved CONNACK return code")
    );
    assert_eq!(
        decode_err(&[0x90, 3, 0, 1, 0x03], V3),
        Protocol("return code not allowed in a SUBACK")
    );
    assert_eq!(
        decode_err(&[0x90, 3, 0, 1, 0x81], V3),
        Protocol("return code not allowed in a SUBACK")
    );
}

#[test]
fn v5_reason_codes_must_belong_to_their_packet() {
    let bad: [(&[u8], &str); 8] = [
        (
            &[0x20, 3, 0, 0x10, 0],
            "reason code not allowed in a CONNACK",
        ),
        (
            &[0x40, 3, 0, 1, 0x92],
            "reason code not allowed in this packet",
        ),
        (
            &[0x50, 3, 0, 1, 0x04],
            "reason code not allowed in this packet",
        ),
        (
            &[0x62, 3, 0, 1, 0x80],
            "reason code not allowed in this packet",
        ),
        (
            &[0x70, 3, 0, 1, 0x10],
            "reason code not allowed in this packet",
        ),
        (
            &[0xb0, 4, 0, 1, 0, 0x10],
            "reason code not allowed in this packet",
        ),
        (&[0xe0, 1, 0x91], "reason code not allowed in this packet"),
        (&[0xf0, 1, 0x80], "reason code not allowed in this packet"),
    ];
    for (bytes, why) in bad {
        assert_eq!(decode_err(bytes, V5S), Protocol(why), "{bytes:02x?}");
    }
    assert_eq!(
        decode_err(&[0x90, 4, 0, 1, 0, 0x92], V5S),
        Protocol("return code not allowed in a SUBACK")
    );
}

#[test]
fn acknowledgements_need_a_code_per_filter() {
    assert_eq!(
        decode_err(&[0x90, 2, 0, 1], V3),
        Protocol("SUBACK without a return code")
    );
    assert_eq!(
        decode_err(&[0x90, 3, 0, 1, 0], V5S),
        Protocol("SUBACK without a return code")
    );
    assert_eq!(
        decode_err(&[0xb0, 3, 0, 1, 0], V5S),
        Protocol("UNSUBACK without a reason code")
    );
}

#[test]
fn encode_refuses_what_cannot_be_encoded_and_writes_nothing() {
    let long = "x".repeat(65_536);
    let p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: &long,
        packet_id: 0,
        props: PublishProps::default(),
        payload: b"",
    };
    let mut out = vec![1, 2];
    assert_eq!(
        encode(&Packet::Publish(p), V311, &mut out),
        Err(EncodeError::StringTooLong)
    );
    assert_eq!(
        encode_publish_header(&p, V5, &mut out),
        Err(EncodeError::StringTooLong)
    );
    assert_eq!(out, [1, 2]);
    let ok = Publish {
        topic: &long[..65_535],
        ..p
    };
    assert_eq!(
        packet_len(&Packet::Publish(ok), V311),
        Ok(1 + 3 + 2 + 65_535)
    );

    // A Subscription Identifier past the largest Variable Byte Integer.
    let ids = [268_435_456];
    let p = Publish {
        topic: "t",
        props: PublishProps {
            subscription_ids: SubIds::List(&ids),
            ..PublishProps::default()
        },
        ..p
    };
    assert_eq!(
        encode(&Packet::Publish(p), V5, &mut out),
        Err(EncodeError::TooLarge)
    );
    assert_eq!(out, [1, 2]);

    // A remaining length past 268,435,455 (the payload is never touched).
    let huge = vec![0u8; 268_435_455];
    let p = Publish {
        payload: &huge,
        ..ok
    };
    assert_eq!(
        packet_len(&Packet::Publish(p), V311),
        Err(EncodeError::TooLarge)
    );
    let p = Publish {
        topic: "",
        payload: &huge[..268_435_455 - 2],
        ..p
    };
    assert_eq!(
        packet_len(&Packet::Publish(p), V311),
        Ok(1 + 4 + 268_435_455)
    );
}
