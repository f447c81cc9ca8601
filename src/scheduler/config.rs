//! `scheduler_config.json`: the fields the diffusers schedulers share.
use serde_json::Value;

use crate::error::{Error, Result};

/// How betas are laid out over the training timesteps.
#[derive(Debug, Clone, PartialEq)]
pub enum BetaSchedule {
    /// Evenly spaced betas.
    Linear,
    /// Evenly spaced square roots of betas (Stable Diffusion).
    ScaledLinear,
    /// The cosine schedule (`squaredcos_cap_v2`).
    SquaredCosCapV2,
    /// Betas given in the config.
    Trained(Vec<f64>),
}

/// What the U-Net predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    /// The noise (SD 1.x, SD 2.x-base).
    Epsilon,
    /// The velocity (SD 2.x 768).
    VPrediction,
    /// The clean sample.
    Sample,
}

/// How inference timesteps are picked from the training ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// `arange(0, n) * (N // n)` reversed, plus `steps_offset`.
    Leading,
    /// `arange(N, 0, -N/n).round() - 1`.
    Trailing,
    /// `linspace(0, N - 1, n)` reversed.
    Linspace,
}

/// The shared scheduler settings, with diffusers' defaults.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// `_class_name`, e.g. `PNDMScheduler`.
    pub class_name: Option<String>,
    /// Training timesteps (1000).
    pub num_train_timesteps: usize,
    /// Betas.
    pub beta_schedule: BetaSchedule,
    /// First beta.
    pub beta_start: f64,
    /// Last beta.
    pub beta_end: f64,
    /// What the U-Net predicts.
    pub prediction_type: PredictionType,
    /// Timestep spacing.
    pub timestep_spacing: TimestepSpacing,
    /// Added to leading timesteps (SD uses 1).
    pub steps_offset: usize,
    /// DDIM: final alpha_cumprod is 1 (else `alphas_cumprod[0]`).
    pub set_alpha_to_one: bool,
    /// Clamp the predicted clean sample.
    pub clip_sample: bool,
    /// Range of that clamp.
    pub clip_sample_range: f64,
    /// Rescale betas to zero terminal SNR.
    pub rescale_betas_zero_snr: bool,
    /// The whole config, for the fields only one scheduler reads.
    pub raw: Value,
}

