//! The forward process of a diffusion model (Ho et al. 2020, "DDPM").
//!
//! Index convention, used everywhere in the book: timesteps are 0-based,
//! `t ∈ {0, …, T−1}`, and our `t` is the paper's `t + 1`. So `alpha_bar[0]`
//! is the paper's ᾱ₁ and `alpha_bar_prev[0] = 1` is the paper's ᾱ₀.
mod flow;
mod prediction;

pub use flow::{
    flow_interpolate, flow_velocity, flow_x0_and_eps, sample_flow_times, FLOW_TIME_SCALE,
};
pub use prediction::{predict_x0_from_eps, target, x0_and_eps, Prediction};

use tch::{Device, Kind, Tensor};

/// Errors of the forward process: each names the problem and the fix.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ForwardError {
    #[error("timestep {t} is out of range: valid timesteps are 0..={max} (T = {steps})", max = steps - 1)]
    TimestepOutOfRange { t: i64, steps: usize },
    #[error("timesteps must be a 1-D int64 tensor, got {kind:?} with shape {shape:?}")]
    TimestepKind { kind: Kind, shape: Vec<i64> },
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        what: &'static str,
        expected: Vec<i64>,
        got: Vec<i64>,
    },
    #[error("{what} must be a floating-point tensor, got {kind:?}")]
    NotFloat { what: &'static str, kind: Kind },
    #[error("invalid schedule: {0}")]
    InvalidSchedule(String),
}

pub type Result<T> = std::result::Result<T, ForwardError>;

/// The β schedules of the book (written in files and flags by
/// [`ScheduleKind::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// DDPM: β linear from 1e-4 to 0.02.
    Linear,
    /// The seed tutorial: β linear from 3e-4·(1000/T) to 3e-2·(1000/T). (Not
    /// diffusers' `scaled_linear`, which is linear in √β; files written before
    /// the rename still read.)
    #[serde(alias = "scaled_linear")]
    SeedLinear,
    /// Improved DDPM (Nichol & Dhariwal 2021): ᾱ follows a squared cosine, s = 0.008, β ≤ 0.999.
    Cosine,
    /// Stable Diffusion's schedule, diffusers' `scaled_linear`: √β linear from
    /// √0.00085 to √0.012. Its ᾱ_{T−1} = 0.0047 at T = 1000 leaves the image's
    /// mean in x_{T−1} (Lin et al. 2024). Named `sd_scaled_linear` in our files,
    /// because files written before `seed_linear` was renamed say `scaled_linear`.
    #[serde(rename = "sd_scaled_linear")]
    ScaledLinear,
}

impl ScheduleKind {
    pub const ALL: [ScheduleKind; 4] = [
        Self::Linear,
        Self::SeedLinear,
        Self::Cosine,
        Self::ScaledLinear,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::SeedLinear => "seed_linear",
            Self::Cosine => "cosine",
            Self::ScaledLinear => "sd_scaled_linear",
        }
    }
}

impl std::fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ScheduleKind {
    type Err = ForwardError;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                ForwardError::InvalidSchedule(format!(
                    "unknown schedule '{s}': use linear, seed_linear, cosine or sd_scaled_linear"
                ))
            })
    }
}

/// Cosine-schedule offset s and the cap on β (improved DDPM, eq. 17).
pub const COSINE_S: f64 = 0.008;
pub const MAX_BETA: f64 = 0.999;
/// Stable Diffusion's β range (diffusers' `scaled_linear`, linear in √β).
pub const SD_BETA_START: f64 = 0.00085;
pub const SD_BETA_END: f64 = 0.012;

