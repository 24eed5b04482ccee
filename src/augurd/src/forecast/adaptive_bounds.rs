//! Adaptive upper bounds for online forecasts: per VM and resource, the walk of
//! [`augur_predict::gbt::adaptive`] over the VM's steps, carried from one forecast to the next,
//! so each new forecast costs the steps since the last one (a season of steps the first time,
//! or after a new model generation).

use super::history::{Resource, VmHistory};
use augur_predict::gbt::adaptive::AdaptiveWalk;
use augur_predict::gbt::{Forecast, GbtModel, Scale, VmSeries};
use augur_store::VmId;
use std::collections::BTreeMap;

/// Entries kept at most; beyond it the table starts over (each entry rebuilds itself).
const MAX_ENTRIES: usize = 16_384;

#[derive(Debug)]
struct Entry {
    generation: u64,
    /// Absolute step (unix seconds / step) of the next origin to walk.
    next: usize,
    /// One walk per model horizon, in the model's order.
    walks: Vec<AdaptiveWalk>,
}

#[derive(Debug, Default)]
pub struct AdaptiveBounds {
    entries: BTreeMap<(VmId, Resource), Entry>,
}

impl AdaptiveBounds {
    /// Forecasts of `vm` (the series of `history`'s `resource`) at its last step, at every
    /// horizon of `model` (generation `generation`), each bound at its adapted quantile.
    #[allow(clippy::too_many_arguments)]
    pub fn forecast(
        &mut self,
        history: &VmHistory,
        resource: Resource,
        vm: &VmSeries,
        scales: &[Scale],
        model: &GbtModel,
        generation: u64,
        clamp: Option<(f64, f64)>,
    ) -> Result<Vec<Forecast>, String> {
        let step_s = history.step_s.max(1);
        let first_abs = usize::try_from(history.start_s.div_euclid(step_s))
            .map_err(|_| "the history starts before 1970".to_string())?;
        let t = vm.target.len().checked_sub(1).ok_or("an empty history")?;
        let now_abs = first_abs + t;
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        let horizons = model.horizons().to_vec();
        let warm_start = t.saturating_sub(augur_predict::SEASON);
        let entry = self
            .entries
            .entry((history.id, resource))
            .or_insert_with(|| Entry {
                generation,
                next: 0,
                walks: Vec::new(),
            });
        // A caller whose history is behind the walk gets bounds as the walk stands.
        if entry.generation != generation || entry.walks.len() != horizons.len() {
            *entry = Entry {
                generation,
                next: first_abs + warm_start,
                walks: horizons
                    .iter()
                    .map(|&h| AdaptiveWalk::new(model, h))
                    .collect(),
            };
        }
        // Origins not walked yet, never more than a season back.
        let from = entry.next.saturating_sub(first_abs).max(warm_start);
        let origins: Vec<(usize, usize)> = (from..=t)
            .flat_map(|o| horizons.iter().map(move |&h| (o, h)))
            .collect();
        let value_at = |abs: usize| {
            abs.checked_sub(first_abs)
                .and_then(|i| vm.target.get(i).copied())
        };
        if origins.is_empty() {
            // This step was forecast already: the same origin, at the quantiles reached.
            let raw = model.forecast_raw(
                vm,
                scales,
                &horizons.iter().map(|&h| (t, h)).collect::<Vec<_>>(),
            )?;
            return Ok(raw
                .iter()
                .zip(&entry.walks)
                .map(|(r, w)| w.bound(r, clamp))
                .collect());
        }
        let raw = model.forecast_raw(vm, scales, &origins)?;
        let mut latest = Vec::with_capacity(horizons.len());
        for (&(o, _), r) in origins.iter().zip(&raw) {
            let walk = &mut entry.walks[r.horizon_index];
            let f = walk.step(first_abs + o, r, clamp, value_at);
            if o == t {
                latest.push(f);
            }
        }
        entry.next = now_abs + 1;
        Ok(latest)
    }

    /// What the mean of `vm`'s `resource` follows at each of the model's horizons, as of its
    /// last forecast (empty before one).
    pub fn centres(&self, vm: VmId, resource: Resource) -> Vec<String> {
        self.entries
            .get(&(vm, resource))
            .map_or_else(Vec::new, |e| {
                e.walks.iter().map(|w| w.centre.describe()).collect()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_predict::gbt::{adaptive, features, Settings};

    fn series(len: usize) -> Vec<f64> {
        let mut state = 0x9e37_79b9u64;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state >> 11) as f64 / (1u64 << 53) as f64;
                let day = (i % 288) as f64 / 288.0 * std::f64::consts::TAU;
                // Calmer in training than after it, so the bounds have something to adapt to.
                let restless = if i > 1000 { 6.0 } else { 1.0 };
                20.0 + 10.0 * day.sin() + restless * 3.0 * noise
            })
            .collect()
    }

    /// The first `len` steps of `full`, as the forecaster is given them.
    fn upto(full: &VmSeries, len: usize) -> (VmHistory, VmSeries) {
        let history = VmHistory {
            id: 7,
            name: "vm".into(),
            attrs: Default::default(),
            start_s: full.start_s,
            step_s: full.step_s,
            columns: Default::default(),
            len,
        };
        let vm = VmSeries {
            target: full.target[..len].to_vec(),
            ..full.clone()
        };
        (history, vm)
    }

    #[test]
    fn forecasts_one_step_at_a_time_match_one_walk_over_all_of_them() {
        let y = series(1300);
        let step_s = 300;
        let start_s = 1_700_000_100 / step_s * step_s;
        let full = VmSeries {
            id: "7".into(),
            start_s,
            step_s,
            target: y.clone(),
            others: Vec::new(),
        };
        let settings = Settings {
            iterations: 20,
            ..Settings::default()
        };
        let model =
            GbtModel::train(std::slice::from_ref(&full), &[1000], &[1, 3], &settings).unwrap();
        let scales = features::scales_of(&full, 1000);
        let mut bounds = AdaptiveBounds::default();
        let mut online = Vec::new();
        for t in 1100..1250 {
            let (history, vm) = upto(&full, t + 1);
            let f = bounds
                .forecast(&history, Resource::Cpu, &vm, &scales, &model, 1, None)
                .unwrap();
            // Asking again at the same step changes nothing.
            let again = bounds
                .forecast(&history, Resource::Cpu, &vm, &scales, &model, 1, None)
                .unwrap();
            assert_eq!(f, again);
            online.push(f[1]);
        }
        let walked = adaptive::forecasts(
            &model,
            &full,
            &scales,
            3,
            1100..1250,
            augur_predict::SEASON,
            None,
        )
        .unwrap();
        assert_eq!(online, walked);
        // The restless part widened the bounds past the model's own.
        let fixed: Vec<_> = model
            .forecast(
                &full,
                &scales,
                &(1100..1250).map(|t| (t, 3)).collect::<Vec<_>>(),
                None,
            )
            .unwrap();
        let wider = walked
            .iter()
            .zip(&fixed)
            .filter(|(a, f)| a.upper > f.upper)
            .count();
        assert!(wider > 100, "{wider} of 150 wider");
        // A new model generation starts the walk over.
        let (history, vm) = upto(&full, 1250);
        let fresh = bounds
            .forecast(&history, Resource::Cpu, &vm, &scales, &model, 2, None)
            .unwrap();
        let restarted = adaptive::forecasts(
            &model,
            &full,
            &scales,
            3,
            1249..1250,
            augur_predict::SEASON,
            None,
        )
        .unwrap();
        assert_eq!(fresh[1], restarted[0]);
    }
}
