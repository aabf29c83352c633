//! Plumbing shared by the examples: device choice, image grids, charts and
//! CSV files. Nothing here is part of the diffusion algorithms.
mod grid;
pub mod layers;
pub mod lock;
pub mod outputs;
pub mod plot;
pub mod safetensors;
pub mod small_disk;

pub use grid::{labelled_grid, labelled_grid_png, save_labelled_grid, strings, GridLabels};

use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

// ANCHOR: best_device
/// The first CUDA device when there is one, else the CPU.
pub fn best_device() -> Device {
    Device::cuda_if_available()
}
// ANCHOR_END: best_device

/// Runs an example's `main`, printing an error as one line `error: …` (with
/// its causes joined by `: `) and exiting with status 1 instead of panicking.
pub fn run(main: impl FnOnce() -> Result<()>) {
    keep_freed_memory();
    if let Err(e) = main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Parses `cpu`, `cuda`, `cuda:N` or `auto`.
/// A `--seed`: a whole number from 0 to 2^64 − 1, with a message that says so
/// (clap's own would call `-1` an unexpected argument).
pub fn parse_seed(s: &str) -> std::result::Result<u64, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("a seed is a whole number from 0 to {}", u64::MAX))
}

pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "auto" => Ok(best_device()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => cuda(i),
            _ => bail!("unknown device '{s}': use auto, cpu, cuda or cuda:N"),
        },
    }
}

fn cuda(i: usize) -> Result<Device> {
    let n = tch::Cuda::device_count() as usize;
    if i >= n {
        bail!(
            "device cuda:{i} requested but this machine has {n} CUDA device(s): use --device cpu"
        );
    }
    Ok(Device::Cuda(i))
}

/// Writes `bytes` to `path` atomically: a temporary file `.NAME.tmpPID` in
/// the same folder, fsync, then rename. A crash leaves either the old file or
/// the new one; temporaries left by killed processes are removed first. For a
/// command's outputs use [`outputs::OutputSet`], which also checks them before
/// the work and writes several files all-or-nothing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create folder {}", dir.display()))?;
    outputs::remove_stale_temps(dir);
    let tmp = outputs::temp_path(path)?;
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Refuses a tensor holding NaN or infinity, saying how many values and what
/// the tensor is (`what`), so that nothing non-finite is written or used.
pub fn ensure_finite(t: &Tensor, what: &str) -> Result<()> {
    if !t.is_floating_point() || t.numel() == 0 {
        return Ok(());
    }
    let bad = t.isfinite().logical_not().sum(Kind::Int64).int64_value(&[]);
    if bad > 0 {
        let nan = t.isnan().sum(Kind::Int64).int64_value(&[]);
        bail!(
            "{what} holds {bad} non-finite values ({nan} NaN, {} infinite) of {}",
            bad - nan,
            t.numel()
        );
    }
    Ok(())
}

/// Memory this process can still use, in bytes: `MemAvailable` from
/// /proc/meminfo, capped by a cgroup limit when there is one. `None` where
/// neither can be read (then no run is refused for memory).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let avail = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?
        * 1024;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    let used = std::fs::read_to_string("/sys/fs/cgroup/memory.current")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    Some(match (cgroup, used) {
        (Some(max), Some(used)) => avail.min(max.saturating_sub(used)),
        _ => avail,
    })
}

/// "3.2 GB", "640 MB": a byte count for messages.
pub fn human_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else {
        format!("{:.0} MB", (b / 1e6).max(1.0))
    }
}

/// Refuses, before any allocation, work that needs more memory than the
/// machine has: "`what` needs about 12.0 GB but 3.1 GB is available: …".
pub fn ensure_memory(bytes: f64, what: &str, advice: &str) -> Result<()> {
    if let Some(avail) = available_memory() {
        if bytes > avail as f64 {
            bail!(
                "{what} needs about {} but {} is available: {advice}",
                human_bytes(bytes),
                human_bytes(avail as f64)
            );
        }
    }
    Ok(())
}

/// An image as PNG bytes.
pub fn png_bytes(img: &image::RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
    Ok(bytes)
}

