//! Properties (5.0 section 2.2.2): the views, and one test per refusal.

use super::*;
use DecodeError::{Malformed, Protocol};

const V5S: Option<Version> = Some(Version::V5);

/// A QoS 0 PUBLISH to "t" with this property block.
fn publish(props: &[u8]) -> Vec<u8> {
    packet(0x30, &cat(&[&s(b"t"), &[props.len() as u8], props, b"x"]))
}

/// A 5.0 CONNECT with this property block.
fn connect(props: &[u8]) -> Vec<u8> {
    packet(
        0x10,
        &cat(&[
            &s(b"MQTT"),
            &[5, 2, 0, 60, props.len() as u8],
            props,
            &s(b"c"),
        ]),
    )
}

/// A 5.0 CONNECT whose will has this property block.
fn connect_will(props: &[u8]) -> Vec<u8> {
    packet(
        0x10,
        &cat(&[
            &s(b"MQTT"),
            &[5, 0x06, 0, 60, 0],
            &s(b"c"),
            &[props.len() as u8],
            props,
            &s(b"w"),
            &s(b"m"),
        ]),
    )
}

/// A 5.0 CONNACK with this property block.
fn connack(props: &[u8]) -> Vec<u8> {
    packet(0x20, &cat(&[&[0, 0, props.len() as u8], props]))
}

/// A 5.0 SUBSCRIBE to "t" with this property block.
fn subscribe(props: &[u8]) -> Vec<u8> {
    packet(
        0x82,
        &cat(&[&[0, 1, props.len() as u8], props, &s(b"t"), &[1]]),
    )
}

#[test]
fn user_properties_and_subscription_ids_are_views_in_order() {
    let props = cat(&[
        &[0x26, 0, 1, b'a', 0, 1, b'1'],
        &[0x0b, 0x05],
        &[0x02, 0, 0, 0, 9],
        &[0x26, 0, 1, b'a', 0, 1, b'2'],
        &[0x0b, 0xff, 0xff, 0xff, 0x7f],
        &[0x26, 0, 1, b'b', 0, 0],
    ]);
    let bytes = publish(&props);
    let Packet::Publish(p) = decode_ok(&bytes, V5S) else {
        panic!()
    };
    let u = p.props.user_properties;
    assert!(matches!(u, UserProps::Encoded(_)));
    assert_eq!(
        u.iter().collect::<Vec<_>>(),
        [("a", "1"), ("a", "2"), ("b", "")]
    );
    assert_eq!((u.len(), u.is_empty()), (3, false));
    assert_eq!(u, UserProps::Pairs(&[("a", "1"), ("a", "2"), ("b", "")]));
    assert_ne!(u, UserProps::Pairs(&[("a", "2"), ("a", "1"), ("b", "")]));
    assert_eq!(format!("{u:?}"), r#"[("a", "1"), ("a", "2"), ("b", "")]"#);
    let ids = p.props.subscription_ids;
    assert_eq!(ids.iter().collect::<Vec<_>>(), [5, 268_435_455]);
    assert_eq!(ids, SubIds::List(&[5, 268_435_455]));
    assert_eq!(p.props.message_expiry, Some(9));
    // Without any, the views are empty.
    let bytes = publish(&[]);
    let Packet::Publish(p) = decode_ok(&bytes, V5S) else {
        panic!()
    };
    assert!(p.props.user_properties.is_empty() && p.props.subscription_ids.is_empty());
    assert_eq!(p.props, PublishProps::default());
}

#[test]
fn unknown_property_identifier_is_malformed() {
    for id in [0x00, 0x04, 0x2b, 0x7f, 0x80] {
        assert_eq!(
            decode_err(&publish(&[id, 0]), V5S),
            Malformed("unknown property identifier"),
            "{id:#x}"
        );
    }
}

#[test]
fn property_not_allowed_in_its_packet_is_malformed() {
    let not_allowed = Malformed("property not allowed in this packet");
    // Topic Alias in a CONNECT, Will Delay Interval in a CONNECT's own
    // properties, Reason String in a PUBLISH, Session Expiry in a will,
    // Subscription Identifier in a CONNACK, Server Reference in a SUBSCRIBE.
    assert_eq!(decode_err(&connect(&[0x23, 0, 1]), None), not_allowed);
    assert_eq!(decode_err(&connect(&[0x18, 0, 0, 0, 1]), None), not_allowed);
    assert_eq!(decode_err(&publish(&[0x1f, 0, 0]), V5S), not_allowed);
    assert_eq!(
        decode_err(&connect_will(&[0x11, 0, 0, 0, 1]), None),
        not_allowed
    );
    assert_eq!(decode_err(&connack(&[0x0b, 1]), V5S), not_allowed);
    assert_eq!(decode_err(&subscribe(&[0x1c, 0, 0]), V5S), not_allowed);
    assert_eq!(
        decode_err(&[0x40, 6, 0, 1, 0, 2, 0x01, 1], V5S),
        not_allowed
    );
}

#[test]
fn repeated_property_is_a_protocol_error() {
    let twice = Protocol("property repeated");
    assert_eq!(
        decode_err(&connect(&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1]), None),
        twice
    );
    assert_eq!(decode_err(&publish(&[0x23, 0, 1, 0x23, 0, 2]), V5S), twice);
    assert_eq!(
        decode_err(&[0x40, 10, 0, 1, 0, 6, 0x1f, 0, 0, 0x1f, 0, 0], V5S),
        twice
    );
    // Only one Subscription Identifier in a SUBSCRIBE (5.0 3.8.2.1.2).
    assert_eq!(decode_err(&subscribe(&[0x0b, 1, 0x0b, 2]), V5S), twice);
    // User Properties repeat everywhere; Subscription Identifiers in a
    // PUBLISH.
    assert!(matches!(
        decode_ok(&subscribe(&[0x26, 0, 0, 0, 0, 0x26, 0, 0, 0, 0]), V5S),
        Packet::Subscribe(_)
    ));
    assert!(matches!(
        decode_ok(&publish(&[0x0b, 1, 0x0b, 2]), V5S),
        Packet::Publish(_)
    ));
}

