//! The engine-independent half of `KilnGenerator`: one model folder, loaded
//! on first use off the main thread, and `start`, which turns a prompt and
//! its options into a [`Tracker`] at once.
//!
//! Everything slow (loading ONNX Runtime, the model and a refiner, merging
//! LoRAs and embeddings into a view, rewriting the graphs for a seamless
//! view, loading an upscaler) happens for a short-lived preparation thread
//! (each load as a Kiln load job whose progress the job's tracker reports,
//! see [`crate::loading`]) that ends by submitting one job to Kiln's pool,
//! so `generate` never blocks a frame. With an upscaler ([`UpscaleSettings`]) that job is a
//! `JobWork::GenerateUpscaled`: Kiln generates, then upscales the image with
//! the model view's seamless axes (the job's `seamless`) before `done`
//! carries it, as `kiln::pipeline::outputs::finish` orders it (the upscale
//! first; the node has no post-processing after it), with one progress count
//! and one cancel. [`Session::upscale`] queues a `JobWork::Upscale` for a
//! given image. So every graph runs on Kiln's job workers, and a cancel stops
//! one job's graph run without touching another's on the same graph.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, TryLockError};

use kiln::jobs::{JobConfig, JobPool, JobWork};
use kiln::model::attention::Attention;
use kiln::model::quantize::Quantization;
use kiln::model::seamless::Seamless;
use kiln::model::upscaler::{UpscaleAlpha, UpscaleOptions, Upscaler};
use kiln::model::{Adapters, EmbeddingSpec, ModelInfo};
use kiln::pipeline::handoff::Refiner;
use kiln::{Error, ErrorKind, Model, ModelOptions, Rgba8Image, Runtime, RuntimeOptions};

use crate::loading::{self, LoadMeter, SharedLoad};
use crate::options::{self, GenerateOptions, OptionValue};
use crate::tracker::{Prepared, Tracker};

/// How many adapter views a session keeps: each holds its own U-Net and/or
/// text-encoder sessions (an SD 1.5 U-Net is about 1.7 GB), so only the
/// most recently used sets stay; two covers a game alternating two styles.
/// (A model loaded with LoRA slots shares its sessions with views of plain
/// low-rank LoRAs, which then hold only the LoRAs' factors.)
pub const ADAPTER_VIEWS_KEPT: usize = 2;

/// Where the model and ONNX Runtime come from, and how they use a GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionConfig {
    /// The model folder (diffusers/optimum ONNX layout), as a file-system path.
    pub model_dir: PathBuf,
    /// ONNX Runtime to load; `None` searches (`ORT_DYLIB_PATH`, then beside
    /// the extension's library, where the addon ships it).
    pub onnxruntime_path: Option<PathBuf>,
    /// The GPU settings of the session's runtime.
    pub gpu: GpuSettings,
    /// How the model's and a refiner's weights are stored: the node's
    /// `quantization` property, a `kiln::model::quantize::Quantization` by
    /// name (`none`, `int8`; "" = `none`). Checked when the model loads, so
    /// a name Kiln does not know fails the job (status 101).
    pub quantization: String,
    /// How the model's and a refiner's U-Net run attention: the node's
    /// `attention` property, a `kiln::model::attention::Attention` by name
    /// (`auto`, `exported`, `fused`; "" = `auto`). Checked when the model
    /// loads, so a name Kiln does not know fails the job (status 101).
    pub attention: String,
    /// Load the model and a refiner with LoRA slots (the node's `lora_slots`
    /// property, `ModelOptions::lora_slots`): plain low-rank LoRAs are then
    /// fed to the graphs at run time instead of merged, so an adapter view
    /// makes no session and copies no weight. Refused with the static U-Net
    /// or CUDA graphs (status 203 when the model loads).
    pub lora_slots: bool,
}

impl SessionConfig {
    /// Kiln's options for loading the model folder (`Model::load_with`), or
    /// why a property is not one Kiln takes (INVALID_ARGUMENT naming it).
    pub fn model_options(&self) -> Result<ModelOptions, Error> {
        Ok(ModelOptions {
            quantization: parse_quantization(&self.quantization)?,
            attention: parse_attention(&self.attention)?,
            lora_slots: self.lora_slots,
            ..Default::default()
        })
    }
}

/// The node's `quantization` property as Kiln's [`Quantization`]: `none` or
/// `int8` (case and surrounding spaces ignored; "" = `none`), or
/// INVALID_ARGUMENT naming the property and the names Kiln knows.
pub fn parse_quantization(name: &str) -> Result<Quantization, Error> {
    match name.trim() {
        "" => Ok(Quantization::None),
        n => Quantization::from_name(&n.to_ascii_lowercase())
            .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, format!("quantization: {n:?} is not none or int8"))),
    }
}

/// The node's `attention` property as Kiln's [`Attention`]: `auto`,
/// `exported` or `fused` (case and surrounding spaces ignored; "" = `auto`),
/// or INVALID_ARGUMENT naming the property and the names Kiln knows.
pub fn parse_attention(name: &str) -> Result<Attention, Error> {
    match name.trim() {
        "" => Ok(Attention::Auto),
        n => Attention::from_name(&n.to_ascii_lowercase())
            .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, format!("attention: {n:?} is not auto, exported or fused"))),
    }
}

