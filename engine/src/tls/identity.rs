//! Certificate identities: what a certificate says about who holds it, and
//! the allowlist patterns a listener matches client identities against.
//!
//! A machine proves who it is with a certificate chained to the listener's
//! client CA. Its *identities* are the certificate's subject alternative
//! names: URI SANs (SPIFFE IDs such as `spiffe://prod.example/sensor/42`) and
//! DNS SANs. The subject DN is logged but never matched: modern PKIs (SPIFFE,
//! the Web PKI) put identities in SANs, and a DN match invites ambiguity.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a certificate says: its names, validity and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The subject distinguished name, RFC 4514 style (`CN=sensor-1,O=prod`).
    pub subject: String,
    /// DNS subject alternative names, as written in the certificate.
    pub dns: Vec<String>,
    /// URI subject alternative names (SPIFFE IDs among them).
    pub uris: Vec<String>,
    /// IP address subject alternative names (logged; identities are the
    /// URI and DNS names).
    pub ips: Vec<std::net::IpAddr>,
    /// SHA-256 of the DER certificate.
    pub fingerprint: [u8; 32],
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a parseable X.509 certificate: {0}")]
pub struct CertParseError(pub String);

impl CertIdentity {
    /// Reads the names, validity and fingerprint of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertIdentity, CertParseError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| CertParseError(e.to_string()))?;
        let mut dns = Vec::new();
        let mut uris = Vec::new();
        let mut ips = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => dns.push((*n).to_owned()),
                    GeneralName::URI(u) => uris.push((*u).to_owned()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => ips.push(std::net::IpAddr::from(
                            <[u8; 4]>::try_from(*b).unwrap_or_default(),
                        )),
                        16 => ips.push(std::net::IpAddr::from(
                            <[u8; 16]>::try_from(*b).unwrap_or_default(),
                        )),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(digest::digest(&digest::SHA256, der).as_ref());
        Ok(CertIdentity {
            subject: cert.subject().to_string(),
            dns,
            uris,
            ips,
            fingerprint,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// The fingerprint as lower-case hex pairs joined by `:`.
    pub fn fingerprint_hex(&self) -> String {
        let mut s = String::with_capacity(95);
        for (i, b) in self.fingerprint.iter().enumerate() {
            if i > 0 {
                s.push(':');
            }
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Every SAN as it is logged: `dns:NAME`, the URIs, `ip:ADDRESS`.
    pub fn sans(&self) -> Vec<String> {
        self.dns
            .iter()
            .map(|d| format!("dns:{d}"))
            .chain(self.uris.iter().cloned())
            .chain(self.ips.iter().map(|ip| format!("ip:{ip}")))
            .collect()
    }
}

/// One allowed identity (`--tls-allow-identity`).
///
/// - a URI such as `spiffe://prod.example/sensor/7` matches a URI SAN
///   exactly; with a trailing `*` (`spiffe://prod.example/sensor/*`) it
///   matches every URI SAN that starts with what comes before the `*`;
/// - `dns:NAME` matches a DNS SAN exactly (ASCII case-insensitive);
///   `dns:*.prod.example` matches every DNS SAN under `prod.example`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdentityPattern {
    /// A URI SAN, exact or by prefix.
    Uri {
        /// The URI, or the prefix without its `*`.
        value: String,
        /// Match by prefix.
        prefix: bool,
    },
    /// A DNS SAN, exact or every name under a domain.
    Dns {
        /// The name, or the domain with its leading dot (`.prod.example`).
        value: String,
        /// Match every name ending with `value`.
        subdomains: bool,
    },
}

/// Why an identity pattern did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "identity `{pattern}`: {why}; write a URI SAN such as `spiffe://prod.example/sensor/*` \
     (a trailing `*` matches by prefix) or `dns:NAME` (`dns:*.prod.example` for every name under it)"
)]
pub struct IdentityPatternError {
    /// What was written.
    pub pattern: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl FromStr for IdentityPattern {
    type Err = IdentityPatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| IdentityPatternError {
            pattern: s.to_owned(),
            why,
        };
        if let Some(name) = s.strip_prefix("dns:") {
            let (value, subdomains) = match name.strip_prefix('*') {
                Some(rest) if rest.starts_with('.') && rest.len() > 1 => (rest, true),
                Some(_) => return Err(err("a DNS wildcard is `*.` followed by a domain")),
                None => (name, false),
            };
            if value.is_empty() || value.contains('*') || !value.is_ascii() {
                return Err(err("a DNS name is ASCII, not empty, with `*` only as `*.`"));
            }
            return Ok(IdentityPattern::Dns {
                value: value.to_ascii_lowercase(),
                subdomains,
            });
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(err("neither a URI (`scheme://...`) nor `dns:NAME`"));
        };
        if scheme.is_empty() || rest.is_empty() {
            return Err(err("a URI needs a scheme and something after `://`"));
        }
        let (value, prefix) = match s.strip_suffix('*') {
            Some(v) => (v, true),
            None => (s, false),
        };
        if value.contains('*') {
            return Err(err("`*` may only end a URI pattern"));
        }
        Ok(IdentityPattern::Uri {
            value: value.to_owned(),
            prefix,
        })
    }
}

impl fmt::Display for IdentityPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityPattern::Uri { value, prefix } => {
                write!(f, "{value}{}", if *prefix { "*" } else { "" })
            }
            IdentityPattern::Dns { value, subdomains } => {
                write!(f, "dns:{}{value}", if *subdomains { "*" } else { "" })
            }
        }
    }
}

