//! A compact CNN for Fashion-MNIST. Its job is to be a fixed, domain-specific
//! "eye": its predicted label measures whether a sample shows the requested
//! class, and its penultimate layer (128 numbers per image) is the feature
//! space in which the Fréchet distance and precision/recall are measured.
use crate::{EvalError, Result};
use std::collections::BTreeMap;
use std::path::Path;
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

/// Width of the feature vector (the penultimate layer).
pub const FEATURES: i64 = 128;
/// The metadata tag of a classifier file.
pub const FORMAT: &str = "diffusion-executed/classifier-v1";

// ANCHOR: classifier
/// conv 3×3 (1→32) · ReLU · max-pool → conv 3×3 (32→64) · ReLU · max-pool
/// → linear (64·7·7 → 128) · ReLU = features → dropout → linear (128 → 10).
#[derive(Debug)]
pub struct Classifier {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Classifier {
    pub fn new(p: &nn::Path) -> Self {
        let conv = |c_in, c_out, name| {
            let cfg = nn::ConvConfig {
                padding: 1,
                ..Default::default()
            };
            nn::conv2d(p / name, c_in, c_out, 3, cfg)
        };
        Self {
            conv1: conv(1, 32, "conv1"),
            conv2: conv(32, 64, "conv2"),
            fc1: nn::linear(p / "fc1", 64 * 7 * 7, FEATURES, Default::default()),
            fc2: nn::linear(p / "fc2", FEATURES, 10, Default::default()),
        }
    }

    /// The 128 penultimate activations of images in [−1, 1], shape [N, 1, 28, 28].
    pub fn features(&self, x: &Tensor) -> Tensor {
        let h = x.apply(&self.conv1).relu().max_pool2d_default(2); // 32 × 14 × 14
        let h = h.apply(&self.conv2).relu().max_pool2d_default(2); // 64 × 7 × 7
        h.flatten(1, -1).apply(&self.fc1).relu() // 128, taken before the head's dropout
    }

    /// Class scores (logits) from features.
    pub fn head(&self, features: &Tensor, train: bool) -> Tensor {
        features.dropout(0.3, train).apply(&self.fc2)
    }

    pub fn logits(&self, x: &Tensor, train: bool) -> Tensor {
        self.head(&self.features(x), train)
    }
}
// ANCHOR_END: classifier

impl Module for Classifier {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.logits(x, false)
    }
}

/// A classifier with its weights.
pub struct Trained {
    pub vs: VarStore,
    pub net: Classifier,
    pub metadata: BTreeMap<String, String>,
}

impl Trained {
    /// A freshly initialised network (for training).
    pub fn init(device: Device) -> Self {
        let vs = VarStore::new(device);
        let net = Classifier::new(&vs.root());
        Self {
            vs,
            net,
            metadata: BTreeMap::new(),
        }
    }

    /// Loads weights written by [`Trained::save`].
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let ck = formats::checkpoint::load(path, device).map_err(|e| match e {
            training::TrainError::Checkpoint(m) => EvalError::Input(format!("classifier file {m}")),
            e => e.into(),
        })?;
        if ck.metadata.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(EvalError::Input(format!(
                "{}: not a classifier file (metadata format is not '{FORMAT}')",
                path.display()
            )));
        }
        let mut me = Self::init(device);
        formats::checkpoint::copy_into(me.vs.variables(), "classifier", &ck.tensors, path)?;
        me.vs.freeze();
        me.metadata = ck.metadata;
        Ok(me)
    }

    /// Writes the weights (deterministic bytes) with `metadata` plus the format tag.
    pub fn save(&self, path: &Path, metadata: BTreeMap<String, String>) -> Result<()> {
        util::write_atomic(path, &self.to_bytes(metadata)?)
            .map_err(|e| EvalError::Input(format!("{e:#}")))
    }

    /// The file [`Classifier::save`] writes, as bytes (for an output set).
    pub fn to_bytes(&self, mut metadata: BTreeMap<String, String>) -> Result<Vec<u8>> {
        metadata.insert("format".into(), FORMAT.into());
        let tensors: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .map(|(n, t)| (format!("classifier.{n}"), t))
            .collect();
        util::safetensors::to_bytes(&tensors, &metadata)
            .map_err(|e| EvalError::Input(format!("{e:#}")))
    }

    /// Features of many images, in batches, without gradients: [N, 128] f32.
    pub fn features(&self, images: &Tensor) -> Tensor {
        let device = self.vs.device();
        tch::no_grad(|| {
            let parts: Vec<Tensor> = images
                .split(1000, 0)
                .iter()
                .map(|b| self.net.features(&b.to_device(device).to_kind(Kind::Float)))
                .collect();
            Tensor::cat(&parts, 0)
        })
    }

    /// Predicted labels of features (from [`Trained::features`]).
    pub fn predict(&self, features: &Tensor) -> Tensor {
        tch::no_grad(|| self.net.head(features, false).argmax(-1, false))
    }

    /// Fraction of `images` whose predicted label equals `labels`.
    pub fn accuracy(&self, images: &Tensor, labels: &Tensor) -> f64 {
        let pred = self.predict(&self.features(images));
        pred.eq_tensor(&labels.to_device(pred.device()))
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
    }
}
