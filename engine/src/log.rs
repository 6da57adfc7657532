//! The handshake log: one structured line per connection open and close,
//! per denial, and per new UDP source, written off the shards.
//!
//! A shard never formats or writes a line. It pushes a fixed-size
//! [`LogRecord`] into its own bounded lock-free queue ([`LogSink::try_log`]);
//! when the queue is full the record is dropped and counted, never waited
//! for. One writer thread ([`LogWriter`]) drains every shard's queue, turns
//! records into JSON lines (or `key=value` text) and writes them to a file or
//! stderr; when records were dropped it says how many in a `log_dropped`
//! line. Lines from other threads (alerts, the drain summary) go through
//! [`LogWriter::event`]. A write error or an output that blocks costs
//! lines, counted, never the writer or the shutdown (see [`LogWriter`]'s
//! module, `log/writer.rs`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;
use ringport_plugin::CloseReason;

use crate::policy::Decision;

mod writer;

pub use writer::{LogOptions, LogTotals, LogWriter, DEFAULT_FINISH_WAIT};

/// Records each shard can queue before the writer catches up.
pub const DEFAULT_QUEUE_LEN: usize = 16384;

/// What a log line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A connection was admitted (verdict `allow` or `would_deny`).
    Open,
    /// An admitted connection closed.
    Close,
    /// A connection or datagram was refused.
    Deny,
    /// A UDP source not seen within the window sent a datagram.
    UdpSource,
    /// A source's denial alert fired (`true`) or cleared (`false`); the
    /// record's peer is the source (port 0), `count` its denials in the
    /// window and `duration` the window.
    SourceAlert {
        /// Fired or cleared.
        firing: bool,
    },
    /// A TLS handshake ended, well or not; the details are in the record's
    /// `tls` and `duration` is how long it took.
    TlsHandshake,
    /// A plugin call panicked (`call` names it); the peer is the
    /// connection's or datagram's, if the call had one.
    PluginPanic {
        /// The plugin method that panicked.
        call: &'static str,
    },
}

impl Event {
    /// The name in the `event` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Open => "open",
            Event::Close => "close",
            Event::Deny => "deny",
            Event::UdpSource => "udp_source",
            Event::SourceAlert { .. } => "alert",
            Event::TlsHandshake => "tls_handshake",
            Event::PluginPanic { .. } => "plugin_panic",
        }
    }
}

/// Why a connection closed, as logged: the plugin-visible reason or one of
/// the engine's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// A reason the plugin was also told.
    Plugin(CloseReason),
    /// Nothing arrived before the first-bytes deadline.
    FirstBytesTimeout,
    /// Nothing moved for the idle timeout.
    IdleTimeout,
    /// The peer shut its side and the rest did not finish in time.
    HalfClosedTimeout,
    /// The drain timeout ran out while the connection was open.
    DrainTimeout,
    /// The TLS handshake did not finish in time.
    TlsHandshakeTimeout,
    /// The TLS handshake failed (the `tls_handshake` line says why).
    TlsHandshakeFailed,
    /// The client's certificate identity was refused.
    TlsIdentityDenied,
    /// A TLS record was bad or the peer sent a fatal alert.
    TlsError,
    /// A TLS ClientHello arrived on a plaintext listener.
    TlsOnPlainPort,
    /// The plugin panicked while handling the connection.
    PluginPanic,
    /// Evicted as its shard's slowest reader when the outbound budget ran
    /// out (`max_outbound_per_shard`, `max_outbound_total`).
    OutboundBudget,
}

impl CloseCause {
    /// The name in the `close_reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCause::Plugin(r) => match r {
                CloseReason::PeerClosed => "peer_closed",
                CloseReason::PeerReset => "peer_reset",
                CloseReason::Protocol(_) => "protocol",
                CloseReason::Local => "local",
                CloseReason::Shutdown => "shutdown",
                CloseReason::Error(_) => "error",
            },
            CloseCause::FirstBytesTimeout => "first_bytes_timeout",
            CloseCause::IdleTimeout => "idle_timeout",
            CloseCause::HalfClosedTimeout => "half_closed_timeout",
            CloseCause::DrainTimeout => "drain_timeout",
            CloseCause::TlsHandshakeTimeout => "tls_handshake_timeout",
            CloseCause::TlsHandshakeFailed => "tls_handshake_failed",
            CloseCause::TlsIdentityDenied => "tls_identity_denied",
            CloseCause::TlsError => "tls_error",
            CloseCause::TlsOnPlainPort => "tls_on_plain_port",
            CloseCause::PluginPanic => "plugin_panic",
            CloseCause::OutboundBudget => "outbound_budget",
        }
    }
}

