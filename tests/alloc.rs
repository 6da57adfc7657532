//! Steady state allocates nothing: 100,000 echo round trips through a shard
//! after warm-up cause zero heap allocations in the whole process.
//!
//! This file holds a single test so that no other test thread runs in the
//! process while the allocations are counted.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::Ordering;

use common::{connect, server, tcp};

#[path = "common/counting.rs"]
mod counting;

use counting::ALLOCATIONS;

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
