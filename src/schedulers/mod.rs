//! Noise schedulers built from `scheduler/scheduler_config.json`, matching
//! diffusers' `CogVideoXDDIMScheduler`, `DDIMInverseScheduler` and
//! `CogVideoXDPMScheduler`, plus the pipelines' dynamic CFG schedule.
//!
//! Coefficients are computed in f64 (f32 for the inverse scheduler, as
//! diffusers does) and rounded to the tensor's dtype when applied.

pub mod scheduling_ddim_cogvideox;
pub mod scheduling_ddim_inverse;
pub mod scheduling_dpm_cogvideox;

pub use scheduling_ddim_cogvideox::CogVideoXDDIMScheduler;
pub use scheduling_ddim_inverse::DDIMInverseScheduler;
pub use scheduling_dpm_cogvideox::CogVideoXDPMScheduler;

use candle_core::Tensor;
use serde::Deserialize;

use crate::error::{Error, Result};

fn default_train_steps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.00085
}
fn default_beta_end() -> f64 {
    0.012
}
fn default_beta_schedule() -> String {
    "scaled_linear".into()
}
fn default_true() -> bool {
    true
}
fn default_prediction() -> String {
    "v_prediction".into()
}
fn default_spacing() -> String {
    "trailing".into()
}
fn default_one() -> f64 {
    1.0
}

/// `scheduler/scheduler_config.json`, with the defaults of
/// `CogVideoXDDIMScheduler`. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "default_train_steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default)]
    pub clip_sample: bool,
    #[serde(default = "default_one")]
    pub clip_sample_range: f64,
    #[serde(default = "default_true")]
    pub set_alpha_to_one: bool,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default = "default_prediction")]
    pub prediction_type: String,
    #[serde(default = "default_spacing")]
    pub timestep_spacing: String,
    #[serde(default = "default_true")]
    pub rescale_betas_zero_snr: bool,
    #[serde(default = "default_one")]
    pub snr_shift_scale: f64,
}

impl SchedulerConfig {
    /// Rejects settings the CogVideoX models never use and this port does
    /// not implement, instead of silently computing something else.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.prediction_type != "v_prediction" {
            return Err(format!(
                "prediction_type `{}` is not supported (CogVideoX predicts v)",
                self.prediction_type
            ));
        }
        if !matches!(self.beta_schedule.as_str(), "scaled_linear" | "linear")
            && self.trained_betas.is_none()
        {
            return Err(format!(
                "beta_schedule `{}` is not supported",
                self.beta_schedule
            ));
        }
        if self.num_train_timesteps < 2 {
            return Err("num_train_timesteps must be at least 2".into());
        }
        Spacing::parse(&self.timestep_spacing).map(|_| ())
    }

    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let cfg: Self = crate::checkpoint::read_config(path)?;
        cfg.validate().map_err(|m| Error::bad_checkpoint(path, m))?;
        Ok(cfg)
    }

    /// Betas in f64 (`torch.linspace(..., dtype=float64)`).
    fn betas_f64(&self) -> Vec<f64> {
        let n = self.num_train_timesteps;
        if let Some(b) = &self.trained_betas {
            return b.clone();
        }
        if self.beta_schedule == "linear" {
            linspace_f64(self.beta_start, self.beta_end, n)
        } else {
            linspace_f64(self.beta_start.sqrt(), self.beta_end.sqrt(), n)
                .into_iter()
                .map(|b| b * b)
                .collect()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

impl Spacing {
    pub(crate) fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "linspace" => Ok(Spacing::Linspace),
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            other => Err(format!("timestep_spacing `{other}` is not supported")),
        }
    }
}

/// `torch.linspace` in f64 with ATen's symmetric evaluation.
pub(crate) fn linspace_f64(start: f64, end: f64, steps: usize) -> Vec<f64> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f64;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                start + step * i as f64
            } else {
                end - step * (steps - i - 1) as f64
            }
        })
        .collect()
}

/// `torch.linspace` in f32.
pub(crate) fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

