//! Noise schedulers with diffusers' semantics, configured from
//! `scheduler/scheduler_config.json`.
//!
//! Each scheduler turns a step count into the U-Net timesteps, scales the model
//! input and advances the latents by one step, exactly as the diffusers class of
//! the same name does (parity is tested against it on the same graphs).
//!
//! Stochastic schedulers (`euler_a`, `dpmpp_2m_sde`, `lcm`) take their per-step
//! noise from a [`NoiseSource`] handed to every [`Scheduler::step`]: in a
//! generation that is Kiln's seeded generator (`pipeline::noise::NoiseRng`), in
//! the parity tests a recording of the draws diffusers made.
mod config;
mod ddim;
mod dpm;
mod euler;
mod euler_a;
mod heun;
mod lcm;
mod lms;
mod pndm;
mod unipc;

use ndarray::ArrayD;
#[cfg(test)]
use ndarray::IxDyn;

pub use self::config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
pub use self::ddim::Ddim;
pub use self::dpm::DpmSolverMultistep;
pub use self::euler::Euler;
pub use self::euler_a::EulerAncestral;
pub use self::heun::Heun;
pub use self::lcm::Lcm;
pub use self::lms::Lms;
pub use self::pndm::Pndm;
pub use self::unipc::UniPc;
use crate::error::{Error, Result};

/// The schedulers Kiln offers. Values match `kiln_scheduler` in the C header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u32)]
pub enum SchedulerKind {
    /// The scheduler the model's config names (`_class_name`), if Kiln has it;
    /// otherwise Euler.
    #[default]
    Default = 0,
    /// `DDIMScheduler` (deterministic with eta = 0).
    Ddim = 1,
    /// `EulerDiscreteScheduler`.
    Euler = 2,
    /// `PNDMScheduler` with `skip_prk_steps` (PLMS; SD 1.x's default).
    /// Calls the U-Net steps + 1 times.
    Pndm = 3,
    /// `DPMSolverMultistepScheduler`, DPM-Solver++(2M).
    DpmPP2M = 4,
    /// `DPMSolverMultistepScheduler`, DPM-Solver++(2M) with Karras sigmas.
    DpmPP2MKarras = 5,
    /// `LMSDiscreteScheduler` (order 4).
    Lms = 6,
    /// `HeunDiscreteScheduler`. Calls the U-Net 2·steps − 1 times.
    Heun = 7,
    /// `EulerAncestralDiscreteScheduler` (stochastic: noise at every step).
    EulerA = 8,
    /// `DPMSolverMultistepScheduler` with `algorithm_type = "sde-dpmsolver++"`,
    /// DPM-Solver++(2M) SDE (stochastic: noise at every step).
    DpmPP2MSde = 9,
    /// `UniPCMultistepScheduler` (bh2, order 2, predicting x0).
    UniPc = 10,
    /// `LCMScheduler` (stochastic: noise between steps). For LCM-distilled
    /// U-Nets and LCM-LoRA merges; 2–8 steps.
    Lcm = 11,
}

