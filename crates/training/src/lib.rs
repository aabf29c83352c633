//! Training the denoiser: the DDPM loss, Adam/AdamW with warm-up and gradient
//! clipping, and an EMA of the weights. The training state is all public, so
//! that `formats::checkpoint` saves it and resumes it exactly.
pub mod optim;

use forward::{flow_interpolate, flow_velocity, sample_flow_times, FLOW_TIME_SCALE};
use forward::{target, Prediction, Schedule, ScheduleKind, Timesteps};
use network::{NoisePredictor, SeedUNet, SeedUNetConfig};
use optim::{Adam, AdamConfig};
use std::path::PathBuf;
use tch::{nn::VarStore, Device, Kind, Reduction, Tensor};
use unet::{UNet, UNetConfig};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Forward(#[from] forward::ForwardError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    #[error("checkpoint {0}")]
    Checkpoint(String),
    #[error("{path}: tensor {tensor} has shape {checkpoint:?} in the checkpoint but {model:?} in the model")]
    ShapeMismatch {
        path: PathBuf,
        tensor: String,
        checkpoint: Vec<i64>,
        model: Vec<i64>,
    },
    #[error("the loss became {value} at step {step}: training stopped before the update, the weights of step {step} are unchanged")]
    NonFinite { step: i64, value: f64 },
    #[error("invalid training config: {0}")]
    Config(String),
    /// A request that names something that is not there (a shipped model).
    #[error("{0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, TrainError>;

/// Either network, by configuration: what a checkpoint records.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum ModelConfig {
    Seed(SeedUNetConfig),
    Unet(UNetConfig),
}

impl ModelConfig {
    /// Builds the model's variables under `vs`.
    pub fn build(&self, vs: &tch::nn::Path) -> network::Result<Box<dyn NoisePredictor>> {
        Ok(match self {
            Self::Seed(c) => Box::new(SeedUNet::new(vs, *c)?),
            Self::Unet(c) => Box::new(UNet::new(vs, c.clone())?),
        })
    }

    pub fn num_classes(&self) -> Option<i64> {
        match self {
            Self::Seed(c) => c.num_classes,
            Self::Unet(c) => c.num_classes(),
        }
    }

    /// About how many parameters (within 2×), from the widths alone.
    pub fn approx_parameters(&self) -> f64 {
        match self {
            Self::Seed(c) => 83.0 * (c.channels as f64).powi(2),
            Self::Unet(c) => c.approx_parameters(),
        }
    }

    /// Refuses a model whose weights, `copies` float32 copies of them (1 to
    /// sample, 4 to train with EMA and Adam), would not fit in memory.
    pub fn check_memory(&self, copies: f64, source: &str) -> Result<()> {
        let params = self.approx_parameters();
        let what = format!(
            "{source}: a model of about {:.0} M parameters",
            params / 1e6
        );
        util::ensure_memory(
            params * 4.0 * copies * 1.5,
            &what,
            "use a smaller model (fewer channels)",
        )
        .map_err(|e| TrainError::Input(format!("{e:#}")))
    }

    pub fn in_channels(&self) -> i64 {
        match self {
            Self::Seed(c) => c.in_channels,
            Self::Unet(c) => c.in_channels,
        }
    }
}

// ANCHOR: drop_labels
/// Replaces each label by the null class `num_classes` with probability
/// `p_uncond`, so one network also learns the unconditional model.
pub fn drop_labels(labels: &Tensor, num_classes: i64, p_uncond: f64) -> Tensor {
    // ANCHOR: SOLUTION_guidance
    let drop = Tensor::rand(labels.size().as_slice(), (Kind::Float, labels.device())).lt(p_uncond);
    labels.where_self(&drop.logical_not(), &Tensor::full_like(labels, num_classes))
    // ANCHOR_END: SOLUTION_guidance
}
// ANCHOR_END: drop_labels

/// How the per-timestep losses are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LossWeighting {
    /// Every t counts alike: L_simple (Ho et al. 2020).
    #[default]
    Uniform,
    /// Min-SNR-γ (Hang et al. 2023): the weight that turns the loss into an
    /// x_0 error weighted by min(SNR(t), γ), so the low-noise steps, which are
    /// easy, stop dominating the gradient.
    MinSnr { gamma: f64 },
}

