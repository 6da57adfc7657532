//! Listener specs: `PROTOCOL@TRANSPORT:ADDR:PORTS`.
//!
//! A listener names the protocol plugin that serves it, the transport, one IP
//! address and an inclusive port range, for example
//! `sockperf@udp:127.0.0.1:11111-11114`, `echo@tcp:127.0.0.1:9000` or, with
//! an IPv6 address in brackets, `echo@tcp:[::1]:9000-9003`. The transport
//! `tls` is TCP with TLS: `echo@tls:127.0.0.1:9000-9063` (the plugin sees
//! plaintext and is asked whether it serves `tcp`).
//!
//! Parsing checks the syntax only. Whether a protocol of that name is
//! registered, and whether it serves the transport, is the registry's call.
//! Every [`SpecError`] names the part that is wrong, quotes the offending text
//! and shows a spec that would parse.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use ringport_plugin::Transport;
use thiserror::Error;

/// A correct spec, quoted in error messages.
const EXAMPLE: &str = "echo@tcp:127.0.0.1:9000-9063";
/// A correct IPv6 spec, quoted in error messages about IPv6 addresses.
const EXAMPLE_V6: &str = "echo@tcp:[::1]:9000-9063";

/// An inclusive range of ports, `first..=last`.
///
/// Built by [`PortRange::new`] or [`str::parse`], a range is never empty and
/// never contains port 0. The fields are public for pattern matching and
/// literals in tests; a range built by hand with `first > last` is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// The lowest port in the range.
    pub first: u16,
    /// The highest port in the range (inclusive).
    pub last: u16,
}

/// Why a port or port range did not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PortRangeError {
    /// Nothing where a port was expected (`9000-`, `-9000`, or no port at all).
    #[error("empty port: write a port such as `9000` or a range such as `9000-9063`")]
    Empty,
    /// Text that is not a number from 1 to 65535.
    #[error("`{0}` is not a port number: ports are 1 to 65535")]
    NotANumber(String),
    /// Port 0 asks the kernel for any free port; a listener needs a fixed one.
    #[error("port 0 is not allowed (it means \"any free port\"): use 1 to 65535")]
    Zero,
    /// `last` below `first`.
    #[error("range `{first}-{last}` is reversed: write `{last}-{first}`")]
    Reversed {
        /// The first port as written.
        first: u16,
        /// The last port as written.
        last: u16,
    },
}

impl PortRange {
    /// The range `first..=last`, refusing port 0 and reversed ranges.
    pub fn new(first: u16, last: u16) -> Result<Self, PortRangeError> {
        if first == 0 {
            return Err(PortRangeError::Zero);
        }
        if last < first {
            return Err(PortRangeError::Reversed { first, last });
        }
        Ok(PortRange { first, last })
    }

    /// The range holding `port` only. Unlike [`PortRange::new`], it does not
    /// refuse port 0.
    pub const fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }

    /// How many ports the range holds (0 only for a hand-built reversed range).
    pub fn len(&self) -> usize {
        if self.last < self.first {
            0
        } else {
            usize::from(self.last - self.first) + 1
        }
    }

    /// Whether the range holds no port (only a hand-built reversed range).
    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    /// Whether the two ranges share at least one port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        !self.is_empty()
            && !other.is_empty()
            && self.first <= other.last
            && other.first <= self.last
    }

    /// The ports in ascending order.
    pub fn iter(&self) -> RangeInclusive<u16> {
        self.first..=self.last
    }
}

impl IntoIterator for PortRange {
    type Item = u16;
    type IntoIter = RangeInclusive<u16>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Display for PortRange {
    /// `9000` for a single port, `9000-9063` for a range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    /// Parses `9000` or `9000-9063`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (first, last) = match s.split_once('-') {
            Some((first, last)) => (parse_port(first)?, parse_port(last)?),
            None => {
                let port = parse_port(s)?;
                (port, port)
            }
        };
        PortRange::new(first, last)
    }
}

fn parse_port(s: &str) -> Result<u16, PortRangeError> {
    if s.is_empty() {
        return Err(PortRangeError::Empty);
    }
    // `u16::from_str` accepts a leading `+`; a port never has one.
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortRangeError::NotANumber(s.to_owned()));
    }
    s.parse::<u16>()
        .map_err(|_| PortRangeError::NotANumber(s.to_owned()))
}

