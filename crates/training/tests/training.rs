//! The training loop: targets, exact resume, checkpoints and guards.
use forward::{Schedule, ScheduleKind};
use network::{ModelConfig, SeedUNetConfig, UNetConfig};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};
use training::checkpoint::Rotation;
use training::optim::AdamConfig;
use training::{target, Prediction, TrainConfig, TrainError, Trainer};

/// libtorch's generator is process-global and the trainer reseeds it each
/// step; tests in this binary run on parallel threads, so each takes this lock.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("training-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(model: ModelConfig) -> TrainConfig {
    TrainConfig {
        model,
        schedule: "linear".into(),
        timesteps: 1000,
        prediction: Prediction::Epsilon,
        optimizer: AdamConfig {
            lr: 1e-3,
            weight_decay: 0.01,
            ..Default::default()
        },
        warmup: 3,
        grad_clip: Some(1.0),
        ema_decay: 0.99,
        p_uncond: 0.2,
        batch_size: 8,
        seed: 17,
        dataset: "synthetic".into(),
    }
}

fn seed_model() -> ModelConfig {
    ModelConfig::Seed(SeedUNetConfig {
        in_channels: 1,
        channels: 32,
        num_classes: Some(4),
        full_res_skip: false,
    })
}

fn small_unet() -> ModelConfig {
    // Dropout on, so the per-step random state matters for exactness.
    ModelConfig::Unet(UNetConfig {
        channels: 32,
        channel_mults: vec![1, 2],
        num_classes: Some(4),
        dropout: 0.1,
        ..Default::default()
    })
}

fn run(tr: &mut Trainer, data: &data::Dataset, until: i64) {
    let mut batches = data::Batches::new(data, tr.config.batch_size, tr.config.seed, true);
    while tr.step < until {
        let (x, y) = batches.get(tr.step);
        tr.train_step(&x, &y).unwrap();
    }
}

