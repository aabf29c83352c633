//! Quality of the shipped model as guidance and step count change: the
//! guidance trade-off curve and the DDIM step table of "Measuring samples".
//!
//! cargo run --release --example measure_sweep -- --out out/measuring
//!
//! Guidance sweep: DDIM-50 at each --guidance value. Step sweep: DDIM-S at
//! each --steps value with guidance --steps-guidance. N samples each (N/10 per
//! class, seed 0), evaluated like the `evaluate` example. Writes guidance.csv,
//! guidance.png, guidance.md, steps.md.
use anyhow::Result;
use clap::Parser;
use classifier_free::Guided;
use evaluate::Metrics;
use indicatif::{ProgressBar, ProgressStyle};
use reverse::{Pipeline, Sampler};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use util::outputs::{Format, OutputSet};
use util::plot::{line_panels_png, Series};

#[derive(Parser)]
#[command(about = "Guidance and step sweeps of the shipped model, measured")]
struct Args {
    #[arg(long, value_delimiter = ',', default_value = "0,0.5,1,2,3,5")]
    guidance: Vec<f64>,
    #[arg(long, value_delimiter = ',', default_value = "10,20,50,100")]
    steps: Vec<usize>,
    /// Guidance scale of the step sweep.
    #[arg(long, default_value_t = 3.0)]
    steps_guidance: f64,
    /// Samples per setting (a multiple of 10).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(10..))]
    n: i64,
    #[arg(long, default_value = data::FASHION_MNIST_DIR)]
    data_dir: PathBuf,
    #[arg(long, default_value = "out/measuring")]
    out: PathBuf,
    #[arg(long, default_value_t = 0, value_parser = util::parse_seed, allow_negative_numbers = true)]
    seed: u64,
}

