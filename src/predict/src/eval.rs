//! The evaluation protocols. Per series, train on the first 90% and forecast in the last 10%:
//! - [`Protocol::Rolling`]: at each horizon `h`, every step `j` of the test part is forecast from
//!   `t = j - h`; one row per model and horizon.
//! - [`Protocol::Gift`]: GIFT-Eval's windows: from origins `t0, t0 + L, t0 + 2L, ...` (`t0` the
//!   last training step, `L` the prediction length, 48 steps by default), every step `1..=L` ahead
//!   is forecast; one row per model, its MAE over all of those steps.
//!
//! MAE is averaged over series; MASE is each series' test MAE divided by its in-sample
//! seasonal-naive MAE (season 288, on the training part), averaged over series, as GIFT-Eval
//! computes it. Series too short for a season of training, and (for MASE only) series whose
//! seasonal-naive MAE is zero, are left out and counted. augur-gbt's upper bound is adaptive: its
//! quantile follows the misses of the series' own earlier bounds whose outcomes are known by each
//! origin ([`crate::gbt::adaptive`]).

use crate::baselines::Forecaster;
use crate::gbt::{adaptive, features, Forecast, GbtModel, Scale, Settings, VmSeries};
use crate::trace::Series;
use crate::SEASON;
use serde::Serialize;

/// Share of each series used for training.
pub const TRAIN_SHARE: f64 = 0.9;

/// One model on one row of a protocol (a horizon, or a whole GIFT window).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRow {
    pub model: String,
    pub metric: String,
    /// The horizon, or for a GIFT window its length.
    pub horizon_s: i64,
    pub mae: f64,
    pub mase: f64,
    /// Share of test values at or below the model's upper bound; `None` for models without one.
    pub coverage: Option<f64>,
    pub series: usize,
}

/// What was left out of an evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EvalSkips {
    pub too_short: usize,
    pub flat_in_training: usize,
}

/// Which forecasts are scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// Every test step at each of these horizons (steps).
    Rolling(Vec<usize>),
    /// Non-overlapping windows of this many steps.
    Gift(usize),
}

impl Protocol {
    /// The rows it reports: (label in steps, the horizons scored in that row).
    fn rows(&self) -> Vec<(usize, Vec<usize>)> {
        match self {
            Protocol::Rolling(hs) => hs.iter().map(|&h| (h, vec![h])).collect(),
            Protocol::Gift(len) => vec![(*len, (1..=*len).collect())],
        }
    }

    /// Every horizon any row scores.
    pub fn horizons(&self) -> Vec<usize> {
        let mut hs: Vec<usize> = self.rows().into_iter().flat_map(|(_, hs)| hs).collect();
        hs.sort_unstable();
        hs.dedup();
        hs
    }

    fn longest(&self) -> usize {
        self.horizons().last().copied().unwrap_or(1)
    }

    /// The origins scored at horizon `h` of a series of `len` steps trained up to `train_end`.
    fn origins(&self, h: usize, train_end: usize, len: usize) -> Vec<usize> {
        match self {
            Protocol::Rolling(_) => (train_end.max(h)..len).map(|j| j - h).collect(),
            // Whole windows only, the last ending with the series, as GIFT-Eval places them:
            // every window is scored at every step, none at its short horizons alone.
            Protocol::Gift(window) => {
                let windows = len.saturating_sub(train_end) / window;
                (1..=windows).rev().map(|k| len - k * window - 1).collect()
            }
        }
    }
}

/// The training end of a series, or `None` if it is too short for the protocol.
fn train_end(len: usize, longest: usize) -> Option<usize> {
    let end = (len as f64 * TRAIN_SHARE).floor() as usize;
    (end > SEASON + 12 && end >= longest && len - end >= longest).then_some(end)
}

/// The fewest steps a series needs for `protocol`: more than a season and a horizon of training
/// in its first 90%, and room after it for the longest horizon.
fn min_series_len(protocol: &Protocol) -> usize {
    (1..)
        .find(|&len| train_end(len, protocol.longest()).is_some())
        .unwrap_or(usize::MAX)
}

