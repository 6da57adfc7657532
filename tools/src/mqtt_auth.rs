//! The MQTT password file and crash-safe file writes.
//!
//! [`PasswordFile`] reads Mosquitto 2.0's `password_file`, the format
//! `mosquitto_passwd` writes, one user a line:
//!
//! ```text
//! USER:$7$ITERATIONS$SALT$HASH
//! ```
//!
//! where HASH is PBKDF2-HMAC-SHA512 of the password with SALT, ITERATIONS
//! times, 64 bytes, and SALT (12 random bytes) and HASH are standard base64
//! with padding. A file made by `mosquitto_passwd` works here unchanged and
//! a file made by [`add_user`] works with Mosquitto (the tests check both
//! when the Debian package `mosquitto` is installed). It implements the
//! broker's [`Authenticator`].
//!
//! [`write_atomically`] replaces a file so that a crash leaves either the
//! old contents or the new, never a mix: the password file and the MQTT
//! persistence snapshot are written with it.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::num::NonZeroU32;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::Context as _;
use aws_lc_rs::{constant_time, hmac, pbkdf2, rand};
use ringport_protocols::mqtt::auth::{AuthOutcome, AuthRequest, Authenticator};

/// The iteration count [`add_user`] uses unless told otherwise.
///
/// One verification at 20,000 iterations takes about 8 ms on one core of
/// the 2-CPU development VM this was chosen on (7.96 ms, the fastest of
/// `cargo test -p ringport-tools --release --lib -- --ignored --nocapture
/// measure_one_verification`; 12 to 20 ms while other builds shared the two
/// CPUs). The choice weighs two costs:
///
/// * offline guessing: a stolen file costs an attacker 20,000 HMAC-SHA512
///   pairs per guess, 198 times what Mosquitto's default of 101 costs, so
///   a rig that tries billions of Mosquitto-default guesses a second manages
///   tens of millions here. A generated password (what a device should
///   carry) is out of reach either way; the factor is for the weak ones
///   humans choose;
/// * the shard: verification runs on the shard thread that owns the
///   connection (the [`Authenticator`] is synchronous), and every other
///   connection of that shard waits while it runs. 8 ms bounds a shard at
///   about 125 first-time password CONNECTs a second, so a reconnect storm
///   of a few thousand devices spreads over seconds, not minutes, and
///   stalls each shard's traffic by 8 ms at a time, not more; a client that
///   reconnects with the same correct password is answered from the cache
///   (0.23 µs measured). OWASP's 210,000 iterations for PBKDF2-HMAC-SHA512
///   would hold a shard for about 84 ms per CONNECT, too long for a thread
///   that also moves every other client's messages.
///
/// Files with any iteration count from 1 to 10,000,000 are read.
pub const DEFAULT_ITERATIONS: u32 = 20_000;

/// The largest iteration count a password file may hold; above it a single
/// CONNECT would stall a shard for a minute or more.
pub const MAX_ITERATIONS: u32 = 10_000_000;

const SALT_LEN: usize = 12;
const HASH_LEN: usize = 64;
const PBKDF2: pbkdf2::Algorithm = pbkdf2::PBKDF2_HMAC_SHA512;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with `=` padding.
fn b64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; padding is optional, anything else is refused.
fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2 || trimmed.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in trimmed.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero, or two texts would decode to one value.
    (acc == 0).then_some(out)
}

/// One user's stored hash.
#[derive(Clone)]
struct Hash {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash {{ iterations: {}, .. }}", self.iterations)
    }
}

/// What is wrong with a line of a password file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LineProblem {
    /// No `:` between the username and the hash.
    NoColon,
    /// Nothing before the `:`.
    EmptyUser,
    /// A password in plain text.
    PlainText,
    /// Mosquitto 1.6's single salted SHA-512 (`$6$`), too fast to resist
    /// guessing.
    OldSha512,
    /// A hash type other than `$7$`.
    UnknownHash(String),
    /// The iteration count is not a number from 1 to [`MAX_ITERATIONS`].
    BadIterations,
    /// The salt is not base64, or empty.
    BadSalt,
    /// The hash is not base64 of 64 bytes.
    BadHash,
    /// The user appears on an earlier line too.
    Duplicate {
        /// The earlier line.
        first: usize,
    },
}

