//! Kiln's RGBA8 pixels → the data of a Godot `Image` in `FORMAT_RGBA8`.
//!
//! Godot's `Image.create_from_data(w, h, false, FORMAT_RGBA8, data)` wants
//! rows top to bottom, tightly packed, 4 bytes per pixel in R, G, B, A order,
//! and exactly `w * h * 4` bytes (or it errors and leaves the image empty).
//! Kiln's `Rgba8Image` is laid out the same way (top row first, unlike
//! Unity's bottom-up textures), so the bytes pass through unflipped; this
//! module checks the sizes Godot would refuse before the engine sees them.
//! [`from_godot_pixels`] goes the other way, for `upscale_image`.
use kiln::image::control::ControlImage;
use kiln::{Error, ErrorKind, Rgba8Image};

/// Godot's `Image::MAX_WIDTH` and `MAX_HEIGHT` (1 << 24).
pub const GODOT_MAX_SIDE: usize = 1 << 24;
/// Godot's `Image::MAX_PIXELS` (1 << 28).
pub const GODOT_MAX_PIXELS: usize = 1 << 28;

/// Arguments for `Image.create_from_data` with `FORMAT_RGBA8`, no mipmaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GodotImageData {
    /// Width in pixels (Godot takes `int`, i.e. i32 here).
    pub width: i32,
    /// Height in pixels.
    pub height: i32,
    /// `width * height * 4` bytes, top row first.
    pub bytes: Vec<u8>,
}

/// Byte offset of pixel (x, y) in Godot's RGBA8 data of an image `width` wide.
pub fn godot_offset(width: usize, x: usize, y: usize) -> usize {
    (y * width + x) * 4
}

/// Checks `image` against Godot's limits and its own length, and returns the
/// data `Image.create_from_data` takes.
pub fn to_godot_rgba8(image: &Rgba8Image) -> Result<GodotImageData, Error> {
    let (w, h) = (image.width, image.height);
    if w == 0 || h == 0 {
        return Err(Error::new(ErrorKind::InvalidSize, format!("a {w}x{h} image has no pixels for Godot")));
    }
    if w > GODOT_MAX_SIDE || h > GODOT_MAX_SIDE || w.saturating_mul(h) > GODOT_MAX_PIXELS {
        return Err(Error::new(
            ErrorKind::InvalidSize,
            format!("a {w}x{h} image exceeds Godot's limits ({GODOT_MAX_SIDE} per side, {GODOT_MAX_PIXELS} pixels)"),
        ));
    }
    let want = w * h * 4;
    if image.pixels.len() != want {
        return Err(Error::new(
            ErrorKind::Internal,
            format!("a {w}x{h} RGBA8 image holds {} bytes, not {want}", image.pixels.len()),
        ));
    }
    Ok(GodotImageData { width: w as i32, height: h as i32, bytes: image.pixels.clone() })
}

