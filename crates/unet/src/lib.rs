//! UNet: the subset of diffusers' `UNet2DModel` that a small image model
//! needs, weight for weight. The blocks are diffusers' blocks (ResnetBlock2D
//! with a time-embedding projection, DownBlock2D / AttnDownBlock2D,
//! UNetMidBlock2D, UpBlock2D / AttnUpBlock2D), the variables carry diffusers'
//! `state_dict` names, and [`UNetConfig`] uses diffusers' field names, so a
//! model trained with diffusers loads into the book's samplers and back.
//!
//! It sits beside the core, like a model zoo's entry: the samplers and the
//! training loop see it only through [`network::NoisePredictor`].
use network::probe::Seen;
use network::{check_inputs, labels_or_null, NetworkError, NoisePredictor, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// The down blocks this book supports (diffusers' names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownBlockType {
    DownBlock2D,
    AttnDownBlock2D,
}

/// The up blocks this book supports (diffusers' names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpBlockType {
    UpBlock2D,
    AttnUpBlock2D,
}

/// The one middle block diffusers' `UNet2DModel` has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MidBlockType {
    #[serde(rename = "UNetMidBlock2D")]
    UNetMidBlock2D,
}

/// A `UNet2DModel` config, in diffusers' vocabulary. Missing fields take
/// diffusers' defaults; `formats::unet_config_from_json` reads a diffusers
/// `config.json` and refuses the settings this subset lacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default = "UNetConfig::diffusers_default", deny_unknown_fields)]
pub struct UNetConfig {
    /// Height and width of the images (informational, as in diffusers).
    pub sample_size: Option<i64>,
    pub in_channels: i64,
    pub out_channels: i64,
    /// Channels of each resolution level, highest resolution first.
    pub block_out_channels: Vec<i64>,
    /// ResnetBlock2Ds per down block (up blocks have one more).
    pub layers_per_block: usize,
    pub down_block_types: Vec<DownBlockType>,
    pub up_block_types: Vec<UpBlockType>,
    /// `None`: no middle block.
    pub mid_block_type: Option<MidBlockType>,
    /// Self-attention in the middle block.
    pub add_attention: bool,
    /// Channels per attention head (heads = channels / this); `None`: one head.
    pub attention_head_dim: Option<i64>,
    pub norm_num_groups: i64,
    pub norm_eps: f64,
    /// Time embedding: [cos | sin] when true, [sin | cos] when false.
    pub flip_sin_to_cos: bool,
    /// ω_i = 10000^(−i / (d/2 − freq_shift)).
    pub freq_shift: i64,
    /// Rows of the class embedding. This book uses K + 1 for K classes: the
    /// last row is the null class of classifier-free guidance.
    pub num_class_embeds: Option<i64>,
    pub dropout: f64,
}

impl UNetConfig {
    /// diffusers' `UNet2DModel()` defaults (a 4-level, 256×256 RGB model).
    pub fn diffusers_default() -> Self {
        use DownBlockType::*;
        use UpBlockType::*;
        Self {
            sample_size: None,
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![224, 448, 672, 896],
            layers_per_block: 2,
            down_block_types: vec![
                DownBlock2D,
                AttnDownBlock2D,
                AttnDownBlock2D,
                AttnDownBlock2D,
            ],
            up_block_types: vec![AttnUpBlock2D, AttnUpBlock2D, AttnUpBlock2D, UpBlock2D],
            mid_block_type: Some(MidBlockType::UNetMidBlock2D),
            add_attention: true,
            attention_head_dim: Some(8),
            norm_num_groups: 32,
            norm_eps: 1e-5,
            flip_sin_to_cos: true,
            freq_shift: 0,
            num_class_embeds: None,
            dropout: 0.0,
        }
    }

    /// The book's Fashion-MNIST model: 28 → 14 → 7 with 32, 64, 64 channels,
    /// one ResnetBlock2D per level, attention only at 7×7, 10 classes + null.
    pub fn fashion() -> Self {
        use DownBlockType::*;
        use UpBlockType::*;
        Self {
            sample_size: Some(28),
            in_channels: 1,
            out_channels: 1,
            block_out_channels: vec![32, 64, 64],
            layers_per_block: 1,
            down_block_types: vec![DownBlock2D, DownBlock2D, AttnDownBlock2D],
            up_block_types: vec![AttnUpBlock2D, UpBlock2D, UpBlock2D],
            mid_block_type: Some(MidBlockType::UNetMidBlock2D),
            add_attention: true,
            attention_head_dim: Some(16),
            norm_num_groups: 8,
            norm_eps: 1e-5,
            flip_sin_to_cos: true,
            freq_shift: 0,
            num_class_embeds: Some(11),
            dropout: 0.0,
        }
    }

