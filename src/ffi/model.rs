//! `kiln_model`: a loaded Stable Diffusion export, and generation from it.
use std::ffi::c_char;
use std::path::Path;

use super::boundary::{clear_versioned, non_null, read_versioned, utf8_arg, utf8_opt, write_versioned};
use crate::image::limits::{check_image_size, pitched_len, try_with_capacity};
use super::handles::{self, Handle};
use super::image::kiln_image;
use super::runtime::kiln_runtime;
use super::status::kiln_status;
use crate::error::{Error, ErrorKind, Result};
use crate::model::Model;
use crate::pipeline::{GenerateRequest, InitialNoise, NoiseGenerator, PromptSyntax, XlConditioning};
use crate::scheduler::SchedulerKind;

/// A loaded model. Internally synchronized: several threads may generate from
/// one model at once (its graphs run one call at a time). Do not free it while
/// a call on it is in progress on another thread. Freeing it while jobs
/// submitted from it are queued or running is safe: each job holds what it
/// needs of the model, which is released when the last job ends.
pub struct kiln_model {
    _private: [u8; 0],
}

impl Handle for kiln_model {
    type Target = Model;
    const NAME: &'static str = "model";
}

/// Seeded noise generators; the value goes in
/// `kiln_generate_options.noise_generator`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_noise_generator {
    /// Kiln's portable noise: the same values on every platform, bit for bit.
    Kiln = 0,
    /// PyTorch's CPU generator (`torch.Generator("cpu").manual_seed(seed)`):
    /// a seed gives diffusers' image for that seed, and ComfyUI's initial
    /// noise; values equal torch's on x86-64 to a few float ulps. Only the
    /// seed's low 32 bits count, as in PyTorch. Needs latents of at least 16
    /// values (any size from 16x16 pixels).
    TorchCpu = 1,
    /// PyTorch's CUDA generator (`torch.manual_seed(seed)`, then
    /// `torch.randn(..., device="cuda")`), computed on the host: a seed gives
    /// AUTOMATIC1111's initial noise with its default ("GPU") or "NV" random
    /// source, and diffusers' image with a `torch.Generator("cuda")`; within
    /// a few 1e-6 of the GPU's values. The whole 64-bit seed counts.
    TorchCuda = 2,
}

/// Schedulers; the value goes in `kiln_generate_options.scheduler`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_scheduler {
    /// The one the model's `scheduler_config.json` names, if Kiln has it; else Euler.
    Default = 0,
    /// diffusers `DDIMScheduler` (eta = 0).
    Ddim = 1,
    /// diffusers `EulerDiscreteScheduler`.
    Euler = 2,
    /// diffusers `PNDMScheduler` with `skip_prk_steps` (PLMS; SD 1.x's default).
    /// Calls the U-Net steps + 1 times.
    Pndm = 3,
    /// diffusers `DPMSolverMultistepScheduler` (DPM-Solver++(2M)).
    DpmPP2M = 4,
    /// diffusers `DPMSolverMultistepScheduler` with `use_karras_sigmas`.
    DpmPP2MKarras = 5,
    /// diffusers `LMSDiscreteScheduler` (order 4).
    Lms = 6,
    /// diffusers `HeunDiscreteScheduler`. Calls the U-Net 2 * steps - 1 times.
    Heun = 7,
    /// diffusers `EulerAncestralDiscreteScheduler`. Stochastic: draws noise at
    /// every step from the seed's stream.
    EulerA = 8,
    /// diffusers `DPMSolverMultistepScheduler` with `sde-dpmsolver++`
    /// (DPM-Solver++(2M) SDE). Stochastic: draws noise at every step.
    DpmPP2MSde = 9,
    /// diffusers `UniPCMultistepScheduler` (bh2, order 2). Deterministic.
    UniPc = 10,
    /// diffusers `LCMScheduler`, for LCM-distilled U-Nets (2-8 steps).
    /// Stochastic: draws noise between steps.
    Lcm = 11,
}

/// Facts about a loaded model, filled by `kiln_model_get_info`. Accepted
/// `struct_size`: `sizeof(kiln_model_info)` (44), 40 (before `lora_slots`),
/// 36 (before `fused_attention`), 32 (before `quantization`) or 28 (before
/// `has_matting`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct kiln_model_info {
    /// Set by the caller to `sizeof(kiln_model_info)` before the call.
    pub struct_size: u32,
    /// Native width and height in pixels (used when a request gives 0).
    pub default_size: u32,
    /// Width and height must be multiples of this.
    pub size_multiple: u32,
    /// Latent channels (4 for SD 1.x/2.x).
    pub latent_channels: u32,
    /// Pixels per latent pixel (8 for SD).
    pub vae_downsampling: u32,
    /// Width of the text embeddings (768 for SD 1.x).
    pub embedding_dim: u32,
    /// 1 if the export has a VAE encoder (img2img), else 0.
    pub has_vae_encoder: u32,
    /// 1 if sprites from `kiln_model_make_sprite` can use a matting graph
    /// (`matting/` in the model folder, or `matting_path` given at load), else 0.
    pub has_matting: u32,
    /// The `kiln_quantization` the model was loaded with.
    pub quantization: u32,
    /// Attention layers of the U-Net that run as one fused node
    /// (`kiln_model_load_options.attention`); 0 when none do.
    pub fused_attention: u32,
    /// Layers of the U-Net with a LoRA slot
    /// (`kiln_model_load_options.lora_slots`); 0 when loaded without.
    pub lora_slots: u32,
}

