//! `ringport relay pub|sub`: a small blocking client of the `relay` protocol
//! for scripts and tests (see docs/protocols/relay.md), over TCP, TLS
//! (`--tls`, with a client certificate for mutual TLS) or UDP (`pub --udp`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Subcommand};
use ringport_protocols::relay::wire::{self, Framing, Packet, Repr};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::tls_client;

/// How long a TLS handshake may take when no --timeout bounds it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `ringport relay ...`.
#[derive(Debug, Subcommand)]
pub enum RelayCommand {
    /// Publish messages to a topic; over TCP, returns once the server has
    /// handled them.
    Pub(PubArgs),
    /// Subscribe to topics and print one line per message (`TOPIC PAYLOAD`)
    /// and per `lagged N` report.
    Sub(SubArgs),
}

/// Flags of `ringport relay pub`.
#[derive(Debug, Args)]
pub struct PubArgs {
    /// A relay listener's address (TCP, or UDP with --udp).
    #[arg(long, value_name = "ADDR:PORT")]
    pub addr: SocketAddr,
    /// Publish over UDP, one datagram per message, without confirmation.
    #[arg(long, conflicts_with = "tls")]
    pub udp: bool,
    /// The topic (1 to 255 bytes).
    #[arg(long, value_name = "TOPIC", value_parser = parse_topic)]
    pub topic: String,
    /// Give up after this many seconds without an answer (TCP).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub timeout: f64,
    /// The messages, one per argument, published in order.
    #[arg(required = true, value_name = "MESSAGE")]
    pub messages: Vec<String>,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Flags of `ringport relay sub`.
#[derive(Debug, Args)]
pub struct SubArgs {
    /// A relay listener's TCP address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub addr: SocketAddr,
    /// A topic to subscribe to (repeatable).
    #[arg(long, required = true, value_name = "TOPIC", value_parser = parse_topic)]
    pub topic: Vec<String>,
    /// Exit after this many messages (default: run until the server closes).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Exit with an error after this many seconds without a frame.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// The TLS flags of `relay pub` and `relay sub`.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Connect with TLS (1.3 or 1.2; TCP only). Needs --tls-ca.
    #[arg(long, requires = "tls_ca")]
    pub tls: bool,
    /// PEM file with the CA certificate(s) the server's certificate must
    /// chain to; the system's roots are not used.
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate chain (leaf first) to present when the server asks
    /// for one (mutual TLS). Needs --tls-key.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must be for (a DNS name or an IP
    /// address). Default: the IP address of --addr.
    #[arg(long, value_name = "NAME", requires = "tls", value_parser = parse_server_name)]
    pub tls_server_name: Option<ServerName<'static>>,
}

impl TlsArgs {
    /// What a connection to `addr` needs for TLS, or None without --tls.
    fn client(&self, addr: SocketAddr) -> Result<Option<TlsClient>> {
        if !self.tls {
            return Ok(None);
        }
        let ca = self
            .tls_ca
            .as_deref()
            .context("--tls needs --tls-ca FILE (the CA of the server's certificate)")?;
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            (Some(_), None) => bail!("--tls-cert needs --tls-key (the certificate's key)"),
            (None, Some(_)) => bail!("--tls-key needs --tls-cert (the key's certificate)"),
        };
        Ok(Some(TlsClient {
            config: tls_client::client_config(ca, identity)?,
            name: self
                .tls_server_name
                .clone()
                .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into())),
            with_cert: identity.is_some(),
        }))
    }
}

fn parse_server_name(s: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(s.to_owned()).map_err(|_| {
        format!("`{s}` is neither a DNS name nor an IP address (e.g. `relay.internal`, `10.0.0.7`)")
    })
}

/// The TLS side of a connection: configuration, the name to verify, and
/// whether a client certificate is presented (for hints in errors).
struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    with_cert: bool,
}

