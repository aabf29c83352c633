//! Image grids with a label on every row and column, a title and axis titles,
//! for figures that say what each picture is.
use crate::{images_to_rgb8, write_atomic};
use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use anyhow::{bail, Result};
use std::path::Path;
use tch::Tensor;

/// What to write around a grid: `rows[r]` left of row r, `cols[c]` above
/// column c, `row_title` above the row labels, `col_title` above the column
/// labels and `title` on top. Empty strings draw nothing (and take no room
/// when a whole group is empty). A row or column label may hold a '\n' for
/// two lines; a column label too wide for its column is broken at a space,
/// '/' or '-', else drawn smaller.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GridLabels {
    pub title: String,
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    pub row_title: String,
    pub col_title: String,
}

impl GridLabels {
    pub fn new(title: impl Into<String>, rows: Vec<String>, cols: Vec<String>) -> Self {
        GridLabels {
            title: title.into(),
            rows,
            cols,
            ..Default::default()
        }
    }
    pub fn row_title(mut self, t: impl Into<String>) -> Self {
        self.row_title = t.into();
        self
    }
    pub fn col_title(mut self, t: impl Into<String>) -> Self {
        self.col_title = t.into();
        self
    }
}

/// Labels from anything printable: `strings(["w = 0", "w = 1"])`,
/// `strings(data::FASHION_CLASSES)`.
pub fn strings<S: ToString>(items: impl IntoIterator<Item = S>) -> Vec<String> {
    items.into_iter().map(|s| s.to_string()).collect()
}

const MARGIN: i32 = 10;
/// Between a label and the grid.
const PAD: i32 = 6;
const BLACK: [u8; 3] = [0, 0, 0];
const GREY: [u8; 3] = [85, 85, 85];

/// A line of text at a position: `x` is its left edge, `baseline` its baseline.
struct Placed {
    text: String,
    bold: bool,
    size: f32,
    x: f32,
    baseline: f32,
    colour: [u8; 3],
}

/// Where everything goes, in output pixels.
struct Layout {
    width: u32,
    height: u32,
    grid_x: i32,
    grid_y: i32,
    cell: (i32, i32),
    gap: i32,
    texts: Vec<Placed>,
}

impl Layout {
    /// Top-left pixel of cell (row, col).
    fn cell_origin(&self, r: i64, c: i64) -> (i32, i32) {
        (
            self.grid_x + c as i32 * (self.cell.0 + self.gap),
            self.grid_y + r as i32 * (self.cell.1 + self.gap),
        )
    }
}

/// A font at a pixel size: widths and vertical metrics.
struct Face {
    font: FontRef<'static>,
    size: f32,
}

impl Face {
    fn new(bold: bool, size: f32) -> Result<Face> {
        let font = FontRef::try_from_slice(crate::plot::font_bytes(bold)?)
            .map_err(|_| anyhow::anyhow!("DejaVuSans.ttf could not be parsed"))?;
        Ok(Face { font, size })
    }
    fn scaled(&self) -> ab_glyph::PxScaleFont<&FontRef<'static>> {
        self.font.as_scaled(PxScale::from(self.size))
    }
    fn width(&self, text: &str) -> f32 {
        let sf = self.scaled();
        let mut w = 0.0;
        let mut prev = None;
        for c in text.chars() {
            let g = sf.glyph_id(c);
            if let Some(p) = prev {
                w += sf.kern(p, g);
            }
            w += sf.h_advance(g);
            prev = Some(g);
        }
        w
    }
    fn ascent(&self) -> f32 {
        self.scaled().ascent()
    }
    /// Below the baseline, as a positive number.
    fn descent(&self) -> f32 {
        -self.scaled().descent()
    }
    fn line_height(&self) -> f32 {
        self.ascent() + self.descent()
    }
    /// Height of a capital: a one-line label centred on y has its baseline at
    /// y + cap_height / 2.
    fn cap_height(&self) -> f32 {
        let sf = self.scaled();
        let g = sf.scaled_glyph('H');
        self.font
            .outline_glyph(g)
            .map_or(self.ascent() * 0.75, |o| o.px_bounds().height())
    }
}