/// Why a password file was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum PasswordFileError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A line is malformed.
    Line {
        /// The file.
        path: PathBuf,
        /// The line, counted from 1.
        line: usize,
        /// What is wrong with it.
        problem: LineProblem,
    },
}

impl fmt::Display for PasswordFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordFileError::Read { path, source } => {
                write!(f, "cannot read password file {}: {source}", path.display())
            }
            PasswordFileError::Line {
                path,
                line,
                problem,
            } => {
                write!(f, "password file {} line {line}: ", path.display())?;
                let fix = "set the password again with `ringport mqtt passwd FILE USER` \
                           or `mosquitto_passwd FILE USER`";
                match problem {
                    LineProblem::NoColon => {
                        write!(f, "expected `USER:HASH`; the line has no `:`")
                    }
                    LineProblem::EmptyUser => write!(f, "the username before `:` is empty"),
                    LineProblem::PlainText => write!(
                        f,
                        "the password is in plain text; hash it with `mosquitto_passwd -U FILE`, \
                         or {fix}"
                    ),
                    LineProblem::OldSha512 => write!(
                        f,
                        "`$6$` (Mosquitto 1.6's single SHA-512) is too fast to resist guessing \
                         and is not accepted; {fix}"
                    ),
                    LineProblem::UnknownHash(t) => write!(
                        f,
                        "unknown hash type `{t}` (only `$7$`, PBKDF2-SHA512, is read); {fix}"
                    ),
                    LineProblem::BadIterations => write!(
                        f,
                        "the iteration count is not a number from 1 to {MAX_ITERATIONS}; {fix}"
                    ),
                    LineProblem::BadSalt => write!(f, "the salt is not base64; {fix}"),
                    LineProblem::BadHash => {
                        write!(f, "the hash is not base64 of {HASH_LEN} bytes; {fix}")
                    }
                    LineProblem::Duplicate { first } => write!(
                        f,
                        "the user already has a hash on line {first}; delete one of the two lines"
                    ),
                }
            }
        }
    }
}

impl std::error::Error for PasswordFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PasswordFileError::Read { source, .. } => Some(source),
            PasswordFileError::Line { .. } => None,
        }
    }
}

fn parse_hash(field: &str) -> Result<Hash, LineProblem> {
    let Some(rest) = field.strip_prefix('$') else {
        return Err(LineProblem::PlainText);
    };
    let mut parts = rest.split('$');
    match parts.next() {
        Some("7") => {}
        Some("6") => return Err(LineProblem::OldSha512),
        Some(other) => return Err(LineProblem::UnknownHash(format!("${other}$"))),
        None => return Err(LineProblem::PlainText),
    }
    let iterations = parts
        .next()
        .and_then(|t| t.parse::<u32>().ok())
        .filter(|&n| n <= MAX_ITERATIONS)
        .and_then(NonZeroU32::new)
        .ok_or(LineProblem::BadIterations)?;
    let salt = parts
        .next()
        .and_then(b64_decode)
        .filter(|s| !s.is_empty())
        .ok_or(LineProblem::BadSalt)?;
    let hash = parts
        .next()
        .and_then(b64_decode)
        .filter(|h| h.len() == HASH_LEN)
        .ok_or(LineProblem::BadHash)?;
    if parts.next().is_some() {
        return Err(LineProblem::BadHash);
    }
    Ok(Hash {
        iterations,
        salt,
        hash,
    })
}

