//! Pixel art: snap an image to a grid of cells, quantize the cells' colours
//! (k-means in Oklab, or a caller palette), optionally make alpha binary, and
//! scale the grid up with nearest-neighbour sampling.
//!
//! Also home to the colour helpers the other post-processing modules share
//! (sRGB ↔ linear light, linear light ↔ Oklab). They use the pure-Rust `libm`,
//! so results do not depend on the platform's math library.
use std::collections::HashMap;
use std::sync::OnceLock;

use super::limits::{check_image_size, try_filled};
use super::Rgba8Image;
use crate::error::{Error, Result};

/// The largest `colors` k-means accepts (and the largest caller palette).
pub(crate) const MAX_COLORS: usize = 256;

/// How one cell's pixels become one colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CellColor {
    /// Alpha-weighted mean in linear light (the physically right average: a
    /// half-black, half-white cell becomes sRGB 188, not 128); alpha is the
    /// plain mean of the cell's alphas.
    #[default]
    Mean,
    /// The most frequent RGBA value in the cell; ties go to the value that
    /// occurs first in row-major order. Keeps hard-edged source art crisp.
    Mode,
}

/// How the cells' colours are reduced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Quantize {
    /// Keep every cell's colour.
    #[default]
    None,
    /// At most this many colours, found by k-means in Oklab (1..=256).
    /// Deterministic: k-means++ seeded with a fixed SplitMix64 stream over the
    /// distinct colours in sorted order, then Lloyd iterations.
    KMeans(u32),
    /// Each cell takes the nearest of these sRGB colours in Oklab (1..=256).
    Palette(Vec<[u8; 3]>),
}

/// Options of [`pixel_art`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PixelArtOptions {
    /// Cell size in source pixels (≥ 1). The grid is
    /// `ceil(width / cell) × ceil(height / cell)`; edge cells may be partial.
    pub cell: u32,
    /// Output pixels per cell along each axis (≥ 1): the output is
    /// `grid × scale`. `scale == cell` gives back roughly the source size.
    pub scale: u32,
    /// How a cell's pixels become one colour.
    pub cell_color: CellColor,
    /// Colour reduction.
    pub quantize: Quantize,
    /// `Some(t)`: a cell's alpha becomes 255 if it is ≥ `t`, else 0 (binary
    /// alpha, with `t` in 1..=255). `None`: keep the cell's alpha.
    pub alpha_threshold: Option<u8>,
}

impl Default for PixelArtOptions {
    fn default() -> Self {
        Self { cell: 8, scale: 1, cell_color: CellColor::Mean, quantize: Quantize::KMeans(16), alpha_threshold: None }
    }
}

/// Grid size of an image of `width × height` with `cell`-pixel cells.
pub fn grid_size(width: usize, height: usize, cell: u32) -> (usize, usize) {
    let c = cell.max(1) as usize;
    (width.div_ceil(c), height.div_ceil(c))
}

/// Turns `image` into pixel art; see [`PixelArtOptions`].
///
/// Errors: `InvalidArgument` for `cell` or `scale` 0, `KMeans(0)` or more
/// than 256 colours, an empty or over-long palette, a 0 alpha threshold;
/// `InvalidSize` for an output past
/// [`MAX_IMAGE_SIDE`](super::limits::MAX_IMAGE_SIDE) on a side (checked
/// before any work); `OutOfMemory` when its pixels cannot be allocated.
pub fn pixel_art(image: &Rgba8Image, options: &PixelArtOptions) -> Result<Rgba8Image> {
    validate(options)?;
    let (gw, gh) = grid_size(image.width, image.height, options.cell);
    let scale = options.scale as usize;
    let (ow, oh) = (gw.saturating_mul(scale), gh.saturating_mul(scale));
    check_image_size(ow, oh, &format!("pixel art of a {gw}x{gh} grid at scale {scale}"))?;
    let mut pixels = try_filled(ow * oh * 4, 0u8, "the pixel art image")?;
    let mut cells = cell_colors(image, options.cell as usize, options.cell_color);
    if let Some(t) = options.alpha_threshold {
        for c in &mut cells {
            c[3] = if c[3] >= t { 255 } else { 0 };
        }
    }
    match &options.quantize {
        Quantize::None => {}
        Quantize::KMeans(k) => {
            let palette = kmeans_palette(&cells, *k as usize);
            map_to_palette(&mut cells, &palette);
        }
        Quantize::Palette(p) => map_to_palette(&mut cells, p),
    }
    for (y, row) in pixels.chunks_exact_mut(ow * 4).enumerate() {
        let gy = y / scale;
        for (x, px) in row.chunks_exact_mut(4).enumerate() {
            px.copy_from_slice(&cells[gy * gw + x / scale]);
        }
    }
    Ok(Rgba8Image { width: ow, height: oh, pixels })
}

