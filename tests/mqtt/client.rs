//! A small blocking MQTT client on the plugin's own codec
//! (`ringport_protocols::mqtt::codec`) over a std `TcpStream`: raw packets
//! for what a client must not do, exact views of what the broker sends, and
//! a batched receive path fast enough for 100,000 messages in a debug build.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

use ringport::protocols::mqtt::codec::{
    self, ConnAck, Connect, ConnectProps, Decoded, Packet, PubResp, Publish, PublishProps, QoS,
    ReasonCode, SubOptions, Subscribe, Version, Will,
};

use crate::common::{connect, IO_TIMEOUT};

/// The largest packet this client decodes.
const MAX_PACKET: usize = 16 << 20;

/// What the client asks for in its CONNECT.
#[derive(Debug, Clone)]
pub struct Opts<'a> {
    /// Protocol version.
    pub version: Version,
    /// Client identifier.
    pub client_id: &'a str,
    /// Clean session (3.1.1) / clean start (5.0).
    pub clean_start: bool,
    /// 5.0 Session Expiry Interval.
    pub session_expiry: Option<u32>,
    /// Username.
    pub username: Option<&'a str>,
    /// Password.
    pub password: Option<&'a [u8]>,
    /// 5.0 Maximum Packet Size the client accepts.
    pub max_packet_size: Option<u32>,
    /// A will: topic, payload, QoS.
    pub will: Option<(&'a str, &'a [u8], QoS)>,
    /// Keep Alive in seconds.
    pub keep_alive: u16,
}

impl<'a> Opts<'a> {
    /// A clean client `client_id` of `version`, no credentials.
    pub fn new(version: Version, client_id: &'a str) -> Opts<'a> {
        Opts {
            version,
            client_id,
            clean_start: true,
            session_expiry: None,
            username: None,
            password: None,
            max_packet_size: None,
            will: None,
            keep_alive: 60,
        }
    }

    /// The CONNECT packet.
    pub fn packet(&self) -> Packet<'a> {
        Packet::Connect(Connect {
            version: self.version,
            clean_start: self.clean_start,
            keep_alive: self.keep_alive,
            client_id: self.client_id,
            will: self.will.map(|(topic, payload, qos)| Will {
                topic,
                payload,
                qos,
                retain: false,
                props: Default::default(),
            }),
            username: self.username,
            password: self.password,
            props: ConnectProps {
                session_expiry: self.session_expiry,
                maximum_packet_size: self.max_packet_size,
                ..ConnectProps::default()
            },
        })
    }
}

/// A packet from the broker, owned, with the fields the tests compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// CONNACK: session present, the code as on the wire (3.1.1: the return
    /// code 0..5; 5.0: the reason code), and the 5.0 limits announced.
    ConnAck {
        /// Session Present.
        session_present: bool,
        /// The code as sent.
        code: u8,
        /// 5.0 Receive Maximum.
        receive_maximum: Option<u16>,
        /// 5.0 Maximum Packet Size.
        max_packet_size: Option<u32>,
        /// 5.0 Assigned Client Identifier.
        assigned_client_id: Option<String>,
    },
    /// PUBLISH.
    Publish(Msg),
    /// PUBACK: packet id, reason code.
    PubAck(u16, u8),
    /// PUBREC.
    PubRec(u16, u8),
    /// PUBREL.
    PubRel(u16, u8),
    /// PUBCOMP.
    PubComp(u16, u8),
    /// SUBACK: packet id, the codes as sent.
    SubAck(u16, Vec<u8>),
    /// UNSUBACK: packet id, the 5.0 codes (none in 3.1.1).
    UnsubAck(u16, Vec<u8>),
    /// PINGRESP.
    PingResp,
    /// DISCONNECT (5.0) with its reason code.
    Disconnect(u8),
    /// Another packet a broker does not send to a client.
    Other(u8),
}

/// A PUBLISH as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS 0..2.
    pub qos: u8,
    /// RETAIN.
    pub retain: bool,
    /// DUP.
    pub dup: bool,
    /// Packet identifier (0 at QoS 0).
    pub packet_id: u16,
}

