//! The DDIM chapter's measurements on one checkpoint:
//!   - cost: wall time per image of DDPM-1000 and DDIM at 10/20/50/100 steps;
//!   - grids: trailing vs leading spacing vs a broken grid, same noise;
//!   - inversion: x_0 → x_T → x_0' reconstruction error against S;
//!   - interpolation: slerp between two latents, decoded with DDIM.
//!
//! cargo run --release --example ddim_study -- --checkpoint FILE --out out/ddim
use anyhow::{bail, Result};
use clap::Parser;
use examples::{DeviceArgs, ModelArgs};
use reverse::{Pipeline, Sampler, Spacing, TimestepGrid, Variance};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Kind, Tensor};
use util::outputs::{Format, OutputSet};

#[derive(Parser)]
#[command(about = "Cost, grids, inversion and interpolation for DDIM on one checkpoint")]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value = "out/ddim")]
    out: PathBuf,
    /// Images per timing run.
    #[arg(long, default_value_t = 10)]
    n: i64,
    /// Folder with Fashion-MNIST (for the inversion test images).
    #[arg(long, default_value = data::FASHION_MNIST_DIR)]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 0, value_parser = util::parse_seed, allow_negative_numbers = true)]
    seed: u64,
    #[command(flatten)]
    device: DeviceArgs,
}

fn ddim(steps: usize) -> Sampler {
    Sampler::ddim(steps)
}

/// Inversion needs the unclipped map: clipping x̂_0 is not invertible.
fn ddim_noclip(steps: usize) -> Sampler {
    Sampler::Ddim {
        steps,
        eta: 0.0,
        spacing: Spacing::Trailing,
        clip: false,
    }
}

