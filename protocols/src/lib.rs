//! ringport's built-in protocols, as sans-IO plugins.
//!
//! Each protocol here is a state machine over byte slices: the engine hands a
//! plugin the bytes of a stream or a datagram together with a
//! [`Context`](ringport_plugin::Context), and the plugin answers through that
//! context. Nothing in this crate opens a socket or reads a clock, and the
//! plugins do not allocate per message; the crate depends on `ringport-plugin` and on no I/O crate
//! (no `libc`, no `io-uring`), so the Cargo graph keeps it that way.
//!
//! Protocols come in two layers:
//!
//! * a wire format, parsed with a zero-copy view over the received bytes and
//!   written from a small representation of the meaningful fields (for
//!   example [`sockperf::wire`]);
//! * a plugin and its factory, which apply the protocol's rules to whole
//!   frames and decide what to send back, what to count, and when a peer is
//!   broken enough to be disconnected.
//!
//! [`builtins`] registers every built-in under its listener-spec name:
//!
//! | name       | transports | what it does                                      |
//! |------------|------------|---------------------------------------------------|
//! | `echo`     | tcp, udp   | sends every byte back ([`echo`])                  |
//! | `sockperf` | tcp, udp   | answers `sockperf` ping-pong messages ([`sockperf`]) |
//! | `relay`    | tcp, udp   | topic publish/subscribe across shards ([`relay`]) |
//! | `mqtt`     | tcp        | an MQTT 3.1.1 and 5.0 broker ([`mqtt`])           |
//!
//! [`nats`] is not a plugin but the client side of the NATS protocol, as a
//! state machine the NATS bridge drives over an engine connection.
#![warn(missing_docs)]

pub mod echo;
pub mod mqtt;
pub mod nats;
pub mod relay;
pub mod sockperf;

use std::sync::Arc;

use ringport_plugin::{DropReason, Registry, RegistryError, WriteError};

pub use echo::{Echo, EchoFactory};
pub use relay::{Relay, RelayConfig, RelayFactory};
pub use sockperf::{Sockperf, SockperfFactory};

/// Settings shared by the built-in plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinSettings {
    /// The largest frame a framed protocol accepts, header included; a peer
    /// announcing more is disconnected (streams) or dropped (datagrams).
    /// For `relay` it is the largest payload ([`RelayConfig::max_payload`]).
    pub max_frame: usize,
}

impl Default for BuiltinSettings {
    /// `max_frame` = 65536.
    fn default() -> Self {
        BuiltinSettings {
            max_frame: sockperf::DEFAULT_MAX_FRAME,
        }
    }
}

/// A registry holding every built-in plugin (`echo`, `mqtt`, `relay`,
/// `sockperf`); `mqtt` with [`MqttConfig::default`](mqtt::broker::MqttConfig),
/// which lets no client in until a login is configured.
pub fn builtins(settings: &BuiltinSettings) -> Registry {
    let mut registry = Registry::new();
    match register_builtins(&mut registry, settings) {
        Ok(()) => registry,
        // An empty registry cannot hold a name already.
        Err(RegistryError::Duplicate(_)) => unreachable!("fresh registry"),
    }
}

/// Adds every built-in plugin to `registry`, for binaries that mix them with
/// their own plugins. Fails if one of the names is taken.
pub fn register_builtins(
    registry: &mut Registry,
    settings: &BuiltinSettings,
) -> Result<(), RegistryError> {
    register_builtins_with(
        registry,
        settings,
        Arc::new(mqtt::broker::MqttFactory::new(
            mqtt::broker::MqttConfig::default(),
        )),
    )
}

/// [`register_builtins`] with the `mqtt` broker made by the caller (its
/// logins, ACL, limits and events configured, its stats kept).
pub fn register_builtins_with(
    registry: &mut Registry,
    settings: &BuiltinSettings,
    mqtt: Arc<mqtt::broker::MqttFactory>,
) -> Result<(), RegistryError> {
    register_builtins_bridged(registry, settings, mqtt, None)
}

/// [`register_builtins_with`], with the `relay` bridged to NATS when
/// `relay_bridge` is given ([`RelayFactory::with_bridges`]).
pub fn register_builtins_bridged(
    registry: &mut Registry,
    settings: &BuiltinSettings,
    mqtt: Arc<mqtt::broker::MqttFactory>,
    relay_bridge: Option<Arc<nats::BridgeSet>>,
) -> Result<(), RegistryError> {
    registry.register(Arc::new(EchoFactory))?;
    registry.register(Arc::new(SockperfFactory::new(settings.max_frame)))?;
    let mut relay = RelayFactory::new(RelayConfig {
        max_payload: settings.max_frame,
        ..RelayConfig::default()
    });
    if let Some(bridge) = relay_bridge {
        relay = relay.with_bridges(bridge);
    }
    registry.register(Arc::new(relay))?;
    registry.register(mqtt)?;
    Ok(())
}

/// The reason an output the engine refused is counted under.
///
/// `UnknownTarget` cannot happen for the stream or socket an input came from
/// unless the engine is wrong; it is counted as `Refused`.
pub(crate) fn output_error(e: WriteError) -> DropReason {
    match e {
        WriteError::QueueFull => DropReason::QueueFull,
        WriteError::TooLarge => DropReason::FrameTooLong,
        WriteError::UnknownTarget => DropReason::Refused,
    }
}

#[cfg(test)]
mod testutil;

#[cfg(test)]
mod tests {
    use super::*;
    use ringport_plugin::Transport;

    #[test]
    fn builtins_are_registered_by_name() {
        let registry = builtins(&BuiltinSettings::default());
        assert_eq!(
            registry.names().collect::<Vec<_>>(),
            ["echo", "mqtt", "relay", "sockperf"]
        );
        let sockperf = registry.get("sockperf").unwrap();
        assert!(sockperf.supports(Transport::Udp));
    }

    #[test]
    fn registering_twice_is_refused() {
        let mut registry = builtins(&BuiltinSettings { max_frame: 100 });
        assert_eq!(
            register_builtins(&mut registry, &BuiltinSettings::default()),
            Err(RegistryError::Duplicate("echo".to_owned()))
        );
    }

    #[test]
    fn output_errors_map_to_drop_reasons() {
        assert_eq!(output_error(WriteError::QueueFull), DropReason::QueueFull);
        assert_eq!(output_error(WriteError::TooLarge), DropReason::FrameTooLong);
        assert_eq!(output_error(WriteError::UnknownTarget), DropReason::Refused);
    }
}
