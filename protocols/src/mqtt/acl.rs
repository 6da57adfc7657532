//! Who may publish to and receive from which topics: Mosquitto's `acl_file`.
//!
//! The file format is the one `mosquitto.conf(5)` documents for `acl_file`
//! (Mosquitto 2.0), so an existing file can be pointed at ringport unchanged:
//!
//! ```text
//! # Lines before any `user` line apply to anonymous clients.
//! topic read $SYS/#
//!
//! # Lines after `user NAME` apply to the client that authenticated as NAME.
//! # Without an access word the access is read and write.
//! user roger
//! topic foo/bar
//! topic deny foo/bar/secret
//!
//! # `pattern` lines apply to every client, wherever they stand in the file;
//! # `%c` is the client id and `%u` the username, each a whole topic level.
//! pattern write sensor/%u/data
//! pattern readwrite devices/%c/#
//! ```
//!
//! * Access words are `read`, `write`, `readwrite` and `deny`; without one
//!   the access is `readwrite`. A topic with a space needs the access word.
//!   A `#` starts a comment only as the first character of a line.
//! * A `deny` entry that matches wins over every grant, whichever list the
//!   grant comes from ("Any deny topics are handled before topics that grant
//!   read/write access").
//! * Nothing is allowed that no entry grants; an ACL with no entries at all
//!   (only comments) denies everything, as Mosquitto does since
//!   CVE-2018-12550.
//! * Wildcards at the first level (`#`, `+/x`) do not match topics that start
//!   with `$`, as in MQTT subscriptions.
//! * A client id or username containing `+` or `#` would turn a `%c`/`%u`
//!   level into a wildcard (CVE-2017-7650): pattern entries that name such a
//!   value grant that client nothing, and deny patterns naming it deny that
//!   client everything. A value containing `/` spans as many levels as it
//!   has parts, as with Mosquitto's textual substitution.
//!
//! [`Acl::parse`] reads the file's text; [`Acl::check`] decides a publish
//! ([`Access::Write`]) or a delivery ([`Access::Read`]) and
//! [`Acl::check_subscribe`] a subscription. Checking a topic does not
//! allocate. The module is sans-IO: reading the file is the caller's job.

use std::collections::HashMap;
use std::fmt;

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive a message published to the topic.
    Read,
    /// Publish to the topic.
    Write,
}

/// The access word of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Perm {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Perm {
    fn grants(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Perm::ReadWrite, _) | (Perm::Read, Access::Read) | (Perm::Write, Access::Write)
        )
    }
}

/// One level of an entry's topic.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// A literal level, `+` or `#` (kept as text: the matchers look for them).
    Text(String),
    /// `%c`: the client id.
    ClientId,
    /// `%u`: the username.
    Username,
}

/// One `topic` or `pattern` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    perm: Perm,
    levels: Vec<Level>,
}

impl Entry {
    fn names(&self, var: &Level) -> bool {
        self.levels.iter().any(|l| l == var)
    }
}

/// The client an entry is evaluated for.
#[derive(Clone, Copy)]
struct Who<'a> {
    user: Option<&'a str>,
    client_id: &'a str,
}

/// How an entry applies to a client once `%c` and `%u` are known.
// Lives on the stack for one check and is never stored: boxing the iterator
// would allocate per entry checked.
#[allow(clippy::large_enum_variant)]
enum Applies<'a> {
    /// The entry's levels, with substitutions, as `/`-free tokens.
    Tokens(Tokens<'a>),
    /// The entry cannot apply (a `%u` for a client without a username, or an
    /// unsafe substitution in a grant).
    Never,
    /// A deny entry whose substitution is unsafe: it denies everything.
    Everything,
}

/// The levels of an entry after substitution, one topic level per item.
type Tokens<'a> = std::iter::FlatMap<
    std::iter::Zip<std::slice::Iter<'a, Level>, std::iter::Repeat<Who<'a>>>,
    std::str::Split<'a, char>,
    fn((&'a Level, Who<'a>)) -> std::str::Split<'a, char>,
>;

