//! SeedUNet: the small UNet of the seed tutorial, restated from its description.
//!
//! Variable names equal the keys of a PyTorch `state_dict` of the same layout
//! (see `scripts/parity/network.py`), so one safetensors file loads in both:
//!
//! | VarStore / state_dict key      | shape                  | role                          |
//! |--------------------------------|------------------------|-------------------------------|
//! | `down1.weight`, `down1.bias`   | (C, in, 3, 3), (C)     | conv, stride 2: H → H/2       |
//! | `norm1.weight`, `norm1.bias`   | (C), (C)               | GroupNorm(32, C)              |
//! | `down2.weight`, `down2.bias`   | (2C, C, 3, 3), (2C)    | conv, stride 2: H/2 → H/4     |
//! | `norm2.weight`, `norm2.bias`   | (2C), (2C)             | GroupNorm(32, 2C)             |
//! | `time_mlp.weight`, `.bias`     | (2C, C), (2C)          | Linear(C → 2C) on emb(t)      |
//! | `class_emb.weight`             | (K + 1, 2C)            | labels, row K = null class    |
//! | `mid.weight`, `mid.bias`       | (2C, 2C, 3, 3), (2C)   | residual middle conv          |
//! | `mid_norm.weight`, `.bias`     | (2C), (2C)             | GroupNorm(32, 2C)             |
//! | `up2.weight`, `up2.bias`       | (C, 2C, 3, 3), (C)     | conv after upsampling to H/2  |
//! | `up2_norm.weight`, `.bias`     | (C), (C)               | GroupNorm(32, C)              |
//! | `up1.weight`, `up1.bias`       | (C, C, 3, 3), (C)      | conv after upsampling to H    |
//! | `up1_norm.weight`, `.bias`     | (C), (C)               | GroupNorm(32, C)              |
//! | `skip.weight`, `skip.bias`     | (C, in, 3, 3), (C)     | only with `full_res_skip`     |
//! | `out.weight`, `out.bias`       | (in, C, 3, 3), (in)    | back to image channels        |
use crate::probe::{report, Seen};
use crate::{
    check_inputs, labels_or_null, timestep_embedding, NetworkError, NoisePredictor, Result,
};
use tch::nn::{self, Module};
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeedUNetConfig {
    /// Image channels: 1 (MNIST, Fashion-MNIST) or 3 (CIFAR-10).
    pub in_channels: i64,
    /// Base width C; must be a multiple of 32 for GroupNorm(32).
    pub channels: i64,
    /// Number of classes K for conditioning, or None for an unconditional model.
    pub num_classes: Option<i64>,
    /// Add a 3×3 convolution of x_t at full resolution to the decoder's last
    /// features. The seed has no such path: its H×W output is upsampled from
    /// H/2 features, so it cannot follow the per-pixel noise (see "Measuring
    /// samples"). Off by default, which is the seed's layout.
    #[serde(default)]
    pub full_res_skip: bool,
}

impl Default for SeedUNetConfig {
    fn default() -> Self {
        Self {
            in_channels: 1,
            channels: 64,
            num_classes: Some(10),
            full_res_skip: false,
        }
    }
}

/// conv 3×3 → GroupNorm(32) → ReLU, the repeated unit of the seed model.
#[derive(Debug)]
struct ConvNorm {
    name: &'static str,
    norm_name: &'static str,
    conv: nn::Conv2D,
    norm: nn::GroupNorm,
}

