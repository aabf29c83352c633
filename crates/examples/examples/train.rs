//! Train a diffusion model (or, with --objective flow, a rectified flow).
//!
//! cargo run --release --example train -- --dataset fashion-mnist --out out/train   # UNet (16, 32, 64), 1800 steps
//!
//! Writes into --out: checkpoints (ckpt-XXXXXXXX.safetensors, the last --keep),
//! loss.csv, loss.png, and samples.png (a DDPM grid from the EMA weights; for
//! a flow, Euler with 50 steps).
use anyhow::{bail, Context, Result};
use clap::Parser;
use examples::DeviceArgs;
use formats::checkpoint::Rotation;
use formats::checkpoint::TrainerFile;
use forward::{Prediction, ScheduleKind};
use indicatif::{ProgressBar, ProgressStyle};
use network::SeedUNetConfig;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Kind, Tensor};
use training::optim::AdamConfig;
use training::{
    LossWeighting, LrSchedule, ModelConfig, Objective, TrainConfig, TrainError, Trainer,
};
use unet::UNetConfig;
use util::outputs::{Format, OutputSet};
use util::plot::{line_panels_png, Series};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Model {
    Seed,
    Unet,
}

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
enum ObjectiveArg {
    /// The schedule's x_t and the --prediction target.
    Diffusion,
    /// Rectified flow: x_t = (1 − t) x_0 + t ε and its velocity ε − x_0.
    Flow,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LrDecay {
    Constant,
    Cosine,
}

#[derive(Parser)]
#[command(about = "Train a diffusion model on Fashion-MNIST, MNIST, CIFAR-10 or synthetic shapes")]
struct Args {
    /// fashion-mnist, mnist, cifar10 or synthetic.
    #[arg(long, default_value = "fashion-mnist")]
    dataset: data::Source,
    /// Folder with the dataset files.
    #[arg(long, default_value = data::FASHION_MNIST_DIR)]
    data_dir: PathBuf,
    /// seed (SeedUNet) or unet (UNet, diffusers' UNet2DModel layout).
    #[arg(long, value_enum, default_value_t = Model::Unet)]
    model: Model,
    /// SeedUNet: base width C.
    #[arg(long, default_value_t = 64)]
    channels: i64,
    /// UNet: channels per level, highest resolution first.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64")]
    block_out_channels: Vec<i64>,
    /// UNet: levels (0 = full resolution) whose blocks have self-attention.
    #[arg(long, value_delimiter = ',', default_value = "2")]
    attention_levels: Vec<usize>,
    /// UNet: GroupNorm groups.
    #[arg(long, default_value_t = 8)]
    norm_num_groups: i64,
    /// UNet: ResnetBlock2Ds per down block.
    #[arg(long, default_value_t = 1)]
    layers_per_block: usize,
    /// UNet: a diffusers UNet2DModel config.json instead of the flags above.
    #[arg(long)]
    unet_config: Option<PathBuf>,
    /// Stop after this many minutes of training in all (a resumed run counts
    /// the time before); the step count still caps the run.
    #[arg(long)]
    minutes: Option<f64>,
    /// Stop after this many CPU-minutes (user + system time of all threads,
    /// so 2 threads for 15 minutes are 30): a fair budget on a shared machine.
    #[arg(long)]
    cpu_minutes: Option<f64>,
    /// SeedUNet only: add a full-resolution path from x_t to the output
    /// (the seed layout has none; the shipped model uses it).
    #[arg(long)]
    full_res_skip: bool,
    /// Total training steps (a resumed run continues up to this number).
    #[arg(long, default_value_t = 1800)]
    steps: i64,
    #[arg(long, default_value_t = 128)]
    batch_size: i64,
    #[arg(long, default_value = "out/train")]
    out: PathBuf,
    /// Continue from the newest checkpoint in --out (its config wins).
    #[arg(long)]
    resume: bool,
    /// Probability of dropping a label to the null class (0 = never).
    #[arg(long, default_value_t = 0.1)]
    p_uncond: f64,
    /// Train an unconditional model (no labels at all).
    #[arg(long)]
    unconditional: bool,
    #[arg(long, default_value_t = 0, value_parser = util::parse_seed, allow_negative_numbers = true)]
    seed: u64,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    #[arg(long, default_value_t = 100)]
    warmup: i64,
    /// Learning rate after warm-up: constant, or cosine (down to
    /// --final-lr-fraction × lr at --steps).
    #[arg(long, value_enum, default_value_t = LrDecay::Constant)]
    lr_decay: LrDecay,
    #[arg(long, default_value_t = 0.1)]
    final_lr_fraction: f64,
    /// uniform (L_simple) or min-snr-GAMMA (default min-snr-5; a flow is uniform).
    #[arg(long, value_parser = examples::parse_loss_weighting)]
    loss_weighting: Option<LossWeighting>,
    /// Clip the global gradient norm to this value (0 = off).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    #[arg(long, default_value_t = 0.999)]
    ema_decay: f64,
    /// eps, x0 or v (default eps; a flow predicts its velocity, v).
    #[arg(long, value_parser = examples::parse_prediction)]
    prediction: Option<Prediction>,
    /// diffusion, or flow (rectified flow, the "Flow matching" chapter).
    #[arg(long, value_enum, default_value_t = ObjectiveArg::Diffusion)]
    objective: ObjectiveArg,
    /// linear, seed_linear, cosine or sd_scaled_linear (Stable Diffusion's).
    #[arg(long, default_value = "linear")]
    schedule: ScheduleKind,
    /// Rescale the schedule so that ᾱ_{T−1} = 0 (Lin et al. 2024); needs
    /// --prediction v or x0.
    #[arg(long)]
    zero_terminal_snr: bool,
    /// Number of diffusion steps T.
    #[arg(long, default_value_t = 1000)]
    timesteps: usize,
    #[arg(long, default_value_t = 500)]
    checkpoint_every: i64,
    #[arg(long, default_value_t = 3)]
    keep: usize,
    /// Images in the final sample grid (0 = skip sampling).
    #[arg(long, default_value_t = 20)]
    samples: i64,
    #[command(flatten)]
    device: DeviceArgs,
}

impl Args {
    fn validate(&self) -> Result<()> {
        if self.steps < 1 {
            bail!("--steps {}: must be at least 1", self.steps);
        }
        if self.batch_size < 1 {
            bail!("--batch-size {}: must be at least 1", self.batch_size);
        }
        if !(0.0..=1.0).contains(&self.p_uncond) {
            bail!("--p-uncond {}: must be in [0, 1]", self.p_uncond);
        }
        if self.checkpoint_every < 1 || self.keep < 1 {
            bail!("--checkpoint-every and --keep must be at least 1");
        }
        for (flag, v) in [
            ("--minutes", self.minutes),
            ("--cpu-minutes", self.cpu_minutes),
        ] {
            if let Some(m) = v.filter(|m| !(m.is_finite() && *m > 0.0)) {
                bail!("{flag} {m}: must be a finite number of minutes above 0");
            }
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            bail!(
                "--grad-clip {}: must be a finite norm above 0, or 0 to turn clipping off",
                self.grad_clip
            );
        }
        if !(0.0..=1.0).contains(&self.final_lr_fraction) {
            bail!(
                "--final-lr-fraction {}: must be a number from 0 to 1",
                self.final_lr_fraction
            );
        }
        if self.samples < 0 {
            bail!("--samples {}: must be 0 (no grid) or more", self.samples);
        }
        Ok(())
    }

