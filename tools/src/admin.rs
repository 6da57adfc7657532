//! The admin endpoint: a small HTTP/1.1 server on its own thread serving
//! `GET /metrics` (Prometheus text) and `GET /status` (JSON), over plain TCP
//! or over TLS ([`AdminTls`]). One request per connection; sources outside
//! the admin allowlist are closed unanswered, before any TLS handshake.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use ringport_engine::policy::Allowlist;
use ringport_engine::tls::CertIdentity;
use rustls::sign::SingleCertAndKey;
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::tls_client;

/// Largest request head read.
const MAX_REQUEST: usize = 8192;
/// How long a client may take to send its request or read the answer (each
/// read and write; the TLS handshake's included).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first byte of a TLS handshake record: what a ClientHello starts with.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What the server answers with: (content type, body) for a path, or None (404).
pub type Handler = dyn Fn(&str) -> Option<(&'static str, String)> + Send + Sync;

/// The admin endpoint's certificate and key, read from PEM files, and the
/// rustls configuration new connections start from.
///
/// [`AdminTls::reload`] re-reads the files: a good new pair serves every
/// later connection, a bad one is refused and the old pair stays.
#[derive(Debug)]
pub struct AdminTls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl AdminTls {
    /// Reads the certificate chain (leaf first) and its key.
    pub fn load(cert: &Path, key: &Path) -> Result<AdminTls> {
        let (config, _) = server_config(cert, key)?;
        Ok(AdminTls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(config),
        })
    }

    /// Re-reads both files. On success new connections use them and the
    /// new leaf certificate is returned; on an error the old pair stays and
    /// the error names the file and what is wrong.
    pub fn reload(&self) -> Result<CertIdentity> {
        let (config, leaf) = server_config(&self.cert, &self.key)
            .context("reloading the admin TLS certificate (the old one stays in use)")?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(leaf)
    }

    fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A server configuration with this chain and key: TLS 1.3 and 1.2, no
/// client certificates (the admin allowlist says who may connect), ALPN
/// `http/1.1`.
fn server_config(cert: &Path, key: &Path) -> Result<(Arc<ServerConfig>, CertIdentity)> {
    let pair = tls_client::read_chain_and_key(cert, key, ("--admin-tls-cert", "--admin-tls-key"))?;
    let mut config = ServerConfig::builder_with_provider(tls_client::provider())
        .with_protocol_versions(tls_client::VERSIONS)
        .map_err(|e| anyhow!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(pair.key)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), pair.leaf))
}

