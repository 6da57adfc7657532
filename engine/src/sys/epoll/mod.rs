//! The epoll backend: readiness instead of completions, for where io_uring
//! is not allowed (a container's seccomp profile, `kernel.io_uring_disabled`).
//!
//! It gives the shard the same events as the io_uring backend, by doing the
//! I/O itself when a socket is ready:
//!
//! - `Backend::wait` is the one place that blocks: `epoll_pwait2` (or
//!   `epoll_wait` where that is refused) with the shard's next deadline as
//!   its timeout; before it, the turn's queued datagrams go out with one
//!   `sendmmsg` per socket.
//! - `Backend::reap` turns readiness into events: `accept4` on a ready
//!   listener (up to [`ACCEPT_BATCH`] a turn), one `recv` into a free buffer
//!   per ready stream, one `recvmmsg` of up to [`RECV_BATCH`] datagrams per
//!   ready UDP socket, and the events it had to make up (a cancelled receive,
//!   a send that completed at once).
//! - A stream send is tried at once (`send`, MSG_DONTWAIT); what the socket
//!   does not take waits for EPOLLOUT. The shard already gathers a stream's
//!   writes into one send per turn.
//! - Interest is level-triggered: a stream is registered with EPOLLIN while
//!   its receive is armed and EPOLLOUT while a send waits; a paused stream
//!   with nothing to send is deregistered, so a hang-up cannot spin the loop.
//! - Cross-shard wake-ups are eventfd writes; the shard's own eventfd is in
//!   its epoll set.

use std::time::Instant;

use crate::backend::{Backend, Buffers, Event, Received, RecvResult};
use crate::config::EngineConfig;
use crate::ops::{self, OP_ACCEPT, OP_RECV, OP_UDP_RECV, OP_WAKE};
use crate::shard::ShardShared;
use crate::stats::SharedStats;
use crate::udp::{CONTROL_LEN, NAME_LEN};

/// Most connections accepted from one listener per turn.
pub const ACCEPT_BATCH: usize = 64;
/// Most datagrams one `recvmmsg` takes.
pub const RECV_BATCH: usize = 32;
/// Most datagrams one `sendmmsg` gives.
const SEND_BATCH: usize = 64;
/// Readiness events taken per wait.
const EVENTS: usize = 256;

/// One stream's I/O state, by connection slot.
#[derive(Debug, Clone, Copy)]
struct StreamIo {
    fd: i32,
    generation: u32,
    /// The events it is registered for (0: not in the epoll set).
    interest: u32,
    /// The receive is armed (EPOLLIN wanted).
    recv: bool,
    /// A send waits for EPOLLOUT: its bytes.
    send: Option<(*const u8, usize)>,
}

impl StreamIo {
    const EMPTY: StreamIo = StreamIo {
        fd: -1,
        generation: 0,
        interest: 0,
        recv: false,
        send: None,
    };
}

/// One UDP socket's state, by socket slot.
#[derive(Debug)]
struct UdpIo {
    fd: i32,
    /// Receiving (EPOLLIN wanted).
    recv: bool,
    /// In the epoll set, with EPOLLOUT too.
    registered: bool,
    writable_wait: bool,
    /// Datagrams queued this turn: (slot, listener, msghdr).
    out: Vec<(u32, u16, *const libc::msghdr)>,
    /// How many datagrams the next `recvmmsg` asks for.
    batch: usize,
}

/// A shard's epoll instance and what it keeps for it.
pub struct Epoll {
    epfd: i32,
    wake_fd: i32,
    ready: Vec<libc::epoll_event>,
    ready_len: usize,
    /// Events made up or found, in order; the first `delivered` were
    /// handed out by the last reap.
    pending: Vec<Event>,
    delivered: usize,
    streams: Vec<StreamIo>,
    listeners: Vec<(i32, bool)>,
    udp: Vec<UdpIo>,
    /// UDP sockets with datagrams queued this turn.
    udp_due: Vec<u32>,
    /// `epoll_pwait2` works here (else `epoll_wait`, in milliseconds).
    pwait2: bool,
    mmsg: Vec<libc::mmsghdr>,
    iov: Vec<libc::iovec>,
    bufs_taken: Vec<u16>,
}

