//! NATS message headers: the `NATS/1.0` block of `HPUB` and `HMSG`.
//!
//! A header block is a version line, `NATS/1.0`, optionally followed by a
//! status code and a description (`NATS/1.0 503`), then one `Name: Value` line
//! per entry, then an empty line; every line ends with CR LF. A name may
//! appear on several lines (several values). Names keep their case and are
//! compared exactly, as the NATS server does.
//!
//! The bridge stamps its instance id under [`ORIGIN_HEADER`] so that it can
//! recognise its own messages when they come back from NATS.

use std::fmt;

/// The header a ringport NATS bridge stamps with its instance id, so that a
/// message it exported and receives again is not imported a second time.
pub const ORIGIN_HEADER: &str = "Ringport-Origin";

/// The version line every header block starts with.
pub const VERSION_LINE: &[u8] = b"NATS/1.0";

/// Why a header name, value or block is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// A name is empty, or holds a byte other than printable ASCII, or `:`.
    BadName,
    /// A value holds CR or LF (it would end the line early).
    BadValue,
    /// A block does not start with `NATS/1.0`.
    BadVersion,
    /// A block's status is not three digits.
    BadStatus,
    /// A line has no `:`, or the block does not end with an empty line.
    Malformed,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeaderError::BadName => {
                "a header name must be non-empty printable ASCII without ':' or spaces"
            }
            HeaderError::BadValue => "a header value must not contain CR or LF",
            HeaderError::BadVersion => "a header block must start with NATS/1.0",
            HeaderError::BadStatus => "a header status must be three digits",
            HeaderError::Malformed => "a header line lacks ':' or the block lacks its empty line",
        })
    }
}

impl std::error::Error for HeaderError {}

/// The headers of one message: an optional status and ordered entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    status: Option<u16>,
    description: String,
    entries: Vec<(String, String)>,
}

fn check_name(name: &str) -> Result<(), HeaderError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(HeaderError::BadName);
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), HeaderError> {
    if value.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(HeaderError::BadValue);
    }
    Ok(())
}

impl Headers {
    /// No status, no entries.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// The status code of the version line (`503` for "no responders"), if any.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The text after the status code (empty when there is none).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Adds `value` under `name`, after the values it already has.
    pub fn append(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        check_name(name)?;
        check_value(value)?;
        self.entries.push((name.to_owned(), value.to_owned()));
        Ok(())
    }

    /// Sets `name` to `value` alone, replacing what it had.
    pub fn insert(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        check_name(name)?;
        check_value(value)?;
        self.remove(name);
        self.entries.push((name.to_owned(), value.to_owned()));
        Ok(())
    }

    /// Removes every value of `name`; returns how many there were.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| n != name);
        before - self.entries.len()
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every entry, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many entries (values) there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The length of [`Headers::encode`]'s output, the final empty line
    /// included (the `#header bytes` of `HPUB`).
    pub fn encoded_len(&self) -> usize {
        let status = match self.status {
            Some(_) if self.description.is_empty() => 4,
            Some(_) => 5 + self.description.len(),
            None => 0,
        };
        VERSION_LINE.len()
            + status
            + 2
            + self
                .entries
                .iter()
                .map(|(n, v)| n.len() + 2 + v.len() + 2)
                .sum::<usize>()
            + 2
    }

