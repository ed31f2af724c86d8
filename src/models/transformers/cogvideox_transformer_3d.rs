//! `CogVideoXTransformer3DModel` (diffusers
//! `models/transformers/cogvideox_transformer_3d.py`) for every published
//! variant: 2b (sincos positions), 5b (3D RoPE), 5b-I2V (RoPE plus a learned
//! table, 32 input channels), 1.5-5B (temporal patches) and 1.5-5B-I2V (plus
//! the `ofs` embedding).
//!
//! Layouts follow diffusers: latents are `[B, F, C, H, W]` (frames first),
//! text embeddings `[B, L, text_dim]`, the token sequence is text first.

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder, layer_norm, linear, linear_b};
use serde::Deserialize;

use super::cpu::{self, Chunk};
use crate::checkpoint::{
    Checkpoint, check_field, check_positive, load_weights, read_component_config,
};
use crate::hooks::StepCache;
use crate::models::attention::{self, Attention, FeedForward};
use crate::models::cpu::applies;
use crate::models::embeddings::{
    RopeGrid, RotaryEmbedding, TimestepEmbedding, resize_crop_region_for_grid, rope_half_tables,
    rotary_pos_embed_3d, sincos_pos_embed_3d, timestep_embedding,
};
use crate::models::layers::Layers;
use crate::models::lora::{self, BlockLora, LoraSite, LoraTerm};
use crate::models::poll;

fn default_true() -> bool {
    true
}
fn default_out_channels() -> Option<usize> {
    Some(16)
}
fn default_temporal_compression() -> usize {
    4
}
fn default_text_len() -> usize {
    226
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_spatial_interp() -> f64 {
    1.875
}
fn default_temporal_interp() -> f64 {
    1.0
}
fn default_gelu() -> String {
    "gelu-approximate".into()
}
fn default_silu() -> String {
    "silu".into()
}

/// `transformer/config.json`. Shape-defining fields are required (every
/// published config has them); the rest default as in diffusers, so older
/// configs that predate a field (2b has no `use_rotary_positional_embeddings`)
/// load as diffusers loads them.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub in_channels: usize,
    #[serde(default = "default_out_channels")]
    pub out_channels: Option<usize>,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    pub time_embed_dim: usize,
    #[serde(default)]
    pub ofs_embed_dim: Option<usize>,
    pub text_embed_dim: usize,
    pub num_layers: usize,
    #[serde(default = "default_true")]
    pub attention_bias: bool,
    pub sample_width: usize,
    pub sample_height: usize,
    pub sample_frames: usize,
    pub patch_size: usize,
    #[serde(default)]
    pub patch_size_t: Option<usize>,
    #[serde(default = "default_temporal_compression")]
    pub temporal_compression_ratio: usize,
    #[serde(default = "default_text_len")]
    pub max_text_seq_length: usize,
    #[serde(default = "default_gelu")]
    pub activation_fn: String,
    #[serde(default = "default_silu")]
    pub timestep_activation_fn: String,
    #[serde(default = "default_true")]
    pub norm_elementwise_affine: bool,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_spatial_interp")]
    pub spatial_interpolation_scale: f64,
    #[serde(default = "default_temporal_interp")]
    pub temporal_interpolation_scale: f64,
    #[serde(default)]
    pub use_rotary_positional_embeddings: bool,
    #[serde(default)]
    pub use_learned_positional_embeddings: bool,
    #[serde(default = "default_true")]
    pub patch_bias: bool,
}

impl Config {
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// Latent frames of the default sample (`sample_frames` counts pixel frames).
    pub fn sample_latent_frames(&self) -> usize {
        (self.sample_frames - 1) / self.temporal_compression_ratio + 1
    }

