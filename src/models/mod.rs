//! Neural network components, one file per diffusers module.

pub mod attention;
pub mod embeddings;
pub mod transformers;
