//! Asynchronous jobs: submit from the game thread, poll once a frame, cancel,
//! copy the result into the engine's buffer. A job generates
//! (`kiln_job_submit`, `kiln_job_submit_upscaled`), extends a texture or
//! makes it tileable (`kiln_job_submit_extend_texture`,
//! `kiln_job_submit_make_tileable`), upscales an image
//! (`kiln_job_submit_upscale`), or makes a model (`kiln_job_submit_model_load`,
//! `kiln_job_submit_with_adapters`: taken with `kiln_job_model`); every other
//! call here works the same for all of them. Jobs are named by 64-bit ids that
//! carry a generation count, so a stale or freed id returns
//! `KILN_STATUS_INVALID_HANDLE` instead of touching freed memory.
use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

use super::boundary::{check_struct_size, clear_string_outs, clear_versioned, non_null, read_versioned, utf8_arg, write_string, write_versioned};
use super::handles;
use super::image::kiln_image;
use super::lora::{embeddings_from, kiln_embedding, kiln_lora, specs_from};
use super::model::{finish_request, kiln_generate_options, kiln_model, kiln_model_load_options, model_load_options, request_from};
use super::runtime::kiln_runtime;
use super::status::kiln_status;
use super::texture::texture_request;
use super::upscale::{kiln_upscale_options, kiln_upscaler, read_upscale_options};
use crate::error::{Error, ErrorKind, Result};
use crate::jobs::{JobConfig, JobEvent, JobObserver, JobWork};
use crate::model::Adapters;
use crate::pipeline::texture::Extend;

/// Where a job is in its life.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_job_state {
    /// Waiting for a worker thread.
    Queued = 0,
    /// A worker thread is running it.
    Running = 1,
    /// Finished; the image can be copied out.
    Succeeded = 2,
    /// Finished with an error; see `kiln_job_error_message`.
    Failed = 3,
    /// Stopped by `kiln_job_cancel` (or `kiln_job_free`) before finishing.
    Cancelled = 4,
}

/// A job's state and progress, filled by `kiln_job_poll`. Accepted
/// `struct_size`: `sizeof(kiln_job_progress)` (28) or 16 (before `preview_step`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct kiln_job_progress {
    /// Set by the caller to `sizeof(kiln_job_progress)` before the call.
    pub struct_size: u32,
    /// A `kiln_job_state` value.
    pub state: u32,
    /// Denoising U-Net calls finished (upscale jobs: graph runs, one per tile;
    /// load jobs: KiB of the graph files whose sessions are made).
    pub step: u32,
    /// U-Net calls in total: the step count, or more for schedulers that call
    /// the U-Net several times per step (PNDM's warm-up, Heun). Upscale jobs:
    /// graph runs in total, known from submission on. Load jobs (a model,
    /// LoRA switch, seamless view or upscaler): 1 until the job knows which
    /// graphs it opens, then their files' size in KiB (graph plus external
    /// weights), which tracks load time; `step` reaches it when the job
    /// succeeds. A load that opens no session (per-stage residency, a LoRA set
    /// fed to slots) counts 0 of 1, then 1 of 1.
    pub total_steps: u32,
    /// Step shown by the newest preview; 0 while there is none.
    pub preview_step: u32,
    /// Width of the newest preview in pixels (latent resolution); 0 if none.
    pub preview_width: u32,
    /// Height of the newest preview in pixels; 0 if none.
    pub preview_height: u32,
}

/// What a `kiln_job_event` reports.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_job_event_kind {
    /// A U-Net call (upscale jobs: a tile's graph run; load jobs: a graph's
    /// session, in KiB, as `kiln_job_progress` says) finished: `step` of
    /// `total_steps`.
    Progress = 0,
    /// A new preview: `pixels`, `width`, `height`, `row_pitch`, `step`.
    Preview = 1,
    /// The job ended; `state` says how.
    Finished = 2,
}

