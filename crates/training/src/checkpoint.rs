//! Checkpoints: one safetensors file each (written by `util::safetensors`),
//! copied into a model's variables, and rotated in a folder.
use crate::TrainError;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

pub use util::safetensors::Loaded;

/// Writes a checkpoint atomically (util::safetensors::save, with this crate's error).
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), TrainError> {
    util::safetensors::save(path, tensors, metadata)
        .map_err(|e| TrainError::Checkpoint(format!("{e:#}")))
}

/// Loads a checkpoint's tensors onto `device`, with its metadata.
pub fn load(path: &Path, device: Device) -> Result<Loaded, TrainError> {
    util::safetensors::load(path, device).map_err(|e| TrainError::Checkpoint(format!("{e:#}")))
}

/// Copies `prefix.<name>` from a checkpoint into each variable, checking that
/// every variable is present with the right shape and nothing is left over.
pub fn copy_into(
    vars: impl IntoIterator<Item = (String, Tensor)>,
    prefix: &str,
    loaded: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<(), TrainError> {
    let mut expected = 0;
    for (name, mut var) in vars {
        expected += 1;
        let key = format!("{prefix}.{name}");
        let Some(src) = loaded.get(&key) else {
            return Err(TrainError::Checkpoint(format!(
                "{}: tensor {key} is missing",
                path.display()
            )));
        };
        if src.size() != var.size() {
            return Err(TrainError::ShapeMismatch {
                path: path.to_path_buf(),
                tensor: key,
                checkpoint: src.size(),
                model: var.size(),
            });
        }
        tch::no_grad(|| var.copy_(src));
    }
    let have = loaded
        .keys()
        .filter(|k| k.starts_with(&format!("{prefix}.")))
        .count();
    if have != expected {
        return Err(TrainError::Checkpoint(format!(
            "{}: {have} tensors under '{prefix}.' but the model has {expected}",
            path.display()
        )));
    }
    Ok(())
}

/// Numbered checkpoints `ckpt-00001000.safetensors` in a folder, keeping the last `keep`.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub dir: PathBuf,
    pub keep: usize,
}

impl Rotation {
    pub fn path(&self, step: i64) -> PathBuf {
        self.dir.join(format!("ckpt-{step:08}.safetensors"))
    }

    /// All checkpoints in the folder, oldest first.
    pub fn list(&self) -> Vec<(i64, PathBuf)> {
        let mut found: Vec<(i64, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let step = name
                    .strip_prefix("ckpt-")?
                    .strip_suffix(".safetensors")?
                    .parse()
                    .ok()?;
                Some((step, e.path()))
            })
            .collect();
        found.sort();
        found
    }

    pub fn latest(&self) -> Option<PathBuf> {
        self.list().pop().map(|(_, p)| p)
    }

    /// Deletes all but the newest `keep` checkpoints (after a successful save).
    pub fn prune(&self) -> Result<(), TrainError> {
        let all = self.list();
        for (_, p) in all.iter().take(all.len().saturating_sub(self.keep.max(1))) {
            std::fs::remove_file(p)
                .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", p.display())))?;
        }
        Ok(())
    }
}