/// One listener: which protocol serves which transport on which address and ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenerSpec {
    /// The protocol plugin's registered name (`[a-z0-9_-]+`).
    pub protocol: String,
    /// TCP or UDP (TCP for `tls`).
    pub transport: Transport,
    /// TCP with TLS: written `tls` in the spec.
    pub tls: bool,
    /// The local address to bind.
    pub addr: IpAddr,
    /// The local ports to bind, one socket per port.
    pub ports: PortRange,
}

/// Why a listener spec did not parse. Every message quotes the whole spec,
/// names the wrong part and shows a spec that parses.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    /// No `@` between protocol and transport.
    #[error(
        "bad listener spec `{spec}`: missing `@` after the protocol name; \
         expected PROTOCOL@TRANSPORT:ADDR:PORTS, e.g. `{EXAMPLE}`"
    )]
    MissingAt {
        /// The spec as given.
        spec: String,
    },
    /// Nothing before the `@`.
    #[error(
        "bad listener spec `{spec}`: empty protocol name before `@`; \
         expected PROTOCOL@TRANSPORT:ADDR:PORTS, e.g. `{EXAMPLE}`"
    )]
    EmptyProtocol {
        /// The spec as given.
        spec: String,
    },
    /// A protocol name with characters outside `[a-z0-9_-]`.
    #[error(
        "bad listener spec `{spec}`: protocol name `{protocol}` may only contain \
         a-z, 0-9, `_` and `-`; e.g. `{EXAMPLE}`"
    )]
    BadProtocol {
        /// The spec as given.
        spec: String,
        /// The protocol name as written.
        protocol: String,
    },
    /// A transport other than `tcp`, `tls` or `udp`.
    #[error(
        "bad listener spec `{spec}`: unknown transport `{transport}`, use `tcp`, `tls` or `udp`; \
         e.g. `{EXAMPLE}`"
    )]
    UnknownTransport {
        /// The spec as given.
        spec: String,
        /// The transport as written.
        transport: String,
    },
    /// No `:` after the transport, so neither address nor ports.
    #[error(
        "bad listener spec `{spec}`: missing `:ADDR:PORTS` after the transport; \
         e.g. `{EXAMPLE}`"
    )]
    MissingAddress {
        /// The spec as given.
        spec: String,
    },
    /// An address with no `:PORTS` after it.
    #[error(
        "bad listener spec `{spec}`: missing `:PORTS` after the address `{addr}`; \
         e.g. `{EXAMPLE}`"
    )]
    MissingPorts {
        /// The spec as given.
        spec: String,
        /// The address as written.
        addr: String,
    },
    /// Text that is not an IPv4 address or a bracketed IPv6 address.
    #[error(
        "bad listener spec `{spec}`: `{addr}` is not an IP address (host names are not \
         resolved); e.g. `{EXAMPLE}`, or `{EXAMPLE_V6}` for IPv6"
    )]
    BadAddress {
        /// The spec as given.
        spec: String,
        /// The address as written.
        addr: String,
    },
    /// An IPv6 address written without brackets.
    #[error(
        "bad listener spec `{spec}`: an IPv6 address needs brackets to set it apart from \
         the ports, write `[{addr}]:{ports}`; e.g. `{EXAMPLE_V6}`"
    )]
    MissingBrackets {
        /// The spec as given.
        spec: String,
        /// The address as written.
        addr: String,
        /// The ports as written.
        ports: String,
    },
    /// `[` without a matching `]`.
    #[error(
        "bad listener spec `{spec}`: `[` opens an IPv6 address but no `]` closes it; \
         e.g. `{EXAMPLE_V6}`"
    )]
    UnclosedBracket {
        /// The spec as given.
        spec: String,
    },
    /// Brackets around something that is not an IPv6 address.
    #[error(
        "bad listener spec `{spec}`: `[{addr}]` is not an IPv6 address (brackets are for \
         IPv6 only, write an IPv4 address bare); e.g. `{EXAMPLE_V6}` or `{EXAMPLE}`"
    )]
    BadIpv6 {
        /// The spec as given.
        spec: String,
        /// The text between the brackets.
        addr: String,
    },
    /// Text between `]` and the ports other than one `:`.
    #[error(
        "bad listener spec `{spec}`: expected `:PORTS` right after `]`, found `{found}`; \
         e.g. `{EXAMPLE_V6}`"
    )]
    AfterBracket {
        /// The spec as given.
        spec: String,
        /// The text after `]`.
        found: String,
    },
    /// A port or port range that did not parse.
    #[error("bad listener spec `{spec}`: ports `{ports}`: {reason}; e.g. `{EXAMPLE}`")]
    BadPorts {
        /// The spec as given.
        spec: String,
        /// The port part as written.
        ports: String,
        /// What is wrong with it.
        reason: PortRangeError,
    },
}

