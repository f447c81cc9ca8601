//! `KilnGenerator`, the node GDScript uses. A thin layer: Variants in,
//! signals out. The rules live in [`crate::options`], [`crate::tracker`],
//! [`crate::session`] and [`crate::image_data`], which are tested without Godot.
use std::collections::BTreeMap;
use std::path::PathBuf;

use godot::classes::image::Format;
use godot::classes::{INode, Image, ImageTexture, Node, ProjectSettings};
use godot::prelude::*;
use kiln::image::control::ControlImage;

use crate::image_data::{from_godot_pixels, to_godot_rgba8};
use crate::options::{self, OptionValue};
use crate::session::{info_entries, GpuSettings, InfoValue, Session, SessionConfig, UpscaleSettings};
use crate::tracker::{status_of, Event, Phase, Tracker};

/// Generates textures with Kiln without blocking the main thread.
///
/// `generate(prompt, options)` returns a job id at once; the node polls its
/// jobs every frame in `_process` and reports each through the signals, which
/// carry the job id first because several jobs can be in flight.
#[derive(GodotClass)]
#[class(base=Node)]
pub struct KilnGenerator {
    /// The model folder: an absolute path, `user://`, or `res://` in the
    /// editor (an exported game's `res://` is inside the .pck, which ONNX
    /// Runtime cannot read: ship the model as a folder beside the game).
    #[export]
    model_path: GString,
    /// The ONNX Runtime library to load; empty = the one shipped beside the
    /// extension (or `ORT_DYLIB_PATH`).
    #[export]
    onnxruntime_path: GString,
    /// Execution providers, best first, comma-separated: `cuda`, `tensorrt`,
    /// `directml`, `coreml`, `cpu`; empty = the CPU. A provider the ONNX
    /// Runtime in use lacks is skipped (the CPU runs) unless
    /// `require_provider` is on. The GPU properties apply from the next
    /// `generate`, which then loads the model afresh.
    #[export]
    providers: GString,
    /// Fail jobs (status 301) instead of falling back to the CPU.
    #[export]
    require_provider: bool,
    /// GPU index (CUDA, TensorRT) or adapter index (DirectML).
    #[export]
    gpu_device: i64,
    /// `fast` (TF32 on CUDA, the default) or `exact` (float32, the CPU's results).
    #[export]
    gpu_math: GString,
    /// MiB each CUDA session may hold; 0 = no cap. Over it a job fails with
    /// status 500 and the node stays usable.
    #[export]
    gpu_memory_limit_mb: i64,
    /// Run the U-Net specialised to each job's size (every node on the GPU).
    #[export]
    static_unet: bool,
    /// CUDA graph replay of the specialised U-Net (implies `static_unet`).
    #[export]
    cuda_graph: bool,
    /// Keep the latents on the GPU between steps.
    #[export]
    device_latents: bool,
    /// How the model's weights are stored: `none` (as exported) or `int8`
    /// (the text encoders' and U-Net's matrix-product weights as int8, as
    /// ONNX Runtime's `quantize_dynamic` makes them: less memory, pictures
    /// close to but not equal to the float model's). A `refiner` is loaded
    /// the same way. Applies from the next `generate`, which loads the model
    /// afresh; another name fails the job with status 101.
    #[export]
    quantization: GString,
    /// How the U-Net's attention layers run: `auto` (the default: each
    /// rewritten at load into ONNX Runtime's fused `MultiHeadAttention` node
    /// when the graphs run on the CPU, as exported on a GPU provider),
    /// `exported` or `fused` (whatever the providers). Fused attention needs
    /// far less memory at large sizes; pictures differ from the exported
    /// graph's by float rounding only. A `refiner` is loaded the same way.
    /// Applies from the next `generate`, which loads the model afresh;
    /// another name fails the job with status 101.
    #[export]
    attention: GString,
    /// Load the model (and a `refiner`) with a LoRA slot beside every
    /// adaptable layer of its U-Net and text encoders: the `loras` of a job
    /// are then fed to the graphs at run time instead of merged into a copy
    /// of the weights, so switching LoRA sets takes milliseconds and no
    /// second U-Net. Plain low-rank LoRAs (kohya/PEFT LoRA, LoCon) use the
    /// slots; LoHa, LoKr, full diffs, DoRA, Tucker and embeddings are merged
    /// as without. Without a LoRA the pictures are the plain model's, bit for
    /// bit. Off by default; applies from the next `generate`, which loads
    /// the model afresh. With `static_unet` or `cuda_graph` the job fails
    /// with status 203.
    #[export]
    lora_slots: bool,
    /// A super-resolution upscaler (ESRGAN-family ONNX): a folder holding
    /// `model.onnx`, or an `.onnx` file; empty = off. When set, every
    /// generated image is upscaled off the main thread, in the same Kiln job
    /// as its generation (with the job's `seamless` axes, so textures keep
    /// tiling), before `done` carries it, and `upscale_image` works. Loaded
    /// once, again when the path changes; `res://` and `user://` as for `model_path`.
    #[export]
    upscaler_path: GString,
    /// Tile side in input pixels (0 = the whole image in one run).
    #[export]
    upscale_tile: i64,
    /// Extra input pixels each tile reads on every side.
    #[export]
    upscale_context: i64,
    /// How the alpha of images with transparency is upscaled (only
    /// `upscale_image` gets such images): `graph` (through the net, twice
    /// the work) or `bilinear`.
    #[export]
    upscale_alpha: GString,
    session: Option<Session>,
    jobs: BTreeMap<i64, Tracker>,
    /// How ended jobs ended, for `job_state` (a few bytes per job).
    ended: BTreeMap<i64, Phase>,
    next_job: i64,
    base: Base<Node>,
}

