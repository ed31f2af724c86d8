//! The T5 v1.1 encoder (transformers `T5EncoderModel`): candle-transformers'
//! implementation, op for op, with its blocks in a [`Layers`] stack so they
//! can be streamed from the checkpoint (T5-XXL is 9.5 GB in bf16; candle's
//! own model keeps its blocks private and loaded).
//!
//! Numerics against transformers 5.x: RMSNorm statistics in f32, no
//! attention scaling, the relative position bias of block 0 reused by every
//! block (buckets checked equal to transformers' for distances up to 230),
//! no attention mask (the CogVideoX pipelines pass none), softmax in the
//! activation dtype (transformers 5.x does the same in its eager path).
//!
//! bf16: on CUDA the encoder computes in bf16 like transformers' bf16 run
//! (candle's CUDA softmax, like torch's, accumulates in f32). On the CPU
//! candle's bf16 softmax sums its exponentials in bf16, which dropped small
//! attention weights and gave ten times the error of transformers' bf16 run
//! on the test model, so there the bf16 weights are widened to f32 layer by
//! layer, the encoder computes in f32 and only the output is rounded to
//! bf16.
//!
//! f16 is refused: transformers keeps the `wo` projections in f32 and clamps
//! infinities for f16 only, candle does neither, and T5 v1.1 XXL
//! activations overflow f16 without them.

use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};
use candle_transformers::models::t5::{self, ActivationWithOptionalGating, linear_no_bias};
use serde::Deserialize;

use crate::checkpoint::{load_component, read_config};
use crate::error::{Error, Result};
use crate::models::layers::Layers;

/// Largest value a size field may take: T5 v1.1 XXL has d_ff 10240 and
/// 32128 embeddings, mT5 250112.
const MAX_SIZE: usize = 1 << 20;
/// Most blocks accepted (T5 v1.1 XXL has 24).
const MAX_LAYERS: usize = 1024;

fn default_num_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ff_proj() -> String {
    "relu".into()
}

/// `text_encoder/config.json` (a transformers `T5Config`). Shape-defining
/// fields are required; the others default as in `T5Config`; unknown
/// fields (decoder settings, dropout, dtype, ...) are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    #[serde(default = "default_num_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `gated-gelu` in every CogVideoX checkpoint (tanh-approximated GELU).
    #[serde(default = "default_ff_proj")]
    pub feed_forward_proj: String,
}

impl Config {
    /// Refuses values that would become a zero or absurd size, loop count or
    /// divisor, naming the field and the accepted range.
    fn check(&self) -> std::result::Result<(), String> {
        let fields = [
            ("vocab_size", self.vocab_size, 1, MAX_SIZE),
            ("d_model", self.d_model, 1, MAX_SIZE),
            ("d_kv", self.d_kv, 1, MAX_SIZE),
            ("d_ff", self.d_ff, 1, MAX_SIZE),
            ("num_heads", self.num_heads, 1, MAX_SIZE),
            ("num_layers", self.num_layers, 1, MAX_LAYERS),
            (
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
                4,
                MAX_SIZE,
            ),
            // candle halves the buckets per direction, then again for the
            // exact ones, and spaces the rest by ln(max_distance / exact).
            (
                "relative_attention_max_distance",
                self.relative_attention_max_distance,
                self.relative_attention_num_buckets / 4 + 1,
                MAX_SIZE,
            ),
        ];
        for (field, value, min, max) in fields {
            if !(min..=max).contains(&value) {
                return Err(format!("{field} = {value}: expected {min} to {max}"));
            }
        }
        let inner = self.num_heads * self.d_kv;
        if inner > MAX_SIZE {
            return Err(format!(
                "num_heads x d_kv = {inner}: expected at most {MAX_SIZE}"
            ));
        }
        let eps = self.layer_norm_epsilon;
        if !(eps.is_finite() && eps > 0.0) {
            return Err(format!(
                "layer_norm_epsilon = {eps}: expected a positive number"
            ));
        }
        self.activation().map(drop)
    }

