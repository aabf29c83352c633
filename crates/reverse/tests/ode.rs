//! The ODE solvers (Euler, Heun, DPM-Solver++(2M)): DDIM = Euler, the
//! exact flow of Gaussian data, and a step-by-step replay by diffusers.
use forward::{Prediction, Schedule, ScheduleKind};
use network::{NoisePredictor, Result as NetResult};
use reverse::ode::{dpm_solver_pp_2m_update, sigma_at};
use reverse::{Pipeline, Sampler, SigmaSpacing, Sigmas, Spacing, StepRecord};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// libtorch's generator is process-global; these tests reseed it.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Data N(μ, s²) per pixel: the exact ε at any (fractional) timestep, with
/// σ between training steps interpolated in log σ, as the solvers do.
struct Gaussian {
    log_sigma: Vec<f64>,
    mu: f64,
    s2: f64,
}

impl Gaussian {
    fn new(s: &Schedule, mu: f64, s2: f64) -> Self {
        let log_sigma = (0..s.steps).map(|t| sigma_at(s, t).ln()).collect();
        Self { log_sigma, mu, s2 }
    }
    fn sigma(&self, t: f64) -> f64 {
        let k = (t.floor() as usize).min(self.log_sigma.len() - 2);
        let w = t - k as f64;
        (self.log_sigma[k] * (1.0 - w) + self.log_sigma[k + 1] * w).exp()
    }
}

impl NoisePredictor for Gaussian {
    fn predict(&self, x_t: &Tensor, t: &Tensor, _: Option<&Tensor>, _: bool) -> NetResult<Tensor> {
        let ts = Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap();
        // ᾱ = 1/(1 + σ²); E[ε | x_t] = √(1−ᾱ)(x_t − √ᾱ μ)/(ᾱ s² + 1 − ᾱ).
        let ab: Vec<f64> = ts
            .iter()
            .map(|&t| 1.0 / (1.0 + self.sigma(t).powi(2)))
            .collect();
        let ab = Tensor::from_slice(&ab).reshape([-1, 1, 1, 1]);
        let x = x_t.to_kind(Kind::Double);
        let eps =
            (1.0f64 - &ab).sqrt() * (x - ab.sqrt() * self.mu) / (&ab * self.s2 + (1.0f64 - &ab));
        Ok(eps.to_kind(x_t.kind()))
    }
    fn num_classes(&self) -> Option<i64> {
        None
    }
}

fn linear() -> Schedule {
    Schedule::new(ScheduleKind::Linear, 1000, Device::Cpu).unwrap()
}

const TRAILING: SigmaSpacing = SigmaSpacing::Timesteps {
    spacing: Spacing::Trailing,
};

#[test]
fn ddim_with_eta_zero_is_euler_on_the_same_grid() {
    let _g = serial();
    let s = linear();
    let model = Gaussian::new(&s, 0.3, 0.25);
    for prediction in [Prediction::Epsilon, Prediction::Velocity] {
        let pipe = Pipeline::new(&model, &s, prediction);
        tch::manual_seed(0);
        let x_big_t = Tensor::randn([64, 1, 4, 4], (Kind::Float, Device::Cpu));
        for (steps, spacing, clip) in [
            (10, Spacing::Trailing, false),
            (50, Spacing::Leading, true),
            (7, Spacing::Linspace, false),
        ] {
            let ddim = Sampler::Ddim {
                steps,
                eta: 0.0,
                spacing,
                clip,
            };
            let euler = Sampler::Euler {
                steps,
                sigmas: SigmaSpacing::Timesteps { spacing },
                clip,
            };
            let a = pipe.sample(&ddim, &x_big_t, None).unwrap();
            let b = pipe.sample(&euler, &x_big_t, None).unwrap();
            let d = max_abs(&a, &b);
            println!(
                "{prediction:?} S = {steps} {spacing:?} clip {clip}: max |DDIM − Euler| = {d:.2e}"
            );
            assert!(d <= 1e-5, "DDIM and Euler differ by {d}");
            // The tolerance is tight: Euler on a grid half as long is far off.
            let other = Sampler::Euler {
                steps: steps / 2,
                sigmas: SigmaSpacing::Timesteps { spacing },
                clip,
            };
            let far = max_abs(&a, &pipe.sample(&other, &x_big_t, None).unwrap());
            assert!(far > 1e-3, "{far}");
        }
    }
}

