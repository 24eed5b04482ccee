//! Downsampling of old data: raw points older than a tier's age become one point per bucket
//! (the mean for gauges, the last value for counters), e.g. 1 s → 1 min after a day, → 5 min after
//! a week.
//!
//! It works a sealed segment at a time, in three steps so that writes never wait on the heavy
//! part: [`crate::Store::plan_downsample`] (under the caller's lock, cheap) picks a segment;
//! [`DownsampleJob::run`] (no lock: sealed segments never change) reads and aggregates it;
//! [`crate::Store::apply_downsample`] (under the lock, one append and one sync) writes the new
//! blocks and a commit record into the current segment, swaps the index and deletes the old file.
//! Every output block names its source segment, and the commit record names the source and the
//! offset of the first block of its apply: the blocks it commits are those of that source between
//! that offset and itself, in the same segment (one append writes them all). At open, and when a
//! segment is downsampled again, any other block with a source is left out: the blocks of an
//! apply a crash cut short, which a later apply of the same source wrote again. A source whose
//! commit record exists is deleted if a crash left it behind. So a crash at any point loses
//! nothing and duplicates nothing.

use crate::block::{self, Origin};
use crate::log_file::{read_log, LogKind};
use crate::types::ValueKind;
use crate::StoreError;
use std::path::PathBuf;

/// Commit records before the first block's offset was recorded: they commit every block of
/// their source before them in their segment.
const COMMIT_MAGIC_V1: &[u8; 8] = b"AUGRDONE";
const COMMIT_MAGIC: &[u8; 8] = b"AUGRDON2";

/// Data older than `after_ns` is kept at one point per `step_s` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    pub after_ns: i64,
    pub step_s: u32,
}

/// 1 s → 1 min after a day, → 5 min after a week.
pub fn default_tiers() -> Vec<Tier> {
    const DAY: i64 = 86_400 * 1_000_000_000;
    vec![
        Tier {
            after_ns: DAY,
            step_s: 60,
        },
        Tier {
            after_ns: 7 * DAY,
            step_s: 300,
        },
    ]
}

/// The record that makes an apply's blocks count: they start at offset `first` of the segment
/// the record is written to.
pub fn commit_record(source: u32, first: u64) -> Vec<u8> {
    let mut payload = COMMIT_MAGIC.to_vec();
    payload.extend_from_slice(&source.to_le_bytes());
    payload.extend_from_slice(&first.to_le_bytes());
    payload
}

/// A commit record read back, at offset `at` of its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub source: u32,
    /// Offset of the apply's first block (0 for the first format: from the segment's start).
    pub first: u64,
    pub at: u64,
}

pub fn parse_commit(payload: &[u8], at: u64) -> Option<Commit> {
    if let Some(rest) = payload.strip_prefix(COMMIT_MAGIC.as_slice()) {
        let rest: &[u8; 12] = rest.try_into().ok()?;
        let (source, first) = rest.split_at(4);
        return Some(Commit {
            source: u32::from_le_bytes(source.try_into().ok()?),
            first: u64::from_le_bytes(first.try_into().ok()?),
            at,
        });
    }
    let rest = payload.strip_prefix(COMMIT_MAGIC_V1.as_slice())?;
    Some(Commit {
        source: u32::from_le_bytes(rest.try_into().ok()?),
        first: 0,
        at,
    })
}

/// Whether a block at `offset` of a segment counts, given the commit records of that segment:
/// raw blocks always do; a downsampled one only if one of them commits it.
pub fn committed(origin: &Origin, offset: u64, commits: &[Commit]) -> bool {
    origin.source == 0
        || commits
            .iter()
            .any(|c| c.source == origin.source && (c.first..c.at).contains(&offset))
}

/// Work picked by the planner: rewrite one sealed segment at `step_s`.
#[derive(Debug, Clone)]
pub struct DownsampleJob {
    pub(crate) segment: u32,
    pub(crate) path: PathBuf,
    pub(crate) step_s: u32,
    pub(crate) kinds: Vec<ValueKind>,
}

/// The rewritten blocks of one segment, ready to apply.
#[derive(Debug)]
pub struct DownsampleOutput {
    pub(crate) segment: u32,
    pub(crate) blocks: Vec<Vec<u8>>,
    pub points_in: u64,
    pub points_out: u64,
}