/// Images (N, C, H, W) in [−1, 1] with C = 1 or 3 as 8-bit RGB, pixel by
/// pixel (N, H, W, 3): returns (N, H, W, pixels).
pub(crate) fn images_to_rgb8(images: &Tensor) -> Result<(i64, i64, i64, Vec<u8>)> {
    let [n, c, h, w] = images.size()[..] else {
        bail!(
            "image grid needs a 4-D (N, C, H, W) tensor, got shape {:?}",
            images.size()
        );
    };
    if c != 1 && c != 3 {
        bail!("image grid needs 1 or 3 channels, got {c}");
    }
    if n == 0 {
        bail!("image grid needs at least one image");
    }
    ensure_finite(images, "the images to draw")?;
    let u8s = ((images
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .clamp(-1.0, 1.0)
        + 1.0)
        * 127.5)
        .round()
        .to_kind(Kind::Uint8)
        .expand([n, 3, h, w], false)
        .permute([0, 2, 3, 1])
        .contiguous();
    Ok((n, h, w, Vec::<u8>::try_from(u8s.flatten(0, -1))?))
}

/// Arranges images (N, C, H, W) with values in [−1, 1] into a `rows × cols`
/// grid with a 2-pixel border, as 8-bit RGB. For figures, prefer
/// [`save_labelled_grid`], which says what each row and column is.
pub fn image_grid(images: &Tensor, cols: i64) -> Result<image::RgbImage> {
    if cols <= 0 {
        bail!("image grid needs at least one image and one column");
    }
    let (n, h, w, pixels) = images_to_rgb8(images)?;
    let rows = (n + cols - 1) / cols;
    let pad = 2;
    let (gw, gh) = (cols * (w + pad) + pad, rows * (h + pad) + pad);
    let mut grid = image::RgbImage::from_pixel(gw as u32, gh as u32, image::Rgb([255, 255, 255]));
    for i in 0..n {
        let (r, cidx) = (i / cols, i % cols);
        for y in 0..h {
            for x in 0..w {
                let o = (((i * h + y) * w + x) * 3) as usize;
                let px = image::Rgb([pixels[o], pixels[o + 1], pixels[o + 2]]);
                grid.put_pixel(
                    (pad + cidx * (w + pad) + x) as u32,
                    (pad + r * (h + pad) + y) as u32,
                    px,
                );
            }
        }
    }
    Ok(grid)
}

/// Saves [`image_grid`] as a PNG, scaled up by an integer factor for reading.
pub fn save_grid(images: &Tensor, cols: i64, scale: u32, path: &Path) -> Result<()> {
    let grid = image_grid(images, cols)?;
    let grid = image::imageops::resize(
        &grid,
        grid.width() * scale,
        grid.height() * scale,
        image::imageops::FilterType::Nearest,
    );
    write_atomic(path, &png_bytes(&grid)?)
}

/// A CSV file's text from a header and rows of numbers.
pub fn csv_text(header: &[&str], rows: &[Vec<f64>]) -> String {
    let mut s = header.join(",");
    s.push('\n');
    for row in rows {
        let cells: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
        s.push_str(&cells.join(","));
        s.push('\n');
    }
    s
}

/// Writes a CSV file from a header and rows of numbers.
pub fn write_csv(path: &Path, header: &[&str], rows: &[Vec<f64>]) -> Result<()> {
    write_atomic(path, csv_text(header, rows).as_bytes())
}

/// CPU time (user + system, all threads) this process has used so far, in
/// seconds. Training budgets use it so that a run sharing the machine with
/// other work still gets the compute it was promised.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// The repository root (the folder holding the workspace `Cargo.toml`).
pub fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the util crate sits in <root>/crates/util")
}

