//! The admin endpoint's request head parser
//! (`ringport_tools::admin_request::parse`) against a reference model.
//!
//! The model restates the parser's documented rules over the whole input at
//! once, written apart from it: the input is cut at every LF, pieces are
//! glued back into lines until one ends with CR, and each line is judged
//! with `char` predicates. On top of agreeing with it, the parser must keep
//! the promises the server relies on when it calls it again on a growing
//! buffer: a decision never changes when bytes are added, "not yet" only
//! below the size limit, a request's head ends where it says with an empty
//! line, and its path is a clean `/...` taken from the request line.

use ringport_tools::admin_request::{parse, Method, Request, RequestError, MAX_HEAD};

/// What the model expects: the method, path and head length of a request,
/// `None` for "not yet", or the error.
type Outcome = Result<Option<(Method, String, usize)>, RequestError>;

fn outcome(r: Result<Option<Request<'_>>, RequestError>) -> Outcome {
    r.map(|o| o.map(|r| (r.method, r.path.to_owned(), r.head_len)))
}

/// RFC 9110 `tchar`.
fn token_char(c: char) -> bool {
    const SPECIALS: &str = "!#$%&'*+-.^_`|~";
    matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9') || SPECIALS.contains(c)
}

/// The byte rules, in order of position: a CR or LF inside a line is a
/// bare line break, any other control character but an allowed tab is
/// refused.
fn judge_bytes(line: &[u8], tab_ok: bool) -> Result<(), RequestError> {
    for &b in line {
        let c = char::from(b);
        if c == '\r' || c == '\n' {
            return Err(RequestError::BareLineBreak);
        }
        if c.is_ascii_control() && !(tab_ok && c == '\t') {
            return Err(RequestError::ControlCharacter);
        }
    }
    Ok(())
}

/// Checks shared by every whole line: `Ok(text)` or the line's error.
fn judge_text(line: &[u8], tab_ok: bool) -> Result<&str, RequestError> {
    judge_bytes(line, tab_ok)?;
    std::str::from_utf8(line).map_err(|_| RequestError::NotUtf8)
}

fn judge_request_line(line: &[u8]) -> Result<(Method, String), RequestError> {
    let text = judge_text(line, false)?;
    let parts: Vec<&str> = text.split(' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(RequestError::BadRequestLine);
    }
    let (method, target, version) = (parts[0], parts[1], parts[2]);
    if !method.chars().all(token_char) {
        return Err(RequestError::BadMethod);
    }
    let visible = |c: char| ('!'..='~').contains(&c);
    if !target.starts_with('/') || !target.chars().all(visible) {
        return Err(RequestError::BadTarget);
    }
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(RequestError::BadVersion);
    }
    let m = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => return Err(RequestError::MethodNotAllowed),
    };
    let path = match target.find('?') {
        Some(q) => &target[..q],
        None => target,
    };
    Ok((m, path.to_owned()))
}

fn judge_header_line(line: &[u8]) -> Result<(), RequestError> {
    let text = judge_text(line, true)?;
    if text.starts_with(' ') || text.starts_with('\t') {
        return Err(RequestError::BadHeader);
    }
    let Some(colon) = text.find(':') else {
        return Err(RequestError::BadHeader);
    };
    let name = &text[..colon];
    if name.is_empty() || !name.chars().all(token_char) {
        return Err(RequestError::BadHeader);
    }
    Ok(())
}

/// The reference model.
fn model(buf: &[u8]) -> Outcome {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let mut pieces: Vec<&[u8]> = window.split(|&b| b == b'\n').collect();
    // What follows the last LF has no line end yet.
    let tail = pieces.pop().unwrap_or(&[]);
    let mut request: Option<(Method, String)> = None;
    let mut line: Vec<u8> = Vec::new();
    let mut consumed = 0;
    let mut pending_end = 0;
    for piece in pieces {
        line.extend_from_slice(piece);
        pending_end += piece.len() + 1;
        if line.last() != Some(&b'\r') {
            // A LF that ends no line: it stays inside the line.
            line.push(b'\n');
            continue;
        }
        line.pop();
        consumed += pending_end;
        pending_end = 0;
        match &request {
            None => request = Some(judge_request_line(&line)?),
            Some((m, p)) if line.is_empty() => return Ok(Some((*m, p.clone(), consumed))),
            Some(_) => judge_header_line(&line)?,
        }
        line.clear();
    }
    // The bytes after the last whole line (pieces glued so far and the
    // tail) are judged byte by byte already, but for a final CR that a LF
    // may still follow.
    line.extend_from_slice(tail);
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    judge_bytes(&line, request.is_some())?;
    if buf.len() >= MAX_HEAD {
        return Err(RequestError::TooLarge);
    }
    Ok(None)
}

/// Input: the bytes a client sent. They are also tried repeated past
/// [`MAX_HEAD`], so that the size limit is reached by inputs the fuzzer
/// keeps short.
///
/// Checks: the parser agrees with the model; a decision stays the same
/// with more bytes after it; "not yet" only below [`MAX_HEAD`]; a request's
/// head is a prefix ending with an empty line, one byte less of it is "not
/// yet", and its path is visible ASCII starting with `/`, without `?`.
///
/// # Panics
///
/// When a check fails.
pub fn admin_request(data: &[u8]) {
    check(data);
    if !data.is_empty() {
        check(&data.repeat(MAX_HEAD / data.len() + 1));
    }
}

