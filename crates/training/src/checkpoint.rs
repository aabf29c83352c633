//! Checkpoints: one safetensors file each (written by `util::safetensors`),
//! copied into a model's variables, and rotated in a folder.
use crate::TrainError;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

pub use util::safetensors::Loaded;

/// About how many parameters a model of `config` has, from its widths alone
/// (within a factor of 2 for the book's layouts), so that an absurd config
/// is refused before its weights are allocated.
pub fn approx_parameters(config: &network::ModelConfig) -> f64 {
    match config {
        network::ModelConfig::Seed(c) => 83.0 * (c.channels as f64).powi(2),
        network::ModelConfig::Unet(c) => {
            let lpb = c.layers_per_block as f64;
            let sq = |v: i64| (v as f64).powi(2);
            let levels: f64 = c
                .block_out_channels
                .iter()
                .map(|&v| (46.0 * lpb + 36.0) * sq(v))
                .sum();
            let last = c.block_out_channels.last().copied().unwrap_or(0);
            let first = c.block_out_channels.first().copied().unwrap_or(0);
            levels + 40.0 * sq(last) + 20.0 * sq(first)
        }
    }
}

/// Refuses a model config whose weights (`copies` float32 copies of them:
/// 1 to sample, 4 to train with EMA and Adam) would not fit in memory, or,
/// when it comes from a file holding `file_weights` numbers, is far larger
/// than those weights (a config that does not describe them).
pub fn check_model_size(
    config: &network::ModelConfig,
    copies: f64,
    file_weights: Option<usize>,
    source: &str,
) -> Result<(), TrainError> {
    let params = approx_parameters(config);
    if let Some(have) = file_weights {
        if params > 4.0 * have as f64 + 1e6 {
            return Err(TrainError::Checkpoint(format!(
                "{source}: its config describes a model of about {:.0} M parameters but the file holds {:.2} M weights: the config metadata does not match the weights (a damaged or edited file)",
                params / 1e6,
                have as f64 / 1e6
            )));
        }
    }
    util::ensure_memory(
        params * 4.0 * copies * 1.5,
        &format!(
            "{source}: a model of about {:.0} M parameters",
            params / 1e6
        ),
        "use a smaller model (fewer channels)",
    )
    .map_err(|e| TrainError::Input(format!("{e:#}")))
}

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

    /// The newest checkpoint that loads whole (complete, every tensor
    /// finite), skipping damaged ones: what a run can fall back to.
    pub fn latest_good(&self) -> Option<PathBuf> {
        self.list()
            .into_iter()
            .rev()
            .map(|(_, p)| p)
            .find(|p| load(p, Device::Cpu).is_ok())
    }

    /// Takes the folder for one training run: a second run on the same
    /// folder is refused, naming the first one's PID. A lock left by a run
    /// that was killed is taken over, with a note on stderr. The folder is
    /// created if needed; the lock goes when the returned value is dropped.
    pub fn lock(&self) -> Result<util::lock::FolderLock, TrainError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            TrainError::Input(format!("cannot create {} ({e})", self.dir.display()))
        })?;
        let (lock, taken) = util::lock::FolderLock::take(&self.dir, "training run")
            .map_err(|e| TrainError::Input(format!("{e:#}")))?;
        if let util::lock::Taken::Stale(pid) = taken {
            eprintln!(
                "note: took over the lock of {}: its training run (PID {pid}) is no longer running",
                self.dir.display()
            );
        }
        Ok(lock)
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
