//! One admin connection as a non-blocking state machine: read the request
//! head (through TLS when the endpoint has it), answer, close. The event
//! loop ([`super::event_loop`]) calls [`Conn::advance`] when the socket is
//! ready and drops the connection at its deadline; nothing here blocks or
//! sleeps.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use rustls::ServerConnection;

use super::request::{self, Method, RequestError, MAX_HEAD};
use super::{AdminResult, AdminTls, Handler};

/// The first byte of a TLS handshake record: what a ClientHello starts with.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// After the answer, how long the client gets to close its side before the
/// socket is closed anyway. Closing while its bytes are still unread would
/// send a reset, which can destroy the answer before the client reads it.
const LINGER: Duration = Duration::from_millis(500);
/// Bytes read from one socket per wake-up, so one client cannot keep the
/// loop busy.
const READ_BUDGET: usize = 64 * 1024;

/// What the connection waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interest {
    /// The socket to be readable.
    Read,
    /// The socket to be writable.
    Write,
    /// Either.
    Both,
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// An HTTPS endpoint before the first byte: a TLS ClientHello, or a
    /// plain-HTTP client to tell to use HTTPS?
    Sniff,
    /// Reading the request head (and, over TLS, handshaking).
    Read,
    /// Sending the answer (and, over TLS, close_notify).
    Write,
    /// Answered and shut down for writing: waiting for the client to close.
    Linger,
}

/// What the loop needs to advance connections.
pub(super) struct Ctx<'a> {
    pub handler: &'a Handler,
    /// The certificate new connections use, on an HTTPS endpoint.
    pub tls: Option<&'a AdminTls>,
}

