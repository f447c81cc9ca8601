//! Text-to-image: prompt → embeddings → denoising loop → VAE decode, the same
//! computation as diffusers' `StableDiffusionPipeline` on the same graphs;
//! img2img and inpainting as `StableDiffusionImg2ImgPipeline` and
//! `StableDiffusionInpaintPipeline` (4- and 9-channel U-Nets), with every
//! scheduler (`lcm` with an LCM-distilled U-Net as
//! `LatentConsistencyModelImg2ImgPipeline`); a base model can hand its latents to a refiner part-way
//! through the schedule ([`handoff`]).
pub mod inputs;
pub mod control;
pub(crate) mod device_loop;
pub mod handoff;
pub mod noise;
pub mod outputs;
pub mod texture;

use std::sync::atomic::{AtomicBool, Ordering};

use ndarray::{concatenate, s, ArrayD, Axis, IxDyn};

use crate::error::{Error, ErrorKind, Result};
use crate::image::FloatImage;
use crate::model::{GraphInput, Model, ModelInner};
use crate::scheduler::{self, NoiseSource, SchedulerKind};
pub use crate::model::vae::{FinalDecoder, VaeTiling};
pub use crate::tokenizer::weighting::PromptSyntax;
pub use noise::NoiseGenerator;

/// Caller-provided initial latents, used exactly as diffusers' `latents=`
/// argument (multiplied by the scheduler's `init_noise_sigma`).
#[derive(Debug, Clone, PartialEq)]
pub struct InitialNoise {
    /// `[1, channels, height / 8, width / 8]`.
    pub shape: [usize; 4],
    /// Values in NCHW order.
    pub data: Vec<f32>,
}

/// One text-to-image request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// What to draw.
    pub prompt: String,
    /// What to steer away from (used when guidance > 1).
    pub negative_prompt: String,
    /// How both prompts are read: `Plain` (diffusers, default) or `Weighted`
    /// (AUTOMATIC1111 weighting syntax and prompts longer than 75 tokens).
    pub prompt_syntax: PromptSyntax,
    /// Width in pixels; 0 = the model's native size.
    pub width: usize,
    /// Height in pixels; 0 = the model's native size.
    pub height: usize,
    /// Denoising steps.
    pub steps: usize,
    /// Classifier-free guidance scale; ≤ 1 skips the unconditional pass.
    pub guidance_scale: f32,
    /// Guidance rescale φ in [0, 1] (diffusers `guidance_rescale`, Lin et al.
    /// 2023 §3.4): the guided prediction is rescaled to the conditional one's
    /// standard deviation and mixed in by φ. 0 = off; only used with CFG.
    pub guidance_rescale: f32,
    /// Seed of the noise (the initial latents unless `initial_noise` is
    /// given, then img2img's and stochastic schedulers' draws).
    pub seed: u64,
    /// Which generator the seed drives: Kiln's portable stream (default),
    /// PyTorch's CPU generator, for the images diffusers makes with
    /// `torch.Generator("cpu").manual_seed(seed)`, or PyTorch's CUDA one.
    pub noise: NoiseGenerator,
    /// A variation (AUTOMATIC1111's "variation seed"): the starting noise
    /// (txt2img's initial latents; img2img's and inpainting's start noise)
    /// becomes the spherical blend of the seed's draw and this seed's, drawn
    /// with the same generator, by `variation_strength`. The seed's stream
    /// goes on for every other draw.
    pub variation_seed: u64,
    /// How far towards `variation_seed`'s noise, 0..=1: 0 = off (the seed's
    /// noise), 1 = the variation seed's starting noise.
    pub variation_strength: f32,
    /// Which scheduler.
    pub scheduler: SchedulerKind,
    /// Exact initial latents instead of seeded noise.
    pub initial_noise: Option<InitialNoise>,
    /// Exact per-step noise for stochastic schedulers instead of the seeded
    /// stream: standard normals handed out in order, one latent-sized block
    /// (NCHW) per draw (e.g. diffusers' recorded draws). It must match the
    /// draws exactly: running out, or values left over, is an error.
    pub step_noise: Option<Vec<f32>>,
    /// img2img: the picture to start from (resized with a Lanczos3 filter
    /// when its size differs from the request's).
    pub init_image: Option<InitImage>,
    /// img2img: how much of the schedule runs, 0..=1 (diffusers' `strength`):
    /// 1 ignores the picture, 0.3 keeps most of it.
    pub strength: f32,
    /// img2img: start from the VAE posterior's mean instead of a sample of it.
    pub posterior_mean: bool,
    /// Fields that replace the model's `scheduler_config.json` values for this
    /// request (a JSON object, e.g. `{"timestep_spacing": "trailing"}`).
    pub scheduler_overrides: Option<serde_json::Value>,
    /// Inpainting: 8-bit mask of the init image's size; pixels ≥ 128 are
    /// repainted. Needs `init_image`. Runs as diffusers'
    /// `StableDiffusionInpaintPipeline` does: an ordinary (4-channel) U-Net
    /// by blending the latents at every step, so the kept area stays on the
    /// init picture; an inpainting U-Net (9 channels: latents, mask, masked
    /// picture's latents) sees the mask and the picture at every call and
    /// regenerates the whole image, the kept area included (no blending).
    /// See `paste_unmasked` for what happens to the kept pixels.
    pub mask: Option<Mask>,
    /// Inpainting: paste the kept (unmasked) pixels of the init picture over
    /// the decoded image, so they come out exactly. `None` = the default:
    /// yes with an ordinary U-Net (whose kept area already follows the
    /// picture, up to the VAE round trip), no with a 9-channel inpainting
    /// U-Net, whose output diffusers returns as decoded (its kept area is the
    /// model's reconstruction of the picture, not the picture exactly, and
    /// pasting can leave a visible edge along the mask). The texture helpers always paste unless told
    /// `Some(false)`.
    pub paste_unmasked: Option<bool>,
    /// Take the text embeddings this many text-encoder layers before the end
    /// (diffusers' `clip_skip`; 0 = off). The text encoder is rewritten once
    /// per value (see `Model::clip_skip`); SDXL models pick the hidden state
    /// instead (`hidden_states[-(clip_skip + 2)]`, for the positive prompt
    /// only, as diffusers does).
    pub clip_skip: u32,
    /// Tiled VAE decode and encode for large images (default: whole image).
    /// On seamless axes the tiles wrap around, so the output still tiles.
    pub vae_tiling: VaeTiling,
    /// Which decoder makes the final image: the VAE (default) or the fast
    /// tiny preview decoder (needs `preview_decoder/` in the model folder).
    pub decoder: FinalDecoder,
    /// SDXL: the prompt for the second text encoder; empty = `prompt`. A
    /// refiner-style export (no `text_encoder`) does not use it: its only
    /// encoder reads `prompt`, as in diffusers.
    pub prompt_2: String,
    /// SDXL: the negative prompt for the second text encoder; empty =
    /// `negative_prompt`. Unused by a refiner-style export, as `prompt_2`.
    pub negative_prompt_2: String,
    /// SDXL size and crop conditioning (ignored by other models).
    pub xl: XlConditioning,
    /// ControlNets to guide this generation (their residuals add); empty =
    /// none, and the plain U-Net runs. Needs the model's ControlNet layout
    /// (`unet_controlnet/`, `controlnet/<name>/`).
    pub controls: Vec<control::Control>,
    /// diffusers' `guess_mode`: with CFG only the conditional half gets the
    /// ControlNet residuals, scaled 0.1..1 from the first block to the mid one.
    pub guess_mode: bool,
    /// Base-to-refiner hand-off: this model runs the schedule down to the
    /// refiner's start fraction and the refiner model the rest from these
    /// latents, decoding with its own VAE (diffusers' `denoising_end` /
    /// `denoising_start`). `None` = this model alone.
    pub refiner: Option<handoff::Refiner>,
}

/// SDXL's micro-conditioning (diffusers' `original_size`,
/// `crops_coords_top_left`, `target_size` and their `negative_*` variants,
/// `aesthetic_score` for refiners). Sizes are `[width, height]` in pixels;
/// `None` = the output size.
#[derive(Debug, Clone, PartialEq)]
pub struct XlConditioning {
    /// The size the model should pretend the training picture had.
    pub original_size: Option<[usize; 2]>,
    /// `[top, left]` of the pretended crop (0, 0 = uncropped).
    pub crop_top_left: [usize; 2],
    /// The size the model should aim for.
    pub target_size: Option<[usize; 2]>,
    /// The unconditional side's original size. In text-to-image the
    /// `negative_*` values are used only when both this and
    /// `negative_target_size` are given (diffusers); with an init image each
    /// defaults to its positive counterpart, the crop to `[0, 0]`.
    pub negative_original_size: Option<[usize; 2]>,
    /// The unconditional side's crop. With an init image on a base U-Net it is
    /// not used: diffusers' SDXL img2img and inpainting pipelines give the
    /// unconditional row the positive crop (only refiners read this one).
    pub negative_crop_top_left: [usize; 2],
    /// The unconditional side's target size.
    pub negative_target_size: Option<[usize; 2]>,
    /// Refiner-style U-Nets (5 time ids): the aesthetic score (diffusers' 6.0).
    pub aesthetic_score: f32,
    /// Refiner-style U-Nets: the unconditional side's aesthetic score (2.5).
    pub negative_aesthetic_score: f32,
}

