//! Asynchronous jobs: submit returns at once, worker threads run jobs by
//! priority then FIFO, and every fact about a job can be polled cheaply from a
//! game's main thread (no callbacks needed, so IL2CPP/Godot can drive it).
//! A job is any of Kiln's heavy operations ([`JobWork`]): a generation, a
//! texture extended or made tileable, a super-resolution upscale, or making a
//! model (loading one, applying LoRAs, a seamless view) or an upscaler. All run on the same workers, so a
//! game that queues them never runs more graphs at once than it asked for.
//! A job ends with an image, a model or an upscaler ([`JobOutput`]).
//!
//! Jobs are named by generation-counted ids (slot index + generation), so a
//! stale or freed id is reported as such instead of touching freed memory.
//! Cancellation sets a flag checked between steps *and* terminates the ONNX
//! Runtime call in flight (`RunOptions::terminate`), so it takes effect within
//! one graph call.
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, ErrorKind, Result};
use crate::image::Rgba8Image;
use crate::model::upscaler::{UpscaleHooks, UpscaleOptions, Upscaler};
use crate::model::seamless::Seamless;
use crate::model::{Adapters, Model, ModelOptions};
use crate::pipeline::texture::Extend;
use crate::runtime::Runtime;
use crate::pipeline::{GenerateRequest, Generation, Hooks, InitImage, StepLatents, StepProgress};

/// Where a job is in its life. Values match `kiln_job_state` in the C header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum JobState {
    /// Waiting for a worker.
    Queued = 0,
    /// A worker is running it.
    Running = 1,
    /// Finished with an image.
    Succeeded = 2,
    /// Finished with an error (see the job's message).
    Failed = 3,
    /// Stopped by `cancel` before finishing.
    Cancelled = 4,
}

impl JobState {
    fn from_u32(v: u32) -> Self {
        match v {
            0 => Self::Queued,
            1 => Self::Running,
            2 => Self::Succeeded,
            3 => Self::Failed,
            _ => Self::Cancelled,
        }
    }
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// What a job does.
pub enum JobWork {
    /// Generates an image ([`Model::generate_with`]).
    Generate {
        /// The model (a cheap clone sharing its graphs).
        model: Model,
        /// What to generate.
        request: GenerateRequest,
    },
    /// Outpaints `picture` by `extend` ([`Model::extend_texture`]).
    ExtendTexture {
        /// The model.
        model: Model,
        /// How to generate the new border.
        request: GenerateRequest,
        /// The texture to extend.
        picture: InitImage,
        /// Pixels added on each side.
        extend: Extend,
    },
    /// Makes `picture` tile seamlessly ([`Model::make_tileable`]).
    MakeTileable {
        /// The model.
        model: Model,
        /// How to inpaint the band.
        request: GenerateRequest,
        /// The texture.
        picture: InitImage,
        /// Width of the inpainted band, in pixels.
        band: usize,
    },
    /// Generates an image and upscales it, in one job: what `generate
    /// --upscale` does. The upscale wraps on the model's seamless axes
    /// (`options.seamless` is replaced by them), so a tileable texture stays
    /// tileable. Progress counts the U-Net calls, then the upscale's graph
    /// runs, against their sum; previews come from the generation.
    GenerateUpscaled {
        /// The model.
        model: Model,
        /// What to generate.
        request: GenerateRequest,
        /// The upscaler, shared with its other users.
        upscaler: Arc<Upscaler>,
        /// Tiles, context, alpha (the seamless axes are the model's).
        options: UpscaleOptions,
    },
    /// Upscales `image` ([`Upscaler::upscale`]). Progress counts graph runs
    /// (tiles) instead of U-Net calls; there are no previews.
    Upscale {
        /// The upscaler, shared with its other users.
        upscaler: Arc<Upscaler>,
        /// The image to upscale.
        image: Rgba8Image,
        /// Tiles, context, seamless axes, alpha.
        options: UpscaleOptions,
    },
    /// Loads a model folder ([`Model::load_with`]); the job ends with the
    /// model. Progress counts KiB of the graph files whose sessions the load
    /// makes, as each is made (see [`JobSnapshot::total_steps`]). A cancel stops a load under
    /// way inside the session ONNX Runtime is creating (at its next check:
    /// between graph transformations, per initializer) and starts no other;
    /// one that comes after the last session was made drops the model.
    LoadModel {
        /// The runtime to load with.
        runtime: Runtime,
        /// The model folder.
        dir: std::path::PathBuf,
        /// Seamless axes, matting graph.
        options: ModelOptions,
    },
    /// `model` with a set of LoRAs and embeddings ([`Model::with_adapters`]);
    /// the job ends with the new model. Progress and cancel as `LoadModel`'s.
    WithAdapters {
        /// The model the set applies to.
        model: Model,
        /// The LoRAs and embeddings (replacing what `model` has).
        adapters: Adapters,
    },
    /// Loads a super-resolution graph ([`Upscaler::load`]); the job ends
    /// with the upscaler. Progress and cancel as `LoadModel`'s.
    LoadUpscaler {
        /// The runtime to load with.
        runtime: Runtime,
        /// The graph: a folder with `model.onnx`, or the `.onnx` file.
        path: std::path::PathBuf,
    },
    /// A view of `model` whose images tile along `axes` ([`Model::seamless`]):
    /// the job ends with the view, made at once when the model already has
    /// it. Progress and cancel as `LoadModel`'s.
    Seamless {
        /// The model the view is of.
        model: Model,
        /// The axes its images tile along.
        axes: Seamless,
    },
}

/// What a succeeded job made.
pub enum JobOutput {
    /// An image (generations, texture helpers, upscales).
    Image(Rgba8Image),
    /// A model (`LoadModel`, `WithAdapters`, `Seamless`).
    Model(Model),
    /// An upscaler (`LoadUpscaler`).
    Upscaler(Arc<Upscaler>),
}

impl JobWork {
    /// A generation and its upscale as one job ([`JobWork::GenerateUpscaled`]),
    /// checked as a submit checks it: the request as the generation checks
    /// it, then the upscale of that size with `options` on the model's
    /// seamless axes (they replace `options.seamless`: the image tiles along
    /// exactly those), so a bad one is refused before anything is queued.
    pub fn generate_upscaled(model: Model, request: GenerateRequest, upscaler: Arc<Upscaler>, options: UpscaleOptions) -> Result<Self> {
        let options = upscaled_on(&model, &options);
        let (width, height) = model.check_request(&request)?;
        upscaler.check(width, height, &options)?;
        Ok(Self::GenerateUpscaled { model, request, upscaler, options })
    }