/// The exact flow of N(μ, s²) data: in x̃ = x_t/√ᾱ the ODE is linear,
/// x̃(σ) − μ ∝ √(s² + σ²). Every solver ends with the same first-order step
/// from the smallest σ_min > 0 to 0, x̃ ← D(x̃; σ_min) = μ + (x̃ − μ) s²/(s² + σ_min²),
/// so the exact answer to compare with is the flow to σ_min followed by
/// that step: x_0 = μ + (x̃_0 − μ) s²/√((s² + σ_min²)(s² + σ_0²)).
fn exact_x0(x_big_t: &Tensor, sigma0: f64, sigma_min: f64, mu: f64, s2: f64) -> Tensor {
    let x_tilde = x_big_t.to_kind(Kind::Double) * (1.0 + sigma0 * sigma0).sqrt();
    (x_tilde - mu) * (s2 / ((s2 + sigma_min * sigma_min) * (s2 + sigma0 * sigma0)).sqrt()) + mu
}

#[test]
fn solvers_converge_to_the_exact_flow_at_their_order() {
    let _g = serial();
    let s = linear();
    let (mu, s2) = (0.2, 0.09);
    let model = Gaussian::new(&s, mu, s2);
    let pipe = Pipeline::new(&model, &s, Prediction::Epsilon);
    tch::manual_seed(1);
    let x_big_t = Tensor::randn([256, 1, 2, 2], (Kind::Float, Device::Cpu));
    let karras = SigmaSpacing::Karras { rho: 7.0 };
    let want = exact_x0(&x_big_t, sigma_at(&s, 999), sigma_at(&s, 0), mu, s2);
    let err = |sampler: Sampler| {
        let got = pipe
            .sample(&sampler, &x_big_t, None)
            .unwrap()
            .to_kind(Kind::Double);
        (got - &want).abs().max().double_value(&[])
    };
    let mut rows = BTreeMap::new();
    for steps in [16usize, 32, 64] {
        let e = err(Sampler::Euler {
            steps,
            sigmas: karras,
            clip: false,
        });
        let h = err(Sampler::Heun {
            steps,
            sigmas: karras,
            clip: false,
        });
        let d = err(Sampler::DpmSolverPp {
            steps,
            sigmas: karras,
            clip: false,
        });
        println!("S = {steps:2}: Euler {e:.2e}  Heun {h:.2e}  DPM-Solver++(2M) {d:.2e}");
        rows.insert(steps, (e, h, d));
    }
    // Doubling S: first order halves the error, second order quarters it.
    for (a, b) in [(16, 32), (32, 64)] {
        let (ea, ha, da) = rows[&a];
        let (eb, hb, db) = rows[&b];
        let (oe, oh, od) = ((ea / eb).log2(), (ha / hb).log2(), (da / db).log2());
        println!("order from S = {a} to {b}: Euler {oe:.2}, Heun {oh:.2}, DPM-Solver++ {od:.2}");
        assert!((0.7..1.4).contains(&oe), "Euler's order {oe}");
        assert!(oh > 1.6, "Heun's order {oh}");
        assert!(od > 1.6, "DPM-Solver++(2M)'s order {od}");
    }
    // At (about) equal evaluations, 64: Euler-64, Heun-32 (63), DPM-Solver++-64.
    let ((e, _, d), (_, h, _)) = (rows[&64], rows[&32]);
    assert!(
        h < e / 2.0 && d < e / 5.0,
        "second order beats Euler: {e} {h} {d}"
    );
    let d = rows[&32].2;
    // A broken update is caught: DPM-Solver++ with 1/r for 1/(2r) stays first order at best.
    let sig = Sigmas::new(&s, 32, karras).unwrap();
    let mut x = &x_big_t * (sig.sigma[0].powi(2) + 1.0).sqrt();
    let mut prev: Option<(f64, Tensor)> = None;
    for i in 0..32 {
        let (sg, sn) = (sig.sigma[i], sig.sigma[i + 1]);
        let t = Tensor::full([256], sig.t[i], (Kind::Float, Device::Cpu));
        let eps = model
            .predict(&(&x / (sg * sg + 1.0).sqrt()), &t, None, false)
            .unwrap();
        let dd = &x - eps * sg;
        let last = prev.as_ref().map(|(h, d)| (h * 0.5, d)); // halving h_prev doubles 1/(2r)
        x = dpm_solver_pp_2m_update(&x, &dd, sg, sn, last);
        prev = Some(((sg / sn).ln(), dd));
    }
    let broken = (x.to_kind(Kind::Double) - &want)
        .abs()
        .max()
        .double_value(&[]);
    println!("DPM-Solver++ with 1/r in place of 1/(2r), S = 32: {broken:.2e} (correct: {d:.2e})");
    assert!(broken > 5.0 * d, "{broken} vs {d}");
}

