//! TLS through the real `ringport` binary with real clients: `openssl
//! s_client` over TLS 1.3 and 1.2, with and without a client certificate;
//! Python's `ssl` module; the identity model with the certificates of
//! `tests/common/pki.rs`, enforced and in audit mode; certificate rotation
//! on SIGHUP; `ringport check-config` on `tls` listeners; and the README's
//! openssl example, run as the README writes it. Each check reads what an
//! operator reads: the handshake log, `/metrics`, stderr, what the client
//! printed.
//!
//! Needs `openssl` and `python3` on PATH; without one, outside CI, a test
//! prints `skipped: install the Debian package ...` and passes (see
//! `ringport_tools::testing::outside_program`); under CI it fails.

mod common;
#[path = "tls_binary/harness.rs"]
mod harness;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::pki::{Ca, ClientSpec, Leaf, Pki};
use common::process::{start_ringport, Ringport, Stderr};
use common::ringport_bin;
use harness::*;

fn ca_arg(pki: &Pki) -> String {
    pki.ca.path.to_str().unwrap().to_owned()
}

#[test]
fn openssl_tls13_echo_is_logged_and_counted() {
    let Some(openssl) = openssl() else { return };
    let pki = Pki::new();
    let srv = serve(
        &pki.dir,
        &[
            "--tls-cert",
            pki.server.cert.to_str().unwrap(),
            "--tls-key",
            pki.server.key.to_str().unwrap(),
        ],
    );
    let ca = ca_arg(&pki);
    // OpenSSL's name of each suite, and rustls's (what the log says).
    let suites = [
        ("TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384"),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            "TLS13_CHACHA20_POLY1305_SHA256",
        ),
    ];
    for (i, (suite, logged)) in suites.into_iter().enumerate() {
        let mut c = SClient::start(
            &openssl,
            &pki.dir,
            srv.port,
            &["-CAfile", &ca, "-tls1_3", "-ciphersuites", suite],
        );
        assert!(c.echo("one line over TLS 1.3"), "no echo with {suite}");
        assert!(c.echo("and a second one"));
        let hs = srv.nth_handshake(i);
        assert_fields(
            &hs,
            &[
                ("listener", Some(&srv.listener)),
                ("result", Some("full")),
                ("version", Some("TLSv1.3")),
                ("cipher", Some(logged)),
                ("verdict", Some("allow")),
                ("client_sans", None),
                ("alert_sent", None),
                ("error", None),
            ],
        );
    }
    srv.expect_counts(&[("full", 2)], &[]);
}

#[test]
fn openssl_tls12_only_with_min_version_12() {
    let Some(openssl) = openssl() else { return };
    let pki = Pki::new();
    let files = [
        "--tls-cert",
        pki.server.cert.to_str().unwrap(),
        "--tls-key",
        pki.server.key.to_str().unwrap(),
    ];
    let ca = ca_arg(&pki);

    // The default is TLS 1.3 only: a TLS 1.2 client gets protocol_version.
    let strict = serve(&pki.dir, &files);
    let c = SClient::start(
        &openssl,
        &pki.dir,
        strict.port,
        &["-CAfile", &ca, "-tls1_2"],
    );
    let (status, err) = c.exited();
    assert!(!status.success(), "{err}");
    assert!(err.contains("alert protocol version"), "{err}");
    let hs = strict.wait_log("tls_handshake", 1);
    assert_fields(
        &hs[0],
        &[
            ("result", Some("protocol_error")),
            ("alert_sent", Some("protocol_version")),
            ("version", None),
        ],
    );
    assert!(hs[0]["error"].as_str().is_some(), "{}", hs[0]);
    strict.expect_counts(&[("protocol_error", 1)], &[]);

    // With --tls-min-version 1.2 it is served.
    let mut args = files.to_vec();
    args.extend(["--tls-min-version", "1.2"]);
    let relaxed = serve(&pki.dir, &args);
    let mut c = SClient::start(
        &openssl,
        &pki.dir,
        relaxed.port,
        &["-CAfile", &ca, "-tls1_2"],
    );
    assert!(c.echo("a line over TLS 1.2"));
    let hs = relaxed.wait_log("tls_handshake", 1);
    assert_fields(
        &hs[0],
        &[
            ("result", Some("full")),
            ("version", Some("TLSv1.2")),
            // The test CA's keys are ECDSA P-256; OpenSSL prefers AES-256-GCM.
            ("cipher", Some("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")),
            ("alert_sent", None),
        ],
    );
    // And TLS 1.3 still is.
    let mut c13 = SClient::start(
        &openssl,
        &pki.dir,
        relaxed.port,
        &["-CAfile", &ca, "-tls1_3"],
    );
    assert!(c13.echo("and one over TLS 1.3"));
    assert_fields(
        &relaxed.nth_handshake(1),
        &[("result", Some("full")), ("version", Some("TLSv1.3"))],
    );
    relaxed.expect_counts(&[("full", 2)], &[]);
    drop(c);
}

