//! Why io_uring is refused or lacking, from what the machine shows, and
//! the backend `auto` picks from that.

use super::{Facts, Outcome};
use crate::config::BackendKind;
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

/// The backend `--backend auto` picks on `facts`, as the engine picks it at
/// start: io_uring when its start-up probe passes (io_uring_setup, the
/// opcodes shards need, Linux 6.1); epoll when io_uring is refused (EPERM or
/// EACCES: a seccomp filter, `kernel.io_uring_disabled`), missing (ENOSYS),
/// short of locked memory (ENOMEM) or without an operation ringport needs,
/// with one line naming the cause and how to get io_uring back.
///
/// `(IoUring, Some(why))` means `auto` stays on io_uring although io_uring
/// fails here, so `serve` will not start: an error other than those above
/// (the engine does not fall back for it), or a provided buffer ring or a
/// multishot receive that fails although the probe passed. Optional
/// features (min-wait batching, MSG_RING, registered ring fds) do not count:
/// shards run without them.
///
/// Pure: it reads only `facts`, so `serve` and `doctor` can agree on it.
pub fn auto_backend(facts: &Facts) -> (BackendKind, Option<String>) {
    match auto_choice(facts) {
        Auto::IoUring => (BackendKind::IoUring, None),
        Auto::Epoll(c) => (
            BackendKind::Epoll,
            Some(format!("{}; to get io_uring back: {}", c.why, c.fix)),
        ),
        Auto::Failing(c) => (
            BackendKind::IoUring,
            Some(format!("{}; fix: {}", c.why, c.fix)),
        ),
    }
}

/// What `auto` does on some facts.
pub(super) enum Auto {
    /// io_uring, which works.
    IoUring,
    /// epoll, for this cause.
    Epoll(Cause),
    /// io_uring, which fails for this cause (serve stops).
    Failing(Cause),
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
            "probing the opcodes (IORING_REGISTER_PROBE)",
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

/// What `auto` does on `facts` (see [`auto_backend`]).
pub(super) fn auto_choice(facts: &Facts) -> Auto {
    let u = &facts.uring;
    let or_epoll = |fix: String| format!("{fix}; or run with --backend epoll");
    match &u.setup {
        Outcome::Ok => {}
        Outcome::Errno(e) => {
            let c = refusal(facts, *e);
            let c = Cause {
                why: format!("io_uring_setup fails with {}: {}", errno_name(*e), c.why),
                fix: c.fix,
            };
            return if is_refusal(*e) {
                Auto::Epoll(c)
            } else {
                Auto::Failing(Cause {
                    fix: or_epoll(c.fix),
                    ..c
                })
            };
        }
        Outcome::Missing(what) => {
            return Auto::Epoll(Cause {
                why: format!("io_uring_setup: {what}"),
                fix: UPGRADE.to_owned(),
            })
        }
        Outcome::NotProbed => {
            return Auto::Failing(Cause {
                why: "io_uring was not probed".to_owned(),
                fix: "run `ringport doctor`".to_owned(),
            })
        }
    }
    if let Some(v) = parse_release(&facts.kernel) {
        if v < MIN_KERNEL {
            return Auto::Epoll(Cause {
                why: format!(
                    "Linux {} is older than the {}.{} ringport's io_uring backend needs",
                    facts.kernel, MIN_KERNEL.0, MIN_KERNEL.1
                ),
                fix: UPGRADE.to_owned(),
            });
        }
    }
    // The first is the engine's own start-up probe.
    for (i, (what, outcome, lacks)) in needed_features(facts).into_iter().enumerate() {
        let opcodes = i == 0;
        match outcome {
            Outcome::Ok => {}
            // The engine's probe names the missing opcodes: auto falls back.
            Outcome::Missing(m) if opcodes => {
                return Auto::Epoll(Cause {
                    why: format!("this kernel's io_uring lacks {m}"),
                    fix: UPGRADE.to_owned(),
                })
            }
            Outcome::Missing(m) => {
                return Auto::Failing(Cause {
                    why: format!("this kernel's io_uring lacks {lacks}: {m}"),
                    fix: or_epoll(UPGRADE.to_owned()),
                })
            }
            Outcome::Errno(e) => {
                let c = feature_cause(facts, *e, lacks);
                return Auto::Failing(Cause {
                    why: format!("{what} fails with {}: {}", errno_name(*e), c.why),
                    fix: or_epoll(c.fix),
                });
            }
            Outcome::NotProbed => {
                return Auto::Failing(Cause {
                    why: format!("{what} was not probed"),
                    fix: "run `ringport doctor`".to_owned(),
                })
            }
        }
    }
    Auto::IoUring
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