fn level_text<'a>((level, who): (&'a Level, Who<'a>)) -> std::str::Split<'a, char> {
    let text: &'a str = match level {
        Level::Text(t) => t,
        Level::ClientId => who.client_id,
        // `applies` only builds tokens when a username exists.
        Level::Username => who.user.unwrap_or(""),
    };
    text.split('/')
}

/// A value is safe to substitute when it cannot be read as a wildcard.
fn safe_value(value: &str) -> bool {
    !value.contains(['+', '#'])
}

impl Entry {
    fn applies<'a>(&'a self, who: Who<'a>) -> Applies<'a> {
        let mut unsafe_value = false;
        if self.names(&Level::ClientId) && !safe_value(who.client_id) {
            unsafe_value = true;
        }
        if self.names(&Level::Username) {
            match who.user {
                None => return Applies::Never,
                Some(u) if !safe_value(u) => unsafe_value = true,
                Some(_) => {}
            }
        }
        if unsafe_value {
            return if self.perm == Perm::Deny {
                Applies::Everything
            } else {
                Applies::Never
            };
        }
        let f: fn((&'a Level, Who<'a>)) -> std::str::Split<'a, char> = level_text;
        Applies::Tokens(self.levels.iter().zip(std::iter::repeat(who)).flat_map(f))
    }
}

/// An access control list in Mosquitto's `acl_file` format.
///
/// Built by [`Acl::parse`]; immutable afterwards, so one `Acl` can be shared
/// by every shard behind an `Arc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// `topic` lines before any `user` line.
    anonymous: Vec<Entry>,
    /// `topic` lines after `user NAME`, by NAME.
    users: HashMap<String, Vec<Entry>>,
    /// `pattern` lines, wherever they stand.
    patterns: Vec<Entry>,
}

/// Why an ACL file was refused: the line (1-based) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclError {
    /// The line of the file, counted from 1.
    pub line: usize,
    /// What is wrong with it.
    pub kind: AclErrorKind,
}

/// What is wrong with a line of an ACL file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AclErrorKind {
    /// The first word is not `user`, `topic` or `pattern`.
    UnknownKeyword(String),
    /// `user` without a name.
    MissingUser,
    /// `topic` or `pattern` without a topic.
    MissingTopic,
    /// An access word alone (`topic read`): the topic is missing, or the
    /// topic is named like an access word.
    AccessWithoutTopic(String),
    /// `+` or `#` mixed with other characters in a level, or `#` not last.
    BadWildcard(String),
    /// `%c` or `%u` mixed with other characters in a level.
    BadSubstitution(String),
    /// The topic contains the NUL character, which MQTT forbids.
    NulInTopic,
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ACL line {}: ", self.line)?;
        match &self.kind {
            AclErrorKind::UnknownKeyword(w) => write!(
                f,
                "unknown keyword `{w}`; a line starts with `user`, `topic` or `pattern`, \
                 or with `#` for a comment"
            ),
            AclErrorKind::MissingUser => {
                f.write_str("`user` needs a name: write `user NAME` (the CONNECT username)")
            }
            AclErrorKind::MissingTopic => f.write_str(
                "missing topic: write `topic [read|write|readwrite|deny] TOPIC` \
                 (or `pattern ...`)",
            ),
            AclErrorKind::AccessWithoutTopic(w) => write!(
                f,
                "`{w}` is an access word but no topic follows: write `topic {w} TOPIC`, \
                 or `topic readwrite {w}` for a topic named `{w}`"
            ),
            AclErrorKind::BadWildcard(t) => write!(
                f,
                "invalid wildcard in `{t}`: `+` and `#` must each be a whole level, \
                 and `#` only the last one (e.g. `a/+/c`, `a/#`)"
            ),
            AclErrorKind::BadSubstitution(t) => write!(
                f,
                "invalid substitution in `{t}`: `%c` and `%u` must each be a whole level \
                 (e.g. `devices/%c/#`)"
            ),
            AclErrorKind::NulInTopic => {
                f.write_str("the topic contains a NUL character, which MQTT forbids; remove it")
            }
        }
    }
}

impl std::error::Error for AclError {}

/// Splits `s` at its first run of spaces or tabs.
fn split_word(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], s[i..].trim_start_matches([' ', '\t'])),
        None => (s, ""),
    }
}

