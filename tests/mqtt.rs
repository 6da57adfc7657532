//! The `mqtt` plugin with real clients: `mosquitto_sub`/`mosquitto_pub`
//! over MQTT 3.1.1 and 5.0, paho-mqtt (Python) for sessions, wills and
//! takeovers, raw packets for what a client must not do, and a Rust client
//! on the plugin's own codec for 100,000 QoS 1 messages across shards.
//!
//! The broker is an in-process engine with two shards (publishers and
//! subscribers on different shards' ports), or what `MQTT_TEST_BROKER` names
//! (`mosquitto`: one Mosquitto per test, how the tests themselves are checked
//! against a reference broker; `HOST:PORT`: a running broker); see
//! `tests/mqtt/harness.rs`.
//!
//! Needs `mosquitto_sub`/`mosquitto_pub` (Debian package `mosquitto-clients`)
//! and `python3` with paho-mqtt (`pip install paho-mqtt`); without them,
//! outside CI, a test prints one `skipped: install ...` line and passes;
//! under CI (`CI=true`) it fails.

#[path = "mqtt/client.rs"]
mod client;
#[path = "mqtt/clients.rs"]
mod clients;
mod common;
#[path = "mqtt/engine.rs"]
mod engine;
#[path = "mqtt/harness.rs"]
mod harness;
#[path = "mqtt/negative.rs"]
mod negative;
#[path = "mqtt/paho.rs"]
mod paho;
#[path = "mqtt/scale.rs"]
mod scale;
#[path = "mqtt/sessions.rs"]
mod sessions;

use clients::{publish, publish_args, Msg, Sub, V};
use harness::Broker;

// ---------------------------------------------------------------------------
// mosquitto_sub / mosquitto_pub

/// 100 messages at each QoS from a publisher on shard 1 reach a subscriber
/// on shard 0 exactly once, in order, at the QoS they were published with.
fn clients_qos(name: &str, v: V) {
    let Some((sub_bin, pub_bin)) = clients::programs() else {
        return;
    };
    let broker = Broker::default(name);
    for qos in 0..=2u8 {
        let topic = broker.topic(&format!("q{qos}"));
        let mut sub = Sub::start(&sub_bin, broker.addr(0), v, 2, &[&topic], &[]);
        let mut payloads: Vec<String> = (0..100).map(|i| format!("q{qos}-{i}")).collect();
        payloads.push("end".into());
        publish(&pub_bin, broker.addr(1), v, qos, &topic, &payloads, &[]);
        let got = sub.until("end");
        let want: Vec<Msg> = payloads[..100]
            .iter()
            .map(|p| Msg::new(&topic, qos, false, p))
            .collect();
        assert_eq!(got, want, "QoS {qos} over {v:?}");
    }
    broker.stop();
}

#[test]
fn clients_qos_v311() {
    clients_qos("clients_qos_v311", V::V311);
}

#[test]
fn clients_qos_v5() {
    clients_qos("clients_qos_v5", V::V5);
}

