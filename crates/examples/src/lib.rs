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
//!   [`reverse::Sampler`];
//! - [`check_sampling_memory`] and [`check_images`]: refusals, before any
//!   work, of runs that cannot fit and data of the wrong size.
//!
//! Every example that writes files registers them first in a
//! [`util::outputs::OutputSet`], which checks them before the work and writes
//! them all-or-nothing.
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use formats::{LoadedModel, Weights};
use forward::{Prediction, Schedule};
use network::NoisePredictor;
use reverse::{FlowPipeline, FlowSampler, FlowSolver, Pipeline, Sampler, SigmaSpacing, Spacing};
use reverse::{StepRecord, Variance};
use std::path::PathBuf;
use tch::{Device, Tensor};
use training::{LossWeighting, Objective};
use util::outputs::OutputSet;

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

    /// Whether this is a rectified-flow model (the "Flow matching" chapter).
    pub fn is_flow(&self) -> bool {
        self.loaded.config.objective == Objective::RectifiedFlow
    }

    /// Samples with `predictor` (this model, or a guided one in front of it)
    /// and a sampler of this model's kind.
    pub fn sample_observed(
        &self,
        predictor: &dyn NoisePredictor,
        sampler: &AnySampler,
        x_big_t: &Tensor,
        y: Option<&Tensor>,
        observe: &mut dyn FnMut(&StepRecord),
    ) -> Result<Tensor> {
        Ok(match sampler {
            AnySampler::Diffusion(s) => self
                .pipeline()
                .with_model(predictor)
                .sample_observed(s, x_big_t, y, observe)?,
            AnySampler::Flow(f) => {
                FlowPipeline::new(predictor).sample_observed(f, x_big_t, y, observe)?
            }
        })
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
    /// Registers the model's files as inputs, so no output can replace them.
    pub fn register(&self, outs: &mut OutputSet) -> Result<()> {
        if let Some(p) = &self.checkpoint {
            outs.input("--checkpoint", p)?;
        }
        if let Some(d) = &self.diffusers {
            for f in [
                "diffusion_pytorch_model.safetensors",
                "config.json",
                "unet/diffusion_pytorch_model.safetensors",
                "unet/config.json",
                "scheduler/scheduler_config.json",
            ] {
                outs.input("--diffusers", &d.join(f))?;
            }
        }
        Ok(())
    }

    /// Loads a diffusion model, and refuses a rectified flow (whose samplers
    /// only `sample` runs).
    pub fn load(&self, device: Device) -> Result<Model> {
        let model = self.load_any(device)?;
        if model.is_flow() {
            bail!("{} is a rectified-flow model, which this example does not sample: draw its samples with `sample --sampler euler` (or heun)", model.source);
        }
        Ok(model)
    }

    /// Loads a diffusion or a rectified-flow model.
    pub fn load_any(&self, device: Device) -> Result<Model> {
        let weights = if self.raw_weights {
            Weights::Raw
        } else {
            Weights::Ema
        };
        let (loaded, source) = match (&self.checkpoint, &self.pretrained, &self.diffusers) {
            (Some(path), _, _) => (
                formats::load_model(path, weights, device)?,
                path.display().to_string(),
            ),
            (None, Some(name), _) => {
                if self.raw_weights {
                    bail!("--raw-weights: pretrained models ship only their EMA weights");
                }
                (
                    formats::pretrained::model(name, device)?,
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
    /// Euler's method on the probability-flow ODE (DDIM η = 0 on the same grid).
    Euler,
    /// Heun's second-order method (EDM Algorithm 1): 2·steps − 1 evaluations.
    Heun,
    /// DPM-Solver++(2M), multistep.
    DpmSolverPp,
}

/// A sampler of either kind of model.
#[derive(Debug, Clone, PartialEq)]
pub enum AnySampler {
    Diffusion(Sampler),
    Flow(FlowSampler),
}

impl AnySampler {
    /// Checks the settings; returns the network evaluations a sample costs.
    pub fn check(&self, s: &Schedule) -> Result<usize> {
        Ok(match self {
            AnySampler::Diffusion(d) => d.check(s)?,
            AnySampler::Flow(f) => f.check()?,
        })
    }
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

/// The sampler and its settings. A setting another sampler reads is refused
/// (it would do nothing): `--variance` with anything but DDPM, `--steps`,
/// `--eta` or `--spacing` with DDPM, `--eta` with the ODE solvers, `--karras`
/// with DDPM and DDIM.
#[derive(Args, Debug, Clone)]
pub struct SamplerArgs {
    #[arg(long, value_enum, default_value_t = SamplerKind::Ddim)]
    pub sampler: SamplerKind,
    /// Steps S of DDIM or an ODE solver (1..=T, default 50); DDPM always takes T.
    #[arg(long)]
    pub steps: Option<usize>,
    /// DDIM η in [0, 1] (0 = deterministic, the default).
    #[arg(long, allow_negative_numbers = true)]
    pub eta: Option<f64>,
    /// DDIM timestep spacing (default trailing).
    #[arg(long, value_enum)]
    pub spacing: Option<SpacingArg>,
    /// DDPM variance (default small).
    #[arg(long, value_enum)]
    pub variance: Option<VarianceArg>,
    /// ODE solvers: Karras' σ spacing with this ρ (EDM uses 7) instead of --spacing.
    #[arg(long, allow_negative_numbers = true)]
    pub karras: Option<f64>,
    /// Do not clip x̂_0 to [−1, 1].
    #[arg(long)]
    pub no_clip: bool,
    /// Flow models: time shift s, t ↦ s t / (1 + (s − 1) t) (default 1, none).
    #[arg(long)]
    pub shift: Option<f64>,
}

impl SamplerArgs {
    /// The sampler for `model`: a flow model takes `--sampler euler|heun`
    /// with `--steps` and `--shift`, and nothing else.
    pub fn sampler_for(&self, model: &Model) -> Result<AnySampler> {
        if !model.is_flow() {
            return Ok(AnySampler::Diffusion(self.sampler()?));
        }
        let solver = match self.sampler {
            SamplerKind::Euler => FlowSolver::Euler,
            SamplerKind::Heun => FlowSolver::Heun,
            other => bail!(
                "{} is a rectified-flow model: sample it with --sampler euler or heun, not {}",
                model.source,
                other
                    .to_possible_value()
                    .map_or_else(String::new, |v| v.get_name().to_string())
            ),
        };
        let unused = [
            ("--eta", self.eta.is_some()),
            ("--spacing", self.spacing.is_some()),
            ("--variance", self.variance.is_some()),
            ("--karras", self.karras.is_some()),
        ];
        if let Some((flag, _)) = unused.iter().find(|f| f.1) {
            bail!("{flag} does nothing with a rectified-flow model: drop it (its samplers read --steps, --shift and --no-clip)");
        }
        let f = FlowSampler {
            solver,
            steps: self.steps.unwrap_or(50),
            shift: self.shift.unwrap_or(1.0),
            clip: !self.no_clip,
        };
        f.check()?;
        Ok(AnySampler::Flow(f))
    }

    /// The sampler of a diffusion model.
    pub fn sampler(&self) -> Result<Sampler> {
        if self.shift.is_some() {
            bail!("--shift does nothing with a diffusion model: it moves a rectified flow's time grid; drop it");
        }
        let clip = !self.no_clip;
        let refuse = |flags: &[(&str, bool)], what: &str| -> Result<()> {
            match flags.iter().find(|f| f.1) {
                Some((flag, _)) => bail!("{flag} does nothing with --sampler {what}: drop it, or choose a sampler that reads it"),
                None => Ok(()),
            }
        };
        let spacing = match self.spacing.unwrap_or(SpacingArg::Trailing) {
            SpacingArg::Leading => Spacing::Leading,
            SpacingArg::Linspace => Spacing::Linspace,
            SpacingArg::Trailing => Spacing::Trailing,
        };
        let steps = self.steps.unwrap_or(50);
        Ok(match self.sampler {
            SamplerKind::Ddpm => {
                refuse(
                    &[
                        ("--steps (a DDIM setting)", self.steps.is_some()),
                        ("--eta (a DDIM setting)", self.eta.is_some()),
                        ("--spacing (a DDIM setting)", self.spacing.is_some()),
                        ("--karras", self.karras.is_some()),
                    ],
                    "ddpm (which takes all T steps)",
                )?;
                Sampler::Ddpm {
                    variance: match self.variance.unwrap_or(VarianceArg::Small) {
                        VarianceArg::Small => Variance::FixedSmall,
                        VarianceArg::Large => Variance::FixedLarge,
                    },
                    clip,
                }
            }
            SamplerKind::Ddim => {
                refuse(
                    &[
                        (
                            "--variance (a DDPM setting; use --eta for DDIM's noise)",
                            self.variance.is_some(),
                        ),
                        ("--karras (an ODE solver's setting)", self.karras.is_some()),
                    ],
                    "ddim",
                )?;
                Sampler::Ddim {
                    steps,
                    eta: self.eta.unwrap_or(0.0),
                    spacing,
                    clip,
                }
            }
            kind => {
                refuse(
                    &[
                        ("--variance (a DDPM setting)", self.variance.is_some()),
                        (
                            "--eta (DDIM's noise; the ODE solvers add none)",
                            self.eta.is_some(),
                        ),
                        (
                            "--spacing together with --karras",
                            self.spacing.is_some() && self.karras.is_some(),
                        ),
                    ],
                    "euler, heun or dpm-solver-pp",
                )?;
                let sigmas = match self.karras {
                    Some(rho) if !(rho.is_finite() && rho > 0.0) => {
                        bail!("--karras {rho}: ρ must be a positive number (EDM uses 7)")
                    }
                    Some(rho) => SigmaSpacing::Karras { rho },
                    None => SigmaSpacing::Timesteps { spacing },
                };
                match kind {
                    SamplerKind::Euler => Sampler::Euler {
                        steps,
                        sigmas,
                        clip,
                    },
                    SamplerKind::Heun => Sampler::Heun {
                        steps,
                        sigmas,
                        clip,
                    },
                    _ => Sampler::DpmSolverPp {
                        steps,
                        sigmas,
                        clip,
                    },
                }
            }
        })
    }
}

/// Reads each `--input LABEL=FILE` (split at the last "=", so a label may
/// hold "=" but a file name may not) and registers FILE as an input.
pub fn labelled_inputs(outs: &mut OutputSet, specs: &[String]) -> Result<Vec<(String, PathBuf)>> {
    specs
        .iter()
        .map(|spec| {
            let Some((label, file)) = spec.rsplit_once('=') else {
                bail!("--input {spec:?}: write it as LABEL=FILE, e.g. \"DDIM-50=samples.safetensors\"");
            };
            outs.input("--input", file.as_ref())?;
            Ok((label.to_string(), PathBuf::from(file)))
        })
        .collect()
}

/// `--prediction`: what the network is trained to output.
pub fn parse_prediction(s: &str) -> std::result::Result<Prediction, String> {
    match s {
        "eps" | "epsilon" => Ok(Prediction::Epsilon),
        "x0" | "sample" => Ok(Prediction::Sample),
        "v" | "velocity" => Ok(Prediction::Velocity),
        _ => Err(format!("unknown prediction '{s}': use eps, x0 or v")),
    }
}

/// `--loss-weighting`: `uniform` or `min-snr-GAMMA` (e.g. `min-snr-5`).
pub fn parse_loss_weighting(s: &str) -> std::result::Result<LossWeighting, String> {
    let gamma = s.strip_prefix("min-snr-").map(|g| g.parse::<f64>());
    match (s, gamma) {
        ("uniform", _) => Ok(LossWeighting::Uniform),
        (_, Some(Ok(gamma))) if gamma.is_finite() && gamma > 0.0 => {
            Ok(LossWeighting::MinSnr { gamma })
        }
        _ => Err(format!(
            "unknown loss weighting '{s}': use uniform or min-snr-GAMMA (e.g. min-snr-5)"
        )),
    }
}

/// Which classes to sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Classes {
    /// Exactly these labels, one image each.
    List(Vec<i64>),
    /// k images of every class, class-major: 0, 0, …, 1, 1, ….
    PerClass(i64),
}

/// The label tensor for a request, checked against the model's classes.
pub fn labels(classes: &Classes, num_classes: i64, device: Device) -> Result<Tensor> {
    let list: Vec<i64> = match classes {
        Classes::List(l) => l.clone(),
        Classes::PerClass(k) => (0..num_classes)
            .flat_map(|c| std::iter::repeat_n(c, *k as usize))
            .collect(),
    };
    if let Some(&class) = list.iter().find(|&&c| c < 0 || c >= num_classes) {
        bail!(
            "class {class} is out of range: this model has classes 0 to {}",
            num_classes - 1
        );
    }
    Ok(Tensor::from_slice(&list).to_device(device))
}

/// A one-line warning when guiding a model that never saw the null class.
pub fn dropout_warning(p_uncond: f64, w: f64) -> Option<String> {
    (p_uncond == 0.0 && w != 1.0).then(|| {
        format!("warning: this model was trained without label dropout (p_uncond = 0): its unconditional branch is untrained, so guidance w = {w} mixes in noise predictions it never learned")
    })
}

/// Refuses a sampling run that cannot fit in memory, before anything is
/// allocated: `n` images of `shape`, sampled `batch` at a time, keeping
/// `steps` steps of 5 tensors each when a trace is recorded (0 otherwise).
pub fn check_sampling_memory(n: i64, shape: [i64; 3], batch: i64, steps: usize) -> Result<()> {
    let image = (shape.iter().product::<i64>() * 4) as f64;
    // x_T, the finished samples and their concatenation; a batch's
    // activations (about 64 feature maps per image); a trace's records.
    let bytes = 3.0 * n as f64 * image
        + 64.0 * batch.min(n) as f64 * image
        + 5.0 * steps as f64 * n as f64 * image;
    util::ensure_memory(
        bytes,
        &format!("sampling {n} images"),
        "use a smaller --n or --per-class (or --batch-size), or sample in several runs with different --seed",
    )
}

/// What the examples that measure samples share: the shipped classifier
/// over the test set, the training set (for the floor and ceiling rows),
/// and `n` rounded down to whole classes with its labels 0, 1, …, 9, 0, ….
pub struct Measurement {
    pub ev: evaluate::Evaluator,
    pub train: data::Dataset,
    pub n: i64,
    pub labels: Tensor,
}

impl Measurement {
    /// Checks that `n` samples fit in memory and that `data_dir` holds 28×28
    /// test images, then loads both splits and the classifier.
    pub fn new(data_dir: &std::path::Path, n: i64, device: Device) -> Result<Self> {
        check_sampling_memory(n, [1, 28, 28], n, 0)?;
        let test = data::load_mnist_like(data_dir, data::Split::Test)?;
        check_images(
            &test.images,
            [1, 28, 28],
            &format!("the test set in {}", data_dir.display()),
        )?;
        let train = data::load_mnist_like(data_dir, data::Split::Train)?;
        let ev = evaluate::Evaluator::new(evaluate::pretrained::classifier(device)?, &test.images);
        let n = n / 10 * 10;
        let labels = Tensor::arange(n, (tch::Kind::Int64, device)).remainder(10);
        Ok(Self {
            ev,
            train,
            n,
            labels,
        })
    }

    /// A progress bar over `total` network evaluations of the whole batch.
    pub fn bar(&self, total: usize) -> Result<indicatif::ProgressBar> {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} network evaluations of batch {msg} | ETA {eta}",
        )?);
        bar.set_message(self.n.to_string());
        Ok(bar)
    }

    /// The N(0, I) draw every row starts from, (n, 1, 28, 28), from `seed`.
    pub fn noise(&self, seed: u64) -> Tensor {
        tch::manual_seed(seed as i64);
        Tensor::randn(
            [self.n, 1, 28, 28],
            (tch::Kind::Float, self.labels.device()),
        )
    }
}

/// Refuses a data set whose images are not `shape` (C, H, W), or that is
/// empty, naming `what` it is and where it came from.
pub fn check_images(images: &Tensor, shape: [i64; 3], what: &str) -> Result<()> {
    let size = images.size();
    if size.len() != 4 || size[1..] != shape {
        bail!(
            "{what}: images have shape {:?} but {shape:?} (C, H, W) is needed: point at a data set of that size",
            &size[1.min(size.len())..]
        );
    }
    if size[0] == 0 {
        bail!("{what}: the data set holds no images: point at one with images");
    }
    Ok(())
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
            ddim.sampler.sampler().unwrap(),
            Sampler::Ddim {
                steps: 20,
                eta: 0.5,
                spacing: Spacing::Leading,
                clip: true
            }
        );
        let ddpm = parse(&["--sampler", "ddpm", "--variance", "large", "--no-clip"]).unwrap();
        assert_eq!(
            ddpm.sampler.sampler().unwrap(),
            Sampler::Ddpm {
                variance: Variance::FixedLarge,
                clip: false
            }
        );
        let heun = parse(&["--sampler", "heun", "--steps", "10", "--karras", "7"]).unwrap();
        assert_eq!(
            heun.sampler.sampler().unwrap(),
            Sampler::Heun {
                steps: 10,
                sigmas: SigmaSpacing::Karras { rho: 7.0 },
                clip: true
            }
        );
        let dpm = parse(&["--sampler", "dpm-solver-pp", "--steps", "20"]).unwrap();
        assert_eq!(
            dpm.sampler.sampler().unwrap(),
            Sampler::DpmSolverPp {
                steps: 20,
                sigmas: SigmaSpacing::Timesteps {
                    spacing: Spacing::Trailing
                },
                clip: true
            }
        );
        // A setting another sampler reads does nothing here, so it is refused.
        for bad in [
            &["--variance", "large"][..],
            &["--sampler", "ddpm", "--steps", "10"],
            &["--sampler", "ddpm", "--eta", "0.5"],
            &["--karras", "7"],
            &["--sampler", "euler", "--eta", "0.5"],
            &["--sampler", "heun", "--variance", "small"],
            &["--sampler", "heun", "--karras", "7", "--spacing", "leading"],
        ] {
            let err = parse(bad).unwrap().sampler.sampler().unwrap_err();
            assert!(err.to_string().contains("does nothing"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn unknown_values_and_two_model_sources_are_refused() {
        for bad in [
            &["--sampler", "rk4"][..],
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

    #[test]
    fn label_requests() {
        let l = labels(&Classes::PerClass(2), 3, Device::Cpu).unwrap();
        assert_eq!(Vec::<i64>::try_from(&l).unwrap(), [0, 0, 1, 1, 2, 2]);
        let err = labels(&Classes::List(vec![1, 10]), 10, Device::Cpu).unwrap_err();
        assert_eq!(
            err.to_string(),
            "class 10 is out of range: this model has classes 0 to 9"
        );
        assert!(
            dropout_warning(0.0, 3.0).is_some()
                && dropout_warning(0.1, 3.0).is_none()
                && dropout_warning(0.0, 1.0).is_none()
        );
    }

    #[test]
    fn loss_weighting_flag() {
        let w = parse_loss_weighting("min-snr-5").unwrap();
        assert_eq!(w, LossWeighting::MinSnr { gamma: 5.0 });
        assert_eq!(
            parse_loss_weighting("uniform").unwrap(),
            LossWeighting::Uniform
        );
        for bad in ["min-snr-0", "min-snr--1", "min-snr-nan", "snr", ""] {
            assert!(parse_loss_weighting(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_prediction("v").unwrap(), Prediction::Velocity);
        assert!(parse_prediction("noise")
            .unwrap_err()
            .contains("use eps, x0 or v"));
    }
}
