//! CONNECT/CONNACK, authentication, keep-alive, PING, DISCONNECT, errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::mqtt::auth::{AuthOutcome, AuthRequest, Authenticator};
use crate::mqtt::broker::{ConnectEvent, MqttDrop, MqttEvents};
use crate::mqtt::codec::{ConnAck, ConnAckProps, Disconnect};

#[test]
fn v311_connack_is_four_bytes() {
    let mut net = Net::new(1, anon());
    let (_, out) = net.connect(0, 1, v3("dev-1"));
    assert_eq!(out, [0x20, 2, 0, 0]);
    assert_eq!(net.stats().total(|s| s.connects()), 1);
    assert_eq!(net.stats().total(|s| s.connected()), 1);
}

#[test]
fn v5_connack_announces_limits_and_assigns_an_id() {
    let mut net = Net::new(1, anon());
    let (c, out) = net.connect(0, 1, v5(""));
    let ps = decode_all(&out, Version::V5);
    let Packet::ConnAck(ack) = &ps[0] else {
        panic!("{ps:?}")
    };
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    assert!(!ack.session_present);
    assert_eq!(ack.props.receive_maximum, Some(32));
    assert_eq!(ack.props.maximum_packet_size, Some(1 << 20));
    assert_eq!(ack.props.topic_alias_maximum, Some(16));
    let id = ack.props.assigned_client_id.unwrap();
    assert!(id.starts_with("ringport-0-1-"), "{id}");
    assert!(!net.closed(c));
}

#[test]
fn v311_empty_id_needs_clean_session() {
    let mut net = Net::new(1, anon());
    let (c, out) = net.connect(0, 1, conn_pkt(Version::V311, "", false));
    assert_eq!(out, [0x20, 2, 0, 2]);
    assert!(net.closed(c));
    let (c, out) = net.connect(0, 2, conn_pkt(Version::V311, "", true));
    assert_eq!(out, [0x20, 2, 0, 0]);
    assert!(!net.closed(c));
}

#[test]
fn anonymous_refused_by_default() {
    let mut net = Net::new(1, MqttConfig::default());
    let (c, out) = net.connect(0, 1, v3("x"));
    assert_eq!(out, [0x20, 2, 0, 5]);
    assert!(net.closed(c));
    let (_, out) = net.connect(0, 2, v5("y"));
    assert_eq!(
        decode_all(&out, Version::V5),
        [Packet::ConnAck(ConnAck {
            session_present: false,
            code: ReasonCode::NOT_AUTHORIZED,
            props: ConnAckProps::default(),
        })]
    );
    let stats = net.stats();
    assert_eq!(stats.total(|s| s.connects_refused()), 2);
    assert_eq!(stats.total(|s| s.drops(MqttDrop::NotAuthorized)), 2);
}

/// Accepts user "alice" with password "pw" and any TLS identity.
struct Users(Mutex<Vec<String>>);

impl Authenticator for Users {
    fn authenticate(&self, req: &AuthRequest<'_>) -> AuthOutcome {
        self.0.lock().unwrap().push(format!(
            "{} {:?} {:?}",
            req.client_id, req.username, req.tls_identities
        ));
        if let Some(id) = req.tls_identities.first() {
            return AuthOutcome::Allowed {
                identity: id.to_string(),
            };
        }
        match (req.username, req.password) {
            (Some("alice"), Some(b"pw")) => AuthOutcome::Allowed {
                identity: "alice".into(),
            },
            _ => AuthOutcome::BadCredentials,
        }
    }
}

#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl MqttEvents for Log {
    fn connect(&self, ev: &ConnectEvent<'_>) {
        self.0.lock().unwrap().push(format!(
            "{} {} {:?} {:?} {:?} {}",
            ev.shard, ev.client_id, ev.identity, ev.username, ev.version, ev.result
        ));
    }
}

