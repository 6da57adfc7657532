//! The sockperf server as a plugin: frames in, pongs out.

use ringport_plugin::{
    ConnId, Context, DatagramInfo, DropReason, Plugin, PluginFactory, ShardId, Transport,
    WriteError,
};

use super::wire::{self, Flags, Framing, Packet, DEFAULT_MAX_FRAME, HEADER_LEN};
use crate::output_error;

/// Makes [`Sockperf`] instances; serves TCP and UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockperfFactory {
    max_frame: usize,
}

impl SockperfFactory {
    /// The name used in listener specs.
    pub const NAME: &'static str = "sockperf";

    /// A factory whose instances accept messages of at most `max_frame` bytes
    /// (header included). Values below [`HEADER_LEN`] are raised to it.
    pub fn new(max_frame: usize) -> Self {
        SockperfFactory {
            max_frame: max_frame.max(HEADER_LEN),
        }
    }

    /// The largest message accepted, header included.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Default for SockperfFactory {
    /// Accepts messages up to [`DEFAULT_MAX_FRAME`] bytes.
    fn default() -> Self {
        SockperfFactory::new(DEFAULT_MAX_FRAME)
    }
}

impl PluginFactory for SockperfFactory {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn supports(&self, transport: Transport) -> bool {
        matches!(transport, Transport::Tcp | Transport::Udp)
    }

    fn create(&self, _shard: ShardId, _shard_count: usize) -> Box<dyn Plugin> {
        Box::new(Sockperf::new(self.max_frame))
    }
}

/// One shard's sockperf server. Stateless between calls: the engine keeps the
/// bytes of an incomplete frame and presents them again.
///
/// Per [`Plugin::handle_data`] call it counts every complete frame with one
/// [`Context::record_messages`] (pongs and silently consumed frames alike);
/// per datagram it counts one message unless the datagram was dropped.
#[derive(Debug, Clone)]
pub struct Sockperf {
    max_frame: usize,
}

impl Sockperf {
    /// An instance accepting messages of at most `max_frame` bytes (header
    /// included). Values below [`HEADER_LEN`] are raised to it.
    pub fn new(max_frame: usize) -> Self {
        Sockperf {
            max_frame: max_frame.max(HEADER_LEN),
        }
    }

    /// The largest message accepted, header included.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Default for Sockperf {
    fn default() -> Self {
        Sockperf::new(DEFAULT_MAX_FRAME)
    }
}

/// The reply header: the request's, with [`Flags::CLIENT`] cleared.
fn pong_header(packet: &Packet<&[u8]>) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header.copy_from_slice(packet.header());
    Packet::new_unchecked(&mut header[..]).set_flags(packet.flags().without(Flags::CLIENT));
    header
}

impl Plugin for Sockperf {
    /// Handles every complete frame of `data`; returns the bytes they cover.
    ///
    /// A pong is queued whole or not at all ([`Context::write_parts`]). When
    /// the outbound queue is full the frames handled so far are reported as
    /// consumed and the rest waits in the engine (backpressure); any other
    /// refused write closes the stream.
    fn handle_data(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        data: &[u8],
    ) -> Result<usize, DropReason> {
        let mut consumed = 0;
        let mut frames = 0;
        let outcome = loop {
            let rest = &data[consumed..];
            let len = match wire::next_frame(rest, self.max_frame) {
                Framing::Frame(len) => len,
                Framing::Incomplete => break Ok(consumed),
                Framing::Invalid(e) => break Err(e.drop_reason()),
            };
            let packet = Packet::new_unchecked(&rest[..len]);
            if packet.flags().wants_reply() {
                let header = pong_header(&packet);
                match ctx.write_parts(conn, &[&header, packet.payload()]) {
                    Ok(()) => {}
                    // The peer is not reading its pongs: stop here; the engine
                    // keeps this frame and presents it again once it can.
                    Err(WriteError::QueueFull) => break Ok(consumed),
                    Err(e) => break Err(output_error(e)),
                }
            }
            consumed += len;
            frames += 1;
        };
        if frames > 0 {
            ctx.record_messages(frames);
        }
        outcome
    }

