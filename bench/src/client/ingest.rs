//! Full-speed one-way datagrams: as many as the sockets take, in batches.
//!
//! One datagram per system call cannot load a server core from one client
//! core on loopback: the sender's CPU also runs the kernel's receive path of
//! every datagram it sends (loopback delivers in the sender's context). So
//! each send operation carries `--batch` datagrams:
//!
//! * `gso`: every socket has `UDP_SEGMENT` set to the message size, and each
//!   io_uring send hands the kernel `batch` messages back to back; the kernel
//!   cuts them into separate datagrams. `--depth` sends are in flight per
//!   socket and one `io_uring_enter` submits the sends of every socket.
//! * `sendmmsg`: a `sendmmsg` call of `batch` datagrams per socket in turn.
//! * `uring`: one io_uring send per datagram (no batching inside the kernel).
//!
//! Every datagram carries its own sequence number and pattern payload, so the
//! server's count of received datagrams makes loss exact.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use anyhow::{anyhow, Result};
use io_uring::{opcode, types};

use super::driver::{Driver, KIND_MASK, KIND_SEND};
use super::{udp::udp_socket, ClientReport, Clock, Schedule, ThreadLoad};
use crate::config::IngestSend;
use crate::wire::{self, ONE_WAY_FLAGS};

/// `UDP_SEGMENT` (linux/udp.h): the GSO segment size of a UDP socket.
const UDP_SEGMENT: libc::c_int = 103;
/// How long after the end sends still in flight are waited for.
const DRAIN_NS: u64 = 1_000_000_000;

struct Sock {
    socket: UdpSocket,
    next_seq: u64,
    cap: u64,
    /// io_uring sends in flight.
    sending: usize,
}

/// One client thread's ingest sockets.
pub struct IngestThread {
    // Declared first: the ring is closed before the send buffers are freed.
    driver: Option<Driver>,
    /// Sent so far, for the progress line.
    live: std::sync::Arc<std::sync::atomic::AtomicU64>,
    socks: Vec<Sock>,
    /// Send buffers of `batch` messages each; `free` lists the idle ones.
    slots: Vec<Box<[u8]>>,
    /// (socket, datagrams, counted in the window) of each busy slot.
    slot_info: Vec<(u32, u32, bool)>,
    free: Vec<u32>,
    mode: IngestSend,
    size: usize,
    batch: usize,
    depth: usize,
}

