//! The persistence snapshot: retained messages and persistent sessions as
//! one versioned, checksummed file, as Mosquitto's `persistence` keeps them.
//!
//! Pure bytes in, bytes out: [`encode_snapshot`] writes a [`Snapshot`] and
//! [`decode_snapshot`] reads one back. Writing the file (a new file, fsync,
//! rename) and choosing when (on graceful stop, every N seconds) is the
//! caller's job; `ringport_tools::mqtt_auth::write_atomically` does the
//! crash-safe write.
//!
//! # Layout (format version 1)
//!
//! All integers are big-endian.
//!
//! | offset | size | field                                                   |
//! |--------|------|---------------------------------------------------------|
//! | 0      | 8    | magic `89 52 50 4D 51 0D 0A 1A` (`\x89RPMQ\r\n\x1a`)     |
//! | 8      | 2    | format version, 1                                        |
//! | 10     | 8    | body length in bytes                                     |
//! | 18     | n    | body                                                     |
//! | 18 + n | 4    | CRC-32C of every byte before it                          |
//!
//! The magic starts with a non-ASCII byte and holds a CR LF pair and a
//! Ctrl-Z, so a file mangled by a text-mode copy is refused at once. The body
//! is `u32` count of retained records, the records, `u32` count of session
//! records, the records. Strings are a `u16` length and UTF-8; payloads and
//! properties a `u32` length, at most 268,435,455 bytes (MQTT's largest
//! packet); optional values a `0`/`1` byte before the value. The field order
//! of each record is the order of the fields of [`RetainedRecord`],
//! [`SessionRecord`], [`SubscriptionRecord`] and [`QueuedRecord`], with the
//! booleans of a record packed into one flags byte.
//!
//! # Refusing corruption
//!
//! Decoding checks, in order: the length (header and checksum present), the
//! magic, the version, that the body length matches the file length
//! (truncated or trailing bytes), the checksum, then every field's range;
//! any failure refuses the whole file with a [`PersistError`] that names
//! what is wrong. Nothing is returned in part. Counts are checked against the
//! bytes left before anything is allocated, so a corrupt count cannot make
//! the decoder reserve gigabytes.
//!
//! # Why CRC-32C
//!
//! The checksum guards against accidents (torn writes, a bad disk, a copy cut
//! short), not against someone who can write the file. A CRC detects every
//! single-bit error, every odd number of flipped bits and every burst of up
//! to 32 bits, which FNV-1a 64 promises for none (its wider output only
//! lowers the odds for random damage); the Castagnoli polynomial keeps a
//! larger minimum Hamming distance than the IEEE one over long inputs
//! (Koopman's CRC tables). The 2^-32 chance left for random damage is
//! backed by the field-by-field checks behind it. A byte-at-a-time table
//! lookup is far faster than the fsync that follows a write.

use std::fmt;

/// The first eight bytes of every snapshot.
pub const MAGIC: [u8; 8] = [0x89, b'R', b'P', b'M', b'Q', b'\r', b'\n', 0x1a];
/// The format version [`encode_snapshot`] writes and [`decode_snapshot`]
/// reads.
pub const VERSION: u16 = 1;
/// The largest payload or properties block a record may hold: MQTT's
/// largest packet (the Remaining Length limit).
pub const MAX_BLOB: usize = 268_435_455;

const HEADER_LEN: usize = 8 + 2 + 8;
const CHECKSUM_LEN: usize = 4;

/// Retained messages and persistent sessions, as saved at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// One record per retained topic.
    pub retained: Vec<RetainedRecord>,
    /// One record per session that outlives its connection.
    pub sessions: Vec<SessionRecord>,
}

/// A retained message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedRecord {
    /// The topic name.
    pub topic: String,
    /// The QoS it was published with (0 to 2).
    pub qos: u8,
    /// The application message.
    pub payload: Vec<u8>,
    /// The MQTT 5.0 PUBLISH properties as encoded on the wire (without the
    /// length prefix), `None` for a message from a 3.1.1 client.
    pub properties: Option<Vec<u8>>,
    /// When it was stored, in seconds since the UNIX epoch (wall clock, so
    /// that message expiry can be reduced by the time spent on disk).
    pub stored_at: u64,
}

