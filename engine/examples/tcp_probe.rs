//! The TCP twin of `udp_probe`: the smallest io_uring sockperf reflector over
//! TCP, to tell the engine's own cost from io_uring's.
//!
//! Accepts connections one at a time with a blocking `accept(2)` and serves
//! each with one multishot `recv` on a provided buffer ring (same ring flags as
//! a shard), `submit_and_wait(1)`, and a `send(2)` for each message that asks
//! for a reply. Frames split across receives are reassembled in one buffer.
//!
//! ```text
//! cargo run --release -p ringport-engine --example tcp_probe -- 127.0.0.1:31901
//! ```

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use io_uring::{cqueue, opcode, types, IoUring};
use ringport_engine::sys::bufring::BufRing;

/// sockperf's header: u64 sequence, u16 flags, u32 total length (network order).
const HEADER: usize = 14;
const CLIENT: u16 = 0x1;
const PONG_REQUEST: u16 = 0x2;
const WARMUP: u16 = 0x4;
const MAX_FRAME: usize = 65536;

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:31901".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(addr)?;
    let ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .build(256)?;
    let mut bufs = BufRing::new(&ring.submitter(), 0, 64, 16 * 1024)?;
    eprintln!("tcp_probe: serving sockperf on {addr}");
    for stream in listener.incoming() {
        serve(&ring, &mut bufs, stream?)?;
    }
    Ok(())
}

/// Serves one connection until the peer closes it.
fn serve(ring: &IoUring, bufs: &mut BufRing, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let fd = stream.as_raw_fd();
    let arm = || {
        let e = opcode::RecvMulti::new(types::Fd(fd), 0)
            .build()
            .user_data(1);
        // SAFETY: the receive writes only into the buffer ring, which outlives it.
        unsafe { ring.submission_shared().push(&e).expect("an empty SQ") };
    };
    arm();
    let mut pending: Vec<u8> = Vec::with_capacity(2 * MAX_FRAME);
    let mut cqes = Vec::with_capacity(512);
    loop {
        ring.submit_and_wait(1)?;
        cqes.clear();
        // SAFETY: only this thread touches the completion queue.
        cqes.extend(unsafe { ring.completion_shared() }.map(|c| (c.result(), c.flags())));
        for &(res, flags) in &cqes {
            if res <= 0 && res != -libc::ENOBUFS {
                return Ok(()); // closed or failed: next connection
            }
            if let Some(bid) = cqueue::buffer_select(flags) {
                pending.extend_from_slice(bufs.filled(bid, res as usize));
                bufs.recycle(bid);
                let used = reflect(&mut stream, &pending)?;
                pending.drain(..used);
            }
            if !cqueue::more(flags) {
                arm();
            }
        }
    }
}

/// Answers every whole frame in `buf` that asks for a reply; returns the
/// bytes consumed.
fn reflect(stream: &mut TcpStream, buf: &[u8]) -> std::io::Result<usize> {
    let mut at = 0;
    while buf.len() - at >= HEADER {
        let frame = &buf[at..];
        let len = u32::from_be_bytes([frame[10], frame[11], frame[12], frame[13]]) as usize;
        if !(HEADER..=MAX_FRAME).contains(&len) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bad frame length",
            ));
        }
        if frame.len() < len {
            break;
        }
        let flags = u16::from_be_bytes([frame[8], frame[9]]);
        if flags & (CLIENT | PONG_REQUEST) == CLIENT | PONG_REQUEST && flags & WARMUP == 0 {
            let mut reply = frame[..len].to_vec();
            reply[8..10].copy_from_slice(&(flags & !CLIENT).to_be_bytes());
            stream.write_all(&reply)?;
        }
        at += len;
    }
    Ok(at)
}