/// What a `tls_handshake` line says beyond the common fields. Boxed in its
/// record: handshakes allocate anyway, and the common record stays small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsLog {
    /// How it ended.
    pub result: crate::tls::HandshakeResult,
    /// `TLSv1.3` or `TLSv1.2` (empty when the handshake failed before).
    pub version: &'static str,
    /// The cipher suite's IANA name (empty when not agreed).
    pub cipher: &'static str,
    /// The server name the client asked for.
    pub sni: Option<String>,
    /// The ALPN protocol agreed on.
    pub alpn: Option<String>,
    /// The client certificate, when one was presented.
    pub client_cert: Option<crate::tls::CertIdentity>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// The alert sent, when one was.
    pub alert_sent: Option<u8>,
    /// The alert received, when one was.
    pub alert_received: Option<u8>,
}

/// One line's worth of facts: fixed-size for every event but
/// `tls_handshake`, so that queueing it allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// What happened.
    pub event: Event,
    /// When (the shard's loop-turn time).
    pub at: Instant,
    /// Listener index in the plan.
    pub listener: u16,
    /// Shard index.
    pub shard: u16,
    /// The remote address.
    pub peer: SocketAddr,
    /// The local port.
    pub local_port: u16,
    /// The admission verdict (and its reason).
    pub verdict: Decision,
    /// How long the connection was open (close lines).
    pub duration: Duration,
    /// Bytes received on the connection (close lines).
    pub bytes_in: u64,
    /// Bytes sent on the connection (close lines).
    pub bytes_out: u64,
    /// Why it closed (close lines).
    pub close: Option<CloseCause>,
    /// Lines about denials held back by the per-source gate before this one.
    pub suppressed: u64,
    /// Denials in the window (alert lines).
    pub count: u64,
    /// TLS handshake details (`tls_handshake` lines).
    pub tls: Option<Box<TlsLog>>,
}

impl LogRecord {
    /// A record with the fields every event has; the rest zero.
    pub fn new(event: Event, at: Instant, listener: u16, shard: u16, peer: SocketAddr) -> Self {
        LogRecord {
            event,
            at,
            listener,
            shard,
            peer,
            local_port: 0,
            verdict: Decision::Allow,
            duration: Duration::ZERO,
            bytes_in: 0,
            bytes_out: 0,
            close: None,
            suppressed: 0,
            count: 0,
            tls: None,
        }
    }
}

/// A shard's end of its log queue.
#[derive(Debug, Clone)]
pub struct LogSink {
    queue: Arc<ArrayQueue<LogRecord>>,
    dropped: Arc<AtomicU64>,
}

impl LogSink {
    /// Queues `record`; if the queue is full, counts it as dropped instead.
    /// Never blocks.
    #[inline]
    pub fn try_log(&self, record: LogRecord) {
        if self.queue.push(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// `time event key=value ...`.
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            other => Err(format!(
                "`{other}` is not a log format: use `json` or `text`"
            )),
        }
    }
}

/// A field value of a line from outside the shards.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// An unsigned integer.
    Uint(u64),
    /// A number with a fraction.
    Float(f64),
    /// true or false.
    Bool(bool),
}

/// A line from outside the shards (alerts, drain, summary).
#[derive(Debug, Clone, PartialEq)]
pub struct EventLine {
    /// The `event` field.
    pub event: &'static str,
    /// The other fields, in order.
    pub fields: Vec<(&'static str, Value)>,
}

/// Turns records into lines. Records carry an `Instant`; the formatter maps
/// it to wall-clock time through one (Instant, SystemTime) pair taken at start.
#[derive(Debug)]
pub struct Formatter {
    listeners: Vec<String>,
    format: LogFormat,
    anchor: (Instant, SystemTime),
}

impl Formatter {
    /// A formatter naming listeners by `listeners`.
    pub fn new(listeners: Vec<String>, format: LogFormat) -> Formatter {
        Formatter::with_anchor(listeners, format, Instant::now(), SystemTime::now())
    }

    /// As [`Formatter::new`], with `instant` taken to be `wall` (for tests).
    pub fn with_anchor(
        listeners: Vec<String>,
        format: LogFormat,
        instant: Instant,
        wall: SystemTime,
    ) -> Formatter {
        Formatter {
            listeners,
            format,
            anchor: (instant, wall),
        }
    }

    fn wall(&self, at: Instant) -> SystemTime {
        let (i, w) = self.anchor;
        match at.checked_duration_since(i) {
            Some(d) => w + d,
            None => w - i.duration_since(at),
        }
    }

