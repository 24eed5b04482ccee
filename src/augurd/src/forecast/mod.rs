//! Online forecasting: one `augur-gbt` model per resource, trained in the background on every
//! VM's stored history, kept on disk by generation and reloaded at start; forecasts of any
//! stored VM for `augurctl predict` and the orchestrator, their upper bounds adapted to each
//! VM's own misses (`adaptive_bounds`).

mod adaptive_bounds;
pub mod history;
pub mod model_dir;

use crate::config::ForecastConfig;
use augur_admin::{HorizonForecast, PredictReply, ResourceForecast, WorkloadClassReply};
use augur_predict::classify::{ClassFeatures, Classifier, UsageHistory};
use augur_predict::gbt::model_file::ModelInfo;
use augur_predict::gbt::{features, GbtModel, Settings, VmSeries};
use history::{Resource, VmHistory, RESOURCES};
use model_dir::Loaded;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use tracing::{info, warn};

/// The columns a model of `target` takes beside it: the other resources, then the features.
fn columns_for(target: Resource, features: &[String]) -> Vec<String> {
    RESOURCES
        .iter()
        .filter(|r| **r != target)
        .map(|r| r.name().to_string())
        .chain(features.iter().cloned())
        .collect()
}

fn series_of(history: &VmHistory, target: Resource, columns: &[String]) -> VmSeries {
    VmSeries {
        id: history.id.to_string(),
        start_s: history.start_s,
        step_s: history.step_s,
        target: history.column(target.name()),
        others: columns.iter().map(|c| history.column(c)).collect(),
    }
}

#[derive(Debug)]
pub struct Forecaster {
    config: ForecastConfig,
    dir: PathBuf,
    models: RwLock<BTreeMap<Resource, Arc<Loaded>>>,
    classifier: Option<Classifier>,
    /// Why the last training run produced no model, per resource.
    waiting: Mutex<BTreeMap<Resource, String>>,
    /// Where each VM's upper bounds have adapted to.
    adaptive: Mutex<adaptive_bounds::AdaptiveBounds>,
}

impl Forecaster {
    /// Loads the newest model of each resource from `dir`.
    pub fn open(config: ForecastConfig, dir: PathBuf) -> Self {
        let mut models = BTreeMap::new();
        for resource in RESOURCES {
            let (loaded, failures) = model_dir::load_newest(&dir, resource.name());
            for failure in failures {
                warn!(resource = resource.name(), %failure, "model file skipped");
            }
            let Some(loaded) = loaded else {
                continue;
            };
            // A model made for other columns, another step or fewer horizons would be fed the
            // wrong inputs: it waits for the next training instead.
            let columns = columns_for(resource, &config.features);
            let steps: Vec<usize> = config
                .horizons_s
                .iter()
                .map(|h| (h / config.step_s) as usize)
                .collect();
            let mismatch = if loaded.info.columns != columns {
                Some(format!(
                    "columns {:?}, configured {columns:?}",
                    loaded.info.columns
                ))
            } else if loaded.info.step_s != config.step_s as i64 {
                Some(format!(
                    "step {} s, configured {} s",
                    loaded.info.step_s, config.step_s
                ))
            } else if !steps.iter().all(|h| loaded.model.horizons().contains(h)) {
                Some(format!(
                    "horizons {:?} steps, configured {steps:?}",
                    loaded.model.horizons()
                ))
            } else {
                None
            };
            if let Some(why) = mismatch {
                warn!(
                    resource = resource.name(),
                    generation = loaded.generation,
                    why,
                    "model trained for another configuration: not used until retrained"
                );
                continue;
            }
            info!(
                resource = resource.name(),
                generation = loaded.generation,
                "forecast model loaded"
            );
            models.insert(resource, Arc::new(loaded));
        }
        let classifier = Classifier::default_trained()
            .map_err(|error| warn!(%error, "workload classifier unavailable"))
            .ok();
        Self {
            config,
            dir,
            models: RwLock::new(models),
            classifier,
            waiting: Mutex::new(BTreeMap::new()),
            adaptive: Mutex::new(adaptive_bounds::AdaptiveBounds::default()),
        }
    }

    pub fn config(&self) -> &ForecastConfig {
        &self.config
    }

