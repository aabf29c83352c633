//! The one-page program (examples/one_page.rs) computes what the crates compute.
#[path = "../examples/one_page.rs"]
#[allow(dead_code)]
mod one_page;

use classifier_free::Guided;
use forward::{Schedule, ScheduleKind};
use network::NoisePredictor;
use reverse::{GridStep, Variance};
use tch::{nn, Device, Kind, Tensor};

const TOL: f64 = 1e-6;

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn setup() -> (Schedule, Tensor, Tensor) {
    let s = Schedule::new(ScheduleKind::Linear, one_page::T as usize, Device::Cpu).unwrap();
    let (betas, ab) = one_page::schedule(Device::Cpu);
    (s, betas, ab)
}

#[test]
fn schedule_and_q_sample_agree() {
    let (s, betas, ab) = setup();
    assert!(max_abs(&betas, &s.betas) <= TOL);
    assert!(max_abs(&ab, &s.alpha_bar) <= TOL);
    let x0 = Tensor::rand([4, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let eps = Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[0i64, 10, 500, 999]);
    let crate_side = s.q_sample(&x0, &s.timesteps(&t).unwrap(), &eps).unwrap();
    assert!(max_abs(&one_page::q_sample(&ab, &x0, &t, &eps), &crate_side) <= TOL);
}

#[test]
fn ddpm_and_ddim_steps_agree() {
    let (s, betas, ab) = setup();
    let x = Tensor::randn([3, 1, 28, 28], (Kind::Float, Device::Cpu));
    let eps = Tensor::randn([3, 1, 28, 28], (Kind::Float, Device::Cpu));
    let z = Tensor::randn([3, 1, 28, 28], (Kind::Float, Device::Cpu));
    for t in [0i64, 1, 250, 999] {
        let tt = Tensor::full([3], t, (Kind::Int64, Device::Cpu));
        let ts = s.timesteps(&tt).unwrap();
        let x0 = one_page::predict_x0(&ab, &x, &tt, &eps);
        let crate_x0 = forward::predict_x0_from_eps(&s, &x, &ts, &eps).clamp(-1.0, 1.0);
        assert!(max_abs(&x0, &crate_x0) <= TOL, "x̂_0 at t = {t}");
        let page = one_page::ddpm_step(&betas, &ab, &x, t, &x0, &z);
        let crates = reverse::ddpm_step(&s, Variance::FixedSmall, &x, &ts, &x0, &z).unwrap();
        assert!(
            max_abs(&page, &crates) <= TOL,
            "DDPM step at t = {t}: {}",
            max_abs(&page, &crates)
        );
        for (prev, eta) in [(None, 0.0), (Some(t / 2), 0.0), (Some(t / 2), 0.7)] {
            if prev == Some(t) {
                continue;
            }
            let page = one_page::ddim_step(&ab, t, prev, &x0, &eps, eta, &z);
            let crates = reverse::ddim_step(&s, GridStep { t, prev }, eta, &x0, &eps, &z);
            assert!(
                max_abs(&page, &crates) <= TOL,
                "DDIM step t = {t} → {prev:?}, η = {eta}"
            );
        }
    }
}

/// The one-page network seen through the crates' trait.
struct Page<'a>(&'a one_page::Net);

impl NoisePredictor for Page<'_> {
    fn predict(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: Option<&Tensor>,
        _: bool,
    ) -> network::Result<Tensor> {
        let y = y
            .map(|y| y.shallow_clone())
            .unwrap_or_else(|| Tensor::full([x.size()[0]], 10, (Kind::Int64, Device::Cpu)));
        Ok(self.0.forward(x, t, &y))
    }
    fn num_classes(&self) -> Option<i64> {
        Some(10)
    }
}

#[test]
fn guided_eps_agrees() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = one_page::Net::new(&vs.root(), 32);
    let x = Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[3i64, 300, 600, 999]);
    let y = Tensor::from_slice(&[0i64, 4, 7, 9]);
    for w in [0.0, 1.0, 3.0] {
        let page = tch::no_grad(|| one_page::guided_eps(&net, &x, &t, &y, w));
        let wrapped = Page(&net);
        let crates = tch::no_grad(|| {
            Guided::new(&wrapped, w, false)
                .unwrap()
                .predict(&x, &t, Some(&y), false)
        })
        .unwrap();
        assert!(
            max_abs(&page, &crates) <= TOL,
            "w = {w}: {}",
            max_abs(&page, &crates)
        );
    }
}

#[test]
fn the_page_fits_on_one_page() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/one_page.rs");
    let lines = std::fs::read_to_string(path).unwrap().lines().count();
    assert!(
        lines <= 300,
        "one_page.rs has {lines} lines; the promise is at most 300"
    );
    // The line count is only honest for formatted code: rustfmt must run
    // (scripts/test.sh's fmt gate needs it too), and must find nothing to change.
    let out = std::process::Command::new("rustfmt")
        .args(["--check", "--edition", "2021", path])
        .output()
        .expect("rustfmt must be installed (rustup component add rustfmt): the 300-line count assumes formatted code");
    assert!(
        out.status.success(),
        "one_page.rs is not rustfmt-formatted:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
