//! Prompt embeddings as the CogVideoX pipelines compute them
//! (`CogVideoXPipeline._get_t5_prompt_embeds`): T5 tokenization padded and
//! truncated to 226 ids, then the T5 encoder's last hidden state.

mod sentencepiece;
pub mod tokenizer;

pub use tokenizer::T5Tokenizer;

/// The pipelines' `max_sequence_length` default, also the transformer's
/// `max_text_seq_length`: 225 pieces and `</s>`.
pub const MAX_SEQUENCE_LENGTH: usize = 226;
