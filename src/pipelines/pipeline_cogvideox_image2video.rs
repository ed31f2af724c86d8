//! Image-to-video, as diffusers' `CogVideoXImageToVideoPipeline`.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::noise::NoiseSource;
use crate::pipelines::pipeline_cogvideox::SamplingOptions;
use crate::pipelines::{NoisePlan, Pipeline, Progress, VideoOutput};

/// Options for [`Pipeline::animate_image`]. The image is given at the
/// working size (see [`crate::frames`] for resizing caller images).
#[derive(Debug, Clone)]
pub struct AnimateOptions {
    pub sampling: SamplingOptions,
    /// Pixel frames, 4k+1; diffusers' image-to-video default is 49.
    pub num_frames: usize,
}

impl Default for AnimateOptions {
    fn default() -> Self {
        Self {
            sampling: SamplingOptions::default(),
            num_frames: 49,
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
        let latents = self.animate_latents(image, opts, progress)?;
        self.finish(latents, progress)
    }

    /// The sampling part of [`Self::animate_image`]: the final latents
    /// `[1, F, 16, h, w]`, for [`Self::decode_latents`].
    pub fn animate_latents(
        &self,
        image: &Tensor,
        opts: &AnimateOptions,
        progress: &mut Progress,
    ) -> Result<Tensor> {
        let (b, c, height, width) = image.dims4()?;
        if b != 1 || c != 3 {
            return Err(Error::invalid(format!(
                "image must be [1, 3, H, W], got {:?}",
                image.dims()
            )));
        }
        self.noise_plan_animate(height, width, opts)?
            .check_supplied(opts.sampling.noise.supplied.len())?;
        self.sample_latents(
            &opts.sampling,
            height,
            width,
            opts.num_frames,
            Some(image),
            progress,
        )
    }

    /// The random draws [`Self::animate_image`] makes for a `height x width`
    /// image with these options.
    pub fn noise_plan_animate(
        &self,
        height: usize,
        width: usize,
        opts: &AnimateOptions,
    ) -> Result<NoisePlan> {
        self.variant.ensure_image_to_video()?;
        self.check_size(height, width, opts.num_frames)?;
        self.sampling_plan(&opts.sampling, height, width, opts.num_frames, true)
    }

    /// The conditioning latents `[1, F, 16, h, w]`: the image's VAE sample,
    /// scaled, in frame 0 and zeros after it.
    pub(crate) fn image_latents(
        &self,
        image: &Tensor,
        frames: usize,
        noise: &mut dyn NoiseSource,
        progress: &mut Progress,
    ) -> Result<Tensor> {
        let z = self.encode_video(&image.unsqueeze(2)?, false, noise, progress)?;
        let vae = self.vae.config();
        // 1.5 was trained with the image latent divided by the factor.
        let scale = if vae.invert_scale_latents {
            1.0 / vae.scaling_factor
        } else {
            vae.scaling_factor
        };
        let first = (z.permute((0, 2, 1, 3, 4))?.to_dtype(self.dtype)? * scale)?;
        let (_, _, c, h, w) = first.dims5()?;
        let zeros = Tensor::zeros((1, frames - 1, c, h, w), self.dtype, &self.device)?;
        Ok(Tensor::cat(&[&first, &zeros], 1)?)
    }
}
