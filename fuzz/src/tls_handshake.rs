//! A TLS session's handshake input (`engine/src/tls/session.rs`,
//! `Session::handshake`): the bytes a client sends before the engine trusts
//! it, fed in chunks split any way, to servers configured as operators
//! configure them (TLS 1.3; TLS 1.2 too with ALPN; mutual TLS with an
//! identity allowlist; its audit mode).
//!
//! Invariants:
//! - no panic, and never more than `MAX_HANDSHAKE_BYTES` held;
//! - bytes that are not a complete client handshake never establish a
//!   session: every call ends `Pending` or `Failed`, and once failed the
//!   session takes nothing more and writes nothing more;
//! - a first byte other than a handshake record's fails as `not_tls` at
//!   once; `too_large` only past `MAX_HANDSHAKE_BYTES` offered;
//! - what the server writes back is whole TLS records, and an alert it
//!   says it sent has a name.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use rustls::ServerConfig;

use ringport_engine::fuzzing::{Progress, Session, HANDSHAKE_RECORD};
use ringport_engine::tls::{
    alert_name, HandshakeResult, ListenerTls, TlsSettings, TlsVersion, MAX_HANDSHAKE_BYTES,
};

use crate::Input;

/// The four server configurations, made once from `fuzz/tls/`.
fn configs() -> &'static [Arc<ServerConfig>; 4] {
    static CONFIGS: OnceLock<[Arc<ServerConfig>; 4]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tls");
        let make = |f: &dyn Fn(&mut TlsSettings), dry_run: bool| {
            let mut s = TlsSettings::new(dir.join("cert.pem"), dir.join("key.pem"));
            f(&mut s);
            ListenerTls::new(s, dry_run)
                .expect("the test files in fuzz/tls load")
                .current()
                .config
                .clone()
        };
        let mutual = |s: &mut TlsSettings| {
            s.client_ca = Some(dir.join("ca.pem"));
            s.allow_identities = vec!["spiffe://fuzz.example/*".parse().unwrap()];
        };
        [
            make(&|_| {}, false),
            make(
                &|s| {
                    s.min_version = TlsVersion::V1_2;
                    s.alpn = vec!["h2".into(), "mqtt".into()];
                    s.resumption = false;
                },
                false,
            ),
            make(&mutual, false),
            make(&mutual, true),
        ]
    })
}

/// Checks that `tx` is whole TLS records and returns them as (type, body).
fn records(tx: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut rest = tx;
    while !rest.is_empty() {
        assert!(
            rest.len() >= 5,
            "a cut record header in the server's output"
        );
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        assert!((20..=23).contains(&rest[0]), "record type {}", rest[0]);
        assert_eq!(rest[1], 3, "record version");
        assert!(len <= 16384 + 256, "a record of {len} bytes");
        assert!(rest.len() >= 5 + len, "a cut record in the server's output");
        out.push((rest[0], &rest[5..5 + len]));
        rest = &rest[5 + len..];
    }
    out
}

