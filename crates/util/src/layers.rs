//! The network chapter's layer table, counted beside the models.
//!
//! The models report each block's output shape (`network::record_shapes`);
//! this module adds each block's parameters, found by VarStore prefix, and
//! its multiply-accumulates per image, counted from the weights' shapes:
//! - a convolution weight (4-D) costs its size once per output position of
//!   its block (every one of the block's convolutions has the block's
//!   output resolution);
//! - a linear weight (2-D) costs its size once per image, or once per
//!   position in an attention block, which applies it to every token, and
//!   attention adds 2·L²·C for q kᵀ and the weighted sum of v over L positions;
//! - norms, biases and embedding lookups cost nothing here.
//!
//! Variables of blocks that report no shape (the time MLP, the class
//! embedding) form rows of their own, named by their first path component.
use anyhow::{bail, Result};
use tch::Tensor;

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerStat {
    pub name: String,
    /// Output shape, batch dimension included. For a row of unreported
    /// variables it is read off the weights: (1, width) of the vector.
    pub shape: Option<Vec<i64>>,
    pub params: i64,
    /// Multiply-accumulates per image.
    pub macs: i64,
}

/// A reported block: its name, the variable prefixes it owns, its output shape.
pub struct Block<'a> {
    pub name: &'a str,
    pub prefixes: &'a [String],
    pub shape: &'a [i64],
}

fn under(var: &str, prefix: &str) -> bool {
    var == prefix || var.starts_with(&format!("{prefix}."))
}

/// The table: reported blocks in order, after the rows of unreported
/// variables. `lookups` are prefixes of embedding tables.
pub fn layer_table(
    vars: &[(String, Tensor)],
    blocks: &[Block],
    lookups: &[&str],
) -> Result<Vec<LayerStat>> {
    let mut rows: Vec<LayerStat> = blocks
        .iter()
        .map(|b| LayerStat {
            name: b.name.to_string(),
            shape: Some(b.shape.to_vec()),
            params: 0,
            macs: 0,
        })
        .collect();
    let mut extra: Vec<LayerStat> = Vec::new();
    let mut sorted: Vec<&(String, Tensor)> = vars.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, v) in sorted {
        let numel = v.numel() as i64;
        let dims = v.dim();
        // The block with the longest prefix of this variable owns it.
        let owner = blocks
            .iter()
            .enumerate()
            .flat_map(|(i, b)| b.prefixes.iter().map(move |p| (i, p)))
            .filter(|(_, p)| under(name, p))
            .max_by_key(|(_, p)| p.len())
            .map(|(i, _)| i);
        match owner {
            Some(i) => {
                let s = blocks[i].shape;
                let positions: i64 = s.get(2..).map_or(1, |hw| hw.iter().product());
                let attention = blocks[i].name.contains("attentions");
                rows[i].params += numel;
                rows[i].macs += match dims {
                    4 => numel * positions,
                    2 if attention => numel * positions,
                    2 => numel,
                    _ => 0,
                };
            }
            None => {
                let top = name.split('.').next().unwrap_or(name);
                if dims == 4 {
                    bail!("{name}: a convolution whose block reports no output shape");
                }
                let lookup = lookups.iter().any(|l| under(name, l));
                let macs = if dims == 2 && !lookup { numel } else { 0 };
                // The vector's width: a table's row width, or a linear's output
                // features (the last linear in name order, linear_2 after linear_1).
                let size = v.size();
                let width = match (dims, lookup) {
                    (2, true) => Some(size[1]),
                    (2, false) => Some(size[0]),
                    _ => None,
                };
                let r = match extra.iter().position(|r| r.name == top) {
                    Some(i) => &mut extra[i],
                    None => {
                        extra.push(LayerStat {
                            name: top.to_string(),
                            shape: None,
                            params: 0,
                            macs: 0,
                        });
                        extra.last_mut().expect("just pushed")
                    }
                };
                r.params += numel;
                r.macs += macs;
                if let Some(w) = width {
                    r.shape = Some(vec![1, w]);
                }
            }
        }
    }
    for (row, b) in rows.iter_mut().zip(blocks) {
        if b.name.contains("attentions") {
            let (c, l): (i64, i64) = (b.shape[1], b.shape[2..].iter().product());
            row.macs += 2 * l * l * c;
        }
    }
    // Unreported rows first, lookups last among them: the time MLP, then the class table.
    extra.sort_by_key(|r| lookups.iter().any(|l| *l == r.name));
    extra.extend(rows);
    Ok(extra)
}
