//! What a client must not do, and what it must not get: malformed packets,
//! a second CONNECT, a packet over the maximum size, wrong credentials.
//! Each costs the offending connection only.

use ringport::protocols::mqtt::codec::Version;

use crate::client::{Client, Got, Opts};
use crate::harness::{Broker, Options};

/// Bytes that are a malformed packet (or a protocol error) on a connected
/// 3.1.1 and 5.0 connection, and what each is.
fn malformed() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "PUBLISH with QoS 3",
            vec![0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
        ),
        (
            "a five-byte remaining length",
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        (
            "a topic name of invalid UTF-8",
            vec![0x30, 0x05, 0x00, 0x02, 0xc3, 0x28, b'x'],
        ),
        (
            "SUBSCRIBE with reserved flags 0000",
            vec![0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
        ),
        ("packet type 0", vec![0x00, 0x00]),
        (
            "PUBLISH with a wildcard in its topic",
            vec![0x30, 0x04, 0x00, 0x01, b'#', b'x'],
        ),
    ]
}

/// The same in 5.0 framing (PUBLISH and SUBSCRIBE carry a property length).
fn malformed_v5() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "PUBLISH with QoS 3",
            vec![0x36, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, 0x00],
        ),
        (
            "a five-byte remaining length",
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        (
            "a topic name of invalid UTF-8",
            vec![0x30, 0x06, 0x00, 0x02, 0xc3, 0x28, 0x00, b'x'],
        ),
        (
            "SUBSCRIBE with reserved flags 0000",
            vec![0x80, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x00],
        ),
        ("packet type 0", vec![0x00, 0x00]),
        (
            "PUBLISH with a wildcard in its topic",
            vec![0x30, 0x05, 0x00, 0x01, b'#', 0x00, b'x'],
        ),
        (
            "PUBLISH with a property length past its end",
            vec![0x30, 0x05, 0x00, 0x01, b'a', 0x09, b'x'],
        ),
    ]
}

/// Reads until the broker closes `c`. A 3.1.1 client must get nothing
/// before the close. A 5.0 client may get one DISCONNECT with one of
/// `codes` first (the specs' "may"); ringport, which documents that it
/// sends one, must (`broker.is_engine()`).
fn assert_closed(broker: &Broker, c: &mut Client, codes: &[u8], what: &str) {
    let got = c.until_closed();
    let disconnect =
        got.len() == 1 && matches!(got[0], Got::Disconnect(code) if codes.contains(&code));
    let ok = match c.version {
        Version::V311 => got.is_empty(),
        Version::V5 if broker.is_engine() => disconnect,
        Version::V5 => got.is_empty() || disconnect,
    };
    assert!(
        ok,
        "{what}: the broker sent {got:?} before closing (expected {})",
        match c.version {
            Version::V311 => "nothing".to_owned(),
            Version::V5 => format!("DISCONNECT with one of {codes:02x?}"),
        }
    );
}

/// A subscriber on shard 0 and a publisher on shard 1 still exchange a
/// QoS 1 message.
fn still_served(broker: &Broker, v: Version, sub: &mut Client, tag: &str) {
    let topic = broker.topic("alive");
    let id = format!("{}-pub-{tag}", broker.prefix());
    let (mut p, _) = Client::connected(broker.addr(1), &Opts::new(v, &id));
    p.publish(&topic, tag.as_bytes(), 1, false, 7);
    assert_eq!(p.recv(), Some(Got::PubAck(7, 0)), "{tag}: PUBACK");
    match sub.recv() {
        Some(Got::Publish(m)) => {
            assert_eq!(
                (m.topic.as_str(), &m.payload[..], m.qos),
                (&topic[..], tag.as_bytes(), 1)
            )
        }
        other => panic!("{tag}: the subscriber got {other:?}"),
    }
    p.disconnect();
}

fn subscriber(broker: &Broker, v: Version) -> Client {
    let id = format!("{}-sub", broker.prefix());
    let (mut sub, _) = Client::connected(broker.addr(0), &Opts::new(v, &id));
    assert_eq!(sub.subscribe(&[(&broker.topic("alive"), 1)]), vec![1]);
    sub
}

