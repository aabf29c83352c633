//! Rectified flow, or conditional flow matching with the straight path
//! (Liu et al. 2023; Lipman et al. 2023): x_t = (1 − t) x_0 + t ε for
//! continuous t ∈ [0, 1], and its velocity u = dx_t/dt = ε − x_0. The
//! training loss and the samplers both read these, so they live here, beside
//! the diffusion schedule.
use crate::{ForwardError, Result};
use tch::{Kind, Tensor};

/// The network is shown t · 1000 (Stable Diffusion 3's convention), so its
/// timestep embedding sees the range of a diffusion model with T = 1000.
pub const FLOW_TIME_SCALE: f64 = 1000.0;

/// t as (N, 1, …, 1), checked against the batch of `x`.
fn per_image(t: &Tensor, x: &Tensor) -> Result<Tensor> {
    let n = x.size()[0];
    if t.size() != [n] || !t.is_floating_point() {
        return Err(ForwardError::ShapeMismatch {
            what: "flow times t (a float tensor, one t in [0, 1] per image)",
            expected: vec![n],
            got: t.size(),
        });
    }
    let mut shape = vec![1i64; x.dim()];
    shape[0] = n;
    Ok(t.to_kind(x.kind()).view(shape.as_slice()))
}

// ANCHOR: flow_path
/// A point on the straight path from the image to the noise (eq. 1):
/// x_t = (1 − t) x_0 + t ε, one t per image.
pub fn flow_interpolate(x0: &Tensor, noise: &Tensor, t: &Tensor) -> Result<Tensor> {
    let t = per_image(t, x0)?;
    Ok((1.0 - &t) * x0 + t * noise)
}

/// The path's velocity u = dx_t/dt = ε − x_0 (eq. 2): the same at every t,
/// and the network's regression target.
pub fn flow_velocity(x0: &Tensor, noise: &Tensor) -> Tensor {
    noise - x0
}
// ANCHOR_END: flow_path

// ANCHOR: flow_read_back
/// What a predicted velocity v̂ says about the two ends of the path (eq. 4):
/// x̂_0 = x_t − t v̂ and ε̂ = x_t + (1 − t) v̂.
pub fn flow_x0_and_eps(x_t: &Tensor, t: &Tensor, u: &Tensor) -> Result<(Tensor, Tensor)> {
    let t = per_image(t, x_t)?;
    Ok((x_t - &t * u, x_t + (1.0 - t) * u))
}
// ANCHOR_END: flow_read_back

/// n flow times t ~ U(0, 1), float32 (the training distribution of
/// rectified flow; Stable Diffusion 3 uses a logit-normal instead).
pub fn sample_flow_times(n: i64, device: tch::Device) -> Tensor {
    Tensor::rand([n], (Kind::Float, device))
}
