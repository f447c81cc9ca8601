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
    pub(crate) fn adapter_mismatch(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AdapterMismatch, message)
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
        if is_allocation_failure(&text) {
            return Self::new(
                ErrorKind::OutOfMemory,
                format!(
                    "out of memory running {graph} (a smaller size or batch, per-stage residency or a larger GPU memory cap may fit): {text}"
                ),
            );
        }
        Self::new(ErrorKind::Inference, format!("ONNX Runtime failed running {graph}: {text}"))
    }
}

/// Whether an ONNX Runtime error says an allocation failed: the CPU and CUDA
/// arenas ("Failed to allocate memory", BFCArena's "Available memory of … is
/// smaller than requested bytes", the cap `gpu_mem_limit` sets), CUDA's own
/// allocator and cuDNN/cuBLAS workspaces.
pub(crate) fn is_allocation_failure(text: &str) -> bool {
    const SIGNS: [&str; 7] = [
        "Failed to allocate memory",
        "is smaller than requested bytes",
        "out of memory",
        "cudaErrorMemoryAllocation",
        "CUDNN_STATUS_ALLOC_FAILED",
        "CUBLAS_STATUS_ALLOC_FAILED",
        "bad_alloc",
    ];
    SIGNS.iter().any(|s| text.contains(s))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::is_allocation_failure;

    #[test]
    fn onnx_runtime_allocation_failures_are_recognised() {
        // Text ONNX Runtime 1.31.1's CUDA provider printed on an H200 with a 1 MiB cap.
        assert!(is_allocation_failure(
            "Non-zero status code returned while running Conv node. Name:'/conv_in/Conv' Status Message: \
             /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:359 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, \
             onnxruntime::Stream*) Available memory of 0 is smaller than requested bytes of 6324224"
        ));
        assert!(is_allocation_failure("CUDA failure 2: out of memory ; GPU=0 ; hostname=x ; expr=cudaMalloc"));
        assert!(is_allocation_failure("Failed to allocate memory for requested buffer of size 123"));
        assert!(!is_allocation_failure("Got invalid dimensions for input: sample for the following indices"));
    }
}
