//! The metrics against closed forms, brute force and scipy; the input checks.
use evaluate::{check_samples, frechet_distance, gaussian, precision_recall, Gaussian};
use tch::{Device, Kind, Tensor};

fn randn(shape: &[i64], seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn(shape, (Kind::Double, Device::Cpu))
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// Σ = Q diag(d) Qᵀ for a random rotation Q shared by both Gaussians.
fn rotated(mean: &[f64], diag: &[f64], q: &Tensor) -> Gaussian {
    let d = Tensor::from_slice(diag);
    Gaussian {
        mean: Tensor::from_slice(mean),
        cov: (q * d.unsqueeze(0)).matmul(&q.tr()),
        n: 1000,
    }
}

#[test]
fn frechet_matches_the_closed_form_for_commuting_covariances() {
    // When Σ₁ and Σ₂ share eigenvectors, tr(Σ₁^½ Σ₂ Σ₁^½)^½ = Σ √(aᵢ bᵢ), so
    // d² = ‖μ₁ − μ₂‖² + Σ (√aᵢ − √bᵢ)².
    let dim = 16;
    let (q, _) = Tensor::linalg_qr(&randn(&[dim, dim], 1), "reduced");
    let a: Vec<f64> = (0..dim).map(|i| 0.1 + i as f64 * 0.37).collect();
    let b: Vec<f64> = (0..dim).map(|i| 2.0 / (1.0 + i as f64)).collect();
    let mu1: Vec<f64> = (0..dim).map(|i| (i as f64).sin()).collect();
    let mu2: Vec<f64> = (0..dim).map(|i| (i as f64).cos()).collect();
    let expected: f64 = (0..dim as usize)
        .map(|i| (mu1[i] - mu2[i]).powi(2) + (a[i].sqrt() - b[i].sqrt()).powi(2))
        .sum();
    let got = frechet_distance(&rotated(&mu1, &a, &q), &rotated(&mu2, &b, &q));
    assert!(
        rel(got, expected) < 1e-10,
        "{got} vs closed form {expected}"
    );
}

#[test]
fn frechet_is_zero_on_itself_and_symmetric() {
    let f = randn(&[500, 24], 2).matmul(&randn(&[24, 24], 3));
    let g = gaussian(&f);
    let d0 = frechet_distance(&g, &g);
    let scale = g.cov.trace().double_value(&[]);
    assert!(d0 < 1e-9 * scale, "FD(x, x) = {d0}");
    let h = gaussian(&(randn(&[400, 24], 4) * 1.5 + 0.3));
    let (ab, ba) = (frechet_distance(&g, &h), frechet_distance(&h, &g));
    assert!(rel(ab, ba) < 1e-9, "FD not symmetric: {ab} vs {ba}");
}

#[test]
fn gaussian_matches_plain_loops() {
    let f = randn(&[37, 5], 5);
    let rows: Vec<Vec<f64>> = (0..37)
        .map(|i| Vec::<f64>::try_from(f.get(i)).unwrap())
        .collect();
    let g = gaussian(&f);
    for j in 0..5 {
        let m: f64 = rows.iter().map(|r| r[j]).sum::<f64>() / 37.0;
        assert!((g.mean.double_value(&[j as i64]) - m).abs() < 1e-12);
        for k in 0..5 {
            let mk: f64 = rows.iter().map(|r| r[k]).sum::<f64>() / 37.0;
            let c: f64 = rows.iter().map(|r| (r[j] - m) * (r[k] - mk)).sum::<f64>() / 36.0;
            assert!((g.cov.double_value(&[j as i64, k as i64]) - c).abs() < 1e-12);
        }
    }
}

#[test]
fn frechet_agrees_with_scipy() {
    // Two correlated, shifted feature sets; scipy's sqrtm(Σ₁Σ₂) against our
    // symmetric eigendecomposition.
    let dim = 64;
    let a = randn(&[2000, dim], 6).matmul(&randn(&[dim, dim], 7)) + 0.5;
    let b = randn(&[1500, dim], 8)
        .matmul(&(randn(&[dim, dim], 9) * 0.7 + Tensor::eye(dim, (Kind::Double, Device::Cpu))));
    let dir = std::env::temp_dir().join(format!("frechet-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("features.safetensors");
    Tensor::write_safetensors(&[("a", &a), ("b", &b)], &file).unwrap();
    let out = util::run_parity_script("frechet.py", &[&file]).unwrap();
    let theirs: f64 = out.trim().parse().unwrap();
    let ours = frechet_distance(&gaussian(&a), &gaussian(&b));
    println!(
        "Fréchet distance: ours {ours:.12} scipy {theirs:.12} (relative difference {:.2e})",
        rel(ours, theirs)
    );
    assert!(rel(ours, theirs) < 1e-6, "ours {ours} vs scipy {theirs}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn frechet_stays_finite_when_the_covariance_is_singular() {
    // 40 samples of 64 features: rank-deficient covariances, where the
    // eigenvalue clamp matters. The distance must stay finite and ≥ 0, and the
    // evaluator warns.
    let a = gaussian(&randn(&[40, 64], 10));
    let b = gaussian(&(randn(&[40, 64], 11) + 1.0));
    let d = frechet_distance(&a, &b);
    assert!(d.is_finite() && d > 0.0, "{d}");
    assert!(evaluate::small_sample_warning(40)
        .unwrap()
        .contains("unreliable"));
    assert!(evaluate::small_sample_warning(1000).is_none());
}

/// Precision and recall by brute force: explicit loops over f64 vectors.
fn brute_force(real: &[Vec<f64>], fake: &[Vec<f64>], k: usize) -> (f64, f64) {
    let dist = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let radii = |set: &[Vec<f64>]| -> Vec<f64> {
        set.iter()
            .map(|p| {
                let mut d: Vec<f64> = set.iter().map(|q| dist(p, q)).collect();
                d.sort_by(f64::total_cmp);
                d[k]
            })
            .collect()
    };
    let cover = |anchors: &[Vec<f64>], probes: &[Vec<f64>]| {
        let r = radii(anchors);
        let hits = probes
            .iter()
            .filter(|p| anchors.iter().zip(&r).any(|(a, ra)| dist(p, a) <= *ra))
            .count();
        hits as f64 / probes.len() as f64
    };
    (cover(real, fake), cover(fake, real))
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    (0..t.size()[0])
        .map(|i| Vec::<f64>::try_from(t.get(i)).unwrap())
        .collect()
}

#[test]
fn precision_recall_match_brute_force_and_limits() {
    let real = randn(&[60, 4], 12);
    let fake = randn(&[50, 4], 13) * 0.6 + 0.8;
    let (p, r) = precision_recall(&real, &fake, 3);
    let (bp, br) = brute_force(&rows(&real), &rows(&fake), 3);
    assert_eq!((p, r), (bp, br));
    assert!(
        p > 0.0 && p < 1.0 && r > 0.0 && r < 1.0,
        "not a trivial case: {p} {r}"
    );
    // The same set: everything covers everything.
    assert_eq!(precision_recall(&real, &real, 3), (1.0, 1.0));
    // Far apart: nothing covers anything.
    assert_eq!(precision_recall(&real, &(&real + 100.0), 3), (0.0, 0.0));
    // Mode collapse: all samples near one real point are realistic (precision 1)
    // but cover only that point's neighbourhood (low recall).
    let collapsed = real.get(0).unsqueeze(0).repeat([50, 1]) + randn(&[50, 4], 14) * 1e-3;
    let (p, r) = precision_recall(&real, &collapsed, 3);
    assert_eq!(p, 1.0);
    assert!(r <= 0.1, "recall of a collapsed set: {r}");
}

#[test]
fn bad_samples_get_clear_messages() {
    let img = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, Device::Cpu));
    let labels = Tensor::arange(10, (Kind::Int64, Device::Cpu));
    let err =
        |images: &Tensor, labels: &Tensor| check_samples(images, labels).unwrap_err().to_string();
    assert_eq!(
        err(&img(&[10, 3, 32, 32]), &labels),
        "images have shape [10, 3, 32, 32]: the classifier needs [N, 1, 28, 28] (Fashion-MNIST-sized greyscale)"
    );
    let mut bright = img(&[10, 1, 28, 28]);
    let _ = bright.fill_(255.0);
    assert!(
        err(&bright, &labels).starts_with("image values span [255.000, 255.000]: expected [−1, 1]")
    );
    assert_eq!(
        err(&img(&[10, 1, 28, 28]), &labels.narrow(0, 0, 9)),
        "labels have shape [9] (Int64) for 10 images: expected [10] int64"
    );
    let mixed = Tensor::from_slice(&[-1i64, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(err(&img(&[10, 1, 28, 28]), &mixed).starts_with("some labels are −1"));
    assert_eq!(
        err(&img(&[10, 1, 28, 28]), &(labels.shallow_clone() + 1)),
        "labels span 1..=10: expected 0..=9, or −1 for 'no label'"
    );
    assert!(check_samples(&img(&[10, 1, 28, 28]), &labels).is_ok());
}

#[test]
fn the_frechet_bootstrap_error_is_seeded_and_falls_as_one_over_root_n() {
    // Gaussian features in 8 dimensions, shifted by 1 in every coordinate
    // from the reference N(0, I) (FD ≈ 8): the bootstrap SE is reproducible
    // for a seed, positive, and about halves when n quadruples. With the sets
    // this far apart the FD's fluctuation is linear in the sample mean, so its
    // SE is ∝ 1/√n (√(4·8/n) ≈ 0.28 at n = 400); the ratio's own spread over
    // 50 resamples is about ±20%, hence 0.35–0.7.
    let reference = gaussian(&randn(&[20_000, 8], 1));
    let small = randn(&[400, 8], 2) + 1.0;
    let large = randn(&[1600, 8], 3) + 1.0;
    let se_small = evaluate::frechet_se(&small, &reference, 50, 0);
    assert_eq!(
        se_small,
        evaluate::frechet_se(&small, &reference, 50, 0),
        "not reproducible"
    );
    assert_ne!(
        se_small,
        evaluate::frechet_se(&small, &reference, 50, 1),
        "the seed is ignored"
    );
    assert!((0.15..0.5).contains(&se_small), "SE at n = 400: {se_small}");
    let ratio = evaluate::frechet_se(&large, &reference, 50, 0) / se_small;
    assert!((0.35..0.7).contains(&ratio), "SE(1600) / SE(400) = {ratio}");
}
