//! The bridge against a scripted server, through a `RecordingContext`.

use std::net::SocketAddr;
use std::sync::Mutex;

use ringport_plugin::testing::RecordingContext;
use ringport_plugin::ListenerId;

use super::*;

const INFO: &[u8] = b"INFO {\"server_id\":\"S1\",\"version\":\"2.9.10\",\"proto\":1,\"headers\":true,\"max_payload\":1024}\r\n";

fn settings(servers: &[&str], export: &[&str], import: &[&str]) -> BridgeSettings {
    let nats = NatsConfig {
        servers: servers.iter().map(|s| s.to_string()).collect(),
        ..NatsConfig::default()
    };
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    BridgeSettings::new(
        "relay",
        nats,
        "",
        &strings(export),
        &strings(import),
        "inst-A",
    )
    .unwrap()
}

fn stream(conn: ConnId, port: u16) -> StreamInfo {
    StreamInfo {
        conn,
        listener: ListenerId::OUTBOUND,
        peer: SocketAddr::from(([127, 0, 0, 1], port)),
        local: SocketAddr::from(([127, 0, 0, 1], 50000)),
    }
}

/// A bridge logged in to its first server: (bridge, ctx, its stream).
fn logged_in(s: BridgeSettings) -> (Bridge, RecordingContext, ConnId) {
    let mut ctx = RecordingContext::new();
    let mut b = Bridge::new(Arc::new(s), ctx.now()).unwrap();
    b.handle_start(&mut ctx);
    let conn = ctx.take_connects()[0].conn;
    assert!(b.handle_connected(&mut ctx, &stream(conn, 4222), CONNECT_TAG));
    assert_eq!(b.handle_data(&mut ctx, conn, INFO), INFO.len());
    assert_eq!(b.handle_data(&mut ctx, conn, b"PONG\r\n"), 6);
    ctx.take_written(conn);
    (b, ctx, conn)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

#[test]
fn connects_logs_in_with_echo_off_and_subscribes_to_imports() {
    let s = settings(&["nats://127.0.0.1:4222"], &["#"], &["a/#", "b/+"]);
    let stats = s.stats.clone();
    let mut ctx = RecordingContext::new();
    let mut b = Bridge::new(Arc::new(s), ctx.now()).unwrap();
    b.handle_start(&mut ctx);
    let connects = ctx.take_connects();
    assert_eq!(connects.len(), 1);
    assert_eq!(
        connects[0].request.addr,
        SocketAddr::from(([127, 0, 0, 1], 4222))
    );
    assert_eq!(connects[0].request.tag, CONNECT_TAG);
    let conn = connects[0].conn;
    assert!(b.owns(conn));
    assert!(b.handle_connected(&mut ctx, &stream(conn, 4222), CONNECT_TAG));
    assert_eq!(b.handle_data(&mut ctx, conn, INFO), INFO.len());
    let hello = text(ctx.take_written(conn));
    assert!(hello.starts_with("CONNECT {"), "{hello}");
    assert!(hello.contains("\"echo\":false"), "{hello}");
    assert!(hello.ends_with("PING\r\n"), "{hello}");
    assert_eq!(BridgeStats::get(&stats.connected), 0);
    assert_eq!(b.handle_data(&mut ctx, conn, b"PONG\r\n"), 6);
    // `a/#` is two subjects (a.> and a), `b/+` one.
    assert_eq!(
        text(ctx.take_written(conn)),
        "SUB a.> 1\r\nSUB a 2\r\nSUB b.* 3\r\n"
    );
    assert_eq!(BridgeStats::get(&stats.connected), 1);
    assert_eq!(BridgeStats::get(&stats.connects), 1);
    // One timer for the handshake deadline; when it fires, logged in, the
    // next is the keep-alive PING, 30 s after the last input.
    let timers: Vec<_> = ctx
        .timers()
        .iter()
        .filter(|t| t.token == TIMER_CLIENT)
        .copied()
        .collect();
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].after, Duration::from_secs(5));
    ctx.advance(Duration::from_secs(5));
    let now = ctx.now();
    assert!(b.handle_timer(&mut ctx, now, TIMER_CLIENT));
    let t = ctx.timers().last().unwrap();
    assert_eq!((t.token, t.after), (TIMER_CLIENT, Duration::from_secs(25)));
    assert_eq!(ctx.take_written(conn), b"");
}

