//! The whole method on one page, with only tch and image; each block names its equation,
//! and tests/one_page.rs checks it against the crates. Usage:
//! cargo run --release --example one_page -- [--steps N] [--synthetic] [--data-dir D] [--out D]
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

pub const T: i64 = 1000; // diffusion steps
const K: i64 = 10; // classes; label K is the null class ∅

/// DDPM §4: β linear from 1e-4 to 0.02; ᾱ_t = ∏_{s≤t} (1 − β_s). Kept in f64: 1 − ᾱ_t
/// is about 1e-4 at the first step, and f32 would lose most of its digits there.
pub fn schedule(device: Device) -> (Tensor, Tensor) {
    let betas = Tensor::linspace(1e-4, 0.02, T, (Kind::Double, device));
    let alpha_bar = (1f64 - &betas).cumprod(0, Kind::Double);
    (betas, alpha_bar)
}

/// Per-sample coefficient f(c[t_i]) computed in f64, as f32, shaped (N, 1, 1, 1).
fn at(c: &Tensor, t: &Tensor, f: impl Fn(Tensor) -> Tensor) -> Tensor {
    f(c.index_select(0, t))
        .to_kind(Kind::Float)
        .reshape([-1, 1, 1, 1])
}

/// DDPM eq. 4: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε.
pub fn q_sample(ab: &Tensor, x0: &Tensor, t: &Tensor, eps: &Tensor) -> Tensor {
    at(ab, t, |a| a.sqrt()) * x0 + at(ab, t, |a| (1f64 - a).sqrt()) * eps
}

/// Transformer sinusoids of t: [sin(t ω_i), cos(t ω_i)], ω_i = 10000^(−i/(d/2)).
fn embed(t: &Tensor, d: i64) -> Tensor {
    let w = (Tensor::arange(d / 2, (Kind::Float, t.device()))
        * (-(10000f64.ln()) / (d / 2) as f64))
        .exp();
    let a = t.to_kind(Kind::Float).unsqueeze(1) * w.unsqueeze(0);
    Tensor::cat(&[a.sin(), a.cos()], 1)
}

/// A small UNet: two stride-2 convs down, time and class embeddings added at
/// the bottleneck, a residual middle block, nearest upsampling with a skip,
/// and one conv of x_t at full resolution (without it, samples stay speckled).
pub struct Net {
    convs: Vec<nn::Conv2D>, // down1, down2, mid, up2, up1, out, full-resolution skip
    norms: Vec<nn::GroupNorm>,
    time: nn::Linear,
    class: nn::Embedding,
    c: i64,
}

impl Net {
    pub fn new(vs: &nn::Path, c: i64) -> Net {
        let shapes = [
            (1, c, 2),
            (c, 2 * c, 2),
            (2 * c, 2 * c, 1),
            (2 * c, c, 1),
            (c, c, 1),
            (c, 1, 1),
            (1, c, 1), // x_t at full resolution, added before the output conv
        ];
        let convs = shapes.iter().enumerate().map(|(i, &(cin, cout, stride))| {
            let cfg = nn::ConvConfig {
                stride,
                padding: 1,
                ..Default::default()
            };
            nn::conv2d(vs / format!("conv{i}"), cin, cout, 3, cfg)
        });
        let norms = shapes[..5].iter().enumerate();
        Net {
            convs: convs.collect(),
            norms: norms
                .map(|(i, s)| nn::group_norm(vs / format!("norm{i}"), 32, s.1, Default::default()))
                .collect(),
            time: nn::linear(vs / "time", c, 2 * c, Default::default()),
            class: nn::embedding(vs / "class", K + 1, 2 * c, Default::default()),
            c,
        }
    }

    /// ε_θ(x_t, t, y): predicts the noise in x_t. y = K means "no label".
    pub fn forward(&self, x: &Tensor, t: &Tensor, y: &Tensor) -> Tensor {
        let block = |i: usize, h: &Tensor| self.norms[i].forward(&self.convs[i].forward(h)).relu();
        let up = |h: &Tensor| h.upsample_nearest2d([h.size()[2] * 2, h.size()[3] * 2], None, None);
        let (d1, cond) = (
            block(0, x),
            self.time.forward(&embed(t, self.c)).relu() + self.class.forward(y),
        );
        let h = block(1, &d1) + cond.unsqueeze(-1).unsqueeze(-1);
        let h = &h + block(2, &h);
        let h = block(3, &up(&h)) + d1;
        self.convs[5].forward(&(block(4, &up(&h)) + self.convs[6].forward(x)))
    }
}

/// DDPM eq. 15: x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t = √(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε̂, clipped to [−1, 1].
pub fn predict_x0(ab: &Tensor, x: &Tensor, t: &Tensor, eps: &Tensor) -> Tensor {
    let (r, rm1) = (
        at(ab, t, |a| a.reciprocal().sqrt()),
        at(ab, t, |a| (a.reciprocal() - 1.0).sqrt()),
    );
    (r * x - rm1 * eps).clamp(-1.0, 1.0)
}

