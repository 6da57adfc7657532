//! The `ringport` binary as an MQTT broker, driven by Mosquitto's own
//! command-line clients (Debian package `mosquitto-clients`): logins from a
//! password file made by `ringport mqtt passwd`, an ACL file, the
//! handshake-log lines and `/metrics` series of the broker, and retained
//! messages kept across a restart by `--mqtt-persistence`.
//!
//! Without `mosquitto_pub`/`mosquitto_sub` each test prints
//! `skipped: install the Debian package mosquitto-clients` and passes
//! (under `CI=true` it fails).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::process::{admin_is_up, start_ringport, Ringport, Stderr};
use common::{outside_program, ringport_bin};

const TIMEOUT: Duration = Duration::from_secs(20);

fn clients() -> Option<(PathBuf, PathBuf)> {
    let sub = outside_program("mosquitto_sub", "mosquitto-clients")?;
    let publ = outside_program("mosquitto_pub", "mosquitto-clients")?;
    Some((publ, sub))
}

/// A `ringport serve` with two shards, an `mqtt` listener on two ports (one
/// per shard), an admin endpoint and a handshake log.
struct Broker {
    proc: Ringport,
    ports: [u16; 2],
    admin: SocketAddr,
    log: PathBuf,
}

impl Broker {
    fn start(dir: &Path, extra: &[&str]) -> Broker {
        let proc = start_ringport(
            3,
            |cmd, port| {
                cmd.args(["serve", "--shards", "2", "--drain-timeout", "1"])
                    .arg("--listen")
                    .arg(format!("mqtt@tcp:127.0.0.1:{port}-{}", port + 1))
                    .arg("--admin")
                    .arg(format!("127.0.0.1:{}", port + 2))
                    .arg("--log")
                    .arg(dir.join(format!("log-{port}.json")))
                    .args(extra);
            },
            admin_is_up,
            Stderr::Lines,
        );
        let port = proc.port;
        Broker {
            ports: [port, port + 1],
            admin: format!("127.0.0.1:{}", port + 2).parse().unwrap(),
            log: dir.join(format!("log-{port}.json")),
            proc,
        }
    }

    fn metrics(&self) -> String {
        let mut s = TcpStream::connect(self.admin).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.split_once("\r\n\r\n").unwrap().1.to_owned()
    }

    /// The series `name` of the `mqtt` listener with `labels` after its
    /// `listener` label (`""` for none).
    fn of_listener(&self, name: &str, labels: &str) -> String {
        let (a, b) = (self.ports[0], self.ports[1]);
        let sep = if labels.is_empty() { "" } else { "," };
        format!("{name}{{listener=\"mqtt@tcp:127.0.0.1:{a}-{b}\"{sep}{labels}}}")
    }

    /// The value of `series` (name and labels) in `/metrics`.
    fn sample(&self, series: &str) -> u64 {
        let m = self.metrics();
        m.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
    }

    /// Waits until `series` reads `want`.
    fn wait_sample(&self, series: &str, want: u64) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let got = self.sample(series);
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{series} is {got}, not {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The handshake log's `mqtt_*` lines so far, as JSON.
    fn mqtt_lines(&self, event: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == event)
            .collect()
    }

