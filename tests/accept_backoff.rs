//! A listener whose accept runs out of descriptors (EMFILE) pauses instead
//! of retrying at once: 50 ms, doubling to 1 s while it lasts, so the shard
//! does not spin; once descriptors are free again every waiting connection
//! is accepted. Descriptors are process-wide, so this file holds this one
//! test, alone in its process.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{round_trip, server, tcp};
use ringport::engine::EngineDrop;

const CLIENTS: usize = 8;

/// Takes every descriptor number left (duplicates of stdin), up to the
/// open-files limit the engine raised at start; returns them to close.
/// Filling the table, rather than lowering the limit, is what io_uring
/// sees too: its accept took the limit when it was armed.
fn fill_descriptor_table() -> Vec<i32> {
    let mut held = Vec::new();
    loop {
        // SAFETY: dup of stdin; closed by the caller.
        let fd = unsafe { libc::dup(0) };
        if fd < 0 {
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EMFILE)
            );
            return held;
        }
        held.push(fd);
    }
}

#[test]
fn accept_out_of_descriptors_backs_off_and_recovers() {
    let srv = server().listen(tcp("echo", 1)).start();
    let addr = srv.addr(0);
    let socks: Vec<socket2::Socket> = (0..CLIENTS)
        .map(|_| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap())
        .collect();
    // No descriptor left for the server's accept.
    let held = fill_descriptor_table();
    for s in &socks {
        s.connect(&addr.into())
            .expect("the kernel completes the handshake");
    }
    let before = srv.totals();
    std::thread::sleep(Duration::from_millis(1500));
    let during = srv.totals();
    for fd in held {
        // SAFETY: the duplicates made above, closed once.
        unsafe { libc::close(fd) };
    }
    let failed = during.engine_drops[EngineDrop::AcceptFailed as usize];
    // 50 + 100 + 200 + 400 + 800 ms of pauses fit in 1.5 s: at most six
    // failures, each followed by a pause (the loop spun millions of times
    // per second before).
    assert!((1..=6).contains(&failed), "{failed} accept failures");
    assert_eq!(during.accept_pauses, failed);
    assert_eq!(during.conns_accepted, 0);
    assert!(
        during.turns - before.turns < 100,
        "{} loop turns while paused",
        during.turns - before.turns
    );
    // Descriptors are back: within the longest pause, everyone is served.
    srv.wait_totals("every waiting connection accepted", |c| {
        c.conns_accepted == CLIENTS as u64
    });
    for s in socks {
        let mut stream: TcpStream = s.into();
        round_trip(&mut stream, b"hello", b"hello");
    }
}
