//! The TLS record layer, in place: what kernel TLS would do, done in the
//! shard's own buffers.
//!
//! Once rustls has finished a handshake it hands over the traffic secrets
//! and sequence numbers ([`rustls::ExtractedSecrets`]). From then on every
//! record is sealed and opened here with AES-GCM or ChaCha20-Poly1305 from
//! aws-lc-rs, without copying and without allocating:
//!
//! - [`RecordLayer::open`] decrypts a received record where it lies (in the
//!   receive buffer the kernel filled) and says where its plaintext is;
//! - [`RecordLayer::seal`] encrypts a record whose plaintext was written
//!   straight into the stream's send queue after [`RecordLayer::prefix_len`]
//!   reserved bytes, and appends the tag.
//!
//! TLS 1.3 (RFC 8446 §5.2): the outer type is always application data, the
//! real type is the last non-zero byte of the plaintext, the nonce is the IV
//! XOR the sequence number and the additional data is the record header.
//! TLS 1.2 (RFC 5246 §6.2.3.3, RFC 7905): the additional data is sequence
//! number, type, version and plaintext length; AES-GCM records carry an
//! 8-byte explicit nonce, ChaCha20-Poly1305 records none.
//!
//! Nothing here panics on input: a record that does not decrypt, is too
//! long or has a type that does not belong is an error naming the alert to
//! send.

use std::ops::Range;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::ConnectionTrafficSecrets;

/// The first byte of a handshake record: every TLS connection starts with one.
pub const HANDSHAKE_RECORD: u8 = 22;
/// Bytes of a record header: type, version, length.
pub const HEADER: usize = 5;
/// Bytes of an AEAD tag.
pub const TAG: usize = 16;
/// Most plaintext bytes in one record.
pub const MAX_PLAINTEXT: usize = 16384;
/// TLS 1.2 AES-GCM explicit nonce bytes.
const EXPLICIT_NONCE: usize = 8;
/// Most ciphertext bytes after the header of a TLS 1.3 record.
const MAX_CIPHERTEXT_13: usize = MAX_PLAINTEXT + 256;
/// ... and of a TLS 1.2 record.
const MAX_CIPHERTEXT_12: usize = MAX_PLAINTEXT + 2048;

/// Record content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// change_cipher_spec (20).
    ChangeCipherSpec,
    /// alert (21).
    Alert,
    /// handshake (22).
    Handshake,
    /// application_data (23).
    ApplicationData,
}

impl ContentType {
    fn from_u8(b: u8) -> Option<ContentType> {
        match b {
            20 => Some(ContentType::ChangeCipherSpec),
            21 => Some(ContentType::Alert),
            22 => Some(ContentType::Handshake),
            23 => Some(ContentType::ApplicationData),
            _ => None,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            ContentType::ChangeCipherSpec => 20,
            ContentType::Alert => 21,
            ContentType::Handshake => 22,
            ContentType::ApplicationData => 23,
        }
    }
}

/// Why a record could not be opened or sealed; each maps to the alert sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// Authentication failed (bad_record_mac, 20).
    BadRecordMac,
    /// A record longer than the protocol allows (record_overflow, 22).
    RecordOverflow,
    /// A record of a type that does not belong here (unexpected_message, 10).
    UnexpectedMessage,
    /// A malformed record (decode_error, 50).
    DecodeError,
    /// The traffic keys may seal no more records (internal_error, 80).
    KeysExhausted,
    /// A TLS 1.2 client asked to renegotiate, which ringport does not do
    /// (no_renegotiation, 100, sent as fatal).
    Renegotiation,
    /// The negotiated cipher is not one this record layer implements
    /// (internal_error, 80).
    UnsupportedCipher,
}

impl RecordError {
    /// The alert description to send for it.
    pub fn alert(self) -> u8 {
        match self {
            RecordError::BadRecordMac => 20,
            RecordError::RecordOverflow => 22,
            RecordError::UnexpectedMessage => 10,
            RecordError::DecodeError => 50,
            RecordError::Renegotiation => 100,
            RecordError::KeysExhausted | RecordError::UnsupportedCipher => 80,
        }
    }
}

