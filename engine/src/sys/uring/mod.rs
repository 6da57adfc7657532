//! The io_uring backend: one ring per shard (SINGLE_ISSUER, DEFER_TASKRUN,
//! COOP_TASKRUN where the kernel has them) entered through a registered ring
//! fd; multishot accept, multishot receives into provided buffer rings,
//! IORING_OP_CONNECT for the streams plugins open, sends and sendmsgs batched into the turn's single `io_uring_enter`; one
//! IORING_OP_TIMEOUT for deadlines; an eventfd read and IORING_OP_MSG_RING
//! for cross-shard wake-ups.
//!
//! `ring` sets a ring up and explains why when it cannot; `bufring` owns a
//! provided-buffer ring; `recvmsg` reads the multishot recvmsg layout.

pub mod bufring;
pub mod recvmsg;
pub mod ring;

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

use crate::backend::{Backend, Buffers, Event, Received, RecvResult};
use crate::config::EngineConfig;
use crate::ops::{self, *};
use crate::shard::ShardShared;
use crate::stats::{EngineDrop, SharedStats};
use bufring::BufRing;

/// Buffer group of the TCP receive ring.
const BGID_TCP: u16 = 0;
/// Buffer group of the UDP receive ring.
const BGID_UDP: u16 = 1;

/// The overall bound of a `--batch-delay-us` wait: long enough never to matter
/// (deadlines have their own timeout operation), there only to make the kernel
/// treat the batch delay as "wait at most this long once something is ready".
static IDLE_WAIT: Timespec = Timespec::new().sec(3600);

/// A shard's io_uring and what it keeps for the kernel.
pub struct Uring {
    ring: IoUring,
    enter: ring::Enter,
    /// Operations whose final completion has not been reaped.
    inflight: usize,
    /// The eventfd a read is kept armed on (another shard, or the engine,
    /// writes it to wake this one).
    wake_fd: i32,
    wake_buf: Box<u64>,
    cq_overflow_seen: u32,
    /// The earliest deadline an IORING_OP_TIMEOUT is armed for, and that
    /// arming's sequence number (in its user_data).
    timer_armed: Option<(Instant, u32)>,
    timer_arms: u32,
    /// The armed timeout's duration; the kernel reads it when the SQE is submitted.
    timer_ts: Box<Timespec>,
    /// One msghdr template per UDP socket slot, for multishot recvmsg
    /// (its address is handed to the kernel).
    /// (The vector never grows after setup, so the addresses stay put.)
    udp_msghdrs: Vec<libc::msghdr>,
    /// Wake parked shards with MSG_RING (else eventfd writes).
    msg_ring: bool,
    /// `--batch-delay-us`, when the kernel honours min_wait (else 0).
    batch_delay_us: u32,
    /// How many completions a batched wait asks for.
    batch_want: usize,
    /// Completions reaped this turn (kept for its capacity).
    cqes: Vec<(u64, i32, u32)>,
    /// Per connection slot: the address of its connect in flight (the
    /// kernel reads it while the connect runs; boxed, so growing the
    /// vector moves no address the kernel holds). Freed at its completion.
    connect_addrs: Vec<Option<Box<libc::sockaddr_storage>>>,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("inflight", &self.inflight)
            .field("registered", &self.enter.registered())
            .finish()
    }
}

/// The provided buffer rings the kernel receives into.
#[derive(Debug)]
pub struct UringBuffers {
    tcp: BufRing,
    udp: BufRing,
}

/// What setting up a shard's ring produced besides the backend.
#[derive(Debug)]
pub struct UringSetup {
    /// The backend.
    pub backend: Uring,
    /// Its buffers.
    pub buffers: UringBuffers,
    /// Notices for the operator (flags the kernel refused, ...).
    pub notices: Vec<String>,
}

