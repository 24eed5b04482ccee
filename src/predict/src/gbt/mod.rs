//! `augur-gbt`: one gradient-boosted tree model (forust-ml) for a set of horizons, trained on
//! all series at once, with a split-conformal upper bound per horizon.
//!
//! Each training row is a forecast origin `t` of one series at one horizon `h` (a feature, so one
//! model serves every horizon it was trained for); the features are in [`features`]. The target
//! is `(y[t+h] - a) / σ`, `a` being the median of the last 12 steps, clipped to ±`clip`
//! ([`Settings::clip`], by default [`CLIP`]) so the squared loss learns a robust centre instead of
//! chasing the spikes of VM traces.
//!
//! The upper bound at horizon `h` is the forecast plus `q·s·σ`, where `s` is the recent spread
//! ([`features::spread`]) and `q` the `level` quantile of that horizon's calibration residuals
//! divided by their own spread (normalised split-conformal, against the unclipped actual values):
//! the bound widens when the VM is restless and narrows when it is calm. The calibration origins
//! are the last 10% of each training part, which the model does not train on. Online, and in the
//! evaluation, the quantile then adapts to each series' own misses ([`adaptive`]), and each
//! series' forecasts are centred on the model or on a simple reference (its last value, a
//! recent median), whichever has lately erred clearly less on that series ([`centre_choice`]).

pub mod adaptive;
pub mod centre_choice;
mod compact;
pub mod features;
pub mod model_file;

pub use features::{Scale, VmSeries};

use forust_ml::objective::ObjectiveType;
use forust_ml::{GradientBooster, Matrix};

/// Targets are clipped to this many σ by default.
pub const CLIP: f64 = 2.0;
/// Training origins are taken every `STRIDE` steps, which keeps training in seconds.
const STRIDE: usize = 3;
/// Horizons trained per origin by default (see [`Settings::horizons_per_origin`]).
pub const HORIZONS_PER_ORIGIN: usize = 3;
/// Up to this many rows a forecast walks the trees row by row; more go through a matrix.
const ROW_BY_ROW: usize = 64;
/// Rounds of reweighting toward the median (see [`GbtModel::train`]).
const MEDIAN_REWEIGHTS: usize = 1;
/// Residuals (σ units) below this weigh as much as this, so a near-perfect fit of one row
/// cannot dominate the next round.
const REWEIGHT_FLOOR: f64 = 0.05;
/// Calibration residuals kept per horizon, at most (origins are thinned evenly beyond it).
const CALIBRATION_PER_HORIZON: usize = 40_000;

/// How to train.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub iterations: usize,
    pub learning_rate: f32,
    pub max_depth: usize,
    /// Coverage target of the upper bound, e.g. 0.95.
    pub level: f64,
    /// Training targets are clipped to this many σ (one-step changes) from the anchor. Small
    /// suits spiky traces, where a jump is rarely foretold; workloads whose large level changes
    /// recur after a precursor need it wide enough to take the whole change in.
    pub clip: f64,
    /// Horizons trained per origin: with more horizons than this, each origin gets a rotating
    /// subset, so training cost does not grow past this many rows per origin. Neighbouring
    /// horizons (1, 2, 3 steps) teach nearly the same thing, and one each suffices.
    pub horizons_per_origin: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            iterations: 150,
            learning_rate: 0.1,
            max_depth: 6,
            level: 0.95,
            clip: CLIP,
            horizons_per_origin: HORIZONS_PER_ORIGIN,
        }
    }
}

/// One forecast, in the series' own units.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Forecast {
    pub mean: f64,
    pub upper: f64,
}

/// A trained model.
pub struct GbtModel {
    booster: GradientBooster,
    /// The same trees, flattened for row-by-row forecasts.
    compact: compact::CompactTrees,
    /// Horizons (steps) it was trained and calibrated for, ascending.
    horizons: Vec<usize>,
    /// Conformal quantile (σ units) per horizon, same order.
    quantiles: Vec<f64>,
    /// How many extra columns each VM must have.
    others: usize,
    level: f64,
}

impl std::fmt::Debug for GbtModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GbtModel")
            .field("horizons", &self.horizons)
            .field("quantiles", &self.quantiles)
            .field("others", &self.others)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

