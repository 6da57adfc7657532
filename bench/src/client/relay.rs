//! relay-fanout's client thread: subscribers and publishers on one ring.
//!
//! Each thread takes every `threads`-th subscriber and publisher (by global
//! index, so connection `i` goes to the server's port `i % ports` and the
//! load covers every shard whatever the thread count). Before the run starts
//! each subscriber sends `SUBSCRIBE` and `PING` and waits for the `PONG`:
//! the relay handles one connection's frames in order and keeps a
//! subscription on the subscriber's own shard, so once the `PONG` is back,
//! every later publish on any shard reaches it (a publish crosses to other
//! shards only after it was handled, which is after the `PONG` was read).
//! The threads meet at the start barrier only after all of that.
//!
//! In the loop, publishers queue what is due and the subscribers' multishot
//! receives feed [`SubscriberStream`]s. When the window ends (or every
//! publisher reached its `--messages` share) the thread adds what it
//! published to [`Shared`]; once every thread has, each subscriber knows
//! exactly how many messages it is owed, and the thread drains until all
//! are accounted for (received, or reported missed by `LAGGED`), nothing
//! arrives for [`DRAIN_QUIET_NS`], or [`DRAIN_MAX_NS`] has passed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use ringport_protocols::relay::wire::{Repr, HEADER_LEN};

use super::driver::{Driver, KIND_MASK, KIND_RECV, KIND_SEND};
use super::relay_pub::{PublishCtx, Publisher, KIND_DGRAM, SLOT_BITS};
use super::{udp::udp_socket, ClientReport, Clock, Schedule, ThreadLoad};
use crate::fanout::stream::SubscriberStream;
use crate::fanout::{topic_name, FanoutCounts, RelaySpec};
use crate::latency::{sleep_for, Pacer};

/// After everything is published, the drain ends when nothing arrived for this long.
pub const DRAIN_QUIET_NS: u64 = 1_000_000_000;
/// ... and at the latest this long after the window's end.
pub const DRAIN_MAX_NS: u64 = 10_000_000_000;
/// How long a subscriber waits for the `PONG` confirming its subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The payload of the `PING` that follows a `SUBSCRIBE`.
const SUBSCRIBED: &[u8] = b"subscribed";

/// What the threads of one run share: the final publish counts.
#[derive(Debug)]
pub(crate) struct Shared {
    published: Vec<AtomicU64>,
    reported: AtomicUsize,
    threads: usize,
}

impl Shared {
    pub(crate) fn new(topics: usize, threads: usize) -> Shared {
        Shared {
            published: (0..topics).map(|_| AtomicU64::new(0)).collect(),
            reported: AtomicUsize::new(0),
            threads,
        }
    }

    /// Adds one thread's final publish counts per topic.
    fn report(&self, published: &[u64]) {
        for (a, &n) in self.published.iter().zip(published) {
            a.fetch_add(n, Ordering::Relaxed);
        }
        self.reported.fetch_add(1, Ordering::Release);
    }

    /// Publishes per topic of the whole run, once every thread has reported.
    fn totals(&self) -> Option<Vec<u64>> {
        (self.reported.load(Ordering::Acquire) == self.threads).then(|| {
            let totals = self.published.iter();
            totals.map(|a| a.load(Ordering::Relaxed)).collect()
        })
    }
}

struct Sub {
    stream: TcpStream,
    topic: usize,
    rx: SubscriberStream,
    dead: bool,
}

/// One client thread of relay-fanout.
pub struct RelayThread {
    // Declared first: the ring is closed before the publishers' send buffers.
    driver: Driver,
    live: Arc<AtomicU64>,
    shared: Arc<Shared>,
    relay: RelaySpec,
    size: usize,
    slack_ns: u64,
    interval_ns: u64,
    topics: Vec<Vec<u8>>,
    subs: Vec<Sub>,
    pubs: Vec<Publisher>,
    /// Global index of each publisher of this thread (spreads their schedules).
    pub_index: Vec<usize>,
    counts: FanoutCounts,
    /// This thread's publish counts are in `shared`.
    reported: bool,
    /// Every thread's publish counts, once all are in.
    totals: Option<Vec<u64>>,
    /// When the last bytes arrived, or the totals became known if later.
    quiet_since: u64,
}