fn owned(p: &Packet<'_>, v: Version) -> Got {
    match p {
        Packet::ConnAck(ConnAck {
            session_present,
            code,
            props,
        }) => Got::ConnAck {
            session_present: *session_present,
            code: match v {
                Version::V311 => code.connack_v311(),
                Version::V5 => code.0,
            },
            receive_maximum: props.receive_maximum,
            max_packet_size: props.maximum_packet_size,
            assigned_client_id: props.assigned_client_id.map(str::to_owned),
        },
        Packet::Publish(p) => Got::Publish(Msg {
            topic: p.topic.to_owned(),
            payload: p.payload.to_vec(),
            qos: p.qos.as_u8(),
            retain: p.retain,
            dup: p.dup,
            packet_id: p.packet_id,
        }),
        Packet::PubAck(r) => Got::PubAck(r.packet_id, r.code.0),
        Packet::PubRec(r) => Got::PubRec(r.packet_id, r.code.0),
        Packet::PubRel(r) => Got::PubRel(r.packet_id, r.code.0),
        Packet::PubComp(r) => Got::PubComp(r.packet_id, r.code.0),
        Packet::SubAck(s) => Got::SubAck(
            s.packet_id,
            s.codes
                .iter()
                .map(|c| match v {
                    Version::V311 => c.suback_v311(),
                    Version::V5 => c.0,
                })
                .collect(),
        ),
        Packet::UnsubAck(u) => Got::UnsubAck(u.packet_id, u.codes.iter().map(|c| c.0).collect()),
        Packet::PingResp => Got::PingResp,
        Packet::Disconnect(d) => Got::Disconnect(d.code.0),
        other => Got::Other(other.packet_type()),
    }
}

/// A response packet (PUBACK, PUBREC, PUBREL, PUBCOMP) with a reason code.
pub fn resp(packet_id: u16) -> PubResp<'static> {
    PubResp {
        packet_id,
        code: ReasonCode::SUCCESS,
        props: Default::default(),
    }
}

/// One connection to the broker.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    /// The connection's protocol version.
    pub version: Version,
    buf: Vec<u8>,
    start: usize,
    out: Vec<u8>,
    short_timeout: bool,
}

impl Client {
    /// Connects and sends the CONNECT of `opts`; returns the client and
    /// what the broker answered first (a CONNACK, or `None` when it closed
    /// the connection without one).
    pub fn connect(addr: SocketAddr, opts: &Opts<'_>) -> (Client, Option<Got>) {
        let mut c = Client::open(addr, opts.version);
        c.send(&opts.packet());
        let first = c.recv();
        (c, first)
    }

    /// Connects and expects CONNACK success.
    ///
    /// # Panics
    ///
    /// On any other answer.
    pub fn connected(addr: SocketAddr, opts: &Opts<'_>) -> (Client, bool) {
        let (c, first) = Client::connect(addr, opts);
        match first {
            Some(Got::ConnAck {
                session_present,
                code: 0,
                ..
            }) => (c, session_present),
            other => panic!(
                "{}: CONNACK success expected, got {other:?}",
                opts.client_id
            ),
        }
    }

    /// A TCP connection with nothing sent yet.
    pub fn open(addr: SocketAddr, version: Version) -> Client {
        Client {
            stream: connect(addr),
            version,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            out: Vec::with_capacity(64 * 1024),
            short_timeout: false,
        }
    }

    /// Encodes `p` into the output buffer (sent by [`Client::flush`]).
    pub fn queue(&mut self, p: &Packet<'_>) {
        codec::encode(p, self.version, &mut self.out).expect("encode a packet");
    }

    /// Writes what was queued.
    pub fn flush(&mut self) {
        if !self.out.is_empty() {
            self.stream
                .write_all(&self.out)
                .expect("write to the broker");
            self.out.clear();
        }
    }

    /// Sends `p` at once.
    pub fn send(&mut self, p: &Packet<'_>) {
        self.queue(p);
        self.flush();
    }

