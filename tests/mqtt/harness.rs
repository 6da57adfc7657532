//! The broker a test talks to: the `mqtt` plugin in an in-process engine
//! (the default), a Mosquitto started for the test, or a broker already
//! running at an address.
//!
//! `MQTT_TEST_BROKER` picks it:
//!
//! * unset or `ringport`: an in-process engine with two shards on (up to)
//!   two CPUs, the `mqtt` plugin registered next to the built-ins and served
//!   on two ports, port `i` owned by shard `i` (range mode), so that a test
//!   connecting clients to [`Broker::addr`]`(0)` and `(1)` crosses shards;
//! * `mosquitto` (or a path to a `mosquitto` binary): a Mosquitto of its own
//!   per test on a free loopback port, configured as the test's [`Options`]
//!   say; how the tests themselves are checked against a reference broker;
//! * `HOST:PORT`: a broker someone else started. Every client goes to that
//!   one port, topics carry a per-test prefix so that tests running at once
//!   do not see each other, and tests that need a configured broker
//!   (maximum packet size, passwords) print one `skipped:` line.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use ringport::protocols::mqtt::broker::{MqttDrop, MqttStats};
use std::sync::Arc;

use crate::common::{Server, LOOPBACK};

/// The variable that picks the broker.
pub const BROKER_ENV: &str = "MQTT_TEST_BROKER";

/// How a test wants its broker configured.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The largest packet the broker accepts (and, in MQTT 5, announces in
    /// CONNACK as Maximum Packet Size).
    pub max_packet_size: Option<u32>,
    /// When not empty, only these users may connect, by username and
    /// password; anonymous clients are refused.
    pub users: Vec<(String, String)>,
    /// The engine's mesh ring size (messages per pair of shards), to make
    /// cross-shard delivery wait; other brokers have no such thing and
    /// ignore it.
    pub engine_mesh_capacity: Option<usize>,
}

impl Options {
    /// Whether any broker will do (an external one is not configurable).
    fn is_default(&self) -> bool {
        self.max_packet_size.is_none() && self.users.is_empty()
    }
}

/// Which broker `MQTT_TEST_BROKER` asks for.
#[derive(Debug, Clone)]
pub enum Kind {
    /// The `mqtt` plugin in an in-process engine.
    Engine,
    /// A Mosquitto per test, this binary.
    Mosquitto(PathBuf),
    /// A running broker at this address.
    External(SocketAddr),
}

/// Reads [`BROKER_ENV`].
///
/// # Panics
///
/// On a value that is none of the documented forms.
pub fn kind() -> Kind {
    let Ok(value) = std::env::var(BROKER_ENV) else {
        return Kind::Engine;
    };
    match value.as_str() {
        "" | "ringport" => Kind::Engine,
        "mosquitto" => Kind::Mosquitto(PathBuf::from("/usr/sbin/mosquitto")),
        v if v.ends_with("mosquitto") => Kind::Mosquitto(PathBuf::from(v)),
        v => Kind::External(v.parse().unwrap_or_else(|_| {
            panic!("{BROKER_ENV}={v}: expected `ringport`, `mosquitto`, a path to mosquitto or HOST:PORT")
        })),
    }
}

/// A broker for one test; stops (engine, Mosquitto) when dropped.
#[derive(Debug)]
pub struct Broker {
    inner: Inner,
    addrs: Vec<SocketAddr>,
    prefix: String,
}

#[derive(Debug)]
enum Inner {
    Engine(Box<Server>, Arc<MqttStats>),
    // Held for its Drop, which stops it.
    #[allow(dead_code)]
    Mosquitto(Mosquitto),
    External,
}

impl Broker {
    /// Starts (or points at) the broker for test `test`; `None`, with a
    /// `skipped:` line, when it is an external broker and `options` need a
    /// configured one.
    pub fn start(test: &str, options: &Options) -> Option<Broker> {
        let prefix = format!("{test}-{:08x}", rand::thread_rng().gen::<u32>());
        let (inner, addrs) = match kind() {
            Kind::Engine => {
                let (server, stats) = crate::engine::start(options);
                let addrs = server.addrs(0);
                (Inner::Engine(Box::new(server), stats), addrs)
            }
            Kind::Mosquitto(path) => {
                let m = Mosquitto::start(&path, options);
                let addr = m.addr;
                (Inner::Mosquitto(m), vec![addr])
            }
            Kind::External(addr) => {
                if !options.is_default() {
                    eprintln!(
                        "skipped: {test} needs a broker configured with {options:?}; \
                         {BROKER_ENV}=mosquitto starts one per test"
                    );
                    return None;
                }
                (Inner::External, vec![addr])
            }
        };
        Some(Broker {
            inner,
            addrs,
            prefix,
        })
    }

