//! `kiln_status`: the result of every fallible call.
use std::ffi::c_char;

use crate::error::ErrorKind;

/// Result of a fallible call. 0 is success; values are grouped by family
/// (1xx argument, 2xx model/IO, 3xx runtime/provider, 4xx flow, 5xx resources,
/// 9xx internal)
/// and never renumbered. `kiln_last_error_message` has the details.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_status {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 100,
    /// An argument is out of range or inconsistent.
    InvalidArgument = 101,
    /// A string argument is not valid UTF-8.
    InvalidUtf8 = 102,
    /// A caller buffer is too small; the needed size was reported.
    BufferTooSmall = 103,
    /// A width, height or tensor shape the model cannot use.
    InvalidSize = 104,
    /// An options struct's `struct_size` is not one this library knows.
    StructSizeMismatch = 105,
    /// A job id that is unknown, stale or already freed.
    InvalidHandle = 106,
    /// A model folder or file does not exist.
    ModelNotFound = 200,
    /// A model file is malformed or not a Stable Diffusion export Kiln reads.
    ModelInvalid = 201,
    /// Reading or writing a file failed.
    Io = 202,
    /// The model or request needs something Kiln does not support.
    Unsupported = 203,
    /// A LoRA or embedding file that does not fit the model: made for another
    /// architecture, keys that match no layer, shapes or ranks that disagree.
    AdapterMismatch = 204,
    /// The ONNX Runtime library could not be loaded.
    RuntimeLoadFailed = 300,
    /// An execution provider is unavailable or failed to register.
    ProviderUnavailable = 301,
    /// ONNX Runtime failed while running a graph.
    InferenceFailed = 302,
    /// The operation was cancelled.
    Cancelled = 400,
    /// The object is busy with another operation.
    Busy = 401,
    /// Memory for the result could not be allocated (the size was within
    /// Kiln's documented limits, but the machine had too little free). Nothing
    /// was changed; the handle stays usable.
    OutOfMemory = 500,
    /// A bug in Kiln, including a caught panic. The handle stays usable.
    Internal = 900,
}

impl From<ErrorKind> for kiln_status {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::NullArgument => Self::NullArgument,
            ErrorKind::InvalidArgument => Self::InvalidArgument,
            ErrorKind::InvalidUtf8 => Self::InvalidUtf8,
            ErrorKind::BufferTooSmall => Self::BufferTooSmall,
            ErrorKind::InvalidSize => Self::InvalidSize,
            ErrorKind::StructSizeMismatch => Self::StructSizeMismatch,
            ErrorKind::ModelNotFound => Self::ModelNotFound,
            ErrorKind::ModelInvalid => Self::ModelInvalid,
            ErrorKind::AdapterMismatch => Self::AdapterMismatch,
            ErrorKind::Io => Self::Io,
            ErrorKind::Unsupported => Self::Unsupported,
            ErrorKind::RuntimeLoad => Self::RuntimeLoadFailed,
            ErrorKind::Provider => Self::ProviderUnavailable,
            ErrorKind::Inference => Self::InferenceFailed,
            ErrorKind::Cancelled => Self::Cancelled,
            ErrorKind::Busy => Self::Busy,
            ErrorKind::InvalidHandle => Self::InvalidHandle,
            ErrorKind::OutOfMemory => Self::OutOfMemory,
            ErrorKind::Internal => Self::Internal,
        }
    }
}

impl kiln_status {
    fn name(self) -> &'static [u8] {
        match self {
            Self::Ok => b"KILN_STATUS_OK\0",
            Self::NullArgument => b"KILN_STATUS_NULL_ARGUMENT\0",
            Self::InvalidArgument => b"KILN_STATUS_INVALID_ARGUMENT\0",
            Self::InvalidUtf8 => b"KILN_STATUS_INVALID_UTF8\0",
            Self::BufferTooSmall => b"KILN_STATUS_BUFFER_TOO_SMALL\0",
            Self::InvalidSize => b"KILN_STATUS_INVALID_SIZE\0",
            Self::StructSizeMismatch => b"KILN_STATUS_STRUCT_SIZE_MISMATCH\0",
            Self::InvalidHandle => b"KILN_STATUS_INVALID_HANDLE\0",
            Self::ModelNotFound => b"KILN_STATUS_MODEL_NOT_FOUND\0",
            Self::ModelInvalid => b"KILN_STATUS_MODEL_INVALID\0",
            Self::Io => b"KILN_STATUS_IO\0",
            Self::Unsupported => b"KILN_STATUS_UNSUPPORTED\0",
            Self::AdapterMismatch => b"KILN_STATUS_ADAPTER_MISMATCH\0",
            Self::RuntimeLoadFailed => b"KILN_STATUS_RUNTIME_LOAD_FAILED\0",
            Self::ProviderUnavailable => b"KILN_STATUS_PROVIDER_UNAVAILABLE\0",
            Self::InferenceFailed => b"KILN_STATUS_INFERENCE_FAILED\0",
            Self::Cancelled => b"KILN_STATUS_CANCELLED\0",
            Self::Busy => b"KILN_STATUS_BUSY\0",
            Self::OutOfMemory => b"KILN_STATUS_OUT_OF_MEMORY\0",
            Self::Internal => b"KILN_STATUS_INTERNAL\0",
        }
    }

    const ALL: [kiln_status; 20] = [
        Self::Ok, Self::NullArgument, Self::InvalidArgument, Self::InvalidUtf8, Self::BufferTooSmall,
        Self::InvalidSize, Self::StructSizeMismatch, Self::InvalidHandle, Self::ModelNotFound, Self::ModelInvalid, Self::Io,
        Self::Unsupported, Self::AdapterMismatch, Self::RuntimeLoadFailed, Self::ProviderUnavailable, Self::InferenceFailed,
        Self::Cancelled, Self::Busy, Self::OutOfMemory, Self::Internal,
    ];
}

/// The constant's name of `status` (e.g. `"KILN_STATUS_OK"`), or
/// `"KILN_STATUS_UNKNOWN"`. The string is static: never free it.
///
/// Takes a plain integer so any value a caller holds is safe to pass.
#[no_mangle]
pub extern "C" fn kiln_status_name(status: u32) -> *const c_char {
    boundary_value!(c"KILN_STATUS_UNKNOWN".as_ptr(), {
        kiln_status::ALL
            .iter()
            .find(|s| **s as u32 == status)
            .map_or(c"KILN_STATUS_UNKNOWN".as_ptr(), |s| s.name().as_ptr().cast())
    })
}
