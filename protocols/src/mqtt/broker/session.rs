//! Session state: what a client id keeps between connections.
//!
//! A session holds its subscriptions, the QoS 1/2 messages sent to its
//! client and not yet acknowledged (in flight), the messages waiting behind
//! them (the queue), and the packet ids of QoS 2 messages received from its
//! client whose PUBREL has not come yet. It lives on one shard at a time and
//! moves, encoded with [`Session::encode`], when its client reconnects on
//! another shard.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use ringport_plugin::ConnId;

use super::ids::Epoch;
use super::message::{BadMesh, Message, Reader, Writer};
use super::stats::MqttDrop;
use crate::mqtt::codec::{QoS, Version};
use crate::mqtt::trie::SubEntry;

/// Where a message in flight to the client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flight {
    /// PUBLISH not written yet (the client's outbound queue was full).
    Unsent,
    /// PUBLISH written; waiting for PUBACK or PUBREC.
    Sent,
    /// PUBREC received; PUBREL not written yet.
    RelUnsent,
    /// PUBREL written; waiting for PUBCOMP.
    Released,
}

/// A QoS 1/2 message given a packet id.
#[derive(Debug, Clone)]
pub(crate) struct Inflight {
    pub pid: u16,
    pub state: Flight,
    pub out: Outgoing,
    /// Sent on an earlier connection: sent again with DUP.
    pub redeliver: bool,
}

/// A message on its way to one client, with what its subscription made of it.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub msg: Arc<Message>,
    /// The delivery QoS (the lower of the message's and the subscription's).
    pub qos: QoS,
    /// The retain flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions.
    pub sub_ids: Box<[u32]>,
}

/// Topic aliases the broker assigned toward the current connection (at
/// most the session's `alias_max`). Made with the first alias: most
/// clients never take one.
#[derive(Debug, Default)]
pub(crate) struct OutAliases {
    // Boxed on purpose: an empty map's header is 48 bytes in every
    // session, the box 8.
    #[allow(clippy::box_collection)]
    pub map: Option<Box<std::collections::HashMap<Box<str>, u16>>>,
}

impl OutAliases {
    /// The alias given to `topic`, if any.
    pub fn get(&self, topic: &str) -> Option<u16> {
        self.map.as_ref().and_then(|m| m.get(topic).copied())
    }

    /// Aliases given so far.
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// Gives `topic` the alias `alias`.
    pub fn insert(&mut self, topic: Box<str>, alias: u16) {
        self.map
            .get_or_insert_with(Default::default)
            .insert(topic, alias);
    }
}

/// Per-client drop counts, for the status page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ClientDrops {
    pub qos0: u64,
    pub qos12: u64,
    pub other: u64,
}

impl ClientDrops {
    pub fn count(&mut self, kind: MqttDrop) {
        match kind {
            MqttDrop::QueueFullQos0 => self.qos0 += 1,
            MqttDrop::QueueFullQos12 => self.qos12 += 1,
            _ => self.other += 1,
        }
    }
}

/// The messages a session has on their way, and the QoS 2 ids it holds.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    pub inflight: VecDeque<Inflight>,
    pub queue: VecDeque<Outgoing>,
    pub queued_bytes: usize,
    /// Packet ids of QoS 2 PUBLISHes received, PUBREL not yet.
    pub inbound_qos2: Vec<u16>,
}

/// What every session without a message reads.
static NO_FLOW: Flow = Flow {
    inflight: VecDeque::new(),
    queue: VecDeque::new(),
    queued_bytes: 0,
    inbound_qos2: Vec::new(),
};

/// A [`Flow`] made on first write: an idle client's session holds one
/// pointer instead of four empty containers (98 bytes). Reads of a session
/// that never had a message see empty ones.
#[derive(Debug, Default)]
pub(crate) struct LazyFlow(Option<Box<Flow>>);

impl std::ops::Deref for LazyFlow {
    type Target = Flow;

    fn deref(&self) -> &Flow {
        self.0.as_deref().unwrap_or(&NO_FLOW)
    }
}

