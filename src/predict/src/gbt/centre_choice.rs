//! The centre of one series' forecasts, chosen on its own outcomes: the model's centre, or one of
//! a few simple references (or an even blend of one with the model) when it has lately erred
//! clearly less.
//!
//! One model serves every series, and it learns what most of them do. A VM that wanders in level
//! (a trend, a drift, a step that holds) is forecast better by its last value; a VM that sits
//! flat between rare spikes by its recent median, to the last digit; a VM whose level changes
//! slowly under fast noise by a median over hours. Which kind a VM is can change over its life.
//! So each series, per horizon, keeps the discounted absolute errors of every candidate in
//! [`CANDIDATES`] over the outcomes known so far (half-life [`HALF_LIFE`] outcomes), and
//! forecasts with the one that has erred least, provided it beats the model's own by
//! [`MARGIN`]: without that margin a series that the model and a reference forecast alike would
//! flip between them on noise.

use super::features::{anchor, median_in_place};

/// What a candidate centre is made of, besides the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// The value at the origin, `y[t]`.
    Last,
    /// The median of the last 12, 48 or 144 steps (one hour, four hours, half a day at
    /// 5-minute steps).
    Median12,
    Median48,
    Median144,
}

impl Reference {
    pub fn name(self) -> &'static str {
        match self {
            Reference::Last => "last value",
            Reference::Median12 => "median of the last 12 steps",
            Reference::Median48 => "median of the last 48 steps",
            Reference::Median144 => "median of the last 144 steps",
        }
    }
}

/// The candidates after the model alone: `(reference, w)` is `(1 - w)·model + w·reference`.
/// Order matters for ties: the earlier wins.
pub const CANDIDATES: [(Reference, f64); 9] = [
    (Reference::Median12, 1.0),
    (Reference::Last, 0.25),
    (Reference::Last, 0.5),
    (Reference::Last, 0.75),
    (Reference::Last, 1.0),
    (Reference::Median48, 1.0),
    (Reference::Median48, 0.5),
    (Reference::Median144, 1.0),
    (Reference::Median144, 0.5),
];
/// Outcomes after which an error weighs half as much: half a day at 5-minute steps.
pub const HALF_LIFE: f64 = 144.0;
/// A candidate is used when its discounted error is below this share of the model's own.
pub const MARGIN: f64 = 0.9;

/// The reference values of one series at one origin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct References {
    pub last: f64,
    pub median_12: f64,
    pub median_48: f64,
    pub median_144: f64,
}

impl References {
    /// The references at origin `t` of `y` (windows shrink to what exists).
    pub fn at(y: &[f64], t: usize) -> References {
        let mut scratch = [0.0; 144];
        let mut median = |window: usize| {
            let values = &y[(t + 1).saturating_sub(window)..=t];
            let scratch = &mut scratch[..values.len()];
            scratch.copy_from_slice(values);
            median_in_place(scratch)
        };
        References {
            last: y[t],
            median_12: anchor(y, t),
            median_48: median(48),
            median_144: median(144),
        }
    }

    /// Every reference at `value`.
    pub fn flat(value: f64) -> References {
        References {
            last: value,
            median_12: value,
            median_48: value,
            median_144: value,
        }
    }

    fn get(&self, reference: Reference) -> f64 {
        match reference {
            Reference::Last => self.last,
            Reference::Median12 => self.median_12,
            Reference::Median48 => self.median_48,
            Reference::Median144 => self.median_144,
        }
    }

    fn is_finite(&self) -> bool {
        [self.last, self.median_12, self.median_48, self.median_144]
            .iter()
            .all(|v| v.is_finite())
    }
}

/// Discounted errors of the model (index 0) and of each of [`CANDIDATES`], for one series at
/// one horizon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CentreChoice {
    errors: [f64; CANDIDATES.len() + 1],
    keep: f64,
}

impl Default for CentreChoice {
    fn default() -> Self {
        Self {
            errors: [0.0; CANDIDATES.len() + 1],
            keep: 0.5f64.powf(1.0 / HALF_LIFE),
        }
    }
}

impl CentreChoice {
    /// Which candidate centres forecasts now: `None` for the model alone.
    pub fn chosen(&self) -> Option<(Reference, f64)> {
        let (best, error) = self
            .errors
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map_or((0, 0.0), |(k, e)| (k, *e));
        (best > 0 && error < self.errors[0] * MARGIN).then(|| CANDIDATES[best - 1])
    }

