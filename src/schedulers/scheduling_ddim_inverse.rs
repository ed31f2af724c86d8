//! `DDIMInverseScheduler` built from the forward scheduler's config, as the
//! CogVideo DDIM-inversion script does: DDIM run backwards from a clean
//! latent towards noise. Its tables are computed in f32 and it ignores
//! `snr_shift_scale`, like diffusers.

use candle_core::Tensor;

use super::{DdimTable, SchedulerConfig, Spacing, StepOutput, inverse_timesteps};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct DDIMInverseScheduler {
    table: DdimTable<f32>,
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
    let mut betas: Vec<f32> = cfg.betas();
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
        Ok(Self {
            table: DdimTable::new(cfg, inverse_alphas_cumprod(cfg)),
        })
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.table.alphas_cumprod
    }

    /// Ascending timesteps (`trailing`: 19, 39, ..., 999 for 50 steps).
    /// Accepts `1..=cfg.max_steps()` steps (`num_train_timesteps` for the
    /// published configs).
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let timesteps = inverse_timesteps(&self.table.cfg, num_inference_steps)?;
        self.table.set_timesteps(timesteps, num_inference_steps);
        Ok(())
    }

    pub fn timesteps(&self) -> &[usize] {
        &self.table.timesteps
    }

    /// One inversion step: the model was evaluated at `t` on `sample`, which
    /// sits at the previous (lower) noise level; returns the latent at `t`.
    /// The pipelines pass only timesteps from [`Self::timesteps`]: anything
    /// else is a bug reported as [`Error::Internal`].
    pub fn step(&self, model_output: &Tensor, t: usize, sample: &Tensor) -> Result<StepOutput> {
        let a_to = self.table.alpha("DDIM inversion", t)?;
        // The level the sample sits at: the one a forward step from `t`
        // would land on.
        let a_from = self.table.neighbour_alpha(t);
        let b_from = 1.0 - a_from;
        let (sa, sb) = (a_from.sqrt() as f64, b_from.sqrt() as f64);
        let x0 = ((sample * sa)? - (model_output * sb)?)?;
        let eps = ((model_output * sa)? + (sample * sb)?)?;
        let mut x0 = x0;
        if self.table.cfg.clip_sample {
            let r = self.table.cfg.clip_sample_range;
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
