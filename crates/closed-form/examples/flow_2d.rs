//! Flow matching in two dimensions: the ring of six Gaussians of "Diffusion
//! in two dimensions", its exact rectified-flow velocity, a small MLP trained
//! on the flow-matching loss in seconds, and the paths and few-step errors of
//! the flow against those of the diffusion's probability-flow ODE.
//!
//! cargo run --release -p closed-form --example flow_2d -- --out out/flow_2d
//!
//! Writes paths.png and samples.png into --out, and prints the numbers.
use anyhow::Result;
use clap::Parser;
use classifier_free::Guided;
use closed_form::two_d::{Mixture, MixtureEps, MixtureVelocity, Mlp};
use forward::{Prediction, Schedule, ScheduleKind};
use reverse::{FlowPipeline, FlowSampler, Pipeline, Sampler, Spacing, StepRecord};
use std::path::PathBuf;
use std::time::Instant;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};
use training::{drop_labels, flow_loss};
use util::outputs::{Format, OutputSet};
use util::plot::{plane_panels_png, Plane, GREY};

#[derive(Parser)]
#[command(about = "Rectified flow on a 2-D mixture of Gaussians, where the velocity is known")]
struct Args {
    /// Output folder.
    #[arg(long, default_value = "out/flow_2d")]
    out: PathBuf,
    /// Training steps of the MLP (batch 512).
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    steps: i64,
    /// Points per class in the sample figure.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(i64).range(10..=100_000))]
    per_class: i64,
    #[arg(long, default_value_t = 0, value_parser = util::parse_seed)]
    seed: u64,
}

const H: f64 = 2.6; // the path panels show [−H, H]²: the noise as well as the data
const SAMPLES_H: f64 = 1.6; // the sample panels show the data's square

fn points(x: &Tensor, labels: Option<&Tensor>) -> Vec<(f64, f64, usize)> {
    let n = x.size()[0];
    let v = Vec::<f64>::try_from(x.view([n * 2]).to_kind(Kind::Double)).unwrap_or_default();
    let y = labels.map(|l| Vec::<i64>::try_from(l).unwrap_or_default());
    (0..n as usize)
        .map(|i| {
            let c = y.as_ref().map_or(GREY, |y| y[i] as usize);
            (v[2 * i], v[2 * i + 1], c)
        })
        .collect()
}

/// A sampler of either process, for the paths and the few-step table.
enum Ode<'a> {
    Diffusion(Pipeline<'a>, Sampler),
    Flow(FlowPipeline<'a>, FlowSampler),
}

impl Ode<'_> {
    fn run(&self, x: &Tensor, y: &Tensor, observe: &mut dyn FnMut(&StepRecord)) -> Result<Tensor> {
        Ok(tch::no_grad(|| match self {
            Ode::Diffusion(p, s) => p.sample_observed(s, x, Some(y), observe),
            Ode::Flow(p, s) => p.sample_observed(s, x, Some(y), observe),
        })?)
    }
}

fn ddim(steps: usize) -> Sampler {
    Sampler::Ddim {
        steps,
        eta: 0.0,
        spacing: Spacing::Trailing,
        clip: false,
    }
}