    /// What the centre follows now, for a person: "model", "last value", "median of the last
    /// 48 steps", or a blend such as "50% last value, 50% model".
    pub fn describe(&self) -> String {
        match self.chosen() {
            None => "model".into(),
            Some((r, w)) if w >= 1.0 => r.name().into(),
            Some((r, w)) => format!(
                "{:.0}% {}, {:.0}% model",
                w * 100.0,
                r.name(),
                (1.0 - w) * 100.0
            ),
        }
    }

    /// The centre now, from the model's centre `model` and the references at the origin.
    pub fn centre(&self, model: f64, references: &References) -> f64 {
        self.chosen()
            .map_or(model, |(r, w)| mix(model, references.get(r), w))
    }

    /// Learns the outcome `actual` of a forecast whose model centre was `model`, made with
    /// `references`.
    pub fn observe(&mut self, model: f64, references: &References, actual: f64) {
        if !(model.is_finite() && references.is_finite() && actual.is_finite()) {
            return;
        }
        self.errors[0] = self.errors[0] * self.keep + (model - actual).abs();
        for (error, (r, w)) in self.errors[1..].iter_mut().zip(CANDIDATES) {
            let candidate = mix(model, references.get(r), w);
            *error = *error * self.keep + (candidate - actual).abs();
        }
    }
}

fn mix(model: f64, reference: f64, w: f64) -> f64 {
    (1.0 - w) * model + w * reference
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(last: f64, median: f64) -> References {
        References {
            last,
            ..References::flat(median)
        }
    }

    #[test]
    fn a_wandering_series_moves_the_centre_to_its_last_value() {
        let mut choice = CentreChoice::default();
        // The model keeps forecasting the old level; the series has moved and wanders on.
        let mut level = 10.0;
        for i in 0..500 {
            let last = level;
            level += if i % 2 == 0 { 1.0 } else { -0.8 };
            choice.observe(10.0, &refs(last, 10.0), level);
        }
        assert_eq!(choice.chosen(), Some((Reference::Last, 1.0)));
        assert_eq!(choice.centre(10.0, &refs(42.0, 10.0)), 42.0);
        assert_eq!(choice.describe(), "last value");
    }

    #[test]
    fn a_flat_series_takes_its_median_exactly() {
        let mut choice = CentreChoice::default();
        // The model sits a hair above a series that is zero but for rare spikes; the last
        // value is as exact between spikes, and echoes each spike a step late.
        let spike = |i: usize| if i == 100 || i == 600 { 1.0 } else { 0.0 };
        for i in 1..2000 {
            choice.observe(1e-5, &refs(spike(i - 1), 0.0), spike(i));
        }
        assert_eq!(choice.chosen(), Some((Reference::Median12, 1.0)));
        assert_eq!(choice.centre(1e-5, &refs(1.0, 0.0)), 0.0);
    }

    #[test]
    fn a_candidate_takes_over_only_when_it_errs_clearly_less() {
        // The model misses one way, the last value the other: the even blend is exact.
        let mut halves = CentreChoice::default();
        // The last value misses a little less than the model: not by the margin.
        let mut close = CentreChoice::default();
        for i in 0..500 {
            let actual = f64::from(i % 7);
            halves.observe(actual + 1.0, &refs(actual - 1.0, actual + 5.0), actual);
            close.observe(actual + 1.0, &refs(actual + 0.95, actual + 5.0), actual);
        }
        assert_eq!(halves.chosen(), Some((Reference::Last, 0.5)));
        assert_eq!(halves.describe(), "50% last value, 50% model");
        assert_eq!(halves.centre(2.0, &refs(4.0, 0.0)), 3.0);
        assert_eq!(close.chosen(), None);
        assert_eq!(close.describe(), "model");
        assert_eq!(close.centre(3.0, &refs(9.0, 0.0)), 3.0);
    }

    #[test]
    fn no_outcome_and_bad_outcomes_leave_the_model_alone() {
        let mut choice = CentreChoice::default();
        assert_eq!(choice.chosen(), None);
        choice.observe(f64::NAN, &refs(1.0, 1.0), 1.0);
        choice.observe(1.0, &refs(1.0, f64::NAN), 1.0);
        choice.observe(1.0, &refs(1.0, 1.0), f64::INFINITY);
        assert_eq!(choice, CentreChoice::default());
    }

    #[test]
    fn references_are_medians_of_what_exists() {
        let y: Vec<f64> = (0..200).map(f64::from).collect();
        let r = References::at(&y, 199);
        assert_eq!(r.last, 199.0);
        assert_eq!(r.median_12, 193.5);
        assert_eq!(r.median_48, 175.5);
        assert_eq!(r.median_144, 127.5);
        let early = References::at(&y, 2);
        assert_eq!((early.median_12, early.median_144), (1.0, 1.0));
    }
}
