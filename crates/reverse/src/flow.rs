//! Sampling a rectified-flow model (the "Flow matching" chapter): the ODE
//! dx/dt = v_θ(x, t) from t = 1 (pure noise) to t = 0, solved with Euler's
//! or Heun's method on a grid of times.
use crate::{Result, ReverseError, StepRecord};
use forward::{flow_x0_and_eps, FLOW_TIME_SCALE};
use network::NoisePredictor;
use tch::{Kind, Tensor};

/// The two solvers of the chapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowSolver {
    /// x_{t'} = x_t + (t' − t) v(x_t, t): one evaluation a step.
    Euler,
    /// Euler, then the trapezoid rule with a second evaluation at the Euler
    /// point: 2S evaluations. Unlike EDM's slope at σ = 0, the velocity at
    /// t = 0 is defined, so the last step is corrected too.
    Heun,
}

/// A flow sampler and its settings (the vocabulary of diffusers'
/// `FlowMatchEulerDiscreteScheduler`: `shift`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FlowSampler {
    pub solver: FlowSolver,
    pub steps: usize,
    /// Time shift s (Stable Diffusion 3, eq. 23): t ↦ s t / (1 + (s − 1) t).
    /// 1 leaves the uniform grid; s > 1 spends more steps at high noise.
    pub shift: f64,
    /// Clip x̂_0 = x_t − t v̂ to the data range [−1, 1] at every evaluation
    /// with t > 0, as DDIM does (then v̂ = (x_t − x̂_0)/t), and the sample at
    /// t = 0 (where Heun's last correction can leave the range).
    pub clip: bool,
}

impl FlowSampler {
    /// Euler on S uniform steps, x̂_0 clipped (the chapter's default).
    pub fn euler(steps: usize) -> Self {
        Self {
            solver: FlowSolver::Euler,
            steps,
            shift: 1.0,
            clip: true,
        }
    }

    pub fn heun(steps: usize) -> Self {
        Self {
            solver: FlowSolver::Heun,
            ..Self::euler(steps)
        }
    }

    /// The same sampler without clipping (for data outside [−1, 1]).
    pub fn without_clip(self) -> Self {
        Self {
            clip: false,
            ..self
        }
    }

    // ANCHOR: flow_times
    /// t_0 = 1 > t_1 > … > t_S = 0: S uniform steps, then the shift.
    pub fn times(&self) -> Result<Vec<f64>> {
        let (steps, s) = (self.steps, self.shift);
        if steps == 0 || !(s.is_finite() && s > 0.0) {
            return Err(ReverseError::Config(format!(
                "a flow sampler with {steps} steps and shift {s}: needs at least 1 step and a finite shift above 0 (1 = no shift)"
            )));
        }
        Ok((0..=steps)
            .map(|i| 1.0 - i as f64 / steps as f64)
            .map(|t| s * t / (1.0 + (s - 1.0) * t))
            .collect())
    }
    // ANCHOR_END: flow_times

    /// Network evaluations per sample: S for Euler, 2S for Heun.
    pub fn evaluations(&self) -> usize {
        match self.solver {
            FlowSolver::Euler => self.steps,
            FlowSolver::Heun => 2 * self.steps,
        }
    }

    /// Checks the settings; returns the evaluations a sample costs.
    pub fn check(&self) -> Result<usize> {
        self.times()?;
        Ok(self.evaluations())
    }
}

// ANCHOR: flow_euler_step
/// One Euler step of dx/dt = v from t to t_next (t_next < t).
pub fn flow_euler_step(x: &Tensor, v: &Tensor, t: f64, t_next: f64) -> Tensor {
    x + v * (t_next - t)
}
// ANCHOR_END: flow_euler_step

/// A rectified-flow model: what a flow sampler needs (a guided one works as
/// it is: guidance mixes velocities as it mixes noise predictions).
#[derive(Clone, Copy)]
pub struct FlowPipeline<'a> {
    pub model: &'a dyn NoisePredictor,
}

impl<'a> FlowPipeline<'a> {
    pub fn new(model: &'a dyn NoisePredictor) -> Self {
        Self { model }
    }

    /// v_θ(x, t) for the whole batch at one time t.
    pub fn velocity(&self, x: &Tensor, t: f64, y: Option<&Tensor>) -> Result<Tensor> {
        let n = x.size()[0];
        let t = Tensor::full([n], t * FLOW_TIME_SCALE, (Kind::Float, x.device()));
        Ok(tch::no_grad(|| self.model.predict(x, &t, y, false))?)
    }

    /// The velocity a sampler steps with: v_θ, or (x − clip(x − t v_θ))/t.
    fn step_velocity(&self, x: &Tensor, t: f64, y: Option<&Tensor>, clip: bool) -> Result<Tensor> {
        let v = self.velocity(x, t, y)?;
        Ok(if clip && t > 0.0 {
            (x - (x - &v * t).clamp(-1.0, 1.0)) / t
        } else {
            v
        })
    }

    /// Solves from x_1 (an N(0, I) draw) to x_0.
    pub fn sample(&self, sampler: &FlowSampler, x1: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
        self.sample_observed(sampler, x1, y, &mut |_| {})
    }

    // ANCHOR: flow_sample
    /// [`FlowPipeline::sample`], with `observe` shown every evaluation as a
    /// [`StepRecord`] whose `t` is 1000 t (the network's timestep).
    pub fn sample_observed(
        &self,
        sampler: &FlowSampler,
        x1: &Tensor,
        y: Option<&Tensor>,
        observe: &mut dyn FnMut(&StepRecord),
    ) -> Result<Tensor> {
        let ts = sampler.times()?;
        let mut x = x1.shallow_clone();
        for w in ts.windows(2) {
            let (t, t_next) = (w[0], w[1]);
            let v = self.step_velocity(&x, t, y, sampler.clip)?;
            let x_euler = flow_euler_step(&x, &v, t, t_next);
            let x_next = match sampler.solver {
                FlowSolver::Heun => {
                    record(observe, &x, t, &v, &x_euler, t_next)?;
                    let v2 = self.step_velocity(&x_euler, t_next, y, sampler.clip)?;
                    let x_heun = flow_euler_step(&x, &((&v + &v2) * 0.5), t, t_next);
                    record(observe, &x_euler, t_next, &v2, &x_heun, t_next)?;
                    x = x_heun;
                    continue;
                }
                FlowSolver::Euler => x_euler,
            };
            record(observe, &x, t, &v, &x_next, t_next)?;
            x = x_next;
        }
        Ok(if sampler.clip { x.clamp(-1.0, 1.0) } else { x })
    }
    // ANCHOR_END: flow_sample
}

/// One evaluation, as the trace and the progress bars see it.
fn record(
    observe: &mut dyn FnMut(&StepRecord),
    x: &Tensor,
    t: f64,
    v: &Tensor,
    x_next: &Tensor,
    t_next: f64,
) -> Result<()> {
    let n = x.size()[0];
    let t_all = Tensor::full([n], t, (Kind::Float, x.device()));
    let (x0, _) = flow_x0_and_eps(x, &t_all, v)?;
    let step = |t: f64| (t * FLOW_TIME_SCALE).round() as i64;
    observe(&StepRecord {
        t: step(t),
        prev: (t_next > 0.0).then(|| step(t_next)),
        x_t: x.shallow_clone(),
        out: v.shallow_clone(),
        x0,
        z: x.zeros_like(),
        x_prev: x_next.shallow_clone(),
    });
    Ok(())
}
