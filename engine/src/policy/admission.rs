//! The checks of one listener, in the order a shard runs them.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::{
    Allowlist, Decision, DenyReason, Ipv6SourcePrefix, RateLimit, SourceCounts, SourceRates,
};

/// Most sources one shard keeps a rate bucket for (see [`SourceRates`]).
const MAX_RATE_SOURCES: usize = 65536;

/// What a listener admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Trusted sources.
    pub allow: Allowlist,
    /// Audit mode: sources outside the allowlist are served, and counted and
    /// logged as `would_deny`. Limits are enforced either way.
    pub dry_run: bool,
    /// Open connections on the listener over all shards (0: no limit).
    pub max_conns: u32,
    /// Open connections per source address on one shard (0: no limit).
    pub max_conns_per_source: u32,
    /// New connections per source address on one shard (None: no limit).
    pub conn_rate: Option<RateLimit>,
    /// How IPv6 sources are grouped for the per-source limits.
    pub ipv6_prefix: Ipv6SourcePrefix,
}

/// One listener's admission state on one shard.
///
/// Calling order: [`Admission::check_source`] for every datagram;
/// [`Admission::admit_stream`] for every accepted connection, and exactly one
/// [`Admission::release`] when a connection it admitted closes.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    /// Open connections of the listener, shared by every shard serving it.
    listener_open: Arc<AtomicU32>,
    sources: SourceCounts,
    rates: Option<SourceRates>,
}

impl Admission {
    /// State for one shard; `listener_open` is shared by all shards of the listener.
    pub fn new(config: AdmissionConfig, listener_open: Arc<AtomicU32>) -> Admission {
        Admission {
            sources: SourceCounts::new(config.max_conns_per_source),
            rates: config
                .conn_rate
                .map(|r| SourceRates::new(r, MAX_RATE_SOURCES)),
            config,
            listener_open,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// The allowlist check alone (datagrams, and the first step for streams).
    #[inline]
    pub fn check_source(&self, ip: IpAddr) -> Decision {
        if self.config.allow.contains(ip) {
            Decision::Allow
        } else if self.config.dry_run {
            Decision::WouldDeny(DenyReason::NotAllowed)
        } else {
            Decision::Deny(DenyReason::NotAllowed)
        }
    }

    /// Every check for a new connection from `ip` at `now`: the allowlist,
    /// then the source's rate (every attempt takes a token), then the
    /// listener's and the source's connection caps. An admitted connection
    /// (`Allow` or `WouldDeny`) is counted until [`Admission::release`].
    pub fn admit_stream(&mut self, ip: IpAddr, now: Instant) -> Decision {
        let source = self.check_source(ip);
        if let Decision::Deny(_) = source {
            return source;
        }
        let key = self.config.ipv6_prefix.key(ip);
        if let Some(rates) = &mut self.rates {
            if !rates.try_take(key, now) {
                return Decision::Deny(DenyReason::RateLimited);
            }
        }
        let max = self.config.max_conns;
        let before = self.listener_open.fetch_add(1, Ordering::Relaxed);
        if max != 0 && before >= max {
            self.listener_open.fetch_sub(1, Ordering::Relaxed);
            return Decision::Deny(DenyReason::ListenerFull);
        }
        if !self.sources.try_acquire(key) {
            self.listener_open.fetch_sub(1, Ordering::Relaxed);
            return Decision::Deny(DenyReason::SourceFull);
        }
        source
    }

    /// A connection admitted by [`Admission::admit_stream`] closed.
    pub fn release(&mut self, ip: IpAddr) {
        self.sources.release(self.config.ipv6_prefix.key(ip));
        self.listener_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Open connections of the listener over all shards.
    pub fn listener_open(&self) -> u32 {
        self.listener_open.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(allow: &str) -> AdmissionConfig {
        AdmissionConfig {
            allow: Allowlist::new(vec![Allowlist::parse_cidr(allow).unwrap()]),
            dry_run: false,
            max_conns: 0,
            max_conns_per_source: 0,
            conn_rate: None,
            ipv6_prefix: Ipv6SourcePrefix::default(),
        }
    }

    const TRUSTED: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const UNTRUSTED: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn allowlist_denies_and_dry_run_only_reports() {
        let open = Arc::new(AtomicU32::new(0));
        let now = Instant::now();
        let mut a = Admission::new(config("127.0.0.1/32"), open.clone());
        assert_eq!(a.check_source(TRUSTED), Decision::Allow);
        assert_eq!(
            a.admit_stream(UNTRUSTED, now),
            Decision::Deny(DenyReason::NotAllowed)
        );
        assert_eq!(open.load(Ordering::Relaxed), 0, "a denial holds no slot");
        let mut audit = Admission::new(
            AdmissionConfig {
                dry_run: true,
                ..config("127.0.0.1/32")
            },
            open.clone(),
        );
        let d = audit.admit_stream(UNTRUSTED, now);
        assert_eq!(d, Decision::WouldDeny(DenyReason::NotAllowed));
        assert!(d.admits());
        assert_eq!(
            (d.as_str(), d.reason()),
            ("would_deny", Some(DenyReason::NotAllowed))
        );
        assert_eq!(audit.listener_open(), 1);
        audit.release(UNTRUSTED);
        assert_eq!(audit.listener_open(), 0);
    }

    #[test]
    fn caps_hold_exactly_and_are_shared_across_shards() {
        let open = Arc::new(AtomicU32::new(0));
        let now = Instant::now();
        let cfg = AdmissionConfig {
            max_conns: 5,
            max_conns_per_source: 3,
            ..config("127.0.0.0/8")
        };
        let mut shard0 = Admission::new(cfg.clone(), open.clone());
        let mut shard1 = Admission::new(cfg, open.clone());
        let got: Vec<Decision> = (0..4).map(|_| shard0.admit_stream(TRUSTED, now)).collect();
        assert_eq!(
            got,
            [
                Decision::Allow,
                Decision::Allow,
                Decision::Allow,
                Decision::Deny(DenyReason::SourceFull)
            ]
        );
        // The per-source cap is per shard; the listener cap is shared.
        assert_eq!(shard1.admit_stream(TRUSTED, now), Decision::Allow);
        assert_eq!(shard1.admit_stream(UNTRUSTED, now), Decision::Allow);
        assert_eq!(
            shard1.admit_stream(UNTRUSTED, now),
            Decision::Deny(DenyReason::ListenerFull)
        );
        assert_eq!(open.load(Ordering::Relaxed), 5);
        shard0.release(TRUSTED);
        assert_eq!(shard1.admit_stream(UNTRUSTED, now), Decision::Allow);
    }

    #[test]
    fn rate_limit_counts_every_attempt() {
        let t0 = Instant::now();
        let mut a = Admission::new(
            AdmissionConfig {
                conn_rate: Some(RateLimit {
                    per_sec: 10,
                    burst: 4,
                }),
                max_conns_per_source: 2,
                ..config("127.0.0.0/8")
            },
            Arc::new(AtomicU32::new(0)),
        );
        let got: Vec<Decision> = (0..5).map(|_| a.admit_stream(TRUSTED, t0)).collect();
        assert_eq!(
            got,
            [
                Decision::Allow,
                Decision::Allow,
                Decision::Deny(DenyReason::SourceFull),
                Decision::Deny(DenyReason::SourceFull),
                Decision::Deny(DenyReason::RateLimited)
            ]
        );
        a.release(TRUSTED);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(a.admit_stream(TRUSTED, t1), Decision::Allow);
        assert_eq!(
            a.admit_stream(UNTRUSTED, t1),
            Decision::Allow,
            "another source has its own bucket"
        );
    }
}
