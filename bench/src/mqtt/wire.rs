//! The load generator's side of MQTT: the few packets it sends, encoded
//! with ringport's own codec (`ringport_protocols::mqtt::codec`), cutting a
//! received byte stream into packets, and the blocking exchanges of a
//! connection's set-up (CONNECT / CONNACK, SUBSCRIBE / SUBACK).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use ringport_protocols::mqtt::codec::{
    self, ConnAck, Connect, ConnectProps, Decoded, Packet, PubResp, Publish, PublishProps,
    SubOptions, Subscribe, UserProps,
};
pub use ringport_protocols::mqtt::codec::{QoS, ReasonCode, Version};

/// The largest packet the load generator accepts from a broker.
pub const MAX_PACKET: usize = 1 << 20;
/// Keep-alive the clients announce in CONNECT, in seconds.
pub const KEEP_ALIVE_S: u16 = 60;
/// A connection that sent nothing for this long sends a PINGREQ (half the
/// keep-alive, so that a broker enforcing 1.5 x keep-alive never closes it).
pub const PING_AFTER_NS: u64 = KEEP_ALIVE_S as u64 * 1_000_000_000 / 2;
/// How long set-up waits for a CONNACK or SUBACK.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The QoS of `n` (0, 1 or 2).
pub fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// The length of the whole packet at the start of `buf` (fixed header
/// included) once its fixed header is complete; `None` before that, or
/// for a remaining length longer than four bytes (`Some(usize::MAX)`).
pub fn packet_len(buf: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for i in 0..4 {
        let b = *buf.get(1 + i)?;
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(1 + i + 1 + len);
        }
    }
    Some(usize::MAX)
}

/// Appends `p` encoded for `version` to `out`.
pub fn encode(p: &Packet<'_>, version: Version, out: &mut Vec<u8>) {
    codec::encode(p, version, out).expect("the load generator's packets are small and valid");
}

/// Appends a CONNECT with a clean session and `client_id`.
pub fn connect(client_id: &str, version: Version, out: &mut Vec<u8>) {
    let c = Connect {
        version,
        clean_start: true,
        keep_alive: KEEP_ALIVE_S,
        client_id,
        will: None,
        username: None,
        password: None,
        props: ConnectProps::default(),
    };
    encode(&Packet::Connect(c), version, out);
}

/// Appends a SUBSCRIBE to `filter` at `qos`.
pub fn subscribe(filter: &str, qos: QoS, packet_id: u16, version: Version, out: &mut Vec<u8>) {
    let filters = vec![(
        filter,
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        },
    )];
    let s = Subscribe {
        packet_id,
        subscription_id: None,
        user_properties: UserProps::default(),
        filters,
    };
    encode(&Packet::Subscribe(s), version, out);
}

/// Appends a PUBLISH of `payload` to `topic`.
pub fn publish(
    topic: &str,
    qos: QoS,
    packet_id: u16,
    payload: &[u8],
    version: Version,
    out: &mut Vec<u8>,
) {
    let p = Publish {
        dup: false,
        qos,
        retain: false,
        topic,
        packet_id,
        props: PublishProps::default(),
        payload,
    };
    encode(&Packet::Publish(p), version, out);
}

/// Appends a PUBACK of `packet_id`.
pub fn puback(packet_id: u16, version: Version, out: &mut Vec<u8>) {
    let r = PubResp {
        packet_id,
        code: ReasonCode::SUCCESS,
        props: Default::default(),
    };
    encode(&Packet::PubAck(r), version, out);
}

/// Appends a PINGREQ.
pub fn pingreq(version: Version, out: &mut Vec<u8>) {
    encode(&Packet::PingReq, version, out);
}

/// Appends a DISCONNECT (normal disconnection).
pub fn disconnect(version: Version, out: &mut Vec<u8>) {
    let d = codec::Disconnect {
        code: ReasonCode::SUCCESS,
        session_expiry: None,
        reason_string: None,
        user_properties: UserProps::default(),
        server_reference: None,
    };
    encode(&Packet::Disconnect(d), version, out);
}

/// The receive side of one connection: bytes in, whole packets out.
///
/// A packet split across reads is put back together in `carry`, taking
/// from each read only the bytes it lacks, so a read that ends in the
/// middle of a packet costs a copy of that packet, not of the read.
#[derive(Debug, Default)]
pub struct Rx {
    carry: Vec<u8>,
    /// The stream can no longer be cut into packets.
    pub broken: bool,
}

