//! Socket address conversion (`engine/src/sys/addr.rs`): `from_raw` reads
//! the `sockaddr_in`/`sockaddr_in6` the kernel wrote for a datagram's
//! source, `to_raw` writes the destination of a datagram send.
//!
//! The model is the two structs' layout from `<netinet/in.h>`, written out
//! here byte by byte:
//!
//! ```text
//! sockaddr_in  (16): family u16 (host order) | port u16 (network) | addr [4] | zero [8]
//! sockaddr_in6 (28): family u16 (host order) | port u16 (network) | flowinfo u32 (network)
//!                    | addr [16] | scope_id u32 (host order)
//! ```

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use ringport_engine::sys::addr::{from_raw, to_raw};

use crate::Input;

/// `AF_INET` and `AF_INET6` on Linux.
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCKADDR_IN: usize = 16;
const SOCKADDR_IN6: usize = 28;

/// What the layout says `bytes` hold: an address of a known family whose
/// struct fits, or nothing.
fn model_read(bytes: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?);
    let port = |b: &[u8]| u16::from_be_bytes([b[2], b[3]]);
    match family {
        AF_INET => {
            let b = bytes.get(..SOCKADDR_IN)?;
            let ip = Ipv4Addr::from(<[u8; 4]>::try_from(&b[4..8]).ok()?);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port(b))))
        }
        AF_INET6 => {
            let b = bytes.get(..SOCKADDR_IN6)?;
            let flowinfo = u32::from_be_bytes(b[4..8].try_into().ok()?);
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&b[8..24]).ok()?);
            let scope = u32::from_ne_bytes(b[24..28].try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                port(b),
                flowinfo,
                scope,
            )))
        }
        _ => None,
    }
}

/// The struct the layout gives for `addr`.
fn model_write(addr: &SocketAddr) -> Vec<u8> {
    let mut out = Vec::new();
    match addr {
        SocketAddr::V4(a) => {
            out.extend_from_slice(&AF_INET.to_ne_bytes());
            out.extend_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&[0; 8]);
        }
        SocketAddr::V6(a) => {
            out.extend_from_slice(&AF_INET6.to_ne_bytes());
            out.extend_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&a.flowinfo().to_be_bytes());
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.scope_id().to_ne_bytes());
        }
    }
    out
}

/// `to_raw` into a storage first filled with `fill`, as the bytes it wrote
/// (the length it returned).
fn engine_write(addr: &SocketAddr, fill: u8) -> Vec<u8> {
    // SAFETY: sockaddr_storage is plain bytes; any pattern is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: the storage is ours, written through its own size.
    unsafe {
        std::ptr::write_bytes(
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            fill,
            std::mem::size_of::<libc::sockaddr_storage>(),
        );
    }
    let len = to_raw(addr, &mut storage) as usize;
    assert!(len <= std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: `len` bytes of the storage, which is at least that long.
    unsafe {
        std::slice::from_raw_parts(
            (&storage as *const libc::sockaddr_storage).cast::<u8>(),
            len,
        )
    }
    .to_vec()
}

/// An address made from the fuzzer's bytes: v4 or v6, any port, flow label
/// and scope.
fn any_addr(input: &mut Input<'_>) -> SocketAddr {
    if input.u8() & 1 == 0 {
        let ip = Ipv4Addr::from(input.u32());
        SocketAddr::V4(SocketAddrV4::new(ip, input.u16()))
    } else {
        let ip = Ipv6Addr::from((u128::from(input.u64()) << 64) | u128::from(input.u64()));
        let port = input.u16();
        SocketAddr::V6(SocketAddrV6::new(ip, port, input.u32(), input.u32()))
    }
}

/// Input: `[mode, ...]`. Mode bit 0 clear: the rest are raw bytes, as the
/// kernel's name area might hold them; set: an address is made from the
/// rest and written, then read back.
///
/// Checks: raw bytes read as the layout says (never a panic), and an
/// address read from them writes back to the same meaningful bytes;
/// every address writes exactly the layout's struct (whatever the storage
/// held before) and reads back as itself.
///
/// # Panics
///
/// When a check fails.
pub fn sockaddr(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    if mode & 1 == 0 {
        let raw = input.rest();
        let read = from_raw(raw);
        assert_eq!(read, model_read(raw), "from_raw({raw:?})");
        if let Some(addr) = read {
            let written = engine_write(&addr, mode);
            // What the kernel wrote, less the padding of sockaddr_in.
            let mut meaningful = raw[..written.len()].to_vec();
            if addr.is_ipv4() {
                meaningful[8..].fill(0);
            }
            assert_eq!(written, meaningful, "{addr} written back");
        }
    } else {
        let addr = any_addr(&mut input);
        let written = engine_write(&addr, input.u8());
        assert_eq!(written, model_write(&addr), "to_raw({addr})");
        assert_eq!(from_raw(&written), Some(addr), "{addr} read back");
        // Cut anywhere short of the struct, it is refused.
        let cut = usize::from(input.u8()) % written.len();
        assert_eq!(from_raw(&written[..cut]), None, "{addr} cut to {cut}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{corpus, random_inputs};

    #[test]
    fn model_reads_what_the_kernel_writes() {
        let v4: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let bytes = model_write(&v4);
        assert_eq!(
            bytes,
            [2, 0, 0x1f, 0x90, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(model_read(&bytes), Some(v4));
        let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 0x12345, 3));
        let bytes = model_write(&v6);
        assert_eq!(bytes.len(), SOCKADDR_IN6);
        assert_eq!(&bytes[4..8], &[0, 1, 0x23, 0x45]);
        assert_eq!(model_read(&bytes), Some(v6));
        assert_eq!(model_read(&bytes[..27]), None);
        assert_eq!(model_read(&[1, 0, 0, 0]), None);
    }

    #[test]
    fn harness_on_fixed_corpus_and_random_inputs() {
        sockaddr(&[]);
        sockaddr(&[0, 2, 0, 0, 80, 10, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9]);
        sockaddr(&[1, 1, 0xfe, 0x80]);
        for input in corpus("sockaddr") {
            sockaddr(&input);
        }
        for mut input in random_inputs(11, 3000, 40) {
            // Half of them with a real family, so that reads succeed.
            if input.len() > 2 && input[0] & 2 != 0 {
                let family = if input[0] & 4 != 0 { AF_INET6 } else { AF_INET };
                input[1..3].copy_from_slice(&family.to_ne_bytes());
                input[0] &= !1;
            }
            sockaddr(&input);
        }
    }
}