/// A running admin server.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    tls: Option<Arc<AdminTls>>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` and serves `handler` to sources in `allow`, over TLS
    /// when `tls` is given.
    pub fn start(
        addr: SocketAddr,
        allow: Allowlist,
        handler: Arc<Handler>,
        tls: Option<Arc<AdminTls>>,
    ) -> Result<AdminServer> {
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("binding the admin endpoint {addr}"))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let tls2 = tls.clone();
        let thread = std::thread::Builder::new()
            .name("ringport-admin".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    match conn.peer_addr() {
                        Ok(peer) if allow.contains(peer.ip()) => {
                            let _ = match &tls2 {
                                Some(tls) => serve_tls(conn, tls.config(), &*handler),
                                None => serve_plain(conn, &*handler),
                            };
                        }
                        _ => drop(conn),
                    }
                }
            })?;
        Ok(AdminServer {
            addr,
            stop,
            tls,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https` when it serves TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Re-reads the TLS certificate and key (see [`AdminTls::reload`]):
    /// `Ok(Some(leaf))` when the new pair is in use, `Ok(None)` when this
    /// server has no TLS, an error (the old pair kept) when a file is bad.
    pub fn reload_tls(&self) -> Result<Option<CertIdentity>> {
        self.tls.as_ref().map(|t| t.reload()).transpose()
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_timeouts(conn: &TcpStream) -> io::Result<()> {
    conn.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    conn.set_write_timeout(Some(CLIENT_TIMEOUT))
}

fn serve_plain(mut conn: TcpStream, handler: &Handler) -> io::Result<()> {
    set_timeouts(&conn)?;
    serve_one(&mut conn, handler)
}

/// Handshakes, serves one request, and ends with close_notify. A client
/// that speaks plain HTTP gets a plain `400` that says to use HTTPS.
fn serve_tls(mut conn: TcpStream, config: Arc<ServerConfig>, handler: &Handler) -> io::Result<()> {
    set_timeouts(&conn)?;
    let mut first = [0u8; 1];
    if conn.peek(&mut first)? == 0 {
        return Ok(());
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        let local = conn.local_addr()?;
        return match read_head(&mut conn)? {
            Head::Closed => Ok(()),
            Head::TooLarge => respond(
                &mut conn,
                "400 Bad Request",
                "text/plain",
                &format!("this admin endpoint speaks HTTPS: ask https://{local}/metrics\n"),
                true,
            ),
            Head::Request { path, .. } => respond(
                &mut conn,
                "400 Bad Request",
                "text/plain",
                &format!("this admin endpoint speaks HTTPS: ask https://{local}{path}\n"),
                true,
            ),
        };
    }
    let tls = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut stream = StreamOwned::new(tls, conn);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    serve_one(&mut stream, handler)?;
    stream.conn.send_close_notify();
    stream.flush()
}

/// What the start of a connection held.
enum Head {
    /// The client closed before a whole request head.
    Closed,
    /// More than [`MAX_REQUEST`] bytes without the head's end.
    TooLarge,
    /// A request head.
    Request {
        /// The method (`GET`).
        method: String,
        /// The path, without the query.
        path: String,
    },
}

fn read_head(conn: &mut impl Read) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return Ok(Head::TooLarge);
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    Ok(Head::Request {
        method: method.to_owned(),
        path: target.split('?').next().unwrap_or("").to_owned(),
    })
}

fn serve_one(conn: &mut (impl Read + Write), handler: &Handler) -> io::Result<()> {
    let (method, path) = match read_head(conn)? {
        Head::Closed => return Ok(()),
        Head::TooLarge => {
            return respond(
                conn,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
                true,
            )
        }
        Head::Request { method, path } => (method, path),
    };
    if method != "GET" && method != "HEAD" {
        return respond(
            conn,
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n",
            true,
        );
    }
    let with_body = method == "GET";
    match handler(&path) {
        Some((ctype, body)) => respond(conn, "200 OK", ctype, &body, with_body),
        None => respond(
            conn,
            "404 Not Found",
            "text/plain",
            "try /metrics or /status\n",
            with_body,
        ),
    }
}

fn respond(
    conn: &mut impl Write,
    status: &str,
    ctype: &str,
    body: &str,
    with_body: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    if with_body {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}

/// A blocking `GET path` against `addr`; returns (status line, body).
#[cfg(test)]
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_404_405_and_the_allowlist() {
        let handler: Arc<Handler> =
            Arc::new(|p: &str| (p == "/status").then(|| ("application/json", "{}".to_owned())));
        let server = AdminServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Allowlist::loopback(),
            handler.clone(),
            None,
        )
        .unwrap();
        let addr = server.addr();
        assert_eq!(
            get(addr, "/status").unwrap(),
            ("HTTP/1.1 200 OK".to_owned(), "{}".to_owned())
        );
        assert_eq!(get(addr, "/nope").unwrap().0, "HTTP/1.1 404 Not Found");
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"POST /status HTTP/1.1\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        drop(server);

        // Only 127.0.0.1 allowed: a client bound to 127.0.0.2 gets no answer.
        let only = Allowlist::new(vec![Allowlist::parse_cidr("127.0.0.1").unwrap()]);
        let server =
            AdminServer::start("127.0.0.1:0".parse().unwrap(), only, handler, None).unwrap();
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        sock.connect(&server.addr().into()).unwrap();
        let mut s: TcpStream = sock.into();
        s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        let _ = s.write_all(b"GET /status HTTP/1.1\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        assert_eq!(text, "");
        assert_eq!(get(server.addr(), "/status").unwrap().1, "{}");
    }

    use crate::tls_client::test_pki::{server, Dir};
    use ringport_engine::tls::read_certs;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    fn status_handler() -> Arc<Handler> {
        Arc::new(|p: &str| (p == "/status").then(|| ("application/json", "{}".to_owned())))
    }

    /// `GET path` over TLS trusting the CAs in `cas`: (status line, body,
    /// subject of the server's certificate).
    fn tls_get(
        addr: SocketAddr,
        cas: &[&Path],
        path: &str,
    ) -> io::Result<(String, String, String)> {
        let mut roots = RootCertStore::empty();
        for ca in cas {
            for c in read_certs("CA", ca).unwrap() {
                roots.add(c).unwrap();
            }
        }
        let config = ClientConfig::builder_with_provider(tls_client::provider())
            .with_protocol_versions(tls_client::VERSIONS)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn = ClientConnection::new(Arc::new(config), ServerName::IpAddress(addr.ip().into()))
            .map_err(io::Error::other)?;
        let tcp = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)?;
        tcp.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        let mut s = StreamOwned::new(conn, tcp);
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let leaf = &s.conn.peer_certificates().expect("a server certificate")[0];
        let subject = CertIdentity::from_der(leaf).unwrap().subject;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Ok((
            head.lines().next().unwrap_or("").to_owned(),
            body.to_owned(),
            subject,
        ))
    }

    #[test]
    fn tls_serves_the_routes_and_tells_plain_http_to_use_https() {
        let dir = Dir::new("admin-tls-routes");
        let (ca, cert, key) = server(&dir.0, "one", "admin one");
        let (other_ca, _, _) = server(&dir.0, "other", "other");
        let tls = AdminTls::load(&cert, &key).unwrap();
        let srv = AdminServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Allowlist::loopback(),
            status_handler(),
            Some(Arc::new(tls)),
        )
        .unwrap();
        let addr = srv.addr();
        assert_eq!(srv.scheme(), "https");
        assert_eq!(
            tls_get(addr, &[&ca], "/status").unwrap(),
            (
                "HTTP/1.1 200 OK".to_owned(),
                "{}".to_owned(),
                "CN=admin one".to_owned()
            )
        );
        assert_eq!(
            tls_get(addr, &[&ca], "/nope").unwrap().0,
            "HTTP/1.1 404 Not Found"
        );
        // Plain HTTP gets a plain answer that says what to do, and no data.
        assert_eq!(
            get(addr, "/status?x=1").unwrap(),
            (
                "HTTP/1.1 400 Bad Request".to_owned(),
                format!("this admin endpoint speaks HTTPS: ask https://{addr}/status\n")
            )
        );
        // A client that does not trust the certificate fails its handshake,
        // and the next client is served.
        let e = tls_get(addr, &[&other_ca], "/status").unwrap_err();
        assert_eq!(e.to_string(), "invalid peer certificate: UnknownIssuer");
        assert_eq!(tls_get(addr, &[&ca], "/status").unwrap().1, "{}");
    }

    #[test]
    fn reload_takes_a_good_pair_and_keeps_the_old_one_on_a_bad_file() {
        let dir = Dir::new("admin-tls-reload");
        let (ca1, cert1, key1) = server(&dir.0, "one", "admin one");
        let (ca2, cert2, key2) = server(&dir.0, "two", "admin two");
        let (cert, key) = (dir.path("live.pem"), dir.path("live-key.pem"));
        std::fs::copy(&cert1, &cert).unwrap();
        std::fs::copy(&key1, &key).unwrap();
        let srv = AdminServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Allowlist::loopback(),
            status_handler(),
            Some(Arc::new(AdminTls::load(&cert, &key).unwrap())),
        )
        .unwrap();
        let addr = srv.addr();
        let subject = || tls_get(addr, &[&ca1, &ca2], "/status").unwrap().2;
        assert_eq!(subject(), "CN=admin one");

        // A good new pair serves the next connection.
        std::fs::copy(&cert2, &cert).unwrap();
        std::fs::copy(&key2, &key).unwrap();
        let leaf = srv.reload_tls().unwrap().expect("a TLS server");
        assert_eq!(leaf.subject, "CN=admin two");
        assert_eq!(subject(), "CN=admin two");

        // A bad certificate file is refused, naming it; the old pair stays.
        std::fs::write(&cert, "not a certificate\n").unwrap();
        let e = srv.reload_tls().unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!(
                "reloading the admin TLS certificate (the old one stays in use): \
                 --admin-tls-cert {}: holds no `-----BEGIN CERTIFICATE-----` block",
                cert.display()
            )
        );
        assert_eq!(subject(), "CN=admin two");

        // So is a certificate that does not match the key.
        std::fs::copy(&cert1, &cert).unwrap();
        let e = format!("{:#}", srv.reload_tls().unwrap_err());
        assert!(
            e.contains(&format!(
                "--admin-tls-key {} does not match --admin-tls-cert {}",
                key.display(),
                cert.display()
            )),
            "{e}"
        );
        assert_eq!(subject(), "CN=admin two");
        assert_eq!(
            tls_get(addr, &[&ca2], "/status").unwrap().0,
            "HTTP/1.1 200 OK"
        );

        // A plain server has nothing to reload.
        let plain = AdminServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Allowlist::loopback(),
            status_handler(),
            None,
        )
        .unwrap();
        assert_eq!(plain.reload_tls().unwrap(), None);
        assert_eq!(plain.scheme(), "http");
    }
}
