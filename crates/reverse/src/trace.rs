//! A per-step record of a sampling run, saved as one safetensors file.
//!
//! Tensors (S = number of steps, N images of shape C×H×W):
//!   `t` (S,) i64, `prev` (S,) i64 with −1 for "to x_0",
//!   `x_t`, `out`, `x0`, `z`, `x_prev`: (S, N, C, H, W) f32,
//!   `betas`, `alpha_bar`: (T,) f64 — the schedule.
//! Metadata: `sampler` (JSON), `prediction`, `format`.
use crate::{Result, ReverseError, Sampler};
use forward::Schedule;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

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

const FIELDS: [&str; 5] = ["x_t", "out", "x0", "z", "x_prev"];

fn field(r: &StepRecord, name: &str) -> Tensor {
    match name {
        "x_t" => r.x_t.shallow_clone(),
        "out" => r.out.shallow_clone(),
        "x0" => r.x0.shallow_clone(),
        "z" => r.z.shallow_clone(),
        _ => r.x_prev.shallow_clone(),
    }
}

/// Writes a trace with its schedule and sampler settings.
pub fn save(
    path: &Path,
    records: &[StepRecord],
    s: &Schedule,
    sampler: &Sampler,
    prediction: forward::Prediction,
) -> Result<()> {
    if records.is_empty() {
        return Err(ReverseError::Trace("is empty: nothing was recorded".into()));
    }
    let ts: Vec<i64> = records.iter().map(|r| r.t).collect();
    let prevs: Vec<i64> = records.iter().map(|r| r.prev.unwrap_or(-1)).collect();
    let mut tensors = vec![
        ("t".to_string(), Tensor::from_slice(&ts)),
        ("prev".to_string(), Tensor::from_slice(&prevs)),
        ("betas".to_string(), Tensor::from_slice(&s.betas_host)),
        (
            "alpha_bar".to_string(),
            Tensor::from_slice(&s.alpha_bar_host),
        ),
    ];
    for name in FIELDS {
        let stacked = Tensor::stack(
            &records.iter().map(|r| field(r, name)).collect::<Vec<_>>(),
            0,
        );
        tensors.push((name.to_string(), stacked.to_kind(Kind::Float)));
    }
    let mut meta = BTreeMap::new();
    meta.insert("format".into(), "diffusion-executed/trace-v1".into());
    meta.insert(
        "sampler".into(),
        serde_json::to_string(sampler).expect("sampler serialises"),
    );
    meta.insert(
        "prediction".into(),
        serde_json::to_string(&prediction).expect("prediction serialises"),
    );
    meta.insert(
        "schedule".into(),
        format!("{} T={}", s.kind.name(), s.steps),
    );
    util::safetensors::save(path, &tensors, &meta)
        .map_err(|e| ReverseError::Trace(format!("{e:#}")))
}

/// A trace read back: the records, the sampler and the prediction kind.
pub struct Loaded {
    pub records: Vec<StepRecord>,
    pub sampler: Sampler,
    pub prediction: forward::Prediction,
    pub alpha_bar: Vec<f64>,
}

pub fn load(path: &Path) -> Result<Loaded> {
    let ck = util::safetensors::load(path, Device::Cpu)
        .map_err(|e| ReverseError::Trace(format!("{e:#}")))?;
    let bad = |m: &str| ReverseError::Trace(format!("{}: {m}", path.display()));
    let get = |k: &str| {
        ck.tensors
            .get(k)
            .ok_or_else(|| bad(&format!("tensor '{k}' missing")))
    };
    let ts = Vec::<i64>::try_from(get("t")?).map_err(|_| bad("bad 't'"))?;
    let prevs = Vec::<i64>::try_from(get("prev")?).map_err(|_| bad("bad 'prev'"))?;
    let mut records = Vec::with_capacity(ts.len());
    for (i, (&t, &p)) in ts.iter().zip(&prevs).enumerate() {
        let f = |k: &str| -> Result<Tensor> { Ok(get(k)?.get(i as i64)) };
        records.push(StepRecord {
            t,
            prev: (p >= 0).then_some(p),
            x_t: f("x_t")?,
            out: f("out")?,
            x0: f("x0")?,
            z: f("z")?,
            x_prev: f("x_prev")?,
        });
    }
    let meta = |k: &str| {
        ck.metadata
            .get(k)
            .ok_or_else(|| bad(&format!("metadata '{k}' missing")))
    };
    Ok(Loaded {
        records,
        sampler: serde_json::from_str(meta("sampler")?).map_err(|e| bad(&e.to_string()))?,
        prediction: serde_json::from_str(meta("prediction")?).map_err(|e| bad(&e.to_string()))?,
        alpha_bar: Vec::<f64>::try_from(get("alpha_bar")?).map_err(|_| bad("bad 'alpha_bar'"))?,
    })
}
