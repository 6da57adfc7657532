//! Two `mqtt` listeners of one broker with different traffic: `/metrics`
//! counts each listener's clients, messages by QoS, drops and
//! subscriptions apart (label `listener`, the listener's spec), keeps the
//! retained store broker-wide, and passes `promtool check metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringport::plugin::Registry;
use ringport::protocols::mqtt::broker::{MqttConfig, MqttDrop, MqttFactory, MqttStats};
use ringport::protocols::mqtt::codec::Version;
use ringport::protocols::{builtins, BuiltinSettings};

use crate::client::{Client, Got, Opts};
use crate::common::{server, tcp, test_config};

/// Polls `stats` until `pred` holds (the shard counts after it answered).
fn wait(stats: &MqttStats, what: &str, pred: impl Fn(&MqttStats) -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !pred(stats) {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads PUBLISHes until `n` arrived; returns their QoS.
fn receive(c: &mut Client, n: usize) -> Vec<u8> {
    let mut qos = Vec::new();
    while qos.len() < n {
        match c.recv() {
            Some(Got::Publish(m)) => qos.push(m.qos),
            Some(_) => {}
            None => panic!("closed after {} of {n} messages", qos.len()),
        }
    }
    qos
}

#[test]
fn metrics_count_each_mqtt_listener_apart() {
    let mut registry = Registry::new();
    let others = builtins(&BuiltinSettings::default());
    for name in others.names().filter(|&n| n != MqttFactory::NAME) {
        let factory = others.get(name).expect("a listed name").clone();
        registry.register(factory).expect("distinct names");
    }
    let factory = MqttFactory::new(MqttConfig {
        allow_anonymous: true,
        ..MqttConfig::default()
    });
    let stats = factory.stats();
    registry.register(Arc::new(factory)).expect("one `mqtt`");
    let srv = server()
        .config(test_config())
        .shards(1)
        .registry(registry)
        .listen(tcp("mqtt", 1))
        .listen(tcp("mqtt", 1))
        .start();
    let (a, b) = (srv.addr(0), srv.addr(1));

    // Listener 0: one subscriber to `m/#` at QoS 1, one to `r` at QoS 0.
    let (mut sub, _) = Client::connected(a, &Opts::new(Version::V5, "sub"));
    assert_eq!(sub.subscribe(&[("m/#", 1), ("r", 0)]), [1, 0]);
    // Listener 1: a publisher (4 QoS 0, 2 QoS 1 to the subscriber, 1 QoS 2
    // to nobody, 1 retained QoS 0 to nobody), and a CONNECT refused.
    let (mut publ, _) = Client::connected(b, &Opts::new(Version::V311, "pub"));
    for i in 0..4 {
        publ.publish("m/x", &[i], 0, false, 0);
    }
    for pid in 1..=2 {
        publ.publish("m/y", b"one", 1, false, pid);
        assert_eq!(publ.recv(), Some(Got::PubAck(pid, 0)));
    }
    publ.publish("elsewhere", b"two", 2, false, 3);
    assert_eq!(publ.recv(), Some(Got::PubRec(3, 0)));
    publ.publish("kept", b"r", 0, true, 0);
    let refused = Opts {
        clean_start: false,
        ..Opts::new(Version::V311, "")
    };
    let (mut no, first) = Client::connect(b, &refused);
    assert!(
        matches!(first, Some(Got::ConnAck { code: 2, .. })),
        "{first:?}"
    );
    assert_eq!(no.until_closed(), vec![]);
    let mut got = receive(&mut sub, 6);
    got.sort_unstable();
    assert_eq!(got, [0, 0, 0, 0, 1, 1]);

    wait(&stats, "the counts of both listeners", |s| {
        s.listener(1).connects_refused == 1
            && s.listener(1).messages_in == [5, 2, 1]
            && s.listener(0).messages_out == [4, 2, 0]
            && s.retained() == 1
    });
    let (l0, l1) = (stats.listener(0), stats.listener(1));
    assert_eq!((l0.connected, l1.connected), (1, 1));
    assert_eq!((l0.connects, l0.connects_refused), (1, 0));
    assert_eq!((l1.connects, l1.connects_refused), (1, 1));
    assert_eq!((l0.messages_in, l1.messages_out), ([0, 0, 0], [0, 0, 0]));
    assert_eq!((l0.subscriptions, l1.subscriptions), (2, 0));
    assert_eq!(l0.drops.iter().sum::<u64>(), 0);
    assert_eq!(l1.drops(MqttDrop::ProtocolError), 1);
    assert_eq!(l1.drops.iter().sum::<u64>(), 1);

    let names = [
        (0u16, format!("mqtt@tcp:127.0.0.1:{}", a.port())),
        (1u16, format!("mqtt@tcp:127.0.0.1:{}", b.port())),
    ];
    let mut text = String::new();
    ringport_tools::mqtt::render_metrics(&stats, &names, &mut text);
    let (na, nb) = (&names[0].1, &names[1].1);
    for line in [
        format!("ringport_mqtt_clients_connected{{listener=\"{na}\"}} 1"),
        format!("ringport_mqtt_clients_connected{{listener=\"{nb}\"}} 1"),
        "ringport_mqtt_clients_connected{listener=\"none\"} 0".to_owned(),
        format!("ringport_mqtt_subscriptions{{listener=\"{na}\"}} 2"),
        format!("ringport_mqtt_subscriptions{{listener=\"{nb}\"}} 0"),
        format!("ringport_mqtt_connects_total{{listener=\"{nb}\",result=\"refused\"}} 1"),
        format!("ringport_mqtt_messages_total{{listener=\"{nb}\",direction=\"in\",qos=\"0\"}} 5"),
        format!("ringport_mqtt_messages_total{{listener=\"{nb}\",direction=\"in\",qos=\"2\"}} 1"),
        format!("ringport_mqtt_messages_total{{listener=\"{na}\",direction=\"out\",qos=\"1\"}} 2"),
        format!("ringport_mqtt_messages_total{{listener=\"{na}\",direction=\"in\",qos=\"0\"}} 0"),
        format!("ringport_mqtt_drops_total{{listener=\"{nb}\",reason=\"protocol_error\"}} 1"),
        format!("ringport_mqtt_drops_total{{listener=\"{na}\",reason=\"protocol_error\"}} 0"),
        "ringport_mqtt_retained_messages 1".to_owned(),
        "ringport_mqtt_sessions 2".to_owned(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "`{line}` missing from:\n{text}"
        );
    }
    ringport_tools::testing::promtool_check(&text);

    let status = ringport_tools::mqtt::status_json(&stats, &names);
    assert_eq!(status["listeners"][1]["listener"], nb.as_str());
    assert_eq!(
        status["listeners"][1]["messages_in"],
        serde_json::json!([5, 2, 1])
    );
    assert_eq!(status["listeners"][1]["drops"]["protocol_error"], 1);
    assert_eq!(status["listeners"][0]["clients_connected"], 1);
    assert_eq!(status["listeners"][2]["listener"], "none");
    assert_eq!(status["retained"], 1);
    sub.disconnect();
    publ.disconnect();
}
