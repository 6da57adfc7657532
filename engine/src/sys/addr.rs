//! Conversions between `std::net::SocketAddr` and the C socket address structs.

use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Reads a `sockaddr_in` / `sockaddr_in6` from raw bytes as the kernel wrote them.
/// Returns `None` for other families or short input.
pub fn from_raw(bytes: &[u8]) -> Option<SocketAddr> {
    if bytes.len() < 2 {
        return None;
    }
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]) as i32;
    match family {
        libc::AF_INET if bytes.len() >= mem::size_of::<libc::sockaddr_in>() => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 if bytes.len() >= mem::size_of::<libc::sockaddr_in6>() => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let flowinfo = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&bytes[8..24]);
            let scope = u32::from_ne_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flowinfo,
                scope,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` into `storage`; returns the length to pass as `msg_namelen`.
pub fn to_raw(addr: &SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe {
                std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin);
            }
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe {
                std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6);
            }
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// The peer address of a connected socket (getpeername).
pub fn peer_of(fd: i32) -> Option<SocketAddr> {
    name_of(fd, libc::getpeername)
}

/// The local address of a bound or connected socket (getsockname).
pub fn local_of(fd: i32) -> Option<SocketAddr> {
    name_of(fd, libc::getsockname)
}

type NameCall = unsafe extern "C" fn(i32, *mut libc::sockaddr, *mut libc::socklen_t) -> i32;

fn name_of(fd: i32, call: NameCall) -> Option<SocketAddr> {
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage and len are ours and sized as the kernel expects.
    let rc = unsafe {
        call(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: the kernel initialised `len` bytes of storage, which is at least that large.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&storage as *const libc::sockaddr_storage).cast::<u8>(),
            len as usize,
        )
    };
    from_raw(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(a: SocketAddr) {
        // SAFETY: an all-zero sockaddr_storage is a valid value.
        let mut st: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let len = to_raw(&a, &mut st) as usize;
        // SAFETY: to_raw wrote `len` bytes into st.
        let bytes = unsafe {
            std::slice::from_raw_parts((&st as *const libc::sockaddr_storage).cast::<u8>(), len)
        };
        assert_eq!(from_raw(bytes), Some(a));
    }

    #[test]
    fn v4_and_v6_round_trip() {
        round_trip("127.0.0.1:11111".parse().unwrap());
        round_trip("[::1]:9000".parse().unwrap());
        round_trip("[fe80::1%3]:5".parse().unwrap());
        assert_eq!(from_raw(&[2]), None);
        assert_eq!(from_raw(&[0, 0, 0, 0]), None);
    }
}
