//! Sample from a trained checkpoint with DDPM, DDIM or an ODE solver (or, from
//! a rectified-flow model, with Euler or Heun), optionally with
//! classifier-free guidance.
//!
//! cargo run --release --example sample -- --pretrained fashion-cfg \
//!     [--checkpoint out/train/ckpt-00001000.safetensors instead of --pretrained]
//!     --sampler ddim --steps 50 --eta 0 --n 20 --seed 0 --out out/samples.png \
//!     [--guidance 3 --per-class 4 | --class 7] [--save-tensors samples.safetensors]
//!     [--trace trace.safetensors] [--gif denoise.gif] [--trajectory traj.png]
use anyhow::{bail, Context, Result};
use clap::Parser;
use classifier_free::Guided;
use examples::Classes;
use examples::{AnySampler, DeviceArgs, ModelArgs, SamplerArgs};
use indicatif::{ProgressBar, ProgressStyle};
use network::NoisePredictor;
use reverse::{FlowSolver, Sampler, StepRecord};
use std::path::PathBuf;
use tch::{Kind, Tensor};
use util::outputs::{Format, OutputSet};

#[derive(Parser)]
#[command(about = "Draw samples from a checkpoint with DDPM or DDIM")]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplerArgs,
    /// Number of images (default 20; classes cycle 0, 1, …). Not with
    /// --class / --per-class, which set the number themselves.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..), conflicts_with_all = ["class", "per_class"])]
    n: Option<i64>,
    /// Classifier-free guidance scale w (1 = plain conditional, 0 = unconditional).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    guidance: f64,
    /// Allow w < 0.
    #[arg(long)]
    allow_negative_guidance: bool,
    /// CFG rescale φ from 0 (off) to 1 (Lin et al. 2024): brings the guided
    /// prediction back to the conditional one's standard deviation.
    #[arg(long, default_value_t = 0.0)]
    guidance_rescale: f64,
    /// Sample these classes (comma-separated), one image each.
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "per_class",
        allow_negative_numbers = true
    )]
    class: Vec<i64>,
    /// Sample k images of every class.
    #[arg(long, allow_negative_numbers = true)]
    per_class: Option<i64>,
    #[arg(long, default_value_t = 0, value_parser = util::parse_seed, allow_negative_numbers = true)]
    seed: u64,
    /// The image grid (PNG; default out/samples.png).
    #[arg(long, conflicts_with = "no_grid")]
    out: Option<PathBuf>,
    /// Do not write the image grid (for large --n).
    #[arg(long)]
    no_grid: bool,
    /// Sample at most this many images at a time (x_T is drawn for all of them first).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..))]
    batch_size: i64,
    /// Also write `images` (N,C,H,W f32 in [−1,1]) and `labels` (N, i64; −1 = none).
    #[arg(long)]
    save_tensors: Option<PathBuf>,
    /// Also write the per-step trace.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Also write an animated GIF of the denoising.
    #[arg(long)]
    gif: Option<PathBuf>,
    /// Also write a trajectory figure: rows = samples, columns = steps of x_t, then of x̂_0.
    #[arg(long)]
    trajectory: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