    fn config(&self, num_classes: i64, (channels, _side): (i64, i64)) -> Result<TrainConfig> {
        let classes = (!self.unconditional).then_some(num_classes);
        let model = match self.model {
            Model::Seed => ModelConfig::Seed(SeedUNetConfig {
                in_channels: channels,
                channels: self.channels,
                num_classes: classes,
                full_res_skip: self.full_res_skip,
            }),
            Model::Unet if self.full_res_skip => {
                bail!("--full-res-skip is a SeedUNet option (the UNet has full-resolution blocks)")
            }
            Model::Unet => ModelConfig::Unet(self.unet(channels, classes)?),
        };
        let flow = self.objective == ObjectiveArg::Flow;
        Ok(TrainConfig {
            model,
            objective: if flow {
                Objective::RectifiedFlow
            } else {
                Objective::Diffusion
            },
            schedule: self.schedule,
            zero_terminal_snr: self.zero_terminal_snr,
            timesteps: self.timesteps,
            prediction: self.prediction.unwrap_or(if flow {
                Prediction::Velocity
            } else {
                Prediction::Epsilon
            }),
            loss_weighting: self.loss_weighting.unwrap_or(if flow {
                LossWeighting::Uniform
            } else {
                LossWeighting::MinSnr { gamma: 5.0 }
            }),
            optimizer: AdamConfig {
                lr: self.lr,
                weight_decay: self.weight_decay,
                ..Default::default()
            },
            warmup: self.warmup,
            lr_schedule: match self.lr_decay {
                LrDecay::Constant => LrSchedule::Constant,
                LrDecay::Cosine => LrSchedule::Cosine {
                    total_steps: self.steps,
                    final_fraction: self.final_lr_fraction,
                },
            },
            grad_clip: (self.grad_clip != 0.0).then_some(self.grad_clip),
            ema_decay: self.ema_decay,
            p_uncond: if self.unconditional {
                0.0
            } else {
                self.p_uncond
            },
            batch_size: self.batch_size,
            seed: self.seed,
            dataset: format!("{:?}", self.dataset),
        })
    }
}

impl Args {
    fn unet(&self, channels: i64, classes: Option<i64>) -> Result<UNetConfig> {
        use unet::{DownBlockType, UpBlockType};
        if let Some(path) = &self.unet_config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--unet-config {}: cannot read it", path.display()))?;
            let c = formats::unet_config_from_json(&text)
                .with_context(|| format!("--unet-config {}", path.display()))?;
            if c.in_channels != channels || c.num_classes() != classes {
                bail!("--unet-config {}: in_channels = {} and num_class_embeds = {:?}, but the data needs {channels} channel(s) and {:?} (classes + 1 null row)", path.display(), c.in_channels, c.num_class_embeds, classes.map(|k| k + 1));
            }
            return Ok(c);
        }
        let levels = self.block_out_channels.len();
        if let Some(l) = self.attention_levels.iter().find(|&&l| l >= levels) {
            bail!("--attention-levels {l}: the UNet has levels 0..{levels}");
        }
        let attn = |i: usize| self.attention_levels.contains(&i);
        let c = UNetConfig {
            sample_size: Some(if channels == 3 { 32 } else { 28 }),
            in_channels: channels,
            out_channels: channels,
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: self.layers_per_block,
            down_block_types: (0..levels)
                .map(|i| {
                    if attn(i) {
                        DownBlockType::AttnDownBlock2D
                    } else {
                        DownBlockType::DownBlock2D
                    }
                })
                .collect(),
            up_block_types: (0..levels)
                .rev()
                .map(|i| {
                    if attn(i) {
                        UpBlockType::AttnUpBlock2D
                    } else {
                        UpBlockType::UpBlock2D
                    }
                })
                .collect(),
            norm_num_groups: self.norm_num_groups,
            num_class_embeds: classes.map(|k| k + 1),
            ..UNetConfig::fashion()
        };
        c.validate()?;
        Ok(c)
    }
}

