//! The bug museum: eight real diffusion pitfalls, each switched on against the
//! correct code with the same noise and labels, and measured.
//!
//! cargo run --release --example bug_museum -- --out out/bug-museum
//!
//! Sampling bugs use the shipped model; training bugs train four small models
//! (correct, no label dropout, data in [0, 1], the seed layout without a
//! full-resolution path) for --train-steps each, cached in --out/models. Writes one grid per exhibit (top row correct, bottom row
//! buggy, one column per class) and table.md with the measured effects.
use anyhow::{bail, Context, Result};
use clap::Parser;
use classifier_free::Guided;
use evaluate::{Evaluator, Metrics};
use formats::checkpoint::TrainerFile;
use formats::Weights;
use forward::Schedule;
use indicatif::{ProgressBar, ProgressStyle};
use network::NoisePredictor;
use network::SeedUNetConfig;
use reverse::{GridStep, Pipeline, Sampler, Spacing, Step, StepInput, TimestepGrid, Variance};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};
use training::{ModelConfig, TrainConfig, Trainer};
use util::outputs::{Format, OutputSet};

#[derive(Parser)]
#[command(about = "Eight diffusion bugs, each measured against the correct code")]
struct Args {
    #[arg(long, default_value = "out/bug-museum")]
    out: PathBuf,
    /// Samples per side for the DDIM exhibits.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(i64).range(20..))]
    n: i64,
    /// Samples per side for the DDPM exhibit (1000 network calls each).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i64).range(20..))]
    n_ddpm: i64,
    /// Training steps of each of the four small models.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..))]
    train_steps: i64,
    /// Run only these exhibits (comma-separated keys; default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    #[arg(long, default_value = data::FASHION_MNIST_DIR)]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 0, value_parser = util::parse_seed, allow_negative_numbers = true)]
    seed: u64,
}

const KEYS: [&str; 8] = [
    "ddim_grid",
    "ddim_sigma",
    "no_dropout",
    "w_convention",
    "ddpm_clip",
    "data_range",
    "no_ema",
    "no_full_res",
];

/// One exhibit: the same noise and labels through the correct and the buggy code.
struct Exhibit {
    key: &'static str,
    title: &'static str,
    correct: Tensor,
    buggy: Tensor,
}

