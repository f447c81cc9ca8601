//! `kiln_runtime`: the loaded ONNX Runtime and Kiln's settings for it.
use std::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::sync::Arc;

use super::boundary::{clear_string_outs, non_null, read_versioned, utf8_opt, write_string};
use super::handles::{self, Handle};
use super::status::kiln_status;
use crate::error::Error;
use crate::runtime::{GpuMath, LogLevel, Provider, ProviderPolicy, Runtime, RuntimeOptions};

/// A loaded ONNX Runtime plus settings. Thread-safe: any thread may load models
/// from it concurrently. Destroy it with `kiln_runtime_destroy`; models loaded
/// from it keep what they need alive, so the order of destruction is free.
pub struct kiln_runtime {
    _private: [u8; 0],
}

impl Handle for kiln_runtime {
    type Target = Runtime;
    const NAME: &'static str = "runtime";
}

/// Severity of a log line.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_log_level {
    /// Step-by-step detail, including ONNX Runtime's informational output.
    Debug = 0,
    /// Normal events: runtime loaded, model loaded.
    Info = 1,
    /// Something degraded but the call went on.
    Warning = 2,
    /// A call failed.
    Error = 3,
}

/// Receives log lines. `message` is UTF-8, `message_len` bytes long (also
/// NUL-terminated), and valid only during the call. Called on whichever thread
/// is doing the work that logs: the caller's thread for synchronous calls,
/// except that `kiln_model_load` also logs from the threads that load the
/// U-Net and VAE decoder (unless `sequential_load`), a job's worker for jobs.
/// It must be thread-safe.
pub type kiln_log_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, level: u32, message: *const c_char, message_len: usize)>;

