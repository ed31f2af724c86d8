//! The pipeline's memory plan: estimates of a call's working memory from
//! the shapes, the residency `Auto` picks at load time, the decode tiling
//! chosen to fit, and the refusals made before anything is allocated (see
//! [`crate::memory`]).

use candle_core::{DType, Device};

use super::residency::{self, Residency, WeightBytes};
use super::{DecodeOptions, LoadOptions, MemoryReport, Pipeline, VaeTiling, latent_frames};
use crate::checkpoint::{self, Checkpoint};
use crate::error::Result;
use crate::hooks::CacheConfig;
use crate::models::autoencoders::VaeOp;
use crate::models::transformers::TransformerConfig;

/// The residency `opts` asks for; for `Auto` see [`residency::choose`],
/// for a default-size call with guidance needing `default_call` bytes. The
/// budget is `memory_budget`, else what the device has free now: host RAM,
/// or the GPU driver's free memory, which the VAE loaded before the choice
/// has reduced, so it is added back.
pub(super) fn choose_residency(
    opts: &LoadOptions,
    device: &Device,
    weights: &WeightBytes,
    default_call: impl FnOnce() -> u64,
) -> Residency {
    match opts.residency {
        Residency::Auto => {}
        chosen => return chosen,
    }
    let budget = match opts.memory_budget {
        Some(b) => b,
        None => match crate::memory::device_available_bytes(device) {
            Some(b) if device.is_cpu() => b,
            Some(b) => b.saturating_add(weights.vae),
            None => return Residency::Resident,
        },
    };
    residency::choose(weights, default_call(), budget)
}

/// Estimated peak working memory (bytes, beyond the loaded weights) of
/// sampling a `height x width x frames` clip: the transformer's block
/// activations for every sample in the batch (two with classifier-free
/// guidance, twice that with editing's reference latents) and one chunk
/// of attention scores.
pub(super) fn sampling_peak_bytes(
    cfg: &TransformerConfig,
    latent_channels: usize,
    device: &Device,
    dtype: DType,
    [height, width, frames]: [usize; 3],
    batch: u64,
) -> u64 {
    let (f, _) = latent_frames(cfg, frames);
    let p = cfg.patch_size as u64;
    let tokens = (f as u64 / cfg.patch_size_t.unwrap_or(1) as u64)
        * (height as u64 / 8 / p)
        * (width as u64 / 8 / p)
        + cfg.max_text_seq_length as u64;
    let elem = if dtype == DType::F32 { 4 } else { 2 };
    // Block input, norms, q/k/v, attention output and the 4x feed-forward
    // hidden state with its GELU, the fused CPU attention's transposed
    // keys: about 17 hidden-sized tensors, some f32.
    let activations = 17 * batch * tokens * cfg.inner_dim() as u64 * elem;
    // The fused f32 CPU attention holds a block of scores per thread and
    // the feed-forward a chunk of tokens; the generic path a chunk of
    // scores and its softmax.
    let scores = if crate::models::cpu::applies_to(device, dtype) {
        256 << 20
    } else {
        2 * 4 * crate::models::attention::MAX_SCORE_ELEMENTS as u64
    };
    // Latents, model inputs and outputs, scheduler temporaries (f32).
    let latents = 10 * batch * (f * latent_channels * (height / 8) * (width / 8)) as u64 * 4;
    activations + scores + latents
}

/// The tokens of the transformer's joint stream for a clip (text included).
fn stream_tokens(cfg: &TransformerConfig, [height, width, frames]: [usize; 3]) -> u64 {
    let (f, _) = latent_frames(cfg, frames);
    let p = cfg.patch_size as u64;
    (f as u64 / cfg.patch_size_t.unwrap_or(1) as u64)
        * (height as u64 / 8 / p)
        * (width as u64 / 8 / p)
        + cfg.max_text_seq_length as u64
}

/// Bytes a step cache keeps while sampling: its copies of the token stream
/// ([`CacheConfig::stream_copies`]) for every sample of the batch, and
/// FasterCache's difference of the two guidance branches (one f32 latent).
pub(super) fn cache_bytes(
    cfg: &TransformerConfig,
    dtype: DType,
    size: [usize; 3],
    batch: u64,
    cache: &CacheConfig,
) -> u64 {
    let elem = dtype.size_in_bytes() as u64;
    let streams = cache
        .stream_copies(cfg.num_layers)
        .saturating_mul(batch * stream_tokens(cfg, size) * cfg.inner_dim() as u64 * elem);
    let [height, width, frames] = size;
    let latent = match cache {
        CacheConfig::FasterCache(_) => {
            let (f, _) = latent_frames(cfg, frames);
            let channels = cfg.out_channels.unwrap_or(cfg.in_channels) as u64;
            f as u64 * channels * (height / 8) as u64 * (width / 8) as u64 * 4
        }
        _ => 0,
    };
    streams + latent
}

