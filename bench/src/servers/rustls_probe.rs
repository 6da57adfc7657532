//! The rustls probe: the least a server can do per TLS connection here, to
//! set the floor the other TLS targets' CPU per handshake is measured
//! against (TLS scenarios only).
//!
//! The same rustls `ServerConfig` as the tokio-rustls target, built by the
//! same function (aws-lc-rs, TLS 1.3 only, the run's certificate and key,
//! session tickets from rustls's `Ticketer`, rustls's default of two tickets
//! per handshake), so the cryptography of every handshake is the same work.
//! Around it, nothing but what a connection needs:
//!
//! * one thread pinned to the first server CPU, one level-triggered epoll
//!   instance, a nonblocking listening socket;
//! * accept4 (already nonblocking) until EAGAIN on every listener event,
//!   `TCP_NODELAY` as every target sets it, a rustls `ServerConnection`;
//! * per readiness event one `read_tls` (one `recv`), `process_new_packets`,
//!   the plaintext echoed (or sockperf frames reflected) through the same
//!   connection, and what rustls queued written with `write_tls` (one
//!   `writev` for a whole flight);
//! * at end of stream, or the client's close_notify, the socket is closed
//!   (no close_notify back: the client has shut its side down by then).
//!
//! Epoll rather than blocking accept with one connection at a time: the
//! harness's tls-handshake keeps 16 connectors in flight and tls-echo 64
//! connections open at once; a server serving one connection at a time
//! would stall the others behind each round trip (and block on every
//! `recv`, paying a sleep and a wake-up per flight), measuring its own
//! waits rather than the floor.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use rustls::{ServerConfig, ServerConnection};

use super::{sockperf_stream, Server, ServerSpec};
use crate::cpu::CpuSource;
use crate::wire::Protocol;

/// Thread name (for CPU accounting; no other target's starts with it).
const NAME: &str = "bn-probe";
/// epoll data of the listening socket.
const LISTENER: u64 = u64::MAX;
/// epoll events per wait.
const EVENTS: usize = 256;
/// Plaintext moved out of rustls at a time.
const SCRATCH: usize = 64 * 1024;

struct Probe {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub(super) fn start(spec: &ServerSpec) -> Result<Box<dyn Server>> {
    let files = spec
        .tls
        .as_ref()
        .ok_or_else(|| anyhow!("rustls-probe needs the run's certificates"))?;
    let config = Arc::new(super::tokio_rustls::server_config(files)?);
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let ep = new_epoll()?;
    ctl(&ep, libc::EPOLL_CTL_ADD, listener.as_raw_fd(), IN, LISTENER)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (cpu, protocol, flag) = (spec.cpus[0], spec.protocol, stop.clone());
    let thread = std::thread::Builder::new()
        .name(NAME.into())
        .spawn(move || {
            core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
            Loop {
                ep,
                listener,
                config,
                protocol,
                conns: Vec::new(),
                free: Vec::new(),
                scratch: vec![0; SCRATCH],
                out: Vec::new(),
            }
            .run(&flag);
        })
        .context("spawning the rustls-probe server thread")?;
    Ok(Box::new(Probe {
        addr,
        stop,
        thread: Some(thread),
    }))
}

impl Server for Probe {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn cpu(&self) -> CpuSource {
        CpuSource::ThreadsNamed(vec![NAME.into()])
    }
    fn datagrams_received(&self) -> Option<u64> {
        None
    }
    fn stop(mut self: Box<Self>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;

fn new_epoll() -> Result<OwnedFd> {
    // SAFETY: epoll_create1 has no memory preconditions.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(anyhow!(
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: ep is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ep) })
}

fn ctl(ep: &OwnedFd, op: i32, fd: i32, events: u32, data: u64) -> std::io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: ev is a valid epoll_event for the duration of the call.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One connection: its socket and its rustls state.
struct Conn {
    sock: TcpStream,
    tls: ServerConnection,
    /// Sockperf: plaintext of a frame not yet whole.
    partial: Vec<u8>,
    /// The socket is watched for writability (rustls holds unsent records),
    /// not readability.
    blocked: bool,
}

/// What to do with a connection after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Keep,
    Close,
}

/// The server thread's state.
struct Loop {
    ep: OwnedFd,
    listener: TcpListener,
    config: Arc<ServerConfig>,
    protocol: Protocol,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Plaintext taken out of a connection before it goes back in.
    scratch: Vec<u8>,
    /// Sockperf replies of one read.
    out: Vec<u8>,
}

