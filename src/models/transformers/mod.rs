//! Diffusion transformers.

pub mod cogvideox_transformer_3d;

pub use cogvideox_transformer_3d::{CogVideoXTransformer3DModel, Config as TransformerConfig};
