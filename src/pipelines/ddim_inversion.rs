//! Prompt editing by DDIM inversion, as the CogVideo repository's
//! `inference/ddim_inversion.py` does it: encode the clip, invert it towards
//! noise with the empty prompt keeping every intermediate latent, then
//! sample again with the edit prompt while every attention layer also sees
//! the inverted latent of the same noise level (reference attention).
//!
//! Departures from the script that cannot change its results: inversion runs
//! the model once per step instead of twice (its classifier-free guidance
//! compares two identical empty prompts), and the empty-prompt embedding is
//! computed once per pipeline.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::hooks::CacheConfig;
use crate::noise::NoiseSource;
use crate::pipelines::pipeline_cogvideox::guidance;
use crate::pipelines::sampling::{Denoise, Guidance, Stepper, strength_steps};
use crate::pipelines::{
    DecodeOptions, NoiseOptions, NoisePlan, Pipeline, Progress, Stage, VideoOutput,
};
use crate::schedulers::{CogVideoXDDIMScheduler, DDIMInverseScheduler};

/// Options for [`Pipeline::invert_video`].
#[derive(Debug, Clone)]
pub struct InvertOptions {
    /// Inversion steps; every later edit of this inversion uses the same.
    pub steps: usize,
    /// Encode the clip to its VAE posterior's mean instead of a sample:
    /// deterministic, and what the reference's cross-checks use.
    pub posterior_mean: bool,
    /// Draw order: the VAE posterior sample of the clip `[1, 16, F, h, w]`
    /// (none with `posterior_mean`).
    pub noise: NoiseOptions,
    /// Step caching: `Off` (the default) keeps the inversion exact, which
    /// every later edit relies on; another method only where asked.
    pub cache: CacheConfig,
}

impl Default for InvertOptions {
    fn default() -> Self {
        Self {
            steps: 50,
            posterior_mean: false,
            noise: NoiseOptions::seed(42),
            cache: CacheConfig::Off,
        }
    }
}

/// Options for [`Pipeline::edit_with_prompt`].
#[derive(Debug, Clone)]
pub struct EditOptions {
    pub prompt: String,
    pub negative_prompt: String,
    pub guidance_scale: f64,
    /// Start from the inverted latent instead of fresh noise (the script
    /// starts from fresh noise); keeps more of the source clip. Only
    /// meaningful at `strength` 1.
    pub start_from_inverted: bool,
    /// How much of the schedule the edit re-runs, in (0, 1]. 1 is the full
    /// reconstruction. Below 1 it runs the last `floor(steps * strength)`
    /// steps only (as diffusers' `strength` does for video-to-video), starting
    /// from the inverted trajectory's latent at that noise level, with the
    /// reference attention as usual: small strengths stay close to the
    /// source clip, and when no step is left the result is the source clip's
    /// own latents ([`Pipeline::decode_inversion`]).
    pub strength: f64,
    /// Draw order: the starting latents `[1, F, 16, h, w]` (only at
    /// `strength` 1 without `start_from_inverted`).
    pub noise: NoiseOptions,
    /// Step caching (fast mode); `Off`, the default, is exact.
    pub cache: CacheConfig,
}

impl Default for EditOptions {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            guidance_scale: 6.0,
            start_from_inverted: false,
            strength: 1.0,
            noise: NoiseOptions::seed(42),
            cache: CacheConfig::Off,
        }
    }
}

/// The result of inverting a clip: the whole trajectory from the clip's
/// latents to noise, reusable for any number of edits.
#[derive(Debug, Clone)]
pub struct Inversion {
    pipeline_id: u64,
    /// The clip's own latents `[1, F, 16, h, w]`, where inversion starts.
    source: Tensor,
    /// Latent after each inversion step, `[1, F, 16, h, w]`, from least to
    /// most noisy.
    trajectory: Vec<Tensor>,
    height: usize,
    width: usize,
    frames: usize,
}

impl Inversion {
    /// The latent after each inversion step, least to most noisy.
    pub fn trajectory(&self) -> &[Tensor] {
        &self.trajectory
    }

    pub fn steps(&self) -> usize {
        self.trajectory.len()
    }

    /// Size of the clip this inversion was made from: `(height, width, frames)`.
    pub fn video_size(&self) -> (usize, usize, usize) {
        (self.height, self.width, self.frames)
    }

