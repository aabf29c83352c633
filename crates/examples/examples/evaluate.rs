//! Measure generated samples against real Fashion-MNIST.
//!
//! cargo run --release --example evaluate -- --samples samples.safetensors [more.safetensors …]
//!
//! Each file holds `images` [N, 1, 28, 28] in [−1, 1] and `labels` [N] (what
//! `sample --save-tensors` writes). Prints one row per file — conditional
//! accuracy, Fréchet distance, precision, recall — under two reference rows
//! at the same N: real training images (the floor) and clipped noise (the ceiling).
use anyhow::{Context, Result};
use clap::Parser;
use evaluate::{Evaluator, Metrics};
use examples::DeviceArgs;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    about = "Conditional accuracy, Fréchet distance and precision/recall of generated samples"
)]
struct Args {
    /// Sample files written by `sample --save-tensors`.
    #[arg(long, num_args = 1.., required = true)]
    samples: Vec<PathBuf>,
    /// Classifier weights (default: the shipped one).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Folder with the Fashion-MNIST IDX files (the real images).
    #[arg(long, default_value = data::FASHION_MNIST_DIR)]
    data_dir: PathBuf,
    /// Seed for choosing real images (reference rows, precision/recall).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Skip the two reference rows.
    #[arg(long)]
    no_reference: bool,
    /// Also write the table as Markdown here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Also write the rows as CSV here.
    #[arg(long)]
    csv: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

fn main() {
    util::run(|| {
        let args = Args::parse();
        let device = args.device.device()?;
        // Read and check every file before the slow work.
        let mut files = Vec::new();
        for path in &args.samples {
            let s = evaluate::read_samples(path)?;
            let name = evaluate::describe(&s.metadata).unwrap_or_else(|| {
                path.file_stem()
                    .map_or("samples".into(), |s| s.to_string_lossy().into())
            });
            files.push((name, s));
        }
        let classifier = match &args.classifier {
            Some(p) => evaluate::Trained::load(p, device)?,
            None => evaluate::pretrained::classifier(device)?,
        };
        let test = data::load_mnist_like(&args.data_dir, data::Split::Test)?;
        let ev = Evaluator::new(classifier, &test.images);

        let mut rows: Vec<(String, Metrics)> = Vec::new();
        if !args.no_reference {
            let train = data::load_mnist_like(&args.data_dir, data::Split::Train)?;
            let sizes: BTreeSet<i64> = files.iter().map(|(_, s)| s.images.size()[0]).collect();
            for n in sizes {
                rows.extend(evaluate::reference_rows(&ev, &train, n, args.seed as i64)?);
            }
        }
        for (name, s) in &files {
            if let Some(w) = evaluate::small_sample_warning(s.images.size()[0]) {
                eprintln!("{name}: {w}");
            }
            rows.push((
                name.clone(),
                ev.evaluate(&s.images, &s.labels, args.seed as i64)?,
            ));
        }

        print!("{}", table(&rows, false));
        if let Some(path) = &args.markdown {
            util::write_atomic(path, table(&rows, true).as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = &args.csv {
            write_csv(path, &rows)?;
        }
        Ok(())
    })
}

fn table(rows: &[(String, Metrics)], markdown: bool) -> String {
    let width = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(7)
        .max(7);
    let mut out = String::new();
    let cells = |name: &str, m: &Metrics| {
        let acc = m.accuracy.map_or("–".to_string(), |a| format!("{a:.3}"));
        [
            format!("{name:<width$}"),
            format!("{:>5}", m.n),
            format!("{acc:>8}"),
            format!("{:>7.2}", m.frechet),
            format!("{:>9.3}", m.precision),
            format!("{:>6.3}", m.recall),
        ]
    };
    let header = [
        format!("{:<width$}", "samples"),
        format!("{:>5}", "n"),
        format!("{:>8}", "accuracy"),
        format!("{:>7}", "FD"),
        format!("{:>9}", "precision"),
        format!("{:>6}", "recall"),
    ];
    let mut line = |c: &[String]| {
        if markdown {
            let _ = writeln!(out, "| {} |", c.join(" | "));
        } else {
            let _ = writeln!(out, "{}", c.join("  "));
        }
    };
    line(&header);
    if markdown {
        let rule: Vec<String> = header
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let dashes = "-".repeat(h.len().max(3));
                if i == 0 {
                    dashes
                } else {
                    format!("{}:", &dashes[1..])
                }
            })
            .collect();
        line(&rule);
    }
    for (name, m) in rows {
        line(&cells(name, m));
    }
    out
}

fn write_csv(path: &std::path::Path, rows: &[(String, Metrics)]) -> Result<()> {
    let mut text = String::from("samples,n,accuracy,frechet,precision,recall\n");
    for (name, m) in rows {
        let acc = m.accuracy.map_or(String::new(), |a| format!("{a}"));
        let _ = writeln!(
            text,
            "\"{name}\",{},{acc},{},{},{}",
            m.n, m.frechet, m.precision, m.recall
        );
    }
    util::write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}