#[godot_api]
impl INode for KilnGenerator {
    fn init(base: Base<Node>) -> Self {
        Self {
            model_path: GString::new(),
            onnxruntime_path: GString::new(),
            providers: GString::new(),
            require_provider: false,
            gpu_device: 0,
            gpu_math: GString::new(),
            gpu_memory_limit_mb: 0,
            static_unet: false,
            cuda_graph: false,
            device_latents: false,
            quantization: GString::from("none"),
            attention: GString::from("auto"),
            lora_slots: false,
            upscaler_path: GString::new(),
            upscale_tile: UpscaleSettings::default().tile,
            upscale_context: UpscaleSettings::default().context,
            upscale_alpha: GString::from("graph"),
            session: None,
            jobs: BTreeMap::new(),
            ended: BTreeMap::new(),
            next_job: 1,
            base,
        }
    }

    fn process(&mut self, _delta: f64) {
        self.poll_jobs();
    }

    fn exit_tree(&mut self) {
        // Jobs belong to the node: stop and free them when it leaves.
        let pool = Session::pool();
        for (id, tracker) in self.jobs.iter_mut() {
            tracker.release(pool);
            self.ended.insert(*id, Phase::Failed);
        }
        self.jobs.clear();
    }
}

#[godot_api]
impl KilnGenerator {
    /// `step` of `total` units of work finished: U-Net calls; with
    /// `upscaler_path` set, the upscaler's graph runs (tiles) follow in the
    /// same count (`total` includes them from the first `progress`, and
    /// `step` goes on past the U-Net calls while the image is upscaled);
    /// for `upscale_image`, its tiles alone.
    #[signal]
    fn progress(job: i64, step: i64, total: i64);
    /// The job's preparation is loading `what` before the job can run:
    /// `step` of `total` KiB of its graph files are open (a loading bar that
    /// follows load time). `what` is `model`, `adapters` (LoRAs and
    /// embeddings merged into a view), `seamless`, `refiner`,
    /// `refiner_adapters`, `refiner_seamless` or `upscaler`; each starts at 0
    /// and ends at `step == total`. A job whose model and views are loaded
    /// already reports none; jobs started together all report the one model
    /// load they wait for (other loads only the job that makes them).
    #[signal]
    fn loading(job: i64, what: GString, step: i64, total: i64);
    /// A low-resolution preview (enable with `options.preview_interval`).
    #[signal]
    fn preview(job: i64, image: Gd<Image>);
    /// The job finished; `texture` holds the image (RGBA8).
    #[signal]
    fn done(job: i64, texture: Gd<ImageTexture>);
    /// A `prepare` job finished: what its options need is loaded.
    #[signal]
    fn prepared(job: i64);
    /// The job failed or was cancelled; `status` is the `kiln_status` number
    /// from `kiln.h` (101 bad argument, 200 model not found, 400 cancelled...).
    #[signal]
    fn failed(job: i64, status: i64, message: GString);

