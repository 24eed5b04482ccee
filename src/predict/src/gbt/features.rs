//! The feature row of one forecast: origin `t` of one VM, horizon `h` steps.
//!
//! Everything is expressed relative to the anchor (the median of the last 12 steps) and in units
//! of the series' scale `σ` (the mean absolute one-step change over the part of the history the
//! scale was measured on), so one model serves VMs of any size:
//! - the horizon `h` in steps;
//! - lags `(y[t-k] - a) / σ`, k = 0..11;
//! - rolling mean, max, min and standard deviation over 6, 12, 48 and 288 steps, likewise;
//! - the value a day before the target, `(y[t+h-288] - a) / σ` (or `y[t]` when that is later
//!   than `t`);
//! - time of day and day of week of the target;
//! - the level `y[t]` relative to the series' mean, and `σ` relative to it;
//! - for each other resource of the same VM (memory, disk, network, and any behavioural series
//!   the profiler adds, such as dirty rate or exit rates): its change over the last step and its
//!   deviation from its 12-step mean, each in its own scale.
//!
//! A row uses `y[..=t]` only.

use crate::SEASON;

pub const LAGS: usize = 12;
pub const WINDOWS: [usize; 4] = [6, 12, 48, 288];

/// One VM: the target resource and any others measured alongside it, on the same grid.
#[derive(Debug, Clone)]
pub struct VmSeries {
    pub id: String,
    /// Unix seconds of step 0.
    pub start_s: i64,
    /// Seconds per step.
    pub step_s: i64,
    pub target: Vec<f64>,
    /// Extra columns: each must be as long as `target`.
    pub others: Vec<Vec<f64>>,
}

/// A series' scale, measured on a prefix of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub sigma: f64,
    pub mean: f64,
}

impl Scale {
    pub fn of(part: &[f64]) -> Scale {
        let n = part.len().max(2);
        let sigma = part.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (n - 1) as f64;
        let mean = part.iter().sum::<f64>() / n as f64;
        Scale {
            sigma: sigma.max(1e-3 * mean.abs()).max(1e-6),
            mean,
        }
    }
}

/// The scales of a VM's target and other columns, measured on their first `end` steps.
pub fn scales_of(vm: &VmSeries, end: usize) -> Vec<Scale> {
    std::iter::once(Scale::of(&vm.target[..end]))
        .chain(vm.others.iter().map(|o| Scale::of(&o[..end])))
        .collect()
}

/// What forecasts are made relative to: the median of the last 12 steps (as
/// [`crate::baselines::median`], without allocating).
pub fn anchor(y: &[f64], t: usize) -> f64 {
    let window = &y[t.saturating_sub(LAGS - 1)..=t];
    let mut scratch = [0.0; LAGS];
    let scratch = &mut scratch[..window.len()];
    scratch.copy_from_slice(window);
    median_in_place(scratch)
}

/// The median of a non-empty window, reordering it.
pub fn median_in_place(values: &mut [f64]) -> f64 {
    let n = values.len();
    let (below, upper, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        upper
    } else {
        let lower = below.iter().copied().fold(f64::MIN, f64::max);
        (lower + upper) / 2.0
    }
}

/// How restless the series is now, in σ units: one plus the mean absolute deviation of the last
/// 12 steps from the anchor (the one keeps a width for a flat window).
pub fn spread(y: &[f64], t: usize, sigma: f64) -> f64 {
    let a = anchor(y, t);
    let window = &y[t.saturating_sub(LAGS - 1)..=t];
    1.0 + window.iter().map(|v| (v - a).abs()).sum::<f64>() / (window.len() as f64 * sigma)
}

pub fn count(others: usize) -> usize {
    1 + LAGS + WINDOWS.len() * 4 + 1 + 2 + 2 + others * 2
}