#[test]
fn openssl_mutual_tls_with_and_without_a_client_certificate() {
    let Some(openssl) = openssl() else { return };
    let pki = Pki::new();
    let sensor = pki.client(
        "sensor",
        &ClientSpec {
            cn: "sensor-7",
            uris: &["spiffe://prod.example/sensor/7"],
            ..ClientSpec::default()
        },
    );
    let srv = serve(
        &pki.dir,
        &[
            "--tls-cert",
            pki.server.cert.to_str().unwrap(),
            "--tls-key",
            pki.server.key.to_str().unwrap(),
            "--tls-client-ca",
            pki.ca.path.to_str().unwrap(),
            "--tls-min-version",
            "1.2",
        ],
    );
    let ca = ca_arg(&pki);
    let (cert, key) = (sensor.cert.to_str().unwrap(), sensor.key.to_str().unwrap());
    let sensor_sha = file_fingerprint(&openssl, &sensor.cert);
    let mut logged = 0;
    for version in ["-tls1_3", "-tls1_2"] {
        // With its certificate: served.
        let mut c = SClient::start(
            &openssl,
            &pki.dir,
            srv.port,
            &["-CAfile", &ca, version, "-cert", cert, "-key", key],
        );
        assert!(c.echo("a sensor reading"), "{version}");
        let hs = srv.nth_handshake(logged);
        logged += 1;
        assert_fields(
            &hs,
            &[
                ("result", Some("full")),
                (
                    "version",
                    Some(if version == "-tls1_3" {
                        "TLSv1.3"
                    } else {
                        "TLSv1.2"
                    }),
                ),
                ("client_subject", Some("CN=sensor-7")),
                ("client_sans", Some("spiffe://prod.example/sensor/7")),
                ("client_sha256", Some(&sensor_sha)),
                ("verdict", Some("allow")),
                ("alert_sent", None),
            ],
        );
        drop(c);

        // Without: refused before the plugin sees a byte.
        let mut c = SClient::start(&openssl, &pki.dir, srv.port, &["-CAfile", &ca, version]);
        assert!(!c.echo("no certificate"), "served without a certificate");
        let (status, err) = c.exited();
        assert!(!status.success(), "{err}");
        let hs = srv.nth_handshake(logged);
        logged += 1;
        // rustls sends certificate_required (116) over TLS 1.2 as well;
        // OpenSSL names alert 116 `tlsv13 alert certificate required`.
        assert!(err.contains("alert certificate required"), "{err}");
        assert_fields(
            &hs,
            &[
                ("result", Some("no_certificate")),
                ("alert_sent", Some("certificate_required")),
                ("verdict", Some("deny")),
                ("reason", Some("no_certificate")),
                ("client_sans", None),
                ("error", Some("peer sent no certificates")),
            ],
        );
    }
    srv.expect_counts(
        &[("full", 2), ("no_certificate", 2)],
        &[("deny", "no_certificate", 2)],
    );
}

/// OpenSSL's interactive commands against the engine's record layer: `K`
/// (a key update asking for one back, which the server sends), `k` (one not
/// asking), `Q` (close_notify: a clean close), and over TLS 1.2 `R` (a
/// renegotiation, refused with no_renegotiation).
#[test]
fn openssl_key_updates_close_notify_and_no_renegotiation() {
    let Some(openssl) = openssl() else { return };
    let pki = Pki::new();
    let srv = serve(
        &pki.dir,
        &[
            "--tls-cert",
            pki.server.cert.to_str().unwrap(),
            "--tls-key",
            pki.server.key.to_str().unwrap(),
            "--tls-min-version",
            "1.2",
        ],
    );
    let ca = ca_arg(&pki);
    // -msg prints every TLS message, the server's KeyUpdate among them.
    let mut c = SClient::interactive(&openssl, &pki.dir, srv.port, &["-CAfile", &ca, "-msg"]);
    assert!(c.echo("before any key update"));
    c.send("K");
    // The server answers a KeyUpdate that asks for one with its own.
    c.wait_stdout("the server's KeyUpdate", |l| {
        l == "<<< TLS 1.3, Handshake [length 0005], KeyUpdate"
    });
    assert!(c.echo("after a key update both ways"));
    c.send("k");
    // s_client takes a command with whatever else it read at once: wait
    // until the KeyUpdate is out before the next line goes in.
    c.wait_stdout("the client's KeyUpdate", |l| {
        l == ">>> TLS 1.3, Handshake [length 0005], KeyUpdate"
    });
    assert!(c.echo("after the client's key update"));
    c.send("Q");
    let (status, err) = c.exited();
    assert!(status.success(), "{err}");
    let close = &srv.wait_log("close", 1)[0];
    assert_fields(close, &[("close_reason", Some("peer_closed"))]);

    let mut c = SClient::interactive(&openssl, &pki.dir, srv.port, &["-CAfile", &ca, "-tls1_2"]);
    assert!(c.echo("over TLS 1.2"));
    c.send("R");
    c.wait_stderr("the refusal", |l| l.contains("alert no renegotiation"));
    let close = &srv.wait_log("close", 2)[1];
    assert_fields(close, &[("close_reason", Some("tls_error"))]);
    srv.expect_counts(&[("full", 2)], &[]);
}

