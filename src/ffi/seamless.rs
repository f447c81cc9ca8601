//! Seamless (tileable) textures in the C API.
use super::boundary::non_null;
use super::handles;
use super::model::kiln_model;
use super::status::kiln_status;
use crate::error::{Error, Result};
use crate::model::seamless::Seamless;

/// A `kiln_seamless` value from C; `what` names the argument in the message.
pub(crate) fn seamless_from_c(axes: u32, what: &str) -> Result<Seamless> {
    match axes {
        0 => Ok(Seamless::None),
        1 => Ok(Seamless::X),
        2 => Ok(Seamless::Y),
        3 => Ok(Seamless::Xy),
        other => Err(Error::invalid(format!("{what} {other} is not a kiln_seamless"))),
    }
}

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
/// `kiln_model_free` independently of `model`. The view holds its own U-Net
/// and decoder beside `model`'s plain ones; a game that only wants tileable
/// output loads with `kiln_model_load_with` and `seamless` set instead, and
/// never loads the plain ones. Errors: NULL_ARGUMENT,
/// INVALID_ARGUMENT, MODEL_INVALID / UNSUPPORTED (a graph Kiln cannot rewrite).
#[no_mangle]
pub unsafe extern "C" fn kiln_model_seamless(model: *const kiln_model, axes: u32, model_out: *mut *mut kiln_model) -> kiln_status {
    boundary!({
        non_null(model_out, "model_out")?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(model_out, std::ptr::null_mut()) };
        // SAFETY: NULL or a live handle.
        let m = unsafe { handles::borrow(model)? };
        let axes = seamless_from_c(axes, "axes")?;
        let variant = m.seamless(axes)?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(model_out, handles::into_raw::<kiln_model>(variant)) };
        Ok(())
    })
}
