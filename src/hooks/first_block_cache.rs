//! First-block cache (diffusers `hooks/first_block_cache.py`,
//! `FBCHeadBlockHook` / `FBCBlockHook`): the first block always runs; when
//! the mean absolute change of its video-token residual since the last full
//! step, relative to that residual's mean magnitude, is at most `threshold`,
//! the other blocks are skipped and the output is the first block's output
//! plus the residual the other blocks added on the last full step. One
//! decision covers the whole batch (both guidance branches), as in diffusers.

use candle_core::{DType, Result, Tensor};

/// `FirstBlockCacheConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstBlockCacheConfig {
    /// Largest relative change of the first block's residual that still
    /// skips the remaining blocks; 0 skips nothing (exact).
    pub threshold: f64,
}

impl Default for FirstBlockCacheConfig {
    /// diffusers' default threshold.
    fn default() -> Self {
        Self { threshold: 0.05 }
    }
}

impl FirstBlockCacheConfig {
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if !(self.threshold >= 0.0 && self.threshold.is_finite()) {
            return Err(format!(
                "first-block cache threshold must be a finite number >= 0, got {}",
                self.threshold
            ));
        }
        Ok(())
    }
}

pub(super) struct State {
    threshold: f64,
    /// The first block's output on the last full step (joint tokens).
    head_output: Option<Tensor>,
    /// Its video-token residual then.
    head_residual: Option<Tensor>,
    /// What the other blocks added on the last full step (joint tokens).
    tail_residual: Option<Tensor>,
    /// This step's decision: run the other blocks.
    compute: bool,
    change: Option<f64>,
}

impl State {
    pub(super) fn new(c: &FirstBlockCacheConfig) -> Self {
        Self {
            threshold: c.threshold,
            head_output: None,
            head_residual: None,
            tail_residual: None,
            compute: true,
            change: None,
        }
    }

    /// The tensors kept between steps.
    pub(super) fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        [&self.head_output, &self.head_residual, &self.tail_residual]
            .into_iter()
            .flatten()
    }

    pub(super) fn last_change(&self) -> Option<f64> {
        self.change
    }

    pub(super) fn after_block(
        &mut self,
        block: usize,
        blocks: usize,
        input: &Tensor,
        output: &Tensor,
        text_len: usize,
    ) -> Result<Option<Tensor>> {
        if block == 0 {
            let s = output.dim(1)?;
            let video = |x: &Tensor| x.narrow(1, text_len, s - text_len);
            let residual = (video(output)? - video(input)?)?;
            self.change = match &self.head_residual {
                Some(prev) => Some(relative_change(&residual, prev)?),
                None => None,
            };
            // diffusers' `diff > threshold` computes; with a single block
            // there is nothing to skip (diffusers needs two).
            self.compute = blocks < 2 || self.change.is_none_or(|d| d > self.threshold);
            if !self.compute {
                let tail = self.tail_residual.as_ref().ok_or_else(|| {
                    candle_core::Error::msg("first-block cache: no cached residual")
                })?;
                return Ok(Some((tail + output)?));
            }
            self.head_output = Some(output.clone());
            self.head_residual = Some(residual);
        } else if block + 1 == blocks && self.compute {
            let head = self.head_output.as_ref().ok_or_else(|| {
                candle_core::Error::msg("first-block cache: no first-block output")
            })?;
            self.tail_residual = Some((output - head)?);
        }
        Ok(None)
    }
}

/// `mean|r - prev| / mean|prev|`, in f32 as the f32 reference computes it.
fn relative_change(r: &Tensor, prev: &Tensor) -> Result<f64> {
    let (r, prev) = (r.to_dtype(DType::F32)?, prev.to_dtype(DType::F32)?);
    let num = (r - &prev)?.abs()?.mean_all()?.to_scalar::<f32>()?;
    let den = prev.abs()?.mean_all()?.to_scalar::<f32>()?;
    Ok((num / den) as f64)
}
