//! Process resource limits the engine depends on.
//!
//! Every listening port is a socket and every connection another, so a plan
//! with many ports needs many file descriptors. At start the engine raises
//! `RLIMIT_NOFILE`'s soft limit to the hard limit ([`raise_nofile_limit`]) and
//! refuses a plan that cannot fit under it ([`check_fd_budget`]), rather than
//! failing on the thousandth `bind` or, worse, on a later `accept`.
//! [`memlock_limit`] reports `RLIMIT_MEMLOCK`, which older kernels charge for
//! io_uring rings and registered buffers, for the diagnostics that explain a
//! refused ring setup.

use std::io;

use thiserror::Error;

use crate::plan::Plan;

/// The value this module reports for an unlimited resource (`RLIM_INFINITY`).
pub const UNLIMITED: u64 = u64::MAX;

/// File descriptors counted for the process itself, whatever the plan:
/// stdio, the admin listener, the log writer, `/proc` reads, a few spare.
pub const PROCESS_FDS: usize = 16;

/// File descriptors a plan must leave for connections at the least: the
/// engine refuses to start with fewer ([`check_fd_budget`]'s `reserve`).
pub const MIN_CONNECTION_FDS: usize = 64;

/// A resource limit as it stands: soft and hard values ([`UNLIMITED`] for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// What the process may use now.
    pub soft: u64,
    /// How far an unprivileged process may raise the soft limit.
    pub hard: u64,
}

/// `RLIMIT_NOFILE` as it stands after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit: what the process may open now ([`UNLIMITED`] if none).
    pub soft: u64,
    /// The hard limit: how far an unprivileged process may raise the soft limit.
    pub hard: u64,
}

/// How a plan's file descriptors fit under the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The limit checked against.
    pub limit: u64,
    /// Listening sockets: one per bound port of every shard.
    pub listening: u64,
    /// Per-shard descriptors (ring, eventfd, ...) for all shards together.
    pub per_shard: u64,
    /// Descriptors for the process itself ([`PROCESS_FDS`]).
    pub process: u64,
    /// The minimum kept for connections, as requested.
    pub reserve: u64,
    /// What the plan needs: `listening + per_shard + process + reserve`.
    pub needed: u64,
    /// What is left for connections once the fixed descriptors are open
    /// (`limit - listening - per_shard - process`); at least `reserve`.
    pub for_connections: u64,
}

/// Why a plan does not fit under the file-descriptor limit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FdBudgetError {
    /// More descriptors needed than the limit allows.
    #[error(
        "the plan needs {needed} file descriptors but RLIMIT_NOFILE is {limit}: \
         {listening} listening sockets, {per_shard} for {shards} shards ({per_shard_each} \
         each), {process} for the process and {reserve} kept for connections; bind fewer \
         ports, run fewer shards, or raise the limit (`ulimit -n {needed}`, or \
         LimitNOFILE={needed} in a systemd unit)"
    )]
    TooMany {
        /// What the plan needs.
        needed: u64,
        /// The limit.
        limit: u64,
        /// Listening sockets in the plan.
        listening: u64,
        /// How many shards the plan runs.
        shards: usize,
        /// Fixed descriptors per shard.
        per_shard_each: usize,
        /// Fixed descriptors of all shards together.
        per_shard: u64,
        /// Descriptors for the process itself.
        process: u64,
        /// Descriptors kept for connections.
        reserve: u64,
    },
}

/// The type of `RLIMIT_*` constants, which differs between C libraries.
#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