fn malformed_closes_one(name: &str, v: Version) {
    let broker = Broker::default(name);
    let mut sub = subscriber(&broker, v);
    let cases = match v {
        Version::V311 => malformed(),
        Version::V5 => malformed_v5(),
    };
    for (i, (what, bytes)) in cases.iter().enumerate() {
        let id = format!("{}-bad{i}", broker.prefix());
        // Both shards: the bad client's neighbours on its shard are served.
        let (mut bad, _) = Client::connected(broker.addr(i), &Opts::new(v, &id));
        let _ = bad.send_raw(bytes);
        assert_closed(&broker, &mut bad, &[0x81, 0x82], what);
        still_served(&broker, v, &mut sub, &format!("after-{i}"));
    }
    broker.stop();
}

#[test]
fn malformed_packet_closes_only_that_connection_v311() {
    malformed_closes_one("malformed_v311", Version::V311);
}

#[test]
fn malformed_packet_closes_only_that_connection_v5() {
    malformed_closes_one("malformed_v5", Version::V5);
}

fn second_connect(name: &str, v: Version) {
    let broker = Broker::default(name);
    let mut sub = subscriber(&broker, v);
    let id = format!("{}-twice", broker.prefix());
    let opts = Opts::new(v, &id);
    let (mut c, _) = Client::connected(broker.addr(1), &opts);
    c.send(&opts.packet());
    assert_closed(&broker, &mut c, &[0x82], "a second CONNECT");
    still_served(&broker, v, &mut sub, "after");
    broker.stop();
}

#[test]
fn second_connect_is_a_protocol_error_v311() {
    second_connect("second_connect_v311", Version::V311);
}

#[test]
fn second_connect_is_a_protocol_error_v5() {
    second_connect("second_connect_v5", Version::V5);
}

/// With a 1,024-byte maximum: a PUBLISH of exactly 1,024 bytes is served, one
/// of 1,025 closes the connection; 5.0 announces the maximum in CONNACK.
fn max_packet(name: &str, v: Version) {
    const MAX: u32 = 1024;
    let options = Options {
        max_packet_size: Some(MAX),
        ..Options::default()
    };
    let Some(broker) = Broker::start(name, &options) else {
        return;
    };
    let topic = broker.topic("big");
    let id = format!("{}-sub", broker.prefix());
    let (mut sub, first) = Client::connect(broker.addr(0), &Opts::new(v, &id));
    let want_max = match v {
        Version::V311 => None,
        Version::V5 => Some(MAX),
    };
    assert!(
        matches!(first, Some(Got::ConnAck { code: 0, max_packet_size, .. }) if max_packet_size == want_max),
        "CONNACK announcing {want_max:?}: {first:?}"
    );
    assert_eq!(sub.subscribe(&[(&topic, 1)]), vec![1]);

    // Fixed header 3 bytes (remaining length 1021 takes two), topic 2 + len,
    // packet id 2, (5.0) property length 1, payload the rest.
    let overhead = 3 + 2 + topic.len() + 2 + usize::from(v == Version::V5);
    let fits = vec![b'f'; MAX as usize - overhead];
    let id = format!("{}-pub", broker.prefix());
    let (mut p, _) = Client::connected(broker.addr(1), &Opts::new(v, &id));
    p.publish(&topic, &fits, 1, false, 1);
    assert_eq!(p.recv(), Some(Got::PubAck(1, 0)), "a {MAX}-byte PUBLISH");
    match sub.recv() {
        Some(Got::Publish(m)) => assert_eq!(m.payload.len(), fits.len()),
        other => panic!("the {MAX}-byte PUBLISH was not delivered: {other:?}"),
    }
    // Mosquitto 2.0.11 leaves the remaining length's own bytes out of its
    // count (it takes a 1,026-byte packet under a 1,024 maximum), so it is
    // checked with twice the maximum; ringport at the exact bound.
    let over_len = if broker.is_engine() {
        MAX as usize + 1
    } else {
        2 * MAX as usize
    };
    let over = vec![b'o'; over_len - overhead - usize::from(over_len > 16_383)];
    p.publish(&topic, &over, 1, false, 2);
    assert_closed(
        &broker,
        &mut p,
        &[0x95],
        &format!("a PUBLISH of {over_len} bytes"),
    );
    still_served_on(&broker, v, &mut sub, &topic);
    broker.stop();
}

