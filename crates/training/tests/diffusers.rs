//! A folder saved by diffusers (UNet2DModel + DDPMScheduler) loads for sampling.
use formats::load_diffusers;
use forward::Prediction;
use tch::{Device, Tensor};

#[test]
fn diffusers_folder_loads_with_its_schedule_and_prediction() {
    let dir = std::env::temp_dir().join(format!("diffusers-folder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    util::run_parity_script("diffusers_pipeline.py", &[&dir]).unwrap();

    let m = load_diffusers(&dir.join("pipeline"), Device::Cpu).unwrap();
    assert_eq!(m.config.schedule, forward::ScheduleKind::Cosine);
    assert_eq!(m.config.timesteps, 500);
    assert_eq!(m.config.prediction, Prediction::Velocity);
    assert_eq!(m.model.num_classes(), Some(10));
    let io: std::collections::HashMap<_, _> = Tensor::read_safetensors(dir.join("io.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    let out = tch::no_grad(|| m.model.predict(&io["x"], &io["t"], Some(&io["y"]), false)).unwrap();
    let d = (&out - &io["out"]).abs().max().double_value(&[]);
    println!("diffusers folder -> rust: max |Δ| = {d:.3e}");
    assert!(d <= 1e-5, "max |Δ| = {d}");
    assert!(
        io["out"].abs().max().double_value(&[]) > 1e-2,
        "a non-trivial output"
    );

    // The bare unet/ folder loads too, with diffusers' DDPMScheduler defaults.
    let bare = load_diffusers(&dir.join("pipeline/unet"), Device::Cpu).unwrap();
    assert_eq!(
        (bare.config.schedule, bare.config.timesteps),
        (forward::ScheduleKind::Linear, 1000)
    );
    assert_eq!(bare.config.prediction, Prediction::Epsilon);

    // Refusals name the problem.
    let sched = dir.join("pipeline/scheduler/scheduler_config.json");
    let text = std::fs::read_to_string(&sched).unwrap();
    std::fs::write(&sched, text.replace("squaredcos_cap_v2", "scaled_linear")).unwrap();
    let e = load_diffusers(&dir.join("pipeline"), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("scaled_linear") && e.contains("not supported"),
        "{e}"
    );
    std::fs::remove_file(dir.join("pipeline/unet/diffusion_pytorch_model.safetensors")).unwrap();
    let e = load_diffusers(&dir.join("pipeline/unet"), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no weights"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
