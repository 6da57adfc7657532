//! The `haproxy` target: the Debian HAProxy binary terminating TLS in
//! front of the harness's epoll echo server.
//!
//! HAProxy runs in `mode tcp` with `bind 127.0.0.1:PORT ssl crt FILE`
//! (the run's leaf and key), TLS 1.3 only, session tickets on (its default),
//! one thread per server CPU, pinned to the server CPUs from before `exec`
//! (so every thread it starts inherits the mask). Each client connection is
//! one connection to the backend, the epoll echo server on its own port and
//! `--backend-cpu`. What a message costs is HAProxy's CPU plus the
//! backend's: [`Server::cpu_split`] gives both, [`Server::cpu`] the sum.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};

use super::{Server, ServerSpec};
use crate::cpu::CpuSource;

/// The binary, looked up in `PATH`.
const HAPROXY: &str = "haproxy";
/// What to say when it is missing.
pub const MISSING: &str =
    "the haproxy target needs the haproxy binary: install the Debian package haproxy";

struct Haproxy {
    child: Child,
    addr: SocketAddr,
    config: PathBuf,
    backend: Option<Box<dyn Server>>,
}

/// Whether the `haproxy` binary can be started.
pub fn installed() -> bool {
    Command::new(HAPROXY)
        .arg("-v")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The configuration: one TLS frontend, one plain backend server. HAProxy
/// sizes its `maxconn` from the descriptor limit it is given.
fn config_text(port: u16, crt: &str, backend: SocketAddr, threads: usize) -> String {
    format!(
        "global\n\
         \x20   nbthread {threads}\n\
         \x20   ssl-default-bind-options ssl-min-ver TLSv1.3\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 60s\n\
         \x20   timeout server 60s\n\
         frontend tls\n\
         \x20   bind 127.0.0.1:{port} ssl crt {crt}\n\
         \x20   default_backend echo\n\
         backend echo\n\
         \x20   server echo {backend}\n"
    )
}

fn free_port() -> Result<u16> {
    Ok(
        std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?
            .local_addr()?
            .port(),
    )
}

pub(super) fn start(spec: &ServerSpec) -> Result<Box<dyn Server>> {
    let files = spec
        .tls
        .as_ref()
        .ok_or_else(|| anyhow!("haproxy needs the run's certificates"))?;
    if !installed() {
        return Err(anyhow!(MISSING));
    }
    let backend_spec = ServerSpec {
        udp: false,
        shards: 1,
        cpus: spec.backend_cpus.clone(),
        relay: false,
        tls: None,
        ..spec.clone()
    };
    let backend = super::epoll::start(&backend_spec).context("starting HAProxy's backend")?;
    let cpus: Vec<usize> = spec.cpus.iter().copied().take(spec.shards.max(1)).collect();
    let mut last = None;
    for _ in 0..5 {
        let port = free_port()?;
        let config = files.dir().join(format!("haproxy-{port}.cfg"));
        let text = config_text(
            port,
            &files.combined_pem.to_string_lossy(),
            backend.addr(),
            cpus.len(),
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let log = files.dir().join(format!("haproxy-{port}.log"));
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(HAPROXY);
        cmd.arg("-f").arg(&config).arg("-db");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut child = super::process::spawn_pinned(cmd, &cpus, "haproxy", MISSING)?;
        match super::process::wait_listening(&mut child, port, &log, "haproxy") {
            Ok(()) => {
                return Ok(Box::new(Haproxy {
                    child,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    config,
                    backend: Some(backend),
                }))
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(&config);
                // Another process may have taken the port: try another.
                last = Some(e);
            }
        }
    }
    backend.stop();
    Err(last.unwrap_or_else(|| anyhow!("haproxy did not start")))
}

impl Server for Haproxy {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn cpu(&self) -> CpuSource {
        let (front, back) = self.cpu_split().expect("haproxy has a backend");
        CpuSource::Sum(vec![front, back])
    }
    fn cpu_split(&self) -> Option<(CpuSource, CpuSource)> {
        let back = self.backend.as_ref()?.cpu();
        Some((CpuSource::Process(self.child.id()), back))
    }
    fn datagrams_received(&self) -> Option<u64> {
        None
    }
    fn stop(mut self: Box<Self>) {
        // SAFETY: kill has no memory preconditions; the child is ours and not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.config);
        if let Some(b) = self.backend.take() {
            b.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_binds_tls_on_loopback_in_front_of_the_backend() {
        let c = config_text(
            8443,
            "/tmp/x/haproxy.pem",
            "127.0.0.1:9000".parse().unwrap(),
            1,
        );
        assert!(
            c.contains("    bind 127.0.0.1:8443 ssl crt /tmp/x/haproxy.pem\n"),
            "{c}"
        );
        assert!(c.contains("    server echo 127.0.0.1:9000\n"), "{c}");
        assert!(
            c.contains("    mode tcp\n") && c.contains("    nbthread 1\n"),
            "{c}"
        );
        assert!(c.contains("ssl-min-ver TLSv1.3"), "{c}");
        assert!(!c.contains("no-tls-tickets"), "{c}");
    }
}