    /// K real classes (the null class is row K of the embedding).
    pub fn num_classes(&self) -> Option<i64> {
        self.num_class_embeds.map(|n| n - 1)
    }

    /// Width of the time (and class) embedding: 4 × the first level's channels.
    pub fn time_embed_dim(&self) -> i64 {
        4 * self.block_out_channels[0]
    }

    /// How much the model downsamples: image sides must be divisible by it.
    pub fn factor(&self) -> i64 {
        1 << (self.block_out_channels.len().max(1) - 1)
    }

    /// About how many parameters, from the widths alone (within a factor of
    /// 2 for the book's layouts): enough to refuse an absurd config early.
    pub fn approx_parameters(&self) -> f64 {
        let sq = |v: i64| (v as f64).powi(2);
        let per_level = 46.0 * self.layers_per_block as f64 + 36.0;
        let levels: f64 = self
            .block_out_channels
            .iter()
            .map(|&v| per_level * sq(v))
            .sum();
        let last = self.block_out_channels.last().copied().unwrap_or(0);
        let first = self.block_out_channels.first().copied().unwrap_or(0);
        levels + 40.0 * sq(last) + 20.0 * sq(first)
    }

    fn heads(&self, channels: i64) -> i64 {
        self.attention_head_dim.map_or(1, |d| channels / d)
    }