#[test]
fn python_ssl_client_served_and_a_refused_identity_gets_access_denied() {
    let Some(python) = python3() else { return };
    let Some(openssl) = openssl() else { return };
    let pki = Pki::new();
    let good = pki.client(
        "sensor",
        &ClientSpec {
            cn: "sensor-7",
            uris: &["spiffe://prod.example/sensor/7"],
            ..ClientSpec::default()
        },
    );
    let refused = pki.client(
        "gateway",
        &ClientSpec {
            cn: "gateway-1",
            uris: &["spiffe://prod.example/gateway/1"],
            ..ClientSpec::default()
        },
    );
    let srv = serve(
        &pki.dir,
        &[
            "--tls-cert",
            pki.server.cert.to_str().unwrap(),
            "--tls-key",
            pki.server.key.to_str().unwrap(),
            "--tls-client-ca",
            pki.ca.path.to_str().unwrap(),
            "--tls-allow-identity",
            "spiffe://prod.example/sensor/*",
        ],
    );
    let runs = run_python(vec![
        python_client(&python, srv.port, &pki.ca.path, Some(&good)),
        python_client(&python, srv.port, &pki.ca.path, Some(&refused)),
    ]);
    let server_sha = file_fingerprint(&openssl, &pki.server.cert).replace(':', "");
    assert!(runs[0].ok, "{}", runs[0].out);
    assert_eq!(runs[0].said["version"], "TLSv1.3");
    assert_eq!(runs[0].said["server_sha256"], server_sha);
    assert_fields(
        &srv.handshake_of(runs[0].local_port),
        &[
            ("result", Some("full")),
            ("client_sans", Some("spiffe://prod.example/sensor/7")),
            ("verdict", Some("allow")),
        ],
    );

    assert!(!runs[1].ok, "{}", runs[1].out);
    let err = &runs[1].said["error"];
    assert!(
        err.starts_with("SSLError") && err.contains("ALERT_ACCESS_DENIED"),
        "{}",
        runs[1].out
    );
    assert_fields(
        &srv.handshake_of(runs[1].local_port),
        &[
            ("result", Some("identity_not_allowed")),
            ("version", Some("TLSv1.3")),
            ("client_subject", Some("CN=gateway-1")),
            ("client_sans", Some("spiffe://prod.example/gateway/1")),
            ("verdict", Some("deny")),
            ("reason", Some("identity_not_allowed")),
            ("alert_sent", Some("access_denied")),
            (
                "error",
                Some(
                    "no identity of the client certificate is allowed \
                     (allowed: spiffe://prod.example/sensor/*)",
                ),
            ),
        ],
    );
    srv.expect_counts(
        &[("full", 1), ("identity_not_allowed", 1)],
        &[("deny", "identity_not_allowed", 1)],
    );
}

/// Python's bulk client: `N` pseudo-random bytes in writes of 1 to 65536
/// bytes, each read back before the next, over TLS 1.3 or over TLS 1.2 with
/// ChaCha20-Poly1305. Prints `local_port`, `version`, `cipher` and `echoed
/// N equal True|False`.
const PY_BULK: &str = r#"
import random, socket, ssl, sys
port, ca, version, total = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
if version == "1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-CHACHA20-POLY1305")
raw = socket.create_connection(("127.0.0.1", port), timeout=20)
print("local_port", raw.getsockname()[1], flush=True)
s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
print("version", s.version())
print("cipher", s.cipher()[0])
data = random.Random(7).randbytes(total)
sizes = random.Random(8)
got = bytearray()
while len(got) < total:
    chunk = data[len(got):len(got) + sizes.randint(1, 65536)]
    s.sendall(chunk)
    want = len(got) + len(chunk)
    while len(got) < want:
        b = s.recv(want - len(got))
        if not b:
            break
        got.extend(b)
    if len(got) < want:
        break
