//! Outbound streams: a plugin's [`Context::connect`], its timeout, its end
//! (connected or failed), and the plugins' start call.
//!
//! With TLS (`ConnectRequest::with_tls`), the socket's connect is followed
//! by a client handshake in the same session code as a `tls` listener's;
//! `handle_connected` comes once it is done, and a failed handshake is a
//! failed connect ([`ConnectFailure::Tls`]). The connect timeout covers
//! both. The server's certificate names are what
//! `Context::peer_identities` returns for the stream.
//!
//! A connect takes a slot in the connection table like an accepted stream
//! (so `max_conns_per_shard` bounds both together) and is handed to the
//! backend as one operation that ends with one [`Event::Connected`]. Once
//! connected, the stream is an ordinary stream: the same receive, send,
//! back-pressure, outbound budget and teardown paths, and the plugin owes
//! nothing new. Until then no receive or send is asked for it; bytes the
//! plugin writes wait in its queue.
//!
//! What does not apply: the listeners' guard (allowlists, per-source
//! limits, first-bytes and idle timeouts, the handshake log) is about
//! peers that come to a listener, and an outbound stream has no listener
//! (`ListenerId::OUTBOUND`); nor does the check for a TLS ClientHello on a
//! plaintext port. The plugin picked the peer and keeps its own liveness
//! checks.
//!
//! The connect timeout is a deadline of the shard, not a linked
//! IORING_OP_LINK_TIMEOUT: the epoll backend has no kernel timeout for a
//! connect, so one deadline heap serves both backends with the same
//! behaviour (and the same tests); the shard's wait already sleeps until
//! its earliest deadline, so a timeout costs one cancel when it fires and
//! nothing when the connect ends first (its stale heap entry is skipped).
//! A linked timeout would also make ECANCELED ambiguous (ours, or the
//! timer's) and need a timespec kept alive per connect. The heap holds one
//! entry per connect until its deadline (connects a second x timeout).

use std::os::fd::AsRawFd;

use ringport_plugin::{ConnectError, ConnectFailure, ConnectRequest};

use crate::conn::Outbound;
use crate::tls::session::{HandshakeInfo, Session};

use super::*;

/// A connect deadline: (when, slot, generation).
pub(super) type ConnectDeadline = Reverse<(Instant, u32, u32)>;

/// How a connect's errno reads to the plugin and the counters.
pub(super) fn failure_of(errno: i32) -> ConnectFailure {
    match errno {
        libc::ECONNREFUSED => ConnectFailure::Refused,
        libc::ETIMEDOUT => ConnectFailure::TimedOut,
        libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN | libc::EHOSTDOWN => {
            ConnectFailure::Unreachable
        }
        libc::ECONNRESET | libc::ECONNABORTED => ConnectFailure::Reset,
        libc::ECANCELED => ConnectFailure::Cancelled,
        other => ConnectFailure::Error(other),
    }
}

/// How a stream closed before it opened reads as a failed connect.
pub(super) fn failure_of_close(reason: CloseReason) -> ConnectFailure {
    match reason {
        CloseReason::PeerReset => ConnectFailure::Reset,
        // The server hung up (or broke the protocol) during a TLS handshake.
        CloseReason::PeerClosed | CloseReason::Protocol(_) => ConnectFailure::Tls,
        CloseReason::Error(errno) if errno != libc::ENOBUFS && errno != libc::EIO => {
            failure_of(errno)
        }
        _ => ConnectFailure::Cancelled,
    }
}

