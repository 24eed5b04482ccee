//! A file-backed shared mapping that several threads or processes read and write at once.
//!
//! Words used for synchronisation are exposed as atomics; bulk data moves with plain copies whose
//! consistency the caller proves with those atomics (a sequence lock), since another process may
//! write the same bytes at any time.

use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::AtomicU64;

#[derive(Debug, thiserror::Error)]
pub enum SharedRegionError {
    #[error("Failed to open or size the shared region file {path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to map the shared region")]
    Map(#[source] std::io::Error),
    #[error(
        "Access of {len} bytes at {offset} is outside the region of {size} bytes or misaligned"
    )]
    OutOfBounds {
        offset: usize,
        len: usize,
        size: usize,
    },
}

/// A shared, writable mapping of a whole file.
#[derive(Debug)]
pub struct SharedRegion {
    map: MmapMut,
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping lives as long as this value; all access goes through atomics or explicit
// copies whose races are resolved by the caller's sequence numbers.
unsafe impl Send for SharedRegion {}
// SAFETY: as above.
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// Creates (or truncates) `path` to `len` zero bytes and maps it.
    pub fn create(path: &Path, len: usize) -> Result<Self, SharedRegionError> {
        let file_err = |source| SharedRegionError::File {
            path: path.display().to_string(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(file_err)?;
        file.set_len(len as u64).map_err(file_err)?;
        Self::map(&file)
    }

    /// Maps an existing region file.
    pub fn open(path: &Path) -> Result<Self, SharedRegionError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| SharedRegionError::File {
                path: path.display().to_string(),
                source,
            })?;
        Self::map(&file)
    }

    fn map(file: &File) -> Result<Self, SharedRegionError> {
        // SAFETY: the file is shared with other Augur processes by design; every access below
        // tolerates concurrent modification (atomics, or copies checked by a sequence lock).
        let mut map = unsafe { MmapMut::map_mut(file) }.map_err(SharedRegionError::Map)?;
        let base = map.as_mut_ptr();
        let len = map.len();
        Ok(Self { map, base, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: usize, len: usize, align: usize) -> Result<(), SharedRegionError> {
        let fits = offset.checked_add(len).is_some_and(|end| end <= self.len);
        if !fits || !offset.is_multiple_of(align) {
            return Err(SharedRegionError::OutOfBounds {
                offset,
                len,
                size: self.len,
            });
        }
        Ok(())
    }

    /// The 8-byte word at `offset` as an atomic.
    pub fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64, SharedRegionError> {
        self.check(offset, 8, 8)?;
        // SAFETY: in bounds and 8-byte aligned (the mapping itself is page aligned); AtomicU64 has
        // the layout of u64, and the reference cannot outlive the mapping (it borrows self).
        Ok(unsafe { &*self.base.add(offset).cast::<AtomicU64>() })
    }

    /// Copies `data` into the region at `offset`.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<(), SharedRegionError> {
        self.check(offset, data.len(), 1)?;
        // SAFETY: destination range is in bounds; it cannot overlap `data`, which is not part of
        // the mapping's writable view handed out by this type.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(offset), data.len());
        }
        Ok(())
    }

    /// Copies region bytes at `offset` into `out`. The bytes may be torn by a concurrent writer:
    /// callers check a sequence number before and after.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<(), SharedRegionError> {
        self.check(offset, out.len(), 1)?;
        // SAFETY: source range is in bounds and `out` is a distinct, exclusive buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(offset), out.as_mut_ptr(), out.len())
        };
        Ok(())
    }

    /// Flushes the mapping to its file.
    pub fn flush(&self) -> std::io::Result<()> {
        self.map.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn two_mappings_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("region");
        let a = SharedRegion::create(&path, 4096).unwrap();
        let b = SharedRegion::open(&path).unwrap();
        a.atomic_u64(8).unwrap().store(7, Ordering::Release);
        assert_eq!(b.atomic_u64(8).unwrap().load(Ordering::Acquire), 7);
        a.write_bytes(100, b"hello").unwrap();
        let mut out = [0u8; 5];
        b.read_bytes(100, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        assert!(a.atomic_u64(4).is_err());
        assert!(a.write_bytes(4095, b"xy").is_err());
    }
}
