//! Publish/subscribe on one shard: matching, QoS flows, windows, queues.

use std::time::Duration;

use super::*;
use crate::mqtt::broker::MqttDrop;

#[test]
fn wildcards_match_and_dollar_topics_stay_out() {
    let mut net = Net::new(1, anon());
    let (s, _) = net.connect(0, 1, v3("s"));
    net.send(
        s,
        &subscribe(
            7,
            &[
                ("a/+/c", QoS::AtMostOnce),
                ("#", QoS::AtMostOnce),
                ("bad/#/x", QoS::AtMostOnce),
            ],
        ),
    );
    assert_eq!(net.take(s), enc(&suback(7, &[0, 0, 0x80]), Version::V311));
    let (p, _) = net.connect(0, 2, v3("p"));
    net.send(p, &publish("a/b/c", b"1", QoS::AtMostOnce, 0));
    net.send(p, &publish("$SYS/x", b"2", QoS::AtMostOnce, 0));
    net.send(p, &publish("z", b"3", QoS::AtMostOnce, 0));
    // a/b/c matches both filters: delivered once.
    assert_eq!(
        net.take(s),
        [
            enc(
                &out("a/b/c", b"1", QoS::AtMostOnce, 0, false, false),
                Version::V311
            ),
            enc(
                &out("z", b"3", QoS::AtMostOnce, 0, false, false),
                Version::V311
            ),
        ]
        .concat()
    );
    let st = net.stats();
    assert_eq!(st.total(|s| s.messages_in(0)), 3);
    assert_eq!(st.total(|s| s.messages_out(0)), 2);
    // The engine's count: messages received plus messages sent.
    assert_eq!(net.ctxs[0].messages(), 5);
    assert_eq!(st.total(|s| s.subscriptions()), 2);
    assert_eq!(st.total(|s| s.drops(MqttDrop::TopicInvalid)), 1);
}

#[test]
fn qos1_both_ways() {
    let mut net = Net::new(1, anon());
    let s = subscriber(&mut net, 1, Version::V311, &[("t", QoS::AtLeastOnce)]);
    let (p, _) = net.connect(0, 2, v3("p"));
    net.send(p, &publish("t", b"x", QoS::AtLeastOnce, 10));
    assert_eq!(net.take(p), enc(&ack(4, 10), Version::V311));
    assert_eq!(
        net.take(s),
        enc(
            &out("t", b"x", QoS::AtLeastOnce, 1, false, false),
            Version::V311
        )
    );
    net.send(s, &ack(4, 1));
    assert!(net.shards[0]
        .sessions
        .values()
        .all(|s| s.flow.inflight.is_empty()));
    // A QoS 0 subscription downgrades.
    let s0 = subscriber(&mut net, 3, Version::V311, &[("t", QoS::AtMostOnce)]);
    net.send(p, &publish("t", b"y", QoS::AtLeastOnce, 11));
    assert_eq!(
        net.take(s0),
        enc(
            &out("t", b"y", QoS::AtMostOnce, 0, false, false),
            Version::V311
        )
    );
}

#[test]
fn qos2_inbound_is_exactly_once_by_packet_id() {
    let mut net = Net::new(1, anon());
    let s = subscriber(&mut net, 1, Version::V311, &[("t", QoS::AtMostOnce)]);
    let (p, _) = net.connect(0, 2, v5("p"));
    net.send(p, &publish("t", b"x", QoS::ExactlyOnce, 5));
    // Resent before PUBREL (DUP): acknowledged again, not delivered again.
    net.send(p, &publish("t", b"x", QoS::ExactlyOnce, 5));
    assert_eq!(
        net.take(p),
        [enc(&ack(5, 5), Version::V5), enc(&ack(5, 5), Version::V5)].concat()
    );
    assert_eq!(
        net.take(s),
        enc(
            &out("t", b"x", QoS::AtMostOnce, 0, false, false),
            Version::V311
        )
    );
    net.send(p, &ack(6, 5));
    assert_eq!(net.take(p), enc(&ack(7, 5), Version::V5));
    // Now the id is free: a new message with it is a new message.
    net.send(p, &publish("t", b"z", QoS::ExactlyOnce, 5));
    assert_eq!(
        net.take(s),
        enc(
            &out("t", b"z", QoS::AtMostOnce, 0, false, false),
            Version::V311
        )
    );
    // PUBREL of an unknown id: PUBCOMP 0x92 in v5.
    net.send(p, &ack(6, 99));
    let got = net.take(p);
    assert_eq!(&got[got.len() - 5..], [0x70, 3, 0, 99, 0x92]);
}

