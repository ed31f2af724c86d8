//! `CogVideoXDDIMScheduler`: deterministic DDIM (eta = 0) with
//! v-prediction, the scheduler the published checkpoints ship.

use candle_core::Tensor;

use super::{
    DdimTable, SchedulerConfig, StepOutput, add_noise, forward_alphas_cumprod, forward_timesteps,
    lincomb,
};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct CogVideoXDDIMScheduler {
    table: DdimTable<f64>,
}

impl CogVideoXDDIMScheduler {
    /// Fails with [`Error::InvalidArgument`] for a config that does not pass
    /// [`SchedulerConfig::validate`] (one read by [`SchedulerConfig::load`]
    /// always does).
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.validate().map_err(Error::invalid)?;
        Ok(Self {
            table: DdimTable::new(cfg, forward_alphas_cumprod(cfg)),
        })
    }

    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.table.alphas_cumprod
    }

    /// Schedules `num_inference_steps` descending timesteps; accepts
    /// `1..=cfg.max_steps()` (`num_train_timesteps` for the published
    /// configs) and refuses anything else with [`Error::InvalidArgument`].
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let timesteps = forward_timesteps(&self.table.cfg, num_inference_steps)?;
        self.table.set_timesteps(timesteps, num_inference_steps);
        Ok(())
    }

    pub fn timesteps(&self) -> &[usize] {
        &self.table.timesteps
    }

    /// Whether a step from `t` lands on the final (clean) level: diffusers
    /// steps to `t - train / n` and uses `final_alpha_cumprod` below 0.
    pub(crate) fn is_last(&self, t: usize) -> bool {
        t < self.table.stride()
    }

    /// The noise level `t - train/n` that a step from `t` lands on.
    pub(crate) fn prev_alpha(&self, t: usize) -> f64 {
        self.table.neighbour_alpha(t)
    }

    /// `alphas_cumprod[t]` for a `what` step from `t`.
    pub(crate) fn alpha(&self, what: &str, t: usize) -> Result<f64> {
        self.table.alpha(what, t)
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
        add_noise(&self.table.alphas_cumprod, original, noise, timestep)
    }
}
