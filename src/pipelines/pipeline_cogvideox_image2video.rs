//! Image-to-video, as diffusers' `CogVideoXImageToVideoPipeline`.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::noise::NoiseSource;
use crate::pipelines::pipeline_cogvideox::guidance;
use crate::pipelines::sampling::Denoise;
use crate::pipelines::{NoiseOptions, Pipeline, Progress, SchedulerKind, Stage, VideoOutput};

/// Options for [`Pipeline::animate_image`]. The image is given at the
/// working size (see [`crate::frames`] for resizing caller images).
#[derive(Debug, Clone)]
pub struct AnimateOptions {
    pub prompt: String,
    pub negative_prompt: String,
    /// Pixel frames, 4k+1; diffusers' image-to-video default is 49.
    pub num_frames: usize,
    pub steps: usize,
    pub guidance_scale: f64,
    pub dynamic_cfg: bool,
    pub scheduler: SchedulerKind,
    /// Draw order: the VAE posterior sample of the image `[1, 16, 1, h, w]`,
    /// then the initial latents `[1, F, 16, h, w]`, then one draw per DPM
    /// step that re-noises.
    pub noise: NoiseOptions,
}

impl Default for AnimateOptions {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            num_frames: 49,
            steps: 50,
            guidance_scale: 6.0,
            dynamic_cfg: true,
            scheduler: SchedulerKind::Dpm,
            noise: NoiseOptions::seed(42),
        }
    }
}

impl Pipeline {
    /// Animates `image` (`[1, 3, H, W]` in [-1, 1]) into `[1, 3, T, H, W]`.
    pub fn animate_image(
        &self,
        image: &Tensor,
        opts: &AnimateOptions,
        progress: &mut Progress,
    ) -> Result<VideoOutput> {
        self.variant.ensure_image_to_video()?;
        let (b, c, height, width) = image.dims4()?;
        if b != 1 || c != 3 {
            return Err(Error::invalid(format!(
                "image must be [1, 3, H, W], got {:?}",
                image.dims()
            )));
        }
        self.check_size(height, width, opts.num_frames)?;
        let (uncond, cond) = self.encode_text(&opts.prompt, &opts.negative_prompt, progress)?;
        let (f, pad) = self.latent_frames(opts.num_frames);
        let (h, w) = (height / 8, width / 8);
        let mut noise = opts.noise.source();

        let z = self.encode_video(&image.unsqueeze(2)?, &mut noise, progress)?;
        let vae = self.vae.config();
        let scale = if vae.invert_scale_latents {
            1.0 / vae.scaling_factor
        } else {
            vae.scaling_factor
        };
        // [image, 0, 0, ...] along frames; the image latent sits at index 0.
        let first = (z.permute((0, 2, 1, 3, 4))?.to_dtype(self.dtype)? * scale)?;
        let zeros = Tensor::zeros((1, f - 1, 16, h, w), self.dtype, &self.device)?;
        let image_latents = Tensor::cat(&[&first, &zeros], 1)?;

        let latents = noise
            .randn(&[1, f, 16, h, w], &self.device, "initial latents")?
            .to_dtype(self.dtype)?;
        let out = Denoise {
            transformer: &self.transformer,
            stepper: self.stepper(opts.scheduler, opts.steps)?,
            guidance: guidance(uncond, cond, opts.guidance_scale, opts.dynamic_cfg),
            image_latents: Some(image_latents),
            ofs: self.transformer.config().ofs_embed_dim.map(|_| 2.0),
            rope: self.rope(h, w, f)?,
            reference: None,
            keep_trajectory: false,
            stage: Stage::Denoise,
        }
        .run(latents, &mut noise, progress)?;
        self.decode_latents(out.latents.narrow(1, pad, f - pad)?, progress)
    }
}