fn main() {
    util::run(|| {
        let args = Args::parse();
        // Every input and output, checked before any work.
        let mut outs = OutputSet::new();
        args.model.register(&mut outs)?;
        let out_path = args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("out/samples.png"));
        let grid_out = (!args.no_grid)
            .then(|| outs.output("--out", &out_path, Format::Png))
            .transpose()?;
        let tensors_out = outs.output_if(
            "--save-tensors",
            args.save_tensors.as_ref(),
            Format::Safetensors,
        )?;
        let trace_out = outs.output_if("--trace", args.trace.as_ref(), Format::Safetensors)?;
        let trajectory_out =
            outs.output_if("--trajectory", args.trajectory.as_ref(), Format::Png)?;
        let gif_out = outs.output_if("--gif", args.gif.as_ref(), Format::Gif)?;

        let device = args.device.device()?;
        let model = args.model.load_any(device)?;
        let (loaded, schedule, source) = (&model.loaded, &model.schedule, &model.source);
        let cfg = &loaded.config;
        let sampler = args.sampling.sampler_for(&model)?;
        let evals = sampler.check(schedule)?; // validates the settings before any work
        if let (AnySampler::Flow(_), Some(_)) = (&sampler, &trace_out) {
            bail!("--trace records the steps of a diffusion sampler; a flow model's steps are not traced: use --trajectory or --gif");
        }
        let [c, h, w] = cfg.image_shape();
        let request = match (&args.class[..], args.per_class) {
            ([], None) => None,
            ([], Some(k)) if k < 1 => bail!("--per-class {k}: must be at least 1"),
            ([], Some(k)) => Some(Classes::PerClass(k)),
            (list, _) => Some(Classes::List(list.to_vec())),
        };
        let n_default = args.n.unwrap_or(20);
        // How many images, before any of them (or their labels) is allocated.
        let n = match (&request, cfg.model.num_classes()) {
            (Some(Classes::PerClass(per)), Some(k)) => per.checked_mul(k).unwrap_or(i64::MAX),
            (Some(Classes::List(l)), _) => l.len() as i64,
            _ => n_default,
        };
        let want_trace = trace_out.is_some() || gif_out.is_some() || trajectory_out.is_some();
        if want_trace && n > args.batch_size {
            bail!(
                "--trace/--gif/--trajectory keep every step in memory: use --n ≤ --batch-size ({})",
                args.batch_size
            );
        }
        examples::check_sampling_memory(
            n,
            [c, h, w],
            args.batch_size,
            if want_trace { evals } else { 0 },
        )?;
        let (labels, cols) = match (cfg.model.num_classes(), &request) {
            (Some(k), Some(req)) => {
                let l = examples::labels(req, k, device)?;
                let cols = if let Classes::PerClass(per) = req {
                    *per
                } else {
                    l.size()[0].min(10)
                };
                (Some(l), cols)
            }
            (Some(k), None) => (
                Some(Tensor::arange(n, (Kind::Int64, device)).remainder(k)),
                k.min(n),
            ),
            (None, Some(_)) => bail!(
                "--class/--per-class need a class-conditional model; this checkpoint has none"
            ),
            (None, None) => (None, 10.min(n)),
        };
        let guided;
        if args.guidance_rescale != 0.0 && args.guidance == 1.0 {
            bail!("--guidance-rescale {} does nothing at --guidance 1: pass a guidance scale w ≠ 1, or drop the flag", args.guidance_rescale);
        }
        let predictor: &dyn NoisePredictor = if args.guidance != 1.0 {
            guided = Guided::new(&*loaded.model, args.guidance, args.allow_negative_guidance)?
                .with_rescale(args.guidance_rescale)?;
            if let Some(w) = examples::dropout_warning(cfg.p_uncond, args.guidance) {
                eprintln!("{w}");
            }
            &guided
        } else {
            &*loaded.model
        };

        tch::manual_seed(args.seed as i64);
        let x_big_t = Tensor::randn([n, c, h, w], (Kind::Float, device));
        let chunks = x_big_t.split(args.batch_size, 0);
        let bar = ProgressBar::new(evals as u64 * chunks.len() as u64);
        bar.set_style(ProgressStyle::with_template(
            "{msg} {bar:30} {pos}/{len} evaluations | {per_sec} | ETA {eta}",
        )?);
        bar.set_message(sampler_name(&sampler, evals));
        let mut records: Vec<StepRecord> = Vec::new();
        let mut parts = Vec::new();
        for (i, x) in chunks.iter().enumerate() {
            let y = labels
                .as_ref()
                .map(|l| l.narrow(0, i as i64 * args.batch_size, x.size()[0]));
            parts.push(
                model.sample_observed(predictor, &sampler, x, y.as_ref(), &mut |r| {
                    if want_trace {
                        records.push(r.shallow_clone());
                    }
                    bar.inc(1);
                })?,
            );
        }
        let x0 = Tensor::cat(&parts, 0);
        bar.finish_and_clear();
        util::ensure_finite(&x0, "the samples").context(
            "nothing was written: the weights or the settings (--guidance, --eta, --no-clip) make sampling diverge",
        )?;

        let of = model.describe();
        let what = format!(
            "{n} samples, {}, guidance w = {}, {of}",
            match &sampler {
                AnySampler::Diffusion(s) => format!("{s:?}"),
                AnySampler::Flow(f) => format!("{f:?}"),
            },
            args.guidance
        );
        let names = labels.as_ref().map(|l| class_names(l, &cfg.dataset));
        if let Some(id) = grid_out {
            let name = sampler_name(&sampler, evals);
            let title = if args.guidance == 1.0 {
                name
            } else {
                format!("{name}, guidance w = {}", args.guidance)
            };
            outs.write(id, &grid_png(&x0, cols, names.as_deref(), &title)?)?;
        }
        if let Some(id) = tensors_out {
            let y = labels.as_ref().map_or_else(
                || Tensor::full([n], -1, (Kind::Int64, device)),
                Tensor::shallow_clone,
            );
            let tensors = [
                ("images".to_string(), x0.to_kind(Kind::Float)),
                ("labels".to_string(), y),
            ];
            let mut meta = std::collections::BTreeMap::new();
            meta.insert("format".into(), "diffusion-executed/samples-v1".into());
            meta.insert("checkpoint".into(), source.clone());
            let sampler_json = match &sampler {
                AnySampler::Diffusion(s) => serde_json::to_string(s)?,
                AnySampler::Flow(f) => serde_json::to_string(f)?,
            };
            meta.insert("sampler".into(), sampler_json);
            let steps = match &sampler {
                AnySampler::Diffusion(s) => s.ode().map_or(evals, |o| o.1),
                AnySampler::Flow(f) => f.steps,
            };
            meta.insert("steps".into(), steps.to_string());
            meta.insert("evaluations".into(), evals.to_string());
            meta.insert("seed".into(), args.seed.to_string());
            meta.insert("guidance".into(), args.guidance.to_string());
            outs.write(id, &util::safetensors::to_bytes(&tensors, &meta)?)?;
        }
        if let (Some(id), AnySampler::Diffusion(s)) = (trace_out, &sampler) {
            let bytes = formats::trace::to_bytes(&records, schedule, s, cfg.prediction)?;
            outs.write(id, &bytes)?;
        }
        if let Some(id) = trajectory_out {
            outs.write(id, &trajectory(&records, names.as_deref())?)?;
        }
        if let Some(id) = gif_out {
            outs.write(id, &gif(&records, &x0, cols)?)?;
        }
        outs.commit()?;
        if args.no_grid {
            println!("sampled {what}");
        } else {
            println!("wrote {} ({what})", out_path.display());
        }
        for (p, extra) in [
            (&args.save_tensors, String::new()),
            (&args.trace, format!(" ({} steps)", records.len())),
            (&args.trajectory, String::new()),
            (&args.gif, String::new()),
        ] {
            if let Some(p) = p {
                println!("wrote {}{extra}", p.display());
            }
        }
        Ok(())
    })
}