#[test]
fn qos2_outbound_flow() {
    let mut net = Net::new(1, anon());
    let s = subscriber(&mut net, 1, Version::V5, &[("t", QoS::ExactlyOnce)]);
    let (p, _) = net.connect(0, 2, v3("p"));
    net.send(p, &publish("t", b"x", QoS::ExactlyOnce, 1));
    assert_eq!(
        net.take(s),
        enc(
            &out("t", b"x", QoS::ExactlyOnce, 1, false, false),
            Version::V5
        )
    );
    net.send(s, &ack(5, 1));
    assert_eq!(net.take(s), enc(&ack(6, 1), Version::V5));
    net.send(s, &ack(7, 1));
    assert!(net.shards[0]
        .sessions
        .values()
        .all(|s| s.flow.inflight.is_empty()));
    assert_eq!(net.stats().total(|s| s.messages_out(2)), 1);
}

#[test]
fn window_toward_a_client_is_its_receive_maximum() {
    let mut net = Net::new(1, anon());
    let mut c = v5("s");
    c.props.receive_maximum = Some(2);
    let (s, _) = net.connect(0, 1, c);
    net.send(s, &subscribe(1, &[("t", QoS::AtLeastOnce)]));
    net.take(s);
    let (p, _) = net.connect(0, 2, v3("p"));
    for i in 0..4u8 {
        net.send(p, &publish("t", &[i], QoS::AtLeastOnce, u16::from(i) + 1));
    }
    assert_eq!(
        net.take(s),
        [
            enc(
                &out("t", &[0], QoS::AtLeastOnce, 1, false, false),
                Version::V5
            ),
            enc(
                &out("t", &[1], QoS::AtLeastOnce, 2, false, false),
                Version::V5
            ),
        ]
        .concat()
    );
    net.send(s, &ack(4, 2));
    assert_eq!(
        net.take(s),
        enc(
            &out("t", &[2], QoS::AtLeastOnce, 3, false, false),
            Version::V5
        )
    );
}

#[test]
fn client_over_our_receive_maximum_is_disconnected() {
    let mut net = Net::new(
        1,
        MqttConfig {
            receive_maximum: 2,
            ..anon()
        },
    );
    let (p, _) = net.connect(0, 1, v5("p"));
    net.send(p, &publish("t", b"", QoS::ExactlyOnce, 1));
    net.send(p, &publish("t", b"", QoS::ExactlyOnce, 2));
    assert!(!net.closed(p));
    net.send(p, &publish("t", b"", QoS::ExactlyOnce, 3));
    assert!(net.closed(p));
    let got = net.take(p);
    assert_eq!(&got[got.len() - 3..], [0xE0, 1, 0x93]);
    assert_eq!(
        net.stats()
            .total(|s| s.drops(MqttDrop::ReceiveMaximumExceeded)),
        1
    );
}

