//! Samplers against closed forms, with a predictor whose answer is exact.
#[path = "../../forward/tests/oracle/mod.rs"]
mod oracle;

use forward::{x0_and_eps, Prediction};
use forward::{Schedule, ScheduleKind};
use network::{NoisePredictor, Result as NetResult};
use reverse::{
    ddim_sigma, ddim_step, ddpm_step, Pipeline, Sampler, Spacing, StepRecord, TimestepGrid,
    Variance,
};

/// Samples with `sampler`, keeping every step's record in `rec`.
fn sample_recorded(
    pipe: Pipeline,
    sampler: &Sampler,
    x_big_t: &Tensor,
    rec: &mut Vec<StepRecord>,
) -> reverse::Result<Tensor> {
    let grid = sampler.grid(pipe.schedule.steps)?;
    pipe.run(sampler, &grid, x_big_t, None, &mut |r| {
        rec.push(r.shallow_clone())
    })
}
use tch::{Device, Kind, Tensor};

/// If the data is N(μ, s²) per pixel, x_t is N(√ᾱ μ, ᾱ s² + 1 − ᾱ) and the
/// best noise prediction is exact: E[ε | x_t] = √(1−ᾱ)(x_t − √ᾱ μ)/(ᾱ s² + 1 − ᾱ).
struct GaussianData {
    alpha_bar: Tensor,
    mu: f64,
    s2: f64,
}

impl GaussianData {
    fn new(s: &Schedule, mu: f64, s2: f64) -> Self {
        Self {
            alpha_bar: Tensor::from_slice(&s.alpha_bar_host),
            mu,
            s2,
        }
    }
}

impl NoisePredictor for GaussianData {
    fn predict(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        _y: Option<&Tensor>,
        _train: bool,
    ) -> NetResult<Tensor> {
        let ab = self.alpha_bar.index_select(0, t).reshape([-1, 1, 1, 1]);
        let x = x_t.to_kind(Kind::Double);
        let eps =
            (1.0f64 - &ab).sqrt() * (x - ab.sqrt() * self.mu) / (&ab * self.s2 + (1.0f64 - &ab));
        Ok(eps.to_kind(x_t.kind()))
    }
    fn num_classes(&self) -> Option<i64> {
        None
    }
}

/// libtorch's generator is process-global and these tests reseed it; they
/// run on parallel threads, so each takes this lock.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

const SAMPLERS: [Sampler; 4] = [
    Sampler::Ddpm {
        variance: Variance::FixedSmall,
        clip: false,
    },
    Sampler::Ddpm {
        variance: Variance::FixedLarge,
        clip: true,
    },
    Sampler::Ddim {
        steps: 20,
        eta: 0.0,
        spacing: Spacing::Trailing,
        clip: false,
    },
    Sampler::Ddim {
        steps: 10,
        eta: 1.0,
        spacing: Spacing::Linspace,
        clip: true,
    },
];

#[test]
fn one_ddpm_step_is_the_exact_posterior_sample() {
    let _guard = serial();
    let s = Schedule::new(ScheduleKind::Linear, 50, Device::Cpu).unwrap();
    let b = oracle::betas(ScheduleKind::Linear, 50).unwrap();
    let model = GaussianData::new(&s, 0.3, 0.2);
    tch::manual_seed(4);
    let x_big_t = Tensor::randn([2, 1, 3, 3], (Kind::Float, Device::Cpu));
    let mut rec: Vec<StepRecord> = Vec::new();
    let sampler = Sampler::Ddpm {
        variance: Variance::FixedSmall,
        clip: false,
    };
    let _ = sample_recorded(
        Pipeline::new(&model, &s, Prediction::Epsilon),
        &sampler,
        &x_big_t,
        &mut rec,
    )
    .unwrap();
    assert_eq!(rec.len(), 50);
    let nd = |x: &Tensor| {
        ndarray::ArrayD::from_shape_vec(
            vec![18],
            Vec::<f64>::try_from(x.to_kind(Kind::Double).flatten(0, -1)).unwrap(),
        )
        .unwrap()
    };
    for r in rec.iter().filter(|r| [49, 25, 1, 0].contains(&r.t)) {
        // x̂_0 from the exact ε̂, in f64, then Bayes' rule in the oracle.
        let ab = oracle::alpha_bar(&b)[r.t as usize];
        let eps = nd(&r.out);
        let xt = nd(&r.x_t);
        let x0 = (&xt - &(eps * (1.0 - ab).sqrt())) / ab.sqrt();
        let (mean, var) = oracle::posterior(&b, &x0, &xt, r.t as usize);
        let want = mean + nd(&r.z) * if r.t == 0 { 0.0 } else { var.sqrt() };
        let got = nd(&r.x_prev);
        let err = (&got - &want).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
        assert!(err < 1e-4, "t = {}: max |Δ| = {err}", r.t);
        if r.t == 0 {
            assert_eq!(
                Vec::<f32>::try_from(r.z.flatten(0, -1))
                    .unwrap()
                    .iter()
                    .filter(|&&v| v != 0.0)
                    .count(),
                0,
                "no noise at the last step"
            );
        }
    }
}