/// Options for `kiln_runtime_create`. Fill with `kiln_runtime_options_init`;
/// fields are only ever appended, and `struct_size` tells which exist.
/// Accepted `struct_size`: `sizeof(kiln_runtime_options)`, or that of a layout
/// that ended after `embedding_cache_entries`, after `graph_cache_dir` or
/// after `sequential_load` or after `gpu_math` (on 64-bit targets 80, 88, 96
/// and 112; the current size is 128).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kiln_runtime_options {
    /// `sizeof(kiln_runtime_options)`, set by `kiln_runtime_options_init`.
    pub struct_size: u32,
    /// Threads one graph may use; 0 = all cores but one (at least one); at
    /// most 1024 (more is INVALID_ARGUMENT).
    pub intra_op_threads: u32,
    /// Threads running independent graph branches; 0 = 1; at most 1024.
    pub inter_op_threads: u32,
    /// Non-zero lets ONNX Runtime's threads spin while idle (faster on an idle
    /// machine, steals cycles from a game). Default 0.
    pub allow_spinning: u32,
    /// UTF-8 path of the ONNX Runtime library, or NULL to search:
    /// `ORT_DYLIB_PATH`, the folder holding libkiln, then the copy fetched by
    /// the project's setup. Copied during the call.
    pub onnxruntime_path: *const c_char,
    /// Log sink, or NULL for none.
    pub log_callback: kiln_log_fn,
    /// Passed as the first argument of `log_callback`.
    pub log_user_data: *mut c_void,
    /// Least severe `kiln_log_level` delivered. Default `KILN_LOG_LEVEL_INFO`.
    pub log_level: u32,
    /// Worker threads for `kiln_job_submit`; 0 = 1, at most 64 (more is
    /// INVALID_ARGUMENT). The pool is process-wide: each submit grows it to
    /// the `job_workers` of the submitting model's runtime if it has fewer, so
    /// it has the largest count any submitting runtime asked for; it never
    /// shrinks. Polling, waiting, cancelling or freeing never starts a thread.
    pub job_workers: u32,
    /// Preferred execution providers (`kiln_provider` values), best first, or
    /// NULL for the CPU only. Copied during the call.
    pub providers: *const u32,
    /// Number of entries at `providers`.
    pub providers_len: usize,
    /// GPU index for CUDA/TensorRT, adapter index for DirectML. Default 0.
    pub device_id: i32,
    /// Non-zero: model loading fails with KILN_STATUS_PROVIDER_UNAVAILABLE when
    /// none of `providers` can be used. Zero (default): fall back to the CPU,
    /// log a warning, and say why in `kiln_model_graph_provider`.
    pub require_provider: u32,
    /// A `kiln_residency` value: which graphs of a model stay loaded.
    /// Default `KILN_RESIDENCY_ALL_RESIDENT`.
    pub residency: u32,
    /// Prompts whose text embeddings each model caches (LRU), so repeated
    /// prompts skip the text encoder. `kiln_runtime_options_init` sets 32; 0 = off.
    pub embedding_cache_entries: u32,
    /// UTF-8 path of a folder where ONNX Runtime's optimized graphs are kept, so
    /// later loads (in this or another process) skip graph optimization, or
    /// NULL (default) for none: Kiln then writes nothing to disk. Created when
    /// first needed; entries are keyed on the model files, ONNX Runtime
    /// version, options and CPU, and one that is unusable is logged and
    /// rewritten, never failing a load. Safe to share between processes;
    /// delete it at any time. Copied during the call. (Added after the first
    /// layout: a caller passing the older `struct_size` gets NULL.)
    pub graph_cache_dir: *const c_char,
    /// Non-zero: load a model's graphs one after another on the calling
    /// thread. Zero (default): the text encoder, U-Net and VAE decoder load at
    /// once on three threads, which is faster when a core is free. (Added after
    /// `graph_cache_dir`; older layouts get 0.)
    pub sequential_load: u32,
    /// Most bytes of GPU memory each CUDA session's arena may hold
    /// (ONNX Runtime's `gpu_mem_limit`); 0 = no cap (default). A job that
    /// needs more fails with `KILN_STATUS_OUT_OF_MEMORY` and the model stays
    /// usable for smaller jobs. (Added after `sequential_load`, whose layout
    /// ended in 4 bytes of padding that stay unused: older layouts get 0.)
    pub gpu_memory_limit: u64,
    /// A `kiln_gpu_math` value: whether CUDA may use TF32 tensor cores.
    /// Default `KILN_GPU_MATH_FAST`. Ignored on the CPU. (Added with
    /// `gpu_memory_limit`.)
    pub gpu_math: u32,
    // --- Added together after `gpu_math` (older layouts get 0 for all four). ---
    /// Unused; always 0. It fills the 4 bytes of padding that ended the
    /// layout before it, which callers of that layout never initialised, so
    /// no setting is read from them.
    pub padding_after_gpu_math: u32,
    /// Non-zero: run the U-Net as a graph specialised to each job's size and
    /// batch (symbolic dimensions fixed, shape computations folded), so that a
    /// CUDA session leaves no node on the CPU. The first job of a new shape pays
    /// for the specialisation (kept in `graph_cache_dir` when set); results
    /// equal the dynamic U-Net's to float rounding. Default 0.
    pub static_unet: u32,
    /// Non-zero: capture the specialised U-Net in a CUDA graph and replay it
    /// every step (implies `static_unet`; used only by the CUDA provider, and
    /// not under per-stage residency). Default 0.
    pub cuda_graph: u32,
    /// Non-zero: keep the latents, the guidance arithmetic and the scheduler
    /// step on the U-Net's device between steps (I/O binding; a small step graph
    /// runs the step), so only the final latents and asked-for previews come back
    /// to the host. Schedulers and features the device loop cannot run fall back
    /// to the host loop (logged). Default 0. (Added with `static_unet`.)
    pub device_latents: u32,
}

/// Whether GPU providers may trade float32 accuracy for speed.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_gpu_math {
    /// ONNX Runtime's default: CUDA convolutions and matrix products use TF32
    /// tensor cores; about 2.8x faster for an SD 1.5 U-Net on an H200, images
    /// about 1e-3 from a float32 CPU run.
    Fast = 0,
    /// Full float32 (`use_tf32=0`): results within Kiln's parity bounds of the
    /// CPU and the reference; for parity checks and bakes that must reproduce
    /// CPU output.
    Exact = 1,
}

