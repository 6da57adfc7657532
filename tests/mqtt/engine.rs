//! The in-process engine serving the `mqtt` plugin for [`crate::harness`]:
//! two shards on (up to) two CPUs, the plugin registered next to the
//! built-ins, two ports in range mode (port `i` owned by shard `i`).

use std::sync::Arc;

use ringport::engine::cpus::allowed_cpus;
use ringport::plugin::Registry;
use ringport::protocols::mqtt::auth::{AuthOutcome, AuthRequest, Authenticator};
use ringport::protocols::mqtt::broker::{MqttConfig, MqttFactory, MqttStats};
use ringport::protocols::{builtins, BuiltinSettings};

use crate::common::{server, tcp, test_config, Server};
use crate::harness::Options;

/// Shards, and ports of the `mqtt` listener.
pub const SHARDS: usize = 2;

/// Usernames and passwords held in memory: the broker's mapping of an
/// authenticator's answer to CONNACK codes is what the tests check (the
/// password file of `ringport_tools` is tested where it lives).
#[derive(Debug)]
struct Users(Vec<(String, String)>);

impl Authenticator for Users {
    fn authenticate(&self, req: &AuthRequest<'_>) -> AuthOutcome {
        let Some(user) = req.username else {
            return AuthOutcome::NotAuthorized;
        };
        match self.0.iter().find(|(u, _)| u == user) {
            Some((u, p)) if req.password == Some(p.as_bytes()) => AuthOutcome::Allowed {
                identity: u.clone(),
            },
            _ => AuthOutcome::BadCredentials,
        }
    }
}

/// The broker's configuration for `options`.
pub fn config(options: &Options) -> MqttConfig {
    let mut config = MqttConfig {
        allow_anonymous: options.users.is_empty(),
        ..MqttConfig::default()
    };
    if let Some(max) = options.max_packet_size {
        config.max_packet_size = max;
    }
    if !options.users.is_empty() {
        config.authenticator = Some(Arc::new(Users(options.users.clone())));
    }
    config
}

/// Starts two shards with `mqtt` on two ports configured as `options` say;
/// returns the engine and the plugin's counters.
pub fn start(options: &Options) -> (Server, Arc<MqttStats>) {
    // The built-ins but for an `mqtt` of theirs (once it is one), and this
    // test's `mqtt`.
    let builtins = builtins(&BuiltinSettings::default());
    let mut registry = Registry::new();
    for name in builtins.names().filter(|&n| n != MqttFactory::NAME) {
        let factory = builtins.get(name).expect("a listed name").clone();
        registry.register(factory).expect("distinct names");
    }
    let factory = MqttFactory::new(config(options));
    let stats = factory.stats();
    registry
        .register(Arc::new(factory))
        .expect("no other `mqtt`");
    let mut cpus = allowed_cpus().expect("the CPU affinity");
    cpus.truncate(2);
    let mut config = test_config();
    if let Some(n) = options.engine_mesh_capacity {
        config.mesh_capacity = n;
    }
    let server = server()
        .config(config)
        .shards(SHARDS)
        .cpus(cpus)
        .registry(registry)
        .listen(tcp("mqtt", SHARDS as u16))
        .start();
    (server, stats)
}
