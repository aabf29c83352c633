//! The reverse process: from noise back to data, with DDPM (Ho et al. 2020)
//! and DDIM (Song et al. 2021), DDIM inversion, and a per-step trace.
pub mod grid;
pub mod trace;

pub use grid::{GridStep, Spacing, TimestepGrid};
pub use trace::StepRecord;

use forward::{x0_and_eps, Prediction};
use forward::{Schedule, Timesteps};
use network::NoisePredictor;
use tch::{Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum ReverseError {
    #[error(transparent)]
    Forward(#[from] forward::ForwardError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    #[error("invalid sampler: {0}")]
    Config(String),
    #[error("trace {0}")]
    Trace(String),
}

pub type Result<T> = std::result::Result<T, ReverseError>;

/// DDPM's two choices of reverse variance (DDPM §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variance {
    /// σ_t² = β̃_t, the posterior variance: right when x_0 is a point.
    FixedSmall,
    /// σ_t² = β_t: right when x_0 is N(0, I).
    FixedLarge,
}

/// A sampler and its settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "sampler", rename_all = "snake_case")]
pub enum Sampler {
    Ddpm {
        variance: Variance,
        clip: bool,
    },
    Ddim {
        steps: usize,
        eta: f64,
        spacing: Spacing,
        clip: bool,
    },
}

impl Sampler {
    /// Checks the settings against T and returns the timestep grid.
    pub fn grid(&self, total: usize) -> Result<TimestepGrid> {
        match *self {
            Sampler::Ddpm { .. } => Ok(TimestepGrid::full(total)),
            Sampler::Ddim {
                steps,
                eta,
                spacing,
                ..
            } => {
                if !(eta >= 0.0 && eta.is_finite()) {
                    return Err(ReverseError::Config(format!(
                        "η = {eta}: must be a number ≥ 0"
                    )));
                }
                TimestepGrid::new(total, steps, spacing)
            }
        }
    }

    fn clip(&self) -> bool {
        match *self {
            Sampler::Ddpm { clip, .. } | Sampler::Ddim { clip, .. } => clip,
        }
    }
}

// ANCHOR: ddpm_step
/// One step of DDPM ancestral sampling (Algorithm 2) given x̂_0:
/// x_{t−1} = μ̃_t(x̂_0, x_t) + σ_t z, and no noise at the last step (t = 0).
pub fn ddpm_step(
    s: &Schedule,
    v: Variance,
    x_t: &Tensor,
    t: &Timesteps,
    x0_hat: &Tensor,
    z: &Tensor,
) -> Result<Tensor> {
    // ANCHOR: SOLUTION_ddpm_step
    let post = s.q_posterior(x0_hat, x_t, t)?;
    let sigma = match v {
        Variance::FixedSmall => (post.log_variance * 0.5).exp(),
        Variance::FixedLarge => t.gather(&s.betas, x_t).sqrt(),
    };
    let nonzero = t
        .tensor()
        .ne(0)
        .to_kind(x_t.kind())
        .reshape(sigma.size().as_slice());
    Ok(post.mean + nonzero * sigma * z)
    // ANCHOR_END: SOLUTION_ddpm_step
}
// ANCHOR_END: ddpm_step

// ANCHOR: ddim_sigma
/// DDIM eq. 16: σ = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev).
pub fn ddim_sigma(alpha_bar_t: f64, alpha_bar_prev: f64, eta: f64) -> f64 {
    // ANCHOR: SOLUTION_ddim_step
    eta * ((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_prev))
        .sqrt()
    // ANCHOR_END: SOLUTION_ddim_step
}
// ANCHOR_END: ddim_sigma

// ANCHOR: ddim_step
/// One DDIM step (eq. 12) from t to prev (None: to x_0, where ᾱ_prev = 1):
/// x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z.
pub fn ddim_step(
    s: &Schedule,
    step: GridStep,
    eta: f64,
    x0_hat: &Tensor,
    eps_hat: &Tensor,
    z: &Tensor,
) -> Tensor {
    // ANCHOR: SOLUTION_ddim_step
    let ab_t = s.alpha_bar_host[step.t as usize];
    let ab_prev = step.prev.map_or(1.0, |p| s.alpha_bar_host[p as usize]);
    let sigma = ddim_sigma(ab_t, ab_prev, eta);
    let dir = (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt();
    x0_hat * ab_prev.sqrt() + eps_hat * dir + z * sigma
    // ANCHOR_END: SOLUTION_ddim_step
}
// ANCHOR_END: ddim_step

// ANCHOR: sample
/// Runs a sampler from x_T to x_0. `record`, when given, receives every step;
/// `on_step` is called after each step (for progress bars).
#[allow(clippy::too_many_arguments)]
pub fn sample(
    model: &dyn NoisePredictor,
    s: &Schedule,
    kind: Prediction,
    sampler: &Sampler,
    x_big_t: &Tensor,
    y: Option<&Tensor>,
    record: Option<&mut Vec<StepRecord>>,
    on_step: impl FnMut(usize),
) -> Result<Tensor> {
    let grid = sampler.grid(s.steps)?;
    run_grid(model, s, kind, sampler, &grid, x_big_t, y, record, on_step)
}
// ANCHOR_END: sample

/// DDIM on an explicit grid, including grids that [`TimestepGrid::new`] would
/// refuse (the bug museum uses this to show what they do).
#[allow(clippy::too_many_arguments)]
pub fn sample_on_grid(
    model: &dyn NoisePredictor,
    s: &Schedule,
    kind: Prediction,
    grid: &TimestepGrid,
    eta: f64,
    clip: bool,
    x_big_t: &Tensor,
    y: Option<&Tensor>,
) -> Result<Tensor> {
    let sampler = Sampler::Ddim {
        steps: grid.len(),
        eta,
        spacing: grid.spacing,
        clip,
    };
    run_grid(model, s, kind, &sampler, grid, x_big_t, y, None, |_| {})
}

// ANCHOR: run_grid
#[allow(clippy::too_many_arguments)]
fn run_grid(
    model: &dyn NoisePredictor,
    s: &Schedule,
    kind: Prediction,
    sampler: &Sampler,
    grid: &TimestepGrid,
    x_big_t: &Tensor,
    y: Option<&Tensor>,
    mut record: Option<&mut Vec<StepRecord>>,
    mut on_step: impl FnMut(usize),
) -> Result<Tensor> {
    let n = x_big_t.size()[0];
    let mut x = x_big_t.shallow_clone();
    for (i, &step) in grid.steps().iter().enumerate() {
        let t = s.timestep(step.t, n)?;
        let out = tch::no_grad(|| model.predict(&x, t.tensor(), y, false))?;
        let (mut x0, mut eps) = x0_and_eps(s, kind, &x, &t, &out);
        if sampler.clip() {
            x0 = x0.clamp(-1.0, 1.0);
            eps = (&x - t.gather(&s.sqrt_alpha_bar, &x) * &x0)
                / t.gather(&s.sqrt_one_minus_alpha_bar, &x);
        }
        let (x_prev, z) = match *sampler {
            Sampler::Ddpm { variance, .. } => {
                let z = if step.prev.is_some() {
                    x.randn_like()
                } else {
                    x.zeros_like()
                };
                (ddpm_step(s, variance, &x, &t, &x0, &z)?, z)
            }
            Sampler::Ddim { eta, .. } => {
                let z = if eta > 0.0 && step.prev.is_some() {
                    x.randn_like()
                } else {
                    x.zeros_like()
                };
                (ddim_step(s, step, eta, &x0, &eps, &z), z)
            }
        };
        if let Some(rec) = record.as_deref_mut() {
            rec.push(StepRecord {
                t: step.t,
                prev: step.prev,
                x_t: x.shallow_clone(),
                out,
                x0: x0.shallow_clone(),
                z,
                x_prev: x_prev.shallow_clone(),
            });
        }
        x = x_prev;
        on_step(i);
    }
    Ok(x)
}
// ANCHOR_END: run_grid

/// The reverse of the deterministic DDIM update: x_0 → x_T along S steps of
/// `grid` run backwards, with ε̂ evaluated at the current (less noisy) point.
pub fn ddim_invert(
    model: &dyn NoisePredictor,
    s: &Schedule,
    kind: Prediction,
    grid: &TimestepGrid,
    x0: &Tensor,
    y: Option<&Tensor>,
) -> Result<Tensor> {
    let n = x0.size()[0];
    let mut x = x0.shallow_clone();
    for step in grid.steps().iter().rev() {
        // Going up from prev (or from x_0) to t.
        let (t_from, ab_from) = match step.prev {
            Some(p) => (p, s.alpha_bar_host[p as usize]),
            None => (0, 1.0),
        };
        let t = s.timestep(t_from, n)?;
        let out = tch::no_grad(|| model.predict(&x, t.tensor(), y, false))?;
        // From x_0 itself (prev = None) the model is asked at its least-noisy step, t = 0.
        let eps = x0_and_eps(s, kind, &x, &t, &out).1;
        let x0_hat = (&x - &eps * (1.0 - ab_from).sqrt()) / ab_from.sqrt();
        let ab_t = s.alpha_bar_host[step.t as usize];
        x = x0_hat * ab_t.sqrt() + eps * (1.0 - ab_t).sqrt();
    }
    Ok(x)
}

/// Spherical interpolation between two Gaussian latents (keeps their norm
/// statistics, unlike a straight line through the origin's low-density ball).
pub fn slerp(a: &Tensor, b: &Tensor, w: f64) -> Tensor {
    let (fa, fb) = (a.flatten(1, -1), b.flatten(1, -1));
    let cos = (&fa * &fb).sum_dim_intlist([1i64].as_slice(), true, Kind::Float)
        / (fa.norm_scalaropt_dim(2, [1i64].as_slice(), true)
            * fb.norm_scalaropt_dim(2, [1i64].as_slice(), true));
    let theta = cos.clamp(-1.0, 1.0).acos();
    let sin = theta.sin();
    let out = (&theta * (1.0 - w)).sin() / &sin * fa + (&theta * w).sin() / &sin * fb;
    out.reshape(a.size().as_slice())
}
