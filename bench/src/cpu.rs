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

/// The summed CPU time of this process's threads named with one of
/// `prefixes`, or `None` if the listing showed none of them.
fn threads_named(prefixes: &[String]) -> Option<CpuTime> {
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

/// What to sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuSource {
    /// Threads of this process whose name starts with one of these prefixes
    /// (names are cut by the kernel at 15 bytes).
    ThreadsNamed(Vec<String>),
    /// A whole other process.
    Process(u32),
    /// The sum of these (a proxy and its backend); unreadable if one is.
    Sum(Vec<CpuSource>),
    /// Nothing readable (a remote or unknown server).
    None,
}

impl CpuSource {
    /// The CPU time used so far by what this names, or `None` if unreadable.
    pub fn sample(&self) -> Option<CpuTime> {
        match self {
            // Listing /proc/self/task can skip entries while other threads
            // come or go at the same moment: a listing that found none of
            // the threads is looked at again.
            CpuSource::ThreadsNamed(prefixes) => (0..3).find_map(|_| threads_named(prefixes)),
            CpuSource::Process(pid) => read_stat(&format!("/proc/{pid}/stat")),
            CpuSource::Sum(parts) => {
                let mut total = CpuTime::default();
                for p in parts {
                    total.add(p.sample()?);
                }
                Some(total)
            }
            CpuSource::None => None,
        }
    }
}

/// Idle and total time of some CPUs, in clock ticks, from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// Ticks idle (idle + iowait).
    pub idle: u64,
    /// All ticks.
    pub total: u64,
}

impl CpuTicks {
    /// Percent of the time between `earlier` and `self` the CPUs were idle.
    pub fn idle_pct_since(&self, earlier: &CpuTicks) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        (total > 0).then(|| idle as f64 / total as f64 * 100.0)
    }
}

/// Parses the `cpuN` lines of `/proc/stat` text for the CPUs in `cpus`.
pub fn parse_proc_stat(text: &str, cpus: &[usize]) -> Option<CpuTicks> {
    let mut t = CpuTicks::default();
    let mut found = 0;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(n) = f.next().and_then(|h| h.strip_prefix("cpu")) else {
            continue;
        };
        let Ok(n) = n.parse::<usize>() else { continue };
        if !cpus.contains(&n) {
            continue;
        }
        let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal (guest time is in user).
        t.idle += v.get(3)? + v.get(4)?;
        t.total += v.iter().take(8).sum::<u64>();
        found += 1;
    }
    (found == cpus.len()).then_some(t)
}

/// The idle and total ticks of `cpus` now (`None` if one is not in `/proc/stat`).
pub fn cpu_ticks(cpus: &[usize]) -> Option<CpuTicks> {
    parse_proc_stat(&fs::read_to_string("/proc/stat").ok()?, cpus)
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
    fn proc_stat_idle_of_chosen_cpus() {
        let text =
            "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 10 0 5 80 5 0 0 0 0 0\ncpu1 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(
            parse_proc_stat(text, &[0]),
            Some(CpuTicks {
                idle: 85,
                total: 100
            })
        );
        assert_eq!(parse_proc_stat(text, &[0, 1]).map(|t| t.idle), Some(94));
        assert_eq!(parse_proc_stat(text, &[2]), None);
        let a = CpuTicks {
            idle: 10,
            total: 100,
        };
        let b = CpuTicks {
            idle: 40,
            total: 200,
        };
        assert_eq!(b.idle_pct_since(&a), Some(30.0));
    }

    #[test]
    fn own_threads_are_found_by_name() {
        let t = std::thread::Builder::new()
            .name("cpu-probe-test".into())
            .spawn(|| {
                let src = CpuSource::ThreadsNamed(vec!["cpu-probe-test".into()]);
                // Listing /proc/self/task can skip entries while other test
                // threads exit at the same moment; a second look finds it.
                (0..5).find_map(|_| src.sample())
            })
            .unwrap();
        assert!(t.join().unwrap().is_some());
        assert_eq!(
            CpuSource::ThreadsNamed(vec!["no-such-thread".into()]).sample(),
            None
        );
    }
}
