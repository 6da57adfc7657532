//! The TOML config file (`tools/src/config.rs`): `FileConfig::parse`, then
//! `Settings::resolve` with no flags, as `ringport check-config FILE` and
//! `ringport serve --config FILE` do.
//!
//! Checked against what the README and `ringport.example.toml` document:
//! an error names a key (or a flag, a listener, a line); a config that
//! resolves has every value inside its documented range and every key given
//! in the file carried over unchanged (no flags are given, so nothing
//! overrides the file).
//!
//! Files are read by `resolve` (TLS certificates and keys). A fuzzed path
//! never reaches the file system as written: a path whose file name is one
//! of `fuzz/tls/`'s files is that file, any other path a file that does not
//! exist.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringport_engine::spec::ListenerSpec;
use ringport_tools::fuzzing::{FileConfig, ServeArgs, Settings};

/// Every key of the file (top level and `[[listener]]` tables).
const KEYS: &[&str] = &[
    "listen",
    "listener",
    "spec",
    "shards",
    "cpus",
    "backend",
    "mode",
    "allow_idle_shards",
    "stats_interval",
    "batch_delay_us",
    "max_frame",
    "ring_entries",
    "tcp_buf_size",
    "tcp_bufs",
    "udp_max_datagram",
    "max_datagram",
    "udp_bufs",
    "udp_send_slots",
    "udp_drop_counter",
    "udp_rcvbuf",
    "max_outbound",
    "max_outbound_per_shard",
    "max_outbound_total",
    "ipv6_source_prefix",
    "mesh_capacity",
    "mesh_wake",
    "allow",
    "allow_dry_run",
    "max_conns",
    "max_conns_per_source",
    "conn_rate",
    "conn_burst",
    "first_bytes_timeout",
    "idle_timeout",
    "half_closed_timeout",
    "log",
    "log_format",
    "admin",
    "admin_allow",
    "admin_tls_cert",
    "admin_tls_key",
    "admin_timeout",
    "admin_max_conns",
    "drain_timeout",
    "alert_factor",
    "alert_sustain",
    "alert_source_denials",
    "alert_source_window",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "tls_allow_identity",
    "tls_min_version",
    "tls_alpn",
    "tls_handshake_timeout",
    "tls_max_handshakes_per_source",
    "tls_max_handshakes",
    "tls_no_resumption",
];

/// The test certificate, key and CA in `fuzz/tls/`.
const TLS_FILES: &[&str] = &["cert.pem", "key.pem", "ca.pem"];

/// Where a fuzzed path points: a file of `fuzz/tls/` or nothing.
fn sandboxed(path: &Path) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tls");
    match path.file_name().and_then(|n| n.to_str()) {
        Some(name) if TLS_FILES.contains(&name) => dir.join(name),
        _ => dir.join("missing").join("nothing.pem"),
    }
}

fn sandbox(p: &mut Option<PathBuf>) {
    if let Some(path) = p {
        *path = sandboxed(path);
    }
}

/// Every path of `f` through [`sandboxed`].
fn sandbox_paths(f: &mut FileConfig) {
    sandbox(&mut f.tls_cert);
    sandbox(&mut f.tls_key);
    sandbox(&mut f.tls_client_ca);
    sandbox(&mut f.admin_tls_cert);
    sandbox(&mut f.admin_tls_key);
    for t in f.listener.iter_mut().flatten() {
        sandbox(&mut t.tls_cert);
        sandbox(&mut t.tls_key);
        sandbox(&mut t.tls_client_ca);
    }
}

/// Whether an error message names something an operator can find: a key, a
/// flag, a listener or a line.
fn names_a_key(msg: &str) -> bool {
    msg.contains("line ")
        || msg.contains("--")
        || msg.contains("listener `")
        || KEYS.iter().any(|k| {
            msg.match_indices(k).any(|(at, _)| {
                // The key as a word, not inside a longer one.
                let before = msg[..at].chars().next_back();
                let after = msg[at + k.len()..].chars().next();
                let word =
                    |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                !word(before) && !word(after)
            })
        })
}