impl Uring {
    /// Sets up shard `shard`'s ring and buffer rings. Runs on the shard's
    /// own thread (SINGLE_ISSUER; the ring fd is registered for it).
    pub fn setup(
        shard: usize,
        cfg: &EngineConfig,
        shared: &ShardShared,
        udp_sockets: usize,
        msg_ring: bool,
    ) -> Result<UringSetup, crate::StartError> {
        let r =
            ring::setup(cfg.ring_entries, cfg.ring_entries * 4).map_err(crate::StartError::Ring)?;
        let mut notices = Vec::new();
        for f in &r.dropped {
            notices.push(format!(
                "shard {shard}: the kernel refused {}; running without it",
                f.name()
            ));
        }
        if cfg.batch_delay_us > 0 && !r.min_timeout {
            notices.push(format!(
                "shard {shard}: --batch-delay-us needs IORING_FEAT_MIN_TIMEOUT (kernel 6.12); ignored"
            ));
        }
        let ring = r.ring;
        // The loop's io_uring_enter calls go through the registered ring fd
        // (this is the submitting thread).
        let enter = ring::Enter::new(&ring);
        let bufring_err = |what: &str, e: io::Error| crate::StartError::Shard {
            shard,
            message: format!(
                "registering the {what} provided buffer ring failed: {e} \
                     (IORING_REGISTER_PBUF_RING needs Linux 5.19; ENOMEM means the memory for \
                     --{what}-bufs buffers could not be had)"
            ),
        };
        let tcp = BufRing::adaptive(&ring.submitter(), BGID_TCP, cfg.tcp_bufs, cfg.tcp_buf_size)
            .map_err(|e| bufring_err("tcp", e))?;
        let udp_size = (cfg.udp_max_datagram as usize + recvmsg::RECV_HEADROOM) as u32;
        let udp = BufRing::adaptive(&ring.submitter(), BGID_UDP, cfg.udp_bufs, udp_size)
            .map_err(|e| bufring_err("udp", e))?;
        shared
            .ring_fd
            .store(ring.as_raw_fd(), std::sync::atomic::Ordering::Release);
        let cq_cap = (cfg.ring_entries * 4) as usize;
        let mut backend = Uring {
            ring,
            enter,
            inflight: 0,
            wake_fd: shared.wake_fd.as_raw_fd(),
            wake_buf: Box::new(0),
            cq_overflow_seen: 0,
            timer_armed: None,
            timer_arms: 0,
            timer_ts: Box::new(Timespec::new()),
            udp_msghdrs: (0..udp_sockets).map(|_| recvmsg::template()).collect(),
            msg_ring,
            batch_delay_us: if r.min_timeout { cfg.batch_delay_us } else { 0 },
            batch_want: cq_cap.min(64),
            cqes: Vec::with_capacity(cq_cap),
            connect_addrs: Vec::new(),
        };
        backend.arm_wake();
        Ok(UringSetup {
            backend,
            buffers: UringBuffers { tcp, udp },
            notices,
        })
    }

    /// Pushes an SQE, submitting first if the queue is full.
    fn push(&mut self, entry: squeue::Entry) {
        self.inflight += 1;
        loop {
            // SAFETY: every buffer an entry points at (send buffers, msghdrs,
            // the wake buffer) lives until the entry's final completion has
            // been reaped: the shard's send queues and send slots by the
            // `Backend` contract, the rest in this struct.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                return;
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // CQ full: the completions will be reaped next turn; make
                    // room by submitting anyway once the kernel accepts.
                    std::thread::yield_now();
                }
                Err(_) => std::thread::yield_now(),
            }
        }
    }

    /// An SQE whose success posts nothing (CQE_SKIP_SUCCESS): not in flight.
    fn push_uncounted(&mut self, entry: squeue::Entry) {
        self.push(entry);
        self.inflight -= 1;
    }

    fn arm_wake(&mut self) {
        let e = opcode::Read::new(
            Fd(self.wake_fd),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(ops::pack(OP_WAKE, 0, 0));
        self.push(e);
    }

    fn cancel(&mut self, target: u64) {
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(ops::pack(OP_CANCEL, 0, 0));
        self.push(e);
    }

    /// Makes sure a timeout operation will wake the shard by `at`: arms one
    /// unless an earlier (or equal) one is already pending. A later pending
    /// one, left armed, fires harmlessly.
    fn arm_timer(&mut self, at: Instant) {
        if self.timer_armed.is_some_and(|(armed, _)| armed <= at) {
            return;
        }
        self.timer_arms = self.timer_arms.wrapping_add(1);
        let seq = self.timer_arms;
        *self.timer_ts = Timespec::from(at.saturating_duration_since(Instant::now()));
        let e = opcode::Timeout::new(&*self.timer_ts)
            .build()
            .user_data(ops::pack(OP_TIMER, 0, seq));
        self.push(e);
        self.timer_armed = Some((at, seq));
    }
}

