//! The forward process against its f64 oracle, closed-form statistics and
//! clear errors.
mod oracle;

use forward::{ForwardError, Schedule, ScheduleKind};
use ndarray::{Array1, ArrayD};
use tch::{Device, Kind, Tensor};

const STEPS: [usize; 3] = [10, 300, 1000];

fn host(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

/// f32 storage: agree to 1e-6 absolute, or 1e-6 relative for values above 1
/// (1/√ᾱ and the SNR reach 10⁴ and more; f32 keeps ~7 significant digits).
fn assert_close(name: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-6 * w.abs().max(1.0);
        assert!(
            // `==` lets the infinite 1/√ᾱ_{T−1} of a zero-terminal-SNR schedule agree.
            g == w || (g - w).abs() <= tol,
            "{name}[{i}]: tch {g} vs oracle {w} (tol {tol})"
        );
    }
}

/// Every stored column of the schedule, recomputed from the oracle's β by
/// plain loops in f64.
fn oracle_columns(b: &Array1<f64>) -> Vec<(&'static str, Vec<f64>)> {
    let ab = oracle::alpha_bar(b);
    let n = b.len();
    let prev: Vec<f64> = (0..n)
        .map(|t| if t == 0 { 1.0 } else { ab[t - 1] })
        .collect();
    let post_var: Vec<f64> = (0..n)
        .map(|t| b[t] * (1.0 - prev[t]) / (1.0 - ab[t]))
        .collect();
    vec![
        ("betas", b.to_vec()),
        ("alphas", b.iter().map(|x| 1.0 - x).collect()),
        ("alpha_bar", ab.to_vec()),
        ("alpha_bar_prev", prev.clone()),
        ("sqrt_alpha_bar", ab.iter().map(|a| a.sqrt()).collect()),
        (
            "sqrt_one_minus_alpha_bar",
            ab.iter().map(|a| (1.0 - a).sqrt()).collect(),
        ),
        (
            "sqrt_recip_alpha_bar",
            ab.iter().map(|a| 1.0 / a.sqrt()).collect(),
        ),
        (
            "sqrt_recipm1_alpha_bar",
            ab.iter().map(|a| (1.0 / a - 1.0).sqrt()).collect(),
        ),
        ("posterior_variance", post_var.clone()),
        (
            "posterior_log_variance_clipped",
            (0..n).map(|t| post_var[t.max(1)].ln()).collect(),
        ),
        (
            "posterior_mean_coef1",
            (0..n)
                .map(|t| b[t] * prev[t].sqrt() / (1.0 - ab[t]))
                .collect(),
        ),
        (
            "posterior_mean_coef2",
            (0..n)
                .map(|t| (1.0 - prev[t]) * (1.0 - b[t]).sqrt() / (1.0 - ab[t]))
                .collect(),
        ),
        ("snr", ab.iter().map(|a| a / (1.0 - a)).collect()),
    ]
}

fn columns(s: &Schedule) -> Vec<(&'static str, &Tensor)> {
    vec![
        ("betas", &s.betas),
        ("alphas", &s.alphas),
        ("alpha_bar", &s.alpha_bar),
        ("alpha_bar_prev", &s.alpha_bar_prev),
        ("sqrt_alpha_bar", &s.sqrt_alpha_bar),
        ("sqrt_one_minus_alpha_bar", &s.sqrt_one_minus_alpha_bar),
        ("sqrt_recip_alpha_bar", &s.sqrt_recip_alpha_bar),
        ("sqrt_recipm1_alpha_bar", &s.sqrt_recipm1_alpha_bar),
        ("posterior_variance", &s.posterior_variance),
        (
            "posterior_log_variance_clipped",
            &s.posterior_log_variance_clipped,
        ),
        ("posterior_mean_coef1", &s.posterior_mean_coef1),
        ("posterior_mean_coef2", &s.posterior_mean_coef2),
        ("snr", &s.snr),
    ]
}

#[test]
fn schedules_match_the_f64_oracle() {
    for kind in ScheduleKind::ALL {
        for steps in STEPS {
            let tch_side = Schedule::new(kind, steps, Device::Cpu);
            let oracle_side = oracle::betas(kind, steps);
            match (tch_side, oracle_side) {
                (Ok(s), Ok(b)) => {
                    let want = oracle_columns(&b);
                    let got = columns(&s);
                    assert_eq!(got.len(), want.len());
                    for ((name, t), (wname, w)) in got.iter().zip(&want) {
                        assert_eq!(name, wname);
                        assert_eq!(t.kind(), Kind::Float, "{name} is stored as f32");
                        assert_close(&format!("{} T={steps} {name}", kind.name()), &host(t), w);
                    }
                    // Host copies are the f64 values before rounding to f32.
                    assert_close("alpha_bar_host", &s.alpha_bar_host, &want[2].1);
                }
                // seed_linear at T = 10 would need β up to 3.0: both sides refuse.
                (Err(e1), Err(e2)) => {
                    assert_eq!((kind, steps), (ScheduleKind::SeedLinear, 10));
                    assert_eq!(e1, e2);
                    assert!(e1.to_string().contains("≥ 1"), "{e1}");
                }
                (a, b) => panic!(
                    "{} T={steps}: tch {:?} vs oracle {:?}",
                    kind.name(),
                    a.err(),
                    b.err()
                ),
            }
        }
    }
}

