//! The "wide" CSV: one metric, `step,vm1,vm2,...` with one row per 5-minute step (the PlanetLab
//! files and Azure public dataset extracts). Empty cells are holes, filled with the last value.

use super::{csv_files, lines, LoadReport, Series, TraceError};
use std::path::Path;

/// Loads every wide file in `dir` (or the single file `dir`); each column is a series named
/// `<file>:<column>`. Values must lie in `0..=max`; others are clamped and counted.
pub fn load(path: &Path, max: f64) -> Result<(Vec<Series>, LoadReport), TraceError> {
    let files = if path.is_dir() {
        csv_files(path)?
    } else {
        vec![path.to_path_buf()]
    };
    let mut report = LoadReport::default();
    let mut out = Vec::new();
    for file in files {
        let stem = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let stem = stem
            .trim_end_matches(".gz")
            .trim_end_matches(".csv")
            .to_string();
        let mut lines = match lines(&file) {
            Ok(lines) => lines,
            Err(error) => {
                report.unreadable_files.push(error.to_string());
                continue;
            }
        };
        report.files += 1;
        let header = match lines.next() {
            Some(Ok(h)) => h,
            _ => {
                report
                    .unreadable_files
                    .push(format!("{}: no header", file.display()));
                continue;
            }
        };
        let names: Vec<String> = header
            .split(',')
            .skip(1)
            .map(|n| n.trim().to_string())
            .collect();
        let mut columns: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        let mut last: Vec<Option<f64>> = vec![None; names.len()];
        for line in lines {
            let Ok(line) = line else { break };
            report.rows += 1;
            let cells: Vec<&str> = line.split(',').collect();
            if cells.len() != names.len() + 1 || cells[0].trim().parse::<f64>().is_err() {
                report.malformed_rows += 1;
                continue;
            }
            for (i, cell) in cells[1..].iter().enumerate() {
                let value = match cell.trim() {
                    "" => {
                        report.gap_steps_filled += 1;
                        last[i]
                    }
                    text => match text.parse::<f64>() {
                        Ok(v) if v.is_finite() && (0.0..=max).contains(&v) => Some(v),
                        Ok(v) if v.is_finite() => {
                            report.out_of_range += 1;
                            Some(v.clamp(0.0, max))
                        }
                        _ => {
                            report.malformed_rows += 1;
                            last[i]
                        }
                    },
                };
                if let Some(v) = value {
                    columns[i].push(v);
                    last[i] = Some(v);
                }
            }
        }
        for (name, values) in names.into_iter().zip(columns) {
            if !values.is_empty() {
                report.series += 1;
                out.push(Series {
                    id: format!("{stem}:{name}"),
                    start_s: 0,
                    values,
                });
            }
        }
    }
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_become_series_and_holes_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("day.csv");
        std::fs::write(&path, "step,a,b\n0,1,5\n1,,6\n2,3,700\nbad,row\n3,4,x\n").unwrap();
        let (series, report) = load(&path, 100.0).unwrap();
        assert_eq!(series[0].values, vec![1.0, 1.0, 3.0, 4.0]);
        assert_eq!(series[1].values, vec![5.0, 6.0, 100.0, 100.0]);
        assert_eq!(
            (
                report.gap_steps_filled,
                report.out_of_range,
                report.malformed_rows
            ),
            (1, 1, 2)
        );
    }
}