impl Backend for Uring {
    type Buffers = UringBuffers;

    fn name(&self) -> &'static str {
        "io-uring"
    }

    #[inline]
    fn reap(&mut self, _bufs: &mut UringBuffers, stats: &SharedStats) -> usize {
        self.cqes.clear();
        let mut cq = self.ring.completion();
        let overflow = cq.overflow();
        for cqe in &mut cq {
            self.cqes.push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
        drop(cq);
        if overflow != self.cq_overflow_seen {
            let lost = overflow.wrapping_sub(self.cq_overflow_seen);
            stats.drop_engine(EngineDrop::CqOverflow, lost as u64);
            self.cq_overflow_seen = overflow;
        }
        self.cqes.len()
    }

    #[inline]
    fn event(&mut self, i: usize, bufs: &mut UringBuffers) -> Option<Event> {
        let (ud, res, flags) = self.cqes[i];
        let (kind, generation, idx) = ops::unpack(ud);
        let more = cqueue::more(flags);
        // Skip-success operations post only failures and are not counted
        // in flight; neither is a wake another shard posted into our ring.
        let counted = !matches!(kind, OP_CLOSE | OP_MSG_RING | OP_MESH_WAKE);
        if !more && counted {
            self.inflight = self.inflight.saturating_sub(1);
        }
        match kind {
            OP_RECV => Some(Event::Recv {
                conn: idx,
                generation,
                result: received(res, flags, &mut bufs.tcp),
                more,
            }),
            OP_CONNECT => {
                if let Some(slot) = self.connect_addrs.get_mut(idx as usize) {
                    *slot = None;
                }
                Some(Event::Connected {
                    conn: idx,
                    generation,
                    result: if res >= 0 { Ok(()) } else { Err(-res) },
                })
            }
            OP_SEND => Some(Event::Sent {
                conn: idx,
                generation,
                res,
            }),
            OP_UDP_RECV => Some(Event::Datagram {
                socket: idx,
                result: received(res, flags, &mut bufs.udp),
                more,
            }),
            OP_UDP_SEND => Some(Event::DatagramSent {
                slot: idx,
                listener: generation as u16,
                res,
            }),
            OP_ACCEPT => Some(Event::Accept {
                listener: idx,
                result: if res >= 0 { Ok(res) } else { Err(-res) },
                more,
            }),
            // Re-armed at once; a shard told to stop breaks its loop first,
            // and the shutdown cancels it.
            OP_WAKE => {
                if res != -libc::ECANCELED {
                    self.arm_wake();
                }
                None
            }
            // The deadline timer fired (or was cancelled): the turn checks
            // every deadline; the next wait arms the next one.
            OP_TIMER => {
                if self.timer_armed.is_some_and(|(_, seq)| seq == idx) {
                    self.timer_armed = None;
                }
                None
            }
            // MSG_RING to `idx` failed (its CQ full, or the ring gone).
            OP_MSG_RING => Some(Event::WakeFailed { shard: idx }),
            _ => None,
        }
    }

    #[inline]
    fn wait(&mut self, block: bool, deadline: Option<Instant>) {
        if !block {
            let _ = self.enter.submit_and_wait(&mut self.ring, 0);
            return;
        }
        if let Some(at) = deadline {
            self.arm_timer(at);
        }
        // Deadlines are served by the timeout operation armed above, not by a
        // timeout on the wait itself: that would program (and cancel) a
        // hardware timer on every wait, which on a VM exits to the hypervisor.
        let res = if self.batch_delay_us == 0 {
            self.enter
                .submit_and_wait(&mut self.ring, 1)
                .map(|n| n as usize)
        } else {
            // Wait for a full batch; min_wait makes the kernel return with
            // what it has once the delay has passed. The (far) overall timeout
            // matters: without one the kernel ends every wait when the delay
            // passes, completions or not, so an idle shard would wake every
            // `delay` us. With one, a delay that passes with nothing to show
            // turns into a plain wait for the first completion.
            let args = SubmitArgs::new()
                .timespec(&IDLE_WAIT)
                .min_wait_usec(self.batch_delay_us);
            self.ring
                .submitter()
                .submit_with_args(self.batch_want, &args)
        };
        if let Err(e) = res {
            match e.raw_os_error() {
                // ETIME: a timer is due. EINTR: a signal. EBUSY/EAGAIN: the CQ
                // is full or the kernel is short of memory; reaping makes room.
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                _ => {
                    // Not expected from a valid ring; avoid a hot spin.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    #[inline]
    fn timer_armed_by(&self, at: Instant) -> bool {
        self.timer_armed.is_some_and(|(armed, _)| armed <= at)
    }

    fn arm_accept(&mut self, listener: u32, fd: i32) {
        let e = opcode::AcceptMulti::new(Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ops::pack(OP_ACCEPT, 0, listener));
        self.push(e);
    }

    fn stop_accept(&mut self, listener: u32, _fd: i32) {
        self.cancel(ops::pack(OP_ACCEPT, 0, listener));
    }

    fn connect(&mut self, conn: u32, generation: u32, fd: i32, addr: std::net::SocketAddr) {
        // The socket is blocking: the kernel's connect then waits for the
        // handshake itself (on a non-blocking one it would end EINPROGRESS).
        // Its timeout is the shard's deadline, which cancels it.
        let i = conn as usize;
        if self.connect_addrs.len() <= i {
            self.connect_addrs.resize_with(i + 1, || None);
        }
        // SAFETY: an all-zero sockaddr_storage is a valid value.
        let mut storage: Box<libc::sockaddr_storage> = Box::new(unsafe { std::mem::zeroed() });
        let len = crate::sys::addr::to_raw(&addr, &mut storage);
        let ptr: *const libc::sockaddr = (&*storage as *const libc::sockaddr_storage).cast();
        self.connect_addrs[i] = Some(storage);
        let e = opcode::Connect::new(Fd(fd), ptr, len)
            .build()
            .user_data(ops::pack(OP_CONNECT, generation, conn));
        self.push(e);
    }

    fn cancel_connect(&mut self, conn: u32, generation: u32, _fd: i32) {
        self.cancel(ops::pack(OP_CONNECT, generation, conn));
    }

    #[inline]
    fn arm_recv(&mut self, conn: u32, generation: u32, fd: i32) {
        let e = opcode::RecvMulti::new(Fd(fd), BGID_TCP)
            .build()
            .user_data(ops::pack(OP_RECV, generation, conn));
        self.push(e);
    }

    fn pause_recv(&mut self, conn: u32, generation: u32, _fd: i32) {
        self.cancel(ops::pack(OP_RECV, generation, conn));
    }

    #[inline]
    unsafe fn send(&mut self, conn: u32, generation: u32, fd: i32, data: *const u8, len: usize) {
        let e = opcode::Send::new(Fd(fd), data, len as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ops::pack(OP_SEND, generation, conn));
        self.push(e);
    }

    fn close_stream(&mut self, _conn: u32, fd: i32) {
        let e = opcode::Close::new(Fd(fd))
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(ops::pack(OP_CLOSE, 0, 0));
        // A successful close posts nothing, so it is not counted in flight.
        self.push_uncounted(e);
    }

    fn arm_udp(&mut self, socket: u32, fd: i32) {
        let hdr: *const libc::msghdr = &self.udp_msghdrs[socket as usize];
        let e = opcode::RecvMsgMulti::new(Fd(fd), hdr, BGID_UDP)
            .build()
            .user_data(ops::pack(OP_UDP_RECV, 0, socket));
        self.push(e);
    }

    fn stop_udp(&mut self, socket: u32, _fd: i32) {
        self.cancel(ops::pack(OP_UDP_RECV, 0, socket));
    }

    #[inline]
    unsafe fn send_datagram(
        &mut self,
        _socket: u32,
        fd: i32,
        slot: u32,
        listener: u16,
        hdr: *const libc::msghdr,
    ) {
        let e = opcode::SendMsg::new(Fd(fd), hdr)
            .build()
            .user_data(ops::pack(OP_UDP_SEND, u32::from(listener), slot));
        self.push(e);
    }

    fn wake_peer(&mut self, to: usize, peer: &ShardShared) {
        let fd = peer.ring_fd.load(std::sync::atomic::Ordering::Acquire);
        if self.msg_ring && fd >= 0 {
            let e = opcode::MsgRingData::new(Fd(fd), 0, ops::pack(OP_MESH_WAKE, 0, 0), None)
                .build()
                .flags(squeue::Flags::SKIP_SUCCESS)
                .user_data(ops::pack(OP_MSG_RING, 0, to as u32));
            self.push_uncounted(e);
        } else {
            peer.wake();
        }
    }

    fn cancel_all(&mut self) {
        let e = opcode::AsyncCancel2::new(io_uring::types::CancelBuilder::any())
            .build()
            .user_data(ops::pack(OP_CANCEL, 0, 0));
        self.push(e);
    }

    fn wait_briefly(&mut self) {
        let ts = Timespec::new().nsec(10_000_000);
        let args = SubmitArgs::new().timespec(&ts);
        let _ = self.ring.submitter().submit_with_args(1, &args);
    }

    fn in_flight(&self) -> usize {
        self.inflight
    }

    fn finish(&mut self) {
        // Closing the ring's fd (when the shard is dropped) now ends the ring.
        self.enter.unregister();
    }
}

/// What a receive's completion says: bytes in a provided buffer, end of
/// stream, no buffer, cancelled, or an error (a buffer it still names goes
/// back to the ring).
#[inline]
fn received(res: i32, flags: u32, ring: &mut BufRing) -> RecvResult {
    match cqueue::buffer_select(flags) {
        Some(buf) if res >= 0 => RecvResult::Data {
            buf,
            len: res as u32,
        },
        Some(buf) => {
            ring.recycle(buf);
            RecvResult::Error(-res)
        }
        None if res == 0 => RecvResult::Eof,
        None if res == -libc::ENOBUFS => RecvResult::NoBuffers,
        None if res == -libc::ECANCELED => RecvResult::Cancelled,
        None => RecvResult::Error(-res),
    }
}

impl Buffers for UringBuffers {
    #[inline]
    fn tcp(&self, buf: u16, len: usize) -> &[u8] {
        self.tcp.filled(buf, len)
    }

    #[inline]
    fn tcp_mut(&mut self, buf: u16, len: usize) -> &mut [u8] {
        self.tcp.filled_mut(buf, len)
    }

    #[inline]
    fn recycle_tcp(&mut self, buf: u16) {
        self.tcp.recycle(buf);
    }

    fn tcp_ran_dry(&mut self) {
        self.tcp.ran_dry();
    }

    #[inline]
    fn datagram(&self, buf: u16, len: usize) -> Option<Received<'_>> {
        recvmsg::parse(self.udp.filled(buf, len))
    }

    #[inline]
    fn recycle_udp(&mut self, buf: u16) {
        self.udp.recycle(buf);
    }

    fn udp_ran_dry(&mut self) {
        self.udp.ran_dry();
    }

    #[inline]
    fn refill(&mut self) {
        self.tcp.refill();
        self.udp.refill();
    }
}
