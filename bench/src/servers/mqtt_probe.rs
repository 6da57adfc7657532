//! The MQTT probe: the least an MQTT server on ringport's engine does per
//! message, to set the floor the `ringport` broker's (and Mosquitto's) CPU
//! per delivery is measured against (MQTT scenarios only).
//!
//! The same engine, shard, listener and limits as the `ringport` target,
//! with a plugin in place of the broker that does only what the harness's
//! clients need answered, and nothing a broker is for:
//!
//! * CONNECT gets CONNACK (3.1.1 or 5.0, by the protocol level), SUBSCRIBE
//!   SUBACK granting what was asked, UNSUBSCRIBE UNSUBACK, PINGREQ PINGRESP;
//!   DISCONNECT closes;
//! * a PUBLISH is acknowledged (PUBACK at QoS 1, PUBREC then PUBCOMP at
//!   QoS 2) and its bytes are written as they came to every connection
//!   subscribed to exactly its topic (a hash map, no wildcards), re-encoded
//!   only to lower its QoS to a subscription's;
//! * no sessions, no client ids, no packet ids of its own (a delivery keeps
//!   the publisher's), no queues beyond the engine's, no retained messages,
//!   no keep-alive, no validation past what framing needs, one shard.
//!
//! So whatever separates the broker from this probe at the same rate is the
//! broker's own work; what separates the probe from Mosquitto is the engine
//! and the kernel.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use ringport_engine::BackendChoice;
use ringport_plugin::{
    CloseReason, ConnId, Context, DropReason, Plugin, PluginFactory, Registry, ShardId, StreamInfo,
    Transport, Verdict,
};

use super::{Server, ServerSpec};

/// A subscriber of a topic: its connection and the QoS it was granted.
type Subscriber = (ConnId, u8);

#[derive(Default)]
struct Probe {
    /// Whether each connection spoke MQTT 5 in its CONNECT.
    v5: HashMap<ConnId, bool>,
    /// Subscribers by exact topic.
    subs: HashMap<Vec<u8>, Vec<Subscriber>>,
    /// A delivery re-encoded at a lower QoS.
    scratch: Vec<u8>,
}

/// A packet's fixed header: (header length, remaining length), `None` until
/// the whole length is in, an error past four length bytes.
fn fixed_header(data: &[u8]) -> Option<Result<(usize, usize), DropReason>> {
    let mut len = 0usize;
    for i in 0..4 {
        let b = *data.get(1 + i)?;
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(Ok((2 + i, len)));
        }
    }
    Some(Err(DropReason::Malformed))
}

fn put_len(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn u16_at(body: &[u8], at: usize) -> Result<u16, DropReason> {
    match body.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(DropReason::Malformed),
    }
}

/// Skips an MQTT 5 property block at `at`: the offset after it.
fn skip_properties(body: &[u8], at: usize) -> Result<usize, DropReason> {
    let rest = body.get(at..).ok_or(DropReason::Malformed)?;
    // A property length is a variable byte integer, like the fixed
    // header's remaining length (read here behind a dummy first byte).
    let mut probe = [0u8; 5];
    let n = rest.len().min(4);
    probe[1..1 + n].copy_from_slice(&rest[..n]);
    match fixed_header(&probe[..1 + n]) {
        Some(Ok((hdr, len))) => Ok(at + hdr - 1 + len),
        _ => Err(DropReason::Malformed),
    }
}