/// A value in the node's `model_info()` dictionary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoValue {
    /// A size or count.
    Int(i64),
    /// A yes/no fact.
    Bool(bool),
    /// A name, such as the quantization's (`none`, `int8`).
    Name(&'static str),
}

/// A loaded model's facts as the node's `model_info()` reports them: the C
/// API's `kiln_model_info` field names, the flags as bools,
/// `quantization` by name (`Quantization::name`: `none`, `int8`),
/// `fused_attention` (the U-Net's attention layers that run fused; 0 = none)
/// and `lora_slots` (the U-Net's layers with a LoRA slot; 0 = loaded without).
pub fn info_entries(info: &ModelInfo) -> Vec<(&'static str, InfoValue)> {
    use InfoValue::*;
    let int = |n: usize| Int(i64::try_from(n).unwrap_or(i64::MAX));
    vec![
        ("default_size", int(info.default_size)),
        ("size_multiple", int(info.size_multiple)),
        ("latent_channels", int(info.latent_channels)),
        ("vae_downsampling", int(info.vae_downsampling)),
        ("embedding_dim", int(info.embedding_dim)),
        ("has_vae_encoder", Bool(info.has_vae_encoder)),
        ("has_matting", Bool(info.has_matting)),
        ("quantization", Name(info.quantization.name())),
        ("fused_attention", int(info.fused_attention)),
        ("lora_slots", int(info.lora_slots)),
    ]
}

/// How the session's runtime uses a GPU: the node's GPU properties, as
/// `kiln::runtime::ProviderPolicy` takes them. The default is the CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuSettings {
    /// Execution providers, best first, by Kiln's names (`cuda`, `tensorrt`,
    /// `directml`, `coreml`, `cpu`); empty = the CPU. One the ONNX Runtime
    /// in use lacks is skipped (logged) unless `require_provider` is set.
    pub providers: Vec<String>,
    /// Fail the model load instead of falling back to the CPU.
    pub require_provider: bool,
    /// GPU index (CUDA, TensorRT) or adapter index (DirectML).
    pub device_id: i64,
    /// `fast` (TF32 on CUDA; the default, also when empty) or `exact`.
    pub gpu_math: String,
    /// MiB each CUDA session's memory arena may hold; 0 = no cap. A job that
    /// needs more fails with status 500 (out of memory); the node stays usable.
    pub gpu_memory_limit_mib: i64,
    /// Run the U-Net specialised to each job's size and batch.
    pub static_unet: bool,
    /// CUDA graph replay of the specialised U-Net (implies `static_unet`).
    pub cuda_graph: bool,
    /// Keep the latents on the U-Net's device between steps.
    pub device_latents: bool,
}

impl GpuSettings {
    /// The runtime's provider policy, or why a setting is not one Kiln knows.
    pub fn provider_policy(&self) -> Result<kiln::runtime::ProviderPolicy, Error> {
        use kiln::runtime::{GpuMath, Provider};
        let bad = |what: String| Error::new(ErrorKind::InvalidArgument, what);
        let mut preferred = Vec::new();
        for name in self.providers.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            let p = Provider::from_name(&name.to_ascii_lowercase()).ok_or_else(|| {
                let known: Vec<&str> = Provider::ALL.iter().map(|p| p.short_name()).collect();
                bad(format!("providers: unknown provider {name:?} (Kiln knows {})", known.join(", ")))
            })?;
            if !preferred.contains(&p) {
                preferred.push(p);
            }
        }
        let gpu_math = match self.gpu_math.trim() {
            "" => GpuMath::default(),
            m => GpuMath::from_name(&m.to_ascii_lowercase()).ok_or_else(|| bad(format!("gpu_math: {m:?} is not fast or exact")))?,
        };
        let gpu_memory_limit = usize::try_from(self.gpu_memory_limit_mib)
            .ok()
            .and_then(|mib| mib.checked_mul(1 << 20))
            .ok_or_else(|| bad(format!("gpu_memory_limit_mb: {} is not a size in MiB this machine can address", self.gpu_memory_limit_mib)))?;
        let device_id = i32::try_from(self.device_id)
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| bad(format!("gpu_device: {} is not a device index", self.device_id)))?;
        Ok(kiln::runtime::ProviderPolicy {
            preferred,
            device_id,
            require: self.require_provider,
            gpu_math,
            gpu_memory_limit,
            static_unet: self.static_unet,
            cuda_graph: self.cuda_graph,
            device_latents: self.device_latents,
            ..Default::default()
        })
    }
}

/// The node's upscale properties: with a `path`, every generated image is
/// upscaled before `done` carries it, and `upscale_image` works. The numbers
/// are the node's ints as they are, checked by [`UpscaleSettings::options`]
/// so a bad one fails the job (status 101) instead of being clamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpscaleSettings {
    /// The upscaler (`upscaler_path`): a folder holding `model.onnx` (and
    /// optionally `config.json`) or an `.onnx` file (configured by the
    /// `.json` of the same name beside it), as a file-system path; empty = off.
    pub path: PathBuf,
    /// `upscale_tile`: tile side in input pixels, 0 = the whole image in one
    /// run (graphs with a fixed input size decide for themselves). 256.
    pub tile: i64,
    /// `upscale_context`: extra input pixels each tile reads on every side. 16.
    pub context: i64,
    /// `upscale_alpha`: `graph` (through the net, twice the work) or
    /// `bilinear`; "" = `graph`. Only images with transparency use it.
    pub alpha: String,
}

