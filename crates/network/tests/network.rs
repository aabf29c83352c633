//! Shapes, conditioning, errors and gradients of both networks.
use network::{record_shapes, NetworkError, NoisePredictor, SeedUNet, SeedUNetConfig};
use unet::{UNet, UNetConfig};
use util::layers::{layer_table, Block, LayerStat};

/// The layer table of one forward pass of `f` over the variables of `vs`.
fn table(vs: &nn::VarStore, f: impl FnOnce() -> network::Result<Tensor>) -> Vec<LayerStat> {
    let (out, shapes) = record_shapes(f);
    let _ = out.unwrap();
    let blocks: Vec<Block> = shapes
        .iter()
        .map(|s| Block {
            name: &s.name,
            prefixes: &s.prefixes,
            shape: &s.shape,
        })
        .collect();
    let vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    layer_table(&vars, &blocks, &["class_emb", "class_embedding"]).unwrap()
}
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
            out_channels: in_ch,
            ..UNetConfig::fashion()
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
            ..UNetConfig::fashion()
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
fn every_parameter_gets_gradient() {
    tch::manual_seed(3);
    let (x, t, y) = input(2, 1, 28);
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
            block_out_channels: vec![],
            ..UNetConfig::fashion()
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
    let tr = table(&vs, || m.forward_t(&x, &t, Some(&y)));
    let total: i64 = vs.variables().values().map(|v| v.numel() as i64).sum();
    assert_eq!(
        tr.iter().map(|l| l.params).sum::<i64>(),
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
    assert_eq!(tr.iter().map(|l| l.macs).sum::<i64>(), want);

    let vs = nn::VarStore::new(Device::Cpu);
    let u = UNet::new(&vs.root(), UNetConfig::fashion()).unwrap();
    let tr = table(&vs, || u.forward_t(&x, &t, Some(&y), false));
    let total: i64 = vs.variables().values().map(|v| v.numel() as i64).sum();
    assert_eq!(tr.iter().map(|l| l.params).sum::<i64>(), total);
    assert!(tr
        .iter()
        .any(|l| l.name == "mid_block.attentions.0" && l.shape == Some(vec![1, 64, 7, 7])));
    // conv_in (28·28·32·1·9) and the last up resnet's convs, by hand.
    let row = |n: &str| tr.iter().find(|l| l.name == n).unwrap().macs;
    // Attention over 49 positions of 64 channels: 4 projections per token, q kᵀ and the sum over v.
    assert_eq!(
        row("mid_block.attentions.0"),
        4 * 49 * 64 * 64 + 2 * 49 * 49 * 64
    );
    assert_eq!(row("conv_in"), 28 * 28 * 32 * 9);
    let up = "up_blocks.2.resnets.1"; // cat(32 + 32) → 32, 1×1 shortcut 64 → 32, emb 128 → 32
    assert_eq!(
        row(up),
        conv(28, 32, 64) + conv(28, 32, 32) + 28 * 28 * 32 * 64 + 128 * 32
    );
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
    let (with, skip) = count(SeedUNetConfig {
        full_res_skip: true,
        ..seed
    });
    assert_eq!(none, None);
    assert_eq!(skip, Some(vec![64, 1, 3, 3]));
    assert_eq!(
        with - plain,
        64 * 9 + 64,
        "one 3×3 conv from 1 to C = 64 channels"
    );
    // Checkpoints written before the option existed have no such field.
    let old: SeedUNetConfig =
        serde_json::from_str(r#"{"in_channels":1,"channels":64,"num_classes":10}"#).unwrap();
    assert_eq!(old, seed);
}

#[test]
fn diffusers_config_round_trips_and_unsupported_settings_are_refused() {
    let c = UNetConfig::fashion();
    assert_eq!(
        formats::unet_config_from_json(&formats::unet_config_to_json(&c)).unwrap(),
        c
    );
    // Missing fields take diffusers' defaults.
    let d = formats::unet_config_from_json("{}").unwrap();
    assert_eq!(d, UNetConfig::diffusers_default());
    let err = |json: &str| {
        formats::unet_config_from_json(json)
            .unwrap_err()
            .to_string()
    };
    let e = err(r#"{"time_embedding_type": "fourier"}"#);
    assert!(
        e.contains("time_embedding_type") && e.contains("not supported"),
        "{e}"
    );
    let e = err(r#"{"resnet_time_scale_shift": "scale_shift"}"#);
    assert!(e.contains("resnet_time_scale_shift"), "{e}");
    // Defaults of those settings are accepted, also written as other numbers.
    assert!(
        formats::unet_config_from_json(r#"{"mid_block_scale_factor": 1.0, "act_fn": "silu"}"#)
            .is_ok()
    );
    let e = err(r#"{"cross_attention_dim": 768}"#);
    assert!(e.contains("cross_attention_dim"), "{e}");
    let e = err(r#"{"_class_name": "UNet2DConditionModel"}"#);
    assert!(e.contains("UNet2DConditionModel"), "{e}");
    let e = err(
        r#"{"down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"]}"#,
    );
    assert!(e.contains("CrossAttnDownBlock2D"), "{e}");
    let e = err(r#"{"attention_head_dim": [8, 8, 8, 8]}"#);
    assert!(e.contains("attention_head_dim"), "{e}");
    // Inconsistent configs are refused before anything is built.
    let e = err(
        r#"{"block_out_channels": [32, 64], "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"]}"#,
    );
    assert!(e.contains("one block type per level"), "{e}");
    let bad = UNetConfig {
        norm_num_groups: 7,
        ..UNetConfig::fashion()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("norm_num_groups = 7"));
    let bad = UNetConfig {
        attention_head_dim: Some(24),
        ..UNetConfig::fashion()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("attention_head_dim = 24"));
}

#[test]
fn diffusers_embedding_conventions() {
    use unet::sinusoidal_embedding;
    let t = Tensor::from_slice(&[0i64, 5, 999]);
    // flip = false, shift = 0 is the DDPM embedding of (2).
    let ddpm = network::timestep_embedding(&t, 32).unwrap();
    let ours = sinusoidal_embedding(&t, 32, false, 0);
    assert!(ours.allclose(&ddpm, 1e-4, 1e-4, false));
    // flip swaps the halves exactly.
    let flipped = sinusoidal_embedding(&t, 32, true, 0);
    assert!(flipped.narrow(1, 0, 16).equal(&ours.narrow(1, 16, 16)));
    assert!(flipped.narrow(1, 16, 16).equal(&ours.narrow(1, 0, 16)));
    // shift = 1: ω_i = 10000^(−i/15), so the slowest sine at t = 999 is sin(999 · 10000^(−1)).
    let shifted = Vec::<f32>::try_from(sinusoidal_embedding(&t, 32, false, 1).get(2)).unwrap();
    let want = (999.0f64 * 10000f64.powf(-15.0 / 15.0)).sin();
    assert!(
        (shifted[15] as f64 - want).abs() < 1e-5,
        "{} vs {want}",
        shifted[15]
    );
}

#[test]
fn unet_weights_start_as_pytorch_and_diffusers_start_them() {
    // PyTorch's default for Conv2d and Linear (kaiming_uniform_ with a = √5, and
    // the bias) is uniform in ±1/√fan_in: std = bound/√3. tch's own default is
    // √6 times wider, and training from it is several times slower.
    let vs = nn::VarStore::new(Device::Cpu);
    let _u = UNet::new(&vs.root(), UNetConfig::fashion()).unwrap();
    let vars = vs.variables();
    let mut checked = 0;
    for (name, w) in &vars {
        let size = w.size();
        if !name.ends_with(".weight") || size.len() < 2 || name.contains("embedding") {
            continue;
        }
        let fan_in: i64 = size[1..].iter().product();
        let bound = 1.0 / (fan_in as f64).sqrt();
        let max = w.abs().max().double_value(&[]);
        assert!(
            max <= bound * (1.0 + 1e-6),
            "{name}: max |w| = {max}, bound {bound}"
        );
        if w.numel() >= 4096 {
            let std = w.std(true).double_value(&[]);
            let want = bound / 3f64.sqrt();
            assert!(
                (std / want - 1.0).abs() < 0.05,
                "{name}: std {std}, PyTorch's {want}"
            );
        }
        let bias = &vars[&name.replace(".weight", ".bias")];
        assert!(
            bias.abs().max().double_value(&[]) <= bound * (1.0 + 1e-6),
            "{name}: bias"
        );
        checked += 1;
    }
    assert!(checked > 40, "only {checked} conv/linear weights checked");
}
