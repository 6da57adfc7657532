//! The handshake log's writer thread: drains every shard's queue, formats
//! the records and writes the lines, and keeps doing so whatever its output
//! does.
//!
//! - A write error (a full disk, a closed pipe) does not end the thread: the
//!   lines of the failed write are counted as lost, and so is every line
//!   until the next try, [`LogOptions::retry`] later; the queues are drained
//!   all the while, so that shards never find them full because of it. The
//!   first error and the recovery are each said once
//!   ([`LogOptions::notify`]), and the first line written again is a
//!   `log_lines_lost` line that says how many are missing before it.
//! - An output that blocks (a pipe nobody reads) holds the thread, not the
//!   process: [`LogWriter::finish_within`] waits a bounded time, then leaves
//!   the thread behind and says how many lines were not written.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_queue::ArrayQueue;

use super::{EventLine, Formatter, LogFormat, LogSink, Value};

/// How long the writer sleeps when every queue is empty.
const IDLE_SLEEP: Duration = Duration::from_millis(5);
/// Bytes of lines gathered before they are written.
const WRITE_AT: usize = 64 * 1024;
/// How often a finish looks whether the thread has ended.
const ENDED_POLL: Duration = Duration::from_millis(2);
/// How long [`LogWriter::finish`] and a drop wait for the last lines.
pub const DEFAULT_FINISH_WAIT: Duration = Duration::from_secs(2);

/// How the writer copes with its output.
pub struct LogOptions {
    /// After a write error, lines are counted as lost for this long before
    /// writing is tried again.
    pub retry: Duration,
    /// Told, in one line without a newline, when writing fails and when it
    /// works again.
    pub notify: Box<dyn Fn(&str) + Send>,
}

impl Default for LogOptions {
    /// Retries every second; tells standard error.
    fn default() -> Self {
        LogOptions {
            retry: Duration::from_secs(1),
            notify: Box::new(|m| {
                let _ = writeln!(io::stderr(), "ringport: {m}");
            }),
        }
    }
}

impl std::fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogOptions")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// What became of the log's lines, as [`LogWriter::finish_within`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogTotals {
    /// Lines written.
    pub written: u64,
    /// Lines lost to write errors.
    pub lost: u64,
    /// Writes that failed.
    pub write_errors: u64,
    /// Records dropped because a shard's queue was full.
    pub dropped: u64,
    /// Lines still queued or being written when the writer was given up
    /// on: its output blocked.
    pub not_written: u64,
}

/// Counters the writer thread keeps and others read.
#[derive(Debug, Default)]
struct Shared {
    written: AtomicU64,
    lost: AtomicU64,
    write_errors: AtomicU64,
    /// Lines formatted and not yet written (the write under way included).
    buffered: AtomicU64,
    /// [`Control::Line`]s sent and not yet taken.
    events_pending: AtomicU64,
}

/// What the writer thread is told from outside.
#[derive(Debug)]
enum Control {
    Line(EventLine),
    Flush(mpsc::Sender<()>),
}

/// The writer thread and the queues it drains.
#[derive(Debug)]
pub struct LogWriter {
    sinks: Vec<LogSink>,
    control: mpsc::Sender<Control>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Starts the writer for `shards` queues of `queue_len` records, with
    /// the default [`LogOptions`]. `listeners` names listener `i` in lines
    /// (its spec).
    pub fn spawn(
        shards: usize,
        queue_len: usize,
        listeners: Vec<String>,
        format: LogFormat,
        out: Box<dyn Write + Send>,
    ) -> io::Result<LogWriter> {
        LogWriter::spawn_with(
            shards,
            queue_len,
            listeners,
            format,
            out,
            LogOptions::default(),
        )
    }

