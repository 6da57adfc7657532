//! TCP connections of one client thread: pipelined requests, framed replies.

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{Context as _, Result};
use io_uring::{opcode, types};

use super::driver::{Driver, KIND_MASK, KIND_RECV, KIND_SEND};
use super::exchange::Exchange;
use super::{ClientReport, Clock, Schedule, ThreadLoad};
use crate::latency::{sleep_for, Pacer};
use crate::wire::Protocol;

/// How long after the end replies still in flight are waited for.
const DRAIN: Duration = Duration::from_secs(1);

struct Conn {
    stream: TcpStream,
    /// Bytes queued for the next send.
    out: Vec<u8>,
    /// Bytes handed to the kernel (stable until the send completes).
    sending: Vec<u8>,
    send_off: usize,
    send_busy: bool,
    ex: Exchange,
    pacer: Pacer,
    dead: bool,
}

impl Conn {
    /// The connection failed: counted once, its requests in flight unanswered.
    fn fail(&mut self, report: &mut ClientReport) {
        if !self.dead {
            self.dead = true;
            report.io_errors += 1;
            report.unanswered += self.ex.inflight.len() as u64;
            self.ex.inflight.clear();
        }
    }
}

/// One client thread's TCP connections and ring.
pub struct TcpThread {
    // Declared first: dropped (ring closed) before the send buffers in `conns`.
    driver: Driver,
    /// Sent so far, for the progress line.
    live: std::sync::Arc<std::sync::atomic::AtomicU64>,
    conns: Vec<Conn>,
    protocol: Protocol,
    size: usize,
    depth: usize,
    closed_loop: bool,
    interval_ns: u64,
    slack_ns: u64,
}

impl TcpThread {
    pub(super) fn new(load: &ThreadLoad) -> Result<TcpThread> {
        let spec = &load.spec;
        let mut conns = Vec::with_capacity(load.conns);
        for i in 0..load.conns {
            let stream = TcpStream::connect_timeout(&load.target, Duration::from_secs(3))
                .with_context(|| format!("connecting to {}", load.target))?;
            stream.set_nodelay(true)?;
            conns.push(Conn {
                stream,
                out: Vec::with_capacity(spec.size * spec.depth),
                sending: Vec::with_capacity(spec.size * spec.depth),
                send_off: 0,
                send_busy: false,
                ex: Exchange::new(spec.depth, spec.size, load.caps[i]),
                pacer: Pacer::new(0, 0),
                dead: false,
            });
        }
        let bufs = (load.conns * 8).clamp(256, 4096).next_power_of_two() as u16;
        let driver = Driver::new(1024, bufs, 16 * 1024)?;
        Ok(TcpThread {
            driver,
            live: load.live.clone(),
            conns,
            protocol: spec.protocol,
            size: spec.size,
            depth: spec.depth,
            closed_loop: spec.rate == 0,
            interval_ns: load.interval_ns,
            slack_ns: spec.pace_slack.as_nanos() as u64,
        })
    }

