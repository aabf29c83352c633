//! Line charts and heat maps with plotters, written as PNG.
use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// plotters draws text with ab_glyph from a TTF we register once. DejaVu Sans
/// ships with Debian (fonts-dejavu-core; scripts/setup.sh installs it).
const FONT_DIRS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
];

/// The bytes of DejaVu Sans (or DejaVu Sans Bold, falling back to the
/// regular face when the bold one is missing), read once.
pub(crate) fn font_bytes(bold: bool) -> Result<&'static [u8]> {
    type Slot = std::sync::OnceLock<Option<&'static [u8]>>;
    static REGULAR: Slot = Slot::new();
    static BOLD: Slot = Slot::new();
    let read = |file: &str| {
        FONT_DIRS
            .iter()
            .find_map(|d| std::fs::read(Path::new(d).join(file)).ok())
            .map(|b| &*Box::leak(b.into_boxed_slice()))
    };
    if bold {
        if let Some(b) = *BOLD.get_or_init(|| read("DejaVuSans-Bold.ttf")) {
            return Ok(b);
        }
    }
    REGULAR
        .get_or_init(|| read("DejaVuSans.ttf"))
        .ok_or_else(|| {
            anyhow!("no DejaVuSans.ttf found for figure text: apt-get install fonts-dejavu-core")
        })
}