/// One text-to-image request. Fill with `kiln_generate_options_init`, then set
/// at least `prompt`. Strings and arrays are borrowed for the call only.
///
/// Accepted `struct_size`: `sizeof(kiln_generate_options)`, or the size of an
/// older published layout, one that ended after `initial_noise_len`,
/// `guidance_rescale`, `reserved`, `noise_generator`, `reserved3`, `mask_height`,
/// `scheduler_overrides`, `reserved4`, `negative_aesthetic_score` or
/// `refiner_start` (on 64-bit targets 64, 72, 80, 128, 136, 160, 168, 208,
/// 280, 296; the current size is 312).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kiln_generate_options {
    /// `sizeof(kiln_generate_options)`, set by `kiln_generate_options_init`.
    pub struct_size: u32,
    /// Width in pixels; 0 = the model's native size.
    pub width: u32,
    /// Height in pixels; 0 = the model's native size.
    pub height: u32,
    /// Denoising steps; 0 = 20.
    pub steps: u32,
    /// Classifier-free guidance scale; ≤ 1 skips the unconditional pass. Default 7.5.
    pub guidance_scale: f32,
    /// A `kiln_scheduler` value. Default `KILN_SCHEDULER_DEFAULT`.
    pub scheduler: u32,
    /// Seed of the noise (same seed, same image on every platform); see
    /// `noise_generator`.
    pub seed: u64,
    /// UTF-8 prompt, required (may be empty).
    pub prompt: *const c_char,
    /// UTF-8 negative prompt, or NULL for none.
    pub negative_prompt: *const c_char,
    /// Optional exact initial latents, float32 NCHW `[1, C, height/8, width/8]`,
    /// used as diffusers' `latents=` argument. NULL = seeded noise.
    pub initial_noise: *const f32,
    /// Number of floats at `initial_noise`.
    pub initial_noise_len: usize,
    /// Guidance rescale (diffusers `guidance_rescale`) in [0, 1]: mixes in the
    /// guided prediction rescaled to the conditional one's standard deviation,
    /// against over-exposure at high guidance. 0 = off (default); only used
    /// with classifier-free guidance.
    pub guidance_rescale: f32,
    /// How `prompt` and `negative_prompt` are read: 0 = plain, as diffusers
    /// (default); 1 = AUTOMATIC1111 weighting: `(text)` x1.1, `[text]` /1.1,
    /// `(text:1.5)`, `\(` escapes, `BREAK`, and prompts longer than 75 tokens
    /// in 75-token chunks. Bad syntax fails with `KILN_STATUS_INVALID_ARGUMENT`
    /// and a message naming the column.
    pub prompt_weighting: u32,
    /// Reserved; set to 0 by `kiln_generate_options_init`, ignored. It makes
    /// this layout larger than the previous one (which ended with
    /// `guidance_rescale` and padding), so Kiln can tell the two apart by
    /// `struct_size` and never reads that padding as `prompt_weighting`.
    pub reserved: u32,
    /// img2img: the picture to start from, RGB8 or RGBA8 (alpha ignored), or
    /// NULL for text-to-image. Borrowed for the call (copied before a job is queued).
    pub init_image: *const u8,
    /// Bytes readable at `init_image`.
    pub init_image_len: usize,
    /// Width of `init_image` in pixels; resized (Lanczos3) if it differs from the request.
    pub init_image_width: u32,
    /// Height of `init_image` in pixels.
    pub init_image_height: u32,
    /// Bytes between rows of `init_image`; 0 = `width * channels`.
    pub init_image_row_pitch: usize,
    /// 3 (RGB) or 4 (RGBA).
    pub init_image_channels: u32,
    /// img2img: how much of the schedule runs, 0..=1 (diffusers' `strength`). Default 0.8.
    pub strength: f32,
    /// img2img: non-zero starts from the VAE posterior's mean instead of a sample.
    pub posterior_mean: u32,
    /// Which generator `seed` drives, a `kiln_noise_generator`: 0 = Kiln's
    /// portable noise (default), 1 = PyTorch's CPU generator, for the images
    /// diffusers makes with `generator=torch.Generator("cpu").manual_seed(seed)`
    /// (and ComfyUI's initial noise for the seed), 2 = PyTorch's CUDA
    /// generator (AUTOMATIC1111's default seeds). Was `reserved2` (0) in
    /// older layouts, so their callers get Kiln's noise.
    pub noise_generator: u32,
    /// Text-encoder layers to skip from the end (diffusers' `clip_skip`); 0 = off.
    pub clip_skip: u32,
    /// Reserved; 0.
    pub reserved3: u32,
    /// Inpainting: one byte per pixel of `init_image` (tightly packed), values
    /// ≥ 128 are repainted, the rest kept exactly (with a 9-channel inpainting
    /// U-Net the whole picture is regenerated, as diffusers does, and the
    /// rest is the model's reconstruction, not the input exactly); NULL = no
    /// inpainting.
    pub mask: *const u8,
    /// Bytes at `mask`: `mask_width * mask_height`.
    pub mask_len: usize,
    /// Mask width; must equal the init image's.
    pub mask_width: u32,
    /// Mask height; must equal the init image's.
    pub mask_height: u32,
    /// UTF-8 JSON object whose fields replace the model's
    /// `scheduler_config.json` values for this request (e.g.
    /// `{"timestep_spacing":"trailing"}`), or NULL.
    pub scheduler_overrides: *const c_char,
    /// Tiled VAE decode and encode: tile width and height in pixels (rounded
    /// down to a multiple of 8; at least 32). 0 = chosen from
    /// `vae_memory_budget_mib`, or no tiling when that is 0 too (default).
    /// On seamless axes the tiles wrap around, so the output still tiles.
    pub vae_tile_size: u32,
    /// Overlap of neighbouring VAE tiles in pixels; 0 = a quarter of the tile.
    pub vae_tile_overlap: u32,
    /// With `vae_tile_size` 0: MiB one VAE pass may use; the image is tiled
    /// (largest tile that fits) only when a whole pass is estimated to need
    /// more. 0 = no budget.
    pub vae_memory_budget_mib: u32,
    /// Which decoder makes the final image: 0 = the VAE (default), 1 = the
    /// model's tiny preview decoder (`preview_decoder/`, TAESD-shaped): much
    /// faster, softer in detail; UNSUPPORTED when the model has none.
    pub final_decoder: u32,
    /// ControlNets (`kiln_control`, each filled by `kiln_control_init`), or
    /// NULL with `control_count` 0. Needs the model's ControlNet layout
    /// (README, "ControlNet"); their residuals add.
    pub controls: *const super::control::kiln_control,
    /// Entries at `controls`.
    pub control_count: usize,
    /// Non-zero: diffusers' guess mode (with CFG only the conditional half gets
    /// the residuals, scaled 0.1..1 from the first block to the mid one).
    pub guess_mode: u32,
    /// Reserved; 0.
    pub reserved4: u32,
    // SDXL conditioning, one block appended after `reserved4` (issue 18).
    /// SDXL: UTF-8 prompt for the second text encoder (diffusers'
    /// `prompt_2`); NULL or "" = `prompt`. Bad UTF-8 is INVALID_UTF8, as for `prompt`.
    /// A refiner-style export (no `text_encoder`) does not use it or
    /// `negative_prompt_2`: its only encoder reads `prompt`, as in diffusers.
    /// This and the fields up to `negative_aesthetic_score` are SDXL's (the
    /// 208-byte layout ended before them); a model without SDXL conditioning
    /// refuses any of them set to a non-default value with INVALID_ARGUMENT
    /// naming the field, as diffusers' SD 1.x/2.x pipelines have no such inputs.
    pub prompt_2: *const c_char,
    /// SDXL: UTF-8 negative prompt for the second text encoder; NULL or "" =
    /// `negative_prompt`.
    pub negative_prompt_2: *const c_char,
    /// SDXL `original_size` width in pixels; 0 (with `original_height` 0) = the output size.
    pub original_width: u32,
    /// SDXL `original_size` height; give both or neither.
    pub original_height: u32,
    /// SDXL `crops_coords_top_left`: top (y) in pixels; default 0.
    pub crop_top: u32,
    /// SDXL `crops_coords_top_left`: left (x) in pixels; default 0.
    pub crop_left: u32,
    /// SDXL `target_size` width; 0 (with `target_height` 0) = the output size.
    /// Refiner-style U-Nets (aesthetic score instead of target size) refuse it.
    pub target_width: u32,
    /// SDXL `target_size` height; give both or neither.
    pub target_height: u32,
    /// SDXL `negative_original_size` width; 0 with its height = unset. In
    /// text-to-image the negative sizes are used only when both
    /// `negative_original_*` and `negative_target_*` are given (diffusers);
    /// with an init image (or on a refiner) each unset one is its positive value.
    pub negative_original_width: u32,
    /// SDXL `negative_original_size` height.
    pub negative_original_height: u32,
    /// SDXL `negative_crops_coords_top_left`: top; default 0. With an init image
    /// on a base (non-refiner) U-Net it is not used: the unconditional row takes
    /// the positive crop, as in diffusers' SDXL img2img and inpainting pipelines.
    pub negative_crop_top: u32,
    /// SDXL `negative_crops_coords_top_left`: left; default 0.
    pub negative_crop_left: u32,
    /// SDXL `negative_target_size` width; 0 with its height = unset.
    pub negative_target_width: u32,
    /// SDXL `negative_target_size` height.
    pub negative_target_height: u32,
    /// Refiner-style SDXL U-Nets (5 time ids, `requires_aesthetics_score`):
    /// diffusers' `aesthetic_score`, default 6.0 (set by
    /// `kiln_generate_options_init`; the value is used as given, 0 included).
    /// Other U-Nets refuse a value other than 6.0. Must be finite.
    pub aesthetic_score: f32,
    /// Refiner-style U-Nets: `negative_aesthetic_score`, default 2.5; as above.
    pub negative_aesthetic_score: f32,
    // Base-to-refiner hand-off, one block appended after `negative_aesthetic_score`
    // (the 280-byte layout ended before it).
    /// A second loaded model that finishes the schedule from this model's
    /// latents and decodes with its own VAE (diffusers' `denoising_end` on
    /// the base, `denoising_start` on the refiner); NULL (default) = none.
    /// Borrowed for the call: `kiln_job_submit` keeps its own reference, so the
    /// handle may be freed once submit returns. It must share the model's
    /// latent space (same family, latent channels, VAE downsampling,
    /// `scaling_factor` and `shift_factor`): otherwise INVALID_ARGUMENT
    /// naming `options->refiner`. `controls` guide this model's part only
    /// (their `start`/`end` are fractions of the whole schedule, as diffusers'
    /// `control_guidance_start`/`_end` with `denoising_end`); the refiner runs
    /// without them. With `mask`, both models inpaint (diffusers'
    /// `StableDiffusionXLInpaintPipeline` on both stages); an inpainting
    /// (9-channel) U-Net on either side, ControlNets with an init image,
    /// `heun`, or `lcm` img2img on an LCM-distilled U-Net: UNSUPPORTED. It
    /// wraps on this model's seamless axes (whatever its own), so a seamless
    /// model's texture still tiles.
    pub refiner: *const kiln_model,
    /// With `refiner`: the fraction of the schedule the model runs before the
    /// refiner takes over, strictly between 0 and 1 (default 0.8). Unused
    /// without a refiner.
    pub refiner_start: f32,
    // A variation seed (AUTOMATIC1111's), one block appended after
    // `refiner_start`.
    /// The variation seed: with `variation_strength` > 0 the starting noise
    /// (txt2img's initial latents; img2img's and inpainting's start noise)
    /// is AUTOMATIC1111's spherical blend of `seed`'s draw and this seed's,
    /// drawn with the same `noise_generator`; every other draw still comes
    /// from `seed`.
    pub variation_seed: u64,
    /// How far towards `variation_seed`'s noise, 0..=1; 0 (default) = no
    /// variation, 1 = the variation seed's starting noise. Out of range, or
    /// > 0 with `initial_noise`: INVALID_ARGUMENT.
    pub variation_strength: f32,
    /// Reserved; 0.
    pub reserved5: u32,
}

