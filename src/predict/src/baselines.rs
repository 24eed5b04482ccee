//! The baseline forecasters, defined exactly so that anyone can recompute them. A forecast of
//! `y[t+h]` made at step `t` uses `y[..=t]` only.
//!
//! | name | forecast of `y[t+h]` |
//! |---|---|
//! | `last-value` | `y[t]` |
//! | `seasonal-naive` | `y[t+h-288]` (one day back) |
//! | `moving-average` | mean of `y[t-5..=t]` |
//! | `rolling-median` | median of `y[t-11..=t]` |
//! | `ewma` | `s[t]`, where `s[0] = y[0]` and `s[i] = 0.3 y[i] + 0.7 s[i-1]` |
//! | `linear` | least squares on the last 12 lags `y[t-11..=t]` plus an intercept, fitted per series and horizon on its training part |
//!
//! Near the start of a series, windows shrink to what exists and `seasonal-naive` falls back to
//! `y[t]`.

use crate::SEASON;
use std::ops::Range;

/// A forecaster evaluated by the same code as every other.
pub trait Forecaster: std::fmt::Debug {
    fn name(&self) -> &'static str;

    /// Learns from the training part of one series, for one horizon (steps ahead).
    fn fit(&mut self, _train: &[f64], _horizon: usize) {}

    /// Forecasts `y[j]` for every `j` in `targets`, each made at `t = j - horizon` (>= 0).
    fn forecasts(&self, y: &[f64], horizon: usize, targets: Range<usize>) -> Vec<f64>;
}

#[derive(Debug, Default)]
pub struct LastValue;

impl Forecaster for LastValue {
    fn name(&self) -> &'static str {
        "last-value"
    }
    fn forecasts(&self, y: &[f64], h: usize, targets: Range<usize>) -> Vec<f64> {
        targets.map(|j| y[j - h]).collect()
    }
}

#[derive(Debug, Default)]
pub struct SeasonalNaive;

impl Forecaster for SeasonalNaive {
    fn name(&self) -> &'static str {
        "seasonal-naive"
    }
    fn forecasts(&self, y: &[f64], h: usize, targets: Range<usize>) -> Vec<f64> {
        targets
            .map(|j| match j.checked_sub(SEASON) {
                Some(i) if i <= j - h => y[i],
                _ => y[j - h],
            })
            .collect()
    }
}

#[derive(Debug, Default)]
pub struct MovingAverage;

impl Forecaster for MovingAverage {
    fn name(&self) -> &'static str {
        "moving-average"
    }
    fn forecasts(&self, y: &[f64], h: usize, targets: Range<usize>) -> Vec<f64> {
        targets
            .map(|j| {
                let t = j - h;
                let window = &y[t.saturating_sub(5)..=t];
                window.iter().sum::<f64>() / window.len() as f64
            })
            .collect()
    }
}

#[derive(Debug, Default)]
pub struct RollingMedian;

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

impl Forecaster for RollingMedian {
    fn name(&self) -> &'static str {
        "rolling-median"
    }
    fn forecasts(&self, y: &[f64], h: usize, targets: Range<usize>) -> Vec<f64> {
        targets
            .map(|j| median(&y[(j - h).saturating_sub(11)..=j - h]))
            .collect()
    }
}

#[derive(Debug, Default)]
pub struct Ewma;

impl Forecaster for Ewma {
    fn name(&self) -> &'static str {
        "ewma"
    }
    fn forecasts(&self, y: &[f64], h: usize, targets: Range<usize>) -> Vec<f64> {
        let mut smoothed = Vec::with_capacity(y.len());
        let mut s = y.first().copied().unwrap_or(0.0);
        for v in y {
            s = 0.3 * v + 0.7 * s;
            smoothed.push(s);
        }
        if let Some(first) = y.first() {
            smoothed[0] = *first;
        }
        targets.map(|j| smoothed[j - h]).collect()
    }
}

const LAGS: usize = 12;

/// Least squares on 12 lags and an intercept.
#[derive(Debug, Default)]
pub struct Linear {
    coefficients: Option<[f64; LAGS + 1]>,
}

