//! Pipelines: text-to-video, image-to-video, video-to-video, DDIM inversion
//! and prompt editing over one loaded checkpoint, all running through the one sampling
//! loop in [`sampling`].
//!
//! Video tensors at this level are `[1, 3, T, H, W]` in [-1, 1] at the
//! model's working size; converting from and to caller frames (formats,
//! strides, resizing) is the job of [`crate::frames`].

pub mod ddim_inversion;
pub mod pipeline_cogvideox;
pub mod pipeline_cogvideox_image2video;
pub mod pipeline_cogvideox_video2video;
pub mod progress;
pub mod residency;
pub(crate) mod sampling;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::{self, Checkpoint};
use crate::error::{Error, Result};
pub use crate::models::autoencoders::VaeTiling;
use crate::models::autoencoders::{AutoencoderKLCogVideoX, VaeOp, VaeRunOptions};
use crate::models::transformers::{CogVideoXTransformer3DModel, TransformerConfig};
use crate::noise::{NoiseSource, SuppliedNoise};
use crate::schedulers::{CogVideoXDDIMScheduler, CogVideoXDPMScheduler, SchedulerConfig};
use crate::text_encoder::TextEncoder;
use crate::variant::Variant;

pub use ddim_inversion::{EditOptions, Inversion, InvertOptions};
pub use pipeline_cogvideox::{GenerateOptions, SamplingOptions};
pub use pipeline_cogvideox_image2video::AnimateOptions;
pub use pipeline_cogvideox_video2video::VideoToVideoOptions;
pub use progress::{Progress, Stage};
use residency::Component;
pub use residency::{Residency, WeightBytes};
use sampling::Stepper;

/// Where the models run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceKind {
    /// The first CUDA device when the library is built with `cuda` and one
    /// opens, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// An NVIDIA GPU by ordinal; needs the `cuda` build.
    Cuda(usize),
}