impl Default for UpscaleSettings {
    /// Off, with Kiln's defaults (`UpscaleOptions::default()`).
    fn default() -> Self {
        let d = UpscaleOptions::default();
        Self { path: PathBuf::new(), tile: d.tile.into(), context: d.context.into(), alpha: String::new() }
    }
}

impl UpscaleSettings {
    /// Whether no upscaler is set (`upscaler_path` empty).
    pub fn is_off(&self) -> bool {
        self.path.as_os_str().is_empty()
    }

    /// Kiln's options for an image that tiles along `seamless`, or why a
    /// property is not one Kiln takes (INVALID_ARGUMENT naming it).
    pub fn options(&self, seamless: Seamless) -> Result<UpscaleOptions, Error> {
        let bad = |what: String| Error::new(ErrorKind::InvalidArgument, what);
        let tile = u32::try_from(self.tile)
            .map_err(|_| bad(format!("upscale_tile: {} is not a tile side in pixels (0 = the whole image)", self.tile)))?;
        let context = u32::try_from(self.context)
            .map_err(|_| bad(format!("upscale_context: {} is not a number of pixels", self.context)))?;
        let alpha = match self.alpha.trim().to_ascii_lowercase().as_str() {
            "" | "graph" => UpscaleAlpha::Graph,
            "bilinear" => UpscaleAlpha::Bilinear,
            other => return Err(bad(format!("upscale_alpha: {other:?} is not graph or bilinear"))),
        };
        Ok(UpscaleOptions { tile, context, seamless, alpha })
    }
}

/// What a session has loaded, shared with its preparation threads. Each
/// part has its own lock, held while it loads, so concurrent jobs wanting
/// the same thing share one load; a failed load is not kept.
#[derive(Default)]
struct Loaded {
    /// ONNX Runtime with the session's settings, made on first use; the
    /// model, refiners and the upscaler all run on it.
    runtime: Mutex<Option<Runtime>>,
    /// The model folder's model, loaded on the first job.
    model: Mutex<Option<Model>>,
    /// Its load, which the jobs that wait for it report too.
    model_load: Arc<SharedLoad>,
    /// Views of `model` with adapters merged, most recently used last.
    views: Mutex<Vec<(Adapters, Model)>>,
    /// Adapter views built so far (for tests and diagnostics).
    views_built: AtomicU64,
    /// Refiner models by folder, loaded with the model's runtime.
    refiners: Mutex<Vec<(PathBuf, Model)>>,
    /// Refiner views with a job's embeddings, by folder and embedding set,
    /// most recently used last.
    refiner_views: Mutex<Vec<((PathBuf, Vec<EmbeddingSpec>), Model)>>,
    /// The upscaler and the path it was loaded from: one at a time, loaded
    /// again when a job names another path.
    upscaler: Mutex<Option<(PathBuf, Arc<Upscaler>)>>,
    /// Upscalers loaded so far (for tests and diagnostics).
    upscalers_loaded: AtomicU64,
}

/// A model folder and the jobs generated from it.
pub struct Session {
    config: SessionConfig,
    loaded: Arc<Loaded>,
}

impl Session {
    /// A session for `config`; nothing is loaded yet.
    pub fn new(config: SessionConfig) -> Self {
        Self { config, loaded: Arc::new(Loaded::default()) }
    }

    /// The model folder's model once a job has loaded it (for tests and
    /// diagnostics: its runtime's settings, `resident_graphs`).
    pub fn loaded_model(&self) -> Option<Model> {
        lock(&self.loaded.model).clone()
    }

    /// The refiner loaded from folder `path` for a job's `refiner` option, if
    /// one has been (for tests and diagnostics: its `info`).
    pub fn loaded_refiner(&self, path: &Path) -> Option<Model> {
        lock(&self.loaded.refiners).iter().find(|(p, _)| p == path).map(|(_, m)| m.clone())
    }