fn main() {
    util::run(|| {
        let args = Args::parse();
        args.validate()?;
        let device = args.device.device()?;
        let rot = Rotation {
            dir: args.out.clone(),
            keep: args.keep,
        };
        // A folder this run creates goes again if the run fails before
        // writing anything into it (dropped after the lock, so it is empty).
        let _created = (!args.out.exists()).then(|| RemoveIfEmpty(args.out.clone()));
        // One run per folder: a second one is refused, naming this one's PID.
        let _lock = rot.lock()?;
        // The figures, checked now (they are written after training).
        let mut figures = OutputSet::new();
        let loss_png = figures.output("--out", &args.out.join("loss.png"), Format::Png)?;
        let samples_png = (args.samples > 0)
            .then(|| figures.output("--out", &args.out.join("samples.png"), Format::Png))
            .transpose()?;

        let data = args.dataset.load(&args.data_dir, data::Split::Train)?;
        let mut trainer = if args.resume {
            let path = rot
                .latest()
                .with_context(|| format!("--resume: no checkpoint in {}", args.out.display()))?;
            println!("resuming from {}", path.display());
            let tr = Trainer::load(&path, device).map_err(|e| {
                match rot.latest_good().filter(|p| *p != path) {
                    Some(prev) => anyhow::anyhow!("{e}; the previous checkpoint {} loads: move the damaged one away to resume from it", prev.display()),
                    None => e.into(),
                }
            })?;
            let want = format!("{:?}", args.dataset);
            if tr.config.dataset != want {
                bail!(
                    "--resume: the checkpoints in {} were trained on {}, not {want}: pass the same --dataset, or choose another --out",
                    args.out.display(),
                    tr.config.dataset
                );
            }
            tr
        } else {
            if rot.latest().is_some() {
                bail!("{} already holds checkpoints: pass --resume to continue, or choose another --out", args.out.display());
            }
            Trainer::new(
                args.config(data.num_classes, args.dataset.image_shape())?,
                device,
            )?
        };
        let cfg = trainer.config.clone();
        let what = format!("{:?} in {}", args.dataset, args.data_dir.display());
        examples::check_images(&data.images, cfg.image_shape(), &what)?;
        if data.len() < cfg.batch_size {
            bail!(
                "{what} holds {} images, fewer than one batch ({}): use a smaller --batch-size or a larger data set",
                data.len(),
                cfg.batch_size
            );
        }
        let params: i64 = trainer
            .vs
            .variables()
            .values()
            .map(|v| v.numel() as i64)
            .sum();
        let process = match cfg.objective {
            Objective::Diffusion => format!(
                "T = {} {}{}",
                cfg.timesteps,
                cfg.schedule,
                if cfg.zero_terminal_snr {
                    ", zero terminal SNR"
                } else {
                    ""
                }
            ),
            Objective::RectifiedFlow => "rectified flow".into(),
        };
        println!(
            "{:?}: {} images | model {} ({:.2} M parameters) | {process} | batch {} | device {device:?}",
            args.dataset, data.len(), match cfg.model { ModelConfig::Seed(_) => "seed", ModelConfig::Unet(_) => "unet" }, params as f64 / 1e6, cfg.batch_size
        );

        let images = data.images.to_device(device);
        let labels = data.labels.to_device(device);
        let on_device = data::Dataset {
            images,
            labels,
            num_classes: data.num_classes,
        };
        let mut batches = data::Batches::new(&on_device, cfg.batch_size, cfg.seed, true);
        let csv = args.out.join("loss.csv");
        let mut log = read_log(&csv).unwrap_or_default();
        log.retain(|row| (row[0] as i64) <= trainer.step);

        let bar = ProgressBar::new(args.steps as u64).with_position(trainer.step as u64);
        bar.set_style(ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps | loss {msg} | {per_sec} | ETA {eta}",
        )?);
        // Seconds spent before this run (the log's last row), so that
        // --minutes and the logged times count the whole training.
        let before = log.last().map_or(0.0, |r| r[3]);
        let cpu_before = log.last().and_then(|r| r.get(4).copied()).unwrap_or(0.0);
        let (budget, cpu_budget) = (
            args.minutes.map(|m| m * 60.0),
            args.cpu_minutes.map(|m| m * 60.0),
        );
        let (mut window, start, cpu_start) = (Vec::new(), Instant::now(), util::cpu_seconds());
        let cpu = || cpu_before + util::cpu_seconds() - cpu_start;
        let over = |start: &Instant| {
            budget.is_some_and(|b| before + start.elapsed().as_secs_f64() >= b)
                || cpu_budget.is_some_and(|b| cpu() >= b)
        };
        while trainer.step < args.steps && !over(&start) {
            let (x0, y) = batches.get(trainer.step);
            let loss = match trainer.train_step(&x0, &y) {
                Ok(l) => l,
                Err(e @ TrainError::NonFinite { .. }) => {
                    bar.abandon();
                    // Only a checkpoint that loads whole, every tensor finite, is good.
                    let last = rot
                        .latest_good()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "none yet".into());
                    bail!("{e}; last good checkpoint: {last} (lower --lr, or keep --grad-clip on)");
                }
                Err(e) => return Err(e.into()),
            };
            window.push(loss);
            bar.inc(1);
            let last = trainer.step == args.steps || over(&start);
            if trainer.step % 25 == 0 || last {
                let mean = window.iter().sum::<f64>() / window.len() as f64;
                bar.set_message(format!("{mean:.4}"));
                log.push(vec![
                    trainer.step as f64,
                    mean,
                    trainer.lr(),
                    before + start.elapsed().as_secs_f64(),
                    cpu(),
                ]);
                window.clear();
            }
            if trainer.step % args.checkpoint_every == 0 || last {
                trainer.save(&rot.path(trainer.step))?;
                rot.prune()?;
                util::write_csv(
                    &csv,
                    &["step", "loss", "lr", "seconds", "cpu_seconds"],
                    &log,
                )?;
            }
        }
        bar.finish();
        let secs = before + start.elapsed().as_secs_f64();
        println!(
            "trained to step {} in {secs:.0} s ({:.0} CPU-s) in all; checkpoint {}",
            trainer.step,
            cpu(),
            rot.path(trainer.step).display()
        );
        figures.write(loss_png, &plot_loss(&log)?)?;
        if let Some(id) = samples_png {
            figures.write(id, &sample_grid(&trainer, args.samples)?)?;
        }
        figures.commit()?;
        if args.samples > 0 {
            println!(
                "wrote {} ({} DDPM samples from the EMA weights{})",
                args.out.join("samples.png").display(),
                args.samples,
                if cfg.model.num_classes().is_some() {
                    ", columns = classes"
                } else {
                    ""
                }
            );
        }
        Ok(())
    })
}

