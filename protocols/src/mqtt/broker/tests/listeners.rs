//! Counters per listener: each client's traffic, drops and subscriptions
//! counted under the listener it came through, summed over shards.

use super::*;
use crate::mqtt::broker::{MqttDrop, NO_LISTENER};
use crate::mqtt::codec::Unsubscribe;

#[test]
fn counters_are_kept_per_listener() {
    let mut net = Net::new(2, anon());
    // A subscriber through listener 3 on shard 0.
    let sub = net.open_on(0, 1, 3);
    net.send(sub, &Packet::Connect(v5("sub")));
    net.send(
        sub,
        &subscribe(1, &[("t/#", QoS::AtLeastOnce), ("u", QoS::AtMostOnce)]),
    );
    net.take(sub);
    // A publisher through listener 0 on shard 1.
    let publ = net.open_on(1, 2, 0);
    net.send(publ, &Packet::Connect(v5("pub")));
    for pid in 1..=3 {
        net.send(publ, &publish("t/a", b"x", QoS::AtLeastOnce, pid));
    }
    for _ in 0..2 {
        net.send(publ, &publish("t/b", b"y", QoS::AtMostOnce, 0));
    }
    net.send(publ, &publish("nobody", b"z", QoS::ExactlyOnce, 9));
    // A refused CONNECT through listener 0 (3.1.1: an empty id needs a
    // clean session), and garbage through listener 3.
    let refused = net.open_on(0, 3, 0);
    net.send(
        refused,
        &Packet::Connect(conn_pkt(Version::V311, "", false)),
    );
    let bad = net.open_on(1, 4, 3);
    net.feed(bad, &[0x10, 0x02, 0xFF, 0xFF]);
    assert!(net.closed(refused) && net.closed(bad));

    let stats = net.stats();
    let l0 = stats.listener(0);
    let l3 = stats.listener(3);
    assert_eq!((l0.connected, l3.connected), (1, 1));
    assert_eq!((l0.connects, l0.connects_refused), (1, 1));
    assert_eq!((l3.connects, l3.connects_refused), (1, 1));
    assert_eq!(l0.messages_in, [2, 3, 1]);
    assert_eq!(l0.messages_out, [0, 0, 0]);
    assert_eq!(l3.messages_in, [0, 0, 0]);
    assert_eq!(l3.messages_out, [2, 3, 0]);
    assert_eq!((l0.subscriptions, l3.subscriptions), (0, 2));
    assert_eq!(l0.drops(MqttDrop::ProtocolError), 1);
    assert_eq!(l3.drops(MqttDrop::Malformed), 1);
    assert_eq!(l0.drops.iter().sum::<u64>(), 1);
    assert_eq!(l3.drops.iter().sum::<u64>(), 1);
    // Listeners that served nothing, and the unattributed slot, count nothing.
    assert_eq!(stats.listener(1), Default::default());
    assert_eq!(stats.listener(NO_LISTENER), Default::default());
    // The per-shard view sums the listeners.
    assert_eq!(stats.total(|s| s.messages_in(1)), 3);
    assert_eq!(stats.total(|s| s.connected()), 2);

    // Unsubscribing and leaving take the subscriber's gauges down.
    net.send(
        sub,
        &Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            user_properties: Default::default(),
            filters: vec!["u"],
        }),
    );
    assert_eq!(net.stats().listener(3).subscriptions, 1);
    net.close(sub);
    let l3 = net.stats().listener(3);
    assert_eq!((l3.connected, l3.subscriptions), (0, 0));
    assert_eq!(net.stats().listener(0).connected, 1);
}

#[test]
fn an_offline_session_counts_under_its_last_listener() {
    let mut net = Net::new(1, anon());
    let c = net.open_on(0, 1, 2);
    net.send(
        c,
        &Packet::Connect(Connect {
            props: ConnectProps {
                session_expiry: Some(300),
                ..ConnectProps::default()
            },
            ..v5("keeper")
        }),
    );
    net.send(c, &subscribe(1, &[("a", QoS::AtMostOnce)]));
    net.close(c);
    let p = net.open_on(0, 2, 0);
    net.send(p, &Packet::Connect(v5("p")));
    net.send(p, &publish("a", b"1", QoS::AtMostOnce, 0));
    let stats = net.stats();
    let l2 = stats.listener(2);
    assert_eq!((l2.connected, l2.subscriptions), (0, 1));
    assert_eq!(l2.drops(MqttDrop::OfflineQos0), 1);
    assert_eq!(stats.listener(0).drops(MqttDrop::OfflineQos0), 0);
    // Back through listener 5: the session's subscription moves with it.
    let c = net.open_on(0, 3, 5);
    net.send(
        c,
        &Packet::Connect(Connect {
            clean_start: false,
            props: ConnectProps {
                session_expiry: Some(300),
                ..ConnectProps::default()
            },
            ..v5("keeper")
        }),
    );
    assert_eq!(net.stats().listener(2).subscriptions, 0);
    assert_eq!(net.stats().listener(5).subscriptions, 1);
    assert_eq!(net.stats().listener(5).connected, 1);
}