    /// Appends the line for `r` (with its newline) to `out`.
    pub fn record(&self, out: &mut String, r: &LogRecord) {
        let listener = self
            .listeners
            .get(r.listener as usize)
            .map_or("?", String::as_str);
        let mut f = Fields::start(out, self.format, self.wall(r.at), r.event.as_str());
        f.str("listener", listener);
        f.uint("shard", u64::from(r.shard));
        if let Event::SourceAlert { firing } = r.event {
            f.str("metric", "source_denials");
            f.display("firing", &firing);
            f.display("source", &r.peer.ip());
            f.uint("denials", r.count);
            f.float("window_s", r.duration.as_secs_f64());
            f.end();
            return;
        }
        f.display("peer", &r.peer);
        f.uint("local_port", u64::from(r.local_port));
        if let Event::PluginPanic { call } = r.event {
            f.str("call", call);
            f.end();
            return;
        }
        if let Some(t) = &r.tls {
            tls_fields(&mut f, r, t);
            f.end();
            return;
        }
        if r.event != Event::Close {
            f.str("verdict", r.verdict.as_str());
            if let Some(reason) = r.verdict.reason() {
                f.str("reason", reason.as_str());
            }
        }
        if r.event == Event::Close {
            f.float("duration_s", r.duration.as_secs_f64());
            f.uint("bytes_in", r.bytes_in);
            f.uint("bytes_out", r.bytes_out);
            f.str(
                "close_reason",
                r.close.map_or("unknown", CloseCause::as_str),
            );
        }
        if r.suppressed > 0 {
            f.uint("suppressed", r.suppressed);
        }
        f.end();
    }

    /// Appends the line for `l` at `time` to `out`.
    pub fn event_line(&self, out: &mut String, time: SystemTime, l: &EventLine) {
        let mut f = Fields::start(out, self.format, time, l.event);
        for (k, v) in &l.fields {
            match v {
                Value::Str(s) => f.str(k, s),
                Value::Uint(n) => f.uint(k, *n),
                Value::Float(x) => f.float(k, *x),
                Value::Bool(b) => f.display(k, b),
            }
        }
        f.end();
    }
}

/// The fields of a `tls_handshake` line after peer and local port.
fn tls_fields(f: &mut Fields<'_>, r: &LogRecord, t: &TlsLog) {
    f.str("result", t.result.as_str());
    if !t.version.is_empty() {
        f.str("version", t.version);
    }
    if !t.cipher.is_empty() {
        f.str("cipher", t.cipher);
    }
    if let Some(sni) = &t.sni {
        f.str("sni", sni);
    }
    if let Some(alpn) = &t.alpn {
        f.str("alpn", alpn);
    }
    if let Some(c) = &t.client_cert {
        f.str("client_subject", &c.subject);
        f.str("client_sans", &c.sans().join(","));
        f.str("client_sha256", &c.fingerprint_hex());
        let mut expiry = String::with_capacity(24);
        rfc3339(
            &mut expiry,
            UNIX_EPOCH + Duration::from_secs(c.not_after.max(0) as u64),
        );
        f.str("client_not_after", &expiry);
    }
    // A verdict belongs to a handshake that succeeded or to a refusal; a
    // handshake that failed for another reason has none to give.
    if t.result.ok() || r.verdict.reason().is_some() {
        f.str("verdict", r.verdict.as_str());
    }
    if let Some(reason) = r.verdict.reason() {
        f.str("reason", reason.as_str());
    }
    f.float("duration_s", r.duration.as_secs_f64());
    if let Some(e) = &t.error {
        f.str("error", e);
    }
    if let Some(a) = t.alert_sent {
        f.str("alert_sent", crate::tls::alert_name(a));
    }
    if let Some(a) = t.alert_received {
        f.str("alert_received", crate::tls::alert_name(a));
    }
}

/// Writes the fields of one line in either format.
struct Fields<'a> {
    out: &'a mut String,
    format: LogFormat,
}

impl<'a> Fields<'a> {
    fn start(out: &'a mut String, format: LogFormat, time: SystemTime, event: &str) -> Self {
        let mut ts = String::with_capacity(24);
        rfc3339(&mut ts, time);
        match format {
            LogFormat::Json => {
                let _ = write!(out, "{{\"time\":\"{ts}\",\"event\":");
                json_str(out, event);
            }
            LogFormat::Text => {
                let _ = write!(out, "{ts} {event}");
            }
        }
        Fields { out, format }
    }

