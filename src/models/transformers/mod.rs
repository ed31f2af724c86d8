//! Diffusion transformers.

pub mod cogvideox_transformer_3d;
mod cpu;

pub use cogvideox_transformer_3d::{
    CogVideoXTransformer3DModel, Config as TransformerConfig, ForwardOptions, TransformerLora,
};
