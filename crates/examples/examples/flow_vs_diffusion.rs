//! A rectified flow against a diffusion model of the same network, data and
//! training time, sampled at equal numbers of network evaluations: the
//! table, chart and grid of "Flow matching".
//!
//! cargo run --release --example flow_vs_diffusion -- --out out/flow-vs-diffusion
//!
//! The two models are the ones `scripts/flow-vs-diffusion.sh` trains (by
//! default, the committed files in crates/training/runs/flow-vs-diffusion/).
//! For every guidance scale and every budget in --evaluations, each sampler
//! takes the most steps that fit the budget (flow Heun costs 2 a step), from the
//! same N(0, I) draw (seed 0, N/10 per class), measured like the `evaluate`
//! example. Writes flow_vs_diffusion.{csv,md,png} and flow_vs_diffusion_grid.png.
use anyhow::Result;
use clap::Parser;
use classifier_free::Guided;
use evaluate::Metrics;
use examples::AnySampler;
use formats::{LoadedModel, Weights};
use reverse::{FlowPipeline, FlowSampler, Pipeline, Sampler, SigmaSpacing};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Tensor};
use training::Objective;
use util::outputs::{Format, OutputSet};
use util::plot::{line_panels_png, Series};

#[derive(Parser)]
#[command(
    about = "A rectified flow against a diffusion model at equal training time and equal network evaluations"
)]
struct Args {
    /// The diffusion model (a checkpoint or an exported file).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../training/runs/flow-vs-diffusion/diffusion/model.safetensors"))]
    diffusion: PathBuf,
    /// The rectified-flow model.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../training/runs/flow-vs-diffusion/flow/model.safetensors"))]
    flow: PathBuf,
    /// Network evaluations per sample.
    #[arg(long, value_delimiter = ',', default_value = "5,10,20,50")]
    evaluations: Vec<usize>,
    /// Guidance scales.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    guidance: Vec<f64>,
    /// Samples per setting (a multiple of 10).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(10..))]
    n: i64,
    #[arg(long, default_value = data::FASHION_MNIST_DIR)]
    data_dir: PathBuf,
    #[arg(long, default_value = "out/flow-vs-diffusion")]
    out: PathBuf,
    #[arg(long, default_value_t = 0, value_parser = util::parse_seed, allow_negative_numbers = true)]
    seed: u64,
}

/// The samplers compared at `evals` evaluations: (model, name, sampler).
fn samplers(evals: usize) -> Vec<(&'static str, &'static str, AnySampler)> {
    let mut out = vec![
        (
            "diffusion",
            "DDIM",
            AnySampler::Diffusion(Sampler::ddim(evals)),
        ),
        (
            "diffusion",
            "DPM-Solver++(2M), Karras σ",
            AnySampler::Diffusion(Sampler::DpmSolverPp {
                steps: evals,
                sigmas: SigmaSpacing::Karras { rho: 7.0 },
                clip: true,
            }),
        ),
        (
            "flow",
            "flow Euler",
            AnySampler::Flow(FlowSampler::euler(evals)),
        ),
    ];
    if evals >= 4 {
        out.push((
            "flow",
            "flow Heun",
            AnySampler::Flow(FlowSampler::heun(evals / 2)),
        ));
    }
    out
}

/// FDs above this are left off the chart (they stay in the table).
const FD_CHART_MAX: f64 = 40.0;

/// One measured run.
struct Row {
    w: f64,
    name: &'static str,
    evals: usize,
    ms: f64,
    m: Metrics,
    se: (f64, f64),
}

