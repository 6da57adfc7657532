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
#[cfg(test)]
fn pattern(seq: u64, i: usize) -> u8 {
    (seq as u8)
        .wrapping_mul(31)
        .wrapping_add(i as u8)
        .wrapping_add(0x5a)
}

/// Longest payload a message has (sizes are at most 65,000 bytes).
const MAX_PAYLOAD: usize = 65_536;

/// `TABLE[j] = j + 0x5a (mod 256)`. Byte `i` of message `seq` is
/// `(31 seq + i + 0x5a) mod 256`, which is `TABLE[i + 31 seq mod 256]`: every
/// payload is one slice of this table, so making one is a copy and checking
/// one a comparison (both vectorised), not a computation per byte. At 16 KiB
/// that per-byte work was most of the load generator's cost per message.
static TABLE: [u8; MAX_PAYLOAD + 256] = {
    let mut t = [0u8; MAX_PAYLOAD + 256];
    let mut j = 0;
    while j < t.len() {
        t[j] = (j as u8).wrapping_add(0x5a);
        j += 1;
    }
    t
};

/// The payload bytes of message `seq` from offset `start` (from the start of
/// the message), `len` of them.
#[inline]
fn payload(seq: u64, start: usize, len: usize) -> &'static [u8] {
    let at = (start + usize::from((seq as u8).wrapping_mul(31))) % 256;
    &TABLE[at..at + len]
}

/// Appends message `seq` of `size` bytes (at least [`MIN_SIZE`]) to `out`.
pub fn encode(out: &mut Vec<u8>, seq: u64, flags: Flags, size: usize) {
    let size = size.max(MIN_SIZE);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&flags.bits().to_be_bytes());
    out.extend_from_slice(&(size as u32).to_be_bytes());
    out.extend_from_slice(payload(seq, HEADER_LEN, size - HEADER_LEN));
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
    buf[HEADER_LEN..].copy_from_slice(payload(seq, HEADER_LEN, size - HEADER_LEN));
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
        && reply[HEADER_LEN..] == *payload(seq, HEADER_LEN, size - HEADER_LEN)
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

    #[test]
    fn payloads_cut_from_the_table_are_the_pattern_byte_for_byte() {
        for seq in [0, 1, 7, 255, 256, 1 << 40] {
            for size in [MIN_SIZE, 64, 300, 16_384, 65_000] {
                let mut m = Vec::new();
                encode(&mut m, seq, REQUEST_FLAGS, size);
                assert_eq!(m.len(), size);
                assert!(
                    (HEADER_LEN..size).all(|i| m[i] == pattern(seq, i)),
                    "seq {seq} size {size}"
                );
            }
        }
    }
}