    /// A model or upscaler made by loading graphs (progress in KiB of them).
    fn loads(&self) -> bool {
        matches!(self, Self::LoadModel { .. } | Self::WithAdapters { .. } | Self::Seamless { .. } | Self::LoadUpscaler { .. })
    }

    /// The steps a job of this work reports before it has started.
    fn planned_steps(&self) -> u32 {
        match self {
            Self::Generate { request, .. } | Self::ExtendTexture { request, .. } | Self::MakeTileable { request, .. } => {
                request.steps as u32
            }
            Self::GenerateUpscaled { model, request, upscaler, options } => request.steps as u32 + upscale_runs(model, request, upscaler, options),
            Self::Upscale { upscaler, image, options } => upscaler.runs(image, options) as u32,
            Self::LoadModel { .. } | Self::WithAdapters { .. } | Self::Seamless { .. } | Self::LoadUpscaler { .. } => 1,
        }
    }
}

/// Graph runs the upscale of a generation takes (its image is opaque: one
/// pass); 0 when the size is bad (the generation then fails first).
fn upscale_runs(model: &Model, request: &GenerateRequest, upscaler: &Upscaler, options: &UpscaleOptions) -> u32 {
    model.output_size(request).map_or(0, |(w, h)| upscaler.tiles(w, h, &upscaled_on(model, options)) as u32)
}

/// `options` with the model's seamless axes, which its images tile along.
fn upscaled_on(model: &Model, options: &UpscaleOptions) -> UpscaleOptions {
    UpscaleOptions { seamless: model.seamless_axes(), ..*options }
}

/// A snapshot of a job, as `poll` returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSnapshot {
    /// Current state.
    pub state: JobState,
    /// U-Net calls finished (an upscale: tiles finished; a load job: KiB of
    /// the graph files whose sessions are made).
    pub step: u32,
    /// U-Net calls in total (an upscale: tiles in total). A load job (a
    /// model, LoRA switch, seamless view or upscaler): 1 until it knows which
    /// graphs it opens, then their files' KiB (graph and external weights,
    /// which tracks load time); all of it once it succeeded. One that opens
    /// no session (per-stage residency, a LoRA set fed to slots): 0 of 1,
    /// then 1 of 1.
    pub total_steps: u32,
    /// Step of the newest preview (0 = none yet).
    pub preview_step: u32,
    /// Preview width and height in pixels (0 when there is none).
    pub preview_size: (u32, u32),
}

