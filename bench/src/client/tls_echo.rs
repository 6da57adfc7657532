//! TLS connections of one client thread (tls-echo): closed-loop requests
//! through rustls over the thread's io_uring.
//!
//! rustls's `ClientConnection` is sans-IO at heart: ciphertext goes in with
//! `read_tls` from any byte slice and comes out with `write_tls` into any
//! buffer. So the TLS client rides on the same ring, provided receive
//! buffers and batched sends as the plain TCP client: a receive completion's
//! buffer is fed to rustls and the plaintext it opens is checked like a TCP
//! reply; the requests of a turn are sealed at once and handed to one send.
//! No second event loop (epoll) and no extra thread are needed, and the
//! client's cost per message stays comparable with tcp-echo's.
//!
//! The connections are made and their handshakes (full) done with blocking
//! I/O before the run starts; only the record layer is measured.

use std::io::{BufRead as _, Write as _};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use io_uring::{opcode, types};
use rustls::ClientConnection;

use super::driver::{Driver, KIND_MASK, KIND_RECV, KIND_SEND};
use super::exchange::Exchange;
use super::{ClientReport, Clock, Schedule, ThreadLoad};
use crate::tls::ClientTls;
use crate::wire::Protocol;

/// How long after the end replies still in flight are waited for.
const DRAIN: Duration = Duration::from_secs(1);
/// Longest a setup handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

struct Conn {
    stream: TcpStream,
    tls: ClientConnection,
    /// Ciphertext handed to the kernel (stable until the send completes).
    sending: Vec<u8>,
    send_off: usize,
    send_busy: bool,
    ex: Exchange,
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

    /// Feeds ciphertext received: opens the records and checks the replies
    /// in them. Returns false when the connection is broken (a TLS error,
    /// or the server closed it).
    fn on_ciphertext(
        &mut self,
        mut data: &[u8],
        protocol: Protocol,
        size: usize,
        now: u64,
        report: &mut ClientReport,
    ) -> bool {
        while !data.is_empty() {
            if self.tls.read_tls(&mut data).is_err() || self.tls.process_new_packets().is_err() {
                return false;
            }
            let mut reader = self.tls.reader();
            loop {
                match reader.fill_buf() {
                    Ok([]) => return false,
                    Ok(plain) => {
                        let n = plain.len();
                        self.ex.on_bytes(plain, protocol, size, now, report);
                        reader.consume(n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => return false,
                }
            }
        }
        true
    }
}

/// One client thread's TLS connections and ring.
pub struct TlsEchoThread {
    // Declared first: dropped (ring closed) before the send buffers in `conns`.
    driver: Driver,
    /// Sent so far, for the progress line.
    live: Arc<AtomicU64>,
    conns: Vec<Conn>,
    /// Plaintext requests of one connection and turn, before rustls seals them.
    plain: Vec<u8>,
    protocol: Protocol,
    size: usize,
    depth: usize,
}

/// Connects to `load.target` and completes a handshake over blocking I/O.
fn connect(load: &ThreadLoad, tls: &ClientTls) -> Result<(TcpStream, ClientConnection)> {
    let mut stream = TcpStream::connect_timeout(&load.target, Duration::from_secs(3))
        .with_context(|| format!("connecting to {}", load.target))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut conn = ClientTls::connect(tls.full())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut stream)
            .with_context(|| format!("TLS handshake with {}", load.target))?;
    }
    while conn.wants_write() {
        conn.write_tls(&mut stream)?;
    }
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    Ok((stream, conn))
}

impl TlsEchoThread {
    pub(super) fn new(load: &ThreadLoad) -> Result<TlsEchoThread> {
        let spec = &load.spec;
        let tls = load
            .tls
            .as_ref()
            .ok_or_else(|| anyhow!("tls-echo needs the run's TLS settings"))?;
        let mut conns = Vec::with_capacity(load.conns);
        for i in 0..load.conns {
            let (stream, tls) = connect(load, tls)?;
            conns.push(Conn {
                stream,
                tls,
                sending: Vec::with_capacity(spec.depth * (spec.size + 64)),
                send_off: 0,
                send_busy: false,
                ex: Exchange::new(spec.depth, spec.size, load.caps[i]),
                dead: false,
            });
        }
        let bufs = (load.conns * 8).clamp(256, 4096).next_power_of_two() as u16;
        let driver = Driver::new(1024, bufs, 16 * 1024)?;
        Ok(TlsEchoThread {
            driver,
            live: load.live.clone(),
            conns,
            plain: Vec::with_capacity(spec.depth * spec.size),
            protocol: spec.protocol,
            size: spec.size,
            depth: spec.depth,
        })
    }

    pub(super) fn run(&mut self, clock: &Clock, schedule: &Schedule) -> Result<ClientReport> {
        let mut report = ClientReport::new(schedule);
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
            self.live.store(report.sent, Ordering::Relaxed);
            let open = now < schedule.end_ns;
            let mut busy = false;
            for i in 0..self.conns.len() {
                let c = &mut self.conns[i];
                if c.dead {
                    continue;
                }
                if open {
                    while c.ex.inflight.len() < self.depth && c.ex.may_send() {
                        c.ex.push_request(&mut self.plain, self.size, now, now, &mut report);
                        if now >= schedule.measure_ns {
                            report.offered += 1;
                        }
                    }
                    if !self.plain.is_empty() {
                        // No buffer limit (see ClientTls::connect): takes it all.
                        let _ = c.tls.writer().write_all(&self.plain);
                        self.plain.clear();
                    }
                }
                if !c.send_busy && c.tls.wants_write() {
                    c.sending.clear();
                    while c.tls.wants_write() {
                        if c.tls.write_tls(&mut c.sending).is_err() {
                            break;
                        }
                    }
                    c.send_off = 0;
                    c.send_busy = true;
                    let sqe = opcode::Send::new(
                        types::Fd(c.stream.as_raw_fd()),
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
            self.driver.submit_and_wait(10_000_000);
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
                        let c = &mut self.conns[idx];
                        let ok = c.on_ciphertext(data, self.protocol, self.size, now, report);
                        self.driver.bufs.recycle(bid);
                        if !ok {
                            c.fail(report);
                        }
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
