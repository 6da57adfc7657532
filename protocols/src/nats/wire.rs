//! The NATS client protocol on the wire: server operations parsed from a
//! zero-copy view of the received bytes, client operations written into a
//! buffer.
//!
//! Every operation is a control line ending in CR LF; `MSG` and `HMSG` carry
//! a body of the announced length followed by CR LF. Operation names are
//! case-insensitive; fields are separated by runs of spaces or tabs.
//!
//! | server op | control line                                            |
//! |-----------|---------------------------------------------------------|
//! | `INFO`    | `INFO {json}`                                           |
//! | `MSG`     | `MSG <subject> <sid> [reply-to] <#bytes>`               |
//! | `HMSG`    | `HMSG <subject> <sid> [reply-to] <#hdr bytes> <#total>` |
//! | `PING`, `PONG`, `+OK` | no fields                                   |
//! | `-ERR`    | `-ERR '<message>'`                                      |
//!
//! [`parse_server_op`] takes the bytes received so far and returns the first
//! whole operation and its length, or `None` while it is incomplete: bytes
//! may arrive in any pieces. It refuses a control line longer than
//! [`Limits::max_control_line`] once the bytes that would have to end it
//! arrived without CR LF, and a body longer than [`Limits::max_payload`]
//! from its control line, before the body arrives. Nothing here panics on
//! any input.

use std::fmt;

use super::headers::{HeaderError, Headers};

/// The longest control line accepted by default, in bytes (CR LF excluded).
/// `INFO` lines of servers in large clusters (many `connect_urls`) are the
/// longest a client receives; the server's own default limit is 4096.
pub const DEFAULT_MAX_CONTROL_LINE: usize = 4096;

/// The largest message body (headers and payload) accepted by default: the
/// server's default `max_payload`, 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// How large what a peer sends may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest control line, CR LF excluded.
    pub max_control_line: usize,
    /// The largest `MSG`/`HMSG` body (headers plus payload).
    pub max_payload: usize,
}

impl Default for Limits {
    /// [`DEFAULT_MAX_CONTROL_LINE`] and [`DEFAULT_MAX_PAYLOAD`].
    fn default() -> Limits {
        Limits {
            max_control_line: DEFAULT_MAX_CONTROL_LINE,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// Why received bytes are not a server operation. Each one ends the
/// connection: the stream cannot be resynchronised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// No CR LF within [`Limits::max_control_line`] bytes.
    ControlLineTooLong,
    /// A line feed without the carriage return before it.
    BareLineFeed,
    /// An operation name a server does not send.
    UnknownOperation,
    /// The fields of an operation are missing, extra or not numbers.
    BadFields,
    /// A body longer than [`Limits::max_payload`].
    PayloadTooLarge,
    /// `HMSG` announces more header bytes than total bytes.
    HeaderLongerThanTotal,
    /// A body is not followed by CR LF.
    MissingBodyEnd,
    /// The header block of an `HMSG` is malformed.
    BadHeaders(HeaderError),
    /// The control line is not UTF-8.
    NotUtf8,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::ControlLineTooLong => f.write_str("control line too long"),
            WireError::BareLineFeed => f.write_str("line feed without carriage return"),
            WireError::UnknownOperation => f.write_str("unknown operation"),
            WireError::BadFields => f.write_str("missing, extra or malformed fields"),
            WireError::PayloadTooLarge => f.write_str("message larger than max_payload"),
            WireError::HeaderLongerThanTotal => f.write_str("header bytes larger than total bytes"),
            WireError::MissingBodyEnd => f.write_str("message body not followed by CR LF"),
            WireError::BadHeaders(e) => write!(f, "bad header block: {e}"),
            WireError::NotUtf8 => f.write_str("control line is not UTF-8"),
        }
    }
}

impl std::error::Error for WireError {}

