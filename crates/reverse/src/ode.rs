//! Sampling as solving an ODE (the "score and ODE" chapter).
//!
//! In EDM's coordinates (Karras et al. 2022) x̃ = x_t/√ᾱ_t = x_0 + σ ε with
//! σ = √((1 − ᾱ)/ᾱ), the probability-flow ODE of the model is
//!
//!   dx̃/dσ = (x̃ − D(x̃; σ))/σ,
//!
//! where D is the denoiser: the network's x̂_0 at noise level σ. Every solver
//! here walks a [`Sigmas`] list σ_0 > σ_1 > … > σ_S = 0 and calls D once per
//! evaluation; at σ = 0 the two coordinates agree and x̃ is the sample.
use crate::{Result, ReverseError, Spacing, StepRecord, TimestepGrid};
use forward::{Prediction, Schedule};
use network::NoisePredictor;
use tch::{Kind, Tensor};

/// Where the solvers' noise levels come from.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigmaSpacing {
    /// σ at the book's timestep grid (the same steps DDIM takes).
    Timesteps { spacing: Spacing },
    /// EDM eq. 5: σ_i = (σ_max^{1/ρ} + i/(S−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ
    /// between σ(T−1) and σ(0), denser near the data (ρ = 7 in EDM).
    Karras { rho: f64 },
}

/// S noise levels and the model time of each, then σ_S = 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Sigmas {
    /// σ_0 > … > σ_{S−1} > σ_S = 0.
    pub sigma: Vec<f64>,
    /// The timestep the network is shown at σ_i (i < S); fractional on
    /// Karras' σs, interpolated in log σ between training steps.
    pub t: Vec<f64>,
}

/// σ(t) = √((1 − ᾱ_t)/ᾱ_t) at a training step.
pub fn sigma_at(s: &Schedule, t: usize) -> f64 {
    let ab = s.alpha_bar_host[t];
    ((1.0 - ab) / ab).sqrt()
}

impl Sigmas {
    /// σ at each timestep of a grid; its last step ends on ᾱ = 1, σ = 0.
    pub fn from_grid(s: &Schedule, grid: &TimestepGrid) -> Self {
        let t: Vec<f64> = grid.steps().iter().map(|g| g.t as f64).collect();
        let mut sigma: Vec<f64> = grid
            .steps()
            .iter()
            .map(|g| sigma_at(s, g.t as usize))
            .collect();
        sigma.push(0.0);
        Self { sigma, t }
    }

    // ANCHOR: sigmas
    /// S steps of `spacing` out of the schedule's T.
    pub fn new(s: &Schedule, steps: usize, spacing: SigmaSpacing) -> Result<Self> {
        match spacing {
            SigmaSpacing::Timesteps { spacing } => Ok(Self::from_grid(
                s,
                &TimestepGrid::new(s.steps, steps, spacing)?,
            )),
            SigmaSpacing::Karras { rho } => {
                if !(rho.is_finite() && rho > 0.0) || steps < 2 || steps > s.steps {
                    return Err(ReverseError::Config(format!(
                        "Karras σs with ρ = {rho} and {steps} steps: ρ must be positive and the steps between 2 and T = {}",
                        s.steps
                    )));
                }
                let (lo, hi) = (
                    sigma_at(s, 0).powf(1.0 / rho),
                    sigma_at(s, s.steps - 1).powf(1.0 / rho),
                );
                let mut sigma: Vec<f64> = (0..steps)
                    .map(|i| (hi + i as f64 / (steps - 1) as f64 * (lo - hi)).powf(rho))
                    .collect();
                let t = sigma.iter().map(|&x| t_at(s, x)).collect();
                sigma.push(0.0);
                Ok(Self { sigma, t })
            }
        }
    }
    // ANCHOR_END: sigmas

    pub fn steps(&self) -> usize {
        self.t.len()
    }
}

