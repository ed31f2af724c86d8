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
use scheduling_ddim_inverse::inverse_alphas_cumprod;
pub use scheduling_dpm_cogvideox::CogVideoXDPMScheduler;

use candle_core::Tensor;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::numerics::{Float, linspace};

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

/// Largest `num_train_timesteps` accepted. Published checkpoints use 1000;
/// the noise tables and the step range grow with it.
pub const MAX_TRAIN_TIMESTEPS: usize = 10_000;

/// The `snr_shift_scale` range accepted (CogVideoX uses 1 and 3); far
/// outside it the shifted schedule has no usable noise range left.
pub const SNR_SHIFT_SCALE_RANGE: std::ops::RangeInclusive<f64> = 0.01..=100.0;

impl SchedulerConfig {
    /// Rejects settings the CogVideoX models never use and this port does
    /// not implement, and values that would size or divide nonsensically,
    /// instead of silently computing something else. The message names the
    /// field, its value and the accepted range.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.prediction_type != "v_prediction" {
            return Err(format!(
                "prediction_type `{}` is not supported (CogVideoX predicts `v_prediction`)",
                self.prediction_type
            ));
        }
        let train = self.num_train_timesteps;
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&train) {
            return Err(format!(
                "num_train_timesteps = {train} is out of range; accepted 2..={MAX_TRAIN_TIMESTEPS}"
            ));
        }
        match &self.trained_betas {
            Some(betas) => {
                if betas.len() != train {
                    return Err(format!(
                        "trained_betas has {} values; num_train_timesteps = {train} needs as many",
                        betas.len()
                    ));
                }
                if let Some((i, b)) = betas
                    .iter()
                    .enumerate()
                    .find(|(_, b)| !(b.is_finite() && **b > 0.0 && **b < 1.0))
                {
                    return Err(format!(
                        "trained_betas[{i}] = {b:?} is out of range; accepted 0 < beta < 1"
                    ));
                }
            }
            None => {
                if !matches!(self.beta_schedule.as_str(), "scaled_linear" | "linear") {
                    return Err(format!(
                        "beta_schedule `{}` is not supported; accepted `scaled_linear`, `linear` or trained_betas",
                        self.beta_schedule
                    ));
                }
                let (b0, b1) = (self.beta_start, self.beta_end);
                if !(b0.is_finite() && b1.is_finite() && 0.0 < b0 && b0 <= b1 && b1 < 1.0) {
                    return Err(format!(
                        "beta_start = {b0:?}, beta_end = {b1:?} are out of range; accepted 0 < beta_start <= beta_end < 1"
                    ));
                }
            }
        }
        let s = self.snr_shift_scale;
        if !SNR_SHIFT_SCALE_RANGE.contains(&s) {
            return Err(format!(
                "snr_shift_scale = {s:?} is out of range; accepted {:?}..={:?}",
                SNR_SHIFT_SCALE_RANGE.start(),
                SNR_SHIFT_SCALE_RANGE.end()
            ));
        }
        let r = self.clip_sample_range;
        if self.clip_sample && !(r.is_finite() && r > 0.0) {
            return Err(format!(
                "clip_sample_range = {r:?} is out of range; accepted a finite value > 0"
            ));
        }
        if self.steps_offset >= train {
            return Err(format!(
                "steps_offset = {} is out of range; accepted 0..={}",
                self.steps_offset,
                train - 1
            ));
        }
        Spacing::parse(&self.timestep_spacing)?;
        // Tiny betas round `1 - beta` to 1 and leave the zero-SNR rescaling
        // a division by zero: check the tables the schedulers will use.
        let degenerate = |what: &str| {
            let source = match self.trained_betas {
                Some(_) => "trained_betas".to_string(),
                None => format!(
                    "beta_start = {:?}, beta_end = {:?}",
                    self.beta_start, self.beta_end
                ),
            };
            format!(
                "{source} give a degenerate {what} noise table; \
                 the betas must be large enough for the cumulative alphas to decrease"
            )
        };
        if !valid_table(forward_alphas_cumprod(self).into_iter()) {
            return Err(degenerate("forward"));
        }
        if !valid_table(inverse_alphas_cumprod(self).into_iter().map(f64::from)) {
            return Err(degenerate("inversion"));
        }
        Ok(())
    }

    /// Reads and validates `scheduler_config.json`; a bad value is a
    /// [`Error::BadCheckpoint`] naming the file and the field.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let cfg: Self = crate::checkpoint::read_config(path)?;
        cfg.validate().map_err(|m| Error::bad_checkpoint(path, m))?;
        Ok(cfg)
    }

    /// The largest step count `set_timesteps` accepts: valid counts are
    /// `1..=max_steps()`, which is `num_train_timesteps` except for
    /// `leading` spacing with a `steps_offset`, where larger counts would
    /// schedule timesteps past the table.
    pub fn max_steps(&self) -> usize {
        // Bounded as `validate` bounds it, so that an unchecked config
        // cannot make the scan below long.
        let train = self.num_train_timesteps.min(MAX_TRAIN_TIMESTEPS);
        match Spacing::parse(&self.timestep_spacing) {
            Ok(Spacing::Leading) => (1..=train)
                .take_while(|&n| ((n - 1) * (train / n)).saturating_add(self.steps_offset) < train)
                .last()
                .unwrap_or(0),
            _ => train,
        }
    }

    /// Checks a step count against [`Self::max_steps`].
    pub(crate) fn check_steps(&self, n: usize) -> Result<()> {
        let max = self.max_steps();
        if n == 0 || n > max {
            return Err(Error::invalid(format!(
                "steps must be between 1 and {max}, got {n}"
            )));
        }
        Ok(())
    }

    /// Betas in `T` (`torch.linspace(..., dtype=...)`): f64 for the
    /// forward schedulers, f32 for the inverse one, as in diffusers.
    pub(crate) fn betas<T: Float>(&self) -> Vec<T> {
        let n = self.num_train_timesteps;
        if let Some(b) = &self.trained_betas {
            return b.iter().map(|&x| T::from_f64(x)).collect();
        }
        if self.beta_schedule == "linear" {
            linspace(T::from_f64(self.beta_start), T::from_f64(self.beta_end), n)
        } else {
            linspace(
                T::from_f64(self.beta_start.sqrt()),
                T::from_f64(self.beta_end.sqrt()),
                n,
            )
            .into_iter()
            .map(|b| b * b)
            .collect()
        }
    }
}

