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

/// Decodes PNG bytes into RGBA8 (what the bake tool reads back to pack atlases).
pub fn rgba_from_png(bytes: &[u8]) -> Result<crate::image::Rgba8Image> {
    let img = decode(bytes, "picture")?.to_rgba8();
    Ok(crate::image::Rgba8Image { width: img.width() as usize, height: img.height() as usize, pixels: img.into_raw() })
}

/// Reads a PNG file as RGBA8; the message names the file.
pub fn read_rgba(path: &Path) -> Result<crate::image::Rgba8Image> {
    rgba_from_png(&read(path)?).map_err(|e| e.context(path.display()))
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
    check_palette(bytes, what)?;
    // The decoder is third-party code fed untrusted bytes: should a malformed
    // file still reach a panic in it, the caller gets a status, not an unwound
    // bake tool or engine thread.
    std::panic::catch_unwind(|| decode_checked(bytes, what)).unwrap_or_else(|_| {
        Err(Error::invalid(format!("the {what} is not a readable PNG: the decoder failed on malformed data")))
    })
}

/// Refuses a PLTE chunk that is not a whole number of RGB entries (1 to 256).
/// `png` 0.18.1 (the newest) indexes past such a palette and panics while
/// expanding it; found by the `png_inputs` fuzz target. Chunks are walked as
/// far as the bytes go; anything else malformed is left to the decoder.
fn check_palette(bytes: &[u8], what: &str) -> Result<()> {
    const SIGNATURE: usize = 8;
    let mut at = SIGNATURE;
    while let Some(header) = at.checked_add(8).and_then(|end| bytes.get(at..end)) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = &header[4..8];
        if kind == b"PLTE" && (len == 0 || !len.is_multiple_of(3) || len > 256 * 3) {
            return Err(Error::invalid(format!(
                "the {what} is not a readable PNG: its palette (PLTE) has {len} bytes, not 1 to 256 RGB entries"
            )));
        }
        if kind == b"IDAT" || kind == b"IEND" {
            break; // PLTE must come before the image data
        }
        at = match at.checked_add(12).and_then(|a| a.checked_add(len)) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(())
}

fn decode_checked(bytes: &[u8], what: &str) -> Result<image::DynamicImage> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Rgba8Image;

    /// CRC-32 (ISO-HDLC, as PNG chunks use), bit by bit: only for the test.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
            }
        }
        !c
    }

    /// A real 3x2 RGBA PNG whose IHDR then claims `width` x `height`.
    fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let img = Rgba8Image { width: 3, height: 2, pixels: (0..24).collect() };
        let mut png = img.encode_png_with_text(&[]).unwrap();
        // Signature (8), IHDR length (4), "IHDR" (4), then width and height.
        png[16..20].copy_from_slice(&width.to_be_bytes());
        png[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    }

    #[test]
    fn reads_pictures_and_masks_at_their_size() {
        let png = png_claiming(3, 2);
        let init = init_image_from_png(&png).unwrap();
        assert_eq!((init.width, init.height, init.rgb.len()), (3, 2, 18));
        assert_eq!(&init.rgb[..6], &[0, 1, 2, 4, 5, 6]);
        let mask = mask_from_png(&png).unwrap();
        assert_eq!((mask.width, mask.height, mask.data.len()), (3, 2, 6));
        let rgba = rgba_from_png(&png).unwrap();
        assert_eq!((rgba.width, rgba.height), (3, 2));
        assert_eq!(rgba.pixels, (0..24).collect::<Vec<u8>>());
    }

    #[test]
    fn huge_or_broken_pngs_are_statuses_before_any_allocation() {
        // Over the side limit, and within it but over the decoder's memory cap
        // (16000² RGBA is 1 GB): INVALID_SIZE, without allocating the picture.
        for (w, h) in [(100_000, 100_000), (16_385, 1), (16_000, 16_000)] {
            let e = init_image_from_png(&png_claiming(w, h)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidSize, "{w}x{h}: {}", e.message());
            assert_eq!(mask_from_png(&png_claiming(w, h)).unwrap_err().kind(), ErrorKind::InvalidSize);
        }
        let png = png_claiming(3, 2);
        for broken in [&b""[..], b"not a png", &png[..png.len() / 2]] {
            let e = init_image_from_png(broken).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", e.message());
        }
    }

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        let crc = crc32(&c[4..]);
        c.extend_from_slice(&crc.to_be_bytes());
        c
    }

    /// A 2x1 8-bit palette PNG whose PLTE chunk holds `palette`.
    fn palette_png(palette: &[u8]) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let ihdr = [0, 0, 0, 2, 0, 0, 0, 1, 8, 3, 0, 0, 0];
        png.extend(chunk(b"IHDR", &ihdr));
        png.extend(chunk(b"PLTE", palette));
        // One row: filter 0, indices 0 and 1; zlib stored block.
        let row = [0u8, 0, 1];
        let mut z = vec![0x78, 0x01, 1, row.len() as u8, 0, !(row.len() as u8), 0xff];
        z.extend_from_slice(&row);
        let (mut a, mut b) = (1u32, 0u32);
        for &x in &row {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        z.extend_from_slice(&((b << 16) | a).to_be_bytes());
        png.extend(chunk(b"IDAT", &z));
        png.extend(chunk(b"IEND", &[]));
        png
    }

    #[test]
    fn palettes_that_are_not_whole_rgb_entries_are_refused() {
        let good = init_image_from_png(&palette_png(&[10, 20, 30, 40, 50, 60])).unwrap();
        assert_eq!(good.rgb, [10, 20, 30, 40, 50, 60]);
        // 4 and 7 bytes made `png` 0.18.1 index past the palette and panic.
        for palette in [&[1u8, 2, 3, 4][..], &[1, 2, 3, 4, 5, 6, 7], &[], &[0; 769]] {
            let e = init_image_from_png(&palette_png(palette)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", e.message());
            assert!(e.message().contains("PLTE"), "{}", e.message());
            assert_eq!(mask_from_png(&palette_png(palette)).unwrap_err().kind(), ErrorKind::InvalidArgument);
            assert_eq!(rgba_from_png(&palette_png(palette)).unwrap_err().kind(), ErrorKind::InvalidArgument);
        }
    }
}
