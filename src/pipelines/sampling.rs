//! The one denoising loop shared by text-to-video, image-to-video, DDIM
//! inversion and prompt editing (diffusers' `CogVideoXPipeline.__call__`
//! step 8, `CogVideoXImageToVideoPipeline.__call__` and the CogVideo
//! DDIM-inversion script's `sample`). The pipelines differ only in what they
//! put in [`Denoise`].

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::hooks::{CacheConfig, StepCache};
use crate::models::embeddings::RotaryEmbedding;
use crate::models::transformers::{CogVideoXTransformer3DModel, ForwardOptions, TransformerLora};
use crate::noise::NoiseSource;
use crate::pipelines::progress::{Progress, Stage};
use crate::schedulers::{
    CogVideoXDDIMScheduler, CogVideoXDPMScheduler, DDIMInverseScheduler, apply_guidance,
    dynamic_cfg_scale,
};

/// A scheduler with its timesteps set.
pub(crate) enum Stepper {
    Ddim(CogVideoXDDIMScheduler),
    Dpm(CogVideoXDPMScheduler),
    Inverse(DDIMInverseScheduler),
}

impl Stepper {
    pub(crate) fn timesteps(&self) -> &[usize] {
        match self {
            Stepper::Ddim(s) => s.timesteps(),
            Stepper::Dpm(s) => s.timesteps(),
            Stepper::Inverse(s) => s.timesteps(),
        }
    }

    /// diffusers' `add_noise` of the forward schedulers (video-to-video).
    pub(crate) fn add_noise(&self, x: &Tensor, noise: &Tensor, t: usize) -> Result<Tensor> {
        match self {
            Stepper::Ddim(s) => s.add_noise(x, noise, t),
            Stepper::Dpm(s) => s.add_noise(x, noise, t),
            Stepper::Inverse(_) => Err(Error::Internal(
                "the inverse scheduler adds no noise".into(),
            )),
        }
    }
}

/// Text conditioning: the prompt embedding and, with classifier-free
/// guidance, the negative one.
pub(crate) struct Guidance {
    pub cond: Tensor,
    /// `None` runs the model once per step without guidance.
    pub uncond: Option<Tensor>,
    pub scale: f64,
    pub dynamic: bool,
}

pub(crate) struct Denoise<'a> {
    pub transformer: &'a CogVideoXTransformer3DModel,
    /// The LoRA adapters of the call, if any.
    pub lora: Option<&'a TransformerLora>,
    pub stepper: Stepper,
    pub guidance: Guidance,
    /// Image-to-video: `[1, F, 16, h, w]` conditioning latents appended on
    /// the channel axis of every model input.
    pub image_latents: Option<Tensor>,
    /// 1.5 image-to-video's `ofs` value.
    pub ofs: Option<f32>,
    pub rope: Option<RotaryEmbedding>,
    /// Editing: one reference latent per step, whose tokens every attention
    /// layer sees beside the sample's own.
    pub reference: Option<&'a [Tensor]>,
    /// Keep the latent after every step (inversion needs the trajectory).
    pub keep_trajectory: bool,
    /// Index of the first timestep to run: video-to-video and partial edits
    /// start part-way down the schedule. Like diffusers there, the run counts
    /// its own steps from there (DPM's first step has no previous one, and
    /// dynamic guidance sees only the steps that run).
    pub first_step: usize,
    pub stage: Stage,
    /// Step caching for this loop (`Off`: exact).
    pub cache: &'a CacheConfig,
}

pub(crate) struct Denoised {
    pub latents: Tensor,
    pub trajectory: Vec<Tensor>,
}

