//! New TLS connections of one client thread (tls-handshake), closed loop:
//! each connector connects, handshakes, does one echo round trip, sends
//! close_notify, closes, and starts its next connection at once.
//!
//! Everything runs on the thread's io_uring, as in `tls_echo` (see there
//! why rustls drives well over it): the connect is an io_uring `Connect`,
//! the handshake flights are io_uring sends and multishot receives fed to
//! rustls. A connection's ring operations carry its connector's index and a
//! generation, so a late completion of a closed connection (the receive that
//! the close ends) is told apart from the next connection's.
//!
//! Latency is the handshake's: from the start of the connect to the moment
//! the client's handshake is done (the server's Finished processed). The
//! connections come from 64 loopback source addresses in turn, so that the
//! TIME_WAIT the client's closes leave does not run out of ports.
//!
//! `--handshakes resumed`: each connector has a session store of its own and
//! makes one full handshake (with an echo, so its tickets arrive) before the
//! run; every connection then resumes with a ticket its previous one got.

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use io_uring::{opcode, types};
use rustls::{ClientConfig, ClientConnection};
use socket2::{Domain, SockAddr, Socket, Type};

use super::driver::{Driver, KIND_MASK, KIND_RECV, KIND_SEND};
use super::{ClientReport, Clock, Schedule, ThreadLoad};
use crate::tls::{ClientTls, HandshakeKind};
use crate::wire::{self, Protocol, REQUEST_FLAGS};

/// A connect.
const KIND_CONNECT: u64 = 3 << 56;
/// How long after the end connections in progress are waited for.
const DRAIN: Duration = Duration::from_secs(1);
/// Loopback source addresses the connections come from, in turn.
const SOURCES: u32 = 64;
/// The first of them: 127.0.1.1.
const FIRST_SOURCE: u32 = u32::from_be_bytes([127, 0, 1, 1]);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection.
    Idle,
    /// The connect is in flight.
    Connecting,
    /// The handshake is under way.
    Handshaking,
    /// The handshake is done; the echo request is out.
    Echo,
    /// The reply came; close_notify is on its way out.
    Closing,
}

struct Connector {
    config: Arc<ClientConfig>,
    sock: Option<Socket>,
    tls: Option<ClientConnection>,
    phase: Phase,
    /// Generation of the current connection (in `user_data`).
    generation: u64,
    /// When the current connection's connect started.
    started: u64,
    /// Sequence number of the current connection's echo request.
    seq: u64,
    /// The echo reply so far.
    reply: Vec<u8>,
    /// Ciphertext handed to the kernel (stable until the send completes).
    sending: Vec<u8>,
    send_off: usize,
    send_busy: bool,
    /// Connections started, and the most this connector starts.
    made: u64,
    cap: u64,
}

