//! The sockperf message header: a zero-copy view ([`Packet`]) and its
//! meaningful fields ([`Repr`]).
//!
//! Layout (network byte order, no padding on the wire):
//!
//! ```text
//!  0                   8          10                  14
//! +-------------------+----------+-------------------+---------------
//! | sequence (u64)    | flags u16| total length (u32)| payload ...
//! +-------------------+----------+-------------------+---------------
//! ```
//!
//! The total length counts the 14 header bytes. See `docs/protocols/sockperf.md`.

use core::fmt;

/// Length of the header, and so the smallest valid total length.
pub const HEADER_LEN: usize = 14;

/// The largest total length accepted unless configured otherwise.
pub const DEFAULT_MAX_FRAME: usize = 65536;

/// Byte ranges of the header fields.
pub mod field {
    /// A field's position in the header.
    pub type Field = core::ops::Range<usize>;

    /// Sequence number, `u64`, network byte order.
    pub const SEQUENCE: Field = 0..8;
    /// Flags, `u16`, network byte order; see [`super::Flags`].
    pub const FLAGS: Field = 8..10;
    /// Total message length including the header, `u32`, network byte order.
    pub const LENGTH: Field = 10..14;
    /// Where the payload starts.
    pub const PAYLOAD: usize = 14;
}

/// The flags field of a sockperf header.
///
/// Bits other than the named ones are kept as they are: a reply differs from
/// its request only in [`Flags::CLIENT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u16);

impl Flags {
    /// Set by the client on every message it sends; a reply has it cleared.
    pub const CLIENT: Flags = Flags(0x0001);
    /// The client wants this message reflected back.
    pub const PONG_REQUEST: Flags = Flags(0x0002);
    /// A warm-up message; a server neither counts nor answers it.
    pub const WARMUP: Flags = Flags(0x0004);

    /// Flags with exactly these bits.
    pub const fn from_bits(bits: u16) -> Flags {
        Flags(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// These flags plus the bits of `other`.
    pub const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// These flags minus the bits of `other`.
    pub const fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }

    /// Whether a server answers a message with these flags: a client message
    /// asking for a pong that is not a warm-up (sockperf's own server rule).
    pub const fn wants_reply(self) -> bool {
        self.contains(Flags::CLIENT.with(Flags::PONG_REQUEST)) && !self.contains(Flags::WARMUP)
    }
}

/// Why bytes are not a valid sockperf message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The buffer ends before the header, or before the length it announces.
    Truncated,
    /// The length field is below [`HEADER_LEN`].
    TooShort,
    /// The length field is above the configured maximum.
    TooLong,
    /// A datagram whose length field differs from its actual length.
    LengthMismatch,
}

impl Error {
    /// The reason a drop for this error is counted under.
    pub const fn drop_reason(self) -> ringport_plugin::DropReason {
        use ringport_plugin::DropReason;
        match self {
            Error::TooShort => DropReason::FrameTooShort,
            Error::TooLong => DropReason::FrameTooLong,
            Error::Truncated | Error::LengthMismatch => DropReason::Malformed,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "buffer ends inside the sockperf message",
            Error::TooShort => "sockperf length field below the 14-byte header",
            Error::TooLong => "sockperf length field above the configured maximum",
            Error::LengthMismatch => "sockperf length field differs from the datagram length",
        })
    }
}

impl std::error::Error for Error {}

/// A read/write view of one sockperf message at the start of a buffer.
///
/// Build it with [`Packet::new_checked`]: once that returned `Ok`, no accessor
/// panics, whatever the bytes. With [`Packet::new_unchecked`] the header
/// accessors panic on a buffer shorter than [`HEADER_LEN`], and
/// [`Packet::payload`] and [`Packet::frame`] on a buffer shorter than the
/// length field.
///
/// The buffer may hold more bytes after the message (the next frames of a
/// stream); [`Packet::frame`] and [`Packet::payload`] stop at the announced
/// length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without any check.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole header, that the length field is
    /// at least [`HEADER_LEN`] and that the buffer holds that many bytes.
    ///
    /// Returns [`Error::Truncated`] when bytes are missing (a stream should
    /// wait for more) and [`Error::TooShort`] for a length field below the
    /// header size (the stream cannot be resynchronised).
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let total = self.total_len() as usize;
        if total < HEADER_LEN {
            Err(Error::TooShort)
        } else if len < total {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The sequence number.
    pub fn sequence(&self) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.buffer.as_ref()[field::SEQUENCE]);
        u64::from_be_bytes(b)
    }

    /// The flags.
    pub fn flags(&self) -> Flags {
        let b = &self.buffer.as_ref()[field::FLAGS];
        Flags(u16::from_be_bytes([b[0], b[1]]))
    }

    /// The length field: the whole message, header included.
    pub fn total_len(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::LENGTH];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The header bytes.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }

    /// The bytes after the header, up to the announced length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..self.total_len() as usize]
    }

    /// The whole message, header included, up to the announced length.
    pub fn frame(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.total_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the sequence number.
    pub fn set_sequence(&mut self, value: u64) {
        self.buffer.as_mut()[field::SEQUENCE].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the flags.
    pub fn set_flags(&mut self, value: Flags) {
        self.buffer.as_mut()[field::FLAGS].copy_from_slice(&value.0.to_be_bytes());
    }

    /// Sets the length field.
    pub fn set_total_len(&mut self, value: u32) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&value.to_be_bytes());
    }

    /// The payload, mutable, up to the announced length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len() as usize;
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