/// What an observer hears about, on the worker thread running the job (a
/// model load's progress: also on the threads that open its graphs), one
/// event at a time per job.
#[derive(Debug)]
pub enum JobEvent<'a> {
    /// A U-Net call and its scheduler step finished (an upscale: a tile's
    /// graph run; a load job: a graph's session, in KiB as
    /// [`JobSnapshot::total_steps`] says).
    Progress {
        /// Calls finished.
        step: u32,
        /// Calls in total.
        total: u32,
    },
    /// A new preview image (valid only during the call).
    Preview {
        /// The step it shows.
        step: u32,
        /// The preview, at latent resolution.
        image: &'a Rgba8Image,
    },
    /// The job ended in `state`.
    Finished {
        /// Succeeded, Failed or Cancelled.
        state: JobState,
    },
}

/// Receives a job's events on Kiln's threads (see [`JobEvent`]). Must not
/// block for long: the job waits for it.
pub trait JobObserver: Send + Sync {
    /// Called for every event of job `id`.
    fn on_event(&self, id: u64, event: &JobEvent<'_>);
}

/// How to run one job.
#[derive(Clone, Default)]
pub struct JobConfig {
    /// Higher runs first; equal priorities run in submission order.
    pub priority: i32,
    /// Make a preview every this many U-Net calls (0 = never).
    pub preview_interval: u32,
    /// Optional event receiver.
    pub observer: Option<Arc<dyn JobObserver>>,
}

struct Job {
    state: AtomicU32,
    step: AtomicU32,
    total: AtomicU32,
    cancel: AtomicBool,
    run_options: Mutex<Option<Arc<ort::session::RunOptions>>>,
    /// Reaches the sessions a model job is creating (run options only reach runs).
    load_control: crate::runtime::LoadControl,
    result: Mutex<Option<JobOutput>>,
    preview: Mutex<Option<(u32, Rgba8Image)>>,
    error: Mutex<String>,
    /// The kind of the error in `error`, so bindings can report a status.
    error_kind: Mutex<Option<ErrorKind>>,
    done: Mutex<bool>,
    done_cv: Condvar,
}

impl Job {
    fn fail(&self, kind: ErrorKind, message: impl Into<String>) {
        *self.error.lock() = message.into();
        *self.error_kind.lock() = Some(kind);
    }

    fn finish(&self, state: JobState) {
        self.state.store(state as u32, Ordering::Release);
        *self.done.lock() = true;
        self.done_cv.notify_all();
    }
}

struct Queued {
    priority: i32,
    seq: u64,
    id: u64,
    work: JobWork,
    config: JobConfig,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.priority, self.seq) == (o.priority, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    /// Higher priority first, then earlier submission.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.priority.cmp(&o.priority).then(o.seq.cmp(&self.seq))
    }
}

struct Slot {
    generation: u32,
    job: Option<Arc<Job>>,
}

struct State {
    queue: BinaryHeap<Queued>,
    /// Jobs freed while still queued: a worker reports FINISHED (cancelled)
    /// to their observer before taking new work, then drops them.
    released: Vec<Queued>,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    seq: u64,
    shutdown: bool,
}

/// Most worker threads the pool runs (`kiln_runtime_options.job_workers`).
pub const MAX_JOB_WORKERS: usize = 64;

/// The process-wide job table and its workers. Looking a job up (poll, wait,
/// cancel, free) never starts a thread; [`JobPool::submit`] starts workers up
/// to the count it asks for. Being global, it is never dropped from one of
/// its own threads.
pub fn job_table() -> &'static JobPool {
    static POOL: std::sync::OnceLock<JobPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| JobPool::new(0))
}

