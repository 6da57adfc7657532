//! The TLS record layer (`engine/src/tls/record.rs`): records sealed and
//! opened in place once a handshake is done, TLS 1.3 and 1.2, AES-256-GCM
//! and ChaCha20-Poly1305 (AES-128-GCM differs from AES-256-GCM only in the
//! key's length, which rustls's public API does not let us choose).
//!
//! Invariants, on a sender and a receiver sharing keys:
//! - a record sealed by `seal` opens back to the same type and plaintext,
//!   in order, each exactly once (a replayed record fails);
//! - tampering with any byte of a sealed record makes it fail as the
//!   engine would see it (framed again by `record_len`), and leaves the
//!   receiver able to open the real one;
//! - arbitrary bytes never panic: `record_len` agrees with the header's
//!   length and the version's maximum, and `open` errs or gives a range
//!   inside the record;
//! - a key that has sealed its limit seals nothing more, touching nothing.

use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::ConnectionTrafficSecrets;

use ringport_engine::fuzzing::{
    ContentType, Framing, RecordError, RecordLayer, HEADER, MAX_PLAINTEXT, TAG,
};

use crate::Input;

const TYPES: [ContentType; 4] = [
    ContentType::ChangeCipherSpec,
    ContentType::Alert,
    ContentType::Handshake,
    ContentType::ApplicationData,
];

fn type_byte(t: ContentType) -> u8 {
    match t {
        ContentType::ChangeCipherSpec => 20,
        ContentType::Alert => 21,
        ContentType::Handshake => 22,
        ContentType::ApplicationData => 23,
    }
}

/// One direction's secrets: a 32-byte key and an IV made from `seed`.
fn secrets(chacha: bool, seed: u8) -> ConnectionTrafficSecrets {
    let key: [u8; 32] = std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8));
    let iv = Iv::new(std::array::from_fn(|i| seed ^ (i as u8).wrapping_mul(7)));
    if chacha {
        ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: AeadKey::from(key),
            iv,
        }
    } else {
        ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from(key),
            iv,
        }
    }
}

/// What the header says of the record starting at `bytes`.
fn model_record_len(tls13: bool, bytes: &[u8]) -> Result<Framing, RecordError> {
    if bytes.len() < HEADER {
        return Ok(Framing::NeedHeader);
    }
    let len = usize::from(bytes[3]) << 8 | usize::from(bytes[4]);
    let max = MAX_PLAINTEXT + if tls13 { 256 } else { 2048 };
    if len > max {
        return Err(RecordError::RecordOverflow);
    }
    Ok(Framing::Record(HEADER + len))
}

/// Opens `rec` as the engine would after framing it from its header: a
/// record announcing more bytes gets `fill` bytes up to its length, one
/// announcing fewer is opened cut there. `Err` for anything refused.
fn open_as_framed(
    rx: &mut RecordLayer,
    tls13: bool,
    rec: &[u8],
    fill: u8,
) -> Result<(ContentType, Vec<u8>), RecordError> {
    let framing = rx.record_len(rec);
    assert_eq!(framing, model_record_len(tls13, rec), "record_len({rec:?})");
    let Framing::Record(n) = framing? else {
        // Not a record yet: nothing to open.
        return Err(RecordError::DecodeError);
    };
    let mut framed = rec.to_vec();
    framed.resize(n, fill);
    let (typ, range) = rx.open(&mut framed)?;
    assert!(
        range.start >= HEADER && range.start <= range.end && range.end <= n,
        "{range:?} outside a record of {n} bytes"
    );
    Ok((typ, framed[range].to_vec()))
}