    fn wait_lines(&self, event: &str, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let l = self.mqtt_lines(event);
            if l.len() >= n {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "{} {event} lines, not {n}",
                l.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> bool {
        let (status, printed) = self.proc.terminate(TIMEOUT);
        assert!(
            printed.iter().any(|l| l.starts_with("total:")),
            "{printed:?}"
        );
        status.success()
    }
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run a mosquitto client")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ringport-mqtt-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn passwd(file: &Path, user: &str, password: &str) {
    let mut child = Command::new(ringport_bin())
        .args(["mqtt", "passwd", file.to_str().unwrap(), user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{user}: password set in {}\n", file.display())
    );
}

#[test]
fn passwords_and_an_acl_decide_who_publishes_and_subscribes_to_what() {
    let Some((publ, sub)) = clients() else { return };
    let dir = temp_dir("acl");
    let pw = dir.join("passwd");
    passwd(&pw, "sensor", "s3cret");
    passwd(&pw, "ops", "0ps-pass");
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "user sensor\ntopic write sensors/%u/#\npattern write sensors/%u/#\n\
         user ops\ntopic read sensors/#\n",
    )
    .unwrap();
    let b = Broker::start(
        &dir,
        &[
            "--mqtt-password-file",
            pw.to_str().unwrap(),
            "--mqtt-acl-file",
            acl.to_str().unwrap(),
        ],
    );
    let [p0, p1] = b.ports.map(|p| p.to_string());

    // A wrong password: CONNACK 4 (3.1.1) and 0x86 (5.0).
    let bad = run(
        &publ,
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &p0,
            "-u",
            "sensor",
            "-P",
            "wrong",
            "-t",
            "sensors/sensor/t",
            "-m",
            "x",
            "-V",
            "mqttv311",
        ],
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("not authorised") || err.contains("bad user name or password"),
        "{err}"
    );
    let bad5 = run(
        &publ,
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &p1,
            "-u",
            "nobody",
            "-P",
            "x",
            "-t",
            "a",
            "-m",
            "x",
            "-V",
            "mqttv5",
        ],
    );
    assert!(!bad5.status.success());
    // No login at all: refused (no --mqtt-allow-anonymous).
    let anon = run(&publ, &["-h", "127.0.0.1", "-p", &p0, "-t", "a", "-m", "x"]);
    assert!(!anon.status.success());

