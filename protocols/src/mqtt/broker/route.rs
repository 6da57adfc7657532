//! Messages between the broker's shards: their tags, and the ordered
//! per-shard queues that hold them while a mesh ring is full.
//!
//! Everything a shard sends to one other shard goes through one FIFO, so
//! messages keep their order per target: a message waits behind earlier
//! ones even if the ring has room again. QoS 0 publications are dropped
//! (`mesh_full`) once a target's queue holds `mesh_retry_bytes`; everything
//! else (QoS 1/2 publications, session hand-overs, shared subscription
//! traffic) waits, and a QoS 1/2 publisher is acknowledged only once every
//! shard's ring took the message ([`MeshOut::taken`]).
//!
//! A message for this very shard goes to a loopback queue, handled before
//! the current input returns, so that a one-shard broker runs the same code.

use std::collections::VecDeque;

use ringport_plugin::{Bytes, Context, MeshError, MeshMessage, ShardId};

/// A PUBLISH received on the sending shard (broadcast): the id of the
/// listener its client came through (u16, for the NATS bridge's
/// per-listener export filters), then the message (with its origin).
pub const TAG_PUBLISH: u64 = 1;
/// To a client id's home shard: the client connects on the sending shard.
pub const TAG_CLAIM: u64 = 2;
/// From the home shard to the shard holding a session: hand it over.
pub const TAG_TAKEOVER: u64 = 3;
/// To the shard a client connects on: its session (or none).
pub const TAG_STATE: u64 = 4;
/// To the home shard: a session ended.
pub const TAG_GONE: u64 = 5;
/// To a shared subscription group's home shard: a member joins.
pub const TAG_SHARE_JOIN: u64 = 6;
/// To a shared subscription group's home shard: a member leaves.
pub const TAG_SHARE_LEAVE: u64 = 7;
/// From a group's home shard to the chosen member's shard: deliver.
pub const TAG_SHARE_DELIVER: u64 = 8;
/// A retained message: to its topic's home shard, which stores it and
/// passes it to every other shard (so that each topic's updates reach every
/// replica in one order).
pub const TAG_RETAIN: u64 = 9;
/// From a chosen member's shard back to its group's home shard: the member
/// was gone (its session had moved or ended), so the home picks another.
pub const TAG_SHARE_BOUNCE: u64 = 10;
/// How many members in a row a shared delivery may find gone before it is
/// dropped (`no_session`): each costs a round trip through the mesh.
pub const MAX_SHARE_HOPS: u8 = 8;
/// From the NATS bridge's shard: a message imported from NATS (after the
/// listeners it may reach, with per-listener routes), delivered like
/// [`TAG_PUBLISH`] and never exported again.
pub const TAG_IMPORTED: u64 = 11;

/// A message waiting for a full ring.
#[derive(Debug)]
struct Waiting {
    seq: u64,
    tag: u64,
    payload: Bytes,
    reliable: bool,
}

/// What became of a message handed to [`MeshOut::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Taken by the ring (or the loopback queue).
    Now,
    /// Waiting behind others or for room.
    Queued,
    /// Dropped: a QoS 0 publication past the cap, or no mesh.
    Dropped,
}

/// The outbound side of the mesh of one shard.
#[derive(Debug)]
pub(crate) struct MeshOut {
    me: ShardId,
    queues: Vec<VecDeque<Waiting>>,
    /// Bytes of droppable messages waiting, per target.
    bytes: Vec<usize>,
    /// Bytes of reliable messages waiting, all targets.
    pub reliable_bytes: usize,
    waiting: usize,
    seq: u64,
    /// Messages for this shard, handled before the current input returns.
    pub loopback: VecDeque<MeshMessage>,
}

impl MeshOut {
    pub fn new(me: ShardId, shard_count: usize) -> Self {
        MeshOut {
            me,
            queues: (0..shard_count).map(|_| VecDeque::new()).collect(),
            bytes: vec![0; shard_count],
            reliable_bytes: 0,
            waiting: 0,
            seq: 0,
            loopback: VecDeque::new(),
        }
    }

    /// Messages waiting for a ring.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// The sequence number of the last message sent or queued.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether every message up to sequence `seq` was taken by its ring.
    pub fn taken(&self, seq: u64) -> bool {
        self.waiting == 0
            || self
                .queues
                .iter()
                .all(|q| q.front().map_or(true, |w| w.seq > seq))
    }

