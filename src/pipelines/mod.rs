//! Pipelines: text-to-video, image-to-video, video-to-video, DDIM inversion
//! and prompt editing over one loaded checkpoint, all running through the one sampling
//! loop in [`sampling`].
//!
//! Video tensors at this level are `[1, 3, T, H, W]` in [-1, 1] at the
//! model's working size; converting from and to caller frames (formats,
//! strides, resizing) is the job of [`crate::frames`].

pub mod ddim_inversion;
pub mod identity;
mod inversion_file;
mod lora;
mod memory_plan;
pub mod pipeline_cogvideox;
pub mod pipeline_cogvideox_image2video;
pub mod pipeline_cogvideox_video2video;
pub mod progress;
pub mod residency;
pub(crate) mod sampling;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::{self, Checkpoint};
use crate::device::end_of_call;
pub use crate::device::{DeviceKind, default_dtype};
use crate::error::{Error, Result};
use crate::frames::{FrameRef, ResizeMode, frames_to_video};
pub use crate::models::autoencoders::VaeTiling;
use crate::models::autoencoders::{AutoencoderKLCogVideoX, VaeRunOptions};
use crate::models::poll;
use crate::models::transformers::{CogVideoXTransformer3DModel, TransformerConfig};
use crate::noise::NoiseSource;
pub use crate::noise::{NoiseDraw, NoiseOptions, NoisePlan};
use crate::schedulers::{CogVideoXDDIMScheduler, CogVideoXDPMScheduler, SchedulerConfig};
use crate::text_encoder::{MAX_SEQUENCE_LENGTH, TextEncoder};
use crate::variant::Variant;

pub use ddim_inversion::{EditOptions, Inversion, InvertOptions};
pub use lora::{LoraReport, LoraSetting};
use memory_plan::{choose_residency, count_weights, sampling_peak_bytes};
pub use pipeline_cogvideox::{GenerateOptions, SamplingOptions};
pub use pipeline_cogvideox_image2video::AnimateOptions;
pub use pipeline_cogvideox_video2video::VideoToVideoOptions;
pub use progress::{Progress, Stage};
use residency::Component;
pub use residency::{Residency, WeightBytes};
use sampling::Stepper;

/// Options for [`Pipeline::load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: DeviceKind,
    /// Compute precision of all models: F32 (exact parity), BF16 (the
    /// precision CogVideoX was trained in; half the memory) or F16; `None`
    /// takes [`default_dtype`] of the device. Timestep and rotary tables,
    /// scheduler arithmetic and guidance stay in f32 whatever this is, as
    /// in diffusers.
    pub dtype: Option<DType>,
    /// Decode and encode in spatial tiles of the VAE's default size (less
    /// memory, slightly different numbers at tile seams, as diffusers'
    /// `enable_tiling()`).
    pub vae_tiling: bool,
    /// What stays loaded between calls (see [`Residency`]).
    pub residency: Residency,
    /// Memory `Residency::Auto` plans for, in bytes, and that decoding
    /// keeps to (tiling when the untiled decode would not fit); `None`
    /// takes what the device has available (host RAM on the CPU, the
    /// driver's free memory on a GPU; at load time for `Auto`, at each call
    /// for decoding).
    pub memory_budget: Option<u64>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: DeviceKind::Auto,
            dtype: None,
            vae_tiling: false,
            residency: Residency::Auto,
            memory_budget: None,
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

/// Largest width or height, in pixels, any call accepts.
pub const MAX_SIDE: usize = 4096;
/// Largest frame count (4k+1) any call accepts.
pub const MAX_FRAMES: usize = 1021;

/// Options for [`Pipeline::decode_latents`] and [`Pipeline::decode_inversion`].
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// Spatial tiling for this call; the default follows
    /// [`LoadOptions::vae_tiling`].
    pub tiling: VaeTiling,
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

