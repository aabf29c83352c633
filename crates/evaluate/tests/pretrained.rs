//! The shipped files: they load, they do what their model cards say, and
//! export keeps exactly the EMA weights. Needs the real Fashion-MNIST
//! (`scripts/setup.sh` installs it).
use classifier_free::Guided;
use evaluate::{pretrained, Evaluator};
use formats::checkpoint::TrainerFile;
use reverse::{Pipeline, Sampler};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

/// Tests here draw from libtorch's global RNG: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn test_set() -> data::Dataset {
    data::load_mnist_like(Path::new(data::FASHION_MNIST_DIR), data::Split::Test)
        .expect("Fashion-MNIST is installed by scripts/setup.sh")
}

#[test]
fn classifier_reaches_its_recorded_test_accuracy() {
    let _g = serial();
    let clf = pretrained::classifier(Device::Cpu).unwrap();
    let test = test_set();
    let acc = clf.accuracy(&test.images, &test.labels);
    let recorded: f64 = clf.metadata["test_accuracy"].parse().unwrap();
    println!("classifier test accuracy {acc:.4} (recorded {recorded})");
    assert!(acc >= 0.90, "test accuracy {acc}");
    assert!(
        (acc - recorded).abs() < 6e-4,
        "measured {acc} vs recorded {recorded}"
    );
}

#[test]
fn shipped_model_samples_the_requested_classes() {
    let _g = serial();
    let loaded = formats::pretrained::fashion_cfg(Device::Cpu).unwrap();
    let cfg = &loaded.config;
    assert_eq!(cfg.model.num_classes(), Some(10));
    assert!(
        cfg.p_uncond > 0.0,
        "trained with label dropout, so guidance works"
    );
    let schedule = loaded.schedule().unwrap();
    let guided = Guided::new(&*loaded.model, 3.0, false).unwrap();
    let sampler = Sampler::ddim(20);
    tch::manual_seed(0);
    let y = Tensor::arange(40, (Kind::Int64, Device::Cpu)).remainder(10);
    let x_t = Tensor::randn([40, 1, 28, 28], (Kind::Float, Device::Cpu));
    let x0 = Pipeline::new(&guided, &schedule, cfg.prediction)
        .sample(&sampler, &x_t, Some(&y))
        .unwrap();
    let clf = pretrained::classifier(Device::Cpu).unwrap();
    let acc = clf.accuracy(&x0, &y);
    println!(
        "40 DDIM-20 samples at w = 3: classifier agrees with the requested class for {acc:.3}"
    );
    // The model card's DDIM-20 w = 3 row (n = 1000) is 0.994; real images
    // reach 0.937. A model that ignores its label scores about 0.1.
    assert!(acc >= 0.9, "conditional accuracy {acc}");
}

#[test]
fn reference_rows_bracket_real_and_noise() {
    let _g = serial();
    let clf = pretrained::classifier(Device::Cpu).unwrap();
    let test = test_set();
    let train =
        data::load_mnist_like(Path::new(data::FASHION_MNIST_DIR), data::Split::Train).unwrap();
    let ev = Evaluator::new(clf, &test.images);
    let [(_, real), (_, noise)] = evaluate::reference_rows(&ev, &train, 500, 0).unwrap();
    println!("real: {real:?}\nnoise: {noise:?}");
    assert!(real.accuracy.unwrap() > 0.9);
    assert!(
        noise.frechet > 20.0 * real.frechet,
        "noise should be far from the data"
    );
    assert!(real.precision > 0.5 && real.recall > 0.5);
    // Noise covers no real image; a few real outliers have balls wide enough
    // to swallow the tight cluster of noise features, so precision is small, not 0.
    assert!(noise.recall < 0.01 && noise.precision < 0.25, "{noise:?}");
    // The same rows again: seeded, so identical.
    let [(_, again), _] = evaluate::reference_rows(&ev, &train, 500, 0).unwrap();
    assert_eq!(again, real);
}

#[test]
fn export_keeps_exactly_the_ema_weights() {
    let _g = serial();
    let dir = std::env::temp_dir().join(format!("export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = training::TrainConfig {
        model: training::ModelConfig::Seed(network::SeedUNetConfig {
            in_channels: 1,
            channels: 32,
            num_classes: Some(10),
            full_res_skip: false,
        }),
        schedule: forward::ScheduleKind::Linear,
        objective: training::Objective::Diffusion,
        zero_terminal_snr: false,
        timesteps: 100,
        prediction: forward::Prediction::Epsilon,
        loss_weighting: Default::default(),
        lr_schedule: Default::default(),
        optimizer: Default::default(),
        warmup: 0,
        grad_clip: None,
        ema_decay: 0.5,
        p_uncond: 0.1,
        batch_size: 8,
        seed: 0,
        dataset: "test".into(),
    };
    let mut tr = training::Trainer::new(cfg, Device::Cpu).unwrap();
    let x = Tensor::rand([8, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let y = Tensor::arange(8, (Kind::Int64, Device::Cpu));
    tr.train_step(&x, &y).unwrap();
    let ckpt = dir.join("ckpt-00000001.safetensors");
    tr.save(&ckpt).unwrap();
    let out = dir.join("small.safetensors");
    let notes = BTreeMap::from([("hardware".to_string(), "test".to_string())]);
    formats::pretrained::export(&ckpt, &out, notes).unwrap();
    let file = formats::checkpoint::load(&out, Device::Cpu).unwrap();
    assert!(file.tensors.keys().all(|k| k.starts_with("ema.")));
    assert_eq!(file.metadata["format"], formats::pretrained::FORMAT);
    assert_eq!(file.metadata["hardware"], "test");
    let a = formats::load_model(&out, formats::Weights::Ema, Device::Cpu).unwrap();
    let b = formats::load_model(&ckpt, formats::Weights::Ema, Device::Cpu).unwrap();
    let (va, vb) = (a.vs.variables(), b.vs.variables());
    assert_eq!(va.len(), vb.len());
    for (name, t) in &va {
        assert!(t.equal(&vb[name]), "{name} differs");
    }
    assert!(std::fs::metadata(&out).unwrap().len() < std::fs::metadata(&ckpt).unwrap().len() / 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_names_are_refused_clearly() {
    let err = formats::pretrained::model("cifar-huge", Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "no pretrained diffusion model 'cifar-huge': choose one of fashion-cfg"
    );
}
