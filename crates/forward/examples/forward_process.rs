//! Forward diffusion on real Fashion-MNIST images.
//!
//! cargo run --release --example forward_process -- --out out/forward
//!
//! Writes, into --out:
//!   noising_<schedule>.png  rows = images, columns = timesteps
//!   schedules.png           ᾱ_t and log-SNR(t) for the three schedules
//!   schedules.csv           the same numbers, every 10th step
use anyhow::bail;
use clap::Parser;
use forward::{Schedule, ScheduleKind};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};
use util::outputs::{Format, OutputSet};
use util::plot::{line_panels_png, Series};

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
        default_value = "0,0.05,0.1,0.2,0.3,0.5,0.7,1",
        allow_negative_numbers = true
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
        if let Some(f) = args.at.iter().find(|f| !(0.0..=1.0).contains(*f)) {
            bail!("--at {f}: each column is a fraction of T, a number from 0 to 1");
        }
        // Every output, checked before any work.
        let mut outs = OutputSet::new();
        let mut noising = Vec::new();
        for kind in ScheduleKind::ALL {
            let p = args.out.join(format!("noising_{}.png", kind.name()));
            noising.push(outs.output("--out", &p, Format::Png)?);
        }
        let schedules_png = outs.output("--out", &args.out.join("schedules.png"), Format::Png)?;
        let schedules_csv = outs.output("--out", &args.out.join("schedules.csv"), Format::Csv)?;
        tch::manual_seed(args.seed);
        let test = data::load_mnist_like(&args.data_dir, data::Split::Test)?;
        let what = format!("the test set in {}", args.data_dir.display());
        if test.is_empty() {
            bail!("{what} holds no images: point --data-dir at Fashion-MNIST");
        }
        if test.images.size()[1..] != [1, 28, 28] {
            bail!(
                "{what}: images are {:?}, not 1×28×28: point --data-dir at Fashion-MNIST",
                &test.images.size()[1..]
            );
        }
        // One image of each class, chosen with the seed.
        let perm = Tensor::randperm(test.len(), (Kind::Int64, Device::Cpu));
        let labels = Vec::<i64>::try_from(test.labels.index_select(0, &perm))?;
        let order = Vec::<i64>::try_from(&perm)?;
        let mut picks = Vec::new();
        for c in 0..test.num_classes {
            let Some(i) = labels.iter().position(|&l| l == c) else {
                bail!("{what} has no image of class {c} ({}): this figure shows one image of each of the {} classes", data::class_name("FashionMnist", c), test.num_classes);
            };
            picks.push(order[i]);
        }
        let x0 = test.images.index_select(0, &Tensor::from_slice(&picks));
        // Row names: this example is about Fashion-MNIST (--data-dir may hold another copy).
        let row_names: Vec<String> = (0..test.num_classes)
            .map(|c| data::class_name("FashionMnist", c))
            .collect();
        let n = x0.size()[0];
        let columns: Vec<i64> = args
            .at
            .iter()
            .map(|f| (f * (steps - 1) as f64).round() as i64)
            .collect();
        // One noise draw per image, reused across columns and schedules, so each
        // row shows a single path x_0 → x_T.
        let eps = Tensor::randn_like(&x0);

        let mut csv_rows = Vec::new();
        let mut alpha_series = Vec::new();
        let mut snr_series = Vec::new();
        println!("T = {steps}; columns at t = {columns:?}");
        println!(
            "{:>13}  {:>10} {:>10} {:>10} {:>10}  {:>8}",
            "schedule", "ᾱ_0", "ᾱ_T/4", "ᾱ_T/2", "ᾱ_T−1", "SNR=1 at"
        );
        for (kind, out) in ScheduleKind::ALL.into_iter().zip(noising) {
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
            let labels = util::GridLabels::new(
                format!("q(x_t | x_0), {} schedule", kind.name()),
                row_names.clone(),
                columns.iter().map(|t| format!("t = {t}")).collect(),
            );
            outs.write(out, &util::labelled_grid_png(&grid, &labels, 3)?)?;

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
        let chart = line_panels_png(
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
        outs.write(schedules_png, &chart)?;
        let mut header = vec!["t".to_string()];
        for k in ScheduleKind::ALL {
            for q in ["beta", "alpha_bar", "log_snr"] {
                header.push(format!("{}_{q}", k.name()));
            }
        }
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        outs.write(schedules_csv, util::csv_text(&header, &csv_rows).as_bytes())?;
        outs.commit()?;
        println!(
            "wrote {}/{{noising_*.png, schedules.png, schedules.csv}}",
            args.out.display()
        );
        Ok(())
    })
}