fn parse_perm(word: &str) -> Option<Perm> {
    match word {
        "read" => Some(Perm::Read),
        "write" => Some(Perm::Write),
        "readwrite" => Some(Perm::ReadWrite),
        "deny" => Some(Perm::Deny),
        _ => None,
    }
}

/// Parses the rest of a `topic`/`pattern` line into an entry.
fn parse_entry(rest: &str, pattern: bool) -> Result<Entry, AclErrorKind> {
    if rest.is_empty() {
        return Err(AclErrorKind::MissingTopic);
    }
    let (first, after) = split_word(rest);
    let (perm, topic) = match parse_perm(first) {
        Some(_) if after.is_empty() => {
            return Err(AclErrorKind::AccessWithoutTopic(first.to_owned()))
        }
        Some(perm) => (perm, after),
        None => (Perm::ReadWrite, rest),
    };
    if topic.contains('\0') {
        return Err(AclErrorKind::NulInTopic);
    }
    let parts: Vec<&str> = topic.split('/').collect();
    let mut levels = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let level = match *part {
            "#" if i + 1 != parts.len() => return Err(AclErrorKind::BadWildcard(topic.to_owned())),
            "%c" if pattern => Level::ClientId,
            "%u" if pattern => Level::Username,
            p if p.len() > 1 && p.contains(['+', '#']) => {
                return Err(AclErrorKind::BadWildcard(topic.to_owned()))
            }
            p if pattern && (p.contains("%c") || p.contains("%u")) => {
                return Err(AclErrorKind::BadSubstitution(topic.to_owned()))
            }
            p => Level::Text(p.to_owned()),
        };
        levels.push(level);
    }
    Ok(Entry { perm, levels })
}

/// Whether the filter (an entry's tokens, with `+`/`#`) matches the topic
/// name, by MQTT's rules: `+` is one level, `#` the rest including none
/// (`a/#` matches `a`), and first-level wildcards skip `$` topics.
fn filter_matches<'a>(filter: impl Iterator<Item = &'a str>, topic: &str) -> bool {
    let dollar = topic.starts_with('$');
    let mut levels = topic.split('/');
    for (i, f) in filter.enumerate() {
        if f == "#" {
            return !(i == 0 && dollar);
        }
        let Some(level) = levels.next() else {
            return false;
        };
        if f == "+" {
            if i == 0 && dollar {
                return false;
            }
        } else if f != level {
            return false;
        }
    }
    levels.next().is_none()
}

fn is_wild(token: &str) -> bool {
    token == "+" || token == "#"
}

/// Whether some topic name matches both filters.
fn filters_intersect(a: &[&str], b: &[&str]) -> bool {
    for i in 0.. {
        match (a.get(i).copied(), b.get(i).copied()) {
            (None, None) => return true,
            (Some("#"), other) | (other, Some("#")) => {
                // `x/#` also matches `x`, so a shorter side is fine; at the
                // first level a wildcard never meets a `$` literal.
                return !(i == 0 && other.is_some_and(|o| !is_wild(o) && o.starts_with('$')));
            }
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(x), Some(y)) => {
                if x == "+" || y == "+" {
                    let other = if x == "+" { y } else { x };
                    if i == 0 && !is_wild(other) && other.starts_with('$') {
                        return false;
                    }
                } else if x != y {
                    return false;
                }
            }
        }
    }
    unreachable!("the loop returns")
}

/// Whether every topic name the filter `f` matches is matched by `d`.
fn filter_covers(d: &[&str], f: &[&str]) -> bool {
    for i in 0.. {
        match (d.get(i).copied(), f.get(i).copied()) {
            (Some("#"), other) => {
                return !(i == 0 && other.is_some_and(|o| !is_wild(o) && o.starts_with('$')));
            }
            // A topic has at least one level, so a first-level `#` matches
            // what `+/#` matches; deeper, `x/#` also matches `x`, which only
            // `#` covers.
            (Some("+"), Some("#")) if i == 0 => return d.get(1) == Some(&"#") && d.len() == 2,
            (_, Some("#")) => return false,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some("+"), Some(y)) => {
                if i == 0 && y != "+" && y.starts_with('$') {
                    return false;
                }
            }
            (Some(_), Some("+")) => return false,
            (Some(x), Some(y)) => {
                if x != y {
                    return false;
                }
            }
        }
    }
    unreachable!("the loop returns")
}