/// A usable cumulative-alpha table: finite, non-negative and strictly
/// decreasing from below 1, so that no step divides by `1 - alpha = 0` or
/// by a zero log-SNR difference.
fn valid_table(table: impl Iterator<Item = f64>) -> bool {
    let mut prev = 1.0;
    table.into_iter().all(|a| {
        let ok = a.is_finite() && a >= 0.0 && a < prev;
        prev = a;
        ok
    })
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
            other => Err(format!(
                "timestep_spacing `{other}` is not supported; accepted `trailing`, `leading` or `linspace`"
            )),
        }
    }
}

/// Descending inference timesteps as the forward schedulers' `set_timesteps`
/// computes them with numpy; `n` must be within [`SchedulerConfig::max_steps`].
pub(crate) fn forward_timesteps(cfg: &SchedulerConfig, n: usize) -> Result<Vec<usize>> {
    cfg.check_steps(n)?;
    let train = cfg.num_train_timesteps;
    let spacing = Spacing::parse(&cfg.timestep_spacing).map_err(Error::Internal)?;
    let ts: Vec<i64> = match spacing {
        // `np.linspace(0, train - 1, n).round()[::-1]`
        Spacing::Linspace => np_linspace_from_zero((train - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|t| t.round_ties_even() as i64)
            .collect(),
        // `(np.arange(0, n) * (train // n)).round()[::-1] + steps_offset`
        Spacing::Leading => (0..n)
            .rev()
            .map(|i| (i * (train / n) + cfg.steps_offset) as i64)
            .collect(),
        Spacing::Trailing => trailing(train, n),
    };
    checked_timesteps(ts, train)
}

/// Ascending inversion timesteps as `DDIMInverseScheduler.set_timesteps`.
pub(crate) fn inverse_timesteps(cfg: &SchedulerConfig, n: usize) -> Result<Vec<usize>> {
    cfg.check_steps(n)?;
    let train = cfg.num_train_timesteps;
    let ts: Vec<i64> = match Spacing::parse(&cfg.timestep_spacing).map_err(Error::Internal)? {
        // `(np.arange(0, n) * (train // n)).round() + steps_offset`
        Spacing::Leading => (0..n)
            .map(|i| (i * (train / n) + cfg.steps_offset) as i64)
            .collect(),
        Spacing::Trailing => trailing(train, n).into_iter().rev().collect(),
        Spacing::Linspace => {
            return Err(Error::Internal(
                "DDIM inversion with `linspace` spacing, which DDIMInverseScheduler::new refuses"
                    .into(),
            ));
        }
    };
    checked_timesteps(ts, train)
}

/// Every scheduled timestep must index the noise tables: the arithmetic
/// above guarantees it for the step counts `check_steps` lets through.
fn checked_timesteps(ts: Vec<i64>, train: usize) -> Result<Vec<usize>> {
    ts.into_iter()
        .map(|t| {
            usize::try_from(t)
                .ok()
                .filter(|&t| t < train)
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "scheduled timestep {t} is outside 0..={}",
                        train - 1
                    ))
                })
        })
        .collect()
}

