//! io_uring setup, feature probing and the diagnostics for when it fails.

use std::fmt;
use std::io;

use io_uring::{opcode, IoUring, Probe};

/// Oldest kernel ringport supports: multishot accept and recv, provided buffer
/// rings, DEFER_TASKRUN and SINGLE_ISSUER are all there from 6.1.
pub const MIN_KERNEL: (u32, u32) = (6, 1);

/// Setup flags ringport asks for, in the order they are dropped when refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupFlag {
    /// IORING_SETUP_COOP_TASKRUN (5.19): no IPI to interrupt the shard for task work.
    CoopTaskrun,
    /// IORING_SETUP_DEFER_TASKRUN (6.1): completions are run only when the shard waits.
    DeferTaskrun,
    /// IORING_SETUP_SINGLE_ISSUER (6.0): only the shard thread submits.
    SingleIssuer,
}

impl SetupFlag {
    /// The kernel's name of the flag.
    pub fn name(self) -> &'static str {
        match self {
            SetupFlag::CoopTaskrun => "IORING_SETUP_COOP_TASKRUN",
            SetupFlag::DeferTaskrun => "IORING_SETUP_DEFER_TASKRUN",
            SetupFlag::SingleIssuer => "IORING_SETUP_SINGLE_ISSUER",
        }
    }
}

/// A ring and what was given up to get it.
pub struct Ring {
    /// The ring itself.
    pub ring: IoUring,
    /// Flags the kernel refused and that were dropped (logged by the caller).
    pub dropped: Vec<SetupFlag>,
    /// Whether the kernel honours `min_wait_usec` (IORING_FEAT_MIN_TIMEOUT, 6.12).
    pub min_timeout: bool,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("dropped", &self.dropped)
            .field("min_timeout", &self.min_timeout)
            .finish()
    }
}

/// Why io_uring could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// io_uring_setup itself was refused or is missing.
    #[error("io_uring is unavailable: io_uring_setup failed with {errno}. {hint}")]
    Unavailable {
        /// The errno (in the message, not a `source`: printing the error
        /// and its chain would name it twice).
        errno: io::Error,
        /// What to check, from what this machine shows.
        hint: String,
    },
    /// Setup failed for lack of locked memory.
    #[error(
        "io_uring_setup failed with {errno}: not enough locked memory for {entries} ring entries \
         (RLIMIT_MEMLOCK soft limit {memlock} bytes). Raise it (`ulimit -l unlimited` or \
         LimitMEMLOCK=infinity in the systemd unit) or lower --ring-entries"
    )]
    Memlock {
        /// The errno (in the message).
        errno: io::Error,
        /// Entries asked for.
        entries: u32,
        /// The soft limit in bytes.
        memlock: u64,
    },
    /// The kernel lacks an operation ringport needs.
    #[error(
        "this kernel's io_uring lacks {missing} (kernel {kernel}); ringport needs Linux {}.{} or newer",
        MIN_KERNEL.0, MIN_KERNEL.1
    )]
    MissingOpcode {
        /// Names of the missing operations.
        missing: String,
        /// The running kernel release.
        kernel: String,
    },
    /// Any other setup failure.
    #[error("io_uring setup failed: {0}")]
    Other(#[source] io::Error),
}

impl RingError {
    /// Whether `--backend auto` starts on epoll instead: io_uring refused
    /// (seccomp, `kernel.io_uring_disabled`), missing (ENOSYS), short of
    /// locked memory, or without an operation ringport needs.
    pub fn falls_back(&self) -> bool {
        !matches!(self, RingError::Other(_))
    }
}

