//! The evaluation protocol: per series, train on the first 90% and forecast every step of the
//! last 10% at each horizon. MAE is averaged over series; MASE is each series' test MAE divided
//! by its in-sample seasonal-naive MAE (season 288, on the training part), averaged over series,
//! as GIFT-Eval computes it. Series too short for a season of training, and (for MASE only) series
//! whose seasonal-naive MAE is zero, are left out and counted.

use crate::baselines::Forecaster;
use crate::trace::Series;
use crate::SEASON;
use serde::Serialize;

/// Share of each series used for training.
pub const TRAIN_SHARE: f64 = 0.9;

/// One model at one horizon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRow {
    pub model: String,
    pub metric: String,
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

/// Evaluates `models` on `series` at `horizons` (steps); `progress` is told after each series.
pub fn evaluate(
    series: &[Series],
    metric: &str,
    models: &mut [Box<dyn Forecaster>],
    horizons: &[usize],
    mut progress: impl FnMut(usize, usize),
) -> (Vec<EvalRow>, EvalSkips) {
    let mut skips = EvalSkips::default();
    // Per model and horizon: sum of MAE, count, sum of MASE, count.
    let mut acc = vec![vec![(0.0f64, 0usize, 0.0f64, 0usize); horizons.len()]; models.len()];
    for (done, s) in series.iter().enumerate() {
        let y = &s.values;
        let train_end = (y.len() as f64 * TRAIN_SHARE).floor() as usize;
        let max_h = horizons.iter().copied().max().unwrap_or(1);
        if train_end <= SEASON + 12
            || train_end >= y.len()
            || y.len() - train_end < 1
            || train_end < max_h
        {
            skips.too_short += 1;
            progress(done + 1, series.len());
            continue;
        }
        let scale = seasonal_scale(&y[..train_end]).filter(|s| *s > 0.0);
        if scale.is_none() {
            skips.flat_in_training += 1;
        }
        for (m, model) in models.iter_mut().enumerate() {
            for (k, &h) in horizons.iter().enumerate() {
                model.fit(&y[..train_end], h);
                let targets = train_end.max(h)..y.len();
                let forecasts = model.forecasts(y, h, targets.clone());
                let mae = forecasts
                    .iter()
                    .zip(&y[targets])
                    .map(|(f, v)| (f - v).abs())
                    .sum::<f64>()
                    / forecasts.len() as f64;
                let slot = &mut acc[m][k];
                slot.0 += mae;
                slot.1 += 1;
                if let Some(scale) = scale {
                    slot.2 += mae / scale;
                    slot.3 += 1;
                }
            }
        }
        progress(done + 1, series.len());
    }
    let rows = models
        .iter()
        .enumerate()
        .flat_map(|(m, model)| {
            let acc = &acc;
            horizons.iter().enumerate().map(move |(k, &h)| {
                let (mae_sum, n, mase_sum, n_mase) = acc[m][k];
                EvalRow {
                    model: model.name().to_string(),
                    metric: metric.to_string(),
                    horizon_s: h as i64 * crate::STEP_S,
                    mae: if n > 0 { mae_sum / n as f64 } else { f64::NAN },
                    mase: if n_mase > 0 {
                        mase_sum / n_mase as f64
                    } else {
                        f64::NAN
                    },
                    coverage: None,
                    series: n,
                }
            })
        })
        .collect();
    (rows, skips)
}

/// Evaluates `augur-gbt` by the same protocol, with the coverage of its upper bound.
pub fn evaluate_gbt(
    vms: &[crate::gbt::VmSeries],
    metric: &str,
    horizons: &[usize],
    level: f64,
    clamp: Option<(f64, f64)>,
) -> Result<Vec<EvalRow>, String> {
    let max_h = horizons.iter().copied().max().unwrap_or(1);
    let usable: Vec<crate::gbt::VmSeries> = vms
        .iter()
        .filter(|vm| {
            let end = (vm.target.len() as f64 * TRAIN_SHARE).floor() as usize;
            end > SEASON + 12 && end < vm.target.len() && end >= max_h
        })
        .cloned()
        .collect();
    let train_end: Vec<usize> = usable
        .iter()
        .map(|vm| (vm.target.len() as f64 * TRAIN_SHARE).floor() as usize)
        .collect();
    let mut rows = Vec::new();
    for &h in horizons {
        let forecasts = crate::gbt::train_and_forecast(&usable, &train_end, h, level, clamp)?;
        let (mut mae_sum, mut mase_sum, mut n_mase, mut covered, mut total) =
            (0.0, 0.0, 0usize, 0usize, 0usize);
        for (v, vm) in usable.iter().enumerate() {
            let actual = &vm.target[train_end[v].max(h)..];
            let mean = &forecasts.mean[v];
            let mae = mean
                .iter()
                .zip(actual)
                .map(|(f, y)| (f - y).abs())
                .sum::<f64>()
                / actual.len() as f64;
            mae_sum += mae;
            if let Some(scale) = seasonal_scale(&vm.target[..train_end[v]]).filter(|s| *s > 0.0) {
                mase_sum += mae / scale;
                n_mase += 1;
            }
            covered += forecasts.upper[v]
                .iter()
                .zip(actual)
                .filter(|(u, y)| y <= u)
                .count();
            total += actual.len();
        }
        rows.push(EvalRow {
            model: "augur-gbt".into(),
            metric: metric.to_string(),
            horizon_s: h as i64 * crate::STEP_S,
            mae: mae_sum / usable.len().max(1) as f64,
            mase: if n_mase > 0 {
                mase_sum / n_mase as f64
            } else {
                f64::NAN
            },
            coverage: (total > 0).then(|| covered as f64 / total as f64),
            series: usable.len(),
        });
    }
    Ok(rows)
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
        let (rows, skips) = evaluate(&series, "cpu", &mut models, &[1, 12], |_, _| {});
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
        let (rows, skips) = evaluate(&series, "cpu", &mut baselines::all(), &[1], |_, _| {});
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
    fn horizons_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_horizons("5m,15m,60m,4h"), Ok(vec![1, 3, 12, 48]));
        assert!(parse_horizons("7m").is_err());
        assert!(parse_horizons("5s").is_err());
        assert!(parse_horizons("").is_err());
    }
}
