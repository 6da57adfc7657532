//! A bounded single-producer single-consumer ring.
//!
//! Each mesh ring has exactly one producer and one consumer, so it needs
//! neither the compare-and-swap nor the per-slot stamps of a multi-producer
//! queue. Head and tail live on separate cache lines; each side keeps a
//! private copy of the other side's index and reads the shared one only when
//! its copy says the ring is full (producer) or empty (consumer). The
//! producer makes its pushes visible with [`Producer::publish`], once per
//! batch, so a batch costs one write of the shared tail on the producer's
//! side and one read on the consumer's. The roles are types:
//! [`Producer`] and [`Consumer`] are `Send` but neither `Clone` nor `Sync`,
//! and their methods take `&mut self`, so safe code cannot break the
//! one-producer one-consumer contract.
//!
//! Measured against `crossbeam_queue::ArrayQueue` (which the design first
//! named) in `engine/benches/mesh.rs`: see BENCHMARKS.md.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Pads to two cache lines (adjacent-line prefetch pulls pairs on x86).
#[repr(align(128))]
#[derive(Debug, Default)]
struct Padded<T>(T);

struct Shared<T> {
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    /// Next slot the producer writes; written only by the producer.
    tail: Padded<AtomicUsize>,
    /// Next slot the consumer reads; written only by the consumer.
    head: Padded<AtomicUsize>,
}

// SAFETY: slots are written only by the single Producer (at indices in
// [head, tail + capacity)) and read only by the single Consumer (at indices in
// [head, tail)); the Release store of `tail` after a write and its Acquire
// load before a read order the slot contents, and likewise `head` for reuse.
// Values of T move between threads, hence T: Send.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above; the Shared itself may be dropped on either thread.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both handles are gone (this is the last Arc): drop what is still queued.
        let head = *self.head.0.get_mut();
        let tail = *self.tail.0.get_mut();
        for i in head..tail {
            // SAFETY: slots in [head, tail) were written and not yet read.
            unsafe { (*self.slots[i & self.mask].get()).assume_init_drop() };
        }
    }
}

/// The sending end.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    tail: usize,
    /// Last head seen; the ring is full only if it is full against this.
    head_seen: usize,
}

/// The receiving end.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    head: usize,
    /// Last tail seen.
    tail_seen: usize,
}

impl<T> std::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("tail", &self.tail)
            .finish()
    }
}

impl<T> std::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("head", &self.head)
            .finish()
    }
}

/// A ring of at least `capacity` slots (rounded up to a power of two).
///
/// # Panics
///
/// If `capacity` is 0.
pub fn ring<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    assert!(capacity > 0, "a ring needs at least one slot");
    let cap = capacity.next_power_of_two();
    let shared = Arc::new(Shared {
        slots: (0..cap)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect(),
        mask: cap - 1,
        tail: Padded(AtomicUsize::new(0)),
        head: Padded(AtomicUsize::new(0)),
    });
    (
        Producer {
            shared: shared.clone(),
            tail: 0,
            head_seen: 0,
        },
        Consumer {
            shared,
            head: 0,
            tail_seen: 0,
        },
    )
}

impl<T> Producer<T> {
    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Makes every value pushed so far visible to the consumer.
    #[inline]
    pub fn publish(&self) {
        self.shared.tail.0.store(self.tail, Ordering::Release);
    }

    /// Whether pushes are waiting for [`publish`](Self::publish).
    #[inline]
    pub fn unpublished(&self) -> bool {
        self.shared.tail.0.load(Ordering::Relaxed) != self.tail
    }