    /// [`LogWriter::spawn`] with `options`.
    pub fn spawn_with(
        shards: usize,
        queue_len: usize,
        listeners: Vec<String>,
        format: LogFormat,
        out: Box<dyn Write + Send>,
        options: LogOptions,
    ) -> io::Result<LogWriter> {
        let sinks: Vec<LogSink> = (0..shards)
            .map(|_| LogSink {
                queue: Arc::new(ArrayQueue::new(queue_len.max(1))),
                dropped: Arc::new(AtomicU64::new(0)),
            })
            .collect();
        let (tx, rx) = mpsc::channel::<Control>();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let mut state = WriterState {
            sinks: sinks.clone(),
            rx,
            stop: stop.clone(),
            formatter: Formatter::new(listeners, format),
            dropped_reported: 0,
            line: String::with_capacity(512),
            out,
            buf: Vec::with_capacity(WRITE_AT + 4096),
            lines: 0,
            meta_newlines: 0,
            taking: true,
            failing: None,
            torn: false,
            repair_in_buf: false,
            options,
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("ringport-log".into())
            .spawn(move || state.run())?;
        Ok(LogWriter {
            sinks,
            control: tx,
            stop,
            shared,
            thread: Some(thread),
        })
    }

    /// Shard `i`'s queue.
    ///
    /// # Panics
    ///
    /// If `i` is not below the shard count given to [`LogWriter::spawn`].
    pub fn sink(&self, i: usize) -> LogSink {
        self.sinks[i].clone()
    }

    /// Records dropped over all shards.
    pub fn dropped(&self) -> u64 {
        self.sinks.iter().map(LogSink::dropped).sum()
    }

    /// Lines lost to write errors so far.
    pub fn lines_lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Writes that failed so far.
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// Writes a line from outside the shards (after what is queued now).
    pub fn event(&self, line: EventLine) {
        self.shared.events_pending.fetch_add(1, Ordering::Relaxed);
        if self.control.send(Control::Line(line)).is_err() {
            self.shared.events_pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Waits (10 s at most) until everything queued before this call is
    /// written and flushed, or counted as lost.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.control.send(Control::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// [`LogWriter::finish_within`] [`DEFAULT_FINISH_WAIT`]: `Ok` when
    /// every line was written, else an error that says how many were not.
    pub fn finish(self) -> io::Result<()> {
        let t = self.finish_within(DEFAULT_FINISH_WAIT);
        if t.lost == 0 && t.not_written == 0 {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "{} log line(s) lost to write errors, {} not written (the output blocked)",
            t.lost, t.not_written
        )))
    }

    /// Drains every queue, writes the last lines and stops the thread,
    /// waiting `wait` at most: a thread still writing then is left behind
    /// (blocked in its output) and its lines are counted as not written.
    pub fn finish_within(mut self, wait: Duration) -> LogTotals {
        self.stop_thread(wait)
    }

    fn stop_thread(&mut self, wait: Duration) -> LogTotals {
        self.stop.store(true, Ordering::Release);
        let mut not_written = 0;
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + wait;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(ENDED_POLL);
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                let queued: usize = self.sinks.iter().map(|s| s.queue.len()).sum();
                not_written = queued as u64
                    + self.shared.events_pending.load(Ordering::Relaxed)
                    + self.shared.buffered.load(Ordering::Relaxed);
            }
        }
        LogTotals {
            written: self.shared.written.load(Ordering::Relaxed),
            lost: self.lines_lost(),
            write_errors: self.write_errors(),
            dropped: self.dropped(),
            not_written,
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.stop_thread(DEFAULT_FINISH_WAIT);
    }
}

/// Since when writing fails, and when to try again.
struct Failing {
    error: String,
    /// Lines lost before it started.
    lost_before: u64,
    retry_at: Instant,
}

struct WriterState {
    sinks: Vec<LogSink>,
    rx: mpsc::Receiver<Control>,
    stop: Arc<AtomicBool>,
    formatter: Formatter,
    dropped_reported: u64,
    line: String,
    out: Box<dyn Write + Send>,
    /// Lines gathered for the next write: first what is not a logged line
    /// (the end of a line cut by a failed write, a `log_lines_lost` line),
    /// `meta_newlines` newlines' worth, then `lines` lines.
    buf: Vec<u8>,
    lines: u64,
    meta_newlines: u64,
    /// Whether lines are formatted and gathered in this pass, or counted
    /// as lost (writing fails and it is not time to try again).
    taking: bool,
    failing: Option<Failing>,
    /// The last failed write stopped inside a line.
    torn: bool,
    /// `buf` starts with the newline that ends that line.
    repair_in_buf: bool,
    options: LogOptions,
    shared: Arc<Shared>,
}