    pub(super) fn run(&mut self, clock: &Clock, schedule: &Schedule) -> Result<ClientReport> {
        let mut report = ClientReport::new(schedule);
        let n = self.conns.len() as u64;
        for (i, c) in self.conns.iter_mut().enumerate() {
            // Spread the connections' schedules over one interval.
            let offset = self.interval_ns * i as u64 / n.max(1);
            c.pacer = Pacer::new(schedule.start_ns + offset, self.interval_ns);
        }
        for i in 0..self.conns.len() {
            let fd = self.conns[i].stream.as_raw_fd();
            self.driver.arm_recv(fd, i as u64);
        }
        while clock.now() < schedule.start_ns {
            std::hint::spin_loop();
        }
        let drain_end = schedule.end_ns + DRAIN.as_nanos() as u64;
        loop {
            let now = clock.now();
            self.live
                .store(report.sent, std::sync::atomic::Ordering::Relaxed);
            let open = now < schedule.end_ns;
            let mut next_due = u64::MAX;
            let mut busy = false;
            for i in 0..self.conns.len() {
                let c = &mut self.conns[i];
                if c.dead {
                    continue;
                }
                if open {
                    while c.ex.inflight.len() < self.depth && c.ex.may_send() {
                        let intended = if self.closed_loop {
                            now
                        } else if c.pacer.is_due(now) {
                            c.pacer.take(now)
                        } else {
                            break;
                        };
                        c.ex.push_request(&mut c.out, self.size, intended, now, &mut report);
                        if intended >= schedule.measure_ns && intended < schedule.end_ns {
                            report.offered += 1;
                        }
                    }
                    if !self.closed_loop && c.ex.may_send() {
                        next_due = next_due.min(c.pacer.next_due());
                    }
                }
                if !c.send_busy && !c.out.is_empty() {
                    std::mem::swap(&mut c.out, &mut c.sending);
                    c.send_off = 0;
                    c.send_busy = true;
                    let fd = c.stream.as_raw_fd();
                    let sqe = opcode::Send::new(
                        types::Fd(fd),
                        c.sending.as_ptr(),
                        c.sending.len() as u32,
                    )
                    .build()
                    .user_data(KIND_SEND | i as u64);
                    // SAFETY: `sending` is not touched until this send's
                    // completion clears `send_busy`; the ring is dropped before it.
                    unsafe { self.driver.push(&sqe) };
                }
                busy |= !c.ex.inflight.is_empty() || c.send_busy;
            }
            let capped = self.conns.iter().all(|c| c.dead || !c.ex.may_send());
            if (!open || capped) && !busy {
                break;
            }
            if now > drain_end {
                break;
            }
            let wait = if open && !self.closed_loop {
                sleep_for(now, next_due, self.slack_ns, 10_000_000)
            } else {
                10_000_000
            };
            self.driver.submit_and_wait(wait);
            let done = clock.now();
            self.handle_completions(done, &mut report);
        }
        for c in &mut self.conns {
            report.unanswered += c.ex.inflight.len() as u64;
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        Ok(report)
    }

    fn handle_completions(&mut self, now: u64, report: &mut ClientReport) {
        let completions = std::mem::take(&mut self.driver.completions);
        for cqe in &completions {
            let idx = (cqe.user_data & !KIND_MASK) as usize;
            match cqe.user_data & KIND_MASK {
                KIND_RECV => {
                    if cqe.result == -libc::ENOBUFS {
                        let fd = self.conns[idx].stream.as_raw_fd();
                        self.driver.arm_recv(fd, idx as u64);
                        continue;
                    }
                    if cqe.result <= 0 {
                        self.conns[idx].fail(report);
                        continue;
                    }
                    if let Some(bid) = Driver::buffer(cqe.flags) {
                        let data = self.driver.bufs.filled(bid, cqe.result as usize);
                        self.conns[idx]
                            .ex
                            .on_bytes(data, self.protocol, self.size, now, report);
                        self.driver.bufs.recycle(bid);
                    }
                    if !Driver::more(cqe.flags) && !self.conns[idx].dead {
                        let fd = self.conns[idx].stream.as_raw_fd();
                        self.driver.arm_recv(fd, idx as u64);
                    }
                }
                KIND_SEND => {
                    let c = &mut self.conns[idx];
                    if cqe.result < 0 {
                        c.send_busy = false;
                        c.fail(report);
                        continue;
                    }
                    c.send_off += cqe.result as usize;
                    if c.send_off < c.sending.len() {
                        let rest = &c.sending[c.send_off..];
                        let sqe = opcode::Send::new(
                            types::Fd(c.stream.as_raw_fd()),
                            rest.as_ptr(),
                            rest.len() as u32,
                        )
                        .build()
                        .user_data(KIND_SEND | idx as u64);
                        // SAFETY: as for the first send: `sending` stays put while busy.
                        unsafe { self.driver.push(&sqe) };
                    } else {
                        c.sending.clear();
                        c.send_busy = false;
                    }
                }
                _ => {}
            }
        }
        self.driver.completions = completions;
    }
}
