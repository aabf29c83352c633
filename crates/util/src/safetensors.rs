//! Safetensors files: named tensors plus string metadata, written
//! deterministically and atomically, so a crash during a save leaves the
//! previous file intact. Checkpoints, shipped models, sample files and traces
//! all use this one format.
use anyhow::{anyhow, bail, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn dtype(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Uint8 => Dtype::U8,
        k => {
            bail!("cannot store tensors of kind {k:?}")
        }
    })
}

fn kind(d: Dtype) -> Result<Kind> {
    Ok(match d {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::U8 => Kind::Uint8,
        d => bail!("unsupported dtype {d:?}"),
    })
}

/// Serialises tensors and metadata to safetensors bytes, deterministically:
/// the header is written with sorted keys and the tensors in name order, so the
/// same tensors and metadata always give the same bytes (the `safetensors`
/// crate's writer keeps metadata in a `HashMap`, whose order varies per run).
pub fn to_bytes(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(metadata).expect("strings serialise"),
    );
    let mut data = Vec::new();
    for (name, t) in sorted {
        let t = t.to_device(Device::Cpu).contiguous();
        let mut bytes = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
        t.copy_data_u8(&mut bytes, t.numel());
        let begin = data.len();
        data.extend_from_slice(&bytes);
        let entry = serde_json::json!({
            "dtype": format!("{:?}", dtype(t.kind())?),
            "shape": t.size(),
            "data_offsets": [begin, data.len()],
        });
        if header.insert(name.clone(), entry).is_some() {
            bail!("tensor name {name} appears twice");
        }
    }
    let mut json = serde_json::to_vec(&header).expect("header serialises");
    while !json.len().is_multiple_of(8) {
        json.push(b' '); // the format pads the header to 8 bytes
    }
    let mut out = Vec::with_capacity(8 + json.len() + data.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&data);
    Ok(out)
}

/// Writes tensors and metadata atomically (temporary file, fsync, rename).
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let bytes = to_bytes(tensors, metadata)?;
    crate::write_atomic(path, &bytes)
}

/// A loaded file: tensors on `device`, and the metadata.
#[derive(Debug)]
pub struct Loaded {
    pub tensors: HashMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

pub fn load(path: &Path, device: Device) -> Result<Loaded> {
    let bad = |why: String| anyhow!("{}: {why}", path.display());
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::from_data_size(view.data(), &shape, kind(view.dtype())?).to_device(device);
        tensors.insert(name, t);
    }
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(Loaded { tensors, metadata })
}
