//! Shapes, conditioning, errors and gradients of both networks.
use network::{NetworkError, NoisePredictor, SeedUNet, SeedUNetConfig, Trace, UNet, UNetConfig};
use tch::{nn, Device, Kind, Tensor};

fn input(n: i64, c: i64, hw: i64) -> (Tensor, Tensor, Tensor) {
    let x = Tensor::randn([n, c, hw, hw], (Kind::Float, Device::Cpu));
    let t = Tensor::randint(1000, [n], (Kind::Int64, Device::Cpu));
    let y = Tensor::randint(10, [n], (Kind::Int64, Device::Cpu));
    (x, t, y)
}

/// Every parameter drawn from N(0, 0.1²): undoes the zero-initialised
/// output convolutions so that every path through the model is live.
fn perturb(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            let r = v.randn_like() * 0.1;
            v.copy_(&r);
        }
    });
}

fn models(in_ch: i64) -> Vec<(&'static str, nn::VarStore, Box<dyn NoisePredictor>)> {
    let vs1 = nn::VarStore::new(Device::Cpu);
    let seed = SeedUNet::new(
        &vs1.root(),
        SeedUNetConfig {
            in_channels: in_ch,
            channels: 32,
            num_classes: Some(10),
            full_res_skip: false,
        },
    )
    .unwrap();
    let vs2 = nn::VarStore::new(Device::Cpu);
    let unet = UNet::new(
        &vs2.root(),
        UNetConfig {
            in_channels: in_ch,
            ..Default::default()
        },
    )
    .unwrap();
    perturb(&vs2);
    vec![("seed", vs1, Box::new(seed)), ("unet", vs2, Box::new(unet))]
}

#[test]
fn output_has_input_shape_for_mnist_and_cifar_sizes() {
    tch::manual_seed(0);
    for (c, hw) in [(1, 28), (3, 32)] {
        for (name, _vs, m) in models(c) {
            let (x, t, y) = input(2, c, hw);
            let out = m.predict(&x, &t, Some(&y), false).unwrap();
            assert_eq!(out.size(), x.size(), "{name} {c}×{hw}×{hw}");
            assert!(bool::try_from(out.isfinite().all()).unwrap());
        }
    }
}

#[test]
fn time_and_class_change_the_output_and_none_means_null_class() {
    tch::manual_seed(1);
    for (name, _vs, m) in models(1) {
        let (x, t, y) = input(3, 1, 28);
        let base = m.predict(&x, &t, Some(&y), false).unwrap();
        let other_t = m
            .predict(&x, &(&t + 100).remainder(1000), Some(&y), false)
            .unwrap();
        let other_y = m
            .predict(&x, &t, Some(&(&y + 1).remainder(10)), false)
            .unwrap();
        let diff = |a: &Tensor| (a - &base).abs().max().double_value(&[]);
        assert!(diff(&other_t) > 1e-4, "{name}: output ignores t");
        assert!(diff(&other_y) > 1e-4, "{name}: output ignores y");
        let null = Tensor::full([3], 10, (Kind::Int64, Device::Cpu));
        let uncond = m.predict(&x, &t, None, false).unwrap();
        assert!(
            uncond.equal(&m.predict(&x, &t, Some(&null), false).unwrap()),
            "{name}: None ≠ null class"
        );
        // Each image is computed independently (no batch statistics leak).
        let first = m
            .predict(
                &x.narrow(0, 0, 1),
                &t.narrow(0, 0, 1),
                Some(&y.narrow(0, 0, 1)),
                false,
            )
            .unwrap();
        assert!(
            first.allclose(&base.narrow(0, 0, 1), 1e-5, 1e-5, false),
            "{name}: batch leak"
        );
    }
}

#[test]
fn dropout_only_in_training_mode() {
    tch::manual_seed(2);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = UNet::new(
        &vs.root(),
        UNetConfig {
            dropout: 0.3,
            ..Default::default()
        },
    )
    .unwrap();
    perturb(&vs);
    let (x, t, y) = input(2, 1, 28);
    let a = m.predict(&x, &t, Some(&y), false).unwrap();
    assert!(
        a.equal(&m.predict(&x, &t, Some(&y), false).unwrap()),
        "eval must be deterministic"
    );
    let b = m.predict(&x, &t, Some(&y), true).unwrap();
    let c = m.predict(&x, &t, Some(&y), true).unwrap();
    assert!(!b.equal(&c), "train mode must apply dropout");
}

#[test]
fn fresh_unet_predicts_zero_and_every_parameter_gets_gradient() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = UNet::new(&vs.root(), UNetConfig::default()).unwrap();
    let (x, t, y) = input(2, 1, 28);
    // Zero-initialised output conv: a new model starts by predicting ε̂ = 0.
    assert_eq!(
        m.predict(&x, &t, Some(&y), false)
            .unwrap()
            .abs()
            .max()
            .double_value(&[]),
        0.0
    );
    for (name, vs, m) in models(1) {
        let out = m.predict(&x, &t, Some(&y), false).unwrap();
        (out * Tensor::randn([2, 1, 28, 28], (Kind::Float, Device::Cpu)))
            .sum(Kind::Float)
            .backward();
        for (pname, v) in vs.variables() {
            let g = v.grad();
            assert!(g.defined(), "{name}: {pname} has no gradient");
            // Embedding rows of unused labels get zero gradient; everything else must be live.
            if !pname.contains("class_emb") {
                assert!(
                    g.abs().sum(Kind::Double).double_value(&[]) > 0.0,
                    "{name}: {pname} gradient is zero"
                );
            }
        }
    }
}

