//! The Bitbrains GWA-T-12 per-VM CSV: `;`-separated, a header, 11 columns:
//! timestamp (Unix seconds), CPU cores, CPU capacity (MHz), CPU usage (MHz), CPU usage (%),
//! memory capacity (KB), memory usage (KB), disk read (KB/s), disk write (KB/s), network
//! received (KB/s), network transmitted (KB/s). One file per VM and month; files of the same name
//! in month subfolders continue the same VM.

use super::{csv_files, lines, regularize, LoadReport, Resource, Series, TraceError};
use std::collections::BTreeMap;
use std::path::Path;

/// The value of `resource` in a parsed row, or `None` if out of range.
fn pick(resource: Resource, row: &[f64]) -> Option<f64> {
    let value = match resource {
        Resource::Cpu => row[4],
        Resource::CpuMhz => row[3],
        Resource::Mem => row[6],
        Resource::Disk => row[7] + row[8],
        Resource::Net => row[9] + row[10],
    };
    let limit = match resource {
        Resource::Cpu => super::CPU_MAX_PERCENT,
        _ => 1e12,
    };
    (value.is_finite() && value >= 0.0 && value <= limit).then_some(value)
}

/// The VM a file holds: its name without `.csv` or `.csv.gz`.
fn vm_id(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    name.trim_end_matches(".gz")
        .trim_end_matches(".csv")
        .to_string()
}

/// The 11 numbers of a data row, or `None` if it has another shape or a field is not a number.
fn parse_row(line: &str) -> Option<Vec<f64>> {
    let fields: Vec<f64> = line
        .split(';')
        .map(|f| f.trim().parse::<f64>().ok())
        .collect::<Option<Vec<f64>>>()?;
    (fields.len() == 11).then_some(fields)
}

/// Loads every VM in `dir` for one resource.
pub fn load(dir: &Path, resource: Resource) -> Result<(Vec<Series>, LoadReport), TraceError> {
    let mut report = LoadReport::default();
    let mut rows_by_vm: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for path in csv_files(dir)? {
        let vm = vm_id(&path);
        let lines = match lines(&path) {
            Ok(lines) => lines,
            Err(error) => {
                report.unreadable_files.push(error.to_string());
                continue;
            }
        };
        let mut lines = lines.peekable();
        let looks_like_gwa = matches!(lines.peek(), Some(Ok(first)) if first.contains(';'));
        if !looks_like_gwa {
            report.unreadable_files.push(format!(
                "{}: not a GWA-T-12 file (no ';'-separated header)",
                path.display()
            ));
            continue;
        }
        report.files += 1;
        let rows = rows_by_vm.entry(vm).or_default();
        for (n, line) in lines.enumerate() {
            let Ok(line) = line else {
                report.unreadable_files.push(format!(
                    "{}: read error at line {}",
                    path.display(),
                    n + 1
                ));
                break;
            };
            if n == 0 && line.to_ascii_lowercase().contains("timestamp") {
                continue;
            }
            report.rows += 1;
            let Some(row) = parse_row(&line).filter(|r| r[0].is_finite() && r[0] > 0.0) else {
                report.malformed_rows += 1;
                continue;
            };
            match pick(resource, &row) {
                Some(v) => rows.push((row[0] as i64, v)),
                None => {
                    report.out_of_range += 1;
                    let clamped = if resource == Resource::Cpu {
                        row[4].clamp(0.0, 100.0)
                    } else {
                        0.0
                    };
                    if clamped.is_finite() {
                        rows.push((row[0] as i64, clamped));
                    }
                }
            }
        }
    }
    let mut series = Vec::new();
    for (vm, mut rows) in rows_by_vm {
        rows.sort_by_key(|r| r.0);
        if let Some(s) = regularize(vm, &rows, &mut report) {
            series.push(s);
        }
    }
    Ok((series, report))
}

/// A VM's provisioned size, from its trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VmSize {
    pub cpu_mhz: f64,
    pub mem_kb: f64,
}

