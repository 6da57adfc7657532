//! The MQTT codec (`protocols/src/mqtt/codec/`) against a model of the fixed
//! header written from the specs (MQTT 3.1.1 section 2.2, 5.0 sections
//! 1.5.5 and 2.1) and against a round trip: whatever decodes encodes, and
//! that encoding decodes to an equal packet (issue 13).

use ringport_protocols::mqtt::codec::{
    decode, encode, encode_publish_header, packet_len, DecodeError, Decoded, Packet, Version,
};

use crate::Input;

mod build;

/// What the specs say of the fixed header at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    /// Not all of it is there yet.
    Need,
    /// The whole packet is this many bytes.
    Whole(usize),
    /// Refused from the fixed header.
    Refused(Refusal),
}

/// Why a fixed header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    TooLarge(usize),
    Malformed,
    Protocol,
}

/// The model: packet type and flags (2.1.2, 2.1.3: PUBLISH carries DUP,
/// QoS and RETAIN, QoS 3 is malformed and DUP at QoS 0 a protocol error;
/// PUBREL, SUBSCRIBE and UNSUBSCRIBE carry 0b0010, every other type 0,
/// type 0 is reserved), the first packet must be a CONNECT, AUTH is 5.0
/// only, then the remaining length: base-128 digits, least significant
/// first, at most four, the fewest possible in 5.0.
pub(crate) fn model_header(buf: &[u8], v: Option<Version>, max: usize) -> Header {
    let Some(&first) = buf.first() else {
        return Header::Need;
    };
    let ty = first >> 4;
    let flags = first & 0x0f;
    let qos = (flags >> 1) & 0x03;
    let flags_ok = match ty {
        0 => false,
        3 => qos != 3,
        6 | 8 | 10 => flags == 0b0010,
        _ => flags == 0,
    };
    if !flags_ok {
        return Header::Refused(Refusal::Malformed);
    }
    if ty == 3 && qos == 0 && flags & 0b1000 != 0 {
        return Header::Refused(Refusal::Protocol);
    }
    if (v.is_none() && ty != 1) || (v == Some(Version::V311) && ty == 15) {
        return Header::Refused(Refusal::Protocol);
    }
    let mut remaining = 0usize;
    let mut multiplier = 1usize;
    for i in 0..4 {
        let Some(&digit) = buf.get(1 + i) else {
            return Header::Need;
        };
        remaining += usize::from(digit & 0x7f) * multiplier;
        multiplier *= 128;
        if digit & 0x80 == 0 {
            if v == Some(Version::V5) && i > 0 && digit == 0 {
                return Header::Refused(Refusal::Malformed);
            }
            let total = 2 + i + remaining;
            if total > max {
                return Header::Refused(Refusal::TooLarge(total));
            }
            return Header::Whole(total);
        }
    }
    Header::Refused(Refusal::Malformed)
}

/// The version a decoded packet is encoded in: a CONNECT's own, otherwise
/// the connection's (which exists: without one only a CONNECT decodes).
fn version_of(p: &Packet<'_>, v: Option<Version>) -> Version {
    match p {
        Packet::Connect(c) => c.version,
        _ => v.expect("only a CONNECT decodes before the version is known"),
    }
}

/// The round trip of one decoded packet (`bytes` is exactly what it came
/// from): it encodes, in as many bytes as `packet_len` says; the encoding
/// decodes to an equal packet and is a fixed point (encoding that again
/// gives the same bytes); a PUBLISH's header plus its payload is the same
/// encoding; every shorter prefix of the encoding is incomplete. Encoding
/// in the other version does not panic, nor does decoding that.
fn check_round_trip(p: &Packet<'_>, bytes: &[u8], v: Option<Version>) {
    let ev = version_of(p, v);
    let mut out = Vec::new();
    encode(p, ev, &mut out).unwrap_or_else(|e| panic!("{p:?} from {bytes:02x?}: {e}"));
    assert_eq!(packet_len(p, ev), Ok(out.len()), "{p:?}");
    let again = match decode(&out, v, out.len()) {
        Ok(Decoded::Packet(q, n)) => {
            assert_eq!(n, out.len());
            q
        }
        other => panic!("{p:?} from {bytes:02x?} encoded as {out:02x?}: {other:?}"),
    };
    assert_eq!(
        &again, p,
        "decoded from {bytes:02x?}, re-encoded as {out:02x?}"
    );
    let mut twice = Vec::new();
    encode(&again, ev, &mut twice).expect("encodes again");
    assert_eq!(twice, out, "{p:?}: the encoding is not a fixed point");
    if let Packet::Publish(publish) = p {
        let mut head = Vec::new();
        encode_publish_header(publish, ev, &mut head).expect("the header encodes");
        head.extend_from_slice(publish.payload);
        assert_eq!(head, out, "{p:?}: header + payload");
    }
    for cut in [0, 1, out.len() / 2, out.len() - 1] {
        assert_eq!(
            decode(&out[..cut], v, usize::MAX),
            Ok(Decoded::Incomplete),
            "{out:02x?} cut at {cut}"
        );
    }
    let other = match ev {
        Version::V311 => Version::V5,
        Version::V5 => Version::V311,
    };
    let mut o = Vec::new();
    if encode(p, other, &mut o).is_ok() {
        assert_eq!(packet_len(p, other), Ok(o.len()));
        let ov = if v.is_none() { None } else { Some(other) };
        let _ = decode(&o, ov, usize::MAX);
    }
}

