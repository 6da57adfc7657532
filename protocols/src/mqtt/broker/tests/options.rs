//! Retained messages, subscription options, aliases, limits, ACL, wills,
//! events, expiry on one shard.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::mqtt::acl::Acl;
use crate::mqtt::broker::MqttDrop;
use crate::mqtt::codec::{UnsubAck, Unsubscribe, Will, WillProps};

#[test]
fn retained_messages_and_retain_handling() {
    let mut net = Net::new(1, anon());
    let (p, _) = net.connect(0, 1, v3("p"));
    let mut r = publish("r/1", b"on", QoS::AtLeastOnce, 1);
    if let Packet::Publish(x) = &mut r {
        x.retain = true;
    }
    net.send(p, &r);
    assert_eq!(net.shards[0].retained_count(), 1);
    let s = net.open(0, 2);
    net.send(s, &Packet::Connect(v5("s")));
    net.take(s);
    net.send(s, &subscribe(1, &[("r/+", QoS::AtLeastOnce)]));
    assert_eq!(
        net.take(s),
        [
            enc(&suback(1, &[1]), Version::V5),
            enc(
                &out("r/1", b"on", QoS::AtLeastOnce, 1, true, false),
                Version::V5
            ),
        ]
        .concat()
    );
    // Retain handling 1: only for a new subscription; 2: never.
    let mut sub = subscribe(2, &[("r/+", QoS::AtLeastOnce), ("r/#", QoS::AtMostOnce)]);
    if let Packet::Subscribe(x) = &mut sub {
        x.filters[0].1.retain_handling = 1;
        x.filters[1].1.retain_handling = 2;
    }
    net.send(s, &sub);
    assert_eq!(net.take(s), enc(&suback(2, &[1, 0]), Version::V5));
    // An empty retained payload clears it.
    let mut clear = publish("r/1", b"", QoS::AtMostOnce, 0);
    if let Packet::Publish(x) = &mut clear {
        x.retain = true;
    }
    net.send(p, &clear);
    assert_eq!(net.shards[0].retained_count(), 0);
}

#[test]
fn no_local_and_subscription_ids_and_unsubscribe() {
    let mut net = Net::new(1, anon());
    let (c, _) = net.connect(0, 1, v5("c"));
    let mut sub = subscribe(1, &[("t/#", QoS::AtMostOnce)]);
    if let Packet::Subscribe(x) = &mut sub {
        x.filters[0].1.no_local = true;
        x.subscription_id = Some(42);
    }
    net.send(c, &sub);
    net.take(c);
    net.send(c, &publish("t/x", b"mine", QoS::AtMostOnce, 0));
    assert_eq!(net.take(c), b"");
    let (p, _) = net.connect(0, 2, v5("p"));
    net.send(p, &publish("t/x", b"theirs", QoS::AtMostOnce, 0));
    let got = net.take(c);
    let ps = decode_all(&got, Version::V5);
    let Packet::Publish(m) = &ps[0] else { panic!() };
    assert_eq!(m.props.subscription_ids.iter().collect::<Vec<_>>(), [42]);
    assert_eq!(m.payload, b"theirs");
    net.send(
        c,
        &Packet::Unsubscribe(Unsubscribe {
            packet_id: 3,
            user_properties: Default::default(),
            filters: vec!["t/#", "nope"],
        }),
    );
    assert_eq!(
        net.take(c),
        enc(
            &Packet::UnsubAck(UnsubAck {
                packet_id: 3,
                props: Default::default(),
                codes: vec![ReasonCode(0), ReasonCode(0x11)],
            }),
            Version::V5
        )
    );
    net.send(p, &publish("t/x", b"gone", QoS::AtMostOnce, 0));
    assert_eq!(net.take(c), b"");
}

