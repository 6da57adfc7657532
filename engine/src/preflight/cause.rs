//! Why io_uring is refused or lacking, from what the machine shows, and
//! the backend `auto` picks from that.

use super::{Backend, Facts, Outcome};
use crate::limits::UNLIMITED;
use crate::sys::ring::{parse_release, MIN_KERNEL};

/// The fix for a kernel too old for ringport's io_uring backend.
pub(super) const UPGRADE: &str = "upgrade to Linux 6.1 or newer";
/// The fix for a seccomp filter that blocks io_uring.
pub(super) const SECCOMP_FIX: &str = "run with a seccomp profile that allows io_uring_setup, \
     io_uring_enter and io_uring_register, e.g. docker run --security-opt seccomp=PROFILE.json";
/// The fix for `kernel.io_uring_disabled` = 1 without the group.
pub(super) const DISABLED_1_FIX: &str =
    "sysctl -w kernel.io_uring_disabled=0, or add the user to kernel.io_uring_group";
/// The fix for `kernel.io_uring_disabled` = 2.
pub(super) const DISABLED_2_FIX: &str =
    "sysctl -w kernel.io_uring_disabled=0 (and persist it in /etc/sysctl.d/)";

/// The backend `--backend auto` picks on `facts`: io_uring when
/// io_uring_setup works and every operation ringport needs probed OK
/// (the opcodes, provided buffer rings, multishot receive, Linux 6.1);
/// otherwise epoll, with one line naming the cause and how to get io_uring
/// back. Optional features (min-wait batching, MSG_RING, registered ring fds)
/// do not count: the io_uring backend runs without them.
///
/// Pure, and independent of the epoll backend itself (being added), so that
/// `serve` and `doctor` agree on the choice.
pub fn auto_backend(facts: &Facts) -> (Backend, Option<String>) {
    match epoll_cause(facts) {
        None => (Backend::IoUring, None),
        Some(c) => (
            Backend::Epoll,
            Some(format!("{}; to get io_uring back: {}", c.why, c.fix)),
        ),
    }
}

/// Why something is the way it is, and what to do about it.
pub(super) struct Cause {
    /// What is wrong.
    pub why: String,
    /// What to do about it.
    pub fix: String,
}

/// `EPERM (Operation not permitted)`.
pub(super) fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOBUFS => "ENOBUFS",
        libc::ETIME => "ETIME",
        libc::ECANCELED => "ECANCELED",
        _ => return format!("errno {errno} ({})", strerror(errno)),
    };
    format!("{name} ({})", strerror(errno))
}

/// The C library's message for `errno`, without Rust's ` (os error N)`.
fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// `8 MiB`, `184 KiB`, `1000 bytes`, `unlimited`.
pub(super) fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    match n {
        UNLIMITED => "unlimited".to_owned(),
        n if n >= MIB && n % MIB == 0 => format!("{} MiB", n / MIB),
        n if n >= KIB && n % KIB == 0 => format!("{} KiB", n / KIB),
        n => format!("{n} bytes"),
    }
}

/// `kernel.io_uring_disabled` alone refuses io_uring to this process.
pub(super) fn disabled_refuses(facts: &Facts) -> bool {
    match facts.io_uring_disabled {
        Some(2) => true,
        Some(1) => !facts.cap_sys_admin && !facts.in_io_uring_group,
        _ => false,
    }
}

/// Why io_uring answers `errno` (EPERM, EACCES, ENOSYS, ENOMEM), from what
/// the machine shows. The sysctl is named first when it alone refuses:
/// seccomp may refuse as well, but the sysctl certainly does.
pub(super) fn refusal(facts: &Facts, errno: i32) -> Cause {
    let filter = facts.seccomp == Some(2);
    match errno {
        libc::EPERM | libc::EACCES => match facts.io_uring_disabled {
            Some(2) => Cause {
                why: "kernel.io_uring_disabled is 2: io_uring is off for every process".to_owned(),
                fix: DISABLED_2_FIX.to_owned(),
            },
            Some(1) if disabled_refuses(facts) => Cause {
                why: "kernel.io_uring_disabled is 1 and this process is neither in \
                      kernel.io_uring_group nor CAP_SYS_ADMIN"
                    .to_owned(),
                fix: DISABLED_1_FIX.to_owned(),
            },
            _ if filter => Cause {
                why: "this process runs under a seccomp filter (mode 2) that refuses io_uring, \
                      as container runtimes' default profiles do"
                    .to_owned(),
                fix: SECCOMP_FIX.to_owned(),
            },
            _ => Cause {
                why: "neither seccomp nor kernel.io_uring_disabled explains it, so a security \
                      module (SELinux, AppArmor) may deny io_uring"
                    .to_owned(),
                fix: "look for an io_uring denial in the audit log and allow it".to_owned(),
            },
        },
        libc::ENOSYS if filter => Cause {
            why: "the kernel has no io_uring, or this process's seccomp filter (mode 2) \
                  answers ENOSYS for it"
                .to_owned(),
            fix: format!("{SECCOMP_FIX}; or run a kernel built with io_uring (Linux 6.1 or newer)"),
        },
        libc::ENOSYS => Cause {
            why: "the kernel was built without io_uring (CONFIG_IO_URING)".to_owned(),
            fix: "run a kernel with io_uring: Linux 6.1 or newer".to_owned(),
        },
        libc::ENOMEM => Cause {
            why: format!(
                "not enough locked memory (RLIMIT_MEMLOCK soft limit {})",
                bytes(facts.memlock.soft)
            ),
            fix: "raise RLIMIT_MEMLOCK (`ulimit -l unlimited`, or LimitMEMLOCK=infinity in the \
                  systemd unit)"
                .to_owned(),
        },
        _ => Cause {
            why: "ringport does not expect this error here".to_owned(),
            fix: "check the kernel log (dmesg); ringport needs Linux 6.1 or newer with io_uring \
                  enabled"
                .to_owned(),
        },
    }
}

