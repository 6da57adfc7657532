//! Relay frames: a zero-copy view ([`Packet`]) and their meaning ([`Repr`]).
//!
//! Every frame, in both directions, over TCP and UDP (network byte order, no
//! padding):
//!
//! ```text
//!  0      1         2                      6             6+t
//! +------+---------+----------------------+-------------+-------------
//! | type | topic t | payload length p u32 | topic bytes | payload ...
//! +------+---------+----------------------+-------------+-------------
//! ```
//!
//! A frame is `6 + t + p` bytes. Which topic and payload lengths a type
//! allows is checked from the header alone ([`check_header`]), so a stream
//! peer announcing a huge payload is refused before it sends it. See
//! `docs/protocols/relay.md`.

use core::fmt;

use ringport_plugin::DropReason;

/// Length of the header.
pub const HEADER_LEN: usize = 6;

/// The longest topic (its length is one byte).
pub const MAX_TOPIC: usize = 255;

/// The largest payload accepted unless configured otherwise.
pub const DEFAULT_MAX_PAYLOAD: usize = 65536;

/// Payload length of a `LAGGED` frame: one `u64` count.
pub const LAGGED_PAYLOAD_LEN: usize = 8;

/// Length of a whole `LAGGED` frame.
pub const LAGGED_LEN: usize = HEADER_LEN + LAGGED_PAYLOAD_LEN;

/// Byte positions of the header fields.
pub mod field {
    /// A field's position in the header.
    pub type Field = core::ops::Range<usize>;

    /// Frame type, one byte; see [`super::FrameType`].
    pub const TYPE: usize = 0;
    /// Topic length, one byte.
    pub const TOPIC_LEN: usize = 1;
    /// Payload length, `u32`, network byte order.
    pub const PAYLOAD_LEN: Field = 2..6;
    /// Where the topic starts.
    pub const TOPIC: usize = 6;
}

/// The frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Client → server: start receiving a topic.
    Subscribe = 0x01,
    /// Client → server: stop receiving a topic.
    Unsubscribe = 0x02,
    /// Client → server (TCP or UDP): a message for a topic's subscribers.
    Publish = 0x03,
    /// Client → server: asks for a `PONG` with the same payload.
    Ping = 0x04,
    /// Server → client: a published message.
    Message = 0x81,
    /// Server → client: how many messages to this subscriber were dropped.
    Lagged = 0x82,
    /// Server → client: the answer to a `PING`.
    Pong = 0x83,
}

impl FrameType {
    /// The type with this wire value, if any.
    pub const fn from_u8(value: u8) -> Option<FrameType> {
        Some(match value {
            0x01 => FrameType::Subscribe,
            0x02 => FrameType::Unsubscribe,
            0x03 => FrameType::Publish,
            0x04 => FrameType::Ping,
            0x81 => FrameType::Message,
            0x82 => FrameType::Lagged,
            0x83 => FrameType::Pong,
            _ => return None,
        })
    }

    /// The wire value.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Whether clients send this type (servers send the others).
    pub const fn from_client(self) -> bool {
        self.as_u8() < 0x80
    }

    /// The topic lengths this type allows.
    const fn topic_rule(self) -> Rule {
        match self {
            FrameType::Subscribe
            | FrameType::Unsubscribe
            | FrameType::Publish
            | FrameType::Message => Rule::NonEmpty,
            FrameType::Ping | FrameType::Lagged | FrameType::Pong => Rule::Exactly(0),
        }
    }

    /// The payload lengths this type allows (besides the configured maximum).
    const fn payload_rule(self) -> Rule {
        match self {
            FrameType::Subscribe | FrameType::Unsubscribe => Rule::Exactly(0),
            FrameType::Lagged => Rule::Exactly(LAGGED_PAYLOAD_LEN),
            FrameType::Publish | FrameType::Ping | FrameType::Message | FrameType::Pong => {
                Rule::Any
            }
        }
    }
}

/// A length constraint.
#[derive(Clone, Copy)]
enum Rule {
    Any,
    NonEmpty,
    Exactly(usize),
}

/// Why bytes are not a valid relay frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The buffer ends before the header, or before the length it announces.
    Truncated,
    /// The type byte is not a known [`FrameType`].
    UnknownType(u8),
    /// A type that needs a topic has topic length 0.
    EmptyTopic,
    /// A type without a topic has a non-zero topic length.
    UnexpectedTopic,
    /// A payload length this type does not allow.
    UnexpectedPayload,
    /// A payload longer than the configured maximum.
    PayloadTooLong,
    /// A datagram whose length differs from the frame length it announces.
    LengthMismatch,
}

