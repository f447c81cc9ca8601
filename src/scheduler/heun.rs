//! `HeunDiscreteScheduler` (Karras et al. 2022, Algorithm 1 without churn), as
//! diffusers implements it with its default settings. Not supported:
//! Karras/exponential/beta sigmas.
//!
//! Heun calls the U-Net twice per step except the last (2·steps − 1 calls):
//! every timestep after the first is repeated, an Euler predictor followed by
//! the trapezoidal corrector.
use ndarray::ArrayD;

use super::config::{interp, PredictionType, SchedulerConfig, TimestepSpacing};
use super::lms::sigma_timesteps;
use super::{NoiseSource, Scheduler};
use crate::error::{Error, Result};

/// Heun's second-order method.
pub struct Heun {
    /// One entry per U-Net call.
    timesteps: Vec<f64>,
    /// One sigma per U-Net call plus the final 0.
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
    prediction_type: PredictionType,
    clip: Option<f32>,
    /// Between the predictor and the corrector: derivative, dt, starting sample.
    pending: Option<(ArrayD<f32>, f32, ArrayD<f32>)>,
}

impl Heun {
    /// Prepares Heun for `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        for key in ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"] {
            if config.extra_flag(key, false)? {
                return Err(Error::model(format!("Heun: `{key}` is not supported")));
            }
        }
        // HeunDiscreteScheduler has its own beta defaults (SD's).
        let mut config = config.clone();
        if config.extra_num("beta_start")?.is_none() {
            config.beta_start = 0.00085;
        }
        if config.extra_num("beta_end")?.is_none() {
            config.beta_end = 0.012;
        }
        let per_step = sigma_timesteps(&config, steps);
        let train = config.train_sigmas();
        let step_sigmas: Vec<f32> = per_step.iter().map(|&t| interp(&train, t) as f32).collect();
        // cat([x[:1], x[1:].repeat_interleave(2)]) for timesteps; the sigmas get a final 0.
        let mut timesteps = vec![per_step[0]];
        let mut sigmas = vec![step_sigmas[0]];
        for i in 1..per_step.len() {
            timesteps.extend([per_step[i], per_step[i]]);
            sigmas.extend([step_sigmas[i], step_sigmas[i]]);
        }
        sigmas.push(0.0);
        let max = sigmas.iter().cloned().fold(0.0f32, f32::max);
        let init_noise_sigma = match config.spacing_or(TimestepSpacing::Linspace) {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
        };
        let clip = config.extra_flag("clip_sample", false)?.then_some(config.clip_sample_range as f32);
        Ok(Self { timesteps, sigmas, init_noise_sigma, prediction_type: config.prediction_type, clip, pending: None })
    }
}

impl Scheduler for Heun {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f32 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &ArrayD<f32>, index: usize) -> ArrayD<f32> {
        let sigma = self.sigmas[index];
        let denom = (sigma * sigma + 1.0).sqrt();
        sample.mapv(|x| x / denom)
    }

    fn step(
        &mut self,
        model_output: &ArrayD<f32>,
        index: usize,
        sample: &ArrayD<f32>,
        _noise: &mut dyn NoiseSource,
    ) -> Result<ArrayD<f32>> {
        let first_order = self.pending.is_none();
        let (sigma, sigma_next) = if first_order {
            (self.sigmas[index], self.sigmas[index + 1])
        } else {
            (self.sigmas[index - 1], self.sigmas[index])
        };
        // The model saw the sample at sigma (predictor) or sigma_next (corrector).
        let sigma_input = if first_order { sigma } else { sigma_next };
        let prediction = self.prediction_type;
        let clip = self.clip;
        let mut derivative = sample.clone();
        ndarray::Zip::from(&mut derivative).and(model_output).and(sample).for_each(|d, &m, &x| {
            let s = sigma_input;
            let mut x0 = match prediction {
                PredictionType::Epsilon => x - s * m,
                PredictionType::VPrediction => m * (-s / (s * s + 1.0).sqrt()) + x / (s * s + 1.0),
                PredictionType::Sample => m,
            };
            if let Some(r) = clip {
                x0 = x0.clamp(-r, r);
            }
            *d = (x - x0) / s;
        });
        match self.pending.take() {
            None => {
                let dt = sigma_next - sigma;
                let out = sample + &derivative.mapv(|d| d * dt);
                self.pending = Some((derivative, dt, sample.clone()));
                Ok(out)
            }
            Some((prev_derivative, dt, start)) => {
                let mut out = start;
                ndarray::Zip::from(&mut out).and(&prev_derivative).and(&derivative).for_each(|o, &p, &d| {
                    *o += (p + d) / 2.0 * dt;
                });
                Ok(out)
            }
        }
    }

    fn add_noise(&self, original: &ArrayD<f32>, noise: &ArrayD<f32>, index: usize) -> Result<ArrayD<f32>> {
        Ok(super::add_noise_sigma(original, noise, self.sigmas[index]))
    }

    /// Every timestep but the first is called twice (predictor, corrector).
    fn order(&self) -> usize {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::scheduler::test_configs::{close, sd15};

    // Values printed from diffusers 0.39 HeunDiscreteScheduler.from_config(sd15).set_timesteps(n).
    #[test]
    fn timesteps_match_diffusers() {
        let s = Heun::new(&sd15(serde_json::json!({})), 7).unwrap();
        assert_eq!(
            s.timesteps,
            [853.0, 711.0, 711.0, 569.0, 569.0, 427.0, 427.0, 285.0, 285.0, 143.0, 143.0, 1.0, 1.0]
        );
        close(s.init_noise_sigma, 6.6463117599487305);
        let s = Heun::new(&sd15(serde_json::json!({})), 25).unwrap();
        let mut want = vec![961.0];
        for i in (0..24).rev() {
            want.extend([1.0 + 40.0 * i as f64; 2]);
        }
        assert_eq!(s.timesteps, want);
        close(s.init_noise_sigma, 11.718794822692871);
        let s = Heun::new(&sd15(serde_json::json!({"timestep_spacing": "linspace"})), 7).unwrap();
        assert_eq!(s.timesteps[..5], [999.0, 832.5, 832.5, 666.0, 666.0]);
        close(s.init_noise_sigma, 14.614646911621094);
        let s = Heun::new(&sd15(serde_json::json!({})), 4).unwrap();
        let want = [
            4.116698265075684,
            1.6236929893493652,
            1.6236929893493652,
            0.6983985900878906,
            0.6983985900878906,
            0.04131447896361351,
            0.04131447896361351,
            0.0,
        ];
        for (g, w) in s.sigmas.iter().zip(want) {
            assert!((*g as f64 - w).abs() <= 1e-6 * w, "{g} vs {w}");
        }
    }
}