/// The (fractional) training step whose σ is `sigma`, linear in log σ.
fn t_at(s: &Schedule, sigma: f64) -> f64 {
    let log = |t| sigma_at(s, t).ln();
    let target = sigma.ln();
    let k = (0..s.steps - 1)
        .find(|&k| log(k + 1) >= target)
        .unwrap_or(s.steps - 2);
    let w = ((target - log(k)) / (log(k + 1) - log(k))).clamp(0.0, 1.0);
    k as f64 + w
}

// ANCHOR: denoiser
/// D(x̃; σ) = c_skip x̃ + c_out F(c_in x̃, t): the network F's x̂_0 in EDM's
/// coordinates. c_in = 1/√(σ² + 1) turns x̃ back into the x_t the network
/// was trained on; c_skip and c_out depend on what F predicts.
pub fn edm_coefficients(prediction: Prediction, sigma: f64) -> (f64, f64, f64) {
    let c_in = 1.0 / (sigma * sigma + 1.0).sqrt();
    let (c_skip, c_out) = match prediction {
        Prediction::Epsilon => (1.0, -sigma), // x̂_0 = x̃ − σ ε̂
        Prediction::Sample => (0.0, 1.0),     // x̂_0 = F
        Prediction::Velocity => (c_in * c_in, -sigma * c_in), // x̂_0 = √ᾱ x_t − √(1−ᾱ) v̂
    };
    (c_in, c_skip, c_out)
}
// ANCHOR_END: denoiser

// ANCHOR: euler_step
/// One Euler step of dx̃/dσ = (x̃ − D)/σ from σ to σ_next.
pub fn euler_step(x: &Tensor, d: &Tensor, sigma: f64, sigma_next: f64) -> Tensor {
    let slope = (x - d) / sigma;
    x + slope * (sigma_next - sigma)
}
// ANCHOR_END: euler_step

// ANCHOR: dpm_update
/// DPM-Solver++(2M)'s update (Lu et al. 2022, Algorithm 2) in x̃: with
/// λ = −log σ and h = λ_next − λ, x̃_next = (σ_next/σ) x̃ + (1 − σ_next/σ) D̂,
/// where D̂ = D is first order (DDIM) and, given the step before
/// (h_prev, D_prev), D̂ = (1 + 1/2r) D − (1/2r) D_prev with r = h_prev/h.
pub fn dpm_solver_pp_2m_update(
    x: &Tensor,
    d: &Tensor,
    sigma: f64,
    sigma_next: f64,
    prev: Option<(f64, &Tensor)>,
) -> Tensor {
    // ANCHOR: SOLUTION_dpm_update
    let ratio = sigma_next / sigma; // e^{−h}
    let d_hat = match prev {
        Some((h_prev, d_prev)) if sigma_next > 0.0 => {
            let r = h_prev / (sigma / sigma_next).ln();
            d * (1.0 + 0.5 / r) - d_prev * (0.5 / r)
        }
        _ => d.shallow_clone(),
    };
    x * ratio + d_hat * (1.0 - ratio)
    // ANCHOR_END: SOLUTION_dpm_update
}
// ANCHOR_END: dpm_update

/// The ODE solvers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Solver {
    /// First order, one evaluation a step; DDIM (η = 0) in other coordinates.
    Euler,
    /// EDM Algorithm 1 (deterministic): Euler, then the trapezoid rule with a
    /// second evaluation at the Euler point; 2S − 1 evaluations (none at σ = 0).
    Heun,
    /// DPM-Solver++(2M): second order from the previous step's D, one
    /// evaluation a step; first order at the first and the last step.
    DpmSolverPp2M,
}

/// One D(x̃; σ_i) evaluation: the network's raw output and x̂_0.
struct Eval {
    out: Tensor,
    d: Tensor,
}

/// The model side of the solvers: D(x̃; σ) from a network, what it predicts,
/// and whether x̂_0 is clipped to the data range [−1, 1].
pub struct Denoiser<'a> {
    pub model: &'a dyn NoisePredictor,
    pub prediction: Prediction,
    pub clip: bool,
}

