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
    /// Dynamic thresholding (Imagen): (ratio, sample_max_value).
    threshold: Option<(f64, f64)>,
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
            threshold: if config.extra_flag("thresholding", false)? {
                let ratio = config.extra_num("dynamic_thresholding_ratio")?.unwrap_or(0.995);
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(crate::error::Error::model(format!(
                        "scheduler_config.json: `dynamic_thresholding_ratio` is {ratio}; it must be within 0..=1"
                    )));
                }
                Some((ratio, config.extra_num("sample_max_value")?.unwrap_or(1.0)))
            } else {
                None
            },
        })
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
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
        let mut x0 = sample.clone();
        let mut eps = sample.clone();
        ndarray::Zip::from(&mut x0).and(&mut eps).and(model_output).and(sample).for_each(|x0, eps, &m, &x| {
            (*x0, *eps) = match prediction {
                PredictionType::Epsilon => ((x - sb * m) / sa, m),
                PredictionType::Sample => (m, (x - sa * m) / sb),
                PredictionType::VPrediction => (sa * x - sb * m, sa * m + sb * x),
            };
        });
        // diffusers keeps the unclipped epsilon (use_clipped_model_output=False).
        if let Some((ratio, max)) = self.threshold {
            dynamic_threshold(&mut x0, ratio, max);
        } else if let Some(r) = clip {
            x0.mapv_inplace(|v| v.clamp(-r, r));
        }
        let out = ndarray::Zip::from(&x0).and(&eps).map_collect(|&x0, &e| coef_x0 * x0 + coef_eps * e);
        Ok(out)
    }

    fn add_noise(&self, original: &ArrayD<f32>, noise: &ArrayD<f32>, index: usize) -> Result<ArrayD<f32>> {
        let a = self.alphas_cumprod[self.timesteps[index] as usize] as f32;
        Ok(super::add_noise_alpha(original, noise, a))
    }
}

/// diffusers' `_threshold_sample` for one sample: s = the `ratio` quantile of
/// |x0| (linear interpolation, as torch.quantile), clamped to [1, max]; then
/// x0 = clamp(x0, -s, s) / s.
fn dynamic_threshold(x0: &mut ArrayD<f32>, ratio: f64, max: f64) {
    let mut abs: Vec<f32> = x0.iter().map(|v| v.abs()).collect();
    if abs.is_empty() {
        return;
    }
    abs.sort_by(f32::total_cmp);
    let pos = ratio * (abs.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let q = abs[lo] as f64 + (abs[hi] as f64 - abs[lo] as f64) * (pos - lo as f64);
    let s = q.clamp(1.0, max.max(1.0)) as f32;
    x0.mapv_inplace(|v| v.clamp(-s, s) / s);
}
