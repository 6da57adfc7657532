//! CPU lists (`--cpus 0-3,6`) and the CPUs this process may run on.
//!
//! A [`CpuList`] keeps the order the operator wrote, because shard `i` is
//! pinned to the list's `i`-th CPU; it refuses a CPU named twice, since two
//! shards on one CPU by accident would halve both. [`allowed_cpus`] reads the
//! process's affinity mask (what `taskset` or a cgroup cpuset allows), and
//! [`check_available`] refuses a list that names a CPU outside it.

use std::fmt;
use std::io;
use std::str::FromStr;

use thiserror::Error;

/// CPU numbers at or above this are refused by the parser. It is Linux's
/// largest `NR_CPUS`, and it bounds the memory a range like `0-4000000000`
/// would take.
pub const CPU_LIMIT: usize = 8192;

/// A correct CPU list, quoted in error messages.
const EXAMPLE: &str = "0-3,6";

/// A list of CPU numbers in the order given, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CpuList(Vec<usize>);

/// Why a CPU list did not parse or cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CpuError {
    /// The list is empty.
    #[error("empty CPU list: name at least one CPU, e.g. `{EXAMPLE}`")]
    Empty,
    /// An empty item between commas, or a leading or trailing comma.
    #[error(
        "bad CPU list `{list}`: item {item} is empty (stray comma?); write CPUs and \
         ranges separated by single commas, e.g. `{EXAMPLE}`"
    )]
    EmptyItem {
        /// The list as given.
        list: String,
        /// The 1-based position of the empty item.
        item: usize,
    },
    /// An item that is not a CPU number or a `FIRST-LAST` range of them.
    #[error(
        "bad CPU list `{list}`: `{text}` is not a CPU number; write CPUs as numbers \
         and ranges as FIRST-LAST, e.g. `{EXAMPLE}`"
    )]
    BadNumber {
        /// The list as given.
        list: String,
        /// The offending text.
        text: String,
    },
    /// A CPU number at or above [`CPU_LIMIT`].
    #[error("bad CPU list `{list}`: CPU {cpu} is too large: Linux numbers CPUs below {CPU_LIMIT}")]
    TooLarge {
        /// The list as given.
        list: String,
        /// The offending CPU number.
        cpu: usize,
    },
    /// A range whose last CPU is below its first.
    #[error("bad CPU list `{list}`: range `{first}-{last}` is reversed: write `{last}-{first}`")]
    Reversed {
        /// The list as given.
        list: String,
        /// The first CPU as written.
        first: usize,
        /// The last CPU as written.
        last: usize,
    },
    /// A CPU named twice.
    #[error(
        "bad CPU list `{list}`: CPU {cpu} is listed twice; name each CPU once \
         (more shards than CPUs wrap around the list on their own)"
    )]
    Duplicate {
        /// The list as given.
        list: String,
        /// The CPU named twice.
        cpu: usize,
    },
    /// A CPU this process may not run on.
    #[error(
        "CPU {cpu} is not available to this process; available CPUs: {available} \
         (check `taskset -p $$`, the cgroup cpuset, or `--cpus`)",
        available = display_available(.available)
    )]
    Unavailable {
        /// The first unavailable CPU of the list.
        cpu: usize,
        /// The CPUs the process may run on.
        available: Vec<usize>,
    },
}

fn display_available(cpus: &[usize]) -> String {
    if cpus.is_empty() {
        "none".to_owned()
    } else {
        format_cpus(cpus)
    }
}

impl CpuList {
    /// A list of `cpus` in the given order, refusing duplicates and numbers
    /// at or above [`CPU_LIMIT`].
    pub fn new(cpus: Vec<usize>) -> Result<Self, CpuError> {
        if cpus.is_empty() {
            return Err(CpuError::Empty);
        }
        let list = || format_cpus(&cpus);
        let mut seen = vec![false; CPU_LIMIT];
        for &cpu in &cpus {
            if cpu >= CPU_LIMIT {
                return Err(CpuError::TooLarge { list: list(), cpu });
            }
            if std::mem::replace(&mut seen[cpu], true) {
                return Err(CpuError::Duplicate { list: list(), cpu });
            }
        }
        Ok(CpuList(cpus))
    }

    /// The CPUs in the given order.
    pub fn as_slice(&self) -> &[usize] {
        &self.0
    }

    /// The CPUs in the given order.
    pub fn into_vec(self) -> Vec<usize> {
        self.0
    }

    /// How many CPUs the list names (never 0).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a list names at least one CPU.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The CPUs in the given order.
    pub fn iter(&self) -> std::iter::Copied<std::slice::Iter<'_, usize>> {
        self.0.iter().copied()
    }
}

impl FromStr for CpuList {
    type Err = CpuError;