/// One event of a job, passed to `kiln_job_callback`. Borrowed: valid only
/// during the callback (copy the pixels if you need them later).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kiln_job_event {
    /// `sizeof(kiln_job_event)` of the library; fields are only appended.
    pub struct_size: u32,
    /// A `kiln_job_event_kind` value.
    pub kind: u32,
    /// The job's id.
    pub job: u64,
    /// U-Net calls (upscale jobs: graph runs; load jobs: KiB of graphs
    /// opened) finished (progress) or shown (preview).
    pub step: u32,
    /// U-Net calls (upscale jobs: graph runs; load jobs: KiB) in total.
    pub total_steps: u32,
    /// A `kiln_job_state` value (for `KILN_JOB_EVENT_KIND_FINISHED`).
    pub state: u32,
    /// Preview width in pixels.
    pub width: u32,
    /// Preview height in pixels.
    pub height: u32,
    /// Bytes between preview rows.
    pub row_pitch: usize,
    /// Preview RGBA8 pixels; NULL for other kinds.
    pub pixels: *const u8,
}

/// Receives job events. Called on a Kiln thread (the worker running the job;
/// a model load's progress also comes from the threads that open its graphs
/// at once), never on the caller's thread and one call at a time per job, so
/// it must be thread-safe and quick; everything it reports can also be
/// polled with `kiln_job_poll` / `kiln_job_copy_preview`.
///
/// Every job submitted with a callback gets exactly one
/// `KILN_JOB_EVENT_KIND_FINISHED` event, its last: when it ends, or when it is
/// freed first. A job freed while queued gets it (state CANCELLED) from a
/// worker soon after `kiln_job_free`, before that worker starts other work; one
/// freed while running gets it when the run stops (within one graph call).
/// `user_data` must stay valid until that FINISHED callback has returned;
/// after it Kiln never touches `user_data` again. The callback may call
/// `kiln_job_poll`, `kiln_job_cancel` or `kiln_job_free` on its own job. A
/// blocking `kiln_model_generate` from it holds the worker for that long; on
/// the same model, while CUDA graph replay runs with `device_latents` (the
/// CUDA provider with `cuda_graph`), it is KILN_STATUS_BUSY: the running job
/// holds the U-Net's fixed buffers.
pub type kiln_job_callback = Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const kiln_job_event)>;

/// How to run a job. Fill with `kiln_job_options_init`; NULL = defaults.
/// Accepted `struct_size`: `sizeof(kiln_job_options)` only.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kiln_job_options {
    /// `sizeof(kiln_job_options)`, set by `kiln_job_options_init`.
    pub struct_size: u32,
    /// Higher runs first; equal priorities run in submission order. Default 0.
    pub priority: i32,
    /// Make a preview every this many U-Net calls, and at the last; 0 = none.
    pub preview_interval: u32,
    /// Optional event callback (see `kiln_job_callback`).
    pub callback: kiln_job_callback,
    /// First argument of `callback`.
    pub user_data: *mut c_void,
}

const JOB_OPTIONS_V1: usize = std::mem::size_of::<kiln_job_options>();

fn default_job_options() -> kiln_job_options {
    kiln_job_options { struct_size: JOB_OPTIONS_V1 as u32, priority: 0, preview_interval: 0, callback: None, user_data: std::ptr::null_mut() }
}

/// Fills `options` with defaults, including `struct_size`. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_options_init(options: *mut kiln_job_options) {
    boundary_void!({
        if !options.is_null() {
            // SAFETY: non-null; the caller passes a writable struct.
            unsafe { options.write(default_job_options()) };
        }
    })
}

/// Forwards job events to a C callback.
struct CallbackObserver {
    callback: unsafe extern "C" fn(*mut c_void, *const kiln_job_event),
    user_data: *mut c_void,
}
// SAFETY: the header makes the callback's and user_data's thread-safety the caller's contract.
unsafe impl Send for CallbackObserver {}
unsafe impl Sync for CallbackObserver {}

