//! Identity allowlist patterns (`engine/src/tls/identity.rs`,
//! `--tls-allow-identity`) against a model parser and matcher written from
//! the documentation (README, `--tls-allow-identity`):
//!
//! - `dns:NAME` matches a DNS SAN equal to NAME, ignoring ASCII case;
//!   `dns:*.DOMAIN` every DNS SAN that is a name under DOMAIN. NAME and
//!   DOMAIN are ASCII, not empty, without `*`.
//! - anything else must be a URI, `SCHEME://REST` with both parts
//!   non-empty; it matches a URI SAN equal to it, or with a trailing `*`
//!   every URI SAN that starts with what comes before the `*`. No other `*`.

use ringport_engine::tls::{CertIdentity, IdentityAllowlist, IdentityPattern};

use crate::Input;

/// A pattern as the model reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Model {
    /// A URI, exact or by prefix.
    Uri(String, bool),
    /// A DNS name (lower case), exact or every name under it.
    Dns(String, bool),
}

fn model_parse(s: &str) -> Option<Model> {
    if let Some(name) = s.strip_prefix("dns:") {
        let (domain, under) = match name.strip_prefix("*.") {
            Some(domain) => (domain, true),
            None => (name, false),
        };
        if domain.is_empty() || domain.contains('*') || !domain.is_ascii() {
            return None;
        }
        return Some(Model::Dns(domain.to_ascii_lowercase(), under));
    }
    let at = s.find("://")?;
    if at == 0 || at + 3 == s.len() {
        return None;
    }
    let (uri, prefix) = match s.strip_suffix('*') {
        Some(u) => (u, true),
        None => (s, false),
    };
    if uri.contains('*') {
        return None;
    }
    Some(Model::Uri(uri.to_owned(), prefix))
}

fn model_matches(m: &Model, dns: &[String], uris: &[String]) -> bool {
    match m {
        Model::Uri(u, false) => uris.iter().any(|x| x == u),
        Model::Uri(u, true) => uris
            .iter()
            .any(|x| x.len() >= u.len() && x.as_bytes()[..u.len()] == *u.as_bytes()),
        Model::Dns(d, false) => dns.iter().any(|x| x.eq_ignore_ascii_case(d)),
        Model::Dns(domain, true) => dns.iter().any(|x| {
            // A name under `domain`: one or more labels, a dot, the domain.
            let x = x.to_ascii_lowercase();
            x.len() > domain.len() + 1
                && x.ends_with(domain.as_str())
                && x.as_bytes()[x.len() - domain.len() - 1] == b'.'
        }),
    }
}

/// The model's reading of a parsed pattern, to compare with the engine's.
fn model_of(p: &IdentityPattern) -> Model {
    match p {
        IdentityPattern::Uri { value, prefix } => Model::Uri(value.clone(), *prefix),
        IdentityPattern::Dns { value, subdomains } => match subdomains {
            // The engine keeps the domain with its leading dot.
            true => Model::Dns(value.strip_prefix('.').unwrap_or(value).to_owned(), true),
            false => Model::Dns(value.clone(), false),
        },
    }
}

fn identity(dns: Vec<String>, uris: Vec<String>) -> CertIdentity {
    CertIdentity {
        subject: String::new(),
        dns,
        uris,
        ips: Vec::new(),
        fingerprint: [0; 32],
        not_before: 0,
        not_after: 0,
    }
}