fn main() {
    util::run(|| {
        let args = Args::parse();
        let device = Device::Cpu;
        // Every output, checked before any work.
        let mut outs = OutputSet::new();
        let file = |f: &str| args.out.join(f);
        let guidance_csv = outs.output("--out", &file("guidance.csv"), Format::Csv)?;
        let guidance_md = outs.output("--out", &file("guidance.md"), Format::Markdown)?;
        let steps_md = outs.output("--out", &file("steps.md"), Format::Markdown)?;
        let guidance_png = outs.output("--out", &file("guidance.png"), Format::Png)?;
        let loaded = formats::pretrained::fashion_cfg(device)?;
        let schedule = loaded.schedule()?;
        for &s in &args.steps {
            Sampler::ddim(s).grid(schedule.steps)?;
        }
        for &w in args.guidance.iter().chain([&args.steps_guidance]) {
            Guided::new(&*loaded.model, w, false)?;
        }
        let examples::Measurement {
            ev,
            train,
            n,
            labels: y,
        } = examples::Measurement::new(&args.data_dir, args.n, device)?;
        let calls: usize = args.guidance.iter().map(|&w| 50 * passes(w)).sum::<usize>()
            + args
                .steps
                .iter()
                .map(|&s| s * passes(args.steps_guidance))
                .sum::<usize>();
        let bar = ProgressBar::new(calls as u64);
        bar.set_style(ProgressStyle::with_template(
            "{bar:30} {pos}/{len} network calls of batch {msg} | ETA {eta}",
        )?);
        bar.set_message(n.to_string());
        // ± one standard error: binomial for the accuracy, a bootstrap over
        // 50 resamples of the features for the FD.
        let se = |m: &Metrics, images: &Tensor| {
            let a = m.accuracy.unwrap_or(f64::NAN);
            (
                (a * (1.0 - a) / n as f64).sqrt(),
                ev.frechet_se(images, 50, args.seed),
            )
        };
        let measure = |steps: usize, w: f64| -> Result<(Metrics, f64, (f64, f64))> {
            let sampler = Sampler::ddim(steps);
            let guided = Guided::new(&*loaded.model, w, false)?;
            tch::manual_seed(args.seed as i64);
            let x_t = Tensor::randn([n, 1, 28, 28], (Kind::Float, device));
            let start = Instant::now();
            let pipe = Pipeline::new(&guided, &schedule, loaded.config.prediction);
            let grid = sampler.grid(schedule.steps)?;
            let x0 = pipe.run(&sampler, &grid, &x_t, Some(&y), &mut |_| {
                bar.inc(passes(w) as u64)
            })?;
            let ms = start.elapsed().as_secs_f64() * 1e3 / n as f64;
            util::ensure_finite(&x0, &format!("the DDIM-{steps} samples at w = {w}"))?;
            let m = ev.evaluate(&x0, &y, args.seed as i64)?;
            let e = se(&m, &x0);
            Ok((m, ms, e))
        };
        // The reference rows at the same n, since FD depends on n.
        let idx = evaluate::permutation(train.len(), args.seed as i64).narrow(0, 0, n);
        let real_images = train.images.index_select(0, &idx);
        let refs = evaluate::reference_rows(&ev, &train, n, args.seed as i64)?;
        let real_se = se(&refs[0].1, &real_images);
        let row = |name: &str, m: &Metrics, (sa, sf): (f64, f64)| {
            format!(
                "| {name} | {:.3} ± {sa:.3} | {:.1} ± {sf:.1} | {:.3} | {:.3} |",
                m.accuracy.unwrap_or(f64::NAN),
                m.frechet,
                m.precision,
                m.recall
            )
        };
        let reference = format!(
            "{}\n| {} | {:.3} | {:.1} | {:.3} | {:.3} |\n",
            row(&refs[0].0, &refs[0].1, real_se),
            refs[1].0,
            refs[1].1.accuracy.unwrap_or(f64::NAN),
            refs[1].1.frechet,
            refs[1].1.precision,
            refs[1].1.recall
        );

        let mut g_rows = Vec::new();
        for &w in &args.guidance {
            g_rows.push((w, measure(50, w)?));
        }
        let mut s_rows = Vec::new();
        for &s in &args.steps {
            s_rows.push((s, measure(s, args.steps_guidance)?));
        }
        bar.finish_and_clear();

        let mut csv = Vec::new();
        let mut md = String::from(
            "| samples | accuracy | FD | precision | recall |\n|---|---:|---:|---:|---:|\n",
        );
        md.push_str(&reference);
        for (w, (m, _, e)) in &g_rows {
            let a = m.accuracy.unwrap_or(f64::NAN);
            csv.push(vec![*w, a, m.frechet, m.precision, m.recall]);
            let _ = writeln!(md, "{}", row(&format!("DDIM-50, w = {w}"), m, *e));
        }
        let note = "\n± one standard error: binomial for accuracy, a bootstrap over 50 resamples for FD.\n";
        md.push_str(note);
        outs.write(
            guidance_csv,
            util::csv_text(&["w", "accuracy", "frechet", "precision", "recall"], &csv).as_bytes(),
        )?;
        outs.write(guidance_md, md.as_bytes())?;
        print!("DDIM-50, n = {n}\n{md}");

        let mut md = String::from("| sampler | network calls | ms / image (2-core CPU) | accuracy | FD | precision | recall |\n|---|---:|---:|---:|---:|---:|---:|\n");
        for r in reference.lines() {
            // The reference rows, with empty call and time cells.
            let (name, rest) = r
                .trim_start_matches("| ")
                .split_once(" |")
                .unwrap_or(("", ""));
            let _ = writeln!(md, "| {name} | | |{rest}");
        }
        for (s, (m, ms, (sa, sf))) in &s_rows {
            let _ = writeln!(
                md,
                "| DDIM-{s} | {} | {ms:.1} | {:.3} ± {sa:.3} | {:.1} ± {sf:.1} | {:.3} | {:.3} |",
                s * passes(args.steps_guidance),
                m.accuracy.unwrap_or(f64::NAN),
                m.frechet,
                m.precision,
                m.recall
            );
        }
        md.push_str(note);
        outs.write(steps_md, md.as_bytes())?;
        print!("\nw = {}, n = {n}\n{md}", args.steps_guidance);

        let series = |col: usize, name: &str| Series {
            name: name.into(),
            points: csv.iter().map(|r| (r[0], r[col])).collect(),
        };
        let chart = line_panels_png(
            &[
                (
                    "agreement and coverage (higher is better)",
                    "guidance scale w",
                    "fraction",
                    vec![
                        series(1, "conditional accuracy"),
                        series(3, "precision"),
                        series(4, "recall"),
                    ],
                ),
                (
                    "Fréchet distance (lower is better)",
                    "guidance scale w",
                    "FD",
                    vec![series(2, "FD")],
                ),
            ],
            (1000, 420),
        )?;
        outs.write(guidance_png, &chart)?;
        outs.commit()?;
        println!("wrote {}", args.out.join("guidance.png").display());
        Ok(())
    })
}

/// Network passes per step: w = 0 and w = 1 need one, other scales two.
fn passes(w: f64) -> usize {
    if w == 0.0 || w == 1.0 {
        1
    } else {
        2
    }
}