impl Default for XlConditioning {
    fn default() -> Self {
        Self {
            original_size: None,
            crop_top_left: [0, 0],
            target_size: None,
            negative_original_size: None,
            negative_crop_top_left: [0, 0],
            negative_target_size: None,
            aesthetic_score: 6.0,
            negative_aesthetic_score: 2.5,
        }
    }
}

/// An inpainting mask: one byte per pixel, ≥ 128 = repaint.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    /// Width in pixels (must equal the init image's).
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height` bytes.
    pub data: Vec<u8>,
}

/// An 8-bit sRGB picture for img2img (alpha, if any, is ignored).
#[derive(Debug, Clone, PartialEq)]
pub struct InitImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` bytes, RGB, rows tightly packed.
    pub rgb: Vec<u8>,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            prompt_syntax: PromptSyntax::Plain,
            width: 0,
            height: 0,
            steps: 20,
            guidance_scale: 7.5,
            guidance_rescale: 0.0,
            seed: 0,
            noise: NoiseGenerator::Kiln,
            variation_seed: 0,
            variation_strength: 0.0,
            scheduler: SchedulerKind::Default,
            initial_noise: None,
            step_noise: None,
            init_image: None,
            strength: 0.8,
            posterior_mean: false,
            clip_skip: 0,
            prompt_2: String::new(),
            negative_prompt_2: String::new(),
            xl: XlConditioning::default(),
            mask: None,
            paste_unmasked: None,
            scheduler_overrides: None,
            vae_tiling: VaeTiling::default(),
            decoder: FinalDecoder::Vae,
            controls: Vec::new(),
            guess_mode: false,
            refiner: None,
        }
    }
}

/// What a generation produces.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The decoded image.
    pub image: FloatImage,
    /// Final latents before VAE decoding (not divided by the scaling factor).
    pub latents: ArrayD<f32>,
    /// The timesteps the U-Net was called with.
    pub timesteps: Vec<f64>,
    /// U-Net calls whose latents stayed on the U-Net's device
    /// (`ProviderPolicy::device_latents`); 0 when the host loop ran.
    pub device_steps: usize,
}

/// Progress reported after every U-Net call's scheduler step.
#[derive(Debug, Clone, Copy)]
pub struct StepProgress<'a> {
    /// U-Net calls finished.
    pub step: usize,
    /// U-Net calls in total.
    pub total: usize,
    /// The latents after this step (for previews), `[1, C, h, w]`.
    pub latents: &'a ArrayD<f32>,
}

/// Optional observers of a generation.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Checked between steps; when set the generation stops with `Cancelled`.
    pub cancel: Option<&'a AtomicBool>,
    /// Called after each step.
    pub on_step: Option<&'a mut dyn FnMut(&StepProgress<'_>)>,
    /// Passed to every graph run, so `RunOptions::terminate` stops a U-Net call
    /// mid-graph instead of waiting for the step to end.
    pub run_options: Option<&'a ort::session::RunOptions>,
    /// Which steps' [`StepProgress::latents`] `on_step` needs. The host loop
    /// always has them; with device-resident latents only these steps' come
    /// back from the device, and the others' are empty (`len() == 0`).
    pub step_latents: StepLatents,
}

/// Which steps' latents an `on_step` observer needs (for previews).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepLatents {
    /// Every step's (the default).
    #[default]
    Every,
    /// Steps `n`, `2n`, ... and the last one (`Interval(0)` = none).
    Interval(u32),
    /// None: `on_step` only reports progress.
    Never,
}

impl StepLatents {
    /// Whether step `step` (1-based) of `total` needs its latents.
    pub fn wants(self, step: usize, total: usize) -> bool {
        match self {
            Self::Every => true,
            Self::Interval(0) | Self::Never => false,
            Self::Interval(n) => step.is_multiple_of(n as usize) || step == total,
        }
    }
}

impl Model {
    /// Generates an image (see [`GenerateRequest`]).
    pub fn generate(&self, request: &GenerateRequest) -> Result<FloatImage> {
        Ok(self.generate_with(request, Hooks::default())?.image)
    }

    /// Generates, returning latents and timesteps too, with progress and cancellation.
    pub fn generate_with(&self, request: &GenerateRequest, hooks: Hooks<'_>) -> Result<Generation> {
        if let Some(refiner) = &request.refiner {
            return handoff::generate(self, request, refiner, hooks);
        }
        let clipped;
        let m = if request.clip_skip != self.inner.clip_skip {
            clipped = self.clip_skip(request.clip_skip)?;
            &clipped.inner
        } else {
            &self.inner
        };
        let mut noise = handoff::RequestNoise::new(request);
        let out = run(m, request, hooks, handoff::Stage::Whole, &mut noise)?;
        noise.finish()?;
        let image = out.image.ok_or_else(|| Error::internal("a whole generation decoded no image"))?;
        Ok(Generation { image, latents: out.latents, timesteps: out.timesteps, device_steps: out.device_steps })
    }

    /// Token embeddings `[1, 77, dim]` for a prompt, as the text encoder makes them.
    pub fn encode_prompt(&self, prompt: &str) -> Result<ArrayD<f32>> {
        encode_prompt_with(&self.inner, prompt, PromptSyntax::Plain, None)
    }

    /// The size in pixels `request` generates (0 = the model's native
    /// size), checked as a generation checks it: INVALID_SIZE when it is not a
    /// multiple of the model's size multiple, over 8192, or not the size a
    /// fixed-shape U-Net was exported for.
    pub fn output_size(&self, request: &GenerateRequest) -> Result<(usize, usize)> {
        check_size(&self.inner, request)
    }

    /// Checks what a generation checks before it runs anything (size, VAE
    /// tiling, final decoder, guidance, scheduler overrides) and returns the
    /// size, so a job can refuse a request at submit. A hand-off's refiner
    /// decodes, so the base is not asked for a decoder then.
    pub fn check_request(&self, request: &GenerateRequest) -> Result<(usize, usize)> {
        check_request(&self.inner, request, request.refiner.is_none()).map(|(size, _)| size)
    }

    /// Token embeddings for a prompt read with `syntax`: `[1, 77, dim]` when
    /// plain, `[1, 77·chunks, dim]` when weighted (A1111 chunks, weights and
    /// mean restoration; see the README's "Prompts").
    pub fn encode_prompt_as(&self, prompt: &str, syntax: PromptSyntax) -> Result<ArrayD<f32>> {
        encode_prompt_with(&self.inner, prompt, syntax, None)
    }
}

/// Largest width or height a generation (and a texture extension) may have.
pub const MAX_GENERATE_SIDE: usize = 8192;

/// What a request is checked for before anything runs: its size, VAE tiling,
/// final decoder (when this model `decodes`), guidance and scheduler
/// overrides. Returns the size and the scheduler built.
fn check_request(m: &ModelInner, request: &GenerateRequest, decodes: bool) -> Result<((usize, usize), (Box<dyn scheduler::Scheduler>, bool))> {
    let size = check_size(m, request)?;
    request.vae_tiling.validate()?;
    if decodes && request.decoder == FinalDecoder::Preview && m.preview_decoder.is_none() {
        return Err(Error::unsupported(format!(
            "the fast final decode needs a preview decoder (preview_decoder/model.onnx); {} has none",
            m.layout.root.display()
        )));
    }
    if !request.guidance_scale.is_finite() {
        return Err(Error::invalid("guidance_scale must be a finite number"));
    }
    let f = m.layout.vae_config.downsampling;
    let latent_values = m.layout.vae_config.latent_channels * (size.0 / f) * (size.1 / f);
    if request.noise == NoiseGenerator::TorchCpu && latent_values < noise::TORCH_MIN_DRAW {
        return Err(Error::invalid(format!(
            "PyTorch-compatible noise needs latents of at least {} values; {}x{} pixels make {latent_values}",
            noise::TORCH_MIN_DRAW,
            size.0,
            size.1
        )));
    }
    if !(0.0..=1.0).contains(&request.guidance_rescale) {
        return Err(Error::invalid(format!("guidance_rescale {} must be within 0..=1", request.guidance_rescale)));
    }
    if !(0.0..=1.0).contains(&request.variation_strength) {
        return Err(Error::invalid(format!("variation_strength {} must be within 0..=1", request.variation_strength)));
    }
    if request.variation_strength > 0.0 && (request.initial_noise.is_some() || request.step_noise.is_some()) {
        return Err(Error::invalid(
            "variation_strength blends seeded noise; this request gives its own noise (initial_noise or step_noise)",
        ));
    }
    Ok((size, build_scheduler(m, request)?))
}