#[test]
fn exports_carry_the_origin_and_follow_the_filters() {
    let (mut b, mut ctx, conn) =
        logged_in(settings(&["nats://127.0.0.1:4222"], &["sensors/#"], &["#"]));
    assert!(b.export(&mut ctx, "sensors.t1", b"21.5"));
    assert!(!b.export(&mut ctx, "other.t1", b"x"));
    assert!(b.export(&mut ctx, "sensors", b"y"));
    assert_eq!(
        text(ctx.take_written(conn)),
        "HPUB sensors.t1 37 41\r\nNATS/1.0\r\nRingport-Origin: inst-A\r\n\r\n21.5\r\n\
         HPUB sensors 37 38\r\nNATS/1.0\r\nRingport-Origin: inst-A\r\n\r\ny\r\n"
    );
    assert_eq!(BridgeStats::get(&b.settings().stats.exported), 2);
}

#[test]
fn imports_of_our_own_origin_are_dropped_and_counted() {
    let (mut b, mut ctx, conn) = logged_in(settings(&["nats://127.0.0.1:4222"], &["#"], &["#"]));
    let ours = b"HMSG a.b 1 37 39\r\nNATS/1.0\r\nRingport-Origin: inst-A\r\n\r\nhi\r\n";
    let theirs = b"HMSG a.b 1 37 39\r\nNATS/1.0\r\nRingport-Origin: inst-B\r\n\r\nyo\r\n";
    let plain = b"MSG c 1 3\r\nabc\r\n";
    let all = [&ours[..], &theirs[..], &plain[..]].concat();
    assert_eq!(b.handle_data(&mut ctx, conn, &all), all.len());
    let imports: Vec<Import> = std::iter::from_fn(|| b.poll_import()).collect();
    assert_eq!(
        imports,
        [
            Import {
                subject: "a.b".into(),
                payload: b"yo".to_vec()
            },
            Import {
                subject: "c".into(),
                payload: b"abc".to_vec()
            }
        ]
    );
    let stats = &b.settings().stats;
    assert_eq!(BridgeStats::get(&stats.dropped_loop), 1);
    assert_eq!(BridgeStats::get(&stats.imported), 2);
}

#[test]
fn failed_connects_back_off_and_try_every_server() {
    let mut s = settings(
        &["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"],
        &["#"],
        &["#"],
    );
    s.reconnect_min = Duration::from_millis(100);
    s.reconnect_max = Duration::from_millis(400);
    let stats = s.stats.clone();
    let mut ctx = RecordingContext::new();
    let mut b = Bridge::new(Arc::new(s), ctx.now()).unwrap();
    b.handle_start(&mut ctx);
    let mut ports = Vec::new();
    let mut delays = Vec::new();
    for _ in 0..4 {
        let c = ctx.take_connects().pop().unwrap();
        ports.push(c.request.addr.port());
        assert!(b.handle_connect_failed(&mut ctx, c.conn, CONNECT_TAG, ConnectFailure::Refused));
        let t = *ctx.timers().last().unwrap();
        assert_eq!(t.token, TIMER_RECONNECT);
        delays.push(t.after);
        assert!(ctx.connects().is_empty());
        assert!(b.handle_timer(&mut ctx, t.due, TIMER_RECONNECT));
    }
    assert_eq!(ports, [4222, 4223, 4222, 4223]);
    // Jittered doubling: within [ceiling/2, ceiling], capped at 400 ms.
    for (d, ceiling) in delays.iter().zip([100u64, 200, 400, 400]) {
        assert!(
            *d >= Duration::from_millis(ceiling / 2) && *d <= Duration::from_millis(ceiling),
            "{delays:?}"
        );
    }
    assert_eq!(BridgeStats::get(&stats.disconnects), 4);
    // Not the bridge's: left to the plugin.
    assert!(!b.handle_connect_failed(&mut ctx, ConnId::from_raw(5), 7, ConnectFailure::Refused));
    let now = ctx.now();
    assert!(!b.handle_timer(&mut ctx, now, 1));
}