/// The first published layout ended after `initial_noise_len`.
const GENERATE_OPTIONS_V1: usize = layout_before!(kiln_generate_options, guidance_rescale);

/// The second layout, which ended after `guidance_rescale`: a caller built
/// against it passes this layout's padded size, and the bytes after
/// `guidance_rescale` are its struct's padding, not `prompt_weighting`
/// (never read: see `read_versioned`).
const GENERATE_OPTIONS_V2: usize = layout_before!(kiln_generate_options, prompt_weighting);

/// Every published layout of `kiln_generate_options` before the current
/// one, oldest first: each ended just before the named field
/// (after `initial_noise_len`, `guidance_rescale`, `reserved`, `noise_generator`,
/// `reserved3`, `mask_height`, `scheduler_overrides`, `reserved4`,
/// `negative_aesthetic_score`, `refiner_start`).
const GENERATE_OPTIONS_OLDER: [usize; 10] = [
    GENERATE_OPTIONS_V1,
    GENERATE_OPTIONS_V2,
    layout_before!(kiln_generate_options, init_image),
    layout_before!(kiln_generate_options, clip_skip),
    layout_before!(kiln_generate_options, mask),
    layout_before!(kiln_generate_options, scheduler_overrides),
    layout_before!(kiln_generate_options, vae_tile_size),
    layout_before!(kiln_generate_options, prompt_2),
    layout_before!(kiln_generate_options, refiner),
    layout_before!(kiln_generate_options, variation_seed),
];

pub(crate) fn default_generate_options() -> kiln_generate_options {
    kiln_generate_options {
        struct_size: std::mem::size_of::<kiln_generate_options>() as u32,
        width: 0,
        height: 0,
        steps: 20,
        guidance_scale: 7.5,
        scheduler: kiln_scheduler::Default as u32,
        seed: 0,
        prompt: std::ptr::null(),
        negative_prompt: std::ptr::null(),
        initial_noise: std::ptr::null(),
        initial_noise_len: 0,
        guidance_rescale: 0.0,
        prompt_weighting: 0,
        init_image: std::ptr::null(),
        init_image_len: 0,
        init_image_width: 0,
        init_image_height: 0,
        init_image_row_pitch: 0,
        init_image_channels: 4,
        strength: 0.8,
        posterior_mean: 0,
        noise_generator: kiln_noise_generator::Kiln as u32,
        clip_skip: 0,
        reserved3: 0,
        mask: std::ptr::null(),
        mask_len: 0,
        mask_width: 0,
        mask_height: 0,
        scheduler_overrides: std::ptr::null(),
        controls: std::ptr::null(),
        control_count: 0,
        guess_mode: 0,
        reserved4: 0,
        prompt_2: std::ptr::null(),
        negative_prompt_2: std::ptr::null(),
        original_width: 0,
        original_height: 0,
        crop_top: 0,
        crop_left: 0,
        target_width: 0,
        target_height: 0,
        negative_original_width: 0,
        negative_original_height: 0,
        negative_crop_top: 0,
        negative_crop_left: 0,
        negative_target_width: 0,
        negative_target_height: 0,
        aesthetic_score: XlConditioning::default().aesthetic_score,
        negative_aesthetic_score: XlConditioning::default().negative_aesthetic_score,
        refiner: std::ptr::null(),
        refiner_start: 0.8,
        variation_seed: 0,
        variation_strength: 0.0,
        reserved5: 0,
        reserved: 0,
        vae_tile_size: 0,
        vae_tile_overlap: 0,
        vae_memory_budget_mib: 0,
        final_decoder: 0,
    }
}

/// Fills `options` with defaults, including `struct_size`. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn kiln_generate_options_init(options: *mut kiln_generate_options) {
    boundary_void!({
        if !options.is_null() {
            // SAFETY: non-null; the caller passes a writable struct.
            unsafe { options.write(default_generate_options()) };
        }
    })
}

/// Loads a model folder in the diffusers/optimum ONNX layout (`model_index.json`,
/// `text_encoder/`, `unet/`, `vae_decoder/`, `tokenizer/`, `scheduler/`).
///
/// `model_dir` is a UTF-8 path. On failure `*model_out` is NULL and the message
/// names the missing or malformed file. Errors: NULL_ARGUMENT, INVALID_UTF8,
/// MODEL_NOT_FOUND, MODEL_INVALID, UNSUPPORTED, IO, INFERENCE_FAILED.
#[no_mangle]
pub unsafe extern "C" fn kiln_model_load(
    runtime: *const kiln_runtime,
    model_dir: *const c_char,
    model_out: *mut *mut kiln_model,
) -> kiln_status {
    boundary!({
        // SAFETY: the caller's contract is `load_into`'s; NULL options = defaults.
        unsafe { load_into(runtime, model_dir, std::ptr::null(), model_out) }
    })
}

