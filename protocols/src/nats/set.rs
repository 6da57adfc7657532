//! A plugin's bridges: one NATS connection per distinct set of connection
//! settings of its listeners.
//!
//! Listeners whose connection settings (servers, login, buffer, prefix,
//! instance id, reconnect delays) are equal share one [`Bridge`]; a
//! listener with a login or buffer of its own gets its own bridge, so it
//! publishes into NATS as its own NATS user and its outage buffer is its
//! own. [`BridgeSet`] holds the settings of every bridge of a plugin and
//! which bridge each listener uses; [`Bridges`] runs them on the bridge
//! shard.
//!
//! The common case, one bridge, costs one bounds check per export (the
//! listener's entry in the index table, or its absence) and nothing per
//! import.
//!
//! * Export: a publish from listener `L` goes out through `L`'s bridge only.
//! * Import: each bridge subscribes for its own listeners' filters, and with
//!   more than one bridge each is [`exclusive`](BridgeSettings::exclusive):
//!   what it imports reaches only its own listeners' subscribers. Import
//!   filters of listeners on different bridges may overlap: each bridge
//!   scopes to its listeners, so no subscriber gets a message twice.
//! * Loops: every bridge of the process stamps the same instance id, so a
//!   message one bridge exported and another one receives is dropped
//!   (`dropped_loop` of the receiving bridge): it was delivered locally when
//!   it was published.

use std::sync::Arc;
use std::time::Instant;

use ringport_plugin::{ConnId, ConnectFailure, Context, ListenerId, StreamInfo};

use super::bridge::{token_index, Bridge, BridgeError, BridgeSettings, Import};

/// In [`BridgeSet`]'s index table: the listener uses no bridge.
const NO_BRIDGE: u16 = u16::MAX;

/// The settings of a plugin's bridges and which one each listener uses.
#[derive(Debug, Clone)]
pub struct BridgeSet {
    bridges: Vec<Arc<BridgeSettings>>,
    /// By listener id: the index of its bridge, or [`NO_BRIDGE`].
    by_listener: Vec<u16>,
    /// The bridge of a listener past `by_listener` (outbound streams, a
    /// plugin's own publishes), or [`NO_BRIDGE`].
    default: u16,
}

impl BridgeSet {
    /// One bridge for every listener.
    pub fn single(settings: Arc<BridgeSettings>) -> BridgeSet {
        BridgeSet {
            bridges: vec![settings],
            by_listener: Vec::new(),
            default: 0,
        }
    }

    /// `bridges`, with `by_listener[i]` the index of listener `i`'s bridge
    /// (None: it uses none) and `default` the bridge of any other listener.
    ///
    /// # Panics
    ///
    /// If an index is out of range or there are 65535 bridges or more
    /// (a caller's mistake, not input).
    pub fn new(
        bridges: Vec<Arc<BridgeSettings>>,
        by_listener: &[Option<usize>],
        default: Option<usize>,
    ) -> BridgeSet {
        assert!(bridges.len() < usize::from(NO_BRIDGE), "too many bridges");
        let index = |i: Option<usize>| match i {
            Some(i) => {
                assert!(i < bridges.len(), "bridge index {i} out of range");
                i as u16
            }
            None => NO_BRIDGE,
        };
        BridgeSet {
            by_listener: by_listener.iter().map(|&i| index(i)).collect(),
            default: index(default),
            bridges,
        }
    }

    /// Every bridge's settings, by index.
    pub fn bridges(&self) -> &[Arc<BridgeSettings>] {
        &self.bridges
    }

    /// The same, to change (before the set is shared).
    pub fn bridges_mut(&mut self) -> &mut [Arc<BridgeSettings>] {
        &mut self.bridges
    }

    /// The index of the bridge `listener` publishes through, if any.
    pub fn bridge_of(&self, listener: ListenerId) -> Option<usize> {
        let i = self
            .by_listener
            .get(usize::from(listener.0))
            .copied()
            .unwrap_or(self.default);
        (i != NO_BRIDGE).then_some(usize::from(i))
    }

    /// Whether imports are scoped to listeners (some bridge has routes, or
    /// there are several): then a plugin must know each stream's listener.
    pub fn scoped(&self) -> bool {
        self.bridges.iter().any(|b| b.has_routes())
    }
}

