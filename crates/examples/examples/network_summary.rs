//! The two networks, layer by layer: output shapes, parameters, MACs counted
//! during a real forward pass, and forward throughput.
//!
//! cargo run --release --example network_summary [-- --figure-dir DIR]
use clap::Parser;
use network::{record_shapes, timestep_embedding, SeedUNet, SeedUNetConfig};
use std::path::PathBuf;
use std::time::Instant;
use tch::{nn, Kind, Tensor};
use unet::{UNet, UNetConfig};
use util::layers::{layer_table, Block};

#[derive(Parser)]
#[command(about = "Per-layer table, parameters, MACs and images/s for SeedUNet and UNet")]
struct Args {
    /// Batch size for the throughput measurement.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(i64).range(1..))]
    batch: i64,
    /// Timed repeats (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    repeats: u32,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Also write the time-embedding heat map here.
    #[arg(long)]
    figure_dir: Option<PathBuf>,
}

/// A model as a closure: (x, t, y) → output.
type Forward = Box<dyn Fn(&Tensor, &Tensor, &Tensor) -> network::Result<Tensor>>;

fn main() {
    util::run(|| {
        let args = Args::parse();
        let device = util::parse_device(&args.device)?;
        tch::manual_seed(0);
        println!(
            "device: {device:?}, batch {} for images/s, median of {} runs",
            args.batch, args.repeats
        );
        let configs: Vec<(String, i64, i64)> = vec![
            ("SeedUNet C=64, 28×28×1, 10 classes".into(), 1, 28),
            ("SeedUNet C=128, 28×28×1, 10 classes".into(), 1, 28),
            ("UNet (32, 64, 64), attention at 7×7, 28×28×1".into(), 1, 28),
            (
                "UNet (64, 128, 128, 128), attention at 8×8, 32×32×3".into(),
                3,
                32,
            ),
        ];
        for (i, (title, ch, hw)) in configs.into_iter().enumerate() {
            let vs = nn::VarStore::new(device);
            let model: Forward = match i {
                0 | 1 => {
                    let c = if i == 0 { 64 } else { 128 };
                    let m = SeedUNet::new(
                        &vs.root(),
                        SeedUNetConfig {
                            in_channels: ch,
                            channels: c,
                            num_classes: Some(10),
                            full_res_skip: false,
                        },
                    )?;
                    Box::new(move |x, t, y| m.forward_t(x, t, Some(y)))
                }
                2 => {
                    let m = UNet::new(&vs.root(), UNetConfig::fashion())?;
                    Box::new(move |x, t, y| m.forward_t(x, t, Some(y), false))
                }
                _ => {
                    use unet::{DownBlockType::*, UpBlockType::*};
                    let cfg = UNetConfig {
                        sample_size: Some(32),
                        in_channels: 3,
                        out_channels: 3,
                        block_out_channels: vec![64, 128, 128, 128],
                        down_block_types: vec![
                            DownBlock2D,
                            DownBlock2D,
                            DownBlock2D,
                            AttnDownBlock2D,
                        ],
                        up_block_types: vec![AttnUpBlock2D, UpBlock2D, UpBlock2D, UpBlock2D],
                        norm_num_groups: 32,
                        attention_head_dim: Some(32),
                        ..UNetConfig::fashion()
                    };
                    let m = UNet::new(&vs.root(), cfg)?;
                    Box::new(move |x, t, y| m.forward_t(x, t, Some(y), false))
                }
            };
            let input = |n: i64| {
                (
                    Tensor::randn([n, ch, hw, hw], (Kind::Float, device)),
                    Tensor::randint(1000, [n], (Kind::Int64, device)),
                    Tensor::randint(10, [n], (Kind::Int64, device)),
                )
            };
            let (x, t, y) = input(1);
            let (out, shapes) = record_shapes(|| tch::no_grad(|| model(&x, &t, &y)));
            let _ = out?;
            let blocks: Vec<Block> = shapes
                .iter()
                .map(|s| Block {
                    name: &s.name,
                    prefixes: &s.prefixes,
                    shape: &s.shape,
                })
                .collect();
            let vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            let layers = layer_table(&vars, &blocks, &["class_emb", "class_embedding"])?;
            println!("\n## {title}\n");
            println!(
                "{:<30} {:>18} {:>10} {:>12}",
                "layer", "output shape", "params", "MACs"
            );
            for l in &layers {
                let shape = l
                    .shape
                    .as_ref()
                    .map_or("—".to_string(), |s| format!("{:?}", &s[1..]));
                println!(
                    "{:<30} {:>18} {:>10} {:>12}",
                    l.name, shape, l.params, l.macs
                );
            }
            let total: i64 = vs.variables().values().map(|v| v.numel() as i64).sum();
            let (params, macs): (i64, i64) = layers
                .iter()
                .map(|l| (l.params, l.macs))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            assert_eq!(total, params, "every parameter is in the table");
            println!("{:<30} {:>18} {:>10} {:>12}", "total", "", params, macs);
            println!(
                "= {:.2} M parameters, {:.1} M MACs per {hw}×{hw} image",
                total as f64 / 1e6,
                macs as f64 / 1e6
            );

            let (x, t, y) = input(args.batch);
            let mut times = Vec::new();
            for rep in 0..=args.repeats {
                let start = Instant::now();
                let out = tch::no_grad(|| model(&x, &t, &y))?;
                let _ = out.sum(Kind::Float).double_value(&[]); // waits for the device
                if rep > 0 {
                    times.push(start.elapsed().as_secs_f64()); // run 0 is a warm-up
                }
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            println!(
                "forward: {:.0} images/s (batch {}, median {:.1} ms)",
                args.batch as f64 / median,
                args.batch,
                median * 1e3
            );
        }
        if let Some(dir) = args.figure_dir {
            std::fs::create_dir_all(&dir)?;
            // ANCHOR: embedding_figure
            let t = Tensor::arange(1000, (Kind::Int64, tch::Device::Cpu));
            // One row per timestep: (1000, 64).
            let emb = timestep_embedding(&t, 64)?;
            // ANCHOR_END: embedding_figure
            let values = Vec::<f32>::try_from(emb.flatten(0, -1))?;
            util::plot::heatmap(
                &dir.join("embedding.png"),
                "sinusoidal embedding of t (sin half | cos half)",
                ("embedding dimension", "timestep t"),
                &values,
                (1000, 64),
                (-1.0, 1.0),
                (900, 600),
            )?;
            println!("\nwrote {}", dir.join("embedding.png").display());
        }
        Ok(())
    })
}
