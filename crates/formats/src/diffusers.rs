//! diffusers' files: a `UNet2DModel` config.json in the book's `UNetConfig`
//! and back, and a saved model or pipeline folder loaded for the book's
//! samplers.
use crate::LoadedModel;
use anyhow::{anyhow, Result};
use forward::{Prediction, ScheduleKind};
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Tensor};
use training::optim::AdamConfig;
use training::{LossWeighting, LrSchedule, ModelConfig, TrainConfig};
use unet::UNetConfig;

/// Reads a diffusers `UNet2DModel` config.json. Settings outside the book's
/// subset (a Fourier time embedding, scale-shift norms, other blocks …) are
/// refused by name, never ignored.
pub fn unet_config_from_json(text: &str) -> Result<UNetConfig> {
    let bad = |m: String| anyhow!(m);
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| bad(format!("config.json: {e}")))?;
    if let Some(class) = map.remove("_class_name") {
        if class != "UNet2DModel" {
            return Err(bad(format!(
                "config.json describes a {class}, not a UNet2DModel"
            )));
        }
    }
    for meta in ["_diffusers_version", "_name_or_path", "num_train_timesteps"] {
        map.remove(meta);
    }
    for (field, only) in DEFAULT_ONLY {
        let only: serde_json::Value = serde_json::from_str(only).expect("valid literal");
        if let Some(v) = map.remove(*field) {
            let same =
                v == only || (v.is_number() && only.is_number() && v.as_f64() == only.as_f64());
            if !same {
                return Err(bad(format!(
                        "UNet2DModel setting {field} = {v} is not supported (this book's UNet supports only {only})"
                    )));
            }
        }
    }
    if map.get("attention_head_dim").is_some_and(|v| v.is_array()) {
        return Err(bad(
            "attention_head_dim as a list per block is not supported: give one number".into(),
        ));
    }
    let config: UNetConfig = serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| bad(format!("config.json: {e}")))?;
    config.validate()?;
    Ok(config)
}

/// A complete diffusers config.json for `UNet2DModel.from_config`.
pub fn unet_config_to_json(config: &UNetConfig) -> String {
    let mut v = serde_json::to_value(config).expect("config serialises");
    let map = v.as_object_mut().expect("a struct is an object");
    map.insert("_class_name".into(), "UNet2DModel".into());
    for (field, only) in DEFAULT_ONLY {
        map.insert(
            (*field).into(),
            serde_json::from_str(only).expect("valid literal"),
        );
    }
    serde_json::to_string_pretty(&v).expect("json")
}

/// `UNet2DModel` settings that this subset supports only at diffusers' default.
const DEFAULT_ONLY: &[(&str, &str)] = &[
    ("center_input_sample", "false"),
    ("time_embedding_type", "\"positional\""),
    ("time_embedding_dim", "null"),
    ("mid_block_scale_factor", "1"),
    ("downsample_padding", "1"),
    ("downsample_type", "\"conv\""),
    ("upsample_type", "\"conv\""),
    ("act_fn", "\"silu\""),
    ("attn_norm_num_groups", "null"),
    ("resnet_time_scale_shift", "\"default\""),
    ("class_embed_type", "null"),
];

