//! Packet-level rules a client sees: client identifiers, UNSUBSCRIBE and
//! its codes, keep-alive enforced at one and a half times the interval.

use std::time::{Duration, Instant};

use ringport::protocols::mqtt::codec::{Packet, Unsubscribe, Version};

use crate::client::{Client, Got, Opts};
use crate::harness::Broker;

/// 3.1.1: an empty client id is accepted with a clean session and refused
/// (return code 2) without one. 5.0: an empty id gets one assigned.
fn client_ids(name: &str, v: Version) {
    let broker = Broker::default(name);
    let (c, _) = Client::connected(broker.addr(0), &Opts::new(v, ""));
    c.disconnect();
    let keep = Opts {
        clean_start: false,
        session_expiry: Some(60),
        ..Opts::new(v, "")
    };
    let (mut c, first) = Client::connect(broker.addr(1), &keep);
    match (v, first) {
        (
            Version::V311,
            Some(Got::ConnAck {
                session_present: false,
                code: 2,
                ..
            }),
        ) => assert_eq!(c.until_closed(), vec![], "closed after CONNACK 2"),
        (
            Version::V5,
            Some(Got::ConnAck {
                session_present: false,
                code: 0,
                assigned_client_id: Some(id),
                ..
            }),
        ) if !id.is_empty() => c.disconnect(),
        (_, other) => panic!("an empty client id without a clean session over {v:?}: {other:?}"),
    }
    broker.stop();
}

#[test]
fn client_id_rules_v311() {
    client_ids("client_ids_v311", Version::V311);
}

#[test]
fn client_id_rules_v5() {
    client_ids("client_ids_v5", Version::V5);
}

/// UNSUBSCRIBE is acknowledged with its packet id (5.0: 0x00 for a
/// subscription removed, 0x11 for none), and nothing is delivered after.
fn unsubscribe(name: &str, v: Version) {
    let broker = Broker::default(name);
    let topic = broker.topic("u");
    let id = format!("{}-s", broker.prefix());
    let (mut s, _) = Client::connected(broker.addr(0), &Opts::new(v, &id));
    assert_eq!(s.subscribe(&[(&topic, 1)]), vec![1]);
    let (first, again) = match v {
        Version::V311 => (vec![], vec![]),
        Version::V5 => (vec![0x00], vec![0x11]),
    };
    for (pid, codes) in [(2, first), (3, again)] {
        s.send(&Packet::Unsubscribe(Unsubscribe {
            packet_id: pid,
            user_properties: Default::default(),
            filters: vec![&topic],
        }));
        assert_eq!(s.recv(), Some(Got::UnsubAck(pid, codes)));
    }
    let id = format!("{}-p", broker.prefix());
    let (mut p, _) = Client::connected(broker.addr(1), &Opts::new(v, &id));
    p.publish(&topic, b"after", 1, false, 1);
    // 5.0 may say "no matching subscribers" (0x10).
    assert!(
        matches!(p.recv(), Some(Got::PubAck(1, 0x00 | 0x10))),
        "PUBACK"
    );
    s.send(&Packet::PingReq);
    assert_eq!(
        s.recv(),
        Some(Got::PingResp),
        "nothing delivered after UNSUBSCRIBE"
    );
    broker.stop();
}

#[test]
fn unsubscribe_v311() {
    unsubscribe("unsubscribe_v311", Version::V311);
}

#[test]
fn unsubscribe_v5() {
    unsubscribe("unsubscribe_v5", Version::V5);
}

/// Keep-alive 1 s: a client that stays silent is closed no sooner than
/// 1.5 s after its last packet (5.0: DISCONNECT 0x8D first, where the
/// broker sends one); one that pings every 0.5 s is still served after 3 s.
fn keep_alive(name: &str, v: Version) {
    let broker = Broker::default(name);
    let ids = [0, 1].map(|i| format!("{}-{i}", broker.prefix()));
    let opts = |id| Opts {
        keep_alive: 1,
        ..Opts::new(v, id)
    };
    let (mut silent, _) = Client::connected(broker.addr(0), &opts(&ids[0]));
    let since = Instant::now();
    let (mut pinging, _) = Client::connected(broker.addr(1), &opts(&ids[1]));
    let pinger = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(500));
            pinging.send(&Packet::PingReq);
            assert_eq!(
                pinging.recv(),
                Some(Got::PingResp),
                "after {:?}",
                start.elapsed()
            );
        }
        pinging.disconnect();
    });
    let got = silent.until_closed();
    let after = since.elapsed();
    assert!(
        after >= Duration::from_millis(1400),
        "closed {after:?} after the CONNECT, before 1.5 times the keep-alive"
    );
    let ok = match v {
        Version::V311 => got.is_empty(),
        Version::V5 if broker.is_engine() => got == [Got::Disconnect(0x8D)],
        Version::V5 => got.is_empty() || got == [Got::Disconnect(0x8D)],
    };
    assert!(ok, "before the close: {got:?}");
    pinger.join().expect("the pinging client was served");
    broker.stop();
}

