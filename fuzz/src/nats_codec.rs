//! NATS server operations (`protocols/src/nats/wire.rs`), the client that
//! reads them (`protocols/src/nats/client.rs`), header blocks and the topic
//! mapping (`protocols/src/nats/subject.rs`), against invariants and a
//! model of the `MSG`/`HMSG` framing written from the client protocol spec.

use std::time::Instant;

use ringport_protocols::nats::wire::{parse_server_op, Limits, MsgView, ServerOp};
use ringport_protocols::nats::{Headers, NatsClient, NatsConfig, ServerInfo, SubjectMap};

use crate::Input;

/// Every operation `parse_server_op` finds in `bytes`, front to back, and
/// how the rest ended: `Ok(())` incomplete, `Err(e)` refused.
fn parse_all(bytes: &[u8], limits: &Limits) -> (Vec<String>, Result<(), String>, usize) {
    let mut ops = Vec::new();
    let mut at = 0;
    loop {
        match parse_server_op(&bytes[at..], limits) {
            Ok(None) => return (ops, Ok(()), at),
            Err(e) => return (ops, Err(e.to_string()), at),
            Ok(Some((op, n))) => {
                assert!(n > 0 && n <= bytes.len() - at, "length {n} of {op:?}");
                check_op(&op, &bytes[at..at + n], limits);
                ops.push(format!("{op:?}"));
                at += n;
            }
        }
    }
}

