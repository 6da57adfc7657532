//! The broker's NATS bridge on recording contexts: shard 0 exports what
//! any shard's clients publish, imports reach every shard, nothing loops;
//! per-listener routes narrow both directions on every shard.

use std::sync::Arc;

use super::*;
use crate::mqtt::codec::{Will, WillProps};
use crate::nats::bridge::CONNECT_TAG;
use crate::nats::{BridgeSettings, BridgeStats, NatsConfig};

/// Two shards bridged to NATS and logged in; the bridge's stream.
fn bridged() -> (Net, ConnId, Arc<BridgeSettings>) {
    bridged_with(|_| {})
}

/// [`bridged`], with the listener routes `route` adds to the settings.
fn bridged_with(route: impl FnOnce(&mut BridgeSettings)) -> (Net, ConnId, Arc<BridgeSettings>) {
    let nats = NatsConfig {
        servers: vec!["nats://127.0.0.1:4222".into()],
        ..NatsConfig::default()
    };
    let all = ["#".to_string()];
    let mut settings = BridgeSettings::new("mqtt", nats, "", &all, &all, "me").unwrap();
    route(&mut settings);
    let settings = Arc::new(settings);
    let mut net = Net::new(2, anon());
    for s in 0..2 {
        net.shards[s].set_bridge(settings.clone());
        net.shards[s].handle_start(&mut net.ctxs[s]);
    }
    assert!(net.ctxs[1].connects().is_empty(), "only shard 0 connects");
    let conn = net.ctxs[0].take_connects()[0].conn;
    let info = StreamInfo {
        conn,
        listener: ListenerId::OUTBOUND,
        peer: SocketAddr::from(([127, 0, 0, 1], 4222)),
        local: SocketAddr::from(([127, 0, 0, 1], 40001)),
    };
    net.shards[0].handle_connected(&mut net.ctxs[0], &info, CONNECT_TAG);
    for bytes in [
        &b"INFO {\"server_id\":\"S\",\"headers\":true}\r\n"[..],
        b"PONG\r\n",
    ] {
        assert_eq!(
            net.shards[0].handle_data(&mut net.ctxs[0], conn, bytes),
            Ok(bytes.len())
        );
    }
    assert!(net.ctxs[0].take_written(conn).ends_with(b"SUB > 1\r\n"));
    (net, conn, settings)
}

#[test]
fn publishes_on_any_shard_are_exported_once_by_shard_zero() {
    let (mut net, nats, settings) = bridged();
    let (p1, _) = net.connect(1, 10, v3("p1"));
    let (p0, _) = net.connect(0, 11, v3("p0"));
    net.send(p1, &publish("a/b", b"one", QoS::AtMostOnce, 0));
    net.send(p0, &publish("a/c", b"two", QoS::AtLeastOnce, 1));
    net.send(p1, &publish("a b/c", b"three", QoS::AtMostOnce, 0));
    let h = "NATS/1.0\r\nRingport-Origin: me\r\n\r\n";
    assert_eq!(
        String::from_utf8(net.ctxs[0].take_written(nats)).unwrap(),
        format!(
            "HPUB a.b 33 36\r\n{h}one\r\nHPUB a.c 33 36\r\n{h}two\r\nHPUB a~20b.c 33 38\r\n{h}three\r\n"
        )
    );
    assert_eq!(BridgeStats::get(&settings.stats.exported), 3);
}

