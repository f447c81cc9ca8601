//! `UniPCMultistepScheduler` (UniPC, Zhao et al. 2023) with its defaults:
//! `solver_order = 2`, `predict_x0 = True`, `solver_type = "bh2"`,
//! `lower_order_final`, `disable_corrector`, `final_sigmas_type` zero/sigma_min,
//! every prediction type except flow. Deterministic.
//!
//! Each step first corrects the previous step's prediction with the new model
//! output (UniC), then predicts the next sample (UniP). Not supported:
//! `solver_order` other than 2, `predict_x0 = False`, `solver_type = "bh1"`
//! (diffusers 0.39 returns NaN at its last step with zero final sigma),
//! thresholding,
//! Karras/exponential/beta/flow sigmas, dynamic shifting, `solver_p`.
use ndarray::ArrayD;

use super::config::{interp, PredictionType, SchedulerConfig};
use super::dpm::alpha_sigma_lambda;
use super::{NoiseSource, Scheduler};
use crate::error::{Error, Result};

/// UniPC (UniP-2 predictor, UniC corrector).
pub struct UniPc {
    timesteps: Vec<f64>,
    /// One sigma per step plus the final one.
    sigmas: Vec<f32>,
    prediction_type: PredictionType,
    lower_order_final: bool,
    disable_corrector: Vec<usize>,
    /// The data predictions (x0) of the last two steps, older first.
    model_outputs: [Option<ArrayD<f32>>; 2],
    /// The sample the last predictor started from (for the corrector).
    last_sample: Option<ArrayD<f32>>,
    this_order: usize,
    lower_order_nums: usize,
}

/// Why Kiln's UniPC cannot run this config, if it cannot.
pub(super) fn unsupported(config: &SchedulerConfig) -> Result<Option<String>> {
    if let Some(order) = config.extra_num("solver_order")? {
        if order != 2.0 {
            return Ok(Some(format!("solver_order {order} (only 2)")));
        }
    }
    for key in [
        "thresholding",
        "use_karras_sigmas",
        "use_exponential_sigmas",
        "use_beta_sigmas",
        "use_flow_sigmas",
        "use_dynamic_shifting",
    ] {
        if config.extra_flag(key, false)? {
            return Ok(Some(format!("`{key}`")));
        }
    }
    if !config.extra_flag("predict_x0", true)? {
        return Ok(Some("predict_x0 = false".into()));
    }
    match config.extra_text("solver_type", "bh2")?.as_str() {
        // diffusers maps the DPM-Solver names to bh2.
        "bh2" | "midpoint" | "heun" | "logrho" => {}
        other => return Ok(Some(format!("solver_type {other:?}"))),
    }
    match config.extra_text("final_sigmas_type", "zero")?.as_str() {
        "zero" | "sigma_min" => {}
        other => return Ok(Some(format!("final_sigmas_type {other:?}"))),
    }
    Ok(None)
}

/// Whether Kiln's UniPC runs this config as diffusers does.
pub(super) fn supports(config: &SchedulerConfig) -> Result<bool> {
    Ok(unsupported(config)?.is_none())
}

