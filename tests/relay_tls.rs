//! `ringport relay pub|sub --tls` against an in-process engine serving
//! `relay` over TLS: what the subscriber prints is exactly what was
//! published; with mutual TLS a client with a certificate of the client CA
//! is served, and one without (or with a certificate of another CA) is
//! refused with rustls's reason and a hint; a client that does not trust the
//! server's certificate, or checks another name, refuses it; a plaintext
//! port is reported as such.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pki::{ClientSpec, Leaf, Pki};
use common::{ringport_bin, server, tcp, tls, Server};
use ringport::engine::operations::{ListenerOps, Operations};
use ringport::engine::tls::{HandshakeResult, ListenerTls, TlsSettings};

const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// `relay` over TLS on two ports, one per shard (listener 0), and over
/// plain TCP on two more (listener 1).
fn relay_over_tls(settings: TlsSettings) -> Server {
    server()
        .shards(2)
        .listen(tls("relay", 2))
        .listen(tcp("relay", 2))
        .operations(Operations {
            listeners: vec![
                ListenerOps {
                    tls: Some(Arc::new(
                        ListenerTls::new(settings, false).expect("load the TLS files"),
                    )),
                    ..ListenerOps::default()
                },
                ListenerOps::default(),
            ],
            ..Operations::default()
        })
        .start()
}

/// `--tls --tls-ca CA` and, when given, `--tls-cert --tls-key`.
fn tls_flags(ca: &Path, client: Option<&Leaf>) -> Vec<String> {
    let mut f = vec!["--tls".to_owned(), "--tls-ca".to_owned(), path(ca)];
    if let Some(l) = client {
        f.extend(["--tls-cert".to_owned(), path(&l.cert)]);
        f.extend(["--tls-key".to_owned(), path(&l.key)]);
    }
    f
}

fn path(p: &Path) -> String {
    p.to_str().expect("a UTF-8 temporary path").to_owned()
}

/// Runs `ringport relay ARGS`, killing it after [`PROCESS_TIMEOUT`].
fn relay(args: &[String]) -> Output {
    let mut child = Command::new(ringport_bin())
        .arg("relay")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringport relay");
    wait_bounded(&mut child);
    child.wait_with_output().expect("collect the output")
}