impl Rx {
    /// Cuts `data` (the next bytes of the stream) into packets and hands
    /// each to `on`. A packet that does not decode breaks the stream: the
    /// error says why, once, and nothing more is read.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        version: Version,
        mut on: impl FnMut(&Packet<'_>),
    ) -> Result<(), String> {
        if self.broken {
            return Ok(());
        }
        while !self.carry.is_empty() {
            let want = packet_len(&self.carry).unwrap_or(self.carry.len() + 1);
            if want > MAX_PACKET {
                self.broken = true;
                return Err(format!("a packet of {want} bytes"));
            }
            if self.carry.len() < want {
                if data.is_empty() {
                    return Ok(());
                }
                let take = (want - self.carry.len()).min(data.len());
                self.carry.extend_from_slice(&data[..take]);
                data = &data[take..];
                continue;
            }
            let carry = std::mem::take(&mut self.carry);
            let verdict = match codec::decode(&carry, Some(version), MAX_PACKET) {
                Ok(Decoded::Packet(p, _)) => {
                    on(&p);
                    Ok(())
                }
                Ok(Decoded::Incomplete) => Err("a whole packet decoded as incomplete".to_owned()),
                Err(e) => Err(format!("{e:?}")),
            };
            self.carry = carry;
            self.carry.clear();
            if verdict.is_err() {
                self.broken = true;
                return verdict;
            }
        }
        while !data.is_empty() {
            match codec::decode(data, Some(version), MAX_PACKET) {
                Ok(Decoded::Packet(p, n)) => {
                    on(&p);
                    data = &data[n..];
                }
                Ok(Decoded::Incomplete) => {
                    self.carry.extend_from_slice(data);
                    return Ok(());
                }
                Err(e) => {
                    self.broken = true;
                    return Err(format!("{e:?}"));
                }
            }
        }
        Ok(())
    }
}

/// What a set-up exchange waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaited {
    ConnAck,
    SubAck(u16),
}

