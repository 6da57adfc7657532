//! Trusted-source CIDR lists.

use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

/// Why an allowlist could not be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AllowlistError {
    /// A CIDR (or address) did not parse.
    #[error(
        "`{value}` is not a CIDR or an IP address (e.g. `10.0.0.0/8`, `192.168.1.7`, `fd00::/8`)"
    )]
    BadCidr {
        /// The text given.
        value: String,
    },
    /// A listener bound to a non-loopback address was given no allowlist.
    #[error(
        "listener on {addr} is not bound to loopback and has no allowlist: name the trusted \
         sources (e.g. `--allow 10.0.0.0/8`), or allow everyone explicitly with \
         `--allow 0.0.0.0/0 --allow ::/0`"
    )]
    NeedsExplicitChoice {
        /// The address the listener binds.
        addr: IpAddr,
    },
}

/// The CIDRs a listener accepts sources from.
///
/// An IPv4-mapped IPv6 source (`::ffff:10.1.2.3`, as a dual-stack socket
/// reports IPv4 peers) is checked as the IPv4 address it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    nets: Vec<IpNet>,
    /// The same CIDRs as (network, mask) pairs: the check runs per datagram,
    /// and masking integers is several times cheaper than `IpNet::contains`.
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl Allowlist {
    /// Loopback only: `127.0.0.0/8` and `::1/128`.
    pub fn loopback() -> Allowlist {
        Allowlist::new(vec![
            "127.0.0.0/8".parse().expect("a valid CIDR"),
            "::1/128".parse().expect("a valid CIDR"),
        ])
    }

    /// Exactly these CIDRs.
    pub fn new(nets: Vec<IpNet>) -> Allowlist {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for n in &nets {
            match n {
                IpNet::V4(n) => {
                    let mask = u32::from(n.netmask());
                    v4.push((u32::from(n.network()) & mask, mask));
                }
                IpNet::V6(n) => {
                    let mask = u128::from(n.netmask());
                    v6.push((u128::from(n.network()) & mask, mask));
                }
            }
        }
        Allowlist { nets, v4, v6 }
    }

    /// Parses one CIDR, or a bare address as a single-host network.
    pub fn parse_cidr(text: &str) -> Result<IpNet, AllowlistError> {
        let t = text.trim();
        t.parse::<IpNet>()
            .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| AllowlistError::BadCidr {
                value: text.to_owned(),
            })
    }

    /// The allowlist of a listener bound to `bound`, given the CIDRs the
    /// operator configured (`None` or empty: none).
    ///
    /// With none configured, a listener bound to a loopback address allows
    /// loopback; one bound to any other address (the unspecified address
    /// included) is refused with [`AllowlistError::NeedsExplicitChoice`].
    pub fn for_listener(
        bound: IpAddr,
        configured: Option<&[IpNet]>,
    ) -> Result<Allowlist, AllowlistError> {
        match configured {
            Some(nets) if !nets.is_empty() => Ok(Allowlist::new(nets.to_vec())),
            _ if bound.is_loopback() => Ok(Allowlist::loopback()),
            _ => Err(AllowlistError::NeedsExplicitChoice { addr: bound }),
        }
    }

    /// Whether `ip` is in one of the CIDRs.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|&(net, mask)| a & mask == net)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|&(net, mask)| a & mask == net)
            }
        }
    }

    /// Whether the list lets every address of a family in (`0.0.0.0/0` or
    /// `::/0`), which deserves a warning at start.
    pub fn is_open(&self) -> bool {
        self.nets.iter().any(|n| n.prefix_len() == 0)
    }

    /// The CIDRs.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_the_listed_networks_are_allowed() {
        let a = Allowlist::new(vec![
            Allowlist::parse_cidr("127.0.0.1/32").unwrap(),
            Allowlist::parse_cidr("10.20.0.0/16").unwrap(),
            Allowlist::parse_cidr("fd00:1::/32").unwrap(),
        ]);
        assert!(a.contains(ip("127.0.0.1")));
        assert!(!a.contains(ip("127.0.0.2")));
        assert!(a.contains(ip("10.20.255.255")));
        assert!(!a.contains(ip("10.21.0.0")));
        assert!(a.contains(ip("fd00:1:ffff::9")));
        assert!(!a.contains(ip("fd00:2::1")));
        assert!(!a.contains(ip("::1")));
        // A dual-stack socket reports IPv4 peers as mapped IPv6 addresses.
        assert!(a.contains(ip("::ffff:10.20.1.2")));
        assert!(!a.contains(ip("::ffff:10.21.1.2")));
        assert!(!a.is_open());
    }

    #[test]
    fn open_lists_and_cidrs_with_host_bits_match_by_network() {
        let a = Allowlist::new(vec![
            Allowlist::parse_cidr("0.0.0.0/0").unwrap(),
            Allowlist::parse_cidr("fd00:1::7/32").unwrap(),
        ]);
        assert!(a.contains(ip("203.0.113.9")));
        assert!(a.contains(ip("::ffff:203.0.113.9")));
        assert!(a.contains(ip("fd00:1::1")));
        assert!(!a.contains(ip("fd00:2::1")));
        assert!(!a.contains(ip("::1")));
        let b = Allowlist::new(vec![Allowlist::parse_cidr("10.20.7.9/16").unwrap()]);
        assert!(b.contains(ip("10.20.0.1")));
        assert!(!b.contains(ip("10.21.7.9")));
    }

    #[test]
    fn bare_addresses_are_single_hosts_and_bad_text_is_named() {
        assert_eq!(
            Allowlist::parse_cidr("192.168.1.7").unwrap(),
            "192.168.1.7/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            Allowlist::parse_cidr("::1").unwrap(),
            "::1/128".parse::<IpNet>().unwrap()
        );
        let e = Allowlist::parse_cidr("10.0.0.0/33").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`10.0.0.0/33` is not a CIDR or an IP address (e.g. `10.0.0.0/8`, \
             `192.168.1.7`, `fd00::/8`)"
        );
        assert!(Allowlist::parse_cidr("office").is_err());
    }

    #[test]
    fn loopback_listeners_default_to_loopback_others_need_a_choice() {
        let a = Allowlist::for_listener(ip("127.0.0.1"), None).unwrap();
        assert_eq!(a, Allowlist::loopback());
        assert!(a.contains(ip("127.0.0.2")));
        assert!(a.contains(ip("::1")));
        assert!(!a.contains(ip("10.0.0.1")));
        assert_eq!(
            Allowlist::for_listener(ip("::1"), Some(&[])).unwrap(),
            Allowlist::loopback()
        );
        for bound in ["10.0.0.5", "0.0.0.0", "::"] {
            assert_eq!(
                Allowlist::for_listener(ip(bound), None),
                Err(AllowlistError::NeedsExplicitChoice { addr: ip(bound) })
            );
        }
        let everyone = [
            Allowlist::parse_cidr("0.0.0.0/0").unwrap(),
            Allowlist::parse_cidr("::/0").unwrap(),
        ];
        let open = Allowlist::for_listener(ip("0.0.0.0"), Some(&everyone)).unwrap();
        assert!(open.is_open());
        assert!(open.contains(ip("203.0.113.9")));
        assert!(open.contains(ip("2001:db8::1")));
        // An explicit list replaces the loopback default.
        let only = [Allowlist::parse_cidr("127.0.0.1").unwrap()];
        let a = Allowlist::for_listener(ip("127.0.0.1"), Some(&only)).unwrap();
        assert!(!a.contains(ip("127.0.0.2")));
    }
}
