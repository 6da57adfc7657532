//! Open connections per source address.

use std::collections::HashMap;
use std::net::IpAddr;

/// Counts open connections per source address and refuses one over the cap.
///
/// A source's entry exists only while it has connections open, so the map
/// holds at most as many entries as there are open connections.
#[derive(Debug, Clone)]
pub struct SourceCounts {
    limit: u32,
    open: HashMap<IpAddr, u32>,
}

impl SourceCounts {
    /// At most `limit` open connections per source (0: no limit).
    pub fn new(limit: u32) -> SourceCounts {
        SourceCounts {
            limit,
            open: HashMap::new(),
        }
    }

    /// Counts a new connection from `ip` if the source is under its cap;
    /// `false` (and nothing counted) otherwise.
    pub fn try_acquire(&mut self, ip: IpAddr) -> bool {
        let n = self.open.entry(ip).or_insert(0);
        if self.limit != 0 && *n >= self.limit {
            return false;
        }
        *n += 1;
        true
    }

    /// Counts a connection from `ip` as closed. One release per successful
    /// [`SourceCounts::try_acquire`]; extra releases are ignored.
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(n) = self.open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&ip);
            }
        }
    }

    /// Open connections of `ip`.
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.open.get(&ip).copied().unwrap_or(0)
    }

    /// Sources with at least one open connection.
    pub fn sources(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_per_source_and_released_slots_are_reused() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut c = SourceCounts::new(3);
        assert_eq!((0..5).filter(|_| c.try_acquire(a)).count(), 3);
        assert!(c.try_acquire(b));
        assert_eq!((c.open(a), c.open(b), c.sources()), (3, 1, 2));
        c.release(a);
        assert!(c.try_acquire(a));
        assert!(!c.try_acquire(a));
        c.release(b);
        c.release(b);
        assert_eq!((c.open(b), c.sources()), (0, 1));
        let mut unlimited = SourceCounts::new(0);
        assert!((0..10_000).all(|_| unlimited.try_acquire(a)));
    }
}
