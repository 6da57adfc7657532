//! relay-fanout's publishers: `PUBLISH` frames at scheduled times, over a
//! TCP connection (queued and sent in one operation per loop turn, like
//! `tcp`) or a UDP socket (one datagram per publish from a pool of send
//! buffers).

use std::net::{TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{opcode, types};
use ringport_protocols::relay::wire::{self, FrameType, HEADER_LEN};

use super::driver::{Driver, KIND_SEND};
use super::Schedule;
use crate::fanout::payload::{self, Stamp};
use crate::fanout::{FanoutCounts, RelaySpec};
use crate::latency::Pacer;

/// `user_data` kind of a datagram send; below it, the publisher's index
/// shifted by [`SLOT_BITS`] and the send buffer's slot.
pub(super) const KIND_DGRAM: u64 = 3 << 56;
/// Bits of a datagram send's `user_data` that hold its slot.
pub(super) const SLOT_BITS: u32 = 24;
/// Datagram send buffers per UDP publisher.
const UDP_SLOTS: usize = 256;

/// What publishing needs besides the publisher: the run's shape and where
/// to count.
pub(super) struct PublishCtx<'a> {
    pub relay: &'a RelaySpec,
    pub topics: &'a [Vec<u8>],
    pub size: usize,
    pub schedule: &'a Schedule,
    pub counts: &'a mut FanoutCounts,
}

struct TcpOut {
    stream: TcpStream,
    /// Frames queued for the next send.
    out: Vec<u8>,
    /// Frames handed to the kernel (unmoved until the send completes).
    sending: Vec<u8>,
    off: usize,
    busy: bool,
}

struct UdpOut {
    socket: UdpSocket,
    /// One datagram each; boxed so they never move while a send is in flight.
    slots: Vec<Box<[u8]>>,
    free: Vec<u32>,
}

enum Io {
    Tcp(TcpOut),
    Udp(UdpOut),
}

/// One publisher.
pub(super) struct Publisher {
    id: u32,
    io: Io,
    pacer: Pacer,
    cap: u64,
    /// How many messages it has published (the number of the next one).
    next_n: u64,
    /// Its connection failed: it publishes no more.
    pub dead: bool,
}

/// Writes the whole `PUBLISH` frame of `stamp` on `topic` into `buf`.
fn encode_publish(buf: &mut [u8], topic: &[u8], stamp: &Stamp) {
    let t = HEADER_LEN + topic.len();
    let header = wire::header(FrameType::Publish, topic.len(), buf.len() - t);
    buf[..HEADER_LEN].copy_from_slice(&header);
    buf[HEADER_LEN..t].copy_from_slice(topic);
    payload::encode_into(&mut buf[t..], stamp);
}

impl Publisher {
    /// A publisher over a TCP connection.
    pub fn tcp(id: u32, stream: TcpStream, cap: u64) -> Publisher {
        Publisher::with(
            id,
            Io::Tcp(TcpOut {
                stream,
                out: Vec::with_capacity(64 << 10),
                sending: Vec::with_capacity(64 << 10),
                off: 0,
                busy: false,
            }),
            cap,
        )
    }

    /// A publisher over a connected UDP socket; `max_frame` is the longest
    /// frame it sends.
    pub fn udp(id: u32, socket: UdpSocket, cap: u64, max_frame: usize) -> Publisher {
        let slots = (0..UDP_SLOTS)
            .map(|_| vec![0u8; max_frame].into_boxed_slice())
            .collect();
        let free = (0..UDP_SLOTS as u32).rev().collect();
        Publisher::with(
            id,
            Io::Udp(UdpOut {
                socket,
                slots,
                free,
            }),
            cap,
        )
    }

    fn with(id: u32, io: Io, cap: u64) -> Publisher {
        Publisher {
            id,
            io,
            pacer: Pacer::new(0, 0),
            cap,
            next_n: 0,
            dead: false,
        }
    }

    /// Starts the schedule: the first publish is due at `first_ns`.
    pub fn start(&mut self, first_ns: u64, interval_ns: u64) {
        self.pacer = Pacer::new(first_ns, interval_ns);
    }

    /// The TCP connection's descriptor (`None` for UDP).
    pub fn tcp_fd(&self) -> Option<RawFd> {
        match &self.io {
            Io::Tcp(t) => Some(t.stream.as_raw_fd()),
            Io::Udp(_) => None,
        }
    }

    /// Whether it has published its share (or can publish no more).
    pub fn capped(&self) -> bool {
        self.dead || self.next_n >= self.cap
    }

    /// Whether nothing it published waits to be handed to the kernel.
    pub fn idle(&self) -> bool {
        match &self.io {
            Io::Tcp(t) => self.dead || (!t.busy && t.out.is_empty()),
            Io::Udp(u) => u.free.len() == u.slots.len(),
        }
    }