/// The users of a password file and their hashes; an [`Authenticator`].
///
/// Verification runs PBKDF2 with the file's iteration count (see
/// [`DEFAULT_ITERATIONS`] for what that costs a shard) and compares in
/// constant time. A user who connected with a correct password is
/// remembered as an HMAC-SHA256 of the entry's salt and the password, under
/// a key drawn at random when the file is loaded: a reconnect with the same
/// password is checked against it in microseconds, and the password itself
/// is never stored. (Someone who can read this process's memory could guess
/// against the HMAC at HMAC speed; they could equally read passwords off the
/// wire as clients connect.) The cache holds at most one value per user of
/// the file, so it cannot grow beyond the file. An unknown user is verified
/// against a decoy at the file's most common iteration count, so it costs
/// as much as a wrong password and timing does not reveal who exists.
pub struct PasswordFile {
    users: HashMap<String, Hash>,
    allow_anonymous: bool,
    cache_key: hmac::Key,
    cache: Mutex<HashMap<String, hmac::Tag>>,
    /// Verified against for unknown users, so they cost a real verification.
    decoy: Hash,
}

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile")
            .field("users", &self.users.len())
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::fill(&mut b).expect("the system random number generator failed");
    b
}

impl PasswordFile {
    /// Reads a password file.
    ///
    /// Empty lines and lines starting with `#` are skipped; trailing spaces
    /// and CRs are ignored.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or a line is malformed: the error names the
    /// file, the line and the fix.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let text = fs::read_to_string(path).map_err(|source| PasswordFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, problem)| PasswordFileError::Line {
            path: path.to_owned(),
            line,
            problem,
        })
    }

    /// Parses the text of a password file; the error is the line (from 1)
    /// and what is wrong with it.
    fn parse(text: &str) -> Result<PasswordFile, (usize, LineProblem)> {
        let mut users = HashMap::new();
        let mut first_line = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim_end();
            if line.trim_start().is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line.split_once(':').ok_or((n, LineProblem::NoColon))?;
            if user.is_empty() {
                return Err((n, LineProblem::EmptyUser));
            }
            let hash = parse_hash(hash).map_err(|p| (n, p))?;
            if let Some(&first) = first_line.get(user) {
                return Err((n, LineProblem::Duplicate { first }));
            }
            first_line.insert(user.to_owned(), n);
            users.insert(user.to_owned(), hash);
        }
        // Unknown users are verified at the file's most common count, so
        // they take as long as a known user with a wrong password.
        let mut counts: HashMap<u32, usize> = HashMap::new();
        for hash in users.values() {
            *counts.entry(hash.iterations.get()).or_default() += 1;
        }
        let decoy_iterations = counts
            .into_iter()
            .max_by_key(|&(iterations, n)| (n, iterations))
            .map_or(DEFAULT_ITERATIONS, |(iterations, _)| iterations);
        let decoy_salt: [u8; SALT_LEN] = random_bytes();
        Ok(PasswordFile {
            users,
            allow_anonymous: false,
            cache_key: hmac::Key::new(hmac::HMAC_SHA256, &random_bytes::<32>()),
            cache: Mutex::new(HashMap::new()),
            decoy: Hash {
                iterations: NonZeroU32::new(decoy_iterations).expect("counts are non-zero"),
                salt: decoy_salt.to_vec(),
                hash: vec![0; HASH_LEN],
            },
        })
    }

    /// Whether clients without a username may connect (as anonymous
    /// clients, identity `""`), as Mosquitto's `allow_anonymous`; off by
    /// default.
    pub fn with_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = allow;
        self
    }

    /// How many users the file holds.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file holds no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    fn cache_tag(&self, hash: &Hash, password: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.cache_key);
        ctx.update(&hash.salt);
        ctx.update(password);
        ctx.sign()
    }

    /// Whether `password` is `user`'s password.
    ///
    /// Slow (one PBKDF2 at the file's iteration count) unless the user last
    /// connected with this same password.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let Some(hash) = self.users.get(user) else {
            // Same cost as a wrong password; the result is thrown away.
            let _ = pbkdf2::verify(
                PBKDF2,
                self.decoy.iterations,
                &self.decoy.salt,
                password,
                &self.decoy.hash,
            );
            return false;
        };
        let tag = self.cache_tag(hash, password);
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = cache.get(user) {
            if constant_time::verify_slices_are_equal(known.as_ref(), tag.as_ref()).is_ok() {
                return true;
            }
        }
        drop(cache);
        let ok = pbkdf2::verify(PBKDF2, hash.iterations, &hash.salt, password, &hash.hash).is_ok();
        if ok {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.insert(user.to_owned(), tag);
        }
        ok
    }
}

