//! Relay clients for the soak: subscribers that read and account for every
//! message, subscribers that never read, and a paced publisher.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringport::protocols::relay::wire::{self, Framing, Packet, Repr};
use socket2::{Domain, Protocol, Socket, Type};

/// The topic every soak subscriber subscribes to and the publisher uses.
pub const TOPIC: &[u8] = b"soak";

const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A TCP connection to `to` from `from` (any port), with SO_RCVBUF set
/// before the handshake when `rcvbuf` is given (so the window stays small).
pub fn connect_from(from: Ipv4Addr, to: SocketAddr, rcvbuf: Option<usize>) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("a TCP socket");
    if let Some(n) = rcvbuf {
        s.set_recv_buffer_size(n).expect("SO_RCVBUF");
    }
    s.bind(&SocketAddrV4::new(from, 0).into())
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    s.connect(&to.into())
        .unwrap_or_else(|e| panic!("connect {from} -> {to}: {e}"));
    s.set_nodelay(true).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// SUBSCRIBE to [`TOPIC`] then PING, and waits for the PONG (the
/// subscription is active once it arrives).
fn subscribe(s: &mut TcpStream) {
    let mut frames = Repr::Subscribe { topic: TOPIC }.to_vec();
    frames.extend(Repr::Ping { payload: b"" }.to_vec());
    s.write_all(&frames).expect("subscribe");
    let mut pong = [0u8; wire::HEADER_LEN];
    s.read_exact(&mut pong).expect("the PONG of a subscription");
    assert_eq!(pong, Repr::Pong { payload: b"" }.to_vec()[..]);
}

/// A subscriber that never reads after its subscription is active.
pub struct NonReader(TcpStream);

impl NonReader {
    /// Connects from `from` with a `rcvbuf`-byte receive buffer and
    /// subscribes.
    pub fn subscribe(from: Ipv4Addr, to: SocketAddr, rcvbuf: usize) -> NonReader {
        let mut s = connect_from(from, to, Some(rcvbuf));
        subscribe(&mut s);
        NonReader(s)
    }
}

/// Reads every non-reader until each either ends (EOF or reset: the server
/// closed it) or stays silent while the others go quiet for `quiet`;
/// returns how many ended.
pub fn count_closed(subs: Vec<NonReader>, quiet: Duration, within: Duration) -> usize {
    let mut open: Vec<TcpStream> = subs.into_iter().map(|s| s.0).collect();
    for s in &open {
        s.set_nonblocking(true).unwrap();
    }
    let (mut closed, mut buf) = (0, vec![0u8; 1 << 16]);
    let deadline = Instant::now() + within;
    let mut last_data = Instant::now();
    while !open.is_empty() && last_data.elapsed() < quiet {
        assert!(Instant::now() < deadline, "non-readers still receiving");
        let mut fds: Vec<libc::pollfd> = open
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live array of `len` pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        if n <= 0 {
            continue;
        }
        let mut ended = Vec::new();
        for (i, p) in fds.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            loop {
                match open[i].read(&mut buf) {
                    Ok(0) => {
                        ended.push(i);
                        break;
                    }
                    Ok(_) => last_data = Instant::now(),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                        ended.push(i);
                        break;
                    }
                    Err(e) => panic!("reading a non-reader: {e}"),
                }
            }
        }
        closed += ended.len();
        for &i in ended.iter().rev() {
            open.swap_remove(i);
        }
    }
    closed
}

/// What a reading subscriber received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderReport {
    /// MESSAGE frames.
    pub received: u64,
    /// The sum of LAGGED counts.
    pub lagged: u64,
    /// LAGGED frames.
    pub lagged_frames: u64,
}

/// A subscriber that reads everything on a thread of its own and checks
/// that messages and LAGGED counts account for every publish in order:
/// each MESSAGE carries the next sequence number not yet accounted for.
pub struct Reader {
    target: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<ReaderReport>,
}