/// A persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The client identifier.
    pub client_id: String,
    /// The protocol level of the CONNECT: 3 (3.1), 4 (3.1.1) or 5 (5.0).
    pub protocol_version: u8,
    /// The session expiry interval in seconds (`u32::MAX`: never expires).
    pub session_expiry: u32,
    /// When the client disconnected, in seconds since the UNIX epoch; the
    /// session expires `session_expiry` seconds later.
    pub disconnected_at: u64,
    /// The subscriptions, in the order they were made.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// Messages waiting for the client, oldest first, including outgoing
    /// QoS 1 and 2 messages not yet acknowledged (with their packet id).
    pub queued: Vec<QueuedRecord>,
    /// Packet ids of outgoing QoS 2 messages whose PUBREC arrived: only the
    /// PUBREL is left to resend.
    pub inflight_ids: Vec<u16>,
    /// Packet ids of incoming QoS 2 messages acknowledged with PUBREC and
    /// waiting for the client's PUBREL (so a resent PUBLISH is not delivered
    /// twice).
    pub awaiting_pubrel: Vec<u16>,
}

/// A subscription of a persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// The topic filter (a shared one as `$share/GROUP/FILTER`).
    pub filter: String,
    /// The maximum QoS granted (0 to 2).
    pub qos: u8,
    /// MQTT 5.0 No Local.
    pub no_local: bool,
    /// MQTT 5.0 Retain As Published.
    pub retain_as_published: bool,
    /// MQTT 5.0 Retain Handling (0 to 2).
    pub retain_handling: u8,
    /// MQTT 5.0 Subscription Identifier (1 to 268,435,455).
    pub subscription_id: Option<u32>,
}

/// A message queued for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecord {
    /// The topic name.
    pub topic: String,
    /// The QoS it is delivered with (0 to 2).
    pub qos: u8,
    /// The application message.
    pub payload: Vec<u8>,
    /// The RETAIN flag it is delivered with.
    pub retain: bool,
    /// The packet id, once one was assigned (non-zero).
    pub packet_id: Option<u16>,
    /// Whether it was sent before (DUP on redelivery).
    pub dup: bool,
    /// The MQTT 5.0 PUBLISH properties as encoded on the wire, if any.
    pub properties: Option<Vec<u8>>,
    /// When it was queued, in seconds since the UNIX epoch.
    pub stored_at: u64,
}

/// Why a snapshot was refused. Nothing of a refused snapshot is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PersistError {
    /// Shorter than the header and the checksum.
    TooShort {
        /// The length of the file.
        len: usize,
    },
    /// The first eight bytes are not [`MAGIC`]: not a ringport MQTT
    /// snapshot.
    BadMagic,
    /// Written by a format version this build does not read.
    UnsupportedVersion {
        /// The version in the file.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// The file ends before the length its header announces.
    Truncated {
        /// The length the header announces.
        expected: u64,
        /// The length of the file.
        found: usize,
    },
    /// Bytes follow the checksum.
    TrailingBytes {
        /// The length the header announces.
        expected: u64,
        /// The length of the file.
        found: usize,
    },
    /// The checksum does not match the contents.
    ChecksumMismatch {
        /// The checksum in the file.
        stored: u32,
        /// The checksum of the contents.
        computed: u32,
    },
    /// A field is out of range or runs past the body (only possible with a
    /// checksum that matches, so a bug in the writer).
    Malformed {
        /// The offset of the field in the file.
        offset: usize,
        /// Which field, and what is wrong with it.
        what: &'static str,
    },
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MQTT persistence file refused: ")?;
        match self {
            PersistError::TooShort { len } => write!(
                f,
                "{len} bytes is shorter than the {} bytes of header and checksum",
                HEADER_LEN + CHECKSUM_LEN
            ),
            PersistError::BadMagic => f.write_str(
                "it does not start with the snapshot magic; not a ringport MQTT snapshot",
            ),
            PersistError::UnsupportedVersion { found, supported } => write!(
                f,
                "format version {found}, but this build reads version {supported}; \
                 use the ringport version that wrote it"
            ),
            PersistError::Truncated { expected, found } => write!(
                f,
                "truncated: the header announces {expected} bytes, the file has {found}"
            ),
            PersistError::TrailingBytes { expected, found } => write!(
                f,
                "trailing bytes: the header announces {expected} bytes, the file has {found}"
            ),
            PersistError::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): \
                 the file is corrupt"
            ),
            PersistError::Malformed { offset, what } => {
                write!(f, "malformed at byte {offset}: {what}")
            }
        }
    }
}

