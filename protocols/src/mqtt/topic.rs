//! Topic names and topic filters (MQTT 3.1.1 and 5.0, section 4.7; shared
//! subscriptions: MQTT 5.0, section 4.8.2).
//!
//! A topic name is what a `PUBLISH` carries; a topic filter is what a
//! `SUBSCRIBE` asks for and may hold the wildcards `+` (exactly one level)
//! and `#` (any number of levels, including none, at the end). Levels are
//! separated by `/` and may be empty: `"/"` has two empty levels.
//!
//! The rules checked here are the MUSTs of both specifications:
//!
//! * names and filters are at least one byte and at most
//!   [`MAX_TOPIC_LEN`] bytes of UTF-8 (a `&str` is UTF-8 already);
//! * neither holds U+0000;
//! * a topic name holds no wildcard;
//! * in a filter, `+` is a whole level and `#` is a whole level and the last
//!   one;
//! * a filter starting with `$share/` is a shared subscription,
//!   `$share/{ShareName}/{filter}`: a non-empty ShareName without `+` or `#`
//!   (and, being a level, without `/`), then a non-empty valid filter.
//!
//! Topics whose first character is `$` (such as `$SYS/...`) are not matched
//! by a filter whose first level is a wildcard ([`matches()`]).
//!
//! [`matches()`] is the plain, obviously-correct rule; the subscription table in
//! [`super::trie`] is tested against it.

use std::fmt;

/// The longest topic name or filter, in bytes: a UTF-8 string field of MQTT
/// carries a 16-bit length.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The prefix that makes a filter a shared subscription (MQTT 5.0, 4.8.2).
pub const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or filter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicError {
    /// The name or filter is empty: both must be at least one character long.
    Empty,
    /// Longer than [`MAX_TOPIC_LEN`] bytes.
    TooLong,
    /// A topic name holds `+` or `#`: wildcards belong in filters only.
    Wildcard,
    /// A filter uses a wildcard wrongly: `+` must be a whole level, `#` a
    /// whole level and the last one.
    BadWildcard,
    /// The name or filter holds the null character U+0000.
    Nul,
    /// A `$share/` filter lacks a ShareName or a filter, or its ShareName
    /// holds a wildcard.
    BadShare,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicError::Empty => "topic names and filters must be at least one character long",
            TopicError::TooLong => "topic names and filters must be at most 65535 bytes",
            TopicError::Wildcard => "a topic name must not contain the wildcards + or #",
            TopicError::BadWildcard => {
                "in a topic filter, + must occupy a whole level and # a whole level that is the last"
            }
            TopicError::Nul => "topic names and filters must not contain U+0000",
            TopicError::BadShare => {
                "a shared subscription is $share/<name>/<filter> with a non-empty name \
                 without + or # and a non-empty filter"
            }
        })
    }
}

impl std::error::Error for TopicError {}

/// The checks common to names and filters: length and U+0000.
fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if s.as_bytes().contains(&0) {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// Checks a topic name, as a `PUBLISH` (or a will) carries it: non-empty, at
/// most [`MAX_TOPIC_LEN`] bytes, no U+0000, no wildcard.
///
/// Names starting with `$` are accepted: whether a client may publish to
/// them is the broker's policy, not syntax.
pub fn valid_topic_name(t: &str) -> Result<(), TopicError> {
    check_common(t)?;
    if t.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::Wildcard);
    }
    Ok(())
}

/// Checks a plain topic filter: non-empty, at most [`MAX_TOPIC_LEN`] bytes,
/// no U+0000, `+` only as a whole level, `#` only as the whole last level.
///
/// This is the syntax of the filter itself: `"$share/g/a"` passes as a plain
/// filter. What a `SUBSCRIBE` asks for is checked by [`parse_filter`], which
/// also knows shared subscriptions.
pub fn valid_filter(f: &str) -> Result<(), TopicError> {
    check_common(f)?;
    let mut levels = f.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "+" => {}
            "#" if levels.peek().is_none() => {}
            _ if level.bytes().any(|b| b == b'+' || b == b'#') => {
                return Err(TopicError::BadWildcard)
            }
            _ => {}
        }
    }
    Ok(())
}

/// A checked topic filter of a `SUBSCRIBE`, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter<'a> {
    /// An ordinary subscription.
    Plain(&'a str),
    /// A shared subscription `$share/{group}/{filter}`: each message matching
    /// `filter` goes to one member of `group` only.
    Shared {
        /// The ShareName: non-empty, without `/`, `+` or `#`.
        group: &'a str,
        /// The filter after the ShareName.
        filter: &'a str,
    },
}

impl<'a> Filter<'a> {
    /// The filter that topics are matched against (without any `$share/g/`).
    pub fn filter(&self) -> &'a str {
        match *self {
            Filter::Plain(f) | Filter::Shared { filter: f, .. } => f,
        }
    }

    /// The ShareName of a shared subscription, `None` for a plain one.
    pub fn group(&self) -> Option<&'a str> {
        match *self {
            Filter::Plain(_) => None,
            Filter::Shared { group, .. } => Some(group),
        }
    }
}

