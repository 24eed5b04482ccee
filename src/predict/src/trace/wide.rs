//! The "wide" CSV: one metric, `step,vm1,vm2,...` with one row per 5-minute step (the PlanetLab
//! files and Azure public dataset extracts). The step column places each row (counting steps or
//! seconds: the commonest difference between rows is one step), so missing rows are holes and
//! rows out of order or repeated are dropped, all counted. Holes and empty cells take the
//! column's last value; a column whose first cells are empty starts at its first value.

use super::{csv_files, lines, LoadReport, Series, TraceError};
use std::path::Path;

/// The most steps a file may span (95 years of 5-minute steps).
const MAX_STEPS: f64 = 10_000_000.0;

/// How far apart consecutive rows' step values are: the commonest positive difference (1 where
/// the column counts steps, 300 where it holds seconds).
fn step_stride(rows: &[(f64, String)]) -> f64 {
    let mut counts: Vec<(f64, usize)> = Vec::new();
    for pair in rows.windows(2) {
        let d = pair[1].0 - pair[0].0;
        if d > 0.0 {
            match counts.iter_mut().find(|(v, _)| *v == d) {
                Some((_, n)) => *n += 1,
                None => counts.push((d, 1)),
            }
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(_, n)| n)
        .map_or(1.0, |(d, _)| d)
}

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
        // The step column says where each row belongs: rows that are missing leave holes,
        // rows out of order or repeated are dropped.
        let mut rows: Vec<(f64, String)> = Vec::new();
        for line in lines {
            let Ok(line) = line else { break };
            report.rows += 1;
            let step = line
                .split(',')
                .next()
                .and_then(|c| c.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite());
            match step {
                Some(step) if line.split(',').count() == names.len() + 1 => rows.push((step, line)),
                _ => report.malformed_rows += 1,
            }
        }
        let stride = step_stride(&rows);
        let first_step = rows.first().map_or(0.0, |r| r.0);
        let mut columns: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        // Each column's first step with a value; a column that starts later starts there.
        let mut starts: Vec<Option<usize>> = vec![None; names.len()];
        let mut next = 0usize;
        for (step, line) in &rows {
            let index = ((step - first_step) / stride).round();
            if !(index >= next as f64 && index <= MAX_STEPS) {
                report.duplicate_or_backward_rows += 1;
                continue;
            }
            let index = index as usize;
            for (i, cell) in line.split(',').skip(1).enumerate() {
                let value = match cell.trim() {
                    "" => None,
                    text => match text.parse::<f64>() {
                        Ok(v) if v.is_finite() && (0.0..=max).contains(&v) => Some(v),
                        Ok(v) if v.is_finite() => {
                            report.out_of_range += 1;
                            Some(v.clamp(0.0, max))
                        }
                        _ => {
                            report.malformed_rows += 1;
                            None
                        }
                    },
                };
                let column = &mut columns[i];
                let start = match (starts[i], value) {
                    (Some(start), _) => start,
                    (None, Some(_)) => *starts[i].insert(index),
                    (None, None) => continue,
                };
                // Steps between the last value and this row, and a blank cell: the last value.
                while start + column.len() < index + usize::from(value.is_none()) {
                    let last = *column.last().expect("a started column has a value");
                    column.push(last);
                    report.gap_steps_filled += 1;
                }
                if let Some(v) = value {
                    column.push(v);
                }
            }
            next = index + 1;
        }
        // Columns end together: a column whose last cells were blank holds its last value.
        for (column, start) in columns.iter_mut().zip(&starts) {
            if let (Some(start), Some(&last)) = (start, column.last()) {
                while start + column.len() < next {
                    column.push(last);
                    report.gap_steps_filled += 1;
                }
            }
        }
        for ((name, values), start) in names.into_iter().zip(columns).zip(starts) {
            if let Some(start) = start {
                report.series += 1;
                out.push(Series {
                    id: format!("{stem}:{name}"),
                    start_s: start as i64 * crate::STEP_S,
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
            (2, 1, 2)
        );
    }

    #[test]
    fn the_step_column_places_rows_that_are_missing_late_or_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("day.csv");
        // Steps in seconds; the row at 900 is missing, 600 comes twice, 300 again after it;
        // column b starts at 600.
        std::fs::write(
            &path,
            "step,a,b\n0,1,\n300,2,\n600,3,7\n600,9,9\n300,9,9\n1200,5,8\n1500,6,\n",
        )
        .unwrap();
        let (series, report) = load(&path, 100.0).unwrap();
        assert_eq!(series[0].values, vec![1.0, 2.0, 3.0, 3.0, 5.0, 6.0]);
        assert_eq!(series[0].start_s, 0);
        assert_eq!(series[1].values, vec![7.0, 7.0, 8.0, 8.0]);
        assert_eq!(series[1].start_s, 600);
        assert_eq!(
            (report.duplicate_or_backward_rows, report.gap_steps_filled),
            (2, 3)
        );
    }
}
