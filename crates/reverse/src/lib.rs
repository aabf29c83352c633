//! The reverse process: from noise back to data, with DDPM (Ho et al. 2020)
//! and DDIM (Song et al. 2021), DDIM inversion, the ODE solvers Euler, Heun
//! (Karras et al. 2022) and DPM-Solver++(2M) (Lu et al. 2022), Euler and Heun
//! on a rectified flow's velocity, and a per-step trace.
pub mod flow;
pub mod grid;
pub mod ode;
pub mod trace;

pub use flow::{FlowPipeline, FlowSampler, FlowSolver};
pub use grid::{GridStep, Spacing, TimestepGrid};
pub use ode::{SigmaSpacing, Sigmas, Solver};
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
    /// Euler's method on the probability-flow ODE ([`ode`]): on the book's
    /// grids, DDIM with η = 0 in other coordinates.
    Euler {
        steps: usize,
        sigmas: SigmaSpacing,
        clip: bool,
    },
    /// Heun's method (EDM Algorithm 1): 2S − 1 evaluations.
    Heun {
        steps: usize,
        sigmas: SigmaSpacing,
        clip: bool,
    },
    /// DPM-Solver++(2M), multistep, data prediction.
    DpmSolverPp {
        steps: usize,
        sigmas: SigmaSpacing,
        clip: bool,
    },
}

impl Sampler {
    /// Deterministic DDIM (η = 0) on `steps` trailing steps, clipped: the
    /// book's default sampler.
    pub fn ddim(steps: usize) -> Self {
        Sampler::Ddim {
            steps,
            eta: 0.0,
            spacing: Spacing::Trailing,
            clip: true,
        }
    }

    /// An ODE solver's variant: its solver, steps, σs and clipping.
    pub fn ode(&self) -> Option<(Solver, usize, SigmaSpacing, bool)> {
        match *self {
            Sampler::Euler {
                steps,
                sigmas,
                clip,
            } => Some((Solver::Euler, steps, sigmas, clip)),
            Sampler::Heun {
                steps,
                sigmas,
                clip,
            } => Some((Solver::Heun, steps, sigmas, clip)),
            Sampler::DpmSolverPp {
                steps,
                sigmas,
                clip,
            } => Some((Solver::DpmSolverPp2M, steps, sigmas, clip)),
            Sampler::Ddpm { .. } | Sampler::Ddim { .. } => None,
        }
    }

    /// Network evaluations per sample (a guided one counts once: its two
    /// halves share one batched call).
    pub fn evaluations(&self, total: usize) -> usize {
        match (self, self.ode()) {
            (Sampler::Ddpm { .. }, _) => total,
            (Sampler::Ddim { steps, .. }, _) => *steps,
            (_, Some((Solver::Heun, steps, ..))) => (2 * steps).saturating_sub(1),
            (_, Some((_, steps, ..))) => steps,
            (_, None) => unreachable!("every other sampler is an ODE solver"),
        }
    }

    /// Checks the settings against the schedule and returns the number of
    /// network evaluations a sample costs.
    pub fn check(&self, s: &Schedule) -> Result<usize> {
        match self.ode() {
            Some((_, steps, sigmas, _)) => {
                ode_needs_finite_sigma(s)?;
                drop(Sigmas::new(s, steps, sigmas)?)
            }
            None => drop(self.grid(s.steps)?),
        }
        Ok(self.evaluations(s.steps))
    }

