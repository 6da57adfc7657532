//! Persistence: what the broker saves (retained messages, persistent
//! sessions) as [`persist::Snapshot`]s, and what it restores at start.
//!
//! Shards cannot be reached from outside their thread, so each shard
//! publishes an image of its state (shared `Arc`s, no copies) into a slot
//! every [`MqttConfig::snapshot_interval`] and when the engine shuts it
//! down; [`MqttFactory::snapshot`] turns the slots into one snapshot on the
//! caller's thread. A snapshot given to [`MqttFactory::restore`] before the
//! instances are made is split among them: every shard gets every retained
//! message, and each session goes to its client id's home shard, offline,
//! with its expiry counted from when its client left.
//!
//! Times inside the broker are the engine's `Instant`s; the snapshot
//! holds wall-clock seconds. The caller gives both clocks' "now" so that
//! one converts into the other.
//!
//! [`MqttConfig::snapshot_interval`]: super::MqttConfig::snapshot_interval
//! [`MqttFactory::snapshot`]: super::MqttFactory::snapshot
//! [`MqttFactory::restore`]: super::MqttFactory::restore

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringport_plugin::{shard_for_key, Bytes, Context, ShardId};

use super::ids::DirEntry;
use super::message::Message;
use super::plugin::Mqtt;
use super::session::{Flight, Inflight, Outgoing, Session};
use crate::mqtt::codec::{
    self, Decoded, Packet, Publish, PublishProps, QoS, SubIds, UserProps, Version,
};
use crate::mqtt::persist::{
    QueuedRecord, RetainedRecord, SessionRecord, Snapshot, SubscriptionRecord,
};
use crate::mqtt::topic::{matches, parse_filter};
use crate::mqtt::trie::SubEntry;

/// A session as a shard last saw it.
#[derive(Debug, Clone)]
pub(crate) struct SessionImage {
    pub client_id: String,
    pub version: Version,
    pub expiry: u32,
    /// When its client left; `None`: connected at the time of the image.
    pub left_at: Option<Instant>,
    pub subs: Vec<(String, SubEntry)>,
    /// In flight: packet id, message, PUBREC received (only PUBREL left).
    pub inflight: Vec<(u16, Outgoing, bool)>,
    pub queue: Vec<Outgoing>,
    pub inbound_qos2: Vec<u16>,
}

/// One shard's last image.
#[derive(Debug, Clone)]
pub(crate) struct ShardImage {
    pub taken_at: Instant,
    pub retained: Vec<Arc<Message>>,
    pub sessions: Vec<SessionImage>,
}

/// The slots of every shard, and a snapshot waiting to be restored.
#[derive(Debug, Default)]
pub(crate) struct Store {
    images: Mutex<Vec<Option<ShardImage>>>,
    restore: Mutex<Option<(Snapshot, u64)>>,
    /// The shard count the instances were made for (0: none made yet).
    shard_count: std::sync::atomic::AtomicUsize,
}

/// What one shard restores, applied when the shard starts (or on its first
/// input, when it first learns the engine's time).
#[derive(Debug)]
pub(crate) struct Restore {
    pub wall_now: u64,
    pub retained: Vec<RetainedRecord>,
    pub sessions: Vec<SessionRecord>,
}

impl Store {
    pub fn put(&self, shard: ShardId, image: ShardImage) {
        let mut g = self.images.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() <= shard {
            g.resize(shard + 1, None);
        }
        g[shard] = Some(image);
    }

    pub fn set_restore(&self, snapshot: Snapshot, wall_now: u64) {
        *self.restore.lock().unwrap_or_else(|p| p.into_inner()) = Some((snapshot, wall_now));
    }

    /// The part of the snapshot to restore that belongs to `shard`.
    pub fn restore_for(&self, shard: ShardId, shard_count: usize) -> Option<Restore> {
        self.shard_count
            .store(shard_count, std::sync::atomic::Ordering::Relaxed);
        let g = self.restore.lock().unwrap_or_else(|p| p.into_inner());
        let (snap, wall_now) = g.as_ref()?;
        Some(Restore {
            wall_now: *wall_now,
            retained: snap.retained.clone(),
            sessions: snap
                .sessions
                .iter()
                .filter(|s| shard_for_key(s.client_id.as_bytes(), shard_count) == shard)
                .cloned()
                .collect(),
        })
    }

