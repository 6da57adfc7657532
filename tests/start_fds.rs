//! Every way start-up can fail after sockets were bound leaves no
//! descriptor behind: sockets, eventfds and rings are owned values closed
//! as they drop, not numbers closed by hand on each path. Descriptors are
//! process-wide, so this file holds this one test, alone in its process.

mod common;

use std::net::TcpListener;
use std::sync::Arc;

use ringport::engine::plan::{Plan, PlanRequest};
use ringport::engine::{EngineHandle, StartError};
use ringport::plugin::{Plugin, PluginFactory, ShardId, Transport};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A factory whose plugins cannot be made.
struct Dud;

impl PluginFactory for Dud {
    fn name(&self) -> &str {
        "dud"
    }
    fn supports(&self, _: Transport) -> bool {
        true
    }
    fn create(&self, _: ShardId, _: usize) -> Box<dyn Plugin> {
        panic!("no plugin today")
    }
}

fn plan(listeners: &[String], cpus: Vec<usize>, shards: usize) -> Plan {
    Plan::build(PlanRequest {
        listeners: listeners.iter().map(|l| l.parse().unwrap()).collect(),
        shards,
        cpus,
        mode: Default::default(),
        allow_idle_shards: false,
    })
    .unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn start_failures_leave_no_descriptor_behind() {
    let cpu = ringport::engine::cpus::allowed_cpus().unwrap()[0];
    let mut registry = ringport::protocols::builtins(&Default::default());
    registry.register(Arc::new(Dud)).unwrap();
    let config = common::test_config();
    let before = open_fds();

    // The second listener's port is taken: the first's sockets were bound.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let p = plan(
        &[
            format!("echo@udp:127.0.0.1:{}", free_port()),
            format!("echo@tcp:127.0.0.1:{port}"),
        ],
        vec![cpu],
        1,
    );
    let e = EngineHandle::start(&p, config.clone(), &registry).unwrap_err();
    assert!(matches!(e, StartError::Bind { .. }), "{e}");
    drop(taken);
    assert_eq!(open_fds(), before, "after a bind failure");

    // A shard cannot pin to its CPU (no such CPU here): its sockets and
    // eventfd were made.
    let p = plan(
        &[format!("echo@tcp:127.0.0.1:{}", free_port())],
        vec![1000],
        1,
    );
    let e = EngineHandle::start(&p, config.clone(), &registry).unwrap_err();
    assert!(matches!(e, StartError::Pin { .. }), "{e}");
    assert_eq!(open_fds(), before, "after a pin failure");
    // A CPU number no affinity mask holds is refused before anything.
    let p = plan(
        &[format!("echo@tcp:127.0.0.1:{}", free_port())],
        vec![4095],
        1,
    );
    let e = EngineHandle::start(&p, config.clone(), &registry).unwrap_err();
    assert_eq!(
        e.to_string(),
        "shard 0: cannot pin to CPU 4095 (not in this process's allowed CPUs?)"
    );
    assert_eq!(open_fds(), before);

    // A plugin factory panics on the shard's thread after pinning.
    let p = plan(
        &[
            format!("dud@tcp:127.0.0.1:{}", free_port()),
            format!("dud@udp:127.0.0.1:{}", free_port()),
        ],
        vec![cpu],
        1,
    );
    let e = EngineHandle::start(&p, config, &registry).unwrap_err();
    assert!(e.to_string().contains("no plugin today"), "{e}");
    assert_eq!(open_fds(), before, "after a plugin factory's panic");
}
