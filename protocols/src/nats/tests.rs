//! The client against a scripted server: exact bytes both ways.

use std::time::{Duration, Instant};

use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};
use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};

use super::*;

const INFO: &[u8] = b"INFO {\"server_id\":\"S1\",\"version\":\"2.9.10\",\"proto\":1,\"headers\":true,\"max_payload\":1024}\r\n";
const CONNECT_PLAIN: &str = "CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\"lang\":\"rust\",\"version\":\"ringport-0.1.0\",\"protocol\":1,\"echo\":false,\"headers\":true,\"no_responders\":true}\r\nPING\r\n";

fn config() -> NatsConfig {
    NatsConfig {
        servers: vec!["nats://127.0.0.1:4222".into()],
        echo: false,
        ..NatsConfig::default()
    }
}

/// Takes everything the client has to send, as text.
fn take(c: &mut NatsClient) -> String {
    let out = String::from_utf8(c.pending_transmit().to_vec()).unwrap();
    c.advance_transmit(out.len());
    out
}

fn events(c: &mut NatsClient) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn feed(c: &mut NatsClient, now: Instant, data: &[u8]) {
    assert_eq!(c.handle_input(now, data), data.len());
}

/// A client logged in at `now`, its handshake bytes taken.
fn connected(config: NatsConfig, now: Instant) -> NatsClient {
    let mut c = NatsClient::new(config, now).unwrap();
    c.next_server();
    c.handle_connected(now);
    feed(&mut c, now, INFO);
    take(&mut c);
    feed(&mut c, now, b"PONG\r\n");
    assert!(matches!(events(&mut c)[..], [Event::Connected { .. }]));
    c
}

#[test]
fn handshake_waits_for_info_then_pong() {
    let now = Instant::now();
    let mut c = NatsClient::new(config(), now).unwrap();
    assert_eq!(c.state(), State::Disconnected);
    assert_eq!(c.next_server().to_string(), "127.0.0.1:4222");
    c.handle_connected(now);
    assert_eq!(c.state(), State::AwaitingInfo);
    assert_eq!(take(&mut c), "");
    feed(&mut c, now, INFO);
    assert_eq!(c.state(), State::AwaitingPong);
    assert_eq!(take(&mut c), CONNECT_PLAIN);
    assert_eq!(events(&mut c), []);
    feed(&mut c, now, b"PONG\r\n");
    assert_eq!(c.state(), State::Connected);
    assert_eq!(
        events(&mut c),
        [Event::Connected {
            server: "127.0.0.1:4222".into(),
            server_id: "S1".into()
        }]
    );
    assert_eq!(c.server_info().unwrap().max_payload, 1024);
    let s = c.stats();
    assert_eq!((s.connects, s.reconnects), (1, 0));
    assert_eq!(s.bytes_in as usize, INFO.len() + 6);
    assert_eq!(s.bytes_out as usize, CONNECT_PLAIN.len());
}

#[test]
fn server_pings_are_answered() {
    let now = Instant::now();
    let mut c = connected(config(), now);
    feed(&mut c, now, b"PING\r\n");
    assert_eq!(take(&mut c), "PONG\r\n");
}

fn connect_line(auth: Auth, url: &str, info: &[u8]) -> String {
    let now = Instant::now();
    let mut c = NatsClient::new(
        NatsConfig {
            servers: vec![url.into()],
            auth,
            name: Some("bridge-1".into()),
            ..config()
        },
        now,
    )
    .unwrap();
    c.next_server();
    c.handle_connected(now);
    feed(&mut c, now, info);
    take(&mut c)
}

#[test]
fn credentials_go_into_connect() {
    let base = "CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\"name\":\"bridge-1\",\"lang\":\"rust\",\"version\":\"ringport-0.1.0\",\"protocol\":1,\"echo\":false,\"headers\":true,\"no_responders\":true";
    let user = Auth::UserPassword {
        user: "alice".into(),
        password: "s3cret".into(),
    };
    assert_eq!(
        connect_line(user.clone(), "nats://127.0.0.1:1", INFO),
        format!("{base},\"user\":\"alice\",\"pass\":\"s3cret\"}}\r\nPING\r\n")
    );
    assert_eq!(
        connect_line(Auth::Token("t0k".into()), "nats://127.0.0.1:1", INFO),
        format!("{base},\"auth_token\":\"t0k\"}}\r\nPING\r\n")
    );
    // A URL's own credentials win over the configured ones.
    assert_eq!(
        connect_line(user, "nats://bob:pw@127.0.0.1:1", INFO),
        format!("{base},\"user\":\"bob\",\"pass\":\"pw\"}}\r\nPING\r\n")
    );
}

