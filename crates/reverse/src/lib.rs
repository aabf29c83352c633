//! The reverse process: from noise back to data.
use forward::{Schedule, Timesteps};
use tch::Tensor;

// ANCHOR: predict_x0
/// x̂_0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t, written as √(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε̂
/// (DDPM eq. 4 solved for x_0).
pub fn predict_x0_from_eps(s: &Schedule, x_t: &Tensor, t: &Timesteps, eps: &Tensor) -> Tensor {
    t.gather(&s.sqrt_recip_alpha_bar, x_t) * x_t - t.gather(&s.sqrt_recipm1_alpha_bar, x_t) * eps
}
// ANCHOR_END: predict_x0

// ANCHOR: ddpm_step
/// One step of DDPM ancestral sampling (Algorithm 2) given ε̂:
/// x_{t−1} = μ̃_t(x̂_0, x_t) + σ_t z, with σ_t² = β̃_t and no noise at t = 0.
pub fn ddpm_step(
    s: &Schedule,
    x_t: &Tensor,
    t: &Timesteps,
    eps: &Tensor,
    z: &Tensor,
    clip: bool,
) -> Tensor {
    let mut x0 = predict_x0_from_eps(s, x_t, t, eps);
    if clip {
        x0 = x0.clamp(-1.0, 1.0);
    }
    let post = s
        .q_posterior(&x0, x_t, t)
        .expect("shapes checked by the caller");
    let nonzero = t
        .tensor()
        .ne(0)
        .to_kind(x_t.kind())
        .reshape(post.variance.size().as_slice());
    post.mean + nonzero * (post.log_variance * 0.5).exp() * z
}
// ANCHOR_END: ddpm_step

#[cfg(test)]
mod tests {
    use super::*;
    use forward::{oracle, ScheduleKind};
    use tch::{Device, Kind};

    #[test]
    fn x0_from_true_noise_is_exact() {
        tch::manual_seed(1);
        let s = Schedule::new(ScheduleKind::Linear, 1000, Device::Cpu).unwrap();
        let x0 = Tensor::rand([3, 1, 4, 4], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let eps = Tensor::randn([3, 1, 4, 4], (Kind::Float, Device::Cpu));
        let t = s.timesteps(&Tensor::from_slice(&[0i64, 300, 700])).unwrap();
        let xt = s.q_sample(&x0, &t, &eps).unwrap();
        let back = predict_x0_from_eps(&s, &xt, &t, &eps);
        assert!(f64::try_from((back - x0).abs().max()).unwrap() < 1e-3);
    }

    #[test]
    fn ddpm_step_with_true_noise_matches_oracle_posterior() {
        // Given the true ε, x̂_0 = x_0, so the step is mean + σ z of the exact posterior.
        tch::manual_seed(2);
        let s = Schedule::new(ScheduleKind::Linear, 50, Device::Cpu).unwrap();
        let x0 = Tensor::rand([1, 1, 2, 2], (Kind::Double, Device::Cpu)) * 1.6 - 0.8;
        let eps = Tensor::randn([1, 1, 2, 2], (Kind::Double, Device::Cpu));
        let z = Tensor::randn([1, 1, 2, 2], (Kind::Double, Device::Cpu));
        for step in [0usize, 1, 25, 49] {
            let t = s.timestep(step as i64, 1).unwrap();
            let xt = s.q_sample(&x0, &t, &eps).unwrap();
            let got = Vec::<f64>::try_from(ddpm_step(&s, &xt, &t, &eps, &z, false).flatten(0, -1))
                .unwrap();
            let b = oracle::betas(ScheduleKind::Linear, 50).unwrap();
            let to_nd = |x: &Tensor| {
                ndarray::ArrayD::from_shape_vec(
                    vec![4],
                    Vec::<f64>::try_from(x.flatten(0, -1)).unwrap(),
                )
                .unwrap()
            };
            let (mean, var) = oracle::posterior(&b, &to_nd(&x0), &to_nd(&xt), step);
            let zs = to_nd(&z);
            for i in 0..4 {
                let sigma = if step == 0 { 0.0 } else { var.sqrt() };
                let want = mean[i] + sigma * zs[i];
                // The schedule is stored in f32, so agreement is to f32 precision.
                assert!(
                    (got[i] - want).abs() < 1e-4,
                    "t={step}: {} vs {want}",
                    got[i]
                );
            }
        }
    }
}