fn parse_topic(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > wire::MAX_TOPIC {
        Err(format!(
            "a topic has 1 to {} bytes, not {}",
            wire::MAX_TOPIC,
            s.len()
        ))
    } else {
        Ok(s.to_owned())
    }
}

/// Runs a `relay` subcommand.
pub fn run(command: RelayCommand) -> Result<()> {
    match command {
        RelayCommand::Pub(args) => publish(&args),
        RelayCommand::Sub(args) => subscribe(&args, &mut io::stdout().lock()),
    }
}

fn secs(s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("bad timeout {s}"))
}

fn publish(args: &PubArgs) -> Result<()> {
    let frames = args.messages.iter().map(|m| {
        Repr::Publish {
            topic: args.topic.as_bytes(),
            payload: m.as_bytes(),
        }
        .to_vec()
    });
    if args.udp {
        let local: SocketAddr = if args.addr.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let sock = UdpSocket::bind(local).context("binding a UDP socket")?;
        for frame in frames {
            sock.send_to(&frame, args.addr)
                .with_context(|| format!("sending to {}", args.addr))?;
        }
        return Ok(());
    }
    let tls = args.tls.client(args.addr)?;
    let mut conn = Conn::connect(args.addr, Some(secs(args.timeout)?), tls)?;
    let mut out: Vec<u8> = frames.flatten().collect();
    out.extend(Repr::Ping { payload: b"pub" }.to_vec());
    conn.send(&out, "sending")?;
    loop {
        if conn.next(|frame| Ok(matches!(frame, Repr::Pong { .. })))? {
            conn.close();
            return Ok(());
        }
    }
}

