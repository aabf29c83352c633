//! "Flow matching" against the 2-D mixture, whose flow velocity is exact
//! (closed_form::two_d::MixtureVelocity): the velocity is the conditional
//! mean of the training target, the loss is smallest there, and the book's
//! flow samplers carry N(0, I) to the mixture at their order of accuracy.
use closed_form::two_d::{Mixture, MixtureVelocity};
use forward::{flow_interpolate, flow_velocity, flow_x0_and_eps, FLOW_TIME_SCALE};
use network::NoisePredictor;
use reverse::{FlowPipeline, FlowSampler};
use tch::{Device, Kind, Tensor};

const CPU: Device = Device::Cpu;

fn mixture() -> Mixture {
    Mixture::ring(6, 0.8, 0.1)
}

/// u*(x_t, t) for a batch, t in [0, 1].
fn exact(m: &Mixture, x_t: &Tensor, t: &Tensor, y: Option<&Tensor>) -> Tensor {
    MixtureVelocity { mixture: m }
        .predict(x_t, &(t * FLOW_TIME_SCALE), y, false)
        .unwrap()
}

/// (mean, standard error) of the values of a 1-D tensor.
fn mean_se(v: &Tensor) -> (f64, f64) {
    let n = v.size()[0] as f64;
    (
        v.mean(Kind::Double).double_value(&[]),
        v.std(true).double_value(&[]) / n.sqrt(),
    )
}

#[test]
fn exact_velocity_is_the_conditional_mean_of_the_target() {
    // u* = E[ε − x_0 | x_t]: the residual ε − x_0 − u* has mean zero against
    // any function of (x_t, t). Tested against 1, x_t, t x_t and x_t³, with and
    // without labels. The velocity of a mixture with the wrong spread fails.
    tch::manual_seed(0);
    let m = mixture();
    let n = 200_000;
    let (x0, y) = m.sample(n, CPU);
    let (x0, noise) = (
        x0.to_kind(Kind::Double),
        Tensor::randn([n, 2, 1, 1], (Kind::Double, CPU)),
    );
    let t = Tensor::rand([n], (Kind::Double, CPU));
    let x_t = flow_interpolate(&x0, &noise, &t).unwrap();
    let target = flow_velocity(&x0, &noise);
    let tt = t.view([n, 1, 1, 1]);
    let tests = [
        x_t.ones_like(),
        x_t.shallow_clone(),
        &tt * &x_t,
        x_t.pow_tensor_scalar(3),
    ];
    let worst = |u: &Tensor| -> f64 {
        let r = &target - u;
        tests
            .iter()
            .flat_map(|phi| {
                let prod = (&r * phi).view([n, 2]);
                (0..2).map(move |d| {
                    let (mu, se) = mean_se(&prod.select(1, d));
                    (mu / se).abs()
                })
            })
            .fold(0.0, f64::max)
    };
    for labels in [None, Some(&y)] {
        let z = worst(&exact(&m, &x_t, &t, labels));
        eprintln!("labels {}: worst |z| {z:.2}", labels.is_some());
        assert!(
            z < 5.0,
            "labels {:?}: residual correlates with a test function, |z| = {z:.1}",
            labels.is_some()
        );
        let wrong = Mixture::ring(6, 0.8, 0.2);
        let z_wrong = worst(&exact(&wrong, &x_t, &t, labels));
        eprintln!(
            "labels {}: wrong spread, worst |z| {z_wrong:.1}",
            labels.is_some()
        );
        assert!(
            z_wrong > 10.0,
            "a wrong spread went unnoticed: |z| = {z_wrong:.1}"
        );
    }
}

/// The exact velocity plus c·x_t.
struct Tilted<'a>(MixtureVelocity<'a>, f64);

impl NoisePredictor for Tilted<'_> {
    fn predict(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: Option<&Tensor>,
        train: bool,
    ) -> network::Result<Tensor> {
        Ok(self.0.predict(x, t, y, train)? + x * self.1)
    }
    fn num_classes(&self) -> Option<i64> {
        self.0.num_classes()
    }
}