/// Which graphs of a model stay loaded between uses.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_residency {
    /// Every graph stays loaded: fastest, most memory.
    AllResident = 0,
    /// Only the graph in use is loaded: using one releases the others, so peak
    /// memory is the largest single graph, at the cost of reloading per stage.
    /// (A ControlNet job's nets and the U-Net they feed run in turn at every
    /// step, so they stay loaded together through the loop.)
    PerStage = 1,
}

/// `sizeof` of the first published layout, which ended after
/// `embedding_cache_entries` (rounded up to the struct's alignment, as a C
/// compiler pads it).
const RUNTIME_OPTIONS_V1: usize = layout_before!(kiln_runtime_options, graph_cache_dir);

/// Sizes of the published layouts before the current one: without
/// `graph_cache_dir`, without `sequential_load`, without `gpu_memory_limit`,
/// then without the static U-Net levers (`padding_after_gpu_math` on).
const RUNTIME_OPTIONS_OLDER: [usize; 4] = [
    RUNTIME_OPTIONS_V1,
    layout_before!(kiln_runtime_options, sequential_load),
    layout_before!(kiln_runtime_options, gpu_memory_limit),
    layout_before!(kiln_runtime_options, padding_after_gpu_math),
];

fn default_runtime_options() -> kiln_runtime_options {
    kiln_runtime_options {
        struct_size: std::mem::size_of::<kiln_runtime_options>() as u32,
        intra_op_threads: 0,
        inter_op_threads: 0,
        allow_spinning: 0,
        onnxruntime_path: std::ptr::null(),
        log_callback: None,
        log_user_data: std::ptr::null_mut(),
        log_level: kiln_log_level::Info as u32,
        job_workers: 0,
        providers: std::ptr::null(),
        providers_len: 0,
        device_id: 0,
        require_provider: 0,
        residency: kiln_residency::AllResident as u32,
        embedding_cache_entries: 32,
        graph_cache_dir: std::ptr::null(),
        sequential_load: 0,
        gpu_memory_limit: 0,
        gpu_math: kiln_gpu_math::Fast as u32,
        padding_after_gpu_math: 0,
        static_unet: 0,
        cuda_graph: 0,
        device_latents: 0,
    }
}

/// Fills `options` with defaults, including `struct_size`. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn kiln_runtime_options_init(options: *mut kiln_runtime_options) {
    boundary_void!({
        if !options.is_null() {
            // SAFETY: non-null; the caller passes a writable struct.
            unsafe { options.write(default_runtime_options()) };
        }
    })
}

/// Largest `intra_op_threads` / `inter_op_threads` accepted.
const MAX_ORT_THREADS: u32 = 1024;

struct UserData(*mut c_void);
// SAFETY: the header makes thread-safety of user_data the caller's contract.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

/// Loads ONNX Runtime (once per process) and creates a runtime.
///
/// `options` may be NULL for defaults. On success `*runtime_out` receives a
/// handle to destroy with `kiln_runtime_destroy`; on failure it is set to NULL
/// and `kiln_last_error_message` lists every library path tried.
/// Errors: NULL_ARGUMENT, INVALID_UTF8, STRUCT_SIZE_MISMATCH, INVALID_ARGUMENT,
/// RUNTIME_LOAD_FAILED (including asking for a different library than the one
/// this process already loaded).
#[no_mangle]
pub unsafe extern "C" fn kiln_runtime_create(
    options: *const kiln_runtime_options,
    runtime_out: *mut *mut kiln_runtime,
) -> kiln_status {
    boundary!({
        non_null(runtime_out, "runtime_out")?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(runtime_out, std::ptr::null_mut()) };
        // SAFETY: NULL or a struct of at least struct_size bytes, per the header.
        let options = unsafe { runtime_options_from(options)? };
        let runtime = Runtime::new(&options)?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(runtime_out, handles::into_raw::<kiln_runtime>(runtime)) };
        Ok(())
    })
}