/// Decodes `bytes` as a stream for a connection of version `v` (switching
/// to the CONNECT's version after one when `v` is `None`), each packet
/// checked against the model and round-tripped, until the stream needs
/// more bytes or a packet is refused. Returns how many packets decoded
/// and how many bytes are left.
fn stream(bytes: &[u8], mut v: Option<Version>, max: usize) -> (usize, usize) {
    let mut rest = bytes;
    let mut packets = 0;
    loop {
        let model = model_header(rest, v, max);
        let got = decode(rest, v, max);
        match (model, got) {
            (Header::Need, Ok(Decoded::Incomplete)) => return (packets, rest.len()),
            (Header::Whole(total), Ok(Decoded::Incomplete)) => {
                assert!(rest.len() < total, "{rest:02x?} incomplete at {total}");
                return (packets, rest.len());
            }
            (Header::Whole(total), Ok(Decoded::Packet(p, n))) => {
                assert_eq!(n, total, "{rest:02x?}");
                check_round_trip(&p, &rest[..n], v);
                if let (None, Packet::Connect(c)) = (v, &p) {
                    v = Some(c.version);
                }
                rest = &rest[n..];
                packets += 1;
            }
            (Header::Whole(total), Err(e)) => {
                // A refusal of the body only once the body is there.
                assert!(rest.len() >= total, "{rest:02x?}: {e:?} before the body");
                match e {
                    DecodeError::Malformed(_) | DecodeError::Protocol(_) => {}
                    DecodeError::UnsupportedVersion(_) => assert_eq!(rest[0], 0x10),
                    DecodeError::TooLarge { .. } => panic!("{rest:02x?}: {e:?}"),
                }
                return (packets, rest.len());
            }
            (Header::Refused(r), Err(e)) => {
                let got = match e {
                    DecodeError::TooLarge { len } => Refusal::TooLarge(len),
                    DecodeError::Malformed(_) => Refusal::Malformed,
                    DecodeError::Protocol(_) => Refusal::Protocol,
                    DecodeError::UnsupportedVersion(_) => panic!("{rest:02x?}: {e:?}"),
                };
                assert_eq!(got, r, "{rest:02x?}: {e:?}");
                return (packets, rest.len());
            }
            (model, got) => panic!("{rest:02x?} as {v:?}: model {model:?}, codec {got:?}"),
        }
    }
}

/// Builds up to 16 valid packets from `data` (see [`build`]), encodes each
/// and checks that the encoding decodes back to it and round-trips.
fn built_packets(data: &[u8]) {
    let mut input = Input::new(data);
    let ids: Vec<u32> = (0..input.u8() % 4)
        .map(|_| input.u32() % 268_435_455 + 1)
        .collect();
    for _ in 0..16 {
        if input.is_empty() {
            break;
        }
        let v = if input.u8() & 1 == 1 {
            Version::V5
        } else {
            Version::V311
        };
        let p = build::packet(&mut input, v, &ids);
        let mut out = Vec::new();
        encode(&p, v, &mut out).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        let dv = match p {
            Packet::Connect(_) => None,
            _ => Some(v),
        };
        match decode(&out, dv, usize::MAX) {
            Ok(Decoded::Packet(q, n)) => {
                assert_eq!(n, out.len());
                assert_eq!(q, p, "{v:?} {out:02x?}");
            }
            other => panic!("{p:?} as {v:?} encoded as {out:02x?}: {other:?}"),
        }
        assert_eq!(model_header(&out, dv, usize::MAX), Header::Whole(out.len()));
        check_round_trip(&p, &out, dv);
    }
}

