//! What a network's output means, and how to read it back: the targets of
//! ε-, x_0- and v-prediction, and their inverse (x̂_0, ε̂) for the samplers.
//! Both training and sampling need these, so they live with the schedule.
use crate::{Schedule, Timesteps};
use tch::Tensor;

/// What the network's output means. Training and the samplers read the same enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// ε, the noise that was added (DDPM).
    Epsilon,
    /// x_0, the clean image.
    Sample,
    /// v = √ᾱ_t ε − √(1−ᾱ_t) x_0 (Salimans & Ho 2022).
    Velocity,
}

// ANCHOR: target
/// The regression target for x_0, noise ε and timesteps t.
pub fn target(
    kind: Prediction,
    s: &Schedule,
    x0: &Tensor,
    noise: &Tensor,
    t: &Timesteps,
) -> Tensor {
    match kind {
        Prediction::Epsilon => noise.shallow_clone(),
        Prediction::Sample => x0.shallow_clone(),
        Prediction::Velocity => {
            t.gather(&s.sqrt_alpha_bar, x0) * noise - t.gather(&s.sqrt_one_minus_alpha_bar, x0) * x0
        }
    }
}
// ANCHOR_END: target

// ANCHOR: predict_x0
/// x̂_0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t, written as √(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε̂
/// (DDPM eq. 4 solved for x_0).
pub fn predict_x0_from_eps(s: &Schedule, x_t: &Tensor, t: &Timesteps, eps: &Tensor) -> Tensor {
    t.gather(&s.sqrt_recip_alpha_bar, x_t) * x_t - t.gather(&s.sqrt_recipm1_alpha_bar, x_t) * eps
}
// ANCHOR_END: predict_x0

/// Reads a network output of any [`Prediction`] kind as the pair (x̂_0, ε̂).
pub fn x0_and_eps(
    s: &Schedule,
    kind: Prediction,
    x_t: &Tensor,
    t: &Timesteps,
    out: &Tensor,
) -> (Tensor, Tensor) {
    let (a, b) = (
        t.gather(&s.sqrt_alpha_bar, x_t),
        t.gather(&s.sqrt_one_minus_alpha_bar, x_t),
    );
    match kind {
        Prediction::Epsilon => (predict_x0_from_eps(s, x_t, t, out), out.shallow_clone()),
        Prediction::Sample => (out.shallow_clone(), (x_t - &a * out) / &b),
        Prediction::Velocity => (&a * x_t - &b * out, &b * x_t + &a * out),
    }
}
