//! Diffusion in two dimensions ("Diffusion in two dimensions"): a mixture of
//! Gaussians whose every noised marginal, and so its exact noise prediction,
//! has a closed form, and a small MLP that learns the same thing. Points are
//! stored as (N, 2, 1, 1) tensors, two-channel images of one pixel, so the
//! book's `forward`, `reverse` and `classifier-free` code runs on them as it is.
use network::{NetworkError, NoisePredictor};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// K isotropic Gaussians N(μ_k, s² I) with equal weights; component k is class k.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixture {
    pub means: Vec<[f64; 2]>,
    pub std: f64,
}

impl Mixture {
    /// `k` components evenly spaced on a circle of radius `r`.
    pub fn ring(k: usize, r: f64, std: f64) -> Self {
        let means = (0..k)
            .map(|i| {
                let a = std::f64::consts::TAU * i as f64 / k as f64;
                [r * a.cos(), r * a.sin()]
            })
            .collect();
        Self { means, std }
    }

    pub fn num_classes(&self) -> i64 {
        self.means.len() as i64
    }

    fn means_tensor(&self, device: Device) -> Tensor {
        let flat: Vec<f64> = self.means.iter().flatten().copied().collect();
        Tensor::from_slice(&flat)
            .view([-1, 2])
            .to_kind(Kind::Float)
            .to_device(device)
    }

    /// n draws of x_0 with their classes: (points (n, 2, 1, 1), labels (n,)).
    pub fn sample(&self, n: i64, device: Device) -> (Tensor, Tensor) {
        let y = Tensor::randint(self.num_classes(), [n], (Kind::Int64, device));
        let x = self.means_tensor(device).index_select(0, &y)
            + Tensor::randn([n, 2], (Kind::Float, device)) * self.std;
        (x.view([n, 2, 1, 1]), y)
    }

    // ANCHOR: responsibilities
    /// The posterior probability r_k of each component given x_t, from the
    /// offsets `d` (n, K, 2) of x_t from each component's centre and the
    /// components' shared variance `var` (n, 1, 1): (n, K, 1). A real label
    /// keeps only its component; the null label K (or none) keeps all.
    fn responsibilities(&self, d: &Tensor, var: &Tensor, y: Option<&Tensor>) -> Tensor {
        let n = d.size()[0];
        let mut logit =
            -d.square().sum_dim_intlist(2, false, Kind::Double) / (var.view([n, 1]) * 2.0);
        if let Some(y) = y {
            let k = self.num_classes();
            let keep = y
                .view([n, 1])
                .eq_tensor(&Tensor::arange(k, (Kind::Int64, d.device())).view([1, k]))
                .logical_or(&y.view([n, 1]).eq(k));
            logit = logit.masked_fill(&keep.logical_not(), f64::NEG_INFINITY);
        }
        logit.softmax(1, Kind::Double).unsqueeze(2)
    }
    // ANCHOR_END: responsibilities

    // ANCHOR: marginal
    /// The density of x_t, p_t(x) = (1/K) Σ_k N(x; √ᾱ_t μ_k, (ᾱ_t s² + 1 − ᾱ_t) I),
    /// at a point, for class `y` (one component) or for all (None).
    pub fn density(&self, x: [f64; 2], alpha_bar: f64, y: Option<usize>) -> f64 {
        let var = alpha_bar * self.std * self.std + 1.0 - alpha_bar;
        let comp = |m: &[f64; 2]| {
            let d2 =
                (x[0] - alpha_bar.sqrt() * m[0]).powi(2) + (x[1] - alpha_bar.sqrt() * m[1]).powi(2);
            (-d2 / (2.0 * var)).exp() / (std::f64::consts::TAU * var)
        };
        match y {
            Some(k) => comp(&self.means[k]),
            None => self.means.iter().map(comp).sum::<f64>() / self.means.len() as f64,
        }
    }
    // ANCHOR_END: marginal

    /// The density of x_t, [`Mixture::density`], at the centres of an n × n
    /// grid of cells over [−h, h]², row 0 at the bottom (for a shaded panel).
    pub fn density_grid(&self, h: f64, alpha_bar: f64, n: usize) -> (usize, Vec<f64>) {
        let c = |i: usize| -h + (i as f64 + 0.5) * 2.0 * h / n as f64;
        let cells = (0..n * n).map(|i| self.density([c(i % n), c(i / n)], alpha_bar, None));
        (n, cells.collect())
    }

    /// For points `x` (n, 2, 1, 1) asked for classes `y`: the fraction nearest
    /// to their class's mean, and their RMS distance from that mean.
    pub fn accuracy_and_spread(&self, x: &Tensor, y: &Tensor) -> (f64, f64) {
        let n = x.size()[0];
        let v = Vec::<f64>::try_from(x.view([n * 2]).to_kind(Kind::Double)).unwrap_or_default();
        let y = Vec::<i64>::try_from(y).unwrap_or_default();
        let (mut hit, mut d2) = (0, 0.0);
        for (i, &k) in y.iter().enumerate() {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            let dist = |m: &[f64; 2]| (a - m[0]).powi(2) + (b - m[1]).powi(2);
            let nearest = (0..self.means.len())
                .min_by(|&i, &j| dist(&self.means[i]).total_cmp(&dist(&self.means[j])))
                .unwrap_or(0);
            hit += (nearest == k as usize) as usize;
            d2 += dist(&self.means[k as usize]);
        }
        (hit as f64 / n as f64, (d2 / n as f64).sqrt())
    }
}