/// Input: `[n, pattern chunk × n, then SAN chunks]`: each chunk is a length
/// byte and text (UTF-8, lossy); a SAN chunk whose first byte is odd is a
/// DNS name (the rest of it), else a URI. The patterns' texts are also
/// derived from the SANs (a SAN as an exact pattern, a prefix of it with
/// `*`), so that matches are common.
///
/// Checks: a pattern parses exactly when the model says, to what it says;
/// it prints back to a text that parses to the same pattern (and prints the
/// same); every error quotes the pattern and shows one that parses; whether
/// a certificate with those SANs matches agrees with the model, pattern by
/// pattern and as an allowlist.
///
/// # Panics
///
/// When a check fails.
pub fn identity_pattern(data: &[u8]) {
    let mut input = Input::new(data);
    let n = usize::from(input.u8() % 8);
    let mut texts: Vec<String> = (0..n)
        .map(|_| String::from_utf8_lossy(input.chunk()).into_owned())
        .collect();
    let (mut dns, mut uris) = (Vec::new(), Vec::new());
    while !input.is_empty() {
        let chunk = input.chunk();
        let Some((&kind, text)) = chunk.split_first() else {
            continue;
        };
        let text = String::from_utf8_lossy(text).into_owned();
        if kind & 1 == 1 {
            texts.push(format!("dns:{text}"));
            if let Some(dot) = text.find('.') {
                texts.push(format!("dns:*{}", &text[dot..]));
            }
            dns.push(text);
        } else {
            texts.push(text.clone());
            let cut = usize::from(kind) % (text.len() + 1);
            if text.is_char_boundary(cut) {
                texts.push(format!("{}*", &text[..cut]));
            }
            uris.push(text);
        }
    }

    let cert = identity(dns.clone(), uris.clone());
    let mut patterns = Vec::new();
    for text in &texts {
        let parsed = text.parse::<IdentityPattern>();
        let model = model_parse(text);
        match parsed {
            Err(e) => {
                assert_eq!(model, None, "`{text}` refused: {e}");
                assert_eq!(e.pattern, *text);
                let msg = e.to_string();
                assert!(msg.contains(&format!("`{text}`")), "{msg}");
                assert!(msg.contains("spiffe://prod.example/sensor/*"), "{msg}");
            }
            Ok(p) => {
                assert_eq!(Some(model_of(&p)), model, "`{text}` parsed as {p:?}");
                let shown = p.to_string();
                let again: IdentityPattern = shown
                    .parse()
                    .unwrap_or_else(|e| panic!("`{text}` prints as `{shown}`, which fails: {e}"));
                assert_eq!(again, p, "`{text}` -> `{shown}`");
                assert_eq!(again.to_string(), shown);
                let expected = model_matches(model.as_ref().unwrap(), &dns, &uris);
                assert_eq!(p.matches(&cert), expected, "{p:?} on {dns:?} {uris:?}");
                patterns.push((p, expected));
            }
        }
    }
    let allowed = patterns.is_empty() || patterns.iter().any(|(_, m)| *m);
    let list = IdentityAllowlist::new(patterns.into_iter().map(|(p, _)| p).collect());
    assert_eq!(list.allows(&cert), allowed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{corpus, random_inputs};

    #[test]
    fn model_reads_the_documented_forms() {
        assert_eq!(
            model_parse("spiffe://prod.example/sensor/*"),
            Some(Model::Uri("spiffe://prod.example/sensor/".into(), true))
        );
        assert_eq!(
            model_parse("dns:*.Prod.Example"),
            Some(Model::Dns("prod.example".into(), true))
        );
        for bad in [
            "sensor", "dns:", "dns:*", "dns:*.", "dns:a*", "://x", "a://", "a://*/b",
        ] {
            assert_eq!(model_parse(bad), None, "{bad}");
        }
        let under = Model::Dns("prod.example".into(), true);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(model_matches(&under, &names(&["A.prod.example"]), &[]));
        assert!(!model_matches(&under, &names(&["prod.example"]), &[]));
        assert!(!model_matches(&under, &names(&["aprod.example"]), &[]));
    }

    #[test]
    fn harness_on_fixed_corpus_and_random_inputs() {
        identity_pattern(&[]);
        let mut input = vec![2, 5];
        input.extend_from_slice(b"dns:a");
        input.push(3);
        input.extend_from_slice(b"x:/");
        input.push(10);
        input.extend_from_slice(b"\x01b.a.test");
        identity_pattern(&input);
        for input in corpus("identity_pattern") {
            identity_pattern(&input);
        }
        let alphabet = b"dns:*./spiffe/ABab01";
        for input in random_inputs(23, 3000, 60) {
            // Text from a small alphabet, so that patterns parse often.
            let text: Vec<u8> = input
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if i % 7 == 0 {
                        b % 12
                    } else {
                        alphabet[usize::from(*b) % alphabet.len()]
                    }
                })
                .collect();
            identity_pattern(&text);
        }
    }
}