/// How `kiln_model_load_with` loads a model. Fill with
/// `kiln_model_load_options_init`; NULL = defaults (what `kiln_model_load`
/// does). Strings are borrowed for the call only. Accepted `struct_size`:
/// `sizeof(kiln_model_load_options)` (32 on 64-bit targets), the layout
/// before `attention` (24) or before `quantization` (16).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kiln_model_load_options {
    /// `sizeof(kiln_model_load_options)`, set by `kiln_model_load_options_init`.
    pub struct_size: u32,
    /// A `kiln_seamless` value. Non-zero loads the U-Net and VAE decoder
    /// already rewritten to wrap around on those axes instead of the plain
    /// ones, and the handle is that seamless view: a game that only wants
    /// tileable textures never holds the plain graphs (about half the
    /// memory of loading plain and calling `kiln_model_seamless`). Images are
    /// bit-identical to that path. `kiln_model_seamless(handle, KILN_SEAMLESS_NONE)`
    /// still works and loads the plain graphs then. Default 0 (plain).
    pub seamless: u32,
    /// UTF-8 path of a matting graph for `kiln_model_make_sprite`: a folder
    /// holding `model.onnx` and optionally `config.json` (as a model folder's
    /// `matting/`), or an ONNX file whose settings, if any, are in the `.json`
    /// of the same name beside it (`rmbg.onnx`, `rmbg.json`). It must exist
    /// (MODEL_NOT_FOUND otherwise) and is loaded on the first sprite. NULL
    /// (default) = the model folder's `matting/` when there is one.
    pub matting_path: *const c_char,
    /// A `kiln_quantization` value. `KILN_QUANTIZATION_INT8` stores the text
    /// encoders' and U-Net's matrix-product weights as int8, rewritten at
    /// load as ONNX Runtime's `quantize_dynamic` makes them (convolutions and
    /// the VAE stay float): less memory, pictures close to but not equal to
    /// the float model's (README "Quantized weights"). Views, LoRA sets and
    /// ControlNet's U-Net of the handle are quantized too. Default 0 (as
    /// exported).
    pub quantization: u32,
    /// A `kiln_attention` value. `KILN_ATTENTION_AUTO` (default) runs each
    /// attention layer of the U-Net and ControlNets as ONNX Runtime's fused
    /// `MultiHeadAttention` node, rewritten at load, when the graphs run on
    /// the CPU provider: a 512x512 SD 1.5 U-Net call needs about 4 GB less
    /// memory and is faster; pictures differ from the exported graph's by
    /// float rounding only (README "Fused attention"). On a GPU provider auto
    /// keeps the graphs as exported (not measured there yet).
    /// `KILN_ATTENTION_EXPORTED` runs them as exported; `KILN_ATTENTION_FUSED`
    /// fuses whatever the providers.
    pub attention: u32,
    /// Nonzero (1): give the U-Net and text encoders a LoRA slot beside every
    /// adaptable layer, so that `kiln_model_with_loras` and
    /// `kiln_model_with_adapters` feed plain low-rank LoRAs at run time
    /// instead of merging them: no new session and no second copy of the
    /// weights per LoRA set (milliseconds instead of seconds). Slots no
    /// LoRA uses are switched off (about 0.5 % per U-Net call for all of
    /// them); the layers a fed LoRA adapts run their side paths (about 5-7 %
    /// with every layer adapted; README "LoRA slots"). LoHa, LoKr, full diffs,
    /// DoRA and embeddings are merged as without slots. Not with
    /// `static_unet` or `cuda_graph` (UNSUPPORTED). Default 0. (Was
    /// `reserved`, 0.)
    pub lora_slots: u32,
}

/// How a model's weights are stored for running.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_quantization {
    /// As exported.
    None = 0,
    /// int8 matrix-product weights in the text encoders and U-Net.
    Int8 = 1,
}

/// How attention layers run.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_attention {
    /// Fused when the graphs run on the CPU provider.
    Auto = 0,
    /// As exported.
    Exported = 1,
    /// Fused whatever the providers.
    Fused = 2,
}

const MODEL_LOAD_OPTIONS_V3: usize = std::mem::size_of::<kiln_model_load_options>();

/// `kiln_model_load_options` first ended after `matting_path`, then after `quantization`.
const MODEL_LOAD_OPTIONS_OLDER: [usize; 2] =
    [layout_before!(kiln_model_load_options, quantization), layout_before!(kiln_model_load_options, attention)];

/// A `kiln_attention` value from C; `what` names the argument in the message.
pub(crate) fn attention_from_c(value: u32, what: &str) -> Result<crate::model::attention::Attention> {
    crate::model::attention::Attention::from_u32(value)
        .ok_or_else(|| Error::invalid(format!("{what} {value} is not a kiln_attention (0 auto, 1 exported, 2 fused)")))
}

/// A `kiln_quantization` value from C; `what` names the argument in the message.
pub(crate) fn quantization_from_c(value: u32, what: &str) -> Result<crate::model::quantize::Quantization> {
    use crate::model::quantize::Quantization;
    match value {
        0 => Ok(Quantization::None),
        1 => Ok(Quantization::Int8),
        other => Err(Error::invalid(format!("{what} {other} is not a kiln_quantization (0 none, 1 int8)"))),
    }
}

/// `kiln_model_info` first ended before `has_matting`, then before
/// `quantization`, then before `fused_attention`, then before `lora_slots`.
const MODEL_INFO_OLDER: [usize; 4] = [
    layout_before!(kiln_model_info, has_matting),
    layout_before!(kiln_model_info, quantization),
    layout_before!(kiln_model_info, fused_attention),
    layout_before!(kiln_model_info, lora_slots),
];

fn default_model_load_options() -> kiln_model_load_options {
    kiln_model_load_options {
        struct_size: MODEL_LOAD_OPTIONS_V3 as u32,
        seamless: 0,
        matting_path: std::ptr::null(),
        quantization: 0,
        attention: 0,
        lora_slots: 0,
    }
}

/// Fills `options` with defaults, including `struct_size`. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn kiln_model_load_options_init(options: *mut kiln_model_load_options) {
    boundary_void!({
        if !options.is_null() {
            // SAFETY: non-null; the caller passes a writable struct.
            unsafe { options.write(default_model_load_options()) };
        }
    })
}

/// As `kiln_model_load`, with options (NULL = defaults): load a seamless
/// view without the plain graphs, or name a matting graph. Errors: as
/// `kiln_model_load`, and STRUCT_SIZE_MISMATCH, INVALID_ARGUMENT (`seamless`
/// not a `kiln_seamless`), MODEL_NOT_FOUND (`matting_path` does not exist),
/// MODEL_INVALID / UNSUPPORTED (a graph Kiln cannot rewrite).
#[no_mangle]
pub unsafe extern "C" fn kiln_model_load_with(
    runtime: *const kiln_runtime,
    model_dir: *const c_char,
    options: *const kiln_model_load_options,
    model_out: *mut *mut kiln_model,
) -> kiln_status {
    boundary!({
        // SAFETY: the caller's contract is `load_into`'s.
        unsafe { load_into(runtime, model_dir, options, model_out) }
    })
}

