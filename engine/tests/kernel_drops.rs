//! Kernel receive-queue drops are counted exactly, whichever way they are read.
//!
//! A plugin stalls the shard on the first datagram while the test floods a
//! socket whose receive buffer holds only a few datagrams; every datagram sent
//! must then be either received or counted as a kernel drop. The same holds
//! for a flood the allowlist denies, with the shard stalled by a stream.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringport_engine::plan::{Mode, Plan, PlanRequest};
use ringport_engine::{
    BackendChoice, EngineConfig, EngineDrop, EngineHandle, StartError, UdpDropCounter,
};
use ringport_plugin::{
    Context, DatagramInfo, DropReason, Plugin, PluginFactory, Registry, ShardId, Transport,
};

/// Sleeps on the first datagram (holding the shard), then counts silently.
struct Staller {
    stalled: bool,
}

impl Plugin for Staller {
    fn handle_data(
        &mut self,
        _ctx: &mut dyn Context,
        _conn: ringport_plugin::ConnId,
        data: &[u8],
    ) -> Result<usize, DropReason> {
        if !self.stalled {
            self.stalled = true;
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(data.len())
    }

    fn handle_datagram(
        &mut self,
        ctx: &mut dyn Context,
        _from: &DatagramInfo,
        _data: &[u8],
    ) -> Result<(), DropReason> {
        if !self.stalled {
            self.stalled = true;
            std::thread::sleep(Duration::from_millis(300));
        }
        ctx.record_messages(1);
        Ok(())
    }
}

struct StallerFactory;

impl PluginFactory for StallerFactory {
    fn name(&self) -> &str {
        "staller"
    }
    fn supports(&self, _: Transport) -> bool {
        true
    }
    fn create(&self, _shard: ShardId, _count: usize) -> Box<dyn Plugin> {
        Box::new(Staller { stalled: false })
    }
}

fn start(counter: UdpDropCounter, salt: u32) -> (EngineHandle, SocketAddr) {
    let mut registry = Registry::new();
    registry.register(Arc::new(StallerFactory)).unwrap();
    let config = EngineConfig {
        udp_drop_counter: counter,
        udp_rcvbuf: 4096,
        // RINGPORT_BACKEND picks the backend (`.ci/run` runs both).
        backend: BackendChoice::from_env().unwrap().unwrap_or_default(),
        ..EngineConfig::default()
    };
    let cpu = ringport_engine::cpus::allowed_cpus().unwrap()[0];
    for attempt in 0..50u32 {
        let seed = std::process::id()
            .wrapping_mul(7919)
            .wrapping_add(salt * 7_777)
            .wrapping_add(attempt * 104_729);
        let port = 20000 + (seed % 40000) as u16;
        let plan = Plan::build(PlanRequest {
            listeners: vec![format!("staller@udp:127.0.0.1:{port}").parse().unwrap()],
            shards: 1,
            cpus: vec![cpu],
            mode: Mode::Range,
            allow_idle_shards: false,
        })
        .unwrap();
        match EngineHandle::start(&plan, config.clone(), &registry) {
            Ok(h) => return (h, SocketAddr::from(([127, 0, 0, 1], port))),
            Err(StartError::Bind { .. }) => continue,
            Err(e) => panic!("engine did not start: {e}"),
        }
    }
    panic!("no free port found");
}

fn flood_and_count(counter: UdpDropCounter) {
    let (engine, addr) = start(counter, counter as u32);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"first", addr).unwrap();
    // Let the shard pick up the first datagram and stall in the plugin.
    std::thread::sleep(Duration::from_millis(50));
    const FLOOD: u64 = 2000;
    for i in 0..FLOOD {
        client.send_to(&i.to_be_bytes(), addr).unwrap();
    }
    // SO_RXQ_OVFL reports the count on the next datagram queued after the
    // drops, so one more arrives once the shard has caught up.
    std::thread::sleep(Duration::from_millis(400));
    client.send_to(b"last", addr).unwrap();
    let total = FLOOD + 2;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (received, dropped) = loop {
        let c = &engine.stats()[0].counters;
        let received = c.datagrams_in;
        let dropped = c.engine_drops[EngineDrop::KernelRxQueue as usize];
        if received + dropped >= total || Instant::now() > deadline {
            break (received, dropped);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let finals = engine.shutdown();
    assert!(
        dropped > 0,
        "a 4 KiB receive buffer must overflow ({counter:?})"
    );
    assert_eq!(
        received + dropped,
        total,
        "{counter:?}: every datagram received or counted"
    );
    assert_eq!(finals[0].counters.msgs, received);
}

#[test]
fn kernel_drops_counted_by_polling() {
    flood_and_count(UdpDropCounter::Poll);
}

#[test]
fn kernel_drops_counted_by_cmsg() {
    flood_and_count(UdpDropCounter::Cmsg);
}

/// A flood the allowlist denies never reaches a plugin, and nothing is
/// admitted, yet its kernel drops are counted while the shard runs, not
/// only at shutdown. (They were read only after admitted datagrams, so a
/// denied flood's drops stayed invisible until the engine stopped.)
#[test]
fn kernel_drops_of_a_denied_flood_are_counted_while_running() {
    use ringport_engine::operations::{ListenerOps, Operations};
    use ringport_engine::policy::DenyReason;
    use std::io::Write;

    let mut registry = Registry::new();
    registry.register(Arc::new(StallerFactory)).unwrap();
    let config = EngineConfig {
        udp_rcvbuf: 4096,
        backend: BackendChoice::from_env().unwrap().unwrap_or_default(),
        ..EngineConfig::default()
    };
    // TCP from loopback (the default allowlist); UDP from 127.0.0.1 only.
    let operations = Operations {
        listeners: vec![
            ListenerOps::default(),
            ListenerOps {
                allow: Some(vec!["127.0.0.1/32".parse().unwrap()]),
                ..ListenerOps::default()
            },
        ],
        ..Operations::default()
    };
    let cpu = ringport_engine::cpus::allowed_cpus().unwrap()[0];
    let (engine, port) = (0..50u32)
        .find_map(|attempt| {
            let seed = std::process::id()
                .wrapping_mul(7919)
                .wrapping_add(3 * 7_777)
                .wrapping_add(attempt * 104_729);
            let port = 20000 + (seed % 40000) as u16;
            let plan = Plan::build(PlanRequest {
                listeners: vec![
                    format!("staller@tcp:127.0.0.1:{port}").parse().unwrap(),
                    format!("staller@udp:127.0.0.1:{port}").parse().unwrap(),
                ],
                shards: 1,
                cpus: vec![cpu],
                mode: Mode::Range,
                allow_idle_shards: false,
            })
            .unwrap();
            match EngineHandle::start_with(&plan, config.clone(), &registry, operations.clone()) {
                Ok(h) => Some((h, port)),
                Err(StartError::Bind { .. }) => None,
                Err(e) => panic!("engine did not start: {e}"),
            }
        })
        .expect("a free port");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // A stream's first bytes stall the shard; meanwhile the flood fills
    // the UDP socket's small receive buffer.
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(b"stall").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let denied = UdpSocket::bind("127.0.0.2:0").unwrap();
    const FLOOD: u64 = 2000;
    for i in 0..FLOOD {
        denied.send_to(&i.to_be_bytes(), addr).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let (refused, dropped) = loop {
        let refused = engine.listener_stats()[1].denied[DenyReason::NotAllowed as usize];
        let dropped = engine.stats()[0].counters.engine_drops[EngineDrop::KernelRxQueue as usize];
        if refused + dropped >= FLOOD || Instant::now() > deadline {
            break (refused, dropped);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(dropped > 0, "a 4 KiB receive buffer must overflow");
    assert_eq!(
        refused + dropped,
        FLOOD,
        "every datagram denied or counted as a kernel drop while running"
    );
    let finals = engine.shutdown();
    assert_eq!(finals[0].counters.datagrams_in, 0, "nothing was admitted");
    assert_eq!(
        finals[0].counters.engine_drops[EngineDrop::KernelRxQueue as usize],
        dropped,
        "no drop was left for shutdown to find"
    );
    drop(stream);
}