impl Denoiser<'_> {
    fn eval(&self, x: &Tensor, sigma: f64, t: f64, y: Option<&Tensor>) -> Result<Eval> {
        let (c_in, c_skip, c_out) = edm_coefficients(self.prediction, sigma);
        let n = x.size()[0];
        // Integer timesteps stay integers (exact predictors index by them).
        let t = if t.fract() == 0.0 {
            Tensor::full([n], t as i64, (Kind::Int64, x.device()))
        } else {
            Tensor::full([n], t, (Kind::Float, x.device()))
        };
        let out = tch::no_grad(|| self.model.predict(&(x * c_in), &t, y, false))?;
        let mut d = x * c_skip + &out * c_out;
        if self.clip {
            d = d.clamp(-1.0, 1.0);
        }
        Ok(Eval { out, d })
    }

    // ANCHOR: solve
    /// Solves from x_T (the usual N(0, I) draw at σ_0) to x_0. `observe`
    /// sees each evaluation, in x_t's coordinates, as a [`StepRecord`]:
    /// `t` is the nearest training step and `x_prev` the point after it.
    pub fn solve(
        &self,
        solver: Solver,
        sig: &Sigmas,
        x_big_t: &Tensor,
        y: Option<&Tensor>,
        observe: &mut dyn FnMut(&StepRecord),
    ) -> Result<Tensor> {
        let vp = |x: &Tensor, sigma: f64| x / (sigma * sigma + 1.0).sqrt();
        // One record per evaluation: at (σ_i, t_i), moving to (σ_j, t_j).
        let mut record = |x: &Tensor, i: usize, e: &Eval, x_next: &Tensor, j: usize| {
            observe(&StepRecord {
                t: sig.t[i].round() as i64,
                prev: sig.t.get(j).map(|t| t.round() as i64),
                x_t: vp(x, sig.sigma[i]),
                out: e.out.shallow_clone(),
                x0: e.d.shallow_clone(),
                z: x.zeros_like(),
                x_prev: vp(x_next, sig.sigma[j]),
            })
        };
        let mut x = x_big_t * (sig.sigma[0] * sig.sigma[0] + 1.0).sqrt(); // x̃ = x_T/√ᾱ
        let mut prev: Option<(f64, Tensor)> = None; // DPM-Solver++: (h, D) of the step before
        for i in 0..sig.steps() {
            let (sigma, sigma_next) = (sig.sigma[i], sig.sigma[i + 1]);
            let e = self.eval(&x, sigma, sig.t[i], y)?;
            let x_next = match solver {
                Solver::Euler => euler_step(&x, &e.d, sigma, sigma_next),
                Solver::Heun => {
                    let x_euler = euler_step(&x, &e.d, sigma, sigma_next);
                    if sigma_next == 0.0 {
                        x_euler // the last step: Euler (D at σ = 0 is not defined)
                    } else {
                        record(&x, i, &e, &x_euler, i + 1);
                        let e2 = self.eval(&x_euler, sigma_next, sig.t[i + 1], y)?;
                        let slope = ((&x - &e.d) / sigma + (&x_euler - &e2.d) / sigma_next) * 0.5;
                        let x_heun = &x + slope * (sigma_next - sigma);
                        record(&x_euler, i + 1, &e2, &x_heun, i + 1);
                        x = x_heun;
                        continue;
                    }
                }
                Solver::DpmSolverPp2M => {
                    let last = prev.as_ref().map(|(h, d)| (*h, d));
                    let x_next = dpm_solver_pp_2m_update(&x, &e.d, sigma, sigma_next, last);
                    prev = Some(((sigma / sigma_next).ln(), e.d.shallow_clone()));
                    x_next
                }
            };
            record(&x, i, &e, &x_next, i + 1);
            x = x_next;
        }
        Ok(x)
    }
    // ANCHOR_END: solve
}