/// The spec's `MSG`/`HMSG` bytes for a message, written here.
fn model_encode(m: &MsgView<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let reply = m.reply.map(|r| format!(" {r}")).unwrap_or_default();
    match m.headers {
        None => {
            out.extend_from_slice(
                format!(
                    "MSG {} {}{} {}\r\n",
                    m.subject,
                    m.sid,
                    reply,
                    m.payload.len()
                )
                .as_bytes(),
            );
        }
        Some(h) => {
            out.extend_from_slice(
                format!(
                    "HMSG {} {}{} {} {}\r\n",
                    m.subject,
                    m.sid,
                    reply,
                    h.len(),
                    h.len() + m.payload.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(h);
        }
    }
    out.extend_from_slice(m.payload);
    out.extend_from_slice(b"\r\n");
    out
}

/// One parsed operation against its bytes: every shorter prefix is
/// incomplete; a message's fields sit where the spec puts them, and the
/// message written again in the spec's canonical form parses to the same.
fn check_op(op: &ServerOp<'_>, bytes: &[u8], limits: &Limits) {
    assert!(bytes.ends_with(b"\r\n"), "{op:?} ends with CR LF");
    for cut in [0, bytes.len() / 2, bytes.len() - 1] {
        assert_eq!(
            parse_server_op(&bytes[..cut], limits),
            Ok(None),
            "a prefix of {op:?}"
        );
    }
    match op {
        ServerOp::Msg(m) => {
            let body = m.headers.map_or(0, <[u8]>::len) + m.payload.len();
            assert!(body <= limits.max_payload);
            assert!(bytes.ends_with(&[m.payload, b"\r\n"].concat()));
            assert!(!m.subject.is_empty() && !m.subject.contains([' ', '\t']));
            if let Some(h) = m.headers {
                assert!(h.starts_with(b"NATS/1.0") && h.ends_with(b"\r\n\r\n"));
                if let Ok(parsed) = Headers::parse(h) {
                    let mut again = Vec::new();
                    parsed.encode(&mut again);
                    assert_eq!(Headers::parse(&again), Ok(parsed));
                }
            }
            let canonical = model_encode(m);
            let wide = Limits {
                max_control_line: usize::MAX / 4,
                max_payload: limits.max_payload,
            };
            assert_eq!(
                parse_server_op(&canonical, &wide),
                Ok(Some((*op, canonical.len())))
            );
        }
        ServerOp::Info(json) => {
            let _ = ServerInfo::parse(json);
        }
        ServerOp::Err(text) => assert!(!text.contains('\n')),
        ServerOp::Ping | ServerOp::Pong | ServerOp::Ok => {}
    }
}

/// Input: `[line, payload_hi, payload_lo, split_hi, split_lo, bytes ...]`:
/// the control-line limit (`line` × 8, default for 0), the payload limit
/// (default for 0xffff), where to split the bytes.
///
/// Checks: operations parse the same whole and split in two at the split
/// point (the first piece presented again with the second, as the engine
/// does); each operation as [`check_op`] says; a connected client fed the
/// same pieces consumes exactly the bytes the parser framed and counts them;
/// the bytes as an MQTT topic, a relay topic and a subject map back exactly
/// or are refused; as a header block, one that parses encodes to one that
/// parses the same.
///
/// # Panics
///
/// When a check fails.
pub fn nats_codec(data: &[u8]) {
    let mut input = Input::new(data);
    let limits = Limits {
        max_control_line: match input.u8() {
            0 => Limits::default().max_control_line,
            l => usize::from(l) * 8,
        },
        max_payload: match input.u16() {
            0xffff => Limits::default().max_payload,
            // The client takes at least 1.
            p => usize::from(p).max(1),
        },
    };
    let split = usize::from(input.u16());
    let bytes = input.rest();
    let split = split.min(bytes.len());

    let whole = parse_all(bytes, &limits);
    // Split in two: what the first piece framed is kept; the rest is
    // presented again with the second piece.
    let first = parse_all(&bytes[..split], &limits);
    if first.1.is_ok() {
        let second = parse_all(&bytes[first.2..], &limits);
        let mut ops = first.0.clone();
        ops.extend(second.0);
        assert_eq!((ops, second.1), (whole.0.clone(), whole.1.clone()));
    } else {
        // An error in the first piece is the whole's error too.
        assert_eq!(first.1, whole.1);
        assert_eq!(first.0, whole.0);
    }

    // A connected client, fed the same pieces.
    let now = Instant::now();
    let mut client = NatsClient::new(
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            limits,
            ..NatsConfig::default()
        },
        now,
    )
    .expect("valid config");
    client.subscribe(">", None).expect("valid subject");
    client.next_server();
    client.handle_connected(now);
    // Short enough for the smallest control-line limit (8).
    let hello = b"INFO {}\r\nPONG\r\n";
    assert_eq!(client.handle_input(now, hello), hello.len());
    assert_eq!(client.state(), ringport_protocols::nats::State::Connected);
    let mut pending = Vec::new();
    let mut consumed = 0;
    for piece in [&bytes[..split], &bytes[split..]] {
        pending.extend_from_slice(piece);
        let n = client.handle_input(now, &pending);
        assert!(n <= pending.len());
        consumed += n;
        pending.drain(..n);
    }
    if client.state() == ringport_protocols::nats::State::Connected {
        // Still up: the client framed exactly what the parser did.
        assert_eq!(whole.1, Ok(()));
        assert_eq!(consumed, whole.2);
        assert_eq!(client.stats().bytes_in as usize, hello.len() + whole.2);
    } else {
        // A parse error, a bad INFO or a fatal -ERR ended the connection:
        // everything after it is consumed and ignored.
        assert_eq!(consumed, bytes.len());
        assert!(
            whole.1.is_err()
                || whole
                    .0
                    .iter()
                    .any(|op| op.starts_with("Info") || op.starts_with("Err"))
        );
    }
    while client.poll_event().is_some() {}

    // The bytes as topics and a subject.
    let map = SubjectMap::new("f").expect("valid prefix");
    if let Ok(topic) = std::str::from_utf8(bytes) {
        if let Ok(subject) = map.mqtt_topic_to_subject(topic) {
            assert_eq!(map.subject_to_mqtt_topic(&subject).as_deref(), Ok(topic));
        }
        if let Ok(t) = map.subject_to_mqtt_topic(topic) {
            assert_eq!(map.mqtt_topic_to_subject(&t).as_deref(), Ok(topic));
        }
        if let Ok(t) = map.subject_to_relay_topic(topic) {
            assert_eq!(map.relay_topic_to_subject(&t).as_deref(), Ok(topic));
        }
        let _ = map.mqtt_filter_to_subjects(topic);
    }
    if !bytes.is_empty() {
        let subject = map.relay_topic_to_subject(bytes).expect("any bytes map");
        let back = map.subject_to_relay_topic(&subject);
        if bytes.len() <= 255 {
            assert_eq!(back.as_deref(), Ok(bytes));
        }
    }
    if let Ok(h) = Headers::parse(bytes) {
        let mut again = Vec::new();
        h.encode(&mut again);
        assert_eq!(Headers::parse(&again), Ok(h));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{corpus, random_inputs};

    fn with(settings: [u8; 5], bytes: &[u8]) -> Vec<u8> {
        [&settings[..], bytes].concat()
    }

    #[test]
    fn model_writes_the_spec_examples() {
        let buf = b"HMSG FOO.BAR 9 INBOX.69 34 45\r\nNATS/1.0\r\nFoodGroup: vegetable\r\n\r\nHello World\r\n";
        let Ok(Some((ServerOp::Msg(m), n))) = parse_server_op(buf, &Limits::default()) else {
            panic!()
        };
        assert_eq!(n, buf.len());
        assert_eq!(model_encode(&m), buf);
        let buf = b"MSG FOO.BAR 9 11\r\nHello World\r\n";
        let Ok(Some((ServerOp::Msg(m), _))) = parse_server_op(buf, &Limits::default()) else {
            panic!()
        };
        assert_eq!(model_encode(&m), buf);
    }

    #[test]
    fn harness_on_fixed_corpus_and_random_inputs() {
        nats_codec(&[]);
        nats_codec(&with(
            [0, 0xff, 0xff, 0, 20],
            b"MSG FOO.BAR 9 11\r\nHello World\r\nPING\r\n",
        ));
        nats_codec(&with([2, 0, 4, 0, 3], b"MSG a 1 5\r\nhello\r\n"));
        nats_codec(&with(
            [0, 0xff, 0xff, 0, 9],
            b"-ERR 'Authorization Violation'\r\n",
        ));
        nats_codec(&with([0, 0xff, 0xff, 0, 1], "a/$SYS/ b.c".as_bytes()));
        for input in corpus("nats_codec") {
            nats_codec(&input);
        }
        let ops: [&[u8]; 6] = [
            b"MSG a 1 3\r\nabc\r\n",
            b"HMSG a 2 r 12 14\r\nNATS/1.0\r\n\r\nxy\r\n",
            b"PING\r\n",
            b"-ERR 'x'\r\n",
            b"INFO {\"max_payload\":9}\r\n",
            b"+OK\r\n",
        ];
        for (i, mut input) in random_inputs(23, 3000, 60).into_iter().enumerate() {
            // Mostly valid operations with a few bytes changed.
            if i % 2 == 0 && input.len() > 8 {
                let mut bytes = input[..5].to_vec();
                bytes[0] %= 4;
                for k in 0..3 {
                    bytes.extend_from_slice(ops[usize::from(input[5 + k]) % ops.len()]);
                }
                let len = bytes.len();
                for &b in &input[8..] {
                    if b % 7 == 0 {
                        bytes[5 + usize::from(b) % (len - 5)] = b"\r\n 09MSG"[usize::from(b) % 8];
                    }
                }
                input = bytes;
            }
            nats_codec(&input);
        }
    }
}
