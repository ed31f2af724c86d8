//! `CogVideoXDDIMScheduler`: deterministic DDIM (eta = 0) with
//! v-prediction, the scheduler the published checkpoints ship.

use candle_core::Tensor;

use super::{
    SchedulerConfig, StepOutput, add_noise, forward_alphas_cumprod, forward_timesteps, lincomb,
};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct CogVideoXDDIMScheduler {
    cfg: SchedulerConfig,
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
    timesteps: Vec<usize>,
    num_inference_steps: usize,
}

impl CogVideoXDDIMScheduler {
    /// Fails with [`Error::InvalidArgument`] for a config that does not pass
    /// [`SchedulerConfig::validate`] (one read by [`SchedulerConfig::load`]
    /// always does).
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.validate().map_err(Error::invalid)?;
        let alphas_cumprod = forward_alphas_cumprod(cfg);
        let final_alpha_cumprod = if cfg.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            cfg: cfg.clone(),
            alphas_cumprod,
            final_alpha_cumprod,
            timesteps: Vec::new(),
            num_inference_steps: 0,
        })
    }

    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// Schedules `num_inference_steps` descending timesteps; accepts
    /// `1..=cfg.max_steps()` (`num_train_timesteps` for the published
    /// configs) and refuses anything else with [`Error::InvalidArgument`].
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        self.timesteps = forward_timesteps(&self.cfg, num_inference_steps)?;
        self.num_inference_steps = num_inference_steps;
        Ok(())
    }

    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// Whether a step from `t` lands on the final (clean) level: diffusers
    /// steps to `t - train / n` and uses `final_alpha_cumprod` below 0.
    pub(crate) fn is_last(&self, t: usize) -> bool {
        t < self.stride()
    }

    fn stride(&self) -> usize {
        self.cfg.num_train_timesteps / self.num_inference_steps.max(1)
    }

    /// The noise level `t - train/n` that a step from `t` lands on
    /// (diffusers uses the integer stride, not the next scheduled value).
    pub(crate) fn prev_alpha(&self, t: usize) -> f64 {
        match t.checked_sub(self.stride()) {
            Some(p) => self.alphas_cumprod[p],
            None => self.final_alpha_cumprod,
        }
    }

    /// `alphas_cumprod[t]` for a step from `t`. The pipelines pass only
    /// timesteps from [`Self::timesteps`], so anything else is a bug.
    pub(crate) fn alpha(&self, what: &str, t: usize) -> Result<f64> {
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

    /// One DDIM step from `sample` at timestep `t` given the v-prediction.
    pub fn step(&self, model_output: &Tensor, t: usize, sample: &Tensor) -> Result<StepOutput> {
        let a_t = self.alpha("DDIM", t)?;
        let a_p = self.prev_alpha(t);
        let x0 = lincomb(sample, a_t.sqrt(), model_output, (1.0 - a_t).sqrt())?;
        let c1 = ((1.0 - a_p) / (1.0 - a_t)).sqrt();
        let c2 = a_p.sqrt() - a_t.sqrt() * c1;
        let prev = lincomb(sample, c1, &x0, -c2)?;
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    /// diffusers' `add_noise`: `sqrt(a) * original + sqrt(1 - a) * noise`
    /// with `a = alphas_cumprod[timestep]`, for video-to-video's start.
    pub fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: usize) -> Result<Tensor> {
        add_noise(&self.alphas_cumprod, original, noise, timestep)
    }
}