impl JobObserver for CallbackObserver {
    fn on_event(&self, id: u64, event: &JobEvent<'_>) {
        let mut e = kiln_job_event {
            struct_size: std::mem::size_of::<kiln_job_event>() as u32,
            kind: 0,
            job: id,
            step: 0,
            total_steps: 0,
            state: 0,
            width: 0,
            height: 0,
            row_pitch: 0,
            pixels: std::ptr::null(),
        };
        match event {
            JobEvent::Progress { step, total } => {
                e.kind = kiln_job_event_kind::Progress as u32;
                e.step = *step;
                e.total_steps = *total;
            }
            JobEvent::Preview { step, image } => {
                e.kind = kiln_job_event_kind::Preview as u32;
                e.step = *step;
                e.width = image.width as u32;
                e.height = image.height as u32;
                e.row_pitch = image.width * 4;
                e.pixels = image.pixels.as_ptr();
            }
            JobEvent::Finished { state } => {
                e.kind = kiln_job_event_kind::Finished as u32;
                e.state = *state as u32;
            }
        }
        // SAFETY: the callback contract is the caller's; `e` outlives the call.
        unsafe { (self.callback)(self.user_data, &e) };
    }
}

/// Reads `kiln_job_options` (NULL = defaults) into a job configuration.
///
/// # Safety
/// `job_options` is NULL or points to `struct_size` readable bytes.
unsafe fn job_config(job_options: *const kiln_job_options) -> Result<JobConfig> {
    let jo = if job_options.is_null() {
        default_job_options()
    } else {
        // SAFETY: caller passes a struct of at least struct_size bytes.
        unsafe { read_versioned(job_options, default_job_options(), &[], "job_options")? }
    };
    let observer = jo
        .callback
        .map(|callback| Arc::new(CallbackObserver { callback, user_data: jo.user_data }) as Arc<dyn JobObserver>);
    Ok(JobConfig { priority: jo.priority, preview_interval: jo.preview_interval, observer })
}

/// The shared body of the submit calls: zeroes `*job_out`, lets `work`
/// check its arguments and build the job (nothing is queued when it fails),
/// then queues it on the pool of `job_workers` threads.
///
/// # Safety
/// `job_out` NULL or writable; `job_options` as [`job_config`] takes it.
unsafe fn submit(
    job_out: *mut u64,
    job_options: *const kiln_job_options,
    work: impl FnOnce() -> Result<(JobWork, usize)>,
) -> Result<()> {
    non_null(job_out, "job_out")?;
    // SAFETY: checked non-null.
    unsafe { handles::write_out(job_out, 0) };
    let (work, job_workers) = work()?;
    // SAFETY: forwarded caller contract.
    let config = unsafe { job_config(job_options)? };
    let id = crate::jobs::pool_with(job_workers)?.submit_work(work, config);
    // SAFETY: checked non-null.
    unsafe { handles::write_out(job_out, id) };
    Ok(())
}

/// Queues a generation and returns at once with its id in `*job_out`.
/// Jobs run on Kiln's worker threads (see `kiln_runtime_options.job_workers`),
/// higher priority first, then in submission order. `job_options` may be NULL.
/// The options and their strings are copied before this returns. Free every
/// job with `kiln_job_free`. What a generation checks before it runs is
/// checked here, so a bad request queues nothing and returns its status:
/// `kiln_model_generate`'s argument errors, INVALID_SIZE for a size the model
/// cannot generate, INVALID_ARGUMENT for a guidance scale that is not finite,
/// a guidance rescale outside 0..1, VAE tiling or scheduler overrides it
/// refuses, UNSUPPORTED for the fast final decode without a preview decoder.
/// What can only fail while it runs (img2img whose strength leaves no step
/// to run, a graph that fails) ends the job FAILED.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_submit(
    model: *const kiln_model,
    options: *const kiln_generate_options,
    job_options: *const kiln_job_options,
    job_out: *mut u64,
) -> kiln_status {
    boundary!({
        // SAFETY: the caller's contract is `submit`'s and `request_from`'s.
        unsafe {
            submit(job_out, job_options, || {
                let m = handles::borrow(model)?;
                let request = finish_request(m, request_from(options)?)?;
                m.check_request(&request)?;
                Ok((JobWork::Generate { model: m.clone(), request }, m.runtime().job_workers()))
            })
        }
    })
}

