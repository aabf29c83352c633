//! Image datasets as tensors: pixels scaled to [−1, 1] (N, C, H, W) f32 and
//! labels (N,) i64.
#[cfg(feature = "tensors")]
pub mod batches;
pub mod cifar;
pub mod idx;
#[cfg(feature = "tensors")]
pub mod synthetic;

#[cfg(feature = "tensors")]
pub use batches::Batches;
#[cfg(feature = "tensors")]
pub use tensors::*;

use std::path::PathBuf;

/// Where Debian's `dataset-fashion-mnist` package puts the data.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's ten classes, by label.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The name of label `c` for figures, given the dataset name a checkpoint
/// records (`TrainConfig::dataset`, the `Source`'s Debug form): "Ankle boot"
/// for FashionMnist, "7" for Mnist, "truck" for Cifar10, "ring" for
/// Synthetic; "class c" for anything else.
pub fn class_name(dataset: &str, c: i64) -> String {
    let named = |names: &[&str]| {
        let i = usize::try_from(c).ok()?;
        names.get(i).map(|s| s.to_string())
    };
    match dataset {
        "FashionMnist" => named(&FASHION_CLASSES),
        "Mnist" => (0..10).contains(&c).then(|| c.to_string()),
        "Cifar10" => named(&cifar::CLASSES),
        "Synthetic" => named(&["square", "ring", "cross", "bars"]),
        _ => None,
    }
    .unwrap_or_else(|| format!("class {c}"))
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Format { path: PathBuf, problem: String },
    #[error("data folder {0} does not exist: install Fashion-MNIST with `apt-get install dataset-fashion-mnist` (Debian) or pass --data-dir with the IDX files")]
    MissingDir(PathBuf),
    #[error("{dir}: no {stem} or {stem}.gz: the folder must hold the four IDX files (train-images-idx3-ubyte.gz, …)")]
    MissingFile { dir: PathBuf, stem: String },
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        images: PathBuf,
        n_images: usize,
        labels: PathBuf,
        n_labels: usize,
    },
}

pub type Result<T> = std::result::Result<T, DataError>;

#[cfg(feature = "tensors")]
mod tensors {
    use super::{cifar, idx, synthetic, DataError, Result};
    use std::path::{Path, PathBuf};
    use tch::{Kind, Tensor};

    /// A labelled image set in memory.
    #[derive(Debug)]
    pub struct Dataset {
        /// (N, C, H, W), f32 in [−1, 1].
        pub images: Tensor,
        /// (N,), i64.
        pub labels: Tensor,
        pub num_classes: i64,
    }

    impl Dataset {
        pub fn len(&self) -> i64 {
            self.images.size()[0]
        }

        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Split {
        Train,
        Test,
    }

    /// Loads MNIST or Fashion-MNIST (same file names) from `dir`.
    pub fn load_mnist_like(dir: &Path, split: Split) -> Result<Dataset> {
        if !dir.is_dir() {
            return Err(DataError::MissingDir(dir.to_path_buf()));
        }
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let images = idx::read(&images_path)?;
        let labels = idx::read(&labels_path)?;
        let fmt = |path: &Path, problem: String| DataError::Format {
            path: path.to_path_buf(),
            problem,
        };
        if images.dims.len() != 3 {
            return Err(fmt(
                &images_path,
                format!("expected 3 dimensions (N, H, W), found {:?}", images.dims),
            ));
        }
        if labels.dims.len() != 1 {
            return Err(fmt(
                &labels_path,
                format!("expected 1 dimension (N), found {:?}", labels.dims),
            ));
        }
        let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
        if n != labels.dims[0] {
            return Err(DataError::CountMismatch {
                images: images_path,
                n_images: n,
                labels: labels_path,
                n_labels: labels.dims[0],
            });
        }
        if let Some(bad) = labels.data.iter().find(|&&l| l > 9) {
            return Err(fmt(&labels_path, format!("label {bad} is outside 0..=9")));
        }
        let images = Tensor::from_slice(&images.data)
            .reshape([n as i64, 1, h as i64, w as i64])
            .to_kind(Kind::Float)
            / 127.5
            - 1.0;
        let labels = Tensor::from_slice(&labels.data).to_kind(Kind::Int64);
        Ok(Dataset {
            images,
            labels,
            num_classes: 10,
        })
    }

