//! Text-to-video, as diffusers' `CogVideoXPipeline`.

use crate::error::Result;
use crate::noise::NoiseSource;
use crate::pipelines::sampling::{Denoise, Guidance};
use crate::pipelines::{NoiseOptions, Pipeline, Progress, SchedulerKind, Stage, VideoOutput};
use candle_core::Tensor;

/// Options for [`Pipeline::generate_video`]. `None` sizes take the variant's
/// defaults (480x720 and 49 frames for 1.0 models, the config's sample size
/// and 81 frames for 1.5).
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub prompt: String,
    pub negative_prompt: String,
    pub height: Option<usize>,
    pub width: Option<usize>,
    pub num_frames: Option<usize>,
    pub steps: usize,
    pub guidance_scale: f64,
    pub dynamic_cfg: bool,
    pub scheduler: SchedulerKind,
    /// Draw order: initial latents `[1, F, 16, h, w]` (F includes 1.5's
    /// padding frame), then one draw per DPM step that re-noises.
    pub noise: NoiseOptions,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            height: None,
            width: None,
            num_frames: None,
            steps: 50,
            guidance_scale: 6.0,
            dynamic_cfg: true,
            scheduler: SchedulerKind::Dpm,
            noise: NoiseOptions::seed(42),
        }
    }
}

impl Pipeline {
    /// Generates a clip from a prompt: `[1, 3, T, H, W]` in [-1, 1].
    pub fn generate_video(
        &self,
        opts: &GenerateOptions,
        progress: &mut Progress,
    ) -> Result<VideoOutput> {
        self.variant.ensure_text_to_video()?;
        let (dh, dw, dt) = self.default_video_size();
        let (height, width, frames) = (
            opts.height.unwrap_or(dh),
            opts.width.unwrap_or(dw),
            opts.num_frames.unwrap_or(dt),
        );
        self.check_size(height, width, frames)?;
        let (uncond, cond) = self.encode_text(&opts.prompt, &opts.negative_prompt, progress)?;
        let (f, pad) = self.latent_frames(frames);
        let (h, w) = (height / 8, width / 8);
        let mut noise = opts.noise.source();
        let latents = noise
            .randn(&[1, f, 16, h, w], &self.device, "initial latents")?
            .to_dtype(self.dtype)?;
        let out = Denoise {
            transformer: &self.transformer,
            stepper: self.stepper(opts.scheduler, opts.steps)?,
            guidance: guidance(uncond, cond, opts.guidance_scale, opts.dynamic_cfg),
            image_latents: None,
            ofs: None,
            rope: self.rope(h, w, f)?,
            reference: None,
            keep_trajectory: false,
            stage: Stage::Denoise,
        }
        .run(latents, &mut noise, progress)?;
        self.decode_latents(out.latents.narrow(1, pad, f - pad)?, progress)
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