#[test]
fn imports_reach_every_shard_and_are_not_exported() {
    let (mut net, nats, settings) = bridged();
    let (s1, _) = net.connect(1, 20, v3("s1"));
    net.send(s1, &subscribe(1, &[("a/+", QoS::AtLeastOnce)]));
    let (s0, _) = net.connect(0, 21, v3("s0"));
    net.send(s0, &subscribe(1, &[("a/#", QoS::AtMostOnce)]));
    net.take(s1);
    net.take(s0);
    let msgs = [
        &b"HMSG a.x 1 36 38\r\nNATS/1.0\r\nRingport-Origin: other\r\n\r\nhi\r\n"[..],
        b"HMSG a.y 1 33 35\r\nNATS/1.0\r\nRingport-Origin: me\r\n\r\nno\r\n",
        b"MSG a.~41 1 1\r\nq\r\n",
    ]
    .concat();
    assert_eq!(
        net.shards[0].handle_data(&mut net.ctxs[0], nats, &msgs),
        Ok(msgs.len())
    );
    net.carry();
    for (c, v) in [(s0, Version::V311), (s1, Version::V311)] {
        let got = net.take(c);
        let packets = decode_all(&got, v);
        assert_eq!(packets.len(), 1, "{packets:?}");
        match &packets[0] {
            Packet::Publish(p) => {
                assert_eq!(
                    (p.topic, p.payload, p.qos),
                    ("a/x", &b"hi"[..], QoS::AtMostOnce)
                );
            }
            other => panic!("PUBLISH expected, got {other:?}"),
        }
    }
    assert_eq!(net.ctxs[0].take_written(nats), b"");
    assert_eq!(BridgeStats::get(&settings.stats.imported), 2);
    assert_eq!(BridgeStats::get(&settings.stats.dropped_loop), 1);
    // `~41` is not a spelling the mapping writes.
    assert_eq!(BridgeStats::get(&settings.stats.dropped_unmappable), 1);
}

/// [`bridged_with`] routes: listener 0 takes the plugin-wide `#` both
/// ways, listener 1 exports `a/#` and imports `x/#`, listener 2 exports
/// nothing and imports `y`.
fn bridged_per_listener() -> (Net, ConnId, Arc<BridgeSettings>) {
    bridged_with(|s| {
        let v = |f: &[&str]| f.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        s.add_listener(ListenerId(0), "l0", None, None).unwrap();
        s.add_listener(ListenerId(1), "l1", Some(&v(&["a/#"])), Some(&v(&["x/#"])))
            .unwrap();
        s.add_listener(ListenerId(2), "l2", Some(&[]), Some(&v(&["y"])))
            .unwrap();
    })
}

/// A client connected on `shard` through `listener`.
fn client_on(net: &mut Net, shard: usize, raw: u64, listener: u16, c: Connect<'_>) -> ConnId {
    let conn = net.open_on(shard, raw, listener);
    net.send(conn, &Packet::Connect(c));
    net.take(conn);
    conn
}

/// An `HPUB` the bridge writes for `payload` on `subject`.
fn hpub(subject: &str, payload: &str) -> String {
    let h = "NATS/1.0\r\nRingport-Origin: me\r\n\r\n";
    format!(
        "HPUB {subject} {} {}\r\n{h}{payload}\r\n",
        h.len(),
        h.len() + payload.len()
    )
}

