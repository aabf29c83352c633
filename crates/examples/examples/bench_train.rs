//! Training-step throughput of SeedUNet, for scripts/bench/train_throughput.sh.
//! Prints one line: `img/s <value>`.
use clap::Parser;
use forward::Prediction;
use network::SeedUNetConfig;
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use training::optim::AdamConfig;
use training::{ModelConfig, TrainConfig, Trainer};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 64)]
    channels: i64,
    #[arg(long, default_value_t = 64)]
    batch: i64,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    steps: i64,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: i64,
    #[arg(long, default_value_t = 2)]
    threads: i32,
}

fn main() {
    util::run(|| {
        let a = Args::parse();
        tch::set_num_threads(a.threads);
        let cfg = TrainConfig {
            model: ModelConfig::Seed(SeedUNetConfig {
                in_channels: 1,
                channels: a.channels,
                num_classes: Some(10),
                full_res_skip: false,
            }),
            schedule: forward::ScheduleKind::Linear,
            objective: training::Objective::Diffusion,
            zero_terminal_snr: false,
            timesteps: 1000,
            prediction: Prediction::Epsilon,
            loss_weighting: Default::default(),
            lr_schedule: Default::default(),
            optimizer: AdamConfig {
                lr: 1e-3,
                ..Default::default()
            },
            warmup: 0,
            grad_clip: None,
            ema_decay: 0.999,
            p_uncond: 0.1,
            batch_size: a.batch,
            seed: 0,
            dataset: "random".into(),
        };
        let mut tr = Trainer::new(cfg, Device::Cpu)?;
        let x = Tensor::rand([a.batch, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let y = Tensor::randint(10, [a.batch], (Kind::Int64, Device::Cpu));
        for _ in 0..a.warmup {
            tr.train_step(&x, &y)?;
        }
        let start = Instant::now();
        for _ in 0..a.steps {
            tr.train_step(&x, &y)?;
        }
        println!(
            "img/s {:.1}",
            (a.steps * a.batch) as f64 / start.elapsed().as_secs_f64()
        );
        Ok(())
    })
}
