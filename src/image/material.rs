//! Material maps from a colour texture: a height map (luminance) and a
//! tangent-space normal map (Sobel on the height), optionally tileable.
use super::pixel_art::srgb_lut;
use super::Rgba8Image;
use crate::error::{Error, Result};

/// Which way a normal map's green channel points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NormalConvention {
    /// Green is +Y, up the image (OpenGL, Blender, Unity, Godot).
    #[default]
    OpenGl,
    /// Green is +Y down the image (DirectX, Unreal): OpenGL with green inverted.
    DirectX,
}

/// Options of [`material_maps`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaterialOptions {
    /// Radius in pixels of the Gaussian blur (σ = radius / 2) applied to the
    /// height before it is stored and differentiated; 0 = none. At most 256.
    pub blur_radius: u32,
    /// Multiplies the height gradient (height in [0, 1], per pixel) before the
    /// normal is normalized; larger is bumpier; 0 gives a flat map. Finite, ≥ 0.
    pub strength: f32,
    /// Green channel convention of the normal map.
    pub convention: NormalConvention,
    /// Sample across the edges by wrapping around (both axes), so the maps of a
    /// seamless texture tile too. Otherwise edges are clamped.
    pub wrap: bool,
    /// Bright is low instead of high.
    pub invert_height: bool,
}

impl Default for MaterialOptions {
    fn default() -> Self {
        Self { blur_radius: 1, strength: 4.0, convention: NormalConvention::OpenGl, wrap: false, invert_height: false }
    }
}

/// The two maps of [`material_maps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterialMaps {
    /// Height as grey RGB (`round(h * 255)`, linear data, not sRGB), alpha 255.
    pub height: Rgba8Image,
    /// Tangent-space normals, RGB = `round((n * 0.5 + 0.5) * 255)`, alpha 255;
    /// a flat surface is (128, 128, 255).
    pub normal: Rgba8Image,
}

/// The height field: Rec. 709 luminance of the linear-light colour
/// (`0.2126 R + 0.7152 G + 0.0722 B`), in [0, 1], row-major, blurred by
/// `blur_radius`. Alpha is ignored.
pub fn height_field(image: &Rgba8Image, blur_radius: u32, wrap: bool, invert: bool) -> Vec<f32> {
    let lut = srgb_lut();
    let mut h: Vec<f32> = image
        .pixels
        .chunks_exact(4)
        .map(|p| {
            let y = 0.2126 * lut[p[0] as usize] + 0.7152 * lut[p[1] as usize] + 0.0722 * lut[p[2] as usize];
            if invert {
                1.0 - y
            } else {
                y
            }
        })
        .collect();
    blur_plane(&mut h, image.width, image.height, blur_radius, wrap);
    h
}

/// Makes the height and normal maps of `image`; see [`MaterialOptions`].
///
/// The normal at a pixel is `normalize(-s·∂h/∂x, ±s·∂h/∂y, 1)` with the
/// derivatives from the 3×3 Sobel operator (divided by 8, so a ramp of slope
/// 1 per pixel measures 1) and `s` the strength; OpenGL's Y points up the
/// image, DirectX's down. Errors (`InvalidArgument`): a strength that is
/// negative or not finite, a blur radius over 256.
pub fn material_maps(image: &Rgba8Image, options: &MaterialOptions) -> Result<MaterialMaps> {
    if !options.strength.is_finite() || options.strength < 0.0 {
        return Err(Error::invalid(format!("normal strength {} must be finite and ≥ 0", options.strength)));
    }
    if options.blur_radius > 256 {
        return Err(Error::invalid(format!("height blur radius {} is over 256", options.blur_radius)));
    }
    let (w, hgt) = (image.width, image.height);
    let h = height_field(image, options.blur_radius, options.wrap, options.invert_height);
    let mut height = Vec::with_capacity(w * hgt * 4);
    for &v in &h {
        let b = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        height.extend_from_slice(&[b, b, b, 255]);
    }
    let mut normal = Vec::with_capacity(w * hgt * 4);
    let idx = |i: isize, n: usize| -> usize {
        if options.wrap {
            i.rem_euclid(n as isize) as usize
        } else {
            i.clamp(0, n as isize - 1) as usize
        }
    };
    let s = options.strength;
    for y in 0..hgt as isize {
        let rows = [idx(y - 1, hgt), y as usize, idx(y + 1, hgt)];
        for x in 0..w as isize {
            let cols = [idx(x - 1, w), x as usize, idx(x + 1, w)];
            let at = |r: usize, c: usize| h[rows[r] * w + cols[c]];
            let dx = ((at(0, 2) + 2.0 * at(1, 2) + at(2, 2)) - (at(0, 0) + 2.0 * at(1, 0) + at(2, 0))) / 8.0;
            let d_row = ((at(2, 0) + 2.0 * at(2, 1) + at(2, 2)) - (at(0, 0) + 2.0 * at(0, 1) + at(0, 2))) / 8.0;
            // OpenGL: +Y is up the image, so ∂h/∂y = -∂h/∂row and n_y = -∂h/∂y.
            let ny_gl = s * d_row;
            let n = [-s * dx, if options.convention == NormalConvention::OpenGl { ny_gl } else { -ny_gl }, 1.0];
            let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
            let enc = |c: f32| ((c / len * 0.5 + 0.5) * 255.0).round().clamp(0.0, 255.0) as u8;
            normal.extend_from_slice(&[enc(n[0]), enc(n[1]), enc(n[2]), 255]);
        }
    }
    Ok(MaterialMaps {
        height: Rgba8Image { width: w, height: hgt, pixels: height },
        normal: Rgba8Image { width: w, height: hgt, pixels: normal },
    })
}

