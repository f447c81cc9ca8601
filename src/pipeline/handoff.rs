//! Base-to-refiner hand-off in latent space (diffusers' "ensemble of expert
//! denoisers"): the base model runs the first part of the schedule, a second
//! model (the refiner) the rest from the base's latents, and only the
//! refiner's VAE decodes. The latents never leave Kiln.
//!
//! The split follows diffusers' `denoising_end` (on
//! `StableDiffusionXLPipeline`) and `denoising_start` (on
//! `StableDiffusionXLImg2ImgPipeline`): with `f` the fraction and `T` the
//! scheduler's `num_train_timesteps`, the cutoff is `int(round(T - f·T))`
//! (Python's round, half to even); the base keeps its timesteps `≥ cutoff`,
//! the refiner starts at its first timestep `< cutoff` (so the two halves of
//! one schedule never overlap or leave a gap) with the base's latents as they
//! are: no noise is added and `strength` is not used.
//!
//! ControlNets guide the base stage only (diffusers'
//! `StableDiffusionXLControlNetPipeline` with `denoising_end`, then the plain
//! refiner): their `control_guidance_start`/`_end` window is a fraction of the
//! whole, uncut schedule, as diffusers computes it before the cut.
//!
//! Inpainting (4-channel U-Nets) follows `StableDiffusionXLInpaintPipeline`
//! on both stages: the base blends its kept area as usual (clean at its last
//! step); the refiner, given the base's latents as its 4-channel `image`,
//! keeps *those latents* in the unmasked area, re-noised to each next
//! timestep with one latent-shaped draw it makes before its first step.
use std::fmt;
use std::sync::Arc;

use ndarray::ArrayD;

use super::noise::{RecordedNoise, SeededNoise};
use super::{GenerateRequest, Generation, Hooks, StepLatents, StepProgress};
use crate::error::{Error, Result};
use crate::model::{Model, ModelInner};

/// A second model that finishes a generation's schedule from the first
/// model's latents (see the module docs).
#[derive(Clone)]
pub struct Refiner {
    /// The model that runs the last part of the schedule and decodes. It must
    /// share the base model's latent space: the same family (SDXL or SD 1.x/2.x),
    /// latent channels, VAE downsampling, `scaling_factor` and `shift_factor`.
    /// It runs as a view wrapping on the base model's seamless axes (see
    /// [`Model::seamless`]), whatever this handle's own, so a seamless base
    /// still gives a tiling texture.
    pub model: Model,
    /// Fraction of the schedule after which the refiner takes over, strictly
    /// between 0 and 1 (diffusers' `denoising_end` on the base and
    /// `denoising_start` on the refiner; its documentation uses 0.8).
    pub start: f32,
}

impl fmt::Debug for Refiner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refiner")
            .field("model", &self.model.inner.layout.root)
            .field("start", &self.start)
            .finish()
    }
}

impl PartialEq for Refiner {
    /// The same model handle (not merely equal files) and the same fraction.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.model.inner, &other.model.inner) && self.start == other.start
    }
}

/// Which part of the schedule one pipeline run covers.
pub(crate) enum Stage {
    /// The whole schedule (from the strength's start step with an init image).
    Whole,
    /// A hand-off's base: the timesteps at or above `cutoff`, latents returned undecoded.
    Base { cutoff: f64 },
    /// A hand-off's refiner: the timesteps below `cutoff`, from `latents`.
    Refiner { cutoff: f64, latents: ArrayD<f32> },
}

/// The hand-off's timestep cutoff for `fraction` of a schedule trained on
/// `num_train_timesteps`: diffusers' `int(round(T - f * T))`, computed on the
/// fraction's shortest decimal form (as the caller wrote it in Python).
pub(crate) fn cutoff(fraction: f32, num_train_timesteps: f64) -> Result<f64> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::invalid(format!(
            "refiner start {fraction} must be strictly between 0 and 1 (the fraction of the schedule the base model runs)"
        )));
    }
    let f: f64 = fraction.to_string().parse().unwrap_or(fraction as f64);
    Ok((num_train_timesteps - f * num_train_timesteps).round_ties_even())
}

/// How many of the base's `timesteps` run before the hand-off (diffusers
/// counts those `≥ cutoff`).
pub(crate) fn base_steps(timesteps: &[f64], cutoff: f64) -> usize {
    timesteps.iter().filter(|&&t| t >= cutoff).count()
}

/// Index into the refiner's full `schedule` of its first step: diffusers'
/// `len(timesteps) - (timesteps < cutoff).sum()`.
pub(crate) fn refiner_start(schedule: &[f64], cutoff: f64) -> usize {
    schedule.len() - schedule.iter().filter(|&&t| t < cutoff).count()
}

