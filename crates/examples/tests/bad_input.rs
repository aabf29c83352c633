//! The examples' bad-input contract, case by case: every bad input or fault
//! gets the exit code it should, one `error:` line that names the problem
//! (no `panicked`, no backtrace), every file that was there before is
//! byte-identical afterwards, and nothing new is left behind (no partial
//! output, no temporary file, no empty folder).
//!
//! The cases run the example binaries, which `cargo test` builds; when this
//! test is run alone (`cargo test -p examples --test bad_input`) it builds
//! them first. Fixtures are tiny and made here: a 32-channel SeedUNet
//! checkpoint with T = 20, damaged copies of it, IDX files of a few images.
use formats::checkpoint::TrainerFile;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

const BINS: [(&str, &str); 9] = [
    ("examples", "sample"),
    ("examples", "train"),
    ("examples", "evaluate"),
    ("examples", "export_pretrained"),
    ("examples", "ddim_study"),
    ("examples", "guidance_sweep"),
    ("examples", "measure_sweep"),
    ("forward", "forward_process"),
    ("util", "device_info"),
];

/// The folder of the example binaries: <target>/debug/examples.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap().join("examples");
        // Build them (a no-op when `cargo test` already has): the binaries
        // must be the ones of this source tree.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(&root).args(["build", "--quiet"]);
        for (pkg, ex) in BINS {
            cmd.args(["-p", pkg, "--example", ex]);
        }
        let st = cmd.status().expect("cargo runs");
        assert!(st.success(), "cannot build the example binaries");
        dir
    })
}

/// Fixtures, made once and copied into every case's folder.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("bad-input-fixtures-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        make_fixtures(&d);
        d
    })
}

fn tiny_config() -> training::TrainConfig {
    training::TrainConfig {
        model: training::ModelConfig::Seed(network::SeedUNetConfig {
            in_channels: 1,
            channels: 32,
            num_classes: Some(4),
            full_res_skip: false,
        }),
        schedule: forward::ScheduleKind::Linear,
        objective: training::Objective::Diffusion,
        zero_terminal_snr: false,
        timesteps: 20,
        prediction: forward::Prediction::Epsilon,
        loss_weighting: Default::default(),
        lr_schedule: Default::default(),
        optimizer: training::optim::AdamConfig {
            lr: 1e-3,
            ..Default::default()
        },
        warmup: 0,
        grad_clip: Some(1.0),
        ema_decay: 0.99,
        p_uncond: 0.1,
        batch_size: 8,
        seed: 0,
        dataset: "Synthetic".into(),
    }
}

/// The file's bytes with the 4 bytes of `tensor`'s element `at` replaced.
fn patch_f32(bytes: &[u8], tensor: &str, at: usize, value: f32) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let begin = header[tensor]["data_offsets"][0].as_u64().unwrap() as usize;
    let mut out = bytes.to_vec();
    let o = 8 + n + begin + 4 * at;
    out[o..o + 4].copy_from_slice(&value.to_le_bytes());
    out
}

/// A safetensors file written by hand (to hold what our writer refuses).
fn raw_safetensors(name: &str, dtype: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let header = serde_json::json!({
        name: {"dtype": dtype, "shape": shape, "data_offsets": [0, data.len()]}
    });
    let mut json = serde_json::to_vec(&header).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend_from_slice(data);
    out
}

/// IDX files of `n` h×w images with labels `label(i)` in `dir`.
fn idx_set(dir: &Path, prefix: &str, n: usize, h: usize, w: usize, label: impl Fn(usize) -> u8) {
    std::fs::create_dir_all(dir).unwrap();
    let pixels: Vec<u8> = (0..n * h * w).map(|i| (i % 251) as u8).collect();
    let labels: Vec<u8> = (0..n).map(label).collect();
    std::fs::write(
        dir.join(format!("{prefix}-images-idx3-ubyte")),
        data::idx::encode(&[n, h, w], &pixels),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{prefix}-labels-idx1-ubyte")),
        data::idx::encode(&[n], &labels),
    )
    .unwrap();
}