fn check_size(m: &ModelInner, request: &GenerateRequest) -> Result<(usize, usize)> {
    let default = m.layout.default_size();
    let multiple = m.layout.size_multiple();
    let width = if request.width == 0 { default } else { request.width };
    let height = if request.height == 0 { default } else { request.height };
    const MAX_SIDE: usize = MAX_GENERATE_SIDE;
    for (what, v) in [("width", width), ("height", height)] {
        if v % multiple != 0 || v > MAX_SIDE {
            return Err(Error::new(
                ErrorKind::InvalidSize,
                format!("{what} {v} is not usable: this model needs a multiple of {multiple} pixels, at most {MAX_SIDE}"),
            ));
        }
    }
    // Graphs exported with fixed spatial sizes accept only those.
    let f = m.layout.vae_config.downsampling;
    let shape = &m.unet_io.sample.shape;
    if let (Some(&h), Some(&w)) = (shape.get(2), shape.get(3)) {
        if (h > 0 && h as usize * f != height) || (w > 0 && w as usize * f != width) {
            return Err(Error::new(
                ErrorKind::InvalidSize,
                format!("this U-Net was exported for {}x{} pixels only; asked for {width}x{height}", w.max(0) as usize * f, h.max(0) as usize * f),
            ));
        }
    }
    Ok((width, height))
}

fn encode_prompt_with(
    m: &ModelInner,
    prompt: &str,
    syntax: PromptSyntax,
    options: Option<&ort::session::RunOptions>,
) -> Result<ArrayD<f32>> {
    m.encode_text(prompt, syntax, options)
}

/// Gives weighted prompt and negative prompt the same number of 77-token
/// chunks, as A1111 does with "Pad prompt/negative prompt" (`pad_cond_uncond`):
/// the shorter one gets copies of the empty prompt's embeddings appended.
fn match_chunk_counts(
    m: &ModelInner,
    cond: &mut ArrayD<f32>,
    uncond: &mut ArrayD<f32>,
    syntax: PromptSyntax,
    options: Option<&ort::session::RunOptions>,
) -> Result<()> {
    let (lc, lu) = (cond.shape()[1], uncond.shape()[1]);
    if lc == lu {
        return Ok(());
    }
    let empty = encode_prompt_with(m, "", syntax, options)?;
    let chunk = empty.shape()[1];
    let short = if lc < lu { cond } else { uncond };
    let missing = lc.abs_diff(lu);
    if chunk == 0 || missing % chunk != 0 {
        return Err(Error::internal(format!("prompt lengths {lc} and {lu} are not whole chunks of {chunk}")));
    }
    let mut parts = vec![short.view()];
    parts.extend(std::iter::repeat_n(empty.view(), missing / chunk));
    *short = concatenate(Axis(1), &parts).map_err(|e| Error::internal(e.to_string()))?;
    Ok(())
}

/// The request's scheduler: its kind on the model's `scheduler_config.json`
/// with the request's overrides merged in; and whether it is LCM's
/// strength-shortened schedule, run from its first step (img2img with an
/// LCM-distilled U-Net, as diffusers' `LatentConsistencyModelImg2ImgPipeline`).
fn build_scheduler(m: &ModelInner, request: &GenerateRequest) -> Result<(Box<dyn scheduler::Scheduler>, bool)> {
    let scheduler_config = match &request.scheduler_overrides {
        None => std::borrow::Cow::Borrowed(&m.layout.scheduler_config),
        Some(overrides) => {
            let mut merged = m.layout.scheduler_config.clone();
            let (Some(base), Some(extra)) = (merged.as_object_mut(), overrides.as_object()) else {
                return Err(Error::invalid("scheduler overrides must be a JSON object of scheduler_config.json fields"));
            };
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
            std::borrow::Cow::Owned(merged)
        }
    };
    let scheduler = match scheduler::build(request.scheduler, &scheduler_config, request.steps) {
        // A value the caller's overrides brought in is the caller's argument,
        // not a broken model: say so when the model's own config builds.
        Err(e) if e.kind() == ErrorKind::ModelInvalid
            && request.scheduler_overrides.is_some()
            && scheduler::build(request.scheduler, &m.layout.scheduler_config, request.steps).is_ok() =>
        {
            return Err(Error::invalid(format!("options->scheduler_overrides: {}", e.message())));
        }
        other => other?,
    };
    // diffusers' SD img2img and inpainting pipelines slice the full LCM
    // schedule by the strength like any other; only the LCM pipeline (an
    // LCM-distilled U-Net, `timestep_cond`) shortens it inside the scheduler.
    let distilled_img2img = request.init_image.is_some()
        && request.mask.is_none()
        && m.unet_io.timestep_cond.is_some()
        && scheduler::resolve(request.scheduler, &scheduler_config)? == SchedulerKind::Lcm;
    if distilled_img2img {
        let strength = python_float(request.strength);
        return Ok((scheduler::build_lcm_img2img(&scheduler_config, request.steps, strength)?, true));
    }
    Ok((scheduler, false))
}

