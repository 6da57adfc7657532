//! Certificates made inside the tests (rcgen): a CA, a server leaf for
//! 127.0.0.1 and `localhost`, client leaves with chosen SPIFFE IDs and DNS
//! names, an expired one, and one from another CA. Written as PEM files to
//! a temporary directory that lives as long as the [`Pki`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The chain (leaf first, then its CA).
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// A CA able to issue leaves.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate as PEM.
    pub pem: String,
    /// Where the CA certificate is written.
    pub path: PathBuf,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("path", &self.path).finish()
    }
}

/// The test's PKI: a directory of PEM files, removed on drop.
#[derive(Debug)]
pub struct Pki {
    /// The directory.
    pub dir: PathBuf,
    /// The CA that signs the server and the good clients.
    pub ca: Ca,
    /// The server's chain and key (127.0.0.1 and `localhost`).
    pub server: Leaf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a client certificate says.
#[derive(Debug, Clone, Default)]
pub struct ClientSpec<'a> {
    /// Common name.
    pub cn: &'a str,
    /// URI SANs (SPIFFE IDs).
    pub uris: &'a [&'a str],
    /// DNS SANs.
    pub dns: &'a [&'a str],
    /// Valid from/to, relative to now (seconds; negative: in the past).
    pub valid: Option<(i64, i64)>,
}

fn at(offset: i64) -> time::OffsetDateTime {
    let now = SystemTime::now();
    let t = if offset >= 0 {
        now + Duration::from_secs(offset as u64)
    } else {
        now - Duration::from_secs(offset.unsigned_abs())
    };
    t.into()
}

impl Ca {
    /// A new CA named `name`, written to `dir/name-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().expect("generate a CA key");
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = at(-3600);
        p.not_after = at(10 * 365 * 86400);
        let cert = p.self_signed(&key).expect("self-sign the CA");
        let pem = cert.pem();
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, &pem).unwrap();
        Ca {
            issuer: Issuer::new(p, key),
            pem,
            path,
        }
    }

    fn issue(&self, dir: &Path, file: &str, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("generate a leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        let leaf = Leaf {
            cert: dir.join(format!("{file}.pem")),
            key: dir.join(format!("{file}-key.pem")),
        };
        std::fs::write(&leaf.cert, format!("{}{}", cert.pem(), self.pem)).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }

    /// A server leaf for 127.0.0.1 and `localhost`, valid for `days`.
    pub fn server(&self, dir: &Path, file: &str, days: i64) -> Leaf {
        self.server_valid(dir, file, (-3600, days * 86400))
    }

    /// A server leaf for 127.0.0.1 and `localhost`, valid from/to these
    /// offsets from now (seconds; negative: in the past).
    pub fn server_valid(&self, dir: &Path, file: &str, (from, to): (i64, i64)) -> Leaf {
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.distinguished_name
            .push(DnType::CommonName, "ringport test server");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = at(from);
        p.not_after = at(to);
        self.issue(dir, file, p)
    }

    /// A client leaf as `spec` says.
    pub fn client(&self, dir: &Path, file: &str, spec: &ClientSpec<'_>) -> Leaf {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, spec.cn);
        for u in spec.uris {
            p.subject_alt_names
                .push(SanType::URI((*u).try_into().unwrap()));
        }
        for d in spec.dns {
            p.subject_alt_names
                .push(SanType::DnsName((*d).try_into().unwrap()));
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (from, to) = spec.valid.unwrap_or((-3600, 365 * 86400));
        p.not_before = at(from);
        p.not_after = at(to);
        self.issue(dir, file, p)
    }
}

impl Pki {
    /// A fresh PKI in a new temporary directory.
    pub fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "ringport-pki-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new(&dir, "main");
        let server = ca.server(&dir, "server", 365);
        Pki { dir, ca, server }
    }

    /// A client leaf of the main CA.
    pub fn client(&self, file: &str, spec: &ClientSpec<'_>) -> Leaf {
        self.ca.client(&self.dir, file, spec)
    }
}

/// Reads a PEM chain.
pub fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A rustls client trusting `ca`, presenting `client` when given, offering
/// `versions`.
pub fn client_config(
    ca: &Path,
    client: Option<&Leaf>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let b = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        Some(l) => b
            .with_client_auth_cert(
                certs(&l.cert),
                PrivateKeyDer::from_pem_file(&l.key).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// The server name 127.0.0.1 (what the server leaf is for).
pub fn loopback_name() -> ServerName<'static> {
    ServerName::IpAddress("127.0.0.1".parse::<std::net::IpAddr>().unwrap().into())
}