impl Error {
    /// The reason a drop for this error is counted under.
    pub const fn drop_reason(self) -> DropReason {
        match self {
            Error::EmptyTopic => DropReason::FrameTooShort,
            Error::PayloadTooLong => DropReason::FrameTooLong,
            Error::Truncated
            | Error::UnknownType(_)
            | Error::UnexpectedTopic
            | Error::UnexpectedPayload
            | Error::LengthMismatch => DropReason::Malformed,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("buffer ends inside the relay frame"),
            Error::UnknownType(t) => write!(f, "unknown relay frame type {t:#04x}"),
            Error::EmptyTopic => f.write_str("relay frame needs a topic"),
            Error::UnexpectedTopic => f.write_str("relay frame type takes no topic"),
            Error::UnexpectedPayload => f.write_str("payload length not allowed for the type"),
            Error::PayloadTooLong => f.write_str("payload above the configured maximum"),
            Error::LengthMismatch => f.write_str("datagram length differs from the frame length"),
        }
    }
}

impl std::error::Error for Error {}

/// A read/write view of one relay frame at the start of a buffer.
///
/// Build it with [`Packet::new_checked`]: once that returned `Ok`, no accessor
/// panics, whatever the bytes. With [`Packet::new_unchecked`] the header
/// accessors panic on a buffer shorter than [`HEADER_LEN`], and
/// [`Packet::topic`], [`Packet::payload`] and [`Packet::frame`] on a buffer
/// shorter than the frame. The buffer may hold more bytes after the frame.
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

    /// Checks that the buffer holds the header and the whole frame it
    /// announces; [`Error::Truncated`] otherwise. Field values are not
    /// checked (see [`check_header`]).
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.frame_len() {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The raw type byte.
    pub fn type_byte(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The topic length field.
    pub fn topic_len(&self) -> u8 {
        self.buffer.as_ref()[field::TOPIC_LEN]
    }

    /// The payload length field.
    pub fn payload_len(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::PAYLOAD_LEN];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The length of the whole frame the header announces (saturating on
    /// targets where it does not fit a `usize`).
    pub fn frame_len(&self) -> usize {
        (HEADER_LEN + usize::from(self.topic_len()))
            .saturating_add(usize::try_from(self.payload_len()).unwrap_or(usize::MAX))
    }

    /// The header bytes.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }

    /// The topic bytes.
    pub fn topic(&self) -> &[u8] {
        &self.buffer.as_ref()[field::TOPIC..field::TOPIC + usize::from(self.topic_len())]
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        let start = field::TOPIC + usize::from(self.topic_len());
        &self.buffer.as_ref()[start..self.frame_len()]
    }

    /// The whole frame, up to the announced length.
    pub fn frame(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.frame_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the type byte.
    pub fn set_frame_type(&mut self, value: FrameType) {
        self.buffer.as_mut()[field::TYPE] = value.as_u8();
    }

    /// Sets the topic length field.
    pub fn set_topic_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::TOPIC_LEN] = value;
    }

    /// Sets the payload length field.
    pub fn set_payload_len(&mut self, value: u32) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&value.to_be_bytes());
    }

    /// The topic, mutable.
    pub fn topic_mut(&mut self) -> &mut [u8] {
        let end = field::TOPIC + usize::from(self.topic_len());
        &mut self.buffer.as_mut()[field::TOPIC..end]
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = field::TOPIC + usize::from(self.topic_len());
        let end = self.frame_len();
        &mut self.buffer.as_mut()[start..end]
    }
}

/// Checks a header's fields against its type's rules and `max_payload`;
/// returns the type and the whole frame length.
///
/// Checks in order: known type, payload length within `max_payload`, then
/// the type's topic and payload rules.
///
/// # Panics
///
/// If `header` is shorter than [`HEADER_LEN`].
pub fn check_header(header: &[u8], max_payload: usize) -> Result<(FrameType, usize), Error> {
    let packet = Packet::new_unchecked(header);
    let ty =
        FrameType::from_u8(packet.type_byte()).ok_or(Error::UnknownType(packet.type_byte()))?;
    let payload = usize::try_from(packet.payload_len()).unwrap_or(usize::MAX);
    if payload > max_payload {
        return Err(Error::PayloadTooLong);
    }
    let topic = usize::from(packet.topic_len());
    match ty.topic_rule() {
        Rule::NonEmpty if topic == 0 => return Err(Error::EmptyTopic),
        Rule::Exactly(n) if topic != n => return Err(Error::UnexpectedTopic),
        _ => {}
    }
    match ty.payload_rule() {
        Rule::Exactly(n) if payload != n => return Err(Error::UnexpectedPayload),
        Rule::NonEmpty if payload == 0 => return Err(Error::UnexpectedPayload),
        _ => {}
    }
    Ok((ty, HEADER_LEN + topic + payload))
}

