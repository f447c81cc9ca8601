//! DDS output: a mip chain filtered with wrap-around on the seamless axes (so a
//! tiling texture still tiles at every level), block-compressed with Intel's
//! ISPC texture compressor ([`crate::ispc`]) and stored with `ddsfile` in a DX10
//! header: colour as BC1/BC3/BC7 sRGB, normal maps as BC5 (X and Y; engines
//! rebuild Z), height maps as BC4.
use ddsfile::{AlphaMode, D3D10ResourceDimension, Dds, DxgiFormat, NewDxgiParams};
use kiln::model::seamless::Seamless;
use kiln::Rgba8Image;

use crate::manifest::Format;

/// What the pixels mean, which decides how they are filtered and compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// sRGB colour with straight alpha; filtered in linear light.
    Colour,
    /// Tangent-space normals as `(n * 0.5 + 0.5) * 255`; filtered, then renormalized.
    Normal,
    /// Linear grey height in R (G and B equal it).
    Height,
}

/// Linear-light value of an sRGB byte.
fn srgb_to_linear(v: u8) -> f32 {
    let c = v as f32 / 255.0;
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

fn linear_to_srgb(c: f32) -> u8 {
    let c = c.clamp(0.0, 1.0);
    let s = if c <= 0.003_130_8 { c * 12.92 } else { 1.055 * c.powf(1.0 / 2.4) - 0.055 };
    (s * 255.0).round() as u8
}

/// Float RGBA plane for filtering.
struct Plane {
    w: usize,
    h: usize,
    px: Vec<[f32; 4]>,
}

fn decode(image: &Rgba8Image, content: Content) -> Plane {
    let px = image
        .pixels
        .chunks_exact(4)
        .map(|p| match content {
            Content::Colour => [srgb_to_linear(p[0]), srgb_to_linear(p[1]), srgb_to_linear(p[2]), p[3] as f32 / 255.0],
            Content::Normal => [p[0] as f32 / 127.5 - 1.0, p[1] as f32 / 127.5 - 1.0, p[2] as f32 / 127.5 - 1.0, p[3] as f32 / 255.0],
            Content::Height => [p[0] as f32 / 255.0, p[1] as f32 / 255.0, p[2] as f32 / 255.0, p[3] as f32 / 255.0],
        })
        .collect();
    Plane { w: image.width, h: image.height, px }
}

fn encode(plane: &Plane, content: Content) -> Rgba8Image {
    let unit = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let mut pixels = Vec::with_capacity(plane.px.len() * 4);
    for p in &plane.px {
        match content {
            Content::Colour => pixels.extend_from_slice(&[linear_to_srgb(p[0]), linear_to_srgb(p[1]), linear_to_srgb(p[2]), unit(p[3])]),
            Content::Normal => {
                let len = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt().max(1e-6);
                let n = |v: f32| unit((v / len) * 0.5 + 0.5);
                pixels.extend_from_slice(&[n(p[0]), n(p[1]), n(p[2]), unit(p[3])]);
            }
            Content::Height => pixels.extend_from_slice(&[unit(p[0]), unit(p[1]), unit(p[2]), unit(p[3])]),
        }
    }
    Rgba8Image { width: plane.w, height: plane.h, pixels }
}

/// Index `i` (may be out of range) into `0..n`: wrapped or clamped.
fn address(i: isize, n: usize, wrap: bool) -> usize {
    let n = n as isize;
    if wrap {
        i.rem_euclid(n) as usize
    } else {
        i.clamp(0, n - 1) as usize
    }
}

/// Halves one axis with the 4-tap [1 3 3 1] / 8 filter (a linear
/// interpolation at the new pixel centres, widened so no source pixel is
/// dropped). Taps past the edge wrap when `wrap`, else clamp.
fn halve(src: &Plane, horizontal: bool, wrap: bool) -> Plane {
    const TAPS: [(isize, f32); 4] = [(-1, 0.125), (0, 0.375), (1, 0.375), (2, 0.125)];
    let (w, h) = if horizontal { ((src.w / 2).max(1), src.h) } else { (src.w, (src.h / 2).max(1)) };
    let n = if horizontal { src.w } else { src.h };
    let mut px = vec![[0f32; 4]; w * h];
    if n == 1 {
        px.copy_from_slice(&src.px);
        return Plane { w, h, px };
    }
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 4];
            for (off, weight) in TAPS {
                let (sx, sy) = if horizontal {
                    (address(2 * x as isize + off, src.w, wrap), y)
                } else {
                    (x, address(2 * y as isize + off, src.h, wrap))
                };
                let s = src.px[sy * src.w + sx];
                for c in 0..4 {
                    acc[c] += weight * s[c];
                }
            }
            px[y * w + x] = acc;
        }
    }
    Plane { w, h, px }
}

