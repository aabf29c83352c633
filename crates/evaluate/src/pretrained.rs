//! The models that ship with the book, one call away:
//!
//! ```no_run
//! # extern crate evaluate; // required for mdbook test
//! # extern crate tch; // required for mdbook test
//! let model = evaluate::pretrained::fashion_cfg(tch::Device::Cpu).unwrap();
//! let classifier = evaluate::pretrained::classifier(tch::Device::Cpu).unwrap();
//! ```
//!
//! Files live in `crates/evaluate/pretrained/` with a model card (`*.md`) each.
use crate::{EvalError, Result, Trained};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};
use training::{LoadedModel, Weights};

/// Where the shipped files are.
pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/pretrained");

/// Shipped diffusion models (for `sample --pretrained NAME`).
pub const MODELS: [&str; 1] = ["fashion-cfg"];
/// The shipped Fashion-MNIST classifier.
pub const CLASSIFIER: &str = "fashion-classifier";
/// The metadata tag of an exported (EMA-only) diffusion model.
pub const FORMAT: &str = "diffusion-executed/pretrained-v1";

/// The file of a shipped model.
pub fn path(name: &str) -> Result<PathBuf> {
    if !MODELS.contains(&name) && name != CLASSIFIER {
        return Err(EvalError::Input(format!(
            "no pretrained model '{name}': choose one of {}",
            MODELS.join(", ")
        )));
    }
    let p = Path::new(DIR).join(format!("{name}.safetensors"));
    if !p.is_file() {
        return Err(EvalError::Input(format!(
            "{} is missing: restore it with `git checkout -- {}`",
            p.display(),
            p.display()
        )));
    }
    Ok(p)
}

/// A shipped diffusion model by name.
pub fn model(name: &str, device: Device) -> Result<LoadedModel> {
    if !MODELS.contains(&name) {
        return Err(EvalError::Input(format!(
            "no pretrained diffusion model '{name}': choose one of {}",
            MODELS.join(", ")
        )));
    }
    Ok(training::load_model(&path(name)?, Weights::Ema, device)?)
}

/// The class-conditional Fashion-MNIST model, trained with label dropout so
/// that it supports classifier-free guidance (EMA weights).
pub fn fashion_cfg(device: Device) -> Result<LoadedModel> {
    model("fashion-cfg", device)
}

/// The Fashion-MNIST classifier used by every metric in the book.
pub fn classifier(device: Device) -> Result<Trained> {
    Trained::load(&path(CLASSIFIER)?, device)
}

/// Writes the EMA weights of a training checkpoint, with its config, as a
/// small file for shipping (no raw weights, no optimizer state). `notes`
/// become extra metadata (training command, wall time, hardware).
pub fn export(checkpoint: &Path, out: &Path, notes: BTreeMap<String, String>) -> Result<()> {
    let ck = training::checkpoint::load(checkpoint, Device::Cpu)?;
    if !ck.metadata.contains_key("config") {
        return Err(EvalError::Input(format!(
            "{}: no training config in the metadata: not a checkpoint from `train`",
            checkpoint.display()
        )));
    }
    let tensors: Vec<(String, Tensor)> = ck
        .tensors
        .iter()
        .filter(|(k, _)| k.starts_with("ema."))
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    if tensors.is_empty() {
        return Err(EvalError::Input(format!("{}: no EMA weights", checkpoint.display())));
    }
    let mut meta: BTreeMap<String, String> = ck
        .metadata
        .into_iter()
        .filter(|(k, _)| ["config", "step", "torch"].contains(&k.as_str()))
        .collect();
    meta.insert("format".into(), FORMAT.into());
    meta.extend(notes);
    training::checkpoint::save(out, &tensors, &meta)?;
    Ok(())
}