/// What a relay frame means; topics and payloads borrow the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr<'a> {
    /// Start receiving `topic`.
    Subscribe {
        /// 1..=255 bytes.
        topic: &'a [u8],
    },
    /// Stop receiving `topic`.
    Unsubscribe {
        /// 1..=255 bytes.
        topic: &'a [u8],
    },
    /// A message for `topic`'s subscribers.
    Publish {
        /// 1..=255 bytes.
        topic: &'a [u8],
        /// The message.
        payload: &'a [u8],
    },
    /// Asks for a [`Repr::Pong`] with the same payload.
    Ping {
        /// Opaque bytes echoed back.
        payload: &'a [u8],
    },
    /// A published message, to a subscriber.
    Message {
        /// 1..=255 bytes.
        topic: &'a [u8],
        /// The message.
        payload: &'a [u8],
    },
    /// `count` messages to this subscriber were dropped since the last one.
    Lagged {
        /// Messages missed.
        count: u64,
    },
    /// The answer to a ping.
    Pong {
        /// The ping's payload.
        payload: &'a [u8],
    },
}

impl<'a> Repr<'a> {
    /// Reads a frame whose header passes [`check_header`] with `max_payload`
    /// and whose bytes are all in the packet's buffer.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&'a T>,
        max_payload: usize,
    ) -> Result<Repr<'a>, Error> {
        let buffer: &'a T = packet.buffer;
        let data: &'a [u8] = buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let (ty, len) = check_header(data, max_payload)?;
        if data.len() < len {
            return Err(Error::Truncated);
        }
        let topic_end = field::TOPIC + usize::from(data[field::TOPIC_LEN]);
        let topic = &data[field::TOPIC..topic_end];
        let payload = &data[topic_end..len];
        Ok(match ty {
            FrameType::Subscribe => Repr::Subscribe { topic },
            FrameType::Unsubscribe => Repr::Unsubscribe { topic },
            FrameType::Publish => Repr::Publish { topic, payload },
            FrameType::Ping => Repr::Ping { payload },
            FrameType::Message => Repr::Message { topic, payload },
            FrameType::Lagged => {
                let mut b = [0; LAGGED_PAYLOAD_LEN];
                b.copy_from_slice(payload);
                Repr::Lagged {
                    count: u64::from_be_bytes(b),
                }
            }
            FrameType::Pong => Repr::Pong { payload },
        })
    }

    /// The frame type.
    pub const fn frame_type(&self) -> FrameType {
        match self {
            Repr::Subscribe { .. } => FrameType::Subscribe,
            Repr::Unsubscribe { .. } => FrameType::Unsubscribe,
            Repr::Publish { .. } => FrameType::Publish,
            Repr::Ping { .. } => FrameType::Ping,
            Repr::Message { .. } => FrameType::Message,
            Repr::Lagged { .. } => FrameType::Lagged,
            Repr::Pong { .. } => FrameType::Pong,
        }
    }

    /// The topic (empty for types without one).
    pub const fn topic(&self) -> &'a [u8] {
        match self {
            Repr::Subscribe { topic }
            | Repr::Unsubscribe { topic }
            | Repr::Publish { topic, .. }
            | Repr::Message { topic, .. } => topic,
            Repr::Ping { .. } | Repr::Lagged { .. } | Repr::Pong { .. } => &[],
        }
    }

    /// Length of the payload on the wire.
    pub const fn payload_len(&self) -> usize {
        match self {
            Repr::Publish { payload, .. }
            | Repr::Message { payload, .. }
            | Repr::Ping { payload }
            | Repr::Pong { payload } => payload.len(),
            Repr::Lagged { .. } => LAGGED_PAYLOAD_LEN,
            Repr::Subscribe { .. } | Repr::Unsubscribe { .. } => 0,
        }
    }

    /// Length of the whole frame on the wire.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.topic().len() + self.payload_len()
    }

    /// The header, ready to send in front of the topic and payload.
    ///
    /// # Panics
    ///
    /// If the topic is longer than [`MAX_TOPIC`] or the payload longer than
    /// `u32::MAX` bytes.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        header(self.frame_type(), self.topic().len(), self.payload_len())
    }

    /// Writes the whole frame into `packet`.
    ///
    /// # Panics
    ///
    /// As [`Repr::header`], and if the buffer is shorter than
    /// [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.buffer.as_mut()[..HEADER_LEN].copy_from_slice(&self.header());
        packet.topic_mut().copy_from_slice(self.topic());
        match self {
            Repr::Lagged { count } => packet.payload_mut().copy_from_slice(&count.to_be_bytes()),
            Repr::Publish { payload, .. }
            | Repr::Message { payload, .. }
            | Repr::Ping { payload }
            | Repr::Pong { payload } => packet.payload_mut().copy_from_slice(payload),
            Repr::Subscribe { .. } | Repr::Unsubscribe { .. } => {}
        }
    }

    /// The whole frame in a new buffer.
    ///
    /// # Panics
    ///
    /// As [`Repr::header`].
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut out[..]));
        out
    }
}

