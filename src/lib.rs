//! libcogvideo: CogVideoX video diffusion (text-to-video, image-to-video and
//! prompt editing by DDIM inversion), numerically matching Hugging Face
//! diffusers.
//!
//! Module map, named after the diffusers components they match:
//! - [`checkpoint`]: the diffusers folder layout, configs and safetensors.
//! - [`text_encoder`]: T5 tokenizer and encoder.
//! - [`models`]: the CogVideoX transformer and VAE and their embeddings.
//! - [`schedulers`]: DDIM, DDIM-inverse and DPM schedulers.

pub mod checkpoint;
pub mod error;
pub mod models;
pub mod schedulers;
pub mod text_encoder;

pub use error::{Error, Result};