#[test]
fn subscription_identifier_0_is_a_protocol_error() {
    let zero = Protocol("subscription identifier 0");
    assert_eq!(decode_err(&publish(&[0x0b, 0]), V5S), zero);
    assert_eq!(decode_err(&subscribe(&[0x0b, 0]), V5S), zero);
}

#[test]
fn receive_maximum_and_maximum_packet_size_of_0_are_protocol_errors() {
    let zero = Protocol("receive maximum or maximum packet size of 0");
    assert_eq!(decode_err(&connect(&[0x21, 0, 0]), None), zero);
    assert_eq!(decode_err(&connect(&[0x27, 0, 0, 0, 0]), None), zero);
    assert_eq!(decode_err(&connack(&[0x21, 0, 0]), V5S), zero);
    assert_eq!(decode_err(&connack(&[0x27, 0, 0, 0, 0]), V5S), zero);
}

#[test]
fn boolean_properties_other_than_0_or_1_are_protocol_errors() {
    let bad = Protocol("boolean property other than 0 or 1");
    assert_eq!(decode_err(&connect(&[0x17, 2]), None), bad);
    assert_eq!(decode_err(&connect(&[0x19, 2]), None), bad);
    for id in [0x25, 0x28, 0x29, 0x2a] {
        assert_eq!(decode_err(&connack(&[id, 2]), V5S), bad, "{id:#x}");
    }
}

#[test]
fn payload_format_other_than_0_or_1_is_a_protocol_error() {
    let bad = Protocol("payload format indicator other than 0 or 1");
    assert_eq!(decode_err(&publish(&[0x01, 2]), V5S), bad);
    assert_eq!(decode_err(&connect_will(&[0x01, 2]), None), bad);
}

#[test]
fn maximum_qos_other_than_0_or_1_is_a_protocol_error() {
    assert_eq!(
        decode_err(&connack(&[0x24, 2]), V5S),
        Protocol("maximum QoS other than 0 or 1")
    );
}

#[test]
fn topic_alias_0_is_a_protocol_error() {
    assert_eq!(
        decode_err(&publish(&[0x23, 0, 0]), V5S),
        Protocol("topic alias 0")
    );
}

#[test]
fn authentication_data_without_a_method_is_a_protocol_error() {
    let bad = Protocol("authentication data without a method");
    assert_eq!(decode_err(&connect(&[0x16, 0, 1, 9]), None), bad);
    assert_eq!(decode_err(&connack(&[0x16, 0, 1, 9]), V5S), bad);
    assert_eq!(decode_err(&[0xf0, 6, 0x18, 4, 0x16, 0, 1, 9], V5S), bad);
}

#[test]
fn property_block_past_the_packet_is_malformed() {
    // The block announces 9 bytes, the packet holds 1 after it.
    let p = packet(0x30, &cat(&[&s(b"t"), &[9, 0x01]]));
    assert_eq!(
        decode_err(&p, V5S),
        Malformed("field runs past the end of the packet")
    );
    // A property cut short inside its block.
    assert_eq!(
        decode_err(&publish(&[0x02, 0, 0]), V5S),
        Malformed("field runs past the end of the packet")
    );
}

/// 5.0 [MQTT-1.5.5-1] applies to every Variable Byte Integer.
#[test]
fn non_minimal_variable_byte_integers_in_properties_are_malformed() {
    let not_shortest = Malformed("variable byte integer not in its shortest form");
    let p = packet(0x30, &cat(&[&s(b"t"), &[0x80, 0x00]]));
    assert_eq!(decode_err(&p, V5S), not_shortest);
    assert_eq!(decode_err(&publish(&[0x0b, 0x81, 0x00]), V5S), not_shortest);
    assert_eq!(
        decode_err(&publish(&[0x0b, 0xff, 0xff, 0xff, 0xff, 0x01]), V5S),
        Malformed("variable byte integer longer than 4 bytes")
    );
}

#[test]
fn string_properties_must_be_valid_utf8() {
    assert_eq!(
        decode_err(&publish(&[0x03, 0, 1, 0xff]), V5S),
        Malformed("string is not well-formed UTF-8")
    );
    assert_eq!(
        decode_err(&publish(&[0x26, 0, 1, b'k', 0, 1, 0]), V5S),
        Malformed("string holds U+0000")
    );
}

#[test]
fn v311_packets_have_no_properties() {
    // The byte a 5.0 PUBLISH would read as a property length is payload.
    let p = [0x30, 5, 0, 1, b't', 0x03, 0x99];
    let Packet::Publish(p) = decode_ok(&p, Some(Version::V311)) else {
        panic!()
    };
    assert_eq!(
        (p.payload, p.props),
        (&[0x03, 0x99][..], PublishProps::default())
    );
}
