//! Dirty-page harvesting for one microVM, through KVM's dirty log or its dirty ring, and the
//! accounting done on each harvest: pages, contiguous runs (locality) and the write working set
//! over a window of harvests.

use augur_sys::{DirtyGfn, DirtyRing};
use augur_wire::{Metric, Sample, Source};
use kvm_ioctls::VmFd;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// The memory slot all guest memory lives in.
pub const SLOT: u32 = 0;

/// How dirty pages are collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirtyMode {
    /// The ring where KVM has it, the log otherwise.
    Auto,
    /// `KVM_GET_DIRTY_LOG` bitmaps.
    Log,
    /// The per-vCPU dirty ring.
    Ring,
}

#[derive(Debug, thiserror::Error)]
pub enum DirtyError {
    #[error("KVM_GET_DIRTY_LOG failed")]
    Log(#[source] kvm_ioctls::Error),
    #[error(transparent)]
    Ring(#[from] augur_sys::DirtyRingError),
}

/// What one harvest found, and the running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirtyTotals {
    pub pages: u64,
    pub runs: u64,
    pub harvests: u64,
    /// Distinct pages dirtied over the last `window` harvests.
    pub working_set_pages: u64,
}

#[derive(Debug)]
enum Collector {
    Log,
    Ring {
        rings: Vec<Mutex<DirtyRing>>,
        /// Pages harvested by vCPU threads on ring-full exits, not yet accounted.
        pending: Mutex<Vec<DirtyGfn>>,
    },
}

#[derive(Debug)]
struct Account {
    totals: DirtyTotals,
    window: VecDeque<Vec<u64>>,
    window_len: usize,
    /// Every page ever harvested or marked written.
    written: Vec<u64>,
}

/// Pages collected from KVM for one consumer but not yet seen by it. KVM clears its log on
/// every read, so each read is shared out to both consumers: sensing and a migration.
#[derive(Debug, Default)]
struct Pending {
    sensing: Option<Vec<u64>>,
    migration: Option<Vec<u64>>,
}

fn or_into(into: &mut [u64], from: &[u64]) {
    into.iter_mut().zip(from).for_each(|(a, b)| *a |= b);
}

/// Harvests and accounts dirty pages of one VM.
#[derive(Debug)]
pub struct DirtyTracker {
    vm: Arc<VmFd>,
    memory_bytes: usize,
    collector: Collector,
    pending: Mutex<Pending>,
    account: Mutex<Account>,
}

fn bitmap_words(memory_bytes: usize) -> usize {
    (memory_bytes / 4096).div_ceil(64)
}

/// Counts set bits and maximal runs of consecutive set bits.
pub fn pages_and_runs(bitmap: &[u64]) -> (u64, u64) {
    let mut pages = 0u64;
    let mut runs = 0u64;
    let mut carry = 0u64; // the top bit of the previous word
    for &word in bitmap {
        pages += u64::from(word.count_ones());
        // A run starts at each set bit whose lower neighbour is clear.
        let starts = word & !((word << 1) | carry);
        runs += u64::from(starts.count_ones());
        carry = word >> 63;
    }
    (pages, runs)
}

impl DirtyTracker {
    /// A tracker using the dirty log.
    pub fn with_log(vm: Arc<VmFd>, memory_bytes: usize, window: usize) -> Self {
        Self::new(vm, memory_bytes, window, Collector::Log)
    }

    /// A tracker using the given per-vCPU rings.
    pub fn with_rings(
        vm: Arc<VmFd>,
        memory_bytes: usize,
        window: usize,
        rings: Vec<DirtyRing>,
    ) -> Self {
        let collector = Collector::Ring {
            rings: rings.into_iter().map(Mutex::new).collect(),
            pending: Mutex::new(Vec::new()),
        };
        Self::new(vm, memory_bytes, window, collector)
    }

    fn new(vm: Arc<VmFd>, memory_bytes: usize, window: usize, collector: Collector) -> Self {
        Self {
            vm,
            memory_bytes,
            collector,
            pending: Mutex::new(Pending::default()),
            account: Mutex::new(Account {
                totals: DirtyTotals::default(),
                window: VecDeque::new(),
                window_len: window.max(1),
                written: vec![0; bitmap_words(memory_bytes)],
            }),
        }
    }

    pub fn source(&self) -> Source {
        match self.collector {
            Collector::Log => Source::DirtyLog,
            Collector::Ring { .. } => Source::DirtyRing,
        }
    }

    /// Called by vCPU `cpu`'s thread on a ring-full exit: empties its ring so it can run on.
    pub fn on_ring_full(&self, cpu: usize) -> Result<(), DirtyError> {
        if let Collector::Ring { rings, pending } = &self.collector {
            let mut gfns = Vec::new();
            if let Some(ring) = rings.get(cpu) {
                ring.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .harvest(&mut gfns);
            }
            DirtyRing::reset(&self.vm)?;
            pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(gfns);
        }
        Ok(())
    }

