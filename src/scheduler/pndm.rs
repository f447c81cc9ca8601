//! `PNDMScheduler` with `skip_prk_steps = True` (pseudo linear multistep,
//! PLMS), as diffusers implements it: SD 1.x's default scheduler. The
//! Runge–Kutta warm-up (`skip_prk_steps = False`) is not supported.
//!
//! PLMS calls the U-Net once more than there are steps: the second timestep is
//! repeated, and the second call redoes the first step with the average of the
//! two noise predictions.
use ndarray::ArrayD;

use super::config::{PredictionType, SchedulerConfig};
use super::{NoiseSource, Scheduler};
use crate::error::{Error, Result};

/// PLMS.
pub struct Pndm {
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    step_ratio: i64,
    prediction_type: PredictionType,
    /// diffusers' `counter`: U-Net outputs consumed so far.
    counter: usize,
    /// The last (up to four) noise predictions, oldest first.
    ets: Vec<ArrayD<f32>>,
    /// The sample the first step started from (redone by the second call).
    cur_sample: Option<ArrayD<f32>>,
}

impl Pndm {
    /// Prepares PLMS for `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        if config.prediction_type == PredictionType::Sample {
            return Err(Error::model("PNDM supports prediction_type epsilon or v_prediction only"));
        }
        let alphas_cumprod: Vec<f32> = config.alphas_cumprod().iter().map(|&a| a as f32).collect();
        // PNDMScheduler's own default is set_alpha_to_one = False.
        let final_alpha_cumprod = if config.extra_flag("set_alpha_to_one", false)? { 1.0 } else { alphas_cumprod[0] };
        // diffusers' `_timesteps`, ascending (same rule as DDIM's).
        // PNDM's default spacing is leading, like SchedulerConfig's.
        let mut ascending = config.discrete_timesteps(steps);
        ascending.reverse();
        // concat(_timesteps[:-1], _timesteps[-2:-1], _timesteps[-1:])[::-1]
        let n = ascending.len();
        let mut plms: Vec<f64> = ascending[..n - 1].to_vec();
        if n >= 2 {
            plms.push(ascending[n - 2]);
        }
        plms.push(ascending[n - 1]);
        plms.reverse();
        Ok(Self {
            timesteps: plms,
            alphas_cumprod,
            final_alpha_cumprod,
            step_ratio: (config.num_train_timesteps / steps) as i64,
            prediction_type: config.prediction_type,
            counter: 0,
            ets: Vec::with_capacity(4),
            cur_sample: None,
        })
    }

    /// PNDM paper eq. (9): x_{t-δ} from x_t and the (combined) noise estimate.
    fn prev_sample(&self, sample: &ArrayD<f32>, t: i64, prev: i64, model_output: &ArrayD<f32>) -> ArrayD<f32> {
        let a_t = self.alphas_cumprod[t as usize];
        let a_prev = if prev >= 0 { self.alphas_cumprod[prev as usize] } else { self.final_alpha_cumprod };
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        let diff = a_prev - a_t;
        let (sa, sb) = (a_t.sqrt(), b_t.sqrt());
        let v = self.prediction_type == PredictionType::VPrediction;
        let mut out = sample.clone();
        ndarray::Zip::from(&mut out).and(model_output).and(sample).for_each(|o, &m, &x| {
            let eps = if v { sa * m + sb * x } else { m };
            *o = sample_coeff * x - diff * eps / denom;
        });
        out
    }
}

impl Scheduler for Pndm {
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
        // diffusers' step_plms, driven by its counter like the original.
        let mut t = self.timesteps[index] as i64;
        let mut prev = t - self.step_ratio;
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.remove(0);
            }
            self.ets.push(model_output.clone());
        } else {
            prev = t;
            t += self.step_ratio;
        }
        let e = &self.ets;
        let k = e.len();
        let mut from = sample;
        let combined: ArrayD<f32> = if k == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            model_output.clone()
        } else if k == 1 && self.counter == 1 {
            let avg = (model_output + &e[0]) / 2.0;
            from = self.cur_sample.as_ref().ok_or_else(|| Error::internal("PNDM: missing first sample"))?;
            avg
        } else if k == 2 {
            (&e[1] * 3.0 - &e[0]) / 2.0
        } else if k == 3 {
            (&e[2] * 23.0 - &e[1] * 16.0 + &e[0] * 5.0) / 12.0
        } else {
            (&e[3] * 55.0 - &e[2] * 59.0 + &e[1] * 37.0 - &e[0] * 9.0) * (1.0f64 / 24.0) as f32
        };
        let out = self.prev_sample(from, t, prev, &combined);
        if self.counter == 1 {
            self.cur_sample = None;
        }
        self.counter += 1;
        Ok(out)
    }

    /// DDPM-style, at the timestep of call `index` (PNDM has no begin index:
    /// diffusers looks `alphas_cumprod` up by the timestep value).
    fn add_noise(&self, original: &ArrayD<f32>, noise: &ArrayD<f32>, index: usize) -> Result<ArrayD<f32>> {
        let a = self.alphas_cumprod[self.timesteps[index] as usize];
        Ok(super::add_noise_alpha(original, noise, a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::scheduler::test_configs::sd15;

    // Values printed from diffusers 0.39 PNDMScheduler.from_config(sd15).set_timesteps(n).
    #[test]
    fn timesteps_match_diffusers() {
        let t = |s: &Pndm| s.timesteps.iter().map(|&t| t as i64).collect::<Vec<_>>();
        assert_eq!(t(&Pndm::new(&sd15(serde_json::json!({})), 7).unwrap()), [853, 711, 711, 569, 427, 285, 143, 1]);
        let mut want25 = vec![961, 921];
        want25.extend((0..24).rev().map(|i| 1 + 40 * i));
        assert_eq!(t(&Pndm::new(&sd15(serde_json::json!({})), 25).unwrap()), want25);
        let lin = sd15(serde_json::json!({"timestep_spacing": "linspace"}));
        assert_eq!(t(&Pndm::new(&lin, 7).unwrap()), [999, 832, 832, 666, 500, 333, 166, 0]);
        assert_eq!(t(&Pndm::new(&sd15(serde_json::json!({})), 1).unwrap()), [1]);
    }
}
