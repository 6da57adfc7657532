//! `ringport doctor` on this machine (every check ok), and in children whose
//! seccomp filter, limits or CPUs make one check fail for real; in the same
//! children `ringport serve` does what the check predicted: starts on epoll,
//! or refuses to start with the error named.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write as _};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{ringport_bin, seccomp};
use rand::Rng;
use ringport::engine::cpus::{allowed_cpus, format_cpus};

const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);

/// The checks, in the order `ringport doctor` prints them.
const CHECKS: [&str; 15] = [
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

/// `ringport args...`, to be adjusted before [`run`]. The backend is what
/// the flags say (`auto` without one), whatever `RINGPORT_BACKEND` the suite
/// runs with.
fn ringport(args: &[&str]) -> Command {
    let mut cmd = Command::new(ringport_bin());
    cmd.env_remove("RINGPORT_BACKEND")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` to completion, bounded in time.
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd.spawn().expect("start ringport");
    wait_bounded(&mut child, cmd);
    child.wait_with_output().expect("collect ringport's output")
}

/// Waits for `child` at most [`PROCESS_TIMEOUT`]; kills it and fails after.
fn wait_bounded(child: &mut Child, cmd: &Command) {
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    // Outputs here are a few KiB at most, far below a pipe's capacity.
    while child.try_wait().expect("wait for ringport").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not exit within {PROCESS_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One object of `ringport doctor --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    check: String,
    status: String,
    detail: String,
    fix: Option<String>,
}

/// Runs `ringport doctor --json ...` as set up in `cmd`; returns its exit
/// code and its checks.
fn doctor(cmd: &mut Command) -> (i32, Vec<Line>) {
    let out = run(cmd);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr, "", "doctor wrote to stderr");
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("doctor --json printed no JSON ({e}):\n{stdout}"));
    let text = |o: &serde_json::Value, key: &str| o[key].as_str().map(str::to_owned);
    let lines: Vec<Line> = v
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|o| {
            assert_eq!(o.as_object().unwrap().len(), 4, "{o}");
            Line {
                check: text(o, "check").unwrap(),
                status: text(o, "status").unwrap(),
                detail: text(o, "detail").unwrap(),
                fix: text(o, "fix"),
            }
        })
        .collect();
    let names: Vec<&str> = lines.iter().map(|l| l.check.as_str()).collect();
    assert_eq!(names, CHECKS);
    (out.status.code().expect("an exit code"), lines)
}

/// The checks that are not ok, by name and status.
fn not_ok(lines: &[Line]) -> Vec<(&str, &str)> {
    lines
        .iter()
        .filter(|l| l.status != "ok")
        .map(|l| (l.check.as_str(), l.status.as_str()))
        .collect()
}

fn line<'a>(lines: &'a [Line], check: &str) -> &'a Line {
    lines.iter().find(|l| l.check == check).unwrap()
}