#[test]
fn flow_loss_is_smallest_at_the_exact_velocity_and_matches_its_expectation() {
    // training::flow_loss at u* estimates E|ε − x_0 − u*|², which an independent
    // Monte Carlo run here (its own draws of t, x_0 and ε) also estimates: the two
    // agree within their standard errors. Tilting u* by ±0.05 x_t raises the
    // loss at the same draws: the exact velocity is the minimiser.
    let m = mixture();
    let n = 200_000;
    tch::manual_seed(1);
    let (x0, y) = m.sample(n, CPU);
    let noise = Tensor::randn([n, 2, 1, 1], (Kind::Float, CPU));
    let t = Tensor::rand([n], (Kind::Float, CPU));
    let x_t = flow_interpolate(&x0, &noise, &t).unwrap();
    let per_point = (flow_velocity(&x0, &noise) - exact(&m, &x_t, &t, Some(&y)))
        .square()
        .view([n, 2])
        .mean_dim(1, false, Kind::Double);
    let (reference, se) = mean_se(&per_point);

    let loss = |model: &dyn NoisePredictor| {
        tch::manual_seed(2); // the same t and ε for every model
        let (x0, y) = m.sample(n, CPU);
        training::flow_loss(model, &x0, Some(&y))
            .unwrap()
            .double_value(&[])
    };
    let at_exact = loss(&MixtureVelocity { mixture: &m });
    assert!(
        (at_exact - reference).abs() < 5.0 * se * 2f64.sqrt(),
        "flow_loss at u* = {at_exact:.5}, Monte Carlo {reference:.5} ± {se:.5}"
    );
    eprintln!("flow_loss at u* {at_exact:.5}, Monte Carlo {reference:.5} ± {se:.5}");
    for c in [-0.05, 0.05] {
        let tilted = loss(&Tilted(MixtureVelocity { mixture: &m }, c));
        assert!(
            tilted > at_exact,
            "u* + {c} x_t has loss {tilted:.5} ≤ {at_exact:.5}"
        );
    }
}

/// x_0 from x_1 with a flow sampler and the exact velocity.
fn transport(m: &Mixture, sampler: FlowSampler, x1: &Tensor, y: Option<&Tensor>) -> Tensor {
    FlowPipeline::new(&MixtureVelocity { mixture: m })
        .sample(&sampler, x1, y)
        .unwrap()
}

#[test]
fn heun_on_the_exact_velocity_draws_the_mixture() {
    // Per class: mean μ_k and standard deviation s, within sampling error and
    // a small discretisation error. Unlabelled: every component gets 1/K.
    let m = mixture();
    tch::manual_seed(3);
    let per = 4000;
    let k = m.num_classes();
    let y = Tensor::arange(k, (Kind::Int64, CPU)).repeat_interleave_self_int(per, 0, None);
    let x1 = Tensor::randn([k * per, 2, 1, 1], (Kind::Double, CPU));
    let x0 = transport(&m, FlowSampler::heun(20).without_clip(), &x1, Some(&y)).view([k, per, 2]);
    for c in 0..k {
        let pts = x0.get(c);
        for d in 0..2 {
            let col = pts.select(1, d);
            let (mean, se) = mean_se(&col);
            let want = m.means[c as usize][d as usize];
            assert!(
                (mean - want).abs() < 5.0 * se + 2e-3,
                "class {c} dim {d}: mean {mean:.4} vs {want:.4}"
            );
            let sd = col.std(true).double_value(&[]);
            assert!(
                (sd / m.std - 1.0).abs() < 0.06,
                "class {c} dim {d}: sd {sd:.4} vs {}",
                m.std
            );
        }
    }
    let x0 = transport(&m, FlowSampler::heun(20).without_clip(), &x1, None).view([k * per, 1, 2]);
    let mu = Tensor::from_slice(&m.means.concat()).view([1, k, 2]);
    let nearest = (x0 - mu)
        .square()
        .sum_dim_intlist(2, false, Kind::Double)
        .argmin(1, false);
    let p = 1.0 / k as f64;
    let se = (p * (1.0 - p) / (k * per) as f64).sqrt();
    for c in 0..k {
        let frac = nearest
            .eq(c)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]);
        assert!(
            (frac - p).abs() < 5.0 * se,
            "component {c} holds {frac:.4} of the samples, not {p:.4}"
        );
    }
}

