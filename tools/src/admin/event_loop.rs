//! The admin endpoint's thread: one `poll(2)` loop over the listener, a
//! wake-up socket and every open connection.
//!
//! Why one multiplexing thread rather than a pool of blocking workers: a
//! pool of N is held by N slow clients (each for the whole deadline), and a
//! worker stuck in a read cannot be stopped. Here a connection costs a
//! buffer and a deadline, never a thread: a slow client delays nobody, every
//! connection is dropped at its deadline whatever it is doing, the cap
//! bounds memory, and stopping is one wake-up away. The work per request
//! (render the metrics, a few kB) is short enough to do inline.

use std::io::{self, Read};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringport_engine::policy::Allowlist;

use super::conn::{Conn, Ctx, Interest};
use super::{AdminOptions, AdminResult, AdminStats, AdminTls, Handler};

/// Accepts per wake-up, so that a flood of connections still lets the open
/// ones advance.
const ACCEPT_BATCH: usize = 64;

/// After an accept error that repeats until something changes (out of
/// descriptors or memory), the listener is left alone for a while, doubling
/// from [`AcceptBackoff::FIRST`] to [`AcceptBackoff::MAX`], instead of
/// being polled again at once: the error would come straight back and the
/// thread would spin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AcceptBackoff {
    next: Duration,
    until: Option<Instant>,
}

impl AcceptBackoff {
    /// The first pause.
    pub const FIRST: Duration = Duration::from_millis(50);
    /// The longest pause.
    pub const MAX: Duration = Duration::from_secs(1);

    pub fn new() -> AcceptBackoff {
        AcceptBackoff {
            next: Self::FIRST,
            until: None,
        }
    }

    /// Whether to accept at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.until.map_or(true, |t| now >= t)
    }

    /// When accepting resumes, if paused.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// An accept failed at `now`: pause, longer each time in a row.
    pub fn failed(&mut self, now: Instant) {
        self.until = Some(now + self.next);
        self.next = (self.next * 2).min(Self::MAX);
    }

    /// An accept worked: the next failure starts from the shortest pause.
    pub fn succeeded(&mut self) {
        *self = AcceptBackoff::new();
    }
}

/// Whether an accept error concerns only the connection it was about.
/// Every other one (EMFILE, ENFILE, ENOBUFS, ENOMEM above all) comes back
/// until descriptors or memory are freed, so it pauses accepting.
fn one_connection_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EPERM | libc::EPROTO | libc::EINTR)
    )
}

pub(super) struct EventLoop {
    pub listener: TcpListener,
    pub wake: UnixStream,
    pub stop: Arc<AtomicBool>,
    pub allow: Allowlist,
    pub handler: Arc<Handler>,
    pub tls: Option<Arc<AdminTls>>,
    pub options: AdminOptions,
    pub stats: Arc<AdminStats>,
}

impl EventLoop {
    /// Serves until `stop` is set (and the wake-up socket written); open
    /// connections are then closed unanswered.
    pub fn run(self) {
        let mut conns: Vec<Conn> = Vec::new();
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut backoff = AcceptBackoff::new();
        let ctx = Ctx {
            handler: &*self.handler,
            tls: self.tls.as_deref(),
        };
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            conns.retain(|c| {
                let (at, result) = c.expiry();
                let keep = now < at;
                if !keep {
                    self.stats.count(result);
                }
                keep
            });
            let accepting = backoff.ready(now);
            fds.clear();
            fds.push(pollfd(self.wake.as_raw_fd(), libc::POLLIN));
            fds.push(pollfd(
                self.listener.as_raw_fd(),
                if accepting { libc::POLLIN } else { 0 },
            ));
            for c in &conns {
                let events = match c.interest() {
                    Interest::Read => libc::POLLIN,
                    Interest::Write => libc::POLLOUT,
                    Interest::Both => libc::POLLIN | libc::POLLOUT,
                };
                fds.push(pollfd(c.fd(), events));
            }
            let next = conns
                .iter()
                .map(|c| c.expiry().0)
                .chain(backoff.until().filter(|_| !accepting))
                .min();
            let timeout = match next {
                // Rounded up, so that the loop does not wake just before.
                Some(at) => at
                    .saturating_duration_since(now)
                    .as_millis()
                    .saturating_add(1)
                    .min(i32::MAX as u128) as libc::c_int,
                None => -1,
            };
            // SAFETY: `fds` is a live, initialised array of `fds.len()`
            // pollfd structures that poll only writes `revents` of.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    // ENOMEM: give the kernel a moment rather than spin.
                    std::thread::sleep(AcceptBackoff::FIRST);
                }
                continue;
            }
            if fds[0].revents != 0 {
                let mut sink = [0u8; 64];
                while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
                continue;
            }
            let now = Instant::now();
            let mut i = 0;
            conns.retain_mut(|c| {
                let ready = fds[2 + i].revents != 0;
                i += 1;
                if !ready {
                    return true;
                }
                match c.advance(&ctx, now) {
                    None => true,
                    Some(result) => {
                        self.stats.count(result);
                        false
                    }
                }
            });
            if accepting && fds[1].revents != 0 {
                self.accept(&mut conns, &mut backoff, now);
            }
        }
    }

    fn accept(&self, conns: &mut Vec<Conn>, backoff: &mut AcceptBackoff, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            let (sock, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // One connection's trouble (reset before it was accepted,
                // a firewall): the next one may be fine.
                Err(e) if one_connection_error(&e) => {
                    self.stats.accept_error();
                    continue;
                }
                Err(_) => {
                    self.stats.accept_error();
                    backoff.failed(now);
                    return;
                }
            };
            backoff.succeeded();
            // Outside the allowlist: closed unanswered, before any TLS.
            if !self.allow.contains(peer.ip()) {
                self.stats.count(AdminResult::Denied);
                continue;
            }
            if conns.len() >= self.options.max_conns {
                self.stats.count(AdminResult::Refused);
                continue;
            }
            match Conn::new(sock, self.tls.is_some(), now, self.options.timeout) {
                Ok(c) => conns.push(c),
                Err(_) => self.stats.count(AdminResult::Failed),
            }
        }
    }
}

fn pollfd(fd: libc::c_int, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_its_cap_and_resets_on_success() {
        let t0 = Instant::now();
        let mut b = AcceptBackoff::new();
        assert!(b.ready(t0));
        let mut at = t0;
        let mut pauses = Vec::new();
        for _ in 0..7 {
            b.failed(at);
            let until = b.until().unwrap();
            assert!(!b.ready(until - Duration::from_millis(1)));
            assert!(b.ready(until));
            pauses.push((until - at).as_millis());
            at = until;
        }
        assert_eq!(pauses, [50, 100, 200, 400, 800, 1000, 1000]);
        b.succeeded();
        assert_eq!(b, AcceptBackoff::new());
        b.failed(at);
        assert_eq!(b.until(), Some(at + AcceptBackoff::FIRST));
    }
}
