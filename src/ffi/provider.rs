//! Execution providers in the C API: what this build has, what the loaded
//! ONNX Runtime has, and what each graph of a model got.
use std::ffi::c_char;

use super::boundary::{clear_string_outs, non_null, write_string};
use super::handles;
use super::model::kiln_model;
use super::runtime::kiln_runtime;
use super::status::kiln_status;
use crate::error::Error;
use crate::runtime::providers::{available_in_runtime, Provider};

/// Execution providers; values go in `kiln_runtime_options.providers`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_provider {
    /// ONNX Runtime's CPU provider (always present).
    Cpu = 0,
    /// NVIDIA CUDA (ship the `onnxruntime-gpu` runtime).
    Cuda = 1,
    /// NVIDIA TensorRT (`onnxruntime-gpu` plus TensorRT libraries).
    Tensorrt = 2,
    /// DirectML on Windows (`onnxruntime-directml`).
    Directml = 3,
    /// Apple CoreML.
    Coreml = 4,
}

/// The graphs of a model, for `kiln_model_graph_provider`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_graph {
    /// `text_encoder/model.onnx`.
    TextEncoder = 0,
    /// `unet/model.onnx`.
    Unet = 1,
    /// `vae_decoder/model.onnx`.
    VaeDecoder = 2,
}

/// Bit `1 << p` is set for every `kiln_provider` p compiled into this build.
#[no_mangle]
pub extern "C" fn kiln_providers_compiled() -> u32 {
    boundary_value!(1, { Provider::ALL.iter().filter(|p| p.compiled_in()).fold(0u32, |m, p| m | (1 << *p as u32)) })
}

/// Sets `*available_out` to 1 if the loaded ONNX Runtime includes `provider`
/// (it may still be unusable, e.g. without a GPU driver), else 0.
#[no_mangle]
pub unsafe extern "C" fn kiln_runtime_provider_available(
    runtime: *const kiln_runtime,
    provider: u32,
    available_out: *mut u32,
) -> kiln_status {
    boundary!({
        non_null(available_out, "available_out")?;
        // SAFETY: checked non-null; zeroed on entry.
        unsafe { handles::write_out(available_out, 0) };
        // SAFETY: NULL or a live handle.
        let _rt = unsafe { handles::borrow(runtime)? };
        let p = Provider::from_u32(provider).ok_or_else(|| Error::invalid(format!("provider {provider} is not a kiln_provider")))?;
        let has = available_in_runtime().iter().any(|n| n == p.ort_name());
        // SAFETY: checked non-null.
        unsafe { handles::write_out(available_out, has as u32) };
        Ok(())
    })
}

/// Copies which execution provider runs `graph` (a `kiln_graph`), e.g.
/// `"CUDAExecutionProvider"`, followed in parentheses by why any requested
/// provider was skipped (string convention: see `kiln_last_error_message`).
#[no_mangle]
pub unsafe extern "C" fn kiln_model_graph_provider(
    model: *const kiln_model,
    graph: u32,
    buf: *mut c_char,
    buf_len: usize,
    len_out: *mut usize,
) -> kiln_status {
    boundary!({
        // SAFETY: forwarded caller contract.
        unsafe { clear_string_outs(buf, buf_len, len_out) };
        // SAFETY: NULL or a live handle.
        let m = unsafe { handles::borrow(model)? };
        let text = match graph {
            0 => m.inner.text_encoder.provider.describe(),
            1 => m.inner.unet.provider.describe(),
            2 => m.inner.vae_decoder.provider.describe(),
            other => return Err(Error::invalid(format!("graph {other} is not a kiln_graph"))),
        };
        // SAFETY: forwarded caller contract.
        unsafe { write_string(&text, buf, buf_len, len_out) }
    })
}