/// The process-wide pool with at least `runtime`'s `job_workers` threads: the
/// pool grows to the largest count any runtime that submitted asked for, and
/// never shrinks (idle workers sleep).
pub fn pool_for(runtime: &crate::runtime::Runtime) -> Result<&'static JobPool> {
    pool_with(runtime.job_workers())
}

/// The process-wide pool with at least `workers` threads (as [`pool_for`]).
pub fn pool_with(workers: usize) -> Result<&'static JobPool> {
    let pool = job_table();
    pool.ensure_workers(workers)?;
    Ok(pool)
}

/// A pool of worker threads and the table of jobs it owns.
pub struct JobPool {
    state: Arc<(Mutex<State>, Condvar)>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

fn make_id(index: u32, generation: u32) -> u64 {
    ((generation as u64) << 32) | index as u64
}

impl JobPool {
    /// Makes a pool with `workers` threads (0 = none until
    /// [`ensure_workers`](Self::ensure_workers) or a submit asks).
    pub fn new(workers: usize) -> Self {
        let state = Arc::new((
            Mutex::new(State {
                queue: BinaryHeap::new(),
                released: Vec::new(),
                slots: Vec::new(),
                free_slots: Vec::new(),
                seq: 0,
                shutdown: false,
            }),
            Condvar::new(),
        ));
        let pool = Self { state, workers: Mutex::new(Vec::new()) };
        // A thread that cannot start leaves the pool smaller; submit reports it.
        let _ = pool.ensure_workers(workers);
        pool
    }

