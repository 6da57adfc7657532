//! The MQTT scenarios in short runs with exact counts: against Mosquitto
//! (skipped with one line when the Debian package is missing, except in
//! CI), and against ringport once its `mqtt` plugin exists (until then,
//! the clear error).

use std::io::Write as _;

mod common;

use common::{args, run};
use ringport_bench::cli;
use ringport_bench::run::Figures;

fn mosquitto_or_skip() -> bool {
    common::installed_or_skip(
        ringport_bench::servers::mosquitto_installed(),
        "install the Debian package mosquitto",
    )
}

/// Every delivery owed arrived once and in order, nothing else came.
fn assert_exact(f: &Figures, published: u64, expected: u64) {
    let m = f.mqtt.unwrap();
    assert_eq!((f.sent, m.published), (published, published));
    assert_eq!((m.expected, m.delivered), (expected, expected));
    assert_eq!(f.received, Some(expected));
    assert_eq!(f.lost, Some(0));
    assert_eq!(
        (f.errors, f.io_errors, f.duplicates, f.reordered),
        (0, 0, 0, 0)
    );
    // Every delivery was due and received inside the (capped) window.
    assert_eq!(f.messages, expected);
    assert_eq!(f.latency.unwrap().count, expected);
    assert!(f.server_cpu_per_m.is_some());
}

/// The four scenarios against `target`, each a fraction of a second.
fn every_scenario_counts_exactly(target: &str) {
    // Fan-in: 10 publishers, one subscriber.
    let r = run(&[
        "--target",
        target,
        "--scenario",
        "mqtt-fanin",
        "--publishers",
        "10",
        "--messages",
        "3000",
        "--rate",
        "20000",
    ]);
    assert!(r.passed);
    let f = &r.scenarios[0].targets[0].runs[0];
    assert_exact(f, 3000, 3000);
    let m = f.mqtt.unwrap();
    assert_eq!((m.publishers, m.subscribers, m.qos), (10, 1, 0));
    assert_eq!((m.acked, m.puback), (None, None));

    // Fan-out: one publisher, 50 subscribers.
    let r = run(&[
        "--target",
        target,
        "--scenario",
        "mqtt-fanout",
        "--subscribers",
        "50",
        "--messages",
        "400",
        "--rate",
        "4000",
    ]);
    assert!(r.passed);
    assert_eq!(r.scenarios[0].scenario, "mqtt-fanout 50 subs");
    assert_exact(&r.scenarios[0].targets[0].runs[0], 400, 20_000);

    // QoS 1 over MQTT 5: every publish acknowledged, every delivery too.
    let r = run(&[
        "--target",
        target,
        "--scenario",
        "mqtt-qos1",
        "--publishers",
        "4",
        "--messages",
        "2000",
        "--rate",
        "10000",
        "--mqtt-version",
        "5",
    ]);
    assert!(r.passed);
    let f = &r.scenarios[0].targets[0].runs[0];
    assert_exact(f, 2000, 2000);
    let m = f.mqtt.unwrap();
    assert_eq!((m.subscribers, m.topics, m.qos), (4, 4, 1));
    assert_eq!((m.acked, m.unacked), (Some(2000), Some(0)));
    assert_eq!(m.puback.unwrap().count, 2000);

    // Idle clients: all connected, memory read before and after.
    let r = run(&[
        "--target",
        target,
        "--scenario",
        "mqtt-idle",
        "--clients",
        "300",
        "--duration",
        "0.2",
    ]);
    assert!(r.passed);
    let f = &r.scenarios[0].targets[0].runs[0];
    let m = f.mqtt.unwrap();
    assert_eq!(m.idle_clients, Some(300));
    assert_eq!((f.sent, f.received, f.lost), (300, Some(300), Some(0)));
    let (before, after) = (m.rss_before.unwrap(), m.rss_after.unwrap());
    assert!(before > 0 && after > 0);
    let per = m.rss_per_client.unwrap();
    assert_eq!(per, (after as f64 - before as f64) / 300.0);
    let table = ringport_bench::report::table(&r.scenarios[0]);
    assert!(table.contains("server RSS/client (B)"), "{table}");
}

