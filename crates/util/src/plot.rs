//! Line charts with plotters, written as PNG.
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// plotters draws text with ab_glyph from a TTF we register once. DejaVu Sans
/// ships with Debian (fonts-dejavu-core; scripts/setup.sh installs it).
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn register_font() -> Result<()> {
    static ONCE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let bytes = FONT_PATHS
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or("no DejaVuSans.ttf found for chart text: apt-get install fonts-dejavu-core")?;
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .map_err(|_| "DejaVuSans.ttf could not be parsed".to_string())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Draws on a white canvas of `size` and writes it to `path` as a PNG (via a
/// temporary file, so a failed drawing leaves no partial image).
fn draw_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    register_font()?;
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// One named curve of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws several panels side by side, each a set of curves.
pub fn line_panels(
    path: &Path,
    panels: &[(&str, &str, &str, Vec<Series>)], // (title, x label, y label, curves)
    size: (u32, u32),
) -> Result<()> {
    draw_png(path, size, |root| {
        let areas = root.split_evenly((1, panels.len()));
        for (area, (title, xl, yl, series)) in areas.iter().zip(panels) {
            let pts = series.iter().flat_map(|s| s.points.iter());
            let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
            for &(x, y) in pts {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
            let pad = (y1 - y0).abs().max(1e-9) * 0.05;
            let mut chart = ChartBuilder::on(area)
                .caption(*title, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(55)
                .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
                .map_err(|e| anyhow!("{e}"))?;
            chart
                .configure_mesh()
                .x_desc(*xl)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_desc(*yl)
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
            for (i, s) in series.iter().enumerate() {
                let c = COLOURS[i % COLOURS.len()];
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                    .map_err(|e| anyhow!("{e}"))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
        }
        Ok(())
    })
}

/// A heat map of a matrix (rows × cols, row-major) with a blue–white–red
/// diverging palette for values in [lo, hi].
pub fn heatmap(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    values: &[f32],
    (rows, cols): (usize, usize),
    (lo, hi): (f32, f32),
    size: (u32, u32),
) -> Result<()> {
    if values.len() != rows * cols || rows == 0 || cols == 0 {
        return Err(anyhow!(
            "heat map needs {rows}×{cols} values, got {}",
            values.len()
        ));
    }
    draw_png(path, size, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0..cols as i32, 0..rows as i32)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let colour = |v: f32| {
            let u = ((v - lo) / (hi - lo)).clamp(0.0, 1.0) as f64 * 2.0 - 1.0; // −1 … 1
            let w = |a: f64| (255.0 * a) as u8;
            if u < 0.0 {
                RGBColor(w(1.0 + u), w(1.0 + u), 255)
            } else {
                RGBColor(255, w(1.0 - u), w(1.0 - u))
            }
        };
        chart
            .draw_series(
                (0..rows)
                    .flat_map(|r| (0..cols).map(move |c| (r, c)))
                    .map(|(r, c)| {
                        Rectangle::new(
                            [(c as i32, r as i32), (c as i32 + 1, r as i32 + 1)],
                            colour(values[r * cols + c]).filled(),
                        )
                    }),
            )
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
}