    /// Appends the block to `out`: version line, entries, empty line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(VERSION_LINE);
        if let Some(status) = self.status {
            out.extend_from_slice(format!(" {status:03}").as_bytes());
            if !self.description.is_empty() {
                out.push(b' ');
                out.extend_from_slice(self.description.as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.entries {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Parses a whole block, as `HMSG` delivers it (its final empty line
    /// included). Values lose the spaces around them; names keep their case.
    pub fn parse(block: &[u8]) -> Result<Headers, HeaderError> {
        let text = std::str::from_utf8(block).map_err(|_| HeaderError::Malformed)?;
        let body = text
            .strip_suffix("\r\n\r\n")
            .ok_or(HeaderError::Malformed)?;
        let mut lines = body.split("\r\n");
        let first = lines.next().unwrap_or("");
        let rest = first
            .strip_prefix("NATS/1.0")
            .ok_or(HeaderError::BadVersion)?;
        let mut headers = Headers::new();
        let rest = rest.trim_start_matches([' ', '\t']);
        if !rest.is_empty() {
            let (code, description) = match rest.find([' ', '\t']) {
                Some(i) => (&rest[..i], rest[i..].trim()),
                None => (rest, ""),
            };
            if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeaderError::BadStatus);
            }
            headers.status = code.parse().ok();
            headers.description = description.to_owned();
        }
        for line in lines {
            if line.is_empty() {
                // An empty line before the end: the block ended early.
                return Err(HeaderError::Malformed);
            }
            let (name, value) = line.split_once(':').ok_or(HeaderError::Malformed)?;
            check_name(name)?;
            headers
                .entries
                .push((name.to_owned(), value.trim_matches([' ', '\t']).to_owned()));
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_spec_example() {
        let mut h = Headers::new();
        h.append("Bar", "Baz").unwrap();
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(out, b"NATS/1.0\r\nBar: Baz\r\n\r\n");
        assert_eq!(h.encoded_len(), 22);
    }

    #[test]
    fn multi_value_headers_keep_order() {
        let block = b"NATS/1.0\r\nBREAKFAST: donut\r\nBREAKFAST: eggs\r\n\r\n";
        let h = Headers::parse(block).unwrap();
        assert_eq!(
            h.get_all("BREAKFAST").collect::<Vec<_>>(),
            ["donut", "eggs"]
        );
        assert_eq!(h.get("breakfast"), None, "names are compared exactly");
        assert_eq!(h.encoded_len(), block.len());
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(out, block);
    }

    #[test]
    fn status_lines_are_read() {
        let h = Headers::parse(b"NATS/1.0 503\r\n\r\n").unwrap();
        assert_eq!((h.status(), h.description(), h.len()), (Some(503), "", 0));
        let h = Headers::parse(b"NATS/1.0 408 Request Timeout\r\nA: b\r\n\r\n").unwrap();
        assert_eq!(h.status(), Some(408));
        assert_eq!(h.description(), "Request Timeout");
        assert_eq!(h.get("A"), Some("b"));
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(out, b"NATS/1.0 408 Request Timeout\r\nA: b\r\n\r\n");
        assert_eq!(h.encoded_len(), out.len());
    }

    #[test]
    fn insert_replaces_and_remove_counts() {
        let mut h = Headers::new();
        h.append(ORIGIN_HEADER, "a").unwrap();
        h.append(ORIGIN_HEADER, "b").unwrap();
        h.insert(ORIGIN_HEADER, "c").unwrap();
        assert_eq!(h.get_all(ORIGIN_HEADER).collect::<Vec<_>>(), ["c"]);
        assert_eq!(h.remove(ORIGIN_HEADER), 1);
        assert!(h.is_empty());
    }

    #[test]
    fn bad_names_values_and_blocks_are_refused() {
        let mut h = Headers::new();
        assert_eq!(h.append("", "x"), Err(HeaderError::BadName));
        assert_eq!(h.append("a b", "x"), Err(HeaderError::BadName));
        assert_eq!(h.append("a:b", "x"), Err(HeaderError::BadName));
        assert_eq!(h.append("a", "x\r\ny: z"), Err(HeaderError::BadValue));
        assert_eq!(
            Headers::parse(b"HTTP/1.1\r\n\r\n"),
            Err(HeaderError::BadVersion)
        );
        assert_eq!(
            Headers::parse(b"NATS/1.0\r\nA: b\r\n"),
            Err(HeaderError::Malformed)
        );
        assert_eq!(
            Headers::parse(b"NATS/1.0\r\nno colon\r\n\r\n"),
            Err(HeaderError::Malformed)
        );
        assert_eq!(
            Headers::parse(b"NATS/1.0 50x\r\n\r\n"),
            Err(HeaderError::BadStatus)
        );
        assert_eq!(
            Headers::parse(b"NATS/1.0\r\n\r\nA: b\r\n\r\n"),
            Err(HeaderError::Malformed)
        );
    }
}
