//! What `ringport serve` says on standard error, written by a thread of its
//! own.
//!
//! Signals, alerts, reloads and the handshake log's trouble are told on
//! stderr. When stderr is a pipe nobody reads (above all when the handshake
//! log, `--log -`, has filled it), a write to it blocks; from the main
//! thread that would stop the signal loop and hang shutdown. So lines go
//! through a bounded queue to this thread instead: a full queue drops a line
//! (counted), and at exit the thread gets a bounded time to finish.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// Lines queued for the thread at most.
const QUEUE: usize = 1024;
/// How often an idle thread looks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(50);

enum Msg {
    Line(String),
    Stop,
}

#[derive(Debug, Default)]
struct Counts {
    /// Queued and not yet written.
    pending: AtomicU64,
    /// Dropped because the queue was full.
    dropped: AtomicU64,
}

/// A handle that queues lines; cheap to clone.
#[derive(Clone)]
pub struct Notices {
    tx: mpsc::SyncSender<Msg>,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices")
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl Notices {
    /// Queues `line`, which is written as `ringport: {line}`. Never blocks.
    pub fn say(&self, line: impl Into<String>) {
        self.counts.pending.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(Msg::Line(line.into())).is_err() {
            self.counts.pending.fetch_sub(1, Ordering::Relaxed);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The thread that writes the lines.
#[derive(Debug)]
pub struct NoticeWriter {
    notices: Notices,
    stop: Arc<AtomicBool>,
    /// Disconnected when the thread ends.
    ended: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl NoticeWriter {
    /// Starts the thread writing to `out` (stderr in `serve`).
    pub fn start(mut out: Box<dyn Write + Send>) -> std::io::Result<NoticeWriter> {
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE);
        let (ended_tx, ended) = mpsc::channel::<()>();
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (counts2, stop2) = (counts.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("ringport-stderr".into())
            .spawn(move || {
                let _ended = ended_tx;
                loop {
                    match rx.recv_timeout(STOP_POLL) {
                        Ok(Msg::Line(l)) => {
                            // Nowhere to tell a failure to write to stderr.
                            let _ = writeln!(out, "ringport: {l}");
                            let _ = out.flush();
                            counts2.pending.fetch_sub(1, Ordering::Relaxed);
                        }
                        Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if stop2.load(Ordering::Acquire) {
                                return;
                            }
                        }
                    }
                }
            })?;
        Ok(NoticeWriter {
            notices: Notices { tx, counts },
            stop,
            ended,
            thread: Some(thread),
        })
    }

    /// A handle to queue lines with.
    pub fn notices(&self) -> Notices {
        self.notices.clone()
    }

    /// Writes what is queued, waiting `wait` at most; returns how many lines
    /// were not written (dropped from a full queue, or still queued when
    /// stderr blocked past `wait`).
    pub fn finish_within(mut self, wait: Duration) -> u64 {
        self.stop_thread(wait)
    }

    fn stop_thread(&mut self, wait: Duration) -> u64 {
        self.stop.store(true, Ordering::Release);
        let _ = self.notices.tx.try_send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            if self.ended.recv_timeout(wait) != Err(mpsc::RecvTimeoutError::Timeout) {
                let _ = t.join();
            }
        }
        let c = &self.notices.counts;
        c.dropped.load(Ordering::Relaxed) + c.pending.load(Ordering::Relaxed)
    }
}

impl Drop for NoticeWriter {
    /// Gives queued lines a second, so that an error printed after them
    /// comes after them.
    fn drop(&mut self) {
        self.stop_thread(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Instant;

    /// Collects lines, or blocks every write until `release` is dropped.
    struct Out {
        buf: Arc<Mutex<Vec<u8>>>,
        block: Option<mpsc::Receiver<()>>,
    }
    impl Write for Out {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Some(r) = &self.block {
                let _ = r.recv();
            }
            self.buf.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order_and_a_blocked_stderr_costs_a_bounded_wait() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = NoticeWriter::start(Box::new(Out {
            buf: buf.clone(),
            block: None,
        }))
        .unwrap();
        let n = w.notices();
        n.say("one");
        n.say(format!("two {}", 2));
        assert_eq!(w.finish_within(Duration::from_secs(10)), 0);
        assert_eq!(
            String::from_utf8(buf.lock().unwrap().clone()).unwrap(),
            "ringport: one\nringport: two 2\n"
        );

        let (release, blocked) = mpsc::channel::<()>();
        let w = NoticeWriter::start(Box::new(Out {
            buf: Arc::default(),
            block: Some(blocked),
        }))
        .unwrap();
        let n = w.notices();
        // One line held in the write, the queue filled, and more dropped.
        for i in 0..QUEUE + 10 {
            n.say(format!("line {i}"));
        }
        let waited = Instant::now();
        assert_eq!(
            w.finish_within(Duration::from_millis(100)),
            QUEUE as u64 + 10
        );
        assert!(waited.elapsed() < Duration::from_secs(5));
        drop(release);
    }
}
