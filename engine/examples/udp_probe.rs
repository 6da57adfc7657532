//! The smallest io_uring sockperf reflector: the yardstick BENCHMARKS.md holds
//! the engine against, to tell the engine's own cost from io_uring's.
//!
//! One UDP socket, one ring (SINGLE_ISSUER + DEFER_TASKRUN + COOP_TASKRUN),
//! one multishot `recvmsg` on a provided buffer ring, `submit_and_wait(1)`,
//! and a `sendto(2)` for each message that asks for a reply. No plugins, no
//! stats, no timers, no policy: what is left is io_uring's own per-datagram
//! and per-wake-up cost.
//!
//! ```text
//! cargo run --release -p ringport-engine --example udp_probe -- 127.0.0.1:31900 [BUFFERS]
//! ```
//!
//! BUFFERS (default 64) is the size of the buffer ring, all of it published.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use io_uring::{cqueue, opcode, types, IoUring};
use ringport_engine::sys::bufring::BufRing;

/// sockperf's header: u64 sequence, u16 flags, u32 length (network order).
const HEADER: usize = 14;
const CLIENT: u16 = 0x1;
const PONG_REQUEST: u16 = 0x2;
const WARMUP: u16 = 0x4;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:31900".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let buffers: u16 = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let sock = UdpSocket::bind(addr)?;
    let fd = sock.as_raw_fd();
    let ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .build(256)?;
    let mut bufs = BufRing::new(&ring.submitter(), 0, buffers, 2048 + 64)?;
    // SAFETY: an all-zero msghdr is valid; only namelen and controllen matter.
    let mut msghdr: libc::msghdr = unsafe { std::mem::zeroed() };
    msghdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
    let arm = |ring: &IoUring, msghdr: &libc::msghdr| {
        let e = opcode::RecvMsgMulti::new(types::Fd(fd), msghdr, 0)
            .build()
            .user_data(1);
        // SAFETY: the msghdr and the buffer ring outlive the operation.
        unsafe { ring.submission_shared().push(&e).expect("an empty SQ") };
    };
    arm(&ring, &msghdr);
    eprintln!("udp_probe: serving sockperf on {addr} with {buffers} buffers");
    let mut cqes = Vec::with_capacity(512);
    loop {
        ring.submit_and_wait(1)?;
        cqes.clear();
        // SAFETY: only this thread touches the completion queue.
        cqes.extend(unsafe { ring.completion_shared() }.map(|c| (c.result(), c.flags())));
        for &(res, flags) in &cqes {
            if let Some(bid) = cqueue::buffer_select(flags) {
                if res >= 0 {
                    reflect(fd, bufs.filled(bid, res as usize), &msghdr);
                }
                bufs.recycle(bid);
            }
            if !cqueue::more(flags) {
                arm(&ring, &msghdr);
            }
        }
    }
}

/// Sends the message back with CLIENT cleared when it asks for a reply.
fn reflect(fd: i32, buf: &[u8], msghdr: &libc::msghdr) {
    let Ok(msg) = types::RecvMsgOut::parse(buf, msghdr) else {
        return;
    };
    let payload = msg.payload_data();
    if payload.len() < HEADER {
        return;
    }
    let flags = u16::from_be_bytes([payload[8], payload[9]]);
    if flags & (CLIENT | PONG_REQUEST) != CLIENT | PONG_REQUEST || flags & WARMUP != 0 {
        return;
    }
    let mut reply = [0u8; 2048];
    let n = payload.len().min(reply.len());
    reply[..n].copy_from_slice(&payload[..n]);
    reply[8..10].copy_from_slice(&(flags & !CLIENT).to_be_bytes());
    let name = msg.name_data();
    // SAFETY: `reply[..n]` and the peer address bytes are valid for the call.
    unsafe {
        libc::sendto(
            fd,
            reply.as_ptr().cast(),
            n,
            0,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        );
    }
}
