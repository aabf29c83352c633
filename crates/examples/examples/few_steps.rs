//! DDIM, Heun and DPM-Solver++(2M) at a few network evaluations each, on the
//! shipped model: the table and chart of "The score and the ODE".
//!
//! cargo run --release --example few_steps -- --out out/few-steps
//!
//! For every sampler and every budget in --evaluations, the most steps that
//! fit the budget (Heun costs 2S − 1), N guided samples (N/10 per class,
//! seed 0, the same x_T for every row), measured like the `evaluate`
//! example. Writes few_steps.csv, few_steps.md, few_steps.png (the chart)
//! and few_steps_grid.png (one image per class from three of the samplers at
//! every budget up to 20).
use clap::Parser;
use classifier_free::Guided;
use evaluate::Metrics;
use reverse::{Pipeline, Sampler, SigmaSpacing, Spacing};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Tensor};
use util::outputs::{Format, OutputSet};
use util::plot::{line_panels_png, Series};

#[derive(Parser)]
#[command(about = "Few-step samplers of the shipped model, measured at equal network evaluations")]
struct Args {
    /// Network evaluations per sample.
    #[arg(long, value_delimiter = ',', default_value = "5,10,20,50")]
    evaluations: Vec<usize>,
    /// Guidance scale.
    #[arg(long, default_value_t = 3.0)]
    guidance: f64,
    /// Samples per setting (a multiple of 10).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(10..))]
    n: i64,
    #[arg(long, default_value = data::FASHION_MNIST_DIR)]
    data_dir: PathBuf,
    #[arg(long, default_value = "out/few-steps")]
    out: PathBuf,
    #[arg(long, default_value_t = 0, value_parser = util::parse_seed, allow_negative_numbers = true)]
    seed: u64,
}