#[test]
fn bad_inputs_get_clear_errors() {
    let vs = nn::VarStore::new(Device::Cpu);
    let m = SeedUNet::new(
        &vs.root(),
        SeedUNetConfig {
            channels: 32,
            ..Default::default()
        },
    )
    .unwrap();
    let t = Tensor::from_slice(&[5i64, 6]);
    let e = |x: &Tensor, t: &Tensor, y: Option<&Tensor>| m.predict(x, t, y, false).unwrap_err();
    let x = Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu));
    assert_eq!(
        e(&x.squeeze_dim(1), &t, None),
        NetworkError::Rank(vec![2, 28, 28])
    );
    assert_eq!(
        e(
            &Tensor::zeros([2, 3, 28, 28], (Kind::Float, Device::Cpu)),
            &t,
            None
        ),
        NetworkError::Channels {
            expected: 1,
            got: 3
        }
    );
    assert_eq!(
        e(
            &Tensor::zeros([2, 1, 30, 30], (Kind::Float, Device::Cpu)),
            &t,
            None
        ),
        NetworkError::Size {
            h: 30,
            w: 30,
            factor: 4
        }
    );
    assert_eq!(
        e(&x, &Tensor::from_slice(&[1i64]), None),
        NetworkError::Batch {
            what: "timesteps",
            expected: 2,
            got: vec![1]
        }
    );
    let err = e(&x, &t, Some(&Tensor::from_slice(&[3i64, 11])));
    assert_eq!(
        err,
        NetworkError::Label {
            label: 11,
            num_classes: 10
        }
    );
    assert_eq!(
        err.to_string(),
        "label 11 is out of range: classes are 0..10 (and 10 = null for guidance)"
    );
    assert!(matches!(
        e(&x, &t, Some(&Tensor::from_slice(&[-1i64, 0]))),
        NetworkError::Label { label: -1, .. }
    ));

    let vs = nn::VarStore::new(Device::Cpu);
    let uncond = SeedUNet::new(
        &vs.root(),
        SeedUNetConfig {
            channels: 32,
            num_classes: None,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        uncond.predict(&x, &t, Some(&t), false).unwrap_err(),
        NetworkError::Unconditional
    );
    assert!(SeedUNet::new(
        &vs.root(),
        SeedUNetConfig {
            channels: 48,
            ..Default::default()
        }
    )
    .is_err());
    assert!(UNet::new(
        &vs.root(),
        UNetConfig {
            channel_mults: vec![],
            ..Default::default()
        }
    )
    .is_err());
}

#[test]
fn trace_counts_parameters_and_macs_exactly() {
    let vs = nn::VarStore::new(Device::Cpu);
    let (c, k) = (32i64, 10i64);
    let m = SeedUNet::new(
        &vs.root(),
        SeedUNetConfig {
            in_channels: 1,
            channels: c,
            num_classes: Some(k),
            full_res_skip: false,
        },
    )
    .unwrap();
    let (x, t, y) = input(1, 1, 28);
    let mut tr = Trace::on();
    let _ = m.forward_t(&x, &t, Some(&y), &mut tr).unwrap();
    let total: i64 = vs.variables().values().map(|v| v.numel() as i64).sum();
    assert_eq!(
        tr.total_params(),
        total,
        "every parameter appears in exactly one row"
    );
    // By hand: conv MACs = H_out·W_out·C_out·C_in·9.
    let conv = |hw: i64, cout: i64, cin: i64| hw * hw * cout * cin * 9;
    let want = conv(14, c, 1)
        + conv(7, 2 * c, c)
        + c * 2 * c
        + conv(7, 2 * c, 2 * c)
        + conv(14, c, 2 * c)
        + conv(28, c, c)
        + conv(28, 1, c);
    assert_eq!(tr.total_macs(), want);

    let vs = nn::VarStore::new(Device::Cpu);
    let u = UNet::new(&vs.root(), UNetConfig::default()).unwrap();
    let mut tr = Trace::on();
    let _ = u.forward_t(&x, &t, Some(&y), false, &mut tr).unwrap();
    let total: i64 = vs.variables().values().map(|v| v.numel() as i64).sum();
    assert_eq!(tr.total_params(), total);
    assert!(tr
        .layers
        .iter()
        .any(|l| l.name == "mid.attn" && l.shape == [1, 64, 7, 7]));
}

#[test]
fn full_res_skip_adds_one_input_conv_and_old_configs_load_without_it() {
    let count = |cfg: SeedUNetConfig| {
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = SeedUNet::new(&vs.root(), cfg).unwrap();
        let vars = vs.variables();
        let total: i64 = vars.values().map(|t| t.numel() as i64).sum();
        (total, vars.get("skip.weight").map(|t| t.size()))
    };
    let seed = SeedUNetConfig::default();
    let (plain, none) = count(seed);
    let (with, skip) = count(SeedUNetConfig { full_res_skip: true, ..seed });
    assert_eq!(none, None);
    assert_eq!(skip, Some(vec![64, 1, 3, 3]));
    assert_eq!(with - plain, 64 * 9 + 64, "one 3×3 conv from 1 to C = 64 channels");
    // Checkpoints written before the option existed have no such field.
    let old: SeedUNetConfig =
        serde_json::from_str(r#"{"in_channels":1,"channels":64,"num_classes":10}"#).unwrap();
    assert_eq!(old, seed);
}