/// Validates the caller's options (NULL = defaults) into the Rust ones,
/// without loading anything: every field's error is found here, before
/// ONNX Runtime is touched (the options fuzz target runs this alone).
///
/// # Safety
/// `options` is NULL or points to `struct_size` readable bytes, whose
/// pointers are NULL or valid as the header describes.
pub(crate) unsafe fn runtime_options_from(options: *const kiln_runtime_options) -> crate::error::Result<RuntimeOptions> {
    let o = if options.is_null() {
        default_runtime_options()
    } else {
        // SAFETY: caller passes a struct of at least struct_size bytes.
        unsafe { read_versioned(options, default_runtime_options(), &RUNTIME_OPTIONS_OLDER, "options")? }
    };
    // SAFETY: NUL-terminated per the header.
    let path = unsafe { utf8_opt(o.onnxruntime_path, "options->onnxruntime_path")? };
    // SAFETY: NUL-terminated per the header; `read_versioned` left it NULL for older layouts.
    let graph_cache_dir = unsafe { utf8_opt(o.graph_cache_dir, "options->graph_cache_dir")? };
    if graph_cache_dir == Some("") {
        return Err(Error::invalid("options->graph_cache_dir is empty; pass NULL for no cache"));
    }
    if o.job_workers as usize > crate::jobs::MAX_JOB_WORKERS {
        return Err(Error::invalid(format!(
            "options->job_workers {} is over the limit of {}",
            o.job_workers,
            crate::jobs::MAX_JOB_WORKERS
        )));
    }
    for (name, v) in [("intra_op_threads", o.intra_op_threads), ("inter_op_threads", o.inter_op_threads)] {
        if v > MAX_ORT_THREADS {
            return Err(Error::invalid(format!("options->{name} {v} is over the limit of {MAX_ORT_THREADS}")));
        }
    }
    let log_level = match o.log_level {
        0 => LogLevel::Debug,
        1 => LogLevel::Info,
        2 => LogLevel::Warning,
        3 => LogLevel::Error,
        other => return Err(Error::invalid(format!("options->log_level {other} is not a kiln_log_level"))),
    };
    let log = o.log_callback.map(|cb| {
        let user = UserData(o.log_user_data);
        Arc::new(move |level: LogLevel, text: &str| {
            let mut bytes = Vec::with_capacity(text.len() + 1);
            bytes.extend_from_slice(text.as_bytes());
            bytes.push(0);
            let u = &user;
            // SAFETY: the callback contract is the caller's.
            unsafe { cb(u.0, level as u32, bytes.as_ptr().cast(), text.len()) };
        }) as crate::runtime::LogCallback
    });
    Ok(RuntimeOptions {
        onnxruntime_path: path.map(PathBuf::from),
        intra_op_threads: o.intra_op_threads as usize,
        inter_op_threads: o.inter_op_threads as usize,
        allow_spinning: o.allow_spinning != 0,
        log,
        log_level,
        job_workers: o.job_workers as usize,
        providers: provider_policy(&o)?,
        residency: match o.residency {
            0 => crate::model::Residency::AllResident,
            1 => crate::model::Residency::PerStage,
            other => return Err(Error::invalid(format!("options->residency {other} is not a kiln_residency"))),
        },
        embedding_cache_entries: Some(o.embedding_cache_entries as usize),
        graph_cache_dir: graph_cache_dir.map(PathBuf::from),
        graph_optimization: Default::default(),
        sequential_load: o.sequential_load != 0,
    })
}