impl UniPc {
    /// Prepares UniPC for `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        if let Some(why) = unsupported(config)? {
            return Err(Error::model(format!("UniPC: {why} is not supported")));
        }
        let n = config.num_train_timesteps;
        let timesteps = super::config::multistep_timesteps(config, steps, n);
        let train_sigmas = config.train_sigmas();
        let mut sigmas: Vec<f32> = timesteps.iter().map(|&t| interp(&train_sigmas, t) as f32).collect();
        sigmas.push(match config.extra_text("final_sigmas_type", "zero")?.as_str() {
            "zero" => 0.0,
            _ => train_sigmas[0],
        });
        let disable_corrector = match config.raw.get("disable_corrector") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_u64()
                        .map(|x| x as usize)
                        .ok_or_else(|| Error::model("scheduler_config.json: `disable_corrector` must hold step indices"))
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(Error::model("scheduler_config.json: `disable_corrector` must be a list")),
        };
        Ok(Self {
            timesteps,
            sigmas,
            prediction_type: config.prediction_type,
            lower_order_final: config.extra_flag("lower_order_final", true)?,
            disable_corrector,
            model_outputs: [None, None],
            last_sample: None,
            this_order: 0,
            lower_order_nums: 0,
        })
    }

    /// `hh = -h`, `h_phi_1 = expm1(hh)` and `B_h` (bh2: `expm1(hh)`) of a
    /// step of log-SNR width `h`.
    fn coefficients(&self, h: f32) -> (f32, f32, f32) {
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        (hh, h_phi_1, h_phi_1)
    }

    /// `multistep_uni_p_bh_update`: from `x` at step `index` to step `index + 1`.
    fn predict(&self, x: &ArrayD<f32>, index: usize, order: usize) -> ArrayD<f32> {
        let m0 = self.model_outputs[1].as_ref().expect("model output stored");
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[index + 1]);
        let (_, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[index]);
        let h = lambda_t - lambda_s0;
        let (_, h_phi_1, b_h) = self.coefficients(h);
        let ratio = sigma_t / sigma_s0;
        let c0 = alpha_t * h_phi_1;
        let mut out = x.clone();
        match (order, &self.model_outputs[0]) {
            (2, Some(m1)) => {
                let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[index - 1]);
                let rk = (lambda_s1 - lambda_s0) / h;
                // rhos_p = [0.5] for order 2.
                let c1 = alpha_t * b_h * 0.5;
                ndarray::Zip::from(&mut out).and(m0).and(m1).for_each(|o, &m0, &m1| {
                    let d1 = (m1 - m0) / rk;
                    *o = (ratio * *o - c0 * m0) - c1 * d1;
                });
            }
            _ => {
                ndarray::Zip::from(&mut out).and(m0).for_each(|o, &m0| *o = ratio * *o - c0 * m0);
            }
        }
        out
    }

    /// `multistep_uni_c_bh_update`: corrects `this_sample` (at step `index`)
    /// with this step's data prediction `model_t`.
    fn correct(&self, model_t: &ArrayD<f32>, this_sample: &ArrayD<f32>, index: usize, order: usize) -> ArrayD<f32> {
        let x = self.last_sample.as_ref().expect("corrector has a last sample");
        let m0 = self.model_outputs[1].as_ref().expect("model output stored");
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[index]);
        let (_, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[index - 1]);
        let h = lambda_t - lambda_s0;
        let (hh, h_phi_1, b_h) = self.coefficients(h);
        let ratio = sigma_t / sigma_s0;
        let c0 = alpha_t * h_phi_1;
        let mut out = this_sample.clone();
        match (order, &self.model_outputs[0]) {
            (2, Some(mi)) => {
                let (_, _, lambda_si) = alpha_sigma_lambda(self.sigmas[index - 2]);
                let rk = (lambda_si - lambda_s0) / h;
                // b_i = h_phi_i · i! / B_h, then solve [[1, 1], [rk, 1]] · rhos = b.
                let h_phi_k1 = h_phi_1 / hh - 1.0;
                let b1 = h_phi_k1 / b_h;
                let h_phi_k2 = h_phi_k1 / hh - 0.5;
                let b2 = h_phi_k2 * 2.0 / b_h;
                let (rk64, b1, b2) = (rk as f64, b1 as f64, b2 as f64);
                let rho0 = (b1 - b2) / (1.0 - rk64);
                let rho1 = b1 - rho0;
                let (rho0, rho1) = (rho0 as f32, rho1 as f32);
                let c = alpha_t * b_h;
                ndarray::Zip::from(&mut out).and(x).and(m0).and(mi).and(model_t).for_each(|o, &x, &m0, &mi, &mt| {
                    let d1 = (mi - m0) / rk;
                    let x_t_ = ratio * x - c0 * m0;
                    *o = x_t_ - c * (rho0 * d1 + rho1 * (mt - m0));
                });
            }
            _ => {
                // rhos_c = [0.5] for order 1.
                let c = alpha_t * b_h;
                ndarray::Zip::from(&mut out).and(x).and(m0).and(model_t).for_each(|o, &x, &m0, &mt| {
                    let x_t_ = ratio * x - c0 * m0;
                    *o = x_t_ - c * (0.5 * (mt - m0));
                });
            }
        }
        out
    }
}

impl Scheduler for UniPc {
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
        // convert_model_output: the data prediction x0.
        let (alpha_s, sigma_s, _) = alpha_sigma_lambda(self.sigmas[index]);
        let prediction = self.prediction_type;
        let mut x0 = sample.clone();
        ndarray::Zip::from(&mut x0).and(model_output).and(sample).for_each(|o, &m, &x| {
            *o = match prediction {
                PredictionType::Epsilon => (x - sigma_s * m) / alpha_s,
                PredictionType::Sample => m,
                PredictionType::VPrediction => alpha_s * x - sigma_s * m,
            };
        });

