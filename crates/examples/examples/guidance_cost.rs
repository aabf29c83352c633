//! Cost of guided sampling against unguided, same sampler and steps, in one run:
//! the batched guided predictor (one pass of 2N) and the naive two-pass version.
//!
//! cargo run --release --example guidance_cost -- --checkpoint FILE

use clap::Parser;
use classifier_free::{Guided, TwoPass};
use examples::{DeviceArgs, ModelArgs};
use network::NoisePredictor;
use reverse::{Pipeline, Sampler};
use std::time::Instant;
use tch::{Kind, Tensor};

#[derive(Parser)]
#[command(about = "Time guided against unguided sampling")]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value_t = 20)]
    n: i64,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    #[command(flatten)]
    device: DeviceArgs,
}

fn main() {
    util::run(|| {
        let a = Args::parse();
        let device = a.device.device()?;
        let model = a.model.load(device)?;
        let m = &model.loaded;
        let cfg = &m.config;
        let s = &model.schedule;
        let sampler = Sampler::ddim(a.steps);
        let k = cfg.model.num_classes().unwrap_or(1);
        let y = Tensor::arange(a.n, (Kind::Int64, device)).remainder(k);
        let [c, h, w] = cfg.image_shape();
        let x = Tensor::randn([a.n, c, h, w], (Kind::Float, device));
        let guided = Guided::new(&*m.model, 3.0, false)?;
        let two = TwoPass(Guided::new(&*m.model, 3.0, false)?);
        let variants: [(&str, &dyn NoisePredictor); 3] = [
            ("unguided", &*m.model),
            ("guided, one pass of 2N", &guided),
            ("guided, two passes", &two),
        ];
        let mut times = vec![Vec::new(); 3];
        for _ in 0..=a.repeats {
            for (i, (_, model)) in variants.iter().enumerate() {
                let start = Instant::now();
                let out =
                    Pipeline::new(*model, s, cfg.prediction).sample(&sampler, &x, Some(&y))?;
                let _ = out.sum(Kind::Float).double_value(&[]);
                times[i].push(start.elapsed().as_secs_f64() * 1e3 / a.n as f64);
            }
        }
        println!(
            "DDIM-{} on {} images, {:?}, median of {} runs (after one warm-up):",
            a.steps, a.n, device, a.repeats
        );
        println!("{:<26} {:>12} {:>10}", "", "ms / image", "× unguided");
        let median = |v: &mut Vec<f64>| {
            v.remove(0);
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let meds: Vec<f64> = times.iter_mut().map(median).collect();
        for ((name, _), t) in variants.iter().zip(&meds) {
            println!("{name:<26} {t:>12.1} {:>9.2}x", t / meds[0]);
        }
        Ok(())
    })
}
