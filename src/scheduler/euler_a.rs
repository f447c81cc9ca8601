//! `EulerAncestralDiscreteScheduler` (Euler ancestral sampling, as in k-diffusion
//! `sample_euler_ancestral`), as diffusers implements it.
//!
//! Timesteps, sigmas, `init_noise_sigma` and input scaling are Euler's. Each
//! step moves to `sigma_down` and adds `sigma_up` times one fresh latent-sized
//! block of standard normals from the [`NoiseSource`] (drawn at every step,
//! the last one included, where `sigma_up` is 0 — as diffusers does).
use ndarray::ArrayD;

use super::config::{PredictionType, SchedulerConfig};
use super::euler::Euler;
use super::{LinearStep, NoiseSource, Scheduler};
use crate::error::{Error, Result};

/// Euler ancestral.
pub struct EulerAncestral {
    euler: Euler,
}

impl EulerAncestral {
    /// Prepares Euler ancestral for `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        if config.prediction_type == PredictionType::Sample {
            // diffusers raises NotImplementedError for it too.
            return Err(Error::model("Euler ancestral: prediction_type \"sample\" is not supported"));
        }
        Ok(Self { euler: Euler::new(config, steps)? })
    }
}

/// `(sigma_up, sigma_down)` of a step from `from` to `to` (float32, as torch).
fn ancestral_sigmas(from: f32, to: f32) -> (f32, f32) {
    let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
    let down = (to * to - up * up).sqrt();
    (up, down)
}

impl Scheduler for EulerAncestral {
    fn timesteps(&self) -> &[f64] {
        self.euler.timesteps()
    }

    fn init_noise_sigma(&self) -> f32 {
        self.euler.init_noise_sigma()
    }

    fn scale_model_input(&self, sample: &ArrayD<f32>, index: usize) -> ArrayD<f32> {
        self.euler.scale_model_input(sample, index)
    }

    fn input_scale(&self, index: usize) -> f32 {
        self.euler.input_scale(index)
    }

    fn linear_step(&self, index: usize, _done: usize) -> Option<LinearStep> {
        let sigma = self.euler.sigmas[index] as f32;
        let (sigma_up, sigma_down) = ancestral_sigmas(sigma, self.euler.sigmas[index + 1] as f32);
        let dt = (sigma_down - sigma) as f64;
        let x0 = super::euler::sigma_space_x0(self.euler.prediction_type, sigma);
        let r = dt / sigma as f64;
        // Noise drawn at every step, the last one included (sigma_up 0 there).
        Some(LinearStep::through_x0(x0, 1.0 + r, -r, 0.0, sigma_up as f64, true))
    }

    fn step(
        &mut self,
        model_output: &ArrayD<f32>,
        index: usize,
        sample: &ArrayD<f32>,
        noise: &mut dyn NoiseSource,
    ) -> Result<ArrayD<f32>> {
        let sigma = self.euler.sigmas[index] as f32;
        let sigma_to = self.euler.sigmas[index + 1] as f32;
        let (sigma_up, sigma_down) = ancestral_sigmas(sigma, sigma_to);
        let dt = sigma_down - sigma;
        let z = noise.draw(model_output.shape())?;
        let prediction = self.euler.prediction_type;
        let mut out = sample.clone();
        ndarray::Zip::from(&mut out).and(model_output).and(sample).and(&z).for_each(|o, &m, &x, &z| {
            let x0 = match prediction {
                PredictionType::VPrediction => m * (-sigma / (sigma * sigma + 1.0).sqrt()) + x / (sigma * sigma + 1.0),
                _ => x - sigma * m,
            };
            let derivative = (x - x0) / sigma;
            *o = (x + derivative * dt) + z * sigma_up;
        });
        Ok(out)
    }

    fn add_noise(&self, original: &ArrayD<f32>, noise: &ArrayD<f32>, index: usize) -> Result<ArrayD<f32>> {
        Ok(super::add_noise_sigma(original, noise, self.euler.sigmas[index] as f32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::test_configs::sd15;

    /// Config overrides, steps, timesteps, sigmas, init_noise_sigma.
    type Case = (serde_json::Value, usize, &'static [f64], &'static [f64], f64);

    // Values printed from diffusers 0.39
    // EulerAncestralDiscreteScheduler.from_config(sd15, ...).set_timesteps(n).
    #[test]
    fn timesteps_sigmas_and_init_sigma_match_diffusers() {
        let cases: [Case; 4] = [
            (
                serde_json::json!({}),
                7,
                &[853.0, 711.0, 569.0, 427.0, 285.0, 143.0, 1.0],
                &[6.570651531219482, 3.4854564666748047, 2.0473127365112305, 1.2720634937286377, 0.7900615334510803, 0.4403095841407776, 0.04131447896361351, 0.0],
                6.6463117599487305,
            ),
            (
                serde_json::json!({}),
                10,
                &[901.0, 801.0, 701.0, 601.0, 501.0, 401.0, 301.0, 201.0, 101.0, 1.0],
                &[8.390686988830566, 5.134433269500732, 3.3477649688720703, 2.2928547859191895, 1.6236929893493652, 1.1682164669036865, 0.8356532454490662, 0.574050784111023, 0.3461872935295105, 0.04131447896361351, 0.0],
                8.450066566467285,
            ),
            (
                serde_json::json!({"timestep_spacing": "linspace"}),
                7,
                &[999.0, 832.5, 666.0, 499.5, 333.0, 166.5, 0.0],
                &[14.614646911621094, 5.948918342590332, 2.9183084964752197, 1.6155834197998047, 0.9323583841323853, 0.49355348944664, 0.02916753478348255, 0.0],
                14.614646911621094,
            ),
            (
                serde_json::json!({"timestep_spacing": "trailing"}),
                7,
                &[999.0, 856.0, 713.0, 570.0, 428.0, 285.0, 142.0],
                &[14.614646911621094, 6.668572902679443, 3.5138795375823975, 2.054476737976074, 1.276235818862915, 0.7900615334510803, 0.43806231021881104, 0.0],
                14.614646911621094,
            ),
        ];
        for (extra, steps, ts, sigmas, init) in cases {
            let s = EulerAncestral::new(&sd15(extra.clone()), steps).unwrap();
            assert_eq!(s.timesteps(), ts, "{extra} {steps}");
            for (g, w) in s.euler.sigmas.iter().zip(sigmas) {
                assert!((g - w).abs() <= 1e-6 * w, "{extra}: sigma {g} vs {w}");
            }
            assert_eq!(s.euler.sigmas.len(), sigmas.len());
            assert!((s.init_noise_sigma() as f64 - init).abs() <= 1e-6 * init, "{extra}: init sigma");
        }
    }

    #[test]
    fn ancestral_split_keeps_the_variance() {
        let (up, down) = ancestral_sigmas(2.0, 1.0);
        assert!((up * up + down * down - 1.0).abs() < 1e-6);
        assert_eq!(ancestral_sigmas(3.0, 0.0), (0.0, 0.0));
    }
}
