//! The TLS scenarios against each TLS target, with exact counts: every
//! message sent is echoed and checked, every handshake is counted by what
//! rustls says it was (full or resumed).

mod common;

use common::args;
use ringport_bench::cli;
use ringport_bench::report::Report;
use ringport_bench::run::Figures;

/// Every run of every case and target of `report`, with their names.
fn runs(report: &Report) -> Vec<(String, String, &Figures)> {
    let mut out = Vec::new();
    for s in &report.scenarios {
        for t in &s.targets {
            for f in &t.runs {
                out.push((s.scenario.clone(), t.target.clone(), f));
            }
        }
    }
    out
}

/// tls-echo at both default sizes: every message echoed and checked.
fn echo_counts_exactly(targets: &str) {
    let a = args(&[
        "--scenario",
        "tls-echo",
        "--compare",
        targets,
        "--messages",
        "1500",
        "--conns",
        "3",
        "--depth",
        "2",
    ]);
    let report = cli::run(&a, vec![]).unwrap();
    let names: Vec<&str> = report
        .scenarios
        .iter()
        .map(|s| s.scenario.as_str())
        .collect();
    assert_eq!(names, ["tls-echo 64 B", "tls-echo 16384 B"]);
    let n = targets.split(',').count();
    assert_eq!(runs(&report).len(), 2 * n);
    for (case, target, f) in runs(&report) {
        let what = format!("{case} against {target}");
        assert_eq!(f.sent, 1500, "{what}");
        assert_eq!(f.received, Some(1500), "{what}");
        assert_eq!(f.messages, 1500, "{what}");
        assert_eq!((f.errors, f.io_errors, f.lost), (0, 0, Some(0)), "{what}");
        assert_eq!(f.latency.map(|l| l.count), Some(1500), "{what}");
        assert!(f.server_cpu_per_m.is_some(), "{what}: server CPU unread");
        assert_eq!(f.handshakes, None, "{what}");
    }
    assert!(report.passed);
}

/// tls-handshake, full then resumed: every connection handshaken, echoed
/// and closed, and each handshake of the kind asked for.
fn handshakes_count_exactly(targets: &str) {
    let a = args(&[
        "--scenario",
        "tls-handshake",
        "--compare",
        targets,
        "--messages",
        "150",
        "--conns",
        "4",
    ]);
    let report = cli::run(&a, vec![]).unwrap();
    let names: Vec<&str> = report
        .scenarios
        .iter()
        .map(|s| s.scenario.as_str())
        .collect();
    assert_eq!(names, ["tls-handshake full", "tls-handshake resumed"]);
    for (case, target, f) in runs(&report) {
        let what = format!("{case} against {target}");
        let h = f
            .handshakes
            .unwrap_or_else(|| panic!("{what}: no handshake counts"));
        if case.ends_with("full") {
            assert_eq!((h.full, h.resumed), (150, 0), "{what}");
        } else {
            assert_eq!(
                (h.full, h.resumed),
                (0, 150),
                "{what}: not every one resumed"
            );
        }
        assert_eq!(f.sent, 150, "{what}: connections started");
        assert_eq!(f.received, Some(150), "{what}: echoes back");
        assert_eq!(f.messages, 150, "{what}: handshakes timed");
        assert_eq!((f.errors, f.io_errors, f.lost), (0, 0, Some(0)), "{what}");
        assert!(f.server_cpu_per_m.is_some(), "{what}: server CPU unread");
    }
    assert!(report.passed);
}

#[test]
fn tls_echo_against_tokio_rustls_echoes_every_message_at_both_sizes() {
    echo_counts_exactly("tokio-rustls");
}

#[test]
fn tls_handshakes_against_tokio_rustls_are_all_full_then_all_resumed() {
    handshakes_count_exactly("tokio-rustls");
}

#[test]
fn tls_echo_against_ringport_echoes_every_message_at_both_sizes() {
    echo_counts_exactly("ringport");
}

#[test]
fn tls_handshakes_against_ringport_are_all_full_then_all_resumed() {
    handshakes_count_exactly("ringport");
}

#[test]
fn tls_echo_against_rustls_probe_echoes_every_message_at_both_sizes() {
    echo_counts_exactly("rustls-probe");
}

#[test]
fn tls_handshakes_against_rustls_probe_are_all_full_then_all_resumed() {
    handshakes_count_exactly("rustls-probe");
}

/// The probe serves only the TLS scenarios, and says so by name.
#[test]
fn rustls_probe_is_refused_for_plain_scenarios_by_name() {
    let a = args(&["--scenario", "tcp-echo", "--target", "rustls-probe"]);
    let e = cli::run(&a, vec![]).unwrap_err().to_string();
    assert_eq!(
        e,
        "scenario tcp-echo: rustls-probe does not serve it (tcp-echo runs against: ringport, \
         ringport-epoll, tokio, tokio-mt, epoll, sockperf, or ADDR:PORT)"
    );
}

fn haproxy_or_skip() -> bool {
    common::installed_or_skip(
        ringport_bench::servers::haproxy_installed(),
        "install the Debian package haproxy",
    )
}

#[test]
fn haproxy_terminates_tls_for_both_scenarios_and_its_cpu_is_split_from_the_backends() {
    if !haproxy_or_skip() {
        return;
    }
    echo_counts_exactly("haproxy");
    handshakes_count_exactly("haproxy");
    let a = args(&[
        "--scenario",
        "tls-echo",
        "--size",
        "64",
        "--target",
        "haproxy",
        "--messages",
        "3000",
        "--conns",
        "2",
    ]);
    let report = cli::run(&a, vec![]).unwrap();
    let f = &report.scenarios[0].targets[0].runs[0];
    let (all, proxy, backend) = (
        f.server_cpu_per_m.unwrap(),
        f.proxy_cpu_per_m.unwrap(),
        f.backend_cpu_per_m.unwrap(),
    );
    assert!(
        (proxy + backend - all).abs() <= all * 1e-9,
        "{proxy} + {backend} != {all}"
    );
}

#[test]
fn plain_targets_are_refused_for_tls_scenarios_by_name() {
    let a = args(&["--scenario", "tls-echo", "--compare", "tokio-rustls,epoll"]);
    let e = cli::run(&a, vec![]).unwrap_err().to_string();
    assert_eq!(
        e,
        "scenario tls-echo: epoll does not serve it (tls-echo runs against: ringport, \
         ringport-epoll, tokio-rustls, haproxy, rustls-probe)"
    );
}