#[test]
fn offline_queue_limits_and_redelivery_with_dup() {
    let mut net = Net::new(
        1,
        MqttConfig {
            max_queued_messages: 3,
            ..anon()
        },
    );
    let (s, _) = net.connect(0, 1, conn_pkt(Version::V311, "s", false));
    net.send(s, &subscribe(1, &[("t", QoS::AtLeastOnce)]));
    net.take(s);
    let (p, _) = net.connect(0, 2, v3("p"));
    net.send(p, &publish("t", b"a", QoS::AtLeastOnce, 1));
    // Sent, not acknowledged; then the subscriber goes away.
    assert_eq!(
        net.take(s),
        enc(
            &out("t", b"a", QoS::AtLeastOnce, 1, false, false),
            Version::V311
        )
    );
    net.close(s);
    for (i, q) in [
        (b'b', QoS::AtMostOnce),
        (b'c', QoS::AtLeastOnce),
        (b'd', QoS::AtLeastOnce),
        (b'e', QoS::AtLeastOnce),
        (b'f', QoS::AtLeastOnce),
    ] {
        net.send(p, &publish("t", &[i], q, u16::from(i)));
    }
    // b (QoS 0) is not kept offline; f does not fit.
    let st = net.stats();
    assert_eq!(st.total(|s| s.drops(MqttDrop::OfflineQos0)), 1);
    assert_eq!(st.total(|s| s.drops(MqttDrop::QueueFullQos12)), 1);
    let (s, ack_bytes) = net.connect(0, 3, conn_pkt(Version::V311, "s", false));
    assert_eq!(ack_bytes[..4], [0x20, 2, 1, 0]);
    assert_eq!(
        &ack_bytes[4..],
        [
            enc(
                &out("t", b"a", QoS::AtLeastOnce, 1, false, true),
                Version::V311
            ),
            enc(
                &out("t", b"c", QoS::AtLeastOnce, 2, false, false),
                Version::V311
            ),
            enc(
                &out("t", b"d", QoS::AtLeastOnce, 3, false, false),
                Version::V311
            ),
            enc(
                &out("t", b"e", QoS::AtLeastOnce, 4, false, false),
                Version::V311
            ),
        ]
        .concat()
    );
    net.advance(Duration::from_secs(1));
    let status = net.factory.status();
    let me = status.iter().find(|c| &*c.client_id == "s").unwrap();
    assert_eq!((me.connected, me.inflight, me.dropped_qos12), (true, 4, 1));
    let _ = s;
}

#[test]
fn slow_reader_drops_qos0_first() {
    let mut net = Net::new(
        1,
        MqttConfig {
            max_queued_messages: 2,
            ..anon()
        },
    );
    let s = subscriber(&mut net, 1, Version::V311, &[("t", QoS::AtLeastOnce)]);
    let (p, _) = net.connect(0, 2, v3("p"));
    net.ctxs[0].fail_writes_to(s, Some(ringport_plugin::WriteError::QueueFull));
    net.send(p, &publish("t", b"0", QoS::AtMostOnce, 0));
    net.send(p, &publish("t", b"1", QoS::AtMostOnce, 0));
    net.send(p, &publish("t", b"2", QoS::AtLeastOnce, 1));
    net.send(p, &publish("t", b"3", QoS::AtMostOnce, 0));
    let st = net.stats();
    assert_eq!(st.total(|s| s.drops(MqttDrop::QueueFullQos0)), 2);
    net.ctxs[0].fail_writes_to(s, None);
    // Neither the clock nor the retry timer moves it; room does.
    net.retry();
    net.advance(Duration::from_secs(1));
    assert!(net.take(s).is_empty());
    net.writable(s);
    assert_eq!(
        net.take(s),
        [
            enc(
                &out("t", b"1", QoS::AtMostOnce, 0, false, false),
                Version::V311
            ),
            enc(
                &out("t", b"2", QoS::AtLeastOnce, 1, false, false),
                Version::V311
            ),
        ]
        .concat()
    );
}

#[test]
fn a_smaller_receive_maximum_on_reconnect_is_respected() {
    let mut net = Net::new(1, anon());
    let mut c = conn_pkt(Version::V5, "s", false);
    c.props.session_expiry = Some(60);
    let (s, _) = net.connect(0, 1, c);
    net.send(s, &subscribe(1, &[("t", QoS::AtLeastOnce)]));
    net.take(s);
    let (p, _) = net.connect(0, 2, v3("p"));
    for i in 0..3u8 {
        net.send(p, &publish("t", &[i], QoS::AtLeastOnce, u16::from(i) + 1));
    }
    assert_eq!(decode_all(&net.take(s), Version::V5).len(), 3);
    net.close(s);
    c.props.receive_maximum = Some(1);
    let (s, out) = net.connect(0, 3, c);
    let pids = |buf: &[u8]| -> Vec<u16> {
        decode_all(buf, Version::V5)
            .iter()
            .filter_map(|p| match p {
                Packet::Publish(m) => Some(m.packet_id),
                _ => None,
            })
            .collect()
    };
    assert_eq!(pids(&out), [1]);
    net.send(s, &ack(4, 1));
    assert_eq!(pids(&net.take(s)), [2]);
    net.send(s, &ack(4, 2));
    assert_eq!(pids(&net.take(s)), [3]);
}
