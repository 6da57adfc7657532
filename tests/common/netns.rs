//! A network namespace of the test's own, to play many IPv6 sources on its
//! loopback device: a thread enters a fresh namespace (`unshare`), brings
//! `lo` up and gives it the addresses asked for; threads it starts (an
//! engine's shards) inherit the namespace, and no packet leaves it.
//!
//! Needs CAP_SYS_ADMIN (CI runs as root) and `ip` (iproute2). Without them
//! the test is skipped with one line, except under CI where that fails.

use std::io::Write;
use std::process::Command;

/// Runs `f` on a thread inside a new network namespace whose `lo` is up
/// and holds `addrs` (CIDRs, e.g. `2001:db8::1/64`); `None` when this
/// machine cannot make one (outside CI).
pub fn with_netns<T: Send + 'static>(
    addrs: &'static [&'static str],
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    std::thread::spawn(move || {
        // SAFETY: unshare has no memory arguments; it moves only this
        // thread into a new network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let e = std::io::Error::last_os_error();
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("cannot create a network namespace under CI: {e}");
            }
            let _ = writeln!(
                std::io::stderr(),
                "skipped: run as root (CAP_SYS_ADMIN) to create a network namespace ({e})"
            );
            return None;
        }
        // SAFETY: gettid has no arguments.
        let tid = unsafe { libc::gettid() };
        let ns = format!("--net=/proc/{}/task/{tid}/ns/net", std::process::id());
        let ip = |args: &[&str]| {
            let out = Command::new("nsenter")
                .arg(&ns)
                .arg("ip")
                .args(args)
                .output()
                .expect("nsenter ip (util-linux, iproute2)");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["link", "set", "lo", "up"]);
        for a in addrs {
            ip(&["addr", "add", a, "dev", "lo", "nodad"]);
        }
        Some(f())
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