/// An `f32` as the Python float a diffusers caller would have written: its
/// shortest decimal form (0.6f32 → 0.6, not 0.6000000238…), so
/// `int(steps * strength)` rounds as in Python.
fn python_float(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

/// The training schedule's length the request's scheduler uses (diffusers'
/// `num_train_timesteps`, overrides included; 1000 when the config omits it).
pub(crate) fn num_train_timesteps(m: &ModelInner, request: &GenerateRequest) -> Result<f64> {
    let from = |c: &serde_json::Value| c.get("num_train_timesteps").and_then(|v| v.as_f64());
    let overridden = request.scheduler_overrides.as_ref().and_then(from);
    Ok(overridden.or_else(|| from(&m.layout.scheduler_config)).unwrap_or(1000.0))
}

/// The timesteps one stage runs on `m` (for a hand-off's progress total).
pub(crate) fn stage_timesteps(m: &ModelInner, request: &GenerateRequest, stage: &handoff::Stage) -> Result<Vec<f64>> {
    let (scheduler, lcm_shortened) = build_scheduler(m, request)?;
    Ok(schedule_window(request, scheduler.as_ref(), stage, lcm_shortened)?.1)
}

/// Where a run enters the schedule (`None`: from pure noise at its start)
/// and the timesteps it runs: img2img from the strength's step, a hand-off's
/// base down to the cutoff, a hand-off's refiner from the cutoff on; LCM's
/// strength-shortened schedule (`lcm_shortened`) from its first step.
fn schedule_window(
    request: &GenerateRequest,
    scheduler: &dyn scheduler::Scheduler,
    stage: &handoff::Stage,
    lcm_shortened: bool,
) -> Result<(Option<usize>, Vec<f64>)> {
    let schedule = scheduler.timesteps();
    if !matches!(stage, handoff::Stage::Whole) && scheduler.order() != 1 {
        // diffusers cuts a second-order schedule between a step's two
        // evaluations and patches the count by one; Kiln does not offer that.
        return Err(Error::unsupported(
            "a refiner hand-off needs a first-order scheduler; heun is not supported there",
        ));
    }
    if lcm_shortened && !matches!(stage, handoff::Stage::Whole) {
        // Its strength-shortened schedule is not the one the refiner would
        // cut, and diffusers' LCM img2img pipeline has no `denoising_end`.
        return Err(Error::unsupported(
            "a refiner hand-off from lcm img2img with an LCM-distilled U-Net is not supported (its schedule is shortened by the strength)",
        ));
    }
    match stage {
        handoff::Stage::Refiner { cutoff, .. } => {
            let start = handoff::refiner_start(schedule, *cutoff);
            if start >= schedule.len() {
                return Err(Error::invalid(format!(
                    "refiner start leaves the refiner no step of {} (timestep cutoff {cutoff}); lower it or add steps",
                    schedule.len()
                )));
            }
            Ok((Some(start), schedule[start..].to_vec()))
        }
        _ => {
            let start = match &request.init_image {
                Some(_) if lcm_shortened => Some(0),
                Some(_) => Some(img2img_start(request)? * scheduler.order()),
                None => None,
            };
            let mut timesteps = schedule[start.unwrap_or(0)..].to_vec();
            if let handoff::Stage::Base { cutoff } = stage {
                let n = handoff::base_steps(&timesteps, *cutoff);
                if n == 0 {
                    return Err(Error::invalid(format!(
                        "refiner start leaves the base model no step (timestep cutoff {cutoff}, first step at {}); raise it",
                        timesteps.first().copied().unwrap_or(f64::NAN)
                    )));
                }
                timesteps.truncate(n);
            }
            Ok((start, timesteps))
        }
    }
}

/// What one pipeline run produced (a hand-off's base stage decodes nothing).
pub(crate) struct RunOutput {
    pub(crate) image: Option<FloatImage>,
    pub(crate) latents: ArrayD<f32>,
    pub(crate) timesteps: Vec<f64>,
    pub(crate) device_steps: usize,
}

fn run(
    m: &ModelInner,
    request: &GenerateRequest,
    hooks: Hooks<'_>,
    stage: handoff::Stage,
    request_noise: &mut handoff::RequestNoise<'_>,
) -> Result<RunOutput> {
    let Hooks { cancel, mut on_step, run_options, step_latents } = hooks;
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    // A hand-off's base decodes nothing: the refiner's decoder is the one that counts.
    let decodes = !matches!(stage, handoff::Stage::Base { .. });
    let ((width, height), (mut scheduler, lcm_shortened)) = check_request(m, request, decodes)?;
    let channels = m.layout.vae_config.latent_channels;
    let f = m.layout.vae_config.downsampling;
    let latent_shape = [1, channels, height / f, width / f];

    // An ordinary U-Net takes the latents; an inpainting U-Net (9 channels for
    // SD) also the mask and the masked picture's latents. The graph says which
    // (its config, when the graph's channel axis is dynamic).
    let unet_channels = match m.unet_io.sample.shape.get(1).copied() {
        Some(c) if c > 0 => c as usize,
        _ => m.layout.unet_config.in_channels,
    };
    let inpainting_unet = unet_channels == 2 * channels + 1;
    if unet_channels != channels && !inpainting_unet {
        return Err(Error::unsupported(format!(
            "the U-Net takes {unet_channels} input channels; Kiln runs U-Nets with {channels} (ordinary) or {} (inpainting)",
            2 * channels + 1
        )));
    }
    // img2img and inpainting start part-way into the schedule, and so does
    // a hand-off's refiner; a hand-off's base stops part-way.
    let (start, timesteps) = schedule_window(request, scheduler.as_ref(), &stage, lcm_shortened)?;
    // The ControlNet window's fractions are of the schedule before a
    // hand-off's cut (diffusers computes `controlnet_keep` before applying
    // `denoising_end`), and of the strength-shortened one for img2img.
    let control_total = match &stage {
        handoff::Stage::Base { .. } => scheduler.timesteps().len() - start.unwrap_or(0),
        _ => timesteps.len(),
    };
    let handed_latents = match stage {
        handoff::Stage::Refiner { latents, .. } => Some(latents),
        handoff::Stage::Whole | handoff::Stage::Base { .. } => None,
    };
    let inpaint = match (&request.mask, &request.init_image) {
        (Some(mask), Some(init)) => {
            Some(inpaint_mask(mask, init, width, height, f, if inpainting_unet { 1 } else { channels })?)
        }
        (Some(_), None) => return Err(Error::invalid("a mask needs an init image (inpainting repaints a picture)")),
        _ => None,
    };
    if inpainting_unet && inpaint.is_none() {
        return Err(Error::invalid(format!(
            "this is an inpainting U-Net ({unet_channels} input channels): it needs an init image and a mask"
        )));
    }

    // LCM-distilled U-Nets embed the guidance instead of running CFG (diffusers).
    let lcm = m.unet_io.timestep_cond.clone();
    let do_cfg = request.guidance_scale > 1.0 && lcm.is_none();

    let syntax = request.prompt_syntax;
    // SDXL's pooled embeddings and time ids: (conditional, unconditional).
    let mut added: Option<(ArrayD<f32>, Option<ArrayD<f32>>)> = None;
    let (cond, uncond) = match &m.xl {
        Some(xl) => {
            // A hand-off's refiner is diffusers' img2img pipeline, conditioning included.
            let img2img = request.init_image.is_some() || handed_latents.is_some();
            let c = xl_conditioning(m, xl, request, do_cfg, img2img, (width, height), run_options)?;
            added = Some((c.cond_added, c.uncond_added));
            (c.cond, c.uncond)
        }
        None => {
            let mut cond = encode_prompt_with(m, &request.prompt, syntax, run_options)?;
            let mut uncond =
                if do_cfg { Some(encode_prompt_with(m, &request.negative_prompt, syntax, run_options)?) } else { None };
            if let Some(u) = uncond.as_mut() {
                match_chunk_counts(m, &mut cond, u, syntax, run_options)?;
            }
            (cond, uncond)
        }
    };
    let seq = cond.shape()[1];
    if let Some(&fixed) = m.unet_io.encoder_hidden_states.shape.get(1).filter(|&&d| d > 0) {
        if fixed as usize != seq {
            return Err(Error::unsupported(format!(
                "this U-Net was exported with a fixed text length of {fixed} tokens; the prompt needs {seq} \
                 ({} chunks): shorten it to {} tokens without BREAK, or re-export the U-Net with a dynamic `encoder_hidden_states` sequence axis",
                seq / m.tokenizer.max_len().max(1),
                m.tokenizer.max_len() - 2,
            )));
        }
    }
    if cancelled() {
        return Err(Error::new(ErrorKind::Cancelled, "generation cancelled"));
    }

    // One seeded stream: the initial latents (unless given), then the per-step
    // noise of stochastic schedulers (unless given). img2img draws, in this
    // order, the VAE posterior sample, the noise added at the start step, then
    // the per-step noise, from the same source (as diffusers does).
    // Inpainting (diffusers' StableDiffusionInpaintPipeline) draws the init
    // picture's posterior sample, the start noise, the masked picture's
    // posterior sample, then the per-step noise; an inpainting U-Net at
    // strength 1 starts from pure noise and never encodes the init picture,
    // so its first draw is the start noise.
    let handoff::RequestNoise { rng, recorded } = request_noise;
    let noise = match &request.initial_noise {
        _ if start.is_some() => Vec::new(),
        Some(n) => {
            if n.shape != latent_shape || n.data.len() != latent_shape.iter().product::<usize>() {
                return Err(Error::new(
                    ErrorKind::InvalidSize,
                    format!("initial noise has shape {:?} ({} values); this request needs {latent_shape:?}", n.shape, n.data.len()),
                ));
            }
            n.data.clone()
        }
        None => {
            let mut n = vec![0.0f32; latent_shape.iter().product()];
            rng.fill_normals(&mut n)?;
            noise::blend_variation(&mut n, &latent_shape, request)?;
            n
        }
    };
    let step_noise: &mut dyn scheduler::NoiseSource = match recorded.as_mut() {
        Some(r) => r,
        None => rng,
    };
    let encode = |image: ArrayD<f32>, noise: &mut dyn scheduler::NoiseSource| -> Result<ArrayD<f32>> {
        let z = m.encode_image(image, noise, request.posterior_mean, &request.vae_tiling, run_options)?;
        if z.shape() != latent_shape {
            return Err(Error::model(format!("vae_encoder gave latents {:?}; expected {latent_shape:?}", z.shape())));
        }
        Ok(z)
    };
    // 4-channel inpainting keeps the clean latents and the start noise to
    // re-noise the kept area at every step.
    let mut blend: Option<(ArrayD<f32>, ArrayD<f32>)> = None;
    // An inpainting U-Net's extra input channels, `[1, 1 + C, h, w]`: the
    // mask, then the masked picture's latents.
    let mut conditioning: Option<ArrayD<f32>> = None;
    let (mut latents, start) = match (&request.init_image, start) {
        // A hand-off's refiner continues the base's latents as they are.
        (_, Some(start)) if handed_latents.is_some() => {
            let given = handed_latents.ok_or_else(|| Error::internal("hand-off without latents"))?;
            if given.shape() != latent_shape {
                return Err(Error::internal(format!("the base handed over latents {:?}; the refiner needs {latent_shape:?}", given.shape())));
            }
            if inpaint.is_some() {
                // diffusers' inpainting refiner (`add_noise=False`): the
                // handed latents are its `image_latents`, the kept area's
                // content, re-noised with one fresh draw at each next step.
                let n = step_noise.draw(&latent_shape)?;
                blend = Some((given.clone(), n));
            }
            (given, start)
        }
        (Some(init), Some(start)) => {
            let image = init_image_tensor(init, width, height)?;
            // diffusers: `is_strength_max` inpainting starts from pure noise.
            let pure_noise = inpaint.is_some() && request.strength >= 1.0;
            let clean = if inpainting_unet && pure_noise { None } else { Some(encode(image.clone(), step_noise)?) };
            let mut n = step_noise.draw(&latent_shape)?;
            let values = n.as_slice_mut().ok_or_else(|| Error::internal("a noise draw is not contiguous"))?;
            noise::blend_variation(values, &latent_shape, request)?;
            let start_latents = match &clean {
                _ if pure_noise => n.mapv(|x| x * scheduler.init_noise_sigma()),
                Some(clean) => scheduler.add_noise(clean, &n, start)?,
                None => return Err(Error::internal("img2img without init latents")),
            };
            if let Some(mask) = &inpaint {
                if inpainting_unet {
                    // diffusers' prepare_mask_latents: the picture with the
                    // repainted pixels zeroed, encoded like the init picture.
                    let masked = encode(masked_image(&image, mask), step_noise)?;
                    conditioning = Some(
                        concatenate(Axis(1), &[mask.latent.view(), masked.view()]).map_err(|e| Error::internal(e.to_string()))?,
                    );
                } else {
                    // diffusers encodes the masked picture for every U-Net and
                    // so consumes one more draw; keep the stream in step with it.
                    step_noise.draw(&latent_shape)?;
                    let clean = clean.ok_or_else(|| Error::internal("inpainting without init latents"))?;
                    blend = Some((clean, n));
                }
            }
            (start_latents, start)
        }
        _ => {
            let sigma0 = scheduler.init_noise_sigma();
            let latents = ArrayD::from_shape_vec(IxDyn(&latent_shape), noise)
                .map_err(|e| Error::internal(e.to_string()))?
                .mapv(|x| x * sigma0);
            (latents, 0)
        }
    };
    // The U-Net input of one batch item: the scaled latents, then any
    // inpainting channels (not scaled, as diffusers concatenates them after
    // `scale_model_input`).
    let unet_input = |scaled: ArrayD<f32>| -> Result<ArrayD<f32>> {
        match &conditioning {
            None => Ok(scaled),
            Some(c) => concatenate(Axis(1), &[scaled.view(), c.view()]).map_err(|e| Error::internal(e.to_string())),
        }
    };

    let batch_ok = m.unet_io.max_batch.is_none_or(|b| b >= 2);
    let embeds_batched = match &uncond {
        Some(u) if batch_ok => Some(concatenate(Axis(0), &[u.view(), cond.view()]).map_err(|e| Error::internal(e.to_string()))?),
        _ => None,
    };
    let added_cond = added.as_ref().map(|(c, _)| c);
    let added_uncond = added.as_ref().and_then(|(_, u)| u.as_ref());
    let added_batched = match (added_uncond, added_cond) {
        (Some(u), Some(c)) if batch_ok => {
            Some(concatenate(Axis(0), &[u.view(), c.view()]).map_err(|e| Error::internal(e.to_string()))?)
        }
        _ => None,
    };
    let w_embedding = match (&lcm, m.layout.unet_config.time_cond_proj_dim) {
        (Some(_), Some(dim)) => Some(guidance_embedding(request.guidance_scale - 1.0, dim)),
        (Some(spec), None) => {
            let dim = spec.shape.get(1).copied().filter(|&d| d > 0).ok_or_else(|| {
                Error::model("the U-Net takes `timestep_cond` but neither its config nor the graph give its width")
            })?;
            Some(guidance_embedding(request.guidance_scale - 1.0, dim as usize))
        }
        _ => None,
    };

    let controls = control::ActiveControls::prepare(m, &request.controls, request.guess_mode, width, height)?;
    // Guess mode in a CFG batch gives the residuals to the conditional half only.
    let guess_cfg = request.guess_mode && uncond.is_some();

    let total = timesteps.len();
    let mut device_steps = 0;
    if m.runtime.inner.providers.device_latents {
        let cfg = uncond.is_some();
        let request_reason = if cfg && request.guidance_rescale > 0.0 {
            Some("guidance rescale needs standard deviations of the whole prediction")
        } else if cfg && embeds_batched.is_none() {
            Some("this U-Net takes batch 1, so CFG runs as two calls")
        } else {
            None
        };
        let embeds = if cfg { embeds_batched.as_ref() } else { Some(&cond) };
        let added = if cfg { added_batched.as_ref() } else { added_cond };
        let device_request = embeds.map(|embeds| device_loop::DeviceRequest {
            latents: latents.clone(),
            start,
            timesteps: &timesteps,
            embeds,
            added,
            w: w_embedding.as_ref(),
            guidance: request.guidance_scale,
            cfg,
            inpainting: match (&conditioning, &blend, &inpaint) {
                (Some(c), _, _) => device_loop::DeviceInpainting::Conditioned(c),
                (None, Some((clean, start_noise)), Some(mask)) => {
                    device_loop::DeviceInpainting::Blended { clean, start_noise, mask: &mask.latent }
                }
                _ => device_loop::DeviceInpainting::None,
            },
            controls: controls.as_ref(),
            control_total,
        });
        let planned = match (request_reason, device_request) {
            (Some(why), _) => Err(why.to_string()),
            (None, None) => Err("no text embeddings for the batch".to_string()),
            (None, Some(d)) => device_loop::plan(m, scheduler.as_ref(), &d).map(|choice| (choice, d)),
        };
        match planned {
            Ok((choice, d)) => {
                let hooks = device_loop::DeviceHooks {
                    cancelled: &cancelled,
                    on_step: on_step.as_deref_mut(),
                    step_latents,
                    run_options,
                };
                match device_loop::run(m, &choice, scheduler.as_ref(), d, step_noise, hooks)? {
                    device_loop::DeviceOutcome::Done(last, steps) => {
                        m.runtime.logger().info(&format!("latents: {steps} steps with device-resident latents"));
                        latents = last;
                        device_steps = steps;
                    }
                    device_loop::DeviceOutcome::CaptureRefused(why) => {
                        m.runtime.logger().info(&format!("latents: host loop (CUDA graph capture refused: {why})"))
                    }
                }
            }
            Err(why) => m.runtime.logger().info(&format!("latents: host loop ({why})")),
        }
    }
    // The host loop runs the steps the device loop did not.
    let host_steps = if device_steps > 0 { &timesteps[..0] } else { &timesteps[..] };
    for (k, &t) in host_steps.iter().enumerate() {
        // `i` indexes the full schedule; img2img begins part-way in.
        let i = start + k;
        if cancelled() {
            return Err(Error::new(ErrorKind::Cancelled, format!("generation cancelled before step {}", k + 1)));
        }
        let scaled = unet_input(scheduler.scale_model_input(&latents, i))?;
        // One U-Net call, through the ControlNets when there are any.
        let call = |input: ArrayD<f32>, embeds: ArrayD<f32>, added: Option<&ArrayD<f32>>, rows: control::Rows| -> Result<ArrayD<f32>> {
            match &controls {
                None => unet_call(m, input, t, embeds, added, w_embedding.as_ref(), run_options),
                Some(c) => {
                    // The ControlNet sees the latents without inpainting channels.
                    let latent_in = input.slice_axis(Axis(1), ndarray::Slice::from(0..channels)).to_owned();
                    let residuals = c.residuals(&latent_in, t, &embeds, added, rows, k, control_total, run_options)?;
                    let cond_embedding = w_embedding.as_ref().map(|w| timestep_cond(w, input.shape()[0])).transpose()?;
                    c.unet_call(m, input, t, embeds, added, residuals, cond_embedding, run_options)
                }
            }
        };
        let rows_cond = if guess_cfg { control::Rows::Last } else { control::Rows::All };
        let noise_pred = match (&uncond, &embeds_batched) {
            (Some(_), Some(embeds)) => {
                let input = concatenate(Axis(0), &[scaled.view(), scaled.view()]).map_err(|e| Error::internal(e.to_string()))?;
                let out = call(input, embeds.clone(), added_batched.as_ref(), rows_cond)?;
                let u = out.slice(s![0..1, .., .., ..]).into_dyn().to_owned();
                let c = out.slice(s![1..2, .., .., ..]).into_dyn().to_owned();
                guide(&u, &c, request.guidance_scale, request.guidance_rescale)
            }
            (Some(u_emb), None) => {
                let rows_uncond = if guess_cfg { control::Rows::Zero } else { control::Rows::All };
                let u = call(scaled.clone(), u_emb.clone(), added_uncond, rows_uncond)?;
                let c = call(scaled, cond.clone(), added_cond, control::Rows::All)?;
                guide(&u, &c, request.guidance_scale, request.guidance_rescale)
            }
            (None, _) => call(scaled, cond.clone(), added_cond, control::Rows::All)?,
        };
        latents = scheduler.step(&noise_pred, i, &latents, step_noise)?;
        if let (Some((clean, n)), Some(mask)) = (&blend, &inpaint) {
            // Keep the unmasked area on the original picture's noise level.
            let kept = if k + 1 < total { scheduler.add_noise(clean, n, i + 1)? } else { clean.clone() };
            ndarray::Zip::from(&mut latents).and(&kept).and(&mask.latent).for_each(|l, &o, &w| *l = (1.0 - w) * o + w * *l);
        }
        if let Some(cb) = on_step.as_mut() {
            cb(&StepProgress { step: k + 1, total, latents: &latents });
        }
    }
    if cancelled() {
        return Err(Error::new(ErrorKind::Cancelled, "generation cancelled before decoding"));
    }
    if !decodes {
        return Ok(RunOutput { image: None, latents, timesteps, device_steps });
    }
    let mut image = m.decode_latents(&latents, &request.vae_tiling, request.decoder, run_options)?;
    if let (Some(mask), Some(init)) = (&inpaint, &request.init_image) {
        if request.paste_unmasked.unwrap_or(!inpainting_unet) {
            paste_kept_pixels(&mut image, init, mask)?;
        }
    }
    Ok(RunOutput { image: Some(image), latents, timesteps, device_steps })
}

/// SDXL conditioning of one request: per-token embeddings of each side, and
/// each side's pooled embedding and time ids joined as `[1, pooled | ids]`.
struct XlRequestConditioning {
    cond: ArrayD<f32>,
    uncond: Option<ArrayD<f32>>,
    cond_added: ArrayD<f32>,
    uncond_added: Option<ArrayD<f32>>,
}

fn xl_conditioning(
    m: &ModelInner,
    xl: &crate::model::xl::XlText,
    request: &GenerateRequest,
    do_cfg: bool,
    img2img: bool,
    (width, height): (usize, usize),
    options: Option<&ort::session::RunOptions>,
) -> Result<XlRequestConditioning> {
    use crate::model::xl::TimeIds;
    let syntax = request.prompt_syntax;
    let or = |a: &str, b: &str| if a.is_empty() { b.to_string() } else { a.to_string() };
    let prompt_2 = or(&request.prompt_2, &request.prompt);
    let negative_2 = or(&request.negative_prompt_2, &request.negative_prompt);
    let negative_empty = request.negative_prompt.is_empty() && request.negative_prompt_2.is_empty();
    let encode_negative = do_cfg && !(negative_empty && xl.force_zeros);
    // Both sides in one pass, so each encoder runs (and, per stage, loads) once.
    let mut jobs = vec![([request.prompt.as_str(), prompt_2.as_str()], m.clip_skip)];
    if encode_negative {
        jobs.push(([request.negative_prompt.as_str(), negative_2.as_str()], 0));
    }
    let mut encoded = m.encode_xl_many(xl, &jobs, syntax, options)?.into_iter();
    let cond = encoded.next().ok_or_else(|| Error::internal("no SDXL prompt embeddings"))?;
    let hw = |s: Option<[usize; 2]>, default: (usize, usize)| s.map_or(default, |[w, h]| (h, w));
    let c = &request.xl;
    let [top, left] = c.crop_top_left;
    let positive = TimeIds {
        original: hw(c.original_size, (height, width)),
        crop: (top, left),
        target: hw(c.target_size, (height, width)),
        aesthetic_score: c.aesthetic_score,
    };
    let [ntop, nleft] = c.negative_crop_top_left;
    let negative = if xl.aesthetic || img2img {
        // diffusers' img2img and inpainting pipelines: each negative value
        // defaults to the positive one, and with a base (6 time ids) U-Net the
        // negative row takes the positive crop: `negative_crops_coords_top_left`
        // is read only by refiners there.
        TimeIds {
            original: hw(c.negative_original_size, positive.original),
            crop: if xl.aesthetic { (ntop, nleft) } else { (top, left) },
            target: hw(c.negative_target_size, positive.target),
            aesthetic_score: c.negative_aesthetic_score,
        }
    } else if c.negative_original_size.is_some() && c.negative_target_size.is_some() {
        TimeIds {
            original: hw(c.negative_original_size, positive.original),
            crop: (ntop, nleft),
            target: hw(c.negative_target_size, positive.target),
            aesthetic_score: c.negative_aesthetic_score,
        }
    } else {
        positive
    };
    let join = |pooled: &ArrayD<f32>, ids: &TimeIds| -> Result<ArrayD<f32>> {
        let pooled = pooled.to_shape(IxDyn(&[1, pooled.len()])).map_err(|e| Error::internal(e.to_string()))?.to_owned();
        concatenate(Axis(1), &[pooled.view(), xl.time_ids(ids).view()]).map_err(|e| Error::internal(e.to_string()))
    };
    let cond_added = join(&cond.pooled, &positive)?;
    if !do_cfg {
        return Ok(XlRequestConditioning { cond: cond.hidden, uncond: None, cond_added, uncond_added: None });
    }
    let mut uncond = match encoded.next() {
        Some(e) => e,
        None => crate::model::xl::XlEmbeds { hidden: ArrayD::zeros(cond.hidden.raw_dim()), pooled: ArrayD::zeros(cond.pooled.raw_dim()) },
    };
    let mut cond_hidden = cond.hidden;
    // Weighted prompts: the same number of 77-token chunks on both sides.
    let (lc, lu) = (cond_hidden.shape()[1], uncond.hidden.shape()[1]);
    if lc != lu {
        let (short, skip) = if lc < lu { (&mut cond_hidden, m.clip_skip) } else { (&mut uncond.hidden, 0) };
        let empty = m.encode_xl(xl, ["", ""], skip, syntax, options)?.hidden;
        crate::model::xl::pad_chunks(short, &empty, lc.max(lu))?;
    }
    let uncond_added = join(&uncond.pooled, &negative)?;
    Ok(XlRequestConditioning { cond: cond_hidden, uncond: Some(uncond.hidden), cond_added, uncond_added: Some(uncond_added) })
}

/// Index of the first step img2img runs: diffusers' `get_timesteps`
/// (`t_start = steps - min(int(steps * strength), steps)`), computed on the
/// strength's shortest decimal form so it rounds as Python does.
fn img2img_start(request: &GenerateRequest) -> Result<usize> {
    if !(0.0..=1.0).contains(&request.strength) {
        return Err(Error::invalid(format!("strength {} must be within 0..=1", request.strength)));
    }
    let strength = python_float(request.strength);
    let run = ((request.steps as f64 * strength) as usize).min(request.steps);
    if run == 0 {
        return Err(Error::invalid(format!(
            "strength {} with {} steps runs no denoising step; raise one of them",
            request.strength, request.steps
        )));
    }
    Ok(request.steps - run)
}

/// A mask binarized at pixel resolution and sampled (nearest) at latent resolution.
pub(crate) struct InpaintMask {
    /// Per pixel: repaint?
    pixels: Vec<bool>,
    /// `[1, C, h, w]` of 0/1: C latent channels for blending latents (ordinary
    /// U-Net), 1 for an inpainting U-Net's mask input.
    latent: ArrayD<f32>,
}

/// diffusers' `masked_image = init_image * (mask < 0.5)`: the `[1, 3, H, W]`
/// picture in [-1, 1] with the repainted pixels set to 0.
fn masked_image(image: &ArrayD<f32>, mask: &InpaintMask) -> ArrayD<f32> {
    let mut out = image.clone();
    let (channels, h, w) = (image.shape()[1], image.shape()[2], image.shape()[3]);
    for y in 0..h {
        for x in 0..w {
            if mask.pixels[y * w + x] {
                for c in 0..channels {
                    out[[0, c, y, x]] = 0.0;
                }
            }
        }
    }
    out
}

pub(crate) fn inpaint_mask(mask: &Mask, init: &InitImage, width: usize, height: usize, f: usize, channels: usize) -> Result<InpaintMask> {
    if (mask.width, mask.height) != (init.width, init.height) || mask.data.len() != mask.width * mask.height {
        return Err(Error::new(
            ErrorKind::InvalidSize,
            format!(
                "the mask is {}x{} ({} bytes) but the init image is {}x{}",
                mask.width, mask.height, mask.data.len(), init.width, init.height
            ),
        ));
    }
    if (init.width, init.height) != (width, height) {
        return Err(Error::new(ErrorKind::InvalidSize, format!("inpainting needs the init image at the output size {width}x{height}")));
    }
    // diffusers' mask processor: value / 255 binarized at 0.5.
    let pixels: Vec<bool> = mask.data.iter().map(|&v| v >= 128).collect();
    let (h, w) = (height / f, width / f);
    // torch.nn.functional.interpolate(mode="nearest"), as both the latent
    // blend and prepare_mask_latents use it: source index = dst * scale.
    let mut latent = ArrayD::zeros(IxDyn(&[1, channels, h, w]));
    for c in 0..channels {
        for y in 0..h {
            for x in 0..w {
                latent[[0, c, y, x]] = pixels[(y * f) * width + x * f] as u8 as f32;
            }
        }
    }
    Ok(InpaintMask { pixels, latent })
}

/// Restores the kept (unmasked) pixels exactly from the init picture.
fn paste_kept_pixels(image: &mut FloatImage, init: &InitImage, mask: &InpaintMask) -> Result<()> {
    if (image.width, image.height) != (init.width, init.height) {
        return Err(Error::internal("inpainting output and init image sizes differ"));
    }
    for (i, keep) in mask.pixels.iter().map(|r| !r).enumerate() {
        if keep {
            for c in 0..3 {
                image.data[i * 3 + c] = init.rgb[i * 3 + c] as f32 / 255.0;
            }
        }
    }
    Ok(())
}

/// The init picture as `[1, 3, H, W]` in [-1, 1], resized if needed.
pub(crate) fn init_image_tensor(init: &InitImage, width: usize, height: usize) -> Result<ArrayD<f32>> {
    if init.width == 0 || init.height == 0 || init.rgb.len() != init.width * init.height * 3 {
        return Err(Error::new(
            ErrorKind::InvalidSize,
            format!("init image of {}x{} needs {} RGB bytes, got {}", init.width, init.height, init.width * init.height * 3, init.rgb.len()),
        ));
    }
    let rgb: std::borrow::Cow<'_, [u8]> = if (init.width, init.height) == (width, height) {
        std::borrow::Cow::Borrowed(&init.rgb)
    } else {
        let img = image::RgbImage::from_raw(init.width as u32, init.height as u32, init.rgb.clone())
            .ok_or_else(|| Error::internal("init image buffer"))?;
        let resized = image::imageops::resize(&img, width as u32, height as u32, image::imageops::FilterType::Lanczos3);
        std::borrow::Cow::Owned(resized.into_raw())
    };
    let mut t = ArrayD::zeros(IxDyn(&[1, 3, height, width]));
    for y in 0..height {
        for x in 0..width {
            for c in 0..3 {
                t[[0, c, y, x]] = rgb[(y * width + x) * 3 + c] as f32 / 255.0 * 2.0 - 1.0;
            }
        }
    }
    Ok(t)
}

