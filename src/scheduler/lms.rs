//! `LMSDiscreteScheduler` (linear multistep in sigma space, order 4), as
//! diffusers implements it with its default settings. diffusers integrates the
//! Lagrange basis polynomials with scipy's `quad`; they are polynomials of
//! degree ≤ 3, so Kiln integrates them exactly with 4-point Gauss–Legendre.
//! Not supported: Karras/exponential/beta sigmas.
use ndarray::ArrayD;

use super::config::{interp, linspace_at, PredictionType, SchedulerConfig, TimestepSpacing};
use super::{NoiseSource, Scheduler};
use crate::error::{Error, Result};

/// The multistep order diffusers' pipelines use (`step(order=4)`).
const ORDER: usize = 4;

/// LMS.
pub struct Lms {
    timesteps: Vec<f64>,
    /// One sigma per step plus the final 0.
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
    prediction_type: PredictionType,
    /// The last (up to four) derivatives, oldest first.
    derivatives: Vec<ArrayD<f32>>,
}

/// Timesteps of the sigma-based diffusers schedulers (LMS, Heun, Euler):
/// float32, fractional with linspace spacing.
pub(crate) fn sigma_timesteps(config: &SchedulerConfig, steps: usize) -> Vec<f64> {
    let n = config.num_train_timesteps;
    match config.spacing_or(TimestepSpacing::Linspace) {
        TimestepSpacing::Linspace => {
            (0..steps).rev().map(|i| linspace_at(0.0, (n - 1) as f64, steps, i) as f32 as f64).collect()
        }
        TimestepSpacing::Leading => {
            let ratio = n / steps;
            (0..steps).rev().map(|i| (i * ratio) as f32 as f64 + config.steps_offset as f64).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = n as f64 / steps as f64;
            (0..)
                .map(|i| n as f64 - i as f64 * ratio)
                .take_while(|&t| t > 0.0)
                .map(|t| t.round_ties_even() as f32 as f64 - 1.0)
                .collect()
        }
    }
}

/// `∫_a^b p(τ) dτ` for a polynomial `p` of degree ≤ 7 (Gauss–Legendre, 4 nodes).
fn integrate(p: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    const NODES: [(f64, f64); 4] = [
        (-0.861_136_311_594_052_6, 0.347_854_845_137_453_86),
        (-0.339_981_043_584_856_26, 0.652_145_154_862_546_1),
        (0.339_981_043_584_856_26, 0.652_145_154_862_546_1),
        (0.861_136_311_594_052_6, 0.347_854_845_137_453_86),
    ];
    let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
    half * NODES.iter().map(|&(x, w)| w * p(mid + half * x)).sum::<f64>()
}

impl Lms {
    /// Prepares LMS for `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        for key in ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"] {
            if config.extra_flag(key, false)? {
                return Err(Error::model(format!("LMS: `{key}` is not supported")));
            }
        }
        let timesteps = sigma_timesteps(config, steps);
        let train = config.train_sigmas();
        let mut sigmas: Vec<f32> = timesteps.iter().map(|&t| interp(&train, t) as f32).collect();
        sigmas.push(0.0);
        let max = sigmas.iter().cloned().fold(0.0f32, f32::max);
        let init_noise_sigma = match config.spacing_or(TimestepSpacing::Linspace) {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
        };
        Ok(Self {
            timesteps,
            sigmas,
            init_noise_sigma,
            prediction_type: config.prediction_type,
            derivatives: Vec::new(),
        })
    }

    /// diffusers `get_lms_coefficient(order, t, current)`: the integral over
    /// [σ_t, σ_{t+1}] of the Lagrange basis polynomial of σ_{t-current}.
    fn coefficient(&self, order: usize, t: usize, current: usize) -> f64 {
        let s = |i: usize| self.sigmas[i] as f64;
        let basis = |tau: f64| {
            (0..order)
                .filter(|&k| k != current)
                .map(|k| (tau - s(t - k)) / (s(t - current) - s(t - k)))
                .product::<f64>()
        };
        integrate(basis, s(t), s(t + 1))
    }
}

