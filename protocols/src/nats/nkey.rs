//! NKeys: NATS's ed25519 identities, as the text a user configures.
//!
//! An encoded key is base32 (RFC 4648 alphabet, no padding) of: a prefix,
//! the 32 raw key bytes, and a CRC-16/XMODEM of both, little-endian. A public
//! key has a one-byte prefix whose top five bits name its role (`U` for a
//! user: 20 << 3); a seed has two prefix bytes, the seed marker (`S`, 18 << 3)
//! with the role's prefix spread over the five bits that follow, so a user's
//! seed reads `SU...`.
//!
//! To log in with an NKey, a client sends its public key (`nkey`) and the
//! ed25519 signature of the server's `INFO` nonce (`sig`, base64url without
//! padding) in `CONNECT`. The seed is the only secret; the key pair is
//! derived from it with aws-lc-rs, the workspace's crypto provider.

use std::fmt;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};

/// The prefix byte of a seed (`S`).
pub const PREFIX_SEED: u8 = 18 << 3;
/// The prefix byte of a user's public key (`U`).
pub const PREFIX_USER: u8 = 20 << 3;
/// The prefix byte of an account's public key (`A`).
pub const PREFIX_ACCOUNT: u8 = 0;
/// The prefix byte of a server's public key (`N`).
pub const PREFIX_SERVER: u8 = 13 << 3;
/// The prefix byte of a cluster's public key (`C`).
pub const PREFIX_CLUSTER: u8 = 2 << 3;
/// The prefix byte of an operator's public key (`O`).
pub const PREFIX_OPERATOR: u8 = 14 << 3;

const ROLES: [u8; 5] = [
    PREFIX_USER,
    PREFIX_ACCOUNT,
    PREFIX_SERVER,
    PREFIX_CLUSTER,
    PREFIX_OPERATOR,
];

/// Why a seed is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NKeyError {
    /// Not base32 of the RFC 4648 alphabet (upper case, no padding).
    NotBase32,
    /// Not the 36 bytes of a seed (2 prefix, 32 seed, 2 checksum).
    BadLength,
    /// The checksum does not match: a character was mistyped.
    BadChecksum,
    /// The prefix is not a seed's, or names no known role.
    BadPrefix,
    /// aws-lc-rs refused the seed.
    Rejected,
}

impl fmt::Display for NKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NKeyError::NotBase32 => "an NKey seed is upper-case base32 without padding (SU...)",
            NKeyError::BadLength => "an NKey seed is 58 characters long",
            NKeyError::BadChecksum => "the NKey seed's checksum does not match (mistyped?)",
            NKeyError::BadPrefix => {
                "not an NKey seed: it must start with S and a role letter (SU...)"
            }
            NKeyError::Rejected => "the NKey seed is not a valid ed25519 seed",
        })
    }
}

impl std::error::Error for NKeyError {}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0), bit by bit: keys are
/// decoded once per connection, so a table buys nothing.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn with_checksum(mut raw: Vec<u8>) -> String {
    let crc = crc16(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    BASE32_NOPAD.encode(&raw)
}

/// The text of a public key: `prefix` (e.g. [`PREFIX_USER`]) and the raw
/// 32-byte ed25519 public key.
pub fn encode_public_key(prefix: u8, key: &[u8; 32]) -> String {
    let mut raw = Vec::with_capacity(35);
    raw.push(prefix);
    raw.extend_from_slice(key);
    with_checksum(raw)
}

/// The text of a seed for a key of role `prefix` (e.g. [`PREFIX_USER`]).
pub fn encode_seed(prefix: u8, seed: &[u8; 32]) -> String {
    let mut raw = Vec::with_capacity(36);
    raw.push(PREFIX_SEED | (prefix >> 5));
    raw.push((prefix & 0x1f) << 3);
    raw.extend_from_slice(seed);
    with_checksum(raw)
}

/// A key pair decoded from its seed, ready to sign nonces.
pub struct NKey {
    pair: Ed25519KeyPair,
    public: String,
}

impl fmt::Debug for NKey {
    /// The public key only: the seed is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NKey")
            .field("public", &self.public)
            .finish()
    }
}

