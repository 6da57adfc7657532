//! Every check kind forced with made-up facts, with the exact verdicts.

use super::*;
use crate::config::BackendKind;
use crate::plan::{Mode, PlanRequest};

const NAMES: [&str; 15] = [
    "kernel",
    "io_uring_setup",
    "io_uring_ops",
    "buffer_rings",
    "multishot_recv",
    "min_wait",
    "msg_ring",
    "registered_ring_fd",
    "seccomp",
    "io_uring_disabled",
    "memlock",
    "open_files",
    "rmem_max",
    "cpus",
    "backend",
];

/// A Linux 6.18 machine where everything works, as an unprivileged user.
fn healthy() -> Facts {
    Facts {
        kernel: "6.18.44-test".to_owned(),
        uring: UringFacts {
            setup: Outcome::Ok,
            refused_flags: Vec::new(),
            opcodes: Outcome::Ok,
            buffer_ring: Outcome::Ok,
            multishot_recv: Outcome::Ok,
            min_wait: Outcome::Ok,
            msg_ring: Outcome::Ok,
            registered_ring_fd: Outcome::Ok,
            memlock_charged: Some(true),
        },
        seccomp: Some(0),
        io_uring_disabled: Some(0),
        io_uring_group: None,
        in_io_uring_group: false,
        cap_sys_admin: false,
        cap_ipc_lock: false,
        memlock: Rlimit {
            soft: 8 << 20,
            hard: 8 << 20,
        },
        nofile: Rlimit {
            soft: 1024,
            hard: 20000,
        },
        nr_open: Some(1 << 20),
        rmem_max: Some(4 << 20),
        allowed_cpus: vec![0, 1],
    }
}

/// `ringport serve`'s default plan on two CPUs.
fn plan(listeners: &[&str], shards: usize, cpus: Vec<usize>) -> Plan {
    Plan::build(PlanRequest {
        listeners: listeners.iter().map(|s| s.parse().unwrap()).collect(),
        shards,
        cpus,
        mode: Mode::Range,
        allow_idle_shards: false,
    })
    .unwrap()
}

const DEFAULT_LISTENERS: [&str; 4] = [
    "echo@tcp:127.0.0.1:7000-7063",
    "echo@udp:127.0.0.1:7000-7063",
    "sockperf@tcp:127.0.0.1:11111-11174",
    "sockperf@udp:127.0.0.1:11111-11174",
];

fn default_needs() -> Needs {
    Needs::new(
        &plan(&DEFAULT_LISTENERS, 2, vec![0, 1]),
        &EngineConfig::default(),
        None,
    )
}

/// [`default_needs`] with `--backend` set.
fn needs_on(backend: BackendChoice) -> Needs {
    Needs {
        backend,
        ..default_needs()
    }
}

fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check `{name}`"))
}

/// The checks that are not ok, by name and status.
fn not_ok(checks: &[Check]) -> Vec<(&'static str, Status)> {
    checks
        .iter()
        .filter(|c| c.status != Status::Ok)
        .map(|c| (c.name, c.status))
        .collect()
}

fn fix(checks: &[Check], name: &str) -> String {
    find(checks, name)
        .fix
        .clone()
        .unwrap_or_else(|| panic!("`{name}` has no fix"))
}

#[test]
fn the_default_plan_needs() {
    let n = default_needs();
    assert_eq!(n.shards, 2);
    assert_eq!(n.plan_cpus, [0, 1]);
    assert_eq!(
        n.fds,
        FdNeed {
            listening: 256,
            per_shard: 4,
            process: 16,
            reserve: 64,
            needed: 340,
        }
    );
    assert_eq!(n.udp_listeners, 2);
    assert_eq!(n.udp_rcvbuf, 4 << 20);
    assert_eq!(n.backend, BackendChoice::Auto);
    // 34 pages of ring, 4 and 8 of buffer rings per shard; 2 for the probe.
    assert_eq!(n.shard_locked_bytes(), 46 * 4096);
    assert_eq!(n.locked_bytes(), (2 * 46 + 2) * 4096);
}

#[test]
fn locked_memory_as_the_kernel_counts_it() {
    // Measured on Linux 6.18 (see `ring_locked_bytes`).
    assert_eq!(ring_locked_bytes(8, 16), 2 * 4096);
    assert_eq!(ring_locked_bytes(1024, 4096), 34 * 4096);
    assert_eq!(ring_locked_bytes(4096, 16384), 133 * 4096);
    // Counts are rounded up to powers of two, and clamped.
    assert_eq!(ring_locked_bytes(1000, 4000), ring_locked_bytes(1024, 4096));
    assert_eq!(
        ring_locked_bytes(32768, 131072),
        ring_locked_bytes(32768, 65536)
    );
    assert_eq!(buffer_ring_locked_bytes(4), 4096);
    assert_eq!(buffer_ring_locked_bytes(1024), 4 * 4096);
    assert_eq!(buffer_ring_locked_bytes(2048), 8 * 4096);
}

