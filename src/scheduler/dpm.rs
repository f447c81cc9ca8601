//! `DPMSolverMultistepScheduler` with `algorithm_type = "dpmsolver++"` and
//! `solver_order = 2` (DPM-Solver++(2M), Lu et al. 2022), as diffusers
//! implements it, optionally with Karras sigmas (`use_karras_sigmas`), and its
//! stochastic form `algorithm_type = "sde-dpmsolver++"` (DPM-Solver++(2M) SDE),
//! which draws one latent-sized block of standard normals from the
//! [`NoiseSource`] at every step (diffusers: `randn_tensor` per step, not the
//! Brownian tree of `DPMSolverSDEScheduler`).
//!
//! Supported from the config: `solver_type` midpoint/heun, `lower_order_final`,
//! `euler_at_final`, `final_sigmas_type` zero/sigma_min, `lambda_min_clipped`,
//! `sigma_min`/`sigma_max` (Karras), every prediction type. Not supported:
//! thresholding, `sde-dpmsolver`/`dpmsolver`, order 1/3, exponential/beta/Lu/flow sigmas.
use ndarray::ArrayD;

use super::config::{
    interp, karras_sigmas, round_half_even, sigma_to_t, PredictionType, SchedulerConfig,
};
use super::{LinearStep, NoiseSource, Scheduler};
use crate::error::{Error, Result};

/// DPM-Solver++(2M).
pub struct DpmSolverMultistep {
    timesteps: Vec<f64>,
    /// One sigma per step plus the final one.
    sigmas: Vec<f32>,
    prediction_type: PredictionType,
    heun: bool,
    /// `sde-dpmsolver++`: stochastic steps.
    sde: bool,
    lower_order_final: bool,
    euler_at_final: bool,
    final_zero: bool,
    /// The previous step's data prediction (x0).
    prev_x0: Option<ArrayD<f32>>,
    lower_order_nums: usize,
}

/// `alpha_t, sigma_t` of a sigma (`_sigma_to_alpha_sigma_t`), and `lambda_t`.
pub(super) fn alpha_sigma_lambda(sigma: f32) -> (f32, f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let s = sigma * alpha;
    (alpha, s, alpha.ln() - s.ln())
}

impl DpmSolverMultistep {
    /// Prepares DPM-Solver++(2M) for `steps` steps; `karras` picks Karras
    /// sigmas, `sde` the stochastic `sde-dpmsolver++` form.
    pub fn new(config: &SchedulerConfig, steps: usize, karras: bool, sde: bool) -> Result<Self> {
        if config.extra_flag("thresholding", false)? {
            return Err(Error::model("DPM-Solver++: thresholding is not supported"));
        }
        for key in ["use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas"] {
            if config.extra_flag(key, false)? {
                return Err(Error::model(format!("DPM-Solver++: `{key}` is not supported")));
            }
        }
        let heun = match config.extra_text("solver_type", "midpoint")?.as_str() {
            "heun" => true,
            // diffusers maps the UniPC/DEIS names to midpoint.
            "midpoint" | "logrho" | "bh1" | "bh2" => false,
            other => return Err(Error::model(format!("DPM-Solver++: solver_type {other:?} is not supported"))),
        };
        let final_zero = match config.extra_text("final_sigmas_type", "zero")?.as_str() {
            "zero" => true,
            "sigma_min" => false,
            other => return Err(Error::model(format!("DPM-Solver++: final_sigmas_type {other:?} is not supported"))),
        };
        let n = config.num_train_timesteps;
        let alphas_cumprod = config.alphas_cumprod();
        // lambda_min_clipped: searchsorted(flip(lambda_t), clipped) training steps are dropped at the end.
        let clipped_idx = match config.extra_num("lambda_min_clipped")? {
            None => 0,
            Some(clip) => alphas_cumprod
                .iter()
                .map(|&a| {
                    let a = a as f32;
                    a.sqrt().ln() - (1.0 - a).sqrt().ln()
                })
                .filter(|&l| (l as f64) < clip)
                .count(),
        };
        let last = n - clipped_idx;
        let mut timesteps = super::config::multistep_timesteps(config, steps, last);
        let train_sigmas = config.train_sigmas();
        let mut sigmas: Vec<f32> = if karras {
            let log_sigmas: Vec<f32> = train_sigmas.iter().map(|s| s.ln()).collect();
            let sigma_min = config.extra_num("sigma_min")?.unwrap_or(train_sigmas[0] as f64);
            let sigma_max = config.extra_num("sigma_max")?.unwrap_or(train_sigmas[n - 1] as f64);
            let ks = karras_sigmas(sigma_min, sigma_max, steps);
            timesteps = ks
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    if matches!(config.beta_schedule, super::config::BetaSchedule::SquaredCosCapV2) {
                        t.trunc() // int64 cast
                    } else {
                        round_half_even(t)
                    }
                })
                .collect();
            ks.iter().map(|&s| s as f32).collect()
        } else {
            timesteps.iter().map(|&t| interp(&train_sigmas, t) as f32).collect()
        };
        sigmas.push(if final_zero { 0.0 } else { train_sigmas[0] });
        Ok(Self {
            timesteps,
            sigmas,
            prediction_type: config.prediction_type,
            heun,
            sde,
            lower_order_final: config.extra_flag("lower_order_final", true)?,
            euler_at_final: config.extra_flag("euler_at_final", false)?,
            final_zero,
            prev_x0: None,
            lower_order_nums: 0,
        })
    }
}