// ANCHOR: loss_weight
/// The weight of each image's loss. With x̂_0 errors weighted by min(SNR, γ),
/// an ε-error carries 1/SNR of that and a v-error 1/(SNR + 1), hence:
/// ε: min(SNR, γ)/SNR, v: min(SNR, γ)/(SNR + 1), x_0: min(SNR, γ).
pub fn loss_weight(
    w: LossWeighting,
    kind: Prediction,
    s: &Schedule,
    t: &Timesteps,
) -> Option<Tensor> {
    let LossWeighting::MinSnr { gamma } = w else {
        return None;
    };
    let snr = s.snr.index_select(0, t.tensor());
    let clipped = snr.clamp_max(gamma);
    Some(match kind {
        Prediction::Epsilon => clipped / snr,
        Prediction::Velocity => clipped / (snr + 1.0),
        Prediction::Sample => clipped,
    })
}
// ANCHOR_END: loss_weight

// ANCHOR: loss
/// The DDPM loss (Algorithm 1; eq. 14 for ε-prediction):
/// t ~ U{0..T−1}, ε ~ N(0, I), x_t = q_sample(x_0, t, ε), MSE(target, model(x_t, t, y)),
/// each image's error weighted by `loss_weight` (1 for L_simple).
pub fn loss(
    model: &dyn NoisePredictor,
    s: &Schedule,
    prediction: Prediction,
    weighting: LossWeighting,
    x0: &Tensor,
    y: Option<&Tensor>,
) -> Result<Tensor> {
    let t = s.sample_timesteps(x0.size()[0]);
    let noise = x0.randn_like();
    let x_t = s.q_sample(x0, &t, &noise)?;
    let out = model.predict(&x_t, t.tensor(), y, true)?;
    let target = target(prediction, s, x0, &noise, &t);
    Ok(match loss_weight(weighting, prediction, s, &t) {
        None => out.mse_loss(&target, Reduction::Mean),
        Some(w) => {
            let per_image = (out - target)
                .square()
                .flatten(1, -1)
                .mean_dim(1, false, Kind::Float);
            (per_image * w).mean(Kind::Float)
        }
    })
}
// ANCHOR_END: loss

// ANCHOR: flow_loss
/// The conditional flow-matching loss with the straight path (rectified flow,
/// Liu et al. 2023; Lipman et al. 2023): t ~ U(0, 1), ε ~ N(0, I),
/// x_t = (1 − t) x_0 + t ε, MSE(ε − x_0, v_θ(x_t, t, y)). The network sees
/// t · 1000 as its timestep.
pub fn flow_loss(model: &dyn NoisePredictor, x0: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
    // ANCHOR: SOLUTION_flow_loss
    let t = sample_flow_times(x0.size()[0], x0.device());
    let noise = x0.randn_like();
    let x_t = flow_interpolate(x0, &noise, &t)?;
    let u = model.predict(&x_t, &(&t * FLOW_TIME_SCALE), y, true)?;
    Ok(u.mse_loss(&flow_velocity(x0, &noise), Reduction::Mean))
    // ANCHOR_END: SOLUTION_flow_loss
}
// ANCHOR_END: flow_loss

/// What the network learns to undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// A diffusion: the schedule's x_t, and the target `prediction` names.
    #[default]
    Diffusion,
    /// Rectified flow: the straight path x_t = (1 − t) x_0 + t ε over
    /// continuous t, and its velocity ε − x_0 ([`flow_loss`]). The schedule
    /// fields are not used; `prediction` is `velocity`.
    RectifiedFlow,
}

impl Objective {
    pub fn is_diffusion(&self) -> bool {
        *self == Objective::Diffusion
    }
}

/// The learning rate after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LrSchedule {
    #[default]
    Constant,
    /// Half a cosine from lr down to `final_fraction`·lr at `total_steps`,
    /// then constant.
    Cosine {
        total_steps: i64,
        final_fraction: f64,
    },
}

/// Everything that defines a training run; stored in every checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub model: ModelConfig,
    /// Diffusion or rectified flow (files without the field are diffusions).
    #[serde(default, skip_serializing_if = "Objective::is_diffusion")]
    pub objective: Objective,
    pub schedule: ScheduleKind,
    /// β rescaled to ᾱ_{T−1} = 0 ([`forward::rescale_zero_terminal_snr`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub zero_terminal_snr: bool,
    pub timesteps: usize,
    pub prediction: Prediction,
    #[serde(default)]
    pub loss_weighting: LossWeighting,
    pub optimizer: AdamConfig,
    /// Linear learning-rate warm-up over this many steps.
    pub warmup: i64,
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    pub grad_clip: Option<f64>,
    pub ema_decay: f64,
    /// Probability of replacing a label by the null class (classifier-free guidance).
    pub p_uncond: f64,
    pub batch_size: i64,
    pub seed: u64,
    pub dataset: String,
}