/// Reads `kiln_model_load_options` (NULL = defaults).
///
/// # Safety
/// `options` NULL or a struct of at least its `struct_size` bytes.
pub(super) unsafe fn model_load_options(options: *const kiln_model_load_options) -> crate::error::Result<crate::model::ModelOptions> {
    let o = if options.is_null() {
        default_model_load_options()
    } else {
        // SAFETY: non-null; the caller's struct holds struct_size bytes. (The
        // 24-byte layout ended in padding where `attention` now is: not read.)
        unsafe { read_versioned(options, default_model_load_options(), &MODEL_LOAD_OPTIONS_OLDER, "options")? }
    };
    let seamless = super::seamless::seamless_from_c(o.seamless, "options->seamless")?;
    // SAFETY: NULL or a NUL-terminated string.
    let matting = unsafe { utf8_opt(o.matting_path, "options->matting_path")? }.map(std::path::PathBuf::from);
    let quantization = quantization_from_c(o.quantization, "options->quantization")?;
    let attention = attention_from_c(o.attention, "options->attention")?;
    let lora_slots = match o.lora_slots {
        0 => false,
        1 => true,
        other => return Err(Error::invalid(format!("options->lora_slots {other} must be 0 or 1"))),
    };
    Ok(crate::model::ModelOptions { seamless, matting, quantization, attention, lora_slots })
}

/// The one body of `kiln_model_load` (NULL options) and `kiln_model_load_with`.
///
/// # Safety
/// `runtime` NULL or a live handle, `model_dir` NULL or NUL-terminated,
/// `options` NULL or a struct of at least its `struct_size` bytes,
/// `model_out` NULL or writable.
unsafe fn load_into(
    runtime: *const kiln_runtime,
    model_dir: *const c_char,
    options: *const kiln_model_load_options,
    model_out: *mut *mut kiln_model,
) -> crate::error::Result<()> {
    non_null(model_out, "model_out")?;
    // SAFETY: checked non-null.
    unsafe { handles::write_out(model_out, std::ptr::null_mut()) };
    // SAFETY: NULL or a live handle; NUL-terminated string.
    let rt = unsafe { handles::borrow(runtime)? };
    let dir = unsafe { utf8_arg(model_dir, "model_dir")? };
    // SAFETY: forwarded caller contract.
    let options = unsafe { model_load_options(options)? };
    let model = Model::load_with(rt, Path::new(dir), &options)?;
    // SAFETY: checked non-null.
    unsafe { handles::write_out(model_out, handles::into_raw::<kiln_model>(model)) };
    Ok(())
}

/// Frees a model. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn kiln_model_free(model: *mut kiln_model) {
    boundary_void!({
        // SAFETY: NULL or a handle from kiln_model_load.
        unsafe { handles::free(model) }
    })
}

/// Fills `*info_out`, whose `struct_size` the caller sets first to
/// `sizeof(kiln_model_info)` or an older published size (28: the layout
/// without `has_matting`; 32: without `quantization`; 36: without
/// `fused_attention`; 40: without `lora_slots`); other sizes are
/// STRUCT_SIZE_MISMATCH. On failure every field after `struct_size` is 0.
#[no_mangle]
pub unsafe extern "C" fn kiln_model_get_info(model: *const kiln_model, info_out: *mut kiln_model_info) -> kiln_status {
    boundary!({
        // SAFETY: NULL or a struct of its struct_size bytes; cleared so a failure leaves zeros.
        unsafe { clear_versioned(info_out, &MODEL_INFO_OLDER) };
        // SAFETY: NULL or a live handle.
        let m = unsafe { handles::borrow(model)? };
        let i = m.info();
        let info = kiln_model_info {
            struct_size: 0,
            default_size: i.default_size as u32,
            size_multiple: i.size_multiple as u32,
            latent_channels: i.latent_channels as u32,
            vae_downsampling: i.vae_downsampling as u32,
            embedding_dim: i.embedding_dim as u32,
            has_vae_encoder: i.has_vae_encoder as u32,
            has_matting: i.has_matting as u32,
            quantization: i.quantization as u32,
            fused_attention: i.fused_attention as u32,
            lora_slots: i.lora_slots as u32,
        };
        // SAFETY: NULL or a struct of its struct_size bytes.
        unsafe { write_versioned(info_out, info, &MODEL_INFO_OLDER, "info_out") }
    })
}

/// Converts the C request to the Rust one, validating every field.
pub(crate) unsafe fn request_from(options: *const kiln_generate_options) -> Result<GenerateRequest> {
    // SAFETY: caller passes a struct of at least struct_size bytes.
    let o = unsafe { read_versioned(options, default_generate_options(), &GENERATE_OPTIONS_OLDER, "options")? };
    let prompt_syntax = match o.prompt_weighting {
        0 => PromptSyntax::Plain,
        1 => PromptSyntax::Weighted,
        other => return Err(Error::invalid(format!("options->prompt_weighting {other} is not 0 (plain) or 1 (A1111 weighting)"))),
    };
    // SAFETY: the caller guarantees init_image_len readable bytes.
    let init_image = unsafe { init_image_from(&o)? };
    // SAFETY: NUL-terminated per the header.
    let scheduler_overrides = match unsafe { utf8_opt(o.scheduler_overrides, "options->scheduler_overrides")? } {
        None => None,
        Some(text) => {
            let v: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| Error::invalid(format!("options->scheduler_overrides is not JSON: {e}")))?;
            if !v.is_object() {
                return Err(Error::invalid("options->scheduler_overrides must be a JSON object"));
            }
            Some(v)
        }
    };
    let mask = if o.mask.is_null() {
        None
    } else {
        let (w, h) = (o.mask_width as usize, o.mask_height as usize);
        check_image_size(w, h, "options->mask")?;
        if o.mask_len != w * h {
            return Err(Error::new(ErrorKind::InvalidSize, format!("options->mask is {w}x{h} but mask_len is {}", o.mask_len)));
        }
        // SAFETY: the caller guarantees mask_len readable bytes.
        let data = unsafe { std::slice::from_raw_parts(o.mask, o.mask_len) }.to_vec();
        Some(crate::pipeline::Mask { width: w, height: h, data })
    };
    // SAFETY: NUL-terminated strings per the header.
    let prompt = unsafe { utf8_arg(o.prompt, "options->prompt")? };
    let negative = unsafe { utf8_opt(o.negative_prompt, "options->negative_prompt")? }.unwrap_or("");
    let prompt_2 = unsafe { utf8_opt(o.prompt_2, "options->prompt_2")? }.unwrap_or("");
    let negative_prompt_2 = unsafe { utf8_opt(o.negative_prompt_2, "options->negative_prompt_2")? }.unwrap_or("");
    let xl = xl_conditioning_from(&o)?;
    let refiner = if o.refiner.is_null() {
        None
    } else {
        if !(o.refiner_start > 0.0 && o.refiner_start < 1.0) {
            return Err(Error::invalid(format!(
                "options->refiner_start is {}; it must be strictly between 0 and 1 (the fraction of the schedule the base model runs)",
                o.refiner_start
            )));
        }
        // SAFETY: non-null; a live handle per the header.
        let model = unsafe { handles::borrow(o.refiner)? }.clone();
        Some(crate::pipeline::handoff::Refiner { model, start: o.refiner_start })
    };
    let noise = match o.noise_generator {
        0 => NoiseGenerator::Kiln,
        1 => NoiseGenerator::TorchCpu,
        2 => NoiseGenerator::TorchCuda,
        other => {
            return Err(Error::invalid(format!(
                "options->noise_generator {other} is not a kiln_noise_generator (0 = Kiln's portable noise, 1 = PyTorch's CPU generator, 2 = PyTorch's CUDA generator)"
            )))
        }
    };
    let scheduler = SchedulerKind::from_u32(o.scheduler)
        .ok_or_else(|| Error::invalid(format!("options->scheduler {} is not a kiln_scheduler", o.scheduler)))?;
    let initial_noise = if o.initial_noise.is_null() {
        if o.initial_noise_len != 0 {
            return Err(Error::new(ErrorKind::NullArgument, "`options->initial_noise` is NULL but its length is not 0"));
        }
        None
    } else {
        const MAX_NOISE: usize = 1 << 28;
        if o.initial_noise_len == 0 || o.initial_noise_len > MAX_NOISE {
            return Err(Error::new(ErrorKind::InvalidSize, format!("options->initial_noise_len {} is not usable", o.initial_noise_len)));
        }
        // SAFETY: the caller guarantees initial_noise_len readable floats.
        let data = unsafe { std::slice::from_raw_parts(o.initial_noise, o.initial_noise_len) }.to_vec();
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "options->initial_noise[{i}] is {}; initial noise must be finite",
                data[i]
            )));
        }
        Some(data)
    };
    Ok(GenerateRequest {
        prompt: prompt.to_string(),
        negative_prompt: negative.to_string(),
        prompt_syntax,
        init_image,
        strength: o.strength,
        posterior_mean: o.posterior_mean != 0,
        clip_skip: o.clip_skip,
        mask,
        scheduler_overrides,
        width: o.width as usize,
        height: o.height as usize,
        steps: if o.steps == 0 { 20 } else { o.steps as usize },
        guidance_scale: o.guidance_scale,
        guidance_rescale: o.guidance_rescale,
        seed: o.seed,
        noise,
        variation_seed: o.variation_seed,
        variation_strength: o.variation_strength,
        scheduler,
        // The shape is completed once the model's latent size is known.
        initial_noise: initial_noise.map(|data| InitialNoise { shape: [0; 4], data }),
        step_noise: None,
        paste_unmasked: None,
        vae_tiling: crate::pipeline::VaeTiling {
            tile_size: o.vae_tile_size as usize,
            overlap: o.vae_tile_overlap as usize,
            memory_budget: o.vae_memory_budget_mib as u64 * 1024 * 1024,
        },
        decoder: match o.final_decoder {
            0 => crate::pipeline::FinalDecoder::Vae,
            1 => crate::pipeline::FinalDecoder::Preview,
            other => {
                return Err(Error::invalid(format!("options->final_decoder {other} is not 0 (VAE) or 1 (preview decoder)")))
            }
        },
        // SAFETY: the caller guarantees control_count entries.
        controls: unsafe { super::control::controls_from(o.controls, o.control_count)? },
        guess_mode: o.guess_mode != 0,
        prompt_2: prompt_2.to_string(),
        negative_prompt_2: negative_prompt_2.to_string(),
        xl,
        refiner,
    })
}