/// Runs `ringport serve ...` as set up in `cmd`, which must fail: returns
/// its exit code and its stderr; stdout must be empty.
fn serve_fails(cmd: &mut Command) -> (i32, String) {
    let out = run(cmd);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "");
    (
        out.status.code().expect("an exit code"),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A config file, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        let path = std::env::temp_dir().join(format!(
            "ringport-test-doctor-{}-{}.toml",
            std::process::id(),
            rand::thread_rng().gen::<u64>()
        ));
        std::fs::write(&path, text).expect("write the config file");
        ConfigFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A loopback port free now (the plans here are refused before binding,
/// but if one were not, it would bind only this).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A /proc/sys value.
fn sysctl(path: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Makes `cmd`'s child set RLIMIT_NOFILE to `soft`/`hard` before it execs.
fn limit_open_files(cmd: &mut Command, soft: u64, hard: u64) {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: the closure runs in the forked child before exec and calls
    // only setrlimit (async-signal-safe) on a copy of `lim`.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes `cmd`'s child run without CAP_IPC_LOCK (dropped from the bounding
/// set, so an exec as root does not bring it back) and with RLIMIT_MEMLOCK
/// at `bytes`, so that io_uring charges its rings to that limit.
fn limit_locked_memory(cmd: &mut Command, bytes: u64) {
    const CAP_IPC_LOCK: libc::c_ulong = 14;
    let lim = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: the closure runs in the forked child before exec and calls
    // only prctl and setrlimit (async-signal-safe) on a copy of `lim`.
    unsafe {
        cmd.pre_exec(move || {
            // EPERM: no CAP_SETPCAP, so not root, so no CAP_IPC_LOCK to drop.
            if libc::prctl(libc::PR_CAPBSET_DROP, CAP_IPC_LOCK, 0 as libc::c_ulong) != 0
                && io::Error::last_os_error().raw_os_error() != Some(libc::EPERM)
            {
                return Err(io::Error::last_os_error());
            }
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes `cmd`'s child run on `cpu` only before it execs.
fn pin_to(cmd: &mut Command, cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is one this process may use, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: the closure runs in the forked child before exec and calls
    // only sched_setaffinity (async-signal-safe) on a copy of `set`.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

const SECCOMP_FIX: &str = "run with a seccomp profile that allows io_uring_setup, \
     io_uring_enter and io_uring_register, e.g. docker run --security-opt seccomp=PROFILE.json";

#[test]
fn every_check_is_ok_on_this_machine() {
    let (code, lines) = doctor(&mut ringport(&["doctor", "--json"]));
    assert_eq!(not_ok(&lines), [], "{lines:#?}");
    assert_eq!(code, 0);
    assert!(lines.iter().all(|l| l.fix.is_none()));
    assert_eq!(line(&lines, "backend").detail, "auto would pick io_uring");
    assert_eq!(line(&lines, "seccomp").detail, "mode 0: no seccomp filter");
    let cpus = allowed_cpus().unwrap();
    let shards = cpus.len();
    // The default listeners: 4 x 64 ports.
    let needed = 256 + 2 * shards + 16 + 64;
    assert!(
        line(&lines, "open_files").detail.contains(&format!(
            "the plan needs {needed} (256 listening sockets, {} for {shards} shard(s), 16 for \
             the process, 64 kept for connections)",
            2 * shards
        )),
        "{:?}",
        line(&lines, "open_files")
    );

    // The same as text: one `ok` line per check, the backend last.
    let out = run(&mut ringport(&["doctor"]));
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), CHECKS.len(), "{text}");
    for (row, (name, l)) in rows.iter().zip(CHECKS.iter().zip(&lines)) {
        assert_eq!(*row, format!("ok   {name:<18}  {}", l.detail));
    }
    assert_eq!(
        rows[14],
        "ok   backend             auto would pick io_uring"
    );
}

#[test]
fn io_uring_blocked_by_seccomp_as_docker_does() {
    let cause = "this process runs under a seccomp filter (mode 2) that refuses io_uring, as \
                 container runtimes' default profiles do";
    let refused = format!("io_uring_setup fails with EPERM (Operation not permitted): {cause}");

    // With `--backend auto` (the default) the shards would run on epoll:
    // the io_uring checks warn, and the backend line names the cause.
    let mut cmd = ringport(&["doctor", "--json"]);
    seccomp::block_io_uring(&mut cmd);
    let (code, lines) = doctor(&mut cmd);
    assert_eq!(
        not_ok(&lines),
        [
            ("io_uring_setup", "warn"),
            ("io_uring_ops", "warn"),
            ("buffer_rings", "warn"),
            ("multishot_recv", "warn"),
            ("min_wait", "warn"),
            ("msg_ring", "warn"),
            ("registered_ring_fd", "warn"),
            ("seccomp", "warn"),
            ("backend", "warn"),
        ]
    );
    assert_eq!(code, 0);
    assert_eq!(
        line(&lines, "io_uring_setup"),
        &Line {
            check: "io_uring_setup".into(),
            status: "warn".into(),
            detail: format!("fails with EPERM (Operation not permitted): {cause}"),
            fix: Some(SECCOMP_FIX.into()),
        }
    );
    assert_eq!(
        line(&lines, "seccomp"),
        &Line {
            check: "seccomp".into(),
            status: "warn".into(),
            detail: "mode 2: a seccomp filter is installed and io_uring_setup fails with EPERM \
                     (Operation not permitted): the filter blocks io_uring"
                .into(),
            fix: Some(SECCOMP_FIX.into()),
        }
    );
    assert_eq!(
        line(&lines, "backend"),
        &Line {
            check: "backend".into(),
            status: "warn".into(),
            detail: format!("auto would pick epoll: {refused}"),
            fix: Some(SECCOMP_FIX.into()),
        }
    );
    // No ring, no locked memory (the line is ok: not in the list above).
    let memlock = &line(&lines, "memlock").detail;
    assert!(
        memlock.ends_with("; not needed: the epoll backend pins no io_uring memory"),
        "{memlock}"
    );

    // With `--backend io-uring` they fail, and so does doctor.
    let mut cmd = ringport(&["doctor", "--json", "--backend", "io-uring"]);
    seccomp::block_io_uring(&mut cmd);
    let (code, lines) = doctor(&mut cmd);
    assert_eq!(code, 1);
    assert_eq!(
        not_ok(&lines),
        [
            ("io_uring_setup", "fail"),
            ("io_uring_ops", "warn"),
            ("buffer_rings", "warn"),
            ("multishot_recv", "warn"),
            ("min_wait", "warn"),
            ("msg_ring", "warn"),
            ("registered_ring_fd", "warn"),
            ("seccomp", "fail"),
            ("memlock", "warn"),
            ("backend", "fail"),
        ]
    );
    assert_eq!(
        line(&lines, "backend"),
        &Line {
            check: "backend".into(),
            status: "fail".into(),
            detail: format!("--backend io-uring, but io_uring fails here: {refused}"),
            fix: Some(format!(
                "{SECCOMP_FIX}; or run with --backend auto or epoll"
            )),
        }
    );

    // The real server agrees. `serve --backend io-uring` stops with the
    // error that names seccomp.
    let cpu = allowed_cpus().unwrap()[0].to_string();
    let port = free_port();
    let listen = format!("echo@tcp:127.0.0.1:{port}");
    let serve = [
        "serve", "--listen", &listen, "--shards", "1", "--cpus", &cpu,
    ];
    let mut cmd = ringport(&serve);
    cmd.args(["--backend", "io-uring"]);
    seccomp::block_io_uring(&mut cmd);
    let (code, stderr) = serve_fails(&mut cmd);
    assert_eq!(code, 1);
    assert_eq!(
        sysctl("kernel/io_uring_disabled"),
        "0",
        "this test needs io_uring on"
    );
    let engine_error = format!(
        "io_uring is unavailable: io_uring_setup failed with Operation not permitted (os error \
         1). kernel.io_uring_disabled is 0, so a seccomp profile is the likely cause (Docker's \
         and Podman's default profiles block io_uring_setup; allow io_uring_setup, \
         io_uring_enter and io_uring_register, or run with a custom profile). ringport needs \
         Linux 6.1 or newer (this is {}).",
        sysctl("kernel/osrelease")
    );
    assert_eq!(stderr, format!("ringport: error: {engine_error}\n"));

    // `serve` (auto) serves on epoll, saying why, and stops cleanly.
    let mut cmd = ringport(&serve);
    seccomp::block_io_uring(&mut cmd);
    let mut child = cmd.spawn().expect("start ringport serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let first = lines.recv_timeout(PROCESS_TIMEOUT);
    // It serves: an echo round trip through the epoll backend. (The plan
    // table follows the first line, so the port is bound by now.)
    let echoed = first.is_ok().then(|| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(PROCESS_TIMEOUT)).unwrap();
        s.write_all(b"served on epoll").unwrap();
        let mut got = [0u8; 15];
        s.read_exact(&mut got).unwrap();
        got
    });
    // SAFETY: signals the child started above, which has not been reaped.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    wait_bounded(&mut child, &cmd);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let first = first.unwrap_or_else(|_| panic!("serve printed nothing; stderr:\n{stderr}"));
    assert_eq!(echoed.as_ref(), Some(b"served on epoll"));
    assert!(
        first.starts_with("ringport ")
            && first.ends_with(&format!(
                " serving 1 shard(s), mode range, backend epoll, kernel {}",
                sysctl("kernel/osrelease")
            )),
        "{first}"
    );
    assert_eq!(
        stderr.lines().next(),
        Some(
            format!(
                "ringport: note: serving on the epoll backend: {engine_error} (--backend \
                 io-uring makes this an error)"
            )
            .as_str()
        ),
        "{stderr}"
    );
    assert_eq!(child.wait().unwrap().code(), Some(0), "{stderr}");
}

#[test]
fn a_config_needing_more_open_files_than_the_hard_limit() {
    let cpu = allowed_cpus().unwrap()[0];
    let first = 40000;
    let config = ConfigFile::new(&format!(
        "listen = [\"echo@tcp:127.0.0.1:{first}-{}\"]\nshards = 1\ncpus = \"{cpu}\"\n",
        first + 299
    ));
    let mut cmd = ringport(&["doctor", "--json", "--config", config.path()]);
    limit_open_files(&mut cmd, 256, 256);
    let (code, lines) = doctor(&mut cmd);
    assert_eq!(code, 1);
    assert_eq!(not_ok(&lines), [("open_files", "fail")]);
    assert_eq!(
        line(&lines, "open_files"),
        &Line {
            check: "open_files".into(),
            status: "fail".into(),
            detail: "the plan needs 382 file descriptors (300 listening sockets, 2 for 1 \
                     shard(s), 16 for the process, 64 kept for connections) but the hard limit \
                     is 256"
                .into(),
            fix: Some(
                "raise the hard limit to at least 382 (LimitNOFILE=382 in the systemd unit, \
                 `ulimit -Hn 382` as root, or nofile in /etc/security/limits.conf), or bind \
                 fewer ports or run fewer shards"
                    .into()
            ),
        }
    );

    // `serve` with the same config and limit refuses the plan before binding.
    let mut cmd = ringport(&["serve", "--config", config.path()]);
    limit_open_files(&mut cmd, 256, 256);
    let (code, stderr) = serve_fails(&mut cmd);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "ringport: error: the plan needs 382 file descriptors but RLIMIT_NOFILE is 256: 300 \
         listening sockets, 2 for 1 shards (2 each), 16 for the process and 64 kept for \
         connections; bind fewer ports, run fewer shards, or raise the limit (`ulimit -n \
         382`, or LimitNOFILE=382 in a systemd unit)\n"
    );

    // A soft limit below the plan is fine while the hard one is not.
    let mut cmd = ringport(&["doctor", "--json", "--config", config.path()]);
    limit_open_files(&mut cmd, 256, 400);
    let (code, lines) = doctor(&mut cmd);
    assert_eq!((code, not_ok(&lines)), (0, vec![]));
    assert_eq!(
        line(&lines, "open_files").detail,
        "soft 256, hard 400; the plan needs 382 (300 listening sockets, 2 for 1 shard(s), 16 \
         for the process, 64 kept for connections); ringport raises the soft limit to 400 at \
         start, leaving 82 for connections"
    );
}

#[test]
fn udp_rcvbuf_above_rmem_max() {
    let max: u64 = sysctl("net/core/rmem_max").parse().unwrap();
    let ask = (max + 4096).to_string();
    let (code, lines) = doctor(&mut ringport(&["doctor", "--json", "--udp-rcvbuf", &ask]));
    // The kernel caps the buffer and ringport runs: a warning, exit 0.
    assert_eq!(code, 0);
    assert_eq!(not_ok(&lines), [("rmem_max", "warn")]);
    assert_eq!(
        line(&lines, "rmem_max"),
        &Line {
            check: "rmem_max".into(),
            status: "warn".into(),
            detail: format!(
                "--udp-rcvbuf asks {ask} bytes but net.core.rmem_max is {max}: UDP sockets get \
                 {max}, and bursts beyond it are dropped"
            ),
            fix: Some(format!(
                "sysctl -w net.core.rmem_max={ask} (and persist it in /etc/sysctl.d/), or lower \
                 udp_rcvbuf to {max}"
            )),
        }
    );
}

#[test]
fn cpus_the_process_may_not_use() {
    let allowed = allowed_cpus().unwrap();
    let cpu = allowed[0];
    // Another CPU: one the test may use, or past the only one.
    let other = allowed.get(1).copied().unwrap_or(cpu + 1);
    let cpus = format!("{cpu},{other}");
    // As a CPU list prints: `0-1` for `0,1`.
    let shown = format_cpus(&[cpu, other]);
    let first = free_port();
    let listen = format!("echo@tcp:127.0.0.1:{first}-{}", first + 1);
    let flags = ["--cpus", cpus.as_str(), "--listen", listen.as_str()];

    let mut cmd = ringport(&["doctor", "--json"]);
    cmd.args(flags);
    pin_to(&mut cmd, cpu);
    let (code, lines) = doctor(&mut cmd);
    assert_eq!(code, 1);
    assert_eq!(not_ok(&lines), [("cpus", "fail")]);
    assert_eq!(
        line(&lines, "cpus"),
        &Line {
            check: "cpus".into(),
            status: "fail".into(),
            detail: format!(
                "--cpus {shown} names CPU {other}, which this process may not use (it may use \
                 {cpu})"
            ),
            fix: Some(format!(
                "name CPUs among {cpu} in --cpus, or widen the process's affinity (taskset, \
                 the cgroup cpuset)"
            )),
        }
    );

    let mut cmd = ringport(&["serve"]);
    cmd.args(flags);
    pin_to(&mut cmd, cpu);
    let (code, stderr) = serve_fails(&mut cmd);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!(
            "ringport: error: CPU {other} is not available to this process; available CPUs: \
             {cpu} (check `taskset -p $$`, the cgroup cpuset, or `--cpus`)\n"
        )
    );
}

#[test]
fn locked_memory_too_low_for_the_rings() {
    // Without CAP_IPC_LOCK, Linux charges io_uring rings to RLIMIT_MEMLOCK
    // (before 5.12, and again on recent kernels such as 6.18): a 4096-entry
    // ring and the two
    // buffer rings of one shard, plus the start-up probe's ring, pin 147
    // pages (588 KiB).
    let cpu = allowed_cpus().unwrap()[0];
    let config = ConfigFile::new(&format!(
        "listen = [\"echo@tcp:127.0.0.1:{}\"]\nshards = 1\ncpus = \"{cpu}\"\nring_entries = \
         4096\n",
        free_port()
    ));
    let mut cmd = ringport(&["doctor", "--json", "--config", config.path()]);
    limit_locked_memory(&mut cmd, 128 << 10);
    let (code, lines) = doctor(&mut cmd);
    let memlock = line(&lines, "memlock");
    if memlock
        .detail
        .starts_with("soft limit 128 KiB; io_uring charges nothing to it here")
    {
        // A kernel from 5.12 until the memory-region API charges nothing, and a process that
        // could not drop CAP_IPC_LOCK is not charged: nothing to force.
        assert_eq!((code, not_ok(&lines)), (0, vec![]), "{memlock:?}");
        // Straight to stderr, past the harness's capture.
        let _ = writeln!(io::stderr(), "skipped: {}", memlock.detail);
        return;
    }
    assert_eq!(code, 1);
    assert_eq!(not_ok(&lines), [("memlock", "fail")]);
    assert_eq!(
        memlock,
        &Line {
            check: "memlock".into(),
            status: "fail".into(),
            detail: "the plan's rings pin 588 KiB of locked memory (1 shard(s) x 580 KiB \
                     (4096-entry ring, 1024 and 2048 buffer ring entries) and 8 KiB for the \
                     start-up probe) but the RLIMIT_MEMLOCK soft limit is 128 KiB"
                .into(),
            fix: Some(
                "raise RLIMIT_MEMLOCK to at least 602112 bytes (`ulimit -l 588`, or \
                 LimitMEMLOCK=602112 in the systemd unit), or lower ring_entries, tcp_bufs, \
                 udp_bufs or shards"
                    .into()
            ),
        }
    );

    // `serve` with the same config and limit: the shard's ring is refused.
    let mut cmd = ringport(&["serve", "--config", config.path()]);
    limit_locked_memory(&mut cmd, 128 << 10);
    let (code, stderr) = serve_fails(&mut cmd);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "ringport: error: io_uring_setup failed with Cannot allocate memory (os error 12): not \
         enough locked memory for 4096 ring entries (RLIMIT_MEMLOCK soft limit 131072 bytes). \
         Raise it (`ulimit -l unlimited` or LimitMEMLOCK=infinity in the systemd unit) or \
         lower --ring-entries\n"
    );

    // With 1 MiB the plan fits, with room to spare.
    let mut cmd = ringport(&["doctor", "--json", "--config", config.path()]);
    limit_locked_memory(&mut cmd, 1 << 20);
    let (code, lines) = doctor(&mut cmd);
    assert_eq!((code, not_ok(&lines)), (0, vec![]));
    assert_eq!(
        line(&lines, "memlock").detail,
        "the plan's rings pin 588 KiB (1 shard(s) x 580 KiB (4096-entry ring, 1024 and 2048 \
         buffer ring entries) and 8 KiB for the start-up probe) of the 1 MiB RLIMIT_MEMLOCK \
         allows (counted per user)"
    );
}
