//! Progress reporting with cancellation for long calls.

use crate::error::{Error, Result};

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

/// Wraps the caller's callback. It is called with `(stage, done, total)`
/// before a stage starts and after each unit of work, and with the counts
/// unchanged while a unit runs (between text-encoder and transformer
/// blocks, and every [`crate::models::poll::MIN_INTERVAL`] or so inside
/// them); returning `false` cancels the call, which then ends with
/// [`Error::Cancelled`].
pub struct Progress<'a> {
    callback: Option<&'a mut dyn FnMut(Stage, usize, usize) -> bool>,
}

impl<'a> Progress<'a> {
    pub fn new(callback: &'a mut dyn FnMut(Stage, usize, usize) -> bool) -> Self {
        Self {
            callback: Some(callback),
        }
    }

    /// Reports nothing and never cancels.
    pub fn none() -> Self {
        Self { callback: None }
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
}