/// A retained message reaches a later subscriber with RETAIN set (and a
/// live one without); an empty retained publish clears it, so the next
/// subscriber gets only another topic's retained message.
fn clients_retained(name: &str, v: V) {
    let Some((sub_bin, pub_bin)) = clients::programs() else {
        return;
    };
    let broker = Broker::default(name);
    let kept = broker.topic("kept");
    let other = broker.topic("other");
    let end = broker.topic("end");
    let q1 = ["-q", "1"];
    publish_args(
        &pub_bin,
        broker.addr(1),
        v,
        &[&q1[..], &["-t", &kept, "-r", "-m", "state-1"]].concat(),
    );
    publish_args(
        &pub_bin,
        broker.addr(1),
        v,
        &[&q1[..], &["-t", &kept, "-r", "-m", "state-2"]].concat(),
    );
    publish_args(
        &pub_bin,
        broker.addr(0),
        v,
        &[&q1[..], &["-t", &other, "-r", "-m", "other-1"]].concat(),
    );

    // A later subscriber: the last retained value, flagged, then live ones.
    let mut sub = Sub::start(&sub_bin, broker.addr(0), v, 1, &[&kept, &end], &[]);
    publish_args(
        &pub_bin,
        broker.addr(1),
        v,
        &["-q", "1", "-t", &kept, "-m", "live"],
    );
    publish_args(
        &pub_bin,
        broker.addr(1),
        v,
        &["-q", "1", "-t", &end, "-m", "end"],
    );
    assert_eq!(
        sub.until("end"),
        vec![
            Msg::new(&kept, 1, true, "state-2"),
            Msg::new(&kept, 1, false, "live")
        ],
        "over {v:?}:\n{}",
        sub.log()
    );
    drop(sub);

    // Cleared by an empty retained message (which is not retained itself).
    publish_args(
        &pub_bin,
        broker.addr(1),
        v,
        &["-q", "1", "-t", &kept, "-r", "-n"],
    );
    let filter = broker.topic("#");
    let mut sub = Sub::start(&sub_bin, broker.addr(1), v, 1, &[&filter], &[]);
    publish_args(
        &pub_bin,
        broker.addr(0),
        v,
        &["-q", "1", "-t", &end, "-m", "end"],
    );
    assert_eq!(
        sub.until("end"),
        vec![Msg::new(&other, 1, true, "other-1")],
        "over {v:?}:\n{}",
        sub.log()
    );
    broker.stop();
}

#[test]
fn clients_retained_v311() {
    clients_retained("clients_retained_v311", V::V311);
}

#[test]
fn clients_retained_v5() {
    clients_retained("clients_retained_v5", V::V5);
}

/// `+` and `#` filters, each subscriber getting exactly the topics its
/// filter matches: `#` matches its parent level, `+` exactly one level.
fn clients_wildcards(name: &str, v: V) {
    let Some((sub_bin, pub_bin)) = clients::programs() else {
        return;
    };
    let broker = Broker::default(name);
    let p = broker.prefix().to_owned();
    let t = |s: &str| broker.topic(s);
    let end = t("end");
    let filters = [
        format!("{p}/+/x"),
        format!("{p}/#"),
        format!("{p}/a/#"),
        format!("{p}/+"),
        "+/a".to_owned(),
        format!("{p}/+/x/#"),
        format!("{p}/a/+/z"),
    ];
    let mut subs: Vec<Sub> = filters
        .iter()
        .enumerate()
        .map(|(i, f)| Sub::start(&sub_bin, broker.addr(i), v, 1, &[f, &end], &[]))
        .collect();
    let topics = [
        p.clone(),
        t("a"),
        t("a/x"),
        t("b/x"),
        t("a/y"),
        t("a/x/z"),
        t("a/y/z"),
        t("x"),
    ];
    for (i, topic) in topics.iter().enumerate() {
        publish(
            &pub_bin,
            broker.addr(i),
            v,
            1,
            topic,
            &[format!("m-{i}")],
            &[],
        );
    }
    publish(&pub_bin, broker.addr(0), v, 1, &end, &["end".into()], &[]);
    let want: [&[usize]; 7] = [
        &[2, 3],                   // p/+/x
        &[0, 1, 2, 3, 4, 5, 6, 7], // p/#: p itself too
        &[1, 2, 4, 5, 6],          // p/a/#: p/a too
        &[1, 7],                   // p/+
        &[1],                      // +/a
        &[2, 3, 5],                // p/+/x/#
        &[5, 6],                   // p/a/+/z
    ];
    for ((sub, filter), want) in subs.iter_mut().zip(&filters).zip(want) {
        let mut got = sub.until("end");
        // Another test's traffic on an external broker is not ours.
        got.retain(|m| m.topic == p || m.topic.starts_with(&format!("{p}/")));
        got.sort();
        let mut want: Vec<Msg> = want
            .iter()
            .map(|&i| Msg::new(&topics[i], 1, false, &format!("m-{i}")))
            .collect();
        want.sort();
        assert_eq!(got, want, "filter {filter} over {v:?}:\n{}", sub.log());
    }
    drop(subs);
    broker.stop();
}