/// The models' weight bytes in their compute dtypes, from the headers, with
/// the largest block of the T5 encoder (`encoder.block.N.`) and of the
/// transformer (`transformer_blocks.N.`) and what lies outside the blocks.
pub(super) fn count_weights(
    ckpt: &Checkpoint,
    text_dtype: DType,
    dtype: DType,
) -> Result<WeightBytes> {
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

impl Pipeline {
    /// The memory estimate's share for `cache` in a `height x width x
    /// frames` call (bytes): the most its kept tensors take, for the call's
    /// batch (`guidance`: both branches; `reference`: prompt editing's
    /// reference rows too). [`crate::hooks::CacheReport::peak_held_bytes`]
    /// is what a call held.
    pub fn cache_estimate_bytes(
        &self,
        height: usize,
        width: usize,
        frames: usize,
        guidance: bool,
        reference: bool,
        cache: &CacheConfig,
    ) -> u64 {
        let batch = (1 + guidance as u64) * (1 + reference as u64);
        self.cache_bytes(height, width, frames, batch, cache)
    }

    /// What `cache` keeps while sampling (see [`cache_bytes`]).
    pub(crate) fn cache_bytes(
        &self,
        height: usize,
        width: usize,
        frames: usize,
        batch: u64,
        cache: &CacheConfig,
    ) -> u64 {
        cache_bytes(
            &self.transformer_cfg,
            self.dtype,
            [height, width, frames],
            batch,
            cache,
        )
    }

    pub(super) fn sampling_peak_bytes(
        &self,
        height: usize,
        width: usize,
        frames: usize,
        batch: u64,
    ) -> u64 {
        sampling_peak_bytes(
            &self.transformer_cfg,
            self.latent_channels(),
            &self.device,
            self.dtype,
            [height, width, frames],
            batch,
        )
    }

    /// Estimated peak working memory of a VAE encode or decode of a
    /// `height x width x frames` clip (pixels): the VAE's own model of its
    /// buffers, with a quarter more for what it leaves out (measured within
    /// 10% of the real peak) and the input's copy in the model dtype.
    pub(super) fn vae_peak_bytes(
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

    /// Bytes a call may use beyond the weights kept between calls: the
    /// [`plannable`](crate::memory::plannable) part of what the device has
    /// free (host RAM, or the GPU driver's free memory) and of the budget,
    /// less the kept weights; `None` when neither is known.
    pub(super) fn room(&self) -> Option<u64> {
        use crate::memory::{device_available_bytes, plannable};
        let available = device_available_bytes(&self.device).map(plannable);
        let budget = self
            .memory_budget
            .map(|b| plannable(b).saturating_sub(self.weight_bytes.kept(self.residency)));
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
    pub(super) fn reserve(&self, need: u64, holds: u64, what: &str, record: bool) -> Result<()> {
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
    pub(super) fn decode_tiling(
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
        self.check_fits_cached(
            height,
            width,
            frames,
            (guidance, reference),
            &CacheConfig::Off,
        )
    }

    /// [`Self::check_fits`] for a call that denoises with `cache`, whose
    /// kept tensors come on top of the sampling peak.
    pub(crate) fn check_fits_cached(
        &self,
        height: usize,
        width: usize,
        frames: usize,
        (guidance, reference): (bool, bool),
        cache: &CacheConfig,
    ) -> Result<()> {
        let batch = (1 + guidance as u64) * (1 + reference as u64);
        let decode = self.decode_tiling(height, width, frames, VaeTiling::Model)?;
        // LoRA: what is already held is part of the peak, what the call
        // prepares also of what must fit
        let (lora_held, lora_call) = self.lora_bytes();
        // The clip itself, in and out, as f32 pixels.
        let pixels = 3 * (frames * height * width) as u64 * 4;
        let need = pixels
            + lora_call
            + self
                .sampling_peak_bytes(height, width, frames, batch)
                .saturating_add(self.cache_bytes(height, width, frames, batch, cache))
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
            self.weight_bytes.peak(self.residency) + lora_held,
            &format!("a {width}x{height} clip of {frames} frames"),
            true,
        )
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

    pub(super) fn default_call_bytes(&self) -> u64 {
        let (h, w, t) = self.default_video_size();
        self.sampling_peak_bytes(h, w, t, 2)
    }
}