#[test]
fn a_healthy_machine_is_all_ok() {
    let checks = judge(&healthy(), &default_needs());
    let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
    assert_eq!(names, NAMES);
    assert_eq!(not_ok(&checks), []);
    assert!(checks.iter().all(|c| c.fix.is_none()));
    assert_eq!(
        find(&checks, "open_files").detail,
        "soft 1024, hard 20000; the plan needs 340 (256 listening sockets, 4 for 2 shard(s), \
         16 for the process, 64 kept for connections); ringport raises the soft limit to 20000 \
         at start, leaving 19724 for connections"
    );
    assert_eq!(
        find(&checks, "memlock").detail,
        "the plan's rings pin 376 KiB (2 shard(s) x 184 KiB (1024-entry ring, 1024 and 2048 \
         buffer ring entries) and 8 KiB for the start-up probe) of the 8 MiB RLIMIT_MEMLOCK \
         allows (counted per user)"
    );
    assert_eq!(
        find(&checks, "cpus").detail,
        "2 shard(s) on CPU(s) 0-1, of the allowed 0-1"
    );
    assert_eq!(
        find(&checks, "rmem_max").detail,
        "net.core.rmem_max is 4194304: the 4194304 bytes --udp-rcvbuf asks fit"
    );
    assert_eq!(find(&checks, "backend").detail, "auto would pick io_uring");
    assert_eq!(auto_backend(&healthy()), (BackendKind::IoUring, None));
    // The backend asked for is named.
    let checks = judge(&healthy(), &needs_on(BackendChoice::IoUring));
    assert_eq!(not_ok(&checks), []);
    assert_eq!(
        find(&checks, "backend").detail,
        "io_uring, as --backend io-uring asks"
    );
    let checks = judge(&healthy(), &needs_on(BackendChoice::Epoll));
    assert_eq!(not_ok(&checks), []);
    assert_eq!(
        find(&checks, "backend").detail,
        "epoll, as --backend epoll asks (auto would pick io_uring)"
    );
    assert_eq!(
        find(&checks, "memlock").detail,
        "soft limit 8 MiB; not needed: the epoll backend pins no io_uring memory"
    );
}

#[test]
fn an_old_kernel() {
    let mut f = healthy();
    f.kernel = "5.10.0-28-amd64".to_owned();
    f.uring.opcodes = Outcome::Missing(
        "multishot accept/recv and provided buffer rings (probed by version)".to_owned(),
    );
    f.uring.min_wait = Outcome::Missing("IORING_FEAT_MIN_TIMEOUT is absent".to_owned());
    f.uring.msg_ring = Outcome::Errno(libc::EINVAL);
    // auto falls back to epoll: the io_uring checks warn.
    let checks = judge(&f, &default_needs());
    assert_eq!(
        not_ok(&checks),
        [
            ("kernel", Status::Warn),
            ("io_uring_ops", Status::Warn),
            ("msg_ring", Status::Warn),
            ("backend", Status::Warn),
        ]
    );
    // Asked for io_uring, they fail.
    let checks = judge(&f, &needs_on(BackendChoice::IoUring));
    assert_eq!(
        not_ok(&checks),
        [
            ("kernel", Status::Fail),
            ("io_uring_ops", Status::Fail),
            ("msg_ring", Status::Warn),
            ("backend", Status::Fail),
        ]
    );
    let kernel = find(&checks, "kernel");
    assert_eq!(
        kernel.detail,
        "Linux 5.10.0-28-amd64 is older than the 6.1 ringport's io_uring backend needs"
    );
    assert_eq!(
        fix(&checks, "kernel"),
        "upgrade to Linux 6.1 or newer (6.12 for --batch-delay-us)"
    );
    assert_eq!(
        fix(&checks, "io_uring_ops"),
        "upgrade to Linux 6.1 or newer"
    );
    assert_eq!(
        find(&checks, "msg_ring").detail,
        "IORING_OP_MSG_RING fails with EINVAL (Invalid argument): parked shards are woken by \
         an eventfd write instead (a syscall more per wake-up)"
    );
    assert_eq!(
        find(&checks, "min_wait").detail,
        "min-wait batching does not work: IORING_FEAT_MIN_TIMEOUT is absent (Linux 6.12); only \
         --batch-delay-us needs it, and it is 0"
    );
    assert_eq!(
        auto_backend(&f),
        (
            BackendKind::Epoll,
            Some(
                "Linux 5.10.0-28-amd64 is older than the 6.1 ringport's io_uring backend needs; \
                 to get io_uring back: upgrade to Linux 6.1 or newer"
                    .to_owned()
            )
        )
    );
    // An unreadable release only warns; the probes decide.
    let mut f = healthy();
    f.kernel = "custom".to_owned();
    let checks = judge(&f, &default_needs());
    assert_eq!(not_ok(&checks), [("kernel", Status::Warn)]);
    assert_eq!(auto_backend(&f).0, BackendKind::IoUring);
}