fn set_gso(s: &UdpSocket, size: usize) -> Result<()> {
    let v = size as libc::c_int;
    // SAFETY: the pointer and length describe `v`, alive for the call.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(anyhow!(
            "setting UDP_SEGMENT (UDP GSO, Linux 4.18+) failed: {}; use --ingest-send sendmmsg",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

impl IngestThread {
    pub(super) fn new(load: &ThreadLoad) -> Result<IngestThread> {
        let spec = &load.spec;
        let mode = spec.ingest_send;
        let batch = if mode == IngestSend::Uring {
            1
        } else {
            spec.batch
        };
        let mut socks = Vec::with_capacity(load.conns);
        for i in 0..load.conns {
            let socket = udp_socket(load.target)?;
            match mode {
                IngestSend::Gso => set_gso(&socket, spec.size)?,
                IngestSend::Sendmmsg => socket.set_nonblocking(true)?,
                IngestSend::Uring => {}
            }
            socks.push(Sock {
                socket,
                next_seq: 0,
                cap: load.caps[i],
                sending: 0,
            });
        }
        let (driver, nslots) = match mode {
            IngestSend::Sendmmsg => (None, load.conns),
            _ => {
                let n = (load.conns * spec.depth).clamp(16, 4096);
                (Some(Driver::new(2048, 16, 64)?), n)
            }
        };
        let slots = (0..nslots)
            .map(|_| vec![0u8; spec.size * batch].into_boxed_slice())
            .collect();
        Ok(IngestThread {
            driver,
            live: load.live.clone(),
            socks,
            slots,
            slot_info: vec![(0, 0, false); nslots],
            free: (0..nslots as u32).rev().collect(),
            mode,
            size: spec.size,
            batch,
            depth: spec.depth,
        })
    }

    pub(super) fn run(&mut self, clock: &Clock, schedule: &Schedule) -> Result<ClientReport> {
        let mut report = ClientReport::new(schedule);
        while clock.now() < schedule.start_ns {
            std::hint::spin_loop();
        }
        if self.mode == IngestSend::Sendmmsg {
            self.run_sendmmsg(clock, schedule, &mut report);
        } else {
            self.run_uring(clock, schedule, &mut report);
        }
        report.offered = report.completed;
        Ok(report)
    }

    /// Writes the next `k` messages of socket `i` into `buf`.
    fn fill(&mut self, i: usize, slot: usize, k: usize) {
        let seq = self.socks[i].next_seq;
        let buf = &mut self.slots[slot];
        for (j, m) in buf[..k * self.size].chunks_exact_mut(self.size).enumerate() {
            wire::encode_into(m, seq + j as u64, ONE_WAY_FLAGS);
        }
    }

    fn run_uring(&mut self, clock: &Clock, schedule: &Schedule, report: &mut ClientReport) {
        let drain_end = schedule.end_ns + DRAIN_NS;
        loop {
            let now = clock.now();
            self.live
                .store(report.sent, std::sync::atomic::Ordering::Relaxed);
            let open = now < schedule.end_ns;
            let in_window = now >= schedule.measure_ns && open;
            if open {
                for i in 0..self.socks.len() {
                    while self.socks[i].sending < self.depth {
                        let left = self.socks[i].cap - self.socks[i].next_seq;
                        if left == 0 {
                            break;
                        }
                        let Some(slot) = self.free.pop() else { break };
                        let k = (self.batch as u64).min(left) as usize;
                        self.fill(i, slot as usize, k);
                        let s = &mut self.socks[i];
                        s.next_seq += k as u64;
                        s.sending += 1;
                        report.sent += k as u64;
                        if in_window {
                            report.completed += k as u64;
                        }
                        self.slot_info[slot as usize] = (i as u32, k as u32, in_window);
                        let buf = &self.slots[slot as usize];
                        let sqe = opcode::Send::new(
                            types::Fd(s.socket.as_raw_fd()),
                            buf.as_ptr(),
                            (k * self.size) as u32,
                        )
                        .build()
                        .user_data(KIND_SEND | slot as u64);
                        let driver = self.driver.as_mut().expect("uring modes have a ring");
                        // SAFETY: the slot's buffer is boxed (never moves) and is
                        // not reused until this send completes and frees the slot.
                        unsafe { driver.push(&sqe) };
                    }
                }
            }
            let busy = self.free.len() < self.slots.len();
            let capped = self.socks.iter().all(|s| s.next_seq >= s.cap);
            if ((!open || capped) && !busy) || now > drain_end {
                break;
            }
            let driver = self.driver.as_mut().expect("uring modes have a ring");
            driver.submit_and_wait(if open { 1_000_000 } else { 10_000_000 });
            let completions = std::mem::take(&mut driver.completions);
            for c in &completions {
                if c.user_data & KIND_MASK != KIND_SEND {
                    continue;
                }
                let slot = (c.user_data & !KIND_MASK) as usize;
                let (owner, k, counted) = self.slot_info[slot];
                self.socks[owner as usize].sending -= 1;
                self.free.push(slot as u32);
                if c.result < 0 {
                    // Nothing of a failed send left: it was never offered.
                    report.io_errors += 1;
                    report.sent -= k as u64;
                    if counted {
                        report.completed -= k as u64;
                    }
                }
            }
            if let Some(d) = self.driver.as_mut() {
                d.completions = completions;
            }
        }
    }

    fn run_sendmmsg(&mut self, clock: &Clock, schedule: &Schedule, report: &mut ClientReport) {
        let mut iov = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0
            };
            self.batch
        ];
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; self.batch];
        loop {
            let now = clock.now();
            self.live
                .store(report.sent, std::sync::atomic::Ordering::Relaxed);
            if now >= schedule.end_ns {
                break;
            }
            let in_window = now >= schedule.measure_ns;
            let mut any = false;
            for i in 0..self.socks.len() {
                let left = self.socks[i].cap - self.socks[i].next_seq;
                if left == 0 {
                    continue;
                }
                any = true;
                let k = (self.batch as u64).min(left) as usize;
                self.fill(i, i, k);
                let buf = &mut self.slots[i];
                for j in 0..k {
                    iov[j] = libc::iovec {
                        iov_base: buf[j * self.size..].as_mut_ptr().cast(),
                        iov_len: self.size,
                    };
                    msgs[j].msg_hdr.msg_iov = &mut iov[j];
                    msgs[j].msg_hdr.msg_iovlen = 1;
                }
                let fd = self.socks[i].socket.as_raw_fd();
                // SAFETY: each header points at one iovec of `iov`, each iovec
                // at `size` bytes of `buf`; all outlive the call.
                let r =
                    unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), k as u32, libc::MSG_DONTWAIT) };
                if r > 0 {
                    self.socks[i].next_seq += r as u64;
                    report.sent += r as u64;
                    if in_window {
                        report.completed += r as u64;
                    }
                } else if r < 0 {
                    let e = std::io::Error::last_os_error().raw_os_error();
                    if e != Some(libc::EAGAIN) && e != Some(libc::ENOBUFS) {
                        report.io_errors += 1;
                    }
                }
            }
            if !any {
                break;
            }
        }
    }
}