    /// Starts worker threads until there are `count` (capped at
    /// [`MAX_JOB_WORKERS`]); never stops any. Fails only when the system
    /// cannot start a thread and the pool has none.
    pub fn ensure_workers(&self, count: usize) -> Result<()> {
        let count = count.min(MAX_JOB_WORKERS);
        let mut workers = self.workers.lock();
        while workers.len() < count {
            let state = Arc::clone(&self.state);
            let spawned = std::thread::Builder::new()
                .name(format!("kiln-worker-{}", workers.len()))
                .spawn(move || worker(&state));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) if workers.is_empty() => {
                    return Err(Error::new(ErrorKind::OutOfMemory, format!("cannot start a job worker thread: {e}")))
                }
                Err(_) => break, // run with the workers there are
            }
        }
        Ok(())
    }

    /// Worker threads running now.
    pub fn worker_count(&self) -> usize {
        self.workers.lock().len()
    }

    /// Queues a generation and returns its id at once.
    pub fn submit(&self, model: &Model, request: GenerateRequest, config: JobConfig) -> u64 {
        self.submit_work(JobWork::Generate { model: model.clone(), request }, config)
    }

    /// Queues any work and returns its id at once. The work is not checked
    /// here: check it first (as the C API's submit calls do) where a caller
    /// should hear of bad arguments before the job runs.
    pub fn submit_work(&self, work: JobWork, config: JobConfig) -> u64 {
        let job = Arc::new(Job {
            state: AtomicU32::new(JobState::Queued as u32),
            step: AtomicU32::new(0),
            total: AtomicU32::new(work.planned_steps()),
            cancel: AtomicBool::new(false),
            run_options: Mutex::new(None),
            load_control: Default::default(),
            result: Mutex::new(None),
            preview: Mutex::new(None),
            error: Mutex::new(String::new()),
            error_kind: Mutex::new(None),
            done: Mutex::new(false),
            done_cv: Condvar::new(),
        });
        let (lock, cv) = &*self.state;
        let mut st = lock.lock();
        let index = match st.free_slots.pop() {
            Some(i) => i,
            None => {
                st.slots.push(Slot { generation: 1, job: None });
                (st.slots.len() - 1) as u32
            }
        };
        let slot = &mut st.slots[index as usize];
        slot.job = Some(job);
        let id = make_id(index, slot.generation);
        st.seq += 1;
        let seq = st.seq;
        st.queue.push(Queued { priority: config.priority, seq, id, work, config });
        cv.notify_one();
        id
    }

    fn lookup(&self, id: u64) -> Result<Arc<Job>> {
        lookup(&self.state.0.lock(), id)
    }

    /// State and progress; cheap (a lock-protected table lookup and three atomic loads).
    pub fn poll(&self, id: u64) -> Result<JobSnapshot> {
        let job = self.lookup(id)?;
        let (preview_step, preview_size) = match job.preview.lock().as_ref() {
            Some((step, image)) => (*step, (image.width as u32, image.height as u32)),
            None => (0, (0, 0)),
        };
        Ok(JobSnapshot {
            state: JobState::from_u32(job.state.load(Ordering::Acquire)),
            step: job.step.load(Ordering::Relaxed),
            total_steps: job.total.load(Ordering::Relaxed),
            preview_step,
            preview_size,
        })
    }

    /// Blocks until the job ends or `timeout` passes; returns the state then.
    pub fn wait(&self, id: u64, timeout: Duration) -> Result<JobState> {
        let job = self.lookup(id)?;
        let deadline = Instant::now() + timeout;
        let mut done = job.done.lock();
        while !*done {
            if job.done_cv.wait_until(&mut done, deadline).timed_out() {
                break;
            }
        }
        drop(done);
        Ok(JobState::from_u32(job.state.load(Ordering::Acquire)))
    }

    /// Asks the job to stop: a queued job never starts, a running one stops
    /// within one graph call. No effect on an ended job.
    pub fn cancel(&self, id: u64) -> Result<()> {
        let job = self.lookup(id)?;
        cancel_job(&job);
        Ok(())
    }

    /// The job's error message (empty unless it failed or was cancelled).
    pub fn error_message(&self, id: u64) -> Result<String> {
        Ok(self.lookup(id)?.error.lock().clone())
    }

    /// The kind of the job's error (`None` unless it failed or was
    /// cancelled), so a binding can report the status a synchronous call
    /// would have returned.
    pub fn error_kind(&self, id: u64) -> Result<Option<ErrorKind>> {
        Ok(*self.lookup(id)?.error_kind.lock())
    }

    /// Runs `f` on the job's image; `Busy` while the job is not done,
    /// INVALID_ARGUMENT when it failed, was cancelled or made a model.
    pub fn with_image<T>(&self, id: u64, f: impl FnOnce(&Rgba8Image) -> Result<T>) -> Result<T> {
        self.with_output(id, "image", |output| match output {
            JobOutput::Image(image) => f(image),
            JobOutput::Model(_) => Err(Error::invalid("the job made a model, not an image: take it with kiln_job_model")),
            JobOutput::Upscaler(_) => Err(Error::invalid("the job made an upscaler, not an image: take it with kiln_job_upscaler")),
        })
    }

    /// The model a succeeded `LoadModel` / `WithAdapters` / `Seamless` job made (a cheap
    /// clone: the job keeps it until freed). `Busy` while the job is not
    /// done, INVALID_ARGUMENT when it failed, was cancelled or made an image.
    pub fn model(&self, id: u64) -> Result<Model> {
        self.with_output(id, "model", |output| match output {
            JobOutput::Model(model) => Ok(model.clone()),
            JobOutput::Image(_) => Err(Error::invalid("the job made an image, not a model: copy it with kiln_job_copy_image")),
            JobOutput::Upscaler(_) => Err(Error::invalid("the job made an upscaler, not a model: take it with kiln_job_upscaler")),
        })
    }

    /// The upscaler a succeeded `LoadUpscaler` job made (shared: the job
    /// keeps it until freed). `Busy` while the job is not done,
    /// INVALID_ARGUMENT when it failed, was cancelled or made something else.
    pub fn upscaler(&self, id: u64) -> Result<Arc<Upscaler>> {
        self.with_output(id, "upscaler", |output| match output {
            JobOutput::Upscaler(upscaler) => Ok(Arc::clone(upscaler)),
            _ => Err(Error::invalid("the job did not load an upscaler")),
        })
    }

    /// Runs `f` on what a succeeded job made; `what` names it in errors.
    fn with_output<T>(&self, id: u64, what: &str, f: impl FnOnce(&JobOutput) -> Result<T>) -> Result<T> {
        let job = self.lookup(id)?;
        let state = JobState::from_u32(job.state.load(Ordering::Acquire));
        match state {
            JobState::Succeeded => {}
            JobState::Queued | JobState::Running => {
                return Err(Error::new(ErrorKind::Busy, "the job has not finished; poll until it succeeds"))
            }
            JobState::Failed | JobState::Cancelled => {
                return Err(Error::invalid(format!("the job ended {state:?} and has no {what}: {}", job.error.lock())))
            }
        }
        let guard = job.result.lock();
        let output = guard.as_ref().ok_or_else(|| Error::internal("succeeded job without a result"))?;
        f(output)
    }

    /// Runs `f` on the newest preview; `Busy` while there is none yet.
    pub fn with_preview<T>(&self, id: u64, f: impl FnOnce(u32, &Rgba8Image) -> Result<T>) -> Result<T> {
        let job = self.lookup(id)?;
        let guard = job.preview.lock();
        match guard.as_ref() {
            Some((step, image)) => f(*step, image),
            None => Err(Error::new(ErrorKind::Busy, "no preview yet (set a preview interval and poll preview_step)")),
        }
    }

    /// Releases the job: cancels it if it has not ended, frees its image, and
    /// makes the id stale. A worker still running it stops and drops it. A job
    /// still queued is taken out of the queue and handed to a worker, which
    /// reports FINISHED (cancelled) to its observer before any other work: an
    /// observer hears FINISHED exactly once, whenever the job is freed.
    pub fn release(&self, id: u64) -> Result<()> {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock();
        let job = lookup(&st, id)?;
        cancel_job(&job);
        let index = (id & 0xFFFF_FFFF) as usize;
        let slot = &mut st.slots[index];
        slot.job = None;
        slot.generation = slot.generation.wrapping_add(1).max(1);
        st.free_slots.push(index as u32);
        if JobState::from_u32(job.state.load(Ordering::Acquire)) == JobState::Queued {
            let queue = std::mem::take(&mut st.queue).into_vec();
            let (freed, kept): (Vec<Queued>, Vec<Queued>) = queue.into_iter().partition(|q| q.id == id);
            st.queue = kept.into();
            // Without an observer nobody needs to hear of it: drop it here.
            st.released.extend(freed.into_iter().filter(|q| q.config.observer.is_some()));
            cv.notify_one();
        }
        Ok(())
    }
}