/// Appends the row for origin `t`, horizon `h` to `out`.
pub fn row(vm: &VmSeries, scales: &[Scale], t: usize, h: usize, out: &mut Vec<f64>) {
    let y = &vm.target;
    let s = scales[0];
    let a = anchor(y, t);
    out.push(h as f64);
    // The horizon's columns are filled in by `set_horizon`; these are placeholders.
    for k in 0..LAGS {
        out.push((y[t.saturating_sub(k)] - a) / s.sigma);
    }
    for w in WINDOWS {
        let window = &y[(t + 1).saturating_sub(w)..=t];
        let n = window.len() as f64;
        let mean = window.iter().sum::<f64>() / n;
        let var = window.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let max = window.iter().copied().fold(f64::MIN, f64::max);
        let min = window.iter().copied().fold(f64::MAX, f64::min);
        out.extend([
            (mean - a) / s.sigma,
            (max - a) / s.sigma,
            (min - a) / s.sigma,
            var.sqrt() / s.sigma,
        ]);
    }
    out.extend([0.0; 3]);
    out.push(y[t] / (s.mean.abs() + 1e-6));
    out.push(s.sigma / (s.mean.abs() + 1e-6));
    for (other, scale) in vm.others.iter().zip(&scales[1..]) {
        let cur = other[t];
        let prev = other[t.saturating_sub(1)];
        let window = &other[(t + 1).saturating_sub(LAGS)..=t];
        let mean = window.iter().sum::<f64>() / window.len() as f64;
        out.push((cur - prev) / scale.sigma);
        out.push((cur - mean) / scale.sigma);
    }
    let start = out.len() - count(vm.others.len());
    set_horizon(vm, scales, t, h, a, &mut out[start..]);
}

/// The value a day before the target, relative to the anchor, in σ units (`y[t]` when that is
/// later than `t`).
pub fn day_back(vm: &VmSeries, scales: &[Scale], t: usize, h: usize) -> f64 {
    (day_back_value(&vm.target, t, h) - anchor(&vm.target, t)) / scales[0].sigma
}

/// `y[t+h-288]`, or `y[t]` when that is later than `t`.
fn day_back_value(y: &[f64], t: usize, h: usize) -> f64 {
    (t + h)
        .checked_sub(SEASON)
        .filter(|i| *i <= t)
        .map_or(y[t], |i| y[i])
}

/// Where the columns that depend on the horizon start (after `h`, the lags and the windows).
const HORIZON_COLUMNS: usize = 1 + LAGS + WINDOWS.len() * 4;

/// Rewrites the columns of `row` (built by [`row`] for origin `t`, anchor `a`) that depend on
/// the horizon, for horizon `h`: the rest of a row is the same at every horizon of one origin.
pub fn set_horizon(vm: &VmSeries, scales: &[Scale], t: usize, h: usize, a: f64, row: &mut [f64]) {
    row[0] = h as f64;
    row[HORIZON_COLUMNS] = (day_back_value(&vm.target, t, h) - a) / scales[0].sigma;
    let target_s = vm.start_s + ((t + h) as i64) * vm.step_s;
    row[HORIZON_COLUMNS + 1] = (target_s.rem_euclid(86_400)) as f64 / 86_400.0;
    // 1970-01-01 was a Thursday: day 0 of the week is Monday.
    row[HORIZON_COLUMNS + 2] = (target_s.div_euclid(86_400) + 3).rem_euclid(7) as f64;
}

/// A column-major matrix of the rows for `origins` (VM index, origin, horizon).
pub fn matrix(
    vms: &[VmSeries],
    scales: &[Vec<Scale>],
    origins: &[(usize, usize, usize)],
    cols: usize,
) -> Vec<f64> {
    let rows = origins.len();
    let mut data = vec![0.0; rows * cols];
    let mut buf = Vec::with_capacity(cols);
    for (r, &(v, t, h)) in origins.iter().enumerate() {
        buf.clear();
        row(&vms[v], &scales[v], t, h, &mut buf);
        for (c, value) in buf.iter().enumerate() {
            data[c * rows + r] = *value;
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_never_reads_past_its_origin() {
        let mut vm = VmSeries {
            id: "v".into(),
            start_s: 0,
            step_s: 300,
            target: (0..600).map(|i| (i % 17) as f64).collect(),
            others: vec![(0..600).map(|i| (i % 5) as f64).collect()],
        };
        let scales = scales_of(&vm, 400);
        let (t, h) = (450, 12);
        let mut before = Vec::new();
        row(&vm, &scales, t, h, &mut before);
        for v in &mut vm.target[t + 1..] {
            *v = 1e9;
        }
        for v in &mut vm.others[0][t + 1..] {
            *v = 1e9;
        }
        let mut after = Vec::new();
        row(&vm, &scales, t, h, &mut after);
        assert_eq!(before, after);
        assert_eq!(before.len(), count(1));
    }
}
