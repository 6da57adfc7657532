//! The fixed, reversible mapping between MQTT topics (and relay topics) and
//! NATS subjects (docs/protocols/nats.md).
//!
//! A topic's levels (separated by `/`) become a subject's tokens (separated
//! by `.`), under an optional prefix of literal tokens:
//!
//! * the bytes `A`-`Z`, `a`-`z`, `0`-`9`, `-` and `_` are kept as they are;
//! * every other byte of a level (`.`, space, `$`, `~`, `*`, `>`, `+`, `#`,
//!   control characters, each byte of a non-ASCII character) becomes `~`
//!   and its two hex digits, upper case: `sensor.1` → `sensor~2E1`;
//! * an empty level becomes the token `~` alone: `/a//b` → `~.a.~.b`;
//! * in filters, a `+` level becomes `*`, a final `#` level becomes `>`.
//!
//! The escape char is itself escaped and hex digits are always upper case,
//! so every topic has exactly one subject; decoding refuses any other
//! spelling (`~41` for `A`, `~2f`), so every subject has at most one topic.
//! `$`-topics (`$SYS/x` → `~24SYS.x`) never collide with NATS's own
//! `$`-subjects.
//!
//! MQTT's `#` also matches its parent level (`a/#` matches `a`) while NATS's
//! `>` needs at least one more token, so a filter ending in `/#` maps to two
//! subjects ([`SubjectMap::mqtt_filter_to_subjects`]).

use std::fmt;

/// The byte that starts an escape, and alone, an empty level.
pub const ESCAPE: u8 = b'~';

/// Why a topic, filter or subject does not map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// The topic or filter is empty.
    Empty,
    /// An MQTT topic name holds `+` or `#`, or a decoded subject would.
    Wildcard,
    /// A filter's `+` or `#` is not a whole level, or `#` is not last.
    BadWildcard,
    /// `$share/` filters are local to one broker and are not bridged.
    SharedSubscription,
    /// An MQTT topic or decoded level holds U+0000.
    Nul,
    /// The subject is not under the prefix.
    NotUnderPrefix,
    /// A token is not an escaping this mapping writes (a bad escape, a
    /// character that should have been escaped, lower-case hex, an escaped
    /// byte that needs no escaping).
    BadEscape,
    /// A subject token is a wildcard where a topic name is wanted.
    WildcardSubject,
    /// A decoded MQTT topic is not UTF-8.
    NotUtf8,
    /// A decoded relay topic is longer than 255 bytes.
    TooLong,
    /// The prefix is not dot-separated literal tokens of kept bytes.
    BadPrefix,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MapError::Empty => "a topic must be at least one character long",
            MapError::Wildcard => "a topic name must not contain + or #",
            MapError::BadWildcard => "+ and # must be whole levels and # the last one",
            MapError::SharedSubscription => "$share/ filters are not bridged to NATS",
            MapError::Nul => "a topic must not contain U+0000",
            MapError::NotUnderPrefix => "the subject is not under the bridge's prefix",
            MapError::BadEscape => "the subject is not one the topic mapping writes",
            MapError::WildcardSubject => "a wildcard subject is not a topic name",
            MapError::NotUtf8 => "the subject decodes to a topic that is not UTF-8",
            MapError::TooLong => "the subject decodes to a relay topic over 255 bytes",
            MapError::BadPrefix => {
                "a prefix is dot-separated tokens of A-Z, a-z, 0-9, - and _ (e.g. ringport)"
            }
        })
    }
}

impl std::error::Error for MapError {}

/// The subjects one MQTT filter maps to: one, or two for a filter ending in
/// `/#` (its parent and everything below).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSubjects {
    /// The subject that carries the filter's wildcards.
    pub first: String,
    /// The parent subject a trailing `/#` also matches in MQTT.
    pub parent: Option<String>,
}

impl FilterSubjects {
    /// The subjects, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.first.as_str()).chain(self.parent.as_deref())
    }
}

