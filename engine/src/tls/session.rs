//! One TLS connection: its handshake, driven through rustls's unbuffered
//! API with the bytes the shard receives, then its records, sealed and
//! opened in place by the engine's [`RecordLayer`].
//!
//! # Calling order
//!
//! 1. [`Session::new`] at accept (or [`Session::client`] once an outbound
//!    stream connected: its ClientHello is queued at once).
//! 2. [`Session::handshake`] with every received chunk until it returns
//!    [`Progress::Done`] or [`Progress::Failed`]. Handshake records to send
//!    are appended to the stream's send queue.
//! 3. Then [`Session::read`] with every received chunk (decrypted in place,
//!    plaintext moved to the chunk's front), [`Session::write`] for what the
//!    plugin writes, [`Session::seal_open_record`] before the send queue is
//!    handed to the kernel, and [`Session::close_notify`] or
//!    [`Session::alert`] at the end.
//!
//! Memory is bounded during the handshake: rustls's state plus at most
//! [`MAX_HANDSHAKE_BYTES`] of input held. Afterwards a connection holds one
//! partial record at most (16 KiB and change), in a buffer that keeps its
//! capacity, so the steady state allocates nothing.

use std::sync::Arc;
use std::time::Instant;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::pki_types::ServerName;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError};
use rustls::{ClientConfig, HandshakeKind, ServerConfig, SupportedCipherSuite};

use super::identity::CertIdentity;
use super::record::{
    ContentType, Framing, RecordError, RecordLayer, HANDSHAKE_RECORD, HEADER, MAX_PLAINTEXT,
};
use super::{take_capture, HandshakeResult, MAX_HANDSHAKE_BYTES};

/// TLS handshake message type of a KeyUpdate.
const KEY_UPDATE: u8 = 24;
/// TLS handshake message type of a NewSessionTicket (a server's, after the
/// handshake).
const NEW_SESSION_TICKET: u8 = 4;
/// Alert level bytes.
const WARNING: u8 = 1;
const FATAL: u8 = 2;
/// Alert descriptions the record layer reacts to.
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;

/// What a successful handshake established.
#[derive(Debug, Default)]
pub struct HandshakeInfo {
    /// Full or resumed.
    pub result: Option<HandshakeResult>,
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The IANA name of the cipher suite.
    pub cipher: &'static str,
    /// The server name the client asked for.
    pub sni: Option<String>,
    /// The ALPN protocol agreed on.
    pub alpn: Option<String>,
    /// The client certificate's names, when one was presented.
    pub client_cert: Option<CertIdentity>,
    /// Audit mode: why the client certificate would have been refused.
    pub cert_refusal: Option<HandshakeResult>,
    /// The rustls error behind `cert_refusal`.
    pub cert_error: Option<String>,
    /// Plaintext the client sent right behind its last handshake message.
    pub early: Vec<u8>,
    /// The client sent close_notify right behind its handshake.
    pub peer_closed: bool,
}

/// Why a handshake failed, for the log and the counters.
#[derive(Debug)]
pub struct HandshakeFailure {
    /// The counted reason.
    pub result: HandshakeResult,
    /// What went wrong, in rustls's (or our) words.
    pub error: String,
    /// The alert sent to the client, when one was.
    pub alert_sent: Option<u8>,
    /// The alert the client sent, when it sent one.
    pub alert_received: Option<u8>,
    /// The server name the client asked for, when it got that far.
    pub sni: Option<String>,
    /// The client certificate, when it was presented and refused.
    pub client_cert: Option<CertIdentity>,
}

/// Where a handshake stands after a chunk of input.
#[derive(Debug)]
pub enum Progress {
    /// More input is needed.
    Pending,
    /// Established: records from now on.
    Done(Box<HandshakeInfo>),
    /// Failed; an alert may have been queued to send. Close after sending.
    Failed(Box<HandshakeFailure>),
}

/// How a chunk of records ended, when it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// The peer sent close_notify: no more data will come.
    PeerClosed,
    /// The peer sent a fatal alert (its description).
    AlertReceived(u8),
    /// A record was bad; send this alert and close.
    Failed(RecordError),
}

/// What [`Session::read`] did with a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Plaintext bytes now at the front of the chunk.
    pub plain: usize,
    /// Input ended (close_notify, alert, error); the rest was ignored.
    pub end: Option<ReadEnd>,
    /// Records were queued to send (a key update): flush the stream.
    pub wrote: bool,
}

enum State {
    Handshake(Box<UnbufferedServerConnection>),
    /// An outbound stream's handshake, as the client.
    ClientHandshake(Box<UnbufferedClientConnection>),
    Established(Box<Established>),
    /// Failed or closed: nothing more goes in or out.
    Done,
}

struct Established {
    records: RecordLayer,
    kernel: Kernel,
}

/// What rustls keeps after the handshake: the key schedule (key updates),
/// and a client's ticket handling.
enum Kernel {
    Server(KernelConnection<ServerConnectionData>),
    Client(KernelConnection<ClientConnectionData>),
}