/// A message delivered by `MSG` or `HMSG`, borrowing the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgView<'a> {
    /// The subject it was published to.
    pub subject: &'a str,
    /// The subscription it is delivered for.
    pub sid: u64,
    /// The reply subject, if the publisher gave one.
    pub reply: Option<&'a str>,
    /// The raw header block (`NATS/1.0 ... CR LF CR LF`) of an `HMSG`; its
    /// version line and final empty line are checked, the rest is parsed by
    /// [`Headers::parse`] when wanted.
    pub headers: Option<&'a [u8]>,
    /// The payload.
    pub payload: &'a [u8],
}

/// An operation a server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerOp<'a> {
    /// `INFO`, with its JSON object (see [`super::ServerInfo::parse`]).
    Info(&'a str),
    /// `MSG` or `HMSG`.
    Msg(MsgView<'a>),
    /// `PING`: answer with `PONG`.
    Ping,
    /// `PONG`: the answer to a `PING`.
    Pong,
    /// `+OK` (verbose mode only).
    Ok,
    /// `-ERR`, with the message between its quotes.
    Err(&'a str),
}

/// Fields of a control line: runs of spaces and tabs separate them.
fn fields(s: &str) -> impl Iterator<Item = &str> {
    s.split([' ', '\t']).filter(|f| !f.is_empty())
}

/// A decimal number of at most 19 digits (no sign, no overflow).
fn number(s: &str) -> Result<u64, WireError> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WireError::BadFields);
    }
    s.parse().map_err(|_| WireError::BadFields)
}

fn size(s: &str) -> Result<usize, WireError> {
    usize::try_from(number(s)?).map_err(|_| WireError::PayloadTooLarge)
}

/// The first operation in `buf` and how many bytes it takes, `Ok(None)` when
/// `buf` holds only part of it.
pub fn parse_server_op<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Option<(ServerOp<'a>, usize)>, WireError> {
    // The line end may only be looked for where it is allowed to be.
    let window = &buf[..buf.len().min(limits.max_control_line.saturating_add(2))];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if window.len() > limits.max_control_line.saturating_add(1) {
            return Err(WireError::ControlLineTooLong);
        }
        return Ok(None);
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(WireError::BareLineFeed);
    }
    let line = &buf[..lf - 1];
    if line.len() > limits.max_control_line {
        return Err(WireError::ControlLineTooLong);
    }
    let line = std::str::from_utf8(line).map_err(|_| WireError::NotUtf8)?;
    let head = lf + 1;
    let (name, args) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, ""),
    };
    let no_fields = |op: ServerOp<'a>| {
        if fields(args).next().is_some() {
            Err(WireError::BadFields)
        } else {
            Ok(Some((op, head)))
        }
    };
    if name.eq_ignore_ascii_case("MSG") {
        msg(buf, head, args, false, limits)
    } else if name.eq_ignore_ascii_case("HMSG") {
        msg(buf, head, args, true, limits)
    } else if name.eq_ignore_ascii_case("PING") {
        no_fields(ServerOp::Ping)
    } else if name.eq_ignore_ascii_case("PONG") {
        no_fields(ServerOp::Pong)
    } else if name.eq_ignore_ascii_case("+OK") {
        no_fields(ServerOp::Ok)
    } else if name.eq_ignore_ascii_case("-ERR") {
        let text = args.trim_matches([' ', '\t']);
        let text = text
            .strip_prefix('\'')
            .and_then(|t| t.strip_suffix('\''))
            .unwrap_or(text);
        Ok(Some((ServerOp::Err(text), head)))
    } else if name.eq_ignore_ascii_case("INFO") {
        let json = args.trim_matches([' ', '\t']);
        if json.is_empty() {
            return Err(WireError::BadFields);
        }
        Ok(Some((ServerOp::Info(json), head)))
    } else {
        Err(WireError::UnknownOperation)
    }
}

