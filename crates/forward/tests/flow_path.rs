//! The straight path of rectified flow: its ends, its marginals in closed
//! form, its velocity and the read-back of x_0 and ε from a velocity.
use forward::{flow_interpolate, flow_velocity, flow_x0_and_eps, ForwardError};
use tch::{Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

#[test]
fn the_path_starts_at_the_data_and_ends_at_the_noise() {
    tch::manual_seed(0);
    let (x0, eps) = (
        Tensor::randn([4, 1, 5, 5], F64),
        Tensor::randn([4, 1, 5, 5], F64),
    );
    let at = |t: f64| flow_interpolate(&x0, &eps, &Tensor::full([4], t, F64)).unwrap();
    assert!(at(0.0).equal(&x0), "x_0 is not the data");
    assert!(
        at(1.0).equal(&eps),
        "x_1 is not the noise: the flow has zero terminal SNR by construction"
    );
    // One t per image: image i is at its own t_i.
    let t = Tensor::from_slice(&[0.0, 0.25, 0.5, 1.0]).to_kind(Kind::Double);
    let x_t = flow_interpolate(&x0, &eps, &t).unwrap();
    for (i, ti) in [0.0, 0.25, 0.5, 1.0].into_iter().enumerate() {
        let want = x0.get(i as i64) * (1.0 - ti) + eps.get(i as i64) * ti;
        assert!(
            x_t.get(i as i64).allclose(&want, 1e-15, 1e-15, false),
            "image {i}"
        );
    }
}

#[test]
fn marginals_match_the_closed_form() {
    // x_0 ~ N(μ, s²) per pixel: x_t ~ N((1 − t) μ, (1 − t)² s² + t²). Within
    // 5 standard errors at 10^6 draws; the variance-preserving path
    // √(1 − t) x_0 + √t ε, a plausible mistake, is told apart.
    tch::manual_seed(1);
    let (mu, s, n) = (0.7, 0.3, 1_000_000);
    let x0 = Tensor::randn([n, 1, 1, 1], F64) * s + mu;
    let eps = Tensor::randn([n, 1, 1, 1], F64);
    for t in [0.1, 0.5, 0.9] {
        let x_t = flow_interpolate(&x0, &eps, &Tensor::full([n], t, F64)).unwrap();
        let (mean, var) = (
            x_t.mean(Kind::Double).double_value(&[]),
            x_t.var(true).double_value(&[]),
        );
        let (m_want, v_want) = ((1.0 - t) * mu, (1.0 - t).powi(2) * s * s + t * t);
        let (se_m, se_v) = ((v_want / n as f64).sqrt(), v_want * (2.0 / n as f64).sqrt());
        assert!(
            (mean - m_want).abs() < 5.0 * se_m,
            "t = {t}: mean {mean} vs {m_want}"
        );
        assert!(
            (var - v_want).abs() < 5.0 * se_v,
            "t = {t}: var {var} vs {v_want}"
        );
        let v_vp = (1.0 - t) * s * s + t;
        assert!(
            (var - v_vp).abs() > 20.0 * se_v,
            "t = {t}: the VP path's variance would pass too"
        );
    }
}

#[test]
fn the_velocity_is_the_derivative_of_the_path_and_reads_back_both_ends() {
    tch::manual_seed(2);
    let (x0, eps) = (
        Tensor::randn([3, 1, 4, 4], F64),
        Tensor::randn([3, 1, 4, 4], F64),
    );
    let u = flow_velocity(&x0, &eps);
    for t in [0.0, 0.3, 0.999] {
        let h = 1e-6;
        let at = |t: f64| flow_interpolate(&x0, &eps, &Tensor::full([3], t, F64)).unwrap();
        let fd = (at(t + h) - at(t - h)) / (2.0 * h);
        assert!(
            fd.allclose(&u, 1e-8, 1e-8, false),
            "t = {t}: dx_t/dt is not ε − x_0"
        );
        let tt = Tensor::full([3], t, F64);
        let (x0_hat, eps_hat) = flow_x0_and_eps(&at(t), &tt, &u).unwrap();
        assert!(x0_hat.allclose(&x0, 1e-12, 1e-12, false), "t = {t}: x̂_0");
        assert!(eps_hat.allclose(&eps, 1e-12, 1e-12, false), "t = {t}: ε̂");
    }
}

#[test]
fn times_of_the_wrong_shape_or_kind_are_refused() {
    let x = Tensor::zeros([4, 1, 2, 2], F64);
    for t in [
        Tensor::zeros([3], F64),
        Tensor::zeros([4, 1], F64),
        Tensor::zeros([4], (Kind::Int64, Device::Cpu)),
    ] {
        let err = flow_interpolate(&x, &x, &t).unwrap_err();
        assert!(matches!(err, ForwardError::ShapeMismatch { .. }), "{err}");
        assert!(flow_x0_and_eps(&x, &t, &x).is_err());
    }
}