/// Queues a generation and its upscale as one job: what `kiln_job_submit`
/// makes, upscaled by `upscaler` as `kiln_job_submit_upscale` would upscale
/// it, so a game asks once for a 2K or 4K texture. The upscale wraps on the
/// model's seamless axes (a `kiln_model_seamless` view's, or the seamless
/// the model was loaded with); `upscale_options->seamless` is ignored, since
/// the image tiles exactly along those. `step` / `total_steps` count the
/// U-Net calls and then the upscale's graph runs (tiles), in one count that
/// only goes up: the total is the step count plus the tiles from submission
/// on, raised at the first step by schedulers that call the U-Net more than
/// once per step (PNDM's warm-up, Heun). Previews come from the generation. `kiln_job_cancel`
/// stops either part within one graph call. The job holds the model and the
/// upscaler. Errors at submit: `kiln_job_submit`'s and
/// `kiln_job_submit_upscale`'s.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_submit_upscaled(
    model: *const kiln_model,
    options: *const kiln_generate_options,
    upscaler: *const kiln_upscaler,
    upscale_options: *const kiln_upscale_options,
    job_options: *const kiln_job_options,
    job_out: *mut u64,
) -> kiln_status {
    boundary!({
        // SAFETY: the caller's contract is `submit`'s and `request_from`'s;
        // NULL or live handles; options NULL or a struct of struct_size bytes.
        unsafe {
            submit(job_out, job_options, || {
                let m = handles::borrow(model)?;
                let u = handles::borrow(upscaler)?;
                let request = finish_request(m, request_from(options)?)?;
                let work = JobWork::generate_upscaled(m.clone(), request, Arc::clone(u), read_upscale_options(upscale_options)?)?;
                Ok((work, m.runtime().job_workers().max(u.job_workers())))
            })
        }
    })
}

/// Queues `kiln_model_extend_texture` as a job: the picture in
/// `options->init_image` extended by the given pixels on each side. Progress,
/// previews, cancel and the result work as for `kiln_job_submit`. The
/// arguments are checked here (errors as `kiln_model_extend_texture`'s
/// INVALID_ARGUMENT and INVALID_SIZE, and `kiln_job_submit`'s); the picture
/// and options are copied before this returns.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn kiln_job_submit_extend_texture(
    model: *const kiln_model,
    options: *const kiln_generate_options,
    left: u32,
    right: u32,
    top: u32,
    bottom: u32,
    job_options: *const kiln_job_options,
    job_out: *mut u64,
) -> kiln_status {
    boundary!({
        let extend = Extend { left: left as usize, right: right as usize, top: top as usize, bottom: bottom as usize };
        // SAFETY: the caller's contract is `submit`'s and `texture_request`'s.
        unsafe {
            submit(job_out, job_options, || {
                let (m, request, picture) = texture_request(model, options, "extend")?;
                m.check_extend(&picture, extend)?;
                Ok((JobWork::ExtendTexture { model: m.clone(), request, picture, extend }, m.runtime().job_workers()))
            })
        }
    })
}

/// Queues `kiln_model_make_tileable` as a job: the picture in
/// `options->init_image` made to tile, with a band of `band` pixels
/// inpainted. Progress, previews, cancel and the result work as for
/// `kiln_job_submit`. The arguments are checked here (errors as
/// `kiln_model_make_tileable`'s INVALID_ARGUMENT, and `kiln_job_submit`'s);
/// the picture and options are copied before this returns.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_submit_make_tileable(
    model: *const kiln_model,
    options: *const kiln_generate_options,
    band: u32,
    job_options: *const kiln_job_options,
    job_out: *mut u64,
) -> kiln_status {
    boundary!({
        // SAFETY: the caller's contract is `submit`'s and `texture_request`'s.
        unsafe {
            submit(job_out, job_options, || {
                let (m, request, picture) = texture_request(model, options, "make tileable")?;
                m.check_tileable(&picture, band as usize)?;
                Ok((JobWork::MakeTileable { model: m.clone(), request, picture, band: band as usize }, m.runtime().job_workers()))
            })
        }
    })
}

