//! UDP sockets of one client thread: sequenced requests, or one-way ingest.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{Context as _, Result};
use io_uring::{opcode, types};

use super::driver::{Driver, KIND_MASK, KIND_RECV, KIND_SEND};
use super::{ClientReport, Clock, Schedule, ThreadLoad};
use crate::latency::{sleep_for, Pacer, ReplyKind, SeqWindow};
use crate::wire::{self, Protocol, ONE_WAY_FLAGS, REQUEST_FLAGS};

/// Socket buffer size asked for (capped by net.core.[rw]mem_max).
const SOCKBUF: usize = 4 << 20;
/// How often overdue requests are looked for.
const EXPIRE_EVERY_NS: u64 = 5_000_000;

struct Sock {
    socket: UdpSocket,
    window: SeqWindow,
    pacer: Pacer,
    cap: u64,
    /// One-way sends in flight on this socket.
    sending: usize,
}

/// One client thread's UDP sockets and ring.
pub struct UdpThread {
    // Declared first: the ring is closed before the send buffers are freed.
    driver: Driver,
    /// Sent so far, for the progress line.
    live: std::sync::Arc<std::sync::atomic::AtomicU64>,
    socks: Vec<Sock>,
    /// Send buffers, one datagram each; `free` lists the idle ones.
    slots: Vec<Box<[u8]>>,
    /// Which socket each busy slot belongs to.
    slot_owner: Vec<u32>,
    free: Vec<u32>,
    protocol: Protocol,
    size: usize,
    depth: usize,
    one_way: bool,
    closed_loop: bool,
    interval_ns: u64,
    timeout_ns: u64,
    slack_ns: u64,
}

pub(super) fn udp_socket(target: std::net::SocketAddr) -> Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::DGRAM,
        None,
    )?;
    let _ = s.set_recv_buffer_size(SOCKBUF);
    let _ = s.set_send_buffer_size(SOCKBUF);
    let local: std::net::SocketAddr = if target.is_ipv4() {
        "127.0.0.1:0".parse().expect("literal")
    } else {
        "[::1]:0".parse().expect("literal")
    };
    s.bind(&local.into())?;
    s.connect(&target.into())
        .with_context(|| format!("connecting a UDP socket to {target}"))?;
    Ok(s.into())
}

impl UdpThread {
    pub(super) fn new(load: &ThreadLoad) -> Result<UdpThread> {
        let spec = &load.spec;
        let one_way = spec.scenario.is_one_way();
        let mut socks = Vec::with_capacity(load.conns);
        for i in 0..load.conns {
            socks.push(Sock {
                socket: udp_socket(load.target)?,
                window: SeqWindow::new(if one_way { 2 } else { spec.depth * 8 + 64 }),
                pacer: Pacer::new(0, 0),
                cap: load.caps[i],
                sending: 0,
            });
        }
        let nslots = (load.conns * spec.depth).clamp(64, 8192);
        let slots: Vec<Box<[u8]>> = (0..nslots)
            .map(|_| vec![0u8; spec.size].into_boxed_slice())
            .collect();
        let bufs = (load.conns * spec.depth * 2)
            .clamp(256, 8192)
            .next_power_of_two() as u16;
        let buf_size = (spec.size as u32).max(2048);
        let driver = Driver::new(2048, bufs, buf_size)?;
        Ok(UdpThread {
            driver,
            live: load.live.clone(),
            socks,
            slot_owner: vec![0; nslots],
            free: (0..nslots as u32).rev().collect(),
            slots,
            protocol: spec.protocol,
            size: spec.size,
            depth: spec.depth,
            one_way,
            closed_loop: spec.rate == 0,
            interval_ns: load.interval_ns,
            timeout_ns: spec.reply_timeout.as_nanos() as u64,
            slack_ns: if spec.rate == 0 {
                0
            } else {
                spec.pace_slack.as_nanos() as u64
            },
        })
    }

    pub(super) fn run(&mut self, clock: &Clock, schedule: &Schedule) -> Result<ClientReport> {
        let mut report = ClientReport::new(schedule);
        let n = self.socks.len() as u64;
        for (i, s) in self.socks.iter_mut().enumerate() {
            let offset = self.interval_ns * i as u64 / n.max(1);
            s.pacer = Pacer::new(schedule.start_ns + offset, self.interval_ns);
        }
        if !self.one_way {
            for i in 0..self.socks.len() {
                let fd = self.socks[i].socket.as_raw_fd();
                self.driver.arm_recv(fd, i as u64);
            }
        }
        while clock.now() < schedule.start_ns {
            std::hint::spin_loop();
        }
        let drain = self
            .timeout_ns
            .max(Duration::from_millis(50).as_nanos() as u64);
        let drain_end = schedule.end_ns + drain;
        let mut next_expire = schedule.start_ns + EXPIRE_EVERY_NS;
        let mut in_window_sent = 0u64;
        loop {
            let now = clock.now();
            self.live.store(
                self.socks.iter().map(|s| s.window.sent()).sum(),
                std::sync::atomic::Ordering::Relaxed,
            );
            let open = now < schedule.end_ns;
            let mut next_due = u64::MAX;
            if open {
                for i in 0..self.socks.len() {
                    next_due =
                        next_due.min(self.fill(i, now, schedule, &mut report, &mut in_window_sent));
                }
            }
            if now >= next_expire && !self.one_way {
                let deadline = now.saturating_sub(self.timeout_ns);
                for s in &mut self.socks {
                    s.window.expire(deadline);
                }
                next_expire = now + EXPIRE_EVERY_NS;
            }
            let sends_busy = self.free.len() < self.slots.len();
            let pending = self.socks.iter().any(|s| s.window.pending() > 0);
            let capped = self.socks.iter().all(|s| s.window.sent() >= s.cap);
            if (!open || capped) && !sends_busy && (!pending || self.one_way) {
                break;
            }
            if now > drain_end {
                break;
            }
            let wait = if open {
                sleep_for(now, next_due, self.slack_ns, EXPIRE_EVERY_NS)
            } else {
                EXPIRE_EVERY_NS
            };
            self.driver.submit_and_wait(wait);
            let done = clock.now();
            self.handle_completions(done, &mut report);
        }
        for s in &self.socks {
            report.sent += s.window.sent();
            if !self.one_way {
                report.received += s.window.received;
                report.duplicates += s.window.duplicates;
                report.reordered += s.window.reordered;
                report.timed_out += s.window.timed_out;
                report.unanswered += s.window.lost();
            }
        }
        if self.one_way {
            report.completed = in_window_sent;
        }
        report.offered = in_window_sent;
        Ok(report)
    }