impl std::error::Error for PersistError {}

/// The CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) lookup table.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// The CRC-32C of `bytes` (initial value and final XOR `0xFFFFFFFF`).
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("more than u32::MAX records"));
    }
    fn str16(&mut self, s: &str) {
        self.u16(u16::try_from(s.len()).expect("string longer than 65,535 bytes"));
        self.out.extend_from_slice(s.as_bytes());
    }
    fn blob(&mut self, b: &[u8]) {
        assert!(b.len() <= MAX_BLOB, "blob longer than 268,435,455 bytes");
        self.u32(b.len() as u32);
        self.out.extend_from_slice(b);
    }
    fn opt_blob(&mut self, b: &Option<Vec<u8>>) {
        match b {
            None => self.u8(0),
            Some(b) => {
                self.u8(1);
                self.blob(b);
            }
        }
    }
    fn ids(&mut self, ids: &[u16]) {
        self.count(ids.len());
        for &id in ids {
            self.u16(id);
        }
    }
}

/// Encodes a snapshot in format version [`VERSION`].
///
/// # Panics
///
/// If a string is longer than 65,535 bytes, a payload or properties block
/// longer than [`MAX_BLOB`], or a list longer than `u32::MAX`: none of which
/// an MQTT packet can carry, so a broker's state never holds them.
pub fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    let mut w = Writer {
        out: Vec::with_capacity(HEADER_LEN + 64),
    };
    w.out.extend_from_slice(&MAGIC);
    w.u16(VERSION);
    w.u64(0); // the body length, patched below
    w.count(snapshot.retained.len());
    for r in &snapshot.retained {
        w.str16(&r.topic);
        w.u8(r.qos);
        w.blob(&r.payload);
        w.opt_blob(&r.properties);
        w.u64(r.stored_at);
    }
    w.count(snapshot.sessions.len());
    for s in &snapshot.sessions {
        w.str16(&s.client_id);
        w.u8(s.protocol_version);
        w.u32(s.session_expiry);
        w.u64(s.disconnected_at);
        w.count(s.subscriptions.len());
        for sub in &s.subscriptions {
            w.str16(&sub.filter);
            w.u8(sub.qos);
            w.u8(u8::from(sub.no_local) | u8::from(sub.retain_as_published) << 1);
            w.u8(sub.retain_handling);
            match sub.subscription_id {
                None => w.u8(0),
                Some(id) => {
                    w.u8(1);
                    w.u32(id);
                }
            }
        }
        w.count(s.queued.len());
        for q in &s.queued {
            w.str16(&q.topic);
            w.u8(q.qos);
            w.blob(&q.payload);
            w.u8(u8::from(q.retain) | u8::from(q.dup) << 1 | u8::from(q.packet_id.is_some()) << 2);
            if let Some(id) = q.packet_id {
                w.u16(id);
            }
            w.opt_blob(&q.properties);
            w.u64(q.stored_at);
        }
        w.ids(&s.inflight_ids);
        w.ids(&s.awaiting_pubrel);
    }
    let body_len = (w.out.len() - HEADER_LEN) as u64;
    w.out[10..HEADER_LEN].copy_from_slice(&body_len.to_be_bytes());
    let crc = crc32c(&w.out);
    w.u32(crc);
    w.out
}

