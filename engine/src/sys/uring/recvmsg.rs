//! The layout a multishot recvmsg leaves in a provided buffer, and the
//! msghdr template that asks for it.
//!
//! `io_uring_recvmsg_out` (four u32: name length, control length, payload
//! length, flags), then `NAME_LEN` bytes of address, `CONTROL_LEN` bytes
//! of control data, then the payload. The two areas have fixed sizes (ours,
//! from the template), so the offsets are constants.

use std::mem;

use crate::backend::Received;
use crate::udp::{CONTROL_LEN, NAME_LEN};

/// Bytes the kernel puts before the payload in a multishot recvmsg buffer:
/// `io_uring_recvmsg_out` (16) + name + control.
pub const RECV_HEADROOM: usize = 16 + NAME_LEN + CONTROL_LEN;

/// The template the multishot recvmsg reads the name and control lengths
/// from (kept at a stable address while receives are armed).
pub fn template() -> libc::msghdr {
    // SAFETY: an all-zero msghdr is a valid (empty) value.
    let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
    hdr.msg_namelen = NAME_LEN as libc::socklen_t;
    hdr.msg_controllen = CONTROL_LEN as _;
    hdr
}

/// Parses a filled buffer (`buf` is exactly the bytes the completion
/// reported). `None` if it cannot hold the header areas.
#[inline]
pub fn parse(buf: &[u8]) -> Option<Received<'_>> {
    let (head, payload) = buf.split_at_checked(RECV_HEADROOM)?;
    let field = |i: usize| u32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let name_len = (field(0) as usize).min(NAME_LEN);
    let control_len = (field(4) as usize).min(CONTROL_LEN);
    let payload_len = field(8) as usize;
    let flags = field(12) as i32;
    Some(Received {
        name: &head[16..16 + name_len],
        control: &head[16 + NAME_LEN..16 + NAME_LEN + control_len],
        payload: &payload[..payload_len.min(payload.len())],
        truncated: flags & libc::MSG_TRUNC != 0 || payload_len > payload.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer as the kernel fills it: header, address area, control area, payload.
    fn filled(
        name: &[u8],
        control: &[u8],
        payload_len: u32,
        flags: i32,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut b = vec![0u8; RECV_HEADROOM];
        b[0..4].copy_from_slice(&(name.len() as u32).to_ne_bytes());
        b[4..8].copy_from_slice(&(control.len() as u32).to_ne_bytes());
        b[8..12].copy_from_slice(&payload_len.to_ne_bytes());
        b[12..16].copy_from_slice(&flags.to_ne_bytes());
        b[16..16 + name.len()].copy_from_slice(name);
        b[16 + NAME_LEN..16 + NAME_LEN + control.len()].copy_from_slice(control);
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn received_splits_the_kernel_layout() {
        let name = [2u8, 0, 0x1f, 0x90, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let b = filled(&name, &[], 5, 0, b"hello");
        let r = parse(&b).unwrap();
        assert_eq!(
            r,
            Received {
                name: &name,
                control: &[],
                payload: b"hello",
                truncated: false
            }
        );
        assert_eq!(
            crate::sys::addr::from_raw(r.name),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        // An empty datagram.
        let b = filled(&name, &[], 0, 0, b"");
        assert_eq!(parse(&b).unwrap().payload, b"");
        // Cut by the kernel: MSG_TRUNC, payload length past what the buffer holds.
        let b = filled(&name, &[], 9, libc::MSG_TRUNC, b"hell");
        let r = parse(&b).unwrap();
        assert_eq!((r.payload, r.truncated), (&b"hell"[..], true));
        let b = filled(&name, &[], 9, 0, b"hell");
        assert!(parse(&b).unwrap().truncated);
        // Control data is handed on, capped at its area.
        let c = [9u8; CONTROL_LEN];
        let b = filled(&name, &c, 1, 0, b"x");
        assert_eq!(parse(&b).unwrap().control, &c);
        // Lengths the areas cannot hold are capped, and a short buffer is refused.
        let mut b = filled(&name, &[], 1, 0, b"x");
        b[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        b[4..8].copy_from_slice(&1000u32.to_ne_bytes());
        let r = parse(&b).unwrap();
        assert_eq!(
            (r.name.len(), r.control.len(), r.payload),
            (NAME_LEN, CONTROL_LEN, &b"x"[..])
        );
        assert_eq!(parse(&b[..RECV_HEADROOM - 1]), None);
    }
}