/// Removes a folder on drop if it is empty.
struct RemoveIfEmpty(PathBuf);

impl Drop for RemoveIfEmpty {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn read_log(path: &Path) -> Option<Vec<Vec<f64>>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .skip(1)
            .filter_map(|l| l.split(',').map(|v| v.parse().ok()).collect())
            .collect(),
    )
}

/// The loss curve (one point, or none, is still a chart: an empty one).
fn plot_loss(log: &[Vec<f64>]) -> Result<Vec<u8>> {
    let pts = log.iter().map(|r| (r[0], r[1].ln())).collect();
    line_panels_png(
        &[(
            "training loss (mean over 25 steps)",
            "step",
            "ln MSE",
            vec![Series {
                name: "loss".into(),
                points: pts,
            }],
        )],
        (800, 400),
    )
}

/// A DDPM grid from the EMA weights: two rows per class for a conditional model.
fn sample_grid(trainer: &Trainer, n: i64) -> Result<Vec<u8>> {
    let cfg = &trainer.config;
    let device = trainer.vs.device();
    let [c, h, w] = cfg.image_shape();
    let (y, cols) = match cfg.model.num_classes() {
        Some(k) => (
            Some(Tensor::arange(n, (Kind::Int64, device)).remainder(k)),
            k,
        ),
        None => (None, 10),
    };
    tch::manual_seed(cfg.seed as i64);
    let x_t = Tensor::randn([n, c, h, w], (Kind::Float, device));
    let flow = reverse::FlowSampler::euler(50);
    let (evals, name) = match cfg.objective {
        Objective::Diffusion => (cfg.timesteps, format!("DDPM-{}", cfg.timesteps)),
        Objective::RectifiedFlow => (flow.evaluations(), "flow Euler-50".into()),
    };
    let bar = ProgressBar::new(evals as u64);
    bar.set_style(ProgressStyle::with_template(
        "sampling {bar:30} {pos}/{len} evaluations | ETA {eta}",
    )?);
    let x0 = match cfg.objective {
        Objective::Diffusion => {
            let sampler = reverse::Sampler::Ddpm {
                variance: reverse::Variance::FixedSmall,
                clip: true,
            };
            let pipe = reverse::Pipeline::new(&*trainer.ema, &trainer.schedule, cfg.prediction);
            pipe.sample_observed(&sampler, &x_t, y.as_ref(), &mut |_| bar.inc(1))?
        }
        Objective::RectifiedFlow => reverse::FlowPipeline::new(&*trainer.ema).sample_observed(
            &flow,
            &x_t,
            y.as_ref(),
            &mut |_| bar.inc(1),
        )?,
    };
    bar.finish();
    // Columns = classes; a short last row is filled with blank (white) cells.
    let rows = (n + cols - 1) / cols;
    let blank = Tensor::ones([rows * cols - n, c, h, w], (Kind::Float, device));
    let tiles = Tensor::cat(&[x0, blank], 0);
    let col_labels = (0..cols)
        .map(|k| {
            if y.is_some() {
                data::class_name(&cfg.dataset, k)
            } else {
                String::new()
            }
        })
        .collect();
    let labels = util::GridLabels::new(
        format!("{name} samples after {} steps (EMA weights)", trainer.step),
        vec![String::new(); rows as usize],
        col_labels,
    );
    util::labelled_grid_png(&tiles, &labels, 3)
}
