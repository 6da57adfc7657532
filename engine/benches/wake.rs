//! Wake-up latency of a parked shard: MSG_RING versus an eventfd write.
//!
//! A "shard" thread blocks in `submit_and_wait(1)` on its own io_uring
//! (SINGLE_ISSUER + DEFER_TASKRUN, like a real shard) with a read armed on an
//! eventfd. A "sender" thread on the other CPU takes a timestamp and wakes it,
//! either by posting IORING_OP_MSG_RING from its own ring into the shard's
//! ring or by writing the eventfd. The shard takes a timestamp as soon as its
//! wait returns. Prints median, p99 and max over many rounds.
//!
//! Run: `cargo bench -p ringport-engine --bench wake`.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use io_uring::{opcode, types::Fd, IoUring};

const ROUNDS: u64 = 20_000;
const WAKE_TAG: u64 = 7;
const READ_TAG: u64 = 8;

fn pin(cpu: usize) {
    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
}

fn nanos(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

fn run(use_msg_ring: bool, cpus: (usize, usize)) -> Histogram<u64> {
    let epoch = Instant::now();
    // SAFETY: eventfd has no memory preconditions; the result is checked.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(efd >= 0, "eventfd");
    let ring_fd = Arc::new(AtomicI32::new(-1));
    let sent_at = Arc::new(AtomicU64::new(0));
    let woke = Arc::new(AtomicU64::new(0));
    let shard = {
        let (ring_fd, sent_at, woke) = (ring_fd.clone(), sent_at.clone(), woke.clone());
        std::thread::spawn(move || {
            pin(cpus.1);
            let mut ring: IoUring = IoUring::builder()
                .setup_single_issuer()
                .setup_defer_taskrun()
                .build(64)
                .expect("ring");
            ring_fd.store(ring.as_raw_fd(), Ordering::Release);
            let mut buf = 0u64;
            let mut hist = Histogram::<u64>::new(3).unwrap();
            let mut armed = false;
            for round in 0..ROUNDS {
                if !armed {
                    let e = opcode::Read::new(Fd(efd), (&mut buf as *mut u64).cast(), 8)
                        .build()
                        .user_data(READ_TAG);
                    // SAFETY: `buf` outlives the read, which completes before we return.
                    unsafe { ring.submission().push(&e).expect("sq") };
                    armed = true;
                }
                // Tell the sender we are about to park, then park.
                woke.store(round * 2 + 1, Ordering::Release);
                ring.submit_and_wait(1).expect("wait");
                let now = nanos(epoch);
                for cqe in ring.completion() {
                    if cqe.user_data() == READ_TAG {
                        armed = false;
                    }
                }
                let sent = sent_at.load(Ordering::Acquire);
                hist.record(now.saturating_sub(sent).max(1)).unwrap();
                woke.store(round * 2 + 2, Ordering::Release);
            }
            hist
        })
    };
    pin(cpus.0);
    let mut ring = IoUring::new(64).expect("sender ring");
    while ring_fd.load(Ordering::Acquire) < 0 {
        std::hint::spin_loop();
    }
    let target = ring_fd.load(Ordering::Acquire);
    for round in 0..ROUNDS {
        // Wait until the shard is (about to be) parked, then give it time to sleep.
        // The counter only grows; the shard may already be past the value
        // that says "woke", so compare with >=.
        while woke.load(Ordering::Acquire) < round * 2 + 1 {
            std::hint::spin_loop();
        }
        let until = Instant::now() + Duration::from_micros(50);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        sent_at.store(nanos(epoch), Ordering::Release);
        if use_msg_ring {
            let e = opcode::MsgRingData::new(Fd(target), 0, WAKE_TAG, None)
                .build()
                .user_data(1);
            // SAFETY: MSG_RING carries no buffer.
            unsafe { ring.submission().push(&e).expect("sq") };
            ring.submit().expect("submit");
            ring.completion().for_each(drop);
        } else {
            let one = 1u64;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd.
            unsafe { libc::write(efd, (&one as *const u64).cast(), 8) };
        }
        while woke.load(Ordering::Acquire) < round * 2 + 2 {
            std::hint::spin_loop();
        }
    }
    let hist = shard.join().unwrap();
    // SAFETY: the eventfd is ours and no longer used.
    unsafe { libc::close(efd) };
    hist
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let cpus = ringport_engine::cpus::allowed_cpus().unwrap_or_else(|_| vec![0]);
    let pair = (cpus[0], *cpus.last().unwrap_or(&0));
    println!(
        "wake-up latency of a parked shard, {ROUNDS} rounds, sender CPU {} -> shard CPU {}",
        pair.0, pair.1
    );
    for (name, msg_ring) in [("eventfd", false), ("msg_ring", true)] {
        let h = run(msg_ring, pair);
        println!(
            "{name:9} median {:6.1} us  p99 {:6.1} us  max {:7.1} us",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        );
    }
}
