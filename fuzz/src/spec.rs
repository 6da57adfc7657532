//! Listener specs (`engine/src/spec.rs`, `--listen`, `listen = [...]`)
//! against a model grammar written from the README's "Listener syntax":
//!
//! ```text
//! SPEC      = PROTOCOL "@" TRANSPORT ":" ADDR ":" PORTS
//! PROTOCOL  = 1*( a-z / 0-9 / "_" / "-" )
//! TRANSPORT = "tcp" / "tls" / "udp"
//! ADDR      = IPv4 / "[" IPv6 "]"            (as std parses them)
//! PORTS     = PORT / PORT "-" PORT           (1..=65535, first <= last)
//! PORT      = 1*DIGIT
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ringport_engine::spec::{ListenerSpec, PortRange};
use ringport_plugin::Transport;

/// What the model reads from a spec.
#[derive(Debug, PartialEq, Eq)]
struct Model {
    protocol: String,
    transport: &'static str,
    addr: IpAddr,
    first: u16,
    last: u16,
}

fn port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Leading zeros are digits like any other: parse them away.
    let digits = s.trim_start_matches('0');
    if digits.len() > 5 {
        return None;
    }
    let n: u32 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    u16::try_from(n).ok()
}

fn model_parse(s: &str) -> Option<Model> {
    let at = s.find('@')?;
    let protocol = &s[..at];
    if protocol.is_empty()
        || !protocol
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return None;
    }
    let rest = &s[at + 1..];
    let transport = ["tcp", "tls", "udp"]
        .into_iter()
        .find(|t| rest.len() > 3 && rest.starts_with(t) && rest.as_bytes()[3] == b':')?;
    let rest = &rest[4..];
    let (addr, ports) = if let Some(v6) = rest.strip_prefix('[') {
        let close = v6.find(']')?;
        let addr = IpAddr::V6(v6[..close].parse::<Ipv6Addr>().ok()?);
        (addr, v6[close + 1..].strip_prefix(':')?)
    } else {
        // An IPv4 address has no `:`, and neither have ports: exactly one.
        let mut parts = rest.split(':');
        let (a, p) = (parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        (IpAddr::V4(a.parse::<Ipv4Addr>().ok()?), p)
    };
    let (first, last) = match ports.find('-') {
        Some(dash) => (port(&ports[..dash])?, port(&ports[dash + 1..])?),
        None => (port(ports)?, port(ports)?),
    };
    if first == 0 || last < first {
        return None;
    }
    Some(Model {
        protocol: protocol.to_owned(),
        transport,
        addr,
        first,
        last,
    })
}

fn model_of(spec: &ListenerSpec) -> Model {
    Model {
        protocol: spec.protocol.clone(),
        transport: match (spec.transport, spec.tls) {
            (Transport::Tcp, false) => "tcp",
            (Transport::Tcp, true) => "tls",
            (Transport::Udp, false) => "udp",
            other => panic!("a spec with transport {other:?}"),
        },
        addr: spec.addr,
        first: spec.ports.first,
        last: spec.ports.last,
    }
}

/// Input: the spec's text (UTF-8, lossy).
///
/// Checks: a spec parses exactly when the model grammar says, to what it
/// says; it prints to a text that parses to the same spec (and prints the
/// same); an error quotes the whole spec and shows one that parses; the
/// port part alone parses as a `PortRange` exactly when the grammar says.
///
/// # Panics
///
/// When a check fails.
pub fn listener_spec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = text.parse::<ListenerSpec>();
    let model = model_parse(&text);
    match &parsed {
        Ok(spec) => {
            assert_eq!(Some(model_of(spec)), model, "`{text}` parsed as {spec:?}");
            let shown = spec.to_string();
            let again: ListenerSpec = shown
                .parse()
                .unwrap_or_else(|e| panic!("`{text}` prints as `{shown}`, which fails: {e}"));
            assert_eq!(&again, spec, "`{text}` -> `{shown}`");
            assert_eq!(again.to_string(), shown);
            assert!(!spec.ports.is_empty() && spec.ports.first > 0);
        }
        Err(e) => {
            assert_eq!(model, None, "`{text}` refused: {e}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("`{text}`")), "{msg}");
            assert!(msg.contains("e.g. `"), "{msg}");
        }
    }
    // The part after the last `:` as a port range.
    let tail = text.rsplit(':').next().unwrap_or_default();
    let range = tail.parse::<PortRange>();
    let model_range = match tail.find('-') {
        Some(dash) => port(&tail[..dash]).zip(port(&tail[dash + 1..])),
        None => port(tail).map(|p| (p, p)),
    }
    .filter(|&(f, l)| f > 0 && f <= l);
    assert_eq!(
        range.as_ref().ok().map(|r| (r.first, r.last)),
        model_range,
        "ports `{tail}`"
    );
    if let Ok(r) = range {
        assert_eq!(r.to_string().parse::<PortRange>(), Ok(r));
        assert_eq!(r.len(), usize::from(r.last - r.first) + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{corpus, random_inputs};

    #[test]
    fn model_reads_the_documented_forms() {
        let m = model_parse("sockperf@udp:127.0.0.1:11111-11114").unwrap();
        assert_eq!((m.transport, m.first, m.last), ("udp", 11111, 11114));
        assert_eq!(
            model_parse("echo@tcp:[::1]:9000").unwrap().addr,
            IpAddr::from(Ipv6Addr::LOCALHOST)
        );
        assert_eq!(model_parse("echo@tls:127.0.0.1:09000").unwrap().first, 9000);
        for bad in [
            "echo@tcp:::1:9000",
            "echo@tcp:127.0.0.1",
            "Echo@tcp:127.0.0.1:1",
            "echo@tcpx:127.0.0.1:1",
            "echo@tcp:127.0.0.1:0",
            "echo@tcp:127.0.0.1:2-1",
            "echo@tcp:127.0.0.1:+1",
            "echo@tcp:[127.0.0.1]:1",
            "echo@tcp:[::1]x:1",
            "echo@tcp:127.0.0.1:65536",
        ] {
            assert_eq!(model_parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn harness_on_fixed_corpus_and_random_inputs() {
        listener_spec(b"");
        listener_spec(b"echo@tcp:[::ffff:1.2.3.4]:1-65535");
        for input in corpus("listener_spec") {
            listener_spec(&input);
        }
        let pieces: [&[u8]; 12] = [
            b"echo",
            b"@",
            b"tcp",
            b"tls",
            b"udp",
            b":",
            b"127.0.0.1",
            b"[::1]",
            b"9000",
            b"-",
            b"0",
            b"[",
        ];
        for input in random_inputs(29, 3000, 12) {
            let text: Vec<u8> = input
                .iter()
                .flat_map(|b| pieces[usize::from(*b) % pieces.len()].iter().copied())
                .collect();
            listener_spec(&text);
            listener_spec(&input);
        }
    }
}
