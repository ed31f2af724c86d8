//! Step caching: diffusers' cache hooks (`diffusers/hooks/`) for the
//! CogVideoX transformer, one file per hook. A cache skips transformer work
//! that changes little from one denoising step to the next and reuses (or
//! forecasts) what it computed before:
//!
//! - [`FirstBlockCacheConfig`]: after the first block, skip the others when
//!   its residual changed little since the last full step (adaptive);
//! - [`PyramidAttentionBroadcastConfig`]: reuse each block's attention output
//!   on a fixed schedule within a timestep range;
//! - [`FasterCacheConfig`]: approximate the attention output from the last
//!   two computed ones, and the unconditional branch of classifier-free
//!   guidance from the conditional one (frequency-weighted);
//! - [`TaylorSeerCacheConfig`]: forecast each block's attention output from
//!   finite differences of its last refreshes.
//!
//! The one sampling loop owns a [`StepCache`] per call (so no state outlives
//! a call, as the pipelines reset diffusers' hooks after each call), tells it
//! each step's index and timestep, and the transformer asks it per call, per
//! block and per attention what to compute.

mod faster_cache;
mod first_block_cache;
mod pyramid_attention_broadcast;
mod taylorseer_cache;

use candle_core::{Result, Tensor};

pub use faster_cache::FasterCacheConfig;
pub use first_block_cache::FirstBlockCacheConfig;
pub use pyramid_attention_broadcast::PyramidAttentionBroadcastConfig;
pub use taylorseer_cache::TaylorSeerCacheConfig;

/// Which cache a call uses, with its settings. `Off` (the default) runs every
/// block of every step: the exact result.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum CacheConfig {
    #[default]
    Off,
    FirstBlock(FirstBlockCacheConfig),
    PyramidAttentionBroadcast(PyramidAttentionBroadcastConfig),
    FasterCache(FasterCacheConfig),
    TaylorSeer(TaylorSeerCacheConfig),
}

impl CacheConfig {
    /// Checks the settings: every bad value is refused with a message.
    pub fn validate(&self) -> crate::Result<()> {
        let r = match self {
            CacheConfig::Off => Ok(()),
            CacheConfig::FirstBlock(c) => c.validate(),
            CacheConfig::PyramidAttentionBroadcast(c) => c.validate(),
            CacheConfig::FasterCache(c) => c.validate(),
            CacheConfig::TaylorSeer(c) => c.validate(),
        };
        r.map_err(crate::Error::invalid)
    }

    pub fn is_off(&self) -> bool {
        matches!(self, CacheConfig::Off)
    }

    /// How many copies of the transformer's token stream (`[batch, tokens,
    /// dim]` in the model dtype) the cache keeps at most: its share of the
    /// memory estimate.
    pub fn stream_copies(&self, blocks: usize) -> u64 {
        let blocks = blocks as u64;
        match self {
            CacheConfig::Off => 0,
            // the first block's output and residual, the others' residual
            CacheConfig::FirstBlock(_) => 3,
            // one attention output per block
            CacheConfig::PyramidAttentionBroadcast(_) => blocks,
            // two conditional outputs (half a guidance batch each) per block
            CacheConfig::FasterCache(_) => blocks,
            // the Taylor factors of each block's attention output
            CacheConfig::TaylorSeer(c) => (c.max_order as u64 + 1) * blocks,
        }
    }
}

/// What a call's cache saved, in block evaluations: one block over one
/// sample of the batch (the conditional and unconditional branches of
/// classifier-free guidance are two).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheReport {
    /// Block evaluations the call would make without a cache.
    pub block_evaluations: u64,
    /// Block evaluations not run at all (First-block cache's skipped
    /// blocks, FasterCache's skipped unconditional branch).
    pub blocks_skipped: u64,
    /// Attention evaluations reused or forecast inside blocks that ran
    /// (Pyramid Attention Broadcast, FasterCache, TaylorSeer).
    pub attention_skipped: u64,
    /// The most bytes the cache held between two steps: the allocations
    /// behind its kept tensors, each counted once (what
    /// [`CacheConfig::stream_copies`] bounds).
    pub peak_held_bytes: u64,
    /// One record per step, in order.
    pub steps: Vec<CacheStep>,
}

/// What the cache decided on one step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheStep {
    /// Samples the transformer computed: 2 with guidance, 1 where
    /// FasterCache approximated the unconditional branch (or without
    /// guidance).
    pub rows: usize,
    /// Per block: whether its attention was computed.
    pub attention: Vec<bool>,
    /// Blocks not run at all.
    pub blocks_skipped: usize,
    /// First-block cache: the relative change of the first block's
    /// residual it compared with the threshold (`None` on a first step).
    pub first_block_change: Option<f64>,
}

/// Where the denoising loop is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepInfo {
    pub timestep: f64,
}

/// `lo < t < hi`, the hooks' timestep-range test.
fn within((lo, hi): (f64, f64), t: f64) -> bool {
    lo < t && t < hi
}

enum State {
    FirstBlock(first_block_cache::State),
    Pab(pyramid_attention_broadcast::State),
    Faster(faster_cache::State),
    Taylor(taylorseer_cache::State),
}

/// The running cache of one sampling call.
pub struct StepCache {
    state: State,
    blocks: usize,
    step: Option<StepInfo>,
    current: CacheStep,
    report: CacheReport,
}

