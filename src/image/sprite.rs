//! Sprites with alpha from images generated on a flat key background
//! (chroma key): a soft matte by colour distance in Oklab, despill, colour
//! bleeding under transparent pixels, feathering, straight or premultiplied
//! output, and the bounding box of the visible pixels. [`sprite_from_matte`]
//! finishes a matte computed elsewhere (a matting graph, `model::matting`)
//! the same way.
use std::collections::VecDeque;

use super::material::blur_plane;
use super::pixel_art::{linear_to_oklab, linear_to_srgb, srgb_lut};
use super::Rgba8Image;
use crate::error::{Error, Result};

/// A pixel rectangle; empty (`width == 0 || height == 0`, all fields 0) when
/// nothing is inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Rect {
    /// True when the rectangle holds no pixel.
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }
}

/// Options of [`make_sprite`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpriteOptions {
    /// The background (key) colour in sRGB; `None` detects it as the
    /// per-channel median of the border pixels ([`detect_key`]).
    pub key: Option<[u8; 3]>,
    /// Oklab distance from the key at or below which a pixel is fully
    /// transparent. Oklab's L runs 0..1; pure red and pure green are ≈ 0.52
    /// apart. Default 0.10.
    pub inner_tolerance: f32,
    /// Oklab distance at or above which a pixel is fully opaque; between the
    /// two the alpha rises linearly. Must be ≥ `inner_tolerance`. Default 0.22.
    pub outer_tolerance: f32,
    /// Remove the key's tint from partly transparent pixels. Default on.
    pub despill: bool,
    /// Radius in pixels of a Gaussian blur (σ = radius / 2) of the alpha,
    /// softening the cut-out edge; 0 = off (default). At most 64.
    pub feather_radius: u32,
    /// Output premultiplied alpha (RGB multiplied by alpha in the stored sRGB
    /// values, so RGB ≤ alpha) instead of straight alpha.
    pub premultiplied: bool,
    /// Pixels with alpha ≥ this count for the bounding box; 0 counts as 1.
    /// Default 1 (every visible pixel).
    pub bbox_threshold: u8,
}

impl Default for SpriteOptions {
    fn default() -> Self {
        Self {
            key: None,
            inner_tolerance: 0.10,
            outer_tolerance: 0.22,
            despill: true,
            feather_radius: 0,
            premultiplied: false,
            bbox_threshold: 1,
        }
    }
}

/// The result of [`make_sprite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sprite {
    /// The sprite, same size as the input.
    pub image: Rgba8Image,
    /// Bounding box of the pixels with alpha ≥ the threshold.
    pub bbox: Rect,
    /// The key colour used (given or detected); for [`sprite_from_matte`],
    /// the given key it despilled against, if any.
    pub key: Option<[u8; 3]>,
}

/// The key colour of an image generated on a flat background: the median of
/// each channel over the border pixels (robust to a sprite touching up to
/// nearly half the border). Errors (`InvalidArgument`) for an empty image.
pub fn detect_key(image: &Rgba8Image) -> Result<[u8; 3]> {
    let (w, h) = (image.width, image.height);
    if w == 0 || h == 0 {
        return Err(Error::invalid("cannot detect the key colour of an empty image"));
    }
    let mut border = Vec::with_capacity(2 * (w + h));
    for y in 0..h {
        for x in 0..w {
            if y == 0 || y == h - 1 || x == 0 || x == w - 1 {
                border.push((y * w + x) * 4);
            }
        }
    }
    Ok(std::array::from_fn(|c| {
        let mut v: Vec<u8> = border.iter().map(|&i| image.pixels[i + c]).collect();
        let mid = (v.len() - 1) / 2;
        *v.select_nth_unstable(mid).1
    }))
}

