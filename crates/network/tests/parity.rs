//! SeedUNet against the same layout written in plain PyTorch
//! (scripts/parity/network.py), through safetensors, both ways.
use network::{SeedUNet, SeedUNetConfig};
use std::path::PathBuf;
use std::process::Command;
use tch::{nn, Device, Kind, Tensor};

const TOL: f64 = 1e-5;

use util::repo_root;

fn venv_python() -> PathBuf {
    util::venv_python().unwrap()
}

/// Writes the fixed inputs and the Rust outputs, runs a parity script over
/// `dir` (which compares the Rust weights' outputs in PyTorch and writes its
/// own init back), prints what it says (each line after `tag`) and requires
/// that it compared both outputs within TOL.
fn run_parity_script(dir: &std::path::Path, script: &str, tag: &str, io: [(&str, &Tensor); 5]) {
    Tensor::write_safetensors(&io, dir.join("inputs.safetensors")).unwrap();
    let run = Command::new(venv_python())
        .arg(repo_root().join(script))
        .arg(dir)
        .arg("--tol")
        .arg(TOL.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    for line in stdout
        .lines()
        .chain(String::from_utf8_lossy(&run.stderr).lines())
    {
        println!("{tag}{line}");
    }
    assert!(
        run.status.success(),
        "{tag}{script} failed (Rust weights differ by more than {TOL})"
    );
    assert_eq!(
        stdout.matches("max |Δ|").count(),
        2,
        "{tag}both outputs were compared"
    );
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn seed_unet_matches_pytorch_both_ways() {
    tch::manual_seed(42);
    let dir = std::env::temp_dir().join(format!("seed-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = SeedUNetConfig {
        in_channels: 1,
        channels: 32,
        num_classes: Some(10),
        full_res_skip: false,
    };

    // Rust → PyTorch: random init with a fixed seed, saved as safetensors.
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SeedUNet::new(&vs.root(), cfg).unwrap();
    vs.save(dir.join("seed_rust.safetensors")).unwrap();
    let x = Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[0i64, 17, 500, 999]);
    let y = Tensor::from_slice(&[0i64, 3, 9, 10]); // 10 = the null class
    let out_cond = tch::no_grad(|| model.forward_t(&x, &t, Some(&y))).unwrap();
    let out_uncond = tch::no_grad(|| model.forward_t(&x, &t, None)).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"in_channels": 1, "channels": 32, "num_classes": 10}"#,
    )
    .unwrap();
    let io = [
        ("x", &x),
        ("t", &t),
        ("y", &y),
        ("out_cond", &out_cond),
        ("out_uncond", &out_uncond),
    ];
    run_parity_script(&dir, "scripts/parity/network.py", "", io);

    // PyTorch → Rust: a state_dict saved by PyTorch loads into SeedUNet.
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let model2 = SeedUNet::new(&vs2.root(), cfg).unwrap();
    vs2.load(dir.join("seed_torch.safetensors")).unwrap();
    let want: std::collections::HashMap<_, _> =
        Tensor::read_safetensors(dir.join("out_torch.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let got_cond = tch::no_grad(|| model2.forward_t(&x, &t, Some(&y))).unwrap();
    let got_uncond = tch::no_grad(|| model2.forward_t(&x, &t, None)).unwrap();
    let (d1, d2) = (
        max_diff(&got_cond, &want["out_cond"]),
        max_diff(&got_uncond, &want["out_uncond"]),
    );
    println!("pytorch weights -> rust  out_cond max |Δ| = {d1:.3e}, out_uncond max |Δ| = {d2:.3e}");
    assert!(
        d1 <= TOL && d2 <= TOL,
        "PyTorch weights in Rust differ: {d1:e}, {d2:e}"
    );
    // The two inits really differ, so the comparison above is not vacuous.
    assert!(max_diff(&got_cond, &out_cond) > 1e-3);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One config both ways through diffusers' UNet2DModel (scripts/parity/diffusers_unet.py).
fn unet_parity(name: &str, cfg: unet::UNetConfig, hw: i64) {
    use unet::UNet;
    tch::manual_seed(7);
    let dir = std::env::temp_dir().join(format!("unet-parity-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = UNet::new(&vs.root(), cfg.clone()).unwrap();
    vs.save(dir.join("unet_rust.safetensors")).unwrap();
    let c = cfg.in_channels;
    let x = Tensor::randn([4, c, hw, hw], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[0i64, 17, 500, 999]);
    let y = Tensor::from_slice(&[0i64, 3, 9, 10]); // 10 = the null class
    let run = |m: &UNet| {
        tch::no_grad(|| {
            (
                m.forward_t(&x, &t, Some(&y), false).unwrap(),
                m.forward_t(&x, &t, None, false).unwrap(),
            )
        })
    };
    let (out_cond, out_uncond) = run(&model);
    std::fs::write(dir.join("config.json"), formats::unet_config_to_json(&cfg)).unwrap();
    let io = [
        ("x", &x),
        ("t", &t),
        ("y", &y),
        ("out_cond", &out_cond),
        ("out_uncond", &out_uncond),
    ];
    run_parity_script(
        &dir,
        "scripts/parity/diffusers_unet.py",
        &format!("[{name}] "),
        io,
    );

    // diffusers → Rust: its own config.json reads back as the same config,
    // and its state_dict loads into ours, every tensor used.
    let saved = std::fs::read_to_string(dir.join("saved/config.json")).unwrap();
    assert_eq!(
        formats::unet_config_from_json(&saved).unwrap(),
        cfg,
        "[{name}] config.json"
    );
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let model2 = UNet::new(&vs2.root(), cfg).unwrap();
    let theirs = Tensor::read_safetensors(dir.join("unet_torch.safetensors")).unwrap();
    assert_eq!(
        theirs.len(),
        vs2.variables().len(),
        "[{name}] same number of tensors"
    );
    vs2.load(dir.join("unet_torch.safetensors")).unwrap();
    let want: std::collections::HashMap<_, _> =
        Tensor::read_safetensors(dir.join("out_torch.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let (got_cond, got_uncond) = run(&model2);
    let (d1, d2) = (
        max_diff(&got_cond, &want["out_cond"]),
        max_diff(&got_uncond, &want["out_uncond"]),
    );
    println!("[{name}] diffusers weights -> rust  out_cond max |Δ| = {d1:.3e}, out_uncond max |Δ| = {d2:.3e}");
    assert!(
        d1 <= TOL && d2 <= TOL,
        "[{name}] diffusers weights in Rust differ: {d1:e}, {d2:e}"
    );
    // Two different initialisations give different outputs: the agreement is not vacuous.
    assert!(
        max_diff(&got_cond, &out_cond) > 1e-3,
        "[{name}] the two inits agree"
    );
    assert!(
        max_diff(&got_cond, &got_uncond) > 1e-4,
        "[{name}] the class is ignored"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unet_with_attention_matches_diffusers_both_ways() {
    unet_parity("attention", unet::UNetConfig::fashion(), 28);
}

#[test]
fn unet_without_attention_matches_diffusers_both_ways() {
    use unet::{DownBlockType::DownBlock2D, UNetConfig, UpBlockType::UpBlock2D};
    // Two layers per block, the other embedding convention, 3 channels at 32×32.
    let cfg = UNetConfig {
        sample_size: Some(32),
        in_channels: 3,
        out_channels: 3,
        block_out_channels: vec![32, 48],
        layers_per_block: 2,
        down_block_types: vec![DownBlock2D, DownBlock2D],
        up_block_types: vec![UpBlock2D, UpBlock2D],
        add_attention: false,
        norm_num_groups: 16,
        flip_sin_to_cos: false,
        freq_shift: 1,
        ..UNetConfig::fashion()
    };
    unet_parity("no-attention", cfg, 32);
}