    /// The generation of each loaded model.
    pub fn generations(&self) -> BTreeMap<&'static str, u64> {
        self.models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(r, m)| (r.name(), m.generation))
            .collect()
    }

    fn horizons(&self) -> Vec<usize> {
        self.config
            .horizons_s
            .iter()
            .map(|h| (h / self.config.step_s) as usize)
            .collect()
    }

    /// Trains one model per resource on `histories` and installs those that trained. Runs
    /// without any lock held but the model map's, for the instant of the swap.
    pub fn train(&self, histories: &[VmHistory], now_s: i64) -> usize {
        let settings = Settings {
            level: self.config.level,
            clip: self.config.clip_sigma,
            ..Settings::default()
        };
        let mut trained = 0;
        for resource in RESOURCES {
            let columns = columns_for(resource, &self.config.features);
            let vms: Vec<VmSeries> = histories
                .iter()
                .filter(|h| h.columns.contains_key(resource.name()))
                .map(|h| series_of(h, resource, &columns))
                .collect();
            let ends: Vec<usize> = vms.iter().map(|v| v.target.len()).collect();
            let started = std::time::Instant::now();
            let outcome =
                GbtModel::train(&vms, &ends, &self.horizons(), &settings).and_then(|model| {
                    let info = ModelInfo {
                        metric: resource.name().into(),
                        trained_at_s: now_s,
                        series: vms.len(),
                        step_s: self.config.step_s as i64,
                        columns: columns.clone(),
                    };
                    model_dir::save(&self.dir, resource.name(), model, info)
                });
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            match outcome {
                Ok(loaded) => {
                    info!(
                        resource = resource.name(),
                        generation = loaded.generation,
                        vms = vms.len(),
                        seconds = started.elapsed().as_secs_f64(),
                        "forecast model trained"
                    );
                    waiting.remove(&resource);
                    self.models
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(resource, Arc::new(loaded));
                    trained += 1;
                }
                Err(reason) => {
                    info!(resource = resource.name(), %reason, "no forecast model trained");
                    waiting.insert(resource, reason);
                }
            }
        }
        trained
    }

    /// Forecasts every resource of the VM whose history this is, at the configured horizons.
    pub fn predict(&self, history: &VmHistory) -> PredictReply {
        let mut notes = Vec::new();
        let mut resources = Vec::new();
        let models = self
            .models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for resource in RESOURCES {
            let Some(loaded) = models.get(&resource) else {
                let why = waiting
                    .get(&resource)
                    .cloned()
                    .unwrap_or_else(|| "not trained yet".into());
                notes.push(format!("{}: no model ({why})", resource.name()));
                continue;
            };
            if !history.columns.contains_key(resource.name()) {
                notes.push(format!("{}: this VM has no such history", resource.name()));
                continue;
            }
            match self.forecast_one(history, resource, loaded) {
                Ok(forecast) => resources.push(forecast),
                Err(error) => notes.push(format!("{}: {error}", resource.name())),
            }
        }
        PredictReply {
            vm_id: history.id,
            name: history.name.clone(),
            step_s: history.step_s,
            history_steps: history.len,
            last_step_s: history.start_s + (history.len as i64 - 1) * history.step_s,
            resources,
            class: self.classify(history, &mut notes),
            notes,
        }
    }

    fn forecast_one(
        &self,
        history: &VmHistory,
        resource: Resource,
        loaded: &Loaded,
    ) -> Result<ResourceForecast, String> {
        if loaded.info.step_s != history.step_s {
            return Err(format!(
                "the model was trained on {} s steps, the history has {} s",
                loaded.info.step_s, history.step_s
            ));
        }
        let vm = series_of(history, resource, &loaded.info.columns);
        let t = vm.target.len() - 1;
        let scales = features::scales_of(&vm, vm.target.len());
        let origins: Vec<(usize, usize)> =
            loaded.model.horizons().iter().map(|&h| (t, h)).collect();
        let mut adaptive = self.adaptive.lock().unwrap_or_else(|p| p.into_inner());
        let forecasts = adaptive.forecast(
            history,
            resource,
            &vm,
            &scales,
            &loaded.model,
            loaded.generation,
            Some((0.0, f64::MAX)),
        )?;
        let centres = adaptive.centres(history.id, resource);
        drop(adaptive);
        Ok(ResourceForecast {
            resource: resource.name().into(),
            unit: resource.unit().into(),
            current: vm.target[t],
            model_generation: loaded.generation,
            trained_at_s: loaded.info.trained_at_s,
            level: loaded.model.level(),
            horizons: origins
                .iter()
                .zip(forecasts)
                .enumerate()
                .map(|(k, (&(_, h), f))| HorizonForecast {
                    horizon_s: h as i64 * history.step_s,
                    mean: f.mean,
                    upper: f.upper,
                    centre: centres.get(k).cloned().unwrap_or_default(),
                })
                .collect(),
        })
    }

    fn classify(&self, history: &VmHistory, notes: &mut Vec<String>) -> Option<WorkloadClassReply> {
        let classifier = self.classifier.as_ref()?;
        let attr = |key: &str| {
            history
                .attrs
                .get(key)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| *v > 0.0)
        };
        let (Some(vcpus), Some(memory_mib)) = (attr("vcpus"), attr("memory_mib")) else {
            notes.push("class: the VM's size (vcpus, memory_mib) is not stored".into());
            return None;
        };
        let dirty = history.column("dirty_mib_per_s");
        let usage = UsageHistory {
            step_s: history.step_s,
            cpu: history
                .column("cpu")
                .iter()
                .map(|c| (c / vcpus).clamp(0.0, 1.0))
                .collect(),
            mem_change: dirty
                .iter()
                .map(|d| (d * history.step_s as f64 / memory_mib).clamp(0.0, 1.0))
                .collect(),
            disk_bps: history.column("disk"),
            net_bps: history.column("net"),
        };
        match ClassFeatures::from_history(&usage) {
            Ok(features) => {
                let c = classifier.classify(&features);
                Some(WorkloadClassReply {
                    class: c.class.to_string(),
                    explanation: c.explanation,
                })
            }
            Err(error) => {
                notes.push(format!("class: {error}"));
                None
            }
        }
    }
}
