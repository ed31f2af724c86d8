//! `DDIMInverseScheduler` built from the forward scheduler's config, as the
//! CogVideo DDIM-inversion script does: DDIM run backwards from a clean
//! latent towards noise. Its tables are computed in f32 and it ignores
//! `snr_shift_scale`, like diffusers.

use candle_core::Tensor;

use super::{SchedulerConfig, Spacing, StepOutput, inverse_timesteps, linspace_f32};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct DDIMInverseScheduler {
    cfg: SchedulerConfig,
    alphas_cumprod: Vec<f32>,
    initial_alpha_cumprod: f32,
    timesteps: Vec<usize>,
    num_inference_steps: usize,
}

/// `rescale_zero_terminal_snr` on betas, in f32 like torch.
fn rescale_betas_zero_snr(betas: &[f32]) -> Vec<f32> {
    let abar = cumprod(&betas.iter().map(|b| 1.0 - b).collect::<Vec<_>>());
    let mut r: Vec<f32> = abar.iter().map(|a| a.sqrt()).collect();
    let (r0, rt) = (r[0], r[r.len() - 1]);
    let k = r0 / (r0 - rt);
    for x in r.iter_mut() {
        *x = (*x - rt) * k;
    }
    let abar: Vec<f32> = r.iter().map(|x| x * x).collect();
    let mut alphas = Vec::with_capacity(abar.len());
    alphas.push(abar[0]);
    alphas.extend(abar.windows(2).map(|w| w[1] / w[0]));
    alphas.into_iter().map(|a| 1.0 - a).collect()
}

/// torch's CPU cumprod accumulates in double and stores float.
fn cumprod(xs: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    xs.iter()
        .map(|&x| {
            acc *= x as f64;
            acc as f32
        })
        .collect()
}

/// The inverse scheduler's cumulative alphas (f32, as diffusers builds
/// them from the same config).
pub(crate) fn inverse_alphas_cumprod(cfg: &SchedulerConfig) -> Vec<f32> {
    let n = cfg.num_train_timesteps;
    let mut betas: Vec<f32> = if let Some(b) = &cfg.trained_betas {
        b.iter().map(|&x| x as f32).collect()
    } else if cfg.beta_schedule == "linear" {
        linspace_f32(cfg.beta_start as f32, cfg.beta_end as f32, n)
    } else {
        linspace_f32(cfg.beta_start.sqrt() as f32, cfg.beta_end.sqrt() as f32, n)
            .into_iter()
            .map(|b| b * b)
            .collect()
    };
    if cfg.rescale_betas_zero_snr {
        betas = rescale_betas_zero_snr(&betas);
    }
    cumprod(&betas.iter().map(|b| 1.0 - b).collect::<Vec<_>>())
}

impl DDIMInverseScheduler {
    /// Fails with [`Error::InvalidArgument`] for a config that does not pass
    /// [`SchedulerConfig::validate`] (one read by [`SchedulerConfig::load`]
    /// always does), and with [`Error::UnsupportedVariant`] for `linspace`
    /// spacing, which diffusers' inverse scheduler does not offer either.
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.validate().map_err(Error::invalid)?;
        if Spacing::parse(&cfg.timestep_spacing) == Ok(Spacing::Linspace) {
            return Err(Error::UnsupportedVariant(
                "DDIM inversion needs timestep_spacing `leading` or `trailing`; the checkpoint's scheduler uses `linspace`".into(),
            ));
        }
        let alphas_cumprod = inverse_alphas_cumprod(cfg);
        let initial_alpha_cumprod = if cfg.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            cfg: cfg.clone(),
            alphas_cumprod,
            initial_alpha_cumprod,
            timesteps: Vec::new(),
            num_inference_steps: 0,
        })
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Ascending timesteps (`trailing`: 19, 39, ..., 999 for 50 steps).
    /// Accepts `1..=cfg.max_steps()` steps (`num_train_timesteps` for the
    /// published configs).
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        self.timesteps = inverse_timesteps(&self.cfg, num_inference_steps)?;
        self.num_inference_steps = num_inference_steps;
        Ok(())
    }

    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// One inversion step: the model was evaluated at `t` on `sample`, which
    /// sits at the previous (lower) noise level; returns the latent at `t`.
    /// The pipelines pass only timesteps from [`Self::timesteps`]: anything
    /// else is a bug reported as [`Error::Internal`].
    pub fn step(&self, model_output: &Tensor, t: usize, sample: &Tensor) -> Result<StepOutput> {
        if self.num_inference_steps == 0 {
            return Err(Error::Internal(format!(
                "DDIM inversion step at timestep {t} before set_timesteps"
            )));
        }
        let train = self.cfg.num_train_timesteps;
        let a_to = *self.alphas_cumprod.get(t).ok_or_else(|| {
            Error::Internal(format!(
                "DDIM inversion step at timestep {t}, outside 0..={}",
                train - 1
            ))
        })?;
        let from = t
            .checked_sub(train / self.num_inference_steps)
            .map(|f| f.min(train - 1));
        let a_from = match from {
            Some(f) => self.alphas_cumprod[f],
            None => self.initial_alpha_cumprod,
        };
        let b_from = 1.0 - a_from;
        let (sa, sb) = (a_from.sqrt() as f64, b_from.sqrt() as f64);
        let x0 = ((sample * sa)? - (model_output * sb)?)?;
        let eps = ((model_output * sa)? + (sample * sb)?)?;
        let mut x0 = x0;
        if self.cfg.clip_sample {
            let r = self.cfg.clip_sample_range;
            x0 = x0.clamp(-r, r)?;
        }
        let dir = (eps * ((1.0 - a_to).sqrt() as f64))?;
        let prev = ((&x0 * (a_to.sqrt() as f64))? + dir)?;
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }
}