fn validate(o: &PixelArtOptions) -> Result<()> {
    if o.cell == 0 {
        return Err(Error::invalid("pixel art cell size is 0; it must be at least 1 pixel"));
    }
    if o.scale == 0 {
        return Err(Error::invalid("pixel art scale is 0; it must be at least 1"));
    }
    if o.alpha_threshold == Some(0) {
        return Err(Error::invalid("alpha threshold 0 would make every cell opaque; use 1..=255 or none"));
    }
    match &o.quantize {
        Quantize::KMeans(k) if *k == 0 || *k as usize > MAX_COLORS => {
            Err(Error::invalid(format!("cannot quantize to {k} colours; use 1..={MAX_COLORS}")))
        }
        Quantize::Palette(p) if p.is_empty() || p.len() > MAX_COLORS => {
            Err(Error::invalid(format!("the palette has {} colours; it needs 1..={MAX_COLORS}", p.len())))
        }
        _ => Ok(()),
    }
}

/// One RGBA colour per cell, row-major over the grid.
fn cell_colors(image: &Rgba8Image, cell: usize, mode: CellColor) -> Vec<[u8; 4]> {
    let (gw, gh) = grid_size(image.width, image.height, cell as u32);
    let lut = srgb_lut();
    let mut out = Vec::with_capacity(gw * gh);
    let mut counts: HashMap<[u8; 4], (u32, u32)> = HashMap::new();
    for gy in 0..gh {
        for gx in 0..gw {
            let (x0, y0) = (gx * cell, gy * cell);
            let (x1, y1) = ((x0 + cell).min(image.width), (y0 + cell).min(image.height));
            let pixel = |x: usize, y: usize| -> [u8; 4] {
                let i = (y * image.width + x) * 4;
                [image.pixels[i], image.pixels[i + 1], image.pixels[i + 2], image.pixels[i + 3]]
            };
            match mode {
                CellColor::Mean => {
                    let (mut acc, mut alpha, mut n) = ([0f64; 3], 0f64, 0usize);
                    for y in y0..y1 {
                        for x in x0..x1 {
                            let p = pixel(x, y);
                            let a = p[3] as f64 / 255.0;
                            for c in 0..3 {
                                acc[c] += lut[p[c] as usize] as f64 * a;
                            }
                            alpha += a;
                            n += 1;
                        }
                    }
                    if alpha <= 0.0 {
                        out.push([0, 0, 0, 0]);
                    } else {
                        let rgb = acc.map(|v| linear_to_srgb((v / alpha) as f32));
                        out.push([rgb[0], rgb[1], rgb[2], quantize_unit((alpha / n as f64) as f32)]);
                    }
                }
                CellColor::Mode => {
                    // value → (count, first position); ties go to the first seen.
                    counts.clear();
                    let mut order = 0u32;
                    for y in y0..y1 {
                        for x in x0..x1 {
                            counts.entry(pixel(x, y)).or_insert((0, order)).0 += 1;
                            order += 1;
                        }
                    }
                    let best = counts.iter().max_by_key(|(_, &(n, first))| (n, std::cmp::Reverse(first)));
                    out.push(best.map_or([0; 4], |(v, _)| *v));
                }
            }
        }
    }
    out
}