/// Queues `kiln_upscaler_upscale` as a job, so a game upscales without a
/// thread of its own and without running more graphs at once than its job
/// workers: `image` (copied before this returns; free it when you like)
/// upscaled with `options` (NULL = defaults). `kiln_job_progress.step` and
/// `total_steps` count graph runs (tiles; twice as many when alpha goes
/// through the graph) instead of U-Net calls; the job makes no previews
/// (`preview_interval` is ignored). `kiln_job_cancel` stops it within one
/// graph run, and so does `kiln_upscaler_cancel` (which stops every upscale
/// on that upscaler). The job keeps the upscaler's graph alive, so
/// `kiln_upscaler_free` may come before the job ends. The result is read
/// with `kiln_job_image_size` / `kiln_job_copy_image`. Errors at submit:
/// NULL_ARGUMENT, STRUCT_SIZE_MISMATCH, INVALID_ARGUMENT (an unknown
/// `seamless` or `alpha`, `context` over 1024), INVALID_SIZE (an empty image,
/// a result over 16384 pixels a side); the job's own errors are
/// `kiln_upscaler_upscale`'s.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_submit_upscale(
    upscaler: *const kiln_upscaler,
    image: *const kiln_image,
    options: *const kiln_upscale_options,
    job_options: *const kiln_job_options,
    job_out: *mut u64,
) -> kiln_status {
    boundary!({
        // SAFETY: the caller's contract is `submit`'s; NULL or live handles;
        // options NULL or a struct of struct_size bytes.
        unsafe {
            submit(job_out, job_options, || {
                let u = handles::borrow(upscaler)?;
                let img = handles::borrow(image)?;
                let options = read_upscale_options(options)?;
                u.check(img.width, img.height, &options)?;
                Ok((JobWork::Upscale { upscaler: Arc::clone(u), image: img.clone(), options }, u.job_workers()))
            })
        }
    })
}

/// Queues `kiln_model_load_with` as a job, so a game loads a model without
/// a thread of its own: the job ends with the model, taken with
/// `kiln_job_model`. Progress counts KiB of the graphs whose sessions are
/// made, as each is (see `kiln_job_progress`); no previews. `model_dir` and `options` (NULL = defaults) are checked and
/// copied here (NULL_ARGUMENT, INVALID_UTF8, STRUCT_SIZE_MISMATCH,
/// INVALID_ARGUMENT, MODEL_NOT_FOUND when the folder does not exist); the
/// files are read by the job, whose errors are `kiln_model_load_with`'s. A
/// queued load cancelled never starts; a running one stops inside the graph
/// session ONNX Runtime is creating, at its next check (between graph
/// transformations, per weight), starts no other and ends CANCELLED; one
/// cancelled after its last session was made ends CANCELLED with its model
/// dropped.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_submit_model_load(
    runtime: *const kiln_runtime,
    model_dir: *const c_char,
    options: *const kiln_model_load_options,
    job_options: *const kiln_job_options,
    job_out: *mut u64,
) -> kiln_status {
    boundary!({
        // SAFETY: the caller's contract is `submit`'s; NULL or a live handle,
        // NULL or a NUL-terminated string, options NULL or struct_size bytes.
        unsafe {
            submit(job_out, job_options, || {
                let rt = handles::borrow(runtime)?;
                let dir = std::path::PathBuf::from(utf8_arg(model_dir, "model_dir")?);
                let options = model_load_options(options)?;
                if !dir.is_dir() {
                    return Err(Error::new(ErrorKind::ModelNotFound, format!("model folder {} does not exist", dir.display())));
                }
                Ok((JobWork::LoadModel { runtime: rt.clone(), dir, options }, rt.job_workers()))
            })
        }
    })
}

/// Queues `kiln_model_with_adapters` as a job (a LoRA and embedding set
/// switched without blocking the game): the job ends with the new model,
/// taken with `kiln_job_model`; `model` stays usable meanwhile. Progress,
/// cancel and previews as `kiln_job_submit_model_load`'s. The arrays and
/// their strings are checked and copied here (errors as
/// `kiln_model_with_adapters`' for its arguments); the files are read by the
/// job, whose errors are `kiln_model_with_adapters`'.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_submit_with_adapters(
    model: *const kiln_model,
    loras: *const kiln_lora,
    lora_count: usize,
    embeddings: *const kiln_embedding,
    embedding_count: usize,
    job_options: *const kiln_job_options,
    job_out: *mut u64,
) -> kiln_status {
    boundary!({
        // SAFETY: the caller's contract is `submit`'s and the arrays' as
        // `kiln_model_with_adapters` states it.
        unsafe {
            submit(job_out, job_options, || {
                let m = handles::borrow(model)?;
                let loras = specs_from(loras, lora_count)?;
                let embeddings = embeddings_from(embeddings, embedding_count)?;
                let adapters = Adapters { loras, embeddings, ..Default::default() };
                Ok((JobWork::WithAdapters { model: m.clone(), adapters }, m.runtime().job_workers()))
            })
        }
    })
}

