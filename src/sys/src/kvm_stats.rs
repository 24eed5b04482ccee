//! KVM binary statistics (`KVM_GET_STATS_FD`, Linux 5.14+), for a VM or a vCPU this process owns.
//!
//! The stats file holds a header, a table of descriptors (name, type, unit, offset) and a data
//! block of u64 values. The descriptors are read once; each sample is one `pread` of the data
//! block. Parsing is done on bytes the kernel wrote, but still bounds-checked: a short or odd file
//! is an error, never a panic.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

/// `_IO(KVMIO, 0xce)`.
const KVM_GET_STATS_FD: libc::c_ulong = 0xAECE;
const HEADER_LEN: usize = 24;
const DESC_FIXED_LEN: usize = 16;
const MAX_DESCRIPTORS: u32 = 4096;
const MAX_NAME: u32 = 256;
/// The kernel's data block is a few KiB; a larger claim means a malformed file.
const MAX_DATA_LEN: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum KvmStatsError {
    #[error("KVM_GET_STATS_FD failed (kernel older than 5.14 or not a KVM fd)")]
    Open(#[source] std::io::Error),
    #[error("Failed to read the KVM stats file")]
    Read(#[source] std::io::Error),
    #[error("Malformed KVM stats file: {0}")]
    Malformed(&'static str),
}

/// How a statistic behaves over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmStatKind {
    /// Only grows: derive a rate from two samples.
    Cumulative,
    /// A current level.
    Instant,
    /// The highest level seen.
    Peak,
    /// A histogram; only its bucket sum is reported.
    Histogram,
}

/// One named statistic and its current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmStat {
    pub name: String,
    pub kind: KvmStatKind,
    pub value: u64,
}

#[derive(Debug, Clone)]
struct Descriptor {
    name: String,
    kind: KvmStatKind,
    size: usize,
    offset: usize,
}

/// An open KVM stats file with its parsed descriptor table.
#[derive(Debug)]
pub struct KvmStats {
    file: File,
    data_offset: u64,
    data_len: usize,
    descriptors: Vec<Descriptor>,
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, KvmStatsError> {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(KvmStatsError::Malformed("truncated field"))
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, KvmStatsError> {
    bytes
        .get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or(KvmStatsError::Malformed("truncated field"))
}

impl KvmStats {
    /// Opens the stats of a VM or vCPU file descriptor.
    pub fn open(kvm_fd: &impl AsRawFd) -> Result<Self, KvmStatsError> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1; the fd we pass is
        // a live KVM VM or vCPU descriptor borrowed for the call.
        let fd = unsafe { libc::ioctl(kvm_fd.as_raw_fd(), KVM_GET_STATS_FD, 0) };
        if fd < 0 {
            return Err(KvmStatsError::Open(std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor returned by the kernel that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        Self::from_file(file)
    }

    /// Parses a stats file (the kernel's, or a recorded one in tests).
    pub fn from_file(file: File) -> Result<Self, KvmStatsError> {
        let mut header = [0u8; HEADER_LEN];
        file.read_exact_at(&mut header, 0)
            .map_err(KvmStatsError::Read)?;
        let name_size = u32_at(&header, 4)?;
        let num_desc = u32_at(&header, 8)?;
        let desc_offset = u32_at(&header, 16)?;
        let data_offset = u32_at(&header, 20)?;
        if name_size == 0 || name_size > MAX_NAME || num_desc > MAX_DESCRIPTORS {
            return Err(KvmStatsError::Malformed("implausible header"));
        }
        let desc_len = DESC_FIXED_LEN + name_size as usize;
        let mut table = vec![0u8; desc_len * num_desc as usize];
        file.read_exact_at(&mut table, u64::from(desc_offset))
            .map_err(KvmStatsError::Read)?;
        let mut descriptors = Vec::with_capacity(num_desc as usize);
        let mut data_len = 0usize;
        for raw in table.chunks_exact(desc_len) {
            let flags = u32_at(raw, 0)?;
            let size = usize::from(u16_at(raw, 6)?);
            let offset = u32_at(raw, 8)? as usize;
            let name_bytes = &raw[DESC_FIXED_LEN..];
            let end = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            let name = String::from_utf8_lossy(&name_bytes[..end]).into_owned();
            let kind = match flags & 0xf {
                0 => KvmStatKind::Cumulative,
                1 => KvmStatKind::Instant,
                2 => KvmStatKind::Peak,
                _ => KvmStatKind::Histogram,
            };
            if size == 0 || !offset.is_multiple_of(8) {
                return Err(KvmStatsError::Malformed(
                    "descriptor with bad size or offset",
                ));
            }
            let end = offset.saturating_add(size.saturating_mul(8));
            if end > MAX_DATA_LEN {
                return Err(KvmStatsError::Malformed(
                    "descriptor points past any plausible data block",
                ));
            }
            data_len = data_len.max(end);
            descriptors.push(Descriptor {
                name,
                kind,
                size,
                offset,
            });
        }
        Ok(Self {
            file,
            data_offset: u64::from(data_offset),
            data_len,
            descriptors,
        })
    }

    /// The names of every statistic the kernel offers.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.descriptors.iter().map(|d| d.name.as_str())
    }

    /// Reads every statistic's current value (histograms as the sum of their buckets).
    pub fn read(&self) -> Result<Vec<KvmStat>, KvmStatsError> {
        let mut data = vec![0u8; self.data_len];
        self.file
            .read_exact_at(&mut data, self.data_offset)
            .map_err(KvmStatsError::Read)?;
        let word = |at: usize| -> u64 {
            data.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
        };
        Ok(self
            .descriptors
            .iter()
            .map(|d| KvmStat {
                name: d.name.clone(),
                kind: d.kind,
                value: (0..d.size).fold(0u64, |acc, i| acc.wrapping_add(word(d.offset + i * 8))),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fake_stats(entries: &[(&str, u32, u64)]) -> File {
        let name_size = 48u32;
        let desc_len = DESC_FIXED_LEN + name_size as usize;
        let desc_offset = HEADER_LEN + 16; // id string in between, as the kernel does
        let data_offset = desc_offset + desc_len * entries.len();
        let mut bytes = Vec::new();
        for v in [0u32, name_size, entries.len() as u32, HEADER_LEN as u32] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(&(desc_offset as u32).to_le_bytes());
        bytes.extend_from_slice(&(data_offset as u32).to_le_bytes());
        bytes.extend_from_slice(b"kvm-1234\0\0\0\0\0\0\0\0");
        for (i, (name, flags, _)) in entries.iter().enumerate() {
            bytes.extend_from_slice(&flags.to_le_bytes());
            bytes.extend_from_slice(&0i16.to_le_bytes());
            bytes.extend_from_slice(&1u16.to_le_bytes());
            bytes.extend_from_slice(&((i * 8) as u32).to_le_bytes());
            bytes.extend_from_slice(&0u32.to_le_bytes());
            let mut name_buf = vec![0u8; name_size as usize];
            name_buf[..name.len()].copy_from_slice(name.as_bytes());
            bytes.extend_from_slice(&name_buf);
        }
        for (_, _, value) in entries {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        file
    }

    #[test]
    fn parses_a_recorded_layout() {
        let stats =
            KvmStats::from_file(fake_stats(&[("exits", 0, 42), ("halt_exits", 0, 7)])).unwrap();
        let read = stats.read().unwrap();
        assert_eq!(read[0].name, "exits");
        assert_eq!(read[0].value, 42);
        assert_eq!(read[1].kind, KvmStatKind::Cumulative);
        assert_eq!(read[1].value, 7);
    }

    #[test]
    fn rejects_truncated_and_implausible_files() {
        let mut short = tempfile::tempfile().unwrap();
        short.write_all(&[0u8; 10]).unwrap();
        assert!(KvmStats::from_file(short).is_err());
        let mut huge = tempfile::tempfile().unwrap();
        let mut header = vec![0u8; HEADER_LEN];
        header[4..8].copy_from_slice(&32u32.to_le_bytes());
        header[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        huge.write_all(&header).unwrap();
        assert!(matches!(
            KvmStats::from_file(huge),
            Err(KvmStatsError::Malformed(_))
        ));
    }
}