#[test]
fn mosquitto_delivers_every_message_once_and_in_order() {
    if !mosquitto_or_skip() {
        return;
    }
    every_scenario_counts_exactly("mosquitto");
}

/// The floor answers what the load generator needs, so every scenario
/// counts exactly against it too.
#[test]
fn the_mqtt_probe_serves_every_scenario() {
    every_scenario_counts_exactly("mqtt-probe");
}

/// `--batch-delay-us` reaches the engine (a run that waits for fuller
/// batches still counts exactly), and out of range it is refused.
#[test]
fn the_batch_delay_is_the_engines() {
    let r = run(&[
        "--scenario",
        "mqtt-fanin",
        "--target",
        "ringport",
        "--publishers",
        "2",
        "--messages",
        "10",
        "--rate",
        "1000",
        "--batch-delay-us",
        "200",
    ]);
    assert_exact(&r.scenarios[0].targets[0].runs[0], 10, 10);
    use clap::Parser as _;
    let e = ringport_bench::cli::Args::try_parse_from([
        "ringport-bench",
        "--batch-delay-us",
        "1000001",
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("--batch-delay-us"), "{e}");
    assert!(e.contains("0..=1000000"), "{e}");
}

#[test]
fn ringport_serves_the_mqtt_scenarios_or_says_why_not() {
    let probe = cli::run(
        &args(&[
            "--scenario",
            "mqtt-fanin",
            "--target",
            "ringport",
            "--publishers",
            "2",
            "--messages",
            "10",
            "--rate",
            "1000",
        ]),
        vec![],
    );
    match probe {
        Ok(r) => {
            assert_exact(&r.scenarios[0].targets[0].runs[0], 10, 10);
            every_scenario_counts_exactly("ringport");
        }
        // A build without the broker says so.
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(msg.contains("mqtt-fanin against ringport"), "{msg}");
            assert!(msg.contains("no `mqtt` plugin"), "{msg}");
        }
    }
}

#[test]
fn mosquitto_serves_only_mqtt_and_mqtt_runs_only_against_brokers() {
    let e = cli::run(
        &args(&["--scenario", "tcp-echo", "--compare", "ringport,mosquitto"]),
        vec![],
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "scenario tcp-echo: mosquitto does not serve it (tcp-echo runs against: ringport, \
         ringport-epoll, tokio, tokio-mt, epoll, sockperf, or ADDR:PORT)"
    );
    let e = cli::run(
        &args(&[
            "--scenario",
            "mqtt-qos1",
            "--compare",
            "mosquitto,tokio,epoll",
        ]),
        vec![],
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "scenario mqtt-qos1: tokio, epoll do not serve it (mqtt-qos1 runs against: ringport, \
         ringport-epoll, mosquitto, mqtt-probe, or ADDR:PORT of an MQTT broker; ringport-nats \
         serves mqtt-fanout and mqtt-fanin only)"
    );
    let e = cli::run(
        &args(&["--scenario", "tcp-echo", "--target", "mqtt-probe"]),
        vec![],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("scenario tcp-echo: mqtt-probe does not serve it"),
        "{e}"
    );
    let e = cli::run(
        &args(&[
            "--scenario",
            "mqtt-fanin",
            "--target",
            "mqtt-probe",
            "--server-shards",
            "2",
        ]),
        vec![],
    )
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("mqtt-probe serves one shard"), "{e}");
    let e = cli::run(
        &args(&[
            "--scenario",
            "mqtt-fanin",
            "--target",
            "mosquitto",
            "--qos",
            "2",
        ]),
        vec![],
    )
    .unwrap_err()
    .to_string();
    assert_eq!(e, "mqtt-fanin: --qos must be 0 or 1");
}

/// A server that is not a broker is found out at set-up, by name.
#[test]
fn a_server_that_does_not_speak_mqtt_is_a_clear_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let e = cli::run(
        &args(&[
            "--scenario",
            "mqtt-fanin",
            "--target",
            &addr,
            "--publishers",
            "1",
        ]),
        vec![],
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("does not decode as MQTT"), "{msg}");
}
