//! A spoofed-source UDP flood on loopback: IPv4 datagrams written whole
//! (IP_HDRINCL) on a raw socket, each from the next of many made-up
//! 127.x.y.z sources, all to one port of 127.0.0.1 and nowhere else.
//!
//! Needs CAP_NET_RAW (root; CI runs as root). Loopback takes any 127/8
//! source, so the datagrams arrive as if each source were a host of its
//! own; the server's allowlist denies them all.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

const IP_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
/// Datagrams per `sendmmsg`.
const BATCH: usize = 32;

/// Source `i` of the flood: 127.a.b.c with a ≥ 1 (outside the allowed
/// 127.0.0.0/24) and c in 1..=254, distinct for every i below 254 × 256 × 255.
pub fn source(i: u32) -> Ipv4Addr {
    let c = 1 + (i % 254) as u8;
    let b = ((i / 254) % 256) as u8;
    let a = 1 + (i / (254 * 256)) as u8;
    Ipv4Addr::new(127, a, b, c)
}

/// What a flood did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodReport {
    /// Datagrams the kernel took from the raw socket.
    pub sent: u64,
    /// Distinct source addresses among them.
    pub distinct: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

/// A raw socket that writes its own IPv4 headers.
fn raw_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket has no memory arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: the pointer and length describe a live c_int for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_HDRINCL,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Writes the IPv4 and UDP headers of a datagram from `src:sport` to `dst`
/// with `payload_len` payload bytes into `pkt` (the kernel fills in the IP
/// checksum and ID; a UDP checksum of 0 means none).
fn headers(pkt: &mut [u8], src: Ipv4Addr, sport: u16, dst: SocketAddrV4, payload_len: usize) {
    let total = (IP_HEADER + UDP_HEADER + payload_len) as u16;
    pkt[0] = 0x45; // version 4, 5 words
    pkt[1] = 0;
    pkt[2..4].copy_from_slice(&total.to_be_bytes());
    pkt[4..8].fill(0); // ID (kernel), flags, fragment offset
    pkt[8] = 64; // TTL
    pkt[9] = libc::IPPROTO_UDP as u8;
    pkt[10..12].fill(0); // checksum (kernel)
    pkt[12..16].copy_from_slice(&src.octets());
    pkt[16..20].copy_from_slice(&dst.ip().octets());
    let udp = &mut pkt[IP_HEADER..];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&((UDP_HEADER + payload_len) as u16).to_be_bytes());
    udp[6..8].fill(0);
}

/// Sends `payload_len`-byte datagrams to `to` (a port of 127.0.0.1) at
/// `rate` per second until `stop`, cycling through `sources` distinct
/// spoofed sources in a random order.
///
/// # Panics
///
/// If `to` is not 127.0.0.1, or the raw socket cannot be made (not root).
pub fn flood(
    to: SocketAddr,
    sources: u32,
    rate: u64,
    payload_len: usize,
    stop: Arc<AtomicBool>,
) -> FloodReport {
    let SocketAddr::V4(dst) = to else {
        panic!("the flood is IPv4")
    };
    assert_eq!(
        *dst.ip(),
        Ipv4Addr::LOCALHOST,
        "the flood goes to 127.0.0.1 only"
    );
    let fd = raw_socket().expect("a raw socket with IP_HDRINCL (run as root)");
    let mut order: Vec<u32> = (0..sources).collect();
    order.shuffle(&mut rand::thread_rng());
    let len = IP_HEADER + UDP_HEADER + payload_len;
    let mut pkts = vec![[0u8; 2048]; BATCH];
    assert!(len <= pkts[0].len());
    // SAFETY: all-zero sockaddr_in is a valid value.
    let mut dest: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    dest.sin_family = libc::AF_INET as libc::sa_family_t;
    dest.sin_addr.s_addr = u32::from(*dst.ip()).to_be();
    let mut iovs: Vec<libc::iovec> = pkts
        .iter_mut()
        .map(|p| libc::iovec {
            iov_base: p.as_mut_ptr().cast(),
            iov_len: len,
        })
        .collect();
    // SAFETY: all-zero mmsghdr is a valid value; the pointers are set below.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_name = (&mut dest as *mut libc::sockaddr_in).cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let start = Instant::now();
    let (mut sent, mut next) = (0u64, 0usize);
    while !stop.load(Ordering::Relaxed) {
        // Paced: never ahead of `rate` since the start.
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if sent >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let n = ((due - sent) as usize).min(BATCH);
        for (k, pkt) in pkts.iter_mut().take(n).enumerate() {
            let i = order[(next + k) % order.len()];
            headers(pkt, source(i), 1024 + (i % 60000) as u16, dst, payload_len);
            pkt[IP_HEADER + UDP_HEADER..len].fill(0x5a);
        }
        // SAFETY: `msgs[..n]` point at live iovecs, packets and `dest`,
        // none of which moves during the call.
        let rc = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR | libc::ENOBUFS | libc::EAGAIN) => continue,
                _ => panic!("sendmmsg on the raw socket: {e}"),
            }
        }
        sent += rc as u64;
        next += rc as usize;
    }
    FloodReport {
        sent,
        distinct: sent.min(u64::from(sources)),
        elapsed: start.elapsed(),
    }
}

#[test]
fn sources_are_distinct_and_outside_the_allowed_range() {
    let mut seen = std::collections::HashSet::new();
    for i in 0..200_000 {
        let s = source(i);
        assert!(s.octets()[1] >= 1 && s.octets()[3] != 0 && s.octets()[3] != 255);
        assert!(seen.insert(s), "{s} twice");
    }
}