fn lookup(st: &State, id: u64) -> Result<Arc<Job>> {
    let index = (id & 0xFFFF_FFFF) as usize;
    let generation = (id >> 32) as u32;
    st.slots
        .get(index)
        .filter(|s| s.generation == generation)
        .and_then(|s| s.job.clone())
        .ok_or_else(|| Error::new(ErrorKind::InvalidHandle, format!("job {id:#x} is unknown or was already freed")))
}

fn cancel_job(job: &Job) {
    job.cancel.store(true, Ordering::Release);
    if let Some(ro) = job.run_options.lock().as_ref() {
        let _ = ro.terminate();
    }
    job.load_control.cancel();
}

fn worker(state: &(Mutex<State>, Condvar)) {
    let (lock, cv) = state;
    loop {
        let (item, job) = {
            let mut st = lock.lock();
            loop {
                if let Some(freed) = st.released.pop() {
                    drop(st);
                    if let Some(observer) = &freed.config.observer {
                        let finished = JobEvent::Finished { state: JobState::Cancelled };
                        notify(observer.as_ref(), freed.id, &finished);
                    }
                    drop(freed);
                    st = lock.lock();
                    continue;
                }
                if st.shutdown {
                    return;
                }
                if let Some(item) = st.queue.pop() {
                    match lookup(&st, item.id) {
                        Ok(job) => break (item, job),
                        Err(_) => continue, // released while queued, without an observer
                    }
                }
                cv.wait(&mut st);
            }
        };
        run_job(&item, &job);
    }
}

fn run_job(item: &Queued, job: &Arc<Job>) {
    if item.work.loads() {
        job.load_control.report_to(load_progress_report(item, job));
    }
    let state = execute(item, job);
    job.finish(state);
    if let Some(observer) = &item.config.observer {
        notify(observer.as_ref(), item.id, &JobEvent::Finished { state });
    }
}