#[test]
fn each_listener_exports_what_its_own_filters_take_from_any_shard() {
    let (mut net, nats, settings) = bridged_per_listener();
    let one_on_1 = client_on(&mut net, 1, 10, 1, v3("p11"));
    let two_on_1 = client_on(&mut net, 1, 11, 2, v3("p12"));
    let zero_on_1 = client_on(&mut net, 1, 12, 0, v3("p10"));
    let one_on_0 = client_on(&mut net, 0, 13, 1, v3("p01"));
    let two_on_0 = client_on(&mut net, 0, 14, 2, v3("p02"));
    net.send(one_on_1, &publish("a/1", b"yes1", QoS::AtMostOnce, 0));
    net.send(one_on_1, &publish("b", b"no1", QoS::AtMostOnce, 0));
    net.send(two_on_1, &publish("a/2", b"no2", QoS::AtLeastOnce, 1));
    net.send(zero_on_1, &publish("b/0", b"yes2", QoS::AtMostOnce, 0));
    net.send(one_on_0, &publish("a", b"yes3", QoS::AtLeastOnce, 1));
    net.send(two_on_0, &publish("y", b"no3", QoS::AtMostOnce, 0));
    // Wills go out under their client's listener too.
    let will = |topic| Will {
        topic,
        payload: b"gone",
        qos: QoS::AtMostOnce,
        retain: false,
        props: WillProps::default(),
    };
    let mut w1 = v3("w1");
    w1.will = Some(will("a/w"));
    let w1 = client_on(&mut net, 1, 15, 1, w1);
    let mut w2 = v3("w2");
    w2.will = Some(will("a/w2"));
    let w2 = client_on(&mut net, 1, 16, 2, w2);
    net.close(w1);
    net.close(w2);
    net.carry();
    assert_eq!(
        String::from_utf8(net.ctxs[0].take_written(nats)).unwrap(),
        [
            hpub("a.1", "yes1"),
            hpub("b.0", "yes2"),
            hpub("a", "yes3"),
            hpub("a.w", "gone")
        ]
        .concat()
    );
    let get =
        |l: u16, f: fn(&crate::nats::ListenerBridgeStats) -> &std::sync::atomic::AtomicU64| {
            BridgeStats::get(f(&settings.route(ListenerId(l)).unwrap().stats))
        };
    assert_eq!(
        [
            get(0, |s| &s.exported),
            get(1, |s| &s.exported),
            get(2, |s| &s.exported)
        ],
        [1, 3, 0]
    );
    assert_eq!(get(1, |s| &s.dropped_buffer_full), 0);
    assert_eq!(BridgeStats::get(&settings.stats.exported), 4);
}

#[test]
fn imports_reach_only_sessions_of_listeners_that_import_them_on_every_shard() {
    let (mut net, nats, settings) = bridged_per_listener();
    let q0 = QoS::AtMostOnce;
    let subs = [
        (0, 20, 1, "s01", ("x/#", q0), ("y", q0)),
        (1, 21, 1, "s11", ("x/#", q0), ("y", q0)),
        (0, 22, 2, "s02", ("x/#", q0), ("y", q0)),
        (1, 23, 2, "s12", ("x/#", q0), ("y", q0)),
        (1, 24, 0, "s10", ("#", q0), ("y", q0)),
        // Shared groups: members through listener 2 on either shard.
        (0, 25, 2, "g02", ("$share/g/x/#", q0), ("$share/h/y", q0)),
        (1, 26, 2, "g12", ("$share/g/x/#", q0), ("$share/h/y", q0)),
        (1, 27, 1, "g11", ("$share/k/#", q0), ("$share/k/y", q0)),
    ];
    let mut conns = Vec::new();
    for (shard, raw, listener, id, f1, f2) in subs {
        let c = client_on(&mut net, shard, raw, listener, v3(id));
        net.send(c, &subscribe(1, &[f1, f2]));
        net.take(c);
        conns.push(c);
    }
    let msgs = [
        &b"MSG x.1 1 2\r\nx1\r\n"[..],
        b"MSG y 1 1\r\ny\r\n",
        b"MSG z 1 1\r\nz\r\n",
        b"MSG x.2 1 2\r\nx2\r\n",
    ]
    .concat();
    assert_eq!(
        net.shards[0].handle_data(&mut net.ctxs[0], nats, &msgs),
        Ok(msgs.len())
    );
    net.carry();
    let topics = |net: &mut Net, c: ConnId| -> Vec<String> {
        decode_all(&net.take(c), Version::V311)
            .into_iter()
            .map(|p| match p {
                Packet::Publish(p) => {
                    assert_eq!(p.qos, QoS::AtMostOnce);
                    assert!(!p.retain);
                    p.topic.to_owned()
                }
                other => panic!("PUBLISH expected, got {other:?}"),
            })
            .collect()
    };
    let got: Vec<Vec<String>> = conns.iter().map(|&c| topics(&mut net, c)).collect();
    let want = |w: &[&str]| w.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got[..5],
        [
            want(&["x/1", "x/2"]),
            want(&["x/1", "x/2"]),
            want(&["y"]),
            want(&["y"]),
            want(&["x/1", "y", "z", "x/2"]),
        ]
    );
    // Group g: its members' listener 2 does not import x, so neither
    // gets x/1 or x/2 (here or through the mesh); group h: the member
    // whose turn it is gets y.
    let mut h = [got[5].clone(), got[6].clone()];
    h.sort();
    assert_eq!(h, [want(&[]), want(&["y"])]);
    // Group k/# and k/y of a listener 1 member: x/1 and x/2 only.
    assert_eq!(got[7], want(&["x/1", "x/2"]));
    let imported =
        |l: u16| BridgeStats::get(&settings.route(ListenerId(l)).unwrap().stats.imported);
    assert_eq!([imported(0), imported(1), imported(2)], [4, 2, 1]);
    assert_eq!(BridgeStats::get(&settings.stats.imported), 4);
    // Nothing imported goes back out.
    assert_eq!(net.ctxs[0].take_written(nats), b"");
}