/// Whether a byte is kept as it is in a token.
fn kept(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn encode_level(level: &[u8], out: &mut String) {
    if level.is_empty() {
        out.push(ESCAPE as char);
        return;
    }
    for &b in level {
        if kept(b) {
            out.push(b as char);
        } else {
            out.push(ESCAPE as char);
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

fn hex(d: u8) -> Option<u8> {
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}

fn decode_token(token: &[u8], out: &mut Vec<u8>) -> Result<(), MapError> {
    if token == [ESCAPE] {
        return Ok(());
    }
    if token.is_empty() {
        return Err(MapError::BadEscape);
    }
    let mut i = 0;
    while i < token.len() {
        let b = token[i];
        if kept(b) {
            out.push(b);
            i += 1;
        } else if b == ESCAPE {
            let (Some(hi), Some(lo)) = (
                token.get(i + 1).copied().and_then(hex),
                token.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(MapError::BadEscape);
            };
            let byte = (hi << 4) | lo;
            // A kept byte is never escaped, and `/` separates levels.
            if kept(byte) || byte == b'/' {
                return Err(MapError::BadEscape);
            }
            out.push(byte);
            i += 3;
        } else {
            return Err(MapError::BadEscape);
        }
    }
    Ok(())
}

/// The mapping with its prefix (e.g. `ringport`: `a/b` ↔ `ringport.a.b`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubjectMap {
    prefix: String,
}

impl SubjectMap {
    /// A mapping under `prefix`: empty (no prefix) or dot-separated
    /// non-empty tokens of `A-Z a-z 0-9 - _`.
    pub fn new(prefix: &str) -> Result<SubjectMap, MapError> {
        if !prefix.is_empty()
            && !prefix
                .split('.')
                .all(|t| !t.is_empty() && t.bytes().all(kept))
        {
            return Err(MapError::BadPrefix);
        }
        Ok(SubjectMap {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix (empty for none).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn start(&self) -> String {
        let mut s = String::with_capacity(self.prefix.len() + 16);
        if !self.prefix.is_empty() {
            s.push_str(&self.prefix);
            s.push('.');
        }
        s
    }

    fn levels_to_subject<'a>(&self, levels: impl Iterator<Item = &'a [u8]>) -> String {
        let mut s = self.start();
        for (i, level) in levels.enumerate() {
            if i > 0 {
                s.push('.');
            }
            encode_level(level, &mut s);
        }
        s
    }

    /// The subject of an MQTT topic name.
    pub fn mqtt_topic_to_subject(&self, topic: &str) -> Result<String, MapError> {
        if topic.is_empty() {
            return Err(MapError::Empty);
        }
        if topic.contains(['+', '#']) {
            return Err(MapError::Wildcard);
        }
        if topic.contains('\0') {
            return Err(MapError::Nul);
        }
        Ok(self.levels_to_subject(topic.as_bytes().split(|&b| b == b'/')))
    }

    /// The subject(s) of an MQTT topic filter: `+` → `*`, a final `#` → `>`
    /// (and, after a `/`, the parent subject too: `a/#` → `a.>` and `a`).
    pub fn mqtt_filter_to_subjects(&self, filter: &str) -> Result<FilterSubjects, MapError> {
        if filter.is_empty() {
            return Err(MapError::Empty);
        }
        if filter.starts_with("$share/") {
            return Err(MapError::SharedSubscription);
        }
        if filter.contains('\0') {
            return Err(MapError::Nul);
        }
        let levels: Vec<&str> = filter.split('/').collect();
        let mut s = self.start();
        let mut parent = None;
        for (i, level) in levels.iter().enumerate() {
            let last = i + 1 == levels.len();
            if i > 0 {
                if last && *level == "#" {
                    parent = Some(s.clone());
                }
                s.push('.');
            }
            match *level {
                "+" => s.push('*'),
                "#" if last => s.push('>'),
                l if l.contains(['+', '#']) => return Err(MapError::BadWildcard),
                l => encode_level(l.as_bytes(), &mut s),
            }
        }
        Ok(FilterSubjects { first: s, parent })
    }

    fn subject_levels(&self, subject: &str) -> Result<Vec<Vec<u8>>, MapError> {
        let rest = if self.prefix.is_empty() {
            subject
        } else {
            subject
                .strip_prefix(self.prefix.as_str())
                .and_then(|r| r.strip_prefix('.'))
                .ok_or(MapError::NotUnderPrefix)?
        };
        let mut levels = Vec::new();
        for token in rest.split('.') {
            if token == "*" || token == ">" {
                return Err(MapError::WildcardSubject);
            }
            let mut level = Vec::with_capacity(token.len());
            decode_token(token.as_bytes(), &mut level)?;
            levels.push(level);
        }
        if levels.len() == 1 && levels[0].is_empty() {
            // `~` alone: one empty level, the empty topic, which no topic is.
            return Err(MapError::Empty);
        }
        Ok(levels)
    }

    /// The MQTT topic name of a subject this mapping wrote.
    pub fn subject_to_mqtt_topic(&self, subject: &str) -> Result<String, MapError> {
        let levels = self.subject_levels(subject)?;
        let joined = levels.join(&b'/');
        if joined.contains(&b'+') || joined.contains(&b'#') {
            return Err(MapError::Wildcard);
        }
        if joined.contains(&0) {
            return Err(MapError::Nul);
        }
        String::from_utf8(joined).map_err(|_| MapError::NotUtf8)
    }

    /// The subject of a relay topic (opaque bytes, `/` read as the level
    /// separator; `+` and `#` are plain bytes there, escaped like any other).
    pub fn relay_topic_to_subject(&self, topic: &[u8]) -> Result<String, MapError> {
        if topic.is_empty() {
            return Err(MapError::Empty);
        }
        Ok(self.levels_to_subject(topic.split(|&b| b == b'/')))
    }

    /// The relay topic of a subject this mapping wrote.
    pub fn subject_to_relay_topic(&self, subject: &str) -> Result<Vec<u8>, MapError> {
        let joined = self.subject_levels(subject)?.join(&b'/');
        if joined.len() > 255 {
            return Err(MapError::TooLong);
        }
        Ok(joined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::wire::check_subject;

    fn plain() -> SubjectMap {
        SubjectMap::new("").unwrap()
    }

    #[test]
    fn topics_map_to_exact_subjects() {
        let m = plain();
        let cases = [
            ("a/b/c", "a.b.c"),
            ("sensor.1/temp", "sensor~2E1.temp"),
            ("/a//b", "~.a.~.b"),
            ("/", "~.~"),
            ("a/", "a.~"),
            ("$SYS/broker/load", "~24SYS.broker.load"),
            ("room 1/t", "room~201.t"),
            ("x~y", "x~7Ey"),
            ("a*b>c", "a~2Ab~3Ec"),
            ("é", "~C3~A9"),
            ("Kept-chars_09", "Kept-chars_09"),
        ];
        for (topic, subject) in cases {
            assert_eq!(
                m.mqtt_topic_to_subject(topic).as_deref(),
                Ok(subject),
                "{topic}"
            );
            assert_eq!(
                m.subject_to_mqtt_topic(subject).as_deref(),
                Ok(topic),
                "{subject}"
            );
            assert_eq!(check_subject(subject, false), Ok(()), "{subject}");
        }
    }

    #[test]
    fn the_prefix_comes_first_and_is_required_back() {
        let m = SubjectMap::new("ringport.site-1").unwrap();
        assert_eq!(
            m.mqtt_topic_to_subject("a/b").unwrap(),
            "ringport.site-1.a.b"
        );
        assert_eq!(
            m.subject_to_mqtt_topic("ringport.site-1.a.b").unwrap(),
            "a/b"
        );
        assert_eq!(
            m.subject_to_mqtt_topic("ringport.site-2.a"),
            Err(MapError::NotUnderPrefix)
        );
        assert_eq!(
            m.subject_to_mqtt_topic("ringport.site-1x.a"),
            Err(MapError::NotUnderPrefix)
        );
        assert_eq!(
            m.subject_to_mqtt_topic("ringport.site-1"),
            Err(MapError::NotUnderPrefix)
        );
        for bad in ["a..b", ".a", "a.", "a b", "a.*", "a.>", "a~"] {
            assert_eq!(SubjectMap::new(bad), Err(MapError::BadPrefix), "{bad}");
        }
    }

    #[test]
    fn filters_map_wildcards() {
        let m = SubjectMap::new("p").unwrap();
        let f = m.mqtt_filter_to_subjects("a/+/c").unwrap();
        assert_eq!((f.first.as_str(), f.parent.as_deref()), ("p.a.*.c", None));
        let f = m.mqtt_filter_to_subjects("a/b/#").unwrap();
        assert_eq!(f.iter().collect::<Vec<_>>(), ["p.a.b.>", "p.a.b"]);
        let f = m.mqtt_filter_to_subjects("#").unwrap();
        assert_eq!(f.iter().collect::<Vec<_>>(), ["p.>"]);
        let f = m.mqtt_filter_to_subjects("+/#").unwrap();
        assert_eq!(f.iter().collect::<Vec<_>>(), ["p.*.>", "p.*"]);
        let f = m.mqtt_filter_to_subjects("/+/x.y").unwrap();
        assert_eq!(f.iter().collect::<Vec<_>>(), ["p.~.*.x~2Ey"]);
        for bad in ["a/#/b", "a+/b", "a/b#", "#/a"] {
            assert_eq!(
                m.mqtt_filter_to_subjects(bad),
                Err(MapError::BadWildcard),
                "{bad}"
            );
        }
        assert_eq!(
            m.mqtt_filter_to_subjects("$share/g/a"),
            Err(MapError::SharedSubscription)
        );
        assert_eq!(m.mqtt_filter_to_subjects(""), Err(MapError::Empty));
        for f in ["a/+/c", "a/b/#", "#", "+/#"] {
            for s in m.mqtt_filter_to_subjects(f).unwrap().iter() {
                assert_eq!(check_subject(s, true), Ok(()), "{s}");
            }
        }
    }

    #[test]
    fn what_cannot_map_is_refused() {
        let m = plain();
        assert_eq!(m.mqtt_topic_to_subject(""), Err(MapError::Empty));
        assert_eq!(m.mqtt_topic_to_subject("a/+"), Err(MapError::Wildcard));
        assert_eq!(m.mqtt_topic_to_subject("a#"), Err(MapError::Wildcard));
        assert_eq!(m.mqtt_topic_to_subject("a\0"), Err(MapError::Nul));
        for (subject, error) in [
            ("a.*", MapError::WildcardSubject),
            ("a.>", MapError::WildcardSubject),
            ("a..b", MapError::BadEscape),
            ("a~41", MapError::BadEscape),
            ("a~2e", MapError::BadEscape),
            ("a~2", MapError::BadEscape),
            ("a~", MapError::BadEscape),
            ("~~", MapError::BadEscape),
            ("a$b", MapError::BadEscape),
            ("a~2B", MapError::Wildcard),
            ("a~23", MapError::Wildcard),
            ("a~00", MapError::Nul),
            ("a~FF", MapError::NotUtf8),
            ("a~2Fb", MapError::BadEscape),
            ("~", MapError::Empty),
        ] {
            assert_eq!(m.subject_to_mqtt_topic(subject), Err(error), "{subject}");
        }
    }

    #[test]
    fn relay_topics_are_opaque_bytes() {
        let m = SubjectMap::new("relay").unwrap();
        let cases: [(&[u8], &str); 4] = [
            (b"t/1", "relay.t.1"),
            (b"a+b/#", "relay.a~2Bb.~23"),
            (b"\xff\x00", "relay.~FF~00"),
            (b"//", "relay.~.~.~"),
        ];
        for (topic, subject) in cases {
            assert_eq!(m.relay_topic_to_subject(topic).as_deref(), Ok(subject));
            assert_eq!(m.subject_to_relay_topic(subject).as_deref(), Ok(topic));
        }
        assert_eq!(m.relay_topic_to_subject(b""), Err(MapError::Empty));
        let long = "relay.".to_owned() + &"a".repeat(256);
        assert_eq!(m.subject_to_relay_topic(&long), Err(MapError::TooLong));
    }

    /// Many generated topics, from an alphabet rich in what needs escaping:
    /// every one maps to a valid literal subject and back to itself, and no
    /// two topics share a subject.
    #[test]
    fn generated_topics_round_trip() {
        let alphabet: Vec<char> = "ab/Z09-_. $~*>\t\u{1}éß€😀/".chars().collect();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let m = SubjectMap::new("r").unwrap();
        let mut seen = std::collections::HashMap::new();
        for _ in 0..50_000 {
            let len = 1 + (next() % 12) as usize;
            let topic: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let subject = m.mqtt_topic_to_subject(&topic).unwrap();
            assert_eq!(
                check_subject(&subject, false),
                Ok(()),
                "{topic:?} -> {subject}"
            );
            assert_eq!(
                m.subject_to_mqtt_topic(&subject).as_deref(),
                Ok(topic.as_str())
            );
            assert_eq!(
                m.subject_to_relay_topic(&subject).ok().as_deref(),
                (topic.len() <= 255).then_some(topic.as_bytes())
            );
            if let Some(other) = seen.insert(subject.clone(), topic.clone()) {
                assert_eq!(other, topic, "two topics share {subject}");
            }
        }
        assert!(seen.len() > 40_000, "the generator repeats too much");
    }
}
