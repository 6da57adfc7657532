//! TLS on TCP listeners: rustls does the handshakes, the engine's own
//! record layer moves the bytes.
//!
//! # Layers
//!
//! - [`TlsSettings`] is what an operator configures per listener: the
//!   certificate chain and key, an optional client CA (mutual TLS), the
//!   lowest version, ALPN names, allowed client identities and the handshake
//!   limits.
//! - [`ListenerTls`] turns the settings into a rustls `ServerConfig` and
//!   holds it where every shard can take it without a lock (`arc-swap`).
//!   [`ListenerTls::reload`] re-reads the files (on SIGHUP): a good new set
//!   replaces the old for new handshakes, a bad one is refused and the old
//!   one stays. Open connections keep the keys they have.
//! - A connection's handshake runs in rustls's unbuffered API, driven by
//!   the shard with the bytes it receives (`session`). Once it completes,
//!   rustls hands over the traffic secrets (its kernel-TLS interface) and
//!   the shard encrypts and decrypts records *in place* in its own buffers
//!   (`record`): received records are opened inside the receive buffer the
//!   kernel filled, and plaintext a plugin writes is sealed inside the
//!   stream's send queue. That is the same split as kernel TLS, where the
//!   kernel takes the record layer: see docs/design-notes.md.
//!
//! Plugins never see any of it: a `tls` listener hands them plaintext, and
//! `handle_open` is called only once the handshake succeeded and the client's
//! identity passed the listener's allowlist.

pub mod client;
pub mod identity;
pub(crate) mod record;
pub(crate) mod session;

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

pub use identity::{CertIdentity, IdentityAllowlist, IdentityPattern, IdentityPatternError};

/// The engine's latency histogram of TLS handshakes, accept to established
/// (`ringport_latency_seconds{name="tls_handshake"}`).
pub const HANDSHAKE_LATENCY: &str = "tls_handshake";
/// Default time a client has to finish its handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap of handshakes in progress per source address and shard.
pub const DEFAULT_MAX_HANDSHAKES_PER_SOURCE: u32 = 64;
/// Most bytes of handshake a client may send before its handshake is done
/// (a ClientHello is a few hundred bytes, a client certificate chain a few
/// KiB): what one connection can make the shard hold during a handshake.
pub const MAX_HANDSHAKE_BYTES: usize = 64 * 1024;

/// How a TLS handshake ended, as counted per listener
/// (`ringport_tls_handshakes_total{result}`) and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HandshakeResult {
    /// A full handshake succeeded.
    Full = 0,
    /// A resumed handshake succeeded.
    Resumed = 1,
    /// The first bytes were not a TLS handshake record (plaintext sent to a TLS port).
    NotTls = 2,
    /// The client sent more handshake bytes than [`MAX_HANDSHAKE_BYTES`].
    TooLarge = 3,
    /// The client closed (or reset) the connection before the handshake ended.
    PeerClosed = 4,
    /// The handshake did not finish within the listener's handshake timeout.
    Timeout = 5,
    /// Mutual TLS: the client presented no certificate.
    NoCertificate = 6,
    /// Mutual TLS: the client certificate does not chain to the client CA.
    UnknownCa = 7,
    /// Mutual TLS: the client certificate is expired or not yet valid.
    CertExpired = 8,
    /// Mutual TLS: the client certificate is unusable for another reason
    /// (bad signature, wrong key usage, ...).
    BadCertificate = 9,
    /// Mutual TLS: the certificate is good but its identity is not allowed.
    IdentityNotAllowed = 10,
    /// The client sent a fatal alert.
    PeerAlert = 11,
    /// The client broke the protocol or shares no version, cipher suite or
    /// ALPN protocol with the listener.
    ProtocolError = 12,
}

impl HandshakeResult {
    /// Number of results.
    pub const COUNT: usize = 13;
    /// Every result, in discriminant order.
    pub const ALL: [HandshakeResult; HandshakeResult::COUNT] = [
        HandshakeResult::Full,
        HandshakeResult::Resumed,
        HandshakeResult::NotTls,
        HandshakeResult::TooLarge,
        HandshakeResult::PeerClosed,
        HandshakeResult::Timeout,
        HandshakeResult::NoCertificate,
        HandshakeResult::UnknownCa,
        HandshakeResult::CertExpired,
        HandshakeResult::BadCertificate,
        HandshakeResult::IdentityNotAllowed,
        HandshakeResult::PeerAlert,
        HandshakeResult::ProtocolError,
    ];