    /// Parses comma-separated CPU numbers and inclusive `FIRST-LAST` ranges,
    /// e.g. `0-3,6`, keeping the order written.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(CpuError::Empty);
        }
        let list = || s.to_owned();
        let number = |text: &str| -> Result<usize, CpuError> {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CpuError::BadNumber {
                    list: list(),
                    text: text.to_owned(),
                });
            }
            match text.parse::<usize>() {
                Ok(cpu) if cpu < CPU_LIMIT => Ok(cpu),
                Ok(cpu) => Err(CpuError::TooLarge { list: list(), cpu }),
                // Only overflow is left: too many digits for a usize.
                Err(_) => Err(CpuError::TooLarge {
                    list: list(),
                    cpu: usize::MAX,
                }),
            }
        };

        let mut cpus = Vec::new();
        let mut seen = vec![false; CPU_LIMIT];
        for (index, item) in s.split(',').enumerate() {
            if item.is_empty() {
                return Err(CpuError::EmptyItem {
                    list: list(),
                    item: index + 1,
                });
            }
            let (first, last) = match item.split_once('-') {
                Some((first, last)) => (number(first)?, number(last)?),
                None => {
                    let cpu = number(item)?;
                    (cpu, cpu)
                }
            };
            if last < first {
                return Err(CpuError::Reversed {
                    list: list(),
                    first,
                    last,
                });
            }
            if let Some(offset) = seen[first..=last].iter().position(|&seen| seen) {
                return Err(CpuError::Duplicate {
                    list: list(),
                    cpu: first + offset,
                });
            }
            seen[first..=last].fill(true);
            cpus.extend(first..=last);
        }
        Ok(CpuList(cpus))
    }
}

impl fmt::Display for CpuList {
    /// The list in the syntax it parses from, with ascending runs folded
    /// into ranges: `[0, 1, 2, 3, 6]` prints as `0-3,6`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_cpus(&self.0))
    }
}

/// Formats CPU numbers as a CPU list, folding runs of consecutive ascending
/// numbers into `FIRST-LAST` ranges.
pub fn format_cpus(cpus: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j].checked_add(1) == Some(cpus[j + 1]) {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j == i {
            out.push_str(&cpus[i].to_string());
        } else {
            out.push_str(&format!("{}-{}", cpus[i], cpus[j]));
        }
        i = j + 1;
    }
    out
}

/// The CPUs the calling process may run on, ascending (its affinity mask, as
/// set by `taskset` or a cgroup cpuset).
///
/// Machines with more CPUs than a `cpu_set_t` holds are handled by retrying
/// with a larger mask.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    const WORD_BITS: usize = libc::c_ulong::BITS as usize;
    // Start with glibc's `cpu_set_t` size (1024 CPUs), grow while the kernel
    // says the mask is too small for its CPU count.
    let mut words = 1024 / WORD_BITS;
    loop {
        let mut mask: Vec<libc::c_ulong> = vec![0; words];
        let bytes = words * std::mem::size_of::<libc::c_ulong>();
        // SAFETY: `mask` is a live, writable buffer of exactly `bytes` bytes,
        // aligned for `c_ulong` (the kernel's mask word); the kernel and the
        // libc wrapper write at most `bytes` bytes into it. Pid 0 means the
        // calling thread, which is what the process's other threads inherit.
        let rc = unsafe {
            libc::sched_getaffinity(0, bytes, mask.as_mut_ptr().cast::<libc::cpu_set_t>())
        };
        if rc == 0 {
            let cpus = mask
                .iter()
                .enumerate()
                .flat_map(|(w, &word)| {
                    (0..WORD_BITS)
                        .filter(move |bit| word & (1 << bit) != 0)
                        .map(move |bit| w * WORD_BITS + bit)
                })
                .collect();
            return Ok(cpus);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINVAL) && words * WORD_BITS < 4 * CPU_LIMIT {
            words *= 2;
            continue;
        }
        return Err(err);
    }
}