/// DDPM eq. 6–7 and Algorithm 2: x_{t−1} = μ̃_t(x_t, x̂_0) + σ_t z, σ_t² = β̃_t, no noise at t = 0.
pub fn ddpm_step(
    betas: &Tensor,
    ab: &Tensor,
    x: &Tensor,
    t: i64,
    x0: &Tensor,
    z: &Tensor,
) -> Tensor {
    let ab_at = |i: i64| ab.double_value(&[i]);
    let (b, a) = (betas.double_value(&[t]), ab_at(t));
    let a_prev = if t > 0 { ab_at(t - 1) } else { 1.0 };
    let mean =
        x0 * (a_prev.sqrt() * b / (1.0 - a)) + x * ((1.0 - b).sqrt() * (1.0 - a_prev) / (1.0 - a));
    let var = b * (1.0 - a_prev) / (1.0 - a); // β̃_t, 0 at t = 0
    mean + z * var.sqrt()
}

/// DDIM eq. 12 and 16: x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z, with
/// σ = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev); ᾱ_prev = 1 after the last step.
pub fn ddim_step(
    ab: &Tensor,
    t: i64,
    prev: Option<i64>,
    x0: &Tensor,
    eps: &Tensor,
    eta: f64,
    z: &Tensor,
) -> Tensor {
    let a = ab.double_value(&[t]);
    let a_prev = prev.map_or(1.0, |p| ab.double_value(&[p]));
    let sigma = eta * ((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev)).sqrt();
    x0 * a_prev.sqrt() + eps * (1.0 - a_prev - sigma * sigma).max(0.0).sqrt() + z * sigma
}

/// Classifier-free guidance (Ho & Salimans eq. 6 with w = 1 + w′): ε̃ = ε_∅ + w (ε_y − ε_∅),
/// both halves in one batch of 2N.
pub fn guided_eps(net: &Net, x: &Tensor, t: &Tensor, y: &Tensor, w: f64) -> Tensor {
    let null = Tensor::full_like(y, K);
    let out = net.forward(
        &Tensor::cat(&[x, x], 0),
        &Tensor::cat(&[t, t], 0),
        &Tensor::cat(&[y, &null], 0),
    );
    let (eps_y, eps_null) = (
        out.narrow(0, 0, x.size()[0]),
        out.narrow(0, x.size()[0], x.size()[0]),
    );
    &eps_null + (eps_y - &eps_null) * w
}

/// Samples labels y from noise: DDPM (all T steps) when `ddim` is None, else
/// DDIM with (steps, η) on the trailing grid T−1, …; guidance scale w.
fn sample(
    net: &Net,
    (betas, ab): (&Tensor, &Tensor),
    y: &Tensor,
    ddim: Option<(i64, f64)>,
    w: f64,
) -> Tensor {
    let mut x = Tensor::randn([y.size()[0], 1, 28, 28], (Kind::Float, y.device()));
    let grid: Vec<i64> = match ddim {
        None => (0..T).rev().collect(),
        Some((s, _)) => (0..s)
            .map(|i| ((T as f64 - i as f64 * T as f64 / s as f64).round() as i64) - 1)
            .collect(),
    };
    for (i, &t) in grid.iter().enumerate() {
        let tt = Tensor::full([y.size()[0]], t, (Kind::Int64, y.device()));
        let eps = tch::no_grad(|| guided_eps(net, &x, &tt, y, w));
        let x0 = predict_x0(ab, &x, &tt, &eps);
        let eps = (&x - at(ab, &tt, |a| a.sqrt()) * &x0) / at(ab, &tt, |a| (1f64 - a).sqrt()); // consistent with clipped x̂_0
        let last = i + 1 == grid.len();
        let z = if last { x.zeros_like() } else { x.randn_like() };
        x = match ddim {
            None => ddpm_step(betas, ab, &x, t, &x0, &z),
            Some((_, eta)) => ddim_step(ab, t, grid.get(i + 1).copied(), &x0, &eps, eta, &z),
        };
    }
    x
}

/// Fashion-MNIST from the IDX files (gzip through the system's gzip), pixels in [−1, 1].
fn load_fashion(dir: &str) -> Result<(Tensor, Tensor), String> {
    let read = |name: &str| -> Result<Vec<u8>, String> {
        let path = format!("{dir}/{name}.gz");
        let out = std::process::Command::new("gzip")
            .args(["-dc", &path])
            .output();
        let out = out.map_err(|e| format!("gzip: {e}"))?;
        if !out.status.success() {
            return Err(format!("cannot read {path}: install dataset-fashion-mnist, pass --data-dir, or use --synthetic"));
        }
        Ok(out.stdout)
    };
    let images = read("train-images-idx3-ubyte")?;
    let labels = read("train-labels-idx1-ubyte")?;
    if images.len() != 16 + 784 * 60_000 || labels.len() != 8 + 60_000 {
        return Err(format!("{dir}: expected the 60 000-image training set"));
    }
    let x = Tensor::from_slice(&images[16..]).reshape([60_000, 1, 28, 28]);
    Ok((
        x.to_kind(Kind::Float) / 127.5 - 1.0,
        Tensor::from_slice(&labels[8..]).to_kind(Kind::Int64),
    ))
}