#[test]
fn the_scope_follows_a_shared_delivery_bounced_from_a_member_that_moved() {
    use crate::mqtt::broker::route::{TAG_SHARE_JOIN, TAG_SHARE_LEAVE};
    use crate::mqtt::broker::MqttDrop;
    use ringport_plugin::shard_for_key;
    // The group's home is shard 1; member a is on shard 0 (first in the
    // group's turn order), b on the home through listener 1 (imports x)
    // or 2 (does not).
    assert_eq!(shard_for_key(b"$share/g/x/#", 2), 1);
    for (b_listener, b_gets) in [(1, true), (2, false)] {
        let (mut net, nats, _) = bridged_per_listener();
        let group = [("$share/g/x/#", QoS::AtMostOnce)];
        let a = client_on(&mut net, 0, 10, 1, conn_pkt(Version::V311, "a", false));
        net.send(a, &subscribe(1, &group));
        net.take(a);
        let b = client_on(&mut net, 1, 11, b_listener, v3("b"));
        net.send(b, &subscribe(1, &group));
        net.take(b);
        // a comes back on shard 1 before the home hears it left shard 0:
        // the delivery to a bounces home, which picks b.
        net.hold_tags = vec![TAG_SHARE_LEAVE, TAG_SHARE_JOIN];
        net.close(a);
        let a2 = client_on(&mut net, 1, 20, 1, conn_pkt(Version::V311, "a", false));
        let msg = b"MSG x.1 1 2\r\nx1\r\n";
        assert_eq!(
            net.shards[0].handle_data(&mut net.ctxs[0], nats, msg),
            Ok(msg.len())
        );
        net.carry();
        let to_b = decode_all(&net.take(b), Version::V311).len();
        assert_eq!(to_b, usize::from(b_gets), "listener {b_listener}");
        assert_eq!(net.stats().total(|s| s.drops(MqttDrop::NoSession)), 0);
        net.release();
        assert_eq!(net.take(a2), b"");
    }
}

/// Two bridges: bridge 0 (no login) for listener 1, bridge 1 (user `b`)
/// for listener 2, each every topic both ways and exclusive. Returns the
/// net and both bridges' streams, logged in.
fn two_bridges() -> (Net, [ConnId; 2], Arc<crate::nats::BridgeSet>) {
    use crate::nats::bridge::token;
    let set = crate::nats::set::two_test_bridges(
        "mqtt",
        crate::nats::NatsConfig::default().buffer_messages,
    );
    let mut net = Net::new(2, anon());
    for s in 0..2 {
        net.shards[s].set_bridges(set.clone());
        net.shards[s].handle_start(&mut net.ctxs[s]);
    }
    assert!(net.ctxs[1].connects().is_empty(), "only shard 0 connects");
    let connects = net.ctxs[0].take_connects();
    assert_eq!(connects.len(), 2);
    let conns = [connects[0].conn, connects[1].conn];
    for (i, conn) in conns.into_iter().enumerate() {
        let info = StreamInfo {
            conn,
            listener: ListenerId::OUTBOUND,
            peer: SocketAddr::from(([127, 0, 0, 1], 4222)),
            local: SocketAddr::from(([127, 0, 0, 1], 40001 + i as u16)),
        };
        net.shards[0].handle_connected(&mut net.ctxs[0], &info, token(CONNECT_TAG, i as u16));
        for bytes in [
            &b"INFO {\"server_id\":\"S\",\"headers\":true}\r\n"[..],
            b"PONG\r\n",
        ] {
            assert_eq!(
                net.shards[0].handle_data(&mut net.ctxs[0], conn, bytes),
                Ok(bytes.len())
            );
        }
        let login = String::from_utf8(net.ctxs[0].take_written(conn)).unwrap();
        assert_eq!(login.contains("\"user\":\"b\""), i == 1, "{login}");
        assert!(login.ends_with("SUB > 1\r\n"), "{login}");
    }
    (net, conns, set)
}