impl std::ops::DerefMut for LazyFlow {
    fn deref_mut(&mut self) -> &mut Flow {
        self.0.get_or_insert_with(Default::default)
    }
}

/// A session's subscriptions (filter as subscribed, `$share/...`
/// included, to options), made with the first: a client that never
/// subscribes (a device that only publishes) holds one pointer instead of
/// an empty map's 24 bytes. Reads of a session without any see an empty map.
#[derive(Debug, Default)]
// Boxed on purpose: an empty map's header is 24 bytes in every session,
// the box 8.
#[allow(clippy::box_collection)]
pub(crate) struct LazySubs(Option<Box<BTreeMap<Box<str>, SubEntry>>>);

/// What every session without a subscription reads.
static NO_SUBS: BTreeMap<Box<str>, SubEntry> = BTreeMap::new();

impl std::ops::Deref for LazySubs {
    type Target = BTreeMap<Box<str>, SubEntry>;

    fn deref(&self) -> &Self::Target {
        self.0.as_deref().unwrap_or(&NO_SUBS)
    }
}

impl std::ops::DerefMut for LazySubs {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.get_or_insert_with(Default::default)
    }
}

impl From<BTreeMap<Box<str>, SubEntry>> for LazySubs {
    fn from(m: BTreeMap<Box<str>, SubEntry>) -> Self {
        LazySubs((!m.is_empty()).then(|| Box::new(m)))
    }
}

/// What few sessions need: drop counts (most clients never have a drop)
/// and the end of an offline session with a finite expiry.
#[derive(Debug, Default)]
pub(crate) struct Rare {
    /// Messages dropped for this client, and as last reported to the
    /// event hook.
    drops: [ClientDrops; 2],
    /// When the offline session ends.
    expire_at: Option<Instant>,
}

/// One client id's session on this shard. Kept small (an idle client's
/// cost is mostly this and its connection): what only some sessions need
/// is boxed and made when first needed.
#[derive(Debug)]
pub(crate) struct Session {
    pub client_id: Arc<str>,
    /// The listener its client last came through ([`NO_LISTENER`]: none
    /// of this process yet, a session restored from disk or moved before
    /// its client connected).
    ///
    /// [`NO_LISTENER`]: super::stats::NO_LISTENER
    pub listener: u16,
    /// The user (identity or username) ACLs check, if any.
    pub user: Option<Arc<str>>,
    pub conn: Option<ConnId>,
    pub version: Version,
    /// Session Expiry Interval, seconds (`u32::MAX`: never).
    pub expiry: u32,
    /// The home shard's claim number of this session's client id.
    pub epoch: Epoch,
    /// Filter (as subscribed, `$share/...` included) to options; made
    /// with the first.
    pub subs: LazySubs,
    /// Messages in flight and queued, QoS 2 ids; made with the first.
    pub flow: LazyFlow,
    pub next_pid: u16,
    /// QoS 1/2 messages the client may have unacknowledged.
    pub window: u16,
    /// Largest packet the client accepts.
    pub max_packet: u32,
    /// The client's outbound queue was full: retry on the timer.
    pub blocked: bool,
    /// Some messages in flight are to be written again (a new connection).
    pub resend: bool,
    /// Drop counts and the offline expiry time; made with the first.
    rare: Option<Box<Rare>>,
    /// Topic aliases toward the current connection.
    pub out_aliases: OutAliases,
    /// How many the connection accepts (the lower of the client's Topic
    /// Alias Maximum and the broker's); 0 for 3.1.1.
    pub alias_max: u16,
}

impl Session {
    pub fn new(client_id: Arc<str>, version: Version) -> Self {
        Session {
            client_id,
            listener: super::stats::NO_LISTENER,
            user: None,
            conn: None,
            version,
            expiry: 0,
            epoch: 0,
            subs: LazySubs::default(),
            flow: LazyFlow::default(),
            next_pid: 1,
            window: 1,
            max_packet: u32::MAX,
            blocked: false,
            resend: false,
            rare: None,
            out_aliases: OutAliases::default(),
            alias_max: 0,
        }
    }

    /// Messages dropped for this client.
    pub fn drops(&self) -> ClientDrops {
        self.rare
            .as_ref()
            .map_or_else(ClientDrops::default, |r| r.drops[0])
    }

