//! Texture helpers built on inpainting: extend a texture past its borders
//! (outpainting), and make an existing texture tile seamlessly.
use super::{GenerateRequest, Generation, Hooks, InitImage, Mask};
use crate::error::{Error, ErrorKind, Result};
use crate::model::Model;

/// Pixels to add on each side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extend {
    /// Columns added on the left.
    pub left: usize,
    /// Columns added on the right.
    pub right: usize,
    /// Rows added on top.
    pub top: usize,
    /// Rows added at the bottom.
    pub bottom: usize,
}

impl Model {
    /// Outpaints `image` by `extend` pixels: the new border starts as the
    /// nearest edge pixels and is inpainted (strength from `request`, usually
    /// 1.0); the original pixels are kept exactly. The new size must be a
    /// multiple of the model's size multiple.
    pub fn extend_texture(&self, request: &GenerateRequest, image: &InitImage, extend: Extend) -> Result<Generation> {
        self.extend_texture_with(request, image, extend, Hooks::default())
    }

    /// Checks, before any work, that `image` can be extended by `extend`;
    /// returns the extended size. Errors as [`Model::extend_texture`]'s.
    pub fn check_extend(&self, image: &InitImage, extend: Extend) -> Result<(usize, usize)> {
        check_image(image)?;
        // Checked before anything is allocated: a caller may ask for 2^31 pixels a side.
        let side = |a: usize, b: usize, c: usize| a.checked_add(b).and_then(|n| n.checked_add(c)).unwrap_or(usize::MAX);
        let (w, h) = (side(image.width, extend.left, extend.right), side(image.height, extend.top, extend.bottom));
        if w > super::MAX_GENERATE_SIDE || h > super::MAX_GENERATE_SIDE {
            return Err(Error::new(
                ErrorKind::InvalidSize,
                format!(
                    "the extended texture would be {w}x{h}; each side must be at most {}",
                    super::MAX_GENERATE_SIDE
                ),
            ));
        }
        let multiple = self.info().size_multiple;
        if w % multiple != 0 || h % multiple != 0 {
            return Err(Error::new(
                ErrorKind::InvalidSize,
                format!("the extended texture would be {w}x{h}; it must be a multiple of {multiple} on both axes"),
            ));
        }
        Ok((w, h))
    }

    /// As [`Model::extend_texture`], observed by `hooks` (how a job runs it).
    pub fn extend_texture_with(&self, request: &GenerateRequest, image: &InitImage, extend: Extend, hooks: Hooks<'_>) -> Result<Generation> {
        let (w, h) = self.check_extend(image, extend)?;
        let mut rgb = vec![0u8; w * h * 3];
        let mut mask = vec![255u8; w * h];
        for y in 0..h {
            for x in 0..w {
                let sx = x.saturating_sub(extend.left).min(image.width - 1);
                let sy = y.saturating_sub(extend.top).min(image.height - 1);
                let inside = x >= extend.left && x < extend.left + image.width && y >= extend.top && y < extend.top + image.height;
                rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&image.rgb[(sy * image.width + sx) * 3..(sy * image.width + sx) * 3 + 3]);
                if inside {
                    mask[y * w + x] = 0;
                }
            }
        }
        let r = GenerateRequest {
            width: w,
            height: h,
            init_image: Some(InitImage { width: w, height: h, rgb }),
            mask: Some(Mask { width: w, height: h, data: mask }),
            // The kept pixels come out exactly, whatever the U-Net.
            paste_unmasked: request.paste_unmasked.or(Some(true)),
            ..request.clone()
        };
        self.generate_with(&r, hooks)
    }

    /// Makes `image` tile seamlessly: it is offset by half its size so its
    /// wrap seams meet in a cross through the middle, and a band `band` pixels
    /// wide around that cross is inpainted with a seamless (xy) view of the
    /// model. The result is that offset picture (as a tile it is the same
    /// texture): its edges are the former middle, which already joined up, and
    /// pixels outside the band are kept exactly.
    pub fn make_tileable(&self, request: &GenerateRequest, image: &InitImage, band: usize) -> Result<Generation> {
        self.make_tileable_with(request, image, band, Hooks::default())
    }

    /// Checks, before any work, that `image` can be made tileable with a
    /// band of `band` pixels. Errors as [`Model::make_tileable`]'s.
    pub fn check_tileable(&self, image: &InitImage, band: usize) -> Result<()> {
        check_image(image)?;
        if band == 0 || band * 2 >= image.width.min(image.height) {
            return Err(Error::invalid(format!("band {band} must be between 1 and half the texture's smaller side")));
        }
        Ok(())
    }

    /// As [`Model::make_tileable`], observed by `hooks` (how a job runs it).
    pub fn make_tileable_with(&self, request: &GenerateRequest, image: &InitImage, band: usize, hooks: Hooks<'_>) -> Result<Generation> {
        self.check_tileable(image, band)?;
        let (w, h) = (image.width, image.height);
        let (dx, dy) = (w / 2, h / 2);
        let roll = |src: &[u8], ch: usize, ox: usize, oy: usize| -> Vec<u8> {
            let mut out = vec![0u8; src.len()];
            for y in 0..h {
                for x in 0..w {
                    let (tx, ty) = ((x + ox) % w, (y + oy) % h);
                    out[(ty * w + tx) * ch..(ty * w + tx) * ch + ch].copy_from_slice(&src[(y * w + x) * ch..(y * w + x) * ch + ch]);
                }
            }
            out
        };
        let rolled = roll(&image.rgb, 3, dx, dy);
        let half = band / 2;
        let mut mask = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                let near_v = x + half >= dx && x < dx + band - half;
                let near_h = y + half >= dy && y < dy + band - half;
                if near_v || near_h {
                    mask[y * w + x] = 255;
                }
            }
        }
        let r = GenerateRequest {
            width: w,
            height: h,
            init_image: Some(InitImage { width: w, height: h, rgb: rolled }),
            mask: Some(Mask { width: w, height: h, data: mask }),
            // The kept pixels come out exactly, whatever the U-Net.
            paste_unmasked: request.paste_unmasked.or(Some(true)),
            ..request.clone()
        };
        let tiled = self.seamless(crate::model::seamless::Seamless::Xy)?;
        tiled.generate_with(&r, hooks)
    }
}

fn check_image(image: &InitImage) -> Result<()> {
    if image.width == 0 || image.height == 0 || image.rgb.len() != image.width * image.height * 3 {
        return Err(Error::new(
            ErrorKind::InvalidSize,
            format!("picture of {}x{} needs {} RGB bytes, got {}", image.width, image.height, image.width * image.height * 3, image.rgb.len()),
        ));
    }
    Ok(())
}
