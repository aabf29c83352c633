//! Guidance: one batched pass, the null class, every sampler, bad input.
use classifier_free::{GuidanceError, Guided, TwoPass};
use forward::Prediction;
use forward::{Schedule, ScheduleKind};
use network::{NoisePredictor, SeedUNet, SeedUNetConfig};
use reverse::{Pipeline, Sampler, Spacing, Variance};
use std::cell::RefCell;
use tch::{nn, Device, Kind, Tensor};

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wraps a model and records the labels of every call.
struct Recording<'a> {
    inner: &'a dyn NoisePredictor,
    calls: RefCell<Vec<Option<Vec<i64>>>>,
}

impl NoisePredictor for Recording<'_> {
    fn predict(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: Option<&Tensor>,
        train: bool,
    ) -> network::Result<Tensor> {
        self.calls
            .borrow_mut()
            .push(y.map(|y| Vec::<i64>::try_from(y).unwrap()));
        self.inner.predict(x, t, y, train)
    }
    fn num_classes(&self) -> Option<i64> {
        self.inner.num_classes()
    }
}

fn seed_unet(vs: &nn::VarStore) -> SeedUNet {
    SeedUNet::new(
        &vs.root(),
        SeedUNetConfig {
            in_channels: 1,
            channels: 32,
            num_classes: Some(10),
            full_res_skip: false,
        },
    )
    .unwrap()
}

#[test]
fn one_batched_pass_equals_two_passes_and_w_0_1_take_one_of_batch_n() {
    let _g = serial();
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = seed_unet(&vs);
    let rec = Recording {
        inner: &model,
        calls: RefCell::new(Vec::new()),
    };
    let x = Tensor::randn([3, 1, 28, 28], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[5i64, 500, 999]);
    let y = Tensor::from_slice(&[1i64, 4, 9]);
    let cond = model.predict(&x, &t, Some(&y), false).unwrap();
    let uncond = model.predict(&x, &t, None, false).unwrap();

    let g = Guided::new(&rec, 3.0, false).unwrap();
    let guided = g.predict(&x, &t, Some(&y), false).unwrap();
    let calls = rec.calls.borrow().clone();
    assert_eq!(
        calls,
        vec![Some(vec![1, 4, 9, 10, 10, 10])],
        "one pass of 2N; the second half is the null class"
    );
    let naive = &uncond + (&cond - &uncond) * 3.0;
    assert!(guided.allclose(&naive, 1e-5, 1e-5, false));
    let two = TwoPass(Guided::new(&model, 3.0, false).unwrap())
        .predict(&x, &t, Some(&y), false)
        .unwrap();
    assert!(two.allclose(&naive, 1e-6, 1e-6, false));

    rec.calls.borrow_mut().clear();
    assert!(Guided::new(&rec, 1.0, false)
        .unwrap()
        .predict(&x, &t, Some(&y), false)
        .unwrap()
        .equal(&cond));
    assert!(Guided::new(&rec, 0.0, false)
        .unwrap()
        .predict(&x, &t, Some(&y), false)
        .unwrap()
        .equal(&uncond));
    assert_eq!(
        rec.calls.borrow().clone(),
        vec![Some(vec![1, 4, 9]), None],
        "w = 1 and w = 0: one pass of N each"
    );
}

/// Data N(μ_y, s²) per class, ∅ = N(μ_∅, s²): the exact ε is affine in μ, so
/// guiding with w is sampling the class mean μ_∅ + w (μ_y − μ_∅) exactly.
struct ClassMeans {
    alpha_bar: Tensor,
    means: Vec<f64>, // index K = the null class
}

impl NoisePredictor for ClassMeans {
    fn predict(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: Option<&Tensor>,
        _: bool,
    ) -> network::Result<Tensor> {
        let k = self.means.len() as i64 - 1;
        let y = y
            .map(|y| y.shallow_clone())
            .unwrap_or_else(|| Tensor::full([x.size()[0]], k, (Kind::Int64, Device::Cpu)));
        let mu = Tensor::from_slice(&self.means)
            .index_select(0, &y)
            .reshape([-1, 1, 1, 1]);
        let ab = self.alpha_bar.index_select(0, t).reshape([-1, 1, 1, 1]);
        let s2 = 0.1;
        let eps = (1.0f64 - &ab).sqrt() * (x.to_kind(Kind::Double) - ab.sqrt() * mu)
            / (&ab * s2 + (1.0f64 - &ab));
        Ok(eps.to_kind(Kind::Float))
    }
    fn num_classes(&self) -> Option<i64> {
        Some(self.means.len() as i64 - 1)
    }
}