#[test]
fn io_uring_disabled_2() {
    let mut f = healthy();
    f.io_uring_disabled = Some(2);
    f.uring = UringFacts::setup_failed(libc::EPERM);
    // auto falls back to epoll: warnings only, and locked memory is not needed.
    let checks = judge(&f, &default_needs());
    assert_eq!(
        not_ok(&checks),
        [
            ("io_uring_setup", Status::Warn),
            ("io_uring_ops", Status::Warn),
            ("buffer_rings", Status::Warn),
            ("multishot_recv", Status::Warn),
            ("min_wait", Status::Warn),
            ("msg_ring", Status::Warn),
            ("registered_ring_fd", Status::Warn),
            ("io_uring_disabled", Status::Warn),
            ("backend", Status::Warn),
        ]
    );
    assert_eq!(
        find(&checks, "io_uring_setup").detail,
        "fails with EPERM (Operation not permitted): kernel.io_uring_disabled is 2: io_uring \
         is off for every process"
    );
    let off = "sysctl -w kernel.io_uring_disabled=0 (and persist it in /etc/sysctl.d/)";
    assert_eq!(fix(&checks, "io_uring_setup"), off);
    assert_eq!(
        find(&checks, "io_uring_disabled").detail,
        "2: io_uring is off for every process"
    );
    assert_eq!(fix(&checks, "io_uring_disabled"), off);
    for name in ["io_uring_ops", "buffer_rings", "multishot_recv", "msg_ring"] {
        let c = find(&checks, name);
        assert_eq!(c.detail, "not probed: io_uring_setup failed", "{name}");
        assert_eq!(c.fix.as_deref(), Some("see io_uring_setup"), "{name}");
    }
    assert_eq!(
        auto_backend(&f),
        (
            BackendKind::Epoll,
            Some(
                "io_uring_setup fails with EPERM (Operation not permitted): \
                 kernel.io_uring_disabled is 2: io_uring is off for every process; to get \
                 io_uring back: sysctl -w kernel.io_uring_disabled=0 (and persist it in \
                 /etc/sysctl.d/)"
                    .to_owned()
            )
        )
    );
    // Asked for io_uring: it fails.
    let checks = judge(&f, &needs_on(BackendChoice::IoUring));
    assert_eq!(
        not_ok(&checks),
        [
            ("io_uring_setup", Status::Fail),
            ("io_uring_ops", Status::Warn),
            ("buffer_rings", Status::Warn),
            ("multishot_recv", Status::Warn),
            ("min_wait", Status::Warn),
            ("msg_ring", Status::Warn),
            ("registered_ring_fd", Status::Warn),
            ("io_uring_disabled", Status::Fail),
            ("memlock", Status::Warn),
            ("backend", Status::Fail),
        ]
    );
    assert_eq!(
        find(&checks, "memlock").detail,
        "soft limit 8 MiB; whether io_uring charges it is not known (io_uring_setup failed)"
    );
    assert_eq!(
        find(&checks, "backend").detail,
        "--backend io-uring, but io_uring fails here: io_uring_setup fails with EPERM \
         (Operation not permitted): kernel.io_uring_disabled is 2: io_uring is off for every \
         process"
    );
    assert_eq!(
        fix(&checks, "backend"),
        format!("{off}; or run with --backend auto or epoll")
    );
    // With --backend epoll it only says what io_uring would do.
    let checks = judge(&f, &needs_on(BackendChoice::Epoll));
    assert_eq!(find(&checks, "backend").status, Status::Ok);
    assert_eq!(
        find(&checks, "backend").detail,
        "epoll, as --backend epoll asks (io_uring would not work: io_uring_setup fails with \
         EPERM (Operation not permitted): kernel.io_uring_disabled is 2: io_uring is off for \
         every process)"
    );
    // The sysctl refuses for certain, so seccomp is not blamed even with a filter.
    f.seccomp = Some(2);
    let checks = judge(&f, &default_needs());
    assert_eq!(find(&checks, "seccomp").status, Status::Ok);
    assert_eq!(fix(&checks, "backend"), off);
}

#[test]
fn io_uring_disabled_1() {
    let mut f = healthy();
    f.io_uring_disabled = Some(1);
    f.io_uring_group = Some(1234);
    f.uring = UringFacts::setup_failed(libc::EPERM);
    let checks = judge(&f, &needs_on(BackendChoice::IoUring));
    let c = find(&checks, "io_uring_disabled");
    assert_eq!(
        (c.status, c.detail.as_str(), c.fix.as_deref()),
        (
            Status::Fail,
            "1: io_uring is limited to kernel.io_uring_group (1234) and CAP_SYS_ADMIN, and this \
             process has neither",
            Some("sysctl -w kernel.io_uring_disabled=0, or add the user to kernel.io_uring_group")
        )
    );
    assert_eq!(
        auto_backend(&f).1.unwrap(),
        "io_uring_setup fails with EPERM (Operation not permitted): kernel.io_uring_disabled is \
         1 and this process is neither in kernel.io_uring_group nor CAP_SYS_ADMIN; to get \
         io_uring back: sysctl -w kernel.io_uring_disabled=0, or add the user to \
         kernel.io_uring_group"
    );
    // In the group, or with CAP_SYS_ADMIN, io_uring works and all is well.
    let mut f = healthy();
    f.io_uring_disabled = Some(1);
    f.io_uring_group = Some(1234);
    f.in_io_uring_group = true;
    let checks = judge(&f, &default_needs());
    assert_eq!(not_ok(&checks), []);
    assert_eq!(
        find(&checks, "io_uring_disabled").detail,
        "1: io_uring is limited to kernel.io_uring_group (1234) and CAP_SYS_ADMIN; this \
         process is in the group"
    );
    f.in_io_uring_group = false;
    f.io_uring_group = None;
    f.cap_sys_admin = true;
    let checks = judge(&f, &default_needs());
    assert_eq!(
        find(&checks, "io_uring_disabled").detail,
        "1: io_uring is limited to kernel.io_uring_group (none set) and CAP_SYS_ADMIN; this \
         process has CAP_SYS_ADMIN"
    );
    // Before 6.6 there is no switch.
    let mut f = healthy();
    f.io_uring_disabled = None;
    assert_eq!(not_ok(&judge(&f, &default_needs())), []);
}