    /// The loaded model's facts (`Model::info`: sizes, `quantization`,
    /// `fused_attention`, `lora_slots`...), or `None` before a job has loaded it and while
    /// one is loading it (never waits for a load, so the node's main thread
    /// can ask each frame).
    pub fn model_info(&self) -> Option<ModelInfo> {
        match self.loaded.model.try_lock() {
            Ok(guard) => guard.as_ref().map(Model::info),
            Err(TryLockError::Poisoned(p)) => p.into_inner().as_ref().map(Model::info),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// How many adapter views (`loras` / `embeddings` sets, and a refiner's
    /// `embeddings` sets) this session has built; a job whose set is cached
    /// reuses its view and adds none.
    pub fn adapter_views_built(&self) -> u64 {
        self.loaded.views_built.load(Ordering::Relaxed)
    }

    /// How many upscalers this session has loaded: one per `upscaler_path`
    /// change (jobs with the same path share the loaded graph).
    pub fn upscalers_loaded(&self) -> u64 {
        self.loaded.upscalers_loaded.load(Ordering::Relaxed)
    }

    /// Where this session loads from.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Kiln's job pool, which every session's jobs run in.
    pub fn pool() -> &'static JobPool {
        // The process-wide job table; each submit grows its workers to the
        // submitting runtime's `job_workers` (kiln::jobs::pool_for).
        kiln::jobs::job_table()
    }

    /// Starts a generation: bad options give a tracker that fails on its
    /// first update; good ones a tracker that follows a preparation thread.
    pub fn start(&self, prompt: &str, entries: &[(String, OptionValue)]) -> Tracker {
        self.start_upscaled(prompt, entries, &UpscaleSettings::default())
    }

    /// As [`Session::start`], and with an upscaler in `upscale` the image is
    /// upscaled (with the job's `seamless` axes) before `done` carries it, in
    /// the same Kiln job (`JobWork::GenerateUpscaled`, at the job's
    /// priority): `progress` counts the U-Net calls, then the upscale's tiles,
    /// against their sum from the first event, and a cancel stops either
    /// part. The upscaler is loaded and the upscale checked on the
    /// preparation thread, before the job is submitted, so a bad upscaler or
    /// a result too big to make fails the job without generating.
    pub fn start_upscaled(&self, prompt: &str, entries: &[(String, OptionValue)], upscale: &UpscaleSettings) -> Tracker {
        let (parsed, upscale) = match parse_job(prompt, entries, upscale) {
            Ok(job) => job,
            Err(e) => return Tracker::rejected(e),
        };
        self.preparing(move |loaded, config, loads| {
            let (model, request, job) = prepare(loaded, config, parsed, loads)?;
            let id = match upscale {
                Some((path, options)) => {
                    let upscaler = upscaler(loaded, &runtime(loaded, config)?, &path, loads)?;
                    submit_generate_upscaled(model, request, upscaler, options, job)?
                }
                None => kiln::jobs::pool_for(model.runtime())?.submit(&model, request, job),
            };
            Ok(Prepared::Job(id))
        })
    }

    /// Loads what a job with these options needs (the model, its adapter and
    /// seamless views, a refiner, with `upscale` the upscaler) and runs
    /// nothing: `KilnGenerator.prepare`, for a loading screen. The tracker
    /// reports each load as `generate`'s does and ends with
    /// [`Event::Prepared`](crate::tracker::Event::Prepared); a later job with
    /// the same options finds everything loaded. Bad options fail as they
    /// would fail that job.
    pub fn prepare(&self, entries: &[(String, OptionValue)], upscale: &UpscaleSettings) -> Tracker {
        let (parsed, upscale) = match parse_job("", entries, upscale) {
            Ok(job) => job,
            Err(e) => return Tracker::rejected(e),
        };
        self.preparing(move |loaded, config, loads| {
            prepare(loaded, config, parsed, loads)?;
            if let Some((path, _)) = upscale {
                upscaler(loaded, &runtime(loaded, config)?, &path, loads)?;
            }
            Ok(Prepared::Ready)
        })
    }

    /// Upscales `image` alone (`KilnGenerator.upscale_image`): a preparation
    /// thread loads the upscaler if needed and queues an upscale job in
    /// Kiln's pool (priority 0), whose `progress` counts its tiles and which
    /// is reported like a generation's `done` / `failed`. Needs no model
    /// (only ONNX Runtime); `seamless` (`none`, `x`, `y`, `xy`) names the
    /// axes the image tiles along.
    pub fn upscale(&self, image: Rgba8Image, seamless: &str, settings: &UpscaleSettings) -> Tracker {
        let Some(seamless) = Seamless::from_name(seamless) else {
            let e = format!("seamless: unknown axes {seamless:?}; one of none, x, y, xy");
            return Tracker::rejected(Error::new(ErrorKind::InvalidArgument, e));
        };
        if settings.is_off() {
            return Tracker::rejected(Error::new(
                ErrorKind::InvalidArgument,
                "upscaler_path is empty; set it to an upscaler (a folder holding model.onnx, or an .onnx file)",
            ));
        }
        let options = match settings.options(seamless) {
            Ok(o) => o,
            Err(e) => return Tracker::rejected(e),
        };
        let path = settings.path.clone();
        self.preparing(move |loaded, config, loads| {
            let upscaler = upscaler(loaded, &runtime(loaded, config)?, &path, loads)?;
            Ok(Prepared::Job(submit_upscale(upscaler, image, options)?))
        })
    }

    /// A tracker following `work` on a new preparation thread, whose loads
    /// report to the tracker's [`LoadMeter`].
    fn preparing(
        &self,
        work: impl FnOnce(&Loaded, &SessionConfig, &Arc<LoadMeter>) -> Result<Prepared, Error> + Send + 'static,
    ) -> Tracker {
        let (tx, rx) = mpsc::channel();
        let (config, loaded) = (self.config.clone(), Arc::clone(&self.loaded));
        let meter = Arc::new(LoadMeter::default());
        let loads = Arc::clone(&meter);
        let spawned = std::thread::Builder::new().name("kiln-godot-prepare".into()).spawn(move || {
            send_or_release(&tx, work(&loaded, &config, &loads));
        });
        match spawned {
            Ok(_) => Tracker::preparing(rx, meter),
            Err(e) => Tracker::rejected(Error::new(ErrorKind::Internal, format!("cannot start a thread: {e}"))),
        }
    }
}

/// A job's options, and with the node's upscaler set its path and the
/// upscale's options (on the job's seamless axes): what `generate` and
/// `prepare` check before a preparation thread starts.
fn parse_job(
    prompt: &str,
    entries: &[(String, OptionValue)],
    upscale: &UpscaleSettings,
) -> Result<(GenerateOptions, Option<(PathBuf, UpscaleOptions)>), Error> {
    let parsed = options::parse(prompt, entries)?;
    let upscale = match upscale.is_off() {
        true => None,
        false => Some((upscale.path.clone(), upscale.options(parsed.seamless)?)),
    };
    Ok((parsed, upscale))
}

/// Sends the Kiln job a preparation thread submitted (or why it could not)
/// to its tracker. The receiver is gone only when the node was freed (or
/// left the tree): nobody will read a job submitted meanwhile, so it is
/// freed (cancelled) at once.
fn send_or_release(tx: &mpsc::Sender<Result<Prepared, Error>>, submitted: Result<Prepared, Error>) {
    if let Err(mpsc::SendError(Ok(Prepared::Job(id)))) = tx.send(submitted) {
        let _ = Session::pool().release(id);
    }
}

/// Queues the upscale of `image` in Kiln's pool (priority 0, with at least
/// the workers the upscaler's runtime asks for) and returns its job id; a
/// size it cannot upscale fails here, before anything is queued (Kiln's
/// `Upscaler::check`).
fn submit_upscale(upscaler: Arc<Upscaler>, image: Rgba8Image, options: UpscaleOptions) -> Result<u64, Error> {
    upscaler.check(image.width, image.height, &options)?;
    let pool = kiln::jobs::pool_with(upscaler.job_workers())?;
    Ok(pool.submit_work(JobWork::Upscale { upscaler, image, options }, JobConfig::default()))
}

/// Queues the generation of `request` on `model` and the upscale of its
/// image as one Kiln job (`JobWork::GenerateUpscaled`, with at least the
/// workers the model's and the upscaler's runtimes ask for) and returns its
/// id. Checked first by `JobWork::generate_upscaled`, as
/// `kiln_job_submit_upscaled` checks it, so a request the model refuses or
/// an upscale that cannot run (the result too big...) fails here, before
/// anything is queued, with Kiln's status. The upscale wraps on the model
/// view's seamless axes (the job's `seamless`), which replace
/// `options.seamless`.
fn submit_generate_upscaled(
    model: Model,
    request: kiln::GenerateRequest,
    upscaler: Arc<Upscaler>,
    options: UpscaleOptions,
    job: JobConfig,
) -> Result<u64, Error> {
    let pool = kiln::jobs::pool_with(model.runtime().job_workers().max(upscaler.job_workers()))?;
    Ok(pool.submit_work(JobWork::generate_upscaled(model, request, upscaler, options)?, job))
}

/// The upscaler at `path`, loaded with `runtime` unless it is the one loaded
/// last. Errors are Kiln's (200 no such file, 201 not an upscaler graph...),
/// their message prefixed with the property's name.
fn upscaler(loaded: &Loaded, runtime: &Runtime, path: &Path, meter: &Arc<LoadMeter>) -> Result<Arc<Upscaler>, Error> {
    let mut slot = lock(&loaded.upscaler);
    if let Some((p, u)) = slot.as_ref() {
        if p == path {
            return Ok(Arc::clone(u));
        }
    }
    // One upscaler at a time: let the old graph go before the new one loads.
    *slot = None;
    let work = JobWork::LoadUpscaler { runtime: runtime.clone(), path: path.to_path_buf() };
    let u = loading::upscaler(meter, "upscaler", work).map_err(|e| Error::new(e.kind(), format!("upscaler_path: {}", e.message())))?;
    loaded.upscalers_loaded.fetch_add(1, Ordering::Relaxed);
    *slot = Some((path.to_path_buf(), Arc::clone(&u)));
    Ok(u)
}

/// On the preparation thread: the model view the job runs on (adapters
/// merged, then seamless), its request (with the refiner loaded), and its
/// job settings. Each load reports to `meter` under its own name.
fn prepare(
    loaded: &Loaded,
    config: &SessionConfig,
    parsed: GenerateOptions,
    meter: &Arc<LoadMeter>,
) -> Result<(Model, kiln::GenerateRequest, JobConfig), Error> {
    let base = model(loaded, config, meter)?;
    let model = adapter_view(loaded, &base, &parsed.adapters, meter)?;
    let model = seamless(model, parsed.seamless, meter, "seamless")?;
    let mut request = parsed.request;
    if let Some(choice) = &parsed.refiner {
        // The refiner reads the same prompt, so it takes the embeddings too
        // (an SDXL file's `clip_g`); it decodes the image, so it tiles alike.
        let refiner = refiner_model(loaded, &base, config, &choice.path, meter)?;
        let refiner = refiner_view(loaded, refiner, &choice.path, &parsed.adapters.embeddings, meter)?;
        let refiner = seamless(refiner, parsed.seamless, meter, "refiner_seamless")?;
        request.refiner = Some(Refiner { model: refiner, start: choice.start });
    }
    let job = JobConfig { priority: parsed.priority, preview_interval: parsed.preview_interval, observer: None };
    Ok((model, request, job))
}

/// `model`'s view tiling on `axes` (made at once when the model has it).
fn seamless(model: Model, axes: Seamless, meter: &Arc<LoadMeter>, what: &'static str) -> Result<Model, Error> {
    if axes == Seamless::None { Ok(model) } else { loading::model(meter, what, JobWork::Seamless { model, axes }) }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `base` with `adapters` merged: the cached view for this set, or a new one
/// (slow: weights are merged and sessions made; on a model loaded with LoRA
/// slots, plain low-rank LoRAs are fed to its sessions instead, in
/// milliseconds, and Kiln merges only the other kinds). An empty set is `base`.
fn adapter_view(loaded: &Loaded, base: &Model, adapters: &Adapters, meter: &Arc<LoadMeter>) -> Result<Model, Error> {
    if adapters.loras.is_empty() && adapters.embeddings.is_empty() {
        return Ok(base.clone());
    }
    cached_view(&loaded.views, adapters.clone(), &loaded.views_built, || {
        // A missing file is the commonest mistake: name its entry before any work.
        let files = adapter_entries(adapters);
        if let Some((key, path)) = files.iter().find(|(_, p)| !p.is_file()) {
            return Err(Error::new(ErrorKind::ModelNotFound, format!("options[\"{key}\"]: no such file {}", path.display())));
        }
        let work = JobWork::WithAdapters { model: base.clone(), adapters: adapters.clone() };
        loading::model(meter, "adapters", work).map_err(|e| name_entry(e, &files, adapters))
    })
}

/// The view cached under `key` in `cache` (most recently used last, at most
/// `ADAPTER_VIEWS_KEPT`), or a new one from `make`, counted in `built`.
fn cached_view<K: PartialEq>(cache: &Mutex<Vec<(K, Model)>>, key: K, built: &AtomicU64, make: impl FnOnce() -> Result<Model, Error>) -> Result<Model, Error> {
    let mut views = lock(cache);
    if let Some(i) = views.iter().position(|(k, _)| *k == key) {
        let hit = views.remove(i);
        let view = hit.1.clone();
        views.push(hit);
        return Ok(view);
    }
    let view = make()?;
    built.fetch_add(1, Ordering::Relaxed);
    if views.len() >= ADAPTER_VIEWS_KEPT {
        views.remove(0);
    }
    views.push((key, view.clone()));
    Ok(view)
}

/// Each adapter file with the option that names it (`loras[0].path`).
fn adapter_entries(adapters: &Adapters) -> Vec<(String, PathBuf)> {
    let loras = adapters.loras.iter().enumerate().map(|(i, l)| (format!("loras[{i}].path"), l.path.clone()));
    let embeddings = adapters.embeddings.iter().enumerate().map(|(i, e)| (format!("embeddings[{i}].path"), e.path.clone()));
    loras.chain(embeddings).collect()
}

/// Kiln's error for an adapter set, prefixed with the one entry its message
/// points at (by path, file name, or an embedding's token: the given one or
/// the file name without extension), or the only entry, else the lists given.
fn name_entry(e: Error, files: &[(String, PathBuf)], adapters: &Adapters) -> Error {
    let message = e.message();
    let lora_tokens = adapters.loras.iter().map(|_| None);
    let tokens = adapters.embeddings.iter().map(|e| {
        e.token.clone().or_else(|| e.path.file_stem().map(|s| s.to_string_lossy().into_owned()))
    });
    let hits: Vec<&str> = files
        .iter()
        .zip(lora_tokens.chain(tokens))
        .filter(|((_, path), token)| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            message.contains(&path.display().to_string())
                || (!name.is_empty() && message.contains(&name))
                || token.as_ref().is_some_and(|t| message.contains(&format!("embedding {t}")))
        })
        .map(|((key, _), _)| key.as_str())
        .collect();
    let key = match (hits.as_slice(), files) {
        ([one], _) => one.to_string(),
        ([], [(only, _)]) => only.clone(),
        _ => match (adapters.loras.is_empty(), adapters.embeddings.is_empty()) {
            (false, true) => "loras".into(),
            (true, false) => "embeddings".into(),
            _ => "loras\"], options[\"embeddings".into(),
        },
    };
    Error::new(e.kind(), format!("options[\"{key}\"]: {message}"))
}

/// The refiner in folder `path`, loaded on first use with the model's
/// runtime and load options (the node's `quantization`, `attention` and
/// `lora_slots` cover both models).
fn refiner_model(loaded: &Loaded, base: &Model, config: &SessionConfig, path: &Path, meter: &Arc<LoadMeter>) -> Result<Model, Error> {
    let mut refiners = lock(&loaded.refiners);
    if let Some((_, m)) = refiners.iter().find(|(p, _)| p == path) {
        return Ok(m.clone());
    }
    // The options `base` loaded with (they parsed then).
    let options = config.model_options()?;
    let work = JobWork::LoadModel { runtime: base.runtime().clone(), dir: path.to_path_buf(), options };
    let m = loading::model(meter, "refiner", work).map_err(|e| Error::new(e.kind(), format!("options[\"refiner\"]: {}", e.message())))?;
    refiners.push((path.to_path_buf(), m.clone()));
    Ok(m)
}

/// `refiner` (from folder `path`) with `embeddings` added: the cached view
/// for this set, or a new one (its encoder's session is made). None: `refiner`.
fn refiner_view(loaded: &Loaded, refiner: Model, path: &Path, embeddings: &[EmbeddingSpec], meter: &Arc<LoadMeter>) -> Result<Model, Error> {
    if embeddings.is_empty() {
        return Ok(refiner);
    }
    let adapters = Adapters { embeddings: embeddings.to_vec(), ..Default::default() };
    cached_view(&loaded.refiner_views, (path.to_path_buf(), embeddings.to_vec()), &loaded.views_built, || {
        let work = JobWork::WithAdapters { model: refiner, adapters: adapters.clone() };
        loading::model(meter, "refiner_adapters", work).map_err(|e| {
            let named = name_entry(e, &adapter_entries(&adapters), &adapters);
            Error::new(named.kind(), format!("options[\"refiner\"] with {}", named.message()))
        })
    })
}

/// The session's ONNX Runtime, made with its settings on first use.
fn runtime(loaded: &Loaded, config: &SessionConfig) -> Result<Runtime, Error> {
    let mut guard = lock(&loaded.runtime);
    if let Some(rt) = guard.as_ref() {
        return Ok(rt.clone());
    }
    let providers = config.gpu.provider_policy()?;
    let runtime = Runtime::new(&RuntimeOptions { onnxruntime_path: config.onnxruntime_path.clone(), providers, ..Default::default() })?;
    *guard = Some(runtime.clone());
    Ok(runtime)
}

/// The session's model, loading it (and ONNX Runtime) if this is the first use.
/// Concurrent first jobs wait on the lock and share one load.
fn model(loaded: &Loaded, config: &SessionConfig, meter: &Arc<LoadMeter>) -> Result<Model, Error> {
    let mut guard = match loaded.model.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => {
            // Another job's preparation holds it, most likely loading it: this job reports that load.
            loaded.model_load.wait_with(meter);
            lock(&loaded.model)
        }
    };
    if let Some(m) = guard.as_ref() {
        return Ok(m.clone());
    }
    if config.model_dir.as_os_str().is_empty() {
        return Err(Error::new(ErrorKind::InvalidArgument, "model_path is empty; set it to a Kiln model folder"));
    }
    let options = config.model_options()?;
    let work = JobWork::LoadModel { runtime: runtime(loaded, config)?, dir: config.model_dir.clone(), options };
    let model = loading::shared_model(meter, &loaded.model_load, "model", work)?;
    *guard = Some(model.clone());
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upscale_properties_become_kiln_options_or_name_the_bad_one() {
        let d = UpscaleSettings::default();
        assert!(d.is_off());
        assert_eq!(d.options(Seamless::None).unwrap(), UpscaleOptions::default(), "Kiln's defaults: tile 256, context 16, alpha through the graph");
        let s = UpscaleSettings { path: "up.onnx".into(), tile: 0, context: 4, alpha: " Bilinear ".into() };
        assert!(!s.is_off());
        assert_eq!(s.options(Seamless::Xy).unwrap(), UpscaleOptions { tile: 0, context: 4, seamless: Seamless::Xy, alpha: UpscaleAlpha::Bilinear });
        assert_eq!(UpscaleSettings { alpha: "graph".into(), ..d.clone() }.options(Seamless::X).unwrap().alpha, UpscaleAlpha::Graph);
        for (bad, want) in [
            (UpscaleSettings { tile: -1, ..d.clone() }, "upscale_tile: -1 is not a tile side in pixels (0 = the whole image)"),
            (UpscaleSettings { tile: 1 << 40, ..d.clone() }, "upscale_tile: 1099511627776 is not a tile side in pixels (0 = the whole image)"),
            (UpscaleSettings { context: -1, ..d.clone() }, "upscale_context: -1 is not a number of pixels"),
            (UpscaleSettings { alpha: "nearest".into(), ..d.clone() }, "upscale_alpha: \"nearest\" is not graph or bilinear"),
        ] {
            let e = bad.options(Seamless::None).unwrap_err();
            assert_eq!((e.kind(), e.message()), (ErrorKind::InvalidArgument, want));
        }
    }