/// Draws one line of text (grey-level coverage blended over the image).
fn draw_text(img: &mut image::RgbImage, p: &Placed) -> Result<()> {
    let face = Face::new(p.bold, p.size)?;
    let sf = face.scaled();
    let mut caret = p.x;
    let mut prev = None;
    for c in p.text.chars() {
        let id = sf.glyph_id(c);
        if let Some(q) = prev {
            caret += sf.kern(q, id);
        }
        let glyph =
            id.with_scale_and_position(PxScale::from(p.size), ab_glyph::point(caret, p.baseline));
        if let Some(o) = face.font.outline_glyph(glyph) {
            let b = o.px_bounds();
            o.draw(|gx, gy, cover| {
                let (x, y) = (b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32);
                if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
                    let px = img.get_pixel_mut(x as u32, y as u32);
                    let a = cover.clamp(0.0, 1.0);
                    for k in 0..3 {
                        px.0[k] =
                            (px.0[k] as f32 * (1.0 - a) + p.colour[k] as f32 * a).round() as u8;
                    }
                }
            });
        }
        caret += sf.h_advance(id);
        prev = Some(id);
    }
    Ok(())
}

/// The split of a label into two lines with the shorter longest line: at a
/// space (dropped) or after a '/' or '-' (kept). None without a break.
fn best_split(face: &Face, label: &str) -> Option<(f32, Vec<String>)> {
    let mut best: Option<(f32, Vec<String>)> = None;
    for (i, ch) in label.char_indices() {
        let (a, b) = match ch {
            ' ' => (&label[..i], &label[i + 1..]),
            '/' | '-' => (&label[..i + 1], &label[i + 1..]),
            _ => continue,
        };
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() || b.is_empty() {
            continue;
        }
        let w = face.width(a).max(face.width(b));
        if best.as_ref().is_none_or(|(bw, _)| w < *bw) {
            best = Some((w, vec![a.to_string(), b.to_string()]));
        }
    }
    best
}

/// A column label as one line, or else two, that fit `avail` pixels at
/// `face`'s size; None when neither does.
fn fit_lines(face: &Face, label: &str, avail: f32) -> Option<Vec<String>> {
    if label.contains('\n') {
        let lines: Vec<String> = label.lines().map(str::to_string).collect();
        return lines
            .iter()
            .all(|l| face.width(l) <= avail)
            .then_some(lines);
    }
    if face.width(label) <= avail {
        return Some(vec![label.to_string()]);
    }
    best_split(face, label)
        .filter(|(w, _)| *w <= avail)
        .map(|(_, l)| l)
}