/// Input: `[max_hi, max_lo, bytes ...]`; the largest packet accepted is the
/// two-byte value, or no limit when it is 0xffff.
///
/// The bytes are decoded as a stream three times: before a CONNECT, as a
/// 3.1.1 connection and as a 5.0 connection. Nothing panics; the fixed
/// header of every packet is judged as the model judges it; every packet
/// that decodes round-trips (see `check_round_trip`). Then the whole input
/// is read as the description of valid packets (see [`build`]), each of
/// which must encode and decode back to itself.
///
/// # Panics
///
/// When a check fails.
pub fn mqtt_codec(data: &[u8]) {
    let mut input = Input::new(data);
    let max = match input.u16() {
        0xffff => usize::MAX,
        m => usize::from(m),
    };
    let bytes = input.rest();
    for v in [None, Some(Version::V311), Some(Version::V5)] {
        stream(bytes, v, max);
    }
    built_packets(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{corpus, random_inputs, xorshift};

    #[test]
    fn model_agrees_with_the_spec_examples() {
        let v5 = Some(Version::V5);
        let v3 = Some(Version::V311);
        assert_eq!(model_header(&[], v5, 9), Header::Need);
        assert_eq!(model_header(&[0xc0], v5, 9), Header::Need);
        assert_eq!(model_header(&[0xc0, 0], v5, 9), Header::Whole(2));
        // 321 = 65 + 2 * 128 (the remaining length example).
        assert_eq!(
            model_header(&[0x30, 0xc1, 0x02], v5, 400),
            Header::Whole(324)
        );
        assert_eq!(
            model_header(&[0x30, 0xc1, 0x02], v5, 300),
            Header::Refused(Refusal::TooLarge(324))
        );
        assert_eq!(
            model_header(&[0x30, 0xff, 0xff, 0xff, 0x7f], v5, usize::MAX),
            Header::Whole(5 + 268_435_455)
        );
        assert_eq!(
            model_header(&[0x30, 0xff, 0xff, 0xff, 0xff], v5, usize::MAX),
            Header::Refused(Refusal::Malformed)
        );
        assert_eq!(model_header(&[0xc0, 0x80, 0x00], v3, 9), Header::Whole(3));
        assert_eq!(
            model_header(&[0xc0, 0x80, 0x00], v5, 9),
            Header::Refused(Refusal::Malformed)
        );
        assert_eq!(model_header(&[0x62, 2], v5, 9), Header::Whole(4));
        assert_eq!(
            model_header(&[0x60, 2], v5, 9),
            Header::Refused(Refusal::Malformed)
        );
        assert_eq!(
            model_header(&[0x36, 2], v5, 9),
            Header::Refused(Refusal::Malformed)
        );
        assert_eq!(
            model_header(&[0x38, 2], v5, 9),
            Header::Refused(Refusal::Protocol)
        );
        assert_eq!(
            model_header(&[0xc0, 0], None, 9),
            Header::Refused(Refusal::Protocol)
        );
        assert_eq!(
            model_header(&[0xf0, 0], v3, 9),
            Header::Refused(Refusal::Protocol)
        );
        assert_eq!(model_header(&[0x10, 5], None, 9), Header::Whole(7));
    }

    /// The session seeds are whole conversations: every packet decodes
    /// (and so round-trips) before the CONNECT and on its version.
    #[test]
    fn session_seeds_decode_whole() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/mqtt_codec");
        let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
        let v311 = read("v311-session");
        assert_eq!(stream(&v311[2..], None, usize::MAX), (12, 0));
        assert_eq!(stream(&v311[2..], Some(Version::V311), usize::MAX), (12, 0));
        let v5 = read("v5-session");
        assert_eq!(stream(&v5[2..], None, usize::MAX), (13, 0));
        assert_eq!(stream(&v5[2..], Some(Version::V5), usize::MAX), (13, 0));
        let server = read("v311-server");
        assert_eq!(
            stream(&server[2..], Some(Version::V311), usize::MAX),
            (4, 0)
        );
        let server = read("v5-server");
        assert_eq!(stream(&server[2..], Some(Version::V5), usize::MAX), (6, 0));
        // The 136-byte CONNECT with a maximum of 64.
        let small = read("v5-connect-small-max");
        assert_eq!(
            decode(&small[2..], None, 64),
            Err(DecodeError::TooLarge { len: 134 })
        );
    }

    #[test]
    fn harness_on_the_seeds_and_their_mutations() {
        let seeds = corpus("mqtt_codec");
        let mut state = 0x6d71_7474_u64;
        for seed in &seeds {
            mqtt_codec(seed);
            for cut in 2..seed.len() {
                mqtt_codec(&seed[..cut]);
            }
            // Single-byte changes past the settings.
            for _ in 0..400 {
                let mut m = seed.clone();
                if m.len() > 2 {
                    let at = 2 + (xorshift(&mut state) as usize) % (m.len() - 2);
                    m[at] = xorshift(&mut state) as u8;
                }
                mqtt_codec(&m);
            }
        }
    }

    /// The builder reaches every packet type, and what it builds passes.
    #[test]
    fn built_packets_cover_every_type() {
        let mut seen = [false; 16];
        for input in random_inputs(29, 2000, 120) {
            built_packets(&input);
            let mut i = Input::new(&input);
            let v = if i.u8() & 1 == 1 {
                Version::V5
            } else {
                Version::V311
            };
            seen[usize::from(build::packet(&mut i, v, &[7]).packet_type())] = true;
        }
        assert_eq!(seen[1..], [true; 15]);
    }

    #[test]
    fn harness_survives_pseudo_random_inputs() {
        mqtt_codec(&[]);
        mqtt_codec(&[0xff, 0xff]);
        let firsts = [
            0x10, 0x20, 0x30, 0x32, 0x3d, 0x40, 0x62, 0x82, 0x90, 0xa2, 0xb0, 0xe0, 0xf0,
        ];
        for mut input in random_inputs(13, 3000, 80) {
            // A known first byte and a remaining length that fits, most
            // of the time.
            if input.len() > 4 {
                input[0] = 0xff;
                input[1] = 0xff;
                input[2] = firsts[usize::from(input[2]) % firsts.len()];
                input[3] = (input.len() - 4) as u8;
            }
            mqtt_codec(&input);
        }
    }
}
