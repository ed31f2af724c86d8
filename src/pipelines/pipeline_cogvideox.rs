//! Text-to-video, as diffusers' `CogVideoXPipeline`, and the generation path
//! it shares with image-to-video.

use candle_core::Tensor;

use crate::error::Result;
use crate::hooks::CacheConfig;
use crate::noise::NoiseSource;
use crate::pipelines::sampling::{Denoise, Guidance};
use crate::pipelines::{
    NoiseOptions, NoisePlan, Pipeline, Progress, SchedulerKind, Stage, VideoOutput,
};

/// Prompt and sampler settings shared by text- and image-to-video.
#[derive(Debug, Clone)]
pub struct SamplingOptions {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    /// Classifier-free guidance scale; 1 or less turns guidance off.
    pub guidance_scale: f64,
    /// CogVideoX's cosine schedule of the guidance scale over timesteps.
    pub dynamic_cfg: bool,
    pub scheduler: SchedulerKind,
    /// Draw order: (image-to-video only: the VAE posterior sample of the
    /// image `[1, 16, 1, h, w]`), the initial latents `[1, F, 16, h, w]` (F
    /// includes 1.5's padding frame), then one draw per DPM step that
    /// re-noises.
    pub noise: NoiseOptions,
    /// Step caching (fast mode): [`CacheConfig::Off`], the default, is
    /// exact; the methods skip transformer work as diffusers' hooks do.
    pub cache: CacheConfig,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 50,
            guidance_scale: 6.0,
            dynamic_cfg: true,
            scheduler: SchedulerKind::Dpm,
            noise: NoiseOptions::seed(42),
            cache: CacheConfig::Off,
        }
    }
}

/// Options for [`Pipeline::generate_video`]. `None` sizes take the variant's
/// defaults (480x720 and 49 frames for 1.0 models, the config's sample size
/// and 81 frames for 1.5).
#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    pub sampling: SamplingOptions,
    pub height: Option<usize>,
    pub width: Option<usize>,
    pub num_frames: Option<usize>,
}

impl Pipeline {
    /// Generates a clip from a prompt: `[1, 3, T, H, W]` in [-1, 1].
    pub fn generate_video(
        &self,
        opts: &GenerateOptions,
        progress: &mut Progress,
    ) -> Result<VideoOutput> {
        let latents = self.generate_latents(opts, progress)?;
        self.finish(latents, progress)
    }

    /// The sampling part of [`Self::generate_video`]: the final latents
    /// `[1, F, 16, h, w]`, for [`Self::decode_latents`].
    pub fn generate_latents(
        &self,
        opts: &GenerateOptions,
        progress: &mut Progress,
    ) -> Result<Tensor> {
        let (height, width, frames) = self.generate_size(opts)?;
        self.noise_plan_generate(opts)?
            .check_supplied(opts.sampling.noise.supplied.len())?;
        self.sample_latents(&opts.sampling, height, width, frames, None, progress)
    }

    fn generate_size(&self, opts: &GenerateOptions) -> Result<(usize, usize, usize)> {
        self.variant.ensure_text_to_video()?;
        let (dh, dw, dt) = self.default_video_size();
        let height = opts.height.unwrap_or(dh);
        let width = opts.width.unwrap_or(dw);
        let frames = opts.num_frames.unwrap_or(dt);
        self.check_size(height, width, frames)?;
        Ok((height, width, frames))
    }

    /// The random draws [`Self::generate_video`] makes with these options.
    pub fn noise_plan_generate(&self, opts: &GenerateOptions) -> Result<NoisePlan> {
        let (height, width, frames) = self.generate_size(opts)?;
        self.sampling_plan(&opts.sampling, height, width, frames, false)
    }

    /// Draws of [`Self::sample_latents`], in the order it makes them.
    pub(crate) fn sampling_plan(
        &self,
        s: &SamplingOptions,
        height: usize,
        width: usize,
        frames: usize,
        image: bool,
    ) -> Result<NoisePlan> {
        let mut plan = NoisePlan::default();
        if image {
            plan.push(
                "VAE posterior sample",
                &self.posterior_shape(height, width, 1),
            );
        }
        let (f, _) = self.latent_frames(frames);
        let shape = [1, f, self.latent_channels(), height / 8, width / 8];
        plan.push("initial latents", &shape);
        let stepper = self.stepper(s.scheduler, s.steps)?;
        self.plan_step_draws(&stepper, 0, &shape, &mut plan);
        Ok(plan)
    }

    /// Samples a clip of `frames` pixel frames, conditioned on `image`
    /// (`[1, 3, H, W]`) for image-to-video models: the final latents without
    /// 1.5's padding frames.
    pub(crate) fn sample_latents(
        &self,
        s: &SamplingOptions,
        height: usize,
        width: usize,
        frames: usize,
        image: Option<&Tensor>,
        progress: &mut Progress,
    ) -> Result<Tensor> {
        let stepper = self.stepper(s.scheduler, s.steps)?;
        let guided = s.guidance_scale > 1.0;
        self.check_fits_cached(height, width, frames, (guided, false), &s.cache)?;
        let (uncond, cond) = self.encode_text(&s.prompt, &s.negative_prompt, progress)?;
        let (f, pad) = self.latent_frames(frames);
        let (h, w) = (height / 8, width / 8);
        let mut noise = s.noise.source();
        let image_latents = match image {
            Some(img) => Some(self.image_latents(img, f, &mut noise, progress)?),
            None => None,
        };
        let latents = noise
            .randn(
                &[1, f, self.latent_channels(), h, w],
                &self.device,
                "initial latents",
            )?
            .to_dtype(self.dtype)?;
        let ofs = image.and(self.transformer_cfg.ofs_embed_dim).map(|_| 2.0);
        let transformer = self.transformer.get()?;
        let lora = self.lora_for_call(&transformer, progress)?;
        let out = Denoise {
            transformer: &transformer,
            lora: lora.as_deref(),
            stepper,
            guidance: guidance(uncond, cond, s.guidance_scale, s.dynamic_cfg),
            image_latents,
            ofs,
            rope: Self::rope(&transformer, h, w, f)?,
            reference: None,
            keep_trajectory: false,
            first_step: 0,
            stage: Stage::Denoise,
            cache: &s.cache,
        }
        .run(latents, &mut noise, progress)?;
        // 1.5 pads the noise at the end but drops the padding from the front.
        Ok(out.latents.narrow(1, pad, f - pad)?)
    }
}

/// Classifier-free guidance is on for scales above 1, as in diffusers.
pub(crate) fn guidance(uncond: Tensor, cond: Tensor, scale: f64, dynamic: bool) -> Guidance {
    Guidance {
        cond,
        uncond: (scale > 1.0).then_some(uncond),
        scale,
        dynamic,
    }
}
