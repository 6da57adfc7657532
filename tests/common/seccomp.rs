//! Blocking io_uring in a child process the way Docker's default seccomp
//! profile does: `io_uring_setup`, `io_uring_enter` and `io_uring_register`
//! fail with EPERM, every other system call is allowed.
//!
//! The filter is classic BPF over `struct seccomp_data` (the system call
//! number at offset 0, the audit architecture at 4), installed with
//! `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)` after `PR_SET_NO_NEW_PRIVS`,
//! in the child between fork and exec. A system call made with another
//! architecture's calling convention (whose numbers mean other calls) kills
//! the process, and x32 calls on x86_64 get EPERM like io_uring.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `offsetof(struct seccomp_data, nr)`.
const DATA_NR: u32 = 0;
/// `offsetof(struct seccomp_data, arch)`.
const DATA_ARCH: u32 = 4;

/// `AUDIT_ARCH_*` of this target: the ELF machine with the 64-bit and
/// little-endian flags (linux/audit.h), or `None` where this file has none.
const AUDIT_ARCH: Option<u32> = if cfg!(target_arch = "x86_64") {
    // EM_X86_64 (62) | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    Some(0xC000_003E)
} else if cfg!(target_arch = "aarch64") {
    // EM_AARCH64 (183) | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    Some(0xC000_00B7)
} else {
    None
};

/// x32 system calls on x86_64 carry this bit (`__X32_SYSCALL_BIT`); aarch64
/// numbers never reach it, so the check costs nothing there.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The filter program.
///
/// # Panics
///
/// On an architecture other than x86_64 and aarch64, naming it: a filter
/// that does not check the architecture would match the wrong system calls.
pub fn io_uring_filter() -> Vec<libc::sock_filter> {
    let arch = AUDIT_ARCH.unwrap_or_else(|| {
        panic!(
            "no seccomp filter for {}: add its AUDIT_ARCH to tests/common/seccomp.rs",
            std::env::consts::ARCH
        )
    });
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let jge = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    let nr = |n: libc::c_long| u32::try_from(n).expect("a system call number");
    // Jump offsets count the instructions skipped after the jump; `deny` is
    // the last instruction (index 9).
    vec![
        /* 0 */ stmt(load, DATA_ARCH),
        /* 1 */ jump(jeq, arch, 1, 0),
        /* 2 */ stmt(ret, libc::SECCOMP_RET_KILL_PROCESS),
        /* 3 */ stmt(load, DATA_NR),
        /* 4 */ jump(jge, X32_SYSCALL_BIT, 4, 0),
        /* 5 */ jump(jeq, nr(libc::SYS_io_uring_setup), 3, 0),
        /* 6 */ jump(jeq, nr(libc::SYS_io_uring_enter), 2, 0),
        /* 7 */ jump(jeq, nr(libc::SYS_io_uring_register), 1, 0),
        /* 8 */ stmt(ret, libc::SECCOMP_RET_ALLOW),
        /* 9 */ stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
    ]
}

/// Makes `cmd`'s child install [`io_uring_filter`] before it execs, so the
/// program it runs finds io_uring blocked as in a container with Docker's
/// default seccomp profile (`Seccomp: 2` in its /proc status).
///
/// # Panics
///
/// As [`io_uring_filter`].
pub fn block_io_uring(cmd: &mut Command) -> &mut Command {
    let filter = io_uring_filter();
    let len = u16::try_from(filter.len()).expect("a short filter");
    // SAFETY: the closure runs in the forked child before exec; it calls
    // only prctl, which is async-signal-safe, on memory allocated before the
    // fork (`filter`, moved in and alive until exec), and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Without it an unprivileged process may not install a filter.
            // prctl is variadic and reads whole `unsigned long`s.
            let (one, zero): (libc::c_ulong, libc::c_ulong) = (1, 0);
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) != 0 {
                return Err(io::Error::last_os_error());
            }
            let prog = libc::sock_fprog {
                len,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::c_ulong::from(libc::SECCOMP_MODE_FILTER),
                &prog as *const libc::sock_fprog,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}
