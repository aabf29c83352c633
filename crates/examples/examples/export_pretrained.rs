//! Turn a training checkpoint into a small shippable model: EMA weights and
//! the training config only (no raw weights, no optimizer state).
//!
//! cargo run --release --example export_pretrained -- \
//!     --checkpoint out/train/ckpt-00006000.safetensors --out crates/training/pretrained/fashion-cfg.safetensors \
//!     --command "scripts/train-from-scratch.sh" --hardware "2-core Xeon CPU"
//!
//! The wall time to reach the checkpoint's step is read from loss.csv beside it.
use anyhow::{Context, Result};
use clap::Parser;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use util::outputs::{Format, OutputSet};

#[derive(Parser)]
#[command(about = "Export the EMA weights of a checkpoint for shipping")]
struct Args {
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// The command that trained it (stored in the metadata).
    #[arg(long)]
    command: String,
    /// Where it was trained (stored in the metadata).
    #[arg(long)]
    hardware: String,
}

fn main() {
    util::run(|| {
        let args = Args::parse();
        // The input and the output, checked before anything is read.
        let mut outs = OutputSet::new();
        outs.input("--checkpoint", &args.checkpoint)?;
        let out = outs.output("--out", &args.out, Format::Safetensors)?;
        let mut notes = BTreeMap::new();
        notes.insert("train_command".into(), args.command.clone());
        notes.insert("hardware".into(), args.hardware.clone());
        if let Some(secs) = seconds_at_checkpoint(&args.checkpoint)? {
            notes.insert("train_seconds".into(), format!("{secs:.0}"));
        }
        let bytes = formats::pretrained::export_bytes(&args.checkpoint, notes)?;
        outs.write(out, &bytes)?;
        outs.commit()?;
        let bytes = bytes.len();
        println!(
            "wrote {} ({:.2} MB)",
            args.out.display(),
            bytes as f64 / 1e6
        );
        Ok(())
    })
}

/// The `seconds` column of loss.csv at the checkpoint's step, if the log is there.
fn seconds_at_checkpoint(ckpt: &Path) -> Result<Option<f64>> {
    let step: i64 = ckpt
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_prefix("ckpt-"))
        .and_then(|s| s.parse().ok())
        .context("checkpoint file name should be ckpt-<step>.safetensors")?;
    let Ok(log) = std::fs::read_to_string(ckpt.with_file_name("loss.csv")) else {
        return Ok(None);
    };
    Ok(log.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split(',').collect();
        (cols.first()?.parse::<i64>().ok()? == step).then(|| cols.get(3)?.parse().ok())?
    }))
}