    /// Checks the settings against T and returns the timestep grid (an ODE
    /// solver on Karras' σs has none).
    pub fn grid(&self, total: usize) -> Result<TimestepGrid> {
        if let Some((_, steps, sigmas, _)) = self.ode() {
            return match sigmas {
                SigmaSpacing::Timesteps { spacing } => TimestepGrid::new(total, steps, spacing),
                SigmaSpacing::Karras { .. } => Err(ReverseError::Config(
                    "Karras σs are not a timestep grid: run this sampler with Pipeline::sample"
                        .into(),
                )),
            };
        }
        match *self {
            Sampler::Ddpm { .. } => Ok(TimestepGrid::full(total)),
            Sampler::Ddim {
                steps,
                eta,
                spacing,
                ..
            } => {
                if !(0.0..=1.0).contains(&eta) {
                    return Err(ReverseError::Config(format!(
                        "η = {eta} (--eta) is out of range: DDIM's η must be finite and between 0 (deterministic) and 1 (DDPM-like)"
                    )));
                }
                TimestepGrid::new(total, steps, spacing)
            }
            _ => unreachable!("ODE solvers return above"),
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

// ANCHOR: step_trait
/// What an update rule sees at one step of the grid.
pub struct StepInput<'a> {
    pub step: GridStep,
    pub x_t: &'a Tensor,
    pub t: &'a Timesteps,
    /// x̂_0 and the ε̂ that goes with it (after clipping, when the rule clips).
    pub x0_hat: &'a Tensor,
    pub eps_hat: &'a Tensor,
    /// Fresh N(0, I) noise where the rule adds noise, zeros elsewhere.
    pub z: &'a Tensor,
}

/// One reverse update x_t → x_prev. [`Sampler`] is one; the bug museum swaps
/// in broken ones and runs them through the same loop.
pub trait Step {
    /// Clip x̂_0 to the data range [−1, 1] before the update.
    fn clip(&self) -> bool;
    /// Whether this step adds noise σ z (so z must be drawn).
    fn adds_noise(&self, step: GridStep) -> bool;
    fn step(&self, s: &Schedule, i: &StepInput) -> Result<Tensor>;
}

impl Step for Sampler {
    fn clip(&self) -> bool {
        match *self {
            Sampler::Ddpm { clip, .. } | Sampler::Ddim { clip, .. } => clip,
            _ => self.ode().is_some_and(|o| o.3),
        }
    }

    fn adds_noise(&self, step: GridStep) -> bool {
        step.prev.is_some()
            && match *self {
                Sampler::Ddpm { .. } => true,
                Sampler::Ddim { eta, .. } => eta > 0.0,
                _ => false,
            }
    }

    fn step(&self, s: &Schedule, i: &StepInput) -> Result<Tensor> {
        match *self {
            Sampler::Ddpm { variance, .. } => ddpm_step(s, variance, i.x_t, i.t, i.x0_hat, i.z),
            Sampler::Ddim { eta, .. } => Ok(ddim_step(s, i.step, eta, i.x0_hat, i.eps_hat, i.z)),
            _ => Err(ReverseError::Config(
                "an ODE solver is not a one-evaluation grid rule: run it with Pipeline::sample"
                    .into(),
            )),
        }
    }
}
// ANCHOR_END: step_trait

// ANCHOR: pipeline
/// A model, the schedule it was trained with and what it predicts: everything
/// a sampler needs, held together (diffusers' pipelines hold a model and a
/// scheduler the same way).
#[derive(Clone, Copy)]
pub struct Pipeline<'a> {
    pub model: &'a dyn NoisePredictor,
    pub schedule: &'a Schedule,
    pub prediction: Prediction,
}
// ANCHOR_END: pipeline

impl<'a> Pipeline<'a> {
    pub fn new(
        model: &'a dyn NoisePredictor,
        schedule: &'a Schedule,
        prediction: Prediction,
    ) -> Self {
        Self {
            model,
            schedule,
            prediction,
        }
    }

    /// The same pipeline with another model in front (a guided one, say).
    pub fn with_model(self, model: &'a dyn NoisePredictor) -> Self {
        Self { model, ..self }
    }

    /// An ε-prediction cannot be read at ᾱ = 0: x̂_0 = (x_t − ε̂)/0.
    fn check_readable(&self) -> Result<()> {
        if self.schedule.zero_terminal_snr && self.prediction == Prediction::Epsilon {
            return Err(ReverseError::Config(
                "an ε-prediction model cannot be sampled on a zero-terminal-SNR schedule: at ᾱ = 0 its x̂_0 is 0/0 (train with --prediction v)".into(),
            ));
        }
        Ok(())
    }

    // ANCHOR: sample
    /// Runs `sampler` on its own grid (or σs) from x_T to x_0.
    pub fn sample(
        &self,
        sampler: &Sampler,
        x_big_t: &Tensor,
        y: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.sample_observed(sampler, x_big_t, y, &mut |_| {})
    }
    // ANCHOR_END: sample