/// A header for `ty` with these lengths.
///
/// # Panics
///
/// If `topic_len` > [`MAX_TOPIC`] or `payload_len` > `u32::MAX`.
pub fn header(ty: FrameType, topic_len: usize, payload_len: usize) -> [u8; HEADER_LEN] {
    let topic = u8::try_from(topic_len).expect("topic longer than 255 bytes");
    let payload = u32::try_from(payload_len).expect("payload longer than u32::MAX");
    let mut out = [0; HEADER_LEN];
    let mut packet = Packet::new_unchecked(&mut out[..]);
    packet.set_frame_type(ty);
    packet.set_topic_len(topic);
    packet.set_payload_len(payload);
    out
}

/// A whole `LAGGED` frame telling that `count` messages were dropped.
pub fn lagged_frame(count: u64) -> [u8; LAGGED_LEN] {
    let mut out = [0; LAGGED_LEN];
    Repr::Lagged { count }.emit(&mut Packet::new_unchecked(&mut out[..]));
    out
}

/// Where the next frame of a stream stands, as seen by [`next_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A whole, valid frame of this type and length starts the buffer.
    Frame(FrameType, usize),
    /// The header or the rest of the frame has not arrived yet.
    Incomplete,
    /// The header is invalid: the stream cannot go on.
    Invalid(Error),
}

/// Looks at the frame at the start of a stream buffer. A bad header is
/// reported as soon as the header is in, without waiting for the bytes it
/// announces.
pub fn next_frame(buf: &[u8], max_payload: usize) -> Framing {
    if buf.len() < HEADER_LEN {
        return Framing::Incomplete;
    }
    match check_header(buf, max_payload) {
        Err(e) => Framing::Invalid(e),
        Ok((_, len)) if buf.len() < len => Framing::Incomplete,
        Ok((ty, len)) => Framing::Frame(ty, len),
    }
}