fn wait_bounded(child: &mut Child) {
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    while child.try_wait().expect("wait for ringport").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringport relay did not exit within {PROCESS_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `relay pub` of `messages` to `topic` at `addr`.
fn publish(addr: &str, topic: &str, tls: &[String], messages: &[&str]) -> Output {
    let mut args: Vec<String> = ["pub", "--addr", addr, "--topic", topic]
        .map(str::to_owned)
        .to_vec();
    args.extend_from_slice(tls);
    args.extend(messages.iter().map(|m| (*m).to_owned()));
    relay(&args)
}

/// A running `relay sub`, started once the server has confirmed its
/// subscriptions (it printed `subscribed`).
struct Subscriber {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Subscriber {
    fn start(addr: &str, topic: &str, count: u32, tls: &[String]) -> Subscriber {
        let mut child = Command::new(ringport_bin())
            .args(["relay", "sub", "--addr", addr, "--topic", topic])
            .args(["--count", &count.to_string(), "--timeout", "20"])
            .args(tls)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ringport relay sub");
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut sub = Subscriber { child, stderr };
        match sub.stderr.recv_timeout(PROCESS_TIMEOUT) {
            Ok(l) if l == "subscribed" => sub,
            other => {
                let _ = sub.child.kill();
                panic!("relay sub did not subscribe: {other:?}");
            }
        }
    }

    /// Waits for it to exit; returns its stdout, failing on an error exit.
    fn finish(mut self) -> String {
        wait_bounded(&mut self.child);
        let status = self.child.wait().unwrap();
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let stderr: Vec<String> = self.stderr.try_iter().collect();
        assert!(status.success(), "relay sub failed: {stderr:?}");
        stdout
    }
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The error line of a failed run.
fn error_of(out: &Output) -> String {
    assert!(!out.status.success(), "it succeeded");
    String::from_utf8_lossy(&out.stderr).trim_end().to_owned()
}

fn handshakes(srv: &Server, r: HandshakeResult) -> u64 {
    srv.handle().listener_stats()[0].tls_handshakes[r as usize]
}

#[test]
fn relay_pub_and_sub_round_trip_over_tls() {
    let pki = Pki::new();
    let srv = relay_over_tls(TlsSettings::new(&pki.server.cert, &pki.server.key));
    let addrs: Vec<String> = srv.addrs(0).iter().map(ToString::to_string).collect();
    let tls = tls_flags(&pki.ca.path, None);
    // The subscriber on shard 1's port, the publisher on shard 0's.
    let sub = Subscriber::start(&addrs[1], "plant/7", 3, &tls);
    assert_ok(&publish(&addrs[0], "plant/7", &tls, &["first", "second"]));
    // The name to check can be any the certificate holds.
    let mut named = tls.clone();
    named.extend(["--tls-server-name".to_owned(), "localhost".to_owned()]);
    assert_ok(&publish(&addrs[0], "plant/7", &named, &["third"]));
    assert_eq!(
        sub.finish(),
        "plant/7 first\nplant/7 second\nplant/7 third\n"
    );
    srv.wait_stats("three full handshakes", |_| {
        handshakes(&srv, HandshakeResult::Full) == 3
    });
    assert_eq!(srv.handle().listener_stats()[0].tls_handshakes_failed(), 0);
}

#[test]
fn a_client_refuses_a_server_it_cannot_verify() {
    let pki = Pki::new();
    let other = common::pki::Ca::new(&pki.dir, "other");
    let srv = relay_over_tls(TlsSettings::new(&pki.server.cert, &pki.server.key));
    let addr = srv.addr(0).to_string();
    let out = publish(&addr, "t", &tls_flags(&other.path, None), &["x"]);
    assert_eq!(
        error_of(&out),
        format!(
            "ringport: error: the TLS connection to {addr} failed (handshake): invalid peer \
             certificate: UnknownIssuer (the server's certificate does not chain to --tls-ca: \
             give the CA that signed it)"
        )
    );
    let mut wrong_name = tls_flags(&pki.ca.path, None);
    wrong_name.extend(["--tls-server-name".to_owned(), "relay.internal".to_owned()]);
    let err = error_of(&publish(&addr, "t", &wrong_name, &["x"]));
    assert!(
        err.starts_with(&format!(
            "ringport: error: the TLS connection to {addr} failed (handshake): invalid peer \
             certificate: certificate not valid for name \"relay.internal\""
        )) && err.ends_with(
            " (the server's certificate is not for this name: set --tls-server-name to a name \
             it holds)"
        ),
        "{err}"
    );
    // A plaintext port answers a ClientHello with an alert.
    let plain = srv.addr(1).to_string();
    assert_eq!(
        error_of(&publish(
            &plain,
            "t",
            &tls_flags(&pki.ca.path, None),
            &["x"]
        )),
        format!(
            "ringport: error: the TLS connection to {plain} failed (handshake): received fatal \
             alert: HandshakeFailure (is --addr a TLS listener? a plaintext ringport port answers \
             TLS with this alert; a TLS server sends it too when it shares no TLS version or \
             cipher suite with this client)"
        )
    );
}

#[test]
fn mutual_tls_serves_a_client_certificate_and_refuses_none_or_a_foreign_one() {
    let pki = Pki::new();
    let spec = ClientSpec {
        cn: "sensor-1",
        uris: &["spiffe://test/sensor/1"],
        ..ClientSpec::default()
    };
    let good = pki.client("sensor-1", &spec);
    let foreign = common::pki::Ca::new(&pki.dir, "other").client(&pki.dir, "foreign", &spec);
    let mut settings = TlsSettings::new(&pki.server.cert, &pki.server.key);
    settings.client_ca = Some(pki.ca.path.clone());
    let srv = relay_over_tls(settings);
    let addrs: Vec<String> = srv.addrs(0).iter().map(ToString::to_string).collect();

    let with_cert = tls_flags(&pki.ca.path, Some(&good));
    let sub = Subscriber::start(&addrs[1], "t/1", 2, &with_cert);
    assert_ok(&publish(&addrs[0], "t/1", &with_cert, &["one", "two"]));
    assert_eq!(sub.finish(), "t/1 one\nt/1 two\n");

    let err = error_of(&publish(
        &addrs[0],
        "t/1",
        &tls_flags(&pki.ca.path, None),
        &["three"],
    ));
    assert!(
        err.starts_with(&format!(
            "ringport: error: the TLS connection to {} failed (",
            addrs[0]
        )) && err.ends_with(
            "): received fatal alert: CertificateRequired (the server wants a client \
             certificate: give --tls-cert and --tls-key)"
        ),
        "{err}"
    );
    let err = error_of(&publish(
        &addrs[0],
        "t/1",
        &tls_flags(&pki.ca.path, Some(&foreign)),
        &["four"],
    ));
    assert!(
        err.ends_with(
            "): received fatal alert: UnknownCA (the server does not trust the CA of --tls-cert)"
        ),
        "{err}"
    );
    srv.wait_stats("both refusals counted", |_| {
        handshakes(&srv, HandshakeResult::NoCertificate) == 1
            && handshakes(&srv, HandshakeResult::UnknownCa) == 1
    });
    assert_eq!(handshakes(&srv, HandshakeResult::Full), 2);
}