fn main() {
    util::run(|| {
        let args = Args::parse();
        let seed = args.seed as i64;
        if let Some(k) = args.only.iter().find(|k| !KEYS.contains(&k.as_str())) {
            bail!("unknown exhibit '{k}': choose from {}", KEYS.join(", "));
        }
        let wanted = |k: &str| args.only.is_empty() || args.only.iter().any(|o| o == k);
        let device = Device::Cpu; // the book's numbers are CPU numbers
        std::fs::create_dir_all(args.out.join("models"))
            .with_context(|| format!("cannot create {}", args.out.display()))?;
        // Every figure and the table are checked now and written together at the end.
        let mut outs = OutputSet::new();
        let mut figure = std::collections::HashMap::new();
        for k in KEYS.iter().filter(|k| wanted(k)) {
            let path = args.out.join(format!("bug-{k}.png"));
            figure.insert(*k, outs.output("--out", &path, Format::Png)?);
        }
        let table_out = outs.output("--out", &args.out.join("table.md"), Format::Markdown)?;
        let test = data::load_mnist_like(&args.data_dir, data::Split::Test)?;
        let ev = Evaluator::new(evaluate::pretrained::classifier(device)?, &test.images);
        let shipped = formats::pretrained::fashion_cfg(device)?;
        let s = shipped.schedule()?;
        let kind = shipped.config.prediction;
        let m: &dyn NoisePredictor = &*shipped.model;
        let pipe = Pipeline::new(m, &s, kind);

        let mut exhibits = Vec::new();
        let ddim = |steps, eta| Sampler::Ddim {
            steps,
            eta,
            spacing: Spacing::Trailing,
            clip: true,
        };

        if wanted("ddim_grid") {
            // Correct: 20 trailing steps from t = T−1, the last one landing on ᾱ = 1.
            // Bug: "leading" steps 950, 900, …, 0 and a last step to ᾱ_0 instead of 1.
            let (x, y) = noise(args.n, seed);
            let correct = pipe.sample(&ddim(20, 0.0), &x, Some(&y))?;
            let ts: Vec<i64> = (0..20).rev().map(|i| i * 50).collect();
            let bad = TimestepGrid::unchecked(&ts, s.steps, Some(0));
            let buggy = pipe.run(&ddim(20, 0.0), &bad, &x, Some(&y), &mut |_| {})?;
            exhibits.push(Exhibit {
                key: "ddim_grid",
                title: "DDIM grid from 950 ending on ᾱ₀ (DDIM-20)",
                correct,
                buggy,
            });
        }
        if wanted("ddim_sigma") {
            let (x, y) = noise(args.n, seed);
            let grid = ddim(50, 1.0).grid(s.steps)?;
            tch::manual_seed(seed + 1);
            let correct = pipe.run(&ddim(50, 1.0), &grid, &x, Some(&y), &mut |_| {})?;
            tch::manual_seed(seed + 1);
            let bug = DdimWithoutSigma { eta: 1.0 };
            let buggy = pipe.run(&bug, &grid, &x, Some(&y), &mut |_| {})?;
            exhibits.push(Exhibit {
                key: "ddim_sigma",
                title: "DDIM η = 1 without σ² in the direction term (DDIM-50)",
                correct,
                buggy,
            });
        }
        if wanted("w_convention") {
            // Intended: no guidance. The paper writes ε̃ = (1 + w′) ε_c − w′ ε_u with
            // w′ = 0 for that; plugging w′ = 0 into this book's ε_u + w (ε_c − ε_u) gives ε_u.
            let (x, y) = noise(args.n, seed);
            let correct = guided_sample(pipe, &ddim(50, 0.0), 1.0, &x, &y)?;
            let buggy = guided_sample(pipe, &ddim(50, 0.0), 0.0, &x, &y)?;
            exhibits.push(Exhibit {
                key: "w_convention",
                title: "paper's w′ = 0 passed as this book's w (DDIM-50)",
                correct,
                buggy,
            });
        }
        if wanted("ddpm_clip") {
            let (x, y) = noise(args.n_ddpm, seed);
            let ddpm = |clip| Sampler::Ddpm {
                variance: Variance::FixedSmall,
                clip,
            };
            let bar = bar(2 * s.steps as u64, "DDPM, clipped and not")?;
            tch::manual_seed(seed + 2);
            let grid = TimestepGrid::full(s.steps);
            let correct = pipe.run(&ddpm(true), &grid, &x, Some(&y), &mut |_| bar.inc(1))?;
            tch::manual_seed(seed + 2);
            let buggy = pipe.run(&ddpm(false), &grid, &x, Some(&y), &mut |_| bar.inc(1))?;
            bar.finish_and_clear();
            exhibits.push(Exhibit {
                key: "ddpm_clip",
                title: "DDPM without clipping x̂₀ (DDPM-1000)",
                correct,
                buggy,
            });
        }

        let training_bugs = ["no_dropout", "data_range", "no_ema", "no_full_res"];
        if training_bugs.iter().any(|k| wanted(k)) {
            let train = data::load_mnist_like(&args.data_dir, data::Split::Train)?;
            let models = args.out.join("models");
            let like = &museum_recipe();
            let steps = args.train_steps;
            let right = trained(&models, "correct", like.clone(), false, &train, steps)?;
            let (x, y) = noise(args.n, seed);
            let like_schedule = like.noise_schedule(device)?;
            let like_pipe = Pipeline::new(m, &like_schedule, like.prediction);
            let w3 = |model: &dyn NoisePredictor| {
                guided_sample(like_pipe.with_model(model), &ddim(50, 0.0), 3.0, &x, &y)
            };
            let load = |path: &Path| formats::load_model(path, Weights::Ema, device);
            let correct = w3(&*load(&right)?.model)?;
            let mut exhibit = |key: &'static str, title: &'static str, buggy: Tensor| {
                exhibits.push(Exhibit {
                    key,
                    title,
                    correct: correct.shallow_clone(),
                    buggy,
                });
            };
            if wanted("no_dropout") {
                let config = TrainConfig {
                    p_uncond: 0.0,
                    ..like.clone()
                }; // BUG
                let path = trained(&models, "no-dropout", config, false, &train, steps)?;
                exhibit(
                    "no_dropout",
                    "guided at w = 3 after training without label dropout",
                    w3(&*load(&path)?.model)?,
                );
            }
            if wanted("data_range") {
                let path = trained(&models, "unit-range", like.clone(), true, &train, steps)?;
                // Its samples live in [0, 1]: map them back to [−1, 1] to compare like with like.
                let buggy = (w3(&*load(&path)?.model)? * 2.0 - 1.0).clamp(-1.0, 1.0);
                exhibit(
                    "data_range",
                    "trained on [0, 1] data (shown mapped back to [−1, 1])",
                    buggy,
                );
            }
            if wanted("no_ema") {
                let raw = formats::load_model(&right, Weights::Raw, device)?; // BUG
                exhibit(
                    "no_ema",
                    "sampling the raw weights instead of the EMA",
                    w3(&*raw.model)?,
                );
            }
            if wanted("no_full_res") {
                let ModelConfig::Seed(seed) = like.model else {
                    unreachable!("the museum's recipe is a SeedUNet")
                };
                let model = ModelConfig::Seed(SeedUNetConfig {
                    full_res_skip: false,
                    ..seed
                }); // BUG
                let config = TrainConfig {
                    model,
                    ..like.clone()
                };
                let path = trained(&models, "seed-layout", config, false, &train, steps)?;
                exhibit(
                    "no_full_res",
                    "the seed layout: no full-resolution path to the output",
                    w3(&*load(&path)?.model)?,
                );
            }
        }

        // Sampling bugs ran first (nothing to train); the table follows the chapter's numbering.
        let number = |key: &str| KEYS.iter().position(|k| *k == key).unwrap_or(KEYS.len()) + 1;
        exhibits.sort_by_key(|e| number(e.key));
        let mut table = String::from("| # | exhibit | accuracy: correct → bug | FD: correct → bug | n |\n|---:|---|---:|---:|---:|\n");
        eprintln!("measuring {} exhibits", exhibits.len());
        for e in &mut exhibits {
            // A broken sampler can end outside [−1, 1]; clamp as saving a PNG would.
            e.correct = e.correct.clamp(-1.0, 1.0);
            e.buggy = e.buggy.clamp(-1.0, 1.0);
            let y = labels(e.correct.size()[0]);
            let a = ev.evaluate(&e.correct, &y, seed)?;
            let b = ev.evaluate(&e.buggy, &y, seed)?;
            let _ = writeln!(
                table,
                "| {} | {} (`{}`) | {:.3} → {:.3} | {:.1} → {:.1} | {} |",
                number(e.key),
                e.title,
                e.key,
                acc(&a),
                acc(&b),
                a.frechet,
                b.frechet,
                a.n
            );
            let path = args.out.join(format!("bug-{}.png", e.key));
            let tiles = Tensor::cat(&[e.correct.narrow(0, 0, 10), e.buggy.narrow(0, 0, 10)], 0);
            let labels = util::GridLabels::new(
                format!("{}. {}", number(e.key), e.title),
                util::strings(["correct", "bug"]),
                util::strings(data::FASHION_CLASSES), // labels() is 0, 1, …, 9
            );
            outs.write(figure[e.key], &util::labelled_grid_png(&tiles, &labels, 3)?)?;
            println!(
                "{}: accuracy {:.3} → {:.3}, FD {:.1} → {:.1}; wrote {}",
                e.key,
                acc(&a),
                acc(&b),
                a.frechet,
                b.frechet,
                path.display()
            );
        }
        outs.write(table_out, table.as_bytes())?;
        outs.commit()?;
        print!("{table}");
        Ok(())
    })
}

