//! One stream's request/reply bookkeeping, whatever carries the bytes
//! (plain TCP in `tcp`, TLS in `tls_echo` and `tls_handshake`): requests
//! queued in order, replies of a fixed size checked byte for byte and timed.

use std::collections::VecDeque;

use super::ClientReport;
use crate::wire::{self, Protocol, REQUEST_FLAGS};

/// Requests in flight on one stream and the reply being put together.
#[derive(Debug)]
pub(super) struct Exchange {
    /// (intended, sent) of each request in flight, in order.
    pub inflight: VecDeque<(u64, u64)>,
    /// Sequence number of the next request.
    pub next_seq: u64,
    /// Sequence number of the next reply.
    expect_seq: u64,
    /// A reply split across receives.
    carry: Vec<u8>,
    /// Most requests this stream sends (`u64::MAX`: no cap).
    pub cap: u64,
}

impl Exchange {
    /// A stream with nothing sent, `depth` requests in flight at most, of `size` bytes.
    pub fn new(depth: usize, size: usize, cap: u64) -> Exchange {
        Exchange {
            inflight: VecDeque::with_capacity(depth),
            next_seq: 0,
            expect_seq: 0,
            carry: Vec::with_capacity(size),
            cap,
        }
    }

    /// Whether the cap allows another request.
    #[inline]
    pub fn may_send(&self) -> bool {
        self.next_seq < self.cap
    }

    /// Appends the next request of `size` bytes to `out`, meant for
    /// `intended` and sent at `now`; counts it in `report`.
    #[inline]
    pub fn push_request(
        &mut self,
        out: &mut Vec<u8>,
        size: usize,
        intended: u64,
        now: u64,
        report: &mut ClientReport,
    ) {
        wire::encode(out, self.next_seq, REQUEST_FLAGS, size);
        self.next_seq += 1;
        self.inflight.push_back((intended, now));
        report.sent += 1;
    }

    /// Feeds received plaintext: whole replies are checked and timed.
    pub fn on_bytes(
        &mut self,
        mut data: &[u8],
        protocol: Protocol,
        size: usize,
        now: u64,
        report: &mut ClientReport,
    ) {
        if !self.carry.is_empty() {
            let take = (size - self.carry.len()).min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() < size {
                return;
            }
            let frame = std::mem::take(&mut self.carry);
            self.on_reply(&frame, protocol, size, now, report);
            self.carry = frame;
            self.carry.clear();
        }
        while data.len() >= size {
            self.on_reply(&data[..size], protocol, size, now, report);
            data = &data[size..];
        }
        self.carry.extend_from_slice(data);
    }

    fn on_reply(
        &mut self,
        frame: &[u8],
        protocol: Protocol,
        size: usize,
        now: u64,
        report: &mut ClientReport,
    ) {
        let Some((intended, sent)) = self.inflight.pop_front() else {
            // More bytes than were asked for.
            report.errors += 1;
            return;
        };
        let seq = self.expect_seq;
        self.expect_seq += 1;
        report.received += 1;
        if !wire::verify(protocol, frame, seq, size) {
            report.errors += 1;
            return;
        }
        if report.recorder.record(intended, sent, now) {
            report.completed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Schedule;

    fn report() -> ClientReport {
        ClientReport::new(&Schedule {
            start_ns: 0,
            measure_ns: 0,
            end_ns: u64::MAX,
        })
    }

    #[test]
    fn replies_split_anywhere_are_put_together_and_a_wrong_byte_is_one_error() {
        let mut r = report();
        let mut ex = Exchange::new(4, 20, 3);
        let mut out = Vec::new();
        for _ in 0..3 {
            ex.push_request(&mut out, 20, 1, 1, &mut r);
        }
        assert!(!ex.may_send());
        assert_eq!((out.len(), r.sent), (60, 3));
        out[45] ^= 1;
        ex.on_bytes(&out[..7], Protocol::Echo, 20, 5, &mut r);
        ex.on_bytes(&out[7..41], Protocol::Echo, 20, 5, &mut r);
        assert_eq!((r.received, r.completed, r.errors), (2, 2, 0));
        ex.on_bytes(&out[41..], Protocol::Echo, 20, 5, &mut r);
        assert_eq!((r.received, r.completed, r.errors), (3, 2, 1));
        ex.on_bytes(&out[..20], Protocol::Echo, 20, 5, &mut r);
        assert_eq!((r.received, r.errors), (3, 2), "a reply nobody asked for");
        assert!(ex.inflight.is_empty());
    }
}