/// Reads the SDXL size, crop and aesthetic-score fields (0 x 0 = unset size).
fn xl_conditioning_from(o: &kiln_generate_options) -> Result<XlConditioning> {
    let size = |w: u32, h: u32, name: &str| -> Result<Option<[usize; 2]>> {
        match (w, h) {
            (0, 0) => Ok(None),
            (0, _) | (_, 0) => Err(Error::invalid(format!(
                "options->{name}_width/{name}_height is {w}x{h}; give both (pixels) or neither (0 = the output size)"
            ))),
            (w, h) => Ok(Some([w as usize, h as usize])),
        }
    };
    for (v, name) in [(o.aesthetic_score, "aesthetic_score"), (o.negative_aesthetic_score, "negative_aesthetic_score")] {
        if !v.is_finite() {
            return Err(Error::invalid(format!("options->{name} is {v}; it must be finite")));
        }
    }
    Ok(XlConditioning {
        original_size: size(o.original_width, o.original_height, "original")?,
        crop_top_left: [o.crop_top as usize, o.crop_left as usize],
        target_size: size(o.target_width, o.target_height, "target")?,
        negative_original_size: size(o.negative_original_width, o.negative_original_height, "negative_original")?,
        negative_crop_top_left: [o.negative_crop_top as usize, o.negative_crop_left as usize],
        negative_target_size: size(o.negative_target_width, o.negative_target_height, "negative_target")?,
        aesthetic_score: o.aesthetic_score,
        negative_aesthetic_score: o.negative_aesthetic_score,
    })
}

/// Which SDXL inputs a model's U-Net takes, for [`check_model_fields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conditioning {
    /// SD 1.x/2.x: text embeddings only.
    Plain,
    /// SDXL base: pooled text and 6 time ids (original, crop, target).
    Xl,
    /// SDXL refiner-style: 5 time ids (original, crop, aesthetic score).
    XlAesthetic,
}

