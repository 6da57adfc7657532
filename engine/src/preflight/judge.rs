//! Judging the facts against the needs: pure functions, no I/O.

use super::cause::{
    auto_choice, bytes, disabled_refuses, errno_name, feature_cause, first_refusal, is_refusal,
    needed_features, refusal, Auto, DISABLED_1_FIX, DISABLED_2_FIX, SECCOMP_FIX, UPGRADE,
};
use super::{Check, Facts, Needs, Outcome, Status};
use crate::config::{BackendChoice, MeshWake};
use crate::cpus::format_cpus;
use crate::limits::UNLIMITED;
use crate::sys::ring::{parse_release, MIN_KERNEL};

/// Every check of `facts` against `needs`, in a fixed order; the last one,
/// `backend`, is the backend the shards would run on ([`super::auto_backend`]
/// for `--backend auto`).
///
/// Checks of io_uring itself fail when io_uring is unusable and the shards
/// would run on it (`--backend io-uring`, or `auto` that does not fall back),
/// and warn when they would run on epoll; a probe that could not run because
/// an earlier one failed warns and points at it.
pub fn judge(facts: &Facts, needs: &Needs) -> Vec<Check> {
    let on_uring = on_io_uring(facts, needs);
    let severe = if on_uring { Status::Fail } else { Status::Warn };
    vec![
        kernel(facts, severe),
        setup(facts, severe),
        opcodes(facts, severe),
        buffer_rings(facts, severe),
        multishot_recv(facts, severe),
        min_wait(facts, needs),
        msg_ring(facts, needs),
        registered_ring_fd(facts),
        seccomp(facts, severe),
        io_uring_disabled(facts, severe),
        memlock(facts, needs, on_uring),
        open_files(facts, needs),
        rmem_max(facts, needs),
        cpus(facts, needs),
        backend(facts, needs),
    ]
}

/// Whether the shards would run on io_uring.
fn on_io_uring(facts: &Facts, needs: &Needs) -> bool {
    match needs.backend {
        BackendChoice::IoUring => true,
        BackendChoice::Epoll => false,
        BackendChoice::Auto => !matches!(auto_choice(facts), Auto::Epoll(_)),
    }
}

fn ok(name: &'static str, detail: String) -> Check {
    Check {
        name,
        status: Status::Ok,
        detail,
        fix: None,
    }
}

fn not_ok(name: &'static str, status: Status, detail: String, fix: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail,
        fix: Some(fix.into()),
    }
}

/// A probe that did not run because `after` failed first.
fn not_probed(name: &'static str, after: &str) -> Check {
    not_ok(
        name,
        Status::Warn,
        format!("not probed: {after} failed"),
        format!("see {after}"),
    )
}

