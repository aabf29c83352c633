//! UNet: a stronger denoiser in the style of improved DDPM (Nichol & Dhariwal
//! 2021): residual blocks with GroupNorm and SiLU, the time and class embedding
//! injected into every block, channel multipliers per level, self-attention at
//! the lowest resolution, dropout, and a learned null class for guidance.
use crate::{
    check_inputs, labels_or_null, seed::upsample, timestep_embedding, NetworkError, NoisePredictor,
    Result, Trace,
};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UNetConfig {
    pub in_channels: i64,
    /// Base width C (a multiple of 32). Level i has C · channel_mults[i] channels.
    pub channels: i64,
    pub channel_mults: Vec<i64>,
    pub res_blocks: usize,
    /// Self-attention at the lowest resolution.
    pub attention: bool,
    pub heads: i64,
    pub dropout: f64,
    /// K real classes; the embedding has K + 1 rows, row K is the null class.
    pub num_classes: Option<i64>,
}

impl Default for UNetConfig {
    /// Sized for 28×28 on a CPU: 28 → 14 → 7 with 32, 64, 64 channels.
    fn default() -> Self {
        Self {
            in_channels: 1,
            channels: 32,
            channel_mults: vec![1, 2, 2],
            res_blocks: 1,
            attention: true,
            heads: 4,
            dropout: 0.1,
            num_classes: Some(10),
        }
    }
}

/// `vs / "a" / "b"` for the dotted name "a.b" (tch path segments cannot hold dots).
fn at<'a>(vs: &nn::Path<'a>, dotted: &str) -> nn::Path<'a> {
    let mut parts = dotted.split('.');
    let first = vs / parts.next().unwrap_or_default();
    parts.fold(first, |p, seg| p / seg)
}

fn conv3(vs: nn::Path, cin: i64, cout: i64, stride: i64) -> nn::Conv2D {
    nn::conv2d(
        vs,
        cin,
        cout,
        3,
        nn::ConvConfig {
            stride,
            padding: 1,
            ..Default::default()
        },
    )
}

/// A conv whose weights start at zero, so a new residual branch starts as the
/// identity (improved DDPM does this for the last conv of each block).
fn zero_conv3(vs: nn::Path, cin: i64, cout: i64) -> nn::Conv2D {
    let zero = nn::Init::Const(0.0);
    nn::conv2d(
        vs,
        cin,
        cout,
        3,
        nn::ConvConfig {
            padding: 1,
            ws_init: zero,
            bs_init: zero,
            ..Default::default()
        },
    )
}

fn norm(vs: nn::Path, ch: i64) -> nn::GroupNorm {
    nn::group_norm(vs, 32.min(ch), ch, Default::default())
}

/// h = conv(SiLU(GN(x))) + proj(emb);  out = skip(x) + conv(dropout(SiLU(GN(h))))
#[derive(Debug)]
struct ResBlock {
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    emb_proj: nn::Linear,
    norm2: nn::GroupNorm,
    conv2: nn::Conv2D,
    skip: Option<nn::Conv2D>,
    dropout: f64,
}

impl ResBlock {
    fn new(vs: nn::Path, cin: i64, cout: i64, emb_dim: i64, dropout: f64) -> Self {
        Self {
            norm1: norm(&vs / "norm1", cin),
            conv1: conv3(&vs / "conv1", cin, cout, 1),
            emb_proj: nn::linear(&vs / "emb_proj", emb_dim, cout, Default::default()),
            norm2: norm(&vs / "norm2", cout),
            conv2: zero_conv3(&vs / "conv2", cout, cout),
            skip: (cin != cout).then(|| nn::conv2d(&vs / "skip", cin, cout, 1, Default::default())),
            dropout,
        }
    }

    // ANCHOR: res_block
    fn forward(&self, x: &Tensor, emb: &Tensor, train: bool, name: &str, tr: &mut Trace) -> Tensor {
        let h = self.conv1.forward(&self.norm1.forward(x).silu());
        // The time (+ class) embedding enters every block, as a per-channel shift.
        let h = h + self
            .emb_proj
            .forward(&emb.silu())
            .unsqueeze(-1)
            .unsqueeze(-1);
        let h = self.norm2.forward(&h).silu().dropout(self.dropout, train);
        let skip = self
            .skip
            .as_ref()
            .map_or_else(|| x.shallow_clone(), |s| s.forward(x));
        let out = skip + self.conv2.forward(&h);
        self.trace(name, &out, tr);
        out
    }
    // ANCHOR_END: res_block

    fn trace(&self, name: &str, out: &Tensor, tr: &mut Trace) {
        let hw: i64 = out.size()[2..].iter().product();
        let k = |c: &nn::Conv2D| c.ws.size().iter().skip(1).product::<i64>() * c.ws.size()[0] * hw;
        let w = self.emb_proj.ws.size();
        let macs = k(&self.conv1) + k(&self.conv2) + self.skip.as_ref().map_or(0, k) + w[0] * w[1];
        let mut params: Vec<&Tensor> = Trace::norm_params(&self.norm1);
        params.extend(Trace::norm_params(&self.norm2));
        for c in [Some(&self.conv1), Some(&self.conv2), self.skip.as_ref()]
            .into_iter()
            .flatten()
        {
            params.push(&c.ws);
            params.extend(c.bs.as_ref());
        }
        params.push(&self.emb_proj.ws);
        params.extend(self.emb_proj.bs.as_ref());
        tr.record(name, out, &params, macs);
    }
}

