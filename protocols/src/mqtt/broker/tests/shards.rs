//! Several shards: routing, ordering, full rings, sessions on the move,
//! shared subscriptions.

use std::time::Duration;

use ringport_plugin::shard_for_key;

use super::*;
use crate::mqtt::broker::MqttDrop;

/// A client id whose home is `home` of `n` shards.
fn id_homed(home: usize, n: usize, tag: &str) -> &'static str {
    (0..)
        .map(|i| format!("{tag}-{i}"))
        .find(|id| shard_for_key(id.as_bytes(), n) == home)
        .map(|s| &*Box::leak(s.into_boxed_str()))
        .unwrap()
}

fn payloads(buf: &[u8], v: Version) -> Vec<Vec<u8>> {
    decode_all(buf, v)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.payload.to_vec()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_publication_reaches_subscribers_on_every_shard() {
    let mut net = Net::new(3, anon());
    let mut subs = Vec::new();
    for shard in 0..3 {
        let id = id_homed((shard + 1) % 3, 3, "s");
        let (c, out) = net.connect(shard, 10 + shard as u64, v3(id));
        assert_eq!(out, [0x20, 2, 0, 0], "connect on shard {shard}");
        net.send(c, &subscribe(1, &[("t/#", QoS::AtLeastOnce)]));
        net.take(c);
        subs.push(c);
    }
    let (p, _) = net.connect(1, 1, v3("p"));
    net.send(p, &publish("t/1", b"x", QoS::AtLeastOnce, 9));
    assert_eq!(net.take(p), [0x40, 2, 0, 9]);
    for c in subs {
        assert_eq!(payloads(&net.take(c), Version::V311), [b"x".to_vec()]);
    }
    assert_eq!(net.stats().total(|s| s.messages_out(1)), 3);
}

#[test]
fn full_ring_delays_the_puback_keeps_order_and_drops_only_qos0_past_the_cap() {
    let mut net = Net::new(
        2,
        MqttConfig {
            mesh_retry_bytes: 200,
            ..anon()
        },
    );
    let (s, _) = net.connect(1, 1, v3(id_homed(1, 2, "s")));
    net.send(s, &subscribe(1, &[("t", QoS::AtLeastOnce)]));
    net.take(s);
    let (p, _) = net.connect(0, 2, v3(id_homed(0, 2, "p")));
    net.ctxs[0].set_mesh_full(true);
    for i in 0..20u8 {
        let qos = if i % 2 == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        net.send(p, &publish("t", &[i; 20], qos, u16::from(i) + 1));
    }
    // No PUBACK while the ring refuses the messages.
    assert_eq!(net.take(p), b"");
    let dropped = net.stats().total(|s| s.drops(MqttDrop::MeshFull));
    assert!(dropped > 0);
    net.ctxs[0].set_mesh_full(false);
    net.retry();
    let acks = net.take(p);
    assert_eq!(acks.len(), 10 * 4);
    assert_eq!(&acks[..4], [0x40, 2, 0, 2]);
    // Every QoS 1 message arrived, in order; QoS 0 ones until the cap.
    let got = payloads(&net.take(s), Version::V311);
    let firsts: Vec<u8> = got.iter().map(|p| p[0]).collect();
    let mut sorted = firsts.clone();
    sorted.sort_unstable();
    assert_eq!(firsts, sorted);
    for i in (1..20u8).step_by(2) {
        assert!(firsts.contains(&i), "{i} missing from {firsts:?}");
    }
    assert_eq!(firsts.len() as u64 + dropped, 20);
}

#[test]
fn retained_messages_are_replicated() {
    let mut net = Net::new(2, anon());
    let (p, _) = net.connect(0, 1, v3("p"));
    let mut r = publish("cfg/a", b"1", QoS::AtMostOnce, 0);
    if let Packet::Publish(x) = &mut r {
        x.retain = true;
    }
    net.send(p, &r);
    assert_eq!(net.shards[0].retained_count(), 1);
    assert_eq!(net.shards[1].retained_count(), 1);
    let (s, _) = net.connect(1, 2, v3("s"));
    net.send(s, &subscribe(1, &[("cfg/#", QoS::AtMostOnce)]));
    let got = net.take(s);
    assert_eq!(&got[..5], [0x90, 3, 0, 1, 0]);
    let ps = decode_all(&got[5..], Version::V311);
    let Packet::Publish(m) = &ps[0] else { panic!() };
    assert!(m.retain);
    assert_eq!((m.topic, m.payload), ("cfg/a", &b"1"[..]));
}

#[test]
fn a_persistent_session_follows_its_client_to_another_shard() {
    let mut net = Net::new(3, anon());
    let id = id_homed(2, 3, "dev");
    let (a, _) = net.connect(0, 1, conn_pkt(Version::V311, id, false));
    net.send(a, &subscribe(1, &[("cmd/#", QoS::ExactlyOnce)]));
    net.take(a);
    let (p, _) = net.connect(1, 2, v3("p"));
    net.send(p, &publish("cmd/1", b"one", QoS::AtLeastOnce, 1));
    // Sent on shard 0, never acknowledged.
    assert_eq!(payloads(&net.take(a), Version::V311), [b"one".to_vec()]);
    net.close(a);
    net.send(p, &publish("cmd/2", b"two", QoS::ExactlyOnce, 2));
    net.take(p);
    // Back, on shard 1 this time: the session, its subscription, the
    // unacknowledged message (DUP) and the queued one come along.
    let (b, out) = net.connect(1, 3, conn_pkt(Version::V311, id, false));
    assert_eq!(out[..4], [0x20, 2, 1, 0]);
    let ps = decode_all(&out[4..], Version::V311);
    assert_eq!(ps.len(), 2, "{ps:?}");
    let (Packet::Publish(m1), Packet::Publish(m2)) = (&ps[0], &ps[1]) else {
        panic!("{ps:?}")
    };
    assert_eq!(
        (m1.payload, m1.dup, m1.packet_id, m1.qos),
        (&b"one"[..], true, 1, QoS::AtLeastOnce)
    );
    assert_eq!(
        (m2.payload, m2.dup, m2.qos),
        (&b"two"[..], false, QoS::ExactlyOnce)
    );
    assert_eq!(net.shards[0].session_count(), 0);
    // The subscription now lives on shard 1.
    net.send(p, &publish("cmd/3", b"three", QoS::AtMostOnce, 0));
    assert_eq!(payloads(&net.take(b), Version::V311), [b"three".to_vec()]);
}

#[test]
fn a_second_connect_on_another_shard_takes_over() {
    let mut net = Net::new(2, anon());
    let id = id_homed(1, 2, "dev");
    let mut c = conn_pkt(Version::V5, id, false);
    c.props.session_expiry = Some(60);
    let (a, _) = net.connect(0, 1, c);
    net.send(a, &subscribe(1, &[("x", QoS::AtLeastOnce)]));
    net.take(a);
    let (b, out) = net.connect(1, 2, c);
    assert!(net.closed(a));
    assert_eq!(net.take(a), [0xE0, 1, 0x8E]);
    let ps = decode_all(&out, Version::V5);
    let Packet::ConnAck(ack) = &ps[0] else {
        panic!()
    };
    assert!(ack.session_present);
    assert!(!net.closed(b));
    // The engine's close of the old stream changes nothing more.
    net.close(a);
    assert_eq!(net.shards[1].session_count(), 1);
    assert_eq!(net.shards[0].session_count(), 0);
    assert_eq!(
        net.stats().total(|s| s.drops(MqttDrop::SessionTakenOver)),
        1
    );
}

#[test]
fn an_offline_session_expires_and_its_id_is_forgotten() {
    let mut net = Net::new(2, anon());
    let id = id_homed(1, 2, "dev");
    let mut c = conn_pkt(Version::V5, id, false);
    c.props.session_expiry = Some(30);
    let (a, _) = net.connect(0, 1, c);
    net.close(a);
    assert_eq!(net.shards[0].session_count(), 1);
    assert_eq!(net.shards[1].ids.home_count(), 1);
    net.advance(Duration::from_secs(29));
    assert_eq!(net.shards[0].session_count(), 1);
    net.advance(Duration::from_secs(1));
    assert_eq!(net.shards[0].session_count(), 0);
    assert_eq!(net.shards[1].ids.home_count(), 0);
    let (_, out) = net.connect(0, 2, c);
    let ps = decode_all(&out, Version::V5);
    let Packet::ConnAck(ack) = &ps[0] else {
        panic!()
    };
    assert!(!ack.session_present);
}

#[test]
fn a_shared_group_gets_each_message_once_across_shards() {
    let mut net = Net::new(3, anon());
    let mut members = Vec::new();
    for shard in 0..3 {
        let (c, _) = net.connect(shard, 10 + shard as u64, v5(id_homed(shard, 3, "m")));
        net.send(c, &subscribe(1, &[("$share/g/jobs/#", QoS::AtLeastOnce)]));
        net.take(c);
        members.push(c);
    }
    let (p, _) = net.connect(0, 1, v3("p"));
    for i in 0..9u8 {
        net.send(
            p,
            &publish("jobs/x", &[i], QoS::AtLeastOnce, u16::from(i) + 1),
        );
    }
    let mut all = Vec::new();
    for c in members {
        for p in payloads(&net.take(c), Version::V5) {
            all.push(p[0]);
        }
    }
    all.sort_unstable();
    assert_eq!(all, (0..9).collect::<Vec<u8>>());
}

/// A member chosen by its group's home shard whose session has just moved
/// to another shard (the home has not heard it leave yet) is replaced by
/// the next member: the QoS 1 message is delivered, not dropped. With no
/// other member it is dropped and counted `no_session`.
#[test]
fn a_shared_delivery_to_a_member_that_moved_goes_to_the_next_member() {
    use super::super::route::{TAG_SHARE_JOIN, TAG_SHARE_LEAVE};
    for with_b in [true, false] {
        let mut net = Net::new(3, anon());
        // The group's home is shard 2; member a is on shard 0 (first in the
        // group's turn order), b on 2 (its delivery stays on the home).
        assert_eq!(shard_for_key(b"$share/g/jobs/#", 3), 2);
        let (a, _) = net.connect(0, 10, conn_pkt(Version::V311, "a", false));
        net.send(a, &subscribe(1, &[("$share/g/jobs/#", QoS::AtLeastOnce)]));
        net.take(a);
        let b = with_b.then(|| {
            let (b, _) = net.connect(2, 11, v3("b"));
            net.send(b, &subscribe(1, &[("$share/g/jobs/#", QoS::AtLeastOnce)]));
            net.take(b);
            b
        });
        let (p, _) = net.connect(1, 12, v3("p"));
        // a's client comes back on shard 1: its session moves there, and
        // the group's home has not yet heard it leave shard 0 or join 1.
        net.hold_tags = vec![TAG_SHARE_LEAVE, TAG_SHARE_JOIN];
        net.close(a);
        let (a2, ack) = net.connect(1, 20, conn_pkt(Version::V311, "a", false));
        assert_eq!(ack, [0x20, 2, 1, 0], "session present");
        net.send(p, &publish("jobs/x", b"job", QoS::AtLeastOnce, 1));
        let no_session = net.stats().total(|s| s.drops(MqttDrop::NoSession));
        let to_b = b.map(|b| payloads(&net.take(b), Version::V311));
        net.release();
        assert!(payloads(&net.take(a2), Version::V311).is_empty());
        if with_b {
            assert_eq!(to_b, Some(vec![b"job".to_vec()]));
            assert_eq!(no_session, 0);
        } else {
            assert_eq!(no_session, 1);
        }
        // The publisher got its PUBACK either way.
        assert_eq!(net.take(p), [0x40, 2, 0, 1]);
    }
}

#[test]
fn order_per_publisher_survives_a_flapping_ring() {
    let mut net = Net::new(2, anon());
    let (s, _) = net.connect(1, 1, v3("s"));
    net.send(s, &subscribe(1, &[("t", QoS::AtLeastOnce)]));
    net.take(s);
    let (p, _) = net.connect(0, 2, v3("p"));
    let mut got = Vec::new();
    for i in 0..300u16 {
        net.ctxs[0].set_mesh_full(i % 7 < 3);
        net.send(p, &publish("t", &i.to_be_bytes(), QoS::AtLeastOnce, i + 1));
        if i % 5 == 0 {
            net.retry();
        }
        for pk in decode_all(&net.take(s), Version::V311) {
            if let Packet::Publish(m) = pk {
                got.push(u16::from_be_bytes([m.payload[0], m.payload[1]]));
                net.send(s, &ack(4, m.packet_id));
            }
        }
    }
    net.ctxs[0].set_mesh_full(false);
    net.retry();
    for pk in decode_all(&net.take(s), Version::V311) {
        if let Packet::Publish(m) = pk {
            got.push(u16::from_be_bytes([m.payload[0], m.payload[1]]));
        }
    }
    assert_eq!(got, (0..300).collect::<Vec<u16>>());
    assert_eq!(net.take(p).len(), 300 * 4);
}

#[test]
fn every_qos1_message_arrives_once_in_order_per_publisher() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(7);
    let mut net = Net::new(3, anon());
    let (s, _) = net.connect(2, 1, v3("s"));
    net.send(s, &subscribe(1, &[("t/+", QoS::AtLeastOnce)]));
    net.take(s);
    let pubs: Vec<ConnId> = (0..2)
        .map(|i| net.connect(i, 10 + i as u64, v3(["p0", "p1"][i])).0)
        .collect();
    const N: u32 = 3000;
    let mut next = [0u32; 2];
    let mut got: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
    let mut acked = [0usize; 2];
    while next.iter().any(|n| *n < N) {
        for sh in 0..3 {
            net.ctxs[sh].set_mesh_full(rng.gen_bool(0.3));
        }
        let i = rng.gen_range(0..2);
        if next[i] < N {
            let topic = ["t/0", "t/1"][i];
            let pid = (next[i] % 60_000 + 1) as u16;
            net.send(
                pubs[i],
                &publish(topic, &next[i].to_be_bytes(), QoS::AtLeastOnce, pid),
            );
            next[i] += 1;
        }
        if rng.gen_bool(0.2) {
            net.retry();
        }
        for i in 0..2 {
            acked[i] += net.take(pubs[i]).len() / 4;
        }
        for p in decode_all(&net.take(s), Version::V311) {
            if let Packet::Publish(m) = p {
                let from = usize::from(m.topic == "t/1");
                got[from].push(u32::from_be_bytes(m.payload.try_into().unwrap()));
                net.send(s, &ack(4, m.packet_id));
            }
        }
    }
    for sh in 0..3 {
        net.ctxs[sh].set_mesh_full(false);
    }
    for _ in 0..3 {
        net.retry();
        for p in decode_all(&net.take(s), Version::V311) {
            if let Packet::Publish(m) = p {
                let from = usize::from(m.topic == "t/1");
                got[from].push(u32::from_be_bytes(m.payload.try_into().unwrap()));
                net.send(s, &ack(4, m.packet_id));
            }
        }
    }
    for i in 0..2 {
        acked[i] += net.take(pubs[i]).len() / 4;
        assert_eq!(got[i], (0..N).collect::<Vec<u32>>(), "publisher {i}");
        assert_eq!(acked[i], N as usize);
    }
}