    /// The snake-case name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeResult::Full => "full",
            HandshakeResult::Resumed => "resumed",
            HandshakeResult::NotTls => "not_tls",
            HandshakeResult::TooLarge => "too_large",
            HandshakeResult::PeerClosed => "peer_closed",
            HandshakeResult::Timeout => "timeout",
            HandshakeResult::NoCertificate => "no_certificate",
            HandshakeResult::UnknownCa => "unknown_ca",
            HandshakeResult::CertExpired => "cert_expired",
            HandshakeResult::BadCertificate => "bad_certificate",
            HandshakeResult::IdentityNotAllowed => "identity_not_allowed",
            HandshakeResult::PeerAlert => "peer_alert",
            HandshakeResult::ProtocolError => "protocol_error",
        }
    }

    /// Whether the handshake succeeded.
    pub fn ok(self) -> bool {
        matches!(self, HandshakeResult::Full | HandshakeResult::Resumed)
    }

    /// The identity refusal this result is, if it is one: counted and
    /// logged as a denial, like an address outside the allowlist.
    pub fn denial(self) -> Option<crate::policy::DenyReason> {
        use crate::policy::DenyReason;
        match self {
            HandshakeResult::NoCertificate => Some(DenyReason::NoCertificate),
            HandshakeResult::UnknownCa => Some(DenyReason::UnknownCa),
            HandshakeResult::CertExpired => Some(DenyReason::CertExpired),
            HandshakeResult::BadCertificate => Some(DenyReason::BadCertificate),
            HandshakeResult::IdentityNotAllowed => Some(DenyReason::IdentityNotAllowed),
            _ => None,
        }
    }

    /// The result a rustls handshake error amounts to.
    pub fn of_error(e: &rustls::Error) -> HandshakeResult {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::NoCertificatesPresented => HandshakeResult::NoCertificate,
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer => HandshakeResult::UnknownCa,
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => HandshakeResult::CertExpired,
                _ => HandshakeResult::BadCertificate,
            },
            rustls::Error::AlertReceived(_) => HandshakeResult::PeerAlert,
            _ => HandshakeResult::ProtocolError,
        }
    }
}

impl fmt::Display for HandshakeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The RFC 8446 name of a TLS alert description.
pub fn alert_name(desc: u8) -> &'static str {
    match desc {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        100 => "no_renegotiation",
        109 => "missing_extension",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        113 => "bad_certificate_status_response",
        115 => "unknown_psk_identity",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => "unknown_alert",
    }
}

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (only when configured).
    V1_2,
    /// TLS 1.3 only (the default).
    #[default]
    V1_3,
}

impl FromStr for TlsVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1.2" => Ok(TlsVersion::V1_2),
            "1.3" => Ok(TlsVersion::V1_3),
            other => Err(format!(
                "`{other}` is not a TLS version ringport serves: use `1.3` (the default) or `1.2`"
            )),
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        })
    }
}

/// What an operator sets for one `tls` listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file with the certificate chain, leaf first.
    pub cert_chain: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates client certificates must chain to.
    /// Set: every client must present a certificate (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// The lowest version accepted.
    pub min_version: TlsVersion,
    /// ALPN protocol names offered, in order of preference (empty: no ALPN).
    pub alpn: Vec<String>,
    /// Client identities allowed (empty: every certificate that chains to
    /// `client_ca`). Needs `client_ca`.
    pub allow_identities: Vec<IdentityPattern>,
    /// A handshake not finished this long after the connection opened is
    /// closed (None: no limit).
    pub handshake_timeout: Option<Duration>,
    /// Handshakes in progress per source address on one shard; more are
    /// refused at accept (0: no limit).
    pub max_handshakes_per_source: u32,
    /// Offer session resumption (TLS 1.3 tickets, TLS 1.2 tickets and ids).
    pub resumption: bool,
}

