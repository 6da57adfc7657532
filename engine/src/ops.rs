//! `user_data` encoding: which operation a completion belongs to.
//!
//! Layout (64 bits): `kind:8 | generation:24 | index:32`. The generation lets
//! a completion for a connection slot that has since been reused be recognised
//! as stale instead of reaching the new connection.

/// Multishot accept on a TCP listener; index = listener slot.
pub const OP_ACCEPT: u8 = 1;
/// Multishot receive on a stream; index/generation = connection.
pub const OP_RECV: u8 = 2;
/// Send on a stream; index/generation = connection.
pub const OP_SEND: u8 = 3;
/// Multishot recvmsg on a UDP socket; index = socket slot.
pub const OP_UDP_RECV: u8 = 4;
/// Sendmsg of one datagram; index = send slot, generation = the listener
/// of the sending socket (listener ids are 16 bits, within the 24).
pub const OP_UDP_SEND: u8 = 5;
/// Read on the shard's wake-up eventfd.
pub const OP_WAKE: u8 = 6;
/// An AsyncCancel request; its own completion carries no meaning.
pub const OP_CANCEL: u8 = 7;
/// A close of a stream's fd; posted only on failure (CQE_SKIP_SUCCESS).
pub const OP_CLOSE: u8 = 8;
/// A MSG_RING we sent to wake shard `index`; posted only on failure.
pub const OP_MSG_RING: u8 = 9;
/// The CQE another shard's MSG_RING posted into our ring to wake us.
pub const OP_MESH_WAKE: u8 = 10;
/// The shard's deadline timer (IORING_OP_TIMEOUT); index = arming sequence.
pub const OP_TIMER: u8 = 11;
/// A stream's outbound connect (IORING_OP_CONNECT); index/generation = connection.
pub const OP_CONNECT: u8 = 12;

const GEN_MASK: u32 = 0x00ff_ffff;

/// Packs an operation's identity.
#[inline]
pub fn pack(kind: u8, generation: u32, index: u32) -> u64 {
    ((kind as u64) << 56) | (((generation & GEN_MASK) as u64) << 32) | index as u64
}

/// Unpacks `(kind, generation, index)`.
#[inline]
pub fn unpack(user_data: u64) -> (u8, u32, u32) {
    (
        (user_data >> 56) as u8,
        ((user_data >> 32) as u32) & GEN_MASK,
        user_data as u32,
    )
}

/// Generations wrap within 24 bits.
#[inline]
pub fn next_generation(generation: u32) -> u32 {
    (generation + 1) & GEN_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack() {
        let ud = pack(OP_SEND, 0x12_3456, 0xdead_beef);
        assert_eq!(unpack(ud), (OP_SEND, 0x12_3456, 0xdead_beef));
        assert_eq!(
            unpack(pack(OP_RECV, 0x1ff_ffff, 7)),
            (OP_RECV, 0xff_ffff, 7)
        );
        assert_eq!(next_generation(0xff_ffff), 0);
    }
}
