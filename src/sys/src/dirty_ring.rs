//! The KVM dirty ring (`KVM_CAP_DIRTY_LOG_RING`, Linux 5.11+): a per-vCPU ring of dirtied guest
//! frame numbers, shared with the kernel through an mmap of the vCPU fd.
//!
//! Protocol (Documentation/virt/kvm/api.rst, "KVM_CAP_DIRTY_LOG_RING"): the kernel pushes an entry
//! with flags DIRTY; user space reads it, marks it RESET (with release ordering), and calls
//! `KVM_RESET_DIRTY_RINGS` on the VM, after which the kernel write-protects the pages again and
//! reuses the entries. A vCPU whose ring is nearly full exits with `KVM_EXIT_DIRTY_RING_FULL`.

use kvm_bindings::{kvm_enable_cap, KVM_CAP_DIRTY_LOG_RING, KVM_CAP_DIRTY_LOG_RING_ACQ_REL};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// `KVM_DIRTY_LOG_PAGE_OFFSET` on x86: the ring starts this many pages into the vCPU mapping.
const DIRTY_LOG_PAGE_OFFSET: i64 = 64;
/// `_IO(KVMIO, 0xc7)`.
const KVM_RESET_DIRTY_RINGS: libc::c_ulong = 0xAEC7;
const ENTRY_LEN: usize = 16;
const FLAG_DIRTY: u32 = 1;
const FLAG_RESET: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum DirtyRingError {
    #[error("This KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING)")]
    Unsupported,
    #[error("A dirty ring of {entries} entries exceeds KVM's limit of {max_bytes} bytes or is not a power of two")]
    BadSize { entries: usize, max_bytes: usize },
    #[error("Failed to enable the dirty ring on the VM")]
    Enable(#[source] kvm_ioctls::Error),
    #[error("Failed to map the dirty ring of a vCPU")]
    Map(#[source] std::io::Error),
    #[error("KVM_RESET_DIRTY_RINGS failed")]
    Reset(#[source] std::io::Error),
}

/// One dirtied guest page: its memory slot and page offset within the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirtyGfn {
    pub slot: u32,
    pub offset: u64,
}

/// The mapped dirty ring of one vCPU.
#[derive(Debug)]
pub struct DirtyRing {
    base: NonNull<u8>,
    entries: usize,
    fetch_index: usize,
}

// SAFETY: the mapping lives as long as this value; entries are read with atomics and volatile loads.
unsafe impl Send for DirtyRing {}

impl DirtyRing {
    /// Enables a ring of `entries` entries per vCPU on `vm`. Must be called before any vCPU is
    /// created. Prefers the acquire/release flavour where the kernel offers it.
    pub fn enable(kvm: &Kvm, vm: &VmFd, entries: usize) -> Result<(), DirtyRingError> {
        let (cap, max_bytes) = [KVM_CAP_DIRTY_LOG_RING_ACQ_REL, KVM_CAP_DIRTY_LOG_RING]
            .into_iter()
            .map(|cap| (cap, kvm.check_extension_raw(libc::c_ulong::from(cap))))
            .find(|(_, max)| *max > 0)
            .ok_or(DirtyRingError::Unsupported)?;
        let max_bytes = usize::try_from(max_bytes).unwrap_or(0);
        let bytes = entries.saturating_mul(ENTRY_LEN);
        if !entries.is_power_of_two() || bytes > max_bytes {
            return Err(DirtyRingError::BadSize { entries, max_bytes });
        }
        let mut enable = kvm_enable_cap {
            cap,
            ..Default::default()
        };
        enable.args[0] = bytes as u64;
        vm.enable_cap(&enable).map_err(DirtyRingError::Enable)
    }

    /// Whether this KVM offers a dirty ring at all.
    pub fn supported(kvm: &Kvm) -> bool {
        [KVM_CAP_DIRTY_LOG_RING_ACQ_REL, KVM_CAP_DIRTY_LOG_RING]
            .into_iter()
            .any(|cap| kvm.check_extension_raw(libc::c_ulong::from(cap)) > 0)
    }

    /// Maps the ring of `vcpu` (the VM must have had [`DirtyRing::enable`] with `entries`).
    pub fn map(vcpu: &VcpuFd, entries: usize) -> Result<Self, DirtyRingError> {
        let len = entries * ENTRY_LEN;
        let offset = DIRTY_LOG_PAGE_OFFSET * crate::page_size() as i64;
        // SAFETY: a shared mapping of the vCPU fd at the documented dirty-ring offset, of exactly
        // the size enabled on the VM; the result is checked below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(DirtyRingError::Map(std::io::Error::last_os_error()));
        }
        let base = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| DirtyRingError::Map(std::io::Error::other("mmap returned null")))?;
        Ok(Self {
            base,
            entries,
            fetch_index: 0,
        })
    }

    /// Moves every dirty entry into `out` and marks it for reset; returns how many it took.
    /// Call [`DirtyRing::reset`] on the VM afterwards so the kernel can reuse the entries.
    pub fn harvest(&mut self, out: &mut Vec<DirtyGfn>) -> usize {
        let mut taken = 0;
        loop {
            let index = self.fetch_index % self.entries;
            // SAFETY: index < entries, so the 16-byte entry lies inside the mapping; flags is the
            // first, 4-byte aligned field of the entry (the mapping is page aligned).
            let entry = unsafe { self.base.as_ptr().add(index * ENTRY_LEN) };
            // SAFETY: see above; the kernel accesses the same word atomically.
            let flags = unsafe { &*entry.cast::<AtomicU32>() };
            if flags.load(Ordering::Acquire) & FLAG_DIRTY == 0 {
                break;
            }
            // SAFETY: slot is at +4 and offset at +8 inside the entry; both are plain data the
            // kernel published before setting DIRTY (ordered by the acquire load above).
            let slot = unsafe { entry.add(4).cast::<u32>().read_volatile() };
            // SAFETY: as above.
            let offset = unsafe { entry.add(8).cast::<u64>().read_volatile() };
            out.push(DirtyGfn { slot, offset });
            flags.store(FLAG_RESET, Ordering::Release);
            self.fetch_index = self.fetch_index.wrapping_add(1);
            taken += 1;
        }
        taken
    }

    /// Tells KVM that harvested entries of every vCPU of `vm` may be reused.
    pub fn reset(vm: &VmFd) -> Result<(), DirtyRingError> {
        // SAFETY: KVM_RESET_DIRTY_RINGS takes no argument; vm is a live VM fd.
        let ret = unsafe { libc::ioctl(vm.as_raw_fd(), KVM_RESET_DIRTY_RINGS, 0) };
        if ret < 0 {
            return Err(DirtyRingError::Reset(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl Drop for DirtyRing {
    fn drop(&mut self) {
        // SAFETY: base and length are exactly those of the mapping made in `map`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.entries * ENTRY_LEN) };
    }
}