    /// Sends bytes as they are; `Err` when the broker already closed.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a PUBLISH.
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool, packet_id: u16) {
        self.send(&publish(topic, payload, qos, retain, packet_id));
    }

    /// Subscribes to `filters` (filter, QoS) with packet id 1; returns the
    /// SUBACK's codes as sent.
    ///
    /// # Panics
    ///
    /// When the next packet is not that SUBACK.
    pub fn subscribe(&mut self, filters: &[(&str, u8)]) -> Vec<u8> {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            subscription_id: None,
            user_properties: Default::default(),
            filters: filters
                .iter()
                .map(|&(f, q)| (f, SubOptions::qos(QoS::from_u8(q).unwrap())))
                .collect(),
        }));
        match self.recv() {
            Some(Got::SubAck(1, codes)) => codes,
            other => panic!("SUBACK expected, got {other:?}"),
        }
    }

    /// Reads more bytes: `Some(false)` when the broker closed the
    /// connection, `None` when a read timeout set with
    /// [`Client::set_read_timeout`] passed.
    fn try_fill(&mut self) -> Option<bool> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 32 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + 64 * 1024, 0);
        let n = loop {
            match self.stream.read(&mut self.buf[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break 0,
                Err(e)
                    if self.short_timeout
                        && matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                {
                    self.buf.truncate(len);
                    return None;
                }
                Err(e) => panic!("read from the broker ({IO_TIMEOUT:?} timeout): {e}"),
            }
        };
        self.buf.truncate(len + n);
        Some(n > 0)
    }

    /// Reads more bytes; `false` when the broker closed the connection.
    fn fill(&mut self) -> bool {
        self.try_fill()
            .expect("no read timeout but IO_TIMEOUT's is set")
    }

    /// Makes reads give up after `timeout` ([`Client::batch`] returns
    /// `None`) instead of failing the test after [`IO_TIMEOUT`].
    pub fn set_read_timeout(&mut self, timeout: std::time::Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        self.short_timeout = true;
    }

    /// The next packet, or `None` when the broker closed the connection.
    ///
    /// # Panics
    ///
    /// On a packet the codec refuses, or nothing within [`IO_TIMEOUT`].
    pub fn recv(&mut self) -> Option<Got> {
        loop {
            match codec::decode(&self.buf[self.start..], Some(self.version), MAX_PACKET) {
                Ok(Decoded::Packet(p, used)) => {
                    let got = owned(&p, self.version);
                    self.start += used;
                    return Some(got);
                }
                Ok(Decoded::Incomplete) => {
                    if !self.fill() {
                        assert_eq!(
                            self.start,
                            self.buf.len(),
                            "the broker closed in the middle of a packet"
                        );
                        return None;
                    }
                }
                Err(e) => panic!("the broker sent a packet the codec refuses: {e}"),
            }
        }
    }

    /// Every packet until the broker closes the connection.
    pub fn until_closed(&mut self) -> Vec<Got> {
        let mut all = Vec::new();
        while let Some(p) = self.recv() {
            all.push(p);
        }
        all
    }

    /// Decodes every whole packet read so far and hands each to `f` (which
    /// may queue answers), reading first when none is whole; flushes what
    /// `f` queued. Returns `Some(false)` when the broker closed the
    /// connection, `None` when the read timeout of
    /// [`Client::set_read_timeout`] passed with no packet.
    ///
    /// # Panics
    ///
    /// On a packet the codec refuses.
    pub fn batch(&mut self, mut f: impl FnMut(&Packet<'_>, &mut Vec<u8>)) -> Option<bool> {
        let mut any = false;
        loop {
            match codec::decode(&self.buf[self.start..], Some(self.version), MAX_PACKET) {
                Ok(Decoded::Packet(p, used)) => {
                    f(&p, &mut self.out);
                    self.start += used;
                    any = true;
                }
                Ok(Decoded::Incomplete) if any => break,
                Ok(Decoded::Incomplete) => {
                    if !self.try_fill()? {
                        return Some(false);
                    }
                }
                Err(e) => panic!("the broker sent a packet the codec refuses: {e}"),
            }
        }
        self.flush();
        Some(true)
    }

    /// Sends a normal DISCONNECT and closes.
    pub fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Default::default()));
    }

    /// Closes the connection without a DISCONNECT.
    pub fn drop_connection(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// A PUBLISH packet.
pub fn publish<'a>(
    topic: &'a str,
    payload: &'a [u8],
    qos: u8,
    retain: bool,
    packet_id: u16,
) -> Packet<'a> {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::from_u8(qos).expect("QoS 0..2"),
        retain,
        topic,
        packet_id,
        props: PublishProps::default(),
        payload,
    })
}