    /// The clip's encoded latents `[1, F, 16, h, w]`, before inversion.
    pub fn source_latents(&self) -> &Tensor {
        &self.source
    }

    /// The latent at noise level `k` of `steps()`: the source at 0, the
    /// fully inverted latent at `steps()`.
    fn level(&self, k: usize) -> &Tensor {
        match k {
            0 => &self.source,
            k => &self.trajectory[k - 1],
        }
    }

    /// An inversion read back from a file by the pipeline `pipeline_id`
    /// (`inversion_file` checks the parts against that pipeline).
    pub(super) fn from_parts(
        pipeline_id: u64,
        source: Tensor,
        trajectory: Vec<Tensor>,
        (height, width, frames): (usize, usize, usize),
    ) -> Self {
        Self {
            pipeline_id,
            source,
            trajectory,
            height,
            width,
            frames,
        }
    }

    /// The fully inverted (noise-level) latent.
    pub fn inverted_latents(&self) -> &Tensor {
        &self.trajectory[self.trajectory.len() - 1]
    }
}

impl Pipeline {
    pub(super) fn ensure_invertible(&self) -> Result<()> {
        if self.variant.is_image_to_video() {
            return Err(Error::UnsupportedVariant(format!(
                "{} cannot edit clips by DDIM inversion: editing needs a text-to-video checkpoint (CogVideoX-5b or 1.5-5B)",
                self.variant
            )));
        }
        if !self.transformer_cfg.use_rotary_positional_embeddings {
            return Err(Error::UnsupportedVariant(format!(
                "{} cannot edit by DDIM inversion: it needs a model with rotary embeddings (CogVideoX-5b or 1.5-5B), as the reference script requires",
                self.variant
            )));
        }
        Ok(())
    }

    /// Inverts a clip `[1, 3, T, H, W]` in [-1, 1] (T = 4k+1; 1.5 models need
    /// an even latent frame count, T = 8k+5).
    pub fn invert_video(
        &self,
        video: &Tensor,
        opts: &InvertOptions,
        progress: &mut Progress,
    ) -> Result<Inversion> {
        let (b, c, frames, height, width) = video.dims5()?;
        if b != 1 || c != 3 {
            return Err(Error::invalid(format!(
                "video must be [1, 3, T, H, W], got {:?}",
                video.dims()
            )));
        }
        self.noise_plan_invert(height, width, frames, opts)?
            .check_supplied(opts.noise.supplied.len())?;
        self.check_fits_cached(height, width, frames, (false, false), &opts.cache)?;
        let (f, _) = self.latent_frames(frames);
        let (h, w) = (height / 8, width / 8);
        let mut noise = opts.noise.source();
        let z = self.encode_video(video, opts.posterior_mean, &mut noise, progress)?;
        let sf = self.vae.config().scaling_factor;
        let source = (z.permute((0, 2, 1, 3, 4))?.to_dtype(self.dtype)? * sf)?;

        let mut inverse = DDIMInverseScheduler::new(&self.scheduler)?;
        inverse.set_timesteps(opts.steps)?;
        let empty = self.text_encoder.get()?.empty_prompt_embedding()?;
        let transformer = self.transformer.get()?;
        let lora = self.lora_for_call(&transformer, progress)?;
        let out = Denoise {
            transformer: &transformer,
            lora: lora.as_deref(),
            stepper: Stepper::Inverse(inverse),
            guidance: Guidance {
                cond: empty,
                uncond: None,
                scale: 1.0,
                dynamic: false,
            },
            image_latents: None,
            ofs: None,
            rope: Self::rope(&transformer, h, w, f)?,
            reference: None,
            keep_trajectory: true,
            first_step: 0,
            stage: Stage::Invert,
            cache: &opts.cache,
        }
        .run(source.clone(), &mut noise, progress)?;
        Ok(Inversion {
            pipeline_id: self.id,
            source,
            trajectory: out.trajectory,
            height,
            width,
            frames,
        })
    }