/// The full mip chain of `image` down to 1×1, level 0 being `image` itself.
pub fn mip_chain(image: &Rgba8Image, content: Content, seamless: Seamless) -> Vec<Rgba8Image> {
    let (wrap_x, wrap_y) = (seamless.wraps_x(), seamless.wraps_y());
    let mut levels = vec![image.clone()];
    let mut plane = decode(image, content);
    while plane.w > 1 || plane.h > 1 {
        if plane.w > 1 {
            plane = halve(&plane, true, wrap_x);
        }
        if plane.h > 1 {
            plane = halve(&plane, false, wrap_y);
        }
        levels.push(encode(&plane, content));
    }
    levels
}

/// Pads a level to whole 4×4 blocks (the compressor works on blocks) by
/// repeating it, which wraps seamless textures correctly and only adds
/// pixels that the DDS size never shows.
#[cfg_attr(not(kiln_ispc_kernels), allow(dead_code))]
fn pad_to_blocks(level: &Rgba8Image) -> Rgba8Image {
    let (w, h) = (level.width.div_ceil(4) * 4, level.height.div_ceil(4) * 4);
    if (w, h) == (level.width, level.height) {
        return level.clone();
    }
    let mut pixels = Vec::with_capacity(w * h * 4);
    for y in 0..h {
        for x in 0..w {
            let i = ((y % level.height) * level.width + x % level.width) * 4;
            pixels.extend_from_slice(&level.pixels[i..i + 4]);
        }
    }
    Rgba8Image { width: w, height: h, pixels }
}

/// Block-compresses one level. Only where the kernels were linked: a MinGW
/// build whose `build.rs` found no kernel library writes PNG and says so for DDS.
#[cfg(not(kiln_ispc_kernels))]
fn compress(_level: &Rgba8Image, _content: Content, _format: Format) -> Result<Vec<u8>, String> {
    Err("DDS block compression is not available in this build of kiln-bake: its build found no ISPC \
         kernel library (see KILN_ISPC_KERNEL_LIB in the README); use format = \"png\", or rebuild"
        .into())
}

/// Block-compresses one level.
#[cfg(kiln_ispc_kernels)]
fn compress(level: &Rgba8Image, content: Content, format: Format) -> Result<Vec<u8>, String> {
    use crate::ispc::{self, Pixels};
    let padded = pad_to_blocks(level);
    let (width, height) = (padded.width, padded.height);
    Ok(match content {
        Content::Colour => {
            let rgba = Pixels { data: &padded.pixels, width, height };
            match format {
                Format::DdsBc1 => ispc::bc1(&rgba),
                Format::DdsBc3 => ispc::bc3(&rgba),
                _ => ispc::bc7(&rgba, padded.pixels.chunks_exact(4).all(|p| p[3] == 255)),
            }
        }
        Content::Normal => {
            let rg: Vec<u8> = padded.pixels.chunks_exact(4).flat_map(|p| [p[0], p[1]]).collect();
            ispc::bc5(&Pixels { data: &rg, width, height })
        }
        Content::Height => {
            let r: Vec<u8> = padded.pixels.chunks_exact(4).map(|p| p[0]).collect();
            ispc::bc4(&Pixels { data: &r, width, height })
        }
    })
}

/// The DXGI format a file of `content` gets.
pub fn dxgi_format(content: Content, format: Format) -> DxgiFormat {
    match (content, format) {
        (Content::Normal, _) => DxgiFormat::BC5_UNorm,
        (Content::Height, _) => DxgiFormat::BC4_UNorm,
        (Content::Colour, Format::DdsBc1) => DxgiFormat::BC1_UNorm_sRGB,
        (Content::Colour, Format::DdsBc3) => DxgiFormat::BC3_UNorm_sRGB,
        (Content::Colour, _) => DxgiFormat::BC7_UNorm_sRGB,
    }
}

