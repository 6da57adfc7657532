//! The epoll backend: readiness instead of completions, for where io_uring
//! is not allowed (a container's seccomp profile, `kernel.io_uring_disabled`).
//!
//! It gives the shard the same events as the io_uring backend, by doing the
//! I/O itself when a socket is ready:
//!
//! - `Backend::wait` is the one place that blocks (`epoll_pwait`, at once
//!   or until something is ready); before it, the turn's queued datagrams
//!   go out with one `sendmmsg` per socket. Deadlines are a CLOCK_MONOTONIC
//!   timerfd in the epoll set, set only when the earliest one changes, so a
//!   turn reads no clock.
//! - `Backend::reap` turns readiness into events: `accept4` on a ready
//!   listener (up to [`ACCEPT_BATCH`] a turn), one `recv` into a free buffer
//!   per ready stream, one `recvmmsg` of up to [`RECV_BATCH`] datagrams per
//!   ready UDP socket, and the events it had to make up (a cancelled receive,
//!   a send that completed at once).
//! - A stream a plugin opens connects without blocking (`connect` on a
//!   non-blocking socket, EINPROGRESS); EPOLLOUT says the handshake ended,
//!   and SO_ERROR says how. Its timeout is the shard's deadline, which
//!   cancels it.
//! - A stream send is tried at once (`send`, MSG_DONTWAIT); what the socket
//!   does not take waits for EPOLLOUT. The shard already gathers a stream's
//!   writes into one send per turn.
//! - Interest is level-triggered: a stream is registered with EPOLLIN while
//!   its receive is armed and EPOLLOUT while a send waits; a paused stream
//!   with nothing to send is deregistered, so a hang-up cannot spin the loop.
//! - Cross-shard wake-ups are eventfd writes; the shard's own eventfd is in
//!   its epoll set.

use std::os::fd::AsRawFd;
use std::time::Instant;

use crate::backend::{Backend, Buffers, Event, Received, RecvResult};
use crate::config::EngineConfig;
use crate::ops::{self, OP_ACCEPT, OP_RECV, OP_TIMER, OP_UDP_RECV, OP_WAKE};
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

/// The hot syscalls, made directly: libc's wrappers of these are
/// cancellation points, and entering and leaving asynchronous cancellation
/// around every call cost about 130 instructions a message (callgrind).
mod raw {
    /// `recvfrom(fd, buf, len, flags, NULL, NULL)`: bytes, or -1 with errno set.
    ///
    /// # Safety
    ///
    /// `buf` must be valid for writes of `len` bytes.
    #[inline]
    pub unsafe fn recv(fd: i32, buf: *mut u8, len: usize, flags: i32) -> isize {
        // SAFETY: the caller vouches for the buffer; null address pointers
        // are allowed.
        unsafe {
            libc::syscall(
                libc::SYS_recvfrom,
                fd,
                buf,
                len,
                flags,
                std::ptr::null_mut::<libc::sockaddr>(),
                std::ptr::null_mut::<libc::socklen_t>(),
            ) as isize
        }
    }

    /// `sendto(fd, buf, len, flags, NULL, 0)`.
    ///
    /// # Safety
    ///
    /// `buf` must be valid for reads of `len` bytes.
    #[inline]
    pub unsafe fn send(fd: i32, buf: *const u8, len: usize, flags: i32) -> isize {
        // SAFETY: as above.
        unsafe {
            libc::syscall(
                libc::SYS_sendto,
                fd,
                buf,
                len,
                flags,
                std::ptr::null::<libc::sockaddr>(),
                0u32,
            ) as isize
        }
    }

    /// `recvmmsg(fd, msgs, n, flags, NULL)`.
    ///
    /// # Safety
    ///
    /// The first `n` headers and everything they point to must be valid.
    #[inline]
    pub unsafe fn recvmmsg(fd: i32, msgs: *mut libc::mmsghdr, n: u32, flags: i32) -> i32 {
        // SAFETY: as the caller vouches; no timeout.
        unsafe {
            libc::syscall(
                libc::SYS_recvmmsg,
                fd,
                msgs,
                n,
                flags,
                std::ptr::null_mut::<libc::timespec>(),
            ) as i32
        }
    }

    /// `sendmmsg(fd, msgs, n, flags)`.
    ///
    /// # Safety
    ///
    /// As for [`recvmmsg`].
    #[inline]
    pub unsafe fn sendmmsg(fd: i32, msgs: *mut libc::mmsghdr, n: u32, flags: i32) -> i32 {
        // SAFETY: as the caller vouches.
        unsafe { libc::syscall(libc::SYS_sendmmsg, fd, msgs, n, flags) as i32 }
    }
}

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
    /// A connect waits for EPOLLOUT.
    connecting: bool,
}