/// Places the labels around a `rows × cols` grid of `cell`-sized images.
fn layout(
    labels: &GridLabels,
    (rows, cols): (i64, i64),
    cell: (i32, i32),
    scale: u32,
) -> Result<Layout> {
    let gap = if scale >= 2 { 4 } else { 2 };
    let (cw, ch) = cell;
    let (gw, gh) = (
        cols as i32 * (cw + gap) - gap,
        rows as i32 * (ch + gap) - gap,
    );
    let base = (cw as f32 * 0.19).round().clamp(12.0, 18.0);
    let has = |v: &[String]| v.iter().any(|s| !s.is_empty());
    let mut texts = Vec::new();
    let titles = [&labels.title, &labels.row_title, &labels.col_title];
    if !has(&labels.rows) && !has(&labels.cols) && titles.iter().all(|t| t.is_empty()) {
        // No text, so no font needed.
        return Ok(Layout {
            width: (2 * MARGIN + gw) as u32,
            height: (2 * MARGIN + gh) as u32,
            grid_x: MARGIN,
            grid_y: MARGIN,
            cell,
            gap,
            texts,
        });
    }

    // Column labels: at the base size, else on two lines, else smaller.
    let avail = (cw + gap - 2) as f32;
    let mut col_face = Face::new(false, base)?;
    let mut col_lines: Vec<Vec<String>> = Vec::new();
    if has(&labels.cols) {
        loop {
            let fitted: Option<Vec<Vec<String>>> = labels
                .cols
                .iter()
                .map(|l| {
                    if l.is_empty() {
                        Some(vec![])
                    } else {
                        fit_lines(&col_face, l, avail)
                    }
                })
                .collect();
            match fitted {
                Some(f) => {
                    col_lines = f;
                    break;
                }
                None if col_face.size > 9.0 => col_face.size -= 0.5,
                None => {
                    // Still too wide at 9 px: two lines where possible, overflowing.
                    col_lines = labels
                        .cols
                        .iter()
                        .map(|l| match best_split(&col_face, l) {
                            _ if l.contains('\n') => l.lines().map(str::to_string).collect(),
                            Some((_, v)) => v,
                            None => vec![l.clone()],
                        })
                        .collect();
                    break;
                }
            }
        }
    }
    let label_face = Face::new(false, base)?;
    let title_face = Face::new(true, base + 4.0)?;
    let n_lines = col_lines.iter().map(Vec::len).max().unwrap_or(0);

    // Widths: the row-label column, then the canvas.
    let row_w = labels
        .rows
        .iter()
        .flat_map(|l| l.lines())
        .chain([labels.row_title.as_str()])
        .map(|l| label_face.width(l).ceil() as i32)
        .max()
        .unwrap_or(0);
    let left = if row_w > 0 { row_w + PAD } else { 0 };
    let content_w = MARGIN + left + gw + MARGIN;
    let title_w = title_face.width(&labels.title).ceil() as i32 + 2 * MARGIN;
    let col_title_w = MARGIN + left + label_face.width(&labels.col_title).ceil() as i32 + MARGIN;
    let width = content_w.max(title_w).max(col_title_w);
    let grid_x = MARGIN + left + (width - content_w) / 2;

    // Top to bottom: title, column title, the band of column labels (and the
    // row title at its bottom), the grid.
    let mut y = MARGIN as f32;
    if !labels.title.is_empty() {
        let x = (width as f32 - title_face.width(&labels.title)) / 2.0;
        texts.push(Placed {
            text: labels.title.clone(),
            bold: true,
            size: title_face.size,
            x,
            baseline: y + title_face.ascent(),
            colour: BLACK,
        });
        y += title_face.line_height() + 6.0;
    }
    if !labels.col_title.is_empty() {
        let w = label_face.width(&labels.col_title);
        let x = (grid_x as f32 + (gw as f32 - w) / 2.0)
            .max(MARGIN as f32)
            .min(width as f32 - MARGIN as f32 - w);
        texts.push(Placed {
            text: labels.col_title.clone(),
            bold: false,
            size: label_face.size,
            x,
            baseline: y + label_face.ascent(),
            colour: GREY,
        });
        y += label_face.line_height() + 2.0;
    }
    let mut band = n_lines as f32 * col_face.line_height();
    if !labels.row_title.is_empty() {
        band = band.max(label_face.line_height());
    }
    let band_bottom = y + band;
    for (c, lines) in col_lines.iter().enumerate() {
        let centre = grid_x as f32 + c as f32 * (cw + gap) as f32 + cw as f32 / 2.0;
        for (i, line) in lines.iter().enumerate() {
            let from_bottom = (lines.len() - 1 - i) as f32;
            texts.push(Placed {
                text: line.clone(),
                bold: false,
                size: col_face.size,
                x: centre - col_face.width(line) / 2.0,
                baseline: band_bottom - col_face.descent() - from_bottom * col_face.line_height(),
                colour: BLACK,
            });
        }
    }
    if !labels.row_title.is_empty() {
        texts.push(Placed {
            text: labels.row_title.clone(),
            bold: false,
            size: label_face.size,
            x: (grid_x - PAD) as f32 - label_face.width(&labels.row_title),
            baseline: band_bottom - label_face.descent(),
            colour: GREY,
        });
    }
    if band > 0.0 {
        y = band_bottom + PAD as f32;
    }
    let grid_y = y.ceil() as i32;
    let cap = label_face.cap_height();
    for (r, l) in labels
        .rows
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
    {
        // Lines centred as a block on the row's middle.
        let centre = grid_y as f32 + r as f32 * (ch + gap) as f32 + ch as f32 / 2.0;
        let lines: Vec<&str> = l.lines().collect();
        let lh = label_face.line_height();
        for (i, line) in lines.iter().enumerate() {
            let offset = (i as f32 - (lines.len() - 1) as f32 / 2.0) * lh;
            texts.push(Placed {
                text: line.to_string(),
                bold: false,
                size: label_face.size,
                x: (grid_x - PAD) as f32 - label_face.width(line),
                baseline: centre + offset + cap / 2.0,
                colour: BLACK,
            });
        }
    }
    Ok(Layout {
        width: width as u32,
        height: (grid_y + gh + MARGIN) as u32,
        grid_x,
        grid_y,
        cell,
        gap,
        texts,
    })
}