/// The running kernel's release string (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Parses `6.18.44-foo` into (6, 18).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Explains an EPERM/ENOSYS/EACCES from io_uring_setup from what the machine shows.
pub fn unavailable_hint(err: &io::Error) -> String {
    let mut hint = String::new();
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    match disabled {
        Some(2) => hint.push_str(
            "kernel.io_uring_disabled is 2: io_uring is switched off for every process; \
             set it to 0 (`sysctl -w kernel.io_uring_disabled=0`) to use it. ",
        ),
        Some(1) => hint.push_str(
            "kernel.io_uring_disabled is 1: only root (CAP_SYS_ADMIN) and members of \
             kernel.io_uring_group may use io_uring; add this user's group there or set it to 0. ",
        ),
        _ => {}
    }
    if err.raw_os_error() == Some(libc::ENOSYS) {
        hint.push_str("ENOSYS means the kernel was built without io_uring (CONFIG_IO_URING) ");
        hint.push_str("or a seccomp filter answers ENOSYS. ");
    } else if disabled.unwrap_or(0) == 0 {
        hint.push_str(
            "kernel.io_uring_disabled is 0, so a seccomp profile is the likely cause \
             (Docker's and Podman's default profiles block io_uring_setup; allow \
             io_uring_setup, io_uring_enter and io_uring_register, or run with a custom \
             profile). ",
        );
    }
    let release = kernel_release();
    match parse_release(&release) {
        Some(v) if v < MIN_KERNEL => hint.push_str(&format!(
            "This kernel ({release}) is also older than the {}.{} ringport needs.",
            MIN_KERNEL.0, MIN_KERNEL.1
        )),
        _ => hint.push_str(&format!(
            "ringport needs Linux {}.{} or newer (this is {release}).",
            MIN_KERNEL.0, MIN_KERNEL.1
        )),
    }
    hint
}

fn memlock_soft() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we own and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc == 0 {
        lim.rlim_cur
    } else {
        0
    }
}

fn classify(err: io::Error, entries: u32) -> RingError {
    match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::ENOSYS) | Some(libc::EACCES) => {
            let hint = unavailable_hint(&err);
            RingError::Unavailable { errno: err, hint }
        }
        Some(libc::ENOMEM) => RingError::Memlock {
            errno: err,
            entries,
            memlock: memlock_soft(),
        },
        _ => RingError::Other(err),
    }
}

/// Creates a shard's ring with SINGLE_ISSUER + DEFER_TASKRUN + COOP_TASKRUN,
/// dropping (and reporting) the flags the kernel refuses with EINVAL.
///
/// Must run on the thread that will submit (SINGLE_ISSUER).
pub fn setup(entries: u32, cq_entries: u32) -> Result<Ring, RingError> {
    let mut wanted = vec![
        SetupFlag::SingleIssuer,
        SetupFlag::DeferTaskrun,
        SetupFlag::CoopTaskrun,
    ];
    let mut dropped = Vec::new();
    loop {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq_entries).setup_clamp();
        for f in &wanted {
            match f {
                SetupFlag::SingleIssuer => b.setup_single_issuer(),
                SetupFlag::DeferTaskrun => b.setup_defer_taskrun(),
                SetupFlag::CoopTaskrun => b.setup_coop_taskrun(),
            };
        }
        match b.build(entries) {
            Ok(ring) => {
                let min_timeout = ring.params().is_feature_min_timeout();
                return Ok(Ring {
                    ring,
                    dropped,
                    min_timeout,
                });
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !wanted.is_empty() => {
                // DEFER_TASKRUN requires SINGLE_ISSUER, so drop from the end of the
                // list: COOP first, then DEFER, then SINGLE_ISSUER.
                let f = wanted.pop().expect("checked non-empty");
                dropped.push(f);
            }
            Err(e) => return Err(classify(e, entries)),
        }
    }
}

/// `io_uring_enter` for one ring, through its registered ring fd when the
/// kernel allows (IORING_REGISTER_RING_FDS, 5.18): the kernel then skips the
/// file lookup (an atomic reference count taken and dropped on every call in
/// a multi-threaded process) and this skips the io-uring crate's general
/// checks. A registration belongs to the registering thread, so [`Enter::new`]
/// must run on the thread that submits (the shard's, as SINGLE_ISSUER wants
/// anyway); it ends when that thread exits.
#[derive(Debug, Clone, Copy)]
pub struct Enter {
    /// What io_uring_enter takes: the registered slot, or the ring fd.
    fd: i32,
    flags: u32,
    /// The ring's own fd.
    ring_fd: i32,
}