/// The venv's python, for the parity scripts: `LIBTORCH` (set by
/// `.cargo/config.toml` or CI) is `<venv>/lib/pythonX.Y/site-packages/torch`.
pub fn venv_python() -> Result<std::path::PathBuf> {
    let torch = std::env::var("LIBTORCH")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".libtorch"));
    let torch = repo_root().join(torch);
    let torch = torch.canonicalize().with_context(|| {
        format!(
            "LIBTORCH ({}) must point at the venv's torch: run scripts/setup.sh",
            torch.display()
        )
    })?;
    let python = torch
        .ancestors()
        .nth(4)
        .context("LIBTORCH is not <venv>/lib/pythonX.Y/site-packages/torch")?
        .join("bin/python");
    if !python.exists() {
        bail!("no python at {}: run scripts/setup.sh", python.display());
    }
    Ok(python)
}

/// Runs `scripts/parity/SCRIPT` with the venv's python and `args`, and
/// returns what it printed; a failed run is an error that carries its
/// output. For the tests that check our code against PyTorch and diffusers.
pub fn run_parity_script<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> Result<String> {
    let path = repo_root().join("scripts/parity").join(script);
    let run = std::process::Command::new(venv_python()?)
        .arg(&path)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", path.display()))?;
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    if !run.status.success() {
        bail!(
            "{} failed ({}):\n{stdout}\n{}",
            path.display(),
            run.status,
            String::from_utf8_lossy(&run.stderr)
        );
    }
    Ok(stdout)
}

// ANCHOR: keep_freed_memory
/// Stops glibc from handing large freed blocks back to the kernel.
///
/// By default glibc serves every allocation above a (dynamic, at most 32 MiB)
/// threshold with a fresh `mmap` and unmaps it on free. Sampling allocates
/// activations of many MB at every network call, so each call paid for
/// zeroed pages from the kernel. Serving large blocks from the heap and not
/// trimming it lets freed blocks be reused. `DIFFUSION_DEFAULT_MALLOC=1`
/// leaves glibc's defaults alone (for `scripts/bench/allocator.sh`).
pub fn keep_freed_memory() {
    if std::env::var_os("DIFFUSION_DEFAULT_MALLOC").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before
    // any tensor exists and takes plain integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0); // serve every size from the heap
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30); // and keep what is freed
    }
}
// ANCHOR_END: keep_freed_memory

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_each_image_and_maps_range() {
        // Two 1×2×2 images: all −1 (black) and all +1 (white), in a 2-column grid.
        let imgs = Tensor::cat(
            &[
                Tensor::full([1, 1, 2, 2], -1.0, (Kind::Float, Device::Cpu)),
                Tensor::full([1, 1, 2, 2], 1.0, (Kind::Float, Device::Cpu)),
            ],
            0,
        );
        let g = image_grid(&imgs, 2).unwrap();
        assert_eq!((g.width(), g.height()), (2 * 4 + 2, 4 + 2));
        assert_eq!(g.get_pixel(2, 2).0, [0, 0, 0]);
        assert_eq!(g.get_pixel(3, 3).0, [0, 0, 0]);
        assert_eq!(g.get_pixel(6, 2).0, [255, 255, 255]);
        assert_eq!(g.get_pixel(0, 0).0, [255, 255, 255]); // border
        assert!(image_grid(&Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)), 1).is_err());
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = std::env::temp_dir().join(format!("util-atomic-{}", std::process::id()));
        let p = dir.join("x.txt");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary files left behind");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_write_that_runs_out_of_space_leaves_the_old_file_whole() {
        // 10 KiB on a 64 KiB disk, then 100 KiB: the second write must fail
        // part way. A plain fs::write would have truncated the old file first.
        let Some(disk) = small_disk::SmallDisk::mount("atomic", 64 * 1024) else {
            return;
        };
        let p = disk.path().join("model.safetensors");
        let old: Vec<u8> = (0..10 * 1024).map(|i| (i % 251) as u8).collect();
        write_atomic(&p, &old).unwrap();
        let err = write_atomic(&p, &vec![7u8; 100 * 1024]).unwrap_err();
        assert!(format!("{err:#}").contains("cannot write"), "{err:#}");
        assert_eq!(std::fs::read(&p).unwrap(), old, "the old file is intact");
        let names: Vec<_> = std::fs::read_dir(disk.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left behind: {names:?}");
    }

    #[test]
    fn device_names_parse() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu")
            .unwrap_err()
            .to_string()
            .contains("unknown device"));
    }
}