impl SchedulerConfig {
    /// Parses a diffusers scheduler config; unknown fields are ignored.
    pub fn from_json(v: &Value) -> Result<Self> {
        let bad = |key: &str, what: &str| Error::model(format!("scheduler_config.json: `{key}` {what}"));
        let num = |key: &str, default: f64| -> Result<f64> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x.as_f64().ok_or_else(|| bad(key, "must be a number")),
            }
        };
        let flag = |key: &str, default: bool| -> Result<bool> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x.as_bool().ok_or_else(|| bad(key, "must be true or false")),
            }
        };
        let text = |key: &str, default: &str| -> Result<String> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default.to_string()),
                Some(x) => x.as_str().map(str::to_string).ok_or_else(|| bad(key, "must be a string")),
            }
        };
        let num_train_timesteps = num("num_train_timesteps", 1000.0)?;
        // Two at least: the sigma schedulers interpolate between neighbours.
        if !(2.0..=100_000.0).contains(&num_train_timesteps) || num_train_timesteps.fract() != 0.0 {
            return Err(bad("num_train_timesteps", &format!("is {num_train_timesteps}; it must be a whole number from 2 to 100000")));
        }
        let steps_offset = num("steps_offset", 0.0)?;
        if !(0.0..num_train_timesteps).contains(&steps_offset) || steps_offset.fract() != 0.0 {
            return Err(bad("steps_offset", &format!("is {steps_offset}; it must be a whole number below num_train_timesteps")));
        }
        let unit = |key: &str, default: f64| -> Result<f64> {
            let x = num(key, default)?;
            if (0.0..=1.0).contains(&x) { Ok(x) } else { Err(bad(key, &format!("is {x}; it must be within 0..=1"))) }
        };
        let (beta_start, beta_end) = (unit("beta_start", 0.0001)?, unit("beta_end", 0.02)?);
        let clip_sample_range = num("clip_sample_range", 1.0)?;
        if clip_sample_range.is_nan() || clip_sample_range <= 0.0 {
            return Err(bad("clip_sample_range", &format!("is {clip_sample_range}; it must be above 0")));
        }
        let trained = match v.get("trained_betas") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|x| {
                        x.as_f64()
                            .filter(|b| (0.0..=1.0).contains(b))
                            .ok_or_else(|| bad("trained_betas", "must hold numbers within 0..=1"))
                    })
                    .collect::<Result<Vec<f64>>>()?,
            ),
            Some(_) => return Err(bad("trained_betas", "must be a list")),
        };
        let beta_schedule = match trained {
            Some(b) => {
                if b.len() != num_train_timesteps as usize {
                    return Err(bad("trained_betas", "must have num_train_timesteps entries"));
                }
                BetaSchedule::Trained(b)
            }
            None => match text("beta_schedule", "linear")?.as_str() {
                "linear" => BetaSchedule::Linear,
                "scaled_linear" => BetaSchedule::ScaledLinear,
                "squaredcos_cap_v2" => BetaSchedule::SquaredCosCapV2,
                other => return Err(bad("beta_schedule", &format!("{other:?} is not supported"))),
            },
        };
        let prediction_type = match text("prediction_type", "epsilon")?.as_str() {
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            "sample" => PredictionType::Sample,
            other => return Err(bad("prediction_type", &format!("{other:?} is not supported"))),
        };
        let timestep_spacing = match text("timestep_spacing", "leading")?.as_str() {
            "leading" => TimestepSpacing::Leading,
            "trailing" => TimestepSpacing::Trailing,
            "linspace" => TimestepSpacing::Linspace,
            other => return Err(bad("timestep_spacing", &format!("{other:?} is not supported"))),
        };
        Ok(Self {
            class_name: v.get("_class_name").and_then(|x| x.as_str()).map(str::to_string),
            num_train_timesteps: num_train_timesteps as usize,
            beta_schedule,
            beta_start,
            beta_end,
            prediction_type,
            timestep_spacing,
            steps_offset: steps_offset as usize,
            set_alpha_to_one: flag("set_alpha_to_one", true)?,
            clip_sample: flag("clip_sample", true)?,
            clip_sample_range,
            rescale_betas_zero_snr: flag("rescale_betas_zero_snr", false)?,
            raw: v.clone(),
        })
    }

    /// A boolean field only some schedulers read, with that scheduler's default.
    pub(crate) fn extra_flag(&self, key: &str, default: bool) -> Result<bool> {
        match self.raw.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x
                .as_bool()
                .ok_or_else(|| Error::model(format!("scheduler_config.json: `{key}` must be true or false"))),
        }
    }

    /// A number field only some schedulers read (`None` when absent or null).
    /// Infinities written as strings (`"-inf"`, `"-Infinity"`: JSON has no
    /// literal for them, and DPM-Solver's `lambda_min_clipped` defaults to -inf)
    /// are accepted.
    pub(crate) fn extra_num(&self, key: &str) -> Result<Option<f64>> {
        match self.raw.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(t)) => match t.as_str() {
                "-inf" | "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
                "inf" | "Infinity" => Ok(Some(f64::INFINITY)),
                _ => Err(Error::model(format!("scheduler_config.json: `{key}` must be a number"))),
            },
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| Error::model(format!("scheduler_config.json: `{key}` must be a number"))),
        }
    }

    /// A string field only some schedulers read, with that scheduler's default.
    pub(crate) fn extra_text(&self, key: &str, default: &str) -> Result<String> {
        match self.raw.get(key) {
            None | Some(Value::Null) => Ok(default.to_string()),
            Some(x) => x
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::model(format!("scheduler_config.json: `{key}` must be a string"))),
        }
    }

    /// `timestep_spacing`, or `default` when the config leaves it out (the
    /// diffusers classes differ: DDIM/PNDM default to leading, the
    /// sigma-based ones to linspace).
    pub(crate) fn spacing_or(&self, default: TimestepSpacing) -> TimestepSpacing {
        match self.raw.get("timestep_spacing") {
            None | Some(Value::Null) => default,
            Some(_) => self.timestep_spacing,
        }
    }

    /// Training sigmas `sqrt((1 - ᾱ) / ᾱ)`, computed in f32 as torch does.
    pub(crate) fn train_sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod()
            .iter()
            .map(|&a| {
                let a = a as f32;
                ((1.0 - a) / a).sqrt()
            })
            .collect()
    }

    /// The training betas. diffusers computes them in float32; Kiln rounds
    /// through f32 at the same points so the schedules agree to the last bit
    /// that matters.
    pub fn betas(&self) -> Vec<f64> {
        let n = self.num_train_timesteps;
        // torch.linspace(a, b, n, dtype=float32) on the CPU: a float32 step,
        // each value one fused multiply-add from the nearer end.
        let linspace = |a: f64, b: f64| -> Vec<f32> {
            let (a, b) = (a as f32, b as f32);
            if n == 1 {
                return vec![a];
            }
            let step = (b - a) / (n - 1) as f32;
            (0..n)
                .map(|i| if i < n / 2 { step.mul_add(i as f32, a) } else { (-step).mul_add((n - 1 - i) as f32, b) })
                .collect()
        };
        let betas: Vec<f64> = match &self.beta_schedule {
            BetaSchedule::Linear => linspace(self.beta_start, self.beta_end).into_iter().map(|b| b as f64).collect(),
            BetaSchedule::ScaledLinear => {
                linspace(self.beta_start.sqrt(), self.beta_end.sqrt()).into_iter().map(|b| (b * b) as f64).collect()
            }
            BetaSchedule::SquaredCosCapV2 => {
                let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
                (0..n)
                    .map(|i| {
                        let t1 = i as f64 / n as f64;
                        let t2 = (i + 1) as f64 / n as f64;
                        ((1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)) as f32 as f64
                    })
                    .collect()
            }
            BetaSchedule::Trained(b) => b.iter().map(|&x| x as f32 as f64).collect(),
        };
        if self.rescale_betas_zero_snr {
            rescale_zero_terminal_snr(&betas)
        } else {
            betas
        }
    }

    /// Cumulative products of the f32 alphas (1 - beta). torch's CPU
    /// `cumprod` on float32 accumulates in double and rounds each entry to
    /// float32; so does Kiln.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        let mut acc = 1.0f64;
        let mut out: Vec<f64> = self
            .betas()
            .into_iter()
            .map(|b| {
                acc *= (1.0 - b as f32) as f64;
                acc as f32 as f64
            })
            .collect();
        if self.rescale_betas_zero_snr {
            // diffusers nudges the last value off zero so sigmas stay finite.
            if let Some(last) = out.last_mut() {
                if *last == 0.0 {
                    *last = 2f64.powi(-24);
                }
            }
        }
        out
    }

    /// Integer timesteps for `steps` steps, per `timestep_spacing` (DDIM-style).
    pub fn discrete_timesteps(&self, steps: usize) -> Vec<f64> {
        let n = self.num_train_timesteps;
        match self.timestep_spacing {
            TimestepSpacing::Leading => {
                let ratio = n / steps;
                (0..steps).rev().map(|i| (i * ratio + self.steps_offset) as f64).collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = n as f64 / steps as f64;
                // np.round(np.arange(N, 0, -ratio)) - 1
                (0..steps).map(|i| round_half_even(n as f64 - i as f64 * ratio) - 1.0).collect()
            }
            TimestepSpacing::Linspace => {
                (0..steps).rev().map(|i| round_half_even(linspace_at(0.0, (n - 1) as f64, steps, i))).collect()
            }
        }
    }
}