// ANCHOR: betas
/// β₀ … β_{T−1}, computed in f64.
pub fn betas(kind: ScheduleKind, steps: usize) -> Result<Tensor> {
    if steps < 2 {
        return Err(ForwardError::InvalidSchedule(format!(
            "T = {steps}: need at least 2 steps"
        )));
    }
    // ANCHOR: SOLUTION_betas
    let f64_ = (Kind::Double, Device::Cpu);
    let t = steps as f64;
    let betas = match kind {
        ScheduleKind::Linear => Tensor::linspace(1e-4, 0.02, steps as i64, f64_),
        ScheduleKind::SeedLinear => {
            let scale = 1000.0 / t;
            if 3e-2 * scale >= 1.0 {
                return Err(ForwardError::InvalidSchedule(format!(
                    "seed_linear with T = {steps} would end at β = {:.3} ≥ 1; use T ≥ 31",
                    3e-2 * scale
                )));
            }
            Tensor::linspace(3e-4 * scale, 3e-2 * scale, steps as i64, f64_)
        }
        ScheduleKind::Cosine => {
            // ᾱ(τ) = f(τ)/f(0), f(τ) = cos²((τ/T + s)/(1 + s) · π/2), τ = 0..=T
            let tau = Tensor::arange(steps as i64 + 1, f64_) / t;
            let f = ((tau + COSINE_S) / (1.0 + COSINE_S) * std::f64::consts::FRAC_PI_2)
                .cos()
                .square();
            let alpha_bar = &f / f.get(0);
            // β_t = 1 − ᾱ(t+1)/ᾱ(t), clipped to avoid a singularity at the end.
            let ratio = alpha_bar.narrow(0, 1, steps as i64) / alpha_bar.narrow(0, 0, steps as i64);
            (1f64 - ratio).clamp_max(MAX_BETA)
        }
        ScheduleKind::ScaledLinear => {
            Tensor::linspace(SD_BETA_START.sqrt(), SD_BETA_END.sqrt(), steps as i64, f64_).square()
        }
    };
    Ok(betas)
    // ANCHOR_END: SOLUTION_betas
}
// ANCHOR_END: betas

// ANCHOR: zero_terminal_snr
/// Rescales β so that ᾱ_{T−1} = 0, zero signal at the last step (Lin et al.
/// 2024, Algorithm 1): √ᾱ_t is shifted by its last value and stretched back to
/// its first, √ᾱ′_t = (√ᾱ_t − √ᾱ_{T−1}) · √ᾱ_0 / (√ᾱ_0 − √ᾱ_{T−1}), so ᾱ′_0 = ᾱ_0,
/// ᾱ′_{T−1} = 0 and β′_{T−1} = 1. Computed in f64.
pub fn rescale_zero_terminal_snr(betas: &Tensor) -> Tensor {
    let sqrt_ab = (1f64 - betas.to_kind(Kind::Double))
        .cumprod(0, Kind::Double)
        .sqrt();
    let n = sqrt_ab.size()[0];
    let (first, last) = (sqrt_ab.double_value(&[0]), sqrt_ab.double_value(&[n - 1]));
    let alpha_bar = ((sqrt_ab - last) * (first / (first - last))).square();
    // β′_t = 1 − ᾱ′_t / ᾱ′_{t−1}, with ᾱ′ before the first step equal to 1.
    let prev = Tensor::cat(
        &[
            Tensor::ones([1], (Kind::Double, Device::Cpu)),
            alpha_bar.narrow(0, 0, n - 1),
        ],
        0,
    );
    1f64 - alpha_bar / prev
}
// ANCHOR_END: zero_terminal_snr

/// Every per-timestep quantity of DDPM, precomputed once in f64 and stored
/// (as f32) on the device. Each field is a 1-D tensor of length T.
#[derive(Debug)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub steps: usize,
    /// β rescaled so that ᾱ_{T−1} = 0 ([`rescale_zero_terminal_snr`]): then
    /// x_{T−1} holds no signal, x̂_0 cannot be read from ε there, and the
    /// probability-flow ODE starts at σ = ∞.
    pub zero_terminal_snr: bool,
    pub device: Device,
    pub betas: Tensor,
    pub alphas: Tensor,
    pub alpha_bar: Tensor,
    pub alpha_bar_prev: Tensor,
    pub sqrt_alpha_bar: Tensor,
    pub sqrt_one_minus_alpha_bar: Tensor,
    pub sqrt_recip_alpha_bar: Tensor,
    pub sqrt_recipm1_alpha_bar: Tensor,
    pub posterior_variance: Tensor,
    pub posterior_log_variance_clipped: Tensor,
    pub posterior_mean_coef1: Tensor,
    pub posterior_mean_coef2: Tensor,
    pub snr: Tensor,
    /// Host copies in f64, for samplers that need scalars per step.
    pub alpha_bar_host: Vec<f64>,
    pub betas_host: Vec<f64>,
}

impl Schedule {
    // ANCHOR: schedule_new
    pub fn new(kind: ScheduleKind, steps: usize, device: Device) -> Result<Self> {
        Self::with_terminal_snr(kind, steps, false, device)
    }

