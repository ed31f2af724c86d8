//! Pipelines: text-to-video, image-to-video, DDIM inversion and prompt
//! editing over one loaded checkpoint, all running through the one sampling
//! loop in [`sampling`].
//!
//! Video tensors at this level are `[1, 3, T, H, W]` in [-1, 1] at the
//! model's working size; converting from and to caller frames (formats,
//! strides, resizing) is the job of [`crate::frames`].

pub mod ddim_inversion;
pub mod pipeline_cogvideox;
pub mod pipeline_cogvideox_image2video;
pub mod progress;
pub(crate) mod sampling;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::models::autoencoders::AutoencoderKLCogVideoX;
use crate::models::transformers::CogVideoXTransformer3DModel;
use crate::noise::{NoiseSource, SuppliedNoise};
use crate::schedulers::{CogVideoXDDIMScheduler, CogVideoXDPMScheduler, SchedulerConfig};
use crate::text_encoder::TextEncoder;
use crate::variant::Variant;

pub use ddim_inversion::{EditOptions, Inversion, InvertOptions};
pub use pipeline_cogvideox::{GenerateOptions, SamplingOptions};
pub use pipeline_cogvideox_image2video::AnimateOptions;
pub use progress::{Progress, Stage};
use sampling::Stepper;

/// Where the models run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    /// An NVIDIA GPU by ordinal; needs the `cuda` build.
    Cuda(usize),
}

impl DeviceKind {
    fn open(self) -> Result<Device> {
        match self {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda(i) => Device::new_cuda(i).map_err(|e| {
                Error::Device(format!(
                    "cannot open CUDA device {i} (is this a `cuda` build with a driver present?): {e}"
                ))
            }),
        }
    }
}

/// Options for [`Pipeline::load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: DeviceKind,
    /// Compute precision of all models: F32 (exact parity), BF16 (the
    /// precision CogVideoX was trained in; half the memory) or F16.
    pub dtype: DType,
    /// Decode and encode in spatial tiles of the VAE's default size (less
    /// memory, slightly different numbers at tile seams, as diffusers'
    /// `enable_tiling()`).
    pub vae_tiling: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: DeviceKind::Cpu,
            dtype: DType::F32,
            vae_tiling: false,
        }
    }
}

/// Which sampler drives generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    /// CogVideoXDPMScheduler: what the official demo uses; stochastic.
    Dpm,
    /// CogVideoXDDIMScheduler: deterministic.
    Ddim,
}

/// Noise for a call: a seed, optionally preceded by caller-supplied values
/// (see [`SuppliedNoise`]): the call's draws, flattened and concatenated in
/// the order each pipeline's options document.
#[derive(Debug, Clone, Default)]
pub struct NoiseOptions {
    pub seed: u64,
    pub supplied: Vec<f32>,
}

impl NoiseOptions {
    pub fn seed(seed: u64) -> Self {
        Self {
            seed,
            supplied: Vec::new(),
        }
    }