#[test]
fn buffer_absorbs_exports_while_down_and_loss_is_counted_once_per_burst() {
    let mut s = settings(&["nats://127.0.0.1:4222"], &["#"], &[]);
    s.nats.buffer_messages = 2;
    let told = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = told.clone();
    s.notify = Some(Arc::new(move |l| sink.lock().unwrap().push(l)));
    let stats = s.stats.clone();
    let (mut b, mut ctx, conn) = logged_in(s);
    // The server goes away.
    b.handle_close(&mut ctx, conn);
    assert_eq!(BridgeStats::get(&stats.connected), 0);
    let accepted: Vec<bool> = (0..5)
        .map(|i| b.export(&mut ctx, "t", format!("{i}").as_bytes()))
        .collect();
    assert_eq!(accepted, [true, true, false, false, false]);
    assert_eq!(BridgeStats::get(&stats.buffered_messages), 2);
    assert_eq!(BridgeStats::get(&stats.dropped_buffer_full), 3);
    assert_eq!(BridgeStats::get(&stats.loss_bursts), 1);
    // Reconnect: the buffered two go out after the login, in order.
    let t = *ctx
        .timers()
        .iter()
        .rfind(|t| t.token == TIMER_RECONNECT)
        .unwrap();
    b.handle_timer(&mut ctx, t.due, TIMER_RECONNECT);
    let conn2 = ctx.take_connects()[0].conn;
    assert!(b.handle_connected(&mut ctx, &stream(conn2, 4222), CONNECT_TAG));
    b.handle_data(&mut ctx, conn2, INFO);
    ctx.take_written(conn2);
    b.handle_data(&mut ctx, conn2, b"PONG\r\n");
    let sent = text(ctx.take_written(conn2));
    assert_eq!(sent.matches("HPUB t ").count(), 2);
    assert!(sent.find("\r\n0\r\n").unwrap() < sent.find("\r\n1\r\n").unwrap());
    assert!(b.export(&mut ctx, "t", b"5"));
    assert_eq!(BridgeStats::get(&stats.exported), 3);
    assert_eq!(BridgeStats::get(&stats.reconnects), 1);
    let lines = told.lock().unwrap().clone();
    let burst: Vec<&String> = lines.iter().filter(|l| l.contains("buffer")).collect();
    assert_eq!(burst.len(), 2, "{lines:?}");
    assert!(burst[0].starts_with("nats bridge (relay): buffer full (2 messages"));
    assert!(burst[1].ends_with("3 export(s) dropped while it was full"));
}

#[test]
fn a_refused_login_closes_the_stream_and_reconnects() {
    let (mut b, mut ctx, conn) = logged_in(settings(&["nats://127.0.0.1:4222"], &["#"], &["#"]));
    let err = b"-ERR 'Stale Connection'\r\n";
    assert_eq!(b.handle_data(&mut ctx, conn, err), err.len());
    assert_eq!(ctx.closed(), [conn]);
    // Still owned until its close arrives; late bytes are swallowed.
    assert!(b.owns(conn));
    assert_eq!(b.handle_data(&mut ctx, conn, b"MSG a 1 1\r\n"), 11);
    b.handle_close(&mut ctx, conn);
    assert!(!b.owns(conn));
    assert!(ctx.timers().iter().any(|t| t.token == TIMER_RECONNECT));
    assert_eq!(BridgeStats::get(&b.settings().stats.connected), 0);
}

#[test]
fn settings_name_the_field_and_the_fix() {
    let nats = NatsConfig {
        servers: vec!["nats://127.0.0.1:4222".into()],
        ..NatsConfig::default()
    };
    let one = |v: &str| vec![v.to_string()];
    let err = BridgeSettings::new(
        "relay",
        nats.clone(),
        "",
        &one("#"),
        &["a/#".into(), "a/b".into()],
        "x",
    )
    .unwrap_err();
    assert_eq!(err, BridgeError::Overlap("a/#".into(), "a/b".into()));
    assert!(err
        .to_string()
        .starts_with("nats_import: `a/#` and `a/b` overlap"));
    let err = BridgeSettings::new("relay", nats.clone(), "", &one("a/#/b"), &[], "x").unwrap_err();
    assert!(err.to_string().starts_with("nats_export: `a/#/b`"), "{err}");
    let err = BridgeSettings::new("relay", nats.clone(), "bad prefix", &[], &[], "x").unwrap_err();
    assert!(err.to_string().starts_with("nats_subject_prefix"), "{err}");
    let err = BridgeSettings::new("relay", nats.clone(), "", &[], &[], "has space").unwrap_err();
    assert!(err.to_string().starts_with("nats_instance_id"), "{err}");
    let bad = NatsConfig {
        servers: vec!["http://x".into()],
        ..NatsConfig::default()
    };
    let err = BridgeSettings::new("relay", bad, "", &[], &[], "x").unwrap_err();
    assert!(err.to_string().starts_with("nats: servers:"), "{err}");
    // With a prefix, filters map under it.
    let s = BridgeSettings::new("relay", nats, "site1", &one("#"), &one("a/+"), "x").unwrap();
    assert_eq!(s.export, ["site1.>"]);
    assert_eq!(s.import, ["site1.a.*"]);
    assert!(s.exports("site1.q"));
    assert!(!s.exports("site2.q"));
    assert!(!s.nats.echo);
}

#[test]
fn subject_patterns_cover() {
    assert!(covers(">", "a"));
    assert!(covers(">", "a.b.c"));
    assert!(covers("a.>", "a.b"));
    assert!(!covers("a.>", "a"));
    assert!(covers("a.*", "a.b"));
    assert!(!covers("a.*", "a.b.c"));
    assert!(!covers("a.*", "a.>"));
    assert!(covers("a.*.c", "a.x.c"));
    assert!(!covers("a.b", "a.c"));
    assert!(covers("a.>", "a.*.c"));
}
