//! The sample ring: archived [`Sample`] records in a shared, file-backed mapping, one producer and
//! any number of consumers, in one process or across processes.
//!
//! Layout (little-endian u64 words):
//! ```text
//! header (64 B): magic | version | slot_size | slot_count | write_seq | 0...
//! slot i (at 64 + i * stride): seq | len | archived record (slot_size bytes)
//! ```
//! Each slot is a sequence lock. Record `n` goes to slot `n % slot_count`; while the producer
//! writes it the slot's `seq` is odd (`2n + 1`), when done it is `2n + 2`. A consumer wanting record
//! `n` copies the slot between two reads of `seq`: equal and `== 2n + 2` means a whole record;
//! different means the producer lapped it mid-copy (a torn read), so it retries; larger means the
//! record was overwritten, so the consumer counts the loss and skips to the oldest record still
//! held. The consumer then validates the archive (bytecheck) and hands out a view of it without
//! deserialising.

use crate::frame::{access_sample, FrameError};
use crate::sample::{ArchivedSample, Sample};
use augur_sys::{SharedRegion, SharedRegionError};
use rkyv::rancor;
use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;
use std::path::Path;
use std::sync::atomic::{fence, AtomicU64, Ordering};

const MAGIC: u64 = u64::from_le_bytes(*b"AUGRRING");
const VERSION: u64 = 1;
const HEADER_LEN: usize = 64;
const SLOT_HEADER_LEN: usize = 16;
const WRITE_SEQ_OFFSET: usize = 32;
/// Upper bounds that keep a hostile or corrupt header from asking for absurd buffers.
const MAX_SLOT_SIZE: u64 = 1 << 20;
const MAX_SLOTS: u64 = 1 << 24;
/// Torn reads in a row before the consumer gives up on a record and skips ahead.
const MAX_RETRIES: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error(transparent)]
    Region(#[from] SharedRegionError),
    #[error("Ring file is not a version-{VERSION} sample ring ({reason})")]
    BadHeader { reason: &'static str },
    #[error("Ring geometry {slot_count} slots of {slot_size} bytes is invalid")]
    BadGeometry { slot_count: u64, slot_size: u64 },
    #[error("Record of {len} bytes does not fit a {slot_size}-byte slot")]
    RecordTooLarge { len: usize, slot_size: usize },
    #[error("Failed to archive a sample: {0}")]
    Archive(String),
    #[error("Slot holds an invalid record")]
    BadRecord(#[source] FrameError),
}

#[derive(Debug)]
struct Geometry {
    slot_size: usize,
    slot_count: usize,
}

impl Geometry {
    fn stride(&self) -> usize {
        (SLOT_HEADER_LEN + self.slot_size).next_multiple_of(64)
    }

    fn slot_offset(&self, seq: u64) -> usize {
        HEADER_LEN + (seq % self.slot_count as u64) as usize * self.stride()
    }

    fn file_len(&self) -> usize {
        HEADER_LEN + self.slot_count * self.stride()
    }

    fn checked(slot_count: u64, slot_size: u64) -> Result<Self, RingError> {
        if !(1..=MAX_SLOTS).contains(&slot_count) || !(64..=MAX_SLOT_SIZE).contains(&slot_size) {
            return Err(RingError::BadGeometry {
                slot_count,
                slot_size,
            });
        }
        Ok(Self {
            slot_size: slot_size as usize,
            slot_count: slot_count as usize,
        })
    }
}

fn word(region: &SharedRegion, offset: usize) -> Result<&AtomicU64, RingError> {
    Ok(region.atomic_u64(offset)?)
}

/// The single producer of a ring.
pub struct RingWriter {
    region: SharedRegion,
    geometry: Geometry,
    next: u64,
    scratch: AlignedVec,
    arena: Arena,
}

impl std::fmt::Debug for RingWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingWriter")
            .field("geometry", &self.geometry)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl RingWriter {
    /// Creates a ring file at `path` with `slot_count` slots of `slot_size` bytes each.
    pub fn create(path: &Path, slot_count: u64, slot_size: u64) -> Result<Self, RingError> {
        let geometry = Geometry::checked(slot_count, slot_size)?;
        let region = SharedRegion::create(path, geometry.file_len())?;
        for (i, value) in [MAGIC, VERSION, slot_size, slot_count]
            .into_iter()
            .enumerate()
        {
            word(&region, i * 8)?.store(value, Ordering::Relaxed);
        }
        word(&region, WRITE_SEQ_OFFSET)?.store(0, Ordering::Release);
        Ok(Self {
            region,
            geometry,
            next: 0,
            scratch: AlignedVec::new(),
            arena: Arena::new(),
        })
    }

    /// Appends one sample, overwriting the oldest record when the ring is full.
    pub fn push(&mut self, sample: &Sample) -> Result<u64, RingError> {
        self.scratch.clear();
        let scratch = std::mem::take(&mut self.scratch);
        // The arena and the buffer are reused, so a push allocates nothing in the steady state.
        self.scratch = rkyv::api::low::to_bytes_in_with_alloc::<_, _, rancor::Error>(
            sample,
            scratch,
            self.arena.acquire(),
        )
        .map_err(|e| RingError::Archive(e.to_string()))?;
        self.push_archived_bytes()
    }

    fn push_archived_bytes(&mut self) -> Result<u64, RingError> {
        let len = self.scratch.len();
        if len > self.geometry.slot_size {
            return Err(RingError::RecordTooLarge {
                len,
                slot_size: self.geometry.slot_size,
            });
        }
        let n = self.next;
        let slot = self.geometry.slot_offset(n);
        let seq = word(&self.region, slot)?;
        seq.store(2 * n + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        word(&self.region, slot + 8)?.store(len as u64, Ordering::Relaxed);
        self.region
            .write_bytes(slot + SLOT_HEADER_LEN, &self.scratch)?;
        seq.store(2 * n + 2, Ordering::Release);
        self.next = n + 1;
        word(&self.region, WRITE_SEQ_OFFSET)?.store(self.next, Ordering::Release);
        Ok(n)
    }
}

/// One consumer of a ring, with its own read position.
#[derive(Debug)]
pub struct RingReader {
    region: SharedRegion,
    geometry: Geometry,
    next: u64,
    lost: u64,
    torn: u64,
    buf: AlignedVec,
}

impl RingReader {
    /// Opens the ring at `path`, positioned at the oldest record it still holds.
    pub fn open(path: &Path) -> Result<Self, RingError> {
        let region = SharedRegion::open(path)?;
        if region.len() < HEADER_LEN {
            return Err(RingError::BadHeader {
                reason: "file shorter than the header",
            });
        }
        let read = |i: usize| -> Result<u64, RingError> {
            Ok(word(&region, i * 8)?.load(Ordering::Acquire))
        };
        if read(0)? != MAGIC {
            return Err(RingError::BadHeader {
                reason: "bad magic",
            });
        }
        if read(1)? != VERSION {
            return Err(RingError::BadHeader {
                reason: "unsupported version",
            });
        }
        let geometry = Geometry::checked(read(3)?, read(2)?)?;
        if region.len() < geometry.file_len() {
            return Err(RingError::BadHeader {
                reason: "file shorter than its slots",
            });
        }
        let written = read(WRITE_SEQ_OFFSET / 8)?;
        let next = written.saturating_sub(geometry.slot_count as u64);
        // Sized once: each read copies into a prefix of it, never reallocating or zeroing.
        let mut buf = AlignedVec::with_capacity(geometry.slot_size);
        buf.resize(geometry.slot_size, 0);
        Ok(Self {
            region,
            geometry,
            next,
            lost: 0,
            torn: 0,
            buf,
        })
    }

    /// Records overwritten before this reader got to them.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Torn reads detected and retried.
    pub fn torn(&self) -> u64 {
        self.torn
    }

    /// Records written but not yet read.
    pub fn pending(&self) -> Result<u64, RingError> {
        let written = word(&self.region, WRITE_SEQ_OFFSET)?.load(Ordering::Acquire);
        Ok(written.saturating_sub(self.next))
    }

    /// Calls `f` with the next record, in place (no deserialisation). `Ok(None)` when the reader
    /// has caught up with the producer.
    pub fn read<R>(
        &mut self,
        f: impl FnOnce(&ArchivedSample) -> R,
    ) -> Result<Option<R>, RingError> {
        let mut retries = 0;
        loop {
            let n = self.next;
            let slot = self.geometry.slot_offset(n);
            let seq = word(&self.region, slot)?;
            let before = seq.load(Ordering::Acquire);
            let whole = 2 * n + 2;
            if before == whole {
                let len = word(&self.region, slot + 8)?.load(Ordering::Relaxed) as usize;
                let len = len.min(self.geometry.slot_size);
                let buf = &mut self.buf[..len];
                self.region.read_bytes(slot + SLOT_HEADER_LEN, buf)?;
                fence(Ordering::Acquire);
                if seq.load(Ordering::Relaxed) == before {
                    self.next = n + 1;
                    let archived = access_sample(&self.buf[..len]).map_err(RingError::BadRecord)?;
                    return Ok(Some(f(archived)));
                }
                // Torn: the producer lapped this slot while we copied it.
                self.torn += 1;
            } else if before < whole - 1 {
                // The slot still holds an older lap: record n is not written yet. The slot alone
                // says so, which keeps the consumer off the producer's write_seq cache line.
                return Ok(None);
            } else if before > whole {
                // Overwritten by a later lap: skip to the oldest record still held.
                let written = word(&self.region, WRITE_SEQ_OFFSET)?.load(Ordering::Acquire);
                let oldest = written.saturating_sub(self.geometry.slot_count as u64);
                if oldest > n {
                    self.lost += oldest - n;
                    self.next = oldest;
                    continue;
                }
            }
            // The producer is writing this very record (or a lap is in flight): try again.
            retries += 1;
            if retries >= MAX_RETRIES {
                return Ok(None);
            }
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::{Metric, Source};

    fn sample(i: u64) -> Sample {
        let mut s = Sample::new(i % 3, Source::MicrovmRunLoop, i);
        s.push(Metric::GuestProgress, i).push(Metric::ExitIo, i * 2);
        s
    }

    #[test]
    fn reader_sees_records_in_order_and_counts_laps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring");
        let mut writer = RingWriter::create(&path, 8, 256).unwrap();
        let mut reader = RingReader::open(&path).unwrap();
        for i in 0..5 {
            writer.push(&sample(i)).unwrap();
        }
        for i in 0..5 {
            let got = reader.read(|s| s.get(Metric::GuestProgress)).unwrap();
            assert_eq!(got, Some(Some(Some(i))));
        }
        assert_eq!(reader.read(|_| ()).unwrap(), None);
        for i in 5..25 {
            writer.push(&sample(i)).unwrap();
        }
        let first = reader.read(|s| s.ts_ns.to_native()).unwrap();
        assert_eq!(first, Some(17), "the 8 newest of 25 remain");
        assert_eq!(reader.lost(), 12);
    }

    #[test]
    fn rejects_oversized_records_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring");
        let mut writer = RingWriter::create(&path, 4, 64).unwrap();
        let mut big = sample(1);
        for _ in 0..100 {
            big.push(Metric::ExitHlt, 1);
        }
        assert!(matches!(
            writer.push(&big),
            Err(RingError::RecordTooLarge { .. })
        ));
        std::fs::write(&path, [0u8; 128]).unwrap();
        assert!(matches!(
            RingReader::open(&path),
            Err(RingError::BadHeader { .. })
        ));
        assert!(RingWriter::create(&path, 0, 64).is_err());
    }

    #[test]
    fn concurrent_producer_and_consumer_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring");
        let mut writer = RingWriter::create(&path, 64, 256).unwrap();
        let mut reader = RingReader::open(&path).unwrap();
        const N: u64 = 50_000;
        let producer = std::thread::spawn(move || {
            for i in 0..N {
                writer.push(&sample(i)).unwrap();
            }
        });
        let mut last = None;
        let mut seen = 0u64;
        while last != Some(N - 1) {
            if let Some((ts, progress, exits)) = reader
                .read(|s| {
                    (
                        s.ts_ns.to_native(),
                        s.get(Metric::GuestProgress).flatten(),
                        s.get(Metric::ExitIo).flatten(),
                    )
                })
                .unwrap()
            {
                // A torn record would break the relation between fields written together.
                assert_eq!(progress, Some(ts));
                assert_eq!(exits, Some(ts * 2));
                assert!(last.is_none_or(|l| ts > l));
                last = Some(ts);
                seen += 1;
            }
        }
        producer.join().unwrap();
        assert_eq!(seen + reader.lost(), N);
    }
}