    /// Queues `value` (visible to the consumer after the next
    /// [`publish`](Self::publish)), or hands it back when the ring is full.
    #[inline]
    pub fn try_push(&mut self, value: T) -> Result<(), T> {
        let cap = self.shared.mask + 1;
        if self.tail.wrapping_sub(self.head_seen) == cap {
            self.head_seen = self.shared.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head_seen) == cap {
                return Err(value);
            }
        }
        let slot = &self.shared.slots[self.tail & self.shared.mask];
        // SAFETY: tail - head < capacity, so this slot is not readable by the
        // consumer (it is outside [head, tail)) and the Acquire load of head
        // above ordered the consumer's read of its previous value before us.
        unsafe { (*slot.get()).write(value) };
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }

    /// Messages queued and not yet taken (exact for the producer's own pushes).
    pub fn len(&self) -> usize {
        self.tail
            .wrapping_sub(self.shared.head.0.load(Ordering::Acquire))
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Consumer<T> {
    /// Whether a message is waiting (reads the producer's index).
    #[inline]
    pub fn has_pending(&self) -> bool {
        self.shared.tail.0.load(Ordering::Acquire) != self.head
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.shared
            .tail
            .0
            .load(Ordering::Acquire)
            .wrapping_sub(self.head)
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        !self.has_pending()
    }

    /// Takes one message.
    #[inline]
    pub fn try_pop(&mut self) -> Option<T> {
        let mut out = None;
        self.drain(1, |v| out = Some(v));
        out
    }

    /// Takes up to `limit` messages in order, passing each to `f`, freeing
    /// each slot for the producer as it goes. Returns how many.
    #[inline]
    pub fn drain(&mut self, limit: usize, mut f: impl FnMut(T)) -> usize {
        if self.head == self.tail_seen {
            self.tail_seen = self.shared.tail.0.load(Ordering::Acquire);
            if self.head == self.tail_seen {
                return 0;
            }
        }
        let n = self.tail_seen.wrapping_sub(self.head).min(limit);
        for _ in 0..n {
            let slot = &self.shared.slots[self.head & self.shared.mask];
            // SAFETY: head < tail_seen, so the producer wrote this slot and
            // published it with the Release store of tail we Acquire-loaded;
            // the value is read once and the slot is not reused before head moves.
            let value = unsafe { (*slot.get()).assume_init_read() };
            self.head = self.head.wrapping_add(1);
            // Publish progress before running user code, so a panic in `f`
            // cannot make the ring drop this value a second time.
            self.shared.head.0.store(self.head, Ordering::Release);
            f(value);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn fifo_full_and_wraparound() {
        let (mut p, mut c) = ring::<u32>(3);
        assert_eq!(p.capacity(), 4);
        for round in 0..10u32 {
            for i in 0..4 {
                assert_eq!(p.try_push(round * 10 + i), Ok(()));
            }
            assert_eq!(c.len(), 0, "nothing visible before publish");
            assert!(p.unpublished());
            p.publish();
            assert_eq!(p.try_push(99), Err(99), "full at capacity");
            assert_eq!(c.len(), 4);
            let mut got = Vec::new();
            assert_eq!(c.drain(3, |v| got.push(v)), 3);
            assert_eq!(c.try_pop(), Some(round * 10 + 3));
            assert_eq!(c.try_pop(), None);
            assert_eq!(got, vec![round * 10, round * 10 + 1, round * 10 + 2]);
        }
    }

    #[test]
    fn queued_values_are_dropped_with_the_ring() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct D;
        impl Drop for D {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::Relaxed);
            }
        }
        let (mut p, mut c) = ring::<D>(8);
        for _ in 0..5 {
            assert!(p.try_push(D).is_ok());
        }
        p.publish();
        drop(c.try_pop());
        assert_eq!(DROPS.load(Ordering::Relaxed), 1);
        drop(p);
        drop(c);
        assert_eq!(DROPS.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn two_threads_move_a_million_in_order() {
        let (mut p, mut c) = ring::<u64>(64);
        const N: u64 = 1_000_000;
        let t = std::thread::spawn(move || {
            let mut next = 0;
            while next < N {
                c.drain(17, |v| {
                    assert_eq!(v, next);
                    next += 1;
                });
            }
        });
        for i in 0..N {
            let mut v = i;
            while let Err(back) = p.try_push(v) {
                p.publish();
                v = back;
                std::hint::spin_loop();
            }
            if i % 7 == 0 {
                p.publish();
            }
        }
        p.publish();
        t.join().unwrap();
    }
}
