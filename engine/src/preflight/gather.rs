//! Reading the facts: syscalls, `/proc`, and io_uring asked for real.

use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

use super::{Facts, Outcome, UringFacts};
use crate::limits::{self, Rlimit, UNLIMITED};
use crate::sys::bufring::BufRing;
use crate::sys::ring::{self, Enter, RingError};

/// How long a probe waits for a completion that should come at once.
const PROBE_WAIT: Duration = Duration::from_secs(1);
/// The buffer group the multishot-receive probe uses.
const PROBE_BGID: u16 = 7;
/// `user_data` of the probe's receive.
const RECV_DATA: u64 = 1;
/// `user_data` of the MSG_RING submission on the sending ring.
const MSG_SEND_DATA: u64 = 2;
/// `user_data` MSG_RING asks the kernel to post on the target ring.
const MSG_TARGET_DATA: u64 = 0x7269_6e67;
/// The result MSG_RING asks the kernel to post with it.
const MSG_RESULT: i32 = 0x5eed;

/// Gathers every fact [`super::judge`] looks at.
///
/// The io_uring probes run on a thread of their own, as the engine's start-up
/// probe does: tearing a ring down queues task work on the thread that made
/// it, which would make the caller's next blocking call fail with EINTR.
/// Whether rings are charged to RLIMIT_MEMLOCK is asked in a forked child
/// with a soft limit of 0, so this process's limits never change.
pub fn gather() -> Facts {
    let uring = std::thread::scope(|s| s.spawn(probe_uring).join())
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status_field(&status, "CapEff:")
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .unwrap_or(0);
    let io_uring_group = read_sysctl("kernel/io_uring_group")
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(|g| u32::try_from(g).ok());
    let unknown = Rlimit { soft: 0, hard: 0 };
    Facts {
        kernel: ring::kernel_release(),
        uring,
        seccomp: status_field(&status, "Seccomp:").and_then(|v| v.parse().ok()),
        io_uring_disabled: read_sysctl("kernel/io_uring_disabled").and_then(|v| v.parse().ok()),
        io_uring_group,
        in_io_uring_group: io_uring_group.is_some_and(in_group),
        cap_sys_admin: caps & (1 << CAP_SYS_ADMIN) != 0,
        cap_ipc_lock: caps & (1 << CAP_IPC_LOCK) != 0,
        memlock: limits::memlock_limits().unwrap_or(unknown),
        nofile: limits::nofile_limits().unwrap_or(unknown),
        nr_open: limits::nr_open().ok(),
        rmem_max: read_sysctl("net/core/rmem_max").and_then(|v| v.parse().ok()),
        allowed_cpus: crate::cpus::allowed_cpus().unwrap_or_default(),
    }
}

/// Capability numbers (linux/capability.h).
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;

/// The value of a `Name:\tvalue` line of a /proc status file.
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

/// A /proc/sys value, trimmed (`None` when absent or unreadable).
fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Whether `gid` is this process's real or effective group or one of its
/// supplementary groups (what the kernel's `in_group_p` asks).
fn in_group(gid: u32) -> bool {
    // SAFETY: getgid and getegid have no preconditions.
    if unsafe { libc::getgid() } == gid || unsafe { libc::getegid() } == gid {
        return true;
    }
    // SAFETY: a size of 0 asks only for the count and writes nothing.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n <= 0 {
        return false;
    }
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: `groups` has room for `n` gids, the size passed.
    let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    n > 0 && groups[..n as usize].contains(&gid)
}

fn ring_errno(e: &RingError) -> i32 {
    match e {
        RingError::Unavailable { errno: source, .. } | RingError::Memlock { errno: source, .. } => {
            source.raw_os_error().unwrap_or(libc::EIO)
        }
        RingError::Other(source) => source.raw_os_error().unwrap_or(libc::EIO),
        // Only `probe` gives this, and it is handled there.
        RingError::MissingOpcode { .. } => libc::EINVAL,
    }
}