/// The meaningful fields of a sockperf header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The sequence number.
    pub sequence: u64,
    /// The flags.
    pub flags: Flags,
    /// Whole message length, header included.
    pub total_len: u32,
}

impl Repr {
    /// Reads the header of a message whose length passed
    /// [`Packet::check_len`] and that is at most `max_frame` bytes long.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>, max_frame: usize) -> Result<Repr, Error> {
        packet.check_len()?;
        let total_len = packet.total_len();
        if total_len as usize > max_frame {
            return Err(Error::TooLong);
        }
        Ok(Repr {
            sequence: packet.sequence(),
            flags: packet.flags(),
            total_len,
        })
    }

    /// Bytes the header takes on the wire.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header fields into `packet`; the payload is left as is.
    ///
    /// # Panics
    ///
    /// If the packet's buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_sequence(self.sequence);
        packet.set_flags(self.flags);
        packet.set_total_len(self.total_len);
    }

    /// The header as a stack array, ready to send in front of a payload.
    pub fn to_header(&self) -> [u8; HEADER_LEN] {
        let mut header = [0; HEADER_LEN];
        self.emit(&mut Packet::new_unchecked(&mut header[..]));
        header
    }
}

/// Where the next frame of a stream stands, as seen by [`next_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A whole frame of this many bytes starts the buffer.
    Frame(usize),
    /// The header or the rest of the frame has not arrived yet.
    Incomplete,
    /// The header announces an invalid length: the stream cannot go on.
    Invalid(Error),
}

/// Looks at the frame at the start of a stream buffer.
///
/// A bad length is reported as soon as the header is in, without waiting for
/// the announced bytes: a peer that announces 4 GiB is refused at once.
pub fn next_frame(buf: &[u8], max_frame: usize) -> Framing {
    if buf.len() < HEADER_LEN {
        return Framing::Incomplete;
    }
    let total = Packet::new_unchecked(buf).total_len() as usize;
    if total < HEADER_LEN {
        Framing::Invalid(Error::TooShort)
    } else if total > max_frame {
        Framing::Invalid(Error::TooLong)
    } else if buf.len() < total {
        Framing::Incomplete
    } else {
        Framing::Frame(total)
    }
}

