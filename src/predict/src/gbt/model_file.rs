//! Model files: one JSON document per trained model, versioned, written atomically.
//!
//! ```text
//! { "format": "augur-gbt", "version": 1, "metric": "cpu", "trained_at_s": ..., "series": ...,
//!   "step_s": 300, "columns": ["mem", "disk", "net"],
//!   "horizons": [1, 3, 12], "quantiles": [...], "others": 3, "level": 0.95,
//!   "booster": "<forust-ml JSON>" }
//! ```
//!
//! A file of another format or version, or one whose parts disagree, is refused with a message
//! that says which; the caller keeps whatever model it had.

use super::GbtModel;
use forust_ml::GradientBooster;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FORMAT: &str = "augur-gbt";
pub const VERSION: u32 = 1;

/// What a model file says about itself besides the trees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub metric: String,
    pub trained_at_s: i64,
    /// How many series it was trained on.
    pub series: usize,
    /// Seconds per step of the series it was trained on; forecasts need the same step.
    pub step_s: i64,
    /// Names of the extra columns, in the order the model takes them.
    pub columns: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    format: String,
    version: u32,
    #[serde(flatten)]
    info: ModelInfo,
    horizons: Vec<usize>,
    quantiles: Vec<f64>,
    others: usize,
    level: f64,
    booster: String,
}

impl GbtModel {
    /// The model as a model file's text.
    pub fn to_file_text(&self, info: &ModelInfo) -> Result<String, String> {
        let file = ModelFile {
            format: FORMAT.into(),
            version: VERSION,
            info: info.clone(),
            horizons: self.horizons.clone(),
            quantiles: self.quantiles.clone(),
            others: self.others,
            level: self.level,
            booster: self.booster.json_dump().map_err(|e| e.to_string())?,
        };
        serde_json::to_string(&file).map_err(|e| e.to_string())
    }

    /// Parses and checks a model file's text.
    pub fn from_file_text(text: &str) -> Result<(GbtModel, ModelInfo), String> {
        let file: ModelFile =
            serde_json::from_str(text).map_err(|e| format!("not a model file: {e}"))?;
        if file.format != FORMAT {
            return Err(format!("format {:?}, expected {FORMAT:?}", file.format));
        }
        if file.version != VERSION {
            return Err(format!(
                "model file version {}, this build reads version {VERSION}",
                file.version
            ));
        }
        let ascending = file.horizons.windows(2).all(|w| w[0] < w[1]);
        if file.horizons.is_empty()
            || file.horizons[0] == 0
            || !ascending
            || file.quantiles.len() != file.horizons.len()
            || file.quantiles.iter().any(|q| !q.is_finite())
            || !(0.5..1.0).contains(&file.level)
            || file.info.step_s <= 0
            || file.info.columns.len() != file.others
        {
            return Err("horizons, quantiles or level are inconsistent".into());
        }
        let booster = GradientBooster::from_json(&file.booster)
            .map_err(|e| format!("the trees do not parse: {e}"))?;
        let compact = super::compact::CompactTrees::of(&booster)?;
        if compact
            .max_feature()
            .is_some_and(|f| f >= super::features::count(file.others))
        {
            return Err("the trees read features this model does not have".into());
        }
        Ok((
            GbtModel {
                compact,
                booster,
                horizons: file.horizons,
                quantiles: file.quantiles,
                others: file.others,
                level: file.level,
            },
            file.info,
        ))
    }

    /// Writes the model to `path` through a temporary file and a rename, so a reader never
    /// sees half a model.
    pub fn save(&self, path: &Path, info: &ModelInfo) -> Result<(), String> {
        let text = self.to_file_text(info)?;
        let staging = path.with_extension("json.new");
        std::fs::write(&staging, text)
            .and_then(|()| std::fs::File::open(&staging)?.sync_all())
            .and_then(|()| std::fs::rename(&staging, path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    pub fn load(path: &Path) -> Result<(GbtModel, ModelInfo), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_file_text(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}