fn make_fixtures(d: &Path) {
    let tr = training::Trainer::new(tiny_config(), Device::Cpu).unwrap();
    let ck = d.join("ckpt.safetensors");
    tr.save(&ck).unwrap();
    let bytes = std::fs::read(&ck).unwrap();
    // A rotation folder from a (pretend) run on synthetic shapes.
    std::fs::create_dir_all(d.join("run")).unwrap();
    std::fs::write(d.join("run/ckpt-00000002.safetensors"), &bytes).unwrap();
    // A v-prediction model on a zero-terminal-SNR schedule.
    let zsnr = training::TrainConfig {
        zero_terminal_snr: true,
        prediction: forward::Prediction::Velocity,
        ..tiny_config()
    };
    training::Trainer::new(zsnr, Device::Cpu)
        .unwrap()
        .save(&d.join("zsnr.safetensors"))
        .unwrap();
    // A rectified-flow model.
    let flow = training::TrainConfig {
        objective: training::Objective::RectifiedFlow,
        prediction: forward::Prediction::Velocity,
        ..tiny_config()
    };
    training::Trainer::new(flow, Device::Cpu)
        .unwrap()
        .save(&d.join("flow.safetensors"))
        .unwrap();
    // One NaN in one bias of the EMA weights.
    std::fs::write(
        d.join("nan.safetensors"),
        patch_f32(&bytes, "ema.out.bias", 0, f32::NAN),
    )
    .unwrap();
    std::fs::write(d.join("trunc.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(
        d.join("f16.safetensors"),
        raw_safetensors("weights", "F16", &[2], &[0, 60, 0, 60]),
    )
    .unwrap();
    formats::pretrained::export(&ck, &d.join("exported.safetensors"), BTreeMap::new()).unwrap();
    // The same weights under a config that asks for 4096 channels.
    let mut loaded = util::safetensors::load(&ck, Device::Cpu).unwrap();
    let cfg = loaded.metadata["config"].replace("\"channels\":32", "\"channels\":4096");
    assert_ne!(cfg, loaded.metadata["config"]);
    loaded.metadata.insert("config".into(), cfg);
    let tensors: Vec<(String, Tensor)> = loaded.tensors.into_iter().collect();
    let huge = util::safetensors::to_bytes(&tensors, &loaded.metadata).unwrap();
    std::fs::write(d.join("huge.safetensors"), huge).unwrap();
    // Sample files: valid ones, and one with an infinity in its images.
    let images = Tensor::rand([20, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let labels = Tensor::arange(20, (Kind::Int64, Device::Cpu)).remainder(10);
    let samples = util::safetensors::to_bytes(
        &[("images".into(), images), ("labels".into(), labels)],
        &BTreeMap::new(),
    )
    .unwrap();
    std::fs::write(d.join("samples.safetensors"), &samples).unwrap();
    std::fs::write(
        d.join("inf-samples.safetensors"),
        patch_f32(&samples, "images", 5, f32::INFINITY),
    )
    .unwrap();
    // Data folders: empty, one class, 32×32, five images, and a .gz folder.
    for split in ["train", "t10k"] {
        idx_set(&d.join("data-empty"), split, 0, 28, 28, |_| 0);
        idx_set(&d.join("data-one-class"), split, 12, 28, 28, |_| 0);
        idx_set(&d.join("data-32"), split, 16, 32, 32, |i| (i % 10) as u8);
        idx_set(&d.join("data-five"), split, 5, 28, 28, |i| i as u8);
        idx_set(&d.join("data-28"), split, 16, 28, 28, |i| (i % 10) as u8);
    }
    std::fs::create_dir_all(d.join("data-gz-dir/t10k-images-idx3-ubyte.gz")).unwrap();
    std::fs::write(d.join("a-file"), b"not a folder").unwrap();
    std::fs::create_dir_all(d.join("a-folder.png")).unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Every file and folder under `dir`, with the bytes of each file.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if e.file_type().unwrap().is_dir() {
                out.insert(rel, None);
                stack.push(p);
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

type Setup = Box<dyn Fn(&Path)>;
type Extra = Box<dyn Fn(&Path, &str)>;

/// One case: a command, the exit code it must give, and the text its one
/// error line must hold. `setup` prepares the case's folder; `extra` checks
/// what success cases must leave.
struct Case {
    class: &'static str,
    name: &'static str,
    bin: &'static str,
    args: Vec<String>,
    code: i32,
    want: &'static str,
    setup: Option<Setup>,
    /// Files the command may create or change (success cases).
    outputs: Vec<&'static str>,
    extra: Option<Extra>,
}

fn case(
    class: &'static str,
    name: &'static str,
    bin: &'static str,
    args: &str,
    code: i32,
    want: &'static str,
) -> Case {
    Case {
        class,
        name,
        bin,
        args: args.split_whitespace().map(String::from).collect(),
        code,
        want,
        setup: None,
        outputs: Vec::new(),
        extra: None,
    }
}

impl Case {
    fn setup(mut self, f: impl Fn(&Path) + 'static) -> Self {
        self.setup = Some(Box::new(f));
        self
    }
    fn outputs(mut self, o: &[&'static str]) -> Self {
        self.outputs = o.to_vec();
        self
    }
    fn extra(mut self, f: impl Fn(&Path, &str) + 'static) -> Self {
        self.extra = Some(Box::new(f));
        self
    }
}

/// Runs a case in a fresh copy of the fixtures; returns what went wrong.
fn run_case(c: &Case, root: &Path) -> Result<(), String> {
    let dir = root.join(c.name);
    copy_tree(fixtures(), &dir);
    if let Some(s) = &c.setup {
        s(&dir);
    }
    let before = snapshot(&dir);
    let out = Command::new(bin_dir().join(c.bin))
        .args(&c.args)
        .current_dir(&dir)
        .env("RUST_BACKTRACE", "1")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", c.bin))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let all = format!("{stdout}{stderr}");
    let code = out.status.code().unwrap_or(-1);
    let mut problems = Vec::new();
    if code != c.code {
        problems.push(format!("exit code {code}, expected {}", c.code));
    }
    for bad in [
        "panicked",
        "backtrace",
        "stack backtrace",
        "Exception raised",
    ] {
        if all.contains(bad) {
            problems.push(format!("output holds '{bad}'"));
        }
    }
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    if c.code != 0 {
        match errors[..] {
            [line] if line.contains(c.want) => {}
            [line] => problems.push(format!("the error line does not say '{}': {line}", c.want)),
            _ => problems.push(format!("{} error lines, expected one", errors.len())),
        }
    } else if !all.contains(c.want) {
        problems.push(format!("the output does not say '{}'", c.want));
    }
    let after = snapshot(&dir);
    for (p, bytes) in &before {
        let allowed = c.outputs.iter().any(|o| Path::new(o) == p);
        if !allowed && after.get(p) != Some(bytes) {
            problems.push(format!("{} changed or vanished", p.display()));
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        let allowed = c.outputs.iter().any(|o| Path::new(o) == p);
        if !allowed {
            problems.push(format!("{} was left behind", p.display()));
        }
    }
    if let Some(x) = &c.extra {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| x(&dir, &all))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            problems.push(format!("extra check: {msg}"));
        }
    }
    if problems.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    } else {
        Err(format!(
            "{}\n      stderr: {}",
            problems.join("; "),
            stderr.trim().replace('\n', "\n              ")
        ))
    }
}

fn cases() -> Vec<Case> {
    let s = "sample --checkpoint ckpt.safetensors --steps 2";
    let tr =
        "--dataset synthetic --model seed --channels 32 --batch-size 8 --timesteps 20 --samples 0";
    let sample = |class, name, args: &str, code, want| {
        let mut c = case(
            class,
            name,
            "sample",
            &format!("{} {args}", &s[7..]),
            code,
            want,
        );
        if !args.contains("--out") && !args.contains("--no-grid") {
            c.args.extend(["--out".into(), "s.png".into()]);
        }
        c
    };
    let train = |class, name, args: &str, code, want| {
        case(class, name, "train", &format!("{tr} {args}"), code, want)
    };
    let mut v = vec![
        // --- an output that would overwrite an input, or another output ---
        sample("clash", "save-tensors-is-the-checkpoint", "--save-tensors ckpt.safetensors", 1, "is the input --checkpoint"),
        sample("clash", "trace-is-the-checkpoint", "--trace ./run/../ckpt.safetensors", 1, "is the input --checkpoint"),
        sample("clash", "hard-link-to-the-checkpoint", "--save-tensors link.safetensors", 1, "is the input --checkpoint")
            .setup(|d| std::fs::hard_link(d.join("ckpt.safetensors"), d.join("link.safetensors")).unwrap()),
        sample("clash", "symlink-to-the-checkpoint", "--trace sym.safetensors", 1, "is the input --checkpoint")
            .setup(|d| std::os::unix::fs::symlink(d.join("ckpt.safetensors"), d.join("sym.safetensors")).unwrap()),
        sample("clash", "out-and-trajectory-the-same", "--out f.png --trajectory ./f.png", 1, "name the same file"),
        sample("clash", "save-tensors-and-trace-the-same", "--save-tensors t.safetensors --trace t.safetensors", 1, "name the same file"),
        case("clash", "export-onto-its-checkpoint", "export_pretrained", "--checkpoint run/ckpt-00000002.safetensors --out run/ckpt-00000002.safetensors --command c --hardware h", 1, "would destroy the input"),
        case("clash", "export-onto-its-checkpoint-by-another-name", "export_pretrained", "--checkpoint run/ckpt-00000002.safetensors --out run/../run/ckpt-00000002.safetensors --command c --hardware h", 1, "would destroy the input"),
        case("clash", "evaluate-csv-onto-its-samples", "evaluate", "--samples samples.safetensors --csv s.csv", 1, "is the input --samples")
            .setup(|d| std::os::unix::fs::symlink(d.join("samples.safetensors"), d.join("s.csv")).unwrap()),
        case("clash", "ddim-study-over-its-checkpoint", "ddim_study", "--checkpoint steps.png --out .", 1, "is the input --checkpoint")
            .setup(|d| std::fs::copy(d.join("ckpt.safetensors"), d.join("steps.png")).map(|_| ()).unwrap()),

        // --- outputs checked before any work ---
        sample("outputs-first", "jpg-name-for-a-png", "--out s.jpg", 1, "must end in .png"),
        sample("outputs-first", "gif-named-png", "--gif g.png", 1, "must end in .gif"),
        sample("outputs-first", "tensors-named-pt", "--save-tensors s.pt", 1, "must end in .safetensors"),
        sample("outputs-first", "unwritable-out", "--out /proc/no/s.png", 1, "cannot write into /proc"),
        sample("outputs-first", "unwritable-trace-leaves-no-png", "--out s.png --trace /proc/no/t.safetensors", 1, "cannot write into /proc"),
        sample("outputs-first", "unwritable-gif-leaves-no-png", "--out s.png --gif /proc/no/g.gif", 1, "cannot write into /proc"),
        sample("outputs-first", "out-is-a-folder", "--out a-folder.png", 1, "is a folder"),
        sample("outputs-first", "parent-is-a-file", "--out a-file/s.png", 1, "not a folder"),
        case("outputs-first", "evaluate-unwritable-csv", "evaluate", "--samples samples.safetensors --csv /proc/no/e.csv", 1, "cannot write into /proc"),
        case("outputs-first", "evaluate-markdown-named-txt", "evaluate", "--samples samples.safetensors --markdown e.txt", 1, "must end in .md"),
        case("outputs-first", "forward-process-unwritable", "forward_process", "--out /proc/no --data-dir data-28", 1, "cannot write into /proc"),
        case("outputs-first", "forward-process-out-is-a-file", "forward_process", "--out a-file --data-dir data-28", 1, "not a folder"),
        case("outputs-first", "guidance-sweep-unwritable", "guidance_sweep", "--checkpoint ckpt.safetensors --out /proc/no", 1, "cannot write into /proc"),
        case("outputs-first", "ddim-study-unwritable", "ddim_study", "--checkpoint ckpt.safetensors --out /proc/no", 1, "cannot write into /proc"),
        case("outputs-first", "measure-sweep-unwritable", "measure_sweep", "--out /proc/no", 1, "cannot write into /proc"),
        case("outputs-first", "export-named-bin", "export_pretrained", "--checkpoint run/ckpt-00000002.safetensors --out e.bin --command c --hardware h", 1, "must end in .safetensors"),
        train("outputs-first", "train-out-is-a-file", "--out a-file", 1, "a-file"),

        // --- NaN and infinity ---
        sample("non-finite", "nan-in-a-bias", "", 1, "tensor ema.out.bias holds 1 non-finite")
            .setup(|d| std::fs::copy(d.join("nan.safetensors"), d.join("ckpt.safetensors")).map(|_| ()).unwrap()),
        sample("non-finite", "eta-1e30", "--eta 1e30", 1, "η must be finite and between 0"),
        sample("non-finite", "eta-nan", "--eta nan", 1, "η must be finite"),
        sample("non-finite", "eta-negative", "--eta -1", 1, "η = -1"),
        sample("non-finite", "guidance-1e30-no-clip", "--guidance 1e30 --no-clip", 1, "is out of range"),
        sample("non-finite", "guidance-nan", "--guidance nan", 1, "w = NaN is out of range"),
        sample("non-finite", "guidance-inf", "--guidance inf", 1, "w = inf is out of range"),
        sample("non-finite", "guidance-rescale-nan", "--guidance 3 --guidance-rescale nan", 1, "φ = NaN is out of range"),
        sample("non-finite", "guidance-rescale-1.5", "--guidance 3 --guidance-rescale 1.5", 1, "φ = 1.5 is out of range"),
        train("non-finite", "lr-nan", "--lr nan --out r", 1, "lr = NaN (--lr)"),
        train("non-finite", "lr-inf", "--lr inf --out r", 1, "lr = inf (--lr)"),
        train("non-finite", "lr-zero", "--lr 0 --out r", 1, "lr = 0 (--lr)"),
        train("non-finite", "weight-decay-nan", "--weight-decay nan --out r", 1, "weight_decay = NaN"),
        train("non-finite", "grad-clip-nan", "--grad-clip nan --out r", 1, "--grad-clip NaN"),
        train("non-finite", "grad-clip-negative", "--grad-clip=-1 --out r", 1, "--grad-clip -1"),
        train("non-finite", "ema-decay-nan", "--ema-decay nan --out r", 1, "ema_decay = NaN"),
        train("non-finite", "ema-decay-one", "--ema-decay 1 --out r", 1, "ema_decay = 1"),
        train("non-finite", "p-uncond-nan", "--p-uncond nan --out r", 1, "--p-uncond NaN"),
        train("non-finite", "minutes-nan", "--minutes nan --out r", 1, "--minutes NaN"),
        train("non-finite", "final-lr-fraction-nan", "--lr-decay cosine --final-lr-fraction nan --out r", 1, "--final-lr-fraction NaN"),
        case("non-finite", "min-snr-gamma-nan", "train", "--loss-weighting min-snr-nan --out r", 2, "unknown loss weighting"),
        case("non-finite", "evaluate-samples-with-inf", "evaluate", "--samples inf-samples.safetensors", 1, "tensor images holds 1 non-finite"),
        case("non-finite", "guidance-sweep-scale-1e30", "guidance_sweep", "--checkpoint ckpt.safetensors --steps 2 --scales 0,1e30 --out g", 1, "is out of range"),
        case("non-finite", "forward-process-at-nan", "forward_process", "--at nan,0.5 --data-dir data-28 --out f", 1, "--at NaN"),

        // --- one training folder, one run ---
        train("lock", "second-run-on-a-locked-folder", "--out run --resume", 1, "is in use by another training run (PID")
            .setup(|d| std::fs::write(d.join("run/.lock"), std::process::id().to_string()).unwrap()),
        train("lock", "stale-lock-is-taken-over", "--steps 1 --out fresh", 0, "took over the lock")
            .setup(|d| {
                std::fs::create_dir_all(d.join("fresh")).unwrap();
                std::fs::write(d.join("fresh/.lock"), "4999999").unwrap();
            })
            .outputs(&["fresh/.lock", "fresh/ckpt-00000001.safetensors", "fresh/loss.csv", "fresh/loss.png"])
            .extra(|d, _| assert!(!d.join("fresh/.lock").exists(), "the lock was not released")),

        // --- what used to panic ---
        case("panic", "forward-process-empty-test-set", "forward_process", "--data-dir data-empty --out f", 1, "holds no images"),
        case("panic", "forward-process-one-class", "forward_process", "--data-dir data-one-class --out f", 1, "has no image of class 1"),
        case("panic", "forward-process-32x32", "forward_process", "--data-dir data-32 --out f", 1, "not 1×28×28"),
        case("panic", "evaluate-reference-32x32", "evaluate", "--samples samples.safetensors --data-dir data-32", 1, "[1, 28, 28] (C, H, W) is needed"),
        sample("panic", "config-asks-for-4096-channels", "", 1, "does not match the weights")
            .setup(|d| std::fs::copy(d.join("huge.safetensors"), d.join("ckpt.safetensors")).map(|_| ()).unwrap()),
        case("panic", "n-1e9", "sample", "--checkpoint ckpt.safetensors --steps 2 --n 1000000000 --out s.png", 1, "needs about"),
        case("panic", "per-class-1e8", "sample", "--checkpoint ckpt.safetensors --steps 2 --per-class 100000000 --out s.png", 1, "needs about"),
        case("panic", "guidance-sweep-per-class-1e8", "guidance_sweep", "--checkpoint ckpt.safetensors --steps 2 --per-class 100000000 --out g", 1, "needs about"),
        case("panic", "ddim-study-n-1e9", "ddim_study", "--checkpoint ckpt.safetensors --n 1000000000 --out d", 1, "needs about"),
        case("panic", "measure-sweep-n-1e9", "measure_sweep", "--n 1000000000 --out m", 1, "needs about"),
        case("panic", "train-channels-2e6", "train", "--dataset synthetic --model seed --channels 2097152 --out r", 1, "needs about"),

        // --- flags that conflict or do nothing, data that does not fit ---
        case("silent", "class-with-n", "sample", "--checkpoint ckpt.safetensors --steps 2 --class 3 --n 50", 2, "cannot be used with"),
        sample("silent", "variance-with-ddim", "--variance large", 1, "does nothing with --sampler ddim"),
        case("silent", "eta-with-ddpm", "sample", "--checkpoint ckpt.safetensors --sampler ddpm --eta 0.5 --out s.png", 1, "does nothing with --sampler ddpm"),
        case("silent", "spacing-with-ddpm", "sample", "--checkpoint ckpt.safetensors --sampler ddpm --spacing leading --out s.png", 1, "does nothing with --sampler ddpm"),
        sample("silent", "no-grid-with-out", "--no-grid --out s.png", 2, "cannot be used with"),
        sample("silent", "guidance-rescale-at-w-1", "--guidance-rescale 0.7 --out s.png", 1, "does nothing at --guidance 1"),
        case("silent", "ode-on-zero-terminal-snr", "sample", "--checkpoint zsnr.safetensors --sampler heun --steps 2 --out s.png", 1, "infinite on a zero-terminal-SNR schedule"),
        case("silent", "flow-with-ddim", "sample", "--checkpoint flow.safetensors --sampler ddim --steps 2 --out s.png", 1, "sample it with --sampler euler or heun"),
        case("silent", "flow-with-karras", "sample", "--checkpoint flow.safetensors --sampler heun --karras 7 --steps 2 --out s.png", 1, "--karras does nothing with a rectified-flow model"),
        case("silent", "flow-with-trace", "sample", "--checkpoint flow.safetensors --sampler euler --steps 2 --trace t.safetensors --out s.png", 1, "a flow model's steps are not traced"),
        case("non-finite", "flow-shift-nan", "sample", "--checkpoint flow.safetensors --sampler euler --steps 2 --shift nan --out s.png", 1, "a finite shift above 0"),
        sample("silent", "shift-with-a-diffusion", "--shift 3 --out s.png", 1, "--shift does nothing with a diffusion model"),
        case("silent", "guidance-sweep-of-a-flow", "guidance_sweep", "--checkpoint flow.safetensors --out g", 1, "is a rectified-flow model"),
        train("silent", "flow-with-eps", "--objective flow --prediction eps --out r", 1, "a rectified-flow model predicts the path's velocity"),
        train("silent", "flow-with-min-snr", "--objective flow --loss-weighting min-snr-5 --out r", 1, "drop them with --objective flow"),
        train("silent", "zero-terminal-snr-with-eps", "--zero-terminal-snr --out r", 1, "zero terminal SNR leaves no signal at the last step"),
        case("silent", "forward-process-at-out-of-range", "forward_process", "--at=-3,7 --data-dir data-28 --out f", 1, "--at -3"),
        case("silent", "evaluate-five-reference-images", "evaluate", "--samples samples.safetensors --data-dir data-five", 1, "holds 5 images"),
        case("silent", "train-on-32x32-greyscale", "train", "--dataset mnist --data-dir data-32 --batch-size 8 --out r", 1, "[1, 28, 28] (C, H, W) is needed"),
        case("silent", "device-info-with-a-flag", "device_info", "--device cuda", 2, "takes no flags"),
        case("silent", "resume-on-another-dataset", "train", "--dataset mnist --data-dir data-28 --batch-size 8 --samples 0 --steps 3 --out run --resume", 1, "were trained on Synthetic, not Mnist"),
        case("silent", "train-on-an-empty-dataset", "train", "--dataset mnist --data-dir data-empty --batch-size 8 --out r", 1, "holds no images"),

        // --- messages that say what is wrong ---
        sample("messages", "class-10-of-4", "--class 10", 1, "classes 0 to 3"),
        sample("messages", "class-minus-1", "--class -1", 1, "classes 0 to 3"),
        sample("messages", "seed-minus-1", "--seed -1", 2, "a seed is a whole number from 0 to"),
        case("messages", "evaluate-seed-minus-1", "evaluate", "--samples s.safetensors --seed=-1", 2, "a seed is a whole number from 0 to"),
        case("messages", "no-model-flag", "sample", "--out s.png", 1, "--pretrained NAME"),
        sample("messages", "truncated-checkpoint", "", 1, "truncated: ")
            .setup(|d| std::fs::copy(d.join("trunc.safetensors"), d.join("ckpt.safetensors")).map(|_| ()).unwrap()),
        case("messages", "f16-tensor-named", "sample", "--checkpoint f16.safetensors --out s.png", 1, "tensor weights is F16"),
        case("messages", "raw-weights-of-an-exported-model", "sample", "--checkpoint exported.safetensors --raw-weights --out s.png", 1, "holds only EMA weights"),
        case("messages", "checkpoint-is-a-folder", "sample", "--checkpoint run --out s.png", 1, "is a folder"),
        case("messages", "evaluate-a-checkpoint-as-samples", "evaluate", "--samples ckpt.safetensors", 1, "no 'images' tensor"),
        case("messages", "sample-file-not-called-checkpoint", "evaluate", "--samples trunc.safetensors", 1, "sample file trunc.safetensors: truncated"),
        case("messages", "classifier-file-not-called-checkpoint", "evaluate", "--samples samples.safetensors --classifier trunc.safetensors", 1, "classifier file trunc.safetensors"),
        case("messages", "resume-from-an-exported-model", "train", &format!("{tr} --steps 3 --out exp --resume"), 1, "cannot resume training")
            .setup(|d| {
                std::fs::create_dir_all(d.join("exp")).unwrap();
                std::fs::copy(d.join("exported.safetensors"), d.join("exp/ckpt-00000002.safetensors")).unwrap();
            }),
        case("messages", "resume-from-a-damaged-newest", "train", &format!("{tr} --steps 5 --out run --resume"), 1, "the previous checkpoint run/ckpt-00000002.safetensors loads")
            .setup(|d| std::fs::copy(d.join("trunc.safetensors"), d.join("run/ckpt-00000003.safetensors")).map(|_| ()).unwrap()),
        case("messages", "gz-that-is-a-folder", "forward_process", "--data-dir data-gz-dir --out f", 1, "is a folder, not a data file"),

        // --- temporaries of killed writers ---
        sample("temp-files", "stale-temp-is-removed", "--out s.png", 0, "wrote s.png")
            .setup(|d| std::fs::write(d.join(".s.png.tmp4999999"), b"half a png").unwrap())
            .outputs(&["s.png", ".s.png.tmp4999999"])
            .extra(|d, _| {
                assert!(!d.join(".s.png.tmp4999999").exists(), "the stale temporary is still there");
                assert!(d.join("s.png").exists());
            }),
    ];
    v.push(disk_full_case());
    v.push(kill_case());
    v
}

/// A disk with room for the PNG but not for the tensors: neither is written,
/// and the files already on it are untouched.
fn disk_full_case() -> Case {
    case(
        "disk-full",
        "disk-full-between-png-and-tensors",
        "sample",
        "--checkpoint ckpt.safetensors --steps 2 --n 200 --no-grid --save-tensors disk/s.safetensors --trace disk/t.safetensors --batch-size 200",
        1,
        "",
    )
}

/// kill -9 in the middle of training: every checkpoint left loads whole, and
/// the next run takes over the dead run's lock. (Checked in its own test.)
fn kill_case() -> Case {
    case("kill-9", "kill-9-mid-training", "train", "", 0, "")
}

#[test]
fn bad_inputs_get_one_clear_line_and_destroy_nothing() {
    let root = std::env::temp_dir().join(format!("bad-input-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    bin_dir();
    let mut by_class: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut names = BTreeSet::new();
    for c in cases() {
        assert!(names.insert(c.name), "two cases named {}", c.name);
        let result = match c.class {
            "disk-full" => disk_full(&c, &root),
            "kill-9" => kill_nine(&root),
            _ => run_case(&c, &root),
        };
        let e = by_class.entry(c.class).or_default();
        e.0 += 1;
        match result {
            Ok(()) => {}
            Err(why) if why.starts_with("skipped") => {
                println!("{}: {why}", c.name);
            }
            Err(why) => {
                e.1 += 1;
                failures.push(format!("  {} / {}: {why}", c.class, c.name));
            }
        }
    }
    let total: usize = by_class.values().map(|v| v.0).sum();
    println!("bad-input cases by class ({total} in all):");
    for (class, (n, failed)) in &by_class {
        println!("  {class:<14} {n:>3} cases, {failed} failed");
    }
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(fixtures());
    assert!(total >= 60, "only {total} cases");
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn disk_full(c: &Case, root: &Path) -> Result<(), String> {
    // 200 images of 28×28 floats are 627 KB, the trace 2 steps × 5 of them:
    // a 1 MiB disk holds the first file but not both.
    let Some(disk) = util::small_disk::SmallDisk::mount("bad-input", 1 << 20) else {
        return Err("skipped: no tmpfs (needs root)".into());
    };
    let dir = root.join(c.name);
    copy_tree(fixtures(), &dir);
    let link = dir.join("disk");
    std::os::unix::fs::symlink(disk.path(), &link).unwrap();
    std::fs::write(disk.path().join("old.safetensors"), b"keep me").unwrap();
    std::fs::write(disk.path().join("s.safetensors"), b"run A's tensors").unwrap();
    let before = snapshot(disk.path());
    let out = Command::new(bin_dir().join(c.bin))
        .args(&c.args)
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let after = snapshot(disk.path());
    let mut problems = Vec::new();
    if out.status.code() != Some(1) {
        problems.push(format!("exit code {:?}", out.status.code()));
    }
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    if errors.len() != 1 || !errors[0].contains("no output of this run was written") {
        problems.push(format!("error lines: {errors:?}"));
    }
    if stderr.contains("panicked") {
        problems.push("panicked".into());
    }
    if before != after {
        problems.push(format!(
            "the disk changed: {:?} → {:?}",
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>()
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn kill_nine(root: &Path) -> Result<(), String> {
    let dir = root.join("kill-9");
    std::fs::create_dir_all(&dir).unwrap();
    let args = "--dataset synthetic --model seed --channels 32 --batch-size 8 --timesteps 20 --samples 0 --checkpoint-every 1 --keep 2 --steps 100000 --out run";
    let mut child = Command::new(bin_dir().join("train"))
        .args(args.split_whitespace())
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rot = formats::checkpoint::Rotation {
        dir: dir.join("run"),
        keep: 2,
    };
    let start = std::time::Instant::now();
    while rot.list().len() < 2 && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill(); // SIGKILL: kill -9
    let _ = child.wait();
    let mut problems = Vec::new();
    if rot.list().is_empty() {
        problems.push("no checkpoint was written within 60 s".to_string());
    }
    for (_, p) in rot.list() {
        if let Err(e) = formats::checkpoint::load(&p, Device::Cpu) {
            problems.push(format!("{} does not load after kill -9: {e}", p.display()));
        }
    }
    // The dead run's lock is taken over by the next run, which resumes
    // (to the step it reached, so it trains no further).
    let reached = rot.list().last().map_or(1, |(s, _)| *s);
    let out = Command::new(bin_dir().join("train"))
        .args(
            args.replace("100000", &reached.to_string())
                .split_whitespace(),
        )
        .args(["--resume"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stderr.contains("took over the lock") {
        problems.push(format!("the next run did not take over the lock: {stderr}"));
    }
    if dir.join("run/.lock").exists() {
        problems.push("the lock was not released".into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