/// A plugin's running bridges, on its bridge shard; see the
/// [module](self). Each call is routed to the bridge it concerns: a stream
/// to the bridge that owns it, a timer or connect tag to the bridge whose
/// index it carries, an export to its listener's bridge.
#[derive(Debug)]
pub struct Bridges {
    set: Arc<BridgeSet>,
    bridges: Vec<Bridge>,
    /// The bridge whose imports [`Bridges::poll_import`] takes next.
    next_import: usize,
}

impl Bridges {
    /// Bridges that have not connected yet; `now` starts their clocks.
    pub fn new(set: Arc<BridgeSet>, now: Instant) -> Result<Bridges, BridgeError> {
        let bridges = set
            .bridges
            .iter()
            .enumerate()
            .map(|(i, s)| Ok(Bridge::new(s.clone(), now)?.with_index(i as u16)))
            .collect::<Result<Vec<_>, BridgeError>>()?;
        Ok(Bridges {
            set,
            bridges,
            next_import: 0,
        })
    }

    /// The settings.
    pub fn set(&self) -> &BridgeSet {
        &self.set
    }

    /// Every bridge, by index.
    pub fn all(&self) -> &[Bridge] {
        &self.bridges
    }

    /// The bridge at `index`.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut Bridge> {
        self.bridges.get_mut(index)
    }

    /// The bridge `listener` publishes through, if any.
    pub fn for_listener(&mut self, listener: ListenerId) -> Option<&mut Bridge> {
        let i = self.set.bridge_of(listener)?;
        self.bridges.get_mut(i)
    }

    /// The plugin starts: every bridge connects.
    pub fn handle_start(&mut self, ctx: &mut dyn Context) {
        for b in &mut self.bridges {
            b.handle_start(ctx);
        }
    }

    /// Whether `conn` is one of the bridges' streams.
    pub fn owns(&self, conn: ConnId) -> bool {
        self.bridges.iter().any(|b| b.owns(conn))
    }

    /// Bytes on a bridge's stream; returns how many were consumed.
    pub fn handle_data(&mut self, ctx: &mut dyn Context, conn: ConnId, data: &[u8]) -> usize {
        match self.bridges.iter_mut().find(|b| b.owns(conn)) {
            Some(b) => b.handle_data(ctx, conn, data),
            None => data.len(),
        }
    }

    /// A bridge's stream closed.
    pub fn handle_close(&mut self, ctx: &mut dyn Context, conn: ConnId) {
        if let Some(b) = self.bridges.iter_mut().find(|b| b.owns(conn)) {
            b.handle_close(ctx, conn);
        }
    }

    /// A stream opened; true if it is a bridge's.
    pub fn handle_connected(
        &mut self,
        ctx: &mut dyn Context,
        stream: &StreamInfo,
        tag: u64,
    ) -> bool {
        self.by_token(tag)
            .is_some_and(|b| b.handle_connected(ctx, stream, tag))
    }

    /// A connect failed; true if it was a bridge's.
    pub fn handle_connect_failed(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        tag: u64,
        failure: ConnectFailure,
    ) -> bool {
        self.by_token(tag)
            .is_some_and(|b| b.handle_connect_failed(ctx, conn, tag, failure))
    }

    /// A timer fired; true if it was a bridge's.
    pub fn handle_timer(&mut self, ctx: &mut dyn Context, now: Instant, token: u64) -> bool {
        self.by_token(token)
            .is_some_and(|b| b.handle_timer(ctx, now, token))
    }

    fn by_token(&mut self, token: u64) -> Option<&mut Bridge> {
        let i = token_index(token)?;
        self.bridges.get_mut(usize::from(i))
    }

    /// The next message from NATS for local delivery, with the index of the
    /// bridge it came through (its scope and counters).
    pub fn poll_import(&mut self) -> Option<(usize, Import)> {
        let n = self.bridges.len();
        for _ in 0..n {
            let i = self.next_import;
            if let Some(import) = self.bridges[i].poll_import() {
                return Some((i, import));
            }
            self.next_import = (i + 1) % n;
        }
        None
    }
}