/// What [`Pipeline::memory_report`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryReport {
    /// The residency in effect (never `Auto`).
    pub residency: Residency,
    pub weights: WeightBytes,
    /// Weights held between calls in this residency.
    pub kept_weight_bytes: u64,
    /// Estimated working memory of a default-size call with guidance,
    /// which `Auto` plans for beside the weights.
    pub default_call_bytes: u64,
    /// Estimated peak memory of the running or last call, weights held
    /// during it included; 0 before the first call.
    pub estimated_peak_bytes: u64,
    /// The process's peak and current resident memory (the CPU path's
    /// measured use; the host application's own memory included), where
    /// the system says.
    pub peak_rss_bytes: Option<u64>,
    pub current_rss_bytes: Option<u64>,
}

/// What the transformer's config must agree with beyond itself, checked
/// before any weights are read: the pipeline class `model_index.json`
/// names (a text-to-video class for a text-to-video transformer, and so on)
/// and the text encoder's sequence length.
fn check_transformer(ckpt: &Checkpoint, t: &TransformerConfig, variant: Variant) -> Result<()> {
    if !variant
        .pipeline_classes()
        .contains(&ckpt.index.class_name.as_str())
    {
        return Err(Error::bad_checkpoint(
            ckpt.root().join("model_index.json"),
            format!(
                "pipeline class `{}` does not match the transformer, which is {variant}; accepted: {}",
                ckpt.index.class_name,
                variant.pipeline_classes().join(", ")
            ),
        ));
    }
    if t.max_text_seq_length != MAX_SEQUENCE_LENGTH {
        return Err(Error::bad_checkpoint(
            ckpt.component_dir("transformer")?.join("config.json"),
            format!(
                "max_text_seq_length {} is not supported; accepted: {MAX_SEQUENCE_LENGTH} (the text encoder's sequence length)",
                t.max_text_seq_length
            ),
        ));
    }
    Ok(())
}

/// The pipeline joins its components with fixed factors (8x spatial and 4x
/// temporal compression, the transformer working on the VAE's latents and
/// the T5 width): components that each load but do not fit together are a
/// bad checkpoint, refused here rather than failing mid-call.
fn check_components(
    ckpt: &Checkpoint,
    t: &TransformerConfig,
    v: &crate::models::autoencoders::VaeConfig,
    text_width: usize,
) -> Result<()> {
    let checks = [
        (
            "vae",
            "latent_channels",
            v.latent_channels,
            t.out_channels(),
            "the transformer's out_channels",
        ),
        (
            "vae",
            "block_out_channels (spatial compression)",
            v.spatial_compression(),
            8,
            "8",
        ),
        (
            "vae",
            "temporal_compression_ratio",
            v.temporal_compression_ratio as usize,
            4,
            "4",
        ),
        (
            "transformer",
            "text_embed_dim",
            t.text_embed_dim,
            text_width,
            "the text encoder's d_model",
        ),
    ];
    for (component, field, got, want, what) in checks {
        if got != want {
            return Err(Error::bad_checkpoint(
                ckpt.root().join(component).join("config.json"),
                format!("{field} is {got} but must equal {what} ({want})"),
            ));
        }
    }
    Ok(())
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

fn transformer_loader(
    ckpt: &Checkpoint,
    dtype: DType,
    device: &Device,
    streamed: bool,
) -> Component<CogVideoXTransformer3DModel> {
    let (ckpt, device) = (ckpt.clone(), device.clone());
    Component::PerUse(Box::new(move || {
        CogVideoXTransformer3DModel::from_checkpoint_with(&ckpt, dtype, &device, streamed)
    }))
}

fn text_encoder_loader(
    ckpt: &Checkpoint,
    dtype: DType,
    device: &Device,
    streamed: bool,
) -> Component<TextEncoder> {
    let (ckpt, device) = (ckpt.clone(), device.clone());
    Component::PerUse(Box::new(move || {
        TextEncoder::from_checkpoint_with(&ckpt, dtype, &device, streamed)
    }))
}

/// The default output size `(height, width)` in pixels and frame count.
fn default_video_size(variant: Variant, cfg: &TransformerConfig) -> (usize, usize, usize) {
    let frames = if variant.is_image_to_video() {
        49
    } else {
        cfg.sample_frames
    };
    (cfg.sample_height * 8, cfg.sample_width * 8, frames)
}

/// Latent frames for `frames` pixel frames, and how many padding latent
/// frames 1.5 models add in front of the sample (diffusers pads at the end
/// of the noise and drops that many from the front before decoding).
fn latent_frames(cfg: &TransformerConfig, frames: usize) -> (usize, usize) {
    let f = (frames - 1) / 4 + 1;
    match cfg.patch_size_t {
        Some(pt) if !f.is_multiple_of(pt) => (f + pt - f % pt, pt - f % pt),
        _ => (f, 0),
    }
}

/// The operations whose defaults [`Pipeline::default_frames`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Generate,
    Animate,
    /// Inversion and the edits of it.
    Edit,
    VideoToVideo,
}