impl TlsSettings {
    /// Settings with these files and every default.
    pub fn new(cert_chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsSettings {
        TlsSettings {
            cert_chain: cert_chain.into(),
            key: key.into(),
            client_ca: None,
            min_version: TlsVersion::V1_3,
            alpn: Vec::new(),
            allow_identities: Vec::new(),
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            max_handshakes_per_source: DEFAULT_MAX_HANDSHAKES_PER_SOURCE,
            resumption: true,
        }
    }
}

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file (certificate chain, key, client CA).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the kind needed.
    #[error("{what} {path}: {why}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The key does not belong to the chain's first certificate.
    #[error(
        "the key {key} does not match the certificate {cert} ({why}): the first certificate of \
         the chain must be the one the key was made for"
    )]
    KeyMismatch {
        /// The chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's words.
        why: String,
    },
    /// Identity patterns without a client CA: nothing would check them.
    #[error(
        "allowed identities are set but no client CA: identities come from client certificates, \
         so set a client CA (--tls-client-ca) as well"
    )]
    IdentitiesWithoutClientCa,
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A loaded certificate set, as it serves new handshakes.
#[derive(Debug)]
pub struct Loaded {
    /// The rustls configuration handshakes start from.
    pub config: Arc<ServerConfig>,
    /// The leaf certificate's names and validity.
    pub cert: CertIdentity,
    /// Certificates in the chain, leaf included.
    pub chain_len: usize,
    /// CA certificates in the client CA file (0: no mutual TLS).
    pub client_cas: usize,
    /// When these files were read.
    pub loaded_at: SystemTime,
}

impl Loaded {
    /// Seconds from `now` until the leaf certificate expires (negative once
    /// it has).
    pub fn expires_in(&self, now: SystemTime) -> i64 {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.cert.not_after - now
    }
}

/// One `tls` listener's TLS state, shared by its shards.
pub struct ListenerTls {
    settings: TlsSettings,
    dry_run: bool,
    identities: IdentityAllowlist,
    /// Ticket keys outlive reloads, so that a client resumes across one.
    ticketer: Option<Arc<dyn ProducesTickets>>,
    current: ArcSwap<Loaded>,
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls")
            .field("settings", &self.settings)
            .field("dry_run", &self.dry_run)
            .finish()
    }
}

impl ListenerTls {
    /// Loads the files and builds the configuration. `dry_run` (the
    /// operator's audit mode) lets clients whose certificate would be refused
    /// finish their handshake, so that the engine serves them and logs
    /// `would_deny` instead.
    pub fn new(settings: TlsSettings, dry_run: bool) -> Result<ListenerTls, TlsError> {
        if !settings.allow_identities.is_empty() && settings.client_ca.is_none() {
            return Err(TlsError::IdentitiesWithoutClientCa);
        }
        let ticketer = if settings.resumption {
            Some(
                rustls::crypto::aws_lc_rs::Ticketer::new()
                    .map_err(|e| TlsError::Config(e.to_string()))?,
            )
        } else {
            None
        };
        let loaded = build(&settings, dry_run, ticketer.clone())?;
        Ok(ListenerTls {
            identities: IdentityAllowlist::new(settings.allow_identities.clone()),
            settings,
            dry_run,
            ticketer,
            current: ArcSwap::from_pointee(loaded),
        })
    }

    /// Re-reads the files. New handshakes use them at once; on an error the
    /// old set stays and the error says why.
    pub fn reload(&self) -> Result<Arc<Loaded>, TlsError> {
        let loaded = Arc::new(build(&self.settings, self.dry_run, self.ticketer.clone())?);
        self.current.store(loaded.clone());
        Ok(loaded)
    }

    /// The set new handshakes use now.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// The settings it was made from.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// The allowed client identities.
    pub fn identities(&self) -> &IdentityAllowlist {
        &self.identities
    }

    /// Whether a client certificate is asked for.
    pub fn mutual(&self) -> bool {
        self.settings.client_ca.is_some()
    }

    /// Whether refusals are only logged (audit mode).
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// The configuration a new handshake starts from (no lock).
    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        self.current.load().config.clone()
    }
}

/// Loads and checks the files of `settings` without keeping them, for
/// `ringport check-config`: the chain parses, the key matches its first
/// certificate, the client CA parses.
pub fn check(settings: &TlsSettings) -> Result<Loaded, TlsError> {
    build(settings, false, None)
}

