//! UDP sockets of a shard and the pool of in-flight datagram sends.

use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use ringport_plugin::{ListenerId, WriteError};

use crate::sys::addr;

/// Ancillary space asked for on receive: room for the SO_RXQ_OVFL counter
/// (CMSG_SPACE(4) on 64-bit Linux).
pub const CONTROL_LEN: usize = 24;
/// Address space asked for on receive: a `sockaddr_in6` fits v4 and v6.
pub const NAME_LEN: usize = mem::size_of::<libc::sockaddr_in6>();

/// One bound UDP socket.
pub struct UdpSock {
    /// The socket (None once the drain has closed it).
    pub fd: Option<OwnedFd>,
    /// Listener it belongs to.
    pub listener: ListenerId,
    /// Plugin instance serving it.
    pub plugin: u16,
    /// Bound address.
    pub local: SocketAddr,
    /// A receive is armed.
    pub armed: bool,
    /// Last SO_RXQ_OVFL value seen (cumulative in the kernel).
    pub rxq_ovfl: u32,
}

impl std::fmt::Debug for UdpSock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSock")
            .field("fd", &self.raw_fd())
            .field("local", &self.local)
            .finish()
    }
}

impl UdpSock {
    /// Wraps a bound socket.
    pub fn new(fd: OwnedFd, listener: ListenerId, plugin: u16, local: SocketAddr) -> UdpSock {
        UdpSock {
            fd: Some(fd),
            listener,
            plugin,
            local,
            armed: false,
            rxq_ovfl: 0,
        }
    }

    /// The socket's descriptor number (-1 once closed).
    #[inline]
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Takes the kernel's cumulative drop count (SO_RXQ_OVFL or SO_MEMINFO)
    /// and returns how many datagrams it dropped since the last reading.
    pub fn kernel_drops_since_last(&mut self, total: u32) -> u64 {
        let delta = total.wrapping_sub(self.rxq_ovfl);
        self.rxq_ovfl = total;
        u64::from(delta)
    }
}

/// Reads the SO_RXQ_OVFL counter from a control block, if present.
pub fn rxq_ovfl(control: &[u8]) -> Option<u32> {
    // cmsghdr on 64-bit Linux: len u64, level i32, type i32, then data.
    let mut off = 0;
    while off + 16 <= control.len() {
        let len = u64::from_ne_bytes(control[off..off + 8].try_into().ok()?) as usize;
        let level = i32::from_ne_bytes(control[off + 8..off + 12].try_into().ok()?);
        let kind = i32::from_ne_bytes(control[off + 12..off + 16].try_into().ok()?);
        // `off + 16 <= control.len()`: no sum that could wrap.
        if len < 16 || len > control.len() - off {
            return None;
        }
        if level == libc::SOL_SOCKET && kind == libc::SO_RXQ_OVFL && len >= 20 {
            return Some(u32::from_ne_bytes(
                control[off + 16..off + 20].try_into().ok()?,
            ));
        }
        off += (len + 7) & !7;
    }
    None
}

/// One datagram send's memory: header, iovec, address and bytes, all at a
/// stable address until the kernel completes the sendmsg.
struct Slot {
    hdr: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
    buf: Vec<u8>,
}

/// A fixed pool of send slots. The vector is sized once and never grows, so
/// a slot's address stays put while the kernel reads it.
pub struct SendPool {
    slots: Vec<Slot>,
    free: Vec<u32>,
    max_len: usize,
}

impl std::fmt::Debug for SendPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendPool")
            .field("slots", &self.slots.len())
            .field("free", &self.free.len())
            .finish()
    }
}

impl SendPool {
    /// `count` slots for datagrams of at most `max_len` bytes.
    pub fn new(count: usize, max_len: usize) -> SendPool {
        let slots = (0..count)
            .map(|_| {
                Slot {
                    // SAFETY: all-zero msghdr/iovec/sockaddr_storage are valid values.
                    hdr: unsafe { mem::zeroed() },
                    // SAFETY: as above.
                    iov: unsafe { mem::zeroed() },
                    // SAFETY: as above.
                    addr: unsafe { mem::zeroed() },
                    buf: Vec::new(),
                }
            })
            .collect();
        SendPool {
            slots,
            free: (0..count as u32).rev().collect(),
            max_len,
        }
    }

    /// Fills a free slot with `parts` to `to`; returns the slot index and the
    /// msghdr pointer to submit.
    pub fn fill(
        &mut self,
        to: &SocketAddr,
        parts: &[&[u8]],
    ) -> Result<(u32, *const libc::msghdr), WriteError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > self.max_len {
            return Err(WriteError::TooLarge);
        }
        let idx = self.free.pop().ok_or(WriteError::QueueFull)?;
        let slot = &mut self.slots[idx as usize];
        slot.buf.clear();
        for p in parts {
            slot.buf.extend_from_slice(p);
        }
        let namelen = addr::to_raw(to, &mut slot.addr);
        slot.iov.iov_base = slot.buf.as_mut_ptr().cast();
        slot.iov.iov_len = slot.buf.len();
        slot.hdr.msg_name = (&mut slot.addr as *mut libc::sockaddr_storage).cast();
        slot.hdr.msg_namelen = namelen;
        slot.hdr.msg_iov = &mut slot.iov;
        slot.hdr.msg_iovlen = 1;
        slot.hdr.msg_control = std::ptr::null_mut();
        slot.hdr.msg_controllen = 0;
        Ok((idx, &slot.hdr))
    }

    /// Returns a slot after its completion.
    pub fn release(&mut self, idx: u32) {
        if (idx as usize) < self.slots.len() {
            self.free.push(idx);
        }
    }

    /// Slots in flight.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_fills_and_runs_dry() {
        let mut p = SendPool::new(2, 10);
        let to: SocketAddr = "127.0.0.1:5".parse().unwrap();
        let (a, _) = p.fill(&to, &[b"ab", b"cd"]).unwrap();
        let (_b, _) = p.fill(&to, &[b"x"]).unwrap();
        assert_eq!(p.fill(&to, &[b"y"]), Err(WriteError::QueueFull));
        assert_eq!(p.in_flight(), 2);
        p.release(a);
        assert_eq!(p.fill(&to, &[&[0u8; 11]]), Err(WriteError::TooLarge));
        assert!(p.fill(&to, &[b"z"]).is_ok());
    }

    #[test]
    fn rxq_ovfl_parses_the_counter() {
        let mut c = vec![0u8; 24];
        c[0..8].copy_from_slice(&20u64.to_ne_bytes());
        c[8..12].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        c[12..16].copy_from_slice(&libc::SO_RXQ_OVFL.to_ne_bytes());
        c[16..20].copy_from_slice(&7u32.to_ne_bytes());
        assert_eq!(rxq_ovfl(&c), Some(7));
        assert_eq!(rxq_ovfl(&c[..10]), None);
        c[0..8].copy_from_slice(&200u64.to_ne_bytes());
        assert_eq!(rxq_ovfl(&c), None, "length past the block");
    }

    #[test]
    fn a_length_that_would_wrap_ends_the_walk() {
        // Found by fuzz/ (udp_cmsg): a second header of length u64::MAX
        // overflowed `off + len` (a panic with overflow checks, a wrong
        // walk without).
        let mut c = vec![0u8; 40];
        c[0..8].copy_from_slice(&20u64.to_ne_bytes());
        c[24..32].copy_from_slice(&u64::MAX.to_ne_bytes());
        c[32..36].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        c[36..40].copy_from_slice(&libc::SO_RXQ_OVFL.to_ne_bytes());
        assert_eq!(rxq_ovfl(&c), None);
    }
}
