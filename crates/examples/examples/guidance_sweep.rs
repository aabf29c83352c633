//! The guidance trade-off on one checkpoint: the same noise sampled at several
//! scales w, k images per class.
//!
//! cargo run --release --example guidance_sweep -- --checkpoint FILE --scales 0,1,2,3,5 --per-class 8
//!
//! Writes into --out: sweep.png (rows = classes, columns = scales, same noise
//! across a row), sweep.csv (scale, class, diversity) and diversity.png.
use anyhow::{bail, Context};
use clap::Parser;
use classifier_free::Guided;
use examples::Classes;
use examples::{DeviceArgs, ModelArgs};
use reverse::{Pipeline, Sampler};
use std::path::PathBuf;
use tch::{Kind, Tensor};
use util::outputs::{Format, OutputSet};
use util::plot::{line_panels_png, Series};

#[derive(Parser)]
#[command(about = "Sample one checkpoint at several guidance scales and measure diversity")]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,1,2,3,5",
        allow_negative_numbers = true
    )]
    scales: Vec<f64>,
    #[arg(long, default_value_t = 8)]
    per_class: i64,
    /// DDIM steps (η = 0).
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, default_value_t = 0, value_parser = util::parse_seed, allow_negative_numbers = true)]
    seed: u64,
    #[arg(long, default_value = "out/guidance")]
    out: PathBuf,
    #[arg(long)]
    allow_negative_guidance: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

// ANCHOR: diversity
/// Mean pairwise L2 distance between the images of one class: how different
/// the samples are from one another (0 = all the same image).
fn diversity(x: &Tensor) -> f64 {
    let flat = x.flatten(1, -1).to_kind(Kind::Double);
    let n = flat.size()[0];
    let d = flat.unsqueeze(0) - flat.unsqueeze(1); // (n, n, D)
    let dist = d
        .square()
        .sum_dim_intlist([2i64].as_slice(), false, Kind::Double)
        .sqrt();
    dist.sum(Kind::Double).double_value(&[]) / (n * (n - 1)) as f64
}
// ANCHOR_END: diversity

fn main() {
    util::run(|| {
        let a = Args::parse();
        if a.per_class < 2 {
            bail!(
                "--per-class {}: need at least 2 images per class to measure diversity",
                a.per_class
            );
        }
        if a.scales.is_empty() {
            bail!("--scales: give at least one guidance scale");
        }
        // Every input and output, checked before any work.
        let mut outs = OutputSet::new();
        a.model.register(&mut outs)?;
        let sweep_png = outs.output("--out", &a.out.join("sweep.png"), Format::Png)?;
        let sweep_csv = outs.output("--out", &a.out.join("sweep.csv"), Format::Csv)?;
        let diversity_png = outs.output("--out", &a.out.join("diversity.png"), Format::Png)?;
        let device = a.device.device()?;
        let model = a.model.load(device)?;
        let m = &model.loaded;
        let cfg = &m.config;
        let Some(k) = cfg.model.num_classes() else {
            bail!("guidance needs a class-conditional model; this checkpoint has none")
        };
        if let Some(w) = a
            .scales
            .iter()
            .find_map(|&w| examples::dropout_warning(cfg.p_uncond, w))
        {
            eprintln!("{w}");
        }
        let s = &model.schedule;
        let sampler = Sampler::ddim(a.steps);
        sampler.grid(cfg.timesteps)?; // checks --steps before any work
                                      // Check every scale before the first one is sampled.
        for &w in &a.scales {
            Guided::new(&*m.model, w, a.allow_negative_guidance)?;
        }
        examples::check_sampling_memory(
            a.per_class.saturating_mul(k),
            cfg.image_shape(),
            a.per_class.saturating_mul(k),
            0,
        )?;
        let y = examples::labels(&Classes::PerClass(a.per_class), k, device)?;
        let n = y.size()[0];
        let [c, h, w] = cfg.image_shape();
        tch::manual_seed(a.seed as i64);
        let x_big_t = Tensor::randn([n, c, h, w], (Kind::Float, device));

        let (mut cells, mut rows, mut curve) = (Vec::new(), Vec::new(), Vec::new());
        println!("{:>6} {:>10}   per class", "w", "diversity");
        for &w in &a.scales {
            let guided = Guided::new(&*m.model, w, a.allow_negative_guidance)?;
            let x0 =
                Pipeline::new(&guided, s, cfg.prediction).sample(&sampler, &x_big_t, Some(&y))?;
            util::ensure_finite(&x0, &format!("the samples at w = {w}"))
                .context("nothing was written: sampling diverged")?;
            let per: Vec<f64> = (0..k)
                .map(|cl| diversity(&x0.narrow(0, cl * a.per_class, a.per_class)))
                .collect();
            let mean = per.iter().sum::<f64>() / k as f64;
            println!(
                "{w:>6.2} {mean:>10.3}   {}",
                per.iter()
                    .map(|d| format!("{d:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            for (cl, d) in per.iter().enumerate() {
                rows.push(vec![w, cl as f64, *d]);
            }
            curve.push((w, mean));
            cells.push(x0);
        }
        // Grid: row = class, column = scale; the first two images of each class.
        let (mut tiles, mut row_labels) = (Vec::new(), Vec::new());
        for cl in 0..k {
            for j in 0..2.min(a.per_class) {
                row_labels.push(data::class_name(&cfg.dataset, cl));
                for x0 in &cells {
                    tiles.push(x0.get(cl * a.per_class + j));
                }
            }
        }
        let labels = util::GridLabels::new(
            format!("guidance sweep, DDIM-{}", a.steps),
            row_labels,
            a.scales.iter().map(|w| format!("w = {w}")).collect(),
        )
        .col_title("same noise along a row");
        outs.write(
            sweep_png,
            &util::labelled_grid_png(&Tensor::stack(&tiles, 0), &labels, 3)?,
        )?;
        outs.write(
            sweep_csv,
            util::csv_text(&["w", "class", "diversity"], &rows).as_bytes(),
        )?;
        let chart = line_panels_png(
            &[(
                "sample diversity against guidance",
                "guidance scale w",
                "mean pairwise L2 distance",
                vec![Series {
                    name: "diversity".into(),
                    points: curve,
                }],
            )],
            (700, 420),
        )?;
        outs.write(diversity_png, &chart)?;
        outs.commit()?;
        println!(
            "wrote {}/{{sweep.png, sweep.csv, diversity.png}}",
            a.out.display()
        );
        Ok(())
    })
}