/// `np.linspace(0.0, stop, n)`: numpy evaluates `i * step` and sets the last
/// value to `stop` exactly (torch's linspace is symmetric, and differs).
fn np_linspace_from_zero(stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![0.0];
    }
    let step = stop / (n - 1) as f64;
    let mut out: Vec<f64> = (0..n).map(|i| i as f64 * step).collect();
    out[n - 1] = stop;
    out
}

/// `np.round(np.arange(train, 0, -train / n)) - 1`, the trailing spacing,
/// in numpy's arithmetic: arange fills `start + i * delta` with
/// `delta = (start + step) - start`, and rounds half to even. Its length,
/// `ceil(train / (train / n))`, is `n + 1` for 62 counts of 1..=1000 (61,
/// 103, ...): the extra value is a rounding residue of about 1e-13 that
/// diffusers turns into timestep -1, a 62nd step at t = -1 that indexes the
/// noise tables from the end (for inversion, a first step to pure noise).
/// We keep the `n` timesteps that were asked for.
pub(crate) fn trailing(train: usize, n: usize) -> Vec<i64> {
    let start = train as f64;
    let step = -(start / n as f64);
    let second = start + step;
    let delta = second - start;
    (0..n)
        .map(|i| {
            let v = match i {
                0 => start,
                1 => second,
                _ => start + i as f64 * delta,
            };
            v.round_ties_even() as i64 - 1
        })
        .collect()
}

