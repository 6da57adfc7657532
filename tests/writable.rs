//! `Plugin::handle_writable`: a stream whose queue refused a write is
//! handed back to its plugin once the peer has read enough, with no timer.
//! Runs on the backend `RINGPORT_BACKEND` names (the suite runs once on
//! each).

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{server, tcp, IO_TIMEOUT};
use ringport::engine::EngineConfig;
use ringport::plugin::{
    ConnId, Context, DropReason, Plugin, PluginFactory, Registry, ShardId, Transport, WriteError,
};

/// The stream's cap on queued bytes.
const CAP: usize = 64 << 10;
/// What the plugin writes at a time: the cap is 8 of them.
const CHUNK: usize = 8 << 10;
/// Bytes the plugin queues before its last one: more than the kernel's
/// socket buffers hold (`tcp_wmem` max 4 MiB), so the stream stalls
/// before the end while the client does not read.
const TOTAL: usize = 8 << 20;

/// What the plugin saw, shared with the test.
#[derive(Debug, Default)]
struct Seen {
    /// Bytes the queue took, in total.
    queued: usize,
    /// Writes refused, and with what.
    refused: Vec<WriteError>,
    /// `handle_writable` calls: the stream, and the bytes queued so far.
    writable: Vec<(ConnId, usize)>,
}

/// On `go`, writes chunks until the queue refuses one; on each
/// `handle_writable`, writes again until refused; once [`TOTAL`] bytes
/// are queued, writes `!` and stops.
struct Filler {
    seen: Arc<Mutex<Seen>>,
    /// The next chunk's byte (each chunk its own letter, so order shows).
    letter: u8,
}

impl Filler {
    fn fill(&mut self, ctx: &mut dyn Context, conn: ConnId) {
        let mut seen = self.seen.lock().unwrap();
        loop {
            if seen.queued >= TOTAL {
                ctx.write(conn, b"!").expect("room for the last byte");
                seen.queued += 1;
                return;
            }
            let chunk = [self.letter; CHUNK];
            match ctx.write(conn, &chunk) {
                Ok(()) => {
                    seen.queued += CHUNK;
                    self.letter = if self.letter == b'z' {
                        b'a'
                    } else {
                        self.letter + 1
                    };
                }
                Err(e) => {
                    seen.refused.push(e);
                    return;
                }
            }
        }
    }
}

impl Plugin for Filler {
    fn handle_data(
        &mut self,
        ctx: &mut dyn Context,
        conn: ConnId,
        data: &[u8],
    ) -> Result<usize, DropReason> {
        if data == b"go" {
            self.fill(ctx, conn);
        }
        Ok(data.len())
    }

    fn handle_writable(&mut self, ctx: &mut dyn Context, conn: ConnId) {
        let queued = self.seen.lock().unwrap().queued;
        self.seen.lock().unwrap().writable.push((conn, queued));
        self.fill(ctx, conn);
    }
}

struct FillerFactory(Arc<Mutex<Seen>>);

impl PluginFactory for FillerFactory {
    fn name(&self) -> &str {
        "filler"
    }
    fn supports(&self, t: Transport) -> bool {
        t == Transport::Tcp
    }
    fn create(&self, _: ShardId, _: usize) -> Box<dyn Plugin> {
        Box::new(Filler {
            seen: Arc::clone(&self.0),
            letter: b'a',
        })
    }
}

#[test]
fn a_refused_stream_is_handed_back_once_its_reader_catches_up() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut registry = Registry::new();
    registry
        .register(Arc::new(FillerFactory(Arc::clone(&seen))))
        .unwrap();
    let srv = server()
        .registry(registry)
        .config(EngineConfig {
            max_outbound: CAP,
            pause_outbound: CAP / 2,
            ..common::test_config()
        })
        .listen(tcp("filler", 1))
        .start();
    // A small receive buffer: the kernel holds little for this client.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&srv.addr(0).into()).unwrap();
    let mut s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"go").unwrap();

    // While the client reads nothing, the stream stalls with one refusal
    // not handed back: the plugin is not called for room that is not there.
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut last = (0, Instant::now());
    loop {
        let n = seen.lock().unwrap().refused.len();
        if n != last.0 {
            last = (n, Instant::now());
        } else if n > 0 && last.1.elapsed() > Duration::from_millis(300) {
            break;
        }
        assert!(Instant::now() < deadline, "the stream never stalled");
        std::thread::sleep(Duration::from_millis(5));
    }
    {
        let seen = seen.lock().unwrap();
        assert!(seen.queued < TOTAL, "no stall before the end");
        assert_eq!(seen.writable.len(), seen.refused.len() - 1);
    }

    // Reading everything lets the plugin fill the queue again and again,
    // then end with `!`: the bytes arrive in order and exactly once.
    let mut got = Vec::new();
    let mut buf = [0u8; 64 << 10];
    while got.last() != Some(&b'!') {
        let n = s.read(&mut buf).expect("the rest of the stream");
        assert!(n > 0, "the stream ended after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    let seen = seen.lock().unwrap();
    let rounds = seen.refused.len();
    assert_eq!(seen.refused, vec![WriteError::QueueFull; rounds]);
    assert_eq!(seen.writable.len(), rounds, "each refusal handed back once");
    assert_eq!(got.len(), seen.queued);
    let body = &got[..got.len() - 1];
    assert_eq!(body.len() % CHUNK, 0);
    for (i, chunk) in body.chunks(CHUNK).enumerate() {
        let letter = b'a' + (i % 26) as u8;
        assert!(chunk.iter().all(|&b| b == letter), "chunk {i}");
    }
    // Each hand-back came after the first refusal's fill, and each found
    // more queued than the one before.
    let conn = seen.writable[0].0;
    assert!(seen.writable.iter().all(|w| w.0 == conn));
    assert!(seen.writable[0].1 >= CAP - CHUNK);
    assert!(seen.writable.windows(2).all(|w| w[0].1 < w[1].1));
    drop(seen);
    drop(s);
    srv.wait_totals("the stream closed", |c| c.conns_closed == 1);
    srv.shutdown();
}
