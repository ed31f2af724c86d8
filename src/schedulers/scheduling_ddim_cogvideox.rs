//! `CogVideoXDDIMScheduler`: deterministic DDIM (eta = 0) with
//! v-prediction, the scheduler the published checkpoints ship.

use candle_core::Tensor;

use super::{SchedulerConfig, StepOutput, forward_alphas_cumprod, forward_timesteps, lincomb};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct CogVideoXDDIMScheduler {
    cfg: SchedulerConfig,
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
    timesteps: Vec<usize>,
}

impl CogVideoXDDIMScheduler {
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
        })
    }

    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        self.timesteps = forward_timesteps(&self.cfg, num_inference_steps)?;
        Ok(())
    }

    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// The noise level `t - train/n` that a step from `t` lands on
    /// (diffusers uses the integer stride, not the next scheduled value).
    pub(crate) fn prev_alpha(&self, t: usize) -> f64 {
        let stride = self.cfg.num_train_timesteps / self.timesteps.len().max(1);
        match t.checked_sub(stride) {
            Some(p) => self.alphas_cumprod[p],
            None => self.final_alpha_cumprod,
        }
    }

    pub(crate) fn alpha(&self, t: usize) -> Result<f64> {
        if self.timesteps.is_empty() {
            return Err(Error::invalid("set_timesteps must be called before step"));
        }
        self.alphas_cumprod
            .get(t)
            .copied()
            .ok_or_else(|| Error::invalid(format!("timestep {t} is out of range")))
    }

    /// One DDIM step from `sample` at timestep `t` given the v-prediction.
    pub fn step(&self, model_output: &Tensor, t: usize, sample: &Tensor) -> Result<StepOutput> {
        let a_t = self.alpha(t)?;
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
}