/// Whether a subscription filter is well formed (non-empty, wildcards whole
/// levels, `#` last, no NUL).
fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level == "#" {
            return levels.peek().is_none();
        }
        if level.len() > 1 && level.contains(['+', '#']) {
            return false;
        }
    }
    true
}

impl Acl {
    /// Parses the text of an `acl_file`.
    ///
    /// Lines are trimmed; empty lines and lines starting with `#` are
    /// skipped. `user NAME` (the name may contain spaces) starts the list of
    /// NAME; `topic` lines go to the current list (the anonymous one before
    /// any `user`), `pattern` lines to the list every client is checked
    /// against.
    ///
    /// # Errors
    ///
    /// The first line that is not one of these, or whose topic is malformed,
    /// as an [`AclError`] naming the line and the fix.
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        let mut acl = Acl::default();
        let mut current: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let err = |kind| AclError { line: i + 1, kind };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(line);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(err(AclErrorKind::MissingUser));
                    }
                    acl.users.entry(rest.to_owned()).or_default();
                    current = Some(rest.to_owned());
                }
                "topic" => {
                    let entry = parse_entry(rest, false).map_err(err)?;
                    match &current {
                        None => acl.anonymous.push(entry),
                        Some(user) => acl.users.entry(user.clone()).or_default().push(entry),
                    }
                }
                "pattern" => {
                    let entry = parse_entry(rest, true).map_err(err)?;
                    acl.patterns.push(entry);
                }
                other => return Err(err(AclErrorKind::UnknownKeyword(other.to_owned()))),
            }
        }
        Ok(acl)
    }

    /// The entries that apply to `user`: its `topic` list (the anonymous
    /// one for `None`), then the patterns.
    fn entries<'a>(&'a self, user: Option<&str>) -> impl Iterator<Item = &'a Entry> + 'a {
        let own: &'a [Entry] = match user {
            None => &self.anonymous,
            Some(name) => self.users.get(name).map_or(&[], Vec::as_slice),
        };
        own.iter().chain(self.patterns.iter())
    }

    /// Whether the client may publish to (`Write`) or receive from (`Read`)
    /// the topic name `topic`.
    ///
    /// `user` is the authenticated identity ([`crate::mqtt::auth`]), `None`
    /// for an anonymous client. A matching `deny` entry refuses; otherwise a
    /// matching entry granting `access` allows; otherwise the answer is no.
    /// Does not allocate; the cost is linear in the entries that apply to
    /// the client (its own list and the patterns) times their levels.
    pub fn check(&self, user: Option<&str>, client_id: &str, topic: &str, access: Access) -> bool {
        let who = Who { user, client_id };
        let mut granted = false;
        for entry in self.entries(user) {
            let wanted = entry.perm == Perm::Deny || (!granted && entry.perm.grants(access));
            if !wanted {
                continue;
            }
            let hit = match entry.applies(who) {
                Applies::Never => false,
                Applies::Everything => true,
                Applies::Tokens(tokens) => filter_matches(tokens, topic),
            };
            if hit {
                if entry.perm == Perm::Deny {
                    return false;
                }
                granted = true;
            }
        }
        granted
    }

    /// Whether the client may subscribe to the topic filter `filter`.
    ///
    /// Mosquitto 2.0's `acl_file` does not check subscriptions at all: its
    /// default check returns success for `MOSQ_ACL_SUBSCRIBE` and filters
    /// each message at delivery instead, and the maintainer describes this
    /// as the intended behaviour ("The ACL configuration at the moment does
    /// not prevent subscription, it only prevents messages being delivered
    /// on that subscription", eclipse-mosquitto/mosquitto#744; again for 2.0
    /// in #2208: subscribing to `#` "will simply give it what it's allowed
    /// to"). ringport keeps that contract for what is delivered (the broker
    /// must still call [`Acl::check`] with [`Access::Read`] for every message
    /// it delivers), and refuses only the subscriptions that could never
    /// deliver anything, so the client gets the spec's "not authorized"
    /// reason code instead of a silent, empty subscription:
    ///
    /// * refused when a `deny` entry matches every topic the filter can
    ///   match (`topic deny a/#` refuses `a/+/b`; deny wins);
    /// * allowed when some `read` or `readwrite` entry can match a topic the
    ///   filter also matches (`topic read a/b` allows `#`, `a/+` and `a/b`);
    /// * refused otherwise, and for malformed filters.
    ///
    /// A shared subscription `$share/GROUP/FILTER` is judged by its FILTER.
    pub fn check_subscribe(&self, user: Option<&str>, client_id: &str, filter: &str) -> bool {
        let filter = match filter.strip_prefix("$share/") {
            Some(rest) => match rest.split_once('/') {
                Some((group, inner)) if !group.is_empty() && !group.contains(['+', '#']) => inner,
                _ => return false,
            },
            None => filter,
        };
        if !valid_filter(filter) {
            return false;
        }
        let wanted: Vec<&str> = filter.split('/').collect();
        let who = Who { user, client_id };
        let mut granted = false;
        for entry in self.entries(user) {
            let deny = entry.perm == Perm::Deny;
            if !deny && (granted || !entry.perm.grants(Access::Read)) {
                continue;
            }
            let tokens: Vec<&str> = match entry.applies(who) {
                Applies::Never => continue,
                Applies::Everything => return false,
                Applies::Tokens(tokens) => tokens.collect(),
            };
            if deny {
                if filter_covers(&tokens, &wanted) {
                    return false;
                }
            } else if filters_intersect(&tokens, &wanted) {
                granted = true;
            }
        }
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> Acl {
        Acl::parse(text).unwrap()
    }

    fn err(text: &str) -> AclError {
        Acl::parse(text).unwrap_err()
    }

    use Access::{Read, Write};

    #[test]
    fn anonymous_topic_lines_apply_only_without_username() {
        let a = acl("topic read $SYS/#\nuser roger\ntopic foo/bar\n");
        assert!(a.check(None, "c1", "$SYS/broker/uptime", Read));
        assert!(!a.check(None, "c1", "$SYS/broker/uptime", Write));
        assert!(!a.check(None, "c1", "foo/bar", Read));
        assert!(!a.check(Some("roger"), "c1", "$SYS/broker/uptime", Read));
        assert!(a.check(Some("roger"), "c1", "foo/bar", Read));
        assert!(a.check(Some("roger"), "c1", "foo/bar", Write));
        // A user with no section gets nothing.
        assert!(!a.check(Some("eve"), "c1", "foo/bar", Read));
        assert!(!a.check(Some("eve"), "c1", "$SYS/broker/uptime", Read));
    }

    #[test]
    fn access_words() {
        let a = acl("user u\ntopic read r\ntopic write w\ntopic readwrite rw\ntopic both\n");
        let u = Some("u");
        assert_eq!(
            [
                a.check(u, "c", "r", Read),
                a.check(u, "c", "r", Write),
                a.check(u, "c", "w", Read),
                a.check(u, "c", "w", Write),
                a.check(u, "c", "rw", Read),
                a.check(u, "c", "rw", Write),
                a.check(u, "c", "both", Read),
                a.check(u, "c", "both", Write),
            ],
            [true, false, false, true, true, true, true, true]
        );
    }

    #[test]
    fn topic_with_spaces_needs_the_access_word() {
        let a = acl("user my user\ntopic read my topic/x\n");
        assert!(a.check(Some("my user"), "c", "my topic/x", Read));
        assert!(!a.check(Some("my user"), "c", "my topic/x", Write));
        // Without an access word the whole rest is the topic.
        let b = acl("topic my topic\n");
        assert!(b.check(None, "c", "my topic", Write));
    }

    #[test]
    fn deny_wins_over_grants_in_any_order_and_list() {
        let a = acl("user u\ntopic readwrite a/#\ntopic deny a/secret/#\n");
        assert!(a.check(Some("u"), "c", "a/open", Write));
        assert!(!a.check(Some("u"), "c", "a/secret", Write));
        assert!(!a.check(Some("u"), "c", "a/secret/x", Read));
        // Deny before the grant, and a deny pattern against a user grant.
        let b = acl("user u\ntopic deny a/x\ntopic a/+\npattern deny a/%c\n");
        assert!(!b.check(Some("u"), "c", "a/x", Read));
        assert!(b.check(Some("u"), "c", "a/y", Read));
        assert!(!b.check(Some("u"), "y", "a/y", Read));
    }

    #[test]
    fn patterns_substitute_client_id_and_username_for_everyone() {
        let a = acl(
            "pattern write sensor/%u/data\nuser bob\ntopic read x\npattern readwrite dev/%c/#\n",
        );
        assert!(a.check(Some("bob"), "b1", "sensor/bob/data", Write));
        assert!(!a.check(Some("bob"), "b1", "sensor/bob/data", Read));
        assert!(!a.check(Some("bob"), "b1", "sensor/alice/data", Write));
        assert!(a.check(Some("bob"), "b1", "dev/b1/cmd", Read));
        assert!(a.check(Some("bob"), "b1", "dev/b1", Write));
        assert!(!a.check(Some("bob"), "b1", "dev/b2/cmd", Read));
        // Patterns apply to users without a section and to anonymous
        // clients; `%u` never matches for a client without a username.
        assert!(a.check(Some("carol"), "k", "sensor/carol/data", Write));
        assert!(a.check(None, "anon", "dev/anon/x", Write));
        assert!(!a.check(None, "anon", "sensor//data", Write));
    }

    #[test]
    fn substitution_with_slash_spans_levels() {
        let a = acl("pattern readwrite dev/%u/#\n");
        assert!(a.check(Some("org/7"), "c", "dev/org/7/t", Read));
        assert!(!a.check(Some("org/7"), "c", "dev/org/t", Read));
    }

    #[test]
    fn wildcard_in_client_id_or_username_gains_nothing() {
        let a = acl("pattern readwrite dev/%c/#\npattern read users/%u\n");
        // A client id `+` would otherwise turn `dev/%c/#` into `dev/+/#`.
        assert!(!a.check(None, "+", "dev/other/x", Read));
        assert!(!a.check(None, "+", "dev/+/x", Write));
        assert!(!a.check(None, "#", "dev/other", Read));
        assert!(!a.check(None, "a+b", "dev/a+b/x", Read));
        assert!(!a.check_subscribe(None, "+", "dev/+/#"));
        assert!(!a.check_subscribe(None, "#", "dev/#"));
        assert!(!a.check(Some("#"), "c", "users/x", Read));
        assert!(!a.check_subscribe(Some("+"), "c", "users/+"));
        // The same client id without the wildcard is fine.
        assert!(a.check(None, "ok", "dev/ok/x", Read));
        assert!(a.check_subscribe(None, "ok", "dev/ok/#"));
    }

    #[test]
    fn deny_pattern_with_unsafe_value_denies_everything() {
        let a = acl("topic readwrite #\npattern deny private/%c/#\n");
        assert!(a.check(None, "c", "public", Write));
        assert!(!a.check(None, "c", "private/c/x", Write));
        assert!(!a.check(None, "c+", "public", Write));
        assert!(!a.check_subscribe(None, "c#", "public"));
    }

    #[test]
    fn mqtt_matching_rules() {
        let a = acl("topic read a/+/c\ntopic read h/#\ntopic read #\n");
        assert!(a.check(None, "c", "a/b/c", Read));
        assert!(a.check(None, "c", "h", Read));
        assert!(a.check(None, "c", "anything/at/all", Read));
        // `#` and `+` at the first level do not reach `$` topics.
        assert!(!a.check(None, "c", "$SYS/x", Read));
        let b = acl("topic read +/x\ntopic read a/+\n");
        assert!(b.check(None, "c", "q/x", Read));
        assert!(!b.check(None, "c", "$q/x", Read));
        assert!(b.check(None, "c", "a/", Read));
        assert!(!b.check(None, "c", "a", Read));
        assert!(!b.check(None, "c", "a/b/c", Read));
        let c = acl("topic read $SYS/#\n");
        assert!(c.check(None, "c", "$SYS/a", Read));
        assert!(!c.check(None, "c", "SYS/a", Read));
    }

    #[test]
    fn empty_acl_denies_everything() {
        let a = acl("# nothing but a comment\n\n   \n");
        assert!(!a.check(None, "c", "t", Read));
        assert!(!a.check(Some("u"), "c", "t", Write));
        assert!(!a.check_subscribe(None, "c", "#"));
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let a = acl("  # indented comment\n\n\tuser  u  \n  topic   read   t/x  \r\n");
        assert!(a.check(Some("u"), "c", "t/x", Read));
        assert!(!a.check(Some("u"), "c", "t/x", Write));
    }

    #[test]
    fn subscribe_follows_what_could_be_delivered() {
        let a = acl(
            "user u\ntopic read a/b\ntopic write w/#\ntopic readwrite r/#\ntopic deny r/secret/#\n",
        );
        let u = Some("u");
        let sub = |f| a.check_subscribe(u, "c", f);
        // Broader filters are granted (delivery filters per message).
        assert!(sub("#"));
        assert!(sub("a/+"));
        assert!(sub("a/b"));
        assert!(sub("+/b"));
        assert!(sub("r/+/x"));
        // Nothing readable can ever match.
        assert!(!sub("a/c"));
        assert!(!sub("w/x"));
        assert!(!sub("a/b/c"));
        assert!(!sub("$SYS/#"));
        // Deny covering the whole filter refuses it.
        assert!(!sub("r/secret/#"));
        assert!(!sub("r/secret/+"));
        assert!(!sub("r/secret"));
        // ... but not when part of it is readable.
        assert!(sub("r/+"));
        // Malformed filters.
        assert!(!sub("a/b#"));
        assert!(!sub("#/a"));
        assert!(!sub(""));
        // Shared subscriptions are judged by their filter.
        assert!(sub("$share/g/a/b"));
        assert!(!sub("$share/g/a/c"));
        assert!(!sub("$share//a/b"));
        assert!(!sub("$share/g"));
    }

    #[test]
    fn subscribe_and_dollar_topics() {
        let a = acl("topic read $SYS/#\ntopic read #\n");
        assert!(a.check_subscribe(None, "c", "$SYS/broker/#"));
        assert!(a.check_subscribe(None, "c", "#"));
        let b = acl("topic read #\n");
        assert!(!b.check_subscribe(None, "c", "$SYS/#"));
        assert!(!b.check_subscribe(None, "c", "$SYS/x"));
        let c = acl("topic read #\ntopic deny #\n");
        assert!(!c.check_subscribe(None, "c", "a/#"));
        let d = acl("topic read $x/#\ntopic deny #\n");
        // `deny #` does not cover `$` topics.
        assert!(d.check_subscribe(None, "c", "$x/y"));
        assert!(d.check(None, "c", "$x/y", Read));
    }

    #[test]
    fn parse_errors_name_the_line_and_the_fix() {
        assert_eq!(
            err("user u\n\ntopics read a\n"),
            AclError {
                line: 3,
                kind: AclErrorKind::UnknownKeyword("topics".into())
            }
        );
        assert_eq!(err("user\n").kind, AclErrorKind::MissingUser);
        assert_eq!(err("topic\n").kind, AclErrorKind::MissingTopic);
        assert_eq!(
            err("# c\ntopic read\n"),
            AclError {
                line: 2,
                kind: AclErrorKind::AccessWithoutTopic("read".into())
            }
        );
        assert_eq!(
            err("topic a/#/b\n").kind,
            AclErrorKind::BadWildcard("a/#/b".into())
        );
        assert_eq!(
            err("topic a/b+\n").kind,
            AclErrorKind::BadWildcard("a/b+".into())
        );
        assert_eq!(
            err("pattern read a/x%c\n").kind,
            AclErrorKind::BadSubstitution("a/x%c".into())
        );
        assert_eq!(err("topic a\0b\n").kind, AclErrorKind::NulInTopic);
        assert_eq!(
            err("\n\nbogus x\n").to_string(),
            "ACL line 3: unknown keyword `bogus`; a line starts with `user`, `topic` or \
             `pattern`, or with `#` for a comment"
        );
        assert_eq!(
            err("topic deny\n").to_string(),
            "ACL line 1: `deny` is an access word but no topic follows: write `topic deny TOPIC`, \
             or `topic readwrite deny` for a topic named `deny`"
        );
    }

    #[test]
    fn percent_in_topic_lines_is_literal() {
        let a = acl("topic read a/%c\n");
        assert!(a.check(None, "x", "a/%c", Read));
        assert!(!a.check(None, "x", "a/x", Read));
    }

    #[test]
    fn repeated_user_sections_accumulate() {
        let a = acl("user u\ntopic read a\nuser v\ntopic read b\nuser u\ntopic read c\n");
        assert!(a.check(Some("u"), "k", "a", Read));
        assert!(a.check(Some("u"), "k", "c", Read));
        assert!(!a.check(Some("u"), "k", "b", Read));
        assert!(a.check(Some("v"), "k", "b", Read));
    }

    #[test]
    fn matchers() {
        let s = |t: &'static str| -> Vec<&'static str> { t.split('/').collect() };
        assert!(filters_intersect(&s("a/#"), &s("a")));
        assert!(filters_intersect(&s("a"), &s("a/#")));
        assert!(filters_intersect(&s("+/b"), &s("a/+")));
        assert!(!filters_intersect(&s("a/b"), &s("a/c")));
        assert!(!filters_intersect(&s("a/+"), &s("a")));
        assert!(!filters_intersect(&s("+"), &s("$x")));
        assert!(filter_covers(&s("a/#"), &s("a")));
        assert!(filter_covers(&s("a/+"), &s("a/b")));
        assert!(!filter_covers(&s("a/+"), &s("a/#")));
        assert!(!filter_covers(&s("a/b"), &s("a/+")));
        assert!(filter_covers(&s("#"), &s("+/x")));
        assert!(!filter_covers(&s("#"), &s("$x/y")));
        assert!(!filter_covers(&s("+/y"), &s("$x/y")));
        assert!(filter_covers(&s("+/#"), &s("#")));
        assert!(!filter_covers(&s("+/+/#"), &s("#")));
        assert!(!filter_covers(&s("a/+/#"), &s("a/#")));
    }

    /// Every filter of up to three levels over a small alphabet, checked
    /// against every topic of up to four levels: `filters_intersect` and
    /// `filter_covers` agree with enumerating the topics each filter matches.
    #[test]
    fn filter_algebra_agrees_with_enumeration() {
        fn all(alphabet: &[&'static str], max: usize) -> Vec<Vec<&'static str>> {
            let mut out: Vec<Vec<&'static str>> = vec![];
            let mut frontier: Vec<Vec<&'static str>> = vec![vec![]];
            for _ in 0..max {
                let mut next = vec![];
                for prefix in &frontier {
                    for level in alphabet {
                        let mut v = prefix.clone();
                        v.push(*level);
                        next.push(v);
                    }
                }
                out.extend(next.iter().cloned());
                frontier = next;
            }
            out
        }
        // Topic names are at least one character long.
        let topics: Vec<String> = all(&["a", "b", "$x", ""], 4)
            .iter()
            .map(|t| t.join("/"))
            .filter(|t| !t.is_empty())
            .collect();
        let filters: Vec<Vec<&str>> = all(&["a", "$x", "+", "#"], 3)
            .into_iter()
            .filter(|f| valid_filter(&f.join("/")))
            .collect();
        let matching: Vec<Vec<bool>> = filters
            .iter()
            .map(|f| {
                topics
                    .iter()
                    .map(|t| filter_matches(f.iter().copied(), t))
                    .collect()
            })
            .collect();
        for (i, a) in filters.iter().enumerate() {
            for (j, b) in filters.iter().enumerate() {
                let some = (0..topics.len()).any(|k| matching[i][k] && matching[j][k]);
                assert_eq!(filters_intersect(a, b), some, "{a:?} meets {b:?}");
                let every = (0..topics.len()).all(|k| !matching[j][k] || matching[i][k]);
                assert_eq!(filter_covers(a, b), every, "{a:?} covers {b:?}");
            }
        }
    }
}