    /// Checks an inversion request; the clip's draws.
    pub fn noise_plan_invert(
        &self,
        height: usize,
        width: usize,
        frames: usize,
        opts: &InvertOptions,
    ) -> Result<NoisePlan> {
        self.ensure_invertible()?;
        self.check_size(height, width, frames)?;
        self.check_steps(opts.steps)?;
        let (_, pad) = self.latent_frames(frames);
        if pad != 0 {
            return Err(Error::invalid(format!(
                "{} edits clips of 8k+5 frames (5, 13, ..., 77, 85) so that the latent frame count is even; got {frames}",
                self.variant
            )));
        }
        let mut plan = NoisePlan::default();
        if !opts.posterior_mean {
            plan.push(
                "VAE posterior sample",
                &self.posterior_shape(height, width, frames),
            );
        }
        Ok(plan)
    }

    pub(super) fn check_inversion(&self, inversion: &Inversion) -> Result<()> {
        self.ensure_invertible()?;
        if inversion.pipeline_id != self.id {
            return Err(Error::invalid(
                "this inversion was made by a different pipeline",
            ));
        }
        Ok(())
    }

    /// The random draws [`Self::edit_with_prompt`] makes.
    pub fn noise_plan_edit(&self, inversion: &Inversion, opts: &EditOptions) -> Result<NoisePlan> {
        self.check_inversion(inversion)?;
        let run = strength_steps(inversion.steps(), opts.strength)?;
        let mut plan = NoisePlan::default();
        if run == inversion.steps() && !opts.start_from_inverted {
            plan.push("initial latents", inversion.inverted_latents().dims());
        }
        Ok(plan)
    }

    /// Reconstructs an inverted clip under a new prompt: `[1, 3, T, H, W]`.
    pub fn edit_with_prompt(
        &self,
        inversion: &Inversion,
        opts: &EditOptions,
        progress: &mut Progress,
    ) -> Result<VideoOutput> {
        let latents = self.edit_latents(inversion, opts, progress)?;
        self.finish(latents, progress)
    }

    /// The sampling part of [`Self::edit_with_prompt`]: the final latents
    /// `[1, F, 16, h, w]`, for [`Self::decode_latents`].
    pub fn edit_latents(
        &self,
        inversion: &Inversion,
        opts: &EditOptions,
        progress: &mut Progress,
    ) -> Result<Tensor> {
        self.noise_plan_edit(inversion, opts)?
            .check_supplied(opts.noise.supplied.len())?;
        let n = inversion.steps();
        let run = strength_steps(inversion.steps(), opts.strength)?;
        let (height, width, frames) = inversion.video_size();
        let guided = opts.guidance_scale > 1.0;
        self.check_fits_cached(height, width, frames, (guided, true), &opts.cache)?;
        let (_, f, c, h, w) = inversion.inverted_latents().dims5()?;
        if run == 0 {
            return Ok(inversion.source.clone());
        }
        let (uncond, cond) = self.encode_text(&opts.prompt, &opts.negative_prompt, progress)?;
        let mut noise = opts.noise.source();
        let start = if run < n || opts.start_from_inverted {
            inversion.level(run).clone()
        } else {
            noise
                .randn(&[1, f, c, h, w], &self.device, "initial latents")?
                .to_dtype(self.dtype)?
        };
        let mut ddim = CogVideoXDDIMScheduler::new(&self.scheduler)?;
        ddim.set_timesteps(n)?;
        // Step i of the reconstruction sits at the noise level of inversion
        // step n-1-i.
        let reference: Vec<Tensor> = inversion.trajectory.iter().rev().cloned().collect();
        let transformer = self.transformer.get()?;
        let lora = self.lora_for_call(&transformer, progress)?;
        let out = Denoise {
            transformer: &transformer,
            lora: lora.as_deref(),
            stepper: Stepper::Ddim(ddim),
            guidance: guidance(uncond, cond, opts.guidance_scale, false),
            image_latents: None,
            ofs: None,
            rope: Self::rope(&transformer, h, w, f)?,
            reference: Some(&reference),
            keep_trajectory: false,
            first_step: n - run,
            stage: Stage::Denoise,
            cache: &opts.cache,
        }
        .run(start, &mut noise, progress)?;
        Ok(out.latents)
    }

    /// Decodes the clip's own latents, where the inversion started: what the
    /// model sees of the source (the VAE round trip), and what an edit at a
    /// strength too small to run any step returns.
    pub fn decode_inversion(
        &self,
        inversion: &Inversion,
        opts: &DecodeOptions,
        progress: &mut Progress,
    ) -> Result<Tensor> {
        self.check_inversion(inversion)?;
        self.decode_latents(&inversion.source, opts, progress)
    }
}
