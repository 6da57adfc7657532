//! What one subscriber connection receives: relay frames cut from a byte
//! stream, each `MESSAGE` checked byte for byte, counted per publisher and
//! timed from its intended send time.

use ringport_protocols::relay::wire::{self, Framing, Packet, Repr, HEADER_LEN};

use super::payload;
use super::tracker::{Counts, SeqTrack};
use crate::latency::Recorder;

/// The receive side of one subscriber.
///
/// Feed it the connection's bytes in order with [`SubscriberStream::handle_bytes`];
/// frames split across reads are put back together. A `MESSAGE` on another
/// topic, with a wrong byte or length, or from an unknown publisher, a `PONG`
/// or a client frame counts one error; a header that cannot be a frame of
/// this run breaks the stream (one error, and nothing more is read).
#[derive(Debug, Clone)]
pub struct SubscriberStream {
    topic: Vec<u8>,
    size: usize,
    /// Largest payload of a frame this run can hold.
    max_payload: usize,
    /// The start of a frame whose rest has not arrived yet.
    carry: Vec<u8>,
    tracks: Vec<SeqTrack>,
    /// Distinct, duplicate and reordered messages.
    pub counts: Counts,
    /// Sum of the counts of `LAGGED` frames.
    pub lagged: u64,
    /// Frames that were not what the run sends.
    pub errors: u64,
    /// Messages recorded in the measurement window.
    pub in_window: u64,
    /// The stream lost its framing.
    pub broken: bool,
}

impl SubscriberStream {
    /// A subscriber of `topic` expecting payloads of `size` bytes from
    /// `publishers` publishers.
    pub fn new(topic: Vec<u8>, size: usize, publishers: usize) -> SubscriberStream {
        SubscriberStream {
            max_payload: size.max(wire::LAGGED_PAYLOAD_LEN),
            carry: Vec::with_capacity(HEADER_LEN + topic.len() + size),
            topic,
            size,
            tracks: vec![SeqTrack::default(); publishers],
            counts: Counts::default(),
            lagged: 0,
            errors: 0,
            in_window: 0,
            broken: false,
        }
    }

    /// Messages accounted for: received once, or reported missed by `LAGGED`.
    pub fn accounted(&self) -> u64 {
        self.counts.delivered + self.lagged
    }

    /// Handles the next bytes of the stream, received at `now_ns`.
    pub fn handle_bytes(&mut self, mut data: &[u8], now_ns: u64, rec: &mut Recorder) {
        if self.broken {
            return;
        }
        if !self.carry.is_empty() && !self.complete_carry(&mut data, now_ns, rec) {
            return;
        }
        while !self.broken {
            match wire::next_frame(data, self.max_payload) {
                Framing::Frame(_, len) => {
                    self.handle_frame(&data[..len], now_ns, rec);
                    data = &data[len..];
                }
                Framing::Incomplete => {
                    self.carry.extend_from_slice(data);
                    return;
                }
                Framing::Invalid(_) => self.break_stream(),
            }
        }
    }

    fn break_stream(&mut self) {
        self.errors += 1;
        self.broken = true;
    }

    /// The length the carried frame needs: the header first, then the frame.
    fn carry_wants(&self) -> Option<usize> {
        if self.carry.len() < HEADER_LEN {
            return Some(HEADER_LEN);
        }
        wire::check_header(&self.carry, self.max_payload)
            .ok()
            .map(|(_, len)| len)
    }

    /// Moves just the bytes the carried frame lacks from `data` and handles
    /// it when whole; false when `data` ran out first (or the stream broke).
    fn complete_carry(&mut self, data: &mut &[u8], now_ns: u64, rec: &mut Recorder) -> bool {
        loop {
            let Some(want) = self.carry_wants() else {
                self.break_stream();
                return false;
            };
            if self.carry.len() >= want {
                let frame = std::mem::take(&mut self.carry);
                self.handle_frame(&frame, now_ns, rec);
                self.carry = frame;
                self.carry.clear();
                return true;
            }
            if data.is_empty() {
                return false;
            }
            let take = (want - self.carry.len()).min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            *data = &data[take..];
        }
    }

