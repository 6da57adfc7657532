//! The epoll baseline: the kernel-socket reference point.
//!
//! One pinned thread per shard, each with its own epoll instance and its own
//! SO_REUSEPORT socket. TCP: level-triggered readiness, `read` until EAGAIN
//! into a per-connection buffer, reflect whole frames with one `write` (the
//! rest is kept and flushed on EPOLLOUT). UDP: `recvmmsg` batches of 64 until
//! EAGAIN, replies in one `sendmmsg` per batch.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};

use super::{sockperf_stream, wants_reply, Count, Server, ServerSpec};
use crate::cpu::CpuSource;
use crate::wire::Protocol;

const NAME: &str = "bn-epoll";
/// Datagrams per recvmmsg / sendmmsg.
const BATCH: usize = 64;
/// Bytes per datagram buffer.
const DGRAM: usize = 2048;
/// epoll data of the listening / datagram socket.
const LISTENER: u64 = u64::MAX;

struct EpollServer {
    addr: SocketAddr,
    count: Count,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn bind(udp: bool, port: u16) -> Result<OwnedFd> {
    let ty = if udp {
        socket2::Type::DGRAM
    } else {
        socket2::Type::STREAM
    };
    let s = socket2::Socket::new(socket2::Domain::IPV4, ty.nonblocking(), None)?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    if udp {
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
    }
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    s.bind(&addr.into())?;
    if !udp {
        s.listen(4096)?;
    }
    Ok(s.into())
}

pub(super) fn start(spec: &ServerSpec) -> Result<Box<dyn Server>> {
    let shards = spec.shards.max(1);
    let first = bind(spec.udp, 0)?;
    let port = socket2::SockRef::from(&first)
        .local_addr()?
        .as_socket()
        .ok_or_else(|| anyhow!("no local address"))?
        .port();
    let mut socks = vec![first];
    for _ in 1..shards {
        socks.push(bind(spec.udp, port)?);
    }
    let count: Count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (i, sock) in socks.into_iter().enumerate() {
        let cpu = spec.cpus[i % spec.cpus.len()];
        let (count, stop, udp, protocol) = (count.clone(), stop.clone(), spec.udp, spec.protocol);
        let t = std::thread::Builder::new()
            .name(format!("{NAME}-{i}"))
            .spawn(move || {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                let fd = sock.into_raw_fd();
                // SAFETY: fd was just released from an OwnedFd; this takes it back.
                let sock = unsafe { OwnedFd::from_raw_fd(fd) };
                if udp {
                    serve_udp(&sock, protocol, &count, &stop);
                } else {
                    serve_tcp(&sock, protocol, &stop);
                }
            })
            .context("spawning an epoll server thread")?;
        threads.push(t);
    }
    Ok(Box::new(EpollServer {
        addr: ([127, 0, 0, 1], port).into(),
        count,
        stop,
        threads,
    }))
}

fn epoll_add(ep: i32, fd: i32, events: u32, data: u64) {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: ev is a valid epoll_event for the duration of the call.
    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
}

fn epoll_mod(ep: i32, fd: i32, events: u32, data: u64) {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: as in epoll_add.
    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_MOD, fd, &mut ev) };
}

fn new_epoll() -> OwnedFd {
    // SAFETY: epoll_create1 has no memory preconditions.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(
        ep >= 0,
        "epoll_create1 failed: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: ep is a fresh descriptor owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(ep) }
}

struct EConn {
    fd: OwnedFd,
    buf: Vec<u8>,
    filled: usize,
    out: Vec<u8>,
    out_off: usize,
    want_out: bool,
}