    /// Checks what this port implements, and that every field feeding a
    /// size, count or division is in range, so an unusual or hostile config
    /// fails at load time with a message rather than computing something
    /// else (or dividing by zero) later. The ranges hold every published
    /// config with room to spare.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.activation_fn != "gelu-approximate" {
            return Err(format!(
                "activation_fn `{}` is not supported; accepted: gelu-approximate",
                self.activation_fn
            ));
        }
        if self.timestep_activation_fn != "silu" {
            return Err(format!(
                "timestep_activation_fn `{}` is not supported; accepted: silu",
                self.timestep_activation_fn
            ));
        }
        if !self.norm_elementwise_affine {
            return Err("norm_elementwise_affine false is not supported; accepted: true".into());
        }
        if self.use_learned_positional_embeddings && !self.use_rotary_positional_embeddings {
            return Err(
                "use_learned_positional_embeddings true without use_rotary_positional_embeddings is not supported; accepted: learned positions only with RoPE (diffusers refuses the rest)"
                    .into(),
            );
        }
        check_field("num_attention_heads", self.num_attention_heads, 1..=256)?;
        check_field("attention_head_dim", self.attention_head_dim, 1..=1024)?;
        let d = self.inner_dim();
        if !(16..=16384).contains(&d) || !d.is_multiple_of(16) {
            return Err(format!(
                "num_attention_heads x attention_head_dim is {d}; accepted: a multiple of 16 from 16 to 16384"
            ));
        }
        if self.use_rotary_positional_embeddings && !self.attention_head_dim.is_multiple_of(16) {
            return Err(format!(
                "attention_head_dim {} is out of range for 3D RoPE; accepted: multiples of 16",
                self.attention_head_dim
            ));
        }
        check_field("in_channels", self.in_channels, 1..=1024)?;
        if let Some(c) = self.out_channels {
            check_field("out_channels", c, 1..=1024)?;
        }
        let out = self.out_channels();
        if self.in_channels != out && self.in_channels != 2 * out {
            return Err(format!(
                "in_channels {} with out_channels {out}; accepted: in_channels equal to out_channels (text-to-video) or twice it (image-to-video)",
                self.in_channels
            ));
        }
        check_field("time_embed_dim", self.time_embed_dim, 1..=16384)?;
        if let Some(ofs) = self.ofs_embed_dim
            && ofs != self.time_embed_dim
        {
            return Err(format!(
                "ofs_embed_dim {ofs} must equal time_embed_dim {}",
                self.time_embed_dim
            ));
        }
        check_field("text_embed_dim", self.text_embed_dim, 1..=65536)?;
        check_field("num_layers", self.num_layers, 1..=256)?;
        check_field("patch_size", self.patch_size, 1..=16)?;
        if let Some(pt) = self.patch_size_t {
            check_field("patch_size_t", pt, 1..=16)?;
        }
        // The pipelines turn 4k+1 pixel frames into k+1 latent frames, as
        // every CogVideoX VAE does.
        check_field(
            "temporal_compression_ratio",
            self.temporal_compression_ratio,
            4..=4,
        )?;
        if self.sample_frames > MAX_SAMPLE_FRAMES || self.sample_frames % 4 != 1 {
            return Err(format!(
                "sample_frames {} is out of range; accepted: 4k+1 from 1 to {MAX_SAMPLE_FRAMES}",
                self.sample_frames
            ));
        }
        let p = self.patch_size;
        for (field, v) in [
            ("sample_height", self.sample_height),
            ("sample_width", self.sample_width),
        ] {
            if !(p..=MAX_SAMPLE_SIDE).contains(&v) || !v.is_multiple_of(p) {
                return Err(format!(
                    "{field} {v} is out of range; accepted: a multiple of patch_size {p} from {p} to {MAX_SAMPLE_SIDE} (latent pixels)"
                ));
            }
        }
        // The pipelines' loading checks it against the text encoder's length.
        check_field("max_text_seq_length", self.max_text_seq_length, 1..=4096)?;
        check_positive("norm_eps", self.norm_eps, 1.0)?;
        if !(0.0..=1.0).contains(&self.freq_shift) {
            return Err(format!(
                "freq_shift {} is out of range; accepted: 0 to 1",
                self.freq_shift
            ));
        }
        check_positive(
            "spatial_interpolation_scale",
            self.spatial_interpolation_scale,
            1000.0,
        )?;
        check_positive(
            "temporal_interpolation_scale",
            self.temporal_interpolation_scale,
            1000.0,
        )?;
        Ok(())
    }
}

/// Largest default sample side in latent pixels: the pipelines generate at
/// most 4096 pixels a side, 8 pixels per latent pixel.
const MAX_SAMPLE_SIDE: usize = 512;
/// Largest default frame count: the pipelines generate at most 1021 frames.
const MAX_SAMPLE_FRAMES: usize = 1021;

/// `CogVideoXLayerNormZero`: one LayerNorm shared by the video and text
/// streams, modulated by six chunks (shift, scale, gate, enc_shift,
/// enc_scale, enc_gate) of a projection of the time embedding.
#[derive(Debug, Clone)]
struct LayerNormZero {
    linear: Linear,
    norm: LayerNorm,
    eps: f64,
}

impl LayerNormZero {
    fn load(vb: VarBuilder, temb_dim: usize, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            linear: linear(temb_dim, 6 * dim, vb.pp("linear"))?,
            norm: layer_norm(dim, eps, vb.pp("norm"))?,
            eps,
        })
    }

    /// The six chunks, `[B, 6 D]`, with `lora`'s unfused adapters.
    fn mods(&self, temb_silu: &Tensor, lora: &[LoraTerm]) -> Result<Tensor> {
        lora::add_unfused(self.linear.forward(temb_silu)?, temb_silu, lora)
    }

    /// The modulated norm of the joint `[B, T + N, D]` tokens (text first).
    fn forward(&self, x: &Tensor, text_len: usize, mods: &Tensor) -> Result<Tensor> {
        if let (true, Some(bias)) = ([x, mods].iter().all(|t| applies(t)), self.norm.bias()) {
            return cpu::modulated_norm(x, text_len, (self.norm.weight(), bias, self.eps), mods);
        }
        self.forward_generic(x, text_len, mods)
    }

    /// [`Self::forward`] by candle ops, for every dtype and device.
    fn forward_generic(&self, x: &Tensor, text_len: usize, mods: &Tensor) -> Result<Tensor> {
        let s = x.dim(1)?;
        let modulate = |x: &Tensor, shift: Chunk, scale: Chunk| -> Result<Tensor> {
            self.norm
                .forward(x)?
                .broadcast_mul(&(mod_chunk(mods, scale)? + 1.0)?)?
                .broadcast_add(&mod_chunk(mods, shift)?)
        };
        Tensor::cat(
            &[
                modulate(&x.narrow(1, 0, text_len)?, Chunk::EncShift, Chunk::EncScale)?,
                modulate(
                    &x.narrow(1, text_len, s - text_len)?,
                    Chunk::Shift,
                    Chunk::Scale,
                )?,
            ],
            1,
        )
    }
}

