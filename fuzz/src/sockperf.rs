//! The sockperf plugin (`protocols/src/sockperf`), TCP and UDP, against a
//! reference model of the reflection protocol written from
//! `docs/protocols/sockperf.md`.

use std::net::SocketAddr;

use ringport_plugin::testing::{RecordingContext, SentDatagram};
use ringport_plugin::{ConnId, DatagramInfo, DropReason, ListenerId, Plugin, SocketId};
use ringport_protocols::Sockperf;

const HEADER: usize = 14;
const CONN: ConnId = ConnId::from_raw(1);

/// A `max_frame` from two input bytes: 14 to 65549, so that both small and
/// default-sized limits are explored.
fn max_frame(hi: u8, lo: u8) -> usize {
    HEADER + usize::from(u16::from_be_bytes([hi, lo]))
}

/// Whether the sockperf server rules ask for a pong.
fn wants_reply(flags: u16) -> bool {
    flags & 0x0001 != 0 && flags & 0x0002 != 0 && flags & 0x0004 == 0
}

/// What a correct server does with a whole byte stream.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    replies: Vec<u8>,
    frames: u64,
    /// Bytes of complete frames.
    consumed: usize,
    error: Option<DropReason>,
}

fn reference_stream(stream: &[u8], max_frame: usize) -> Expected {
    let mut expected = Expected {
        replies: Vec::new(),
        frames: 0,
        consumed: 0,
        error: None,
    };
    loop {
        let rest = &stream[expected.consumed..];
        if rest.len() < HEADER {
            return expected;
        }
        let len = u32::from_be_bytes([rest[10], rest[11], rest[12], rest[13]]) as usize;
        if len < HEADER {
            expected.error = Some(DropReason::FrameTooShort);
            return expected;
        }
        if len > max_frame {
            expected.error = Some(DropReason::FrameTooLong);
            return expected;
        }
        if rest.len() < len {
            return expected;
        }
        if wants_reply(u16::from_be_bytes([rest[8], rest[9]])) {
            let start = expected.replies.len();
            expected.replies.extend_from_slice(&rest[..len]);
            expected.replies[start + 9] &= !0x01;
        }
        expected.frames += 1;
        expected.consumed += len;
    }
}

/// Input: `[max_hi, max_lo, n, len_1 .. len_n, stream ...]`. The stream is
/// delivered in chunks of `len_i + 1` bytes (as far as it goes), then the
/// rest in one chunk; unconsumed bytes are presented again before newer ones.
///
/// Checks: no panic; every call consumes at most what it was given; replies,
/// message count, close reason and leftover bytes match the reference model,
/// whatever the split.
///
/// # Panics
///
/// When an invariant does not hold.
pub fn sockperf_stream(data: &[u8]) {
    let [hi, lo, n, rest @ ..] = data else {
        return;
    };
    let max = max_frame(*hi, *lo);
    let (splits, stream) = rest.split_at(usize::from(*n).min(rest.len()));

    let mut plugin = Sockperf::new(max);
    let mut ctx = RecordingContext::new();
    let mut pending = Vec::new();
    let mut fed = 0;
    let mut error = None;
    let chunks = splits
        .iter()
        .map(|&s| usize::from(s) + 1)
        .chain(std::iter::once(usize::MAX));
    for chunk_len in chunks {
        if fed == stream.len() {
            break;
        }
        let end = fed + chunk_len.min(stream.len() - fed);
        pending.extend_from_slice(&stream[fed..end]);
        fed = end;
        match plugin.handle_data(&mut ctx, CONN, &pending) {
            Ok(consumed) => {
                assert!(
                    consumed <= pending.len(),
                    "consumed {consumed} of {}",
                    pending.len()
                );
                pending.drain(..consumed);
            }
            Err(reason) => {
                error = Some(reason);
                break;
            }
        }
    }

    let expected = reference_stream(stream, max);
    assert_eq!(error, expected.error, "close reason");
    assert_eq!(ctx.written(CONN), expected.replies.as_slice(), "replies");
    assert_eq!(ctx.messages(), expected.frames, "message count");
    if error.is_none() {
        assert_eq!(pending.len(), stream.len() - expected.consumed, "leftover");
    }
    assert!(ctx.datagrams().is_empty() && ctx.closed().is_empty());
}

