//! What an idle stream costs the engine in heap: [`STREAMS`] loopback
//! clients connect to one shard's `echo` listener (a plugin that keeps
//! nothing per stream), each sends one message and reads its echo back,
//! then all sit idle. The heap the process holds then, less what it held
//! before they connected, over the streams, must stay under [`bound`].
//!
//! That is the engine's per-stream state with real sockets on the test's
//! backend (`RINGPORT_BACKEND`): the connection table's slot, the guard's
//! record and deadline entry, the send buffer the stream keeps after its
//! reply (32 B), and what the backend keeps per socket. [`STREAMS`] is a power of two,
//! so each table is exactly full and nothing is counted for room a table
//! keeps after doubling. Heap is counted as glibc spends it
//! (`common/holding.rs`); this file holds a single test.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{connect, server, tcp};
use ringport::engine::operations::{Limits, ListenerOps, Operations};

#[path = "common/holding.rs"]
mod holding;

/// Streams held open.
const STREAMS: usize = 2048;
/// Most engine heap bytes per idle stream: 168 B of slot, 80 B of guard
/// record, 16 B of deadline entry and a 32 B send buffer (296 B, 448 B
/// before BENCHMARKS.md's "Engine memory per idle stream" cuts); the epoll
/// backend keeps 40 B more per socket.
fn bound() -> i64 {
    match common::test_backend() {
        ringport::engine::BackendChoice::Epoll => 336,
        _ => 296,
    }
}

#[test]
fn an_idle_stream_holds_little_engine_heap() {
    let ops = ListenerOps {
        tls: None,
        allow: None,
        limits: Limits {
            max_conns_per_source: 0,
            conn_rate: None,
            ..Limits::default()
        },
    };
    let srv = server()
        .listen(tcp("echo", 1))
        .operations(Operations {
            listeners: vec![ops],
            ..Operations::default()
        })
        .start();
    let addr = srv.addr(0);
    let mut clients: Vec<TcpStream> = Vec::with_capacity(STREAMS);
    std::thread::sleep(Duration::from_millis(100));
    let before = holding::held();

    let mut wrong = 0;
    for i in 0..STREAMS {
        let mut s = connect(addr);
        let msg = (i as u64).to_le_bytes();
        s.write_all(&msg).expect("write");
        let mut echo = [0u8; 8];
        s.read_exact(&mut echo).expect("read the echo");
        if echo != msg {
            wrong += 1;
        }
        clients.push(s);
    }
    let streams = STREAMS as u64;
    let t = srv.wait_totals("every echo sent", |c| c.bytes_out == streams * 8);
    assert_eq!(
        (t.conns_accepted, t.bytes_in, wrong),
        (streams, streams * 8, 0)
    );
    std::thread::sleep(Duration::from_millis(100));
    let per_stream = (holding::held() - before) / STREAMS as i64;
    println!("engine heap per idle stream: {per_stream} B");
    let bound = bound();
    assert!(
        per_stream <= bound,
        "{per_stream} B of heap per idle stream, above {bound} B"
    );
    drop(clients);
    srv.wait_totals("every stream closed", |c| c.conns_closed == streams);
}
