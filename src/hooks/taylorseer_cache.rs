//! TaylorSeer (diffusers `hooks/taylorseer_cache.py`, `TaylorSeerCacheHook`
//! with `cache_identifiers` naming each block's `attn1`): the first
//! `disable_cache_before_step` steps compute, then one step in every
//! `cache_interval`; on the others each block's attention output is forecast
//! by a Taylor series whose factors are the divided differences of its last
//! computed outputs. The factors are kept in the model's dtype (f32 on the
//! CPU, as the reference is run; diffusers' default keeps them in bf16).

use candle_core::{Result, Tensor};

/// `TaylorSeerCacheConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaylorSeerCacheConfig {
    /// Compute one step in this many after the warm-up.
    pub cache_interval: usize,
    /// Steps computed first, to gather differences.
    pub disable_cache_before_step: usize,
    /// From this step on, every step computes.
    pub disable_cache_after_step: Option<usize>,
    /// Highest order of the expansion.
    pub max_order: usize,
}

impl Default for TaylorSeerCacheConfig {
    /// diffusers' defaults.
    fn default() -> Self {
        Self {
            cache_interval: 5,
            disable_cache_before_step: 3,
            disable_cache_after_step: None,
            max_order: 1,
        }
    }
}

impl TaylorSeerCacheConfig {
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if self.cache_interval == 0 {
            return Err("taylorseer: cache_interval must be at least 1".into());
        }
        if self.disable_cache_before_step == 0 {
            // diffusers would forecast the first step from nothing (an error there)
            return Err("taylorseer: disable_cache_before_step must be at least 1".into());
        }
        if !(1..=4).contains(&self.max_order) {
            return Err(format!(
                "taylorseer: max_order must be 1 to 4, got {}",
                self.max_order
            ));
        }
        Ok(())
    }
}

#[derive(Default, Clone)]
struct Block {
    /// Calls so far.
    calls: usize,
    last_update: Option<usize>,
    /// Factor of order k at index k.
    factors: Vec<Tensor>,
}

pub(super) struct State {
    c: TaylorSeerCacheConfig,
    blocks: Vec<Block>,
}

impl State {
    pub(super) fn new(c: &TaylorSeerCacheConfig, blocks: usize) -> Self {
        Self {
            c: c.clone(),
            blocks: vec![Block::default(); blocks],
        }
    }

    /// The tensors kept between steps.
    pub(super) fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.blocks.iter().flat_map(|b| &b.factors)
    }

    pub(super) fn attention(
        &mut self,
        block: usize,
        compute: &mut dyn FnMut() -> Result<Tensor>,
    ) -> Result<Tensor> {
        let c = &self.c;
        let b = &mut self.blocks[block];
        let step = b.calls;
        b.calls += 1;
        let before = c.disable_cache_before_step;
        // Python's `%` (non-negative), on `step - before - 1`
        let refresh = (step as i64 - before as i64 - 1).rem_euclid(c.cache_interval as i64) == 0;
        let cooldown = c.disable_cache_after_step.is_some_and(|a| step >= a);
        if step < before || refresh || cooldown || b.last_update.is_none() {
            let out = compute()?;
            let mut factors = vec![out.clone()];
            if let Some(last) = b.last_update {
                let delta = (step - last) as f64;
                for j in 0..c.max_order {
                    let Some(prev) = b.factors.get(j) else { break };
                    factors.push(((&factors[j] - prev)? / delta)?);
                }
            }
            b.factors = factors;
            b.last_update = Some(step);
            return Ok(out);
        }
        let offset = (step - b.last_update.unwrap_or(step)) as f64;
        let mut out = b.factors[0].clone();
        let mut coeff = 1.0;
        for (order, f) in b.factors.iter().enumerate().skip(1) {
            coeff *= offset / order as f64;
            out = (out + (f * coeff)?)?;
        }
        Ok(out)
    }
}