impl Reader {
    /// Connects from `from`, subscribes, and starts reading.
    pub fn start(from: Ipv4Addr, to: SocketAddr) -> Reader {
        let mut s = connect_from(from, to, None);
        subscribe(&mut s);
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let target = Arc::new(AtomicU64::new(u64::MAX));
        let t = target.clone();
        let thread = std::thread::Builder::new()
            .name("relay-reader".into())
            .spawn(move || read_all(s, &t))
            .expect("spawn a reader");
        Reader { target, thread }
    }

    /// Waits until this reader has accounted for `published` messages.
    ///
    /// # Panics
    ///
    /// When the reader's checks failed or it did not get there in time.
    pub fn finish(self, published: u64) -> ReaderReport {
        self.target.store(published, Ordering::Relaxed);
        self.thread.join().expect("a reader failed")
    }
}

fn read_all(mut s: TcpStream, target: &AtomicU64) -> ReaderReport {
    let mut r = ReaderReport::default();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 16];
    let mut deadline = None;
    loop {
        // Every whole frame in the buffer.
        let mut at = 0;
        while let Framing::Frame(_, len) = wire::next_frame(&buf[at..], u32::MAX as usize) {
            let frame = &buf[at..at + len];
            match Repr::parse(&Packet::new_unchecked(frame), len) {
                Ok(Repr::Message { topic, payload }) => {
                    assert_eq!(topic, TOPIC);
                    let seq = u64::from_be_bytes(payload[..8].try_into().unwrap());
                    let next = r.received + r.lagged;
                    assert_eq!(
                        seq, next,
                        "a reader got message {seq} when {next} were accounted for \
                         ({} received, {} lagged)",
                        r.received, r.lagged
                    );
                    r.received += 1;
                }
                Ok(Repr::Lagged { count }) => {
                    assert!(count > 0, "LAGGED 0");
                    r.lagged += count;
                    r.lagged_frames += 1;
                }
                other => panic!("a reader got an unexpected frame: {other:?}"),
            }
            at += len;
        }
        if let Framing::Invalid(e) = wire::next_frame(&buf[at..], u32::MAX as usize) {
            panic!("a reader got a bad frame: {e}");
        }
        buf.drain(..at);
        let want = target.load(Ordering::Relaxed);
        if want != u64::MAX {
            let done = r.received + r.lagged;
            assert!(done <= want, "{done} accounted for, {want} published");
            if done == want {
                return r;
            }
            let d = *deadline.get_or_insert_with(|| Instant::now() + IO_TIMEOUT);
            assert!(
                Instant::now() < d,
                "a reader accounted for {done} of {want} messages ({r:?})"
            );
        }
        match s.read(&mut chunk) {
            Ok(0) => panic!("the server closed a reading subscriber ({r:?})"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("a reader's read failed: {e} ({r:?})"),
        }
    }
}

/// Publishes `payload`-byte messages (the first 8 bytes the sequence
/// number) to [`TOPIC`] at `rate` per second from `from` until `stop`,
/// then waits for a PONG so that the server has handled every one;
/// returns how many were published.
pub fn publish(
    from: Ipv4Addr,
    to: SocketAddr,
    payload: usize,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut s = connect_from(from, to, None);
    let mut body = vec![0xa5u8; payload.max(8)];
    let start = Instant::now();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if seq >= due {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        body[..8].copy_from_slice(&seq.to_be_bytes());
        let frame = Repr::Publish {
            topic: TOPIC,
            payload: &body,
        }
        .to_vec();
        s.write_all(&frame).expect("publish");
        seq += 1;
    }
    s.write_all(&Repr::Ping { payload: b"" }.to_vec())
        .expect("ping");
    let mut pong = [0u8; wire::HEADER_LEN];
    s.read_exact(&mut pong).expect("the publisher's PONG");
    assert_eq!(pong, Repr::Pong { payload: b"" }.to_vec()[..]);
    seq
}
