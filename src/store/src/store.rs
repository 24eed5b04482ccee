//! The store proper: open and recover, append, checkpoint, read, retain.

use crate::block::{self, Values};
use crate::block_cache::{BlockCache, Decoded};
use crate::catalog::{Catalog, SeriesInfo};
use crate::downsample::{self, DownsampleJob, DownsampleOutput, Tier};
use crate::log_file::{
    read_log, read_record_at, sync_dir, LogKind, LogWriter, ScanReport, RECORD_HEADER_LEN,
};
use crate::types::*;
use crate::wal::{self, WalPoint};
use crate::StoreError;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tracing::warn;

const MAX_METRIC_LEN: usize = 128;

/// When appended points become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every append is synced before it returns.
    EveryAppend,
    /// Appends are durable after the next [`Store::sync`].
    Manual,
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Points per sealed block.
    pub block_points: usize,
    /// A segment file is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// A checkpoint runs when the WAL passes this size.
    pub wal_checkpoint_bytes: u64,
    /// Downsampling tiers, by increasing age.
    pub tiers: Vec<Tier>,
    /// Memory for decoded blocks, so repeated reads of a recent window copy instead of decode.
    pub cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Manual,
            block_points: 4096,
            segment_bytes: 64 << 20,
            wal_checkpoint_bytes: 16 << 20,
            tiers: downsample::default_tiers(),
            cache_bytes: 64 << 20,
        }
    }
}

/// The block of `blocks` (sorted by first timestamp, not overlapping) that holds `ts`, if any.
fn covering(blocks: &[BlockRef], ts: i64) -> Option<&BlockRef> {
    let after = blocks.partition_point(|b| b.min_ts <= ts);
    after
        .checked_sub(1)
        .map(|i| &blocks[i])
        .filter(|b| b.max_ts >= ts)
}

/// What opening the store found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OpenReport {
    pub segments: usize,
    pub blocks: usize,
    /// Byte ranges skipped as corrupt, per file.
    pub corrupt: Vec<(String, u64, u64)>,
    /// Bytes cut from the ends of files (writes a crash cut short).
    pub torn_tail_bytes: u64,
    /// Blocks whose header did not parse.
    pub bad_blocks: usize,
    pub wal_points_replayed: usize,
    /// WAL points already sealed in blocks before the crash.
    pub wal_points_already_sealed: usize,
    /// WAL points whose block in the current segment a crash lost while a later block of the
    /// same series survived (the page cache writes back in any order): sealed again at open.
    pub wal_points_recovered: usize,
    pub catalog_records_skipped: usize,
    /// Segments already downsampled before a crash, removed at open.
    pub downsampled_sources_removed: usize,
    pub recovery_ms: f64,
}

impl OpenReport {
    /// Records what reading one log file skipped.
    fn note_scan(&mut self, path: &Path, scan: &ScanReport) {
        for (from, to) in &scan.corrupt {
            self.corrupt.push((path.display().to_string(), *from, *to));
        }
        self.torn_tail_bytes += scan.torn_tail;
    }

    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.bad_blocks == 0 && self.catalog_records_skipped == 0
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StoreStats {
    pub bytes_on_disk: u64,
    pub series: usize,
    pub vms: usize,
    pub samples: u64,
    pub sealed_samples: u64,
    pub oldest_ns: Option<i64>,
    pub newest_ns: Option<i64>,
    /// Bytes of sealed blocks per sealed sample.
    pub bytes_per_sample: Option<f64>,
    pub segments: usize,
    pub events: usize,
    /// Blocks that failed their checksum or decoding at read time (skipped).
    pub read_errors: u64,
}

#[derive(Debug, Clone, Copy)]
struct BlockRef {
    segment: u32,
    offset: u64,
    len: u32,
    min_ts: i64,
    max_ts: i64,
    count: u32,
}

#[derive(Debug, Default)]
struct Head {
    ts: Vec<i64>,
    bits: Vec<u64>,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    bytes: u64,
    max_ts: i64,
    /// The finest resolution of its blocks (0 = raw), u32::MAX when it holds none.
    min_resolution_s: u32,
}

/// One series' points as columns.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    pub metric: String,
    pub ts: Vec<i64>,
    pub values: Values,
}

