//! Which connections of one shard subscribe to which topics.

use std::collections::HashMap;

use ringport_plugin::ConnId;

/// One subscribing connection's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscriber {
    topics: Vec<Box<[u8]>>,
    /// Messages dropped since the last `LAGGED` frame was queued.
    pub lagged: u64,
    /// Messages dropped over the connection's life.
    pub dropped: u64,
    /// Whether the plugin's list of subscribers owed a `LAGGED` frame holds it.
    pub(super) listed: bool,
}

impl Subscriber {
    /// The topics held, in subscription order.
    pub fn topics(&self) -> impl Iterator<Item = &[u8]> {
        self.topics.iter().map(|t| &t[..])
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// The connection already holds the maximum number of topics.
    TooMany,
}

/// Topic → subscribing connections of this shard, and each connection's
/// [`Subscriber`] state.
///
/// Memory grows only with subscriptions (bounded per connection by the
/// caller's maximum) and is returned by [`Subscriptions::remove_conn`].
/// Looking up a topic does not allocate.
#[derive(Debug, Default)]
pub struct Subscriptions {
    topics: HashMap<Box<[u8]>, Vec<ConnId>>,
    conns: HashMap<ConnId, Subscriber>,
}

impl Subscriptions {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes `conn` to `topic`, if it holds fewer than `max` topics.
    /// Returns whether it was new (a repeat is a no-op).
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        topic: &[u8],
        max: usize,
    ) -> Result<bool, SubscribeError> {
        let sub = self.conns.entry(conn).or_default();
        if sub.topics.iter().any(|t| &t[..] == topic) {
            return Ok(false);
        }
        if sub.topics.len() >= max {
            if sub.topics.is_empty() {
                self.conns.remove(&conn);
            }
            return Err(SubscribeError::TooMany);
        }
        sub.topics.push(topic.into());
        match self.topics.get_mut(topic) {
            Some(conns) => conns.push(conn),
            None => {
                self.topics.insert(topic.into(), vec![conn]);
            }
        }
        Ok(true)
    }

    /// Unsubscribes `conn` from `topic`; returns whether it was subscribed.
    /// The connection's state stays (its lag count is still owed to it).
    pub fn unsubscribe(&mut self, conn: ConnId, topic: &[u8]) -> bool {
        let Some(sub) = self.conns.get_mut(&conn) else {
            return false;
        };
        let Some(at) = sub.topics.iter().position(|t| &t[..] == topic) else {
            return false;
        };
        sub.topics.swap_remove(at);
        self.detach(conn, topic);
        true
    }

    /// Forgets `conn` and all its subscriptions; returns its state, if any.
    pub fn remove_conn(&mut self, conn: ConnId) -> Option<Subscriber> {
        let sub = self.conns.remove(&conn)?;
        for topic in &sub.topics {
            self.detach(conn, topic);
        }
        Some(sub)
    }

    fn detach(&mut self, conn: ConnId, topic: &[u8]) {
        if let Some(conns) = self.topics.get_mut(topic) {
            if let Some(at) = conns.iter().position(|&c| c == conn) {
                conns.swap_remove(at);
            }
            if conns.is_empty() {
                self.topics.remove(topic);
            }
        }
    }

    /// The connections subscribed to `topic` (in no particular order).
    pub fn subscribers(&self, topic: &[u8]) -> &[ConnId] {
        self.topics.get(topic).map_or(&[], Vec::as_slice)
    }

    /// A connection's state.
    pub fn subscriber(&self, conn: ConnId) -> Option<&Subscriber> {
        self.conns.get(&conn)
    }

    /// A connection's state, mutable.
    pub fn subscriber_mut(&mut self, conn: ConnId) -> Option<&mut Subscriber> {
        self.conns.get_mut(&conn)
    }

    /// Calls `f` with every subscriber of `topic` and its state.
    pub fn for_each_subscriber(
        &mut self,
        topic: &[u8],
        mut f: impl FnMut(ConnId, &mut Subscriber),
    ) {
        let Some(conns) = self.topics.get(topic) else {
            return;
        };
        for &conn in conns {
            if let Some(sub) = self.conns.get_mut(&conn) {
                f(conn, sub);
            }
        }
    }

    /// Calls `f` with every connection that holds at least one topic.
    pub fn for_each_subscribed(&mut self, mut f: impl FnMut(ConnId, &mut Subscriber)) {
        for (&conn, sub) in self.conns.iter_mut() {
            if !sub.topics.is_empty() {
                f(conn, sub);
            }
        }
    }

