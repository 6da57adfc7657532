//! TLS streams: the handshake between accept and the plugin's
//! `handle_open`, records in and out after it, and the checks that keep
//! TLS and plaintext apart (plaintext sent to a TLS port, a ClientHello
//! sent to a plaintext one).

use std::collections::HashMap;
use std::net::IpAddr;

use super::*;
use crate::log::{CloseCause, Event, LogRecord, TlsLog};
use crate::policy::{Decision, DenyReason};
use crate::tls::session::{HandshakeFailure, HandshakeInfo, Progress, ReadEnd, Session};
use crate::tls::{HandshakeResult, ListenerTls, HANDSHAKE_LATENCY};

/// access_denied: the alert sent to a client whose identity is refused.
const ACCESS_DENIED: u8 = 49;
/// A fatal handshake_failure alert as a plaintext record: what a TLS client
/// that reached a plaintext listener gets before the close.
const PLAIN_HANDSHAKE_FAILURE: [u8; 7] = [21, 3, 3, 0, 2, 2, 40];

/// Handshakes in progress on this shard, in all and per source address.
#[derive(Debug, Default)]
pub(super) struct HandshakeCaps {
    total: usize,
    per_source: HashMap<IpAddr, u32>,
}

impl HandshakeCaps {
    /// Counts a new handshake, or says which cap refuses it.
    fn start(&mut self, ip: IpAddr, per_source: u32, per_shard: usize) -> Result<(), DenyReason> {
        if per_shard > 0 && self.total >= per_shard {
            return Err(DenyReason::HandshakesPerShard);
        }
        let n = self.per_source.entry(ip).or_insert(0);
        if per_source > 0 && *n >= per_source {
            if *n == 0 {
                self.per_source.remove(&ip);
            }
            return Err(DenyReason::HandshakesPerSource);
        }
        *n += 1;
        self.total += 1;
        Ok(())
    }

    /// A handshake of `ip` ended (whatever the outcome).
    fn end(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_source.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&ip);
            }
            self.total -= 1;
        }
    }
}

/// Whether `first` (a plaintext stream's first bytes) is the start of a TLS
/// ClientHello: a handshake record of TLS 1.0-1.3 whose message is type 1.
fn looks_like_client_hello(first: &[u8]) -> bool {
    first.len() >= 6 && first[0] == 22 && first[1] == 3 && first[2] <= 4 && first[5] == 1
}

impl<B: Backend> Shard<B> {
    fn listener_tls(&self, listener: ListenerId) -> Option<&Arc<ListenerTls>> {
        self.tls.get(listener.0 as usize).and_then(Option::as_ref)
    }

    /// A connection just admitted on a `tls` listener: start its handshake
    /// (the plugin hears of it once the handshake succeeded). `false`: it
    /// was refused and closed here.
    pub(super) fn accept_tls(
        &mut self,
        cidx: u32,
        generation: u32,
        listener: ListenerId,
        admitted: Decision,
    ) -> bool {
        let Some(tls) = self.listener_tls(listener).cloned() else {
            return false;
        };
        let Some((peer, local)) = self
            .core
            .conns
            .get(cidx, generation)
            .map(|c| (c.peer, self.core.local_of(c)))
        else {
            return false;
        };
        let now = self.core.clock.now();
        let caps = self.handshakes.start(
            self.guard.source_key(peer.ip()),
            tls.settings().max_handshakes_per_source,
            self.core.config.tls_max_handshakes,
        );
        let session = match caps {
            Err(reason) => {
                self.guard
                    .deny(listener.0, peer, local.port(), reason, false, now);
                None
            }
            Ok(()) => match Session::new(tls.server_config(), now) {
                Ok(s) => Some(s),
                Err(_) => {
                    self.handshakes.end(self.guard.source_key(peer.ip()));
                    self.guard.rejected(listener.0, peer);
                    None
                }
            },
        };
        let Some(session) = session else {
            // Nothing was submitted for it: removing the slot closes it.
            self.core.conns.remove(cidx);
            return false;
        };
        if let Some(c) = self.core.conns.get_mut(cidx, generation) {
            c.tls = Some(Box::new(session));
            c.guarded = true;
        }
        self.guard
            .opened(cidx, generation, listener.0, peer, local, admitted, now);
        self.guard
            .tls_handshaking(cidx, generation, tls.settings().handshake_timeout, now);
        self.core.arm_recv(cidx, generation);
        true
    }

