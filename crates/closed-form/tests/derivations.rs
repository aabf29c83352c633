//! Each computable step of "Where the loss comes from", checked numerically
//! against the book's code. Every check also runs on a deliberately wrong
//! version of its formula and requires that one to fail, so that agreement
//! is not an accident of loose tolerances.
use closed_form::{elbo_weight, gaussian_kl};
use forward::{target, x0_and_eps, Prediction, Schedule, ScheduleKind};
use reverse::{ddim_sigma, ddim_step, Spacing, TimestepGrid};
use tch::{Device, Kind, Tensor};

fn normal_pdf(x: f64, mean: f64, var: f64) -> f64 {
    (-(x - mean).powi(2) / (2.0 * var)).exp() / (2.0 * std::f64::consts::PI * var).sqrt()
}

fn scalar(t: &Tensor) -> f64 {
    t.double_value(&[])
}

/// The product q(x_t | x) q(x | x_0) on a grid of x = x_{t−1} around `centre`
/// (±14 `sd`), normalised numerically: the posterior as Bayes' rule says, by
/// brute force. Returns the grid, the density on it and the grid spacing.
fn bayes_on_a_grid(
    alpha: f64,
    ab_prev: f64,
    x0: f64,
    xt: f64,
    centre: f64,
    sd: f64,
) -> (Vec<f64>, Vec<f64>, f64) {
    let beta = 1.0 - alpha;
    let (lo, hi, n) = (centre - 14.0 * sd, centre + 14.0 * sd, 40_001);
    let h = (hi - lo) / (n - 1) as f64;
    let xs: Vec<f64> = (0..n).map(|i| lo + i as f64 * h).collect();
    // In logs, shifted by the largest: an unlikely (x_t, x_0) pair puts the
    // product far below the smallest f64 (e^−838 for one of the cases below).
    let log_p: Vec<f64> = xs
        .iter()
        .map(|&x| {
            -(xt - alpha.sqrt() * x).powi(2) / (2.0 * beta)
                - (x - ab_prev.sqrt() * x0).powi(2) / (2.0 * (1.0 - ab_prev))
        })
        .collect();
    let top = log_p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let p: Vec<f64> = log_p.iter().map(|l| (l - top).exp()).collect();
    let z: f64 = p.iter().sum::<f64>() * h;
    (xs, p.into_iter().map(|p| p / z).collect(), h)
}

/// The grid density's mean and variance, and its largest distance from the
/// Gaussian N(mean, var), relative to that Gaussian's peak.
fn compare(xs: &[f64], p: &[f64], h: f64, mean: f64, var: f64) -> (f64, f64, f64) {
    let m: f64 = xs.iter().zip(p).map(|(x, p)| x * p).sum::<f64>() * h;
    let v: f64 = xs
        .iter()
        .zip(p)
        .map(|(x, p)| (x - m).powi(2) * p)
        .sum::<f64>()
        * h;
    let peak = normal_pdf(mean, mean, var);
    let err = xs
        .iter()
        .zip(p)
        .map(|(&x, &p)| (p - normal_pdf(x, mean, var)).abs() / peak)
        .fold(0.0, f64::max);
    (m, v, err)
}