impl Denoise<'_> {
    /// Runs every step from `latents` (`[1, F, C, h, w]` in the model dtype).
    /// Draws DPM noise from `noise`; reports each step to `progress`, which
    /// may cancel between steps, and caches steps as `progress` says (its
    /// report is left there).
    pub fn run(
        self,
        mut latents: Tensor,
        noise: &mut dyn NoiseSource,
        progress: &mut Progress,
    ) -> Result<Denoised> {
        let all = self.stepper.timesteps();
        if self.first_step > all.len() {
            return Err(Error::Internal(format!(
                "first step {} of a {}-step schedule",
                self.first_step,
                all.len()
            )));
        }
        let timesteps = all[self.first_step..].to_vec();
        let n = timesteps.len();
        if let Some(r) = self.reference
            && r.len() != all.len()
        {
            return Err(Error::Internal(format!(
                "{} reference latents for {} steps",
                r.len(),
                all.len()
            )));
        }
        let dtype = self.transformer.dtype();
        let text = match &self.guidance.uncond {
            Some(u) => Tensor::cat(&[u, &self.guidance.cond], 0)?,
            None => self.guidance.cond.clone(),
        };
        let text = match self.reference {
            Some(_) => Tensor::cat(&[&text, &text], 0)?,
            None => text,
        };
        let copies = if self.guidance.uncond.is_some() { 2 } else { 1 };
        let image = match &self.image_latents {
            Some(img) => Some(Tensor::cat(&vec![img; copies], 0)?.to_dtype(dtype)?),
            None => None,
        };
        let mut cache = StepCache::new(
            self.cache,
            self.transformer.config().num_layers,
            copies == 2,
            self.reference.is_some(),
        )?;
        let mut trajectory = Vec::with_capacity(if self.keep_trajectory { n } else { 0 });
        let mut old_x0: Option<Tensor> = None;
        progress.report(self.stage, 0, n)?;
        for (i, &t) in timesteps.iter().enumerate() {
            let mut input = Tensor::cat(&vec![&latents; copies], 0)?;
            if let Some(img) = &image {
                input = Tensor::cat(&[&input, img], 2)?;
            }
            // The callback is polled between blocks too, with the counts
            // unchanged, so that a cancel lands within one block.
            let mut cancelled = false;
            let stage = self.stage;
            let mut poll = || -> candle_core::Result<()> {
                if progress.report(stage, i, n).is_err() {
                    cancelled = true;
                    candle_core::bail!("cancelled");
                }
                Ok(())
            };
            if let Some(c) = cache.as_mut() {
                c.begin_step(t);
            }
            let rows = input.dim(0)? * (1 + self.reference.is_some() as usize);
            let opts = ForwardOptions {
                ofs: self.ofs,
                rope: self.rope.as_ref(),
                reference: self.reference.is_some(),
                poll: Some(&mut poll),
                lora: self.lora,
                cache: cache.as_mut(),
            };
            let forward = match self.reference {
                Some(refs) => {
                    let r = refs[self.first_step + i].to_dtype(dtype)?;
                    let input = Tensor::cat(&[input, Tensor::cat(&vec![&r; copies], 0)?], 0)?;
                    let ts = vec![t as f32; input.dim(0)?];
                    self.transformer.forward_with(&input, &text, &ts, opts)
                }
                None => {
                    let ts = vec![t as f32; input.dim(0)?];
                    self.transformer.forward_with(&input, &text, &ts, opts)
                }
            };
            let v = match forward {
                Err(_) if cancelled => return Err(Error::Cancelled),
                v => v?,
            };
            if let Some(c) = cache.as_mut() {
                c.end_step(rows);
            }
            let v = v.to_dtype(DType::F32)?;
            let v = if copies == 2 {
                let scale = if self.guidance.dynamic {
                    dynamic_cfg_scale(self.guidance.scale, t, n)
                } else {
                    self.guidance.scale
                };
                apply_guidance(&v.narrow(0, 0, 1)?, &v.narrow(0, 1, 1)?, scale)?
            } else {
                v
            };
            let x = latents.to_dtype(DType::F32)?;
            let out = match &self.stepper {
                Stepper::Ddim(s) => s.step(&v, t, &x)?,
                Stepper::Inverse(s) => s.step(&v, t, &x)?,
                Stepper::Dpm(s) => {
                    let draw = if s.needs_noise(t) {
                        Some(noise.randn(x.dims(), x.device(), &format!("DPM step {i}"))?)
                    } else {
                        None
                    };
                    let back = i.checked_sub(1).map(|j| timesteps[j]);
                    s.step(&v, old_x0.as_ref(), t, back, &x, draw.as_ref())?
                }
            };
            old_x0 = Some(out.pred_original_sample);
            latents = out.prev_sample.to_dtype(dtype)?;
            if self.keep_trajectory {
                trajectory.push(latents.clone());
            }
            progress.report(self.stage, i + 1, n)?;
        }
        progress.set_cache_report(cache.map(StepCache::into_report));
        crate::device::end_of_call(latents.device())?;
        Ok(Denoised {
            latents,
            trajectory,
        })
    }
}

/// Steps of `steps` that a call at `strength` runs, as diffusers'
/// `get_timesteps`: `min(floor(steps * strength), steps)`, in f64 (the
/// last ones: the call starts that far from the end of the schedule).
pub(crate) fn strength_steps(steps: usize, strength: f64) -> Result<usize> {
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(Error::invalid(format!(
            "strength must be in (0, 1], got {strength}"
        )));
    }
    Ok(((steps as f64 * strength) as usize).min(steps))
}