    /// Bytes arrived on a TLS stream: handshake input, or records to open in
    /// place in the receive buffer.
    pub(super) fn deliver_tls(&mut self, idx: u32, generation: u32, bid: u16, len: usize) {
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        if conn.closing || conn.close_after_flush.is_some() {
            return;
        }
        let Some(mut session) = conn.tls.take() else {
            return;
        };
        if session.handshaking() {
            let client = session.is_client();
            let progress = session.handshake(self.bufs.tcp(bid, len), &mut conn.tx_pending);
            conn.tls = Some(session);
            self.core.mark_dirty(idx);
            if client {
                match progress {
                    Progress::Pending => {}
                    Progress::Done(info) => self.tls_client_established(idx, generation, info),
                    Progress::Failed(_) => {
                        self.abort_connect(idx, generation, ringport_plugin::ConnectFailure::Tls)
                    }
                }
                return;
            }
            match progress {
                Progress::Pending => {}
                Progress::Done(info) => self.tls_established(idx, generation, info),
                Progress::Failed(f) => self.tls_failed(idx, generation, *f),
            }
            return;
        }
        let before = conn.rx_pending.len();
        let buf = self.bufs.tcp_mut(bid, len);
        let read = session.read(buf, &mut conn.rx_pending, &mut conn.tx_pending);
        let grew = conn.rx_pending.len() > before;
        conn.tls = Some(session);
        if read.wrote {
            self.core.mark_dirty(idx);
        }
        if read.plain > 0 || grew {
            self.deliver_plain(idx, generation, bid, read.plain, grew);
        }
        match read.end {
            None => {}
            Some(ReadEnd::PeerClosed) => self.peer_finished(idx, generation),
            Some(ReadEnd::AlertReceived(_)) => {
                self.guard.set_cause(idx, generation, CloseCause::TlsError);
                self.teardown(idx, generation, CloseReason::PeerReset);
            }
            Some(ReadEnd::Failed(e)) => {
                self.guard.set_cause(idx, generation, CloseCause::TlsError);
                let Some(conn) = self.core.conns.get_mut(idx, generation) else {
                    return;
                };
                if let Some(s) = conn.tls.as_mut() {
                    s.alert(&mut conn.tx_pending, e.alert());
                }
                self.core.counters.drop_plugin(DropReason::Malformed);
                self.close_after_flush(
                    idx,
                    generation,
                    CloseReason::Protocol(DropReason::Malformed),
                );
            }
        }
    }

    /// The peer will send no more (FIN, or TLS close_notify): finish what is
    /// queued, then close.
    pub(super) fn peer_finished(&mut self, idx: u32, generation: u32) {
        self.guard
            .half_closed(idx, generation, self.core.clock.now());
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        conn.read_closed = true;
        if conn.close_after_flush.is_none() {
            conn.close_after_flush = Some(CloseReason::PeerClosed);
        }
        self.core.mark_dirty(idx);
    }

    fn close_after_flush(&mut self, idx: u32, generation: u32, reason: CloseReason) {
        if let Some(conn) = self.core.conns.get_mut(idx, generation) {
            if conn.close_after_flush.is_none() {
                conn.close_after_flush = Some(reason);
            }
            self.core.mark_dirty(idx);
        }
    }

    /// A handshake line's common part.
    fn handshake_record(&self, idx: u32, generation: u32, tls: TlsLog) -> Option<LogRecord> {
        let conn = self.core.conns.get(idx, generation)?;
        let session = conn.tls.as_ref()?;
        let now = self.core.clock.now();
        let mut r = LogRecord::new(Event::TlsHandshake, now, conn.listener, 0, conn.peer);
        r.local_port = self.core.local_of(conn).port();
        r.duration = now.saturating_duration_since(session.started);
        r.tls = Some(Box::new(tls));
        Some(r)
    }

