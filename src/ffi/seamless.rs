//! Seamless (tileable) textures in the C API.
use super::boundary::non_null;
use super::handles;
use super::model::kiln_model;
use super::status::kiln_status;
use crate::error::Error;
use crate::model::seamless::Seamless;

/// Which axes an image tiles along.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_seamless {
    /// Ordinary padding: the image does not tile.
    None = 0,
    /// Tiles left-right.
    X = 1,
    /// Tiles top-bottom.
    Y = 2,
    /// Tiles both ways.
    Xy = 3,
}

/// Makes a model handle whose images tile along `axes` (a `kiln_seamless`):
/// the U-Net's and VAE decoder's convolutions are rewritten at load time to
/// wrap around instead of padding with zeros. The rewritten graphs are made
/// once per setting and shared; the new handle is freed with
/// `kiln_model_free` independently of `model`. Errors: NULL_ARGUMENT,
/// INVALID_ARGUMENT, MODEL_INVALID / UNSUPPORTED (a graph Kiln cannot rewrite).
#[no_mangle]
pub unsafe extern "C" fn kiln_model_seamless(model: *const kiln_model, axes: u32, model_out: *mut *mut kiln_model) -> kiln_status {
    boundary!({
        non_null(model_out, "model_out")?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(model_out, std::ptr::null_mut()) };
        // SAFETY: NULL or a live handle.
        let m = unsafe { handles::borrow(model)? };
        let axes = match axes {
            0 => Seamless::None,
            1 => Seamless::X,
            2 => Seamless::Y,
            3 => Seamless::Xy,
            other => return Err(Error::invalid(format!("axes {other} is not a kiln_seamless"))),
        };
        let variant = m.seamless(axes)?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(model_out, handles::into_raw::<kiln_model>(variant)) };
        Ok(())
    })
}