impl Authenticator for PasswordFile {
    /// A client without a username is allowed only
    /// [`with_anonymous`](PasswordFile::with_anonymous), and is otherwise not
    /// authorized; a username without a password, an unknown user or a wrong
    /// password are bad credentials. The identity is the username.
    fn authenticate(&self, req: &AuthRequest<'_>) -> AuthOutcome {
        match (req.username, req.password) {
            (None, _) if self.allow_anonymous => AuthOutcome::Allowed {
                identity: String::new(),
            },
            (None, _) => AuthOutcome::NotAuthorized,
            (Some(_), None) => AuthOutcome::BadCredentials,
            (Some(user), Some(password)) => {
                if self.verify(user, password) {
                    AuthOutcome::Allowed {
                        identity: user.to_owned(),
                    }
                } else {
                    AuthOutcome::BadCredentials
                }
            }
        }
    }
}

/// The `$7$ITERATIONS$SALT$HASH` field for `password`, with a fresh
/// random salt.
///
/// # Panics
///
/// If `iterations` is 0 or the system random number generator fails.
pub fn hash_password(password: &str, iterations: u32) -> String {
    let iterations = NonZeroU32::new(iterations).expect("iterations must be at least 1");
    let salt: [u8; SALT_LEN] = random_bytes();
    let mut hash = [0u8; HASH_LEN];
    pbkdf2::derive(PBKDF2, iterations, &salt, password.as_bytes(), &mut hash);
    format!(
        "$7${iterations}${}${}",
        b64_encode(&salt),
        b64_encode(&hash)
    )
}

/// Refuses usernames a password file cannot hold.
fn check_username(user: &str) -> io::Result<()> {
    let bad = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("username {user:?} {why}"),
        ))
    };
    if user.is_empty() {
        return bad("is empty; give a name");
    }
    if user.contains(':') {
        return bad("contains `:`, which separates the name from the hash; choose another name");
    }
    if user.chars().any(char::is_control) {
        return bad("contains a control character; choose another name");
    }
    if user.starts_with('#') {
        return bad("starts with `#`, which marks a comment line; choose another name");
    }
    if user.trim() != user {
        return bad("starts or ends with a space; remove it");
    }
    Ok(())
}

/// Sets `user`'s password in the password file at `path`, creating the file
/// if needed: the user's line is replaced in place, or appended; every
/// other line is kept as it was. The file is replaced atomically
/// ([`write_atomically`]); two writers updating the same file at once can
/// still lose one update (read, modify, replace), as with `mosquitto_passwd`.
///
/// # Errors
///
/// The username cannot be stored (empty, `:`, a control character, a
/// leading `#` or surrounding spaces), `iterations` is outside 1 to
/// [`MAX_ITERATIONS`], or reading or writing fails.
pub fn add_user(path: &Path, user: &str, password: &str, iterations: u32) -> io::Result<()> {
    check_username(user)?;
    if iterations == 0 || iterations > MAX_ITERATIONS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("iterations must be from 1 to {MAX_ITERATIONS}, not {iterations}"),
        ));
    }
    let old = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let new_line = format!("{user}:{}", hash_password(password, iterations));
    let mut out = String::with_capacity(old.len() + new_line.len() + 1);
    let mut replaced = false;
    for line in old.lines() {
        let is_user = line.split_once(':').is_some_and(|(u, _)| u == user);
        if is_user {
            if !replaced {
                out.push_str(&new_line);
                out.push('\n');
                replaced = true;
            }
            // A later duplicate of the same user is dropped.
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(&new_line);
        out.push('\n');
    }
    write_atomically(path, out.as_bytes())
}

