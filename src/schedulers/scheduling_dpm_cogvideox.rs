//! `CogVideoXDPMScheduler`: the SDE DPM-Solver++(2M) sampler the official
//! CogVideoX demo uses. It re-noises on every step; the noise is passed in
//! by the caller (see [`CogVideoXDPMScheduler::needs_noise`]) so a run can be
//! reproduced exactly, or against the reference with recorded draws.
//!
//! diffusers draws twice on middle steps and discards the first draw, and
//! multiplies the last step's draw by zero; here only the draw that affects
//! the result is asked for.

use candle_core::Tensor;

use super::{CogVideoXDDIMScheduler, SchedulerConfig, StepOutput, add_noise, lincomb, round_to};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct CogVideoXDPMScheduler {
    // Same tables, timesteps and stride rule as DDIM; only `step` differs.
    ddim: CogVideoXDDIMScheduler,
}

/// `ln(sqrt(a / (1 - a)))`, the half log-SNR; +-inf at the ends as in torch.
fn lambda(a: f64) -> f64 {
    (a / (1.0 - a)).sqrt().ln()
}

impl CogVideoXDPMScheduler {
    /// Fails with [`Error::InvalidArgument`] for a config that does not pass
    /// [`SchedulerConfig::validate`] (one read by [`SchedulerConfig::load`]
    /// always does).
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        Ok(Self {
            ddim: CogVideoXDDIMScheduler::new(cfg)?,
        })
    }

    pub fn alphas_cumprod(&self) -> &[f64] {
        self.ddim.alphas_cumprod()
    }

    /// As [`CogVideoXDDIMScheduler::set_timesteps`].
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        self.ddim.set_timesteps(num_inference_steps)
    }

    pub fn timesteps(&self) -> &[usize] {
        self.ddim.timesteps()
    }

    /// Whether the step from `t` uses fresh Gaussian noise: every step that
    /// does not land on a noise-free level (with `set_alpha_to_one` that is
    /// every step but the last).
    pub fn needs_noise(&self, t: usize) -> bool {
        self.ddim.prev_alpha(t) < 1.0
    }

    /// One step from `sample` at `t`. `old_x0` is the previous step's
    /// `pred_original_sample` and `t_back` its timestep (both `None` on the
    /// first step); `noise` is a standard normal draw shaped like `sample`,
    /// required when [`Self::needs_noise`] says so. The pipelines always
    /// pass what the schedule needs, so a missing or misshapen argument is
    /// reported as [`Error::Internal`].
    pub fn step(
        &self,
        model_output: &Tensor,
        old_x0: Option<&Tensor>,
        t: usize,
        t_back: Option<usize>,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let a_t = self.ddim.alpha("DPM", t)?;
        let a_p = self.ddim.prev_alpha(t);
        let x0 = lincomb(sample, a_t.sqrt(), model_output, (1.0 - a_t).sqrt())?;

        let h = lambda(a_p) - lambda(a_t);
        let m1 = ((1.0 - a_p) / (1.0 - a_t)).sqrt() * (-h).exp();
        let m2 = (-2.0 * h).exp_m1() * a_p.sqrt();
        let m_noise = (1.0 - a_p).sqrt() * (1.0 - (-2.0 * h).exp()).sqrt();

        // diffusers takes the second-order (2M) update unless this is the
        // first step or the step lands below timestep 0.
        let denoised = match old_x0 {
            Some(old) if !self.ddim.is_last(t) => {
                let tb = t_back.ok_or_else(|| {
                    Error::Internal(format!(
                        "DPM step at timestep {t} has a previous prediction but no previous timestep"
                    ))
                })?;
                let r = (lambda(a_t) - lambda(self.ddim.alpha("DPM", tb)?)) / h;
                let m3 = 1.0 + 1.0 / (2.0 * r);
                let m4 = 1.0 / (2.0 * r);
                lincomb(&x0, m3, old, m4)?
            }
            _ => x0.clone(),
        };
        let mut prev = lincomb(sample, m1, &denoised, m2)?;
        if self.needs_noise(t) {
            let noise = noise.ok_or_else(|| {
                Error::Internal(format!("DPM step at timestep {t} was given no noise draw"))
            })?;
            if noise.dims() != sample.dims() {
                return Err(Error::Internal(format!(
                    "DPM step at timestep {t}: noise shape {:?} differs from sample shape {:?}",
                    noise.dims(),
                    sample.dims()
                )));
            }
            let noise = noise.to_dtype(sample.dtype())?;
            prev = (prev + (noise * round_to(sample, m_noise))?)?;
        }
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    /// diffusers' `add_noise`: `sqrt(a) * original + sqrt(1 - a) * noise`
    /// with `a = alphas_cumprod[timestep]`, for video-to-video's start.
    pub fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: usize) -> Result<Tensor> {
        add_noise(self.ddim.alphas_cumprod(), original, noise, timestep)
    }
}
