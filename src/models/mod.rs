//! Neural network components, one file per diffusers module.

pub mod attention;
pub mod autoencoders;
pub mod embeddings;
pub mod layers;
pub mod transformers;
