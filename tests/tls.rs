//! TLS listeners end to end with a rustls client: echo byte for byte over
//! TLS 1.3 and (when configured) 1.2, records that straddle receive
//! buffers, resumption, and the counters and handshake log lines.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use common::pki::{client_config, loopback_name, Pki};
use common::{server, tls, IO_TIMEOUT};
use rand::{Rng, SeedableRng};
use ringport::engine::listener_stats::ListenerCounters;
use ringport::engine::operations::{ListenerOps, Operations};
use ringport::engine::tls::{HandshakeResult, ListenerTls, TlsSettings, TlsVersion};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

type Client = StreamOwned<ClientConnection, TcpStream>;

fn tls_ops(settings: TlsSettings) -> Operations {
    Operations {
        listeners: vec![ListenerOps {
            tls: Some(Arc::new(
                ListenerTls::new(settings, false).expect("load the TLS files"),
            )),
            ..ListenerOps::default()
        }],
        ..Operations::default()
    }
}

fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Client {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_nodelay(true).unwrap();
    let conn = ClientConnection::new(config, loopback_name()).unwrap();
    StreamOwned::new(conn, tcp)
}

fn listener(srv: &common::Server, i: usize) -> ListenerCounters {
    srv.handle().listener_stats()[i]
}

/// Writes `msg` and reads the same bytes back.
fn echo(c: &mut Client, msg: &[u8]) {
    c.write_all(msg).unwrap();
    let mut got = vec![0; msg.len()];
    c.read_exact(&mut got).unwrap();
    assert!(got == msg, "echo of {} bytes differs", msg.len());
}

#[test]
fn echo_over_tls13_byte_for_byte_with_records_across_receive_buffers() {
    let pki = Pki::new();
    // Small receive buffers: most records straddle two or more of them.
    let config = ringport::engine::EngineConfig {
        tcp_buf_size: 4096,
        ..Default::default()
    };
    let srv = server()
        .listen(tls("echo", 1))
        .config(config)
        .operations(tls_ops(TlsSettings::new(&pki.server.cert, &pki.server.key)))
        .start();
    let cfg = client_config(&pki.ca.path, None, &[&rustls::version::TLS13]);
    let mut c = connect(srv.addr(0), cfg);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut total = 0;
    for size in [1usize, 64, 1000, 4095, 4096, 16384, 16385, 70_000, 300_000] {
        let msg: Vec<u8> = (0..size).map(|_| rng.gen()).collect();
        echo(&mut c, &msg);
        total += size as u64;
    }
    assert_eq!(
        c.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    c.conn.send_close_notify();
    c.flush().unwrap();
    let mut rest = Vec::new();
    // The server answers close_notify with its own and closes.
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let l = srv.wait_totals("the stream closed", |t| t.conns_closed == 1);
    assert_eq!(l.conns_accepted, 1);
    let lc = listener(&srv, 0);
    assert_eq!(lc.tls_handshakes[HandshakeResult::Full as usize], 1);
    assert_eq!(lc.tls_handshakes_failed(), 0);
    assert_eq!(lc.conns_accepted, 1);
    assert_eq!(lc.conns_closed, 1);
    assert!(
        lc.bytes_in > total,
        "wire bytes include the records' overhead"
    );
    assert_eq!(l.drops_total(), 0, "{:?}", l.drop_list());
}

#[test]
fn tls12_only_when_configured() {
    let pki = Pki::new();
    let srv13 = server()
        .listen(tls("echo", 1))
        .operations(tls_ops(TlsSettings::new(&pki.server.cert, &pki.server.key)))
        .start();
    let only12 = client_config(&pki.ca.path, None, &[&rustls::version::TLS12]);
    let mut c = connect(srv13.addr(0), only12.clone());
    let mut b = [0u8; 1];
    let err = c.write_all(b"x").and_then(|_| c.read(&mut b).map(|_| ()));
    let err = err.expect_err("a TLS 1.2 client is refused by default");
    assert!(
        err.to_string().contains("ProtocolVersion") || err.to_string().contains("protocol"),
        "{err}"
    );
    srv13.wait_stats("the refusal counted", |_| {
        listener(&srv13, 0).tls_handshakes[HandshakeResult::ProtocolError as usize] == 1
    });

    let mut s12 = TlsSettings::new(&pki.server.cert, &pki.server.key);
    s12.min_version = TlsVersion::V1_2;
    let srv12 = server()
        .listen(tls("echo", 1))
        .operations(tls_ops(s12))
        .start();
    let mut c = connect(srv12.addr(0), only12);
    let msg: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    echo(&mut c, &msg);
    echo(&mut c, b"and again");
    assert_eq!(
        c.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(
        listener(&srv12, 0).tls_handshakes[HandshakeResult::Full as usize],
        1
    );
}

#[test]
fn a_second_connection_resumes_with_a_ticket() {
    let pki = Pki::new();
    let srv = server()
        .listen(tls("echo", 1))
        .operations(tls_ops(TlsSettings::new(&pki.server.cert, &pki.server.key)))
        .start();
    let cfg = client_config(&pki.ca.path, None, &[&rustls::version::TLS13]);
    let mut first = connect(srv.addr(0), cfg.clone());
    echo(&mut first, b"one");
    let mut second = connect(srv.addr(0), cfg);
    echo(&mut second, b"two");
    assert_eq!(
        second.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    let lc = listener(&srv, 0);
    assert_eq!(lc.tls_handshakes[HandshakeResult::Full as usize], 1);
    assert_eq!(lc.tls_handshakes[HandshakeResult::Resumed as usize], 1);
}
