//! The cross-shard mesh: one bounded lock-free ring per ordered pair of
//! shards, and the flag protocol that wakes a parked shard without a syscall
//! per message.
//!
//! # Rings
//!
//! Ring `(from, to)` has exactly one producer (shard `from`, through its
//! [`Outbox`]) and one consumer (shard `to`, through its [`Inbox`]), so
//! per-pair order is FIFO. The rings are [`crate::spsc`] rings: with one
//! producer and one consumer by construction, a multi-producer queue's
//! compare-and-swap and slot stamps are pure cost. Messages carry
//! [`bytes::Bytes`] payloads: a broadcast clones a reference, not the bytes.
//! A full ring hands the message back to the sender; the mesh never drops.
//!
//! # Wake-ups
//!
//! A shard about to block in `submit_and_wait` *parks* ([`Inbox::park`]): it
//! sets its `parked` flag, then (after a full fence) looks at its inbound
//! rings once more and unparks at once if any holds a message. A sender
//! pushes its messages during its turn and, once per turn (before it
//! submits), issues one full fence and reads the flag of every shard it sent
//! to ([`Outbox::wakes_due`]); only for a set flag does the sender take it
//! (swap to false, so one wake per park) and wake the target, by
//! IORING_OP_MSG_RING into the target's ring or, failing that, a write to the
//! target's eventfd. The two fences make this the classic store-buffer
//! pattern: either the shard sees the message before sleeping or the sender
//! sees the flag, so no wake-up is lost. A busy shard (not parked) costs its
//! senders no syscall, and the fence is paid once per turn, not per message:
//! a full fence after each push stalls the sender on the cache line the
//! receiver is reading.

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use ringport_plugin::{MeshMessage, ShardId};

use crate::spsc::{self, Consumer, Producer};

/// Bytes one ring slot takes (an [`Envelope`] and the ring's sequence
/// word): what `mesh_capacity` costs per ordered pair of shards.
pub const SLOT_BYTES: u64 = (std::mem::size_of::<Envelope>() + 8) as u64;

/// A message in flight between two shards.
#[derive(Debug)]
pub struct Envelope {
    /// Plugin index on the target shard (the sender's own plugin).
    pub plugin: u16,
    /// When the sending shard's turn began (for the mesh latency histogram).
    pub sent: std::time::Instant,
    /// The message.
    pub msg: MeshMessage,
}

/// A per-shard flag on its own cache lines, so that senders polling one
/// shard's flag do not bounce the line holding another's.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Parked {
    parked: AtomicBool,
    /// Messages waiting for the shard, as last published by it (for metrics).
    depth: AtomicUsize,
}

/// What the shards of one engine share about the mesh.
#[derive(Debug)]
pub struct Mesh {
    shards: usize,
    flags: Box<[Parked]>,
}

impl Mesh {
    /// Builds the mesh for `shards` shards with rings of at least `capacity`
    /// messages, and returns each shard's ends: `ports[i]` belongs to shard i.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0.
    pub fn new(shards: usize, capacity: usize) -> (Arc<Mesh>, Vec<(Outbox, Inbox)>) {
        let mesh = Arc::new(Mesh {
            shards,
            flags: (0..shards).map(|_| Parked::default()).collect(),
        });
        // rings[from][to]
        let mut producers: Vec<Vec<Option<Producer<Envelope>>>> = Vec::with_capacity(shards);
        let mut consumers: Vec<Vec<Option<Consumer<Envelope>>>> = (0..shards)
            .map(|_| (0..shards).map(|_| None).collect())
            .collect();
        for from in 0..shards {
            let mut row = Vec::with_capacity(shards);
            for (to, inbound) in consumers.iter_mut().enumerate() {
                let (p, c) = spsc::ring(capacity);
                row.push(Some(p));
                inbound[from] = Some(c);
                let _ = to;
            }
            producers.push(row);
        }
        let ports = producers
            .into_iter()
            .zip(consumers)
            .enumerate()
            .map(|(me, (out, inn))| {
                (
                    Outbox {
                        me,
                        mesh: mesh.clone(),
                        rings: out.into_iter().map(|p| p.expect("built above")).collect(),
                    },
                    Inbox {
                        me,
                        mesh: mesh.clone(),
                        rings: inn.into_iter().map(|c| c.expect("built above")).collect(),
                    },
                )
            })
            .collect();
        (mesh, ports)
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Messages waiting for `shard` as of its last turn.
    pub fn depth(&self, shard: ShardId) -> usize {
        self.flags
            .get(shard)
            .map_or(0, |f| f.depth.load(Ordering::Relaxed))
    }
}

/// A shard's sending ends, one ring per target shard.
#[derive(Debug)]
pub struct Outbox {
    me: ShardId,
    mesh: Arc<Mesh>,
    rings: Vec<Producer<Envelope>>,
}

impl Outbox {
    /// The shard this outbox belongs to.
    pub fn shard(&self) -> ShardId {
        self.me
    }