    /// Queues the sends due on socket `i`; returns when the next one is due
    /// (`u64::MAX`: not time-driven).
    fn fill(
        &mut self,
        i: usize,
        now: u64,
        schedule: &Schedule,
        _report: &mut ClientReport,
        in_window_sent: &mut u64,
    ) -> u64 {
        let s = &mut self.socks[i];
        loop {
            if s.window.sent() >= s.cap {
                return u64::MAX;
            }
            let inflight = if self.one_way {
                s.sending
            } else {
                s.window.pending()
            };
            if inflight >= self.depth {
                return u64::MAX;
            }
            let intended = if self.closed_loop {
                now
            } else if s.pacer.is_due(now) {
                s.pacer.take(now)
            } else {
                return s.pacer.next_due();
            };
            let Some(slot) = self.free.pop() else {
                return u64::MAX;
            };
            let seq = s.window.on_send(intended, now);
            let flags = if self.one_way {
                ONE_WAY_FLAGS
            } else {
                REQUEST_FLAGS
            };
            let buf = &mut self.slots[slot as usize];
            wire::encode_into(buf, seq, flags);
            self.slot_owner[slot as usize] = i as u32;
            s.sending += 1;
            if intended >= schedule.measure_ns && intended < schedule.end_ns {
                *in_window_sent += 1;
            }
            let sqe = opcode::Send::new(
                types::Fd(s.socket.as_raw_fd()),
                buf.as_ptr(),
                buf.len() as u32,
            )
            .build()
            .user_data(KIND_SEND | slot as u64);
            // SAFETY: the slot's buffer is boxed (never moves) and is not reused
            // until this send completes and returns the slot to `free`.
            unsafe { self.driver.push(&sqe) };
        }
    }

    fn handle_completions(&mut self, now: u64, report: &mut ClientReport) {
        let completions = std::mem::take(&mut self.driver.completions);
        for cqe in &completions {
            let idx = (cqe.user_data & !KIND_MASK) as usize;
            match cqe.user_data & KIND_MASK {
                KIND_RECV => {
                    if cqe.result < 0 {
                        if cqe.result != -libc::ENOBUFS {
                            // ECONNREFUSED when nothing listens: counted, re-armed.
                            report.io_errors += 1;
                        }
                        if !Driver::more(cqe.flags) {
                            let fd = self.socks[idx].socket.as_raw_fd();
                            self.driver.arm_recv(fd, idx as u64);
                        }
                        continue;
                    }
                    if let Some(bid) = Driver::buffer(cqe.flags) {
                        let data = self.driver.bufs.filled(bid, cqe.result as usize);
                        let s = &mut self.socks[idx];
                        match wire::sequence(data).map(|seq| (seq, s.window.on_reply(seq))) {
                            Some((
                                seq,
                                ReplyKind::Fresh {
                                    intended_ns,
                                    sent_ns,
                                },
                            )) => {
                                if !wire::verify(self.protocol, data, seq, self.size) {
                                    report.errors += 1;
                                } else if report.recorder.record(intended_ns, sent_ns, now) {
                                    report.completed += 1;
                                }
                            }
                            Some((seq, ReplyKind::Late)) => {
                                if !wire::verify(self.protocol, data, seq, self.size) {
                                    report.errors += 1;
                                }
                            }
                            Some((_, ReplyKind::Duplicate)) => {}
                            None => report.errors += 1,
                        }
                        self.driver.bufs.recycle(bid);
                    }
                    if !Driver::more(cqe.flags) {
                        let fd = self.socks[idx].socket.as_raw_fd();
                        self.driver.arm_recv(fd, idx as u64);
                    }
                }
                KIND_SEND => {
                    let owner = self.slot_owner[idx] as usize;
                    self.socks[owner].sending -= 1;
                    self.free.push(idx as u32);
                    if cqe.result < 0 {
                        report.io_errors += 1;
                    }
                }
                _ => {}
            }
        }
        self.driver.completions = completions;
    }
}
