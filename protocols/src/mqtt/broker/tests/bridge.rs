//! The broker's NATS bridge on recording contexts: shard 0 exports what
//! any shard's clients publish, imports reach every shard, nothing loops.

use std::sync::Arc;

use super::*;
use crate::nats::bridge::CONNECT_TAG;
use crate::nats::{BridgeSettings, BridgeStats, NatsConfig};

/// Two shards bridged to NATS and logged in; the bridge's stream.
fn bridged() -> (Net, ConnId, Arc<BridgeSettings>) {
    let nats = NatsConfig {
        servers: vec!["nats://127.0.0.1:4222".into()],
        ..NatsConfig::default()
    };
    let all = ["#".to_string()];
    let settings = Arc::new(BridgeSettings::new("mqtt", nats, "", &all, &all, "me").unwrap());
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
