//! Forward diffusion on real Fashion-MNIST images.
//!
//! cargo run --release --example forward_process -- --out out/forward
//!
//! Writes, into --out:
//!   noising_<schedule>.png  rows = images, columns = timesteps
//!   schedules.png           ᾱ_t and log-SNR(t) for the three schedules
//!   schedules.csv           the same numbers, every 10th step
use anyhow::Context;
use clap::Parser;
use forward::{Schedule, ScheduleKind};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};
use util::plot::{line_panels, Series};

#[derive(Parser)]
#[command(about = "Noise real Fashion-MNIST images with q(x_t | x_0) and chart the schedules")]
struct Args {
    /// Output folder.
    #[arg(long, default_value = "out/forward")]
    out: PathBuf,
    /// Folder with the Fashion-MNIST IDX files.
    #[arg(long, default_value = data::FASHION_MNIST_DIR)]
    data_dir: PathBuf,
    /// Number of diffusion steps T.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(31..=100_000))]
    steps: u32,
    /// Timesteps shown as columns, as fractions of T.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,0.05,0.1,0.2,0.3,0.5,0.7,1"
    )]
    at: Vec<f64>,
    /// Seed for the choice of images and the noise.
    #[arg(long, default_value_t = 0)]
    seed: i64,
}

fn main() {
    util::run(|| {
        let args = Args::parse();
        let steps = args.steps as usize;
        tch::manual_seed(args.seed);
        let test = data::load_mnist_like(&args.data_dir, data::Split::Test)?;
        // One image of each class, chosen with the seed.
        let perm = Tensor::randperm(test.len(), (Kind::Int64, Device::Cpu));
        let labels = test.labels.index_select(0, &perm);
        let picks: Vec<i64> = (0..test.num_classes)
            .map(|c| {
                perm.get(labels.eq(c).nonzero().get(0).int64_value(&[]))
                    .int64_value(&[])
            })
            .collect();
        let x0 = test.images.index_select(0, &Tensor::from_slice(&picks));
        // Row names: this example is about Fashion-MNIST (--data-dir may hold another copy).
        let row_names: Vec<String> = (0..test.num_classes)
            .map(|c| data::class_name("FashionMnist", c))
            .collect();
        let n = x0.size()[0];
        let columns: Vec<i64> = args
            .at
            .iter()
            .map(|f| (f.clamp(0.0, 1.0) * (steps - 1) as f64).round() as i64)
            .collect();
        // One noise draw per image, reused across columns and schedules, so each
        // row shows a single path x_0 → x_T.
        let eps = Tensor::randn_like(&x0);
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;

        let mut csv_rows = Vec::new();
        let mut alpha_series = Vec::new();
        let mut snr_series = Vec::new();
        println!("T = {steps}; columns at t = {columns:?}");
        println!(
            "{:>13}  {:>10} {:>10} {:>10} {:>10}  {:>8}",
            "schedule", "ᾱ_0", "ᾱ_T/4", "ᾱ_T/2", "ᾱ_T−1", "SNR=1 at"
        );
        for kind in ScheduleKind::ALL {
            let s = Schedule::new(kind, steps, Device::Cpu)?;
            // ANCHOR: noising_grid
            let mut frames = Vec::new();
            for &t in &columns {
                let t = s.timestep(t, n)?;
                frames.push(s.q_sample(&x0, &t, &eps)?);
            }
            // (columns, N, C, H, W) → (N, columns, C, H, W): a row per image.
            let grid = Tensor::stack(&frames, 1).flatten(0, 1);
            // ANCHOR_END: noising_grid
            let path = args.out.join(format!("noising_{}.png", kind.name()));
            let labels = util::GridLabels::new(
                format!("q(x_t | x_0), {} schedule", kind.name()),
                row_names.clone(),
                columns.iter().map(|t| format!("t = {t}")).collect(),
            );
            util::save_labelled_grid(&grid, &labels, 3, &path)?;

            let ab = &s.alpha_bar_host;
            let crossing = ab
                .iter()
                .position(|&a| a / (1.0 - a) < 1.0)
                .unwrap_or(steps);
            println!(
                "{:>13}  {:>10.3e} {:>10.3e} {:>10.3e} {:>10.3e}  {:>8}",
                kind.name(),
                ab[0],
                ab[steps / 4],
                ab[steps / 2],
                ab[steps - 1],
                crossing
            );
            let pts = |f: &dyn Fn(f64) -> f64| {
                ab.iter()
                    .enumerate()
                    .map(|(t, &a)| (t as f64, f(a)))
                    .collect()
            };
            alpha_series.push(Series {
                name: kind.name().into(),
                points: pts(&|a| a),
            });
            snr_series.push(Series {
                name: kind.name().into(),
                points: pts(&|a| (a / (1.0 - a)).ln()),
            });
            for (t, &a) in ab.iter().enumerate() {
                if t % 10 == 0 || t == steps - 1 {
                    // one row per t = 0, 10, 20, … plus the last step
                    let r = if t % 10 == 0 {
                        t / 10
                    } else {
                        (steps - 1) / 10 + 1
                    };
                    if csv_rows.len() <= r {
                        csv_rows.push(vec![t as f64]);
                    }
                    let row = &mut csv_rows[r];
                    row.extend([s.betas_host[t], a, (a / (1.0 - a)).ln()]);
                }
            }
        }
        line_panels(
            &args.out.join("schedules.png"),
            &[
                ("ᾱ_t: how much signal is left", "t", "ᾱ_t", alpha_series),
                (
                    "log SNR(t) = log ᾱ_t / (1 − ᾱ_t)",
                    "t",
                    "log SNR",
                    snr_series,
                ),
            ],
            (1200, 450),
        )?;
        let mut header = vec!["t".to_string()];
        for k in ScheduleKind::ALL {
            for q in ["beta", "alpha_bar", "log_snr"] {
                header.push(format!("{}_{q}", k.name()));
            }
        }
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        util::write_csv(&args.out.join("schedules.csv"), &header, &csv_rows)?;
        println!(
            "wrote {}/{{noising_*.png, schedules.png, schedules.csv}}",
            args.out.display()
        );
        Ok(())
    })
}