/// Where a load job's progress goes: the job's step and total (KiB of the
/// graph files whose sessions are made, of those the load makes; see
/// `runtime::LoadControl`) and its observer. It holds the job weakly, so the
/// job's own control never keeps the job alive.
fn load_progress_report(item: &Queued, job: &Arc<Job>) -> crate::runtime::ProgressReport {
    let job = Arc::downgrade(job);
    let (id, observer) = (item.id, item.config.observer.clone());
    Arc::new(move |done, total| {
        let Some(job) = job.upgrade() else { return };
        // The total first, so a poll never sees more done than in all.
        job.total.store(total, Ordering::Relaxed);
        job.step.store(done, Ordering::Relaxed);
        if let Some(o) = observer.as_deref() {
            notify(o, id, &JobEvent::Progress { step: done, total });
        }
    })
}

/// Calls an observer, containing any panic that crosses back from it.
fn notify(observer: &dyn JobObserver, id: u64, event: &JobEvent<'_>) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| observer.on_event(id, event)));
}

/// Runs the generation and returns the state the job ends in.
fn execute(item: &Queued, job: &Job) -> JobState {
    if job.cancel.load(Ordering::Acquire) {
        job.fail(ErrorKind::Cancelled, "cancelled before it started");
        return JobState::Cancelled;
    }
    let run_options = match ort::session::RunOptions::new() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            job.fail(ErrorKind::Inference, format!("cannot create ONNX Runtime run options: {e}"));
            return JobState::Failed;
        }
    };
    *job.run_options.lock() = Some(Arc::clone(&run_options));
    // A cancel that raced the line above has already set the flag; honour it.
    if job.cancel.load(Ordering::Acquire) {
        let _ = run_options.terminate();
    }
    job.state.store(JobState::Running as u32, Ordering::Release);
    // Each job catches its own panics: a bug must fail one job, not the worker.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &item.work {
        JobWork::Upscale { upscaler, image, options } => upscale(item, job, upscaler, image, options, &run_options, 0).map(JobOutput::Image),
        JobWork::GenerateUpscaled { model, upscaler, options, .. } => generate(item, job, model, &run_options)
            .and_then(|g| {
                // The upscale's runs count on from the U-Net calls the generation made.
                let before = job.step.load(Ordering::Relaxed);
                upscale(item, job, upscaler, &g.image.to_rgba8(), &upscaled_on(model, options), &run_options, before)
            })
            .map(JobOutput::Image),
        JobWork::Generate { model, .. } | JobWork::ExtendTexture { model, .. } | JobWork::MakeTileable { model, .. } => {
            generate(item, job, model, &run_options).map(|g| JobOutput::Image(g.image.to_rgba8()))
        }
        JobWork::LoadModel { runtime, dir, options } => {
            Model::load_with(&runtime.loading_under(Some(&job.load_control)), dir, options).map(JobOutput::Model)
        }
        JobWork::WithAdapters { model, adapters } => model.with_adapters_under(adapters, Some(&job.load_control)).map(JobOutput::Model),
        JobWork::Seamless { model, axes } => model.seamless_under(*axes, &job.load_control).map(JobOutput::Model),
        JobWork::LoadUpscaler { runtime, path } => {
            Upscaler::load(&runtime.loading_under(Some(&job.load_control)), path).map(|u| JobOutput::Upscaler(Arc::new(u)))
        }
    }));
    // A cancel from now on finds nothing loading.
    job.load_control.finish();
    *job.run_options.lock() = None;
    match outcome {
        // A model nobody wants any more is dropped rather than kept for a free.
        Ok(Ok(made @ (JobOutput::Model(_) | JobOutput::Upscaler(_)))) if job.cancel.load(Ordering::Acquire) => {
            let what = if matches!(made, JobOutput::Model(_)) { "model" } else { "upscaler" };
            job.fail(ErrorKind::Cancelled, format!("cancelled while the {what} was made; it was dropped"));
            JobState::Cancelled
        }
        Ok(Ok(output)) => {
            if matches!(output, JobOutput::Model(_) | JobOutput::Upscaler(_)) {
                // All of it, whether or not the load opened all it planned
                // (told once: the last graph opened may have said so).
                let total = job.total.load(Ordering::Relaxed);
                let before = job.step.swap(total, Ordering::Relaxed);
                if let Some(o) = item.config.observer.as_deref().filter(|_| before != total) {
                    notify(o, item.id, &JobEvent::Progress { step: total, total });
                }
            }
            *job.result.lock() = Some(output);
            JobState::Succeeded
        }
        Ok(Err(e)) if e.kind() == ErrorKind::Cancelled || job.cancel.load(Ordering::Acquire) => {
            job.fail(ErrorKind::Cancelled, e.message());
            JobState::Cancelled
        }
        Ok(Err(e)) => {
            job.fail(e.kind(), e.message());
            JobState::Failed
        }
        Err(_) => {
            job.fail(ErrorKind::Internal, "internal error: the job panicked");
            JobState::Failed
        }
    }
}