const SECCOMP_FIX: &str = "run with a seccomp profile that allows io_uring_setup, \
     io_uring_enter and io_uring_register, e.g. docker run --security-opt seccomp=PROFILE.json";

#[test]
fn a_seccomp_filter_that_blocks_io_uring() {
    let mut f = healthy();
    f.seccomp = Some(2);
    f.uring = UringFacts::setup_failed(libc::EPERM);
    // auto serves on epoll: warnings.
    let checks = judge(&f, &default_needs());
    assert_eq!(
        not_ok(&checks),
        [
            ("io_uring_setup", Status::Warn),
            ("io_uring_ops", Status::Warn),
            ("buffer_rings", Status::Warn),
            ("multishot_recv", Status::Warn),
            ("min_wait", Status::Warn),
            ("msg_ring", Status::Warn),
            ("registered_ring_fd", Status::Warn),
            ("seccomp", Status::Warn),
            ("backend", Status::Warn),
        ]
    );
    let seccomp = find(&checks, "seccomp");
    assert_eq!(
        seccomp.detail,
        "mode 2: a seccomp filter is installed and io_uring_setup fails with EPERM (Operation \
         not permitted): the filter blocks io_uring"
    );
    assert_eq!(seccomp.fix.as_deref(), Some(SECCOMP_FIX));
    assert_eq!(
        find(&checks, "io_uring_setup").detail,
        "fails with EPERM (Operation not permitted): this process runs under a seccomp filter \
         (mode 2) that refuses io_uring, as container runtimes' default profiles do"
    );
    assert_eq!(fix(&checks, "io_uring_setup"), SECCOMP_FIX);
    let reason = "io_uring_setup fails with EPERM (Operation not permitted): this process runs \
                  under a seccomp filter (mode 2) that refuses io_uring, as container runtimes' \
                  default profiles do";
    assert_eq!(
        find(&checks, "backend").detail,
        format!("auto would pick epoll: {reason}")
    );
    assert_eq!(fix(&checks, "backend"), SECCOMP_FIX);
    assert_eq!(
        auto_backend(&f),
        (
            BackendKind::Epoll,
            Some(format!("{reason}; to get io_uring back: {SECCOMP_FIX}"))
        )
    );
    // Asked for io_uring, the same checks fail.
    let checks = judge(&f, &needs_on(BackendChoice::IoUring));
    assert_eq!(
        not_ok(&checks),
        [
            ("io_uring_setup", Status::Fail),
            ("io_uring_ops", Status::Warn),
            ("buffer_rings", Status::Warn),
            ("multishot_recv", Status::Warn),
            ("min_wait", Status::Warn),
            ("msg_ring", Status::Warn),
            ("registered_ring_fd", Status::Warn),
            ("seccomp", Status::Fail),
            ("memlock", Status::Warn),
            ("backend", Status::Fail),
        ]
    );
    assert_eq!(
        find(&checks, "backend").detail,
        format!("--backend io-uring, but io_uring fails here: {reason}")
    );
}

#[test]
fn a_seccomp_filter_that_blocks_only_io_uring_register() {
    let mut f = healthy();
    // What the probes find when only io_uring_register is refused.
    f.seccomp = Some(2);
    f.uring.opcodes = Outcome::Errno(libc::EPERM);
    f.uring.buffer_ring = Outcome::Errno(libc::EPERM);
    f.uring.multishot_recv = Outcome::NotProbed;
    f.uring.registered_ring_fd =
        Outcome::Missing("IORING_REGISTER_RING_FDS registered nothing".to_owned());
    // The engine's probe fails with an error it does not fall back for, so
    // auto stays on io_uring and serve stops: failures.
    let checks = judge(&f, &default_needs());
    assert_eq!(
        not_ok(&checks),
        [
            ("io_uring_ops", Status::Fail),
            ("buffer_rings", Status::Fail),
            ("multishot_recv", Status::Warn),
            ("registered_ring_fd", Status::Warn),
            ("seccomp", Status::Fail),
            ("backend", Status::Fail),
        ]
    );
    assert_eq!(
        find(&checks, "seccomp").detail,
        "mode 2: a seccomp filter is installed and probing the opcodes (IORING_REGISTER_PROBE) \
         fails with EPERM (Operation not permitted): the filter blocks io_uring"
    );
    assert_eq!(
        find(&checks, "io_uring_ops").detail,
        "probing the opcodes fails with EPERM (Operation not permitted): this process runs \
         under a seccomp filter (mode 2) that refuses io_uring, as container runtimes' default \
         profiles do"
    );
    assert_eq!(
        find(&checks, "buffer_rings").detail,
        "registering a provided buffer ring fails with EPERM (Operation not permitted): this \
         process runs under a seccomp filter (mode 2) that refuses io_uring, as container \
         runtimes' default profiles do"
    );
    let why = "probing the opcodes (IORING_REGISTER_PROBE) fails with EPERM (Operation not \
               permitted): this process runs under a seccomp filter (mode 2) that refuses \
               io_uring, as container runtimes' default profiles do";
    assert_eq!(
        find(&checks, "backend").detail,
        format!("auto would stay on io_uring, which fails here: {why}")
    );
    assert_eq!(
        fix(&checks, "backend"),
        format!("{SECCOMP_FIX}; or run with --backend epoll")
    );
    assert_eq!(
        auto_backend(&f),
        (
            BackendKind::IoUring,
            Some(format!(
                "{why}; fix: {SECCOMP_FIX}; or run with --backend epoll"
            ))
        )
    );
    assert_eq!(
        find(&checks, "multishot_recv").detail,
        "not probed: buffer_rings failed"
    );
    assert_eq!(
        find(&checks, "registered_ring_fd").detail,
        "IORING_REGISTER_RING_FDS does not work: IORING_REGISTER_RING_FDS registered nothing: \
         every io_uring_enter looks the ring fd up (a little slower)"
    );
    assert_eq!(fix(&checks, "buffer_rings"), SECCOMP_FIX);
    // A filter that lets io_uring through is fine.
    let mut f = healthy();
    f.seccomp = Some(2);
    let checks = judge(&f, &default_needs());
    assert_eq!(not_ok(&checks), []);
    assert_eq!(
        find(&checks, "seccomp").detail,
        "mode 2: a seccomp filter is installed, and it lets io_uring through"
    );
    // Strict mode leaves no room for anything.
    f.seccomp = Some(1);
    let checks = judge(&f, &default_needs());
    assert_eq!(not_ok(&checks), [("seccomp", Status::Fail)]);
    assert_eq!(
        fix(&checks, "seccomp"),
        "run ringport without seccomp strict mode"
    );
}

