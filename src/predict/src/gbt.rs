//! `augur-gbt`: one gradient-boosted tree model per horizon, trained on all series at once
//! (forust-ml), with a split-conformal upper bound.
//!
//! Each training row is a forecast origin `t` of one series. Everything is expressed relative to
//! the current value `y[t]` and in units of the series' scale `σ` (the mean absolute one-step
//! change over its training part), so one model serves VMs of any size:
//! - lags `(y[t-k] - y[t]) / σ`, k = 1..12;
//! - rolling mean, max, min and standard deviation over 6, 12, 48 and 288 steps, likewise;
//! - the value a day before the target, `(y[t+h-288] - y[t]) / σ`;
//! - time of day and day of week of the target;
//! - the level `y[t]` relative to the series' training mean, and `σ` relative to it;
//! - behavioural features from the other resources of the same VM (memory, disk, network when the
//!   trace has them): their change over the last step and their deviation from their 12-step
//!   mean, each in its own scale.
//!
//! The target is `(y[t+h] - y[t]) / σ`. The upper bound is the forecast plus the 95% quantile of
//! calibration residuals (in σ units), the calibration being the last 10% of each training part,
//! which the model does not train on (split-conformal).

use crate::SEASON;
use forust_ml::objective::ObjectiveType;
use forust_ml::{GradientBooster, Matrix};

const LAGS: usize = 12;
const WINDOWS: [usize; 4] = [6, 12, 48, 288];
/// Targets are clipped to this many σ: squared loss then learns a robust centre instead of
/// chasing the spikes that dominate VM CPU traces.
const CLIP: f64 = 2.0;

/// What forecasts are made relative to: the median of the last 12 steps.
fn anchor(y: &[f64], t: usize) -> f64 {
    crate::baselines::median(&y[t.saturating_sub(11)..=t])
}

/// Training origins are taken every `STRIDE` steps, which keeps training in seconds.
const STRIDE: usize = 3;

/// One VM: the target resource and any others measured alongside it, same grid.
#[derive(Debug, Clone)]
pub struct VmSeries {
    pub id: String,
    pub start_s: i64,
    pub target: Vec<f64>,
    pub others: Vec<Vec<f64>>,
}

#[derive(Debug, Clone, Copy)]
struct Scale {
    sigma: f64,
    mean: f64,
}

fn scale_of(train: &[f64]) -> Scale {
    let n = train.len().max(2);
    let sigma = train.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (n - 1) as f64;
    let mean = train.iter().sum::<f64>() / n as f64;
    Scale {
        sigma: sigma.max(1e-3 * mean.abs()).max(1e-6),
        mean,
    }
}

fn n_features(others: usize) -> usize {
    LAGS + WINDOWS.len() * 4 + 1 + 2 + 2 + others * 2
}

fn features(vm: &VmSeries, scales: &[Scale], t: usize, h: usize, out: &mut Vec<f64>) {
    let y = &vm.target;
    let s = scales[0];
    let now = y[t];
    for k in 1..=LAGS {
        out.push((y[t.saturating_sub(k)] - now) / s.sigma);
    }
    for w in WINDOWS {
        let window = &y[(t + 1).saturating_sub(w)..=t];
        let n = window.len() as f64;
        let mean = window.iter().sum::<f64>() / n;
        let var = window.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let max = window.iter().copied().fold(f64::MIN, f64::max);
        let min = window.iter().copied().fold(f64::MAX, f64::min);
        out.extend([
            (mean - now) / s.sigma,
            (max - now) / s.sigma,
            (min - now) / s.sigma,
            var.sqrt() / s.sigma,
        ]);
    }
    let day_back = (t + h)
        .checked_sub(SEASON)
        .filter(|i| *i <= t)
        .map_or(now, |i| y[i]);
    out.push((day_back - now) / s.sigma);
    let target_s = vm.start_s + ((t + h) as i64) * crate::STEP_S;
    out.push((target_s.rem_euclid(86_400)) as f64 / 86_400.0);
    out.push((target_s.div_euclid(86_400) + 4).rem_euclid(7) as f64);
    out.push(now / (s.mean.abs() + 1e-6));
    out.push(s.sigma / (s.mean.abs() + 1e-6));
    for (other, scale) in vm.others.iter().zip(&scales[1..]) {
        let cur = other[t];
        let prev = other[t.saturating_sub(1)];
        let window = &other[(t + 1).saturating_sub(12)..=t];
        let mean = window.iter().sum::<f64>() / window.len() as f64;
        out.push((cur - prev) / scale.sigma);
        out.push((cur - mean) / scale.sigma);
    }
}

/// Builds a column-major feature matrix for the given (vm, origin) pairs.
fn matrix(
    vms: &[VmSeries],
    scales: &[Vec<Scale>],
    origins: &[(usize, usize)],
    h: usize,
    cols: usize,
) -> Vec<f64> {
    let rows = origins.len();
    let mut data = vec![0.0; rows * cols];
    let mut row = Vec::with_capacity(cols);
    for (r, &(v, t)) in origins.iter().enumerate() {
        row.clear();
        features(&vms[v], &scales[v], t, h, &mut row);
        for (c, value) in row.iter().enumerate() {
            data[c * rows + r] = *value;
        }
    }
    data
}

