//! The run's certificates, made with rcgen and written as PEM to a
//! temporary directory that goes when the last holder drops it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::CertificateDer;

/// The PEM files of one run, in a directory of their own.
#[derive(Debug)]
pub struct TlsFiles {
    dir: PathBuf,
    /// The CA certificate (what the client trusts).
    pub ca_pem: PathBuf,
    /// The leaf certificate alone.
    pub cert_pem: PathBuf,
    /// The leaf's private key (PKCS#8).
    pub key_pem: PathBuf,
    /// Leaf certificate then key in one file (HAProxy's `crt`).
    pub combined_pem: PathBuf,
    /// The CA certificate, DER.
    pub ca_der: CertificateDer<'static>,
}

impl PartialEq for TlsFiles {
    fn eq(&self, other: &TlsFiles) -> bool {
        self.dir == other.dir
    }
}

impl Eq for TlsFiles {}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Distinguishes the directories of several sets made by one process.
static NEXT: AtomicU32 = AtomicU32::new(0);

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

impl TlsFiles {
    /// Makes an ECDSA P-256 CA and a leaf for `localhost` and `127.0.0.1`
    /// signed by it, and writes them under the system's temporary directory.
    pub fn generate() -> Result<TlsFiles> {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "ringport-bench CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, ca_key)?;

        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut leaf =
            CertificateParams::new(vec![super::SERVER_NAME.to_owned(), "127.0.0.1".to_owned()])?;
        leaf.distinguished_name
            .push(DnType::CommonName, super::SERVER_NAME);
        let leaf = leaf.signed_by(&leaf_key, &ca)?;

        let dir = std::env::temp_dir().join(format!(
            "ringport-bench-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let files = TlsFiles {
            ca_pem: dir.join("ca.pem"),
            cert_pem: dir.join("cert.pem"),
            key_pem: dir.join("key.pem"),
            combined_pem: dir.join("haproxy.pem"),
            ca_der: ca.der().clone(),
            dir,
        };
        let key = leaf_key.serialize_pem();
        write(&files.ca_pem, &ca.pem())?;
        write(&files.cert_pem, &leaf.pem())?;
        write(&files.key_pem, &key)?;
        write(&files.combined_pem, &format!("{}{key}", leaf.pem()))?;
        Ok(files)
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn the_leaf_chains_to_the_ca_and_the_files_go_with_the_set() {
        let files = TlsFiles::generate().unwrap();
        let dir = files.dir().to_owned();
        let leaf = CertificateDer::from_pem_file(&files.cert_pem).unwrap();
        let combined: Vec<_> = CertificateDer::pem_file_iter(&files.combined_pem)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(combined, vec![leaf.clone()]);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(files.ca_der.clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            crate::tls::provider(),
        )
        .build()
        .unwrap();
        use rustls::client::danger::ServerCertVerifier as _;
        for name in [super::super::SERVER_NAME, "127.0.0.1"] {
            let name = rustls_pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&leaf, &[], &name, &[], rustls_pki_types::UnixTime::now())
                .unwrap();
        }
        drop(files);
        assert!(!dir.exists());
    }
}