    /// [`drops`](Self::drops) as last reported to the event hook.
    pub fn drops_reported(&self) -> ClientDrops {
        self.rare
            .as_ref()
            .map_or_else(ClientDrops::default, |r| r.drops[1])
    }

    /// Counts a message dropped for this client.
    pub fn count_drop(&mut self, kind: MqttDrop) {
        self.rare.get_or_insert_with(Default::default).drops[0].count(kind);
    }

    /// Marks the drops as reported.
    pub fn drops_were_reported(&mut self) {
        if let Some(r) = &mut self.rare {
            r.drops[1] = r.drops[0];
        }
    }

    /// When the offline session ends (`None`: not offline, or never).
    pub fn expire_at(&self) -> Option<Instant> {
        self.rare.as_ref().and_then(|r| r.expire_at)
    }

    /// Sets [`expire_at`](Self::expire_at); `None` makes nothing.
    pub fn set_expire_at(&mut self, at: Option<Instant>) {
        match (&mut self.rare, at) {
            (Some(r), at) => r.expire_at = at,
            (None, Some(at)) => {
                self.rare = Some(Box::new(Rare {
                    expire_at: Some(at),
                    ..Rare::default()
                }));
            }
            (None, None) => {}
        }
    }

    /// A packet id not in flight (there is one: the window is below 65535).
    pub fn alloc_pid(&mut self) -> u16 {
        loop {
            let pid = self.next_pid;
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            if !self.flow.inflight.iter().any(|f| f.pid == pid) {
                return pid;
            }
        }
    }

    /// Queues `out` behind the others under the limits: a full queue drops
    /// a QoS 0 message, or makes room for a QoS 1/2 one by evicting the
    /// oldest QoS 0 message. Returns the drops to count (at most a few).
    pub fn push(
        &mut self,
        out: Outgoing,
        max_msgs: usize,
        max_bytes: usize,
        dropped: &mut Vec<MqttDrop>,
    ) {
        let cost = out.msg.cost();
        let full =
            |s: &Session| s.flow.queue.len() >= max_msgs || s.flow.queued_bytes + cost > max_bytes;
        while full(self) {
            if out.qos == QoS::AtMostOnce {
                self.count_drop(MqttDrop::QueueFullQos0);
                dropped.push(MqttDrop::QueueFullQos0);
                return;
            }
            match self
                .flow
                .queue
                .iter()
                .position(|o| o.qos == QoS::AtMostOnce)
            {
                Some(i) => {
                    if let Some(old) = self.flow.queue.remove(i) {
                        self.flow.queued_bytes -= old.msg.cost();
                    }
                    self.count_drop(MqttDrop::QueueFullQos0);
                    dropped.push(MqttDrop::QueueFullQos0);
                }
                None => {
                    self.count_drop(MqttDrop::QueueFullQos12);
                    dropped.push(MqttDrop::QueueFullQos12);
                    return;
                }
            }
        }
        self.flow.queued_bytes += cost;
        self.flow.queue.push_back(out);
    }

    /// Takes the first queued message.
    pub fn pop(&mut self) -> Option<Outgoing> {
        let out = self.flow.queue.pop_front()?;
        self.flow.queued_bytes -= out.msg.cost();
        Some(out)
    }

    /// Encodes what moves with the session to another shard: identity,
    /// expiry, subscriptions, messages in flight and queued, QoS 2 ids.
    pub fn encode(&self, w: &mut Writer, now: Instant) {
        w.str(&self.client_id)
            .opt_str(self.user.as_deref())
            .u8(u8::from(self.version == Version::V5))
            .u32(self.expiry)
            .u16(self.next_pid);
        w.u32(self.subs.len() as u32);
        for (filter, e) in self.subs.iter() {
            w.str(filter);
            encode_entry(w, e);
        }
        w.u32(self.flow.inbound_qos2.len() as u32);
        for pid in &self.flow.inbound_qos2 {
            w.u16(*pid);
        }
        w.u32(self.flow.inflight.len() as u32);
        for f in &self.flow.inflight {
            let state = match f.state {
                Flight::Unsent | Flight::Sent => 0,
                Flight::RelUnsent | Flight::Released => 1,
            };
            w.u16(f.pid).u8(state);
            encode_out(w, &f.out, now);
        }
        w.u32(self.flow.queue.len() as u32);
        for o in &self.flow.queue {
            encode_out(w, o, now);
        }
        let d = self.drops();
        w.u64(d.qos0).u64(d.qos12).u64(d.other);
    }

