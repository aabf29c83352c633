//! File formats beside the algorithms: what the core crates read and write,
//! kept out of them.
//! - [`checkpoint`]: training checkpoints (save, resume, rotate) and models
//!   loaded for sampling;
//! - [`pretrained`]: the diffusion models that ship with the book;
//! - [`diffusers`]: diffusers' `UNet2DModel` config.json and saved model or
//!   pipeline folders;
//! - [`trace`]: a sampling run's per-step records as one safetensors file.
pub mod checkpoint;
pub mod diffusers;
pub mod pretrained;
pub mod trace;

pub use checkpoint::{load_model, LoadedModel, TrainerFile, Weights};
pub use diffusers::{load_diffusers, unet_config_from_json, unet_config_to_json};