    /// Starts the broker with default options (never skipped).
    pub fn default(test: &str) -> Broker {
        Broker::start(test, &Options::default()).expect("default options are never skipped")
    }

    /// The address of port `i` (wrapping): with the engine, port `i % 2` is
    /// served by shard `i % 2`; other brokers have one port.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i % self.addrs.len()]
    }

    /// A topic of this test's own: `<test>-<random>/<suffix>` (one level
    /// for the prefix, so that `+` can stand for it).
    pub fn topic(&self, suffix: &str) -> String {
        if suffix.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}/{suffix}", self.prefix)
        }
    }

    /// This test's topic prefix, one level.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether this is the in-process engine.
    pub fn is_engine(&self) -> bool {
        matches!(self.inner, Inner::Engine(..))
    }

    /// The broker's non-zero drop counters (`name=count`, summed over
    /// shards); empty for other brokers.
    pub fn drops(&self) -> String {
        let Inner::Engine(_, stats) = &self.inner else {
            return String::new();
        };
        MqttDrop::ALL
            .iter()
            .map(|&d| (d.as_str(), stats.total(|s| s.drops(d))))
            .filter(|&(_, n)| n > 0)
            .map(|(name, n)| format!("{name}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Stops the broker: the engine's final counters are checked for
    /// plugin panics (there must be none).
    pub fn stop(mut self) {
        let inner = std::mem::replace(&mut self.inner, Inner::External);
        if let Inner::Engine(server, _) = inner {
            let totals = crate::common::total(&server.shutdown());
            let panics = totals.engine_drops[ringport::engine::EngineDrop::PluginPanic as usize];
            assert_eq!(panics, 0, "the mqtt plugin panicked {panics} times");
        }
    }
}

impl Drop for Broker {
    /// A failing test shows what the broker counted.
    fn drop(&mut self) {
        if std::thread::panicking() && self.is_engine() {
            eprintln!("the broker's drop counters: {}", self.drops());
        }
    }
}

/// A Mosquitto of a test's own.
#[derive(Debug)]
struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Mosquitto {
    /// Writes a configuration for `options` and starts `mosquitto` on a
    /// free loopback port, retrying on another port when it cannot bind.
    fn start(path: &Path, options: &Options) -> Mosquitto {
        let dir = std::env::temp_dir().join(format!(
            "ringport-mqtt-{}-{:016x}",
            std::process::id(),
            rand::thread_rng().gen::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("create a directory for mosquitto");
        // Unbounded queues: the tests measure delivery, not a drop policy.
        let mut common = String::from(
            "persistence false\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             max_queued_messages 0\n",
        );
        if let Some(max) = options.max_packet_size {
            common += &format!("max_packet_size {max}\n");
        }
        if options.users.is_empty() {
            common += "allow_anonymous true\n";
        } else {
            let file = dir.join("passwords");
            for (i, (user, password)) in options.users.iter().enumerate() {
                let mut cmd = Command::new("mosquitto_passwd");
                if i == 0 {
                    cmd.arg("-c");
                }
                let out = cmd
                    .arg("-b")
                    .arg(&file)
                    .arg(user)
                    .arg(password)
                    .output()
                    .expect("run mosquitto_passwd");
                assert!(out.status.success(), "mosquitto_passwd: {out:?}");
            }
            common += &format!("allow_anonymous false\npassword_file {}\n", file.display());
        }
        for _ in 0..32 {
            let port = free_port();
            let conf = dir.join("mosquitto.conf");
            std::fs::write(&conf, format!("listener {port} {LOOPBACK}\n{common}"))
                .expect("write mosquitto.conf");
            let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
            let mut child = Command::new(path)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
            let addr = SocketAddr::new(LOOPBACK, port);
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break; // most likely the port is taken: another one
                }
                if TcpStream::connect(addr).is_ok() {
                    return Mosquitto { child, addr, dir };
                }
                assert!(
                    Instant::now() < deadline,
                    "mosquitto did not listen on {addr} in 5 s: {}",
                    std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!(
            "mosquitto would not start: {}",
            std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default()
        );
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port for a server: 20000 up to the kernel's ephemeral range (as the
/// engine's tests pick theirs), free when looked at.
fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let high = if low > 25000 { low } else { 60000 };
    let mut rng = rand::thread_rng();
    loop {
        let port = rng.gen_range(20000..high);
        if std::net::TcpListener::bind(SocketAddr::new(LOOPBACK, port)).is_ok() {
            return port;
        }
    }
}
