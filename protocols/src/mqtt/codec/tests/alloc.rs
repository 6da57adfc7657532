//! Decoding a PUBLISH allocates nothing.
//!
//! This installs the global allocator of this crate's unit-test binary: it
//! forwards to [`System`] and counts the allocations of the threads that
//! ask for it (only this test's), so the other tests are unaffected. If
//! another module of the crate ever needs a global allocator in its tests,
//! the two must become one.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::*;

thread_local! {
    // Const-initialised, no destructor: the allocator may read it at any
    // point of a thread's life.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    }
}

/// Counts for threads that ask, then forwards to [`System`].
struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments, so
// `System`'s guarantees carry over; counting touches only thread-locals
// that never allocate.
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

/// How many allocations `f` made on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    COUNT.with(Cell::get)
}

#[test]
fn decoding_a_publish_allocates_nothing() {
    // Every PUBLISH property, repeated ones included, at QoS 1, in 5.0.
    let props = cat(&[
        &[0x01, 1, 0x02, 0, 0, 0, 60, 0x23, 0, 3],
        &[0x08, 0, 1, b'r', 0x09, 0, 1, b'x', 0x03, 0, 1, b't'],
        &[0x26, 0, 1, b'k', 0, 1, b'v', 0x26, 0, 1, b'k', 0, 1, b'w'],
        &[0x0b, 1, 0x0b, 0xac, 0x02],
    ]);
    let v5 = packet(
        0x32,
        &cat(&[&s(b"a/b"), &[0, 10, props.len() as u8], &props, b"payload"]),
    );
    let v311 = packet(0x3b, &cat(&[&s(b"a/b"), &[0, 10], b"payload"]));
    let mut pairs = 0;
    let mut ids = 0;
    let n = allocations(|| {
        for _ in 0..100 {
            let Ok(Decoded::Packet(Packet::Publish(p), _)) = decode(&v5, Some(Version::V5), MAX)
            else {
                panic!("not a PUBLISH")
            };
            pairs += p.props.user_properties.iter().count();
            ids += p.props.subscription_ids.iter().sum::<u32>();
            let Ok(Decoded::Packet(Packet::Publish(_), _)) =
                decode(&v311, Some(Version::V311), MAX)
            else {
                panic!("not a PUBLISH")
            };
        }
    });
    assert_eq!((pairs, ids), (200, 100 * 301));
    assert_eq!(n, 0, "allocations while decoding 200 PUBLISH packets");
    // The counter works: a SUBSCRIBE's filter list is a Vec.
    let sub = packet(0x82, &cat(&[&[0, 1], &s(b"t"), &[1]]));
    assert_eq!(
        allocations(|| {
            decode(&sub, Some(Version::V311), MAX).unwrap();
        }),
        1
    );
}

#[test]
fn encoding_a_publish_header_into_a_reserved_buffer_allocates_nothing() {
    let p = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "a/b",
        packet_id: 7,
        props: PublishProps {
            user_properties: UserProps::Pairs(&[("k", "v")]),
            subscription_ids: SubIds::List(&[3]),
            ..PublishProps::default()
        },
        payload: &[0; 1000],
    };
    let mut out = Vec::with_capacity(64);
    let n = allocations(|| {
        for _ in 0..100 {
            out.clear();
            encode_publish_header(&p, Version::V5, &mut out).unwrap();
        }
    });
    assert_eq!(n, 0);
    assert_eq!(
        out.len() + 1000,
        packet_len(&Packet::Publish(p), Version::V5).unwrap()
    );
}
