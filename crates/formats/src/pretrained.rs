//! The diffusion models that ship with the book, one call away:
//!
//! ```no_run
//! # extern crate formats; // required for mdbook test
//! # extern crate tch; // required for mdbook test
//! let model = formats::pretrained::fashion_cfg(tch::Device::Cpu).unwrap();
//! ```
//!
//! Files live in `crates/training/pretrained/` with a model card (`*.md`)
//! each. They hold EMA weights only, with the training config in the metadata.
use crate::checkpoint::{self, load_model, LoadedModel, Weights};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};
use training::{Result, TrainError};

/// Where the shipped files are. They stay in the training crate's folder,
/// the path the model cards, scripts and readers' commands name.
pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../training/pretrained");

/// Shipped diffusion models (for `sample --pretrained NAME`).
pub const MODELS: [&str; 1] = ["fashion-cfg"];
pub use crate::checkpoint::EXPORTED as FORMAT;

/// The file of a shipped model.
pub fn path(name: &str) -> Result<PathBuf> {
    if !MODELS.contains(&name) {
        return Err(TrainError::Input(format!(
            "no pretrained diffusion model '{name}': choose one of {}",
            MODELS.join(", ")
        )));
    }
    let p = Path::new(DIR).join(format!("{name}.safetensors"));
    if !p.is_file() {
        return Err(TrainError::Input(format!(
            "{} is missing: restore it with `git checkout -- {}`",
            p.display(),
            p.display()
        )));
    }
    Ok(p)
}

/// A shipped diffusion model by name (its EMA weights).
pub fn model(name: &str, device: Device) -> Result<LoadedModel> {
    load_model(&path(name)?, Weights::Ema, device)
}

/// The class-conditional Fashion-MNIST model, trained with label dropout so
/// that it supports classifier-free guidance (EMA weights).
pub fn fashion_cfg(device: Device) -> Result<LoadedModel> {
    model("fashion-cfg", device)
}

/// Writes the EMA weights of a training checkpoint, with its config, as a
/// small file for shipping (no raw weights, no optimizer state). `notes`
/// become extra metadata (training command, wall time, hardware).
pub fn export(from: &Path, out: &Path, notes: BTreeMap<String, String>) -> Result<()> {
    let bytes = export_bytes(from, notes)?;
    util::write_atomic(out, &bytes).map_err(|e| TrainError::Checkpoint(format!("{e:#}")))
}

/// The bytes [`export`] writes.
pub fn export_bytes(from: &Path, notes: BTreeMap<String, String>) -> Result<Vec<u8>> {
    let ck = checkpoint::load(from, Device::Cpu)?;
    let bad = |m: &str| Err(TrainError::Checkpoint(format!("{}: {m}", from.display())));
    if !ck.metadata.contains_key("config") {
        return bad("no training config in the metadata: not a checkpoint from `train`");
    }
    let tensors: Vec<(String, Tensor)> = ck
        .tensors
        .iter()
        .filter(|(k, _)| k.starts_with("ema."))
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    if tensors.is_empty() {
        return bad("no EMA weights");
    }
    let mut meta: BTreeMap<String, String> = ck
        .metadata
        .into_iter()
        .filter(|(k, _)| ["config", "step", "torch"].contains(&k.as_str()))
        .collect();
    meta.insert("format".into(), FORMAT.into());
    meta.extend(notes);
    util::safetensors::to_bytes(&tensors, &meta)
        .map_err(|e| TrainError::Checkpoint(format!("{}: {e:#}", from.display())))
}