#[test]
fn the_posterior_is_the_normalised_bayes_product() {
    // Eqs. (1)–(4): completing the square gives q_posterior's coefficients.
    for kind in ScheduleKind::ALL {
        let s = Schedule::new(kind, 1000, Device::Cpu).unwrap();
        let ab = &s.alpha_bar_host;
        for (t, x0, xt) in [
            (1usize, 0.7, 0.5),
            (10, -0.9, 0.2),
            (300, 0.3, -1.1),
            (999, 1.0, 0.4),
        ] {
            let alpha = 1.0 - s.betas_host[t];
            let x0_t = Tensor::from_slice(&[x0 as f32]).view([1, 1]);
            let xt_t = Tensor::from_slice(&[xt as f32]).view([1, 1]);
            let post = s
                .q_posterior(&x0_t, &xt_t, &s.timestep(t as i64, 1).unwrap())
                .unwrap();
            let (mean, var) = (scalar(&post.mean), scalar(&post.variance));
            let (xs, p, h) = bayes_on_a_grid(alpha, ab[t - 1], x0, xt, mean, var.sqrt());
            let (m, v, err) = compare(&xs, &p, h, mean, var);
            let what = format!("{} t={t}", kind.name());
            assert!(
                (m - mean).abs() <= 1e-5 * (1.0 + mean.abs()),
                "{what}: mean {m} vs {mean}"
            );
            assert!(
                (v - var).abs() <= 1e-5 * var,
                "{what}: variance {v} vs {var}"
            );
            assert!(err < 1e-4, "{what}: density differs by {err} of its peak");
            // The two coefficients swapped: the grid must notice.
            let c1 = s.posterior_mean_coef1.double_value(&[t as i64]);
            let c2 = s.posterior_mean_coef2.double_value(&[t as i64]);
            let swapped = c2 * x0 + c1 * xt;
            if (swapped - mean).abs() > 1e-3 {
                let (_, _, err2) = compare(&xs, &p, h, swapped, var);
                assert!(
                    (m - swapped).abs() > 1e-4 && err2 > 1e-3,
                    "{what}: a wrong mean passed"
                );
            }
        }
    }
}

#[test]
fn the_gaussian_kl_matches_monte_carlo() {
    // Eq. (8) against E_{x~p}[log p(x) − log q(x)] over 400 000 draws, within
    // 4 standard errors of the estimate; a formula without its log term fails.
    tch::manual_seed(7);
    let n = 400_000i64;
    for (m1, v1, m2, v2) in [
        (0.0, 1.0, 0.0, 1.0),
        (0.3, 0.5, -0.2, 1.5),
        (1.0, 2.0, 0.0, 0.25),
        (0.0, 1e-3, 0.01, 2e-3),
    ] {
        let x = Tensor::randn([n], (Kind::Double, Device::Cpu)) * f64::sqrt(v1) + m1;
        let log_ratio = |x: &Tensor, m: f64, v: f64| {
            -(x - m).square() / (2.0 * v) - 0.5 * (2.0 * std::f64::consts::PI * v).ln()
        };
        let d = log_ratio(&x, m1, v1) - log_ratio(&x, m2, v2);
        let (mc, se) = (
            scalar(&d.mean(Kind::Double)),
            scalar(&d.std(true)) / (n as f64).sqrt(),
        );
        let kl = gaussian_kl(m1, v1, m2, v2);
        let what = format!("N({m1}, {v1}) ‖ N({m2}, {v2})");
        assert!(
            (kl - mc).abs() <= 4.0 * se + 1e-12,
            "{what}: {kl} vs MC {mc} ± {se}"
        );
        let no_log = 0.5 * ((v1 + (m1 - m2).powi(2)) / v2 - 1.0);
        if (no_log - kl).abs() > 1e-6 {
            assert!(
                (no_log - mc).abs() > 10.0 * se,
                "{what}: the wrong formula passed"
            );
        }
    }
}