impl Connector {
    /// Feeds ciphertext to the connection and moves it on: the
    /// handshake's end (timed, counted by kind, echo request queued), the
    /// reply (checked, close_notify queued). False when the connection broke.
    fn on_ciphertext(
        &mut self,
        plain: &mut Vec<u8>,
        mut data: &[u8],
        (size, protocol): (usize, Protocol),
        now: u64,
        report: &mut ClientReport,
    ) -> bool {
        let c = self;
        let Some(tls) = c.tls.as_mut() else {
            return false;
        };
        while !data.is_empty() {
            if tls.read_tls(&mut data).is_err() || tls.process_new_packets().is_err() {
                return false;
            }
            if c.phase == Phase::Handshaking && !tls.is_handshaking() {
                let counts = report.tls.get_or_insert_with(Default::default);
                match tls.handshake_kind() {
                    Some(rustls::HandshakeKind::Resumed) => counts.resumed += 1,
                    _ => counts.full += 1,
                }
                if report.recorder.record(c.started, c.started, now) {
                    report.completed += 1;
                }
                c.seq = c.made - 1;
                plain.clear();
                wire::encode(plain, c.seq, REQUEST_FLAGS, size);
                let _ = tls.writer().write_all(plain);
                c.phase = Phase::Echo;
            }
            let mut reader = tls.reader();
            loop {
                match reader.fill_buf() {
                    Ok([]) => return false,
                    Ok(bytes) => {
                        let n = bytes.len();
                        c.reply.extend_from_slice(bytes);
                        reader.consume(n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => return false,
                }
            }
            if c.phase == Phase::Echo && c.reply.len() >= size {
                if c.reply.len() == size && wire::verify(protocol, &c.reply, c.seq, size) {
                    report.received += 1;
                } else {
                    report.errors += 1;
                }
                tls.send_close_notify();
                c.phase = Phase::Closing;
            }
        }
        true
    }
}

/// One client thread's connectors and ring.
pub struct HandshakeThread {
    // Declared first: dropped (ring closed) before the buffers it points at.
    driver: Driver,
    live: Arc<AtomicU64>,
    conns: Vec<Connector>,
    /// The server's address, read by the kernel during connects.
    target: Box<SockAddr>,
    /// Which source address the next connection uses.
    next_source: u32,
    protocol: Protocol,
    size: usize,
    /// Plaintext of one request.
    plain: Vec<u8>,
}

fn tag(kind: u64, generation: u64, index: usize) -> u64 {
    kind | (generation & 0xff_ffff) << 32 | index as u64
}

fn untag(user_data: u64) -> (u64, u64, usize) {
    (
        user_data & KIND_MASK,
        (user_data >> 32) & 0xff_ffff,
        (user_data & 0xffff_ffff) as usize,
    )
}

/// One connection with blocking I/O: handshake, one echo round trip, close.
/// What `--handshakes resumed` runs once per connector before the run.
fn prime(
    target: SocketAddr,
    config: Arc<ClientConfig>,
    protocol: Protocol,
    size: usize,
) -> Result<()> {
    let mut sock = TcpStream::connect_timeout(&target, Duration::from_secs(3))
        .with_context(|| format!("connecting to {target}"))?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut conn = ClientTls::connect(config)?;
    let mut req = Vec::with_capacity(size);
    wire::encode(&mut req, 0, REQUEST_FLAGS, size);
    let mut reply = vec![0; size];
    {
        let mut s = rustls::Stream::new(&mut conn, &mut sock);
        s.write_all(&req)
            .and_then(|()| s.flush())
            .and_then(|()| s.read_exact(&mut reply))
            .with_context(|| format!("the first TLS connection to {target}"))?;
    }
    if !wire::verify(protocol, &reply, 0, size) {
        return Err(anyhow!(
            "the first TLS connection to {target}: a wrong echo"
        ));
    }
    conn.send_close_notify();
    let _ = conn.write_tls(&mut sock);
    Ok(())
}

impl HandshakeThread {
    pub(super) fn new(load: &ThreadLoad) -> Result<HandshakeThread> {
        let spec = &load.spec;
        let tls = load
            .tls
            .as_ref()
            .ok_or_else(|| anyhow!("tls-handshake needs the run's TLS settings"))?;
        let kind = spec
            .handshake
            .ok_or_else(|| anyhow!("tls-handshake needs its handshake kind"))?;
        let mut conns = Vec::with_capacity(load.conns);
        for i in 0..load.conns {
            let config = match kind {
                HandshakeKind::Full => tls.full(),
                HandshakeKind::Resumed => {
                    let c = tls.resuming()?;
                    prime(load.target, c.clone(), spec.protocol, spec.size)?;
                    c
                }
            };
            conns.push(Connector {
                config,
                sock: None,
                tls: None,
                phase: Phase::Idle,
                generation: 0,
                started: 0,
                seq: 0,
                reply: Vec::with_capacity(spec.size),
                sending: Vec::with_capacity(4096),
                send_off: 0,
                send_busy: false,
                made: 0,
                cap: load.caps[i],
            });
        }
        let bufs = (load.conns * 8).clamp(256, 4096).next_power_of_two() as u16;
        let driver = Driver::new(1024, bufs, 16 * 1024)?;
        Ok(HandshakeThread {
            driver,
            live: load.live.clone(),
            conns,
            target: Box::new(SockAddr::from(load.target)),
            next_source: (load.thread as u32 * 7) % SOURCES,
            protocol: spec.protocol,
            size: spec.size,
            plain: Vec::with_capacity(spec.size),
        })
    }

    pub(super) fn run(&mut self, clock: &Clock, schedule: &Schedule) -> Result<ClientReport> {
        let mut report = ClientReport::new(schedule);
        report.tls = Some(Default::default());
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
                let c = &self.conns[i];
                // A send still in flight holds `sending`: the next connection waits for it.
                if c.phase == Phase::Idle && !c.send_busy && open && c.made < c.cap {
                    self.start(i, now, schedule, &mut report);
                }
                self.flush(i);
                busy |= self.conns[i].phase != Phase::Idle;
            }
            let capped = self.conns.iter().all(|c| c.made >= c.cap);
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
        for i in 0..self.conns.len() {
            if self.conns[i].phase != Phase::Idle {
                report.unanswered += 1;
                self.close(i);
            }
        }
        Ok(report)
    }

    /// Starts connector `i`'s next connection: a socket from the next source
    /// address, and its connect.
    fn start(&mut self, i: usize, now: u64, schedule: &Schedule, report: &mut ClientReport) {
        let source = FIRST_SOURCE + self.next_source;
        self.next_source = (self.next_source + 1) % SOURCES;
        let c = &mut self.conns[i];
        c.made += 1;
        c.generation += 1;
        c.started = now;
        report.sent += 1;
        if now >= schedule.measure_ns {
            report.offered += 1;
        }
        let sock = match new_socket(source) {
            Ok(s) => s,
            Err(_) => {
                report.io_errors += 1;
                report.unanswered += 1;
                return;
            }
        };
        let sqe = opcode::Connect::new(
            types::Fd(sock.as_raw_fd()),
            self.target.as_ptr().cast(),
            self.target.len(),
        )
        .build()
        .user_data(tag(KIND_CONNECT, c.generation, i));
        c.sock = Some(sock);
        c.phase = Phase::Connecting;
        // SAFETY: the address is boxed in `self` and outlives the ring
        // (dropped first); the kernel holds its own reference to the socket
        // while the connect is in flight, even if `close` drops ours.
        unsafe { self.driver.push(&sqe) };
    }

    /// Hands what rustls has to send on connector `i` to the kernel, if no
    /// send is in flight; ends the connection once its close_notify is out.
    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.send_busy {
            return;
        }
        let (Some(tls), Some(sock)) = (c.tls.as_mut(), c.sock.as_ref()) else {
            return;
        };
        if !tls.wants_write() {
            if c.phase == Phase::Closing {
                self.close(i);
            }
            return;
        }
        let fd = sock.as_raw_fd();
        c.sending.clear();
        while tls.wants_write() {
            if tls.write_tls(&mut c.sending).is_err() {
                break;
            }
        }
        c.send_off = 0;
        c.send_busy = true;
        let sqe = opcode::Send::new(types::Fd(fd), c.sending.as_ptr(), c.sending.len() as u32)
            .build()
            .user_data(tag(KIND_SEND, c.generation, i));
        // SAFETY: `sending` is not touched until this send's completion clears
        // `send_busy` (no new connection starts before); the ring is dropped before it.
        unsafe { self.driver.push(&sqe) };
    }

