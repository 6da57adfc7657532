//! A provided-buffer ring (IORING_REGISTER_PBUF_RING).
//!
//! The kernel picks a buffer from the ring when a receive completes, so an idle
//! connection holds no receive memory. A buffer leaves the ring when the kernel
//! fills it and comes back only through [`BufRing::recycle`], which the shard
//! calls once the plugin has consumed (or the engine has copied) its bytes: a
//! buffer handed to the kernel is never touched by the engine before its
//! completion arrives.
//!
//! The ring is a FIFO: a buffer given back now is filled again only after every
//! buffer already published. With all `count` buffers published, each receive
//! lands in memory untouched for `count` receives: cold cache lines and, at a
//! few KiB per buffer, a TLB miss per datagram (on a VM, a two-level page walk).
//! [`BufRing::adaptive`] therefore publishes only a *hot set* sized to what one
//! loop turn consumes and keeps the other buffers on a LIFO stack, so the same
//! few buffers are reused while the load allows. A turn that drains the hot set
//! (or ends with ENOBUFS, see [`BufRing::ran_dry`]) doubles it at once; it
//! shrinks back only after a window of quieter turns. It matters when other
//! work competes for the caches: with a compiler running, `sockperf
//! under-load` at 150k datagrams/s cost 13% (default flags) and 20%
//! (`--batch-delay-us 100`) less server CPU per message with 64 buffers than
//! with 2,048; on a quiet machine the two are the same (BENCHMARKS.md).

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;

/// Size of one `io_uring_buf` ring entry.
const ENTRY_SIZE: usize = 16;
/// Offset of the shared tail inside the first entry (`io_uring_buf_ring.tail`).
const TAIL_OFFSET: usize = 14;

/// An anonymous, page-aligned, zero-filled mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping with no address hint has no
        // preconditions; the result is checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(p.cast()).expect("mmap never returns null on success"),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe exactly the mapping made in `new`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// A registered ring of `count` buffers of `size` bytes each, in buffer group `bgid`.
pub struct BufRing {
    entries: Mapping,
    buffers: Mapping,
    bgid: u16,
    count: u16,
    size: u32,
    tail: u16,
    /// Buffers neither published nor lent out, most recently returned last.
    spare: Vec<u16>,
    /// Published buffers not yet returned through `recycle` (in the ring, or
    /// filled by the kernel and not yet given back).
    lent: u16,
    /// How many buffers to keep published: `count` unless adaptive.
    target: u16,
    /// Smallest hot set (adaptive rings only; `count` otherwise).
    floor: u16,
    /// Buffers returned since the last `refill`, and the largest such figure in
    /// the current window of turns.
    turn_used: u16,
    window_peak: u16,
    window_turns: u16,
}

/// Smallest hot set of an adaptive ring (capped at its buffer count).
const HOT_FLOOR: u16 = 32;
/// Turns over which an adaptive ring measures its peak before shrinking.
const HOT_WINDOW: u16 = 512;

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("bgid", &self.bgid)
            .field("count", &self.count)
            .field("size", &self.size)
            .field("target", &self.target)
            .field("lent", &self.lent)
            .finish()
    }
}

impl BufRing {
    /// Maps, registers and fills a ring. `count` must be a power of two in 1..=32768.
    /// Every buffer is published; [`recycle`](Self::recycle) publishes at once.
    pub fn new(submitter: &Submitter<'_>, bgid: u16, count: u16, size: u32) -> io::Result<BufRing> {
        BufRing::build(submitter, bgid, count, size, count)
    }

    /// Like [`new`](Self::new), but publishes only a hot set that follows the
    /// load (see the module docs). The owner calls [`refill`](Self::refill) once
    /// per loop turn, before it submits, and [`ran_dry`](Self::ran_dry) when a
    /// receive ends with ENOBUFS.
    pub fn adaptive(
        submitter: &Submitter<'_>,
        bgid: u16,
        count: u16,
        size: u32,
    ) -> io::Result<BufRing> {
        BufRing::build(submitter, bgid, count, size, HOT_FLOOR.min(count.max(1)))
    }

