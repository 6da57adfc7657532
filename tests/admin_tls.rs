//! The `ringport` binary's admin endpoint over TLS (`--admin-tls-cert`,
//! `--admin-tls-key`): `curl --cacert` and a rustls client read `/metrics`
//! and `/status` with the exact counts of the traffic sent; a client that
//! does not trust the CA, or speaks plain HTTP, gets no metrics; a bad
//! certificate file stops the server before it binds anything.
//!
//! The curl checks need `curl` (Debian package `curl`); without it, outside
//! CI, they are skipped with a line saying so and the rustls checks still run.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::pki::{client_config, loopback_name, Pki};
use common::{ringport_bin, IO_TIMEOUT, LOOPBACK};
use rand::Rng;
use ringport::engine::cpus::allowed_cpus;
use rustls::{ClientConnection, StreamOwned};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A running `ringport serve` with echo over TCP on `port` and the admin
/// endpoint over TLS on `admin`.
struct Served {
    child: Child,
    port: u16,
    admin: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Starts the server on random free ports (retrying when one is taken).
fn serve(cert: &Path, key: &Path) -> Served {
    let cpu = allowed_cpus().unwrap()[0].to_string();
    let mut rng = rand::thread_rng();
    for _ in 0..20 {
        let port: u16 = rng.gen_range(20000..30000);
        let admin = SocketAddr::new(LOOPBACK, port + 1);
        let mut child = Command::new(ringport_bin())
            .args(["serve", "--shards", "1", "--cpus", &cpu])
            .args(["--listen", &format!("echo@tcp:127.0.0.1:{port}")])
            .args(["--admin", &admin.to_string()])
            .arg("--admin-tls-cert")
            .arg(cert)
            .arg("--admin-tls-key")
            .arg(key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ringport");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(l) = stdout.recv_timeout(Duration::from_millis(50)) {
                if l.starts_with("admin endpoint on") {
                    assert_eq!(
                        l,
                        format!("admin endpoint on https://{admin}/metrics and /status")
                    );
                    return Served { child, port, admin };
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                let err: Vec<String> = stderr.try_iter().collect();
                assert!(
                    err.iter().any(|l| l.contains("in use")),
                    "ringport exited with {status}: {err:?}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "ringport did not start");
        }
    }
    panic!("no free ports found");
}

/// `GET path` with a rustls client trusting `ca`: (status line, body).
fn https_get(addr: SocketAddr, ca: &Path, path: &str) -> std::io::Result<(String, String)> {
    let config = client_config(ca, None, &[&rustls::version::TLS13]);
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut s = StreamOwned::new(ClientConnection::new(config, loopback_name()).unwrap(), tcp);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    ))
}

/// The value of the sample `series` in `metrics`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn echo(port: u16, payload: &[u8]) {
    let mut s = TcpStream::connect(SocketAddr::new(LOOPBACK, port)).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(payload).unwrap();
    let mut got = vec![0; payload.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, payload);
}

/// Runs curl with `args`; returns (exit code, stdout, stderr).
fn curl(curl: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(curl)
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn admin_endpoint_over_tls_serves_curl_and_rustls_and_refuses_plain_http() {
    let pki = Pki::new();
    let other = common::pki::Ca::new(&pki.dir, "other");
    let srv = serve(&pki.server.cert, &pki.server.key);
    let listener = format!("echo@tcp:127.0.0.1:{}", srv.port);
    for _ in 0..2 {
        echo(srv.port, &[7u8; 100]);
    }
    let accepted = format!("ringport_listener_connections_total{{listener=\"{listener}\"}}");
    let bytes_in =
        format!("ringport_listener_bytes_total{{listener=\"{listener}\",direction=\"in\"}}");
    // The shard publishes its counters each turn: wait until both show.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, m) = https_get(srv.admin, &pki.ca.path, "/metrics").unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        if sample(&m, &accepted) == Some(2.0) && sample(&m, &bytes_in) == Some(200.0) {
            break;
        }
        assert!(Instant::now() < deadline, "metrics never settled:\n{m}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body) = https_get(srv.admin, &pki.ca.path, "/status").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["listeners"][0]["listener"], listener.as_str());
    assert_eq!(json["listeners"][0]["conns_accepted"], 2);

    // A client trusting another CA refuses the server's certificate.
    let e = https_get(srv.admin, &other.path, "/metrics").unwrap_err();
    assert_eq!(e.to_string(), "invalid peer certificate: UnknownIssuer");

    // Plain HTTP gets a plain 400 that says to use HTTPS, and no metrics.
    let mut s = TcpStream::connect(srv.admin).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let hint = format!(
        "this admin endpoint speaks HTTPS: ask https://{}/metrics\n",
        srv.admin
    );
    assert_eq!(
        text,
        format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{hint}",
            hint.len()
        )
    );

    let Some(curl_bin) = ringport_tools::testing::outside_program("curl", "curl") else {
        return;
    };
    let ca = pki.ca.path.to_str().unwrap();
    let url = |path: &str| format!("https://{}{path}", srv.admin);
    let (code, m, err) = curl(&curl_bin, &["--fail", "--cacert", ca, &url("/metrics")]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(sample(&m, &accepted), Some(2.0), "{m}");
    assert_eq!(sample(&m, &bytes_in), Some(200.0), "{m}");
    let (code, body, err) = curl(&curl_bin, &["--fail", "--cacert", ca, &url("/status")]);
    assert_eq!(code, Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["listeners"][0]["conns_accepted"], 2);
    // curl with another CA: exit 60, "SSL certificate problem".
    let (code, out, _) = curl(
        &curl_bin,
        &["--cacert", other.path.to_str().unwrap(), &url("/metrics")],
    );
    assert_eq!((code, out.as_str()), (Some(60), ""));
    // curl over plain HTTP gets the 400.
    let (code, out, err) = curl(
        &curl_bin,
        &[
            "--write-out",
            "%{http_code}",
            &format!("http://{}/metrics", srv.admin),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("{hint}400"));
}

#[test]
fn a_bad_admin_certificate_stops_the_server_before_it_binds() {
    let pki = Pki::new();
    // Both ports are taken: a server that got as far as binding would say so.
    let taken = std::net::TcpListener::bind((LOOPBACK, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(ringport_bin())
        .args(["serve", "--shards", "1"])
        .args(["--listen", &format!("echo@tcp:127.0.0.1:{port}")])
        .args(["--admin", &format!("127.0.0.1:{port}")])
        .arg("--admin-tls-cert")
        .arg(&pki.server.key)
        .arg("--admin-tls-key")
        .arg(&pki.server.key)
        .stdin(Stdio::null())
        .output()
        .expect("run ringport");
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "ringport: error: --admin-tls-cert {}: holds no `-----BEGIN CERTIFICATE-----` block\n",
            pki.server.key.display()
        )
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}