/// A loaded CogVideoX checkpoint: text encoder, transformer, VAE and the
/// scheduler configuration.
pub struct Pipeline {
    /// Distinguishes pipelines so an inversion is only edited by its maker.
    id: u64,
    /// The checkpoint's [`identity::checkpoint_identity`].
    identity: u64,
    variant: Variant,
    text_encoder: Component<TextEncoder>,
    transformer: Component<CogVideoXTransformer3DModel>,
    transformer_cfg: TransformerConfig,
    /// The VAE stays loaded in every residency: it is about 2% of the weights.
    vae: AutoencoderKLCogVideoX,
    residency: Residency,
    weight_bytes: WeightBytes,
    memory_budget: Option<u64>,
    /// Estimated peak memory (bytes, kept weights included) of the running
    /// or last call; 0 before the first. Atomic, so the memory query never
    /// waits for a call.
    estimated_peak: std::sync::atomic::AtomicU64,
    scheduler: SchedulerConfig,
    device: Device,
    dtype: DType,
    /// LoRA adapters (see [`Pipeline::load_lora`]).
    lora: parking_lot::Mutex<lora::LoraState>,
}

impl Pipeline {
    /// Loads every component of a diffusers-layout checkpoint folder.
    pub fn load(root: impl AsRef<std::path::Path>, opts: &LoadOptions) -> Result<Self> {
        Self::load_with_progress(root, opts, &mut Progress::none())
    }

