//! Images out of the pipeline: float RGB from the VAE, RGBA8 for engines, and
//! copies into caller-owned buffers with a row pitch.
pub mod control;
pub mod limits;
pub mod material;
pub mod npy;
pub mod pixel_art;
pub mod resize;
pub mod seam;
pub mod sprite;

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// Float RGB, row-major HWC, values in [0, 1]; what diffusers returns with
/// `output_type="np"`.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` values.
    pub data: Vec<f32>,
}

/// 8-bit RGBA, row-major, tightly packed, sRGB, straight alpha.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgba8Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 4` bytes.
    pub pixels: Vec<u8>,
}

impl FloatImage {
    /// Quantizes to RGBA8 (alpha 255) as diffusers' `numpy_to_pil` does:
    /// `round(x * 255)` with ties to even.
    pub fn to_rgba8(&self) -> Rgba8Image {
        let mut pixels = Vec::with_capacity(self.width * self.height * 4);
        for rgb in self.data.chunks_exact(3) {
            for &c in rgb {
                pixels.push(quantize(c));
            }
            pixels.push(255);
        }
        Rgba8Image { width: self.width, height: self.height, pixels }
    }
}

fn quantize(c: f32) -> u8 {
    (c.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8
}

impl Rgba8Image {
    /// Bytes needed for a caller buffer with the given row pitch, or `None`
    /// when that does not fit in `usize`.
    pub fn required_len(&self, row_pitch: usize) -> Option<usize> {
        limits::pitched_len(row_pitch, self.width * 4, self.height)
    }

    /// Copies the pixels into `dst`, each row starting `row_pitch` bytes after
    /// the previous (0 = tightly packed). Bytes between rows are left untouched.
    /// A pitch whose `pitch * (height - 1)` overflows is `BufferTooSmall` (no
    /// buffer can be that large).
    pub fn copy_to(&self, dst: &mut [u8], row_pitch: usize) -> Result<()> {
        let row = self.width * 4;
        let pitch = if row_pitch == 0 { row } else { row_pitch };
        if pitch < row {
            return Err(Error::invalid(format!("row pitch {pitch} is smaller than one row ({row} bytes)")));
        }
        let Some(need) = self.required_len(pitch) else {
            return Err(Error::new(
                ErrorKind::BufferTooSmall,
                format!("a {}x{} RGBA8 image with row pitch {pitch} needs more bytes than fit in size_t", self.width, self.height),
            ));
        };
        if dst.len() < need {
            return Err(Error::new(
                ErrorKind::BufferTooSmall,
                format!("buffer holds {} bytes; a {}x{} RGBA8 image with row pitch {pitch} needs {need}", dst.len(), self.width, self.height),
            ));
        }
        for (y, src) in self.pixels.chunks_exact(row.max(1)).enumerate() {
            dst[y * pitch..y * pitch + row].copy_from_slice(src);
        }
        Ok(())
    }

    /// Encodes a PNG in memory, with optional `tEXt` chunks (key, value).
    pub fn encode_png_with_text(&self, text: &[(&str, &str)]) -> Result<Vec<u8>> {
        let fail = |e: &dyn std::fmt::Display| Error::internal(format!("PNG encoding failed: {e}"));
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_source_srgb(png::SrgbRenderingIntent::Perceptual);
        for (k, v) in text {
            encoder.add_text_chunk(k.to_string(), v.to_string()).map_err(|e| fail(&e))?;
        }
        let mut writer = encoder.write_header().map_err(|e| fail(&e))?;
        writer.write_image_data(&self.pixels).map_err(|e| fail(&e))?;
        writer.finish().map_err(|e| fail(&e))?;
        Ok(bytes)
    }

    /// Writes a PNG file, with optional `tEXt` chunks (key, value).
    pub fn save_png_with_text(&self, path: &Path, text: &[(&str, &str)]) -> Result<()> {
        let bytes = self.encode_png_with_text(text)?;
        std::fs::write(path, bytes).map_err(|e| Error::new(ErrorKind::Io, format!("cannot write {}: {e}", path.display())))
    }

    /// Writes a PNG file.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        self.save_png_with_text(path, &[])
    }
}

/// An opaque `w`×`h` test image whose pixel (x, y) has the colour `f(x, y)`.
#[cfg(test)]
pub(crate) fn opaque_test_image(w: usize, h: usize, f: impl Fn(usize, usize) -> [u8; 3]) -> Rgba8Image {
    let mut pixels = Vec::with_capacity(w * h * 4);
    for y in 0..h {
        for x in 0..w {
            let c = f(x, y);
            pixels.extend_from_slice(&[c[0], c[1], c[2], 255]);
        }
    }
    Rgba8Image { width: w, height: h, pixels }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_rounds_like_numpy() {
        assert_eq!(quantize(0.0), 0);
        assert_eq!(quantize(1.0), 255);
        assert_eq!(quantize(2.0), 255);
        assert_eq!(quantize(-1.0), 0);
        assert_eq!(quantize(0.5), 128); // 127.5 -> 128 (even)
    }

    #[test]
    fn copy_respects_pitch_and_size() {
        let img = Rgba8Image { width: 2, height: 2, pixels: (0..16).collect() };
        let mut buf = vec![0xAAu8; 12 + 8];
        img.copy_to(&mut buf, 12).unwrap();
        assert_eq!(&buf[0..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(&buf[8..12], &[0xAA; 4]);
        assert_eq!(&buf[12..20], &[8, 9, 10, 11, 12, 13, 14, 15]);
        let mut small = vec![0u8; 19];
        assert_eq!(img.copy_to(&mut small, 12).unwrap_err().kind(), ErrorKind::BufferTooSmall);
        assert_eq!(img.copy_to(&mut buf, 4).unwrap_err().kind(), ErrorKind::InvalidArgument);
        // A pitch whose `pitch * (height - 1)` wraps must not pass the length check.
        assert_eq!(img.copy_to(&mut buf, usize::MAX).unwrap_err().kind(), ErrorKind::BufferTooSmall);
        assert_eq!(img.copy_to(&mut buf, usize::MAX / 2 + 1).unwrap_err().kind(), ErrorKind::BufferTooSmall);
    }
}
