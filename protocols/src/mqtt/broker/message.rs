//! An application message as the broker keeps it, and the byte encoding
//! used to carry messages and sessions between shards.
//!
//! The mesh encoding is private to one process (both ends run the same
//! build), so it is plain: big-endian integers, length-prefixed strings.
//! A decoder still checks every length: a bad message is counted, never a
//! panic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringport_plugin::Bytes;

use crate::mqtt::codec::{Publish, QoS, UserProps};

/// The v5 properties a message carries to its subscribers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MsgProps {
    pub payload_format: Option<u8>,
    pub response_topic: Option<Box<str>>,
    pub correlation_data: Option<Box<[u8]>>,
    pub content_type: Option<Box<str>>,
    pub user: Vec<(Box<str>, Box<str>)>,
}

/// One application message. Shared (`Arc`) between every queue holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub topic: Box<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// `None` for 3.1.1 messages and v5 ones without properties.
    pub props: Option<Box<MsgProps>>,
    /// When the Message Expiry Interval runs out.
    pub expires: Option<Instant>,
    /// The publishing session's key (for No Local); 0 for wills of ended
    /// sessions and restored messages.
    pub origin: u64,
}

/// Flags byte of an encoded message.
const F_RETAIN: u8 = 0x04;
const F_PROPS: u8 = 0x08;
const F_EXPIRY: u8 = 0x10;

impl Message {
    /// The properties of a received PUBLISH worth keeping, if any.
    pub fn props_of(p: &Publish<'_>) -> Option<Box<MsgProps>> {
        let pp = &p.props;
        if pp.payload_format.is_none()
            && pp.response_topic.is_none()
            && pp.correlation_data.is_none()
            && pp.content_type.is_none()
            && pp.user_properties.is_empty()
        {
            return None;
        }
        Some(Box::new(MsgProps {
            payload_format: pp.payload_format,
            response_topic: pp.response_topic.map(Into::into),
            correlation_data: pp.correlation_data.map(Into::into),
            content_type: pp.content_type.map(Into::into),
            user: user_pairs(pp.user_properties),
        }))
    }

    /// Seconds left of the expiry interval at `now` (at least 1), `None`
    /// without one; `Some(0)` once expired.
    pub fn remaining(&self, now: Instant) -> Option<u32> {
        self.expires.map(|at| {
            if at <= now {
                0
            } else {
                let left = at - now;
                u32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0))
                    .unwrap_or(u32::MAX)
            }
        })
    }

    /// Bytes a queue charges for this message.
    pub fn cost(&self) -> usize {
        self.topic.len() + self.payload.len() + 64
    }
}

/// Owned copies of user property pairs.
pub(crate) fn user_pairs(u: UserProps<'_>) -> Vec<(Box<str>, Box<str>)> {
    u.iter().map(|(k, v)| (k.into(), v.into())).collect()
}

/// Appends encoded values to a buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// A byte string with a 32-bit length.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    pub fn opt_bytes(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            Some(b) => self.u8(1).bytes(b),
            None => self.u8(0),
        }
    }
    pub fn opt_str(&mut self, v: Option<&str>) -> &mut Self {
        self.opt_bytes(v.map(str::as_bytes))
    }

    /// A message: flags, origin, expiry, topic, properties, then the
    /// payload with its length (so that more can follow).
    #[allow(clippy::too_many_arguments)]
    pub fn message_parts(
        &mut self,
        qos: QoS,
        retain: bool,
        origin: u64,
        expiry_secs: Option<u32>,
        topic: &str,
        props: Option<&MsgProps>,
        payload: &[u8],
    ) -> &mut Self {
        let mut flags = qos.as_u8();
        if retain {
            flags |= F_RETAIN;
        }
        if props.is_some() {
            flags |= F_PROPS;
        }
        if expiry_secs.is_some() {
            flags |= F_EXPIRY;
        }
        self.u8(flags).u64(origin);
        if let Some(e) = expiry_secs {
            self.u32(e);
        }
        self.str(topic);
        if let Some(p) = props {
            self.u8(p.payload_format.map_or(0, |f| f | 0x80));
            self.opt_str(p.response_topic.as_deref());
            self.opt_bytes(p.correlation_data.as_deref());
            self.opt_str(p.content_type.as_deref());
            self.u32(p.user.len() as u32);
            for (k, v) in &p.user {
                self.str(k).str(v);
            }
        }
        self.bytes(payload)
    }

    /// A kept message (its expiry as time left at `now`).
    pub fn message(&mut self, m: &Message, now: Instant) -> &mut Self {
        self.message_parts(
            m.qos,
            m.retain,
            m.origin,
            m.remaining(now),
            &m.topic,
            m.props.as_deref(),
            &m.payload,
        )
    }

    pub fn finish(self) -> Bytes {
        Bytes::from(self.buf)
    }
}