/// Solves `a x = b` (small, dense) by Gaussian elimination with partial pivoting.
fn solve<const N: usize>(mut a: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|i, j| a[*i][col].abs().total_cmp(&a[*j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..N {
            let f = a[row][col] / pivot_row[col];
            for (cell, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *cell -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; N];
    for row in (0..N).rev() {
        let rest: f64 = (row + 1..N).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - rest) / a[row][row];
    }
    Some(x)
}

fn features(y: &[f64], t: usize) -> [f64; LAGS + 1] {
    let mut f = [1.0; LAGS + 1];
    for (k, slot) in f.iter_mut().skip(1).enumerate() {
        *slot = y[t.saturating_sub(k)];
    }
    f
}

impl Forecaster for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn fit(&mut self, train: &[f64], horizon: usize) {
        const N: usize = LAGS + 1;
        let mut xtx = [[0.0; N]; N];
        let mut xty = [0.0; N];
        let mut rows = 0;
        for t in LAGS - 1..train.len().saturating_sub(horizon) {
            let f = features(train, t);
            let target = train[t + horizon];
            for i in 0..N {
                xty[i] += f[i] * target;
                for j in 0..N {
                    xtx[i][j] += f[i] * f[j];
                }
            }
            rows += 1;
        }
        // A touch of ridge keeps flat or collinear series solvable.
        let ridge = 1e-6 * (0..N).map(|i| xtx[i][i]).sum::<f64>().max(1e-9) / N as f64;
        for (i, row) in xtx.iter_mut().enumerate().skip(1) {
            row[i] += ridge;
        }
        self.coefficients = if rows > N { solve(xtx, xty) } else { None };
    }

    fn forecasts(&self, y: &[f64], h: usize, targets: Range<usize>) -> Vec<f64> {
        targets
            .map(|j| match &self.coefficients {
                Some(c) => features(y, j - h).iter().zip(c).map(|(f, c)| f * c).sum(),
                None => y[j - h],
            })
            .collect()
    }
}

/// Every baseline, in the order they are reported.
pub fn all() -> Vec<Box<dyn Forecaster>> {
    vec![
        Box::new(LastValue),
        Box::new(SeasonalNaive),
        Box::new(MovingAverage),
        Box::new(RollingMedian),
        Box::new(Ewma),
        Box::new(Linear::default()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_baseline_matches_its_definition() {
        let y: Vec<f64> = (0..600)
            .map(|i| (i % 7) as f64 + if i >= 300 { 100.0 } else { 0.0 })
            .collect();
        let at = |f: &dyn Forecaster, j: usize, h: usize| f.forecasts(&y, h, j..j + 1)[0];
        assert_eq!(at(&LastValue, 500, 3), y[497]);
        assert_eq!(at(&SeasonalNaive, 500, 3), y[500 - 288]);
        assert_eq!(
            at(&SeasonalNaive, 100, 1),
            y[99],
            "before a day of history: last value"
        );
        assert_eq!(
            at(&MovingAverage, 500, 1),
            y[494..=499].iter().sum::<f64>() / 6.0
        );
        assert_eq!(at(&RollingMedian, 500, 1), median(&y[488..=499]));
        let mut s = y[0];
        for v in &y[..=499] {
            s = 0.3 * v + 0.7 * s;
        }
        assert!((at(&Ewma, 500, 1) - s).abs() < 1e-9);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }

    #[test]
    fn linear_recovers_an_autoregression() {
        // y[t] = 0.5 y[t-1] + 0.3 y[t-2] + 2, exactly learnable from 12 lags.
        let mut y = vec![1.0, 2.0];
        for t in 2..500 {
            let noise = ((t * 7919) % 13) as f64 / 13.0;
            y.push(0.5 * y[t - 1] + 0.3 * y[t - 2] + 2.0 + noise);
        }
        let mut model = Linear::default();
        model.fit(&y[..450], 1);
        let forecast = model.forecasts(&y, 1, 450..500);
        let mae: f64 = forecast
            .iter()
            .zip(&y[450..])
            .map(|(f, v)| (f - v).abs())
            .sum::<f64>()
            / 50.0;
        let last: f64 = LastValue
            .forecasts(&y, 1, 450..500)
            .iter()
            .zip(&y[450..])
            .map(|(f, v)| (f - v).abs())
            .sum::<f64>()
            / 50.0;
        assert!(mae < last, "linear {mae} beats last-value {last}");
    }
}