fn msg<'a>(
    buf: &'a [u8],
    head: usize,
    args: &'a str,
    with_headers: bool,
    limits: &Limits,
) -> Result<Option<(ServerOp<'a>, usize)>, WireError> {
    let mut f = [""; 6];
    let mut n = 0;
    for field in fields(args) {
        if n == f.len() {
            return Err(WireError::BadFields);
        }
        f[n] = field;
        n += 1;
    }
    let sizes = if with_headers { 2 } else { 1 };
    let reply = match n.checked_sub(sizes) {
        Some(2) => None,
        Some(3) => Some(f[2]),
        _ => return Err(WireError::BadFields),
    };
    let subject = f[0];
    let sid = number(f[1])?;
    let (header_len, total) = if with_headers {
        (size(f[n - 2])?, size(f[n - 1])?)
    } else {
        (0, size(f[n - 1])?)
    };
    if total > limits.max_payload {
        return Err(WireError::PayloadTooLarge);
    }
    if header_len > total {
        return Err(WireError::HeaderLongerThanTotal);
    }
    // `total <= max_payload`, which is a `usize` already held in memory terms.
    let end = head.saturating_add(total);
    if buf.len() < end.saturating_add(2) {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(WireError::MissingBodyEnd);
    }
    let body = &buf[head..end];
    let (headers, payload) = if with_headers {
        let (h, p) = body.split_at(header_len);
        if !h.starts_with(super::headers::VERSION_LINE) {
            return Err(WireError::BadHeaders(HeaderError::BadVersion));
        }
        if !h.ends_with(b"\r\n\r\n") {
            return Err(WireError::BadHeaders(HeaderError::Malformed));
        }
        (Some(h), p)
    } else {
        (None, body)
    };
    Ok(Some((
        ServerOp::Msg(MsgView {
            subject,
            sid,
            reply,
            headers,
            payload,
        }),
        end + 2,
    )))
}

/// Why a subject, queue group or reply subject cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectError {
    /// Empty, or a token between two dots is empty.
    EmptyToken,
    /// Holds a space, a tab, CR, LF or another control character.
    Whitespace,
    /// A wildcard where none is allowed (publish), or one that is not a whole
    /// token, or `>` before the last token.
    BadWildcard,
}

impl fmt::Display for SubjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubjectError::EmptyToken => "a subject and each of its tokens must be non-empty",
            SubjectError::Whitespace => {
                "a subject must not contain whitespace or control characters"
            }
            SubjectError::BadWildcard => {
                "wildcards must be whole tokens, > only last, and none in a publish subject"
            }
        })
    }
}

impl std::error::Error for SubjectError {}

