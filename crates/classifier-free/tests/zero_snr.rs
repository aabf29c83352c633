//! Zero terminal SNR and CFG rescale (Lin et al. 2024) against diffusers'
//! own implementations (`scripts/parity/zero_snr.py`, the venv's pinned
//! diffusers): the rescaled β of two schedules, and `rescale_noise_cfg`.
use classifier_free::{guided_eps, rescale_guided};
use forward::{Schedule, ScheduleKind};
use tch::{Device, Kind, Tensor};

/// Runs the parity script on (guided, cond) and returns its tensors.
fn diffusers(guided: &Tensor, cond: &Tensor) -> Vec<(String, Tensor)> {
    let dir = std::env::temp_dir().join(format!("zero-snr-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Tensor::write_safetensors(
        &[("guided", guided), ("cond", cond)],
        dir.join("in.safetensors"),
    )
    .unwrap();
    util::run_parity_script("zero_snr.py", &[&dir]).unwrap();
    let out = Tensor::read_safetensors(dir.join("out.safetensors")).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    out
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

#[test]
fn zero_terminal_snr_and_cfg_rescale_match_diffusers() {
    tch::manual_seed(0);
    let f32_ = (Kind::Float, Device::Cpu);
    let cond = Tensor::randn([6, 1, 8, 8], f32_);
    let uncond = Tensor::randn([6, 1, 8, 8], f32_) * 0.6 + &cond * 0.7;
    let guided = guided_eps(&uncond, &cond, 3.0);
    let theirs = diffusers(&guided, &cond);
    let get = |k: &str| {
        theirs
            .iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| panic!("{k} missing"))
            .1
            .shallow_clone()
    };

    // (what, largest |Δ|, what the test requires), for the book's table.
    let mut rows: Vec<(String, f64, &str)> = Vec::new();
    // β: ours in f64, diffusers' in float32 (a float32 cumulative product, so
    // ᾱ carries a relative error of up to ~1e-5 after 1000 factors).
    for kind in [ScheduleKind::Linear, ScheduleKind::ScaledLinear] {
        for rescaled in [false, true] {
            let s = Schedule::with_terminal_snr(kind, 1000, rescaled, Device::Cpu).unwrap();
            let ours = Tensor::from_slice(&s.betas_host);
            let key = format!(
                "betas/{}/{}",
                kind.name(),
                if rescaled { "rescaled" } else { "plain" }
            );
            let d = max_abs(&ours, &get(&key));
            println!("{key}: max |Δβ| = {d:.2e}");
            assert!(d < 2e-5, "{key}: max |Δβ| = {d:e}");
            let what = format!(
                "β, `{}`{}",
                kind.name(),
                if rescaled { ", rescaled (12)" } else { "" }
            );
            rows.push((what, d, "≤ 2e-5"));
            if rescaled {
                assert_eq!(get(&key).double_value(&[999]), 1.0, "{key}: β_T−1");
                assert_eq!(s.betas_host[999], 1.0);
            }
        }
    }
    // The rescale is what was compared: the plain schedule is far from it.
    let plain = Schedule::new(ScheduleKind::ScaledLinear, 1000, Device::Cpu).unwrap();
    let d = max_abs(
        &Tensor::from_slice(&plain.betas_host),
        &get("betas/sd_scaled_linear/rescaled"),
    );
    assert!(d > 0.5, "plain against rescaled: {d}");
    rows.push((
        "β, `sd_scaled_linear` not rescaled, against diffusers' rescaled".into(),
        d,
        "> 0.5 (a missing rescale)",
    ));

    // CFG rescale: ours against rescale_noise_cfg at four φ.
    for phi in ["0", "0.5", "0.7", "1"] {
        let ours = rescale_guided(&guided, &cond, phi.parse().unwrap());
        let d = max_abs(&ours, &get(&format!("rescaled/{phi}")));
        println!("rescale_noise_cfg φ = {phi}: max |Δ| = {d:.2e}");
        assert!(d < 1e-5, "φ = {phi}: max |Δ| = {d:e}");
        rows.push((format!("CFG rescale (13), φ = {phi}"), d, "≤ 1e-5"));
    }
    // At φ = 1 each sample has exactly the conditional prediction's spread.
    let full = rescale_guided(&guided, &cond, 1.0);
    let spread = |x: &Tensor| x.flatten(1, -1).std_dim(1, true, false);
    assert!(spread(&full).allclose(&spread(&cond), 1e-5, 1e-6, false));
    // A rescale by the whole batch's spread, not each sample's, is caught.
    let batchwise = &guided * (cond.std(true) / guided.std(true));
    let d = max_abs(&batchwise, &get("rescaled/1"));
    assert!(d > 1e-2, "a batch-wide rescale passes: {d}");
    rows.push((
        "CFG rescale by the batch's std, not each sample's, φ = 1".into(),
        d,
        "> 1e-2 (a broken rescale)",
    ));

    if let Ok(path) = std::env::var("ZERO_SNR_PARITY_MD") {
        let mut md = String::from(
            "| against diffusers 0.42.1 | largest \\|Δ\\| | the test requires |\n|---|--:|---|\n",
        );
        for (what, d, want) in &rows {
            md.push_str(&format!("| {what} | {d:.1e} | {want} |\n"));
        }
        std::fs::write(path, md).unwrap();
    }
}