impl Scheduler for DpmSolverMultistep {
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
        let count = self.timesteps.len();
        let lower_order_final =
            index == count - 1 && (self.euler_at_final || (self.lower_order_final && count < 15) || self.final_zero);

        // convert_model_output: the data prediction x0.
        let (alpha_s0, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[index]);
        let prediction = self.prediction_type;
        let mut x0 = sample.clone();
        ndarray::Zip::from(&mut x0).and(model_output).and(sample).for_each(|o, &m, &x| {
            *o = match prediction {
                PredictionType::Epsilon => (x - sigma_s0 * m) / alpha_s0,
                PredictionType::Sample => m,
                PredictionType::VPrediction => alpha_s0 * x - sigma_s0 * m,
            };
        });

        // sde-dpmsolver++ draws its noise at every step, the last one included.
        let noise = if self.sde { Some(noise.draw(sample.shape())?) } else { None };
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[index + 1]);
        let h = lambda_t - lambda_s0;
        let ratio = sigma_t / sigma_s0;
        let c0 = alpha_t * ((-h).exp() - 1.0);
        let mut out = sample.clone();
        let prev = self.prev_x0.take();
        let second = match prev {
            Some(m1) if self.lower_order_nums >= 1 && !lower_order_final => {
                let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[index - 1]);
                let r0 = (lambda_s0 - lambda_s1) / h;
                Some((m1, 1.0 / r0))
            }
            _ => None,
        };
        match (noise, second) {
            (None, Some((m1, inv_r0))) => {
                // multistep_dpm_solver_second_order_update
                let c1 = if self.heun { alpha_t * (((-h).exp() - 1.0) / h + 1.0) } else { 0.5 * c0 };
                let heun = self.heun;
                ndarray::Zip::from(&mut out).and(&x0).and(&m1).and(sample).for_each(|o, &d0, &m1, &x| {
                    let d1 = inv_r0 * (d0 - m1);
                    *o = if heun { ratio * x - c0 * d0 + c1 * d1 } else { ratio * x - c0 * d0 - c1 * d1 };
                });
            }
            (None, None) => {
                // dpm_solver_first_order_update
                ndarray::Zip::from(&mut out).and(&x0).and(sample).for_each(|o, &d0, &x| {
                    *o = ratio * x - c0 * d0;
                });
            }
            (Some(z), second) => {
                // The sde-dpmsolver++ updates (first and second order).
                let decay = ratio * (-h).exp();
                let e2 = 1.0 - (-2.0 * h).exp();
                let a = alpha_t * e2;
                let s = sigma_t * e2.sqrt();
                match second {
                    Some((m1, inv_r0)) => {
                        let c1 = if self.heun { alpha_t * (e2 / (-2.0 * h) + 1.0) } else { 0.5 * a };
                        ndarray::Zip::from(&mut out).and(&x0).and(&m1).and(sample).and(&z).for_each(
                            |o, &d0, &m1, &x, &z| {
                                let d1 = inv_r0 * (d0 - m1);
                                *o = decay * x + a * d0 + c1 * d1 + s * z;
                            },
                        );
                    }
                    None => {
                        ndarray::Zip::from(&mut out).and(&x0).and(sample).and(&z).for_each(|o, &d0, &x, &z| {
                            *o = decay * x + a * d0 + s * z;
                        });
                    }
                }
            }
        }
        if self.lower_order_nums < 2 {
            self.lower_order_nums += 1;
        }
        self.prev_x0 = Some(x0);
        Ok(out)
    }

    /// DPM-Solver++(2M) and its SDE form are linear in the sample, the data
    /// prediction, the previous data prediction and the step noise.
    fn linear_step(&self, index: usize, done: usize) -> Option<LinearStep> {
        let count = self.timesteps.len();
        let lower_order_final =
            index == count - 1 && (self.euler_at_final || (self.lower_order_final && count < 15) || self.final_zero);
        let (alpha_s0, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[index]);
        let x0 = match self.prediction_type {
            PredictionType::Epsilon => (1.0 / alpha_s0 as f64, (-sigma_s0 / alpha_s0) as f64),
            PredictionType::Sample => (0.0, 1.0),
            PredictionType::VPrediction => (alpha_s0 as f64, -sigma_s0 as f64),
        };
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[index + 1]);
        let h = lambda_t - lambda_s0;
        let ratio = sigma_t / sigma_s0;
        let c0 = alpha_t * ((-h).exp() - 1.0);
        // `step` uses the history once a step of this generation has run.
        let inv_r0 = (done >= 1 && !lower_order_final).then(|| {
            let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[index - 1]);
            1.0 / ((lambda_s0 - lambda_s1) / h)
        });
        // With d1 = inv_r0·(x0 − h), a term k·d1 is k·inv_r0 on x0 and −k·inv_r0 on h.
        let (sx, sd, hist, noise) = if !self.sde {
            match inv_r0 {
                Some(inv_r0) => {
                    let c1 = if self.heun { alpha_t * (((-h).exp() - 1.0) / h + 1.0) } else { 0.5 * c0 };
                    let k = if self.heun { c1 * inv_r0 } else { -c1 * inv_r0 };
                    (ratio as f64, (-c0 + k) as f64, -k as f64, 0.0)
                }
                None => (ratio as f64, -c0 as f64, 0.0, 0.0),
            }
        } else {
            let decay = ratio * (-h).exp();
            let e2 = 1.0 - (-2.0 * h).exp();
            let a = alpha_t * e2;
            let s = sigma_t * e2.sqrt();
            match inv_r0 {
                Some(inv_r0) => {
                    let c1 = if self.heun { alpha_t * (e2 / (-2.0 * h) + 1.0) } else { 0.5 * a };
                    let k = c1 * inv_r0;
                    (decay as f64, (a + k) as f64, -k as f64, s as f64)
                }
                None => (decay as f64, a as f64, 0.0, s as f64),
            }
        };
        Some(LinearStep::through_x0(x0, sx, sd, hist, noise, self.sde))
    }

    /// `alpha_t · x + sigma_t · n` at the sigma of call `index`
    /// (`_sigma_to_alpha_sigma_t`), as diffusers once `set_begin_index` ran.
    fn add_noise(&self, original: &ArrayD<f32>, noise: &ArrayD<f32>, index: usize) -> Result<ArrayD<f32>> {
        let (alpha_t, sigma_t, _) = alpha_sigma_lambda(self.sigmas[index]);
        Ok(ndarray::Zip::from(original).and(noise).map_collect(|&x, &n| alpha_t * x + sigma_t * n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::scheduler::test_configs::sd15;

    fn ts(s: &DpmSolverMultistep) -> Vec<i64> {
        s.timesteps.iter().map(|&t| t as i64).collect()
    }

    // Values printed from diffusers 0.39 DPMSolverMultistepScheduler.from_config(sd15, ...).set_timesteps(n).
    #[test]
    fn timesteps_match_diffusers() {
        let c = sd15(serde_json::json!({}));
        assert_eq!(ts(&DpmSolverMultistep::new(&c, 7, false, false).unwrap()), [876, 751, 626, 501, 376, 251, 126]);
        let want25: Vec<i64> = (0..25).map(|i| 951 - 38 * i).collect();
        assert_eq!(ts(&DpmSolverMultistep::new(&c, 25, false, false).unwrap()), want25);
        let lin = sd15(serde_json::json!({"timestep_spacing": "linspace"}));
        assert_eq!(ts(&DpmSolverMultistep::new(&lin, 7, false, false).unwrap()), [999, 856, 714, 571, 428, 285, 143]);
        let tr = sd15(serde_json::json!({"timestep_spacing": "trailing"}));
        assert_eq!(ts(&DpmSolverMultistep::new(&tr, 7, false, false).unwrap()), [999, 856, 713, 570, 428, 285, 142]);
    }

    #[test]
    fn karras_timesteps_and_sigmas_match_diffusers() {
        let c = sd15(serde_json::json!({}));
        let s = DpmSolverMultistep::new(&c, 7, true, false).unwrap();
        assert_eq!(ts(&s), [999, 868, 687, 427, 146, 18, 0]);
        let want = [
            14.614646911621094,
            7.094420433044434,
            3.1686110496520996,
            1.2741053104400635,
            0.44692090153694153,
            0.13030873239040375,
            0.02916753478348255,
            0.0,
        ];
        for (g, w) in s.sigmas.iter().zip(want) {
            assert!((*g as f64 - w).abs() <= 1e-6 * w, "{g} vs {w}");
        }
        let s = DpmSolverMultistep::new(&c, 25, true, false).unwrap();
        assert_eq!(
            ts(&s),
            [
                999, 970, 938, 905, 868, 829, 786, 739, 687, 630, 568, 500, 427, 352, 278, 207, 146, 96, 59, 34, 18, 9,
                4, 1, 0
            ]
        );
        let plain = DpmSolverMultistep::new(&c, 7, false, false).unwrap();
        assert_eq!(plain.sigmas[0] as f64, 7.371846675872803);
        assert_eq!(plain.sigmas[7], 0.0);
    }
}