/// Stand-in data without the files: class c is a bright square of side 6 + 2c.
fn synthetic(n: i64) -> (Tensor, Tensor) {
    let y = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(K);
    let x = Tensor::full([n, 1, 28, 28], -1.0, (Kind::Float, Device::Cpu));
    for i in 0..n {
        let s = 6 + 2 * (i % K);
        let rows = x.get(i).narrow(1, 14 - s / 2, s);
        let _ = rows.narrow(2, 14 - s / 2, s).fill_(1.0);
    }
    (x, y)
}

/// Saves images (N, 1, 28, 28) in [−1, 1] as a PNG grid with `cols` columns.
fn save_grid(x: &Tensor, cols: i64, path: &str) {
    let n = x.size()[0];
    let rows = (n + cols - 1) / cols;
    let px = ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).to_kind(Kind::Uint8);
    let mut img = image::GrayImage::new((cols * 30) as u32, (rows * 30) as u32);
    for i in 0..n {
        let data =
            Vec::<u8>::try_from(px.get(i).flatten(0, -1).to_device(Device::Cpu)).expect("u8");
        for (j, v) in data.iter().enumerate() {
            let (r, c) = (
                (i / cols) * 30 + 1 + j as i64 / 28,
                (i % cols) * 30 + 1 + j as i64 % 28,
            );
            img.put_pixel(c as u32, r as u32, image::Luma([*v]));
        }
    }
    let (w, h) = (img.width() * 3, img.height() * 3); // 3× larger, pixels kept sharp
    let img = image::imageops::resize(&img, w, h, image::imageops::FilterType::Nearest);
    img.save(path).expect("cannot write the PNG");
    println!("wrote {path}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let steps: i64 = flag("--steps").map_or(1200, |s| s.parse().expect("--steps takes a number"));
    let out = flag("--out").unwrap_or_else(|| "out/one_page".into());
    let data_dir = flag("--data-dir").unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into());
    std::fs::create_dir_all(&out).expect("cannot create the output folder");
    let device = Device::cuda_if_available();
    tch::manual_seed(0);
    let (x_all, y_all) = if args.iter().any(|a| a == "--synthetic") {
        synthetic(2000)
    } else {
        load_fashion(&data_dir).unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(1)
        })
    };
    let (x_all, y_all) = (x_all.to_device(device), y_all.to_device(device));
    let (betas, ab) = schedule(device);
    let vs = nn::VarStore::new(device);
    let net = Net::new(&vs.root(), 64);
    let mut opt = nn::Adam::default().build(&vs, 2e-3).expect("optimizer");

    // Training (DDPM Algorithm 1 with label dropout p = 0.1): minimise ‖ε − ε_θ(x_t, t, y)‖².
    for step in 1..=steps {
        let idx = Tensor::randint(x_all.size()[0], [128], (Kind::Int64, device));
        let (x0, y) = (x_all.index_select(0, &idx), y_all.index_select(0, &idx));
        let keep = Tensor::rand([128], (Kind::Float, device)).ge(0.1);
        let y = y.where_self(&keep, &Tensor::full_like(&y, K));
        let t = Tensor::randint(T, [128], (Kind::Int64, device));
        let eps = x0.randn_like();
        let x_t = q_sample(&ab, &x0, &t, &eps);
        let loss = net
            .forward(&x_t, &t, &y)
            .mse_loss(&eps, tch::Reduction::Mean);
        opt.backward_step(&loss);
        if step % 100 == 0 || step == steps {
            println!("step {step:>5}/{steps}  loss {:.4}", loss.double_value(&[]));
        }
    }

    // Sampling: one row per class, for each sampler.
    let y = Tensor::arange(2 * K, (Kind::Int64, device)).remainder(K);
    for (name, ddim, w) in [
        ("ddpm", None, 1.0),
        ("ddim50", Some((50, 0.0)), 1.0),
        ("ddim50_guided3", Some((50, 0.0)), 3.0),
    ] {
        let x = sample(&net, (&betas, &ab), &y, ddim, w).to_device(Device::Cpu);
        save_grid(&x, K, &format!("{out}/{name}.png"));
        let tensors = [("images", &x), ("labels", &y.to_device(Device::Cpu))];
        Tensor::write_safetensors(&tensors, format!("{out}/{name}.safetensors")).expect("write");
    }
}