fn get_rlimit(resource: Resource) -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` that outlives the call, and
    // getrlimit writes only that struct.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

fn set_rlimit(resource: Resource, lim: &libc::rlimit) -> io::Result<()> {
    // SAFETY: `lim` points to a valid `rlimit` for the whole call; setrlimit
    // only reads it.
    if unsafe { libc::setrlimit(resource, lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn from_rlim(value: libc::rlim_t) -> u64 {
    if value == libc::RLIM_INFINITY {
        UNLIMITED
    } else {
        // `rlim_t` is 64 bits on 64-bit Linux and 32 on some 32-bit targets.
        #[allow(clippy::useless_conversion)]
        u64::from(value)
    }
}

/// Raises `RLIMIT_NOFILE`'s soft limit to its hard limit and returns both
/// as they stand afterwards.
///
/// If the hard limit is unlimited, the soft limit goes to the kernel's
/// `fs.nr_open` instead, the most a process can open. Errors come from
/// `getrlimit`/`setrlimit` unchanged.
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    let mut lim = get_rlimit(libc::RLIMIT_NOFILE)?;
    if lim.rlim_cur != lim.rlim_max {
        let target = if lim.rlim_max == libc::RLIM_INFINITY {
            // Linux refuses an unlimited RLIMIT_NOFILE; nr_open is its ceiling.
            std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
        } else {
            Some(lim.rlim_max)
        };
        if let Some(target) = target.filter(|&t| t > lim.rlim_cur) {
            lim.rlim_cur = target;
            set_rlimit(libc::RLIMIT_NOFILE, &lim)?;
        }
    }
    let lim = get_rlimit(libc::RLIMIT_NOFILE)?;
    Ok(NofileLimit {
        soft: from_rlim(lim.rlim_cur),
        hard: from_rlim(lim.rlim_max),
    })
}

/// `RLIMIT_MEMLOCK`'s soft limit in bytes ([`UNLIMITED`] if none): what
/// io_uring rings and registered buffers may pin on kernels that charge them
/// to it (before 5.12).
pub fn memlock_limit() -> io::Result<u64> {
    get_rlimit(libc::RLIMIT_MEMLOCK).map(|lim| from_rlim(lim.rlim_cur))
}

/// `RLIMIT_NOFILE` as it stands, without raising it (see [`raise_nofile_limit`]).
pub fn nofile_limits() -> io::Result<Rlimit> {
    get_rlimit(libc::RLIMIT_NOFILE).map(|lim| Rlimit {
        soft: from_rlim(lim.rlim_cur),
        hard: from_rlim(lim.rlim_max),
    })
}

/// `RLIMIT_MEMLOCK`'s soft and hard limits in bytes.
pub fn memlock_limits() -> io::Result<Rlimit> {
    get_rlimit(libc::RLIMIT_MEMLOCK).map(|lim| Rlimit {
        soft: from_rlim(lim.rlim_cur),
        hard: from_rlim(lim.rlim_max),
    })
}

/// The kernel's `fs.nr_open`: the most file descriptors a process can have,
/// and where [`raise_nofile_limit`] stops when the hard limit is unlimited.
pub fn nr_open() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/sys/fs/nr_open")?;
    text.trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("fs.nr_open: {e}")))
}

/// Checks that `plan` fits under a file-descriptor `limit` (usually
/// [`NofileLimit::soft`] after [`raise_nofile_limit`]).
///
/// The plan needs one descriptor per listening socket, `per_shard_fixed` per
/// shard (its ring, its eventfd, ...), [`PROCESS_FDS`] for the process, and
/// at least `reserve` left for connections. The error gives every number and
/// the ways out.
pub fn check_fd_budget(
    plan: &Plan,
    limit: u64,
    per_shard_fixed: usize,
    reserve: usize,
) -> Result<FdBudget, FdBudgetError> {
    let to_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let shards = plan.shards.len();
    let listening = to_u64(plan.total_sockets());
    let per_shard = to_u64(per_shard_fixed).saturating_mul(to_u64(shards));
    let process = to_u64(PROCESS_FDS);
    let reserve_fds = to_u64(reserve);
    let fixed = listening.saturating_add(per_shard).saturating_add(process);
    let needed = fixed.saturating_add(reserve_fds);
    if needed > limit {
        return Err(FdBudgetError::TooMany {
            needed,
            limit,
            listening,
            shards,
            per_shard_each: per_shard_fixed,
            per_shard,
            process,
            reserve: reserve_fds,
        });
    }
    Ok(FdBudget {
        limit,
        listening,
        per_shard,
        process,
        reserve: reserve_fds,
        needed,
        for_connections: limit - fixed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Mode, PlanRequest};

    fn plan(listeners: &[&str], shards: usize, mode: Mode) -> Plan {
        Plan::build(PlanRequest {
            listeners: listeners.iter().map(|s| s.parse().unwrap()).collect(),
            shards,
            cpus: vec![0],
            mode,
            allow_idle_shards: false,
        })
        .unwrap()
    }

    /// The soft and hard columns of one line of `/proc/self/limits`.
    fn proc_limits(name: &str) -> (u64, u64) {
        let text = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = text.lines().find(|l| l.starts_with(name)).unwrap();
        let mut values = line[name.len()..].split_whitespace().map(|v| match v {
            "unlimited" => UNLIMITED,
            v => v.parse().unwrap(),
        });
        (values.next().unwrap(), values.next().unwrap())
    }

    #[test]
    fn budget_math() {
        let p = plan(&["echo@tcp:127.0.0.1:9000-9063"], 4, Mode::Range);
        let budget = check_fd_budget(&p, 1024, 2, 100).unwrap();
        assert_eq!(
            budget,
            FdBudget {
                limit: 1024,
                listening: 64,
                per_shard: 8,
                process: 16,
                reserve: 100,
                needed: 188,
                for_connections: 936,
            }
        );
        // Exactly full: the reserve is all that is left.
        let budget = check_fd_budget(&p, 188, 2, 100).unwrap();
        assert_eq!(budget.for_connections, 100);
        assert!(check_fd_budget(&p, UNLIMITED, 2, 100).is_ok());
    }

    #[test]
    fn budget_counts_reuseport_sockets_per_shard() {
        let p = plan(
            &[
                "echo@tcp:127.0.0.1:9000-9063",
                "sockperf@udp:127.0.0.1:11111-11114",
            ],
            4,
            Mode::Reuseport,
        );
        let budget = check_fd_budget(&p, 4096, 2, 1000).unwrap();
        assert_eq!(budget.listening, 4 * 68);
        assert_eq!(budget.needed, 272 + 8 + 16 + 1000);
        assert_eq!(budget.for_connections, 4096 - 272 - 8 - 16);
    }

    #[test]
    fn budget_refusal_gives_the_numbers() {
        let p = plan(&["echo@tcp:127.0.0.1:9000-9063"], 4, Mode::Range);
        let e = check_fd_budget(&p, 187, 2, 100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the plan needs 188 file descriptors but RLIMIT_NOFILE is 187: 64 listening \
             sockets, 8 for 4 shards (2 each), 16 for the process and 100 kept for \
             connections; bind fewer ports, run fewer shards, or raise the limit \
             (`ulimit -n 188`, or LimitNOFILE=188 in a systemd unit)"
        );
        assert!(matches!(
            check_fd_budget(&p, 1024, 2, usize::MAX),
            Err(FdBudgetError::TooMany {
                needed: u64::MAX,
                ..
            })
        ));
    }

    #[test]
    fn raise_nofile_reaches_the_hard_limit() {
        // Read before raising (the only test that changes the limit).
        let before = nofile_limits().unwrap();
        assert_eq!((before.soft, before.hard), proc_limits("Max open files"));
        let raised = raise_nofile_limit().unwrap();
        assert_eq!(raised.hard, before.hard);
        assert_eq!(
            (raised.soft, raised.hard),
            proc_limits("Max open files"),
            "reported limits differ from the kernel's"
        );
        if raised.hard != UNLIMITED {
            assert_eq!(raised.soft, raised.hard);
        }
    }

    #[test]
    fn memlock_matches_the_kernel() {
        assert_eq!(memlock_limit().unwrap(), proc_limits("Max locked memory").0);
        let both = memlock_limits().unwrap();
        assert_eq!((both.soft, both.hard), proc_limits("Max locked memory"));
    }

    #[test]
    fn nr_open_matches_the_kernel() {
        let text = std::fs::read_to_string("/proc/sys/fs/nr_open").unwrap();
        assert_eq!(nr_open().unwrap(), text.trim().parse::<u64>().unwrap());
    }
}