    /// The session [`encode`](Self::encode) wrote. Every message in
    /// flight is to be sent again (DUP, or PUBREL).
    pub fn decode(r: &mut Reader, now: Instant) -> Result<Session, BadMesh> {
        let client_id: Arc<str> = r.str()?.into();
        let user = r.opt_str()?.map(Arc::from);
        let version = if r.u8()? == 1 {
            Version::V5
        } else {
            Version::V311
        };
        let mut s = Session::new(client_id, version);
        s.user = user;
        s.expiry = r.u32()?;
        s.next_pid = r.u16()?.max(1);
        for _ in 0..r.u32()? {
            let filter = r.str()?;
            let e = decode_entry(r)?;
            s.subs.insert(filter, e);
        }
        for _ in 0..r.u32()? {
            s.flow.inbound_qos2.push(r.u16()?);
        }
        for _ in 0..r.u32()? {
            let pid = r.u16()?;
            let state = if r.u8()? == 1 {
                Flight::RelUnsent
            } else {
                Flight::Unsent
            };
            let out = decode_out(r, now)?;
            s.flow.inflight.push_back(Inflight {
                pid,
                state,
                out,
                redeliver: true,
            });
        }
        for _ in 0..r.u32()? {
            let out = decode_out(r, now)?;
            s.flow.queued_bytes += out.msg.cost();
            s.flow.queue.push_back(out);
        }
        let d = ClientDrops {
            qos0: r.u64()?,
            qos12: r.u64()?,
            other: r.u64()?,
        };
        if d != ClientDrops::default() {
            s.rare = Some(Box::new(Rare {
                drops: [d, d],
                expire_at: None,
            }));
        }
        Ok(s)
    }
}

pub(crate) fn encode_entry(w: &mut Writer, e: &SubEntry) {
    let flags = e.qos.as_u8()
        | u8::from(e.no_local) << 2
        | u8::from(e.retain_as_published) << 3
        | (e.retain_handling & 3) << 4
        | u8::from(e.sub_id.is_some()) << 6;
    w.u8(flags).u32(e.sub_id.unwrap_or(0));
}

pub(crate) fn decode_entry(r: &mut Reader) -> Result<SubEntry, BadMesh> {
    let flags = r.u8()?;
    let id = r.u32()?;
    Ok(SubEntry {
        qos: QoS::from_u8(flags & 3).ok_or(BadMesh)?,
        no_local: flags & 4 != 0,
        retain_as_published: flags & 8 != 0,
        retain_handling: (flags >> 4) & 3,
        sub_id: (flags & 0x40 != 0).then_some(id),
    })
}

fn encode_out(w: &mut Writer, o: &Outgoing, now: Instant) {
    w.u8(o.qos.as_u8()).u8(u8::from(o.retain));
    w.u32(o.sub_ids.len() as u32);
    for id in o.sub_ids.iter() {
        w.u32(*id);
    }
    w.message(&o.msg, now);
}

