//! The one crate of Augur that holds `unsafe` code. Every other crate is `#![forbid(unsafe_code)]`
//! and reaches the kernel through the safe types here:
//!
//! - [`GuestMemory`]: anonymous guest RAM, bounds-checked accessors, registration as a KVM slot;
//! - [`KvmStats`]: KVM binary statistics (`KVM_GET_STATS_FD`) of a VM or a vCPU;
//! - [`DirtyRing`]: the per-vCPU KVM dirty ring (`KVM_CAP_DIRTY_LOG_RING`);
//! - [`SharedRegion`]: a file-backed shared mapping with atomic words, for the sample ring;
//! - [`mount_tracefs`]: mounting tracefs where it is absent.

mod dirty_ring;
mod guest_memory;
mod kvm_stats;
mod shared_region;
mod tracefs;

pub use dirty_ring::{DirtyGfn, DirtyRing, DirtyRingError};
pub use guest_memory::{GuestMemory, GuestMemoryError};
pub use kvm_stats::{KvmStat, KvmStatKind, KvmStats, KvmStatsError};
pub use shared_region::{SharedRegion, SharedRegionError};
pub use tracefs::mount_tracefs;

/// The host's page size in bytes.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Clock ticks per second, the unit of CPU times in /proc.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// CPU time consumed by the calling thread.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; the clock id is a constant the kernel knows.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if ret != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Pins the calling thread to one CPU (benchmarks use it to measure cross-core transfer).
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: cpu is below CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: set is a valid cpu_set_t of the size passed; 0 means the calling thread.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