/// Checks a `SUBSCRIBE` (or `UNSUBSCRIBE`) topic filter and splits a shared
/// one: `"$share/g/a/b"` is `Shared { group: "g", filter: "a/b" }`.
///
/// A filter starting with `$share/` must go on with a non-empty ShareName
/// without `+` or `#`, a `/` and a non-empty valid filter, or it is
/// [`TopicError::BadShare`] (errors of the inner filter itself are reported as
/// such, e.g. [`TopicError::BadWildcard`]). `"$share"` alone is a plain
/// filter.
pub fn parse_filter(f: &str) -> Result<Filter<'_>, TopicError> {
    check_common(f)?;
    let Some(rest) = f.strip_prefix(SHARE_PREFIX) else {
        valid_filter(f)?;
        return Ok(Filter::Plain(f));
    };
    let Some((group, filter)) = rest.split_once('/') else {
        return Err(TopicError::BadShare);
    };
    if group.is_empty() || filter.is_empty() || group.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::BadShare);
    }
    valid_filter(filter)?;
    Ok(Filter::Shared { group, filter })
}

/// Whether the plain `filter` matches the topic name `topic`: the reference
/// rule, level by level, that the subscription table must agree with.
///
/// `+` matches exactly one level (possibly empty), `#` matches the rest,
/// including nothing (`"sport/#"` matches `"sport"`), and a topic starting
/// with `$` is not matched by a filter whose first level is a wildcard.
/// Both arguments are assumed valid ([`valid_filter`], [`valid_topic_name`]);
/// anything else gives some answer, never a panic. A `$share/` prefix is not
/// understood here: pass [`Filter::filter`].
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The number of levels of a topic name or filter: one more than its `/`
/// count (`"a"` has 1, `"/"` has 2, `"a/b/#"` has 3).
pub fn levels(s: &str) -> usize {
    s.bytes().filter(|&b| b == b'/').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert_eq!(valid_topic_name("sport/tennis/player1"), Ok(()));
        assert_eq!(valid_topic_name("/"), Ok(()));
        assert_eq!(valid_topic_name("/finance"), Ok(()));
        assert_eq!(valid_topic_name("$SYS/broker/load"), Ok(()));
        assert_eq!(valid_topic_name("with space/ü/日本"), Ok(()));
        assert_eq!(valid_topic_name(""), Err(TopicError::Empty));
        assert_eq!(valid_topic_name("a/+"), Err(TopicError::Wildcard));
        assert_eq!(valid_topic_name("a/#"), Err(TopicError::Wildcard));
        assert_eq!(valid_topic_name("sport+"), Err(TopicError::Wildcard));
        assert_eq!(valid_topic_name("a\0b"), Err(TopicError::Nul));
        assert_eq!(valid_topic_name("\0+"), Err(TopicError::Nul));
        let max = "a".repeat(MAX_TOPIC_LEN);
        assert_eq!(valid_topic_name(&max), Ok(()));
        assert_eq!(
            valid_topic_name(&"a".repeat(MAX_TOPIC_LEN + 1)),
            Err(TopicError::TooLong)
        );
        // The limit is in bytes: 21,845 three-byte characters are 65,535 bytes.
        assert_eq!(valid_topic_name(&"日".repeat(21_845)), Ok(()));
        assert_eq!(
            valid_topic_name(&"日".repeat(21_846)),
            Err(TopicError::TooLong)
        );
    }

    #[test]
    fn filters_from_the_spec() {
        // 4.7.1.2
        assert_eq!(valid_filter("sport/tennis/#"), Ok(()));
        assert_eq!(valid_filter("#"), Ok(()));
        assert_eq!(valid_filter("sport/tennis#"), Err(TopicError::BadWildcard));
        assert_eq!(
            valid_filter("sport/tennis/#/ranking"),
            Err(TopicError::BadWildcard)
        );
        // 4.7.1.3
        assert_eq!(valid_filter("+"), Ok(()));
        assert_eq!(valid_filter("+/tennis/#"), Ok(()));
        assert_eq!(valid_filter("sport+"), Err(TopicError::BadWildcard));
        assert_eq!(valid_filter("sport/+/player1"), Ok(()));
        assert_eq!(valid_filter("/+"), Ok(()));
        assert_eq!(valid_filter("+/+"), Ok(()));
        // More edges.
        assert_eq!(valid_filter("/"), Ok(()));
        assert_eq!(valid_filter("//#"), Ok(()));
        assert_eq!(valid_filter("##"), Err(TopicError::BadWildcard));
        assert_eq!(valid_filter("++"), Err(TopicError::BadWildcard));
        assert_eq!(valid_filter("#/"), Err(TopicError::BadWildcard));
        assert_eq!(valid_filter("a/#/#"), Err(TopicError::BadWildcard));
        assert_eq!(valid_filter("+a/b"), Err(TopicError::BadWildcard));
        assert_eq!(valid_filter(""), Err(TopicError::Empty));
        assert_eq!(valid_filter("a/\0/#"), Err(TopicError::Nul));
        assert_eq!(valid_filter(&"+/".repeat(40_000)), Err(TopicError::TooLong));
    }

    #[test]
    fn shared_filters() {
        assert_eq!(
            parse_filter("$share/g/a/b"),
            Ok(Filter::Shared {
                group: "g",
                filter: "a/b"
            })
        );
        assert_eq!(
            parse_filter("$share/consumer1/sport/tennis/+"),
            Ok(Filter::Shared {
                group: "consumer1",
                filter: "sport/tennis/+"
            })
        );
        // 4.8.2: "$share/consumer1//finance" shares the filter "/finance".
        assert_eq!(
            parse_filter("$share/consumer1//finance"),
            Ok(Filter::Shared {
                group: "consumer1",
                filter: "/finance"
            })
        );
        assert_eq!(
            parse_filter("$share/g/#"),
            Ok(Filter::Shared {
                group: "g",
                filter: "#"
            })
        );
        assert_eq!(parse_filter("a/+/#"), Ok(Filter::Plain("a/+/#")));
        assert_eq!(parse_filter("$share"), Ok(Filter::Plain("$share")));
        assert_eq!(
            parse_filter("$shared/g/a"),
            Ok(Filter::Plain("$shared/g/a"))
        );
        assert_eq!(parse_filter("$SYS/#"), Ok(Filter::Plain("$SYS/#")));
        assert_eq!(parse_filter("$share/"), Err(TopicError::BadShare));
        assert_eq!(parse_filter("$share/g"), Err(TopicError::BadShare));
        assert_eq!(parse_filter("$share/g/"), Err(TopicError::BadShare));
        assert_eq!(parse_filter("$share//a"), Err(TopicError::BadShare));
        assert_eq!(parse_filter("$share/+/a"), Err(TopicError::BadShare));
        assert_eq!(parse_filter("$share/g#/a"), Err(TopicError::BadShare));
        assert_eq!(parse_filter("$share/g/a+"), Err(TopicError::BadWildcard));
        assert_eq!(parse_filter("$share/g/#/a"), Err(TopicError::BadWildcard));
        assert_eq!(parse_filter("sport/tennis#"), Err(TopicError::BadWildcard));
        assert_eq!(parse_filter(""), Err(TopicError::Empty));
        assert_eq!(parse_filter("$share/g\0/a"), Err(TopicError::Nul));

        let f = parse_filter("$share/g/a/b").unwrap();
        assert_eq!((f.group(), f.filter()), (Some("g"), "a/b"));
        let f = parse_filter("a/b").unwrap();
        assert_eq!((f.group(), f.filter()), (None, "a/b"));
    }

    #[test]
    fn matching_from_the_spec() {
        // 4.7.1.2: the multi-level wildcard.
        for t in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ] {
            assert!(matches("sport/tennis/player1/#", t), "{t}");
        }
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "sport/tennis"));
        assert!(matches("#", "/"));
        assert!(!matches("sport/tennis/player1/#", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/player1/#", "sport/tennis"));
        // 4.7.1.3: the single-level wildcard.
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+/#", "sport"));
        assert!(matches("+/tennis/#", "sport/tennis"));
        // 4.7.2: topics beginning with $.
        assert!(!matches("#", "$SYS/broker/load"));
        assert!(!matches("+", "$SYS"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS"));
        // A $ further in is an ordinary character.
        assert!(matches("+/$x", "a/$x"));
        assert!(matches("a/+", "a/$x"));
        // 4.7.3: case sensitive, spaces are characters, empty levels count.
        assert!(!matches("ACCOUNTS", "Accounts"));
        assert!(matches("Accounts payable", "Accounts payable"));
        assert!(!matches("/finance", "finance"));
        assert!(!matches("a/b", "a/b/"));
        assert!(!matches("a/b/", "a/b"));
        assert!(matches("a//b", "a//b"));
        assert!(matches("a/+/b", "a//b"));
        assert!(matches("/", "/"));
        assert!(matches("+/+", "/"));
        assert!(!matches("+", "/"));
    }

    #[test]
    fn level_counts() {
        assert_eq!(levels("a"), 1);
        assert_eq!(levels("/"), 2);
        assert_eq!(levels("a/b/#"), 3);
        assert_eq!(levels("//a//"), 5);
    }

    #[test]
    fn errors_name_the_rule() {
        assert_eq!(
            TopicError::BadWildcard.to_string(),
            "in a topic filter, + must occupy a whole level and # a whole level that is the last"
        );
        assert_eq!(
            TopicError::Nul.to_string(),
            "topic names and filters must not contain U+0000"
        );
    }
}