/// The frames that subscribe to `topic` and ask for proof of it.
fn subscribe_frames(topic: &[u8]) -> Vec<u8> {
    let mut f = Repr::Subscribe { topic }.to_vec();
    f.extend(
        Repr::Ping {
            payload: SUBSCRIBED,
        }
        .to_vec(),
    );
    f
}

/// Connects the subscribers to `addrs` and returns once every subscription
/// is confirmed.
fn subscribe_all(targets: &[(SocketAddr, Vec<u8>)]) -> Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(targets.len());
    for (addr, topic) in targets {
        let mut s = TcpStream::connect_timeout(addr, Duration::from_secs(3))
            .with_context(|| format!("connecting a subscriber to {addr}"))?;
        s.set_nodelay(true)?;
        s.write_all(&subscribe_frames(topic))
            .with_context(|| format!("subscribing at {addr}"))?;
        streams.push(s);
    }
    let pong = Repr::Pong {
        payload: SUBSCRIBED,
    }
    .to_vec();
    for (s, (addr, _)) in streams.iter_mut().zip(targets) {
        s.set_read_timeout(Some(SUBSCRIBE_TIMEOUT))?;
        let mut got = vec![0; pong.len()];
        s.read_exact(&mut got).with_context(|| {
            format!("waiting for the PONG after SUBSCRIBE at {addr} (does it speak relay?)")
        })?;
        if got != pong {
            return Err(anyhow!(
                "{addr} answered a SUBSCRIBE + PING with {got:02x?}, not the PONG (does it speak relay?)"
            ));
        }
        s.set_read_timeout(None)?;
    }
    Ok(streams)
}

/// This thread's share of `0..n`: every `threads`-th index from `thread`.
fn share(thread: usize, threads: usize, n: usize) -> impl Iterator<Item = usize> {
    (thread..n).step_by(threads.max(1))
}

/// The `--messages` share of publisher `i` (`u64::MAX`: no cap).
fn publisher_cap(messages: Option<u64>, publishers: usize, i: usize) -> u64 {
    let p = publishers as u64;
    messages.map_or(u64::MAX, |m| m / p + u64::from((i as u64) < m % p))
}

/// Connects this thread's share of the subscribers (subscriber `j` on
/// `sub_addrs[j % len]`) and waits until every subscription is active.
fn connect_subscribers(
    load: &ThreadLoad,
    relay: &RelaySpec,
    topics: &[Vec<u8>],
) -> Result<Vec<Sub>> {
    let ids: Vec<usize> = share(load.thread, load.threads, relay.subscribers).collect();
    let addrs = &load.sub_addrs;
    let targets: Vec<(SocketAddr, Vec<u8>)> = (ids.iter())
        .map(|&j| {
            (
                addrs[j % addrs.len()],
                topics[relay.topic_of_subscriber(j)].clone(),
            )
        })
        .collect();
    let streams = subscribe_all(&targets)?;
    let subs = streams.into_iter().zip(&ids).map(|(stream, &j)| {
        let topic = relay.topic_of_subscriber(j);
        Sub {
            stream,
            topic,
            rx: SubscriberStream::new(topics[topic].clone(), load.spec.size, relay.publishers),
            dead: false,
        }
    });
    Ok(subs.collect())
}

/// Connects the publishers with global indices `ids` (publisher `i` on
/// `addrs[i % len]`, TCP or UDP); `max_frame` is the longest `PUBLISH`.
fn connect_publishers(
    load: &ThreadLoad,
    relay: &RelaySpec,
    ids: &[usize],
    max_frame: usize,
) -> Result<Vec<Publisher>> {
    let mut pubs = Vec::with_capacity(ids.len());
    for &i in ids {
        let addr = load.addrs[i % load.addrs.len()];
        let cap = publisher_cap(load.spec.messages, relay.publishers, i);
        pubs.push(if relay.publish_udp {
            Publisher::udp(i as u32, udp_socket(addr)?, cap, max_frame)
        } else {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                .with_context(|| format!("connecting a publisher to {addr}"))?;
            s.set_nodelay(true)?;
            Publisher::tcp(i as u32, s, cap)
        });
    }
    Ok(pubs)
}

