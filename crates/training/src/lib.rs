//! Training the denoiser: what the network is asked to predict, and the loss.
use forward::{Schedule, Timesteps};
use tch::Tensor;

/// What the network's output means. The samplers read the same enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use forward::ScheduleKind;
    use tch::{Device, Kind};

    #[test]
    fn velocity_recovers_x0_and_noise() {
        // From x_t and v: x_0 = √ᾱ x_t − √(1−ᾱ) v and ε = √(1−ᾱ) x_t + √ᾱ v.
        tch::manual_seed(0);
        let s = Schedule::new(ScheduleKind::Cosine, 100, Device::Cpu).unwrap();
        let x0 = Tensor::randn([4, 1, 3, 3], (Kind::Float, Device::Cpu));
        let eps = Tensor::randn([4, 1, 3, 3], (Kind::Float, Device::Cpu));
        let t = s
            .timesteps(&Tensor::from_slice(&[0i64, 10, 50, 99]))
            .unwrap();
        let xt = s.q_sample(&x0, &t, &eps).unwrap();
        let v = target(Prediction::Velocity, &s, &x0, &eps, &t);
        let (a, b) = (
            t.gather(&s.sqrt_alpha_bar, &x0),
            t.gather(&s.sqrt_one_minus_alpha_bar, &x0),
        );
        let x0_back = &a * &xt - &b * &v;
        let eps_back = &b * &xt + &a * &v;
        assert!(f64::try_from((x0_back - &x0).abs().max()).unwrap() < 1e-5);
        assert!(f64::try_from((eps_back - &eps).abs().max()).unwrap() < 1e-5);
        assert!(target(Prediction::Epsilon, &s, &x0, &eps, &t).equal(&eps));
        assert!(target(Prediction::Sample, &s, &x0, &eps, &t).equal(&x0));
    }
}