#[test]
fn ddim_with_eta_one_and_all_steps_has_the_ddpm_variance() {
    let _guard = serial();
    for kind in ScheduleKind::ALL {
        let s = Schedule::new(kind, 1000, Device::Cpu).unwrap();
        let beta_tilde = Vec::<f64>::try_from(s.posterior_variance.to_kind(Kind::Double)).unwrap();
        let grid = TimestepGrid::new(1000, 1000, Spacing::Trailing).unwrap();
        for step in grid.steps() {
            let ab_prev = step.prev.map_or(1.0, |p| s.alpha_bar_host[p as usize]);
            let sigma = ddim_sigma(s.alpha_bar_host[step.t as usize], ab_prev, 1.0);
            let want = beta_tilde[step.t as usize];
            assert!(
                (sigma * sigma - want).abs() <= 1e-6 * want.max(1e-3),
                "{} t={}: {} vs {want}",
                kind.name(),
                step.t,
                sigma * sigma
            );
        }
    }
}

#[test]
fn ddim_with_eta_zero_is_deterministic_and_others_are_seeded() {
    let _guard = serial();
    let s = Schedule::new(ScheduleKind::Cosine, 200, Device::Cpu).unwrap();
    let model = GaussianData::new(&s, -0.2, 0.3);
    let x_big_t = Tensor::randn([3, 1, 4, 4], (Kind::Float, Device::Cpu));
    let run = |sampler: &Sampler, seed: i64| {
        tch::manual_seed(seed);
        Pipeline::new(&model, &s, Prediction::Epsilon)
            .sample(sampler, &x_big_t, None)
            .unwrap()
    };
    let ddim0 = Sampler::Ddim {
        steps: 25,
        eta: 0.0,
        spacing: Spacing::Trailing,
        clip: false,
    };
    assert!(
        run(&ddim0, 1).equal(&run(&ddim0, 2)),
        "η = 0 must not depend on the generator"
    );
    for sampler in &SAMPLERS {
        assert!(
            run(sampler, 9).equal(&run(sampler, 9)),
            "{sampler:?}: same seed, same samples"
        );
    }
    let ddim1 = Sampler::Ddim {
        steps: 25,
        eta: 1.0,
        spacing: Spacing::Trailing,
        clip: false,
    };
    assert!(!run(&ddim1, 1).equal(&run(&ddim1, 2)));
}

#[test]
fn samples_have_the_data_distribution() {
    let _guard = serial();
    // With the exact predictor, DDPM (all steps) and deterministic DDIM with
    // enough steps (the probability-flow ODE) draw from N(μ, s²). Stochastic
    // DDIM with a few long steps does not: its variance shrinks.
    let s = Schedule::new(ScheduleKind::Linear, 1000, Device::Cpu).unwrap();
    let (mu, s2) = (0.25, 0.09);
    let model = GaussianData::new(&s, mu, s2);
    tch::manual_seed(5);
    let x_big_t = Tensor::randn([512, 1, 4, 4], (Kind::Float, Device::Cpu));
    let ddim100 = Sampler::Ddim {
        steps: 100,
        eta: 0.0,
        spacing: Spacing::Trailing,
        clip: false,
    };
    for sampler in [SAMPLERS[0].clone(), ddim100] {
        let x = Pipeline::new(&model, &s, Prediction::Epsilon)
            .sample(&sampler, &x_big_t, None)
            .unwrap()
            .to_kind(Kind::Double);
        let (m, v) = (
            x.mean(Kind::Double).double_value(&[]),
            x.var(true).double_value(&[]),
        );
        // 8192 values: the mean's standard error is 0.0033; allow generous 5σ and 15% on the variance.
        assert!((m - mu).abs() < 0.017, "{sampler:?}: mean {m}");
        assert!((v - s2).abs() < 0.15 * s2, "{sampler:?}: variance {v}");
    }
}

