//! The weight λ_t that L_simple drops from the ELBO ("Where the loss comes
//! from", eq. 11), for the book's schedules with the reverse variance β̃_t.
//!
//! cargo run --release -p closed-form --example elbo_weight -- --out out/derivations
//!
//! Prints λ_t at a few steps and writes --out/elbo_weight.png. Steps are the
//! papers' t = 2 … T (at t = 1, β̃_1 = 0 and the term is L_0 instead).
use clap::Parser;
use closed_form::elbo_weight;
use forward::{Schedule, ScheduleKind};
use std::path::PathBuf;
use tch::Device;
use util::outputs::{Format, OutputSet};
use util::plot::{line_panels_png, Series};

#[derive(Parser)]
#[command(about = "Chart the ELBO's per-step weight that L_simple drops")]
struct Args {
    /// Output folder.
    #[arg(long, default_value = "out/derivations")]
    out: PathBuf,
}

fn main() {
    util::run(|| {
        let args = Args::parse();
        let mut outs = OutputSet::new();
        let png = outs.output("--out", &args.out.join("elbo_weight.png"), Format::Png)?;
        let shown = [2usize, 3, 10, 100, 500, 1000];
        println!("λ_t = β_t / (2 α_t (1 − ᾱ_{{t−1}})), the ELBO's weight on ‖ε − ε_θ‖², T = 1000 (papers' t)");
        print!("{:>13}", "schedule");
        for t in shown {
            print!("  {:>9}", format!("t = {t}"));
        }
        println!("  {:>16}", "smallest (at t)");
        let mut series = Vec::new();
        for kind in [ScheduleKind::Linear, ScheduleKind::Cosine] {
            let s = Schedule::new(kind, 1000, Device::Cpu)?;
            // The papers' step t is the code's index t − 1.
            let lambda = |t: usize| {
                let (beta, ab) = (s.betas_host[t - 1], s.alpha_bar_host[t - 1]);
                let tilde = (1.0 - s.alpha_bar_host[t - 2]) / (1.0 - ab) * beta;
                elbo_weight(beta, ab, tilde)
            };
            print!("{:>13}", kind.name());
            for t in shown {
                print!("  {:>9.3e}", lambda(t));
            }
            let (t_min, l_min) = (2..=1000)
                .map(|t| (t, lambda(t)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((2, f64::NAN));
            println!("  {:>16}", format!("{l_min:.3e} ({t_min})"));
            series.push(Series {
                name: kind.name().into(),
                points: (2..=1000).map(|t| (t as f64, lambda(t).log10())).collect(),
            });
        }
        let chart = line_panels_png(
            &[(
                "The ELBO's weight on the ε error; L_simple uses 1 for every t",
                "t (the papers' step, 2 … T)",
                "log10 λ_t",
                series,
            )],
            (900, 480),
        )?;
        outs.write(png, &chart)?;
        outs.commit()?;
        println!("wrote {}/elbo_weight.png", args.out.display());
        Ok(())
    })
}