/// The forward schedulers' cumulative alphas (f64): betas, cumulative
/// product, SNR shift, then zero-terminal-SNR rescaling.
pub(crate) fn forward_alphas_cumprod(cfg: &SchedulerConfig) -> Vec<f64> {
    let mut acc = 1.0f64;
    let mut abar: Vec<f64> = cfg
        .betas::<f64>()
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

/// What the DDIM scheduler and its inverse share: the cumulative alphas
/// (f64 forward, f32 inverse, as diffusers builds them), the level past the
/// table's start, the scheduled timesteps and the stride between the levels
/// a step joins.
#[derive(Debug, Clone)]
pub(crate) struct DdimTable<T> {
    pub cfg: SchedulerConfig,
    pub alphas_cumprod: Vec<T>,
    /// The level below timestep 0 (diffusers' `final_alpha_cumprod`, the
    /// inverse's `initial_alpha_cumprod`): 1 with `set_alpha_to_one`, else
    /// the first entry.
    pub edge_alpha: T,
    pub timesteps: Vec<usize>,
    pub num_inference_steps: usize,
}

impl<T: Float> DdimTable<T> {
    pub fn new(cfg: &SchedulerConfig, alphas_cumprod: Vec<T>) -> Self {
        let edge_alpha = if cfg.set_alpha_to_one {
            T::from_f64(1.0)
        } else {
            alphas_cumprod[0]
        };
        Self {
            cfg: cfg.clone(),
            alphas_cumprod,
            edge_alpha,
            timesteps: Vec::new(),
            num_inference_steps: 0,
        }
    }

    pub fn set_timesteps(&mut self, timesteps: Vec<usize>, num_inference_steps: usize) {
        self.timesteps = timesteps;
        self.num_inference_steps = num_inference_steps;
    }

    /// `train / n`: diffusers joins `t` with `t - stride`, not with the next
    /// scheduled value.
    pub fn stride(&self) -> usize {
        self.cfg.num_train_timesteps / self.num_inference_steps.max(1)
    }

    /// The level at `t - stride`, the edge level below 0.
    pub fn neighbour_alpha(&self, t: usize) -> T {
        match t.checked_sub(self.stride()) {
            Some(p) => self.alphas_cumprod[p],
            None => self.edge_alpha,
        }
    }

    /// `alphas_cumprod[t]` for a `what` step from `t`. The pipelines pass
    /// only scheduled timesteps, so anything else is a bug.
    pub fn alpha(&self, what: &str, t: usize) -> Result<T> {
        if self.num_inference_steps == 0 {
            return Err(Error::Internal(format!(
                "{what} step at timestep {t} before set_timesteps"
            )));
        }
        self.alphas_cumprod.get(t).copied().ok_or_else(|| {
            Error::Internal(format!(
                "{what} step at timestep {t}, outside 0..={}",
                self.alphas_cumprod.len() - 1
            ))
        })
    }
}

/// diffusers' `add_noise`: the table entry is cast to the sample's dtype
/// and both square roots are taken in that dtype, then
/// `sqrt(a) * original + sqrt(1 - a) * noise` (two products and a sum, each
/// rounded to the dtype). The scalars are computed on the CPU.
pub(crate) fn add_noise(
    alphas_cumprod: &[f64],
    original: &Tensor,
    noise: &Tensor,
    timestep: usize,
) -> Result<Tensor> {
    let a = *alphas_cumprod.get(timestep).ok_or_else(|| {
        Error::invalid(format!(
            "add_noise timestep {timestep} is out of range; accepted 0..={}",
            alphas_cumprod.len() - 1
        ))
    })?;
    if noise.dims() != original.dims() || noise.dtype() != original.dtype() {
        return Err(Error::invalid(format!(
            "add_noise noise is {:?} {:?}; it must match the sample, {:?} {:?}",
            noise.dtype(),
            noise.dims(),
            original.dtype(),
            original.dims()
        )));
    }
    let a = Tensor::new(a, &candle_core::Device::Cpu)?.to_dtype(original.dtype())?;
    let scalar =
        |t: Tensor| -> Result<f64> { Ok(t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?) };
    let sa = scalar(a.sqrt()?)?;
    let sb = scalar(a.affine(-1.0, 1.0)?.sqrt()?)?;
    Ok(((original * sa)? + (noise * sb)?)?)
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

    #[test]
    fn trailing_spacing_has_no_residue_step() {
        // numpy leaves 1000 - 19 * (1000 / 19) at about 1e-13; the old loop
        // scheduled it as a 20th timestep and wrapped below zero.
        for n in [19, 38, 61, 76, 87, 93, 99, 103] {
            let ts = trailing(1000, n);
            assert_eq!(ts.len(), n);
            assert!(ts.iter().all(|&t| (0..1000).contains(&t)), "{n}: {ts:?}");
        }
    }
}