    #[test]
    fn quantization_property_takes_kilns_names_and_rejects_others() {
        for (name, want) in [("int8", Quantization::Int8), ("none", Quantization::None), ("", Quantization::None), (" INT8 ", Quantization::Int8)] {
            assert_eq!(parse_quantization(name).unwrap(), want, "{name:?}");
        }
        for q in [Quantization::None, Quantization::Int8] {
            assert_eq!(parse_quantization(q.name()).unwrap(), q, "Kiln's own names read back");
        }
        for (bad, want) in [("int4", "quantization: \"int4\" is not none or int8"), ("fp16", "quantization: \"fp16\" is not none or int8")] {
            let e = parse_quantization(bad).unwrap_err();
            assert_eq!((e.kind(), e.message()), (ErrorKind::InvalidArgument, want));
        }
        // The session's load options carry it; a bad name is refused before any load.
        let config = |q: &str| SessionConfig { quantization: q.into(), ..Default::default() };
        assert_eq!(config("int8").model_options().unwrap(), ModelOptions { quantization: Quantization::Int8, ..Default::default() });
        assert_eq!(config("").model_options().unwrap(), ModelOptions::default(), "the default is Model::load's");
        assert_eq!(config("int4").model_options().unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn attention_property_takes_kilns_names_and_rejects_others() {
        for (name, want) in [
            ("auto", Attention::Auto),
            ("exported", Attention::Exported),
            ("fused", Attention::Fused),
            ("", Attention::Auto),
            (" Exported ", Attention::Exported),
            ("FUSED", Attention::Fused),
        ] {
            assert_eq!(parse_attention(name).unwrap(), want, "{name:?}");
        }
        for a in [Attention::Auto, Attention::Exported, Attention::Fused] {
            assert_eq!(parse_attention(a.name()).unwrap(), a, "Kiln's own names read back");
        }
        for (bad, want) in [("flash", "attention: \"flash\" is not auto, exported or fused"), ("none", "attention: \"none\" is not auto, exported or fused")] {
            let e = parse_attention(bad).unwrap_err();
            assert_eq!((e.kind(), e.message()), (ErrorKind::InvalidArgument, want));
        }
        // The session's load options carry it, beside `quantization`; a bad name is refused before any load.
        let config = |a: &str| SessionConfig { attention: a.into(), ..Default::default() };
        assert_eq!(config("exported").model_options().unwrap(), ModelOptions { attention: Attention::Exported, ..Default::default() });
        assert_eq!(config("auto").model_options().unwrap(), ModelOptions::default(), "the default is Model::load's");
        assert_eq!(config("").model_options().unwrap(), ModelOptions::default());
        let both = SessionConfig { quantization: "int8".into(), attention: "fused".into(), ..Default::default() };
        assert_eq!(
            both.model_options().unwrap(),
            ModelOptions { quantization: Quantization::Int8, attention: Attention::Fused, ..Default::default() }
        );
        assert_eq!(config("flash").model_options().unwrap_err().kind(), ErrorKind::InvalidArgument);
        // Another attention is another session config, so the node loads the model afresh.
        assert_ne!(config("exported"), config("auto"));
    }

    #[test]
    fn lora_slots_property_becomes_the_load_option() {
        let slotted = SessionConfig { lora_slots: true, ..Default::default() };
        assert_eq!(slotted.model_options().unwrap(), ModelOptions { lora_slots: true, ..Default::default() });
        assert_eq!(SessionConfig::default().model_options().unwrap(), ModelOptions::default(), "off by default, as Model::load");
        assert!(!ModelOptions::default().lora_slots);
        let all = SessionConfig { quantization: "int8".into(), attention: "exported".into(), lora_slots: true, ..Default::default() };
        assert_eq!(
            all.model_options().unwrap(),
            ModelOptions { quantization: Quantization::Int8, attention: Attention::Exported, lora_slots: true, ..Default::default() }
        );
        // A bad name beside it is still refused before any load.
        let bad = SessionConfig { attention: "flash".into(), lora_slots: true, ..Default::default() };
        assert_eq!(bad.model_options().unwrap_err().kind(), ErrorKind::InvalidArgument);
        // Slots on or off is another session config, so the node loads the model afresh.
        assert_ne!(slotted, SessionConfig::default());
    }

    #[test]
    fn model_info_entries_use_the_c_field_names_and_quantization_by_name() {
        let info = ModelInfo {
            default_size: 512,
            size_multiple: 8,
            latent_channels: 4,
            vae_downsampling: 8,
            embedding_dim: 768,
            has_vae_encoder: true,
            has_matting: false,
            quantization: Quantization::Int8,
            fused_attention: 12,
            lora_slots: 121,
        };
        use InfoValue::*;
        assert_eq!(
            info_entries(&info),
            vec![
                ("default_size", Int(512)),
                ("size_multiple", Int(8)),
                ("latent_channels", Int(4)),
                ("vae_downsampling", Int(8)),
                ("embedding_dim", Int(768)),
                ("has_vae_encoder", Bool(true)),
                ("has_matting", Bool(false)),
                ("quantization", Name("int8")),
                ("fused_attention", Int(12)),
                ("lora_slots", Int(121)),
            ]
        );
        let plain = info_entries(&ModelInfo { quantization: Quantization::None, fused_attention: 0, lora_slots: 0, ..info });
        assert!(plain.contains(&("quantization", Name("none"))));
        assert!(plain.contains(&("fused_attention", Int(0))));
        assert_eq!(plain.last(), Some(&("lora_slots", Int(0))));
        // Before any job, a session reports nothing (and does not wait).
        assert_eq!(Session::new(SessionConfig::default()).model_info(), None);
    }
}