/// The noise of a whole request: Kiln's seeded stream or the caller's
/// recorded draws, shared by a hand-off's two stages so the refiner's draws
/// follow the base's, as one generator (or one recording) would give them.
pub(crate) struct RequestNoise<'a> {
    pub(crate) rng: SeededNoise,
    pub(crate) recorded: Option<RecordedNoise<'a>>,
}

impl<'a> RequestNoise<'a> {
    pub(crate) fn new(request: &'a GenerateRequest) -> Self {
        Self { rng: SeededNoise::new(request.noise, request.seed), recorded: request.step_noise.as_deref().map(RecordedNoise::new) }
    }

    /// Recorded draws must be used up exactly.
    pub(crate) fn finish(&self) -> Result<()> {
        match self.recorded.as_ref().map(|r| r.remaining()).filter(|&n| n > 0) {
            Some(left) => Err(Error::invalid(format!(
                "step_noise has {left} values this scheduler did not use (it must match the draws exactly)"
            ))),
            None => Ok(()),
        }
    }
}

/// Refuses a refiner whose latents mean something else than the base's.
pub(crate) fn check_pair(base: &ModelInner, refiner: &ModelInner) -> Result<()> {
    let mismatch = |what: String| {
        Err(Error::invalid(format!(
            "the refiner model ({}) cannot continue this model's latents: {what}",
            refiner.layout.root.display()
        )))
    };
    let family = |m: &ModelInner| if m.xl.is_some() { "SDXL" } else { "SD 1.x/2.x" };
    if family(base) != family(refiner) {
        return mismatch(format!("it is {}, the base model {}", family(refiner), family(base)));
    }
    let (b, r) = (&base.layout.vae_config, &refiner.layout.vae_config);
    if b.latent_channels != r.latent_channels {
        return mismatch(format!("{} latent channels, the base model has {}", r.latent_channels, b.latent_channels));
    }
    if b.downsampling != r.downsampling {
        return mismatch(format!("its VAE downsamples {}x, the base model's {}x", r.downsampling, b.downsampling));
    }
    if b.scaling_factor != r.scaling_factor || b.shift_factor != r.shift_factor {
        return mismatch(format!(
            "its VAE scaling_factor/shift_factor are {}/{}, the base model's {}/{}",
            r.scaling_factor, r.shift_factor, b.scaling_factor, b.shift_factor
        ));
    }
    Ok(())
}