#[test]
fn sigma_lists_are_well_formed() {
    let s = linear();
    for spacing in [
        TRAILING,
        SigmaSpacing::Karras { rho: 7.0 },
        SigmaSpacing::Karras { rho: 1.0 },
    ] {
        for steps in [2usize, 5, 50, 1000] {
            let sig = Sigmas::new(&s, steps, spacing).unwrap();
            assert_eq!(sig.sigma.len(), steps + 1);
            assert_eq!(sig.sigma[steps], 0.0);
            assert!(
                sig.sigma.windows(2).all(|w| w[0] > w[1]),
                "{spacing:?} {steps}"
            );
            assert!(sig.t.iter().all(|&t| (0.0..=999.0).contains(&t)));
            assert!((sig.sigma[0] - sigma_at(&s, 999)).abs() < 1e-9);
            // The model time reproduces σ: log-linear between training steps.
            let g = Gaussian::new(&s, 0.0, 1.0);
            for (sg, t) in sig.sigma.iter().zip(&sig.t) {
                assert!((g.sigma(*t) / sg - 1.0).abs() < 1e-9, "σ {sg} at t {t}");
            }
        }
    }
    for bad in [
        SigmaSpacing::Karras { rho: 0.0 },
        SigmaSpacing::Karras { rho: f64::NAN },
    ] {
        assert!(Sigmas::new(&s, 10, bad).is_err());
    }
    assert!(Sigmas::new(&s, 1, SigmaSpacing::Karras { rho: 7.0 }).is_err());
    let heun = Sampler::Heun {
        steps: 10,
        sigmas: TRAILING,
        clip: true,
    };
    assert_eq!(heun.check(&s).unwrap(), 19);
    let karras = Sampler::DpmSolverPp {
        steps: 10,
        sigmas: SigmaSpacing::Karras { rho: 7.0 },
        clip: true,
    };
    assert!(
        karras.grid(1000).is_err(),
        "Karras σs are not a timestep grid"
    );
}

/// One sampler run for diffusers to replay: every evaluation's input, output
/// and our next point.
fn record(pipe: &Pipeline, sampler: &Sampler, x_big_t: &Tensor, y: &Tensor) -> Vec<StepRecord> {
    let mut rec = Vec::new();
    let _ = pipe
        .sample_observed(sampler, x_big_t, Some(y), &mut |r| {
            rec.push(r.shallow_clone())
        })
        .unwrap();
    rec
}