/// One chunk of `[B, 6 D]` modulations as `[B, 1, D]`.
fn mod_chunk(mods: &Tensor, c: Chunk) -> Result<Tensor> {
    let d = mods.dim(1)? / 6;
    mods.narrow(1, c as usize * d, d)?.unsqueeze(1)
}

/// `x + y * gate` over the joint tokens, text rows gated by `EncGate`.
fn gated_add(x: &Tensor, y: &Tensor, text_len: usize, mods: &Tensor) -> Result<Tensor> {
    if [x, y, mods].iter().all(|t| applies(t)) {
        return cpu::gated_add(x, y, text_len, mods);
    }
    gated_add_generic(x, y, text_len, mods)
}

/// [`gated_add`] by candle ops, for every dtype and device.
fn gated_add_generic(x: &Tensor, y: &Tensor, text_len: usize, mods: &Tensor) -> Result<Tensor> {
    let s = x.dim(1)?;
    let part = |start: usize, len: usize, gate: Chunk| -> Result<Tensor> {
        x.narrow(1, start, len)?
            + y.narrow(1, start, len)?
                .broadcast_mul(&mod_chunk(mods, gate)?)?
    };
    Tensor::cat(
        &[
            part(0, text_len, Chunk::EncGate)?,
            part(text_len, s - text_len, Chunk::Gate)?,
        ],
        1,
    )
}

/// Produces a block's attention output given the computation of it (which
/// it may skip, reusing an earlier output).
type AttentionHook<'a> = dyn FnMut(&mut dyn FnMut() -> Result<Tensor>) -> Result<Tensor> + 'a;

/// `CogVideoXBlock`.
#[derive(Debug, Clone)]
pub struct CogVideoXBlock {
    norm1: LayerNormZero,
    attn1: Attention,
    norm2: LayerNormZero,
    ff: FeedForward,
}

impl CogVideoXBlock {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let dim = cfg.inner_dim();
        Ok(Self {
            norm1: LayerNormZero::load(vb.pp("norm1"), cfg.time_embed_dim, dim, cfg.norm_eps)?,
            attn1: Attention::load(
                vb.pp("attn1"),
                dim,
                cfg.num_attention_heads,
                cfg.attention_head_dim,
                cfg.attention_bias,
            )?,
            norm2: LayerNormZero::load(vb.pp("norm2"), cfg.time_embed_dim, dim, cfg.norm_eps)?,
            ff: FeedForward::load(vb.pp("ff"), dim, 4 * dim)?,
        })
    }

    /// One block over the joint `[B, T + N, D]` tokens, the first
    /// `text_len` of each sample text (diffusers keeps the two streams apart
    /// and concatenates them for attention and the feed-forward; the sums are
    /// the same). `temb_silu` is `silu(temb)`, shared by every block's
    /// modulations; `reference` selects the reference attention of
    /// DDIM-inversion editing; `lora` adds unfused adapters to the linear
    /// layers.
    pub fn forward(
        &self,
        x: &Tensor,
        text_len: usize,
        temb_silu: &Tensor,
        rope: Option<&RotaryEmbedding>,
        reference: bool,
        lora: Option<&BlockLora>,
    ) -> Result<Tensor> {
        self.forward_cached(
            x,
            text_len,
            temb_silu,
            (rope, reference),
            lora,
            &mut |compute| compute(),
        )
    }

    /// [`Self::forward`] with the attention output (`[B, T + N, D]`, after
    /// the output projection) produced by `attention`, which may call the
    /// computation it is given or reuse an earlier output (step caching).
    fn forward_cached(
        &self,
        x: &Tensor,
        text_len: usize,
        temb_silu: &Tensor,
        (rope, reference): (Option<&RotaryEmbedding>, bool),
        lora: Option<&BlockLora>,
        attention: &mut AttentionHook,
    ) -> Result<Tensor> {
        // Polled between the parts too: at the 5b model's default size each
        // is a second or more of CPU work.
        use crate::models::poll::check;
        let terms = |site| lora.map_or(&[][..], |l| l.terms(site));
        let mods = self.norm1.mods(temb_silu, terms(LoraSite::Norm1))?;
        let a = attention(&mut || {
            let h = self.norm1.forward(x, text_len, &mods)?;
            check()?;
            self.attn1.forward(&h, text_len, rope, reference, lora)
        })?;
        check()?;
        let x = gated_add(x, &a, text_len, &mods)?;
        check()?;

        let mods = self.norm2.mods(temb_silu, terms(LoraSite::Norm2))?;
        let h = self.norm2.forward(&x, text_len, &mods)?;
        check()?;
        let ff = self.ff.forward_lora(&h, lora)?;
        check()?;
        gated_add(&x, &ff, text_len, &mods)
    }

    /// This block with `lora`'s adapters fused into its linear layers (the
    /// other weights shared).
    /// The weights of the layers that take adapters.
    pub fn lora_weights(&self) -> Vec<(LoraSite, &Tensor)> {
        let mut w = vec![
            (LoraSite::Norm1, self.norm1.linear.weight()),
            (LoraSite::Norm2, self.norm2.linear.weight()),
        ];
        w.extend(self.attn1.lora_weights());
        w.extend(self.ff.lora_weights());
        w
    }

    pub fn fused(&self, lora: &BlockLora) -> Result<Self> {
        let norm = |n: &LayerNormZero, site| -> Result<LayerNormZero> {
            Ok(LayerNormZero {
                linear: lora::fused_linear(&n.linear, lora.terms(site))?,
                ..n.clone()
            })
        };
        Ok(Self {
            norm1: norm(&self.norm1, LoraSite::Norm1)?,
            attn1: self.attn1.fused(lora)?,
            norm2: norm(&self.norm2, LoraSite::Norm2)?,
            ff: self.ff.fused(lora)?,
        })
    }
}