/// Buckets of `step_ns`: each point stamped with its bucket's first timestamp, so buckets never
/// reach back before data they replace.
pub fn aggregate(kind: ValueKind, ts: &[i64], bits: &[u64], step_ns: i64) -> (Vec<i64>, Vec<u64>) {
    let mut out_ts = Vec::new();
    let mut out_bits = Vec::new();
    let mut i = 0;
    while i < ts.len() {
        let bucket = ts[i].div_euclid(step_ns);
        let mut j = i;
        while j < ts.len() && ts[j].div_euclid(step_ns) == bucket {
            j += 1;
        }
        out_ts.push(ts[i]);
        out_bits.push(match kind {
            ValueKind::U64 => bits[j - 1],
            ValueKind::F64 => {
                let sum: f64 = bits[i..j].iter().map(|b| f64::from_bits(*b)).sum();
                (sum / (j - i) as f64).to_bits()
            }
        });
        i = j;
    }
    (out_ts, out_bits)
}

impl DownsampleJob {
    pub fn segment(&self) -> u32 {
        self.segment
    }

    /// Reads and aggregates the segment. Touches no store state: run it without the lock.
    pub fn run(&self) -> Result<DownsampleOutput, StoreError> {
        let (records, _) = read_log(&self.path, LogKind::Segment)?;
        let step_ns = i64::from(self.step_s) * 1_000_000_000;
        let origin = Origin {
            resolution_s: self.step_s,
            source: self.segment,
        };
        let mut output = DownsampleOutput {
            segment: self.segment,
            blocks: Vec::new(),
            points_in: 0,
            points_out: 0,
        };
        let commits: Vec<Commit> = records
            .iter()
            .filter_map(|r| parse_commit(&r.payload, r.offset))
            .collect();
        for record in records {
            if parse_commit(&record.payload, record.offset).is_some() {
                continue;
            }
            let Ok((header, ts, bits)) = block::decode(&record.payload) else {
                continue;
            };
            if !committed(&header.origin, record.offset, &commits) {
                continue;
            }
            let Some(kind) = self.kinds.get(header.series as usize).copied() else {
                continue;
            };
            output.points_in += ts.len() as u64;
            let (ts, bits) = if header.origin.resolution_s >= self.step_s {
                (ts, bits)
            } else {
                aggregate(kind, &ts, &bits, step_ns)
            };
            output.points_out += ts.len() as u64;
            output
                .blocks
                .push(block::encode_with(header.series, kind, &ts, &bits, origin)?);
        }
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_average_and_counters_keep_their_last_value() {
        let ts: Vec<i64> = (0..150)
            .map(|i| i * 1_000_000_000 + 30_000_000_000)
            .collect();
        let gauge: Vec<u64> = (0..150).map(|i| (i as f64).to_bits()).collect();
        let (t, b) = aggregate(ValueKind::F64, &ts, &gauge, 60_000_000_000);
        assert_eq!(t, vec![30_000_000_000, 60_000_000_000, 120_000_000_000]);
        let means: Vec<f64> = b.iter().map(|x| f64::from_bits(*x)).collect();
        assert_eq!(means, vec![14.5, 59.5, 119.5]);
        let counter: Vec<u64> = (0..150).map(|i| i * 10).collect();
        let (_, b) = aggregate(ValueKind::U64, &ts, &counter, 60_000_000_000);
        assert_eq!(b, vec![290, 890, 1490]);
        let commit = Commit {
            source: 42,
            first: 4096,
            at: 9000,
        };
        assert_eq!(parse_commit(&commit_record(42, 4096), 9000), Some(commit));
        assert_eq!(parse_commit(b"AUGRDON", 0), None);
        assert_eq!(parse_commit(b"AUGRDON2\x2a\0\0\0", 0), None);
        let legacy = [COMMIT_MAGIC_V1.as_slice(), &42u32.to_le_bytes()].concat();
        assert_eq!(
            parse_commit(&legacy, 77).map(|c| (c.first, c.at)),
            Some((0, 77))
        );
        let from = |source| Origin {
            resolution_s: 60,
            source,
        };
        assert!(committed(&from(0), 10, &[]));
        assert!(committed(&from(42), 4096, &[commit]));
        assert!(!committed(&from(42), 4000, &[commit]), "before the apply");
        assert!(!committed(&from(7), 5000, &[commit]), "another source");
    }
}
