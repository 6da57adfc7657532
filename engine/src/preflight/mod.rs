//! Preflight: what this machine gives ringport, judged against what a plan needs.
//!
//! Two halves, kept apart so that every verdict can be tested with made-up
//! machines:
//!
//! - [`gather`] reads the [`Facts`]: the kernel release, what io_uring does
//!   when asked for real (a throw-away ring set up with the engine's flags, a
//!   provided buffer ring, a multishot receive on a socket pair, MSG_RING
//!   between two rings, a registered ring fd), the seccomp mode,
//!   `kernel.io_uring_disabled`, the resource limits, `net.core.rmem_max` and
//!   the CPUs this process may use. All the I/O is there.
//! - [`judge`] is a pure function of the facts and the [`Needs`] of a plan:
//!   one [`Check`] per concern, each ok, warn or fail, with the fix when it is
//!   not ok. [`auto_backend`] is the same kind of function: which backend
//!   `--backend auto` picks on these facts, and why; it follows the engine's
//!   own start-up choice (io_uring when its probe passes; epoll when io_uring
//!   is refused, missing, short of locked memory or without an operation
//!   ringport needs).
//!
//! `ringport doctor` prints the checks; the engine's own start-up probe stays
//! in [`crate::sys::ring`].

mod cause;
mod gather;
mod judge;

pub use cause::auto_backend;
pub use gather::gather;
pub use judge::judge;

use crate::config::{BackendChoice, EngineConfig, MeshWake};
use crate::cpus::CpuList;
use crate::limits::Rlimit;
use crate::plan::Plan;
use ringport_plugin::Transport;

/// What one io_uring probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It works.
    Ok,
    /// The syscall, or the operation's completion, failed with this errno.
    Errno(i32),
    /// The kernel answered, but without the feature; says what was seen.
    Missing(String),
    /// Not tried, because a step it depends on (io_uring_setup) failed.
    NotProbed,
}

impl Outcome {
    /// Whether the probe found the feature working.
    pub fn is_ok(&self) -> bool {
        *self == Outcome::Ok
    }
}

/// What io_uring did when probed for real on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringFacts {
    /// io_uring_setup with the engine's flags (SINGLE_ISSUER, DEFER_TASKRUN,
    /// COOP_TASKRUN, dropping those refused with EINVAL, as the engine does).
    pub setup: Outcome,
    /// Setup flags the kernel refused (their kernel names), if setup worked.
    pub refused_flags: Vec<&'static str>,
    /// The opcodes every shard needs, by IORING_REGISTER_PROBE
    /// ([`crate::sys::ring::probe`]); `Missing` lists the absent ones.
    pub opcodes: Outcome,
    /// IORING_REGISTER_PBUF_RING: a provided buffer ring registers.
    pub buffer_ring: Outcome,
    /// A multishot receive with buffer select on a socket pair completes with
    /// IORING_CQE_F_MORE (it stays armed).
    pub multishot_recv: Outcome,
    /// IORING_FEAT_MIN_TIMEOUT among the ring's features (min-wait batching,
    /// `--batch-delay-us`).
    pub min_wait: Outcome,
    /// IORING_OP_MSG_RING posts a completion on another ring.
    pub msg_ring: Outcome,
    /// IORING_REGISTER_RING_FDS registers the ring's fd.
    pub registered_ring_fd: Outcome,
    /// Whether io_uring memory counts against RLIMIT_MEMLOCK for this process:
    /// a ring set up in a child process with a soft limit of 0 is refused with
    /// ENOMEM exactly when it does (for processes without CAP_IPC_LOCK, on
    /// kernels before 5.12 and again on recent ones: 6.18 does, through its
    /// memory-region API). `None` when it could not be told (io_uring
    /// unusable).
    pub memlock_charged: Option<bool>,
}

impl UringFacts {
    /// Facts where io_uring_setup failed with `errno` and nothing else was tried.
    pub fn setup_failed(errno: i32) -> UringFacts {
        UringFacts {
            setup: Outcome::Errno(errno),
            refused_flags: Vec::new(),
            opcodes: Outcome::NotProbed,
            buffer_ring: Outcome::NotProbed,
            multishot_recv: Outcome::NotProbed,
            min_wait: Outcome::NotProbed,
            msg_ring: Outcome::NotProbed,
            registered_ring_fd: Outcome::NotProbed,
            memlock_charged: None,
        }
    }
}

