//! Train the Fashion-MNIST classifier that every metric in the book uses.
//!
//! cargo run --release --example train_classifier -- --out crates/evaluate/pretrained/fashion-classifier.safetensors
//!
//! Prints test accuracy after each epoch; writes the weights (safetensors)
//! with the test accuracy, epochs, seed and wall time in the metadata.
use anyhow::Context;
use clap::Parser;
use evaluate::Trained;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tch::nn::OptimizerConfig;
use tch::Kind;
use util::outputs::{Format, OutputSet};

#[derive(Parser)]
#[command(about = "Train the Fashion-MNIST classifier used for evaluation")]
struct Args {
    /// Folder with the Fashion-MNIST IDX files.
    #[arg(long, default_value = data::FASHION_MNIST_DIR)]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i64).range(1..))]
    epochs: i64,
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(i64).range(1..))]
    batch_size: i64,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0, value_parser = util::parse_seed, allow_negative_numbers = true)]
    seed: u64,
    #[arg(long, default_value = "out/fashion-classifier.safetensors")]
    out: PathBuf,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
}

fn main() {
    util::run(|| {
        let args = Args::parse();
        let device = util::parse_device(&args.device)?;
        // Checked before minutes of training: a writable folder, a .safetensors name.
        let mut outs = OutputSet::new();
        let out = outs.output("--out", &args.out, Format::Safetensors)?;
        let train = data::load_mnist_like(&args.data_dir, data::Split::Train)?;
        let test = data::load_mnist_like(&args.data_dir, data::Split::Test)?;
        anyhow::ensure!(
            train.num_classes == 10 && train.images.size()[1..] == [1, 28, 28],
            "{}: expected 28×28 greyscale images in 10 classes",
            args.data_dir.display()
        );
        tch::manual_seed(args.seed as i64);
        let clf = Trained::init(device);
        let mut opt = tch::nn::Adam::default().build(&clf.vs, args.lr)?;
        let on_device = data::Dataset {
            images: train.images.to_device(device),
            labels: train.labels.to_device(device),
            num_classes: 10,
        };
        let mut batches = data::Batches::new(&on_device, args.batch_size, args.seed, true);
        let per_epoch = batches.per_epoch();
        let bar = ProgressBar::new((per_epoch * args.epochs) as u64);
        bar.set_style(ProgressStyle::with_template(
            "{bar:30} {pos}/{len} batches | {msg} | ETA {eta}",
        )?);
        let start = Instant::now();
        let mut accuracy = 0.0;
        for epoch in 1..=args.epochs {
            // Halve the learning rate for the last third of the epochs.
            if epoch > 2 * args.epochs / 3 {
                opt.set_lr(args.lr / 2.0);
            }
            let mut total = 0.0;
            for i in 0..per_epoch {
                let (x, y) = batches.get((epoch - 1) * per_epoch + i);
                let loss = clf.net.logits(&x, true).cross_entropy_for_logits(&y);
                opt.backward_step(&loss);
                total += loss.double_value(&[]);
                bar.inc(1);
            }
            accuracy = clf.accuracy(&test.images, &test.labels);
            let loss = total / per_epoch as f64;
            bar.suspend(|| {
                println!("epoch {epoch}: train loss {loss:.4} | test accuracy {accuracy:.4}")
            });
        }
        bar.finish_and_clear();
        let secs = start.elapsed().as_secs_f64();
        let confusion = confusion(&clf, &test);
        println!("per-class test accuracy:");
        for (c, name) in data::FASHION_CLASSES.iter().enumerate() {
            println!("  {c} {name:<12} {:.3}", confusion[c]);
        }
        let mut meta = BTreeMap::new();
        meta.insert("test_accuracy".into(), format!("{accuracy:.4}"));
        meta.insert("epochs".into(), args.epochs.to_string());
        meta.insert("batch_size".into(), args.batch_size.to_string());
        meta.insert("lr".into(), args.lr.to_string());
        meta.insert("seed".into(), args.seed.to_string());
        meta.insert("seconds".into(), format!("{secs:.0}"));
        meta.insert("device".into(), format!("{device:?}"));
        meta.insert("torch".into(), env!("DIFFUSION_TORCH_VERSION").into());
        outs.write(out, &clf.to_bytes(meta)?)?;
        outs.commit()
            .with_context(|| format!("writing {}", args.out.display()))?;
        println!(
            "test accuracy {accuracy:.4} after {} epochs in {secs:.0} s; wrote {}",
            args.epochs,
            args.out.display()
        );
        Ok(())
    })
}

/// Accuracy within each true class.
fn confusion(clf: &Trained, test: &data::Dataset) -> Vec<f64> {
    let pred = clf
        .predict(&clf.features(&test.images))
        .to_device(tch::Device::Cpu);
    (0..10)
        .map(|c| {
            let mask = test.labels.eq(c);
            pred.masked_select(&mask)
                .eq(c)
                .to_kind(Kind::Double)
                .mean(Kind::Double)
                .double_value(&[])
        })
        .collect::<Vec<_>>()
}
