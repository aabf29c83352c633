//! The recipe A/B (scripts/recipe-ab.sh) as the Training chapter shows it: a
//! Markdown table and a chart of quality against CPU-minutes.
//!
//! cargo run --release --example recipe_report -- --csv book/generated/recipe_ab.csv \
//!     --markdown book/generated/recipe_ab.md --chart book/figures/training/recipe_time.png
use anyhow::{bail, Context};
use clap::Parser;
use std::collections::BTreeMap;
use std::path::PathBuf;
use util::outputs::{Format, OutputSet};
use util::plot::{line_panels_png, Series};

#[derive(Parser)]
#[command(about = "Render the recipe A/B table and its quality-against-time chart")]
struct Args {
    #[arg(long, default_value = "book/generated/recipe_ab.csv")]
    csv: PathBuf,
    #[arg(long)]
    markdown: PathBuf,
    #[arg(long)]
    chart: Option<PathBuf>,
    /// FD of real training images against the test set at the same n (the floor).
    #[arg(long, default_value_t = 1.83)]
    floor: f64,
}

#[derive(Debug, serde::Deserialize)]
struct Row {
    row: String,
    change: String,
    budget_min: f64,
    steps: i64,
    img_s: f64,
    acc_w3: f64,
    fd_w3: f64,
    rec_w3: f64,
    acc_w1: f64,
    fd_w1: f64,
}

fn main() {
    util::run(|| {
        let args = Args::parse();
        let mut outs = OutputSet::new();
        outs.input("--csv", &args.csv)?;
        let md_out = outs.output("--markdown", &args.markdown, Format::Markdown)?;
        let chart_out = outs.output_if("--chart", args.chart.as_ref(), Format::Png)?;
        let mut reader = csv::Reader::from_path(&args.csv)
            .with_context(|| format!("cannot read {}", args.csv.display()))?;
        let rows: Vec<Row> = reader
            .deserialize()
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("{}: not a recipe-ab table", args.csv.display()))?;
        if rows.is_empty() {
            bail!(
                "{}: no rows yet: run scripts/recipe-ab.sh",
                args.csv.display()
            );
        }
        let mut md = String::from(
            "| recipe | what changes | minutes (2 cores) | steps | img/s | w = 3 accuracy | w = 3 FD | w = 3 recall | w = 1 accuracy | w = 1 FD |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        // Bold: the best FD at each guidance scale among the rows of equal
        // budget (the 15-minute ones; longer stages are not a fair comparison).
        let first = rows[0].budget_min;
        let equal: Vec<&Row> = rows.iter().filter(|r| r.budget_min == first).collect();
        let best3 = equal.iter().map(|r| r.fd_w3).fold(f64::INFINITY, f64::min);
        let best1 = equal.iter().map(|r| r.fd_w1).fold(f64::INFINITY, f64::min);
        let bold = |v: f64, best: f64, budget: f64| {
            if v == best && budget == first {
                format!("**{v:.1}**")
            } else {
                format!("{v:.1}")
            }
        };
        for r in &rows {
            let fd = bold(r.fd_w3, best3, r.budget_min);
            let fd1 = bold(r.fd_w1, best1, r.budget_min);
            md += &format!(
                "| `{}` | {} | {} | {} | {:.0} | {:.3} | {fd} | {:.3} | {:.3} | {fd1} |\n",
                r.row, r.change, r.budget_min, r.steps, r.img_s, r.acc_w3, r.rec_w3, r.acc_w1
            );
        }
        outs.write(md_out, md.as_bytes())?;

        if let Some(chart_out) = chart_out {
            // One curve per recipe: its 15-minute row and its longer stages.
            let mut curves: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
            for r in &rows {
                curves
                    .entry(r.row.split('@').next().unwrap_or(&r.row))
                    .or_default()
                    .push(r);
            }
            curves.retain(|_, v| v.len() > 1);
            if curves.is_empty() {
                bail!("no recipe has been run at more than one budget yet (STAGES=30,45,60 scripts/recipe-ab.sh NAME)");
            }
            let series = |f: &dyn Fn(&Row) -> f64| -> Vec<Series> {
                curves
                    .iter()
                    .map(|(name, rs)| {
                        let mut points: Vec<(f64, f64)> =
                            rs.iter().map(|r| (r.budget_min, f(r))).collect();
                        points.sort_by(|a, b| a.0.total_cmp(&b.0));
                        Series {
                            name: name.to_string(),
                            points,
                        }
                    })
                    .collect()
            };
            let mut fd = series(&|r| r.fd_w3);
            let xs: Vec<f64> = rows.iter().map(|r| r.budget_min).collect();
            let (lo, hi) = xs
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            // A target is a level, not a measurement: enough points that the
            // chart draws it as a plain line, without the markers of measured points.
            let n = util::plot::MARKER_MAX_POINTS + 1;
            let level = |y: f64| -> Vec<(f64, f64)> {
                (0..n)
                    .map(|i| (lo + (hi - lo) * i as f64 / (n - 1) as f64, y))
                    .collect()
            };
            fd.push(Series {
                name: "target: 3 × real-data floor".into(),
                points: level(3.0 * args.floor),
            });
            let png = line_panels_png(
                &[
                    (
                        "FD at w = 3 (lower is better)",
                        "minutes of 2 cores",
                        "FD",
                        fd,
                    ),
                    ("FD at w = 1 (no guidance)", "minutes of 2 cores", "FD", {
                        let mut fd1 = series(&|r| r.fd_w1);
                        fd1.push(Series {
                            name: "target: 5 × real-data floor".into(),
                            points: level(5.0 * args.floor),
                        });
                        fd1
                    }),
                    (
                        "accuracy at w = 3",
                        "minutes of 2 cores",
                        "accuracy",
                        series(&|r| r.acc_w3),
                    ),
                ],
                (1500, 600),
            )?;
            outs.write(chart_out, &png)?;
        }
        outs.commit()?;
        println!("wrote {} ({} rows)", args.markdown.display(), rows.len());
        if let Some(chart) = &args.chart {
            println!("wrote {}", chart.display());
        }
        Ok(())
    })
}