/// IORING_REGISTER_RING_FDS (include/uapi/linux/io_uring.h).
const REGISTER_RING_FDS: u32 = 20;
/// IORING_UNREGISTER_RING_FDS.
const UNREGISTER_RING_FDS: u32 = 21;
/// IORING_ENTER_REGISTERED_RING.
const ENTER_REGISTERED_RING: u32 = 1 << 4;
/// IORING_ENTER_GETEVENTS.
const ENTER_GETEVENTS: u32 = 1;

impl Enter {
    /// Registers `ring`'s fd for this thread, or falls back to the plain fd.
    pub fn new(ring: &IoUring) -> Enter {
        use std::os::fd::AsRawFd;
        let fd = ring.as_raw_fd();
        // struct io_uring_rsrc_update { u32 offset; u32 resv; u64 data; }:
        // offset u32::MAX lets the kernel pick the slot and write it back.
        let mut update: [u64; 2] = [u64::from(u32::MAX), fd as u64];
        // SAFETY: io_uring_register with a pointer to one live, writable
        // io_uring_rsrc_update and a count of 1.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                fd,
                REGISTER_RING_FDS,
                update.as_mut_ptr(),
                1u32,
            )
        };
        if r == 1 {
            let offset = (update[0] & u64::from(u32::MAX)) as i32;
            Enter {
                fd: offset,
                flags: ENTER_REGISTERED_RING,
                ring_fd: fd,
            }
        } else {
            Enter {
                fd,
                flags: 0,
                ring_fd: fd,
            }
        }
    }

    /// Drops the registration, so that closing the ring's fd tears the ring
    /// down at once (as without one) instead of at thread exit.
    pub fn unregister(&mut self) {
        if self.flags == 0 {
            return;
        }
        let mut update: [u64; 2] = [self.fd as u32 as u64, 0];
        // SAFETY: as in `new`, on the ring's own fd, for the slot `new` was given.
        unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.ring_fd,
                UNREGISTER_RING_FDS,
                update.as_mut_ptr(),
                1u32,
            );
        }
        self.flags = 0;
        self.fd = self.ring_fd;
    }

    /// Whether the registered fd is in use.
    pub fn registered(&self) -> bool {
        self.flags != 0
    }

    /// Submits every entry queued in `ring` (the ring this was made for)
    /// and, if `wait` > 0, waits for that many completions (GETEVENTS is
    /// always set, so deferred completions run). Returns how many entries the
    /// kernel took.
    #[inline]
    pub fn submit_and_wait(&self, ring: &mut IoUring, wait: u32) -> io::Result<u32> {
        let to_submit = ring.submission().len() as u32;
        // SAFETY: io_uring_enter with no argument pointer; the submitted
        // entries' buffers are kept alive by their owners until completion.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                self.fd,
                to_submit,
                wait,
                ENTER_GETEVENTS | self.flags,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as u32)
        }
    }
}

/// Operations every shard needs, with the kernel version that brought them.
const REQUIRED: &[(u8, &str)] = &[
    (
        opcode::AcceptMulti::CODE,
        "IORING_OP_ACCEPT (multishot, 5.19)",
    ),
    (opcode::RecvMulti::CODE, "IORING_OP_RECV (multishot, 6.0)"),
    (
        opcode::RecvMsgMulti::CODE,
        "IORING_OP_RECVMSG (multishot, 6.0)",
    ),
    (opcode::Send::CODE, "IORING_OP_SEND (5.6)"),
    (opcode::Connect::CODE, "IORING_OP_CONNECT (5.5)"),
    (opcode::SendMsg::CODE, "IORING_OP_SENDMSG (5.3)"),
    (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL (5.5)"),
    (opcode::Close::CODE, "IORING_OP_CLOSE (5.6)"),
    (opcode::Read::CODE, "IORING_OP_READ (5.6)"),
];

/// What the start-up probe found.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Kernel release.
    pub kernel: String,
    /// IORING_OP_MSG_RING (5.18) is there, for cross-shard wake-ups.
    pub msg_ring: bool,
    /// IORING_OP_SEND_ZC (6.0).
    pub send_zc: bool,
    /// IORING_FEAT_MIN_TIMEOUT (6.12): `--batch-delay-us` can be honoured.
    pub min_timeout: bool,
}