fn provider_policy(o: &kiln_runtime_options) -> crate::error::Result<ProviderPolicy> {
    let list: &[u32] = if o.providers.is_null() {
        if o.providers_len != 0 {
            return Err(Error::new(crate::error::ErrorKind::NullArgument, "`options->providers` is NULL but providers_len is not 0"));
        }
        &[]
    } else {
        if o.providers_len > 64 {
            return Err(Error::invalid(format!("options->providers_len {} is implausible", o.providers_len)));
        }
        // SAFETY: the caller guarantees providers_len readable values.
        unsafe { std::slice::from_raw_parts(o.providers, o.providers_len) }
    };
    let preferred = list
        .iter()
        .map(|&v| Provider::from_u32(v).ok_or_else(|| Error::invalid(format!("options->providers holds {v}, not a kiln_provider"))))
        .collect::<crate::error::Result<Vec<_>>>()?;
    let gpu_math = match o.gpu_math {
        0 => GpuMath::Fast,
        1 => GpuMath::Exact,
        other => return Err(Error::invalid(format!("options->gpu_math {other} is not a kiln_gpu_math"))),
    };
    let gpu_memory_limit = usize::try_from(o.gpu_memory_limit).map_err(|_| {
        Error::invalid(format!("options->gpu_memory_limit {} does not fit this platform's address space", o.gpu_memory_limit))
    })?;
    Ok(ProviderPolicy {
        preferred,
        device_id: o.device_id,
        require: o.require_provider != 0,
        gpu_math,
        gpu_memory_limit,
        static_unet: o.static_unet != 0,
        cuda_graph: o.cuda_graph != 0,
        device_latents: o.device_latents != 0,
        fixed_unet_buffers: false,
    })
}

/// Destroys a runtime. NULL is a no-op. Models loaded from it stay valid,
/// and so do jobs queued or running on them: they hold what they need of the
/// runtime, which is released with the last of them. Do not destroy it while a
/// call on it (a model load) is in progress on another thread.
#[no_mangle]
pub unsafe extern "C" fn kiln_runtime_destroy(runtime: *mut kiln_runtime) {
    boundary_void!({
        // SAFETY: NULL or a handle from kiln_runtime_create.
        unsafe { handles::free(runtime) }
    })
}

/// Copies the loaded ONNX Runtime's version (e.g. "1.31.1") into `buf` (string
/// convention: see `kiln_last_error_message`).
#[no_mangle]
pub unsafe extern "C" fn kiln_runtime_onnxruntime_version(
    runtime: *const kiln_runtime,
    buf: *mut c_char,
    buf_len: usize,
    len_out: *mut usize,
) -> kiln_status {
    boundary!({
        // SAFETY: forwarded caller contract.
        unsafe { clear_string_outs(buf, buf_len, len_out) };
        // SAFETY: NULL or a live handle.
        let rt = unsafe { handles::borrow(runtime)? };
        // SAFETY: forwarded caller contract.
        unsafe { write_string(rt.onnxruntime_version(), buf, buf_len, len_out) }
    })
}

