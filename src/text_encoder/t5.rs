//! The T5 v1.1 encoder (transformers `T5EncoderModel`), run by
//! candle-transformers' implementation.
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

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::t5::{self, ActivationWithOptionalGating, T5EncoderModel};
use parking_lot::Mutex;
use serde::Deserialize;

use crate::checkpoint::{load_component, read_config};
use crate::error::{Error, Result};

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

/// A loaded T5 encoder. candle's forward pass needs `&mut self` (its
/// attention layers carry a decoder KV-cache slot, unused here), so the
/// model sits behind a mutex to let one encoder serve several threads.
pub struct T5Encoder {
    model: Mutex<T5EncoderModel>,
    cfg: Config,
    dtype: DType,
    device: Device,
}

impl T5Encoder {
    /// Loads a `text_encoder/` folder (`config.json` plus `model.safetensors`
    /// or the shards of `model.safetensors.index.json`), converting the
    /// stored weights to `dtype` (f32 or bf16).
    pub fn load(dir: impl AsRef<Path>, dtype: DType, device: &Device) -> Result<Self> {
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
                T5EncoderModel::load(vb, &candle_cfg)
            })?;
        Ok(Self {
            model: Mutex::new(model),
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
        let hidden = self.model.lock().forward_dt(input_ids, Some(compute))?;
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