/// Eight evenly spaced steps: indices into the records.
fn picks(len: usize, k: usize) -> Vec<usize> {
    (0..k).map(|i| i * (len - 1) / (k - 1).max(1)).collect()
}

/// "DDPM-1000", "DDIM-50", "DDIM-50 η = 1", "Heun, 19 evaluations", "flow
/// Euler-50": the sampler and its network calls.
fn sampler_name(sampler: &AnySampler, evals: usize) -> String {
    let sampler = match sampler {
        AnySampler::Diffusion(s) => s,
        AnySampler::Flow(f) => {
            let shift = if f.shift == 1.0 {
                String::new()
            } else {
                format!(", shift {}", f.shift)
            };
            return match f.solver {
                FlowSolver::Euler => format!("flow Euler-{evals}{shift}"),
                FlowSolver::Heun => format!("flow Heun, {evals} evaluations{shift}"),
            };
        }
    };
    let karras = |s: &reverse::SigmaSpacing| match s {
        reverse::SigmaSpacing::Karras { .. } => ", Karras σ",
        reverse::SigmaSpacing::Timesteps { .. } => "",
    };
    match sampler {
        Sampler::Ddpm { .. } => format!("DDPM-{evals}"),
        Sampler::Ddim { eta, .. } if *eta != 0.0 => format!("DDIM-{evals}, η = {eta}"),
        Sampler::Ddim { .. } => format!("DDIM-{evals}"),
        Sampler::Euler { sigmas, .. } => format!("Euler-{evals}{}", karras(sigmas)),
        Sampler::Heun { sigmas, .. } => format!("Heun, {evals} evaluations{}", karras(sigmas)),
        Sampler::DpmSolverPp { sigmas, .. } => {
            format!("DPM-Solver++(2M)-{evals}{}", karras(sigmas))
        }
    }
}

/// The class name of every image's label.
fn class_names(labels: &Tensor, dataset: &str) -> Vec<String> {
    Vec::<i64>::try_from(labels.to_device(tch::Device::Cpu))
        .unwrap_or_default()
        .into_iter()
        .map(|c| data::class_name(dataset, c))
        .collect()
}