fn main() {
    util::run(|| {
        let a = Args::parse();
        let mut outs = OutputSet::new();
        let paths_png = outs.output("--out", &a.out.join("paths.png"), Format::Png)?;
        let samples_png = outs.output("--out", &a.out.join("samples.png"), Format::Png)?;
        tch::manual_seed(a.seed as i64);
        let dev = Device::Cpu;
        let mix = Mixture::ring(6, 0.8, 0.1);
        let k = mix.num_classes();
        let s = Schedule::new(ScheduleKind::Linear, 1000, dev)?;
        let exact_eps = MixtureEps {
            mixture: &mix,
            alpha_bar: &s.alpha_bar,
        };
        let exact_u = MixtureVelocity { mixture: &mix };
        let diffusion = Pipeline::new(&exact_eps, &s, Prediction::Epsilon);
        let flow = FlowPipeline::new(&exact_u);

        // 1. The MLP of the 2-D chapter learns the velocity: flow_loss, label dropout 0.1.
        let vs = nn::VarStore::new(dev);
        let mlp = Mlp::new(&vs.root(), k, 128);
        let mut opt = nn::Adam::default().build(&vs, 2e-3)?;
        let start = Instant::now();
        let mut recent = Vec::new();
        for step in 1..=a.steps {
            let (x, y) = mix.sample(512, dev);
            let l = flow_loss(&mlp, &x, Some(&drop_labels(&y, k, 0.1)))?;
            opt.backward_step(&l);
            recent.push(l.double_value(&[]));
            if step % 1000 == 0 || step == a.steps {
                let mean = recent.iter().sum::<f64>() / recent.len() as f64;
                let secs = start.elapsed().as_secs_f64();
                println!("step {step:>5}  flow-matching loss {mean:.4}  ({secs:.1} s)");
                recent.clear();
            }
        }
        let learned = FlowPipeline::new(&mlp);

        // 2. Paths from the same 18 starts: the diffusion's ODE, the flow's, the MLP's.
        let starts = Tensor::randn([18, 2, 1, 1], (Kind::Float, dev));
        let ys = Tensor::arange(18, (Kind::Int64, dev)).remainder(k);
        let yv = Vec::<i64>::try_from(&ys)?;
        let mut panels = Vec::new();
        let shown = [
            (
                "diffusion: exact ε*, DDIM-50",
                Ode::Diffusion(diffusion, ddim(50)),
            ),
            (
                "flow: exact velocity, Euler-50",
                Ode::Flow(flow, FlowSampler::euler(50).without_clip()),
            ),
            (
                "flow: the MLP, Euler-50",
                Ode::Flow(learned, FlowSampler::euler(50).without_clip()),
            ),
        ];
        for (name, ode) in &shown {
            let mut paths: Vec<Vec<(f64, f64)>> = points(&starts, None)
                .iter()
                .map(|p| vec![(p.0, p.1)])
                .collect();
            let _ends = ode.run(&starts, &ys, &mut |r| {
                for (path, p) in paths.iter_mut().zip(points(&r.x_prev, None)) {
                    path.push((p.0, p.1));
                }
            })?;
            // Grey dots: the starts; coloured dots: where each path ends.
            let mut marks: Vec<(f64, f64, usize)> =
                paths.iter().map(|p| (p[0].0, p[0].1, GREY)).collect();
            marks.extend(paths.iter().zip(&yv).map(|(p, &y)| {
                let e = p[p.len() - 1];
                (e.0, e.1, y as usize)
            }));
            panels.push(Plane {
                title: (*name).into(),
                density: Some(mix.density_grid(H, 1.0, 100)),
                points: marks,
                paths: paths
                    .into_iter()
                    .zip(&yv)
                    .map(|(p, &y)| (p, y as usize))
                    .collect(),
                ..Default::default()
            });
        }
        outs.write(paths_png, &plane_panels_png(&panels, H, (1500, 540))?)?;

        // 3. Straightness and few-step error of the exact ODEs, 2000 starts.
        let n = 2000;
        let x1 = Tensor::randn([n, 2, 1, 1], (Kind::Double, dev));
        let y = Tensor::arange(n, (Kind::Int64, dev)).remainder(k);
        let fine = [
            ("diffusion (DDIM)", Ode::Diffusion(diffusion, ddim(1000))),
            (
                "flow (Euler)",
                Ode::Flow(flow, FlowSampler::euler(1000).without_clip()),
            ),
        ];
        println!("\nexact ODEs from the same {n} starts: path length / straight-line distance (1 = straight)");
        let mut reference = Vec::new();
        for (name, ode) in &fine {
            let mut length = Tensor::zeros([n], (Kind::Double, dev));
            let end = ode.run(&x1, &y, &mut |r| {
                length += (&r.x_prev - &r.x_t)
                    .view([n, 2])
                    .norm_scalaropt_dim(2, [1], false);
            })?;
            let chord = (&end - &x1).view([n, 2]).norm_scalaropt_dim(2, [1], false);
            let ratio = (length / chord).mean(Kind::Double).double_value(&[]);
            println!("  {name:<18} {ratio:.3}");
            reference.push(end);
        }
        println!("\nRMS distance of the S-step endpoint from the 1000-step one (the data's own spread: {:.3})", mix.std * 2f64.sqrt());
        println!("  evaluations   diffusion DDIM   flow Euler   flow Heun (E/2 steps)");
        for evals in [1usize, 2, 4, 8, 16] {
            let err = |ode: Ode, i: usize| -> Result<f64> {
                let end = ode.run(&x1, &y, &mut |_| {})?;
                Ok((end - &reference[i])
                    .square()
                    .sum_dim_intlist(1, false, Kind::Double)
                    .mean(Kind::Double)
                    .sqrt()
                    .double_value(&[]))
            };
            let d = err(Ode::Diffusion(diffusion, ddim(evals)), 0)?;
            let f = err(Ode::Flow(flow, FlowSampler::euler(evals).without_clip()), 1)?;
            // Heun with S steps costs 2S evaluations.
            let h = if evals >= 2 {
                format!(
                    "{:>11.3}",
                    err(
                        Ode::Flow(flow, FlowSampler::heun(evals / 2).without_clip()),
                        1
                    )?
                )
            } else {
                format!("{:>11}", "")
            };
            println!("  {evals:>11}   {d:>14.3}   {f:>10.3}   {h}");
        }

        // 4. Samples: the data, the MLP at 5 and 50 Euler steps, and guided at w = 3.
        let y = Tensor::arange(k, (Kind::Int64, dev)).repeat_interleave_self_int(
            a.per_class,
            None,
            None,
        );
        let n = y.size()[0];
        let x1 = Tensor::randn([n, 2, 1, 1], (Kind::Float, dev));
        let (truth, ty) = mix.sample(n, dev);
        let guided = Guided::new(&mlp, 3.0, false)?;
        let runs = [
            (
                "MLP, Euler-5",
                learned,
                FlowSampler::euler(5).without_clip(),
            ),
            (
                "MLP, Euler-50",
                learned,
                FlowSampler::euler(50).without_clip(),
            ),
            (
                "MLP, guided w = 3, Euler-50",
                FlowPipeline::new(&guided),
                FlowSampler::euler(50).without_clip(),
            ),
        ];
        println!("\nsamples, {n} in all ({} per class): right component, and RMS distance from its mean (data: {:.3})", a.per_class, mix.std * 2f64.sqrt());
        let mut panels = vec![Plane {
            title: "data".into(),
            density: Some(mix.density_grid(SAMPLES_H, 1.0, 100)),
            points: points(&truth, Some(&ty)),
            ..Default::default()
        }];
        for (name, pipe, sampler) in runs {
            let x = tch::no_grad(|| pipe.sample(&sampler, &x1, Some(&y)))?;
            let (acc, spread) = mix.accuracy_and_spread(&x, &y);
            println!("  {name:<28} {acc:.3}  {spread:.3}");
            panels.push(Plane {
                title: name.into(),
                density: Some(mix.density_grid(SAMPLES_H, 1.0, 100)),
                points: points(&x, Some(&y)),
                ..Default::default()
            });
        }
        outs.write(
            samples_png,
            &plane_panels_png(&panels, SAMPLES_H, (2000, 540))?,
        )?;
        outs.commit()?;
        println!("\nwrote {}/{{paths,samples}}.png", a.out.display());
        Ok(())
    })
}
