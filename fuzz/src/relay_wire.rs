//! Relay frames (`protocols/src/relay/wire.rs`) against a model of the
//! framing written from `docs/protocols/relay.md`: a 6-byte header (type,
//! topic length, payload length u32 big-endian), the topic, the payload, and
//! per type which lengths are allowed.

use ringport_protocols::relay::wire::{
    self, next_frame, parse_datagram, Error, Framing, Packet, Repr, HEADER_LEN,
};
use ringport_protocols::relay::FrameType;

use crate::Input;

/// A frame as the spec describes it; topics and payloads borrow the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame<'a> {
    pub ty: u8,
    pub topic: &'a [u8],
    pub payload: &'a [u8],
}

/// The spec's table: for each type, whether it takes a topic, and what
/// payload length it takes (`None`: any up to the maximum).
fn rules(ty: u8) -> Option<(bool, Option<u64>)> {
    Some(match ty {
        0x01 | 0x02 => (true, Some(0)),
        0x03 | 0x81 => (true, None),
        0x04 | 0x83 => (false, None),
        0x82 => (false, Some(8)),
        _ => return None,
    })
}

/// What the spec says of a header: its frame length, or why it is refused.
/// Order of the checks: known type, payload within the maximum, then the
/// type's topic and payload rules.
pub(crate) fn model_header(h: &[u8], max_payload: usize) -> Result<(u8, usize), Error> {
    let ty = h[0];
    let topic = u64::from(h[1]);
    let payload = u64::from(u32::from_be_bytes([h[2], h[3], h[4], h[5]]));
    let (wants_topic, payload_rule) = rules(ty).ok_or(Error::UnknownType(ty))?;
    if payload > max_payload as u64 {
        return Err(Error::PayloadTooLong);
    }
    match (wants_topic, topic) {
        (true, 0) => return Err(Error::EmptyTopic),
        (false, t) if t > 0 => return Err(Error::UnexpectedTopic),
        _ => {}
    }
    if payload_rule.is_some_and(|p| p != payload) {
        return Err(Error::UnexpectedPayload);
    }
    Ok((ty, (6 + topic + payload) as usize))
}

/// The frame at the start of a stream: `Ok(None)` until it is all there.
pub(crate) fn model_next(buf: &[u8], max_payload: usize) -> Result<Option<Frame<'_>>, Error> {
    if buf.len() < 6 {
        return Ok(None);
    }
    let (ty, len) = model_header(buf, max_payload)?;
    if buf.len() < len {
        return Ok(None);
    }
    let topic_end = 6 + usize::from(buf[1]);
    Ok(Some(Frame {
        ty,
        topic: &buf[6..topic_end],
        payload: &buf[topic_end..len],
    }))
}

/// A datagram holding exactly one frame.
pub(crate) fn model_datagram(d: &[u8], max_payload: usize) -> Result<Frame<'_>, Error> {
    if d.len() < 6 {
        return Err(Error::Truncated);
    }
    let (_, len) = model_header(d, max_payload)?;
    if len != d.len() {
        return Err(Error::LengthMismatch);
    }
    Ok(model_next(d, max_payload)?.expect("a whole frame"))
}

/// The frame a representation stands for.
fn frame_of<'a>(r: &Repr<'a>, lagged: &'a [u8; 8]) -> Frame<'a> {
    let payload: &'a [u8] = match r {
        Repr::Publish { payload, .. }
        | Repr::Message { payload, .. }
        | Repr::Ping { payload }
        | Repr::Pong { payload } => payload,
        Repr::Lagged { .. } => lagged,
        Repr::Subscribe { .. } | Repr::Unsubscribe { .. } => &[],
    };
    Frame {
        ty: r.frame_type().as_u8(),
        topic: r.topic(),
        payload,
    }
}

/// Checks one parsed representation against the model's frame and the
/// bytes it came from.
fn check_repr(repr: &Repr<'_>, frame: &Frame<'_>, bytes: &[u8]) {
    let count = match repr {
        Repr::Lagged { count } => *count,
        _ => 0,
    };
    let lagged = count.to_be_bytes();
    assert_eq!(frame_of(repr, &lagged), *frame, "{repr:?}");
    assert_eq!(repr.buffer_len(), bytes.len());
    assert_eq!(repr.header(), bytes[..HEADER_LEN]);
    assert_eq!(repr.to_vec(), bytes, "{repr:?} emitted");
}