impl StreamIo {
    const EMPTY: StreamIo = StreamIo {
        fd: -1,
        generation: 0,
        interest: 0,
        recv: false,
        send: None,
        connecting: false,
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
    /// A CLOCK_MONOTONIC timerfd in the epoll set: the shard's deadlines.
    timer_fd: i32,
    /// The expiry it is set to, if any.
    timer_armed: Option<Instant>,
    /// An Instant and the CLOCK_MONOTONIC nanoseconds read with it.
    clock_base: (Instant, u128),
    mmsg: Vec<libc::mmsghdr>,
    iov: Vec<libc::iovec>,
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

/// One datagram handed to the shard: where it lies in this turn's areas.
#[derive(Debug, Clone, Copy, Default)]
struct Segment {
    area: u16,
    at: u32,
    len: u32,
    name_len: u16,
    /// The first datagram of a receive carries its control data.
    control_len: u16,
    truncated: bool,
}

/// The receive buffers: a pool for streams; for datagrams, [`RECV_BATCH`]
/// areas a turn, each taking one receive: its address, its control data and
/// up to 64 KiB of payload, which UDP GRO may fill with several datagrams
/// of one sender. A datagram the shard is handed is a `Segment` of an
/// area, valid until the next reap (the shard is done with it by then).
pub struct EpollBuffers {
    tcp: Pool,
    areas: Vec<u8>,
    area_len: usize,
    areas_used: usize,
    segments: Vec<Segment>,
    /// The largest datagram a listener takes whole (`udp_max_datagram`).
    max_datagram: usize,
}

impl std::fmt::Debug for EpollBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpollBuffers")
            .field("tcp_free", &self.tcp.free.len())
            .field("areas_used", &self.areas_used)
            .finish()
    }
}

/// Payload bytes an area takes: the most a GRO receive holds.
const AREA_PAYLOAD: usize = 65536;
/// Control bytes an area takes: SO_RXQ_OVFL and UDP_GRO, CMSG_SPACE each.
const AREA_CONTROL: usize = CONTROL_LEN + 24;
/// An area: address, control data, payload.
const AREA: usize = NAME_LEN + AREA_CONTROL + AREA_PAYLOAD;
/// `setsockopt(SOL_UDP, UDP_GRO)` and its control message (linux/udp.h).
const UDP_GRO: i32 = 104;

impl EpollBuffers {
    fn new(cfg: &EngineConfig) -> EpollBuffers {
        EpollBuffers {
            tcp: Pool::new(cfg.tcp_bufs, cfg.tcp_buf_size as usize),
            areas: vec![0; RECV_BATCH * AREA],
            area_len: AREA_PAYLOAD,
            areas_used: 0,
            segments: Vec::with_capacity(RECV_BATCH * 64),
            max_datagram: cfg.udp_max_datagram as usize,
        }
    }

    /// A new turn: the last turn's datagrams are done with.
    fn new_turn(&mut self) {
        self.areas_used = 0;
        self.segments.clear();
    }

    /// The address, control and payload parts of area `i`.
    fn area_ptrs(&mut self, i: usize) -> (*mut u8, *mut u8, *mut u8) {
        let base = self.areas[i * AREA..].as_mut_ptr();
        // SAFETY: the offsets lie inside area i (AREA bytes from base).
        unsafe { (base, base.add(NAME_LEN), base.add(NAME_LEN + AREA_CONTROL)) }
    }

    /// The UDP GRO segment size in area `i`'s control data, if the kernel
    /// glued datagrams together.
    fn gro_size(&self, i: usize, control_len: usize) -> Option<usize> {
        let c = &self.areas[i * AREA + NAME_LEN..][..control_len.min(AREA_CONTROL)];
        // cmsghdr on 64-bit Linux: len u64, level i32, type i32, data.
        let mut off = 0;
        while off + 16 <= c.len() {
            let len = u64::from_ne_bytes(c[off..off + 8].try_into().ok()?) as usize;
            let level = i32::from_ne_bytes(c[off + 8..off + 12].try_into().ok()?);
            let kind = i32::from_ne_bytes(c[off + 12..off + 16].try_into().ok()?);
            if len < 16 || len > c.len() - off {
                return None;
            }
            if level == libc::SOL_UDP && kind == UDP_GRO && len >= 18 {
                let size = u16::from_ne_bytes([c[off + 16], c[off + 17]]);
                return (size > 0).then_some(size as usize);
            }
            off += (len + 7) & !7;
        }
        None
    }