impl DeviceKind {
    fn open(self) -> Result<Device> {
        match self {
            DeviceKind::Cpu => Ok(Device::Cpu),
            // A machine with the driver but no usable GPU falls back to the
            // CPU rather than failing: that is what "automatic" promises.
            DeviceKind::Auto => Ok(open_cuda(0).unwrap_or(Device::Cpu)),
            DeviceKind::Cuda(i) => open_cuda(i),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(i: usize) -> Result<Device> {
    Device::new_cuda(i).map_err(|e| Error::Device(format!("cannot open CUDA device {i}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(i: usize) -> Result<Device> {
    Err(Error::Device(format!(
        "CUDA device {i} asked for, but this library was built without CUDA support (build it with `--features cuda`)"
    )))
}

/// Waits until the device has done the work this thread gave it. Every
/// public call ends so, since its results (and after `load` the pipeline
/// itself) may be used from another thread next: candle gives each host
/// thread its own CUDA stream, and nothing orders one stream's work before
/// another's. A no-op on the CPU.
pub(crate) fn end_of_call(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}

/// The compute dtype when the caller leaves it open: bf16 on a GPU (what
/// CogVideoX was trained in and what diffusers runs there), f32 on the CPU
/// (exact parity, and bf16 matmuls are slow on most CPUs).
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

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

    fn source(&self) -> SuppliedNoise<'_> {
        SuppliedNoise::new(&self.supplied, self.seed)
    }
}

/// One random draw of a call: what it is for and its shape (f32, row-major).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoiseDraw {
    pub purpose: String,
    pub shape: Vec<usize>,
}

impl NoiseDraw {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The draws a call makes, in the order supplied noise is consumed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoisePlan {
    pub draws: Vec<NoiseDraw>,
}

impl NoisePlan {
    fn push(&mut self, purpose: impl Into<String>, shape: &[usize]) {
        self.draws.push(NoiseDraw {
            purpose: purpose.into(),
            shape: shape.to_vec(),
        });
    }

    /// Values the whole call takes.
    pub fn total(&self) -> usize {
        self.draws.iter().map(NoiseDraw::len).sum()
    }

    /// Supplied noise must cover whole draws: all of them, or a prefix that
    /// ends at a draw boundary (the seed supplies the rest). Anything else is
    /// a caller mistake that would otherwise go unnoticed.
    pub fn check_supplied(&self, len: usize) -> Result<()> {
        let mut end = 0;
        if len == 0 {
            return Ok(());
        }
        for d in &self.draws {
            end += d.len();
            if end == len {
                return Ok(());
            }
        }
        Err(Error::invalid(format!(
            "noise_len {len} does not match this call's draws, which take {} values in all: {}; pass all of them or a prefix ending at a draw boundary",
            self.total(),
            self.summary()
        )))
    }

    /// "initial latents [1, 3, 16, 8, 12] (4608 values), 3 DPM step draws of [..] (4608 each)".
    fn summary(&self) -> String {
        let mut parts = Vec::new();
        let mut i = 0;
        while i < self.draws.len() {
            let d = &self.draws[i];
            let is_step = |x: &NoiseDraw| x.purpose.starts_with("DPM step") && x.shape == d.shape;
            let mut j = i + 1;
            if is_step(d) {
                while j < self.draws.len() && is_step(&self.draws[j]) {
                    j += 1;
                }
            }
            parts.push(if j - i > 1 {
                format!(
                    "{} DPM step draws of {:?} ({} each)",
                    j - i,
                    d.shape,
                    d.len()
                )
            } else {
                format!("{} {:?} ({} values)", d.purpose, d.shape, d.len())
            });
            i = j;
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
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

/// The models' weight bytes in their compute dtypes, from the headers, with
/// the largest block of the T5 encoder (`encoder.block.N.`) and of the
/// transformer (`transformer_blocks.N.`) and what lies outside the blocks.
fn count_weights(ckpt: &Checkpoint, text_dtype: DType, dtype: DType) -> Result<WeightBytes> {
    // (all, largest block, outside the blocks)
    let count = |component: &str, stem: &str, blocks: &str, elem: DType| -> Result<[u64; 3]> {
        let mut per_block = std::collections::HashMap::<String, u64>::new();
        let (mut total, mut rest) = (0, 0);
        for (name, n) in checkpoint::tensor_counts(&ckpt.component_dir(component)?, stem)? {
            let bytes = n * elem.size_in_bytes() as u64;
            total += bytes;
            match name.strip_prefix(blocks) {
                Some(tail) => {
                    let index = tail.split('.').next().unwrap_or_default();
                    *per_block.entry(index.to_string()).or_default() += bytes;
                }
                None => rest += bytes,
            }
        }
        Ok([total, per_block.values().copied().max().unwrap_or(0), rest])
    };
    let [text_encoder, text_encoder_block, text_encoder_rest] =
        count("text_encoder", "model", "encoder.block.", text_dtype)?;
    let [transformer, transformer_block, transformer_rest] = count(
        "transformer",
        "diffusion_pytorch_model",
        "transformer_blocks.",
        dtype,
    )?;
    let vae = checkpoint::weight_count(&ckpt.component_dir("vae")?, "diffusion_pytorch_model")?
        * dtype.size_in_bytes() as u64;
    Ok(WeightBytes {
        text_encoder,
        text_encoder_block,
        text_encoder_rest,
        transformer,
        transformer_block,
        transformer_rest,
        vae,
    })
}

/// A loaded CogVideoX checkpoint: text encoder, transformer, VAE and the
/// scheduler configuration.
pub struct Pipeline {
    /// Distinguishes pipelines so an inversion is only edited by its maker.
    id: u64,
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
}

impl Pipeline {
    /// Loads every component of a diffusers-layout checkpoint folder.
    pub fn load(root: impl AsRef<std::path::Path>, opts: &LoadOptions) -> Result<Self> {
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
        let transformer_cfg: TransformerConfig = checkpoint::read_component_config(
            &ckpt.component_dir("transformer")?,
            TransformerConfig::validate,
        )?;
        let variant = Variant::detect(&transformer_cfg);
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
        let mut vae = AutoencoderKLCogVideoX::from_dir(ckpt.component_dir("vae")?, dtype, &device)?;
        if opts.vae_tiling {
            vae.set_tiling(Some(vae.default_tiling()))?;
        }
        let weight_bytes = count_weights(&ckpt, text_dtype, dtype)?;
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut pipeline = Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            variant,
            text_encoder: text_encoder_loader(&ckpt, text_dtype, &device, false),
            transformer: transformer_loader(&ckpt, dtype, &device, false),
            transformer_cfg,
            vae,
            residency: Residency::Resident,
            weight_bytes,
            memory_budget: opts.memory_budget,
            estimated_peak: Default::default(),
            scheduler,
            device,
            dtype,
        };
        let residency = pipeline.choose_residency(opts);
        pipeline.residency = residency;
        let streamed = residency == Residency::Streamed;
        let kept = residency != Residency::PerComponent;
        // Each model is loaded once here in every mode, which checks its
        // files; per use, it is dropped before the next one is loaded, so
        // that loading too holds one large model at a time.
        let transformer = transformer_loader(&ckpt, dtype, &pipeline.device, streamed);
        let model = transformer.get()?;
        pipeline.transformer = if kept {
            Component::Kept(model)
        } else {
            drop(model);
            transformer
        };
        let text_encoder = text_encoder_loader(&ckpt, text_dtype, &pipeline.device, streamed);
        let model = text_encoder.get()?;
        check_components(
            &ckpt,
            &pipeline.transformer_cfg,
            pipeline.vae.config(),
            model.encoder().config().d_model,
        )?;
        pipeline.text_encoder = if kept {
            Component::Kept(model)
        } else {
            drop(model);
            text_encoder
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

    /// Memory in use and planned; see [`MemoryReport`].
    pub fn memory_report(&self) -> MemoryReport {
        let (peak_rss, current_rss) = match crate::memory::rss_bytes() {
            Some((peak, current)) => (Some(peak), Some(current)),
            None => (None, None),
        };
        MemoryReport {
            residency: self.residency,
            weights: self.weight_bytes,
            kept_weight_bytes: self.weight_bytes.kept(self.residency),
            default_call_bytes: self.default_call_bytes(),
            estimated_peak_bytes: self
                .estimated_peak
                .load(std::sync::atomic::Ordering::Relaxed),
            peak_rss_bytes: peak_rss,
            current_rss_bytes: current_rss,
        }
    }

    /// `Auto`: see [`residency::choose`], for a default-size call with
    /// guidance. The budget is `memory_budget`, else what the device has
    /// free now: host RAM, or the GPU driver's free memory, which the VAE
    /// loaded before the choice has reduced, so it is added back.
    fn choose_residency(&self, opts: &LoadOptions) -> Residency {
        match opts.residency {
            Residency::Auto => {}
            chosen => return chosen,
        }
        let budget = match opts.memory_budget {
            Some(b) => b,
            None => match crate::memory::device_available_bytes(&self.device) {
                Some(b) if self.device.is_cpu() => b,
                Some(b) => b.saturating_add(self.weight_bytes.vae),
                None => return Residency::Resident,
            },
        };
        residency::choose(&self.weight_bytes, self.default_call_bytes(), budget)
    }

    fn default_call_bytes(&self) -> u64 {
        let (h, w, t) = self.default_video_size();
        self.sampling_peak_bytes(h, w, t, 2)
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
        let cfg = &self.transformer_cfg;
        let frames = if self.variant.is_image_to_video() {
            49
        } else {
            cfg.sample_frames
        };
        (cfg.sample_height * 8, cfg.sample_width * 8, frames)
    }

    /// Steps any sampling call accepts: 1..=the scheduler's training steps.
    pub fn max_steps(&self) -> usize {
        self.scheduler.max_steps()
    }

    pub(crate) fn check_steps(&self, steps: usize) -> Result<()> {
        if steps == 0 || steps > self.max_steps() {
            return Err(Error::invalid(format!(
                "steps must be between 1 and {}, got {steps}",
                self.max_steps()
            )));
        }
        Ok(())
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

    /// Estimated peak working memory (bytes, beyond the loaded weights) of
    /// sampling a `height x width x frames` clip: the transformer's block
    /// activations for every sample in the batch (two with classifier-free
    /// guidance, twice that with editing's reference latents) and one chunk
    /// of attention scores.
    fn sampling_peak_bytes(&self, height: usize, width: usize, frames: usize, batch: u64) -> u64 {
        let cfg = &self.transformer_cfg;
        let (f, _) = self.latent_frames(frames);
        let p = cfg.patch_size as u64;
        let tokens = (f as u64 / cfg.patch_size_t.unwrap_or(1) as u64)
            * (height as u64 / 8 / p)
            * (width as u64 / 8 / p)
            + cfg.max_text_seq_length as u64;
        let elem = if self.dtype == DType::F32 { 4 } else { 2 };
        // Block input, norms, q/k/v, attention output and the 4x feed-forward
        // hidden state with its GELU, the fused CPU attention's transposed
        // keys: about 17 hidden-sized tensors, some f32.
        let activations = 17 * batch * tokens * cfg.inner_dim() as u64 * elem;
        // The fused f32 CPU attention holds a block of scores per thread and
        // the feed-forward a chunk of tokens; the generic path a chunk of
        // scores and its softmax.
        let scores = if self.device.is_cpu() && self.dtype == DType::F32 {
            256 << 20
        } else {
            2 * 4 * crate::models::attention::MAX_SCORE_ELEMENTS as u64
        };
        // Latents, model inputs and outputs, scheduler temporaries (f32).
        let latents =
            10 * batch * (f * self.latent_channels() * (height / 8) * (width / 8)) as u64 * 4;
        activations + scores + latents
    }

    /// Estimated peak working memory of a VAE encode or decode of a
    /// `height x width x frames` clip (pixels): the VAE's own model of its
    /// buffers, with a quarter more for what it leaves out (measured within
    /// 10% of the real peak) and the input's copy in the model dtype.
    fn vae_peak_bytes(
        &self,
        op: VaeOp,
        height: usize,
        width: usize,
        frames: usize,
        tiling: &VaeTiling,
    ) -> Result<u64> {
        let tiles = self.vae.resolve_tiling(tiling)?;
        let elem = if self.dtype == DType::F32 { 4 } else { 2 };
        let (f, h, w, input) = match op {
            VaeOp::Encode => (frames, height, width, 3 * frames * height * width),
            VaeOp::Decode => {
                let f = (frames - 1) / 4 + 1;
                let (h, w) = (height / 8, width / 8);
                (f, h, w, f * self.latent_channels() * h * w)
            }
        };
        let estimate = self.vae.estimate_peak_bytes(op, f, h, w, tiles.as_ref());
        Ok(estimate + estimate / 4 + (input as u64) * elem)
    }

    /// Bytes a call may use beyond the weights kept between calls: nine
    /// tenths of what the device has free (host RAM, or the GPU driver's
    /// free memory) and of the budget less the kept weights; `None` when
    /// neither is known.
    fn room(&self) -> Option<u64> {
        let available = crate::memory::device_available_bytes(&self.device).map(|a| a / 10 * 9);
        let budget = self
            .memory_budget
            .map(|b| (b / 10 * 9).saturating_sub(self.weight_bytes.kept(self.residency)));
        match (available, budget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Records (with `record`) `need` bytes of working memory as the
    /// call's estimated peak (with the `holds` bytes of weights it holds)
    /// and, on the CPU,
    /// refuses a call that cannot fit with [`Error::OutOfMemory`] (GPU
    /// allocation failures are errors already). The budget plans, it does
    /// not refuse: a caller may know better than the estimate.
    fn reserve(&self, need: u64, holds: u64, what: &str, record: bool) -> Result<()> {
        if record {
            self.estimated_peak.store(
                need.saturating_add(holds),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        if self.device.is_cpu() {
            crate::memory::ensure_fits(need, what)?;
        }
        Ok(())
    }

    /// The tiling a decode uses: `Model` with tiling off becomes the
    /// default tiles when the untiled decode would not fit ([`Self::room`]).
    fn decode_tiling(
        &self,
        height: usize,
        width: usize,
        frames: usize,
        tiling: VaeTiling,
    ) -> Result<VaeTiling> {
        if tiling != VaeTiling::Model || self.vae.tiling().is_some() {
            return Ok(tiling);
        }
        let untiled = self.vae_peak_bytes(VaeOp::Decode, height, width, frames, &VaeTiling::Off)?;
        Ok(match self.room() {
            Some(room) if untiled > room => VaeTiling::Default,
            _ => VaeTiling::Model,
        })
    }

    /// Refuses a decode whose working memory cannot fit, after choosing its
    /// tiling as [`Self::decode_latents`] does; `record` as in
    /// [`Self::reserve`].
    pub(crate) fn check_decode_fits(
        &self,
        height: usize,
        width: usize,
        frames: usize,
        opts: &DecodeOptions,
        record: bool,
    ) -> Result<()> {
        let tiling = self.decode_tiling(height, width, frames, opts.tiling)?;
        let need = self.vae_peak_bytes(VaeOp::Decode, height, width, frames, &tiling)?;
        self.reserve(
            need,
            self.weight_bytes.kept(self.residency),
            &format!("decoding a {width}x{height} clip of {frames} frames"),
            record,
        )
    }

    /// Refuses, with [`Error::OutOfMemory`], a call whose working memory
    /// cannot fit (see [`Self::reserve`]).
    pub(crate) fn check_fits(
        &self,
        height: usize,
        width: usize,
        frames: usize,
        guidance: bool,
        reference: bool,
    ) -> Result<()> {
        let batch = (1 + guidance as u64) * (1 + reference as u64);
        let decode = self.decode_tiling(height, width, frames, VaeTiling::Model)?;
        // The clip itself, in and out, as f32 pixels.
        let pixels = 3 * (frames * height * width) as u64 * 4;
        let need = pixels
            + self
                .sampling_peak_bytes(height, width, frames, batch)
                .max(self.vae_peak_bytes(
                    VaeOp::Encode,
                    height,
                    width,
                    frames,
                    &VaeTiling::Model,
                )?)
                .max(self.vae_peak_bytes(VaeOp::Decode, height, width, frames, &decode)?);
        self.reserve(
            need,
            self.weight_bytes.peak(self.residency),
            &format!("a {width}x{height} clip of {frames} frames"),
            true,
        )
    }

    /// Latent frames for `frames` pixel frames, and how many padding latent
    /// frames 1.5 models add in front of the sample (diffusers pads at the end
    /// of the noise and drops that many from the front before decoding).
    fn latent_frames(&self, frames: usize) -> (usize, usize) {
        let f = (frames - 1) / 4 + 1;
        match self.transformer_cfg.patch_size_t {
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
        let text_encoder = self.text_encoder.get()?;
        let cond = text_encoder.encode_prompts(&[prompt])?;
        let uncond = if negative.is_empty() {
            text_encoder.empty_prompt_embedding()?
        } else {
            text_encoder.encode_prompts(&[negative])?
        };
        progress.report(Stage::EncodeText, 1, 1)?;
        Ok((uncond, cond))
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
