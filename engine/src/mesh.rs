//! The cross-shard mesh: one bounded lock-free ring per ordered pair of
//! shards, and the flag protocol that wakes a parked shard without a syscall
//! per message.
//!
//! # Rings
//!
//! Ring `(from, to)` has exactly one producer (shard `from`) and one consumer
//! (shard `to`), so per-pair order is FIFO. Messages carry
//! [`bytes::Bytes`] payloads: a broadcast clones a reference, not the bytes.
//! A full ring hands the message back to the sender ([`Mesh::try_send`]); the
//! mesh never drops.
//!
//! # Wake-ups
//!
//! A shard about to block in `submit_and_wait` *parks*: it sets its `parked`
//! flag, then (after a full fence) looks at its inbound rings once more and
//! unparks at once if any holds a message. A sender pushes its message, then
//! (after a full fence) reads the target's flag; only if it is set does the
//! sender take it (swap to false, so one wake per park) and wake the target,
//! by IORING_OP_MSG_RING into the target's ring or, failing that, a write to
//! the target's eventfd. The two fences make this the classic store-buffer
//! pattern: either the shard sees the message before sleeping or the sender
//! sees the flag, so no wake-up is lost, and a busy shard (not parked) costs
//! its senders no syscall at all.

use std::sync::atomic::{fence, AtomicBool, Ordering};

use crossbeam_queue::ArrayQueue;
use ringport_plugin::{MeshMessage, ShardId};

/// A message in flight between two shards.
#[derive(Debug)]
pub struct Envelope {
    /// Plugin index on the target shard (the sender's own plugin).
    pub plugin: u16,
    /// The message.
    pub msg: MeshMessage,
}

/// A parked flag on its own cache line, so that senders polling one shard's
/// flag do not bounce the line holding another's.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Parked(AtomicBool);

/// The N x N mesh of one engine.
#[derive(Debug)]
pub struct Mesh {
    shards: usize,
    rings: Box<[ArrayQueue<Envelope>]>,
    parked: Box<[Parked]>,
}

