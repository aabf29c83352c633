//! One safetensors file per checkpoint: named tensors plus string metadata.
//! Writes are atomic (temporary file, fsync, rename), so a crash during a save
//! leaves the previous file intact.
use crate::TrainError;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};

use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn dtype(kind: Kind) -> Result<Dtype, TrainError> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Uint8 => Dtype::U8,
        k => {
            return Err(TrainError::Checkpoint(format!(
                "cannot store tensors of kind {k:?}"
            )))
        }
    })
}

fn kind(d: Dtype) -> Result<Kind, TrainError> {
    Ok(match d {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::U8 => Kind::Uint8,
        d => return Err(TrainError::Checkpoint(format!("unsupported dtype {d:?}"))),
    })
}

/// Serialises tensors and metadata to safetensors bytes, deterministically:
/// the header is written with sorted keys and the tensors in name order, so the
/// same tensors and metadata always give the same bytes (the `safetensors`
/// crate's writer keeps metadata in a `HashMap`, whose order varies per run).
pub fn to_bytes(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, TrainError> {
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
            return Err(TrainError::Checkpoint(format!(
                "tensor name {name} appears twice"
            )));
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

/// Writes a checkpoint atomically.
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), TrainError> {
    let bytes = to_bytes(tensors, metadata)?;
    util::write_atomic(path, &bytes).map_err(|e| TrainError::Checkpoint(format!("{e:#}")))
}

/// A loaded checkpoint: tensors on `device`, and the metadata.
#[derive(Debug)]
pub struct Loaded {
    pub tensors: HashMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

pub fn load(path: &Path, device: Device) -> Result<Loaded, TrainError> {
    let bad = |why: String| TrainError::Checkpoint(format!("{}: {why}", path.display()));
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

/// Copies `prefix.<name>` from a checkpoint into each variable, checking that
/// every variable is present with the right shape and nothing is left over.
pub fn copy_into(
    vars: impl IntoIterator<Item = (String, Tensor)>,
    prefix: &str,
    loaded: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<(), TrainError> {
    let mut expected = 0;
    for (name, mut var) in vars {
        expected += 1;
        let key = format!("{prefix}.{name}");
        let Some(src) = loaded.get(&key) else {
            return Err(TrainError::Checkpoint(format!(
                "{}: tensor {key} is missing",
                path.display()
            )));
        };
        if src.size() != var.size() {
            return Err(TrainError::ShapeMismatch {
                path: path.to_path_buf(),
                tensor: key,
                checkpoint: src.size(),
                model: var.size(),
            });
        }
        tch::no_grad(|| var.copy_(src));
    }
    let have = loaded
        .keys()
        .filter(|k| k.starts_with(&format!("{prefix}.")))
        .count();
    if have != expected {
        return Err(TrainError::Checkpoint(format!(
            "{}: {have} tensors under '{prefix}.' but the model has {expected}",
            path.display()
        )));
    }
    Ok(())
}

/// Numbered checkpoints `ckpt-00001000.safetensors` in a folder, keeping the last `keep`.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub dir: PathBuf,
    pub keep: usize,
}

impl Rotation {
    pub fn path(&self, step: i64) -> PathBuf {
        self.dir.join(format!("ckpt-{step:08}.safetensors"))
    }

    /// All checkpoints in the folder, oldest first.
    pub fn list(&self) -> Vec<(i64, PathBuf)> {
        let mut found: Vec<(i64, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let step = name
                    .strip_prefix("ckpt-")?
                    .strip_suffix(".safetensors")?
                    .parse()
                    .ok()?;
                Some((step, e.path()))
            })
            .collect();
        found.sort();
        found
    }

    pub fn latest(&self) -> Option<PathBuf> {
        self.list().pop().map(|(_, p)| p)
    }

    /// Deletes all but the newest `keep` checkpoints (after a successful save).
    pub fn prune(&self) -> Result<(), TrainError> {
        let all = self.list();
        for (_, p) in all.iter().take(all.len().saturating_sub(self.keep.max(1))) {
            std::fs::remove_file(p)
                .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", p.display())))?;
        }
        Ok(())
    }
}