    /// Supplied draws given as tensors, in order.
    pub fn with_draws(seed: u64, draws: &[Tensor]) -> Result<Self> {
        let mut supplied = Vec::new();
        for d in draws {
            supplied.extend(d.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Self { seed, supplied })
    }

    fn source(&self) -> SuppliedNoise {
        SuppliedNoise::new(self.supplied.clone(), self.seed)
    }
}

/// What a generating call returns.
#[derive(Debug, Clone)]
pub struct VideoOutput {
    /// Final diffusion latents `[1, F, 16, h, w]` (without 1.5's padding
    /// frame), as they went into the VAE decoder after unscaling.
    pub latents: Tensor,
    /// Decoded video `[1, 3, T, H, W]` in [-1, 1], f32.
    pub video: Tensor,
}

/// Frames the VAE decodes from `latent_frames` latent frames. diffusers
/// decodes in batches of two latent frames with the odd one in the first
/// batch, and only a batch of odd length keeps the causal first frame, so an
/// even count gives `4F` frames rather than `4(F-1)+1` (13 pixel frames on a
/// 1.0 model come back as 16).
pub fn decoded_frame_count(latent_frames: usize) -> usize {
    if latent_frames % 2 == 1 {
        4 * (latent_frames - 1) + 1
    } else {
        4 * latent_frames
    }
}

/// Frames an edit of `inversion` produces.
pub fn edited_frame_count(inversion: &Inversion) -> usize {
    decoded_frame_count(inversion.inverted_latents().dims()[1])
}

/// A loaded CogVideoX checkpoint: text encoder, transformer, VAE and the
/// scheduler configuration.
pub struct Pipeline {
    /// Distinguishes pipelines so an inversion is only edited by its maker.
    id: u64,
    variant: Variant,
    text_encoder: TextEncoder,
    transformer: CogVideoXTransformer3DModel,
    vae: AutoencoderKLCogVideoX,
    scheduler: SchedulerConfig,
    device: Device,
    dtype: DType,
}

impl Pipeline {
    /// Loads every component of a diffusers-layout checkpoint folder.
    pub fn load(root: impl AsRef<std::path::Path>, opts: &LoadOptions) -> Result<Self> {
        if !matches!(opts.dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::invalid(format!(
                "unsupported compute dtype {:?}",
                opts.dtype
            )));
        }
        let device = opts.device.open()?;
        let ckpt = Checkpoint::open(root)?;
        let transformer = CogVideoXTransformer3DModel::from_checkpoint(&ckpt, opts.dtype, &device)?;
        let variant = transformer.variant();
        let scheduler = SchedulerConfig::load(
            ckpt.component_dir("scheduler")?
                .join("scheduler_config.json"),
        )?;
        // T5 overflows in f16 (transformers keeps parts of it in f32 for that);
        // bf16 has the range, and the embeddings are cast on use.
        let text_dtype = if opts.dtype == DType::F16 {
            DType::BF16
        } else {
            opts.dtype
        };
        let text_encoder = TextEncoder::from_checkpoint(&ckpt, text_dtype, &device)?;
        let mut vae =
            AutoencoderKLCogVideoX::from_dir(ckpt.component_dir("vae")?, opts.dtype, &device)?;
        if opts.vae_tiling {
            vae.set_tiling(Some(vae.default_tiling()))?;
        }
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Ok(Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            variant,
            text_encoder,
            transformer,
            vae,
            scheduler,
            device,
            dtype: opts.dtype,
        })
    }

    pub fn variant(&self) -> Variant {
        self.variant
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The default output size `(height, width)` in pixels and frame count.
    pub fn default_video_size(&self) -> (usize, usize, usize) {
        let cfg = self.transformer.config();
        let frames = if self.variant.is_image_to_video() {
            49
        } else {
            cfg.sample_frames
        };
        (cfg.sample_height * 8, cfg.sample_width * 8, frames)
    }

    /// Frames a text- or image-to-video call with `num_frames` produces.
    pub fn output_frame_count(&self, num_frames: usize) -> Result<usize> {
        if num_frames == 0 || !(num_frames - 1).is_multiple_of(4) {
            return Err(Error::invalid(format!(
                "{} needs 4k+1 frames, got {num_frames}",
                self.variant
            )));
        }
        let (f, pad) = self.latent_frames(num_frames);
        Ok(decoded_frame_count(f - pad))
    }

    /// How many leading frames of an `n`-frame clip an inversion uses: the
    /// largest 4k+1, and for 1.5 models (pairs of latent frames) 8k+5.
    pub fn usable_edit_frames(&self, n: usize) -> Result<usize> {
        let (unit, min) = match self.transformer.config().patch_size_t {
            Some(_) => (8, 5),
            None => (4, 1),
        };
        if n < min {
            return Err(Error::invalid(format!(
                "{} needs at least {min} frames to edit, got {n}",
                self.variant
            )));
        }
        Ok(n - (n - min) % unit)
    }

    /// Checks a requested size against what the variant can generate.
    pub(crate) fn check_size(&self, height: usize, width: usize, frames: usize) -> Result<()> {
        const MAX_SIDE: usize = 4096;
        let cfg = self.transformer.config();
        let unit = 8 * cfg.patch_size;
        if height == 0 || width == 0 || height > MAX_SIDE || width > MAX_SIDE {
            return Err(Error::invalid(format!(
                "size {width}x{height} is outside 1..={MAX_SIDE} pixels"
            )));
        }
        if !height.is_multiple_of(unit) || !width.is_multiple_of(unit) {
            return Err(Error::invalid(format!(
                "width and height must be multiples of {unit} pixels, got {width}x{height}"
            )));
        }
        if frames == 0 || !(frames - 1).is_multiple_of(4) || frames > 1024 {
            return Err(Error::invalid(format!(
                "{} needs 4k+1 frames (1, 5, 9, ..., 49, ..., 81), got {frames}",
                self.variant
            )));
        }
        if cfg.use_learned_positional_embeddings
            && (height != cfg.sample_height * 8 || width != cfg.sample_width * 8)
        {
            return Err(Error::invalid(format!(
                "{} only generates at {}x{} (its positional embeddings are learned for that size)",
                self.variant,
                cfg.sample_width * 8,
                cfg.sample_height * 8
            )));
        }
        if cfg.patch_size_t.is_some()
            && (height / unit > cfg.sample_height / 2 || width / unit > cfg.sample_width / 2)
        {
            return Err(Error::invalid(format!(
                "{} generates at most {}x{} pixels",
                self.variant,
                cfg.sample_width * 8,
                cfg.sample_height * 8
            )));
        }
        Ok(())
    }

    /// Latent frames for `frames` pixel frames, and how many padding latent
    /// frames 1.5 models add in front of the sample (diffusers pads at the end
    /// of the noise and drops that many from the front before decoding).
    fn latent_frames(&self, frames: usize) -> (usize, usize) {
        let f = (frames - 1) / 4 + 1;
        match self.transformer.config().patch_size_t {
            Some(pt) if !f.is_multiple_of(pt) => (f + pt - f % pt, pt - f % pt),
            _ => (f, 0),
        }
    }

    /// `[neg, pos]` prompt embeddings; the empty negative prompt is cached.
    fn encode_text(
        &self,
        prompt: &str,
        negative: &str,
        progress: &mut Progress,
    ) -> Result<(Tensor, Tensor)> {
        progress.report(Stage::EncodeText, 0, 1)?;
        let cond = self.text_encoder.encode_prompts(&[prompt])?;
        let uncond = if negative.is_empty() {
            self.text_encoder.empty_prompt_embedding()?
        } else {
            self.text_encoder.encode_prompts(&[negative])?
        };
        progress.report(Stage::EncodeText, 1, 1)?;
        Ok((uncond, cond))
    }

    fn stepper(&self, kind: SchedulerKind, steps: usize) -> Result<Stepper> {
        Ok(match kind {
            SchedulerKind::Ddim => {
                let mut s = CogVideoXDDIMScheduler::new(&self.scheduler)?;
                s.set_timesteps(steps)?;
                Stepper::Ddim(s)
            }
            SchedulerKind::Dpm => {
                let mut s = CogVideoXDPMScheduler::new(&self.scheduler)?;
                s.set_timesteps(steps)?;
                Stepper::Dpm(s)
            }
        })
    }

    fn rope(
        &self,
        h: usize,
        w: usize,
        f: usize,
    ) -> Result<Option<crate::models::transformers::cogvideox_transformer_3d::RotaryEmbedding>>
    {
        let tables = self.transformer.rotary_tables(h, w, f)?;
        Ok(self.transformer.prepare_rotary(tables.as_ref())?)
    }

    /// Encodes `[1, 3, T, H, W]` pixels to the VAE posterior.
    fn encode_video(
        &self,
        video: &Tensor,
        noise: &mut dyn NoiseSource,
        progress: &mut Progress,
    ) -> Result<Tensor> {
        progress.report(Stage::EncodeVideo, 0, 1)?;
        let posterior = self.vae.encode(&video.to_dtype(self.dtype)?)?;
        let eps = noise.randn(
            posterior.mean().dims(),
            &self.device,
            "VAE posterior sample",
        )?;
        let z = posterior.sample(&eps)?;
        progress.report(Stage::EncodeVideo, 1, 1)?;
        Ok(z)
    }

    /// Decodes diffusion latents `[1, F, 16, h, w]` to pixels `[1, 3, T, H,
    /// W]` in [-1, 1] (f32), dividing by the VAE scaling factor first.
    fn decode_latents(&self, latents: Tensor, progress: &mut Progress) -> Result<VideoOutput> {
        progress.report(Stage::DecodeVideo, 0, 1)?;
        let sf = self.vae.config().scaling_factor;
        let z = (latents.permute((0, 2, 1, 3, 4))? * (1.0 / sf))?;
        let video = self.vae.decode(&z)?.to_dtype(DType::F32)?;
        progress.report(Stage::DecodeVideo, 1, 1)?;
        Ok(VideoOutput { latents, video })
    }
}