/// Reads fields from the body; every error names the field's offset.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

type Result<T> = std::result::Result<T, PersistError>;

impl<'a> Reader<'a> {
    fn err<T>(&self, what: &'static str) -> Result<T> {
        Err(PersistError::Malformed {
            offset: self.pos,
            what,
        })
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return self.err(what);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_be_bytes(a))
    }
    /// A count of records at least `min_size` bytes each, refused if the
    /// bytes left cannot hold them (before anything is allocated).
    fn count(&mut self, min_size: usize, what: &'static str) -> Result<usize> {
        let start = self.pos;
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_size) > self.buf.len() - self.pos {
            self.pos = start;
            return self.err(what);
        }
        Ok(n)
    }
    fn str16(&mut self, what: &'static str) -> Result<String> {
        let start = self.pos;
        let len = self.u16(what)? as usize;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => {
                self.pos = start;
                self.err(what)
            }
        }
    }
    fn blob(&mut self, what: &'static str) -> Result<Vec<u8>> {
        let start = self.pos;
        let len = self.u32(what)? as usize;
        if len > MAX_BLOB {
            self.pos = start;
            return self.err(what);
        }
        Ok(self.take(len, what)?.to_vec())
    }
    fn opt_blob(&mut self, what: &'static str) -> Result<Option<Vec<u8>>> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.blob(what)?)),
            _ => {
                self.pos -= 1;
                self.err(what)
            }
        }
    }
    /// A byte that must be at most `max`.
    fn bounded(&mut self, max: u8, what: &'static str) -> Result<u8> {
        let v = self.u8(what)?;
        if v > max {
            self.pos -= 1;
            return self.err(what);
        }
        Ok(v)
    }
    fn packet_id(&mut self, what: &'static str) -> Result<u16> {
        let id = self.u16(what)?;
        if id == 0 {
            self.pos -= 2;
            return self.err(what);
        }
        Ok(id)
    }
    fn ids(&mut self, what: &'static str) -> Result<Vec<u16>> {
        let n = self.count(2, what)?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.packet_id(what)?);
        }
        Ok(ids)
    }
}

// Smallest encodings, for the count checks.
const MIN_RETAINED: usize = 2 + 1 + 4 + 1 + 8;
const MIN_SESSION: usize = 2 + 1 + 4 + 8 + 4 * 4;
const MIN_SUBSCRIPTION: usize = 2 + 1 + 1 + 1 + 1;
const MIN_QUEUED: usize = 2 + 1 + 4 + 1 + 1 + 8;

fn read_retained(r: &mut Reader<'_>) -> Result<RetainedRecord> {
    Ok(RetainedRecord {
        topic: r.str16("retained topic: length past the end or not UTF-8")?,
        qos: r.bounded(2, "retained QoS above 2")?,
        payload: r.blob("retained payload: length past the end or above the MQTT maximum")?,
        properties: r.opt_blob("retained properties: bad presence byte or length")?,
        stored_at: r.u64("retained stored_at past the end")?,
    })
}

fn read_subscription(r: &mut Reader<'_>) -> Result<SubscriptionRecord> {
    let filter = r.str16("subscription filter: length past the end or not UTF-8")?;
    let qos = r.bounded(2, "subscription QoS above 2")?;
    let flags = r.bounded(0b11, "subscription flags: unknown bits set")?;
    let retain_handling = r.bounded(2, "subscription retain handling above 2")?;
    let subscription_id = match r.bounded(1, "subscription identifier: bad presence byte")? {
        0 => None,
        _ => {
            let id = r.u32("subscription identifier past the end")?;
            if id == 0 || id as usize > MAX_BLOB {
                r.pos -= 4;
                return r.err("subscription identifier outside 1..=268435455");
            }
            Some(id)
        }
    };
    Ok(SubscriptionRecord {
        filter,
        qos,
        no_local: flags & 1 != 0,
        retain_as_published: flags & 2 != 0,
        retain_handling,
        subscription_id,
    })
}

