//! Classifier-free guidance (Ho & Salimans 2022).
use tch::Tensor;

// ANCHOR: guided_eps
/// ε̃ = ε_u + w (ε_c − ε_u). w = 1 is the plain conditional model, w = 0 the
/// unconditional one. The paper writes (1 + w′) ε_c − w′ ε_u, so w = 1 + w′.
pub fn guided_eps(eps_uncond: &Tensor, eps_cond: &Tensor, w: f64) -> Tensor {
    eps_uncond + (eps_cond - eps_uncond) * w
}
// ANCHOR_END: guided_eps

/// Label dropout happens during training, so it lives in `training`; it is
/// re-exported here because it is half of the method.
pub use training::drop_labels;

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