/// Multi-head self-attention over the H·W positions, with a residual.
#[derive(Debug)]
struct Attention {
    norm: nn::GroupNorm,
    qkv: nn::Conv2D,
    proj: nn::Conv2D,
    heads: i64,
}

impl Attention {
    fn new(vs: nn::Path, ch: i64, heads: i64) -> Self {
        let zero = nn::Init::Const(0.0);
        Self {
            norm: norm(&vs / "norm", ch),
            qkv: nn::conv2d(&vs / "qkv", ch, 3 * ch, 1, Default::default()),
            proj: nn::conv2d(
                &vs / "proj",
                ch,
                ch,
                1,
                nn::ConvConfig {
                    ws_init: zero,
                    bs_init: zero,
                    ..Default::default()
                },
            ),
            heads,
        }
    }

    fn forward(&self, x: &Tensor, name: &str, tr: &mut Trace) -> Tensor {
        let [n, c, h, w] = x.size()[..] else {
            unreachable!("checked by check_inputs")
        };
        let d = c / self.heads;
        // (N, 3C, H, W) → three (N·heads, HW, d)
        let qkv = self
            .qkv
            .forward(&self.norm.forward(x))
            .reshape([n, 3, self.heads, d, h * w]);
        let part = |i: i64| {
            qkv.select(1, i)
                .reshape([n * self.heads, d, h * w])
                .transpose(1, 2)
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let attn = (q.matmul(&k.transpose(1, 2)) / (d as f64).sqrt()).softmax(-1, Kind::Float);
        let out = attn.matmul(&v).transpose(1, 2).reshape([n, c, h, w]);
        let out = x + self.proj.forward(&out);
        let hw = h * w;
        let macs = hw * c * 3 * c + 2 * hw * hw * c + hw * c * c;
        let mut params = Trace::norm_params(&self.norm);
        for conv in [&self.qkv, &self.proj] {
            params.push(&conv.ws);
            params.extend(conv.bs.as_ref());
        }
        tr.record(name, &out, &params, macs);
        out
    }
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a handful of blocks, built once
enum Block {
    Res(ResBlock),
    Attn(Attention),
    Down(nn::Conv2D),
    Up(nn::Conv2D),
}

#[derive(Debug)]
pub struct UNet {
    pub config: UNetConfig,
    time1: nn::Linear,
    time2: nn::Linear,
    class_emb: Option<nn::Embedding>,
    conv_in: nn::Conv2D,
    down: Vec<(String, Block)>,
    mid: Vec<(String, Block)>,
    /// Each up block takes (and concatenates) one skip when it is a ResBlock.
    up: Vec<(String, Block)>,
    norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
}

impl UNet {
    pub fn new(vs: &nn::Path, config: UNetConfig) -> Result<Self> {
        let c = config.channels;
        if c <= 0 || c % 32 != 0 {
            return Err(NetworkError::Config(format!(
                "channels = {c}: must be a positive multiple of 32"
            )));
        }
        if config.channel_mults.is_empty() || config.channel_mults.iter().any(|&m| m < 1) {
            return Err(NetworkError::Config(
                "channel_mults must be a non-empty list of positive integers".into(),
            ));
        }
        let low = c * config.channel_mults.last().unwrap();
        if config.attention && (config.heads < 1 || low % config.heads != 0) {
            return Err(NetworkError::Config(format!(
                "{low} channels at the lowest level do not split into {} heads",
                config.heads
            )));
        }
        if !(0.0..1.0).contains(&config.dropout) {
            return Err(NetworkError::Config(format!(
                "dropout = {}: must be in [0, 1)",
                config.dropout
            )));
        }
        let emb = 4 * c;
        let p = config.dropout;
        let levels = config.channel_mults.len();
        let mut down = Vec::new();
        let mut skips = vec![c]; // channels of each skip, in push order
        let mut ch = c;
        for (i, &m) in config.channel_mults.iter().enumerate() {
            for j in 0..config.res_blocks {
                let name = format!("down.{i}.res{j}");
                down.push((
                    name.clone(),
                    Block::Res(ResBlock::new(at(vs, &name), ch, c * m, emb, p)),
                ));
                ch = c * m;
                if config.attention && i == levels - 1 {
                    let name = format!("down.{i}.attn{j}");
                    down.push((
                        name.clone(),
                        Block::Attn(Attention::new(at(vs, &name), ch, config.heads)),
                    ));
                }
                skips.push(ch);
            }
            if i + 1 < levels {
                let name = format!("down.{i}.downsample");
                down.push((name.clone(), Block::Down(conv3(at(vs, &name), ch, ch, 2))));
                skips.push(ch);
            }
        }
        let mut mid = vec![(
            "mid.res0".to_string(),
            Block::Res(ResBlock::new(at(vs, "mid.res0"), ch, ch, emb, p)),
        )];
        if config.attention {
            mid.push((
                "mid.attn".to_string(),
                Block::Attn(Attention::new(at(vs, "mid.attn"), ch, config.heads)),
            ));
        }
        mid.push((
            "mid.res1".to_string(),
            Block::Res(ResBlock::new(at(vs, "mid.res1"), ch, ch, emb, p)),
        ));
        let mut up = Vec::new();
        for (i, &m) in config.channel_mults.iter().enumerate().rev() {
            for j in 0..=config.res_blocks {
                let skip = skips.pop().expect("one skip per up block");
                let name = format!("up.{i}.res{j}");
                up.push((
                    name.clone(),
                    Block::Res(ResBlock::new(at(vs, &name), ch + skip, c * m, emb, p)),
                ));
                ch = c * m;
                if config.attention && i == levels - 1 {
                    let name = format!("up.{i}.attn{j}");
                    up.push((
                        name.clone(),
                        Block::Attn(Attention::new(at(vs, &name), ch, config.heads)),
                    ));
                }
            }
            if i > 0 {
                let name = format!("up.{i}.upsample");
                up.push((name.clone(), Block::Up(conv3(at(vs, &name), ch, ch, 1))));
            }
        }
        Ok(Self {
            time1: nn::linear(at(vs, "time.0"), c, emb, Default::default()),
            time2: nn::linear(at(vs, "time.1"), emb, emb, Default::default()),
            class_emb: config
                .num_classes
                .map(|k| nn::embedding(vs / "class_emb", k + 1, emb, Default::default())),
            conv_in: conv3(vs / "conv_in", config.in_channels, c, 1),
            down,
            mid,
            up,
            norm_out: norm(vs / "norm_out", ch),
            conv_out: zero_conv3(vs / "conv_out", ch, config.in_channels),
            config,
        })
    }

    /// How much the model downsamples: inputs must be divisible by it.
    pub fn factor(&self) -> i64 {
        1 << (self.config.channel_mults.len() - 1)
    }

    // ANCHOR: unet_forward
    pub fn forward_t(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: Option<&Tensor>,
        train: bool,
        tr: &mut Trace,
    ) -> Result<Tensor> {
        check_inputs(
            x,
            t,
            y,
            self.config.in_channels,
            self.factor(),
            self.config.num_classes,
        )?;
        // One conditioning vector per image: MLP(emb(t)) + class embedding.
        let time_in = timestep_embedding(t, self.config.channels)?;
        let time = self.time2.forward(&self.time1.forward(&time_in).silu());
        tr.linear("time.0", &self.time1, &time);
        tr.linear("time.1", &self.time2, &time);
        let emb = match (&self.class_emb, self.config.num_classes) {
            (Some(e), Some(k)) => {
                let class = e.forward(&labels_or_null(y, x.size()[0], k, x.device()));
                tr.record("class_emb", &class, &[&e.ws], 0);
                time + class
            }
            _ => time,
        };
        let mut h = self.conv_in.forward(x);
        tr.conv("conv_in", &self.conv_in, &[], &h);
        let mut skips = vec![h.shallow_clone()];
        for (name, block) in &self.down {
            h = self.block(block, &h, &emb, train, name, tr);
            if !matches!(block, Block::Attn(_)) {
                skips.push(h.shallow_clone()); // attention refines the skip it follows
            } else {
                *skips.last_mut().unwrap() = h.shallow_clone();
            }
        }
        for (name, block) in &self.mid {
            h = self.block(block, &h, &emb, train, name, tr);
        }
        for (name, block) in &self.up {
            if let Block::Res(_) = block {
                h = Tensor::cat(&[&h, &skips.pop().unwrap()], 1);
            }
            h = self.block(block, &h, &emb, train, name, tr);
        }
        let out = self.conv_out.forward(&self.norm_out.forward(&h).silu());
        tr.conv(
            "conv_out",
            &self.conv_out,
            &Trace::norm_params(&self.norm_out),
            &out,
        );
        Ok(out)
    }
    // ANCHOR_END: unet_forward

    fn block(
        &self,
        b: &Block,
        h: &Tensor,
        emb: &Tensor,
        train: bool,
        name: &str,
        tr: &mut Trace,
    ) -> Tensor {
        match b {
            Block::Res(r) => r.forward(h, emb, train, name, tr),
            Block::Attn(a) => a.forward(h, name, tr),
            Block::Down(c) => {
                let out = c.forward(h);
                tr.conv(name, c, &[], &out);
                out
            }
            Block::Up(c) => {
                let out = c.forward(&upsample(h));
                tr.conv(name, c, &[], &out);
                out
            }
        }
    }
}

impl NoisePredictor for UNet {
    fn predict(&self, x_t: &Tensor, t: &Tensor, y: Option<&Tensor>, train: bool) -> Result<Tensor> {
        self.forward_t(x_t, t, y, train, &mut Trace::off())
    }

    fn num_classes(&self) -> Option<i64> {
        self.config.num_classes
    }
}