/// `sub`, subscribed to `topic` at QoS 1, gets a small message.
fn still_served_on(broker: &Broker, v: Version, sub: &mut Client, topic: &str) {
    let id = format!("{}-pub2", broker.prefix());
    let (mut p, _) = Client::connected(broker.addr(1), &Opts::new(v, &id));
    p.publish(topic, b"small", 1, false, 3);
    assert_eq!(p.recv(), Some(Got::PubAck(3, 0)));
    match sub.recv() {
        Some(Got::Publish(m)) => assert_eq!(m.payload, b"small", "nothing else in between"),
        other => panic!("the subscriber got {other:?}"),
    }
    p.disconnect();
}

#[test]
fn packet_over_maximum_size_refused_v311() {
    max_packet("max_packet_v311", Version::V311);
}

#[test]
fn packet_over_maximum_size_refused_v5() {
    max_packet("max_packet_v5", Version::V5);
}

/// A 5.0 client's own Maximum Packet Size: a message that does not fit is
/// not sent to it (and it stays connected); the next one that fits is.
#[test]
fn client_maximum_packet_size_v5() {
    let v = Version::V5;
    let broker = Broker::default("client_max_packet_v5");
    let topic = broker.topic("t");
    let id = format!("{}-small", broker.prefix());
    let opts = Opts {
        max_packet_size: Some(128),
        ..Opts::new(v, &id)
    };
    let (mut sub, _) = Client::connected(broker.addr(0), &opts);
    assert_eq!(sub.subscribe(&[(&topic, 1)]), vec![1]);
    let id = format!("{}-pub", broker.prefix());
    let (mut p, _) = Client::connected(broker.addr(1), &Opts::new(v, &id));
    p.publish(&topic, &[b'x'; 500], 1, false, 1);
    assert!(matches!(p.recv(), Some(Got::PubAck(1, _))));
    p.publish(&topic, b"fits", 1, false, 2);
    assert!(matches!(p.recv(), Some(Got::PubAck(2, _))));
    match sub.recv() {
        Some(Got::Publish(m)) => assert_eq!(m.payload, b"fits", "the 500-byte one is not sent"),
        other => panic!("the subscriber got {other:?}"),
    }
    broker.stop();
}

/// Users configured: the right password connects; a wrong one, an unknown
/// user and no username are refused with the version's code, and the
/// connection closed.
fn credentials(name: &str, v: Version) {
    let options = Options {
        users: vec![("alice".into(), "s3cret".into())],
        ..Options::default()
    };
    let Some(broker) = Broker::start(name, &options) else {
        return;
    };
    let id = format!("{}-c", broker.prefix());
    let with = |user: Option<&'static str>, pass: Option<&'static [u8]>| Opts {
        username: user,
        password: pass,
        ..Opts::new(v, &id)
    };
    let (c, _) = Client::connected(broker.addr(0), &with(Some("alice"), Some(b"s3cret")));
    c.disconnect();
    // 3.1.1: 4 bad username or password, 5 not authorized;
    // 5.0: 0x86 bad username or password, 0x87 not authorized.
    let (bad, none) = match v {
        Version::V311 => (4, 5),
        Version::V5 => (0x86, 0x87),
    };
    // Mosquitto 2.0.11 (the reference the tests are checked against)
    // answers a wrong password with "not authorized"; ringport must say
    // "bad username or password".
    let wrong: &[u8] = if broker.is_engine() {
        &[bad]
    } else {
        &[bad, none]
    };
    let cases: [(&str, Opts<'_>, &[u8]); 4] = [
        (
            "a wrong password",
            with(Some("alice"), Some(b"guess")),
            wrong,
        ),
        (
            "an unknown user",
            with(Some("mallory"), Some(b"s3cret")),
            wrong,
        ),
        ("no password", with(Some("alice"), None), &[bad, none]),
        ("no username", with(None, None), &[bad, none]),
    ];
    for (i, (what, opts, codes)) in cases.iter().enumerate() {
        let (mut c, first) = Client::connect(broker.addr(i), opts);
        match first {
            Some(Got::ConnAck {
                session_present: false,
                code,
                ..
            }) if codes.contains(&code) => {}
            other => panic!("{what}: CONNACK with one of {codes:02x?} expected, got {other:?}"),
        }
        assert_eq!(c.until_closed(), vec![], "{what}: closed after the CONNACK");
    }
    broker.stop();
}

#[test]
fn credentials_refused_v311() {
    credentials("credentials_v311", Version::V311);
}

#[test]
fn credentials_refused_v5() {
    credentials("credentials_v5", Version::V5);
}