/// The default listeners (`tools/src/cli.rs`'s, as the README lists them).
fn default_listeners() -> Vec<ListenerSpec> {
    [
        "echo@tcp:127.0.0.1:7000-7063",
        "echo@udp:127.0.0.1:7000-7063",
        "sockperf@tcp:127.0.0.1:11111-11174",
        "sockperf@udp:127.0.0.1:11111-11174",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect()
}

/// The longest a setting in seconds may be (a year).
const MAX_SECS: Duration = Duration::from_secs(365 * 24 * 3600);

fn check_duration(name: &str, d: Option<Duration>) {
    if let Some(d) = d {
        assert!(d <= MAX_SECS, "{name} = {d:?}, more than a year");
    }
}

/// The documented ranges and the file's values carried over.
fn check_settings(s: &Settings, f: &FileConfig) {
    let e = &s.engine;
    assert!(e.validate().is_ok(), "{e:?}");
    assert!(e.tcp_bufs.is_power_of_two() && e.tcp_bufs <= 32768);
    assert!(e.udp_bufs.is_power_of_two() && e.udp_bufs <= 32768);
    assert!(e.tcp_buf_size >= 64);
    assert!((1..=65507).contains(&e.udp_max_datagram));
    assert!((8..=32768).contains(&e.ring_entries));
    assert!(e.mesh_capacity >= 1 && e.udp_send_slots >= 1);
    assert!(e.pause_outbound >= 1 && e.pause_outbound <= e.max_outbound);

    // Keys given in the file, unchanged (no flag overrides them).
    macro_rules! carried {
        ($($key:ident => $got:expr),* $(,)?) => {$(
            if let Some(v) = &f.$key {
                assert_eq!(&$got, v, concat!(stringify!($key), " carried over"));
            }
        )*};
    }
    carried!(
        ring_entries => e.ring_entries,
        tcp_buf_size => e.tcp_buf_size,
        tcp_bufs => e.tcp_bufs,
        udp_max_datagram => e.udp_max_datagram,
        udp_bufs => e.udp_bufs,
        udp_send_slots => e.udp_send_slots,
        udp_rcvbuf => e.udp_rcvbuf,
        max_outbound => e.max_outbound,
        mesh_capacity => e.mesh_capacity,
        batch_delay_us => e.batch_delay_us,
        tls_max_handshakes => e.tls_max_handshakes,
        max_frame => s.max_frame,
    );
    if let Some(n) = f.shards {
        assert_eq!(s.shards, Some(n));
    }
    if let Some(c) = &f.cpus {
        assert_eq!(s.cpus.as_ref(), Some(&c.0));
    }
    if let Some(m) = &f.mode {
        assert_eq!(s.mode, m.0);
    }

    // Listeners: `listen`, then the tables, or the defaults when neither.
    let mut listeners: Vec<ListenerSpec> = f.listen.iter().flatten().map(|p| p.0.clone()).collect();
    listeners.extend(f.listener.iter().flatten().map(|t| t.spec.0.clone()));
    if listeners.is_empty() {
        listeners = default_listeners();
    }
    assert_eq!(s.listeners, listeners);
    assert_eq!(s.operations.listeners.len(), s.listeners.len());
    for (spec, ops) in s.listeners.iter().zip(&s.operations.listeners) {
        let l = &ops.limits;
        if let Some(r) = l.conn_rate {
            assert!(r.per_sec >= 1 && r.burst >= 1, "{spec}: {r:?}");
        }
        if let Some(m) = l.max_datagram {
            assert!(m <= e.udp_max_datagram, "{spec}: max_datagram {m}");
        }
        check_duration("first_bytes_timeout", l.first_bytes_timeout);
        check_duration("idle_timeout", l.idle_timeout);
        check_duration("half_closed_timeout", l.half_closed_timeout);
        if let Some(a) = l.source_denial_alert {
            assert!(a.limit >= 1 && a.window > Duration::ZERO, "{spec}: {a:?}");
            check_duration("alert_source_window", Some(a.window));
        }
        // TLS exactly on `tls` listeners, within its ranges.
        assert_eq!(ops.tls.is_some(), spec.tls, "{spec}");
        if let Some(tls) = &ops.tls {
            let t = tls.settings();
            if let Some(d) = t.handshake_timeout {
                assert!(
                    d > Duration::ZERO && d <= Duration::from_secs(86400),
                    "{spec}: {d:?}"
                );
            }
            assert!(
                t.alpn.iter().all(|a| (1..=255).contains(&a.len())),
                "{spec}"
            );
            assert!(
                t.allow_identities.is_empty() || t.client_ca.is_some(),
                "{spec}"
            );
        }
    }

    check_duration("stats_interval", s.stats_interval);
    check_duration("drain_timeout", Some(s.drain_timeout));
    if let Some(a) = &s.alerts {
        assert!(a.factor.is_finite() && a.factor > 0.0, "{a:?}");
        check_duration("alert_sustain", Some(a.sustain));
    }
    if let Some(admin) = s.admin {
        if !admin.ip().is_loopback() {
            assert!(
                s.admin_allow != ringport_engine::policy::Allowlist::loopback(),
                "a non-loopback admin endpoint open to the default allowlist"
            );
        }
    }
    assert!(s.admin_tls.is_none() || s.admin.is_some());
}

/// Input: the config file's text (UTF-8, lossy).
///
/// Checks: parsing and resolving never panic; a parse error names its line;
/// a resolve error names a key, a flag, a listener or a line; a config that
/// resolves keeps its values inside the documented ranges and the file's
/// values unchanged.
///
/// # Panics
///
/// When a check fails.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut file = match FileConfig::parse(&text) {
        Ok(f) => f,
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(
                msg.contains("line "),
                "a parse error without its line: {msg}"
            );
            return;
        }
    };
    sandbox_paths(&mut file);
    // The same file again, to compare with what `resolve` makes of it.
    let mut given = FileConfig::parse(&text).expect("it parsed once");
    sandbox_paths(&mut given);
    match Settings::resolve(&ServeArgs::default(), Some(file)) {
        Ok(settings) => check_settings(&settings, &given),
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(names_a_key(&msg), "an error naming no key: {msg}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{corpus, random_inputs};

    #[test]
    fn the_example_file_resolves_within_its_ranges() {
        let text = include_str!("../../ringport.example.toml");
        config(text.as_bytes());
        let f = FileConfig::parse(text).unwrap();
        let s = Settings::resolve(
            &ServeArgs::default(),
            Some(FileConfig::parse(text).unwrap()),
        )
        .unwrap();
        check_settings(&s, &f);
        assert_eq!(s.listeners.len(), 3);
    }

    #[test]
    fn errors_name_keys() {
        assert!(names_a_key("conn_burst = 0 with conn_rate = 5"));
        assert!(names_a_key("TOML parse error at line 3, column 1"));
        assert!(!names_a_key("something went wrong"));
        assert!(!names_a_key("the ring_entries_x"));
    }

    #[test]
    fn tls_files_are_found_and_other_paths_are_not() {
        let cert = sandboxed(Path::new("/etc/ringport/cert.pem"));
        assert!(cert.is_file(), "{}", cert.display());
        assert!(!sandboxed(Path::new("/etc/passwd")).exists());
        config(
            b"listen = [\"echo@tls:127.0.0.1:9000\"]\ntls_cert = \"cert.pem\"\n\
              tls_key = \"key.pem\"\ntls_client_ca = \"ca.pem\"\n\
              tls_allow_identity = [\"dns:*.example\"]\n",
        );
    }

    #[test]
    fn regression_a_duration_too_long_for_a_duration() {
        // 1e20 seconds made Duration::from_secs_f64 panic in resolve.
        config(b"drain_timeout = 1e20\n");
        config(b"[[listener]]\nspec = \"echo@tcp:127.0.0.1:1\"\nidle_timeout = 1e300\n");
    }

    #[test]
    fn harness_on_fixed_corpus_and_random_inputs() {
        config(b"");
        config(b"shards = 2\nmax_frame = 100\n");
        config(b"nope = 1\n");
        config(b"conn_rate = 5\nconn_burst = 0\n");
        for input in corpus("config") {
            config(&input);
        }
        let lines: [&[u8]; 10] = [
            b"shards = 1\n",
            b"tcp_bufs = 3\n",
            b"listen = [\"echo@udp:127.0.0.1:9000\"]\n",
            b"max_datagram = 99999\n",
            b"idle_timeout = -1\n",
            b"[[listener]]\nspec = \"echo@tcp:127.0.0.1:1\"\n",
            b"conn_rate = 0\n",
            b"tls_cert = \"cert.pem\"\n",
            b"admin = \"10.0.0.1:1\"\n",
            b"alert_source_window = 0\n",
        ];
        for input in random_inputs(31, 300, 6) {
            let text: Vec<u8> = input
                .iter()
                .flat_map(|b| lines[usize::from(*b) % lines.len()].iter().copied())
                .collect();
            config(&text);
        }
    }
}