fn io_outcome(e: &io::Error) -> Outcome {
    Outcome::Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Every io_uring probe, on the calling thread (which must be a thread of
/// its own, see [`gather`]).
fn probe_uring() -> UringFacts {
    let r = match ring::setup(8, 16) {
        Ok(r) => r,
        Err(e) => return UringFacts::setup_failed(ring_errno(&e)),
    };
    let min_wait = if r.min_timeout {
        Outcome::Ok
    } else {
        Outcome::Missing("IORING_FEAT_MIN_TIMEOUT is not among the ring's features".to_owned())
    };
    let refused_flags = r.dropped.iter().map(|f| f.name()).collect();
    let mut ring = r.ring;
    let mut enter = Enter::new(&ring);
    let registered_ring_fd = if enter.registered() {
        Outcome::Ok
    } else {
        Outcome::Missing("IORING_REGISTER_RING_FDS registered nothing".to_owned())
    };
    let opcodes = match ring::probe() {
        Ok(_) => Outcome::Ok,
        Err(RingError::MissingOpcode { missing, .. }) => Outcome::Missing(missing),
        Err(e) => Outcome::Errno(ring_errno(&e)),
    };
    let (buffer_ring, multishot_recv, bufs) = probe_multishot_recv(&mut ring);
    let msg_ring = probe_msg_ring(&mut ring);
    // Without the registration, closing the fd tears the ring down now.
    enter.unregister();
    // The ring goes before the buffer ring it registered (as in a shard).
    drop(ring);
    drop(bufs);
    UringFacts {
        setup: Outcome::Ok,
        refused_flags,
        opcodes,
        buffer_ring,
        multishot_recv,
        min_wait,
        msg_ring,
        registered_ring_fd,
        memlock_charged: memlock_charged(),
    }
}

/// Waits up to [`PROBE_WAIT`] for one completion on `ring` (GETEVENTS, so
/// deferred task work runs) and returns it.
fn wait_one(ring: &mut IoUring) -> io::Result<Option<cqueue::Entry>> {
    let ts = Timespec::from(PROBE_WAIT);
    let args = SubmitArgs::new().timespec(&ts);
    match ring.submitter().submit_with_args(1, &args) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
        Err(e) => return Err(e),
    }
    Ok(ring.completion().next())
}

/// Pushes one entry.
///
/// # Safety
///
/// Whatever `sqe` points to must live until its completion arrives or the
/// ring is gone.
unsafe fn push(ring: &mut IoUring, sqe: &squeue::Entry) -> io::Result<()> {
    // SAFETY: the caller keeps the entry's memory alive.
    unsafe { ring.submission().push(sqe) }
        .map_err(|_| io::Error::other("the probe ring's submission queue is full"))
}

/// Registers a provided buffer ring on `ring`, then arms a multishot receive
/// with buffer select on one end of a socket pair that already holds bytes,
/// and looks at the first completion: data in a provided buffer, and
/// IORING_CQE_F_MORE (the receive stays armed). Returns both outcomes and
/// the buffer ring, which must outlive `ring`.
fn probe_multishot_recv(ring: &mut IoUring) -> (Outcome, Outcome, Option<BufRing>) {
    let bufs = match BufRing::new(&ring.submitter(), PROBE_BGID, 4, 64) {
        Ok(b) => b,
        Err(e) => return (io_outcome(&e), Outcome::NotProbed, None),
    };
    let outcome = match multishot_recv(ring) {
        Ok(o) => o,
        Err(e) => io_outcome(&e),
    };
    (Outcome::Ok, outcome, Some(bufs))
}

fn multishot_recv(ring: &mut IoUring) -> io::Result<Outcome> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two fds into the array it is given.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    std::fs::File::from(theirs.try_clone()?).write_all(b"ping")?;
    let sqe = opcode::RecvMulti::new(Fd(ours.as_raw_fd()), PROBE_BGID)
        .build()
        .user_data(RECV_DATA);
    // SAFETY: the receive writes only into the provided buffer ring, which
    // the caller keeps until the ring is gone; closing the socket while the
    // receive is armed is fine (the request holds its own file reference).
    unsafe { push(ring, &sqe)? };
    let outcome = match wait_one(ring)? {
        None => Outcome::Missing(format!(
            "no completion within {} s of arming it",
            PROBE_WAIT.as_secs()
        )),
        Some(c) if c.result() < 0 => Outcome::Errno(-c.result()),
        Some(c) if cqueue::buffer_select(c.flags()).is_none() => {
            Outcome::Missing("the completion names no provided buffer".to_owned())
        }
        Some(c) if !cqueue::more(c.flags()) => Outcome::Missing(
            "the first completion ended the receive (no IORING_CQE_F_MORE)".to_owned(),
        ),
        Some(_) => Outcome::Ok,
    };
    Ok(outcome)
}