    /// Publishes every message due at `now`; returns when the next one is
    /// due (`u64::MAX`: none, or waiting for a send buffer).
    pub fn publish_due(
        &mut self,
        now: u64,
        index: u64,
        driver: &mut Driver,
        ctx: &mut PublishCtx,
    ) -> u64 {
        while !self.capped() {
            if !self.pacer.is_due(now) {
                return self.pacer.next_due();
            }
            if !self.publish_one(now, index, driver, ctx) {
                return u64::MAX;
            }
        }
        u64::MAX
    }

    /// Queues the next message; false when no UDP send buffer is free.
    fn publish_one(
        &mut self,
        now: u64,
        index: u64,
        driver: &mut Driver,
        ctx: &mut PublishCtx,
    ) -> bool {
        let (topic, seq) = ctx.relay.topic_of_message(self.next_n);
        let name = &ctx.topics[topic];
        let len = HEADER_LEN + name.len() + ctx.size;
        let slot = match &mut self.io {
            Io::Udp(u) => match u.free.pop() {
                Some(s) => Some(s),
                None => return false,
            },
            Io::Tcp(_) => None,
        };
        let intended_ns = self.pacer.take(now);
        let stamp = Stamp {
            publisher: self.id,
            seq,
            intended_ns,
            sent_ns: now,
        };
        match (&mut self.io, slot) {
            (Io::Tcp(t), _) => {
                let start = t.out.len();
                t.out.resize(start + len, 0);
                encode_publish(&mut t.out[start..], name, &stamp);
            }
            (Io::Udp(u), Some(slot)) => {
                let buf = &mut u.slots[slot as usize][..len];
                encode_publish(buf, name, &stamp);
                let sqe =
                    opcode::Send::new(types::Fd(u.socket.as_raw_fd()), buf.as_ptr(), len as u32)
                        .build()
                        .user_data(KIND_DGRAM | index << SLOT_BITS | u64::from(slot));
                // SAFETY: the slot's buffer is boxed (never moves) and is not
                // written again until this send completes and frees the slot.
                unsafe { driver.push(&sqe) };
            }
            (Io::Udp(_), None) => unreachable!("a UDP publish has a slot"),
        }
        self.next_n += 1;
        self.count(topic, intended_ns, now, ctx);
        true
    }

    fn count(&self, topic: usize, intended_ns: u64, now: u64, ctx: &mut PublishCtx) {
        let window = ctx.schedule.measure_ns..ctx.schedule.end_ns;
        ctx.counts.published[topic] += 1;
        if window.contains(&intended_ns) {
            ctx.counts.offered[topic] += 1;
        }
        if window.contains(&now) {
            ctx.counts.published_in_window += 1;
        }
    }

    /// TCP: hands the queued frames to the kernel unless a send is in flight.
    pub fn flush(&mut self, index: u64, driver: &mut Driver) {
        let Io::Tcp(t) = &mut self.io else { return };
        if self.dead || t.busy || t.out.is_empty() {
            return;
        }
        std::mem::swap(&mut t.out, &mut t.sending);
        t.off = 0;
        t.busy = true;
        push_send(t, index, driver);
    }

    /// A TCP send completed with `result`; false when it failed.
    pub fn on_sent(&mut self, result: i32, index: u64, driver: &mut Driver) -> bool {
        let Io::Tcp(t) = &mut self.io else {
            return true;
        };
        if result < 0 {
            t.busy = false;
            t.out.clear();
            self.dead = true;
            return false;
        }
        t.off += result as usize;
        if t.off < t.sending.len() {
            push_send(t, index, driver);
        } else {
            t.sending.clear();
            t.busy = false;
        }
        true
    }

    /// A datagram send from `slot` completed with `result`; false when it failed.
    pub fn on_datagram_sent(&mut self, slot: u32, result: i32) -> bool {
        if let Io::Udp(u) = &mut self.io {
            u.free.push(slot);
        }
        result >= 0
    }

    /// Closes the TCP connection's both directions (UDP: nothing to do).
    pub fn shutdown(&self) {
        if let Io::Tcp(t) = &self.io {
            let _ = t.stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn push_send(t: &TcpOut, index: u64, driver: &mut Driver) {
    let rest = &t.sending[t.off..];
    let sqe = opcode::Send::new(
        types::Fd(t.stream.as_raw_fd()),
        rest.as_ptr(),
        rest.len() as u32,
    )
    .build()
    .user_data(KIND_SEND | index);
    // SAFETY: `sending` is neither written nor moved while `busy` is set,
    // which lasts until this send's completion; the ring is dropped first.
    unsafe { driver.push(&sqe) };
}