/// One direction's key, IV and record sequence number.
struct Direction {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

/// The algorithm, key bytes and IV of rustls's secrets for one direction.
fn parts(
    secrets: &ConnectionTrafficSecrets,
) -> Result<(&'static aead::Algorithm, &[u8], [u8; 12]), RecordError> {
    let (alg, key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (&aead::CHACHA20_POLY1305, key, iv)
        }
        _ => return Err(RecordError::UnsupportedCipher),
    };
    let iv: [u8; 12] = iv
        .as_ref()
        .try_into()
        .map_err(|_| RecordError::UnsupportedCipher)?;
    Ok((alg, key.as_ref(), iv))
}

impl Direction {
    fn new(
        seq: u64,
        alg: &'static aead::Algorithm,
        key: &[u8],
        iv: [u8; 12],
    ) -> Result<Direction, RecordError> {
        let key = UnboundKey::new(alg, key).map_err(|_| RecordError::UnsupportedCipher)?;
        Ok(Direction {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    fn from_secrets(
        seq: u64,
        secrets: &ConnectionTrafficSecrets,
    ) -> Result<Direction, RecordError> {
        let (alg, key, iv) = parts(secrets)?;
        Direction::new(seq, alg, key, iv)
    }

    /// The IV XOR the big-endian sequence number in its last 8 bytes.
    fn nonce(&self) -> [u8; 12] {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }
}

/// The TLS 1.2 additional data: seq, type, version, plaintext length. The
/// version is the record's own (RFC 5246 §6.2.3.3), so that a record whose
/// version bytes were changed fails to authenticate.
fn aad12(seq: u64, typ: u8, version: [u8; 2], len: usize) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..8].copy_from_slice(&seq.to_be_bytes());
    a[8] = typ;
    a[9..11].copy_from_slice(&version);
    a[11..].copy_from_slice(&(len as u16).to_be_bytes());
    a
}

/// A connection's record protection after its handshake.
pub struct RecordLayer {
    tls13: bool,
    /// TLS 1.2 AES-GCM: records carry an explicit nonce.
    explicit_nonce: bool,
    tx: Direction,
    rx: Direction,
    /// Records the tx key may seal (the suite's confidentiality limit).
    tx_limit: u64,
}

impl std::fmt::Debug for RecordLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordLayer")
            .field("tls13", &self.tls13)
            .field("tx_seq", &self.tx.seq)
            .field("rx_seq", &self.rx.seq)
            .finish()
    }
}

/// What [`RecordLayer::record_len`] makes of the bytes at a record's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Fewer than a header's bytes so far.
    NeedHeader,
    /// The whole record, header included, is this long.
    Record(usize),
}

impl RecordLayer {
    /// Protection from rustls's extracted secrets. `tx_limit` is how many
    /// records one tx key may seal.
    pub fn new(
        tls13: bool,
        tx: (u64, ConnectionTrafficSecrets),
        rx: (u64, ConnectionTrafficSecrets),
        tx_limit: u64,
    ) -> Result<RecordLayer, RecordError> {
        let explicit_nonce = !tls13
            && matches!(
                tx.1,
                ConnectionTrafficSecrets::Aes128Gcm { .. }
                    | ConnectionTrafficSecrets::Aes256Gcm { .. }
            );
        Ok(RecordLayer {
            tls13,
            explicit_nonce,
            tx: Direction::from_secrets(tx.0, &tx.1)?,
            rx: Direction::from_secrets(rx.0, &rx.1)?,
            tx_limit,
        })
    }

    /// Bytes reserved in front of a record's plaintext.
    pub fn prefix_len(&self) -> usize {
        HEADER
            + if self.explicit_nonce {
                EXPLICIT_NONCE
            } else {
                0
            }
    }

    /// Bytes a sealed record adds after its plaintext.
    #[cfg(test)]
    pub fn suffix_len(&self) -> usize {
        TAG + usize::from(self.tls13)
    }

