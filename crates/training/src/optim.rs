//! Adam and AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019), written out
//! so that their state (m, v and the step) can be checkpointed and restored
//! bit for bit.
use tch::{nn::VarStore, Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// true: AdamW (decay applied to the weights); false: Adam (L2 added to the gradient).
    pub decoupled: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 2e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: true,
        }
    }
}

#[derive(Debug)]
pub struct Adam {
    pub config: AdamConfig,
    /// Number of updates taken (the t of the bias correction).
    pub t: i64,
    names: Vec<String>,
    params: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl Adam {
    /// Optimises every trainable variable of `vs`, in name order.
    pub fn new(vs: &VarStore, config: AdamConfig) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, params): (Vec<_>, Vec<_>) = vars.into_iter().unzip();
        let zeros = |p: &Tensor| p.zeros_like().set_requires_grad(false);
        let m = params.iter().map(zeros).collect();
        let v = params.iter().map(zeros).collect();
        Self {
            config,
            t: 0,
            names,
            params,
            m,
            v,
        }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// Scales all gradients so that their joint L2 norm is at most `max_norm`;
    /// returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.grad())
            .filter(|g| g.defined())
            .collect();
        let sq: Vec<Tensor> = grads.iter().map(|g| g.square().sum(Kind::Float)).collect();
        let norm = Tensor::stack(&sq, 0)
            .sum(Kind::Float)
            .sqrt()
            .double_value(&[]);
        if norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            tch::no_grad(|| {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(scale);
                }
            });
        }
        norm
    }

    // ANCHOR: adam_step
    /// One update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        let AdamConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
            decoupled,
            ..
        } = self.config;
        self.t += 1;
        let bias1 = 1.0 - beta1.powi(self.t as i32);
        let bias2 = 1.0 - beta2.powi(self.t as i32);
        tch::no_grad(|| {
            for ((p, m), v) in self.params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let g = match (weight_decay > 0.0, decoupled) {
                    (true, true) => {
                        let _ = p.g_mul_scalar_(1.0 - lr * weight_decay); // AdamW
                        g
                    }
                    // Adam with L2 (a new tensor: the stored gradient stays as computed)
                    (true, false) => &g + &*p * weight_decay,
                    (false, _) => g,
                };
                let _ = m.lerp_(&g, 1.0 - beta1); //                     m ← β₁m + (1−β₁)g
                let _ = v.g_mul_scalar_(beta2).addcmul_(&(&g * (1.0 - beta2)), &g); // v ← β₂v + (1−β₂)g²
                let denom = (v.sqrt() / bias2.sqrt()).g_add_scalar_(eps);
                let _ = p.addcdiv_(&(&*m * (-lr / bias1)), &denom); //       p ← p − lr·m̂/(√v̂ + ε)
            }
        });
    }
    // ANCHOR_END: adam_step

    /// The moment buffers by prefix: ("adam_m", [(var, m)]), ("adam_v", [(var, v)]).
    /// The tensors share storage with the optimizer, so copying into them restores it.
    pub fn moments(&self) -> [(&'static str, Vec<(String, Tensor)>); 2] {
        let named = |bufs: &[Tensor]| {
            self.names
                .iter()
                .cloned()
                .zip(bufs.iter().map(Tensor::shallow_clone))
                .collect()
        };
        [("adam_m", named(&self.m)), ("adam_v", named(&self.v))]
    }

    /// The moment buffers as checkpoint entries `adam_m.<var>` and `adam_v.<var>`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.moments()
            .into_iter()
            .flat_map(|(prefix, bufs)| {
                bufs.into_iter()
                    .map(move |(n, t)| (format!("{prefix}.{n}"), t))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    /// Two steps of Adam on one scalar, against the textbook formulas in f64.
    #[test]
    fn matches_the_formulas() {
        for decoupled in [false, true] {
            let vs = VarStore::new(Device::Cpu);
            let w = vs.root().var("w", &[1], nn::Init::Const(1.5));
            let cfg = AdamConfig {
                lr: 0.1,
                weight_decay: 0.01,
                decoupled,
                ..Default::default()
            };
            let mut opt = Adam::new(&vs, cfg);
            let (mut p, mut m, mut v) = (1.5f64, 0.0, 0.0);
            for t in 1..=2 {
                opt.zero_grad();
                (&w * &w).sum(Kind::Float).backward(); // g = 2w
                opt.step(cfg.lr);
                let mut g = 2.0 * p;
                if decoupled {
                    p *= 1.0 - cfg.lr * cfg.weight_decay;
                } else {
                    g += cfg.weight_decay * p;
                }
                m = cfg.beta1 * m + (1.0 - cfg.beta1) * g;
                v = cfg.beta2 * v + (1.0 - cfg.beta2) * g * g;
                let (mh, vh) = (m / (1.0 - cfg.beta1.powi(t)), v / (1.0 - cfg.beta2.powi(t)));
                p -= cfg.lr * mh / (vh.sqrt() + cfg.eps);
                let got = w.double_value(&[0]);
                assert!(
                    (got - p).abs() < 1e-6,
                    "decoupled={decoupled} t={t}: {got} vs {p}"
                );
            }
        }
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2], nn::Init::Const(0.0));
        let mut opt = Adam::new(&vs, AdamConfig::default());
        (&w * Tensor::from_slice(&[3.0f32, 4.0]))
            .sum(Kind::Float)
            .backward(); // g = (3, 4), |g| = 5
        assert!((opt.clip_grad_norm(1.0) - 5.0).abs() < 1e-6);
        let g = Vec::<f32>::try_from(w.grad()).unwrap();
        assert!(
            (g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5,
            "{g:?}"
        );
    }
}
