//! The VMM process as /proc shows it: CPU time per thread (`/proc/PID/task/TID/stat`), I/O
//! (`/proc/PID/io`, per thread `/proc/PID/task/TID/io`), threads and RSS. Works for any VMM
//! (QEMU, Firecracker, augurd itself); the reader takes a root so tests use a fake /proc.

use augur_wire::{Metric, Sample, Source, VmId};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("Failed to read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Malformed {path}: {reason}")]
    Malformed { path: String, reason: &'static str },
}

/// CPU times of one task, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCpu {
    pub utime: u64,
    pub stime: u64,
    pub threads: u64,
    pub rss_pages: u64,
}

/// The counters of a `/proc/.../io` file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskIo {
    pub rchar: u64,
    pub wchar: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// Reads /proc, or a directory laid out like it.
#[derive(Debug, Clone)]
pub struct ProcReader {
    root: PathBuf,
    ticks_per_second: u64,
}

impl Default for ProcReader {
    fn default() -> Self {
        Self::with_root(Path::new("/proc"))
    }
}

impl ProcReader {
    pub fn with_root(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            ticks_per_second: augur_sys::clock_ticks_per_second(),
        }
    }

    fn read(&self, path: &Path) -> Result<String, ProcError> {
        std::fs::read_to_string(path).map_err(|source| ProcError::Read {
            path: path.display().to_string(),
            source,
        })
    }

    fn task_dir(&self, pid: u32, tid: Option<u32>) -> PathBuf {
        let dir = self.root.join(pid.to_string());
        match tid {
            Some(tid) => dir.join("task").join(tid.to_string()),
            None => dir,
        }
    }

    /// Parses a `stat` file. The command name may hold spaces and parentheses, so fields are
    /// counted from the last ')'.
    pub fn cpu(&self, pid: u32, tid: Option<u32>) -> Result<TaskCpu, ProcError> {
        let path = self.task_dir(pid, tid).join("stat");
        let text = self.read(&path)?;
        let malformed = |reason| ProcError::Malformed {
            path: path.display().to_string(),
            reason,
        };
        let after = text
            .rfind(')')
            .map(|i| &text[i + 1..])
            .ok_or_else(|| malformed("no ')' after the command name"))?;
        // After ")": state is field 3; utime 14, stime 15, num_threads 20, rss 24 (1-based).
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |n: usize| -> Result<u64, ProcError> {
            fields
                .get(n - 3)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| malformed("missing or non-numeric field"))
        };
        Ok(TaskCpu {
            utime: field(14)?,
            stime: field(15)?,
            threads: field(20)?,
            rss_pages: field(24)?,
        })
    }

    /// Parses an `io` file (needs ptrace-read access to the process).
    pub fn io(&self, pid: u32, tid: Option<u32>) -> Result<TaskIo, ProcError> {
        let path = self.task_dir(pid, tid).join("io");
        let text = self.read(&path)?;
        let mut io = TaskIo::default();
        let mut seen = 0;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<u64>() else {
                continue;
            };
            let slot = match key.trim() {
                "rchar" => &mut io.rchar,
                "wchar" => &mut io.wchar,
                "read_bytes" => &mut io.read_bytes,
                "write_bytes" => &mut io.write_bytes,
                _ => continue,
            };
            *slot = value;
            seen += 1;
        }
        if seen < 4 {
            return Err(ProcError::Malformed {
                path: path.display().to_string(),
                reason: "expected rchar, wchar, read_bytes and write_bytes",
            });
        }
        Ok(io)
    }

    fn ticks_to_ns(&self, ticks: u64) -> u64 {
        ticks.saturating_mul(1_000_000_000) / self.ticks_per_second
    }

    /// A sample of a whole VMM process.
    pub fn sample_process(&self, vm: VmId, pid: u32, ts_ns: u64) -> Sample {
        let mut sample = Sample::new(vm, Source::Proc, ts_ns);
        match self.cpu(pid, None) {
            Ok(cpu) => sample
                .push(Metric::ProcCpuNs, self.ticks_to_ns(cpu.utime + cpu.stime))
                .push(Metric::ProcThreads, cpu.threads)
                .push(
                    Metric::ProcRssBytes,
                    cpu.rss_pages * augur_sys::page_size() as u64,
                ),
            Err(_) => sample
                .push_unavailable(Metric::ProcCpuNs)
                .push_unavailable(Metric::ProcThreads)
                .push_unavailable(Metric::ProcRssBytes),
        };
        self.push_io(&mut sample, self.io(pid, None));
        sample
    }

    /// A sample summing the given threads of a process (a VM's vCPU threads inside a shared VMM).
    /// Threads that vanished are skipped; if none could be read the figures are unavailable.
    pub fn sample_threads(&self, vm: VmId, pid: u32, tids: &[u32], ts_ns: u64) -> Sample {
        let mut sample = Sample::new(vm, Source::Proc, ts_ns);
        let cpus: Vec<TaskCpu> = tids
            .iter()
            .filter_map(|t| self.cpu(pid, Some(*t)).ok())
            .collect();
        if cpus.is_empty() {
            sample.push_unavailable(Metric::ProcCpuNs);
        } else {
            let ticks = cpus.iter().map(|c| c.utime + c.stime).sum();
            sample.push(Metric::ProcCpuNs, self.ticks_to_ns(ticks));
        }
        let ios: Vec<TaskIo> = tids
            .iter()
            .filter_map(|t| self.io(pid, Some(*t)).ok())
            .collect();
        let io = (!ios.is_empty()).then(|| {
            ios.iter().fold(TaskIo::default(), |a, b| TaskIo {
                rchar: a.rchar + b.rchar,
                wchar: a.wchar + b.wchar,
                read_bytes: a.read_bytes + b.read_bytes,
                write_bytes: a.write_bytes + b.write_bytes,
            })
        });
        self.push_io(&mut sample, io.ok_or(()));
        sample
    }

    fn push_io<E>(&self, sample: &mut Sample, io: Result<TaskIo, E>) {
        match io {
            Ok(io) => sample
                .push(Metric::ProcRchar, io.rchar)
                .push(Metric::ProcWchar, io.wchar)
                .push(Metric::ProcReadBytes, io.read_bytes)
                .push(Metric::ProcWriteBytes, io.write_bytes),
            Err(_) => sample
                .push_unavailable(Metric::ProcRchar)
                .push_unavailable(Metric::ProcWchar)
                .push_unavailable(Metric::ProcReadBytes)
                .push_unavailable(Metric::ProcWriteBytes),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (qemu (vcpu) 0) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                        250 50 0 0 20 0 7 0 12345 1000000 300 18446744073709551615";
    const IO: &str = "rchar: 1000\nwchar: 2000\nsyscr: 5\nsyscw: 6\nread_bytes: 4096\n\
                      write_bytes: 8192\ncancelled_write_bytes: 0\n";

    fn fake_proc() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join("4242/task/4243");
        std::fs::create_dir_all(&task).unwrap();
        std::fs::write(dir.path().join("4242/stat"), STAT).unwrap();
        std::fs::write(dir.path().join("4242/io"), IO).unwrap();
        std::fs::write(task.join("stat"), STAT).unwrap();
        std::fs::write(task.join("io"), IO).unwrap();
        dir
    }

    #[test]
    fn parses_stat_with_a_hostile_command_name() {
        let dir = fake_proc();
        let reader = ProcReader::with_root(dir.path());
        let cpu = reader.cpu(4242, None).unwrap();
        assert_eq!(
            (cpu.utime, cpu.stime, cpu.threads, cpu.rss_pages),
            (250, 50, 7, 300)
        );
        assert_eq!(reader.io(4242, Some(4243)).unwrap().write_bytes, 8192);
    }

    #[test]
    fn samples_threads_and_marks_missing_ones_unavailable() {
        let dir = fake_proc();
        let reader = ProcReader::with_root(dir.path());
        let s = reader.sample_threads(1, 4242, &[4243, 9999], 5);
        let ns = 300 * 1_000_000_000 / augur_sys::clock_ticks_per_second();
        assert_eq!(s.get(Metric::ProcCpuNs), Some(Some(ns)));
        assert_eq!(s.get(Metric::ProcRchar), Some(Some(1000)));
        let gone = reader.sample_process(1, 1, 5);
        assert_eq!(gone.get(Metric::ProcCpuNs), Some(None));
        assert_eq!(gone.get(Metric::ProcWriteBytes), Some(None));
    }

    #[test]
    fn malformed_files_are_errors() {
        let dir = fake_proc();
        std::fs::write(dir.path().join("4242/stat"), "4242 (qemu S 1").unwrap();
        std::fs::write(dir.path().join("4242/io"), "rchar: x\n").unwrap();
        let reader = ProcReader::with_root(dir.path());
        assert!(matches!(
            reader.cpu(4242, None),
            Err(ProcError::Malformed { .. })
        ));
        assert!(matches!(
            reader.io(4242, None),
            Err(ProcError::Malformed { .. })
        ));
    }
}