/// `uncond + g * (cond - uncond)`, then guidance rescale by `phi` when > 0.
fn guide(uncond: &ArrayD<f32>, cond: &ArrayD<f32>, g: f32, phi: f32) -> ArrayD<f32> {
    let mut out = uncond.clone();
    ndarray::Zip::from(&mut out).and(cond).for_each(|u, &c| *u += g * (c - *u));
    if phi > 0.0 {
        rescale_noise_cfg(&mut out, cond, phi);
    }
    out
}

/// Sample standard deviation (Bessel-corrected, as `torch.std`) of one batch item.
fn std_dev(x: &ArrayD<f32>) -> f64 {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt()
}

/// diffusers' `rescale_noise_cfg` for a batch of one: mixes the guided
/// prediction rescaled to the conditional one's standard deviation into it by
/// `phi`: `phi · cfg · std(cond) / std(cfg) + (1 − phi) · cfg`.
fn rescale_noise_cfg(cfg: &mut ArrayD<f32>, cond: &ArrayD<f32>, phi: f32) {
    let ratio = (std_dev(cond) / std_dev(cfg)) as f32;
    cfg.mapv_inplace(|v| phi * (v * ratio) + (1.0 - phi) * v);
}

/// The LCM guidance embedding repeated for each batch item, `[batch, dim]`.
fn timestep_cond(w: &[f32], batch: usize) -> Result<ArrayD<f32>> {
    let mut data = Vec::with_capacity(w.len() * batch);
    for _ in 0..batch {
        data.extend_from_slice(w);
    }
    ArrayD::from_shape_vec(IxDyn(&[batch, w.len()]), data).map_err(|e| Error::internal(e.to_string()))
}

