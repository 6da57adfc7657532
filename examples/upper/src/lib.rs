//! `upper`: an example of a ringport plugin living outside the ringport tree.
//!
//! The plugin sends back what it receives with ASCII letters upper-cased
//! (`hello, wörld` comes back as `HELLO, WöRLD`: bytes outside ASCII are left
//! alone). It serves TCP, where each received batch is answered at once, and
//! UDP, where each datagram is answered to its sender.
//!
//! An out-of-tree plugin needs three things, all shown here:
//!
//! 1. a type implementing [`Plugin`]: the per-shard state machine. It gets
//!    its inputs as arguments and answers through the [`Context`]; it never
//!    touches a socket or a clock, so it is unit-tested with
//!    [`RecordingContext`](ringport_plugin::testing::RecordingContext);
//! 2. a type implementing [`PluginFactory`]: its name (used in listener
//!    specs such as `upper@tcp:127.0.0.1:7000`), the transports it serves,
//!    and how to make one instance per shard;
//! 3. a function that puts the factory in a [`Registry`]: the binary that
//!    embeds the engine calls it next to the built-ins (see
//!    [`registry_with_builtins`]).
//!
//! ```
//! use ringport_plugin::testing::RecordingContext;
//! use ringport_plugin::{ConnId, Plugin};
//! use ringport_example_upper::Upper;
//!
//! let mut plugin = Upper::default();
//! let mut ctx = RecordingContext::new();
//! let conn = ConnId::from_raw(1);
//! assert_eq!(plugin.handle_data(&mut ctx, conn, b"hi there"), Ok(8));
//! assert_eq!(ctx.written(conn), b"HI THERE");
//! ```
#![warn(missing_docs)]

use std::sync::Arc;

use ringport_plugin::{
    ConnId, Context, DatagramInfo, DropReason, Plugin, PluginFactory, Registry, RegistryError,
    ShardId, Transport, WriteError,
};
use ringport_protocols::BuiltinSettings;

/// The name `upper` is registered under.
pub const NAME: &str = "upper";

/// Makes [`Upper`] instances; serves TCP and UDP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpperFactory;

impl PluginFactory for UpperFactory {
    fn name(&self) -> &str {
        NAME
    }

    fn supports(&self, transport: Transport) -> bool {
        matches!(transport, Transport::Tcp | Transport::Udp)
    }

    fn create(&self, _shard: ShardId, _shard_count: usize) -> Box<dyn Plugin> {
        Box::new(Upper::default())
    }
}

/// One shard's `upper` instance.
///
/// It keeps a scratch buffer that grows to the largest input seen and is then
/// reused, so the steady state allocates nothing per message. Each input
/// counts as one message; an output the engine refuses closes the stream or
/// drops the datagram, counted under [`DropReason::QueueFull`] when the queue
/// was full.
#[derive(Debug, Clone, Default)]
pub struct Upper {
    scratch: Vec<u8>,
}

impl Upper {
    /// `data` with ASCII letters upper-cased, in the scratch buffer.
    fn upper_cased(&mut self, data: &[u8]) -> &[u8] {
        self.scratch.clear();
        self.scratch.extend_from_slice(data);
        self.scratch.make_ascii_uppercase();
        &self.scratch
    }
}

/// The reason a refused output is counted under.
fn refused(e: WriteError) -> DropReason {
    match e {
        WriteError::QueueFull => DropReason::QueueFull,
        WriteError::TooLarge => DropReason::FrameTooLong,
        WriteError::UnknownTarget => DropReason::Refused,
    }
}

impl Plugin for Upper {
    /// Writes `data` back upper-cased and consumes all of it.
    fn handle_data(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        data: &[u8],
    ) -> Result<usize, DropReason> {
        if data.is_empty() {
            return Ok(0);
        }
        ctx.write(conn, self.upper_cased(data)).map_err(refused)?;
        ctx.record_messages(1);
        Ok(data.len())
    }

    /// Sends the datagram back upper-cased to its sender.
    fn handle_datagram(
        &mut self,
        ctx: &mut dyn Context,
        from: &DatagramInfo,
        data: &[u8],
    ) -> Result<(), DropReason> {
        let reply = self.upper_cased(data);
        ctx.send_datagram(from.socket, from.peer, &[reply])
            .map_err(refused)?;
        ctx.record_messages(1);
        Ok(())
    }
}

/// Adds `upper` to `reg`.
///
/// # Panics
///
/// If a plugin named `upper` is registered already; [`try_register`] reports
/// that as an error instead.
pub fn register(reg: &mut Registry) {
    if let Err(e) = try_register(reg) {
        panic!("{e}");
    }
}