/// One measured run: sampler, evaluations, ms per image, metrics, (SE of
/// accuracy, SE of FD).
type Row = (&'static str, usize, f64, Metrics, (f64, f64));

/// The samplers whose images the grid shows.
const GRID_SAMPLERS: [&str; 3] = ["DDIM", "DPM-Solver++(2M), Karras σ", "Heun, Karras σ"];

/// The samplers compared, each with the most steps that fit `evals`.
fn samplers(evals: usize) -> Vec<(&'static str, Sampler)> {
    let trailing = SigmaSpacing::Timesteps {
        spacing: Spacing::Trailing,
    };
    let karras = SigmaSpacing::Karras { rho: 7.0 };
    let heun = evals.div_ceil(2).max(1); // 2S − 1 ≤ evals
    let mut out = vec![
        ("DDIM", Sampler::ddim(evals)),
        (
            "DPM-Solver++(2M)",
            Sampler::DpmSolverPp {
                steps: evals,
                sigmas: trailing,
                clip: true,
            },
        ),
        (
            "Heun",
            Sampler::Heun {
                steps: heun,
                sigmas: trailing,
                clip: true,
            },
        ),
    ];
    if evals >= 2 {
        out.push((
            "DPM-Solver++(2M), Karras σ",
            Sampler::DpmSolverPp {
                steps: evals,
                sigmas: karras,
                clip: true,
            },
        ));
    }
    if heun >= 2 {
        out.push((
            "Heun, Karras σ",
            Sampler::Heun {
                steps: heun,
                sigmas: karras,
                clip: true,
            },
        ));
    }
    out
}

fn main() {
    util::run(|| {
        let args = Args::parse();
        let device = Device::Cpu;
        let mut outs = OutputSet::new();
        let file = |f: &str| args.out.join(f);
        let csv_out = outs.output("--out", &file("few_steps.csv"), Format::Csv)?;
        let md_out = outs.output("--out", &file("few_steps.md"), Format::Markdown)?;
        let png_out = outs.output("--out", &file("few_steps.png"), Format::Png)?;
        let grid_out = outs.output("--out", &file("few_steps_grid.png"), Format::Png)?;
        let loaded = formats::pretrained::fashion_cfg(device)?;
        let schedule = loaded.schedule()?;
        let guided = Guided::new(&*loaded.model, args.guidance, false)?;
        let mut runs = Vec::new();
        for &e in &args.evaluations {
            for (name, sampler) in samplers(e) {
                let evals = sampler.check(&schedule)?;
                runs.push((name, sampler, evals));
            }
        }
        let m = examples::Measurement::new(&args.data_dir, args.n, device)?;
        let bar = m.bar(runs.iter().map(|r| r.2).sum())?;
        let x_big_t = m.noise(args.seed);
        let examples::Measurement {
            ev,
            train,
            n,
            labels: y,
        } = m;
        let pipe = Pipeline::new(&guided, &schedule, loaded.config.prediction);
        let se = |m: &Metrics, images: &Tensor| {
            let a = m.accuracy.unwrap_or(f64::NAN);
            (
                (a * (1.0 - a) / n as f64).sqrt(),
                ev.frechet_se(images, 50, args.seed),
            )
        };
        // One untimed evaluation first, so that the first row's time does not
        // include the allocator's and libtorch's warm-up.
        let _ = pipe.sample(&Sampler::ddim(1), &x_big_t, Some(&y))?;
        let mut rows: Vec<Row> = Vec::new();
        let mut grid = Vec::new();
        for (name, sampler, evals) in &runs {
            let start = Instant::now();
            let x0 = pipe.sample_observed(sampler, &x_big_t, Some(&y), &mut |_| bar.inc(1))?;
            let ms = start.elapsed().as_secs_f64() * 1e3 / n as f64;
            util::ensure_finite(&x0, &format!("the {name} samples"))?;
            let m = ev.evaluate(&x0, &y, args.seed as i64)?;
            let e = se(&m, &x0);
            if GRID_SAMPLERS.contains(name) && *evals <= 20 {
                grid.push((format!("{name}, {evals}"), x0.narrow(0, 0, 10)));
            }
            rows.push((*name, *evals, ms, m, e));
        }
        bar.finish_and_clear();
        let refs = evaluate::reference_rows(&ev, &train, n, args.seed as i64)?;

        let mut md = String::from(
            "| sampler | network evaluations | ms / image (2-core CPU) | accuracy | FD | precision | recall |\n|---|---:|---:|---:|---:|---:|---:|\n",
        );
        for (name, m) in &refs {
            let _ = writeln!(
                md,
                "| {name} | | | {:.3} | {:.1} | {:.3} | {:.3} |",
                m.accuracy.unwrap_or(f64::NAN),
                m.frechet,
                m.precision,
                m.recall
            );
        }
        let mut csv = Vec::new();
        let mut by_evals: Vec<&Row> = rows.iter().collect();
        by_evals.sort_by_key(|r| r.1);
        for (name, evals, ms, m, (sa, sf)) in by_evals {
            let a = m.accuracy.unwrap_or(f64::NAN);
            let _ = writeln!(
                md,
                "| {name} | {evals} | {ms:.1} | {a:.3} ± {sa:.3} | {:.1} ± {sf:.1} | {:.3} | {:.3} |",
                m.frechet, m.precision, m.recall
            );
            csv.push((
                name.to_string(),
                vec![*evals as f64, *ms, a, m.frechet, *sf, m.precision, m.recall],
            ));
        }
        let _ = write!(
            md,
            "\nn = {n} per row (seed {}, the same x_T for every row), guidance w = {}, x̂_0 clipped to [−1, 1]. \
             ± one standard error: binomial for accuracy, a bootstrap over 50 resamples for FD.\n",
            args.seed, args.guidance
        );
        let csv_rows: Vec<Vec<f64>> = csv.iter().map(|r| r.1.clone()).collect();
        let mut text = util::csv_text(
            &[
                "evaluations",
                "ms_per_image",
                "accuracy",
                "frechet",
                "frechet_se",
                "precision",
                "recall",
            ],
            &csv_rows,
        );
        // The sampler's name first in every row.
        let mut lines = text.lines().map(str::to_string).collect::<Vec<_>>();
        lines[0] = format!("sampler,{}", lines[0]);
        for (l, (name, _)) in lines.iter_mut().skip(1).zip(&csv) {
            *l = format!("\"{name}\",{l}");
        }
        text = lines.join("\n") + "\n";
        outs.write(csv_out, text.as_bytes())?;
        outs.write(md_out, md.as_bytes())?;
        print!("{md}");

        let names: Vec<&str> = {
            let mut v: Vec<&str> = rows.iter().map(|r| r.0).collect();
            v.dedup();
            let mut seen = Vec::new();
            v.retain(|x| {
                if seen.contains(x) {
                    false
                } else {
                    seen.push(*x);
                    true
                }
            });
            v
        };
        let series = |col: usize| -> Vec<Series> {
            names
                .iter()
                .map(|&name| Series {
                    name: name.into(),
                    points: rows
                        .iter()
                        .filter(|r| r.0 == name)
                        .map(|r| {
                            let a = r.3.accuracy.unwrap_or(f64::NAN);
                            (r.1 as f64, [a, r.3.frechet][col])
                        })
                        .collect(),
                })
                .collect()
        };
        let floor = refs[0].1.frechet;
        // A run that failed outright (FD far above the rest) would flatten the
        // panel: it stays in the table and is left off the chart.
        const FD_CHART_MAX: f64 = 60.0;
        let mut fd = series(1);
        for s in &mut fd {
            s.points.retain(|p| p.1 <= FD_CHART_MAX);
        }
        fd.push(Series {
            name: format!("real images (floor, {floor:.1})"),
            points: vec![
                (*args.evaluations.iter().min().unwrap_or(&1) as f64, floor),
                (*args.evaluations.iter().max().unwrap_or(&50) as f64, floor),
            ],
        });
        let chart = line_panels_png(
            &[
                (
                    "Fréchet distance (lower is better)",
                    "network evaluations",
                    "FD",
                    fd,
                ),
                (
                    "conditional accuracy",
                    "network evaluations",
                    "accuracy",
                    series(0),
                ),
            ],
            (1100, 460),
        )?;
        outs.write(png_out, &chart)?;
        grid.sort_by_key(|g| {
            GRID_SAMPLERS
                .iter()
                .position(|n| g.0.starts_with(&format!("{n}, ")))
        });
        let labels = util::GridLabels::new(
            format!(
                "The same x_T, guidance w = {}: sampler, network evaluations",
                args.guidance
            ),
            grid.iter().map(|g| g.0.clone()).collect(),
            util::strings(data::FASHION_CLASSES),
        );
        let images = Tensor::cat(
            &grid.iter().map(|g| g.1.shallow_clone()).collect::<Vec<_>>(),
            0,
        );
        outs.write(grid_out, &util::labelled_grid_png(&images, &labels, 3)?)?;
        outs.commit()?;
        println!("wrote {}", args.out.join("few_steps.png").display());
        Ok(())
    })
}
