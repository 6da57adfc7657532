//! TLS for the command line's own connections, from PEM files: the rustls
//! `ClientConfig` of `ringport relay --tls`, and the certificate and key
//! readers the admin endpoint shares with it.
//!
//! These are internal ports: the client trusts only the CA file it is given
//! (`--tls-ca`), never the system's roots. Both TLS 1.3 and 1.2 are offered,
//! with the aws-lc-rs provider the engine uses. Every error names the flag
//! and the file, what is wrong with it, and how to fix it.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use ringport_engine::tls::{read_certs, CertIdentity, TlsError};
use rustls::crypto::CryptoProvider;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

/// The versions offered: TLS 1.3 and 1.2.
pub const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto provider: aws-lc-rs, as in the engine.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1);
/// `what` names it in errors (e.g. `--tls-key file`).
pub fn read_key(what: &str, path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem =
        std::fs::read(path).map_err(|e| anyhow!("cannot read {what} {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        anyhow!(
            "{what} {}: no private key in it ({e}); write PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM",
            path.display()
        )
    })
}

/// The engine's file error as one message: its `Display` already holds the
/// cause, which an error chain (`{:#}`) would print a second time.
fn flat(e: TlsError) -> anyhow::Error {
    anyhow!("{e}")
}

/// A certificate chain and its private key, checked against each other.
#[derive(Debug)]
pub struct ChainAndKey {
    /// The chain and key as rustls signs with them.
    pub key: Arc<CertifiedKey>,
    /// What the first certificate of the chain says (names, validity).
    pub leaf: CertIdentity,
}

/// Reads a chain (leaf first) and its key; the flags name the files in
/// errors (e.g. `("--tls-cert", "--tls-key")`).
pub fn read_chain_and_key(
    cert: &Path,
    key: &Path,
    flags: (&'static str, &'static str),
) -> Result<ChainAndKey> {
    let chain = read_certs(flags.0, cert).map_err(flat)?;
    let leaf = CertIdentity::from_der(&chain[0])
        .map_err(|e| anyhow!("{} {}: {e}", flags.0, cert.display()))?;
    let der = read_key(flags.1, key)?;
    let certified = CertifiedKey::from_der(chain, der, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => anyhow!(
            "{} {} does not match {} {} ({e}): the first certificate of the chain must be \
             the one the key was made for",
            flags.1,
            key.display(),
            flags.0,
            cert.display()
        ),
        other => anyhow!(
            "{} {}: not a usable private key: {other}",
            flags.1,
            key.display()
        ),
    })?;
    Ok(ChainAndKey {
        key: Arc::new(certified),
        leaf,
    })
}

/// A client configuration trusting the CA certificates in `ca` only, and
/// presenting `identity` (certificate chain, key) when the server asks for
/// one (mutual TLS).
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for c in read_certs("--tls-ca", ca).map_err(flat)? {
        roots.add(c).map_err(|e| {
            anyhow!(
                "--tls-ca {}: not a usable CA certificate: {e}",
                ca.display()
            )
        })?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| anyhow!("TLS configuration: {e}"))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let pair = read_chain_and_key(cert, key, ("--tls-cert", "--tls-key"))?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(pair.key)))
        }
    };
    Ok(Arc::new(config))
}

/// A few words on how to fix a TLS failure a client saw, by what rustls
/// says went wrong; empty when there is nothing useful to add.
/// `with_cert` says whether the client presented a certificate.
pub fn hint(e: &rustls::Error, with_cert: bool) -> &'static str {
    use rustls::{AlertDescription as A, CertificateError as C};
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            " (the server's certificate does not chain to --tls-ca: give the CA that signed it)"
        }
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            " (the server's certificate is not for this name: set --tls-server-name to a name it holds)"
        }
        rustls::Error::AlertReceived(A::CertificateRequired | A::BadCertificate) if !with_cert => {
            " (the server wants a client certificate: give --tls-cert and --tls-key)"
        }
        rustls::Error::AlertReceived(A::HandshakeFailure) => {
            " (is --addr a TLS listener? a plaintext ringport port answers TLS with this alert; \
             a TLS server sends it too when it shares no TLS version or cipher suite with this \
             client)"
        }
        rustls::Error::AlertReceived(A::UnknownCA) if with_cert => {
            " (the server does not trust the CA of --tls-cert)"
        }
        rustls::Error::AlertReceived(A::CertificateExpired) if with_cert => {
            " (the certificate of --tls-cert is expired or not yet valid)"
        }
        rustls::Error::AlertReceived(A::AccessDenied) if with_cert => {
            " (the server does not allow the identity in --tls-cert)"
        }
        _ => "",
    }
}

#[cfg(test)]
pub(crate) mod test_pki {
    //! Certificates for the unit tests, written to a temporary directory.

    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };

    /// A directory of PEM files, removed on drop.
    #[derive(Debug)]
    pub struct Dir(pub PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl Dir {
        /// A new empty directory named after `name`.
        pub fn new(name: &str) -> Dir {
            let d = std::env::temp_dir().join(format!(
                "ringport-tools-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }

        /// `name` in the directory.
        pub fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    /// A CA certificate (`NAME-ca.pem`) and a server leaf for 127.0.0.1
    /// signed by it (`NAME.pem` with the chain, `NAME-key.pem`), with the
    /// leaf's common name `cn`.
    pub fn server(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf, PathBuf) {
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = p.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(p, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &issuer).unwrap();
        let paths = (
            dir.join(format!("{name}-ca.pem")),
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&paths.0, ca_cert.pem()).unwrap();
        std::fs::write(&paths.1, format!("{}{}", cert.pem(), ca_cert.pem())).unwrap();
        std::fs::write(&paths.2, key.serialize_pem()).unwrap();
        paths
    }
}

#[cfg(test)]
mod tests {
    use super::test_pki::{server, Dir};
    use super::*;

    #[test]
    fn bad_files_are_named_with_what_is_wrong() {
        let dir = Dir::new("tls-client-files");
        let (ca, cert, key) = server(&dir.0, "a", "a");
        let (_, _, other_key) = server(&dir.0, "b", "b");
        let empty = dir.path("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let missing = dir.path("missing.pem");

        assert!(client_config(&ca, Some((&cert, &key))).is_ok());
        let e = format!("{:#}", client_config(&missing, None).unwrap_err());
        assert_eq!(
            e,
            format!(
                "cannot read --tls-ca {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let e = client_config(&empty, None).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "--tls-ca {}: holds no `-----BEGIN CERTIFICATE-----` block",
                empty.display()
            )
        );
        // A key file given as the certificate has no certificate in it.
        let e = client_config(&ca, Some((&key, &key)))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "--tls-cert {}: holds no `-----BEGIN CERTIFICATE-----` block",
                key.display()
            )
        );
        let e = client_config(&ca, Some((&cert, &cert)))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "--tls-key {}: no private key in it (",
                cert.display()
            )),
            "{e}"
        );
        let e = client_config(&ca, Some((&cert, &other_key)))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "--tls-key {} does not match --tls-cert {} (",
                other_key.display(),
                cert.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn the_leaf_is_read() {
        let dir = Dir::new("tls-client-leaf");
        let (_, cert, key) = server(&dir.0, "a", "admin.test");
        let pair =
            read_chain_and_key(&cert, &key, ("--admin-tls-cert", "--admin-tls-key")).unwrap();
        assert_eq!(pair.leaf.subject, "CN=admin.test");
        assert_eq!(pair.leaf.dns, ["localhost"]);
        assert_eq!(pair.key.cert.len(), 2, "leaf and CA");
    }
}