impl RelayThread {
    pub(super) fn new(load: &ThreadLoad) -> Result<RelayThread> {
        let spec = &load.spec;
        let relay = (spec.relay.clone()).ok_or_else(|| anyhow!("relay settings missing"))?;
        let shared = (load.relay.clone()).ok_or_else(|| anyhow!("relay state missing"))?;
        let topics: Vec<Vec<u8>> = (0..relay.topics).map(topic_name).collect();
        let subs = connect_subscribers(load, &relay, &topics)?;
        let pub_index: Vec<usize> = share(load.thread, load.threads, relay.publishers).collect();
        let max_frame = HEADER_LEN + topics.iter().map(Vec::len).max().unwrap_or(0) + spec.size;
        let pubs = connect_publishers(load, &relay, &pub_index, max_frame)?;
        let bufs = (subs.len() * 4).clamp(256, 4096).next_power_of_two() as u16;
        Ok(RelayThread {
            driver: Driver::new(1024, bufs, 16 * 1024)?,
            live: load.live.clone(),
            shared,
            counts: FanoutCounts::new(relay.topics),
            interval_ns: Pacer::interval_for(spec.rate, relay.publishers),
            relay,
            size: spec.size,
            slack_ns: spec.pace_slack.as_nanos() as u64,
            topics,
            subs,
            pubs,
            pub_index,
            reported: false,
            totals: None,
            quiet_since: 0,
        })
    }

    pub(super) fn run(&mut self, clock: &Clock, schedule: &Schedule) -> Result<ClientReport> {
        let mut report = ClientReport::new(schedule);
        self.arm(schedule);
        while clock.now() < schedule.start_ns {
            std::hint::spin_loop();
        }
        loop {
            let now = clock.now();
            let published: u64 = self.counts.published.iter().sum();
            self.live.store(published, Ordering::Relaxed);
            let open = now < schedule.end_ns;
            let next_due = if open {
                self.publish_due(now, schedule)
            } else {
                u64::MAX
            };
            self.flush();
            if self.finished(now, open, schedule) {
                break;
            }
            let wait = if open {
                sleep_for(now, next_due, self.slack_ns, 10_000_000)
            } else {
                5_000_000
            };
            self.driver.submit_and_wait(wait);
            self.handle_completions(clock.now(), &mut report);
        }
        Ok(self.finish(report))
    }

    /// Arms every receive and starts every publisher's schedule.
    fn arm(&mut self, schedule: &Schedule) {
        for (i, s) in self.subs.iter().enumerate() {
            self.driver.arm_recv(s.stream.as_raw_fd(), i as u64);
        }
        let n = self.relay.publishers as u64;
        for (k, p) in self.pubs.iter_mut().enumerate() {
            // Spread the publishers' schedules over one interval.
            let offset = self.interval_ns * self.pub_index[k] as u64 / n;
            p.start(schedule.start_ns + offset, self.interval_ns);
            if let Some(fd) = p.tcp_fd() {
                self.driver.arm_recv(fd, (self.subs.len() + k) as u64);
            }
        }
    }

    /// Publishes what is due; returns when the next publish is due.
    fn publish_due(&mut self, now: u64, schedule: &Schedule) -> u64 {
        let mut ctx = PublishCtx {
            relay: &self.relay,
            topics: &self.topics,
            size: self.size,
            schedule,
            counts: &mut self.counts,
        };
        let base = self.subs.len() as u64;
        let mut next = u64::MAX;
        for (k, p) in self.pubs.iter_mut().enumerate() {
            next = next.min(p.publish_due(now, base + k as u64, &mut self.driver, &mut ctx));
        }
        next
    }

    fn flush(&mut self) {
        let base = self.subs.len() as u64;
        for (k, p) in self.pubs.iter_mut().enumerate() {
            p.flush(base + k as u64, &mut self.driver);
        }
    }

    /// Whether the thread is done: everything published and handed to the
    /// kernel, and every subscriber drained (see the module doc).
    fn finished(&mut self, now: u64, open: bool, schedule: &Schedule) -> bool {
        if now > schedule.end_ns + DRAIN_MAX_NS {
            return true;
        }
        if !self.reported {
            let done = !open || self.pubs.iter().all(Publisher::capped);
            if !done || !self.pubs.iter().all(Publisher::idle) {
                return false;
            }
            self.shared.report(&self.counts.published);
            self.reported = true;
        }
        if self.totals.is_none() {
            self.totals = self.shared.totals();
            self.quiet_since = self.quiet_since.max(now);
        }
        let Some(totals) = &self.totals else {
            return false;
        };
        let all_in = (self.subs.iter())
            .all(|s| s.dead || s.rx.broken || s.rx.accounted() >= totals[s.topic]);
        all_in || now > self.quiet_since + DRAIN_QUIET_NS
    }