    /// The feed-forward variants candle implements as transformers does
    /// (candle's non-gated block is always ReLU).
    fn activation(&self) -> std::result::Result<ActivationWithOptionalGating, String> {
        let (gated, activation) = match self.feed_forward_proj.as_str() {
            "gated-gelu" => (true, candle_nn::Activation::NewGelu),
            "gated-silu" => (true, candle_nn::Activation::Silu),
            "relu" => (false, candle_nn::Activation::Relu),
            other => {
                return Err(format!(
                    "feed_forward_proj = \"{other}\": expected gated-gelu, gated-silu or relu"
                ));
            }
        };
        Ok(ActivationWithOptionalGating { gated, activation })
    }

    /// candle's config for the encoder alone: `T5EncoderModel` in
    /// transformers forces `is_decoder = false` and `use_cache = false`.
    fn to_candle(&self) -> std::result::Result<t5::Config, String> {
        Ok(t5::Config {
            vocab_size: self.vocab_size,
            d_model: self.d_model,
            d_kv: self.d_kv,
            d_ff: self.d_ff,
            num_layers: self.num_layers,
            num_decoder_layers: None,
            num_heads: self.num_heads,
            relative_attention_num_buckets: self.relative_attention_num_buckets,
            relative_attention_max_distance: self.relative_attention_max_distance,
            dropout_rate: 0.0,
            layer_norm_epsilon: self.layer_norm_epsilon,
            initializer_factor: 1.0,
            feed_forward_proj: self.activation()?,
            tie_word_embeddings: false,
            is_decoder: false,
            is_encoder_decoder: false,
            use_cache: false,
            pad_token_id: 0,
            eos_token_id: 1,
            decoder_start_token_id: None,
        })
    }
}

/// A loaded T5 encoder.
pub struct T5Encoder {
    model: EncoderStack,
    cfg: Config,
    dtype: DType,
    device: Device,
}

impl T5Encoder {
    /// Loads a `text_encoder/` folder (`config.json` plus `model.safetensors`
    /// or the shards of `model.safetensors.index.json`), converting the
    /// stored weights to `dtype` (f32 or bf16).
    pub fn load(dir: impl AsRef<Path>, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_with(dir, dtype, device, false)
    }

    /// [`Self::load`], with the blocks streamed from the checkpoint for each
    /// forward pass when `streamed` (see [`Layers`]).
    pub fn load_with(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
        streamed: bool,
    ) -> Result<Self> {
        match dtype {
            DType::F32 | DType::BF16 => {}
            DType::F16 => {
                return Err(Error::invalid(
                    "the T5 encoder cannot run in f16 (activations overflow); use f32 or bf16 \
                     and cast the embeddings",
                ));
            }
            other => {
                return Err(Error::invalid(format!(
                    "the T5 encoder runs in f32 or bf16, not {}",
                    other.as_str()
                )));
            }
        }
        // Checked before any weight is mapped.
        let config = dir.as_ref().join("config.json");
        let cfg: Config = read_config(&config)?;
        cfg.check().map_err(|e| Error::bad_checkpoint(&config, e))?;
        let (cfg, model) =
            load_component(dir.as_ref(), "model", dtype, device, |vb, cfg: &Config| {
                let candle_cfg = cfg.to_candle().map_err(candle_core::Error::msg)?;
                EncoderStack::load(vb, &candle_cfg, streamed)
            })?;
        Ok(Self {
            model,
            cfg,
            dtype,
            device: device.clone(),
        })
    }

    /// Final hidden states `[B, L, d_model]` in the encoder's dtype (after
    /// the final RMSNorm) for token ids `[B, L]`, all positions attending to
    /// all others.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let compute = if self.device.is_cpu() {
            DType::F32
        } else {
            self.dtype
        };
        let hidden = self.model.forward(input_ids, compute)?;
        Ok(hidden.to_dtype(self.dtype)?)
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
}

/// `T5LayerNorm`: RMS statistics in f32.
#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(vb: VarBuilder, cfg: &t5::Config) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get(cfg.d_model, "weight")?,
            eps: cfg.layer_norm_epsilon,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let dtype = xs.dtype();
        let xs = xs.to_dtype(DType::F32)?;
        let variance = xs.sqr()?.mean_keepdim(D::Minus1)?;
        xs.broadcast_div(&(variance + self.eps)?.sqrt()?)?
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight.to_dtype(dtype)?)
    }
}

/// Self-attention without scaling; block 0 owns the relative position bias,
/// which every block adds.
#[derive(Debug, Clone)]
struct SelfAttention {
    q: t5::Linear,
    k: t5::Linear,
    v: t5::Linear,
    o: t5::Linear,
    relative_attention_bias: Option<Embedding>,
    n_heads: usize,
    d_kv: usize,
    num_buckets: usize,
    max_distance: usize,
}