    /// Answers one message per datagram, to its sender, through the socket it
    /// arrived on.
    fn handle_datagram(
        &mut self,
        ctx: &mut dyn Context,
        from: &DatagramInfo,
        data: &[u8],
    ) -> Result<(), DropReason> {
        let packet =
            wire::parse_datagram(data, self.max_frame).map_err(wire::Error::drop_reason)?;
        if packet.flags().wants_reply() {
            let header = pong_header(&packet);
            ctx.send_datagram(from.socket, from.peer, &[&header, packet.payload()])
                .map_err(output_error)?;
        }
        ctx.record_messages(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use ringport_plugin::testing::{RecordingContext, SentDatagram};
    use ringport_plugin::{ListenerId, SocketId, WriteError};

    use super::*;
    use crate::sockperf::Repr;
    use crate::testutil::StreamFeeder;

    const CONN: ConnId = ConnId::from_raw(11);

    fn frame(sequence: u64, flags: Flags, payload: &[u8]) -> Vec<u8> {
        let repr = Repr {
            sequence,
            flags,
            total_len: (HEADER_LEN + payload.len()) as u32,
        };
        let mut out = repr.to_header().to_vec();
        out.extend_from_slice(payload);
        out
    }

    fn ping() -> Flags {
        Flags::CLIENT.with(Flags::PONG_REQUEST)
    }

    fn from() -> DatagramInfo {
        DatagramInfo {
            socket: SocketId(5),
            listener: ListenerId(0),
            peer: SocketAddr::from(([127, 0, 0, 9], 40000)),
            local: SocketAddr::from(([127, 0, 0, 1], 11111)),
        }
    }

    /// Three frames: a ping with payload, a ping without pong request, and a
    /// ping with an empty payload; and the exact bytes the server must answer.
    fn script() -> (Vec<u8>, Vec<u8>) {
        let mut stream = frame(1, ping(), b"hello");
        stream.extend(frame(2, Flags::CLIENT, b"quiet"));
        stream.extend(frame(3, ping(), b""));
        let expected = [
            &[0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 19][..],
            b"hello",
            &[0, 0, 0, 0, 0, 0, 0, 3, 0, 2, 0, 0, 0, 14],
        ]
        .concat();
        (stream, expected)
    }

    #[test]
    fn pong_is_the_request_with_client_cleared() {
        let mut plugin = Sockperf::default();
        let mut ctx = RecordingContext::new();
        let request = frame(0x0102_0304_0506_0708, Flags::from_bits(0x8003), b"xyz");
        assert_eq!(plugin.handle_data(&mut ctx, CONN, &request), Ok(17));
        assert_eq!(
            ctx.written(CONN),
            [1, 2, 3, 4, 5, 6, 7, 8, 0x80, 0x02, 0, 0, 0, 17, b'x', b'y', b'z']
        );
        // Header from a stack array and the rest of the frame, in one
        // all-or-nothing write.
        assert_eq!(ctx.write_calls(), 1);
        assert_eq!(ctx.messages(), 1);
    }

    #[test]
    fn ping_without_pong_request_is_consumed_silently() {
        let mut plugin = Sockperf::default();
        let mut ctx = RecordingContext::new();
        let mut stream = frame(1, Flags::CLIENT, b"abc");
        stream.extend(frame(2, Flags::PONG_REQUEST, b"")); // a server's message
        stream.extend(frame(3, ping().with(Flags::WARMUP), b"w"));
        assert_eq!(
            plugin.handle_data(&mut ctx, CONN, &stream),
            Ok(stream.len())
        );
        assert_eq!(ctx.written(CONN), b"");
        assert_eq!(ctx.messages(), 3);
    }

    #[test]
    fn many_frames_in_one_chunk() {
        let (mut stream, mut expected) = script();
        for seq in 4..104u64 {
            stream.extend(frame(seq, ping(), &[seq as u8; 3]));
            expected.extend(frame(seq, Flags::PONG_REQUEST, &[seq as u8; 3]));
        }
        let mut plugin = Sockperf::default();
        let mut ctx = RecordingContext::new();
        assert_eq!(
            plugin.handle_data(&mut ctx, CONN, &stream),
            Ok(stream.len())
        );
        assert_eq!(ctx.written(CONN), expected);
        assert_eq!(ctx.messages(), 103);
    }

    #[test]
    fn incomplete_tail_is_left_unconsumed() {
        let (stream, _) = script();
        let mut plugin = Sockperf::default();
        let mut ctx = RecordingContext::new();
        // First frame whole (19 bytes) plus 5 bytes of the second.
        assert_eq!(plugin.handle_data(&mut ctx, CONN, &stream[..24]), Ok(19));
        assert_eq!(ctx.messages(), 1);
        assert_eq!(plugin.handle_data(&mut ctx, CONN, &stream[..10]), Ok(0));
        assert_eq!(ctx.messages(), 1);
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let (stream, expected) = script();
        for split in 0..=stream.len() {
            let mut feeder = StreamFeeder::new(Sockperf::default(), CONN);
            feeder.feed(&stream[..split]).unwrap();
            feeder.feed(&stream[split..]).unwrap();
            assert_eq!(feeder.ctx.written(CONN), expected, "split at {split}");
            assert_eq!(feeder.ctx.messages(), 3, "split at {split}");
            assert_eq!(feeder.pending(), 0, "split at {split}");
        }
    }

    #[test]
    fn split_at_every_pair_of_boundaries() {
        let (stream, expected) = script();
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let mut feeder = StreamFeeder::new(Sockperf::default(), CONN);
                for part in [&stream[..a], &stream[a..b], &stream[b..]] {
                    feeder.feed(part).unwrap();
                }
                assert_eq!(feeder.ctx.written(CONN), expected, "splits at {a}, {b}");
                assert_eq!(feeder.pending(), 0);
            }
        }
    }

