//! Diffusion in two dimensions: a ring of six Gaussians, its exact noised
//! marginals and noise prediction, a small MLP trained on it in seconds, and
//! the book's DDPM, DDIM and guidance code run on both.
//!
//! cargo run --release -p closed-form --example two_d -- --out out/two_d
//!
//! Writes marginals.png, field.png, trajectories.png, samples.png and
//! guidance.png into --out, and prints what each shows in numbers.
use anyhow::Result;
use clap::Parser;
use classifier_free::Guided;
use closed_form::two_d::{Mixture, MixtureEps, Mlp};
use forward::{Prediction, Schedule, ScheduleKind};
use network::NoisePredictor;
use reverse::{Pipeline, Sampler, Spacing, Variance};
use std::path::PathBuf;
use std::time::Instant;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};
use training::{drop_labels, loss, LossWeighting};
use util::outputs::{Format, OutputSet};
use util::plot::{plane_panels_png, Plane, GREY};

#[derive(Parser)]
#[command(about = "Diffusion on a 2-D mixture of Gaussians, where every density is known")]
struct Args {
    /// Output folder.
    #[arg(long, default_value = "out/two_d")]
    out: PathBuf,
    /// Training steps of the MLP (batch 512).
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    steps: i64,
    /// Points per class in the sample figures.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(i64).range(10..=100_000))]
    per_class: i64,
    #[arg(long, default_value_t = 0, value_parser = util::parse_seed)]
    seed: u64,
}

const H: f64 = 1.6; // the panels show [−H, H]²
const SHOWN: [i64; 4] = [20, 150, 400, 999]; // code timesteps of the field figures

fn points(x: &Tensor, labels: Option<&Tensor>) -> Vec<(f64, f64, usize)> {
    let n = x.size()[0];
    let v = Vec::<f64>::try_from(x.view([n * 2]).to_kind(Kind::Double)).unwrap_or_default();
    let y = labels.map(|l| Vec::<i64>::try_from(l).unwrap_or_default());
    (0..n as usize)
        .map(|i| {
            (
                v[2 * i],
                v[2 * i + 1],
                y.as_ref().map_or(GREY, |y| y[i] as usize),
            )
        })
        .collect()
}