impl Probe {
    fn packet(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        packet: &[u8],
        body: &[u8],
    ) -> Result<(), DropReason> {
        let v5 = self.v5.get(&conn).copied().unwrap_or(false);
        let write =
            |ctx: &mut dyn Context, b: &[u8]| ctx.write(conn, b).map_err(|_| DropReason::QueueFull);
        match packet[0] >> 4 {
            1 => {
                let name = usize::from(u16_at(body, 0)?);
                let level = *body.get(2 + name).ok_or(DropReason::Malformed)?;
                self.v5.insert(conn, level == 5);
                if level == 5 {
                    write(ctx, &[0x20, 3, 0, 0, 0])
                } else {
                    write(ctx, &[0x20, 2, 0, 0])
                }
            }
            3 => self.publish(ctx, conn, packet, body),
            // PUBACK and PUBCOMP from a subscriber: nothing to track.
            4 | 7 => Ok(()),
            // PUBREL: the publisher's QoS 2 flow ends.
            6 => {
                let id = u16_at(body, 0)?.to_be_bytes();
                write(ctx, &[0x70, 2, id[0], id[1]])
            }
            // PUBREC from a subscriber of a QoS 2 delivery: release it.
            5 => {
                let id = u16_at(body, 0)?.to_be_bytes();
                write(ctx, &[0x62, 2, id[0], id[1]])
            }
            8 | 10 => {
                let subscribe = packet[0] >> 4 == 8;
                let id = u16_at(body, 0)?.to_be_bytes();
                let mut at = if v5 { skip_properties(body, 2)? } else { 2 };
                let mut codes = Vec::new();
                while at < body.len() {
                    let len = usize::from(u16_at(body, at)?);
                    let topic = body
                        .get(at + 2..at + 2 + len)
                        .ok_or(DropReason::Malformed)?;
                    at += 2 + len;
                    if subscribe {
                        let qos = body.get(at).ok_or(DropReason::Malformed)? & 3;
                        at += 1;
                        self.subs
                            .entry(topic.to_vec())
                            .or_default()
                            .push((conn, qos));
                        codes.push(qos);
                    } else {
                        if let Some(s) = self.subs.get_mut(topic) {
                            s.retain(|&(c, _)| c != conn);
                        }
                        if v5 {
                            codes.push(0);
                        }
                    }
                }
                let mut reply = vec![if subscribe { 0x90 } else { 0xb0 }];
                put_len(2 + usize::from(v5) + codes.len(), &mut reply);
                reply.extend_from_slice(&id);
                if v5 {
                    reply.push(0);
                }
                reply.extend_from_slice(&codes);
                write(ctx, &reply)
            }
            12 => write(ctx, &[0xd0, 0]),
            14 => {
                ctx.close(conn);
                Ok(())
            }
            _ => Err(DropReason::Malformed),
        }
    }

    fn publish(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        packet: &[u8],
        body: &[u8],
    ) -> Result<(), DropReason> {
        let qos = (packet[0] >> 1) & 3;
        let len = usize::from(u16_at(body, 0)?);
        let topic = body.get(2..2 + len).ok_or(DropReason::Malformed)?;
        let after_topic = 2 + len;
        if qos > 0 {
            let id = u16_at(body, after_topic)?.to_be_bytes();
            let ack = if qos == 1 { 0x40 } else { 0x50 };
            ctx.write(conn, &[ack, 2, id[0], id[1]])
                .map_err(|_| DropReason::QueueFull)?;
        }
        let Some(subs) = self.subs.get(topic) else {
            return Ok(());
        };
        let mut delivered = 0;
        for &(to, granted) in subs {
            let sent = if granted >= qos {
                ctx.write(to, packet)
            } else {
                // At QoS 0: no packet id.
                self.scratch.clear();
                self.scratch.push(0x30 | (packet[0] & 0x01));
                put_len(body.len() - 2, &mut self.scratch);
                self.scratch.extend_from_slice(&body[..after_topic]);
                self.scratch.extend_from_slice(&body[after_topic + 2..]);
                ctx.write(to, &self.scratch)
            };
            match sent {
                Ok(()) => delivered += 1,
                Err(_) => ctx.record_drop(DropReason::QueueFull),
            }
        }
        ctx.record_messages(delivered);
        Ok(())
    }
}

impl Plugin for Probe {
    fn handle_open(&mut self, _: &mut dyn Context, _: &StreamInfo) -> Verdict {
        Verdict::Accept
    }

    fn handle_data(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        data: &[u8],
    ) -> Result<usize, DropReason> {
        let mut used = 0;
        while let Some(header) = fixed_header(&data[used..]) {
            let (hdr, len) = header?;
            let Some(packet) = data.get(used..used + hdr + len) else {
                break;
            };
            self.packet(ctx, conn, packet, &packet[hdr..])?;
            used += hdr + len;
        }
        Ok(used)
    }

    fn handle_close(&mut self, _: &mut dyn Context, conn: ConnId, _: CloseReason) {
        self.v5.remove(&conn);
        for subs in self.subs.values_mut() {
            subs.retain(|&(c, _)| c != conn);
        }
    }
}