/// How the latent patches are turned into tokens.
#[derive(Debug, Clone)]
enum PatchProj {
    /// 1.0: `Conv2d(k = s = p)`, stored as `[D, C, p, p]`; applied as a
    /// matmul on gathered patches, which is the same sum.
    Conv {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    /// 1.5: a Linear over `(C, pt, p, p)` patches.
    Linear(Linear),
}

/// `CogVideoXPatchEmbed`.
#[derive(Debug, Clone)]
struct PatchEmbed {
    proj: PatchProj,
    text_proj: Linear,
    learned_pos: Option<Tensor>,
}

/// The optional inputs of [`CogVideoXTransformer3DModel::forward_with`].
#[derive(Default)]
pub struct ForwardOptions<'a> {
    /// The 1.5-I2V offset value (2.0 in the pipelines).
    pub ofs: Option<f32>,
    /// From [`CogVideoXTransformer3DModel::prepare_rotary`] for RoPE models.
    pub rope: Option<&'a RotaryEmbedding>,
    /// Prompt editing's reference attention (see
    /// [`CogVideoXTransformer3DModel::forward_with_reference`]).
    pub reference: bool,
    /// Called before each block and, at most every
    /// [`poll::MIN_INTERVAL`], between pieces of a block's work; an error
    /// stops the pass.
    pub poll: Option<&'a mut dyn FnMut() -> Result<()>>,
    /// LoRA adapters, unfused or fused (see [`TransformerLora`]).
    pub lora: Option<&'a TransformerLora>,
    /// Step caching: decides what each block computes (see [`crate::hooks`]).
    pub cache: Option<&'a mut StepCache>,
}

/// The adapters a forward pass applies, per block, already scaled and in
/// the model's dtype and device. Unfused, each block adds them beside its
/// linear layers; fused, each block runs with them merged into its weights:
/// blocks kept in memory are fused once by [`Self::fuse_kept`], streamed
/// ones as they are read. The model's own weights are never changed, so
/// dropping this restores the base model exactly.
#[derive(Debug, Clone)]
pub struct TransformerLora {
    blocks: Vec<BlockLora>,
    fused: bool,
    fused_blocks: Vec<Option<CogVideoXBlock>>,
}

impl TransformerLora {
    /// `blocks[i]` for transformer block `i`.
    pub fn new(blocks: Vec<BlockLora>, fused: bool) -> Self {
        Self {
            blocks,
            fused,
            fused_blocks: Vec::new(),
        }
    }

    pub fn is_fused(&self) -> bool {
        self.fused
    }

    /// The tensors this holds: the adapters' matrices and, fused into kept
    /// blocks, the fused layers' weights (the blocks' other layers are the
    /// model's own).
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut out = Vec::new();
        for (i, l) in self.blocks.iter().enumerate() {
            for (site, terms) in l.sites() {
                out.extend(terms.iter().flat_map(|t| [&t.a, &t.b]));
                if let Some(Some(b)) = self.fused_blocks.get(i) {
                    out.extend(
                        b.lora_weights()
                            .into_iter()
                            .filter(|(s, _)| *s == site)
                            .map(|(_, w)| w),
                    );
                }
            }
        }
        out
    }

    /// Fuses the adapters into `model`'s blocks now when they are kept in
    /// memory (a copy of each changed linear layer), so that steps run the
    /// plain blocks; streamed blocks are fused as they are read.
    pub fn fuse_kept(&mut self, model: &CogVideoXTransformer3DModel) -> Result<()> {
        if !self.fused {
            return Ok(());
        }
        if let Layers::Loaded(blocks) = &model.blocks {
            self.fused_blocks = blocks
                .iter()
                .zip(&self.blocks)
                .map(|(b, l)| (!l.is_empty()).then(|| b.fused(l)).transpose())
                .collect::<Result<_>>()?;
        }
        Ok(())
    }

    /// Block `i` (`block` as loaded) with its adapters, its attention
    /// output through `attention` (see [`CogVideoXBlock::forward_cached`]).
    fn run_block(
        &self,
        i: usize,
        block: &CogVideoXBlock,
        x: &Tensor,
        args: (usize, &Tensor, Option<&RotaryEmbedding>, bool),
        attention: &mut AttentionHook,
    ) -> Result<Tensor> {
        let (text_len, temb_silu, rope, reference) = args;
        let run = |b: &CogVideoXBlock, l, attention: &mut AttentionHook| {
            b.forward_cached(x, text_len, temb_silu, (rope, reference), l, attention)
        };
        let Some(l) = self.blocks.get(i).filter(|l| !l.is_empty()) else {
            return run(block, None, attention);
        };
        if !self.fused {
            return run(block, Some(l), attention);
        }
        match self.fused_blocks.get(i) {
            Some(Some(b)) => run(b, None, attention),
            _ => run(&block.fused(l)?, None, attention),
        }
    }
}

