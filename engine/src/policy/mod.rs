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
