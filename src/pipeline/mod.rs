//! Text-to-image: prompt → embeddings → denoising loop → VAE decode, the same
//! computation as diffusers' `StableDiffusionPipeline` on the same graphs.
pub mod noise;

use std::sync::atomic::{AtomicBool, Ordering};

use ndarray::{concatenate, s, ArrayD, Axis, IxDyn};

use crate::error::{Error, ErrorKind, Result};
use crate::image::FloatImage;
use crate::model::{GraphInput, Model, ModelInner};
use crate::scheduler::{self, SchedulerKind};

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
    /// Width in pixels; 0 = the model's native size.
    pub width: usize,
    /// Height in pixels; 0 = the model's native size.
    pub height: usize,
    /// Denoising steps.
    pub steps: usize,
    /// Classifier-free guidance scale; ≤ 1 skips the unconditional pass.
    pub guidance_scale: f32,
    /// Seed of Kiln's portable noise (ignored when `initial_noise` is given).
    pub seed: u64,
    /// Which scheduler.
    pub scheduler: SchedulerKind,
    /// Exact initial latents instead of seeded noise.
    pub initial_noise: Option<InitialNoise>,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            width: 0,
            height: 0,
            steps: 20,
            guidance_scale: 7.5,
            seed: 0,
            scheduler: SchedulerKind::Default,
            initial_noise: None,
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
}

impl Model {
    /// Generates an image (see [`GenerateRequest`]).
    pub fn generate(&self, request: &GenerateRequest) -> Result<FloatImage> {
        Ok(self.generate_with(request, Hooks::default())?.image)
    }

    /// Generates, returning latents and timesteps too, with progress and cancellation.
    pub fn generate_with(&self, request: &GenerateRequest, hooks: Hooks<'_>) -> Result<Generation> {
        run(&self.inner, request, hooks)
    }

    /// Token embeddings `[1, 77, dim]` for a prompt, as the text encoder makes them.
    pub fn encode_prompt(&self, prompt: &str) -> Result<ArrayD<f32>> {
        encode_prompt(&self.inner, prompt)
    }
}

