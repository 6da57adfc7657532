//! The tokio-rustls target: what a competent tokio user writes for a TLS
//! echo server.
//!
//! A current-thread runtime pinned to the first server CPU (as the `tokio`
//! target), a `TlsAcceptor` over a rustls `ServerConfig` built the usual
//! way: aws-lc-rs, TLS 1.3, the run's certificate, session tickets from
//! rustls's `Ticketer` (and rustls's default of two tickets per handshake).
//! One task per connection: the handshake, then the same echo loop as the
//! `tokio` target over the TLS stream.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use super::{Server, ServerSpec};
use crate::cpu::CpuSource;
use crate::tls::TlsFiles;

/// Thread name (for CPU accounting).
const NAME: &str = "bn-rustls";

struct TokioRustls {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The server configuration of the target, from the run's files (the
/// rustls-probe target serves the same).
pub(super) fn server_config(files: &TlsFiles) -> Result<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(&files.cert_pem)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {}", files.cert_pem.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key_pem)
        .with_context(|| format!("reading {}", files.key_pem.display()))?;
    let mut config = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(config)
}

pub(super) fn start(spec: &ServerSpec) -> Result<Box<dyn Server>> {
    let files = spec
        .tls
        .as_ref()
        .ok_or_else(|| anyhow!("tokio-rustls needs the run's certificates"))?;
    let acceptor = TlsAcceptor::from(Arc::new(server_config(files)?));
    let listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let (cpu, protocol) = (spec.cpus[0], spec.protocol);
    let thread = std::thread::Builder::new()
        .name(NAME.into())
        .spawn(move || {
            core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow!("building the tokio runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let l = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                tokio::spawn(async move {
                    while let Ok((s, _)) = l.accept().await {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let _ = s.set_nodelay(true);
                            if let Ok(tls) = acceptor.accept(s).await {
                                super::tokio_srv::serve_stream(tls, protocol).await;
                            }
                        });
                    }
                });
                let _ = ready_tx.send(Ok(()));
                let _ = stop_rx.await;
            });
            // Dropping the runtime cancels the server tasks.
            drop(rt);
        })
        .context("spawning the tokio-rustls server thread")?;
    ready_rx
        .recv()
        .map_err(|_| anyhow!("the tokio-rustls server thread died at start"))??;
    Ok(Box::new(TokioRustls {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    }))
}

impl Server for TokioRustls {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn cpu(&self) -> CpuSource {
        CpuSource::ThreadsNamed(vec![NAME.into()])
    }
    fn datagrams_received(&self) -> Option<u64> {
        None
    }
    fn stop(mut self: Box<Self>) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
