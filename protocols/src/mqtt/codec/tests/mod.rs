//! The codec's tests: exact bytes for every packet type in both versions
//! ([`packets`]), the specifications' own examples ([`spec`]), one test per
//! refusal ([`errors`], [`props`]), and that decoding a PUBLISH allocates
//! nothing ([`alloc`]).

mod alloc;
mod errors;
mod packets;
mod props;
mod spec;

use super::*;

/// The largest packet the tests accept unless they say otherwise.
pub(super) const MAX: usize = 1 << 20;

/// Decodes a whole packet that must be valid.
#[track_caller]
pub(super) fn decode_ok(bytes: &[u8], v: Option<Version>) -> Packet<'_> {
    match decode(bytes, v, MAX) {
        Ok(Decoded::Packet(p, n)) => {
            assert_eq!(n, bytes.len(), "consumed");
            p
        }
        other => panic!("{bytes:02x?}: {other:?}"),
    }
}

/// The error decoding `bytes` gives.
#[track_caller]
pub(super) fn decode_err(bytes: &[u8], v: Option<Version>) -> DecodeError {
    match decode(bytes, v, MAX) {
        Err(e) => e,
        other => panic!("{bytes:02x?} decoded: {other:?}"),
    }
}

/// Checks that `packet` encodes for `v` to exactly `bytes` (through
/// [`encode`], [`packet_len`] and, for a PUBLISH, [`encode_publish_header`]
/// plus the payload), and that `bytes` decode back to it: whole, with more
/// bytes behind, and as [`Decoded::Incomplete`] for every shorter prefix.
/// The whole packet is refused as too large with a maximum one byte short,
/// from its fixed header alone.
#[track_caller]
pub(super) fn check(packet: &Packet<'_>, v: Version, bytes: &[u8]) {
    let mut out = vec![0xee];
    encode(packet, v, &mut out).unwrap();
    assert_eq!(&out[1..], bytes, "encoding of {packet:?}");
    assert_eq!(packet_len(packet, v), Ok(bytes.len()));
    if let Packet::Publish(p) = packet {
        let mut head = Vec::new();
        encode_publish_header(p, v, &mut head).unwrap();
        head.extend_from_slice(p.payload);
        assert_eq!(head, bytes, "header + payload");
    }
    let version = match packet {
        Packet::Connect(_) => None,
        _ => Some(v),
    };
    assert_eq!(
        decode(bytes, version, bytes.len()),
        Ok(Decoded::Packet(packet.clone(), bytes.len()))
    );
    let mut longer = bytes.to_vec();
    longer.extend_from_slice(&[0xc0, 0x00]);
    assert_eq!(
        decode(&longer, version, MAX),
        Ok(Decoded::Packet(packet.clone(), bytes.len()))
    );
    for n in 0..bytes.len() {
        assert_eq!(
            decode(&bytes[..n], version, MAX),
            Ok(Decoded::Incomplete),
            "prefix of {n} bytes"
        );
    }
    let header = 1 + bytes[1..].iter().take_while(|&&b| b & 0x80 != 0).count() + 1;
    assert_eq!(
        decode(&bytes[..header], version, bytes.len() - 1),
        Err(DecodeError::TooLarge { len: bytes.len() })
    );
}

/// A fixed header and body as one packet (remaining length of one byte).
pub(super) fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut v = vec![first, body.len() as u8];
    v.extend_from_slice(body);
    v
}

/// A UTF-8 string or binary field: two-byte length, then the bytes.
pub(super) fn s(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

/// The concatenation of parts.
pub(super) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}