    /// Loads CIFAR-10 from the folder of its binary batches.
    pub fn load_cifar10(dir: &Path, split: Split) -> Result<Dataset> {
        if !dir.is_dir() {
            return Err(DataError::MissingDir(dir.to_path_buf()));
        }
        let names: Vec<String> = match split {
            Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            Split::Test => vec!["test_batch.bin".into()],
        };
        let (mut labels, mut pixels) = (Vec::new(), Vec::new());
        for name in names {
            let path = dir.join(&name);
            if !path.is_file() {
                return Err(DataError::MissingFile {
                    dir: dir.to_path_buf(),
                    stem: name,
                });
            }
            let (l, p) = cifar::read(&path)?;
            labels.extend(l);
            pixels.extend(p);
        }
        let n = labels.len() as i64;
        let images = Tensor::from_slice(&pixels)
            .reshape([n, 3, 32, 32])
            .to_kind(Kind::Float)
            / 127.5
            - 1.0;
        Ok(Dataset {
            images,
            labels: Tensor::from_slice(&labels).to_kind(Kind::Int64),
            num_classes: 10,
        })
    }

    /// The datasets the examples can train on.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Source {
        FashionMnist,
        Mnist,
        Cifar10,
        /// Coloured shapes made in memory (see [`synthetic`]).
        Synthetic,
    }

    impl std::str::FromStr for Source {
        type Err = String;
        fn from_str(s: &str) -> std::result::Result<Self, String> {
            match s {
                "fashion-mnist" => Ok(Self::FashionMnist),
                "mnist" => Ok(Self::Mnist),
                "cifar10" => Ok(Self::Cifar10),
                "synthetic" => Ok(Self::Synthetic),
                _ => Err(format!(
                    "unknown dataset '{s}': use fashion-mnist, mnist, cifar10 or synthetic"
                )),
            }
        }
    }

    impl Source {
        /// Loads a split; `dir` is ignored for the synthetic set.
        pub fn load(self, dir: &Path, split: Split) -> Result<Dataset> {
            match self {
                Self::FashionMnist | Self::Mnist => load_mnist_like(dir, split),
                Self::Cifar10 => load_cifar10(dir, split),
                Self::Synthetic => Ok(synthetic::shapes(
                    if split == Split::Train { 4096 } else { 1024 },
                    28,
                    1,
                    split as u64,
                )),
            }
        }

        /// Image channels and side length.
        pub fn image_shape(self) -> (i64, i64) {
            match self {
                Self::Cifar10 => (3, 32),
                _ => (1, 28),
            }
        }
    }

    fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
        let candidates = [dir.join(format!("{stem}.gz")), dir.join(stem)];
        if let Some(d) = candidates.iter().find(|p| p.is_dir()) {
            return Err(DataError::Format {
                path: d.clone(),
                problem: "is a folder, not a data file: replace it by the file".into(),
            });
        }
        candidates
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| DataError::MissingFile {
                dir: dir.to_path_buf(),
                stem: stem.to_string(),
            })
    }
}

#[cfg(all(test, feature = "tensors"))]
mod class_name_tests {
    #[test]
    fn class_names_follow_the_datasets() {
        assert_eq!(super::class_name("FashionMnist", 9), "Ankle boot");
        assert_eq!(super::class_name("Mnist", 7), "7");
        assert_eq!(super::class_name("Cifar10", 9), "truck");
        for (i, name) in super::synthetic::CLASSES.iter().enumerate() {
            assert_eq!(super::class_name("Synthetic", i as i64), *name);
        }
        assert_eq!(super::class_name("FashionMnist", 10), "class 10");
        assert_eq!(super::class_name("diffusers:/x", 2), "class 2");
    }
}