impl Kernel {
    fn update_rx_secret(
        &mut self,
    ) -> Result<(u64, rustls::ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Server(k) => k.update_rx_secret(),
            Kernel::Client(k) => k.update_rx_secret(),
        }
    }

    fn update_tx_secret(
        &mut self,
    ) -> Result<(u64, rustls::ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Server(k) => k.update_tx_secret(),
            Kernel::Client(k) => k.update_tx_secret(),
        }
    }
}

/// One TLS connection's state (see the module docs).
pub struct Session {
    state: State,
    /// During the handshake: input rustls has not taken yet. After: the
    /// start of a record that has not arrived whole.
    rx: Vec<u8>,
    /// Where in the send queue the record being filled starts.
    tx_open: Option<usize>,
    /// When the connection was accepted (handshake latency).
    pub started: Instant,
    /// close_notify was queued.
    pub notified: bool,
    /// Some input arrived (the first byte is checked for TLS).
    seen_input: bool,
    /// Once established: the identities of the client certificate
    /// (`CertIdentity::sans`), what plugins get from
    /// `Context::peer_identities`.
    pub peer_identities: Vec<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Handshake(_) | State::ClientHandshake(_) => "handshake",
            State::Established(_) => "established",
            State::Done => "done",
        };
        f.debug_struct("Session").field("state", &state).finish()
    }
}

impl Session {
    /// A server session starting from `config`.
    pub fn new(config: Arc<ServerConfig>, now: Instant) -> Result<Session, rustls::Error> {
        Ok(Session {
            state: State::Handshake(Box::new(UnbufferedServerConnection::new(config)?)),
            rx: Vec::new(),
            tx_open: None,
            started: now,
            notified: false,
            seen_input: false,
            peer_identities: Vec::new(),
        })
    }

    /// A client session to `name` starting from `config`; the ClientHello
    /// is appended to `tx`.
    pub fn client(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        now: Instant,
        tx: &mut Vec<u8>,
    ) -> Result<Session, rustls::Error> {
        let mut s = Session {
            state: State::ClientHandshake(Box::new(UnbufferedClientConnection::new(config, name)?)),
            rx: Vec::new(),
            tx_open: None,
            started: now,
            notified: false,
            seen_input: true,
            peer_identities: Vec::new(),
        };
        match s.handshake(&[], tx) {
            Progress::Failed(f) => Err(rustls::Error::General(f.error)),
            _ => Ok(s),
        }
    }

    /// Whether the handshake is still going on.
    pub fn handshaking(&self) -> bool {
        matches!(self.state, State::Handshake(_) | State::ClientHandshake(_))
    }

    /// Whether this is an outbound stream's (client) session.
    pub fn is_client(&self) -> bool {
        match &self.state {
            State::ClientHandshake(_) => true,
            State::Established(e) => matches!(e.kernel, Kernel::Client(_)),
            _ => false,
        }
    }

    /// Bytes of input held: during the handshake, what rustls has not
    /// taken yet (at most [`MAX_HANDSHAKE_BYTES`]). For the fuzz target
    /// (`fuzz/`), which checks that bound.
    #[doc(hidden)]
    pub fn held_bytes(&self) -> usize {
        self.rx.len()
    }

    /// Whether records flow (the handshake succeeded and nothing failed since).
    pub fn established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    fn fail(&mut self, result: HandshakeResult, error: String) -> Progress {
        self.state = State::Done;
        Progress::Failed(Box::new(HandshakeFailure {
            result,
            error,
            alert_sent: None,
            alert_received: None,
            sni: None,
            client_cert: None,
        }))
    }

    /// Feeds received bytes to the handshake; records to send are appended
    /// to `tx`.
    pub fn handshake(&mut self, input: &[u8], tx: &mut Vec<u8>) -> Progress {
        if !self.handshaking() {
            return Progress::Pending;
        }
        if matches!(self.state, State::ClientHandshake(_)) {
            return self.client_handshake(input, tx);
        }
        let first = !self.seen_input;
        self.seen_input = true;
        if first && input.first().is_some_and(|&b| b != HANDSHAKE_RECORD) {
            return self.fail(
                HandshakeResult::NotTls,
                format!(
                    "not TLS: the first byte is 0x{:02x}, a TLS handshake starts with 0x16 \
                     (plaintext sent to a TLS port?)",
                    input[0]
                ),
            );
        }
        if self.rx.len() + input.len() > MAX_HANDSHAKE_BYTES {
            return self.fail(
                HandshakeResult::TooLarge,
                format!("more than {MAX_HANDSHAKE_BYTES} bytes of handshake without finishing it"),
            );
        }
        self.rx.extend_from_slice(input);
        let mut early: Vec<u8> = Vec::new();
        let mut peer_closed = false;
        let mut sni = None;
        let mut cert_error = None;
        let mut refused_cert = None;
        let State::Handshake(conn) = &mut self.state else {
            return Progress::Pending;
        };
        loop {
            let status = conn.process_tls_records(&mut self.rx);
            let discard = status.discard;
            let step = handshake_step(status.state, tx, &mut early, &mut peer_closed);
            self.rx.drain(..discard);
            let capture = take_capture();
            sni = sni.or(capture.sni);
            cert_error = cert_error.or(capture.cert_error);
            refused_cert = refused_cert.or(capture.refused_cert);
            match step {
                Step::Again => continue,
                Step::Blocked => return Progress::Pending,
                Step::Failed(e) => {
                    let mut f = self.drain_failure(e, tx);
                    if let Progress::Failed(f) = &mut f {
                        f.sni = sni;
                        f.client_cert = refused_cert;
                    }
                    return f;
                }
                Step::Established => break,
            }
        }
        self.establish(early, peer_closed, sni, cert_error)
    }

