//! Super-resolution in the C API: load an ESRGAN-family ONNX graph once, then
//! upscale textures and sprites with it, tile by tile and seamless where asked.
use std::ffi::c_char;
use std::path::Path;
use std::sync::Arc;

use super::boundary::{non_null, read_versioned, utf8_arg};
use super::handles::{self, Handle};
use super::image::kiln_image;
use super::runtime::kiln_runtime;
use super::seamless::seamless_from_c;
use super::status::kiln_status;
use crate::error::{Error, Result};
use crate::model::upscaler::{UpscaleAlpha, UpscaleOptions, Upscaler};

/// A loaded super-resolution graph (`kiln_upscaler_load`). Thread-safe: calls
/// on one upscaler may come from several threads (its graph runs one window
/// at a time). Free it only when no direct call on it is in progress; jobs
/// queued with `kiln_job_submit_upscale` keep what they need of it.
pub struct kiln_upscaler {
    _private: [u8; 0],
}

impl Handle for kiln_upscaler {
    // Shared, so a queued upscale job keeps the graph after `kiln_upscaler_free`.
    type Target = Arc<Upscaler>;
    const NAME: &'static str = "upscaler";
}

/// How an image with transparency has its alpha upscaled.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_upscale_alpha {
    /// Through the graph as a grey image (crisp sprite edges; twice the work).
    Graph = 0,
    /// Bilinear (half-pixel centres; wraps on seamless axes).
    Bilinear = 1,
}

/// How `kiln_upscaler_upscale` works through an image. Fill with
/// `kiln_upscale_options_init`; NULL = defaults. Accepted `struct_size`:
/// `sizeof(kiln_upscale_options)` only (one layout published).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kiln_upscale_options {
    /// `sizeof(kiln_upscale_options)`, set by `kiln_upscale_options_init`.
    pub struct_size: u32,
    /// Tile side in input pixels: the graph runs on one tile (plus context)
    /// at a time, which bounds memory. 0 = the whole image in one run.
    /// Default 256. Ignored for graphs with a fixed input size (each window
    /// is that size).
    pub tile: u32,
    /// Extra input pixels read on each side of a tile and discarded, so tile
    /// edges do not show. Default 16. With a fixed input size at most
    /// `(size - 1) / 2` is used.
    pub context: u32,
    /// A `kiln_seamless` value: axes along which the image tiles. Windows then
    /// read across the border from the other side, so the result tiles too.
    /// Default `KILN_SEAMLESS_NONE`.
    pub seamless: u32,
    /// A `kiln_upscale_alpha` value (used only when the image has
    /// transparency). Default `KILN_UPSCALE_ALPHA_GRAPH`.
    pub alpha: u32,
}

const UPSCALE_OPTIONS_V1: usize = std::mem::size_of::<kiln_upscale_options>();

fn default_upscale_options() -> kiln_upscale_options {
    let d = UpscaleOptions::default();
    kiln_upscale_options {
        struct_size: UPSCALE_OPTIONS_V1 as u32,
        tile: d.tile,
        context: d.context,
        seamless: 0,
        alpha: kiln_upscale_alpha::Graph as u32,
    }
}

/// Fills `options` with defaults, including `struct_size`. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn kiln_upscale_options_init(options: *mut kiln_upscale_options) {
    boundary_void!({
        if !options.is_null() {
            // SAFETY: non-null; the caller passes a writable struct.
            unsafe { options.write(default_upscale_options()) };
        }
    })
}

/// Reads options from C; NULL = defaults.
///
/// # Safety
/// `options` is NULL or points to `struct_size` readable bytes.
pub(super) unsafe fn read_upscale_options(options: *const kiln_upscale_options) -> Result<UpscaleOptions> {
    let o = if options.is_null() {
        default_upscale_options()
    } else {
        // SAFETY: non-null; the caller's struct holds struct_size bytes.
        unsafe { read_versioned(options, default_upscale_options(), &[UPSCALE_OPTIONS_V1], "options")? }
    };
    let alpha = match o.alpha {
        0 => UpscaleAlpha::Graph,
        1 => UpscaleAlpha::Bilinear,
        other => return Err(Error::invalid(format!("options->alpha {other} is not a kiln_upscale_alpha"))),
    };
    Ok(UpscaleOptions { tile: o.tile, context: o.context, seamless: seamless_from_c(o.seamless, "options->seamless")?, alpha })
}

