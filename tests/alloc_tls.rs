//! TLS steady state allocates nothing in the server: after warm-up,
//! 100,000 echo round trips over a TLS 1.3 connection (records opened in
//! place in the receive buffers, sealed in place in the send queue) cause
//! zero heap allocations outside the test's own client thread (rustls's
//! client allocates per record; it is exempted, the server is measured).
//!
//! One test in this file, so that no other test runs in the process.

mod common;
#[path = "common/counting.rs"]
mod counting;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::pki::{client_config, loopback_name, Pki};
use common::{server, tls, IO_TIMEOUT};
use counting::ALLOCATIONS;
use ringport::engine::operations::{ListenerOps, Operations};
use ringport::engine::tls::{ListenerTls, TlsSettings};
use rustls::{ClientConnection, StreamOwned};

const WARM_UP: u64 = 10_000;
const ROUNDS: u64 = 100_000;

#[test]
fn tls_echo_round_trips_allocate_nothing_in_the_server_after_warm_up() {
    let pki = Pki::new();
    let tls_listener = ListenerTls::new(TlsSettings::new(&pki.server.cert, &pki.server.key), false)
        .expect("load the TLS files");
    let srv = server()
        .shards(1)
        .listen(tls("echo", 1))
        .operations(Operations {
            listeners: vec![ListenerOps {
                tls: Some(Arc::new(tls_listener)),
                ..ListenerOps::default()
            }],
            ..Operations::default()
        })
        .start();
    let addr = srv.addr(0);
    let ca = pki.ca.path.clone();
    let client = std::thread::spawn(move || {
        counting::exempt_this_thread();
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_nodelay(true).unwrap();
        let cfg = client_config(&ca, None, &[&rustls::version::TLS13]);
        let mut s = StreamOwned::new(ClientConnection::new(cfg, loopback_name()).unwrap(), tcp);
        let mut request = [0u8; 64];
        let mut reply = [0u8; 64];
        let mut mismatches = 0u64;
        let mut round = |i: u64, s: &mut StreamOwned<ClientConnection, TcpStream>| {
            request[..8].copy_from_slice(&i.to_le_bytes());
            s.write_all(&request).expect("write");
            s.read_exact(&mut reply).expect("read the echo");
            if reply != request {
                mismatches += 1;
            }
        };
        for i in 0..WARM_UP {
            round(i, &mut s);
        }
        // Window: only the shard and this (exempt) client run.
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for i in 0..ROUNDS {
            round(WARM_UP + i, &mut s);
        }
        let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
        (allocated, mismatches)
    });
    let (allocated, mismatches) = client.join().unwrap();
    assert_eq!(mismatches, 0, "echoes that differ from their request");
    assert_eq!(
        allocated, 0,
        "{ROUNDS} TLS echo round trips allocated {allocated} times in the server"
    );
    let t = srv.wait_totals("every round counted", |c| c.msgs == WARM_UP + ROUNDS);
    assert_eq!(t.conns_accepted, 1);
}