/// Whether a plugin may connect to `addr` at all.
fn connectable(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

impl<B: Backend> Core<B> {
    /// [`Context::connect`]: a socket, a slot, a deadline, and the
    /// backend's connect. Counted as started or denied.
    pub(super) fn start_connect(&mut self, req: ConnectRequest) -> Result<ConnId, ConnectError> {
        let r = self.try_start_connect(req);
        match r {
            Ok(_) => self.counters.connects_started.add(1),
            Err(_) => self.counters.connects_denied.add(1),
        }
        r
    }

    fn try_start_connect(&mut self, req: ConnectRequest) -> Result<ConnId, ConnectError> {
        if self.stopping {
            return Err(ConnectError::Stopping);
        }
        if !connectable(req.addr) {
            return Err(ConnectError::InvalidAddress);
        }
        let tls_client = match &req.tls {
            None => None,
            Some(t) => {
                let profile = self
                    .tls_clients
                    .iter()
                    .find(|(name, _)| *name == t.profile)
                    .ok_or(ConnectError::UnknownTlsProfile)?;
                let name = rustls::pki_types::ServerName::try_from(t.server_name.clone())
                    .map_err(|_| ConnectError::InvalidServerName)?;
                Some((profile.1.config(), name))
            }
        };
        let fd = socket::stream_to(req.addr)
            .map_err(|e| ConnectError::Socket(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let raw = fd.as_raw_fd();
        // A full table drops (and so closes) the socket.
        let (idx, generation) = self
            .conns
            .insert(fd, self.current_plugin, ListenerId::OUTBOUND.0)
            .ok_or(ConnectError::TableFull)?;
        if let Some(c) = self.conns.get_mut(idx, generation) {
            c.out = Some(Box::new(Outbound {
                connect_tag: req.tag,
                local: SocketAddr::from(([0, 0, 0, 0], 0)),
                tls_client,
                early_plain: Vec::new(),
            }));
            c.connecting = true;
            c.opening = true;
            c.peer = req.addr;
            // Only a client sends a ClientHello; the peer here is a server.
            c.first_checked = true;
        }
        let now = self.clock.now();
        let due = now
            .checked_add(req.timeout)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86400));
        self.connect_deadlines.push(Reverse((due, idx, generation)));
        self.io.connect(idx, generation, raw, req.addr);
        Ok(Conns::id(idx, generation))
    }

    /// The earliest connect deadline (possibly of one that already ended).
    pub(super) fn next_connect_deadline(&self) -> Option<Instant> {
        self.connect_deadlines.peek().map(|Reverse((at, ..))| *at)
    }
}

impl<B: Backend> Shard<B> {
    /// Every plugin instance hears `handle_start`, before anything else.
    pub(super) fn start_plugins(&mut self) {
        for i in 0..self.plugins.len() {
            self.core.current_plugin = i as u16;
            let p = &mut self.plugins[i];
            let core = &mut self.core;
            if guarded(|| p.handle_start(core)).is_none() {
                self.plugin_panicked(
                    "handle_start",
                    u16::MAX,
                    SocketAddr::from(([0, 0, 0, 0], 0)),
                );
            }
        }
    }

    /// A connect's end, from the backend.
    pub(super) fn on_connected(&mut self, idx: u32, generation: u32, result: Result<(), i32>) {
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        if !conn.connecting {
            return;
        }
        conn.connecting = false;
        if conn.closing {
            // Aborted already (timeout, close, shutdown): the plugin was
            // told then; the slot can go now.
            self.core.maybe_finalize(idx, generation);
            return;
        }
        if result.is_ok() && conn.close_after_flush.is_some() {
            // Closed by the plugin in this turn, before the flush that
            // would have cancelled it: still a cancel, not a stream.
            self.abort_connect(idx, generation, ConnectFailure::Cancelled);
            return;
        }
        match result {
            Err(errno) => {
                conn.closing = true;
                conn.opening = false;
                conn.tx_pending.clear();
                let (plugin, tag) = (conn.plugin, conn.connect_tag());
                self.core.account(idx);
                self.connect_failed(plugin, idx, generation, tag, failure_of(errno));
                self.core.maybe_finalize(idx, generation);
            }
            Ok(()) => self.connected(idx, generation),
        }
    }

    /// The socket connected: start TLS, or open the stream to the plugin.
    fn connected(&mut self, idx: u32, generation: u32) {
        let now = self.core.clock.now();
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        let fd = conn.raw_fd();
        let Some(out) = conn.out.as_deref_mut() else {
            return;
        };
        out.local = addr::local_of(fd).unwrap_or(out.local);
        let Some((config, name)) = out.tls_client.take() else {
            self.open_outbound(idx, generation);
            return;
        };
        match Session::client(config, name, now, &mut conn.tx_pending) {
            Ok(s) => {
                conn.tls = Some(Box::new(s));
                // The ClientHello goes out with this turn's flush; the
                // server's answer comes through the TLS receive path.
                self.core.mark_dirty(idx);
                self.after_io(idx, generation);
            }
            Err(_) => self.abort_connect(idx, generation, ConnectFailure::Tls),
        }
    }

    /// An outbound TLS stream's handshake is done: seal what the plugin
    /// wrote meanwhile, open the stream to it, and hand it what the server
    /// sent right behind its handshake.
    pub(super) fn tls_client_established(
        &mut self,
        idx: u32,
        generation: u32,
        info: Box<HandshakeInfo>,
    ) {
        if let Some(s) = self
            .core
            .conns
            .get(idx, generation)
            .and_then(|c| c.tls.as_deref())
        {
            let took = self.core.clock.now().saturating_duration_since(s.started);
            self.core
                .latency
                .record(crate::tls::HANDSHAKE_LATENCY, took);
        }
        // What the plugin wrote meanwhile goes first, before anything it
        // writes in `handle_connected`.
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        if conn.early_plain_len() > 0 {
            let early = conn
                .out
                .as_deref_mut()
                .map(|o| std::mem::take(&mut o.early_plain))
                .unwrap_or_default();
            let sealed = match conn.tls.as_deref_mut() {
                Some(s) => s.write(&mut conn.tx_pending, &[&early]).is_ok(),
                None => false,
            };
            if !sealed {
                conn.close_after_flush
                    .get_or_insert(CloseReason::Error(libc::EPROTO));
            }
            self.core.account(idx);
            self.core.mark_dirty(idx);
        }
        self.open_outbound(idx, generation);
        if self
            .core
            .conns
            .get(idx, generation)
            .map_or(true, |c| c.closing)
        {
            return;
        }
        if !info.early.is_empty() {
            if let Some(conn) = self.core.conns.get_mut(idx, generation) {
                conn.rx_pending.extend_from_slice(&info.early);
            }
            let r = self.run_pending(idx, generation);
            self.after_deliver(idx, generation, r);
        }
        if info.peer_closed {
            self.peer_finished(idx, generation);
        }
    }

    /// The stream is open: `handle_connected`, then it reads like any other.
    fn open_outbound(&mut self, idx: u32, generation: u32) {
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        let local = conn
            .out
            .as_ref()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |o| o.local);
        // From here on `handle_close` is owed, as for an accepted stream.
        conn.accepted = true;
        conn.opening = false;
        let (plugin, tag, peer) = (conn.plugin, conn.connect_tag(), conn.peer);
        self.core.counters.conns_connected.add(1);
        let info = StreamInfo {
            conn: Conns::id(idx, generation),
            listener: ListenerId::OUTBOUND,
            peer,
            local,
        };
        self.core.current_plugin = plugin;
        let p = &mut self.plugins[plugin as usize];
        let core = &mut self.core;
        if guarded(|| p.handle_connected(core, &info, tag)).is_none() {
            self.plugin_panicked("handle_connected", ListenerId::OUTBOUND.0, peer);
            self.teardown(idx, generation, CloseReason::Error(libc::EIO));
            return;
        }
        // Bytes written while connecting (or a close asked for since) go
        // out with this turn's flush; then the stream reads.
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        if !conn.tx_pending.is_empty() || conn.close_after_flush.is_some() {
            self.core.mark_dirty(idx);
        }
        self.after_io(idx, generation);
    }

    /// Gives up on a connect still in progress (its socket's connect, or
    /// its TLS handshake): the plugin hears `handle_connect_failed(failure)`
    /// now, what is in flight is cancelled, and the slot is freed once the
    /// backend has handed every operation back.
    pub(super) fn abort_connect(&mut self, idx: u32, generation: u32, failure: ConnectFailure) {
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        if conn.closing || !conn.opening {
            return;
        }
        conn.closing = true;
        conn.opening = false;
        conn.tx_pending.clear();
        let (plugin, tag, fd) = (conn.plugin, conn.connect_tag(), conn.raw_fd());
        let (connecting, sending, receiving) =
            (conn.connecting, conn.send_inflight, conn.recv_armed);
        self.core.account(idx);
        if connecting {
            self.core.io.cancel_connect(idx, generation, fd);
        }
        if sending {
            // As in `teardown`: a send the peer holds completes at once.
            socket::shutdown(fd);
        }
        if receiving {
            self.core.pause_recv(idx, generation);
        }
        self.connect_failed(plugin, idx, generation, tag, failure);
        self.core.maybe_finalize(idx, generation);
    }

    /// Counts a failed connect and tells its plugin.
    fn connect_failed(
        &mut self,
        plugin: u16,
        idx: u32,
        generation: u32,
        tag: u64,
        failure: ConnectFailure,
    ) {
        self.core.counters.connect_failures[failure.index()].add(1);
        self.core.current_plugin = plugin;
        let id = Conns::id(idx, generation);
        let p = &mut self.plugins[plugin as usize];
        let core = &mut self.core;
        if guarded(|| p.handle_connect_failed(core, id, tag, failure)).is_none() {
            let peer = self
                .core
                .conns
                .get(idx, generation)
                .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.peer);
            self.plugin_panicked("handle_connect_failed", ListenerId::OUTBOUND.0, peer);
        }
    }

    /// Fails the connects whose timeout has passed ([`ConnectFailure::TimedOut`]).
    pub(super) fn expire_connects(&mut self) {
        let Some(first) = self.core.next_connect_deadline() else {
            return;
        };
        let now = self.core.clock.now();
        if first > now {
            return;
        }
        while let Some(Reverse((at, idx, generation))) = self.core.connect_deadlines.peek().copied()
        {
            if at > now {
                break;
            }
            self.core.connect_deadlines.pop();
            // Entries of connects that ended since are stale: skipped.
            if self
                .core
                .conns
                .get(idx, generation)
                .is_some_and(|c| c.opening && !c.closing)
            {
                self.abort_connect(idx, generation, ConnectFailure::TimedOut);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_the_counted_reasons() {
        let cases = [
            (libc::ECONNREFUSED, "refused"),
            (libc::ETIMEDOUT, "timed_out"),
            (libc::ENETUNREACH, "unreachable"),
            (libc::EHOSTUNREACH, "unreachable"),
            (libc::ECONNRESET, "reset"),
            (libc::ECONNABORTED, "reset"),
            (libc::ECANCELED, "cancelled"),
            (libc::EADDRNOTAVAIL, "other"),
        ];
        for (errno, name) in cases {
            assert_eq!(failure_of(errno).as_str(), name, "errno {errno}");
        }
        assert_eq!(
            failure_of(libc::EADDRNOTAVAIL),
            ConnectFailure::Error(libc::EADDRNOTAVAIL)
        );
    }

    #[test]
    fn only_unicast_addresses_with_a_port_are_connectable() {
        for ok in ["127.0.0.1:1", "[::1]:4222", "127.1.2.3:80"] {
            assert!(connectable(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "127.0.0.1:0",
            "0.0.0.0:80",
            "[::]:80",
            "239.1.1.1:80",
            "[ff02::1]:80",
            "255.255.255.255:80",
        ] {
            assert!(!connectable(bad.parse().unwrap()), "{bad}");
        }
    }
}