/// The in-sample seasonal-naive MAE of a training part.
pub fn seasonal_scale(train: &[f64]) -> Option<f64> {
    if train.len() <= SEASON {
        return None;
    }
    let n = train.len() - SEASON;
    Some(
        (SEASON..train.len())
            .map(|i| (train[i] - train[i - SEASON]).abs())
            .sum::<f64>()
            / n as f64,
    )
}

/// Sums of one model on one row over series.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    mae_sum: f64,
    series: usize,
    mase_sum: f64,
    mase_series: usize,
    covered: usize,
    bounded: usize,
}

impl Tally {
    fn add(&mut self, abs_errors: &[f64], scale: Option<f64>) {
        if abs_errors.is_empty() {
            return;
        }
        let mae = abs_errors.iter().sum::<f64>() / abs_errors.len() as f64;
        self.mae_sum += mae;
        self.series += 1;
        if let Some(scale) = scale {
            self.mase_sum += mae / scale;
            self.mase_series += 1;
        }
    }

    fn row(&self, model: &str, metric: &str, label: usize, with_bound: bool) -> EvalRow {
        let mean = |sum: f64, n: usize| if n > 0 { sum / n as f64 } else { f64::NAN };
        EvalRow {
            model: model.to_string(),
            metric: metric.to_string(),
            horizon_s: label as i64 * crate::STEP_S,
            mae: mean(self.mae_sum, self.series),
            mase: mean(self.mase_sum, self.mase_series),
            coverage: (with_bound && self.bounded > 0)
                .then(|| self.covered as f64 / self.bounded as f64),
            series: self.series,
        }
    }
}

/// Evaluates `models` on `series` by `protocol`; `progress` is told after each series.
pub fn evaluate(
    series: &[Series],
    metric: &str,
    models: &mut [Box<dyn Forecaster>],
    protocol: &Protocol,
    mut progress: impl FnMut(usize, usize),
) -> (Vec<EvalRow>, EvalSkips) {
    let mut skips = EvalSkips::default();
    let rows = protocol.rows();
    let mut tallies = vec![vec![Tally::default(); rows.len()]; models.len()];
    for (done, s) in series.iter().enumerate() {
        let y = &s.values;
        let Some(end) = train_end(y.len(), protocol.longest()) else {
            skips.too_short += 1;
            progress(done + 1, series.len());
            continue;
        };
        let scale = seasonal_scale(&y[..end]).filter(|s| *s > 0.0);
        if scale.is_none() {
            skips.flat_in_training += 1;
        }
        for (m, model) in models.iter_mut().enumerate() {
            for (r, (_, horizons)) in rows.iter().enumerate() {
                let mut errors = Vec::new();
                for &h in horizons {
                    model.fit(&y[..end], h);
                    let origins = protocol.origins(h, end, y.len());
                    let (Some(&first), Some(&last)) = (origins.first(), origins.last()) else {
                        continue;
                    };
                    let forecasts = model.forecasts(y, h, first + h..last + h + 1);
                    let stride = origins.get(1).map_or(1, |o| o - first);
                    errors.extend(
                        forecasts
                            .iter()
                            .step_by(stride)
                            .zip(&origins)
                            .map(|(f, t)| (f - y[t + h]).abs()),
                    );
                }
                tallies[m][r].add(&errors, scale);
            }
        }
        progress(done + 1, series.len());
    }
    let out = models
        .iter()
        .zip(&tallies)
        .flat_map(|(model, tallies)| {
            rows.iter()
                .zip(tallies)
                .map(|((label, _), tally)| tally.row(model.name(), metric, *label, false))
        })
        .collect();
    (out, skips)
}