    /// [`Self::load`], reporting [`Stage::Load`] in MiB of weights loaded
    /// (after each model: the VAE, the transformer, the text encoder) and
    /// cancellable there; a cancelled load frees what it had loaded.
    pub fn load_with_progress(
        root: impl AsRef<std::path::Path>,
        opts: &LoadOptions,
        progress: &mut Progress,
    ) -> Result<Self> {
        if let Some(dtype) = opts.dtype
            && !matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
        {
            return Err(Error::invalid(format!(
                "unsupported compute dtype {dtype:?}"
            )));
        }
        let device = opts.device.open()?;
        let dtype = opts.dtype.unwrap_or_else(|| default_dtype(&device));
        let ckpt = Checkpoint::open(root)?;
        let identity = identity::checkpoint_identity(ckpt.root())?;
        let transformer_cfg: TransformerConfig = checkpoint::read_component_config(
            &ckpt.component_dir("transformer")?,
            TransformerConfig::validate,
        )?;
        let variant = Variant::detect(&transformer_cfg);
        check_transformer(&ckpt, &transformer_cfg, variant)?;
        let scheduler = SchedulerConfig::load(
            ckpt.component_dir("scheduler")?
                .join("scheduler_config.json"),
        )?;
        // T5 overflows in f16 (transformers keeps parts of it in f32 for that);
        // bf16 has the range, and the embeddings are cast on use.
        let text_dtype = if dtype == DType::F16 {
            DType::BF16
        } else {
            dtype
        };
        let weight_bytes = count_weights(&ckpt, text_dtype, dtype)?;
        let mib = |bytes: u64| bytes.div_ceil(1 << 20) as usize;
        let total = mib(weight_bytes.total());
        progress.report(Stage::Load, 0, total)?;
        let mut vae = AutoencoderKLCogVideoX::from_dir(ckpt.component_dir("vae")?, dtype, &device)?;
        if opts.vae_tiling {
            vae.set_tiling(Some(vae.default_tiling()))?;
        }
        progress.report(Stage::Load, mib(weight_bytes.vae), total)?;
        let residency = choose_residency(opts, &device, &weight_bytes, || {
            let (h, w, t) = default_video_size(variant, &transformer_cfg);
            let latent_channels = vae.config().latent_channels;
            sampling_peak_bytes(
                &transformer_cfg,
                latent_channels,
                &device,
                dtype,
                [h, w, t],
                2,
            )
        });
        let streamed = residency == Residency::Streamed;
        let kept = residency != Residency::PerComponent;
        // Each model is loaded once here in every mode, which checks its
        // files; per use, it is dropped before the next one is loaded, so
        // that loading too holds one large model at a time.
        let transformer = transformer_loader(&ckpt, dtype, &device, streamed);
        let model = transformer.get()?;
        progress.report(
            Stage::Load,
            mib(weight_bytes.vae + weight_bytes.transformer),
            total,
        )?;
        let transformer = if kept {
            Component::Kept(model)
        } else {
            drop(model);
            transformer
        };
        let text_encoder = text_encoder_loader(&ckpt, text_dtype, &device, streamed);
        let model = text_encoder.get()?;
        check_components(
            &ckpt,
            &transformer_cfg,
            vae.config(),
            model.encoder().config().d_model,
        )?;
        let text_encoder = if kept {
            Component::Kept(model)
        } else {
            drop(model);
            text_encoder
        };
        progress.report(Stage::Load, total, total)?;
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let pipeline = Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            identity,
            variant,
            text_encoder,
            transformer,
            transformer_cfg,
            vae,
            residency,
            weight_bytes,
            memory_budget: opts.memory_budget,
            estimated_peak: Default::default(),
            scheduler,
            device,
            dtype,
            lora: Default::default(),
        };
        end_of_call(&pipeline.device)?;
        Ok(pipeline)
    }

    /// The residency in effect (never `Auto`).
    pub fn residency(&self) -> Residency {
        self.residency
    }

    /// Bytes of all models' weights in the compute dtype.
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes.total()
    }

    pub fn variant(&self) -> Variant {
        self.variant
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The compute dtype in effect (what `LoadOptions::dtype`, or its
    /// default for the device, chose).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Which attention kernel this pipeline's device and dtype run, e.g.
    /// "cuDNN 9.13.1 unified SDPA" or "chunked (cuDNN not found: ...)",
    /// with the shapes cuDNN refused so far.
    pub fn attention_backend(&self) -> String {
        crate::models::attention::backend_description(&self.device, self.dtype)
    }

    /// The default output size `(height, width)` in pixels and frame count.
    pub fn default_video_size(&self) -> (usize, usize, usize) {
        default_video_size(self.variant, &self.transformer_cfg)
    }

    /// The working size `(height, width)` of a call: the caller's, or the
    /// variant's default where it gives none.
    pub fn working_size(&self, height: Option<usize>, width: Option<usize>) -> (usize, usize) {
        let (h, w, _) = self.default_video_size();
        (height.unwrap_or(h), width.unwrap_or(w))
    }

    /// A clip of caller frames as the model's video `[1, 3, T, height,
    /// width]` in [-1, 1] (T = `frames.len()`), for a call that samples
    /// (with guidance when `guided`) at that size: checked to fit in memory
    /// before the conversion allocates anything.
    pub fn video_from_frames(
        &self,
        frames: &[FrameRef<'_>],
        (height, width): (usize, usize),
        mode: ResizeMode,
        guided: bool,
    ) -> Result<Tensor> {
        self.check_fits(height, width, frames.len(), guided, false)?;
        frames_to_video(frames, height, width, mode, &self.device)
    }

    /// Decodes caller latents (f32 `[1, F, 16, h, w]` row-major, `dims`
    /// those five numbers) as [`Self::decode_latents`], checked to fit
    /// before they are copied.
    pub fn decode_latent_values(
        &self,
        values: &[f32],
        dims: &[usize],
        opts: &DecodeOptions,
        progress: &mut Progress,
    ) -> Result<Tensor> {
        self.check_latent_dims(dims)?;
        if values.len() != dims.iter().product::<usize>() {
            return Err(Error::invalid(format!(
                "{} latent values for the shape {dims:?}",
                values.len()
            )));
        }
        let (h, w, frames) = (8 * dims[3], 8 * dims[4], decoded_frame_count(dims[1]));
        self.check_decode_fits(h, w, frames, opts, true)?;
        let mut copy = crate::memory::try_zeroed::<f32>(values.len(), "latents")?;
        copy.copy_from_slice(values);
        let latents = Tensor::from_vec(copy, dims, &self.device)?;
        self.decode_latents(&latents, opts, progress)
    }

    /// The frame count an operation takes by default: what `num_frames` 0
    /// means for text- and image-to-video, and the length of the clip to
    /// hand to an edit or video-to-video call for a default-length result
    /// (the longest usable length within the variant's default).
    pub fn default_frames(&self, operation: Operation) -> usize {
        let frames = self.default_video_size().2;
        match operation {
            Operation::Generate | Operation::Animate => frames,
            Operation::Edit | Operation::VideoToVideo => {
                self.usable_edit_frames(frames).unwrap_or(frames)
            }
        }
    }

    /// A stable hash of the checkpoint's configs, tokenizer files and
    /// weight headers ([`identity::checkpoint_identity`]): equal for the same
    /// checkpoint in any process, for keying caches of results.
    pub fn identity(&self) -> u64 {
        self.identity
    }

    /// Steps any sampling call accepts: 1..=the scheduler's training steps.
    pub fn max_steps(&self) -> usize {
        self.scheduler.max_steps()
    }

    pub(crate) fn check_steps(&self, steps: usize) -> Result<()> {
        self.scheduler.check_steps(steps)
    }

    /// Checks a frame count: 4k+1 between 1 and [`MAX_FRAMES`].
    pub fn check_frames(&self, frames: usize) -> Result<()> {
        if frames == 0 || frames > MAX_FRAMES || !(frames - 1).is_multiple_of(4) {
            return Err(Error::invalid(format!(
                "{} needs 4k+1 frames between 1 and {MAX_FRAMES} (1, 5, 9, ..., 49, ..., 81), got {frames}",
                self.variant
            )));
        }
        Ok(())
    }

    /// Frames a text- or image-to-video call with `num_frames` produces.
    pub fn output_frame_count(&self, num_frames: usize) -> Result<usize> {
        self.check_frames(num_frames)?;
        let (f, pad) = self.latent_frames(num_frames);
        Ok(decoded_frame_count(f - pad))
    }

    /// Shape of the latents a call returns for a `height x width` clip of
    /// `frames` frames: `[1, F, 16, height/8, width/8]` (without 1.5's
    /// padding frame).
    pub fn latent_shape(&self, height: usize, width: usize, frames: usize) -> Result<[usize; 5]> {
        self.check_size(height, width, frames)?;
        let (f, pad) = self.latent_frames(frames);
        Ok([1, f - pad, self.latent_channels(), height / 8, width / 8])
    }

    fn latent_channels(&self) -> usize {
        self.vae.config().latent_channels
    }

    /// How many leading frames of an `n`-frame clip an inversion uses: the
    /// largest 4k+1, and for 1.5 models (pairs of latent frames) 8k+5.
    pub fn usable_edit_frames(&self, n: usize) -> Result<usize> {
        let (unit, min) = match self.transformer_cfg.patch_size_t {
            Some(_) => (8, 5),
            None => (4, 1),
        };
        if n < min {
            return Err(Error::invalid(format!(
                "{} needs at least {min} frames to edit, got {n}",
                self.variant
            )));
        }
        Ok((n - (n - min) % unit).min(MAX_FRAMES - (MAX_FRAMES - min) % unit))
    }

    /// Checks a requested size against what the variant can generate.
    pub fn check_size(&self, height: usize, width: usize, frames: usize) -> Result<()> {
        let cfg = &self.transformer_cfg;
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
        self.check_frames(frames)?;
        if cfg.use_learned_positional_embeddings
            && (height != cfg.sample_height * 8 || width != cfg.sample_width * 8)
        {
            return Err(Error::invalid(format!(
                "{} only generates at {}x{} (its positional embeddings are learned for that size), got {width}x{height}",
                self.variant,
                cfg.sample_width * 8,
                cfg.sample_height * 8
            )));
        }
        if cfg.patch_size_t.is_some()
            && (height / unit > cfg.sample_height / 2 || width / unit > cfg.sample_width / 2)
        {
            return Err(Error::invalid(format!(
                "{} generates at most {}x{} pixels, got {width}x{height}",
                self.variant,
                cfg.sample_width * 8,
                cfg.sample_height * 8
            )));
        }
        Ok(())
    }

    fn latent_frames(&self, frames: usize) -> (usize, usize) {
        latent_frames(&self.transformer_cfg, frames)
    }

    /// `[neg, pos]` prompt embeddings; the empty negative prompt is cached.
    fn encode_text(
        &self,
        prompt: &str,
        negative: &str,
        progress: &mut Progress,
    ) -> Result<(Tensor, Tensor)> {
        progress.report(Stage::EncodeText, 0, 1)?;
        let text_encoder = self.text_encoder.get()?;
        // T5-XXL is seconds per prompt on a CPU: polled between its blocks.
        let mut cancelled = false;
        let mut poll = || -> candle_core::Result<()> {
            if progress.report(Stage::EncodeText, 0, 1).is_err() {
                cancelled = true;
                candle_core::bail!("cancelled");
            }
            Ok(())
        };
        let encoded = poll::with_poll(Some(&mut poll), poll::MIN_INTERVAL, || -> Result<_> {
            let cond = text_encoder.encode_prompts(&[prompt])?;
            let uncond = if negative.is_empty() {
                text_encoder.empty_prompt_embedding()?
            } else {
                text_encoder.encode_prompts(&[negative])?
            };
            Ok((uncond, cond))
        });
        let encoded = match encoded {
            Err(_) if cancelled => return Err(Error::Cancelled),
            e => e?,
        };
        progress.report(Stage::EncodeText, 1, 1)?;
        Ok(encoded)
    }

    fn stepper(&self, kind: SchedulerKind, steps: usize) -> Result<Stepper> {
        self.check_steps(steps)?;
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

    /// Adds the draws of the steps `stepper` runs from step `first` on (DPM
    /// re-noises at every step but the last; DDIM draws nothing).
    fn plan_step_draws(
        &self,
        stepper: &Stepper,
        first: usize,
        shape: &[usize],
        plan: &mut NoisePlan,
    ) {
        if let Stepper::Dpm(s) = stepper {
            for (j, &t) in s.timesteps()[first..].iter().enumerate() {
                if s.needs_noise(t) {
                    plan.push(format!("DPM step {j}"), shape);
                }
            }
        }
    }

    /// The VAE posterior of `frames` pixel frames: `[1, 16, F, h, w]`.
    fn posterior_shape(&self, height: usize, width: usize, frames: usize) -> [usize; 5] {
        [
            1,
            self.latent_channels(),
            (frames - 1) / 4 + 1,
            height / 8,
            width / 8,
        ]
    }

    fn rope(
        transformer: &CogVideoXTransformer3DModel,
        h: usize,
        w: usize,
        f: usize,
    ) -> Result<Option<crate::models::embeddings::RotaryEmbedding>> {
        let tables = transformer.rotary_tables(h, w, f)?;
        Ok(transformer.prepare_rotary(tables.as_ref())?)
    }

    /// Encodes `[1, 3, T, H, W]` pixels to a latent of the VAE posterior:
    /// its mean, or a sample (one draw).
    fn encode_video(
        &self,
        video: &Tensor,
        posterior_mean: bool,
        noise: &mut dyn NoiseSource,
        progress: &mut Progress,
    ) -> Result<Tensor> {
        let posterior = self.vae.encode_with(
            &video.to_dtype(self.dtype)?,
            &VaeRunOptions::default(),
            &mut |done, total| progress.report(Stage::EncodeVideo, done, total),
        )?;
        let z = if posterior_mean {
            posterior.mean().clone()
        } else {
            let eps = noise.randn(
                posterior.mean().dims(),
                &self.device,
                "VAE posterior sample",
            )?;
            posterior.sample(&eps)?
        };
        Ok(z)
    }

    /// Checks a latents shape for decoding: `[1, F, 16, h, w]` with the
    /// sizes any call accepts.
    pub fn check_latent_dims(&self, dims: &[usize]) -> Result<()> {
        let c = self.latent_channels();
        let ok = dims.len() == 5
            && dims[0] == 1
            && dims[1] >= 1
            && dims[2] == c
            && (1..=MAX_SIDE / 8).contains(&dims[3])
            && (1..=MAX_SIDE / 8).contains(&dims[4])
            && dims[1] <= (MAX_FRAMES - 1) / 4 + 1;
        if !ok {
            return Err(Error::invalid(format!(
                "latents must be [1, F, {c}, h, w] with h and w in 1..={} and at most {} frames, got {dims:?}",
                MAX_SIDE / 8,
                (MAX_FRAMES - 1) / 4 + 1
            )));
        }
        Ok(())
    }

    /// Decodes diffusion latents `[1, F, 16, h, w]` (as the generating calls
    /// return them) to pixels `[1, 3, T, H, W]` in [-1, 1], f32, with
    /// T = [`decoded_frame_count`]`(F)`.
    pub fn decode_latents(
        &self,
        latents: &Tensor,
        opts: &DecodeOptions,
        progress: &mut Progress,
    ) -> Result<Tensor> {
        self.decode(latents, opts, progress, true)
    }

    /// [`Self::decode_latents`]; `record` is false for the decode that ends
    /// a generating call, whose estimate (made by [`Self::check_fits`] at
    /// its start, weights at their peak included) covers the decode already
    /// and must not be replaced by the decode's alone.
    fn decode(
        &self,
        latents: &Tensor,
        opts: &DecodeOptions,
        progress: &mut Progress,
        record: bool,
    ) -> Result<Tensor> {
        self.check_latent_dims(latents.dims())?;
        let dims = latents.dims();
        let (h, w, frames) = (8 * dims[3], 8 * dims[4], decoded_frame_count(dims[1]));
        self.check_decode_fits(h, w, frames, opts, record)?;
        let sf = self.vae.config().scaling_factor;
        let z = (latents.to_dtype(self.dtype)?.permute((0, 2, 1, 3, 4))? * (1.0 / sf))?;
        let run = VaeRunOptions {
            tiling: self.decode_tiling(h, w, frames, opts.tiling)?,
        };
        let video = self.vae.decode_with(&z, &run, &mut |done, total| {
            progress.report(Stage::DecodeVideo, done, total)
        })?;
        let video = video.to_dtype(DType::F32)?;
        end_of_call(&self.device)?;
        Ok(video)
    }

    /// Decodes the latents a generating call produced into its output.
    fn finish(&self, latents: Tensor, progress: &mut Progress) -> Result<VideoOutput> {
        let video = self.decode(&latents, &DecodeOptions::default(), progress, false)?;
        Ok(VideoOutput { latents, video })
    }
}