/// ᾱ at the last step for each valid (schedule, T), and whether it is ≈ 0.
/// The tolerance 1e-4 keeps the signal at the last step below 1% (√ᾱ ≤ 0.01).
const ALPHA_BAR_END_TOL: f64 = 1e-4;

#[test]
fn schedules_are_monotone_and_end_near_zero() {
    let mut record = Vec::new();
    for kind in ScheduleKind::ALL {
        for steps in STEPS {
            let Ok(b) = oracle::betas(kind, steps) else {
                continue;
            };
            let s = Schedule::new(kind, steps, Device::Cpu).unwrap();
            let beta = host(&s.betas);
            assert!(
                beta.iter().all(|&x| x > 0.0 && x < 1.0),
                "{} T={steps}: β outside (0, 1)",
                kind.name()
            );
            let ab = &s.alpha_bar_host;
            assert!(
                ab.windows(2).all(|w| w[1] < w[0]),
                "{} T={steps}: ᾱ not strictly decreasing",
                kind.name()
            );
            let end = *ab.last().unwrap();
            record.push(format!("{:>13} T={steps:<4} ᾱ_T = {end:.3e}", kind.name()));
            // The linear schedule was designed for T = 1000: with fewer steps its
            // Σβ is too small and ᾱ_T stays far from 0. That is why the scaled and
            // cosine schedules exist; the test pins both facts down.
            if kind == ScheduleKind::Linear && steps < 1000 {
                assert!(end > 0.01, "linear T={steps}: ᾱ_T = {end}");
            } else if kind == ScheduleKind::ScaledLinear {
                // Stable Diffusion's schedule never gets there: ᾱ_T = 0.0047 at
                // T = 1000, the flaw that zero terminal SNR fixes.
                assert!(end > 4e-3, "sd_scaled_linear T={steps}: ᾱ_T = {end}");
            } else {
                assert!(
                    end < ALPHA_BAR_END_TOL,
                    "{} T={steps}: ᾱ_T = {end:e}",
                    kind.name()
                );
            }
            let _ = b;
        }
    }
    println!("{}", record.join("\n"));
}

#[test]
fn q_sample_has_the_closed_form_mean_and_variance() {
    // n draws of x_t for one fixed x_0 and t. For each pixel the sample mean
    // has standard error σ/√n with σ² = 1 − ᾱ_t, and the sample variance s²
    // has standard deviation σ²·√(2/(n−1)) (Gaussian data). We allow 5 of
    // each: a false alarm per pixel has probability < 1e-6.
    tch::manual_seed(7);
    let n = 20_000i64;
    let x0_vals = [-1.0f32, -0.25, 0.5, 1.0];
    for kind in ScheduleKind::ALL {
        let s = Schedule::new(kind, 1000, Device::Cpu).unwrap();
        for step in [0i64, 100, 500, 999] {
            let x0 = Tensor::from_slice(&x0_vals)
                .reshape([1, 1, 2, 2])
                .expand([n, 1, 2, 2], false)
                .contiguous();
            let noise = Tensor::randn([n, 1, 2, 2], (Kind::Float, Device::Cpu));
            let t = s.timestep(step, n).unwrap();
            let xt = s.q_sample(&x0, &t, &noise).unwrap().to_kind(Kind::Double);
            let mean = host(&xt.mean_dim(0, false, Kind::Double));
            let var = host(&xt.var_dim(0, true, false));
            let ab = s.alpha_bar_host[step as usize];
            let sigma2 = 1.0 - ab;
            for (i, &x) in x0_vals.iter().enumerate() {
                let (want_mean, tol_mean) =
                    (ab.sqrt() * x as f64, 5.0 * (sigma2 / n as f64).sqrt());
                let tol_var = 5.0 * sigma2 * (2.0 / (n as f64 - 1.0)).sqrt();
                assert!(
                    (mean[i] - want_mean).abs() < tol_mean,
                    "{} t={step}: mean {} vs {want_mean}",
                    kind.name(),
                    mean[i]
                );
                assert!(
                    (var[i] - sigma2).abs() < tol_var,
                    "{} t={step}: var {} vs {sigma2}",
                    kind.name(),
                    var[i]
                );
            }
        }
    }
}

