//! The cross-shard mesh through running shards: exactly-once, per-pair FIFO,
//! backpressure without loss, and wake-ups of parked shards.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringport_engine::plan::{Mode, Plan, PlanRequest};
use ringport_engine::{BackendChoice, EngineConfig, EngineHandle, MeshWake, StartError};
use ringport_plugin::{
    Bytes, Context, DatagramInfo, DropReason, MeshError, MeshMessage, Plugin, PluginFactory,
    Registry, ShardId, Transport,
};

/// What every shard's plugin saw, shared with the test.
#[derive(Debug, Default)]
struct Shared {
    /// received[to][from] = next expected sequence number (so also the count).
    received: Vec<Vec<u64>>,
    /// Messages that arrived out of order or twice.
    violations: u64,
    /// Sends refused with `Full`, per sender.
    full: Vec<u64>,
    /// Sends accepted, per sender.
    accepted: Vec<u64>,
}

/// Test plugin. A datagram `burst N` makes the shard send N messages to
/// random shards (retrying refusals from a timer); `one T` sends one message
/// to shard T; `flood T N` sends N to shard T in one go, dropping refusals.
struct Sender {
    shard: ShardId,
    shards: usize,
    shared: Arc<Mutex<Shared>>,
    rng: u64,
    /// Next sequence number per target.
    seq: Vec<u64>,
    /// Messages still to send in the current burst, and one refused message.
    left: u64,
    parked: Option<(ShardId, MeshMessage)>,
}