    /// Job state: preparing (model or upscaler loading), running, done, failed.
    #[constant]
    const JOB_PREPARING: i64 = 0;
    /// The job is queued in Kiln, generating or upscaling.
    #[constant]
    const JOB_RUNNING: i64 = 1;
    /// `done` (or, for `prepare`, `prepared`) was emitted.
    #[constant]
    const JOB_DONE: i64 = 2;
    /// `failed` was emitted.
    #[constant]
    const JOB_FAILED: i64 = 3;

    /// Starts generating `prompt` and returns the job id (≥ 1) at once. Bad
    /// options are reported through `failed` on the next frame, like every
    /// other failure. The model is loaded on the first job, off the main thread.
    #[func]
    fn generate(&mut self, prompt: GString, options: VarDictionary) -> i64 {
        let entries = option_entries(&options);
        let upscale = self.upscale_settings();
        let tracker = self.session().start_upscaled(&prompt.to_string(), &entries, &upscale);
        self.add_job(tracker)
    }

    /// Loads, off the main thread, what a `generate` with these `options`
    /// needs (the model, a view with its `loras` and `embeddings`, its
    /// `seamless` view, its `refiner`, and the upscaler when `upscaler_path`
    /// is set) without generating, and returns the job id at once: for a
    /// loading screen before the first texture is wanted. `loading` reports
    /// each load, then `prepared(job)` says all is in, or `failed` why not
    /// (the status `generate` would report); `cancel(job)` ends it on the
    /// next frame. Other options (prompt-side ones such as `steps`) are
    /// checked, and otherwise unused.
    #[func]
    fn prepare(&mut self, options: VarDictionary) -> i64 {
        let entries = option_entries(&options);
        let upscale = self.upscale_settings();
        let tracker = self.session().prepare(&entries, &upscale);
        self.add_job(tracker)
    }

    /// Upscales `image` with the node's upscaler (`upscaler_path`,
    /// `upscale_tile`, `upscale_context`, `upscale_alpha`) off the main
    /// thread, as a job in Kiln's pool, and returns the job id at once;
    /// `progress(job, step, total)` counts its tiles (graph runs), the result
    /// comes as `done(job, texture)` or `failed(job, status, message)`, like
    /// a generation's, and `cancel(job)` stops it (and no other job).
    /// `seamless` (`none`, `x`, `y`, `xy`) names the axes the image tiles
    /// along. Needs no model.
    #[func]
    fn upscale_image(&mut self, image: Option<Gd<Image>>, #[opt(default = "none")] seamless: GString) -> i64 {
        let pixels = match &image {
            Some(image) => image_pixels(image),
            None => OptionValue::Nil,
        };
        let not_an_image = |what: &str| kiln::Error::new(kiln::ErrorKind::InvalidArgument, format!("image: expected an Image, got {what}"));
        let prepared = match pixels {
            OptionValue::Image(pixels) => from_godot_pixels(&pixels, "image"),
            OptionValue::Other(what) => Err(not_an_image(&what)),
            _ => Err(not_an_image("null")),
        };
        let upscale = self.upscale_settings();
        let tracker = match prepared {
            Ok(pixels) => self.session().upscale(pixels, &seamless.to_string(), &upscale),
            Err(e) => Tracker::rejected(e),
        };
        self.add_job(tracker)
    }

    /// Asks job `job` to stop; it then reports `failed` with status 400
    /// (cancelled). Returns false when the job is unknown or already ended.
    #[func]
    fn cancel(&mut self, job: i64) -> bool {
        match self.jobs.get_mut(&job) {
            Some(t) => t.cancel(Session::pool()),
            None => false,
        }
    }

    /// One of the `JOB_*` constants, or -1 for an id this node never gave.
    #[func]
    fn job_state(&self, job: i64) -> i64 {
        match (self.jobs.get(&job), self.ended.get(&job)) {
            (Some(t), _) => t.phase() as i64,
            (None, Some(p)) => *p as i64,
            (None, None) => -1,
        }
    }

    /// Jobs that have not yet emitted `done`, `prepared` or `failed`.
    #[func]
    fn pending_jobs(&self) -> i64 {
        self.jobs.len() as i64
    }