    /// An outbound stream's handshake, as the client: no first-byte check
    /// (a server may answer with an alert), no identity capture; the
    /// server's certificate names become [`Session::peer_identities`].
    fn client_handshake(&mut self, input: &[u8], tx: &mut Vec<u8>) -> Progress {
        if self.rx.len() + input.len() > MAX_HANDSHAKE_BYTES {
            return self.fail(
                HandshakeResult::TooLarge,
                format!("more than {MAX_HANDSHAKE_BYTES} bytes of handshake without finishing it"),
            );
        }
        self.rx.extend_from_slice(input);
        let mut early: Vec<u8> = Vec::new();
        let mut peer_closed = false;
        let State::ClientHandshake(conn) = &mut self.state else {
            return Progress::Pending;
        };
        loop {
            let status = conn.process_tls_records(&mut self.rx);
            let discard = status.discard;
            let step = handshake_step(status.state, tx, &mut early, &mut peer_closed);
            self.rx.drain(..discard);
            match step {
                Step::Again => continue,
                Step::Blocked => return Progress::Pending,
                Step::Failed(e) => return self.drain_failure(e, tx),
                Step::Established => break,
            }
        }
        let State::ClientHandshake(conn) = std::mem::replace(&mut self.state, State::Done) else {
            return Progress::Pending;
        };
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLSv1.3",
        };
        let suite = conn.negotiated_cipher_suite();
        let cipher = suite.and_then(|s| s.suite().as_str()).unwrap_or("unknown");
        let alpn = conn
            .alpn_protocol()
            .map(|a| String::from_utf8_lossy(a).into_owned());
        let server_cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| CertIdentity::from_der(c).ok());
        let limit = match suite {
            Some(SupportedCipherSuite::Tls13(s)) => s.common.confidentiality_limit,
            Some(SupportedCipherSuite::Tls12(s)) => s.common.confidentiality_limit,
            None => 0,
        };
        let (secrets, kernel) = match (*conn).dangerous_into_kernel_connection() {
            Ok(v) => v,
            Err(e) => return self.fail(HandshakeResult::ProtocolError, e.to_string()),
        };
        let records = match RecordLayer::new(version == "TLSv1.3", secrets.tx, secrets.rx, limit) {
            Ok(r) => r,
            Err(e) => {
                return self.fail(
                    HandshakeResult::ProtocolError,
                    format!("the record layer cannot take the negotiated keys: {e:?}"),
                )
            }
        };
        self.peer_identities = server_cert.as_ref().map(|c| c.sans()).unwrap_or_default();
        self.state = State::Established(Box::new(Established {
            records,
            kernel: Kernel::Client(kernel),
        }));
        Progress::Done(Box::new(HandshakeInfo {
            result: Some(HandshakeResult::Full),
            version,
            cipher,
            sni: None,
            alpn,
            client_cert: server_cert,
            cert_refusal: None,
            cert_error: None,
            early,
            peer_closed,
        }))
    }

    /// After a handshake error: queues the alert rustls has for the client
    /// and reports the failure.
    fn drain_failure(&mut self, e: rustls::Error, tx: &mut Vec<u8>) -> Progress {
        let mut alert_sent = None;
        if let State::Handshake(conn) = &mut self.state {
            // rustls queues its fatal alert; a few more turns hand it over.
            for _ in 0..4 {
                let status = conn.process_tls_records(&mut self.rx);
                match status.state {
                    Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                        let start = tx.len();
                        encode(tx, |out| enc.encode(out));
                        // A plaintext alert record: 21, version, length 2, level, description.
                        if tx.len() - start == 7 && tx[start] == 21 {
                            alert_sent = Some(tx[start + 6]);
                        }
                        // The alert is out. Another turn would make rustls
                        // read the bytes that failed again (a record it could
                        // not deframe stays in `rx`) and fail on them again,
                        // queueing a second fatal alert (a debug assertion).
                        break;
                    }
                    Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                    _ => break,
                }
            }
        }
        let _ = take_capture();
        let alert_received = match &e {
            rustls::Error::AlertReceived(a) => Some(u8::from(*a)),
            _ => None,
        };
        if alert_sent.is_none() && alert_received.is_none() {
            // Encrypted (TLS 1.3 after ServerHello): the alert rustls sends
            // for these errors is fixed.
            alert_sent = match &e {
                rustls::Error::NoCertificatesPresented => Some(116),
                rustls::Error::InvalidCertificate(c) => {
                    Some(u8::from(rustls::AlertDescription::from(c.clone())))
                }
                rustls::Error::InvalidMessage(m) => {
                    Some(u8::from(rustls::AlertDescription::from(*m)))
                }
                _ => None,
            };
        }
        self.state = State::Done;
        Progress::Failed(Box::new(HandshakeFailure {
            result: HandshakeResult::of_error(&e),
            error: e.to_string(),
            alert_sent,
            alert_received,
            sni: None,
            client_cert: None,
        }))
    }

    /// Takes the secrets from rustls and switches to the record layer.
    fn establish(
        &mut self,
        early: Vec<u8>,
        peer_closed: bool,
        sni: Option<String>,
        cert_error: Option<rustls::Error>,
    ) -> Progress {
        let State::Handshake(conn) = std::mem::replace(&mut self.state, State::Done) else {
            return Progress::Pending;
        };
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLSv1.3",
        };
        let suite = conn.negotiated_cipher_suite();
        let cipher = suite.and_then(|s| s.suite().as_str()).unwrap_or("unknown");
        let alpn = conn
            .alpn_protocol()
            .map(|a| String::from_utf8_lossy(a).into_owned());
        let result = match conn.handshake_kind() {
            Some(HandshakeKind::Resumed) => HandshakeResult::Resumed,
            _ => HandshakeResult::Full,
        };
        let client_cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| CertIdentity::from_der(c).ok());
        let cert_refusal = cert_error.as_ref().map(HandshakeResult::of_error);
        let limit = match suite {
            Some(SupportedCipherSuite::Tls13(s)) => s.common.confidentiality_limit,
            Some(SupportedCipherSuite::Tls12(s)) => s.common.confidentiality_limit,
            None => 0,
        };
        let tls13 = version == "TLSv1.3";
        let (secrets, kernel) = match (*conn).dangerous_into_kernel_connection() {
            Ok(v) => v,
            Err(e) => return self.fail(HandshakeResult::ProtocolError, e.to_string()),
        };
        let records = match RecordLayer::new(tls13, secrets.tx, secrets.rx, limit) {
            Ok(r) => r,
            Err(e) => {
                return self.fail(
                    HandshakeResult::ProtocolError,
                    format!("the record layer cannot take the negotiated keys: {e:?}"),
                )
            }
        };
        self.state = State::Established(Box::new(Established {
            records,
            kernel: Kernel::Server(kernel),
        }));
        Progress::Done(Box::new(HandshakeInfo {
            result: Some(result),
            version,
            cipher,
            sni,
            alpn,
            client_cert,
            cert_refusal,
            cert_error: cert_error.map(|e| e.to_string()),
            early,
            peer_closed,
        }))
    }

    /// Opens the records in `buf` in place. Plaintext of records that lie
    /// wholly in `buf` is moved to its front ([`Read::plain`] bytes);
    /// plaintext of a record that began in an earlier chunk is appended to
    /// `pending` (it comes first). The start of a record that does not end
    /// in `buf` is kept for the next chunk. Key updates may queue records
    /// to `tx`.
    pub fn read(&mut self, buf: &mut [u8], pending: &mut Vec<u8>, tx: &mut Vec<u8>) -> Read {
        let mut out = Read {
            plain: 0,
            end: None,
            wrote: false,
        };
        if !self.established() {
            out.end = Some(ReadEnd::Failed(RecordError::UnexpectedMessage));
            return out;
        }
        let mut pos = 0;
        // A record begun in an earlier chunk.
        if !self.rx.is_empty() {
            let mut need = HEADER;
            loop {
                if self.rx.len() < need {
                    let take = (need - self.rx.len()).min(buf.len() - pos);
                    self.rx.extend_from_slice(&buf[pos..pos + take]);
                    pos += take;
                    if self.rx.len() < need {
                        return out;
                    }
                }
                let State::Established(est) = &mut self.state else {
                    return out;
                };
                match est.records.record_len(&self.rx) {
                    Err(e) => {
                        out.end = Some(ReadEnd::Failed(e));
                        return out;
                    }
                    Ok(Framing::Record(n)) if n > self.rx.len() => need = n,
                    Ok(_) => break,
                }
            }
            let mut rec = std::mem::take(&mut self.rx);
            let r = self.record(&mut rec, 0, tx, &mut out);
            if let Some(range) = r {
                pending.extend_from_slice(&rec[range]);
            }
            rec.clear();
            self.rx = rec;
            if out.end.is_some() {
                return out;
            }
        }
        // Whole records in this chunk.
        let mut w = 0;
        while pos < buf.len() {
            let State::Established(est) = &mut self.state else {
                break;
            };
            let n = match est.records.record_len(&buf[pos..]) {
                Err(e) => {
                    out.end = Some(ReadEnd::Failed(e));
                    break;
                }
                Ok(Framing::NeedHeader) => break,
                Ok(Framing::Record(n)) if pos + n > buf.len() => break,
                Ok(Framing::Record(n)) => n,
            };
            let rec = &mut buf[pos..pos + n];
            if let Some(range) = self.record(rec, 0, tx, &mut out) {
                buf.copy_within(pos + range.start..pos + range.end, w);
                w += range.len();
            }
            pos += n;
            if out.end.is_some() {
                break;
            }
        }
        out.plain = w;
        if out.end.is_none() {
            self.rx.extend_from_slice(&buf[pos..]);
        }
        out
    }

    /// Opens one whole record at `rec[at..]`; returns where its application
    /// data is, or acts on what it carries (alerts, key updates).
    fn record(
        &mut self,
        rec: &mut [u8],
        at: usize,
        tx: &mut Vec<u8>,
        out: &mut Read,
    ) -> Option<std::ops::Range<usize>> {
        let State::Established(est) = &mut self.state else {
            return None;
        };
        let (typ, range) = match est.records.open(&mut rec[at..]) {
            Ok(v) => v,
            Err(e) => {
                out.end = Some(ReadEnd::Failed(e));
                return None;
            }
        };
        let range = at + range.start..at + range.end;
        match typ {
            ContentType::ApplicationData => return Some(range),
            ContentType::Alert => {
                let body = &rec[range];
                if body.len() != 2 {
                    out.end = Some(ReadEnd::Failed(RecordError::DecodeError));
                } else if body[1] == CLOSE_NOTIFY {
                    out.end = Some(ReadEnd::PeerClosed);
                } else if body[1] == USER_CANCELED || (body[0] == WARNING && !est.tls13()) {
                    // Warnings mean nothing to act on.
                } else {
                    out.end = Some(ReadEnd::AlertReceived(body[1]));
                }
            }
            ContentType::Handshake => {
                let mut body = &rec[range];
                if matches!(est.kernel, Kernel::Client(_)) && est.tls13() {
                    // A server sends session tickets after the handshake;
                    // outbound streams do not resume, so they are skipped.
                    // A cut one stays and fails below.
                    while let [NEW_SESSION_TICKET, a, b, c, rest @ ..] = body {
                        let len = u32::from_be_bytes([0, *a, *b, *c]) as usize;
                        if rest.len() < len {
                            break;
                        }
                        body = &rest[len..];
                    }
                    if body.is_empty() {
                        return None;
                    }
                }
                let key_update = est.tls13()
                    && body.len() == 5
                    && body[..4] == [KEY_UPDATE, 0, 0, 1]
                    && body[4] <= 1;
                if !key_update {
                    // TLS 1.2: renegotiation, which ringport does not do;
                    // TLS 1.3: a message a client never sends after its Finished.
                    out.end = Some(ReadEnd::Failed(if est.tls13() {
                        RecordError::UnexpectedMessage
                    } else {
                        RecordError::Renegotiation
                    }));
                    return None;
                }
                let requested = body[4] == 1;
                match est.kernel.update_rx_secret() {
                    Ok((seq, s)) => {
                        if let Err(e) = est.records.set_rx(seq, &s) {
                            out.end = Some(ReadEnd::Failed(e));
                            return None;
                        }
                    }
                    Err(_) => {
                        out.end = Some(ReadEnd::Failed(RecordError::UnexpectedMessage));
                        return None;
                    }
                }
                if requested {
                    if let Err(e) = self.key_update(tx) {
                        out.end = Some(ReadEnd::Failed(e));
                    }
                    out.wrote = true;
                }
            }
            ContentType::ChangeCipherSpec => {
                out.end = Some(ReadEnd::Failed(RecordError::UnexpectedMessage));
            }
        }
        None
    }

    /// Sends a KeyUpdate (not requesting one back) under the current key and
    /// switches to the next one (RFC 8446 §4.6.3).
    fn key_update(&mut self, tx: &mut Vec<u8>) -> Result<(), RecordError> {
        self.seal_open_record(tx)?;
        let State::Established(est) = &mut self.state else {
            return Err(RecordError::UnexpectedMessage);
        };
        let start = tx.len();
        tx.resize(start + est.records.prefix_len(), 0);
        tx.extend_from_slice(&[KEY_UPDATE, 0, 0, 1, 0]);
        est.records.seal(tx, start, ContentType::Handshake)?;
        let (seq, s) = est
            .kernel
            .update_tx_secret()
            .map_err(|_| RecordError::KeysExhausted)?;
        est.records.set_tx(seq, &s)
    }

    /// Frames `parts` as application data records at the end of `tx`: the
    /// bytes are copied once, into place, and sealed there once a record is
    /// full or [`seal_open_record`](Self::seal_open_record) is called.
    pub fn write(&mut self, tx: &mut Vec<u8>, parts: &[&[u8]]) -> Result<(), RecordError> {
        for part in parts {
            let mut p: &[u8] = part;
            while !p.is_empty() {
                let start = match self.tx_open {
                    Some(s) => s,
                    None => self.open_record(tx)?,
                };
                let State::Established(est) = &mut self.state else {
                    return Err(RecordError::UnexpectedMessage);
                };
                let filled = tx.len() - start - est.records.prefix_len();
                let n = (MAX_PLAINTEXT - filled).min(p.len());
                tx.extend_from_slice(&p[..n]);
                p = &p[n..];
                if filled + n == MAX_PLAINTEXT {
                    self.seal_open_record(tx)?;
                }
            }
        }
        Ok(())
    }

    /// Starts a record at the end of `tx`, after a key update if the
    /// current key has sealed all it may (TLS 1.3; TLS 1.2 closes).
    fn open_record(&mut self, tx: &mut Vec<u8>) -> Result<usize, RecordError> {
        let State::Established(est) = &mut self.state else {
            return Err(RecordError::UnexpectedMessage);
        };
        if est.records.tx_exhausted_soon() {
            if !est.tls13() {
                return Err(RecordError::KeysExhausted);
            }
            self.key_update(tx)?;
        }
        let State::Established(est) = &mut self.state else {
            return Err(RecordError::UnexpectedMessage);
        };
        let start = tx.len();
        tx.resize(start + est.records.prefix_len(), 0);
        self.tx_open = Some(start);
        Ok(start)
    }

    /// Seals the record being filled, if any: before `tx` goes to the kernel.
    pub fn seal_open_record(&mut self, tx: &mut Vec<u8>) -> Result<(), RecordError> {
        let Some(start) = self.tx_open.take() else {
            return Ok(());
        };
        let State::Established(est) = &mut self.state else {
            return Err(RecordError::UnexpectedMessage);
        };
        est.records.seal(tx, start, ContentType::ApplicationData)
    }

    /// Queues close_notify after everything written (a graceful close).
    pub fn close_notify(&mut self, tx: &mut Vec<u8>) {
        if self.notified {
            return;
        }
        self.notified = true;
        let _ = self.queue_alert(tx, WARNING, CLOSE_NOTIFY);
    }

    /// Queues a fatal alert and ends the session: nothing more goes in or out.
    pub fn alert(&mut self, tx: &mut Vec<u8>, desc: u8) {
        let _ = self.queue_alert(tx, FATAL, desc);
        self.notified = true;
        self.state = State::Done;
    }

    fn queue_alert(&mut self, tx: &mut Vec<u8>, level: u8, desc: u8) -> Result<(), RecordError> {
        self.seal_open_record(tx)?;
        let State::Established(est) = &mut self.state else {
            return Ok(());
        };
        let start = tx.len();
        tx.resize(start + est.records.prefix_len(), 0);
        tx.extend_from_slice(&[level, desc]);
        est.records.seal(tx, start, ContentType::Alert)
    }
}