fn booster(settings: &Settings) -> GradientBooster {
    GradientBooster::default()
        .set_objective_type(ObjectiveType::SquaredLoss)
        .set_iterations(settings.iterations)
        .set_learning_rate(settings.learning_rate)
        .set_max_depth(settings.max_depth)
        .set_nbins(128)
        .set_l2(1.0)
        .set_min_leaf_weight(20.0)
        .set_initialize_base_score(true)
        .set_parallel(true)
}

/// The conformal quantile: the `ceil((n+1)·level)`-th smallest residual.
fn conformal_quantile(mut residuals: Vec<f64>, level: f64) -> f64 {
    if residuals.is_empty() {
        return 0.0;
    }
    residuals.sort_by(f64::total_cmp);
    let n = residuals.len();
    let rank = (((n + 1) as f64) * level).ceil() as usize;
    residuals[rank.clamp(1, n) - 1]
}

/// A forecast before its bound is set: the centre and the bound's unit (`spread · σ`), both in
/// the series' units, and which of the model's horizons it is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawForecast {
    pub centre: f64,
    pub unit: f64,
    /// The series' simple references at the origin, for [`centre_choice`].
    pub references: centre_choice::References,
    pub horizon_index: usize,
}

impl RawForecast {
    /// The forecast with its upper bound `q` units above the centre.
    pub fn with_quantile(&self, q: f64, clamp: Option<(f64, f64)>) -> Forecast {
        Forecast {
            mean: clamped(self.centre, clamp),
            upper: clamped(self.centre + q * self.unit, clamp),
        }
    }
}

/// `value` within `clamp`, if any.
pub(crate) fn clamped(value: f64, clamp: Option<(f64, f64)>) -> f64 {
    clamp.map_or(value, |(lo, hi)| value.clamp(lo, hi))
}

