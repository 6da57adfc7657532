//! The admin endpoint's HTTP/1.1 request head parser: the bytes a client
//! sent so far in, and a method and path, "not yet", or the reason the
//! request is refused out. Pure (no I/O, no allocation), so that it is
//! tested byte by byte and fuzzed against a reference model
//! (`fuzz/fuzz_targets/admin_request.rs`).
//!
//! It takes what a scraper sends and nothing looser: a request line
//! `METHOD SP /target SP HTTP/1.x`, header fields `name: value`, every line
//! ended by CRLF, an empty line, all within [`MAX_HEAD`] bytes. A lone CR or
//! LF (header injection, request smuggling), a control character, bytes that
//! are not UTF-8, a folded header line, or a target that is not a path is
//! refused, naming why.
//!
//! The parser is built to be called again on a growing buffer: lines are
//! judged as soon as they are whole, so a bad request is refused without
//! waiting for its end, and a decision once made (a request or an error)
//! stays the same however many bytes follow it.

/// Largest request head taken, its final empty line included.
pub const MAX_HEAD: usize = 8192;

/// The methods the endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`: the answer with its body.
    Get,
    /// `HEAD`: the same answer without its body.
    Head,
}

/// A whole, valid request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// `GET` or `HEAD`.
    pub method: Method,
    /// The target up to its `?`: the query is not used.
    pub path: &'a str,
    /// Bytes of the head, its empty line included; whatever follows is
    /// ignored.
    pub head_len: usize,
}

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// No empty line within the first [`MAX_HEAD`] bytes.
    TooLarge,
    /// A CR not followed by LF, or an LF not preceded by CR.
    BareLineBreak,
    /// A control character (a tab is allowed in field values only).
    ControlCharacter,
    /// A line that is not UTF-8.
    NotUtf8,
    /// The first line is not `METHOD SP TARGET SP VERSION`.
    BadRequestLine,
    /// The method is not an HTTP token.
    BadMethod,
    /// The target is not a path (`/...`) of visible ASCII characters.
    BadTarget,
    /// The version is neither `HTTP/1.1` nor `HTTP/1.0`.
    BadVersion,
    /// A header line is not `name: value`, or is folded onto the previous one.
    BadHeader,
    /// A valid method other than `GET` and `HEAD`.
    MethodNotAllowed,
}

impl RequestError {
    /// The status line's code and reason for this error.
    pub fn status(self) -> &'static str {
        match self {
            RequestError::TooLarge => "431 Request Header Fields Too Large",
            RequestError::MethodNotAllowed => "405 Method Not Allowed",
            RequestError::BadVersion => "505 HTTP Version Not Supported",
            _ => "400 Bad Request",
        }
    }

    /// Why, in words, for the answer's body.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestError::TooLarge => "request head too large",
            RequestError::BareLineBreak => "a CR or LF outside a CRLF line end",
            RequestError::ControlCharacter => "a control character",
            RequestError::NotUtf8 => "not UTF-8",
            RequestError::BadRequestLine => "the request line is not `METHOD /path HTTP/1.1`",
            RequestError::BadMethod => "the method is not a token",
            RequestError::BadTarget => "the target is not a path",
            RequestError::BadVersion => "only HTTP/1.1 and HTTP/1.0",
            RequestError::BadHeader => "a header line is not `name: value`",
            RequestError::MethodNotAllowed => "only GET and HEAD",
        }
    }
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it may
/// still become a valid head, `Ok(Some(request))` once it is whole, or the
/// first thing wrong with it, judged line by line in order.
pub fn parse(buf: &[u8]) -> Result<Option<Request<'_>>, RequestError> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let mut start = 0;
    let mut first: Option<(Method, &str)> = None;
    while let Some(len) = find_crlf(&window[start..]) {
        let line = &window[start..start + len];
        start += len + 2;
        match first {
            None => first = Some(request_line(line)?),
            Some((method, path)) if line.is_empty() => {
                return Ok(Some(Request {
                    method,
                    path,
                    head_len: start,
                }))
            }
            Some(_) => header_line(line)?,
        }
    }
    // The unfinished last line: up to a final CR (which a LF may still
    // follow), a CR, a LF or a control character makes it bad whatever
    // comes next, so it is refused now (binary, such as a TLS ClientHello,
    // at its first byte).
    let tail = &window[start..];
    let tail = tail.strip_suffix(b"\r").unwrap_or(tail);
    if let Some(e) = first_bad_byte(tail, first.is_some()) {
        return Err(e);
    }
    if buf.len() >= MAX_HEAD {
        return Err(RequestError::TooLarge);
    }
    Ok(None)
}

/// Where the first CRLF starts.
fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// Checks what every line must be: no lone CR or LF, no control character
/// but (where `tab_ok`) a tab, UTF-8.
fn line_text(line: &[u8], tab_ok: bool) -> Result<&str, RequestError> {
    if let Some(e) = first_bad_byte(line, tab_ok) {
        return Err(e);
    }
    std::str::from_utf8(line).map_err(|_| RequestError::NotUtf8)
}