    /// [`Schedule::new`], with β rescaled to zero terminal SNR when asked.
    pub fn with_terminal_snr(
        kind: ScheduleKind,
        steps: usize,
        zero_terminal_snr: bool,
        device: Device,
    ) -> Result<Self> {
        let betas = match zero_terminal_snr {
            false => betas(kind, steps)?,
            true => rescale_zero_terminal_snr(&betas(kind, steps)?),
        };
        // tch computes f64 − tensor as −(tensor − f64): at β = 1 (zero terminal
        // SNR) that is −0, and 1/√ᾱ would be NaN; abs keeps it +0.
        let alphas = (1f64 - &betas).abs();
        let alpha_bar = alphas.cumprod(0, Kind::Double);
        // ᾱ_{t−1}, with ᾱ before the first step equal to 1.
        let one = Tensor::ones([1], (Kind::Double, Device::Cpu));
        let alpha_bar_prev = Tensor::cat(&[&one, &alpha_bar.narrow(0, 0, steps as i64 - 1)], 0);
        // q(x_{t−1} | x_t, x_0) = N(coef1·x_0 + coef2·x_t, β̃_t)   (DDPM eq. 6–7)
        let posterior_variance = &betas * (1f64 - &alpha_bar_prev) / (1f64 - &alpha_bar);
        // β̃_0 = 0, so the log is clipped to β̃_1 at the first step.
        let posterior_log_variance_clipped = Tensor::cat(
            &[
                posterior_variance.narrow(0, 1, 1),
                posterior_variance.narrow(0, 1, steps as i64 - 1),
            ],
            0,
        )
        .log();
        let posterior_mean_coef1 = &betas * alpha_bar_prev.sqrt() / (1f64 - &alpha_bar);
        let posterior_mean_coef2 = (1f64 - &alpha_bar_prev) * alphas.sqrt() / (1f64 - &alpha_bar);
        let snr = &alpha_bar / (1f64 - &alpha_bar);
        // ANCHOR_END: schedule_new
        let host = |t: &Tensor| -> Vec<f64> { Vec::<f64>::try_from(t).expect("1-D f64 tensor") };
        let alpha_bar_host = host(&alpha_bar);
        let betas_host = host(&betas);
        let dev = |t: Tensor| t.to_kind(Kind::Float).to_device(device);
        Ok(Self {
            kind,
            steps,
            zero_terminal_snr,
            device,
            sqrt_alpha_bar: dev(alpha_bar.sqrt()),
            sqrt_one_minus_alpha_bar: dev((1f64 - &alpha_bar).sqrt()),
            sqrt_recip_alpha_bar: dev(alpha_bar.reciprocal().sqrt()),
            sqrt_recipm1_alpha_bar: dev((alpha_bar.reciprocal() - 1.0).sqrt()),
            posterior_variance: dev(posterior_variance),
            posterior_log_variance_clipped: dev(posterior_log_variance_clipped),
            posterior_mean_coef1: dev(posterior_mean_coef1),
            posterior_mean_coef2: dev(posterior_mean_coef2),
            snr: dev(snr),
            betas: dev(betas),
            alphas: dev(alphas),
            alpha_bar: dev(alpha_bar),
            alpha_bar_prev: dev(alpha_bar_prev),
            alpha_bar_host,
            betas_host,
        })
    }

    /// Checks a tensor of per-sample timesteps: 1-D, int64, every value in 0..T.
    pub fn timesteps(&self, t: &Tensor) -> Result<Timesteps> {
        if t.kind() != Kind::Int64 || t.dim() != 1 {
            return Err(ForwardError::TimestepKind {
                kind: t.kind(),
                shape: t.size(),
            });
        }
        if t.numel() > 0 {
            let (lo, hi) = (t.min().int64_value(&[]), t.max().int64_value(&[]));
            let bad = if lo < 0 { lo } else { hi };
            if lo < 0 || hi >= self.steps as i64 {
                return Err(ForwardError::TimestepOutOfRange {
                    t: bad,
                    steps: self.steps,
                });
            }
        }
        Ok(Timesteps(t.to_device(self.device)))
    }