#[test]
fn q_posterior_equals_bayes_rule_in_the_oracle() {
    tch::manual_seed(11);
    for kind in [ScheduleKind::Linear, ScheduleKind::Cosine] {
        let steps = 300;
        let s = Schedule::new(kind, steps, Device::Cpu).unwrap();
        let b = oracle::betas(kind, steps).unwrap();
        let ts = [0i64, 1, 2, 37, 150, 298, 299];
        let n = ts.len() as i64;
        let x0 = Tensor::rand([n, 1, 3, 3], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let xt = Tensor::randn([n, 1, 3, 3], (Kind::Float, Device::Cpu));
        let t = s.timesteps(&Tensor::from_slice(&ts)).unwrap();
        let post = s.q_posterior(&x0, &xt, &t).unwrap();
        for (i, &step) in ts.iter().enumerate() {
            let row = |x: &Tensor| ArrayD::from_shape_vec(vec![9], host(&x.get(i as i64))).unwrap();
            let (mean, var) = oracle::posterior(&b, &row(&x0), &row(&xt), step as usize);
            let got_mean = host(&post.mean.get(i as i64));
            for (g, w) in got_mean.iter().zip(mean.iter()) {
                assert!(
                    (g - w).abs() < 1e-5,
                    "{} t={step}: mean {g} vs {w}",
                    kind.name()
                );
            }
            let got_var = host(&post.variance.get(i as i64))[0];
            assert!(
                (got_var - var).abs() <= 1e-6 * var.max(1e-3),
                "{} t={step}: var {got_var} vs {var}",
                kind.name()
            );
            if step > 0 {
                let got_log = host(&post.log_variance.get(i as i64))[0];
                assert!(
                    (got_log - var.ln()).abs() < 1e-5,
                    "t={step}: log-var {got_log} vs {}",
                    var.ln()
                );
            }
        }
    }
}

#[test]
fn bad_timesteps_and_shapes_get_clear_errors() {
    let s = Schedule::new(ScheduleKind::Linear, 1000, Device::Cpu).unwrap();
    let err = s.timesteps(&Tensor::from_slice(&[3i64, 1000])).unwrap_err();
    assert_eq!(
        err,
        ForwardError::TimestepOutOfRange {
            t: 1000,
            steps: 1000
        }
    );
    assert_eq!(
        err.to_string(),
        "timestep 1000 is out of range: valid timesteps are 0..=999 (T = 1000)"
    );
    let err = s.timesteps(&Tensor::from_slice(&[-1i64, 5])).unwrap_err();
    assert_eq!(err, ForwardError::TimestepOutOfRange { t: -1, steps: 1000 });
    assert!(matches!(
        s.timesteps(&Tensor::from_slice(&[3i32])),
        Err(ForwardError::TimestepKind {
            kind: Kind::Int,
            ..
        })
    ));
    assert!(matches!(
        s.timesteps(&Tensor::from_slice(&[3.0f32])),
        Err(ForwardError::TimestepKind { .. })
    ));
    assert!(matches!(
        s.timesteps(&Tensor::zeros([2, 2], (Kind::Int64, Device::Cpu))),
        Err(ForwardError::TimestepKind { .. })
    ));

    let x0 = Tensor::zeros([2, 1, 4, 4], (Kind::Float, Device::Cpu));
    let t = s.timestep(5, 2).unwrap();
    // Noise of a broadcastable but different shape must not be silently broadcast.
    let err = s
        .q_sample(
            &x0,
            &t,
            &Tensor::zeros([1, 1, 4, 4], (Kind::Float, Device::Cpu)),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("noise: expected shape [2, 1, 4, 4], got [1, 1, 4, 4]"),
        "{err}"
    );
    let err = s
        .q_sample(&x0, &s.timestep(5, 3).unwrap(), &x0)
        .unwrap_err();
    assert!(matches!(err, ForwardError::ShapeMismatch { .. }), "{err}");
    let err = s.q_sample(&x0.to_kind(Kind::Uint8), &t, &x0).unwrap_err();
    assert!(matches!(err, ForwardError::NotFloat { .. }), "{err}");
    assert!("sigmoid"
        .parse::<ScheduleKind>()
        .unwrap_err()
        .to_string()
        .contains("use linear, seed_linear, cosine or sd_scaled_linear"));
    assert!(Schedule::new(ScheduleKind::Linear, 1, Device::Cpu).is_err());
}

#[test]
fn q_sample_at_matching_timesteps_is_per_sample() {
    // Each sample uses its own t: sample i equals a batch-of-one call at t_i.
    tch::manual_seed(5);
    let s = Schedule::new(ScheduleKind::Cosine, 1000, Device::Cpu).unwrap();
    let x0 = Tensor::randn([3, 1, 2, 2], (Kind::Float, Device::Cpu));
    let eps = Tensor::randn([3, 1, 2, 2], (Kind::Float, Device::Cpu));
    let ts = [0i64, 499, 999];
    let batched = s
        .q_sample(&x0, &s.timesteps(&Tensor::from_slice(&ts)).unwrap(), &eps)
        .unwrap();
    for (i, &step) in ts.iter().enumerate() {
        let i = i as i64;
        let one = s
            .q_sample(
                &x0.narrow(0, i, 1),
                &s.timestep(step, 1).unwrap(),
                &eps.narrow(0, i, 1),
            )
            .unwrap();
        assert!(one.equal(&batched.narrow(0, i, 1)), "sample {i}");
    }
}

/// Rescaled to zero terminal SNR, every column of the schedule matches the
/// oracle's loops over Lin et al.'s Algorithm 1; ᾱ keeps its first value and
/// ends at exactly 0. A rescale that shifts ᾱ instead of √ᾱ is rejected.
#[test]
fn zero_terminal_snr_matches_the_oracle_and_ends_at_zero() {
    for kind in ScheduleKind::ALL {
        for steps in [300, 1000] {
            let b = oracle::betas(kind, steps).unwrap();
            let want_b = oracle::rescale_zero_terminal_snr(&b);
            let s = Schedule::with_terminal_snr(kind, steps, true, Device::Cpu).unwrap();
            assert!(s.zero_terminal_snr);
            let name = format!("{} T={steps} rescaled", kind.name());
            for ((n, got), (_, want)) in columns(&s).iter().zip(&oracle_columns(&want_b)) {
                assert_close(&format!("{name} {n}"), &host(got), want);
            }
            let (ab, ab0) = (&s.alpha_bar_host, oracle::alpha_bar(&b));
            assert_eq!(ab[steps - 1], 0.0, "{name}: ᾱ_T−1");
            assert_eq!(s.betas_host[steps - 1], 1.0, "{name}: β_T−1");
            assert!((ab[0] - ab0[0]).abs() < 1e-12, "{name}: ᾱ_0 moved");
            assert!(
                ab.windows(2).all(|w| w[1] < w[0]),
                "{name}: ᾱ not decreasing"
            );

            // The wrong rescale: ᾱ itself shifted and stretched, not √ᾱ. Where
            // ᾱ_{T−1} is already near 0 the two barely move ᾱ, so this is
            // checked where the rescale matters.
            let (first, last) = (ab0[0], ab0[steps - 1]);
            if last < 1e-3 {
                continue;
            }
            let wrong: Vec<f64> = ab0
                .iter()
                .map(|a| (a - last) * first / (first - last))
                .collect();
            let worst = wrong
                .iter()
                .zip(ab)
                .map(|(w, g)| (w - g).abs())
                .fold(0.0, f64::max);
            assert!(
                worst > 1e-3,
                "{name}: the ᾱ-shift is not told apart ({worst:e})"
            );
        }
    }
}

/// At ᾱ_{T−1} = 0 the noised image is the noise itself, so an ε target carries
/// nothing about x_0 and x̂_0 = (x_t − ε̂)/√ᾱ is 0/0; v = −x_0 there, and v
/// reads back x_0 exactly.
#[test]
fn zero_terminal_snr_breaks_eps_but_not_v() {
    let s = Schedule::with_terminal_snr(ScheduleKind::Linear, 1000, true, Device::Cpu).unwrap();
    tch::manual_seed(3);
    let x0 = Tensor::rand([4, 1, 5, 5], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let eps = Tensor::randn([4, 1, 5, 5], (Kind::Float, Device::Cpu));
    let last = s.timestep(999, 4).unwrap();
    let x_t = s.q_sample(&x0, &last, &eps).unwrap();
    assert!(x_t.equal(&eps), "x_T−1 is exactly the noise");

    let x0_from_eps = forward::predict_x0_from_eps(&s, &x_t, &last, &eps);
    let finite = x0_from_eps.isfinite().all().int64_value(&[]);
    assert_eq!(finite, 0, "ε-prediction gives a finite x̂_0 at zero SNR");

    let v = forward::target(forward::Prediction::Velocity, &s, &x0, &eps, &last);
    assert!(v.equal(&-&x0), "v = −x_0 at zero SNR");
    let (x0_hat, eps_hat) = forward::x0_and_eps(&s, forward::Prediction::Velocity, &x_t, &last, &v);
    assert!(x0_hat.equal(&x0) && eps_hat.equal(&eps));

    // One step earlier the signal is small but there: ε still reads back.
    let t = s.timestep(990, 4).unwrap();
    let x_t = s.q_sample(&x0, &t, &eps).unwrap();
    let x0_hat = forward::predict_x0_from_eps(&s, &x_t, &t, &eps);
    assert!(x0_hat.allclose(&x0, 1e-2, 1e-2, false));
}
