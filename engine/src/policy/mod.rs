//! Admission policy for listeners, as sans-IO building blocks.
//!
//! Nothing here touches a socket or reads a clock: the shard passes the
//! peer address and its loop-turn `now` in, and acts on the [`Decision`]
//! it gets back. The pieces:
//!
//! - [`Allowlist`]: the trusted-source CIDRs of a listener (IPv4 and IPv6),
//!   with the safe default of [`Allowlist::for_listener`]: loopback for a
//!   listener bound to loopback, an explicit choice for any other address;
//! - [`SourceCounts`]: open connections per source address, with a cap;
//! - [`SourceRates`]: a token bucket per source address for the rate of new
//!   connections;
//! - [`Decision`] and [`DenyReason`]: what the checks concluded and why.
//!
//! [`Admission`] puts them together in the order the shard checks them.

mod admission;
mod allowlist;
mod rate;
mod sources;

pub use admission::{Admission, AdmissionConfig};
pub use allowlist::{Allowlist, AllowlistError};
pub use rate::{RateLimit, SourceRates, TokenBucket};
pub use sources::SourceCounts;

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// How per-source limits, rates, handshake caps, log gates and denial
/// alerts group IPv6 sources: by the first `bits` bits of the address
/// (default 64, what one host or site is usually given), so that rotating
/// through the addresses of one prefix is one source. IPv4 addresses, and
/// IPv4-mapped IPv6 ones, are keyed whole. Allowlists always see the full
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6SourcePrefix(u8);

impl Default for Ipv6SourcePrefix {
    fn default() -> Self {
        Ipv6SourcePrefix(64)
    }
}

impl Ipv6SourcePrefix {
    /// A prefix of `bits` bits, 1 to 128.
    pub fn new(bits: u8) -> Result<Ipv6SourcePrefix, String> {
        if (1..=128).contains(&bits) {
            Ok(Ipv6SourcePrefix(bits))
        } else {
            Err(format!(
                "ipv6_source_prefix = {bits} must be 1 to 128 (bits of an IPv6 source counted as one source; e.g. 64)"
            ))
        }
    }

    /// Its length in bits.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The key `ip` is counted under.
    #[inline]
    pub fn key(self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mask = u128::MAX << (128 - u32::from(self.0));
                    IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
                }
            },
        }
    }
}

/// Why a connection or datagram was (or, in audit mode, would have been) refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DenyReason {
    /// The source address is in none of the listener's allowed CIDRs.
    NotAllowed = 0,
    /// The listener already has its maximum of open connections.
    ListenerFull = 1,
    /// The source already has its maximum of open connections.
    SourceFull = 2,
    /// The source opens connections faster than its rate limit.
    RateLimited = 3,
    /// TLS: the source already has its maximum of handshakes in progress.
    HandshakesPerSource = 4,
    /// TLS: the shard already has its maximum of handshakes in progress.
    HandshakesPerShard = 5,
    /// Mutual TLS: no client certificate.
    NoCertificate = 6,
    /// Mutual TLS: the client certificate does not chain to the client CA.
    UnknownCa = 7,
    /// Mutual TLS: the client certificate is expired or not yet valid.
    CertExpired = 8,
    /// Mutual TLS: the client certificate is unusable for another reason.
    BadCertificate = 9,
    /// Mutual TLS: the certificate's identity is not in the listener's allowlist.
    IdentityNotAllowed = 10,
}

impl DenyReason {
    /// Number of reasons; per-reason counters are arrays of this length.
    pub const COUNT: usize = 11;
    /// Every reason, in discriminant order.
    pub const ALL: [DenyReason; DenyReason::COUNT] = [
        DenyReason::NotAllowed,
        DenyReason::ListenerFull,
        DenyReason::SourceFull,
        DenyReason::RateLimited,
        DenyReason::HandshakesPerSource,
        DenyReason::HandshakesPerShard,
        DenyReason::NoCertificate,
        DenyReason::UnknownCa,
        DenyReason::CertExpired,
        DenyReason::BadCertificate,
        DenyReason::IdentityNotAllowed,
    ];

    /// The snake-case name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NotAllowed => "not_allowed",
            DenyReason::ListenerFull => "listener_full",
            DenyReason::SourceFull => "source_full",
            DenyReason::RateLimited => "rate_limited",
            DenyReason::HandshakesPerSource => "tls_handshakes_per_source",
            DenyReason::HandshakesPerShard => "tls_handshakes_per_shard",
            DenyReason::NoCertificate => "no_certificate",
            DenyReason::UnknownCa => "unknown_ca",
            DenyReason::CertExpired => "cert_expired",
            DenyReason::BadCertificate => "bad_certificate",
            DenyReason::IdentityNotAllowed => "identity_not_allowed",
        }
    }

    /// The reason with discriminant `i`, if any.
    pub fn from_index(i: u8) -> Option<DenyReason> {
        DenyReason::ALL.get(i as usize).copied()
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the admission checks concluded for one connection or datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve it.
    Allow,
    /// Refuse it (close the connection, drop the datagram).
    Deny(DenyReason),
    /// Audit mode: it would have been refused for this reason, but is served.
    WouldDeny(DenyReason),
}

impl Decision {
    /// Whether the connection or datagram is served.
    pub fn admits(self) -> bool {
        !matches!(self, Decision::Deny(_))
    }

    /// The reason of a denial or would-be denial.
    pub fn reason(self) -> Option<DenyReason> {
        match self {
            Decision::Allow => None,
            Decision::Deny(r) | Decision::WouldDeny(r) => Some(r),
        }
    }

    /// `allow`, `deny` or `would_deny`, as logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny(_) => "deny",
            Decision::WouldDeny(_) => "would_deny",
        }
    }
}

#[cfg(test)]
mod prefix_tests {
    use super::*;

    #[test]
    fn ipv6_sources_are_keyed_by_their_prefix_and_ipv4_whole() {
        let key = |bits, ip: &str| {
            Ipv6SourcePrefix::new(bits)
                .unwrap()
                .key(ip.parse().unwrap())
                .to_string()
        };
        assert_eq!(key(64, "2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
        assert_eq!(key(48, "2001:db8:1:2:3:4:5:6"), "2001:db8:1::");
        assert_eq!(key(128, "2001:db8:1:2:3:4:5:6"), "2001:db8:1:2:3:4:5:6");
        assert_eq!(key(1, "ffff::1"), "8000::");
        assert_eq!(key(64, "10.1.2.3"), "10.1.2.3");
        assert_eq!(key(64, "::ffff:10.1.2.3"), "10.1.2.3", "IPv4-mapped: whole");
        assert_eq!(key(64, "::1"), "::");
        assert_eq!(Ipv6SourcePrefix::default().bits(), 64);
        for bad in [0, 129] {
            assert!(Ipv6SourcePrefix::new(bad)
                .unwrap_err()
                .contains("ipv6_source_prefix"));
        }
    }
}