#[test]
fn clients_wildcards_v311() {
    clients_wildcards("clients_wildcards_v311", V::V311);
}

#[test]
fn clients_wildcards_v5() {
    clients_wildcards("clients_wildcards_v5", V::V5);
}

/// A topic starting with `$` is not matched by `#` or by `+` in its first
/// level, and is matched by a filter naming that level.
fn clients_dollar(name: &str, v: V) {
    let Some((sub_bin, pub_bin)) = clients::programs() else {
        return;
    };
    let broker = Broker::default(name);
    let p = broker.prefix().to_owned();
    let dollar = format!("${p}/x");
    let plain = broker.topic("x");
    let end = broker.topic("end");
    let dollar_end = format!("${p}/end");
    let mut all = Sub::start(&sub_bin, broker.addr(0), v, 1, &["#"], &[]);
    let mut plus = Sub::start(&sub_bin, broker.addr(1), v, 1, &["+/x", "+/end"], &[]);
    let mut named = Sub::start(&sub_bin, broker.addr(0), v, 1, &[&format!("${p}/#")], &[]);
    publish(
        &pub_bin,
        broker.addr(1),
        v,
        1,
        &dollar,
        &["to-dollar".into()],
        &[],
    );
    publish(
        &pub_bin,
        broker.addr(1),
        v,
        1,
        &plain,
        &["to-plain".into()],
        &[],
    );
    publish(
        &pub_bin,
        broker.addr(0),
        v,
        1,
        &dollar_end,
        &["end".into()],
        &[],
    );
    publish(&pub_bin, broker.addr(0), v, 1, &end, &["end".into()], &[]);
    let ours = |mut got: Vec<Msg>| {
        got.retain(|m| m.topic.contains(&p));
        got
    };
    assert_eq!(
        ours(named.until("end")),
        vec![Msg::new(&dollar, 1, false, "to-dollar")],
        "${p}/# over {v:?}:\n{}",
        named.log()
    );
    assert_eq!(
        ours(all.until("end")),
        vec![Msg::new(&plain, 1, false, "to-plain")],
        "# over {v:?}:\n{}",
        all.log()
    );
    assert_eq!(
        ours(plus.until("end")),
        vec![Msg::new(&plain, 1, false, "to-plain")],
        "+/x over {v:?}:\n{}",
        plus.log()
    );
    broker.stop();
}

#[test]
fn clients_dollar_topics_v311() {
    clients_dollar("clients_dollar_topics_v311", V::V311);
}

#[test]
fn clients_dollar_topics_v5() {
    clients_dollar("clients_dollar_topics_v5", V::V5);
}

// ---------------------------------------------------------------------------
// paho-mqtt

/// Runs paho scenario `scenario` over `v` on a broker of its own.
fn paho_scenario(name: &str, scenario: &str, v: V) {
    let Some(python) = paho::python() else {
        return;
    };
    let broker = Broker::default(name);
    paho::run(&python, &broker, scenario, v);
    broker.stop();
}

macro_rules! paho_tests {
    ($($name:ident: $scenario:literal, $v:expr;)*) => {$(
        #[test]
        fn $name() {
            paho_scenario(stringify!($name), $scenario, $v);
        }
    )*};
}

paho_tests! {
    paho_session_qos1_v311: "session-q1", V::V311;
    paho_session_qos1_v5: "session-q1", V::V5;
    paho_session_qos2_v311: "session-q2", V::V311;
    paho_session_qos2_v5: "session-q2", V::V5;
    paho_will_v311: "will", V::V311;
    paho_will_v5: "will", V::V5;
    paho_will_delay_v5: "will-delay", V::V5;
    paho_retained_v311: "retained", V::V311;
    paho_retained_v5: "retained", V::V5;
    paho_takeover_v311: "takeover", V::V311;
    paho_takeover_v5: "takeover", V::V5;
}