impl SelfAttention {
    fn load(with_bias: bool, vb: VarBuilder, cfg: &t5::Config) -> candle_core::Result<Self> {
        let inner = cfg.num_heads * cfg.d_kv;
        let relative_attention_bias = if with_bias {
            Some(candle_nn::embedding(
                cfg.relative_attention_num_buckets,
                cfg.num_heads,
                vb.pp("relative_attention_bias"),
            )?)
        } else {
            None
        };
        Ok(Self {
            q: linear_no_bias(cfg.d_model, inner, vb.pp("q"))?,
            k: linear_no_bias(cfg.d_model, inner, vb.pp("k"))?,
            v: linear_no_bias(cfg.d_model, inner, vb.pp("v"))?,
            o: linear_no_bias(inner, cfg.d_model, vb.pp("o"))?,
            relative_attention_bias,
            n_heads: cfg.num_heads,
            d_kv: cfg.d_kv,
            num_buckets: cfg.relative_attention_num_buckets,
            max_distance: cfg.relative_attention_max_distance,
        })
    }

    /// The relative position bucket of every (query, key) pair, as
    /// candle-transformers computes it (bidirectional).
    fn buckets(&self, len: usize) -> Vec<Vec<u32>> {
        let num_buckets = self.num_buckets as u32 / 2;
        let max_exact = num_buckets / 2;
        let log_bucket = |d: u32| {
            f32::log(
                d as f32 / max_exact as f32,
                self.max_distance as f32 / max_exact as f32,
            ) * (num_buckets - max_exact) as f32
        };
        (0..len as u32)
            .map(|i| {
                (0..len as u32)
                    .map(|j| {
                        if i < j {
                            if j - i < max_exact {
                                j - i + num_buckets
                            } else {
                                u32::min(
                                    max_exact + num_buckets + log_bucket(j - i) as u32,
                                    self.num_buckets as u32 - 1,
                                )
                            }
                        } else if i - j < max_exact {
                            i - j
                        } else {
                            u32::min(max_exact + log_bucket(i - j) as u32, num_buckets - 1)
                        }
                    })
                    .collect()
            })
            .collect()
    }

    fn forward(
        &self,
        xs: &Tensor,
        position_bias: Option<&Tensor>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, len) = (xs.dim(0)?, xs.dim(1)?);
        let heads = |t: Tensor| {
            t.reshape((b, len, self.n_heads, self.d_kv))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(self.q.forward(xs)?)?;
        let k = heads(self.k.forward(xs)?)?;
        let v = heads(self.v.forward(xs)?)?;
        let scores = q.matmul(&k.t()?)?;
        let bias = match (position_bias, &self.relative_attention_bias) {
            (Some(bias), _) => bias.clone(),
            (None, Some(emb)) => emb
                .forward(&Tensor::new(self.buckets(len), q.device())?)?
                .permute((2, 0, 1))?
                .unsqueeze(0)?
                .to_dtype(scores.dtype())?,
            (None, None) => candle_core::bail!("the first T5 block has no relative_attention_bias"),
        };
        let weights = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&bias)?)?;
        let out =
            weights
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, len, self.n_heads * self.d_kv))?;
        Ok((self.o.forward(&out)?, bias))
    }
}

/// The feed-forward, gated or plain (ReLU).
#[derive(Debug, Clone)]
struct FeedForward {
    wi: t5::Linear,
    /// The gate's second input projection, for gated variants.
    wi_1: Option<t5::Linear>,
    wo: t5::Linear,
    act: candle_nn::Activation,
    norm: LayerNorm,
}