    /// Ends connector `i`'s connection: shutting the socket down ends its
    /// receive (whose completion the next generation ignores); the close
    /// follows when the ring lets go of the socket.
    fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if let Some(sock) = c.sock.take() {
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
        c.tls = None;
        c.reply.clear();
        c.phase = Phase::Idle;
    }

    /// Connector `i`'s connection failed: counted, closed.
    fn fail(&mut self, i: usize, report: &mut ClientReport) {
        report.io_errors += 1;
        report.unanswered += 1;
        self.close(i);
    }

    fn handle_completions(&mut self, now: u64, report: &mut ClientReport) {
        let completions = std::mem::take(&mut self.driver.completions);
        for cqe in &completions {
            let (kind, generation, i) = untag(cqe.user_data);
            let current = self.conns[i].generation & 0xff_ffff == generation
                && self.conns[i].phase != Phase::Idle;
            if kind == KIND_RECV {
                self.on_recv(i, current, cqe.result, cqe.flags, now, report);
                continue;
            }
            // A send's buffer is free again whatever became of its connection.
            if kind == KIND_SEND && self.conns[i].generation & 0xff_ffff == generation {
                self.conns[i].send_busy = false;
            }
            if !current {
                continue;
            }
            match kind {
                KIND_CONNECT => self.on_connect(i, cqe.result, report),
                KIND_SEND => {
                    if cqe.result < 0 {
                        self.fail(i, report);
                        continue;
                    }
                    let c = &mut self.conns[i];
                    c.send_off += cqe.result as usize;
                    if c.send_off < c.sending.len() {
                        let rest = &c.sending[c.send_off..];
                        let fd = c.sock.as_ref().map_or(-1, |s| s.as_raw_fd());
                        let sqe =
                            opcode::Send::new(types::Fd(fd), rest.as_ptr(), rest.len() as u32)
                                .build()
                                .user_data(tag(KIND_SEND, c.generation, i));
                        c.send_busy = true;
                        // SAFETY: as in `flush`: `sending` stays put while busy.
                        unsafe { self.driver.push(&sqe) };
                    } else {
                        self.flush(i);
                    }
                }
                _ => {}
            }
        }
        self.driver.completions = completions;
    }

