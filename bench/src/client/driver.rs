//! The io_uring side of a client thread: ring, receive buffers, submission.

use anyhow::{anyhow, Result};
use io_uring::{cqueue, squeue, types, IoUring};
use ringport_engine::sys::bufring::BufRing;
use ringport_engine::sys::ring;

/// `user_data` tags: the kind of operation in the top byte, an index below.
pub const KIND_RECV: u64 = 1 << 56;
/// A send.
pub const KIND_SEND: u64 = 2 << 56;
/// Mask of the kind byte.
pub const KIND_MASK: u64 = 0xff << 56;
/// The driver's own periodic tick; never shown to callers.
const KIND_TICK: u64 = 0xfe << 56;

/// Waits at least this long are served by a periodic tick armed once, not by
/// a timeout on each wait: a timeout per wait programs (and cancels) a timer
/// every time, which on a VM exits to the hypervisor.
pub const TICK_NS: u64 = 5_000_000;

/// A completion copied out of the CQ.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    pub user_data: u64,
    pub result: i32,
    pub flags: u32,
}

/// One thread's ring and its provided receive buffers.
///
/// Field order matters: the ring is dropped (ending the buffer registration
/// and every operation) before the buffer mapping.
pub struct Driver {
    pub ring: IoUring,
    pub bufs: BufRing,
    pub completions: Vec<Completion>,
    /// The tick's period, read by the kernel while the tick is armed.
    tick: Box<types::Timespec>,
    tick_armed: bool,
    /// Plain waits go through the ring's registered fd (as in the engine's
    /// shards); the driver is made on the thread that uses it.
    enter: ring::Enter,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Without the registration, closing the ring's fd (the `ring` field,
        // dropped next) ends the ring and its operations before the buffer
        // mapping goes.
        self.enter.unregister();
    }
}

impl Driver {
    /// A ring of `entries` SQEs (CQ four times larger) and `count` receive
    /// buffers of `size` bytes in group 0.
    pub fn new(entries: u32, count: u16, size: u32) -> Result<Driver> {
        let r = ring::setup(entries, entries * 4).map_err(|e| anyhow!("{e}"))?;
        // A hot set of buffers that follows the load: receives land in
        // recently used (cached) memory, as in the engine's shards.
        let bufs = BufRing::adaptive(&r.ring.submitter(), 0, count, size)
            .map_err(|e| anyhow!("registering the client's buffer ring: {e}"))?;
        let enter = ring::Enter::new(&r.ring);
        Ok(Driver {
            enter,
            ring: r.ring,
            bufs,
            completions: Vec::with_capacity(entries as usize * 4),
            tick: Box::new(types::Timespec::new().nsec(TICK_NS as u32)),
            tick_armed: false,
        })
    }

    /// Queues `sqe`, submitting first if the SQ is full.
    ///
    /// # Safety
    /// Every buffer `sqe` points at must stay valid and unmoved until its completion.
    pub unsafe fn push(&mut self, sqe: &squeue::Entry) {
        loop {
            // SAFETY: the caller guarantees the buffers outlive the operation.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return;
            }
            let _ = self.ring.submit();
        }
    }

    /// Arms a multishot receive on `fd`, tagged with `index`.
    pub fn arm_recv(&mut self, fd: i32, index: u64) {
        let sqe = io_uring::opcode::RecvMulti::new(types::Fd(fd), self.bufs.bgid())
            .build()
            .user_data(KIND_RECV | index);
        // SAFETY: the receive writes only into provided buffers, which live in `self`.
        unsafe { self.push(&sqe) };
    }

    /// Publishes spare receive buffers, submits what is queued and waits for
    /// at least one completion or `timeout_ns`, then copies every completion
    /// into `self.completions`. Waits of [`TICK_NS`] or more are woken by the
    /// driver's periodic tick instead of a timer of their own, so they may end
    /// early (the first tick comes at most [`TICK_NS`] after the start), never
    /// late; callers loop and wait again.
    pub fn submit_and_wait(&mut self, timeout_ns: u64) {
        let ts = types::Timespec::new()
            .sec(timeout_ns / 1_000_000_000)
            .nsec((timeout_ns % 1_000_000_000) as u32);
        self.bufs.refill();
        // ETIME (timeout), EINTR and EBUSY are all "look again".
        if timeout_ns >= TICK_NS {
            // A long wait only needs waking now and then: the tick does it.
            if !self.tick_armed {
                let sqe = io_uring::opcode::Timeout::new(&*self.tick)
                    .flags(types::TimeoutFlags::MULTISHOT)
                    .build()
                    .user_data(KIND_TICK);
                // SAFETY: the timespec is boxed in `self` and outlives the ring's
                // use of it (the ring is dropped first, see the field order).
                unsafe { self.push(&sqe) };
                self.tick_armed = true;
            }
            let _ = self.enter.submit_and_wait(&mut self.ring, 1);
        } else {
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
        }
        self.completions.clear();
        for c in self.ring.completion() {
            if c.user_data() == KIND_TICK {
                // A multishot timeout stops when the CQ overflows: re-arm then.
                self.tick_armed &= cqueue::more(c.flags());
                continue;
            }
            if c.result() == -libc::ENOBUFS {
                // The hot set was too small; the receive is re-armed by its owner.
                self.bufs.ran_dry();
            }
            self.completions.push(Completion {
                user_data: c.user_data(),
                result: c.result(),
                flags: c.flags(),
            });
        }
    }

    /// Whether a receive completion leaves the multishot armed.
    pub fn more(flags: u32) -> bool {
        cqueue::more(flags)
    }

    /// The buffer a receive completion filled.
    pub fn buffer(flags: u32) -> Option<u16> {
        cqueue::buffer_select(flags)
    }
}