#[test]
fn the_plugin_can_move_to_its_shard_thread() {
    fn send<T: Send>() {}
    send::<Mqtt>();
    send::<MqttFactory>();
}

#[test]
fn packets_sent_before_the_connack_wait_for_a_remote_session() {
    let mut net = Net::new(2, anon());
    let id = id_homed(1, 2, "pipelined");
    let c = net.open(0, 1);
    let mut bytes = Vec::new();
    codec::encode(&Packet::Connect(v3(id)), Version::V311, &mut bytes).unwrap();
    codec::encode(
        &subscribe(1, &[("t", QoS::AtMostOnce)]),
        Version::V311,
        &mut bytes,
    )
    .unwrap();
    codec::encode(
        &publish("t", b"self", QoS::AtMostOnce, 0),
        Version::V311,
        &mut bytes,
    )
    .unwrap();
    codec::encode(&Packet::PingReq, Version::V311, &mut bytes).unwrap();
    // The CONNECT's claim goes to shard 1; nothing is answered until the
    // session comes back. Everything after the CONNECT waits in the stash.
    let shard = 0;
    let n = net.shards[shard]
        .handle_data(&mut net.ctxs[shard], c, &bytes[..bytes.len() - 1])
        .unwrap();
    assert_eq!(n, bytes.len() - 1);
    assert_eq!(net.take(c), b"");
    net.carry();
    // The last byte arrives after the session did.
    net.feed(c, &bytes[bytes.len() - 1..]);
    let out = net.take(c);
    let ps = decode_all(&out, Version::V311);
    assert_eq!(ps.len(), 4, "{ps:?}");
    assert!(matches!(ps[0], Packet::ConnAck(_)));
    assert!(matches!(ps[1], Packet::SubAck(_)));
    assert!(matches!(ps[2], Packet::Publish(ref m) if m.payload == b"self"));
    assert_eq!(ps[3], Packet::PingResp);
}

