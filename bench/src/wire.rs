//! The messages the load generator sends and how replies are checked.
//!
//! Every message is a sockperf message (see `ringport_protocols::sockperf::wire`):
//! a 14-byte header (sequence, flags, total length) and a payload whose bytes
//! are a function of the sequence number, so that any reply can be checked
//! byte for byte without keeping a copy of what was sent.

use ringport_protocols::sockperf::{Flags, HEADER_LEN};

/// Smallest message: a bare sockperf header.
pub const MIN_SIZE: usize = HEADER_LEN;

/// What the server is expected to do with a message, and so what a correct reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// sockperf reflection: the reply is the request with the CLIENT flag cleared;
    /// a message without PONG_REQUEST is consumed silently (used for ingest).
    Sockperf,
    /// Plain echo: the reply is the request, byte for byte.
    Echo,
}

impl Protocol {
    /// The name used in listener specs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Sockperf => "sockperf",
            Protocol::Echo => "echo",
        }
    }
}

/// Flags of a request that wants a reply.
pub const REQUEST_FLAGS: Flags = Flags::CLIENT.with(Flags::PONG_REQUEST);
/// Flags of a one-way (ingest) message: counted, never answered.
pub const ONE_WAY_FLAGS: Flags = Flags::CLIENT;

/// The payload byte at offset `i` (from the start of the message) of message `seq`.
#[inline]
fn pattern(seq: u64, i: usize) -> u8 {
    (seq as u8)
        .wrapping_mul(31)
        .wrapping_add(i as u8)
        .wrapping_add(0x5a)
}

/// Appends message `seq` of `size` bytes (at least [`MIN_SIZE`]) to `out`.
pub fn encode(out: &mut Vec<u8>, seq: u64, flags: Flags, size: usize) {
    let size = size.max(MIN_SIZE);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&flags.bits().to_be_bytes());
    out.extend_from_slice(&(size as u32).to_be_bytes());
    out.extend((HEADER_LEN..size).map(|i| pattern(seq, i)));
}

/// Writes message `seq` of `buf.len()` bytes into `buf`.
///
/// # Panics
/// If `buf` is shorter than [`MIN_SIZE`].
pub fn encode_into(buf: &mut [u8], seq: u64, flags: Flags) {
    let size = buf.len();
    buf[0..8].copy_from_slice(&seq.to_be_bytes());
    buf[8..10].copy_from_slice(&flags.bits().to_be_bytes());
    buf[10..14].copy_from_slice(&(size as u32).to_be_bytes());
    for (i, b) in buf.iter_mut().enumerate().skip(HEADER_LEN) {
        *b = pattern(seq, i);
    }
}

/// The sequence number of a reply (its first 8 bytes), if it is long enough.
#[inline]
pub fn sequence(reply: &[u8]) -> Option<u64> {
    reply
        .get(0..8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// Whether `reply` is exactly the correct reply of `protocol` to request `seq`
/// of `size` bytes. Any wrong byte (header or payload) or length makes it false.
pub fn verify(protocol: Protocol, reply: &[u8], seq: u64, size: usize) -> bool {
    let size = size.max(MIN_SIZE);
    if reply.len() != size {
        return false;
    }
    let flags = match protocol {
        Protocol::Sockperf => REQUEST_FLAGS.without(Flags::CLIENT),
        Protocol::Echo => REQUEST_FLAGS,
    };
    reply[0..8] == seq.to_be_bytes()
        && reply[8..10] == flags.bits().to_be_bytes()
        && reply[10..14] == (size as u32).to_be_bytes()
        && reply[HEADER_LEN..]
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern(seq, i + HEADER_LEN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reflect(mut m: Vec<u8>) -> Vec<u8> {
        let flags = u16::from_be_bytes([m[8], m[9]]) & !Flags::CLIENT.bits();
        m[8..10].copy_from_slice(&flags.to_be_bytes());
        m
    }

    #[test]
    fn encode_verify_round_trip_and_every_wrong_byte_is_caught() {
        let mut m = Vec::new();
        encode(&mut m, 77, REQUEST_FLAGS, 64);
        assert_eq!(m.len(), 64);
        let mut b = vec![0; 64];
        encode_into(&mut b, 77, REQUEST_FLAGS);
        assert_eq!(b, m);
        assert!(verify(Protocol::Echo, &m, 77, 64));
        assert!(!verify(Protocol::Sockperf, &m, 77, 64));
        let r = reflect(m.clone());
        assert!(verify(Protocol::Sockperf, &r, 77, 64));
        assert!(!verify(Protocol::Sockperf, &r, 78, 64));
        for i in 0..64 {
            let mut bad = r.clone();
            bad[i] ^= 0x01;
            assert!(!verify(Protocol::Sockperf, &bad, 77, 64), "byte {i}");
        }
        assert!(!verify(Protocol::Sockperf, &r[..63], 77, 64));
        assert_eq!(sequence(&r), Some(77));
    }
}