/// The two bridges the relay's and the broker's tests share: bridge 0 (no
/// login) for listener 1, bridge 1 (user `b`) for listener 2, each every
/// topic (`#`) both ways and exclusive, buffering `buffer_messages`.
#[cfg(test)]
pub(crate) fn two_test_bridges(plugin: &'static str, buffer_messages: usize) -> Arc<BridgeSet> {
    use crate::nats::{Auth, NatsConfig};
    let all = ["#".to_string()];
    let make = |auth: Auth, name: &str, listener: u16| {
        let nats = NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            auth,
            buffer_messages,
            ..NatsConfig::default()
        };
        let mut s = BridgeSettings::new(plugin, nats, "", &all, &all, "me").unwrap();
        s.name = name.to_owned();
        s.exclusive = true;
        s.add_listener(ListenerId(listener), name, None, None)
            .unwrap();
        Arc::new(s)
    };
    let b = Auth::UserPassword {
        user: "b".into(),
        password: "pb".into(),
    };
    Arc::new(BridgeSet::new(
        vec![make(Auth::None, "default", 1), make(b, "l2", 2)],
        &[None, Some(0), Some(1)],
        Some(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::NatsConfig;

    fn settings(name: &str) -> Arc<BridgeSettings> {
        let nats = NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            ..NatsConfig::default()
        };
        let all = vec!["#".to_owned()];
        let mut s = BridgeSettings::new("relay", nats, "", &all, &all, "me").unwrap();
        s.name = name.to_owned();
        Arc::new(s)
    }

    #[test]
    fn listeners_find_their_bridge_and_others_the_default() {
        let set = BridgeSet::new(
            vec![settings("default"), settings("l1")],
            &[Some(0), Some(1), None],
            Some(0),
        );
        assert_eq!(set.bridge_of(ListenerId(0)), Some(0));
        assert_eq!(set.bridge_of(ListenerId(1)), Some(1));
        assert_eq!(set.bridge_of(ListenerId(2)), None);
        assert_eq!(set.bridge_of(ListenerId(7)), Some(0));
        assert_eq!(set.bridge_of(ListenerId::OUTBOUND), Some(0));
        let set = BridgeSet::new(vec![settings("l0")], &[Some(0)], None);
        assert_eq!(set.bridge_of(ListenerId(0)), Some(0));
        assert_eq!(set.bridge_of(ListenerId::OUTBOUND), None);
        let single = BridgeSet::single(settings("default"));
        assert_eq!(single.bridge_of(ListenerId(3)), Some(0));
        assert!(!single.scoped());
    }

    #[test]
    fn tokens_and_tags_reach_the_bridge_whose_index_they_carry() {
        use crate::nats::bridge::{token, CONNECT_TAG, TIMER_CLIENT, TIMER_FLUSH, TIMER_RECONNECT};
        for kind in [TIMER_RECONNECT, TIMER_CLIENT, TIMER_FLUSH, CONNECT_TAG] {
            assert_eq!(token_index(kind), Some(0));
            assert_eq!(token_index(token(kind, 1)), Some(1));
            assert_eq!(token_index(token(kind, 65534)), Some(65534));
        }
        assert_eq!(token_index(1), None);
        assert_eq!(token_index(TIMER_RECONNECT + 4), None);
        assert_eq!(token_index(TIMER_RECONNECT | 1 << 24), None);

        let set = Arc::new(BridgeSet::new(
            vec![settings("default"), settings("l1")],
            &[Some(0), Some(1)],
            Some(0),
        ));
        let mut ctx = ringport_plugin::testing::RecordingContext::new();
        let mut b = Bridges::new(set, ctx.now()).unwrap();
        b.handle_start(&mut ctx);
        let connects = ctx.take_connects();
        assert_eq!(connects.len(), 2);
        assert_eq!(connects[0].request.tag, CONNECT_TAG);
        assert_eq!(connects[1].request.tag, token(CONNECT_TAG, 1));
        assert!(b.owns(connects[0].conn) && b.owns(connects[1].conn));
        // Bridge 1's failure schedules bridge 1's reconnect only.
        assert!(b.handle_connect_failed(
            &mut ctx,
            connects[1].conn,
            token(CONNECT_TAG, 1),
            ConnectFailure::Refused
        ));
        assert!(!b.owns(connects[1].conn));
        assert!(b.owns(connects[0].conn));
        let timers: Vec<u64> = ctx.timers().iter().map(|t| t.token).collect();
        assert_eq!(timers, [token(TIMER_RECONNECT, 1)]);
        let now = ctx.now();
        assert!(!b.handle_timer(&mut ctx, now, token(TIMER_RECONNECT, 2)));
        assert!(b.handle_timer(&mut ctx, now, token(TIMER_RECONNECT, 1)));
        let again = ctx.take_connects();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].request.tag, token(CONNECT_TAG, 1));
    }
}
