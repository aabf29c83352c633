//! `cargo run --example device_info`: what tch and libtorch see on this machine.
use tch::{Cuda, Device, Kind, Tensor};

fn main() {
    if let Some(flag) = std::env::args().nth(1) {
        eprintln!("error: device_info takes no flags (got '{flag}'): it reports every device tch sees; choose one with --device in the other examples");
        std::process::exit(2);
    }
    println!("tch              0.24.0 (workspace pin)");
    println!(
        "libtorch         {} (the venv's PyPI wheel, found at build time)",
        env!("DIFFUSION_TORCH_VERSION")
    );
    println!("intra-op threads {}", tch::get_num_threads());
    println!("CUDA available   {}", Cuda::is_available());
    println!("CUDA devices     {}", Cuda::device_count());
    if tch::utils::has_cuda() && Cuda::is_available() {
        println!("cuDNN            {}", tch::utils::version_cudnn());
    }
    // A small matmul on the chosen device proves the kernels actually run.
    let device = util::best_device();
    let a = Tensor::ones([256, 256], (Kind::Float, device));
    let sum = a.matmul(&a).sum(Kind::Double).double_value(&[]);
    println!("device           {}", describe(device));
    println!(
        "check            ones(256²)·ones(256²) sums to {sum} (expected {})",
        256f64.powi(3)
    );
}

fn describe(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}