fn register_font() -> Result<()> {
    static ONCE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        for (style, bold) in [(FontStyle::Normal, false), (FontStyle::Bold, true)] {
            let bytes = font_bytes(bold).map_err(|e| e.to_string())?;
            plotters::style::register_font("sans-serif", style, bytes)
                .map_err(|_| "DejaVuSans.ttf could not be parsed".to_string())?;
        }
        Ok(())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Draws on a white canvas of `size` and returns it as PNG bytes (written
/// with [`crate::write_atomic`] or an [`crate::outputs::OutputSet`], so a
/// failed drawing leaves no partial image).
fn draw_png(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<Vec<u8>> {
    register_font()?;
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    let img = image::RgbImage::from_raw(size.0, size.1, pixels)
        .ok_or_else(|| anyhow!("chart buffer has the wrong size"))?;
    crate::png_bytes(&img)
}

/// One named curve of (x, y) points. Curves of at most [`MARKER_MAX_POINTS`]
/// points are measurements and get a dot on every point; denser ones (loss
/// curves, schedules over every t) are drawn as plain lines.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Series with more points than this are drawn without markers.
pub const MARKER_MAX_POINTS: usize = 40;

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Ticks at round values (1, 2 or 5 × 10^k apart) inside `[lo, hi]`, at most
/// `max` of them (at least one), each with a label that has just enough
/// decimals for its spacing: `0.0 0.5 1.0 …`, `0 200 400 …`, `0.005 0.010 …`,
/// so no two labels are the same and whole numbers print without ".0".
pub fn ticks(lo: f64, hi: f64, max: usize) -> Vec<(f64, String)> {
    ticks_from(lo, hi, max, 0.0)
}

/// [`ticks`] with a smallest spacing `min_step` (1 for integer data, so that
/// an axis of w = 0, 1, 2, 3, 5 has no tick at 0.5).
fn ticks_from(lo: f64, hi: f64, max: usize, min_step: f64) -> Vec<(f64, String)> {
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    if !lo.is_finite() || !hi.is_finite() || hi - lo <= f64::EPSILON * hi.abs().max(1e-300) {
        return vec![(lo, trim_label(format!("{lo}")))];
    }
    let max = max.max(1) as f64;
    let mut k = ((hi - lo) / max).log10().floor() as i32 - 1;
    loop {
        for m in [1.0, 2.0, 5.0] {
            let step = m * 10f64.powi(k);
            if step < min_step * (1.0 - 1e-9) {
                continue;
            }
            let first = (lo / step - 1e-9).ceil();
            let last = (hi / step + 1e-9).floor();
            if last - first + 1.0 <= max {
                let decimals = (-k).max(0) as usize;
                return (first as i64..=last as i64)
                    .map(|i| {
                        let v = i as f64 * step;
                        (v, tick_label(v, decimals))
                    })
                    .collect();
            }
        }
        k += 1;
    }
}

fn tick_label(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    // "-0.0" → "0.0": a tick at zero has no sign.
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

fn trim_label(s: String) -> String {
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// A linear f64 axis whose ticks are exactly the given values.
struct TickAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for TickAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }
    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Text sizes scale with the canvas: the book shows figures at most ~750 px
/// wide, so a 1200-px chart is shrunk and needs bigger type to stay readable.
fn text_scale(size: (u32, u32)) -> f64 {
    (size.0 as f64 / 800.0).clamp(1.0, 2.0)
}

/// Where a legend box (in plotting-area pixels) overlaps the fewest curve
/// pixels: the four corners, then the middle of the top and bottom edges.
/// Returns the box's top-left corner and how many curve samples it covers.
fn legend_spot(
    curves: &[Vec<(i32, i32)>],
    (pw, ph): (i32, i32),
    (lw, lh): (i32, i32),
    inset: i32,
    clearance: i32,
) -> ((i32, i32), usize) {
    // Sample every curve about every 2 px, so that a line crossing the box counts.
    let mut samples = Vec::new();
    for c in curves {
        samples.extend(c.iter().copied());
        for w in c.windows(2) {
            let ((x0, y0), (x1, y1)) = (w[0], w[1]);
            let n = ((x1 - x0).abs().max((y1 - y0).abs()) / 2).min(2000);
            for i in 1..n {
                let f = i as f64 / n as f64;
                samples.push((
                    x0 + ((x1 - x0) as f64 * f) as i32,
                    y0 + ((y1 - y0) as f64 * f) as i32,
                ));
            }
        }
    }
    let (right, bottom) = (pw - lw - inset, ph - lh - inset);
    let mid = (pw - lw) / 2;
    let spots = [
        (right, inset),
        (inset, inset),
        (right, bottom),
        (inset, bottom),
        (mid, inset),
        (mid, bottom),
    ];
    spots
        .iter()
        .map(|&(x, y)| {
            let hits = samples
                .iter()
                .filter(|&&(sx, sy)| {
                    sx >= x - clearance
                        && sx <= x + lw + clearance
                        && sy >= y - clearance
                        && sy <= y + lh + clearance
                })
                .count();
            ((x, y), hits)
        })
        .min_by_key(|&(_, hits)| hits) // the first of equals: upper right wins ties
        .expect("six candidate spots")
}

/// Draws several panels side by side, each a set of curves. Ticks sit at
/// round values ([`ticks`]), curves of measured points get markers, and the
/// legend (only for panels with more than one curve) goes where it covers no
/// data, adding headroom above the curves when no corner is free.
pub fn line_panels(
    path: &Path,
    panels: &[(&str, &str, &str, Vec<Series>)], // (title, x label, y label, curves)
    size: (u32, u32),
) -> Result<()> {
    crate::write_atomic(path, &line_panels_png(panels, size)?)
}

/// [`line_panels`] as PNG bytes.
pub fn line_panels_png(
    panels: &[(&str, &str, &str, Vec<Series>)],
    size: (u32, u32),
) -> Result<Vec<u8>> {
    let e = |e: &dyn std::fmt::Display| anyhow!("{e}");
    register_font()?; // before any FontDesc: they look the face up when made
    let s = text_scale(size);
    let px = |v: f64| (v * s).round() as i32;
    let tick_font = ("sans-serif", px(17.0)).into_font();
    let desc_font = ("sans-serif", px(17.0)).into_font();
    let legend_font = ("sans-serif", px(16.0)).into_font();
    let (line_w, marker_r) = (px(2.0).max(2) as u32, px(4.0));
    draw_png(size, |root| {
        let areas = root.split_evenly((1, panels.len().max(1)));
        // One caption size for all panels, shrunk so that the longest fits.
        let caption_size = panels
            .iter()
            .zip(&areas)
            .fold(px(24.0), |size, ((title, ..), area)| {
                let avail = area.dim_in_pixel().0 as i32 - 2 * px(12.0);
                let style = TextStyle::from(("sans-serif", px(24.0)).into_font());
                let w = area
                    .estimate_text_size(title, &style)
                    .map_or(1, |(w, _)| w.max(1) as i32);
                size.min(if w > avail {
                    (px(24.0) * avail / w).max(10)
                } else {
                    px(24.0)
                })
            });
        // Draws one panel with at least `reserved` pixels kept free under the
        // x axis; returns the pixels its legend took there.
        let draw_panel = |area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
                          (title, xl, yl, series): &(&str, &str, &str, Vec<Series>),
                          reserved: i32|
         -> Result<i32> {
            let pts = series.iter().flat_map(|s| s.points.iter());
            let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
            let mut integer_x = true;
            for &(x, y) in pts.filter(|(x, y)| x.is_finite() && y.is_finite()) {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
                integer_x &= x.fract() == 0.0;
            }
            if x0 > x1 {
                (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0); // no finite points
            }
            if x1 - x0 <= 0.0 {
                (x0, x1) = (x0 - 0.5, x1 + 0.5);
            }
            let marked = |s: &Series| s.points.len() <= MARKER_MAX_POINTS;
            let any_markers = series.iter().any(marked);
            let ypad = (y1 - y0).abs().max(1e-9) * 0.06;
            let xpad = if any_markers { (x1 - x0) * 0.03 } else { 0.0 };
            let (xr, mut yr) = ((x0 - xpad, x1 + xpad), (y0 - ypad, y1 + ypad));

            // Label areas sized from the text that goes in them.
            let (aw, ah) = area.dim_in_pixel();
            let text_w = |t: &str, f: &FontDesc| {
                area.estimate_text_size(t, &TextStyle::from(f.clone()))
                    .map(|(w, _)| w as i32)
                    .unwrap_or(0)
            };
            let x_area = px(54.0);
            let approx_ph = ah as i32 - px(50.0) - x_area;
            let y_ticks_for =
                |yr: (f64, f64)| ticks(yr.0, yr.1, (approx_ph / px(38.0)).max(2) as usize);
            let y_tick_w = |t: &[(f64, String)]| {
                t.iter()
                    .map(|(_, l)| text_w(l, &tick_font))
                    .max()
                    .unwrap_or(0)
            };
            // Room for the widest y tick label even after headroom is added.
            let y_area = y_tick_w(&y_ticks_for((yr.0, yr.1 + (yr.1 - yr.0))))
                .max(y_tick_w(&y_ticks_for(yr)))
                + px(16.0)
                + px(22.0);
            let approx_pw = aw as i32 - y_area - px(24.0);
            let x_ticks = {
                let mut max = (approx_pw / px(45.0)).max(2) as usize;
                loop {
                    let t = ticks_from(xr.0, xr.1, max, if integer_x { 1.0 } else { 0.0 });
                    let widest = t
                        .iter()
                        .map(|(_, l)| text_w(l, &tick_font))
                        .max()
                        .unwrap_or(0);
                    if max <= 2 || (widest + px(14.0)) * t.len() as i32 <= approx_pw {
                        break t;
                    }
                    max -= 1;
                }
            };

            let caption_font = ("sans-serif", caption_size).into_font();
            let build = |yr: (f64, f64), band: i32| {
                let y_ticks = y_ticks_for(yr);
                ChartBuilder::on(area)
                    .caption(*title, caption_font.clone())
                    .margin(px(12.0))
                    .margin_bottom(px(12.0) + band.max(reserved))
                    .x_label_area_size(x_area)
                    .y_label_area_size(y_area)
                    .build_cartesian_2d(
                        TickAxis {
                            lo: xr.0,
                            hi: xr.1,
                            ticks: x_ticks.iter().map(|t| t.0).collect(),
                        },
                        TickAxis {
                            lo: yr.0,
                            hi: yr.1,
                            ticks: y_ticks.iter().map(|t| t.0).collect(),
                        },
                    )
                    .map(|c| (c, y_ticks))
            };
            let (mut chart, mut y_ticks) = build(yr, 0).map_err(|x| e(&x))?;

            // The legend (when there is more than one curve): inside the plot
            // where it covers no curve; else inside with headroom added above
            // the curves; else in a band under the x axis.
            let entries: Vec<&Series> = series.iter().filter(|_| series.len() > 1).collect();
            let pad = px(8.0);
            let swatch = px(28.0);
            let row_h = px(16.0) + px(6.0);
            let name_w: Vec<i32> = entries
                .iter()
                .map(|s| text_w(&s.name, &legend_font))
                .collect();
            let lw = name_w.iter().copied().max().unwrap_or(0) + swatch + 3 * pad;
            let lh = entries.len() as i32 * row_h + pad;
            let mut legend = Legend::None;
            let mut below = 0;
            if !entries.is_empty() {
                let (xs, ys) = chart.plotting_area().get_pixel_range();
                let (pw, ph) = (xs.end - xs.start, ys.end - ys.start);
                let to_px = |yr: (f64, f64), (x, y): (f64, f64)| {
                    (
                        ((x - xr.0) / (xr.1 - xr.0) * pw as f64) as i32,
                        ((yr.1 - y) / (yr.1 - yr.0) * ph as f64) as i32,
                    )
                };
                let curves = |yr| {
                    series
                        .iter()
                        .map(|s| {
                            let finite = s
                                .points
                                .iter()
                                .filter(|(x, y)| x.is_finite() && y.is_finite());
                            finite.map(|&p| to_px(yr, p)).collect()
                        })
                        .collect::<Vec<Vec<_>>>()
                };
                let (inset, clearance) = (px(6.0), marker_r + px(3.0));
                let (at, hits) = legend_spot(&curves(yr), (pw, ph), (lw, lh), inset, clearance);
                let need = lh + inset + 2 * clearance;
                if hits == 0 && lw < pw {
                    legend = Legend::Inside(at);
                } else if need < ph * 30 / 100 && lw < pw {
                    // Raise the top of the y range until the band above the
                    // highest point is as tall as the legend.
                    let top = y1 + ypad * 0.25;
                    let new_hi = (top * ph as f64 - need as f64 * yr.0) / (ph - need) as f64;
                    yr = (yr.0, new_hi.max(yr.1));
                    area.fill(&WHITE).map_err(|x| e(&x))?;
                    (chart, y_ticks) = build(yr, 0).map_err(|x| e(&x))?;
                    legend = Legend::Inside(
                        legend_spot(&curves(yr), (pw, ph), (lw, lh), inset, clearance).0,
                    );
                } else {
                    // Entries side by side, wrapped to the plot's width.
                    let mut rows: Vec<Vec<usize>> = vec![vec![]];
                    let mut used = 0;
                    for (i, w) in name_w.iter().enumerate() {
                        let ew = swatch + pad + w + 2 * pad;
                        if used + ew > pw && !rows.last().unwrap().is_empty() {
                            rows.push(vec![]);
                            used = 0;
                        }
                        rows.last_mut().unwrap().push(i);
                        used += ew;
                    }
                    let band = rows.len() as i32 * row_h + pad;
                    below = band;
                    area.fill(&WHITE).map_err(|x| e(&x))?;
                    (chart, y_ticks) = build(yr, band).map_err(|x| e(&x))?;
                    let base = area.get_base_pixel();
                    let mut placed = Vec::new();
                    for (r, row) in rows.iter().enumerate() {
                        let width: i32 = row
                            .iter()
                            .map(|&i| swatch + pad + name_w[i] + 2 * pad)
                            .sum::<i32>()
                            - 2 * pad;
                        let mut x = xs.start - base.0 + (pw - width) / 2;
                        let cy = ah as i32 - px(12.0) - band.max(reserved)
                            + pad / 2
                            + r as i32 * row_h
                            + row_h / 2;
                        for &i in row {
                            placed.push((i, (x, cy)));
                            x += swatch + pad + name_w[i] + 2 * pad;
                        }
                    }
                    legend = Legend::Below(placed);
                }
            }

            let y_labels: Vec<(f64, String)> = y_ticks.clone();
            let label_of = |t: &[(f64, String)], v: f64| {
                t.iter()
                    .min_by(|a, b| (a.0 - v).abs().total_cmp(&(b.0 - v).abs()))
                    .map(|t| t.1.clone())
                    .unwrap_or_default()
            };
            chart
                .configure_mesh()
                .x_desc(*xl)
                .y_desc(*yl)
                .x_label_formatter(&|v| label_of(&x_ticks, *v))
                .y_label_formatter(&|v| label_of(&y_labels, *v))
                .label_style(tick_font.clone())
                .axis_desc_style(desc_font.clone())
                .bold_line_style(BLACK.mix(0.12))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(|x| e(&x))?;
            for (i, s) in series.iter().enumerate() {
                let c = COLOURS[i % COLOURS.len()];
                let finite = || {
                    s.points
                        .iter()
                        .copied()
                        .filter(|(x, y)| x.is_finite() && y.is_finite())
                };
                chart
                    .draw_series(LineSeries::new(finite(), c.stroke_width(line_w)))
                    .map_err(|x| e(&x))?;
                if marked(s) {
                    chart
                        .draw_series(finite().map(|p| Circle::new(p, marker_r, c.filled())))
                        .map_err(|x| e(&x))?;
                }
            }
            // One legend entry: a stroke (with a dot for marked curves), then the name.
            let entry = |on: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
                         i: usize,
                         (x, cy): (i32, i32)|
             -> Result<()> {
                let c = COLOURS[i % COLOURS.len()];
                on.draw(&PathElement::new(
                    vec![(x, cy), (x + swatch, cy)],
                    c.stroke_width(line_w),
                ))
                .map_err(|x| e(&x))?;
                if marked(entries[i]) {
                    on.draw(&Circle::new((x + swatch / 2, cy), marker_r, c.filled()))
                        .map_err(|x| e(&x))?;
                }
                let style = legend_font
                    .clone()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center));
                on.draw(&Text::new(
                    entries[i].name.clone(),
                    (x + swatch + pad, cy + px(3.0)),
                    style,
                ))
                .map_err(|x| e(&x))?;
                Ok(())
            };
            match legend {
                Legend::None => {}
                Legend::Inside((lx, ly)) => {
                    let pa = chart.plotting_area().strip_coord_spec();
                    pa.draw(&Rectangle::new(
                        [(lx, ly), (lx + lw, ly + lh)],
                        WHITE.mix(0.9).filled(),
                    ))
                    .map_err(|x| e(&x))?;
                    pa.draw(&Rectangle::new(
                        [(lx, ly), (lx + lw, ly + lh)],
                        BLACK.mix(0.4),
                    ))
                    .map_err(|x| e(&x))?;
                    for i in 0..entries.len() {
                        entry(
                            &pa,
                            i,
                            (lx + pad, ly + pad / 2 + i as i32 * row_h + row_h / 2),
                        )?;
                    }
                }
                Legend::Below(placed) => {
                    for (i, at) in placed {
                        entry(area, i, at)?;
                    }
                }
            }
            Ok(below)
        };
        let mut bands = Vec::new();
        for (area, panel) in areas.iter().zip(panels) {
            bands.push(draw_panel(area, panel, 0)?);
        }
        // A legend under one panel's axis: redraw all with the same room, so
        // that the panels' x axes line up.
        let most = bands.iter().copied().max().unwrap_or(0);
        if bands.iter().any(|&b| b != most) {
            root.fill(&WHITE).map_err(|x| e(&x))?;
            for (area, panel) in areas.iter().zip(panels) {
                draw_panel(area, panel, most)?;
            }
        }
        Ok(())
    })
}

/// Where a panel's legend goes: a box's top-left corner inside the plotting
/// area, or entries (index, left end and centre line) in the panel under the axis.
enum Legend {
    None,
    Inside((i32, i32)),
    Below(Vec<(usize, (i32, i32))>),
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
    let colour = |v: f32| {
        let u = ((v - lo) / (hi - lo)).clamp(0.0, 1.0) as f64 * 2.0 - 1.0; // −1 … 1
        let w = |a: f64| (255.0 * a) as u8;
        if u < 0.0 {
            RGBColor(w(1.0 + u), w(1.0 + u), 255)
        } else {
            RGBColor(255, w(1.0 - u), w(1.0 - u))
        }
    };
    let e = |e: &dyn std::fmt::Display| anyhow!("{e}");
    let s = text_scale(size);
    let px = |v: f64| (v * s).round() as i32;
    let png =
        draw_png(size, |root| {
            let root = root
                .titled(title, ("sans-serif", px(22.0)))
                .map_err(|x| e(&x))?;
            // The map, and a colour bar on its right with the value scale.
            let (map, bar) = root.split_horizontally(root.dim_in_pixel().0 as i32 - px(110.0));
            let mut chart = ChartBuilder::on(&map)
                .margin(px(10.0))
                .x_label_area_size(px(55.0))
                .y_label_area_size(px(75.0))
                .build_cartesian_2d(0..cols as i32, 0..rows as i32)
                .map_err(|x| e(&x))?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .label_style(("sans-serif", px(16.0)))
                .axis_desc_style(("sans-serif", px(18.0)))
                .draw()
                .map_err(|x| e(&x))?;
            chart
                .draw_series((0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).map(
                    |(r, c)| {
                        Rectangle::new(
                            [(c as i32, r as i32), (c as i32 + 1, r as i32 + 1)],
                            colour(values[r * cols + c]).filled(),
                        )
                    },
                ))
                .map_err(|x| e(&x))?;
            const STEPS: i32 = 100;
            let mut scale = ChartBuilder::on(&bar)
                .margin_top(px(10.0))
                .margin_bottom(px(65.0))
                .margin_right(px(10.0))
                .y_label_area_size(px(50.0))
                .build_cartesian_2d(0..1, lo as f64..hi as f64)
                .map_err(|x| e(&x))?;
            scale
                .configure_mesh()
                .disable_mesh()
                .disable_x_axis()
                .y_labels(5)
                .label_style(("sans-serif", px(16.0)))
                .draw()
                .map_err(|x| e(&x))?;
            let dv = (hi - lo) as f64 / STEPS as f64;
            scale
                .draw_series((0..STEPS).map(|i| {
                    let v = lo as f64 + i as f64 * dv;
                    Rectangle::new(
                        [(0, v), (1, v + dv)],
                        colour((v + dv / 2.0) as f32).filled(),
                    )
                }))
                .map_err(|x| e(&x))?;
            Ok(())
        })?;
    crate::write_atomic(path, &png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(lo: f64, hi: f64, max: usize) -> Vec<String> {
        let t = ticks(lo, hi, max);
        assert!(
            !t.is_empty() && t.len() <= max,
            "{lo}..{hi}: {} ticks",
            t.len()
        );
        for (v, _) in &t {
            assert!(
                *v >= lo - 1e-12 && *v <= hi + 1e-12,
                "tick {v} outside {lo}..{hi}"
            );
        }
        let l: Vec<String> = t.into_iter().map(|(_, l)| l).collect();
        let mut d = l.clone();
        d.dedup();
        assert_eq!(d, l, "{lo}..{hi}: repeated labels");
        l
    }

    #[test]
    fn tick_labels_are_distinct_and_round() {
        assert_eq!(
            labels(0.0, 5.0, 11),
            ["0.0", "0.5", "1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0", "4.5", "5.0"]
        );
        assert_eq!(labels(0.0, 5.0, 6), ["0", "1", "2", "3", "4", "5"]);
        assert_eq!(
            labels(0.0, 1000.0, 6),
            ["0", "200", "400", "600", "800", "1000"]
        );
        assert_eq!(labels(0.001, 0.02, 8), ["0.005", "0.010", "0.015", "0.020"]);
        assert_eq!(
            labels(25.0, 150.0, 8),
            ["40", "60", "80", "100", "120", "140"]
        );
        assert_eq!(labels(-12.0, 10.0, 6), ["-10", "-5", "0", "5", "10"]);
        assert_eq!(
            labels(0.07, 0.95, 10),
            ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
        );
        for (lo, hi) in [
            (0.0, 5.0),
            (0.0, 999.0),
            (0.001, 0.02),
            (25.0, 150.0),
            (-3.3, 7.7),
            (1e-5, 3e-5),
        ] {
            for max in 2..15 {
                labels(lo, hi, max);
            }
        }
        // An integer axis never gets a tick between two integers.
        let t = ticks_from(-0.15, 5.15, 11, 1.0);
        assert!(t.iter().all(|(v, l)| v.fract() == 0.0 && !l.contains('.')));
        assert_eq!(ticks(2.0, 2.0, 5), [(2.0, "2".to_string())]);
    }

    #[test]
    fn legend_avoids_curves() {
        // A curve along the top edge: the legend goes to a bottom corner.
        let top: Vec<(i32, i32)> = (0..=100).map(|x| (x * 4, 10)).collect();
        let ((_, y), hits) = legend_spot(&[top], (400, 300), (100, 50), 5, 5);
        assert_eq!(hits, 0);
        assert!(y > 150, "legend at y = {y}");
        // A falling diagonal leaves the upper-right and lower-left corners free.
        let diag = vec![(0, 0), (400, 300)];
        let ((x, y), hits) = legend_spot(&[diag], (400, 300), (100, 50), 5, 5);
        assert_eq!((hits, x > 200, y < 100), (0, true, true));
    }

    #[test]
    fn chart_draws_with_markers_and_legend() {
        let dir = std::env::temp_dir().join(format!("util-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.png");
        let xs = [0.0, 1.0, 2.0, 3.0, 5.0];
        let s = |name: &str, f: &dyn Fn(f64) -> f64| Series {
            name: name.into(),
            points: xs.iter().map(|&x| (x, f(x))).collect(),
        };
        line_panels(
            &p,
            &[(
                "t",
                "w",
                "y",
                vec![s("a", &|x| x / 5.0), s("b", &|x| 1.0 - x / 5.0)],
            )],
            (500, 300),
        )
        .unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (500, 300));
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// One square panel of a 2-D plane for [`plane_panels_png`]: a density drawn
/// as shading, points, arrows and paths, each coloured by a class index
/// (into the six chart colours; [`GREY`] for reference marks).
#[derive(Default)]
pub struct Plane {
    pub title: String,
    /// Values on an n × n grid of cell centres over the panel, row 0 at the
    /// bottom; drawn from white (0) to dark blue-grey (the largest value).
    pub density: Option<(usize, Vec<f64>)>,
    /// (x, y, colour)
    pub points: Vec<(f64, f64, usize)>,
    /// (x, y, dx, dy, colour): a line from (x, y) to (x + dx, y + dy) with a dot at its tip.
    pub arrows: Vec<(f64, f64, f64, f64, usize)>,
    /// (points, colour)
    pub paths: Vec<(Vec<(f64, f64)>, usize)>,
}

/// The colour index of reference marks (exact fields, the true density's samples).
pub const GREY: usize = usize::MAX;

/// Square panels side by side over the same square [−h, h]², with axes x₁
/// and x₂, as PNG bytes.
pub fn plane_panels_png(panels: &[Plane], h: f64, size: (u32, u32)) -> Result<Vec<u8>> {
    let e = |e: &dyn std::fmt::Display| anyhow!("{e}");
    register_font()?;
    let s = text_scale(size);
    let px = |v: f64| (v * s).round() as i32;
    let colour = |c: usize| {
        if c == GREY {
            RGBColor(110, 110, 110)
        } else {
            COLOURS[c % COLOURS.len()]
        }
    };
    draw_png(size, |root| {
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (area, p) in areas.iter().zip(panels) {
            let mut chart = ChartBuilder::on(area)
                .caption(&p.title, ("sans-serif", px(20.0)).into_font())
                .margin(px(10.0))
                .x_label_area_size(px(44.0))
                .y_label_area_size(px(48.0))
                .build_cartesian_2d(-h..h, -h..h)
                .map_err(|x| e(&x))?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("x₁")
                .y_desc("x₂")
                .x_labels(5)
                .y_labels(5)
                .label_style(("sans-serif", px(15.0)).into_font())
                .axis_desc_style(("sans-serif", px(17.0)).into_font())
                .draw()
                .map_err(|x| e(&x))?;
            if let Some((n, values)) = &p.density {
                let top = values.iter().copied().fold(0.0, f64::max).max(1e-300);
                let cell = 2.0 * h / *n as f64;
                chart
                    .draw_series((0..n * n).map(|i| {
                        let (r, c) = (i / n, i % n);
                        let u = (values[i] / top).clamp(0.0, 1.0).powf(0.6);
                        let w = |base: f64| (255.0 - u * (255.0 - base)) as u8;
                        let (x0, y0) = (-h + c as f64 * cell, -h + r as f64 * cell);
                        Rectangle::new(
                            [(x0, y0), (x0 + cell, y0 + cell)],
                            RGBColor(w(70.0), w(90.0), w(130.0)).filled(),
                        )
                    }))
                    .map_err(|x| e(&x))?;
            }
            // Segment by segment: plotters joins thick polylines with miters,
            // which spike off the chart at the sharp turns of a noisy path.
            // Segments that leave the panel are not drawn.
            let within = |p: &(f64, f64)| p.0.abs() <= h && p.1.abs() <= h;
            for (path, c) in &p.paths {
                let style = colour(*c).mix(0.7).stroke_width(px(1.5).max(1) as u32);
                chart
                    .draw_series(
                        path.windows(2)
                            .filter(|w| within(&w[0]) && within(&w[1]))
                            .map(|w| PathElement::new(vec![w[0], w[1]], style)),
                    )
                    .map_err(|x| e(&x))?;
            }
            let inside = |x: f64, y: f64| x.abs() <= h && y.abs() <= h;
            for &(x, y, dx, dy, c) in p.arrows.iter().filter(|a| inside(a.0 + a.2, a.1 + a.3)) {
                // Reference arrows are wide and light, so that one drawn on top shows against them.
                let style = if c == GREY {
                    RGBColor(175, 175, 175).stroke_width(px(5.0).max(2) as u32)
                } else {
                    colour(c).stroke_width(px(1.5).max(1) as u32)
                };
                chart
                    .draw_series([PathElement::new(vec![(x, y), (x + dx, y + dy)], style)])
                    .map_err(|x| e(&x))?;
                chart
                    .draw_series([Circle::new(
                        (x + dx, y + dy),
                        px(2.0).max(1),
                        colour(c).filled(),
                    )])
                    .map_err(|x| e(&x))?;
            }
            chart
                .draw_series(
                    p.points
                        .iter()
                        .filter(|p| inside(p.0, p.1))
                        .map(|&(x, y, c)| {
                            Circle::new((x, y), px(2.5).max(1), colour(c).mix(0.75).filled())
                        }),
                )
                .map_err(|x| e(&x))?;
        }
        Ok(())
    })
}
