//! Closed forms that the chapter "Where the loss comes from" derives, in plain
//! f64, so that its tests can hold the book's tensor code against them; and
//! [`two_d`], a 2-D mixture of Gaussians whose noised densities and exact
//! noise prediction are known ("Diffusion in two dimensions").
//!
//! The chapter counts timesteps as the papers do, t = 1 … T with x_0 the data,
//! so that every noised state has a name; the functions take the schedule's
//! numbers for one step, which makes them independent of either index.

pub mod two_d;

// ANCHOR: gaussian_kl
/// KL(N(μ₁, σ₁²) ‖ N(μ₂, σ₂²)) in one dimension (eq. 8); a diagonal Gaussian
/// in d dimensions is the sum over its coordinates.
pub fn gaussian_kl(mu1: f64, var1: f64, mu2: f64, var2: f64) -> f64 {
    0.5 * ((var2 / var1).ln() + (var1 + (mu1 - mu2).powi(2)) / var2 - 1.0)
}
// ANCHOR_END: gaussian_kl

// ANCHOR: elbo_weight
/// λ_t of eq. (11): the ELBO term L_{t−1} is λ_t‖ε − ε_θ‖² when the model's
/// mean is written through ε_θ and its variance is σ_t². `beta` is β_t,
/// `alpha_bar` is ᾱ_t; with σ_t² = β̃_t this is β_t / (2 α_t (1 − ᾱ_{t−1})).
pub fn elbo_weight(beta: f64, alpha_bar: f64, sigma2: f64) -> f64 {
    let alpha = 1.0 - beta;
    beta * beta / (2.0 * sigma2 * alpha * (1.0 - alpha_bar))
}
// ANCHOR_END: elbo_weight
