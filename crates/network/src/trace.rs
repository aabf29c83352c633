//! An optional record of each layer's output shape, parameters and
//! multiply-accumulates, filled in by the models' own forward pass (so the
//! counts come from the shapes that actually flowed, not from a formula).
use tch::Tensor;

#[derive(Debug, Clone, PartialEq)]
pub struct LayerStat {
    pub name: String,
    /// Output shape, batch dimension included.
    pub shape: Vec<i64>,
    pub params: i64,
    /// Multiply-accumulates per image.
    pub macs: i64,
}

/// Off by default: recording is then a no-op.
#[derive(Debug, Default)]
pub struct Trace {
    on: bool,
    pub layers: Vec<LayerStat>,
}

impl Trace {
    pub fn off() -> Self {
        Self::default()
    }

    pub fn on() -> Self {
        Self {
            on: true,
            layers: Vec::new(),
        }
    }

    pub fn total_params(&self) -> i64 {
        self.layers.iter().map(|l| l.params).sum()
    }

    pub fn total_macs(&self) -> i64 {
        self.layers.iter().map(|l| l.macs).sum()
    }

    pub(crate) fn record(&mut self, name: &str, out: &Tensor, params: &[&Tensor], macs: i64) {
        if self.on {
            let params = params.iter().map(|p| p.numel() as i64).sum();
            self.layers.push(LayerStat {
                name: name.to_string(),
                shape: out.size(),
                params,
                macs,
            });
        }
    }

    /// A convolution: every output element costs in_channels/groups · k·k MACs.
    /// `extra` are further parameters of the same block (a norm's scale and shift).
    pub(crate) fn conv(
        &mut self,
        name: &str,
        c: &tch::nn::Conv2D,
        extra: &[&Tensor],
        out: &Tensor,
    ) {
        let w = c.ws.size();
        let per_output = w[1] * w[2] * w[3];
        let outputs: i64 = out.size()[1..].iter().product();
        let mut params = vec![&c.ws];
        params.extend(c.bs.as_ref());
        params.extend(extra);
        self.record(name, out, &params, outputs * per_output);
    }

    /// Scale and shift of a GroupNorm, for block rows.
    pub(crate) fn norm_params(n: &tch::nn::GroupNorm) -> Vec<&Tensor> {
        n.ws.iter().chain(n.bs.iter()).collect()
    }

    pub(crate) fn linear(&mut self, name: &str, l: &tch::nn::Linear, out: &Tensor) {
        let w = l.ws.size();
        let mut params = vec![&l.ws];
        params.extend(l.bs.as_ref());
        self.record(name, out, &params, w[0] * w[1]);
    }
}