#[test]
fn a_kernel_without_io_uring() {
    let mut f = healthy();
    f.uring = UringFacts::setup_failed(libc::ENOSYS);
    let checks = judge(&f, &default_needs());
    let c = find(&checks, "io_uring_setup");
    assert_eq!(
        (c.status, c.detail.as_str(), c.fix.as_deref()),
        (
            Status::Warn,
            "fails with ENOSYS (Function not implemented): the kernel was built without \
             io_uring (CONFIG_IO_URING)",
            Some("run a kernel with io_uring: Linux 6.1 or newer")
        )
    );
    assert_eq!(find(&checks, "seccomp").status, Status::Ok);
    assert_eq!(auto_backend(&f).0, BackendKind::Epoll);
    // ENOSYS under a filter may be the filter.
    f.seccomp = Some(2);
    let checks = judge(&f, &default_needs());
    assert_eq!(
        find(&checks, "io_uring_setup").detail,
        "fails with ENOSYS (Function not implemented): the kernel has no io_uring, or this \
         process's seccomp filter (mode 2) answers ENOSYS for it"
    );
    assert_eq!(
        fix(&checks, "io_uring_setup"),
        format!("{SECCOMP_FIX}; or run a kernel built with io_uring (Linux 6.1 or newer)")
    );
    assert_eq!(find(&checks, "seccomp").status, Status::Warn);
    let checks = judge(&f, &needs_on(BackendChoice::IoUring));
    assert_eq!(find(&checks, "io_uring_setup").status, Status::Fail);
    assert_eq!(find(&checks, "seccomp").status, Status::Fail);
}

#[test]
fn too_little_locked_memory_for_io_uring_setup() {
    let mut f = healthy();
    f.memlock.soft = 4096;
    f.uring = UringFacts::setup_failed(libc::ENOMEM);
    // auto falls back to epoll; the memlock line says how to get io_uring back.
    let checks = judge(&f, &default_needs());
    assert_eq!(
        not_ok(&checks),
        [
            ("io_uring_setup", Status::Warn),
            ("io_uring_ops", Status::Warn),
            ("buffer_rings", Status::Warn),
            ("multishot_recv", Status::Warn),
            ("min_wait", Status::Warn),
            ("msg_ring", Status::Warn),
            ("registered_ring_fd", Status::Warn),
            ("memlock", Status::Warn),
            ("backend", Status::Warn),
        ]
    );
    let on_uring = judge(&f, &needs_on(BackendChoice::IoUring));
    assert_eq!(find(&on_uring, "memlock").status, Status::Fail);
    assert_eq!(find(&on_uring, "io_uring_setup").status, Status::Fail);
    assert_eq!(
        find(&checks, "memlock").detail,
        "io_uring_setup itself fails with ENOMEM: the RLIMIT_MEMLOCK soft limit 4 KiB is too \
         small"
    );
    assert_eq!(
        fix(&checks, "memlock"),
        "raise RLIMIT_MEMLOCK to at least 385024 bytes (`ulimit -l 376`, or \
         LimitMEMLOCK=385024 in the systemd unit), or lower ring_entries, tcp_bufs, udp_bufs \
         or shards"
    );
    assert_eq!(
        auto_backend(&f).1.unwrap(),
        "io_uring_setup fails with ENOMEM (Cannot allocate memory): not enough locked memory \
         (RLIMIT_MEMLOCK soft limit 4 KiB); to get io_uring back: raise RLIMIT_MEMLOCK (`ulimit \
         -l unlimited`, or LimitMEMLOCK=infinity in the systemd unit)"
    );
}

