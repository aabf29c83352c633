//! CIFAR-10 in its standard binary form: files `data_batch_1.bin` …
//! `data_batch_5.bin` and `test_batch.bin`, each a sequence of 3073-byte
//! records (1 label byte, then 3×32×32 pixels, channel-major).
#[cfg(feature = "tensors")]
use crate::{DataError, Result};

pub const RECORD: usize = 1 + 3 * 32 * 32;
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Parses one batch file: (labels, pixels as bytes, N·3·32·32).
pub fn parse(bytes: &[u8]) -> std::result::Result<(Vec<u8>, Vec<u8>), String> {
    if bytes.is_empty() {
        return Err("file is empty".into());
    }
    if !bytes.len().is_multiple_of(RECORD) {
        return Err(format!(
            "truncated: {} bytes is not a whole number of {RECORD}-byte records ({} full records and {} bytes over)",
            bytes.len(),
            bytes.len() / RECORD,
            bytes.len() % RECORD
        ));
    }
    let n = bytes.len() / RECORD;
    let mut labels = Vec::with_capacity(n);
    let mut pixels = Vec::with_capacity(n * (RECORD - 1));
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] > 9 {
            return Err(format!("record {i}: label {} is outside 0..=9", rec[0]));
        }
        labels.push(rec[0]);
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok((labels, pixels))
}

#[cfg(feature = "tensors")]
pub(crate) fn read(path: &std::path::Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes).map_err(|problem| DataError::Format {
        path: path.to_path_buf(),
        problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_and_rejects_bad_files() {
        let mut bytes = vec![3u8];
        bytes.extend((0..RECORD - 1).map(|i| (i % 251) as u8));
        bytes.push(9);
        bytes.extend(std::iter::repeat_n(7u8, RECORD - 1));
        let (labels, pixels) = parse(&bytes).unwrap();
        assert_eq!(labels, [3, 9]);
        assert_eq!(pixels.len(), 2 * 3072);
        assert_eq!(pixels[1], 1);
        assert!(parse(&bytes[..RECORD + 5])
            .unwrap_err()
            .contains("truncated"));
        assert!(parse(&[]).unwrap_err().contains("empty"));
        bytes[RECORD] = 10;
        assert!(parse(&bytes).unwrap_err().contains("label 10"));
    }
}
