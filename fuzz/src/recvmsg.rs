//! The multishot recvmsg layout (`engine/src/sys/uring/recvmsg.rs`): the
//! header the kernel puts in front of a datagram in a provided buffer (the
//! issue's "UDP recvmsg header parse").
//!
//! The model is `struct io_uring_recvmsg_out` from `<linux/io_uring.h>`
//! followed by the two areas our msghdr template asks for:
//!
//! ```text
//! namelen u32 | controllen u32 | payloadlen u32 | flags u32     (host order)
//! name area [NAME_LEN] | control area [CONTROL_LEN] | payload ...
//! ```
//!
//! The kernel reports the full lengths even when an area or the buffer cut
//! them; the parse must cap each at what is there.

use ringport_engine::fuzzing::{parse_recvmsg, Received, CONTROL_LEN, NAME_LEN, RECV_HEADROOM};
use ringport_engine::sys::addr::from_raw;

use crate::Input;

/// `MSG_TRUNC`.
const MSG_TRUNC: u32 = 0x20;
const OUT_HEADER: usize = 16;

/// The slices and flag the layout gives for `buf`, as offsets.
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    name: std::ops::Range<usize>,
    control: std::ops::Range<usize>,
    payload: std::ops::Range<usize>,
    truncated: bool,
}

fn model(buf: &[u8]) -> Option<Layout> {
    let name_at = OUT_HEADER;
    let control_at = name_at + NAME_LEN;
    let payload_at = control_at + CONTROL_LEN;
    if buf.len() < payload_at {
        return None;
    }
    let field = |i: usize| u32::from_ne_bytes(buf[4 * i..4 * i + 4].try_into().unwrap()) as u64;
    let (name_len, control_len, payload_len, flags) = (field(0), field(1), field(2), field(3));
    let room = (buf.len() - payload_at) as u64;
    Some(Layout {
        name: name_at..name_at + name_len.min(NAME_LEN as u64) as usize,
        control: control_at..control_at + control_len.min(CONTROL_LEN as u64) as usize,
        payload: payload_at..payload_at + payload_len.min(room) as usize,
        truncated: flags as u32 & MSG_TRUNC != 0 || payload_len > room,
    })
}

/// Where `part` lies in `buf`, which must hold it.
fn offsets(buf: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    assert!(
        start + part.len() <= buf.len(),
        "a slice outside the buffer"
    );
    start..start + part.len()
}

/// A buffer as the kernel fills it for one datagram.
fn fill(name: &[u8], control: &[u8], payload: &[u8], reported: u32, flags: u32) -> Vec<u8> {
    let mut b = vec![0xa5; RECV_HEADROOM];
    b[0..4].copy_from_slice(&(name.len() as u32).to_ne_bytes());
    b[4..8].copy_from_slice(&(control.len() as u32).to_ne_bytes());
    b[8..12].copy_from_slice(&reported.to_ne_bytes());
    b[12..16].copy_from_slice(&flags.to_ne_bytes());
    b[OUT_HEADER..OUT_HEADER + name.len()].copy_from_slice(name);
    let c = OUT_HEADER + NAME_LEN;
    b[c..c + control.len()].copy_from_slice(control);
    b.extend_from_slice(payload);
    b
}

/// Input: `[mode, ...]`. Mode bit 0 clear: the rest is a filled buffer,
/// whatever its header says. Set: a datagram (name, control data, payload,
/// flags, and how many bytes the kernel says it had) is laid out as the
/// kernel would, then parsed.
///
/// Checks: the parse agrees with the layout on every buffer (never a panic,
/// every slice inside the buffer); a laid-out datagram parses back to its
/// parts, and its name reads as the address it was.
///
/// # Panics
///
/// When a check fails.
pub fn uring_recvmsg(data: &[u8]) {
    let mut input = Input::new(data);
    if input.u8() & 1 == 0 {
        let buf = input.rest();
        let parsed = parse_recvmsg(buf);
        let got = parsed.as_ref().map(|r| Layout {
            name: offsets(buf, r.name),
            control: offsets(buf, r.control),
            payload: offsets(buf, r.payload),
            truncated: r.truncated,
        });
        assert_eq!(got, model(buf), "parse of {} bytes", buf.len());
        if let Some(r) = parsed {
            // The source address is read from the name area next.
            let _ = from_raw(r.name);
        }
        return;
    }
    let name_len = usize::from(input.u8()) % (NAME_LEN + 1);
    let name = input.bytes(name_len).to_vec();
    let control_len = usize::from(input.u8()) % (CONTROL_LEN + 1);
    let control = input.bytes(control_len).to_vec();
    let flags = input.u32();
    let extra = u32::from(input.u8() & 3);
    let payload = input.rest();
    // The kernel reports the datagram's full length; a longer one than the
    // buffer held comes with MSG_TRUNC.
    let reported = payload.len() as u32 + extra;
    let flags = if extra > 0 { flags | MSG_TRUNC } else { flags };
    let buf = fill(&name, &control, payload, reported, flags);
    let r = parse_recvmsg(&buf).expect("a laid-out buffer parses");
    assert_eq!(
        r,
        Received {
            name: &name,
            control: &control,
            payload,
            truncated: flags & MSG_TRUNC != 0,
        }
    );
    assert_eq!(from_raw(r.name), from_raw(&name));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{corpus, random_inputs};

    #[test]
    fn model_layout_of_a_filled_buffer() {
        let name = [2u8, 0, 0x1f, 0x90, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let buf = fill(&name, &[], b"hello", 5, 0);
        assert_eq!(
            model(&buf),
            Some(Layout {
                name: 16..32,
                control: 44..44,
                payload: 68..73,
                truncated: false,
            })
        );
        let mut cut = fill(&name, &[7; CONTROL_LEN], b"hell", 9, 0);
        cut[4..8].copy_from_slice(&30u32.to_ne_bytes());
        let m = model(&cut).unwrap();
        assert_eq!(
            (m.control.len(), m.payload.len(), m.truncated),
            (24, 4, true)
        );
        assert_eq!(model(&buf[..RECV_HEADROOM - 1]), None);
    }

    #[test]
    fn harness_on_fixed_corpus_and_random_inputs() {
        uring_recvmsg(&[]);
        uring_recvmsg(&[1, 16, 2, 0, 0x1f, 0x90, 127, 0, 0, 1]);
        for input in corpus("uring_recvmsg") {
            uring_recvmsg(&input);
        }
        for mut input in random_inputs(13, 2000, 200) {
            // Small lengths in the header half of the time.
            if input.len() > 12 && input[0] & 2 != 0 {
                input[0] &= !1;
                input[3..5].fill(0);
                input[7..9].fill(0);
                input[11..13].fill(0);
            }
            uring_recvmsg(&input);
        }
    }
}