/// Checks a subject: non-empty dot-separated tokens without whitespace.
/// With `wildcards`, `*` may be a whole token and `>` the whole last token
/// (a subscription); without, neither may appear as a token (a publish).
pub fn check_subject(subject: &str, wildcards: bool) -> Result<(), SubjectError> {
    if subject
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(SubjectError::Whitespace);
    }
    let mut tokens = subject.split('.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            return Err(SubjectError::EmptyToken);
        }
        let last = tokens.peek().is_none();
        match token {
            "*" if wildcards => {}
            ">" if wildcards && last => {}
            _ if token.contains(['*', '>']) => return Err(SubjectError::BadWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a queue group name: non-empty, no whitespace.
pub fn check_queue_group(group: &str) -> Result<(), SubjectError> {
    if group.is_empty() {
        return Err(SubjectError::EmptyToken);
    }
    if group
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(SubjectError::Whitespace);
    }
    Ok(())
}

/// Appends `PUB <subject> [reply] <#bytes>\r\n<payload>\r\n`. The caller has
/// checked the subject and reply ([`check_subject`]).
pub fn encode_pub(out: &mut Vec<u8>, subject: &str, reply: Option<&str>, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    if let Some(reply) = reply {
        out.push(b' ');
        out.extend_from_slice(reply.as_bytes());
    }
    out.extend_from_slice(format!(" {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends `HPUB <subject> [reply] <#header bytes> <#total bytes>\r\n`, the
/// header block, the payload and CR LF.
pub fn encode_hpub(
    out: &mut Vec<u8>,
    subject: &str,
    reply: Option<&str>,
    headers: &Headers,
    payload: &[u8],
) {
    let header_len = headers.encoded_len();
    out.extend_from_slice(b"HPUB ");
    out.extend_from_slice(subject.as_bytes());
    if let Some(reply) = reply {
        out.push(b' ');
        out.extend_from_slice(reply.as_bytes());
    }
    out.extend_from_slice(format!(" {} {}\r\n", header_len, header_len + payload.len()).as_bytes());
    headers.encode(out);
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends `SUB <subject> [queue group] <sid>\r\n`.
pub fn encode_sub(out: &mut Vec<u8>, subject: &str, queue_group: Option<&str>, sid: u64) {
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject.as_bytes());
    if let Some(group) = queue_group {
        out.push(b' ');
        out.extend_from_slice(group.as_bytes());
    }
    out.extend_from_slice(format!(" {sid}\r\n").as_bytes());
}

/// Appends `UNSUB <sid> [max_msgs]\r\n`.
pub fn encode_unsub(out: &mut Vec<u8>, sid: u64, max_msgs: Option<u64>) {
    match max_msgs {
        Some(max) => out.extend_from_slice(format!("UNSUB {sid} {max}\r\n").as_bytes()),
        None => out.extend_from_slice(format!("UNSUB {sid}\r\n").as_bytes()),
    }
}

/// Appends `PING\r\n`.
pub fn encode_ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PING\r\n");
}

/// Appends `PONG\r\n`.
pub fn encode_pong(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PONG\r\n");
}

/// Appends `CONNECT <json>\r\n`.
pub fn encode_connect(out: &mut Vec<u8>, connect: &super::Connect) {
    out.extend_from_slice(b"CONNECT ");
    // Serialising a struct of strings, booleans and numbers into a Vec
    // cannot fail.
    let _ = serde_json::to_writer(&mut *out, connect);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(buf: &[u8]) -> (ServerOp<'_>, usize) {
        parse_server_op(buf, &Limits::default())
            .unwrap()
            .expect("complete")
    }

    #[test]
    fn spec_messages_parse() {
        let buf = b"MSG FOO.BAR 9 11\r\nHello World\r\n";
        let (op, n) = one(buf);
        assert_eq!(n, buf.len());
        assert_eq!(
            op,
            ServerOp::Msg(MsgView {
                subject: "FOO.BAR",
                sid: 9,
                reply: None,
                headers: None,
                payload: b"Hello World",
            })
        );
        let (op, _) = one(b"MSG FOO.BAR 9 INBOX.34 11\r\nHello World\r\n");
        let ServerOp::Msg(m) = op else { panic!() };
        assert_eq!(
            (m.reply, m.payload),
            (Some("INBOX.34"), &b"Hello World"[..])
        );

        let buf = b"HMSG FOO.BAR 9 INBOX.69 34 45\r\nNATS/1.0\r\nFoodGroup: vegetable\r\n\r\nHello World\r\n";
        let (op, n) = one(buf);
        assert_eq!(n, buf.len());
        let ServerOp::Msg(m) = op else { panic!() };
        assert_eq!(m.subject, "FOO.BAR");
        assert_eq!(m.sid, 9);
        assert_eq!(m.reply, Some("INBOX.69"));
        assert_eq!(m.payload, b"Hello World");
        let h = Headers::parse(m.headers.unwrap()).unwrap();
        assert_eq!(h.get("FoodGroup"), Some("vegetable"));
    }

    #[test]
    fn control_ops_parse_case_insensitively() {
        assert_eq!(one(b"PING\r\n"), (ServerOp::Ping, 6));
        assert_eq!(one(b"pong\r\n"), (ServerOp::Pong, 6));
        assert_eq!(one(b"+OK\r\n"), (ServerOp::Ok, 5));
        assert_eq!(
            one(b"-ERR 'Authorization Violation'\r\n"),
            (ServerOp::Err("Authorization Violation"), 32)
        );
        let info = br#"INFO {"server_id":"Zk0GQ3JBSrg3oyxCRRlE09","version":"1.2.0","proto":1,"go":"go1.10.3","host":"0.0.0.0","port":4222,"max_payload":1048576,"client_id":2392}"#;
        let mut buf = info.to_vec();
        buf.extend_from_slice(b"\r\n");
        let (op, n) = one(&buf);
        assert_eq!(n, buf.len());
        assert_eq!(op, ServerOp::Info(std::str::from_utf8(&info[5..]).unwrap()));
    }

    #[test]
    fn multiple_spaces_and_tabs_separate_fields() {
        let (op, _) = one(b"MSG  FOO\t 7   3\r\nabc\r\n");
        let ServerOp::Msg(m) = op else { panic!() };
        assert_eq!((m.subject, m.sid, m.payload), ("FOO", 7, &b"abc"[..]));
    }

    /// Every server op of the spec, fed split at every byte position: the
    /// first piece never yields an op that differs from the whole.
    #[test]
    fn every_split_position_gives_the_same_ops() {
        let stream: &[u8] = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\nMSG FOO.BAR 9 11\r\nHello World\r\nMSG FOO.BAR 9 INBOX.34 11\r\nHello World\r\nHMSG FOO.BAR 9 INBOX.69 34 45\r\nNATS/1.0\r\nFoodGroup: vegetable\r\n\r\nHello World\r\nHMSG NOTIFY 5 22 22\r\nNATS/1.0\r\nBar: Baz\r\n\r\n\r\nMSG NOTIFY 5 0\r\n\r\nPING\r\nPONG\r\n+OK\r\n-ERR 'Stale Connection'\r\n";
        let whole = parse_all(stream);
        assert_eq!(whole.len(), 10);
        for split in 0..=stream.len() {
            // Feed like a socket: the first piece, then the rest appended.
            let mut pending = Vec::new();
            let mut ops = Vec::new();
            for piece in [&stream[..split], &stream[split..]] {
                pending.extend_from_slice(piece);
                let mut at = 0;
                while let Some((op, n)) =
                    parse_server_op(&pending[at..], &Limits::default()).unwrap()
                {
                    ops.push(format!("{op:?}"));
                    at += n;
                }
                pending.drain(..at);
            }
            assert!(pending.is_empty(), "split {split}: bytes left");
            assert_eq!(ops, whole, "split {split}");
        }
    }

    fn parse_all(mut buf: &[u8]) -> Vec<String> {
        let mut ops = Vec::new();
        while let Some((op, n)) = parse_server_op(buf, &Limits::default()).unwrap() {
            ops.push(format!("{op:?}"));
            buf = &buf[n..];
        }
        assert!(buf.is_empty());
        ops
    }

    #[test]
    fn every_prefix_is_incomplete_not_an_error() {
        let msg = b"HMSG FOO.BAR 9 INBOX.69 34 45\r\nNATS/1.0\r\nFoodGroup: vegetable\r\n\r\nHello World\r\n";
        for end in 0..msg.len() {
            assert_eq!(
                parse_server_op(&msg[..end], &Limits::default()),
                Ok(None),
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn limits_are_enforced_before_the_body() {
        let limits = Limits {
            max_control_line: 16,
            max_payload: 10,
        };
        assert_eq!(
            parse_server_op(b"MSG FOO 1 11\r\n", &limits),
            Err(WireError::PayloadTooLarge)
        );
        assert_eq!(
            parse_server_op(b"HMSG FOO 1 5 11\r\n", &limits),
            Err(WireError::PayloadTooLarge)
        );
        assert_eq!(
            parse_server_op(b"MSG FOOBARBAZQUX 1 1\r\n", &limits),
            Err(WireError::ControlLineTooLong)
        );
        // 16 bytes of line and its CR LF fit; a 17th byte without them does not.
        assert_eq!(
            parse_server_op(b"MSG FOO 1 10\r\n0123456789\r\n", &limits),
            Ok(Some((
                ServerOp::Msg(MsgView {
                    subject: "FOO",
                    sid: 1,
                    reply: None,
                    headers: None,
                    payload: b"0123456789"
                }),
                26
            )))
        );
        assert_eq!(
            parse_server_op(b"-ERR 'abcdefghi'\r\n", &limits)
                .unwrap()
                .unwrap()
                .1,
            18
        );
        assert_eq!(parse_server_op(b"-ERR 'abcdefghij", &limits), Ok(None));
        assert_eq!(parse_server_op(b"-ERR 'abcdefghij'", &limits), Ok(None));
        assert_eq!(
            parse_server_op(b"-ERR 'abcdefghij'x", &limits),
            Err(WireError::ControlLineTooLong)
        );
        assert_eq!(
            parse_server_op(b"-ERR 'abcdefghij'\r\n", &limits),
            Err(WireError::ControlLineTooLong)
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        let cases: &[(&[u8], WireError)] = &[
            (b"PUB FOO 1\r\n", WireError::UnknownOperation),
            (b"XYZ\r\n", WireError::UnknownOperation),
            (b"PING\n", WireError::BareLineFeed),
            (b"\n", WireError::BareLineFeed),
            (b"PING extra\r\n", WireError::BadFields),
            (b"MSG FOO 1\r\n", WireError::BadFields),
            (b"MSG FOO x 1\r\n", WireError::BadFields),
            (b"MSG FOO 1 -1\r\n", WireError::BadFields),
            (b"MSG FOO 1 a b 1\r\n", WireError::BadFields),
            (b"MSG FOO 1 99999999999999999999\r\n", WireError::BadFields),
            (b"HMSG FOO 1 5\r\n", WireError::BadFields),
            (b"HMSG FOO 1 6 5\r\n", WireError::HeaderLongerThanTotal),
            (b"MSG FOO 1 3\r\nabcd\r\n", WireError::MissingBodyEnd),
            (
                b"HMSG FOO 1 12 12\r\nHTTP/1.0\r\n\r\n\r\n",
                WireError::BadHeaders(HeaderError::BadVersion),
            ),
            (
                b"HMSG FOO 1 12 12\r\nNATS/1.0xx\r\n\r\n",
                WireError::BadHeaders(HeaderError::Malformed),
            ),
            (b"INFO\r\n", WireError::BadFields),
            (b"MSG \xff 1 0\r\n\r\n", WireError::NotUtf8),
        ];
        for (input, error) in cases {
            assert_eq!(
                parse_server_op(input, &Limits::default()),
                Err(*error),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn client_ops_match_the_spec_bytes() {
        let mut out = Vec::new();
        encode_pub(&mut out, "FOO", None, b"Hello NATS!");
        assert_eq!(out, b"PUB FOO 11\r\nHello NATS!\r\n");
        out.clear();
        encode_pub(&mut out, "FRONT.DOOR", Some("INBOX.22"), b"Knock Knock");
        assert_eq!(out, b"PUB FRONT.DOOR INBOX.22 11\r\nKnock Knock\r\n");
        out.clear();
        encode_pub(&mut out, "NOTIFY", None, b"");
        assert_eq!(out, b"PUB NOTIFY 0\r\n\r\n");

        let mut h = Headers::new();
        h.append("Bar", "Baz").unwrap();
        out.clear();
        encode_hpub(&mut out, "FOO", None, &h, b"Hello NATS!");
        assert_eq!(
            out,
            b"HPUB FOO 22 33\r\nNATS/1.0\r\nBar: Baz\r\n\r\nHello NATS!\r\n"
        );
        out.clear();
        encode_hpub(&mut out, "NOTIFY", None, &h, b"");
        assert_eq!(
            out,
            b"HPUB NOTIFY 22 22\r\nNATS/1.0\r\nBar: Baz\r\n\r\n\r\n"
        );
        let mut h = Headers::new();
        h.append("BREAKFAST", "donut").unwrap();
        h.append("LUNCH", "burger").unwrap();
        out.clear();
        encode_hpub(&mut out, "FRONT.DOOR", Some("INBOX.22"), &h, b"Knock Knock");
        assert_eq!(
            out,
            &b"HPUB FRONT.DOOR INBOX.22 45 56\r\nNATS/1.0\r\nBREAKFAST: donut\r\nLUNCH: burger\r\n\r\nKnock Knock\r\n"[..]
        );
        let mut h = Headers::new();
        h.append("BREAKFAST", "donut").unwrap();
        h.append("BREAKFAST", "eggs").unwrap();
        out.clear();
        encode_hpub(&mut out, "MORNING.MENU", None, &h, b"Yum!");
        assert_eq!(
            out,
            &b"HPUB MORNING.MENU 47 51\r\nNATS/1.0\r\nBREAKFAST: donut\r\nBREAKFAST: eggs\r\n\r\nYum!\r\n"[..]
        );

        out.clear();
        encode_sub(&mut out, "FOO", None, 1);
        encode_sub(&mut out, "BAR", Some("G1"), 44);
        encode_unsub(&mut out, 1, None);
        encode_unsub(&mut out, 1, Some(5));
        encode_ping(&mut out);
        encode_pong(&mut out);
        assert_eq!(
            out,
            b"SUB FOO 1\r\nSUB BAR G1 44\r\nUNSUB 1\r\nUNSUB 1 5\r\nPING\r\nPONG\r\n"
        );
    }

    #[test]
    fn subjects_are_checked() {
        for ok in ["FOO", "foo.bar", "FOO.BAR.BAZ", "a-b_c.$d"] {
            assert_eq!(check_subject(ok, false), Ok(()), "{ok}");
        }
        for ok in ["foo.*.baz", "foo.>", ">", "*"] {
            assert_eq!(check_subject(ok, true), Ok(()), "{ok}");
            assert_eq!(check_subject(ok, false), Err(SubjectError::BadWildcard));
        }
        assert_eq!(check_subject("", true), Err(SubjectError::EmptyToken));
        assert_eq!(
            check_subject("foo..bar", true),
            Err(SubjectError::EmptyToken)
        );
        assert_eq!(check_subject("foo.", true), Err(SubjectError::EmptyToken));
        assert_eq!(
            check_subject("FOO. BAR", true),
            Err(SubjectError::Whitespace)
        );
        assert_eq!(check_subject("foo>", true), Err(SubjectError::BadWildcard));
        assert_eq!(
            check_subject("f*o.b*r", true),
            Err(SubjectError::BadWildcard)
        );
        assert_eq!(
            check_subject("foo.>.bar", true),
            Err(SubjectError::BadWildcard)
        );
        assert_eq!(check_queue_group("G1"), Ok(()));
        assert_eq!(check_queue_group(""), Err(SubjectError::EmptyToken));
        assert_eq!(check_queue_group("a b"), Err(SubjectError::Whitespace));
    }

    /// Pseudo-random bytes, and mutations of valid ops: never a panic, and
    /// a parsed op never claims more bytes than were given.
    #[test]
    fn random_input_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: &[&[u8]] = &[
            b"MSG FOO.BAR 9 INBOX.34 11\r\nHello World\r\n",
            b"HMSG FOO.BAR 9 INBOX.69 34 45\r\nNATS/1.0\r\nFoodGroup: vegetable\r\n\r\nHello World\r\n",
            b"INFO {}\r\nPING\r\n-ERR 'x'\r\n",
        ];
        let limits = Limits {
            max_control_line: 64,
            max_payload: 64,
        };
        for round in 0..20_000 {
            let mut buf: Vec<u8> = if round % 2 == 0 {
                (0..next() % 80).map(|_| next() as u8).collect()
            } else {
                seeds[round % seeds.len()].to_vec()
            };
            for _ in 0..next() % 4 {
                if buf.is_empty() {
                    break;
                }
                let i = (next() as usize) % buf.len();
                buf[i] = b"\r\n 0123456789MSGH-+*>"[(next() % 20) as usize];
            }
            let mut rest = &buf[..];
            while let Ok(Some((_, n))) = parse_server_op(rest, &limits) {
                assert!(n > 0 && n <= rest.len());
                rest = &rest[n..];
            }
        }
    }
}