fn check(data: &[u8]) {
    let got = parse(data);
    let expected = model(data);
    assert_eq!(outcome(got), expected, "parser and model disagree");
    match got {
        Ok(None) => assert!(data.len() < MAX_HEAD, "not yet at {} bytes", data.len()),
        Ok(Some(r)) => {
            assert!(r.head_len <= MAX_HEAD && r.head_len <= data.len());
            assert!(data[..r.head_len].ends_with(b"\r\n\r\n"));
            assert_eq!(parse(&data[..r.head_len]), Ok(Some(r)));
            assert_eq!(parse(&data[..r.head_len - 1]), Ok(None));
            assert!(r.path.starts_with('/') && !r.path.contains('?'));
            assert!(r.path.bytes().all(|b| b.is_ascii_graphic()));
            let method: &[u8] = match r.method {
                Method::Get => b"GET ",
                Method::Head => b"HEAD ",
            };
            assert!(data.starts_with(method));
            assert!(data[method.len()..].starts_with(r.path.as_bytes()));
        }
        Err(_) => {}
    }
    if got != Ok(None) {
        for extra in [&b"\r\n\r\n"[..], b"\xff\n", b"GET / HTTP/1.1\r\n\r\n"] {
            let mut longer = data.to_vec();
            longer.extend_from_slice(extra);
            assert_eq!(
                outcome(parse(&longer)),
                outcome(got),
                "changed by {extra:?}"
            );
        }
    }
    // Fed in two parts, as the server reads it: an early decision is the
    // final one.
    let half = &data[..data.len() / 2];
    let early = parse(half);
    if early != Ok(None) {
        assert_eq!(outcome(early), outcome(got), "decided early otherwise");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds in `corpus/admin_request/`, so that they run here too.
    const SEEDS: [&[u8]; 12] = [
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9900\r\nUser-Agent: Prometheus/2.45.0\r\nAccept: text/plain\r\n\r\n",
        b"HEAD /status?verbose=1 HTTP/1.0\r\n\r\n",
        b"GET /metrics HTTP/1.1\nHost: x\n\n",
        b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"GET /metrics HTTP/2.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Tab:\tv\xc3\xa9\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\rInjected: 1\r\n\r\n",
        b"GET http://x/metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHo",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ];

    #[test]
    fn the_model_says_what_the_docs_say() {
        assert_eq!(
            model(SEEDS[0]),
            Ok(Some((Method::Get, "/metrics".into(), SEEDS[0].len())))
        );
        assert_eq!(
            model(SEEDS[1]),
            Ok(Some((Method::Head, "/status".into(), SEEDS[1].len())))
        );
        assert_eq!(model(SEEDS[2]), Err(RequestError::BareLineBreak));
        assert_eq!(model(SEEDS[3]), Err(RequestError::MethodNotAllowed));
        assert_eq!(model(SEEDS[4]), Err(RequestError::BadVersion));
        assert_eq!(model(SEEDS[5]), Err(RequestError::BadHeader));
        assert_eq!(
            model(SEEDS[6]),
            Ok(Some((Method::Get, "/".into(), SEEDS[6].len())))
        );
        assert_eq!(model(SEEDS[7]), Err(RequestError::NotUtf8));
        assert_eq!(model(SEEDS[8]), Err(RequestError::BareLineBreak));
        assert_eq!(model(SEEDS[9]), Err(RequestError::BadTarget));
        assert_eq!(model(SEEDS[10]), Ok(None));
        assert_eq!(model(SEEDS[11]), Err(RequestError::ControlCharacter));
        assert_eq!(model(&[b'a'; MAX_HEAD]), Err(RequestError::TooLarge));
    }

    #[test]
    fn every_seed_is_in_the_checked_in_corpus() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/admin_request");
        let files: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        for seed in SEEDS {
            assert!(files.iter().any(|f| f == seed), "{seed:?} not in {dir:?}");
        }
    }

    #[test]
    fn harness_on_the_seeds_and_their_mutations() {
        for seed in SEEDS {
            admin_request(seed);
            for cut in 0..seed.len() {
                admin_request(&seed[..cut]);
                let mut flipped = seed.to_vec();
                flipped[cut] ^= 0x20;
                admin_request(&flipped);
            }
        }
    }

    #[test]
    fn harness_survives_pseudo_random_inputs() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Bytes drawn mostly from what request heads are made of.
        let alphabet = b"GETHAD /?:\r\n\t\x00\xc3\xa9\xffaz19-HTTP/1.0";
        for _ in 0..3000 {
            let len = (next() % 120) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            admin_request(&input);
            let mut framed = b"GET /m HTTP/1.1\r\n".to_vec();
            framed.extend_from_slice(&input);
            framed.extend_from_slice(b"\r\n\r\n");
            admin_request(&framed);
        }
    }
}
