//! Persistent sessions at the packet level: what was not acknowledged is
//! sent again on reconnect with its original packet identifier, a PUBLISH
//! with DUP set, a PUBREL as it was.

use ringport::protocols::mqtt::codec::{Packet, Version};

use crate::client::{resp, Client, Got, Opts};
use crate::harness::Broker;

/// Publishes `payloads` at `qos` from a fresh client on `port` and completes
/// every flow.
fn publish_all(broker: &Broker, v: Version, port: usize, topic: &str, qos: u8, payloads: &[&str]) {
    let id = format!("{}-pub", broker.prefix());
    let (mut p, _) = Client::connected(broker.addr(port), &Opts::new(v, &id));
    for (i, payload) in payloads.iter().enumerate() {
        let pid = i as u16 + 1;
        p.publish(topic, payload.as_bytes(), qos, false, pid);
        match qos {
            0 => {}
            1 => assert_eq!(p.recv(), Some(Got::PubAck(pid, 0))),
            _ => {
                assert_eq!(p.recv(), Some(Got::PubRec(pid, 0)));
                p.send(&Packet::PubRel(resp(pid)));
                assert_eq!(p.recv(), Some(Got::PubComp(pid, 0)));
            }
        }
    }
    p.disconnect();
}

/// Sends PINGREQ and expects PINGRESP next: everything sent before it was
/// read by the broker, and nothing else was pending for this client.
fn ping(c: &mut Client, what: &str) {
    c.send(&Packet::PingReq);
    assert_eq!(c.recv(), Some(Got::PingResp), "{what}");
}

fn redelivery(name: &str, v: Version, qos: u8) {
    let broker = Broker::default(name);
    let topic = broker.topic("r");
    let id = format!("{}-s", broker.prefix());
    let opts = Opts {
        clean_start: false,
        session_expiry: Some(300),
        ..Opts::new(v, &id)
    };
    let (mut s, present) = Client::connected(broker.addr(0), &opts);
    assert!(!present, "a new session");
    assert_eq!(s.subscribe(&[(&topic, qos)]), vec![qos]);
    publish_all(&broker, v, 1, &topic, qos, &["m1", "m2", "m3"]);
    let mut ids = Vec::new();
    for want in ["m1", "m2", "m3"] {
        match s.recv() {
            Some(Got::Publish(m)) => {
                assert_eq!(
                    (&m.payload[..], m.qos, m.dup),
                    (want.as_bytes(), qos, false),
                    "first delivery"
                );
                ids.push(m.packet_id);
            }
            other => panic!("PUBLISH {want} expected, got {other:?}"),
        }
    }
    // Acknowledge the first message only (QoS 2: its PUBREC), then drop.
    if qos == 1 {
        s.send(&Packet::PubAck(resp(ids[0])));
    } else {
        s.send(&Packet::PubRec(resp(ids[0])));
        assert_eq!(s.recv(), Some(Got::PubRel(ids[0], 0)));
    }
    ping(&mut s, "PINGRESP after the acknowledgement");
    s.drop_connection();

    // Back on the other shard's port.
    let (mut s, present) = Client::connected(broker.addr(1), &opts);
    assert!(present, "the session is present");
    let n = if qos == 1 { 2 } else { 3 };
    let got: Vec<Got> = (0..n).map(|_| s.recv().expect("a packet")).collect();
    let publishes: Vec<&Got> = got
        .iter()
        .filter(|g| matches!(g, Got::Publish(_)))
        .collect();
    let want = |i: usize, payload: &str| {
        Got::Publish(crate::client::Msg {
            topic: topic.clone(),
            payload: payload.as_bytes().to_vec(),
            qos,
            retain: false,
            dup: true,
            packet_id: ids[i],
        })
    };
    assert_eq!(
        publishes,
        vec![&want(1, "m2"), &want(2, "m3")],
        "resent in order with DUP and their identifiers: {got:?}"
    );
    if qos == 2 {
        assert!(
            got.contains(&Got::PubRel(ids[0], 0)),
            "the PUBREL of m1 is resent: {got:?}"
        );
        s.send(&Packet::PubComp(resp(ids[0])));
        for &pid in &ids[1..] {
            s.send(&Packet::PubRec(resp(pid)));
            assert_eq!(s.recv(), Some(Got::PubRel(pid, 0)));
            s.send(&Packet::PubComp(resp(pid)));
        }
    } else {
        for &pid in &ids[1..] {
            s.send(&Packet::PubAck(resp(pid)));
        }
    }
    ping(&mut s, "nothing more after the redelivery");
    s.drop_connection();
    let (mut s, present) = Client::connected(broker.addr(0), &opts);
    assert!(present, "the session is present");
    ping(&mut s, "nothing is resent once all was acknowledged");
    s.disconnect();
    broker.stop();
}

#[test]
fn redelivery_with_dup_qos1_v311() {
    redelivery("redelivery_qos1_v311", Version::V311, 1);
}

#[test]
fn redelivery_with_dup_qos1_v5() {
    redelivery("redelivery_qos1_v5", Version::V5, 1);
}

#[test]
fn redelivery_with_dup_qos2_v311() {
    redelivery("redelivery_qos2_v311", Version::V311, 2);
}

#[test]
fn redelivery_with_dup_qos2_v5() {
    redelivery("redelivery_qos2_v5", Version::V5, 2);
}
