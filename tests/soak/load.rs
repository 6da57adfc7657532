//! Echo clients for the soak: many idle-ish streams that echo one byte now
//! and then, and probe clients that time round trips.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::relay::connect_from;

/// Opens `count` streams to `to`, stream `i` from `sources[i % len]`, sends
/// one byte on each and reads it back: each is a served stream, not only
/// a handshake the kernel completed.
pub fn open_idle(to: SocketAddr, count: usize, sources: &[Ipv4Addr]) -> Vec<TcpStream> {
    let mut conns: Vec<TcpStream> = (0..count)
        .map(|i| connect_from(sources[i % sources.len()], to, None))
        .collect();
    for s in &mut conns {
        s.write_all(b"i").expect("the first byte of an idle stream");
    }
    let mut b = [0u8; 1];
    for (i, s) in conns.iter_mut().enumerate() {
        s.read_exact(&mut b)
            .unwrap_or_else(|e| panic!("the echo of idle stream {i}: {e}"));
        assert_eq!(&b, b"i");
    }
    conns
}

/// What [`trickle`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrickleReport {
    /// Bytes sent (one per write).
    pub sent: u64,
    /// Bytes echoed back, each equal to what was sent.
    pub echoed: u64,
}

/// Until `stop`, sends one byte on the next of `conns` in turn, `per_sec`
/// a second, and reads each echo back; then waits for the echoes still
/// owed. Returns the streams, still open, and the counts.
///
/// # Panics
///
/// On a closed stream, a wrong byte, or echoes missing 20 s after `stop`.
pub fn trickle(
    mut conns: Vec<TcpStream>,
    per_sec: u64,
    stop: Arc<AtomicBool>,
) -> (Vec<TcpStream>, TrickleReport) {
    for s in &conns {
        s.set_nonblocking(true).unwrap();
    }
    let mut owed = vec![false; conns.len()];
    let mut pending: Vec<usize> = Vec::new();
    let mut r = TrickleReport::default();
    let (start, mut cursor) = (Instant::now(), 0usize);
    let mut drain_until = None;
    loop {
        if drain_until.is_none() && stop.load(Ordering::Relaxed) {
            drain_until = Some(Instant::now() + Duration::from_secs(20));
        }
        if let Some(d) = drain_until {
            if pending.is_empty() {
                break;
            }
            assert!(
                Instant::now() < d,
                "{} idle streams never echoed their byte",
                pending.len()
            );
        } else {
            let due = (start.elapsed().as_secs_f64() * per_sec as f64) as u64;
            while r.sent < due {
                let i = cursor;
                cursor = (cursor + 1) % conns.len();
                if owed[i] {
                    // Its last byte is not back yet: it skips this round.
                    continue;
                }
                match conns[i].write(b"t") {
                    Ok(1) => {
                        owed[i] = true;
                        pending.push(i);
                        r.sent += 1;
                    }
                    Ok(n) => panic!("idle stream {i}: wrote {n} bytes of 1"),
                    Err(e) => panic!("idle stream {i}: {e}"),
                }
            }
        }
        let mut b = [0u8; 1];
        pending.retain(|&i| match conns[i].read(&mut b) {
            Ok(1) => {
                assert_eq!(&b, b"t", "idle stream {i} echoed another byte");
                owed[i] = false;
                r.echoed += 1;
                false
            }
            Ok(_) => panic!("the server closed idle stream {i}"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(e) => panic!("idle stream {i}: {e}"),
        });
        std::thread::sleep(Duration::from_millis(5));
    }
    for s in &conns {
        s.set_nonblocking(false).unwrap();
    }
    (conns, r)
}

/// Makes the calling thread SCHED_FIFO (priority 10), so that a probe's
/// own wake-up is not queued behind the load generator on the same CPU.
/// Returns false when not allowed (not root).
pub fn realtime() -> bool {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: `param` is a live sched_param; pid 0 is the calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// `rounds` echo round trips of `msg` bytes, one at a time over `conns` in
/// turn, one every `interval` (or at once when behind); returns each
/// round trip's time in nanoseconds.
pub fn probe(conns: &mut [TcpStream], rounds: usize, interval: Duration, msg: usize) -> Vec<u64> {
    let out = vec![0x42u8; msg];
    let mut back = vec![0u8; msg];
    let mut times = Vec::with_capacity(rounds);
    let start = Instant::now();
    for i in 0..rounds {
        let s = &mut conns[i % conns.len()];
        let t = Instant::now();
        s.write_all(&out).expect("probe write");
        s.read_exact(&mut back).expect("probe echo");
        times.push(t.elapsed().as_nanos() as u64);
        assert_eq!(back, out);
        let next = start + interval * (i as u32 + 1);
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    times
}

/// Percentiles of a set of round-trip times.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Round trips measured.
    pub count: usize,
    /// Median, µs.
    pub p50: f64,
    /// 99th percentile, µs.
    pub p99: f64,
    /// 99.9th percentile, µs.
    pub p999: f64,
    /// Largest, µs.
    pub max: f64,
}

impl Latency {
    /// The percentiles of `times` (nanoseconds).
    pub fn of(mut times: Vec<u64>) -> Latency {
        assert!(!times.is_empty());
        times.sort_unstable();
        let at = |q: f64| {
            let k = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1;
            times[k] as f64 / 1000.0
        };
        Latency {
            count: times.len(),
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: *times.last().unwrap() as f64 / 1000.0,
        }
    }
}
