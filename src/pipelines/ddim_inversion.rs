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
use crate::noise::NoiseSource;
use crate::pipelines::pipeline_cogvideox::guidance;
use crate::pipelines::sampling::{Denoise, Guidance, Stepper};
use crate::pipelines::{NoiseOptions, Pipeline, Progress, Stage, VideoOutput};
use crate::schedulers::{CogVideoXDDIMScheduler, DDIMInverseScheduler};

/// Options for [`Pipeline::invert_video`].
#[derive(Debug, Clone)]
pub struct InvertOptions {
    /// Inversion steps; every later edit of this inversion uses the same.
    pub steps: usize,
    /// Draw order: the VAE posterior sample of the clip `[1, 16, F, h, w]`.
    pub noise: NoiseOptions,
}

impl Default for InvertOptions {
    fn default() -> Self {
        Self {
            steps: 50,
            noise: NoiseOptions::seed(42),
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
    /// starts from fresh noise); keeps more of the source clip.
    pub start_from_inverted: bool,
    /// Draw order: the starting latents `[1, F, 16, h, w]` (unless
    /// `start_from_inverted`).
    pub noise: NoiseOptions,
}

impl Default for EditOptions {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            guidance_scale: 6.0,
            start_from_inverted: false,
            noise: NoiseOptions::seed(42),
        }
    }
}

/// The result of inverting a clip: the whole trajectory from the clip's
/// latents to noise, reusable for any number of edits.
#[derive(Debug, Clone)]
pub struct Inversion {
    pipeline_id: u64,
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

    /// The fully inverted (noise-level) latent.
    pub fn inverted_latents(&self) -> &Tensor {
        &self.trajectory[self.trajectory.len() - 1]
    }
}

impl Pipeline {
    fn ensure_invertible(&self) -> Result<()> {
        self.variant.ensure_text_to_video()?;
        if !self.transformer.config().use_rotary_positional_embeddings {
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
        self.ensure_invertible()?;
        let (b, c, frames, height, width) = video.dims5()?;
        if b != 1 || c != 3 {
            return Err(Error::invalid(format!(
                "video must be [1, 3, T, H, W], got {:?}",
                video.dims()
            )));
        }
        self.check_size(height, width, frames)?;
        let (f, pad) = self.latent_frames(frames);
        if pad != 0 {
            return Err(Error::invalid(format!(
                "{} edits clips of 8k+5 frames (5, 13, ..., 77, 85) so that the latent frame count is even; got {frames}",
                self.variant
            )));
        }
        let (h, w) = (height / 8, width / 8);
        let mut noise = opts.noise.source();
        let z = self.encode_video(video, &mut noise, progress)?;
        let sf = self.vae.config().scaling_factor;
        let latents = (z.permute((0, 2, 1, 3, 4))?.to_dtype(self.dtype)? * sf)?;

        let mut inverse = DDIMInverseScheduler::new(&self.scheduler)?;
        inverse.set_timesteps(opts.steps)?;
        let empty = self.text_encoder.empty_prompt_embedding()?;
        let out = Denoise {
            transformer: &self.transformer,
            stepper: Stepper::Inverse(inverse),
            guidance: Guidance {
                cond: empty,
                uncond: None,
                scale: 1.0,
                dynamic: false,
            },
            image_latents: None,
            ofs: None,
            rope: self.rope(h, w, f)?,
            reference: None,
            keep_trajectory: true,
            stage: Stage::Invert,
        }
        .run(latents, &mut noise, progress)?;
        Ok(Inversion {
            pipeline_id: self.id,
            trajectory: out.trajectory,
            height,
            width,
            frames,
        })
    }

    /// Reconstructs an inverted clip under a new prompt: `[1, 3, T, H, W]`.
    pub fn edit_with_prompt(
        &self,
        inversion: &Inversion,
        opts: &EditOptions,
        progress: &mut Progress,
    ) -> Result<VideoOutput> {
        self.ensure_invertible()?;
        if inversion.pipeline_id != self.id {
            return Err(Error::invalid(
                "this inversion was made by a different pipeline",
            ));
        }
        let inv = inversion.inverted_latents();
        let (_, f, _, h, w) = inv.dims5()?;
        let (uncond, cond) = self.encode_text(&opts.prompt, &opts.negative_prompt, progress)?;
        let mut noise = opts.noise.source();
        let start = if opts.start_from_inverted {
            inv.clone()
        } else {
            noise
                .randn(&[1, f, 16, h, w], &self.device, "initial latents")?
                .to_dtype(self.dtype)?
        };
        let mut ddim = CogVideoXDDIMScheduler::new(&self.scheduler)?;
        ddim.set_timesteps(inversion.steps())?;
        // Step i of the reconstruction sits at the noise level of inversion
        // step steps-1-i.
        let reference: Vec<Tensor> = inversion.trajectory.iter().rev().cloned().collect();
        let out = Denoise {
            transformer: &self.transformer,
            stepper: Stepper::Ddim(ddim),
            guidance: guidance(uncond, cond, opts.guidance_scale, false),
            image_latents: None,
            ofs: None,
            rope: self.rope(h, w, f)?,
            reference: Some(&reference),
            keep_trajectory: false,
            stage: Stage::Denoise,
        }
        .run(start, &mut noise, progress)?;
        self.decode_latents(out.latents, progress)
    }
}