#[test]
fn topic_alias_inbound() {
    let mut net = Net::new(1, anon());
    let s = subscriber(
        &mut net,
        1,
        Version::V311,
        &[("long/topic", QoS::AtMostOnce)],
    );
    let (p, _) = net.connect(0, 2, v5("p"));
    let mut first = publish("long/topic", b"1", QoS::AtMostOnce, 0);
    if let Packet::Publish(x) = &mut first {
        x.props.topic_alias = Some(3);
    }
    net.send(p, &first);
    let mut second = publish("", b"2", QoS::AtMostOnce, 0);
    if let Packet::Publish(x) = &mut second {
        x.props.topic_alias = Some(3);
    }
    net.send(p, &second);
    assert_eq!(
        net.take(s),
        [
            enc(
                &out("long/topic", b"1", QoS::AtMostOnce, 0, false, false),
                Version::V311
            ),
            enc(
                &out("long/topic", b"2", QoS::AtMostOnce, 0, false, false),
                Version::V311
            ),
        ]
        .concat()
    );
    // Over the maximum (16): DISCONNECT 0x94.
    if let Packet::Publish(x) = &mut second {
        x.props.topic_alias = Some(17);
    }
    net.send(p, &second);
    assert!(net.closed(p));
}

#[test]
fn a_qos0_delivery_over_the_client_maximum_is_dropped_and_counted() {
    // QoS 0 to a client with nothing queued is written straight: the
    // size check and the counts are the same as through the queue.
    let mut net = Net::new(1, anon());
    let mut c = v5("s");
    c.props.maximum_packet_size = Some(20);
    let (s, _) = net.connect(0, 1, c);
    net.send(s, &subscribe(1, &[("t", QoS::AtMostOnce)]));
    net.take(s);
    let (p, _) = net.connect(0, 2, v3("p"));
    net.send(p, &publish("t", &[7; 30], QoS::AtMostOnce, 0));
    net.send(p, &publish("t", b"ok", QoS::AtMostOnce, 0));
    assert_eq!(
        net.take(s),
        enc(
            &out("t", b"ok", QoS::AtMostOnce, 0, false, false),
            Version::V5
        )
    );
    let st = net.stats();
    assert_eq!(st.total(|s| s.drops(MqttDrop::PacketTooLarge)), 1);
    assert_eq!(st.total(|s| s.messages_out(0)), 1);
    net.advance(Duration::from_secs(1));
    let status = net.factory.status();
    let me = status.iter().find(|c| &*c.client_id == "s").unwrap();
    assert_eq!((me.queued, me.dropped_other), (0, 1));
}

#[test]
fn client_maximum_packet_size_is_never_exceeded() {
    let mut net = Net::new(1, anon());
    let mut c = v5("s");
    c.props.maximum_packet_size = Some(20);
    let (s, _) = net.connect(0, 1, c);
    net.send(s, &subscribe(1, &[("t", QoS::AtLeastOnce)]));
    net.take(s);
    let (p, _) = net.connect(0, 2, v3("p"));
    net.send(p, &publish("t", &[7; 30], QoS::AtLeastOnce, 1));
    net.send(p, &publish("t", b"ok", QoS::AtLeastOnce, 2));
    assert_eq!(
        net.take(s),
        enc(
            &out("t", b"ok", QoS::AtLeastOnce, 1, false, false),
            Version::V5
        )
    );
    assert_eq!(net.stats().total(|s| s.drops(MqttDrop::PacketTooLarge)), 1);
}

#[test]
fn acl_refuses_with_reason_codes() {
    let acl = Acl::parse("topic readwrite open/#\n").unwrap();
    let mut net = Net::new(
        1,
        MqttConfig {
            acl: Some(Arc::new(acl)),
            ..anon()
        },
    );
    let (c, _) = net.connect(0, 1, v5("c"));
    net.send(
        c,
        &subscribe(
            1,
            &[("open/+", QoS::AtLeastOnce), ("closed/#", QoS::AtLeastOnce)],
        ),
    );
    assert_eq!(net.take(c), enc(&suback(1, &[1, 0x87]), Version::V5));
    net.send(c, &publish("closed/x", b"", QoS::AtLeastOnce, 4));
    let got = net.take(c);
    assert_eq!(got, [0x40, 3, 0, 4, 0x87]);
    net.send(c, &publish("open/x", b"", QoS::AtLeastOnce, 5));
    let ps = decode_all(&net.take(c), Version::V5).len();
    assert_eq!(ps, 2); // PUBACK and the message itself
    assert_eq!(net.stats().total(|s| s.drops(MqttDrop::NotAuthorized)), 2);
}

