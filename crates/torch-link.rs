//! Shared build script for every workspace crate that produces binaries
//! (tests, examples, benches). Each crate's Cargo.toml names it with
//! `build = "../torch-link.rs"`.
//!
//! Why per crate: `cargo:rustc-link-arg` only applies to the package that
//! prints it, and tch's own rpath does not reach its dependants.
//!
//! What it does:
//! 1. Fails with one clear line when libtorch is missing. (The version check
//!    lives in `.cargo/rustc-wrapper.sh`, which runs before torch-sys builds.)
//! 2. Adds an rpath to `<torch>/lib`, so binaries load with no LD_LIBRARY_PATH.
//! 3. Links `libtorch_cuda` with `--no-as-needed` when the wheel ships it: the
//!    linker's as-needed default would drop it (no symbol is referenced
//!    directly), and CUDA would then look unavailable at run time.
use std::path::PathBuf;

/// `cargo::error` makes cargo stop with exactly this line (no script dump).
fn fail(msg: &str) -> ! {
    println!("cargo::error={msg}");
    std::process::exit(0);
}

fn main() {
    // The fuzz targets build the `data` parsers without libtorch (see
    // crates/data/fuzz/.cargo/config.toml): no link flags then.
    println!("cargo:rerun-if-env-changed=DIFFUSION_NO_LIBTORCH");
    if std::env::var_os("DIFFUSION_NO_LIBTORCH").is_some() {
        return;
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=../torch-link.rs");
    let Some(torch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        fail("LIBTORCH is not set: build from the repository root (see .cargo/config.toml) after running scripts/setup.sh");
    };
    // Re-check when the venv changes (or disappears: a missing file always reruns).
    println!(
        "cargo:rerun-if-changed={}",
        torch.join("version.py").display()
    );
    let lib = torch.join("lib");
    if !lib.join("libtorch_cpu.so").exists() {
        fail(&format!(
            "libtorch not found at {}: run scripts/setup.sh (it installs torch==2.11.0 from PyPI and links .libtorch)",
            torch.display()
        ));
    }
    // torch/version.py holds `__version__ = '2.11.0+cu130'`.
    let version = std::fs::read_to_string(torch.join("version.py")).unwrap_or_default();
    let found = version
        .lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    // Recorded for `device_info` and checkpoint metadata.
    println!("cargo:rustc-env=DIFFUSION_TORCH_VERSION={found}");
    // Resolve the `.libtorch` symlink so the rpath names the real directory.
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-L{}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
