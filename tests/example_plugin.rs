//! The example out-of-tree plugin `upper`, registered next to the built-ins
//! and served by the engine end to end.

mod common;

use std::net::UdpSocket;

use common::{connect, retry_eintr, round_trip, server, tcp, udp, IO_TIMEOUT};
use ringport::protocols::{builtins, BuiltinSettings};

#[test]
fn upper_is_served_over_tcp_and_udp_next_to_the_builtins() {
    let mut registry = builtins(&BuiltinSettings::default());
    ringport_example_upper::register(&mut registry);
    let srv = server()
        .registry(registry)
        .listen(tcp("upper", 1))
        .listen(udp("upper", 1))
        .listen(tcp("echo", 1))
        .start();

    let mut s = connect(srv.addr(0));
    round_trip(
        &mut s,
        "hello, wörld 123".as_bytes(),
        "HELLO, WöRLD 123".as_bytes(),
    );
    round_trip(&mut s, b"second {batch}", b"SECOND {BATCH}");

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock.connect(srv.addr(1)).unwrap();
    sock.send(b"datagram: abc").unwrap();
    let mut buf = [0u8; 64];
    let n = retry_eintr(|| sock.recv(&mut buf)).unwrap();
    assert_eq!(&buf[..n], b"DATAGRAM: ABC");

    // The built-in on the same engine is untouched by the plugin next to it.
    let mut e = connect(srv.addr(2));
    round_trip(&mut e, b"lower stays lower", b"lower stays lower");

    // `upper` counts each batch and datagram, `echo` each batch.
    let t = srv.wait_totals("four messages", |c| c.msgs == 3 + 1);
    assert_eq!(t.conns_accepted, 2);
    assert_eq!(t.datagrams_in, 1);
    assert_eq!(t.drops_total(), 0, "{:?}", t.drop_list());
}

/// The out-of-tree plugin, unchanged, behind a `tls` listener: it sees
/// plaintext.
#[test]
fn upper_is_served_over_tls_unchanged() {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use common::pki::{client_config, loopback_name, Pki};
    use ringport::engine::operations::{ListenerOps, Operations};
    use ringport::engine::tls::{ListenerTls, TlsSettings};

    let pki = Pki::new();
    let mut registry = builtins(&BuiltinSettings::default());
    ringport_example_upper::register(&mut registry);
    let tls = ListenerTls::new(TlsSettings::new(&pki.server.cert, &pki.server.key), false).unwrap();
    let srv = server()
        .registry(registry)
        .listen(common::tls("upper", 1))
        .operations(Operations {
            listeners: vec![ListenerOps {
                tls: Some(Arc::new(tls)),
                ..ListenerOps::default()
            }],
            ..Operations::default()
        })
        .start();
    let tcp = connect(srv.addr(0));
    let cfg = client_config(&pki.ca.path, None, &[&rustls::version::TLS13]);
    let mut c = rustls::StreamOwned::new(
        rustls::ClientConnection::new(cfg, loopback_name()).unwrap(),
        tcp,
    );
    c.write_all("secret, wörld".as_bytes()).unwrap();
    let mut got = vec![0u8; "SECRET, WöRLD".len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, "SECRET, WöRLD".as_bytes());
    let t = srv.wait_totals("one message", |c| c.msgs == 1);
    assert_eq!(t.conns_accepted, 1);
}
