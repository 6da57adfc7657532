//! The `ringport` binary under soak: started as a child process on one
//! pinned shard, read through its admin endpoint (`/metrics`) and
//! `/proc/PID/status` (resident memory).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::process::{admin_is_up, start_ringport, Ringport, Stderr};
use crate::common::LOOPBACK;

/// A running `ringport serve`: echo over TCP, relay over TCP and echo over
/// UDP on consecutive ports, the admin endpoint on the next one.
pub struct Served {
    proc: Ringport,
    /// The echo TCP port.
    pub echo: SocketAddr,
    /// The relay TCP port.
    pub relay: SocketAddr,
    /// The echo UDP port (the flood's target).
    pub udp: SocketAddr,
    /// The admin endpoint.
    pub admin: SocketAddr,
}

impl Served {
    /// Starts `ringport serve` with one shard on `cpu` and `extra` flags,
    /// on random free ports (retrying when one is taken).
    pub fn start(cpu: usize, extra: &[String]) -> Served {
        let at = |p: u16| SocketAddr::new(LOOPBACK, p);
        let proc = start_ringport(
            4,
            |cmd, port| {
                cmd.args(["serve", "--shards", "1", "--cpus", &cpu.to_string()])
                    .arg("--listen")
                    .arg(format!("echo@tcp:127.0.0.1:{port}"))
                    .arg("--listen")
                    .arg(format!("relay@tcp:127.0.0.1:{}", port + 1))
                    .arg("--listen")
                    .arg(format!("echo@udp:127.0.0.1:{}", port + 2))
                    .arg("--admin")
                    .arg(at(port + 3).to_string())
                    .args(extra);
            },
            admin_is_up,
            Stderr::Merged,
        );
        let port = proc.port;
        Served {
            proc,
            echo: at(port),
            relay: at(port + 1),
            udp: at(port + 2),
            admin: at(port + 3),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// Makes every thread of the server SCHED_FIFO at `priority`, so that
    /// other work on its CPU (this machine is shared) does not queue it;
    /// returns how many threads were changed.
    pub fn realtime(&self, priority: i32) -> usize {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).expect("the tasks");
        let param = libc::sched_param {
            sched_priority: priority,
        };
        tasks
            .filter_map(|t| t.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
            // SAFETY: `param` is a live sched_param; `tid` names one thread.
            .filter(|&tid| unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) } == 0)
            .count()
    }

    /// A field of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`).
    pub fn status_bytes(&self, field: &str) -> u64 {
        status_bytes(self.pid(), field)
    }

    /// The current `/metrics`.
    pub fn metrics(&self) -> Metrics {
        Metrics::parse(&http_get(self.admin, "/metrics"))
    }

    /// Sends SIGTERM and waits for the exit; returns whether it exited 0 and
    /// everything it printed.
    pub fn terminate(mut self, within: Duration) -> (bool, Vec<String>) {
        let (status, rest) = self.proc.terminate(within);
        let mut printed = std::mem::take(&mut self.proc.printed);
        printed.extend(rest);
        (status.success(), printed)
    }
}

/// A field of `/proc/PID/status` in bytes.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().strip_suffix(" kB")?.trim().parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the admin endpoint");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the admin answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    body.to_owned()
}

/// One sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// A `/metrics` page, parsed.
#[derive(Debug, Clone)]
pub struct Metrics(Vec<Sample>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut out = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let value: f64 = value.parse().expect("a numeric sample");
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), Vec::new()),
                Some((name, rest)) => {
                    let rest = rest.strip_suffix('}').expect("closed labels");
                    let mut labels = Vec::new();
                    // Label values here hold no `",` (listener specs, reasons).
                    for pair in rest.split("\",") {
                        let (k, v) = pair.split_once("=\"").expect("k=\"v\"");
                        labels.push((k.to_owned(), v.trim_end_matches('"').to_owned()));
                    }
                    (name.to_owned(), labels)
                }
            };
            out.push((name, labels, value));
        }
        Metrics(out)
    }

    /// The sum of every sample of `name` whose labels include each of
    /// `filter` (a value ending in `*` matches by prefix).
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> u64 {
        self.0
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && filter.iter().all(|(k, want)| {
                        labels.iter().any(|(lk, lv)| {
                            lk == k
                                && match want.strip_suffix('*') {
                                    Some(prefix) => lv.starts_with(prefix),
                                    None => lv == want,
                                }
                        })
                    })
            })
            .map(|(_, _, v)| *v as u64)
            .sum()
    }

    /// An engine drop count by reason.
    pub fn engine_drop(&self, reason: &str) -> u64 {
        self.sum(
            "ringport_drops_total",
            &[("by", "engine"), ("reason", reason)],
        )
    }

    /// A plugin drop count by reason.
    pub fn plugin_drop(&self, reason: &str) -> u64 {
        self.sum(
            "ringport_drops_total",
            &[("by", "plugin"), ("reason", reason)],
        )
    }

    /// Every non-zero drop, `by/reason = n`, for the summary.
    pub fn nonzero_drops(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _, v)| n == "ringport_drops_total" && *v > 0.0)
            .map(|(_, labels, v)| {
                let get = |k: &str| {
                    labels
                        .iter()
                        .find(|(lk, _)| lk == k)
                        .map_or("", |(_, v)| v.as_str())
                };
                format!("{}/{} = {}", get("by"), get("reason"), *v as u64)
            })
            .collect()
    }

    /// Denials of the listener whose spec starts with `listener`, every
    /// reason, mode `deny`.
    pub fn denials(&self, listener: &str) -> u64 {
        self.sum(
            "ringport_listener_denials_total",
            &[("listener", listener), ("mode", "deny")],
        )
    }
}

/// Samples a process's resident memory every few milliseconds on a thread
/// of its own, keeping the largest value seen since the last
/// [`RssSampler::take_peak`].
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling `pid` every `every`.
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    p.fetch_max(status_bytes(pid, "VmRSS"), Ordering::Relaxed);
                    std::thread::sleep(every);
                }
            })
            .expect("spawn the RSS sampler");
        RssSampler {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// The largest resident size seen since the last call, and starts over.
    pub fn take_peak(&self) -> u64 {
        self.peak.swap(0, Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
