//! Noise schedulers with diffusers' semantics, configured from
//! `scheduler/scheduler_config.json`.
//!
//! Each scheduler turns a step count into the U-Net timesteps, scales the model
//! input and advances the latents by one step, exactly as the diffusers class of
//! the same name does (parity is tested against it on the same graphs).
mod config;
mod ddim;
mod euler;

use ndarray::ArrayD;

pub use self::config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
pub use self::ddim::Ddim;
pub use self::euler::Euler;
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
}

impl SchedulerKind {
    /// Parses a command-line name (`ddim`, `euler`, `default`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "default" => Some(Self::Default),
            "ddim" => Some(Self::Ddim),
            "euler" => Some(Self::Euler),
            _ => None,
        }
    }

    /// Every name `from_name` accepts.
    pub const NAMES: &'static [&'static str] = &["default", "ddim", "euler"];

    /// The kind a diffusers class name stands for.
    pub fn from_class_name(name: &str) -> Option<Self> {
        match name {
            "DDIMScheduler" => Some(Self::Ddim),
            "EulerDiscreteScheduler" => Some(Self::Euler),
            _ => None,
        }
    }
}

/// One scheduler, prepared for a fixed number of steps.
pub trait Scheduler: Send {
    /// The timesteps the U-Net is called with, in order.
    fn timesteps(&self) -> &[f64];
    /// Factor the initial noise is multiplied by.
    fn init_noise_sigma(&self) -> f32;
    /// Scales the latents before the U-Net call of step `index`.
    fn scale_model_input(&self, sample: &ArrayD<f32>, index: usize) -> ArrayD<f32>;
    /// Advances `sample` by step `index` given the (guided) model output.
    fn step(&mut self, model_output: &ArrayD<f32>, index: usize, sample: &ArrayD<f32>) -> Result<ArrayD<f32>>;
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
        SchedulerKind::Default => config
            .class_name
            .as_deref()
            .and_then(SchedulerKind::from_class_name)
            .unwrap_or(SchedulerKind::Euler),
        k => k,
    };
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(Ddim::new(&config, steps)?),
        SchedulerKind::Euler | SchedulerKind::Default => Box::new(Euler::new(&config, steps)?),
    })
}