print("echoed", len(got), "equal", bytes(got) == data, flush=True)
"#;

#[test]
fn python_bulk_echo_over_tls13_and_tls12_chacha20() {
    let Some(python) = python3() else { return };
    let pki = Pki::new();
    let srv = serve(
        &pki.dir,
        &[
            "--tls-cert",
            pki.server.cert.to_str().unwrap(),
            "--tls-key",
            pki.server.key.to_str().unwrap(),
            "--tls-min-version",
            "1.2",
        ],
    );
    const TOTAL: usize = 1 << 20;
    let runs: Vec<_> = ["1.3", "1.2"]
        .into_iter()
        .map(|version| {
            let mut cmd = Command::new(&python);
            cmd.args(["-c", PY_BULK, &srv.port.to_string()])
                .arg(&pki.ca.path)
                .args([version, &TOTAL.to_string()]);
            std::thread::spawn(move || run(cmd, b""))
        })
        .collect();
    let expect = [
        (
            "TLSv1.3",
            "TLS_AES_256_GCM_SHA384",
            "TLS13_AES_256_GCM_SHA384",
        ),
        (
            "TLSv1.2",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ),
    ];
    for (h, (version, python_cipher, logged)) in runs.into_iter().zip(expect) {
        let out = h.join().unwrap();
        let said: Vec<&str> = out.stdout.lines().collect();
        assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
        assert_eq!(
            said[1..],
            [
                format!("version {version}"),
                format!("cipher {python_cipher}"),
                format!("echoed {TOTAL} equal True"),
            ],
            "{}",
            out.stderr
        );
        let port: u16 = said[0]
            .strip_prefix("local_port ")
            .unwrap()
            .parse()
            .unwrap();
        assert_fields(
            &srv.handshake_of(port),
            &[
                ("result", Some("full")),
                ("version", Some(version)),
                ("cipher", Some(logged)),
            ],
        );
    }
    srv.expect_counts(&[("full", 2)], &[]);
}