impl FeedForward {
    fn load(vb: VarBuilder, cfg: &t5::Config) -> candle_core::Result<Self> {
        let norm = LayerNorm::load(vb.pp("layer_norm"), cfg)?;
        let vb = vb.pp("DenseReluDense");
        let (wi, wi_1) = if cfg.feed_forward_proj.gated {
            (
                linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi_0"))?,
                Some(linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi_1"))?),
            )
        } else {
            (linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi"))?, None)
        };
        let act = if cfg.feed_forward_proj.gated {
            cfg.feed_forward_proj.activation
        } else {
            candle_nn::Activation::Relu
        };
        Ok(Self {
            wi,
            wi_1,
            wo: linear_no_bias(cfg.d_ff, cfg.d_model, vb.pp("wo"))?,
            act,
            norm,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let ys = self.norm.forward(xs)?;
        let hidden = self.act.forward(&self.wi.forward(&ys)?)?;
        let hidden = match &self.wi_1 {
            Some(wi_1) => hidden.broadcast_mul(&wi_1.forward(&ys)?)?,
            None => hidden,
        };
        xs + self.wo.forward(&hidden)?
    }
}

/// `T5Block` of an encoder: self-attention, then the feed-forward.
#[derive(Debug, Clone)]
struct Block {
    attn: SelfAttention,
    attn_norm: LayerNorm,
    ff: FeedForward,
}

impl Block {
    fn load(first: bool, vb: VarBuilder, cfg: &t5::Config) -> candle_core::Result<Self> {
        let vb = vb.pp("layer");
        Ok(Self {
            attn: SelfAttention::load(first, vb.pp("0.SelfAttention"), cfg)?,
            attn_norm: LayerNorm::load(vb.pp("0.layer_norm"), cfg)?,
            ff: FeedForward::load(vb.pp("1"), cfg)?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        position_bias: Option<&Tensor>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (ys, bias) = self
            .attn
            .forward(&self.attn_norm.forward(xs)?, position_bias)?;
        Ok((self.ff.forward(&(xs + ys)?)?, bias))
    }
}

/// Embeddings, blocks and final norm of `T5EncoderModel`.
struct EncoderStack {
    shared: Embedding,
    blocks: Layers<Block>,
    final_layer_norm: LayerNorm,
}

impl EncoderStack {
    fn load(
        vb: VarBuilder<'static>,
        cfg: &t5::Config,
        streamed: bool,
    ) -> candle_core::Result<Self> {
        // The input embedding is `shared`, which transformers ties to
        // `encoder.embed_tokens` (saved under either name).
        let shared = if vb.contains_tensor("shared.weight") {
            vb.pp("shared")
        } else {
            vb.pp("encoder.embed_tokens")
        };
        let block_cfg = cfg.clone();
        Ok(Self {
            shared: candle_nn::embedding(cfg.vocab_size, cfg.d_model, shared)?,
            blocks: Layers::load(
                cfg.num_layers,
                vb.pp("encoder.block"),
                streamed,
                move |i, vb| Block::load(i == 0, vb, &block_cfg),
            )?,
            final_layer_norm: LayerNorm::load(vb.pp("encoder.final_layer_norm"), cfg)?,
        })
    }

    /// Hidden states computed in `dtype`.
    fn forward(&self, input_ids: &Tensor, dtype: DType) -> candle_core::Result<Tensor> {
        let xs = self.shared.forward(input_ids)?.to_dtype(dtype)?;
        let (xs, _) = self.blocks.try_fold((xs, None), |(xs, bias), block| {
            crate::models::poll::check_now()?;
            let (xs, bias) = block.forward(&xs, bias.as_ref())?;
            Ok((xs, Some(bias)))
        })?;
        self.final_layer_norm.forward(&xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::max_diff;

    /// This port computes what candle-transformers' `T5EncoderModel` does,
    /// bit for bit, with its blocks loaded or streamed.
    #[test]
    fn matches_candle_t5_loaded_and_streamed() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny/cogvideox-5b/text_encoder");
        let dev = Device::Cpu;
        let ids = Tensor::new(&[[3u32, 17, 5, 9, 1, 0, 0], [8, 2, 1, 0, 0, 0, 0]], &dev).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let (_, mut candle) = load_component(&dir, "model", dtype, &dev, |vb, cfg: &Config| {
                t5::T5EncoderModel::load(vb, &cfg.to_candle().map_err(candle_core::Error::msg)?)
            })
            .unwrap();
            let want = candle
                .forward_dt(&ids, Some(DType::F32))
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            for streamed in [false, true] {
                let ours = T5Encoder::load_with(&dir, dtype, &dev, streamed).unwrap();
                let got = ours.forward(&ids).unwrap();
                let diff = max_diff(
                    &got.to_dtype(DType::F32).unwrap(),
                    &want.to_dtype(DType::F32).unwrap(),
                );
                assert_eq!(diff, 0.0, "{dtype:?} streamed {streamed}");
            }
        }
    }
}
