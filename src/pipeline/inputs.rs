//! Reading img2img pictures and inpainting masks from PNG files, as the
//! command-line tools (`generate --init-image/--mask`) do. The bytes come from
//! a file a user picked, so they are untrusted: the decoder's sizes are capped
//! at Kiln's image limits before it allocates, and every failure is a status
//! (`INVALID_ARGUMENT` for an unreadable PNG, `INVALID_SIZE` for one too big),
//! never a panic or an abort.
use std::path::Path;

use super::{InitImage, Mask};
use crate::error::{Error, ErrorKind, Result};
use crate::image::limits::MAX_IMAGE_SIDE;

/// Most bytes the PNG decoder may hold at once: an RGBA16 picture of 8192²
/// (512 MiB, the `image` crate's own default, kept explicit here).
const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

/// Decodes PNG bytes into an RGB8 init image (alpha dropped, 16-bit and
/// palette or grey pictures converted as the `image` crate does).
pub fn init_image_from_png(bytes: &[u8]) -> Result<InitImage> {
    let img = decode(bytes, "init image")?.to_rgb8();
    Ok(InitImage { width: img.width() as usize, height: img.height() as usize, rgb: img.into_raw() })
}

/// Decodes PNG bytes into an inpainting mask (converted to 8-bit luma).
pub fn mask_from_png(bytes: &[u8]) -> Result<Mask> {
    let img = decode(bytes, "mask")?.to_luma8();
    Ok(Mask { width: img.width() as usize, height: img.height() as usize, data: img.into_raw() })
}

/// Reads a PNG file as an init image; the message names the file.
pub fn read_init_image(path: &Path) -> Result<InitImage> {
    init_image_from_png(&read(path)?).map_err(|e| e.context(path.display()))
}

/// Reads a PNG file as an inpainting mask; the message names the file.
pub fn read_mask(path: &Path) -> Result<Mask> {
    mask_from_png(&read(path)?).map_err(|e| e.context(path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::new(ErrorKind::Io, format!("cannot read {}: {e}", path.display())))
}

fn decode(bytes: &[u8], what: &str) -> Result<image::DynamicImage> {
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Png);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE as u32);
    limits.max_image_height = Some(MAX_IMAGE_SIDE as u32);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(e) => Error::new(
            ErrorKind::InvalidSize,
            format!("the {what} PNG is too large ({e}); Kiln reads pictures up to {MAX_IMAGE_SIDE} pixels a side"),
        ),
        e => Error::invalid(format!("the {what} is not a readable PNG: {e}")),
    })?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::new(ErrorKind::InvalidSize, format!("the {what} PNG has no pixels ({}x{})", img.width(), img.height())));
    }
    Ok(img)
}