/// Reads from `s` until the packet `what` arrives; other packets are an error.
fn await_packet(
    s: &mut TcpStream,
    version: Version,
    what: Awaited,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let addr = s.peer_addr().ok();
    loop {
        match codec::decode(buf, Some(version), MAX_PACKET) {
            Ok(Decoded::Packet(p, n)) => {
                let verdict = check_setup_reply(&p, what);
                buf.drain(..n);
                return verdict.map_err(|e| anyhow!("{}: {e}", fmt_addr(addr)));
            }
            Ok(Decoded::Incomplete) => {}
            Err(e) => {
                return Err(anyhow!(
                    "{}: the broker's answer does not decode as MQTT: {e:?} (does it speak MQTT?)",
                    fmt_addr(addr)
                ))
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(anyhow!(
                "{}: no {what:?} within {SETUP_TIMEOUT:?} (does it speak MQTT?)",
                fmt_addr(addr)
            ));
        }
        s.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 512];
        let n = s
            .read(&mut chunk)
            .with_context(|| format!("{}: waiting for {what:?}", fmt_addr(addr)))?;
        if n == 0 {
            return Err(anyhow!(
                "{}: the broker closed the connection before {what:?}",
                fmt_addr(addr)
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn fmt_addr(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "the broker".into(), |a| a.to_string())
}

fn check_setup_reply(p: &Packet<'_>, what: Awaited) -> Result<(), String> {
    match (p, what) {
        (Packet::ConnAck(ConnAck { code, .. }), Awaited::ConnAck) => {
            if *code == ReasonCode::SUCCESS {
                Ok(())
            } else {
                Err(format!(
                    "CONNACK refused the connection: code {:#04x}",
                    code.0
                ))
            }
        }
        (Packet::SubAck(s), Awaited::SubAck(id)) => {
            if s.packet_id != id {
                return Err(format!("SUBACK for packet {} not {id}", s.packet_id));
            }
            match s.codes.first() {
                Some(c) if c.0 < 0x80 => Ok(()),
                Some(c) => Err(format!(
                    "SUBACK refused the subscription: code {:#04x}",
                    c.0
                )),
                None => Err("SUBACK without a code".into()),
            }
        }
        (other, _) => Err(format!("{what:?} expected, got {}", kind(other))),
    }
}

/// The name of a packet's type, for messages.
pub fn kind(p: &Packet<'_>) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
        Packet::Auth(_) => "AUTH",
    }
}

/// One connection to set up: where, as whom, and what to subscribe to.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The broker's address.
    pub addr: SocketAddr,
    /// The client id.
    pub client_id: String,
    /// A filter to subscribe to, and at which QoS.
    pub subscribe: Option<(String, QoS)>,
}

/// Connects every one of `setups` in batches of `batch` (each batch:
/// connect, CONNECT, wait for the CONNACKs, SUBSCRIBE, wait for the
/// SUBACKs), so the broker never has more than `batch` connections
/// waiting to be accepted. Returns the streams, blocking, with
/// TCP_NODELAY set, in order.
pub fn connect_all(setups: &[Setup], version: Version, batch: usize) -> Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(setups.len());
    let mut out = Vec::with_capacity(256);
    let mut buf = Vec::with_capacity(512);
    for group in setups.chunks(batch.max(1)) {
        let first = streams.len();
        for s in group {
            let mut stream = TcpStream::connect_timeout(&s.addr, Duration::from_secs(5))
                .with_context(|| format!("connecting to the broker at {}", s.addr))?;
            stream.set_nodelay(true)?;
            out.clear();
            connect(&s.client_id, version, &mut out);
            stream
                .write_all(&out)
                .with_context(|| format!("sending CONNECT to {}", s.addr))?;
            streams.push(stream);
        }
        for stream in &mut streams[first..] {
            buf.clear();
            await_packet(stream, version, Awaited::ConnAck, &mut buf)?;
        }
        for (stream, s) in streams[first..].iter_mut().zip(group) {
            if let Some((filter, q)) = &s.subscribe {
                out.clear();
                subscribe(filter, *q, 1, version, &mut out);
                stream
                    .write_all(&out)
                    .with_context(|| format!("sending SUBSCRIBE to {}", s.addr))?;
            }
        }
        for (stream, s) in streams[first..].iter_mut().zip(group) {
            if s.subscribe.is_some() {
                buf.clear();
                await_packet(stream, version, Awaited::SubAck(1), &mut buf)?;
            }
            stream.set_read_timeout(None)?;
        }
    }
    Ok(streams)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_lengths_from_the_fixed_header() {
        assert_eq!(packet_len(&[0x30]), None);
        assert_eq!(packet_len(&[0x30, 0x00]), Some(2));
        assert_eq!(packet_len(&[0x30, 0x7f]), Some(2 + 127));
        assert_eq!(packet_len(&[0x30, 0x80]), None);
        assert_eq!(packet_len(&[0x30, 0x80, 0x01]), Some(3 + 128));
        assert_eq!(
            packet_len(&[0x30, 0xff, 0xff, 0xff, 0x7f]),
            Some(5 + 268_435_455)
        );
        assert_eq!(
            packet_len(&[0x30, 0xff, 0xff, 0xff, 0xff]),
            Some(usize::MAX)
        );
    }

    #[test]
    fn packets_split_anywhere_come_out_whole() {
        let v = Version::V311;
        let mut bytes = Vec::new();
        for i in 0..20u16 {
            let payload = vec![i as u8; 40 + i as usize * 13];
            publish("bench/0", QoS::AtLeastOnce, i + 1, &payload, v, &mut bytes);
            pingreq(v, &mut bytes);
        }
        for chunk in [1, 2, 3, 7, 64, 100_000] {
            let mut rx = Rx::default();
            let (mut ids, mut pings) = (Vec::new(), 0);
            for c in bytes.chunks(chunk) {
                let r = rx.feed(c, v, |p| match p {
                    Packet::Publish(p) => {
                        assert_eq!(p.payload.len(), 40 + (p.packet_id as usize - 1) * 13);
                        ids.push(p.packet_id)
                    }
                    Packet::PingReq => pings += 1,
                    _ => panic!("unexpected"),
                });
                assert_eq!(r, Ok(()));
            }
            assert_eq!(ids, (1..=20).collect::<Vec<u16>>(), "chunks of {chunk}");
            assert_eq!(pings, 20);
        }
    }

    #[test]
    fn a_malformed_packet_breaks_the_stream_once() {
        let mut rx = Rx::default();
        // PUBLISH with QoS 3.
        assert!(rx.feed(&[0x36, 0x00], Version::V311, |_| {}).is_err());
        assert_eq!(
            rx.feed(&[0xd0, 0x00], Version::V311, |_| panic!("broken")),
            Ok(())
        );
        assert!(rx.broken);
    }
}
