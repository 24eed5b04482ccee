//! Model files on disk: `<dir>/<resource>-<generation>.json`, one generation per training run.
//! At start the newest file of each resource that loads is used; a damaged or foreign one is
//! reported and the next older one tried. The newest [`KEEP`] generations are kept.

use augur_predict::gbt::model_file::ModelInfo;
use augur_predict::gbt::GbtModel;
use std::path::{Path, PathBuf};

/// Generations kept per resource.
pub const KEEP: usize = 3;

/// A model with where it came from.
#[derive(Debug)]
pub struct Loaded {
    pub model: GbtModel,
    pub info: ModelInfo,
    pub generation: u64,
}

/// The generations of `resource` in `dir`, oldest first.
fn generations(dir: &Path, resource: &str) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let prefix = format!("{resource}-");
    let mut found: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            let generation = name
                .strip_prefix(&prefix)?
                .strip_suffix(".json")?
                .parse()
                .ok()?;
            Some((generation, entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// The newest generation of `resource` that loads; what failed is returned beside it.
pub fn load_newest(dir: &Path, resource: &str) -> (Option<Loaded>, Vec<String>) {
    let mut failures = Vec::new();
    for (generation, path) in generations(dir, resource).into_iter().rev() {
        match GbtModel::load(&path) {
            Ok((model, info)) => {
                return (
                    Some(Loaded {
                        model,
                        info,
                        generation,
                    }),
                    failures,
                )
            }
            Err(error) => failures.push(error),
        }
    }
    (None, failures)
}

/// Saves `model` as the next generation of `resource` and drops generations beyond [`KEEP`].
pub fn save(
    dir: &Path,
    resource: &str,
    model: GbtModel,
    info: ModelInfo,
) -> Result<Loaded, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let generation = generations(dir, resource).last().map_or(1, |(g, _)| g + 1);
    let path = dir.join(format!("{resource}-{generation:06}.json"));
    model.save(&path, &info)?;
    let all = generations(dir, resource);
    for (_, old) in all.iter().take(all.len().saturating_sub(KEEP)) {
        let _ = std::fs::remove_file(old);
    }
    Ok(Loaded {
        model,
        info,
        generation,
    })
}
