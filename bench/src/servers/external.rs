//! Servers the harness does not run itself: an external address, or the
//! real `sockperf server` binary as a child process.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};

use super::{Server, ServerSpec};
use crate::cpu::CpuSource;

/// A server someone else runs, on `ports` consecutive ports from `addr`'s.
pub(super) struct External {
    pub(super) addr: SocketAddr,
    pub(super) ports: usize,
}

impl Server for External {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn addrs(&self) -> Vec<SocketAddr> {
        (0..self.ports)
            .map_while(|i| {
                let port = u16::try_from(usize::from(self.addr.port()) + i).ok()?;
                Some(SocketAddr::new(self.addr.ip(), port))
            })
            .collect()
    }
    fn cpu(&self) -> CpuSource {
        CpuSource::None
    }
    fn datagrams_received(&self) -> Option<u64> {
        None
    }
    fn stop(self: Box<Self>) {}
}

struct Sockperf {
    child: Child,
    addr: SocketAddr,
}

/// Where the sockperf binary is looked for.
const SOCKPERF: &str = "sockperf";

fn free_port(udp: bool) -> Result<u16> {
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    Ok(if udp {
        std::net::UdpSocket::bind(addr)?.local_addr()?.port()
    } else {
        std::net::TcpListener::bind(addr)?.local_addr()?.port()
    })
}

fn pin_process(pid: u32, cpus: &[usize]) {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: CPU_SET writes inside `set` for any c below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: the pointer and size describe `set`; a dead pid only fails.
    unsafe {
        libc::sched_setaffinity(pid as i32, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

pub(super) fn start_sockperf(spec: &ServerSpec) -> Result<Box<dyn Server>> {
    if spec.protocol != crate::wire::Protocol::Sockperf {
        return Err(anyhow!(
            "the sockperf target speaks only --protocol sockperf"
        ));
    }
    let port = free_port(spec.udp)?;
    // `sockperf server -i ADDR -p PORT` watches its one socket with blocking
    // recvfrom() ("using recvfrom() to block on socket(s)"): over TCP it then
    // serves one connection at a time and stops accepting, so with many
    // connections the others' connects time out in the small listen backlog
    // and requests sit unanswered. Its epoll mode (`-F epoll`) serves every
    // connection, but sockperf takes `-F` only with a feed file (`-f`).
    let feed = std::env::temp_dir().join(format!(
        "ringport-bench-sockperf-{}-{port}.feed",
        std::process::id()
    ));
    let proto = if spec.udp { 'U' } else { 'T' };
    std::fs::write(&feed, format!("{proto}:127.0.0.1:{port}\n"))
        .with_context(|| format!("writing sockperf's feed file {}", feed.display()))?;
    let mut cmd = Command::new(SOCKPERF);
    cmd.arg("server").arg("-f").arg(&feed).args(["-F", "epoll"]);
    let spawned = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `sockperf server` (is sockperf installed? apt-get install sockperf)");
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&feed);
            return Err(e);
        }
    };
    let cpus: Vec<usize> = spec.cpus.iter().copied().take(spec.shards.max(1)).collect();
    pin_process(child.id(), &cpus);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3);
    loop {
        if let Some(status) = child.try_wait()? {
            let _ = std::fs::remove_file(&feed);
            return Err(anyhow!("`sockperf server` exited at start with {status}"));
        }
        let up = if spec.udp {
            // Probing by binding the port could steal it: give it time instead.
            started.elapsed() > Duration::from_millis(300)
        } else {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        };
        if up {
            let _ = std::fs::remove_file(&feed);
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&feed);
            return Err(anyhow!(
                "`sockperf server` did not listen on {addr} within 3 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Box::new(Sockperf { child, addr }))
}

impl Server for Sockperf {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn cpu(&self) -> CpuSource {
        CpuSource::Process(self.child.id())
    }
    fn datagrams_received(&self) -> Option<u64> {
        None
    }
    fn stop(mut self: Box<Self>) {
        // SAFETY: kill has no memory preconditions; the child is ours and not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
