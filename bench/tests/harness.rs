//! The harness against servers whose faults are known exactly, and its JSON report.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use clap::Parser;
use ringport_bench::cli::{self, Args};
use ringport_bench::report::FIGURES;

/// Every this many messages, the faulty servers misbehave once.
const EVERY: u64 = 1000;
/// Messages per test run: exactly 10 faults.
const MESSAGES: u64 = 10_000;

fn reflect(frame: &mut [u8]) {
    frame[9] &= !1;
}

/// A TCP sockperf reflector that flips the last byte of every 1000th reply.
fn faulty_tcp() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let count = count.clone();
            thread::spawn(move || {
                s.set_nodelay(true).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16384];
                loop {
                    let n = match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let mut out = Vec::new();
                    let mut off = 0;
                    while buf.len() - off >= 14 {
                        let len = u32::from_be_bytes(buf[off + 10..off + 14].try_into().unwrap())
                            as usize;
                        if buf.len() - off < len {
                            break;
                        }
                        let mut frame = buf[off..off + len].to_vec();
                        reflect(&mut frame);
                        if count.fetch_add(1, Ordering::Relaxed) % EVERY == EVERY - 1 {
                            *frame.last_mut().unwrap() ^= 0xff;
                        }
                        out.extend_from_slice(&frame);
                        off += len;
                    }
                    buf.drain(..off);
                    if s.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A TCP sockperf reflector (one connection) that stalls once, for `stall`,
/// before answering request number `at`.
fn stalling_tcp(at: u64, stall: std::time::Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        s.set_nodelay(true).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        let mut seen = 0u64;
        loop {
            let n = match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut out = Vec::new();
            let mut off = 0;
            while buf.len() - off >= 14 {
                let len = u32::from_be_bytes(buf[off + 10..off + 14].try_into().unwrap()) as usize;
                if buf.len() - off < len {
                    break;
                }
                seen += 1;
                if seen == at {
                    thread::sleep(stall);
                }
                let mut frame = buf[off..off + len].to_vec();
                reflect(&mut frame);
                out.extend_from_slice(&frame);
                off += len;
            }
            buf.drain(..off);
            if s.write_all(&out).is_err() {
                return;
            }
        }
    });
    addr
}

/// A UDP sockperf reflector that drops every 1000th datagram. Stops when `stop` is set.
fn faulty_udp(stop: Arc<AtomicBool>) -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_millis(50)))
        .unwrap();
    let addr = s.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut n_seen = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            n_seen += 1;
            if n_seen % EVERY == 0 {
                continue;
            }
            reflect(&mut buf[..n]);
            let _ = s.send_to(&buf[..n], from);
        }
    });
    addr
}

fn args(extra: &[&str]) -> Args {
    let mut v = vec![
        "ringport-bench",
        "--quiet",
        "--cpus",
        "0",
        "--warmup",
        "0",
        "--duration",
        "20",
    ];
    v.extend_from_slice(extra);
    Args::parse_from(v)
}

