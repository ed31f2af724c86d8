//! Video-to-video, as diffusers' `CogVideoXVideoToVideoPipeline`: the clip
//! is encoded, noised to the level `strength` selects, and denoised with the
//! prompt over the last part of the schedule.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::noise::NoiseSource;
use crate::pipelines::pipeline_cogvideox::{SamplingOptions, guidance};
use crate::pipelines::sampling::{Denoise, strength_steps};
use crate::pipelines::{NoisePlan, Pipeline, Progress, Stage, VideoOutput};

/// Options for [`Pipeline::video_to_video`].
#[derive(Debug, Clone)]
pub struct VideoToVideoOptions {
    /// Draw order: the clip's VAE posterior sample `[1, 16, F, h, w]`, the
    /// noise added to its latents `[1, F, 16, h, w]`, then one draw per DPM
    /// step that re-noises.
    pub sampling: SamplingOptions,
    /// How far the clip is noised, in (0, 1]: the call runs the last
    /// `floor(steps * strength)` steps (diffusers' `get_timesteps`, in f64),
    /// and at least one must run.
    pub strength: f64,
}

impl Default for VideoToVideoOptions {
    fn default() -> Self {
        Self {
            sampling: SamplingOptions::default(),
            strength: 0.8,
        }
    }
}

impl Pipeline {
    /// Restyles a clip `[1, 3, T, H, W]` in [-1, 1] (T = 4k+1; 8k+5 on 1.5
    /// models, whose latent frames come in pairs) by the prompt.
    pub fn video_to_video(
        &self,
        video: &Tensor,
        opts: &VideoToVideoOptions,
        progress: &mut Progress,
    ) -> Result<VideoOutput> {
        let latents = self.video_to_video_latents(video, opts, progress)?;
        self.finish(latents, progress)
    }

    /// The sampling part of [`Self::video_to_video`]: the final latents
    /// `[1, F, 16, h, w]`, for [`Self::decode_latents`].
    pub fn video_to_video_latents(
        &self,
        video: &Tensor,
        opts: &VideoToVideoOptions,
        progress: &mut Progress,
    ) -> Result<Tensor> {
        let (b, c, frames, height, width) = video.dims5()?;
        if b != 1 || c != 3 {
            return Err(Error::invalid(format!(
                "video must be [1, 3, T, H, W], got {:?}",
                video.dims()
            )));
        }
        let s = &opts.sampling;
        self.noise_plan_video_to_video(height, width, frames, opts)?
            .check_supplied(s.noise.supplied.len())?;
        let guided = s.guidance_scale > 1.0;
        self.check_fits_cached(height, width, frames, (guided, false), &s.cache)?;
        let stepper = self.stepper(s.scheduler, s.steps)?;
        let first = s.steps - self.video_to_video_steps(opts)?;
        let (f, _) = self.latent_frames(frames);
        let (h, w) = (height / 8, width / 8);
        let (uncond, cond) = self.encode_text(&s.prompt, &s.negative_prompt, progress)?;
        let mut noise = s.noise.source();
        let z = self.encode_video(video, false, &mut noise, progress)?;
        let sf = self.vae.config().scaling_factor;
        let clip = (z.permute((0, 2, 1, 3, 4))?.to_dtype(self.dtype)? * sf)?;
        let added = noise
            .randn(clip.dims(), &self.device, "noise added to the clip")?
            .to_dtype(self.dtype)?;
        let t = stepper.timesteps()[first];
        let latents = stepper.add_noise(&clip, &added, t)?.to_dtype(self.dtype)?;
        let transformer = self.transformer.get()?;
        let lora = self.lora_for_call(&transformer, progress)?;
        let out = Denoise {
            transformer: &transformer,
            lora: lora.as_deref(),
            stepper,
            guidance: guidance(uncond, cond, s.guidance_scale, s.dynamic_cfg),
            image_latents: None,
            ofs: None,
            rope: Self::rope(&transformer, h, w, f)?,
            reference: None,
            keep_trajectory: false,
            first_step: first,
            stage: Stage::Denoise,
            cache: &s.cache,
        }
        .run(latents, &mut noise, progress)?;
        Ok(out.latents)
    }

    /// Steps a video-to-video call runs.
    fn video_to_video_steps(&self, opts: &VideoToVideoOptions) -> Result<usize> {
        let (steps, strength) = (opts.sampling.steps, opts.strength);
        let run = strength_steps(steps, strength)?;
        if run == 0 {
            return Err(Error::invalid(format!(
                "strength {strength} of {steps} steps runs no step: steps x strength must be at least 1"
            )));
        }
        Ok(run)
    }

    /// The random draws [`Self::video_to_video`] makes for a clip of this
    /// size with these options.
    pub fn noise_plan_video_to_video(
        &self,
        height: usize,
        width: usize,
        frames: usize,
        opts: &VideoToVideoOptions,
    ) -> Result<NoisePlan> {
        if self.variant.is_image_to_video() {
            return Err(Error::UnsupportedVariant(format!(
                "{} cannot restyle clips: video-to-video needs a text-to-video checkpoint",
                self.variant
            )));
        }
        self.check_size(height, width, frames)?;
        let (f, pad) = self.latent_frames(frames);
        if pad != 0 {
            return Err(Error::invalid(format!(
                "{} restyles clips of 8k+5 frames (5, 13, ..., 77, 85) so that the latent frame count is even; got {frames}",
                self.variant
            )));
        }
        let stepper = self.stepper(opts.sampling.scheduler, opts.sampling.steps)?;
        let first = opts.sampling.steps - self.video_to_video_steps(opts)?;
        let latents = [1, f, self.latent_channels(), height / 8, width / 8];
        let mut plan = NoisePlan::default();
        plan.push(
            "VAE posterior sample",
            &self.posterior_shape(height, width, frames),
        );
        plan.push("noise added to the clip", &latents);
        self.plan_step_draws(&stepper, first, &latents, &mut plan);
        Ok(plan)
    }
}