/// Input: `[mode, n, len_1 .. len_n, stream ...]`. Mode bits 0-1 pick the
/// server configuration; with bit 7 set, after the stream, 4 KiB chunks of
/// it are offered again until 80 KiB were (to reach the size bound). The
/// stream is offered in chunks of `len_i + 1` bytes, then the rest.
///
/// # Panics
///
/// When an invariant does not hold.
pub fn tls_handshake(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let n = usize::from(input.u8());
    let splits = input.bytes(n);
    let stream = input.rest();
    if stream.is_empty() {
        return;
    }
    let config = configs()[usize::from(mode & 3)].clone();
    let mut session = Session::new(config, Instant::now()).expect("a server session");

    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    for s in splits.iter().map(|&s| usize::from(s) + 1) {
        if at == stream.len() {
            break;
        }
        let end = (at + s).min(stream.len());
        chunks.push(&stream[at..end]);
        at = end;
    }
    if at < stream.len() {
        chunks.push(&stream[at..]);
    }
    if mode & 0x80 != 0 {
        let filler = &stream[..stream.len().min(4096)];
        let mut offered = stream.len();
        while offered < 80 * 1024 {
            chunks.push(filler);
            offered += filler.len();
        }
    }

    let mut tx = Vec::new();
    let mut offered = 0;
    let mut failed = None;
    for (i, chunk) in chunks.iter().enumerate() {
        offered += chunk.len();
        let progress = session.handshake(chunk, &mut tx);
        assert!(
            session.held_bytes() <= MAX_HANDSHAKE_BYTES,
            "{} held",
            session.held_bytes()
        );
        if let Some(result) = failed {
            assert!(
                matches!(progress, Progress::Pending),
                "after {result:?}: {progress:?}"
            );
            continue;
        }
        match progress {
            Progress::Pending => assert!(session.handshaking()),
            Progress::Done(info) => {
                panic!("{} fuzzed bytes established a session: {info:?}", offered)
            }
            Progress::Failed(f) => {
                assert!(!session.handshaking() && !session.established());
                if i == 0 && chunk[0] != HANDSHAKE_RECORD {
                    assert_eq!(f.result, HandshakeResult::NotTls, "{f:?}");
                    assert!(
                        f.error.contains(&format!("0x{:02x}", chunk[0])),
                        "{}",
                        f.error
                    );
                }
                if f.result == HandshakeResult::NotTls {
                    assert!(i == 0 && chunk[0] != HANDSHAKE_RECORD);
                }
                if f.result == HandshakeResult::TooLarge {
                    assert!(
                        offered > MAX_HANDSHAKE_BYTES,
                        "too_large after {offered} bytes"
                    );
                }
                assert!(!f.result.ok());
                if let Some(a) = f.alert_sent {
                    assert_ne!(alert_name(a), "unknown_alert", "alert {a} sent: {f:?}");
                }
                failed = Some(f.result);
            }
        }
        // Once failed, nothing more goes out.
        if failed.is_some() {
            let sent = tx.len();
            assert!(matches!(
                session.handshake(chunk, &mut tx),
                Progress::Pending
            ));
            assert_eq!(tx.len(), sent, "written after the handshake failed");
        }
    }
    let out = records(&tx);
    // A plaintext alert, when one is there, is two bytes.
    for (typ, body) in out {
        if typ == 21 && body.len() != 2 {
            // Encrypted (TLS 1.3 after the ServerHello): an opaque body.
            assert!(body.len() >= 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{corpus, random_inputs};

    #[test]
    fn plaintext_fails_at_once_and_big_handshakes_fail_too_large() {
        tls_handshake(b"\x00\x00GET / HTTP/1.1\r\n\r\n");
        // A header announcing a 16 KiB handshake record, then zeros, offered
        // again and again.
        let mut input = vec![0x80, 0, 22, 3, 1, 0x40, 0];
        input.extend_from_slice(&[0; 1000]);
        tls_handshake(&input);
    }

    #[test]
    fn regression_a_bad_record_behind_the_client_hello() {
        // The fuzzer's crash: the `hello-then-junk` seed, a ClientHello and
        // then a handshake record rustls cannot read (it failed on it a
        // second time while its alert was drained).
        let seed = corpus("tls_handshake");
        let hello = &seed
            .iter()
            .find(|s| s.ends_with(b"hello"))
            .expect("the seed")[..];
        tls_handshake(hello);
        for mode in 1..4 {
            let mut other = hello.to_vec();
            other[0] = mode;
            tls_handshake(&other);
        }
    }

    #[test]
    fn harness_on_fixed_corpus_and_random_inputs() {
        tls_handshake(&[]);
        for input in corpus("tls_handshake") {
            tls_handshake(&input);
        }
        for mut input in random_inputs(41, 300, 300) {
            // A handshake record's header most of the time.
            if input.len() > 10 {
                input[1] %= 4;
                let at = 2 + usize::from(input[1]);
                input[at..at + 3].copy_from_slice(&[22, 3, 1]);
            }
            tls_handshake(&input);
        }
    }
}
