//! The noise-prediction network ε_θ(x_t, t, y).
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NetworkError {
    #[error("time-embedding dimension must be even and positive, got {0}")]
    OddEmbeddingDim(i64),
    #[error("{0}")]
    BadInput(String),
}

pub type Result<T> = std::result::Result<T, NetworkError>;

/// What every denoiser offers the training loop and the samplers: given x_t
/// (N, C, H, W), timesteps t (N,) and optional labels y (N,), predict a tensor
/// of x_t's shape.
pub trait NoisePredictor {
    fn predict(&self, x_t: &Tensor, t: &Tensor, y: Option<&Tensor>, train: bool) -> Result<Tensor>;
}

/// The transformer's sinusoidal embedding, as DDPM uses it for timesteps.
pub const MAX_PERIOD: f64 = 10_000.0;

// ANCHOR: timestep_embedding
/// emb(t)[i]       = sin(t · ω_i),  emb(t)[i + d/2] = cos(t · ω_i),
/// ω_i = MAX_PERIOD^(−i/(d/2)),  i = 0 … d/2 − 1.  Returns (N, d) f32.
pub fn timestep_embedding(t: &Tensor, dim: i64) -> Result<Tensor> {
    if dim <= 0 || dim % 2 != 0 {
        return Err(NetworkError::OddEmbeddingDim(dim));
    }
    let half = dim / 2;
    let i = Tensor::arange(half, (Kind::Float, t.device()));
    let omega = (i * (-MAX_PERIOD.ln() / half as f64)).exp();
    let angles = t.to_kind(Kind::Float).unsqueeze(1) * omega.unsqueeze(0);
    Ok(Tensor::cat(&[angles.sin(), angles.cos()], 1))
}
// ANCHOR_END: timestep_embedding

/// The embedding on the CPU for a list of timesteps, for figures.
pub fn embedding_table(timesteps: &[i64], dim: i64) -> Result<Tensor> {
    timestep_embedding(&Tensor::from_slice(timesteps).to_device(Device::Cpu), dim)
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
        // t = 0: sin part is 0, cos part is 1.
        assert!(
            got[..half].iter().all(|&v| v == 0.0)
                && got[half..dim as usize].iter().all(|&v| v == 1.0)
        );
    }

    #[test]
    fn odd_dimension_is_rejected() {
        let t = Tensor::from_slice(&[1i64]);
        assert_eq!(
            timestep_embedding(&t, 7).unwrap_err(),
            NetworkError::OddEmbeddingDim(7)
        );
        assert!(timestep_embedding(&t, 7)
            .unwrap_err()
            .to_string()
            .contains("even"));
    }
}