impl FromStr for ListenerSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let spec = || s.to_owned();

        let (protocol, rest) = s
            .split_once('@')
            .ok_or_else(|| SpecError::MissingAt { spec: spec() })?;
        if protocol.is_empty() {
            return Err(SpecError::EmptyProtocol { spec: spec() });
        }
        if !protocol
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(SpecError::BadProtocol {
                spec: spec(),
                protocol: protocol.to_owned(),
            });
        }

        let (transport, rest) = match rest.split_once(':') {
            Some(parts) => parts,
            // `echo@tcp` or `echo@tcpx`: a bad transport is the more useful message.
            None if !["tcp", "tls", "udp"].contains(&rest) => (rest, ""),
            None => return Err(SpecError::MissingAddress { spec: spec() }),
        };
        let (transport, tls) = match transport {
            "tcp" => (Transport::Tcp, false),
            "tls" => (Transport::Tcp, true),
            "udp" => (Transport::Udp, false),
            other => {
                return Err(SpecError::UnknownTransport {
                    spec: spec(),
                    transport: other.to_owned(),
                })
            }
        };
        if rest.is_empty() {
            return Err(SpecError::MissingAddress { spec: spec() });
        }

        let (addr, ports) = split_addr_ports(s, rest)?;
        let ports = ports
            .parse::<PortRange>()
            .map_err(|reason| SpecError::BadPorts {
                spec: spec(),
                ports: ports.to_owned(),
                reason,
            })?;

        Ok(ListenerSpec {
            protocol: protocol.to_owned(),
            transport,
            tls,
            addr,
            ports,
        })
    }
}

/// Splits `ADDR:PORTS` (with `ADDR` either IPv4 or `[IPv6]`) of the spec `spec`.
fn split_addr_ports<'a>(spec: &str, rest: &'a str) -> Result<(IpAddr, &'a str), SpecError> {
    if let Some(bracketed) = rest.strip_prefix('[') {
        let (inner, after) =
            bracketed
                .split_once(']')
                .ok_or_else(|| SpecError::UnclosedBracket {
                    spec: spec.to_owned(),
                })?;
        let addr = inner.parse::<Ipv6Addr>().map_err(|_| SpecError::BadIpv6 {
            spec: spec.to_owned(),
            addr: inner.to_owned(),
        })?;
        if after.is_empty() {
            return Err(SpecError::MissingPorts {
                spec: spec.to_owned(),
                addr: format!("[{inner}]"),
            });
        }
        let ports = after
            .strip_prefix(':')
            .ok_or_else(|| SpecError::AfterBracket {
                spec: spec.to_owned(),
                found: after.to_owned(),
            })?;
        return Ok((IpAddr::V6(addr), ports));
    }

    let Some((addr, ports)) = rest.rsplit_once(':') else {
        // One part only: say whether it is the address or the ports that is missing.
        return Err(if rest.parse::<Ipv4Addr>().is_ok() {
            SpecError::MissingPorts {
                spec: spec.to_owned(),
                addr: rest.to_owned(),
            }
        } else if rest.parse::<PortRange>().is_ok() {
            SpecError::MissingAddress {
                spec: spec.to_owned(),
            }
        } else {
            SpecError::BadAddress {
                spec: spec.to_owned(),
                addr: rest.to_owned(),
            }
        });
    };
    if addr.contains(':') {
        // An unbracketed IPv6 address: `::1:9000` could mean `[::1]:9000` or
        // `[::1:9000]` with the ports missing, so refuse to guess, but suggest
        // the likelier reading.
        return Err(if addr.parse::<Ipv6Addr>().is_ok() {
            SpecError::MissingBrackets {
                spec: spec.to_owned(),
                addr: addr.to_owned(),
                ports: ports.to_owned(),
            }
        } else if rest.parse::<Ipv6Addr>().is_ok() {
            SpecError::MissingBrackets {
                spec: spec.to_owned(),
                addr: rest.to_owned(),
                ports: "PORTS".to_owned(),
            }
        } else {
            SpecError::BadAddress {
                spec: spec.to_owned(),
                addr: addr.to_owned(),
            }
        });
    }
    let addr = addr
        .parse::<Ipv4Addr>()
        .map_err(|_| SpecError::BadAddress {
            spec: spec.to_owned(),
            addr: addr.to_owned(),
        })?;
    Ok((IpAddr::V4(addr), ports))
}