        let use_corrector =
            index > 0 && !self.disable_corrector.contains(&(index - 1)) && self.last_sample.is_some();
        let sample = if use_corrector { self.correct(&x0, sample, index, self.this_order) } else { sample.clone() };

        self.model_outputs[0] = self.model_outputs[1].take();
        self.model_outputs[1] = Some(x0);

        let order = if self.lower_order_final { 2.min(self.timesteps.len() - index) } else { 2 };
        self.this_order = order.min(self.lower_order_nums + 1);
        let out = self.predict(&sample, index, self.this_order);
        self.last_sample = Some(sample);
        if self.lower_order_nums < 2 {
            self.lower_order_nums += 1;
        }
        Ok(out)
    }

    /// `alpha_t · x + sigma_t · n` at the sigma of call `index`, as DPM-Solver.
    fn add_noise(&self, original: &ArrayD<f32>, noise: &ArrayD<f32>, index: usize) -> Result<ArrayD<f32>> {
        let (alpha_t, sigma_t, _) = alpha_sigma_lambda(self.sigmas[index]);
        Ok(ndarray::Zip::from(original).and(noise).map_collect(|&x, &n| alpha_t * x + sigma_t * n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::test_configs::sd15;

    // Values printed from diffusers 0.39
    // UniPCMultistepScheduler.from_config(sd15, ...).set_timesteps(n).
    #[test]
    fn timesteps_and_sigmas_match_diffusers() {
        let cases: [(serde_json::Value, usize, &[f64], &[f64]); 4] = [
            (
                serde_json::json!({}),
                7,
                &[876.0, 751.0, 626.0, 501.0, 376.0, 251.0, 126.0],
                &[7.371846675872803, 4.116698265075684, 2.510922431945801, 1.6236929893493652, 1.0760315656661987, 0.6983985900878906, 0.4022183418273926, 0.0],
            ),
            (
                serde_json::json!({}),
                10,
                &[901.0, 811.0, 721.0, 631.0, 541.0, 451.0, 361.0, 271.0, 181.0, 91.0],
                &[8.390686988830566, 5.376337051391602, 3.6306543350219727, 2.557664632797241, 1.858561396598816, 1.376179575920105, 1.02392578125, 0.7515089511871338, 0.5269757509231567, 0.32353323698043823, 0.0],
            ),
            (
                serde_json::json!({"timestep_spacing": "linspace"}),
                10,
                &[999.0, 899.0, 799.0, 699.0, 599.0, 500.0, 400.0, 300.0, 200.0, 100.0],
                &[14.614646911621094, 8.30280590057373, 5.087765216827393, 3.321084499359131, 2.2764639854431152, 1.6182796955108643, 1.1643916368484497, 0.8327531814575195, 0.5716663599014282, 0.34393182396888733, 0.0],
            ),
            (
                serde_json::json!({"timestep_spacing": "trailing"}),
                7,
                &[999.0, 856.0, 713.0, 570.0, 428.0, 285.0, 142.0],
                &[14.614646911621094, 6.668572902679443, 3.5138795375823975, 2.054476737976074, 1.276235818862915, 0.7900615334510803, 0.43806231021881104, 0.0],
            ),
        ];
        for (extra, steps, ts, sigmas) in cases {
            let s = UniPc::new(&sd15(extra.clone()), steps).unwrap();
            assert_eq!(s.timesteps, ts, "{extra} {steps}");
            assert_eq!(s.sigmas.len(), sigmas.len());
            for (g, w) in s.sigmas.iter().zip(sigmas) {
                assert!((*g as f64 - w).abs() <= 1e-6 * w, "{extra}: sigma {g} vs {w}");
            }
        }
        assert!(UniPc::new(&sd15(serde_json::json!({"solver_order": 3})), 7).is_err());
        assert!(UniPc::new(&sd15(serde_json::json!({"predict_x0": false})), 7).is_err());
        assert!(UniPc::new(&sd15(serde_json::json!({"solver_type": "bh1"})), 7).is_err());
        assert!(UniPc::new(&sd15(serde_json::json!({"solver_type": "midpoint"})), 7).is_ok());
    }
}