fn acc(m: &Metrics) -> f64 {
    m.accuracy.unwrap_or(f64::NAN)
}

/// Labels 0, 1, …, 9, 0, 1, … (so the first ten samples are one per class).
fn labels(n: i64) -> Tensor {
    Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(10)
}

/// The same x_T and labels for both sides of an exhibit.
fn noise(n: i64, seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    (
        Tensor::randn([n, 1, 28, 28], (Kind::Float, Device::Cpu)),
        labels(n),
    )
}

fn bar(len: u64, msg: &'static str) -> Result<ProgressBar> {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(
        "{msg} {bar:30} {pos}/{len} | ETA {eta}",
    )?);
    bar.set_message(msg);
    Ok(bar)
}

fn guided_sample(
    pipe: Pipeline,
    sampler: &Sampler,
    w: f64,
    x: &Tensor,
    y: &Tensor,
) -> Result<Tensor> {
    let guided = Guided::new(pipe.model, w, false)?;
    Ok(pipe.with_model(&guided).sample(sampler, x, Some(y))?)
}

// ANCHOR: bug_ddim_sigma
/// BUG: the noise σ z is added, but the direction term still has the full
/// √(1 − ᾱ_prev): the step's variance exceeds 1 − ᾱ_prev by σ².
struct DdimWithoutSigma {
    eta: f64,
}

