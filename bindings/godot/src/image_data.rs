//! Kiln's RGBA8 pixels → the data of a Godot `Image` in `FORMAT_RGBA8`.
//!
//! Godot's `Image.create_from_data(w, h, false, FORMAT_RGBA8, data)` wants
//! rows top to bottom, tightly packed, 4 bytes per pixel in R, G, B, A order,
//! and exactly `w * h * 4` bytes (or it errors and leaves the image empty).
//! Kiln's `Rgba8Image` is laid out the same way (top row first, unlike
//! Unity's bottom-up textures), so the bytes pass through unflipped; this
//! module checks the sizes Godot would refuse before the engine sees them.
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
}
