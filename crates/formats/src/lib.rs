//! File formats beside the algorithms: what the core crates read and write
//! from other tools, kept out of them.
//! - [`diffusers`]: diffusers' `UNet2DModel` config.json and saved model or
//!   pipeline folders;
//! - [`trace`]: a sampling run's per-step records as one safetensors file.
pub mod diffusers;
pub mod trace;

pub use diffusers::{load_diffusers, unet_config_from_json, unet_config_to_json};
