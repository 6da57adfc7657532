//! The data types of MQTT (3.1.1 section 1.5, 5.0 section 1.5): reading them
//! from a packet body and writing them into a [`Sink`].

use super::types::{DecodeError, EncodeError};

/// The largest value of a Variable Byte Integer (four bytes).
pub const VARINT_MAX: u32 = 268_435_455;

/// How a Variable Byte Integer was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Varint {
    /// More bytes are needed.
    Incomplete,
    /// A fifth byte would be needed: malformed in both versions.
    TooLong,
    /// The value, how many bytes it took, and whether that was the fewest
    /// possible.
    Value(u32, usize, bool),
}

/// Reads a Variable Byte Integer at the start of `buf` (at most four
/// bytes). Minimality is reported, not enforced: 5.0 requires it
/// (section 1.5.5, "The encoded value MUST use the minimum number of bytes
/// necessary to represent the value" [MQTT-1.5.5-1]); 3.1.1 only bounds the
/// length to four bytes (section 2.2.3).
pub(crate) fn read_varint(buf: &[u8]) -> Varint {
    let mut value = 0u32;
    for (i, &b) in buf.iter().enumerate().take(4) {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Varint::Value(value, i + 1, i == 0 || b != 0);
        }
    }
    if buf.len() >= 4 {
        Varint::TooLong
    } else {
        Varint::Incomplete
    }
}

/// How many bytes `value` takes as a Variable Byte Integer.
pub(crate) const fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A packet body being read; every read past the end is malformed.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

const TRUNCATED: DecodeError = DecodeError::Malformed("field runs past the end of the packet");

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(TRUNCATED);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Everything left.
    pub fn take_rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A 5.0 Variable Byte Integer, in its shortest encoding.
    pub fn varint(&mut self) -> Result<u32, DecodeError> {
        match read_varint(self.buf) {
            Varint::Value(v, n, minimal) => {
                if !minimal {
                    // 5.0 section 1.5.5 [MQTT-1.5.5-1].
                    return Err(DecodeError::Malformed(
                        "variable byte integer not in its shortest form",
                    ));
                }
                self.buf = &self.buf[n..];
                Ok(v)
            }
            Varint::Incomplete => Err(TRUNCATED),
            Varint::TooLong => Err(DecodeError::Malformed(
                "variable byte integer longer than 4 bytes",
            )),
        }
    }

    /// Binary Data: a two-byte length and that many bytes.
    pub fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }

    /// A UTF-8 Encoded String: well-formed UTF-8 (which excludes the
    /// surrogates U+D800 to U+DFFF) without U+0000 (3.1.1 [MQTT-1.5.3-1],
    /// [MQTT-1.5.3-2]; 5.0 [MQTT-1.5.4-1], [MQTT-1.5.4-2]).
    pub fn string(&mut self) -> Result<&'a str, DecodeError> {
        check_str(self.binary()?)
    }
}

/// `bytes` as an MQTT UTF-8 Encoded String.
pub(crate) fn check_str(bytes: &[u8]) -> Result<&str, DecodeError> {
    let s = core::str::from_utf8(bytes)
        .map_err(|_| DecodeError::Malformed("string is not well-formed UTF-8"))?;
    if bytes.contains(&0) {
        return Err(DecodeError::Malformed("string holds U+0000"));
    }
    Ok(s)
}

/// Where encoded bytes go: a buffer, or a counter that only adds up their
/// length (so that sizes and bytes come from the same code).
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn u8(&mut self, b: u8) {
        self.put(&[b]);
    }

    fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }

    fn varint(&mut self, v: u32) -> Result<(), EncodeError> {
        if v > VARINT_MAX {
            return Err(EncodeError::TooLarge);
        }
        let mut v = v;
        let mut tmp = [0u8; 4];
        let mut n = 0;
        loop {
            let mut b = (v & 0x7f) as u8;
            v >>= 7;
            if v > 0 {
                b |= 0x80;
            }
            tmp[n] = b;
            n += 1;
            if v == 0 {
                break;
            }
        }
        self.put(&tmp[..n]);
        Ok(())
    }

    fn binary(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        let n = u16::try_from(b.len()).map_err(|_| EncodeError::StringTooLong)?;
        self.u16(n);
        self.put(b);
        Ok(())
    }

    fn string(&mut self, s: &str) -> Result<(), EncodeError> {
        self.binary(s.as_bytes())
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A sink that counts.
#[derive(Debug, Default)]
pub(crate) struct Counter(pub usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}
