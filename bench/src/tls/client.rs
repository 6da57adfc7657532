//! The load generator's rustls client settings.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use rustls::client::{ClientSessionMemoryCache, Resumption, Tls12Resumption};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;

use super::TlsFiles;

/// Which handshakes tls-handshake makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandshakeKind {
    /// Every connection a full handshake (the client keeps no session).
    Full,
    /// Every connection resumes the session of its connector's previous one
    /// (a TLS 1.3 ticket); each connector makes one full handshake to start,
    /// before the run.
    Resumed,
}

impl HandshakeKind {
    /// The command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeKind::Full => "full",
            HandshakeKind::Resumed => "resumed",
        }
    }
}

/// What the client trusts and how it connects: TLS 1.3, aws-lc-rs, the
/// run's CA as the only root, `localhost` as the name.
#[derive(Debug, Clone)]
pub struct ClientTls {
    roots: Arc<RootCertStore>,
    full: Arc<ClientConfig>,
}

impl ClientTls {
    /// Settings that trust the CA of `files`.
    pub fn new(files: &TlsFiles) -> Result<ClientTls> {
        let mut roots = RootCertStore::empty();
        roots
            .add(files.ca_der.clone())
            .map_err(|e| anyhow!("the run's CA certificate: {e}"))?;
        let roots = Arc::new(roots);
        let mut full = config(&roots)?;
        full.resumption = Resumption::disabled();
        Ok(ClientTls {
            roots,
            full: Arc::new(full),
        })
    }

    /// A configuration that never resumes: every handshake is full.
    pub fn full(&self) -> Arc<ClientConfig> {
        self.full.clone()
    }

    /// A configuration with a session store of its own, for one connector:
    /// each connection resumes with a ticket the previous one received.
    /// (A store shared by every connector would hand a ticket to whichever
    /// connector asks first, and a connector could find none left.)
    pub fn resuming(&self) -> Result<Arc<ClientConfig>> {
        let mut c = config(&self.roots)?;
        c.resumption = Resumption::store(Arc::new(ClientSessionMemoryCache::new(1)))
            .tls12_resumption(Tls12Resumption::Disabled);
        Ok(Arc::new(c))
    }

    /// A new client connection with `config`, whose plaintext queue is not
    /// capped (the load generator bounds what it queues itself).
    pub fn connect(config: Arc<ClientConfig>) -> Result<rustls::ClientConnection> {
        let mut conn = rustls::ClientConnection::new(config, server_name())
            .map_err(|e| anyhow!("starting a TLS client connection: {e}"))?;
        conn.set_buffer_limit(None);
        Ok(conn)
    }
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from(super::SERVER_NAME).expect("a valid DNS name")
}

fn config(roots: &Arc<RootCertStore>) -> Result<ClientConfig> {
    Ok(ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| anyhow!("TLS client configuration: {e}"))?
        .with_root_certificates(roots.clone())
        .with_no_client_auth())
}
