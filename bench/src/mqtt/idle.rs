//! `mqtt-idle`: many connected clients that do nothing, and what they cost
//! the server in resident memory.
//!
//! The server is started and left alone for [`SETTLE`]; its `VmRSS` is
//! read (before). One pinned client thread then connects `--clients`
//! clients in batches of [`SETUP_BATCH`] (connect, CONNECT with a clean
//! session and a 60 s keep-alive, wait for every CONNACK of the batch),
//! so the broker is never asked to hold more than a batch of pending
//! accepts. With every client connected the run waits `--warmup`, measures
//! the server's CPU over `--duration` (what idle clients cost it: timers,
//! keep-alive bookkeeping), and reads `VmRSS` again at the end (after).
//! Memory per idle client is `(after - before) / clients`. The clients
//! send a PINGREQ every 30 s, so a long `--duration` does not trip the
//! broker's keep-alive, then close.
//!
//! For the in-process ringport target the process's `VmRSS` also holds the
//! client: everything the client keeps per connection (a descriptor in a
//! vector reserved before the first reading, 4 bytes) is allocated before
//! "before" or is kernel memory (socket buffers), which `VmRSS` does not
//! count.

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};

use super::wire::{self, Setup, Version};
use super::{MqttFigures, MqttSpec};
use crate::client::THREAD_PREFIX;
use crate::config::LoadSpec;
use crate::cpu::{cpu_ticks, CpuSource};
use crate::run::Figures;
use crate::servers::{self, Server, ServerSpec, Target};

/// How long the server is left alone before the first memory reading.
pub const SETTLE: Duration = Duration::from_millis(300);
/// Clients set up at a time.
pub const SETUP_BATCH: usize = 64;
/// How often the held clients send a PINGREQ.
const PING_EVERY: Duration = Duration::from_secs(30);

/// Runs `mqtt-idle` against `target`.
pub(super) fn run(
    spec: &LoadSpec,
    m: &MqttSpec,
    target: Target,
    server: &ServerSpec,
    progress: Option<&str>,
) -> Result<Figures> {
    let srv = servers::start(target, server)?;
    let cpus = super::server_cpus(target, server);
    let result = drive(spec, m, srv.as_ref(), &cpus, progress);
    srv.stop();
    result
}

/// What the client thread tells the harness.
enum Event {
    /// Every client is connected: how many, and how long it took.
    Connected(usize, Duration),
}

fn drive(
    spec: &LoadSpec,
    m: &MqttSpec,
    srv: &dyn Server,
    server_cpus: &[usize],
    progress: Option<&str>,
) -> Result<Figures> {
    let addrs = srv.addrs();
    let version = m.version.codec();
    let nonce = super::pubsub::clock_nonce();
    // Everything the client keeps is made before the first reading.
    let setups: Vec<Setup> = (0..m.clients)
        .map(|i| Setup {
            addr: addrs[i % addrs.len()],
            client_id: format!("rb{:x}-i{i}", nonce & 0xff_ffff),
            subscribe: None,
        })
        .collect();
    let (events, got) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let cpu = spec.cpus[0];
    let clients = m.clients;
    let label = progress.map(str::to_owned);
    std::thread::sleep(SETTLE);
    let rss_before = srv.rss();
    let handle = std::thread::Builder::new()
        .name(format!("{THREAD_PREFIX}-0"))
        .spawn(move || -> Result<()> {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                return Err(anyhow!("cannot pin a client thread to CPU {cpu}"));
            }
            let mut held: Vec<TcpStream> = Vec::with_capacity(clients);
            let started = Instant::now();
            for (n, batch) in setups.chunks(SETUP_BATCH * 16).enumerate() {
                held.extend(wire::connect_all(batch, version, SETUP_BATCH)?);
                if let Some(l) = &label {
                    if n % 10 == 9 {
                        eprint!("\r{l}: {} clients connected", held.len());
                    }
                }
            }
            if label.is_some() {
                eprintln!();
            }
            let _ = events.send(Event::Connected(held.len(), started.elapsed()));
            hold(&mut held, version, &stop_rx);
            Ok(())
        })
        .context("spawning the idle client thread")?;
    let Ok(Event::Connected(connected, took)) = got.recv() else {
        let e = handle
            .join()
            .map_err(|_| anyhow!("the idle client thread panicked"))?
            .err()
            .unwrap_or_else(|| anyhow!("the idle client thread stopped"));
        return Err(e.context(format!("connecting {clients} idle clients")));
    };
    if progress.is_some() {
        eprintln!(
            "mqtt-idle: {connected} clients connected in {:.2} s",
            took.as_secs_f64()
        );
    }
    std::thread::sleep(spec.warmup);
    let server_cpu = srv.cpu();
    let client_cpu = CpuSource::ThreadsNamed(vec![THREAD_PREFIX.into()]);
    let (s0, t0, k0, c0) = (
        server_cpu.sample(),
        cpu_ticks(server_cpus),
        cpu_ticks(&spec.cpus),
        client_cpu.sample(),
    );
    let w0 = Instant::now();
    std::thread::sleep(spec.duration);
    let window = w0.elapsed().as_secs_f64();
    let (s1, t1, k1, c1) = (
        server_cpu.sample(),
        cpu_ticks(server_cpus),
        cpu_ticks(&spec.cpus),
        client_cpu.sample(),
    );
    let rss_after = srv.rss();
    let _ = stop_tx.send(());
    handle
        .join()
        .map_err(|_| anyhow!("the idle client thread panicked"))??;

    let per_client = rss_before
        .zip(rss_after)
        .filter(|_| connected > 0)
        .map(|(a, b)| (b as f64 - a as f64) / connected as f64);
    let mqtt = MqttFigures {
        idle_clients: Some(connected as u64),
        rss_before,
        rss_after,
        rss_per_client: per_client,
        ..MqttFigures::default()
    };
    let mut f = Figures {
        sent: clients as u64,
        received: Some(connected as u64),
        lost: Some(clients.saturating_sub(connected) as u64),
        mqtt: Some(mqtt),
        ..Figures::default()
    };
    let cpu = super::CpuWindow {
        server: s0.zip(s1).map(|(a, b)| b.since(&a)),
        client: c0.zip(c1).map(|(a, b)| b.since(&a)),
        server_idle: t0.zip(t1).and_then(|(a, b)| b.idle_pct_since(&a)),
        client_idle: k0.zip(k1).and_then(|(a, b)| b.idle_pct_since(&a)),
        server_cpus: server_cpus.len(),
        client_cpus: spec.cpus.len(),
        window,
    };
    cpu.fill(&mut f, 0, 1);
    Ok(f)
}

/// Holds the clients until told to stop, with a PINGREQ every 30 s.
fn hold(held: &mut [TcpStream], version: Version, stop: &mpsc::Receiver<()>) {
    let mut ping = Vec::new();
    wire::pingreq(version, &mut ping);
    let mut bye = Vec::new();
    wire::disconnect(version, &mut bye);
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(PING_EVERY) {
        for s in held.iter_mut() {
            let _ = s.write_all(&ping);
        }
    }
    for s in held.iter_mut() {
        let _ = s.write_all(&bye);
    }
}