/// Descending inference timesteps as the forward schedulers' `set_timesteps`.
pub(crate) fn forward_timesteps(cfg: &SchedulerConfig, n: usize) -> Result<Vec<usize>> {
    let train = cfg.num_train_timesteps;
    if n == 0 || n > train {
        return Err(Error::invalid(format!(
            "number of inference steps must be between 1 and {train}, got {n}"
        )));
    }
    let spacing = Spacing::parse(&cfg.timestep_spacing).map_err(Error::invalid)?;
    Ok(match spacing {
        Spacing::Linspace => linspace_f64(0.0, (train - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|t| t.round_ties_even() as usize)
            .collect(),
        Spacing::Leading => {
            let ratio = train / n;
            (0..n).rev().map(|i| i * ratio + cfg.steps_offset).collect()
        }
        Spacing::Trailing => trailing(train, n).into_iter().collect(),
    })
}

/// `np.round(np.arange(train, 0, -train/n)) - 1` (numpy rounds half to even).
pub(crate) fn trailing(train: usize, n: usize) -> Vec<usize> {
    let ratio = train as f64 / n as f64;
    let mut out = Vec::with_capacity(n);
    let mut k = 0usize;
    loop {
        let v = train as f64 - k as f64 * ratio;
        if v <= 0.0 {
            break;
        }
        out.push(v.round_ties_even() as usize - 1);
        k += 1;
    }
    out
}

/// The forward schedulers' cumulative alphas (f64): betas, cumulative
/// product, SNR shift, then zero-terminal-SNR rescaling.
pub(crate) fn forward_alphas_cumprod(cfg: &SchedulerConfig) -> Vec<f64> {
    let mut acc = 1.0f64;
    let mut abar: Vec<f64> = cfg
        .betas_f64()
        .into_iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc
        })
        .collect();
    let s = cfg.snr_shift_scale;
    for a in abar.iter_mut() {
        *a /= s + (1.0 - s) * *a;
    }
    if cfg.rescale_betas_zero_snr {
        let mut r: Vec<f64> = abar.iter().map(|a| a.sqrt()).collect();
        let (r0, rt) = (r[0], r[r.len() - 1]);
        let k = r0 / (r0 - rt);
        for x in r.iter_mut() {
            *x = (*x - rt) * k;
        }
        abar = r.into_iter().map(|x| x * x).collect();
    }
    abar
}

/// `x * a - y * b` with the coefficients rounded to the tensors' dtype, the
/// way torch applies f64 scalars to an f32 tensor.
pub(crate) fn lincomb(x: &Tensor, a: f64, y: &Tensor, b: f64) -> Result<Tensor> {
    Ok(((x * round_to(x, a))? - (y * round_to(y, b))?)?)
}

/// Rounds a scalar to the tensor's precision before it multiplies it.
pub(crate) fn round_to(t: &Tensor, c: f64) -> f64 {
    match t.dtype() {
        candle_core::DType::F64 => c,
        _ => c as f32 as f64,
    }
}

/// The guidance scale CogVideoX pipelines use when `use_dynamic_cfg` is on:
/// `1 + g * (1 - cos(pi * ((n - t) / n)^5)) / 2` with `t` the timestep value
/// (not the step index) and `n` the number of inference steps.
pub fn dynamic_cfg_scale(guidance_scale: f64, timestep: usize, num_inference_steps: usize) -> f64 {
    let n = num_inference_steps as f64;
    let x = (n - timestep as f64) / n;
    1.0 + guidance_scale * (1.0 - (std::f64::consts::PI * x.powf(5.0)).cos()) / 2.0
}

/// Classifier-free guidance: `uncond + w * (cond - uncond)`.
pub fn apply_guidance(uncond: &Tensor, cond: &Tensor, scale: f64) -> Result<Tensor> {
    let diff = (cond - uncond)?;
    Ok((uncond + (diff * round_to(uncond, scale))?)?)
}

/// The result of one scheduler step.
#[derive(Debug, Clone)]
pub struct StepOutput {
    pub prev_sample: Tensor,
    pub pred_original_sample: Tensor,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_cfg_reference_values() {
        // Values from the reference notes (n = 50, g = 6).
        let cases = [
            (999, 2.291487174551452),
            (979, 2.5435028667646318),
            (959, 6.974351832175483),
            (79, 1.0635523468092134),
            (19, 1.123397939968981),
        ];
        for (t, want) in cases {
            let got = dynamic_cfg_scale(6.0, t, 50);
            assert!((got - want).abs() < 1e-12, "t={t}: {got} vs {want}");
        }
    }

    #[test]
    fn trailing_spacing_rounds_half_to_even() {
        assert_eq!(trailing(1000, 4), vec![999, 749, 499, 249]);
        let t30 = trailing(1000, 30);
        assert_eq!(&t30[..4], &[999, 966, 932, 899]);
        assert_eq!(t30.len(), 30);
    }
}