impl Mesh {
    /// A mesh for `shards` shards with rings of `capacity` messages each.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0.
    pub fn new(shards: usize, capacity: usize) -> Mesh {
        Mesh {
            shards,
            rings: (0..shards * shards)
                .map(|_| ArrayQueue::new(capacity))
                .collect(),
            parked: (0..shards).map(|_| Parked::default()).collect(),
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    #[inline]
    fn ring(&self, from: ShardId, to: ShardId) -> &ArrayQueue<Envelope> {
        &self.rings[from * self.shards + to]
    }

    /// Queues `env` from shard `from` to shard `to`. Only shard `from` may call
    /// this for that pair. `Ok(true)` means the target was parked and the
    /// caller must now wake it; `Err` hands the message back (ring full).
    #[inline]
    pub fn try_send(&self, from: ShardId, to: ShardId, env: Envelope) -> Result<bool, Envelope> {
        self.ring(from, to).push(env)?;
        fence(Ordering::SeqCst);
        let flag = &self.parked[to].0;
        Ok(flag.load(Ordering::Relaxed) && flag.swap(false, Ordering::AcqRel))
    }

    /// Pops up to `limit` messages from each inbound ring of `to` (FIFO per
    /// sender) and passes them to `f`. Returns how many were popped. Only
    /// shard `to` may call this.
    #[inline]
    pub fn drain(&self, to: ShardId, limit: usize, mut f: impl FnMut(ShardId, Envelope)) -> usize {
        let mut n = 0;
        for from in 0..self.shards {
            let ring = self.ring(from, to);
            for _ in 0..limit {
                match ring.pop() {
                    Some(env) => {
                        f(from, env);
                        n += 1;
                    }
                    None => break,
                }
            }
        }
        n
    }

    /// Whether any inbound ring of `to` holds a message.
    #[inline]
    pub fn has_inbound(&self, to: ShardId) -> bool {
        (0..self.shards).any(|from| !self.ring(from, to).is_empty())
    }

    /// Messages waiting for `to`, over all its inbound rings.
    pub fn depth(&self, to: ShardId) -> usize {
        (0..self.shards).map(|from| self.ring(from, to).len()).sum()
    }

    /// Marks `me` parked unless a message is already waiting. Returns whether
    /// the shard may block; if not, the flag is left clear.
    #[inline]
    pub fn park(&self, me: ShardId) -> bool {
        let flag = &self.parked[me].0;
        flag.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.has_inbound(me) {
            flag.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Clears `me`'s parked flag after the shard woke up.
    #[inline]
    pub fn unpark(&self, me: ShardId) {
        self.parked[me].0.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;

    fn env(tag: u64) -> Envelope {
        Envelope {
            plugin: 0,
            msg: MeshMessage {
                tag,
                payload: Bytes::new(),
            },
        }
    }

    #[test]
    fn per_pair_fifo_and_full_hands_back() {
        let mesh = Mesh::new(2, 4);
        for t in 0..4 {
            assert_eq!(mesh.try_send(0, 1, env(t)).ok(), Some(false));
        }
        let back = mesh.try_send(0, 1, env(99)).unwrap_err();
        assert_eq!(back.msg.tag, 99);
        assert_eq!(mesh.depth(1), 4);
        let mut seen = Vec::new();
        assert_eq!(mesh.drain(1, 3, |from, e| seen.push((from, e.msg.tag))), 3);
        assert_eq!(seen, vec![(0, 0), (0, 1), (0, 2)]);
        assert!(mesh.has_inbound(1));
        assert!(!mesh.park(1), "a waiting message forbids parking");
        mesh.drain(1, 10, |_, e| seen.push((0, e.msg.tag)));
        assert_eq!(seen.last(), Some(&(0, 3)));
        assert!(mesh.park(1));
        assert_eq!(mesh.try_send(0, 1, env(5)).ok(), Some(true), "parked: wake");
        assert_eq!(
            mesh.try_send(0, 1, env(6)).ok(),
            Some(false),
            "one wake per park"
        );
    }

    /// The flag protocol under real threads: a consumer that parks (here a
    /// spin on an atomic "sleeping" word instead of a kernel wait) must always
    /// be woken for the last message, over many rounds.
    #[test]
    fn no_lost_wakeup_under_races() {
        let mesh = Arc::new(Mesh::new(2, 8));
        let wakes = Arc::new(AtomicU64::new(0));
        const ROUNDS: u64 = 20_000;
        let consumer = {
            let mesh = mesh.clone();
            let wakes = wakes.clone();
            std::thread::spawn(move || {
                let mut got = 0u64;
                let mut seen_wakes = 0u64;
                while got < ROUNDS {
                    let mut next = got;
                    got += mesh.drain(1, 8, |_, e| {
                        assert_eq!(e.msg.tag, next);
                        next += 1;
                    }) as u64;
                    if got == ROUNDS {
                        break;
                    }
                    if mesh.park(1) {
                        // "Sleep" until a sender says it woke us.
                        let deadline =
                            std::time::Instant::now() + std::time::Duration::from_secs(10);
                        while wakes.load(Ordering::Acquire) == seen_wakes {
                            assert!(
                                std::time::Instant::now() < deadline,
                                "lost wake-up at {got}"
                            );
                            std::hint::spin_loop();
                        }
                        seen_wakes = wakes.load(Ordering::Acquire);
                        mesh.unpark(1);
                    }
                }
                got
            })
        };
        for t in 0..ROUNDS {
            let mut e = env(t);
            loop {
                match mesh.try_send(0, 1, e) {
                    Ok(true) => {
                        wakes.fetch_add(1, Ordering::Release);
                        break;
                    }
                    Ok(false) => break,
                    Err(back) => {
                        e = back;
                        std::thread::yield_now();
                    }
                }
            }
        }
        assert_eq!(consumer.join().unwrap(), ROUNDS);
    }
}
