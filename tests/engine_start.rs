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