impl IdentityPattern {
    /// Whether a certificate with these names matches.
    pub fn matches(&self, id: &CertIdentity) -> bool {
        match self {
            IdentityPattern::Uri { value, prefix } => id.uris.iter().any(|u| {
                if *prefix {
                    u.starts_with(value.as_str())
                } else {
                    u == value
                }
            }),
            IdentityPattern::Dns { value, subdomains } => id.dns.iter().any(|d| {
                let d = d.to_ascii_lowercase();
                if *subdomains {
                    d.len() > value.len() && d.ends_with(value.as_str())
                } else {
                    d == *value
                }
            }),
        }
    }
}

/// The identities a listener allows. Empty: every certificate that chains
/// to the client CA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityAllowlist {
    patterns: Vec<IdentityPattern>,
}

impl IdentityAllowlist {
    /// An allowlist of these patterns.
    pub fn new(patterns: Vec<IdentityPattern>) -> IdentityAllowlist {
        IdentityAllowlist { patterns }
    }

    /// The patterns, in the order given.
    pub fn patterns(&self) -> &[IdentityPattern] {
        &self.patterns
    }

    /// Whether `id` is allowed: no patterns, or one that matches.
    pub fn allows(&self, id: &CertIdentity) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(dns: &[&str], uris: &[&str]) -> CertIdentity {
        CertIdentity {
            subject: "CN=x".into(),
            dns: dns.iter().map(|s| s.to_string()).collect(),
            uris: uris.iter().map(|s| s.to_string()).collect(),
            ips: Vec::new(),
            fingerprint: [0; 32],
            not_before: 0,
            not_after: 0,
        }
    }

    #[test]
    fn patterns_parse_print_and_match() {
        let p: IdentityPattern = "spiffe://prod.example/sensor/*".parse().unwrap();
        assert_eq!(
            p,
            IdentityPattern::Uri {
                value: "spiffe://prod.example/sensor/".into(),
                prefix: true
            }
        );
        assert_eq!(p.to_string(), "spiffe://prod.example/sensor/*");
        assert!(p.matches(&id(&[], &["spiffe://prod.example/sensor/7"])));
        assert!(p.matches(&id(&[], &["x:y", "spiffe://prod.example/sensor/a/b"])));
        assert!(!p.matches(&id(&[], &["spiffe://prod.example/actuator/7"])));
        assert!(!p.matches(&id(&["spiffe://prod.example/sensor/7"], &[])));

        let exact: IdentityPattern = "spiffe://prod.example/sensor/7".parse().unwrap();
        assert!(exact.matches(&id(&[], &["spiffe://prod.example/sensor/7"])));
        assert!(!exact.matches(&id(&[], &["spiffe://prod.example/sensor/70"])));

        let dns: IdentityPattern = "dns:Gateway.Prod.Example".parse().unwrap();
        assert_eq!(dns.to_string(), "dns:gateway.prod.example");
        assert!(dns.matches(&id(&["gateway.prod.example"], &[])));
        assert!(dns.matches(&id(&["GATEWAY.prod.example"], &[])));
        assert!(!dns.matches(&id(&["gateway.prod.example.evil"], &[])));
        assert!(!dns.matches(&id(&[], &["dns:gateway.prod.example"])));

        let under: IdentityPattern = "dns:*.prod.example".parse().unwrap();
        assert_eq!(under.to_string(), "dns:*.prod.example");
        assert!(under.matches(&id(&["a.prod.example"], &[])));
        assert!(under.matches(&id(&["a.b.prod.example"], &[])));
        assert!(!under.matches(&id(&["prod.example"], &[])));
        assert!(!under.matches(&id(&["aprod.example"], &[])));
    }

    #[test]
    fn bad_patterns_say_what_to_write() {
        for bad in [
            "sensor-7",
            "dns:",
            "dns:*",
            "dns:*prod",
            "dns:a*.b",
            "spiffe://a/*/b",
            "://x",
        ] {
            let e = bad.parse::<IdentityPattern>().unwrap_err();
            assert_eq!(e.pattern, bad);
            assert!(
                e.to_string().contains("spiffe://prod.example/sensor/*"),
                "{e}"
            );
        }
    }

    #[test]
    fn an_empty_allowlist_allows_every_chained_certificate() {
        let any = IdentityAllowlist::default();
        assert!(any.allows(&id(&[], &[])));
        let some = IdentityAllowlist::new(vec!["dns:a.example".parse().unwrap()]);
        assert!(some.allows(&id(&["a.example"], &[])));
        assert!(!some.allows(&id(&["b.example"], &[])));
    }
}
