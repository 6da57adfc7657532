//! The `nats-server` that joins the `ringport-nats` target's two engines.
//!
//! Started as `nats-server -c FILE` with a configuration made for the run
//! ([`config_text`]): clients and monitoring on free loopback ports, nothing
//! else (no cluster, no JetStream). It is pinned to the server CPUs from
//! before `exec`, like the mosquitto target. The harness asks its
//! monitoring endpoint (`/subsz`) how many subscriptions it holds, to know
//! when a bridge's import subscription is in place.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};

/// Where the Debian package installs the server.
pub const NATS_SERVER: &str = "/usr/sbin/nats-server";
/// What to say when it is missing.
pub const MISSING: &str = "the ringport-nats target needs nats-server (/usr/sbin/nats-server or \
                           on PATH): install the Debian package nats-server";

/// Where `nats-server` is: [`NATS_SERVER`], else the first on `PATH`.
pub fn program() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(PathBuf::from(NATS_SERVER))
        .chain(std::env::split_paths(&path).map(|d| d.join("nats-server")))
        .find(|p| p.is_file())
}

/// The configuration of a run's server: clients on `port`, monitoring on
/// `http`, both on 127.0.0.1.
pub fn config_text(port: u16, http: u16) -> String {
    format!(
        "# ringport-bench: the NATS server between two ringport instances\n\
         listen: \"127.0.0.1:{port}\"\n\
         http: \"127.0.0.1:{http}\"\n"
    )
}

/// A running `nats-server`; stopped by [`NatsServer::stop`].
pub(super) struct NatsServer {
    child: Child,
    port: u16,
    http: u16,
    dir: PathBuf,
    /// Subscriptions the server holds by itself (its system account's).
    base: u64,
}

fn free_port() -> Result<u16> {
    Ok(
        std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?
            .local_addr()?
            .port(),
    )
}

impl NatsServer {
    /// Starts the server pinned to `cpus` and waits until it listens and
    /// its monitoring answers.
    pub(super) fn start(cpus: &[usize]) -> Result<NatsServer> {
        let program = program().ok_or_else(|| anyhow!(MISSING))?;
        let dir = std::env::temp_dir().join(format!(
            "ringport-bench-nats-{}-{}",
            std::process::id(),
            crate::mqtt::pubsub::clock_nonce() & 0xffff_ffff
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut last = None;
        for _ in 0..5 {
            let (port, http) = (free_port()?, free_port()?);
            let config = dir.join(format!("nats-{port}.conf"));
            std::fs::write(&config, config_text(port, http))
                .with_context(|| format!("writing {}", config.display()))?;
            let log = dir.join(format!("nats-{port}.log"));
            let stderr = std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?;
            let mut cmd = Command::new(&program);
            cmd.arg("-c").arg(&config);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
            let mut child = super::process::spawn_pinned(cmd, cpus, "nats-server", MISSING)?;
            match super::process::wait_listening(&mut child, port, &log, "nats-server") {
                Ok(()) => {
                    let mut s = NatsServer {
                        child,
                        port,
                        http,
                        dir,
                        base: 0,
                    };
                    match s.wait_for(Duration::from_secs(5), "its monitoring endpoint", |n| {
                        n.is_some()
                    }) {
                        Ok(n) => s.base = n,
                        Err(e) => {
                            s.stop();
                            return Err(e);
                        }
                    }
                    return Ok(s);
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // Another process may have taken a port: try others.
                    last = Some(e);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last.unwrap_or_else(|| anyhow!("nats-server did not start")))
    }

    /// Where clients connect.
    pub(super) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server's process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Subscriptions held now, from `/subsz`, or `None` if it did not answer.
    fn subscriptions(&self) -> Option<u64> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.http));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET /subsz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        json_number(&body, "num_subscriptions")
    }

    /// Polls [`NatsServer::subscriptions`] until `ok` holds, for `limit`.
    fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        ok: impl Fn(Option<u64>) -> bool,
    ) -> Result<u64> {
        let deadline = Instant::now() + limit;
        loop {
            let n = self.subscriptions();
            if ok(n) {
                return Ok(n.unwrap_or(0));
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "nats-server on {}: no {what} within {} s (subscriptions: {n:?})",
                    self.addr(),
                    limit.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to 10 s) until the server holds `n` subscriptions beyond
    /// its own.
    pub(super) fn wait_subscriptions(&self, n: u64) -> Result<()> {
        let want = self.base + n;
        self.wait_for(
            Duration::from_secs(10),
            &format!("{n} client subscriptions"),
            |got| got == Some(want),
        )
        .map(|_| ())
    }

    /// SIGTERM, SIGKILL after 2 s; removes the run's folder.
    pub(super) fn stop(mut self) {
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
        remove_dir(&self.dir);
    }
}

fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// The unsigned number after `"field":` in a JSON text (the monitoring
/// endpoint's flat objects), or `None`.
pub fn json_number(body: &str, field: &str) -> Option<u64> {
    let key = format!("\"{field}\":");
    let at = body.find(&key)? + key.len();
    let digits: String = body[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_listens_on_loopback_only() {
        assert_eq!(
            config_text(4222, 8222),
            "# ringport-bench: the NATS server between two ringport instances\n\
             listen: \"127.0.0.1:4222\"\n\
             http: \"127.0.0.1:8222\"\n"
        );
    }

    #[test]
    fn the_subscription_count_is_read_from_the_monitoring_json() {
        let body = "HTTP/1.0 200 OK\r\n\r\n{\n  \"num_subscriptions\": 57,\n  \"num_cache\": 3\n}";
        assert_eq!(json_number(body, "num_subscriptions"), Some(57));
        assert_eq!(json_number(body, "num_cache"), Some(3));
        assert_eq!(json_number(body, "num_matches"), None);
        assert_eq!(
            json_number("{\"num_subscriptions\": null}", "num_subscriptions"),
            None
        );
    }
}