#[test]
fn authenticator_decides_and_events_log_each_connect() {
    let users = Arc::new(Users(Mutex::new(Vec::new())));
    let log = Arc::new(Log::default());
    let mut net = Net::new(
        1,
        MqttConfig {
            authenticator: Some(users.clone()),
            events: Some(log.clone()),
            ..MqttConfig::default()
        },
    );
    let mut good = v5("c1");
    good.username = Some("alice");
    good.password = Some(b"pw");
    let (_, out) = net.connect(0, 1, good);
    assert_eq!(decode_all(&out, Version::V5).len(), 1);
    let mut bad = v3("c2");
    bad.username = Some("alice");
    bad.password = Some(b"nope");
    let (c2, out) = net.connect(0, 2, bad);
    assert_eq!(out, [0x20, 2, 0, 4]);
    assert!(net.closed(c2));
    // A TLS client certificate, no username.
    let c3 = net.open(0, 3);
    net.ctxs[0].set_peer_identities(c3, vec!["uri:spiffe://x/s7".into()]);
    net.send(c3, &Packet::Connect(v3("c3")));
    assert_eq!(net.take(c3), [0x20, 2, 0, 0]);
    // Anonymous without TLS: refused before the authenticator is asked.
    let (_, out) = net.connect(0, 4, v3("c4"));
    assert_eq!(out, [0x20, 2, 0, 5]);
    assert_eq!(
        *users.0.lock().unwrap(),
        [
            "c1 Some(\"alice\") []",
            "c2 Some(\"alice\") []",
            "c3 None [\"uri:spiffe://x/s7\"]"
        ]
    );
    assert_eq!(
        *log.0.lock().unwrap(),
        [
            "0 c1 Some(\"alice\") Some(\"alice\") V5 success",
            "0 c2 None Some(\"alice\") V311 bad_username_or_password",
            "0 c3 Some(\"uri:spiffe://x/s7\") None V311 success",
            "0 c4 None None V311 not_authorized",
        ]
    );
}

#[test]
fn keep_alive_is_enforced_at_one_and_a_half_times() {
    let mut net = Net::new(1, anon());
    let mut p = v5("k");
    p.keep_alive = 10;
    let (c, _) = net.connect(0, 1, p);
    net.advance(Duration::from_secs(14));
    assert!(!net.closed(c));
    // Traffic resets the clock.
    net.send(c, &Packet::PingReq);
    assert_eq!(net.take(c), [0xD0, 0]);
    net.advance(Duration::from_secs(14));
    assert!(!net.closed(c));
    net.advance(Duration::from_secs(1));
    assert!(net.closed(c));
    assert_eq!(net.take(c), enc(&disconnect(0x8D), Version::V5));
    assert_eq!(
        net.stats().total(|s| s.drops(MqttDrop::KeepAliveTimeout)),
        1
    );
    assert_eq!(net.stats().total(|s| s.connected()), 0);
}

#[test]
fn a_silent_connection_is_closed_after_the_connect_timeout() {
    let mut net = Net::new(1, anon());
    let c = net.open(0, 1);
    net.advance(Duration::from_secs(9));
    assert!(!net.closed(c));
    net.advance(Duration::from_secs(1));
    assert!(net.closed(c));
    assert_eq!(net.stats().total(|s| s.drops(MqttDrop::ConnectTimeout)), 1);
}

#[test]
fn trickling_a_connect_does_not_extend_the_deadline() {
    let mut net = Net::new(1, anon());
    let c = net.open(0, 1);
    let mut whole = Vec::new();
    codec::encode(&Packet::Connect(v3("slow")), Version::V311, &mut whole).unwrap();
    for b in &whole[..4] {
        net.feed(c, &[*b]);
        net.advance(Duration::from_secs(3));
    }
    assert!(net.closed(c));
    assert_eq!(net.take(c), b"");
}

fn disconnect(code: u8) -> Packet<'static> {
    Packet::Disconnect(Disconnect {
        code: ReasonCode(code),
        ..Disconnect::default()
    })
}