/// Refuses request fields the model cannot use, naming the C field: SDXL
/// inputs on other models (diffusers' SD pipelines have no such arguments),
/// a target size on a refiner-style U-Net and an aesthetic score on one
/// without (neither would change the image).
pub(crate) fn check_model_fields(kind: Conditioning, r: &GenerateRequest) -> Result<()> {
    let x = &r.xl;
    let d = XlConditioning::default();
    let aesthetic = [
        (x.aesthetic_score != d.aesthetic_score, "aesthetic_score"),
        (x.negative_aesthetic_score != d.negative_aesthetic_score, "negative_aesthetic_score"),
    ];
    let target = [(x.target_size.is_some(), "target_width/target_height"), (x.negative_target_size.is_some(), "negative_target_width/negative_target_height")];
    let refuse = |given: &[(bool, &'static str)], why: &str| match given.iter().find(|(set, _)| *set) {
        Some((_, name)) => Err(Error::invalid(format!("options->{name} is set, but {why}"))),
        None => Ok(()),
    };
    match kind {
        Conditioning::Plain => {
            let xl_only = [
                (!r.prompt_2.is_empty(), "prompt_2"),
                (!r.negative_prompt_2.is_empty(), "negative_prompt_2"),
                (x.original_size.is_some(), "original_width/original_height"),
                (x.crop_top_left != [0, 0], "crop_top/crop_left"),
                (x.negative_original_size.is_some(), "negative_original_width/negative_original_height"),
                (x.negative_crop_top_left != [0, 0], "negative_crop_top/negative_crop_left"),
            ];
            let why = "this model is not SDXL (no text_encoder_2 and no time_ids input); leave the SDXL fields at their defaults";
            refuse(&xl_only, why)?;
            refuse(&target, why)?;
            refuse(&aesthetic, why)
        }
        Conditioning::Xl => refuse(&aesthetic, "this SDXL U-Net takes no aesthetic score (6 time ids; only refiner-style exports with requires_aesthetics_score do)"),
        Conditioning::XlAesthetic => refuse(&target, "this refiner-style U-Net's time ids hold an aesthetic score instead of a target size"),
    }
}

/// Copies the img2img picture out of the caller's buffer as tight RGB.
unsafe fn init_image_from(o: &kiln_generate_options) -> Result<Option<crate::pipeline::InitImage>> {
    if o.init_image.is_null() {
        return Ok(None);
    }
    let (w, h, ch) = (o.init_image_width as usize, o.init_image_height as usize, o.init_image_channels as usize);
    check_image_size(w, h, "options->init_image")?;
    if ch != 3 && ch != 4 {
        return Err(Error::invalid(format!("options->init_image_channels is {ch}; use 3 (RGB) or 4 (RGBA)")));
    }
    let row = w * ch;
    let pitch = if o.init_image_row_pitch == 0 { row } else { o.init_image_row_pitch };
    if pitch < row {
        return Err(Error::invalid(format!("options->init_image_row_pitch {pitch} is smaller than one row ({row} bytes)")));
    }
    let need = pitched_len(pitch, row, h).unwrap_or(usize::MAX);
    if o.init_image_len < need {
        return Err(Error::new(
            ErrorKind::BufferTooSmall,
            format!("options->init_image_len is {}; a {w}x{h} picture with {ch} channels and row pitch {pitch} needs {need}", o.init_image_len),
        ));
    }
    // SAFETY: checked that `need` bytes are within the caller's buffer.
    let src = unsafe { std::slice::from_raw_parts(o.init_image, need) };
    let mut rgb = try_with_capacity(w * h * 3, "the init image")?;
    for y in 0..h {
        for px in src[y * pitch..y * pitch + row].chunks_exact(ch) {
            rgb.extend_from_slice(&px[..3]);
        }
    }
    Ok(Some(crate::pipeline::InitImage { width: w, height: h, rgb }))
}

/// Checks the request against the model's inputs ([`check_model_fields`])
/// and completes the initial-noise shape from the model and the request size.
pub(crate) fn finish_request(model: &Model, mut request: GenerateRequest) -> Result<GenerateRequest> {
    let kind_of = |m: &Model| match m.sdxl_aesthetic() {
        None => Conditioning::Plain,
        Some(false) => Conditioning::Xl,
        Some(true) => Conditioning::XlAesthetic,
    };
    let kind = kind_of(model);
    match &request.refiner {
        None => check_model_fields(kind, &request)?,
        Some(refiner) => {
            crate::pipeline::handoff::check_pair(&model.inner, &refiner.model.inner)
                .map_err(|e| Error::new(e.kind(), format!("options->refiner: {}", e.message())))?;
            // A hand-off's fields may be meant for either model (a base SDXL
            // U-Net's target size, a refiner-style one's aesthetic score).
            let refiner_kind = kind_of(&refiner.model);
            if refiner_kind == kind {
                check_model_fields(kind, &request)?;
            } else if kind == Conditioning::Plain || refiner_kind == Conditioning::Plain {
                check_model_fields(Conditioning::Plain, &request)?;
            }
        }
    }
    if let Some(noise) = request.initial_noise.as_mut() {
        let info = model.info();
        let w = if request.width == 0 { info.default_size } else { request.width };
        let h = if request.height == 0 { info.default_size } else { request.height };
        let f = info.vae_downsampling.max(1);
        let expected = [1, info.latent_channels, h / f, w / f];
        // A length mismatch is reported by the pipeline with both shapes.
        noise.shape = if noise.data.len() == expected.iter().product::<usize>() { expected } else { [0, 0, 0, noise.data.len()] };
    }
    Ok(request)
}

/// Generates an image into a new Kiln-owned `kiln_image` (RGBA8, alpha 255).
/// Blocks the calling thread until done. On failure `*image_out` is NULL.
/// Errors: NULL_ARGUMENT, INVALID_UTF8, STRUCT_SIZE_MISMATCH, INVALID_ARGUMENT,
/// INVALID_SIZE, UNSUPPORTED, INFERENCE_FAILED.
#[no_mangle]
pub unsafe extern "C" fn kiln_model_generate(
    model: *const kiln_model,
    options: *const kiln_generate_options,
    image_out: *mut *mut kiln_image,
) -> kiln_status {
    boundary!({
        non_null(image_out, "image_out")?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(image_out, std::ptr::null_mut()) };
        // SAFETY: NULL or a live handle; options per the header.
        let m = unsafe { handles::borrow(model)? };
        let request = finish_request(m, unsafe { request_from(options)? })?;
        let image = m.generate(&request)?.to_rgba8();
        // SAFETY: checked non-null.
        unsafe { handles::write_out(image_out, handles::into_raw::<kiln_image>(image)) };
        Ok(())
    })
}

