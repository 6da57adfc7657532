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
use ringport::engine::policy::DenyReason;
use ringport::engine::tls::{HandshakeResult, ListenerTls, TlsSettings, TlsVersion};
use ringport::engine::EngineDrop;
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

/// The first error a client meets writing `msg` and reading the answer.
fn client_error(c: &mut Client, msg: &[u8]) -> std::io::Error {
    let mut b = [0u8; 16];
    match c
        .write_all(msg)
        .and_then(|_| c.flush())
        .and_then(|_| c.read(&mut b))
    {
        Ok(n) => panic!("the server answered {n} bytes instead of refusing"),
        Err(e) => e,
    }
}

#[test]
fn mutual_tls_allows_listed_identities_and_refuses_the_rest_before_the_plugin() {
    use common::pki::ClientSpec;
    let pki = Pki::new();
    let mut settings = TlsSettings::new(&pki.server.cert, &pki.server.key);
    settings.client_ca = Some(pki.ca.path.clone());
    settings.allow_identities = vec![
        "spiffe://prod.example/sensor/*".parse().unwrap(),
        "dns:gw.prod.example".parse().unwrap(),
    ];
    let srv = server()
        .listen(tls("echo", 1))
        .operations(tls_ops(settings))
        .start();
    let sensor = pki.client(
        "sensor",
        &ClientSpec {
            cn: "sensor-7",
            uris: &["spiffe://prod.example/sensor/7"],
            ..Default::default()
        },
    );
    let gateway = pki.client(
        "gw",
        &ClientSpec {
            cn: "gw",
            dns: &["gw.prod.example"],
            ..Default::default()
        },
    );
    let actuator = pki.client(
        "actuator",
        &ClientSpec {
            cn: "actuator-1",
            uris: &["spiffe://prod.example/actuator/1"],
            ..Default::default()
        },
    );
    let v13 = [&rustls::version::TLS13];
    for allowed in [&sensor, &gateway] {
        let mut c = connect(
            srv.addr(0),
            client_config(&pki.ca.path, Some(allowed), &v13),
        );
        echo(&mut c, b"allowed");
    }
    let mut c = connect(
        srv.addr(0),
        client_config(&pki.ca.path, Some(&actuator), &v13),
    );
    let e = client_error(&mut c, b"refused");
    assert!(e.to_string().contains("AccessDenied"), "{e}");
    let mut c = connect(srv.addr(0), client_config(&pki.ca.path, None, &v13));
    let e = client_error(&mut c, b"no certificate");
    assert!(e.to_string().contains("CertificateRequired"), "{e}");
    srv.wait_stats("two refusals counted", |_| {
        listener(&srv, 0).denied_total() == 2
    });
    let lc = listener(&srv, 0);
    let denied = |r: DenyReason| lc.denied[r as usize];
    assert_eq!(denied(DenyReason::IdentityNotAllowed), 1);
    assert_eq!(denied(DenyReason::NoCertificate), 1);
    assert_eq!(lc.tls_handshakes[HandshakeResult::Full as usize], 2);
    assert_eq!(
        lc.tls_handshakes[HandshakeResult::IdentityNotAllowed as usize],
        1
    );
    assert_eq!(
        lc.tls_handshakes[HandshakeResult::NoCertificate as usize],
        1
    );
    // Only the two allowed clients reached the plugin.
    let t = srv.wait_totals("the allowed streams closed", |t| t.conns_closed == 2);
    assert_eq!((t.conns_accepted, t.msgs), (2, 2));
}

#[test]
fn plaintext_to_a_tls_port_and_a_client_hello_to_a_plaintext_port_are_closed_and_counted() {
    let pki = Pki::new();
    let srv = server()
        .listen(tls("echo", 1))
        .listen(common::tcp("echo", 1))
        .operations(Operations {
            listeners: vec![tls_ops(TlsSettings::new(&pki.server.cert, &pki.server.key))
                .listeners
                .remove(0)],
            ..Operations::default()
        })
        .start();
    // Plaintext to the TLS port: closed without an answer.
    let mut s = common::connect(srv.addr(0));
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(common::read_until_closed(&mut s), b"");
    // A TLS client on the plaintext port: a handshake_failure alert, closed.
    let cfg = client_config(&pki.ca.path, None, &[&rustls::version::TLS13]);
    let mut c = connect(srv.addr(1), cfg);
    let e = client_error(&mut c, b"hello");
    assert!(e.to_string().contains("HandshakeFailure"), "{e}");
    srv.wait_stats("both counted", |_| {
        listener(&srv, 0).tls_handshakes[HandshakeResult::NotTls as usize] == 1
    });
    let t = srv.wait_totals("the plaintext stream closed", |t| t.conns_closed == 1);
    assert_eq!(t.engine_drops[EngineDrop::TlsOnPlainPort as usize], 1);
    assert_eq!(t.msgs, 0, "the echo plugin saw no byte of either");
    assert_eq!(
        t.conns_accepted, 1,
        "only the plaintext listener's stream opened"
    );
}