impl std::fmt::Debug for Epoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoll")
            .field("epfd", &self.epfd)
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// A fixed pool of equal buffers, handed out by index.
struct Pool {
    mem: Vec<u8>,
    size: usize,
    free: Vec<u16>,
}

impl Pool {
    fn new(count: u16, size: usize) -> Pool {
        Pool {
            mem: vec![0; count as usize * size],
            size,
            free: (0..count).rev().collect(),
        }
    }

    fn take(&mut self) -> Option<u16> {
        self.free.pop()
    }

    fn give(&mut self, buf: u16) {
        self.free.push(buf);
    }

    fn slice(&self, buf: u16, len: usize) -> &[u8] {
        let start = buf as usize * self.size;
        &self.mem[start..start + len.min(self.size)]
    }

    fn slice_mut(&mut self, buf: u16, len: usize) -> &mut [u8] {
        let start = buf as usize * self.size;
        &mut self.mem[start..start + len.min(self.size)]
    }

    fn ptr(&mut self, buf: u16) -> *mut u8 {
        // In bounds: buf < count, so the offset lies inside `mem`.
        self.mem[buf as usize * self.size..].as_mut_ptr()
    }
}

/// What one received datagram left in its buffer: the address, control
/// data and payload lengths, and whether it was cut.
#[derive(Debug, Clone, Copy, Default)]
struct DatagramMeta {
    name_len: u32,
    control_len: u32,
    payload_len: u32,
    truncated: bool,
}

/// The receive buffers: one pool for streams, one for datagrams (each
/// datagram buffer holds address, control data and payload).
pub struct EpollBuffers {
    tcp: Pool,
    udp: Pool,
    udp_meta: Vec<DatagramMeta>,
    udp_payload: usize,
}

impl std::fmt::Debug for EpollBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpollBuffers")
            .field("tcp_free", &self.tcp.free.len())
            .field("udp_free", &self.udp.free.len())
            .finish()
    }
}

/// Offsets in a datagram buffer: address, then control data, then payload.
const UDP_CONTROL_AT: usize = NAME_LEN;
const UDP_PAYLOAD_AT: usize = NAME_LEN + CONTROL_LEN;

