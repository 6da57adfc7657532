//! The tokio baseline: the server a competent tokio user would write.
//!
//! TCP: one task per connection reading into a 64 KiB buffer, reflecting
//! every whole sockperf frame (or echoing every byte) with one `write_all`
//! per read. UDP: `recv_from` then `send_to` in a loop (one task per worker
//! on a shared socket for the multi-thread runtime).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::{sockperf_stream, wants_reply, Count, Server, ServerSpec};
use crate::cpu::CpuSource;
use crate::wire::Protocol;

/// Thread-name prefix of the current-thread variant.
const NAME_CT: &str = "bn-tokio";
/// Thread-name prefix of the multi-thread variant's workers.
const NAME_MT: &str = "bn-tokio-mt";

struct TokioServer {
    addr: SocketAddr,
    count: Count,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    name: &'static str,
}

pub(super) fn start(spec: &ServerSpec, multi: bool) -> Result<Box<dyn Server>> {
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let (tcp, udp) = if spec.udp {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        s.bind(&any.into())?;
        s.set_nonblocking(true)?;
        (None, Some(std::net::UdpSocket::from(s)))
    } else {
        let l = std::net::TcpListener::bind(any)?;
        l.set_nonblocking(true)?;
        (Some(l), None)
    };
    let addr = match (&tcp, &udp) {
        (Some(l), _) => l.local_addr()?,
        (_, Some(u)) => u.local_addr()?,
        _ => unreachable!("one of them is bound"),
    };
    let count: Count = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let protocol = spec.protocol;
    let cpus = spec.cpus.clone();
    let workers = spec.shards.max(1);
    let c2 = count.clone();
    let name = if multi { NAME_MT } else { NAME_CT };
    let thread = std::thread::Builder::new()
        .name(if multi {
            "bn-tmain".into()
        } else {
            NAME_CT.into()
        })
        .spawn(move || {
            let rt = if multi {
                let next = Arc::new(AtomicUsize::new(0));
                let cpus2 = cpus.clone();
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .thread_name(NAME_MT)
                    .on_thread_start(move || {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let cpu = cpus2[i % cpus2.len()];
                        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                    })
                    .enable_io()
                    .build()
            } else {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpus[0] });
                tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
            };
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow!("building the tokio runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                if let Some(l) = tcp {
                    let l = match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    tokio::spawn(async move {
                        while let Ok((s, _)) = l.accept().await {
                            tokio::spawn(serve_tcp(s, protocol));
                        }
                    });
                }
                if let Some(u) = udp {
                    let u = match tokio::net::UdpSocket::from_std(u) {
                        Ok(u) => Arc::new(u),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    let tasks = if multi { workers } else { 1 };
                    for _ in 0..tasks {
                        tokio::spawn(serve_udp(u.clone(), protocol, c2.clone()));
                    }
                }
                let _ = ready_tx.send(Ok(()));
                let _ = stop_rx.await;
            });
            // Dropping the runtime cancels the server tasks.
            drop(rt);
        })
        .context("spawning the tokio server thread")?;
    ready_rx
        .recv()
        .map_err(|_| anyhow!("the tokio server thread died at start"))??;
    Ok(Box::new(TokioServer {
        addr,
        count,
        stop: Some(stop_tx),
        thread: Some(thread),
        name,
    }))
}

async fn serve_tcp(s: tokio::net::TcpStream, protocol: Protocol) {
    let _ = s.set_nodelay(true);
    serve_stream(s, protocol).await;
}

/// Serves one stream until it ends: echoes every byte, or reflects every
/// whole sockperf frame, with one `write_all` per read. The flush after it
/// is what a TLS stream needs to put out records its `write` kept (a no-op
/// on a plain socket).
pub(super) async fn serve_stream<S>(mut s: S, protocol: Protocol)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let n = match s.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let reply = match protocol {
            Protocol::Echo => &buf[..n],
            Protocol::Sockperf => {
                filled += n;
                let Some(used) = sockperf_stream(&buf[..filled], &mut out) else {
                    return;
                };
                buf.copy_within(used..filled, 0);
                filled -= used;
                &out[..]
            }
        };
        if !reply.is_empty() && (s.write_all(reply).await.is_err() || s.flush().await.is_err()) {
            return;
        }
        out.clear();
    }
}

async fn serve_udp(u: Arc<tokio::net::UdpSocket>, protocol: Protocol, count: Count) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = u.recv_from(&mut buf).await else {
            continue;
        };
        count.fetch_add(1, Ordering::Relaxed);
        let reply = match protocol {
            Protocol::Echo => true,
            Protocol::Sockperf => {
                if n >= 14 && wants_reply(&buf[..n]) && super::frame_len(&buf) == n {
                    super::reflect(&mut buf[..n]);
                    true
                } else {
                    false
                }
            }
        };
        if reply {
            let _ = u.send_to(&buf[..n], from).await;
        }
    }
}

impl Server for TokioServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn cpu(&self) -> CpuSource {
        CpuSource::ThreadsNamed(vec![self.name.into()])
    }
    fn datagrams_received(&self) -> Option<u64> {
        Some(self.count.load(Ordering::Relaxed))
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
