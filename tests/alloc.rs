//! Steady state allocates nothing: 100,000 echo round trips through a shard
//! after warm-up cause zero heap allocations in the whole process.
//!
//! This file holds a single test so that no other test thread runs in the
//! process while the allocations are counted.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use common::{connect, server, tcp};

/// Counts every allocation and reallocation of the process.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments, so
// `System`'s guarantees carry over; counting touches only an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
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

const WARM_UP: u64 = 10_000;
const ROUNDS: u64 = 100_000;

#[test]
fn echo_round_trips_allocate_nothing_after_warm_up() {
    let srv = server().shards(1).listen(tcp("echo", 1)).start();
    let mut s = connect(srv.addr(0));
    let mut request = [0u8; 64];
    let mut reply = [0u8; 64];
    let mut mismatches = 0u64;
    let mut round = |i: u64, s: &mut std::net::TcpStream| {
        request[..8].copy_from_slice(&i.to_le_bytes());
        s.write_all(&request).expect("write");
        s.read_exact(&mut reply).expect("read the echo");
        if reply != request {
            mismatches += 1;
        }
    };
    for i in 0..WARM_UP {
        round(i, &mut s);
    }

    // Window: only the shard and this loop run; neither may allocate.
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for i in 0..ROUNDS {
        round(WARM_UP + i, &mut s);
    }
    let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;

    assert_eq!(mismatches, 0, "echoes that differ from their request");
    assert_eq!(
        allocated, 0,
        "{ROUNDS} echo round trips allocated {allocated} times"
    );
    // The rounds went through the engine: one message per 64-byte batch.
    let t = srv.wait_totals("every round counted", |c| {
        c.bytes_out == (WARM_UP + ROUNDS) * 64
    });
    assert_eq!(t.msgs, WARM_UP + ROUNDS);
    assert_eq!(t.bytes_in, (WARM_UP + ROUNDS) * 64);
}