#[test]
fn euler_and_heun_converge_at_their_order() {
    // Against a 400-step Heun solution from the same x_1: doubling the steps
    // halves Euler's error (first order) and quarters Heun's (second order).
    let m = mixture();
    tch::manual_seed(4);
    let x1 = Tensor::randn([2000, 2, 1, 1], (Kind::Double, CPU));
    let y = Tensor::arange(2000, (Kind::Int64, CPU)).remainder(6);
    let reference = transport(&m, FlowSampler::heun(400).without_clip(), &x1, Some(&y));
    let err = |s: FlowSampler| {
        (transport(&m, s, &x1, Some(&y)) - &reference)
            .square()
            .mean(Kind::Double)
            .sqrt()
            .double_value(&[])
    };
    let euler: Vec<f64> = [20, 40, 80]
        .map(|s| err(FlowSampler::euler(s).without_clip()))
        .to_vec();
    let heun: Vec<f64> = [10, 20, 40]
        .map(|s| err(FlowSampler::heun(s).without_clip()))
        .to_vec();
    eprintln!("RMS error against Heun-400: Euler 20/40/80 {euler:.5?}, Heun 10/20/40 {heun:.6?}");
    for w in euler.windows(2) {
        let r = w[0] / w[1];
        assert!(
            (1.6..2.6).contains(&r),
            "Euler errors {euler:?}: ratio {r:.2}, not about 2"
        );
    }
    for w in heun.windows(2) {
        let r = w[0] / w[1];
        assert!(
            (3.0..5.5).contains(&r),
            "Heun errors {heun:?}: ratio {r:.2}, not about 4"
        );
    }
    assert!(
        heun[0] < euler[0],
        "Heun-10 (20 evaluations) is no better than Euler-20"
    );
}

#[test]
fn a_flow_euler_step_is_a_ddim_step() {
    // x_{t'} = x_t + (t' − t) û equals DDIM's x_{t'} = (1 − t') x̂_0 + t' ε̂, and
    // EDM's Euler step in x̃ = x/(1 − t), σ = t/(1 − t), to f64 rounding.
    let m = mixture();
    tch::manual_seed(5);
    let x = Tensor::randn([64, 2, 1, 1], (Kind::Double, CPU));
    for (t, t_next) in [(1.0, 0.9), (0.9, 0.5), (0.5, 0.1), (0.1, 0.0)] {
        let tt = Tensor::full([64], t, (Kind::Double, CPU));
        let u = exact(&m, &x, &tt, None);
        let flow = reverse::flow::flow_euler_step(&x, &u, t, t_next);
        let (x0, eps) = flow_x0_and_eps(&x, &tt, &u).unwrap();
        let ddim = &x0 * (1.0 - t_next) + &eps * t_next;
        let diff = (&flow - ddim).abs().max().double_value(&[]);
        assert!(
            diff < 1e-12,
            "t = {t} → {t_next}: flow Euler and DDIM differ by {diff:e}"
        );
        if t < 1.0 {
            let sigma = |t: f64| t / (1.0 - t);
            let edm = reverse::ode::euler_step(&(&x / (1.0 - t)), &x0, sigma(t), sigma(t_next))
                * (1.0 - t_next);
            let diff = (&flow - edm).abs().max().double_value(&[]);
            assert!(
                diff < 1e-12,
                "t = {t} → {t_next}: flow Euler and EDM Euler differ by {diff:e}"
            );
        }
    }
}
