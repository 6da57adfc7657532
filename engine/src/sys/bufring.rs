//! A provided-buffer ring (IORING_REGISTER_PBUF_RING).
//!
//! The kernel picks a buffer from the ring when a receive completes, so an idle
//! connection holds no receive memory. A buffer leaves the ring when the kernel
//! fills it and comes back only through [`BufRing::recycle`], which the shard
//! calls once the plugin has consumed (or the engine has copied) its bytes: a
//! buffer handed to the kernel is never touched by the engine before its
//! completion arrives.

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
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("bgid", &self.bgid)
            .field("count", &self.count)
            .field("size", &self.size)
            .finish()
    }
}

impl BufRing {
    /// Maps, registers and fills a ring. `count` must be a power of two in 1..=32768.
    pub fn new(submitter: &Submitter<'_>, bgid: u16, count: u16, size: u32) -> io::Result<BufRing> {
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
        };
        for bid in 0..count {
            ring.push(bid);
        }
        ring.publish();
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
        let bid = (bid % self.count) as usize;
        let len = len.min(self.size as usize);
        // SAFETY: bid < count and len <= size, so the range lies inside the
        // buffer mapping; the kernel finished writing it before posting the CQE.
        unsafe {
            std::slice::from_raw_parts(self.buffers.ptr.as_ptr().add(bid * self.size as usize), len)
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

    /// Gives buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        self.push(bid % self.count);
        self.publish();
    }
}
