//! TLS for outbound streams: named client profiles.
//!
//! A plugin that connects with `ConnectRequest::with_tls(profile, name)`
//! names one of these; the engine is started with them
//! (`Operations::tls_clients`). A profile holds the CAs the server's
//! certificate must chain to and, for mutual TLS, the certificate and key
//! the client presents. The handshake then runs in the same session code
//! as a `tls` listener's (rustls's unbuffered client, then the engine's
//! in-place record layer), so the plugin reads and writes plaintext.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

use super::{provider, read_certs, read_key, TlsError, TlsVersion};

/// What an operator (or an embedding program) sets for one client profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsSettings {
    /// PEM file with the CA certificates the server's chain must reach.
    pub ca: PathBuf,
    /// PEM files of the client certificate chain and its key, presented
    /// when the server asks (mutual TLS). None: no client certificate.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The lowest version offered.
    pub min_version: TlsVersion,
}

impl ClientTlsSettings {
    /// Trusting the CAs in `ca`, without a client certificate, TLS 1.3.
    pub fn new(ca: impl Into<PathBuf>) -> ClientTlsSettings {
        ClientTlsSettings {
            ca: ca.into(),
            client_cert: None,
            min_version: TlsVersion::V1_3,
        }
    }

    /// The same, presenting `cert` (chain, leaf first) with `key`.
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }
}

/// A loaded client profile: the rustls configuration connects start from.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    settings: ClientTlsSettings,
}

impl ClientTls {
    /// Reads and checks the files: the CA parses, the key belongs to the
    /// chain's first certificate.
    pub fn new(settings: ClientTlsSettings) -> Result<ClientTls, TlsError> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        for c in read_certs("CA", &settings.ca)? {
            roots.add(c).map_err(|e| TlsError::Pem {
                what: "CA",
                path: settings.ca.clone(),
                why: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let versions: &[&'static rustls::SupportedProtocolVersion] = match settings.min_version {
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match &settings.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = read_certs("client certificate chain", cert)?;
                let key_der = read_key(key)?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    TlsError::KeyMismatch {
                        cert: cert.clone(),
                        key: key.clone(),
                        why: e.to_string(),
                    }
                })?
            }
        };
        // The record layer after the handshake is the engine's.
        config.enable_secret_extraction = true;
        // No resumption: a session would be kept per profile, across
        // shards; a full handshake per connect is what a reconnecting
        // bridge costs anyway.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(ClientTls {
            config: Arc::new(config),
            settings,
        })
    }

    /// The settings it was loaded from.
    pub fn settings(&self) -> &ClientTlsSettings {
        &self.settings
    }

    /// The configuration a connect's handshake starts from.
    pub(crate) fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

#[cfg(test)]
mod tests {
    //! A client session driven in memory against a rustls server: the
    //! handshake, the server's session tickets skipped, records both ways;
    //! and the profile's files checked.

    use super::*;
    use crate::tls::session::{Progress, Session};
    use rcgen::{CertificateParams, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::{ServerConfig, ServerConnection};
    use std::io::{Read, Write};
    use std::time::Instant;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir() -> Dir {
        let d = std::env::temp_dir().join(format!(
            "ringport-client-tls-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// A self-signed `localhost` certificate and its key, written to `d`.
    fn self_signed(d: &Dir, name: &str) -> (rcgen::Certificate, KeyPair, PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            d.0.join(format!("{name}.pem")),
            d.0.join(format!("{name}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (cert, key, c, k)
    }

    /// Moves every byte `server` has to send into a vector.
    fn from_server(server: &mut ServerConnection) -> Vec<u8> {
        let mut out = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn a_client_session_handshakes_skips_tickets_and_moves_records() {
        let d = dir();
        let (cert, key, ca, _) = self_signed(&d, "server");
        let profile = ClientTls::new(ClientTlsSettings::new(&ca)).unwrap();
        let mut server_cfg = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        server_cfg.send_tls13_tickets = 2;
        let mut server = ServerConnection::new(Arc::new(server_cfg)).unwrap();
        let mut tx = Vec::new();
        let name = ServerName::try_from("localhost").unwrap();
        // The profile's configuration, but resuming, so that the server
        // sends tickets (a client that cannot resume is sent none).
        let mut config = (*profile.config()).clone();
        config.resumption = rustls::client::Resumption::in_memory_sessions(4);
        let mut client = Session::client(Arc::new(config), name, Instant::now(), &mut tx).unwrap();
        assert!(client.handshaking() && client.is_client());
        assert_eq!(tx[0], 0x16, "a ClientHello was queued");
        let info = loop {
            server.read_tls(&mut &tx[..]).unwrap();
            server.process_new_packets().unwrap();
            tx.clear();
            let input = from_server(&mut server);
            match client.handshake(&input, &mut tx) {
                Progress::Pending => continue,
                Progress::Done(info) => break info,
                Progress::Failed(f) => panic!("handshake failed: {}", f.error),
            }
        };
        assert_eq!(info.version, "TLSv1.3");
        assert!(client.established());
        assert_eq!(client.peer_identities, ["dns:localhost"]);
        // The client's Finished reaches the server, which answers with its
        // tickets and then data, all in one chunk.
        server.read_tls(&mut &tx[..]).unwrap();
        server.process_new_packets().unwrap();
        server.writer().write_all(b"after the tickets").unwrap();
        let mut chunk = from_server(&mut server);
        let mut records = 0;
        let mut at = 0;
        while at + 5 <= chunk.len() {
            records += 1;
            at += 5 + usize::from(u16::from_be_bytes([chunk[at + 3], chunk[at + 4]]));
        }
        // rustls puts both tickets in one record.
        assert_eq!(records, 2, "the tickets, then the data");
        let (mut pending, mut out) = (Vec::new(), Vec::new());
        let read = client.read(&mut chunk, &mut pending, &mut out);
        assert_eq!(read.end, None);
        assert_eq!(&chunk[..read.plain], b"after the tickets");
        // And the other way: sealed by the engine, opened by rustls.
        client.write(&mut out, &[b"from ", b"the client"]).unwrap();
        client.seal_open_record(&mut out).unwrap();
        server.read_tls(&mut &out[..]).unwrap();
        server.process_new_packets().unwrap();
        let mut got = vec![0u8; 15];
        server.reader().read_exact(&mut got).unwrap();
        assert_eq!(got, b"from the client");
    }

    #[test]
    fn a_profile_refuses_missing_files_and_a_key_of_another_certificate() {
        let d = dir();
        let (_, _, ca, _) = self_signed(&d, "ca");
        let (_, _, cert, _) = self_signed(&d, "a");
        let (_, _, _, other_key) = self_signed(&d, "b");
        let e = ClientTls::new(ClientTlsSettings::new(d.0.join("nope.pem"))).unwrap_err();
        assert!(e.to_string().starts_with("cannot read CA "), "{e}");
        let e = ClientTls::new(ClientTlsSettings::new(&ca).with_client_cert(&cert, &other_key))
            .unwrap_err();
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        let ok = ClientTls::new(ClientTlsSettings::new(&ca)).unwrap();
        assert_eq!(ok.settings().ca, ca);
    }
}