impl GbtModel {
    /// Trains on the parts of each series before `train_end[v]` for `horizons` (steps).
    pub fn train(
        vms: &[VmSeries],
        train_end: &[usize],
        horizons: &[usize],
        settings: &Settings,
    ) -> Result<GbtModel, String> {
        let mut horizons = horizons.to_vec();
        horizons.sort_unstable();
        horizons.dedup();
        if horizons.is_empty() || horizons[0] == 0 {
            return Err("horizons must be at least one step".into());
        }
        if vms.len() != train_end.len() {
            return Err("one training end per series is needed".into());
        }
        if !(settings.clip.is_finite() && settings.clip > 0.0) {
            return Err(format!(
                "target clip {} is not a positive number",
                settings.clip
            ));
        }
        if !(0.5..1.0).contains(&settings.level) {
            return Err(format!(
                "upper-bound level {} is outside [0.5, 1)",
                settings.level
            ));
        }
        let others = vms.first().map_or(0, |v| v.others.len());
        for vm in vms {
            if vm.others.len() != others || vm.others.iter().any(|o| o.len() != vm.target.len()) {
                return Err(format!(
                    "series {} has other columns that do not line up with the rest",
                    vm.id
                ));
            }
        }
        let max_h = *horizons.last().unwrap_or(&1);
        let cols = features::count(others);
        let scales: Vec<Vec<Scale>> = vms
            .iter()
            .zip(train_end)
            .map(|(vm, &end)| features::scales_of(vm, end.max(2).min(vm.target.len())))
            .collect();
        // Fit on the first 90% of each training part, calibrate on its last 10%.
        let mut fit = Vec::new();
        let mut cal_origins = Vec::new();
        // Histories all shorter than two seasons are too few origins to thin.
        let longest = train_end.iter().max().copied().unwrap_or(0);
        let stride = if longest < 2 * crate::SEASON {
            1
        } else {
            STRIDE
        };
        for (v, &end) in train_end.iter().enumerate() {
            let end = end.min(vms[v].target.len());
            let fit_end = (end as f64 * 0.9) as usize;
            // Origins start a day in, where every feature window is full; on shorter histories,
            // a third of the way in.
            let first = crate::SEASON.min(fit_end / 3);
            for (i, t) in (first..fit_end.saturating_sub(max_h))
                .step_by(stride)
                .enumerate()
            {
                let per_origin = settings.horizons_per_origin.clamp(1, horizons.len());
                for k in 0..per_origin {
                    let h = horizons[(i * per_origin + k) % horizons.len()];
                    fit.push((v, t, h));
                }
            }
            cal_origins
                .extend((fit_end.saturating_sub(max_h)..end.saturating_sub(max_h)).map(|t| (v, t)));
        }
        if fit.len() < 100 || cal_origins.is_empty() {
            return Err(format!(
                "too little training data ({} rows; 100 are needed: a day of history at 5-minute steps, a few hundred steps at shorter ones)",
                fit.len()
            ));
        }
        // Thinned by origin, never by horizon, so every horizon keeps its share of residuals.
        let step = cal_origins.len().div_ceil(CALIBRATION_PER_HORIZON);
        let cal: Vec<(usize, usize, usize)> = cal_origins
            .into_iter()
            .step_by(step)
            .flat_map(|(v, t)| horizons.iter().map(move |&h| (v, t, h)))
            .collect();
        let scaled = |&(v, t, h): &(usize, usize, usize)| {
            let y = &vms[v].target;
            (y[t + h] - features::anchor(y, t)) / scales[v][0].sigma
        };
        let x = features::matrix(vms, &scales, &fit, cols);
        // The clip widens to take in what the same time yesterday says: a daily step change is
        // learnable, a one-off spike is not chased.
        let y: Vec<f64> = fit
            .iter()
            .map(|o @ &(v, t, h)| {
                let day_back = features::day_back(&vms[v], &scales[v], t, h);
                scaled(o).clamp(day_back.min(-settings.clip), day_back.max(settings.clip))
            })
            .collect();
        let xm = Matrix::new(&x, fit.len(), cols);
        let mut booster = booster(settings);
        booster
            .fit_unweighted(&xm, &y, None)
            .map_err(|e| e.to_string())?;
        // Absolute error is what forecasts are judged by, and its minimiser is the median: one
        // round of iteratively reweighted least squares (weights 1/|residual|) moves the
        // squared-loss fit toward it.
        for _ in 0..MEDIAN_REWEIGHTS {
            let p = booster.predict(&xm, true);
            let w: Vec<f64> = p
                .iter()
                .zip(&y)
                .map(|(p, y)| 1.0 / (p - y).abs().max(REWEIGHT_FLOOR))
                .collect();
            let mean_w = w.iter().sum::<f64>() / w.len() as f64;
            let w: Vec<f64> = w.iter().map(|v| v / mean_w).collect();
            booster = self::booster(settings);
            booster.fit(&xm, &y, &w, None).map_err(|e| e.to_string())?;
        }
        let xc = features::matrix(vms, &scales, &cal, cols);
        let predicted = booster.predict(&Matrix::new(&xc, cal.len(), cols), true);
        let mut residuals = vec![Vec::new(); horizons.len()];
        for (o, p) in cal.iter().zip(&predicted) {
            if let Ok(k) = horizons.binary_search(&o.2) {
                let spread = features::spread(&vms[o.0].target, o.1, scales[o.0][0].sigma);
                residuals[k].push((scaled(o) - p) / spread);
            }
        }
        let quantiles = residuals
            .into_iter()
            .map(|r| conformal_quantile(r, settings.level))
            .collect();
        Ok(GbtModel {
            compact: compact::CompactTrees::of(&booster)?,
            booster,
            horizons,
            quantiles,
            others,
            level: settings.level,
        })
    }

    /// Walks the trees for each row directly: for the few rows of an online forecast this
    /// avoids building a column-major matrix and a vector per tree.
    fn predict_rows(
        &self,
        vm: &VmSeries,
        scales: &[Scale],
        origins: &[(usize, usize)],
    ) -> Vec<f64> {
        let mut rows: Vec<Vec<f64>> = Vec::with_capacity(origins.len());
        for (i, &(t, h)) in origins.iter().enumerate() {
            // A row for the same origin differs only in its horizon columns.
            let same_origin = i > 0 && origins[i - 1].0 == t;
            let row = match rows.last() {
                Some(previous) if same_origin => {
                    let mut row = previous.clone();
                    let a = features::anchor(&vm.target, t);
                    features::set_horizon(vm, scales, t, h, a, &mut row);
                    row
                }
                _ => {
                    let mut row = Vec::with_capacity(features::count(self.others));
                    features::row(vm, scales, t, h, &mut row);
                    row
                }
            };
            rows.push(row);
        }
        self.compact.predict_rows(&rows)
    }