/// Input: `[max_hi, max_lo, datagram ...]`.
///
/// Checks: no panic; a dropped datagram sends nothing and is dropped for the
/// reason the spec gives; an accepted one is counted and answered with
/// exactly the request minus the `CLIENT` flag, or not at all, per the rules.
///
/// # Panics
///
/// When an invariant does not hold.
pub fn sockperf_datagram(data: &[u8]) {
    let [hi, lo, datagram @ ..] = data else {
        return;
    };
    let max = max_frame(*hi, *lo);
    let from = DatagramInfo {
        socket: SocketId(3),
        listener: ListenerId(0),
        peer: SocketAddr::from(([127, 0, 0, 2], 4000)),
        local: SocketAddr::from(([127, 0, 0, 1], 11111)),
    };
    let mut plugin = Sockperf::new(max);
    let mut ctx = RecordingContext::new();
    let outcome = plugin.handle_datagram(&mut ctx, &from, datagram);

    let expected = if datagram.len() < HEADER {
        Err(DropReason::Malformed)
    } else {
        let len = u32::from_be_bytes([datagram[10], datagram[11], datagram[12], datagram[13]]);
        let len = len as usize;
        if len < HEADER {
            Err(DropReason::FrameTooShort)
        } else if len > max {
            Err(DropReason::FrameTooLong)
        } else if len != datagram.len() {
            Err(DropReason::Malformed)
        } else {
            Ok(())
        }
    };
    assert_eq!(outcome, expected, "outcome");
    if outcome.is_err() {
        assert!(ctx.datagrams().is_empty());
        assert_eq!(ctx.messages(), 0);
        return;
    }
    assert_eq!(ctx.messages(), 1);
    if wants_reply(u16::from_be_bytes([datagram[8], datagram[9]])) {
        let mut reply = datagram.to_vec();
        reply[9] &= !0x01;
        assert_eq!(
            ctx.datagrams(),
            &[SentDatagram {
                via: from.socket,
                to: from.peer,
                data: reply,
            }]
        );
    } else {
        assert!(ctx.datagrams().is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::xorshift;

    fn frame(seq: u8, flags: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 0, 0, 0, 0, 0, seq];
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&((HEADER + payload.len()) as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn stream_harness_on_valid_and_broken_streams() {
        let mut stream = frame(1, 3, b"abc");
        stream.extend(frame(2, 1, b""));
        stream.extend(frame(3, 7, b"w"));
        stream.extend(frame(4, 3, b""));
        for n in 0..8u8 {
            let mut input = vec![0, 10, n];
            input.extend((0..n).map(|i| i.wrapping_mul(5)));
            input.extend(&stream);
            sockperf_stream(&input);
            // The same with a bad length at the end, and a tiny maximum.
            let mut bad = input.clone();
            bad.extend([0; 13]);
            bad.push(3);
            sockperf_stream(&bad);
            input[1] = 0;
            sockperf_stream(&input);
        }
    }

    #[test]
    fn stream_reference_model_agrees_with_the_spec() {
        let mut stream = frame(1, 3, b"abc");
        stream.extend(frame(2, 1, b"z"));
        let expected = reference_stream(&stream, 100);
        assert_eq!(
            expected,
            Expected {
                replies: frame(1, 2, b"abc"),
                frames: 2,
                consumed: 32,
                error: None,
            }
        );
        assert_eq!(
            reference_stream(&stream, 16).error,
            Some(DropReason::FrameTooLong)
        );
    }

    #[test]
    fn harnesses_survive_pseudo_random_inputs() {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for round in 0..2000 {
            let len = (xorshift(&mut state) % 300) as usize;
            let mut input: Vec<u8> = (0..len).map(|_| xorshift(&mut state) as u8).collect();
            if round % 2 == 0 && input.len() > 20 {
                // Make valid-looking frames likely: a small length field.
                let at = 3 + usize::from(input[2]).min(input.len() - 3);
                if input.len() >= at + HEADER {
                    input[at + 10..at + 13].fill(0);
                }
            }
            sockperf_stream(&input);
            sockperf_datagram(&input);
        }
    }

    #[test]
    fn datagram_harness_cases() {
        let mut input = vec![0, 50];
        input.extend(frame(1, 3, b"abc"));
        sockperf_datagram(&input);
        input.push(0);
        sockperf_datagram(&input);
        sockperf_datagram(&[0, 0, 1, 2, 3]);
        sockperf_datagram(&[]);
    }
}