impl ConvNorm {
    fn new(
        vs: &nn::Path,
        name: &'static str,
        norm: &'static str,
        cin: i64,
        cout: i64,
        stride: i64,
    ) -> Self {
        let cfg = nn::ConvConfig {
            stride,
            padding: 1,
            ..Default::default()
        };
        Self {
            name,
            norm_name: norm,
            conv: nn::conv2d(vs / name, cin, cout, 3, cfg),
            norm: nn::group_norm(vs / norm, 32, cout, Default::default()),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let out = self.norm.forward(&self.conv.forward(x)).relu();
        report(self.name, &[self.name, self.norm_name], &out);
        out
    }
}

#[derive(Debug)]
pub struct SeedUNet {
    pub config: SeedUNetConfig,
    down1: ConvNorm,
    down2: ConvNorm,
    time_mlp: nn::Linear,
    class_emb: Option<nn::Embedding>,
    mid: ConvNorm,
    up2: ConvNorm,
    up1: ConvNorm,
    skip: Option<Seen<nn::Conv2D>>,
    out: Seen<nn::Conv2D>,
}

impl SeedUNet {
    pub fn new(vs: &nn::Path, config: SeedUNetConfig) -> Result<Self> {
        let SeedUNetConfig {
            in_channels: cin,
            channels: c,
            num_classes,
            full_res_skip,
        } = config;
        if c <= 0 || c % 32 != 0 || c % 2 != 0 {
            return Err(NetworkError::Config(format!(
                "channels = {c}: must be a positive multiple of 32 (GroupNorm(32))"
            )));
        }
        if !(cin == 1 || cin == 3) {
            return Err(NetworkError::Config(format!(
                "in_channels = {cin}: use 1 or 3"
            )));
        }
        if num_classes.is_some_and(|k| k < 1) {
            return Err(NetworkError::Config(
                "num_classes must be at least 1".into(),
            ));
        }
        Ok(Self {
            config,
            down1: ConvNorm::new(vs, "down1", "norm1", cin, c, 2),
            down2: ConvNorm::new(vs, "down2", "norm2", c, 2 * c, 2),
            time_mlp: nn::linear(vs / "time_mlp", c, 2 * c, Default::default()),
            class_emb: num_classes
                .map(|k| nn::embedding(vs / "class_emb", k + 1, 2 * c, Default::default())),
            mid: ConvNorm::new(vs, "mid", "mid_norm", 2 * c, 2 * c, 1),
            up2: ConvNorm::new(vs, "up2", "up2_norm", 2 * c, c, 1),
            up1: ConvNorm::new(vs, "up1", "up1_norm", c, c, 1),
            skip: full_res_skip.then(|| {
                let cfg = nn::ConvConfig {
                    padding: 1,
                    ..Default::default()
                };
                Seen::new("skip", nn::conv2d(vs / "skip", cin, c, 3, cfg))
            }),
            out: Seen::new(
                "out",
                nn::conv2d(
                    vs / "out",
                    c,
                    cin,
                    3,
                    nn::ConvConfig {
                        padding: 1,
                        ..Default::default()
                    },
                ),
            ),
        })
    }

    // ANCHOR: seed_forward
    /// ε_θ(x_t, t, y).
    pub fn forward_t(&self, x: &Tensor, t: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
        let c = self.config.channels;
        check_inputs(x, t, y, self.config.in_channels, 4, self.config.num_classes)?;
        let n = x.size()[0];
        // Encoder: two stride-2 convolutions, H → H/2 → H/4.
        let d1 = self.down1.forward(x); // (N, C, H/2, W/2)
        let d2 = self.down2.forward(&d1); // (N, 2C, H/4, W/4)

        // Conditioning: ReLU(Linear(emb(t))) plus the class embedding, one 2C vector per image.
        let time = self.time_mlp.forward(&timestep_embedding(t, c)?).relu();
        let cond = match (&self.class_emb, self.config.num_classes) {
            (Some(emb), Some(k)) => time + emb.forward(&labels_or_null(y, n, k, x.device())),
            _ => time,
        };
        // Middle: add the conditioning at every pixel, then a residual conv block.
        let h = d2 + cond.view([n, 2 * c, 1, 1]);
        let h = &h + self.mid.forward(&h);
        // Decoder: nearest-neighbour upsampling, conv, and an additive skip from the encoder.
        let h = self.up2.forward(&upsample(&h)) + d1; // (N, C, H/2, W/2)
        let h = self.up1.forward(&upsample(&h)); // (N, C, H, W)
        let h = match &self.skip {
            // Full-resolution path from x_t itself (off in the seed layout).
            Some(skip) => h + skip.forward(x),
            None => h,
        };
        Ok(self.out.forward(&h))
    }
    // ANCHOR_END: seed_forward
}

/// Nearest-neighbour upsampling by 2, as PyTorch's `F.interpolate(scale_factor=2)`.
pub(crate) fn upsample(x: &Tensor) -> Tensor {
    let s = x.size();
    x.upsample_nearest2d([s[2] * 2, s[3] * 2], None, None)
}

impl NoisePredictor for SeedUNet {
    fn predict(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        y: Option<&Tensor>,
        _train: bool,
    ) -> Result<Tensor> {
        self.forward_t(x_t, t, y)
    }

    fn num_classes(&self) -> Option<i64> {
        self.config.num_classes
    }
}
