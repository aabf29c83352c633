//! Does the model copy its training set? For every sample, the nearest of
//! the 60 000 training images in pixel space, against the same distance for
//! real test images, which the model never saw (Measuring samples).
//!
//! cargo run --release --example nearest_neighbours -- \
//!     --samples out/ddim50-w3.safetensors --out out/nearest.png
//!
//! Prints the distribution of nearest-training-image distances for the
//! samples and for as many test images, and draws, for each class, the
//! sample closest to a training image above that training image.
use anyhow::{bail, Context};
use clap::Parser;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};
use util::outputs::{Format, OutputSet};
use util::{labelled_grid_png, strings, GridLabels};

#[derive(Parser)]
#[command(about = "Nearest training images of samples, against those of real test images")]
struct Args {
    /// A sample file (`sample --save-tensors`): `images` in [−1, 1] and `labels`.
    #[arg(long)]
    samples: PathBuf,
    /// Folder with the Fashion-MNIST IDX files.
    #[arg(long, default_value = data::FASHION_MNIST_DIR)]
    data_dir: PathBuf,
    /// The PNG of sample / nearest-training-image pairs.
    #[arg(long)]
    out: PathBuf,
}

/// For each row of `a` (N, D), the distance to its nearest row of `b` (M, D)
/// and that row's index, in chunks so that the N × M matrix stays small.
fn nearest(a: &Tensor, b: &Tensor) -> (Vec<f64>, Vec<i64>) {
    let b2 = b.square().sum_dim_intlist(1, false, Kind::Float);
    let (mut dist, mut idx) = (Vec::new(), Vec::new());
    for chunk in a.split(256, 0) {
        let a2 = chunk.square().sum_dim_intlist(1, true, Kind::Float);
        // ‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b, clamped against rounding below 0.
        let d2 = (&a2 + &b2 - chunk.matmul(&b.tr()) * 2.0).clamp_min(0.0);
        let (v, i) = d2.min_dim(1, false);
        dist.extend(Vec::<f64>::try_from(v.sqrt().to_kind(Kind::Double)).unwrap_or_default());
        idx.extend(Vec::<i64>::try_from(i).unwrap_or_default());
    }
    (dist, idx)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    util::run(|| {
        let a = Args::parse();
        let mut outs = OutputSet::new();
        outs.input("--samples", &a.samples)?;
        let out = outs.output("--out", &a.out, Format::Png)?;
        let s = evaluate::read_samples(&a.samples).context("--samples")?;
        let n = s.images.size()[0];
        let train = data::load_mnist_like(&a.data_dir, data::Split::Train)?;
        let test = data::load_mnist_like(&a.data_dir, data::Split::Test)?;
        for (set, what) in [(&train, "training"), (&test, "test")] {
            examples::check_images(
                &set.images,
                [1, 28, 28],
                &format!("the {what} set in {}", a.data_dir.display()),
            )?;
        }
        if test.len() < n {
            bail!(
                "{} samples but only {} test images to compare them with: pass fewer samples",
                n,
                test.len()
            );
        }
        let flat = |x: &Tensor| x.to_device(Device::Cpu).to_kind(Kind::Float).flatten(1, -1);
        let train_x = flat(&train.images);
        let (d_s, i_s) = nearest(&flat(&s.images), &train_x);
        let (d_t, _) = nearest(&flat(&test.images.narrow(0, 0, n)), &train_x);
        let (mut ss, mut tt) = (d_s.clone(), d_t.clone());
        ss.sort_by(f64::total_cmp);
        tt.sort_by(f64::total_cmp);
        let p1 = quantile(&tt, 0.01);
        let below = ss.iter().filter(|&&d| d < p1).count();
        println!(
            "distance to the nearest of {} training images (pixels in [−1, 1], 784 of them):",
            train.len()
        );
        println!(
            "{:<22} {:>6} {:>8} {:>8} {:>8} {:>8}",
            "", "n", "min", "1%", "median", "max"
        );
        for (name, v) in [("samples", &ss), ("test images (unseen)", &tt)] {
            println!(
                "{name:<22} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                v.len(),
                v[0],
                quantile(v, 0.01),
                quantile(v, 0.5),
                v[v.len() - 1]
            );
        }
        println!(
            "samples closer to a training image than 99% of test images are: {below} of {n} ({:.1}%)",
            100.0 * below as f64 / n as f64
        );
        // For each class, the sample nearest to the training set, above its neighbour.
        let labels = Vec::<i64>::try_from(&s.labels)?;
        let classes = data::FASHION_CLASSES;
        let (mut top, mut bottom, mut cols) = (Vec::new(), Vec::new(), Vec::new());
        for c in 0..classes.len() as i64 {
            let Some(k) = (0..labels.len())
                .filter(|&k| labels[k] == c)
                .min_by(|&x, &y| d_s[x].total_cmp(&d_s[y]))
            else {
                continue;
            };
            top.push(s.images.get(k as i64).to_device(Device::Cpu));
            bottom.push(
                train
                    .images
                    .get(i_s[k])
                    .to_device(Device::Cpu)
                    .to_kind(Kind::Float),
            );
            cols.push(format!("{}\nd = {:.2}", classes[c as usize], d_s[k]));
        }
        let grid = GridLabels::new(
            format!("each class's sample closest to the training set (test images' 1% distance: {p1:.2})"),
            strings(["sample", "nearest training image"]),
            cols,
        );
        let cells: Vec<Tensor> = top.into_iter().chain(bottom).collect();
        outs.write(
            out,
            &labelled_grid_png(&Tensor::stack(&cells, 0), &grid, 3)?,
        )?;
        outs.commit()?;
        println!("wrote {}", a.out.display());
        Ok(())
    })
}
