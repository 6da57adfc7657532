//! The control-message walkers of a UDP receive: the epoll backend's UDP GRO
//! segment size (`EpollBuffers::gro_size`, in `engine/src/sys/epoll/mod.rs`)
//! and the kernel's drop counter (`udp::rxq_ovfl`, SO_RXQ_OVFL).
//!
//! The model is the control block as `cmsg(3)` lays it out on 64-bit Linux:
//! messages at 8-byte aligned offsets, each a header
//! `cmsg_len u64 | cmsg_level i32 | cmsg_type i32` (host order) followed by
//! its data, `cmsg_len` counting header and data. A walker takes messages in
//! order and answers with the first one it looks for; a header that does not
//! fit, or whose length is below a header's or runs past the block, ends the
//! walk with no answer (the block is not trusted past it). Lengths are added
//! up here in `u128`, so no length a block can hold overflows the model.
//!
//! Besides raw blocks, the harness builds well-formed ones from a list of
//! messages, where the answer is known without walking at all.

use ringport_engine::fuzzing::{gro_size, rxq_ovfl};

use crate::Input;

const HEADER: usize = 16;
/// `SOL_SOCKET` / `SO_RXQ_OVFL`, `SOL_UDP` / `UDP_GRO` (asm-generic/socket.h,
/// linux/udp.h), and one the walkers must skip (`SOL_IP` / `IP_PKTINFO`).
const SOL_SOCKET: i32 = 1;
const SO_RXQ_OVFL: i32 = 40;
const SOL_UDP: i32 = 17;
const UDP_GRO: i32 = 104;
const SOL_IP: i32 = 0;
const IP_PKTINFO: i32 = 8;
/// The control space of an epoll receive area: CMSG_SPACE(4) for the drop
/// counter plus CMSG_SPACE(4) for GRO.
const AREA_CONTROL: usize = 48;

/// One message of a control block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message {
    level: i32,
    kind: i32,
    data: Vec<u8>,
}

/// Walks `block`; `Err(())` where a header is malformed, which ends it.
fn walk(block: &[u8]) -> Vec<Result<Message, ()>> {
    let mut out = Vec::new();
    let mut at: u128 = 0;
    let end = block.len() as u128;
    while at + HEADER as u128 <= end {
        let i = at as usize;
        let len = u128::from(u64::from_ne_bytes(block[i..i + 8].try_into().unwrap()));
        if len < HEADER as u128 || at + len > end {
            out.push(Err(()));
            break;
        }
        out.push(Ok(Message {
            level: i32::from_ne_bytes(block[i + 8..i + 12].try_into().unwrap()),
            kind: i32::from_ne_bytes(block[i + 12..i + 16].try_into().unwrap()),
            data: block[i + HEADER..(at + len) as usize].to_vec(),
        }));
        at += len.div_ceil(8) * 8;
    }
    out
}

/// The first message of `level`/`kind` with at least `need` data bytes, read
/// by `read`; nothing after a malformed header.
fn find<T>(
    messages: &[Result<Message, ()>],
    level: i32,
    kind: i32,
    need: usize,
    read: impl Fn(&[u8]) -> Option<T>,
) -> Option<T> {
    for m in messages {
        let m = m.as_ref().ok()?;
        if m.level == level && m.kind == kind && m.data.len() >= need {
            return read(&m.data);
        }
    }
    None
}

/// The drop counter the model finds in `block`.
fn model_rxq_ovfl(block: &[u8]) -> Option<u32> {
    find(&walk(block), SOL_SOCKET, SO_RXQ_OVFL, 4, |d| {
        Some(u32::from_ne_bytes(d[..4].try_into().unwrap()))
    })
}

/// The GRO segment size the model finds in `block`: the low 16 bits of the
/// kernel's `int` (segment sizes fit them), 0 meaning none.
fn model_gro(block: &[u8]) -> Option<usize> {
    find(&walk(block), SOL_UDP, UDP_GRO, 2, |d| {
        let size = u16::from_ne_bytes([d[0], d[1]]);
        (size > 0).then_some(usize::from(size))
    })
}

/// Lays `messages` out as the kernel does (CMSG_SPACE each, the last one
/// cut to CMSG_LEN when `tight`).
fn build(messages: &[Message], tight: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let len = HEADER + m.data.len();
        out.extend_from_slice(&(len as u64).to_ne_bytes());
        out.extend_from_slice(&m.level.to_ne_bytes());
        out.extend_from_slice(&m.kind.to_ne_bytes());
        out.extend_from_slice(&m.data);
        if !(tight && i + 1 == messages.len()) {
            out.resize(out.len().div_ceil(8) * 8, 0);
        }
    }
    out
}