/// Copies the path ONNX Runtime was loaded from into `buf` (string convention:
/// see `kiln_last_error_message`).
#[no_mangle]
pub unsafe extern "C" fn kiln_runtime_onnxruntime_path(
    runtime: *const kiln_runtime,
    buf: *mut c_char,
    buf_len: usize,
    len_out: *mut usize,
) -> kiln_status {
    boundary!({
        // SAFETY: forwarded caller contract.
        unsafe { clear_string_outs(buf, buf_len, len_out) };
        // SAFETY: NULL or a live handle.
        let rt = unsafe { handles::borrow(runtime)? };
        let path = rt.onnxruntime_path().to_string_lossy().into_owned();
        // SAFETY: forwarded caller contract.
        unsafe { write_string(&path, buf, buf_len, len_out) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_layout_ends_where_graph_cache_dir_begins() {
        assert_eq!(RUNTIME_OPTIONS_V1, std::mem::offset_of!(kiln_runtime_options, graph_cache_dir));
        assert!(RUNTIME_OPTIONS_V1 < std::mem::size_of::<kiln_runtime_options>());
    }

    #[test]
    fn v1_options_never_read_graph_cache_dir() {
        // A caller built against the first layout passes the shorter size; the
        // bytes after it are not its to give.
        let mut o = default_runtime_options();
        o.struct_size = crate::ffi::boundary::published_size::<kiln_runtime_options>(RUNTIME_OPTIONS_V1) as u32;
        o.graph_cache_dir = c"/must/not/be/read".as_ptr();
        let read = unsafe { read_versioned(&o, default_runtime_options(), &RUNTIME_OPTIONS_OLDER, "options") }.unwrap();
        assert!(read.graph_cache_dir.is_null());
        let o = default_runtime_options();
        assert_eq!(o.struct_size as usize, std::mem::size_of::<kiln_runtime_options>());
    }

    #[test]
    fn v2_options_never_read_sequential_load() {
        // The second layout ended with `graph_cache_dir`.
        let v2 = std::mem::offset_of!(kiln_runtime_options, sequential_load);
        let mut o = default_runtime_options();
        o.struct_size = v2 as u32;
        o.sequential_load = 1;
        let read = unsafe { read_versioned(&o, default_runtime_options(), &RUNTIME_OPTIONS_OLDER, "options") }.unwrap();
        assert_eq!(read.sequential_load, 0);
        o.struct_size = std::mem::size_of::<kiln_runtime_options>() as u32;
        let read = unsafe { read_versioned(&o, default_runtime_options(), &RUNTIME_OPTIONS_OLDER, "options") }.unwrap();
        assert_eq!(read.sequential_load, 1);
    }

    #[test]
    fn v3_options_get_default_gpu_math_and_no_memory_cap() {
        // The third layout ended with `sequential_load` and padding (96 bytes on 64-bit).
        let v3 = std::mem::offset_of!(kiln_runtime_options, gpu_memory_limit);
        assert!(RUNTIME_OPTIONS_OLDER.contains(&v3), "{v3} is a published layout's end (and size: no padding)");
        let mut o = default_runtime_options();
        o.struct_size = v3 as u32;
        o.gpu_math = kiln_gpu_math::Exact as u32;
        o.gpu_memory_limit = 1 << 30;
        let read = unsafe { read_versioned(&o, default_runtime_options(), &RUNTIME_OPTIONS_OLDER, "options") }.unwrap();
        assert_eq!((read.gpu_math, read.gpu_memory_limit), (kiln_gpu_math::Fast as u32, 0));
        o.struct_size = std::mem::size_of::<kiln_runtime_options>() as u32;
        let policy = provider_policy(&o).unwrap();
        assert_eq!((policy.gpu_math, policy.gpu_memory_limit), (GpuMath::Exact, 1 << 30));
        o.gpu_math = 2;
        let e = provider_policy(&o).unwrap_err();
        assert_eq!(e.message(), "options->gpu_math 2 is not a kiln_gpu_math");
    }

    #[test]
    fn v4_options_never_read_the_static_unet_levers() {
        // The fourth layout ended with `gpu_math` and padding (112 bytes on 64-bit).
        let v4 = crate::ffi::boundary::published_size::<kiln_runtime_options>(layout_before!(kiln_runtime_options, padding_after_gpu_math));
        #[cfg(target_pointer_width = "64")]
        assert_eq!((v4, std::mem::size_of::<kiln_runtime_options>()), (112, 128));
        let mut o = default_runtime_options();
        assert_eq!(std::mem::offset_of!(kiln_runtime_options, static_unet), v4, "the levers start after the old padding");
        o.struct_size = v4 as u32;
        o.static_unet = 1;
        o.cuda_graph = 1;
        let read = unsafe { read_versioned(&o, default_runtime_options(), &RUNTIME_OPTIONS_OLDER, "options") }.unwrap();
        assert_eq!((read.static_unet, read.cuda_graph), (0, 0));
        let policy = provider_policy(&read).unwrap();
        assert!(!policy.static_unet && !policy.cuda_graph);
        o.struct_size = std::mem::size_of::<kiln_runtime_options>() as u32;
        let read = unsafe { read_versioned(&o, default_runtime_options(), &RUNTIME_OPTIONS_OLDER, "options") }.unwrap();
        let policy = provider_policy(&read).unwrap();
        assert!(policy.static_unet && policy.cuda_graph);
    }
}
