//! Entry points for the cargo-fuzz targets in `fuzz/` (issue 14): the parsers
//! and validators that take untrusted bytes but are private to the crate.
//! Hidden from the documentation and not part of Kiln's API; each function
//! runs the same code the library runs on that input, and returns its result
//! so a target can check properties of it.
use crate::error::Result;
use crate::ffi::model::kiln_generate_options;
use crate::ffi::postprocess::kiln_sprite_options;
use crate::ffi::runtime::kiln_runtime_options;
use crate::model::onnx_proto::{self, Message};
use crate::pipeline::{InitImage, Mask};

/// `kiln_model_generate`'s validation of its options (everything before the
/// model is touched).
///
/// # Safety
/// As the header says for `kiln_generate_options`: NULL, or `struct_size`
/// readable bytes whose pointers are NULL or valid for their lengths.
pub unsafe fn generate_options(options: *const kiln_generate_options) -> Result<crate::GenerateRequest> {
    // SAFETY: forwarded contract.
    unsafe { crate::ffi::model::request_from(options) }
}

/// `kiln_runtime_create`'s validation of its options (everything before
/// ONNX Runtime is loaded).
///
/// # Safety
/// As [`generate_options`], for `kiln_runtime_options`.
pub unsafe fn runtime_options(options: *const kiln_runtime_options) -> Result<crate::RuntimeOptions> {
    // SAFETY: forwarded contract.
    unsafe { crate::ffi::runtime::runtime_options_from(options) }
}

/// The sprite calls' validation of `kiln_sprite_options`.
///
/// # Safety
/// As [`generate_options`], for `kiln_sprite_options`.
pub unsafe fn sprite_options(options: *const kiln_sprite_options) -> Result<()> {
    // SAFETY: forwarded contract.
    unsafe { crate::ffi::postprocess::read_sprite_options(options) }.map(|_| ())
}

/// What the pipeline makes of an img2img picture and an inpainting mask for
/// a `width` x `height` request with 8x latents: the `[1, 3, H, W]` tensor
/// (resized when sizes differ) and, with a mask, the binarized masks.
pub fn prepare_img2img(init: &InitImage, mask: Option<&Mask>, width: usize, height: usize) -> Result<()> {
    crate::pipeline::init_image_tensor(init, width, height)?;
    if let Some(mask) = mask {
        crate::pipeline::inpaint_mask(mask, init, width, height, 8, 4)?;
    }
    Ok(())
}

/// Kiln's protobuf reader on one buffer: the message parse, its lossless
/// re-serialization (returned, to compare with the input), and the streaming
/// readers Kiln runs on every graph file at load.
pub fn onnx_reader(bytes: &[u8]) -> Result<Vec<u8>> {
    let _ = onnx_proto::declared_io(std::io::Cursor::new(bytes));
    let _ = onnx_proto::graph_summary(std::io::Cursor::new(bytes));
    Ok(Message::parse(bytes)?.to_bytes())
}