/// Everything [`judge`] looks at, as [`gather`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// io_uring, probed.
    pub uring: UringFacts,
    /// The `Seccomp:` mode of /proc/self/status: 0 none, 1 strict, 2 filter
    /// (`None`: no such line, a kernel without seccomp).
    pub seccomp: Option<u32>,
    /// `kernel.io_uring_disabled` (`None`: no such sysctl, before Linux 6.6).
    pub io_uring_disabled: Option<u32>,
    /// `kernel.io_uring_group` (`None`: absent or -1, no group).
    pub io_uring_group: Option<u32>,
    /// This process's real, effective or supplementary groups include
    /// `io_uring_group`.
    pub in_io_uring_group: bool,
    /// CAP_SYS_ADMIN is in the effective set (io_uring_disabled = 1 lets it through).
    pub cap_sys_admin: bool,
    /// CAP_IPC_LOCK is in the effective set (io_uring then charges no locked memory).
    pub cap_ipc_lock: bool,
    /// RLIMIT_MEMLOCK in bytes.
    pub memlock: Rlimit,
    /// RLIMIT_NOFILE.
    pub nofile: Rlimit,
    /// `fs.nr_open`: the ceiling when the hard open-files limit is unlimited.
    pub nr_open: Option<u64>,
    /// `net.core.rmem_max`: the most SO_RCVBUF gives a socket.
    pub rmem_max: Option<u64>,
    /// The CPUs this process may run on, ascending (empty: unreadable).
    pub allowed_cpus: Vec<usize>,
}

/// The file descriptors a plan needs, as [`crate::limits::check_fd_budget`]
/// counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdNeed {
    /// Listening sockets: one per bound port of every shard.
    pub listening: u64,
    /// Fixed descriptors of all shards ([`crate::FDS_PER_SHARD`] each).
    pub per_shard: u64,
    /// Descriptors for the process itself.
    pub process: u64,
    /// The least left for connections.
    pub reserve: u64,
    /// The sum: what the limit must allow.
    pub needed: u64,
}

/// What a plan asks of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    /// Shards (threads, rings).
    pub shards: usize,
    /// The CPU list the operator named (`--cpus`), if any; without one the
    /// plan uses every allowed CPU.
    pub cpus_asked: Option<CpuList>,
    /// The distinct CPUs the plan pins shards to, in plan order.
    pub plan_cpus: Vec<usize>,
    /// File descriptors.
    pub fds: FdNeed,
    /// UDP listeners in the plan (rmem_max matters only with some).
    pub udp_listeners: usize,
    /// SO_RCVBUF asked for on UDP sockets.
    pub udp_rcvbuf: usize,
    /// Submission queue entries per shard ring (the completion queue has 4x).
    pub ring_entries: u32,
    /// TCP provided buffers per shard.
    pub tcp_bufs: u16,
    /// UDP provided buffers per shard.
    pub udp_bufs: u16,
    /// `--batch-delay-us` (needs min-wait batching when above 0).
    pub batch_delay_us: u32,
    /// How parked shards are woken (MSG_RING matters only with `msg-ring`).
    pub mesh_wake: MeshWake,
    /// The backend asked for (`--backend`): with `io-uring` an io_uring
    /// check that finds it unusable fails; with `auto` it warns when `auto`
    /// falls back to epoll (and fails when it does not); with `epoll` it
    /// warns.
    pub backend: BackendChoice,
}

impl Needs {
    /// The needs of `plan` run with `config`; `cpus_asked` is the operator's
    /// CPU list, if one was given.
    pub fn new(plan: &Plan, config: &EngineConfig, cpus_asked: Option<&CpuList>) -> Needs {
        // The engine's own count, against a limit nothing exceeds.
        let budget = crate::limits::check_fd_budget(
            plan,
            u64::MAX,
            crate::FDS_PER_SHARD,
            crate::limits::MIN_CONNECTION_FDS,
        );
        let fds = match budget {
            Ok(b) => FdNeed {
                listening: b.listening,
                per_shard: b.per_shard,
                process: b.process,
                reserve: b.reserve,
                needed: b.needed,
            },
            // Only a sum past u64::MAX lands here: needs beyond any limit.
            Err(crate::limits::FdBudgetError::TooMany {
                needed,
                listening,
                per_shard,
                process,
                reserve,
                ..
            }) => FdNeed {
                listening,
                per_shard,
                process,
                reserve,
                needed,
            },
        };
        let mut plan_cpus = Vec::new();
        for s in &plan.shards {
            if !plan_cpus.contains(&s.cpu) {
                plan_cpus.push(s.cpu);
            }
        }
        Needs {
            shards: plan.shards.len(),
            cpus_asked: cpus_asked.cloned(),
            plan_cpus,
            fds,
            udp_listeners: plan
                .listeners
                .iter()
                .filter(|l| l.transport == Transport::Udp)
                .count(),
            udp_rcvbuf: config.udp_rcvbuf,
            ring_entries: config.ring_entries,
            tcp_bufs: config.tcp_bufs,
            udp_bufs: config.udp_bufs,
            batch_delay_us: config.batch_delay_us,
            mesh_wake: config.mesh_wake,
            backend: config.backend,
        }
    }

