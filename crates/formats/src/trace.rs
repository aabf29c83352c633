//! A sampling run's per-step records ([`reverse::StepRecord`]) as one
//! safetensors file, and back.
//!
//! Tensors (S = number of steps, N images of shape C×H×W):
//!   `t` (S,) i64, `prev` (S,) i64 with −1 for "to x_0",
//!   `x_t`, `out`, `x0`, `z`, `x_prev`: (S, N, C, H, W) f32,
//!   `betas`, `alpha_bar`: (T,) f64 — the schedule.
//! Metadata: `sampler` (JSON), `prediction`, `format`.
use anyhow::{anyhow, bail, Result};
use forward::Schedule;
use reverse::{Sampler, StepRecord};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Writes a trace with its schedule and sampler settings.
pub fn save(
    path: &Path,
    records: &[StepRecord],
    s: &Schedule,
    sampler: &Sampler,
    prediction: forward::Prediction,
) -> Result<()> {
    util::write_atomic(path, &to_bytes(records, s, sampler, prediction)?)
}

/// A record's per-image tensors, in the order of their names in the file.
const NAMES: [&str; 5] = ["x_t", "out", "x0", "z", "x_prev"];
fn per_image(r: &StepRecord) -> [&Tensor; 5] {
    [&r.x_t, &r.out, &r.x0, &r.z, &r.x_prev]
}

/// A trace as the bytes of its safetensors file (see [`save`]).
pub fn to_bytes(
    records: &[StepRecord],
    s: &Schedule,
    sampler: &Sampler,
    prediction: forward::Prediction,
) -> Result<Vec<u8>> {
    if records.is_empty() {
        bail!("a trace is empty: nothing was recorded");
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
    for (k, name) in NAMES.into_iter().enumerate() {
        let per_step: Vec<&Tensor> = records.iter().map(|r| per_image(r)[k]).collect();
        tensors.push((
            name.to_string(),
            Tensor::stack(&per_step, 0).to_kind(Kind::Float),
        ));
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
    util::safetensors::to_bytes(&tensors, &meta)
}

/// A trace read back: the records, the sampler and the prediction kind.
pub struct Loaded {
    pub records: Vec<StepRecord>,
    pub sampler: Sampler,
    pub prediction: forward::Prediction,
    pub alpha_bar: Vec<f64>,
}

pub fn load(path: &Path) -> Result<Loaded> {
    let ck = util::safetensors::load(path, Device::Cpu)?;
    let bad = |m: &str| anyhow!("{}: {m}", path.display());
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