/// What is wrong with the first byte of `line` that no line may hold: a CR
/// or LF (the line's own CRLF is not in `line`), or a control character (a
/// tab excepted where `tab_ok`). The first such byte decides, so that the
/// verdict on a line does not change as more of it arrives.
fn first_bad_byte(line: &[u8], tab_ok: bool) -> Option<RequestError> {
    line.iter().find_map(|&b| match b {
        b'\r' | b'\n' => Some(RequestError::BareLineBreak),
        b'\t' if tab_ok => None,
        0..=0x1f | 0x7f => Some(RequestError::ControlCharacter),
        _ => None,
    })
}

/// RFC 9110 `tchar`: what methods and field names are made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn request_line(line: &[u8]) -> Result<(Method, &str), RequestError> {
    let text = line_text(line, false)?;
    let mut parts = text.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::BadRequestLine);
    };
    if method.is_empty() || target.is_empty() || version.is_empty() {
        return Err(RequestError::BadRequestLine);
    }
    if !method.bytes().all(is_tchar) {
        return Err(RequestError::BadMethod);
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RequestError::BadTarget);
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(RequestError::BadVersion);
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => return Err(RequestError::MethodNotAllowed),
    };
    let path = target.split('?').next().unwrap_or(target);
    Ok((method, path))
}

