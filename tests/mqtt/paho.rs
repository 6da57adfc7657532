//! paho-mqtt (Python) scenarios: `tests/mqtt/paho_check.py` run against
//! the broker.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::clients::V;
use crate::common::outside_program;
use crate::harness::Broker;

/// The script, next to this file.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mqtt/paho_check.py");

/// `python3` when it can import paho-mqtt (1.6, as Debian's
/// `python3-paho-mqtt`, or 2.x from PyPI); otherwise `None` and one
/// `skipped:` line, or a failure under CI (`CI=true`).
pub fn python() -> Option<PathBuf> {
    let python = outside_program("python3", "python3")?;
    let ok = Command::new(&python)
        .args(["-c", "import paho.mqtt.client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "paho-mqtt is not installed under CI: .ci/run installs it (`pip install paho-mqtt`)"
        );
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipped: install paho-mqtt (pip install paho-mqtt)"
    );
    None
}

/// Runs `scenario` over `v` with ports 0 and 1 of `broker`.
///
/// # Panics
///
/// When the script fails (its assertion and output shown) or runs over
/// 60 s.
pub fn run(python: &PathBuf, broker: &Broker, scenario: &str, v: V) {
    let version = match v {
        V::V311 => "311",
        V::V5 => "5",
    };
    let (a, b) = (broker.addr(0), broker.addr(1));
    let mut child = Command::new(python)
        .arg(SCRIPT)
        .args([scenario, version, &a.ip().to_string()])
        .args([a.port().to_string(), b.port().to_string()])
        .arg(broker.prefix())
        .env(
            "MQTT_TEST_STRICT",
            if broker.is_engine() { "1" } else { "0" },
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start python3");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end() == format!("ok {scenario}"),
        "paho scenario {scenario} over {v:?} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
