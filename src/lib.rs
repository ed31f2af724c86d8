//! libcogvideo: CogVideoX video diffusion (text-to-video, image-to-video and
//! prompt editing by DDIM inversion), numerically matching Hugging Face
//! diffusers.
//!
//! Module map, named after the diffusers components they match:
//! - [`checkpoint`]: the diffusers folder layout, configs and safetensors.
//! - [`frames`]: caller frames in memory to and from video tensors
//!   (diffusers' `VideoProcessor`).
//! - [`text_encoder`]: T5 tokenizer and encoder.
//! - [`models`]: the CogVideoX transformer and VAE and their embeddings.
//! - [`schedulers`]: DDIM, DDIM-inverse and DPM schedulers.
//! - [`variant`]: which published model a checkpoint is.
//! - [`noise`]: seeded or caller-supplied Gaussian noise, and the draws a
//!   call makes.
//! - [`device`]: where the models run, and their default precision.
//! - `numerics`: arithmetic that rounds as PyTorch's does (`linspace`).
//! - [`memory`]: refusing work that cannot fit before allocating it.
//! - [`pipelines`]: text-to-video, image-to-video, inversion and editing.

pub mod checkpoint;
pub mod device;
pub mod error;
pub mod ffi;
pub mod frames;
pub mod hooks;
pub mod loaders;
pub mod memory;
pub mod models;
pub mod noise;
pub(crate) mod numerics;
pub mod pipelines;
pub mod schedulers;
pub mod text_encoder;
pub mod variant;

#[cfg(test)]
mod test_util;

pub use error::{Error, Result};
pub use variant::Variant;