/// Sends a MSG_RING from `ring` to a second ring set up like a shard's and
/// looks for the posted completion there.
fn probe_msg_ring(ring: &mut IoUring) -> Outcome {
    let mut target = match ring::setup(8, 16) {
        Ok(r) => r.ring,
        Err(e) => return Outcome::Errno(ring_errno(&e)),
    };
    match msg_ring(ring, &mut target) {
        Ok(o) => o,
        Err(e) => io_outcome(&e),
    }
}

fn msg_ring(ring: &mut IoUring, target: &mut IoUring) -> io::Result<Outcome> {
    let sqe = opcode::MsgRingData::new(Fd(target.as_raw_fd()), MSG_RESULT, MSG_TARGET_DATA, None)
        .build()
        .user_data(MSG_SEND_DATA);
    // SAFETY: MSG_RING references no memory, only the target ring's fd,
    // which outlives the wait below.
    unsafe { push(ring, &sqe)? };
    match wait_one(ring)? {
        None => {
            return Ok(Outcome::Missing(
                "the sending ring got no completion".to_owned(),
            ))
        }
        Some(c) if c.result() < 0 => return Ok(Outcome::Errno(-c.result())),
        Some(_) => {}
    }
    // A target with DEFER_TASKRUN gets the message as task work of this
    // thread, run when it waits on the target.
    Ok(match wait_one(target)? {
        Some(c) if c.user_data() == MSG_TARGET_DATA && c.result() == MSG_RESULT => Outcome::Ok,
        Some(c) => Outcome::Missing(format!(
            "the target ring got user_data {:#x} result {} instead of the message",
            c.user_data(),
            c.result()
        )),
        None => Outcome::Missing(format!(
            "nothing reached the target ring within {} s",
            PROBE_WAIT.as_secs()
        )),
    })
}

/// `struct io_uring_params` is 120 bytes; zeroed, it asks for no flags.
const PARAMS_WORDS: usize = 30;

/// Whether io_uring rings count against RLIMIT_MEMLOCK for this process: a
/// forked child lowers its own soft limit to 0 and sets up an 8-entry ring,
/// which the kernel refuses with ENOMEM exactly when it charges the ring.
/// `None` when the child could not tell (another error, or no child).
fn memlock_charged() -> Option<bool> {
    let hard = limits::memlock_limits().ok()?.hard;
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: if hard == UNLIMITED {
            libc::RLIM_INFINITY
        } else {
            hard as libc::rlim_t
        },
    };
    let mut params = [0u32; PARAMS_WORDS];
    // SAFETY: the child runs only async-signal-safe system calls on memory
    // prepared before the fork (`zero`, `params`) and leaves with `_exit`,
    // so the locks other threads may hold at the fork never matter.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above; setrlimit reads `zero`, io_uring_setup writes
        // into `params`, which is as large as the kernel's struct.
        unsafe {
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &zero) != 0 {
                libc::_exit(3);
            }
            let fd = libc::syscall(libc::SYS_io_uring_setup, 8u32, params.as_mut_ptr());
            // Reading errno allocates nothing.
            let code = if fd >= 0 {
                0
            } else if io::Error::last_os_error().raw_os_error() == Some(libc::ENOMEM) {
                1
            } else {
                2
            };
            libc::_exit(code);
        }
    }
    if pid < 0 {
        return None;
    }
    let mut status = 0;
    loop {
        // SAFETY: waits for the child forked above; `status` is ours to write.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return None;
    }
    if !libc::WIFEXITED(status) {
        return None;
    }
    match libc::WEXITSTATUS(status) {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_parse() {
        let status = "Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\nCapEff:\t000001fffeffffff\n";
        assert_eq!(status_field(status, "Seccomp:"), Some("2"));
        assert_eq!(status_field(status, "CapEff:"), Some("000001fffeffffff"));
        assert_eq!(status_field(status, "NoNewPrivs:"), None);
    }

    #[test]
    fn the_real_gid_is_in_its_own_group() {
        // SAFETY: getgid has no preconditions.
        let gid = unsafe { libc::getgid() };
        assert!(in_group(gid));
        assert!(!in_group(u32::MAX - 1));
    }
}