#[test]
fn will_on_unclean_close_not_on_disconnect() {
    let mut net = Net::new(1, anon());
    let s = subscriber(&mut net, 1, Version::V311, &[("will/#", QoS::AtMostOnce)]);
    let will = Will {
        topic: "will/a",
        payload: b"gone",
        qos: QoS::AtMostOnce,
        retain: false,
        props: WillProps::default(),
    };
    let mut a = v3("a");
    a.will = Some(will);
    let (ca, _) = net.connect(0, 2, a);
    net.close(ca);
    assert_eq!(
        net.take(s),
        enc(
            &out("will/a", b"gone", QoS::AtMostOnce, 0, false, false),
            Version::V311
        )
    );
    let mut b = v3("b");
    b.will = Some(will);
    let (cb, _) = net.connect(0, 3, b);
    net.send(cb, &Packet::Disconnect(Default::default()));
    net.close(cb);
    assert_eq!(net.take(s), b"");
}

#[test]
fn will_delay_waits_and_a_reconnect_cancels_it() {
    let mut net = Net::new(1, anon());
    let s = subscriber(&mut net, 1, Version::V311, &[("will/#", QoS::AtMostOnce)]);
    let mut will = Will {
        topic: "will/a",
        payload: b"gone",
        qos: QoS::AtMostOnce,
        retain: false,
        props: WillProps::default(),
    };
    will.props.delay_interval = Some(5);
    let mut a = conn_pkt(Version::V5, "a", false);
    a.props.session_expiry = Some(100);
    a.will = Some(will);
    let (ca, _) = net.connect(0, 2, a);
    net.close(ca);
    net.advance(Duration::from_secs(3));
    assert_eq!(net.take(s), b"");
    // Back within the delay: no will.
    let (ca, _) = net.connect(0, 3, a);
    net.advance(Duration::from_secs(5));
    assert_eq!(net.take(s), b"");
    net.close(ca);
    net.advance(Duration::from_secs(5));
    assert_eq!(
        net.take(s),
        enc(
            &out("will/a", b"gone", QoS::AtMostOnce, 0, false, false),
            Version::V311
        )
    );
}

#[test]
fn subscription_limit() {
    let mut net = Net::new(
        1,
        MqttConfig {
            max_subscriptions_per_client: 2,
            ..anon()
        },
    );
    let (c, _) = net.connect(0, 1, v5("c"));
    net.send(
        c,
        &subscribe(
            1,
            &[
                ("a", QoS::AtMostOnce),
                ("b", QoS::AtMostOnce),
                ("c", QoS::AtMostOnce),
                ("a", QoS::AtLeastOnce),
            ],
        ),
    );
    assert_eq!(net.take(c), enc(&suback(1, &[0, 0, 0x97, 1]), Version::V5));
    assert_eq!(
        net.stats().total(|s| s.drops(MqttDrop::SubscriptionLimit)),
        1
    );
}

#[test]
fn takeover_on_one_shard() {
    let mut net = Net::new(1, anon());
    let (a, _) = net.connect(0, 1, conn_pkt(Version::V5, "dev", false));
    let (b, out) = net.connect(0, 2, conn_pkt(Version::V5, "dev", false));
    assert!(net.closed(a));
    let got = net.take(a);
    assert_eq!(got, [0xE0, 1, 0x8E]);
    // Clean start 0, expiry 0: the old session ended with its connection.
    assert_eq!(out[3], 0);
    assert!(!net.closed(b));
    assert_eq!(
        net.stats().total(|s| s.drops(MqttDrop::SessionTakenOver)),
        1
    );
}

#[derive(Default)]
struct Events(std::sync::Mutex<Vec<String>>);