impl StepCache {
    /// `None` when `config` is off. `guidance`: the calls batch the
    /// unconditional and conditional branches; `reference`: prompt editing's
    /// batch with reference rows.
    pub(crate) fn new(
        config: &CacheConfig,
        blocks: usize,
        guidance: bool,
        reference: bool,
    ) -> crate::Result<Option<Self>> {
        config.validate()?;
        let state = match config {
            CacheConfig::Off => return Ok(None),
            CacheConfig::FirstBlock(c) => State::FirstBlock(first_block_cache::State::new(c)),
            CacheConfig::PyramidAttentionBroadcast(c) => {
                State::Pab(pyramid_attention_broadcast::State::new(c, blocks))
            }
            CacheConfig::FasterCache(c) => {
                if !guidance || reference {
                    return Err(crate::Error::invalid(
                        "FasterCache approximates the unconditional branch of classifier-free guidance: it needs a guidance scale above 1, and prompt editing's batch is not supported (use another cache)",
                    ));
                }
                State::Faster(faster_cache::State::new(c, blocks))
            }
            CacheConfig::TaylorSeer(c) => State::Taylor(taylorseer_cache::State::new(c, blocks)),
        };
        Ok(Some(Self {
            state,
            blocks,
            step: None,
            current: CacheStep::default(),
            report: CacheReport::default(),
        }))
    }

    /// Starts a step at `timestep`. The hooks count the steps themselves
    /// from this call's first, as diffusers' count their calls.
    pub(crate) fn begin_step(&mut self, timestep: usize) {
        self.step = Some(StepInfo {
            timestep: timestep as f64,
        });
        self.current = CacheStep {
            attention: vec![false; self.blocks],
            ..Default::default()
        };
    }

    /// Ends the step begun last: `rows` is the batch without the cache.
    pub(crate) fn end_step(&mut self, rows: usize) {
        let s = std::mem::take(&mut self.current);
        let (blocks, rows64) = (self.blocks as u64, rows as u64);
        self.report.block_evaluations += blocks * rows64;
        let skipped_rows = (rows - s.rows.min(rows)) as u64;
        self.report.blocks_skipped +=
            skipped_rows * blocks + s.blocks_skipped as u64 * s.rows as u64;
        let ran = self.blocks - s.blocks_skipped;
        let computed = s.attention.iter().filter(|&&a| a).count();
        self.report.attention_skipped += (ran - computed.min(ran)) as u64 * s.rows as u64;
        self.report.steps.push(s);
        self.step = None;
        let held = match &self.state {
            State::FirstBlock(s) => crate::memory::held_bytes(s.tensors()),
            State::Pab(s) => crate::memory::held_bytes(s.tensors()),
            State::Faster(s) => crate::memory::held_bytes(s.tensors()),
            State::Taylor(s) => crate::memory::held_bytes(s.tensors()),
        };
        self.report.peak_held_bytes = self.report.peak_held_bytes.max(held);
    }

    pub fn report(&self) -> &CacheReport {
        &self.report
    }

    pub fn into_report(self) -> CacheReport {
        self.report
    }

    fn info(&self) -> Result<StepInfo> {
        self.step
            .ok_or_else(|| candle_core::Error::msg("the step cache was used outside a step"))
    }

    /// Before the forward pass over `rows` samples: whether to compute only
    /// the conditional half (FasterCache's unconditional-branch skip).
    pub(crate) fn cond_only(&mut self, rows: usize) -> Result<bool> {
        let info = self.info()?;
        let cond_only = match &mut self.state {
            State::Faster(s) => s.cond_only(info, rows),
            _ => false,
        };
        self.current.rows = if cond_only { rows / 2 } else { rows };
        Ok(cond_only)
    }

    /// After the forward pass: the full prediction from what was computed
    /// (`cond_only`: only the conditional half was), and what the cache
    /// keeps of it.
    pub(crate) fn finish_output(&mut self, out: Tensor, cond_only: bool) -> Result<Tensor> {
        let info = self.info()?;
        match &mut self.state {
            State::Faster(s) => s.finish_output(info, out, cond_only),
            _ => Ok(out),
        }
    }

    /// Block `block`'s attention output: `compute`d, or reused / forecast.
    pub(crate) fn attention(
        &mut self,
        block: usize,
        compute: &mut dyn FnMut() -> Result<Tensor>,
    ) -> Result<Tensor> {
        let info = self.info()?;
        let rows = self.current.rows;
        let mut ran = false;
        let mut counted = || {
            ran = true;
            compute()
        };
        let out = match &mut self.state {
            State::Pab(s) => s.attention(info, block, &mut counted),
            State::Faster(s) => s.attention(info, block, rows, &mut counted),
            State::Taylor(s) => s.attention(block, &mut counted),
            State::FirstBlock(_) => counted(),
        }?;
        self.current.attention[block] = ran;
        Ok(out)
    }

    /// After block `block` turned `input` into `output` (joint `[B, T + N,
    /// D]` tokens, the first `text_len` text): `Some(x)` ends the block loop
    /// with `x` as the last block's output.
    pub(crate) fn after_block(
        &mut self,
        block: usize,
        input: &Tensor,
        output: &Tensor,
        text_len: usize,
    ) -> Result<Option<Tensor>> {
        let State::FirstBlock(s) = &mut self.state else {
            return Ok(None);
        };
        let r = s.after_block(block, self.blocks, input, output, text_len)?;
        if block == 0 {
            self.current.first_block_change = s.last_change();
        }
        if r.is_some() {
            self.current.blocks_skipped = self.blocks - 1;
        }
        Ok(r)
    }
}
