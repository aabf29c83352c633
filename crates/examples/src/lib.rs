//! The command-line pieces that the book's examples share.
//!
//! Each example flattens the groups it needs (`#[command(flatten)]`) and keeps
//! only its own flags:
//! - [`DeviceArgs`]: `--device auto|cpu|cuda|cuda:N`;
//! - [`ModelArgs`]: where the diffusion model comes from (`--checkpoint FILE`,
//!   `--pretrained NAME` or `--diffusers DIR`, with `--raw-weights`), loaded
//!   into a [`Model`] that holds the schedule and makes a
//!   [`reverse::Pipeline`];
//! - [`SamplerArgs`]: `--sampler ddpm|ddim` and its settings, as a
//!   [`reverse::Sampler`].
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use forward::Schedule;
use reverse::{Pipeline, Sampler, Spacing, Variance};
use std::path::PathBuf;
use tch::Device;
use training::{LoadedModel, Weights};

/// `--device`.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl DeviceArgs {
    pub fn device(&self) -> Result<Device> {
        util::parse_device(&self.device)
    }
}

/// Where the diffusion model comes from.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A checkpoint written by `train`.
    #[arg(long, conflicts_with_all = ["pretrained", "diffusers"])]
    pub checkpoint: Option<PathBuf>,
    /// A model that ships with the book (fashion-cfg).
    #[arg(long, conflicts_with = "diffusers")]
    pub pretrained: Option<String>,
    /// A model saved by diffusers: a UNet2DModel folder (config.json and
    /// diffusion_pytorch_model.safetensors) or a pipeline folder with unet/
    /// and scheduler/.
    #[arg(long)]
    pub diffusers: Option<PathBuf>,
    /// Use the raw weights of a checkpoint instead of its EMA.
    #[arg(long)]
    pub raw_weights: bool,
}

/// A loaded diffusion model with its schedule.
pub struct Model {
    pub loaded: LoadedModel,
    pub schedule: Schedule,
    /// Where it came from, for messages: a path, `pretrained:NAME` or `diffusers:DIR`.
    pub source: String,
    pub weights: Weights,
}

impl Model {
    /// The model, its schedule and its prediction type as one sampling pipeline.
    pub fn pipeline(&self) -> Pipeline<'_> {
        Pipeline::new(
            &*self.loaded.model,
            &self.schedule,
            self.loaded.config.prediction,
        )
    }

    /// "step 1800 Ema weights of out/train/ckpt-00001800.safetensors".
    pub fn describe(&self) -> String {
        if self.source.starts_with("diffusers:") {
            format!("the weights of {}", self.source)
        } else {
            format!(
                "step {} {:?} weights of {}",
                self.loaded.step, self.weights, self.source
            )
        }
    }
}

impl ModelArgs {
    pub fn load(&self, device: Device) -> Result<Model> {
        let weights = if self.raw_weights {
            Weights::Raw
        } else {
            Weights::Ema
        };
        let (loaded, source) = match (&self.checkpoint, &self.pretrained, &self.diffusers) {
            (Some(path), _, _) => (
                training::load_model(path, weights, device)?,
                path.display().to_string(),
            ),
            (None, Some(name), _) => {
                if self.raw_weights {
                    bail!("--raw-weights: pretrained models ship only their EMA weights");
                }
                (
                    training::pretrained::model(name, device)?,
                    format!("pretrained:{name}"),
                )
            }
            (None, None, Some(dir)) => {
                if self.raw_weights {
                    bail!("--raw-weights: a diffusers folder holds one set of weights");
                }
                (
                    formats::load_diffusers(dir, device)?,
                    format!("diffusers:{}", dir.display()),
                )
            }
            (None, None, None) => {
                bail!("pass --checkpoint FILE, --pretrained NAME or --diffusers DIR")
            }
        };
        let schedule = loaded.schedule()?;
        Ok(Model {
            loaded,
            schedule,
            source,
            weights,
        })
    }
}

/// `--sampler`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// Ancestral sampling over all T steps (DDPM Algorithm 2).
    Ddpm,
    /// DDIM on a grid of --steps steps.
    Ddim,
}

/// `--variance`: DDPM's two reverse variances.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarianceArg {
    /// σ_t² = β̃_t, the posterior variance.
    Small,
    /// σ_t² = β_t.
    Large,
}

/// `--spacing`: where DDIM's steps sit.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpacingArg {
    Leading,
    Linspace,
    Trailing,
}

/// The sampler and its settings.
#[derive(Args, Debug, Clone)]
pub struct SamplerArgs {
    #[arg(long, value_enum, default_value_t = SamplerKind::Ddim)]
    pub sampler: SamplerKind,
    /// DDIM steps S (1..=T); DDPM always takes T.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// DDIM η ≥ 0 (0 = deterministic).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub eta: f64,
    /// DDIM timestep spacing.
    #[arg(long, value_enum, default_value_t = SpacingArg::Trailing)]
    pub spacing: SpacingArg,
    /// DDPM variance.
    #[arg(long, value_enum, default_value_t = VarianceArg::Small)]
    pub variance: VarianceArg,
    /// Do not clip x̂_0 to [−1, 1].
    #[arg(long)]
    pub no_clip: bool,
}

impl SamplerArgs {
    pub fn sampler(&self) -> Sampler {
        let clip = !self.no_clip;
        match self.sampler {
            SamplerKind::Ddpm => Sampler::Ddpm {
                variance: match self.variance {
                    VarianceArg::Small => Variance::FixedSmall,
                    VarianceArg::Large => Variance::FixedLarge,
                },
                clip,
            },
            SamplerKind::Ddim => Sampler::Ddim {
                steps: self.steps,
                eta: self.eta,
                spacing: match self.spacing {
                    SpacingArg::Leading => Spacing::Leading,
                    SpacingArg::Linspace => Spacing::Linspace,
                    SpacingArg::Trailing => Spacing::Trailing,
                },
                clip,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sampler: SamplerArgs,
        #[command(flatten)]
        model: ModelArgs,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
    }

    #[test]
    fn sampler_flags_become_the_sampler() {
        let ddim = parse(&["--steps", "20", "--eta", "0.5", "--spacing", "leading"]).unwrap();
        assert_eq!(
            ddim.sampler.sampler(),
            Sampler::Ddim {
                steps: 20,
                eta: 0.5,
                spacing: Spacing::Leading,
                clip: true
            }
        );
        let ddpm = parse(&["--sampler", "ddpm", "--variance", "large", "--no-clip"]).unwrap();
        assert_eq!(
            ddpm.sampler.sampler(),
            Sampler::Ddpm {
                variance: Variance::FixedLarge,
                clip: false
            }
        );
    }

    #[test]
    fn unknown_values_and_two_model_sources_are_refused() {
        for bad in [
            &["--sampler", "euler"][..],
            &["--spacing", "even"],
            &["--variance", "medium"],
            &["--checkpoint", "a", "--pretrained", "b"],
            &["--pretrained", "a", "--diffusers", "b"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        let none = parse(&[]).unwrap();
        let err = none.model.load(Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("--checkpoint FILE"), "{err}");
    }
}
