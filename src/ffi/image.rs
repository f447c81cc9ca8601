//! `kiln_image`: an RGBA8 image owned by Kiln.
use std::ffi::c_char;
use std::path::Path;

use super::boundary::{non_null, utf8_arg};
use super::handles::{self, Handle};
use super::status::kiln_status;
use crate::image::Rgba8Image;

/// An RGBA8 image (sRGB, straight alpha, rows tightly packed) owned by Kiln.
/// Immutable: may be read from several threads. Free with `kiln_image_free`.
pub struct kiln_image {
    _private: [u8; 0],
}

impl Handle for kiln_image {
    type Target = Rgba8Image;
    const NAME: &'static str = "image";
}

/// Width in pixels; 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn kiln_image_width(image: *const kiln_image) -> u32 {
    boundary_value!(0, {
        // SAFETY: NULL or a live handle.
        unsafe { handles::borrow(image) }.map_or(0, |i| i.width as u32)
    })
}

/// Height in pixels; 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn kiln_image_height(image: *const kiln_image) -> u32 {
    boundary_value!(0, {
        // SAFETY: NULL or a live handle.
        unsafe { handles::borrow(image) }.map_or(0, |i| i.height as u32)
    })
}

/// The pixels (`width * height * 4` bytes, row pitch `width * 4`), valid until
/// the image is freed; NULL for NULL. Never free this pointer.
#[no_mangle]
pub unsafe extern "C" fn kiln_image_pixels(image: *const kiln_image) -> *const u8 {
    boundary_value!(std::ptr::null(), {
        // SAFETY: NULL or a live handle.
        unsafe { handles::borrow(image) }.map_or(std::ptr::null(), |i| i.pixels.as_ptr())
    })
}

/// Copies the pixels into a caller buffer with a row pitch (0 = `width * 4`).
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (pitch smaller than a row),
/// BUFFER_TOO_SMALL.
#[no_mangle]
pub unsafe extern "C" fn kiln_image_copy(image: *const kiln_image, pixels_out: *mut u8, pixels_len: usize, row_pitch: usize) -> kiln_status {
    boundary!({
        // SAFETY: NULL or a live handle.
        let img = unsafe { handles::borrow(image)? };
        non_null(pixels_out, "pixels_out")?;
        // SAFETY: the caller guarantees pixels_len writable bytes.
        let dst = unsafe { std::slice::from_raw_parts_mut(pixels_out, pixels_len) };
        img.copy_to(dst, row_pitch)
    })
}

/// Writes the image as a PNG file at the UTF-8 `path`.
/// Errors: NULL_ARGUMENT, INVALID_UTF8, IO.
#[no_mangle]
pub unsafe extern "C" fn kiln_image_write_png(image: *const kiln_image, path: *const c_char) -> kiln_status {
    boundary!({
        // SAFETY: NULL or a live handle; NUL-terminated string.
        let img = unsafe { handles::borrow(image)? };
        let path = unsafe { utf8_arg(path, "path")? };
        img.save_png(Path::new(path))
    })
}

/// Frees an image. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn kiln_image_free(image: *mut kiln_image) {
    boundary_void!({
        // SAFETY: NULL or a handle Kiln returned.
        unsafe { handles::free(image) }
    })
}