impl Established {
    fn tls13(&self) -> bool {
        self.records.tls13()
    }
}

/// Encodes one handshake record at the end of `tx` with rustls's encoder,
/// growing `tx` to the size it asks for.
/// What one handshake step decided, once rustls's borrows of the input are
/// over.
enum Step {
    Again,
    Blocked,
    Established,
    Failed(rustls::Error),
}

/// One state of a handshake, on either side: flights are encoded into
/// `tx`, application data that came with the handshake goes to `early`, a
/// close_notify sets `peer_closed`.
fn handshake_step<Data>(
    state: Result<ConnectionState<'_, '_, Data>, rustls::Error>,
    tx: &mut Vec<u8>,
    early: &mut Vec<u8>,
    peer_closed: &mut bool,
) -> Step {
    match state {
        Ok(ConnectionState::EncodeTlsData(mut e)) => {
            encode(tx, |out| e.encode(out));
            Step::Again
        }
        Ok(ConnectionState::TransmitTlsData(t)) => {
            // What was encoded sits in `tx`; the shard sends it.
            t.done();
            Step::Again
        }
        Ok(ConnectionState::BlockedHandshake) => Step::Blocked,
        Ok(ConnectionState::ReadTraffic(mut r)) => {
            while let Some(rec) = r.next_record() {
                match rec {
                    Ok(rec) => early.extend_from_slice(rec.payload),
                    Err(e) => return Step::Failed(e),
                }
            }
            Step::Again
        }
        Ok(ConnectionState::PeerClosed) => {
            *peer_closed = true;
            Step::Again
        }
        Ok(ConnectionState::WriteTraffic(_)) | Ok(ConnectionState::Closed) => Step::Established,
        // Early data is refused (max_early_data_size 0), and the state enum
        // may grow.
        Ok(_) => Step::Failed(rustls::Error::General(
            "unexpected handshake state".to_owned(),
        )),
        Err(e) => Step::Failed(e),
    }
}