fn kernel(facts: &Facts, severe: Status) -> Check {
    let k = &facts.kernel;
    match parse_release(k) {
        Some(v) if v >= MIN_KERNEL => ok(
            "kernel",
            format!(
                "Linux {k}: {}.{} or newer, as ringport needs",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
        ),
        Some(_) => not_ok(
            "kernel",
            severe,
            format!(
                "Linux {k} is older than the {}.{} ringport's io_uring backend needs",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
            format!("{UPGRADE} (6.12 for --batch-delay-us)"),
        ),
        None => not_ok(
            "kernel",
            Status::Warn,
            format!("cannot read a version in the release `{k}`"),
            "ringport needs Linux 6.1 or newer; the io_uring probes tell what this kernel has",
        ),
    }
}

fn setup(facts: &Facts, severe: Status) -> Check {
    const NAME: &str = "io_uring_setup";
    let u = &facts.uring;
    match &u.setup {
        Outcome::Ok if u.refused_flags.is_empty() => ok(
            NAME,
            "works with IORING_SETUP_SINGLE_ISSUER, DEFER_TASKRUN and COOP_TASKRUN, as shards \
             set up their rings"
                .to_owned(),
        ),
        Outcome::Ok => not_ok(
            NAME,
            Status::Warn,
            format!(
                "works, but the kernel refused {}: shards run without",
                u.refused_flags.join(", ")
            ),
            "Linux 6.1 or newer has every setup flag ringport asks for",
        ),
        Outcome::Errno(e) => {
            let c = refusal(facts, *e);
            not_ok(
                NAME,
                severe,
                format!("fails with {}: {}", errno_name(*e), c.why),
                c.fix,
            )
        }
        Outcome::Missing(what) => not_ok(NAME, severe, what.clone(), UPGRADE),
        Outcome::NotProbed => not_ok(
            NAME,
            Status::Warn,
            "not probed".to_owned(),
            "run `ringport doctor`",
        ),
    }
}

fn opcodes(facts: &Facts, severe: Status) -> Check {
    const NAME: &str = "io_uring_ops";
    match &facts.uring.opcodes {
        Outcome::Ok => ok(
            NAME,
            "multishot accept, multishot recv and recvmsg, send, sendmsg, cancel, close and read \
             are all there"
                .to_owned(),
        ),
        Outcome::Missing(names) => not_ok(
            NAME,
            severe,
            format!("this kernel's io_uring lacks {names}"),
            UPGRADE,
        ),
        Outcome::Errno(e) => {
            let c = feature_cause(facts, *e, "IORING_REGISTER_PROBE");
            not_ok(
                NAME,
                severe,
                format!(
                    "probing the opcodes fails with {}: {}",
                    errno_name(*e),
                    c.why
                ),
                c.fix,
            )
        }
        Outcome::NotProbed => not_probed(NAME, "io_uring_setup"),
    }
}

fn buffer_rings(facts: &Facts, severe: Status) -> Check {
    const NAME: &str = "buffer_rings";
    let [_, (what, outcome, lacks), _] = needed_features(facts);
    match outcome {
        Outcome::Ok => ok(
            NAME,
            "a provided buffer ring registers (IORING_REGISTER_PBUF_RING): idle connections \
             hold no receive buffer"
                .to_owned(),
        ),
        Outcome::Errno(e) => {
            let c = feature_cause(facts, *e, lacks);
            not_ok(
                NAME,
                severe,
                format!("{what} fails with {}: {}", errno_name(*e), c.why),
                c.fix,
            )
        }
        Outcome::Missing(m) => not_ok(
            NAME,
            severe,
            format!("this kernel's io_uring lacks {lacks}: {m}"),
            UPGRADE,
        ),
        Outcome::NotProbed => not_probed(NAME, "io_uring_setup"),
    }
}

fn multishot_recv(facts: &Facts, severe: Status) -> Check {
    const NAME: &str = "multishot_recv";
    let [_, _, (what, outcome, lacks)] = needed_features(facts);
    match outcome {
        Outcome::Ok => ok(
            NAME,
            "a multishot receive on a socket pair completes with IORING_CQE_F_MORE: it stays \
             armed"
                .to_owned(),
        ),
        Outcome::Errno(e) => {
            let c = feature_cause(facts, *e, lacks);
            not_ok(
                NAME,
                severe,
                format!("{what} fails with {}: {}", errno_name(*e), c.why),
                c.fix,
            )
        }
        Outcome::Missing(m) => not_ok(
            NAME,
            severe,
            format!("a multishot receive does not stay armed: {m}"),
            UPGRADE,
        ),
        Outcome::NotProbed if facts.uring.setup.is_ok() => not_probed(NAME, "buffer_rings"),
        Outcome::NotProbed => not_probed(NAME, "io_uring_setup"),
    }
}

/// What a failed optional feature's probe saw.
fn optional_failure(what: &str, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Errno(e) => format!("{what} fails with {}", errno_name(*e)),
        Outcome::Missing(m) => format!("{what} does not work: {m}"),
        Outcome::Ok | Outcome::NotProbed => format!("{what} was not seen working"),
    }
}

fn min_wait(facts: &Facts, needs: &Needs) -> Check {
    const NAME: &str = "min_wait";
    let outcome = &facts.uring.min_wait;
    match outcome {
        Outcome::Ok => ok(
            NAME,
            "IORING_FEAT_MIN_TIMEOUT: --batch-delay-us can be honoured".to_owned(),
        ),
        Outcome::NotProbed => not_probed(NAME, "io_uring_setup"),
        _ if needs.batch_delay_us == 0 => ok(
            NAME,
            format!(
                "{} (Linux 6.12); only --batch-delay-us needs it, and it is 0",
                optional_failure("min-wait batching", outcome)
            ),
        ),
        _ => not_ok(
            NAME,
            Status::Warn,
            format!(
                "{} (IORING_FEAT_MIN_TIMEOUT, Linux 6.12): --batch-delay-us {} is ignored",
                optional_failure("min-wait batching", outcome),
                needs.batch_delay_us
            ),
            "upgrade to Linux 6.12 or newer, or leave --batch-delay-us at 0",
        ),
    }
}

fn msg_ring(facts: &Facts, needs: &Needs) -> Check {
    const NAME: &str = "msg_ring";
    let outcome = &facts.uring.msg_ring;
    let failure = || optional_failure("IORING_OP_MSG_RING", outcome);
    match outcome {
        Outcome::Ok => ok(
            NAME,
            "IORING_OP_MSG_RING reaches another ring: a shard wakes a parked peer with its next \
             submit"
                .to_owned(),
        ),
        Outcome::NotProbed => not_probed(NAME, "io_uring_setup"),
        _ if needs.shards <= 1 => ok(NAME, format!("{}; not needed with one shard", failure())),
        _ if needs.mesh_wake == MeshWake::Eventfd => ok(
            NAME,
            format!("{}; not needed with --mesh-wake eventfd", failure()),
        ),
        _ => not_ok(
            NAME,
            Status::Warn,
            format!(
                "{}: parked shards are woken by an eventfd write instead (a syscall more per \
                 wake-up)",
                failure()
            ),
            "Linux 6.1 or newer has IORING_OP_MSG_RING",
        ),
    }
}

fn registered_ring_fd(facts: &Facts) -> Check {
    const NAME: &str = "registered_ring_fd";
    let outcome = &facts.uring.registered_ring_fd;
    match outcome {
        Outcome::Ok => ok(
            NAME,
            "IORING_REGISTER_RING_FDS: shards enter their rings through a registered fd".to_owned(),
        ),
        Outcome::NotProbed => not_probed(NAME, "io_uring_setup"),
        _ => not_ok(
            NAME,
            Status::Warn,
            format!(
                "{}: every io_uring_enter looks the ring fd up (a little slower)",
                optional_failure("IORING_REGISTER_RING_FDS", outcome)
            ),
            "Linux 5.18 or newer registers ring fds",
        ),
    }
}

fn seccomp(facts: &Facts, severe: Status) -> Check {
    const NAME: &str = "seccomp";
    match facts.seccomp {
        None => ok(
            NAME,
            "no Seccomp line in /proc/self/status: this kernel has no seccomp".to_owned(),
        ),
        Some(0) => ok(NAME, "mode 0: no seccomp filter".to_owned()),
        Some(1) => not_ok(
            NAME,
            Status::Fail,
            "mode 1 (strict): only read, write, exit and sigreturn are allowed".to_owned(),
            "run ringport without seccomp strict mode",
        ),
        Some(2) => match first_refusal(facts) {
            Some((what, e)) if is_refusal(e) && e != libc::ENOMEM && !disabled_refuses(facts) => {
                not_ok(
                    NAME,
                    severe,
                    format!(
                        "mode 2: a seccomp filter is installed and {what} fails with {}: the \
                         filter blocks io_uring",
                        errno_name(e)
                    ),
                    SECCOMP_FIX,
                )
            }
            _ if facts.uring.setup.is_ok() => ok(
                NAME,
                "mode 2: a seccomp filter is installed, and it lets io_uring through".to_owned(),
            ),
            _ => ok(
                NAME,
                "mode 2: a seccomp filter is installed; io_uring_setup fails for another reason"
                    .to_owned(),
            ),
        },
        Some(mode) => not_ok(
            NAME,
            Status::Warn,
            format!("mode {mode}, which this check does not know"),
            "see seccomp(2); ringport needs io_uring_setup, io_uring_enter and io_uring_register",
        ),
    }
}

fn io_uring_disabled(facts: &Facts, severe: Status) -> Check {
    const NAME: &str = "io_uring_disabled";
    let group = || match facts.io_uring_group {
        Some(g) => format!("kernel.io_uring_group ({g})"),
        None => "kernel.io_uring_group (none set)".to_owned(),
    };
    match facts.io_uring_disabled {
        None => ok(
            NAME,
            "absent (kernels before 6.6 have no such switch): io_uring is on".to_owned(),
        ),
        Some(0) => ok(NAME, "0: io_uring is on for every process".to_owned()),
        Some(1) if facts.in_io_uring_group => ok(
            NAME,
            format!(
                "1: io_uring is limited to {} and CAP_SYS_ADMIN; this process is in the group",
                group()
            ),
        ),
        Some(1) if facts.cap_sys_admin => ok(
            NAME,
            format!(
                "1: io_uring is limited to {} and CAP_SYS_ADMIN; this process has CAP_SYS_ADMIN",
                group()
            ),
        ),
        Some(1) => not_ok(
            NAME,
            severe,
            format!(
                "1: io_uring is limited to {} and CAP_SYS_ADMIN, and this process has neither",
                group()
            ),
            DISABLED_1_FIX,
        ),
        Some(2) => not_ok(
            NAME,
            severe,
            "2: io_uring is off for every process".to_owned(),
            DISABLED_2_FIX,
        ),
        Some(v) => not_ok(
            NAME,
            Status::Warn,
            format!("{v}, a value this check does not know"),
            "0 turns io_uring on for every process (sysctl -w kernel.io_uring_disabled=0)",
        ),
    }
}

fn memlock(facts: &Facts, needs: &Needs, on_uring: bool) -> Check {
    const NAME: &str = "memlock";
    let soft = facts.memlock.soft;
    let raise = |at_least: u64| {
        format!(
            "raise RLIMIT_MEMLOCK to at least {at_least} bytes (`ulimit -l {}`, or \
             LimitMEMLOCK={at_least} in the systemd unit), or lower ring_entries, tcp_bufs, \
             udp_bufs or shards",
            at_least.div_ceil(1024)
        )
    };
    let setup_short = facts.uring.setup == Outcome::Errno(libc::ENOMEM);
    if !on_uring && !setup_short {
        return ok(
            NAME,
            format!(
                "soft limit {}; not needed: the epoll backend pins no io_uring memory",
                bytes(soft)
            ),
        );
    }
    match facts.uring.memlock_charged {
        Some(false) => ok(
            NAME,
            format!(
                "soft limit {}; io_uring charges nothing to it here ({})",
                bytes(soft),
                if facts.cap_ipc_lock {
                    "this process has CAP_IPC_LOCK"
                } else {
                    "this kernel does not charge rings to it"
                }
            ),
        ),
        Some(true) => {
            let need = needs.locked_bytes();
            let what = format!(
                "{} shard(s) x {} ({}-entry ring, {} and {} buffer ring entries) and {} for the \
                 start-up probe",
                needs.shards,
                bytes(needs.shard_locked_bytes()),
                needs.ring_entries,
                needs.tcp_bufs,
                needs.udp_bufs,
                bytes(super::ring_locked_bytes(8, 16))
            );
            if soft == UNLIMITED {
                ok(
                    NAME,
                    format!("unlimited; the plan's rings pin {} ({what})", bytes(need)),
                )
            } else if need > soft {
                not_ok(
                    NAME,
                    Status::Fail,
                    format!(
                        "the plan's rings pin {} of locked memory ({what}) but the \
                         RLIMIT_MEMLOCK soft limit is {}",
                        bytes(need),
                        bytes(soft)
                    ),
                    raise(need),
                )
            } else if need.saturating_mul(4) > soft.saturating_mul(3) {
                not_ok(
                    NAME,
                    Status::Warn,
                    format!(
                        "the plan's rings pin {} ({what}) of the {} RLIMIT_MEMLOCK allows, and \
                         every io_uring of this user counts against the same limit",
                        bytes(need),
                        bytes(soft)
                    ),
                    raise(need.saturating_mul(2)),
                )
            } else {
                ok(
                    NAME,
                    format!(
                        "the plan's rings pin {} ({what}) of the {} RLIMIT_MEMLOCK allows \
                         (counted per user)",
                        bytes(need),
                        bytes(soft)
                    ),
                )
            }
        }
        None if setup_short => not_ok(
            NAME,
            if on_uring { Status::Fail } else { Status::Warn },
            format!(
                "io_uring_setup itself fails with ENOMEM: the RLIMIT_MEMLOCK soft limit {} is \
                 too small",
                bytes(soft)
            ),
            raise(needs.locked_bytes()),
        ),
        None => not_ok(
            NAME,
            Status::Warn,
            format!(
                "soft limit {}; whether io_uring charges it is not known (io_uring_setup failed)",
                bytes(soft)
            ),
            "see io_uring_setup",
        ),
    }
}

fn open_files(facts: &Facts, needs: &Needs) -> Check {
    const NAME: &str = "open_files";
    let (soft, hard) = (facts.nofile.soft, facts.nofile.hard);
    // What the engine raises the soft limit to at start.
    let (limit, limit_is) = if hard == UNLIMITED {
        let cap = facts.nr_open.unwrap_or(soft);
        (
            cap,
            format!("fs.nr_open ({cap}) caps the unlimited hard limit"),
        )
    } else {
        (hard, format!("the hard limit is {hard}"))
    };
    let f = needs.fds;
    let counted = format!(
        "{} listening sockets, {} for {} shard(s), {} for the process, {} kept for connections",
        f.listening, f.per_shard, needs.shards, f.process, f.reserve
    );
    let show = |v: u64| {
        if v == UNLIMITED {
            "unlimited".to_owned()
        } else {
            v.to_string()
        }
    };
    if f.needed > limit {
        not_ok(
            NAME,
            Status::Fail,
            format!(
                "the plan needs {} file descriptors ({counted}) but {limit_is}",
                f.needed
            ),
            format!(
                "raise the hard limit to at least {n} (LimitNOFILE={n} in the systemd unit, \
                 `ulimit -Hn {n}` as root, or nofile in /etc/security/limits.conf), or bind \
                 fewer ports or run fewer shards",
                n = f.needed
            ),
        )
    } else {
        ok(
            NAME,
            format!(
                "soft {}, hard {}; the plan needs {} ({counted}); ringport raises the soft limit \
                 to {limit} at start, leaving {} for connections",
                show(soft),
                show(hard),
                f.needed,
                limit - (f.needed - f.reserve)
            ),
        )
    }
}

fn rmem_max(facts: &Facts, needs: &Needs) -> Check {
    const NAME: &str = "rmem_max";
    let ask = needs.udp_rcvbuf as u64;
    match facts.rmem_max {
        _ if needs.udp_listeners == 0 => ok(
            NAME,
            "no UDP listener in the plan: --udp-rcvbuf is not used".to_owned(),
        ),
        None => not_ok(
            NAME,
            Status::Warn,
            "cannot read net.core.rmem_max".to_owned(),
            "check /proc/sys/net/core/rmem_max",
        ),
        Some(max) if ask > max => not_ok(
            NAME,
            Status::Warn,
            format!(
                "--udp-rcvbuf asks {ask} bytes but net.core.rmem_max is {max}: UDP sockets get \
                 {max}, and bursts beyond it are dropped"
            ),
            format!(
                "sysctl -w net.core.rmem_max={ask} (and persist it in /etc/sysctl.d/), or lower \
                 udp_rcvbuf to {max}"
            ),
        ),
        Some(max) => ok(
            NAME,
            format!("net.core.rmem_max is {max}: the {ask} bytes --udp-rcvbuf asks fit"),
        ),
    }
}

fn cpus(facts: &Facts, needs: &Needs) -> Check {
    const NAME: &str = "cpus";
    let allowed = &facts.allowed_cpus;
    if allowed.is_empty() {
        return not_ok(
            NAME,
            Status::Fail,
            "cannot read the CPUs this process may use (sched_getaffinity)".to_owned(),
            "check `taskset -p $$`",
        );
    }
    let allowed_list = format_cpus(allowed);
    if let Some(asked) = &needs.cpus_asked {
        if let Some(cpu) = asked.iter().find(|c| !allowed.contains(c)) {
            return not_ok(
                NAME,
                Status::Fail,
                format!(
                    "--cpus {asked} names CPU {cpu}, which this process may not use (it may \
                     use {allowed_list})"
                ),
                format!(
                    "name CPUs among {allowed_list} in --cpus, or widen the process's affinity \
                     (taskset, the cgroup cpuset)"
                ),
            );
        }
    }
    let n = needs.plan_cpus.len();
    let used = format_cpus(&needs.plan_cpus);
    if needs.shards > n {
        return not_ok(
            NAME,
            Status::Warn,
            format!(
                "{} shards on {n} CPU(s) ({used}): shards share CPUs, each getting a fraction",
                needs.shards
            ),
            format!("run at most {n} shard(s) (--shards {n}), or give the process more CPUs"),
        );
    }
    ok(
        NAME,
        format!(
            "{} shard(s) on CPU(s) {used}, of the allowed {allowed_list}",
            needs.shards
        ),
    )
}

fn backend(facts: &Facts, needs: &Needs) -> Check {
    const NAME: &str = "backend";
    let auto = auto_choice(facts);
    match (needs.backend, auto) {
        (BackendChoice::Auto, Auto::IoUring) => ok(NAME, "auto would pick io_uring".to_owned()),
        (BackendChoice::Auto, Auto::Epoll(c)) => not_ok(
            NAME,
            Status::Warn,
            format!("auto would pick epoll: {}", c.why),
            c.fix,
        ),
        (BackendChoice::Auto, Auto::Failing(c)) => not_ok(
            NAME,
            Status::Fail,
            format!("auto would stay on io_uring, which fails here: {}", c.why),
            c.fix,
        ),
        (BackendChoice::IoUring, Auto::IoUring) => {
            ok(NAME, "io_uring, as --backend io-uring asks".to_owned())
        }
        (BackendChoice::IoUring, Auto::Epoll(c)) => not_ok(
            NAME,
            Status::Fail,
            format!("--backend io-uring, but io_uring fails here: {}", c.why),
            format!("{}; or run with --backend auto or epoll", c.fix),
        ),
        (BackendChoice::IoUring, Auto::Failing(c)) => not_ok(
            NAME,
            Status::Fail,
            format!("--backend io-uring, but io_uring fails here: {}", c.why),
            c.fix,
        ),
        (BackendChoice::Epoll, Auto::IoUring) => ok(
            NAME,
            "epoll, as --backend epoll asks (auto would pick io_uring)".to_owned(),
        ),
        (BackendChoice::Epoll, Auto::Epoll(c) | Auto::Failing(c)) => ok(
            NAME,
            format!(
                "epoll, as --backend epoll asks (io_uring would not work: {})",
                c.why
            ),
        ),
    }
}