fn header_line(line: &[u8]) -> Result<(), RequestError> {
    let text = line_text(line, true)?;
    // Obsolete line folding continues a field on a line that starts with
    // white space; RFC 9112 lets a server refuse it.
    if text.starts_with([' ', '\t']) {
        return Err(RequestError::BadHeader);
    }
    match text.split_once(':') {
        Some((name, _)) if !name.is_empty() && name.bytes().all(is_tchar) => Ok(()),
        _ => Err(RequestError::BadHeader),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, path: &str, head_len: usize) -> Request<'_> {
        Request {
            method,
            path,
            head_len,
        }
    }

    #[test]
    fn valid_heads() {
        let get = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9900\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            parse(get),
            Ok(Some(req(Method::Get, "/metrics", get.len())))
        );
        // A body or a pipelined request after the head is not read.
        let mut more = get.to_vec();
        more.extend_from_slice(b"GET /status HTTP/1.1\r\n\r\n");
        assert_eq!(
            parse(&more),
            Ok(Some(req(Method::Get, "/metrics", get.len())))
        );
        let head = b"HEAD /status?x=1&y=%20 HTTP/1.0\r\n\r\n";
        assert_eq!(
            parse(head),
            Ok(Some(req(Method::Head, "/status", head.len())))
        );
        // Tabs, obs-text as UTF-8, an empty value, no space after the colon.
        let fields = "GET / HTTP/1.1\r\nUser-Agent:\tPrometheus/2.45 é\r\nX-Empty:\r\nA:b\r\n\r\n";
        assert_eq!(
            parse(fields.as_bytes()),
            Ok(Some(req(Method::Get, "/", fields.len())))
        );
    }

    #[test]
    fn truncated_heads_wait_for_more() {
        let whole = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        for n in 0..whole.len() {
            assert_eq!(parse(&whole[..n]), Ok(None), "{n} bytes");
        }
        assert_eq!(
            parse(whole),
            Ok(Some(req(Method::Get, "/metrics", whole.len())))
        );
    }

    #[test]
    fn oversized_heads() {
        // The empty line ends exactly at the limit: taken.
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.resize(MAX_HEAD - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head.len(), MAX_HEAD);
        assert_eq!(parse(&head), Ok(Some(req(Method::Get, "/", MAX_HEAD))));
        // One byte more in the field: refused, with or without its end.
        let mut over = head[..MAX_HEAD - 4].to_vec();
        over.extend_from_slice(b"a\r\n\r\n");
        assert_eq!(over.len(), MAX_HEAD + 1);
        assert_eq!(parse(&over[..MAX_HEAD - 1]), Ok(None));
        assert_eq!(parse(&over[..MAX_HEAD]), Err(RequestError::TooLarge));
        assert_eq!(parse(&over), Err(RequestError::TooLarge));
        assert_eq!(parse(&[b'a'; MAX_HEAD]), Err(RequestError::TooLarge));
        // Many short header lines add up the same way.
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        while many.len() < MAX_HEAD {
            many.extend_from_slice(b"A: b\r\n");
        }
        assert_eq!(parse(&many), Err(RequestError::TooLarge));
    }

    #[test]
    fn bad_methods_and_request_lines() {
        let cases: [(&[u8], RequestError); 10] = [
            (
                b"POST /metrics HTTP/1.1\r\n",
                RequestError::MethodNotAllowed,
            ),
            (b"get /metrics HTTP/1.1\r\n", RequestError::MethodNotAllowed),
            (b"G(T /metrics HTTP/1.1\r\n", RequestError::BadMethod),
            (b"GET\r\n", RequestError::BadRequestLine),
            (b"GET  /metrics HTTP/1.1\r\n", RequestError::BadRequestLine),
            (b"GET /metrics HTTP/1.1 \r\n", RequestError::BadRequestLine),
            (b"\r\nGET / HTTP/1.1\r\n", RequestError::BadRequestLine),
            (b"GET metrics HTTP/1.1\r\n", RequestError::BadTarget),
            (
                b"GET http://x/metrics HTTP/1.1\r\n",
                RequestError::BadTarget,
            ),
            (
                b"GET\t/metrics HTTP/1.1\r\n",
                RequestError::ControlCharacter,
            ),
        ];
        for (bytes, e) in cases {
            assert_eq!(parse(bytes), Err(e), "{}", String::from_utf8_lossy(bytes));
        }
        // A bad version is named before a method that is not served.
        assert_eq!(parse(b"POST / HTTP/2.0\r\n"), Err(RequestError::BadVersion));
    }

    #[test]
    fn bad_versions() {
        for v in ["HTTP/2", "HTTP/1.2", "http/1.1", "HTTP/1.1x", "HTTP/0.9"] {
            let line = format!("GET / {v}\r\n\r\n");
            assert_eq!(parse(line.as_bytes()), Err(RequestError::BadVersion), "{v}");
        }
    }

    #[test]
    fn header_injection_is_refused_as_soon_as_it_shows() {
        let cases: [(&[u8], RequestError); 9] = [
            // A lone LF ends no line: refused before the head ends.
            (b"GET / HTTP/1.1\nHost: x\n\n", RequestError::BareLineBreak),
            (
                b"GET / HTTP/1.1\r\nHost: x\nX-Injected: 1\r\n\r\n",
                RequestError::BareLineBreak,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\rX: 1\r\n\r\n",
                RequestError::BareLineBreak,
            ),
            (b"GET /a\rb HTTP/1.1\r\n\r\n", RequestError::BareLineBreak),
            (
                b"GET / HTTP/1.1\r\nHost: x\0\r\n\r\n",
                RequestError::ControlCharacter,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: \x1b[31m\r\n\r\n",
                RequestError::ControlCharacter,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
                RequestError::BadHeader,
            ),
            (
                b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
                RequestError::BadHeader,
            ),
            (
                b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
                RequestError::BadHeader,
            ),
        ];
        for (bytes, e) in cases {
            assert_eq!(parse(bytes), Err(e), "{}", String::from_utf8_lossy(bytes));
        }
        assert_eq!(parse(b"GET / HTTP/1.1\n"), Err(RequestError::BareLineBreak));
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost\r"), Ok(None));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost\rx"),
            Err(RequestError::BareLineBreak)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n:x\r\n"),
            Err(RequestError::BadHeader)
        );
    }

    #[test]
    fn non_utf8_is_refused() {
        assert_eq!(
            parse(b"GET /\xff HTTP/1.1\r\n\r\n"),
            Err(RequestError::NotUtf8)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nX: \xc3\x28\r\n\r\n"),
            Err(RequestError::NotUtf8)
        );
        // UTF-8 is fine in a value, not in the target.
        assert_eq!(
            parse("GET /é HTTP/1.1\r\n\r\n".as_bytes()),
            Err(RequestError::BadTarget)
        );
        // A sequence cut by the end of what arrived is judged when its line ends.
        assert_eq!(parse(b"GET / HTTP/1.1\r\nX: \xc3"), Ok(None));
    }

    #[test]
    fn a_decision_stays_whatever_follows() {
        let inputs: [&[u8]; 4] = [
            b"GET /metrics HTTP/1.1\r\n\r\n",
            b"PUT / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\nHost: x\n",
            b"GET / HTTP/1.1\r\nX: \x01",
        ];
        for input in inputs {
            let first = parse(input);
            for extra in [&b"\r\n\r\n"[..], b"\n", b"\xff", b"GET / HTTP/1.1\r\n\r\n"] {
                let mut longer = input.to_vec();
                longer.extend_from_slice(extra);
                match first {
                    Ok(None) => {}
                    _ => assert_eq!(parse(&longer), first),
                }
            }
        }
        // A control character is refused before its line ends; a tab only
        // in the request line.
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nX: \x01"),
            Err(RequestError::ControlCharacter)
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\nX:\t"), Ok(None));
        assert_eq!(parse(b"GET\t"), Err(RequestError::ControlCharacter));
        // So is a TLS ClientHello sent to the plain endpoint.
        assert_eq!(
            parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Err(RequestError::ControlCharacter)
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(
            RequestError::TooLarge.status(),
            "431 Request Header Fields Too Large"
        );
        assert_eq!(
            RequestError::MethodNotAllowed.status(),
            "405 Method Not Allowed"
        );
        assert_eq!(
            RequestError::BadVersion.status(),
            "505 HTTP Version Not Supported"
        );
        assert_eq!(RequestError::BadHeader.status(), "400 Bad Request");
    }
}
