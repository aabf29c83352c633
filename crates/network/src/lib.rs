//! The noise-prediction network ε_θ(x_t, t, y).
//!
//! What the training loop and the samplers see of a network is one trait,
//! [`NoisePredictor`]. This crate holds it, the timestep embedding, and
//! [`SeedUNet`], the small UNet of the seed tutorial, laid out so that a
//! PyTorch `state_dict` maps onto it name for name. The diffusers-compatible
//! `UNet` is a crate of its own beside this one (`unet`); `training::ModelConfig`
//! names either.
pub mod probe;
mod seed;

pub use probe::{record_shapes, Shape};
pub use seed::{SeedUNet, SeedUNetConfig};

use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NetworkError {
    #[error("time-embedding dimension must be even and positive, got {0}")]
    OddEmbeddingDim(i64),
    #[error("input must be (N, C, H, W), got shape {0:?}")]
    Rank(Vec<i64>),
    #[error("model expects {expected} image channel(s), input has {got}")]
    Channels { expected: i64, got: i64 },
    #[error("image size {h}×{w} is not divisible by {factor} (the model downsamples {factor}×)")]
    Size { h: i64, w: i64, factor: i64 },
    #[error("{what}: expected {expected} values (one per image), got shape {got:?}")]
    Batch {
        what: &'static str,
        expected: i64,
        got: Vec<i64>,
    },
    #[error("label {label} is out of range: classes are 0..{num_classes} (and {num_classes} = null for guidance)")]
    Label { label: i64, num_classes: i64 },
    #[error("labels were given to an unconditional model (built with num_classes = None)")]
    Unconditional,
    #[error("invalid config: {0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, NetworkError>;

// ANCHOR: trait
/// What the training loop and the samplers see of a network: given x_t
/// (N, C, H, W), timesteps t (N,) and optional labels y (N,), return a tensor of
/// x_t's shape (ε̂, x̂_0 or v̂, depending on how it was trained). `train`
/// switches dropout on.
pub trait NoisePredictor {
    fn predict(&self, x_t: &Tensor, t: &Tensor, y: Option<&Tensor>, train: bool) -> Result<Tensor>;
    /// Number of real classes; the null class for guidance is this index.
    fn num_classes(&self) -> Option<i64>;
}
// ANCHOR_END: trait

/// The transformer's sinusoidal embedding, as DDPM uses it for timesteps.
pub const MAX_PERIOD: f64 = 10_000.0;

// ANCHOR: timestep_embedding
/// emb(t) = [sin(t·ω_0) … sin(t·ω_{d/2−1}), cos(t·ω_0) … cos(t·ω_{d/2−1})],
/// ω_i = MAX_PERIOD^(−i/(d/2)). Returns (N, d) f32.
pub fn timestep_embedding(t: &Tensor, dim: i64) -> Result<Tensor> {
    if dim <= 0 || dim % 2 != 0 {
        return Err(NetworkError::OddEmbeddingDim(dim));
    }
    // ANCHOR: SOLUTION_time_embedding
    let half = dim / 2;
    let i = Tensor::arange(half, (Kind::Float, t.device()));
    let omega = (i * (-MAX_PERIOD.ln() / half as f64)).exp();
    let angles = t.to_kind(Kind::Float).unsqueeze(1) * omega.unsqueeze(0);
    Ok(Tensor::cat(&[angles.sin(), angles.cos()], 1))
    // ANCHOR_END: SOLUTION_time_embedding
}
// ANCHOR_END: timestep_embedding

/// The embedding on the CPU for a list of timesteps, for figures.
pub fn embedding_table(timesteps: &[i64], dim: i64) -> Result<Tensor> {
    timestep_embedding(&Tensor::from_slice(timesteps).to_device(Device::Cpu), dim)
}

/// Checks x_t, t and y against a model's expectations (every model calls it first).
pub fn check_inputs(
    x: &Tensor,
    t: &Tensor,
    y: Option<&Tensor>,
    channels: i64,
    factor: i64,
    num_classes: Option<i64>,
) -> Result<()> {
    let [n, c, h, w] = x.size()[..] else {
        return Err(NetworkError::Rank(x.size()));
    };
    if c != channels {
        return Err(NetworkError::Channels {
            expected: channels,
            got: c,
        });
    }
    if h % factor != 0 || w % factor != 0 {
        return Err(NetworkError::Size { h, w, factor });
    }
    if t.size() != [n] {
        return Err(NetworkError::Batch {
            what: "timesteps",
            expected: n,
            got: t.size(),
        });
    }
    if let Some(y) = y {
        let Some(k) = num_classes else {
            return Err(NetworkError::Unconditional);
        };
        if y.size() != [n] {
            return Err(NetworkError::Batch {
                what: "labels",
                expected: n,
                got: y.size(),
            });
        }
        if n > 0 {
            // One read-back for both ends (on a GPU each read waits for the device).
            let ends = Tensor::stack(&[y.min(), y.max()], 0)
                .to_kind(Kind::Int64)
                .to_device(Device::Cpu);
            let ends = Vec::<i64>::try_from(&ends).unwrap_or_default();
            let (lo, hi) = (
                ends.first().copied().unwrap_or(0),
                ends.last().copied().unwrap_or(0),
            );
            if lo < 0 || hi > k {
                return Err(NetworkError::Label {
                    label: if lo < 0 { lo } else { hi },
                    num_classes: k,
                });
            }
        }
    }
    Ok(())
}

/// Labels for the class embedding: the given ones, or the null class
/// (= num_classes) for every image when none are given.
pub fn labels_or_null(y: Option<&Tensor>, n: i64, num_classes: i64, device: Device) -> Tensor {
    match y {
        Some(y) => y.to_kind(Kind::Int64),
        None => Tensor::full([n], num_classes, (Kind::Int64, device)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_matches_formula_in_f64() {
        let (dim, ts) = (16i64, [0i64, 1, 7, 250, 999]);
        let emb = embedding_table(&ts, dim).unwrap();
        assert_eq!(emb.size(), [5, 16]);
        let half = (dim / 2) as usize;
        let got = Vec::<f32>::try_from(emb.flatten(0, -1)).unwrap();
        let want = ndarray::Array2::from_shape_fn((ts.len(), dim as usize), |(r, c)| {
            let i = c % half;
            let w = (10_000f64).powf(-(i as f64) / half as f64);
            let a = ts[r] as f64 * w;
            if c < half {
                a.sin()
            } else {
                a.cos()
            }
        });
        for (g, w) in got.iter().zip(want.iter()) {
            // f32 angles up to 999 rad carry ~6e-5 absolute rounding error.
            assert!((*g as f64 - w).abs() < 2e-4, "{g} vs {w}");
        }
        // t = 0: the sin half is 0, the cos half is 1.
        assert!(got[..half].iter().all(|&v| v == 0.0));
        assert!(got[half..dim as usize].iter().all(|&v| v == 1.0));
    }

    #[test]
    fn odd_dimension_is_rejected() {
        let t = Tensor::from_slice(&[1i64]);
        assert_eq!(
            timestep_embedding(&t, 7).unwrap_err(),
            NetworkError::OddEmbeddingDim(7)
        );
        assert!(timestep_embedding(&t, 0).is_err());
        assert!(timestep_embedding(&t, 7)
            .unwrap_err()
            .to_string()
            .contains("even"));
    }
}