    fn build(
        submitter: &Submitter<'_>,
        bgid: u16,
        count: u16,
        size: u32,
        floor: u16,
    ) -> io::Result<BufRing> {
        if count == 0 || !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("buffer count {count} must be a power of two between 1 and 32768"),
            ));
        }
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer size must be > 0",
            ));
        }
        let entries = Mapping::new(count as usize * ENTRY_SIZE)?;
        let buffers = Mapping::new(count as usize * size as usize)?;
        // SAFETY: the entry mapping is count * 16 bytes, page aligned, and lives
        // in `self` for as long as the registration: the shard drops its ring
        // (which ends the registration) before its BufRings.
        unsafe {
            submitter.register_buf_ring_with_flags(entries.ptr.as_ptr() as u64, count, bgid, 0)?;
        }
        let mut ring = BufRing {
            entries,
            buffers,
            bgid,
            count,
            size,
            tail: 0,
            // Popped from the end: buffer 0 first.
            spare: (0..count).rev().collect(),
            lent: 0,
            target: floor,
            floor,
            turn_used: 0,
            window_peak: 0,
            window_turns: 0,
        };
        ring.top_up();
        Ok(ring)
    }

    /// The buffer group id to put in receive SQEs.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Bytes per buffer.
    pub fn buf_size(&self) -> u32 {
        self.size
    }

    /// Number of buffers.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// The first `len` bytes of buffer `bid`, as filled by the kernel.
    ///
    /// Only valid between the completion that handed `bid` out and the
    /// [`recycle`](Self::recycle) that returns it. Out-of-range values are clamped,
    /// so a corrupt completion cannot make this read outside the mapping.
    pub fn filled(&self, bid: u16, len: usize) -> &[u8] {
        // count is a power of two (checked in `build`): a mask, not a division.
        let bid = (bid & (self.count - 1)) as usize;
        let len = len.min(self.size as usize);
        // SAFETY: bid < count and len <= size, so the range lies inside the
        // buffer mapping; the kernel finished writing it before posting the CQE.
        unsafe {
            std::slice::from_raw_parts(self.buffers.ptr.as_ptr().add(bid * self.size as usize), len)
        }
    }

    /// [`filled`](Self::filled), writable: the buffer is ours (not published
    /// to the kernel) from its completion until [`recycle`](Self::recycle),
    /// so its bytes may be changed in place (TLS records are decrypted there).
    pub fn filled_mut(&mut self, bid: u16, len: usize) -> &mut [u8] {
        let bid = (bid & (self.count - 1)) as usize;
        let len = len.min(self.size as usize);
        // SAFETY: as in `filled`; the kernel does not touch a buffer it has
        // handed back until it is recycled, and `&mut self` makes this the
        // only view of it.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.buffers.ptr.as_ptr().add(bid * self.size as usize),
                len,
            )
        }
    }

    fn push(&mut self, bid: u16) {
        let slot = (self.tail & (self.count - 1)) as usize;
        let addr = self.buffers.ptr.as_ptr() as u64 + bid as u64 * self.size as u64;
        // SAFETY: slot < count, so the entry lies inside the entry mapping. The
        // kernel only reads entries between its head and our published tail,
        // and this slot is past the tail.
        unsafe {
            let e = self.entries.ptr.as_ptr().add(slot * ENTRY_SIZE);
            std::ptr::write_unaligned(e.cast::<u64>(), addr);
            std::ptr::write_unaligned(e.add(8).cast::<u32>(), self.size);
            std::ptr::write_unaligned(e.add(12).cast::<u16>(), bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail lives at offset 14 of the first entry, is 2-byte
        // aligned in a page-aligned mapping, and is shared with the kernel,
        // hence accessed atomically. Release orders the entry writes before it.
        let tail = unsafe { &*(self.entries.ptr.as_ptr().add(TAIL_OFFSET) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Gives buffer `bid` back: straight into the ring while fewer than the
    /// hot set are published (it is the most recently used buffer, so the
    /// best one to fill next), onto the spare stack otherwise.
    pub fn recycle(&mut self, bid: u16) {
        let bid = bid & (self.count - 1);
        self.lent = self.lent.saturating_sub(1);
        self.turn_used = self.turn_used.saturating_add(1);
        if self.lent < self.target {
            self.push(bid);
            self.lent += 1;
            self.publish();
        } else if self.spare.len() < self.count as usize {
            // The length check only guards against a corrupt completion naming
            // a buffer twice; the stack never grows past its capacity.
            self.spare.push(bid);
        }
    }

    /// Ends a loop turn of an adaptive ring: resizes the hot set from what the
    /// turn consumed and publishes spare buffers up to it.
    #[inline]
    pub fn refill(&mut self) {
        // A ring at its floor that this turn did not touch has nothing to
        // grow, shrink or publish (a shard's TCP ring while it serves UDP,
        // say); skipping it also leaves its shrink window alone, which only
        // matters above the floor.
        if self.turn_used == 0 && self.target == self.floor && self.lent >= self.target {
            return;
        }
        self.refill_turn();
    }

    fn refill_turn(&mut self) {
        let used = std::mem::take(&mut self.turn_used);
        // A turn that used half the hot set could have emptied it: grow now.
        if used > self.target / 2 {
            self.grow();
        }
        self.window_peak = self.window_peak.max(used);
        self.window_turns += 1;
        if self.window_turns >= HOT_WINDOW {
            // Shrink to twice the window's peak, never below the floor.
            let want = (self.window_peak.saturating_mul(2))
                .max(self.floor)
                .checked_next_power_of_two()
                .unwrap_or(self.count)
                .min(self.count);
            self.target = want.min(self.target).max(self.floor);
            self.window_peak = 0;
            self.window_turns = 0;
        }
        self.top_up();
    }

    /// A receive found the ring empty (ENOBUFS): the hot set was too small.
    pub fn ran_dry(&mut self) {
        self.grow();
        self.top_up();
    }

    /// Buffers currently kept published (the hot set).
    pub fn hot_set(&self) -> u16 {
        self.target
    }

    fn grow(&mut self) {
        self.target = self.target.saturating_mul(2).min(self.count);
    }

    /// Publishes spare buffers, most recently returned first, until the hot
    /// set is published.
    fn top_up(&mut self) {
        let mut pushed = false;
        while self.lent < self.target {
            let Some(bid) = self.spare.pop() else { break };
            self.push(bid);
            self.lent += 1;
            pushed = true;
        }
        if pushed {
            self.publish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::IoUring;

    /// The buffer ids published to the kernel and not yet consumed, in ring order.
    fn published(r: &BufRing, head: u16) -> Vec<u16> {
        (head..r.tail)
            .map(|i| {
                let slot = (i & (r.count - 1)) as usize;
                // SAFETY: slot < count lies inside the entry mapping.
                unsafe {
                    std::ptr::read_unaligned(
                        r.entries
                            .ptr
                            .as_ptr()
                            .add(slot * ENTRY_SIZE + 12)
                            .cast::<u16>(),
                    )
                }
            })
            .collect()
    }

    #[test]
    fn a_plain_ring_publishes_every_buffer() {
        let ring = IoUring::new(8).expect("io_uring");
        let r = BufRing::new(&ring.submitter(), 7, 64, 128).expect("ring");
        assert_eq!(r.hot_set(), 64);
        assert_eq!(published(&r, 0), (0..64).collect::<Vec<_>>());
    }

    #[test]
    fn an_adaptive_ring_publishes_a_hot_set_and_reuses_it() {
        let ring = IoUring::new(8).expect("io_uring");
        let mut r = BufRing::adaptive(&ring.submitter(), 7, 1024, 128).expect("ring");
        assert_eq!(r.hot_set(), HOT_FLOOR);
        assert_eq!(published(&r, 0), (0..HOT_FLOOR).collect::<Vec<_>>());
        // A light load: the kernel takes the first 4 buffers each turn and they
        // come straight back, so only the first HOT_FLOOR ids are ever used.
        let mut head = 0u16;
        for _ in 0..100 {
            let taken = published(&r, head)[..4].to_vec();
            head += 4;
            for b in taken {
                r.recycle(b);
            }
            r.refill();
        }
        let live = published(&r, head);
        assert_eq!(live.len(), HOT_FLOOR as usize);
        assert!(live.iter().all(|&b| b < HOT_FLOOR), "{live:?}");
        assert_eq!(r.hot_set(), HOT_FLOOR);
    }

    #[test]
    fn a_busy_turn_or_enobufs_grows_the_hot_set_and_quiet_turns_shrink_it() {
        let ring = IoUring::new(8).expect("io_uring");
        let mut r = BufRing::adaptive(&ring.submitter(), 7, 1024, 128).expect("ring");
        // The kernel drains all 32 and reports ENOBUFS.
        let mut head = 0u16;
        let taken = published(&r, head);
        head += taken.len() as u16;
        r.ran_dry();
        assert_eq!(r.hot_set(), 64);
        // ran_dry published 32 more at once (32 are still lent out).
        assert_eq!(published(&r, head).len(), 32);
        for b in taken {
            r.recycle(b);
        }
        // 32 used this turn is half of 64: not more, so no growth yet.
        r.refill();
        assert_eq!(r.hot_set(), 64);
        assert_eq!(published(&r, head).len(), 64);
        // A turn that uses 40 of 64 grows it to 128.
        let taken = published(&r, head)[..40].to_vec();
        head += 40;
        for b in taken {
            r.recycle(b);
        }
        r.refill();
        assert_eq!(r.hot_set(), 128);
        assert_eq!(published(&r, head).len(), 128);
        // Two full windows of turns using 5 buffers each (the first may still
        // hold the busy turn) shrink it to the floor: 2 x 5 rounded up to a
        // power of two is below it.
        for _ in 0..2 * HOT_WINDOW {
            let taken = published(&r, head)[..5].to_vec();
            head += 5;
            for b in taken {
                r.recycle(b);
            }
            r.refill();
        }
        assert_eq!(r.hot_set(), HOT_FLOOR);
        // Published buffers above the new hot set are not taken back; they
        // are used up first, and only HOT_FLOOR come back into the ring.
        for _ in 0..64 {
            let taken = published(&r, head)[..5].to_vec();
            head += 5;
            for b in taken {
                r.recycle(b);
            }
            r.refill();
        }
        assert_eq!(published(&r, head).len(), HOT_FLOOR as usize);
    }

    #[test]
    fn the_hot_set_never_exceeds_the_buffer_count() {
        let ring = IoUring::new(8).expect("io_uring");
        let mut r = BufRing::adaptive(&ring.submitter(), 7, 8, 128).expect("ring");
        assert_eq!(r.hot_set(), 8);
        r.ran_dry();
        r.ran_dry();
        assert_eq!(r.hot_set(), 8);
        // A buffer id the kernel never handed out twice cannot overfill the spares.
        for _ in 0..100 {
            r.recycle(3);
        }
        r.refill();
        assert!(r.spare.len() <= 8);
    }
}