/// Loads a model saved by diffusers for sampling: a `UNet2DModel` folder
/// (`config.json` + `diffusion_pytorch_model.safetensors`, as
/// `save_pretrained` writes it), or a pipeline folder with `unet/` and
/// `scheduler/` inside. The noise schedule and `prediction_type` come from
/// `scheduler/scheduler_config.json` when there is one, else from diffusers'
/// `DDPMScheduler` defaults (linear β from 1e-4 to 0.02, T = 1000, ε).
/// Settings the book's samplers do not implement are refused by name.
pub fn load_diffusers(dir: &Path, device: Device) -> Result<LoadedModel> {
    let bad = |m: String| anyhow!(m);
    let unet_dir = if dir.join("unet/config.json").is_file() {
        dir.join("unet")
    } else {
        dir.to_path_buf()
    };
    let config_path = unet_dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| {
        bad(format!(
            "{}: {e} (a diffusers UNet2DModel folder holds config.json and diffusion_pytorch_model.safetensors)",
            config_path.display()
        ))
    })?;
    let unet =
        unet_config_from_json(&text).map_err(|e| bad(format!("{}: {e}", config_path.display())))?;
    let weights = unet_dir.join("diffusion_pytorch_model.safetensors");
    if !weights.is_file() {
        let hint = if unet_dir.join("diffusion_pytorch_model.bin").is_file() {
            "only the pickle file diffusion_pytorch_model.bin is there, which this book never loads: re-save it with save_pretrained(..., safe_serialization=True)"
        } else {
            "no weights there"
        };
        return Err(bad(format!("{}: {hint}", weights.display())));
    }
    let (schedule, timesteps, prediction) =
        scheduler_config(&dir.join("scheduler/scheduler_config.json"))?;
    let config = TrainConfig {
        model: ModelConfig::Unet(unet),
        schedule,
        objective: training::Objective::Diffusion,
        zero_terminal_snr: false,
        timesteps,
        prediction,
        loss_weighting: LossWeighting::Uniform,
        optimizer: AdamConfig::default(),
        warmup: 0,
        lr_schedule: LrSchedule::Constant,
        grad_clip: None,
        ema_decay: 0.0,
        p_uncond: 0.0,
        batch_size: 1,
        seed: 0,
        dataset: format!("diffusers:{}", dir.display()),
    };
    config.validate()?;
    let ck = crate::checkpoint::load(&weights, device)?;
    let prefixed: std::collections::HashMap<String, Tensor> = ck
        .tensors
        .into_iter()
        .map(|(k, v)| (format!("unet.{k}"), v))
        .collect();
    let mut vs = VarStore::new(device);
    let model = config.model.build(&vs.root())?;
    crate::checkpoint::copy_into(vs.variables(), "unet", &prefixed, &weights)?;
    vs.freeze();
    Ok(LoadedModel {
        config,
        vs,
        model,
        step: 0,
    })
}

/// (schedule, T, prediction) from a diffusers scheduler_config.json.
fn scheduler_config(path: &Path) -> Result<(ScheduleKind, usize, Prediction)> {
    let bad = |m: String| anyhow!("{}: {m}", path.display());
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok((ScheduleKind::Linear, 1000, Prediction::Epsilon));
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let field = |k: &str| v.get(k).filter(|x| !x.is_null());
    let timesteps = field("num_train_timesteps")
        .and_then(|x| x.as_u64())
        .unwrap_or(1000) as usize;
    let schedule = match field("beta_schedule")
        .and_then(|x| x.as_str())
        .unwrap_or("linear")
    {
        "linear" => {
            let start = field("beta_start").and_then(|x| x.as_f64()).unwrap_or(1e-4);
            let end = field("beta_end").and_then(|x| x.as_f64()).unwrap_or(0.02);
            if (start - 1e-4).abs() > 1e-12 || (end - 0.02).abs() > 1e-12 {
                return Err(bad(format!("a linear schedule from {start} to {end} is not supported (the book's runs from 1e-4 to 0.02)")));
            }
            ScheduleKind::Linear
        }
        "squaredcos_cap_v2" => ScheduleKind::Cosine,
        other => {
            return Err(bad(format!(
                "beta_schedule \"{other}\" is not supported: use linear or squaredcos_cap_v2"
            )))
        }
    };
    if field("trained_betas").is_some() {
        return Err(bad("trained_betas are not supported".into()));
    }
    if field("rescale_betas_zero_snr").and_then(|x| x.as_bool()) == Some(true) {
        return Err(bad("rescale_betas_zero_snr = true is not supported".into()));
    }
    let prediction = match field("prediction_type")
        .and_then(|x| x.as_str())
        .unwrap_or("epsilon")
    {
        "epsilon" => Prediction::Epsilon,
        "v_prediction" => Prediction::Velocity,
        "sample" => Prediction::Sample,
        other => return Err(bad(format!("prediction_type \"{other}\" is not supported"))),
    };
    Ok((schedule, timesteps, prediction))
}