    fn handle_completions(&mut self, now: u64, report: &mut ClientReport) {
        let completions = std::mem::take(&mut self.driver.completions);
        let nsubs = self.subs.len();
        for c in &completions {
            let idx = (c.user_data & !KIND_MASK) as usize;
            match c.user_data & KIND_MASK {
                KIND_RECV if idx < nsubs => self.on_sub_recv(idx, c, now, report),
                KIND_RECV => self.on_pub_recv(idx, c, report),
                KIND_SEND => self.on_pub_sent(idx, c.result, report),
                KIND_DGRAM => self.on_datagram_sent(idx, c.result, report),
                _ => {}
            }
        }
        self.driver.completions = completions;
    }

    fn on_sub_recv(
        &mut self,
        i: usize,
        c: &super::driver::Completion,
        now: u64,
        report: &mut ClientReport,
    ) {
        let s = &mut self.subs[i];
        if c.result == -libc::ENOBUFS {
            self.driver.arm_recv(s.stream.as_raw_fd(), i as u64);
            return;
        }
        if c.result <= 0 {
            if !s.dead {
                s.dead = true;
                report.io_errors += 1;
            }
            return;
        }
        if let Some(bid) = Driver::buffer(c.flags) {
            let data = self.driver.bufs.filled(bid, c.result as usize);
            s.rx.handle_bytes(data, now, &mut report.recorder);
            self.driver.bufs.recycle(bid);
            self.quiet_since = self.quiet_since.max(now);
        }
        if !Driver::more(c.flags) {
            self.driver.arm_recv(s.stream.as_raw_fd(), i as u64);
        }
    }

    /// A TCP publisher's send completed.
    fn on_pub_sent(&mut self, idx: usize, result: i32, report: &mut ClientReport) {
        let p = &mut self.pubs[idx - self.subs.len()];
        if !p.on_sent(result, idx as u64, &mut self.driver) {
            report.io_errors += 1;
        }
    }

    /// A datagram send completed: `tag` holds the publisher's index and the slot.
    fn on_datagram_sent(&mut self, tag: usize, result: i32, report: &mut ClientReport) {
        let (idx, slot) = (tag >> SLOT_BITS, (tag & ((1 << SLOT_BITS) - 1)) as u32);
        if !self.pubs[idx - self.subs.len()].on_datagram_sent(slot, result) {
            report.io_errors += 1;
        }
    }

    /// A publisher gets nothing from the relay: bytes are an error, an end
    /// of stream an I/O error.
    fn on_pub_recv(
        &mut self,
        idx: usize,
        c: &super::driver::Completion,
        report: &mut ClientReport,
    ) {
        let p = &mut self.pubs[idx - self.subs.len()];
        if c.result == -libc::ENOBUFS {
            if let Some(fd) = p.tcp_fd() {
                self.driver.arm_recv(fd, idx as u64);
            }
            return;
        }
        if c.result <= 0 {
            if !p.dead {
                p.dead = true;
                report.io_errors += 1;
            }
            return;
        }
        report.errors += 1;
        if let Some(bid) = Driver::buffer(c.flags) {
            self.driver.bufs.recycle(bid);
        }
        if !Driver::more(c.flags) {
            if let Some(fd) = p.tcp_fd() {
                self.driver.arm_recv(fd, idx as u64);
            }
        }
    }

    /// Sums the subscribers' counts into the report and closes everything.
    fn finish(&mut self, mut report: ClientReport) -> ClientReport {
        for s in &self.subs {
            report.errors += s.rx.errors;
            report.completed += s.rx.in_window;
            self.counts.counts.merge(&s.rx.counts);
            self.counts.lagged += s.rx.lagged;
            let _ = s.stream.shutdown(std::net::Shutdown::Both);
        }
        for p in &self.pubs {
            p.shutdown();
        }
        let c = &self.counts;
        report.sent = c.published.iter().sum();
        report.received = c.counts.delivered;
        report.duplicates = c.counts.duplicates;
        report.reordered = c.counts.reordered;
        report.fanout = Some(c.clone());
        report
    }
}