/// A whole DDS file of `image`: one level, or the full wrap-aware mip chain.
pub fn encode_dds(image: &Rgba8Image, content: Content, format: Format, mipmaps: bool, seamless: Seamless) -> Result<Vec<u8>, String> {
    let levels = if mipmaps { mip_chain(image, content, seamless) } else { vec![image.clone()] };
    let mut dds = Dds::new_dxgi(NewDxgiParams {
        height: image.height as u32,
        width: image.width as u32,
        depth: None,
        format: dxgi_format(content, format),
        mipmap_levels: Some(levels.len() as u32),
        array_layers: None,
        caps2: None,
        is_cubemap: false,
        resource_dimension: D3D10ResourceDimension::Texture2D,
        alpha_mode: if content == Content::Colour { AlphaMode::Straight } else { AlphaMode::Opaque },
    })
    .map_err(|e| format!("DDS header: {e}"))?;
    let data: Vec<u8> = levels.iter().map(|l| compress(l, content, format)).collect::<Result<Vec<_>, _>>()?.concat();
    if data.len() != dds.data.len() {
        return Err(format!("DDS data is {} bytes; the header expects {}", data.len(), dds.data.len()));
    }
    dds.data = data;
    let mut bytes = Vec::new();
    dds.write(&mut bytes).map_err(|e| format!("DDS write: {e}"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln::image::seam::{seam_score, Axis};

    /// Smooth noise that tiles: a sum of sines with whole periods.
    fn tiling(w: usize, h: usize) -> Rgba8Image {
        let mut pixels = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let (u, v) = (x as f32 / w as f32 * std::f32::consts::TAU, y as f32 / h as f32 * std::f32::consts::TAU);
                let a = 0.5 + 0.25 * (3.0 * u).sin() + 0.2 * (2.0 * v + u).cos();
                let b = 0.5 + 0.3 * (5.0 * v).sin() * (u).cos();
                pixels.extend_from_slice(&[(a * 255.0) as u8, (b * 255.0) as u8, 90, 255]);
            }
        }
        Rgba8Image { width: w, height: h, pixels }
    }

    #[test]
    fn mip_sizes_run_down_to_one_pixel() {
        let levels = mip_chain(&tiling(64, 16), Content::Colour, Seamless::Xy);
        let sizes: Vec<(usize, usize)> = levels.iter().map(|l| (l.width, l.height)).collect();
        assert_eq!(sizes, vec![(64, 16), (32, 8), (16, 4), (8, 2), (4, 1), (2, 1), (1, 1)]);
    }

    /// `img` rolled left by `dx` and up by `dy` pixels (wrapping).
    fn roll(img: &Rgba8Image, dx: usize, dy: usize) -> Rgba8Image {
        let mut pixels = Vec::with_capacity(img.pixels.len());
        for y in 0..img.height {
            for x in 0..img.width {
                let i = (((y + dy) % img.height) * img.width + (x + dx) % img.width) * 4;
                pixels.extend_from_slice(&img.pixels[i..i + 4]);
            }
        }
        Rgba8Image { width: img.width, height: img.height, pixels }
    }

    #[test]
    fn wrapped_mips_are_shift_equivariant_so_every_level_tiles() {
        // With wrap-around filtering the wrap edge is like any other place:
        // rolling the base by 2^L pixels rolls level L by exactly one pixel.
        // Clamping breaks that at the edges.
        let base = tiling(64, 32);
        for (seamless, exact) in [(Seamless::Xy, true), (Seamless::None, false)] {
            let levels = mip_chain(&base, Content::Colour, seamless);
            for l in 1..levels.len() - 1 {
                let shift = 1 << l;
                let rolled = mip_chain(&roll(&base, shift, shift), Content::Colour, seamless);
                let (lw, lh) = (levels[l].width, levels[l].height);
                let same = rolled[l] == roll(&levels[l], 1 % lw, 1 % lh);
                // (Clamping can happen to agree on a level of a few pixels.)
                if exact || lw.min(lh) >= 4 {
                    assert_eq!(same, exact, "{seamless:?} level {l} ({lw}x{lh})");
                }
            }
        }
        // And the seam score, printed for the record: clamped levels show the edge more.
        let wrapped = mip_chain(&base, Content::Colour, Seamless::Xy);
        let clamped = mip_chain(&base, Content::Colour, Seamless::None);
        for (i, (w, c)) in wrapped.iter().zip(&clamped).enumerate().skip(1).take(3) {
            let (sw, sc) = (seam_score(w, Axis::X).unwrap(), seam_score(c, Axis::X).unwrap());
            println!("level {i} X: wrapped {sw:.3}, clamped {sc:.3}");
            assert!(sc > sw, "level {i}: clamping should show at the edge ({sc} vs {sw})");
        }
        // Only the seamless axis wraps.
        let x_only = mip_chain(&base, Content::Colour, Seamless::X);
        let rolled = mip_chain(&roll(&base, 2, 0), Content::Colour, Seamless::X);
        assert_eq!(rolled[1], roll(&x_only[1], 1, 0));
    }

    #[test]
    fn normals_stay_unit_length_and_files_have_the_expected_size() {
        let flat = Rgba8Image { width: 8, height: 8, pixels: [128u8, 128, 255, 255].repeat(64) };
        let levels = mip_chain(&flat, Content::Normal, Seamless::None);
        assert!(levels.iter().all(|l| l.pixels.chunks_exact(4).all(|p| p == [128, 128, 255, 255])));
        let bytes = encode_dds(&tiling(64, 32), Content::Colour, Format::DdsBc7, true, Seamless::Xy).unwrap();
        // magic + header + DX10 header, then 16 bytes per block over 7 levels.
        let blocks: usize = [(16, 8), (8, 4), (4, 2), (2, 1), (1, 1), (1, 1), (1, 1)].iter().map(|(w, h)| w * h).sum();
        assert_eq!(bytes.len(), 4 + 124 + 20 + 16 * blocks);
        let one = encode_dds(&tiling(64, 32), Content::Height, Format::DdsBc7, false, Seamless::Xy).unwrap();
        assert_eq!(one.len(), 4 + 124 + 20 + 8 * 16 * 8);
    }
}