/// Input: `[mode, tx_limit, seed, ops ...]`. Mode bit 0: TLS 1.3 (else 1.2);
/// bit 1: ChaCha20-Poly1305 (else AES-256-GCM); bits 2-7: the first
/// sequence number. Then ops until the input ends: `[op, ...]`, where op's
/// low bits pick
/// - 0-3: seal a record of type `op % 4` (bits 2-3: bytes before it in
///   the buffer; bit 4: a long plaintext of a two-byte length, else a
///   chunk), maybe tamper with a copy (bit 5: `[at_hi, at_lo, mask]`),
///   open it, maybe replay it (bit 6);
/// - with bit 7 set: open a chunk of arbitrary bytes.
///
/// # Panics
///
/// When an invariant does not hold.
pub fn tls_record(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let (tls13, chacha) = (mode & 1 != 0, mode & 2 != 0);
    let seq = u64::from(mode >> 2);
    let limit = seq + u64::from(input.u8());
    let seed = input.u8();
    let (a, b) = (seed, seed.wrapping_add(1));
    let mut tx = RecordLayer::new(
        tls13,
        (seq, secrets(chacha, a)),
        (seq, secrets(chacha, b)),
        limit,
    )
    .expect("AES-256-GCM and ChaCha20-Poly1305 are supported");
    let mut rx = RecordLayer::new(
        tls13,
        (seq, secrets(chacha, b)),
        (seq, secrets(chacha, a)),
        u64::MAX,
    )
    .unwrap();
    let explicit = !tls13 && !chacha;
    assert_eq!(tx.prefix_len(), HEADER + if explicit { 8 } else { 0 });
    // Whether the receiver missed a record the sender sealed: everything
    // after it fails to authenticate.
    let mut behind = false;
    let mut sealed = 0u64;

    while !input.is_empty() {
        let op = input.u8();
        if op & 0x80 != 0 {
            let garbage = input.chunk();
            if let Ok((_, _)) = open_as_framed(&mut rx, tls13, garbage, 0) {
                // Only a forgery opens; the receiver moved on without the sender.
                behind = true;
            }
            continue;
        }
        let typ = TYPES[usize::from(op % 4)];
        let plain: Vec<u8> = if op & 0x10 != 0 {
            let len = usize::from(input.u16()) % (MAX_PLAINTEXT + 1);
            (0..len).map(|i| (i as u8).wrapping_mul(13) ^ op).collect()
        } else {
            input.chunk().to_vec()
        };
        let before = vec![0xee; usize::from(op >> 2 & 3)];
        let start = before.len();
        let mut buf = before.clone();
        buf.resize(start + tx.prefix_len(), 0);
        buf.extend_from_slice(&plain);
        if seq + sealed >= limit {
            assert!(tx.tx_exhausted());
            let untouched = buf.clone();
            assert_eq!(
                tx.seal(&mut buf, start, typ),
                Err(RecordError::KeysExhausted)
            );
            assert_eq!(buf, untouched, "a refused seal wrote");
            continue;
        }
        tx.seal(&mut buf, start, typ)
            .expect("a key within its limit seals");
        sealed += 1;
        assert_eq!(buf[..start], before[..], "bytes before the record");
        let rec = buf[start..].to_vec();
        assert_eq!(
            rec.len(),
            tx.prefix_len() + plain.len() + TAG + usize::from(tls13)
        );
        let outer = if tls13 { 23 } else { type_byte(typ) };
        let body = (rec.len() - HEADER) as u16;
        assert_eq!(
            rec[..HEADER],
            [outer, 3, 3, (body >> 8) as u8, body as u8],
            "header"
        );

        if op & 0x20 != 0 {
            let at = usize::from(input.u16()) % rec.len();
            let mask = input.u8().max(1);
            let mut bad = rec.clone();
            bad[at] ^= mask;
            let got = open_as_framed(&mut rx, tls13, &bad, mask);
            assert!(
                got.is_err(),
                "byte {at} of {} changed (^{mask:#x}), yet it opened: {got:?}",
                rec.len()
            );
        }

        let got = open_as_framed(&mut rx, tls13, &rec, 0);
        let expected = if behind {
            Err(RecordError::BadRecordMac)
        } else if tls13 && typ == ContentType::ChangeCipherSpec {
            // Not a protected type in TLS 1.3: refused, and the receiver's
            // sequence stays behind the sender's.
            behind = true;
            Err(RecordError::UnexpectedMessage)
        } else {
            Ok((typ, plain))
        };
        assert_eq!(
            got, expected,
            "record {sealed} (tls13 {tls13}, chacha {chacha})"
        );
        if op & 0x40 != 0 && got.is_ok() {
            assert_eq!(
                open_as_framed(&mut rx, tls13, &rec, 0),
                Err(RecordError::BadRecordMac),
                "a replayed record"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{corpus, random_inputs};

    #[test]
    fn every_version_and_cipher_round_trips() {
        for mode in 0..4u8 {
            // Every type, a long record, a tampered one, a replay, garbage.
            let mut input = vec![mode, 50, 7];
            for op in [0u8, 1, 2, 3, 0x23, 0x43, 0x13] {
                input.push(op);
                if op & 0x10 != 0 {
                    input.extend_from_slice(&16384u16.to_be_bytes());
                } else {
                    input.extend_from_slice(&[3, b'a', 0, 0]);
                }
                if op & 0x20 != 0 {
                    input.extend_from_slice(&[0, 9, 0x40]);
                }
            }
            input.extend_from_slice(&[0x80, 8, 23, 3, 3, 0, 3, 1, 2, 3]);
            tls_record(&input);
        }
    }

    #[test]
    fn regression_a_tls12_version_change_fails() {
        // The fuzzer's crash, minimized: TLS 1.2 ChaCha20-Poly1305, an empty
        // handshake record with 3 bytes before it, its byte 2 (a version
        // byte) changed.
        tls_record(&[0x02, 0xc8, 0x00, 0x6e, 0x00, 0x20]);
    }

    #[test]
    fn a_key_stops_at_its_limit() {
        // A limit of 2 records: the third seal is refused.
        tls_record(&[1, 2, 0, 3, 0, 3, 0, 3, 0]);
        tls_record(&[4 << 2, 1, 0, 3, 1, b'x', 3, 1, b'y']);
    }

    #[test]
    fn model_frames_as_the_rfcs_say() {
        assert_eq!(
            model_record_len(true, &[23, 3, 3, 0x41, 0]),
            Ok(Framing::Record(5 + 0x4100))
        );
        assert_eq!(
            model_record_len(true, &[23, 3, 3, 0x41, 1]),
            Err(RecordError::RecordOverflow)
        );
        assert_eq!(
            model_record_len(false, &[23, 3, 3, 0x48, 0]),
            Ok(Framing::Record(5 + 0x4800))
        );
        assert_eq!(
            model_record_len(false, &[23, 3, 3]),
            Ok(Framing::NeedHeader)
        );
    }

    #[test]
    fn harness_on_fixed_corpus_and_random_inputs() {
        tls_record(&[]);
        for input in corpus("tls_record") {
            tls_record(&input);
        }
        for input in random_inputs(37, 500, 120) {
            tls_record(&input);
        }
    }
}