#[test]
fn each_needed_feature_missing() {
    let upgrade = "upgrade to Linux 6.1 or newer";
    // The opcodes.
    let mut f = healthy();
    f.uring.opcodes = Outcome::Missing("IORING_OP_RECV (multishot, 6.0)".to_owned());
    // The engine's probe names them, and auto falls back to epoll.
    let checks = judge(&f, &default_needs());
    assert_eq!(
        not_ok(&checks),
        [("io_uring_ops", Status::Warn), ("backend", Status::Warn)]
    );
    assert_eq!(
        find(&checks, "io_uring_ops").detail,
        "this kernel's io_uring lacks IORING_OP_RECV (multishot, 6.0)"
    );
    assert_eq!(fix(&checks, "io_uring_ops"), upgrade);
    assert_eq!(
        auto_backend(&f),
        (
            BackendKind::Epoll,
            Some(
                "this kernel's io_uring lacks IORING_OP_RECV (multishot, 6.0); to get io_uring \
                 back: upgrade to Linux 6.1 or newer"
                    .to_owned()
            )
        )
    );
    assert_eq!(
        not_ok(&judge(&f, &needs_on(BackendChoice::IoUring))),
        [("io_uring_ops", Status::Fail), ("backend", Status::Fail)]
    );
    // Provided buffer rings (5.19).
    let mut f = healthy();
    f.uring.buffer_ring = Outcome::Errno(libc::EINVAL);
    f.uring.multishot_recv = Outcome::NotProbed;
    // The engine's probe passes, so auto stays on io_uring and shards fail.
    let checks = judge(&f, &default_needs());
    assert_eq!(
        not_ok(&checks),
        [
            ("buffer_rings", Status::Fail),
            ("multishot_recv", Status::Warn),
            ("backend", Status::Fail),
        ]
    );
    assert_eq!(
        find(&checks, "backend").detail,
        "auto would stay on io_uring, which fails here: registering a provided buffer ring \
         fails with EINVAL (Invalid argument): this kernel's io_uring lacks provided buffer \
         rings (IORING_REGISTER_PBUF_RING, Linux 5.19)"
    );
    assert_eq!(
        fix(&checks, "backend"),
        "upgrade to Linux 6.1 or newer; or run with --backend epoll"
    );
    assert_eq!(
        find(&checks, "buffer_rings").detail,
        "registering a provided buffer ring fails with EINVAL (Invalid argument): this kernel's \
         io_uring lacks provided buffer rings (IORING_REGISTER_PBUF_RING, Linux 5.19)"
    );
    assert_eq!(fix(&checks, "buffer_rings"), upgrade);
    assert_eq!(fix(&checks, "multishot_recv"), "see buffer_rings");
    // Multishot receive that does not stay armed, or fails.
    let mut f = healthy();
    f.uring.multishot_recv = Outcome::Missing(
        "the first completion ended the receive (no IORING_CQE_F_MORE)".to_owned(),
    );
    let checks = judge(&f, &default_needs());
    assert_eq!(
        not_ok(&checks),
        [("multishot_recv", Status::Fail), ("backend", Status::Fail)]
    );
    assert_eq!(
        find(&checks, "multishot_recv").detail,
        "a multishot receive does not stay armed: the first completion ended the receive (no \
         IORING_CQE_F_MORE)"
    );
    f.uring.multishot_recv = Outcome::Errno(libc::EINVAL);
    assert_eq!(
        auto_backend(&f),
        (
            BackendKind::IoUring,
            Some(
                "a multishot receive fails with EINVAL (Invalid argument): this kernel's \
                 io_uring lacks multishot receive with provided buffers (Linux 6.0); fix: \
                 upgrade to Linux 6.1 or newer; or run with --backend epoll"
                    .to_owned()
            )
        )
    );
    // Setup flags refused: runs, warns.
    let mut f = healthy();
    f.uring.refused_flags = vec!["IORING_SETUP_DEFER_TASKRUN", "IORING_SETUP_COOP_TASKRUN"];
    let checks = judge(&f, &default_needs());
    assert_eq!(not_ok(&checks), [("io_uring_setup", Status::Warn)]);
    assert_eq!(
        find(&checks, "io_uring_setup").detail,
        "works, but the kernel refused IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_COOP_TASKRUN: \
         shards run without"
    );
    assert_eq!(auto_backend(&f).0, BackendKind::IoUring);
}

#[test]
fn each_optional_feature_missing() {
    let mut f = healthy();
    f.uring.min_wait = Outcome::Missing("IORING_FEAT_MIN_TIMEOUT is absent".to_owned());
    f.uring.msg_ring = Outcome::Errno(libc::EINVAL);
    f.uring.registered_ring_fd = Outcome::Missing("registered nothing".to_owned());
    let mut needs = default_needs();
    needs.batch_delay_us = 100;
    let checks = judge(&f, &needs);
    assert_eq!(
        not_ok(&checks),
        [
            ("min_wait", Status::Warn),
            ("msg_ring", Status::Warn),
            ("registered_ring_fd", Status::Warn),
        ]
    );
    assert_eq!(
        find(&checks, "min_wait").detail,
        "min-wait batching does not work: IORING_FEAT_MIN_TIMEOUT is absent \
         (IORING_FEAT_MIN_TIMEOUT, Linux 6.12): --batch-delay-us 100 is ignored"
    );
    assert_eq!(
        fix(&checks, "min_wait"),
        "upgrade to Linux 6.12 or newer, or leave --batch-delay-us at 0"
    );
    assert_eq!(
        fix(&checks, "msg_ring"),
        "Linux 6.1 or newer has IORING_OP_MSG_RING"
    );
    assert_eq!(
        fix(&checks, "registered_ring_fd"),
        "Linux 5.18 or newer registers ring fds"
    );
    // None of them moves auto off io_uring.
    assert_eq!(auto_backend(&f), (BackendKind::IoUring, None));
    // MSG_RING does not matter with one shard or eventfd wake-ups.
    let mut one = Needs::new(
        &plan(&DEFAULT_LISTENERS, 1, vec![0]),
        &EngineConfig::default(),
        None,
    );
    assert_eq!(find(&judge(&f, &one), "msg_ring").status, Status::Ok);
    assert_eq!(
        find(&judge(&f, &one), "msg_ring").detail,
        "IORING_OP_MSG_RING fails with EINVAL (Invalid argument); not needed with one shard"
    );
    one.shards = 2;
    one.mesh_wake = MeshWake::Eventfd;
    assert_eq!(
        find(&judge(&f, &one), "msg_ring").detail,
        "IORING_OP_MSG_RING fails with EINVAL (Invalid argument); not needed with --mesh-wake \
         eventfd"
    );
}