/// Queues `kiln_model_seamless` as a job: the job ends with the view of
/// `model` whose images tile along `axes` (a `kiln_seamless`), taken with
/// `kiln_job_model`. Making a view rewrites the U-Net's and VAE decoder's
/// convolutions and creates their sessions, seconds for an SD 1.5 model, so
/// a game switching between tileable textures and ordinary images asks for
/// it without blocking a frame. A view the model already has (or `axes` the
/// model's own) is ready at once. Progress and cancel as
/// `kiln_job_submit_model_load`'s: a cancel stops the rewrite or the
/// session being created; `model` stays usable meanwhile. Errors at submit:
/// NULL_ARGUMENT, INVALID_HANDLE, INVALID_ARGUMENT (`axes` not a
/// `kiln_seamless`, bad job options), STRUCT_SIZE_MISMATCH; the job's own
/// errors are `kiln_model_seamless`'.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_submit_seamless(
    model: *const kiln_model,
    axes: u32,
    job_options: *const kiln_job_options,
    job_out: *mut u64,
) -> kiln_status {
    boundary!({
        // SAFETY: the caller's contract is `submit`'s; NULL or a live handle.
        unsafe {
            submit(job_out, job_options, || {
                let m = handles::borrow(model)?;
                let axes = super::seamless::seamless_from_c(axes, "axes")?;
                Ok((JobWork::Seamless { model: m.clone(), axes }, m.runtime().job_workers()))
            })
        }
    })
}

/// Queues `kiln_upscaler_load` as a job: the job ends with the upscaler,
/// taken with `kiln_job_upscaler`. Progress and cancel as
/// `kiln_job_submit_model_load`'s (a cancel stops the session being
/// created). `path` is checked and copied here (NULL_ARGUMENT, INVALID_UTF8,
/// MODEL_NOT_FOUND when no graph file is there; no job queued); the graph is
/// read by the job, whose errors are `kiln_upscaler_load`'s.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_submit_upscaler_load(
    runtime: *const kiln_runtime,
    path: *const c_char,
    job_options: *const kiln_job_options,
    job_out: *mut u64,
) -> kiln_status {
    boundary!({
        // SAFETY: the caller's contract is `submit`'s; NULL or a live handle,
        // NULL or a NUL-terminated string.
        unsafe {
            submit(job_out, job_options, || {
                let rt = handles::borrow(runtime)?;
                let path = std::path::PathBuf::from(utf8_arg(path, "path")?);
                crate::model::side_graph::existing_graph_file(&path, "upscaler graph")?;
                Ok((JobWork::LoadUpscaler { runtime: rt.clone(), path }, rt.job_workers()))
            })
        }
    })
}

/// A new handle to the upscaler a succeeded `kiln_job_submit_upscaler_load`
/// job loaded, in `*upscaler_out` (NULL on failure), freed with
/// `kiln_upscaler_free` independently of the job. Errors: NULL_ARGUMENT,
/// INVALID_HANDLE, BUSY (queued or running), INVALID_ARGUMENT (the job
/// failed, was cancelled, or made something else).
#[no_mangle]
pub unsafe extern "C" fn kiln_job_upscaler(job: u64, upscaler_out: *mut *mut kiln_upscaler) -> kiln_status {
    boundary!({
        // SAFETY: the caller passes NULL or a writable pointer.
        unsafe { made_out(upscaler_out, "upscaler_out", || crate::jobs::job_table().upscaler(job)) }
    })
}

/// Clears `*out` (NULL checked), then writes a new handle to what `made`
/// takes from a job: the shared body of `kiln_job_model` and
/// `kiln_job_upscaler`.
///
/// # Safety
/// `out` NULL or writable.
unsafe fn made_out<H: handles::Handle>(out: *mut *mut H, name: &str, made: impl FnOnce() -> Result<H::Target>) -> Result<()> {
    non_null(out, name)?;
    // SAFETY: checked non-null.
    unsafe { handles::write_out(out, std::ptr::null_mut()) };
    let value = made()?;
    // SAFETY: checked non-null.
    unsafe { handles::write_out(out, handles::into_raw::<H>(value)) };
    Ok(())
}