impl SchedulerKind {
    /// Parses a command-line name (one of [`Self::NAMES`]).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "default" => Some(Self::Default),
            "ddim" => Some(Self::Ddim),
            "euler" => Some(Self::Euler),
            "pndm" => Some(Self::Pndm),
            "dpmpp_2m" => Some(Self::DpmPP2M),
            "dpmpp_2m_karras" => Some(Self::DpmPP2MKarras),
            "lms" => Some(Self::Lms),
            "heun" => Some(Self::Heun),
            "euler_a" => Some(Self::EulerA),
            "dpmpp_2m_sde" => Some(Self::DpmPP2MSde),
            "unipc" => Some(Self::UniPc),
            "lcm" => Some(Self::Lcm),
            _ => None,
        }
    }

    /// Every name `from_name` accepts.
    pub const NAMES: &'static [&'static str] = &[
        "default",
        "ddim",
        "euler",
        "pndm",
        "dpmpp_2m",
        "dpmpp_2m_karras",
        "lms",
        "heun",
        "euler_a",
        "dpmpp_2m_sde",
        "unipc",
        "lcm",
    ];

    /// The kind with this `kiln_scheduler` value.
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::Default,
            1 => Self::Ddim,
            2 => Self::Euler,
            3 => Self::Pndm,
            4 => Self::DpmPP2M,
            5 => Self::DpmPP2MKarras,
            6 => Self::Lms,
            7 => Self::Heun,
            8 => Self::EulerA,
            9 => Self::DpmPP2MSde,
            10 => Self::UniPc,
            11 => Self::Lcm,
            _ => return None,
        })
    }

    /// Whether this scheduler draws noise while it steps (from the request's
    /// seed, or the recorded `step_noise`). `Default` answers for itself only.
    pub fn is_stochastic(self) -> bool {
        matches!(self, Self::EulerA | Self::DpmPP2MSde | Self::Lcm)
    }

    /// The kind a diffusers class name stands for. `DPMSolverMultistepScheduler`
    /// gives `DpmPP2M`; `Default` picks the Karras or SDE variant when the
    /// config asks.
    pub fn from_class_name(name: &str) -> Option<Self> {
        match name {
            "DDIMScheduler" => Some(Self::Ddim),
            "EulerDiscreteScheduler" => Some(Self::Euler),
            "PNDMScheduler" => Some(Self::Pndm),
            "DPMSolverMultistepScheduler" => Some(Self::DpmPP2M),
            "LMSDiscreteScheduler" => Some(Self::Lms),
            "HeunDiscreteScheduler" => Some(Self::Heun),
            "EulerAncestralDiscreteScheduler" => Some(Self::EulerA),
            "UniPCMultistepScheduler" => Some(Self::UniPc),
            "LCMScheduler" => Some(Self::Lcm),
            _ => None,
        }
    }
}

/// The kind `Default` stands for with this config: its class if Kiln has it
/// with these settings, else Euler.
fn resolve_default(config: &SchedulerConfig) -> Result<SchedulerKind> {
    let kind = config.class_name.as_deref().and_then(SchedulerKind::from_class_name);
    Ok(match kind {
        // Kiln's PNDM is PLMS only.
        Some(SchedulerKind::Pndm) if !config.extra_flag("skip_prk_steps", false)? => SchedulerKind::Euler,
        Some(SchedulerKind::DpmPP2M) => {
            let algorithm = config.extra_text("algorithm_type", "dpmsolver++")?;
            let order2 = config.extra_num("solver_order")?.unwrap_or(2.0) == 2.0;
            let karras = config.extra_flag("use_karras_sigmas", false)?;
            match (algorithm.as_str(), order2, karras) {
                ("dpmsolver++", true, true) => SchedulerKind::DpmPP2MKarras,
                ("dpmsolver++", true, false) => SchedulerKind::DpmPP2M,
                // Kiln has no Karras-sigma SDE variant.
                ("sde-dpmsolver++", true, false) => SchedulerKind::DpmPP2MSde,
                _ => SchedulerKind::Euler,
            }
        }
        Some(SchedulerKind::UniPc) if !unipc::supports(config)? => SchedulerKind::Euler,
        Some(k) => k,
        None => SchedulerKind::Euler,
    })
}

/// The kind `kind` stands for on this config (`Default` resolved).
pub(crate) fn resolve(kind: SchedulerKind, config_json: &serde_json::Value) -> Result<SchedulerKind> {
    match kind {
        SchedulerKind::Default => resolve_default(&SchedulerConfig::from_json(config_json)?),
        k => Ok(k),
    }
}

/// LCM over the first `strength` of its distillation schedule, every step
/// run ([`Lcm::with_strength`]): img2img with an LCM-distilled U-Net, as
/// diffusers' `LatentConsistencyModelImg2ImgPipeline`.
pub(crate) fn build_lcm_img2img(config_json: &serde_json::Value, steps: usize, strength: f64) -> Result<Box<dyn Scheduler>> {
    if steps == 0 {
        return Err(Error::invalid("steps must be at least 1"));
    }
    Ok(Box::new(Lcm::with_strength(&SchedulerConfig::from_json(config_json)?, steps, strength)?))
}

/// Where stochastic schedulers get their noise: the next standard normals of a
/// stream, in order. Every draw is one tensor of the latents' shape, filled in
/// NCHW order, and each scheduler draws exactly when diffusers' class of the
/// same name calls `randn_tensor`, so a recording of diffusers' draws replays
/// number for number.
pub trait NoiseSource {
    /// The next `out.len()` standard normals.
    fn fill_normals(&mut self, out: &mut [f32]) -> Result<()>;

