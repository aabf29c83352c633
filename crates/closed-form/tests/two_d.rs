//! The 2-D chapter's closed forms against numerics, and the book's sampler,
//! driven by the exact noise prediction, against the data density.
use closed_form::two_d::{Mixture, MixtureEps};
use forward::{Prediction, Schedule, ScheduleKind};
use network::NoisePredictor;
use reverse::{Pipeline, Sampler, Variance};
use tch::{Device, Kind, Tensor};

#[test]
fn exact_eps_is_minus_sqrt_one_minus_alpha_bar_times_the_score() {
    // ε* = −√(1 − ᾱ_t) ∇ log p_t: against central differences of log p_t,
    // for the mixture and for one class. A mixture with another spread fails.
    let mix = Mixture::ring(6, 0.8, 0.1);
    let wrong = Mixture::ring(6, 0.8, 0.15);
    let s = Schedule::new(ScheduleKind::Linear, 1000, Device::Cpu).unwrap();
    let pts = [[0.3, -0.2], [0.75, 0.05], [-0.1, 0.9], [1.4, -1.1]];
    for t in [5i64, 100, 400, 999] {
        let ab = s.alpha_bar_host[t as usize];
        for y in [None, Some(2usize)] {
            let x = Tensor::from_slice(&pts.concat())
                .view([4, 2, 1, 1])
                .to_kind(Kind::Double);
            let tt = Tensor::full([4], t, (Kind::Int64, Device::Cpu));
            let yt = y.map(|k| Tensor::full([4], k as i64, (Kind::Int64, Device::Cpu)));
            let eps = |m: &Mixture| {
                let e = MixtureEps {
                    mixture: m,
                    alpha_bar: &s.alpha_bar,
                };
                Vec::<f64>::try_from(e.predict(&x, &tt, yt.as_ref(), false).unwrap().view([8]))
                    .unwrap()
            };
            let (got, bad) = (eps(&mix), eps(&wrong));
            let h = 1e-5;
            for (i, p) in pts.iter().enumerate() {
                for d in 0..2 {
                    let (mut a, mut b) = (*p, *p);
                    a[d] += h;
                    b[d] -= h;
                    let grad =
                        (mix.density(a, ab, y).ln() - mix.density(b, ab, y).ln()) / (2.0 * h);
                    let want = -(1.0 - ab).sqrt() * grad;
                    let tol = 1e-5 * (1.0 + want.abs());
                    assert!(
                        (got[2 * i + d] - want).abs() < tol,
                        "t={t} y={y:?} point {p:?}: {} vs {want}",
                        got[2 * i + d]
                    );
                    if t <= 100 && want.abs() > 0.05 {
                        assert!(
                            (bad[2 * i + d] - want).abs() > 1e3 * tol,
                            "t={t}: the wrong spread passed"
                        );
                    }
                }
            }
        }
    }
}

/// DDPM-1000 with the exact ε of `model` from x_T ~ N(0, I): n points.
fn sample(model: &Mixture, s: &Schedule, n: i64, y: Option<&Tensor>) -> Vec<[f64; 2]> {
    let exact = MixtureEps {
        mixture: model,
        alpha_bar: &s.alpha_bar,
    };
    let pipe = Pipeline::new(&exact, s, Prediction::Epsilon);
    let ddpm = Sampler::Ddpm {
        variance: Variance::FixedSmall,
        clip: false,
    };
    let x = pipe
        .sample(
            &ddpm,
            &Tensor::randn([n, 2, 1, 1], (Kind::Float, Device::Cpu)),
            y,
        )
        .unwrap();
    let v = Vec::<f64>::try_from(x.view([2 * n]).to_kind(Kind::Double)).unwrap();
    v.chunks(2).map(|c| [c[0], c[1]]).collect()
}

/// The largest deviation, in standard errors, of the samples from the
/// mixture: each component's share (binomial), its mean, and its variance
/// per axis (a variance of n Gaussian draws has standard error s²√(2/(n−1))).
fn worst_z(mix: &Mixture, xs: &[[f64; 2]]) -> f64 {
    let k = mix.means.len();
    let mut groups = vec![Vec::new(); k];
    for p in xs {
        let d = |m: &[f64; 2]| (p[0] - m[0]).powi(2) + (p[1] - m[1]).powi(2);
        let j = (0..k)
            .min_by(|&a, &b| d(&mix.means[a]).total_cmp(&d(&mix.means[b])))
            .unwrap();
        groups[j].push(*p);
    }
    let n = xs.len() as f64;
    let s2 = mix.std * mix.std;
    let mut worst: f64 = 0.0;
    for (j, g) in groups.iter().enumerate() {
        let m = g.len() as f64;
        let p = 1.0 / k as f64;
        worst = worst.max((m / n - p).abs() / (p * (1.0 - p) / n).sqrt());
        for d in 0..2 {
            let mean = g.iter().map(|p| p[d]).sum::<f64>() / m;
            let var = g.iter().map(|p| (p[d] - mean).powi(2)).sum::<f64>() / (m - 1.0);
            worst = worst.max((mean - mix.means[j][d]).abs() / (s2 / m).sqrt());
            worst = worst.max((var - s2).abs() / (s2 * (2.0 / (m - 1.0)).sqrt()));
        }
    }
    worst
}

#[test]
fn ddpm_with_the_exact_eps_samples_the_mixture() {
    // 6000 points through the book's own Pipeline. Every share, mean and
    // variance within 4.5 standard errors: the sampler's discretisation bias
    // (T = 1000 Gaussian steps) is below what 1000 points per component can
    // see. Sampling with a mixture of twice the spread must fail, and so must
    // a model of the right spread asked for one class only.
    tch::manual_seed(17);
    let mix = Mixture::ring(6, 0.8, 0.1);
    let s = Schedule::new(ScheduleKind::Linear, 1000, Device::Cpu).unwrap();
    let z = worst_z(&mix, &sample(&mix, &s, 6000, None));
    assert!(
        z < 4.5,
        "the samples are {z:.1} standard errors from the mixture"
    );
    let wide = Mixture::ring(6, 0.8, 0.2);
    let z = worst_z(&mix, &sample(&wide, &s, 6000, None));
    eprintln!("with the ε* of a mixture twice as wide: {z:.1} standard errors");
    assert!(z > 20.0, "samples of twice the spread passed ({z:.1})");
    // One class: every point lands in its component.
    let y = Tensor::full([600], 4, (Kind::Int64, Device::Cpu));
    let xs = sample(&mix, &s, 600, Some(&y));
    let m = mix.means[4];
    let far = xs
        .iter()
        .filter(|p| ((p[0] - m[0]).powi(2) + (p[1] - m[1]).powi(2)).sqrt() > 0.5)
        .count();
    assert_eq!(
        far, 0,
        "{far} of 600 class-4 samples are outside its component"
    );
}