/// A new handle to the model a succeeded `kiln_job_submit_model_load`,
/// `kiln_job_submit_with_adapters` or `kiln_job_submit_seamless` job made,
/// in `*model_out` (NULL on failure). Each call gives a handle of its own, freed with
/// `kiln_model_free` independently of the job and of each other. Errors:
/// NULL_ARGUMENT, INVALID_HANDLE (unknown or freed id), BUSY (queued or
/// running), INVALID_ARGUMENT (the job failed, was cancelled, or made an
/// image).
#[no_mangle]
pub unsafe extern "C" fn kiln_job_model(job: u64, model_out: *mut *mut kiln_model) -> kiln_status {
    boundary!({
        // SAFETY: the caller passes NULL or a writable pointer.
        unsafe { made_out(model_out, "model_out", || crate::jobs::job_table().model(job)) }
    })
}

/// `kiln_job_progress` first ended before `preview_step`.
const JOB_PROGRESS_OLDER: [usize; 1] = [layout_before!(kiln_job_progress, preview_step)];

/// Reads a job's state and progress without blocking (cheap enough for every
/// frame). `progress_out->struct_size` must be set first, to
/// `sizeof(kiln_job_progress)` or the older published size 16 (the layout
/// without the preview fields); other sizes are STRUCT_SIZE_MISMATCH. On
/// failure every field after `struct_size` is 0. Never starts worker threads.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_poll(job: u64, progress_out: *mut kiln_job_progress) -> kiln_status {
    boundary!({
        // SAFETY: NULL or a struct of its struct_size bytes; cleared so a failure leaves zeros.
        unsafe { clear_versioned(progress_out, &JOB_PROGRESS_OLDER) };
        non_null(progress_out, "progress_out")?;
        // SAFETY: non-null; struct_size is the first field. Checked before the id.
        check_struct_size::<kiln_job_progress>(unsafe { (*progress_out).struct_size } as usize, &JOB_PROGRESS_OLDER, "progress_out")?;
        let snap = crate::jobs::job_table().poll(job)?;
        let p = kiln_job_progress {
            struct_size: 0,
            state: snap.state as u32,
            step: snap.step,
            total_steps: snap.total_steps,
            preview_step: snap.preview_step,
            preview_width: snap.preview_size.0,
            preview_height: snap.preview_size.1,
        };
        // SAFETY: the caller's struct has its struct_size writable bytes.
        unsafe { write_versioned(progress_out, p, &JOB_PROGRESS_OLDER, "progress_out") }
    })
}

/// Blocks until the job ends or `timeout_ms` passes (for tools and bake
/// scripts; a game should poll). `*state_out` (optional) is set to 0 on
/// entry and receives the state on success. Never starts worker threads.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_wait(job: u64, timeout_ms: u32, state_out: *mut u32) -> kiln_status {
    boundary!({
        if !state_out.is_null() {
            // SAFETY: non-null; zeroed on entry as the header's convention says.
            unsafe { handles::write_out(state_out, 0) };
        }
        let state = crate::jobs::job_table().wait(job, Duration::from_millis(timeout_ms as u64))?;
        if !state_out.is_null() {
            // SAFETY: non-null.
            unsafe { handles::write_out(state_out, state as u32) };
        }
        Ok(())
    })
}

/// Asks a job to stop. A queued job never starts; a running one stops within
/// one graph call (ONNX Runtime's run is terminated mid-graph). Cancelling an
/// ended job does nothing.
#[no_mangle]
pub extern "C" fn kiln_job_cancel(job: u64) -> kiln_status {
    boundary!({ crate::jobs::job_table().cancel(job) })
}

/// Copies the job's own error message (string convention: see
/// `kiln_last_error_message`); empty unless it failed or was cancelled.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_error_message(job: u64, buf: *mut c_char, buf_len: usize, len_out: *mut usize) -> kiln_status {
    boundary!({
        // SAFETY: forwarded caller contract.
        unsafe { clear_string_outs(buf, buf_len, len_out) };
        let text = crate::jobs::job_table().error_message(job)?;
        // SAFETY: forwarded caller contract.
        unsafe { write_string(&text, buf, buf_len, len_out) }
    })
}