#[test]
fn a_plan_over_the_open_files_hard_limit() {
    let mut f = healthy();
    f.nofile = Rlimit {
        soft: 100,
        hard: 300,
    };
    let checks = judge(&f, &default_needs());
    assert_eq!(not_ok(&checks), [("open_files", Status::Fail)]);
    let c = find(&checks, "open_files");
    assert_eq!(
        c.detail,
        "the plan needs 340 file descriptors (256 listening sockets, 4 for 2 shard(s), 16 for \
         the process, 64 kept for connections) but the hard limit is 300"
    );
    assert_eq!(
        c.fix.as_deref(),
        Some(
            "raise the hard limit to at least 340 (LimitNOFILE=340 in the systemd unit, `ulimit \
             -Hn 340` as root, or nofile in /etc/security/limits.conf), or bind fewer ports or \
             run fewer shards"
        )
    );
    // Exactly enough is enough: the soft limit is raised at start.
    f.nofile.hard = 340;
    let checks = judge(&f, &default_needs());
    assert_eq!(
        find(&checks, "open_files").detail,
        "soft 100, hard 340; the plan needs 340 (256 listening sockets, 4 for 2 shard(s), 16 \
         for the process, 64 kept for connections); ringport raises the soft limit to 340 at \
         start, leaving 64 for connections"
    );
    // An unlimited hard limit stops at fs.nr_open.
    f.nofile.hard = crate::limits::UNLIMITED;
    f.nr_open = Some(300);
    let checks = judge(&f, &default_needs());
    assert_eq!(
        find(&checks, "open_files").detail,
        "the plan needs 340 file descriptors (256 listening sockets, 4 for 2 shard(s), 16 for \
         the process, 64 kept for connections) but fs.nr_open (300) caps the unlimited hard \
         limit"
    );
}

#[test]
fn udp_rcvbuf_above_rmem_max() {
    let mut f = healthy();
    f.rmem_max = Some(212992);
    let checks = judge(&f, &default_needs());
    assert_eq!(not_ok(&checks), [("rmem_max", Status::Warn)]);
    let c = find(&checks, "rmem_max");
    assert_eq!(
        c.detail,
        "--udp-rcvbuf asks 4194304 bytes but net.core.rmem_max is 212992: UDP sockets get \
         212992, and bursts beyond it are dropped"
    );
    assert_eq!(
        c.fix.as_deref(),
        Some(
            "sysctl -w net.core.rmem_max=4194304 (and persist it in /etc/sysctl.d/), or lower \
             udp_rcvbuf to 212992"
        )
    );
    // Without UDP listeners it does not matter.
    let tcp_only = Needs::new(
        &plan(&["echo@tcp:127.0.0.1:7000-7063"], 2, vec![0, 1]),
        &EngineConfig::default(),
        None,
    );
    let checks = judge(&f, &tcp_only);
    assert_eq!(not_ok(&checks), []);
    assert_eq!(
        find(&checks, "rmem_max").detail,
        "no UDP listener in the plan: --udp-rcvbuf is not used"
    );
    f.rmem_max = None;
    assert_eq!(
        not_ok(&judge(&f, &default_needs())),
        [("rmem_max", Status::Warn)]
    );
}

#[test]
fn cpus_the_process_may_not_use() {
    let mut f = healthy();
    f.allowed_cpus = vec![0];
    let asked: CpuList = "0-1".parse().unwrap();
    let needs = Needs::new(
        &plan(&DEFAULT_LISTENERS, 2, vec![0, 1]),
        &EngineConfig::default(),
        Some(&asked),
    );
    let checks = judge(&f, &needs);
    assert_eq!(not_ok(&checks), [("cpus", Status::Fail)]);
    let c = find(&checks, "cpus");
    assert_eq!(
        c.detail,
        "--cpus 0-1 names CPU 1, which this process may not use (it may use 0)"
    );
    assert_eq!(
        c.fix.as_deref(),
        Some(
            "name CPUs among 0 in --cpus, or widen the process's affinity (taskset, the cgroup \
             cpuset)"
        )
    );
    // More shards than CPUs share them.
    let four = Needs::new(
        &plan(&DEFAULT_LISTENERS, 4, vec![0, 1]),
        &EngineConfig::default(),
        None,
    );
    let checks = judge(&healthy(), &four);
    assert_eq!(not_ok(&checks), [("cpus", Status::Warn)]);
    assert_eq!(
        find(&checks, "cpus").detail,
        "4 shards on 2 CPU(s) (0-1): shards share CPUs, each getting a fraction"
    );
    assert_eq!(
        fix(&checks, "cpus"),
        "run at most 2 shard(s) (--shards 2), or give the process more CPUs"
    );
    // An unreadable affinity.
    let mut f = healthy();
    f.allowed_cpus.clear();
    assert_eq!(
        not_ok(&judge(&f, &default_needs())),
        [("cpus", Status::Fail)]
    );
}