/// `ringport mqtt passwd FILE USER`: sets USER's password in FILE (created
/// if missing) with `iterations` rounds ([`DEFAULT_ITERATIONS`] unless the
/// user chose otherwise). Reading the password (stdin or a prompt) and
/// printing the result are the caller's.
///
/// # Errors
///
/// As [`add_user`], with the file named.
pub fn passwd_command(
    file: &Path,
    user: &str,
    password: &str,
    iterations: u32,
) -> anyhow::Result<()> {
    if password.is_empty() {
        anyhow::bail!("refusing an empty password for {user:?}");
    }
    add_user(file, user, password, iterations)
        .with_context(|| format!("cannot set the password of {user:?} in {}", file.display()))
}

/// Replaces the file at `path` with `bytes` so that a crash at any moment
/// leaves either the old file or the new one: the bytes go to a new file in
/// the same directory, which is flushed to disk (`fsync`), renamed over
/// `path`, and the directory is flushed so the rename itself is durable.
///
/// The new file keeps the permissions of the file it replaces, or gets
/// `0600` (owner only) when there was none. A failure before the rename
/// removes the new file and leaves `path` untouched.
///
/// # Errors
///
/// Any I/O error on the way.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mode = match fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0o600,
        Err(e) => return Err(e),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` is filtered by the umask at creation; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "ringport-mqtt-auth-{name}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn req<'a>(user: Option<&'a str>, password: Option<&'a [u8]>) -> AuthRequest<'a> {
        AuthRequest {
            client_id: "c",
            username: user,
            password,
            tls_identities: &[],
        }
    }

    /// The mosquitto_passwd binary, or None (and a note) when it is not
    /// installed; under CI=true a missing binary fails the test.
    fn mosquitto_passwd() -> Option<&'static str> {
        let found = Command::new("mosquitto_passwd").arg("-h").output().is_ok();
        if found {
            return Some("mosquitto_passwd");
        }
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("mosquitto_passwd is missing: install the Debian package mosquitto");
        }
        println!("skipped: install the Debian package mosquitto");
        None
    }

    #[test]
    fn base64_round_trips_and_matches_known_values() {
        assert_eq!(b64_encode(b""), "");
        assert_eq!(b64_encode(b"f"), "Zg==");
        assert_eq!(b64_encode(b"fo"), "Zm8=");
        assert_eq!(b64_encode(b"foo"), "Zm9v");
        assert_eq!(b64_encode(&[0xfb, 0xff]), "+/8=");
        assert_eq!(b64_decode("Zg==").unwrap(), b"f");
        assert_eq!(b64_decode("Zm8").unwrap(), b"fo");
        assert_eq!(b64_decode("+/8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(b64_decode("Zh=="), None, "non-zero leftover bits");
        assert_eq!(b64_decode("Z"), None);
        assert_eq!(b64_decode("Zm9v!"), None);
        assert_eq!(b64_decode("Zg==="), None);
    }

    #[test]
    fn verifies_a_file_made_by_mosquitto_passwd() {
        let Some(bin) = mosquitto_passwd() else {
            return;
        };
        let dir = TempDir::new("mosq");
        let file = dir.0.join("passwd");
        let run = |args: &[&str]| {
            let status = Command::new(bin).args(args).status().unwrap();
            assert!(status.success(), "mosquitto_passwd {args:?} failed");
        };
        run(&["-c", "-b", file.to_str().unwrap(), "alice", "s3cret"]);
        run(&["-b", file.to_str().unwrap(), "bob", "pass word: é"]);
        let pw = PasswordFile::load(&file).unwrap();
        assert_eq!(pw.len(), 2);
        assert!(pw.verify("alice", b"s3cret"));
        assert!(!pw.verify("alice", b"s3cret "));
        assert!(pw.verify("bob", "pass word: é".as_bytes()));
        assert!(!pw.verify("bob", b"s3cret"));
        assert_eq!(
            pw.authenticate(&req(Some("alice"), Some(b"s3cret"))),
            AuthOutcome::Allowed {
                identity: "alice".into()
            }
        );
    }

    #[test]
    fn mosquitto_accepts_a_file_written_here() {
        // The other direction: Mosquitto's own tool checks nothing, so ask
        // the broker. Skipped without the Debian packages.
        let Some(_) = mosquitto_passwd() else {
            return;
        };
        if Command::new("mosquitto_pub")
            .arg("--help")
            .output()
            .is_err()
        {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("mosquitto_pub is missing: install the Debian package mosquitto-clients");
            }
            println!("skipped: install the Debian package mosquitto-clients");
            return;
        }
        let dir = TempDir::new("broker");
        let passwd = dir.0.join("passwd");
        add_user(&passwd, "dev-1", "correct horse", 1000).unwrap();
        // Started as root, mosquitto drops to the `mosquitto` user, which
        // must be able to read the file.
        fs::set_permissions(&passwd, fs::Permissions::from_mode(0o644)).unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let conf = dir.0.join("mosquitto.conf");
        fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
                passwd.display()
            ),
        )
        .unwrap();
        // The broker is in /usr/sbin, which a user's PATH may lack.
        let Some(mosquitto) = ["mosquitto", "/usr/sbin/mosquitto"]
            .into_iter()
            .find(|bin| Command::new(bin).arg("-h").output().is_ok())
        else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("mosquitto is missing: install the Debian package mosquitto");
            }
            println!("skipped: install the Debian package mosquitto");
            return;
        };
        let mut broker = Command::new(mosquitto)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it listens.
        let mut up = false;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                up = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let publish = |password: &str| {
            Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-u", "dev-1", "-P", password, "-t", "t", "-m", "x"])
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
                .success()
        };
        let good = up && publish("correct horse");
        let bad = up && publish("wrong");
        let _ = broker.kill();
        let _ = broker.wait();
        assert!(up, "mosquitto did not start");
        assert!(good, "mosquitto refused the password file written here");
        assert!(!bad, "mosquitto accepted a wrong password");
    }

    #[test]
    fn add_user_creates_replaces_and_keeps_other_lines() {
        let dir = TempDir::new("add");
        let file = dir.0.join("passwd");
        add_user(&file, "a", "pw-a", 1000).unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        add_user(&file, "b", "pw-b", 1000).unwrap();
        let text = fs::read_to_string(&file).unwrap();
        fs::write(&file, format!("# users\n{text}")).unwrap();
        add_user(&file, "a", "new-a", 1000).unwrap();
        let text = fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "# users");
        assert!(lines[1].starts_with("a:$7$1000$"));
        assert!(lines[2].starts_with("b:$7$1000$"));
        let pw = PasswordFile::load(&file).unwrap();
        assert!(pw.verify("a", b"new-a"));
        assert!(!pw.verify("a", b"pw-a"));
        assert!(pw.verify("b", b"pw-b"));
        // Only the target is left in the directory: no temp files.
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);
    }

    #[test]
    fn add_user_refuses_names_the_file_cannot_hold() {
        let dir = TempDir::new("names");
        let file = dir.0.join("passwd");
        for bad in ["", "a:b", "a\nb", "#a", " a"] {
            let e = add_user(&file, bad, "pw", 1000).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert_eq!(
            add_user(&file, "a", "pw", 0).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(!file.exists());
        assert!(passwd_command(&file, "a", "", 1000).is_err());
        passwd_command(&file, "a", "pw", 1000).unwrap();
        assert!(PasswordFile::load(&file).unwrap().verify("a", b"pw"));
    }

    #[test]
    fn hash_field_format() {
        let field = hash_password("x", 101);
        let parts: Vec<&str> = field.split('$').collect();
        assert_eq!(parts[0], "");
        assert_eq!(parts[1], "7");
        assert_eq!(parts[2], "101");
        assert_eq!(parts[3].len(), 16, "12 salt bytes in base64");
        assert_eq!(parts[4].len(), 88, "64 hash bytes in base64");
        assert_ne!(hash_password("x", 101), field, "a fresh salt each time");
    }

    /// A known answer: PBKDF2-HMAC-SHA512("password", "salt", 1) from
    /// RFC 6070's vectors, as extended to SHA-512 in common test suites,
    /// here as a file line.
    #[test]
    fn known_answer() {
        let salt = b64_encode(b"salt");
        let mut dk = [0u8; 64];
        pbkdf2::derive(
            PBKDF2,
            NonZeroU32::new(1).unwrap(),
            b"salt",
            b"password",
            &mut dk,
        );
        assert_eq!(&dk[..8], &[0x86, 0x7f, 0x70, 0xcf, 0x1a, 0xde, 0x02, 0xcf]);
        let line = format!("u:$7$1${salt}${}\n", b64_encode(&dk));
        let pw = PasswordFile::parse(&line).unwrap();
        assert!(pw.verify("u", b"password"));
        assert!(!pw.verify("u", b"Password"));
    }

    #[test]
    fn load_errors_name_the_line_and_the_fix() {
        let ok = "u:$7$101$ACafTgQ/DujoFBMZ$qXKBSqxAVq6xYW3JVSnBkdspCuEGaJzfoRQMjvu6vgma3o9bqTe6B+S6qMHlonS9vIaldTAsNeFxibMftbvbiQ==";
        let cases: &[(&str, usize, LineProblem)] = &[
            ("nocolon\n", 1, LineProblem::NoColon),
            ("\n:$7$1$AA$AA\n", 2, LineProblem::EmptyUser),
            ("u:plain\n", 1, LineProblem::PlainText),
            ("u:$6$c2FsdA==$aGFzaA==\n", 1, LineProblem::OldSha512),
            ("u:$2b$10$xx\n", 1, LineProblem::UnknownHash("$2b$".into())),
            ("u:$7$0$AA$AA\n", 1, LineProblem::BadIterations),
            ("u:$7$x$AA$AA\n", 1, LineProblem::BadIterations),
            ("u:$7$10000001$AA$AA\n", 1, LineProblem::BadIterations),
            ("u:$7$1$!!$AA\n", 1, LineProblem::BadSalt),
            ("u:$7$1$AAAA$AAAA\n", 1, LineProblem::BadHash),
        ];
        for (text, line, problem) in cases {
            let (l, p) = PasswordFile::parse(text).unwrap_err();
            assert_eq!((l, &p), (*line, problem), "{text:?}");
        }
        let dup = format!("# c\n{ok}\n\n{ok}\n");
        assert_eq!(
            PasswordFile::parse(&dup).unwrap_err(),
            (4, LineProblem::Duplicate { first: 2 })
        );
        let dir = TempDir::new("errors");
        let file = dir.0.join("passwd");
        fs::write(&file, format!("{ok}\nu2:$6$c2FsdA==$aGFzaA==\n")).unwrap();
        let e = PasswordFile::load(&file).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "password file {} line 2: `$6$` (Mosquitto 1.6's single SHA-512) is too fast to \
                 resist guessing and is not accepted; set the password again with \
                 `ringport mqtt passwd FILE USER` or `mosquitto_passwd FILE USER`",
                file.display()
            )
        );
        let missing = dir.0.join("missing");
        assert!(matches!(
            PasswordFile::load(&missing),
            Err(PasswordFileError::Read { .. })
        ));
        // Comments, blank lines, CRLF endings and trailing spaces are fine.
        let pw = PasswordFile::parse(&format!("# c\r\n\r\n{ok}  \r\n")).unwrap();
        assert!(pw.verify("u", b"s3cret"));
    }

    #[test]
    fn unknown_users_cost_the_files_most_common_iteration_count() {
        let text = format!(
            "a:{}\nb:{}\nc:{}\n",
            hash_password("x", 101),
            hash_password("x", 101),
            hash_password("x", 1000)
        );
        assert_eq!(
            PasswordFile::parse(&text).unwrap().decoy.iterations.get(),
            101
        );
        assert_eq!(
            PasswordFile::parse("").unwrap().decoy.iterations.get(),
            DEFAULT_ITERATIONS
        );
    }

    #[test]
    fn authenticate_outcomes() {
        let pw = PasswordFile::parse(&format!("u:{}\n", hash_password("pw", 1000))).unwrap();
        assert_eq!(
            pw.authenticate(&req(Some("u"), Some(b"pw"))),
            AuthOutcome::Allowed {
                identity: "u".into()
            }
        );
        assert_eq!(
            pw.authenticate(&req(Some("u"), Some(b"px"))),
            AuthOutcome::BadCredentials
        );
        assert_eq!(
            pw.authenticate(&req(Some("nobody"), Some(b"pw"))),
            AuthOutcome::BadCredentials
        );
        assert_eq!(
            pw.authenticate(&req(Some("u"), None)),
            AuthOutcome::BadCredentials
        );
        assert_eq!(
            pw.authenticate(&req(None, None)),
            AuthOutcome::NotAuthorized
        );
        let pw = pw.with_anonymous(true);
        assert_eq!(
            pw.authenticate(&req(None, None)),
            AuthOutcome::Allowed {
                identity: String::new()
            }
        );
    }

    #[test]
    fn cache_answers_a_repeated_correct_password_and_nothing_else() {
        let pw = PasswordFile::parse(&format!("u:{}\n", hash_password("pw", 1000))).unwrap();
        assert!(pw.cache.lock().unwrap().is_empty());
        assert!(!pw.verify("u", b"wrong"));
        assert!(
            pw.cache.lock().unwrap().is_empty(),
            "a failure is not cached"
        );
        assert!(pw.verify("u", b"pw"));
        let tag = pw.cache.lock().unwrap()["u"].as_ref().to_vec();
        assert_eq!(tag.len(), 32);
        assert!(!tag.windows(2).any(|w| w == b"pw"));
        assert!(pw.verify("u", b"pw"));
        assert!(
            !pw.verify("u", b"wrong"),
            "a cached user still needs the password"
        );
        assert_eq!(pw.cache.lock().unwrap().len(), 1);
        // The cache is per load: a new load starts empty (new key).
        let again = PasswordFile::parse(&format!("u:{}\n", hash_password("pw", 1000))).unwrap();
        assert!(again.cache.lock().unwrap().is_empty());
    }

    #[test]
    fn write_atomically_replaces_and_keeps_permissions() {
        let dir = TempDir::new("atomic");
        let file = dir.0.join("snapshot.db");
        write_atomically(&file, b"one").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&file, b"two, longer").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"two, longer");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(
            fs::read_dir(&dir.0).unwrap().count(),
            1,
            "no temp file left"
        );
        // A failed write leaves the old file and no temp file.
        let missing_dir = dir.0.join("nope").join("x");
        assert_eq!(
            write_atomically(&missing_dir, b"x").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(write_atomically(Path::new("/"), b"x").is_err());
        assert_eq!(fs::read(&file).unwrap(), b"two, longer");
    }

    /// Prints the cost of one verification at [`DEFAULT_ITERATIONS`]; run
    /// with `--release --ignored --nocapture` to re-measure.
    #[test]
    #[ignore = "a measurement, not a check: run with --release --ignored --nocapture"]
    fn measure_one_verification() {
        let pw = PasswordFile::parse(&format!("u:{}\n", hash_password("pw", DEFAULT_ITERATIONS)))
            .unwrap();
        // The fastest of several runs: the machine is shared, and the
        // fastest run is the closest to the cost on an idle core.
        let time = |password: &[u8], expect: bool| {
            (0..20)
                .map(|_| {
                    let start = std::time::Instant::now();
                    assert_eq!(pw.verify("u", password), expect);
                    start.elapsed()
                })
                .min()
                .unwrap()
        };
        let slow = time(b"wrong", false);
        let cached = time(b"pw", true);
        println!(
            "one verification at {DEFAULT_ITERATIONS} iterations: {slow:?}; cached: {cached:?}"
        );
    }
}
