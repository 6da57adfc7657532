//! The payload of a relay-fanout `PUBLISH`: who sent it, its sequence number,
//! when it was meant to go out and when it did, and a checkable pattern.
//!
//! ```text
//! offset  size  field
//!      0     4  publisher id (u32, big-endian)
//!      4     8  sequence number of this publisher on this topic (u64)
//!     12     8  intended send time, ns on the run's clock (u64)
//!     20     8  actual send time, ns on the run's clock (u64)
//!     28     4  check: FNV-1a of bytes 0..28 (u32)
//!     32     -  pattern bytes, a function of (publisher, sequence, offset)
//! ```
//!
//! Every byte is checked: the first 28 by the check field (FNV-1a changes
//! whenever one byte of its input does), the check field against them, and
//! the rest against the pattern. So a subscriber needs no copy of what was
//! published to find a wrong byte.

/// Bytes before the pattern; the smallest payload.
pub const MIN_PAYLOAD: usize = 32;
const CHECKED: usize = 28;

/// What a payload says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The publisher's index.
    pub publisher: u32,
    /// The message's number among this publisher's messages on its topic.
    pub seq: u64,
    /// When the message was due (ns on the run's clock).
    pub intended_ns: u64,
    /// When the publisher queued it (ns on the run's clock).
    pub sent_ns: u64,
}

/// FNV-1a, 32 bits.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The pattern byte at offset `i` of the payload of (`publisher`, `seq`).
#[inline]
fn pattern(publisher: u32, seq: u64, i: usize) -> u8 {
    (seq as u8)
        .wrapping_mul(31)
        .wrapping_add((publisher as u8).wrapping_mul(17))
        .wrapping_add(i as u8)
        .wrapping_add(0x5a)
}

/// Writes the payload of `stamp` into `buf` (its whole length).
///
/// # Panics
/// If `buf` is shorter than [`MIN_PAYLOAD`].
pub fn encode_into(buf: &mut [u8], stamp: &Stamp) {
    buf[0..4].copy_from_slice(&stamp.publisher.to_be_bytes());
    buf[4..12].copy_from_slice(&stamp.seq.to_be_bytes());
    buf[12..20].copy_from_slice(&stamp.intended_ns.to_be_bytes());
    buf[20..28].copy_from_slice(&stamp.sent_ns.to_be_bytes());
    let check = fnv1a(&buf[..CHECKED]);
    buf[28..32].copy_from_slice(&check.to_be_bytes());
    for (i, b) in buf.iter_mut().enumerate().skip(MIN_PAYLOAD) {
        *b = pattern(stamp.publisher, stamp.seq, i);
    }
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}

/// The stamp of `payload` if it is exactly `size` bytes and every byte is
/// right; `None` for any wrong byte or length.
pub fn verify(payload: &[u8], size: usize) -> Option<Stamp> {
    if payload.len() != size || size < MIN_PAYLOAD {
        return None;
    }
    let check = u32::from_be_bytes(payload[28..32].try_into().expect("4 bytes"));
    if check != fnv1a(&payload[..CHECKED]) {
        return None;
    }
    let stamp = Stamp {
        publisher: u32::from_be_bytes(payload[0..4].try_into().expect("4 bytes")),
        seq: be_u64(&payload[4..12]),
        intended_ns: be_u64(&payload[12..20]),
        sent_ns: be_u64(&payload[20..28]),
    };
    let pattern_ok = payload[MIN_PAYLOAD..]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == pattern(stamp.publisher, stamp.seq, i + MIN_PAYLOAD));
    pattern_ok.then_some(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: Stamp = Stamp {
        publisher: 3,
        seq: 1_000_001,
        intended_ns: 5_000_000_123,
        sent_ns: 5_000_004_567,
    };

    #[test]
    fn round_trip_at_the_smallest_and_a_larger_size() {
        for size in [MIN_PAYLOAD, 64, 1400] {
            let mut p = vec![0; size];
            encode_into(&mut p, &STAMP);
            assert_eq!(verify(&p, size), Some(STAMP), "size {size}");
            assert_eq!(verify(&p, size + 1), None, "wrong length");
        }
        assert_eq!(verify(&[0; 16], 16), None, "below the smallest payload");
    }

    #[test]
    fn every_flipped_bit_of_every_byte_is_caught() {
        let mut p = vec![0; 100];
        encode_into(&mut p, &STAMP);
        for i in 0..p.len() {
            for bit in 0..8 {
                let mut bad = p.clone();
                bad[i] ^= 1 << bit;
                assert_eq!(verify(&bad, 100), None, "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn another_messages_payload_does_not_pass_for_this_one() {
        let mut a = vec![0; 64];
        encode_into(&mut a, &STAMP);
        let mut b = vec![0; 64];
        encode_into(&mut b, &Stamp { seq: 7, ..STAMP });
        // The header of one with the pattern of the other.
        let mut mixed = a[..MIN_PAYLOAD].to_vec();
        mixed.extend_from_slice(&b[MIN_PAYLOAD..]);
        assert_eq!(verify(&mixed, 64), None);
    }
}