/// Runs `request` on `base` up to the hand-off and on the refiner after it.
/// Progress counts both stages' U-Net calls as one job; the returned
/// timesteps are both stages', in order; the image is the refiner's decode.
pub(crate) fn generate(base: &Model, request: &GenerateRequest, refiner: &Refiner, hooks: Hooks<'_>) -> Result<Generation> {
    let base = if request.clip_skip != base.inner.clip_skip { base.clip_skip(request.clip_skip)? } else { base.clone() };
    // The refiner finishes the base's picture, so it wraps on the base's
    // seamless axes: a plain refiner would undo a seamless base's tiling.
    let refiner_model = refiner.model.seamless(base.inner.seamless)?;
    let refiner_model = if request.clip_skip != refiner_model.inner.clip_skip {
        refiner_model.clip_skip(request.clip_skip)?
    } else {
        refiner_model
    };
    check_pair(&base.inner, &refiner_model.inner)?;
    if request.mask.is_some() {
        for (which, m) in [("base", &base.inner), ("refiner", &refiner_model.inner)] {
            if m.layout.unet_config.in_channels != m.layout.vae_config.latent_channels {
                return Err(Error::unsupported(format!(
                    "inpainting with a refiner hand-off needs ordinary U-Nets; the {which} model's takes {} input channels \
                     (diffusers' inpainting refiner cannot condition an inpainting U-Net on handed-over latents)",
                    m.layout.unet_config.in_channels
                )));
            }
        }
    }
    if !request.controls.is_empty() && request.init_image.is_some() {
        return Err(Error::unsupported(
            "ControlNet img2img with a refiner hand-off is not supported (diffusers' ControlNet img2img pipeline has no denoising_end); \
             ControlNets hand off from text-to-image only",
        ));
    }
    // Said before the base runs: the refiner makes the final image.
    if request.decoder == super::FinalDecoder::Preview && refiner_model.inner.preview_decoder.is_none() {
        return Err(Error::unsupported(format!(
            "the fast final decode needs the refiner's preview decoder (preview_decoder/model.onnx); the refiner {} has none",
            refiner_model.inner.layout.root.display()
        )));
    }
    // The refiner's part is diffusers' img2img call with the base's latents as
    // its image (its inpainting call, with the same mask and the picture for
    // the paste-back, when there is a mask); ControlNets guide the base only
    // (diffusers' refiner pipeline takes none, and a refiner-style model has
    // no `unet_controlnet`). It continues the base's picture: a size left to
    // the model (0) is the base's, whatever the refiner's own native size.
    let (width, height) = super::check_size(&base.inner, request)?;
    let inpainting = request.mask.is_some();
    let refined_request = GenerateRequest {
        width,
        height,
        init_image: if inpainting { request.init_image.clone() } else { None },
        mask: request.mask.clone(),
        initial_noise: None,
        refiner: None,
        controls: Vec::new(),
        guess_mode: false,
        ..request.clone()
    };
    // Both stages' schedules, to report progress over the whole job.
    let base_cutoff = cutoff(refiner.start, super::num_train_timesteps(&base.inner, request)?)?;
    let refiner_cutoff = cutoff(refiner.start, super::num_train_timesteps(&refiner_model.inner, request)?)?;
    let (base_total, refiner_total) = (
        super::stage_timesteps(&base.inner, request, &Stage::Base { cutoff: base_cutoff })?.len(),
        super::stage_timesteps(&refiner_model.inner, &refined_request, &Stage::Refiner { cutoff: refiner_cutoff, latents: ArrayD::zeros(ndarray::IxDyn(&[0])) })?.len(),
    );
    let total = base_total + refiner_total;

    let Hooks { cancel, mut on_step, run_options, step_latents } = hooks;
    // The observer asks for latents by the job's step numbers; the refiner
    // stage counts from 1 again, so its multiples of `n` only line up with
    // the job's when the base ran a multiple of `n` steps (the last step is
    // the last in both counts). Otherwise it brings every step's back.
    let refiner_step_latents = match step_latents {
        StepLatents::Interval(n) if n > 0 && base_total % n as usize != 0 => StepLatents::Every,
        other => other,
    };
    let mut noise = RequestNoise::new(request);
    let first = {
        let mut remap = |p: &StepProgress<'_>| {
            if let Some(cb) = on_step.as_mut() {
                cb(&StepProgress { step: p.step, total, latents: p.latents });
            }
        };
        let hooks = Hooks { cancel, on_step: Some(&mut remap), run_options, step_latents };
        super::run(&base.inner, request, hooks, Stage::Base { cutoff: base_cutoff }, &mut noise)?
    };
    let second = {
        let mut remap = |p: &StepProgress<'_>| {
            if let Some(cb) = on_step.as_mut() {
                cb(&StepProgress { step: base_total + p.step, total, latents: p.latents });
            }
        };
        let hooks = Hooks { cancel, on_step: Some(&mut remap), run_options, step_latents: refiner_step_latents };
        let stage = Stage::Refiner { cutoff: refiner_cutoff, latents: first.latents };
        super::run(&refiner_model.inner, &refined_request, hooks, stage, &mut noise)?
    };
    noise.finish()?;
    let image = second.image.ok_or_else(|| Error::internal("the refiner stage decoded no image"))?;
    let mut timesteps = first.timesteps;
    timesteps.extend(second.timesteps);
    Ok(Generation { image, latents: second.latents, timesteps, device_steps: first.device_steps + second.device_steps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn cutoff_rounds_as_python() {
        assert_eq!(cutoff(0.8, 1000.0).unwrap(), 200.0);
        assert_eq!(cutoff(0.7, 1000.0).unwrap(), 300.0);
        // Exact halves round to even, as Python's round: 2 - 0.25·2 = 1.5 → 2, 2 - 0.75·2 = 0.5 → 0.
        assert_eq!(cutoff(0.25, 2.0).unwrap(), 2.0);
        assert_eq!(cutoff(0.75, 2.0).unwrap(), 0.0);
        for bad in [0.0, 1.0, -0.1, f32::NAN, 1.5] {
            assert_eq!(cutoff(bad, 1000.0).unwrap_err().kind(), ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn the_two_stages_split_one_schedule_without_gap_or_overlap() {
        let schedule = [901.0, 801.0, 701.0, 601.0, 501.0, 401.0, 301.0, 201.0, 101.0, 1.0];
        let c = cutoff(0.8, 1000.0).unwrap();
        assert_eq!(base_steps(&schedule, c), 8);
        assert_eq!(refiner_start(&schedule, c), 8);
        let c = cutoff(0.85, 1000.0).unwrap(); // 150: between 201 and 101
        assert_eq!(base_steps(&schedule, c), refiner_start(&schedule, c));
    }
}