/// Loads a super-resolution graph (ESRGAN, Real-ESRGAN, SwinIR, ... exported
/// to ONNX): `path` is a UTF-8 path to a folder holding `model.onnx` and
/// optionally `config.json`, or to an ONNX file whose settings, if any, are
/// in the `.json` of the same name beside it. The graph takes one float
/// `[1, 3, H, W]` RGB image in 0..1 and returns `[1, 3, s*H, s*W]`; H and W
/// may be fixed or dynamic. Settings (all optional): `{"scale": 4,
/// "multiple": 1}` (`multiple`: dynamic windows are rounded up to it, for
/// nets that downsample inside). Without `scale`, Kiln reads it from fixed
/// output dimensions or finds it with one run on a small blank window.
/// Runs with `runtime`'s providers, threads and logging, and keeps what it
/// needs of `runtime` alive, so either may be destroyed first.
/// On failure `*upscaler_out` is NULL. Errors: NULL_ARGUMENT, INVALID_UTF8,
/// MODEL_NOT_FOUND (no such file), MODEL_INVALID (not a graph of that shape,
/// a bad settings file, a scale that is not a whole number from 1 to 16 or
/// contradicts the graph), IO, INFERENCE_FAILED (the probe run failed).
#[no_mangle]
pub unsafe extern "C" fn kiln_upscaler_load(
    runtime: *const kiln_runtime,
    path: *const c_char,
    upscaler_out: *mut *mut kiln_upscaler,
) -> kiln_status {
    boundary!({
        non_null(upscaler_out, "upscaler_out")?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(upscaler_out, std::ptr::null_mut()) };
        // SAFETY: NULL or a live handle; NULL or a NUL-terminated string.
        let rt = unsafe { handles::borrow(runtime)? };
        let path = unsafe { utf8_arg(path, "path")? };
        let upscaler = Upscaler::load(rt, Path::new(path))?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(upscaler_out, handles::into_raw::<kiln_upscaler>(Arc::new(upscaler))) };
        Ok(())
    })
}

/// Frees an upscaler. NULL is a no-op. Its upscale jobs, queued or running,
/// go on: each holds the graph until it ends.
#[no_mangle]
pub unsafe extern "C" fn kiln_upscaler_free(upscaler: *mut kiln_upscaler) {
    boundary_void!({
        // SAFETY: NULL or a handle from kiln_upscaler_load.
        unsafe { handles::free(upscaler) }
    })
}

/// Writes the upscaler's scale (output pixels per input pixel along each
/// axis: 2, 4, ...) to `*scale_out` (0 on failure). Errors: NULL_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn kiln_upscaler_scale(upscaler: *const kiln_upscaler, scale_out: *mut u32) -> kiln_status {
    boundary!({
        non_null(scale_out, "scale_out")?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(scale_out, 0) };
        // SAFETY: NULL or a live handle.
        let u = unsafe { handles::borrow(upscaler)? };
        // SAFETY: checked non-null.
        unsafe { handles::write_out(scale_out, u.scale()) };
        Ok(())
    })
}

/// Upscales `image` by the upscaler's scale into a new image in
/// `*image_out` (freed with `kiln_image_free`; `image` is left as it is).
/// The graph runs one tile plus `context` at a time, so memory stays bounded
/// for any size; tiles whose context reaches as far as the net's receptive
/// field equal one whole-image run. On `seamless` axes the image is treated
/// as the tiling it stands for, so a tileable texture stays tileable. Alpha
/// (when any pixel is not opaque) is upscaled as `options->alpha` says; a
/// fully opaque image stays opaque. Output: clamped to 0..1 and rounded to
/// bytes, straight alpha.
///
/// Blocking and heavy (ESRGAN at its published size: about 8 s for 256x256 to
/// 1024x1024 on two CPU cores, docs/benchmarks.md): never call it on a game's
/// main thread; queue it with `kiln_job_submit_upscale` instead (or call it
/// from a thread of your own).
/// `kiln_upscaler_cancel` from another thread stops it. `options` NULL =
/// defaults. On failure `*image_out` is NULL and the upscaler stays usable.
/// Errors: NULL_ARGUMENT, STRUCT_SIZE_MISMATCH, INVALID_ARGUMENT (an unknown
/// `seamless` or `alpha`, `context` over 1024), INVALID_SIZE (the result
/// would be over 16384 pixels a side), CANCELLED, MODEL_INVALID (the graph
/// returned another size than scale times its input, or NaN),
/// INFERENCE_FAILED, OUT_OF_MEMORY.
#[no_mangle]
pub unsafe extern "C" fn kiln_upscaler_upscale(
    upscaler: *const kiln_upscaler,
    image: *const kiln_image,
    options: *const kiln_upscale_options,
    image_out: *mut *mut kiln_image,
) -> kiln_status {
    boundary!({
        non_null(image_out, "image_out")?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(image_out, std::ptr::null_mut()) };
        // SAFETY: NULL or live handles.
        let u = unsafe { handles::borrow(upscaler)? };
        let img = unsafe { handles::borrow(image)? };
        // SAFETY: NULL or a struct of struct_size bytes.
        let opts = unsafe { read_upscale_options(options)? };
        let out = u.upscale(img, &opts)?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(image_out, handles::into_raw::<kiln_image>(out)) };
        Ok(())
    })
}

/// Stops every `kiln_upscaler_upscale` on `upscaler` in progress on other
/// threads, and every running upscale job on it: each returns (or ends)
/// CANCELLED within one graph run. Queued jobs still run. Calls that start
/// afterwards run normally. Safe from any thread. Errors: NULL_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn kiln_upscaler_cancel(upscaler: *const kiln_upscaler) -> kiln_status {
    boundary!({
        // SAFETY: NULL or a live handle.
        let u = unsafe { handles::borrow(upscaler)? };
        u.cancel();
        Ok(())
    })
}
