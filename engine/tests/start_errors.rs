//! Start-up failures name what is wrong.

use std::net::TcpListener;
use std::sync::Arc;

use ringport_engine::plan::{Mode, Plan, PlanRequest};
use ringport_engine::{EngineConfig, EngineHandle, StartError};
use ringport_plugin::{Plugin, PluginFactory, Registry, ShardId, Transport};

struct TcpOnly;

struct Nothing;
impl Plugin for Nothing {}

impl PluginFactory for TcpOnly {
    fn name(&self) -> &str {
        "tcponly"
    }
    fn supports(&self, t: Transport) -> bool {
        t == Transport::Tcp
    }
    fn create(&self, _shard: ShardId, _count: usize) -> Box<dyn Plugin> {
        Box::new(Nothing)
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(Arc::new(TcpOnly)).unwrap();
    r
}

fn plan(spec: &str) -> Plan {
    let cpu = ringport_engine::cpus::allowed_cpus().unwrap()[0];
    Plan::build(PlanRequest {
        listeners: vec![spec.parse().unwrap()],
        shards: 1,
        cpus: vec![cpu],
        mode: Mode::Range,
        allow_idle_shards: false,
    })
    .unwrap()
}

#[test]
fn port_in_use_names_port_and_listener() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let spec = format!("tcponly@tcp:127.0.0.1:{port}");
    let err = EngineHandle::start(&plan(&spec), EngineConfig::default(), &registry()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StartError::Bind { .. }), "{msg}");
    assert!(msg.contains(&spec), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("in use"), "{msg}");
}

#[test]
fn unknown_protocol_lists_the_available_ones() {
    let err = EngineHandle::start(
        &plan("nosuch@tcp:127.0.0.1:1"),
        EngineConfig::default(),
        &registry(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "listener `nosuch@tcp:127.0.0.1:1`: no protocol named `nosuch` (available: tcponly)"
    );
}

#[test]
fn unsupported_transport_is_refused() {
    let err = EngineHandle::start(
        &plan("tcponly@udp:127.0.0.1:1"),
        EngineConfig::default(),
        &registry(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "listener `tcponly@udp:127.0.0.1:1`: protocol `tcponly` does not serve udp"
    );
}

#[test]
fn bad_buffer_count_names_the_field() {
    let config = EngineConfig {
        tcp_bufs: 1000,
        ..EngineConfig::default()
    };
    let err =
        EngineHandle::start(&plan("tcponly@tcp:127.0.0.1:1"), config, &registry()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid engine setting: tcp_bufs = 1000 must be a power of two between 1 and 32768 (e.g. 1024)"
    );
}

/// Every setting has a range, and pairs that cannot work together are
/// refused naming both keys; nothing is allocated before.
#[test]
fn settings_out_of_range_or_contradicting_name_their_keys() {
    let cases = [
        (
            EngineConfig {
                udp_send_slots: 100_000_000_000,
                ..EngineConfig::default()
            },
            "invalid engine setting: udp_send_slots = 100000000000 is out of range: use 1 to 65536",
        ),
        (
            EngineConfig {
                udp_send_slots: 32768,
                udp_max_datagram: 65507,
                ..EngineConfig::default()
            },
            "invalid engine setting: udp_send_slots = 32768 x udp_max_datagram = 65507 is 2047 MiB \
             of datagrams in flight per shard, above the 1024 MiB a shard may take: lower one of them",
        ),
        (
            EngineConfig {
                max_outbound: 512 << 20,
                ..EngineConfig::default()
            },
            "invalid engine setting: max_outbound = 536870912 is above max_outbound_per_shard = \
             268435456: one stream could never queue its own cap; raise max_outbound_per_shard or \
             lower max_outbound",
        ),
    ];
    for (config, expected) in cases {
        let plan = ringport_engine::plan::Plan::build(ringport_engine::plan::PlanRequest {
            listeners: vec!["tcponly@tcp:127.0.0.1:1-2".parse().unwrap()],
            shards: 2,
            cpus: vec![0],
            mode: Default::default(),
            allow_idle_shards: false,
        })
        .unwrap();
        let err = EngineHandle::start(&plan, config, &registry()).unwrap_err();
        assert_eq!(err.to_string(), expected);
    }
    // The cross-shard rings grow with shards squared.
    let config = EngineConfig {
        mesh_capacity: 1 << 16,
        ..EngineConfig::default()
    };
    assert_eq!(config.validate_mesh(8), Ok(()));
    let err = config.validate_mesh(64).unwrap_err();
    assert!(
        err.starts_with("shards = 64 with mesh_capacity = 65536 is ")
            && err.ends_with("above 1024 MiB: lower mesh_capacity or run fewer shards"),
        "{err}"
    );
}
