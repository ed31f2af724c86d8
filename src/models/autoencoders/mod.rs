//! Video autoencoders.

pub mod autoencoder_kl_cogvideox;
mod causal_conv3d;
mod cpu;
mod downsampling;
mod tiling;
mod upsampling;
mod vae;

pub use autoencoder_kl_cogvideox::{
    AutoencoderKLCogVideoX, Config as VaeConfig, VaeOp, VaeRunOptions, VaeTiling,
};
pub use tiling::{MAX_TILE_PIXELS, Tiling};
pub use vae::DiagonalGaussian;