    /// The same timestep `t` for a batch of `n` samples, checked on the host:
    /// a sampler calls this at every step, and reading the tensor back from
    /// a GPU to check it would wait for the device each time.
    pub fn timestep(&self, t: i64, n: i64) -> Result<Timesteps> {
        if !(0..self.steps as i64).contains(&t) {
            return Err(ForwardError::TimestepOutOfRange {
                t,
                steps: self.steps,
            });
        }
        Ok(Timesteps(Tensor::full([n], t, (Kind::Int64, self.device))))
    }

    /// `n` timesteps drawn uniformly from 0..T (DDPM Algorithm 1, line 3).
    pub fn sample_timesteps(&self, n: i64) -> Timesteps {
        Timesteps(Tensor::randint(
            self.steps as i64,
            [n],
            (Kind::Int64, self.device),
        ))
    }

    // ANCHOR: q_sample
    /// x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε, sampled in one step (DDPM eq. 4).
    pub fn q_sample(&self, x0: &Tensor, t: &Timesteps, noise: &Tensor) -> Result<Tensor> {
        check_batch(x0, t)?;
        check_same_shape("noise", x0, noise)?;
        // ANCHOR: SOLUTION_q_sample
        Ok(t.gather(&self.sqrt_alpha_bar, x0) * x0
            + t.gather(&self.sqrt_one_minus_alpha_bar, x0) * noise)
        // ANCHOR_END: SOLUTION_q_sample
    }
    // ANCHOR_END: q_sample

    // ANCHOR: q_posterior
    /// Mean, variance and clipped log-variance of q(x_{t−1} | x_t, x_0) (DDPM eq. 6–7).
    pub fn q_posterior(&self, x0: &Tensor, xt: &Tensor, t: &Timesteps) -> Result<Posterior> {
        check_batch(x0, t)?;
        check_same_shape("x_t", x0, xt)?;
        Ok(Posterior {
            mean: t.gather(&self.posterior_mean_coef1, x0) * x0
                + t.gather(&self.posterior_mean_coef2, x0) * xt,
            variance: t.gather(&self.posterior_variance, x0),
            log_variance: t.gather(&self.posterior_log_variance_clipped, x0),
        })
    }
    // ANCHOR_END: q_posterior
}

/// The Gaussian q(x_{t−1} | x_t, x_0). `variance` and `log_variance` have
/// shape (N, 1, 1, …) and broadcast against `mean`.
#[derive(Debug)]
pub struct Posterior {
    pub mean: Tensor,
    pub variance: Tensor,
    pub log_variance: Tensor,
}

/// A batch of validated timesteps: 1-D int64, each in 0..T, on the schedule's
/// device. Only [`Schedule::timesteps`] and friends can make one.
#[derive(Debug)]
pub struct Timesteps(Tensor);

impl Timesteps {
    pub fn tensor(&self) -> &Tensor {
        &self.0
    }

    pub fn len(&self) -> i64 {
        self.0.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // ANCHOR: gather
    /// Picks `coef[t_i]` for each sample i and shapes it (N, 1, 1, …) so that
    /// it broadcasts against `like` (N, C, H, W). Written once, used everywhere.
    pub fn gather(&self, coef: &Tensor, like: &Tensor) -> Tensor {
        let mut shape = vec![1i64; like.dim()];
        shape[0] = self.len();
        coef.index_select(0, &self.0).reshape(shape.as_slice())
    }
    // ANCHOR_END: gather
}

fn check_batch(x: &Tensor, t: &Timesteps) -> Result<()> {
    if !x.is_floating_point() {
        return Err(ForwardError::NotFloat {
            what: "x_0",
            kind: x.kind(),
        });
    }
    match x.size().first() {
        Some(&n) if n == t.len() => Ok(()),
        _ => Err(ForwardError::ShapeMismatch {
            what: "one timestep per sample (batch dimension of x_0)",
            expected: vec![t.len()],
            got: x.size().first().map(|&n| vec![n]).unwrap_or_default(),
        }),
    }
}

fn check_same_shape(what: &'static str, x0: &Tensor, other: &Tensor) -> Result<()> {
    if x0.size() != other.size() {
        return Err(ForwardError::ShapeMismatch {
            what,
            expected: x0.size(),
            got: other.size(),
        });
    }
    if !other.is_floating_point() {
        return Err(ForwardError::NotFloat {
            what,
            kind: other.kind(),
        });
    }
    Ok(())
}
