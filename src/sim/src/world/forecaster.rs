//! The proactive policy's forecaster: augur-gbt trained on the past of every VM's CPU, at every
//! step up to the planning horizon, with each bound adapting to its VM's own misses as augurd's
//! do ([`augur_predict::gbt::adaptive`]).

use super::{SimConfig, SimVm};
use augur_predict::gbt::adaptive::AdaptiveWalk;
use augur_predict::gbt::{features, GbtModel, Settings, VmSeries};

/// One VM's forecast at an origin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct VmForecast {
    /// The highest forecast mean and upper bound over the steps up to the horizon: what the
    /// planner weighs, since a host overloaded before the horizon is overloaded all the same.
    pub peak_mean: f64,
    pub peak_upper: f64,
    /// The mean at the horizon itself (for the forecaster's reported accuracy).
    pub at_horizon: f64,
}

#[derive(Default)]
pub(super) struct Forecaster {
    model: Option<GbtModel>,
    trained_at: Option<usize>,
    series: Vec<VmSeries>,
    scales: Vec<Vec<features::Scale>>,
    /// Per VM, one walk per step ahead (1..=horizon); they start over with each new model.
    walks: Vec<Vec<AdaptiveWalk>>,
}

/// CPU demand is never negative; the trace sets no upper limit.
const CLAMP: Option<(f64, f64)> = Some((0.0, f64::MAX));

impl Forecaster {
    pub(super) fn due(&self, t: usize, config: &SimConfig) -> bool {
        self.trained_at
            .is_none_or(|at| t >= at + config.retrain_steps)
    }

    /// Trains on steps `..end` of every VM.
    pub(super) fn train(
        &mut self,
        vms: &[SimVm],
        end: usize,
        config: &SimConfig,
    ) -> Result<(), String> {
        if self.series.is_empty() {
            self.series = vms
                .iter()
                .map(|vm| VmSeries {
                    id: vm.id.clone(),
                    start_s: 0,
                    step_s: config.step_s,
                    target: vm.cpu.clone(),
                    others: Vec::new(),
                })
                .collect();
        }
        let ends = vec![end; vms.len()];
        let settings = Settings {
            level: 0.95,
            // One row per origin, its horizon rotating over the steps: training costs what it
            // would for the one horizon.
            horizons_per_origin: 1,
            ..Settings::default()
        };
        let horizons: Vec<usize> = (1..=config.horizon_steps).collect();
        let model = GbtModel::train(&self.series, &ends, &horizons, &settings)
            .map_err(|e| format!("the forecaster cannot train: {e}"))?;
        self.scales = self
            .series
            .iter()
            .map(|s| features::scales_of(s, end))
            .collect();
        let previous = std::mem::take(&mut self.walks);
        self.walks = (0..vms.len())
            .map(|v| {
                horizons
                    .iter()
                    .enumerate()
                    .map(|(k, &h)| {
                        let mut walk = AdaptiveWalk::new(&model, h);
                        // Which centre suits a VM is its own trait, not the model's: what the
                        // walk learned of it carries over to the new model.
                        if let Some(old) = previous.get(v).and_then(|w| w.get(k)) {
                            walk.centre = old.centre;
                        }
                        walk
                    })
                    .collect()
            })
            .collect();
        self.model = Some(model);
        self.trained_at = Some(end - 1);
        Ok(())
    }

    /// Every VM's forecast from values up to step `t`, origins coming in ascending order.
    pub(super) fn forecast(
        &mut self,
        vms: &[SimVm],
        t: usize,
        config: &SimConfig,
    ) -> Result<Vec<VmForecast>, String> {
        let model = self.model.as_ref().ok_or("the forecaster is not trained")?;
        let origins: Vec<(usize, usize)> = (1..=config.horizon_steps).map(|h| (t, h)).collect();
        let mut out = Vec::with_capacity(vms.len());
        for (v, vm) in vms.iter().enumerate() {
            let raw = model.forecast_raw(&self.series[v], &self.scales[v], &origins)?;
            let mut f = VmForecast {
                peak_mean: 0.0,
                peak_upper: 0.0,
                at_horizon: 0.0,
            };
            for (walk, r) in self.walks[v].iter_mut().zip(&raw) {
                // The walk reads outcomes before `t` only.
                let step = walk.step(t, r, CLAMP, |i| vm.cpu.get(i).copied());
                f.peak_mean = f.peak_mean.max(step.mean);
                f.peak_upper = f.peak_upper.max(step.upper);
                f.at_horizon = step.mean;
            }
            out.push(f);
        }
        Ok(out)
    }
}
