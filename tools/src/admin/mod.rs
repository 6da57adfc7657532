//! The admin endpoint: a small HTTP/1.1 server on its own thread serving
//! `GET /metrics` (Prometheus text) and `GET /status` (JSON), over plain TCP
//! or over TLS ([`AdminTls`]). One request per connection; sources outside
//! the admin allowlist are closed unanswered, before any TLS handshake.
//!
//! It is built not to be held: one `poll` loop serves every connection at
//! once ([`event_loop`] says why), each connection must be done (request,
//! TLS handshake, answer) within one deadline, connections over a cap are
//! closed at once, accept errors pause accepting instead of spinning, and
//! stopping the server returns at once, whatever its clients do. Each
//! connection's end is counted ([`AdminStats`]). The request parser is a
//! pure function of the bytes ([`request`]).

mod conn;
mod event_loop;
pub mod request;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use ringport_engine::policy::Allowlist;
use ringport_engine::tls::CertIdentity;
use rustls::sign::SingleCertAndKey;
use rustls::ServerConfig;

use crate::tls_client;

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

/// How long a connection may take and how many may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminOptions {
    /// The whole request, from accept to the last byte of the answer (TLS
    /// handshake included), must be done within this; then it is closed.
    pub timeout: Duration,
    /// Connections open at once; more are closed as soon as accepted.
    pub max_conns: usize,
}

impl AdminOptions {
    /// The default whole-request deadline, in seconds.
    pub const DEFAULT_TIMEOUT_SECS: f64 = 5.0;
    /// The default connection cap.
    pub const DEFAULT_MAX_CONNS: usize = 16;
    /// The longest deadline taken.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
    /// The highest cap taken.
    pub const MAX_MAX_CONNS: usize = 4096;
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions {
            timeout: Duration::from_secs_f64(Self::DEFAULT_TIMEOUT_SECS),
            max_conns: Self::DEFAULT_MAX_CONNS,
        }
    }
}

/// How an admin connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminResult {
    /// Answered (any status, a `400` included).
    Served = 0,
    /// Closed at once: the connection cap was reached.
    Refused = 1,
    /// Not done by the deadline.
    TimedOut = 2,
    /// Closed unanswered: the source is outside the admin allowlist.
    Denied = 3,
    /// Closed by the client before a whole request, a failed TLS
    /// handshake, or a socket error.
    Failed = 4,
}

impl AdminResult {
    /// Number of results.
    pub const COUNT: usize = 5;
    /// Every result, in discriminant order.
    pub const ALL: [AdminResult; AdminResult::COUNT] = [
        AdminResult::Served,
        AdminResult::Refused,
        AdminResult::TimedOut,
        AdminResult::Denied,
        AdminResult::Failed,
    ];

    /// The `result` label in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminResult::Served => "served",
            AdminResult::Refused => "refused",
            AdminResult::TimedOut => "timed_out",
            AdminResult::Denied => "denied",
            AdminResult::Failed => "failed",
        }
    }
}

/// The admin endpoint's counters, written by its thread only.
#[derive(Debug, Default)]
pub struct AdminStats {
    connections: [AtomicU64; AdminResult::COUNT],
    accept_errors: AtomicU64,
}

/// A reading of [`AdminStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdminCounts {
    /// Connections ended, by [`AdminResult`] discriminant.
    pub connections: [u64; AdminResult::COUNT],
    /// Accepts that failed (EMFILE, ENFILE, ...).
    pub accept_errors: u64,
}