// ANCHOR: exact_eps
/// The exact ε of every noised marginal: ε*(x_t, t) = −√(1 − ᾱ_t) ∇ log p_t(x_t),
/// with ∇ log p_t = Σ_k r_k(x) (√ᾱ_t μ_k − x)/v_t, r_k the posterior
/// probability of component k and v_t = ᾱ_t s² + 1 − ᾱ_t. A label picks its
/// component; the null label K (or none) gives the whole mixture.
pub struct MixtureEps<'a> {
    pub mixture: &'a Mixture,
    pub alpha_bar: &'a Tensor,
}

impl NoisePredictor for MixtureEps<'_> {
    fn predict(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        y: Option<&Tensor>,
        _: bool,
    ) -> network::Result<Tensor> {
        let n = x_t.size()[0];
        let x = x_t.view([n, 1, 2]).to_kind(Kind::Double);
        let ab = self
            .alpha_bar
            .index_select(0, t)
            .to_kind(Kind::Double)
            .view([n, 1, 1]);
        let mu = self
            .mixture
            .means_tensor(x_t.device())
            .to_kind(Kind::Double)
            .unsqueeze(0); // (1, K, 2)
        let var = &ab * self.mixture.std.powi(2) + 1.0 - &ab;
        let diff = &ab.sqrt() * &mu - &x; // (n, K, 2): √ᾱ μ_k − x
        let r = self.mixture.responsibilities(&diff, &var, y); // (n, K, 1)
        let score = (r * diff).sum_dim_intlist(1, false, Kind::Double) / var.view([n, 1]);
        let eps = -score * (-ab.view([n, 1]) + 1.0).sqrt();
        Ok(eps.to_kind(x_t.kind()).view([n, 2, 1, 1]))
    }

    fn num_classes(&self) -> Option<i64> {
        Some(self.mixture.num_classes())
    }
}
// ANCHOR_END: exact_eps

// ANCHOR: exact_velocity
/// The exact velocity of rectified flow for the mixture ("Flow matching",
/// eq. 7): on the straight path x_t = (1 − t) x_0 + t ε, component k has
/// x_t ~ N((1 − t) μ_k, ω_t² I) with ω_t² = (1 − t)² s² + t², and
/// v*(x, t) = E[ε − x_0 | x_t = x] = Σ_k r_k(x) (−μ_k + (t − (1 − t) s²)/ω_t² · (x − (1 − t) μ_k)),
/// r_k the posterior probability of component k. The network's timestep is
/// 1000 t ([`forward::FLOW_TIME_SCALE`]); labels work as in [`MixtureEps`].
pub struct MixtureVelocity<'a> {
    pub mixture: &'a Mixture,
}

impl NoisePredictor for MixtureVelocity<'_> {
    fn predict(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        y: Option<&Tensor>,
        _: bool,
    ) -> network::Result<Tensor> {
        let n = x_t.size()[0];
        let x = x_t.view([n, 1, 2]).to_kind(Kind::Double);
        let t = (t.to_kind(Kind::Double) / forward::FLOW_TIME_SCALE).view([n, 1, 1]);
        let s2 = self.mixture.std.powi(2);
        let mu = self
            .mixture
            .means_tensor(x_t.device())
            .to_kind(Kind::Double)
            .unsqueeze(0); // (1, K, 2)
        let keep = (-&t + 1.0) * &mu; // (n, K, 2): where component k's x_t is centred
        let var = (-&t + 1.0).square() * s2 + t.square(); // (n, 1, 1)
        let d = &x - &keep; // x − (1 − t) μ_k
        let r = self.mixture.responsibilities(&d, &var, y); // (n, K, 1)
        let per_k = -&mu + (&t - (-&t + 1.0) * s2) / &var * d;
        let u = (r * per_k).sum_dim_intlist(1, false, Kind::Double);
        Ok(u.to_kind(x_t.kind()).view([n, 2, 1, 1]))
    }

    fn num_classes(&self) -> Option<i64> {
        Some(self.mixture.num_classes())
    }
}
// ANCHOR_END: exact_velocity

// ANCHOR: mlp
/// A small MLP ε_θ(x_t, t, y) for 2-D points: x_t, a sinusoidal embedding of t
/// and a learned class embedding (K real classes and the null class K),
/// concatenated, through three hidden layers of SiLU.
pub struct Mlp {
    layers: Vec<nn::Linear>,
    class_emb: nn::Embedding,
    num_classes: i64,
    emb_dim: i64,
}

impl Mlp {
    pub fn new(vs: &nn::Path, num_classes: i64, hidden: i64) -> Self {
        let emb_dim = 32;
        let dims = [2 + 2 * emb_dim, hidden, hidden, hidden, 2];
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| nn::linear(vs / format!("layer{i}"), d[0], d[1], Default::default()))
            .collect();
        let class_emb = nn::embedding(
            vs / "class_emb",
            num_classes + 1,
            emb_dim,
            Default::default(),
        );
        Self {
            layers,
            class_emb,
            num_classes,
            emb_dim,
        }
    }
}

impl NoisePredictor for Mlp {
    fn predict(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        y: Option<&Tensor>,
        _: bool,
    ) -> network::Result<Tensor> {
        let n = x_t.size()[0];
        if x_t.size()[1..] != [2, 1, 1] {
            return Err(NetworkError::Config(format!(
                "the 2-D MLP takes points of shape (N, 2, 1, 1), got {:?}",
                x_t.size()
            )));
        }
        let temb = network::timestep_embedding(t, self.emb_dim)?;
        let y = network::labels_or_null(y, n, self.num_classes, x_t.device());
        let mut h = Tensor::cat(&[x_t.view([n, 2]), temb, self.class_emb.forward(&y)], 1);
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h);
            if i + 1 < self.layers.len() {
                h = h.silu();
            }
        }
        Ok(h.view([n, 2, 1, 1]))
    }

    fn num_classes(&self) -> Option<i64> {
        Some(self.num_classes)
    }
}
// ANCHOR_END: mlp