    pub fn horizons(&self) -> &[usize] {
        &self.horizons
    }

    pub fn others(&self) -> usize {
        self.others
    }

    pub fn level(&self) -> f64 {
        self.level
    }

    /// The upper bound's quantile (σ units over the spread) for horizon `horizon_index`.
    pub fn quantile(&self, horizon_index: usize) -> f64 {
        self.quantiles.get(horizon_index).copied().unwrap_or(0.0)
    }

    /// Forecasts for `(t, h)` pairs of one VM, `h` among the trained horizons, scaled by
    /// `scales` (from [`features::scales_of`]). `clamp` bounds the results (e.g. 0–100%).
    pub fn forecast(
        &self,
        vm: &VmSeries,
        scales: &[Scale],
        origins: &[(usize, usize)],
        clamp: Option<(f64, f64)>,
    ) -> Result<Vec<Forecast>, String> {
        Ok(self
            .raw_forecasts(vm, scales, origins, false)?
            .iter()
            .map(|r| r.with_quantile(self.quantiles[r.horizon_index], clamp))
            .collect())
    }

    /// Forecasts for `(t, h)` pairs, as [`Self::forecast`], with their bounds not yet set.
    pub fn forecast_raw(
        &self,
        vm: &VmSeries,
        scales: &[Scale],
        origins: &[(usize, usize)],
    ) -> Result<Vec<RawForecast>, String> {
        self.raw_forecasts(vm, scales, origins, true)
    }

    /// As [`Self::forecast_raw`]; without `references`, each forecast's references are all its
    /// last value, which saves the medians where no centre is chosen.
    fn raw_forecasts(
        &self,
        vm: &VmSeries,
        scales: &[Scale],
        origins: &[(usize, usize)],
        references: bool,
    ) -> Result<Vec<RawForecast>, String> {
        if vm.others.len() != self.others {
            return Err(format!(
                "the model was trained with {} extra columns, series {} has {}",
                self.others,
                vm.id,
                vm.others.len()
            ));
        }
        let mut horizon_index = Vec::with_capacity(origins.len());
        for &(t, h) in origins {
            let k = self
                .horizons
                .binary_search(&h)
                .map_err(|_| format!("horizon {h} was not trained (have {:?})", self.horizons))?;
            if t >= vm.target.len() {
                return Err(format!("origin {t} is past the end of series {}", vm.id));
            }
            horizon_index.push(k);
        }
        let p = if origins.len() <= ROW_BY_ROW {
            self.predict_rows(vm, scales, origins)
        } else {
            let cols = features::count(self.others);
            let keyed: Vec<(usize, usize, usize)> =
                origins.iter().map(|&(t, h)| (0, t, h)).collect();
            let x = features::matrix(
                std::slice::from_ref(vm),
                std::slice::from_ref(&scales.to_vec()),
                &keyed,
                cols,
            );
            self.booster
                .predict(&Matrix::new(&x, origins.len(), cols), true)
        };
        let sigma = scales[0].sigma;
        // What depends on the origin alone is worked out once for its horizons.
        let mut at_origin: Option<(usize, f64, f64, centre_choice::References)> = None;
        Ok(origins
            .iter()
            .zip(p)
            .zip(horizon_index)
            .map(|((&(t, _), p), k)| {
                let (_, a, unit, references) = match at_origin {
                    Some(o) if o.0 == t => o,
                    _ => *at_origin.insert(origin_values(&vm.target, t, sigma, references)),
                };
                RawForecast {
                    centre: a + p * sigma,
                    unit,
                    references,
                    horizon_index: k,
                }
            })
            .collect())
    }
}

/// The origin `t`'s anchor, the bound's unit and the references.
fn origin_values(
    y: &[f64],
    t: usize,
    sigma: f64,
    references: bool,
) -> (usize, f64, f64, centre_choice::References) {
    let references = if references {
        centre_choice::References::at(y, t)
    } else {
        centre_choice::References::flat(y[t])
    };
    (
        t,
        features::anchor(y, t),
        features::spread(y, t, sigma) * sigma,
        references,
    )
}

#[cfg(test)]
mod tests;