fn read_queued(r: &mut Reader<'_>) -> Result<QueuedRecord> {
    let topic = r.str16("queued topic: length past the end or not UTF-8")?;
    let qos = r.bounded(2, "queued QoS above 2")?;
    let payload = r.blob("queued payload: length past the end or above the MQTT maximum")?;
    let flags = r.bounded(0b111, "queued flags: unknown bits set")?;
    let packet_id = if flags & 4 != 0 {
        Some(r.packet_id("queued packet id: zero or past the end")?)
    } else {
        None
    };
    Ok(QueuedRecord {
        topic,
        qos,
        payload,
        retain: flags & 1 != 0,
        packet_id,
        dup: flags & 2 != 0,
        properties: r.opt_blob("queued properties: bad presence byte or length")?,
        stored_at: r.u64("queued stored_at past the end")?,
    })
}

fn read_session(r: &mut Reader<'_>) -> Result<SessionRecord> {
    let client_id = r.str16("session client id: length past the end or not UTF-8")?;
    let protocol_version = r.u8("session protocol version past the end")?;
    if !(3..=5).contains(&protocol_version) {
        r.pos -= 1;
        return r.err("session protocol version not 3, 4 or 5");
    }
    let session_expiry = r.u32("session expiry past the end")?;
    let disconnected_at = r.u64("session disconnected_at past the end")?;
    let n = r.count(
        MIN_SUBSCRIPTION,
        "subscription count larger than the bytes left",
    )?;
    let mut subscriptions = Vec::with_capacity(n);
    for _ in 0..n {
        subscriptions.push(read_subscription(r)?);
    }
    let n = r.count(
        MIN_QUEUED,
        "queued message count larger than the bytes left",
    )?;
    let mut queued = Vec::with_capacity(n);
    for _ in 0..n {
        queued.push(read_queued(r)?);
    }
    Ok(SessionRecord {
        client_id,
        protocol_version,
        session_expiry,
        disconnected_at,
        subscriptions,
        queued,
        inflight_ids: r.ids("in-flight ids: count past the end or a zero id")?,
        awaiting_pubrel: r.ids("awaiting-PUBREL ids: count past the end or a zero id")?,
    })
}

