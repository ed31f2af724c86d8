//! `DiagonalGaussianDistribution` (diffusers `models/autoencoders/vae.py`):
//! the encoder's posterior.

use candle_core::Tensor;

use crate::error::{Error, Result};

/// A diagonal Gaussian over latents `[B, C, F, h, w]`, from the encoder's
/// `[mean | logvar]` moments. `logvar` is clamped to `[-30, 20]`.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    mean: Tensor,
    logvar: Tensor,
}

impl DiagonalGaussian {
    /// Splits `[B, 2C, ...]` moments into mean and (clamped) log-variance.
    pub(crate) fn from_moments(moments: &Tensor) -> candle_core::Result<Self> {
        let c = moments.dim(1)? / 2;
        Ok(Self {
            mean: moments.narrow(1, 0, c)?.contiguous()?,
            logvar: moments.narrow(1, c, c)?.clamp(-30f32, 20f32)?,
        })
    }

    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// The clamped log-variance.
    pub fn logvar(&self) -> &Tensor {
        &self.logvar
    }

    /// `exp(logvar / 2)`.
    pub fn std(&self) -> Result<Tensor> {
        Ok((&self.logvar * 0.5)?.exp()?)
    }

    /// The distribution's mode, its mean (diffusers `latent_dist.mode()`).
    pub fn mode(&self) -> &Tensor {
        &self.mean
    }

    /// `mean + std * noise` (diffusers `latent_dist.sample(generator)`), with
    /// the standard normal `noise` supplied by the caller so that runs are
    /// reproducible; it must have the mean's shape.
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor> {
        if noise.dims() != self.mean.dims() {
            return Err(Error::invalid(format!(
                "posterior noise has shape {:?}, the latents have {:?}",
                noise.dims(),
                self.mean.dims()
            )));
        }
        let noise = noise
            .to_device(self.mean.device())?
            .to_dtype(self.mean.dtype())?;
        Ok((&self.mean + (self.std()? * noise)?)?)
    }
}