#[test]
fn guidance_works_with_every_sampler_and_the_trace() {
    let _g = serial();
    let s = Schedule::new(ScheduleKind::Linear, 200, Device::Cpu).unwrap();
    let ab = Tensor::from_slice(&s.alpha_bar_host);
    let (mu_c, mu_u, w) = (0.4, -0.1, 2.5);
    let model = ClassMeans {
        alpha_bar: ab.shallow_clone(),
        means: vec![mu_c, mu_u],
    };
    let extrapolated = ClassMeans {
        alpha_bar: ab,
        means: vec![mu_u + w * (mu_c - mu_u), mu_u],
    };
    let guided = Guided::new(&model, w, false).unwrap();
    let y = Tensor::zeros([4], (Kind::Int64, Device::Cpu));
    let x_big_t = Tensor::randn([4, 1, 3, 3], (Kind::Float, Device::Cpu));
    for sampler in [
        Sampler::Ddpm {
            variance: Variance::FixedSmall,
            clip: false,
        },
        Sampler::Ddpm {
            variance: Variance::FixedLarge,
            clip: false,
        },
        Sampler::Ddim {
            steps: 20,
            eta: 0.0,
            spacing: Spacing::Trailing,
            clip: false,
        },
        Sampler::Ddim {
            steps: 50,
            eta: 0.7,
            spacing: Spacing::Linspace,
            clip: false,
        },
    ] {
        let mut rec = Vec::new();
        tch::manual_seed(1);
        let grid = sampler.grid(200).unwrap();
        let a = Pipeline::new(&guided, &s, Prediction::Epsilon)
            .run(&sampler, &grid, &x_big_t, Some(&y), &mut |r| {
                rec.push(r.shallow_clone())
            })
            .unwrap();
        tch::manual_seed(1);
        let b = Pipeline::new(&extrapolated, &s, Prediction::Epsilon)
            .sample(&sampler, &x_big_t, Some(&y))
            .unwrap();
        assert!(
            (&a - &b).abs().max().double_value(&[]) < 1e-4,
            "{sampler:?}"
        );
        assert_eq!(
            rec.len(),
            sampler.grid(200).unwrap().len(),
            "{sampler:?}: the trace records guided steps"
        );
    }
}

#[test]
fn train_step_feeds_the_null_class_at_rate_p_uncond() {
    // Trainer::train_step is what drops labels. With p_uncond = 1 every label
    // becomes the null class, so two batches that differ only in their labels
    // must give bit-identical weights after a step. With p_uncond near 0 (the
    // same random draws, almost no label dropped) they must differ, so the
    // labels do reach the model when they are kept.
    let _g = serial();
    let x0 = Tensor::rand([16, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let y1 = Tensor::arange(16, (Kind::Int64, Device::Cpu)).remainder(10);
    let y2 = (&y1 + 3).remainder(10);
    let after_one_step = |p_uncond: f64, y: &Tensor| {
        let config = training::TrainConfig {
            model: training::ModelConfig::Seed(SeedUNetConfig {
                in_channels: 1,
                channels: 32,
                num_classes: Some(10),
                full_res_skip: true,
            }),
            schedule: forward::ScheduleKind::Linear,
            objective: training::Objective::Diffusion,
            zero_terminal_snr: false,
            timesteps: 100,
            prediction: Prediction::Epsilon,
            loss_weighting: Default::default(),
            optimizer: Default::default(),
            warmup: 0,
            lr_schedule: Default::default(),
            grad_clip: None,
            ema_decay: 0.9,
            p_uncond,
            batch_size: 16,
            seed: 3,
            dataset: "test".into(),
        };
        let mut tr = training::Trainer::new(config, Device::Cpu).unwrap();
        tr.train_step(&x0, y).unwrap();
        tr.vs.variables()
    };
    let differ = |a: &std::collections::HashMap<String, Tensor>,
                  b: &std::collections::HashMap<String, Tensor>| {
        a.iter().any(|(k, t)| !t.equal(&b[k]))
    };
    let (all1, all2) = (after_one_step(1.0, &y1), after_one_step(1.0, &y2));
    assert!(
        !differ(&all1, &all2),
        "p_uncond = 1: the labels still reached the model"
    );
    let (none1, none2) = (after_one_step(1e-12, &y1), after_one_step(1e-12, &y2));
    assert!(
        differ(&none1, &none2),
        "p_uncond ≈ 0: the labels did not reach the model"
    );
    // And the dropped batch is the null-class batch: p_uncond = 1 equals
    // training on labels that are all 10 (the null class) with p_uncond = 1.
    let nulls = Tensor::full([16], 10, (Kind::Int64, Device::Cpu));
    assert!(!differ(&all1, &after_one_step(1.0, &nulls)));
}

#[test]
fn bad_guidance_is_refused() {
    let _g = serial();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = seed_unet(&vs);
    assert_eq!(
        Guided::new(&model, -1.0, false).err(),
        Some(GuidanceError::Negative(-1.0))
    );
    assert!(Guided::new(&model, -1.0, true).is_ok());
    assert!(Guided::new(&model, f64::NAN, true).is_err());
    let uncond = SeedUNet::new(
        &(vs.root() / "u"),
        SeedUNetConfig {
            in_channels: 1,
            channels: 32,
            num_classes: None,
            full_res_skip: false,
        },
    )
    .unwrap();
    assert_eq!(
        Guided::new(&uncond, 2.0, false).err(),
        Some(GuidanceError::Unconditional)
    );
    let g = Guided::new(&model, 2.0, false).unwrap();
    let x = Tensor::zeros([1, 1, 28, 28], (Kind::Float, Device::Cpu));
    let err = g
        .predict(
            &x,
            &Tensor::from_slice(&[3i64]),
            Some(&Tensor::from_slice(&[12i64])),
            false,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("label 12 is out of range"),
        "{err}"
    );
}