    /// The next tensor of `shape` standard normals.
    fn draw(&mut self, shape: &[usize]) -> Result<ArrayD<f32>> {
        let mut data = vec![0.0f32; shape.iter().product()];
        self.fill_normals(&mut data)?;
        ArrayD::from_shape_vec(ndarray::IxDyn(shape), data).map_err(|e| Error::internal(e.to_string()))
    }
}

/// One scheduler step written as a linear map of the step's tensors, for
/// running the step where the latents live (see `pipeline::device_loop`):
///
/// `x' = sample·x + model·m + history·h + noise·z` and `h' = next_history_sample·x + next_history_model·m`,
///
/// where `x` is the sample, `m` the (guided) model output, `h` the history
/// tensor (the previous step's data prediction for multistep solvers; zeros
/// before the first step) and `z` one latent-sized block of standard normals,
/// drawn from the [`NoiseSource`] exactly where [`Scheduler::step`] draws it
/// (`draws_noise`). Coefficients are computed on the host in the scheduler's
/// own precision, so only the element-wise arithmetic moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearStep {
    /// Coefficient of the sample `x`.
    pub sample: f64,
    /// Coefficient of the model output `m`.
    pub model: f64,
    /// Coefficient of the history tensor `h`.
    pub history: f64,
    /// Coefficient of the step noise `z`.
    pub noise: f64,
    /// The next history's coefficient of `x`.
    pub next_history_sample: f64,
    /// The next history's coefficient of `m`.
    pub next_history_model: f64,
    /// Whether this step draws one block of noise (as `step` would).
    pub draws_noise: bool,
}

impl LinearStep {
    /// A step `x' = sx·x + sd·x0 + c·h + d·z` whose data prediction is
    /// `x0 = p·x + q·m`, with `x0` kept as the next history.
    pub(crate) fn through_x0((p, q): (f64, f64), sx: f64, sd: f64, history: f64, noise: f64, draws_noise: bool) -> Self {
        Self {
            sample: sx + sd * p,
            model: sd * q,
            history,
            noise,
            next_history_sample: p,
            next_history_model: q,
            draws_noise,
        }
    }
}

/// One scheduler, prepared for a fixed number of steps.
pub trait Scheduler: Send {
    /// The timesteps the U-Net is called with, in order.
    fn timesteps(&self) -> &[f64];
    /// Factor the initial noise is multiplied by (1 unless the scheduler
    /// works in sigma space).
    fn init_noise_sigma(&self) -> f32 {
        1.0
    }
    /// Scales the latents before the U-Net call of step `index` (unchanged
    /// unless the scheduler works in sigma space).
    fn scale_model_input(&self, sample: &ArrayD<f32>, index: usize) -> ArrayD<f32> {
        let _ = index;
        sample.clone()
    }
    /// Advances `sample` by step `index` given the (guided) model output.
    /// Stochastic schedulers draw their noise from `noise`; the others ignore it.
    fn step(
        &mut self,
        model_output: &ArrayD<f32>,
        index: usize,
        sample: &ArrayD<f32>,
        noise: &mut dyn NoiseSource,
    ) -> Result<ArrayD<f32>>;

    /// Noises clean latents to the level of U-Net call `index` (img2img and
    /// inpainting start there; 4-channel inpainting re-noises the kept area to
    /// the next call's level after every step), as diffusers' `add_noise` does
    /// once `set_begin_index` has been called: the noise level is the one at
    /// that position in the schedule, not looked up by timestep value.
    /// A scheduler that cannot start part-way reports `Unsupported`.
    fn add_noise(&self, original: &ArrayD<f32>, noise: &ArrayD<f32>, index: usize) -> Result<ArrayD<f32>>;

    /// Step `index` as a linear map ([`LinearStep`]), when this scheduler with
    /// its settings can be run that way; `done` is how many steps of this
    /// generation ran before it (multistep solvers use their history from the
    /// second one on). `None` (the default): the step needs the host (state,
    /// thresholding, clipping, non-linear updates). It does not advance the
    /// scheduler: a generation uses either `linear_step` or `step` throughout.
    fn linear_step(&self, index: usize, done: usize) -> Option<LinearStep> {
        let _ = (index, done);
        None
    }

    /// The factor [`Scheduler::scale_model_input`] multiplies the latents of
    /// step `index` by, for schedulers with linear steps (1 unless the
    /// scheduler works in sigma space).
    fn input_scale(&self, index: usize) -> f32 {
        let _ = index;
        1.0
    }