fn unet_call(
    m: &ModelInner,
    sample: ArrayD<f32>,
    t: f64,
    embeds: ArrayD<f32>,
    added: Option<&ArrayD<f32>>,
    w: Option<&Vec<f32>>,
    options: Option<&ort::session::RunOptions>,
) -> Result<ArrayD<f32>> {
    let inputs = unet_inputs(m, sample, t, embeds, added, w)?;
    // In a ControlNet folder, `unet_controlnet` with zero residuals serves
    // plain calls too (specialised like the U-Net when the static U-Net is
    // on), so the weights are held once; `unet/` only when it is open
    // already (the device loop's binding) or cannot stand in.
    if !m.unet.is_loaded() {
        if let Some(residual) = m.residual_unet_for_plain_calls() {
            return control::zero_residual_call(m, &residual, inputs, options);
        }
    }
    run_unet_graph(m, &m.unet, &m.static_unets, &m.unet_io.output, inputs, options)
}

/// Runs a U-Net graph (`unet/` or `unet_controlnet/`): through the graph
/// specialised to these inputs' shapes when the runtime asks for the static
/// U-Net, else (or when that shape cannot be specialised) through `unet`.
pub(crate) fn run_unet_graph(
    m: &ModelInner,
    unet: &crate::model::graph::Graph,
    statics: &crate::model::static_unet::StaticUnets,
    output: &str,
    inputs: Vec<(&crate::model::graph::TensorSpec, GraphInput)>,
    options: Option<&ort::session::RunOptions>,
) -> Result<ArrayD<f32>> {
    if let Some((s, key)) = specialised_graph(m, unet, statics, output, &inputs) {
        if !s.graph.uses_cuda_graph() {
            return s.graph.run(inputs, output, options);
        }
        // A capture ONNX Runtime refuses (a node it cannot place on the
        // GPU) fails the run: that shape falls back to the dynamic graph.
        let copy: Vec<(&crate::model::graph::TensorSpec, GraphInput)> = inputs.iter().map(|(spec, d)| (*spec, d.clone())).collect();
        match s.graph.run(copy, output, options) {
            Err(e) if e.kind() == ErrorKind::Inference => statics.give_up(&m.runtime, key, &e),
            done => return done,
        }
    }
    unet.run(inputs, output, options)
}