/// Replaces each visible cell's RGB with the nearest palette colour in Oklab.
fn map_to_palette(cells: &mut [[u8; 4]], palette: &[[u8; 3]]) {
    let labs: Vec<[f32; 3]> = palette.iter().map(|&c| srgb8_to_oklab(c)).collect();
    let mut memo: HashMap<[u8; 3], [u8; 3]> = HashMap::new();
    for c in cells.iter_mut().filter(|c| c[3] > 0) {
        let rgb = [c[0], c[1], c[2]];
        let mapped = *memo.entry(rgb).or_insert_with(|| palette[nearest(&labs, srgb8_to_oklab(rgb)).0]);
        c[..3].copy_from_slice(&mapped);
    }
}

/// Index and squared distance of the nearest of `centres` (first wins ties).
fn nearest(centres: &[[f32; 3]], p: [f32; 3]) -> (usize, f32) {
    let mut best = (0, f32::INFINITY);
    for (i, c) in centres.iter().enumerate() {
        let d = dist2(*c, p);
        if d < best.1 {
            best = (i, d);
        }
    }
    best
}

fn dist2(a: [f32; 3], b: [f32; 3]) -> f32 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

/// At most `k` sRGB colours summarizing the visible cells' colours: k-means
/// in Oklab over the distinct colours weighted by their counts. With `k` or
/// fewer distinct colours, those colours exactly.
fn kmeans_palette(cells: &[[u8; 4]], k: usize) -> Vec<[u8; 3]> {
    let mut counts: HashMap<[u8; 3], u32> = HashMap::new();
    for c in cells.iter().filter(|c| c[3] > 0) {
        *counts.entry([c[0], c[1], c[2]]).or_insert(0) += 1;
    }
    // Sorted so the result never depends on hash order.
    let mut colors: Vec<([u8; 3], u32)> = counts.into_iter().collect();
    colors.sort_unstable();
    if colors.len() <= k {
        return colors.into_iter().map(|(c, _)| c).collect();
    }
    let points: Vec<[f32; 3]> = colors.iter().map(|&(c, _)| srgb8_to_oklab(c)).collect();
    let weights: Vec<f64> = colors.iter().map(|&(_, n)| n as f64).collect();

    // k-means++ with a fixed seed.
    let mut rng = SplitMix64(0x6b69_6c6e_5f70_6978); // "kiln_pix"
    let mut centres: Vec<[f32; 3]> = Vec::with_capacity(k);
    let total: f64 = weights.iter().sum();
    centres.push(points[pick(&weights, total, rng.unit())]);
    let mut d2: Vec<f64> = points.iter().map(|p| dist2(*p, centres[0]) as f64).collect();
    while centres.len() < k {
        let w: Vec<f64> = d2.iter().zip(&weights).map(|(d, w)| d * w).collect();
        let sum: f64 = w.iter().sum();
        if sum <= 0.0 {
            break; // every point coincides with a centre
        }
        let c = points[pick(&w, sum, rng.unit())];
        centres.push(c);
        for (d, p) in d2.iter_mut().zip(&points) {
            *d = d.min(dist2(*p, c) as f64);
        }
    }

    // Lloyd iterations.
    let mut assign = vec![usize::MAX; points.len()];
    for _ in 0..64 {
        let mut changed = false;
        for (a, p) in assign.iter_mut().zip(&points) {
            let n = nearest(&centres, *p).0;
            if *a != n {
                *a = n;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        let mut sums = vec![([0f64; 3], 0f64); centres.len()];
        for ((a, p), w) in assign.iter().zip(&points).zip(&weights) {
            for (sum, v) in sums[*a].0.iter_mut().zip(p) {
                *sum += *v as f64 * w;
            }
            sums[*a].1 += w;
        }
        for (centre, (s, w)) in centres.iter_mut().zip(&sums) {
            if *w > 0.0 {
                *centre = s.map(|v| (v / w) as f32);
            }
        }
    }
    let mut palette: Vec<[u8; 3]> = Vec::with_capacity(centres.len());
    for c in centres {
        let rgb = oklab_to_srgb8(c);
        if !palette.contains(&rgb) {
            palette.push(rgb);
        }
    }
    palette
}

/// Index whose cumulative weight first exceeds `u * total`.
fn pick(weights: &[f64], total: f64, u: f64) -> usize {
    let target = u * total;
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if acc > target && *w > 0.0 {
            return i;
        }
    }
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

// ---- Colour helpers shared by the post-processing modules ----

/// sRGB byte → linear light, as a 256-entry table.
pub(crate) fn srgb_lut() -> &'static [f32; 256] {
    static LUT: OnceLock<[f32; 256]> = OnceLock::new();
    LUT.get_or_init(|| {
        std::array::from_fn(|i| {
            let c = i as f32 / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                libm::powf((c + 0.055) / 1.055, 2.4)
            }
        })
    })
}

