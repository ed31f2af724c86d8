//! Prompt embeddings as the CogVideoX pipelines compute them
//! (`CogVideoXPipeline._get_t5_prompt_embeds`): T5 tokenization padded and
//! truncated to 226 ids, then the T5 encoder's last hidden state, with no
//! attention mask, so padding positions yield real vectors that the
//! transformer sees.

mod sentencepiece;
pub mod tokenizer;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use once_cell::sync::OnceCell;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

pub use crate::models::t5::T5Encoder;
pub use tokenizer::T5Tokenizer;

/// The pipelines' `max_sequence_length` default, also the transformer's
/// `max_text_seq_length`: 225 pieces and `</s>`.
pub const MAX_SEQUENCE_LENGTH: usize = 226;

/// Tokenizer and encoder together, with the empty-prompt embedding (the
/// default negative prompt) computed once and shared by every call.
pub struct TextEncoder {
    tokenizer: T5Tokenizer,
    encoder: T5Encoder,
    empty: OnceCell<Tensor>,
}

impl TextEncoder {
    /// Pairs a tokenizer with an encoder, checking that every id the
    /// tokenizer can produce has an embedding row.
    pub fn new(tokenizer: T5Tokenizer, encoder: T5Encoder) -> Result<Self> {
        if let Some(msg) = vocab_mismatch(&tokenizer, &encoder) {
            return Err(Error::invalid(msg));
        }
        Ok(Self {
            tokenizer,
            encoder,
            empty: OnceCell::new(),
        })
    }

    /// Loads `tokenizer_dir` (see [`T5Tokenizer::from_dir`]) and
    /// `text_encoder_dir` (see [`T5Encoder::load`]).
    pub fn load(
        tokenizer_dir: impl AsRef<Path>,
        text_encoder_dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::load_with(tokenizer_dir, text_encoder_dir, dtype, device, false)
    }

    /// [`Self::load`], with the encoder's blocks streamed from the
    /// checkpoint for each use when `streamed` (see [`T5Encoder::load_with`]).
    pub fn load_with(
        tokenizer_dir: impl AsRef<Path>,
        text_encoder_dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
        streamed: bool,
    ) -> Result<Self> {
        let tokenizer = T5Tokenizer::from_dir(tokenizer_dir)?;
        let encoder = T5Encoder::load_with(&text_encoder_dir, dtype, device, streamed)?;
        if let Some(msg) = vocab_mismatch(&tokenizer, &encoder) {
            let config = text_encoder_dir.as_ref().join("config.json");
            return Err(Error::bad_checkpoint(config, msg));
        }
        Self::new(tokenizer, encoder)
    }

    /// Loads `tokenizer/` and `text_encoder/` of a checkpoint.
    pub fn from_checkpoint(ckpt: &Checkpoint, dtype: DType, device: &Device) -> Result<Self> {
        Self::from_checkpoint_with(ckpt, dtype, device, false)
    }

    /// [`Self::from_checkpoint`], streaming the encoder's blocks when `streamed`.
    pub fn from_checkpoint_with(
        ckpt: &Checkpoint,
        dtype: DType,
        device: &Device,
        streamed: bool,
    ) -> Result<Self> {
        Self::load_with(
            ckpt.component_dir("tokenizer")?,
            ckpt.component_dir("text_encoder")?,
            dtype,
            device,
            streamed,
        )
    }

    /// Prompt embeddings `[B, 226, d_model]` in the encoder's dtype, one row
    /// per prompt, in order.
    pub fn encode_prompts(&self, prompts: &[&str]) -> Result<Tensor> {
        if prompts.is_empty() {
            return Err(Error::invalid("no prompts to encode"));
        }
        let mut ids = Vec::with_capacity(prompts.len() * MAX_SEQUENCE_LENGTH);
        for p in prompts {
            ids.extend(self.tokenizer.encode(p, MAX_SEQUENCE_LENGTH)?);
        }
        let ids = Tensor::from_vec(
            ids,
            (prompts.len(), MAX_SEQUENCE_LENGTH),
            self.encoder.device(),
        )?;
        self.encoder.forward(&ids)
    }

    /// The embedding of `""` `[1, 226, d_model]`, computed on first use.
    pub fn empty_prompt_embedding(&self) -> Result<Tensor> {
        self.empty
            .get_or_try_init(|| {
                let embedding = self.encode_prompts(&[""])?;
                // Kept for later calls, maybe on other threads, even when
                // the call that made it fails before its end's
                // synchronisation (`device::end_of_call`).
                crate::device::end_of_call(embedding.device())?;
                Ok(embedding)
            })
            .cloned()
    }

    pub fn tokenizer(&self) -> &T5Tokenizer {
        &self.tokenizer
    }

    pub fn encoder(&self) -> &T5Encoder {
        &self.encoder
    }
}

fn vocab_mismatch(tokenizer: &T5Tokenizer, encoder: &T5Encoder) -> Option<String> {
    let (ids, rows) = (tokenizer.vocab_size(), encoder.config().vocab_size);
    (ids > rows)
        .then(|| format!("vocab_size = {rows}: expected at least the tokenizer's {ids} tokens"))
}
