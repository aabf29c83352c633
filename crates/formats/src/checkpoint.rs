//! Checkpoints: one safetensors file each (written by `util::safetensors`),
//! copied into a model's variables, and rotated in a folder. A training
//! run's whole state (model, EMA, Adam moments, step, config) saves and
//! resumes through [`TrainerFile`]; a model for sampling loads with
//! [`load_model`].
use forward::Schedule;
use network::NoisePredictor;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Device, Tensor};
use training::{ModelConfig, Result, TrainConfig, TrainError, Trainer};

pub use util::safetensors::Loaded;

/// The metadata tag of an exported (EMA-only) diffusion model, which cannot
/// resume training (`crate::pretrained::export` writes it).
pub const EXPORTED: &str = "diffusion-executed/pretrained-v1";

/// Refuses a model config from a file holding `file_weights` numbers when it
/// is far larger than those weights (a config that does not describe them),
/// or when `copies` float32 copies of its weights would not fit in memory.
pub fn check_model_size(
    config: &ModelConfig,
    copies: f64,
    file_weights: usize,
    source: &str,
) -> Result<()> {
    let params = config.approx_parameters();
    if params > 4.0 * file_weights as f64 + 1e6 {
        return Err(TrainError::Checkpoint(format!(
            "{source}: its config describes a model of about {:.0} M parameters but the file holds {:.2} M weights: the config metadata does not match the weights (a damaged or edited file)",
            params / 1e6,
            file_weights as f64 / 1e6
        )));
    }
    config.check_memory(copies, source)
}

/// Writes a checkpoint atomically (util::safetensors::save, with this crate's error).
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    util::safetensors::save(path, tensors, metadata)
        .map_err(|e| TrainError::Checkpoint(format!("{e:#}")))
}

/// Loads a checkpoint's tensors onto `device`, with its metadata.
pub fn load(path: &Path, device: Device) -> Result<Loaded> {
    util::safetensors::load(path, device).map_err(|e| TrainError::Checkpoint(format!("{e:#}")))
}

/// Copies `prefix.<name>` from a checkpoint into each variable, checking that
/// every variable is present with the right shape and nothing is left over.
pub fn copy_into(
    vars: impl IntoIterator<Item = (String, Tensor)>,
    prefix: &str,
    loaded: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
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
    pub fn lock(&self) -> Result<util::lock::FolderLock> {
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
    pub fn prune(&self) -> Result<()> {
        let all = self.list();
        for (_, p) in all.iter().take(all.len().saturating_sub(self.keep.max(1))) {
            std::fs::remove_file(p)
                .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", p.display())))?;
        }
        Ok(())
    }
}

/// Saving and resuming a [`Trainer`]: `use formats::checkpoint::TrainerFile`,
/// then `trainer.save(path)` and `Trainer::load(path, device)`. A resumed run
/// continues exactly where the saved one stopped (the random state of each
/// step is a function of the seed and the step).
pub trait TrainerFile: Sized {
    fn save(&self, path: &Path) -> Result<()>;
    fn load(path: &Path, device: Device) -> Result<Self>;
}

impl TrainerFile for Trainer {
    /// The checkpoint: model, EMA, Adam moments; step, config and versions as metadata.
    fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (prefix, vs) in [("model", &self.vs), ("ema", &self.ema_vs)] {
            tensors.extend(
                vs.variables()
                    .into_iter()
                    .map(|(n, t)| (format!("{prefix}.{n}"), t)),
            );
        }
        tensors.extend(self.opt.state());
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let mut meta = BTreeMap::new();
        meta.insert("format".into(), "diffusion-executed/checkpoint-v1".into());
        meta.insert(
            "config".into(),
            serde_json::to_string(&self.config).expect("config serialises"),
        );
        meta.insert("step".into(), self.step.to_string());
        meta.insert("adam_t".into(), self.opt.t.to_string());
        meta.insert(
            "rng".into(),
            format!("reseeded per step from (seed = {}, step)", self.config.seed),
        );
        meta.insert("torch".into(), env!("DIFFUSION_TORCH_VERSION").into());
        save(path, &tensors, &meta)
    }

    /// Restores a run from a checkpoint written by [`TrainerFile::save`].
    fn load(path: &Path, device: Device) -> Result<Self> {
        let ck = load(path, device)?;
        if ck.metadata.get("format").map(String::as_str) == Some(EXPORTED) {
            return Err(TrainError::Checkpoint(format!(
                "{}: an exported model (EMA weights only, no optimizer state) cannot resume training: resume from a ckpt-*.safetensors written by `train`",
                path.display()
            )));
        }
        let config = read_config(&ck.metadata, path)?;
        let in_file: usize = ck.tensors.values().map(|t| t.numel()).sum();
        check_model_size(&config.model, 4.0, in_file, &path.display().to_string())?;
        let mut tr = Trainer::new(config, device)?;
        copy_into(tr.vs.variables(), "model", &ck.tensors, path)?;
        copy_into(tr.ema_vs.variables(), "ema", &ck.tensors, path)?;
        for (prefix, bufs) in tr.opt.moments() {
            copy_into(bufs, prefix, &ck.tensors, path)?;
        }
        let num = |k: &str| -> Result<i64> {
            ck.metadata
                .get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    TrainError::Checkpoint(format!("{}: metadata '{k}' missing", path.display()))
                })
        };
        tr.step = num("step")?;
        tr.opt.t = num("adam_t")?;
        Ok(tr)
    }
}

fn read_config(meta: &BTreeMap<String, String>, path: &Path) -> Result<TrainConfig> {
    let raw = meta.get("config").ok_or_else(|| {
        TrainError::Checkpoint(format!(
            "{}: no 'config' metadata: not a checkpoint written by this book's trainer",
            path.display()
        ))
    })?;
    serde_json::from_str(raw).map_err(|e| {
        TrainError::Checkpoint(format!("{}: bad config metadata ({e})", path.display()))
    })
}

/// Which weights to sample from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    Ema,
    Raw,
}

/// A trained model for sampling: its config and weights.
pub struct LoadedModel {
    pub config: TrainConfig,
    pub vs: VarStore,
    pub model: Box<dyn NoisePredictor>,
    pub step: i64,
}

impl LoadedModel {
    /// The noise schedule the model was trained with, on the model's device.
    pub fn schedule(&self) -> Result<Schedule> {
        Ok(self.config.noise_schedule(self.vs.device())?)
    }
}

/// Loads just the model (EMA by default) from a checkpoint, for sampling.
pub fn load_model(path: &Path, weights: Weights, device: Device) -> Result<LoadedModel> {
    let ck = load(path, device)?;
    let config = read_config(&ck.metadata, path)?;
    let in_file: usize = ck.tensors.values().map(|t| t.numel()).sum();
    check_model_size(&config.model, 1.0, in_file, &path.display().to_string())?;
    let mut vs = VarStore::new(device);
    let model = config.model.build(&vs.root())?;
    let prefix = match weights {
        Weights::Ema => "ema",
        Weights::Raw => "model",
    };
    if weights == Weights::Raw && !ck.tensors.keys().any(|k| k.starts_with("model.")) {
        return Err(TrainError::Input(format!(
            "{}: --raw-weights, but this file holds only EMA weights (an exported model): drop --raw-weights",
            path.display()
        )));
    }
    copy_into(vs.variables(), prefix, &ck.tensors, path)?;
    vs.freeze();
    let step = ck
        .metadata
        .get("step")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(LoadedModel {
        config,
        vs,
        model,
        step,
    })
}