#[test]
fn malformed_input_closes_only_that_connection() {
    let mut net = Net::new(1, anon());
    let (a, _) = net.connect(0, 1, v5("a"));
    let (b, _) = net.connect(0, 2, v3("b"));
    // PUBLISH with QoS 3.
    net.feed(a, &[0x36, 3, 0, 1, b't']);
    assert!(net.closed(a));
    assert_eq!(net.take(a), enc(&disconnect(0x81), Version::V5));
    net.feed(b, &[0x36, 3, 0, 1, b't']);
    assert!(net.closed(b));
    assert_eq!(net.take(b), b"");
    // Bytes after the close are ignored.
    net.feed(a, &[0xC0, 0]);
    assert_eq!(net.take(a), b"");
    assert_eq!(net.stats().total(|s| s.drops(MqttDrop::Malformed)), 2);
    let (c, out) = net.connect(0, 3, v3("c"));
    assert_eq!(out, [0x20, 2, 0, 0]);
    assert!(!net.closed(c));
}

#[test]
fn packets_before_connect_and_a_second_connect_are_protocol_errors() {
    let mut net = Net::new(1, anon());
    let c = net.open(0, 1);
    net.feed(c, &[0xC0, 0]);
    assert!(net.closed(c));
    let (c, _) = net.connect(0, 2, v5("x"));
    net.send(c, &Packet::Connect(v5("x")));
    assert!(net.closed(c));
    assert_eq!(net.take(c), enc(&disconnect(0x82), Version::V5));
    assert_eq!(net.stats().total(|s| s.drops(MqttDrop::ProtocolError)), 2);
}

#[test]
fn too_large_a_packet_is_refused_from_its_header() {
    let mut net = Net::new(
        1,
        MqttConfig {
            max_packet_size: 64,
            ..anon()
        },
    );
    let (c, _) = net.connect(0, 1, v5("x"));
    // Remaining length 1000: refused before the body arrives.
    net.feed(c, &[0x30, 0xE8, 0x07]);
    assert!(net.closed(c));
    assert_eq!(net.take(c), enc(&disconnect(0x95), Version::V5));
    assert_eq!(net.stats().total(|s| s.drops(MqttDrop::PacketTooLarge)), 1);
}

#[test]
fn unsupported_protocol_level_gets_return_code_1() {
    let mut net = Net::new(1, anon());
    let c = net.open(0, 1);
    // MQTT 3.1 (MQIsdp, level 3).
    let mut p = vec![0x10, 0];
    let body = [&[0, 6][..], b"MQIsdp", &[3, 2, 0, 60, 0, 1], b"x"].concat();
    p[1] = body.len() as u8;
    p.extend_from_slice(&body);
    net.feed(c, &p);
    assert_eq!(net.take(c), [0x20, 2, 0, 1]);
    assert!(net.closed(c));
}

#[test]
fn disconnect_ends_a_clean_session_and_pings_answer() {
    let mut net = Net::new(1, anon());
    let (c, _) = net.connect(0, 1, v5("x"));
    net.send(c, &Packet::PingReq);
    net.send(c, &Packet::PingReq);
    assert_eq!(net.take(c), [0xD0, 0, 0xD0, 0]);
    net.send(c, &disconnect(0));
    assert!(net.closed(c));
    net.close(c);
    assert_eq!(net.shards[0].session_count(), 0);
}

#[test]
fn bytes_split_anywhere_give_the_same_answers() {
    let mut whole = Vec::new();
    codec::encode(&Packet::Connect(v3("split")), Version::V311, &mut whole).unwrap();
    codec::encode(&Packet::PingReq, Version::V311, &mut whole).unwrap();
    for cut in 1..whole.len() {
        let mut net = Net::new(1, anon());
        let c = net.open(0, 1);
        net.feed(c, &whole[..cut]);
        net.feed(c, &whole[cut..]);
        assert_eq!(net.take(c), [0x20, 2, 0, 0, 0xD0, 0], "cut at {cut}");
    }
}