#[test]
fn keep_alive_enforced_v311() {
    keep_alive("keep_alive_v311", Version::V311);
}

#[test]
fn keep_alive_enforced_v5() {
    keep_alive("keep_alive_v5", Version::V5);
}

/// MQTT 3.1.1 has no Receive Maximum: a 3.1.1 publisher that sends 1,000
/// QoS 1 messages without waiting for PUBACKs gets 1,000 PUBACKs, whatever
/// the broker's own in-flight limit for 5.0 clients, and its subscriber on
/// the other shard gets every message. (A 64-message mesh ring makes the
/// engine's acknowledgements wait for room, as a busy shard does.)
#[test]
fn v311_publisher_without_a_window() {
    const N: u16 = 1_000;
    let v = Version::V311;
    let options = crate::harness::Options {
        engine_mesh_capacity: Some(64),
        ..Default::default()
    };
    let broker = Broker::start("v311_window", &options).expect("no configuration needed");
    let topic = broker.topic("burst");
    let id = format!("{}-s", broker.prefix());
    let (mut s, _) = Client::connected(broker.addr(1), &Opts::new(v, &id));
    assert_eq!(s.subscribe(&[(&topic, 1)]), vec![1]);
    let id = format!("{}-p", broker.prefix());
    let (mut p, _) = Client::connected(broker.addr(0), &Opts::new(v, &id));
    for pid in 1..=N {
        p.queue(&crate::client::publish(
            &topic,
            &pid.to_be_bytes(),
            1,
            false,
            pid,
        ));
    }
    p.flush();
    let receiver = std::thread::spawn(move || {
        for pid in 1..=N {
            match s.recv() {
                Some(Got::Publish(m)) => {
                    assert_eq!(m.payload, pid.to_be_bytes(), "message {pid}");
                    s.send(&Packet::PubAck(crate::client::resp(m.packet_id)));
                }
                other => panic!("message {pid}: {other:?}"),
            }
        }
        s
    });
    for pid in 1..=N {
        assert_eq!(p.recv(), Some(Got::PubAck(pid, 0)), "PUBACK {pid} of {N}");
    }
    let s = receiver.join().expect("every message received");
    s.disconnect();
    p.disconnect();
    broker.stop();
}

/// A second CONNECT with the same client id, on the other shard, takes the
/// session over: the first connection gets DISCONNECT 0x8E (5.0, where the
/// broker sends one) and is closed; the second finds the session.
fn takeover(name: &str, v: Version) {
    let broker = Broker::default(name);
    let id = format!("{}-x", broker.prefix());
    let opts = Opts {
        clean_start: false,
        session_expiry: Some(60),
        ..Opts::new(v, &id)
    };
    let (mut first, present) = Client::connected(broker.addr(0), &opts);
    assert!(!present, "a new session");
    let (second, present) = Client::connected(broker.addr(1), &opts);
    assert!(present, "the session moved to the second connection");
    let got = first.until_closed();
    let ok = match v {
        Version::V311 => got.is_empty(),
        Version::V5 if broker.is_engine() => got == [Got::Disconnect(0x8E)],
        Version::V5 => got.is_empty() || got == [Got::Disconnect(0x8E)],
    };
    assert!(ok, "the first connection got {got:?} before its close");
    second.disconnect();
    broker.stop();
}

#[test]
fn takeover_closes_the_first_v311() {
    takeover("takeover_v311", Version::V311);
}

#[test]
fn takeover_closes_the_first_v5() {
    takeover("takeover_v5", Version::V5);
}