/// The U-Net's inputs for one call, by graph input.
pub(crate) fn unet_inputs<'m>(
    m: &'m ModelInner,
    sample: ArrayD<f32>,
    t: f64,
    embeds: ArrayD<f32>,
    added: Option<&ArrayD<f32>>,
    w: Option<&Vec<f32>>,
) -> Result<Vec<(&'m crate::model::graph::TensorSpec, GraphInput)>> {
    let io = &m.unet_io;
    let batch = sample.shape()[0];
    let mut inputs = vec![
        (&io.sample, GraphInput::Float(sample)),
        (&io.timestep, GraphInput::Float(control::timestep(&io.timestep, t, batch))),
        (&io.encoder_hidden_states, GraphInput::Float(embeds)),
    ];
    if let (Some(spec), Some(w)) = (&io.timestep_cond, w) {
        inputs.push((spec, GraphInput::Float(timestep_cond(w, batch)?)));
    }
    // SDXL: `[batch, pooled | time ids]`, split into the two inputs.
    if let (Some(xl), Some(added)) = (&m.xl, added) {
        let pooled = added.shape()[1] - xl.time_id_count();
        let text_embeds = added.slice(s![.., ..pooled]).to_owned().into_dyn();
        let time_ids = added.slice(s![.., pooled..]).to_owned().into_dyn();
        inputs.push((&xl.text_embeds, GraphInput::Float(text_embeds)));
        inputs.push((&xl.time_ids, GraphInput::Float(time_ids)));
    }
    Ok(inputs)
}

/// The U-Net specialised to these inputs' shapes, when the runtime asks for
/// the static U-Net (or CUDA graphs) and the shape could be specialised; with
/// the key under which it is kept.
pub(crate) fn specialised_unet(
    m: &ModelInner,
    inputs: &[(&crate::model::graph::TensorSpec, GraphInput)],
) -> Option<(std::sync::Arc<crate::model::static_unet::Specialised>, Vec<Vec<usize>>)> {
    specialised_graph(m, &m.unet, &m.static_unets, &m.unet_io.output, inputs)
}

/// `unet` (`unet/` or `unet_controlnet/`) specialised to these inputs' shapes
/// (the sample first), kept in `statics`; `None` unless the runtime asks for
/// the static U-Net (or CUDA graphs) and the shape could be specialised.
pub(crate) fn specialised_graph(
    m: &ModelInner,
    unet: &crate::model::graph::Graph,
    statics: &crate::model::static_unet::StaticUnets,
    output: &str,
    inputs: &[(&crate::model::graph::TensorSpec, GraphInput)],
) -> Option<(std::sync::Arc<crate::model::static_unet::Specialised>, Vec<Vec<usize>>)> {
    let policy = &m.runtime.inner.providers;
    if !(policy.static_unet || policy.cuda_graph) {
        return None;
    }
    let shapes: Vec<(&str, Vec<usize>)> = inputs
        .iter()
        .map(|(spec, data)| {
            let shape = match data {
                GraphInput::Float(a) => a.shape().to_vec(),
                GraphInput::Int(a) => a.shape().to_vec(),
            };
            (spec.name.as_str(), shape)
        })
        .collect();
    // The U-Net's output has the latents' shape (batch, channels, h, w);
    // an inpainting U-Net's output has the latent channels only.
    let mut out_shape = shapes[0].1.clone();
    if let Some(&c) = unet.outputs.iter().find(|o| o.name == output).and_then(|o| o.shape.get(1)).filter(|&&c| c > 0) {
        out_shape[1] = c as usize;
    } else {
        out_shape[1] = m.layout.vae_config.latent_channels;
    }
    let key: Vec<Vec<usize>> = shapes.iter().map(|(_, s)| s.clone()).collect();
    statics.get(&m.runtime, unet, &shapes, (output, out_shape)).map(|s| (s, key))
}

