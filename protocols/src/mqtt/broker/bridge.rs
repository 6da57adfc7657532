//! The broker's NATS bridge: the same [`Bridge`] as the relay's, run by the
//! instance on [`BRIDGE_SHARD`], with MQTT topics mapped by
//! [`SubjectMap::mqtt_topic_to_subject`](crate::nats::SubjectMap::mqtt_topic_to_subject)
//! and back.
//!
//! Exports: every PUBLISH reaches every shard ([`Mqtt::route_publish`]
//! sends it to the others with `TAG_PUBLISH`, with the id of the listener
//! its client came through), so the bridge shard sees all of them and
//! exports each once, in the order it got them (each publisher's order: one
//! connection, one shard, one FIFO ring), if that listener's export filters
//! take it ([`crate::nats::routes`]). What NATS carries is the topic and the
//! payload: QoS, retain and MQTT 5.0 properties stay local (NATS core is at
//! most once).
//!
//! Imports: delivered on the bridge shard as QoS 0, not retained, from no
//! session, and sent to every other shard with [`TAG_IMPORTED`], which
//! delivers them like `TAG_PUBLISH` but never exports them. With
//! per-listener routes, the bridge shard works out once which listeners
//! import the subject ([`ImportScope`]) and the scope travels with the
//! message (to shared subscription members too): a session gets it only if
//! the listener its client came through is admitted.
//!
//! With one bridge per distinct login and buffer of its listeners
//! ([`BridgeSet`]), a publication goes out through its listener's bridge,
//! and each bridge's imports are scoped to that bridge's listeners.

use std::sync::Arc;

use ringport_plugin::{ConnId, ConnectFailure, Context, ListenerId, StreamInfo};

use super::message::{BadMesh, Message, Reader, Writer};
use super::plugin::Mqtt;
use super::route::{Sent, TAG_IMPORTED};
use super::stats::MqttDrop;
use crate::mqtt::codec::QoS;
use crate::nats::bridge::{Bridge, BridgeSettings};
use crate::nats::{BridgeSet, Bridges, ImportScope};

/// The shard that runs the broker's NATS bridge.
pub const BRIDGE_SHARD: usize = 0;

impl Mqtt {
    /// Bridges this broker to NATS if it runs on [`BRIDGE_SHARD`] (the
    /// bridge starts at `handle_start`); other shards ignore it.
    pub fn set_bridge(&mut self, settings: Arc<BridgeSettings>) {
        self.set_bridges(Arc::new(BridgeSet::single(settings)));
    }

    /// [`Mqtt::set_bridge`] for a broker with one bridge per distinct
    /// connection settings of its listeners ([`BridgeSet`]).
    pub fn set_bridges(&mut self, set: Arc<BridgeSet>) {
        if self.shard == BRIDGE_SHARD {
            self.bridge_settings = Some(set);
        }
    }

    /// The first bridge (the only one of most brokers), on the shard that
    /// runs it once started.
    pub fn bridge(&self) -> Option<&Bridge> {
        self.bridge.as_ref()?.all().first()
    }

    /// Every bridge, on the shard that runs them once started.
    pub fn bridges(&self) -> Option<&Bridges> {
        self.bridge.as_ref()
    }

    pub(crate) fn bridge_start(&mut self, ctx: &mut dyn Context) {
        let Some(set) = self.bridge_settings.take() else {
            return;
        };
        // The settings were checked when they were made.
        if let Ok(mut bridges) = Bridges::new(set, ctx.now()) {
            bridges.handle_start(ctx);
            self.bridge = Some(bridges);
        }
    }

    /// Whether `conn` is the bridge's stream.
    pub(crate) fn bridge_owns(&self, conn: ConnId) -> bool {
        self.bridge.as_ref().is_some_and(|b| b.owns(conn))
    }

    pub(crate) fn bridge_data(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        data: &[u8],
    ) -> usize {
        let Some(bridge) = &mut self.bridge else {
            return data.len();
        };
        let n = bridge.handle_data(ctx, conn, data);
        self.bridge_imports(ctx);
        n
    }

    pub(crate) fn bridge_close(&mut self, ctx: &mut dyn Context, conn: ConnId) {
        if let Some(bridge) = &mut self.bridge {
            bridge.handle_close(ctx, conn);
        }
        self.bridge_imports(ctx);
    }

    /// True if the stream was the bridge's.
    pub(crate) fn bridge_connected(
        &mut self,
        ctx: &mut dyn Context,
        stream: &StreamInfo,
        tag: u64,
    ) -> bool {
        let ours = self
            .bridge
            .as_mut()
            .is_some_and(|b| b.handle_connected(ctx, stream, tag));
        self.bridge_imports(ctx);
        ours
    }

    pub(crate) fn bridge_connect_failed(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        tag: u64,
        failure: ConnectFailure,
    ) {
        if let Some(bridge) = &mut self.bridge {
            bridge.handle_connect_failed(ctx, conn, tag, failure);
        }
    }

    /// True if the timer was the bridge's.
    pub(crate) fn bridge_timer(
        &mut self,
        ctx: &mut dyn Context,
        now: std::time::Instant,
        token: u64,
    ) -> bool {
        let ours = self
            .bridge
            .as_mut()
            .is_some_and(|b| b.handle_timer(ctx, now, token));
        if ours {
            self.bridge_imports(ctx);
        }
        ours
    }