impl TrainConfig {
    /// (C, H, W) of the images this model generates: 3×32×32 for colour
    /// (CIFAR-10), 1×28×28 otherwise (MNIST, Fashion-MNIST, synthetic shapes).
    pub fn image_shape(&self) -> [i64; 3] {
        if self.model.in_channels() == 3 {
            [3, 32, 32]
        } else {
            [1, 28, 28]
        }
    }

    /// The noise schedule this config trains (and samples) with.
    pub fn noise_schedule(&self, device: tch::Device) -> forward::Result<Schedule> {
        Schedule::with_terminal_snr(
            self.schedule,
            self.timesteps,
            self.zero_terminal_snr,
            device,
        )
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.objective == Objective::RectifiedFlow {
            if self.prediction != Prediction::Velocity {
                return bad("a rectified-flow model predicts the path's velocity: use --prediction v (or leave it out) with --objective flow".into());
            }
            if self.loss_weighting != LossWeighting::Uniform || self.zero_terminal_snr {
                return bad("--loss-weighting and --zero-terminal-snr are settings of a diffusion's schedule: drop them with --objective flow (its path already ends at pure noise)".into());
            }
        }
        if self.zero_terminal_snr && self.prediction == Prediction::Epsilon {
            return bad("zero terminal SNR leaves no signal at the last step, where an ε-prediction cannot be read back (x̂_0 = 0/0): use --prediction v".into());
        }
        if !(0.0..=1.0).contains(&self.p_uncond) {
            return bad(format!("p_uncond = {}: must be in [0, 1]", self.p_uncond));
        }
        if self.p_uncond > 0.0 && self.model.num_classes().is_none() {
            return bad("p_uncond > 0 needs a class-conditional model".into());
        }
        if self.batch_size < 1 {
            return bad(format!(
                "batch size {}: must be at least 1",
                self.batch_size
            ));
        }
        // Every float must be finite and in range: a NaN passes no `<` test,
        // so each check is written as "inside the range", never "not outside".
        let within =
            |name: &str, flag: &str, v: f64, lo: f64, hi: f64, open_lo: bool, range: &str| {
                let ok = v.is_finite() && v <= hi && if open_lo { v > lo } else { v >= lo };
                if ok {
                    Ok(())
                } else {
                    bad(format!(
                        "{name} = {v} ({flag}): must be a finite number in {range}"
                    ))
                }
            };
        let o = &self.optimizer;
        within("lr", "--lr", o.lr, 0.0, 1.0, true, "(0, 1]")?;
        within(
            "weight_decay",
            "--weight-decay",
            o.weight_decay,
            0.0,
            1.0,
            false,
            "[0, 1]",
        )?;
        within(
            "beta1",
            "Adam β₁",
            o.beta1,
            0.0,
            1.0 - f64::EPSILON,
            false,
            "[0, 1)",
        )?;
        within(
            "beta2",
            "Adam β₂",
            o.beta2,
            0.0,
            1.0 - f64::EPSILON,
            false,
            "[0, 1)",
        )?;
        within("eps", "Adam ε", o.eps, 0.0, 1.0, true, "(0, 1]")?;
        within(
            "ema_decay",
            "--ema-decay",
            self.ema_decay,
            0.0,
            1.0 - f64::EPSILON,
            false,
            "[0, 1)",
        )?;
        if let Some(c) = self.grad_clip {
            within(
                "grad_clip",
                "--grad-clip; 0 turns clipping off",
                c,
                0.0,
                f64::MAX,
                true,
                "(0, ∞)",
            )?;
        }
        if self.warmup < 0 {
            return bad(format!(
                "warmup = {} (--warmup): must be 0 or more steps",
                self.warmup
            ));
        }
        if let LossWeighting::MinSnr { gamma } = self.loss_weighting {
            if !(gamma.is_finite() && gamma > 0.0) {
                return bad(format!(
                    "min-SNR gamma = {gamma}: must be a finite positive number"
                ));
            }
        }
        if let LrSchedule::Cosine {
            total_steps,
            final_fraction,
        } = self.lr_schedule
        {
            if total_steps < 1 || !(0.0..=1.0).contains(&final_fraction) {
                return bad(format!("cosine schedule to step {total_steps} ending at {final_fraction}×lr: needs at least 1 step and a fraction in [0, 1]"));
            }
        }
        Ok(())
    }
}