/// Checks that every CPU of `list` is in `allowed` (usually [`allowed_cpus`]).
/// The error names the first CPU that is not and lists the available ones.
pub fn check_available(list: &CpuList, allowed: &[usize]) -> Result<(), CpuError> {
    match list.iter().find(|cpu| !allowed.contains(cpu)) {
        None => Ok(()),
        Some(cpu) => {
            let mut available = allowed.to_vec();
            available.sort_unstable();
            available.dedup();
            Err(CpuError::Unavailable { cpu, available })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<usize>, CpuError> {
        s.parse::<CpuList>().map(CpuList::into_vec)
    }

    fn err(s: &str) -> String {
        s.parse::<CpuList>().expect_err(s).to_string()
    }

    #[test]
    fn parses_numbers_and_ranges_in_order() {
        assert_eq!(parse("0"), Ok(vec![0]));
        assert_eq!(parse("0-3,6"), Ok(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse("6,0-1"), Ok(vec![6, 0, 1]));
        assert_eq!(parse("3,2,1"), Ok(vec![3, 2, 1]));
        assert_eq!(parse("5-5"), Ok(vec![5]));
        assert_eq!(parse("8191"), Ok(vec![8191]));
        let list: CpuList = "1-2,7".parse().unwrap();
        assert_eq!(list.as_slice(), &[1, 2, 7]);
        assert_eq!(list.len(), 3);
        assert!(!list.is_empty());
        assert_eq!(list.iter().collect::<Vec<_>>(), vec![1, 2, 7]);
    }

    #[test]
    fn display_folds_runs() {
        for s in ["0-3,6", "6,0-1", "3,2,1", "0", "0-1", "1,3,5-7"] {
            assert_eq!(s.parse::<CpuList>().unwrap().to_string(), s);
        }
        assert_eq!("0,1,2,3".parse::<CpuList>().unwrap().to_string(), "0-3");
        assert_eq!(format_cpus(&[]), "");
        assert_eq!(format_cpus(&[4, 5, 0, 1, 2, 9]), "4-5,0-2,9");
    }

    #[test]
    fn rejects_empty_lists_and_items() {
        assert_eq!(parse(""), Err(CpuError::Empty));
        assert_eq!(
            err(""),
            "empty CPU list: name at least one CPU, e.g. `0-3,6`"
        );
        assert_eq!(
            err("0,,2"),
            "bad CPU list `0,,2`: item 2 is empty (stray comma?); write CPUs and ranges \
             separated by single commas, e.g. `0-3,6`"
        );
        assert_eq!(
            parse("0,1,"),
            Err(CpuError::EmptyItem {
                list: "0,1,".into(),
                item: 3
            })
        );
        assert_eq!(
            parse(",0"),
            Err(CpuError::EmptyItem {
                list: ",0".into(),
                item: 1
            })
        );
    }

    #[test]
    fn rejects_bad_numbers() {
        assert_eq!(
            err("0-3,x"),
            "bad CPU list `0-3,x`: `x` is not a CPU number; write CPUs as numbers and \
             ranges as FIRST-LAST, e.g. `0-3,6`"
        );
        for (list, text) in [
            ("1-", ""),
            ("-1", ""),
            ("1-2-3", "2-3"),
            (" 1", " 1"),
            ("+1", "+1"),
            ("cpu0", "cpu0"),
        ] {
            assert_eq!(
                parse(list),
                Err(CpuError::BadNumber {
                    list: list.into(),
                    text: text.into()
                }),
                "{list}"
            );
        }
    }

    #[test]
    fn rejects_too_large() {
        assert_eq!(
            err("0-8192"),
            "bad CPU list `0-8192`: CPU 8192 is too large: Linux numbers CPUs below 8192"
        );
        assert_eq!(
            parse("99999999999999999999999"),
            Err(CpuError::TooLarge {
                list: "99999999999999999999999".into(),
                cpu: usize::MAX
            })
        );
    }

    #[test]
    fn rejects_reversed_ranges() {
        assert_eq!(
            err("0,3-1"),
            "bad CPU list `0,3-1`: range `3-1` is reversed: write `1-3`"
        );
    }

    #[test]
    fn rejects_duplicates() {
        assert_eq!(
            err("0-3,2"),
            "bad CPU list `0-3,2`: CPU 2 is listed twice; name each CPU once \
             (more shards than CPUs wrap around the list on their own)"
        );
        assert_eq!(
            parse("1,1"),
            Err(CpuError::Duplicate {
                list: "1,1".into(),
                cpu: 1
            })
        );
        assert_eq!(
            parse("0-2,1-3"),
            Err(CpuError::Duplicate {
                list: "0-2,1-3".into(),
                cpu: 1
            })
        );
    }

    #[test]
    fn new_checks_like_the_parser() {
        assert_eq!(CpuList::new(vec![3, 1]).unwrap().as_slice(), &[3, 1]);
        assert_eq!(CpuList::new(vec![]), Err(CpuError::Empty));
        assert_eq!(
            CpuList::new(vec![0, 1, 0]),
            Err(CpuError::Duplicate {
                list: "0-1,0".into(),
                cpu: 0
            })
        );
        assert_eq!(
            CpuList::new(vec![CPU_LIMIT]),
            Err(CpuError::TooLarge {
                list: "8192".into(),
                cpu: CPU_LIMIT
            })
        );
    }

    #[test]
    fn check_available_names_the_first_missing_cpu() {
        let list: CpuList = "1,6,0,7".parse().unwrap();
        assert_eq!(check_available(&list, &[0, 1, 6, 7]), Ok(()));
        let e = check_available(&list, &[3, 2, 1, 0]).unwrap_err();
        assert_eq!(
            e,
            CpuError::Unavailable {
                cpu: 6,
                available: vec![0, 1, 2, 3]
            }
        );
        assert_eq!(
            e.to_string(),
            "CPU 6 is not available to this process; available CPUs: 0-3 \
             (check `taskset -p $$`, the cgroup cpuset, or `--cpus`)"
        );
        assert_eq!(
            check_available(&list, &[]).unwrap_err().to_string(),
            "CPU 1 is not available to this process; available CPUs: none \
             (check `taskset -p $$`, the cgroup cpuset, or `--cpus`)"
        );
    }

    #[test]
    fn allowed_cpus_matches_the_kernels_list() {
        // The kernel prints the calling thread's mask in CPU-list syntax.
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap();
        let expected: CpuList = line.trim().parse().unwrap();
        let mut expected = expected.into_vec();
        expected.sort_unstable();
        assert_eq!(allowed_cpus().unwrap(), expected);
    }
}
