//! relay-fanout against the in-process ringport engine (exact counts), an
//! external relay that corrupts known deliveries, and targets that do not
//! speak relay.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

mod common;

use ringport_bench::cli::{self, Args};
use ringport_bench::report::Report;

/// The arguments of a relay-fanout run with `extra`.
fn args(extra: &[&str]) -> Args {
    common::args(&[&["--scenario", "relay-fanout"], extra].concat())
}

/// A relay-fanout run with `extra`.
fn run(extra: &[&str]) -> Report {
    common::run(&[&["--scenario", "relay-fanout"], extra].concat())
}

#[test]
fn every_publish_reaches_every_subscriber_across_two_shards_and_the_json_says_so() {
    let dir = std::env::temp_dir().join(format!("ringport-bench-relay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg) = (dir.join("relay.json"), dir.join("relay.svg"));
    let report = run(&[
        "--server-shards",
        "2",
        "--subscribers",
        "8",
        "--publishers",
        "2",
        "--messages",
        "2000",
        "--rate",
        "20000",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(report.passed);
    let f = &report.scenarios[0].targets[0].runs[0];
    let r = f.relay.unwrap();
    assert_eq!((r.subscribers, r.publishers, r.topics), (8, 2, 1));
    assert_eq!((f.sent, r.published), (2000, 2000));
    assert_eq!((r.expected, r.delivered), (16_000, 16_000));
    assert_eq!(f.received, Some(16_000));
    assert_eq!((r.lost, r.lagged, r.server_drops), (0, 0, Some(0)));
    assert_eq!(f.lost, Some(0));
    assert_eq!(
        (f.errors, f.io_errors, f.duplicates, f.reordered),
        (0, 0, 0, 0)
    );
    // Every delivery was due and received inside the (capped) window.
    assert_eq!(f.messages, 16_000);
    assert_eq!(f.latency.unwrap().count, 16_000);

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let s = &v["scenarios"][0];
    assert_eq!(s["scenario"], "relay-fanout");
    assert_eq!(s["load"]["relay"]["subscribers"], 8);
    let run = &s["targets"][0]["runs"][0];
    assert_eq!(run["relay"]["expected"], 16_000);
    assert_eq!(run["relay"]["delivered"], 16_000);
    assert_eq!(run["relay"]["published"], 2000);
    assert_eq!(run["relay"]["lost"], 0);
    let summary = &s["targets"][0]["summary"];
    assert_eq!(summary["deliveries_received"]["median"], 16_000.0);
    assert_eq!(summary["deliveries_expected"]["median"], 16_000.0);
    assert_eq!(summary["lost"]["median"], 0.0);
    assert!(summary["p99_us"]["median"].as_f64().is_some());
    assert!(summary["server_cpu_s_per_m"]["median"].as_f64().is_some());
    let table = ringport_bench::report::table(&report.scenarios[0]);
    assert!(table.contains("deliveries received") && table.contains("8 subscribers"));
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.contains("relay-fanout: latency by percentile"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn udp_publishers_and_three_topics_owe_exactly_each_topics_subscribers() {
    let report = run(&[
        "--server-shards",
        "2",
        "--subscribers",
        "8",
        "--publishers",
        "2",
        "--topics",
        "3",
        "--publish-udp",
        "--messages",
        "2000",
        // Slow enough that a server shard held up for a while does not
        // overflow a default-sized UDP receive buffer.
        "--rate",
        "5000",
    ]);
    let r = report.scenarios[0].targets[0].runs[0].relay.unwrap();
    // Each publisher sends 1000: 334 on topic 0, 333 on topics 1 and 2;
    // the 8 subscribers are 3, 3 and 2 per topic.
    assert_eq!(r.expected, 668 * 3 + 666 * 3 + 666 * 2);
    assert_eq!((r.delivered, r.lost), (r.expected, 0));
    assert!(report.passed);
}

/// An external relay on `ports` consecutive ports (one accept loop each)
/// that flips a payload byte of every `every`-th delivery.
fn corrupting_relay(ports: usize, every: u64) -> SocketAddr {
    let listeners: Vec<TcpListener> = loop {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let rest: Option<Vec<TcpListener>> = (1..ports as u16)
            .map(|i| TcpListener::bind(("127.0.0.1", port.checked_add(i)?)).ok())
            .collect();
        if let Some(rest) = rest {
            break std::iter::once(first).chain(rest).collect();
        }
    };
    let addr = listeners[0].local_addr().unwrap();
    let subs: Arc<Mutex<HashMap<Vec<u8>, Vec<TcpStream>>>> = Default::default();
    let count = Arc::new(Mutex::new(0u64));
    for l in listeners {
        let (subs, count) = (subs.clone(), count.clone());
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                let (subs, count) = (subs.clone(), count.clone());
                thread::spawn(move || serve(s, &subs, &count, every));
            }
        });
    }
    addr
}

fn serve(
    mut s: TcpStream,
    subs: &Mutex<HashMap<Vec<u8>, Vec<TcpStream>>>,
    count: &Mutex<u64>,
    every: u64,
) {
    let mut head = [0u8; 6];
    while s.read_exact(&mut head).is_ok() {
        let (tlen, plen) = (
            head[1] as usize,
            u32::from_be_bytes(head[2..6].try_into().unwrap()),
        );
        let mut body = vec![0; tlen + plen as usize];
        if s.read_exact(&mut body).is_err() {
            return;
        }
        let topic = body[..tlen].to_vec();
        match head[0] {
            0x01 => subs
                .lock()
                .unwrap()
                .entry(topic)
                .or_default()
                .push(s.try_clone().unwrap()),
            0x04 => {
                let mut pong = head;
                pong[0] = 0x83;
                s.write_all(&[&pong[..], &body].concat()).unwrap();
            }
            0x03 => {
                let mut subs = subs.lock().unwrap();
                for sub in subs.get_mut(&topic).into_iter().flatten() {
                    let mut frame = [&[0x81], &head[1..], &body].concat();
                    let mut n = count.lock().unwrap();
                    *n += 1;
                    if *n % every == 0 {
                        *frame.last_mut().unwrap() ^= 0x20;
                    }
                    let _ = sub.write_all(&frame);
                }
            }
            _ => return,
        }
    }
}

#[test]
fn a_corrupted_byte_in_a_thousand_deliveries_is_an_error_and_a_loss_and_fails_the_run() {
    let addr = corrupting_relay(2, 1000).to_string();
    let report = run(&[
        "--target",
        &addr,
        "--ports",
        "2",
        "--subscribers",
        "4",
        "--publishers",
        "2",
        "--messages",
        "2000",
        "--rate",
        "20000",
    ]);
    let f = &report.scenarios[0].targets[0].runs[0];
    let r = f.relay.unwrap();
    // 8,000 deliveries, every 1000th corrupted: 8 errors, not delivered.
    assert_eq!((r.expected, r.delivered, r.lost), (8000, 7992, 8));
    assert_eq!((f.errors, f.lost), (8, Some(8)));
    assert_eq!(r.server_drops, None, "an external server cannot tell");
    assert!(!report.passed);
}

#[test]
fn comparing_with_a_target_that_does_not_speak_relay_is_a_clear_error() {
    let e = cli::run(&args(&["--compare", "ringport,tokio,epoll"]), vec![]).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("relay-fanout"), "{msg}");
    assert!(msg.contains("tokio, epoll do not"), "{msg}");
    assert!(msg.contains("ringport-nats, or ADDR:PORT"), "{msg}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringport-bench"))
        .args([
            "--quiet",
            "--scenario",
            "relay-fanout",
            "--compare",
            "ringport,tokio",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("relay-fanout") && stderr.contains("tokio does not"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing ran");
}

#[test]
fn conns_and_depth_are_refused_for_relay_fanout() {
    let e = cli::run(&args(&["--conns", "8"]), vec![]).unwrap_err();
    assert!(format!("{e}").contains("--subscribers"), "{e}");
}
