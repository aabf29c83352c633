//! The IDX format of (Fashion-)MNIST: a 4-byte magic number `0x00 0x00 type
//! ndim`, then `ndim` big-endian u32 sizes, then the data. We read unsigned
//! bytes (type 0x08), gzipped or not.
use crate::{DataError, Result};
use std::io::Read;
use std::path::Path;

#[derive(Debug, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file; a `.gz` suffix means gzip.
pub fn read(path: &Path) -> Result<Idx> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Format {
                path: path.to_path_buf(),
                problem: format!("not a valid gzip file ({e}); re-download it"),
            })?;
        out
    } else {
        raw
    };
    parse(&bytes).map_err(|problem| DataError::Format {
        path: path.to_path_buf(),
        problem,
    })
}

/// Parses IDX bytes; the error says what is wrong with them.
pub fn parse(bytes: &[u8]) -> std::result::Result<Idx, String> {
    if bytes.len() < 4 {
        return Err(format!(
            "file is {} bytes, too short for the IDX header",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "bad magic number {:02x?}: not an IDX file",
            &bytes[..4]
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "element type 0x{:02x} is not unsigned bytes (0x08)",
            bytes[2]
        ));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 {
        return Err("IDX header declares 0 dimensions".into());
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(format!(
            "truncated header: {ndim} dimensions need {header} bytes, file has {}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let Some(expected) = expected else {
        return Err(format!("dimensions {dims:?} overflow"));
    };
    let have = bytes.len() - header;
    if have != expected {
        let what = if have < expected {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(format!(
            "{what}: dimensions {dims:?} need {expected} data bytes, file has {have}"
        ));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Encodes bytes as IDX (used by tests to build fixtures).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let data: Vec<u8> = (0..24).collect();
        assert_eq!(
            parse(&encode(&[2, 3, 4], &data)).unwrap(),
            Idx {
                dims: vec![2, 3, 4],
                data
            }
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        let good = encode(&[2, 2], &[1, 2, 3, 4]);
        assert!(parse(&good[..3]).unwrap_err().contains("too short"));
        assert!(parse(&[1, 0, 8, 1, 0, 0, 0, 0])
            .unwrap_err()
            .contains("magic"));
        assert!(parse(&[0, 0, 0x0d, 1, 0, 0, 0, 0])
            .unwrap_err()
            .contains("element type"));
        assert!(parse(&good[..good.len() - 1])
            .unwrap_err()
            .contains("truncated"));
        assert!(parse(&good[..6]).unwrap_err().contains("truncated header"));
        let mut long = good.clone();
        long.push(0);
        assert!(parse(&long).unwrap_err().contains("trailing"));
    }
}