    /// Collects the pages dirtied since the last harvest and updates the totals.
    pub fn harvest(&self) -> Result<DirtyTotals, DirtyError> {
        let bitmap = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let mut bitmap = self.collect()?;
            if let Some(migration) = &mut pending.migration {
                or_into(migration, &bitmap);
            }
            if let Some(sensed) = pending.sensing.take() {
                or_into(&mut bitmap, &sensed);
            }
            bitmap
        };
        Ok(self.account(bitmap))
    }

    /// Starts keeping a migration's own record of dirty pages, from now on.
    pub fn begin_migration(&self) -> Result<(), DirtyError> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let bitmap = self.collect()?;
        Self::keep_for_sensing(&mut pending, &bitmap);
        pending.migration = Some(vec![0; bitmap_words(self.memory_bytes)]);
        Ok(())
    }

    /// The pages dirtied since the migration began or last asked, as a bitmap (one bit per
    /// page). Sensing still sees them on its next harvest.
    pub fn take_migration(&self) -> Result<Vec<u64>, DirtyError> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let bitmap = self.collect()?;
        Self::keep_for_sensing(&mut pending, &bitmap);
        let mut out = pending
            .migration
            .replace(vec![0; bitmap.len()])
            .unwrap_or_default();
        out.resize(bitmap.len(), 0);
        or_into(&mut out, &bitmap);
        Ok(out)
    }

    pub fn end_migration(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .migration = None;
    }

    fn keep_for_sensing(pending: &mut Pending, bitmap: &[u64]) {
        match &mut pending.sensing {
            Some(sensed) => or_into(sensed, bitmap),
            None => pending.sensing = Some(bitmap.to_vec()),
        }
    }

    /// Reads (and clears) KVM's record of dirty pages.
    fn collect(&self) -> Result<Vec<u64>, DirtyError> {
        let words = bitmap_words(self.memory_bytes);
        let bitmap = match &self.collector {
            Collector::Log => {
                let mut bitmap = self
                    .vm
                    .get_dirty_log(SLOT, self.memory_bytes)
                    .map_err(DirtyError::Log)?;
                bitmap.resize(words, 0);
                bitmap
            }
            Collector::Ring { rings, pending } => {
                let mut gfns =
                    std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
                for ring in rings {
                    ring.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .harvest(&mut gfns);
                }
                DirtyRing::reset(&self.vm)?;
                let mut bitmap = vec![0u64; words];
                for gfn in gfns.iter().filter(|g| g.slot == SLOT) {
                    // Offsets come from the kernel, but stay inside the bitmap regardless.
                    if let Some(word) = bitmap.get_mut((gfn.offset / 64) as usize) {
                        *word |= 1 << (gfn.offset % 64);
                    }
                }
                bitmap
            }
        };
        Ok(bitmap)
    }

    fn account(&self, bitmap: Vec<u64>) -> DirtyTotals {
        let (pages, runs) = pages_and_runs(&bitmap);
        let mut account = self.account.lock().unwrap_or_else(|p| p.into_inner());
        account.totals.pages += pages;
        account.totals.runs += runs;
        account.totals.harvests += 1;
        or_into(&mut account.written, &bitmap);
        account.window.push_back(bitmap);
        while account.window.len() > account.window_len {
            account.window.pop_front();
        }
        let words = bitmap_words(self.memory_bytes);
        account.totals.working_set_pages = (0..words)
            .map(|i| {
                let union = account.window.iter().fold(0u64, |acc, b| acc | b[i]);
                u64::from(union.count_ones())
            })
            .sum();
        account.totals
    }

    /// Counts as written the pages set in `bitmap`: pages the host wrote itself, which KVM's
    /// log does not see (an incoming migration's).
    pub fn mark_written(&self, bitmap: &[u64]) {
        let mut account = self.account.lock().unwrap_or_else(|p| p.into_inner());
        or_into(&mut account.written, bitmap);
    }

    /// Distinct pages the guest wrote since the VM was made here (or arrived), as of the last
    /// harvest: most of what the first round of a migration out copies (see
    /// [`crate::MicroVm::written_bytes`]).
    pub fn written_pages(&self) -> u64 {
        let account = self.account.lock().unwrap_or_else(|p| p.into_inner());
        pages_and_runs(&account.written).0
    }

    /// Harvests and returns the result as a sample.
    pub fn sample(&self, vm: augur_wire::VmId, ts_ns: u64) -> Result<Sample, DirtyError> {
        let totals = self.harvest()?;
        let mut sample = Sample::new(vm, self.source(), ts_ns);
        sample
            .push(Metric::DirtyPages, totals.pages)
            .push(Metric::DirtyRuns, totals.runs)
            .push(Metric::DirtyHarvests, totals.harvests)
            .push(Metric::WorkingSetPages, totals.working_set_pages);
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pages_and_runs_across_word_boundaries() {
        assert_eq!(pages_and_runs(&[0]), (0, 0));
        assert_eq!(pages_and_runs(&[0b1011]), (3, 2));
        // A run crossing from bit 63 of word 0 into bit 0 of word 1 is one run.
        assert_eq!(pages_and_runs(&[1 << 63, 1]), (2, 1));
        assert_eq!(pages_and_runs(&[u64::MAX, u64::MAX]), (128, 1));
        assert_eq!(pages_and_runs(&[0x5555_5555_5555_5555]), (32, 32));
    }
}