#[test]
fn nkey_login_signs_the_nonce() {
    let seed = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY";
    let public = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4";
    let info =
        b"INFO {\"server_id\":\"S1\",\"auth_required\":true,\"nonce\":\"DhXdTMAeiHhLDig\"}\r\n";
    let line = connect_line(Auth::NKeySeed(seed.into()), "nats://127.0.0.1:1", info);
    let json = line
        .strip_prefix("CONNECT ")
        .and_then(|l| l.strip_suffix("\r\nPING\r\n"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["nkey"], public);
    let sig = BASE64URL_NOPAD
        .decode(v["sig"].as_str().unwrap().as_bytes())
        .unwrap();
    let raw = BASE32_NOPAD.decode(public.as_bytes()).unwrap();
    UnparsedPublicKey::new(&ED25519, &raw[1..33])
        .verify(b"DhXdTMAeiHhLDig", &sig)
        .expect("the signature verifies with the public key");
    assert!(v.get("user").is_none() && v.get("pass").is_none());
}

#[test]
fn bad_config_names_the_field() {
    let now = Instant::now();
    let e = NatsClient::new(NatsConfig::default(), now).unwrap_err();
    assert_eq!(
        e.to_string(),
        "servers: NATS server URL ``: give at least one server (--nats nats://HOST:PORT)"
    );
    let e = NatsClient::new(
        NatsConfig {
            auth: Auth::NKeySeed("SUAA".into()),
            ..config()
        },
        now,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "auth (NKey seed): an NKey seed is 58 characters long"
    );
    let e = NatsClient::new(
        NatsConfig {
            buffer_messages: 0,
            ..config()
        },
        now,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "buffer_messages must be more than 0");
    let e = NatsClient::new(
        NatsConfig {
            ping_interval: Duration::ZERO,
            ..config()
        },
        now,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "ping_interval must be more than 0");
    // The transmit buffer holds the token in CONNECT; Debug does not show it.
    let mut c = NatsClient::new(
        NatsConfig {
            auth: Auth::Token("t0p-s3cr3t".into()),
            ..config()
        },
        now,
    )
    .unwrap();
    c.next_server();
    c.handle_connected(now);
    feed(&mut c, now, INFO);
    assert!(String::from_utf8_lossy(c.pending_transmit()).contains("t0p-s3cr3t"));
    assert!(!format!("{c:?}").contains("t0p-s3cr3t"));
    assert_eq!(
        format!("{:?}", Auth::Token("secret".into())),
        "Token(<hidden>)"
    );
}

#[test]
fn an_authorization_violation_is_surfaced_with_its_reason() {
    let now = Instant::now();
    let mut c = NatsClient::new(config(), now).unwrap();
    c.next_server();
    c.handle_connected(now);
    feed(&mut c, now, INFO);
    take(&mut c);
    feed(&mut c, now, b"-ERR 'Authorization Violation'\r\n");
    let ev = events(&mut c);
    let [Event::NeedReconnect(DisconnectReason::Server(e))] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(e.message, "Authorization Violation");
    assert_eq!(e.kind(), ServerErrorKind::AuthorizationViolation);
    assert_eq!(c.state(), State::Disconnected);
    assert_eq!(c.stats().disconnects_server_error, 1);
    // Bytes after it are ignored, and the transport closing says nothing more.
    assert_eq!(c.handle_input(now, b"garbage"), 7);
    c.handle_disconnected(now);
    assert_eq!(events(&mut c), []);
    assert_eq!(c.stats().disconnects_transport, 0);
}

#[test]
fn a_permissions_violation_keeps_the_connection() {
    let now = Instant::now();
    let mut c = connected(config(), now);
    feed(
        &mut c,
        now,
        b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n",
    );
    assert_eq!(
        events(&mut c),
        [Event::ServerError(ServerError {
            message: "Permissions Violation for Publish to \"x\"".into()
        })]
    );
    assert_eq!(c.state(), State::Connected);
    assert_eq!(c.stats().server_errors, 1);
}

#[test]
fn messages_are_delivered_with_headers_and_origin() {
    let now = Instant::now();
    let mut c = connected(config(), now);
    let sid = c.subscribe("ringport.>", None).unwrap();
    let q = c.subscribe("jobs", Some("workers")).unwrap();
    assert_eq!((sid, q), (1, 2));
    assert_eq!(take(&mut c), "SUB ringport.> 1\r\nSUB jobs workers 2\r\n");
    feed(
        &mut c,
        now,
        b"MSG ringport.a 1 11\r\nHello World\r\nHMSG ringport.b 1 _INBOX.1 37 40\r\nNATS/1.0\r\nRingport-Origin: node-a\r\n\r\nabc\r\nMSG x 99 1\r\nz\r\n",
    );
    let mut headers = Headers::new();
    headers.append(ORIGIN_HEADER, "node-a").unwrap();
    let ev = events(&mut c);
    assert_eq!(
        ev,
        [
            Event::Message(Message {
                subject: "ringport.a".into(),
                sid: 1,
                reply: None,
                headers: None,
                payload: b"Hello World".to_vec(),
            }),
            Event::Message(Message {
                subject: "ringport.b".into(),
                sid: 1,
                reply: Some("_INBOX.1".into()),
                headers: Some(headers),
                payload: b"abc".to_vec(),
            }),
        ]
    );
    let Event::Message(m) = &ev[1] else { panic!() };
    assert_eq!(m.origin(), Some("node-a"));
    let s = c.stats();
    assert_eq!((s.received, s.dropped_unknown_sid), (2, 1));
}

#[test]
fn publish_writes_pub_and_hpub() {
    let now = Instant::now();
    let mut c = connected(config(), now);
    c.publish("FOO", None, None, b"Hello NATS!").unwrap();
    let mut h = Headers::new();
    h.append(ORIGIN_HEADER, "n1").unwrap();
    c.publish("a.b", Some("r"), Some(&h), b"x").unwrap();
    assert_eq!(c.stats().buffered_messages, 2);
    assert_eq!(
        take(&mut c),
        "PUB FOO 11\r\nHello NATS!\r\nHPUB a.b r 33 34\r\nNATS/1.0\r\nRingport-Origin: n1\r\n\r\nx\r\n"
    );
    let s = c.stats();
    assert_eq!(
        (s.published, s.buffered_messages, s.buffered_bytes),
        (2, 0, 0)
    );
    assert_eq!(
        c.publish("a.*", None, None, b""),
        Err(PublishError::Subject(SubjectError::BadWildcard))
    );
    assert_eq!(
        c.publish("a", None, None, &[0; 1025]),
        Err(PublishError::TooLarge),
        "the server's max_payload is 1024"
    );
    c.publish("a", None, None, &[0; 1024]).unwrap();
    let s = c.stats();
    assert_eq!((s.dropped_bad_subject, s.dropped_too_large), (1, 1));
}

#[test]
fn keep_alive_pings_when_idle_and_gives_up_after_two() {
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    let mut c = connected(
        NatsConfig {
            ping_interval: 10 * s,
            max_pings_outstanding: 2,
            ..config()
        },
        t0,
    );
    assert_eq!(c.poll_timeout(), Some(t0 + 10 * s));
    c.handle_timeout(t0 + 9 * s);
    assert_eq!(take(&mut c), "");
    // Traffic from the server postpones the ping.
    feed(&mut c, t0 + 5 * s, b"PING\r\n");
    take(&mut c);
    c.handle_timeout(t0 + 10 * s);
    assert_eq!(take(&mut c), "");
    assert_eq!(c.poll_timeout(), Some(t0 + 15 * s));
    c.handle_timeout(t0 + 15 * s);
    assert_eq!(take(&mut c), "PING\r\n");
    // An answer resets the count.
    feed(&mut c, t0 + 16 * s, b"PONG\r\n");
    c.handle_timeout(t0 + 26 * s);
    assert_eq!(take(&mut c), "PING\r\n");
    c.handle_timeout(t0 + 36 * s);
    assert_eq!(take(&mut c), "PING\r\n");
    assert_eq!(events(&mut c), []);
    c.handle_timeout(t0 + 46 * s);
    assert_eq!(
        events(&mut c),
        [Event::NeedReconnect(DisconnectReason::StaleConnection {
            unanswered: 2
        })]
    );
    let st = c.stats();
    assert_eq!((st.pings_sent, st.disconnects_stale), (3, 1));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn a_slow_handshake_times_out() {
    let t0 = Instant::now();
    let mut c = NatsClient::new(config(), t0).unwrap();
    c.next_server();
    c.handle_connected(t0);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    c.handle_timeout(t0 + Duration::from_millis(4999));
    assert_eq!(events(&mut c), []);
    c.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(
        events(&mut c),
        [Event::NeedReconnect(DisconnectReason::HandshakeTimeout)]
    );
}

#[test]
fn malformed_input_ends_the_connection_with_the_reason() {
    let now = Instant::now();
    let mut c = connected(config(), now);
    feed(&mut c, now, b"MSG a 1 x\r\n");
    assert_eq!(
        events(&mut c),
        [Event::NeedReconnect(DisconnectReason::Protocol(
            WireError::BadFields
        ))]
    );
    let mut c = connected(config(), now);
    feed(&mut c, now, b"MSG a 1 2000000\r\n");
    assert_eq!(
        events(&mut c),
        [Event::NeedReconnect(DisconnectReason::Protocol(
            WireError::PayloadTooLarge
        ))]
    );
    let mut c = NatsClient::new(config(), now).unwrap();
    c.next_server();
    c.handle_connected(now);
    feed(&mut c, now, b"INFO {nope}\r\n");
    assert_eq!(
        events(&mut c),
        [Event::NeedReconnect(DisconnectReason::BadInfo)]
    );
    assert_eq!(c.stats().disconnects_protocol, 1);
}

/// The buffer while disconnected: exact limits, exact drop counts, and on
/// reconnect CONNECT, then the subscriptions, then the buffer in order.
#[test]
fn reconnect_replays_subscriptions_then_flushes_the_buffer_in_order() {
    let now = Instant::now();
    // "PUB t.N 1\r\nN\r\n" is 14 bytes: room for 3 in 45 bytes.
    let mut c = connected(
        NatsConfig {
            buffer_bytes: 45,
            buffer_messages: 100,
            ..config()
        },
        now,
    );
    let a = c.subscribe("a.>", None).unwrap();
    let b = c.subscribe("b", Some("q")).unwrap();
    c.unsubscribe(b, Some(5));
    feed(&mut c, now, b"MSG b 2 1\r\nx\r\nMSG b 2 1\r\ny\r\n");
    take(&mut c);
    c.handle_disconnected(now);
    assert_eq!(
        events(&mut c)[2..],
        [Event::NeedReconnect(DisconnectReason::TransportClosed)]
    );
    assert_eq!(take(&mut c), "");
    let mut results = Vec::new();
    for i in 0..5 {
        results.push(c.publish(&format!("t.{i}"), None, None, i.to_string().as_bytes()));
    }
    assert_eq!(
        results,
        [
            Ok(()),
            Ok(()),
            Ok(()),
            Err(PublishError::BufferFull),
            Err(PublishError::BufferFull)
        ]
    );
    let s = c.stats();
    assert_eq!(
        (s.dropped_buffer_full, s.buffered_messages, s.buffered_bytes),
        (2, 3, 42)
    );
    // The next server, the same one here; nothing is sent before the login.
    c.next_server();
    c.handle_connected(now);
    feed(&mut c, now, INFO);
    assert_eq!(take(&mut c), CONNECT_PLAIN);
    feed(&mut c, now, b"PONG\r\n");
    assert_eq!(
        take(&mut c),
        format!(
            "SUB a.> {a}\r\nSUB b q {b}\r\nUNSUB {b} 3\r\nPUB t.0 1\r\n0\r\nPUB t.1 1\r\n1\r\nPUB t.2 1\r\n2\r\n"
        )
    );
    let s = c.stats();
    assert_eq!(
        (s.connects, s.reconnects, s.published, s.buffered_messages),
        (2, 1, 3, 0)
    );
}

#[test]
fn the_message_count_bounds_the_buffer_too() {
    let now = Instant::now();
    let mut c = NatsClient::new(
        NatsConfig {
            buffer_messages: 2,
            ..config()
        },
        now,
    )
    .unwrap();
    for _ in 0..2 {
        c.publish("x", None, None, b"").unwrap();
    }
    assert_eq!(
        c.publish("x", None, None, b""),
        Err(PublishError::BufferFull)
    );
    assert_eq!(c.stats().dropped_buffer_full, 1);
}

/// Publishes the transport has not taken when the connection drops are sent
/// on the next one; one it took only in part is lost, and counted.
#[test]
fn untaken_publishes_survive_a_disconnect() {
    let now = Instant::now();
    let mut c = connected(config(), now);
    for i in 0..3 {
        c.publish("t", None, None, format!("m{i}").as_bytes())
            .unwrap();
    }
    // "PUB t 2\r\nm0\r\n" is 13 bytes: take the first and 5 bytes of the second.
    c.advance_transmit(18);
    c.handle_disconnected(now);
    let s = c.stats();
    assert_eq!(
        (s.published, s.lost_in_flight, s.buffered_messages),
        (1, 1, 1)
    );
    c.publish("t", None, None, b"m3").unwrap();
    c.handle_connected(now);
    feed(&mut c, now, INFO);
    take(&mut c);
    feed(&mut c, now, b"PONG\r\n");
    assert_eq!(take(&mut c), "PUB t 2\r\nm2\r\nPUB t 2\r\nm3\r\n");
    assert_eq!(c.stats().published, 3);
}

#[test]
fn unsubscribe_with_a_maximum_ends_after_it() {
    let now = Instant::now();
    let mut c = connected(config(), now);
    let sid = c.subscribe("x", None).unwrap();
    assert!(c.unsubscribe(sid, Some(1)));
    assert_eq!(take(&mut c), "SUB x 1\r\nUNSUB 1 1\r\n");
    feed(&mut c, now, b"MSG x 1 0\r\n\r\nMSG x 1 0\r\n\r\n");
    assert_eq!(events(&mut c).len(), 1);
    assert_eq!(c.subscriptions().count(), 0);
    assert!(!c.unsubscribe(sid, None));
    let other = c.subscribe("y", None).unwrap();
    assert!(c.unsubscribe(other, None));
    assert_eq!(take(&mut c), "SUB y 2\r\nUNSUB 2\r\n");
}

/// A whole session fed one byte at a time gives the same events and bytes
/// as fed at once.
#[test]
fn byte_by_byte_input_gives_the_same_events() {
    let session: &[u8] = b"INFO {\"server_id\":\"S1\",\"connect_urls\":[\"127.0.0.1:4223\"]}\r\nPONG\r\nPING\r\nMSG a 1 3\r\nabc\r\nHMSG a 1 18 20\r\nNATS/1.0\r\nA: b\r\n\r\n\r\nhi\r\n";
    let run = |pieces: &[&[u8]]| {
        let now = Instant::now();
        let mut c = NatsClient::new(config(), now).unwrap();
        c.subscribe("a", None).unwrap();
        c.next_server();
        c.handle_connected(now);
        let mut pending = Vec::new();
        for piece in pieces {
            pending.extend_from_slice(piece);
            let n = c.handle_input(now, &pending);
            pending.drain(..n);
        }
        assert!(pending.is_empty());
        let out = take(&mut c);
        (events(&mut c), out, c.servers().len())
    };
    let whole = run(&[session]);
    assert_eq!(whole.0.len(), 3, "{:?}", whole.0);
    assert_eq!(whole.2, 2, "the announced server is learned");
    let bytes: Vec<&[u8]> = session.chunks(1).collect();
    assert_eq!(run(&bytes), whole);
}
