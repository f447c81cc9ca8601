//! `LCMScheduler` (Latent Consistency Models, Luo et al. 2023), as diffusers
//! implements it.
//!
//! Timesteps come from the distillation schedule, not from
//! `timestep_spacing`/`steps_offset` (which LCM ignores): with
//! `k = num_train_timesteps / original_inference_steps` (default 50 original
//! steps), the candidates are `k·i − 1` for `i = 1..=original_inference_steps`,
//! descending, and `steps` of them are taken at `floor(linspace(0, orig, steps,
//! endpoint=False))`. Each step predicts the consistency-boundary sample
//! `denoised = c_out·x0 + c_skip·x`; every step but the last re-noises it to
//! the next timestep with one latent-sized block of standard normals from the
//! [`NoiseSource`]. img2img either slices this schedule by the strength (as
//! diffusers' SD img2img and inpainting pipelines do with `LCMScheduler`) or,
//! for LCM-distilled U-Nets, builds a shorter one from the first
//! `int(original_inference_steps · strength)` candidates ([`Lcm::with_strength`],
//! `LatentConsistencyModelImg2ImgPipeline`). Not supported: thresholding,
//! custom timesteps.
use ndarray::ArrayD;

use super::config::{PredictionType, SchedulerConfig};
use super::{LinearStep, NoiseSource, Scheduler};
use crate::error::{Error, Result};

/// The LCM multi-step sampler.
pub struct Lcm {
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f32>,
    prediction_type: PredictionType,
    clip: Option<f32>,
    timestep_scaling: f32,
}

/// diffusers' `LCMScheduler.set_timesteps(steps, strength=strength)` timesteps.
fn lcm_timesteps(num_train_timesteps: usize, original_steps: usize, steps: usize, strength: f64) -> Result<Vec<f64>> {
    if original_steps == 0 || original_steps > num_train_timesteps {
        return Err(Error::model(format!(
            "LCM: original_inference_steps {original_steps} must be 1..={num_train_timesteps} (num_train_timesteps)"
        )));
    }
    if steps > original_steps {
        return Err(Error::invalid(format!(
            "LCM: steps ({steps}) cannot exceed the model's original_inference_steps ({original_steps})"
        )));
    }
    if !(0.0..=1.0).contains(&strength) {
        return Err(Error::invalid(format!("strength {strength} must be within 0..=1")));
    }
    let k = num_train_timesteps / original_steps;
    // The first int(original_steps · strength) candidates (all at strength 1).
    let kept = (original_steps as f64 * strength) as usize;
    if kept / steps.max(1) < 1 {
        return Err(Error::invalid(format!(
            "LCM img2img: strength {strength} keeps {kept} of the {original_steps} distillation timesteps, fewer than \
             the {steps} steps asked for; raise the strength or lower the steps"
        )));
    }
    // lcm_origin_timesteps reversed: kept·k − 1, …, k − 1.
    let origin: Vec<usize> = (1..=kept).rev().map(|i| i * k - 1).collect();
    Ok((0..steps)
        .map(|i| {
            // np.floor(np.linspace(0, len, num=steps, endpoint=False))
            let idx = (i as f64 * (kept as f64 / steps as f64)).floor() as usize;
            origin[idx] as f64
        })
        .collect())
}

impl Lcm {
    /// Prepares LCM for `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        Self::with_strength(config, steps, 1.0)
    }

    /// Prepares LCM for `steps` steps over the first `strength` of the
    /// distillation schedule (diffusers' `set_timesteps(steps, strength=…)`,
    /// what `LatentConsistencyModelImg2ImgPipeline` runs, every step of it).
    pub fn with_strength(config: &SchedulerConfig, steps: usize, strength: f64) -> Result<Self> {
        if config.extra_flag("thresholding", false)? {
            return Err(Error::model("LCM: thresholding is not supported"));
        }
        let original = config.extra_num("original_inference_steps")?.unwrap_or(50.0);
        if !(original >= 1.0 && original.fract() == 0.0) {
            return Err(Error::model("scheduler_config.json: `original_inference_steps` must be a positive integer"));
        }
        let timesteps = lcm_timesteps(config.num_train_timesteps, original as usize, steps, strength)?;
        Ok(Self {
            timesteps,
            alphas_cumprod: config.alphas_cumprod().iter().map(|&a| a as f32).collect(),
            prediction_type: config.prediction_type,
            clip: config.clip_sample.then_some(config.clip_sample_range as f32),
            timestep_scaling: config.extra_num("timestep_scaling")?.unwrap_or(10.0) as f32,
        })
    }

    /// `(c_skip, c_out)` of `get_scalings_for_boundary_condition_discrete`, in f32.
    fn boundary_scalings(&self, t: f64) -> (f32, f32) {
        let sigma_data = 0.5f32;
        let scaled = t as f32 * self.timestep_scaling;
        let c_skip = sigma_data * sigma_data / (scaled * scaled + sigma_data * sigma_data);
        let c_out = scaled / (scaled * scaled + sigma_data * sigma_data).sqrt();
        (c_skip, c_out)
    }
}