    /// Facts about the model the node's jobs run on, as the C API's
    /// `kiln_model_info`: `default_size`, `size_multiple`, `latent_channels`,
    /// `vae_downsampling`, `embedding_dim` (ints), `has_vae_encoder`,
    /// `has_matting` (bools), `quantization` (`none` or `int8`),
    /// `fused_attention` (int: the U-Net's attention layers that run fused,
    /// 0 = none) and `lora_slots` (int: the U-Net's layers with a LoRA slot,
    /// 0 = loaded without). Empty until a job has loaded the model (the first
    /// `generate`, or the first after a setting that loads it afresh), and
    /// while it loads; never waits.
    #[func]
    fn model_info(&self) -> VarDictionary {
        let mut info = VarDictionary::new();
        if let Some(facts) = self.session.as_ref().and_then(Session::model_info) {
            for (key, value) in info_entries(&facts) {
                match value {
                    InfoValue::Int(n) => info.set(key, n),
                    InfoValue::Bool(b) => info.set(key, b),
                    InfoValue::Name(name) => info.set(key, name),
                }
            }
        }
        info
    }
}

impl KilnGenerator {
    /// The session for the node's current settings: a new one (nothing
    /// loaded) when a setting it loads with has changed.
    fn session(&mut self) -> &Session {
        let config = self.session_config();
        if self.session.as_ref().map(|s| s.config() != &config).unwrap_or(true) {
            self.session = Some(Session::new(config));
        }
        self.session.as_ref().expect("set just above")
    }

    fn add_job(&mut self, tracker: Tracker) -> i64 {
        let id = self.next_job;
        self.next_job += 1;
        self.jobs.insert(id, tracker);
        id
    }

    /// The upscale properties; an empty `upscaler_path` is off.
    fn upscale_settings(&self) -> UpscaleSettings {
        let path = if self.upscaler_path.is_empty() { PathBuf::new() } else { globalized(&self.upscaler_path) };
        UpscaleSettings { path, tile: self.upscale_tile, context: self.upscale_context, alpha: self.upscale_alpha.to_string() }
    }

    fn session_config(&self) -> SessionConfig {
        let onnxruntime_path =
            if self.onnxruntime_path.is_empty() { None } else { Some(globalized(&self.onnxruntime_path)) };
        // Out-of-range numbers are passed on as they are and refused by
        // `GpuSettings::provider_policy`, so the job reports them (status 101).
        let gpu = GpuSettings {
            providers: self.providers.to_string().split(',').map(str::to_string).collect(),
            require_provider: self.require_provider,
            device_id: self.gpu_device,
            gpu_math: self.gpu_math.to_string(),
            gpu_memory_limit_mib: self.gpu_memory_limit_mb,
            static_unet: self.static_unet,
            cuda_graph: self.cuda_graph,
            device_latents: self.device_latents,
        };
        // A bad `quantization` or `attention` is refused when the model loads (status 101).
        let (quantization, attention) = (self.quantization.to_string(), self.attention.to_string());
        let lora_slots = self.lora_slots;
        SessionConfig { model_dir: globalized(&self.model_path), onnxruntime_path, gpu, quantization, attention, lora_slots }
    }

    /// Polls every job once and emits what happened, in job order.
    fn poll_jobs(&mut self) {
        if self.jobs.is_empty() {
            return;
        }
        let pool = Session::pool();
        let mut all: Vec<(i64, Event)> = Vec::new();
        for (id, tracker) in self.jobs.iter_mut() {
            all.extend(tracker.update(pool).into_iter().map(|e| (*id, e)));
        }
        let ended = &mut self.ended;
        self.jobs.retain(|id, t| {
            if t.has_ended() {
                ended.insert(*id, t.phase());
            }
            !t.has_ended()
        });
        // Signals go out after the table is settled: a handler may call
        // generate or cancel on this node.
        for (id, event) in all {
            self.emit(id, event);
        }
    }

    fn emit(&mut self, id: i64, event: Event) {
        match event {
            Event::Progress { step, total } => self.signals().progress().emit(id, step as i64, total as i64),
            Event::Loading { what, step, total } => self.signals().loading().emit(id, &GString::from(what), step as i64, total as i64),
            Event::Preview { image, .. } => match godot_image(&image) {
                Ok(img) => self.signals().preview().emit(id, &img),
                Err((status, message)) => godot_warn!("Kiln job {id}: preview dropped ({status}): {message}"),
            },
            Event::Done { image } => {
                match godot_image(&image).and_then(|img| {
                    ImageTexture::create_from_image(&img).ok_or((900, "Godot could not make a texture".to_string()))
                }) {
                    Ok(texture) => self.signals().done().emit(id, &texture),
                    Err((status, message)) => self.signals().failed().emit(id, status, &GString::from(&message)),
                }
            }
            Event::Prepared => self.signals().prepared().emit(id),
            Event::Failed { status, message } => self.signals().failed().emit(id, status as i64, &GString::from(&message)),
        }
    }
}