    /// Topics with at least one subscriber.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Connections with state (subscribed now, or once and still open).
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ConnId = ConnId::from_raw(1);
    const B: ConnId = ConnId::from_raw(2);
    const C: ConnId = ConnId::from_raw(3);

    fn sorted(s: &[ConnId]) -> Vec<u64> {
        let mut v: Vec<u64> = s.iter().map(|c| c.raw()).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn subscribe_and_look_up() {
        let mut t = Subscriptions::new();
        assert_eq!(t.subscribe(A, b"x", 8), Ok(true));
        assert_eq!(t.subscribe(B, b"x", 8), Ok(true));
        assert_eq!(t.subscribe(B, b"y", 8), Ok(true));
        assert_eq!(t.subscribe(A, b"x", 8), Ok(false));
        assert_eq!(sorted(t.subscribers(b"x")), [1, 2]);
        assert_eq!(sorted(t.subscribers(b"y")), [2]);
        assert!(t.subscribers(b"z").is_empty());
        assert_eq!((t.topic_count(), t.conn_count()), (2, 2));
        let topics: Vec<&[u8]> = t.subscriber(B).unwrap().topics().collect();
        assert_eq!(topics, [&b"x"[..], b"y"]);
    }

    #[test]
    fn unsubscribe_keeps_other_subscribers() {
        let mut t = Subscriptions::new();
        t.subscribe(A, b"x", 8).unwrap();
        t.subscribe(B, b"x", 8).unwrap();
        t.subscribe(C, b"x", 8).unwrap();
        assert!(t.unsubscribe(A, b"x"));
        assert!(!t.unsubscribe(A, b"x"));
        assert!(!t.unsubscribe(A, b"never"));
        assert!(!t.unsubscribe(ConnId::from_raw(99), b"x"));
        assert_eq!(sorted(t.subscribers(b"x")), [2, 3]);
        // A keeps its (empty) state until it closes.
        assert_eq!(t.subscriber(A).unwrap().topics().count(), 0);
        assert!(t.unsubscribe(B, b"x") && t.unsubscribe(C, b"x"));
        assert_eq!(t.topic_count(), 0);
    }

    #[test]
    fn remove_conn_frees_everything() {
        let mut t = Subscriptions::new();
        for topic in [&b"a"[..], b"b", b"c"] {
            t.subscribe(A, topic, 8).unwrap();
        }
        t.subscribe(B, b"b", 8).unwrap();
        t.subscriber_mut(A).unwrap().lagged = 5;
        let gone = t.remove_conn(A).unwrap();
        assert_eq!(gone.lagged, 5);
        assert_eq!(gone.topics().count(), 3);
        assert_eq!(t.topic_count(), 1);
        assert_eq!(sorted(t.subscribers(b"b")), [2]);
        assert_eq!(t.remove_conn(A), None);
        t.remove_conn(B).unwrap();
        assert_eq!((t.topic_count(), t.conn_count()), (0, 0));
    }

    #[test]
    fn per_connection_limit() {
        let mut t = Subscriptions::new();
        t.subscribe(A, b"1", 2).unwrap();
        t.subscribe(A, b"2", 2).unwrap();
        assert_eq!(t.subscribe(A, b"3", 2), Err(SubscribeError::TooMany));
        // A repeat is not a new topic.
        assert_eq!(t.subscribe(A, b"2", 2), Ok(false));
        assert!(t.subscribers(b"3").is_empty());
        // A refused first subscription leaves no state behind.
        assert_eq!(t.subscribe(B, b"1", 0), Err(SubscribeError::TooMany));
        assert_eq!(t.subscriber(B), None);
        assert_eq!(t.conn_count(), 1);
    }

    #[test]
    fn for_each_visits_subscribers_with_state() {
        let mut t = Subscriptions::new();
        t.subscribe(A, b"x", 8).unwrap();
        t.subscribe(B, b"x", 8).unwrap();
        t.subscribe(C, b"y", 8).unwrap();
        let mut seen = Vec::new();
        t.for_each_subscriber(b"x", |conn, sub| {
            sub.dropped += 1;
            seen.push(conn);
        });
        assert_eq!(sorted(&seen), [1, 2]);
        assert_eq!(t.subscriber(A).unwrap().dropped, 1);
        assert_eq!(t.subscriber(C).unwrap().dropped, 0);
        t.for_each_subscriber(b"none", |_, _| panic!("no subscribers"));
    }
}
