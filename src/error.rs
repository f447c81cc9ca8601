//! Kiln's error type. Every failure carries a kind (which becomes a C status
//! code) and a message meant for a person, with ONNX Runtime's own text kept.
use std::fmt;

/// What went wrong, coarsely; each kind maps to one `kiln_status` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A required pointer was null.
    NullArgument,
    /// An argument is out of range or contradicts another.
    InvalidArgument,
    /// A string argument is not valid UTF-8.
    InvalidUtf8,
    /// A caller buffer is too small for the result.
    BufferTooSmall,
    /// A width/height the model cannot produce.
    InvalidSize,
    /// A versioned options struct has a `struct_size` this build does not know.
    StructSizeMismatch,
    /// A file or folder of the model does not exist.
    ModelNotFound,
    /// A model file exists but is malformed or not what Kiln expects.
    ModelInvalid,
    /// A LoRA or embedding file that does not fit the model (another
    /// architecture, unmatched keys, disagreeing shapes or ranks).
    AdapterMismatch,
    /// Reading or writing a file failed.
    Io,
    /// The ONNX Runtime library could not be loaded.
    RuntimeLoad,
    /// An execution provider is unavailable or failed to register.
    Provider,
    /// ONNX Runtime failed while running a graph.
    Inference,
    /// The operation was cancelled.
    Cancelled,
    /// The object is busy (e.g. a job has not finished yet).
    Busy,
    /// A handle or id that is unknown, stale or already freed.
    InvalidHandle,
    /// A feature the model or build does not support.
    Unsupported,
    /// Memory for a result within Kiln's limits could not be allocated.
    OutOfMemory,
    /// A bug in Kiln (including a caught panic).
    Internal,
}

/// An error with a kind and a readable message.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// Kiln's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Makes an error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Prefixes the message with context, keeping the kind.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub(crate) fn model(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ModelInvalid, message)
    }
    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// Wraps an ONNX Runtime error raised while running `graph`.
    pub(crate) fn inference(graph: &str, e: ort::Error) -> Self {
        let text = e.to_string();
        // ORT reports RunOptions::terminate as an error; surface it as cancellation.
        if text.contains("terminate") || text.contains("Terminate") {
            return Self::new(ErrorKind::Cancelled, format!("{graph}: run cancelled ({text})"));
        }
        Self::new(ErrorKind::Inference, format!("ONNX Runtime failed running {graph}: {text}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
