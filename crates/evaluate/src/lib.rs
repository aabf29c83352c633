//! Measuring samples: how often a Fashion-MNIST classifier sees the requested
//! class, and how far the generated images sit from real ones in that
//! classifier's feature space (Fréchet distance, precision and recall).
//!
//! Plumbing (reading sample files, reference rows, the shipped models) lives
//! here beside the algorithms; the metrics themselves are in [`metrics`].
pub mod classifier;
pub mod metrics;
pub mod pretrained;

pub use classifier::{Classifier, Trained, FEATURES};
pub use metrics::{frechet_distance, gaussian, precision_recall, Gaussian};

use std::path::Path;
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Train(#[from] training::TrainError),
    #[error(transparent)]
    Data(#[from] data::DataError),
}

pub type Result<T> = std::result::Result<T, EvalError>;

/// Neighbours per ball in precision/recall (the paper's k = 3).
pub const K_NEIGHBOURS: i64 = 3;

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub n: i64,
    /// Fraction classified as the requested label (None without labels).
    pub accuracy: Option<f64>,
    pub frechet: f64,
    pub precision: f64,
    pub recall: f64,
}

/// Generated images and the labels that were asked for.
pub struct Samples {
    pub images: Tensor,
    /// −1 where no label was requested (unconditional samples).
    pub labels: Tensor,
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// Reads an `images` / `labels` file written by `sample --save-tensors`.
pub fn read_samples(path: &Path) -> Result<Samples> {
    let ck = formats::checkpoint::load(path, Device::Cpu).map_err(|e| match e {
        training::TrainError::Checkpoint(m) => EvalError::Input(format!("sample file {m}")),
        e => e.into(),
    })?;
    let get = |name: &str| {
        ck.tensors
            .get(name)
            .map(|t| t.shallow_clone())
            .ok_or_else(|| {
                EvalError::Input(format!(
                    "{}: no '{name}' tensor (write sample files with `sample --save-tensors`)",
                    path.display()
                ))
            })
    };
    let s = Samples {
        images: get("images")?,
        labels: get("labels")?,
        metadata: ck.metadata.clone(),
    };
    check_samples(&s.images, &s.labels)
        .map_err(|e| EvalError::Input(format!("{}: {e}", path.display())))?;
    Ok(s)
}

/// The checks every set of samples must pass before it is measured.
pub fn check_samples(images: &Tensor, labels: &Tensor) -> Result<()> {
    let bad = |m: String| Err(EvalError::Input(m));
    let size = images.size();
    if size.len() != 4 || size[1..] != [1, 28, 28] {
        return bad(format!(
            "images have shape {size:?}: the classifier needs [N, 1, 28, 28] (Fashion-MNIST-sized greyscale)"
        ));
    }
    if !images.is_floating_point() {
        return bad(format!(
            "images are {:?}: expected floats in [−1, 1]",
            images.kind()
        ));
    }
    let n = size[0];
    if n < 2 * K_NEIGHBOURS {
        return bad(format!(
            "{n} images: need at least {} to measure anything",
            2 * K_NEIGHBOURS
        ));
    }
    let (lo, hi) = (
        images.min().double_value(&[]),
        images.max().double_value(&[]),
    );
    if !(lo.is_finite() && hi.is_finite()) {
        return bad("images contain NaN or infinity".into());
    }
    if lo < -1.0 - 1e-4 || hi > 1.0 + 1e-4 {
        let fix = if lo >= 0.0 && hi <= 255.0 && hi > 1.5 {
            "scale [0, 255] data by x/127.5 − 1"
        } else {
            "samples drawn with --no-clip can leave [−1, 1]: clamp them to [−1, 1], or sample without --no-clip"
        };
        return bad(format!(
            "image values span [{lo:.3}, {hi:.3}]: expected [−1, 1] ({fix})"
        ));
    }
    if labels.size() != [n] || labels.kind() != Kind::Int64 {
        return bad(format!(
            "labels have shape {:?} ({:?}) for {n} images: expected [{n}] int64",
            labels.size(),
            labels.kind()
        ));
    }
    let (lmin, lmax) = (labels.min().int64_value(&[]), labels.max().int64_value(&[]));
    if lmin < -1 || lmax > 9 {
        return bad(format!(
            "labels span {lmin}..={lmax}: expected 0..=9, or −1 for 'no label'"
        ));
    }
    if lmin == -1 && lmax != -1 {
        return bad("some labels are −1 and some are not: use −1 for all images or none".into());
    }
    Ok(())
}

/// The classifier plus the real test set's statistics in its feature space.
pub struct Evaluator {
    pub classifier: Trained,
    /// Features of every real test image.
    pub test_features: Tensor,
    pub test: Gaussian,
}

impl Evaluator {
    pub fn new(classifier: Trained, test_images: &Tensor) -> Self {
        let test_features = classifier.features(test_images).to_device(Device::Cpu);
        let test = gaussian(&test_features);
        Self {
            classifier,
            test_features,
            test,
        }
    }