fn main() {
    util::run(|| {
        let args = Args::parse();
        let device = Device::Cpu;
        let mut outs = OutputSet::new();
        outs.input("--diffusion", &args.diffusion)?;
        outs.input("--flow", &args.flow)?;
        let file = |f: &str| args.out.join(f);
        let csv_out = outs.output("--out", &file("flow_vs_diffusion.csv"), Format::Csv)?;
        let md_out = outs.output("--out", &file("flow_vs_diffusion.md"), Format::Markdown)?;
        let png_out = outs.output("--out", &file("flow_vs_diffusion.png"), Format::Png)?;
        let grid_out = outs.output("--out", &file("flow_vs_diffusion_grid.png"), Format::Png)?;
        let load = |p: &PathBuf, want: Objective| -> Result<LoadedModel> {
            let m = formats::load_model(p, Weights::Ema, device)?;
            if m.config.objective != want {
                anyhow::bail!("{}: this is a {:?} model, not a {want:?} one: pass --diffusion and --flow the right way round", p.display(), m.config.objective);
            }
            Ok(m)
        };
        let diffusion = load(&args.diffusion, Objective::Diffusion)?;
        let flow = load(&args.flow, Objective::RectifiedFlow)?;
        if diffusion.config.model != flow.config.model {
            anyhow::bail!(
                "the two models have different networks: this comparison needs the same one"
            );
        }
        let schedule = diffusion.schedule()?;
        if args.guidance.is_empty() || args.evaluations.is_empty() {
            anyhow::bail!("--guidance and --evaluations need at least one value each");
        }
        let mut runs = Vec::new();
        for &w in &args.guidance {
            Guided::new(&*diffusion.model, w, false)?; // checks w before any work
            for &e in &args.evaluations {
                for (model, name, s) in samplers(e) {
                    let evals = s.check(&schedule)?;
                    runs.push((w, model, name, s, evals));
                }
            }
        }
        let m = examples::Measurement::new(&args.data_dir, args.n, device)?;
        let bar = m.bar(runs.iter().map(|r| r.4).sum())?;
        let noise = m.noise(args.seed);
        let examples::Measurement {
            ev,
            train,
            n,
            labels: y,
        } = m;
        // One untimed evaluation of each model first (allocator and libtorch warm-up).
        let _ = Pipeline::new(&*diffusion.model, &schedule, diffusion.config.prediction).sample(
            &Sampler::ddim(1),
            &noise,
            Some(&y),
        )?;
        let _ = FlowPipeline::new(&*flow.model).sample(&FlowSampler::euler(1), &noise, Some(&y))?;
        let mut rows = Vec::new();
        // The grid: DDIM and flow Euler at the fewest and the most evaluations,
        // at the largest guidance scale.
        let mut grid = Vec::new();
        let w_grid = args
            .guidance
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        let e_grid = [
            args.evaluations.iter().copied().min().unwrap_or(1),
            args.evaluations.iter().copied().max().unwrap_or(1),
        ];
        for (w, model, name, sampler, evals) in &runs {
            let loaded = if *model == "flow" { &flow } else { &diffusion };
            let guided = Guided::new(&*loaded.model, *w, false)?;
            let start = Instant::now();
            let x0 = match sampler {
                AnySampler::Diffusion(s) => Pipeline::new(
                    &guided,
                    &schedule,
                    loaded.config.prediction,
                )
                .sample_observed(s, &noise, Some(&y), &mut |_| bar.inc(1))?,
                AnySampler::Flow(f) => {
                    FlowPipeline::new(&guided)
                        .sample_observed(f, &noise, Some(&y), &mut |_| bar.inc(1))?
                }
            };
            let ms = start.elapsed().as_secs_f64() * 1e3 / n as f64;
            util::ensure_finite(&x0, &format!("the {name} samples"))?;
            let m = ev.evaluate(&x0, &y, args.seed as i64)?;
            let a = m.accuracy.unwrap_or(f64::NAN);
            let se = (
                (a * (1.0 - a) / n as f64).sqrt(),
                ev.frechet_se(&x0, 50, args.seed),
            );
            if *w == w_grid && ["DDIM", "flow Euler"].contains(name) && e_grid.contains(evals) {
                grid.push((format!("{name}-{evals}"), x0.narrow(0, 0, 10)));
            }
            rows.push(Row {
                w: *w,
                name,
                evals: *evals,
                ms,
                m,
                se,
            });
        }
        bar.finish_and_clear();
        let refs = evaluate::reference_rows(&ev, &train, n, args.seed as i64)?;

        let secs = |m: &LoadedModel, p: &PathBuf| {
            util::safetensors::load(p, Device::Cpu)
                .ok()
                .and_then(|f| f.metadata.get("train_seconds").cloned())
                .map_or_else(String::new, |s| format!(", {s} s of training"))
                + &format!(" ({} steps)", m.step)
        };
        let mut md = format!(
            "Diffusion: ε, min-SNR-5{}. Flow: velocity, uniform t{}. Same UNet (16, 32, 64), batch, optimiser, EMA and label dropout.\n\n",
            secs(&diffusion, &args.diffusion),
            secs(&flow, &args.flow)
        );
        md.push_str("| w | sampler | network evaluations | ms / image (2-core CPU) | accuracy | FD | precision | recall |\n|--:|---|--:|--:|--:|--:|--:|--:|\n");
        for (name, m) in &refs {
            let _ = writeln!(
                md,
                "| | {name} | | | {:.3} | {:.1} | {:.3} | {:.3} |",
                m.accuracy.unwrap_or(f64::NAN),
                m.frechet,
                m.precision,
                m.recall
            );
        }
        let mut order: Vec<&Row> = rows.iter().collect();
        order.sort_by(|a, b| a.w.total_cmp(&b.w).then(a.evals.cmp(&b.evals)));
        let mut csv = Vec::new();
        for r in &order {
            let a = r.m.accuracy.unwrap_or(f64::NAN);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.1} | {a:.3} ± {:.3} | {:.1} ± {:.1} | {:.3} | {:.3} |",
                r.w, r.name, r.evals, r.ms, r.se.0, r.m.frechet, r.se.1, r.m.precision, r.m.recall
            );
            csv.push(format!(
                "{},\"{}\",{},{:.3},{a:.4},{:.3},{:.3},{:.4},{:.4}",
                r.w, r.name, r.evals, r.ms, r.m.frechet, r.se.1, r.m.precision, r.m.recall
            ));
        }
        let _ = write!(
            md,
            "\nn = {n} per row (seed {}, the same noise for every row). DDIM (trailing grid) and DPM-Solver++(2M) (Karras' σs, ρ = 7: the best diffusion sampler of \"The score and the ODE\") clip x̂_0 to [−1, 1]; \
             the flow samplers on a uniform grid, clipping x̂_0 = x_t − t v̂ the same way; flow Heun takes E/2 steps of two evaluations. \
             ± one standard error: binomial for accuracy, a bootstrap over 50 resamples for FD.\n",
            args.seed
        );
        let text = format!(
            "guidance,sampler,evaluations,ms_per_image,accuracy,frechet,frechet_se,precision,recall\n{}\n",
            csv.join("\n")
        );
        outs.write(csv_out, text.as_bytes())?;
        outs.write(md_out, md.as_bytes())?;
        print!("{md}");

        let floor = refs[0].1.frechet;
        let (lo, hi) = (
            *args.evaluations.iter().min().unwrap_or(&1) as f64,
            *args.evaluations.iter().max().unwrap_or(&50) as f64,
        );
        let panel = |w: f64| -> Vec<Series> {
            let mut names: Vec<&str> = Vec::new();
            for r in rows.iter().filter(|r| r.w == w) {
                if !names.contains(&r.name) {
                    names.push(r.name);
                }
            }
            // A run far above the rest (Heun with 2 steps) would flatten the
            // panel: it stays in the table and is left off the chart.
            let mut v: Vec<Series> = names
                .iter()
                .map(|&name| Series {
                    name: name.into(),
                    points: rows
                        .iter()
                        .filter(|r| r.w == w && r.name == name && r.m.frechet <= FD_CHART_MAX)
                        .map(|r| (r.evals as f64, r.m.frechet))
                        .collect(),
                })
                .collect();
            v.push(Series {
                name: format!("real images (floor, {floor:.1})"),
                points: vec![(lo, floor), (hi, floor)],
            });
            v
        };
        let titles: Vec<String> = args
            .guidance
            .iter()
            .map(|w| format!("Fréchet distance, guidance w = {w}"))
            .collect();
        let panels: Vec<(&str, &str, &str, Vec<Series>)> = args
            .guidance
            .iter()
            .zip(&titles)
            .map(|(&w, t)| {
                (
                    t.as_str(),
                    "network evaluations",
                    "FD (lower is better)",
                    panel(w),
                )
            })
            .collect();
        outs.write(
            png_out,
            &line_panels_png(&panels, (550 * panels.len() as u32, 460))?,
        )?;
        grid.sort_by_key(|g| g.0.starts_with("flow")); // the diffusion's rows first
        let labels = util::GridLabels::new(
            format!("The same noise, guidance w = {w_grid}: sampler and network evaluations"),
            grid.iter().map(|g| g.0.clone()).collect(),
            util::strings(data::FASHION_CLASSES),
        );
        let images = Tensor::cat(
            &grid.iter().map(|g| g.1.shallow_clone()).collect::<Vec<_>>(),
            0,
        );
        outs.write(grid_out, &util::labelled_grid_png(&images, &labels, 3)?)?;
        outs.commit()?;
        println!("wrote {}", args.out.join("flow_vs_diffusion.png").display());
        Ok(())
    })
}
