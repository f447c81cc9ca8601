//! `EulerDiscreteScheduler` (Karras et al. 2022, Algorithm 2 without churn), as
//! diffusers implements it with its default settings.
use ndarray::ArrayD;

use super::config::{linspace_at, PredictionType, SchedulerConfig, TimestepSpacing};
use super::{LinearStep, NoiseSource, Scheduler};
use crate::error::Result;

/// Euler in sigma space.
pub struct Euler {
    pub(super) timesteps: Vec<f64>,
    /// One sigma per step plus the final 0.
    pub(super) sigmas: Vec<f64>,
    pub(super) init_noise_sigma: f32,
    pub(super) prediction_type: PredictionType,
}

impl Euler {
    /// Prepares Euler for `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let n = config.num_train_timesteps;
        let timesteps: Vec<f64> = match config.timestep_spacing {
            // Euler keeps linspace timesteps fractional (float32), unlike DDIM.
            TimestepSpacing::Linspace => (0..steps)
                .rev()
                .map(|i| linspace_at(0.0, (n - 1) as f64, steps, i) as f32 as f64)
                .collect(),
            _ => config.discrete_timesteps(steps),
        };
        let train_sigmas: Vec<f64> = config
            .alphas_cumprod()
            .iter()
            .map(|&a| {
                let a = a as f32;
                ((1.0 - a) / a).sqrt() as f64
            })
            .collect();
        // np.interp(timesteps, arange(N), sigmas): linear interpolation.
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| {
                let lo = (t.floor() as usize).min(n - 1);
                let hi = (lo + 1).min(n - 1);
                let frac = t - lo as f64;
                let s = train_sigmas[lo] + (train_sigmas[hi] - train_sigmas[lo]) * frac;
                s as f32 as f64
            })
            .collect();
        sigmas.push(0.0);
        let max_sigma = sigmas.iter().cloned().fold(0.0f64, f64::max) as f32;
        let init_noise_sigma = match config.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max_sigma,
            TimestepSpacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        };
        Ok(Self { timesteps, sigmas, init_noise_sigma, prediction_type: config.prediction_type })
    }
}

impl Scheduler for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f32 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &ArrayD<f32>, index: usize) -> ArrayD<f32> {
        let scale = self.input_scale(index);
        sample.mapv(|x| x * scale)
    }

    fn input_scale(&self, index: usize) -> f32 {
        let sigma = self.sigmas[index] as f32;
        1.0 / (sigma * sigma + 1.0).sqrt()
    }

    fn linear_step(&self, index: usize, _done: usize) -> Option<LinearStep> {
        let sigma = self.sigmas[index] as f32;
        let dt = (self.sigmas[index + 1] as f32 - sigma) as f64;
        let x0 = sigma_space_x0(self.prediction_type, sigma);
        // x + dt·(x − x0)/σ
        let r = dt / sigma as f64;
        Some(LinearStep::through_x0(x0, 1.0 + r, -r, 0.0, 0.0, false))
    }

    fn step(
        &mut self,
        model_output: &ArrayD<f32>,
        index: usize,
        sample: &ArrayD<f32>,
        _noise: &mut dyn NoiseSource,
    ) -> Result<ArrayD<f32>> {
        let sigma = self.sigmas[index] as f32;
        let dt = self.sigmas[index + 1] as f32 - sigma;
        let prediction = self.prediction_type;
        let mut out = sample.clone();
        ndarray::Zip::from(&mut out).and(model_output).and(sample).for_each(|o, &m, &x| {
            let x0 = match prediction {
                PredictionType::Epsilon => x - sigma * m,
                PredictionType::VPrediction => m * (-sigma / (sigma * sigma + 1.0).sqrt()) + x / (sigma * sigma + 1.0),
                PredictionType::Sample => m,
            };
            let derivative = (x - x0) / sigma;
            *o = x + derivative * dt;
        });
        Ok(out)
    }

    fn add_noise(&self, original: &ArrayD<f32>, noise: &ArrayD<f32>, index: usize) -> Result<ArrayD<f32>> {
        Ok(super::add_noise_sigma(original, noise, self.sigmas[index] as f32))
    }
}

/// The data prediction `x0 = p·x + q·m` of a sigma-space scheduler at `sigma`
/// (the coefficients of Euler's `x0` for each prediction type).
pub(super) fn sigma_space_x0(prediction: PredictionType, sigma: f32) -> (f64, f64) {
    let s = sigma as f64;
    match prediction {
        PredictionType::Epsilon => (1.0, -s),
        PredictionType::VPrediction => (1.0 / (sigma * sigma + 1.0) as f64, (-sigma / (sigma * sigma + 1.0).sqrt()) as f64),
        PredictionType::Sample => (0.0, 1.0),
    }
}