fn main() {
    util::run(|| {
        let a = Args::parse();
        let mut outs = OutputSet::new();
        let names = ["marginals", "field", "trajectories", "samples", "guidance"];
        let files: Vec<_> = names
            .iter()
            .map(|n| outs.output("--out", &a.out.join(format!("{n}.png")), Format::Png))
            .collect::<Result<_>>()?;
        tch::manual_seed(a.seed as i64);
        let dev = Device::Cpu;
        let mix = Mixture::ring(6, 0.8, 0.1);
        let k = mix.num_classes();
        let s = Schedule::new(ScheduleKind::Linear, 1000, dev)?;
        let ab = |t: i64| s.alpha_bar_host[t as usize];
        let exact = MixtureEps {
            mixture: &mix,
            alpha_bar: &s.alpha_bar,
        };

        // 1. The noised marginals, with draws of q(x_t | x_0) on top.
        let (x0, y0) = mix.sample(k * a.per_class, dev);
        let mut panels = vec![Plane {
            title: "data x₀".into(),
            density: Some(mix.density_grid(H, 1.0, 120)),
            points: points(&x0, Some(&y0)),
            ..Default::default()
        }];
        for t in SHOWN {
            let xt = s.q_sample(&x0, &s.timestep(t, x0.size()[0])?, &x0.randn_like())?;
            panels.push(Plane {
                title: format!("t = {t}, ᾱ = {:.3}", ab(t)),
                density: Some(mix.density_grid(H, ab(t), 120)),
                points: points(&xt, Some(&y0)),
                ..Default::default()
            });
        }
        outs.write(files[0], &plane_panels_png(&panels, H, (2000, 440))?)?;

        // 2. A small MLP learns ε: label dropout 0.1, L_simple, batch 512.
        let vs = nn::VarStore::new(dev);
        let mlp = Mlp::new(&vs.root(), k, 128);
        let mut opt = nn::Adam::default().build(&vs, 2e-3)?;
        let start = Instant::now();
        let mut recent = Vec::new();
        for step in 1..=a.steps {
            let (x, y) = mix.sample(512, dev);
            let y = drop_labels(&y, k, 0.1);
            let l = loss(
                &mlp,
                &s,
                Prediction::Epsilon,
                LossWeighting::Uniform,
                &x,
                Some(&y),
            )?;
            opt.backward_step(&l);
            recent.push(l.double_value(&[]));
            if step % 1000 == 0 || step == a.steps {
                let mean = recent.iter().sum::<f64>() / recent.len() as f64;
                println!(
                    "step {step:>5}  loss {mean:.4}  ({:.1} s)",
                    start.elapsed().as_secs_f64()
                );
                recent.clear();
            }
        }

        // 3. The learned field against the exact one, on a grid and on x_t ~ p_t.
        println!("\nε_θ against the exact ε*, E‖ε_θ − ε*‖² / E‖ε*‖² on 4000 draws of x_t (unconditional):");
        let mut panels = Vec::new();
        let g = 13;
        let grid: Vec<f64> = (0..g * g)
            .flat_map(|i| {
                let c = |j: usize| -H * 0.9 + j as f64 * 1.8 * H / (g - 1) as f64;
                [c(i % g), c(i / g)]
            })
            .collect();
        let grid_x = Tensor::from_slice(&grid)
            .to_kind(Kind::Float)
            .view([(g * g) as i64, 2, 1, 1]);
        for t in SHOWN {
            let (xs, _) = mix.sample(4000, dev);
            let xt = s.q_sample(&xs, &s.timestep(t, 4000)?, &xs.randn_like())?;
            let tt = s.timestep(t, 4000)?;
            let e_star = exact.predict(&xt, tt.tensor(), None, false)?;
            let e_hat = tch::no_grad(|| mlp.predict(&xt, tt.tensor(), None, false))?;
            let rel = (&e_hat - &e_star)
                .square()
                .sum(Kind::Double)
                .double_value(&[])
                / e_star.square().sum(Kind::Double).double_value(&[]);
            println!("  t = {t:>3}  {rel:.4}");
            // Arrows along the score, −ε/√(1 − ᾱ), scaled to the grid spacing.
            let tg = s.timestep(t, (g * g) as i64)?;
            let fields = [
                exact.predict(&grid_x, tg.tensor(), None, false)?,
                tch::no_grad(|| mlp.predict(&grid_x, tg.tensor(), None, false))?,
            ];
            // Each arrow points along the score; its length grows with the
            // field's strength as |v|^0.35, up to 0.85 of the grid spacing.
            let spacing = 1.8 * H / (g - 1) as f64;
            let top = fields[0]
                .view([-1, 2])
                .norm_scalaropt_dim(2, [1], false)
                .max()
                .double_value(&[]);
            let mut arrows = Vec::new();
            for (colour, f) in [(GREY, &fields[0]), (0, &fields[1])] {
                let v = Vec::<f64>::try_from(f.view([-1]).to_kind(Kind::Double))?;
                for i in 0..g * g {
                    let (vx, vy) = (-v[2 * i], -v[2 * i + 1]);
                    let norm = vx.hypot(vy).max(1e-12);
                    let len = 0.85 * spacing * (norm / top).powf(0.35);
                    arrows.push((
                        grid[2 * i],
                        grid[2 * i + 1],
                        vx / norm * len,
                        vy / norm * len,
                        colour,
                    ));
                }
            }
            panels.push(Plane {
                title: format!("t = {t}: error {rel:.3}"),
                density: Some(mix.density_grid(H, ab(t), 100)),
                arrows,
                ..Default::default()
            });
        }
        outs.write(files[1], &plane_panels_png(&panels, H, (1700, 460))?)?;

        // 4. Trajectories, DDPM-1000 (every 10th step drawn) and DDIM-50, from the same 18 starts.
        let ddpm = Sampler::Ddpm {
            variance: Variance::FixedSmall,
            clip: false,
        };
        let ddim = Sampler::Ddim {
            steps: 50,
            eta: 0.0,
            spacing: Spacing::Trailing,
            clip: false,
        };
        let pipe = Pipeline::new(&mlp, &s, Prediction::Epsilon);
        let exact_pipe = Pipeline::new(&exact, &s, Prediction::Epsilon);
        let starts = Tensor::randn([18, 2, 1, 1], (Kind::Float, dev));
        let ys = Tensor::arange(18, (Kind::Int64, dev)).remainder(k);
        let mut panels = Vec::new();
        for (name, sampler) in [("DDPM-1000", &ddpm), ("DDIM-50", &ddim)] {
            let grid = sampler.grid(s.steps)?;
            let mut paths: Vec<Vec<(f64, f64)>> = points(&starts, None)
                .iter()
                .map(|p| vec![(p.0, p.1)])
                .collect();
            let _ends = tch::no_grad(|| {
                pipe.run(sampler, &grid, &starts, Some(&ys), &mut |r| {
                    if matches!(sampler, Sampler::Ddpm { .. }) && r.t % 10 != 0 {
                        return;
                    }
                    for (path, p) in paths.iter_mut().zip(points(&r.x_prev, None)) {
                        path.push((p.0, p.1));
                    }
                })
            })?;
            let mut yv = Vec::<i64>::try_from(&ys)?;
            if matches!(sampler, Sampler::Ddpm { .. }) {
                // Six random walks are legible; eighteen are a tangle.
                paths.truncate(6);
                yv.truncate(6);
            }
            let ends: Vec<_> = paths.iter().map(|p| p[p.len() - 1]).collect();
            panels.push(Plane {
                title: format!("{name}: {} paths of the MLP", yv.len()),
                density: Some(mix.density_grid(H, 1.0, 100)),
                paths: paths
                    .into_iter()
                    .zip(&yv)
                    .map(|(p, &y)| (p, y as usize))
                    .collect(),
                points: ends
                    .iter()
                    .zip(&yv)
                    .map(|(e, &y)| (e.0, e.1, y as usize))
                    .collect(),
                ..Default::default()
            });
        }
        outs.write(files[2], &plane_panels_png(&panels, H, (1000, 500))?)?;

        // 5. Samples against the truth, one colour per requested class.
        let y = Tensor::arange(k, (Kind::Int64, dev)).repeat_interleave_self_int(
            a.per_class,
            None,
            None,
        );
        let n = y.size()[0];
        let x_big_t = Tensor::randn([n, 2, 1, 1], (Kind::Float, dev));
        let (truth, ty) = mix.sample(n, dev);
        let runs = [
            (
                "exact ε*, DDPM-1000",
                tch::no_grad(|| exact_pipe.sample(&ddpm, &x_big_t, Some(&y)))?,
            ),
            (
                "exact ε*, DDIM-50",
                tch::no_grad(|| exact_pipe.sample(&ddim, &x_big_t, Some(&y)))?,
            ),
            (
                "MLP, DDPM-1000",
                tch::no_grad(|| pipe.sample(&ddpm, &x_big_t, Some(&y)))?,
            ),
            (
                "MLP, DDIM-50",
                tch::no_grad(|| pipe.sample(&ddim, &x_big_t, Some(&y)))?,
            ),
        ];
        println!("\nsamples, {n} in all ({} per class): right component, and RMS distance from its mean (data: {:.3})", a.per_class, mix.std * 2f64.sqrt());
        let mut panels = vec![Plane {
            title: "data".into(),
            points: points(&truth, Some(&ty)),
            ..Default::default()
        }];
        for (name, x) in &runs {
            let (acc, spread) = mix.accuracy_and_spread(x, &y);
            println!("  {name:<20} {acc:.3}  {spread:.3}");
            panels.push(Plane {
                title: (*name).into(),
                points: points(x, Some(&y)),
                ..Default::default()
            });
        }
        outs.write(files[3], &plane_panels_png(&panels, H, (2100, 460))?)?;

        // 6. Guidance at w = 0, 1, 3 (DDIM-50, the MLP), from the same noise.
        println!("\nguidance (MLP, DDIM-50): right component, RMS distance from its mean");
        let mut panels = Vec::new();
        for w in [0.0, 1.0, 3.0] {
            let guided = Guided::new(&mlp, w, false)?;
            let x = tch::no_grad(|| pipe.with_model(&guided).sample(&ddim, &x_big_t, Some(&y)))?;
            let (acc, spread) = mix.accuracy_and_spread(&x, &y);
            println!("  w = {w}  {acc:.3}  {spread:.3}");
            panels.push(Plane {
                title: format!("w = {w}: {:.0}% right class", 100.0 * acc),
                density: Some(mix.density_grid(H, 1.0, 100)),
                points: points(&x, Some(&y)),
                ..Default::default()
            });
        }
        outs.write(files[4], &plane_panels_png(&panels, H, (1500, 500))?)?;
        outs.commit()?;
        println!("\nwrote {}/{{{}}}.png", a.out.display(), names.join(","));
        Ok(())
    })
}