/// One accepted connection.
pub(super) struct Conn {
    sock: TcpStream,
    local: SocketAddr,
    tls: Option<Box<ServerConnection>>,
    phase: Phase,
    /// The request head's plaintext so far (at most [`MAX_HEAD`] bytes).
    head: Vec<u8>,
    /// A plaintext connection's answer and how much of it is sent.
    out: Vec<u8>,
    sent: usize,
    /// A plain-HTTP request on the HTTPS endpoint: answer it with a hint.
    https_hint: bool,
    /// The whole request (read, handshake, answer) must end by then.
    deadline: Instant,
    /// In [`Phase::Linger`]: when to stop waiting for the client's close.
    linger_until: Instant,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("fd", &self.sock.as_raw_fd())
            .field("phase", &self.phase)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// A connection accepted at `now` that must be done within `timeout`;
    /// `https` when the endpoint serves HTTPS.
    pub fn new(sock: TcpStream, https: bool, now: Instant, timeout: Duration) -> io::Result<Conn> {
        sock.set_nonblocking(true)?;
        let local = sock.local_addr()?;
        let deadline = now + timeout;
        Ok(Conn {
            sock,
            local,
            tls: None,
            phase: if https { Phase::Sniff } else { Phase::Read },
            head: Vec::new(),
            out: Vec::new(),
            sent: 0,
            https_hint: false,
            deadline,
            linger_until: deadline,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// When the loop drops the connection if it is still open, and how that
    /// counts.
    pub fn expiry(&self) -> (Instant, AdminResult) {
        if self.phase == Phase::Linger {
            (self.linger_until, AdminResult::Served)
        } else {
            (self.deadline, AdminResult::TimedOut)
        }
    }

    pub fn interest(&self) -> Interest {
        let tls_writes = self.tls.as_ref().is_some_and(|t| t.wants_write());
        match self.phase {
            Phase::Sniff | Phase::Linger => Interest::Read,
            Phase::Read if tls_writes => Interest::Both,
            Phase::Read => Interest::Read,
            Phase::Write => Interest::Write,
        }
    }

    /// Does what the socket allows now: `None` while the connection goes
    /// on, or how it ended.
    pub fn advance(&mut self, ctx: &Ctx<'_>, now: Instant) -> Option<AdminResult> {
        match self.step(ctx, now) {
            Ok(done) => done,
            Err(_) if self.phase == Phase::Linger => Some(AdminResult::Served),
            Err(_) => Some(AdminResult::Failed),
        }
    }

    fn step(&mut self, ctx: &Ctx<'_>, now: Instant) -> io::Result<Option<AdminResult>> {
        if self.phase == Phase::Sniff {
            let mut first = [0u8; 1];
            match self.sock.read(&mut first) {
                Ok(0) => return Ok(Some(AdminResult::Failed)),
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(None),
                Err(e) => return Err(e),
            }
            self.phase = Phase::Read;
            match ctx.tls {
                Some(admin_tls) if first[0] == TLS_HANDSHAKE_RECORD => {
                    let mut tls = Box::new(
                        ServerConnection::new(admin_tls.config()).map_err(io::Error::other)?,
                    );
                    // The answer is queued whole: its size is ours to bound.
                    tls.set_buffer_limit(None);
                    let mut rest: &[u8] = &first;
                    tls.read_tls(&mut rest)?;
                    self.tls = Some(tls);
                }
                _ => {
                    self.https_hint = true;
                    self.head.push(first[0]);
                }
            }
        }
        if self.phase == Phase::Read {
            let closed = match self.tls.is_some() {
                true => self.read_tls()?,
                false => self.read_plain()?,
            };
            let parsed = match request::parse(&self.head) {
                // A whole head cannot arrive any more.
                Ok(None) => return Ok(closed.then_some(AdminResult::Failed)),
                Ok(Some(r)) => Ok(r),
                Err(e) => Err(e),
            };
            let answer = answer(parsed, ctx.handler, self.https_hint.then_some(self.local));
            match &mut self.tls {
                Some(tls) => {
                    tls.writer().write_all(&answer)?;
                    tls.send_close_notify();
                }
                None => self.out = answer,
            }
            self.phase = Phase::Write;
        }
        if self.phase == Phase::Write {
            if !self.write()? {
                return Ok(None);
            }
            self.sock.shutdown(Shutdown::Write)?;
            self.phase = Phase::Linger;
            self.linger_until = (now + LINGER).min(self.deadline);
        }
        // Phase::Linger: read until the client closes.
        let mut buf = [0u8; 4096];
        let mut budget = READ_BUDGET;
        while budget > 0 {
            match self.sock.read(&mut buf) {
                Ok(0) => return Ok(Some(AdminResult::Served)),
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if would_block(&e) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Reads plaintext into the head; true when the client closed.
    fn read_plain(&mut self) -> io::Result<bool> {
        while self.head.len() < MAX_HEAD {
            let at = self.head.len();
            self.head.resize(MAX_HEAD, 0);
            let r = self.sock.read(&mut self.head[at..]);
            self.head.truncate(at + *r.as_ref().unwrap_or(&0));
            match r {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Moves TLS records in both directions and the plaintext they carry
    /// into the head; true when the client closed.
    fn read_tls(&mut self) -> io::Result<bool> {
        let tls = self.tls.as_mut().expect("a TLS connection");
        let mut closed = false;
        let mut budget = READ_BUDGET;
        while budget > 0 && self.head.len() < MAX_HEAD {
            match tls.read_tls(&mut self.sock) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(e),
            }
            if let Err(e) = tls.process_new_packets() {
                // Send the alert rustls queued, if the socket takes it.
                let _ = tls.write_tls(&mut self.sock);
                return Err(io::Error::other(e));
            }
            let mut chunk = [0u8; 1024];
            loop {
                let room = (MAX_HEAD - self.head.len()).min(chunk.len());
                if room == 0 {
                    break;
                }
                match tls.reader().read(&mut chunk[..room]) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => self.head.extend_from_slice(&chunk[..n]),
                    Err(e) if would_block(&e) => break,
                    Err(e) => return Err(e),
                }
            }
            if closed {
                break;
            }
        }
        while tls.wants_write() {
            match tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(closed)
    }

    /// Sends what is queued; true once everything is.
    fn write(&mut self) -> io::Result<bool> {
        if let Some(tls) = &mut self.tls {
            while tls.wants_write() {
                match tls.write_tls(&mut self.sock) {
                    Ok(_) => {}
                    Err(e) if would_block(&e) => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            return Ok(true);
        }
        while self.sent < self.out.len() {
            match self.sock.write(&self.out[self.sent..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

/// The whole answer to a parsed request head. `https_hint`: the request
/// came as plain HTTP to the HTTPS endpoint on this address.
fn answer(
    parsed: Result<request::Request<'_>, RequestError>,
    handler: &Handler,
    https_hint: Option<SocketAddr>,
) -> Vec<u8> {
    if let Some(local) = https_hint {
        let path = match parsed {
            Ok(r) => r.path,
            Err(_) => "/metrics",
        };
        return response(
            "400 Bad Request",
            "text/plain",
            &format!("this admin endpoint speaks HTTPS: ask https://{local}{path}\n"),
            true,
        );
    }
    match parsed {
        Ok(r) => {
            let with_body = r.method == Method::Get;
            match handler(r.path) {
                Some((ctype, body)) => response("200 OK", ctype, &body, with_body),
                None => response(
                    "404 Not Found",
                    "text/plain",
                    "try /metrics or /status\n",
                    with_body,
                ),
            }
        }
        Err(e) => response(e.status(), "text/plain", &format!("{}\n", e.as_str()), true),
    }
}

fn response(status: &str, ctype: &str, body: &str, with_body: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}