    /// U-Net calls per step (diffusers' `order`: 2 for Heun, whose timesteps
    /// repeat, 1 for the rest). img2img begins at call `t_start · order`,
    /// as diffusers' `get_timesteps` slices `timesteps[t_start * order:]`.
    fn order(&self) -> usize {
        1
    }
}

/// `sqrt(ᾱ)·x + sqrt(1 − ᾱ)·n` in f32, diffusers' `add_noise` of the DDPM-style
/// schedulers (DDIM, PNDM) for one `alphas_cumprod` value.
pub(crate) fn add_noise_alpha(original: &ArrayD<f32>, noise: &ArrayD<f32>, alpha_cumprod: f32) -> ArrayD<f32> {
    let (sa, sb) = (alpha_cumprod.sqrt(), (1.0 - alpha_cumprod).sqrt());
    ndarray::Zip::from(original).and(noise).map_collect(|&x, &n| sa * x + sb * n)
}

/// `x + σ·n`, diffusers' `add_noise` of the sigma-space schedulers (Euler,
/// Euler ancestral, LMS, Heun).
pub(crate) fn add_noise_sigma(original: &ArrayD<f32>, noise: &ArrayD<f32>, sigma: f32) -> ArrayD<f32> {
    ndarray::Zip::from(original).and(noise).map_collect(|&x, &n| x + n * sigma)
}

