//! A global allocator that counts every allocation and reallocation of the
//! process, except those of threads that opt out (a test's own TLS client,
//! whose library allocates per record: the server is what is measured).
//! Included by `tests/alloc.rs` and `tests/alloc_tls.rs` with `#[path]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Allocations counted so far.
pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // A const-initialised Cell<bool> needs no allocation and no destructor,
    // so the allocator may read it.
    static EXEMPT: Cell<bool> = const { Cell::new(false) };
}

/// Stops counting the calling thread's allocations.
#[allow(dead_code)]
pub fn exempt_this_thread() {
    EXEMPT.with(|e| e.set(true));
}

fn count() {
    if !EXEMPT.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts, then forwards to [`System`].
pub struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments, so
// `System`'s guarantees carry over; counting touches only an atomic and a
// thread-local flag.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;