    /// [`Pipeline::sample`], with `observe` shown every network evaluation.
    pub fn sample_observed(
        &self,
        sampler: &Sampler,
        x_big_t: &Tensor,
        y: Option<&Tensor>,
        observe: &mut dyn FnMut(&StepRecord),
    ) -> Result<Tensor> {
        let Some((solver, steps, sigmas, clip)) = sampler.ode() else {
            let grid = sampler.grid(self.schedule.steps)?;
            return self.run(sampler, &grid, x_big_t, y, observe);
        };
        self.check_readable()?;
        ode_needs_finite_sigma(self.schedule)?;
        let sig = Sigmas::new(self.schedule, steps, sigmas)?;
        let den = ode::Denoiser {
            model: self.model,
            prediction: self.prediction,
            clip,
        };
        den.solve(solver, &sig, x_big_t, y, observe)
    }

    // ANCHOR: run_grid
    /// The reverse loop: any update rule on any grid (also those that
    /// [`TimestepGrid::new`] refuses). `observe` sees every step, for
    /// progress bars and traces.
    pub fn run(
        &self,
        rule: &dyn Step,
        grid: &TimestepGrid,
        x_big_t: &Tensor,
        y: Option<&Tensor>,
        observe: &mut dyn FnMut(&StepRecord),
    ) -> Result<Tensor> {
        self.check_readable()?;
        let s = self.schedule;
        let n = x_big_t.size()[0];
        let mut x = x_big_t.shallow_clone();
        for &step in grid.steps() {
            let t = s.timestep(step.t, n)?;
            let out = tch::no_grad(|| self.model.predict(&x, t.tensor(), y, false))?;
            let (mut x0_hat, mut eps_hat) = x0_and_eps(s, self.prediction, &x, &t, &out);
            if rule.clip() {
                x0_hat = x0_hat.clamp(-1.0, 1.0);
                eps_hat = (&x - t.gather(&s.sqrt_alpha_bar, &x) * &x0_hat)
                    / t.gather(&s.sqrt_one_minus_alpha_bar, &x);
            }
            let z = if rule.adds_noise(step) {
                x.randn_like()
            } else {
                x.zeros_like()
            };
            let input = StepInput {
                step,
                x_t: &x,
                t: &t,
                x0_hat: &x0_hat,
                eps_hat: &eps_hat,
                z: &z,
            };
            let x_prev = rule.step(s, &input)?;
            observe(&StepRecord {
                t: step.t,
                prev: step.prev,
                x_t: x.shallow_clone(),
                out,
                x0: x0_hat,
                z,
                x_prev: x_prev.shallow_clone(),
            });
            x = x_prev;
        }
        Ok(x)
    }
    // ANCHOR_END: run_grid

    /// The reverse of the deterministic DDIM update: x_0 → x_T along the
    /// steps of `grid` run backwards, with ε̂ evaluated at the current (less
    /// noisy) point.
    pub fn invert(&self, grid: &TimestepGrid, x0: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
        self.check_readable()?;
        let s = self.schedule;
        let n = x0.size()[0];
        let mut x = x0.shallow_clone();
        for step in grid.steps().iter().rev() {
            // Going up from prev (or from x_0) to t.
            let (t_from, ab_from) = match step.prev {
                Some(p) => (p, s.alpha_bar_host[p as usize]),
                None => (0, 1.0),
            };
            let t = s.timestep(t_from, n)?;
            let out = tch::no_grad(|| self.model.predict(&x, t.tensor(), y, false))?;
            // From x_0 itself (prev = None) the model is asked at its least-noisy step, t = 0.
            let eps = x0_and_eps(s, self.prediction, &x, &t, &out).1;
            let x0_hat = (&x - &eps * (1.0 - ab_from).sqrt()) / ab_from.sqrt();
            let ab_t = s.alpha_bar_host[step.t as usize];
            x = x0_hat * ab_t.sqrt() + eps * (1.0 - ab_t).sqrt();
        }
        Ok(x)
    }
}

/// The ODE solvers work in σ = √((1 − ᾱ)/ᾱ), infinite where ᾱ = 0.
fn ode_needs_finite_sigma(s: &Schedule) -> Result<()> {
    if s.zero_terminal_snr {
        return Err(ReverseError::Config(
            "the ODE solvers start at σ = √((1 − ᾱ)/ᾱ), which is infinite on a zero-terminal-SNR schedule: sample this model with DDIM or DDPM".into(),
        ));
    }
    Ok(())
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