    /// Whether the tx key has sealed as many records as it may.
    pub fn tx_exhausted(&self) -> bool {
        self.tx.seq >= self.tx_limit
    }

    /// Whether the tx key is two records from its limit: time for a TLS 1.3
    /// key update (the KeyUpdate record itself takes one).
    pub fn tx_exhausted_soon(&self) -> bool {
        self.tx.seq.saturating_add(2) >= self.tx_limit
    }

    /// TLS 1.3 (else 1.2).
    pub fn tls13(&self) -> bool {
        self.tls13
    }

    /// Installs a new tx key (TLS 1.3 key update); its sequence restarts.
    pub fn set_tx(
        &mut self,
        seq: u64,
        secrets: &ConnectionTrafficSecrets,
    ) -> Result<(), RecordError> {
        self.tx = Direction::from_secrets(seq, secrets)?;
        Ok(())
    }

    /// Installs a new rx key (the peer's key update).
    pub fn set_rx(
        &mut self,
        seq: u64,
        secrets: &ConnectionTrafficSecrets,
    ) -> Result<(), RecordError> {
        self.rx = Direction::from_secrets(seq, secrets)?;
        Ok(())
    }

    /// Sets how many records the tx key may seal (tests).
    #[cfg(test)]
    pub fn set_tx_limit(&mut self, limit: u64) {
        self.tx_limit = limit;
    }

    /// How long the record starting at `bytes` is, once its header is in.
    pub fn record_len(&self, bytes: &[u8]) -> Result<Framing, RecordError> {
        if bytes.len() < HEADER {
            return Ok(Framing::NeedHeader);
        }
        let len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
        let max = if self.tls13 {
            MAX_CIPHERTEXT_13
        } else {
            MAX_CIPHERTEXT_12
        };
        if len > max {
            return Err(RecordError::RecordOverflow);
        }
        Ok(Framing::Record(HEADER + len))
    }

