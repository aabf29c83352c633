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

fn kind(name: &str, d: Dtype) -> Result<Kind> {
    Ok(match d {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::U8 => Kind::Uint8,
        d => bail!(
            "tensor {name} is {d:?}: only F32, F64, I64 and U8 are supported (convert it to F32)"
        ),
    })
}

/// Why `bytes` cannot be a whole safetensors file, when it is cut short:
/// "truncated: N of M bytes" (M from its own header).
fn truncation(bytes: &[u8]) -> Option<String> {
    let len = bytes.len();
    if len < 8 {
        return Some(format!(
            "truncated: {len} bytes, not even the 8-byte header size"
        ));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().ok()?) as usize;
    if n > 100_000_000 {
        return None; // not a header size at all: let the parser say so
    }
    if len < 8 + n {
        return Some(format!(
            "truncated: {len} of at least {} bytes (the header alone is {n} bytes)",
            8 + n
        ));
    }
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).ok()?;
    let end = header
        .as_object()?
        .values()
        .filter_map(|v| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0) as usize;
    (len < 8 + n + end).then(|| format!("truncated: {len} of {} bytes", 8 + n + end))
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
        crate::ensure_finite(&t, &format!("tensor {name}"))
            .map_err(|e| anyhow!("{e:#}: refusing to write a file that could not be used"))?;
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

/// A loaded file: tensors on `device`, and the metadata. Every floating-point
/// tensor is finite (a NaN or infinity is refused on load, naming the tensor).
#[derive(Debug)]
pub struct Loaded {
    pub tensors: HashMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

pub fn load(path: &Path, device: Device) -> Result<Loaded> {
    let bad = |why: String| anyhow!("{}: {why}", path.display());
    if path.is_dir() {
        return Err(bad("is a folder, not a safetensors file".into()));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let not_safetensors = |e: safetensors::SafeTensorError| match truncation(&bytes) {
        Some(t) => bad(format!(
            "{t}: the file is incomplete (an interrupted copy or download?)"
        )),
        None => bad(format!("not a safetensors file ({e})")),
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(not_safetensors)?;
    let st = SafeTensors::deserialize(&bytes).map_err(not_safetensors)?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let k = kind(&name, view.dtype()).map_err(|e| bad(format!("{e:#}")))?;
        let t = Tensor::from_data_size(view.data(), &shape, k);
        crate::ensure_finite(&t, &format!("tensor {name}")).map_err(|e| {
            bad(format!(
                "{e:#}: the file is damaged or comes from a run that diverged (use an earlier checkpoint)"
            ))
        })?;
        tensors.insert(name, t.to_device(device));
    }
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(Loaded { tensors, metadata })
}