impl Step for DdimWithoutSigma {
    fn clip(&self) -> bool {
        true
    }

    fn adds_noise(&self, step: GridStep) -> bool {
        self.eta > 0.0 && step.prev.is_some()
    }

    fn step(&self, s: &Schedule, i: &StepInput) -> reverse::Result<Tensor> {
        let ab_t = s.alpha_bar_host[i.step.t as usize];
        let ab_prev = i.step.prev.map_or(1.0, |p| s.alpha_bar_host[p as usize]);
        let sigma = reverse::ddim_sigma(ab_t, ab_prev, self.eta);
        Ok(i.x0_hat * ab_prev.sqrt() + i.eps_hat * (1.0 - ab_prev).sqrt() + i.z * sigma)
    }
}
// ANCHOR_END: bug_ddim_sigma

/// The recipe the museum's small models are trained with: the first shipped
/// model's (SeedUNet C = 64 with the full-resolution path, ε, lr 2e-3, EMA
/// 0.995), kept fixed so that the exhibits do not change when the shipped
/// model does. Exhibit 8 removes its full-resolution path.
fn museum_recipe() -> TrainConfig {
    TrainConfig {
        model: ModelConfig::Seed(SeedUNetConfig {
            in_channels: 1,
            channels: 64,
            num_classes: Some(10),
            full_res_skip: true,
        }),
        schedule: forward::ScheduleKind::Linear,
        objective: training::Objective::Diffusion,
        zero_terminal_snr: false,
        timesteps: 1000,
        prediction: forward::Prediction::Epsilon,
        loss_weighting: training::LossWeighting::Uniform,
        optimizer: training::optim::AdamConfig {
            lr: 2e-3,
            ..Default::default()
        },
        warmup: 100,
        lr_schedule: training::LrSchedule::Constant,
        grad_clip: Some(1.0),
        ema_decay: 0.995,
        p_uncond: 0.1,
        batch_size: 128,
        seed: 0,
        dataset: "FashionMnist".into(),
    }
}

// ANCHOR: bug_training
/// Trains (or reuses) a small model with `config`; `unit_range` feeds the
/// images in [0, 1] instead of [−1, 1].
fn trained(
    dir: &Path,
    name: &str,
    config: TrainConfig,
    unit_range: bool,
    data: &data::Dataset,
    steps: i64,
) -> Result<PathBuf> {
    let path = dir.join(format!("{name}-{steps}.safetensors"));
    if path.is_file() {
        return Ok(path);
    }
    let mut trainer = Trainer::new(config, Device::Cpu)?;
    let mut batches =
        data::Batches::new(data, trainer.config.batch_size, trainer.config.seed, true);
    let bar = bar(steps as u64, "training")?;
    bar.set_message(format!("training '{name}'"));
    while trainer.step < steps {
        let (x0, y) = batches.get(trainer.step);
        let x0 = if unit_range { (x0 + 1.0) / 2.0 } else { x0 }; // BUG when true
        trainer.train_step(&x0, &y)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    trainer.save(&path)?;
    Ok(path)
}
// ANCHOR_END: bug_training