    /// Seals the record that starts at `start` in `buf`: its plaintext is
    /// `buf[start + prefix_len()..]`. Appends the suffix and writes the header.
    pub fn seal(
        &mut self,
        buf: &mut Vec<u8>,
        start: usize,
        typ: ContentType,
    ) -> Result<(), RecordError> {
        if self.tx_exhausted() {
            return Err(RecordError::KeysExhausted);
        }
        let prefix = self.prefix_len();
        let plain_len = buf.len() - start - prefix;
        let nonce = self.tx.nonce();
        let (outer, body_start) = if self.tls13 {
            buf.push(typ.to_u8());
            (ContentType::ApplicationData.to_u8(), start + HEADER)
        } else {
            (typ.to_u8(), start + prefix)
        };
        let sealed_len = buf.len() - start - HEADER + TAG;
        let header = [
            outer,
            3,
            3,
            (sealed_len >> 8) as u8,
            (sealed_len & 0xff) as u8,
        ];
        let tag = if self.tls13 {
            self.tx.key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header),
                &mut buf[body_start..],
            )
        } else {
            if self.explicit_nonce {
                buf[start + HEADER..start + prefix].copy_from_slice(&nonce[4..]);
            }
            self.tx.key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad12(self.tx.seq, typ.to_u8(), [3, 3], plain_len)),
                &mut buf[body_start..],
            )
        }
        .map_err(|_| RecordError::KeysExhausted)?;
        buf.extend_from_slice(tag.as_ref());
        buf[start..start + HEADER].copy_from_slice(&header);
        self.tx.seq += 1;
        Ok(())
    }

    /// Opens the whole record `rec` (header included, as long as
    /// [`record_len`](Self::record_len) said) in place. Returns its real
    /// content type and where in `rec` its plaintext now is.
    pub fn open(&mut self, rec: &mut [u8]) -> Result<(ContentType, Range<usize>), RecordError> {
        if rec.len() < HEADER {
            return Err(RecordError::DecodeError);
        }
        let outer = rec[0];
        let header: [u8; HEADER] = [rec[0], rec[1], rec[2], rec[3], rec[4]];
        let nonce = self.rx.nonce();
        if self.tls13 {
            // Only application_data is protected; a change_cipher_spec after
            // the handshake does not belong (RFC 8446 §5).
            if outer != ContentType::ApplicationData.to_u8() {
                return Err(RecordError::UnexpectedMessage);
            }
            if rec.len() < HEADER + TAG + 1 {
                return Err(RecordError::DecodeError);
            }
            let plain = self
                .rx
                .key
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(header),
                    &mut rec[HEADER..],
                )
                .map_err(|_| RecordError::BadRecordMac)?;
            // The real type is the last non-zero byte; zeros after it are padding.
            let Some(last) = plain.iter().rposition(|&b| b != 0) else {
                return Err(RecordError::UnexpectedMessage);
            };
            let typ = ContentType::from_u8(plain[last]).ok_or(RecordError::UnexpectedMessage)?;
            if typ == ContentType::ChangeCipherSpec {
                return Err(RecordError::UnexpectedMessage);
            }
            if last > MAX_PLAINTEXT {
                return Err(RecordError::RecordOverflow);
            }
            self.rx.seq += 1;
            Ok((typ, HEADER..HEADER + last))
        } else {
            let typ = ContentType::from_u8(outer).ok_or(RecordError::UnexpectedMessage)?;
            let explicit = if self.explicit_nonce {
                EXPLICIT_NONCE
            } else {
                0
            };
            let body = HEADER + explicit;
            if rec.len() < body + TAG {
                return Err(RecordError::DecodeError);
            }
            let plain_len = rec.len() - body - TAG;
            if plain_len > MAX_PLAINTEXT {
                return Err(RecordError::RecordOverflow);
            }
            let nonce = if self.explicit_nonce {
                let mut n = self.rx.iv;
                n[4..].copy_from_slice(&rec[HEADER..body]);
                n
            } else {
                nonce
            };
            self.rx
                .key
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad12(self.rx.seq, outer, [rec[1], rec[2]], plain_len)),
                    &mut rec[body..],
                )
                .map_err(|_| RecordError::BadRecordMac)?;
            self.rx.seq += 1;
            Ok((typ, body..body + plain_len))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alg(kind: u8) -> &'static aead::Algorithm {
        match kind {
            0 => &aead::AES_128_GCM,
            1 => &aead::AES_256_GCM,
            _ => &aead::CHACHA20_POLY1305,
        }
    }

    fn direction(kind: u8, seed: u8) -> Direction {
        let a = alg(kind);
        let key: Vec<u8> = (0..a.key_len())
            .map(|i| seed.wrapping_add(i as u8))
            .collect();
        let mut iv = [0u8; 12];
        iv.copy_from_slice(&key[..12]);
        iv[0] ^= 0x5a;
        Direction::new(0, a, &key, iv).unwrap()
    }

    fn layer(tls13: bool, kind: u8, tx: u8, rx: u8) -> RecordLayer {
        RecordLayer {
            tls13,
            explicit_nonce: !tls13 && kind < 2,
            tx: direction(kind, tx),
            rx: direction(kind, rx),
            tx_limit: 1 << 20,
        }
    }

    /// A sender and the matching receiver (the peer's view of the keys).
    fn pair(tls13: bool, kind: u8) -> (RecordLayer, RecordLayer) {
        (layer(tls13, kind, 1, 2), layer(tls13, kind, 2, 1))
    }

    fn sealed(l: &mut RecordLayer, typ: ContentType, plain: &[u8]) -> Vec<u8> {
        let mut buf = vec![0xee; 3];
        let start = buf.len();
        buf.resize(start + l.prefix_len(), 0);
        buf.extend_from_slice(plain);
        l.seal(&mut buf, start, typ).unwrap();
        assert_eq!(&buf[..3], &[0xee; 3], "bytes before the record untouched");
        buf.drain(..3);
        assert_eq!(buf.len(), l.prefix_len() + plain.len() + l.suffix_len());
        buf
    }

    #[test]
    fn every_version_and_cipher_round_trips_in_place_with_sequence_numbers() {
        for tls13 in [true, false] {
            for kind in 0..3 {
                let (mut a, mut b) = pair(tls13, kind);
                for (i, len) in [0usize, 1, 64, 1000, MAX_PLAINTEXT].into_iter().enumerate() {
                    let plain: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
                    let typ = if i == 2 {
                        ContentType::Alert
                    } else {
                        ContentType::ApplicationData
                    };
                    let mut rec = sealed(&mut a, typ, &plain);
                    assert_eq!(b.record_len(&rec), Ok(Framing::Record(rec.len())));
                    assert_eq!(rec[0], if tls13 { 23 } else { typ.to_u8() });
                    let (t, range) = b.open(&mut rec).unwrap();
                    assert_eq!(
                        (t, &rec[range]),
                        (typ, &plain[..]),
                        "tls13 {tls13} kind {kind}"
                    );
                }
                // A record replayed (its sequence number is past) fails.
                let mut rec = sealed(&mut a, ContentType::ApplicationData, b"x");
                let mut copy = rec.clone();
                b.open(&mut rec).unwrap();
                assert_eq!(b.open(&mut copy), Err(RecordError::BadRecordMac));
            }
        }
    }

    #[test]
    fn tampering_overlong_and_misplaced_records_are_refused() {
        let (mut a, mut b) = pair(true, 0);
        let mut rec = sealed(&mut a, ContentType::ApplicationData, b"hello");
        rec[7] ^= 1;
        assert_eq!(b.open(&mut rec), Err(RecordError::BadRecordMac));
        let header = [23u8, 3, 3, 0x42, 0x01];
        assert_eq!(b.record_len(&header), Err(RecordError::RecordOverflow));
        assert_eq!(b.record_len(&header[..4]), Ok(Framing::NeedHeader));
        let mut ccs = [20u8, 3, 3, 0, 1, 1];
        assert_eq!(b.open(&mut ccs), Err(RecordError::UnexpectedMessage));
        let mut short = [23u8, 3, 3, 0, 3, 1, 2, 3];
        assert_eq!(b.open(&mut short), Err(RecordError::DecodeError));
        // Padding only, no type: unexpected_message.
        let (mut a, mut b) = pair(true, 2);
        let mut buf = vec![0u8; a.prefix_len()];
        buf.extend_from_slice(&[0, 0]);
        a.seal(&mut buf, 0, ContentType::ApplicationData).unwrap();
        // Overwrite the type byte before sealing is impossible from outside;
        // instead check that a sealed record with trailing zero padding
        // keeps its zeros as plaintext and its type.
        let (t, r) = b.open(&mut buf).unwrap();
        assert_eq!((t, &buf[r]), (ContentType::ApplicationData, &[0u8, 0][..]));
    }

    #[test]
    fn a_tls12_record_with_its_version_changed_fails_to_authenticate() {
        // Found by fuzz/ (tls_record): the version bytes were not covered.
        for kind in 0..3 {
            for at in [1, 2] {
                let (mut a, mut b) = pair(false, kind);
                let mut rec = sealed(&mut a, ContentType::Alert, &[1, 0]);
                let mut changed = rec.clone();
                changed[at] ^= 0x1b;
                assert_eq!(
                    b.open(&mut changed),
                    Err(RecordError::BadRecordMac),
                    "kind {kind}"
                );
                assert!(b.open(&mut rec).is_ok(), "the real record still opens");
            }
        }
    }

    #[test]
    fn the_tx_key_stops_at_its_limit() {
        let (mut a, _) = pair(true, 0);
        a.set_tx_limit(2);
        sealed(&mut a, ContentType::ApplicationData, b"1");
        sealed(&mut a, ContentType::ApplicationData, b"2");
        assert!(a.tx_exhausted());
        let mut buf = vec![0u8; a.prefix_len() + 1];
        assert_eq!(
            a.seal(&mut buf, 0, ContentType::ApplicationData),
            Err(RecordError::KeysExhausted)
        );
        a.tx = direction(0, 9);
        assert!(!a.tx_exhausted());
    }
}
