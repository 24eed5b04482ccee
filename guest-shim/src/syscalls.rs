//! Syscall counts by family, counted in the guest kernel by perf tracepoint counters (one per
//! syscall tracepoint and CPU): no event is copied to user space, a read costs one syscall per
//! counter per interval.

use augur_wire::Metric;
use perf_event::events::Tracepoint;
use perf_event::{Builder, Counter, Group};
use std::path::{Path, PathBuf};

/// The syscalls each family counts (`syscalls:sys_enter_NAME`). Names this kernel lacks are
/// skipped.
pub const FAMILIES: [(Metric, &[&str]); 7] = [
    (
        Metric::GuestSysRead,
        &["read", "readv", "pread64", "preadv"],
    ),
    (
        Metric::GuestSysWrite,
        &["write", "writev", "pwrite64", "pwritev"],
    ),
    (
        Metric::GuestSysFile,
        &[
            "open",
            "openat",
            "close",
            "newstat",
            "newfstat",
            "newlstat",
            "newfstatat",
            "statx",
            "lseek",
            "getdents64",
            "fsync",
            "fdatasync",
        ],
    ),
    (
        Metric::GuestSysMemory,
        &["mmap", "munmap", "mprotect", "brk", "madvise", "mremap"],
    ),
    (
        Metric::GuestSysProcess,
        &[
            "clone",
            "clone3",
            "fork",
            "vfork",
            "execve",
            "exit_group",
            "wait4",
        ],
    ),
    (
        Metric::GuestSysWait,
        &[
            "poll",
            "ppoll",
            "select",
            "pselect6",
            "epoll_wait",
            "epoll_pwait",
            "nanosleep",
            "clock_nanosleep",
            "futex",
        ],
    ),
    (
        Metric::GuestSysNet,
        &[
            "socket", "connect", "accept", "accept4", "bind", "listen", "sendto", "recvfrom",
            "sendmsg", "recvmsg",
        ],
    ),
];

const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Where tracefs is, mounting it at /sys/kernel/tracing if nothing has.
pub fn tracefs() -> Option<PathBuf> {
    let found = || {
        TRACEFS_ROOTS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.join("events").is_dir())
    };
    found().or_else(|| {
        // A minimal guest may not have mounted it; the mount(8) binary keeps this crate free
        // of unsafe code.
        let _ = std::process::Command::new("mount")
            .args(["-t", "tracefs", "nodev", TRACEFS_ROOTS[0]])
            .status();
        found()
    })
}

fn event_id(root: &Path, system: &str, event: &str) -> Option<u64> {
    std::fs::read_to_string(root.join("events").join(system).join(event).join("id"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// CPU ids in a kernel CPU list such as "0-3,6,8-9".
pub fn parse_cpu_list(text: &str) -> Vec<usize> {
    text.trim()
        .split(',')
        .filter(|r| !r.is_empty())
        .flat_map(|range| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                (Ok(a), Ok(b)) if a <= b && b < 4096 => (a..=b).collect::<Vec<_>>(),
                _ => Vec::new(),
            }
        })
        .collect()
}

/// The online CPUs: every one must be counted (system-wide counting is per CPU), whatever this
/// process's affinity or quota is.
fn online_cpus() -> Vec<usize> {
    let listed = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|t| parse_cpu_list(&t))
        .unwrap_or_default();
    if listed.is_empty() {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    } else {
        listed
    }
}

/// What one counter counts: all syscalls, or one family.
type Slot = Option<Metric>;

/// One CPU's counters in one perf group, so one read() returns them all.
struct CpuGroup {
    group: Group,
    counters: Vec<(Slot, Counter)>,
}

impl std::fmt::Debug for CpuGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuGroup")
            .field("counters", &self.counters.len())
            .finish()
    }
}

impl CpuGroup {
    fn open(cpu: usize, events: &[(Slot, u64)]) -> Option<Self> {
        let mut group = Group::builder()
            .any_pid()
            .one_cpu(cpu)
            .include_kernel()
            .build_group()
            .ok()?;
        // Every event this kernel offers, or none on this CPU: a family missing on some CPUs
        // would be under-counted without a word (the open-file limit can run out part way).
        let counters: Vec<(Slot, Counter)> = events
            .iter()
            .map(|(slot, id)| {
                let mut counter = Builder::new(Tracepoint::with_id(*id))
                    .any_pid()
                    .one_cpu(cpu)
                    .include_kernel()
                    .build_with_group(&mut group)
                    .ok()?;
                // Enabling the group leader alone leaves tracepoint members off.
                counter.enable().ok()?;
                Some((*slot, counter))
            })
            .collect::<Option<_>>()?;
        if counters.is_empty() {
            return None;
        }
        group.enable().ok()?;
        Some(Self { group, counters })
    }
}

/// The open counters, or why there are none.
#[derive(Debug)]
pub struct SyscallCounters {
    cpus: Vec<CpuGroup>,
    has_total: bool,
}

