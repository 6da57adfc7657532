//! The broker's NATS bridge: the same [`Bridge`] as the relay's, run by the
//! instance on [`BRIDGE_SHARD`], with MQTT topics mapped by
//! [`SubjectMap::mqtt_topic_to_subject`](crate::nats::SubjectMap::mqtt_topic_to_subject)
//! and back.
//!
//! Exports: every PUBLISH reaches every shard ([`Mqtt::route_publish`]
//! sends it to the others with `TAG_PUBLISH`), so the bridge shard sees all
//! of them and exports each once, in the order it got them (each
//! publisher's order: one connection, one shard, one FIFO ring). What NATS
//! carries is the topic and the payload: QoS, retain and MQTT 5.0
//! properties stay local (NATS core is at most once).
//!
//! Imports: delivered on the bridge shard as QoS 0, not retained, from no
//! session, and sent to every other shard with [`TAG_IMPORTED`], which
//! delivers them like `TAG_PUBLISH` but never exports them.

use std::sync::Arc;

use ringport_plugin::{ConnId, ConnectFailure, Context, StreamInfo};

use super::message::{Message, Writer};
use super::plugin::Mqtt;
use super::route::{Sent, TAG_IMPORTED};
use super::stats::MqttDrop;
use crate::mqtt::codec::QoS;
use crate::nats::bridge::{Bridge, BridgeSettings};

/// The shard that runs the broker's NATS bridge.
pub const BRIDGE_SHARD: usize = 0;

impl Mqtt {
    /// Bridges this broker to NATS if it runs on [`BRIDGE_SHARD`] (the
    /// bridge starts at `handle_start`); other shards ignore it.
    pub fn set_bridge(&mut self, settings: Arc<BridgeSettings>) {
        if self.shard == BRIDGE_SHARD {
            self.bridge_settings = Some(settings);
        }
    }

    /// The bridge, on the shard that runs it once started.
    pub fn bridge(&self) -> Option<&Bridge> {
        self.bridge.as_ref()
    }

    pub(crate) fn bridge_start(&mut self, ctx: &mut dyn Context) {
        let Some(settings) = self.bridge_settings.take() else {
            return;
        };
        // The settings were checked when they were made.
        if let Ok(mut bridge) = Bridge::new(settings, ctx.now()) {
            bridge.handle_start(ctx);
            self.bridge = Some(bridge);
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

    /// Exports a publication this shard saw (its own or another shard's).
    pub(crate) fn bridge_export(&mut self, ctx: &mut dyn Context, msg: &Message) {
        let Some(bridge) = &mut self.bridge else {
            return;
        };
        match bridge.settings().map.mqtt_topic_to_subject(&msg.topic) {
            Ok(subject) => {
                bridge.export(ctx, &subject, &msg.payload);
            }
            Err(_) => bridge.count_unmappable(),
        }
        self.bridge_imports(ctx);
    }

    /// Delivers what the bridge imported, here and on every other shard.
    fn bridge_imports(&mut self, ctx: &mut dyn Context) {
        while let Some(bridge) = self.bridge.as_mut() {
            let Some(import) = bridge.poll_import() else {
                break;
            };
            let topic = match bridge.settings().map.subject_to_mqtt_topic(&import.subject) {
                Ok(t) if import.payload.len() <= self.cfg.max_packet_size as usize => t,
                _ => {
                    bridge.count_unmappable();
                    continue;
                }
            };
            let msg = Arc::new(Message {
                topic: topic.into(),
                payload: import.payload.into(),
                qos: QoS::AtMostOnce,
                retain: false,
                props: None,
                expires: None,
                origin: 0,
            });
            self.deliver_local(ctx, &msg);
            if self.shard_count > 1 {
                let mut w = Writer::default();
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
