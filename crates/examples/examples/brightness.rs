//! How bright are the samples, class by class, against real images? The
//! measurement behind zero terminal SNR (Lin et al. 2024): a schedule whose
//! last step leaves signal in x_{T−1} trains a model that expects the image's
//! mean to be in its input, and sampling from pure noise, which has none,
//! pulls every image's mean brightness towards the middle.
//!
//! cargo run --release --example brightness -- \
//!     --input "SD schedule=out/plain-w1.safetensors" \
//!     --input "zero SNR=out/rescaled-w1.safetensors" --markdown out/brightness.md --chart out/brightness.png
//!
//! For each class and each set (the test images first): the mean over images
//! of each image's mean pixel (in [−1, 1]), the spread of that per-image mean
//! (its standard deviation), and its 5% and 95% quantiles.
use anyhow::{bail, Context};
use clap::Parser;
use std::fmt::Write as _;
use std::path::PathBuf;
use tch::{Kind, Tensor};
use util::outputs::{Format, OutputSet};
use util::plot::{line_panels_png, Series};

#[derive(Parser)]
#[command(about = "Per-class brightness of sample sets against the test images")]
struct Args {
    /// LABEL=FILE (split at the last "="): a sample file (`sample --save-tensors`)
    /// and its name in the table; repeat for more sets.
    #[arg(long, required = true)]
    input: Vec<String>,
    /// Folder with the Fashion-MNIST IDX files.
    #[arg(long, default_value = data::FASHION_MNIST_DIR)]
    data_dir: PathBuf,
    /// Write the table as Markdown here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Draw the per-class mean and spread as a PNG chart here.
    #[arg(long)]
    chart: Option<PathBuf>,
}

/// Per-class statistics of the per-image mean pixel.
struct Stats {
    mean: f64,
    std: f64,
    q05: f64,
    q95: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Stats {
        mean,
        std: var.sqrt(),
        q05: q(0.05),
        q95: q(0.95),
    }
}

/// For each class 0..10, the statistics of its images' mean pixels.
fn per_class(images: &Tensor, labels: &Tensor, what: &str) -> anyhow::Result<Vec<Stats>> {
    let means = Vec::<f64>::try_from(
        images
            .flatten(1, -1)
            .mean_dim(1, false, Kind::Double)
            .to_device(tch::Device::Cpu),
    )?;
    let labels = Vec::<i64>::try_from(labels.to_device(tch::Device::Cpu))?;
    (0..10)
        .map(|c| {
            let v: Vec<f64> = (0..labels.len())
                .filter(|&i| labels[i] == c)
                .map(|i| means[i])
                .collect();
            if v.len() < 2 {
                bail!(
                    "{what}: class {c} has {} images; sample at least 2 per class (--per-class)",
                    v.len()
                );
            }
            Ok(stats(v))
        })
        .collect()
}

fn main() {
    util::run(|| {
        let a = Args::parse();
        let mut outs = OutputSet::new();
        let inputs = examples::labelled_inputs(&mut outs, &a.input)?;
        let md = outs.output_if("--markdown", a.markdown.as_ref(), Format::Markdown)?;
        let chart = outs.output_if("--chart", a.chart.as_ref(), Format::Png)?;

        let test = data::load_mnist_like(&a.data_dir, data::Split::Test)?;
        let mut sets = vec![(
            "test images".to_string(),
            per_class(&test.images, &test.labels, "test images")?,
        )];
        for (label, file) in &inputs {
            let s = evaluate::read_samples(file).with_context(|| format!("--input {label}"))?;
            sets.push((label.clone(), per_class(&s.images, &s.labels, label)?));
        }

        // One row per class: mean (spread) for each set.
        let mut table = String::from("| class |");
        for (name, _) in &sets {
            write!(table, " {name}: mean (spread) |")?;
        }
        table.push_str("\n|---|");
        table.push_str(&"--:|".repeat(sets.len()));
        table.push('\n');
        for (c, class) in data::FASHION_CLASSES.iter().enumerate() {
            write!(table, "| {class} |")?;
            for (_, st) in &sets {
                write!(table, " {:+.3} ({:.3}) |", st[c].mean, st[c].std)?;
            }
            table.push('\n');
        }
        // The summary rows: how far each set's class means and spreads are
        // from the test images', averaged over the ten classes.
        let real = &sets[0].1;
        for (what, f) in [
            ("mean |Δ mean| vs test", 0usize),
            ("spread / test spread", 1),
            ("5–95% range / test", 2),
        ] {
            write!(table, "| *{what}* |")?;
            for (_, st) in &sets {
                let v: f64 = (0..10)
                    .map(|c| match f {
                        0 => (st[c].mean - real[c].mean).abs(),
                        1 => st[c].std / real[c].std,
                        _ => (st[c].q95 - st[c].q05) / (real[c].q95 - real[c].q05),
                    })
                    .sum::<f64>()
                    / 10.0;
                write!(table, " {v:.3} |")?;
            }
            table.push('\n');
        }
        print!("{table}");

        if let Some(out) = md {
            outs.write(out, table.as_bytes())?;
        }
        if let Some(out) = chart {
            let series = |f: &dyn Fn(&Stats) -> f64| -> Vec<Series> {
                sets.iter()
                    .map(|(name, st)| Series {
                        name: name.clone(),
                        points: st
                            .iter()
                            .enumerate()
                            .map(|(c, s)| (c as f64, f(s)))
                            .collect(),
                    })
                    .collect()
            };
            let x = "class (0 T-shirt … 9 ankle boot)";
            let png = line_panels_png(
                &[
                    (
                        "Mean brightness",
                        x,
                        "mean pixel, in [−1, 1]",
                        series(&|s| s.mean),
                    ),
                    (
                        "Spread of brightness",
                        x,
                        "std of the per-image mean",
                        series(&|s| s.std),
                    ),
                ],
                (1400, 560),
            )?;
            outs.write(out, &png)?;
        }
        outs.commit()?;
        Ok(())
    })
}