    fn key(&mut self, k: &str) {
        match self.format {
            LogFormat::Json => {
                self.out.push(',');
                json_str(self.out, k);
                self.out.push(':');
            }
            LogFormat::Text => {
                let _ = write!(self.out, " {k}=");
            }
        }
    }

    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        match self.format {
            LogFormat::Json => json_str(self.out, v),
            LogFormat::Text if v.is_empty() || v.contains([' ', '"', '=']) => json_str(self.out, v),
            LogFormat::Text => self.out.push_str(v),
        }
    }

    fn display(&mut self, k: &str, v: &dyn std::fmt::Display) {
        let s = v.to_string();
        match (self.format, s.as_str()) {
            (LogFormat::Json, "true" | "false") => {
                self.key(k);
                self.out.push_str(&s);
            }
            _ => self.str(k, &s),
        }
    }

    fn uint(&mut self, k: &str, v: u64) {
        self.key(k);
        let _ = write!(self.out, "{v}");
    }

    fn float(&mut self, k: &str, v: f64) {
        self.key(k);
        if v.is_finite() {
            let _ = write!(self.out, "{v:.6}");
        } else {
            self.out.push_str(if self.format == LogFormat::Json {
                "null"
            } else {
                "nan"
            });
        }
    }

    fn end(self) {
        if self.format == LogFormat::Json {
            self.out.push('}');
        }
        self.out.push('\n');
    }
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn rfc3339(out: &mut String, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, day) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    );
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (eras of 400
/// years, each 146097 days long, counted from 0000-03-01).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DenyReason;

    fn peer() -> SocketAddr {
        "127.0.0.2:40000".parse().unwrap()
    }

    #[test]
    fn dates() {
        let mut s = String::new();
        rfc3339(&mut s, UNIX_EPOCH);
        s.push(' ');
        rfc3339(&mut s, UNIX_EPOCH + Duration::from_millis(951_782_400_123));
        s.push(' ');
        rfc3339(&mut s, UNIX_EPOCH + Duration::from_secs(1_795_664_705));
        assert_eq!(
            s,
            "1970-01-01T00:00:00.000Z 2000-02-29T00:00:00.123Z 2026-11-26T03:45:05.000Z"
        );
    }

    #[test]
    fn json_and_text_lines() {
        let t0 = Instant::now();
        let f = |format| {
            Formatter::with_anchor(
                vec!["echo@tcp:127.0.0.1:9000".into()],
                format,
                t0,
                UNIX_EPOCH + Duration::from_secs(86400),
            )
        };
        let mut deny = LogRecord::new(Event::Deny, t0, 0, 1, peer());
        deny.local_port = 9000;
        deny.verdict = Decision::Deny(DenyReason::NotAllowed);
        deny.suppressed = 4;
        let mut close =
            LogRecord::new(Event::Close, t0 + Duration::from_millis(1500), 0, 0, peer());
        close.local_port = 9000;
        close.duration = Duration::from_millis(1250);
        close.bytes_in = 10;
        close.bytes_out = 20;
        close.close = Some(CloseCause::IdleTimeout);
        let mut out = String::new();
        f(LogFormat::Json).record(&mut out, &deny);
        f(LogFormat::Json).record(&mut out, &close);
        f(LogFormat::Text).record(&mut out, &deny);
        let mut alert = LogRecord::new(
            Event::SourceAlert { firing: true },
            t0,
            0,
            1,
            SocketAddr::new(peer().ip(), 0),
        );
        alert.count = 101;
        alert.duration = Duration::from_secs(60);
        f(LogFormat::Json).record(&mut out, &alert);
        f(LogFormat::Json).event_line(
            &mut out,
            UNIX_EPOCH,
            &EventLine {
                event: "alert",
                fields: vec![
                    ("listener", Value::Str("a \"b\"".into())),
                    ("firing", Value::Bool(true)),
                    ("rate", Value::Float(2.5)),
                ],
            },
        );
        assert_eq!(
            out,
            concat!(
                r#"{"time":"1970-01-02T00:00:00.000Z","event":"deny","listener":"echo@tcp:127.0.0.1:9000","shard":1,"peer":"127.0.0.2:40000","local_port":9000,"verdict":"deny","reason":"not_allowed","suppressed":4}"#,
                "\n",
                r#"{"time":"1970-01-02T00:00:01.500Z","event":"close","listener":"echo@tcp:127.0.0.1:9000","shard":0,"peer":"127.0.0.2:40000","local_port":9000,"duration_s":1.250000,"bytes_in":10,"bytes_out":20,"close_reason":"idle_timeout"}"#,
                "\n",
                "1970-01-02T00:00:00.000Z deny listener=echo@tcp:127.0.0.1:9000 shard=1 peer=127.0.0.2:40000 local_port=9000 verdict=deny reason=not_allowed suppressed=4\n",
                r#"{"time":"1970-01-02T00:00:00.000Z","event":"alert","listener":"echo@tcp:127.0.0.1:9000","shard":1,"metric":"source_denials","firing":true,"source":"127.0.0.2","denials":101,"window_s":60.000000}"#,
                "\n",
                r#"{"time":"1970-01-01T00:00:00.000Z","event":"alert","listener":"a \"b\"","firing":true,"rate":2.500000}"#,
                "\n",
            )
        );
    }
}