/// Builds the scheduler `kind` for `steps` steps from a diffusers config.
pub fn build(kind: SchedulerKind, config_json: &serde_json::Value, steps: usize) -> Result<Box<dyn Scheduler>> {
    if steps == 0 {
        return Err(Error::invalid("steps must be at least 1"));
    }
    let config = SchedulerConfig::from_json(config_json)?;
    if steps > config.num_train_timesteps {
        return Err(Error::invalid(format!(
            "steps ({steps}) cannot exceed the model's num_train_timesteps ({})",
            config.num_train_timesteps
        )));
    }
    let kind = match kind {
        SchedulerKind::Default => resolve_default(&config)?,
        k => k,
    };
    let scheduler: Box<dyn Scheduler> = match kind {
        SchedulerKind::Ddim => Box::new(Ddim::new(&config, steps)?),
        SchedulerKind::Euler | SchedulerKind::Default => Box::new(Euler::new(&config, steps)?),
        SchedulerKind::Pndm => Box::new(Pndm::new(&config, steps)?),
        SchedulerKind::DpmPP2M => Box::new(DpmSolverMultistep::new(&config, steps, false, false)?),
        SchedulerKind::DpmPP2MKarras => Box::new(DpmSolverMultistep::new(&config, steps, true, false)?),
        SchedulerKind::Lms => Box::new(Lms::new(&config, steps)?),
        SchedulerKind::Heun => Box::new(Heun::new(&config, steps)?),
        SchedulerKind::EulerA => Box::new(EulerAncestral::new(&config, steps)?),
        SchedulerKind::DpmPP2MSde => Box::new(DpmSolverMultistep::new(&config, steps, false, true)?),
        SchedulerKind::UniPc => Box::new(UniPc::new(&config, steps)?),
        SchedulerKind::Lcm => Box::new(Lcm::new(&config, steps)?),
    };
    // Every scheduler indexes its training tables by these timesteps: one
    // outside them (a large `steps_offset` with leading spacing) is the
    // config's error, never an out-of-bounds panic later.
    let last = (config.num_train_timesteps - 1) as f64;
    if let Some(t) = scheduler.timesteps().iter().find(|t| !(0.0..=last).contains(*t)) {
        return Err(Error::model(format!(
            "scheduler_config.json: timestep {t} is outside 0..={last} (check `steps_offset` and `num_train_timesteps`)"
        )));
    }
    Ok(scheduler)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_values_are_stable() {
        for name in SchedulerKind::NAMES {
            assert!(SchedulerKind::from_name(name).is_some(), "{name}");
        }
        let values = [
            (SchedulerKind::Default, 0),
            (SchedulerKind::Ddim, 1),
            (SchedulerKind::Euler, 2),
            (SchedulerKind::Pndm, 3),
            (SchedulerKind::DpmPP2M, 4),
            (SchedulerKind::DpmPP2MKarras, 5),
            (SchedulerKind::Lms, 6),
            (SchedulerKind::Heun, 7),
            (SchedulerKind::EulerA, 8),
            (SchedulerKind::DpmPP2MSde, 9),
            (SchedulerKind::UniPc, 10),
            (SchedulerKind::Lcm, 11),
        ];
        for (kind, v) in values {
            assert_eq!(kind as u32, v);
            assert_eq!(SchedulerKind::from_u32(v), Some(kind));
        }
        assert_eq!(SchedulerKind::from_u32(12), None);
        assert_eq!(SchedulerKind::NAMES.len(), values.len());
        for (name, want) in [("euler_a", 8), ("dpmpp_2m_sde", 9), ("unipc", 10), ("lcm", 11)] {
            assert_eq!(SchedulerKind::from_name(name).map(|k| k as u32), Some(want));
        }
    }

    #[test]
    fn default_follows_the_config_class() {
        let resolve = |v: serde_json::Value| resolve_default(&SchedulerConfig::from_json(&v).unwrap()).unwrap();
        use serde_json::json;
        assert_eq!(resolve(json!({"_class_name": "PNDMScheduler", "skip_prk_steps": true})), SchedulerKind::Pndm);
        // PRK warm-up is not implemented: fall back to Euler.
        assert_eq!(resolve(json!({"_class_name": "PNDMScheduler"})), SchedulerKind::Euler);
        assert_eq!(resolve(json!({"_class_name": "DPMSolverMultistepScheduler"})), SchedulerKind::DpmPP2M);
        assert_eq!(
            resolve(json!({"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": true})),
            SchedulerKind::DpmPP2MKarras
        );
        assert_eq!(resolve(json!({"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3})), SchedulerKind::Euler);
        assert_eq!(resolve(json!({"_class_name": "LMSDiscreteScheduler"})), SchedulerKind::Lms);
        assert_eq!(resolve(json!({"_class_name": "HeunDiscreteScheduler"})), SchedulerKind::Heun);
        assert_eq!(
            resolve(json!({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"})),
            SchedulerKind::DpmPP2MSde
        );
        assert_eq!(
            resolve(json!({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": true})),
            SchedulerKind::Euler
        );
        assert_eq!(resolve(json!({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver"})), SchedulerKind::Euler);
        assert_eq!(resolve(json!({"_class_name": "EulerAncestralDiscreteScheduler"})), SchedulerKind::EulerA);
        assert_eq!(resolve(json!({"_class_name": "UniPCMultistepScheduler"})), SchedulerKind::UniPc);
        assert_eq!(resolve(json!({"_class_name": "UniPCMultistepScheduler", "solver_order": 3})), SchedulerKind::Euler);
        assert_eq!(resolve(json!({"_class_name": "UniPCMultistepScheduler", "solver_type": "bh1"})), SchedulerKind::Euler);
        assert_eq!(resolve(json!({"_class_name": "UniPCMultistepScheduler", "use_karras_sigmas": true})), SchedulerKind::Euler);
        assert_eq!(resolve(json!({"_class_name": "LCMScheduler"})), SchedulerKind::Lcm);
        assert_eq!(resolve(json!({"_class_name": "FlowMatchEulerDiscreteScheduler"})), SchedulerKind::Euler);
    }

    struct Zeros;
    impl NoiseSource for Zeros {
        fn fill_normals(&mut self, out: &mut [f32]) -> Result<()> {
            out.fill(0.0);
            Ok(())
        }
    }

    /// Absurd but well-formed configs (what a caller can put in
    /// `scheduler_overrides`) must give an error or a usable scheduler for
    /// every kind, never a panic, and never non-finite latents.
    #[test]
    fn absurd_configs_are_errors_not_panics() {
        use serde_json::json;
        let base = json!({
            "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000,
            "prediction_type": "epsilon", "set_alpha_to_one": false, "skip_prk_steps": true,
            "steps_offset": 1, "timestep_spacing": "leading"
        });
        let absurd = [
            json!({"steps_offset": 1e30}),
            json!({"steps_offset": -1}),
            json!({"steps_offset": 999}),
            json!({"steps_offset": 0.5}),
            json!({"num_train_timesteps": 1}),
            json!({"num_train_timesteps": 2}),
            json!({"num_train_timesteps": 1.5}),
            json!({"num_train_timesteps": 1e30}),
            json!({"num_train_timesteps": -5}),
            json!({"beta_start": 5.0}),
            json!({"beta_start": -1.0, "beta_end": -2.0}),
            json!({"beta_end": 1.0, "beta_schedule": "linear"}),
            json!({"beta_start": 1e300, "beta_end": 1e300}),
            json!({"clip_sample": true, "clip_sample_range": -1e30}),
            json!({"trained_betas": [0.5, 0.5], "num_train_timesteps": 2}),
            json!({"trained_betas": [2.0, -1.0], "num_train_timesteps": 2}),
            json!({"timestep_spacing": "trailing", "num_train_timesteps": 3}),
            json!({"timestep_spacing": "linspace", "num_train_timesteps": 2}),
            json!({"original_inference_steps": 1e30}),
            json!({"original_inference_steps": 0}),
            json!({"solver_order": 1e30}),
            json!({"lambda_min_clipped": "inf"}),
            json!({"sigma_min": -1, "sigma_max": -1, "use_karras_sigmas": true}),
            json!({"thresholding": true, "dynamic_thresholding_ratio": 5.0, "sample_max_value": -1}),
            json!({"rescale_betas_zero_snr": true, "num_train_timesteps": 2}),
            json!({"eta": 1e30}),
        ];
        let kinds: Vec<SchedulerKind> = (0..12).filter_map(SchedulerKind::from_u32).collect();
        let mut failures = Vec::new();
        for extra in &absurd {
            let mut config = base.clone();
            for (k, v) in extra.as_object().unwrap() {
                config[k] = v.clone();
            }
            for &kind in &kinds {
                for steps in [1usize, 2, 3, 20] {
                    let outcome = std::panic::catch_unwind(|| -> Result<()> {
                        let mut s = build(kind, &config, steps)?;
                        let shape = [1usize, 4, 2, 2];
                        let mut x = ndarray::ArrayD::<f32>::from_elem(ndarray::IxDyn(&shape), 0.5);
                        let out = ndarray::ArrayD::<f32>::from_elem(ndarray::IxDyn(&shape), 0.1);
                        let calls = s.timesteps().len();
                        let _ = s.add_noise(&x, &out, 0);
                        let _ = s.add_noise(&x, &out, calls.saturating_sub(1));
                        for i in 0..calls {
                            let input = s.scale_model_input(&x, i);
                            let _ = input;
                            x = s.step(&out, i, &x, &mut Zeros)?;
                        }
                        Ok(())
                    });
                    if outcome.is_err() {
                        failures.push(format!("{kind:?} steps {steps} with {extra}"));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{} panics:\n{}", failures.len(), failures.join("\n"));
    }
}

#[cfg(test)]
mod linear_tests {
    use super::*;

    /// Replays fixed values as noise.
    struct Fixed(Vec<f32>, usize);
    impl NoiseSource for Fixed {
        fn fill_normals(&mut self, out: &mut [f32]) -> Result<()> {
            for o in out.iter_mut() {
                *o = self.0[self.1 % self.0.len()];
                self.1 += 1;
            }
            Ok(())
        }
    }

    /// Deterministic pseudo-random values in [-1, 1].
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every scheduler that offers linear steps gives, through them, the
    /// latents its own `step` gives (the map the device loop evaluates, here
    /// evaluated on the host in f64), for every prediction type, with the
    /// history carried and the noise drawn in the same order.
    #[test]
    fn linear_steps_reproduce_step() {
        use serde_json::json;
        let base = json!({
            "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
            "clip_sample": false, "num_train_timesteps": 1000, "set_alpha_to_one": false,
            "steps_offset": 1, "timestep_spacing": "leading"
        });
        let kinds = [
            SchedulerKind::Euler,
            SchedulerKind::EulerA,
            SchedulerKind::Ddim,
            SchedulerKind::DpmPP2M,
            SchedulerKind::DpmPP2MKarras,
            SchedulerKind::DpmPP2MSde,
            SchedulerKind::Lcm,
        ];
        let shape = [1usize, 2, 3, 3];
        let n: usize = shape.iter().product();
        let mut worst = 0.0f64;
        for kind in kinds {
            for prediction in ["epsilon", "v_prediction", "sample"] {
                for (steps, extra) in [(6, json!({})), (20, json!({})), (4, json!({"solver_type": "heun"}))] {
                    let mut config = base.clone();
                    config["prediction_type"] = json!(prediction);
                    for (k, v) in extra.as_object().unwrap() {
                        config[k] = v.clone();
                    }
                    let Ok(mut host) = build(kind, &config, steps) else { continue };
                    let linear = build(kind, &config, steps).unwrap();
                    let noise_values = values(997, 7);
                    let mut host_noise = Fixed(noise_values.clone(), 0);
                    let mut linear_noise = Fixed(noise_values, 0);
                    let mut x = ArrayD::from_shape_vec(IxDyn(&shape), values(n, 1)).unwrap();
                    let mut lx: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                    let mut history = vec![0.0f64; n];
                    for i in 0..host.timesteps().len() {
                        let m = ArrayD::from_shape_vec(IxDyn(&shape), values(n, 100 + i as u32)).unwrap();
                        let step = linear.linear_step(i, i).unwrap_or_else(|| panic!("{kind:?} {prediction}: step {i} not linear"));
                        let mut z = vec![0.0f32; n];
                        if step.draws_noise {
                            linear_noise.fill_normals(&mut z).unwrap();
                        }
                        let next: Vec<f64> = (0..n)
                            .map(|j| {
                                step.sample * lx[j] + step.model * m.as_slice().unwrap()[j] as f64 + step.history * history[j] + step.noise * z[j] as f64
                            })
                            .collect();
                        history = (0..n).map(|j| step.next_history_sample * lx[j] + step.next_history_model * m.as_slice().unwrap()[j] as f64).collect();
                        lx = next;
                        x = host.step(&m, i, &x, &mut host_noise).unwrap();
                        let scale = x.iter().fold(1.0f64, |a, &v| a.max((v as f64).abs()));
                        let diff = x.iter().zip(&lx).fold(0.0f64, |a, (&h, &l)| a.max((h as f64 - l).abs())) / scale;
                        worst = worst.max(diff);
                        assert!(diff <= 1e-5, "{kind:?} {prediction} {steps} steps {extra}: step {i} differs by {diff:e} (relative)");
                        assert!((host.input_scale(i) - linear.input_scale(i)).abs() == 0.0);
                    }
                    assert_eq!(host_noise.1, linear_noise.1, "{kind:?}: noise draws differ");
                }
            }
        }
        println!("linear steps vs step: worst relative difference {worst:e} (bound 1e-5)");
        // Schedulers with host state or non-linear steps stay on the host loop.
        for kind in [SchedulerKind::Pndm, SchedulerKind::Lms, SchedulerKind::Heun, SchedulerKind::UniPc] {
            let s = build(kind, &base, 10).unwrap();
            assert!(s.linear_step(0, 0).is_none(), "{kind:?}");
        }
        let clipped = build(SchedulerKind::Ddim, &json!({"clip_sample": true}), 10).unwrap();
        assert!(clipped.linear_step(0, 0).is_none());
    }

    /// The input scale is what `scale_model_input` multiplies by.
    #[test]
    fn input_scale_is_scale_model_input() {
        let base = serde_json::json!({"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012});
        for kind in [SchedulerKind::Euler, SchedulerKind::EulerA, SchedulerKind::Ddim, SchedulerKind::DpmPP2M, SchedulerKind::Lcm] {
            let s = build(kind, &base, 8).unwrap();
            let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![0.5f32, -1.0, 2.0, 3.0]).unwrap();
            for i in 0..s.timesteps().len() {
                let want = s.scale_model_input(&x, i);
                let f = s.input_scale(i);
                for (w, v) in want.iter().zip(x.iter()) {
                    assert_eq!(*w, v * f, "{kind:?} step {i}");
                }
            }
        }
    }
}

/// Configs shared by the schedulers' unit tests.
#[cfg(test)]
pub(crate) mod test_configs {
    use super::SchedulerConfig;

    /// SD 1.5's scheduler_config.json (as in tests/fixtures/tiny-sd), with
    /// `extra` fields overriding it, parsed as diffusers' `from_config` reads it.
    pub(crate) fn sd15(extra: serde_json::Value) -> SchedulerConfig {
        let mut v = serde_json::json!({
            "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000,
            "prediction_type": "epsilon", "set_alpha_to_one": false, "skip_prk_steps": true,
            "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": null
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        SchedulerConfig::from_json(&v).unwrap()
    }

    /// Sigma-derived values to 1e-6 relative: torch's vectorized float32 sqrt
    /// (this CPU build) is not correctly rounded, so ~1 in 5 training sigmas
    /// differ from Kiln's by one ulp.
    pub(crate) fn close(got: f32, want: f64) {
        assert!((got as f64 - want).abs() <= 1e-6 * want, "{got} vs {want}");
    }
}