impl Sender {
    fn next_target(&mut self) -> ShardId {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % self.shards as u64) as ShardId
    }

    fn message(&mut self, to: ShardId) -> MeshMessage {
        let seq = self.seq[to];
        self.seq[to] += 1;
        MeshMessage {
            tag: ((self.shard as u64) << 48) | seq,
            payload: Bytes::from_static(b"m"),
        }
    }

    /// Sends until the burst is done or a ring is full (then retries from a timer).
    fn pump(&mut self, ctx: &mut dyn Context) {
        let mut accepted = 0;
        loop {
            let (to, msg) = match self.parked.take() {
                Some(p) => p,
                None if self.left > 0 => {
                    self.left -= 1;
                    let to = self.next_target();
                    (to, self.message(to))
                }
                None => break,
            };
            match ctx.send_to_shard(to, msg) {
                Ok(()) => accepted += 1,
                Err(MeshError::Full(msg)) => {
                    self.parked = Some((to, msg));
                    self.shared.lock().unwrap().full[self.shard] += 1;
                    ctx.set_timer(Duration::from_micros(50), 0);
                    break;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        self.shared.lock().unwrap().accepted[self.shard] += accepted;
    }
}

impl Plugin for Sender {
    fn handle_datagram(
        &mut self,
        ctx: &mut dyn Context,
        _from: &DatagramInfo,
        data: &[u8],
    ) -> Result<(), DropReason> {
        let text = std::str::from_utf8(data).map_err(|_| DropReason::Malformed)?;
        let mut words = text.split(' ');
        match (words.next(), words.next(), words.next()) {
            (Some("burst"), Some(n), None) => {
                self.left += n.parse::<u64>().map_err(|_| DropReason::Malformed)?;
                self.pump(ctx);
            }
            (Some("one"), Some(t), None) => {
                let to = t.parse().map_err(|_| DropReason::Malformed)?;
                let msg = self.message(to);
                ctx.send_to_shard(to, msg).expect("an empty ring accepts");
                self.shared.lock().unwrap().accepted[self.shard] += 1;
            }
            (Some("lat"), Some(us), None) => {
                let us: u64 = us.parse().map_err(|_| DropReason::Malformed)?;
                ctx.record_latency("test_rtt", Duration::from_micros(us));
            }
            (Some("flood"), Some(t), Some(n)) => {
                let to: ShardId = t.parse().map_err(|_| DropReason::Malformed)?;
                let n: u64 = n.parse().map_err(|_| DropReason::Malformed)?;
                let (mut ok, mut full) = (0, 0);
                for _ in 0..n {
                    let msg = self.message(to);
                    match ctx.send_to_shard(to, msg) {
                        Ok(()) => ok += 1,
                        Err(MeshError::Full(_)) => {
                            // Dropped on purpose: give the number back.
                            self.seq[to] -= 1;
                            full += 1;
                        }
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                let mut s = self.shared.lock().unwrap();
                s.accepted[self.shard] += ok;
                s.full[self.shard] += full;
            }
            _ => return Err(DropReason::Malformed),
        }
        Ok(())
    }

    fn handle_message(&mut self, _ctx: &mut dyn Context, from: ShardId, msg: MeshMessage) {
        let origin = (msg.tag >> 48) as usize;
        let seq = msg.tag & 0xffff_ffff_ffff;
        let mut s = self.shared.lock().unwrap();
        let expected = &mut s.received[self.shard][from];
        if origin != from || seq != *expected {
            s.violations += 1;
        } else {
            *expected += 1;
        }
    }

    fn handle_timer(&mut self, ctx: &mut dyn Context, _now: Instant, _token: u64) {
        self.pump(ctx);
    }
}

struct SenderFactory(Arc<Mutex<Shared>>);

impl PluginFactory for SenderFactory {
    fn name(&self) -> &str {
        "meshtest"
    }
    fn supports(&self, t: Transport) -> bool {
        t == Transport::Udp
    }
    fn create(&self, shard: ShardId, shards: usize) -> Box<dyn Plugin> {
        Box::new(Sender {
            shard,
            shards,
            shared: self.0.clone(),
            rng: 0x9e37_79b9_7f4a_7c15 ^ (shard as u64 + 1),
            seq: vec![0; shards],
            left: 0,
            parked: None,
        })
    }
}

struct Harness {
    engine: EngineHandle,
    plan: Plan,
    shared: Arc<Mutex<Shared>>,
    client: UdpSocket,
}

impl Harness {
    /// `shards` shards pinned round-robin on `cpus`, one UDP port each.
    fn start(shards: usize, cpus: Vec<usize>, config: EngineConfig, salt: u32) -> Harness {
        // RINGPORT_BACKEND picks the backend (`.ci/run` runs both).
        let config = EngineConfig {
            backend: BackendChoice::from_env().unwrap().unwrap_or_default(),
            ..config
        };
        let shared = Arc::new(Mutex::new(Shared {
            received: vec![vec![0; shards]; shards],
            violations: 0,
            full: vec![0; shards],
            accepted: vec![0; shards],
        }));
        let mut registry = Registry::new();
        registry
            .register(Arc::new(SenderFactory(shared.clone())))
            .unwrap();
        for attempt in 0..50u32 {
            let seed = std::process::id()
                .wrapping_mul(2_654_435_761)
                .wrapping_add(salt * 9_973)
                .wrapping_add(attempt * 104_729);
            let base = 20000 + (seed % 40000) as u16;
            let last = base + shards as u16 - 1;
            let plan = Plan::build(PlanRequest {
                listeners: vec![format!("meshtest@udp:127.0.0.1:{base}-{last}")
                    .parse()
                    .unwrap()],
                shards,
                cpus: cpus.clone(),
                mode: Mode::Range,
                allow_idle_shards: false,
            })
            .unwrap();
            match EngineHandle::start(&plan, config.clone(), &registry) {
                Ok(engine) => {
                    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
                    return Harness {
                        engine,
                        plan,
                        shared,
                        client,
                    };
                }
                Err(StartError::Bind { .. }) => continue,
                Err(e) => panic!("engine did not start: {e}"),
            }
        }
        panic!("no free ports");
    }

    /// Sends a command to the shard that owns the listener's `shard`-th port.
    fn command(&self, shard: usize, text: &str) {
        let port = self.plan.shards[shard].bindings[0].ports.first;
        self.client
            .send_to(text.as_bytes(), SocketAddr::from(([127, 0, 0, 1], port)))
            .unwrap();
    }

    fn wait_until(&self, what: &str, mut done: impl FnMut(&Shared) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if done(&self.shared.lock().unwrap()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.shared.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn cpus() -> Vec<usize> {
    ringport_engine::cpus::allowed_cpus().unwrap()
}

#[test]
fn million_messages_across_four_shards_exactly_once_in_order() {
    let config = EngineConfig {
        mesh_capacity: 256,
        ..EngineConfig::default()
    };
    let h = Harness::start(4, cpus(), config, 1);
    const PER_SHARD: u64 = 250_000;
    for shard in 0..4 {
        h.command(shard, &format!("burst {PER_SHARD}"));
    }
    h.wait_until("all deliveries", |s| {
        s.received.iter().flatten().sum::<u64>() == 4 * PER_SHARD
    });
    // Every handoff lands in the engine's mesh latency histogram (published
    // at the end of each receiving turn).
    let timed = || -> u64 {
        h.engine
            .latencies()
            .iter()
            .flatten()
            .filter(|(name, _)| *name == "mesh_handoff")
            .map(|(_, hist)| hist.count)
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while timed() < 4 * PER_SHARD && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(timed(), 4 * PER_SHARD);
    let finals = h.engine.shutdown();
    let s = h.shared.lock().unwrap();
    assert_eq!(s.violations, 0, "out of order or duplicated");
    assert_eq!(s.accepted.iter().sum::<u64>(), 4 * PER_SHARD);
    let sent: u64 = finals.iter().map(|f| f.counters.mesh_out).sum();
    let got: u64 = finals.iter().map(|f| f.counters.mesh_in).sum();
    assert_eq!((sent, got), (4 * PER_SHARD, 4 * PER_SHARD));
}

#[test]
fn full_ring_reports_full_and_loses_nothing_accepted() {
    let cpu = cpus()[0];
    let config = EngineConfig {
        mesh_capacity: 16,
        ..EngineConfig::default()
    };
    // Both shards on one CPU: the receiver cannot drain while the sender floods.
    let h = Harness::start(2, vec![cpu], config, 2);
    h.command(0, "flood 1 10000");
    h.wait_until("the flood", |s| s.accepted[0] + s.full[0] == 10_000);
    let (accepted, full) = {
        let s = h.shared.lock().unwrap();
        (s.accepted[0], s.full[0])
    };
    assert!(full > 0, "a 16-slot ring must fill");
    h.wait_until("delivery of every accepted message", |s| {
        s.received[1][0] == accepted
    });
    let finals = h.engine.shutdown();
    assert_eq!(h.shared.lock().unwrap().violations, 0);
    assert_eq!(finals[0].counters.mesh_full, full);
    assert_eq!(finals[1].counters.mesh_in, accepted);
}

fn parked_shard_wakes(wake: MeshWake, salt: u32) {
    let c = cpus();
    let config = EngineConfig {
        mesh_wake: wake,
        ..EngineConfig::default()
    };
    let h = Harness::start(2, vec![c[0], *c.last().unwrap()], config, salt);
    // Let shard 1 go idle and park (it has no timers: only a wake-up can rouse it).
    std::thread::sleep(Duration::from_millis(100));
    h.command(0, "one 1");
    h.wait_until("the single message", |s| s.received[1][0] == 1);
    let finals = h.engine.shutdown();
    assert_eq!(
        finals[0].counters.mesh_wakes, 1,
        "exactly one wake for one message to a parked shard"
    );
    assert_eq!(finals[1].counters.mesh_in, 1);
}

#[test]
fn parked_shard_wakes_for_one_message_via_msg_ring() {
    parked_shard_wakes(MeshWake::MsgRing, 3);
}

#[test]
fn parked_shard_wakes_for_one_message_via_eventfd() {
    parked_shard_wakes(MeshWake::Eventfd, 4);
}

#[test]
fn plugin_latencies_land_in_the_shard_histogram() {
    let h = Harness::start(2, cpus(), EngineConfig::default(), 5);
    for us in [3, 4, 100, 3_000_000] {
        h.command(1, &format!("lat {us}"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let hist = loop {
        let lat = h.engine.latencies();
        if let Some((_, hist)) = lat[1].iter().find(|(n, _)| *n == "test_rtt") {
            if hist.count == 4 {
                break *hist;
            }
        }
        assert!(
            Instant::now() < deadline,
            "latencies not published: {lat:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut expected = [0u64; ringport_engine::latency::BUCKETS];
    expected[2] = 2; // 3 and 4 us: the 4 us bucket
    expected[7] = 1; // 100 us: the 128 us bucket
    expected[ringport_engine::latency::BUCKETS - 1] = 1; // 3 s: overflow
    assert_eq!(hist.buckets, expected);
    assert_eq!(hist.sum_ns, 3_000_107_000);
    assert!(
        h.engine.latencies()[0].is_empty(),
        "shard 0 recorded nothing"
    );
    h.engine.shutdown();
}
