//! Shared pieces of the benchmarks.
#![forbid(unsafe_code)]

pub mod trace;

use augur_wire::{Metric, Sample, Source};
use std::path::PathBuf;

/// A sample shaped like the run-loop sample augurd writes each interval (17 readings).
pub fn typical_sample(i: u64) -> Sample {
    let mut s = Sample::new(i % 16, Source::MicrovmRunLoop, i);
    for (k, metric) in [
        Metric::ExitIo,
        Metric::ExitMmio,
        Metric::ExitHlt,
        Metric::ExitShutdown,
        Metric::ExitInternalError,
        Metric::ExitDirtyRingFull,
        Metric::ExitOther,
        Metric::VcpuRunNs,
        Metric::DiskReadBytes,
        Metric::DiskWriteBytes,
        Metric::DiskReadOps,
        Metric::DiskWriteOps,
        Metric::NetTxBytes,
        Metric::NetTxPackets,
        Metric::NetRxBytes,
        Metric::NetRxPackets,
        Metric::GuestProgress,
    ]
    .into_iter()
    .enumerate()
    {
        s.push(metric, i.wrapping_mul(k as u64 + 1));
    }
    s
}

/// A directory on tmpfs where there is one (as augurd's ring would be under /run), else temp.
pub fn ring_dir() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(&shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("a temporary directory")
}