    // ANCHOR: evaluate
    /// All metrics for images in [−1, 1] with requested labels (−1 = none).
    /// Precision and recall compare against `n` real test images drawn with `seed`.
    pub fn evaluate(&self, images: &Tensor, labels: &Tensor, seed: i64) -> Result<Metrics> {
        check_samples(images, labels)?;
        let n = images.size()[0];
        let features = self.classifier.features(images).to_device(Device::Cpu);
        let accuracy = (labels.int64_value(&[0]) >= 0).then(|| {
            let predicted = self.classifier.predict(&features);
            predicted
                .eq_tensor(labels)
                .to_kind(Kind::Double)
                .mean(Kind::Double)
                .double_value(&[])
        });
        let frechet = frechet_distance(&gaussian(&features), &self.test);
        let real = self.real_subset(n, seed);
        let (precision, recall) = precision_recall(&real, &features, K_NEIGHBOURS);
        Ok(Metrics {
            n,
            accuracy,
            frechet,
            precision,
            recall,
        })
    }
    // ANCHOR_END: evaluate

    /// The bootstrap standard error of the Fréchet distance of `images`
    /// ([`frechet_se`] on their features).
    pub fn frechet_se(&self, images: &Tensor, resamples: usize, seed: u64) -> f64 {
        let features = self.classifier.features(images).to_device(Device::Cpu);
        frechet_se(&features, &self.test, resamples, seed)
    }

    /// Features of `n` test images chosen at random with `seed` (all of them if n ≥ 10 000).
    fn real_subset(&self, n: i64, seed: i64) -> Tensor {
        let total = self.test_features.size()[0];
        if n >= total {
            return self.test_features.shallow_clone();
        }
        let idx = permutation(total, seed).narrow(0, 0, n);
        self.test_features.index_select(0, &idx)
    }
}

/// A seeded permutation of 0..n (the data crate's, which leaves libtorch's RNG alone).
pub fn permutation(n: i64, seed: i64) -> Tensor {
    data::batches::permutation(n, seed as u64, u64::MAX)
}

/// The bootstrap standard error of the Fréchet distance between `features`
/// (n × D) and `reference`: the standard deviation of the FD over `resamples`
/// sets of n rows drawn from `features` with replacement. Seeded, so the same
/// call gives the same number, and libtorch's generator is left alone.
pub fn frechet_se(features: &Tensor, reference: &Gaussian, resamples: usize, seed: u64) -> f64 {
    let n = features.size()[0];
    let mut state = seed ^ 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as i64 % n
    };
    let fds: Vec<f64> = (0..resamples)
        .map(|_| {
            let idx: Vec<i64> = (0..n).map(|_| next()).collect();
            let sample = features.index_select(0, &Tensor::from_slice(&idx));
            frechet_distance(&gaussian(&sample), reference)
        })
        .collect();
    let mean = fds.iter().sum::<f64>() / fds.len().max(1) as f64;
    let var = fds.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / (fds.len().max(2) - 1) as f64;
    var.sqrt()
}

/// A warning when the Fréchet distance is unreliable: with n ≤ D samples the
/// covariance estimate of D features is rank-deficient.
pub fn small_sample_warning(n: i64) -> Option<String> {
    (n <= FEATURES).then(|| {
        format!("warning: {n} samples ≤ {FEATURES} feature dimensions: the covariance is singular and the Fréchet distance is unreliable (use n ≥ 1000)")
    })
}

/// The two reference rows at sample count `n`:
/// real training images against the test set (the floor any model should aim
/// for) and Gaussian noise clipped to [−1, 1] (the ceiling).
pub fn reference_rows(
    ev: &Evaluator,
    train: &data::Dataset,
    n: i64,
    seed: i64,
) -> Result<[(String, Metrics); 2]> {
    let idx = permutation(train.len(), seed).narrow(0, 0, n.min(train.len()));
    let images = train.images.index_select(0, &idx);
    let labels = train.labels.index_select(0, &idx);
    let real = ev.evaluate(&images, &labels, seed)?;
    tch::manual_seed(seed);
    let noise = Tensor::randn([n, 1, 28, 28], (Kind::Float, Device::Cpu)).clamp(-1.0, 1.0);
    let noise_labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(10);
    let noise = ev.evaluate(&noise, &noise_labels, seed)?;
    Ok([
        ("real train images (floor)".into(), real),
        ("clipped Gaussian noise (ceiling)".into(), noise),
    ])
}

/// A short name for a sample file's settings, from its metadata:
/// "DDIM-50 w=3", "DDPM-1000 w=1", "Heun-10 (19 evals) w=3",
/// "DPM++(2M)-20 Karras w=3".
pub fn describe(metadata: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let sampler: serde_json::Value = serde_json::from_str(metadata.get("sampler")?).ok()?;
    let steps = metadata.get("steps")?;
    let name = match sampler.get("sampler")?.as_str()? {
        "ddpm" => format!("DDPM-{steps}"),
        "ddim" => {
            let eta = sampler.get("eta")?.as_f64()?;
            if eta == 0.0 {
                format!("DDIM-{steps}")
            } else {
                format!("DDIM-{steps} η={eta}")
            }
        }
        ode @ ("euler" | "heun" | "dpm_solver_pp") => {
            let karras = if sampler.get("sigmas")?.get("karras").is_some() {
                " Karras"
            } else {
                ""
            };
            let evals = metadata.get("evaluations").filter(|e| *e != steps);
            let evals = evals.map_or(String::new(), |e| format!(" ({e} evals)"));
            let name = match ode {
                "euler" => "Euler",
                "heun" => "Heun",
                _ => "DPM++(2M)",
            };
            format!("{name}-{steps}{evals}{karras}")
        }
        other => other.to_string(),
    };
    Some(match metadata.get("guidance") {
        Some(w) => format!("{name} w={w}"),
        None => name,
    })
}