impl AdminStats {
    fn count(&self, result: AdminResult) {
        self.connections[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> AdminCounts {
        AdminCounts {
            connections: std::array::from_fn(|i| self.connections[i].load(Ordering::Relaxed)),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
        }
    }
}

/// A running admin server; dropping it stops it.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    wake: UnixStream,
    tls: Option<Arc<AdminTls>>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` and serves `handler` to sources in `allow`, over TLS
    /// when `tls` is given, within `options`, counting into `stats`.
    pub fn start(
        addr: SocketAddr,
        allow: Allowlist,
        handler: Arc<Handler>,
        tls: Option<Arc<AdminTls>>,
        options: AdminOptions,
        stats: Arc<AdminStats>,
    ) -> Result<AdminServer> {
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("binding the admin endpoint {addr}"))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let (wake, wake_rx) = UnixStream::pair().context("the admin endpoint's wake-up socket")?;
        wake.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let event_loop = event_loop::EventLoop {
            listener,
            wake: wake_rx,
            stop: stop.clone(),
            allow,
            handler,
            tls: tls.clone(),
            options,
            stats,
        };
        let thread = std::thread::Builder::new()
            .name("ringport-admin".into())
            .spawn(move || event_loop.run())?;
        Ok(AdminServer {
            addr,
            stop,
            wake,
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
    /// Stops the thread and closes every connection, answered or not. It
    /// returns within one request's handler call: the thread never waits on
    /// a client.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // A full socket already holds a wake-up: nothing lost.
        let _ = (&self.wake).write(&[1]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{self, Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A blocking `GET path` against `addr`; returns (status line, body).
    fn get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
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

    #[test]
    fn routes_404_405_and_the_allowlist() {
        let handler: Arc<Handler> =
            Arc::new(|p: &str| (p == "/status").then(|| ("application/json", "{}".to_owned())));
        let server = AdminServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Allowlist::loopback(),
            handler.clone(),
            None,
            AdminOptions::default(),
            Arc::default(),
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
        let stats = Arc::new(AdminStats::default());
        let server = AdminServer::start(
            "127.0.0.1:0".parse().unwrap(),
            only,
            handler,
            None,
            AdminOptions::default(),
            stats.clone(),
        )
        .unwrap();
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
        counts_become(&stats, [1, 0, 0, 1, 0]);
    }

    /// Waits until the server's connection counts (served, refused,
    /// timed_out, denied, failed) are `want`: a connection is counted when
    /// the server closes it, a moment after the client has read its answer.
    fn counts_become(stats: &AdminStats, want: [u64; AdminResult::COUNT]) {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        loop {
            let got = stats.snapshot().connections;
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "counts {got:?}, want {want:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `request` and reads until the server closes.
    fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        s.write_all(request).unwrap();
        let mut text = Vec::new();
        s.read_to_end(&mut text).unwrap();
        String::from_utf8(text).unwrap()
    }

    fn plain(options: AdminOptions) -> (AdminServer, Arc<AdminStats>) {
        let stats = Arc::new(AdminStats::default());
        let srv = AdminServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Allowlist::loopback(),
            status_handler(),
            None,
            options,
            stats.clone(),
        )
        .unwrap();
        (srv, stats)
    }

    /// Reads until the server closes the connection: the bytes, or the
    /// reset that a close with unread bytes sends (as empty).
    fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
        s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        let mut got = Vec::new();
        match s.read_to_end(&mut got) {
            Ok(_) => got,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => got,
            Err(e) => panic!("the server never closed: {e}"),
        }
    }

    #[test]
    fn bad_requests_get_the_status_that_names_why() {
        let (srv, stats) = plain(AdminOptions::default());
        let addr = srv.addr();
        let ok = |body: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
        };
        assert_eq!(raw(addr, b"GET /status HTTP/1.1\r\n\r\n"), ok("{}"));
        // HEAD: the same head, no body.
        assert_eq!(
            raw(addr, b"HEAD /status HTTP/1.1\r\n\r\n"),
            ok("{}").replace("{}", "")
        );
        let refused = |status: &str, why: &str| {
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{why}\n",
                why.len() + 1
            )
        };
        // A lone LF is refused at once, without waiting for the deadline.
        assert_eq!(
            raw(addr, b"GET /status HTTP/1.1\nHost: x\n\n"),
            refused("400 Bad Request", "a CR or LF outside a CRLF line end")
        );
        assert_eq!(
            raw(addr, b"GET /status HTTP/2.0\r\n\r\n"),
            refused(
                "505 HTTP Version Not Supported",
                "only HTTP/1.1 and HTTP/1.0"
            )
        );
        let mut big = b"GET /status HTTP/1.1\r\nX: ".to_vec();
        big.resize(20_000, b'a');
        assert_eq!(
            raw(addr, &big),
            refused(
                "431 Request Header Fields Too Large",
                "request head too large"
            )
        );
        counts_become(&stats, [5, 0, 0, 0, 0]);
    }

    #[test]
    fn a_slow_client_delays_no_scrape_and_is_cut_off_at_the_deadline() {
        let timeout = Duration::from_millis(1500);
        let (srv, stats) = plain(AdminOptions {
            timeout,
            max_conns: 4,
        });
        let addr = srv.addr();
        // Slowloris: a head that never ends, one byte every 100 ms, each
        // well within any per-read timeout.
        let mut slow = TcpStream::connect(addr).unwrap();
        let opened = Instant::now();
        let mut writer = slow.try_clone().unwrap();
        let dribble = std::thread::spawn(move || {
            for b in b"GET /status HTTP/1.1\r\nX: "
                .iter()
                .chain([b'a'; 100].iter())
            {
                if writer.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        // Scrapes meanwhile are answered, before the slow client's deadline.
        for _ in 0..3 {
            assert_eq!(get(addr, "/status").unwrap().1, "{}");
        }
        assert_eq!(
            stats.snapshot().connections[AdminResult::TimedOut as usize],
            0
        );
        // The slow client is closed at its deadline, unanswered.
        assert_eq!(read_until_closed(&mut slow), b"");
        let lasted = opened.elapsed();
        assert!(lasted >= timeout, "closed after {lasted:?}");
        assert!(lasted < timeout * 2, "closed after {lasted:?}");
        dribble.join().unwrap();
        counts_become(&stats, [3, 0, 1, 0, 0]);
    }

    #[test]
    fn connections_over_the_cap_are_refused_and_stopping_waits_for_no_client() {
        let timeout = Duration::from_secs(5);
        let (srv, stats) = plain(AdminOptions {
            timeout,
            max_conns: 2,
        });
        let addr = srv.addr();
        // Two clients that send nothing hold both places ...
        let first = TcpStream::connect(addr).unwrap();
        let mut second = TcpStream::connect(addr).unwrap();
        second.write_all(b"GET /sta").unwrap();
        // ... so the third is closed at once, unanswered.
        let mut third = TcpStream::connect(addr).unwrap();
        assert_eq!(read_until_closed(&mut third), b"");
        counts_become(&stats, [0, 1, 0, 0, 0]);
        // A place freed is a place for a scrape.
        drop(first);
        counts_become(&stats, [0, 1, 0, 0, 1]);
        assert_eq!(get(addr, "/status").unwrap().1, "{}");
        counts_become(&stats, [1, 1, 0, 0, 1]);
        // Stopping does not wait for the stalled client.
        let stopping = Instant::now();
        drop(srv);
        assert!(stopping.elapsed() < timeout, "{:?}", stopping.elapsed());
        assert_eq!(read_until_closed(&mut second), b"");
    }

    use crate::tls_client::test_pki::{server, Dir};
    use ringport_engine::tls::read_certs;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

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
            AdminOptions::default(),
            Arc::default(),
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
    fn a_stalled_tls_handshake_is_cut_off_at_the_deadline() {
        let dir = Dir::new("admin-tls-deadline");
        let (ca, cert, key) = server(&dir.0, "one", "admin one");
        let timeout = Duration::from_millis(800);
        let stats = Arc::new(AdminStats::default());
        let srv = AdminServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Allowlist::loopback(),
            status_handler(),
            Some(Arc::new(AdminTls::load(&cert, &key).unwrap())),
            AdminOptions {
                timeout,
                max_conns: 4,
            },
            stats.clone(),
        )
        .unwrap();
        let addr = srv.addr();
        // The first bytes of a ClientHello, and nothing more.
        let mut stalled = TcpStream::connect(addr).unwrap();
        let opened = Instant::now();
        stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
        assert_eq!(tls_get(addr, &[&ca], "/status").unwrap().1, "{}");
        assert_eq!(read_until_closed(&mut stalled), b"");
        let lasted = opened.elapsed();
        assert!(lasted >= timeout, "closed after {lasted:?}");
        assert!(lasted < timeout * 2, "closed after {lasted:?}");
        counts_become(&stats, [1, 0, 1, 0, 0]);
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
            AdminOptions::default(),
            Arc::default(),
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
            AdminOptions::default(),
            Arc::default(),
        )
        .unwrap();
        assert_eq!(plain.reload_tls().unwrap(), None);
        assert_eq!(plain.scheme(), "http");
    }
}
