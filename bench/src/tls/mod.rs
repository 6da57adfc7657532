//! What the TLS scenarios share: the certificates every target serves
//! ([`certs`]) and the load generator's rustls client settings ([`client`]).
//!
//! One run of the harness makes one ECDSA P-256 CA and one leaf for
//! `localhost` / `127.0.0.1` signed by it; every target (the ringport engine,
//! tokio-rustls, HAProxy) serves that leaf with its key, and the client
//! trusts that CA and nothing else. TLS 1.3 only, aws-lc-rs as the crypto
//! provider on every rustls side.

pub mod certs;
pub mod client;

pub use certs::TlsFiles;
pub use client::{ClientTls, HandshakeKind};

/// The name the client asks for (SNI) and checks the certificate against.
pub const SERVER_NAME: &str = "localhost";

/// The crypto provider of every rustls side of the harness.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