/// Input: `[mode, ...]`. Mode bit 0 clear: `[control_len, block ...]`, a
/// raw block. Set: a list of messages, each `[kind, data_len, data ...]`
/// (kind picks the drop counter, GRO or IP_PKTINFO), built into a block.
///
/// Checks: both walkers agree with the model walker on every block (never a
/// panic, never a read past it); the GRO walker sees the area's control
/// bytes up to the length the kernel reported; on a built block both find
/// the first message of their kind, as the list says.
///
/// # Panics
///
/// When a check fails.
pub fn udp_cmsg(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    if mode & 1 == 0 {
        let control_len = usize::from(input.u8());
        let block = input.rest();
        check_walkers(block, control_len);
        return;
    }
    let mut messages = Vec::new();
    while !input.is_empty() {
        let (level, kind) = match input.u8() % 3 {
            0 => (SOL_SOCKET, SO_RXQ_OVFL),
            1 => (SOL_UDP, UDP_GRO),
            _ => (SOL_IP, IP_PKTINFO),
        };
        let data = input.chunk().to_vec();
        messages.push(Message { level, kind, data });
    }
    let block = build(&messages, mode & 2 != 0);
    assert_eq!(
        walk(&block),
        messages.iter().cloned().map(Ok).collect::<Vec<_>>(),
        "the model walks a built block"
    );
    let first = |level, kind, need| {
        messages
            .iter()
            .find(|m| m.level == level && m.kind == kind && m.data.len() >= need)
    };
    let ovfl = first(SOL_SOCKET, SO_RXQ_OVFL, 4)
        .map(|m| u32::from_ne_bytes(m.data[..4].try_into().unwrap()));
    assert_eq!(rxq_ovfl(&block), ovfl, "rxq_ovfl of a built block");
    if block.len() <= AREA_CONTROL {
        let gro = first(SOL_UDP, UDP_GRO, 2)
            .map(|m| u16::from_ne_bytes([m.data[0], m.data[1]]))
            .filter(|&s| s > 0)
            .map(usize::from);
        assert_eq!(
            gro_size(&block, block.len()),
            gro,
            "gro_size of a built block"
        );
    }
    check_walkers(&block, block.len());
}

/// Both walkers against the model on a raw block.
fn check_walkers(block: &[u8], control_len: usize) {
    assert_eq!(
        rxq_ovfl(block),
        model_rxq_ovfl(block),
        "rxq_ovfl({block:?})"
    );
    // The epoll area holds AREA_CONTROL bytes (the harness's, zero-padded);
    // the walk covers what the kernel reported of it.
    let mut area = block[..block.len().min(AREA_CONTROL)].to_vec();
    area.resize(AREA_CONTROL, 0);
    let seen = &area[..control_len.min(AREA_CONTROL)];
    assert_eq!(
        gro_size(block, control_len),
        model_gro(seen),
        "gro_size({block:?}, {control_len})"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{corpus, random_inputs};

    fn msg(level: i32, kind: i32, data: &[u8]) -> Message {
        Message {
            level,
            kind,
            data: data.to_vec(),
        }
    }

    #[test]
    fn model_walks_the_kernels_blocks() {
        // SO_RXQ_OVFL 7, then UDP_GRO 1200, as the epoll backend receives them.
        let block = build(
            &[
                msg(SOL_SOCKET, SO_RXQ_OVFL, &7u32.to_ne_bytes()),
                msg(SOL_UDP, UDP_GRO, &1200i32.to_ne_bytes()),
            ],
            false,
        );
        assert_eq!(block.len(), 48);
        assert_eq!(model_rxq_ovfl(&block), Some(7));
        assert_eq!(model_gro(&block), Some(1200));
        assert_eq!(rxq_ovfl(&block), Some(7));
        assert_eq!(gro_size(&block, 48), Some(1200));
        // Cut after the first message: no GRO size.
        assert_eq!(model_gro(&block[..24]), None);
        assert_eq!(gro_size(&block, 24), None);
        // A length past the block ends the walk before the counter.
        let mut bad = block.clone();
        bad[..8].copy_from_slice(&100u64.to_ne_bytes());
        assert_eq!(model_rxq_ovfl(&bad), None);
        assert_eq!(rxq_ovfl(&bad), None);
    }

    #[test]
    fn regression_a_length_that_would_wrap() {
        // The fuzzer's crash, minimized: a 20-byte message, then a header
        // whose length is near u64::MAX (`off + len` overflowed in
        // rxq_ovfl, and the same sum in the GRO walker).
        let crash = [
            0x00, 0x18, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        udp_cmsg(&crash);
        // The GRO walker on its own, in a 48-byte area.
        let mut block = build(&[msg(SOL_IP, IP_PKTINFO, &[0; 8])], false);
        block.extend_from_slice(&u64::MAX.to_ne_bytes());
        block.extend_from_slice(&SOL_UDP.to_ne_bytes());
        block.extend_from_slice(&UDP_GRO.to_ne_bytes());
        block.extend_from_slice(&[0; 8]);
        assert_eq!(block.len(), AREA_CONTROL);
        assert_eq!(gro_size(&block, block.len()), None);
        assert_eq!(rxq_ovfl(&block), None);
    }

    #[test]
    fn harness_on_fixed_corpus_and_random_inputs() {
        udp_cmsg(&[]);
        udp_cmsg(&[1, 0, 4, 9, 0, 0, 0, 1, 2, 0xb0, 0x04]);
        for input in corpus("udp_cmsg") {
            udp_cmsg(&input);
        }
        for mut input in random_inputs(17, 3000, 80) {
            // Plausible lengths and levels in a third of the raw blocks.
            if input.len() > 20 && input[0] % 3 == 0 {
                input[0] &= !1;
                input[2] = 16 + input[2] % 16;
                input[3..10].fill(0);
                input[10..14].copy_from_slice(&SOL_SOCKET.to_ne_bytes());
                input[14..18].copy_from_slice(&SO_RXQ_OVFL.to_ne_bytes());
            }
            udp_cmsg(&input);
        }
    }
}
