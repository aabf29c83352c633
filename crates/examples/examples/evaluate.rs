//! Measure generated samples against real Fashion-MNIST.
//!
//! cargo run --release --example evaluate -- --samples samples.safetensors [more.safetensors …]
//!
//! Each file holds `images` [N, 1, 28, 28] in [−1, 1] and `labels` [N] (what
//! `sample --save-tensors` writes). Prints one row per file — conditional
//! accuracy, Fréchet distance, precision, recall — under two reference rows
//! at the same N: real training images (the floor) and clipped noise (the ceiling).
use anyhow::{bail, Result};
use clap::Parser;
use evaluate::{Evaluator, Metrics};
use examples::DeviceArgs;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use util::outputs::{Format, OutputSet};

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
    #[arg(long, default_value_t = 0, value_parser = util::parse_seed, allow_negative_numbers = true)]
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

/// Real images the reference statistics need, at the least: below this the
/// test set's covariance (and so every Fréchet distance) is noise.
const MIN_REFERENCE: i64 = 1000;

fn main() {
    util::run(|| {
        let args = Args::parse();
        // Every input and output, checked before the slow work.
        let mut outs = OutputSet::new();
        for p in &args.samples {
            outs.input("--samples", p)?;
        }
        if let Some(p) = &args.classifier {
            outs.input("--classifier", p)?;
        }
        let md_out = outs.output_if("--markdown", args.markdown.as_ref(), Format::Markdown)?;
        let csv_out = outs.output_if("--csv", args.csv.as_ref(), Format::Csv)?;
        let device = args.device.device()?;
        // Read and check every file before the slow work.
        let mut files: Vec<(String, evaluate::Samples)> = Vec::new();
        let mut stems = Vec::new();
        for path in &args.samples {
            let s = evaluate::read_samples(path)?;
            let stem = path
                .file_stem()
                .map_or("samples".into(), |s| s.to_string_lossy().into_owned());
            let name = evaluate::describe(&s.metadata).unwrap_or_else(|| stem.clone());
            files.push((name, s));
            stems.push((stem, path.display().to_string()));
        }
        // Files that share a label are told apart by file name (by path when
        // the names are the same too).
        let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
        for (i, (name, _)) in files.iter_mut().enumerate() {
            let same: Vec<usize> = (0..names.len()).filter(|&j| names[j] == *name).collect();
            if same.len() > 1 {
                let stem_clash = same.iter().any(|&j| j != i && stems[j].0 == stems[i].0);
                let tag = if stem_clash { &stems[i].1 } else { &stems[i].0 };
                *name = format!("{name} ({tag})");
            }
        }
        let classifier = match &args.classifier {
            Some(p) => evaluate::Trained::load(p, device)?,
            None => evaluate::pretrained::classifier(device)?,
        };
        let test = data::load_mnist_like(&args.data_dir, data::Split::Test)?;
        let what = format!("the test set in {}", args.data_dir.display());
        examples::check_images(&test.images, [1, 28, 28], &what)?;
        if test.len() < MIN_REFERENCE {
            bail!("{what} holds {} images: the reference statistics need at least {MIN_REFERENCE} real images (Fashion-MNIST's has 10 000)", test.len());
        }
        let ev = Evaluator::new(classifier, &test.images);

        let mut rows: Vec<(String, Metrics)> = Vec::new();
        if !args.no_reference {
            let train = data::load_mnist_like(&args.data_dir, data::Split::Train)?;
            let what = format!("the training set in {}", args.data_dir.display());
            examples::check_images(&train.images, [1, 28, 28], &what)?;
            let sizes: BTreeSet<i64> = files.iter().map(|(_, s)| s.images.size()[0]).collect();
            if let Some(&n) = sizes.iter().next_back().filter(|&&n| n > train.len()) {
                bail!("{what} holds {} images, fewer than the {n} samples its reference row must match: pass --no-reference or use the full training set", train.len());
            }
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

        if let Some(id) = md_out {
            outs.write(id, table(&rows, true).as_bytes())?;
        }
        if let Some(id) = csv_out {
            outs.write(id, &csv_bytes(&rows)?)?;
        }
        outs.commit()?;
        print!("{}", table(&rows, false));
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
        // A | in a name would end the Markdown cell early.
        let name = if markdown {
            name.replace('|', "\\|")
        } else {
            name.clone()
        };
        line(&cells(&name, m));
    }
    out
}

/// The rows as CSV, quoted by the csv crate (names may hold commas or quotes).
fn csv_bytes(rows: &[(String, Metrics)]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["samples", "n", "accuracy", "frechet", "precision", "recall"])?;
    for (name, m) in rows {
        let acc = m.accuracy.map_or(String::new(), |a| format!("{a}"));
        w.write_record([
            name.clone(),
            m.n.to_string(),
            acc,
            m.frechet.to_string(),
            m.precision.to_string(),
            m.recall.to_string(),
        ])?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}
