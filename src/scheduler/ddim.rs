//! `DDIMScheduler` (Song et al. 2020) with eta = 0, as diffusers implements it.
use ndarray::ArrayD;

use super::config::{PredictionType, SchedulerConfig};
use super::{NoiseSource, Scheduler};
use crate::error::Result;

/// Deterministic DDIM.
pub struct Ddim {
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
    step_ratio: usize,
    prediction_type: PredictionType,
    clip: Option<f64>,
}

impl Ddim {
    /// Prepares DDIM for `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let alphas_cumprod = config.alphas_cumprod();
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        Ok(Self {
            timesteps: config.discrete_timesteps(steps),
            alphas_cumprod,
            final_alpha_cumprod,
            step_ratio: config.num_train_timesteps / steps,
            prediction_type: config.prediction_type,
            clip: config.clip_sample.then_some(config.clip_sample_range),
        })
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    fn scale_model_input(&self, sample: &ArrayD<f32>, _index: usize) -> ArrayD<f32> {
        sample.clone()
    }

    fn step(
        &mut self,
        model_output: &ArrayD<f32>,
        index: usize,
        sample: &ArrayD<f32>,
        _noise: &mut dyn NoiseSource,
    ) -> Result<ArrayD<f32>> {
        let t = self.timesteps[index] as i64;
        // diffusers: prev_timestep = t - N // steps, whatever the spacing.
        let prev = t - self.step_ratio as i64;
        let a_t = self.alphas_cumprod[t as usize] as f32;
        let a_prev = if prev >= 0 { self.alphas_cumprod[prev as usize] } else { self.final_alpha_cumprod } as f32;
        let b_t = 1.0 - a_t;
        let (sa, sb) = (a_t.sqrt(), b_t.sqrt());
        let coef_x0 = a_prev.sqrt();
        let coef_eps = (1.0 - a_prev).sqrt();
        let prediction = self.prediction_type;
        let clip = self.clip.map(|c| c as f32);
        let mut out = sample.clone();
        ndarray::Zip::from(&mut out).and(model_output).and(sample).for_each(|o, &m, &x| {
            let (mut x0, eps) = match prediction {
                PredictionType::Epsilon => ((x - sb * m) / sa, m),
                PredictionType::Sample => (m, (x - sa * m) / sb),
                PredictionType::VPrediction => (sa * x - sb * m, sa * m + sb * x),
            };
            if let Some(r) = clip {
                // diffusers keeps the unclipped epsilon (use_clipped_model_output=False).
                x0 = x0.clamp(-r, r);
            }
            *o = coef_x0 * x0 + coef_eps * eps;
        });
        Ok(out)
    }

    fn add_noise(&self, original: &ArrayD<f32>, noise: &ArrayD<f32>, index: usize) -> Result<ArrayD<f32>> {
        let a = self.alphas_cumprod[self.timesteps[index] as usize] as f32;
        let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
        Ok(ndarray::Zip::from(original).and(noise).map_collect(|&x, &n| sa * x + sb * n))
    }
}