impl SyscallCounters {
    /// Opens what this kernel offers. `Err` says why syscalls cannot be counted at all.
    pub fn open() -> Result<Self, String> {
        let root = tracefs().ok_or("tracefs is not mounted and could not be mounted")?;
        let mut events: Vec<(Slot, u64)> = Vec::new();
        if let Some(id) = event_id(&root, "raw_syscalls", "sys_enter") {
            events.push((None, id));
        }
        for (metric, names) in FAMILIES {
            for name in names {
                if let Some(id) = event_id(&root, "syscalls", &format!("sys_enter_{name}")) {
                    events.push((Some(metric), id));
                }
            }
        }
        let online = online_cpus();
        let cpus: Vec<CpuGroup> = online
            .iter()
            .filter_map(|cpu| CpuGroup::open(*cpu, &events))
            .collect();
        if cpus.len() < online.len() {
            // A family counted on some CPUs only would under-report without saying so.
            return Err(format!(
                "syscall counters opened on {} of {} CPUs (perf_event_open refused; open-file limit?)",
                cpus.len(),
                online.len()
            ));
        }
        if cpus.is_empty() {
            return Err(format!(
                "no syscall tracepoint could be counted under {} (perf_event_open refused or the kernel lacks syscall tracepoints)",
                root.display()
            ));
        }
        let has_total = cpus[0].counters.iter().any(|(slot, _)| slot.is_none());
        Ok(Self { cpus, has_total })
    }

    /// Cumulative counts: the total, then each family (`None` for a family with no counter).
    pub fn read(&mut self) -> (Option<u64>, Vec<(Metric, Option<u64>)>) {
        let mut total = 0u64;
        let mut families: Vec<(Metric, Option<u64>)> =
            FAMILIES.iter().map(|(m, _)| (*m, None)).collect();
        for cpu in &mut self.cpus {
            let Ok(data) = cpu.group.read() else { continue };
            for (slot, counter) in &cpu.counters {
                let value = data.get(counter).map_or(0, |e| e.value());
                match slot {
                    None => total += value,
                    Some(metric) => {
                        if let Some((_, v)) = families.iter_mut().find(|(m, _)| m == metric) {
                            *v = Some(v.unwrap_or(0) + value);
                        }
                    }
                }
            }
        }
        (self.has_total.then_some(total), families)
    }
}

/// Instructions and cycles from the guest's PMU, where it has one.
#[derive(Debug)]
pub struct GuestPmu {
    instructions: Vec<Counter>,
    cycles: Vec<Counter>,
}

impl GuestPmu {
    pub fn open() -> Option<Self> {
        use perf_event::events::Hardware;
        let open = |event: Hardware| {
            online_cpus()
                .into_iter()
                .map(|cpu| {
                    let mut c = Builder::new(event).any_pid().one_cpu(cpu).build().ok()?;
                    c.enable().ok()?;
                    Some(c)
                })
                .collect::<Option<Vec<Counter>>>()
        };
        Some(Self {
            instructions: open(Hardware::INSTRUCTIONS)?,
            cycles: open(Hardware::CPU_CYCLES)?,
        })
    }

    pub fn read(&mut self) -> (u64, u64) {
        let sum =
            |counters: &mut Vec<Counter>| counters.iter_mut().filter_map(|c| c.read().ok()).sum();
        (sum(&mut self.instructions), sum(&mut self.cycles))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kernel_cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6,8-9\n"), [0, 1, 2, 3, 6, 8, 9]);
        assert_eq!(parse_cpu_list("0"), [0]);
        assert!(parse_cpu_list("garbage").is_empty());
        assert!(parse_cpu_list("5-2").is_empty());
    }

    #[test]
    fn counts_reads_and_writes_by_family() {
        let mut counters = match SyscallCounters::open() {
            Ok(c) => c,
            Err(reason) => {
                println!("SKIPPED counts_reads_and_writes_by_family: {reason}");
                return;
            }
        };
        let (before_total, before) = counters.read();
        let mut file = tempfile_in_tmp();
        for _ in 0..200 {
            use std::io::{Read, Seek, Write};
            file.write_all(b"x").unwrap();
            file.rewind().unwrap();
            let mut b = [0u8; 1];
            file.read_exact(&mut b).unwrap();
        }
        let (after_total, after) = counters.read();
        let grew = |metric: Metric| {
            let find = |v: &[(Metric, Option<u64>)]| {
                v.iter().find(|(m, _)| *m == metric).and_then(|(_, x)| *x)
            };
            find(&after).unwrap_or(0) - find(&before).unwrap_or(0)
        };
        assert!(
            grew(Metric::GuestSysWrite) >= 200,
            "writes: {}",
            grew(Metric::GuestSysWrite)
        );
        assert!(
            grew(Metric::GuestSysRead) >= 200,
            "reads: {}",
            grew(Metric::GuestSysRead)
        );
        assert!(after_total.unwrap_or(0) - before_total.unwrap_or(0) >= 600);
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let path = std::env::temp_dir().join(format!("augur-shim-test-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        file
    }
}
