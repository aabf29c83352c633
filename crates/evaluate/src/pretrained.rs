//! The classifier that ships with the book, one call away:
//!
//! ```no_run
//! # extern crate evaluate; // required for mdbook test
//! # extern crate tch; // required for mdbook test
//! let classifier = evaluate::pretrained::classifier(tch::Device::Cpu).unwrap();
//! ```
//!
//! The file lives in `crates/evaluate/pretrained/` with its model card. The
//! shipped diffusion models are in `formats::pretrained`.
use crate::{EvalError, Result, Trained};
use std::path::{Path, PathBuf};
use tch::Device;

/// Where the shipped classifier is.
pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/pretrained");

/// The shipped Fashion-MNIST classifier.
pub const CLASSIFIER: &str = "fashion-classifier";

/// The file of the shipped classifier.
pub fn path() -> Result<PathBuf> {
    let p = Path::new(DIR).join(format!("{CLASSIFIER}.safetensors"));
    if !p.is_file() {
        return Err(EvalError::Input(format!(
            "{} is missing: restore it with `git checkout -- {}`",
            p.display(),
            p.display()
        )));
    }
    Ok(p)
}

/// The Fashion-MNIST classifier used by every metric in the book.
pub fn classifier(device: Device) -> Result<Trained> {
    Trained::load(&path()?, device)
}