/// A job's options dictionary as the binding's entries, with `refiner` and
/// the adapter files' `res://` and `user://` paths made absolute.
fn option_entries(options: &VarDictionary) -> Vec<(String, OptionValue)> {
    let mut entries: Vec<(String, OptionValue)> = options.iter_shared().map(|(k, v)| (key_name(&k), option_value(&v))).collect();
    options::map_paths(&mut entries, |p| globalized(&GString::from(p)).to_string_lossy().into_owned());
    entries
}

/// Kiln's RGBA8 image as a Godot `Image`, or the status and message why not.
fn godot_image(image: &kiln::Rgba8Image) -> Result<Gd<Image>, (i64, String)> {
    let data = to_godot_rgba8(image).map_err(|e| (status_of(e.kind()) as i64, e.message().to_string()))?;
    let bytes = PackedByteArray::from(data.bytes.as_slice());
    Image::create_from_data(data.width, data.height, false, Format::RGBA8, &bytes)
        .ok_or((900, format!("Godot refused a {}x{} RGBA8 image", data.width, data.height)))
}

/// `res://` and `user://` paths as file-system paths; others unchanged.
fn globalized(path: &GString) -> PathBuf {
    PathBuf::from(ProjectSettings::singleton().globalize_path(path).to_string())
}

fn key_name(key: &Variant) -> String {
    match key.get_type() {
        VariantType::STRING => key.to::<GString>().to_string(),
        VariantType::STRING_NAME => key.to::<StringName>().to_string(),
        // Not a name: kept visible so the unknown-option error shows it.
        other => format!("<{other:?} key {key}>"),
    }
}

fn option_value(v: &Variant) -> OptionValue {
    match v.get_type() {
        VariantType::NIL => OptionValue::Nil,
        VariantType::BOOL => OptionValue::Bool(v.to::<bool>()),
        VariantType::INT => OptionValue::Int(v.to::<i64>()),
        VariantType::FLOAT => OptionValue::Float(v.to::<f64>()),
        VariantType::STRING => OptionValue::String(v.to::<GString>().to_string()),
        VariantType::STRING_NAME => OptionValue::String(v.to::<StringName>().to_string()),
        VariantType::ARRAY => OptionValue::Array(v.to::<VarArray>().iter_shared().map(|e| option_value(&e)).collect()),
        VariantType::DICTIONARY => {
            OptionValue::Dictionary(v.to::<VarDictionary>().iter_shared().map(|(k, e)| (key_name(&k), option_value(&e))).collect())
        }
        VariantType::OBJECT => match v.try_to::<Gd<Image>>() {
            Ok(image) => image_pixels(&image),
            Err(_) => OptionValue::Other("an Object that is not an Image".into()),
        },
        other => OptionValue::Other(format!("{other:?}")),
    }
}

/// A Godot `Image`'s pixels (for `init_image`, `mask` and control images):
/// L8, RGB8 and RGBA8 as they are, any other format through a converted
/// copy (the caller's image is left as it was).
fn image_pixels(image: &Gd<Image>) -> OptionValue {
    let channels = match image.get_format() {
        Format::L8 => 1,
        Format::RGB8 => 3,
        Format::RGBA8 => 4,
        _ => 0,
    };
    let (width, height) = (image.get_width().max(0) as usize, image.get_height().max(0) as usize);
    if channels > 0 {
        return OptionValue::Image(ControlImage { width, height, channels, data: image.get_data().to_vec() });
    }
    let mut copy = Image::new_gd();
    copy.copy_from(image);
    if copy.is_compressed() && copy.decompress() != godot::global::Error::OK {
        return OptionValue::Other(format!("a compressed Image ({:?}) that Godot cannot decompress", image.get_format()));
    }
    copy.convert(Format::RGBA8);
    OptionValue::Image(ControlImage { width, height, channels: 4, data: copy.get_data().to_vec() })
}