#[test]
fn replaying_a_trace_reproduces_every_step_exactly() {
    let _guard = serial();
    let s = Schedule::new(ScheduleKind::Linear, 100, Device::Cpu).unwrap();
    let model = GaussianData::new(&s, 0.1, 0.2);
    let dir = std::env::temp_dir().join(format!("trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, sampler) in SAMPLERS.iter().enumerate() {
        tch::manual_seed(i as i64);
        let x_big_t = Tensor::randn([2, 1, 4, 4], (Kind::Float, Device::Cpu));
        let mut rec = Vec::new();
        let _ = sample_recorded(
            Pipeline::new(&model, &s, Prediction::Epsilon),
            sampler,
            &x_big_t,
            &mut rec,
        )
        .unwrap();
        let path = dir.join(format!("{i}.safetensors"));
        formats::trace::save(&path, &rec, &s, sampler, Prediction::Epsilon).unwrap();
        let loaded = formats::trace::load(&path).unwrap();
        assert_eq!(&loaded.sampler, sampler);
        assert_eq!(loaded.records.len(), rec.len());
        for r in &loaded.records {
            let t = s.timestep(r.t, 2).unwrap();
            let (x0, eps) = x0_and_eps(&s, loaded.prediction, &r.x_t, &t, &r.out);
            let (x0, eps) = match sampler {
                Sampler::Ddpm { clip: true, .. } | Sampler::Ddim { clip: true, .. } => {
                    let x0 = x0.clamp(-1.0, 1.0);
                    let eps = (&r.x_t - t.gather(&s.sqrt_alpha_bar, &r.x_t) * &x0)
                        / t.gather(&s.sqrt_one_minus_alpha_bar, &r.x_t);
                    (x0, eps)
                }
                _ => (x0, eps),
            };
            assert!(x0.equal(&r.x0), "{sampler:?} t={}: x̂_0", r.t);
            let replay = match *sampler {
                Sampler::Ddpm { variance, .. } => {
                    ddpm_step(&s, variance, &r.x_t, &t, &x0, &r.z).unwrap()
                }
                Sampler::Ddim { eta, .. } => ddim_step(
                    &s,
                    reverse::GridStep {
                        t: r.t,
                        prev: r.prev,
                    },
                    eta,
                    &x0,
                    &eps,
                    &r.z,
                ),
                _ => unreachable!("the trace test runs DDPM and DDIM"),
            };
            assert!(
                replay.equal(&r.x_prev),
                "{sampler:?} t={}: replay differs",
                r.t
            );
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn ddim_inversion_error_falls_with_more_steps() {
    let _guard = serial();
    let s = Schedule::new(ScheduleKind::Linear, 1000, Device::Cpu).unwrap();
    let model = GaussianData::new(&s, 0.2, 0.25);
    tch::manual_seed(8);
    let x0 =
        (Tensor::randn([4, 1, 4, 4], (Kind::Float, Device::Cpu)) * 0.5 + 0.2).to_kind(Kind::Float);
    let mut errs = Vec::new();
    for steps in [5usize, 20, 100] {
        let sampler = Sampler::Ddim {
            steps,
            eta: 0.0,
            spacing: Spacing::Trailing,
            clip: false,
        };
        let grid = sampler.grid(1000).unwrap();
        let x_big_t = Pipeline::new(&model, &s, Prediction::Epsilon)
            .invert(&grid, &x0, None)
            .unwrap();
        let back = Pipeline::new(&model, &s, Prediction::Epsilon)
            .sample(&sampler, &x_big_t, None)
            .unwrap();
        errs.push(max_abs(&back, &x0));
    }
    assert!(
        errs[0] > errs[1] && errs[1] > errs[2],
        "reconstruction errors {errs:?}"
    );
    assert!(errs[2] < 0.1, "{errs:?}");
}

#[test]
fn bad_sampler_settings_are_rejected() {
    let _guard = serial();
    let bad = |steps, eta| {
        Sampler::Ddim {
            steps,
            eta,
            spacing: Spacing::Linspace,
            clip: true,
        }
        .grid(1000)
        .unwrap_err()
        .to_string()
    };
    assert!(bad(0, 0.0).contains("0 sampling steps"));
    assert!(bad(1001, 0.0).contains("between 1 and T = 1000"));
    assert!(bad(50, -0.5).contains("η = -0.5"));
}
