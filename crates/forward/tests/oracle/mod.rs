//! An independent f64 reference for the forward process, written with plain
//! loops over `ndarray` (no tch). It exists to check the tensor code and to
//! show the math with nothing in the way.
//!
//! The posterior is derived here by Bayes' rule on two Gaussians, not from the
//! closed-form coefficients that `forward::Schedule` uses.
//!
//! Test code: the forward tests and the sampler tests include this file.
#![allow(dead_code)] // each test binary uses part of it
use forward::{ForwardError, ScheduleKind, COSINE_S, MAX_BETA, SD_BETA_END, SD_BETA_START};
use ndarray::{Array1, ArrayD};

/// β_0 … β_{T−1} of a schedule.
pub fn betas(kind: ScheduleKind, steps: usize) -> Result<Array1<f64>, ForwardError> {
    if steps < 2 {
        return Err(ForwardError::InvalidSchedule(format!(
            "T = {steps}: need at least 2 steps"
        )));
    }
    let t = steps as f64;
    let lerp =
        |a: f64, b: f64| Array1::from_shape_fn(steps, |i| a + (b - a) * i as f64 / (t - 1.0));
    match kind {
        ScheduleKind::Linear => Ok(lerp(1e-4, 0.02)),
        ScheduleKind::SeedLinear => {
            let (a, b) = (3e-4 * 1000.0 / t, 3e-2 * 1000.0 / t);
            if b >= 1.0 {
                return Err(ForwardError::InvalidSchedule(format!(
                    "seed_linear with T = {steps} would end at β = {b:.3} ≥ 1; use T ≥ 31"
                )));
            }
            Ok(lerp(a, b))
        }
        ScheduleKind::Cosine => {
            let f = |i: usize| {
                let x = (i as f64 / t + COSINE_S) / (1.0 + COSINE_S) * std::f64::consts::PI / 2.0;
                x.cos() * x.cos()
            };
            Ok(Array1::from_shape_fn(steps, |i| {
                (1.0 - f(i + 1) / f(i)).min(MAX_BETA)
            }))
        }
        ScheduleKind::ScaledLinear => {
            Ok(lerp(SD_BETA_START.sqrt(), SD_BETA_END.sqrt()).mapv(|r| r * r))
        }
    }
}

/// Zero terminal SNR by the paper's own steps (Lin et al. 2024, Algorithm 1),
/// written as loops: √ᾱ, shift, scale, square, then back to β.
pub fn rescale_zero_terminal_snr(betas: &Array1<f64>) -> Array1<f64> {
    let sqrt_ab: Vec<f64> = alpha_bar(betas).iter().map(|a| a.sqrt()).collect();
    let (first, last) = (sqrt_ab[0], sqrt_ab[sqrt_ab.len() - 1]);
    let ab: Vec<f64> = sqrt_ab
        .iter()
        .map(|r| {
            let shifted = (r - last) * first / (first - last);
            shifted * shifted
        })
        .collect();
    let mut out = Array1::zeros(ab.len());
    for t in 0..ab.len() {
        let alpha = if t == 0 { ab[0] } else { ab[t] / ab[t - 1] };
        out[t] = 1.0 - alpha;
    }
    out
}

/// ᾱ_t = ∏_{s ≤ t} (1 − β_s).
pub fn alpha_bar(betas: &Array1<f64>) -> Array1<f64> {
    let mut acc = 1.0;
    betas.mapv(|b| {
        acc *= 1.0 - b;
        acc
    })
}

/// Mean and variance of q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I).
pub fn q_mean_var(x0: &ArrayD<f64>, alpha_bar_t: f64) -> (ArrayD<f64>, f64) {
    (x0.mapv(|x| alpha_bar_t.sqrt() * x), 1.0 - alpha_bar_t)
}

// ANCHOR: oracle_posterior
/// q(x_{t−1} | x_t, x_0) by Bayes' rule, elementwise:
///   prior      q(x_{t−1} | x_0)     = N(√ᾱ_{t−1} x_0, 1 − ᾱ_{t−1})
///   likelihood q(x_t | x_{t−1})     = N(√α_t x_{t−1}, β_t)
/// The product of the two is Gaussian in x_{t−1}: precisions add, and the mean
/// is the precision-weighted average of the two "opinions" about x_{t−1}.
pub fn posterior(
    betas: &Array1<f64>,
    x0: &ArrayD<f64>,
    xt: &ArrayD<f64>,
    t: usize,
) -> (ArrayD<f64>, f64) {
    let ab = alpha_bar(betas);
    let ab_prev = if t == 0 { 1.0 } else { ab[t - 1] };
    let (beta, alpha) = (betas[t], 1.0 - betas[t]);
    let prior_var = 1.0 - ab_prev;
    if prior_var == 0.0 {
        // At the first step x_{t−1} = x_0 exactly: the posterior is a point mass.
        return (x0.clone(), 0.0);
    }
    let precision = 1.0 / prior_var + alpha / beta;
    let var = 1.0 / precision;
    let mut mean = x0.mapv(|x| ab_prev.sqrt() * x / prior_var);
    mean.zip_mut_with(xt, |m, &x| *m = var * (*m + alpha.sqrt() * x / beta));
    (mean, var)
}
// ANCHOR_END: oracle_posterior
