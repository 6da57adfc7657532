//! Echo: every byte received is sent back (RFC 862 semantics).
//!
//! Over TCP each [`Plugin::handle_data`] call writes all of `data` back,
//! consumes all of it and counts one message. Over UDP each datagram is sent
//! back unchanged to its sender through the socket it arrived on.

use ringport_plugin::{
    ConnId, Context, DatagramInfo, DropReason, Plugin, PluginFactory, ShardId, Transport,
    WriteError,
};

use crate::output_error;

/// Makes [`Echo`] instances; serves TCP and UDP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EchoFactory;

impl EchoFactory {
    /// The name used in listener specs.
    pub const NAME: &'static str = "echo";
}

impl PluginFactory for EchoFactory {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn supports(&self, transport: Transport) -> bool {
        matches!(transport, Transport::Tcp | Transport::Udp)
    }

    fn create(&self, _shard: ShardId, _shard_count: usize) -> Box<dyn Plugin> {
        Box::new(Echo)
    }
}

/// One shard's echo server. Stateless.
///
/// A write or send the engine refuses closes the stream / drops the datagram,
/// counted under [`DropReason::QueueFull`] for a full queue.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Plugin for Echo {
    fn handle_data(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        data: &[u8],
    ) -> Result<usize, DropReason> {
        if data.is_empty() {
            return Ok(0);
        }
        match ctx.write(conn, data) {
            Ok(()) => {}
            // Backpressure: consume nothing; the engine keeps the bytes and
            // pauses reading until the peer has read its replies.
            Err(WriteError::QueueFull) => return Ok(0),
            Err(e) => return Err(output_error(e)),
        }
        ctx.record_messages(1);
        Ok(data.len())
    }

    fn handle_datagram(
        &mut self,
        ctx: &mut dyn Context,
        from: &DatagramInfo,
        data: &[u8],
    ) -> Result<(), DropReason> {
        ctx.send_datagram(from.socket, from.peer, &[data])
            .map_err(output_error)?;
        ctx.record_messages(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use ringport_plugin::testing::{RecordingContext, SentDatagram};
    use ringport_plugin::{ListenerId, SocketId, WriteError};

    use super::*;
    use crate::testutil::StreamFeeder;

    const CONN: ConnId = ConnId::from_raw(3);

    fn from() -> DatagramInfo {
        DatagramInfo {
            socket: SocketId(2),
            listener: ListenerId(1),
            peer: SocketAddr::from(([127, 0, 0, 2], 5000)),
            local: SocketAddr::from(([127, 0, 0, 1], 7)),
        }
    }

    #[test]
    fn tcp_writes_everything_back() {
        let mut feeder = StreamFeeder::new(Echo, CONN);
        feeder.feed(b"hello ").unwrap();
        feeder.feed(b"world").unwrap();
        assert_eq!(feeder.ctx.written(CONN), b"hello world");
        assert_eq!(feeder.ctx.messages(), 2);
        assert_eq!(feeder.pending(), 0);
    }

    #[test]
    fn tcp_full_queue_consumes_nothing() {
        let mut ctx = RecordingContext::new();
        ctx.fail_writes(Some(WriteError::QueueFull));
        assert_eq!(Echo.handle_data(&mut ctx, CONN, b"x"), Ok(0));
        assert_eq!(ctx.messages(), 0);
    }

    #[test]
    fn tcp_other_refused_write_closes_the_stream() {
        let mut ctx = RecordingContext::new();
        ctx.fail_writes(Some(WriteError::UnknownTarget));
        assert_eq!(
            Echo.handle_data(&mut ctx, CONN, b"x"),
            Err(DropReason::Refused)
        );
    }

    #[test]
    fn udp_replies_to_the_sender() {
        let mut ctx = RecordingContext::new();
        assert_eq!(
            Echo.handle_datagram(&mut ctx, &from(), b"ping\x00\xff"),
            Ok(())
        );
        assert_eq!(Echo.handle_datagram(&mut ctx, &from(), b""), Ok(()));
        let reply = |data: &[u8]| SentDatagram {
            via: SocketId(2),
            to: SocketAddr::from(([127, 0, 0, 2], 5000)),
            data: data.to_vec(),
        };
        assert_eq!(ctx.datagrams(), &[reply(b"ping\x00\xff"), reply(b"")]);
        assert_eq!(ctx.messages(), 2);
    }

    #[test]
    fn udp_refused_send_drops_the_datagram() {
        let mut ctx = RecordingContext::new();
        ctx.fail_writes(Some(WriteError::QueueFull));
        assert_eq!(
            Echo.handle_datagram(&mut ctx, &from(), b"x"),
            Err(DropReason::QueueFull)
        );
        assert_eq!(ctx.messages(), 0);
    }

    #[test]
    fn factory() {
        let factory = EchoFactory;
        assert_eq!(factory.name(), "echo");
        assert!(factory.supports(Transport::Tcp) && factory.supports(Transport::Udp));
        let mut plugin = factory.create(1, 2);
        let mut ctx = RecordingContext::new();
        assert_eq!(plugin.handle_data(&mut ctx, CONN, b"abc"), Ok(3));
        assert_eq!(ctx.written(CONN), b"abc");
    }
}