fn all_state(tr: &Trainer) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = tr
        .vs
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("model.{n}"), t))
        .collect();
    v.extend(
        tr.ema_vs
            .variables()
            .into_iter()
            .map(|(n, t)| (format!("ema.{n}"), t)),
    );
    v.extend(tr.opt.state());
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn resume_is_bit_identical() {
    let _guard = serial();
    let data = data::synthetic::shapes(64, 28, 1, 0);
    for model in [seed_model(), small_unet()] {
        let (k, n) = (3, 7);
        let mut straight = Trainer::new(config(model.clone()), Device::Cpu).unwrap();
        run(&mut straight, &data, n);

        let dir = tmpdir("resume");
        let path = dir.join("k.safetensors");
        let mut first = Trainer::new(config(model.clone()), Device::Cpu).unwrap();
        run(&mut first, &data, k);
        first.save(&path).unwrap();
        drop(first);
        let mut resumed = Trainer::load(&path, Device::Cpu).unwrap();
        assert_eq!(resumed.step, k);
        run(&mut resumed, &data, n);

        let (a, b) = (all_state(&straight), all_state(&resumed));
        assert_eq!(a.len(), b.len());
        let differing: Vec<String> = a
            .iter()
            .zip(&b)
            .filter(|((na, ta), (nb, tb))| na != nb || !ta.equal(tb))
            .map(|((na, ta), (_, tb))| {
                format!(
                    "{na} (max |Δ| {:e})",
                    (ta - tb).abs().max().double_value(&[])
                )
            })
            .collect();
        assert!(differing.is_empty(), "differ after resume: {differing:?}");
        // And the run really moved: the weights are not those of step 0.
        let fresh = Trainer::new(config(model), Device::Cpu).unwrap();
        let moved = all_state(&fresh)
            .iter()
            .zip(&a)
            .any(|((_, f), (_, t))| !f.equal(t));
        assert!(moved);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn training_reduces_the_loss_on_synthetic_shapes() {
    let _guard = serial();
    let data = data::synthetic::shapes(256, 28, 1, 1);
    let mut cfg = config(seed_model());
    cfg.batch_size = 32;
    cfg.optimizer.lr = 2e-3;
    let mut tr = Trainer::new(cfg, Device::Cpu).unwrap();
    let mut batches = data::Batches::new(&data, 32, 1, true);
    let mut losses = Vec::new();
    for step in 0..120 {
        let (x, y) = batches.get(step);
        losses.push(tr.train_step(&x, &y).unwrap());
    }
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (early, late) = (mean(&losses[..20]), mean(&losses[100..]));
    // An untrained ε-predictor scores ≈ 1 (the variance of ε); learning must cut it well below.
    assert!(early > 0.5, "early loss {early}");
    assert!(late < 0.6 * early, "loss {early:.3} → {late:.3}");
}

#[test]
fn velocity_target_recovers_x0_and_noise() {
    let _guard = serial();
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
    assert!((&a * &xt - &b * &v - &x0).abs().max().double_value(&[]) < 1e-5);
    assert!((&b * &xt + &a * &v - &eps).abs().max().double_value(&[]) < 1e-5);
    assert!(target(Prediction::Epsilon, &s, &x0, &eps, &t).equal(&eps));
    assert!(target(Prediction::Sample, &s, &x0, &eps, &t).equal(&x0));
}

#[test]
fn nan_stops_training_and_keeps_the_weights() {
    let _guard = serial();
    let mut tr = Trainer::new(config(seed_model()), Device::Cpu).unwrap();
    let data = data::synthetic::shapes(16, 28, 1, 0);
    run(&mut tr, &data, 2);
    let before = all_state(&tr);
    let x = Tensor::full([8, 1, 28, 28], f64::NAN, (Kind::Float, Device::Cpu));
    let y = Tensor::zeros([8], (Kind::Int64, Device::Cpu));
    let err = tr.train_step(&x, &y).unwrap_err();
    assert!(
        matches!(err, TrainError::NonFinite { step: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("at step 2"));
    assert_eq!(tr.step, 2);
    for ((n, a), (_, b)) in before.iter().zip(all_state(&tr).iter()) {
        assert!(a.equal(b), "{n} changed");
    }
}

#[test]
fn checkpoint_shape_mismatch_names_the_tensor_and_both_shapes() {
    let _guard = serial();
    let dir = tmpdir("mismatch");
    let path = dir.join("c64.safetensors");
    let mut cfg = config(ModelConfig::Seed(SeedUNetConfig {
        in_channels: 1,
        channels: 64,
        num_classes: Some(4),
        full_res_skip: false,
    }));
    Trainer::new(cfg.clone(), Device::Cpu)
        .unwrap()
        .save(&path)
        .unwrap();
    // Same checkpoint, read into a model of another width.
    let loaded = training::checkpoint::load(&path, Device::Cpu).unwrap();
    cfg.model = seed_model();
    let tr = Trainer::new(cfg, Device::Cpu).unwrap();
    let err = training::checkpoint::copy_into(tr.vs.variables(), "model", &loaded.tensors, &path)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("has shape [")
            && msg.contains("in the checkpoint but [")
            && msg.contains("model."),
        "{msg}"
    );
    // Not a checkpoint at all.
    std::fs::write(dir.join("junk.safetensors"), b"not safetensors").unwrap();
    let err = Trainer::load(&dir.join("junk.safetensors"), Device::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("not a safetensors file"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rotation_keeps_the_last_n_and_saves_atomically() {
    let _guard = serial();
    let dir = tmpdir("rotation");
    let rot = Rotation {
        dir: dir.clone(),
        keep: 2,
    };
    let mut tr = Trainer::new(config(seed_model()), Device::Cpu).unwrap();
    for step in [10, 20, 30] {
        tr.step = step;
        tr.save(&rot.path(step)).unwrap();
        rot.prune().unwrap();
    }
    let steps: Vec<i64> = rot.list().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, [20, 30]);
    assert_eq!(rot.latest().unwrap(), rot.path(30));
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    // A save that cannot complete leaves the existing file untouched.
    let before = std::fs::read(rot.path(30)).unwrap();
    let blocked = dir.join("ckpt-00000030.safetensors/inner"); // parent is a file: the write fails
    assert!(tr.save(&blocked).is_err());
    assert_eq!(std::fs::read(rot.path(30)).unwrap(), before);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_configs_are_rejected() {
    let _guard = serial();
    let mut c = config(seed_model());
    c.p_uncond = 1.5;
    assert!(Trainer::new(c, Device::Cpu)
        .err()
        .unwrap()
        .to_string()
        .contains("p_uncond = 1.5"));
    let mut c = config(seed_model());
    c.batch_size = 0;
    assert!(Trainer::new(c, Device::Cpu)
        .err()
        .unwrap()
        .to_string()
        .contains("batch size 0"));
    let mut c = config(ModelConfig::Seed(SeedUNetConfig {
        num_classes: None,
        channels: 32,
        in_channels: 1,
        full_res_skip: false,
    }));
    c.p_uncond = 0.1;
    assert!(Trainer::new(c, Device::Cpu).is_err());
}

#[test]
fn checkpoint_bytes_are_deterministic_and_round_trip() {
    let _guard = serial();
    let tensors = vec![
        (
            "b.weight".to_string(),
            Tensor::from_slice(&[1.5f32, -2.0, 3.25]).reshape([3, 1]),
        ),
        ("a.labels".to_string(), Tensor::from_slice(&[7i64, -1])),
        ("c.alpha".to_string(), Tensor::from_slice(&[0.5f64])),
    ];
    let meta: std::collections::BTreeMap<String, String> = [
        ("z".to_string(), "last".to_string()),
        ("a".to_string(), "{\"json\": true}".to_string()),
    ]
    .into_iter()
    .collect();
    let one = training::checkpoint::to_bytes(&tensors, &meta).unwrap();
    let reversed: Vec<(String, Tensor)> = tensors
        .iter()
        .rev()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    assert_eq!(
        one,
        training::checkpoint::to_bytes(&reversed, &meta).unwrap(),
        "order of input must not matter"
    );
    let dir = tmpdir("bytes");
    let path = dir.join("x.safetensors");
    std::fs::write(&path, &one).unwrap();
    let back = training::checkpoint::load(&path, Device::Cpu).unwrap();
    assert_eq!(back.metadata, meta);
    for (n, t) in &tensors {
        assert!(back.tensors[n].equal(t), "{n}");
        assert_eq!(back.tensors[n].kind(), t.kind());
    }
    std::fs::remove_dir_all(dir).unwrap();
}