    /// The handshake succeeded: check the client's identity, then open the
    /// stream to the plugin and hand it what came with the handshake.
    fn tls_established(&mut self, idx: u32, generation: u32, info: Box<HandshakeInfo>) {
        let Some(conn) = self.core.conns.get(idx, generation) else {
            return;
        };
        let (listener, plugin, peer, local) = (
            ListenerId(conn.listener),
            conn.plugin,
            conn.peer,
            self.core.local_of(conn),
        );
        let local_port = local.port();
        let Some(tls) = self.listener_tls(listener).cloned() else {
            return;
        };
        self.handshakes.end(self.guard.source_key(peer.ip()));
        let now = self.core.clock.now();
        if let Some(s) = conn.tls.as_ref() {
            self.core
                .latency
                .record(HANDSHAKE_LATENCY, now.saturating_duration_since(s.started));
        }
        if let Some(s) = self
            .core
            .conns
            .get_mut(idx, generation)
            .and_then(|c| c.tls.as_deref_mut())
        {
            s.peer_identities = info
                .client_cert
                .as_ref()
                .map(|c| c.sans())
                .unwrap_or_default();
        }
        // The identity verdict: what rustls let through in audit mode, and
        // the allowlist of identities.
        let refusal = if tls.mutual() {
            match (&info.client_cert, info.cert_refusal) {
                (_, Some(r)) => r.denial(),
                (None, None) => Some(DenyReason::NoCertificate),
                (Some(c), None) if !tls.identities().allows(c) => {
                    Some(DenyReason::IdentityNotAllowed)
                }
                _ => None,
            }
        } else {
            None
        };
        let enforced = refusal.filter(|_| !tls.dry_run());
        let result = match enforced {
            Some(DenyReason::IdentityNotAllowed) => HandshakeResult::IdentityNotAllowed,
            Some(DenyReason::NoCertificate) => HandshakeResult::NoCertificate,
            Some(DenyReason::UnknownCa) => HandshakeResult::UnknownCa,
            Some(DenyReason::CertExpired) => HandshakeResult::CertExpired,
            Some(_) => HandshakeResult::BadCertificate,
            None => info.result.unwrap_or(HandshakeResult::Full),
        };
        let error = match (refusal, &info.cert_error) {
            (_, Some(e)) => Some(e.clone()),
            (Some(DenyReason::IdentityNotAllowed), None) => Some(format!(
                "no identity of the client certificate is allowed (allowed: {})",
                tls.identities()
                    .patterns()
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => None,
        };
        let line = TlsLog {
            result,
            version: info.version,
            cipher: info.cipher,
            sni: info.sni.clone(),
            alpn: info.alpn.clone(),
            client_cert: info.client_cert.clone(),
            error,
            alert_sent: enforced.map(|_| ACCESS_DENIED),
            alert_received: None,
        };
        if let Some(mut r) = self.handshake_record(idx, generation, line) {
            r.verdict = match refusal {
                Some(reason) if tls.dry_run() => Decision::WouldDeny(reason),
                Some(reason) => Decision::Deny(reason),
                None => Decision::Allow,
            };
            self.guard.tls_handshake(listener.0, r);
        }
        if let Some(reason) = refusal {
            if tls.dry_run() {
                self.guard.would_deny(listener.0, peer, reason, now);
            } else {
                self.guard
                    .deny(listener.0, peer, local_port, reason, true, now);
                self.guard
                    .set_cause(idx, generation, CloseCause::TlsIdentityDenied);
                if let Some(conn) = self.core.conns.get_mut(idx, generation) {
                    if let Some(s) = conn.tls.as_mut() {
                        s.alert(&mut conn.tx_pending, ACCESS_DENIED);
                    }
                }
                self.close_after_flush(idx, generation, CloseReason::Local);
                return;
            }
        }
        self.guard
            .tls_established(idx, generation, !info.early.is_empty(), now);
        let stream = StreamInfo {
            conn: Conns::id(idx, generation),
            listener,
            peer,
            local,
        };
        self.core.current_plugin = plugin;
        let p = &mut self.plugins[plugin as usize];
        let core = &mut self.core;
        let verdict = guarded(|| p.handle_open(core, &stream)).unwrap_or_else(|| {
            // A panic refuses the stream, as a rejection would.
            self.plugin_panicked("handle_open", listener.0, peer);
            self.guard
                .set_cause(idx, generation, CloseCause::PluginPanic);
            Verdict::Reject
        });
        match verdict {
            Verdict::Accept => {
                self.core.counters.conns_accepted.add(1);
                let Some(conn) = self.core.conns.get_mut(idx, generation) else {
                    return;
                };
                conn.accepted = true;
                if !info.early.is_empty() {
                    conn.rx_pending.extend_from_slice(&info.early);
                    let r = self.run_pending(idx, generation);
                    self.after_deliver(idx, generation, r);
                }
                if info.peer_closed {
                    self.peer_finished(idx, generation);
                }
            }
            Verdict::Reject => {
                self.core.counters.conns_rejected.add(1);
                let Some(conn) = self.core.conns.get_mut(idx, generation) else {
                    return;
                };
                if let Some(s) = conn.tls.as_mut() {
                    s.close_notify(&mut conn.tx_pending);
                }
                self.close_after_flush(idx, generation, CloseReason::Local);
            }
        }
    }

    /// The handshake failed: count, log, send rustls's alert, close.
    fn tls_failed(&mut self, idx: u32, generation: u32, f: HandshakeFailure) {
        let Some(conn) = self.core.conns.get(idx, generation) else {
            return;
        };
        let (listener, peer, local_port) =
            (conn.listener, conn.peer, self.core.local_of(conn).port());
        self.handshakes.end(self.guard.source_key(peer.ip()));
        let now = self.core.clock.now();
        let denial = f.result.denial();
        let line = TlsLog {
            result: f.result,
            version: "",
            cipher: "",
            sni: f.sni,
            alpn: None,
            client_cert: f.client_cert,
            error: Some(f.error),
            alert_sent: f.alert_sent,
            alert_received: f.alert_received,
        };
        if let Some(mut r) = self.handshake_record(idx, generation, line) {
            if let Some(reason) = denial {
                r.verdict = Decision::Deny(reason);
            }
            self.guard.tls_handshake(listener, r);
        }
        if let Some(reason) = denial {
            self.guard
                .deny(listener, peer, local_port, reason, true, now);
        }
        self.guard
            .set_cause(idx, generation, CloseCause::TlsHandshakeFailed);
        self.close_after_flush(idx, generation, CloseReason::Local);
    }

    /// A stream closes while its handshake is still going on (timeout, the
    /// client gave up, shutdown): count and log how the handshake ended.
    pub(super) fn tls_aborted(&mut self, idx: u32, generation: u32, reason: CloseReason) {
        let Some(conn) = self.core.conns.get(idx, generation) else {
            return;
        };
        if !conn.tls.as_ref().is_some_and(|s| s.handshaking()) {
            return;
        }
        let (listener, peer) = (conn.listener, conn.peer);
        self.handshakes.end(self.guard.source_key(peer.ip()));
        let (result, error) = match reason {
            CloseReason::Error(libc::ETIMEDOUT) => (
                HandshakeResult::Timeout,
                "the handshake did not finish within the handshake timeout".to_owned(),
            ),
            CloseReason::Shutdown => return,
            other => (
                HandshakeResult::PeerClosed,
                format!("the connection closed during the handshake ({other:?})"),
            ),
        };
        let line = TlsLog {
            result,
            version: "",
            cipher: "",
            sni: None,
            alpn: None,
            client_cert: None,
            error: Some(error),
            alert_sent: None,
            alert_received: None,
        };
        if let Some(r) = self.handshake_record(idx, generation, line) {
            self.guard.tls_handshake(listener, r);
        }
    }

    /// A plaintext stream's first bytes: a TLS ClientHello is answered with
    /// a handshake_failure alert and closed before the plugin sees it.
    /// `true`: the bytes were taken.
    pub(super) fn client_hello_on_plain_port(
        &mut self,
        idx: u32,
        generation: u32,
        bid: u16,
        len: usize,
    ) -> bool {
        let first = self.bufs.tcp(bid, len);
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return false;
        };
        conn.first_checked = true;
        if !looks_like_client_hello(first) {
            return false;
        }
        conn.tx_pending.extend_from_slice(&PLAIN_HANDSHAKE_FAILURE);
        self.core
            .counters
            .drop_engine(EngineDrop::TlsOnPlainPort, 1);
        self.guard
            .set_cause(idx, generation, CloseCause::TlsOnPlainPort);
        self.close_after_flush(
            idx,
            generation,
            CloseReason::Protocol(DropReason::Malformed),
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_source_and_per_shard() {
        let mut caps = HandshakeCaps::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(caps.start(a, 2, 3), Ok(()));
        assert_eq!(caps.start(a, 2, 3), Ok(()));
        assert_eq!(caps.start(a, 2, 3), Err(DenyReason::HandshakesPerSource));
        assert_eq!(caps.start(b, 2, 3), Ok(()));
        assert_eq!(caps.start(b, 2, 3), Err(DenyReason::HandshakesPerShard));
        caps.end(a);
        assert_eq!(caps.start(b, 2, 3), Ok(()));
        for ip in [a, b, b] {
            caps.end(ip);
        }
        assert_eq!((caps.total, caps.per_source.len()), (0, 0));
        caps.end(a);
        assert_eq!(caps.total, 0, "an end without a start is ignored");
        assert_eq!(caps.start(a, 0, 0), Ok(()), "0: no limits");
    }

    #[test]
    fn client_hellos_are_told_from_plaintext() {
        assert!(looks_like_client_hello(&[22, 3, 1, 2, 0, 1, 0, 1]));
        assert!(!looks_like_client_hello(&[22, 3, 1, 2, 0]));
        assert!(!looks_like_client_hello(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_client_hello(&[22, 3, 9, 2, 0, 1]));
        assert!(!looks_like_client_hello(&[22, 3, 3, 2, 0, 2]));
    }
}