    /// Every combination `UNet::new` can build, with one line for the rest.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(NetworkError::Config(m));
        let levels = self.block_out_channels.len();
        if levels == 0 || self.block_out_channels.iter().any(|&c| c <= 0) {
            return bad("block_out_channels must be a non-empty list of positive integers".into());
        }
        if self.down_block_types.len() != levels || self.up_block_types.len() != levels {
            return bad(format!(
                "block_out_channels has {levels} levels but down_block_types has {} and up_block_types {}: give one block type per level",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if self.layers_per_block == 0 {
            return bad("layers_per_block must be at least 1".into());
        }
        if self.in_channels < 1 || self.out_channels != self.in_channels {
            return bad(format!(
                "in_channels = {}, out_channels = {}: the samplers need one output channel per input channel",
                self.in_channels, self.out_channels
            ));
        }
        let g = self.norm_num_groups;
        if g < 1 {
            return bad(format!("norm_num_groups = {g}: must be at least 1"));
        }
        if let Some(&c) = self.block_out_channels.iter().find(|&&c| c % g != 0) {
            return bad(format!(
                "{c} channels do not split into norm_num_groups = {g} groups"
            ));
        }
        if let Some(d) = self.attention_head_dim {
            let attn_levels = self
                .block_out_channels
                .iter()
                .enumerate()
                .filter(|&(i, _)| {
                    self.down_block_types[i] == DownBlockType::AttnDownBlock2D
                        || self.up_block_types[levels - 1 - i] == UpBlockType::AttnUpBlock2D
                        || (i == levels - 1 && self.mid_block_type.is_some() && self.add_attention)
                });
            for (_, &c) in attn_levels {
                if d < 1 || c % d != 0 {
                    return bad(format!(
                        "{c} channels do not split into heads of attention_head_dim = {d}"
                    ));
                }
            }
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return bad(format!("norm_eps = {}: must be positive", self.norm_eps));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout = {}: must be in [0, 1)", self.dropout));
        }
        if self.num_class_embeds.is_some_and(|n| n < 2) {
            return bad(
                "num_class_embeds must be at least 2 (the classes plus the null row)".into(),
            );
        }
        if self.block_out_channels[0] % 2 != 0 {
            return bad(
                "block_out_channels[0] must be even (it is the time embedding's width)".into(),
            );
        }
        Ok(())
    }
}

// ANCHOR: sinusoidal_embedding
/// diffusers' `get_timestep_embedding`: ω_i = 10000^(−i/(d/2 − shift)),
/// emb(t) = [sin(tω) | cos(tω)], halves swapped when `flip_sin_to_cos`.
/// Computed in the same order of operations, so the floats agree exactly.
pub fn sinusoidal_embedding(
    t: &Tensor,
    dim: i64,
    flip_sin_to_cos: bool,
    freq_shift: i64,
) -> Tensor {
    let half = dim / 2;
    let exponent = Tensor::arange(half, (Kind::Float, t.device())) * (-network::MAX_PERIOD.ln())
        / (half - freq_shift) as f64;
    let angles = t.to_kind(Kind::Float).unsqueeze(1) * exponent.exp().unsqueeze(0);
    let (sin, cos) = (angles.sin(), angles.cos());
    if flip_sin_to_cos {
        Tensor::cat(&[cos, sin], 1)
    } else {
        Tensor::cat(&[sin, cos], 1)
    }
}
// ANCHOR_END: sinusoidal_embedding

/// PyTorch's default init, which diffusers keeps: weights and biases uniform
/// in ±1/√fan_in (`kaiming_uniform_(a = √5)`). tch's default draws weights
/// √6 times wider (Kaiming with the ReLU gain) and starts conv biases at 0,
/// and a UNet started that way learns several times slower
/// (`scripts/bench/time_to_quality.sh`).
fn pytorch_uniform(fan_in: i64) -> nn::Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    nn::Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

fn conv(vs: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> nn::Conv2D {
    let config = nn::ConvConfig {
        stride,
        padding: k / 2,
        ws_init: pytorch_uniform(cin * k * k),
        bs_init: pytorch_uniform(cin * k * k),
        ..Default::default()
    };
    nn::conv2d(vs, cin, cout, k, config)
}

fn linear(vs: nn::Path, cin: i64, cout: i64) -> nn::Linear {
    let config = nn::LinearConfig {
        ws_init: pytorch_uniform(cin),
        bs_init: Some(pytorch_uniform(cin)),
        bias: true,
    };
    nn::linear(vs, cin, cout, config)
}

fn group_norm(vs: nn::Path, c: &UNetConfig, channels: i64) -> nn::GroupNorm {
    let config = nn::GroupNormConfig {
        eps: c.norm_eps,
        ..Default::default()
    };
    nn::group_norm(vs, c.norm_num_groups, channels, config)
}

// ANCHOR: resnet_block
/// diffusers' ResnetBlock2D: h = conv1(SiLU(GN(x))) + proj(SiLU(emb)),
/// out = shortcut(x) + conv2(dropout(SiLU(GN(h)))).
#[derive(Debug)]
struct ResnetBlock2D {
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    time_emb_proj: nn::Linear,
    norm2: nn::GroupNorm,
    conv2: nn::Conv2D,
    conv_shortcut: Option<nn::Conv2D>,
    dropout: f64,
}

impl ResnetBlock2D {
    fn new(vs: nn::Path, c: &UNetConfig, cin: i64, cout: i64) -> Self {
        Self {
            norm1: group_norm(&vs / "norm1", c, cin),
            conv1: conv(&vs / "conv1", cin, cout, 3, 1),
            time_emb_proj: linear(&vs / "time_emb_proj", c.time_embed_dim(), cout),
            norm2: group_norm(&vs / "norm2", c, cout),
            conv2: conv(&vs / "conv2", cout, cout, 3, 1),
            conv_shortcut: (cin != cout).then(|| conv(&vs / "conv_shortcut", cin, cout, 1, 1)),
            dropout: c.dropout,
        }
    }

    fn forward(&self, x: &Tensor, emb: &Tensor, train: bool) -> Tensor {
        let h = self.conv1.forward(&self.norm1.forward(x).silu());
        let h = h + self
            .time_emb_proj
            .forward(&emb.silu())
            .unsqueeze(-1)
            .unsqueeze(-1);
        let h = self.norm2.forward(&h).silu().dropout(self.dropout, train);
        let h = self.conv2.forward(&h);
        match &self.conv_shortcut {
            Some(s) => s.forward(x) + h,
            None => x + h,
        }
    }
}
// ANCHOR_END: resnet_block

/// A resnet in the layer table: its forward pass reports its output shape.
trait SeenResnet {
    fn forward(&self, x: &Tensor, emb: &Tensor, train: bool) -> Tensor;
}

impl SeenResnet for Seen<ResnetBlock2D> {
    fn forward(&self, x: &Tensor, emb: &Tensor, train: bool) -> Tensor {
        self.report(self.inner.forward(x, emb, train))
    }
}

// ANCHOR: attention
/// diffusers' Attention as its UNet2D blocks use it: GroupNorm, then
/// multi-head self-attention over the H·W positions, plus the input.
#[derive(Debug)]
struct Attention {
    group_norm: nn::GroupNorm,
    to_q: nn::Linear,
    to_k: nn::Linear,
    to_v: nn::Linear,
    to_out: nn::Linear,
    heads: i64,
}

impl Attention {
    fn new(vs: nn::Path, c: &UNetConfig, channels: i64) -> Self {
        Self {
            group_norm: group_norm(&vs / "group_norm", c, channels),
            to_q: linear(&vs / "to_q", channels, channels),
            to_k: linear(&vs / "to_k", channels, channels),
            to_v: linear(&vs / "to_v", channels, channels),
            to_out: linear(&vs / "to_out" / "0", channels, channels),
            heads: c.heads(channels),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let [n, c, h, w] = x.size()[..] else {
            unreachable!("checked by check_inputs")
        };
        // (N, C, H, W) → (N, HW, C): one token per position.
        let tokens = self
            .group_norm
            .forward(x)
            .reshape([n, c, h * w])
            .transpose(1, 2);
        let split = |l: &nn::Linear| {
            l.forward(&tokens)
                .reshape([n, h * w, self.heads, c / self.heads])
                .transpose(1, 2)
        };
        let (q, k, v) = (split(&self.to_q), split(&self.to_k), split(&self.to_v));
        // softmax(q kᵀ / √d) v for every head at once.
        let attn = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let out = self
            .to_out
            .forward(&attn.transpose(1, 2).reshape([n, h * w, c]));
        out.transpose(1, 2).reshape([n, c, h, w]) + x
    }
}
// ANCHOR_END: attention

/// An attention block in the layer table.
trait SeenAttention {
    fn forward(&self, x: &Tensor) -> Tensor;
}

impl SeenAttention for Seen<Attention> {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.report(self.inner.forward(x))
    }
}

/// One resolution level on the way down (DownBlock2D or AttnDownBlock2D).
#[derive(Debug)]
struct DownBlock {
    resnets: Vec<Seen<ResnetBlock2D>>,
    attentions: Vec<Seen<Attention>>,
    downsampler: Option<Seen<nn::Conv2D>>,
}

/// One level on the way up (UpBlock2D or AttnUpBlock2D).
#[derive(Debug)]
struct UpBlock {
    resnets: Vec<Seen<ResnetBlock2D>>,
    attentions: Vec<Seen<Attention>>,
    upsampler: Option<Seen<nn::Conv2D>>,
}

/// UNetMidBlock2D: resnet, (attention,) resnet.
#[derive(Debug)]
struct MidBlock {
    resnets: [Seen<ResnetBlock2D>; 2],
    attention: Option<Seen<Attention>>,
}

#[derive(Debug)]
pub struct UNet {
    pub config: UNetConfig,
    conv_in: Seen<nn::Conv2D>,
    linear_1: nn::Linear,
    linear_2: nn::Linear,
    class_embedding: Option<nn::Embedding>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: nn::GroupNorm,
    conv_out: Seen<nn::Conv2D>,
}

impl UNet {
    pub fn new(vs: &nn::Path, config: UNetConfig) -> Result<Self> {
        config.validate()?;
        let c = &config;
        let ch = &c.block_out_channels;
        let levels = ch.len();
        let temb = c.time_embed_dim();
        let mut down_blocks = Vec::new();
        let mut skips = vec![ch[0]]; // channels of each skip, in push order
        for (i, kind) in c.down_block_types.iter().enumerate() {
            let name = format!("down_blocks.{i}");
            let vs = vs / "down_blocks" / i;
            let cin = if i == 0 { ch[0] } else { ch[i - 1] };
            let attn = *kind == DownBlockType::AttnDownBlock2D;
            let mut block = DownBlock {
                resnets: Vec::new(),
                attentions: Vec::new(),
                downsampler: None,
            };
            for j in 0..c.layers_per_block {
                let from = if j == 0 { cin } else { ch[i] };
                block.resnets.push(Seen::new(
                    format!("{name}.resnets.{j}"),
                    ResnetBlock2D::new(&vs / "resnets" / j, c, from, ch[i]),
                ));
                if attn {
                    block.attentions.push(Seen::new(
                        format!("{name}.attentions.{j}"),
                        Attention::new(&vs / "attentions" / j, c, ch[i]),
                    ));
                }
                skips.push(ch[i]);
            }
            if i + 1 < levels {
                block.downsampler = Some(Seen::new(
                    format!("{name}.downsamplers.0"),
                    conv(&vs / "downsamplers" / 0 / "conv", ch[i], ch[i], 3, 2),
                ));
                skips.push(ch[i]);
            }
            down_blocks.push(block);
        }
        let low = ch[levels - 1];
        let mid_block = c.mid_block_type.map(|_| {
            let vs = vs / "mid_block";
            MidBlock {
                resnets: [0, 1].map(|j| {
                    Seen::new(
                        format!("mid_block.resnets.{j}"),
                        ResnetBlock2D::new(&vs / "resnets" / j, c, low, low),
                    )
                }),
                attention: c.add_attention.then(|| {
                    Seen::new(
                        "mid_block.attentions.0",
                        Attention::new(&vs / "attentions" / 0, c, low),
                    )
                }),
            }
        });
        let mut up_blocks = Vec::new();
        let mut prev = low;
        for (i, kind) in c.up_block_types.iter().enumerate() {
            let name = format!("up_blocks.{i}");
            let vs = vs / "up_blocks" / i;
            let out = ch[levels - 1 - i];
            let attn = *kind == UpBlockType::AttnUpBlock2D;
            let mut block = UpBlock {
                resnets: Vec::new(),
                attentions: Vec::new(),
                upsampler: None,
            };
            for j in 0..=c.layers_per_block {
                let skip = skips.pop().expect("one skip per up resnet");
                let from = if j == 0 { prev } else { out };
                block.resnets.push(Seen::new(
                    format!("{name}.resnets.{j}"),
                    ResnetBlock2D::new(&vs / "resnets" / j, c, from + skip, out),
                ));
                if attn {
                    block.attentions.push(Seen::new(
                        format!("{name}.attentions.{j}"),
                        Attention::new(&vs / "attentions" / j, c, out),
                    ));
                }
            }
            if i + 1 < levels {
                block.upsampler = Some(Seen::new(
                    format!("{name}.upsamplers.0"),
                    conv(&vs / "upsamplers" / 0 / "conv", out, out, 3, 1),
                ));
            }
            prev = out;
            up_blocks.push(block);
        }
        Ok(Self {
            conv_in: Seen::new("conv_in", conv(vs / "conv_in", c.in_channels, ch[0], 3, 1)),
            linear_1: linear(vs / "time_embedding" / "linear_1", ch[0], temb),
            linear_2: linear(vs / "time_embedding" / "linear_2", temb, temb),
            class_embedding: c
                .num_class_embeds
                .map(|k| nn::embedding(vs / "class_embedding", k, temb, Default::default())),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(vs / "conv_norm_out", c, ch[0]),
            conv_out: Seen {
                also: vec!["conv_norm_out"],
                ..Seen::new(
                    "conv_out",
                    conv(vs / "conv_out", ch[0], c.out_channels, 3, 1),
                )
            },
            config,
        })
    }

    // ANCHOR: unet_forward
    /// ε_θ(x_t, t, y). Without labels, a class-conditional model gets the
    /// null class (the last embedding row) for every image.
    pub fn forward_t(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let c = &self.config;
        check_inputs(x, t, y, c.in_channels, c.factor(), c.num_classes())?;
        // One conditioning vector per image: MLP(emb(t)) + class embedding.
        let t_emb =
            sinusoidal_embedding(t, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift);
        let emb = self.linear_2.forward(&self.linear_1.forward(&t_emb).silu());
        let emb = match (&self.class_embedding, c.num_classes()) {
            (Some(e), Some(k)) => emb + e.forward(&labels_or_null(y, x.size()[0], k, x.device())),
            _ => emb,
        };
        let mut h = self.conv_in.forward(x);
        // Every resnet (and downsampler) output on the way down is a skip.
        let mut skips = vec![h.shallow_clone()];
        for block in &self.down_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                h = resnet.forward(&h, &emb, train);
                if let Some(a) = block.attentions.get(j) {
                    h = a.forward(&h);
                }
                skips.push(h.shallow_clone());
            }
            if let Some(d) = &block.downsampler {
                h = d.forward(&h);
                skips.push(h.shallow_clone());
            }
        }
        if let Some(mid) = &self.mid_block {
            h = mid.resnets[0].forward(&h, &emb, train);
            if let Some(a) = &mid.attention {
                h = a.forward(&h);
            }
            h = mid.resnets[1].forward(&h, &emb, train);
        }
        // On the way up, each resnet takes the newest skip, concatenated.
        for block in &self.up_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips.pop().expect("one skip per up resnet");
                h = resnet.forward(&Tensor::cat(&[&h, &skip], 1), &emb, train);
                if let Some(a) = block.attentions.get(j) {
                    h = a.forward(&h);
                }
            }
            if let Some(u) = &block.upsampler {
                let s = h.size();
                h = u.forward(&h.upsample_nearest2d([s[2] * 2, s[3] * 2], 2.0, 2.0));
            }
        }
        Ok(self
            .conv_out
            .forward(&self.conv_norm_out.forward(&h).silu()))
    }
    // ANCHOR_END: unet_forward
}

impl NoisePredictor for UNet {
    fn predict(&self, x_t: &Tensor, t: &Tensor, y: Option<&Tensor>, train: bool) -> Result<Tensor> {
        self.forward_t(x_t, t, y, train)
    }

    fn num_classes(&self) -> Option<i64> {
        self.config.num_classes()
    }
}