    // ops reads sensors/# on shard 1; sensor publishes on shard 0, once
    // where the ACL lets it and once where it does not.
    let reader = Command::new(&sub)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &p1,
            "-u",
            "ops",
            "-P",
            "0ps-pass",
            "-t",
            "sensors/#",
            "-q",
            "1",
            "-v",
            "-C",
            "2",
            "-W",
            "20",
            "-V",
            "mqttv5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    b.wait_sample(&b.of_listener("ringport_mqtt_subscriptions", ""), 1);
    for (topic, msg) in [
        ("sensors/sensor/temp", "21.5"),
        ("sensors/other/temp", "forged"),
        ("sensors/sensor/hum", "40"),
    ] {
        let out = run(
            &publ,
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &p0,
                "-u",
                "sensor",
                "-P",
                "s3cret",
                "-t",
                topic,
                "-m",
                msg,
                "-q",
                "1",
                "-V",
                "mqttv311",
            ],
        );
        // 3.1.1 has no way to refuse a PUBLISH: it is acknowledged and dropped.
        assert!(out.status.success(), "{out:?}");
    }
    let got = reader.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "sensors/sensor/temp 21.5\nsensors/sensor/hum 40\n"
    );

    // ops may not publish at all; a v5 client is told (0x87) per PUBLISH.
    let denied = run(
        &publ,
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &p1,
            "-u",
            "ops",
            "-P",
            "0ps-pass",
            "-t",
            "sensors/x",
            "-m",
            "no",
            "-q",
            "1",
            "-V",
            "mqttv5",
        ],
    );
    let err = String::from_utf8_lossy(&denied.stderr).to_string();
    assert!(
        err.contains("not authorized") || err.contains("Not authorized"),
        "{denied:?}"
    );

    // Exact counts: 4 logins let in (sensor x3, ops reader) + ops publisher
    // = 5; 3 refused.
    b.wait_sample(
        &b.of_listener("ringport_mqtt_connects_total", "result=\"accepted\""),
        5,
    );
    assert_eq!(
        b.sample(&b.of_listener("ringport_mqtt_connects_total", "result=\"refused\"")),
        3,
        "{:#?}",
        b.mqtt_lines("mqtt_connect")
    );
    assert_eq!(
        b.sample(&b.of_listener("ringport_mqtt_messages_total", "direction=\"in\",qos=\"1\"")),
        4
    );
    assert_eq!(
        b.sample(&b.of_listener(
            "ringport_mqtt_messages_total",
            "direction=\"out\",qos=\"1\""
        )),
        2
    );
    // The 3 refused logins and the 2 refused publishes.
    assert_eq!(
        b.sample(&b.of_listener("ringport_mqtt_drops_total", "reason=\"not_authorized\"")),
        5
    );
    // Nothing outside a listener, and the page is valid Prometheus text.
    assert_eq!(
        b.sample("ringport_mqtt_drops_total{listener=\"none\",reason=\"not_authorized\"}"),
        0
    );
    ringport_tools::testing::promtool_check(&b.metrics());
    let connects = b.wait_lines("mqtt_connect", 8);
    let results: Vec<(String, String)> = connects
        .iter()
        .map(|l| {
            (
                l["username"].as_str().unwrap().to_owned(),
                l["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (user, result) in [
        ("sensor", "bad_username_or_password"),
        ("nobody", "bad_username_or_password"),
        ("", "not_authorized"),
        ("ops", "success"),
        ("sensor", "success"),
    ] {
        assert!(
            results.contains(&(user.to_owned(), result.to_owned())),
            "no {user} {result} in {results:?}"
        );
    }
    let denials = b.wait_lines("mqtt_denied", 2);
    let topics: Vec<&str> = denials
        .iter()
        .map(|l| l["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics.len(), 2, "{denials:?}");
    assert!(topics.contains(&"sensors/other/temp") && topics.contains(&"sensors/x"));
    // Each line names the client's address as the engine knows it (the
    // broker keeps none: `Context::peer`).
    for l in connects.iter().chain(&denials) {
        let peer: SocketAddr = l["peer"].as_str().unwrap().parse().unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.1", "{l}");
        assert_ne!(peer.port(), 0, "{l}");
    }
    assert!(b.stop());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retained_messages_survive_a_restart_with_persistence() {
    let Some((publ, sub)) = clients() else { return };
    let dir = temp_dir("persist");
    let db = dir.join("mqtt.db");
    let flags = [
        "--mqtt-allow-anonymous",
        "--mqtt-persistence",
        db.to_str().unwrap(),
    ];
    let b = Broker::start(&dir, &flags);
    let [p0, p1] = b.ports.map(|p| p.to_string());
    for (topic, msg, port) in [("plant/1/state", "on", &p0), ("plant/2/state", "off", &p1)] {
        let out = run(
            &publ,
            &[
                "-h",
                "127.0.0.1",
                "-p",
                port,
                "-t",
                topic,
                "-m",
                msg,
                "-r",
                "-q",
                "1",
            ],
        );
        assert!(out.status.success(), "{out:?}");
    }
    b.wait_sample("ringport_mqtt_retained_messages", 2);
    assert!(b.stop());
    assert!(db.exists(), "no persistence file at stop");

    let b = Broker::start(&dir, &flags);
    // Restored when the shards start, before any client connects.
    b.wait_sample("ringport_mqtt_retained_messages", 2);
    let [p0, _] = b.ports.map(|p| p.to_string());
    let out = run(
        &sub,
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &p0,
            "-t",
            "plant/+/state",
            "-v",
            "-C",
            "2",
            "-W",
            "10",
        ],
    );
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    assert_eq!(got, ["plant/1/state on", "plant/2/state off"]);
    b.wait_sample("ringport_mqtt_retained_messages", 2);
    assert!(b.stop());

    // A corrupt file is refused at start, naming it.
    let mut bytes = std::fs::read(&db).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&db, bytes).unwrap();
    let out = Command::new(ringport_bin())
        .args([
            "serve",
            "--shards",
            "1",
            "--listen",
            "mqtt@tcp:127.0.0.1:29999",
            "--mqtt-allow-anonymous",
            "--mqtt-persistence",
            db.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mqtt persistence file") && err.contains("is not loaded"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
