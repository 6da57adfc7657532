//! Unit tests of the broker on [`RecordingContext`]s: one context per
//! simulated shard, mesh messages carried between them by [`Net::carry`].

mod bridge;
mod connect;
mod hostile;
mod listeners;
mod options;
mod persist;
mod publish;
mod shards;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ringport_plugin::testing::RecordingContext;
use ringport_plugin::{ConnId, Context, ListenerId, Plugin, StreamInfo};

use super::{Mqtt, MqttConfig, MqttFactory};
use crate::mqtt::codec::{
    self, Connect, ConnectProps, Decoded, Packet, PubResp, Publish, PublishProps, QoS, ReasonCode,
    SubAck, SubOptions, Subscribe, Version,
};

/// Several shards' instances and contexts, and the streams open on them.
pub(super) struct Net {
    pub factory: MqttFactory,
    pub shards: Vec<Mqtt>,
    pub ctxs: Vec<RecordingContext>,
    pub seen: Vec<usize>,
    versions: HashMap<ConnId, Version>,
    pending: HashMap<ConnId, Vec<u8>>,
    on: HashMap<ConnId, usize>,
    /// Mesh messages tagged with one of these are held back by
    /// [`carry`](Net::carry) (to play a slow ring) until
    /// [`release`](Net::release).
    pub hold_tags: Vec<u64>,
    held: Vec<(usize, ringport_plugin::testing::MeshSend)>,
}

pub(super) fn anon() -> MqttConfig {
    MqttConfig {
        allow_anonymous: true,
        ..MqttConfig::default()
    }
}

impl Net {
    pub fn new(n: usize, cfg: MqttConfig) -> Net {
        let factory = MqttFactory::new(cfg);
        let start = std::time::Instant::now();
        Net {
            shards: (0..n).map(|i| factory.instance(i, n)).collect(),
            ctxs: (0..n)
                .map(|i| RecordingContext::new().with_shard(i, n).with_now(start))
                .collect(),
            factory,
            seen: vec![0; n],
            versions: HashMap::new(),
            pending: HashMap::new(),
            on: HashMap::new(),
            hold_tags: Vec::new(),
            held: Vec::new(),
        }
    }

    pub fn open(&mut self, shard: usize, raw: u64) -> ConnId {
        self.open_on(shard, raw, 0)
    }

    /// Opens a stream that came through listener `listener`.
    pub fn open_on(&mut self, shard: usize, raw: u64, listener: u16) -> ConnId {
        let conn = ConnId::from_raw(raw);
        let info = StreamInfo {
            conn,
            listener: ListenerId(listener),
            peer: SocketAddr::from(([127, 0, 0, 1], 40000 + raw as u16)),
            local: SocketAddr::from(([127, 0, 0, 1], 1883)),
        };
        // The engine knows each stream's peer (`Context::peer`).
        self.ctxs[shard].set_peer(conn, info.peer);
        self.shards[shard].handle_open(&mut self.ctxs[shard], &info);
        self.on.insert(conn, shard);
        conn
    }

    fn shard_of(&self, conn: ConnId) -> usize {
        self.on[&conn]
    }

    /// Feeds bytes the way the engine does (unconsumed bytes kept).
    pub fn feed(&mut self, conn: ConnId, bytes: &[u8]) {
        let s = self.shard_of(conn);
        let buf = self.pending.entry(conn).or_default();
        buf.extend_from_slice(bytes);
        let data = std::mem::take(buf);
        let n = self.shards[s]
            .handle_data(&mut self.ctxs[s], conn, &data)
            .expect("the broker never fails handle_data");
        assert!(n <= data.len());
        self.pending.insert(conn, data[n..].to_vec());
        self.carry();
    }

    /// Encodes `p` in the stream's version and feeds it.
    pub fn send(&mut self, conn: ConnId, p: &Packet<'_>) {
        let v = match p {
            Packet::Connect(c) => {
                self.versions.insert(conn, c.version);
                c.version
            }
            _ => self.versions.get(&conn).copied().unwrap_or(Version::V311),
        };
        let mut out = Vec::new();
        codec::encode(p, v, &mut out).unwrap();
        self.feed(conn, &out);
    }

    /// Opens a stream, connects it and returns the CONNACK bytes.
    pub fn connect(&mut self, shard: usize, raw: u64, c: Connect<'_>) -> (ConnId, Vec<u8>) {
        let conn = self.open(shard, raw);
        self.send(conn, &Packet::Connect(c));
        let out = self.take(conn);
        (conn, out)
    }

