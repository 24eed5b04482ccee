//! Adaptive conformal bounds (after Gibbs & Candès, "Adaptive Conformal Inference Under
//! Distribution Shift", 2021): an upper bound follows the misses actually seen on the series, so
//! that a VM whose recent behaviour the calibration residuals under-state gets wider bounds, and
//! one they over-state narrower ones.
//!
//! Here the quantile itself is tracked (as in Angelopoulos, Candès and Tibshirani, "Conformal PID
//! Control", 2023), multiplicatively: starting from the model's split-conformal quantile `q`,
//! after each outcome `q ← q·exp(η(miss − α*))`, where `α*` is the target miss rate (one minus the
//! level), `miss` is 1 when the value came out above its bound, and `η` is [`RATE`]; at the target
//! miss rate `q` holds still. Unlike a level, the quantile can grow past the largest calibration
//! residual, which spiky series need, and it grows as fast for a series of any scale. A bound at
//! origin `t` uses the outcomes of earlier bounds whose targets are before `t` only (online, step
//! `t` is still filling up), so nothing later than `y[t]` is read.
//!
//! The same walk learns, from the same outcomes, where to centre the series' forecasts
//! ([`CentreChoice`]); the bound stays the model's ([`AdaptiveWalk::bound`]).

use super::centre_choice::{CentreChoice, References};
use super::{clamped, Forecast, GbtModel, RawForecast, Scale, VmSeries};
use std::collections::VecDeque;

/// How fast the quantile follows the misses (per outcome, in the exponent).
pub const RATE: f64 = 0.1;
/// The quantile never falls below this share of the model's own, so that it can grow again.
const FLOOR: f64 = 0.01;

/// The adapted quantile (σ units over the spread) of one series at one horizon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveQuantile {
    target_miss: f64,
    q: f64,
    floor: f64,
}

impl AdaptiveQuantile {
    /// Starts at the model's quantile `q` for `level`.
    pub fn new(level: f64, q: f64) -> Self {
        Self {
            target_miss: 1.0 - level,
            q: q.max(0.0),
            floor: FLOOR * q.abs().max(0.1),
        }
    }

    pub fn quantile(&self) -> f64 {
        self.q
    }

    pub fn observe(&mut self, covered: bool) {
        let miss = if covered { 0.0 } else { 1.0 };
        self.q = (self.q * (RATE * (miss - self.target_miss)).exp()).max(self.floor);
    }
}

/// A forecast whose outcome is not yet known.
#[derive(Debug, Clone, Copy)]
struct Pending {
    target: usize,
    upper: f64,
    /// The model's centre (within the clamp) and the references of its origin.
    model: f64,
    references: References,
}

/// Walks the origins of one horizon in order, setting each forecast's centre and bound as the
/// outcomes so far direct, and learning from each outcome once its target is before the origin
/// being forecast.
#[derive(Debug, Clone)]
pub struct AdaptiveWalk {
    pub state: AdaptiveQuantile,
    pub centre: CentreChoice,
    horizon: usize,
    pending: VecDeque<Pending>,
}

impl AdaptiveWalk {
    /// A walk for horizon `horizon` (steps) of `model`, which must have been trained for it.
    pub fn new(model: &GbtModel, horizon: usize) -> Self {
        let k = model.horizons().binary_search(&horizon).unwrap_or(0);
        Self {
            state: AdaptiveQuantile::new(model.level(), model.quantile(k)),
            centre: CentreChoice::default(),
            horizon,
            pending: VecDeque::new(),
        }
    }

    /// The forecast at origin `t` (later than any before; any numbering of steps, the same
    /// throughout) of `raw`, with its bound adapted on every outcome whose target is before `t`.
    /// `value_at` gives the actual value at a step, `None` where there is none (that outcome
    /// is skipped).
    pub fn step(
        &mut self,
        t: usize,
        raw: &RawForecast,
        clamp: Option<(f64, f64)>,
        value_at: impl Fn(usize) -> Option<f64>,
    ) -> Forecast {
        while let Some(&done) = self.pending.front() {
            // Only steps before the origin count: online, the origin's own step is still
            // filling up.
            if done.target >= t {
                break;
            }
            if let Some(actual) = value_at(done.target) {
                self.state.observe(actual <= done.upper);
                self.centre.observe(done.model, &done.references, actual);
            }
            self.pending.pop_front();
        }
        let forecast = self.bound(raw, clamp);
        self.pending.push_back(Pending {
            target: t + self.horizon,
            upper: forecast.upper,
            model: clamped(raw.centre, clamp),
            references: raw.references,
        });
        forecast
    }

    /// `raw` centred and bounded as learned so far, learning nothing. The bound stays the
    /// model's own (raised to the centre should that be higher): a reference that has erred
    /// less lately does not see a change the model foresees, and the bound must.
    pub fn bound(&self, raw: &RawForecast, clamp: Option<(f64, f64)>) -> Forecast {
        let model = raw.with_quantile(self.state.quantile(), clamp);
        let mean = clamped(self.centre.centre(model.mean, &raw.references), clamp);
        Forecast {
            mean,
            upper: model.upper.max(mean),
        }
    }
}

/// Forecasts of one series at horizon `h` from the ascending, consecutive origins `origins`,
/// with adaptive bounds warmed up on up to `warm_up` origins before the first (whose targets
/// are all known by then).
pub fn forecasts(
    model: &GbtModel,
    vm: &VmSeries,
    scales: &[Scale],
    h: usize,
    origins: std::ops::Range<usize>,
    warm_up: usize,
    clamp: Option<(f64, f64)>,
) -> Result<Vec<Forecast>, String> {
    let first = origins.start.saturating_sub(warm_up);
    let all: Vec<(usize, usize)> = (first..origins.end).map(|t| (t, h)).collect();
    let raw = model.forecast_raw(vm, scales, &all)?;
    let mut walk = AdaptiveWalk::new(model, h);
    let mut out = Vec::with_capacity(origins.len());
    for (&(t, _), r) in all.iter().zip(&raw) {
        let f = walk.step(t, r, clamp, |i| vm.target.get(i).copied());
        if t >= origins.start {
            out.push(f);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_raise_the_quantile_and_hits_lower_it_to_a_floor() {
        let mut a = AdaptiveQuantile::new(0.95, 2.0);
        for _ in 0..10 {
            a.observe(false);
        }
        let raised = a.quantile();
        assert!(
            (raised - 2.0 * (10.0 * RATE * 0.95).exp()).abs() < 1e-9,
            "{raised}"
        );
        for _ in 0..1000 {
            a.observe(true);
        }
        assert!(a.quantile() < 2.0);
        for _ in 0..100_000 {
            a.observe(true);
        }
        assert!(
            (a.quantile() - FLOOR * 2.0).abs() < 1e-12,
            "{}",
            a.quantile()
        );
        // At the target miss rate it stays where it is.
        let mut b = AdaptiveQuantile::new(0.95, 2.0);
        for i in 0..2000 {
            b.observe(i % 20 != 0);
        }
        assert!((b.quantile() - 2.0).abs() < 1e-6, "{}", b.quantile());
    }
}