/// Evaluates `augur-gbt` by the same protocol, with the coverage of its upper bound: one model
/// trained on the training parts of all series for every horizon the protocol scores.
pub fn evaluate_gbt(
    vms: &[VmSeries],
    metric: &str,
    protocol: &Protocol,
    settings: &Settings,
    clamp: Option<(f64, f64)>,
) -> Result<Vec<EvalRow>, String> {
    let usable: Vec<VmSeries> = vms
        .iter()
        .filter(|vm| train_end(vm.target.len(), protocol.longest()).is_some())
        .cloned()
        .collect();
    if usable.is_empty() {
        let longest = vms.iter().map(|vm| vm.target.len()).max().unwrap_or(0);
        return Err(format!(
            "every series is too short to evaluate: the protocol trains on the first 90% of a \
             series, which must hold more than a day and an hour of 5-minute steps before the \
             test part, so a series needs {} steps or more; the longest here has {longest}",
            min_series_len(protocol)
        ));
    }
    let ends: Vec<usize> = usable
        .iter()
        .filter_map(|vm| train_end(vm.target.len(), protocol.longest()))
        .collect();
    let model = GbtModel::train(&usable, &ends, &protocol.horizons(), settings)?;
    let rows = protocol.rows();
    let mut tallies = vec![Tally::default(); rows.len()];
    for (vm, &end) in usable.iter().zip(&ends) {
        let scales = features::scales_of(vm, end);
        let scale = seasonal_scale(&vm.target[..end]).filter(|s| *s > 0.0);
        for ((_, horizons), tally) in rows.iter().zip(&mut tallies) {
            let pairs: Vec<(usize, usize)> = horizons
                .iter()
                .flat_map(|&h| {
                    protocol
                        .origins(h, end, vm.target.len())
                        .into_iter()
                        .map(move |t| (t, h))
                })
                .collect();
            let forecasts = adaptive_forecasts(&model, vm, &scales, &pairs, clamp)?;
            let mut errors = Vec::with_capacity(pairs.len());
            for (&(t, h), f) in pairs.iter().zip(&forecasts) {
                let actual = vm.target[t + h];
                errors.push((f.mean - actual).abs());
                tally.covered += usize::from(actual <= f.upper);
                tally.bounded += 1;
            }
            tally.add(&errors, scale);
        }
    }
    Ok(rows
        .iter()
        .zip(&tallies)
        .map(|((label, _), tally)| tally.row("augur-gbt", metric, *label, true))
        .collect())
}

/// augur-gbt's forecasts for `pairs`, each bound at the quantile adapted on the series' own
/// outcomes known by its origin ([`crate::gbt::adaptive`]): per horizon, every origin from a
/// season before the first asked for is walked in order, so the quantile has settled by then.
fn adaptive_forecasts(
    model: &GbtModel,
    vm: &VmSeries,
    scales: &[Scale],
    pairs: &[(usize, usize)],
    clamp: Option<(f64, f64)>,
) -> Result<Vec<Forecast>, String> {
    let mut out = vec![None; pairs.len()];
    let mut horizons: Vec<usize> = pairs.iter().map(|p| p.1).collect();
    horizons.sort_unstable();
    horizons.dedup();
    for h in horizons {
        let wanted: Vec<(usize, usize)> = pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.1 == h)
            .map(|(i, p)| (i, p.0))
            .collect();
        let (Some(lo), Some(hi)) = (
            wanted.iter().map(|w| w.1).min(),
            wanted.iter().map(|w| w.1).max(),
        ) else {
            continue;
        };
        let walked = adaptive::forecasts(model, vm, scales, h, lo..hi + 1, SEASON, clamp)?;
        for (i, t) in wanted {
            out[i] = walked.get(t - lo).copied();
        }
    }
    out.into_iter()
        .map(|f| f.ok_or_else(|| "an origin was not forecast".to_string()))
        .collect()
}