    /// Carries mesh messages between shards until none are left.
    pub fn carry(&mut self) {
        loop {
            let mut moved = false;
            for from in 0..self.shards.len() {
                let sends: Vec<_> = self.ctxs[from].mesh_sends()[self.seen[from]..].to_vec();
                self.seen[from] += sends.len();
                for s in sends {
                    moved = true;
                    if self.hold_tags.contains(&s.msg.tag) {
                        self.held.push((from, s));
                        continue;
                    }
                    self.shards[s.to].handle_message(&mut self.ctxs[s.to], from, s.msg);
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// Delivers what [`carry`](Net::carry) held back, in order, holds
    /// nothing more, and carries what follows.
    pub fn release(&mut self) {
        self.hold_tags.clear();
        for (from, s) in std::mem::take(&mut self.held) {
            self.shards[s.to].handle_message(&mut self.ctxs[s.to], from, s.msg);
        }
        self.carry();
    }

    pub fn take(&mut self, conn: ConnId) -> Vec<u8> {
        let s = self.shard_of(conn);
        self.ctxs[s].take_written(conn)
    }

    pub fn closed(&self, conn: ConnId) -> bool {
        self.ctxs[self.shard_of(conn)].is_closed(conn)
    }

    /// The engine's close report (after the plugin's close).
    pub fn close(&mut self, conn: ConnId) {
        let s = self.shard_of(conn);
        self.shards[s].handle_close(
            &mut self.ctxs[s],
            conn,
            ringport_plugin::CloseReason::PeerClosed,
        );
        self.carry();
    }

    /// Moves every shard's clock and runs its sweep.
    pub fn advance(&mut self, by: Duration) {
        for s in 0..self.shards.len() {
            self.ctxs[s].advance(by);
            let now = self.ctxs[s].now();
            self.shards[s].handle_timer(&mut self.ctxs[s], now, super::TICK_TIMER);
        }
        self.carry();
    }

    /// The engine's word that `conn`'s queue has room again.
    pub fn writable(&mut self, conn: ConnId) {
        let s = self.shard_of(conn);
        self.shards[s].handle_writable(&mut self.ctxs[s], conn);
        self.carry();
    }

    /// Runs every shard's retry timer.
    pub fn retry(&mut self) {
        for s in 0..self.shards.len() {
            let now = self.ctxs[s].now();
            self.shards[s].handle_timer(&mut self.ctxs[s], now, super::RETRY_TIMER);
        }
        self.carry();
    }

    pub fn stats(&self) -> std::sync::Arc<super::MqttStats> {
        self.factory.stats()
    }
}

pub(super) fn decode_all(buf: &[u8], v: Version) -> Vec<Packet<'_>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        match codec::decode(&buf[off..], Some(v), usize::MAX).unwrap() {
            Decoded::Packet(p, n) => {
                out.push(p);
                off += n;
            }
            Decoded::Incomplete => panic!("partial packet written"),
        }
    }
    out
}

pub(super) fn conn_pkt(v: Version, id: &str, clean: bool) -> Connect<'_> {
    Connect {
        version: v,
        clean_start: clean,
        keep_alive: 0,
        client_id: id,
        will: None,
        username: None,
        password: None,
        props: ConnectProps::default(),
    }
}

pub(super) fn v5(id: &str) -> Connect<'_> {
    conn_pkt(Version::V5, id, true)
}

pub(super) fn v3(id: &str) -> Connect<'_> {
    conn_pkt(Version::V311, id, true)
}

pub(super) fn publish<'a>(topic: &'a str, payload: &'a [u8], qos: QoS, pid: u16) -> Packet<'a> {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic,
        packet_id: pid,
        props: PublishProps::default(),
        payload,
    })
}

pub(super) fn subscribe(pid: u16, filters: &[(&'static str, QoS)]) -> Packet<'static> {
    Packet::Subscribe(Subscribe {
        packet_id: pid,
        subscription_id: None,
        user_properties: Default::default(),
        filters: filters
            .iter()
            .map(|&(f, q)| (f, SubOptions::qos(q)))
            .collect(),
    })
}

pub(super) fn ack(kind: u8, pid: u16) -> Packet<'static> {
    let r = PubResp {
        packet_id: pid,
        code: ReasonCode::SUCCESS,
        props: Default::default(),
    };
    match kind {
        4 => Packet::PubAck(r),
        5 => Packet::PubRec(r),
        6 => Packet::PubRel(r),
        _ => Packet::PubComp(r),
    }
}

/// The bytes of `p` as the broker writes them in `v`.
pub(super) fn enc(p: &Packet<'_>, v: Version) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode(p, v, &mut out).unwrap();
    out
}

/// A PUBLISH as the broker sends it.
pub(super) fn out(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    pid: u16,
    retain: bool,
    dup: bool,
) -> Packet<'static> {
    Packet::Publish(Publish {
        dup,
        qos,
        retain,
        topic: Box::leak(topic.to_owned().into_boxed_str()),
        packet_id: pid,
        props: PublishProps::default(),
        payload: Box::leak(payload.to_vec().into_boxed_slice()),
    })
}

pub(super) fn suback(pid: u16, codes: &[u8]) -> Packet<'static> {
    Packet::SubAck(SubAck {
        packet_id: pid,
        props: Default::default(),
        codes: codes.iter().map(|c| ReasonCode(*c)).collect(),
    })
}

/// A connected v3.1.1 (or v5) client subscribed to `filters`.
pub(super) fn subscriber(
    net: &mut Net,
    raw: u64,
    v: Version,
    filters: &[(&'static str, QoS)],
) -> ConnId {
    let id = format!("sub-{raw}");
    let (c, _) = net.connect(0, raw, conn_pkt(v, Box::leak(id.into_boxed_str()), true));
    net.send(c, &subscribe(1, filters));
    net.take(c);
    c
}