/// Video tokens per chunk of the output layers.
const OUTPUT_CHUNK_TOKENS: usize = 1024;

/// The CogVideoX denoising transformer.
#[derive(Debug, Clone)]
pub struct CogVideoXTransformer3DModel {
    cfg: Config,
    patch_embed: PatchEmbed,
    time_embedding: TimestepEmbedding,
    ofs_embedding: Option<TimestepEmbedding>,
    blocks: Layers<CogVideoXBlock>,
    norm_final: LayerNorm,
    norm_out_linear: Linear,
    norm_out_norm: LayerNorm,
    proj_out: Linear,
    dtype: DType,
    device: Device,
}

impl CogVideoXTransformer3DModel {
    pub fn load(vb: VarBuilder<'static>, cfg: &Config) -> Result<Self> {
        Self::load_with(vb, cfg, false)
    }

    /// [`Self::load`], with the blocks streamed from `vb` for each forward
    /// pass when `streamed` (see [`Layers`]).
    pub fn load_with(vb: VarBuilder<'static>, cfg: &Config, streamed: bool) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let dim = cfg.inner_dim();
        let p = cfg.patch_size;
        let pe = vb.pp("patch_embed");
        let proj = match cfg.patch_size_t {
            None => {
                let weight = pe.get((dim, cfg.in_channels, p, p), "proj.weight")?;
                let bias = if cfg.patch_bias {
                    Some(pe.get(dim, "proj.bias")?)
                } else {
                    None
                };
                PatchProj::Conv { weight, bias }
            }
            Some(pt) => {
                PatchProj::Linear(linear(cfg.in_channels * pt * p * p, dim, pe.pp("proj"))?)
            }
        };
        let learned_pos = if cfg.use_learned_positional_embeddings {
            let n = cfg.max_text_seq_length
                + (cfg.sample_height / p) * (cfg.sample_width / p) * cfg.sample_latent_frames();
            Some(pe.get((1, n, dim), "pos_embedding")?)
        } else {
            None
        };
        let patch_embed = PatchEmbed {
            proj,
            text_proj: linear(cfg.text_embed_dim, dim, pe.pp("text_proj"))?,
            learned_pos,
        };
        let time_embedding =
            TimestepEmbedding::load(vb.pp("time_embedding"), dim, cfg.time_embed_dim)?;
        let ofs_embedding = match cfg.ofs_embed_dim {
            Some(d) => Some(TimestepEmbedding::load(vb.pp("ofs_embedding"), d, d)?),
            None => None,
        };
        let block_cfg = cfg.clone();
        let blocks = Layers::load(
            cfg.num_layers,
            vb.pp("transformer_blocks"),
            streamed,
            move |_, vb| CogVideoXBlock::load(vb, &block_cfg),
        )?;
        let out_dim = p * p * cfg.patch_size_t.unwrap_or(1) * cfg.out_channels();
        Ok(Self {
            norm_final: layer_norm(dim, cfg.norm_eps, vb.pp("norm_final"))?,
            norm_out_linear: linear(cfg.time_embed_dim, 2 * dim, vb.pp("norm_out.linear"))?,
            norm_out_norm: layer_norm(dim, cfg.norm_eps, vb.pp("norm_out.norm"))?,
            proj_out: linear_b(dim, out_dim, true, vb.pp("proj_out"))?,
            cfg: cfg.clone(),
            patch_embed,
            time_embedding,
            ofs_embedding,
            blocks,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// Loads `transformer/` of a checkpoint. How it fits the other
    /// components and the pipeline class is the pipelines' check (see
    /// `Pipeline::load`).
    pub fn from_checkpoint(
        ckpt: &Checkpoint,
        dtype: DType,
        device: &Device,
    ) -> crate::Result<Self> {
        Self::from_checkpoint_with(ckpt, dtype, device, false)
    }

    /// [`Self::from_checkpoint`], with the blocks streamed from the
    /// checkpoint for each forward pass when `streamed`.
    pub fn from_checkpoint_with(
        ckpt: &Checkpoint,
        dtype: DType,
        device: &Device,
        streamed: bool,
    ) -> crate::Result<Self> {
        let dir = ckpt.component_dir("transformer")?;
        let cfg: Config = read_component_config(&dir, Config::validate)?;
        load_weights(&dir, "diffusion_pytorch_model", dtype, device, |vb| {
            Self::load_with(vb, &cfg, streamed)
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The 3D rotary tables for a latent of `height x width` (latent pixels)
    /// and `frames` latent frames, exactly as the diffusers pipelines build
    /// them (`_prepare_rotary_positional_embeddings`); `None` for models
    /// without RoPE. Returned as the full diffusers `(cos, sin)` `[N, head_dim]`.
    pub fn rotary_tables(
        &self,
        height: usize,
        width: usize,
        frames: usize,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let cfg = &self.cfg;
        if !cfg.use_rotary_positional_embeddings {
            return Ok(None);
        }
        let p = cfg.patch_size;
        let (gh, gw) = (height / p, width / p);
        let (base_h, base_w) = (cfg.sample_height / p, cfg.sample_width / p);
        let (grid, t) = match cfg.patch_size_t {
            None => {
                let ((top, left), (bottom, right)) =
                    resize_crop_region_for_grid(gh, gw, base_w, base_h);
                (
                    RopeGrid::Linspace {
                        top,
                        left,
                        bottom,
                        right,
                    },
                    frames,
                )
            }
            Some(pt) => (
                RopeGrid::Slice {
                    max_h: base_h,
                    max_w: base_w,
                },
                frames.div_ceil(pt),
            ),
        };
        rotary_pos_embed_3d(cfg.attention_head_dim, gh, gw, t, grid, &self.device).map(Some)
    }

    /// Prepares the rotary tables for [`Self::forward`] from the diffusers
    /// form returned by [`Self::rotary_tables`].
    pub fn prepare_rotary(
        &self,
        tables: Option<&(Tensor, Tensor)>,
    ) -> Result<Option<RotaryEmbedding>> {
        match tables {
            None => Ok(None),
            Some((cos, sin)) => {
                let (cos, sin) = rope_half_tables(cos, sin)?;
                Ok(Some(RotaryEmbedding { cos, sin }))
            }
        }
    }

    /// Checks a latent shape against what the model accepts.
    pub fn check_latent_shape(
        &self,
        frames: usize,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let p = cfg.patch_size;
        if channels != cfg.in_channels {
            candle_core::bail!(
                "latents have {channels} channels, the transformer takes {}",
                cfg.in_channels
            );
        }
        if height == 0 || width == 0 || !height.is_multiple_of(p) || !width.is_multiple_of(p) {
            candle_core::bail!(
                "latent size {height}x{width} must be a positive multiple of the patch size {p}"
            );
        }
        if let Some(pt) = cfg.patch_size_t
            && !frames.is_multiple_of(pt)
        {
            candle_core::bail!(
                "latent frame count {frames} must be a multiple of patch_size_t {pt}"
            );
        }
        if frames == 0 {
            candle_core::bail!("latent frame count must be positive");
        }
        if cfg.use_learned_positional_embeddings
            && (height != cfg.sample_height || width != cfg.sample_width)
        {
            candle_core::bail!(
                "this model's learned positional embeddings only allow latents of {}x{} (got {height}x{width})",
                cfg.sample_height,
                cfg.sample_width
            );
        }
        Ok(())
    }

    fn time_embed(&self, timesteps: &[f32], ofs: Option<f32>) -> Result<Tensor> {
        let cfg = &self.cfg;
        let t = timestep_embedding(
            timesteps,
            cfg.inner_dim(),
            cfg.freq_shift as f32,
            &self.device,
        )?;
        let mut emb = self.time_embedding.forward(&t.to_dtype(self.dtype)?)?;
        if let Some(ofs_emb) = &self.ofs_embedding {
            let dim = cfg.ofs_embed_dim.unwrap_or(cfg.time_embed_dim);
            let ofs =
                ofs.ok_or_else(|| candle_core::Error::msg("this model needs the `ofs` input"))?;
            let o = timestep_embedding(&[ofs], dim, cfg.freq_shift as f32, &self.device)?;
            emb = emb.broadcast_add(&ofs_emb.forward(&o.to_dtype(self.dtype)?)?)?;
        }
        Ok(emb)
    }

    /// The `[B, N, D]` video tokens of `[B, F, C, H, W]` latents.
    fn patchify(&self, x: &Tensor) -> Result<Tensor> {
        let (b, f, c, h, w) = x.dims5()?;
        let p = self.cfg.patch_size;
        let (gh, gw) = (h / p, w / p);
        match &self.patch_embed.proj {
            PatchProj::Conv { weight, bias } => {
                let patches = x
                    .reshape((b * f, c, gh, p, gw, p))?
                    .permute((0, 2, 4, 1, 3, 5))?
                    .reshape((b * f * gh * gw, c * p * p))?;
                let wt = weight.reshape((weight.dim(0)?, c * p * p))?;
                let lin = Linear::new(wt, bias.clone());
                attention::linear_forward(&lin, &patches, false)?.reshape((b, f * gh * gw, ()))
            }
            PatchProj::Linear(lin) => {
                let pt = self.cfg.patch_size_t.unwrap_or(1);
                let patches = x
                    .reshape(vec![b, f / pt, pt, c, gh, p, gw, p])?
                    .permute([0, 1, 4, 6, 3, 2, 5, 7])?
                    .reshape((b, (f / pt) * gh * gw, c * pt * p * p))?;
                attention::linear_forward(lin, &patches, false)
            }
        }
    }

    /// The absolute positional table to add to `[text | video]` tokens, if
    /// the model uses one: the learned table at its trained size, otherwise
    /// (and for other frame counts, as diffusers does) the sincos table.
    fn positional_table(
        &self,
        f: usize,
        h: usize,
        w: usize,
        text_len: usize,
    ) -> Result<Option<Tensor>> {
        let cfg = &self.cfg;
        let uses_sincos = !cfg.use_rotary_positional_embeddings;
        if !uses_sincos && !cfg.use_learned_positional_embeddings {
            return Ok(None);
        }
        let pixel_frames = (f - 1) * cfg.temporal_compression_ratio + 1;
        let at_sample_size =
            h == cfg.sample_height && w == cfg.sample_width && pixel_frames == cfg.sample_frames;
        if let (true, Some(learned)) = (at_sample_size, &self.patch_embed.learned_pos) {
            return Ok(Some(learned.clone()));
        }
        if text_len != cfg.max_text_seq_length {
            candle_core::bail!(
                "text length {text_len} must equal max_text_seq_length {} for absolute positions",
                cfg.max_text_seq_length
            );
        }
        let p = cfg.patch_size;
        let table = sincos_pos_embed_3d(
            cfg.inner_dim(),
            (f, h / p, w / p),
            text_len,
            (
                cfg.spatial_interpolation_scale as f32,
                cfg.temporal_interpolation_scale as f32,
            ),
            &self.device,
        )?;
        Ok(Some(table.to_dtype(self.dtype)?))
    }

    /// One denoising prediction.
    ///
    /// - `hidden`: `[B, F, C_in, H, W]` latents (I2V: noise and image latents
    ///   concatenated on channels).
    /// - `text`: `[B, L, text_embed_dim]` T5 embeddings.
    /// - `timesteps`: one value per batch row.
    /// - `ofs`: the 1.5-I2V offset value (2.0 in the pipelines).
    /// - `rope`: from [`Self::prepare_rotary`] for RoPE models.
    ///
    /// Returns `[B, F, C_out, H, W]`.
    pub fn forward(
        &self,
        hidden: &Tensor,
        text: &Tensor,
        timesteps: &[f32],
        ofs: Option<f32>,
        rope: Option<&RotaryEmbedding>,
    ) -> Result<Tensor> {
        let opts = ForwardOptions {
            ofs,
            rope,
            ..Default::default()
        };
        self.forward_impl(hidden, text, timesteps, opts, None)
    }

    /// The forward pass of prompt editing: `hidden` is `[main..., reference...]`
    /// (two equal halves) and every block's attention lets each main row see
    /// the tokens of its reference row (see [`Attention::forward`]). Only the
    /// main half of the prediction is returned.
    pub fn forward_with_reference(
        &self,
        hidden: &Tensor,
        text: &Tensor,
        timesteps: &[f32],
        rope: Option<&RotaryEmbedding>,
    ) -> Result<Tensor> {
        let opts = ForwardOptions {
            rope,
            reference: true,
            ..Default::default()
        };
        self.forward_with(hidden, text, timesteps, opts)
    }

    /// [`Self::forward`], or with `opts.reference` [`Self::forward_with_reference`],
    /// calling `opts.poll` before each block: a caller's chance to stop
    /// within a step (its error ends the forward pass).
    ///
    /// With `opts.cache`, the cache may have only the conditional half of a
    /// guidance batch `[uncond, cond]` computed and complete the rest.
    pub fn forward_with(
        &self,
        hidden: &Tensor,
        text: &Tensor,
        timesteps: &[f32],
        mut opts: ForwardOptions,
    ) -> Result<Tensor> {
        let b = hidden.dim(0)?;
        let mut cache = opts.cache.take();
        let cond_only = match cache.as_deref_mut() {
            Some(c) => c.cond_only(b)?,
            None => false,
        };
        if opts.reference && b % 2 != 0 {
            candle_core::bail!("reference forward needs an even batch, got {b}");
        }
        poll::with_poll(opts.poll.take(), poll::MIN_INTERVAL, || {
            if !opts.reference {
                if !cond_only {
                    return match cache {
                        Some(c) => {
                            let out = self.forward_impl(hidden, text, timesteps, opts, Some(c))?;
                            c.finish_output(out, false)
                        }
                        None => self.forward_impl(hidden, text, timesteps, opts, None),
                    };
                }
                let h = b / 2;
                let out = self.forward_impl(
                    &hidden.narrow(0, h, b - h)?,
                    &text.narrow(0, h, b - h)?,
                    &timesteps[h..],
                    opts,
                    cache.as_deref_mut(),
                )?;
                return match cache {
                    Some(c) => c.finish_output(out, true),
                    None => Ok(out),
                };
            }
            self.forward_impl(hidden, text, timesteps, opts, cache)?
                .narrow(0, 0, b / 2)
        })
    }

    fn forward_impl(
        &self,
        hidden: &Tensor,
        text: &Tensor,
        timesteps: &[f32],
        opts: ForwardOptions,
        mut cache: Option<&mut StepCache>,
    ) -> Result<Tensor> {
        // `forward_with` has installed the poll.
        let ForwardOptions {
            ofs,
            rope,
            reference,
            poll: _,
            lora,
            cache: _,
        } = opts;
        if let Some(l) = lora
            && l.blocks.len() != self.cfg.num_layers
        {
            candle_core::bail!(
                "LoRA for {} blocks given to a model of {}",
                l.blocks.len(),
                self.cfg.num_layers
            );
        }
        let (b, f, c, h, w) = hidden.dims5()?;
        self.check_latent_shape(f, c, h, w)?;
        if timesteps.len() != b {
            candle_core::bail!("{} timesteps given for a batch of {b}", timesteps.len());
        }
        if self.cfg.use_rotary_positional_embeddings && rope.is_none() {
            candle_core::bail!("this model needs rotary embeddings");
        }
        let cfg = &self.cfg;
        let p = cfg.patch_size;
        let hidden = hidden.to_dtype(self.dtype)?;
        let text = text.to_dtype(self.dtype)?;
        let text_len = text.dim(1)?;

        let emb = self.time_embed(timesteps, ofs)?;
        let emb_silu = emb.silu()?;

        // The embeddings are a second of CPU work at the 5b default size:
        // polled between their parts too.
        poll::check()?;
        let enc = attention::linear_forward(&self.patch_embed.text_proj, &text, false)?;
        poll::check()?;
        let vid = self.patchify(&hidden)?;
        poll::check()?;
        let (enc, vid) = match self.positional_table(f, h, w, text_len)? {
            Some(pos) => {
                let n = vid.dim(1)?;
                (
                    enc.broadcast_add(&pos.narrow(1, 0, text_len)?)?,
                    vid.broadcast_add(&pos.narrow(1, text_len, n)?)?,
                )
            }
            None => (enc, vid),
        };

        poll::check()?;
        let x = crate::models::cpu::cat_tokens(&[&enc, &vid])?;
        drop((enc, vid));
        let mut index = 0;
        // (tokens, whether the cache ended the block loop)
        let (x, _) = self.blocks.try_fold((x, false), |(x, done), block| {
            let i = index;
            index += 1;
            if done {
                return Ok((x, true));
            }
            poll::check_now()?;
            let args = (text_len, &emb_silu, rope, reference);
            let run = |attention: &mut AttentionHook| match lora {
                Some(l) => l.run_block(i, block, &x, args, attention),
                None => block.forward_cached(
                    &x,
                    text_len,
                    &emb_silu,
                    (rope, reference),
                    None,
                    attention,
                ),
            };
            let Some(c) = cache.as_deref_mut() else {
                return Ok((run(&mut |compute| compute())?, false));
            };
            let y = run(&mut |f| c.attention(i, f))?;
            Ok(match c.after_block(i, &x, &y, text_len)? {
                Some(end) => (end, true),
                None => (y, false),
            })
        })?;
        poll::check()?;

        let n = x.dim(1)? - text_len;
        let mods = self
            .norm_out_linear
            .forward(&emb_silu)?
            .unsqueeze(1)?
            .chunk(2, D::Minus1)?;
        let scale = (&mods[1] + 1.0)?;
        // Every token on its own, in chunks polled between (two LayerNorms
        // over all tokens are a second of CPU work at the 5b default size).
        let mut outs = Vec::with_capacity(n.div_ceil(OUTPUT_CHUNK_TOKENS));
        for start in (0..n).step_by(OUTPUT_CHUNK_TOKENS) {
            poll::check()?;
            let vid = x.narrow(1, text_len + start, OUTPUT_CHUNK_TOKENS.min(n - start))?;
            let vid = self
                .norm_out_norm
                .forward(&self.norm_final.forward(&vid)?)?
                .broadcast_mul(&scale)?
                .broadcast_add(&mods[0])?;
            outs.push(self.proj_out.forward(&vid)?);
        }
        // Freeing the tokens is a fraction of a second of the kernel's time
        // at the 5b default size: before a poll, not after the last one.
        drop(x);
        poll::check()?;
        let out = Tensor::cat(&outs, 1)?;

        let co = cfg.out_channels();
        let (gh, gw) = (h / p, w / p);
        match cfg.patch_size_t {
            None => out
                .reshape(vec![b, f, gh, gw, co, p, p])?
                .permute([0, 1, 4, 2, 5, 3, 6])?
                .reshape((b, f, co, h, w)),
            Some(pt) => out
                .reshape(vec![b, f / pt, gh, gw, co, pt, p, p])?
                .permute([0, 1, 5, 4, 2, 6, 3, 7])?
                .reshape((b, f, co, h, w)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::test_util::max_diff;

    /// The block's f32 CPU kernels (modulated norm, gated residual) agree
    /// with the candle ops of the generic path.
    #[test]
    fn block_kernels_match_generic() {
        let dev = Device::Cpu;
        let (temb, d, text, vid) = (8, 48, 5, 19);
        let wave = |n: usize, k: f64, std: f64| -> Tensor {
            let v: Vec<f32> = (0..n)
                .map(|i| ((i as f64 * k).sin() * std) as f32)
                .collect();
            Tensor::from_vec(v, n, &dev).unwrap()
        };
        let ws: HashMap<String, Tensor> = [
            (
                "linear.weight",
                wave(6 * d * temb, 0.37, 0.3)
                    .reshape((6 * d, temb))
                    .unwrap(),
            ),
            ("linear.bias", wave(6 * d, 0.11, 0.2)),
            ("norm.weight", (wave(d, 0.7, 0.5) + 1.0).unwrap()),
            ("norm.bias", wave(d, 0.9, 0.5)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let vb = VarBuilder::from_tensors(ws, DType::F32, &dev);
        let norm = LayerNormZero::load(vb, temb, d, 1e-5).unwrap();
        for b in [1, 2] {
            let x = Tensor::randn(0f32, 2.0, (b, text + vid, d), &dev).unwrap();
            let y = Tensor::randn(0f32, 1.0, (b, text + vid, d), &dev).unwrap();
            let t = Tensor::randn(0f32, 1.0, (b, temb), &dev).unwrap();
            let mods = norm.mods(&t, &[]).unwrap();
            let (fast, generic) = (
                norm.forward(&x, text, &mods).unwrap(),
                norm.forward_generic(&x, text, &mods).unwrap(),
            );
            assert!(
                max_diff(&fast, &generic) < 1e-5,
                "modulated norm: {}",
                max_diff(&fast, &generic)
            );
            let (fast, generic) = (
                gated_add(&x, &y, text, &mods).unwrap(),
                gated_add_generic(&x, &y, text, &mods).unwrap(),
            );
            assert!(
                max_diff(&fast, &generic) < 1e-6,
                "gated add: {}",
                max_diff(&fast, &generic)
            );
        }
    }
}