/// Checks a datagram holding exactly one message of at most `max_frame`
/// bytes, and returns its view.
///
/// A datagram shorter than a header is [`Error::Truncated`]; a length field
/// below the header size or above `max_frame` is [`Error::TooShort`] or
/// [`Error::TooLong`]; any other disagreement between the length field and
/// the datagram length is [`Error::LengthMismatch`].
pub fn parse_datagram(data: &[u8], max_frame: usize) -> Result<Packet<&[u8]>, Error> {
    if data.len() < HEADER_LEN {
        return Err(Error::Truncated);
    }
    let packet = Packet::new_unchecked(data);
    let total = packet.total_len() as usize;
    if total < HEADER_LEN {
        Err(Error::TooShort)
    } else if total > max_frame {
        Err(Error::TooLong)
    } else if total != data.len() {
        Err(Error::LengthMismatch)
    } else {
        Ok(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sequence 0x0102030405060708, flags CLIENT|PONG_REQUEST, length 17, payload "abc".
    const PING: [u8; 17] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // sequence
        0x00, 0x03, // flags
        0x00, 0x00, 0x00, 0x11, // total length 17
        b'a', b'b', b'c',
    ];

    #[test]
    fn parse_fields() {
        let packet = Packet::new_checked(&PING[..]).unwrap();
        assert_eq!(packet.sequence(), 0x0102_0304_0506_0708);
        assert_eq!(packet.flags(), Flags::CLIENT.with(Flags::PONG_REQUEST));
        assert_eq!(packet.total_len(), 17);
        assert_eq!(packet.payload(), b"abc");
        assert_eq!(packet.frame(), &PING[..]);
        assert_eq!(
            Repr::parse(&packet, DEFAULT_MAX_FRAME),
            Ok(Repr {
                sequence: 0x0102_0304_0506_0708,
                flags: Flags::from_bits(3),
                total_len: 17,
            })
        );
    }

    #[test]
    fn emit_header_and_payload() {
        let repr = Repr {
            sequence: 0x0102_0304_0506_0708,
            flags: Flags::CLIENT.with(Flags::PONG_REQUEST),
            total_len: 17,
        };
        let mut buf = [0u8; 17];
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(b"abc");
        assert_eq!(buf, PING);
        assert_eq!(repr.to_header(), PING[..HEADER_LEN]);
        assert_eq!(repr.header_len(), 14);
    }

    #[test]
    fn round_trip() {
        let repr = Repr {
            sequence: u64::MAX - 1,
            flags: Flags::from_bits(0xfff5),
            total_len: 14,
        };
        let header = repr.to_header();
        assert_eq!(
            header,
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xf5, 0, 0, 0, 14]
        );
        let packet = Packet::new_checked(&header[..]).unwrap();
        assert_eq!(Repr::parse(&packet, 14), Ok(repr));
        assert_eq!(packet.payload(), b"");
    }

    #[test]
    fn trailing_bytes_belong_to_the_next_frame() {
        let mut buf = PING.to_vec();
        buf.extend_from_slice(b"next");
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.frame(), &PING[..]);
        assert_eq!(packet.payload(), b"abc");
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..PING.len() {
            assert_eq!(
                Packet::new_checked(&PING[..len]),
                Err(Error::Truncated),
                "len {len}"
            );
            assert_eq!(
                next_frame(&PING[..len], DEFAULT_MAX_FRAME),
                Framing::Incomplete
            );
        }
        assert_eq!(next_frame(&PING, DEFAULT_MAX_FRAME), Framing::Frame(17));
    }

    #[test]
    fn too_short_length_field() {
        let mut buf = PING;
        buf[field::LENGTH].copy_from_slice(&13u32.to_be_bytes());
        assert_eq!(Packet::new_checked(&buf[..]), Err(Error::TooShort));
        assert_eq!(
            next_frame(&buf[..HEADER_LEN], DEFAULT_MAX_FRAME),
            Framing::Invalid(Error::TooShort)
        );
        buf[field::LENGTH].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(
            next_frame(&buf, DEFAULT_MAX_FRAME),
            Framing::Invalid(Error::TooShort)
        );
    }

    #[test]
    fn oversized_length_field() {
        let mut header = PING;
        header[field::LENGTH].copy_from_slice(&65537u32.to_be_bytes());
        // Refused from the header alone, before the announced bytes arrive.
        assert_eq!(
            next_frame(&header[..HEADER_LEN], DEFAULT_MAX_FRAME),
            Framing::Invalid(Error::TooLong)
        );
        header[field::LENGTH].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            next_frame(&header[..HEADER_LEN], DEFAULT_MAX_FRAME),
            Framing::Invalid(Error::TooLong)
        );
        // The maximum itself is allowed.
        assert_eq!(next_frame(&PING, 17), Framing::Frame(17));
        assert_eq!(next_frame(&PING, 16), Framing::Invalid(Error::TooLong));
        let packet = Packet::new_checked(&PING[..]).unwrap();
        assert_eq!(Repr::parse(&packet, 16), Err(Error::TooLong));
    }

    #[test]
    fn datagram_checks() {
        assert_eq!(
            parse_datagram(&PING, DEFAULT_MAX_FRAME).map(|p| p.total_len()),
            Ok(17)
        );
        assert_eq!(
            parse_datagram(&PING[..13], DEFAULT_MAX_FRAME),
            Err(Error::Truncated)
        );
        assert_eq!(
            parse_datagram(&PING[..16], DEFAULT_MAX_FRAME),
            Err(Error::LengthMismatch)
        );
        let mut longer = PING.to_vec();
        longer.push(0);
        assert_eq!(
            parse_datagram(&longer, DEFAULT_MAX_FRAME),
            Err(Error::LengthMismatch)
        );
        assert_eq!(parse_datagram(&PING, 16), Err(Error::TooLong));
        let mut short = PING;
        short[field::LENGTH].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(
            parse_datagram(&short, DEFAULT_MAX_FRAME),
            Err(Error::TooShort)
        );
    }

    #[test]
    fn flags_rules() {
        let ping = Flags::CLIENT.with(Flags::PONG_REQUEST);
        assert!(ping.wants_reply());
        assert!(!Flags::CLIENT.wants_reply());
        assert!(!Flags::PONG_REQUEST.wants_reply());
        assert!(!ping.with(Flags::WARMUP).wants_reply());
        assert_eq!(ping.without(Flags::CLIENT), Flags::PONG_REQUEST);
        assert_eq!(
            Flags::from_bits(0x8003).without(Flags::CLIENT).bits(),
            0x8002
        );
    }

    #[test]
    fn errors_map_to_drop_reasons() {
        use ringport_plugin::DropReason;
        assert_eq!(Error::TooShort.drop_reason(), DropReason::FrameTooShort);
        assert_eq!(Error::TooLong.drop_reason(), DropReason::FrameTooLong);
        assert_eq!(Error::Truncated.drop_reason(), DropReason::Malformed);
        assert_eq!(Error::LengthMismatch.drop_reason(), DropReason::Malformed);
    }
}
