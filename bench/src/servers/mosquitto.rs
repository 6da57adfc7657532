//! The `mosquitto` target: the Debian Mosquitto broker (2.0), the MQTT
//! scenarios' baseline.
//!
//! Started as `/usr/sbin/mosquitto -c FILE` with a configuration made for
//! the run ([`config_text`]): one listener on a free loopback port,
//! anonymous clients allowed, no persistence, TCP_NODELAY on its sockets
//! (as every other target and the load generator have), and the
//! per-client limits set to the values of ringport's `mqtt` plugin's
//! defaults (`MqttConfig::default()`): [`MAX_INFLIGHT`] messages in flight
//! (its `receive_maximum`), [`MAX_QUEUED`] messages and
//! [`MAX_QUEUED_BYTES`] bytes queued per client, and [`MAX_PACKET`] bytes
//! per packet. Mosquitto is one
//! thread; it is pinned to the server CPU from before `exec`, like the
//! haproxy target. Its CPU is the whole process's, its memory the
//! process's `VmRSS`. Stopped with SIGTERM (SIGKILL after 2 s).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};

use super::{Server, ServerSpec};
use crate::cpu::CpuSource;

/// Where the Debian package installs the broker.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// What to say when it is missing.
pub const MISSING: &str =
    "the mosquitto target needs /usr/sbin/mosquitto: install the Debian package mosquitto";
/// QoS 1 and 2 messages in flight to one client at most
/// (`max_inflight_messages`; Mosquitto's default is 20, ringport's
/// `receive_maximum` 32).
pub const MAX_INFLIGHT: usize = 32;
/// Messages queued for one client beyond those in flight at most
/// (`max_queued_messages`; 1000 is both Mosquitto's default and ringport's).
/// Mosquitto counts QoS 0 messages waiting in a client's output against it
/// as well and drops them beyond it, as ringport does, so a subscriber that
/// falls behind by more loses messages (counted exactly by the load
/// generator as lost).
pub const MAX_QUEUED: usize = 1000;
/// Bytes queued for one client at most (`max_queued_bytes`; Mosquitto's
/// default is no limit, ringport's 1 MiB).
pub const MAX_QUEUED_BYTES: usize = 1 << 20;
/// The largest packet accepted (`max_packet_size`; Mosquitto's default is
/// the protocol's limit, ringport's 1 MiB).
pub const MAX_PACKET: usize = 1 << 20;

struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

/// Whether the broker is installed.
pub fn installed() -> bool {
    Path::new(MOSQUITTO).is_file()
}

/// The configuration of a run's broker on `port`.
pub fn config_text(port: u16) -> String {
    format!(
        "# ringport-bench: Mosquitto as the MQTT baseline\n\
         listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence false\n\
         max_inflight_messages {MAX_INFLIGHT}\n\
         max_queued_messages {MAX_QUEUED}\n\
         max_queued_bytes {MAX_QUEUED_BYTES}\n\
         max_packet_size {MAX_PACKET}\n\
         set_tcp_nodelay true\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n"
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
    if !spec.mqtt {
        return Err(anyhow!(
            "mosquitto serves only the MQTT scenarios (mqtt-fanin, mqtt-fanout, mqtt-qos1, mqtt-idle)"
        ));
    }
    if !installed() {
        return Err(anyhow!(MISSING));
    }
    let dir = std::env::temp_dir().join(format!(
        "ringport-bench-mosquitto-{}-{}",
        std::process::id(),
        super::super::mqtt::pubsub::clock_nonce() & 0xffff_ffff
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Mosquitto is one thread: the first server CPU.
    let cpus: Vec<usize> = spec.cpus.iter().copied().take(1).collect();
    let mut last = None;
    for _ in 0..5 {
        let port = free_port()?;
        let config = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(&config, config_text(port))
            .with_context(|| format!("writing {}", config.display()))?;
        let log = dir.join(format!("mosquitto-{port}.log"));
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(MOSQUITTO);
        cmd.arg("-c").arg(&config);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut child = super::process::spawn_pinned(cmd, &cpus, "mosquitto", MISSING)?;
        match super::process::wait_listening(&mut child, port, &log, "mosquitto") {
            Ok(()) => {
                return Ok(Box::new(Mosquitto {
                    child,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    dir,
                }))
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                // Another process may have taken the port: try another.
                last = Some(e);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Err(last.unwrap_or_else(|| anyhow!("mosquitto did not start")))
}

impl Server for Mosquitto {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn cpu(&self) -> CpuSource {
        CpuSource::Process(self.child.id())
    }
    fn datagrams_received(&self) -> Option<u64> {
        None
    }
    fn rss(&self) -> Option<u64> {
        crate::mqtt::vm_rss(Some(self.child.id()))
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_listens_on_loopback_without_persistence() {
        let c = config_text(18830);
        assert!(c.contains("\nlistener 18830 127.0.0.1\n"), "{c}");
        assert!(c.contains("\nallow_anonymous true\n"), "{c}");
        assert!(c.contains("\npersistence false\n"), "{c}");
        assert!(c.contains("\nmax_inflight_messages 32\n"), "{c}");
        assert!(c.contains("\nmax_queued_messages 1000\n"), "{c}");
        assert!(c.contains("\nmax_queued_bytes 1048576\n"), "{c}");
        assert!(c.contains("\nmax_packet_size 1048576\n"), "{c}");
        assert!(c.contains("\nset_tcp_nodelay true\n"), "{c}");
    }
}