#[test]
fn the_elbo_term_is_lambda_times_the_eps_error() {
    // Eqs. (9)–(11): with the model's mean written through ε_θ, the KL between
    // q(x_{t−1} | x_t, x_0) and p_θ(x_{t−1} | x_t) (same variance β̃_t) is
    // λ_t ‖ε − ε_θ‖², for any ε_θ.
    tch::manual_seed(3);
    let s = Schedule::new(ScheduleKind::Linear, 1000, Device::Cpu).unwrap();
    let d = 64;
    for t in [1i64, 2, 50, 500, 999] {
        let ts = s.timestep(t, 1).unwrap();
        let x0 = Tensor::rand([1, d], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let eps = Tensor::randn([1, d], (Kind::Float, Device::Cpu));
        let eps_theta = &eps + Tensor::randn([1, d], (Kind::Float, Device::Cpu)) * 0.3;
        let xt = s.q_sample(&x0, &ts, &eps).unwrap();
        let (x0_theta, _) = x0_and_eps(&s, Prediction::Epsilon, &xt, &ts, &eps_theta);
        let q = s.q_posterior(&x0, &xt, &ts).unwrap();
        let p = s.q_posterior(&x0_theta, &xt, &ts).unwrap();
        let var = scalar(&q.variance);
        let (mq, mp) = (
            Vec::<f64>::try_from(q.mean.flatten(0, -1).to_kind(Kind::Double)).unwrap(),
            Vec::<f64>::try_from(p.mean.flatten(0, -1).to_kind(Kind::Double)).unwrap(),
        );
        let kl: f64 = mq
            .iter()
            .zip(&mp)
            .map(|(a, b)| gaussian_kl(*a, var, *b, var))
            .sum();
        let err2 = scalar(&(&eps - &eps_theta).square().sum(Kind::Double));
        let (beta, ab) = (s.betas_host[t as usize], s.alpha_bar_host[t as usize]);
        let lambda = elbo_weight(beta, ab, var);
        // f32 means: the KL is a difference of nearby numbers, so 1e-3 relative.
        assert!(
            (kl - lambda * err2).abs() <= 1e-3 * kl,
            "t={t}: KL {kl} vs λ‖Δε‖² {}",
            lambda * err2
        );
        // With σ_t² = β̃_t the weight is β_t / (2 α_t (1 − ᾱ_{t−1})).
        let closed = beta / (2.0 * (1.0 - beta) * (1.0 - s.alpha_bar_host[t as usize - 1]));
        assert!(
            (lambda - closed).abs() <= 1e-4 * closed,
            "t={t}: {lambda} vs {closed}"
        );
        // A weight that forgets the 1/α_t of the mean's ε form is off by α_t:
        // visible at large t, where α_t is furthest from 1.
        if t == 999 {
            let wrong = beta * beta / (2.0 * var * (1.0 - ab));
            assert!(
                (kl - wrong * err2).abs() > 1e-2 * kl,
                "the weight without 1/α_t passed"
            );
        }
    }
}

#[test]
fn the_mean_is_the_same_in_the_x0_eps_and_v_forms() {
    // Eqs. (12)–(14): the three targets, read back by x0_and_eps, give one
    // posterior mean, and it equals the ε form (1/√α_t)(x_t − β_t/√(1−ᾱ_t) ε).
    tch::manual_seed(5);
    let s = Schedule::new(ScheduleKind::Cosine, 1000, Device::Cpu).unwrap();
    let n = 16;
    let x0 = Tensor::rand([n, 1, 4, 4], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let eps = Tensor::randn([n, 1, 4, 4], (Kind::Float, Device::Cpu));
    let steps: Vec<i64> = (0..n).map(|i| 1 + i * 997 / (n - 1)).collect();
    let ts = s.timesteps(&Tensor::from_slice(&steps)).unwrap();
    let xt = s.q_sample(&x0, &ts, &eps).unwrap();
    let beta = ts.gather(&s.betas, &xt);
    let eps_form =
        (&xt - &beta / ts.gather(&s.sqrt_one_minus_alpha_bar, &xt) * &eps) / (-&beta + 1.0).sqrt();
    for kind in [
        Prediction::Epsilon,
        Prediction::Sample,
        Prediction::Velocity,
    ] {
        let out = target(kind, &s, &x0, &eps, &ts);
        let (x0_hat, eps_hat) = x0_and_eps(&s, kind, &xt, &ts, &out);
        let mean = s.q_posterior(&x0_hat, &xt, &ts).unwrap().mean;
        let d = scalar(&(&mean - &eps_form).abs().max());
        assert!(
            d < 1e-4,
            "{kind:?}: the mean differs from the ε form by {d}"
        );
        assert!(
            scalar(&(&eps_hat - &eps).abs().max()) < 1e-3,
            "{kind:?}: ε̂ is not ε"
        );
    }
    // Reading a v output as if it were ε gives another mean.
    let v = target(Prediction::Velocity, &s, &x0, &eps, &ts);
    let (x0_bad, _) = x0_and_eps(&s, Prediction::Epsilon, &xt, &ts, &v);
    let bad = s.q_posterior(&x0_bad, &xt, &ts).unwrap().mean;
    assert!(
        scalar(&(&bad - &eps_form).abs().max()) > 1e-2,
        "a misread v passed"
    );
}

/// Runs q_σ down a grid from x_{τ_S} ~ q(x_{τ_S} | x_0), with the true x_0 and
/// ε in every step, and returns the largest deviation, in standard errors, of
/// each level's mean and variance from the DDPM marginal √ᾱ_s x_0, 1 − ᾱ_s.
fn ddim_marginal_z(s: &Schedule, grid: &TimestepGrid, eta: f64, broken: bool) -> f64 {
    let n = 200_000i64;
    let x0 = 0.6f64;
    let ab = &s.alpha_bar_host;
    let first = grid.steps()[0].t as usize;
    let mut x = Tensor::randn([n], (Kind::Double, Device::Cpu)) * (1.0 - ab[first]).sqrt()
        + ab[first].sqrt() * x0;
    let x0_t = Tensor::full([n], x0, (Kind::Double, Device::Cpu));
    let mut worst: f64 = 0.0;
    for st in grid.steps() {
        let Some(prev) = st.prev else { break };
        let ab_t = ab[st.t as usize];
        let eps = (&x - ab_t.sqrt() * x0) / (1.0 - ab_t).sqrt();
        let z = Tensor::randn([n], (Kind::Double, Device::Cpu));
        x = if broken {
            // The direction term without σ² taken out (bug museum, exhibit 2).
            let ab_s = ab[prev as usize];
            let sigma = ddim_sigma(ab_t, ab_s, eta);
            &x0_t * ab_s.sqrt() + &eps * (1.0 - ab_s).sqrt() + &z * sigma
        } else {
            ddim_step(s, *st, eta, &x0_t, &eps, &z)
        };
        let ab_s = ab[prev as usize];
        let (want_m, want_v) = (ab_s.sqrt() * x0, 1.0 - ab_s);
        let m = scalar(&x.mean(Kind::Double));
        let v = scalar(&x.var(true));
        // Standard errors of a mean and of a variance of n Gaussian draws.
        let zm = (m - want_m).abs() / (want_v / n as f64).sqrt();
        let zv = (v - want_v).abs() / (want_v * (2.0 / (n - 1) as f64).sqrt());
        worst = worst.max(zm).max(zv);
    }
    worst
}

#[test]
fn ddim_q_sigma_keeps_the_ddpm_marginals() {
    // Eqs. (15)–(17): whatever σ (η), each level of the non-Markovian q_σ has
    // the marginal q(x_s | x_0) of DDPM. Checked by sampling: within 5
    // standard errors at every level; the variant that adds σ z without
    // shrinking the direction term must miss by far more.
    tch::manual_seed(11);
    let s = Schedule::new(ScheduleKind::Linear, 1000, Device::Cpu).unwrap();
    let grid = TimestepGrid::new(1000, 10, Spacing::Trailing).unwrap();
    for eta in [0.0, 0.5, 1.0] {
        let z = ddim_marginal_z(&s, &grid, eta, false);
        assert!(
            z < 5.0,
            "η = {eta}: a level's mean or variance is {z:.1} standard errors off"
        );
    }
    let z = ddim_marginal_z(&s, &grid, 1.0, true);
    assert!(
        z > 50.0,
        "the broken direction term passed ({z:.1} standard errors)"
    );
}
