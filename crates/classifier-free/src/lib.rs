//! Classifier-free guidance (Ho & Salimans 2022).
//!
//! One network learns both the conditional model ε(x_t, t, y) and the
//! unconditional one ε(x_t, t, ∅), because training replaces labels by the
//! null class ∅ = `num_classes` with probability `p_uncond`
//! ([`training::drop_labels`]). At sampling time the two are extrapolated:
//!
//!   ε̃ = ε_u + w (ε_c − ε_u)
//!
//! w = 1 is the conditional model, w = 0 the unconditional one, w > 1 pushes
//! samples further towards what makes them look like their class. The paper
//! writes ε̃ = (1 + w′) ε_c − w′ ε_u; the two agree with w = 1 + w′, so the
//! paper's "w′ = 0" (no guidance) is our w = 1.
use network::{NetworkError, NoisePredictor};
use tch::Tensor;

pub use training::drop_labels;

// ANCHOR: guided_eps
/// ε̃ = ε_u + w (ε_c − ε_u).
pub fn guided_eps(eps_uncond: &Tensor, eps_cond: &Tensor, w: f64) -> Tensor {
    // ANCHOR: SOLUTION_guidance
    eps_uncond + (eps_cond - eps_uncond) * w
    // ANCHOR_END: SOLUTION_guidance
}
// ANCHOR_END: guided_eps

// ANCHOR: guidance_rescale
/// CFG rescale (Lin et al. 2024, §3.4): the guided output ε̃ brought back to
/// the per-sample standard deviation of the conditional one, then blended,
/// φ · ε̃ · std(ε_c)/std(ε̃) + (1 − φ) · ε̃. Strong guidance inflates ε̃'s
/// scale; with zero terminal SNR that shows as over-exposed images.
pub fn rescale_guided(guided: &Tensor, eps_cond: &Tensor, phi: f64) -> Tensor {
    let dims: Vec<i64> = (1..guided.dim() as i64).collect();
    let std_c = eps_cond.std_dim(dims.as_slice(), true, true);
    let std_g = guided.std_dim(dims.as_slice(), true, true);
    guided * (std_c / std_g * phi + (1.0 - phi))
}
// ANCHOR_END: guidance_rescale

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GuidanceError {
    #[error("guidance scale w = {0} is negative (it extrapolates away from the class); pass --allow-negative-guidance if that is what you want")]
    Negative(f64),
    #[error("guidance scale w = {0} is out of range: use a finite w with |w| ≤ {MAX_GUIDANCE} (the book's sweeps stay below 10)")]
    NotFinite(f64),
    #[error("guidance needs a class-conditional model (this one has no classes)")]
    Unconditional,
    #[error("guidance rescale φ = {0} is out of range: use a number from 0 (off) to 1 (--guidance-rescale)")]
    Rescale(f64),
}

/// The largest |w| a [`Guided`] accepts: far beyond any useful scale, small
/// enough that ε̂ stays finite in float32.
pub const MAX_GUIDANCE: f64 = 100.0;

/// A guided predictor: any [`NoisePredictor`] with scale w. It is itself a
/// `NoisePredictor`, so every sampler (and the trace recorder) takes it as is.
pub struct Guided<'a> {
    model: &'a dyn NoisePredictor,
    pub w: f64,
    /// φ of [`rescale_guided`]; 0 (the default) leaves ε̃ as it is.
    pub rescale: f64,
    num_classes: i64,
}

impl<'a> Guided<'a> {
    /// w < 0 is refused unless `allow_negative`.
    pub fn new(
        model: &'a dyn NoisePredictor,
        w: f64,
        allow_negative: bool,
    ) -> Result<Self, GuidanceError> {
        if !(w.is_finite() && w.abs() <= MAX_GUIDANCE) {
            return Err(GuidanceError::NotFinite(w));
        }
        if w < 0.0 && !allow_negative {
            return Err(GuidanceError::Negative(w));
        }
        let num_classes = model.num_classes().ok_or(GuidanceError::Unconditional)?;
        Ok(Self {
            model,
            w,
            rescale: 0.0,
            num_classes,
        })
    }

