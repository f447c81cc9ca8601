//! ControlNet in the C API: `kiln_control` entries in the generate options,
//! and the control-image preprocessors usable on their own.
use std::ffi::c_char;

use super::boundary::utf8_arg;
use super::handles;
use super::image::kiln_image;
use super::status::kiln_status;
use crate::error::{Error, Result};
use crate::image::control::{canny, height_to_depth, ControlImage, Preprocess};
use crate::image::Rgba8Image;
use crate::pipeline::control::Control;

/// How a `kiln_control`'s image becomes the control image.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_control_preprocess {
    /// The image is the control image (an edge map, depth or pose made elsewhere).
    None = 0,
    /// Canny edges with `canny_low` / `canny_high` (OpenCV's `cv2.Canny`).
    Canny = 1,
    /// A height map (bright = high) as the depth control, stretched to 0..255.
    Height = 2,
    /// The picture itself, for tile ControlNets.
    Tile = 3,
}

/// One ControlNet for a generation (`kiln_generate_options.controls`). Fill
/// with `kiln_control_init`, then set `controlnet` and `image`. Borrowed for
/// the call (copied before a job is queued).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kiln_control {
    /// `sizeof(kiln_control)`, set by `kiln_control_init`.
    pub struct_size: u32,
    /// A `kiln_control_preprocess` value. Default NONE.
    pub preprocess: u32,
    /// UTF-8 name of the ControlNet: a folder under the model's `controlnet/`.
    pub controlnet: *const c_char,
    /// The control image (any size with the output's aspect ratio; resized).
    pub image: *const kiln_image,
    /// Conditioning scale (diffusers' `controlnet_conditioning_scale`). Default 1.
    pub scale: f32,
    /// Fraction of the schedule before the ControlNet starts, 0..1. Default 0.
    pub start: f32,
    /// Fraction of the schedule after which it stops, 0..1. Default 1.
    pub end: f32,
    /// Canny's lower threshold (preprocess CANNY). Default 100.
    pub canny_low: f32,
    /// Canny's upper threshold. Default 200.
    pub canny_high: f32,
    /// Reserved; 0.
    pub reserved: u32,
}

const CONTROL_V1: usize = std::mem::size_of::<kiln_control>();

fn default_control() -> kiln_control {
    kiln_control {
        struct_size: CONTROL_V1 as u32,
        preprocess: kiln_control_preprocess::None as u32,
        controlnet: std::ptr::null(),
        image: std::ptr::null(),
        scale: 1.0,
        start: 0.0,
        end: 1.0,
        canny_low: 100.0,
        canny_high: 200.0,
        reserved: 0,
    }
}

/// Fills `control` with defaults, including `struct_size`. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn kiln_control_init(control: *mut kiln_control) {
    boundary_void!({
        if !control.is_null() {
            // SAFETY: non-null; the caller passes a writable struct.
            unsafe { control.write(default_control()) };
        }
    })
}

fn control_image(img: &Rgba8Image) -> ControlImage {
    ControlImage { width: img.width, height: img.height, channels: 4, data: img.pixels.clone() }
}

fn to_rgba(img: &ControlImage) -> Result<Rgba8Image> {
    let rgb = img.to_rgb()?;
    let pixels = rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    Ok(Rgba8Image { width: img.width, height: img.height, pixels })
}

/// Reads the `count` entries of a `kiln_control` array.
///
/// # Safety
/// `controls` must point to `count` structs of the size their first field
/// states, each `image` NULL or a live handle, each `controlnet` NULL or
/// NUL-terminated.
pub(crate) unsafe fn controls_from(controls: *const kiln_control, count: usize) -> Result<Vec<Control>> {
    // SAFETY: the caller's promise, passed on.
    let entries = unsafe { super::lora::versioned_array(controls, count, default_control(), &[], "controls")? };
    let mut out = Vec::with_capacity(count);
    for (i, c) in entries.into_iter().enumerate() {
        // SAFETY: NUL-terminated per the header.
        let name = unsafe { utf8_arg(c.controlnet, &format!("controls[{i}].controlnet"))? };
        // SAFETY: NULL or a live handle.
        let img = unsafe { handles::borrow(c.image) }.map_err(|e| e.context(format!("controls[{i}].image")))?;
        let preprocess = match c.preprocess {
            0 => Preprocess::None,
            1 => Preprocess::Canny { low: c.canny_low, high: c.canny_high },
            2 => Preprocess::Height,
            3 => Preprocess::Tile,
            other => return Err(Error::invalid(format!("controls[{i}].preprocess {other} is not a kiln_control_preprocess"))),
        };
        out.push(Control { controlnet: name.to_string(), image: control_image(img), preprocess, scale: c.scale, start: c.start, end: c.end });
    }
    Ok(out)
}

/// Canny edges of `image` as OpenCV's `cv2.Canny(gray, low, high)` finds them
/// (the image made gray with OpenCV's weights, alpha ignored): a new image,
/// white edges on black, alpha 255. Errors: NULL_ARGUMENT, INVALID_ARGUMENT
/// (negative or non-finite thresholds).
#[no_mangle]
pub unsafe extern "C" fn kiln_image_canny(image: *const kiln_image, low: f32, high: f32, edges_out: *mut *mut kiln_image) -> kiln_status {
    boundary!({
        super::boundary::non_null(edges_out, "edges_out")?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(edges_out, std::ptr::null_mut()) };
        // SAFETY: NULL or a live handle.
        let img = unsafe { handles::borrow(image)? };
        let edges = to_rgba(&canny(&control_image(img), low, high)?)?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(edges_out, handles::into_raw::<kiln_image>(edges)) };
        Ok(())
    })
}

/// A height map (bright = high, gray or colour) as a depth-ControlNet image:
/// gray, its range stretched to 0..255. Errors: NULL_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn kiln_image_height_to_depth(image: *const kiln_image, depth_out: *mut *mut kiln_image) -> kiln_status {
    boundary!({
        super::boundary::non_null(depth_out, "depth_out")?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(depth_out, std::ptr::null_mut()) };
        // SAFETY: NULL or a live handle.
        let img = unsafe { handles::borrow(image)? };
        let depth = to_rgba(&height_to_depth(&control_image(img))?)?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(depth_out, handles::into_raw::<kiln_image>(depth)) };
        Ok(())
    })
}