    #[test]
    fn random_frames_random_chunks() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        for _ in 0..50 {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            let count = rng.gen_range(1..40);
            for seq in 0..count {
                let payload: Vec<u8> = (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect();
                let flags = Flags::from_bits(rng.gen::<u16>() & 0x0007);
                stream.extend(frame(seq, flags, &payload));
                if flags.wants_reply() {
                    expected.extend(frame(seq, flags.without(Flags::CLIENT), &payload));
                }
            }
            let mut feeder = StreamFeeder::new(Sockperf::default(), CONN);
            let mut at = 0;
            while at < stream.len() {
                let end = (at + rng.gen_range(1..200)).min(stream.len());
                feeder.feed(&stream[at..end]).unwrap();
                at = end;
            }
            assert_eq!(feeder.ctx.written(CONN), expected);
            assert_eq!(feeder.ctx.messages(), count);
            assert_eq!(feeder.pending(), 0);
        }
    }

    #[test]
    fn too_short_length_closes_the_stream() {
        let mut bad = frame(9, ping(), b"");
        bad[wire::field::LENGTH].copy_from_slice(&13u32.to_be_bytes());
        let mut stream = frame(1, ping(), b"ok");
        stream.extend(&bad);
        let mut plugin = Sockperf::default();
        let mut ctx = RecordingContext::new();
        assert_eq!(
            plugin.handle_data(&mut ctx, CONN, &stream),
            Err(DropReason::FrameTooShort)
        );
        // The frame before the bad one was answered and counted.
        assert_eq!(ctx.written(CONN), frame(1, Flags::PONG_REQUEST, b"ok"));
        assert_eq!(ctx.messages(), 1);
    }

    #[test]
    fn oversized_length_closes_the_stream_on_the_header_alone() {
        let mut plugin = Sockperf::new(100);
        let mut ctx = RecordingContext::new();
        let mut header = frame(1, ping(), b"");
        header[wire::field::LENGTH].copy_from_slice(&101u32.to_be_bytes());
        assert_eq!(plugin.handle_data(&mut ctx, CONN, &header[..13]), Ok(0));
        assert_eq!(
            plugin.handle_data(&mut ctx, CONN, &header),
            Err(DropReason::FrameTooLong)
        );
        // Exactly the maximum is served.
        let max = frame(2, ping(), &[7; 86]);
        assert_eq!(plugin.handle_data(&mut ctx, CONN, &max), Ok(100));
        assert_eq!(ctx.written(CONN).len(), 100);
    }

    #[test]
    fn default_maximum_is_65536() {
        let mut plugin = Sockperf::default();
        let mut ctx = RecordingContext::new();
        let mut header = frame(1, ping(), b"");
        header[wire::field::LENGTH].copy_from_slice(&65536u32.to_be_bytes());
        assert_eq!(plugin.handle_data(&mut ctx, CONN, &header), Ok(0));
        header[wire::field::LENGTH].copy_from_slice(&65537u32.to_be_bytes());
        assert_eq!(
            plugin.handle_data(&mut ctx, CONN, &header),
            Err(DropReason::FrameTooLong)
        );
    }

