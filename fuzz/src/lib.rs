//! Fuzz harnesses for ringport's decoders: every input an operator or a peer
//! controls.
//!
//! Each harness takes the fuzzer's raw bytes, decodes from them both the
//! settings and the input of one decoder, runs the decoder the way the engine
//! would and checks what it did against a reference model written here
//! (from the spec or the kernel's layout, independent of the decoder's own
//! code) or against an invariant (a round trip, a bound). A broken check
//! panics, which the fuzzer reports as a crash.
//!
//! | target | decoder | checked against |
//! |--------|---------|-----------------|
//! | `sockperf_stream`, `sockperf_datagram` | the sockperf plugin | [`sockperf`]: a model of the reflection protocol |
//! | `relay_wire` | relay frames (`protocols/src/relay/wire.rs`) | [`relay_wire`]: a model of the framing rules |
//! | `mqtt_codec` | MQTT packets (`protocols/src/mqtt/codec/`) | [`mqtt_codec`]: a model of the fixed header; decode, encode, decode gives an equal packet |
//! | `nats_codec` | NATS server operations, the NATS client, header blocks, the topic mapping (`protocols/src/nats/`) | [`nats_codec`]: the spec's `MSG`/`HMSG` form written again; split feeds; round trips |
//! | `relay_plugin` | the relay plugin over TCP, UDP and the mesh | [`relay_plugin`]: a model of subscriptions, delivery, lag and retries |
//! | `tls_record` | the TLS record layer (`engine/src/tls/record.rs`) | [`tls_record`]: seal/open round trips, tampering, framing |
//! | `tls_handshake` | a TLS session's handshake input | [`tls_handshake`]: bounds and outcomes |
//! | `identity_pattern` | identity allowlist patterns | [`identity`]: a model parser and matcher, `Display` round trip |
//! | `udp_cmsg` | the GRO and SO_RXQ_OVFL control-message walkers | [`cmsg`]: a model walker and built control blocks |
//! | `uring_recvmsg` | the multishot recvmsg buffer layout | [`recvmsg`]: the kernel's layout, built and parsed |
//! | `sockaddr` | socket address conversion | [`sockaddr`]: the C structs' layout, round trips |
//! | `listener_spec` | listener specs | [`spec`]: a model grammar, `Display` round trip |
//! | `config` | the TOML config file and its merge with the flags | [`config`]: documented ranges, merged values, error messages |
//! | `admin_request` | the admin endpoint's HTTP request head | [`admin_request`]: a model of the request grammar |
//!
//! `cargo test` here runs every harness on fixed cases, on every file of its
//! checked-in corpus (`corpus/TARGET/`) and on pseudo-random inputs.

pub mod admin_request;
pub mod cmsg;
pub mod config;
pub mod identity;
pub mod mqtt_codec;
pub mod nats_codec;
pub mod recvmsg;
pub mod relay_plugin;
pub mod relay_wire;
pub mod sockaddr;
pub mod sockperf;
pub mod spec;
pub mod tls_handshake;
pub mod tls_record;

pub use sockperf::{sockperf_datagram, sockperf_stream};

/// Reads a fuzzer's bytes front to back as the numbers and slices a harness
/// decodes its settings and inputs from. Past the end every read gives zero
/// or an empty slice, so any input is a complete one.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader of `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// The next four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next eight bytes, big-endian.
    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    /// The next `n` bytes, or as many as are left.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A length byte, then that many bytes.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// What the harnesses' tests share: a pseudo-random generator (so that they
/// run on stable without a fuzzer) and the checked-in corpora.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::PathBuf;

    /// A tiny deterministic generator.
    pub fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// `rounds` pseudo-random inputs of up to `max_len` bytes each, the same
    /// on every run.
    pub fn random_inputs(seed: u64, rounds: usize, max_len: usize) -> Vec<Vec<u8>> {
        let mut state = seed | 1;
        (0..rounds)
            .map(|_| {
                let len = (xorshift(&mut state) % (max_len as u64 + 1)) as usize;
                (0..len).map(|_| xorshift(&mut state) as u8).collect()
            })
            .collect()
    }

    /// Every file of `corpus/TARGET/`, which must hold at least one.
    ///
    /// # Panics
    ///
    /// If the folder is missing or empty.
    pub fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} holds no seed", dir.display());
        files.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }
}
