//! Distances between two sets of feature vectors, all in f64.
use tch::{Kind, Tensor};

/// A Gaussian fitted to features: mean [D] and covariance [D, D], both f64 on the CPU.
#[derive(Debug)]
pub struct Gaussian {
    pub mean: Tensor,
    pub cov: Tensor,
    pub n: i64,
}

// ANCHOR: gaussian
/// Mean and unbiased covariance (divisor n − 1) of features [N, D].
pub fn gaussian(features: &Tensor) -> Gaussian {
    let f = features.to_device(tch::Device::Cpu).to_kind(Kind::Double);
    let n = f.size()[0];
    let mean = f.mean_dim(0, false, Kind::Double);
    let centred = &f - &mean;
    let cov = centred.tr().matmul(&centred) / (n - 1).max(1) as f64;
    Gaussian { mean, cov, n }
}
// ANCHOR_END: gaussian

// ANCHOR: sqrt_psd
/// The symmetric square root of a symmetric positive semi-definite matrix:
/// M = V Λ Vᵀ ⇒ √M = V √Λ Vᵀ, with eigenvalues that round-off made slightly
/// negative clamped to 0.
pub fn sqrt_psd(m: &Tensor) -> Tensor {
    let sym = (m + m.tr()) / 2.0;
    let (lambda, v) = sym.linalg_eigh("L");
    let root = lambda.clamp_min(0.0).sqrt();
    (&v * root.unsqueeze(0)).matmul(&v.tr())
}
// ANCHOR_END: sqrt_psd

// ANCHOR: frechet
/// Fréchet distance between two Gaussians (Dowson & Landau 1982):
///
///   d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½
///
/// The cross term uses the symmetric form: Σ₁^½ Σ₂ Σ₁^½ is symmetric PSD, so
/// its trace-root is Σ √λᵢ over its (clamped) eigenvalues. It has the same
/// eigenvalues as the non-symmetric Σ₁Σ₂ of the usual FID code, without
/// needing a general matrix square root.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> f64 {
    let diff = (&a.mean - &b.mean)
        .square()
        .sum(Kind::Double)
        .double_value(&[]);
    let root_a = sqrt_psd(&a.cov);
    let inner = root_a.matmul(&b.cov).matmul(&root_a);
    let inner = (&inner + inner.tr()) / 2.0;
    let lambda = inner.linalg_eigvalsh("L").clamp_min(0.0);
    let cross = lambda.sqrt().sum(Kind::Double).double_value(&[]);
    let trace = |g: &Gaussian| g.cov.trace().double_value(&[]);
    (diff + trace(a) + trace(b) - 2.0 * cross).max(0.0)
}
// ANCHOR_END: frechet

/// cdist's "do not use matrix multiplication": exact differences, no
/// ‖a‖² + ‖b‖² − 2ab cancellation (so a point is at distance 0 from itself).
const EXACT: i64 = 2;

// ANCHOR: precision_recall
/// Improved precision and recall (Kynkäänniemi et al. 2019). Each set covers
/// the union of balls around its points, each ball reaching that point's k-th
/// nearest neighbour in the same set. Precision: the fraction of generated
/// points inside the real set's balls (are samples realistic?). Recall: the
/// fraction of real points inside the generated set's balls (is the data's
/// variety covered?).
pub fn precision_recall(real: &Tensor, fake: &Tensor, k: i64) -> (f64, f64) {
    let real = real.to_kind(Kind::Double);
    let fake = fake.to_kind(Kind::Double);
    let covered = |anchors: &Tensor, probes: &Tensor| -> f64 {
        // radius of each anchor: distance to its k-th neighbour (index 0 is itself)
        let within = Tensor::cdist(anchors, anchors, 2.0, EXACT);
        let radius = within.sort(1, false).0.select(1, k);
        let d = Tensor::cdist(probes, anchors, 2.0, EXACT); // [probes, anchors]
        let inside = d.le_tensor(&radius.unsqueeze(0)).any_dim(1, false);
        inside
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
    };
    (covered(&real, &fake), covered(&fake, &real))
}
// ANCHOR_END: precision_recall