impl Scheduler for Lcm {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &ArrayD<f32>,
        index: usize,
        sample: &ArrayD<f32>,
        noise: &mut dyn NoiseSource,
    ) -> Result<ArrayD<f32>> {
        let t = self.timesteps[index];
        let last = index + 1 == self.timesteps.len();
        // At the last step prev_timestep is the timestep itself (only used for noise).
        let prev_t = if last { t } else { self.timesteps[index + 1] };
        let alpha_t = self.alphas_cumprod[t as usize];
        let alpha_prev = self.alphas_cumprod[prev_t as usize];
        let (sqrt_a, sqrt_b) = (alpha_t.sqrt(), (1.0 - alpha_t).sqrt());
        let (c_skip, c_out) = self.boundary_scalings(t);
        let prediction = self.prediction_type;
        let clip = self.clip;
        let mut denoised = sample.clone();
        ndarray::Zip::from(&mut denoised).and(model_output).and(sample).for_each(|o, &m, &x| {
            let mut x0 = match prediction {
                PredictionType::Epsilon => (x - sqrt_b * m) / sqrt_a,
                PredictionType::Sample => m,
                PredictionType::VPrediction => sqrt_a * x - sqrt_b * m,
            };
            if let Some(r) = clip {
                x0 = x0.clamp(-r, r);
            }
            *o = c_out * x0 + c_skip * x;
        });
        if last {
            return Ok(denoised);
        }
        let z = noise.draw(model_output.shape())?;
        let (a, b) = (alpha_prev.sqrt(), (1.0 - alpha_prev).sqrt());
        ndarray::Zip::from(&mut denoised).and(&z).for_each(|o, &z| *o = a * *o + b * z);
        Ok(denoised)
    }

    /// Linear without clipping: `denoised = c_out·x0 + c_skip·x`, then (but at
    /// the last step) `a·denoised + b·z`.
    fn linear_step(&self, index: usize, _done: usize) -> Option<LinearStep> {
        if self.clip.is_some() {
            return None;
        }
        let t = self.timesteps[index];
        let last = index + 1 == self.timesteps.len();
        let prev_t = if last { t } else { self.timesteps[index + 1] };
        let alpha_t = self.alphas_cumprod[t as usize];
        let alpha_prev = self.alphas_cumprod[prev_t as usize];
        let (sqrt_a, sqrt_b) = (alpha_t.sqrt() as f64, (1.0 - alpha_t).sqrt() as f64);
        let (c_skip, c_out) = self.boundary_scalings(t);
        let (c_skip, c_out) = (c_skip as f64, c_out as f64);
        let x0 = match self.prediction_type {
            PredictionType::Epsilon => (1.0 / sqrt_a, -sqrt_b / sqrt_a),
            PredictionType::Sample => (0.0, 1.0),
            PredictionType::VPrediction => (sqrt_a, -sqrt_b),
        };
        let (a, b) = if last { (1.0, 0.0) } else { (alpha_prev.sqrt() as f64, (1.0 - alpha_prev).sqrt() as f64) };
        Some(LinearStep::through_x0(x0, a * c_skip, a * c_out, 0.0, b, !last))
    }

    /// diffusers' `LCMScheduler.add_noise`: `√ᾱ_t·x + √(1−ᾱ_t)·ε` at this step's timestep.
    fn add_noise(&self, original: &ArrayD<f32>, noise: &ArrayD<f32>, index: usize) -> Result<ArrayD<f32>> {
        let t = *self.timesteps.get(index).ok_or_else(|| Error::internal(format!("LCM: no step {index}")))?;
        Ok(super::add_noise_alpha(original, noise, self.alphas_cumprod[t as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::test_configs::sd15;

    fn ts(extra: serde_json::Value, steps: usize) -> Vec<f64> {
        Lcm::new(&sd15(extra), steps).unwrap().timesteps
    }

    // Values printed from diffusers 0.39 LCMScheduler.from_config(sd15, ...).set_timesteps(n).
    #[test]
    fn timesteps_match_diffusers() {
        let none = serde_json::json!({});
        assert_eq!(ts(none.clone(), 1), [999.0]);
        assert_eq!(ts(none.clone(), 4), [999.0, 759.0, 499.0, 259.0]);
        assert_eq!(ts(none.clone(), 8), [999.0, 879.0, 759.0, 639.0, 499.0, 379.0, 259.0, 139.0]);
        let orig100 = serde_json::json!({"original_inference_steps": 100});
        assert_eq!(ts(orig100.clone(), 4), [999.0, 749.0, 499.0, 249.0]);
        assert_eq!(ts(orig100, 8), [999.0, 879.0, 749.0, 629.0, 499.0, 379.0, 249.0, 129.0]);
        // timestep_spacing is ignored by LCM.
        assert_eq!(ts(serde_json::json!({"timestep_spacing": "trailing"}), 4), [999.0, 759.0, 499.0, 259.0]);
        assert!(Lcm::new(&sd15(none.clone()), 51).is_err());
        // set_timesteps(n, strength=s), printed from diffusers 0.39 as above.
        let strength = |steps, s| Lcm::with_strength(&sd15(serde_json::json!({})), steps, s).unwrap().timesteps;
        assert_eq!(strength(4, 0.6), [599.0, 459.0, 299.0, 159.0]);
        assert_eq!(strength(6, 0.3), [299.0, 259.0, 199.0, 159.0, 99.0, 59.0]);
        // int(50 · 0.05) = 2 timesteps cannot give 4 steps.
        assert!(Lcm::with_strength(&sd15(none), 4, 0.05).is_err());
    }

    #[test]
    fn boundary_scalings_match_diffusers() {
        let s = Lcm::new(&sd15(serde_json::json!({})), 4).unwrap();
        for (t, skip) in [(999.0, 2.5050e-09), (759.0, 4.3397e-09), (499.0, 1.0040e-08), (259.0, 3.7268e-08)] {
            let (c_skip, c_out) = s.boundary_scalings(t);
            assert!((c_skip as f64 - skip).abs() <= 1e-4 * skip, "{t}: {c_skip}");
            assert!((c_out - 1.0).abs() <= 1e-6, "{t}: {c_out}");
        }
    }
}