/// Whether `errno` says io_uring is refused (rather than lacking something).
pub(super) fn is_refusal(errno: i32) -> bool {
    matches!(
        errno,
        libc::EPERM | libc::EACCES | libc::ENOSYS | libc::ENOMEM
    )
}

/// Why a needed feature failed with `errno`: a refusal, or a kernel that
/// lacks `lacks`.
pub(super) fn feature_cause(facts: &Facts, errno: i32, lacks: &str) -> Cause {
    if is_refusal(errno) {
        refusal(facts, errno)
    } else {
        Cause {
            why: format!("this kernel's io_uring lacks {lacks}"),
            fix: UPGRADE.to_owned(),
        }
    }
}

/// The needed io_uring features after setup: (what, outcome, what lacks it).
pub(super) fn needed_features(facts: &Facts) -> [(&'static str, &Outcome, &'static str); 3] {
    let u = &facts.uring;
    [
        (
            "the opcode probe",
            &u.opcodes,
            "an operation ringport needs",
        ),
        (
            "registering a provided buffer ring",
            &u.buffer_ring,
            "provided buffer rings (IORING_REGISTER_PBUF_RING, Linux 5.19)",
        ),
        (
            "a multishot receive",
            &u.multishot_recv,
            "multishot receive with provided buffers (Linux 6.0)",
        ),
    ]
}

/// Why `auto` would not pick io_uring, if it would not.
pub(super) fn epoll_cause(facts: &Facts) -> Option<Cause> {
    match &facts.uring.setup {
        Outcome::Ok => {}
        Outcome::Errno(e) => {
            let c = refusal(facts, *e);
            return Some(Cause {
                why: format!("io_uring_setup fails with {}: {}", errno_name(*e), c.why),
                fix: c.fix,
            });
        }
        Outcome::Missing(what) => {
            return Some(Cause {
                why: format!("io_uring_setup: {what}"),
                fix: UPGRADE.to_owned(),
            })
        }
        Outcome::NotProbed => {
            return Some(Cause {
                why: "io_uring was not probed".to_owned(),
                fix: "run `ringport doctor` to see why".to_owned(),
            })
        }
    }
    if let Some(v) = parse_release(&facts.kernel) {
        if v < MIN_KERNEL {
            return Some(Cause {
                why: format!(
                    "Linux {} is older than the {}.{} ringport's io_uring backend needs",
                    facts.kernel, MIN_KERNEL.0, MIN_KERNEL.1
                ),
                fix: UPGRADE.to_owned(),
            });
        }
    }
    for (what, outcome, lacks) in needed_features(facts) {
        match outcome {
            Outcome::Ok => {}
            Outcome::Errno(e) => {
                let c = feature_cause(facts, *e, lacks);
                return Some(Cause {
                    why: format!("{what} fails with {}: {}", errno_name(*e), c.why),
                    fix: c.fix,
                });
            }
            Outcome::Missing(m) => {
                return Some(Cause {
                    why: format!("this kernel's io_uring lacks {lacks}: {m}"),
                    fix: UPGRADE.to_owned(),
                })
            }
            Outcome::NotProbed => {
                return Some(Cause {
                    why: format!("{what} was not probed"),
                    fix: "run `ringport doctor` to see why".to_owned(),
                })
            }
        }
    }
    None
}

/// The first io_uring refusal the probes saw: setup's, or a needed feature's.
pub(super) fn first_refusal(facts: &Facts) -> Option<(&'static str, i32)> {
    if let Outcome::Errno(e) = facts.uring.setup {
        return Some(("io_uring_setup", e));
    }
    needed_features(facts)
        .into_iter()
        .find_map(|(what, outcome, _)| match outcome {
            Outcome::Errno(e) if is_refusal(*e) && *e != libc::ENOMEM => Some((what, *e)),
            _ => None,
        })
}