/// Writes what is pending; returns false when the connection is broken.
fn flush(c: &mut EConn) -> bool {
    while c.out_off < c.out.len() {
        let rest = &c.out[c.out_off..];
        // SAFETY: the pointer/length describe the live `rest` slice.
        let n = unsafe { libc::write(c.fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            return std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
        }
        c.out_off += n as usize;
    }
    c.out.clear();
    c.out_off = 0;
    true
}

fn serve_tcp(listener: &OwnedFd, protocol: Protocol, stop: &AtomicBool) {
    let ep = new_epoll();
    let ep_fd = ep.as_raw_fd();
    epoll_add(ep_fd, listener.as_raw_fd(), libc::EPOLLIN as u32, LISTENER);
    let mut conns: Vec<Option<EConn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: events has room for len entries.
        let n = unsafe { libc::epoll_wait(ep_fd, events.as_mut_ptr(), events.len() as i32, 50) };
        for ev in events.iter().take(n.max(0) as usize) {
            let (key, flags) = (ev.u64, ev.events);
            if key == LISTENER {
                loop {
                    // SAFETY: null address pointers are allowed by accept4.
                    let fd = unsafe {
                        libc::accept4(
                            listener.as_raw_fd(),
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        )
                    };
                    if fd < 0 {
                        break;
                    }
                    // SAFETY: accept4 returned a fresh descriptor.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    let _ = socket2::SockRef::from(&fd).set_nodelay(true);
                    let idx = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    epoll_add(ep_fd, fd.as_raw_fd(), libc::EPOLLIN as u32, idx as u64);
                    conns[idx] = Some(EConn {
                        fd,
                        buf: vec![0; 64 * 1024],
                        filled: 0,
                        out: Vec::with_capacity(64 * 1024),
                        out_off: 0,
                        want_out: false,
                    });
                }
                continue;
            }
            let idx = key as usize;
            let Some(c) = conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            let mut alive = true;
            if flags & libc::EPOLLIN as u32 != 0 && c.out.is_empty() {
                loop {
                    let room = &mut c.buf[c.filled..];
                    let room_len = room.len();
                    // SAFETY: the pointer/length describe the live `room` slice.
                    let r = unsafe {
                        libc::read(c.fd.as_raw_fd(), room.as_mut_ptr().cast(), room.len())
                    };
                    if r == 0 {
                        alive = false;
                        break;
                    }
                    if r < 0 {
                        alive =
                            std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
                        break;
                    }
                    let r = r as usize;
                    match protocol {
                        Protocol::Echo => {
                            c.out.extend_from_slice(&c.buf[..r]);
                        }
                        Protocol::Sockperf => {
                            c.filled += r;
                            match sockperf_stream(&c.buf[..c.filled], &mut c.out) {
                                Some(used) => {
                                    c.buf.copy_within(used..c.filled, 0);
                                    c.filled -= used;
                                }
                                None => {
                                    alive = false;
                                    break;
                                }
                            }
                        }
                    }
                    if r < room_len {
                        // A short read: the socket is drained.
                        break;
                    }
                }
            }
            if alive && (flags & (libc::EPOLLOUT as u32) != 0 || !c.out.is_empty()) {
                alive = flush(c);
            }
            if alive {
                let want = !c.out.is_empty();
                if want != c.want_out {
                    c.want_out = want;
                    let ev = if want { libc::EPOLLOUT } else { libc::EPOLLIN } as u32;
                    epoll_mod(ep_fd, c.fd.as_raw_fd(), ev, idx as u64);
                }
            }
            if !alive || flags & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 && c.out.is_empty() {
                conns[idx] = None;
                free.push(idx);
            }
        }
    }
}

fn serve_udp(sock: &OwnedFd, protocol: Protocol, count: &AtomicU64, stop: &AtomicBool) {
    let ep = new_epoll();
    let ep_fd = ep.as_raw_fd();
    let fd = sock.as_raw_fd();
    epoll_add(ep_fd, fd, libc::EPOLLIN as u32, LISTENER);
    let mut bufs = vec![0u8; BATCH * DGRAM];
    // SAFETY: all-zero sockaddr_storage values are valid.
    let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = (0..BATCH)
        .map(|i| libc::iovec {
            // SAFETY: i * DGRAM is inside `bufs`.
            iov_base: unsafe { bufs.as_mut_ptr().add(i * DGRAM) }.cast(),
            iov_len: DGRAM,
        })
        .collect();
    // SAFETY: all-zero mmsghdr values are valid (null pointers, zero lengths).
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut out: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
    let mut out_iovs: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 4];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: events has room for len entries.
        let n = unsafe { libc::epoll_wait(ep_fd, events.as_mut_ptr(), events.len() as i32, 50) };
        if n <= 0 {
            continue;
        }
        loop {
            for i in 0..BATCH {
                iovs[i].iov_len = DGRAM;
                msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
                msgs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
                msgs[i].msg_len = 0;
            }
            // SAFETY: every header points at live iovecs, buffers and names of `BATCH` entries.
            let got = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if got <= 0 {
                break;
            }
            let got = got as usize;
            count.fetch_add(got as u64, Ordering::Relaxed);
            out.clear();
            out_iovs.clear();
            for i in 0..got {
                let len = msgs[i].msg_len as usize;
                let d = &mut bufs[i * DGRAM..i * DGRAM + len];
                let reply = match protocol {
                    Protocol::Echo => true,
                    Protocol::Sockperf => {
                        if len >= 14 && wants_reply(d) && super::frame_len(d) == len {
                            super::reflect(d);
                            true
                        } else {
                            false
                        }
                    }
                };
                if reply {
                    out_iovs.push(libc::iovec {
                        iov_base: d.as_mut_ptr().cast(),
                        iov_len: len,
                    });
                }
                if reply {
                    // SAFETY: all-zero mmsghdr is valid; pointers are set below.
                    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    m.msg_hdr.msg_name = msgs[i].msg_hdr.msg_name;
                    m.msg_hdr.msg_namelen = msgs[i].msg_hdr.msg_namelen;
                    out.push(m);
                }
            }
            // out_iovs no longer grows: its pointers are stable from here on.
            for (m, iov) in out.iter_mut().zip(out_iovs.iter_mut()) {
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
            }
            let mut sent = 0;
            while sent < out.len() {
                // SAFETY: headers point at live iovecs, buffers and names.
                let r = unsafe {
                    libc::sendmmsg(fd, out[sent..].as_mut_ptr(), (out.len() - sent) as u32, 0)
                };
                if r <= 0 {
                    break;
                }
                sent += r as usize;
            }
            if got < BATCH {
                break;
            }
        }
    }
}

impl Server for EpollServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn cpu(&self) -> CpuSource {
        CpuSource::ThreadsNamed(vec![NAME.into()])
    }
    fn datagrams_received(&self) -> Option<u64> {
        Some(self.count.load(Ordering::Relaxed))
    }
    fn stop(self: Box<Self>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}