    /// Sends `payload` to `target` (or queues it behind what waits there).
    /// `cap`: drop past this many waiting bytes (QoS 0), `None`: never drop.
    pub fn send(
        &mut self,
        ctx: &mut dyn Context,
        target: ShardId,
        tag: u64,
        payload: Bytes,
        cap: Option<usize>,
    ) -> Sent {
        self.seq += 1;
        if target == self.me {
            self.loopback.push_back(MeshMessage { tag, payload });
            return Sent::Now;
        }
        let Some(q) = self.queues.get_mut(target) else {
            return Sent::Dropped;
        };
        let payload = if q.is_empty() {
            match ctx.send_to_shard(target, MeshMessage { tag, payload }) {
                Ok(()) => return Sent::Now,
                Err(MeshError::Full(m)) => m.payload,
                Err(MeshError::NoSuchShard(_) | MeshError::Unavailable(_)) => return Sent::Dropped,
            }
        } else {
            payload
        };
        let len = payload.len();
        match cap {
            Some(cap) if self.bytes[target] + len > cap => return Sent::Dropped,
            Some(_) => self.bytes[target] += len,
            None => self.reliable_bytes += len,
        }
        q.push_back(Waiting {
            seq: self.seq,
            tag,
            payload,
            reliable: cap.is_none(),
        });
        self.waiting += 1;
        Sent::Queued
    }

    /// Sends waiting messages, in order per target, until rings are full.
    pub fn poll(&mut self, ctx: &mut dyn Context) {
        if self.waiting == 0 {
            return;
        }
        for (target, q) in self.queues.iter_mut().enumerate() {
            while let Some(w) = q.pop_front() {
                let msg = MeshMessage {
                    tag: w.tag,
                    payload: w.payload,
                };
                let payload = match ctx.send_to_shard(target, msg) {
                    Ok(()) => None,
                    Err(MeshError::Full(m)) => Some(m.payload),
                    // Cannot happen for a shard that took messages before.
                    Err(_) => None,
                };
                if let Some(payload) = payload {
                    q.push_front(Waiting { payload, ..w });
                    break;
                }
                self.waiting -= 1;
            }
        }
        self.recount();
    }

    /// Recomputes the byte counts from what still waits.
    fn recount(&mut self) {
        self.reliable_bytes = 0;
        for (t, q) in self.queues.iter().enumerate() {
            let mut droppable = 0;
            for w in q {
                if w.reliable {
                    self.reliable_bytes += w.payload.len();
                } else {
                    droppable += w.payload.len();
                }
            }
            self.bytes[t] = droppable;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringport_plugin::testing::RecordingContext;

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    #[test]
    fn full_ring_keeps_order_and_drops_only_qos0() {
        let mut ctx = RecordingContext::new().with_shard(0, 2);
        let mut m = MeshOut::new(0, 2);
        assert_eq!(m.send(&mut ctx, 1, 1, b(b"a"), Some(2)), Sent::Now);
        ctx.set_mesh_full(true);
        assert_eq!(m.send(&mut ctx, 1, 1, b(b"b"), Some(2)), Sent::Queued);
        let reliable = m.seq() + 1;
        assert_eq!(m.send(&mut ctx, 1, 2, b(b"c"), None), Sent::Queued);
        assert_eq!(m.send(&mut ctx, 1, 1, b(b"dd"), Some(2)), Sent::Dropped);
        assert_eq!(m.waiting(), 2);
        assert!(!m.taken(reliable));
        ctx.set_mesh_full(false);
        // Room again, but "e" waits behind "b" and "c".
        assert_eq!(m.send(&mut ctx, 1, 1, b(b"e"), Some(2)), Sent::Queued);
        m.poll(&mut ctx);
        assert!(m.taken(reliable));
        assert_eq!((m.waiting(), m.reliable_bytes), (0, 0));
        let got: Vec<&[u8]> = ctx
            .mesh_sends()
            .iter()
            .map(|s| &s.msg.payload[..])
            .collect();
        assert_eq!(got, [&b"a"[..], b"b", b"c", b"e"]);
    }

    #[test]
    fn own_shard_goes_to_loopback() {
        let mut ctx = RecordingContext::new().with_shard(1, 2);
        let mut m = MeshOut::new(1, 2);
        assert_eq!(m.send(&mut ctx, 1, 4, b(b"x"), None), Sent::Now);
        assert_eq!(m.loopback.len(), 1);
        assert!(ctx.mesh_sends().is_empty());
        assert_eq!(m.send(&mut ctx, 5, 4, b(b"x"), None), Sent::Dropped);
    }
}