    fn on_connect(&mut self, i: usize, result: i32, report: &mut ClientReport) {
        if result < 0 {
            self.fail(i, report);
            return;
        }
        let tls = match ClientTls::connect(self.conns[i].config.clone()) {
            Ok(t) => t,
            Err(_) => {
                self.fail(i, report);
                return;
            }
        };
        let c = &mut self.conns[i];
        c.tls = Some(tls);
        c.phase = Phase::Handshaking;
        let fd = c.sock.as_ref().map_or(-1, |s| s.as_raw_fd());
        let user_data = tag(0, c.generation, i);
        self.driver.arm_recv(fd, user_data);
        self.flush(i);
    }

    fn on_recv(
        &mut self,
        i: usize,
        current: bool,
        result: i32,
        flags: u32,
        now: u64,
        report: &mut ClientReport,
    ) {
        let bid = (result > 0).then(|| Driver::buffer(flags)).flatten();
        if !current {
            if let Some(bid) = bid {
                self.driver.bufs.recycle(bid);
            }
            return;
        }
        if result == -libc::ENOBUFS {
            let c = &self.conns[i];
            let fd = c.sock.as_ref().map_or(-1, |s| s.as_raw_fd());
            self.driver.arm_recv(fd, tag(0, c.generation, i));
            return;
        }
        if result == 0 && self.conns[i].phase == Phase::Closing {
            // The server answered the close_notify by closing first: done.
            self.close(i);
            return;
        }
        if result <= 0 {
            self.fail(i, report);
            return;
        }
        let ok = match bid {
            Some(bid) => {
                let data = self.driver.bufs.filled(bid, result as usize);
                let shape = (self.size, self.protocol);
                let ok = self.conns[i].on_ciphertext(&mut self.plain, data, shape, now, report);
                self.driver.bufs.recycle(bid);
                ok
            }
            None => true,
        };
        if !ok {
            self.fail(i, report);
            return;
        }
        if !Driver::more(flags) && self.conns[i].phase != Phase::Idle {
            let c = &self.conns[i];
            let fd = c.sock.as_ref().map_or(-1, |s| s.as_raw_fd());
            self.driver.arm_recv(fd, tag(0, c.generation, i));
        }
        self.flush(i);
    }
}

/// A non-blocking TCP socket bound to `source` (IPv4, in host order), its
/// port left for the connect to choose (`IP_BIND_ADDRESS_NO_PORT`), so that
/// the port space is per destination and TIME_WAIT entries can be reused.
fn new_socket(source: u32) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM.nonblocking().cloexec(), None)?;
    s.set_nodelay(true)?;
    let one: libc::c_int = 1;
    // SAFETY: the pointer and length describe `one`, alive for the call.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let addr = SocketAddr::from((std::net::Ipv4Addr::from(source), 0));
    s.bind(&addr.into())?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_carry_kind_generation_and_index_and_generations_wrap_at_24_bits() {
        let t = tag(KIND_SEND, 0x0123_4567, 42);
        assert_eq!(untag(t), (KIND_SEND, 0x23_4567, 42));
        assert_eq!(untag(tag(KIND_CONNECT, 1, 0)), (KIND_CONNECT, 1, 0));
        assert_eq!(untag(tag(0, 5, 7)).0, 0);
    }
}