/// Subscribes and writes one line per message and per `LAGGED` to `out`;
/// says `subscribed` on stderr once the subscriptions are active.
fn subscribe(args: &SubArgs, out: &mut impl Write) -> Result<()> {
    let timeout = args.timeout.map(secs).transpose()?;
    let tls = args.tls.client(args.addr)?;
    let mut conn = Conn::connect(args.addr, timeout, tls)?;
    let mut hello = Vec::new();
    for topic in &args.topic {
        hello.extend(
            Repr::Subscribe {
                topic: topic.as_bytes(),
            }
            .to_vec(),
        );
    }
    hello.extend(Repr::Ping { payload: b"sub" }.to_vec());
    conn.send(&hello, "subscribing")?;
    let mut received = 0u64;
    while args.count.map_or(true, |n| received < n) {
        let line = conn.next(|frame| match frame {
            Repr::Pong { .. } => {
                eprintln!("subscribed");
                Ok(None)
            }
            Repr::Message { topic, payload } => Ok(Some(format!(
                "{} {}",
                String::from_utf8_lossy(topic),
                String::from_utf8_lossy(payload)
            ))),
            Repr::Lagged { count } => Ok(Some(format!("lagged {count}"))),
            other => bail!("unexpected {:?} frame from the server", other.frame_type()),
        })?;
        let Some(line) = line else { continue };
        received += u64::from(!line.starts_with("lagged "));
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    conn.close();
    Ok(())
}

/// A relay connection's byte stream: plain TCP, or TLS over TCP. The
/// framing in [`Conn`] is the same for both.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A connection to a relay server and the bytes read but not parsed yet.
struct Conn {
    stream: Stream,
    addr: SocketAddr,
    /// Whether a client certificate was presented (TLS only).
    with_cert: bool,
    buf: Vec<u8>,
    timeout: Option<Duration>,
}

impl Conn {
    /// Connects, and with `tls` completes the handshake before returning,
    /// so that a server that refuses it is reported here.
    fn connect(
        addr: SocketAddr,
        timeout: Option<Duration>,
        tls: Option<TlsClient>,
    ) -> Result<Conn> {
        let mut tcp = match timeout {
            Some(t) => TcpStream::connect_timeout(&addr, t),
            None => TcpStream::connect(addr),
        }
        .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let with_cert = tls.as_ref().is_some_and(|t| t.with_cert);
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(tls) => {
                let limit = Some(timeout.unwrap_or(HANDSHAKE_TIMEOUT));
                tcp.set_read_timeout(limit)?;
                tcp.set_write_timeout(limit)?;
                let mut session = ClientConnection::new(tls.config, tls.name)
                    .map_err(|e| anyhow!("starting TLS with {addr}: {e}"))?;
                while session.is_handshaking() {
                    session
                        .complete_io(&mut tcp)
                        .map_err(|e| failure(e, addr, with_cert, "handshake"))?;
                }
                Stream::Tls(Box::new(StreamOwned::new(session, tcp)))
            }
        };
        let tcp = match &stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        };
        tcp.set_read_timeout(timeout)?;
        Ok(Conn {
            stream,
            addr,
            with_cert,
            buf: Vec::new(),
            timeout,
        })
    }

    /// Writes all of `bytes`; `what` names the step in errors.
    fn send(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        let Err(e) = self
            .stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
        else {
            return Ok(());
        };
        // A TLS server that refused this client after the handshake (TLS
        // 1.3 checks the client certificate after the client is done) sent
        // an alert saying why before it closed: read it.
        let stuck = matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        );
        if let (Stream::Tls(s), false) = (&mut self.stream, stuck) {
            let mut byte = [0u8; 1];
            let _ = s.sock.set_read_timeout(Some(Duration::from_secs(1)));
            if let Err(read) = s.read(&mut byte) {
                if rustls_error(&read).is_some() {
                    return Err(failure(read, self.addr, self.with_cert, what));
                }
            }
        }
        Err(failure(e, self.addr, self.with_cert, what))
    }

    /// Ends a TLS session with close_notify (a plain connection just closes).
    fn close(self) {
        if let Stream::Tls(mut s) = self.stream {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }

    /// Reads until a whole frame is in, hands it to `f`, and drops it.
    fn next<T>(&mut self, f: impl FnOnce(Repr<'_>) -> Result<T>) -> Result<T> {
        let started = Instant::now();
        loop {
            match wire::next_frame(&self.buf, u32::MAX as usize) {
                Framing::Frame(_, len) => {
                    let repr = Repr::parse(&Packet::new_unchecked(&self.buf[..len]), len)
                        .context("parsing a frame")?;
                    let out = f(repr);
                    self.buf.drain(..len);
                    return out;
                }
                Framing::Invalid(e) => bail!("bad frame from the server: {e}"),
                Framing::Incomplete => {}
            }
            let mut chunk = [0u8; 16384];
            let n = match self.stream.read(&mut chunk) {
                Ok(0) => bail!("the server closed the connection"),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A TLS server that closed without close_notify.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    bail!("the server closed the connection")
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    bail!(
                        "nothing from the server for {:?}",
                        self.timeout.unwrap_or_else(|| started.elapsed())
                    )
                }
                Err(e) => return Err(failure(e, self.addr, self.with_cert, "reading")),
            };
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The rustls error inside an I/O error from a TLS stream, if that is what it is.
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// An I/O error of `what` on the connection to `addr`, in words: for TLS
/// failures rustls's reason (such as the alert the server sent) and a hint.
fn failure(e: io::Error, addr: SocketAddr, with_cert: bool, what: &str) -> anyhow::Error {
    match rustls_error(&e) {
        Some(tls) => anyhow!(
            "the TLS connection to {addr} failed ({what}): {tls}{}",
            tls_client::hint(tls, with_cert)
        ),
        None if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) =>
        {
            anyhow!("{what} ({addr}): no answer in time ({e})")
        }
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            anyhow!("{addr} closed the connection ({what})")
        }
        None => anyhow::Error::from(e).context(format!("{what} ({addr})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_checked() {
        assert_eq!(parse_topic("t/1"), Ok("t/1".to_owned()));
        assert!(parse_topic("").is_err());
        assert!(parse_topic(&"x".repeat(255)).is_ok());
        assert_eq!(
            parse_topic(&"x".repeat(256)),
            Err("a topic has 1 to 255 bytes, not 256".to_owned())
        );
    }

    fn parse(args: &[&str]) -> Result<RelayCommand, String> {
        use clap::Parser;
        let mut all = vec!["ringport", "relay"];
        all.extend_from_slice(args);
        match crate::cli::Cli::try_parse_from(all) {
            Ok(crate::cli::Cli {
                command: Some(crate::cli::Command::Relay { command }),
            }) => Ok(command),
            Ok(other) => panic!("not a relay command: {other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn tls_flags_go_together_and_not_with_udp() {
        let pub_ = ["pub", "--addr", "127.0.0.1:7400", "--topic", "t", "m"];
        let with = |extra: &[&str]| parse(&[&pub_[..], extra].concat());
        let e = with(&["--udp", "--tls", "--tls-ca", "ca.pem"]).unwrap_err();
        assert!(
            e.starts_with("error: the argument '--udp' cannot be used with '--tls'"),
            "{e}"
        );
        let e = with(&["--tls"]).unwrap_err();
        assert!(
            e.starts_with(
                "error: the following required arguments were not provided:\n  --tls-ca <FILE>"
            ),
            "{e}"
        );
        let e = with(&["--tls-ca", "ca.pem"]).unwrap_err();
        assert!(
            e.starts_with("error: the following required arguments were not provided:\n  --tls\n"),
            "{e}"
        );
        let e = with(&["--tls", "--tls-ca", "ca.pem", "--tls-cert", "c.pem"]).unwrap_err();
        assert!(
            e.starts_with(
                "error: the following required arguments were not provided:\n  --tls-key <FILE>"
            ),
            "{e}"
        );
        let e = with(&[
            "--tls",
            "--tls-ca",
            "ca.pem",
            "--tls-server-name",
            "not a name",
        ])
        .unwrap_err();
        assert!(
            e.contains("`not a name` is neither a DNS name nor an IP address"),
            "{e}"
        );
        // The same flags on `sub`.
        let e = parse(&[
            "sub",
            "--addr",
            "127.0.0.1:7400",
            "--topic",
            "t",
            "--tls-key",
            "k.pem",
        ])
        .unwrap_err();
        assert!(e.contains("--tls-cert <FILE>"), "{e}");
    }

    #[test]
    fn the_name_checked_is_the_address_unless_given() {
        let dir = crate::tls_client::test_pki::Dir::new("relay-name");
        let (ca, cert, key) = crate::tls_client::test_pki::server(&dir.0, "a", "a");
        let (ca, cert, key) = (
            ca.to_str().unwrap(),
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
        );
        let addr: SocketAddr = "127.0.0.1:7400".parse().unwrap();
        let tls_of = |extra: &[&str]| {
            let base = [
                "sub",
                "--addr",
                "127.0.0.1:7400",
                "--topic",
                "t",
                "--tls",
                "--tls-ca",
                ca,
            ];
            match parse(&[&base[..], extra].concat()).unwrap() {
                RelayCommand::Sub(a) => a.tls.client(addr).unwrap().expect("TLS"),
                RelayCommand::Pub(_) => unreachable!(),
            }
        };
        let plain = tls_of(&[]);
        assert_eq!(plain.name, ServerName::IpAddress(addr.ip().into()));
        assert!(!plain.with_cert);
        let named = tls_of(&[
            "--tls-server-name",
            "relay.internal",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ]);
        assert_eq!(named.name, ServerName::try_from("relay.internal").unwrap());
        assert!(named.with_cert);
        let RelayCommand::Sub(no_tls) =
            parse(&["sub", "--addr", "127.0.0.1:7400", "--topic", "t"]).unwrap()
        else {
            unreachable!()
        };
        assert!(no_tls.tls.client(addr).unwrap().is_none());
    }
}