/// The samples in rows of `cols`, labelled: a column (or, failing that, a
/// row) whose images all have one class gets that class's name. A last,
/// short row is filled with blank (white) cells.
fn grid_png(x0: &Tensor, cols: i64, names: Option<&[String]>, title: &str) -> Result<Vec<u8>> {
    let n = x0.size()[0];
    let rows = (n + cols - 1) / cols;
    let mut tiles = x0.shallow_clone();
    if rows * cols > n {
        let [_, c, h, w] = x0.size()[..] else {
            bail!("samples must be (N, C, H, W)")
        };
        let blank = Tensor::ones([rows * cols - n, c, h, w], (Kind::Float, x0.device()));
        tiles = Tensor::cat(&[x0.to_kind(Kind::Float), blank], 0);
    }
    // One name for the cells i ∈ idx when they all share it.
    let shared = |idx: &mut dyn Iterator<Item = i64>| -> String {
        let Some(names) = names else {
            return String::new();
        };
        let mut it = idx.filter(|&i| i < n).map(|i| &names[i as usize]);
        let first = it.next();
        match first {
            Some(f) if it.all(|o| o == f) => f.clone(),
            _ => String::new(),
        }
    };
    let col_labels: Vec<String> = (0..cols)
        .map(|c| shared(&mut (0..rows).map(|r| r * cols + c)))
        .collect();
    let row_labels: Vec<String> = if col_labels.iter().all(|l| !l.is_empty()) {
        vec![String::new(); rows as usize]
    } else {
        (0..rows)
            .map(|r| shared(&mut (0..cols).map(|c| r * cols + c)))
            .collect()
    };
    util::labelled_grid_png(
        &tiles,
        &util::GridLabels::new(title, row_labels, col_labels),
        3,
    )
}

/// Rows = the first (up to) 6 samples; columns = 8 steps of x_t, then the same 8 steps of x̂_0.
fn trajectory(records: &[StepRecord], names: Option<&[String]>) -> Result<Vec<u8>> {
    let rows = records[0].x_t.size()[0].min(10);
    let cols = picks(records.len(), 8);
    let mut tiles = Vec::new();
    for r in 0..rows {
        for &i in &cols {
            tiles.push(records[i].x_t.get(r).clamp(-1.0, 1.0));
        }
        for &i in &cols {
            tiles.push(records[i].x0.get(r));
        }
    }
    let mut col_labels: Vec<String> = cols
        .iter()
        .map(|&i| format!("x_t\nt = {}", records[i].t))
        .collect();
    col_labels.extend(cols.iter().map(|&i| format!("x̂₀\nt = {}", records[i].t)));
    let row_labels = (0..rows as usize)
        .map(|r| names.map_or_else(|| format!("sample {}", r + 1), |n| n[r].clone()))
        .collect();
    let labels = util::GridLabels::new(
        "denoising: the sample x_t (left) and the network's guess x̂₀ (right)",
        row_labels,
        col_labels,
    );
    util::labelled_grid_png(&Tensor::stack(&tiles, 0), &labels, 2)
}

/// One frame per ~2% of the steps, each a grid of the current x_t, ending on
/// the final samples (held for a second).
fn gif(records: &[StepRecord], x0: &Tensor, cols: i64) -> Result<Vec<u8>> {
    use image::codecs::gif::{GifEncoder, Repeat};
    use image::{Delay, Frame};
    let mut bytes = Vec::new();
    {
        let mut enc = GifEncoder::new_with_speed(&mut bytes, 10);
        enc.set_repeat(Repeat::Infinite)?;
        let k = records.len().min(50);
        let mut frames: Vec<(Tensor, u32)> = picks(records.len(), k)
            .into_iter()
            .map(|i| (records[i].x_t.clamp(-1.0, 1.0), 60))
            .collect();
        frames.push((x0.shallow_clone(), 1500));
        for (x, ms) in frames {
            let rgb = util::image_grid(&x, cols)?;
            let rgba = image::DynamicImage::ImageRgb8(rgb).to_rgba8();
            let rgba = image::imageops::resize(
                &rgba,
                rgba.width() * 2,
                rgba.height() * 2,
                image::imageops::FilterType::Nearest,
            );
            enc.encode_frame(Frame::from_parts(
                rgba,
                0,
                0,
                Delay::from_numer_denom_ms(ms, 1),
            ))?;
        }
    }
    Ok(bytes)
}