    /// Locked memory one shard's rings pin where io_uring charges it
    /// ([`UringFacts::memlock_charged`]): its ring and its two provided
    /// buffer rings.
    pub fn shard_locked_bytes(&self) -> u64 {
        ring_locked_bytes(self.ring_entries, self.ring_entries.saturating_mul(4))
            + buffer_ring_locked_bytes(self.tcp_bufs)
            + buffer_ring_locked_bytes(self.udp_bufs)
    }

    /// Locked memory the whole plan pins where io_uring charges it: every
    /// shard, plus the 8-entry ring the engine probes with at start (its
    /// teardown is asynchronous, so it still counts when shards set up).
    /// Measured with `ringport serve` on Linux 6.18 without CAP_IPC_LOCK: one
    /// shard with 4096-entry rings and the default buffer rings starts with
    /// RLIMIT_MEMLOCK at exactly this (147 pages) and is refused at a page less.
    pub fn locked_bytes(&self) -> u64 {
        (self.shards as u64)
            .saturating_mul(self.shard_locked_bytes())
            .saturating_add(ring_locked_bytes(8, 16))
    }
}

/// Page size the kernel counts locked memory in.
const PAGE: u64 = 4096;
/// `sizeof(struct io_rings)` before its completion entries (64-byte cache lines).
const RINGS_HEAD: u64 = 192;
/// The kernel's largest submission queue (IORING_MAX_ENTRIES).
const MAX_SQ_ENTRIES: u64 = 32768;
/// The kernel's largest completion queue (IORING_MAX_CQ_ENTRIES).
const MAX_CQ_ENTRIES: u64 = 2 * MAX_SQ_ENTRIES;

fn pages(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE) * PAGE
}

/// Bytes of locked memory an io_uring with `sq` submission and `cq`
/// completion entries is charged where rings are charged: the kernel rounds
/// both counts up to powers of two, then pins the rings (a 192-byte head, 16
/// bytes per completion, 4 per submission index) and the submission entries
/// (64 bytes each), each rounded up to whole pages. Measured on Linux 6.18
/// with RLIMIT_MEMLOCK set page by page: 8/16 entries take 2 pages, 1024/4096
/// take 34, 4096/16384 take 133, as this computes.
pub fn ring_locked_bytes(sq: u32, cq: u32) -> u64 {
    let sq = u64::from(sq).max(1).next_power_of_two().min(MAX_SQ_ENTRIES);
    let cq = u64::from(cq).max(1).next_power_of_two().min(MAX_CQ_ENTRIES);
    let rings = (RINGS_HEAD + cq * 16).next_multiple_of(64) + sq * 4;
    pages(rings) + pages(sq * 64)
}

/// Bytes of locked memory a provided buffer ring of `count` buffers is
/// charged where rings are charged: its 16-byte entries, in whole pages (the
/// buffers themselves are ordinary memory).
pub fn buffer_ring_locked_bytes(count: u16) -> u64 {
    pages(u64::from(count) * 16)
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// ringport runs, but worse than it could, or the check could not tell.
    Warn,
    /// ringport will not start, or not run as configured.
    Fail,
}

impl Status {
    /// `ok`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One verdict of [`judge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// A stable name (`kernel`, `io_uring_setup`, `open_files`, ...).
    pub name: &'static str,
    /// Ok, warn or fail.
    pub status: Status,
    /// What was found, with the numbers.
    pub detail: String,
    /// What to do about it; `None` when the status is ok.
    pub fix: Option<String>,
}

#[cfg(test)]
mod tests;