#[test]
fn a_corrupted_byte_in_a_thousand_is_ten_errors_and_fails_the_run() {
    let addr = faulty_tcp().to_string();
    let m = MESSAGES.to_string();
    let a = args(&[
        "--scenario",
        "tcp-echo",
        "--target",
        &addr,
        "--messages",
        &m,
        "--conns",
        "4",
    ]);
    let report = cli::run(&a, vec![]).unwrap();
    let f = &report.scenarios[0].targets[0].runs[0];
    assert_eq!(f.sent, MESSAGES);
    assert_eq!(f.received, Some(MESSAGES));
    assert_eq!(f.errors, MESSAGES / EVERY);
    assert_eq!(f.lost, Some(0));
    assert!(!report.passed);

    // The binary says so with its exit status.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ringport-bench"))
        .args([
            "--quiet",
            "--cpus",
            "0",
            "--warmup",
            "0",
            "--duration",
            "20",
        ])
        .args([
            "--scenario",
            "tcp-echo",
            "--target",
            &addr,
            "--messages",
            "3000",
            "--conns",
            "2",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ringport-bench"))
        .args([
            "--quiet",
            "--cpus",
            "0",
            "--warmup",
            "0",
            "--duration",
            "20",
        ])
        .args([
            "--scenario",
            "tcp-echo",
            "--target",
            &addr,
            "--messages",
            "3000",
            "--conns",
            "2",
        ])
        .args(["--max-error-rate", "0.01"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "1 error in 1000 is within a 1% budget"
    );
}

#[test]
fn a_dropped_datagram_in_a_thousand_is_ten_lost_and_fails_the_run() {
    let stop = Arc::new(AtomicBool::new(false));
    let addr = faulty_udp(stop.clone()).to_string();
    let m = MESSAGES.to_string();
    let a = args(&[
        "--scenario",
        "udp-echo",
        "--target",
        &addr,
        "--messages",
        &m,
        "--conns",
        "4",
        "--reply-timeout-ms",
        "100",
    ]);
    let report = cli::run(&a, vec![]).unwrap();
    stop.store(true, Ordering::Relaxed);
    let f = &report.scenarios[0].targets[0].runs[0];
    assert_eq!(f.sent, MESSAGES);
    assert_eq!(f.lost, Some(MESSAGES / EVERY));
    assert_eq!(f.received, Some(MESSAGES - MESSAGES / EVERY));
    assert_eq!((f.errors, f.duplicates, f.reordered), (0, 0, 0));
    assert!(!report.passed);
}

#[test]
fn json_report_parses_and_holds_every_figure_of_the_table_and_svg_is_drawn() {
    let dir = std::env::temp_dir().join(format!("ringport-bench-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.json");
    let svg = dir.join("report.svg");
    let a = args(&[
        "--scenario",
        "udp-echo",
        "--compare",
        "epoll,tokio",
        "--messages",
        "3000",
        "--conns",
        "2",
        "--server-cpus",
        "1",
        "--json",
        path.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let report = cli::run(&a, vec!["ringport-bench".into()]).unwrap();
    assert!(report.passed);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(v["machine"]["kernel"]
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    assert!(v["machine"]["cores"].as_u64().is_some_and(|c| c >= 1));
    assert_eq!(v["scenarios"][0]["load"]["conns"], 2);
    assert_eq!(v["scenarios"][0]["load"]["scenario"], "udp-echo");
    let table = ringport_bench::report::table(&report.scenarios[0]);
    for (ti, t) in report.scenarios[0].targets.iter().enumerate() {
        let jt = &v["scenarios"][0]["targets"][ti];
        assert_eq!(jt["target"], t.target.as_str());
        assert_eq!(jt["runs"][0]["sent"], 3000);
        for def in FIGURES {
            let Some(value) = (def.get)(&t.runs[0]) else {
                continue;
            };
            assert!(table.contains(def.label), "table lacks {}", def.label);
            let median = jt["summary"][def.key]["median"].as_f64().unwrap();
            // serde_json's default float parsing may differ in the last bit.
            let close = (median - value).abs() <= value.abs() * 1e-12;
            assert!(close, "{} of {}: {median} vs {value}", def.key, t.target);
        }
    }
    // The plots: one spectrum per scenario, every target named.
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("udp-echo: latency by percentile"));
    assert!(svg.contains("epoll client") && svg.contains("tokio server"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_100ms_stall_shows_in_the_corrected_p999_and_not_in_the_uncorrected_one() {
    // 2,000 requests at 2,000 per second on one connection, one at a time;
    // the server stalls 100 ms before answering the 1,000th. About 200
    // requests fall due during the stall and go out late, after it.
    let addr = stalling_tcp(1000, std::time::Duration::from_millis(100)).to_string();
    let a = args(&[
        "--scenario",
        "tcp-rr",
        "--target",
        &addr,
        "--rate",
        "2000",
        "--conns",
        "1",
        "--depth",
        "1",
        "--messages",
        "2000",
    ]);
    let report = cli::run(&a, vec![]).unwrap();
    let f = &report.scenarios[0].targets[0].runs[0];
    assert_eq!((f.sent, f.errors, f.lost), (2000, 0, Some(0)));
    let (c, u) = (f.latency.unwrap(), f.latency_uncorrected.unwrap());
    assert_eq!((c.count, u.count), (2000, 2000));
    // From the intended send times, the 3rd worst of 2,000 waited ~99 ms.
    assert!(c.p999 >= 90_000_000, "corrected {c:?}");
    // From the actual sends, one request saw the stall; the p99.9 did not.
    assert!(u.max >= 100_000_000, "uncorrected {u:?}");
    assert!(u.p999 < 50_000_000, "uncorrected {u:?}");
    assert!(report.passed);
}

#[test]
fn full_speed_ingest_sends_exactly_the_cap_in_every_send_mode_and_the_server_counts_each() {
    // 750 per socket is not a multiple of the batch (32): the last send of
    // each socket is short. 3,000 datagrams fit in the server's receive buffer
    // even if its thread is held up.
    for mode in ["gso", "sendmmsg", "uring"] {
        let a = args(&[
            "--scenario",
            "udp-ingest",
            "--target",
            "epoll",
            "--server-cpus",
            "1",
            "--ingest-send",
            mode,
            "--messages",
            "3000",
            "--conns",
            "4",
            "--depth",
            "2",
        ]);
        let report = cli::run(&a, vec![]).unwrap();
        let f = &report.scenarios[0].targets[0].runs[0];
        assert_eq!(f.sent, 3000, "{mode}");
        assert_eq!(f.received, Some(3000), "{mode}");
        assert_eq!((f.lost, f.io_errors), (Some(0), 0), "{mode}");
        assert!(report.passed, "{mode}");
    }
}