/// Parses horizons like "5m,15m,60m,1h" into steps of 5 minutes.
pub fn parse_horizons(text: &str) -> Result<Vec<usize>, String> {
    text.split(',')
        .map(|part| {
            let part = part.trim();
            let (number, unit) = part.split_at(
                part.find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(part.len()),
            );
            let n: i64 = number
                .parse()
                .map_err(|_| format!("horizon {part:?}: expected a number and a unit (m or h)"))?;
            let seconds = match unit {
                "m" => n * 60,
                "h" => n * 3600,
                _ => return Err(format!("horizon {part:?}: unit must be m or h")),
            };
            if seconds <= 0 || seconds % crate::STEP_S != 0 || seconds > 7 * 86_400 {
                return Err(format!(
                    "horizon {part:?}: must be a positive multiple of 5 minutes up to 7 days"
                ));
            }
            Ok((seconds / crate::STEP_S) as usize)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baselines;

    #[test]
    fn seasonal_naive_scores_about_one_and_far_horizons_score_worse() {
        let values: Vec<f64> = (0..SEASON * 10)
            .map(|i| ((i % SEASON) as f64 / 10.0).sin() * 10.0 + 20.0 + (i % 5) as f64)
            .collect();
        let series = vec![Series {
            id: "a".into(),
            start_s: 0,
            values,
        }];
        let mut models = baselines::all();
        let (rows, skips) = evaluate(
            &series,
            "cpu",
            &mut models,
            &Protocol::Rolling(vec![1, 12]),
            |_, _| {},
        );
        assert_eq!(skips, EvalSkips::default());
        let get = |name: &str, h: i64| {
            rows.iter()
                .find(|r| r.model == name && r.horizon_s == h)
                .unwrap()
                .clone()
        };
        let sn = get("seasonal-naive", 300).mase;
        assert!(
            (0.5..1.5).contains(&sn),
            "seasonal naive scores itself about 1: {sn}"
        );
        assert!(get("last-value", 3600).mase > get("last-value", 300).mase);
        assert_eq!(rows.len(), 12);
    }

    #[test]
    fn short_and_flat_series_are_counted() {
        let series = vec![
            Series {
                id: "short".into(),
                start_s: 0,
                values: vec![1.0; 100],
            },
            Series {
                id: "flat".into(),
                start_s: 0,
                values: vec![5.0; 1000],
            },
        ];
        let (rows, skips) = evaluate(
            &series,
            "cpu",
            &mut baselines::all(),
            &Protocol::Rolling(vec![1]),
            |_, _| {},
        );
        assert_eq!(
            skips,
            EvalSkips {
                too_short: 1,
                flat_in_training: 1
            }
        );
        assert_eq!(rows[0].series, 1);
        assert!(rows[0].mase.is_nan(), "no series had a usable scale");
    }

    #[test]
    fn gift_windows_score_every_step_of_non_overlapping_windows() {
        let protocol = Protocol::Gift(48);
        assert_eq!(protocol.horizons(), (1..=48).collect::<Vec<_>>());
        // Training ends at 900 of 1000: two whole windows fit, ending with the series, and
        // every horizon is scored from both (none from a third, partial one).
        assert_eq!(protocol.origins(1, 900, 1000), vec![903, 951]);
        assert_eq!(protocol.origins(48, 900, 1000), vec![903, 951]);
        // A series that repeats daily exactly: seasonal naive is perfect over whole windows.
        let values: Vec<f64> = (0..SEASON * 10).map(|i| (i % SEASON) as f64).collect();
        let series = vec![Series {
            id: "a".into(),
            start_s: 0,
            values,
        }];
        let (rows, _) = evaluate(&series, "cpu", &mut baselines::all(), &protocol, |_, _| {});
        let row = |name: &str| rows.iter().find(|r| r.model == name).unwrap().clone();
        assert_eq!(row("seasonal-naive").mae, 0.0);
        assert_eq!(row("seasonal-naive").horizon_s, 48 * 300);
        assert!(row("last-value").mae > 1.0);
        assert_eq!(rows.len(), 6);
    }

    #[test]
    fn horizons_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_horizons("5m,15m,60m,4h"), Ok(vec![1, 3, 12, 48]));
        assert!(parse_horizons("7m").is_err());
        assert!(parse_horizons("5s").is_err());
        assert!(parse_horizons("").is_err());
    }
}