    /// Queues `env` for shard `to`. `Err` hands it back (ring full, or no
    /// such shard). The message becomes visible with
    /// [`wakes_due`](Self::wakes_due), which the shard calls for `to` once
    /// per turn before it next blocks.
    #[inline]
    pub fn try_send(&mut self, to: ShardId, env: Envelope) -> Result<(), Envelope> {
        match self.rings.get_mut(to) {
            Some(ring) => ring.try_push(env),
            None => Err(env),
        }
    }

    /// After pushing to `targets` (each listed once): publishes the pushes
    /// (one tail store per ring), then calls `wake` for the targets that are
    /// parked: one full fence, then each target's flag is taken (so only one
    /// sender wakes a parked shard).
    pub fn wakes_due(&self, targets: &[ShardId], mut wake: impl FnMut(ShardId)) {
        if targets.is_empty() {
            return;
        }
        for &to in targets {
            if let Some(ring) = self.rings.get(to) {
                ring.publish();
            }
        }
        fence(Ordering::SeqCst);
        for &to in targets {
            let flag = &self.mesh.flags[to].parked;
            if flag.load(Ordering::Relaxed) && flag.swap(false, Ordering::AcqRel) {
                wake(to);
            }
        }
    }
}

/// A shard's receiving ends, one ring per sending shard.
#[derive(Debug)]
pub struct Inbox {
    me: ShardId,
    mesh: Arc<Mesh>,
    rings: Vec<Consumer<Envelope>>,
}

impl Inbox {
    /// Takes up to `limit` messages from each inbound ring (FIFO per sender)
    /// and passes them to `f` with the sending shard. Returns how many.
    #[inline]
    pub fn drain(&mut self, limit: usize, mut f: impl FnMut(ShardId, Envelope)) -> usize {
        let mut n = 0;
        for (from, ring) in self.rings.iter_mut().enumerate() {
            n += ring.drain(limit, |env| f(from, env));
        }
        n
    }

    /// Whether any inbound ring holds a message.
    #[inline]
    pub fn has_pending(&self) -> bool {
        self.rings.iter().any(Consumer::has_pending)
    }

    /// Publishes how many messages wait (for metrics).
    pub fn publish_depth(&self) {
        let depth = self.rings.iter().map(Consumer::len).sum();
        self.mesh.flags[self.me]
            .depth
            .store(depth, Ordering::Relaxed);
    }

