//! Side effects of starting an engine on the thread that starts it.

mod common;

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::time::Duration;

use common::{server, udp};

/// `EngineHandle::start` probes io_uring with a throwaway ring created on the
/// calling thread. When that ring is torn down, the kernel's exit work queues
/// task work on the thread with TWA_SIGNAL, which makes a blocking call with
/// a timeout (SO_RCVTIMEO) in that thread fail with `EINTR` once.
#[test]
fn start_does_not_interrupt_the_calling_thread() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 16];
    for round in 0..10 {
        let srv = server().listen(udp("echo", 1)).start();
        // Nothing is sent to `sock`: the only right outcome is a timeout.
        match sock.recv(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!(
                "round {round}: an idle recv with a 100 ms timeout on the thread that \
                 started the engine returned {other:?} instead of timing out"
            ),
        }
        drop(srv);
    }
}

/// `--batch-delay-us` waits with the kernel's `min_wait`; a shard with nothing
/// to do must still sleep until something arrives instead of waking once per
/// delay (which, without an overall timeout on the wait, the kernel does).
#[test]
fn an_idle_shard_with_a_batch_delay_does_not_wake() {
    let config = ringport::engine::EngineConfig {
        batch_delay_us: 100,
        ..Default::default()
    };
    let srv = server()
        .config(config)
        .listen(udp("echo", 1))
        .listen(common::tcp("echo", 1))
        .start();
    // One datagram through, so the shard has run turns and armed everything.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(b"ping", srv.addr(0)).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(common::retry_eintr(|| sock.recv(&mut buf)).unwrap(), 4);
    // The drop poll runs 100 ms after the last datagram; let it pass.
    std::thread::sleep(Duration::from_millis(300));
    let before = srv.totals().turns;
    std::thread::sleep(Duration::from_millis(500));
    let after = srv.totals().turns;
    // 500 ms at one wake per 100 us would be ~5,000 turns.
    assert_eq!(
        after - before,
        0,
        "an idle shard ran {} turns",
        after - before
    );
}