/// Input: `[max_hi, max_lo, bytes ...]`; the maximum payload is the
/// two-byte value, or the default when it is 0xffff.
///
/// Checks, against the model: `next_frame` frames the bytes as a stream,
/// frame after frame, until it needs more or refuses a header;
/// `Packet::new_checked` and its accessors; `parse_datagram` on the whole
/// input and on every frame found; every parsed frame emits back to its
/// bytes exactly.
///
/// # Panics
///
/// When a check fails.
pub fn relay_wire(data: &[u8]) {
    let mut input = Input::new(data);
    let max = match input.u16() {
        0xffff => wire::DEFAULT_MAX_PAYLOAD,
        m => usize::from(m),
    };
    let bytes = input.rest();

    // As a datagram.
    let got = parse_datagram(bytes, max);
    match model_datagram(bytes, max) {
        Ok(frame) => check_repr(&got.expect("the model accepts it"), &frame, bytes),
        Err(e) => assert_eq!(got, Err(e), "datagram {bytes:?}"),
    }

    // As a stream.
    let mut rest = bytes;
    loop {
        let framing = next_frame(rest, max);
        let packet = Packet::new_checked(rest);
        match model_next(rest, max) {
            Err(e) => {
                assert_eq!(framing, Framing::Invalid(e), "stream {rest:?}");
                break;
            }
            Ok(None) => {
                assert_eq!(framing, Framing::Incomplete, "stream {rest:?}");
                break;
            }
            Ok(Some(frame)) => {
                let len = HEADER_LEN + frame.topic.len() + frame.payload.len();
                let ty = FrameType::from_u8(frame.ty).expect("a known type");
                assert_eq!(framing, Framing::Frame(ty, len), "stream {rest:?}");
                let packet = packet.expect("a whole frame passes check_len");
                assert_eq!(packet.frame(), &rest[..len]);
                assert_eq!(packet.topic(), frame.topic);
                assert_eq!(packet.payload(), frame.payload);
                let repr = Repr::parse(&packet, max).expect("a valid frame parses");
                check_repr(&repr, &frame, &rest[..len]);
                assert_eq!(parse_datagram(&rest[..len], max), Ok(repr));
                rest = &rest[len..];
            }
        }
    }
    // Whatever the header says, a buffer holding the announced bytes passes
    // the length check and its accessors stay inside it.
    if let Ok(p) = Packet::new_checked(rest) {
        let whole = 6
            + usize::from(rest[1])
            + u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
        assert!(rest.len() >= whole);
        assert_eq!(p.frame(), &rest[..whole]);
        assert_eq!(p.topic().len() + p.payload().len() + 6, whole);
    } else {
        assert!(
            rest.len() < 6
                || rest.len()
                    < 6 + usize::from(rest[1])
                        + u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{corpus, random_inputs};

    #[test]
    fn model_agrees_with_the_spec_examples() {
        let publish = [
            0x03, 0x03, 0, 0, 0, 0x04, b't', b'/', b'1', b'2', b'1', b'.', b'5',
        ];
        assert_eq!(
            model_datagram(&publish, 65536),
            Ok(Frame {
                ty: 3,
                topic: b"t/1",
                payload: b"21.5"
            })
        );
        let lagged = [0x82, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x01, 0x2c];
        assert_eq!(model_next(&lagged, 8).unwrap().unwrap().payload.len(), 8);
        assert_eq!(model_next(&lagged, 7), Err(Error::PayloadTooLong));
        assert_eq!(
            model_next(&[0x01, 0, 0, 0, 0, 0], 9),
            Err(Error::EmptyTopic)
        );
        assert_eq!(
            model_next(&[0x04, 1, 0, 0, 0, 0], 9),
            Err(Error::UnexpectedTopic)
        );
        assert_eq!(
            model_next(&[0x01, 1, 0, 0, 0, 1], 9),
            Err(Error::UnexpectedPayload)
        );
        assert_eq!(
            model_next(&[0x05, 1, 0, 0, 0, 1], 9),
            Err(Error::UnknownType(5))
        );
        assert_eq!(model_next(&publish[..12], 9), Ok(None));
        assert_eq!(
            model_datagram(&publish[..12], 9),
            Err(Error::LengthMismatch)
        );
    }

    #[test]
    fn harness_on_fixed_corpus_and_random_inputs() {
        relay_wire(&[]);
        relay_wire(&[0xff, 0xff, 0x03, 1, 0, 0, 0, 1, b't', b'x', 0x04, 0, 0, 0]);
        for input in corpus("relay_wire") {
            relay_wire(&input);
        }
        let types = [0x01, 0x02, 0x03, 0x04, 0x81, 0x82, 0x83, 0x00];
        for mut input in random_inputs(19, 3000, 60) {
            // Known types and small lengths most of the time.
            if input.len() > 8 {
                input[0] = 0;
                input[2] = types[usize::from(input[2]) % types.len()];
                input[3] %= 4;
                input[4..7].fill(0);
                input[7] %= 8;
            }
            relay_wire(&input);
        }
    }
}