#[test]
fn locked_memory_against_the_plan() {
    // 4096-entry rings: 133 + 4 + 8 pages per shard, one shard, 2 for the probe.
    let config = EngineConfig {
        ring_entries: 4096,
        ..EngineConfig::default()
    };
    let needs = Needs::new(&plan(&DEFAULT_LISTENERS, 1, vec![0]), &config, None);
    assert_eq!(needs.locked_bytes(), 147 * 4096);
    let mut f = healthy();
    f.memlock.soft = 128 << 10;
    let checks = judge(&f, &needs);
    assert_eq!(not_ok(&checks), [("memlock", Status::Fail)]);
    // On epoll no ring is pinned.
    let on_epoll = Needs {
        backend: BackendChoice::Epoll,
        ..needs.clone()
    };
    assert_eq!(not_ok(&judge(&f, &on_epoll)), []);
    let c = find(&checks, "memlock");
    assert_eq!(
        c.detail,
        "the plan's rings pin 588 KiB of locked memory (1 shard(s) x 580 KiB (4096-entry ring, \
         1024 and 2048 buffer ring entries) and 8 KiB for the start-up probe) but the \
         RLIMIT_MEMLOCK soft limit is 128 KiB"
    );
    assert_eq!(
        c.fix.as_deref(),
        Some(
            "raise RLIMIT_MEMLOCK to at least 602112 bytes (`ulimit -l 588`, or \
             LimitMEMLOCK=602112 in the systemd unit), or lower ring_entries, tcp_bufs, \
             udp_bufs or shards"
        )
    );
    // Within a quarter of the limit: a warning, since the limit is per user.
    f.memlock.soft = 700 << 10;
    let checks = judge(&f, &needs);
    assert_eq!(not_ok(&checks), [("memlock", Status::Warn)]);
    assert_eq!(
        fix(&checks, "memlock"),
        "raise RLIMIT_MEMLOCK to at least 1204224 bytes (`ulimit -l 1176`, or \
         LimitMEMLOCK=1204224 in the systemd unit), or lower ring_entries, tcp_bufs, udp_bufs \
         or shards"
    );
    f.memlock.soft = 1 << 20;
    assert_eq!(not_ok(&judge(&f, &needs)), []);
    f.memlock.soft = crate::limits::UNLIMITED;
    assert_eq!(not_ok(&judge(&f, &needs)), []);
    // Where rings are not charged, the limit does not matter.
    f.memlock.soft = 0;
    f.uring.memlock_charged = Some(false);
    f.cap_ipc_lock = true;
    let checks = judge(&f, &needs);
    assert_eq!(not_ok(&checks), []);
    assert_eq!(
        find(&checks, "memlock").detail,
        "soft limit 0 bytes; io_uring charges nothing to it here (this process has CAP_IPC_LOCK)"
    );
    f.cap_ipc_lock = false;
    assert_eq!(
        find(&judge(&f, &needs), "memlock").detail,
        "soft limit 0 bytes; io_uring charges nothing to it here (this kernel does not charge \
         rings to it)"
    );
}

#[test]
fn another_refusal_is_not_blamed_on_seccomp_or_the_sysctl() {
    let mut f = healthy();
    f.uring = UringFacts::setup_failed(libc::EPERM);
    let checks = judge(&f, &default_needs());
    assert_eq!(
        find(&checks, "io_uring_setup").detail,
        "fails with EPERM (Operation not permitted): neither seccomp nor \
         kernel.io_uring_disabled explains it, so a security module (SELinux, AppArmor) may \
         deny io_uring"
    );
    assert_eq!(find(&checks, "seccomp").status, Status::Ok);
    assert_eq!(find(&checks, "io_uring_disabled").status, Status::Ok);
    assert_eq!(auto_backend(&f).0, BackendKind::Epoll);
    // An errno nobody expects is named as such, and auto does not fall
    // back for it (nor does the engine): serve stops.
    f.uring = UringFacts::setup_failed(libc::EINVAL);
    f.seccomp = Some(2);
    let checks = judge(&f, &default_needs());
    assert_eq!(
        not_ok(&checks),
        [
            ("io_uring_setup", Status::Fail),
            ("io_uring_ops", Status::Warn),
            ("buffer_rings", Status::Warn),
            ("multishot_recv", Status::Warn),
            ("min_wait", Status::Warn),
            ("msg_ring", Status::Warn),
            ("registered_ring_fd", Status::Warn),
            ("memlock", Status::Warn),
            ("backend", Status::Fail),
        ]
    );
    assert_eq!(
        find(&checks, "io_uring_setup").detail,
        "fails with EINVAL (Invalid argument): ringport does not expect this error here"
    );
    assert_eq!(
        fix(&checks, "backend"),
        "check the kernel log (dmesg); ringport needs Linux 6.1 or newer with io_uring \
         enabled; or run with --backend epoll"
    );
    assert_eq!(
        find(&checks, "seccomp").detail,
        "mode 2: a seccomp filter is installed; io_uring_setup fails for another reason"
    );
    f.uring = UringFacts::setup_failed(4095);
    assert_eq!(
        find(&judge(&f, &default_needs()), "io_uring_setup").detail,
        "fails with errno 4095 (Unknown error 4095): ringport does not expect this error here"
    );
}