/// Parses a datagram holding exactly one frame.
///
/// Shorter than a header, or a length that differs from the frame the header
/// announces: [`Error::Truncated`] or [`Error::LengthMismatch`]; otherwise the
/// header checks of [`check_header`].
pub fn parse_datagram(data: &[u8], max_payload: usize) -> Result<Repr<'_>, Error> {
    if data.len() < HEADER_LEN {
        return Err(Error::Truncated);
    }
    let (_, len) = check_header(data, max_payload)?;
    if len != data.len() {
        return Err(Error::LengthMismatch);
    }
    Repr::parse(&Packet::new_unchecked(data), max_payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PUBLISH` of `21.5` on topic `t/1`, as in the spec.
    const PUBLISH: [u8; 13] = [
        0x03, 0x03, 0x00, 0x00, 0x00, 0x04, b't', b'/', b'1', b'2', b'1', b'.', b'5',
    ];

    /// One valid frame of every type, with its representation.
    fn every_type() -> Vec<(Vec<u8>, Repr<'static>)> {
        vec![
            (
                vec![0x01, 2, 0, 0, 0, 0, b'a', b'b'],
                Repr::Subscribe { topic: b"ab" },
            ),
            (
                vec![0x02, 1, 0, 0, 0, 0, b'a'],
                Repr::Unsubscribe { topic: b"a" },
            ),
            (
                PUBLISH.to_vec(),
                Repr::Publish {
                    topic: b"t/1",
                    payload: b"21.5",
                },
            ),
            (
                vec![0x04, 0, 0, 0, 0, 2, 0xaa, 0xbb],
                Repr::Ping {
                    payload: &[0xaa, 0xbb],
                },
            ),
            (
                vec![0x81, 1, 0, 0, 0, 1, b'x', b'y'],
                Repr::Message {
                    topic: b"x",
                    payload: b"y",
                },
            ),
            (
                vec![0x82, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x01, 0x2c],
                Repr::Lagged { count: 300 },
            ),
            (vec![0x83, 0, 0, 0, 0, 0], Repr::Pong { payload: b"" }),
        ]
    }

    #[test]
    fn packet_fields() {
        let packet = Packet::new_checked(&PUBLISH[..]).unwrap();
        assert_eq!(packet.type_byte(), 0x03);
        assert_eq!(packet.topic_len(), 3);
        assert_eq!(packet.payload_len(), 4);
        assert_eq!(packet.frame_len(), 13);
        assert_eq!(packet.header(), &PUBLISH[..6]);
        assert_eq!(packet.topic(), b"t/1");
        assert_eq!(packet.payload(), b"21.5");
        assert_eq!(packet.frame(), &PUBLISH[..]);
    }

    #[test]
    fn parse_and_emit_every_type() {
        for (bytes, repr) in every_type() {
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(Repr::parse(&packet, DEFAULT_MAX_PAYLOAD), Ok(repr));
            assert_eq!(repr.to_vec(), bytes, "{repr:?}");
            assert_eq!(repr.buffer_len(), bytes.len());
            assert_eq!(repr.header(), bytes[..HEADER_LEN]);
            assert_eq!(repr.frame_type().as_u8(), bytes[0]);
            assert_eq!(FrameType::from_u8(bytes[0]), Some(repr.frame_type()));
            assert_eq!(
                next_frame(&bytes, DEFAULT_MAX_PAYLOAD),
                Framing::Frame(repr.frame_type(), bytes.len())
            );
            assert_eq!(parse_datagram(&bytes, DEFAULT_MAX_PAYLOAD), Ok(repr));
        }
    }

    #[test]
    fn lagged_frame_matches_the_spec() {
        assert_eq!(
            lagged_frame(300),
            [0x82, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x01, 0x2c]
        );
        let max = lagged_frame(u64::MAX);
        let packet = Packet::new_checked(&max[..]).unwrap();
        assert_eq!(
            Repr::parse(&packet, 8),
            Ok(Repr::Lagged { count: u64::MAX })
        );
    }

    #[test]
    fn directions() {
        let client = [0x01, 0x02, 0x03, 0x04];
        for t in 0..=255u8 {
            match FrameType::from_u8(t) {
                Some(ty) => {
                    assert_eq!(ty.as_u8(), t);
                    assert_eq!(ty.from_client(), client.contains(&t));
                }
                None => assert!(![0x01, 0x02, 0x03, 0x04, 0x81, 0x82, 0x83].contains(&t)),
            }
        }
    }

    #[test]
    fn truncated_at_every_length() {
        for (bytes, _) in every_type() {
            for len in 0..bytes.len() {
                let part = &bytes[..len];
                assert_eq!(Packet::new_checked(part), Err(Error::Truncated));
                assert_eq!(
                    Repr::parse(&Packet::new_unchecked(part), DEFAULT_MAX_PAYLOAD),
                    Err(Error::Truncated)
                );
                assert_eq!(next_frame(part, DEFAULT_MAX_PAYLOAD), Framing::Incomplete);
                let expect = if len < HEADER_LEN {
                    Error::Truncated
                } else {
                    Error::LengthMismatch
                };
                assert_eq!(parse_datagram(part, DEFAULT_MAX_PAYLOAD), Err(expect));
            }
        }
    }

    #[test]
    fn trailing_bytes_belong_to_the_next_frame() {
        let mut buf = PUBLISH.to_vec();
        buf.extend_from_slice(&[0x01, 1, 0, 0]);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.frame(), &PUBLISH[..]);
        assert_eq!(
            next_frame(&buf, DEFAULT_MAX_PAYLOAD),
            Framing::Frame(FrameType::Publish, 13)
        );
        assert_eq!(
            parse_datagram(&buf, DEFAULT_MAX_PAYLOAD),
            Err(Error::LengthMismatch)
        );
    }

    #[test]
    fn unknown_types_are_refused_on_the_header() {
        for t in [0x00, 0x05, 0x7f, 0x80, 0x84, 0xff] {
            let header = [t, 0, 0, 0, 0, 0];
            assert_eq!(
                next_frame(&header, DEFAULT_MAX_PAYLOAD),
                Framing::Invalid(Error::UnknownType(t))
            );
            assert_eq!(
                parse_datagram(&header, DEFAULT_MAX_PAYLOAD),
                Err(Error::UnknownType(t))
            );
        }
    }

    #[test]
    fn oversized_payload_is_refused_on_the_header() {
        let mut header = [0x03, 1, 0, 0, 0, 0];
        header[field::PAYLOAD_LEN].copy_from_slice(&65537u32.to_be_bytes());
        assert_eq!(
            next_frame(&header, DEFAULT_MAX_PAYLOAD),
            Framing::Invalid(Error::PayloadTooLong)
        );
        header[field::PAYLOAD_LEN].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            next_frame(&header, DEFAULT_MAX_PAYLOAD),
            Framing::Invalid(Error::PayloadTooLong)
        );
        // The maximum itself is allowed, and checked per configuration.
        header[field::PAYLOAD_LEN].copy_from_slice(&65536u32.to_be_bytes());
        assert_eq!(
            next_frame(&header, DEFAULT_MAX_PAYLOAD),
            Framing::Incomplete
        );
        assert_eq!(
            next_frame(&PUBLISH, 4),
            Framing::Frame(FrameType::Publish, 13)
        );
        assert_eq!(
            next_frame(&PUBLISH, 3),
            Framing::Invalid(Error::PayloadTooLong)
        );
        assert_eq!(parse_datagram(&PUBLISH, 3), Err(Error::PayloadTooLong));
        // A ping's payload has the same limit.
        let ping = Repr::Ping { payload: &[0; 5] }.to_vec();
        assert_eq!(
            next_frame(&ping, 4),
            Framing::Invalid(Error::PayloadTooLong)
        );
    }

    #[test]
    fn shape_rules_per_type() {
        let cases: [([u8; 6], Error); 8] = [
            ([0x01, 0, 0, 0, 0, 0], Error::EmptyTopic),
            ([0x02, 0, 0, 0, 0, 0], Error::EmptyTopic),
            ([0x03, 0, 0, 0, 0, 1], Error::EmptyTopic),
            ([0x81, 0, 0, 0, 0, 0], Error::EmptyTopic),
            ([0x01, 1, 0, 0, 0, 1], Error::UnexpectedPayload),
            ([0x04, 1, 0, 0, 0, 0], Error::UnexpectedTopic),
            ([0x82, 0, 0, 0, 0, 7], Error::UnexpectedPayload),
            ([0x83, 2, 0, 0, 0, 0], Error::UnexpectedTopic),
        ];
        for (header, error) in cases {
            assert_eq!(
                next_frame(&header, DEFAULT_MAX_PAYLOAD),
                Framing::Invalid(error),
                "{header:?}"
            );
        }
    }

    #[test]
    fn longest_topic_round_trips() {
        let topic = [b'z'; MAX_TOPIC];
        let repr = Repr::Publish {
            topic: &topic,
            payload: b"",
        };
        let bytes = repr.to_vec();
        assert_eq!(bytes.len(), 6 + 255);
        assert_eq!(bytes[..6], [0x03, 0xff, 0, 0, 0, 0]);
        assert_eq!(parse_datagram(&bytes, 0), Ok(repr));
    }

    #[test]
    #[should_panic(expected = "topic longer than 255 bytes")]
    fn emitting_a_longer_topic_panics() {
        let topic = [b'z'; MAX_TOPIC + 1];
        let _ = Repr::Subscribe { topic: &topic }.header();
    }

    #[test]
    fn errors_map_to_drop_reasons() {
        assert_eq!(Error::EmptyTopic.drop_reason(), DropReason::FrameTooShort);
        assert_eq!(
            Error::PayloadTooLong.drop_reason(),
            DropReason::FrameTooLong
        );
        for e in [
            Error::Truncated,
            Error::UnknownType(9),
            Error::UnexpectedTopic,
            Error::UnexpectedPayload,
            Error::LengthMismatch,
        ] {
            assert_eq!(e.drop_reason(), DropReason::Malformed);
        }
        assert_eq!(
            Error::UnknownType(0x85).to_string(),
            "unknown relay frame type 0x85"
        );
    }
}