impl SeriesData {
    fn trim(&mut self, start: usize, end: usize) {
        self.ts.truncate(end);
        self.ts.drain(..start);
        match &mut self.values {
            Values::F64(v) => {
                v.truncate(end);
                v.drain(..start);
            }
            Values::U64(v) => {
                v.truncate(end);
                v.drain(..start);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// The value at `i` as f64.
    pub fn f64_at(&self, i: usize) -> f64 {
        match &self.values {
            Values::F64(v) => v[i],
            Values::U64(v) => v[i] as f64,
        }
    }

    pub fn points(&self) -> Vec<Point> {
        (0..self.ts.len())
            .map(|i| Point {
                ts_ns: self.ts[i],
                value: match &self.values {
                    Values::F64(v) => Value::F64(v[i]),
                    Values::U64(v) => Value::U64(v[i]),
                },
            })
            .collect()
    }
}

/// The store. Writes need `&mut`; reads take `&self` and may run from several threads at once.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    options: StoreOptions,
    catalog: Catalog,
    wal: LogWriter,
    wal_gen: u64,
    segments: BTreeMap<u32, Segment>,
    current: LogWriter,
    current_id: u32,
    /// Segments from this id on may hold points the WAL holds too (0 after open: unknown).
    wal_covers_from: u32,
    index: HashMap<u32, Vec<BlockRef>>,
    heads: HashMap<u32, Head>,
    last_ts: HashMap<u32, i64>,
    events: LogWriter,
    event_index: Vec<(i64, u64, u32)>,
    report: OpenReport,
    read_errors: AtomicU64,
    cache: BlockCache,
    scratch: Vec<u8>,
}

fn numbered(dir: &Path, prefix: &str) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| StoreError::Invalid(format!("cannot read {}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(".log"))
        {
            if let Ok(n) = n.parse::<u64>() {
                found.push((n, entry.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn open_file(path: &Path) -> Result<File, StoreError> {
    File::open(path).map_err(|source| {
        StoreError::Log(crate::log_file::LogError::Io {
            path: path.to_path_buf(),
            source,
        })
    })
}

impl Store {
    /// Opens (or creates) the store in `dir`, recovering from whatever a crash left.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let started = Instant::now();
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        if options.block_points < 2 || options.block_points > 1 << 20 {
            return Err(StoreError::Invalid(
                "block_points must be within 2..=1048576".into(),
            ));
        }
        let mut report = OpenReport::default();
        let mut catalog = Catalog::open(&dir.join("catalog.log"))?;
        // The highest series id the data holds, known to the catalog or not.
        let mut ids_end = 0u32;
        report.catalog_records_skipped = catalog.skipped_records;

        // Sealed blocks: index every block whose record checks out and whose header parses.
        let mut segments = BTreeMap::new();
        let mut index: HashMap<u32, Vec<BlockRef>> = HashMap::new();
        let mut last_ts: HashMap<u32, i64> = HashMap::new();
        let seg_files = numbered(dir, "seg-")?;
        let mut current = None;
        // First pass: every block header and every downsampling commit record.
        let mut found: Vec<(u32, u64, u32, block::BlockHeader)> = Vec::new();
        let mut committed = std::collections::HashSet::new();
        let mut commits: HashMap<u32, Vec<downsample::Commit>> = HashMap::new();
        for (i, (id, path)) in seg_files.iter().enumerate() {
            let id = *id as u32;
            let (records, scan) = read_log(path, LogKind::Segment)?;
            report.note_scan(path, &scan);
            for record in records {
                if let Some(commit) = downsample::parse_commit(&record.payload, record.offset) {
                    committed.insert(commit.source);
                    commits.entry(id).or_default().push(commit);
                    continue;
                }
                match block::header(&record.payload) {
                    Ok(h) => {
                        ids_end = ids_end.max(h.series.saturating_add(1));
                        if catalog.knows(h.series) {
                            found.push((id, record.offset, record.payload.len() as u32, h));
                        } else {
                            report.bad_blocks += 1;
                        }
                    }
                    Err(_) => report.bad_blocks += 1,
                }
            }
            if i + 1 == seg_files.len() {
                current = Some((id, LogWriter::append_to(path, scan.good_end)?));
            }
            segments.insert(
                id,
                Segment {
                    path: path.clone(),
                    file: open_file(path)?,
                    bytes: scan.good_end,
                    max_ts: i64::MIN,
                    min_resolution_s: u32::MAX,
                },
            );
        }
        // A downsampled segment whose commit is durable but whose file a crash left behind is
        // replaced by its output: delete it. Output blocks no commit covers are from an apply
        // that never finished: ignore them, their source is still here or was applied again.
        let finished: Vec<u32> = committed
            .iter()
            .copied()
            .filter(|s| segments.contains_key(s))
            .collect();
        for source in &finished {
            if let Some(segment) = segments.remove(source) {
                let _ = std::fs::remove_file(&segment.path);
                report.downsampled_sources_removed += 1;
            }
        }
        // Per series, the newest point of the blocks no crash can have lost: those in segments
        // synced when they were rotated, and downsampled ones (their apply syncs).
        let current_seg = seg_files.last().map(|(id, _)| *id as u32);
        let mut durable_max: HashMap<u32, i64> = HashMap::new();
        for (segment, offset, len, h) in found {
            let in_segment = commits.get(&segment).map_or(&[][..], Vec::as_slice);
            if !downsample::committed(&h.origin, offset, in_segment) || finished.contains(&segment)
            {
                continue;
            }
            index.entry(h.series).or_default().push(BlockRef {
                segment,
                offset,
                len,
                min_ts: h.min_ts,
                max_ts: h.max_ts,
                count: h.count,
            });
            // A downsampled block stands for raw points up to the end of its last bucket: the
            // WAL's raw points in that bucket are sealed already.
            let bucket = i64::from(h.origin.resolution_s) * 1_000_000_000;
            let newest = h.max_ts.saturating_add((bucket - 1).max(0));
            let last = last_ts.entry(h.series).or_insert(i64::MIN);
            *last = (*last).max(newest);
            if Some(segment) != current_seg || h.origin.source != 0 {
                let durable = durable_max.entry(h.series).or_insert(i64::MIN);
                *durable = (*durable).max(newest);
            }
            if let Some(seg) = segments.get_mut(&segment) {
                seg.max_ts = seg.max_ts.max(h.max_ts);
                seg.min_resolution_s = seg.min_resolution_s.min(h.origin.resolution_s);
            }
            report.blocks += 1;
        }
        for blocks in index.values_mut() {
            blocks.sort_by_key(|b| b.min_ts);
        }
        report.segments = segments.len();
        let (current_id, current) = match current {
            Some(c) => c,
            None => {
                let path = dir.join(format!("seg-{:08}.log", 1));
                let writer = LogWriter::create(&path, LogKind::Segment)?;
                segments.insert(
                    1,
                    Segment {
                        file: open_file(&path)?,
                        path,
                        bytes: writer.len(),
                        max_ts: i64::MIN,
                        min_resolution_s: u32::MAX,
                    },
                );
                (1, writer)
            }
        };

        // The WAL: replay every generation in order; points already sealed are skipped.
        let wal_files = numbered(dir, "wal-")?;
        let mut heads: HashMap<u32, Head> = HashMap::new();
        let mut recovered: BTreeMap<u32, Vec<(i64, u64)>> = BTreeMap::new();
        for (_, path) in &wal_files {
            let (records, scan) = read_log(path, LogKind::Wal)?;
            report.note_scan(path, &scan);
            for record in records {
                let Ok(points) = wal::decode(&record.payload) else {
                    report
                        .corrupt
                        .push((path.display().to_string(), record.offset, record.offset));
                    continue;
                };
                for p in points {
                    ids_end = ids_end.max(p.series.saturating_add(1));
                    if !catalog.knows(p.series) {
                        continue;
                    }
                    let last = last_ts.entry(p.series).or_insert(i64::MIN);
                    if p.ts <= *last {
                        let durable = durable_max.get(&p.series).copied().unwrap_or(i64::MIN);
                        let blocks = index.get(&p.series).map_or(&[][..], Vec::as_slice);
                        if p.ts > durable && covering(blocks, p.ts).is_none() {
                            recovered.entry(p.series).or_default().push((p.ts, p.bits));
                        } else {
                            report.wal_points_already_sealed += 1;
                        }
                        continue;
                    }
                    *last = p.ts;
                    let head = heads.entry(p.series).or_default();
                    head.ts.push(p.ts);
                    head.bits.push(p.bits);
                    report.wal_points_replayed += 1;
                }
            }
        }
        let (wal_gen, wal) = match wal_files.last() {
            Some((gen, path)) => {
                let (_, scan) = read_log(path, LogKind::Wal)?;
                (*gen, LogWriter::append_to(path, scan.good_end)?)
            }
            None => (
                1,
                LogWriter::create(&dir.join(format!("wal-{:08}.log", 1)), LogKind::Wal)?,
            ),
        };
        // Older generations are only left by a crash mid-checkpoint; their points are in heads now.
        let stale_wals: Vec<PathBuf> = wal_files
            .iter()
            .rev()
            .skip(1)
            .map(|(_, p)| p.clone())
            .collect();

        let events_path = dir.join("events.log");
        let (events, event_index) = if events_path.exists() {
            let (records, scan) = read_log(&events_path, LogKind::Events)?;
            report.note_scan(&events_path, &scan);
            let index = records
                .iter()
                .filter_map(|r| {
                    let event: Event = serde_json::from_slice(&r.payload).ok()?;
                    Some((event.ts_ns, r.offset, r.payload.len() as u32))
                })
                .collect();
            (LogWriter::append_to(&events_path, scan.good_end)?, index)
        } else {
            (
                LogWriter::create(&events_path, LogKind::Events)?,
                Vec::new(),
            )
        };

        // Data of series whose records the catalog lost is not served; their ids are not reused.
        catalog.retire_below(ids_end)?;
        let cache = BlockCache::new(options.cache_bytes);
        let mut store = Self {
            dir: dir.to_path_buf(),
            options,
            catalog,
            wal,
            wal_gen,
            segments,
            current,
            current_id,
            index,
            heads,
            last_ts,
            events,
            event_index,
            report,
            read_errors: AtomicU64::new(0),
            cache,
            scratch: Vec::new(),
            wal_covers_from: 0,
        };
        for (series, points) in recovered {
            store.seal_recovered(series, points)?;
        }
        if !stale_wals.is_empty() {
            store.checkpoint()?;
            for path in stale_wals {
                let _ = std::fs::remove_file(path);
            }
        }
        store.report.recovery_ms = started.elapsed().as_secs_f64() * 1e3;
        if !store.report.is_clean() {
            warn!(report = ?store.report, "store opened with damage skipped");
        }
        Ok(store)
    }

    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Registers (or updates) a VM; series can only be written for registered VMs.
    pub fn register_vm(&mut self, meta: VmMeta) -> Result<(), StoreError> {
        self.catalog.register_vm(meta)
    }

    pub fn vms(&self) -> impl Iterator<Item = &VmMeta> {
        self.catalog.vms.values()
    }

    pub fn series_of(&self, vm: VmId) -> impl Iterator<Item = &SeriesInfo> {
        self.catalog.of_vm(vm)
    }

    fn check(&mut self, index: usize, s: &Sample<'_>) -> Result<u32, RejectReason> {
        if s.metric.is_empty() || s.metric.len() > MAX_METRIC_LEN {
            return Err(RejectReason::BadMetric);
        }
        if let Value::F64(v) = s.value {
            if !v.is_finite() {
                return Err(RejectReason::NonFinite);
            }
        }
        if !self.catalog.vms.contains_key(&s.vm) {
            return Err(RejectReason::UnknownVm);
        }
        let _ = index;
        let info = match self.catalog.lookup(s.vm, s.metric) {
            Some(info) => info.clone(),
            None => self
                .catalog
                .get_or_create(s.vm, s.metric, s.value.kind())
                .map_err(|_| RejectReason::BadMetric)?,
        };
        if info.kind != s.value.kind() {
            return Err(RejectReason::WrongKind {
                expected: info.kind,
            });
        }
        if let Some(last) = self.last_ts.get(&info.id) {
            if s.ts_ns <= *last {
                return Err(RejectReason::OutOfOrder { last_ns: *last });
            }
        }
        Ok(info.id)
    }

    /// Appends a batch. Bad points are rejected one by one (and reported); the rest are written
    /// as one WAL record. On an I/O error (a full disk) nothing of the batch is kept.
    pub fn append(&mut self, batch: &[Sample<'_>]) -> Result<AppendReport, StoreError> {
        let mut report = AppendReport::default();
        let mut points = Vec::with_capacity(batch.len());
        // Timestamps accepted within this batch, so a batch cannot go back in time either.
        let mut pending_last: HashMap<u32, i64> = HashMap::new();
        for (i, s) in batch.iter().enumerate() {
            let checked = self
                .check(i, s)
                .and_then(|series| match pending_last.get(&series) {
                    Some(last) if s.ts_ns <= *last => {
                        Err(RejectReason::OutOfOrder { last_ns: *last })
                    }
                    _ => Ok(series),
                });
            match checked {
                Ok(series) => {
                    pending_last.insert(series, s.ts_ns);
                    points.push(WalPoint {
                        series,
                        ts: s.ts_ns,
                        bits: s.value.bits(),
                    });
                }
                Err(reason) => report.rejected.push(Rejection {
                    index: i,
                    vm: s.vm,
                    metric: s.metric.to_string(),
                    ts_ns: s.ts_ns,
                    reason,
                }),
            }
        }
        if points.is_empty() {
            return Ok(report);
        }
        let mut payload = std::mem::take(&mut self.scratch);
        wal::encode(&points, &mut payload);
        let written = self.wal.append(&[&payload]);
        self.scratch = payload;
        written?;
        if self.options.durability == Durability::EveryAppend {
            self.wal.sync()?;
        }
        for p in &points {
            self.last_ts.insert(p.series, p.ts);
            let head = self.heads.entry(p.series).or_default();
            head.ts.push(p.ts);
            head.bits.push(p.bits);
        }
        report.written = points.len();
        let full: Vec<u32> = points
            .iter()
            .map(|p| p.series)
            .filter(|s| {
                self.heads
                    .get(s)
                    .is_some_and(|h| h.ts.len() >= self.options.block_points)
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // The points are in the WAL now: a failure to seal (a full disk) must not turn their
        // acknowledgement into an error. The heads stay and are sealed by a later call.
        for series in full {
            if let Err(error) = self.seal(series) {
                warn!(%error, "sealing a block failed; the points stay in the WAL");
                break;
            }
        }
        if self.wal.len() > self.options.wal_checkpoint_bytes {
            if let Err(error) = self.checkpoint() {
                warn!(%error, "checkpoint failed; the WAL keeps growing until one succeeds");
            }
        }
        Ok(report)
    }

    /// Makes every appended point durable.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.wal.sync()?;
        Ok(())
    }

    /// Seals one series' head into a block in the current segment.
    fn seal(&mut self, series: u32) -> Result<(), StoreError> {
        let Some(head) = self.heads.get(&series).filter(|h| !h.ts.is_empty()) else {
            return Ok(());
        };
        let kind = self.catalog.series[series as usize].kind;
        let bytes = block::encode(series, kind, &head.ts, &head.bits)?;
        let (first, last, count) = (head.ts[0], head.ts[head.ts.len() - 1], head.ts.len());
        // The head goes only once its block is written: a failed append keeps it.
        self.add_block(series, &bytes, first, last, count)?;
        self.heads.remove(&series);
        if self.current.len() > self.options.segment_bytes {
            self.rotate_segment()?;
        }
        Ok(())
    }

    /// Appends an encoded block of `series` to the current segment and indexes it (at the end
    /// of the series' blocks: the caller re-sorts if it is not the newest).
    fn add_block(
        &mut self,
        series: u32,
        bytes: &[u8],
        min_ts: i64,
        max_ts: i64,
        count: usize,
    ) -> Result<(), StoreError> {
        let offsets = self.current.append(&[bytes])?;
        let segment = self
            .segments
            .get_mut(&self.current_id)
            .ok_or_else(|| StoreError::Internal("current segment missing".into()))?;
        segment.bytes = self.current.len();
        segment.max_ts = segment.max_ts.max(max_ts);
        segment.min_resolution_s = 0;
        self.index.entry(series).or_default().push(BlockRef {
            segment: self.current_id,
            offset: offsets[0],
            len: bytes.len() as u32,
            min_ts,
            max_ts,
            count: count as u32,
        });
        Ok(())
    }

    /// Seals WAL points of a block a crash lost (see [`OpenReport::wal_points_recovered`]): one
    /// block per gap between the blocks that survived, so blocks never overlap.
    fn seal_recovered(
        &mut self,
        series: u32,
        mut points: Vec<(i64, u64)>,
    ) -> Result<(), StoreError> {
        points.sort_unstable_by_key(|p| p.0);
        points.dedup_by_key(|p| p.0);
        let kind = self.catalog.series[series as usize].kind;
        let runs: Vec<Vec<(i64, u64)>> = {
            let blocks = self.index.get(&series).map_or(&[][..], Vec::as_slice);
            let gap_of = |ts: i64| blocks.partition_point(|b| b.min_ts <= ts);
            let mut runs: Vec<Vec<(i64, u64)>> = Vec::new();
            for point in points {
                match runs.last_mut() {
                    Some(run) if gap_of(run[0].0) == gap_of(point.0) => run.push(point),
                    _ => runs.push(vec![point]),
                }
            }
            runs
        };
        for run in runs {
            let (ts, bits): (Vec<i64>, Vec<u64>) = run.into_iter().unzip();
            let bytes = block::encode(series, kind, &ts, &bits)?;
            self.add_block(series, &bytes, ts[0], ts[ts.len() - 1], ts.len())?;
            self.report.wal_points_recovered += ts.len();
        }
        if let Some(blocks) = self.index.get_mut(&series) {
            blocks.sort_by_key(|b| b.min_ts);
        }
        Ok(())
    }

    fn rotate_segment(&mut self) -> Result<(), StoreError> {
        self.current.sync()?;
        let id = self.current_id + 1;
        let path = self.dir.join(format!("seg-{id:08}.log"));
        self.current = LogWriter::create(&path, LogKind::Segment)?;
        self.segments.insert(
            id,
            Segment {
                file: open_file(&path)?,
                path,
                bytes: self.current.len(),
                max_ts: i64::MIN,
                min_resolution_s: u32::MAX,
            },
        );
        self.current_id = id;
        Ok(())
    }

    /// Seals every head, makes the blocks durable and starts an empty WAL.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        let series: Vec<u32> = self.heads.keys().copied().collect();
        for s in series {
            self.seal(s)?;
        }
        self.current.sync()?;
        self.wal_covers_from = self.current_id;
        let old = self.wal.path().to_path_buf();
        let gen = self.wal_gen + 1;
        let wal = LogWriter::create(&self.dir.join(format!("wal-{gen:08}.log")), LogKind::Wal)?;
        self.wal = wal;
        self.wal_gen = gen;
        std::fs::remove_file(&old)
            .map_err(|e| StoreError::Internal(format!("cannot remove {}: {e}", old.display())))?;
        sync_dir(&old)?;
        Ok(())
    }

    /// Checkpoints and closes.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.checkpoint()?;
        self.events.sync()?;
        Ok(())
    }

    /// A block decoded, from the cache or from disk (then cached).
    fn decoded_block(&self, r: &BlockRef, kind: ValueKind) -> Option<Arc<Decoded>> {
        let key = (r.segment, r.offset);
        if let Some(hit) = self.cache.get(key) {
            return Some(hit);
        }
        let payload = self.load_block(r)?;
        let mut decoded = Decoded {
            ts: Vec::with_capacity(r.count as usize),
            values: Values::new(kind),
        };
        if let Err(error) = block::decode_append(&payload, &mut decoded.ts, &mut decoded.values) {
            self.read_errors.fetch_add(1, Ordering::Relaxed);
            warn!(%error, offset = r.offset, "undecodable block skipped");
            return None;
        }
        let decoded = Arc::new(decoded);
        self.cache.insert(key, decoded.clone());
        Some(decoded)
    }

    fn load_block(&self, r: &BlockRef) -> Option<Vec<u8>> {
        let segment = self.segments.get(&r.segment)?;
        let payload = read_record_at(&segment.file, &segment.path, r.offset, r.len as usize)
            .ok()
            .flatten();
        if payload.is_none() {
            self.read_errors.fetch_add(1, Ordering::Relaxed);
            warn!(segment = %segment.path.display(), offset = r.offset, "corrupt block skipped");
        }
        payload
    }

    fn read_block(&self, r: &BlockRef) -> Option<(Vec<i64>, Vec<u64>)> {
        let payload = self.load_block(r)?;
        match block::decode(&payload) {
            Ok((_, ts, bits)) => Some((ts, bits)),
            Err(error) => {
                self.read_errors.fetch_add(1, Ordering::Relaxed);
                warn!(%error, offset = r.offset, "undecodable block skipped");
                None
            }
        }
    }

    /// (vm, metric) with `from <= ts < to` as columns: the fast read path.
    pub fn read_columns(&self, vm: VmId, metric: &str, from: i64, to: i64) -> Option<SeriesData> {
        let mut data = SeriesData {
            metric: String::new(),
            ts: Vec::new(),
            values: Values::U64(Vec::new()),
        };
        self.read_columns_into(vm, metric, from, to, &mut data)
            .then_some(data)
    }

    /// As [`Store::read_columns`], into `out`, reusing its buffers: a reader that polls the same
    /// window every interval allocates (and faults in) nothing after its first read.
    pub fn read_columns_into(
        &self,
        vm: VmId,
        metric: &str,
        from: i64,
        to: i64,
        out: &mut SeriesData,
    ) -> bool {
        let Some(info) = self.catalog.lookup(vm, metric) else {
            return false;
        };
        out.metric.clear();
        out.metric.push_str(&info.metric);
        out.ts.clear();
        match (&mut out.values, info.kind) {
            (Values::F64(v), ValueKind::F64) => v.clear(),
            (Values::U64(v), ValueKind::U64) => v.clear(),
            (values, kind) => *values = Values::new(kind),
        }
        if let Some(blocks) = self.index.get(&info.id) {
            let wanted: Vec<&BlockRef> = blocks
                .iter()
                .filter(|r| r.max_ts >= from && r.min_ts < to)
                .collect();
            let total: usize = wanted.iter().map(|r| r.count as usize).sum();
            out.ts.reserve(total);
            for r in wanted {
                let Some(decoded) = self.decoded_block(r, info.kind) else {
                    continue;
                };
                out.ts.extend_from_slice(&decoded.ts);
                match (&mut out.values, &decoded.values) {
                    (Values::F64(v), Values::F64(d)) => v.extend_from_slice(d),
                    (Values::U64(v), Values::U64(d)) => v.extend_from_slice(d),
                    _ => {
                        out.ts.truncate(out.ts.len() - decoded.ts.len());
                        self.read_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        if let Some(head) = self.heads.get(&info.id) {
            out.ts.extend_from_slice(&head.ts);
            match &mut out.values {
                Values::F64(v) => v.extend(head.bits.iter().map(|b| f64::from_bits(*b))),
                Values::U64(v) => v.extend_from_slice(&head.bits),
            }
        }
        // Blocks do not overlap and come in time order, so only the ends need trimming.
        let start = out.ts.partition_point(|t| *t < from);
        let end = out.ts.partition_point(|t| *t < to);
        out.trim(start, end);
        true
    }

    /// How many points of `vm` lie in `from <= ts < to`, from the block headers and without
    /// decoding anything: exact but for the blocks that straddle either end, counted whole.
    pub fn count_vm_points(&self, vm: VmId, from: i64, to: i64) -> usize {
        self.catalog
            .of_vm(vm)
            .map(|info| {
                let sealed: usize = self.index.get(&info.id).map_or(0, |blocks| {
                    blocks
                        .iter()
                        .filter(|b| b.max_ts >= from && b.min_ts < to)
                        .map(|b| b.count as usize)
                        .sum()
                });
                let head = self.heads.get(&info.id).map_or(0, |h| {
                    h.ts.partition_point(|t| *t < to) - h.ts.partition_point(|t| *t < from)
                });
                sealed + head
            })
            .sum()
    }

    /// Every series of `vm` as columns, decoded on all cores.
    pub fn read_vm_columns(&self, vm: VmId, from: i64, to: i64) -> Vec<SeriesData> {
        let mut out = Vec::new();
        self.read_vm_columns_into(vm, from, to, &mut out);
        out
    }

    /// As [`Store::read_vm_columns`], into `out`, reusing the buffers it already holds.
    pub fn read_vm_columns_into(&self, vm: VmId, from: i64, to: i64, out: &mut Vec<SeriesData>) {
        let metrics: Vec<&str> = self.catalog.of_vm(vm).map(|s| s.metric.as_str()).collect();
        out.resize_with(metrics.len(), || SeriesData {
            metric: String::new(),
            ts: Vec::new(),
            values: Values::U64(Vec::new()),
        });
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(metrics.len().max(1));
        let per = metrics.len().div_ceil(workers.max(1)).max(1);
        std::thread::scope(|scope| {
            for (names, slots) in metrics.chunks(per).zip(out.chunks_mut(per)) {
                scope.spawn(move || {
                    for (name, slot) in names.iter().zip(slots.iter_mut()) {
                        self.read_columns_into(vm, name, from, to, slot);
                    }
                });
            }
        });
    }

    /// Points of (vm, metric) with `from <= ts < to`, oldest first.
    pub fn read_range(&self, vm: VmId, metric: &str, from: i64, to: i64) -> Vec<Point> {
        self.read_columns(vm, metric, from, to)
            .map_or_else(Vec::new, |d| d.points())
    }

    /// Every series of `vm` over `from <= ts < to`.
    pub fn read_vm(&self, vm: VmId, from: i64, to: i64) -> BTreeMap<String, Vec<Point>> {
        self.catalog
            .of_vm(vm)
            .map(|s| (s.metric.clone(), self.read_range(vm, &s.metric, from, to)))
            .collect()
    }

    /// The newest point of (vm, metric).
    pub fn latest(&self, vm: VmId, metric: &str) -> Option<Point> {
        let info = self.catalog.lookup(vm, metric)?;
        if let Some(head) = self.heads.get(&info.id).filter(|h| !h.ts.is_empty()) {
            let i = head.ts.len() - 1;
            return Some(Point {
                ts_ns: head.ts[i],
                value: Value::from_bits(info.kind, head.bits[i]),
            });
        }
        let blocks = self.index.get(&info.id)?;
        blocks.iter().rev().find_map(|r| {
            let (ts, bits) = self.read_block(r)?;
            let i = ts.len().checked_sub(1)?;
            Some(Point {
                ts_ns: ts[i],
                value: Value::from_bits(info.kind, bits[i]),
            })
        })
    }

    /// The newest point of every series that has one at or after `since_ns`, for exporters such
    /// as a Prometheus endpoint. Series with nothing that recent (a VM stopped long ago) are
    /// passed over without reading their blocks.
    pub fn latest_points(&self, since_ns: i64) -> impl Iterator<Item = (&SeriesInfo, Point)> + '_ {
        self.catalog
            .series
            .iter()
            .filter(|s| s.id != u32::MAX)
            .filter(move |s| self.last_ts.get(&s.id).is_some_and(|t| *t >= since_ns))
            .filter_map(|s| self.latest(s.vm, &s.metric).map(|p| (s, p)))
    }

    /// (vm, metric) over `from <= ts < to` in buckets of `step_ns` aligned to multiples of it.
    pub fn read_downsampled(
        &self,
        vm: VmId,
        metric: &str,
        from: i64,
        to: i64,
        step_ns: i64,
    ) -> Result<Vec<Bucket>, StoreError> {
        if step_ns <= 0 {
            return Err(StoreError::Invalid("bucket step must be positive".into()));
        }
        let mut buckets: Vec<Bucket> = Vec::new();
        for p in self.read_range(vm, metric, from, to) {
            let start = p.ts_ns.div_euclid(step_ns) * step_ns;
            let v = p.value.as_f64();
            match buckets.last_mut() {
                Some(b) if b.start_ns == start => {
                    b.min = b.min.min(v);
                    b.max = b.max.max(v);
                    b.mean += (v - b.mean) / (b.count + 1) as f64;
                    b.last = v;
                    b.count += 1;
                }
                _ => buckets.push(Bucket {
                    start_ns: start,
                    min: v,
                    mean: v,
                    max: v,
                    last: v,
                    count: 1,
                }),
            }
        }
        Ok(buckets)
    }

    /// Appends an event (synced before it returns).
    pub fn append_event(&mut self, event: &Event) -> Result<(), StoreError> {
        let payload = serde_json::to_vec(event).map_err(|e| StoreError::Internal(e.to_string()))?;
        let offsets = self.events.append(&[&payload])?;
        self.events.sync()?;
        self.event_index
            .push((event.ts_ns, offsets[0], payload.len() as u32));
        Ok(())
    }

    /// Events with `from <= ts < to`, optionally of one VM, in time order.
    pub fn events(&self, from: i64, to: i64, vm: Option<VmId>) -> Result<Vec<Event>, StoreError> {
        let file = open_file(self.events.path())?;
        let mut out: Vec<Event> = self
            .event_index
            .iter()
            .filter(|(ts, _, _)| *ts >= from && *ts < to)
            .filter_map(|(_, offset, len)| {
                let payload = read_record_at(&file, self.events.path(), *offset, *len as usize)
                    .ok()
                    .flatten()?;
                serde_json::from_slice::<Event>(&payload).ok()
            })
            .filter(|e| vm.is_none() || e.vm == vm)
            .collect();
        out.sort_by_key(|e| e.ts_ns);
        Ok(out)
    }

    /// Deletes whole sealed segments: those whose newest point is older than `keep_after_ns`,
    /// then the oldest ones while the store is larger than `max_bytes`. Returns how many went.
    pub fn apply_retention(
        &mut self,
        keep_after_ns: Option<i64>,
        max_bytes: Option<u64>,
    ) -> Result<usize, StoreError> {
        let mut doomed = Vec::new();
        let sealed: Vec<u32> = self
            .segments
            .keys()
            .copied()
            .filter(|id| *id != self.current_id)
            .collect();
        if let Some(cutoff) = keep_after_ns {
            doomed.extend(
                sealed
                    .iter()
                    .copied()
                    .filter(|id| self.segments[id].max_ts < cutoff),
            );
        }
        if let Some(limit) = max_bytes {
            let mut total: u64 = self.segments.values().map(|s| s.bytes).sum();
            for id in &sealed {
                if total <= limit {
                    break;
                }
                if !doomed.contains(id) {
                    doomed.push(*id);
                }
                total = total.saturating_sub(self.segments[id].bytes);
            }
        }
        // The WAL must not hold points of a deleted segment: at open they would look like the
        // points of a block a crash lost, and come back.
        if doomed.iter().any(|id| *id >= self.wal_covers_from) {
            self.checkpoint()?;
        }
        for id in &doomed {
            if let Some(segment) = self.segments.remove(id) {
                std::fs::remove_file(&segment.path).map_err(|e| {
                    StoreError::Internal(format!("cannot remove {}: {e}", segment.path.display()))
                })?;
                sync_dir(&segment.path)?;
            }
            for blocks in self.index.values_mut() {
                blocks.retain(|b| b.segment != *id);
            }
        }
        Ok(doomed.len())
    }

    /// Picks the oldest sealed segment that a downsampling tier applies to at `now_ns`.
    pub fn plan_downsample(&self, now_ns: i64) -> Option<DownsampleJob> {
        self.segments
            .iter()
            .filter(|(id, _)| **id != self.current_id)
            .find_map(|(id, segment)| {
                let tier =
                    self.options.tiers.iter().rev().find(|t| {
                        segment.max_ts < now_ns - t.after_ns && segment.max_ts != i64::MIN
                    })?;
                (segment.min_resolution_s < tier.step_s).then(|| DownsampleJob {
                    segment: *id,
                    path: segment.path.clone(),
                    step_s: tier.step_s,
                    kinds: self.catalog.series.iter().map(|s| s.kind).collect(),
                })
            })
    }

    /// Installs a finished job: its blocks and commit go into the current segment (synced), the
    /// index moves to them, and the old segment is deleted. Returns the blocks written.
    pub fn apply_downsample(&mut self, output: DownsampleOutput) -> Result<usize, StoreError> {
        if !self.segments.contains_key(&output.segment) || output.segment == self.current_id {
            return Err(StoreError::Invalid(format!(
                "segment {} is not a sealed segment",
                output.segment
            )));
        }
        // The apply's blocks start where the segment ends now.
        let commit = downsample::commit_record(output.segment, self.current.len());
        let mut payloads: Vec<&[u8]> = output.blocks.iter().map(Vec::as_slice).collect();
        payloads.push(&commit);
        let offsets = self.current.append(&payloads)?;
        self.current.sync()?;
        for blocks in self.index.values_mut() {
            blocks.retain(|b| b.segment != output.segment);
        }
        for (bytes, offset) in output.blocks.iter().zip(offsets) {
            let h = block::header(bytes)?;
            let blocks = self.index.entry(h.series).or_default();
            blocks.push(BlockRef {
                segment: self.current_id,
                offset,
                len: bytes.len() as u32,
                min_ts: h.min_ts,
                max_ts: h.max_ts,
                count: h.count,
            });
            blocks.sort_by_key(|b| b.min_ts);
            if let Some(current) = self.segments.get_mut(&self.current_id) {
                current.max_ts = current.max_ts.max(h.max_ts);
                current.min_resolution_s = current.min_resolution_s.min(h.origin.resolution_s);
            }
        }
        if let Some(current) = self.segments.get_mut(&self.current_id) {
            current.bytes = self.current.len();
        }
        if let Some(old) = self.segments.remove(&output.segment) {
            std::fs::remove_file(&old.path).map_err(|e| {
                StoreError::Internal(format!("cannot remove {}: {e}", old.path.display()))
            })?;
            sync_dir(&old.path)?;
        }
        if self.current.len() > self.options.segment_bytes {
            self.rotate_segment()?;
        }
        Ok(output.blocks.len())
    }

    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            series: self
                .catalog
                .series
                .iter()
                .filter(|s| s.id != u32::MAX)
                .count(),
            vms: self.catalog.vms.len(),
            segments: self.segments.len(),
            events: self.event_index.len(),
            read_errors: self.read_errors.load(Ordering::Relaxed),
            ..StoreStats::default()
        };
        let mut block_bytes = 0u64;
        for blocks in self.index.values() {
            for b in blocks {
                stats.sealed_samples += u64::from(b.count);
                block_bytes += u64::from(b.len) + RECORD_HEADER_LEN as u64;
                stats.oldest_ns = Some(stats.oldest_ns.map_or(b.min_ts, |o| o.min(b.min_ts)));
                stats.newest_ns = Some(stats.newest_ns.map_or(b.max_ts, |n| n.max(b.max_ts)));
            }
        }
        stats.samples = stats.sealed_samples;
        for head in self.heads.values() {
            stats.samples += head.ts.len() as u64;
            if let (Some(first), Some(last)) = (head.ts.first(), head.ts.last()) {
                stats.oldest_ns = Some(stats.oldest_ns.map_or(*first, |o| o.min(*first)));
                stats.newest_ns = Some(stats.newest_ns.map_or(*last, |n| n.max(*last)));
            }
        }
        stats.bytes_per_sample =
            (stats.sealed_samples > 0).then(|| block_bytes as f64 / stats.sealed_samples as f64);
        stats.bytes_on_disk = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        stats
    }
}
