//! The real `sockperf` client (Debian package `sockperf`) against the
//! engine serving the `sockperf` plugin: ping-pong and under-load, UDP and
//! TCP, 64-byte messages at 10,000 messages per second for two seconds.

mod common;

use std::time::Duration;

use common::{server, sockperf, tcp, udp, Server, SockperfRun};
use ringport::engine::Counters;

const SIZE: u64 = 64;
const SECS: u64 = 2;

/// Runs one sockperf client against `srv`'s first listener; `None` when
/// sockperf is not installed (outside CI: the test is skipped).
fn client(srv: &Server, mode: &str, transport_flag: Option<&str>) -> Option<SockperfRun> {
    let port = srv.addr(0).port().to_string();
    let (size, secs) = (SIZE.to_string(), SECS.to_string());
    let mut args = vec![
        mode,
        "-i",
        "127.0.0.1",
        "-p",
        &port,
        "-m",
        &size,
        "-t",
        &secs,
        "--mps",
        "10000",
    ];
    if mode == "ping-pong" {
        args.push("--data-integrity");
    }
    args.extend(transport_flag);
    let run = sockperf(&args, Duration::from_secs(SECS))?;
    assert_eq!(
        (run.dropped, run.duplicated, run.out_of_order),
        (0, 0, 0),
        "{}",
        run.output
    );
    assert!(run.received > 0, "no replies:\n{}", run.output);
    Some(run)
}

/// Replies the server sent: `received` of them arrived before the client's
/// timer fired. Under load one message in a hundred (one every 10 ms at
/// 10,000 per second) asks for a reply, so on a busy two-core machine a
/// few replies can still be on their way when the client stops listening;
/// five is 50 ms of them. Ping-pong has at most one in flight.
fn check_replies(run: &SockperfRun, replies: u64, in_flight: u64) {
    assert!(
        (run.received..=run.received + in_flight).contains(&replies),
        "server sent {replies} replies, client received {}:\n{}",
        run.received,
        run.output
    );
}

/// Under load, one message in a hundred asks for a reply (sockperf's
/// `--reply-every` default) and the server answers no other.
fn one_reply_per_hundred(run: &SockperfRun, replies: u64) {
    assert!(
        (replies * 100).abs_diff(run.sent) <= 100,
        "{replies} replies to {} messages:\n{}",
        run.sent,
        run.output
    );
}

fn check_counters(run: &SockperfRun, t: &Counters) {
    assert_eq!(t.msgs, run.sent, "{}", run.output);
    assert_eq!(t.bytes_in, run.sent * SIZE);
    assert_eq!(t.drops_total(), 0, "{:?}", t.drop_list());
}

#[test]
fn udp_ping_pong() {
    let srv = server().listen(udp("sockperf", 1)).start();
    let Some(run) = client(&srv, "ping-pong", None) else {
        return;
    };
    // Every ping asks for a pong. A send is counted when its completion is
    // reaped, which can be a turn after the client has the reply.
    let t = srv.wait_totals("every ping answered", |c| {
        c.datagrams_in == run.sent && c.datagrams_out == run.sent
    });
    check_counters(&run, &t);
    check_replies(&run, t.datagrams_out, 1);
}

#[test]
fn tcp_ping_pong() {
    let srv = server().listen(tcp("sockperf", 1)).start();
    let Some(run) = client(&srv, "ping-pong", Some("--tcp")) else {
        return;
    };
    let t = srv.wait_totals("the client's stream closed", |c| c.conns_closed == 1);
    check_counters(&run, &t);
    assert_eq!(t.bytes_out % SIZE, 0);
    assert_eq!(t.bytes_out / SIZE, run.sent);
    check_replies(&run, t.bytes_out / SIZE, 1);
}

#[test]
fn udp_under_load() {
    let srv = server().listen(udp("sockperf", 1)).start();
    let Some(run) = client(&srv, "under-load", None) else {
        return;
    };
    let t = srv.wait_totals("every message counted", |c| {
        c.datagrams_in == run.sent && c.datagrams_out >= run.received
    });
    check_counters(&run, &t);
    check_replies(&run, t.datagrams_out, 5);
    one_reply_per_hundred(&run, t.datagrams_out);
}

#[test]
fn tcp_under_load() {
    let srv = server().listen(tcp("sockperf", 1)).start();
    let Some(run) = client(&srv, "under-load", Some("--tcp")) else {
        return;
    };
    let t = srv.wait_totals("the client's stream closed", |c| c.conns_closed == 1);
    check_counters(&run, &t);
    assert_eq!(t.bytes_out % SIZE, 0);
    check_replies(&run, t.bytes_out / SIZE, 5);
    one_reply_per_hundred(&run, t.bytes_out / SIZE);
}