/// Generates an image straight into a caller buffer: RGBA8, each row
/// `row_pitch` bytes after the previous (0 = `width * 4`). The buffer must hold
/// `row_pitch * (height - 1) + width * 4` bytes; this is checked (with
/// overflow-checked arithmetic) after the options and before any generation
/// work: BUFFER_TOO_SMALL, or INVALID_ARGUMENT for a pitch smaller than a row.
/// Bytes between rows are not touched.
#[no_mangle]
pub unsafe extern "C" fn kiln_model_generate_into(
    model: *const kiln_model,
    options: *const kiln_generate_options,
    pixels_out: *mut u8,
    pixels_len: usize,
    row_pitch: usize,
) -> kiln_status {
    boundary!({
        // SAFETY: NULL or a live handle; options per the header.
        let m = unsafe { handles::borrow(model)? };
        non_null(pixels_out, "pixels_out")?;
        let request = finish_request(m, unsafe { request_from(options)? })?;
        let info = m.info();
        let w = if request.width == 0 { info.default_size } else { request.width };
        let h = if request.height == 0 { info.default_size } else { request.height };
        let pitch = if row_pitch == 0 { w * 4 } else { row_pitch };
        if pitch < w * 4 {
            return Err(Error::invalid(format!("row_pitch {pitch} is smaller than one row ({} bytes)", w * 4)));
        }
        // Checked arithmetic: a pitch whose `pitch * (height - 1)` wraps must
        // not pass, and this check comes before any generation work.
        let need = pitched_len(pitch, w * 4, h.max(1));
        if need.is_none_or(|need| pixels_len < need) {
            let need = need.map_or_else(|| "more than fits in size_t".to_string(), |n| n.to_string());
            return Err(Error::new(
                ErrorKind::BufferTooSmall,
                format!("pixels_len is {pixels_len}; a {w}x{h} RGBA8 image with row pitch {pitch} needs {need}"),
            ));
        }
        let image = m.generate(&request)?.to_rgba8();
        // SAFETY: the caller guarantees pixels_len writable bytes.
        let dst = unsafe { std::slice::from_raw_parts_mut(pixels_out, pixels_len) };
        image.copy_to(dst, pitch)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::boundary::published_size;

    #[test]
    fn c_scheduler_values_match_the_rust_enum() {
        let all = [
            kiln_scheduler::Default,
            kiln_scheduler::Ddim,
            kiln_scheduler::Euler,
            kiln_scheduler::Pndm,
            kiln_scheduler::DpmPP2M,
            kiln_scheduler::DpmPP2MKarras,
            kiln_scheduler::Lms,
            kiln_scheduler::Heun,
            kiln_scheduler::EulerA,
            kiln_scheduler::DpmPP2MSde,
            kiln_scheduler::UniPc,
            kiln_scheduler::Lcm,
        ];
        for (i, c) in all.iter().enumerate() {
            assert_eq!(*c as u32, i as u32);
            assert_eq!(SchedulerKind::from_u32(*c as u32).map(|k| k as u32), Some(i as u32));
        }
    }

    #[test]
    fn v1_options_keep_the_new_defaults() {
        // A caller built against the first layout passes the shorter size.
        let mut o = default_generate_options();
        o.struct_size = published_size::<kiln_generate_options>(GENERATE_OPTIONS_V1) as u32;
        o.guidance_rescale = 123.0; // past struct_size: must not be read
        o.prompt = c"x".as_ptr();
        let r = unsafe { request_from(&o) }.unwrap();
        assert_eq!(r.guidance_rescale, 0.0);
        let mut o = default_generate_options();
        o.prompt = c"x".as_ptr();
        o.guidance_rescale = 0.7;
        assert_eq!(unsafe { request_from(&o) }.unwrap().guidance_rescale, 0.7);
        assert!(GENERATE_OPTIONS_V1 < std::mem::size_of::<kiln_generate_options>());
    }

    #[test]
    fn sdxl_fields_become_the_rust_request() {
        let mut o = default_generate_options();
        o.prompt = c"stone".as_ptr();
        let r = unsafe { request_from(&o) }.unwrap();
        assert_eq!((r.prompt_2.as_str(), r.negative_prompt_2.as_str()), ("", ""));
        assert_eq!(r.xl, XlConditioning::default());
        o.prompt_2 = c"metal".as_ptr();
        o.negative_prompt_2 = c"dark".as_ptr();
        (o.original_width, o.original_height, o.crop_top, o.crop_left) = (160, 128, 8, 16);
        (o.target_width, o.target_height) = (96, 64);
        (o.negative_original_width, o.negative_original_height, o.negative_crop_top, o.negative_crop_left) = (32, 48, 1, 2);
        (o.negative_target_width, o.negative_target_height) = (80, 72);
        (o.aesthetic_score, o.negative_aesthetic_score) = (7.0, 0.0);
        let r = unsafe { request_from(&o) }.unwrap();
        assert_eq!((r.prompt_2.as_str(), r.negative_prompt_2.as_str()), ("metal", "dark"));
        let want = XlConditioning {
            original_size: Some([160, 128]),
            crop_top_left: [8, 16],
            target_size: Some([96, 64]),
            negative_original_size: Some([32, 48]),
            negative_crop_top_left: [1, 2],
            negative_target_size: Some([80, 72]),
            aesthetic_score: 7.0,
            negative_aesthetic_score: 0.0,
        };
        assert_eq!(r.xl, want);
        // A caller built against the 208-byte layout: the SDXL fields past its
        // struct_size are never read.
        o.struct_size = published_size::<kiln_generate_options>(layout_before!(kiln_generate_options, prompt_2)) as u32;
        let r = unsafe { request_from(&o) }.unwrap();
        assert_eq!((r.prompt_2.as_str(), &r.xl), ("", &XlConditioning::default()));
    }

    #[test]
    fn bad_sdxl_fields_are_specific_errors() {
        let base = || {
            let mut o = default_generate_options();
            o.prompt = c"stone".as_ptr();
            o
        };
        let bad = [0x66u8, 0xff, 0];
        let mut o = base();
        o.prompt_2 = bad.as_ptr().cast();
        let e = unsafe { request_from(&o) }.unwrap_err();
        assert_eq!((e.kind(), e.message().contains("options->prompt_2")), (ErrorKind::InvalidUtf8, true), "{e}");
        let mut o = base();
        o.negative_prompt_2 = bad.as_ptr().cast();
        let e = unsafe { request_from(&o) }.unwrap_err();
        assert_eq!((e.kind(), e.message().contains("options->negative_prompt_2")), (ErrorKind::InvalidUtf8, true), "{e}");
        let mut o = base();
        o.original_width = 128;
        let e = unsafe { request_from(&o) }.unwrap_err();
        assert_eq!((e.kind(), e.message().contains("original_width/original_height is 128x0")), (ErrorKind::InvalidArgument, true), "{e}");
        let mut o = base();
        o.negative_target_height = 64;
        let e = unsafe { request_from(&o) }.unwrap_err();
        assert!(e.message().contains("negative_target_width"), "{e}");
        let mut o = base();
        o.negative_aesthetic_score = f32::NAN;
        let e = unsafe { request_from(&o) }.unwrap_err();
        assert_eq!((e.kind(), e.message().contains("negative_aesthetic_score is NaN")), (ErrorKind::InvalidArgument, true), "{e}");
    }

    #[test]
    fn fields_a_model_cannot_use_are_refused_by_name() {
        let req = |f: &dyn Fn(&mut GenerateRequest)| {
            let mut r = GenerateRequest::default();
            f(&mut r);
            r
        };
        let plain = GenerateRequest::default();
        for kind in [Conditioning::Plain, Conditioning::Xl, Conditioning::XlAesthetic] {
            check_model_fields(kind, &plain).unwrap();
        }
        type Case<'a> = (&'a dyn Fn(&mut GenerateRequest), &'a str);
        let cases: [Case; 8] = [
            (&|r| r.prompt_2 = "metal".into(), "prompt_2"),
            (&|r| r.negative_prompt_2 = "dark".into(), "negative_prompt_2"),
            (&|r| r.xl.original_size = Some([1, 2]), "original_width/original_height"),
            (&|r| r.xl.crop_top_left = [0, 4], "crop_top/crop_left"),
            (&|r| r.xl.negative_original_size = Some([1, 2]), "negative_original_width"),
            (&|r| r.xl.negative_crop_top_left = [4, 0], "negative_crop_top/negative_crop_left"),
            (&|r| r.xl.target_size = Some([1, 2]), "target_width/target_height"),
            (&|r| r.xl.aesthetic_score = 5.0, "aesthetic_score"),
        ];
        for (set, name) in cases {
            let r = req(set);
            let e = check_model_fields(Conditioning::Plain, &r).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.message().contains(&format!("options->{name}")) && e.message().contains("not SDXL"), "{e}");
        }
        // SDXL base: every size and prompt field, but no aesthetic score.
        check_model_fields(Conditioning::Xl, &req(&|r| {
            r.prompt_2 = "metal".into();
            r.xl.target_size = Some([64, 64]);
            r.xl.negative_target_size = Some([64, 64]);
        }))
        .unwrap();
        let e = check_model_fields(Conditioning::Xl, &req(&|r| r.xl.negative_aesthetic_score = 1.0)).unwrap_err();
        assert!(e.message().contains("options->negative_aesthetic_score") && e.message().contains("no aesthetic score"), "{e}");
        // Refiner-style: aesthetic scores, but no target size.
        check_model_fields(Conditioning::XlAesthetic, &req(&|r| r.xl.aesthetic_score = 9.0)).unwrap();
        let e = check_model_fields(Conditioning::XlAesthetic, &req(&|r| r.xl.negative_target_size = Some([8, 8]))).unwrap_err();
        assert!(e.message().contains("options->negative_target_width/negative_target_height"), "{e}");
    }

    #[test]
    fn v2_options_never_read_prompt_weighting_from_padding() {
        let v2 = published_size::<kiln_generate_options>(GENERATE_OPTIONS_V2);
        assert!(v2 < std::mem::size_of::<kiln_generate_options>());
        assert!(v2 > std::mem::offset_of!(kiln_generate_options, prompt_weighting), "prompt_weighting lies in the V2 layout's padding");
        // A caller built against the guidance_rescale layout: its padding may hold anything.
        let mut o = default_generate_options();
        o.struct_size = v2 as u32;
        o.prompt_weighting = 0xdead_beef;
        o.guidance_rescale = 0.5;
        o.prompt = c"x".as_ptr();
        let r = unsafe { request_from(&o) }.unwrap();
        assert_eq!(r.prompt_syntax, PromptSyntax::Plain);
        assert_eq!(r.guidance_rescale, 0.5);
        let mut o = default_generate_options();
        o.prompt = c"x".as_ptr();
        assert_eq!(unsafe { request_from(&o) }.unwrap().prompt_syntax, PromptSyntax::Plain);
        o.prompt_weighting = 1;
        assert_eq!(unsafe { request_from(&o) }.unwrap().prompt_syntax, PromptSyntax::Weighted);
        o.prompt_weighting = 2;
        let e = unsafe { request_from(&o) }.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.message().contains("prompt_weighting"), "{e}");
    }
}