/// The identity model end to end: which client certificates an allowlist
/// of a SPIFFE prefix, an exact SPIFFE ID and a DNS name lets in, and how
/// each refusal is told to the client, logged and counted; in audit mode
/// the same clients are all served and counted as `would_deny`.
fn identity_model(dry_run: bool) {
    let Some(python) = python3() else { return };
    let pki = Pki::new();
    let spec = |cn, uris, dns| ClientSpec {
        cn,
        uris,
        dns,
        valid: None,
    };
    let sensor = pki.client(
        "sensor7",
        &spec("sensor-7", &["spiffe://prod.example/sensor/7"], &[]),
    );
    let gateway = pki.client(
        "gateway1",
        &spec("gateway-1", &["spiffe://prod.example/gateway/1"], &[]),
    );
    let collector = pki.client(
        "collector",
        &spec("collector", &[], &["collector.prod.example"]),
    );
    // `gateway/1` is exact: `gateway/12` does not match it.
    let gateway12 = pki.client(
        "gateway12",
        &spec("gateway-12", &["spiffe://prod.example/gateway/12"], &[]),
    );
    let expired = pki.client(
        "expired",
        &ClientSpec {
            valid: Some((-10 * 86400, -86400)),
            ..spec("sensor-8", &["spiffe://prod.example/sensor/8"], &[])
        },
    );
    let other_ca = Ca::new(&pki.dir, "other");
    let stranger = other_ca.client(
        &pki.dir,
        "stranger",
        &spec("sensor-9", &["spiffe://prod.example/sensor/9"], &[]),
    );
    let mut flags = vec![
        "--tls-cert",
        pki.server.cert.to_str().unwrap(),
        "--tls-key",
        pki.server.key.to_str().unwrap(),
        "--tls-client-ca",
        pki.ca.path.to_str().unwrap(),
        "--tls-allow-identity",
        "spiffe://prod.example/sensor/*",
        "--tls-allow-identity",
        "spiffe://prod.example/gateway/1",
        "--tls-allow-identity",
        "dns:collector.prod.example",
    ];
    if dry_run {
        flags.push("--allow-dry-run");
    }
    let srv = serve(&pki.dir, &flags);
    // (client, SANs, refusal: (result, alert, python's words))
    type Refusal = (&'static str, &'static str, &'static str);
    let cases: [(Option<&Leaf>, Option<&str>, Option<Refusal>); 7] = [
        (Some(&sensor), Some("spiffe://prod.example/sensor/7"), None),
        (
            Some(&gateway),
            Some("spiffe://prod.example/gateway/1"),
            None,
        ),
        (Some(&collector), Some("dns:collector.prod.example"), None),
        (
            Some(&gateway12),
            Some("spiffe://prod.example/gateway/12"),
            Some((
                "identity_not_allowed",
                "access_denied",
                "TLSV1_ALERT_ACCESS_DENIED",
            )),
        ),
        (
            Some(&expired),
            Some("spiffe://prod.example/sensor/8"),
            Some((
                "cert_expired",
                "certificate_expired",
                "SSLV3_ALERT_CERTIFICATE_EXPIRED",
            )),
        ),
        (
            Some(&stranger),
            Some("spiffe://prod.example/sensor/9"),
            Some(("unknown_ca", "unknown_ca", "TLSV1_ALERT_UNKNOWN_CA")),
        ),
        (
            None,
            None,
            Some((
                "no_certificate",
                "certificate_required",
                "TLSV13_ALERT_CERTIFICATE_REQUIRED",
            )),
        ),
    ];
    let runs = run_python(
        cases
            .iter()
            .map(|(leaf, _, _)| python_client(&python, srv.port, &pki.ca.path, *leaf))
            .collect(),
    );
    for ((leaf, sans, refusal), run) in cases.iter().zip(&runs) {
        let hs = srv.handshake_of(run.local_port);
        let who = leaf.map_or("no certificate".to_owned(), |l| {
            l.cert.display().to_string()
        });
        match refusal {
            None => {
                assert!(run.ok, "{who}: {}", run.out);
                assert_fields(
                    &hs,
                    &[
                        ("result", Some("full")),
                        ("client_sans", *sans),
                        ("verdict", Some("allow")),
                        ("reason", None),
                        ("alert_sent", None),
                    ],
                );
            }
            Some((result, _, _)) if dry_run => {
                assert!(run.ok, "audit mode serves {who}: {}", run.out);
                assert_fields(
                    &hs,
                    &[
                        ("result", Some("full")),
                        ("verdict", Some("would_deny")),
                        ("reason", Some(result)),
                        ("alert_sent", None),
                    ],
                );
                // The certificate is logged when one was presented.
                if let Some(sans) = sans {
                    assert_fields(&hs, &[("client_sans", Some(sans))]);
                }
            }
            Some((result, alert, python_says)) => {
                assert!(!run.ok, "{who} was served: {}", run.out);
                assert!(
                    run.said
                        .get("error")
                        .is_some_and(|e| e.contains(python_says)),
                    "{who}: expected {python_says}:\n{}",
                    run.out
                );
                assert_fields(
                    &hs,
                    &[
                        ("result", Some(result)),
                        ("verdict", Some("deny")),
                        ("reason", Some(result)),
                        ("alert_sent", Some(alert)),
                        // Whose certificate it was, when one was presented.
                        ("client_sans", *sans),
                    ],
                );
            }
        }
    }
    let refused = [
        "identity_not_allowed",
        "cert_expired",
        "unknown_ca",
        "no_certificate",
    ];
    if dry_run {
        let would: Vec<(&str, &str, u64)> = refused.iter().map(|r| ("would_deny", *r, 1)).collect();
        srv.expect_counts(&[("full", 7)], &would);
    } else {
        let denied: Vec<(&str, &str, u64)> = refused.iter().map(|r| ("deny", *r, 1)).collect();
        let results: Vec<(&str, u64)> = refused.iter().map(|r| (*r, 1)).collect();
        srv.expect_counts(&[&[("full", 3)], &results[..]].concat(), &denied);
    }
}

#[test]
fn identity_allowlist_with_real_certificates() {
    identity_model(false);
}

#[test]
fn audit_mode_serves_refused_identities_as_would_deny() {
    identity_model(true);
}

/// The certificate a new connection gets, by its fingerprint.
fn served_fingerprint(openssl: &Path, port: u16, ca: &Path) -> String {
    let mut cmd = Command::new(openssl);
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-CAfile",
    ])
    .arg(ca);
    let out = run(cmd, b"");
    assert!(
        out.stdout.contains("Verify return code: 0 (ok)"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let begin = out.stdout.find("-----BEGIN CERTIFICATE-----").unwrap();
    let end = out.stdout.find("-----END CERTIFICATE-----").unwrap();
    fingerprint(openssl, &out.stdout[begin..end + 25])
}

/// Writes `from`'s certificate and key over `to`'s files.
fn install(from: &Leaf, to: &Leaf) {
    for (f, t) in [(&from.cert, &to.cert), (&from.key, &to.key)] {
        let tmp = t.with_extension("new");
        std::fs::copy(f, &tmp).unwrap();
        std::fs::rename(&tmp, t).unwrap();
    }
}

#[test]
fn sighup_rotates_the_certificate_and_a_bad_one_keeps_the_old() {
    let Some(openssl) = openssl() else { return };
    let pki = Pki::new();
    // The files ringport reads; the first set is the PKI's server leaf.
    let live = Leaf {
        cert: pki.dir.join("live.pem"),
        key: pki.dir.join("live-key.pem"),
    };
    install(&pki.server, &live);
    let srv = serve(
        &pki.dir,
        &[
            "--tls-cert",
            live.cert.to_str().unwrap(),
            "--tls-key",
            live.key.to_str().unwrap(),
        ],
    );
    let ca = ca_arg(&pki);
    let old_sha = file_fingerprint(&openssl, &pki.server.cert);
    assert_eq!(
        served_fingerprint(&openssl, srv.port, &pki.ca.path),
        old_sha
    );
    let mut held = SClient::start(&openssl, &pki.dir, srv.port, &["-CAfile", &ca]);
    assert!(held.echo("before the reload"));

    // A new certificate: new handshakes get it, the open connection goes on.
    let next = pki.ca.server(&pki.dir, "next", 90);
    let new_sha = file_fingerprint(&openssl, &next.cert);
    assert_ne!(new_sha, old_sha);
    install(&next, &live);
    srv.signal(libc::SIGHUP);
    let line = srv.wait_stderr("the reload", |l| l.contains("SIGHUP"));
    assert_eq!(
        line,
        format!(
            "ringport: SIGHUP: {}: new handshakes use the certificate CN=ringport test server \
             (SHA-256 {}, expires {})",
            srv.listener,
            file_fingerprint(&openssl, &next.cert),
            not_after(&openssl, &next.cert)
        )
    );
    let reload = &srv.wait_log("tls_reload", 1)[0];
    assert_fields(
        reload,
        &[
            ("listener", Some(&srv.listener)),
            ("ok", Some("true")),
            ("sha256", Some(&new_sha)),
            ("subject", Some("CN=ringport test server")),
        ],
    );
    assert!(held.echo("after the reload"));
    // /status and /metrics show the new certificate: 90 days left, not 365.
    let tls = &srv.status()["tls"];
    assert_eq!(tls["sha256"], new_sha.as_str(), "{tls}");
    assert_eq!(tls["certificate"], "CN=ringport test server", "{tls}");
    let left = tls["expires_in_s"].as_i64().unwrap();
    assert!((90 * 86400 - 300..=90 * 86400).contains(&left), "{tls}");
    let series = format!(
        "ringport_tls_certificate_expiry_seconds{{listener=\"{}\"}} ",
        srv.listener
    );
    let m = srv.metrics();
    let gauge: i64 = m
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or_else(|| panic!("no {series}in\n{m}"));
    assert!((90 * 86400 - 300..=90 * 86400).contains(&gauge), "{gauge}");
    assert_eq!(
        served_fingerprint(&openssl, srv.port, &pki.ca.path),
        new_sha
    );

    // A key that is not the certificate's: refused, the current set stays.
    let third = pki.ca.server(&pki.dir, "third", 90);
    std::fs::copy(&third.cert, &live.cert).unwrap();
    srv.signal(libc::SIGHUP);
    let mut refusals = Vec::new();
    let line = srv.wait_stderr("the refused reload", |l| l.contains("SIGHUP"));
    refusals.push(line.clone());
    let expect = format!(
        "ringport: SIGHUP: {}: keeping the old certificate: the key {} does not match the \
         certificate {}",
        srv.listener,
        live.key.display(),
        live.cert.display()
    );
    assert!(line.starts_with(&expect), "{line}\nexpected: {expect} ...");
    // Then a key file with no key in it.
    install(&next, &live);
    std::fs::write(&live.key, "-----BEGIN PRIVATE KEY-----\nnot a key\n").unwrap();
    srv.signal(libc::SIGHUP);
    let line = srv.wait_stderr("the second refused reload", |l| l.contains("SIGHUP"));
    refusals.push(line.clone());
    let expect = format!(
        "ringport: SIGHUP: {}: keeping the old certificate: key {}: no private key in it",
        srv.listener,
        live.key.display()
    );
    assert!(line.starts_with(&expect), "{line}\nexpected: {expect} ...");
    // The log says the same as stderr.
    let reloads = srv.wait_log("tls_reload", 3);
    for (r, line) in reloads[1..].iter().zip(&refusals) {
        let (_, why) = line.split_once("keeping the old certificate: ").unwrap();
        assert_fields(
            r,
            &[
                ("ok", Some("false")),
                ("sha256", None),
                ("error", Some(why)),
            ],
        );
    }
    assert_eq!(
        served_fingerprint(&openssl, srv.port, &pki.ca.path),
        new_sha
    );
    assert!(held.echo("after two refused reloads"));
    srv.expect_counts(&[("full", 4)], &[]);
}

/// Runs `ringport check-config` on `toml` written to `dir`.
fn check_config(dir: &Path, toml: &str) -> Output {
    let path = dir.join(format!("ringport-{}.toml", rand::random::<u32>()));
    std::fs::write(&path, toml).unwrap();
    let mut cmd = Command::new(ringport_bin());
    cmd.arg("check-config").arg(&path);
    run(cmd, b"")
}

#[test]
fn check_config_shows_tls_listeners_and_names_what_is_wrong() {
    let Some(openssl) = openssl() else { return };
    let pki = Pki::new();
    // Whole days are counted down: an hour short of ten days is 9 day(s).
    let soon = pki
        .ca
        .server_valid(&pki.dir, "soon", (-3600, 10 * 86400 - 3600));
    let expired = pki
        .ca
        .server_valid(&pki.dir, "expired", (-30 * 86400, -2 * 86400 - 3600));
    let listener = "echo@tls:127.0.0.1:9443";
    let config = |cert: &Path, key: &Path| {
        format!(
            "shards = 1\nlisten = [\"{listener}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             tls_client_ca = \"{}\"\ntls_allow_identity = [\"spiffe://prod.example/sensor/*\", \
             \"dns:gw.prod.example\"]\n",
            cert.display(),
            key.display(),
            pki.ca.path.display()
        )
    };
    let cert_line = |cert: &Path| {
        format!(
            "{listener}: TLS 1.3+; certificate CN=ringport test server (dns:localhost, ip:127.0.0.1; 2 in \
             chain; SHA-256 {}) expires {}; client certificates required (1 CA(s) in {}), \
             identities spiffe://prod.example/sensor/*, dns:gw.prod.example",
            file_fingerprint(&openssl, cert),
            not_after(&openssl, cert),
            pki.ca.path.display()
        )
    };

    let out = check_config(&pki.dir, &config(&pki.server.cert, &pki.server.key));
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.contains(&cert_line(&pki.server.cert).as_str()),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("warning"), "{}", out.stdout);

    // Under 30 days left: a warning with the file and what to do.
    let out = check_config(&pki.dir, &config(&soon.cert, &soon.key));
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.contains(&cert_line(&soon.cert).as_str()),
        "{}",
        out.stdout
    );
    let warning = format!(
        "warning: {listener}: the certificate {} expires in 9 day(s) ({}): renew it and send SIGHUP",
        soon.cert.display(),
        not_after(&openssl, &soon.cert)
    );
    assert!(lines.contains(&warning.as_str()), "{}", out.stdout);

    let out = check_config(&pki.dir, &config(&expired.cert, &expired.key));
    assert!(out.status.success(), "{}", out.stderr);
    let warning = format!(
        "warning: {listener}: the certificate {} expired 2 day(s) ago ({})",
        expired.cert.display(),
        not_after(&openssl, &expired.cert)
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.contains(&warning.as_str()), "{}", out.stdout);

    // A key that is not the certificate's: an error naming both files.
    let out = check_config(&pki.dir, &config(&pki.server.cert, &soon.key));
    assert!(!out.status.success(), "{}", out.stdout);
    let expect = format!(
        "ringport: error: listener `{listener}`: the key {} does not match the certificate {}",
        soon.key.display(),
        pki.server.cert.display()
    );
    assert!(out.stderr.starts_with(&expect), "{}", out.stderr);

    // TLS keys on a listener that is not `tls`: the error says how to fix it.
    let toml = format!(
        "shards = 1\n[[listener]]\nspec = \"echo@tcp:127.0.0.1:9000\"\ntls_cert = \"{}\"\n",
        pki.server.cert.display()
    );
    let out = check_config(&pki.dir, &toml);
    assert!(!out.status.success(), "{}", out.stdout);
    assert_eq!(
        out.stderr,
        "ringport: error: listener `echo@tcp:127.0.0.1:9000` sets tls_cert but is not a `tls` \
         listener: write its transport as `tls` (e.g. `echo@tls:127.0.0.1:9000`)\n"
    );
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "ringport-{what}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed when the guard goes.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines of the first ```sh block after the heading `heading` in the
/// README.
fn readme_block(readme: &str, heading: &str) -> Vec<String> {
    let at = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no `{heading}` in README.md"));
    let rest = &readme[at..];
    let start = rest.find("\n```sh\n").expect("a ```sh block") + 7;
    let end = start + rest[start..].find("\n```").expect("the block's end");
    rest[start..end].lines().map(str::to_owned).collect()
}