impl Epoll {
    /// An epoll backend for a shard with `udp_sockets` datagram sockets.
    pub fn setup(
        shard: usize,
        cfg: &EngineConfig,
        shared: &ShardShared,
        udp_sockets: usize,
    ) -> Result<(Epoll, EpollBuffers, Vec<String>), crate::StartError> {
        // SAFETY: epoll_create1 has no memory preconditions; the result is checked.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(crate::StartError::Shard {
                shard,
                message: format!("epoll_create1 failed: {}", std::io::Error::last_os_error()),
            });
        }
        let mut notices = Vec::new();
        if cfg.batch_delay_us > 0 {
            notices.push(format!(
                "shard {shard}: --batch-delay-us needs the io_uring backend; ignored on epoll"
            ));
        }
        let mut e = Epoll {
            epfd,
            wake_fd: shared.wake_fd,
            ready: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            ready_len: 0,
            pending: Vec::with_capacity(256),
            delivered: 0,
            streams: Vec::new(),
            listeners: Vec::new(),
            udp: (0..udp_sockets)
                .map(|_| UdpIo {
                    fd: -1,
                    recv: false,
                    registered: false,
                    writable_wait: false,
                    out: Vec::with_capacity(SEND_BATCH),
                    batch: RECV_BATCH,
                })
                .collect(),
            udp_due: Vec::with_capacity(udp_sockets),
            pwait2: true,
            // SAFETY: all-zero mmsghdr/iovec are valid (empty) values.
            mmsg: vec![unsafe { std::mem::zeroed() }; RECV_BATCH.max(SEND_BATCH)],
            // SAFETY: as above.
            iov: vec![unsafe { std::mem::zeroed() }; RECV_BATCH],
            bufs_taken: Vec::with_capacity(RECV_BATCH),
        };
        if let Err(err) = e.ctl(
            libc::EPOLL_CTL_ADD,
            shared.wake_fd,
            libc::EPOLLIN as u32,
            ops::pack(OP_WAKE, 0, 0),
        ) {
            return Err(crate::StartError::Shard {
                shard,
                message: format!("epoll_ctl on the wake-up eventfd failed: {err}"),
            });
        }
        let udp_payload = cfg.udp_max_datagram as usize;
        let bufs = EpollBuffers {
            tcp: Pool::new(cfg.tcp_bufs, cfg.tcp_buf_size as usize),
            udp: Pool::new(cfg.udp_bufs, UDP_PAYLOAD_AT + udp_payload),
            udp_meta: vec![DatagramMeta::default(); cfg.udp_bufs as usize],
            udp_payload,
        };
        Ok((e, bufs, notices))
    }

    fn ctl(&mut self, op: i32, fd: i32, events: u32, token: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: epoll_ctl reads the event we own (ignored for DEL).
        let rc = unsafe { libc::epoll_ctl(self.epfd, op, fd, &mut ev) };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn stream(&mut self, conn: u32) -> &mut StreamIo {
        let i = conn as usize;
        if self.streams.len() <= i {
            self.streams.resize(i + 1, StreamIo::EMPTY);
        }
        &mut self.streams[i]
    }

    /// Brings a stream's registration in line with what it waits for (a
    /// syscall only when that changes).
    fn update_stream(&mut self, conn: u32) {
        let s = self.streams[conn as usize];
        let mut events = 0u32;
        if s.recv {
            events |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        }
        if s.send.is_some() {
            events |= libc::EPOLLOUT as u32;
        }
        if events == s.interest {
            return;
        }
        let token = ops::pack(OP_RECV, s.generation, conn);
        let now = match (s.interest != 0, events != 0) {
            (false, true) => {
                if self.ctl(libc::EPOLL_CTL_ADD, s.fd, events, token).is_ok() {
                    events
                } else {
                    0
                }
            }
            (true, true) => {
                let _ = self.ctl(libc::EPOLL_CTL_MOD, s.fd, events, token);
                events
            }
            _ => {
                let _ = self.ctl(libc::EPOLL_CTL_DEL, s.fd, 0, 0);
                0
            }
        };
        self.streams[conn as usize].interest = now;
    }

    fn update_udp(&mut self, socket: u32) {
        let u = &self.udp[socket as usize];
        let mut events = 0u32;
        if u.recv {
            events |= libc::EPOLLIN as u32;
        }
        if u.writable_wait {
            events |= libc::EPOLLOUT as u32;
        }
        let (fd, was) = (u.fd, u.registered);
        let token = ops::pack(OP_UDP_RECV, 0, socket);
        let now = match (was, events != 0) {
            (false, false) => false,
            (false, true) => self.ctl(libc::EPOLL_CTL_ADD, fd, events, token).is_ok(),
            (true, true) => {
                let _ = self.ctl(libc::EPOLL_CTL_MOD, fd, events, token);
                true
            }
            (true, false) => {
                let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
                false
            }
        };
        self.udp[socket as usize].registered = now;
    }

    /// Tries a stream's waiting send; reports it unless the socket is full.
    fn try_send(&mut self, conn: u32) {
        let s = self.streams[conn as usize];
        let Some((data, len)) = s.send else { return };
        // SAFETY: the shard keeps `data..data + len` valid until the Sent
        // event (`Backend::send`'s contract).
        let n = unsafe {
            libc::send(
                s.fd,
                data.cast(),
                len,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        let res = if n >= 0 {
            n as i32
        } else {
            let errno = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if errno == libc::EAGAIN || errno == libc::EINTR {
                // The socket is full: wait for EPOLLOUT.
                self.update_stream(conn);
                return;
            }
            -errno
        };
        self.streams[conn as usize].send = None;
        self.pending.push(Event::Sent {
            conn,
            generation: s.generation,
            res,
        });
        if s.interest & libc::EPOLLOUT as u32 != 0 {
            self.update_stream(conn);
        }
    }

    /// Sends the datagrams queued on a socket, one `sendmmsg` per batch.
    fn flush_udp(&mut self, socket: u32) {
        loop {
            let u = &mut self.udp[socket as usize];
            if u.out.is_empty() {
                break;
            }
            let n = u.out.len().min(SEND_BATCH);
            for (i, &(_, _, hdr)) in u.out[..n].iter().enumerate() {
                // SAFETY: the shard keeps each msghdr valid until its
                // DatagramSent event (`Backend::send_datagram`'s contract).
                self.mmsg[i].msg_hdr = unsafe { *hdr };
                self.mmsg[i].msg_len = 0;
            }
            let fd = u.fd;
            // SAFETY: the first n mmsghdrs are initialised; their buffers
            // are the shard's send slots, valid as said above.
            let sent = unsafe {
                libc::sendmmsg(
                    fd,
                    self.mmsg.as_mut_ptr(),
                    n as u32,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            let u = &mut self.udp[socket as usize];
            if sent < 0 {
                let errno = std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO);
                if errno == libc::EAGAIN || errno == libc::EINTR {
                    if !u.writable_wait {
                        u.writable_wait = true;
                        self.update_udp(socket);
                    }
                    return;
                }
                // The first datagram failed: report it, go on with the rest.
                let (slot, listener, _) = u.out.remove(0);
                self.pending.push(Event::DatagramSent {
                    slot,
                    listener,
                    res: -errno,
                });
                continue;
            }
            let sent = sent as usize;
            for i in 0..sent {
                let (slot, listener, _) = u.out[i];
                self.pending.push(Event::DatagramSent {
                    slot,
                    listener,
                    res: self.mmsg[i].msg_len as i32,
                });
            }
            u.out.drain(..sent);
        }
        let u = &mut self.udp[socket as usize];
        if u.writable_wait {
            u.writable_wait = false;
            self.update_udp(socket);
        }
    }

    fn accept_ready(&mut self, listener: u32) {
        let (fd, armed) = self.listeners[listener as usize];
        if !armed {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            // SAFETY: accept4 with null address pointers writes nothing of ours.
            let c = unsafe {
                libc::accept4(
                    fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                )
            };
            if c >= 0 {
                self.pending.push(Event::Accept {
                    listener,
                    result: Ok(c),
                    more: true,
                });
                continue;
            }
            let errno = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            match errno {
                libc::EAGAIN | libc::EINTR => {}
                // The peer gave up before we took it: nothing to report.
                libc::ECONNABORTED => continue,
                _ => self.pending.push(Event::Accept {
                    listener,
                    result: Err(errno),
                    more: true,
                }),
            }
            break;
        }
    }

    fn recv_ready(&mut self, conn: u32, generation: u32, bufs: &mut EpollBuffers) {
        let s = self.streams[conn as usize];
        if !s.recv || s.generation != generation {
            return;
        }
        let Some(buf) = bufs.tcp.take() else {
            self.pending.push(Event::Recv {
                conn,
                generation,
                result: RecvResult::NoBuffers,
                more: true,
            });
            return;
        };
        let size = bufs.tcp.size;
        // SAFETY: the buffer is ours (taken from the pool) and `size` long.
        let n = unsafe { libc::recv(s.fd, bufs.tcp.ptr(buf).cast(), size, libc::MSG_DONTWAIT) };
        let (result, more) = if n > 0 {
            (RecvResult::Data { buf, len: n as u32 }, true)
        } else {
            bufs.tcp.give(buf);
            if n == 0 {
                (RecvResult::Eof, false)
            } else {
                let errno = std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO);
                if errno == libc::EAGAIN || errno == libc::EINTR {
                    return;
                }
                (RecvResult::Error(errno), false)
            }
        };
        if !more {
            self.streams[conn as usize].recv = false;
            self.update_stream(conn);
        }
        self.pending.push(Event::Recv {
            conn,
            generation,
            result,
            more,
        });
    }

    fn udp_ready(&mut self, socket: u32, bufs: &mut EpollBuffers) {
        if !self.udp[socket as usize].recv {
            return;
        }
        self.bufs_taken.clear();
        // As many buffers as the last call filled, doubled (at least 2, at
        // most RECV_BATCH): setting a message up costs, and one datagram
        // per wake-up is the common case below saturation.
        let want = self.udp[socket as usize].batch;
        while self.bufs_taken.len() < want {
            match bufs.udp.take() {
                Some(b) => self.bufs_taken.push(b),
                None => break,
            }
        }
        if self.bufs_taken.is_empty() {
            self.pending.push(Event::Datagram {
                socket,
                result: RecvResult::NoBuffers,
                more: true,
            });
            return;
        }
        let n = self.bufs_taken.len();
        for i in 0..n {
            let base = bufs.udp.ptr(self.bufs_taken[i]);
            // SAFETY: the offsets lie inside the buffer (address, control,
            // then udp_payload bytes of payload).
            let (name, control, payload) =
                unsafe { (base, base.add(UDP_CONTROL_AT), base.add(UDP_PAYLOAD_AT)) };
            self.iov[i] = libc::iovec {
                iov_base: payload.cast(),
                iov_len: bufs.udp_payload,
            };
            let hdr = &mut self.mmsg[i].msg_hdr;
            hdr.msg_name = name.cast();
            hdr.msg_namelen = NAME_LEN as libc::socklen_t;
            hdr.msg_iov = &mut self.iov[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = control.cast();
            hdr.msg_controllen = CONTROL_LEN as _;
            hdr.msg_flags = 0;
            self.mmsg[i].msg_len = 0;
        }
        let fd = self.udp[socket as usize].fd;
        // SAFETY: n mmsghdrs point into n buffers we hold, each area as
        // long as its length says.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                self.mmsg.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let got = if got < 0 { 0 } else { got as usize };
        self.udp[socket as usize].batch = (got * 2).clamp(2, RECV_BATCH);
        for i in 0..n {
            let buf = self.bufs_taken[i];
            if i >= got {
                bufs.udp.give(buf);
                continue;
            }
            let m = &self.mmsg[i];
            bufs.udp_meta[buf as usize] = DatagramMeta {
                name_len: m.msg_hdr.msg_namelen,
                control_len: m.msg_hdr.msg_controllen as u32,
                payload_len: m.msg_len,
                truncated: m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            };
            self.pending.push(Event::Datagram {
                socket,
                result: RecvResult::Data {
                    buf,
                    len: (UDP_PAYLOAD_AT + m.msg_len as usize) as u32,
                },
                more: true,
            });
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the epoll fd is ours and closed once.
        unsafe { libc::close(self.epfd) };
    }
}

impl Backend for Epoll {
    type Buffers = EpollBuffers;

    fn name(&self) -> &'static str {
        "epoll"
    }

    fn reap(&mut self, bufs: &mut EpollBuffers, _stats: &SharedStats) -> usize {
        // Events handed out by the last reap go; ones made up since stay.
        self.pending.drain(..self.delivered);
        for i in 0..self.ready_len {
            let ev = self.ready[i];
            let (kind, generation, idx) = ops::unpack(ev.u64);
            match kind {
                OP_ACCEPT => self.accept_ready(idx),
                OP_RECV => {
                    let s = self.streams[idx as usize];
                    if s.generation != generation {
                        continue;
                    }
                    if ev.events & libc::EPOLLOUT as u32 != 0 && s.send.is_some() {
                        self.try_send(idx);
                    }
                    let readable =
                        (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
                    if ev.events & readable != 0 {
                        self.recv_ready(idx, generation, bufs);
                    }
                }
                OP_UDP_RECV => {
                    if ev.events & libc::EPOLLOUT as u32 != 0 {
                        self.flush_udp(idx);
                    }
                    if ev.events & libc::EPOLLIN as u32 != 0 {
                        self.udp_ready(idx, bufs);
                    }
                }
                OP_WAKE => {
                    let mut v = 0u64;
                    // SAFETY: reading 8 bytes into a live u64 resets the eventfd.
                    unsafe { libc::read(self.wake_fd, (&mut v as *mut u64).cast(), 8) };
                }
                _ => {}
            }
        }
        self.ready_len = 0;
        self.delivered = self.pending.len();
        self.delivered
    }

    #[inline]
    fn event(&mut self, i: usize, _bufs: &mut EpollBuffers) -> Option<Event> {
        self.pending.get(i).copied()
    }

    fn wait(&mut self, block: bool, deadline: Option<Instant>) {
        for i in 0..self.udp_due.len() {
            let s = self.udp_due[i];
            self.flush_udp(s);
        }
        self.udp_due.clear();
        let timeout = if !block || self.pending.len() > self.delivered {
            Some(std::time::Duration::ZERO)
        } else {
            deadline.map(|at| at.saturating_duration_since(Instant::now()))
        };
        let n = loop {
            let n = if self.pwait2 {
                let ts = timeout.map(|d| libc::timespec {
                    tv_sec: d.as_secs() as libc::time_t,
                    tv_nsec: d.subsec_nanos() as libc::c_long,
                });
                let tsp = ts
                    .as_ref()
                    .map_or(std::ptr::null(), |t| t as *const libc::timespec);
                // SAFETY: the event array is ours and EVENTS long; the
                // timespec (or null) lives across the call.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_epoll_pwait2,
                        self.epfd,
                        self.ready.as_mut_ptr(),
                        EVENTS as i32,
                        tsp,
                        std::ptr::null::<libc::sigset_t>(),
                        0usize,
                    )
                } as i32;
                if r < 0 {
                    let errno = std::io::Error::last_os_error().raw_os_error();
                    if matches!(errno, Some(libc::ENOSYS) | Some(libc::EPERM)) {
                        // A kernel before 5.11, or a filter that refuses it.
                        self.pwait2 = false;
                        continue;
                    }
                }
                r
            } else {
                let ms = timeout.map_or(-1, |d| {
                    // Round up: waking a little late beats spinning early.
                    d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
                });
                // SAFETY: as above, with a timeout in milliseconds.
                unsafe { libc::epoll_wait(self.epfd, self.ready.as_mut_ptr(), EVENTS as i32, ms) }
            };
            break n;
        };
        self.ready_len = if n > 0 { n as usize } else { 0 };
    }

    fn timer_armed_by(&self, _at: Instant) -> bool {
        // Every wait takes the deadline as its timeout; nothing stays armed.
        false
    }

    fn arm_accept(&mut self, listener: u32, fd: i32) {
        let i = listener as usize;
        if self.listeners.len() <= i {
            self.listeners.resize(i + 1, (-1, false));
        }
        if self.listeners[i].1 {
            return;
        }
        // The socket is the shard's; accept4 must not block on a connection
        // that went away between readiness and the call.
        // SAFETY: fcntl on a descriptor the shard owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        self.listeners[i] = (fd, true);
        let token = ops::pack(OP_ACCEPT, 0, listener);
        if let Err(e) = self.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32, token) {
            self.listeners[i].1 = false;
            self.pending.push(Event::Accept {
                listener,
                result: Err(e.raw_os_error().unwrap_or(libc::EIO)),
                more: false,
            });
        }
    }

    fn stop_accept(&mut self, listener: u32, fd: i32) {
        if let Some(l) = self.listeners.get_mut(listener as usize) {
            if l.1 {
                l.1 = false;
                let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
                self.pending.push(Event::Accept {
                    listener,
                    result: Err(libc::ECANCELED),
                    more: false,
                });
            }
        }
    }

    fn arm_recv(&mut self, conn: u32, generation: u32, fd: i32) {
        let s = self.stream(conn);
        if s.fd != fd || s.generation != generation {
            *s = StreamIo {
                fd,
                generation,
                ..StreamIo::EMPTY
            };
        }
        s.recv = true;
        self.update_stream(conn);
    }

    fn pause_recv(&mut self, conn: u32, generation: u32, _fd: i32) {
        let Some(s) = self.streams.get_mut(conn as usize) else {
            return;
        };
        if !s.recv || s.generation != generation {
            return;
        }
        s.recv = false;
        self.update_stream(conn);
        self.pending.push(Event::Recv {
            conn,
            generation,
            result: RecvResult::Cancelled,
            more: false,
        });
    }

    unsafe fn send(&mut self, conn: u32, generation: u32, fd: i32, data: *const u8, len: usize) {
        let s = self.stream(conn);
        if s.fd != fd || s.generation != generation {
            *s = StreamIo {
                fd,
                generation,
                ..StreamIo::EMPTY
            };
        }
        s.send = Some((data, len));
        self.try_send(conn);
    }

    fn close_stream(&mut self, conn: u32, fd: i32) {
        if let Some(s) = self.streams.get_mut(conn as usize) {
            if s.fd == fd {
                *s = StreamIo::EMPTY;
            }
        }
        // SAFETY: the shard hands over a descriptor nothing uses any more;
        // closing it also takes it out of the epoll set.
        unsafe { libc::close(fd) };
    }

    fn arm_udp(&mut self, socket: u32, fd: i32) {
        let u = &mut self.udp[socket as usize];
        u.fd = fd;
        u.recv = true;
        self.update_udp(socket);
    }

    fn stop_udp(&mut self, socket: u32, _fd: i32) {
        let u = &mut self.udp[socket as usize];
        if !u.recv {
            return;
        }
        u.recv = false;
        u.writable_wait = false;
        while let Some((slot, listener, _)) = u.out.pop() {
            self.pending.push(Event::DatagramSent {
                slot,
                listener,
                res: -libc::ECANCELED,
            });
        }
        self.update_udp(socket);
        self.pending.push(Event::Datagram {
            socket,
            result: RecvResult::Cancelled,
            more: false,
        });
    }

    unsafe fn send_datagram(
        &mut self,
        socket: u32,
        fd: i32,
        slot: u32,
        listener: u16,
        hdr: *const libc::msghdr,
    ) {
        let u = &mut self.udp[socket as usize];
        u.fd = fd;
        if u.out.is_empty() {
            self.udp_due.push(socket);
        }
        u.out.push((slot, listener, hdr));
    }

    fn wake_peer(&mut self, _to: usize, peer: &ShardShared) {
        peer.wake();
    }

    fn cancel_all(&mut self) {
        for conn in 0..self.streams.len() as u32 {
            let s = self.streams[conn as usize];
            if s.fd < 0 {
                continue;
            }
            if s.send.is_some() {
                self.streams[conn as usize].send = None;
                self.pending.push(Event::Sent {
                    conn,
                    generation: s.generation,
                    res: -libc::ECANCELED,
                });
            }
            if s.recv {
                self.pause_recv(conn, s.generation, s.fd);
            } else {
                self.update_stream(conn);
            }
        }
        for l in 0..self.listeners.len() as u32 {
            let fd = self.listeners[l as usize].0;
            self.stop_accept(l, fd);
        }
        for u in 0..self.udp.len() as u32 {
            let fd = self.udp[u as usize].fd;
            self.stop_udp(u, fd);
        }
    }

    fn wait_briefly(&mut self) {
        let deadline = Instant::now() + std::time::Duration::from_millis(10);
        self.wait(true, Some(deadline));
    }

    fn in_flight(&self) -> usize {
        self.pending.len() - self.delivered + self.udp.iter().map(|u| u.out.len()).sum::<usize>()
    }

    fn finish(&mut self) {}
}

impl Buffers for EpollBuffers {
    #[inline]
    fn tcp(&self, buf: u16, len: usize) -> &[u8] {
        self.tcp.slice(buf, len)
    }

    #[inline]
    fn tcp_mut(&mut self, buf: u16, len: usize) -> &mut [u8] {
        self.tcp.slice_mut(buf, len)
    }

    #[inline]
    fn recycle_tcp(&mut self, buf: u16) {
        self.tcp.give(buf);
    }

    fn tcp_ran_dry(&mut self) {}

    fn datagram(&self, buf: u16, len: usize) -> Option<Received<'_>> {
        let m = self.udp_meta.get(buf as usize)?;
        let all = self.udp.slice(buf, len.max(UDP_PAYLOAD_AT));
        let payload_len = (m.payload_len as usize).min(self.udp_payload);
        Some(Received {
            name: &all[..(m.name_len as usize).min(NAME_LEN)],
            control: &all
                [UDP_CONTROL_AT..UDP_CONTROL_AT + (m.control_len as usize).min(CONTROL_LEN)],
            payload: &self.udp.slice(buf, UDP_PAYLOAD_AT + payload_len)[UDP_PAYLOAD_AT..],
            truncated: m.truncated,
        })
    }

    #[inline]
    fn recycle_udp(&mut self, buf: u16) {
        self.udp.give(buf);
    }

    fn udp_ran_dry(&mut self) {}

    fn refill(&mut self) {}
}