#[test]
fn two_bridges_export_and_import_for_their_own_listeners_only() {
    let (mut net, [c0, c1], set) = two_bridges();
    let q0 = QoS::AtMostOnce;
    // Subscribers of x/# through listener 1 and 2 on both shards.
    let mut subs = Vec::new();
    for (shard, raw, listener, id) in [
        (0, 20, 1, "s01"),
        (1, 21, 1, "s11"),
        (0, 22, 2, "s02"),
        (1, 23, 2, "s12"),
    ] {
        let c = client_on(&mut net, shard, raw, listener, v3(id));
        net.send(c, &subscribe(1, &[("x/#", q0)]));
        net.take(c);
        subs.push(c);
    }
    // Publishers on shard 1 through each listener.
    let p1 = client_on(&mut net, 1, 10, 1, v3("p1"));
    let p2 = client_on(&mut net, 1, 11, 2, v3("p2"));
    net.send(p1, &publish("a/1", b"one", q0, 0));
    net.send(p2, &publish("a/2", b"two", q0, 0));
    net.carry();
    assert_eq!(
        String::from_utf8(net.ctxs[0].take_written(c0)).unwrap(),
        hpub("a.1", "one")
    );
    assert_eq!(
        String::from_utf8(net.ctxs[0].take_written(c1)).unwrap(),
        hpub("a.2", "two")
    );
    // An import through each bridge, and our own export coming back
    // through bridge 1 (a loop: dropped there).
    let own = b"HMSG x.3 1 33 35\r\nNATS/1.0\r\nRingport-Origin: me\r\n\r\nme\r\n";
    for (conn, bytes) in [
        (c1, &b"MSG x.1 1 2\r\nb1\r\n"[..]),
        (c0, &b"MSG x.2 1 2\r\nb0\r\n"[..]),
        (c1, &own[..]),
    ] {
        assert_eq!(
            net.shards[0].handle_data(&mut net.ctxs[0], conn, bytes),
            Ok(bytes.len())
        );
    }
    net.carry();
    let topics = |net: &mut Net, c: ConnId| -> Vec<String> {
        decode_all(&net.take(c), Version::V311)
            .into_iter()
            .map(|p| match p {
                Packet::Publish(p) => p.topic.to_owned(),
                other => panic!("PUBLISH expected, got {other:?}"),
            })
            .collect()
    };
    let got: Vec<Vec<String>> = subs.iter().map(|&c| topics(&mut net, c)).collect();
    assert_eq!(got, [["x/2"], ["x/2"], ["x/1"], ["x/1"]]);
    let [b0, b1] = set.bridges() else {
        panic!("two bridges")
    };
    let get = BridgeStats::get;
    assert_eq!((get(&b0.stats.exported), get(&b1.stats.exported)), (1, 1));
    assert_eq!((get(&b0.stats.imported), get(&b1.stats.imported)), (1, 1));
    assert_eq!(
        (get(&b0.stats.dropped_loop), get(&b1.stats.dropped_loop)),
        (0, 1)
    );
    // Nothing imported goes back out.
    assert_eq!(net.ctxs[0].take_written(c0), b"");
    assert_eq!(net.ctxs[0].take_written(c1), b"");
}
