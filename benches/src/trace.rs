//! Reads the Bitbrains GWA-T-12 per-VM CSVs (`;`-separated, 11 columns, plain or .gz) for the
//! store benchmarks. Rows that do not parse are counted and skipped.

use flate2::read::GzDecoder;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// The value columns after the timestamp, as series names.
pub const METRICS: [&str; 10] = [
    "cpu_cores",
    "cpu_capacity_mhz",
    "cpu_usage_mhz",
    "cpu_usage_pct",
    "mem_capacity_kb",
    "mem_usage_kb",
    "disk_read_kbps",
    "disk_write_kbps",
    "net_rx_kbps",
    "net_tx_kbps",
];

/// One VM's trace: timestamps (ns) and one column per metric.
#[derive(Debug, Clone)]
pub struct VmTrace {
    pub id: u64,
    pub ts_ns: Vec<i64>,
    pub columns: Vec<Vec<f64>>,
    pub skipped_rows: usize,
}

impl VmTrace {
    pub fn samples(&self) -> usize {
        self.ts_ns.len() * self.columns.len()
    }
}

/// Where the shared traces are: `AUGUR_TRACES` or `../shared/traces` beside the repository.
pub fn traces_root() -> PathBuf {
    std::env::var_os("AUGUR_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces"))
}

/// Loads every VM file in `dir`.
pub fn load_dir(dir: &Path) -> std::io::Result<Vec<VmTrace>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.to_string_lossy().ends_with(".csv") || p.to_string_lossy().ends_with(".csv.gz")
        })
        .collect();
    files.sort();
    files.iter().map(|p| load_file(p)).collect()
}

pub fn load_file(path: &Path) -> std::io::Result<VmTrace> {
    let file = std::fs::File::open(path)?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let id = name
        .split('.')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut trace = VmTrace {
        id,
        ts_ns: Vec::new(),
        columns: vec![Vec::new(); METRICS.len()],
        skipped_rows: 0,
    };
    for line in BufReader::new(reader).lines().skip(1) {
        let line = line?;
        let fields: Vec<&str> = line.split(';').map(str::trim).collect();
        let parsed: Option<Vec<f64>> = (fields.len() == 11)
            .then(|| fields.iter().map(|f| f.parse().ok()).collect())
            .flatten();
        match parsed {
            Some(values)
                if values.iter().all(|v| v.is_finite())
                    && trace
                        .ts_ns
                        .last()
                        .is_none_or(|t| (values[0] as i64) * 1_000_000_000 > *t) =>
            {
                trace.ts_ns.push(values[0] as i64 * 1_000_000_000);
                for (column, v) in trace.columns.iter_mut().zip(&values[1..]) {
                    column.push(*v);
                }
            }
            _ => trace.skipped_rows += 1,
        }
    }
    Ok(trace)
}