/// `np.interp(t, arange(len(ys)), ys)` for `t` in `[0, len - 1]`.
pub(crate) fn interp(ys: &[f32], t: f64) -> f64 {
    let n = ys.len();
    let lo = (t.floor().max(0.0) as usize).min(n - 1);
    let hi = (lo + 1).min(n - 1);
    let frac = t - lo as f64;
    ys[lo] as f64 + (ys[hi] as f64 - ys[lo] as f64) * frac
}

/// Karras et al. (2022) sigmas, rho = 7, from `sigma_max` down to `sigma_min`
/// (diffusers `_convert_to_karras`, in f64 like numpy).
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    (0..steps)
        .map(|i| (max_inv + linspace_at(0.0, 1.0, steps, i) * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// diffusers `_sigma_to_t`: the fractional training timestep of `sigma`,
/// interpolating log-sigmas linearly.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    // argmax of the cumsum of (dists >= 0): the last index at or below log_sigma, 0 if none.
    let last = log_sigmas.iter().rposition(|&l| log_sigma - l as f64 >= 0.0).unwrap_or(0);
    let low_idx = last.min(n - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx] as f64;
    let high = log_sigmas[high_idx] as f64;
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// Timesteps of the multistep solvers (DPM-Solver, UniPC): `last` is the
/// number of training steps in use (`num_train_timesteps`, fewer when DPM's
/// `lambda_min_clipped` drops some); each spacing as diffusers computes it,
/// linspace dropping its final point.
pub(crate) fn multistep_timesteps(config: &SchedulerConfig, steps: usize, last: usize) -> Vec<f64> {
    match config.spacing_or(TimestepSpacing::Linspace) {
        TimestepSpacing::Linspace => (0..steps)
            .map(|i| round_half_even(linspace_at(0.0, last as f64 - 1.0, steps + 1, steps - i)))
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = last / (steps + 1);
            (0..steps).map(|i| ((steps - i) * ratio + config.steps_offset) as f64).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = config.num_train_timesteps as f64 / steps as f64;
            (0..)
                .map(|i| last as f64 - i as f64 * ratio)
                .take_while(|&t| t > 0.0)
                .map(|t| round_half_even(t) - 1.0)
                .collect()
        }
    }
}

/// `np.linspace(a, b, count)[i]`.
pub(crate) fn linspace_at(a: f64, b: f64, count: usize, i: usize) -> f64 {
    if count == 1 {
        return a;
    }
    let step = (b - a) / (count - 1) as f64;
    if i == count - 1 {
        b
    } else {
        a + i as f64 * step
    }
}

/// numpy's `round` (half to even).
pub(crate) fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// diffusers' `rescale_zero_terminal_snr` (arXiv 2305.08891, Algorithm 1).
fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    let mut sqrt_ac: Vec<f64> = betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            f64::sqrt(acc)
        })
        .collect();
    let first = sqrt_ac[0];
    let last = *sqrt_ac.last().unwrap_or(&0.0);
    for v in sqrt_ac.iter_mut() {
        *v = (*v - last) * first / (first - last);
    }
    let ac: Vec<f64> = sqrt_ac.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(ac.len());
    for i in 0..ac.len() {
        let alpha = if i == 0 { ac[0] } else { ac[i] / ac[i - 1] };
        out.push(1.0 - alpha);
    }
    out
}