    /// Every slot as one snapshot. `now` and `wall_now` (seconds since the
    /// UNIX epoch) are the same moment on the two clocks.
    pub fn snapshot(&self, now: Instant, wall_now: u64) -> Snapshot {
        let g = self.images.lock().unwrap_or_else(|p| p.into_inner());
        let wall = |t: Instant| wall_now.saturating_sub(now.saturating_duration_since(t).as_secs());
        let mut snap = Snapshot::default();
        // A shard that has published no image yet (no input since start)
        // still holds what was restored for it: that part of the restored
        // snapshot goes out as it came in, so that a save before every
        // shard woke up loses nothing.
        let shard_count = self.shard_count.load(std::sync::atomic::Ordering::Relaxed);
        if let Some((restored, _)) = self
            .restore
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let has_image = |shard: usize| g.get(shard).is_some_and(Option::is_some);
            if !g.iter().any(Option::is_some) {
                snap.retained = restored.retained.clone();
            }
            snap.sessions.extend(
                restored
                    .sessions
                    .iter()
                    .filter(|s| {
                        !has_image(shard_for_key(s.client_id.as_bytes(), shard_count.max(1)))
                    })
                    .cloned(),
            );
        }
        // Every shard holds every retained message: the freshest image has them.
        if let Some(img) = g.iter().flatten().max_by_key(|i| i.taken_at) {
            for m in &img.retained {
                snap.retained.push(RetainedRecord {
                    topic: m.topic.to_string(),
                    qos: m.qos.as_u8(),
                    payload: m.payload.to_vec(),
                    properties: encode_props(m, img.taken_at),
                    stored_at: wall(img.taken_at),
                });
            }
        }
        for img in g.iter().flatten() {
            let at = wall(img.taken_at);
            for s in &img.sessions {
                let queued_rec = |o: &Outgoing, pid: Option<u16>| QueuedRecord {
                    topic: o.msg.topic.to_string(),
                    qos: o.qos.as_u8(),
                    payload: o.msg.payload.to_vec(),
                    retain: o.retain,
                    packet_id: pid,
                    dup: pid.is_some(),
                    properties: encode_props(&o.msg, img.taken_at),
                    stored_at: at,
                };
                let mut queued = Vec::new();
                let mut inflight_ids = Vec::new();
                for (pid, o, released) in &s.inflight {
                    if *released {
                        inflight_ids.push(*pid);
                    } else {
                        queued.push(queued_rec(o, Some(*pid)));
                    }
                }
                queued.extend(s.queue.iter().map(|o| queued_rec(o, None)));
                snap.sessions.push(SessionRecord {
                    client_id: s.client_id.clone(),
                    protocol_version: s.version.level(),
                    session_expiry: s.expiry,
                    disconnected_at: s.left_at.map_or(at, wall),
                    subscriptions: s
                        .subs
                        .iter()
                        .map(|(f, e)| SubscriptionRecord {
                            filter: f.clone(),
                            qos: e.qos.as_u8(),
                            no_local: e.no_local,
                            retain_as_published: e.retain_as_published,
                            retain_handling: e.retain_handling,
                            subscription_id: e.sub_id,
                        })
                        .collect(),
                    queued,
                    inflight_ids,
                    awaiting_pubrel: s.inbound_qos2.clone(),
                });
            }
        }
        snap
    }
}

/// The v5 PUBLISH properties of `m` as encoded on the wire (without the
/// length), its expiry counted from `now`; `None` without any.
fn encode_props(m: &Message, now: Instant) -> Option<Vec<u8>> {
    let expiry = m.remaining(now);
    if m.props.is_none() && expiry.is_none() {
        return None;
    }
    let props = m.props.as_deref();
    let user: Vec<(&str, &str)> = props.map_or_else(Vec::new, |p| {
        p.user.iter().map(|(k, v)| (&**k, &**v)).collect()
    });
    let p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "t",
        packet_id: 0,
        props: PublishProps {
            payload_format: props.and_then(|p| p.payload_format),
            message_expiry: expiry.map(|e| e.max(1)),
            topic_alias: None,
            response_topic: props.and_then(|p| p.response_topic.as_deref()),
            correlation_data: props.and_then(|p| p.correlation_data.as_deref()),
            user_properties: UserProps::Pairs(&user),
            subscription_ids: SubIds::default(),
            content_type: props.and_then(|p| p.content_type.as_deref()),
        },
        payload: &[],
    };
    let mut out = Vec::new();
    codec::encode(&Packet::Publish(p), Version::V5, &mut out).ok()?;
    // Fixed header (type byte, remaining length), topic "t", then the
    // properties' length and the properties.
    let (_, n) = varint(&out[1..])?;
    let rest = out.get(1 + n + 3..)?;
    let (len, m) = varint(rest)?;
    rest.get(m..m + len).map(<[u8]>::to_vec)
}

