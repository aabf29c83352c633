//! The reverse process: from noise back to data.
use forward::{Schedule, Timesteps};
use network::NoisePredictor;
use tch::{Kind, Tensor};
use training::Prediction;

#[derive(Debug, thiserror::Error)]
pub enum ReverseError {
    #[error(transparent)]
    Forward(#[from] forward::ForwardError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
}

pub type Result<T> = std::result::Result<T, ReverseError>;

// ANCHOR: predict_x0
/// x̂_0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t, written as √(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε̂
/// (DDPM eq. 4 solved for x_0).
pub fn predict_x0_from_eps(s: &Schedule, x_t: &Tensor, t: &Timesteps, eps: &Tensor) -> Tensor {
    t.gather(&s.sqrt_recip_alpha_bar, x_t) * x_t - t.gather(&s.sqrt_recipm1_alpha_bar, x_t) * eps
}
// ANCHOR_END: predict_x0

/// Reads a network output of any [`Prediction`] kind as the pair (x̂_0, ε̂).
pub fn x0_and_eps(s: &Schedule, kind: Prediction, x_t: &Tensor, t: &Timesteps, out: &Tensor) -> (Tensor, Tensor) {
    let (a, b) = (t.gather(&s.sqrt_alpha_bar, x_t), t.gather(&s.sqrt_one_minus_alpha_bar, x_t));
    match kind {
        Prediction::Epsilon => (predict_x0_from_eps(s, x_t, t, out), out.shallow_clone()),
        Prediction::Sample => (out.shallow_clone(), (x_t - &a * out) / &b),
        Prediction::Velocity => (&a * x_t - &b * out, &b * x_t + &a * out),
    }
}

// ANCHOR: ddpm_step
/// One step of DDPM ancestral sampling (Algorithm 2) given x̂_0:
/// x_{t−1} = μ̃_t(x̂_0, x_t) + σ_t z with σ_t² = β̃_t, and no noise at t = 0.
pub fn ddpm_step(s: &Schedule, x_t: &Tensor, t: &Timesteps, x0_hat: &Tensor, z: &Tensor) -> Result<Tensor> {
    let post = s.q_posterior(x0_hat, x_t, t)?;
    let nonzero = t.tensor().ne(0).to_kind(x_t.kind()).reshape(post.variance.size().as_slice());
    Ok(post.mean + nonzero * (post.log_variance * 0.5).exp() * z)
}
// ANCHOR_END: ddpm_step

// ANCHOR: sample_ddpm
/// Runs the whole reverse chain from x_T to x_0 (DDPM Algorithm 2), calling
/// `on_step(t)` after each step.
pub fn sample_ddpm(
    model: &dyn NoisePredictor,
    s: &Schedule,
    kind: Prediction,
    x_big_t: &Tensor,
    y: Option<&Tensor>,
    clip: bool,
    mut on_step: impl FnMut(i64),
) -> Result<Tensor> {
    let n = x_big_t.size()[0];
    let mut x = x_big_t.shallow_clone();
    for step in (0..s.steps as i64).rev() {
        let t = s.timestep(step, n)?;
        let out = tch::no_grad(|| model.predict(&x, t.tensor(), y, false))?;
        let (mut x0, _) = x0_and_eps(s, kind, &x, &t, &out);
        if clip {
            x0 = x0.clamp(-1.0, 1.0);
        }
        x = ddpm_step(s, &x, &t, &x0, &x.randn_like())?;
        on_step(step);
    }
    Ok(x)
}
// ANCHOR_END: sample_ddpm

/// Fraction of pixels outside [−1, 1] (a quick health check of samples).
pub fn out_of_range(x: &Tensor) -> f64 {
    x.abs().gt(1.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use forward::{oracle, ScheduleKind};
    use tch::Device;

    #[test]
    fn every_prediction_kind_reads_back_x0_and_eps() {
        tch::manual_seed(1);
        let s = Schedule::new(ScheduleKind::Linear, 1000, Device::Cpu).unwrap();
        let x0 = Tensor::rand([3, 1, 4, 4], (Kind::Double, Device::Cpu)) * 2.0 - 1.0;
        let eps = Tensor::randn([3, 1, 4, 4], (Kind::Double, Device::Cpu));
        let t = s.timesteps(&Tensor::from_slice(&[0i64, 300, 700])).unwrap();
        let xt = s.q_sample(&x0, &t, &eps).unwrap();
        for kind in [Prediction::Epsilon, Prediction::Sample, Prediction::Velocity] {
            let out = training::target(kind, &s, &x0, &eps, &t);
            let (x0_hat, eps_hat) = x0_and_eps(&s, kind, &xt, &t, &out);
            // The schedule is stored in f32; 1/√ᾱ reaches ~1e2, so agreement is ~1e-4.
            assert!((x0_hat - &x0).abs().max().double_value(&[]) < 1e-3, "{kind:?} x0");
            assert!((eps_hat - &eps).abs().max().double_value(&[]) < 1e-3, "{kind:?} eps");
        }
    }

    #[test]
    fn ddpm_step_with_true_x0_matches_oracle_posterior() {
        tch::manual_seed(2);
        let s = Schedule::new(ScheduleKind::Linear, 50, Device::Cpu).unwrap();
        let b = oracle::betas(ScheduleKind::Linear, 50).unwrap();
        let x0 = Tensor::rand([1, 1, 2, 2], (Kind::Double, Device::Cpu)) * 1.6 - 0.8;
        let eps = Tensor::randn([1, 1, 2, 2], (Kind::Double, Device::Cpu));
        let z = Tensor::randn([1, 1, 2, 2], (Kind::Double, Device::Cpu));
        let nd = |x: &Tensor| ndarray::ArrayD::from_shape_vec(vec![4], Vec::<f64>::try_from(x.flatten(0, -1)).unwrap()).unwrap();
        for step in [0usize, 1, 25, 49] {
            let t = s.timestep(step as i64, 1).unwrap();
            let xt = s.q_sample(&x0, &t, &eps).unwrap();
            let got = Vec::<f64>::try_from(ddpm_step(&s, &xt, &t, &x0, &z).unwrap().flatten(0, -1)).unwrap();
            let (mean, var) = oracle::posterior(&b, &nd(&x0), &nd(&xt), step);
            let zs = nd(&z);
            for i in 0..4 {
                let sigma = if step == 0 { 0.0 } else { var.sqrt() };
                let want = mean[i] + sigma * zs[i];
                assert!((got[i] - want).abs() < 1e-5, "t={step}: {} vs {want}", got[i]);
            }
        }
    }
}
