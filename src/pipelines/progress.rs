//! Progress reporting with cancellation for long calls.

use crate::error::{Error, Result};
use crate::hooks::{CacheConfig, CacheReport};

/// The stages of a pipeline call, reported in this order where they apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub enum Stage {
    /// Running the T5 text encoder.
    EncodeText = 0,
    /// Encoding the input frames or image with the VAE.
    EncodeVideo = 1,
    /// DDIM inversion steps.
    Invert = 2,
    /// Denoising steps.
    Denoise = 3,
    /// Decoding latents to frames with the VAE.
    DecodeVideo = 4,
    /// Loading a checkpoint, in MiB of weights.
    Load = 5,
}

/// A call's context: the caller's callback, the step cache the call's
/// denoising uses ([`Self::with_cache`]) and what it saved
/// ([`Self::cache_report`]).
///
/// The callback is called with `(stage, done, total)` before a stage starts
/// and after each unit of work, and with the counts unchanged while a unit
/// runs (between text-encoder and transformer blocks, and every
/// [`crate::models::poll::MIN_INTERVAL`] or so inside them); returning
/// `false` cancels the call, which then ends with [`Error::Cancelled`].
pub struct Progress<'a> {
    callback: Option<&'a mut dyn FnMut(Stage, usize, usize) -> bool>,
    cache_config: CacheConfig,
    cache: Option<CacheReport>,
}

impl<'a> Progress<'a> {
    pub fn new(callback: &'a mut dyn FnMut(Stage, usize, usize) -> bool) -> Self {
        Self {
            callback: Some(callback),
            cache_config: CacheConfig::Off,
            cache: None,
        }
    }

    /// Reports nothing and never cancels.
    pub fn none() -> Self {
        Self {
            callback: None,
            cache_config: CacheConfig::Off,
            cache: None,
        }
    }

    /// Denoises with `cache` (text-to-video, image-to-video,
    /// video-to-video, edits and, where asked, inversions): faster and
    /// approximate; the default, [`CacheConfig::Off`], is exact.
    pub fn with_cache(mut self, cache: CacheConfig) -> Self {
        self.cache_config = cache;
        self
    }

    pub fn cache(&self) -> &CacheConfig {
        &self.cache_config
    }

    pub fn report(&mut self, stage: Stage, done: usize, total: usize) -> Result<()> {
        let keep_going = match &mut self.callback {
            Some(cb) => cb(stage, done, total),
            None => true,
        };
        if keep_going {
            Ok(())
        } else {
            Err(Error::Cancelled)
        }
    }

    /// What the step cache of the call's last denoising loop saved (`None`
    /// when it ran without one).
    pub fn cache_report(&self) -> Option<&CacheReport> {
        self.cache.as_ref()
    }

    pub(crate) fn set_cache_report(&mut self, report: Option<CacheReport>) {
        self.cache = report;
    }
}
