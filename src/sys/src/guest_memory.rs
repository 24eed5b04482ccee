//! Guest RAM: one anonymous private mapping, registered with KVM as a memory slot.
//!
//! The guest writes this memory concurrently with the host, so every host access is a volatile
//! copy through a bounds-checked guest physical address, never a Rust reference into the mapping.

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use std::ptr::NonNull;

#[derive(Debug, thiserror::Error)]
pub enum GuestMemoryError {
    #[error("Failed to map {size} bytes of guest memory")]
    Map {
        size: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("Guest memory size {size} is not a positive multiple of the page size")]
    BadSize { size: usize },
    #[error("Guest access of {len} bytes at {gpa:#x} is outside guest memory of {size} bytes")]
    OutOfBounds { gpa: u64, len: usize, size: usize },
    #[error("Failed to register guest memory slot {slot} with KVM")]
    Register {
        slot: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Guest physical memory starting at guest physical address 0.
#[derive(Debug)]
pub struct GuestMemory {
    base: NonNull<u8>,
    size: usize,
}

// SAFETY: the mapping is owned by this value for its whole life and every access goes through
// volatile copies with bounds checks, so sharing the pointer between threads is sound.
unsafe impl Send for GuestMemory {}
// SAFETY: as above; there are no `&mut` views into the mapping.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    /// Maps `size` bytes of zeroed memory, reserved lazily (pages are only backed when touched).
    pub fn new(size: usize) -> Result<Self, GuestMemoryError> {
        if size == 0 || !size.is_multiple_of(crate::page_size()) {
            return Err(GuestMemoryError::BadSize { size });
        }
        // SAFETY: an anonymous mapping with no address hint; the result is checked below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(GuestMemoryError::Map {
                size,
                source: std::io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(addr.cast::<u8>()).ok_or(GuestMemoryError::Map {
            size,
            source: std::io::Error::other("mmap returned null"),
        })?;
        Ok(Self { base, size })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Registers the whole mapping as KVM slot `slot` at guest physical address 0, with dirty
    /// page logging on when `log_dirty` is set (needed by both the dirty log and the dirty ring).
    pub fn register(&self, vm: &VmFd, slot: u32, log_dirty: bool) -> Result<(), GuestMemoryError> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: if log_dirty {
                KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            },
            guest_phys_addr: 0,
            memory_size: self.size as u64,
            userspace_addr: self.base.as_ptr() as u64,
        };
        // SAFETY: the region describes memory this value owns and keeps mapped for as long as it
        // lives; callers keep the GuestMemory alive as long as the VM (the VM owns both).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|source| GuestMemoryError::Register { slot, source })
    }

    fn check(&self, gpa: u64, len: usize) -> Result<usize, GuestMemoryError> {
        let start = usize::try_from(gpa).ok();
        match start.and_then(|s| s.checked_add(len).map(|end| (s, end))) {
            Some((s, end)) if end <= self.size => Ok(s),
            _ => Err(GuestMemoryError::OutOfBounds {
                gpa,
                len,
                size: self.size,
            }),
        }
    }

