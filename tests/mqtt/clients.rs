//! `mosquitto_sub` and `mosquitto_pub` (Debian package `mosquitto-clients`)
//! driven from the tests.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::common::{outside_program, IO_TIMEOUT};

/// The protocol version a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V {
    /// MQTT 3.1.1.
    V311,
    /// MQTT 5.0.
    V5,
}

impl V {
    /// The `-V` argument of the Mosquitto clients.
    pub fn arg(self) -> &'static str {
        match self {
            V::V311 => "mqttv311",
            V::V5 => "mqttv5",
        }
    }
}

/// The installed `mosquitto_sub` and `mosquitto_pub`, or `None` (with the
/// skip line) outside CI.
pub fn programs() -> Option<(PathBuf, PathBuf)> {
    let sub = outside_program("mosquitto_sub", "mosquitto-clients")?;
    let publ = outside_program("mosquitto_pub", "mosquitto-clients")?;
    Some((sub, publ))
}

/// One message `mosquitto_sub` printed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Msg {
    /// Topic name.
    pub topic: String,
    /// QoS it was delivered with.
    pub qos: u8,
    /// Its RETAIN flag as delivered.
    pub retain: bool,
    /// Payload (text without newlines in these tests).
    pub payload: String,
}

impl Msg {
    /// A message as expected.
    pub fn new(topic: &str, qos: u8, retain: bool, payload: &str) -> Msg {
        Msg {
            topic: topic.to_owned(),
            qos,
            retain,
            payload: payload.to_owned(),
        }
    }
}

/// A running `mosquitto_sub`, killed when dropped.
#[derive(Debug)]
pub struct Sub {
    child: Child,
    lines: Receiver<String>,
    /// Everything it printed so far, for failure messages.
    log: Vec<String>,
}

impl Sub {
    /// Starts `mosquitto_sub` on `addr` subscribing to `filters` at `qos`
    /// (one SUBSCRIBE), with `extra` arguments, and waits for its SUBACK.
    ///
    /// # Panics
    ///
    /// When no SUBACK is printed within [`IO_TIMEOUT`], or it exits.
    pub fn start(
        program: &PathBuf,
        addr: SocketAddr,
        v: V,
        qos: u8,
        filters: &[&str],
        extra: &[&str],
    ) -> Sub {
        // Line-buffered, or its debug lines sit in a pipe's buffer.
        let mut cmd = Command::new("stdbuf");
        cmd.arg("-oL")
            .arg(program)
            .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
            .args(["-V", v.arg(), "-q", &qos.to_string(), "-d"])
            .args(["-F", "MSG|%t|%q|%r|%p"]);
        for f in filters {
            cmd.args(["-t", f]);
        }
        let mut child = cmd
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mosquitto_sub");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx2.send(format!("stderr: {line}")).is_err() {
                    break;
                }
            }
        });
        let mut sub = Sub {
            child,
            lines,
            log: Vec::new(),
        };
        sub.wait_line(|l| l.contains("received SUBACK"), "its SUBACK");
        sub
    }

    /// Reads lines until one satisfies `pred`; returns the lines before it.
    fn wait_line(&mut self, pred: impl Fn(&str) -> bool, what: &str) -> Vec<String> {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if pred(&line) {
                        return before;
                    }
                    before.push(line);
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "mosquitto_sub printed no {what} in {IO_TIMEOUT:?}:\n{}",
                        self.log.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait();
                    panic!(
                        "mosquitto_sub ended ({status:?}) before {what}:\n{}",
                        self.log.join("\n")
                    )
                }
            }
        }
    }

    /// The messages received before the first one whose payload is `end`
    /// (which is not returned), in the order received.
    pub fn until(&mut self, end: &str) -> Vec<Msg> {
        let lines = self.wait_line(
            |l| parse(l).is_some_and(|m| m.payload == end),
            &format!("message `{end}`"),
        );
        lines.iter().filter_map(|l| parse(l)).collect()
    }

    /// The messages received before every one of `ends` (payloads) has
    /// arrived, the `ends` left out.
    ///
    /// # Panics
    ///
    /// When they do not all arrive within [`IO_TIMEOUT`].
    pub fn until_all(&mut self, ends: &[&str]) -> Vec<Msg> {
        let mut got = Vec::new();
        let mut left: Vec<&str> = ends.to_vec();
        while !left.is_empty() {
            let what = format!("messages {left:?}");
            let lines = self.wait_line(
                |l| parse(l).is_some_and(|m| left.contains(&&*m.payload)),
                &what,
            );
            // An end marker again (a 5.0 broker may send one copy per
            // matching subscription) is not a message either.
            got.extend(
                lines
                    .iter()
                    .filter_map(|l| parse(l))
                    .filter(|m| !ends.contains(&&*m.payload)),
            );
            let last = parse(self.log.last().expect("the line just read")).expect("a message");
            left.retain(|e| *e != last.payload);
        }
        got
    }

    /// The messages that arrive until none has for `idle`.
    pub fn drain(&mut self, idle: Duration) -> Vec<Msg> {
        let mut got = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(idle) {
            self.log.push(line.clone());
            got.extend(parse(&line));
        }
        got
    }

    /// Every line printed so far.
    pub fn log(&self) -> String {
        self.log.join("\n")
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse(line: &str) -> Option<Msg> {
    let rest = line.strip_prefix("MSG|")?;
    let mut parts = rest.splitn(4, '|');
    let topic = parts.next()?.to_owned();
    let qos = parts.next()?.parse().ok()?;
    let retain = parts.next()? == "1";
    let payload = parts.next()?.to_owned();
    Some(Msg {
        topic,
        qos,
        retain,
        payload,
    })
}

/// Runs `mosquitto_pub` on `addr`: each of `payloads` to `topic` at `qos`
/// (one connection, `-l` from standard input), `extra` arguments added
/// (e.g. `-r`). Returns when it exited 0.
///
/// # Panics
///
/// When it fails or takes longer than [`IO_TIMEOUT`].
pub fn publish(
    program: &PathBuf,
    addr: SocketAddr,
    v: V,
    qos: u8,
    topic: &str,
    payloads: &[String],
    extra: &[&str],
) {
    let mut child = Command::new(program)
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-V", v.arg(), "-q", &qos.to_string(), "-t", topic, "-l"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mosquitto_pub");
    let mut text = payloads.join("\n");
    text.push('\n');
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    finish(child, "mosquitto_pub", topic);
    writer.join().unwrap();
}

/// Runs `mosquitto_pub` once with `args` after the address and version
/// (e.g. `-t T -r -n` clears a retained message).
pub fn publish_args(program: &PathBuf, addr: SocketAddr, v: V, args: &[&str]) {
    let child = Command::new(program)
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-V", v.arg()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mosquitto_pub");
    finish(child, "mosquitto_pub", &args.join(" "));
}

fn finish(mut child: Child, name: &str, what: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{name} ({what}) did not finish in {IO_TIMEOUT:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{name} ({what}) failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