/// The LCM guidance embedding (diffusers `get_guidance_scale_embedding`).
fn guidance_embedding(w: f32, dim: usize) -> Vec<f32> {
    let w = w * 1000.0;
    let half = dim / 2;
    let base = (10000f32).ln() / (half.max(2) - 1) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (-(i as f32) * base).exp() * w).collect();
    let mut out: Vec<f32> = freqs.iter().map(|x| x.sin()).chain(freqs.iter().map(|x| x.cos())).collect();
    out.resize(dim, 0.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed from diffusers 0.39
    /// `LatentConsistencyModelPipeline.get_guidance_scale_embedding(torch.tensor([w]), embedding_dim=d)`.
    #[test]
    fn guidance_embedding_matches_diffusers() {
        let want16 = [
            -0.4677717983722687, 0.815555214881897, -0.9896453022956848, -0.2267242819070816, 0.5242677927017212,
            0.6401917338371277, 0.18530257046222687, 0.049979161471128464, -0.8838492631912231, -0.5786793231964111,
            -0.1435345858335495, -0.9739589691162109, -0.8515534400939941, 0.7682151794433594, 0.9826815128326416,
            0.9987502694129944,
        ];
        let got = guidance_embedding(1.5 - 1.0, 16);
        for (i, (g, w)) in got.iter().zip(want16).enumerate() {
            assert!((*g as f64 - w).abs() <= 1e-5, "dim 16 [{i}]: {g} vs {w}");
        }
        // Odd width: zero-padded.
        let want7 = [0.5068854093551636, 0.7738906741142273, 0.6442176103591919, 0.8620134592056274, 0.6333191990852356, 0.7648422122001648, 0.0];
        let got = guidance_embedding(8.0 - 1.0, 7);
        for (i, (g, w)) in got.iter().zip(want7).enumerate() {
            assert!((*g as f64 - w).abs() <= 1e-5, "dim 7 [{i}]: {g} vs {w}");
        }
        // SD 1.5 LCM width 256 at guidance 7.5 (w·1000 = 6500: sin/cos of
        // arguments up to 6500 rad, where one f32 ulp of the argument is 5e-4).
        let want256: [f64; 256] = [
            -0.04478473961353302, 0.7628610730171204, -0.8710300326347351, 0.9947659373283386, 0.09227283298969269, -0.7352519631385803,
            -0.06315650045871735, -0.8894098401069641, 0.6623413562774658, -0.6040002703666687, -0.4531727433204651, -0.6710272431373596,
            0.9652726650238037, -0.11851675808429718, -0.9677943587303162, -0.4374335706233978, 0.9242210984230042, -0.057098813354969025,
            0.4979621171951294, -0.9502054452896118, -0.3453271985054016, -0.5257346034049988, -0.9363905787467957, 0.7289788126945496,
            0.12727925181388855, -0.9769151210784912, -0.14434067904949188, -0.027668504044413567, -0.9792727828025818, 0.9775034189224243,
            0.31125175952911377, 0.9945831298828125, -0.5463334918022156, 0.09333398193120956, -0.7053501009941101, -0.990525484085083,
            0.06776946038007736, -0.93753981590271, -0.9999278783798218, 0.8040829300880432, -0.7245951294898987, -0.6247699856758118,
            0.935447096824646, -0.9999697804450989, -0.313206285238266, -0.4487348794937134, -0.9394756555557251, 0.9928183555603027,
            -0.8565719127655029, -0.6334677934646606, -0.23570822179317474, -0.6444461345672607, -0.9053429365158081, 0.8217051029205322,
            -0.6066253185272217, 0.8523352742195129, -0.8996922969818115, -0.4549236595630646, 0.5055046677589417, 0.8534694910049438,
            0.8630122542381287, 0.580222487449646, -0.21162809431552887, -0.9896471500396729, -0.1460791528224945, 0.9837285876274109,
            -0.7274752855300903, 0.1624293327331543, 0.22116324305534363, -0.3544812798500061, 0.2688622772693634, 0.03140896186232567,
            -0.5086153149604797, 0.9392234086990356, -0.8736763596534729, 0.044470351189374924, 0.9010975956916809, -0.655144453048706,
            -0.6586506366729736, 0.7641108632087708, 0.7134227752685547, -0.5478706359863281, -0.9590727686882019, -0.09491506963968277,
            0.8470653295516968, 0.8925568461418152, 0.14621897041797638, -0.67620849609375, -0.999999463558197, -0.7191551327705383,
            -0.08702131360769272, 0.5465784072875977, 0.9309964179992676, 0.9796873331069946, 0.740351140499115, 0.329466849565506,
            -0.12694330513477325, -0.529426634311676, -0.8182926774024963, -0.9713695049285889, -0.9943270683288574, -0.9094781875610352,
            -0.7462209463119507, -0.5342918634414673, -0.2997850179672241, -0.06335622817277908, 0.16011559963226318, 0.3609890043735504,
            0.5339476466178894, 0.6769636273384094, 0.7903490662574768, 0.8759458065032959, 0.9364939332008362, 0.9751605987548828,
            0.9952172636985779, 0.999821662902832, 0.9918891191482544, 0.9740250706672668, 0.9485008716583252, 0.9172549247741699,
            0.8819134831428528, 0.8438188433647156, 0.8040645718574524, 0.7635259628295898, 0.7228942513465881, 0.6827060580253601,
            0.6433688998222351, 0.6051863431930542, -0.9989966750144958, 0.6465624570846558, 0.4912298023700714, 0.10217997431755066,
            0.9957337379455566, 0.6777938604354858, -0.9980036020278931, -0.45711058378219604, 0.7492021918296814, -0.796984076499939,
            0.8914227485656738, 0.7414327263832092, -0.26124462485313416, 0.9929520487785339, 0.2517421543598175, -0.8992507457733154,
            0.3818577826023102, -0.998368501663208, -0.8671987652778625, 0.3116241991519928, -0.9384823441505432, -0.8506486415863037,
            0.3509595990180969, 0.6845362782478333, -0.991866946220398, 0.21362784504890442, 0.9895280599594116, 0.9996171593666077,
            0.20254574716091156, -0.210919588804245, -0.9503275156021118, 0.10394441336393356, -0.8375677466392517, -0.9956348538398743,
            0.7088591456413269, -0.13732922077178955, 0.9977009892463684, -0.34787800908088684, -0.012011783197522163, 0.594517171382904,
            0.6891747713088989, 0.7808088660240173, 0.35346680879592896, 0.0077730948105454445, -0.9496850967407227, -0.8936648964881897,
            0.34261560440063477, 0.11963170766830444, 0.5160276889801025, -0.7737690806388855, -0.9718238711357117, -0.7646496891975403,
            0.42468127608299255, 0.569912850856781, -0.7949878573417664, 0.5229957699775696, 0.43652471899986267, -0.8905304670333862,
            -0.8628239035606384, -0.5211427807807922, -0.5051829814910889, -0.8144580125808716, -0.9773502945899963, -0.14352191984653473,
            0.9892728924751282, -0.1796611249446869, -0.6861339211463928, 0.9867202043533325, -0.9752368330955505, 0.9350631237030029,
            -0.9631786346435547, 0.9995065927505493, -0.8609938621520996, 0.3433065712451935, 0.4865075647830963, -0.9990106821060181,
            0.4336163103580475, 0.7555035948753357, -0.7524488568305969, -0.6450849175453186, 0.7007338404655457, 0.8365630507469177,
            -0.2831597328186035, -0.9954853653907776, -0.5314887166023254, 0.45093491673469543, 0.9892522692680359, 0.736710250377655,
            0.001062102965079248, -0.6948495507240295, -0.9962064623832703, -0.8374079465866089, -0.36502838134765625, 0.2005312442779541,
            0.6722203493118286, 0.9441671371459961, 0.9919099807739258, 0.8483557105064392, 0.5748018026351929, 0.23757365345954895,
            -0.10636577755212784, -0.4157516360282898, -0.6656983494758606, -0.8453000783920288, -0.9540067911148071, -0.9979909658432007,
            -0.9870982766151428, -0.9325700998306274, -0.8455175161361694, -0.7360164523124695, -0.612656831741333, -0.4824094772338867,
            -0.35068371891975403, -0.2214990109205246, -0.09768598526716232, 0.018886234611272812, 0.12710624933242798, 0.22644010186195374,
            0.31677454710006714, 0.3983005881309509, 0.4714112877845764, 0.5366281270980835, 0.5945419669151306, 0.64577716588974,
            0.6909586787223816, 0.7306931018829346, 0.7655563354492188, 0.7960838675498962,
        ];
        let got = guidance_embedding(7.5 - 1.0, 256);
        assert_eq!(got.len(), 256);
        // Measured: max |diff| 4.9e-4, at the highest frequencies, where a
        // one-ulp difference between torch's vectorized f32 exp and Rust's moves
        // a ~6500 rad argument by 5e-4. The low frequencies agree to 1e-6.
        for (i, (g, w)) in got.iter().zip(want256).enumerate() {
            let tol = if i % 128 < 64 { 1e-3 } else { 1e-5 };
            assert!((*g as f64 - w).abs() <= tol, "dim 256 [{i}]: {g} vs {w}");
        }
        // The low-frequency tail: cos(6500 · 10000^(-127/127)) = cos(0.65).
        assert!((got[255] as f64 - 0.7960838675498962).abs() <= 1e-5, "{}", got[255]);
        assert!((got[127] as f64 - 0.6051863431930542).abs() <= 1e-5, "{}", got[127]);
    }

    #[test]
    fn guidance_rescale_matches_the_formula() {
        let u = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![0.1f32, -0.2, 0.3, 0.0]).unwrap();
        let c = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![0.5f32, 0.1, -0.4, 0.2]).unwrap();
        let plain = guide(&u, &c, 7.5, 0.0);
        let rescaled = guide(&u, &c, 7.5, 0.7);
        // torch: std_text / std_cfg with Bessel's correction.
        let ratio = std_dev(&c) / std_dev(&plain);
        for (p, r) in plain.iter().zip(rescaled.iter()) {
            let want = 0.7 * (*p as f64 * ratio) + 0.3 * *p as f64;
            assert!((*r as f64 - want).abs() < 1e-6);
        }
        assert!((std_dev(&c) - 0.37416573867739417).abs() < 1e-7);
    }
}
