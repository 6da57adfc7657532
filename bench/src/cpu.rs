//! CPU time of threads and processes, read from `/proc`.
//!
//! The kernel accounts user and system time per thread in clock ticks
//! (`/proc/<pid>/task/<tid>/stat`, fields 14 and 15). The harness samples the
//! threads of the server (by name for in-process servers, the whole process
//! for external ones) and of the load generator at the start and the end of
//! the measurement window and reports the difference.

use std::fs;

/// User and system CPU seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CpuTime {
    /// Seconds in user mode.
    pub user: f64,
    /// Seconds in the kernel.
    pub sys: f64,
}

impl CpuTime {
    /// `self - earlier`, never negative.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user: (self.user - earlier.user).max(0.0),
            sys: (self.sys - earlier.sys).max(0.0),
        }
    }

    /// User plus system.
    pub fn total(&self) -> f64 {
        self.user + self.sys
    }

    fn add(&mut self, other: CpuTime) {
        self.user += other.user;
        self.sys += other.sys;
    }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Parses utime and stime (fields 14 and 15) from a `stat` line. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn parse_stat(line: &str) -> Option<(u64, u64)> {
    let rest = &line[line.rfind(')')? + 1..];
    let mut it = rest.split_whitespace().skip(11);
    let utime = it.next()?.parse().ok()?;
    let stime = it.next()?.parse().ok()?;
    Some((utime, stime))
}

fn read_stat(path: &str) -> Option<CpuTime> {
    let s = fs::read_to_string(path).ok()?;
    let (u, st) = parse_stat(&s)?;
    let hz = ticks_per_second();
    Some(CpuTime {
        user: u as f64 / hz,
        sys: st as f64 / hz,
    })
}

/// What to sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuSource {
    /// Threads of this process whose name starts with one of these prefixes
    /// (names are cut by the kernel at 15 bytes).
    ThreadsNamed(Vec<String>),
    /// A whole other process.
    Process(u32),
    /// Nothing readable (a remote or unknown server).
    None,
}

impl CpuSource {
    /// The CPU time used so far by what this names, or `None` if unreadable.
    pub fn sample(&self) -> Option<CpuTime> {
        match self {
            CpuSource::ThreadsNamed(prefixes) => {
                let mut total = CpuTime::default();
                let mut found = false;
                for e in fs::read_dir("/proc/self/task").ok()?.flatten() {
                    let dir = e.path();
                    let Ok(comm) = fs::read_to_string(dir.join("comm")) else {
                        continue;
                    };
                    let comm = comm.trim_end();
                    if !prefixes.iter().any(|p| comm.starts_with(p.as_str())) {
                        continue;
                    }
                    if let Some(t) = read_stat(&dir.join("stat").to_string_lossy()) {
                        total.add(t);
                        found = true;
                    }
                }
                found.then_some(total)
            }
            CpuSource::Process(pid) => read_stat(&format!("/proc/{pid}/stat")),
            CpuSource::None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "1234 (a b) c)) S 1 2 3 4 5 6 7 8 9 10 250 37 0 0 20 0 1 0";
        assert_eq!(parse_stat(line), Some((250, 37)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_threads_are_found_by_name() {
        let t = std::thread::Builder::new()
            .name("cpu-probe-test".into())
            .spawn(|| {
                let src = CpuSource::ThreadsNamed(vec!["cpu-probe-test".into()]);
                src.sample()
            })
            .unwrap();
        assert!(t.join().unwrap().is_some());
        assert_eq!(
            CpuSource::ThreadsNamed(vec!["no-such-thread".into()]).sample(),
            None
        );
    }
}