impl fmt::Display for ListenerSpec {
    /// The canonical spec text; parsing it gives back the same spec.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = if self.tls {
            "tls"
        } else {
            self.transport.as_str()
        };
        write!(f, "{}@{transport}:", self.protocol)?;
        match self.addr {
            IpAddr::V4(addr) => write!(f, "{addr}")?,
            IpAddr::V6(addr) => write!(f, "[{addr}]")?,
        }
        write!(f, ":{}", self.ports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ListenerSpec, SpecError> {
        s.parse()
    }

    fn err(s: &str) -> String {
        parse(s).expect_err(s).to_string()
    }

    #[test]
    fn port_range_basics() {
        let r = PortRange::new(9000, 9063).unwrap();
        assert_eq!(r.len(), 64);
        assert!(!r.is_empty());
        assert!(r.contains(9000) && r.contains(9063));
        assert!(!r.contains(8999) && !r.contains(9064));
        assert_eq!(r.iter().count(), 64);
        assert_eq!(r.iter().next(), Some(9000));
        assert_eq!(r.into_iter().last(), Some(9063));
        assert_eq!(r.to_string(), "9000-9063");
        assert_eq!(PortRange::single(9000).to_string(), "9000");
        assert_eq!(PortRange::single(9000).len(), 1);
        let full = PortRange::new(1, 65535).unwrap();
        assert_eq!(full.len(), 65535);
        assert_eq!(full.iter().count(), 65535);
        let reversed = PortRange { first: 10, last: 9 };
        assert!(reversed.is_empty());
        assert_eq!(reversed.len(), 0);
    }

    #[test]
    fn port_range_overlaps() {
        let a = PortRange::new(9000, 9010).unwrap();
        assert!(a.overlaps(&PortRange::new(9010, 9020).unwrap()));
        assert!(a.overlaps(&PortRange::single(9005)));
        assert!(a.overlaps(&PortRange::new(8000, 10000).unwrap()));
        assert!(!a.overlaps(&PortRange::new(9011, 9020).unwrap()));
        assert!(!a.overlaps(&PortRange::single(8999)));
    }

    #[test]
    fn port_range_parse() {
        assert_eq!("9000".parse(), Ok(PortRange::single(9000)));
        assert_eq!(
            "1-65535".parse(),
            Ok(PortRange {
                first: 1,
                last: 65535
            })
        );
        assert_eq!("9000-9000".parse(), Ok(PortRange::single(9000)));
        assert_eq!("".parse::<PortRange>(), Err(PortRangeError::Empty));
        assert_eq!("9000-".parse::<PortRange>(), Err(PortRangeError::Empty));
        assert_eq!("-9000".parse::<PortRange>(), Err(PortRangeError::Empty));
        assert_eq!("0".parse::<PortRange>(), Err(PortRangeError::Zero));
        assert_eq!("0-10".parse::<PortRange>(), Err(PortRangeError::Zero));
        assert_eq!(
            "65536".parse::<PortRange>(),
            Err(PortRangeError::NotANumber("65536".into()))
        );
        assert_eq!(
            "+80".parse::<PortRange>(),
            Err(PortRangeError::NotANumber("+80".into()))
        );
        assert_eq!(
            "1-2-3".parse::<PortRange>(),
            Err(PortRangeError::NotANumber("2-3".into()))
        );
        assert_eq!(
            "9063-9000".parse::<PortRange>(),
            Err(PortRangeError::Reversed {
                first: 9063,
                last: 9000
            })
        );
        assert_eq!(
            PortRangeError::Reversed {
                first: 9063,
                last: 9000
            }
            .to_string(),
            "range `9063-9000` is reversed: write `9000-9063`"
        );
    }

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(
            parse("sockperf@udp:127.0.0.1:11111-11114"),
            Ok(ListenerSpec {
                protocol: "sockperf".into(),
                transport: Transport::Udp,
                tls: false,
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                ports: PortRange {
                    first: 11111,
                    last: 11114
                },
            })
        );
        assert_eq!(
            parse("echo@tcp:127.0.0.1:9000"),
            Ok(ListenerSpec {
                protocol: "echo".into(),
                transport: Transport::Tcp,
                tls: false,
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                ports: PortRange::single(9000),
            })
        );
        assert_eq!(
            parse("echo@tls:127.0.0.1:9000-9063"),
            Ok(ListenerSpec {
                protocol: "echo".into(),
                transport: Transport::Tcp,
                tls: true,
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                ports: PortRange {
                    first: 9000,
                    last: 9063
                },
            })
        );
        assert_eq!(
            parse("echo@tcp:[::1]:9000-9003"),
            Ok(ListenerSpec {
                protocol: "echo".into(),
                transport: Transport::Tcp,
                tls: false,
                addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                ports: PortRange {
                    first: 9000,
                    last: 9003
                },
            })
        );
        let any = parse("my_proto-2@udp:0.0.0.0:1").unwrap();
        assert_eq!(any.protocol, "my_proto-2");
        assert_eq!(any.addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(any.ports, PortRange::single(1));
        let v6any = parse("echo@udp:[::]:65535").unwrap();
        assert_eq!(v6any.addr, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "sockperf@udp:127.0.0.1:11111-11114",
            "echo@tcp:127.0.0.1:9000",
            "echo@tls:127.0.0.1:9000-9063",
            "echo@tcp:[::1]:9000-9003",
            "echo@udp:[::]:1-65535",
            "echo@tcp:[fe80::1:2]:80",
            "echo@tcp:[::ffff:10.0.0.1]:80",
            "a_b-c9@udp:10.1.2.3:5",
        ] {
            let spec = parse(s).unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(parse(&spec.to_string()), Ok(spec));
        }
        // Non-canonical input prints in canonical form.
        assert_eq!(
            parse("echo@tcp:[0:0::1]:9000-9000").unwrap().to_string(),
            "echo@tcp:[::1]:9000"
        );
    }

    #[test]
    fn missing_at() {
        assert_eq!(
            err("echo:tcp:127.0.0.1:9000"),
            "bad listener spec `echo:tcp:127.0.0.1:9000`: missing `@` after the protocol name; \
             expected PROTOCOL@TRANSPORT:ADDR:PORTS, e.g. `echo@tcp:127.0.0.1:9000-9063`"
        );
        assert!(matches!(parse(""), Err(SpecError::MissingAt { .. })));
    }

    #[test]
    fn bad_protocol() {
        assert_eq!(
            err("@tcp:127.0.0.1:9000"),
            "bad listener spec `@tcp:127.0.0.1:9000`: empty protocol name before `@`; \
             expected PROTOCOL@TRANSPORT:ADDR:PORTS, e.g. `echo@tcp:127.0.0.1:9000-9063`"
        );
        assert_eq!(
            err("Echo@tcp:127.0.0.1:9000"),
            "bad listener spec `Echo@tcp:127.0.0.1:9000`: protocol name `Echo` may only \
             contain a-z, 0-9, `_` and `-`; e.g. `echo@tcp:127.0.0.1:9000-9063`"
        );
        assert_eq!(
            parse(" echo@tcp:127.0.0.1:9000"),
            Err(SpecError::BadProtocol {
                spec: " echo@tcp:127.0.0.1:9000".into(),
                protocol: " echo".into()
            })
        );
    }

    #[test]
    fn unknown_transport() {
        assert_eq!(
            err("echo@sctp:127.0.0.1:9000"),
            "bad listener spec `echo@sctp:127.0.0.1:9000`: unknown transport `sctp`, \
             use `tcp`, `tls` or `udp`; e.g. `echo@tcp:127.0.0.1:9000-9063`"
        );
        assert_eq!(
            parse("echo@TCP:127.0.0.1:9000"),
            Err(SpecError::UnknownTransport {
                spec: "echo@TCP:127.0.0.1:9000".into(),
                transport: "TCP".into()
            })
        );
        assert_eq!(
            parse("echo@127.0.0.1"),
            Err(SpecError::UnknownTransport {
                spec: "echo@127.0.0.1".into(),
                transport: "127.0.0.1".into()
            })
        );
        assert_eq!(
            parse("echo@:127.0.0.1:9000"),
            Err(SpecError::UnknownTransport {
                spec: "echo@:127.0.0.1:9000".into(),
                transport: "".into()
            })
        );
    }

    #[test]
    fn missing_address_or_ports() {
        assert_eq!(
            err("echo@tcp"),
            "bad listener spec `echo@tcp`: missing `:ADDR:PORTS` after the transport; \
             e.g. `echo@tcp:127.0.0.1:9000-9063`"
        );
        assert_eq!(
            parse("echo@udp:"),
            Err(SpecError::MissingAddress {
                spec: "echo@udp:".into()
            })
        );
        assert_eq!(
            parse("echo@tcp:9000-9063"),
            Err(SpecError::MissingAddress {
                spec: "echo@tcp:9000-9063".into()
            })
        );
        assert_eq!(
            err("echo@tcp:127.0.0.1"),
            "bad listener spec `echo@tcp:127.0.0.1`: missing `:PORTS` after the address \
             `127.0.0.1`; e.g. `echo@tcp:127.0.0.1:9000-9063`"
        );
        assert_eq!(
            parse("echo@tcp:[::1]"),
            Err(SpecError::MissingPorts {
                spec: "echo@tcp:[::1]".into(),
                addr: "[::1]".into()
            })
        );
    }

    #[test]
    fn bad_address() {
        assert_eq!(
            err("echo@tcp:localhost:9000"),
            "bad listener spec `echo@tcp:localhost:9000`: `localhost` is not an IP address \
             (host names are not resolved); e.g. `echo@tcp:127.0.0.1:9000-9063`, or \
             `echo@tcp:[::1]:9000-9063` for IPv6"
        );
        assert_eq!(
            parse("echo@tcp:127.0.0.256:9000"),
            Err(SpecError::BadAddress {
                spec: "echo@tcp:127.0.0.256:9000".into(),
                addr: "127.0.0.256".into()
            })
        );
        assert_eq!(
            parse("echo@tcp::9000"),
            Err(SpecError::BadAddress {
                spec: "echo@tcp::9000".into(),
                addr: "".into()
            })
        );
        assert_eq!(
            parse("echo@tcp:garbage"),
            Err(SpecError::BadAddress {
                spec: "echo@tcp:garbage".into(),
                addr: "garbage".into()
            })
        );
        assert_eq!(
            parse("echo@tcp:1:2:3:zz:9000"),
            Err(SpecError::BadAddress {
                spec: "echo@tcp:1:2:3:zz:9000".into(),
                addr: "1:2:3:zz".into()
            })
        );
    }

    #[test]
    fn ipv6_needs_brackets() {
        assert_eq!(
            err("echo@tcp:fe80::1:9000"),
            "bad listener spec `echo@tcp:fe80::1:9000`: an IPv6 address needs brackets to \
             set it apart from the ports, write `[fe80::1]:9000`; \
             e.g. `echo@tcp:[::1]:9000-9063`"
        );
        assert_eq!(
            parse("echo@tcp:::1"),
            Err(SpecError::MissingBrackets {
                spec: "echo@tcp:::1".into(),
                addr: "::1".into(),
                ports: "PORTS".into()
            })
        );
        assert_eq!(
            parse("echo@tcp:2001:db8::1:9000-9003"),
            Err(SpecError::MissingBrackets {
                spec: "echo@tcp:2001:db8::1:9000-9003".into(),
                addr: "2001:db8::1".into(),
                ports: "9000-9003".into()
            })
        );
        assert_eq!(
            err("echo@tcp:2001:db8::1:9000-9003"),
            "bad listener spec `echo@tcp:2001:db8::1:9000-9003`: an IPv6 address needs \
             brackets to set it apart from the ports, write `[2001:db8::1]:9000-9003`; \
             e.g. `echo@tcp:[::1]:9000-9063`"
        );
        assert_eq!(
            err("echo@tcp:[::1:9000"),
            "bad listener spec `echo@tcp:[::1:9000`: `[` opens an IPv6 address but no `]` \
             closes it; e.g. `echo@tcp:[::1]:9000-9063`"
        );
        assert_eq!(
            err("echo@tcp:[127.0.0.1]:9000"),
            "bad listener spec `echo@tcp:[127.0.0.1]:9000`: `[127.0.0.1]` is not an IPv6 \
             address (brackets are for IPv6 only, write an IPv4 address bare); \
             e.g. `echo@tcp:[::1]:9000-9063` or `echo@tcp:127.0.0.1:9000-9063`"
        );
        assert_eq!(
            err("echo@tcp:[::1]9000"),
            "bad listener spec `echo@tcp:[::1]9000`: expected `:PORTS` right after `]`, \
             found `9000`; e.g. `echo@tcp:[::1]:9000-9063`"
        );
        assert_eq!(
            parse("echo@tcp:[fe80::1%eth0]:9000"),
            Err(SpecError::BadIpv6 {
                spec: "echo@tcp:[fe80::1%eth0]:9000".into(),
                addr: "fe80::1%eth0".into()
            })
        );
    }

    #[test]
    fn bad_ports() {
        assert_eq!(
            err("echo@tcp:127.0.0.1:"),
            "bad listener spec `echo@tcp:127.0.0.1:`: ports ``: empty port: write a port such \
             as `9000` or a range such as `9000-9063`; e.g. `echo@tcp:127.0.0.1:9000-9063`"
        );
        assert_eq!(
            err("echo@tcp:127.0.0.1:0"),
            "bad listener spec `echo@tcp:127.0.0.1:0`: ports `0`: port 0 is not allowed \
             (it means \"any free port\"): use 1 to 65535; e.g. `echo@tcp:127.0.0.1:9000-9063`"
        );
        assert_eq!(
            err("echo@tcp:127.0.0.1:9063-9000"),
            "bad listener spec `echo@tcp:127.0.0.1:9063-9000`: ports `9063-9000`: range \
             `9063-9000` is reversed: write `9000-9063`; e.g. `echo@tcp:127.0.0.1:9000-9063`"
        );
        assert_eq!(
            err("echo@tcp:127.0.0.1:70000"),
            "bad listener spec `echo@tcp:127.0.0.1:70000`: ports `70000`: `70000` is not a \
             port number: ports are 1 to 65535; e.g. `echo@tcp:127.0.0.1:9000-9063`"
        );
        assert_eq!(
            parse("echo@tcp:127.0.0.1:9000-"),
            Err(SpecError::BadPorts {
                spec: "echo@tcp:127.0.0.1:9000-".into(),
                ports: "9000-".into(),
                reason: PortRangeError::Empty
            })
        );
        assert_eq!(
            parse("echo@tcp:[::1]:http"),
            Err(SpecError::BadPorts {
                spec: "echo@tcp:[::1]:http".into(),
                ports: "http".into(),
                reason: PortRangeError::NotANumber("http".into())
            })
        );
        assert_eq!(
            parse("echo@tcp:127.0.0.1:9000 "),
            Err(SpecError::BadPorts {
                spec: "echo@tcp:127.0.0.1:9000 ".into(),
                ports: "9000 ".into(),
                reason: PortRangeError::NotANumber("9000 ".into())
            })
        );
    }
}