impl Scheduler for Lms {
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
        let sigma = self.sigmas[index];
        let prediction = self.prediction_type;
        let mut derivative = sample.clone();
        ndarray::Zip::from(&mut derivative).and(model_output).and(sample).for_each(|d, &m, &x| {
            let x0 = match prediction {
                PredictionType::Epsilon => x - sigma * m,
                PredictionType::VPrediction => m * (-sigma / (sigma * sigma + 1.0).sqrt()) + x / (sigma * sigma + 1.0),
                PredictionType::Sample => m,
            };
            *d = (x - x0) / sigma;
        });
        self.derivatives.push(derivative);
        if self.derivatives.len() > ORDER {
            self.derivatives.remove(0);
        }
        let order = (index + 1).min(ORDER);
        let mut out = sample.clone();
        // prev = sample + Σ coeff_k · derivative_{latest - k}, summed in order k = 0, 1, ...
        let mut acc: Option<ArrayD<f32>> = None;
        for (k, d) in self.derivatives.iter().rev().take(order).enumerate() {
            let c = self.coefficient(order, index, k) as f32;
            let term = d.mapv(|v| c * v);
            acc = Some(match acc {
                None => term,
                Some(a) => a + term,
            });
        }
        if let Some(a) = acc {
            out += &a;
        }
        Ok(out)
    }

    fn add_noise(&self, original: &ArrayD<f32>, noise: &ArrayD<f32>, index: usize) -> Result<ArrayD<f32>> {
        Ok(super::add_noise_sigma(original, noise, self.sigmas[index]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::scheduler::test_configs::{close, sd15};

    // Values printed from diffusers 0.39 LMSDiscreteScheduler.from_config(sd15).set_timesteps(n).
    #[test]
    fn timesteps_match_diffusers() {
        let s = Lms::new(&sd15(serde_json::json!({})), 7).unwrap();
        assert_eq!(s.timesteps, [853.0, 711.0, 569.0, 427.0, 285.0, 143.0, 1.0]);
        close(s.init_noise_sigma, 6.6463117599487305);
        let s = Lms::new(&sd15(serde_json::json!({})), 25).unwrap();
        let want: Vec<f64> = (0..25).rev().map(|i| 1.0 + 40.0 * i as f64).collect();
        assert_eq!(s.timesteps, want);
        close(s.init_noise_sigma, 11.718794822692871);
        let s = Lms::new(&sd15(serde_json::json!({"timestep_spacing": "linspace"})), 7).unwrap();
        assert_eq!(s.timesteps, [999.0, 832.5, 666.0, 499.5, 333.0, 166.5, 0.0]);
        close(s.init_noise_sigma, 14.614646911621094);
    }

    // diffusers' scipy-integrated get_lms_coefficient(order, t, k), 7 steps.
    #[test]
    fn coefficients_match_diffusers() {
        let s = Lms::new(&sd15(serde_json::json!({})), 7).unwrap();
        let want4 = [-0.7417540063524223, 0.32841261627570245, -0.073047441002505, 0.004386831157459077];
        for (k, w) in want4.iter().enumerate() {
            let g = s.coefficient(4, 3, k);
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1e-3), "order 4, k {k}: {g} vs {w}");
        }
        let want2 = [-1.7733344600408645, 0.3351906983614707];
        for (k, w) in want2.iter().enumerate() {
            let g = s.coefficient(2, 1, k);
            assert!((g - w).abs() <= 1e-6 * w.abs(), "order 2, k {k}: {g} vs {w}");
        }
        // order 1 is Euler: the coefficient is the sigma step.
        assert!((s.coefficient(1, 0, 0) - (s.sigmas[1] as f64 - s.sigmas[0] as f64)).abs() < 1e-12);
    }
}