fn decode_out(r: &mut Reader, now: Instant) -> Result<Outgoing, BadMesh> {
    let qos = r.qos()?;
    let retain = r.u8()? != 0;
    let n = r.u32()? as usize;
    let mut ids = Vec::with_capacity(n.min(16));
    for _ in 0..n {
        ids.push(r.u32()?);
    }
    let msg = r.arc_message(now)?;
    Ok(Outgoing {
        msg,
        qos,
        retain,
        sub_ids: ids.into_boxed_slice(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringport_plugin::Bytes;

    fn out(qos: QoS, n: u8) -> Outgoing {
        Outgoing {
            msg: Arc::new(Message {
                topic: "t".into(),
                payload: Bytes::from(vec![n]),
                qos,
                retain: false,
                props: None,
                expires: None,
                origin: 0,
            }),
            qos,
            retain: false,
            sub_ids: Box::new([]),
        }
    }

    #[test]
    fn a_session_stays_small() {
        assert_eq!(std::mem::size_of::<Session>(), 104);
    }

    #[test]
    fn full_queue_drops_qos0_first() {
        let mut s = Session::new("c".into(), Version::V5);
        let mut d = Vec::new();
        s.push(out(QoS::AtMostOnce, 0), 2, usize::MAX, &mut d);
        s.push(out(QoS::AtLeastOnce, 1), 2, usize::MAX, &mut d);
        assert!(d.is_empty());
        // Full: a QoS 0 message is dropped...
        s.push(out(QoS::AtMostOnce, 2), 2, usize::MAX, &mut d);
        assert_eq!(d, [MqttDrop::QueueFullQos0]);
        // ... a QoS 1 message evicts the queued QoS 0 one...
        s.push(out(QoS::ExactlyOnce, 3), 2, usize::MAX, &mut d);
        assert_eq!(d, [MqttDrop::QueueFullQos0; 2]);
        let ids: Vec<u8> = s.flow.queue.iter().map(|o| o.msg.payload[0]).collect();
        assert_eq!(ids, [1, 3]);
        // ... and with no QoS 0 left, is dropped itself.
        s.push(out(QoS::AtLeastOnce, 4), 2, usize::MAX, &mut d);
        assert_eq!(d.last(), Some(&MqttDrop::QueueFullQos12));
        assert_eq!(
            s.drops(),
            ClientDrops {
                qos0: 2,
                qos12: 1,
                other: 0
            }
        );
        assert_eq!(s.pop().unwrap().msg.payload[0], 1);
        assert_eq!(s.flow.queued_bytes, out(QoS::AtMostOnce, 0).msg.cost());
    }

    #[test]
    fn pids_skip_those_in_flight() {
        let mut s = Session::new("c".into(), Version::V5);
        s.next_pid = u16::MAX;
        assert_eq!(s.alloc_pid(), u16::MAX);
        s.flow.inflight.push_back(Inflight {
            pid: 1,
            state: Flight::Sent,
            out: out(QoS::AtLeastOnce, 0),
            redeliver: false,
        });
        assert_eq!(s.alloc_pid(), 2);
    }

    #[test]
    fn session_round_trip() {
        let now = Instant::now();
        let mut s = Session::new("dev-1".into(), Version::V5);
        s.user = Some("alice".into());
        s.expiry = 300;
        s.next_pid = 9;
        s.subs.insert(
            "a/+".into(),
            SubEntry {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: false,
                retain_handling: 2,
                sub_id: Some(7),
            },
        );
        s.flow.inbound_qos2.push(4);
        s.flow.inflight.push_back(Inflight {
            pid: 8,
            state: Flight::Released,
            out: out(QoS::ExactlyOnce, 1),
            redeliver: false,
        });
        s.push(out(QoS::AtLeastOnce, 2), 10, 1 << 20, &mut Vec::new());
        for _ in 0..3 {
            s.count_drop(MqttDrop::QueueFullQos0);
        }
        let mut w = Writer::default();
        s.encode(&mut w, now);
        let t = Session::decode(&mut Reader::new(w.finish()), now).unwrap();
        assert_eq!(&*t.client_id, "dev-1");
        assert_eq!(t.user.as_deref(), Some("alice"));
        assert_eq!((t.expiry, t.next_pid, t.version), (300, 9, Version::V5));
        assert_eq!(*t.subs, *s.subs);
        assert_eq!(t.flow.inbound_qos2, [4]);
        assert_eq!(t.flow.inflight.len(), 1);
        assert_eq!(
            (t.flow.inflight[0].pid, t.flow.inflight[0].state),
            (8, Flight::RelUnsent)
        );
        assert_eq!(t.flow.queue.len(), 1);
        assert_eq!(t.flow.queued_bytes, s.flow.queued_bytes);
        assert_eq!(t.drops().qos0, 3);
        assert_eq!(t.drops_reported().qos0, 3);
    }
}