/// Decodes a snapshot, refusing the whole file on any damage.
///
/// # Errors
///
/// [`PersistError`] naming the first check that failed, in the order the
/// [module documentation](self) lists them.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot> {
    if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(PersistError::TooShort { len: bytes.len() });
    }
    if bytes[..8] != MAGIC {
        return Err(PersistError::BadMagic);
    }
    let version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(PersistError::UnsupportedVersion {
            found: version,
            supported: VERSION,
        });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[10..HEADER_LEN]);
    let body_len = u64::from_be_bytes(len);
    let expected = body_len.saturating_add((HEADER_LEN + CHECKSUM_LEN) as u64);
    if (bytes.len() as u64) < expected {
        return Err(PersistError::Truncated {
            expected,
            found: bytes.len(),
        });
    }
    if (bytes.len() as u64) > expected {
        return Err(PersistError::TrailingBytes {
            expected,
            found: bytes.len(),
        });
    }
    let (content, tail) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    let stored = u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let computed = crc32c(content);
    if stored != computed {
        return Err(PersistError::ChecksumMismatch { stored, computed });
    }
    let mut r = Reader {
        buf: content,
        pos: HEADER_LEN,
    };
    let n = r.count(MIN_RETAINED, "retained count larger than the bytes left")?;
    let mut retained = Vec::with_capacity(n);
    for _ in 0..n {
        retained.push(read_retained(&mut r)?);
    }
    let n = r.count(MIN_SESSION, "session count larger than the bytes left")?;
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        sessions.push(read_session(&mut r)?);
    }
    if r.pos != content.len() {
        return r.err("bytes left in the body after the last session");
    }
    Ok(Snapshot { retained, sessions })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            retained: vec![
                RetainedRecord {
                    topic: "plant/1/temp".into(),
                    qos: 1,
                    payload: b"21.5".to_vec(),
                    properties: None,
                    stored_at: 1_700_000_000,
                },
                RetainedRecord {
                    topic: "plant/2/état".into(),
                    qos: 2,
                    payload: vec![],
                    properties: Some(vec![0x02, 0, 0, 0, 60]),
                    stored_at: 1_700_000_001,
                },
            ],
            sessions: vec![SessionRecord {
                client_id: "gw-7".into(),
                protocol_version: 5,
                session_expiry: 3600,
                disconnected_at: 1_700_000_100,
                subscriptions: vec![
                    SubscriptionRecord {
                        filter: "cmd/gw-7/#".into(),
                        qos: 2,
                        no_local: true,
                        retain_as_published: false,
                        retain_handling: 2,
                        subscription_id: Some(268_435_455),
                    },
                    SubscriptionRecord {
                        filter: "$share/g/x/+".into(),
                        qos: 0,
                        no_local: false,
                        retain_as_published: true,
                        retain_handling: 0,
                        subscription_id: None,
                    },
                ],
                queued: vec![
                    QueuedRecord {
                        topic: "cmd/gw-7/reboot".into(),
                        qos: 1,
                        payload: b"now".to_vec(),
                        retain: false,
                        packet_id: Some(7),
                        dup: true,
                        properties: Some(vec![0x01, 0x01]),
                        stored_at: 1_700_000_050,
                    },
                    QueuedRecord {
                        topic: "cmd/gw-7/x".into(),
                        qos: 0,
                        payload: vec![0xff; 3],
                        retain: true,
                        packet_id: None,
                        dup: false,
                        properties: None,
                        stored_at: 1_700_000_060,
                    },
                ],
                inflight_ids: vec![9, 65535],
                awaiting_pubrel: vec![1],
            }],
        }
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn empty_snapshot_bytes() {
        let bytes = encode_snapshot(&Snapshot::default());
        let mut expected = vec![0x89, b'R', b'P', b'M', b'Q', b'\r', b'\n', 0x1a, 0, 1];
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 8]);
        expected.extend_from_slice(&[0; 8]);
        expected.extend_from_slice(&crc32c(&expected).to_be_bytes());
        assert_eq!(bytes, expected);
        assert_eq!(bytes.len(), 30);
        assert_eq!(decode_snapshot(&bytes), Ok(Snapshot::default()));
    }

    #[test]
    fn retained_record_bytes() {
        let snap = Snapshot {
            retained: vec![RetainedRecord {
                topic: "a/b".into(),
                qos: 1,
                payload: b"hi".to_vec(),
                properties: Some(vec![0x23]),
                stored_at: 258,
            }],
            sessions: vec![],
        };
        let bytes = encode_snapshot(&snap);
        #[rustfmt::skip]
        let body: &[u8] = &[
            0, 0, 0, 1,                 // one retained record
            0, 3, b'a', b'/', b'b',     // topic
            1,                          // qos
            0, 0, 0, 2, b'h', b'i',     // payload
            1, 0, 0, 0, 1, 0x23,        // properties
            0, 0, 0, 0, 0, 0, 1, 2,     // stored_at
            0, 0, 0, 0,                 // no sessions
        ];
        assert_eq!(&bytes[10..18], &(body.len() as u64).to_be_bytes());
        assert_eq!(&bytes[18..18 + body.len()], body);
        assert_eq!(decode_snapshot(&bytes).unwrap(), snap);
    }

    #[test]
    fn round_trip() {
        let snap = sample();
        let bytes = encode_snapshot(&snap);
        assert_eq!(decode_snapshot(&bytes), Ok(snap));
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = encode_snapshot(&sample());
        for n in 0..bytes.len() {
            let err = decode_snapshot(&bytes[..n]).unwrap_err();
            let expected = if n < HEADER_LEN + CHECKSUM_LEN {
                PersistError::TooShort { len: n }
            } else {
                PersistError::Truncated {
                    expected: bytes.len() as u64,
                    found: n,
                }
            };
            assert_eq!(err, expected, "truncated to {n} bytes");
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let bytes = encode_snapshot(&sample());
        for i in 0..bytes.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[i] ^= mask;
                assert!(
                    decode_snapshot(&bad).is_err(),
                    "byte {i} xor {mask:#04x} was accepted"
                );
            }
        }
        let mut bad = bytes.clone();
        bad[20] ^= 0x40;
        assert!(matches!(
            decode_snapshot(&bad),
            Err(PersistError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let mut bytes = encode_snapshot(&sample());
        let len = bytes.len();
        bytes.push(0);
        assert_eq!(
            decode_snapshot(&bytes),
            Err(PersistError::TrailingBytes {
                expected: len as u64,
                found: len + 1
            })
        );
    }

    /// Rewrites the checksum after a deliberate change, to reach the checks
    /// behind it.
    fn reseal(bytes: &mut [u8]) {
        let n = bytes.len() - CHECKSUM_LEN;
        let crc = crc32c(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn version_mismatch_is_refused() {
        let mut bytes = encode_snapshot(&sample());
        bytes[9] = 2;
        reseal(&mut bytes);
        let err = decode_snapshot(&bytes).unwrap_err();
        assert_eq!(
            err,
            PersistError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "MQTT persistence file refused: format version 2, but this build reads version 1; \
             use the ringport version that wrote it"
        );
    }

    #[test]
    fn bad_magic_is_refused() {
        let mut bytes = encode_snapshot(&sample());
        bytes[0] = b'R';
        assert_eq!(decode_snapshot(&bytes), Err(PersistError::BadMagic));
    }

    #[test]
    fn out_of_range_fields_are_refused_even_with_a_good_checksum() {
        let snap = Snapshot {
            retained: vec![RetainedRecord {
                topic: "t".into(),
                qos: 3,
                payload: vec![],
                properties: None,
                stored_at: 0,
            }],
            sessions: vec![],
        };
        let bytes = encode_snapshot(&snap);
        assert_eq!(
            decode_snapshot(&bytes),
            Err(PersistError::Malformed {
                offset: 18 + 4 + 3,
                what: "retained QoS above 2"
            })
        );
        // A huge count is refused before anything is allocated.
        let mut bytes = encode_snapshot(&Snapshot::default());
        bytes[18..22].copy_from_slice(&u32::MAX.to_be_bytes());
        reseal(&mut bytes);
        assert_eq!(
            decode_snapshot(&bytes),
            Err(PersistError::Malformed {
                offset: 18,
                what: "retained count larger than the bytes left"
            })
        );
        // Invalid UTF-8 in a topic.
        let mut snap = sample();
        snap.retained[0].topic = "\u{7f}".into();
        let mut bytes = encode_snapshot(&snap);
        bytes[24] = 0xff;
        reseal(&mut bytes);
        assert_eq!(
            decode_snapshot(&bytes),
            Err(PersistError::Malformed {
                offset: 22,
                what: "retained topic: length past the end or not UTF-8"
            })
        );
    }

    /// Random damage behind a valid checksum (a writer bug, or a file
    /// resealed by hand) never panics, and whatever is accepted is exactly
    /// what the encoder writes for the decoded value: the format has one
    /// encoding per snapshot, so nothing is read ambiguously.
    #[test]
    fn resealed_damage_never_panics_and_accepted_files_are_canonical() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let good = encode_snapshot(&sample());
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut bytes = good.clone();
            for _ in 0..rng.gen_range(1..=3) {
                let i = rng.gen_range(HEADER_LEN..bytes.len() - CHECKSUM_LEN);
                bytes[i] = rng.gen();
            }
            reseal(&mut bytes);
            if let Ok(snap) = decode_snapshot(&bytes) {
                assert_eq!(encode_snapshot(&snap), bytes);
                accepted += 1;
            }
        }
        // Changing payload bytes or timestamps keeps a file valid, so some
        // are accepted; most damage hits a length or a range.
        assert!(accepted > 0 && accepted < 20_000, "{accepted} accepted");
    }
}
