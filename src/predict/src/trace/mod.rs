//! Real VM traces as regular 5-minute series.
//!
//! Two formats: the Bitbrains GWA-T-12 per-VM CSV ([`gwa`]) and the "wide" CSV of one metric with
//! one column per VM ([`wide`]), each plain or gzip. Every irregularity is counted in a
//! [`LoadReport`], never a panic: malformed rows are skipped, values out of range are clamped,
//! timestamps are snapped to the 5-minute grid, and holes are filled with the last value.

/// The highest CPU usage (percent of the VM's cores) a trace may hold: a VM cannot use more than
/// all of its cores, and traces round past 100% by a few percent.
pub const CPU_MAX_PERCENT: f64 = 105.0;

pub mod gwa;
pub mod wide;

use flate2::read::GzDecoder;
use serde::Serialize;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// A resource a trace describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Cpu,
    /// CPU used in MHz (GWA traces only): demand in absolute units, for the simulator.
    CpuMhz,
    Mem,
    Disk,
    Net,
}

impl std::str::FromStr for Resource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Resource::Cpu),
            "mem" => Ok(Resource::Mem),
            "disk" => Ok(Resource::Disk),
            "net" => Ok(Resource::Net),
            other => Err(format!("unknown metric {other:?} (cpu, mem, disk or net)")),
        }
    }
}

/// One VM's resource on a regular 5-minute grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub id: String,
    /// Unix seconds of the first step.
    pub start_s: i64,
    pub values: Vec<f64>,
}

/// What loading found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    pub files: usize,
    pub series: usize,
    pub rows: usize,
    pub malformed_rows: usize,
    pub out_of_range: usize,
    pub duplicate_or_backward_rows: usize,
    /// Rows stamped more than a year from the middle of their series: a clock or a field gone
    /// wrong, which would otherwise stretch the series over years of invented steps.
    pub far_timestamp_rows: usize,
    pub gap_steps_filled: usize,
    pub unreadable_files: Vec<String>,
}

impl LoadReport {
    pub fn merge(&mut self, other: &LoadReport) {
        self.files += other.files;
        self.series += other.series;
        self.rows += other.rows;
        self.malformed_rows += other.malformed_rows;
        self.out_of_range += other.out_of_range;
        self.duplicate_or_backward_rows += other.duplicate_or_backward_rows;
        self.far_timestamp_rows += other.far_timestamp_rows;
        self.gap_steps_filled += other.gap_steps_filled;
        self.unreadable_files
            .extend(other.unreadable_files.iter().cloned());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
}

/// Lines of a plain or gzip file.
pub fn lines(path: &Path) -> Result<Box<dyn Iterator<Item = std::io::Result<String>>>, TraceError> {
    let file = std::fs::File::open(path).map_err(|source| TraceError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::new(reader).lines()))
}

/// Files under `dir` (one level of subfolders too) whose names end in .csv or .csv.gz, sorted.
pub fn csv_files(dir: &Path) -> Result<Vec<PathBuf>, TraceError> {
    let io = |source| TraceError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(io)?
                .flatten()
                .map(|e| e.path())
                .collect();
            inner.sort();
            out.extend(inner.into_iter().filter(|p| is_csv(p)));
        } else if is_csv(&path) {
            out.push(path);
        }
    }
    Ok(out)
}

fn is_csv(path: &Path) -> bool {
    let name = path.to_string_lossy();
    name.ends_with(".csv") || name.ends_with(".csv.gz")
}

/// How far from the median timestamp of its series a row may be.
const MAX_REACH_S: i64 = 366 * 86_400;

/// Places timestamped values (sorted by time) on the 5-minute grid: each row goes to its nearest
/// step; a step with no row takes the previous value (counted), a row that lands on a filled
/// step is dropped, and so is one stamped more than a year from the series' median (counted).
pub fn regularize(id: String, rows: &[(i64, f64)], report: &mut LoadReport) -> Option<Series> {
    let median = rows.get(rows.len() / 2)?.0;
    let near = |ts: i64| ts.abs_diff(median) <= MAX_REACH_S as u64;
    let far = rows.iter().filter(|(ts, _)| !near(*ts)).count();
    report.far_timestamp_rows += far;
    let rows: Vec<(i64, f64)> = if far > 0 {
        rows.iter().copied().filter(|(ts, _)| near(*ts)).collect()
    } else {
        rows.to_vec()
    };
    let first = rows.first()?.0;
    let step = crate::STEP_S;
    let mut values: Vec<Option<f64>> = Vec::new();
    for (ts, v) in &rows {
        let index = ((ts - first) as f64 / step as f64).round();
        if !(0.0..=10_000_000.0).contains(&index) {
            report.duplicate_or_backward_rows += 1;
            continue;
        }
        let index = index as usize;
        if values.len() <= index {
            values.resize(index + 1, None);
        }
        if values[index].is_some() {
            report.duplicate_or_backward_rows += 1;
            continue;
        }
        values[index] = Some(*v);
    }
    let mut last = values.first().copied().flatten()?;
    let filled = values
        .into_iter()
        .map(|v| match v {
            Some(v) => {
                last = v;
                v
            }
            None => {
                report.gap_steps_filled += 1;
                last
            }
        })
        .collect();
    report.series += 1;
    Some(Series {
        id,
        start_s: first,
        values: filled,
    })
}
