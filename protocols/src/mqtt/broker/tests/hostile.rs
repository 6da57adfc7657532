//! Hostile and random input never panics a shard, and what the broker
//! holds stays within its limits.

use rand::rngs::StdRng;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use super::*;
use crate::mqtt::codec::{Disconnect, SubOptions, Unsubscribe};

const TOPICS: [&str; 6] = ["a", "a/b", "a/+", "#", "$share/g/a/#", "$SYS/x"];

/// A random, mostly well-formed client packet.
fn random_packet(rng: &mut StdRng) -> Packet<'static> {
    let topic = TOPICS[rng.gen_range(0..TOPICS.len())];
    let qos = QoS::from_u8(rng.gen_range(0..3)).unwrap();
    let pid = rng.gen_range(1..6);
    match rng.gen_range(0..9) {
        0..=2 => {
            let name = if topic.contains(['+', '#']) {
                "a/b"
            } else {
                topic
            };
            let mut p = publish(
                name,
                b"payload",
                qos,
                if qos == QoS::AtMostOnce { 0 } else { pid },
            );
            if let Packet::Publish(x) = &mut p {
                x.retain = rng.gen_bool(0.2);
                x.dup = rng.gen_bool(0.1);
                if rng.gen_bool(0.2) {
                    x.props.topic_alias = Some(rng.gen_range(1..4));
                    if rng.gen_bool(0.5) {
                        x.topic = "";
                    }
                }
                if rng.gen_bool(0.1) {
                    x.props.message_expiry = Some(rng.gen_range(1..5));
                }
            }
            p
        }
        3 => {
            let mut o = SubOptions::qos(qos);
            o.retain_handling = rng.gen_range(0..3);
            o.retain_as_published = rng.gen_bool(0.5);
            Packet::Subscribe(Subscribe {
                packet_id: pid,
                subscription_id: None,
                user_properties: Default::default(),
                filters: vec![(topic, o)],
            })
        }
        4 => Packet::Unsubscribe(Unsubscribe {
            packet_id: pid,
            user_properties: Default::default(),
            filters: vec![topic],
        }),
        5 => ack(rng.gen_range(4..8), pid),
        6 => Packet::PingReq,
        7 => Packet::Disconnect(Disconnect::default()),
        _ => Packet::Connect(v5("again")),
    }
}

#[test]
fn random_sessions_on_three_shards() {
    for seed in 0..300u64 {
        let cfg = MqttConfig {
            max_queued_messages: 4,
            receive_maximum: 3,
            max_retained: 2,
            ..anon()
        };
        run(seed, cfg);
    }
}

#[test]
fn zero_limits_refuse_without_panicking() {
    for seed in 0..20u64 {
        let cfg = MqttConfig {
            max_packet_size: 0,
            receive_maximum: 0,
            max_queued_messages: 0,
            max_queued_bytes: 0,
            max_subscriptions_per_client: 0,
            max_topic_len: 0,
            max_topic_levels: 0,
            max_retained: 0,
            max_session_expiry: 0,
            max_keep_alive: 0,
            topic_alias_maximum: 0,
            max_client_id_len: 0,
            mesh_retry_bytes: 0,
            mesh_reliable_bytes: 0,
            retry_interval: Duration::ZERO,
            connect_timeout: Duration::MAX,
            status_interval: Duration::MAX,
            status_max_clients: 0,
            ..anon()
        };
        run(seed, cfg);
    }
}

fn run(seed: u64, cfg: MqttConfig) {
    let max_queued = cfg.max_queued_messages;
    let window = usize::from(cfg.receive_maximum.max(1));
    let max_retained = cfg.max_retained;
    {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut net = Net::new(3, cfg);
        let ids = ["c0", "c1", "c2", "c3"];
        let mut conns: Vec<ConnId> = Vec::new();
        let mut raw = 1;
        for step in 0..300 {
            match rng.gen_range(0..20) {
                0 | 1 => {
                    let id = ids[rng.gen_range(0..ids.len())];
                    let v = if rng.gen_bool(0.5) {
                        Version::V5
                    } else {
                        Version::V311
                    };
                    let mut c = conn_pkt(v, id, rng.gen_bool(0.5));
                    c.props.session_expiry = Some(rng.gen_range(0..3) * 10);
                    c.props.receive_maximum = Some(rng.gen_range(1..4));
                    c.props.topic_alias_maximum = Some(rng.gen_range(0..3));
                    if rng.gen_bool(0.3) {
                        c.will = Some(crate::mqtt::codec::Will {
                            topic: "a/b",
                            payload: b"will",
                            qos: QoS::from_u8(rng.gen_range(0..3)).unwrap(),
                            retain: rng.gen_bool(0.3),
                            props: crate::mqtt::codec::WillProps {
                                delay_interval: Some(rng.gen_range(0..4)),
                                ..Default::default()
                            },
                        });
                    }
                    let (conn, _) = net.connect(rng.gen_range(0..3), raw, c);
                    raw += 1;
                    conns.push(conn);
                }
                2 if !conns.is_empty() => {
                    let c = conns.swap_remove(rng.gen_range(0..conns.len()));
                    net.close(c);
                }
                3 => net.ctxs[rng.gen_range(0..3)].set_mesh_full(rng.gen_bool(0.3)),
                4 => net.advance(std::time::Duration::from_secs(rng.gen_range(0..8))),
                5 => net.retry(),
                6 if !conns.is_empty() => {
                    // Garbage bytes.
                    let c = conns[rng.gen_range(0..conns.len())];
                    let junk: Vec<u8> = (0..rng.gen_range(1..12)).map(|_| rng.gen()).collect();
                    net.feed(c, &junk);
                }
                _ if !conns.is_empty() => {
                    let c = conns[rng.gen_range(0..conns.len())];
                    let p = random_packet(&mut rng);
                    net.send(c, &p);
                }
                _ => {}
            }
            if step % 50 == 0 {
                for s in 0..3 {
                    net.ctxs[s].clear();
                }
                net.seen.iter_mut().for_each(|x| *x = 0);
            }
        }
        for s in 0..3 {
            net.ctxs[s].set_mesh_full(false);
        }
        net.retry();
        for sh in &net.shards {
            assert!(sh.retained_count() <= max_retained, "seed {seed}");
            for s in sh.sessions.values() {
                assert!(s.flow.queue.len() <= max_queued, "seed {seed}");
                assert!(s.flow.inflight.len() <= window, "seed {seed}");
            }
            // A client id has at most one session across the shards.
        }
        for sh in &net.shards {
            assert!(
                sh.awaiting.is_empty() && sh.forward.is_empty(),
                "seed {seed}"
            );
            assert_eq!(sh.mesh.waiting(), 0, "seed {seed}");
        }
        // The home shard's directory names the shard holding each session.
        for (i, sh) in net.shards.iter().enumerate() {
            for s in sh.sessions.values() {
                let home = ringport_plugin::shard_for_key(s.client_id.as_bytes(), 3);
                let entry = net.shards[home].ids.home(&s.client_id);
                assert_eq!(
                    entry.map(|e| e.shard),
                    Some(i),
                    "seed {seed}: {}",
                    s.client_id
                );
            }
        }
        let mut held: Vec<&str> = net
            .shards
            .iter()
            .flat_map(|sh| sh.sessions.values().map(|s| &*s.client_id))
            .collect();
        held.sort_unstable();
        let n = held.len();
        held.dedup();
        assert_eq!(held.len(), n, "seed {seed}: {held:?}");
    }
}