fn encode(tx: &mut Vec<u8>, mut enc: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>) {
    let start = tx.len();
    tx.resize(start + 4096, 0);
    loop {
        match enc(&mut tx[start..]) {
            Ok(n) => {
                tx.truncate(start + n);
                return;
            }
            Err(EncodeError::InsufficientSize(s)) => tx.resize(start + s.required_size, 0),
            Err(EncodeError::AlreadyEncoded) => {
                tx.truncate(start);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! A session driven in memory against a rustls client: the handshake,
    //! records both ways in pieces of every size, key updates from either
    //! side, close_notify, and TLS 1.2.

    use super::*;
    use crate::tls::{ListenerTls, TlsSettings, TlsVersion};
    use rcgen::{CertificateParams, KeyPair};
    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    use std::io::{Read, Write};

    struct Pair {
        client: ClientConnection,
        server: Session,
        /// Server to client bytes not yet read by the client.
        to_client: Vec<u8>,
        /// Plaintext the server received.
        got: Vec<u8>,
        /// Plaintext the client received.
        client_got: Vec<u8>,
        _dir: TempDir,
    }

    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pair(version: &'static rustls::SupportedProtocolVersion) -> Pair {
        let dir = std::env::temp_dir().join(format!(
            "ringport-session-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("c.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), key.serialize_pem()).unwrap();
        let mut settings = TlsSettings::new(dir.join("c.pem"), dir.join("k.pem"));
        settings.min_version = TlsVersion::V1_2;
        let tls = ListenerTls::new(settings, false).unwrap();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(cert.der().to_vec()))
            .unwrap();
        let cfg = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = ClientConnection::new(
            std::sync::Arc::new(cfg),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        Pair {
            client,
            server: Session::new(tls.server_config(), Instant::now()).unwrap(),
            to_client: Vec::new(),
            got: Vec::new(),
            client_got: Vec::new(),
            _dir: TempDir(dir),
        }
    }

    impl Pair {
        /// Moves the client's pending bytes to the server in chunks of
        /// `chunk`, and the server's answers back; returns how the
        /// handshake went if it ended.
        fn client_to_server(&mut self, chunk: usize) -> Option<Progress> {
            let mut wire = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut wire).unwrap();
            }
            let mut outcome = None;
            let mut pending = Vec::new();
            for piece in wire.chunks(chunk.max(1)) {
                let mut piece = piece.to_vec();
                if self.server.handshaking() {
                    match self.server.handshake(&piece, &mut self.to_client) {
                        Progress::Pending => {}
                        p => outcome = Some(p),
                    }
                } else {
                    let r = self
                        .server
                        .read(&mut piece, &mut pending, &mut self.to_client);
                    self.got.append(&mut pending);
                    self.got.extend_from_slice(&piece[..r.plain]);
                    assert_eq!(r.end, None);
                }
            }
            self.server.seal_open_record(&mut self.to_client).unwrap();
            self.flush_to_client();
            outcome
        }

        /// Feeds the server's bytes to the client, taking the plaintext as
        /// it comes (rustls buffers only so much).
        fn flush_to_client(&mut self) {
            let wire = std::mem::take(&mut self.to_client);
            let mut rd = &wire[..];
            while !rd.is_empty() {
                self.client.read_tls(&mut rd).unwrap();
                self.client.process_new_packets().unwrap();
                let mut got = self.client_reads();
                self.client_got.append(&mut got);
            }
        }

        fn handshake(&mut self) -> Box<HandshakeInfo> {
            for _ in 0..8 {
                if let Some(p) = self.client_to_server(usize::MAX) {
                    match p {
                        Progress::Done(info) => {
                            // The client's Finished may still be on its way out.
                            self.client_to_server(usize::MAX);
                            return info;
                        }
                        other => panic!("handshake failed: {other:?}"),
                    }
                }
            }
            panic!("the handshake did not finish");
        }

        fn client_reads(&mut self) -> Vec<u8> {
            let mut out = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                match self.client.reader().read(&mut buf) {
                    Ok(0) => return out,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return out,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn records_flow_both_ways_in_pieces_of_every_size_with_key_updates() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let mut p = pair(version);
            let info = p.handshake();
            assert_eq!(info.result, Some(HandshakeResult::Full));
            let tls13 = std::ptr::eq(version, &rustls::version::TLS13);
            assert_eq!(info.version, if tls13 { "TLSv1.3" } else { "TLSv1.2" });
            let mut sent = Vec::new();
            for (i, (len, chunk)) in [(1, 1), (100, 7), (16384, 1000), (40000, 16389), (5, 3)]
                .into_iter()
                .enumerate()
            {
                let msg = pattern(len, i as u8);
                p.client.writer().write_all(&msg).unwrap();
                sent.extend_from_slice(&msg);
                if tls13 && i == 2 {
                    // The client updates its keys and asks the server to.
                    p.client.refresh_traffic_keys().unwrap();
                }
                p.client_to_server(chunk);
            }
            assert!(p.got == sent, "server received what the client sent");
            // Server to client: written in parts, sealed, read back.
            let reply = pattern(50_000, 9);
            p.server
                .write(&mut p.to_client, &[&reply[..10], &reply[10..]])
                .unwrap();
            p.server.seal_open_record(&mut p.to_client).unwrap();
            p.flush_to_client();
            assert!(p.client_got == reply);
            // Close: the client hears close_notify.
            p.server.close_notify(&mut p.to_client);
            p.flush_to_client();
            let mut buf = [0u8; 1];
            assert_eq!(p.client.reader().read(&mut buf).unwrap(), 0, "clean EOF");
        }
    }

    #[test]
    fn the_server_updates_its_keys_before_they_run_out() {
        let mut p = pair(&rustls::version::TLS13);
        p.handshake();
        if let State::Established(est) = &mut p.server.state {
            est.records.set_tx_limit(5);
        }
        let mut all = Vec::new();
        for i in 0..20u8 {
            let msg = pattern(100, i);
            p.server.write(&mut p.to_client, &[&msg]).unwrap();
            p.server.seal_open_record(&mut p.to_client).unwrap();
            all.extend_from_slice(&msg);
        }
        p.flush_to_client();
        assert!(p.client_got == all, "the client followed the key updates");
    }

    #[test]
    fn bad_records_and_alerts_end_the_input() {
        let mut p = pair(&rustls::version::TLS13);
        p.handshake();
        p.client.writer().write_all(b"hello").unwrap();
        let mut wire = Vec::new();
        p.client.write_tls(&mut wire).unwrap();
        let last = wire.len() - 1;
        wire[last] ^= 0x80;
        let mut pending = Vec::new();
        let r = p.server.read(&mut wire, &mut pending, &mut p.to_client);
        assert_eq!(r.end, Some(ReadEnd::Failed(RecordError::BadRecordMac)));
        assert_eq!(r.plain, 0);

        let mut p = pair(&rustls::version::TLS13);
        p.handshake();
        p.client.send_close_notify();
        let mut wire = Vec::new();
        p.client.write_tls(&mut wire).unwrap();
        let r = p.server.read(&mut wire, &mut pending, &mut p.to_client);
        assert_eq!(r.end, Some(ReadEnd::PeerClosed));
    }

    #[test]
    fn a_bad_record_behind_the_client_hello_fails_once() {
        // Found by fuzz/ (tls_handshake): after encoding its alert, rustls
        // was asked for more and read the bad record again, failing on it a
        // second time (a debug assertion in rustls; a second alert queued
        // in release).
        let mut p = pair(&rustls::version::TLS13);
        let mut hello = Vec::new();
        p.client.write_tls(&mut hello).unwrap();
        hello.extend_from_slice(&[22, 3, 3, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        let mut tx = Vec::new();
        match p.server.handshake(&hello, &mut tx) {
            Progress::Failed(f) => {
                assert_eq!(f.result, HandshakeResult::ProtocolError, "{f:?}");
                assert_eq!(f.error, "cannot decrypt peer's message");
            }
            other => panic!("{other:?}"),
        }
        // The ServerHello flight and one alert (encrypted: the client's
        // bytes after its hello are read as TLS 1.3 records), then nothing.
        let sent = tx.len();
        assert!(matches!(
            p.server.handshake(&hello, &mut tx),
            Progress::Pending
        ));
        assert_eq!(tx.len(), sent);
        let mut records = 0;
        let mut rest = &tx[..];
        while rest.len() >= 5 {
            records += 1;
            rest = &rest[5 + usize::from(u16::from_be_bytes([rest[3], rest[4]]))..];
        }
        assert!(rest.is_empty());
        p.client.read_tls(&mut &tx[..]).unwrap();
        assert!(
            p.client.process_new_packets().is_err(),
            "the client hears the alert"
        );
        assert!(records >= 3, "{records} records");
    }

    #[test]
    fn plaintext_and_oversized_handshakes_fail_clearly() {
        let mut p = pair(&rustls::version::TLS13);
        let mut tx = Vec::new();
        match p.server.handshake(b"GET / HTTP/1.1\r\n", &mut tx) {
            Progress::Failed(f) => {
                assert_eq!(f.result, HandshakeResult::NotTls);
                assert!(f.error.contains("0x47"), "{}", f.error);
            }
            other => panic!("{other:?}"),
        }
        let mut p = pair(&rustls::version::TLS13);
        // A handshake record header announcing 16 KiB, then endless bytes.
        let mut first = vec![22u8, 3, 1, 0x40, 0];
        first.extend_from_slice(&[1u8; 1000]);
        assert!(matches!(
            p.server.handshake(&first, &mut tx),
            Progress::Pending | Progress::Failed(_)
        ));
        let mut outcome = None;
        for _ in 0..100 {
            match p.server.handshake(&[0u8; 1000], &mut tx) {
                Progress::Pending => {}
                other => {
                    outcome = Some(other);
                    break;
                }
            }
        }
        match outcome {
            Some(Progress::Failed(f)) => assert!(
                matches!(
                    f.result,
                    HandshakeResult::TooLarge | HandshakeResult::ProtocolError
                ),
                "{f:?}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