/// Width and height of a succeeded job's image. Both outputs are set to 0 on
/// entry. Errors: NULL_ARGUMENT, INVALID_HANDLE (unknown or freed id), BUSY
/// (queued or running), INVALID_ARGUMENT (the job failed or was cancelled, so it
/// has no image; the message carries the job's own error; or it made a model).
#[no_mangle]
pub unsafe extern "C" fn kiln_job_image_size(job: u64, width_out: *mut u32, height_out: *mut u32) -> kiln_status {
    boundary!({
        // SAFETY: each NULL or writable; zeroed on entry.
        unsafe {
            if !width_out.is_null() {
                handles::write_out(width_out, 0);
            }
            if !height_out.is_null() {
                handles::write_out(height_out, 0);
            }
        }
        non_null(width_out, "width_out")?;
        non_null(height_out, "height_out")?;
        let (w, h) = crate::jobs::job_table().with_image(job, |i| Ok((i.width as u32, i.height as u32)))?;
        // SAFETY: checked non-null.
        unsafe {
            handles::write_out(width_out, w);
            handles::write_out(height_out, h);
        }
        Ok(())
    })
}

/// Copies a succeeded job's RGBA8 image into a caller buffer with a row pitch
/// (0 = `width * 4`). Errors: as `kiln_job_image_size`, and
/// INVALID_ARGUMENT (pitch smaller than a row), BUFFER_TOO_SMALL (also a pitch
/// so large that `pitch * (height - 1)` does not fit in `size_t`).
#[no_mangle]
pub unsafe extern "C" fn kiln_job_copy_image(job: u64, pixels_out: *mut u8, pixels_len: usize, row_pitch: usize) -> kiln_status {
    boundary!({
        non_null(pixels_out, "pixels_out")?;
        crate::jobs::job_table().with_image(job, |image| {
            // SAFETY: the caller guarantees pixels_len writable bytes.
            let dst = unsafe { std::slice::from_raw_parts_mut(pixels_out, pixels_len) };
            image.copy_to(dst, row_pitch)
        })
    })
}

/// Copies the newest preview (RGBA8, `preview_width × preview_height` from
/// `kiln_job_poll`) into a caller buffer with a row pitch (0 = `width * 4`);
/// `*step_out` (optional; 0 on entry) receives the step it shows.
/// KILN_STATUS_BUSY while the job has no preview, and that includes forever
/// when none will come: `preview_interval` 0, or a job that ended (failed,
/// cancelled) before its first preview. Check `kiln_job_progress.preview_step`
/// (non-zero once a preview exists) or the job's state rather than retrying.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_copy_preview(
    job: u64,
    pixels_out: *mut u8,
    pixels_len: usize,
    row_pitch: usize,
    step_out: *mut u32,
) -> kiln_status {
    boundary!({
        if !step_out.is_null() {
            // SAFETY: non-null; zeroed on entry.
            unsafe { handles::write_out(step_out, 0) };
        }
        non_null(pixels_out, "pixels_out")?;
        let step = crate::jobs::job_table().with_preview(job, |step, image| {
            // SAFETY: the caller guarantees pixels_len writable bytes.
            let dst = unsafe { std::slice::from_raw_parts_mut(pixels_out, pixels_len) };
            image.copy_to(dst, row_pitch)?;
            Ok(step)
        })?;
        if !step_out.is_null() {
            // SAFETY: non-null.
            unsafe { handles::write_out(step_out, step) };
        }
        Ok(())
    })
}

/// Releases a job: cancels it if it has not ended and frees its memory; the id
/// becomes stale at once (every call with it returns INVALID_HANDLE, also from
/// other threads). Freeing an id twice returns KILN_STATUS_INVALID_HANDLE.
/// Its callback still receives FINISHED (see `kiln_job_callback`), so keep
/// `user_data` alive until then.
#[no_mangle]
pub extern "C" fn kiln_job_free(job: u64) -> kiln_status {
    boundary!({ crate::jobs::job_table().release(job) })
}