/// A variable byte integer and its size.
fn varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut v = 0usize;
    for (i, byte) in b.iter().take(4).enumerate() {
        v |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A message from a record, its properties checked by the codec. Its expiry
/// is reduced by the time on disk (`elapsed` seconds); `None` once expired
/// or when the properties do not decode.
fn restore_message(
    topic: &str,
    qos: u8,
    retain: bool,
    payload: &[u8],
    props: Option<&[u8]>,
    elapsed: u64,
    now: Instant,
) -> Option<Message> {
    let qos = QoS::from_u8(qos)?;
    let mut msg = Message {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload),
        qos,
        retain,
        props: None,
        expires: None,
        origin: 0,
    };
    if let Some(props) = props {
        // A QoS 0 PUBLISH of topic "t" around the properties.
        let mut body = vec![0, 1, b't'];
        put_varint(&mut body, props.len());
        body.extend_from_slice(props);
        let mut pkt = vec![0x30];
        put_varint(&mut pkt, body.len());
        pkt.extend_from_slice(&body);
        let Ok(Decoded::Packet(Packet::Publish(p), _)) =
            codec::decode(&pkt, Some(Version::V5), usize::MAX)
        else {
            return None;
        };
        msg.props = Message::props_of(&p);
        if let Some(e) = p.props.message_expiry {
            let left = u64::from(e).checked_sub(elapsed).filter(|l| *l > 0)?;
            msg.expires = Some(now + Duration::from_secs(left));
        }
    }
    Some(msg)
}

impl Mqtt {
    /// This shard's image, for [`Store::snapshot`].
    pub(crate) fn image(&self, now: Instant) -> ShardImage {
        let inflight = |s: &Session| {
            s.flow
                .inflight
                .iter()
                .map(|f| {
                    let released = matches!(f.state, Flight::Released | Flight::RelUnsent);
                    (f.pid, f.out.clone(), released)
                })
                .collect()
        };
        ShardImage {
            taken_at: now,
            retained: self.retained.iter().map(|(_, m)| Arc::clone(m)).collect(),
            sessions: self
                .sessions
                .values()
                .filter(|s| s.expiry > 0)
                .map(|s| SessionImage {
                    client_id: s.client_id.to_string(),
                    version: s.version,
                    expiry: s.expiry,
                    left_at: s.conn.is_none().then(|| {
                        s.expire_at().map_or(now, |t| {
                            t.checked_sub(Duration::from_secs(u64::from(s.expiry)))
                                .unwrap_or(now)
                        })
                    }),
                    subs: s.subs.iter().map(|(f, e)| (f.to_string(), *e)).collect(),
                    inflight: inflight(s),
                    queue: s.flow.queue.iter().cloned().collect(),
                    inbound_qos2: s.flow.inbound_qos2.clone(),
                })
                .collect(),
        }
    }

    /// Publishes this shard's image.
    pub(crate) fn save_image(&self, now: Instant) {
        self.store.put(self.shard, self.image(now));
    }

