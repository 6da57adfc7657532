//! Listening sockets.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use ringport_plugin::Transport;
use socket2::{Domain, Protocol, Socket, Type};

/// Send buffer size asked for on UDP sockets (the kernel caps it at net.core.wmem_max).
const UDP_SNDBUF: usize = 4 << 20;

/// `SO_MEMINFO` (asm-generic/socket.h; the same on x86-64 and arm64).
const SO_MEMINFO: i32 = 55;
/// Number of u32 fields SO_MEMINFO fills (`SK_MEMINFO_VARS`).
const SK_MEMINFO_VARS: usize = 9;

/// How a socket is bound.
#[derive(Debug, Clone, Copy)]
pub struct BindOptions {
    /// Set SO_REUSEPORT before binding.
    pub reuseport: bool,
    /// listen() backlog (TCP).
    pub backlog: i32,
    /// SO_RCVBUF for UDP sockets.
    pub udp_rcvbuf: usize,
    /// Ask for SO_RXQ_OVFL control messages on every datagram (UDP).
    pub rxq_ovfl_cmsg: bool,
}

/// Binds one listening socket.
pub fn bind(transport: Transport, addr: SocketAddr, opts: BindOptions) -> io::Result<OwnedFd> {
    let BindOptions {
        reuseport,
        backlog,
        udp_rcvbuf,
        rxq_ovfl_cmsg,
    } = opts;
    let domain = Domain::for_address(addr);
    let socket = match transport {
        Transport::Tcp => Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?,
        Transport::Udp => Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?,
    };
    // SO_REUSEADDR lets a TCP listener rebind over TIME_WAIT connections. On
    // UDP it would let a second socket bind the same port and silently split
    // the traffic, so a port in use would go unnoticed: TCP only.
    if transport == Transport::Tcp {
        socket.set_reuse_address(true)?;
    }
    if reuseport {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if transport == Transport::Udp {
        socket.set_recv_buffer_size(udp_rcvbuf)?;
        let _ = socket.set_send_buffer_size(UDP_SNDBUF);
        if rxq_ovfl_cmsg {
            set_int(&socket, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)?;
        }
    }
    socket.bind(&addr.into())?;
    if transport == Transport::Tcp {
        socket.listen(backlog)?;
    }
    Ok(OwnedFd::from(socket))
}

fn set_int(socket: &Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the pointer and length describe a live i32 for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// shutdown(SHUT_RDWR): operations waiting on the socket complete at
/// once (a send with EPIPE, a receive with end of stream).
pub fn shutdown(fd: i32) {
    // SAFETY: no memory is passed; a bad fd only yields an error.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// A new TCP socket for an outbound connect to `addr` (its family, close
/// on exec, blocking: the io_uring backend's connect waits in the kernel,
/// the epoll backend switches it to non-blocking itself). TCP_NODELAY is
/// set, as on accepted streams.
pub fn stream_to(addr: SocketAddr) -> io::Result<OwnedFd> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    let fd = OwnedFd::from(socket);
    set_nodelay(std::os::fd::AsRawFd::as_raw_fd(&fd));
    Ok(fd)
}

/// Sets TCP_NODELAY on an accepted stream. Errors are ignored: a socket that
/// cannot take it still works, only with Nagle.
pub fn set_nodelay(fd: i32) {
    let one: i32 = 1;
    // SAFETY: fd is a socket we own; the pointer/length describe a live i32.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
}

/// The kernel's count of datagrams dropped on this socket's receive path
/// (`sk_drops`: a full receive queue, mostly), via SO_MEMINFO.
pub fn sk_drops(fd: i32) -> Option<u32> {
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the pointer and length describe `info`, which the kernel fills
    // with at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let drops = libc::SK_MEMINFO_DROPS as usize;
    if rc != 0 || (len as usize) < (drops + 1) * 4 {
        return None;
    }
    Some(info[drops])
}