/// Bounding box of the pixels whose alpha is ≥ `threshold` (0 counts as 1);
/// empty when there are none.
pub fn alpha_bbox(image: &Rgba8Image, threshold: u8) -> Rect {
    let t = threshold.max(1);
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (i, p) in image.pixels.chunks_exact(4).enumerate() {
        if p[3] >= t {
            let (x, y) = (i % image.width, i / image.width);
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    if x0 == usize::MAX {
        Rect::default()
    } else {
        Rect { x: x0 as u32, y: y0 as u32, width: (x1 - x0 + 1) as u32, height: (y1 - y0 + 1) as u32 }
    }
}

/// Cuts a sprite out of an image generated on a flat key background.
///
/// 1. Matte: alpha from the Oklab distance `d` between each pixel and the key,
///    0 at `d ≤ inner`, 1 at `d ≥ outer`, linear between; times the input alpha.
/// 2. Despill the edge: unmix the key from partly transparent pixels in
///    linear light, `F = (P − (1 − α)·K) / α`; then, in those and in opaque
///    pixels next to a keyed one, clamp each of the key's dominant channels
///    (those above the key's mean, e.g. G for a green key) to the largest of
///    the other channels: the classic spill suppressor, generalized to any
///    key. Interior pixels keep their exact colour.
/// 3. Colour bleeding: fully transparent pixels take the colour of the nearest
///    visible pixel (breadth-first), so filtering, mipmaps and feathering
///    never pull the key colour back in; with no visible pixel they become 0.
/// 4. Feathering: Gaussian blur of the alpha (edges clamped).
/// 5. Output: straight alpha, or premultiplied (RGB × alpha / 255, rounded).
///
/// Errors (`InvalidArgument`): tolerances negative, not finite or
/// `outer < inner`; a feather radius over 64; auto-detection on an empty image.
pub fn make_sprite(image: &Rgba8Image, options: &SpriteOptions) -> Result<Sprite> {
    let (inner, outer) = (options.inner_tolerance, options.outer_tolerance);
    if !(inner.is_finite() && outer.is_finite() && inner >= 0.0 && outer >= inner) {
        return Err(Error::invalid(format!(
            "key tolerances must be finite with 0 ≤ inner ≤ outer; got inner {inner}, outer {outer}"
        )));
    }
    if options.feather_radius > 64 {
        return Err(Error::invalid(format!("feather radius {} is over 64", options.feather_radius)));
    }
    let key = match options.key {
        Some(k) => k,
        None => detect_key(image)?,
    };
    let n = image.width * image.height;
    let lut = srgb_lut();
    let key_lin = key.map(|c| lut[c as usize]);
    let key_lab = linear_to_oklab(key_lin);
    // 1. Matte; colours in linear light.
    let mut color: Vec<[f32; 3]> = Vec::with_capacity(n);
    let mut matte: Vec<f32> = Vec::with_capacity(n);
    for p in image.pixels.chunks_exact(4) {
        let lin = [lut[p[0] as usize], lut[p[1] as usize], lut[p[2] as usize]];
        let lab = linear_to_oklab(lin);
        let d = ((lab[0] - key_lab[0]).powi(2) + (lab[1] - key_lab[1]).powi(2) + (lab[2] - key_lab[2]).powi(2)).sqrt();
        let m = if d <= inner {
            0.0
        } else if d >= outer {
            1.0
        } else {
            (d - inner) / (outer - inner)
        };
        color.push(lin);
        matte.push(m);
    }
    let (image, bbox) = finish(image, color, &matte, options.despill.then_some(key_lin), options);
    Ok(Sprite { image, bbox, key: Some(key) })
}

/// Makes a sprite from `image` and a matte computed elsewhere (e.g. by a
/// matting graph): `matte` holds one value per pixel, row-major, 1 = opaque;
/// values are clamped to 0..1 (NaN counts as 0) and rounded to 1/255 steps.
/// Then as [`make_sprite`] from step 2: alpha = matte × input alpha; despill
/// only when `options.key` names a key colour (the background the matte
/// unmixes, `F = (P − (1 − α)·K) / α`; a detected key needs a flat
/// background, which a matting graph does not assume) and `options.despill`
/// is on; colour bleeding under transparent pixels, feathering, straight or
/// premultiplied output, bounding box. The tolerances are not used.
///
/// Errors (`InvalidArgument`): `matte` not `width × height` long; a feather
/// radius over 64.
pub fn sprite_from_matte(image: &Rgba8Image, matte: &[f32], options: &SpriteOptions) -> Result<Sprite> {
    if options.feather_radius > 64 {
        return Err(Error::invalid(format!("feather radius {} is over 64", options.feather_radius)));
    }
    let n = image.width * image.height;
    if matte.len() != n {
        return Err(Error::invalid(format!(
            "the matte has {} values; a {}x{} image needs {n}",
            matte.len(),
            image.width,
            image.height
        )));
    }
    let lut = srgb_lut();
    let color: Vec<[f32; 3]> =
        image.pixels.chunks_exact(4).map(|p| [lut[p[0] as usize], lut[p[1] as usize], lut[p[2] as usize]]).collect();
    let matte: Vec<f32> =
        matte.iter().map(|&m| if m.is_nan() { 0.0 } else { (m.clamp(0.0, 1.0) * 255.0).round() / 255.0 }).collect();
    let key = options.key.filter(|_| options.despill);
    let (image, bbox) = finish(image, color, &matte, key.map(|k| k.map(|c| lut[c as usize])), options);
    Ok(Sprite { image, bbox, key })
}

/// Steps 2 to 5 of [`make_sprite`] on linear-light colours and a matte in
/// 0..1; despills against `despill_key` (linear light) when given.
fn finish(
    image: &Rgba8Image,
    mut color: Vec<[f32; 3]>,
    matte: &[f32],
    despill_key: Option<[f32; 3]>,
    options: &SpriteOptions,
) -> (Rgba8Image, Rect) {
    let (w, h) = (image.width, image.height);
    let n = w * h;
    let mut alpha: Vec<f32> = matte.iter().zip(image.pixels.chunks_exact(4)).map(|(m, p)| m * p[3] as f32 / 255.0).collect();

    // 2. Despill the edge.
    let mut changed = vec![false; n];
    if let Some(key_lin) = despill_key {
        // The key's dominant channels (above its mean) and the others.
        let key_mean = (key_lin[0] + key_lin[1] + key_lin[2]) / 3.0;
        let dominant: [bool; 3] = key_lin.map(|c| c > key_mean + 1e-6);
        // An opaque pixel next to a keyed one is an edge pixel too: a mostly
        // covered pixel can reach the outer tolerance and still carry spill.
        let near_key = |i: usize| -> bool {
            let (x, y) = ((i % w) as isize, (i / w) as isize);
            (-1..=1).any(|dy| {
                (-1..=1).any(|dx| {
                    let (nx, ny) = (x + dx, y + dy);
                    nx >= 0 && ny >= 0 && (nx as usize) < w && (ny as usize) < h && matte[ny as usize * w + nx as usize] < 1.0
                })
            })
        };
        for i in 0..n {
            let m = matte[i];
            if m <= 0.0 || (m >= 1.0 && !near_key(i)) {
                continue;
            }
            let mut f = color[i];
            if m < 1.0 {
                for c in 0..3 {
                    f[c] = ((color[i][c] - (1.0 - m) * key_lin[c]) / m).clamp(0.0, 1.0);
                }
            }
            let limit = (0..3).filter(|&c| !dominant[c]).map(|c| f[c]).fold(0f32, f32::max);
            if dominant.iter().any(|d| *d) {
                for c in 0..3 {
                    if dominant[c] {
                        f[c] = f[c].min(limit);
                    }
                }
            }
            color[i] = f;
            changed[i] = true;
        }
    }

    // 3. Bleed visible colours into transparent pixels.
    let mut filled: Vec<bool> = alpha.iter().map(|a| *a > 0.0).collect();
    let mut queue: VecDeque<usize> = (0..n).filter(|&i| filled[i]).collect();
    while let Some(i) = queue.pop_front() {
        let (x, y) = (i % w, i / w);
        let neighbours = [
            (x > 0).then(|| i - 1),
            (x + 1 < w).then(|| i + 1),
            (y > 0).then(|| i - w),
            (y + 1 < h).then(|| i + w),
        ];
        for j in neighbours.into_iter().flatten() {
            if !filled[j] {
                filled[j] = true;
                color[j] = color[i];
                changed[j] = true;
                queue.push_back(j);
            }
        }
    }
    if !filled.iter().any(|f| *f) {
        color.iter_mut().for_each(|c| *c = [0.0; 3]);
        changed.iter_mut().for_each(|c| *c = true);
    }

    // 4. Feather.
    blur_plane(&mut alpha, w, h, options.feather_radius, false);

    // 5. Encode.
    let mut pixels = Vec::with_capacity(n * 4);
    for i in 0..n {
        let rgb: [u8; 3] = if changed[i] {
            color[i].map(linear_to_srgb)
        } else {
            [image.pixels[i * 4], image.pixels[i * 4 + 1], image.pixels[i * 4 + 2]]
        };
        let a = (alpha[i].clamp(0.0, 1.0) * 255.0).round() as u8;
        if options.premultiplied {
            let pm = |c: u8| ((c as u32 * a as u32 + 127) / 255) as u8;
            pixels.extend_from_slice(&[pm(rgb[0]), pm(rgb[1]), pm(rgb[2]), a]);
        } else {
            pixels.extend_from_slice(&[rgb[0], rgb[1], rgb[2], a]);
        }
    }
    let out = Rgba8Image { width: w, height: h, pixels };
    let bbox = alpha_bbox(&out, options.bbox_threshold);
    (out, bbox)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::pixel_art::srgb_to_linear;

    const GREEN: [u8; 3] = [0, 255, 0];
    const RED: [u8; 3] = [220, 30, 20];

    /// A red disc (centre (32, 32) on pixel corners, radius 20) on a green
    /// key, 8×8 supersampled and blended in linear light. Its pixels span
    /// columns and rows 12..=51 exactly.
    pub(crate) fn disc_on_key(size: usize, fg: [u8; 3], key: [u8; 3]) -> (Rgba8Image, Vec<f32>) {
        let (c, r) = (32.0f32, 20.0f32);
        let mut pixels = Vec::with_capacity(size * size * 4);
        let mut coverage = Vec::with_capacity(size * size);
        for y in 0..size {
            for x in 0..size {
                let mut inside = 0;
                for sy in 0..8 {
                    for sx in 0..8 {
                        let (px, py) = (x as f32 + (sx as f32 + 0.5) / 8.0, y as f32 + (sy as f32 + 0.5) / 8.0);
                        if (px - c).powi(2) + (py - c).powi(2) <= r * r {
                            inside += 1;
                        }
                    }
                }
                let cov = inside as f32 / 64.0;
                let mix = |f: u8, k: u8| linear_to_srgb(cov * srgb_to_linear(f) + (1.0 - cov) * srgb_to_linear(k));
                pixels.extend_from_slice(&[mix(fg[0], key[0]), mix(fg[1], key[1]), mix(fg[2], key[2]), 255]);
                coverage.push(cov);
            }
        }
        (Rgba8Image { width: size, height: size, pixels }, coverage)
    }

    #[test]
    fn red_disc_on_green_key() {
        let (img, cov) = disc_on_key(64, RED, GREEN);
        let s = make_sprite(&img, &SpriteOptions::default()).unwrap();
        assert_eq!(s.key, Some(GREEN), "auto-detected key");
        assert_eq!(s.bbox, Rect { x: 12, y: 12, width: 40, height: 40 });
        let mut edges = 0;
        for (p, c) in s.image.pixels.chunks_exact(4).zip(&cov) {
            if *c == 0.0 {
                assert_eq!(p[3], 0, "background");
            } else if *c == 1.0 {
                assert_eq!(p, [RED[0], RED[1], RED[2], 255], "interior keeps its colour");
            }
            if p[3] > 0 && p[3] < 255 {
                edges += 1;
                assert!(p[1] <= p[0].max(p[2]), "green cast on an edge pixel: {p:?}");
            }
        }
        assert!(edges > 20, "only {edges} soft edge pixels");
        // Without despill the same edge pixels are green-tinted: the test bites.
        let raw = make_sprite(&img, &SpriteOptions { despill: false, ..Default::default() }).unwrap();
        let tinted = raw.image.pixels.chunks_exact(4).filter(|p| p[3] > 0 && p[3] < 255 && p[1] > p[0]).count();
        assert!(tinted > 0);
    }

    #[test]
    fn grey_disc_has_no_green_fringe() {
        // Opaque pixels on the edge (mostly, not fully covered) are despilled too.
        let (img, _) = disc_on_key(64, [128, 128, 128], GREEN);
        let s = make_sprite(&img, &SpriteOptions::default()).unwrap();
        for p in s.image.pixels.chunks_exact(4).filter(|p| p[3] > 0) {
            assert!(p[1] <= p[0].max(p[2]), "green fringe {p:?}");
        }
        assert_eq!(s.bbox, Rect { x: 12, y: 12, width: 40, height: 40 });
    }

    #[test]
    fn premultiplied_rgb_never_exceeds_alpha() {
        let (img, _) = disc_on_key(64, [250, 240, 10], GREEN);
        let o = SpriteOptions { premultiplied: true, feather_radius: 2, ..Default::default() };
        let s = make_sprite(&img, &o).unwrap();
        assert!(s.image.pixels.chunks_exact(4).all(|p| p[0] <= p[3] && p[1] <= p[3] && p[2] <= p[3]));
        assert!(s.image.pixels.chunks_exact(4).any(|p| p[3] > 0 && p[3] < 255 && p[0] > 0));
        // Straight output of the same sprite, premultiplied by hand, agrees.
        let st = make_sprite(&img, &SpriteOptions { premultiplied: false, ..o }).unwrap();
        for (a, b) in st.image.pixels.chunks_exact(4).zip(s.image.pixels.chunks_exact(4)) {
            assert_eq!(a[3], b[3]);
            for c in 0..3 {
                assert_eq!(b[c], ((a[c] as u32 * a[3] as u32 + 127) / 255) as u8);
            }
        }
    }

    #[test]
    fn feathering_softens_and_grows_the_edge() {
        let (img, _) = disc_on_key(64, RED, GREEN);
        let hard = make_sprite(&img, &SpriteOptions::default()).unwrap();
        let soft = make_sprite(&img, &SpriteOptions { feather_radius: 3, ..Default::default() }).unwrap();
        let partial = |s: &Sprite| s.image.pixels.chunks_exact(4).filter(|p| p[3] > 0 && p[3] < 255).count();
        assert!(partial(&soft) > 2 * partial(&hard));
        assert!(soft.bbox.width > hard.bbox.width && soft.bbox.x < hard.bbox.x);
        // The feathered fringe carries the sprite's colour, not the key's.
        assert!(soft.image.pixels.chunks_exact(4).filter(|p| p[3] > 0).all(|p| p[1] <= p[0]));
        // The centre stays opaque.
        let c = (32 * 64 + 32) * 4;
        assert_eq!(soft.image.pixels[c + 3], 255);
    }

    #[test]
    fn detects_a_noisy_key_and_a_given_one() {
        let (mut img, _) = disc_on_key(64, RED, [30, 60, 220]);
        for (i, p) in img.pixels.chunks_exact_mut(4).enumerate() {
            let n = (i * 7919 % 7) as u8; // 0..6
            p[2] = p[2].saturating_sub(n);
        }
        let k = detect_key(&img).unwrap();
        assert!(k[0] == 30 && k[1] == 60 && (214..=220).contains(&k[2]), "{k:?}");
        let s = make_sprite(&img, &SpriteOptions::default()).unwrap();
        assert_eq!(s.bbox, Rect { x: 12, y: 12, width: 40, height: 40 });
        // Blue is dominant in this key, so despilled edges have no blue cast.
        assert!(s.image.pixels.chunks_exact(4).filter(|p| p[3] > 0 && p[3] < 255).all(|p| p[2] <= p[0].max(p[1])));
        // A wrong given key keys nothing out.
        let s = make_sprite(&img, &SpriteOptions { key: Some([255, 255, 255]), ..Default::default() }).unwrap();
        assert_eq!(s.bbox, Rect { x: 0, y: 0, width: 64, height: 64 });
    }

    #[test]
    fn all_key_gives_an_empty_box() {
        let img = Rgba8Image { width: 5, height: 3, pixels: [0u8, 255, 0, 255].repeat(15) };
        let s = make_sprite(&img, &SpriteOptions::default()).unwrap();
        assert!(s.bbox.is_empty());
        assert_eq!(s.bbox, Rect::default());
        assert!(s.image.pixels.chunks_exact(4).all(|p| p == [0, 0, 0, 0]));
    }

    #[test]
    fn bbox_threshold_and_bad_options() {
        let mut img = Rgba8Image { width: 4, height: 4, pixels: vec![0; 64] };
        img.pixels[(4 + 1) * 4 + 3] = 100;
        img.pixels[(2 * 4 + 3) * 4 + 3] = 200;
        assert_eq!(alpha_bbox(&img, 1), Rect { x: 1, y: 1, width: 3, height: 2 });
        assert_eq!(alpha_bbox(&img, 0), alpha_bbox(&img, 1));
        assert_eq!(alpha_bbox(&img, 150), Rect { x: 3, y: 2, width: 1, height: 1 });
        assert!(alpha_bbox(&img, 201).is_empty());
        let bad = [
            SpriteOptions { inner_tolerance: 0.3, outer_tolerance: 0.2, ..Default::default() },
            SpriteOptions { inner_tolerance: -0.1, ..Default::default() },
            SpriteOptions { outer_tolerance: f32::NAN, ..Default::default() },
            SpriteOptions { feather_radius: 65, ..Default::default() },
        ];
        for o in bad {
            assert!(make_sprite(&img, &o).is_err(), "{o:?}");
        }
        let empty = Rgba8Image { width: 0, height: 0, pixels: vec![] };
        assert!(make_sprite(&empty, &SpriteOptions::default()).is_err());
    }
}