    #[test]
    fn full_queue_stops_before_the_frame_and_keeps_it() {
        let mut plugin = Sockperf::default();
        let mut ctx = RecordingContext::new();
        ctx.fail_writes(Some(WriteError::QueueFull));
        let stream = frame(1, ping(), b"x");
        assert_eq!(plugin.handle_data(&mut ctx, CONN, &stream), Ok(0));
        assert_eq!(ctx.messages(), 0);
        ctx.fail_writes(None);
        assert_eq!(
            plugin.handle_data(&mut ctx, CONN, &stream),
            Ok(stream.len())
        );
        assert_eq!(ctx.messages(), 1);
    }

    #[test]
    fn other_refused_write_closes_the_stream() {
        let mut plugin = Sockperf::default();
        let mut ctx = RecordingContext::new();
        ctx.fail_writes(Some(WriteError::UnknownTarget));
        let stream = frame(1, ping(), b"x");
        assert_eq!(
            plugin.handle_data(&mut ctx, CONN, &stream),
            Err(DropReason::Refused)
        );
        assert_eq!(ctx.messages(), 0);
    }

    #[test]
    fn udp_ping_gets_a_pong_to_its_sender() {
        let mut plugin = Sockperf::default();
        let mut ctx = RecordingContext::new();
        let request = frame(77, ping(), b"payload");
        assert_eq!(plugin.handle_datagram(&mut ctx, &from(), &request), Ok(()));
        assert_eq!(
            ctx.datagrams(),
            &[SentDatagram {
                via: SocketId(5),
                to: SocketAddr::from(([127, 0, 0, 9], 40000)),
                data: frame(77, Flags::PONG_REQUEST, b"payload"),
            }]
        );
        assert_eq!(ctx.messages(), 1);
    }

    #[test]
    fn udp_without_pong_request_is_consumed_silently() {
        let mut plugin = Sockperf::default();
        let mut ctx = RecordingContext::new();
        let request = frame(1, Flags::CLIENT, b"");
        assert_eq!(plugin.handle_datagram(&mut ctx, &from(), &request), Ok(()));
        assert!(ctx.datagrams().is_empty());
        assert_eq!(ctx.messages(), 1);
    }

    #[test]
    fn udp_bad_datagrams_are_dropped_with_their_reason() {
        let mut plugin = Sockperf::new(64);
        let mut ctx = RecordingContext::new();
        let good = frame(1, ping(), b"abc");
        let mut too_short = good.clone();
        too_short[wire::field::LENGTH].copy_from_slice(&2u32.to_be_bytes());
        let too_long = frame(1, ping(), &[0; 51]);
        let mut overstated = good.clone();
        overstated[wire::field::LENGTH].copy_from_slice(&18u32.to_be_bytes());
        let mut with_trailer = good.clone();
        with_trailer.push(0);
        let cases: [(&[u8], DropReason); 5] = [
            (&good[..13], DropReason::Malformed),
            (&too_short, DropReason::FrameTooShort),
            (&too_long, DropReason::FrameTooLong),
            (&overstated, DropReason::Malformed),
            (&with_trailer, DropReason::Malformed),
        ];
        for (data, reason) in cases {
            assert_eq!(plugin.handle_datagram(&mut ctx, &from(), data), Err(reason));
        }
        assert!(ctx.datagrams().is_empty());
        assert_eq!(ctx.messages(), 0);
    }

    #[test]
    fn udp_refused_send_drops_the_datagram() {
        let mut plugin = Sockperf::default();
        let mut ctx = RecordingContext::new();
        ctx.set_max_datagram(10);
        let request = frame(1, ping(), b"");
        assert_eq!(
            plugin.handle_datagram(&mut ctx, &from(), &request),
            Err(DropReason::FrameTooLong)
        );
        assert_eq!(ctx.messages(), 0);
    }

    #[test]
    fn factory_settings() {
        let factory = SockperfFactory::new(3);
        assert_eq!(factory.max_frame(), HEADER_LEN);
        assert_eq!(SockperfFactory::default().max_frame(), 65536);
        assert_eq!(factory.name(), "sockperf");
        assert!(factory.supports(Transport::Tcp) && factory.supports(Transport::Udp));
        // A header-only frame is the smallest message and fits any maximum.
        let mut plugin = factory.create(0, 1);
        let mut ctx = RecordingContext::new();
        let smallest = frame(1, ping(), b"");
        assert_eq!(plugin.handle_data(&mut ctx, CONN, &smallest), Ok(14));
    }
}