/// Separable Gaussian blur of a `width × height` plane in place, σ = radius / 2,
/// the kernel cut at `radius`; 0 = no-op. Edges wrap around or clamp.
pub(crate) fn blur_plane(data: &mut [f32], width: usize, height: usize, radius: u32, wrap: bool) {
    if radius == 0 || width == 0 || height == 0 {
        return;
    }
    let r = radius as isize;
    let sigma = radius as f32 / 2.0;
    let mut kernel: Vec<f32> = (-r..=r).map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp()).collect();
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let index = |i: isize, n: usize| -> usize {
        if wrap {
            i.rem_euclid(n as isize) as usize
        } else {
            i.clamp(0, n as isize - 1) as usize
        }
    };
    let mut tmp = vec![0f32; data.len()];
    for y in 0..height {
        let row = &data[y * width..(y + 1) * width];
        for x in 0..width {
            tmp[y * width + x] = kernel.iter().enumerate().map(|(k, kv)| kv * row[index(x as isize + k as isize - r, width)]).sum();
        }
    }
    for y in 0..height {
        for x in 0..width {
            data[y * width + x] =
                kernel.iter().enumerate().map(|(k, kv)| kv * tmp[index(y as isize + k as isize - r, height) * width + x]).sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::image::opaque_test_image as image;

    fn px(img: &Rgba8Image, x: usize, y: usize) -> [u8; 4] {
        let i = (y * img.width + x) * 4;
        [img.pixels[i], img.pixels[i + 1], img.pixels[i + 2], img.pixels[i + 3]]
    }

    fn decode(p: [u8; 4]) -> [f32; 3] {
        [0, 1, 2].map(|c| p[c] as f32 / 255.0 * 2.0 - 1.0)
    }

    /// Periodic in x (period `w`) and y (period `h`).
    fn periodic(w: usize, h: usize) -> Rgba8Image {
        use std::f32::consts::TAU;
        image(w, h, |x, y| {
            let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
            let g = 0.5 + 0.25 * (TAU * u).sin() + 0.2 * (TAU * (2.0 * u + v)).cos();
            let b = (g * 255.0).clamp(0.0, 255.0) as u8;
            [b, b.wrapping_add(10), 90]
        })
    }

    #[test]
    fn flat_input_gives_straight_up_normals() {
        let img = image(9, 7, |_, _| [120, 60, 200]);
        for convention in [NormalConvention::OpenGl, NormalConvention::DirectX] {
            for wrap in [false, true] {
                let o = MaterialOptions { convention, wrap, strength: 10.0, ..Default::default() };
                let m = material_maps(&img, &o).unwrap();
                assert!(m.normal.pixels.chunks_exact(4).all(|p| p == [128, 128, 255, 255]));
                let h = px(&m.height, 3, 3);
                assert!(m.height.pixels.chunks_exact(4).all(|p| p == h));
            }
        }
    }

    #[test]
    fn normals_have_unit_length() {
        let img = periodic(32, 24);
        for strength in [0.5f32, 4.0, 50.0] {
            let m = material_maps(&img, &MaterialOptions { strength, ..Default::default() }).unwrap();
            for p in m.normal.pixels.chunks_exact(4) {
                let n = decode([p[0], p[1], p[2], p[3]]);
                let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
                assert!((len - 1.0).abs() <= 1.0 / 127.0, "|n| = {len} for {p:?}");
                assert!(n[2] > 0.0);
            }
        }
    }

    #[test]
    fn ramps_point_the_right_way_in_each_convention() {
        // Height rises to the right: the surface faces left (-X).
        let right = image(16, 16, |x, _| [(x * 16) as u8; 3]);
        // Height rises down the image: the surface faces up the image.
        let down = image(16, 16, |_, y| [(y * 16) as u8; 3]);
        let gl = MaterialOptions { blur_radius: 0, ..Default::default() };
        let dx = MaterialOptions { convention: NormalConvention::DirectX, ..gl };
        let (x, y) = (8, 8);
        let n = decode(px(&material_maps(&right, &gl).unwrap().normal, x, y));
        assert!(n[0] < -0.05 && n[1].abs() < 0.01, "{n:?}");
        let n = decode(px(&material_maps(&right, &dx).unwrap().normal, x, y));
        assert!(n[0] < -0.05 && n[1].abs() < 0.01, "{n:?}");
        let n = decode(px(&material_maps(&down, &gl).unwrap().normal, x, y));
        assert!(n[1] > 0.05 && n[0].abs() < 0.01, "OpenGL: green up, {n:?}");
        let n = decode(px(&material_maps(&down, &dx).unwrap().normal, x, y));
        assert!(n[1] < -0.05 && n[0].abs() < 0.01, "DirectX: green down, {n:?}");
        // Inverting the height flips the slope.
        let inv = MaterialOptions { invert_height: true, ..gl };
        let n = decode(px(&material_maps(&right, &inv).unwrap().normal, x, y));
        assert!(n[0] > 0.05, "{n:?}");
    }

    #[test]
    fn directx_is_opengl_with_green_inverted() {
        let img = periodic(32, 32);
        let gl = material_maps(&img, &MaterialOptions::default()).unwrap();
        let dx = material_maps(&img, &MaterialOptions { convention: NormalConvention::DirectX, ..Default::default() }).unwrap();
        assert_eq!(gl.height, dx.height);
        for (a, b) in gl.normal.pixels.chunks_exact(4).zip(dx.normal.pixels.chunks_exact(4)) {
            assert_eq!((a[0], a[2], a[3]), (b[0], b[2], b[3]));
            // 255 - g exactly, but for the one tie at 127.5 (both sides round to 128).
            assert!((a[1] as i32 + b[1] as i32 - 255).abs() <= 1, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn wrapped_maps_tile() {
        let (w, h) = (24, 16);
        let tile = periodic(w, h);
        // The same texture tiled twice horizontally.
        let twice = image(2 * w, h, |x, y| {
            let p = px(&tile, x % w, y);
            [p[0], p[1], p[2]]
        });
        let o = MaterialOptions { wrap: true, blur_radius: 2, ..Default::default() };
        let one = material_maps(&tile, &o).unwrap();
        let two = material_maps(&twice, &o).unwrap();
        for y in 0..h {
            for x in 0..2 * w {
                assert_eq!(px(&two.normal, x, y), px(&one.normal, x % w, y), "normal at ({x}, {y})");
                assert_eq!(px(&two.height, x, y), px(&one.height, x % w, y), "height at ({x}, {y})");
            }
        }
        // Continuous across the seam: the wrap edge differs no more than
        // interior neighbours do.
        let seam = crate::image::seam::seam_score(&one.normal, crate::image::seam::Axis::X).unwrap();
        assert!(seam < 2.0, "wrapped normal map seam score {seam}");
        // Without wrap the first column is not what the tiled texture has there.
        let clamped = material_maps(&tile, &MaterialOptions { wrap: false, ..o }).unwrap();
        let differs = (0..h).any(|y| px(&clamped.normal, 0, y) != px(&two.normal, w, y));
        assert!(differs, "clamping should differ from wrapping at the edge");
    }

    #[test]
    fn bad_options_are_errors() {
        let img = image(4, 4, |_, _| [0, 0, 0]);
        for strength in [-1.0f32, f32::NAN, f32::INFINITY] {
            assert!(material_maps(&img, &MaterialOptions { strength, ..Default::default() }).is_err());
        }
        assert!(material_maps(&img, &MaterialOptions { blur_radius: 257, ..Default::default() }).is_err());
    }

    #[test]
    fn blur_preserves_the_mean_when_wrapping() {
        let mut plane: Vec<f32> = (0..64).map(|i| ((i * 37) % 11) as f32).collect();
        let mean: f32 = plane.iter().sum::<f32>() / 64.0;
        blur_plane(&mut plane, 8, 8, 3, true);
        let after: f32 = plane.iter().sum::<f32>() / 64.0;
        assert!((mean - after).abs() < 1e-4);
        let spread = plane.iter().fold(0f32, |m, v| m.max((v - mean).abs()));
        assert!(spread < 5.0);
    }
}