/// Forecasts (mean and upper bound) of every series for one horizon over its test part.
#[derive(Debug, Clone)]
pub struct Forecasts {
    pub mean: Vec<Vec<f64>>,
    pub upper: Vec<Vec<f64>>,
}

fn booster() -> GradientBooster {
    GradientBooster::default()
        .set_objective_type(ObjectiveType::SquaredLoss)
        .set_iterations(150)
        .set_learning_rate(0.1)
        .set_max_depth(6)
        .set_nbins(128)
        .set_l2(1.0)
        .set_min_leaf_weight(20.0)
        .set_initialize_base_score(true)
        .set_parallel(true)
}

/// Trains `augur-gbt` for horizon `h` on the parts of each series before `train_end[v]`, and
/// forecasts `y[j]` for every `j >= train_end[v]`. `level` is the upper bound's coverage target.
pub fn train_and_forecast(
    vms: &[VmSeries],
    train_end: &[usize],
    h: usize,
    level: f64,
    clamp: Option<(f64, f64)>,
) -> Result<Forecasts, String> {
    let cols = n_features(vms.first().map_or(0, |v| v.others.len()));
    let scales: Vec<Vec<Scale>> = vms
        .iter()
        .zip(train_end)
        .map(|(vm, &end)| {
            std::iter::once(scale_of(&vm.target[..end]))
                .chain(vm.others.iter().map(|o| scale_of(&o[..end])))
                .collect()
        })
        .collect();
    // Fit on the first 90% of each training part, calibrate on its last 10%.
    let mut fit_origins = Vec::new();
    let mut cal_origins = Vec::new();
    for (v, &end) in train_end.iter().enumerate() {
        let fit_end = (end as f64 * 0.9) as usize;
        let first = SEASON.min(fit_end);
        fit_origins.extend(
            (first..fit_end.saturating_sub(h))
                .step_by(STRIDE)
                .map(|t| (v, t)),
        );
        cal_origins.extend((fit_end.saturating_sub(h)..end.saturating_sub(h)).map(|t| (v, t)));
    }
    if fit_origins.len() < 100 || cal_origins.is_empty() {
        return Err("too little training data".into());
    }
    let target = |&(v, t): &(usize, usize)| {
        ((vms[v].target[t + h] - anchor(&vms[v].target, t)) / scales[v][0].sigma).clamp(-CLIP, CLIP)
    };
    let x = matrix(vms, &scales, &fit_origins, h, cols);
    let y: Vec<f64> = fit_origins.iter().map(target).collect();
    let mut model = booster();
    model
        .fit_unweighted(&Matrix::new(&x, fit_origins.len(), cols), &y, None)
        .map_err(|e| e.to_string())?;
    let xc = matrix(vms, &scales, &cal_origins, h, cols);
    let predicted = model.predict(&Matrix::new(&xc, cal_origins.len(), cols), true);
    // Residuals against the actual (unclipped) values: the bound must cover the spikes too.
    let actual = |&(v, t): &(usize, usize)| {
        (vms[v].target[t + h] - anchor(&vms[v].target, t)) / scales[v][0].sigma
    };
    let mut residuals: Vec<f64> = cal_origins
        .iter()
        .zip(&predicted)
        .map(|(o, p)| actual(o) - p)
        .collect();
    residuals.sort_by(f64::total_cmp);
    let n = residuals.len();
    let rank = (((n + 1) as f64) * level).ceil() as usize;
    let q = residuals[rank.clamp(1, n) - 1];

    let mut mean = Vec::with_capacity(vms.len());
    let mut upper = Vec::with_capacity(vms.len());
    for (v, vm) in vms.iter().enumerate() {
        let origins: Vec<(usize, usize)> = (train_end[v].max(h)..vm.target.len())
            .map(|j| (v, j - h))
            .collect();
        if origins.is_empty() {
            mean.push(Vec::new());
            upper.push(Vec::new());
            continue;
        }
        let xt = matrix(vms, &scales, &origins, h, cols);
        let p = model.predict(&Matrix::new(&xt, origins.len(), cols), true);
        let sigma = scales[v][0].sigma;
        let bound = |value: f64| clamp.map_or(value, |(lo, hi)| value.clamp(lo, hi));
        mean.push(
            origins
                .iter()
                .zip(&p)
                .map(|((_, t), p)| bound(anchor(&vm.target, *t) + p * sigma))
                .collect(),
        );
        upper.push(
            origins
                .iter()
                .zip(&p)
                .map(|((_, t), p)| bound(anchor(&vm.target, *t) + (p + q) * sigma))
                .collect(),
        );
    }
    Ok(Forecasts { mean, upper })
}
