//! Syscall counts by family, counted in the guest kernel by perf tracepoint counters (one per
//! syscall tracepoint and CPU): no event is copied to user space, a read costs one syscall per
//! counter per interval.

use augur_wire::Metric;
use perf_event::events::Tracepoint;
use perf_event::{Builder, Counter};
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

fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One tracepoint counted on every CPU.
#[derive(Debug)]
struct PerCpu(Vec<Counter>);

impl PerCpu {
    fn open(id: u64, cpus: usize) -> Option<Self> {
        let mut counters = Vec::with_capacity(cpus);
        for cpu in 0..cpus {
            let mut counter = Builder::new(Tracepoint::with_id(id))
                .any_pid()
                .one_cpu(cpu)
                .include_kernel()
                .build()
                .ok()?;
            counter.enable().ok()?;
            counters.push(counter);
        }
        Some(Self(counters))
    }

    fn read(&mut self) -> u64 {
        self.0.iter_mut().filter_map(|c| c.read().ok()).sum()
    }
}

/// The open counters, or why there are none.
#[derive(Debug)]
pub struct SyscallCounters {
    total: Option<PerCpu>,
    families: Vec<(Metric, Vec<PerCpu>)>,
}

impl SyscallCounters {
    /// Opens what this kernel offers. `Err` says why syscalls cannot be counted at all.
    pub fn open() -> Result<Self, String> {
        let root = tracefs().ok_or("tracefs is not mounted and could not be mounted")?;
        let cpus = online_cpus();
        let total =
            event_id(&root, "raw_syscalls", "sys_enter").and_then(|id| PerCpu::open(id, cpus));
        let families: Vec<(Metric, Vec<PerCpu>)> = FAMILIES
            .iter()
            .map(|(metric, names)| {
                let counters = names
                    .iter()
                    .filter_map(|n| event_id(&root, "syscalls", &format!("sys_enter_{n}")))
                    .filter_map(|id| PerCpu::open(id, cpus))
                    .collect();
                (*metric, counters)
            })
            .collect();
        if total.is_none() && families.iter().all(|(_, c)| c.is_empty()) {
            return Err(format!(
                "no syscall tracepoint could be counted under {} (perf_event_open refused or the kernel lacks syscall tracepoints)",
                root.display()
            ));
        }
        Ok(Self { total, families })
    }

    /// Cumulative counts: the total, then each family (`None` for a family with no counter).
    pub fn read(&mut self) -> (Option<u64>, Vec<(Metric, Option<u64>)>) {
        let total = self.total.as_mut().map(PerCpu::read);
        let families = self
            .families
            .iter_mut()
            .map(|(metric, counters)| {
                let value =
                    (!counters.is_empty()).then(|| counters.iter_mut().map(PerCpu::read).sum());
                (*metric, value)
            })
            .collect();
        (total, families)
    }
}

/// Instructions and cycles from the guest's PMU, where it has one.
#[derive(Debug)]
pub struct GuestPmu {
    instructions: PerCpu,
    cycles: PerCpu,
}

impl GuestPmu {
    pub fn open() -> Option<Self> {
        use perf_event::events::Hardware;
        let open = |event: Hardware| {
            let mut counters = Vec::new();
            for cpu in 0..online_cpus() {
                let mut c = Builder::new(event).any_pid().one_cpu(cpu).build().ok()?;
                c.enable().ok()?;
                counters.push(c);
            }
            Some(PerCpu(counters))
        };
        Some(Self {
            instructions: open(Hardware::INSTRUCTIONS)?,
            cycles: open(Hardware::CPU_CYCLES)?,
        })
    }

    pub fn read(&mut self) -> (u64, u64) {
        (self.instructions.read(), self.cycles.read())
    }
}