/// Probes the kernel once at start, on a throw-away ring, and fails with a
/// message naming what is missing.
pub fn probe() -> Result<ProbeReport, RingError> {
    let ring = IoUring::new(8).map_err(|e| classify(e, 8))?;
    let kernel = kernel_release();
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(RingError::Other)?;
    let missing: Vec<&str> = REQUIRED
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(RingError::MissingOpcode {
            missing: missing.join(", "),
            kernel,
        });
    }
    if let Some(v) = parse_release(&kernel) {
        if v < MIN_KERNEL {
            // Opcodes exist but multishot variants cannot be probed by opcode alone.
            return Err(RingError::MissingOpcode {
                missing: "multishot accept/recv and provided buffer rings (probed by version)"
                    .to_owned(),
                kernel,
            });
        }
    }
    Ok(ProbeReport {
        kernel,
        msg_ring: probe.is_supported(opcode::MsgRingData::CODE),
        send_zc: probe.is_supported(opcode::SendZc::CODE),
        min_timeout: ring.params().is_feature_min_timeout(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_parsing() {
        assert_eq!(parse_release("6.18.44-fc-v769"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0"), Some((5, 15)));
        assert_eq!(parse_release("garbage"), None);
        assert!(parse_release("5.15.0").unwrap() < MIN_KERNEL);
        assert!(parse_release("6.1.0").unwrap() >= MIN_KERNEL);
    }

    #[test]
    fn eperm_hint_names_the_causes() {
        let h = unavailable_hint(&io::Error::from_raw_os_error(libc::EPERM));
        assert!(h.contains("6.1"), "{h}");
        assert!(
            h.contains("io_uring_disabled") || h.contains("seccomp"),
            "{h}"
        );
        let h = unavailable_hint(&io::Error::from_raw_os_error(libc::ENOSYS));
        assert!(h.contains("ENOSYS"), "{h}");
    }

    #[test]
    fn enter_through_the_registered_ring_fd() {
        let mut r = setup(8, 16).expect("ring").ring;
        let enter = Enter::new(&r);
        assert!(enter.registered(), "IORING_REGISTER_RING_FDS is in 5.18");
        for ud in [1u64, 2] {
            let nop = opcode::Nop::new().build().user_data(ud);
            // SAFETY: a NOP references no memory.
            unsafe { r.submission().push(&nop).expect("room") };
        }
        assert_eq!(enter.submit_and_wait(&mut r, 2).expect("enter"), 2);
        let got: Vec<u64> = r.completion().map(|c| c.user_data()).collect();
        assert_eq!(got, [1, 2]);
        // Nothing to submit, nothing to wait for: returns at once.
        assert_eq!(enter.submit_and_wait(&mut r, 0).expect("enter"), 0);
        // The fallback (plain fd) works the same.
        let mut plain = enter;
        plain.unregister();
        assert!(!plain.registered());
        assert!(
            enter.submit_and_wait(&mut r, 0).is_err(),
            "the slot is gone after unregister"
        );
        assert_eq!(plain.fd, std::os::fd::AsRawFd::as_raw_fd(&r));
        let nop = opcode::Nop::new().build().user_data(3);
        // SAFETY: as above.
        unsafe { r.submission().push(&nop).expect("room") };
        assert_eq!(plain.submit_and_wait(&mut r, 1).expect("enter"), 1);
        assert_eq!(
            r.completion().map(|c| c.user_data()).collect::<Vec<_>>(),
            [3]
        );
    }

    #[test]
    fn probe_and_setup_work_here() {
        let report = probe().expect("io_uring available on the CI machine");
        assert!(!report.kernel.is_empty());
        let ring = setup(64, 256).expect("ring");
        assert!(ring.dropped.is_empty(), "{:?}", ring.dropped);
    }
}