    /// Records one datagram of area `i` and returns its id (None: the
    /// turn's ids are used up).
    #[allow(clippy::too_many_arguments)]
    fn segment(
        &mut self,
        i: usize,
        at: usize,
        len: usize,
        name_len: usize,
        control_len: usize,
        first: bool,
        flags: i32,
    ) -> Option<u16> {
        // The list keeps its capacity (no allocation a turn): at most 64
        // datagrams a GRO receive (the kernel's UDP_MAX_SEGMENTS), in each
        // of RECV_BATCH areas.
        if self.segments.len() == self.segments.capacity() {
            return None;
        }
        let id = u16::try_from(self.segments.len()).ok()?;
        let keep = len.min(self.max_datagram);
        self.segments.push(Segment {
            area: i as u16,
            at: at as u32,
            len: keep as u32,
            name_len: name_len.min(NAME_LEN) as u16,
            control_len: if first {
                control_len.min(AREA_CONTROL) as u16
            } else {
                0
            },
            truncated: keep < len || flags & libc::MSG_TRUNC != 0,
        });
        Some(id)
    }
}

/// The fuzzing entry point (`ringport_engine::fuzzing::gro_size`): the
/// UDP GRO segment size `EpollBuffers::gro_size` finds in an area whose
/// control data is `control` (cut or zero-padded to the area's control
/// space), with `control_len` as the kernel reports it. Not for use outside
/// `fuzz/`.
#[doc(hidden)]
pub fn fuzz_gro_size(control: &[u8], control_len: usize) -> Option<usize> {
    let mut areas = vec![0; NAME_LEN + AREA_CONTROL];
    let n = control.len().min(AREA_CONTROL);
    areas[NAME_LEN..NAME_LEN + n].copy_from_slice(&control[..n]);
    let bufs = EpollBuffers {
        tcp: Pool::new(0, 0),
        areas,
        area_len: AREA_PAYLOAD,
        areas_used: 0,
        segments: Vec::new(),
        max_datagram: 0,
    };
    bufs.gro_size(0, control_len)
}

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
        // SAFETY: timerfd_create has no memory preconditions; checked below.
        let timer_fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if timer_fd < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: ours, closed once.
            unsafe { libc::close(epfd) };
            return Err(crate::StartError::Shard {
                shard,
                message: format!("timerfd_create failed: {e}"),
            });
        }
        let clock_instant = Instant::now();
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let clock_nanos = ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128;
        let mut notices = Vec::new();
        if cfg.batch_delay_us > 0 {
            notices.push(format!(
                "shard {shard}: --batch-delay-us needs the io_uring backend; ignored on epoll"
            ));
        }
        let mut e = Epoll {
            epfd,
            wake_fd: shared.wake_fd.as_raw_fd(),
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
            timer_fd,
            timer_armed: None,
            clock_base: (clock_instant, clock_nanos),
            // SAFETY: all-zero mmsghdr/iovec are valid (empty) values.
            mmsg: vec![unsafe { std::mem::zeroed() }; RECV_BATCH.max(SEND_BATCH)],
            // SAFETY: as above.
            iov: vec![unsafe { std::mem::zeroed() }; RECV_BATCH],
        };
        for (fd, op, what) in [
            (shared.wake_fd.as_raw_fd(), OP_WAKE, "the wake-up eventfd"),
            (timer_fd, OP_TIMER, "the deadline timerfd"),
        ] {
            let token = ops::pack(op, 0, 0);
            if let Err(err) = e.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32, token) {
                return Err(crate::StartError::Shard {
                    shard,
                    message: format!("epoll_ctl on {what} failed: {err}"),
                });
            }
        }
        Ok((e, EpollBuffers::new(cfg), notices))
    }

    /// Waits up to `ms` milliseconds (-1: until something is ready) and
    /// keeps the readiness for the next reap.
    fn poll(&mut self, ms: i32) {
        // epoll_pwait with no signal mask: epoll_wait where every
        // architecture has it, and not a libc cancellation point.
        // SAFETY: the event array is ours and EVENTS long.
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait,
                self.epfd,
                self.ready.as_mut_ptr(),
                EVENTS as i32,
                ms,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        self.ready_len = if n > 0 { n as usize } else { 0 };
    }

    /// Makes sure the timerfd fires by `at`: set (a syscall) only when no
    /// earlier or equal expiry is already set.
    fn arm_timer(&mut self, at: Instant) {
        if self.timer_armed.is_some_and(|armed| armed <= at) {
            return;
        }
        // Instant is CLOCK_MONOTONIC: the same clock, offset from the pair
        // read at setup.
        let since = at.saturating_duration_since(self.clock_base.0);
        let nanos = self.clock_base.1 + since.as_nanos();
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (nanos / 1_000_000_000) as libc::time_t,
                tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: timerfd_settime reads the itimerspec we own; no old value.
        let rc = unsafe {
            libc::timerfd_settime(
                self.timer_fd,
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc == 0 {
            self.timer_armed = Some(at);
        }
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
        if s.send.is_some() || s.connecting {
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

    /// A connect's handshake ended: SO_ERROR says how.
    fn connect_ready(&mut self, conn: u32) {
        let s = self.streams[conn as usize];
        let mut err: i32 = 0;
        let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the i32 we own.
        let rc = unsafe {
            libc::getsockopt(
                s.fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut i32).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            err = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
        }
        self.end_connect(conn, if err == 0 { Ok(()) } else { Err(err) });
    }

    /// Reports a connect's end and stops waiting for it.
    fn end_connect(&mut self, conn: u32, result: Result<(), i32>) {
        let s = &mut self.streams[conn as usize];
        s.connecting = false;
        let generation = s.generation;
        self.update_stream(conn);
        self.pending.push(Event::Connected {
            conn,
            generation,
            result,
        });
    }

    /// Tries a stream's waiting send; reports it unless the socket is full.
    fn try_send(&mut self, conn: u32) {
        let s = self.streams[conn as usize];
        let Some((data, len)) = s.send else { return };
        // SAFETY: the shard keeps `data..data + len` valid until the Sent
        // event (`Backend::send`'s contract).
        let n = unsafe { raw::send(s.fd, data, len, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
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
                raw::sendmmsg(
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
        let n = unsafe { raw::recv(s.fd, bufs.tcp.ptr(buf), size, libc::MSG_DONTWAIT) };
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
        // As many messages as the last call filled, doubled (at least 2, at
        // most what is left of this turn's areas): setting a message up
        // costs, and one datagram per wake-up is the common case below
        // saturation.
        let first = bufs.areas_used;
        let n = self.udp[socket as usize].batch.min(RECV_BATCH - first);
        if n == 0 {
            // This turn's areas are full: the socket stays ready, and the
            // next turn takes it.
            return;
        }
        for i in 0..n {
            let (name, control, payload) = bufs.area_ptrs(first + i);
            self.iov[i] = libc::iovec {
                iov_base: payload.cast(),
                iov_len: bufs.area_len,
            };
            let hdr = &mut self.mmsg[i].msg_hdr;
            hdr.msg_name = name.cast();
            hdr.msg_namelen = NAME_LEN as libc::socklen_t;
            hdr.msg_iov = &mut self.iov[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = control.cast();
            hdr.msg_controllen = AREA_CONTROL as _;
            hdr.msg_flags = 0;
            self.mmsg[i].msg_len = 0;
        }
        let fd = self.udp[socket as usize].fd;
        // SAFETY: n mmsghdrs point into n areas of this turn, each part as
        // long as its length says.
        let got =
            unsafe { raw::recvmmsg(fd, self.mmsg.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT) };
        let got = if got < 0 { 0 } else { got as usize };
        self.udp[socket as usize].batch = (got * 2).clamp(2, RECV_BATCH);
        bufs.areas_used += got;
        for i in 0..got {
            let m = &self.mmsg[i];
            let area = first + i;
            let (len, flags) = (m.msg_len as usize, m.msg_hdr.msg_flags);
            let (name_len, control_len) =
                (m.msg_hdr.msg_namelen as usize, m.msg_hdr.msg_controllen);
            // One receive, or with UDP GRO several datagrams of one sender
            // glued together: `gso` bytes each, the last one shorter.
            let gso = bufs.gro_size(area, control_len).unwrap_or(len).max(1);
            let mut at = 0;
            while at < len || (at == 0 && len == 0) {
                let seg = gso.min(len - at);
                let Some(buf) = bufs.segment(area, at, seg, name_len, control_len, at == 0, flags)
                else {
                    // Every datagram id of the turn is taken: count what
                    // could not be handed on.
                    self.pending.push(Event::Datagram {
                        socket,
                        result: RecvResult::NoBuffers,
                        more: true,
                    });
                    break;
                };
                self.pending.push(Event::Datagram {
                    socket,
                    result: RecvResult::Data {
                        buf,
                        len: seg as u32,
                    },
                    more: true,
                });
                if len == 0 {
                    break;
                }
                at += seg;
            }
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the epoll fd and the timerfd are ours and closed once.
        unsafe {
            libc::close(self.timer_fd);
            libc::close(self.epfd);
        }
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
        bufs.new_turn();
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
                    if s.connecting {
                        let done = (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32;
                        if ev.events & done != 0 {
                            self.connect_ready(idx);
                        }
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
                // A deadline passed: the turn checks them all; the next
                // wait sets the next one.
                OP_TIMER => {
                    let mut v = 0u64;
                    // SAFETY: as above, for the timerfd's expiry count.
                    unsafe { libc::read(self.timer_fd, (&mut v as *mut u64).cast(), 8) };
                    self.timer_armed = None;
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
        if let Some(at) = deadline {
            self.arm_timer(at);
        }
        // Deadlines are the timerfd's: the wait itself is either at once or
        // until something is ready, and reads no clock.
        let ms = if !block || self.pending.len() > self.delivered {
            0
        } else {
            -1
        };
        self.poll(ms);
    }

    #[inline]
    fn timer_armed_by(&self, at: Instant) -> bool {
        self.timer_armed.is_some_and(|armed| armed <= at)
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

    fn connect(&mut self, conn: u32, generation: u32, fd: i32, addr: std::net::SocketAddr) {
        *self.stream(conn) = StreamIo {
            fd,
            generation,
            ..StreamIo::EMPTY
        };
        // SAFETY: all-zero is a valid sockaddr_storage; fcntl and connect
        // get a descriptor the shard owns and the address we own with its
        // length.
        let rc = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            let mut storage: libc::sockaddr_storage = std::mem::zeroed();
            let len = crate::sys::addr::to_raw(&addr, &mut storage);
            libc::connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len)
        };
        if rc == 0 {
            self.end_connect(conn, Ok(()));
            return;
        }
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        // EINTR: the connect goes on in the background, as EINPROGRESS.
        if errno != libc::EINPROGRESS && errno != libc::EINTR {
            self.end_connect(conn, Err(errno));
            return;
        }
        self.streams[conn as usize].connecting = true;
        self.update_stream(conn);
        if self.streams[conn as usize].interest == 0 {
            // epoll_ctl refused it (ENOMEM, ENOSPC): it would never be seen.
            self.end_connect(conn, Err(libc::ENOMEM));
        }
    }

    fn cancel_connect(&mut self, conn: u32, generation: u32, _fd: i32) {
        let Some(s) = self.streams.get(conn as usize) else {
            return;
        };
        if s.connecting && s.generation == generation {
            self.end_connect(conn, Err(libc::ECANCELED));
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
        if self.udp[socket as usize].fd != fd {
            // UDP GRO: the kernel may hand datagrams a sender sent as one
            // GSO burst over in one receive (Linux 5.0; where refused,
            // every receive is one datagram).
            let on: i32 = 1;
            // SAFETY: setsockopt reads the int we own.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_UDP,
                    UDP_GRO,
                    (&on as *const i32).cast(),
                    std::mem::size_of::<i32>() as libc::socklen_t,
                )
            };
        }
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
            if s.connecting {
                self.end_connect(conn, Err(libc::ECANCELED));
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
        for i in 0..self.udp_due.len() {
            let s = self.udp_due[i];
            self.flush_udp(s);
        }
        self.udp_due.clear();
        self.poll(10);
    }

    fn in_flight(&self) -> usize {
        self.pending.len() - self.delivered
            + self.udp.iter().map(|u| u.out.len()).sum::<usize>()
            + self.streams.iter().filter(|s| s.connecting).count()
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

    fn datagram(&self, buf: u16, _len: usize) -> Option<Received<'_>> {
        let g = self.segments.get(buf as usize)?;
        let area = &self.areas[g.area as usize * AREA..][..AREA];
        let payload = &area[NAME_LEN + AREA_CONTROL..];
        Some(Received {
            name: &area[..g.name_len as usize],
            control: &area[NAME_LEN..NAME_LEN + g.control_len as usize],
            payload: &payload[g.at as usize..(g.at + g.len) as usize],
            truncated: g.truncated,
        })
    }

    /// Nothing to give back: a datagram's area is reused next turn.
    #[inline]
    fn recycle_udp(&mut self, _buf: u16) {}

    fn udp_ran_dry(&mut self) {}

    fn refill(&mut self) {}
}