#[test]
fn diffusers_replays_heun_and_dpm_solver_step_by_step() {
    let _g = serial();
    let loaded = formats::pretrained::fashion_cfg(Device::Cpu).unwrap();
    let s = Schedule::new(loaded.config.schedule, loaded.config.timesteps, Device::Cpu).unwrap();
    tch::manual_seed(3);
    let x_big_t = Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 3, 7, 9]);
    let karras = SigmaSpacing::Karras { rho: 7.0 };
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut cases = Vec::new();
    let mut add = |name: &str,
                   solver: &str,
                   sampler: Sampler,
                   prediction: Prediction,
                   rec: &[StepRecord],
                   expect: &str| {
        let (steps, sigmas, clip) = match sampler {
            Sampler::Heun {
                steps,
                sigmas,
                clip,
            }
            | Sampler::DpmSolverPp {
                steps,
                sigmas,
                clip,
            } => (steps, sigmas, clip),
            _ => unreachable!(),
        };
        let sig = Sigmas::new(&s, steps, sigmas).unwrap();
        let stack = |f: &dyn Fn(&StepRecord) -> &Tensor| {
            Tensor::stack(&rec.iter().map(f).collect::<Vec<_>>(), 0)
        };
        tensors.push((format!("{name}/sigmas"), Tensor::from_slice(&sig.sigma)));
        tensors.push((format!("{name}/x_in"), stack(&|r| &r.x_t)));
        tensors.push((format!("{name}/out"), stack(&|r| &r.out)));
        tensors.push((format!("{name}/x_after"), stack(&|r| &r.x_prev)));
        cases.push(serde_json::json!({
            "name": name, "solver": solver, "steps": steps, "clip": clip, "expect": expect,
            "karras": matches!(sigmas, SigmaSpacing::Karras { .. }),
            "prediction": match prediction { Prediction::Velocity => "v_prediction", _ => "epsilon" },
        }));
    };
    for prediction in [Prediction::Epsilon, Prediction::Velocity] {
        // The same network read as a v-predictor: the update rules do not care what it learned.
        let pipe = Pipeline::new(&*loaded.model, &s, prediction);
        let p = if prediction == Prediction::Velocity {
            "v"
        } else {
            "eps"
        };
        for (steps, sigmas, tag) in [(10, TRAILING, "trailing"), (12, karras, "karras")] {
            for clip in [false, true] {
                let heun = Sampler::Heun {
                    steps,
                    sigmas,
                    clip,
                };
                let rec = record(&pipe, &heun, &x_big_t, &y);
                assert_eq!(rec.len(), 2 * steps - 1);
                add(
                    &format!("heun-{tag}-{p}-clip{clip}"),
                    "heun",
                    heun.clone(),
                    prediction,
                    &rec,
                    "match",
                );
                if clip && prediction == Prediction::Epsilon && tag == "trailing" {
                    // Heun without its correction (weights 1, 0): must be caught.
                    let broken: Vec<StepRecord> = rec
                        .iter()
                        .enumerate()
                        .map(|(k, r)| {
                            let mut b = r.shallow_clone();
                            if k % 2 == 1 {
                                b.x_prev = r.x_t.shallow_clone();
                            }
                            b
                        })
                        .collect();
                    add("heun-broken", "heun", heun, prediction, &broken, "differ");
                }
            }
            let dpm = Sampler::DpmSolverPp {
                steps,
                sigmas,
                clip: false,
            };
            let rec = record(&pipe, &dpm, &x_big_t, &y);
            assert_eq!(rec.len(), steps);
            add(
                &format!("dpm-{tag}-{p}"),
                "dpm",
                dpm.clone(),
                prediction,
                &rec,
                "match",
            );
            if prediction == Prediction::Epsilon && tag == "trailing" {
                // 1/r where 1/(2r) belongs, recomputed from the same outputs: must be caught.
                let sig = Sigmas::new(&s, steps, sigmas).unwrap();
                let ve = |x: &Tensor, sg: f64| x * (sg * sg + 1.0).sqrt();
                let broken: Vec<StepRecord> = rec
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let mut b = r.shallow_clone();
                        if i >= 1 {
                            let h_prev = (sig.sigma[i - 1] / sig.sigma[i]).ln() * 0.5;
                            let x = dpm_solver_pp_2m_update(
                                &ve(&r.x_t, sig.sigma[i]),
                                &r.x0,
                                sig.sigma[i],
                                sig.sigma[i + 1],
                                Some((h_prev, &rec[i - 1].x0)),
                            );
                            b.x_prev = &x / (sig.sigma[i + 1].powi(2) + 1.0).sqrt();
                        }
                        b
                    })
                    .collect();
                add("dpm-broken", "dpm", dpm, prediction, &broken, "differ");
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("scheduler-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("runs.safetensors");
    Tensor::write_safetensors(&tensors, &file).unwrap();
    std::fs::write(
        dir.join("cases.json"),
        serde_json::to_string(&cases).unwrap(),
    )
    .unwrap();
    let stdout = util::run_parity_script("schedulers.py", &[&dir]).unwrap();
    print!("{stdout}");
    let report: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(report.len(), cases.len(), "one line per case");
    for r in &report {
        let (name, d, sig) = (
            r["name"].as_str().unwrap(),
            r["max_abs"].as_f64().unwrap(),
            r["sigma_rel"].as_f64().unwrap(),
        );
        // diffusers' ᾱ is a float32 product, in which 1 − ᾱ_0 = 1e-4 keeps
        // about four digits: σ(0) (Karras' σ_min) is off by 8.3e-5 there.
        assert!(
            sig <= 1e-4,
            "{name}: our σs differ from diffusers' by {sig} (relative)"
        );
        match r["expect"].as_str().unwrap() {
            "match" => assert!(d <= 1e-5, "{name}: max |Δ| = {d}"),
            _ => assert!(
                d > 1e-3,
                "{name}: a broken update went unnoticed (max |Δ| = {d})"
            ),
        }
    }
    // The table in "The score and the ODE" (scripts/make-figures.sh ode).
    if let Ok(path) = std::env::var("SCHEDULER_PARITY_MD") {
        let mut md = String::from("| run | diffusers scheduler | network evaluations | largest \\|Δ\\| of the next point | expected |\n|---|---|---:|---:|---|\n");
        for r in &report {
            let name = r["name"].as_str().unwrap();
            let scheduler = if name.starts_with("heun") {
                "HeunDiscreteScheduler"
            } else {
                "DPMSolverMultistepScheduler"
            };
            let expect = if r["expect"] == "match" {
                "≤ 1e-5"
            } else {
                "> 1e-3 (a broken update)"
            };
            md.push_str(&format!(
                "| `{name}` | {scheduler} | {} | {:.1e} | {expect} |\n",
                r["evaluations"],
                r["max_abs"].as_f64().unwrap()
            ));
        }
        std::fs::write(path, md).unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}
