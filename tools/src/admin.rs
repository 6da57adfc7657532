//! The admin endpoint: a small HTTP/1.1 server on its own thread serving
//! `GET /metrics` (Prometheus text) and `GET /status` (JSON). One request
//! per connection; sources outside the admin allowlist are closed unanswered.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result};
use ringport_engine::policy::Allowlist;

/// Largest request head read.
const MAX_REQUEST: usize = 8192;
/// How long a client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server answers with: (content type, body) for a path, or None (404).
pub type Handler = dyn Fn(&str) -> Option<(&'static str, String)> + Send + Sync;

/// A running admin server.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` and serves `handler` to sources in `allow`.
    pub fn start(addr: SocketAddr, allow: Allowlist, handler: Arc<Handler>) -> Result<AdminServer> {
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("binding the admin endpoint {addr}"))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
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
                            let _ = serve_one(conn, &*handler);
                        }
                        _ => drop(conn),
                    }
                }
            })?;
        Ok(AdminServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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

fn serve_one(mut conn: TcpStream, handler: &Handler) -> std::io::Result<()> {
    conn.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    conn.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(
                &mut conn,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
                true,
            );
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return respond(
            &mut conn,
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n",
            true,
        );
    }
    let with_body = method == "GET";
    match handler(path) {
        Some((ctype, body)) => respond(&mut conn, "200 OK", ctype, &body, with_body),
        None => respond(
            &mut conn,
            "404 Not Found",
            "text/plain",
            "try /metrics or /status\n",
            with_body,
        ),
    }
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
    with_body: bool,
) -> std::io::Result<()> {
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
        let server = AdminServer::start("127.0.0.1:0".parse().unwrap(), only, handler).unwrap();
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
}