    /// Marks this shard parked unless a message is already waiting. Returns
    /// whether the shard may block; if not, the flag is left clear.
    #[inline]
    pub fn park(&self) -> bool {
        if self.mesh.shards == 1 {
            // No other shard can send, so none reads the flag; only our own
            // sends to ourselves (published earlier this turn) can be waiting,
            // and seeing those needs no fence.
            return !self.has_pending();
        }
        let flag = &self.mesh.flags[self.me].parked;
        flag.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.has_pending() {
            flag.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Clears the parked flag after the shard woke up.
    #[inline]
    pub fn unpark(&self) {
        if self.mesh.shards == 1 {
            return;
        }
        self.mesh.flags[self.me]
            .parked
            .store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use bytes::Bytes;

    use super::*;

    fn env(tag: u64) -> Envelope {
        Envelope {
            plugin: 0,
            sent: std::time::Instant::now(),
            msg: MeshMessage {
                tag,
                payload: Bytes::new(),
            },
        }
    }

    #[test]
    fn per_pair_fifo_full_hands_back_and_one_wake_per_park() {
        let (mesh, mut ports) = Mesh::new(2, 4);
        let (mut in1, (mut out0, _)) = {
            let p1 = ports.pop().unwrap();
            (p1.1, ports.pop().unwrap())
        };
        for t in 0..4 {
            assert!(out0.try_send(1, env(t)).is_ok());
        }
        out0.wakes_due(&[1], |_| panic!("shard 1 is not parked"));
        assert_eq!(out0.try_send(1, env(99)).unwrap_err().msg.tag, 99);
        assert_eq!(
            out0.try_send(7, env(98)).unwrap_err().msg.tag,
            98,
            "no such shard"
        );
        in1.publish_depth();
        assert_eq!(mesh.depth(1), 4);
        let mut seen = Vec::new();
        assert_eq!(in1.drain(3, |from, e| seen.push((from, e.msg.tag))), 3);
        assert_eq!(seen, vec![(0, 0), (0, 1), (0, 2)]);
        assert!(!in1.park(), "a waiting message forbids parking");
        in1.drain(10, |_, e| seen.push((0, e.msg.tag)));
        assert_eq!(seen.last(), Some(&(0, 3)));
        assert!(in1.park());
        let mut woken = Vec::new();
        assert!(out0.try_send(1, env(5)).is_ok());
        out0.wakes_due(&[1], |t| woken.push(t));
        assert_eq!(woken, vec![1], "parked: wake");
        assert!(out0.try_send(1, env(6)).is_ok());
        out0.wakes_due(&[1], |t| woken.push(t));
        assert_eq!(woken, vec![1], "one wake per park");
    }

    #[test]
    fn a_lone_shard_parks_without_the_flag_but_not_over_its_own_messages() {
        let (mesh, mut ports) = Mesh::new(1, 4);
        let (mut out, mut inbox) = ports.pop().unwrap();
        assert!(inbox.park(), "nothing waits: block");
        assert!(!mesh.flags[0].parked.load(Ordering::Relaxed));
        assert!(out.try_send(0, env(7)).is_ok());
        out.wakes_due(&[0], |_| panic!("a lone shard is never woken by flag"));
        assert!(!inbox.park(), "its own message forbids blocking");
        inbox.unpark();
        let mut seen = Vec::new();
        assert_eq!(inbox.drain(8, |from, e| seen.push((from, e.msg.tag))), 1);
        assert_eq!(seen, vec![(0, 7)]);
        assert!(inbox.park());
        assert!(!mesh.flags[0].parked.load(Ordering::Relaxed));
    }

    /// The flag protocol under real threads: a consumer that parks (here a
    /// spin on a "woken" counter instead of a kernel wait) must always be
    /// woken for the last message, over many rounds.
    #[test]
    fn no_lost_wakeup_under_races() {
        let (_mesh, mut ports) = Mesh::new(2, 8);
        let (_, mut inbox) = ports.pop().unwrap();
        let (mut outbox, _) = ports.pop().unwrap();
        let wakes = Arc::new(AtomicU64::new(0));
        const ROUNDS: u64 = 20_000;
        let consumer = {
            let wakes = wakes.clone();
            std::thread::spawn(move || {
                let mut got = 0u64;
                let mut seen_wakes = 0u64;
                while got < ROUNDS {
                    let mut next = got;
                    got += inbox.drain(8, |_, e| {
                        assert_eq!(e.msg.tag, next);
                        next += 1;
                    }) as u64;
                    if got == ROUNDS {
                        break;
                    }
                    if inbox.park() {
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
                        inbox.unpark();
                    }
                }
                got
            })
        };
        for t in 0..ROUNDS {
            let mut e = env(t);
            loop {
                match outbox.try_send(1, e) {
                    Ok(()) => {
                        outbox.wakes_due(&[1], |_| {
                            wakes.fetch_add(1, Ordering::Release);
                        });
                        break;
                    }
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