/// Reads values written by [`Writer`] from shared bytes; byte strings are
/// slices of them (no copy).
#[derive(Debug)]
pub(crate) struct Reader {
    bytes: Bytes,
    pos: usize,
}

/// A mesh message that does not decode (a bug, counted as malformed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadMesh;

type R<T> = Result<T, BadMesh>;

impl Reader {
    pub fn new(bytes: Bytes) -> Self {
        Reader { bytes, pos: 0 }
    }
    fn take(&mut self, n: usize) -> R<&[u8]> {
        let end = self.pos.checked_add(n).ok_or(BadMesh)?;
        let s = self.bytes.get(self.pos..end).ok_or(BadMesh)?;
        self.pos = end;
        Ok(s)
    }
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }
    pub fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> R<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> R<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> R<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    pub fn bytes(&mut self) -> R<Bytes> {
        let n = self.u32()? as usize;
        let start = self.pos;
        self.take(n)?;
        Ok(self.bytes.slice(start..start + n))
    }
    pub fn str(&mut self) -> R<Box<str>> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b).map(Into::into).map_err(|_| BadMesh)
    }
    pub fn opt_bytes(&mut self) -> R<Option<Box<[u8]>>> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.bytes()?.to_vec().into_boxed_slice()),
        })
    }
    pub fn opt_str(&mut self) -> R<Option<Box<str>>> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.str()?),
        })
    }
    pub fn qos(&mut self) -> R<QoS> {
        QoS::from_u8(self.u8()?).ok_or(BadMesh)
    }

    /// A message written by [`Writer::message_parts`]; its expiry counts
    /// from `now`.
    pub fn message(&mut self, now: Instant) -> R<Message> {
        let flags = self.u8()?;
        let qos = QoS::from_u8(flags & 3).ok_or(BadMesh)?;
        let origin = self.u64()?;
        let expires = if flags & F_EXPIRY != 0 {
            Some(now + Duration::from_secs(u64::from(self.u32()?)))
        } else {
            None
        };
        let topic = self.str()?;
        let props = if flags & F_PROPS != 0 {
            let pf = self.u8()?;
            let response_topic = self.opt_str()?;
            let correlation_data = self.opt_bytes()?;
            let content_type = self.opt_str()?;
            let n = self.u32()? as usize;
            let mut user = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                user.push((self.str()?, self.str()?));
            }
            Some(Box::new(MsgProps {
                payload_format: (pf & 0x80 != 0).then_some(pf & 0x7f),
                response_topic,
                correlation_data,
                content_type,
                user,
            }))
        } else {
            None
        };
        let payload = self.bytes()?;
        Ok(Message {
            topic,
            payload,
            qos,
            retain: flags & F_RETAIN != 0,
            props,
            expires,
            origin,
        })
    }

    pub fn arc_message(&mut self, now: Instant) -> R<Arc<Message>> {
        self.message(now).map(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip() {
        let now = Instant::now();
        let m = Message {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::ExactlyOnce,
            retain: true,
            props: Some(Box::new(MsgProps {
                payload_format: Some(1),
                response_topic: Some("r".into()),
                correlation_data: Some(vec![1, 2].into_boxed_slice()),
                content_type: None,
                user: vec![("k".into(), "v".into())],
            })),
            expires: Some(now + Duration::from_secs(30)),
            origin: 77,
        };
        let mut w = Writer::default();
        w.message(&m, now).u16(9);
        let mut r = Reader::new(w.finish());
        assert_eq!(r.message(now).unwrap(), m);
        assert_eq!(r.u16(), Ok(9));
        assert!(r.is_empty());
        assert_eq!(r.u8(), Err(BadMesh));
    }

    #[test]
    fn truncated_is_an_error() {
        let now = Instant::now();
        let mut w = Writer::default();
        w.message_parts(QoS::AtMostOnce, false, 1, None, "t", None, b"xyz");
        let b = w.finish();
        for cut in 0..b.len() {
            assert_eq!(
                Reader::new(b.slice(..cut)).message(now),
                Err(BadMesh),
                "{cut}"
            );
        }
    }
}