#[test]
fn concurrent_retained_updates_converge_on_every_replica() {
    let mut net = Net::new(3, anon());
    let topic = "cfg/mode";
    let home = shard_for_key(topic.as_bytes(), 3);
    let others: Vec<usize> = (0..3).filter(|&s| s != home).collect();
    let a = net.connect(others[0], 1, v3("a")).0;
    let b = net.connect(others[1], 2, v3("b")).0;
    for (conn, shard, payload) in [(a, others[0], b"A"), (b, others[1], b"B")] {
        let mut p = publish(topic, payload, QoS::AtMostOnce, 0);
        if let Packet::Publish(x) = &mut p {
            x.retain = true;
        }
        let bytes = enc(&p, Version::V311);
        // Both publish before any mesh message moves.
        net.shards[shard]
            .handle_data(&mut net.ctxs[shard], conn, &bytes)
            .unwrap();
    }
    net.carry();
    let values: Vec<Vec<u8>> = net
        .shards
        .iter()
        .map(|sh| sh.retained.get(topic).unwrap().payload.to_vec())
        .collect();
    assert_eq!(values[0], values[1]);
    assert_eq!(values[1], values[2]);
}

#[test]
fn a_retained_message_is_there_for_the_next_packet_of_its_publisher() {
    let mut net = Net::new(2, anon());
    let topic = (0..)
        .map(|i| format!("r/{i}"))
        .find(|t| shard_for_key(t.as_bytes(), 2) == 1)
        .unwrap();
    let topic: &'static str = Box::leak(topic.into_boxed_str());
    let (c, _) = net.connect(0, 1, v3("c"));
    let mut p = publish(topic, b"v", QoS::AtMostOnce, 0);
    if let Packet::Publish(x) = &mut p {
        x.retain = true;
    }
    let bytes = [
        enc(&p, Version::V311),
        enc(&subscribe(1, &[("r/#", QoS::AtMostOnce)]), Version::V311),
    ]
    .concat();
    // In one segment, before any mesh message moves.
    net.shards[0]
        .handle_data(&mut net.ctxs[0], c, &bytes)
        .unwrap();
    let got = net.take(c);
    let ps = decode_all(&got, Version::V311);
    assert!(
        matches!(ps.last(), Some(Packet::Publish(m)) if m.retain && m.payload == b"v"),
        "{ps:?}"
    );
    net.carry();
    assert_eq!(net.shards[1].retained_count(), 1);
}
