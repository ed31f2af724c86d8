//! Progress reporting with cancellation for long calls.

use crate::error::{Error, Result};
use crate::hooks::CacheReport;
use crate::pipelines::LoraReport;

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

/// The caller's callback, and what the call reports back: what its step
/// cache saved ([`Self::cache_report`]) and the LoRA setting it ran with
/// ([`Self::lora_report`]).
///
/// The callback is called with `(stage, done, total)` before a stage starts
/// and after each unit of work, and with the counts unchanged while a unit
/// runs (between text-encoder and transformer blocks, and every
/// [`crate::models::poll::MIN_INTERVAL`] or so inside them); returning
/// `false` cancels the call, which then ends with [`Error::Cancelled`].
pub struct Progress<'a> {
    callback: Option<&'a mut dyn FnMut(Stage, usize, usize) -> bool>,
    cache: Option<CacheReport>,
    lora: Option<LoraReport>,
}

impl<'a> Progress<'a> {
    pub fn new(callback: &'a mut dyn FnMut(Stage, usize, usize) -> bool) -> Self {
        Self {
            callback: Some(callback),
            cache: None,
            lora: None,
        }
    }

    /// Reports nothing and never cancels.
    pub fn none() -> Self {
        Self {
            callback: None,
            cache: None,
            lora: None,
        }
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

    /// The LoRA adapters, weights and fusing the call's last transformer
    /// pass ran with (the setting when it started; an empty setting when
    /// none applied); `None` before a call ran the transformer.
    pub fn lora_report(&self) -> Option<&LoraReport> {
        self.lora.as_ref()
    }

    pub(crate) fn set_lora_report(&mut self, report: LoraReport) {
        self.lora = Some(report);
    }
}