/// The crypto provider: aws-lc-rs (docs/design-notes.md says why).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Reads every certificate of a PEM file; refuses a file with none, or one
/// that does not parse as X.509.
pub fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let err = |why: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(
            "holds no `-----BEGIN CERTIFICATE-----` block".to_owned()
        ));
    }
    for (i, c) in certs.iter().enumerate() {
        CertIdentity::from_der(c).map_err(|e| err(format!("certificate {}: {e}", i + 1)))?;
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        what: "key",
        path: path.to_owned(),
        why: format!("no private key in it ({e}); write PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM"),
    })
}

fn build(
    s: &TlsSettings,
    dry_run: bool,
    ticketer: Option<Arc<dyn ProducesTickets>>,
) -> Result<Loaded, TlsError> {
    let provider = provider();
    let chain = read_certs("certificate chain", &s.cert_chain)?;
    let key = read_key(&s.key)?;
    let leaf = CertIdentity::from_der(&chain[0]).map_err(|e| TlsError::Pem {
        what: "certificate chain",
        path: s.cert_chain.clone(),
        why: e.to_string(),
    })?;
    let chain_len = chain.len();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: s.cert_chain.clone(),
            key: s.key.clone(),
            why: e.to_string(),
        },
        other => TlsError::Pem {
            what: "key",
            path: s.key.clone(),
            why: format!("not a usable private key: {other}"),
        },
    })?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match s.min_version {
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut client_cas = 0;
    let builder = match &s.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs("client CA", path)? {
                roots.add(c).map_err(|e| TlsError::Pem {
                    what: "client CA",
                    path: path.clone(),
                    why: format!("not a usable CA certificate: {e}"),
                })?;
                client_cas += 1;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(ClientVerifier {
                inner: verifier,
                audit: dry_run,
            }))
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(Resolver {
        key: Arc::new(certified),
    }));
    config.alpn_protocols = s.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    // The record layer is the engine's once the handshake is done.
    config.enable_secret_extraction = true;
    config.max_early_data_size = 0;
    match ticketer {
        Some(t) => config.ticketer = t,
        None => {
            config.send_tls13_tickets = 0;
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        }
    }
    Ok(Loaded {
        config: Arc::new(config),
        cert: leaf,
        chain_len,
        client_cas,
        loaded_at: SystemTime::now(),
    })
}

/// What rustls tells its callbacks during one `process_tls_records` call,
/// kept for the connection being driven. A shard drives one handshake at a
/// time on its own thread, so a thread-local holds it from the callback
/// until the shard takes it right after the call.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    /// The client's SNI, when it sent one.
    pub sni: Option<String>,
    /// In audit mode: why the client certificate would have been refused.
    pub cert_error: Option<rustls::Error>,
    /// Otherwise: the client certificate that was refused, so that the
    /// failed handshake's log line says whose it was.
    pub refused_cert: Option<CertIdentity>,
}

thread_local! {
    static CAPTURE: RefCell<Capture> = RefCell::new(Capture::default());
}

/// Takes what the callbacks captured since the last take.
pub(crate) fn take_capture() -> Capture {
    CAPTURE.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

/// Serves the listener's one certificate and notes the SNI asked for.
#[derive(Debug)]
struct Resolver {
    key: Arc<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_owned);
        CAPTURE.with(|c| c.borrow_mut().sni = sni);
        Some(self.key.clone())
    }
}

/// The client verifier of a mutual-TLS listener: rustls's WebPKI one, plus
/// what the log needs. A refused certificate's identity is captured, so
/// that the failed handshake's line names it. In audit mode (`audit`) it
/// asks for a certificate, checks it like the real one, but lets the
/// handshake finish whatever the verdict; the verdict is captured so the
/// engine can log `would_deny`.
#[derive(Debug)]
struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    audit: bool,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.audit && self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let e = match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if self.audit {
            CAPTURE.with(|c| c.borrow_mut().cert_error = Some(e));
            return Ok(ClientCertVerified::assertion());
        }
        // Parsed only when refused: a good certificate is read once the
        // handshake is done.
        let refused = CertIdentity::from_der(end_entity).ok();
        CAPTURE.with(|c| c.borrow_mut().refused_cert = refused);
        Err(e)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