/// Arranges images (N, C, H, W) in [−1, 1], C = 1 or 3, row-major into a grid
/// of `grid.rows.len()` rows and `grid.cols.len()` columns, each image scaled
/// up `scale` times (nearest neighbour: every pixel stays a sharp square;
/// use 3 for 28×28 images), with the labels written around it, as RGB.
pub fn labelled_grid(images: &Tensor, grid: &GridLabels, scale: u32) -> Result<image::RgbImage> {
    let (rows, cols) = (grid.rows.len() as i64, grid.cols.len() as i64);
    let (n, h, w, pixels) = images_to_rgb8(images)?;
    if rows == 0 || cols == 0 || n != rows * cols {
        bail!(
            "labelled grid: {n} images do not fill {rows} rows × {cols} columns ({} cells); give one label per row and per column",
            rows * cols
        );
    }
    if scale == 0 {
        bail!("labelled grid: scale must be at least 1");
    }
    let s = scale as i32;
    let lay = layout(grid, (rows, cols), (w as i32 * s, h as i32 * s), scale)?;
    let mut img = image::RgbImage::from_pixel(lay.width, lay.height, image::Rgb([255, 255, 255]));
    for i in 0..n {
        let (ox, oy) = lay.cell_origin(i / cols, i % cols);
        for y in 0..h * s as i64 {
            for x in 0..w * s as i64 {
                let o = (((i * h + y / s as i64) * w + x / s as i64) * 3) as usize;
                img.put_pixel(
                    (ox + x as i32) as u32,
                    (oy + y as i32) as u32,
                    image::Rgb([pixels[o], pixels[o + 1], pixels[o + 2]]),
                );
            }
        }
    }
    for t in &lay.texts {
        draw_text(&mut img, t)?;
    }
    Ok(img)
}

/// [`labelled_grid`] as PNG bytes (for an [`crate::outputs::OutputSet`]).
pub fn labelled_grid_png(images: &Tensor, grid: &GridLabels, scale: u32) -> Result<Vec<u8>> {
    crate::png_bytes(&labelled_grid(images, grid, scale)?)
}

