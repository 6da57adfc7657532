//! The `ringport-nats` target (issue 14): relay-fanout and the MQTT fan-out
//! and fan-in across two ringport instances joined by a `nats-server`, in
//! short runs with exact counts, side by side with the same load within one
//! instance. Skipped with one line when `nats-server` is missing, except in
//! CI, where that fails.

mod common;

use common::{args, run};
use ringport_bench::cli;
use ringport_bench::run::Figures;

fn nats_server_or_skip() -> bool {
    common::installed_or_skip(
        ringport_bench::servers::nats_server_installed(),
        "install nats-server (apt-get install nats-server)",
    )
}

/// Every relay delivery owed arrived once and in order, nothing dropped.
fn assert_relay_exact(f: &Figures, published: u64, expected: u64) {
    let r = f.relay.unwrap();
    assert_eq!((f.sent, r.published), (published, published));
    assert_eq!((r.expected, r.delivered), (expected, expected));
    assert_eq!(f.received, Some(expected));
    assert_eq!((r.lost, r.lagged, r.server_drops), (0, 0, Some(0)));
    assert_eq!(f.lost, Some(0));
    assert_eq!(
        (f.errors, f.io_errors, f.duplicates, f.reordered),
        (0, 0, 0, 0)
    );
    assert_eq!(f.messages, expected);
    assert_eq!(f.latency.unwrap().count, expected);
    assert!(f.server_cpu_per_m.is_some());
}

/// Every MQTT delivery owed arrived once and in order, nothing else came.
fn assert_mqtt_exact(f: &Figures, published: u64, expected: u64) {
    let m = f.mqtt.unwrap();
    assert_eq!((f.sent, m.published), (published, published));
    assert_eq!((m.expected, m.delivered), (expected, expected));
    assert_eq!(f.received, Some(expected));
    assert_eq!(f.lost, Some(0));
    assert_eq!(
        (f.errors, f.io_errors, f.duplicates, f.reordered),
        (0, 0, 0, 0)
    );
    assert_eq!(f.messages, expected);
    assert_eq!(f.latency.unwrap().count, expected);
    assert!(f.server_cpu_per_m.is_some());
}

#[test]
fn relay_fanout_through_nats_delivers_every_message_once_in_order_like_one_instance() {
    if !nats_server_or_skip() {
        return;
    }
    let report = run(&[
        "--scenario",
        "relay-fanout",
        "--compare",
        "ringport,ringport-nats",
        "--subscribers",
        "8",
        "--publishers",
        "2",
        "--topics",
        "2",
        "--messages",
        "2000",
        "--rate",
        "10000",
    ]);
    assert!(report.passed);
    let targets = &report.scenarios[0].targets;
    let names: Vec<&str> = targets.iter().map(|t| t.target.as_str()).collect();
    assert_eq!(names, ["ringport", "ringport-nats"]);
    for t in targets {
        // Two topics, one publisher and four subscribers each: every
        // publish owed to four subscribers.
        assert_relay_exact(&t.runs[0], 2000, 8000);
    }
}

#[test]
fn mqtt_fanout_and_fanin_through_nats_deliver_every_message_once_in_order() {
    if !nats_server_or_skip() {
        return;
    }
    let r = run(&[
        "--target",
        "ringport-nats",
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
    assert_eq!(r.scenarios[0].targets[0].target, "ringport-nats");
    assert_mqtt_exact(&r.scenarios[0].targets[0].runs[0], 400, 20_000);

    let r = run(&[
        "--target",
        "ringport-nats",
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
    assert_mqtt_exact(&r.scenarios[0].targets[0].runs[0], 3000, 3000);
}

#[test]
fn ringport_nats_refuses_the_scenarios_it_does_not_bridge_and_says_which_it_does() {
    for scenario in ["mqtt-qos1", "mqtt-idle"] {
        let e = cli::run(
            &args(&["--scenario", scenario, "--target", "ringport-nats"]),
            vec![],
        )
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("ringport-nats does not serve it")
                && msg.contains("ringport-nats serves mqtt-fanout and mqtt-fanin only"),
            "{msg}"
        );
    }
    let e = cli::run(
        &args(&["--scenario", "tcp-echo", "--target", "ringport-nats"]),
        vec![],
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert_eq!(
        msg,
        "scenario tcp-echo: ringport-nats does not serve it (tcp-echo runs against: ringport, \
         ringport-epoll, tokio, tokio-mt, epoll, sockperf, or ADDR:PORT)"
    );
}