impl NKey {
    /// Decodes a seed (`SU...`): base32, checksum, prefixes, ed25519.
    pub fn from_seed(seed: &str) -> Result<NKey, NKeyError> {
        let raw = BASE32_NOPAD
            .decode(seed.trim().as_bytes())
            .map_err(|_| NKeyError::NotBase32)?;
        if raw.len() != 36 {
            return Err(NKeyError::BadLength);
        }
        let (body, crc) = raw.split_at(34);
        if crc16(body).to_le_bytes() != [crc[0], crc[1]] {
            return Err(NKeyError::BadChecksum);
        }
        if body[0] & 0xf8 != PREFIX_SEED {
            return Err(NKeyError::BadPrefix);
        }
        let role = ((body[0] & 0x07) << 5) | (body[1] >> 3);
        if !ROLES.contains(&role) || body[1] & 0x07 != 0 {
            return Err(NKeyError::BadPrefix);
        }
        let pair =
            Ed25519KeyPair::from_seed_unchecked(&body[2..34]).map_err(|_| NKeyError::Rejected)?;
        let mut key = [0; 32];
        key.copy_from_slice(pair.public_key().as_ref());
        Ok(NKey {
            public: encode_public_key(role, &key),
            pair,
        })
    }

    /// The public key, as `CONNECT`'s `nkey` carries it (`U...`).
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The signature of `nonce`, as `CONNECT`'s `sig` carries it (base64url
    /// without padding).
    pub fn sign(&self, nonce: &[u8]) -> String {
        BASE64URL_NOPAD.encode(self.pair.sign(nonce).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use data_encoding::BASE64;

    // The example user of the NATS documentation, used across NATS clients.
    const SEED: &str = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY";
    const PUBLIC: &str = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4";

    #[test]
    fn the_documented_seed_gives_its_public_key() {
        let key = NKey::from_seed(SEED).unwrap();
        assert_eq!(key.public_key(), PUBLIC);
        assert_eq!(format!("{key:?}"), format!("NKey {{ public: {PUBLIC:?} }}"));
    }

    #[test]
    fn the_signature_of_a_known_nonce_is_exact() {
        // ed25519 signatures are deterministic: this one is published with
        // the seed above, in standard base64.
        let key = NKey::from_seed(SEED).unwrap();
        let expected = BASE64
            .decode(b"WosANJXgeyxerXFo0twRiMG+/ZjYp1K/46bFeFax705yFTCTjM18jWl01gGYk4KKbadiHd+hP3WgUQ2iLZUAAA==")
            .unwrap();
        assert_eq!(
            key.sign(b"DhXdTMAeiHhLDig"),
            BASE64URL_NOPAD.encode(&expected)
        );
    }

    #[test]
    fn encoding_a_seed_round_trips() {
        let key = NKey::from_seed(SEED).unwrap();
        let raw = BASE32_NOPAD.decode(SEED.as_bytes()).unwrap();
        let mut seed = [0; 32];
        seed.copy_from_slice(&raw[2..34]);
        assert_eq!(encode_seed(PREFIX_USER, &seed), SEED);
        let raw_public = BASE32_NOPAD.decode(PUBLIC.as_bytes()).unwrap();
        let mut public = [0; 32];
        public.copy_from_slice(&raw_public[1..33]);
        assert_eq!(encode_public_key(PREFIX_USER, &public), key.public_key());
        let account = encode_seed(PREFIX_ACCOUNT, &seed);
        assert!(account.starts_with("SA"));
        assert!(NKey::from_seed(&account)
            .unwrap()
            .public_key()
            .starts_with('A'));
    }

    #[test]
    fn bad_seeds_are_refused_with_a_reason() {
        let mut typo = SEED.to_owned();
        typo.replace_range(10..11, "A");
        assert_eq!(NKey::from_seed(&typo).err(), Some(NKeyError::BadChecksum));
        assert_eq!(NKey::from_seed("SUACSS").err(), Some(NKeyError::NotBase32));
        assert_eq!(NKey::from_seed("su").err(), Some(NKeyError::NotBase32));
        assert_eq!(NKey::from_seed("SUAA").err(), Some(NKeyError::BadLength));
        assert_eq!(NKey::from_seed(PUBLIC).err(), Some(NKeyError::BadLength));
        // A well-formed 36-byte string with a public key's prefix.
        let mut raw = vec![PREFIX_USER, 0];
        raw.extend_from_slice(&[7; 32]);
        assert_eq!(
            NKey::from_seed(&with_checksum(raw)).err(),
            Some(NKeyError::BadPrefix)
        );
    }

    #[test]
    fn crc16_is_xmodem() {
        // The check value of CRC-16/XMODEM.
        assert_eq!(crc16(b"123456789"), 0x31c3);
    }
}
