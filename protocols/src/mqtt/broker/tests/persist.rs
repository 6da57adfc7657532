//! Snapshots of retained messages and persistent sessions, and restores.

use std::time::Duration;

use super::*;
use crate::mqtt::persist::{decode_snapshot, encode_snapshot};

#[test]
fn sessions_and_retained_messages_survive_a_restart() {
    let mut net = Net::new(
        2,
        MqttConfig {
            snapshot_interval: Some(Duration::from_secs(5)),
            ..anon()
        },
    );
    let mut c = conn_pkt(Version::V5, "dev-7", false);
    c.props.session_expiry = Some(3600);
    let (a, _) = net.connect(1, 1, c);
    let mut sub = subscribe(1, &[("cmd/#", QoS::AtLeastOnce)]);
    if let Packet::Subscribe(x) = &mut sub {
        x.subscription_id = Some(42);
    }
    net.send(a, &sub);
    net.take(a);
    let (p, _) = net.connect(0, 2, v3("p"));
    let mut r = publish("cfg/x", b"retained", QoS::AtMostOnce, 0);
    if let Packet::Publish(x) = &mut r {
        x.retain = true;
    }
    net.send(p, &r);
    // One message in flight (unacknowledged), then one queued while away.
    net.send(p, &publish("cmd/1", b"one", QoS::AtLeastOnce, 1));
    net.take(a);
    net.close(a);
    net.send(p, &publish("cmd/2", b"two", QoS::AtLeastOnce, 2));
    // A clean session is not saved.
    let (_, _) = net.connect(0, 3, v5("transient"));
    net.advance(Duration::from_secs(5));
    let now = net.ctxs[0].now();
    let snap = net.factory.snapshot(now, 1_000_000);
    assert_eq!(snap.retained.len(), 1);
    assert_eq!(snap.sessions.len(), 1);
    let s = &snap.sessions[0];
    assert_eq!(s.client_id, "dev-7");
    assert_eq!((s.session_expiry, s.disconnected_at), (3600, 1_000_000 - 5));
    assert_eq!(s.queued.len(), 2);
    assert_eq!((s.queued[0].packet_id, s.queued[0].dup), (Some(1), true));
    let bytes = encode_snapshot(&snap);

    // A new broker, with three shards this time, 100 s later.
    let mut net = Net::new(3, anon());
    net.factory
        .restore(decode_snapshot(&bytes).unwrap(), 1_000_100);
    net.shards = (0..3).map(|i| net.factory.instance(i, 3)).collect();
    net.retry();
    for sh in &net.shards {
        assert_eq!(sh.retained_count(), 1);
    }
    let (b, out) = net.connect(2, 9, c);
    let ps = decode_all(&out, Version::V5);
    let Packet::ConnAck(ack) = &ps[0] else {
        panic!("{ps:?}")
    };
    assert!(ack.session_present);
    let msgs: Vec<(&[u8], bool, u16, Vec<u32>)> = ps[1..]
        .iter()
        .map(|p| match p {
            Packet::Publish(m) => (
                m.payload,
                m.dup,
                m.packet_id,
                m.props.subscription_ids.iter().collect(),
            ),
            _ => panic!("{p:?}"),
        })
        .collect();
    // With the subscription identifier of the subscription they matched.
    assert_eq!(
        msgs,
        [
            (&b"one"[..], true, 1, vec![42]),
            (&b"two"[..], false, 2, vec![42])
        ]
    );
    // The subscription came back too.
    let (p, _) = net.connect(0, 10, v3("p"));
    net.send(p, &publish("cmd/3", b"three", QoS::AtMostOnce, 0));
    let got = net.take(b);
    assert_eq!(decode_all(&got, Version::V5).len(), 1);
}

#[test]
fn an_expired_session_is_not_restored() {
    let mut net = Net::new(1, anon());
    let mut c = conn_pkt(Version::V5, "dev", false);
    c.props.session_expiry = Some(60);
    let (a, _) = net.connect(0, 1, c);
    net.close(a);
    let now = net.ctxs[0].now();
    net.shards[0].save_image(now);
    let snap = net.factory.snapshot(now, 5000);
    assert_eq!(snap.sessions.len(), 1);
    let net2 = Net::new(1, anon());
    net2.factory.restore(snap, 5060);
    let mut m = net2.factory.instance(0, 1);
    let mut ctx = ringport_plugin::testing::RecordingContext::new();
    let now = ctx.now();
    m.handle_timer(&mut ctx, now, super::super::RETRY_TIMER);
    assert_eq!(m.session_count(), 0);
}

#[test]
fn the_shutdown_leaves_an_image_without_any_timer() {
    let mut net = Net::new(1, anon());
    let mut c = conn_pkt(Version::V311, "dev", false);
    c.clean_start = false;
    let (a, _) = net.connect(0, 1, c);
    net.send(a, &subscribe(1, &[("x", QoS::AtLeastOnce)]));
    let now = net.ctxs[0].now();
    assert!(net.factory.snapshot(now, 100).sessions.is_empty());
    net.shards[0].handle_close(&mut net.ctxs[0], a, ringport_plugin::CloseReason::Shutdown);
    let snap = net.factory.snapshot(now, 100);
    assert_eq!(snap.sessions.len(), 1);
    assert_eq!(snap.sessions[0].subscriptions.len(), 1);
    assert_eq!(snap.sessions[0].protocol_version, 4);
}

#[test]
fn a_save_before_any_shard_had_an_input_keeps_what_was_restored() {
    use crate::mqtt::persist::{RetainedRecord, SessionRecord, Snapshot};
    let factory = MqttFactory::new(MqttConfig {
        snapshot_interval: Some(Duration::from_secs(60)),
        ..anon()
    });
    let snap = Snapshot {
        retained: vec![RetainedRecord {
            topic: "plant/1/state".into(),
            qos: 1,
            payload: b"on".to_vec(),
            properties: None,
            stored_at: 1_000,
        }],
        sessions: vec![SessionRecord {
            client_id: "dev-9".into(),
            protocol_version: 5,
            session_expiry: 3600,
            disconnected_at: 1_000,
            subscriptions: Vec::new(),
            queued: Vec::new(),
            inflight_ids: Vec::new(),
            awaiting_pubrel: Vec::new(),
        }],
    };
    factory.restore(snap.clone(), 1_010);
    let shards: Vec<Mqtt> = (0..2).map(|s| factory.instance(s, 2)).collect();
    // No input reached either shard: the periodic save (and the one after
    // a stop) writes back exactly what was restored.
    assert_eq!(factory.snapshot(std::time::Instant::now(), 1_020), snap);
    drop(shards);
    assert_eq!(factory.snapshot(std::time::Instant::now(), 1_020), snap);
}
