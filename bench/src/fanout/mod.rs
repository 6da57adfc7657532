//! The pure parts of the `relay-fanout` scenario: who subscribes to what,
//! what a publish carries, how a subscriber checks and counts what it gets,
//! and the figures a run reports.
//!
//! The scenario: `subscribers` TCP connections spread over the server's
//! ports (so over its shards) each subscribe to one of `topics` topics
//! (subscriber `j` to topic `j % topics`); `publishers` connections (TCP, or
//! UDP sockets) spread over the same ports publish at a fixed total rate,
//! publisher message `n` going to topic `n % topics` as that topic's message
//! number `n / topics` from this publisher. Each payload carries the
//! publisher, that number and the intended send time ([`payload`]), so a
//! subscriber checks every byte, finds duplicates and reordering per
//! publisher ([`tracker`]) and measures delivery latency from the intended
//! send time (coordinated-omission corrected) without any shared state.
//!
//! Exactness: every publish reaches every subscriber of its topic once, so
//! `expected = sum over topics of published(topic) x subscribers(topic)`,
//! and what is missing after the final drain is lost (the part the server
//! admitted with `LAGGED` frames is reported as `lagged`).

pub mod payload;
pub mod stream;
pub mod tracker;

use tracker::Counts;

/// The shape of a relay-fanout load.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RelaySpec {
    /// Subscriber connections (TCP).
    pub subscribers: usize,
    /// Publishers: TCP connections, or UDP sockets with `publish_udp`.
    pub publishers: usize,
    /// Topics the subscribers are spread over.
    pub topics: usize,
    /// Publish over UDP (one datagram per `PUBLISH`) instead of TCP.
    pub publish_udp: bool,
}

impl RelaySpec {
    /// The topic subscriber `j` subscribes to.
    pub fn topic_of_subscriber(&self, j: usize) -> usize {
        j % self.topics
    }

    /// How many subscribers topic `t` has.
    pub fn subscribers_of(&self, t: usize) -> u64 {
        (self.subscribers / self.topics + usize::from(t < self.subscribers % self.topics)) as u64
    }

    /// The topic of a publisher's message `n` and its number on that topic.
    pub fn topic_of_message(&self, n: u64) -> (usize, u64) {
        let k = self.topics as u64;
        ((n % k) as usize, n / k)
    }

    /// Deliveries owed for `published[t]` publishes on each topic `t`.
    pub fn expected(&self, published: &[u64]) -> u64 {
        published
            .iter()
            .enumerate()
            .map(|(t, &n)| n * self.subscribers_of(t))
            .sum()
    }

    /// Checks the values the scenario cannot work with.
    pub fn validate(&self) -> Result<(), String> {
        if self.subscribers == 0 || self.publishers == 0 || self.topics == 0 {
            return Err("--subscribers, --publishers and --topics must be at least 1".into());
        }
        if self.publishers > u32::MAX as usize {
            return Err("--publishers must fit in 32 bits".into());
        }
        Ok(())
    }
}

/// The name of topic `t`.
pub fn topic_name(t: usize) -> Vec<u8> {
    format!("bench/{t}").into_bytes()
}

/// What the client threads of a relay-fanout run counted, summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanoutCounts {
    /// Publishes sent per topic, whole run.
    pub published: Vec<u64>,
    /// Publishes sent inside the measurement window (by actual send time).
    pub published_in_window: u64,
    /// Publishes due inside the measurement window, per topic.
    pub offered: Vec<u64>,
    /// What the subscribers received.
    pub counts: Counts,
    /// Sum of the counts of the `LAGGED` frames received.
    pub lagged: u64,
}

fn add_into(a: &mut Vec<u64>, b: &[u64]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

impl FanoutCounts {
    /// Counts for `topics` topics, all zero.
    pub fn new(topics: usize) -> FanoutCounts {
        FanoutCounts {
            published: vec![0; topics],
            offered: vec![0; topics],
            ..FanoutCounts::default()
        }
    }

    /// Adds another thread's counts.
    pub fn merge(&mut self, o: &FanoutCounts) {
        add_into(&mut self.published, &o.published);
        add_into(&mut self.offered, &o.offered);
        self.published_in_window += o.published_in_window;
        self.counts.merge(&o.counts);
        self.lagged += o.lagged;
    }
}

/// The relay-fanout figures of one run (next to the common ones: throughput
/// is deliveries per second, CPU is per million deliveries).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct FanoutFigures {
    /// Subscriber connections.
    pub subscribers: usize,
    /// Publishers.
    pub publishers: usize,
    /// Topics.
    pub topics: usize,
    /// Publishes sent, whole run.
    pub published: u64,
    /// Publishes per second sent in the window (achieved rate).
    pub publish_rate: f64,
    /// Publishes per second due in the window (asked rate).
    pub publish_rate_offered: f64,
    /// Deliveries owed for what was published: published x subscribers of its topic.
    pub expected: u64,
    /// Distinct deliveries received, whole run (after the final drain).
    pub delivered: u64,
    /// `expected - delivered`: deliveries never received.
    pub lost: u64,
    /// Deliveries the server reported dropped with `LAGGED` frames (part of `lost`).
    pub lagged: u64,
    /// Messages the server counted as dropped (any reason), if it can tell.
    pub server_drops: Option<u64>,
}

impl FanoutFigures {
    /// The figures of `spec` from the merged counts, over a window of
    /// `window` seconds.
    pub fn new(spec: &RelaySpec, c: &FanoutCounts, window: f64) -> FanoutFigures {
        let expected = spec.expected(&c.published);
        let per_s = |n: u64| if window > 0.0 { n as f64 / window } else { 0.0 };
        FanoutFigures {
            subscribers: spec.subscribers,
            publishers: spec.publishers,
            topics: spec.topics,
            published: c.published.iter().sum(),
            publish_rate: per_s(c.published_in_window),
            publish_rate_offered: per_s(c.offered.iter().sum()),
            expected,
            delivered: c.counts.delivered,
            lost: expected.saturating_sub(c.counts.delivered),
            lagged: c.lagged,
            server_drops: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subscribers: usize, topics: usize) -> RelaySpec {
        RelaySpec {
            subscribers,
            publishers: 2,
            topics,
            publish_udp: false,
        }
    }

    #[test]
    fn subscribers_and_messages_spread_over_topics() {
        let s = spec(10, 3);
        assert_eq!(
            (0..3).map(|t| s.subscribers_of(t)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(s.topic_of_subscriber(7), 1);
        assert_eq!(s.topic_of_message(7), (1, 2));
        // 5 publishes on topic 0, 2 on topic 1, none on topic 2.
        assert_eq!(s.expected(&[5, 2, 0]), 5 * 4 + 2 * 3);
        assert_eq!(topic_name(12), b"bench/12");
    }

    #[test]
    fn figures_count_loss_from_expected_deliveries() {
        let s = spec(8, 1);
        let mut a = FanoutCounts::new(1);
        a.published = vec![1000];
        a.counts.delivered = 5000;
        let mut b = FanoutCounts::new(1);
        b.published = vec![1000];
        b.counts.delivered = 10_990;
        b.lagged = 10;
        a.merge(&b);
        let f = FanoutFigures::new(&s, &a, 1.0);
        assert_eq!(
            (f.published, f.expected, f.delivered),
            (2000, 16_000, 15_990)
        );
        assert_eq!((f.lost, f.lagged), (10, 10));
    }
}