/// Saves [`labelled_grid`] as a PNG (written atomically, like every output).
pub fn save_labelled_grid(
    images: &Tensor,
    grid: &GridLabels,
    scale: u32,
    path: &Path,
) -> Result<()> {
    write_atomic(path, &labelled_grid_png(images, grid, scale)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// (N, C, 3, 4) images whose pixels take five levels in a known pattern.
    fn pattern(n: i64, c: i64) -> (Tensor, impl Fn(i64, i64, i64, i64) -> u8) {
        let level = |i: i64, ch: i64, y: i64, x: i64| ((i * 7 + ch * 2 + y * 3 + x) % 5) as f64;
        let mut v = Vec::new();
        for i in 0..n {
            for ch in 0..c {
                for y in 0..3 {
                    for x in 0..4 {
                        v.push((-1.0 + level(i, ch, y, x) / 2.0) as f32);
                    }
                }
            }
        }
        let t = Tensor::from_slice(&v).reshape([n, c, 3, 4]);
        (t, move |i, ch, y, x| {
            ((level(i, ch, y, x) / 2.0) * 127.5).round() as u8
        })
    }

    fn blank(n: usize) -> Vec<String> {
        vec![String::new(); n]
    }

    #[test]
    fn unlabelled_size_is_cells_gaps_and_margins() {
        let (x, _) = pattern(6, 1);
        let g = labelled_grid(&x, &GridLabels::new("", blank(2), blank(3)), 5).unwrap();
        // 3 columns of 4·5 px with 4-px gaps, 2 rows of 3·5 px, 10-px margins.
        assert_eq!(
            (g.width(), g.height()),
            (20 + 3 * 20 + 2 * 4, 20 + 2 * 15 + 4)
        );
    }

    #[test]
    fn cells_are_the_scaled_up_images_exactly() {
        for c in [1, 3] {
            let (x, want) = pattern(6, c);
            let labels = GridLabels::new(
                "A title wider than the grid itself",
                strings(["T-shirt/top", "Ankle boot"]),
                strings(["t = 0", "w = 3", "DDIM-20"]),
            )
            .row_title("class")
            .col_title("step");
            let scale = 7;
            let g = labelled_grid(&x, &labels, scale).unwrap();
            let lay = layout(&labels, (2, 3), (4 * 7, 3 * 7), scale).unwrap();
            assert_eq!((g.width(), g.height()), (lay.width, lay.height));
            // Labels take room above and to the left.
            assert!(lay.grid_x > MARGIN && lay.grid_y > MARGIN);
            for i in 0..6 {
                let (ox, oy) = lay.cell_origin(i / 3, i % 3);
                for y in 0..21 {
                    for x in 0..28 {
                        let p = g.get_pixel((ox + x) as u32, (oy + y) as u32).0;
                        let src =
                            |ch| want(i, if c == 1 { 0 } else { ch }, y as i64 / 7, x as i64 / 7);
                        assert_eq!(p, [src(0), src(1), src(2)], "image {i} pixel ({x}, {y})");
                    }
                }
            }
            // Text was drawn: dark pixels left of the grid and above it.
            let dark = |x0: u32, x1: u32, y0: u32, y1: u32| {
                (y0..y1).any(|y| (x0..x1).any(|x| g.get_pixel(x, y).0[0] < 100))
            };
            assert!(
                dark(0, lay.grid_x as u32 - 1, lay.grid_y as u32, g.height()),
                "row labels"
            );
            assert!(
                dark(lay.grid_x as u32, g.width(), 0, lay.grid_y as u32 - 1),
                "column labels"
            );
        }
    }

    #[test]
    fn long_column_labels_wrap_or_shrink_to_their_column() {
        let labels = GridLabels::new(
            "",
            blank(1),
            strings(["Ankle boot", "T-shirt/top", "Sneaker"]),
        );
        let lay = layout(&labels, (1, 3), (84, 84), 3).unwrap();
        for t in &lay.texts {
            let w = Face::new(false, t.size).unwrap().width(&t.text);
            let col = ((t.x + w / 2.0 - lay.grid_x as f32) / 88.0) as i32;
            let (lo, hi) = (lay.grid_x + col * 88 - 2, lay.grid_x + col * 88 + 84 + 2);
            assert!(
                t.x >= lo as f32 && t.x + w <= hi as f32,
                "'{}' spills out of column {col}",
                t.text
            );
        }
    }

    #[test]
    fn wrong_label_counts_are_errors() {
        let (x, _) = pattern(6, 1);
        let e = labelled_grid(&x, &GridLabels::new("", blank(2), blank(2)), 3).unwrap_err();
        assert!(
            e.to_string()
                .contains("6 images do not fill 2 rows × 2 columns"),
            "{e}"
        );
        assert!(labelled_grid(&x, &GridLabels::new("", vec![], blank(6)), 3).is_err());
        let x2 = Tensor::zeros([6, 2, 3, 4], (Kind::Float, Device::Cpu));
        assert!(labelled_grid(&x2, &GridLabels::new("", blank(2), blank(3)), 3).is_err());
    }

    #[test]
    fn saves_a_png() {
        let dir = std::env::temp_dir().join(format!("util-lgrid-{}", std::process::id()));
        let p = dir.join("g.png");
        let (x, _) = pattern(2, 3);
        save_labelled_grid(
            &x,
            &GridLabels::new("t", strings(["a"]), strings(["b", "c"])),
            3,
            &p,
        )
        .unwrap();
        let img = image::open(&p).unwrap();
        assert!(img.width() > 2 * 12);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
