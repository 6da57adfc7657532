//! The load generator's rustls client settings.

use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionMemoryCache, Resumption, Tls12Resumption, WebPkiServerVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

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
    verifier: Arc<RunVerifier>,
    full: Arc<ClientConfig>,
}

impl ClientTls {
    /// Settings that trust the CA of `files`.
    pub fn new(files: &TlsFiles) -> Result<ClientTls> {
        let mut roots = RootCertStore::empty();
        roots
            .add(files.ca_der.clone())
            .map_err(|e| anyhow!("the run's CA certificate: {e}"))?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), super::provider())
            .build()
            .map_err(|e| anyhow!("the client's certificate verifier: {e}"))?;
        let verifier = Arc::new(RunVerifier {
            inner,
            known: Mutex::new(Vec::new()),
        });
        let mut full = config(&verifier)?;
        full.resumption = Resumption::disabled();
        Ok(ClientTls {
            verifier,
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
        let mut c = config(&self.verifier)?;
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

fn config(verifier: &Arc<RunVerifier>) -> Result<ClientConfig> {
    Ok(ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| anyhow!("TLS client configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth())
}

/// The client's certificate check, made for a load generator that sees the
/// same certificate thousands of times a second.
///
/// The first time a leaf certificate is presented it is verified in full
/// (webpki: chain to the run's CA, validity, name); once it passed, the
/// same bytes for the same name are accepted without building the chain
/// again, for the run's few minutes. Every handshake still checks the
/// server's `CertificateVerify` signature, which proves the server holds the
/// key: only the chain's verdict, identical every time, is remembered. This
/// takes one ECDSA verification and the certificate parsing off the client's
/// cost per full handshake, so that the one client CPU keeps up with the
/// server longer; the servers' work is unchanged.
#[derive(Debug)]
struct RunVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// Leaf certificates (with no intermediates) that passed for the run's name.
    known: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for RunVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cacheable = intermediates.is_empty()
            && ocsp_response.is_empty()
            && *server_name == self::server_name();
        let known = |k: &Vec<CertificateDer<'static>>| k.iter().any(|c| c == end_entity);
        if cacheable && self.known.lock().is_ok_and(|k| known(&k)) {
            return Ok(ServerCertVerified::assertion());
        }
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if cacheable {
            if let Ok(mut k) = self.known.lock() {
                if !known(&k) {
                    k.push(end_entity.clone().into_owned());
                }
            }
        }
        Ok(verdict)
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;

    fn leaf(files: &TlsFiles) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(&files.cert_pem).unwrap()
    }

    #[test]
    fn a_remembered_certificate_passes_and_others_are_still_checked_in_full() {
        let (run, other) = (TlsFiles::generate().unwrap(), TlsFiles::generate().unwrap());
        let v = &ClientTls::new(&run).unwrap().verifier;
        let now = UnixTime::now();
        let name = server_name();
        for _ in 0..2 {
            v.verify_server_cert(&leaf(&run), &[], &name, &[], now)
                .unwrap();
        }
        assert_eq!(v.known.lock().unwrap().len(), 1);
        let e = v.verify_server_cert(&leaf(&other), &[], &name, &[], now);
        assert!(
            matches!(e, Err(rustls::Error::InvalidCertificate(_))),
            "{e:?}"
        );
        let elsewhere = ServerName::try_from("example.com").unwrap();
        let e = v.verify_server_cert(&leaf(&run), &[], &elsewhere, &[], now);
        assert!(
            matches!(e, Err(rustls::Error::InvalidCertificate(_))),
            "{e:?}"
        );
        assert_eq!(v.known.lock().unwrap().len(), 1);
    }
}