fn main() {
    util::run(|| {
        let a = Args::parse();
        if a.n < 2 {
            bail!("--n {}: the interpolation needs at least 2 images", a.n);
        }
        // Every input and output, checked before any work.
        let mut outs = OutputSet::new();
        a.model.register(&mut outs)?;
        let mut files = std::collections::HashMap::new();
        for f in [
            "steps.png",
            "grids.png",
            "inversion.png",
            "interpolation.png",
        ] {
            files.insert(f, outs.output("--out", &a.out.join(f), Format::Png)?);
        }
        let device = a.device.device()?;
        let model = a.model.load(device)?;
        let m = &model.loaded;
        let cfg = &m.config;
        let s = &model.schedule;
        if cfg.image_shape() != [1, 28, 28] {
            bail!("ddim_study measures 1×28×28 models against Fashion-MNIST; this one makes {:?} images", cfg.image_shape());
        }
        examples::check_sampling_memory(a.n, cfg.image_shape(), a.n, 0)?;
        let k = cfg.model.num_classes().unwrap_or(10);
        let y = cfg
            .model
            .num_classes()
            .map(|k| Tensor::arange(a.n, (Kind::Int64, device)).remainder(k));
        let pipe = Pipeline::new(&*m.model, s, cfg.prediction);
        let run = |sampler: &Sampler, x: &Tensor, y: Option<&Tensor>| -> Result<Tensor> {
            Ok(pipe.sample(sampler, x, y)?)
        };
        tch::manual_seed(a.seed as i64);
        let [c, h, w] = cfg.image_shape();
        let x_big_t = Tensor::randn([a.n, c, h, w], (Kind::Float, device));
        // Columns of the sample grids: one per image, named by its class.
        let sample_cols: Vec<String> = (0..a.n)
            .map(|i| match cfg.model.num_classes() {
                Some(k) => data::class_name(&cfg.dataset, i % k),
                None => String::new(),
            })
            .collect();
        let mut save = |x: &Tensor, title: &str, rows: Vec<String>, cols: &[String], file: &str| {
            let labels = util::GridLabels::new(title, rows, cols.to_vec());
            outs.write(files[file], &util::labelled_grid_png(x, &labels, 3)?)
        };

        // 1. Cost per image, all samplers on the same noise, in one run.
        println!("cost per image ({} images per run, {:?}):", a.n, device);
        println!(
            "{:<12} {:>8} {:>12} {:>10}",
            "sampler", "steps", "ms / image", "speed-up"
        );
        let samplers = [
            (
                "DDPM",
                Sampler::Ddpm {
                    variance: Variance::FixedSmall,
                    clip: true,
                },
            ),
            ("DDIM", ddim(100)),
            ("DDIM", ddim(50)),
            ("DDIM", ddim(20)),
            ("DDIM", ddim(10)),
        ];
        let mut base = 0.0;
        let (mut grids, mut names) = (Vec::new(), Vec::new());
        for (name, sampler) in &samplers {
            let start = Instant::now();
            let x0 = run(sampler, &x_big_t, y.as_ref())?;
            let ms = start.elapsed().as_secs_f64() * 1e3 / a.n as f64;
            if base == 0.0 {
                base = ms;
            }
            let steps = sampler.grid(cfg.timesteps)?.len();
            println!("{name:<12} {steps:>8} {ms:>12.1} {:>9.1}x", base / ms);
            grids.push(x0);
            names.push(format!("{name}-{steps}"));
        }
        save(
            &Tensor::cat(&grids, 0),
            "the same x_T, fewer steps",
            names,
            &sample_cols,
            "steps.png",
        )?;

        // 2. Grids: trailing (correct); each mistake alone: leading (starts
        //    below T−1) and trailing but stopping at t = 0 instead of ᾱ = 1
        //    (leaves noise); and both together.
        let t = cfg.timesteps as i64;
        let trailing = TimestepGrid::new(cfg.timesteps, 10, Spacing::Trailing)?;
        let leading = TimestepGrid::new(cfg.timesteps, 10, Spacing::Leading)?;
        let trailing_ts: Vec<i64> = trailing.steps().iter().map(|st| st.t).collect();
        let ends_early = TimestepGrid::unchecked(&trailing_ts, cfg.timesteps, Some(0));
        let broken_ts: Vec<i64> = (0..10).rev().map(|i| i * t / 10).collect();
        let broken = TimestepGrid::unchecked(&broken_ts, cfg.timesteps, Some(0));
        println!("\ngrids for S = 10:");
        for (name, g) in [
            ("trailing", trailing.clone()),
            ("leading", leading.clone()),
            ("ends at 0", ends_early.clone()),
            ("both", broken.clone()),
        ] {
            let ts: Vec<String> = g.steps().iter().map(|st| st.t.to_string()).collect();
            let end = g
                .steps()
                .last()
                .and_then(|st| st.prev)
                .map_or("ᾱ = 1".to_string(), |p| {
                    format!("t = {p} (ᾱ = {:.4})", s.alpha_bar_host[p as usize])
                });
            println!("  {name:<10} {} → {end}", ts.join(" → "));
        }
        let mut rows = vec![run(&ddim(10), &x_big_t, y.as_ref())?];
        for grid in [&leading, &ends_early, &broken] {
            rows.push(pipe.run(&ddim(10), grid, &x_big_t, y.as_ref(), &mut |_| {})?);
        }
        // High-frequency energy: the mean of |x − the mean of its 4 neighbours|
        // over the inner 26×26 pixels; leftover noise raises it.
        let hf = |x: &Tensor| {
            let at = |dy: i64, dx: i64| x.narrow(2, 1 + dy, 26).narrow(3, 1 + dx, 26);
            let nb = (at(-1, 0) + at(1, 0) + at(0, -1) + at(0, 1)) / 4.0;
            (at(0, 0) - nb).abs().mean(Kind::Float).double_value(&[])
        };
        for (name, r) in ["trailing", "leading", "ends at 0", "both"]
            .iter()
            .zip(&rows)
        {
            let diff = (r - &rows[0]).abs().mean(Kind::Float).double_value(&[]);
            let mean = r.mean(Kind::Float).double_value(&[]);
            println!("  {name:<10} mean |x − trailing| = {diff:.4}   high-frequency energy = {:.4}   mean pixel = {mean:+.3}", hf(r));
        }
        save(
            &Tensor::cat(&rows, 0),
            "DDIM-10 on four timestep grids",
            util::strings([
                "trailing",
                "leading",
                "trailing,\nends at t = 0",
                "leading,\nends at t = 0",
            ]),
            &sample_cols,
            "grids.png",
        )?;

        // 3. Inversion of real test images.
        let test = data::load_mnist_like(&a.data_dir, data::Split::Test)?;
        let what = format!("the test set in {}", a.data_dir.display());
        examples::check_images(&test.images, [1, 28, 28], &what)?;
        if test.len() < a.n {
            bail!("{what} holds {} images, fewer than --n {}", test.len(), a.n);
        }
        let x0 = test.images.narrow(0, 0, a.n).to_device(device);
        let y0 = cfg
            .model
            .num_classes()
            .map(|_| test.labels.narrow(0, 0, a.n).to_device(device));
        println!("\nDDIM inversion x_0 → x_T → x_0' on {} test images:", a.n);
        println!("{:>6} {:>14} {:>14}", "S", "RMSE", "max |Δ|");
        let mut recon = vec![x0.shallow_clone()];
        for steps in [10usize, 20, 50, 100] {
            let sampler = ddim_noclip(steps);
            let grid = sampler.grid(cfg.timesteps)?;
            let inv = pipe.invert(&grid, &x0, y0.as_ref())?;
            let back = run(&sampler, &inv, y0.as_ref())?;
            let d = &back - &x0;
            println!(
                "{steps:>6} {:>14.4} {:>14.4}",
                d.square().mean(Kind::Float).sqrt().double_value(&[]),
                d.abs().max().double_value(&[])
            );
            recon.push(back);
        }
        let mut inv_rows = vec!["test image".to_string()];
        inv_rows.extend([10, 20, 50, 100].map(|s| format!("S = {s}")));
        let inv_cols: Vec<String> = Vec::<i64>::try_from(test.labels.narrow(0, 0, a.n))?
            .into_iter()
            .map(|c| data::class_name(&cfg.dataset, c))
            .collect();
        save(
            &Tensor::cat(&recon, 0),
            "DDIM inversion x₀ → x_T → x₀′ with S steps each way",
            inv_rows,
            &inv_cols,
            "inversion.png",
        )?;

        // 4. Interpolation between two latents, one class.
        let (za, zb) = (x_big_t.narrow(0, 0, 1), x_big_t.narrow(0, 1, 1));
        let ws: Vec<f64> = (0..8).map(|i| i as f64 / 7.0).collect();
        let zs = Tensor::cat(
            &ws.iter()
                .map(|&w| reverse::slerp(&za, &zb, w))
                .collect::<Vec<_>>(),
            0,
        );
        let yi = cfg
            .model
            .num_classes()
            .map(|_| Tensor::full([8], 7 % k, (Kind::Int64, device)));
        let strip = run(&ddim(50), &zs, yi.as_ref())?;
        let class = match yi {
            Some(_) => format!(" ({})", data::class_name(&cfg.dataset, 7 % k)),
            None => String::new(),
        };
        let labels = util::GridLabels::new(
            format!("slerp between two noises, decoded with DDIM-50{class}"),
            vec![String::new()],
            ws.iter().map(|w| format!("{w:.2}")).collect(),
        )
        .col_title("fraction of the way from the first noise to the second");
        outs.write(
            files["interpolation.png"],
            &util::labelled_grid_png(&strip, &labels, 3)?,
        )?;
        outs.commit()?;
        println!(
            "\nwrote {}/{{steps,grids,inversion,interpolation}}.png",
            a.out.display()
        );
        Ok(())
    })
}
