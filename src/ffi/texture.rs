//! Texture helpers in the C API: outpainting and making a texture tileable.
//! Both take the picture from `options->init_image` and write a new Kiln image.
use super::boundary::non_null;
use super::handles;
use super::image::kiln_image;
use super::model::{finish_request, kiln_generate_options, kiln_model, request_from};
use super::status::kiln_status;
use crate::error::{Error, Result};
use crate::pipeline::{Generation, GenerateRequest, InitImage};
use crate::Model;
use crate::pipeline::texture::Extend;

/// Extends the picture in `options->init_image` by the given pixels on each
/// side: the new border is inpainted (use `strength` 1.0 for a free fill) and
/// the original pixels are kept exactly. The new size must be a multiple of the
/// model's `size_multiple`. Blocking, as long as a generation: a game queues
/// it with `kiln_job_submit_extend_texture`. Errors: NULL_ARGUMENT,
/// INVALID_ARGUMENT, INVALID_SIZE, and those of `kiln_model_generate`.
#[no_mangle]
pub unsafe extern "C" fn kiln_model_extend_texture(
    model: *const kiln_model,
    options: *const kiln_generate_options,
    left: u32,
    right: u32,
    top: u32,
    bottom: u32,
    image_out: *mut *mut kiln_image,
) -> kiln_status {
    boundary!({
        let extend = Extend { left: left as usize, right: right as usize, top: top as usize, bottom: bottom as usize };
        // SAFETY: the caller's contract is `texture_op`'s.
        unsafe { texture_op(model, options, image_out, "extend", |m, request, picture| m.extend_texture(request, picture, extend)) }
    })
}

/// Makes the picture in `options->init_image` tile seamlessly: it is offset by
/// half its size and a band `band` pixels wide around the resulting central
/// cross is inpainted with the model's seamless view. The result is that
/// offset picture (as a tile, the same texture); pixels outside the band are
/// kept exactly. Blocking, as long as a generation: a game queues it with
/// `kiln_job_submit_make_tileable`. Errors: NULL_ARGUMENT, INVALID_ARGUMENT
/// (no picture, band 0 or wider than half the picture), and those of
/// `kiln_model_generate`.
#[no_mangle]
pub unsafe extern "C" fn kiln_model_make_tileable(
    model: *const kiln_model,
    options: *const kiln_generate_options,
    band: u32,
    image_out: *mut *mut kiln_image,
) -> kiln_status {
    boundary!({
        // SAFETY: the caller's contract is `texture_op`'s.
        unsafe { texture_op(model, options, image_out, "make tileable", |m, request, picture| m.make_tileable(request, picture, band as usize)) }
    })
}

/// The shared body of the texture helpers: checks the arguments, takes the
/// picture out of `options->init_image`, runs `op` and hands its image out.
///
/// # Safety
/// `model` NULL or a live handle, `options` as `kiln_model_generate` takes it,
/// `image_out` NULL or writable.
unsafe fn texture_op(
    model: *const kiln_model,
    options: *const kiln_generate_options,
    image_out: *mut *mut kiln_image,
    what: &str,
    op: impl FnOnce(&Model, &GenerateRequest, &InitImage) -> Result<Generation>,
) -> Result<()> {
    non_null(image_out, "image_out")?;
    // SAFETY: checked non-null.
    unsafe { handles::write_out(image_out, std::ptr::null_mut()) };
    // SAFETY: forwarded caller contract.
    let (m, request, picture) = unsafe { texture_request(model, options, what)? };
    let image = op(m, &request, &picture)?.image.to_rgba8();
    // SAFETY: checked non-null.
    unsafe { handles::write_out(image_out, handles::into_raw::<kiln_image>(image)) };
    Ok(())
}

/// The model, the request and the picture taken out of its `init_image`, for
/// a texture helper called directly or queued as a job.
///
/// # Safety
/// `model` NULL or a live handle, `options` as `kiln_model_generate` takes it.
pub(super) unsafe fn texture_request<'a>(
    model: *const kiln_model,
    options: *const kiln_generate_options,
    what: &str,
) -> Result<(&'a Model, GenerateRequest, InitImage)> {
    // SAFETY: NULL or a live handle; options per the header.
    let m = unsafe { handles::borrow(model)? };
    let mut request = finish_request(m, unsafe { request_from(options)? })?;
    let picture = request
        .init_image
        .take()
        .ok_or_else(|| Error::invalid(format!("options->init_image is NULL: there is no texture to {what}")))?;
    Ok((m, request, picture))
}
