//! `ringport relay pub|sub`: a small blocking client of the `relay` protocol
//! for scripts and tests (see docs/protocols/relay.md).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use ringport_protocols::relay::wire::{self, Framing, Packet, Repr};

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
    #[arg(long)]
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
    let mut conn = Conn::connect(args.addr, Some(secs(args.timeout)?))?;
    let mut out: Vec<u8> = frames.flatten().collect();
    out.extend(Repr::Ping { payload: b"pub" }.to_vec());
    conn.stream.write_all(&out).context("sending")?;
    loop {
        if conn.next(|frame| Ok(matches!(frame, Repr::Pong { .. })))? {
            return Ok(());
        }
    }
}

/// Subscribes and writes one line per message and per `LAGGED` to `out`;
/// says `subscribed` on stderr once the subscriptions are active.
fn subscribe(args: &SubArgs, out: &mut impl Write) -> Result<()> {
    let timeout = args.timeout.map(secs).transpose()?;
    let mut conn = Conn::connect(args.addr, timeout)?;
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
    conn.stream.write_all(&hello).context("subscribing")?;
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
    Ok(())
}

/// A TCP connection to a relay server and the bytes read but not parsed yet.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    timeout: Option<Duration>,
}

impl Conn {
    fn connect(addr: SocketAddr, timeout: Option<Duration>) -> Result<Conn> {
        let stream = match timeout {
            Some(t) => TcpStream::connect_timeout(&addr, t),
            None => TcpStream::connect(addr),
        }
        .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(timeout)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            timeout,
        })
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
                Err(e) => return Err(e).context("reading"),
            };
            self.buf.extend_from_slice(&chunk[..n]);
        }
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
}
