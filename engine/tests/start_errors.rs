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