impl WriterState {
    fn run(&mut self) {
        loop {
            // Read `stop` first: everything pushed before it was set is
            // drained by the pass that follows.
            let stopping = self.stop.load(Ordering::Acquire);
            self.start_pass(stopping);
            let mut busy = self.drain_queues();
            while let Ok(c) = self.rx.try_recv() {
                // Records queued (or dropped) before the message go first.
                busy |= self.drain_queues();
                self.report_dropped();
                match c {
                    Control::Line(l) => {
                        busy = true;
                        if self.taking {
                            self.line.clear();
                            self.formatter
                                .event_line(&mut self.line, SystemTime::now(), &l);
                            self.push_line();
                        } else {
                            self.lose(1);
                        }
                        self.shared.events_pending.fetch_sub(1, Ordering::Relaxed);
                    }
                    Control::Flush(done) => {
                        self.write_out();
                        let _ = done.send(());
                    }
                }
            }
            self.report_dropped();
            if stopping {
                self.drain_queues();
                self.report_dropped();
                self.write_out();
                return;
            }
            if !busy {
                self.write_out();
                std::thread::sleep(IDLE_SLEEP);
            }
        }
    }

    /// Whether this pass takes lines: always while writing works, and once
    /// it is time to try again (or at the end) when it does not. A retry
    /// starts with the `log_lines_lost` line.
    fn start_pass(&mut self, stopping: bool) {
        let Some(f) = &self.failing else {
            self.taking = true;
            return;
        };
        if self.taking || !(stopping || Instant::now() >= f.retry_at) {
            return;
        }
        self.taking = true;
        let lost = self.shared.lost.load(Ordering::Relaxed);
        let marker = EventLine {
            event: "log_lines_lost",
            fields: vec![
                ("lost", Value::Uint(lost - f.lost_before)),
                ("lost_total", Value::Uint(lost)),
                ("error", Value::Str(f.error.clone())),
            ],
        };
        self.line.clear();
        self.formatter
            .event_line(&mut self.line, SystemTime::now(), &marker);
        self.repair_torn();
        self.buf.extend_from_slice(self.line.as_bytes());
        self.meta_newlines += 1;
    }

    /// Ends the line a failed write cut, before anything else is written.
    fn repair_torn(&mut self) {
        if self.torn && self.buf.is_empty() {
            self.buf.push(b'\n');
            self.meta_newlines = 1;
            self.torn = false;
            self.repair_in_buf = true;
        }
    }

    fn lose(&mut self, n: u64) {
        self.shared.lost.fetch_add(n, Ordering::Relaxed);
    }

    /// Gathers `self.line`; writes when enough is gathered.
    fn push_line(&mut self) {
        self.repair_torn();
        self.buf.extend_from_slice(self.line.as_bytes());
        self.lines += 1;
        self.shared.buffered.store(self.lines, Ordering::Relaxed);
        if self.buf.len() >= WRITE_AT {
            self.write_out();
        }
    }

    fn drain_queues(&mut self) -> bool {
        let mut any = false;
        for i in 0..self.sinks.len() {
            while let Some(r) = self.sinks[i].queue.pop() {
                any = true;
                if self.taking {
                    self.line.clear();
                    self.formatter.record(&mut self.line, &r);
                    self.push_line();
                } else {
                    self.lose(1);
                }
            }
        }
        any
    }

    fn report_dropped(&mut self) {
        let total: u64 = self.sinks.iter().map(LogSink::dropped).sum();
        // While lines are being lost, the count waits for the next line
        // that can be written.
        if total == self.dropped_reported || !self.taking {
            return;
        }
        let line = EventLine {
            event: "log_dropped",
            fields: vec![
                ("dropped", Value::Uint(total - self.dropped_reported)),
                ("dropped_total", Value::Uint(total)),
            ],
        };
        self.dropped_reported = total;
        self.line.clear();
        self.formatter
            .event_line(&mut self.line, SystemTime::now(), &line);
        self.push_line();
    }

