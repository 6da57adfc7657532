//! Listening sockets.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, OwnedFd};

use ringport_plugin::Transport;
use socket2::{Domain, Protocol, Socket, Type};

/// Receive/send buffer size asked for on UDP sockets (the kernel caps it at
/// net.core.rmem_max / wmem_max).
const UDP_SOCKBUF: usize = 4 << 20;

/// Binds one listening socket. `reuseport` sets SO_REUSEPORT before binding.
/// UDP sockets get SO_RXQ_OVFL so kernel receive-queue drops are reported.
pub fn bind(
    transport: Transport,
    addr: SocketAddr,
    reuseport: bool,
    backlog: i32,
) -> io::Result<OwnedFd> {
    let domain = Domain::for_address(addr);
    let socket = match transport {
        Transport::Tcp => Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?,
        Transport::Udp => Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?,
    };
    socket.set_reuse_address(true)?;
    if reuseport {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if transport == Transport::Udp {
        let _ = socket.set_recv_buffer_size(UDP_SOCKBUF);
        let _ = socket.set_send_buffer_size(UDP_SOCKBUF);
        set_int(&socket, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)?;
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

/// Turns an owned fd into a raw one that the shard closes itself.
pub fn into_raw(fd: OwnedFd) -> i32 {
    fd.into_raw_fd()
}