struct ProbeFactory;

impl PluginFactory for ProbeFactory {
    /// Named `mqtt`, so that it serves the `ringport` target's listener.
    fn name(&self) -> &str {
        "mqtt"
    }

    fn supports(&self, transport: Transport) -> bool {
        transport == Transport::Tcp
    }

    fn create(&self, _: ShardId, _: usize) -> Box<dyn Plugin> {
        Box::<Probe>::default()
    }
}

/// The engine with the probe in place of the broker, one shard.
pub(super) fn start(spec: &ServerSpec) -> Result<Box<dyn Server>> {
    if spec.shards != 1 {
        return Err(anyhow!(
            "mqtt-probe serves one shard (its subscriptions are not shared \
             between shards); run it with --shards 1"
        ));
    }
    let mut registry = Registry::new();
    registry
        .register(Arc::new(ProbeFactory))
        .map_err(|e| anyhow!("registering the MQTT probe: {e}"))?;
    super::ringport::start_with(spec, BackendChoice::Auto, &registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_of_one_to_four_bytes_and_a_fifth_refused() {
        assert_eq!(fixed_header(&[0x30]), None);
        assert_eq!(fixed_header(&[0x30, 0x7f]), Some(Ok((2, 127))));
        assert_eq!(fixed_header(&[0x30, 0x80]), None);
        assert_eq!(fixed_header(&[0x30, 0x80, 0x01]), Some(Ok((3, 128))));
        assert_eq!(
            fixed_header(&[0x30, 0xff, 0xff, 0xff, 0x7f]),
            Some(Ok((5, 268_435_455)))
        );
        assert_eq!(
            fixed_header(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Some(Err(DropReason::Malformed))
        );
        let mut out = Vec::new();
        put_len(268_435_455, &mut out);
        assert_eq!(out, [0xff, 0xff, 0xff, 0x7f]);
    }

    /// A 3.1.1 subscriber at QoS 0 and a publisher at QoS 1, fed in
    /// pieces: the replies and the delivery, byte for byte.
    #[test]
    fn a_subscriber_gets_a_publication_at_its_qos() {
        use ringport_plugin::testing::RecordingContext;
        let mut ctx = RecordingContext::new();
        let mut probe = Probe::default();
        let (sub, publ) = (ConnId::from_raw(1), ConnId::from_raw(2));
        let connect = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0];
        for c in [sub, publ] {
            assert_eq!(probe.handle_data(&mut ctx, c, &connect[..5]), Ok(0));
            assert_eq!(probe.handle_data(&mut ctx, c, &connect), Ok(14));
            assert_eq!(ctx.take_written(c), [0x20, 2, 0, 0]);
        }
        let subscribe = [0x82, 8, 0, 7, 0, 3, b'a', b'/', b'b', 0];
        assert_eq!(probe.handle_data(&mut ctx, sub, &subscribe), Ok(10));
        assert_eq!(ctx.take_written(sub), [0x90, 3, 0, 7, 0]);
        // QoS 1, packet id 9, payload "hi"; then a PINGREQ in the same read.
        let publish = [0x32, 9, 0, 3, b'a', b'/', b'b', 0, 9, b'h', b'i', 0xc0, 0];
        assert_eq!(probe.handle_data(&mut ctx, publ, &publish), Ok(13));
        assert_eq!(ctx.take_written(publ), [0x40, 2, 0, 9, 0xd0, 0]);
        assert_eq!(
            ctx.take_written(sub),
            [0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i']
        );
        probe.handle_close(&mut ctx, sub, CloseReason::PeerClosed);
        assert_eq!(probe.handle_data(&mut ctx, publ, &publish[..11]), Ok(11));
        assert!(ctx.take_written(sub).is_empty());
        assert_eq!(
            probe.handle_data(&mut ctx, publ, &[0x00, 0]),
            Err(DropReason::Malformed)
        );
    }

    #[test]
    fn properties_are_skipped_by_their_length() {
        assert_eq!(skip_properties(&[0, 1, 0], 2), Ok(3));
        assert_eq!(skip_properties(&[0, 1, 2, 0x26, 0], 2), Ok(5));
        assert_eq!(skip_properties(&[0, 1], 2), Err(DropReason::Malformed));
    }
}