#[test]
fn a_client_hello_cut_in_half_times_out_or_ends_with_the_client() {
    let pki = Pki::new();
    let mut settings = TlsSettings::new(&pki.server.cert, &pki.server.key);
    settings.handshake_timeout = Some(std::time::Duration::from_millis(300));
    let srv = server()
        .listen(tls("echo", 1))
        .operations(tls_ops(settings))
        .start();
    // A real ClientHello, of which only the first half is sent.
    let cfg = client_config(&pki.ca.path, None, &[&rustls::version::TLS13]);
    let mut hello = Vec::new();
    ClientConnection::new(cfg, loopback_name())
        .unwrap()
        .write_tls(&mut hello)
        .unwrap();
    let half = &hello[..hello.len() / 2];
    // 1: it stalls; the handshake timeout closes it.
    let mut stalled = common::connect(srv.addr(0));
    stalled.write_all(half).unwrap();
    let start = std::time::Instant::now();
    assert_eq!(common::read_until_closed(&mut stalled), b"");
    assert!(start.elapsed() >= std::time::Duration::from_millis(250));
    // 2: it gives up.
    let mut quitter = common::connect(srv.addr(0));
    quitter.write_all(half).unwrap();
    quitter.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(common::read_until_closed(&mut quitter), b"");
    srv.wait_stats("both ends counted", |_| {
        let l = listener(&srv, 0);
        l.tls_handshakes[HandshakeResult::Timeout as usize] == 1
            && l.tls_handshakes[HandshakeResult::PeerClosed as usize] == 1
    });
    let l = listener(&srv, 0);
    assert_eq!(
        l.timeouts[ringport::engine::listener_stats::TimeoutKind::TlsHandshake as usize],
        1
    );
    assert_eq!(l.conns_closed, 2);
}

#[test]
fn handshakes_in_progress_are_capped_per_source() {
    const CAP: u32 = 16;
    const CLIENTS: usize = 1000;
    let pki = Pki::new();
    let mut settings = TlsSettings::new(&pki.server.cert, &pki.server.key);
    settings.max_handshakes_per_source = CAP;
    let srv = server()
        .listen(tls("echo", 1))
        .operations(tls_ops(settings))
        .start();
    // 1,000 connections from 127.0.0.1 that never finish a handshake.
    let held: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect(srv.addr(0)).unwrap())
        .collect();
    srv.wait_stats("every connection accepted or refused", |_| {
        let l = listener(&srv, 0);
        l.conns_accepted + l.denied_total() == CLIENTS as u64
    });
    let l = listener(&srv, 0);
    assert_eq!(l.conns_accepted, u64::from(CAP));
    assert_eq!(
        l.denied[DenyReason::HandshakesPerSource as usize],
        (CLIENTS as u64) - u64::from(CAP)
    );
    // Another source is not held back by them.
    let other = {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
            .unwrap();
        sock.connect(&srv.addr(0).into()).unwrap();
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s
    };
    let conn = ClientConnection::new(
        client_config(&pki.ca.path, None, &[&rustls::version::TLS13]),
        loopback_name(),
    )
    .unwrap();
    let mut c = StreamOwned::new(conn, other);
    echo(&mut c, b"from 127.0.0.2");
    drop(held);
}

/// Answers every chunk with the identities its peer proved, joined by `,`.
struct WhoAmI;

impl ringport::plugin::Plugin for WhoAmI {
    fn handle_data(
        &mut self,
        ctx: &mut dyn ringport::plugin::Context,
        conn: ringport::plugin::ConnId,
        data: &[u8],
    ) -> Result<usize, ringport::plugin::DropReason> {
        let mut answer = ctx.peer_identities(conn).join(",");
        answer.push('\n');
        ctx.write(conn, answer.as_bytes())
            .map_err(|_| ringport::plugin::DropReason::QueueFull)?;
        Ok(data.len())
    }
}

struct WhoAmIFactory;

impl ringport::plugin::PluginFactory for WhoAmIFactory {
    fn name(&self) -> &str {
        "whoami"
    }
    fn supports(&self, transport: ringport::plugin::Transport) -> bool {
        transport == ringport::plugin::Transport::Tcp
    }
    fn create(&self, _: usize, _: usize) -> Box<dyn ringport::plugin::Plugin> {
        Box::new(WhoAmI)
    }
}

#[test]
fn plugins_see_the_identities_of_the_client_certificate() {
    use common::pki::ClientSpec;
    let pki = Pki::new();
    let mut settings = TlsSettings::new(&pki.server.cert, &pki.server.key);
    settings.client_ca = Some(pki.ca.path.clone());
    let mut registry = ringport::protocols::builtins(&Default::default());
    registry.register(Arc::new(WhoAmIFactory)).unwrap();
    let srv = server()
        .registry(registry)
        .listen(tls("whoami", 1))
        .operations(tls_ops(settings))
        .start();
    let both = pki.client(
        "both",
        &ClientSpec {
            cn: "gw-7",
            uris: &["spiffe://prod.example/gw/7"],
            dns: &["gw7.prod.example"],
            ..Default::default()
        },
    );
    let v13 = [&rustls::version::TLS13];
    let mut c = connect(srv.addr(0), client_config(&pki.ca.path, Some(&both), &v13));
    c.write_all(b"?").unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while b[0] != b'\n' {
        c.read_exact(&mut b).unwrap();
        line.push(b[0]);
    }
    assert_eq!(
        String::from_utf8(line).unwrap(),
        "dns:gw7.prod.example,spiffe://prod.example/gw/7\n"
    );
}