fn check_size(m: &ModelInner, request: &GenerateRequest) -> Result<(usize, usize)> {
    let default = m.layout.default_size();
    let multiple = m.layout.size_multiple();
    let width = if request.width == 0 { default } else { request.width };
    let height = if request.height == 0 { default } else { request.height };
    const MAX_SIDE: usize = 8192;
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

fn encode_prompt(m: &ModelInner, prompt: &str) -> Result<ArrayD<f32>> {
    encode_prompt_with(m, prompt, None)
}

fn encode_prompt_with(m: &ModelInner, prompt: &str, options: Option<&ort::session::RunOptions>) -> Result<ArrayD<f32>> {
    m.encode_text(prompt, options)
}

fn run(m: &ModelInner, request: &GenerateRequest, hooks: Hooks<'_>) -> Result<Generation> {
    let Hooks { cancel, mut on_step, run_options } = hooks;
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    let (width, height) = check_size(m, request)?;
    if !request.guidance_scale.is_finite() {
        return Err(Error::invalid("guidance_scale must be a finite number"));
    }
    let mut scheduler = scheduler::build(request.scheduler, &m.layout.scheduler_config, request.steps)?;
    let channels = m.layout.vae_config.latent_channels;
    let f = m.layout.vae_config.downsampling;
    let latent_shape = [1, channels, height / f, width / f];

    // LCM-distilled U-Nets embed the guidance instead of running CFG (diffusers).
    let lcm = m.unet_io.timestep_cond.clone();
    let do_cfg = request.guidance_scale > 1.0 && lcm.is_none();

    let cond = encode_prompt_with(m, &request.prompt, run_options)?;
    let uncond = if do_cfg { Some(encode_prompt_with(m, &request.negative_prompt, run_options)?) } else { None };
    if cancelled() {
        return Err(Error::new(ErrorKind::Cancelled, "generation cancelled"));
    }

    let noise = match &request.initial_noise {
        Some(n) => {
            if n.shape != latent_shape || n.data.len() != latent_shape.iter().product::<usize>() {
                return Err(Error::new(
                    ErrorKind::InvalidSize,
                    format!("initial noise has shape {:?} ({} values); this request needs {latent_shape:?}", n.shape, n.data.len()),
                ));
            }
            n.data.clone()
        }
        None => noise::NoiseRng::new(request.seed).normals(latent_shape.iter().product()),
    };
    let sigma0 = scheduler.init_noise_sigma();
    let mut latents = ArrayD::from_shape_vec(IxDyn(&latent_shape), noise)
        .map_err(|e| Error::internal(e.to_string()))?
        .mapv(|x| x * sigma0);

    let batch_ok = m.unet_io.max_batch.is_none_or(|b| b >= 2);
    let embeds_batched = match &uncond {
        Some(u) if batch_ok => Some(concatenate(Axis(0), &[u.view(), cond.view()]).map_err(|e| Error::internal(e.to_string()))?),
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

    let timesteps = scheduler.timesteps().to_vec();
    let total = timesteps.len();
    for (i, &t) in timesteps.iter().enumerate() {
        if cancelled() {
            return Err(Error::new(ErrorKind::Cancelled, format!("generation cancelled before step {}", i + 1)));
        }
        let scaled = scheduler.scale_model_input(&latents, i);
        let noise_pred = match (&uncond, &embeds_batched) {
            (Some(_), Some(embeds)) => {
                let input = concatenate(Axis(0), &[scaled.view(), scaled.view()]).map_err(|e| Error::internal(e.to_string()))?;
                let out = unet_call(m, input, t, embeds.clone(), w_embedding.as_ref(), run_options)?;
                let u = out.slice(s![0..1, .., .., ..]).into_dyn().to_owned();
                let c = out.slice(s![1..2, .., .., ..]).into_dyn().to_owned();
                guide(&u, &c, request.guidance_scale)
            }
            (Some(u_emb), None) => {
                let u = unet_call(m, scaled.clone(), t, u_emb.clone(), w_embedding.as_ref(), run_options)?;
                let c = unet_call(m, scaled, t, cond.clone(), w_embedding.as_ref(), run_options)?;
                guide(&u, &c, request.guidance_scale)
            }
            (None, _) => unet_call(m, scaled, t, cond.clone(), w_embedding.as_ref(), run_options)?,
        };
        latents = scheduler.step(&noise_pred, i, &latents)?;
        if let Some(cb) = on_step.as_mut() {
            cb(&StepProgress { step: i + 1, total, latents: &latents });
        }
    }
    if cancelled() {
        return Err(Error::new(ErrorKind::Cancelled, "generation cancelled before decoding"));
    }
    let image = decode(m, &latents, run_options)?;
    Ok(Generation { image, latents, timesteps })
}

/// `uncond + g * (cond - uncond)`.
fn guide(uncond: &ArrayD<f32>, cond: &ArrayD<f32>, g: f32) -> ArrayD<f32> {
    let mut out = uncond.clone();
    ndarray::Zip::from(&mut out).and(cond).for_each(|u, &c| *u += g * (c - *u));
    out
}

fn unet_call(
    m: &ModelInner,
    sample: ArrayD<f32>,
    t: f64,
    embeds: ArrayD<f32>,
    w: Option<&Vec<f32>>,
    options: Option<&ort::session::RunOptions>,
) -> Result<ArrayD<f32>> {
    let io = &m.unet_io;
    let batch = sample.shape()[0];
    let timestep = if io.timestep.shape.is_empty() {
        ArrayD::from_elem(IxDyn(&[]), t as f32)
    } else {
        ArrayD::from_elem(IxDyn(&[batch]), t as f32)
    };
    let mut inputs = vec![
        (&io.sample, GraphInput::Float(sample)),
        (&io.timestep, GraphInput::Float(timestep)),
        (&io.encoder_hidden_states, GraphInput::Float(embeds)),
    ];
    if let (Some(spec), Some(w)) = (&io.timestep_cond, w) {
        let mut data = Vec::with_capacity(w.len() * batch);
        for _ in 0..batch {
            data.extend_from_slice(w);
        }
        let arr = ArrayD::from_shape_vec(IxDyn(&[batch, w.len()]), data).map_err(|e| Error::internal(e.to_string()))?;
        inputs.push((spec, GraphInput::Float(arr)));
    }
    m.unet.run(inputs, &io.output, options)
}

fn decode(m: &ModelInner, latents: &ArrayD<f32>, options: Option<&ort::session::RunOptions>) -> Result<FloatImage> {
    let scale = 1.0 / m.layout.vae_config.scaling_factor;
    let z = latents.mapv(|x| x * scale);
    let out = m.vae_decoder.run(vec![(&m.vae_io.latent, GraphInput::Float(z))], &m.vae_io.output, options)?;
    let shape = out.shape().to_vec();
    if shape.len() != 4 || shape[0] != 1 || shape[1] != 3 {
        return Err(Error::model(format!("vae_decoder returned shape {shape:?}; expected [1, 3, H, W]")));
    }
    let (h, w) = (shape[2], shape[3]);
    let mut data = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                data.push((out[[0, c, y, x]] / 2.0 + 0.5).clamp(0.0, 1.0));
            }
        }
    }
    Ok(FloatImage { width: w, height: h, data })
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
