//! What one sampling step saw and did, as `Pipeline::run` shows it to its
//! observer (the `formats` crate writes a run of them to a file).
use tch::Tensor;

/// What one sampling step saw and did.
#[derive(Debug)]
pub struct StepRecord {
    pub t: i64,
    pub prev: Option<i64>,
    /// The input x_t.
    pub x_t: Tensor,
    /// The raw model output (ε̂, x̂_0 or v̂).
    pub out: Tensor,
    /// The predicted x̂_0 (after clipping, if on).
    pub x0: Tensor,
    /// The noise added (zeros where none).
    pub z: Tensor,
    /// The result x_{prev}.
    pub x_prev: Tensor,
}

impl StepRecord {
    /// A record sharing this one's storage (for keeping what a sampler's
    /// observer is shown).
    pub fn shallow_clone(&self) -> Self {
        Self {
            t: self.t,
            prev: self.prev,
            x_t: self.x_t.shallow_clone(),
            out: self.out.shallow_clone(),
            x0: self.x0.shallow_clone(),
            z: self.z.shallow_clone(),
            x_prev: self.x_prev.shallow_clone(),
        }
    }
}