    /// Applies what was restored for this shard.
    pub(crate) fn apply_restore(&mut self, ctx: &mut dyn Context, r: Restore) {
        let now = ctx.now();
        let wall_now = r.wall_now;
        for rec in r.retained {
            let elapsed = wall_now.saturating_sub(rec.stored_at);
            let Some(m) = restore_message(
                &rec.topic,
                rec.qos,
                true,
                &rec.payload,
                rec.properties.as_deref(),
                elapsed,
                now,
            ) else {
                continue;
            };
            if self.check_topic(&m.topic).is_err() || m.payload.is_empty() {
                continue;
            }
            if self.retained.set(&rec.topic, Arc::new(m)).is_err() {
                self.count(ctx, super::stats::MqttDrop::RetainedFull);
            }
        }
        for rec in r.sessions {
            let away = wall_now.saturating_sub(rec.disconnected_at);
            // This broker's cap applies to restored sessions too.
            let expiry = rec.session_expiry.min(self.cfg.max_session_expiry.max(1));
            if rec.session_expiry == 0
                || (expiry != u32::MAX && away >= u64::from(expiry))
                || self.sessions.len() >= self.cfg.max_sessions
            {
                continue;
            }
            if self.ids.has_session(rec.client_id.as_str()) {
                continue;
            }
            let version = if rec.protocol_version == 5 {
                Version::V5
            } else {
                Version::V311
            };
            let key = self.new_key();
            let cid: Arc<str> = rec.client_id.as_str().into();
            let mut s = Session::new(Arc::clone(&cid), version);
            s.expiry = expiry;
            if expiry != u32::MAX {
                let left = u64::from(expiry) - away;
                s.set_expire_at(Some(now + Duration::from_secs(left)));
            }
            let mut subs = BTreeMap::new();
            for sub in rec.subscriptions {
                let Some(qos) = QoS::from_u8(sub.qos) else {
                    continue;
                };
                subs.insert(
                    sub.filter.into_boxed_str(),
                    SubEntry {
                        qos,
                        no_local: sub.no_local,
                        retain_as_published: sub.retain_as_published,
                        retain_handling: sub.retain_handling.min(2),
                        sub_id: sub.subscription_id,
                    },
                );
            }
            s.subs = subs.into();
            let mut inflight = VecDeque::new();
            let mut dropped = Vec::new();
            for q in rec.queued {
                let elapsed = wall_now.saturating_sub(q.stored_at);
                let Some(m) = restore_message(
                    &q.topic,
                    q.qos,
                    q.retain,
                    &q.payload,
                    q.properties.as_deref(),
                    elapsed,
                    now,
                ) else {
                    continue;
                };
                let out = Outgoing {
                    qos: m.qos,
                    retain: m.retain,
                    sub_ids: restored_sub_ids(&s.subs, &m.topic),
                    msg: Arc::new(m),
                };
                match q.packet_id {
                    Some(pid) if out.qos != QoS::AtMostOnce => inflight.push_back(Inflight {
                        pid,
                        state: Flight::Unsent,
                        out,
                        redeliver: q.dup,
                    }),
                    _ => s.push(
                        out,
                        self.cfg.max_queued_messages,
                        self.cfg.max_queued_bytes,
                        &mut dropped,
                    ),
                }
            }
            for pid in rec.inflight_ids {
                inflight.push_back(Inflight {
                    pid,
                    state: Flight::RelUnsent,
                    out: Outgoing {
                        msg: Arc::new(Message {
                            topic: "".into(),
                            payload: Bytes::new(),
                            qos: QoS::ExactlyOnce,
                            retain: false,
                            props: None,
                            expires: None,
                            origin: 0,
                        }),
                        qos: QoS::ExactlyOnce,
                        retain: false,
                        sub_ids: Box::new([]),
                    },
                    redeliver: true,
                });
            }
            s.flow.inflight = inflight;
            s.flow.inbound_qos2 = rec.awaiting_pubrel;
            s.next_pid = s
                .flow
                .inflight
                .iter()
                .map(|f| f.pid)
                .max()
                .map_or(1, |p| p.wrapping_add(1).max(1));
            let epoch = self.next_epoch;
            self.next_epoch = self.next_epoch.wrapping_add(1);
            s.epoch = epoch;
            self.ids.set_home(
                cid,
                DirEntry {
                    shard: self.shard,
                    conn: 0,
                    epoch,
                },
            );
            self.install(ctx, key, s);
        }
    }
}

/// The subscription identifiers a queued message is delivered with after a
/// restart (the file does not keep them): those of the session's plain
/// subscriptions that match its topic, or, when none does, of its shared
/// ones that do (the message then came through a group that chose it).
fn restored_sub_ids(subs: &BTreeMap<Box<str>, SubEntry>, topic: &str) -> Box<[u32]> {
    let matching = |shared: bool| {
        subs.iter().filter(move |(f, _)| {
            parse_filter(f)
                .is_ok_and(|p| p.group().is_some() == shared && matches(p.filter(), topic))
        })
    };
    let shared = matching(false).next().is_none();
    matching(shared).filter_map(|(_, e)| e.sub_id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::broker::message::MsgProps;

    #[test]
    fn properties_round_trip_through_the_codec() {
        let now = Instant::now();
        let m = Message {
            topic: "a".into(),
            payload: Bytes::from_static(b"p"),
            qos: QoS::AtLeastOnce,
            retain: true,
            props: Some(Box::new(MsgProps {
                payload_format: Some(1),
                response_topic: Some("r/t".into()),
                correlation_data: Some(vec![9].into_boxed_slice()),
                content_type: Some("text/plain".into()),
                user: vec![("k".into(), "v".into())],
            })),
            expires: Some(now + Duration::from_secs(100)),
            origin: 3,
        };
        let props = encode_props(&m, now).unwrap();
        assert_eq!(&props[..2], [0x01, 1]);
        let back = restore_message("a", 1, true, b"p", Some(&props), 40, now).unwrap();
        assert_eq!(back.props, m.props);
        assert_eq!(back.expires, Some(now + Duration::from_secs(60)));
        // Expired on disk: not restored.
        assert!(restore_message("a", 1, true, b"p", Some(&props), 100, now).is_none());
        assert_eq!(
            encode_props(
                &Message {
                    props: None,
                    expires: None,
                    ..m
                },
                now
            ),
            None
        );
    }
}