    /// Copies `data` into guest memory at `gpa`.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), GuestMemoryError> {
        let start = self.check(gpa, data.len())?;
        // Whole pages (migration, device buffers) go a word at a time: a byte loop of volatile
        // stores cannot be vectorised and would cap a migration well below link speed.
        if start.is_multiple_of(8) && data.len().is_multiple_of(8) {
            let words = self.base.as_ptr().wrapping_add(start).cast::<u64>();
            for (i, chunk) in data.chunks_exact(8).enumerate() {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                // SAFETY: start + 8 * i + 8 <= size was checked above and start is 8-aligned
                // (the mapping is page-aligned); the mapping is live.
                unsafe { words.add(i).write_volatile(u64::from_ne_bytes(word)) };
            }
            return Ok(());
        }
        for (i, byte) in data.iter().enumerate() {
            // SAFETY: start + i < size was checked above; the mapping is live.
            unsafe { self.base.as_ptr().add(start + i).write_volatile(*byte) };
        }
        Ok(())
    }

    /// Backs `len` bytes at `gpa` with memory for writing, in one call rather than one page
    /// fault per page: a migration target about to fill fresh memory saves a third of the time.
    /// Only a hint: where the kernel lacks `MADV_POPULATE_WRITE` (before 5.14) the writes fault
    /// the pages in as usual.
    pub fn prepare_write(&self, gpa: u64, len: usize) -> Result<(), GuestMemoryError> {
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        let start = self.check(gpa, len)?;
        let page = crate::page_size();
        let from = start / page * page;
        let to = (start + len).div_ceil(page) * page;
        // SAFETY: [from, to) lies inside the mapping (checked above, rounded to whole pages of
        // a page-aligned mapping whose size is a multiple of the page size).
        unsafe {
            libc::madvise(
                self.base.as_ptr().add(from).cast(),
                to - from,
                MADV_POPULATE_WRITE,
            )
        };
        Ok(())
    }

    /// Copies guest memory at `gpa` into `out`.
    pub fn read(&self, gpa: u64, out: &mut [u8]) -> Result<(), GuestMemoryError> {
        let start = self.check(gpa, out.len())?;
        if start.is_multiple_of(8) && out.len().is_multiple_of(8) {
            let words = self.base.as_ptr().wrapping_add(start).cast::<u64>();
            for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
                // SAFETY: as in `write`: in bounds, 8-aligned, live.
                let word = unsafe { words.add(i).read_volatile() };
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            return Ok(());
        }
        for (i, byte) in out.iter_mut().enumerate() {
            // SAFETY: start + i < size was checked above; the mapping is live.
            *byte = unsafe { self.base.as_ptr().add(start + i).read_volatile() };
        }
        Ok(())
    }

    /// The pages that may hold data, as a bitmap (bit `n % 64` of word `n / 64` for page `n`):
    /// those backed in this process (present) or swapped out. Any other page of this private
    /// anonymous mapping was never written, by the guest (KVM backs what the guest touches in
    /// this same mapping) or by the host, and reads as zero. `None` when the kernel's page map
    /// cannot be read; then every page must be taken as written.
    pub fn populated_pages(&self) -> Option<Vec<u64>> {
        use std::os::unix::fs::FileExt;
        const PRESENT: u64 = 1 << 63;
        const SWAPPED: u64 = 1 << 62;
        // Entries read per call: 512 KiB of page map covers 256 MiB of memory.
        const BATCH: usize = 1 << 16;
        let page = crate::page_size();
        let pages = self.size / page;
        let file = std::fs::File::open("/proc/self/pagemap").ok()?;
        let first = (self.base.as_ptr() as usize / page) as u64;
        let mut bitmap = vec![0u64; pages.div_ceil(64)];
        let mut entries = vec![0u8; BATCH.min(pages) * 8];
        let mut at = 0usize;
        while at < pages {
            let n = BATCH.min(pages - at);
            file.read_exact_at(&mut entries[..n * 8], (first + at as u64) * 8)
                .ok()?;
            for (i, entry) in entries[..n * 8].chunks_exact(8).enumerate() {
                let entry = u64::from_le_bytes(entry.try_into().unwrap_or([0xff; 8]));
                if entry & (PRESENT | SWAPPED) != 0 {
                    let page = at + i;
                    bitmap[page / 64] |= 1 << (page % 64);
                }
            }
            at += n;
        }
        Some(bitmap)
    }

    /// Reads a little-endian u64 at `gpa` (need not be aligned).
    pub fn read_u64(&self, gpa: u64) -> Result<u64, GuestMemoryError> {
        let mut bytes = [0u8; 8];
        self.read(gpa, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Writes a little-endian u64 at `gpa`.
    pub fn write_u64(&self, gpa: u64, value: u64) -> Result<(), GuestMemoryError> {
        self.write(gpa, &value.to_le_bytes())
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: base/size are exactly what mmap returned; nothing refers to the mapping now.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_and_rejects_out_of_bounds() {
        let mem = GuestMemory::new(1 << 20).unwrap();
        mem.write_u64(0x1000, 0xdead_beef).unwrap();
        assert_eq!(mem.read_u64(0x1000).unwrap(), 0xdead_beef);
        assert!(mem.write_u64((1 << 20) - 4, 1).is_err());
        assert!(mem.read_u64(u64::MAX).is_err());
        assert!(GuestMemory::new(100).is_err());
    }

    #[test]
    fn populated_pages_are_those_written_or_read() {
        let page = crate::page_size() as u64;
        let mem = GuestMemory::new(256 * page as usize).unwrap();
        let Some(untouched) = mem.populated_pages() else {
            eprintln!("skipped: /proc/self/pagemap is not readable here");
            return;
        };
        assert!(
            untouched.iter().all(|w| *w == 0),
            "fresh memory is all unbacked"
        );
        mem.write_u64(3 * page, 1).unwrap();
        mem.write_u64(130 * page + 8, 2).unwrap();
        mem.read_u64(200 * page).unwrap();
        let populated = mem.populated_pages().unwrap();
        let set: Vec<u64> = (0..256u64)
            .filter(|n| populated[(n / 64) as usize] & (1 << (n % 64)) != 0)
            .collect();
        // A read maps the shared zero page, which the page map counts as present too.
        assert_eq!(set, vec![3, 130, 200]);
    }

    #[test]
    fn word_and_byte_paths_copy_the_same_bytes() {
        let mem = GuestMemory::new(1 << 20).unwrap();
        let page: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        mem.write(0x2000, &page).unwrap();
        let mut back = vec![0u8; 4096];
        mem.read(0x2000, &mut back).unwrap();
        assert_eq!(back, page);
        // Unaligned start and length take the byte path and see the same memory.
        let mut odd = [0u8; 5];
        mem.read(0x2003, &mut odd).unwrap();
        assert_eq!(&odd, &page[3..8]);
        mem.write(0x2001, b"abc").unwrap();
        mem.read(0x2000, &mut back[..8]).unwrap();
        assert_eq!(&back[1..4], b"abc");
    }
}