impl Loop {
    fn run(mut self, stop: &AtomicBool) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: events has room for EVENTS entries.
            let n = unsafe {
                libc::epoll_wait(self.ep.as_raw_fd(), events.as_mut_ptr(), EVENTS as i32, 50)
            };
            for ev in events.iter().take(n.max(0) as usize) {
                let (key, flags) = (ev.u64, ev.events);
                if key == LISTENER {
                    self.accept();
                } else {
                    self.event(key as usize, flags);
                }
            }
        }
    }

    /// Accepts every connection waiting.
    fn accept(&mut self) {
        loop {
            // SAFETY: null address pointers are allowed by accept4.
            let fd = unsafe {
                libc::accept4(
                    self.listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                return;
            }
            // SAFETY: accept4 returned a fresh descriptor, owned by nobody else.
            let sock = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
            let _ = sock.set_nodelay(true);
            let Ok(mut tls) = ServerConnection::new(self.config.clone()) else {
                continue;
            };
            // The loop bounds what it queues itself: it reads nothing while
            // rustls holds records the socket did not take.
            tls.set_buffer_limit(None);
            let idx = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            if ctl(&self.ep, libc::EPOLL_CTL_ADD, fd, IN, idx as u64).is_err() {
                self.free.push(idx);
                continue;
            }
            self.conns[idx] = Some(Conn {
                sock,
                tls,
                partial: Vec::new(),
                blocked: false,
            });
        }
    }

    /// Serves a readiness event of connection `idx`.
    fn event(&mut self, idx: usize, flags: u32) {
        let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let next = if c.blocked {
            flush(c)
        } else if flags & (IN | (libc::EPOLLHUP | libc::EPOLLERR) as u32) != 0 {
            match read(c, self.protocol, &mut self.scratch, &mut self.out) {
                Next::Keep => flush(c),
                Next::Close => Next::Close,
            }
        } else {
            Next::Keep
        };
        if next == Next::Close {
            // Closing the socket takes it out of the epoll set.
            self.conns[idx] = None;
            self.free.push(idx);
            return;
        }
        // Readable again once rustls holds nothing unsent; writable until then.
        let blocked = c.tls.wants_write();
        if blocked != c.blocked {
            c.blocked = blocked;
            let events = if blocked { OUT } else { IN };
            let fd = c.sock.as_raw_fd();
            if ctl(&self.ep, libc::EPOLL_CTL_MOD, fd, events, idx as u64).is_err() {
                self.conns[idx] = None;
                self.free.push(idx);
            }
        }
    }
}

/// One `recv` into rustls, the records processed, the plaintext answered.
fn read(c: &mut Conn, protocol: Protocol, scratch: &mut [u8], out: &mut Vec<u8>) -> Next {
    match c.tls.read_tls(&mut c.sock) {
        Ok(0) => return Next::Close,
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Next::Keep,
        Err(_) => return Next::Close,
    }
    let state = match c.tls.process_new_packets() {
        Ok(s) => s,
        Err(_) => {
            // rustls queued its alert: one try to send it.
            let _ = c.tls.write_tls(&mut c.sock);
            return Next::Close;
        }
    };
    let mut left = state.plaintext_bytes_to_read();
    while left > 0 {
        let n = match c.tls.reader().read(scratch) {
            Ok(n) if n > 0 => n,
            _ => return Next::Close,
        };
        left -= n;
        let reply = match protocol {
            Protocol::Echo => &scratch[..n],
            Protocol::Sockperf => {
                c.partial.extend_from_slice(&scratch[..n]);
                out.clear();
                let Some(used) = sockperf_stream(&c.partial, out) else {
                    return Next::Close;
                };
                c.partial.drain(..used);
                &out[..]
            }
        };
        if !reply.is_empty() && c.tls.writer().write_all(reply).is_err() {
            return Next::Close;
        }
    }
    if state.peer_has_closed() {
        return Next::Close;
    }
    Next::Keep
}

/// Writes what rustls has queued until it is all out or the socket is full.
fn flush(c: &mut Conn) -> Next {
    while c.tls.wants_write() {
        match c.tls.write_tls(&mut c.sock) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => return Next::Close,
        }
    }
    Next::Keep
}