    fn handle_frame(&mut self, frame: &[u8], now_ns: u64, rec: &mut Recorder) {
        match Repr::parse(&Packet::new_unchecked(frame), self.max_payload) {
            Ok(Repr::Message { topic, payload }) => {
                self.handle_message(topic, payload, now_ns, rec)
            }
            Ok(Repr::Lagged { count }) => self.lagged += count,
            _ => self.errors += 1,
        }
    }

    fn handle_message(&mut self, topic: &[u8], payload: &[u8], now_ns: u64, rec: &mut Recorder) {
        if topic != self.topic {
            self.errors += 1;
            return;
        }
        let Some(stamp) = payload::verify(payload, self.size) else {
            self.errors += 1;
            return;
        };
        let Some(track) = self.tracks.get_mut(stamp.publisher as usize) else {
            self.errors += 1;
            return;
        };
        let arrival = track.on_seq(stamp.seq);
        self.counts.add(arrival);
        if arrival.is_new() && rec.record(stamp.intended_ns, stamp.sent_ns, now_ns) {
            self.in_window += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::payload::{encode_into, Stamp};

    const SIZE: usize = 48;

    fn message(topic: &[u8], publisher: u32, seq: u64) -> Vec<u8> {
        let mut p = vec![0; SIZE];
        let stamp = Stamp {
            publisher,
            seq,
            intended_ns: 1_000 + seq,
            sent_ns: 1_100 + seq,
        };
        encode_into(&mut p, &stamp);
        Repr::Message { topic, payload: &p }.to_vec()
    }

    fn stream() -> (SubscriberStream, Recorder) {
        (
            SubscriberStream::new(b"bench/0".to_vec(), SIZE, 2),
            Recorder::new(0, u64::MAX),
        )
    }

    #[test]
    fn frames_split_anywhere_are_put_back_together() {
        let bytes: Vec<u8> = (0..20)
            .flat_map(|s| message(b"bench/0", (s % 2) as u32, s / 2))
            .chain(wire::lagged_frame(3))
            .collect();
        for chunk in [1, 5, 6, 7, 61, 1000] {
            let (mut s, mut rec) = stream();
            for c in bytes.chunks(chunk) {
                s.handle_bytes(c, 2_000, &mut rec);
            }
            assert_eq!(s.counts.delivered, 20, "chunks of {chunk}");
            assert_eq!((s.errors, s.lagged, s.accounted()), (0, 3, 23));
            assert_eq!((s.counts.duplicates, s.counts.reordered), (0, 0));
            assert_eq!(s.in_window, 20);
            // Received at 2000, due at 1000 + seq: 1000 - seq ns (exact
            // below 2048 ns).
            assert_eq!(rec.corrected().max, 1_000);
            assert_eq!(rec.corrected().count, 20);
        }
    }

    #[test]
    fn a_corrupted_payload_byte_is_one_error_and_not_a_delivery() {
        let good = message(b"bench/0", 0, 0);
        for i in HEADER_LEN + 7..good.len() {
            let (mut s, mut rec) = stream();
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            s.handle_bytes(&bad, 5_000, &mut rec);
            s.handle_bytes(&message(b"bench/0", 0, 1), 5_000, &mut rec);
            assert_eq!((s.errors, s.counts.delivered), (1, 1), "byte {i}");
            assert!(!s.broken);
        }
    }

    #[test]
    fn wrong_topic_unknown_publisher_duplicates_and_a_broken_header() {
        let (mut s, mut rec) = stream();
        let mut bytes = message(b"bench/1", 0, 0);
        bytes.extend(message(b"bench/0", 2, 0));
        bytes.extend(message(b"bench/0", 1, 0));
        bytes.extend(message(b"bench/0", 1, 0));
        bytes.extend(Repr::Pong { payload: b"" }.to_vec());
        s.handle_bytes(&bytes, 5_000, &mut rec);
        assert_eq!(
            (s.errors, s.counts.delivered, s.counts.duplicates),
            (3, 1, 1)
        );
        // A payload length no frame of this run has: the stream is lost.
        s.handle_bytes(&[0x81, 7, 0, 1, 0, 0], 5_000, &mut rec);
        assert!(s.broken);
        s.handle_bytes(&message(b"bench/0", 1, 1), 5_000, &mut rec);
        assert_eq!((s.errors, s.counts.delivered), (4, 1));
    }
}
