//! 100,000 QoS 1 messages from four publishers on both shards to one
//! subscriber: exactly 100,000 received, in order per publisher.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringport::protocols::mqtt::codec::{self, Packet, Version};

use crate::client::{publish, resp, Client, Got, Opts};
use crate::harness::Broker;

const PUBLISHERS: usize = 4;
const PER_PUBLISHER: u32 = 25_000;
const TOTAL: u64 = PUBLISHERS as u64 * PER_PUBLISHER as u64;
/// Messages published and not yet received, over all publishers: keeps the
/// broker's queue for the subscriber short, so that a broker's bound on it
/// (which the test does not exercise) is not what is measured.
const AHEAD: u64 = 500;
/// Packets in flight per publisher (lowered to the broker's Receive Maximum).
const WINDOW: u16 = 64;
const DEADLINE: Duration = Duration::from_secs(60);

/// Payload: publisher and sequence number, 8 bytes.
fn payload(publisher: u32, seq: u32) -> [u8; 8] {
    let mut p = [0; 8];
    p[..4].copy_from_slice(&publisher.to_be_bytes());
    p[4..].copy_from_slice(&seq.to_be_bytes());
    p
}

#[test]
fn qos1_100k_across_shards_in_order() {
    let broker = Broker::default("scale");
    let filter = broker.topic("+");
    let id = format!("{}-sub", broker.prefix());
    let (mut sub, _) = Client::connected(broker.addr(0), &Opts::new(Version::V5, &id));
    assert_eq!(sub.subscribe(&[(&filter, 1)]), vec![1]);
    sub.set_read_timeout(Duration::from_millis(200));
    let received = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicU64::new(0));
    let start = Instant::now();

    let mut publishers: Vec<_> = (0..PUBLISHERS)
        .map(|i| {
            // Ports 0 and 1: two publishers per shard; both versions.
            let addr = broker.addr(i);
            let v = if i % 2 == 0 {
                Version::V311
            } else {
                Version::V5
            };
            let topic = broker.topic(&format!("p{i}"));
            let id = format!("{}-p{i}", broker.prefix());
            let counts = (published.clone(), received.clone());
            std::thread::spawn(move || publisher(addr, v, &id, &topic, i as u32, &counts, start))
        })
        .collect();

    let mut next = [0u32; PUBLISHERS];
    let mut count = 0u64;
    let mut wrong: Option<String> = None;
    while count < TOTAL {
        assert!(
            start.elapsed() < DEADLINE,
            "{count} of {TOTAL} received in {DEADLINE:?}; next expected per publisher {next:?}"
        );
        let open = sub.batch(|p, out| {
            let Packet::Publish(m) = p else {
                wrong.get_or_insert(format!("{p:?} among the messages"));
                return;
            };
            codec::encode(&Packet::PubAck(resp(m.packet_id)), Version::V5, out).unwrap();
            let (who, seq) = match m.payload {
                [a, b, c, d, e, f, g, h] => (
                    u32::from_be_bytes([*a, *b, *c, *d]) as usize,
                    u32::from_be_bytes([*e, *f, *g, *h]),
                ),
                _ => (usize::MAX, 0),
            };
            if who >= PUBLISHERS || seq != next[who] || m.qos.as_u8() != 1 || m.dup {
                wrong.get_or_insert(format!(
                    "message {count}: publisher {who} seq {seq} qos {:?} dup {} where {next:?} were next",
                    m.qos, m.dup
                ));
            } else {
                next[who] += 1;
            }
            count += 1;
        });
        match open {
            Some(true) => {}
            Some(false) => panic!("the broker closed the subscriber after {count} messages"),
            None => {
                // Nothing for 200 ms: a publisher may have failed.
                if let Some(p) = publishers.iter().position(|p| p.is_finished()) {
                    if let Err(e) = publishers.swap_remove(p).join() {
                        std::panic::resume_unwind(e);
                    }
                }
            }
        }
        if let Some(w) = &wrong {
            panic!("out of order, duplicated or foreign: {w}");
        }
        received.store(count, Ordering::Release);
    }
    for p in publishers {
        p.join().expect("a publisher failed");
    }
    // Nothing more: the next packet is the answer to a PINGREQ.
    sub.send(&Packet::PingReq);
    assert_eq!(sub.recv(), Some(Got::PingResp), "after {TOTAL} messages");
    assert_eq!(next, [PER_PUBLISHER; PUBLISHERS]);
    eprintln!("{TOTAL} QoS 1 messages in {:?}", start.elapsed());
    sub.disconnect();
    broker.stop();
}

fn publisher(
    addr: std::net::SocketAddr,
    v: Version,
    id: &str,
    topic: &str,
    me: u32,
    (published, received): &(Arc<AtomicU64>, Arc<AtomicU64>),
    start: Instant,
) {
    let (mut c, first) = Client::connect(addr, &Opts::new(v, id));
    let window = match first {
        Some(Got::ConnAck {
            code: 0,
            receive_maximum,
            ..
        }) => receive_maximum.unwrap_or(u16::MAX).min(WINDOW),
        other => panic!("publisher {me}: CONNACK {other:?}"),
    };
    let (mut sent, mut acked) = (0u32, 0u32);
    while acked < PER_PUBLISHER {
        assert!(
            start.elapsed() < DEADLINE,
            "publisher {me}: {acked} of {PER_PUBLISHER} acknowledged in {DEADLINE:?}"
        );
        let mut queued = false;
        while sent < PER_PUBLISHER
            && sent - acked < u32::from(window)
            && published
                .load(Ordering::Acquire)
                .saturating_sub(received.load(Ordering::Acquire))
                < AHEAD
        {
            published.fetch_add(1, Ordering::AcqRel);
            let pid = (sent % 65_535) as u16 + 1;
            c.queue(&publish(topic, &payload(me, sent), 1, false, pid));
            sent += 1;
            queued = true;
        }
        if queued {
            c.flush();
        }
        if sent == acked {
            // Held back by AHEAD: the subscriber is behind.
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let mut bad = None;
        let open = c.batch(|p, _| match p {
            Packet::PubAck(r) if r.code.0 == 0 => acked += 1,
            other => bad = Some(format!("{other:?}")),
        });
        assert_eq!(
            open,
            Some(true),
            "publisher {me} ({v:?}, {window} in flight): closed after {acked} acknowledgements"
        );
        assert!(
            bad.is_none(),
            "publisher {me}: {bad:?} where a PUBACK success was due"
        );
    }
    c.disconnect();
}