    /// Writes what is gathered and flushes the output. On an error, counts
    /// the lines not written as lost and stops taking lines until the retry.
    fn write_out(&mut self) {
        if self.buf.is_empty() {
            if self.failing.is_none() {
                let _ = self.out.flush();
            }
            return;
        }
        let mut done = 0;
        let result = loop {
            if done == self.buf.len() {
                break self.out.flush();
            }
            match self.out.write(&self.buf[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        let ended = self.buf[..done].iter().filter(|&&b| b == b'\n').count() as u64;
        let written = ended.saturating_sub(self.meta_newlines).min(self.lines);
        let lost = self.lines - written;
        self.shared.written.fetch_add(written, Ordering::Relaxed);
        match result {
            Ok(()) => {
                if let Some(f) = self.failing.take() {
                    let lost = self.shared.lost.load(Ordering::Relaxed) - f.lost_before;
                    (self.options.notify)(&format!(
                        "log: writing works again; {lost} line(s) were lost"
                    ));
                }
            }
            Err(e) => {
                self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
                self.torn = match done {
                    0 => self.repair_in_buf,
                    _ => self.buf[done - 1] != b'\n',
                };
                let retry_at = Instant::now() + self.options.retry;
                match &mut self.failing {
                    Some(f) => f.retry_at = retry_at,
                    None => {
                        (self.options.notify)(&format!(
                            "log: writing failed: {e}; lines are counted as lost \
                             (ringport_log_lines_lost_total) and writing is tried again every {:?}",
                            self.options.retry
                        ));
                        self.failing = Some(Failing {
                            error: e.to_string(),
                            lost_before: self.shared.lost.load(Ordering::Relaxed),
                            retry_at,
                        });
                    }
                }
                self.lose(lost);
                self.taking = false;
            }
        }
        self.buf.clear();
        self.lines = 0;
        self.meta_newlines = 0;
        self.repair_in_buf = false;
        self.shared.buffered.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Event, LogRecord};
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Mutex;

    /// Collects what is written. Its first flush tells `entered` and then
    /// waits for `release`, which holds the writer thread still.
    struct Held {
        buf: Arc<Mutex<Vec<u8>>>,
        gate: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    }
    impl Write for Held {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.buf.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            if let Some((entered, release)) = self.gate.take() {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            Ok(())
        }
    }

    /// A disk that fills up and frees again: while `full`, writes fail with
    /// ENOSPC (and are counted) once its `room` (bytes) is used up;
    /// otherwise they land in `buf`.
    #[derive(Clone, Default)]
    struct Disk {
        buf: Arc<Mutex<Vec<u8>>>,
        full: Arc<AtomicBool>,
        room: Arc<std::sync::atomic::AtomicUsize>,
        failed_writes: Arc<AtomicU64>,
    }
    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let room = self.room.load(Ordering::SeqCst);
            if room > 0 {
                let n = room.min(buf.len());
                self.room.store(room - n, Ordering::SeqCst);
                self.buf.lock().unwrap().extend_from_slice(&buf[..n]);
                return Ok(n);
            }
            if self.full.load(Ordering::SeqCst) {
                self.failed_writes.fetch_add(1, Ordering::SeqCst);
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.buf.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A pipe nobody reads: the first write tells `entered`, then blocks
    /// until `release` is dropped.
    struct Stuck {
        entered: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
    }
    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.release.recv();
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn peer() -> SocketAddr {
        "127.0.0.2:40000".parse().unwrap()
    }

    fn open() -> LogRecord {
        LogRecord::new(Event::Open, Instant::now(), 0, 0, peer())
    }

    /// The `event` of each JSON line.
    fn events(text: &str) -> Vec<&str> {
        text.lines()
            .map(|l| {
                let at = l.find(r#""event":""#).unwrap() + 9;
                l[at..].split('"').next().unwrap()
            })
            .collect()
    }

    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_the_writer_reports_it() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let out = Held {
            buf: buf.clone(),
            gate: Some((entered_tx, release_rx)),
        };
        let w = LogWriter::spawn(2, 4, vec!["l".into()], LogFormat::Json, Box::new(out)).unwrap();
        // The writer found nothing to do and is held in its idle flush.
        entered.recv().unwrap();
        let sink = w.sink(1);
        for _ in 0..1000 {
            sink.try_log(LogRecord::new(Event::Open, Instant::now(), 0, 1, peer()));
        }
        assert_eq!((sink.dropped(), w.dropped()), (996, 996));
        w.event(EventLine {
            event: "summary",
            fields: vec![("n", Value::Uint(7))],
        });
        release.send(()).unwrap();
        w.finish().unwrap();
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(
            events(&text),
            ["open", "open", "open", "open", "log_dropped", "summary"]
        );
        assert!(
            text.contains(r#""event":"log_dropped","dropped":996,"dropped_total":996}"#),
            "{text}"
        );
    }

    #[test]
    fn a_full_disk_loses_counted_lines_says_so_once_and_writing_resumes() {
        let disk = Disk::default();
        disk.full.store(true, Ordering::SeqCst);
        let told = Arc::new(Mutex::new(Vec::<String>::new()));
        let told2 = told.clone();
        let w = LogWriter::spawn_with(
            1,
            4,
            vec!["l".into()],
            LogFormat::Json,
            Box::new(disk.clone()),
            LogOptions {
                retry: Duration::from_millis(20),
                notify: Box::new(move |m| told2.lock().unwrap().push(m.to_owned())),
            },
        )
        .unwrap();
        let sink = w.sink(0);
        for _ in 0..3 {
            sink.try_log(open());
        }
        wait_for("3 lines lost", || w.lines_lost() == 3);
        // The queue is still drained while writing fails: five times its
        // length go through it, one by one, and none is dropped.
        for lost in 4..=23 {
            sink.try_log(open());
            wait_for("one more line lost", || w.lines_lost() == lost);
        }
        assert_eq!(w.dropped(), 0);
        assert_eq!(
            *told.lock().unwrap(),
            [
                "log: writing failed: No space left on device (os error 28); lines are counted \
              as lost (ringport_log_lines_lost_total) and writing is tried again every 20ms"
            ]
        );
        disk.full.store(false, Ordering::SeqCst);
        wait_for("the recovery", || told.lock().unwrap().len() == 2);
        assert_eq!(
            told.lock().unwrap()[1],
            "log: writing works again; 23 line(s) were lost"
        );
        sink.try_log(open());
        sink.try_log(open());
        let totals = w.finish_within(Duration::from_secs(10));
        assert_eq!(
            totals,
            LogTotals {
                written: 2,
                lost: 23,
                write_errors: disk.failed_writes.load(Ordering::SeqCst),
                dropped: 0,
                not_written: 0,
            }
        );
        assert!(totals.write_errors >= 1);
        let text = String::from_utf8(disk.buf.lock().unwrap().clone()).unwrap();
        assert_eq!(events(&text), ["log_lines_lost", "open", "open"]);
        assert!(
            text.lines().next().unwrap().ends_with(
                r#""event":"log_lines_lost","lost":23,"lost_total":23,"error":"No space left on device (os error 28)"}"#
            ),
            "{text}"
        );
    }

    #[test]
    fn a_line_cut_by_a_full_disk_is_ended_before_the_next_one() {
        let mut one = String::new();
        Formatter::new(vec!["l".into()], LogFormat::Json).record(&mut one, &open());
        let disk = Disk::default();
        disk.full.store(true, Ordering::SeqCst);
        // Room for one line and the start of the next.
        disk.room.store(one.len() + 10, Ordering::SeqCst);
        let w = LogWriter::spawn_with(
            1,
            4,
            vec!["l".into()],
            LogFormat::Json,
            Box::new(disk.clone()),
            LogOptions {
                retry: Duration::from_millis(10),
                notify: Box::new(|_| {}),
            },
        )
        .unwrap();
        let sink = w.sink(0);
        for _ in 0..3 {
            sink.try_log(open());
        }
        wait_for("2 lines lost", || w.lines_lost() == 2);
        disk.full.store(false, Ordering::SeqCst);
        let totals = w.finish_within(Duration::from_secs(10));
        assert_eq!((totals.written, totals.lost), (1, 2));
        let text = String::from_utf8(disk.buf.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0].len() + 1, one.len());
        assert_eq!(lines[1], &lines[0][..10]);
        assert!(
            lines[2].ends_with(r#""event":"log_lines_lost","lost":2,"lost_total":2,"error":"No space left on device (os error 28)"}"#),
            "{text}"
        );
    }

    #[test]
    fn a_blocked_output_holds_finish_for_a_bounded_time_and_counts_what_is_left() {
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let out = Stuck {
            entered: entered_tx,
            release: release_rx,
        };
        let w = LogWriter::spawn_with(
            1,
            64,
            vec!["l".into()],
            LogFormat::Json,
            Box::new(out),
            LogOptions {
                retry: Duration::from_secs(1),
                notify: Box::new(|_| {}),
            },
        )
        .unwrap();
        let sink = w.sink(0);
        for _ in 0..3 {
            sink.try_log(open());
        }
        // The writer is stuck writing (some of) those three.
        entered.recv().unwrap();
        sink.try_log(open());
        sink.try_log(open());
        w.event(EventLine {
            event: "summary",
            fields: vec![],
        });
        let waited = Instant::now();
        let totals = w.finish_within(Duration::from_millis(100));
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "{:?}",
            waited.elapsed()
        );
        assert_eq!(
            totals,
            LogTotals {
                written: 0,
                lost: 0,
                write_errors: 0,
                dropped: 0,
                not_written: 6,
            }
        );
        drop(release);
    }
}