impl crate::mqtt::broker::MqttEvents for Events {
    fn connect(&self, _: &crate::mqtt::broker::ConnectEvent<'_>) {}
    fn denied(&self, ev: &crate::mqtt::broker::DeniedEvent<'_>) {
        self.0.lock().unwrap().push(format!(
            "denied {} {} {} {}",
            ev.client_id, ev.peer, ev.action, ev.topic
        ));
    }
    fn client_drops(&self, ev: &crate::mqtt::broker::ClientDropsEvent<'_>) {
        self.0.lock().unwrap().push(format!(
            "drops {} {} {} {}",
            ev.client_id, ev.qos0, ev.qos12, ev.other
        ));
    }
}

#[test]
fn denials_and_client_drops_are_reported() {
    let events = Arc::new(Events::default());
    let mut net = Net::new(
        1,
        MqttConfig {
            acl: Some(Arc::new(Acl::parse("topic readwrite t\n").unwrap())),
            events: Some(events.clone()),
            max_queued_messages: 1,
            ..anon()
        },
    );
    let s = subscriber(
        &mut net,
        1,
        Version::V311,
        &[("t", QoS::AtMostOnce), ("x", QoS::AtMostOnce)],
    );
    let (p, _) = net.connect(0, 2, v3("p"));
    net.send(p, &publish("x", b"", QoS::AtMostOnce, 0));
    net.ctxs[0].fail_writes_to(s, Some(ringport_plugin::WriteError::QueueFull));
    for _ in 0..3 {
        net.send(p, &publish("t", b"", QoS::AtMostOnce, 0));
    }
    net.advance(Duration::from_secs(1));
    net.advance(Duration::from_secs(1));
    assert_eq!(
        *events.0.lock().unwrap(),
        [
            "denied sub-1 127.0.0.1:40001 subscribe x",
            "denied p 127.0.0.1:40002 publish x",
            "drops sub-1 2 0 0",
        ]
    );
}

#[test]
fn topic_aliases_toward_a_client_that_accepts_them() {
    let mut net = Net::new(1, anon());
    let mut c = v5("s");
    c.props.topic_alias_maximum = Some(1);
    let (s, _) = net.connect(0, 1, c);
    net.send(s, &subscribe(1, &[("#", QoS::AtMostOnce)]));
    net.take(s);
    let (p, _) = net.connect(0, 2, v3("p"));
    net.send(p, &publish("a/long/topic", b"1", QoS::AtMostOnce, 0));
    net.send(p, &publish("a/long/topic", b"2", QoS::AtMostOnce, 0));
    net.send(p, &publish("other", b"3", QoS::AtMostOnce, 0));
    let got = net.take(s);
    let seen: Vec<(&str, Option<u16>)> = decode_all(&got, Version::V5)
        .iter()
        .map(|p| match p {
            Packet::Publish(m) => (m.topic, m.props.topic_alias),
            _ => panic!("{p:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [("a/long/topic", Some(1)), ("", Some(1)), ("other", None)]
    );
}

#[test]
fn limits_on_sessions_and_retained_messages() {
    let mut net = Net::new(
        1,
        MqttConfig {
            max_sessions: 1,
            max_retained: 1,
            ..anon()
        },
    );
    let (p, _) = net.connect(0, 1, v3("p"));
    let (_, out) = net.connect(0, 2, v3("q"));
    assert_eq!(out, [0x20, 2, 0, 3]);
    for t in ["r/1", "r/2", "r/1"] {
        let mut r = publish(t, b"x", QoS::AtMostOnce, 0);
        if let Packet::Publish(x) = &mut r {
            x.retain = true;
        }
        net.send(p, &r);
    }
    assert_eq!(net.shards[0].retained_count(), 1);
    let st = net.stats();
    assert_eq!(st.total(|s| s.drops(MqttDrop::RetainedFull)), 1);
    assert_eq!(st.total(|s| s.drops(MqttDrop::SessionLimit)), 1);
}

#[test]
fn expired_messages_are_not_delivered() {
    let mut net = Net::new(1, anon());
    let mut c = conn_pkt(Version::V5, "s", false);
    c.props.session_expiry = Some(100);
    let (s, _) = net.connect(0, 1, c);
    net.send(s, &subscribe(1, &[("t", QoS::AtLeastOnce)]));
    net.take(s);
    net.close(s);
    let (p, _) = net.connect(0, 2, v5("p"));
    for (payload, expiry) in [
        (&b"stale"[..], Some(5)),
        (b"fresh", Some(60)),
        (b"ageless", None),
    ] {
        let mut m = publish("t", payload, QoS::AtLeastOnce, 1);
        if let Packet::Publish(x) = &mut m {
            x.props.message_expiry = expiry;
        }
        net.send(p, &m);
    }
    net.advance(Duration::from_secs(6));
    let (_, out) = net.connect(0, 3, c);
    let ps = decode_all(&out, Version::V5);
    let got: Vec<(&[u8], Option<u32>)> = ps[1..]
        .iter()
        .map(|p| match p {
            Packet::Publish(m) => (m.payload, m.props.message_expiry),
            _ => panic!("{p:?}"),
        })
        .collect();
    // What is left of the expiry interval is sent on.
    assert_eq!(got, [(&b"fresh"[..], Some(54)), (&b"ageless"[..], None)]);
    assert_eq!(net.stats().total(|s| s.drops(MqttDrop::Expired)), 1);
}
