//! Per-publisher sequence tracking at a subscriber: what arrived once, what
//! arrived twice, what arrived after a later message.
//!
//! The relay delivers the messages of one publisher in publish order, so a
//! subscriber expects sequence numbers 0, 1, 2, ... from each publisher on
//! its topic. A jump forward leaves a gap (messages the relay dropped, which
//! it reports with `LAGGED`, or ones still to come out of order); a number
//! below the next expected one is a late arrival if it filled a gap of the
//! last [`WINDOW`] numbers, else a duplicate.

/// How many numbers below the next expected one are remembered.
pub const WINDOW: u64 = 64;

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next expected number.
    InOrder,
    /// Ahead of the next expected number by this many (a gap).
    Ahead(u64),
    /// Below the next expected number, filling a gap: reordered.
    Late,
    /// Seen before (or too old to tell): not counted again.
    Duplicate,
}

impl Arrival {
    /// Whether the arrival is a message not seen before.
    pub fn is_new(self) -> bool {
        !matches!(self, Arrival::Duplicate)
    }
}

/// The sequence state of one publisher as one subscriber sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqTrack {
    next: u64,
    /// Bit `k` set: number `next - 1 - k` has arrived.
    seen: u64,
}

impl SeqTrack {
    /// Classifies the arrival of `seq` and remembers it.
    pub fn on_seq(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            let shift = seq - self.next + 1;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift } | 1;
            let ahead = seq - self.next;
            self.next = seq + 1;
            return if ahead == 0 {
                Arrival::InOrder
            } else {
                Arrival::Ahead(ahead)
            };
        }
        let k = self.next - 1 - seq;
        if k >= WINDOW || self.seen & (1 << k) != 0 {
            return Arrival::Duplicate;
        }
        self.seen |= 1 << k;
        Arrival::Late
    }

    /// The next number expected in order.
    pub fn next(&self) -> u64 {
        self.next
    }
}

/// Counts of one subscriber (or many, summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Distinct messages received.
    pub delivered: u64,
    /// Messages that arrived again.
    pub duplicates: u64,
    /// Messages that arrived after a later one of the same publisher.
    pub reordered: u64,
}

impl Counts {
    /// Counts one arrival.
    pub fn add(&mut self, a: Arrival) {
        match a {
            Arrival::InOrder | Arrival::Ahead(_) => self.delivered += 1,
            Arrival::Late => {
                self.delivered += 1;
                self.reordered += 1;
            }
            Arrival::Duplicate => self.duplicates += 1,
        }
    }

    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &Counts) {
        self.delivered += o.delivered;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_gaps_late_fills_and_duplicates() {
        let mut t = SeqTrack::default();
        let mut c = Counts::default();
        let arrivals: Vec<Arrival> = [0, 1, 4, 2, 2, 4, 5, 3, 0]
            .iter()
            .map(|&s| {
                let a = t.on_seq(s);
                c.add(a);
                a
            })
            .collect();
        use Arrival::*;
        assert_eq!(
            arrivals,
            [
                InOrder,
                InOrder,
                Ahead(2),
                Late,
                Duplicate,
                Duplicate,
                InOrder,
                Late,
                Duplicate
            ]
        );
        assert_eq!(t.next(), 6);
        assert_eq!(
            c,
            Counts {
                delivered: 6,
                duplicates: 3,
                reordered: 2
            }
        );
    }

    #[test]
    fn a_long_jump_forgets_the_window_and_old_numbers_count_as_duplicates() {
        let mut t = SeqTrack::default();
        assert_eq!(t.on_seq(0), Arrival::InOrder);
        assert_eq!(t.on_seq(1000), Arrival::Ahead(999));
        // The window holds 1000 back to 1000 - WINDOW + 1.
        assert_eq!(t.on_seq(1001 - WINDOW), Arrival::Late);
        assert_eq!(t.on_seq(1000 - WINDOW), Arrival::Duplicate);
        assert_eq!(t.on_seq(999), Arrival::Late);
        assert_eq!(t.on_seq(999), Arrival::Duplicate);
    }
}