/// A model, its EMA copy, the optimizer and the step: the whole training state.
pub struct Trainer {
    pub config: TrainConfig,
    pub vs: VarStore,
    pub ema_vs: VarStore,
    pub model: Box<dyn NoisePredictor>,
    pub ema: Box<dyn NoisePredictor>,
    pub schedule: Schedule,
    pub opt: Adam,
    /// Number of completed training steps.
    pub step: i64,
}

/// libtorch's generator is reseeded from (seed, step) at every step, so the
/// random state of step k is a function of k: resuming needs no saved
/// generator, and a resumed run draws exactly what a straight run would.
fn step_seed(seed: u64, step: i64) -> i64 {
    let mut z = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

impl Trainer {
    pub fn new(config: TrainConfig, device: Device) -> Result<Self> {
        config.validate()?;
        config.model.check_memory(4.0, "the training config")?;
        tch::manual_seed(step_seed(config.seed, -1)); // the initial weights
        let vs = VarStore::new(device);
        let model = config.model.build(&vs.root())?;
        let mut ema_vs = VarStore::new(device);
        let ema = config.model.build(&ema_vs.root())?;
        ema_vs
            .copy(&vs)
            .map_err(|e| TrainError::Config(e.to_string()))?;
        ema_vs.freeze();
        let schedule = config.noise_schedule(device)?;
        let opt = Adam::new(&vs, config.optimizer);
        Ok(Self {
            config,
            vs,
            ema_vs,
            model,
            ema,
            schedule,
            opt,
            step: 0,
        })
    }

    // ANCHOR: lr
    /// The learning rate at the current step: linear warm-up, then the schedule.
    pub fn lr(&self) -> f64 {
        let (w, k) = (self.config.warmup, self.step);
        let warm = if w > 0 {
            ((k + 1) as f64 / w as f64).min(1.0)
        } else {
            1.0
        };
        let decay = match self.config.lr_schedule {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine {
                total_steps,
                final_fraction,
            } => {
                let span = (total_steps - w).max(1) as f64;
                let p = ((k - w).max(0) as f64 / span).min(1.0);
                final_fraction
                    + (1.0 - final_fraction) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
        };
        self.config.optimizer.lr * warm * decay
    }
    // ANCHOR_END: lr

    // ANCHOR: train_step
    /// One optimisation step on a batch; returns the loss.
    pub fn train_step(&mut self, x0: &Tensor, y: &Tensor) -> Result<f64> {
        tch::manual_seed(step_seed(self.config.seed, self.step));
        let y = match self.config.model.num_classes() {
            Some(k) if self.config.p_uncond > 0.0 => Some(drop_labels(y, k, self.config.p_uncond)),
            Some(_) => Some(y.shallow_clone()),
            None => None,
        };
        let loss = match self.config.objective {
            Objective::Diffusion => loss(
                &*self.model,
                &self.schedule,
                self.config.prediction,
                self.config.loss_weighting,
                x0,
                y.as_ref(),
            )?,
            Objective::RectifiedFlow => flow_loss(&*self.model, x0, y.as_ref())?,
        };
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            return Err(TrainError::NonFinite {
                step: self.step,
                value,
            });
        }
        self.opt.zero_grad();
        loss.backward();
        if let Some(max_norm) = self.config.grad_clip {
            self.opt.clip_grad_norm(max_norm);
        }
        self.opt.step(self.lr());
        self.update_ema();
        self.step += 1;
        Ok(value)
    }
    // ANCHOR_END: train_step

    // ANCHOR: ema
    /// θ_ema ← d·θ_ema + (1 − d)·θ, with d = min(decay, (1 + k)/(10 + k)) so that
    /// the average forgets the random initial weights within the first steps.
    fn update_ema(&mut self) {
        let k = self.step as f64;
        let d = self.config.ema_decay.min((1.0 + k) / (10.0 + k));
        let live = self.vs.variables();
        tch::no_grad(|| {
            for (name, mut e) in self.ema_vs.variables() {
                let _ = e.lerp_(&live[&name], 1.0 - d);
            }
        });
    }
    // ANCHOR_END: ema
}