/// Each VM's provisioned CPU (MHz) and memory (KB): the largest seen in the first data row of
/// its files. Files without a readable first row are left out.
pub fn load_sizes(dir: &Path) -> Result<BTreeMap<String, VmSize>, TraceError> {
    let mut sizes: BTreeMap<String, VmSize> = BTreeMap::new();
    for path in csv_files(dir)? {
        let vm = vm_id(&path);
        let Ok(lines) = lines(&path) else { continue };
        let first_row = lines
            .take(3)
            .map_while(Result::ok)
            .filter(|l| !l.to_ascii_lowercase().contains("timestamp"))
            .find_map(|l| parse_row(&l));
        let Some(row) = first_row else { continue };
        let (cpu_mhz, mem_kb) = (row[2], row[5]);
        if cpu_mhz.is_finite() && cpu_mhz > 0.0 && mem_kb.is_finite() && mem_kb > 0.0 {
            let size = sizes.entry(vm).or_insert(VmSize { cpu_mhz, mem_kb });
            size.cpu_mhz = size.cpu_mhz.max(cpu_mhz);
            size.mem_kb = size.mem_kb.max(mem_kb);
        }
    }
    Ok(sizes)
}

/// Loads `target` with every other resource of the same VMs as behavioural features, keeping the
/// VMs whose resources share one grid.
pub fn load_vms(
    dir: &Path,
    target: Resource,
) -> Result<(Vec<crate::gbt::VmSeries>, LoadReport), TraceError> {
    let (main, report) = load(dir, target)?;
    let others: Vec<Vec<Series>> = [Resource::Cpu, Resource::Mem, Resource::Disk, Resource::Net]
        .into_iter()
        .filter(|r| *r != target)
        .map(|r| load(dir, r).map(|(s, _)| s))
        .collect::<Result<_, _>>()?;
    let vms = main
        .into_iter()
        .filter_map(|s| {
            let aligned: Option<Vec<Vec<f64>>> = others
                .iter()
                .map(|set| {
                    set.iter()
                        .find(|o| {
                            o.id == s.id
                                && o.start_s == s.start_s
                                && o.values.len() == s.values.len()
                        })
                        .map(|o| o.values.clone())
                })
                .collect();
            Some(crate::gbt::VmSeries {
                step_s: crate::STEP_S,
                id: s.id,
                start_s: s.start_s,
                target: s.values,
                others: aligned?,
            })
        })
        .collect();
    Ok((vms, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const HEADER: &str = "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\tDisk write throughput [KB/s];\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]";

    fn row(ts: i64, cpu: f64) -> String {
        format!("{ts};\t2;\t5200;\t100;\t{cpu};\t1000;\t500;\t1;\t2;\t3;\t4")
    }

    #[test]
    fn months_continue_gaps_fill_and_bad_rows_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("2013-7")).unwrap();
        std::fs::create_dir_all(dir.path().join("2013-8")).unwrap();
        let july = [
            HEADER.to_string(),
            row(1000, 1.0),
            row(1300, 2.0),
            "garbage;line".into(),
            row(1601, 3.0),
        ]
        .join("\n");
        std::fs::write(dir.path().join("2013-7/7.csv"), july).unwrap();
        // August, gzipped, after a 10-minute hole, with one impossible value.
        let august = [HEADER.to_string(), row(2500, 5.0), row(2800, 250.0)].join("\n");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(august.as_bytes()).unwrap();
        std::fs::write(dir.path().join("2013-8/7.csv.gz"), gz.finish().unwrap()).unwrap();
        let (series, report) = load(dir.path(), Resource::Cpu).unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].values, vec![1.0, 2.0, 3.0, 3.0, 3.0, 5.0, 100.0]);
        assert_eq!(
            (
                report.files,
                report.malformed_rows,
                report.out_of_range,
                report.gap_steps_filled
            ),
            (2, 1, 1, 2)
        );
        let (disk, _) = load(dir.path(), Resource::Disk).unwrap();
        assert_eq!(disk[0].values[0], 3.0);
    }

    #[test]
    fn a_row_stamped_years_away_is_dropped_not_stretched_into_a_series() {
        let dir = tempfile::tempdir().unwrap();
        let day = 1_376_000_000;
        let rows: Vec<String> = std::iter::once(HEADER.to_string())
            .chain(std::iter::once(row(1, 9.0)))
            .chain((0..5).map(|i| row(day + 300 * i, i as f64)))
            .chain(std::iter::once(row(4_000_000_000, 9.0)))
            .collect();
        std::fs::write(dir.path().join("3.csv"), rows.join("\n")).unwrap();
        let (series, report) = load(dir.path(), Resource::Cpu).unwrap();
        assert_eq!(series[0].values, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(series[0].start_s, day);
        assert_eq!(report.far_timestamp_rows, 2);
    }
}