/// sRGB byte → linear light.
pub(crate) fn srgb_to_linear(c: u8) -> f32 {
    srgb_lut()[c as usize]
}

/// Linear light (clamped to [0, 1]) → nearest sRGB byte.
pub(crate) fn linear_to_srgb(x: f32) -> u8 {
    let x = if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
    let e = if x <= 0.003_130_8 { x * 12.92 } else { 1.055 * libm::powf(x, 1.0 / 2.4) - 0.055 };
    quantize_unit(e)
}

/// [0, 1] → byte, rounding to nearest.
pub(crate) fn quantize_unit(x: f32) -> u8 {
    (x.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Linear-light RGB → Oklab (Björn Ottosson, 2020).
pub(crate) fn linear_to_oklab([r, g, b]: [f32; 3]) -> [f32; 3] {
    let l = 0.412_221_46 * r + 0.536_332_55 * g + 0.051_445_995 * b;
    let m = 0.211_903_5 * r + 0.680_699_5 * g + 0.107_396_96 * b;
    let s = 0.088_302_46 * r + 0.281_718_85 * g + 0.629_978_7 * b;
    let (l, m, s) = (libm::cbrtf(l), libm::cbrtf(m), libm::cbrtf(s));
    [
        0.210_454_26 * l + 0.793_617_8 * m - 0.004_072_047 * s,
        1.977_998_5 * l - 2.428_592_2 * m + 0.450_593_7 * s,
        0.025_904_037 * l + 0.782_771_77 * m - 0.808_675_77 * s,
    ]
}

/// Oklab → linear-light RGB (not clamped).
pub(crate) fn oklab_to_linear([ll, a, b]: [f32; 3]) -> [f32; 3] {
    let l = ll + 0.396_337_78 * a + 0.215_803_76 * b;
    let m = ll - 0.105_561_346 * a - 0.063_854_17 * b;
    let s = ll - 0.089_484_18 * a - 1.291_485_5 * b;
    let (l, m, s) = (l * l * l, m * m * m, s * s * s);
    [
        4.076_741_7 * l - 3.307_711_6 * m + 0.230_969_94 * s,
        -1.268_438 * l + 2.609_757_4 * m - 0.341_319_38 * s,
        -0.004_196_086_3 * l - 0.703_418_6 * m + 1.707_614_7 * s,
    ]
}

/// sRGB bytes → Oklab.
pub(crate) fn srgb8_to_oklab(c: [u8; 3]) -> [f32; 3] {
    linear_to_oklab(c.map(srgb_to_linear))
}

/// Oklab → nearest sRGB bytes (clamped to the gamut).
pub(crate) fn oklab_to_srgb8(lab: [f32; 3]) -> [u8; 3] {
    oklab_to_linear(lab).map(linear_to_srgb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// A deterministic noisy, colourful test image.
    fn noise(w: usize, h: usize, seed: u64) -> Rgba8Image {
        let mut rng = SplitMix64(seed);
        let mut pixels = Vec::with_capacity(w * h * 4);
        for y in 0..h {
            for x in 0..w {
                let r = rng.next();
                pixels.extend_from_slice(&[
                    ((x * 255 / w) as u8).wrapping_add(r as u8 % 40),
                    ((y * 255 / h) as u8).wrapping_add((r >> 8) as u8 % 40),
                    (r >> 16) as u8,
                    255,
                ]);
            }
        }
        Rgba8Image { width: w, height: h, pixels }
    }

    fn colors(img: &Rgba8Image) -> HashSet<[u8; 3]> {
        img.pixels.chunks_exact(4).map(|p| [p[0], p[1], p[2]]).collect()
    }

    #[test]
    fn oklab_round_trips_and_matches_reference_values() {
        // Reference: Ottosson's table, white → L 1, a 0, b 0.
        let w = srgb8_to_oklab([255, 255, 255]);
        assert!((w[0] - 1.0).abs() < 1e-3 && w[1].abs() < 1e-3 && w[2].abs() < 1e-3, "{w:?}");
        let red = srgb8_to_oklab([255, 0, 0]);
        assert!((red[0] - 0.628).abs() < 2e-3 && (red[1] - 0.225).abs() < 2e-3 && (red[2] - 0.126).abs() < 2e-3, "{red:?}");
        for c in [[0u8, 0, 0], [255, 0, 0], [12, 200, 77], [128, 128, 128], [255, 255, 254]] {
            assert_eq!(oklab_to_srgb8(srgb8_to_oklab(c)), c);
        }
        for i in 0..=255u8 {
            assert_eq!(linear_to_srgb(srgb_to_linear(i)), i);
        }
    }

    #[test]
    fn kmeans_palette_has_at_most_n_colours_and_is_deterministic() {
        let img = noise(64, 48, 1);
        for n in [1u32, 2, 5, 16] {
            let o = PixelArtOptions { cell: 4, quantize: Quantize::KMeans(n), ..Default::default() };
            let a = pixel_art(&img, &o).unwrap();
            assert!(colors(&a).len() <= n as usize, "{} colours for n = {n}", colors(&a).len());
            assert_eq!(a, pixel_art(&img, &o).unwrap(), "same input, same output");
        }
        // Enough colours to matter: 16 clusters use more than a handful.
        let o = PixelArtOptions { cell: 2, quantize: Quantize::KMeans(16), ..Default::default() };
        assert!(colors(&pixel_art(&img, &o).unwrap()).len() > 8);
    }

    #[test]
    fn kmeans_keeps_few_distinct_colours_exactly() {
        let mut img = noise(16, 16, 2);
        for (i, p) in img.pixels.chunks_exact_mut(4).enumerate() {
            p.copy_from_slice(if i % 3 == 0 { &[10, 20, 30, 255] } else { &[200, 100, 50, 255] });
        }
        let o = PixelArtOptions { cell: 1, quantize: Quantize::KMeans(4), ..Default::default() };
        assert_eq!(pixel_art(&img, &o).unwrap(), img);
    }

    #[test]
    fn caller_palette_membership_is_exact() {
        let img = noise(40, 40, 3);
        let palette = vec![[0u8, 0, 0], [255, 255, 255], [200, 40, 40], [40, 160, 60], [30, 60, 200]];
        let o = PixelArtOptions { cell: 3, quantize: Quantize::Palette(palette.clone()), ..Default::default() };
        let out = pixel_art(&img, &o).unwrap();
        for c in colors(&out) {
            assert!(palette.contains(&c), "{c:?} is not in the palette");
        }
        // Nearest in Oklab: pure palette colours map to themselves.
        let mut exact = noise(5, 1, 4);
        for (p, c) in exact.pixels.chunks_exact_mut(4).zip(&palette) {
            p[..3].copy_from_slice(c);
        }
        let o = PixelArtOptions { cell: 1, quantize: Quantize::Palette(palette), ..Default::default() };
        assert_eq!(pixel_art(&exact, &o).unwrap(), exact);
    }

    #[test]
    fn cells_are_uniform_and_output_is_grid_times_scale() {
        let img = noise(37, 21, 5); // partial edge cells
        let o = PixelArtOptions { cell: 5, scale: 3, quantize: Quantize::None, ..Default::default() };
        let out = pixel_art(&img, &o).unwrap();
        let (gw, gh) = grid_size(37, 21, 5);
        assert_eq!((gw, gh), (8, 5));
        assert_eq!((out.width, out.height), (gw * 3, gh * 3));
        for y in 0..out.height {
            for x in 0..out.width {
                let i = (y * out.width + x) * 4;
                let j = ((y / 3 * 3) * out.width + x / 3 * 3) * 4;
                assert_eq!(out.pixels[i..i + 4], out.pixels[j..j + 4], "cell ({}, {}) is not uniform", x / 3, y / 3);
            }
        }
    }

    #[test]
    fn mean_is_in_linear_light_and_mode_picks_the_majority() {
        // 2x1 cell: black and white. Linear mean 0.5 → sRGB 188.
        let img = Rgba8Image { width: 2, height: 1, pixels: vec![0, 0, 0, 255, 255, 255, 255, 255] };
        let o = PixelArtOptions { cell: 2, quantize: Quantize::None, ..Default::default() };
        assert_eq!(pixel_art(&img, &o).unwrap().pixels, vec![188, 188, 188, 255]);
        // Transparent pixels do not darken the mean.
        let img = Rgba8Image { width: 2, height: 1, pixels: vec![0, 0, 0, 0, 200, 10, 10, 255] };
        assert_eq!(pixel_art(&img, &o).unwrap().pixels, vec![200, 10, 10, 128]);
        let img = Rgba8Image {
            width: 2,
            height: 2,
            pixels: vec![0, 0, 255, 255, 255, 0, 0, 255, 255, 0, 0, 255, 255, 0, 0, 255],
        };
        let o = PixelArtOptions { cell: 2, quantize: Quantize::None, cell_color: CellColor::Mode, ..Default::default() };
        assert_eq!(pixel_art(&img, &o).unwrap().pixels, vec![255, 0, 0, 255]);
        // A 2-2 tie goes to the value seen first in row-major order.
        let tie = Rgba8Image {
            width: 2,
            height: 2,
            pixels: vec![255, 0, 0, 255, 0, 0, 255, 255, 0, 0, 255, 255, 255, 0, 0, 255],
        };
        assert_eq!(pixel_art(&tie, &o).unwrap().pixels, vec![255, 0, 0, 255]);
        let blue_first = Rgba8Image {
            width: 2,
            height: 2,
            pixels: vec![0, 0, 255, 255, 255, 0, 0, 255, 255, 0, 0, 255, 0, 0, 255, 255],
        };
        assert_eq!(pixel_art(&blue_first, &o).unwrap().pixels, vec![0, 0, 255, 255]);
    }

    #[test]
    fn binary_alpha() {
        let mut img = noise(16, 16, 6);
        for (i, p) in img.pixels.chunks_exact_mut(4).enumerate() {
            p[3] = (i * 7 % 256) as u8;
        }
        let o = PixelArtOptions { cell: 2, alpha_threshold: Some(128), ..Default::default() };
        let out = pixel_art(&img, &o).unwrap();
        assert!(out.pixels.chunks_exact(4).all(|p| p[3] == 0 || p[3] == 255));
        assert!(out.pixels.chunks_exact(4).any(|p| p[3] == 0) && out.pixels.chunks_exact(4).any(|p| p[3] == 255));
    }

    #[test]
    fn bad_options_are_errors() {
        let img = noise(8, 8, 7);
        let bad = [
            PixelArtOptions { quantize: Quantize::KMeans(0), ..Default::default() },
            PixelArtOptions { quantize: Quantize::KMeans(257), ..Default::default() },
            PixelArtOptions { quantize: Quantize::Palette(vec![]), ..Default::default() },
            PixelArtOptions { cell: 0, ..Default::default() },
            PixelArtOptions { scale: 0, ..Default::default() },
            PixelArtOptions { alpha_threshold: Some(0), ..Default::default() },
        ];
        for o in bad {
            assert_eq!(pixel_art(&img, &o).unwrap_err().kind(), crate::error::ErrorKind::InvalidArgument, "{o:?}");
        }
    }
}