/// Adds `upper` to `reg`, failing if the name is taken.
pub fn try_register(reg: &mut Registry) -> Result<(), RegistryError> {
    reg.register(Arc::new(UpperFactory))
}

/// The built-in plugins plus `upper`: what a binary embedding the engine with
/// this plugin serves.
///
/// # Panics
///
/// If a built-in ever takes the name `upper`.
pub fn registry_with_builtins(settings: &BuiltinSettings) -> Registry {
    let mut reg = ringport_protocols::builtins(settings);
    register(&mut reg);
    reg
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use ringport_plugin::testing::{RecordingContext, SentDatagram};
    use ringport_plugin::{ListenerId, SocketId};

    use super::*;

    const CONN: ConnId = ConnId::from_raw(21);

    fn from() -> DatagramInfo {
        DatagramInfo {
            socket: SocketId(4),
            listener: ListenerId(2),
            peer: SocketAddr::from(([127, 0, 0, 3], 6000)),
            local: SocketAddr::from(([127, 0, 0, 1], 7000)),
        }
    }

    #[test]
    fn tcp_upper_cases_ascii_only() {
        let mut plugin = Upper::default();
        let mut ctx = RecordingContext::new();
        let input = "hello, wörld 123 {az}\n".as_bytes();
        assert_eq!(plugin.handle_data(&mut ctx, CONN, input), Ok(input.len()));
        assert_eq!(ctx.written(CONN), "HELLO, WöRLD 123 {AZ}\n".as_bytes());
        assert_eq!(ctx.messages(), 1);
    }

    #[test]
    fn tcp_batches_are_answered_in_order() {
        let mut plugin = Upper::default();
        let mut ctx = RecordingContext::new();
        assert_eq!(
            plugin.handle_data(&mut ctx, CONN, b"a long first batch"),
            Ok(18)
        );
        // A shorter second batch must not carry bytes over from the first.
        assert_eq!(plugin.handle_data(&mut ctx, CONN, b"xy"), Ok(2));
        assert_eq!(plugin.handle_data(&mut ctx, CONN, b""), Ok(0));
        assert_eq!(ctx.written(CONN), b"A LONG FIRST BATCHXY");
        assert_eq!(ctx.messages(), 2);
    }

    #[test]
    fn tcp_refused_write_closes_the_stream() {
        let mut ctx = RecordingContext::new();
        ctx.fail_writes(Some(WriteError::QueueFull));
        assert_eq!(
            Upper::default().handle_data(&mut ctx, CONN, b"x"),
            Err(DropReason::QueueFull)
        );
        assert_eq!(ctx.messages(), 0);
    }

    #[test]
    fn udp_replies_to_the_sender() {
        let mut plugin = Upper::default();
        let mut ctx = RecordingContext::new();
        assert_eq!(
            plugin.handle_datagram(&mut ctx, &from(), b"temp=21.5c"),
            Ok(())
        );
        assert_eq!(
            ctx.datagrams(),
            &[SentDatagram {
                via: SocketId(4),
                to: SocketAddr::from(([127, 0, 0, 3], 6000)),
                data: b"TEMP=21.5C".to_vec(),
            }]
        );
        assert_eq!(ctx.messages(), 1);
    }

    #[test]
    fn udp_refused_send_drops_the_datagram() {
        let mut ctx = RecordingContext::new();
        ctx.set_max_datagram(3);
        assert_eq!(
            Upper::default().handle_datagram(&mut ctx, &from(), b"toolong"),
            Err(DropReason::FrameTooLong)
        );
        assert_eq!(ctx.messages(), 0);
    }

    #[test]
    fn registers_next_to_the_builtins() {
        let reg = registry_with_builtins(&BuiltinSettings::default());
        assert_eq!(
            reg.names().collect::<Vec<_>>(),
            ["echo", "mqtt", "relay", "sockperf", "upper"]
        );
        let factory = reg.get("upper").unwrap();
        assert!(factory.supports(Transport::Tcp) && factory.supports(Transport::Udp));
    }

    #[test]
    fn registering_twice_is_an_error() {
        let mut reg = Registry::new();
        register(&mut reg);
        assert_eq!(
            try_register(&mut reg),
            Err(RegistryError::Duplicate("upper".to_owned()))
        );
    }

    #[test]
    #[should_panic(expected = "a plugin named `upper` is already registered")]
    fn register_panics_on_a_taken_name() {
        let mut reg = Registry::new();
        register(&mut reg);
        register(&mut reg);
    }
}