/// Runs a generation-type job with progress, previews and cancellation.
fn generate(item: &Queued, job: &Job, model: &Model, run_options: &ort::session::RunOptions) -> Result<Generation> {
    // An upscale that follows in the same job counts in the total reported.
    let after = match &item.work {
        JobWork::GenerateUpscaled { model, request, upscaler, options } => upscale_runs(model, request, upscaler, options),
        _ => 0,
    };
    let observer = item.config.observer.as_deref();
    let interval = item.config.preview_interval;
    let mut on_step = |p: &StepProgress<'_>| {
        let (step, total) = (p.step as u32, p.total as u32 + after);
        job.total.store(total, Ordering::Relaxed);
        job.step.store(step, Ordering::Relaxed);
        if let Some(o) = observer {
            notify(o, item.id, &JobEvent::Progress { step, total });
        }
        // The last U-Net call has its preview (the total may count an upscale after it).
        if interval > 0 && (step % interval == 0 || p.step == p.total) {
            match model.preview(p.latents) {
                Ok(image) => {
                    if let Some(o) = observer {
                        notify(o, item.id, &JobEvent::Preview { step, image: &image });
                    }
                    *job.preview.lock() = Some((step, image));
                }
                Err(e) => model.runtime().logger().log(
                    crate::runtime::LogLevel::Warning,
                    &format!("job {:#x}: no preview: {e}", item.id),
                ),
            }
        }
    };
    let hooks = Hooks {
        cancel: Some(&job.cancel),
        on_step: Some(&mut on_step),
        run_options: Some(run_options),
        // Latents leave the device only for the previews asked for.
        step_latents: if interval > 0 { StepLatents::Interval(interval) } else { StepLatents::Never },
    };
    match &item.work {
        JobWork::Generate { request, .. } | JobWork::GenerateUpscaled { request, .. } => model.generate_with(request, hooks),
        JobWork::ExtendTexture { request, picture, extend, .. } => model.extend_texture_with(request, picture, *extend, hooks),
        JobWork::MakeTileable { request, picture, band, .. } => model.make_tileable_with(request, picture, *band, hooks),
        _ => Err(Error::internal("not a generation")),
    }
}

/// Runs an upscale job: progress counts tiles, after `before` steps the job
/// already made; the job's run options are the upscale's, so cancelling the
/// job (or the upscaler) stops its graph run.
fn upscale(
    item: &Queued,
    job: &Job,
    upscaler: &Upscaler,
    image: &Rgba8Image,
    options: &UpscaleOptions,
    run_options: &Arc<ort::session::RunOptions>,
    before: u32,
) -> Result<Rgba8Image> {
    let observer = item.config.observer.as_deref();
    let mut progress = |done: usize, total: usize| {
        let (step, total) = (before + done as u32, before + total as u32);
        job.total.store(total, Ordering::Relaxed);
        job.step.store(step, Ordering::Relaxed);
        if let Some(o) = observer {
            notify(o, item.id, &JobEvent::Progress { step, total });
        }
    };
    let hooks = UpscaleHooks { cancel: Some(&job.cancel), run_options: Some(Arc::clone(run_options)), progress: Some(&mut progress) };
    upscaler.upscale_with(image, options, hooks)
}

impl Drop for JobPool {
    fn drop(&mut self) {
        {
            let (lock, cv) = &*self.state;
            let mut st = lock.lock();
            st.shutdown = true;
            for slot in st.slots.iter().filter_map(|s| s.job.as_ref()) {
                cancel_job(slot);
            }
            cv.notify_all();
        }
        for w in self.workers.get_mut().drain(..) {
            let _ = w.join();
        }
    }
}
