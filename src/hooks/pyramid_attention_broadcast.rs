//! Pyramid Attention Broadcast (diffusers
//! `hooks/pyramid_attention_broadcast.py`, `PyramidAttentionBroadcastHook`
//! on each block's spatial self-attention `attn1`, the only attention
//! CogVideoX has): within the timestep range, each block's attention output
//! is computed once every `spatial_attention_block_skip_range` calls and
//! reused in between; outside it, always computed.

use candle_core::{Result, Tensor};

use super::{StepInfo, within};

/// `PyramidAttentionBroadcastConfig`, its spatial-attention part.
#[derive(Debug, Clone, PartialEq)]
pub struct PyramidAttentionBroadcastConfig {
    /// Compute every N-th call, reuse the N - 1 between.
    pub spatial_attention_block_skip_range: usize,
    /// Reuse only at timesteps strictly inside `(lo, hi)`.
    pub spatial_attention_timestep_skip_range: (f64, f64),
}

impl Default for PyramidAttentionBroadcastConfig {
    /// diffusers' documented CogVideoX setting.
    fn default() -> Self {
        Self {
            spatial_attention_block_skip_range: 2,
            spatial_attention_timestep_skip_range: (100.0, 800.0),
        }
    }
}

impl PyramidAttentionBroadcastConfig {
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if self.spatial_attention_block_skip_range == 0 {
            return Err("pyramid attention broadcast: the skip range must be at least 1".into());
        }
        check_range(
            "pyramid attention broadcast timestep range",
            self.spatial_attention_timestep_skip_range,
        )
    }
}

/// A `(lo, hi)` timestep range of finite bounds.
pub(super) fn check_range(what: &str, (lo, hi): (f64, f64)) -> std::result::Result<(), String> {
    if !(lo.is_finite() && hi.is_finite()) {
        return Err(format!("{what} must have finite bounds, got ({lo}, {hi})"));
    }
    Ok(())
}

pub(super) struct State {
    skip_range: usize,
    range: (f64, f64),
    /// Per block: calls so far and the last output.
    blocks: Vec<(usize, Option<Tensor>)>,
}

impl State {
    pub(super) fn new(c: &PyramidAttentionBroadcastConfig, blocks: usize) -> Self {
        Self {
            skip_range: c.spatial_attention_block_skip_range,
            range: c.spatial_attention_timestep_skip_range,
            blocks: vec![(0, None); blocks],
        }
    }

    /// The tensors kept between steps.
    pub(super) fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.blocks.iter().filter_map(|(_, t)| t.as_ref())
    }

    pub(super) fn attention(
        &mut self,
        info: StepInfo,
        block: usize,
        compute: &mut dyn FnMut() -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (iteration, cache) = &mut self.blocks[block];
        let out = match cache {
            Some(c)
                if *iteration != 0
                    && within(self.range, info.timestep)
                    && !iteration.is_multiple_of(self.skip_range) =>
            {
                c.clone()
            }
            _ => compute()?,
        };
        *cache = Some(out.clone());
        *iteration += 1;
        Ok(out)
    }
}