/// A Godot image's pixels (8-bit gray, RGB or RGBA, as the node copies them
/// out) as Kiln's RGBA8: gray spread to R, G and B, opaque unless the image
/// has alpha. `what` names the image in errors (INVALID_SIZE for an empty
/// image or data of the wrong length, INVALID_ARGUMENT for other channels).
pub fn from_godot_pixels(image: &ControlImage, what: &str) -> Result<Rgba8Image, Error> {
    let (w, h, c) = (image.width, image.height, image.channels);
    if w == 0 || h == 0 {
        return Err(Error::new(ErrorKind::InvalidSize, format!("{what}: a {w}x{h} image has no pixels")));
    }
    if !matches!(c, 1 | 3 | 4) {
        return Err(Error::new(ErrorKind::InvalidArgument, format!("{what}: an image with {c} channels; expected gray, RGB or RGBA")));
    }
    if Some(image.data.len()) != w.checked_mul(h).and_then(|n| n.checked_mul(c)) {
        return Err(Error::new(ErrorKind::InvalidSize, format!("{what}: a {w}x{h} image with {c} channels holds {} bytes", image.data.len())));
    }
    let pixels = match c {
        1 => image.data.iter().flat_map(|&g| [g, g, g, 255]).collect(),
        3 => image.data.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
        _ => image.data.clone(),
    };
    Ok(Rgba8Image { width: w, height: h, pixels })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3x2 image whose every byte says where it is: R = x, G = y, B = channel marker, A = 255 - index.
    fn marked(w: usize, h: usize) -> Rgba8Image {
        let mut pixels = Vec::with_capacity(w * h * 4);
        for y in 0..h {
            for x in 0..w {
                pixels.extend_from_slice(&[x as u8, y as u8, 0xB0, 255 - (y * w + x) as u8]);
            }
        }
        Rgba8Image { width: w, height: h, pixels }
    }

    #[test]
    fn pixels_land_where_godot_reads_them_top_row_first() {
        let img = marked(3, 2);
        let d = to_godot_rgba8(&img).unwrap();
        assert_eq!((d.width, d.height, d.bytes.len()), (3, 2, 3 * 2 * 4));
        for y in 0..2 {
            for x in 0..3 {
                let o = godot_offset(3, x, y);
                assert_eq!(&d.bytes[o..o + 4], &[x as u8, y as u8, 0xB0, 255 - (y * 3 + x) as u8], "pixel ({x},{y})");
            }
        }
        // Row 0 comes first: no vertical flip (Godot's origin is top-left).
        assert_eq!(d.bytes[1], 0);
        assert_eq!(d.bytes[godot_offset(3, 0, 1) + 1], 1);
    }

    #[test]
    fn sizes_godot_would_refuse_are_errors() {
        let empty = Rgba8Image { width: 0, height: 4, pixels: vec![] };
        assert_eq!(to_godot_rgba8(&empty).unwrap_err().kind(), ErrorKind::InvalidSize);
        let wide = Rgba8Image { width: GODOT_MAX_SIDE + 1, height: 1, pixels: vec![] };
        let e = to_godot_rgba8(&wide).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSize, "{}", e.message());
        let many = Rgba8Image { width: 1 << 15, height: 1 << 14, pixels: vec![] };
        assert!(to_godot_rgba8(&many).unwrap_err().message().contains("exceeds Godot's limits"));
        let short = Rgba8Image { width: 2, height: 2, pixels: vec![0; 15] };
        let e = to_godot_rgba8(&short).unwrap_err();
        assert_eq!(e.message(), "a 2x2 RGBA8 image holds 15 bytes, not 16");
    }

    #[test]
    fn godot_pixels_become_rgba8_gray_and_rgb_opaque() {
        let img = |channels, data: Vec<u8>| ControlImage { width: 2, height: 1, channels, data };
        let rgba = |p: &[u8]| Rgba8Image { width: 2, height: 1, pixels: p.to_vec() };
        assert_eq!(from_godot_pixels(&img(1, vec![7, 9]), "image").unwrap(), rgba(&[7, 7, 7, 255, 9, 9, 9, 255]));
        assert_eq!(from_godot_pixels(&img(3, vec![1, 2, 3, 4, 5, 6]), "image").unwrap(), rgba(&[1, 2, 3, 255, 4, 5, 6, 255]));
        assert_eq!(from_godot_pixels(&img(4, vec![1, 2, 3, 4, 5, 6, 7, 8]), "image").unwrap(), rgba(&[1, 2, 3, 4, 5, 6, 7, 8]));
        let e = from_godot_pixels(&img(2, vec![0; 4]), "image").unwrap_err();
        assert_eq!((e.kind(), e.message()), (ErrorKind::InvalidArgument, "image: an image with 2 channels; expected gray, RGB or RGBA"));
        assert_eq!(from_godot_pixels(&img(3, vec![0; 5]), "image").unwrap_err().kind(), ErrorKind::InvalidSize);
        let empty = ControlImage { width: 0, height: 3, channels: 4, data: vec![] };
        assert_eq!(from_godot_pixels(&empty, "image").unwrap_err().message(), "image: a 0x3 image has no pixels");
    }
}