/// The commands of a README block: continuation lines joined, comments
/// dropped, split into words the way the shell does for these commands
/// (single quotes only).
fn commands(block: &[String]) -> Vec<Vec<String>> {
    let mut joined = Vec::new();
    let mut cur = String::new();
    for l in block {
        match l.trim_end().strip_suffix('\\') {
            Some(part) => cur.push_str(part),
            None => {
                cur.push_str(l);
                joined.push(std::mem::take(&mut cur));
            }
        }
    }
    joined
        .iter()
        .map(|line| {
            let mut words = Vec::new();
            let mut word: Option<String> = None;
            let mut quoted = false;
            for ch in line.chars() {
                match ch {
                    '\'' => {
                        quoted = !quoted;
                        word.get_or_insert_with(String::new);
                    }
                    c if c.is_whitespace() && !quoted => words.extend(word.take()),
                    '#' if !quoted && word.is_none() => break,
                    c => word.get_or_insert_with(String::new).push(c),
                }
            }
            assert!(!quoted, "unbalanced quote in {line}");
            words.extend(word);
            words
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// `words` with the README's port 9443 replaced by `port`.
fn on_port(words: &[String], port: u16) -> Vec<String> {
    let out: Vec<String> = words
        .iter()
        .map(|w| w.replace("127.0.0.1:9443", &format!("127.0.0.1:{port}")))
        .collect();
    assert_ne!(out, words, "the README's command has no 127.0.0.1:9443");
    out
}

/// Runs a README block's `ringport serve` command and its `openssl
/// s_client` command from `dir` on a free port instead of 9443; checks that
/// a line comes back. Returns the server, still running, and its stderr.
fn run_readme_commands(
    openssl: &Path,
    dir: &Path,
    readme: &str,
    heading: &str,
) -> (Ringport, mpsc::Receiver<String>) {
    let cmds = commands(&readme_block(readme, heading));
    let [serve_cmd, client_cmd] = &cmds[..] else {
        panic!("{heading}: expected a serve and a client command: {cmds:?}");
    };
    assert_eq!(serve_cmd[..2], ["ringport", "serve"]);
    assert_eq!(client_cmd[..2], ["openssl", "s_client"]);
    let mut server = start_ringport(
        2,
        |cmd, port| {
            cmd.args(&on_port(serve_cmd, port)[1..]).current_dir(dir);
        },
        |l| l.starts_with("ringport ") && l.contains(" serving "),
        Stderr::Lines,
    );
    let (port, stderr) = (server.port, server.stderr.take().unwrap());
    {
        let mut client = Guard(
            Command::new(openssl)
                .args(&on_port(client_cmd, port)[1..])
                .current_dir(dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start openssl s_client"),
        );
        let echoed = lines_of(client.0.stdout.take().unwrap());
        let mut stdin = client.0.stdin.take().unwrap();
        stdin.write_all(b"reading 21.5\n").unwrap();
        assert_eq!(
            echoed.recv_timeout(TIMEOUT).as_deref(),
            Ok("reading 21.5"),
            "{heading}: no echo"
        );
        (server, stderr)
    }
}

#[test]
fn the_readme_openssl_example_works_as_written() {
    let Some(openssl) = openssl() else { return };
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let dir = TempDir::new("readme");
    let script = readme_block(&readme, "### Certificates with openssl").join("\n");
    let mut bash = Command::new("bash");
    bash.args(["-euo", "pipefail", "-c", &script])
        .current_dir(&dir.0);
    let out = run(bash, b"");
    assert!(
        out.status.success(),
        "the README's openssl commands failed:\n{}",
        out.stderr
    );
    for f in [
        "ca.pem",
        "server.pem",
        "server-key.pem",
        "sensor.pem",
        "sensor-key.pem",
    ] {
        assert!(dir.0.join(f).is_file(), "the README's commands made no {f}");
    }
    run_readme_commands(&openssl, &dir.0, &readme, "### TLS");
    // `--log -`: the handshake line on stderr says who the client was.
    let (_server, stderr) = run_readme_commands(
        &openssl,
        &dir.0,
        &readme,
        "### Mutual TLS with an identity allowlist",
    );
    let line = wait_line(&stderr, "a tls_handshake line on stderr", |l| {
        l.contains(r#""event":"tls_handshake""#)
    });
    assert_fields(
        &serde_json::from_str(&line).unwrap(),
        &[
            ("result", Some("full")),
            ("version", Some("TLSv1.3")),
            ("client_subject", Some("CN=sensor-7")),
            ("client_sans", Some("spiffe://prod.example/sensor/7")),
            ("verdict", Some("allow")),
        ],
    );
}
