//! The training loop: targets, exact resume, checkpoints and guards.
use formats::checkpoint::Rotation;
use formats::checkpoint::TrainerFile;
use forward::{target, Prediction};
use forward::{Schedule, ScheduleKind};
use network::SeedUNetConfig;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};
use training::optim::AdamConfig;
use training::{ModelConfig, TrainConfig, TrainError, Trainer};
use unet::UNetConfig;

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
        schedule: forward::ScheduleKind::Linear,
        objective: training::Objective::Diffusion,
        zero_terminal_snr: false,
        timesteps: 1000,
        prediction: Prediction::Epsilon,
        loss_weighting: Default::default(),
        lr_schedule: Default::default(),
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
    use unet::{DownBlockType::*, UpBlockType::*};
    ModelConfig::Unet(UNetConfig {
        block_out_channels: vec![16, 32],
        down_block_types: vec![DownBlock2D, AttnDownBlock2D],
        up_block_types: vec![AttnUpBlock2D, UpBlock2D],
        num_class_embeds: Some(5),
        dropout: 0.1,
        ..UNetConfig::fashion()
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
    let loaded = formats::checkpoint::load(&path, Device::Cpu).unwrap();
    cfg.model = seed_model();
    let tr = Trainer::new(cfg, Device::Cpu).unwrap();
    let err = formats::checkpoint::copy_into(tr.vs.variables(), "model", &loaded.tensors, &path)
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
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_save_that_runs_out_of_space_keeps_the_previous_checkpoint() {
    let _guard = serial();
    let tr = Trainer::new(config(seed_model()), Device::Cpu).unwrap();
    let probe = tmpdir("size").join("ckpt.safetensors");
    tr.save(&probe).unwrap();
    let size = std::fs::metadata(&probe).unwrap().len();
    std::fs::remove_dir_all(probe.parent().unwrap()).unwrap();
    // Room for one checkpoint and a half: saving over it needs a second whole
    // copy first, so the save fails part way. Writing in place would succeed
    // here, and a write that truncates first would destroy the checkpoint.
    let Some(disk) = util::small_disk::SmallDisk::mount("ckpt", size * 3 / 2) else {
        return;
    };
    let path = disk.path().join("ckpt-00000010.safetensors");
    tr.save(&path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = tr.save(&path).unwrap_err().to_string();
    assert!(err.contains("cannot write"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the previous checkpoint is intact"
    );
    assert_eq!(
        std::fs::read_dir(disk.path()).unwrap().count(),
        1,
        "no temporary file left"
    );
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
    let one = util::safetensors::to_bytes(&tensors, &meta).unwrap();
    let reversed: Vec<(String, Tensor)> = tensors
        .iter()
        .rev()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    assert_eq!(
        one,
        util::safetensors::to_bytes(&reversed, &meta).unwrap(),
        "order of input must not matter"
    );
    let dir = tmpdir("bytes");
    let path = dir.join("x.safetensors");
    std::fs::write(&path, &one).unwrap();
    let back = formats::checkpoint::load(&path, Device::Cpu).unwrap();
    assert_eq!(back.metadata, meta);
    for (n, t) in &tensors {
        assert!(back.tensors[n].equal(t), "{n}");
        assert_eq!(back.tensors[n].kind(), t.kind());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn min_snr_weights_match_the_closed_form() {
    use training::{loss_weight, LossWeighting};
    let s = Schedule::new(ScheduleKind::Linear, 1000, Device::Cpu).unwrap();
    let ts = [0i64, 10, 100, 300, 999];
    let t = s.timesteps(&Tensor::from_slice(&ts)).unwrap();
    let gamma = 5.0;
    let w = LossWeighting::MinSnr { gamma };
    assert!(loss_weight(LossWeighting::Uniform, Prediction::Epsilon, &s, &t).is_none());
    for (kind, f) in [
        (
            Prediction::Epsilon,
            (|snr: f64, g: f64| snr.min(g) / snr) as fn(f64, f64) -> f64,
        ),
        (Prediction::Velocity, |snr, g| snr.min(g) / (snr + 1.0)),
        (Prediction::Sample, |snr, g| snr.min(g)),
    ] {
        let got = Vec::<f32>::try_from(loss_weight(w, kind, &s, &t).unwrap()).unwrap();
        for (i, &k) in ts.iter().enumerate() {
            let ab = s.alpha_bar_host[k as usize]; // f64 from the schedule's own host copy
            let want = f(ab / (1.0 - ab), gamma);
            assert!(
                (got[i] as f64 - want).abs() <= 1e-5 * want.max(1.0),
                "{kind:?} t={k}: {} vs {want}",
                got[i]
            );
        }
    }
    // Low noise (SNR > γ) is damped for ε; high noise keeps weight 1.
    let eps = Vec::<f32>::try_from(loss_weight(w, Prediction::Epsilon, &s, &t).unwrap()).unwrap();
    assert!(eps[0] < 1e-3 && (eps[4] - 1.0).abs() < 1e-6);
}

#[test]
fn weighted_loss_is_the_weighted_mean_of_per_image_errors() {
    use training::{loss, LossWeighting};
    let _g = serial();
    let s = Schedule::new(ScheduleKind::Linear, 1000, Device::Cpu).unwrap();
    tch::manual_seed(5);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let model = seed_model().build(&vs.root()).unwrap();
    let x0 = Tensor::rand([6, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let w = LossWeighting::MinSnr { gamma: 5.0 };
    // Replay the draws of `loss` (t, then ε) with the same seed, by hand.
    tch::manual_seed(11);
    let got = loss(&*model, &s, Prediction::Epsilon, w, &x0, None)
        .unwrap()
        .double_value(&[]);
    tch::manual_seed(11);
    let t = s.sample_timesteps(6);
    let noise = x0.randn_like();
    let x_t = s.q_sample(&x0, &t, &noise).unwrap();
    let out = model.predict(&x_t, t.tensor(), None, true).unwrap();
    let per = Vec::<f64>::try_from((out - &noise).square().to_kind(Kind::Double).mean_dim(
        &[1i64, 2, 3][..],
        false,
        Kind::Double,
    ))
    .unwrap();
    let tv = Vec::<i64>::try_from(t.tensor()).unwrap();
    let want: f64 = per
        .iter()
        .zip(&tv)
        .map(|(e, &k)| {
            let ab = s.alpha_bar_host[k as usize];
            let snr = ab / (1.0 - ab);
            e * snr.min(5.0) / snr
        })
        .sum::<f64>()
        / 6.0;
    assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
    // Uniform weighting is plain MSE, which the weighted path must differ from here.
    tch::manual_seed(11);
    let plain = loss(
        &*model,
        &s,
        Prediction::Epsilon,
        LossWeighting::Uniform,
        &x0,
        None,
    )
    .unwrap()
    .double_value(&[]);
    let mean: f64 = per.iter().sum::<f64>() / 6.0;
    assert!((plain - mean).abs() <= 1e-5 * mean && (plain - got).abs() > 1e-3 * mean);
}

#[test]
fn cosine_learning_rate_schedule() {
    use training::LrSchedule;
    let _g = serial();
    let mut c = config(seed_model());
    c.optimizer.lr = 1e-3;
    c.warmup = 10;
    c.lr_schedule = LrSchedule::Cosine {
        total_steps: 110,
        final_fraction: 0.1,
    };
    let mut tr = Trainer::new(c.clone(), Device::Cpu).unwrap();
    let mut at = |k: i64| {
        tr.step = k;
        tr.lr()
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(at(0), 1e-4)); // warm-up: (k + 1)/10
    assert!(close(at(9), 1e-3));
    assert!(close(at(10), 1e-3)); // the decay starts after the warm-up
    assert!(close(at(60), 0.55e-3)); // half way: (1 + 0.1)/2
    assert!(close(at(110), 1e-4));
    assert!(close(at(500), 1e-4)); // constant after the end
    assert!(at(30) > at(31));
    c.lr_schedule = LrSchedule::Cosine {
        total_steps: 0,
        final_fraction: 0.1,
    };
    assert!(Trainer::new(c, Device::Cpu).is_err());
}

#[test]
fn the_parameter_estimate_is_within_a_factor_of_two() {
    let _guard = serial();
    let mut unet2 = unet::UNetConfig::fashion();
    unet2.layers_per_block = 2;
    for m in [
        seed_model(),
        small_unet(),
        ModelConfig::Unet(unet::UNetConfig::fashion()),
        ModelConfig::Unet(unet2),
    ] {
        let tr = Trainer::new(config(m.clone()), Device::Cpu).unwrap();
        let real: usize = tr.vs.variables().values().map(|v| v.numel()).sum();
        let est = m.approx_parameters();
        let ratio = est / real as f64;
        assert!((0.5..=2.0).contains(&ratio), "{m:?}: {est} vs {real}");
    }
    // An absurd width is refused before anything is allocated.
    let mut c = config(seed_model());
    if let ModelConfig::Seed(s) = &mut c.model {
        s.channels = 1 << 20;
    }
    let err = Trainer::new(c, Device::Cpu).err().unwrap().to_string();
    assert!(
        err.contains("needs about") && err.contains("available"),
        "{err}"
    );
}