    /// The same guidance with CFG rescale φ ∈ [0, 1] ([`rescale_guided`]).
    pub fn with_rescale(self, phi: f64) -> Result<Self, GuidanceError> {
        if !(0.0..=1.0).contains(&phi) {
            return Err(GuidanceError::Rescale(phi));
        }
        Ok(Self {
            rescale: phi,
            ..self
        })
    }

    /// ε̃ from the two halves, rescaled when φ > 0.
    fn combine(&self, eps_uncond: &Tensor, eps_cond: &Tensor) -> Tensor {
        let guided = guided_eps(eps_uncond, eps_cond, self.w);
        if self.rescale > 0.0 {
            rescale_guided(&guided, eps_cond, self.rescale)
        } else {
            guided
        }
    }
}

impl NoisePredictor for Guided<'_> {
    // ANCHOR: guided_predict
    /// Conditional and unconditional halves in one forward pass of batch 2N;
    /// w = 1 and w = 0 need only one of them, so they take one pass of batch N.
    fn predict(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        y: Option<&Tensor>,
        train: bool,
    ) -> network::Result<Tensor> {
        let Some(y) = y else {
            return self.model.predict(x_t, t, None, train); // no labels: unconditional
        };
        if self.w == 1.0 {
            return self.model.predict(x_t, t, Some(y), train);
        }
        if self.w == 0.0 && self.rescale == 0.0 {
            return self.model.predict(x_t, t, None, train);
        }
        let null = Tensor::full_like(y, self.num_classes);
        let out = self.model.predict(
            &Tensor::cat(&[x_t, x_t], 0),
            &Tensor::cat(&[t, t], 0),
            Some(&Tensor::cat(&[y, &null], 0)),
            train,
        )?;
        let halves = out.chunk(2, 0);
        Ok(self.combine(&halves[1], &halves[0]))
    }
    // ANCHOR_END: guided_predict

    fn num_classes(&self) -> Option<i64> {
        Some(self.num_classes)
    }
}

/// The same guidance with two separate forward passes, for the benchmark.
pub struct TwoPass<'a>(pub Guided<'a>);

impl NoisePredictor for TwoPass<'_> {
    fn predict(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        y: Option<&Tensor>,
        train: bool,
    ) -> network::Result<Tensor> {
        let cond = self.0.model.predict(x_t, t, y, train)?;
        let uncond = self.0.model.predict(x_t, t, None, train)?;
        Ok(self.0.combine(&uncond, &cond))
    }

    fn num_classes(&self) -> Option<i64> {
        Some(self.0.num_classes)
    }
}

impl From<GuidanceError> for NetworkError {
    fn from(e: GuidanceError) -> Self {
        NetworkError::Config(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn guidance_endpoints_and_paper_convention() {
        let u = Tensor::from_slice(&[1.0f32, -2.0]);
        let c = Tensor::from_slice(&[3.0f32, 0.5]);
        assert!(guided_eps(&u, &c, 0.0).equal(&u));
        assert!(guided_eps(&u, &c, 1.0).equal(&c));
        let w_paper = 2.0; // (1 + w′) ε_c − w′ ε_u
        let paper = &c * (1.0 + w_paper) - &u * w_paper;
        assert!(guided_eps(&u, &c, 1.0 + w_paper).allclose(&paper, 1e-6, 1e-6, false));
    }

    #[test]
    fn drop_rate_within_binomial_tolerance() {
        tch::manual_seed(3);
        let n = 100_000i64;
        let labels = Tensor::randint(10, [n], (Kind::Int64, Device::Cpu));
        let out = drop_labels(&labels, 10, 0.1);
        let dropped = out.eq(10).sum(Kind::Int64).int64_value(&[]) as f64;
        // Binomial(n, 0.1): sd = √(n·0.1·0.9) ≈ 94.9; allow 5 sd.
        assert!((dropped - 10_000.0).abs() < 5.0 * 94.9, "dropped {dropped}");
        // Kept labels are unchanged.
        let kept = out.ne(10);
        assert!(out.masked_select(&kept).equal(&labels.masked_select(&kept)));
    }
}
