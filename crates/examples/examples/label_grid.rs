//! Draw saved samples as one labelled grid: one column per class, and one
//! group of rows per file (what `sample --save-tensors` and `one_page` write).
//!
//! cargo run --release --example label_grid -- --input "DDPM-1000=out/one_page/ddpm.safetensors" \
//!     --input "DDIM-50=out/one_page/ddim50.safetensors" --title "one_page" --out grid.png
use anyhow::{bail, Context};
use clap::Parser;
use std::path::PathBuf;
use tch::Tensor;
use util::outputs::{Format, OutputSet};
use util::{labelled_grid_png, strings, GridLabels};

#[derive(Parser)]
#[command(about = "Saved samples as a grid with a label on every row and column")]
struct Args {
    /// LABEL=FILE (split at the last "="): the row label and a file with `images` and `labels`
    /// (each class the same number of times); repeat for more rows.
    #[arg(long, required = true)]
    input: Vec<String>,
    /// The title above the grid.
    #[arg(long, default_value = "")]
    title: String,
    /// Each 28×28 image is drawn this many times larger.
    #[arg(long, default_value_t = 3)]
    scale: u32,
    /// The PNG to write.
    #[arg(long)]
    out: PathBuf,
}

fn main() {
    util::run(|| {
        let args = Args::parse();
        let classes = data::FASHION_CLASSES;
        let mut outs = OutputSet::new();
        let inputs = examples::labelled_inputs(&mut outs, &args.input)?;
        let out = outs.output("--out", &args.out, Format::Png)?;
        let (mut cells, mut rows) = (Vec::new(), Vec::new());
        for (label, file) in inputs {
            let s = evaluate::read_samples(&file)
                .with_context(|| format!("--input {label}={}", file.display()))?;
            let labels = Vec::<i64>::try_from(&s.labels)?;
            let per_class: Vec<Vec<usize>> = (0..classes.len() as i64)
                .map(|c| (0..labels.len()).filter(|&i| labels[i] == c).collect())
                .collect();
            let k = per_class[0].len();
            if k == 0 || per_class.iter().any(|v| v.len() != k) || k * classes.len() != labels.len()
            {
                bail!(
                    "{}: every class must appear equally often (write it with --per-class)",
                    file.display()
                );
            }
            for r in 0..k {
                rows.push(if k == 1 {
                    label.to_string()
                } else {
                    format!("{label} ({})", r + 1)
                });
                cells.extend(per_class.iter().map(|v| s.images.get(v[r] as i64)));
            }
        }
        let grid = GridLabels::new(args.title.clone(), rows, strings(classes));
        outs.write(
            out,
            &labelled_grid_png(&Tensor::stack(&cells, 0), &grid, args.scale)?,
        )?;
        outs.commit()?;
        println!("wrote {}", args.out.display());
        Ok(())
    })
}
