//! Outside server programs (HAProxy, Mosquitto): started pinned to the
//! server CPUs before `exec`, and waited for until they listen.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

/// The affinity mask of `cpus`.
fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: CPU_SET writes inside `set` for any c below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// Spawns `cmd` pinned to `cpus` from its first instruction (the affinity
/// is set between fork and exec). A program that is not there is
/// `missing`; any other failure names `name`.
pub(super) fn spawn_pinned(
    mut cmd: Command,
    cpus: &[usize],
    name: &str,
    missing: &str,
) -> Result<Child> {
    let set = cpu_set(cpus);
    // SAFETY: the closure runs between fork and exec and calls only
    // sched_setaffinity, a plain system call, on memory it owns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("{missing}")
        } else {
            anyhow!("starting {name}: {e}")
        }
    })
}

/// Waits (up to 5 s) until `name` accepts connections on `port` of
/// 127.0.0.1; if it exits, says why with what it wrote to `log`.
pub(super) fn wait_listening(child: &mut Child, port: u16, log: &Path, name: &str) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait()? {
            let err = std::fs::read_to_string(log).unwrap_or_default();
            return Err(anyhow!(
                "{name} exited at start with {status}: {}",
                err.trim()
            ));
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(anyhow!("{name} did not listen on {addr} within 5 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