    /// Exports a publication this shard saw (its own or another shard's)
    /// that a client of `listener` made, if that listener's filters take it.
    pub(crate) fn bridge_export(&mut self, ctx: &mut dyn Context, msg: &Message, listener: u16) {
        let listener = ListenerId(listener);
        let Some(bridge) = self.bridge.as_mut().and_then(|b| b.for_listener(listener)) else {
            return;
        };
        match bridge.settings().map.mqtt_topic_to_subject(&msg.topic) {
            Ok(subject) => {
                bridge.export_from(ctx, listener, &subject, &msg.payload);
            }
            Err(_) => bridge.count_unmappable_from(listener),
        }
        self.bridge_imports(ctx);
    }

    /// Delivers what the bridge imported, here and on every other shard.
    fn bridge_imports(&mut self, ctx: &mut dyn Context) {
        while let Some(bridges) = self.bridge.as_mut() {
            let Some((index, import)) = bridges.poll_import() else {
                break;
            };
            let Some(bridge) = bridges.get_mut(index) else {
                break;
            };
            let topic = match bridge.settings().map.subject_to_mqtt_topic(&import.subject) {
                Ok(t) if import.payload.len() <= self.cfg.max_packet_size as usize => t,
                _ => {
                    bridge.count_unmappable();
                    continue;
                }
            };
            // None without per-listener routes: every subscriber. With
            // several bridges, only the listeners of the importing one.
            let scope = bridge.accept_import(&import.subject);
            let msg = Arc::new(Message {
                topic: topic.into(),
                payload: import.payload.into(),
                qos: QoS::AtMostOnce,
                retain: false,
                props: None,
                expires: None,
                origin: 0,
            });
            self.deliver_scoped(ctx, &msg, scope.as_ref());
            if self.shard_count > 1 {
                let mut w = Writer::default();
                write_scope(&mut w, scope.as_ref());
                w.message(&msg, ctx.now());
                let blob = w.finish();
                for target in (0..self.shard_count).filter(|&s| s != self.shard) {
                    let cap = Some(self.cfg.mesh_retry_bytes);
                    if self.mesh.send(ctx, target, TAG_IMPORTED, blob.clone(), cap) == Sent::Dropped
                    {
                        self.count(ctx, MqttDrop::MeshFull);
                    }
                }
            }
        }
    }
}

/// Appends `scope` for the mesh: a flags byte (0: no scope; bit 0: a
/// scope, bit 1: its default answer), then the number of listeners it
/// answers for (u16) and their answers, one bit each.
pub(crate) fn write_scope(w: &mut Writer, scope: Option<&ImportScope>) {
    let Some(scope) = scope else {
        w.u8(0);
        return;
    };
    // Listener ids are u16, and OUTBOUND (u16::MAX) has no route.
    let by = scope.by_listener();
    let by = &by[..by.len().min(usize::from(u16::MAX))];
    w.u8(1 | u8::from(scope.default_admits()) << 1);
    w.u16(by.len() as u16);
    for chunk in by.chunks(8) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u8, |b, (i, &on)| b | u8::from(on) << i);
        w.u8(bits);
    }
}

/// Reads what [`write_scope`] wrote.
pub(crate) fn read_scope(r: &mut Reader) -> Result<Option<ImportScope>, BadMesh> {
    let flags = r.u8()?;
    match flags {
        0 => return Ok(None),
        1 | 3 => {}
        _ => return Err(BadMesh),
    }
    let n = usize::from(r.u16()?);
    let mut by = Vec::with_capacity(n);
    while by.len() < n {
        let bits = r.u8()?;
        for i in 0..(n - by.len()).min(8) {
            by.push(bits & (1 << i) != 0);
        }
    }
    Ok(Some(ImportScope::from_parts(by, flags & 2 != 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_round_trips_through_the_mesh_encoding() {
        let by = vec![
            true, false, false, true, true, false, true, false, false, true,
        ];
        for scope in [
            None,
            Some(ImportScope::from_parts(by.clone(), true)),
            Some(ImportScope::from_parts(by, false)),
            Some(ImportScope::from_parts(Vec::new(), false)),
        ] {
            let mut w = Writer::default();
            write_scope(&mut w, scope.as_ref());
            w.u8(0xAB);
            let bytes = w.finish();
            let mut r = Reader::new(bytes.clone());
            assert_eq!(read_scope(&mut r), Ok(scope.clone()));
            assert_eq!(r.u8(), Ok(0xAB));
            // Ten answers take two bytes after flags and count.
            let want = match &scope {
                None => 2,
                Some(s) => 4 + s.by_listener().len().div_ceil(8),
            };
            assert_eq!(bytes.len(), want);
            for cut in 0..bytes.len() - 1 {
                assert_eq!(
                    read_scope(&mut Reader::new(bytes.slice(..cut))),
                    Err(BadMesh)
                );
            }
        }
        assert_eq!(
            read_scope(&mut Reader::new(ringport_plugin::Bytes::from_static(&[4]))),
            Err(BadMesh)
        );
    }
}
